//! Redis Sentinel: the standalone store over a `MultiplexedConnection` to the master the
//! Sentinels name. The hit path is the standalone one (no Sentinel round trip per call);
//! only making a connection asks the Sentinels, through redis-rs's `SentinelClient` (which
//! also checks with `ROLE` that the node it names is a master). The store reopens (asks
//! the Sentinels again, connects to the master they name now, and goes on there) when:
//!
//! - an operation fails on the old master: its connection drops or cannot be made (the
//!   master died), or the server answers `READONLY` (it was demoted);
//! - the Sentinels announce a new master (`+switch-master`, followed by a watcher on
//!   redcache's connection thread, as go-redis does): a master that is demoted rather than
//!   dead (a manual failover, a partition) keeps accepting writes until the Sentinels
//!   reconfigure it, some 10 s after the switch, and those writes would be lost.
//!
//! For [`ANNOUNCED_FOR`] after a `+switch-master`, a lookup that names another master than
//! the one announced asks again: a Sentinel that has not heard of the switch yet names the
//! old master, which still answers `ROLE` as one.
//!
//! With `read_from_replicas`, a [`Replica`] answers the store's relaxed reads (a call's
//! first read) from a replica the Sentinels name; everything else stays on the master.

use super::redis::{
    background, connect_checked, connect_error, connection_config, local_tier, made_to_last,
    Connecting, RedisStore,
};
use crate::config::SentinelSettings;
use crate::local::LocalTier;
use crate::{Config, Result};
use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use redis::sentinel::{SentinelClientBuilder, SentinelServerType};
use redis::{AsyncConnectionConfig, ProtocolVersion, RedisResult};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant};

/// How often the watcher pings the Sentinel it listens to, and checks that its store is
/// still there.
const WATCH_PING: Duration = Duration::from_secs(2);

/// How long the watcher waits before it listens to the next Sentinel.
const WATCH_RETRY: Duration = Duration::from_secs(1);

/// How long the master a `+switch-master` announced outranks the one a Sentinel names:
/// the other Sentinels learn of the switch within seconds (they tell each other every
/// 2 s), and the old master, alive after a manual failover or a partition, is
/// reconfigured some 10 to 20 s after it. Long enough to cover both; short enough that a
/// later switch the watcher did not hear is followed.
const ANNOUNCED_FOR: Duration = Duration::from_secs(30);

/// How long a lookup that named another master than the one announced waits before it
/// asks again (from the next Sentinel).
const ASK_AGAIN: Duration = Duration::from_millis(50);

/// How long a replica that failed (or could not be found) is left aside: reads go to the
/// master meanwhile, then the Sentinels are asked for a replica again.
const REPLICA_REST: Duration = Duration::from_secs(1);

/// Finds the master through the Sentinels and connects to it.
struct Lookup {
    settings: SentinelSettings,
    /// RESP3 to the master (the local tier's invalidations are push messages).
    resp3: bool,
    #[cfg(feature = "tls")]
    certificates: Option<redis::TlsCertificates>,
    connection_config: AsyncConnectionConfig,
    /// Longest a lookup and its connection may take.
    timeout: Duration,
    /// Which Sentinel the next lookup asks first: each asks from the next one, so a
    /// Sentinel that hangs does not hold up every lookup.
    next: AtomicUsize,
    /// The master the last lookup found (`host:port`), to log a change once and to see
    /// a switch the watcher missed.
    last: Mutex<Option<String>>,
    /// The master's moves the watcher saw (the store's connection follows).
    moves: Arc<AtomicU64>,
    /// The master the last `+switch-master` announced, and when.
    announced: Mutex<Option<(String, Instant)>>,
    /// The local tier, if any: its copies were read from the old master, whose pushes no
    /// longer tell of the writes that count.
    tier: Option<Arc<LocalTier>>,
}

