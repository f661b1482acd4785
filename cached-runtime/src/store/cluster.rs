//! Redis Cluster: the same store over redis-rs's async cluster connection.

use super::redis::{
    background, connect_checked, connect_error, connection_config, local_tier, open_client,
    scripts, tracking, Conn, Node, RedisStore,
};
use crate::local::Invalidations;
use crate::{Config, Error, Result};
use redis::aio::ConnectionLike;
use redis::aio::MultiplexedConnection;
use redis::cluster::{ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{
    MultipleNodeRoutingInfo, Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr,
};
use redis::ConnectionAddr;
use redis::{ErrorKind, ProtocolVersion, RedisFuture, ServerErrorKind};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// redis-rs's connection to a cluster, with the `MOVED` and `ASK` redirects followed
/// here, and the refusals that mean nothing ran (`CLUSTERDOWN`, `READONLY`) sent again
/// here.
///
/// redis-rs follows an `ASK` by sending `ASKING` and, once that is answered, the command.
/// On a connection other calls share, another call's command can reach the node between
/// the two and take the one turn `ASKING` grants: the command is answered `MOVED` back to
/// the old master, which answers `ASK` again. While a slot migrates under load that was
/// most reads of its moved keys, and the redirects left redis-rs's connection answering
/// nothing at all (every call timed out from then on). So redis-rs retries nothing itself
/// (`retries(0)`) and hands back each redirect (still rebuilding its slot map after a
/// `MOVED`). Here a `MOVED` command is sent again by its slot, which waits for that
/// rebuild, and an `ASK`ed one goes to the node named, after `ASKING` in the same write, on
/// a connection of the store's own to that node ([`Asking`]): the node may be one redis-rs
/// holds no connection to (a master that serves no slot yet).
///
/// A dropped connection redis-rs replaces by itself; what ran on it is not sent again here
/// but by the store, which knows whether it may run twice (`Resend`).
#[derive(Clone)]
pub(crate) struct ClusterConn {
    conn: ClusterConnection,
    asking: Arc<Asking>,
}

/// How many redirects one command follows: a `MOVED` to a master that answers `ASK`, and
/// one more for a slot that moved on meanwhile.
const REDIRECTS: usize = 3;

/// How many times one command is sent again after a refusal that means nothing ran, and
/// the first pause before it (each later pause four times the one before: 5, 20, 80 ms).
const RESENDS: u32 = 3;
const RESEND_PAUSE: Duration = Duration::from_millis(5);

/// The store's connections to the nodes `ASK` redirects name, made when first needed (on
/// the store's runtime, with its scripts loaded): a seed node's settings (user, password,
/// TLS) at the node's address.
pub(crate) struct Asking {
    config: Config,
    seed: redis::ConnectionInfo,
    nodes: tokio::sync::Mutex<HashMap<(String, u16), MultiplexedConnection>>,
}

impl Asking {
    /// A connection to `host:port`, made now unless one is kept (one at a time: the
    /// reads that meet a migration at once share the connection the first one makes).
    async fn connection(&self, host: &str, port: u16) -> redis::RedisResult<MultiplexedConnection> {
        let node = (host.to_string(), port);
        let mut nodes = self.nodes.lock().await;
        if let Some(conn) = nodes.get(&node) {
            return Ok(conn.clone());
        }
        let addr = match self.seed.addr() {
            ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => ConnectionAddr::TcpTls {
                host: node.0.clone(),
                port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => ConnectionAddr::Tcp(node.0.clone(), port),
        };
        let client = open_client(&self.config, self.seed.clone().set_addr(addr))?;
        let connection_config = connection_config(&self.config, None);
        // Made on the store's own runtime, as the connection may outlive the caller's.
        let connecting = background().spawn(async move {
            client
                .get_multiplexed_async_connection_with_config(&connection_config)
                .await
        });
        let mut conn = connecting
            .await
            .map_err(|e| redis::RedisError::from(std::io::Error::other(e)))??;
        // A master that serves no slot yet is one redis-rs does not load scripts on.
        for script in scripts() {
            script.prepare_invoke().load_async(&mut conn).await?;
        }
        nodes.insert(node, conn.clone());
        Ok(conn)
    }

    /// `cmd` after `ASKING`, in one write, to `host:port`.
    async fn send(
        &self,
        host: &str,
        port: u16,
        cmd: &redis::Cmd,
    ) -> redis::RedisResult<redis::Value> {
        let mut conn = self.connection(host, port).await?;
        let mut pipe = redis::pipe();
        pipe.cmd("ASKING").add_command(cmd.clone());
        let replies = match conn.req_packed_commands(&pipe, 0, 2).await {
            // The next one connects again.
            Err(err) if err.is_connection_dropped() || err.is_io_error() => {
                self.nodes.lock().await.remove(&(host.to_string(), port));
                return Err(err);
            }
            replies => replies?,
        };
        match <[redis::Value; 2]>::try_from(replies) {
            Ok([_, reply]) => reply.extract_error(),
            Err(replies) => Err(redis::RedisError::from((
                ErrorKind::UnexpectedReturnType,
                "ASKING and a command",
                format!("{replies:?}"),
            ))),
        }
    }
}

impl ClusterConn {
    fn new(conn: ClusterConnection, asking: Arc<Asking>) -> Self {
        ClusterConn { conn, asking }
    }

    /// `cmd` sent again as `err`, a redirect, says; `None` when `err` is not one. (Every
    /// command the store sends a cluster has the keys of one slot: `get_many` reads key
    /// by key there.)
    async fn redirected(
        &self,
        err: &redis::RedisError,
        cmd: &redis::Cmd,
    ) -> Option<redis::RedisResult<redis::Value>> {
        match err.kind() {
            // redis-rs is rebuilding its slot map: sent by the slot, the command waits for it.
            ErrorKind::Server(ServerErrorKind::Moved) => {
                Some(self.conn.clone().req_packed_command(cmd).await)
            }
            ErrorKind::Server(ServerErrorKind::Ask) => {
                let (addr, _slot) = err.redirect_node()?;
                let (host, port) = addr.rsplit_once(':')?;
                let port = port.parse().ok()?;
                // An empty host is the address of the node that answered, which only the
                // connection it answered on knows.
                let host = host.trim_matches(['[', ']']);
                (!host.is_empty()).then_some(())?;
                Some(self.asking.send(host, port, cmd).await)
            }
            _ => None,
        }
    }
}

/// Whether the node refused what failed with `err` without running it, for a moment: a
/// cluster failing over or without a quorum, a master demoted under it. (Not `LOADING` or
/// `MASTERDOWN`: redis-rs also hands those to commands already sent when a slot map
/// rebuild fails, which may have run. Nor `TRYAGAIN`, a multi-key command whose keys a
/// migration splits, which lasts as long as the slot's move: the store reads such keys
/// one by one instead, and a grouped fill does not store.)
fn resendable(err: &redis::RedisError) -> bool {
    use ServerErrorKind::*;
    matches!(err.kind(), ErrorKind::Server(ClusterDown | ReadOnly))
}

/// What `send` answers, sent again while the node refuses it for now (`resendable`).
async fn resending<T, Sent>(send: impl Fn() -> Sent) -> redis::RedisResult<T>
where
    Sent: std::future::Future<Output = redis::RedisResult<T>>,
{
    let mut replies = send().await;
    for resend in 0..RESENDS {
        match &replies {
            Err(err) if resendable(err) => {
                pause(resend).await;
                replies = send().await;
            }
            _ => break,
        }
    }
    replies
}

/// The pause before resend `n` (from 0): 5, 20, 80 ms.
async fn pause(n: u32) {
    tokio::time::sleep(RESEND_PAUSE * 4u32.pow(n)).await;
}

impl ConnectionLike for ClusterConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> RedisFuture<'a, redis::Value> {
        Box::pin(async move {
            let mut reply = self.conn.req_packed_command(cmd).await;
            let (mut redirects, mut resends) = (0, 0);
            while let Err(err) = &reply {
                if resendable(err) && resends < RESENDS {
                    pause(resends).await;
                    resends += 1;
                    reply = self.conn.req_packed_command(cmd).await;
                    continue;
                }
                if redirects == REDIRECTS {
                    break;
                }
                redirects += 1;
                match self.redirected(err, cmd).await {
                    Some(again) => reply = again,
                    None => break,
                }
            }
            reply
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipe: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<redis::Value>> {
        self.conn.req_packed_commands(pipe, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }
}

impl Conn for ClusterConn {
    const PIPELINES_SPAN_SLOTS: bool = false;
    const RECONNECTS: bool = true;

    async fn pipe_at(
        &self,
        key: &str,
        pipe: &redis::Pipeline,
    ) -> redis::RedisResult<Vec<redis::Value>> {
        // Routed by the key itself: redis-rs would route `CLIENT CACHING YES` by its
        // second word, as if it were a key.
        let route = SingleNodeRoutingInfo::SpecificNode(Route::with_key(key, SlotAddr::Master));
        let send = || {
            let (mut conn, pipe, route) = (self.conn.clone(), pipe.clone(), route.clone());
            let count = pipe.len();
            async move { conn.route_pipeline(pipe, 0, count, route).await }
        };
        resending(send).await
    }

    async fn masters(&self) -> Result<(Vec<Node>, String)> {
        // Each master's own view: only the two masters a slot moves between show it moving.
        let all = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
        let reply = self
            .conn
            .clone()
            .route_command(redis::cmd("CLUSTER").arg("NODES").clone(), all)
            .await
            .map_err(Error::redis)?;
        let failed = |what: String| Error::Redis {
            source: Box::new(std::io::Error::other(what)),
        };
        let redis::Value::Map(views) = reply else {
            return Err(failed(format!("CLUSTER NODES to every master: {reply:?}")));
        };
        let mut agreed: Option<(String, String)> = None;
        // Each master's id, by redis-rs's name for it: the address `CLUSTER NODES` gives
        // need not be that name (a cluster announcing hostnames names its nodes by them in
        // `CLUSTER SLOTS`, which redis-rs reads, and by IP in `CLUSTER NODES`), and a
        // command routed by an address redis-rs has no connection to is not sent.
        let mut names = HashMap::new();
        for (name, view) in views {
            let view: String = redis::from_redis_value(view).map_err(|e| Error::redis(e.into()))?;
            if let (redis::Value::BulkString(name), Some(id)) = (name, own_id(&view)) {
                if let Some(address) = address_of(&String::from_utf8_lossy(&name)) {
                    names.insert(id.to_owned(), address);
                }
            }
            if let Some(moving) = slot_moving(&view) {
                return Err(Error::resharding(format!(
                    "slot {moving} is moving between the cluster's masters (a resharding): a \
                     walk now could miss keys that move behind it; try again once it is done"
                )));
            }
            let owners = owners_of(&view);
            match &agreed {
                Some((_, first)) if *first != owners => {
                    return Err(Error::resharding(
                        "the cluster's masters do not agree yet on which of them serves which \
                         slots (a resharding or a failover is under way); try again",
                    ))
                }
                Some(_) => {}
                None => agreed = Some((view, owners)),
            }
        }
        let Some((view, owners)) = agreed else {
            return Err(failed("no cluster master answered CLUSTER NODES".into()));
        };
        match masters_of(&view) {
            Ok(masters) => {
                let masters = masters
                    .into_iter()
                    .map(|(id, address)| Some(names.remove(&id).unwrap_or(address)))
                    .collect();
                Ok((masters, owners))
            }
            // A walk of the reachable masters alone would report success and leave the
            // keys of the others.
            Err(covered) => Err(failed(format!(
                "the reachable cluster masters serve {covered} of {SLOTS} slots (a master is \
                 failing over); try again once the cluster is whole"
            ))),
        }
    }

    async fn ping_masters(&self) -> Result<Vec<(Vec<u8>, i64)>> {
        // To every master redis-rs holds a connection to, by its own names for them (the
        // addresses `CLUSTER NODES` gives need not be those), each answering with its
        // connection's id: redis-rs replaces a node's connection by itself (when its slot
        // map is rebuilt), and dropping the old one says nothing to the tier, though Redis
        // stopped tracking for it.
        let all = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
        let reply = self
            .conn
            .clone()
            .route_command(client_id(), all)
            .await
            .map_err(Error::redis)?;
        connections_of(reply)
    }

    async fn send_to(&self, node: &Node, cmd: redis::Cmd) -> Result<redis::Value> {
        let Some((host, port)) = node else {
            return cmd
                .query_async(&mut self.clone())
                .await
                .map_err(Error::redis);
        };
        let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
            host: host.clone(),
            port: *port,
        });
        let send = || {
            let (mut conn, cmd, route) = (self.conn.clone(), cmd.clone(), route.clone());
            async move { conn.route_command(cmd, route).await }
        };
        resending(send).await.map_err(Error::redis)
    }
}

/// `CLIENT ID`: the id of the connection it is sent on.
fn client_id() -> redis::Cmd {
    let mut cmd = redis::cmd("CLIENT");
    cmd.arg("ID");
    cmd
}

/// Each master's address and the id of the connection to it, sorted, from the replies to a
/// `CLIENT ID` sent to every master; an error if any of them did not answer with an id.
fn connections_of(reply: redis::Value) -> Result<Vec<(Vec<u8>, i64)>> {
    let unexpected = |what: String| Error::Redis {
        source: Box::new(std::io::Error::other(what)),
    };
    let redis::Value::Map(replies) = reply else {
        return Err(unexpected(format!("CLIENT ID to every master: {reply:?}")));
    };
    let mut ids = Vec::with_capacity(replies.len());
    for (node, reply) in replies {
        match (node, reply) {
            (redis::Value::BulkString(node), redis::Value::Int(id)) => ids.push((node, id)),
            (_, redis::Value::ServerError(err)) => return Err(Error::redis(err.into())),
            (node, reply) => {
                return Err(unexpected(format!("CLIENT ID from {node:?}: {reply:?}")));
            }
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// A slot the node whose `CLUSTER NODES` this is migrates or imports (`[<slot>->-<id>]`,
/// `[<slot>-<-<id>]` on its own line), if any.
fn slot_moving(nodes: &str) -> Option<&str> {
    let own = nodes.lines().find(|line| {
        line.split_whitespace()
            .nth(2)
            .is_some_and(|flags| flags.split(',').any(|flag| flag == "myself"))
    })?;
    own.split_whitespace()
        .skip(8)
        .find_map(|slots| slots.strip_prefix('['))
        .map(|moving| moving.split(['-', ']']).next().unwrap_or(moving))
}

/// Which master serves which slots, by id, in one order, from `CLUSTER NODES` output:
/// what two views of the cluster must agree on (flags, timestamps and links aside).
fn owners_of(nodes: &str) -> String {
    let mut owners: Vec<String> = nodes
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let slots: Vec<&str> = fields
                .get(8..)?
                .iter()
                .copied()
                .filter(|s| !s.starts_with('['))
                .collect();
            (!slots.is_empty()).then(|| format!("{} {}", fields[0], slots.join(" ")))
        })
        .collect();
    owners.sort_unstable();
    owners.join("\n")
}

/// How many hash slots a cluster has.
const SLOTS: usize = 16384;

/// A node's host and port.
type Address = (String, u16);

/// The host and port of `host:port` (`[::1]:port` for IPv6).
fn address_of(text: &str) -> Option<Address> {
    let (host, port) = text.rsplit_once(':')?;
    Some((host.trim_matches(['[', ']']).to_owned(), port.parse().ok()?))
}

/// The id of the node whose `CLUSTER NODES` this is (its line's flags say `myself`).
fn own_id(nodes: &str) -> Option<&str> {
    nodes.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (id, _address, flags) = (fields.next()?, fields.next()?, fields.next()?);
        flags.split(',').any(|f| f == "myself").then_some(id)
    })
}

/// The reachable masters in `CLUSTER NODES` output (`<id> <ip:port@cport[,hostname]>
/// <flags> <master> <ping> <pong> <epoch> <link> <slot or range>...`), each by id and
/// address, if they serve every slot between them; else how many they serve.
fn masters_of(nodes: &str) -> std::result::Result<Vec<(String, Address)>, usize> {
    let mut served = vec![false; SLOTS];
    let mut masters = Vec::new();
    for line in nodes.lines() {
        let mut fields = line.split_whitespace();
        let (Some(id), Some(address), Some(flags)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let flags: Vec<&str> = flags.split(',').collect();
        if !flags.contains(&"master") || flags.contains(&"fail") || flags.contains(&"noaddr") {
            continue;
        }
        let Some(at) = address.split('@').next().and_then(address_of) else {
            continue;
        };
        // After the master's id, ping, pong, epoch and link state: its slots (`[..]`
        // entries are slots migrating, still served here).
        let mut serves = false;
        for slots in fields.skip(5).filter(|s| !s.starts_with('[')) {
            let (first, last) = slots.split_once('-').unwrap_or((slots, slots));
            if let (Ok(first), Ok(last)) = (first.parse::<usize>(), last.parse::<usize>()) {
                if let Some(range) = served.get_mut(first..=last.min(SLOTS - 1)) {
                    range.fill(true);
                    serves = true;
                }
            }
        }
        // A master that serves no slot (just added, or emptied) holds no key, and the
        // client keeps no connection to it (its map is of the slots' owners).
        if serves {
            masters.push((id.to_owned(), at));
        }
    }
    let covered = served.iter().filter(|s| **s).count();
    if covered < SLOTS {
        return Err(covered);
    }
    Ok(masters)
}

impl RedisStore<ClusterConn> {
    /// Connects to the cluster through its seed nodes and checks it with `PING`, within
    /// `connect_timeout` (or not at all, when lazy).
    pub(crate) async fn connect_cluster(config: &Config) -> Result<Self> {
        let seeds = config.cluster_connection_infos()?;
        let asking = Arc::new(Asking {
            config: config.clone(),
            seed: seeds[0].clone(),
            nodes: Default::default(),
        });
        let mut builder = ClusterClientBuilder::new(seeds).retries(0);
        let local = local_tier(config);
        if let Some(tier) = &local {
            // Client tracking needs RESP3's push messages; each node pushes the
            // invalidations of the keys read from it.
            builder = builder
                .use_protocol(ProtocolVersion::RESP3)
                .cache_config(tracking())
                .push_sender(Invalidations(tier.clone()));
        }
        #[cfg(feature = "tls")]
        if let Some(certificates) = super::redis::tls_certificates(config) {
            builder = builder.certs(certificates);
        }
        let client = builder.build().map_err(|e| connect_error(config, e))?;
        let cluster_config = ClusterConfig::new()
            .set_connection_timeout(config.connect_timeout())
            .set_response_timeout(config.op_timeout());
        let reopen = {
            let (client, cluster_config) = (client.clone(), cluster_config.clone());
            let asking = asking.clone();
            move || -> super::redis::Connecting<ClusterConn> {
                let (client, cluster_config) = (client.clone(), cluster_config.clone());
                let asking = asking.clone();
                Box::pin(async move {
                    let conn = client
                        .get_async_connection_with_config(cluster_config)
                        .await?;
                    Ok(ClusterConn::new(conn, asking))
                })
            }
        };
        // On the caller's runtime, whatever its kind (see `made_on`).
        let conn = if config.lazy() {
            let conn = client.get_pending_async_connection_with_config(cluster_config);
            ClusterConn::new(conn, asking)
        } else {
            let connecting = client.get_async_connection_with_config(cluster_config);
            let connecting = async { Ok(ClusterConn::new(connecting.await?, asking)) };
            connect_checked(config, connecting).await?
        };
        Ok(
            RedisStore::new(Some(conn), reopen, local, config.max_fill_time())
                .checking_liveness(config.op_timeout()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::Value;

    #[test]
    fn the_connections_are_each_masters_address_and_id_in_one_order() {
        let node = |addr: &str| Value::BulkString(addr.as_bytes().to_vec());
        let reply = |ids: [i64; 2]| {
            Value::Map(vec![
                (node("127.0.0.1:7001"), Value::Int(ids[1])),
                (node("127.0.0.1:7000"), Value::Int(ids[0])),
            ])
        };
        let before = connections_of(reply([5, 9])).unwrap();
        assert_eq!(
            before,
            vec![
                (b"127.0.0.1:7000".to_vec(), 5),
                (b"127.0.0.1:7001".to_vec(), 9)
            ]
        );
        assert_eq!(connections_of(reply([5, 9])).unwrap(), before);
        assert_ne!(
            connections_of(reply([5, 12])).unwrap(),
            before,
            "a new connection"
        );
        let failed = Value::Map(vec![(
            node("127.0.0.1:7000"),
            redis::parse_redis_value(b"-ERR gone\r\n").unwrap(),
        )]);
        assert!(connections_of(failed).is_err());
        assert!(connections_of(Value::Okay).is_err());
    }

    #[test]
    fn a_slot_moving_is_seen_on_its_masters_own_line_and_owners_ignore_it() {
        let settled = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7001@17001 master - 0 1700000000000 2 connected 5461-16383
";
        let migrating = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460 [42->-b2]
b2 127.0.0.1:7001@17001 master - 0 1700000000500 2 connected 5461-16383
";
        let importing = "\
a1 127.0.0.1:7000@17000 master - 0 1700000000000 1 connected 0-5460
b2 127.0.0.1:7001@17001 myself,master - 0 0 2 connected 5461-16383 [42-<-a1]
";
        assert_eq!(slot_moving(settled), None);
        assert_eq!(slot_moving(migrating), Some("42"));
        assert_eq!(slot_moving(importing), Some("42"));
        assert_eq!(owners_of(settled), owners_of(migrating));
        assert_eq!(owners_of(settled), owners_of(importing));
        assert_eq!(owners_of(settled), "a1 0-5460\nb2 5461-16383");
        let moved = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 3 connected 0-41 43-5460
b2 127.0.0.1:7001@17001 master - 0 1700000000000 2 connected 42 5461-16383
";
        assert_ne!(owners_of(settled), owners_of(moved));
    }

    #[test]
    fn masters_are_read_from_cluster_nodes() {
        let nodes = "\
a1 127.0.0.1:7000@17000,node-a.svc myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7001@17001 master - 0 1700000000000 2 connected 5461-10922
c3 127.0.0.1:7002@17002 master,fail - 0 1700000000000 3 disconnected
d4 127.0.0.1:7003@17003 slave a1 0 1700000000000 1 connected
e5 [::1]:7004@17004 master - 0 1700000000000 4 connected 10923-16383
";
        let master = |id: &str, host: &str, port| (id.to_string(), (host.to_string(), port));
        assert_eq!(
            masters_of(nodes),
            Ok(vec![
                master("a1", "127.0.0.1", 7000),
                master("b2", "127.0.0.1", 7001),
                master("e5", "::1", 7004)
            ])
        );
        assert_eq!(own_id(nodes), Some("a1"));
        assert_eq!(own_id(&nodes.replace("myself,", "")), None);
    }

    #[test]
    fn a_failing_master_whose_slots_no_one_serves_yet_is_an_error() {
        // Its replica is not promoted yet: the walk would miss 5,462 slots.
        let nodes = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7001@17001 master - 0 1700000000000 2 connected 5461-10921 10922
c3 127.0.0.1:7002@17002 master,fail - 0 1700000000000 3 disconnected 10923-16383
d4 127.0.0.1:7003@17003 slave c3 0 1700000000000 3 connected
";
        assert_eq!(masters_of(nodes), Err(10923));
        // Once it is promoted, the cluster is whole again.
        let promoted = nodes.replace(
            "d4 127.0.0.1:7003@17003 slave c3 0 1700000000000 3 connected",
            "d4 127.0.0.1:7003@17003 master - 0 1700000000000 4 connected 10923-16383",
        );
        assert_eq!(masters_of(&promoted).map(|m| m.len()), Ok(3));
    }
}