impl Lookup {
    /// A connection to the master the Sentinels name now, within the timeout.
    async fn connect(self: Arc<Self>) -> RedisResult<MultiplexedConnection> {
        match tokio::time::timeout(self.timeout, self.connect_unbounded()).await {
            Ok(made) => made,
            Err(_) => Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "no master through the Sentinels",
                format!(
                    "no Sentinel named a reachable master within {:?}",
                    self.timeout
                ),
            ))),
        }
    }

    async fn connect_unbounded(&self) -> RedisResult<MultiplexedConnection> {
        let (client, master) = loop {
            let client = self
                .sentinel_client(SentinelServerType::Master)?
                .async_get_client()
                .await?;
            let master = client.get_connection_info().addr().to_string();
            // A Sentinel that has not heard of the switch yet names the old master, which
            // still answers `ROLE` as one after a manual failover: writes there are lost
            // when it is reconfigured, and no push tells of writes on the new one.
            match self.announced_other_than(&master) {
                None => break (client, master),
                Some(announced) => {
                    tracing::debug!(
                        named = %master,
                        announced = %announced,
                        name = %self.settings.master,
                        "redcache: a Sentinel names the master from before the switch; asking again"
                    );
                    tokio::time::sleep(ASK_AGAIN).await;
                }
            }
        };
        {
            let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
            if last.as_deref() != Some(master.as_str()) {
                match last.replace(master.clone()) {
                    Some(old) => tracing::warn!(
                        master = %master,
                        previous = %old,
                        name = %self.settings.master,
                        "redcache: the Sentinels name a new master"
                    ),
                    None => tracing::debug!(
                        master = %master,
                        name = %self.settings.master,
                        "redcache: the Sentinels name the master"
                    ),
                }
            }
        }
        client
            .get_multiplexed_async_connection_with_config(&self.connection_config)
            .await
    }

    /// The master a `+switch-master` announced within [`ANNOUNCED_FOR`], if it is not
    /// `named`.
    fn announced_other_than(&self, named: &str) -> Option<String> {
        let announced = self
            .announced
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match &*announced {
            Some((master, at)) if master != named && at.elapsed() < ANNOUNCED_FOR => {
                Some(master.clone())
            }
            _ => None,
        }
    }

    /// A plain client for the Sentinel at `node`, with the Sentinels' credentials and TLS.
    fn client_for(&self, node: &redis::ConnectionAddr) -> RedisResult<redis::Client> {
        use redis::IntoConnectionInfo;
        let s = &self.settings;
        let mut settings = redis::RedisConnectionInfo::default();
        if let Some(username) = &s.username {
            settings = settings.set_username(username);
        }
        if let Some(password) = &s.password {
            settings = settings.set_password(password);
        }
        let info = node
            .clone()
            .into_connection_info()?
            .set_redis_settings(settings);
        #[cfg(feature = "tls")]
        if let (Some(certificates), Some(_)) = (&self.certificates, s.tls) {
            return redis::Client::build_with_tls(info, certificates.clone());
        }
        redis::Client::open(info)
    }

    /// Counts a move of the master: the store's connection is not used again, and no
    /// local copy is served again. (The connection's own reopen clears the tier too, but
    /// only at the next Redis operation; a process answering local hits makes none, and
    /// the old master sends no push for a write on the new one.)
    fn moved(&self, why: &str) {
        // Counted first: a read that takes its mark after the tier is cleared must not go
        // out on the old master's connection, whose pushes stop at the move.
        self.moves.fetch_add(1, Ordering::AcqRel);
        if let Some(tier) = &self.tier {
            tier.clear();
        }
        tracing::info!(
            name = %self.settings.master,
            "redcache: {why}; reconnecting to the master the Sentinels name"
        );
    }

    /// A connection to a replica the Sentinels name now (one at random, among those they
    /// do not consider down and that answer `ROLE` as replicas), with `response_timeout`
    /// on each command; `host:port` of the replica.
    async fn connect_replica(
        &self,
        response_timeout: Duration,
    ) -> RedisResult<(MultiplexedConnection, String)> {
        let client = self
            .sentinel_client(SentinelServerType::Replica)?
            .async_get_client()
            .await?;
        let replica = client.get_connection_info().addr().to_string();
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(response_timeout));
        let conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        Ok((conn, replica))
    }

    /// A Sentinel client for the master or a replica, asking the Sentinels from the next
    /// one on.
    fn sentinel_client(
        &self,
        role: SentinelServerType,
    ) -> RedisResult<redis::sentinel::SentinelClient> {
        let s = &self.settings;
        let mut nodes = s.nodes.clone();
        let first = self.next.fetch_add(1, Ordering::Relaxed) % nodes.len().max(1);
        nodes.rotate_left(first);
        let mut builder =
            SentinelClientBuilder::new(nodes, &s.master, role)?.set_client_to_redis_db(s.data.db());
        if let Some(username) = &s.username {
            builder = builder.set_client_to_sentinel_username(username);
        }
        if let Some(password) = &s.password {
            builder = builder.set_client_to_sentinel_password(password);
        }
        if let Some(username) = s.data.username() {
            builder = builder.set_client_to_redis_username(username);
        }
        if let Some(password) = s.data.password() {
            builder = builder.set_client_to_redis_password(password);
        }
        if self.resp3 {
            builder = builder.set_client_to_redis_protocol(ProtocolVersion::RESP3);
        }
        if let Some(mode) = s.tls {
            builder = builder.set_client_to_redis_tls_mode(mode);
            #[cfg(feature = "tls")]
            if let Some(certificates) = &self.certificates {
                builder = builder
                    .set_client_to_sentinel_certificates(certificates.clone())
                    .set_client_to_redis_certificates(certificates.clone());
            }
        }
        builder.build()
    }
}

impl RedisStore<MultiplexedConnection> {
    /// Asks the Sentinels for the master, connects to it and checks it with `PING`, all
    /// within `connect_timeout` (or not at all, when lazy: the first operation does).
    pub(crate) async fn connect_sentinel(config: &Config) -> Result<Self> {
        let settings = config.sentinel_settings()?;
        let local = local_tier(config);
        let moves = Arc::new(AtomicU64::new(0));
        let lookup = Arc::new(Lookup {
            settings,
            resp3: local.is_some(),
            #[cfg(feature = "tls")]
            certificates: super::redis::tls_certificates(config),
            connection_config: connection_config(config, local.clone()),
            timeout: config.connect_timeout(),
            next: AtomicUsize::new(0),
            last: Mutex::new(None),
            moves: moves.clone(),
            announced: Mutex::new(None),
            tier: local.clone(),
        });
        // Fails early, with the configuration named, if the builder refuses the settings.
        lookup
            .sentinel_client(SentinelServerType::Master)
            .map_err(|e| connect_error(config, e))?;
        let replica = config.read_from_replicas().then(|| {
            Arc::new(Replica {
                lookup: lookup.clone(),
                // Half the operation's time: the master's read gets the other half.
                timeout: config.op_timeout() / 2,
                conn: RwLock::new(None),
                epoch: Instant::now(),
                resting_until: AtomicU64::new(0),
                connecting: AtomicBool::new(false),
            })
        });
        let reopen = {
            let lookup = lookup.clone();
            move || -> Connecting<MultiplexedConnection> { Box::pin(lookup.clone().connect()) }
        };
        let watched = Arc::downgrade(&lookup);
        let conn = if config.lazy() {
            None
        } else {
            Some(connect_checked(config, made_to_last(Box::pin(lookup.clone().connect()))).await?)
        };
        // Started once connected (a store that failed to connect has nothing to watch);
        // it ends with the store, whose `reopen` (and replica) hold the only strong
        // `Lookup`.
        background().spawn(watch(watched));
        let store = RedisStore::new(conn, reopen, local, config.max_fill_time())
            .following_master(moves)
            .checking_liveness(config.op_timeout());
        Ok(match replica {
            Some(replica) => {
                if !config.lazy() {
                    // Ready for the first call if a replica answers; if none does, reads go
                    // to the master and a replica is looked for again later. Like the
                    // master's first connection, on the caller's runtime if it is a
                    // multi-thread one (no thread hop per read); should that runtime shut
                    // down, the connection fails and its replacement is made on the
                    // connection thread.
                    replica.connecting.store(true, Ordering::Release);
                    made_to_last(Box::pin(replica.clone().connect())).await;
                }
                store.reading_from(replica)
            }
            None => store,
        })
    }
}

/// The replica that serves relaxed reads (hits): a connection to one replica the
/// Sentinels name (the first made where the store is, the next ones on redcache's
/// connection thread). A replica that fails is left
/// aside for [`REPLICA_REST`] (reads go to the master, which the caller asks itself), then
/// the Sentinels are asked for a replica again; so is a replica connection made before the
/// master moved (the replica may be the master now).
pub(crate) struct Replica {
    lookup: Arc<Lookup>,
    /// Longest a read waits for the replica.
    timeout: Duration,
    /// The connection, and the master's moves counted when it was asked for.
    conn: RwLock<Option<(MultiplexedConnection, u64)>>,
    epoch: Instant,
    /// Milliseconds since `epoch` until which reads go to the master (0: none).
    resting_until: AtomicU64,
    /// A connection is being made.
    connecting: AtomicBool,
}

impl Replica {
    /// Runs `cmd` on the replica; `None` when the master must answer instead: no replica
    /// connection (one is being looked for), the replica is resting after a failure, or it
    /// fails now (then it rests).
    pub(crate) async fn query<T: redis::FromRedisValue>(
        self: &Arc<Self>,
        cmd: &redis::Cmd,
    ) -> Option<T> {
        let mut conn = self.ready()?;
        let result = match tokio::time::timeout(self.timeout, cmd.query_async(&mut conn)).await {
            Ok(result) => result,
            Err(_) => Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "no answer",
                format!("within {:?}", self.timeout),
            ))),
        };
        match result {
            Ok(found) => Some(found),
            // The key's own problem, which the master answers the same way.
            Err(err) if err.code() == Some("WRONGTYPE") => None,
            Err(err) => {
                self.failed(&err);
                None
            }
        }
    }

    /// The connection to read on, unless the replica rests or there is none (then one is
    /// looked for, in the background).
    fn ready(self: &Arc<Self>) -> Option<MultiplexedConnection> {
        if self.now() < self.resting_until.load(Ordering::Acquire) {
            return None;
        }
        let moves = self.lookup.moves.load(Ordering::Acquire);
        let current = self
            .conn
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .filter(|(_, at)| *at == moves)
            .map(|(conn, _)| conn.clone());
        if current.is_none() && !self.connecting.swap(true, Ordering::AcqRel) {
            background().spawn(self.clone().connect());
        }
        current
    }

    /// Asks the Sentinels for a replica and connects to it, within the connect timeout.
    async fn connect(self: Arc<Self>) {
        let moves = self.lookup.moves.load(Ordering::Acquire);
        let made = tokio::time::timeout(
            self.lookup.timeout,
            self.lookup.connect_replica(self.timeout),
        )
        .await;
        match made {
            Ok(Ok((conn, replica))) => {
                tracing::info!(
                    replica = %replica,
                    name = %self.lookup.settings.master,
                    "redcache: reading hits from a replica"
                );
                *self.conn.write().unwrap_or_else(PoisonError::into_inner) = Some((conn, moves));
            }
            Ok(Err(err)) => self.failed(&err),
            Err(_) => self.failed(&format!(
                "no replica answered within {:?}",
                self.lookup.timeout
            )),
        }
        self.connecting.store(false, Ordering::Release);
    }

    /// Leaves the replica aside for a while after `err`, and says so once per rest.
    fn failed(&self, err: &dyn std::fmt::Display) {
        *self.conn.write().unwrap_or_else(PoisonError::into_inner) = None;
        let now = self.now();
        let until = now.saturating_add(REPLICA_REST.as_millis() as u64);
        if self.resting_until.swap(until, Ordering::AcqRel) <= now {
            tracing::warn!(
                error = %err,
                name = %self.lookup.settings.master,
                rest = ?REPLICA_REST,
                "redcache: no replica to read from; reading from the master meanwhile"
            );
        }
    }

    /// Milliseconds since `epoch`.
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// The new master (`host:port`) a `+switch-master` message announces for the master
/// `name` (`<name> <old ip> <old port> <new ip> <new port>`), if it is about that one.
fn switched_to(payload: &str, name: &str) -> Option<String> {
    let fields: Vec<&str> = payload.split(' ').collect();
    match fields[..] {
        [master, _, _, ip, port] if master == name => Some(format!("{ip}:{port}")),
        _ => None,
    }
}

/// Listens to one Sentinel after another for `+switch-master` of the store's master,
/// until the store is gone.
async fn watch(lookup: Weak<Lookup>) {
    for turn in 0.. {
        let node = match lookup.upgrade() {
            Some(lookup) => {
                let nodes = &lookup.settings.nodes;
                nodes[turn % nodes.len()].clone()
            }
            None => return,
        };
        if let Err(err) = listen(&lookup, &node).await {
            tracing::debug!(sentinel = %node, error = %err, "redcache: not listening to a Sentinel");
        }
        tokio::time::sleep(WATCH_RETRY).await;
    }
}

/// `step`'s outcome, or an error once `timeout` has passed.
async fn answered<T>(
    timeout: Duration,
    step: impl std::future::Future<Output = RedisResult<T>>,
) -> RedisResult<T> {
    match tokio::time::timeout(timeout, step).await {
        Ok(done) => done,
        Err(_) => Err(redis::RedisError::from((
            redis::ErrorKind::Io,
            "the Sentinel did not answer",
            format!("within {timeout:?}"),
        ))),
    }
}

/// Listens to the Sentinel at `node` until its connection fails or the store is gone.
/// Once subscribed, it checks whether the master moved while nobody listened.
async fn listen(lookup: &Weak<Lookup>, node: &redis::ConnectionAddr) -> RedisResult<()> {
    let Some((client, timeout)) = lookup
        .upgrade()
        .map(|l| RedisResult::Ok((l.client_for(node)?, l.timeout)))
        .transpose()?
    else {
        return Ok(());
    };
    // Each step within the connect timeout: a Sentinel that accepts connections but never
    // answers (stopped, its host overloaded) must not keep the watcher from the next one.
    let (mut sink, mut messages) = answered(timeout, client.get_async_pubsub()).await?.split();
    answered(timeout, sink.subscribe("+switch-master")).await?;
    let named: Option<(String, u16)> = {
        let Some(lookup) = lookup.upgrade() else {
            return Ok(());
        };
        let ask = async {
            redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(&lookup.settings.master)
                .query_async(&mut client.get_multiplexed_async_connection().await?)
                .await
        };
        answered(timeout, ask).await?
    };
    if let (Some(lookup), Some((host, port))) = (lookup.upgrade(), named) {
        let named = format!("{host}:{port}");
        let last = lookup
            .last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        // Unless this Sentinel has not yet heard of a switch another one announced.
        if last.is_some_and(|last| last != named) && lookup.announced_other_than(&named).is_none() {
            lookup.moved("the Sentinels name another master");
        }
    }
    loop {
        match tokio::time::timeout(WATCH_PING, messages.next()).await {
            Ok(Some(message)) => {
                // `<name> <old ip> <old port> <new ip> <new port>`
                let payload: String = message.get_payload()?;
                let Some(lookup) = lookup.upgrade() else {
                    return Ok(());
                };
                if let Some(new) = switched_to(&payload, &lookup.settings.master) {
                    *lookup
                        .announced
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) =
                        Some((new.clone(), Instant::now()));
                    let last = lookup.last.lock().unwrap_or_else(PoisonError::into_inner);
                    // Unless the store already found it (it reconnected first).
                    if last.as_deref() != Some(new.as_str()) {
                        drop(last);
                        lookup.moved("the Sentinels switched to a new master");
                    }
                }
            }
            Ok(None) => {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::Io,
                    "the Sentinel closed the connection",
                )))
            }
            Err(_) => {
                if lookup.strong_count() == 0 {
                    return Ok(());
                }
                // A Sentinel that stopped answering is left for the next one.
                match tokio::time::timeout(WATCH_PING, sink.ping::<redis::Value>()).await {
                    Ok(pong) => drop(pong?),
                    Err(_) => {
                        return Err(redis::RedisError::from((
                            redis::ErrorKind::Io,
                            "the Sentinel did not answer PING",
                        )))
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_switch_is_read_for_its_master_only() {
        let payload = "mymaster 127.0.0.1 6379 127.0.0.1 6380";
        assert_eq!(
            switched_to(payload, "mymaster").as_deref(),
            Some("127.0.0.1:6380")
        );
        assert_eq!(switched_to(payload, "other"), None);
        assert_eq!(switched_to("mymaster 127.0.0.1 6379", "mymaster"), None);
    }
}
