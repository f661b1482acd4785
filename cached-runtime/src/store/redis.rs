//! Redis: one multiplexed connection, replaced by the store when it drops, to a
//! standalone server (`MultiplexedConnection`), to the master Sentinel names
//! (`sentinel.rs`: a `MultiplexedConnection` too, whose replacement asks the Sentinels
//! again) or to a Redis Cluster (`cluster::ClusterConn`: redis-rs's cluster connection,
//! which reconnects to its nodes by itself, with `MOVED`/`ASK` redirects followed by the
//! store). The commands are the same for all, but on a cluster those that would span
//! slots go key by key, and walking the keyspace visits every master. Behind Sentinel
//! with replica reads, the relaxed reads go to a replica first (`sentinel::Replica`), and
//! to the master when it cannot answer.

use super::sentinel::Replica;
use super::{EntryAndGen, Fill, Replaced, Seen, Store};
use crate::local::{Invalidations, LocalTier};
use crate::{Config, Error, Result};
use arc_swap::ArcSwap;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::caching::{CacheConfig, CacheMode};
use redis::AsyncConnectionConfig;
use redis::{ProtocolVersion, Script};
use std::fmt;
use std::future::Future;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::{oneshot, watch};

/// Keys one prefix-invalidation script handles (a GET and a SET each, about 1 µs apiece):
/// a script holds Redis for well under a millisecond.
const SCRIPT_KEYS: usize = 100;

/// Longest expiry sent to Redis (about 300 years), so a huge TTL never overflows `PX`.
const MAX_PX_MS: u128 = 10_000_000_000_000;

pub(crate) struct RedisStore<C = MultiplexedConnection> {
    /// Shared with the task that makes a new connection, which puts it here itself.
    conn: Arc<ArcSwap<Bound<C>>>,
    /// A new connection: for the first one of a lazy store, when the connection in use
    /// drops (Redis restarted, or a network fault), when the runtime whose tasks drive it
    /// has shut down, and (behind Sentinel) when the server it reaches is no longer the
    /// master.
    reopen: Box<dyn Fn() -> Connecting<C> + Send + Sync>,
    /// The last reopening: one at a time, in a task of its own, so that it completes even
    /// when the callers that wait for it give up (their operation timed out). The callers
    /// whose operations failed together wait for it and take its connection, rather than
    /// each making one.
    reopening: Mutex<Option<Attempt<C>>>,
    /// The local tier this connection's invalidation pushes keep coherent, if any.
    tier: Option<Arc<LocalTier>>,
    /// Behind Sentinel: a `READONLY` reply always reopens (a new connection finds the
    /// master again), without the once-a-second limit of a store on one address.
    follows_master: bool,
    /// When a `READONLY` reply last reopened a store that does not follow a master (see
    /// [`must_replace`](Self::must_replace)).
    read_only_reopened: Mutex<Option<Instant>>,
    /// How many times the master moved, as a watcher of the Sentinels counts: a
    /// connection made before the last move is not used again.
    moves: Option<Arc<AtomicU64>>,
    /// Behind Sentinel, reading from replicas: the replica that serves relaxed reads.
    replica: Option<Arc<Replica>>,
    /// How long a writer's entry fences older fills (the cache's `max_fill_time`); see
    /// `FILL_LUA`.
    fence_for: Duration,
    /// A check of the connection in use is under way ([`stalled`](Self::stalled)).
    checking: Arc<AtomicBool>,
    /// Redis refused `CLIENT CACHING YES` on the connection in use (see
    /// [`get_tracked`](Self::get_tracked)): reads are not tracked until a new one.
    untracked: Arc<AtomicBool>,
}

/// A connection being made.
pub(super) type Connecting<C> = Pin<Box<dyn Future<Output = redis::RedisResult<C>> + Send>>;

/// A reopening under way, or done: `None` until its task has put the new connection (and
/// its generation) in place, or failed. A closed channel means the task was dropped (its
/// runtime shut down).
type Attempt<C> = watch::Receiver<Option<redis::RedisResult<(C, u64)>>>;

/// Whether an operation may be sent again on a new connection after its connection failed
/// under it. A command that changes data may have run before the connection dropped, and
/// running it again would answer differently (`SET NX`, `SET ... GET`, the fill script) or
/// undo what another client wrote in between (a plain `SET` of a group's
/// generation). A `READONLY` answer (the server was demoted) means nothing
/// ran, so any operation is sent again then (on one server, if it may reconnect: at most
/// once a second). An invalidation is sent again too, with new
/// tombstones or a new generation (`invalidating`, `tombstone_keys`), and a lease's
/// release, which deletes only what holds its token (its answer is not used). (A cluster's
/// connection replaces a node's dropped connection by itself: a `Safe` operation is sent
/// again on it.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resend {
    Safe,
    Never,
}

/// The runtime that runs the connections no caller's runtime can (a replacement for one
/// whose runtime shut down, or one needed by a caller on a current-thread runtime) and the
/// Sentinel watcher, the local tier's [`heartbeat`], the retries of failed evictions and
/// the release of a lease whose holder was dropped: one worker thread, for the life of the
/// process, so that their tasks cannot die with a caller's runtime.
pub(crate) fn background() -> &'static tokio::runtime::Handle {
    static HANDLE: OnceLock<tokio::runtime::Handle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("redcache: cannot start the runtime for Redis connections");
        let handle = runtime.handle().clone();
        std::thread::Builder::new()
            .name("redcache-io".into())
            .spawn(move || runtime.block_on(std::future::pending::<()>()))
            .expect("redcache: cannot start the thread for Redis connections");
        handle
    })
}

/// The runtime a connection made now is to run on: the caller's, if it is a multi-thread
/// runtime (no thread hop per command); else redcache's connection thread. A current-thread
/// runtime runs its tasks only while its thread is inside its `block_on`: a connection made
/// on one stalls whenever that runtime is idle or its thread blocks (a set-up runtime kept
/// aside, a `#[tokio::test]` calling blocking code), and every call on every other runtime
/// waits out the operation timeout meanwhile.
pub(super) fn lasting_runtime() -> Handle {
    match Handle::try_current() {
        Ok(caller) if caller.runtime_flavor() == RuntimeFlavor::MultiThread => caller,
        _ => background().clone(),
    }
}

/// The runtime a store's first connection was made on: [`lasting_runtime`], except a
/// cluster's, made on the caller's runtime whatever its kind. (redis-rs's cluster
/// connection, run on redcache's connection thread, was seen to answer nothing after a
/// `MOVED` until the operation timeout, in a test on Valkey 9: until that is understood,
/// a cluster connects where it is asked to, as before.)
fn made_on<C: Conn>() -> Option<Handle> {
    match C::RECONNECTS {
        true => Handle::try_current().ok(),
        false => Some(lasting_runtime()),
    }
}

/// Awaits `making`, which makes a connection, on [`lasting_runtime`]: redis-rs runs the
/// connection's tasks on the runtime that makes it. (Boxed: the types of redis-rs's
/// connecting futures nest deep enough that proving them `Send` where a cache is built
/// overflows the compiler's query depth.)
pub(super) async fn made_to_last<T: Send + 'static>(
    making: Pin<Box<dyn Future<Output = T> + Send + 'static>>,
) -> T {
    match Handle::try_current() {
        Ok(caller) if caller.runtime_flavor() == RuntimeFlavor::MultiThread => making.await,
        _ => match background().spawn(making).await {
            Ok(made) => made,
            Err(failed) => std::panic::resume_unwind(failed.into_panic()),
        },
    }
}

/// What a store knows of its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Link {
    /// A connection that no operation found broken.
    Up,
    /// None to use yet: a lazy store before its first operation, or a connection retired
    /// without a fault (its runtime shut down, the master moved) that the next operation
    /// replaces.
    NotYet,
    /// An operation found it dropped, a check found it answering nothing (see
    /// [`RedisStore::stalled`]), or making one failed, and it is not replaced yet.
    Down,
}

/// A connection and whether the tokio runtime it was made on has shut down. redis-rs runs
/// a connection's reader and writer as a task of that runtime, so a cache made in one
/// `#[tokio::test]` (or one `Runtime::block_on`) would fail every call made after that
/// runtime is gone.
struct Bound<C> {
    /// None until the first connection is made (a lazy store).
    conn: Option<C>,
    runtime_gone: Arc<AtomicBool>,
    /// An operation found it dropped (or, behind Sentinel, on a replica), or it answered
    /// not even a `PING` after operations timed out on it: it is to be replaced.
    failed: AtomicBool,
    /// Dropped with this, which ends its [`Watch`] task.
    _watched: Option<oneshot::Sender<()>>,
    /// The runtime it was made on (which runs its tasks), to ask whether it still runs.
    runtime: Option<tokio::runtime::Handle>,
    /// Which connection of this store it is (each new one counts up).
    generation: u64,
    /// The master's moves counted when this connection was asked for.
    moves: u64,
}

impl<C> Bound<C> {
    /// `conn`, made on `runtime` (if any), watched by a task of that runtime.
    fn new(conn: Option<C>, runtime: Option<Handle>, generation: u64, moves: u64) -> Self {
        let runtime_gone = Arc::new(AtomicBool::new(false));
        let watched = runtime.as_ref().map(|runtime| {
            let (watched, bound) = oneshot::channel();
            runtime.spawn(Watch {
                gone: runtime_gone.clone(),
                bound,
            });
            watched
        });
        Bound {
            conn,
            runtime_gone,
            failed: AtomicBool::new(false),
            _watched: watched,
            runtime,
            generation,
            moves,
        }
    }

    /// The connection, unless there is none yet, it failed, its runtime has shut down, or
    /// the master moved (`moves`, now) since it was asked for.
    fn usable(&self, moves: u64) -> Option<&C> {
        self.conn.as_ref().filter(|_| {
            !self.failed.load(Ordering::Acquire)
                && !self.runtime_gone.load(Ordering::Acquire)
                && self.moves == moves
        })
    }
}

/// The first pause before an operation is sent again on a cluster's connection after a
/// node's connection dropped under it (each later one four times longer: 5, 20, 80 ms).
const RECONNECT_PAUSE: Duration = Duration::from_millis(5);

/// How often a store with a local tier checks that its connection still answers.
pub(crate) const HEARTBEAT: Duration = Duration::from_millis(500);

/// The local tier's copies are good while Redis's invalidation pushes reach this process,
/// and nothing else says when they stop: a link that goes silent (a partition without a
/// reset, a peer that vanished) fails no operation for as long as TCP keeps trying, and a
/// process that answers from its tier makes none. Nor does a connection whose runtime shut
/// down (its task, and so its socket, went with it). So every [`HEARTBEAT`], each master
/// is sent a `PING` on the store's connection (a reply means every push Redis sent before
/// it has been applied: pushes and replies arrive in order), or on a cluster a `CLIENT ID`
/// on the connection to each master that redis-rs reads through (its pushes pass through
/// redis-rs's channel first). No reply within `timeout`, or no connection to ask (its
/// runtime is gone, or the master moved), retires every copy: they are read from Redis
/// again once it answers. So does a cluster connection that redis-rs replaced by itself
/// since the last beat (a new id): Redis stopped tracking for the old one, and no push
/// says so. A stale copy is then served for at most `HEARTBEAT` + `timeout` after the
/// link goes silent or is replaced. Ends with the store.
async fn heartbeat<C: Conn>(
    conn: std::sync::Weak<ArcSwap<Bound<C>>>,
    tier: std::sync::Weak<LocalTier>,
    moves: Option<Arc<AtomicU64>>,
    timeout: Duration,
) {
    let mut ticks = tokio::time::interval(HEARTBEAT);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Said once when Redis stops answering, and once when it answers again.
    let mut silent = false;
    // The connections the last answer came on, and whether a beat before the first answer
    // found Redis silent or no connection to ask.
    let mut answered_on = None;
    let mut missed = false;
    loop {
        ticks.tick().await;
        let (Some(conn), Some(tier)) = (conn.upgrade(), tier.upgrade()) else {
            return;
        };
        let bound = conn.load_full();
        drop(conn);
        // None yet (a lazy store that made no connection): nothing was tracked.
        if bound.conn.is_none() {
            continue;
        }
        let moves = moves.as_ref().map_or(0, |m| m.load(Ordering::Acquire));
        let Some(conn) = bound.usable(moves).cloned() else {
            tier.clear();
            missed = true;
            continue;
        };
        drop(bound);
        match within(timeout, conn.ping_masters()).await {
            Ok(connections) => {
                // A connection replaced since the last beat took its tracking with it: the
                // pushes for what was read on it will never come. With no answer before
                // (only beats that retired every copy), what was read since the last of
                // them may have been read on a connection replaced before this answer.
                let replaced = match &answered_on {
                    Some(last) => *last != connections,
                    None => missed && !connections.is_empty(),
                };
                if replaced {
                    tier.clear();
                    tracing::debug!(
                        "redcache: a connection to Redis was replaced; local copies retired"
                    );
                }
                answered_on = Some(connections);
                if silent {
                    silent = false;
                    tracing::info!("redcache: Redis answers the heartbeat again");
                }
            }
            Err(err) => {
                tier.clear();
                missed = true;
                if !silent {
                    silent = true;
                    tracing::warn!(
                        error = %err,
                        "redcache: Redis did not answer the heartbeat; every local copy is \
                         retired (and again each time it does not answer)"
                    );
                }
            }
        }
    }
}

/// A task that lasts as long as its [`Bound`]: its runtime drops it when shutting down,
/// and then it says so.
struct Watch {
    gone: Arc<AtomicBool>,
    /// Closed when the `Bound` is dropped (its connection was replaced).
    bound: oneshot::Receiver<()>,
}

impl Future for Watch {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.bound).poll(cx).map(|_| ())
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.gone.store(true, Ordering::Release);
    }
}

impl<C> fmt::Debug for RedisStore<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore").finish_non_exhaustive()
    }
}

/// A node to send a command to: `None` for the one server of a standalone connection.
pub(crate) type Node = Option<(String, u16)>;

/// What the store needs of a connection beyond sending commands.
pub(crate) trait Conn: ConnectionLike + Clone + Send + Sync + 'static {
    /// The nodes whose keyspaces together hold every key (the masters of a cluster), and
    /// which of them serves which keys: the same answer while no key moves between them.
    /// An error while keys are moving (a cluster's slot migrating), when a walk of the
    /// nodes one after the other could miss a key that moved behind it.
    fn masters(&self) -> impl Future<Output = Result<(Vec<Node>, String)>> + Send;
    /// Sends `pipe` to the node that holds `key` (the pipeline's commands without a key
    /// included); every reply.
    fn pipe_at(
        &self,
        key: &str,
        pipe: &redis::Pipeline,
    ) -> impl Future<Output = redis::RedisResult<Vec<redis::Value>>> + Send;
    /// Sends `cmd` to `node`.
    fn send_to(
        &self,
        node: &Node,
        cmd: redis::Cmd,
    ) -> impl Future<Output = Result<redis::Value>> + Send;
    /// Asks every master on the connections reads go out on for something it answers at
    /// once: `Ok` when each answered, with what tells those connections apart from any
    /// that replace them without the store's knowing (a cluster's node connections, which
    /// redis-rs replaces by itself); the same on every beat while they stay.
    fn ping_masters(&self) -> impl Future<Output = Result<Vec<(Vec<u8>, i64)>>> + Send;
    /// Whether one pipeline may carry commands for keys of different slots (not on a
    /// cluster, where a pipeline goes to one node).
    const PIPELINES_SPAN_SLOTS: bool = true;
    /// Whether the connection reconnects by itself when it drops (a cluster's, to each
    /// node); the store replaces one that does not.
    const RECONNECTS: bool = false;
}

impl Conn for MultiplexedConnection {
    async fn masters(&self) -> Result<(Vec<Node>, String)> {
        Ok((vec![None], String::new()))
    }

    async fn send_to(&self, _: &Node, cmd: redis::Cmd) -> Result<redis::Value> {
        cmd.query_async(&mut self.clone())
            .await
            .map_err(Error::redis)
    }

    async fn ping_masters(&self) -> Result<Vec<(Vec<u8>, i64)>> {
        // The store replaces this connection itself, and retires the tier when it does.
        self.send_to(&None, redis::cmd("PING"))
            .await
            .map(|_| Vec::new())
    }

    async fn pipe_at(
        &self,
        _: &str,
        pipe: &redis::Pipeline,
    ) -> redis::RedisResult<Vec<redis::Value>> {
        pipe.query_async(&mut self.clone()).await
    }
}

/// The PEM certificates of the authorities to trust, from the configuration.
#[cfg(feature = "tls")]
pub(super) fn tls_certificates(config: &Config) -> Option<redis::TlsCertificates> {
    config.tls_ca_cert().map(|pem| redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(pem.to_vec()),
    })
}

/// The local tier, if the configuration asks for one.
pub(super) fn local_tier(config: &Config) -> Option<Arc<LocalTier>> {
    (config.local_capacity() > 0).then(|| {
        Arc::new(LocalTier::new(
            config.local_capacity(),
            config.local_max_bytes(),
            config.max_value_bytes(),
        ))
    })
}

/// Says once per process that Redis refused to track a read (`refusal`), so the local
/// tier keeps nothing.
fn warn_untracked(refusal: &dyn std::fmt::Debug) {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::warn!(
            refusal = ?refusal,
            "redcache: Redis refused `CLIENT CACHING YES` (an ACL user needs \
             `+client|caching`): the local tier keeps no copies, and every hit reads Redis"
        );
    }
}

/// What a connection needs for a local tier: `CLIENT TRACKING ON OPTIN` at every
/// (re)connection, which redis-rs sends for a client with a cache configuration. Its own
/// cache is never used (no command opts in): only the reads that may fill the local tier
/// are tracked, by `CLIENT CACHING YES` just before them.
pub(super) fn tracking() -> CacheConfig {
    CacheConfig::new()
        .set_mode(CacheMode::OptIn)
        .set_size(NonZeroUsize::MIN)
}

impl RedisStore<MultiplexedConnection> {
    /// Connects and checks the server with `PING`, all within `connect_timeout` (or not at
    /// all, when lazy: the first operation connects).
    pub(crate) async fn connect(config: &Config) -> Result<Self> {
        let mut info = config.connection_info()?;
        let local = local_tier(config);
        if local.is_some() {
            // Client tracking needs RESP3's push messages.
            let settings = info
                .redis_settings()
                .clone()
                .set_protocol(ProtocolVersion::RESP3);
            info = info.set_redis_settings(settings);
        }
        let client = open_client(config, info).map_err(|e| connect_error(config, e))?;
        let connection_config = connection_config(config, local.clone());
        let reopen = move || -> Connecting<MultiplexedConnection> {
            let (client, connection_config) = (client.clone(), connection_config.clone());
            Box::pin(async move {
                client
                    .get_multiplexed_async_connection_with_config(&connection_config)
                    .await
            })
        };
        let conn = match config.lazy() {
            // No connection yet: the first operation makes it, and a failed one is tried
            // again by a later operation (the breaker paces the attempts).
            true => None,
            false => Some(connect_checked(config, made_to_last(reopen())).await?),
        };
        Ok(RedisStore::new(conn, reopen, local, config.max_fill_time())
            .checking_liveness(config.op_timeout()))
    }
}

/// How a connection connects and times out, with the local tier if there is one.
pub(super) fn connection_config(
    config: &Config,
    local: Option<Arc<LocalTier>>,
) -> AsyncConnectionConfig {
    let connection_config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(config.connect_timeout()))
        // No response timeout of its own: every operation already runs under the
        // operation timeout (`Core::op`), and a second timer per command cost each hit
        // about a quarter of a microsecond.
        .set_response_timeout(None);
    match local {
        Some(tier) => connection_config
            .set_cache_config(tracking())
            .set_push_sender(Invalidations(tier)),
        None => connection_config,
    }
}

/// `Error::Connect` for the configured (redacted) address.
pub(super) fn connect_error(
    config: &Config,
    source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> Error {
    Error::Connect {
        target: config.redacted_target(),
        source: source.into(),
    }
}

/// Awaits `connect` and checks the connection with `PING`, all within `connect_timeout`.
pub(super) async fn connect_checked<C: ConnectionLike>(
    config: &Config,
    connect: impl Future<Output = redis::RedisResult<C>>,
) -> Result<C> {
    let checked = async {
        let mut conn = connect.await?;
        redis::cmd("PING").query_async::<()>(&mut conn).await?;
        Ok::<_, redis::RedisError>(conn)
    };
    match tokio::time::timeout(config.connect_timeout(), checked).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(connect_error(config, e)),
        Err(_) => Err(connect_error(
            config,
            format!("no answer within {:?}", config.connect_timeout()),
        )),
    }
}

/// A client for `info`, trusting the configured certificate authorities for TLS.
pub(super) fn open_client(
    config: &Config,
    info: redis::ConnectionInfo,
) -> redis::RedisResult<redis::Client> {
    #[cfg(feature = "tls")]
    if let Some(certificates) = tls_certificates(config) {
        return redis::Client::build_with_tls(info, certificates);
    }
    #[cfg(not(feature = "tls"))]
    let _ = config;
    redis::Client::open(info)
}

/// The conditional fill (see [`Store::fill`]). `KEYS[1]`: the entry; `KEYS[2]`, for a
/// grouped function: the group's generation. `ARGV`: value, PX milliseconds, what the read
/// saw (`0` nothing, `1` the bytes in `ARGV[4]`, `2` a key of another type, `3` anything),
/// the generation stamped into the value, `1` if the fill may create the generation, `1` if
/// the generation expires (then it is made to live at least as long as the entry), and how
/// long a writer's entry fences, in milliseconds (the cache's `max_fill_time`).
/// A key of another type is overwritten unless the read saw bytes there: a grouped read
/// (`MGET`) answers nil for one, as for nothing. Bytes the read saw may also have expired
/// since: an invalidation leaves a tombstone, never nothing. And nothing is never where a
/// fence should still stand: a write-through (`3`) lives at least as long as it fences,
/// and a fill over an entry at least as long as that entry would have (up to the same
/// bound), past its own TTL if need be (its stamp
/// then says when it expired, and readers take it for a miss from then on). The time is
/// handed to Redis as the integer's digits: some servers (Redis 7.2.0–7.2.4) write a Lua
/// number such as 1e13 in exponent form, which `PX` refuses.
const FILL_LUA: &str = r"
local cur = redis.pcall('GET', KEYS[1])
local seen = ARGV[3]
local px = tonumber(ARGV[2])
local fence = tonumber(ARGV[8])
if type(cur) == 'table' then
  if seen == '1' then return 0 end
elseif seen == '1' then
  if cur and cur ~= ARGV[4] then return 0 end
elseif seen ~= '3' and cur then
  return 0
end
if KEYS[2] then
  local gen = redis.call('GET', KEYS[2])
  if gen then
    if gen ~= ARGV[5] then return 0 end
  elseif ARGV[6] == '1' then
    redis.call('SET', KEYS[2], ARGV[5])
  else
    return 0
  end
end
if seen == '3' then
  if px < fence then px = fence end
elseif cur then
  local left = math.min(redis.call('PTTL', KEYS[1]), fence)
  if px < left then px = left end
end
px = string.format('%d', px)
if KEYS[2] and ARGV[7] == '1' then
  if redis.call('PTTL', KEYS[2]) < tonumber(px) then
    redis.call('PEXPIRE', KEYS[2], px)
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', px)
return 1
";

/// Releases a lease only for its owner: `KEYS[1]` the lease, `ARGV[1]` the owner's token.
const RELEASE_LUA: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// A prefix invalidation's step (see [`Store::invalidate_prefix`]): `KEYS` are the keys one
/// `SCAN` step found; each that still exists becomes a unique tombstone living `ARGV[1]`
/// milliseconds (`ARGV[2]` is a random base of the ids), except leases, which keep
/// fencing what they fence (the rule of `prefix_retires`). A tombstone is replaced too,
/// by a new one: a miss that read it must not find it unchanged. How many entries it
/// replaced, tombstones not counted.
const INVALIDATE_LUA: &str = r#"
local n = 0
for i, key in ipairs(KEYS) do
  local cur = redis.pcall('GET', key)
  local text = type(cur) == 'string'
  local lease = text and string.sub(key, -5) == ':lock' and string.match(cur, '^%d+$') ~= nil
  if cur and not lease then
    local id = ARGV[2] .. string.format('%04d', i)
    redis.call('SET', key, '{"v":1,"gone":' .. id .. '}', 'PX', ARGV[1])
    if not (text and string.sub(cur, 1, 14) == '{"v":1,"gone":') then
      n = n + 1
    end
  end
end
return n
"#;

fn invalidate_script() -> &'static Script {
    static SCRIPT: OnceLock<Script> = OnceLock::new();
    SCRIPT.get_or_init(|| Script::new(INVALIDATE_LUA))
}

/// Every script the store runs, to load where redis-rs would not.
pub(super) fn scripts() -> [&'static Script; 2] {
    [fill_script(), invalidate_script()]
}

fn fill_script() -> &'static Script {
    static SCRIPT: OnceLock<Script> = OnceLock::new();
    SCRIPT.get_or_init(|| Script::new(FILL_LUA))
}

/// The fill script's call for one fill (see `FILL_LUA`).
fn fill_invocation<'a>(fill: &Fill<'_>, fence_for: Duration) -> redis::ScriptInvocation<'a> {
    let (seen, observed): (&str, &[u8]) = match fill.seen {
        Seen::Nothing => ("0", b""),
        Seen::Bytes(bytes) => ("1", bytes),
        Seen::WrongType => ("2", b""),
        Seen::Any => ("3", b""),
    };
    let mut call = fill_script().prepare_invoke();
    call.key(fill.key);
    if let Some(group) = fill.group {
        call.key(group.key);
    }
    call.arg(fill.value)
        .arg(px(fill.ttl))
        .arg(seen)
        .arg(observed)
        .arg(fill.group.map_or(0, |g| g.gen))
        .arg(if fill.group.is_some_and(|g| g.create) {
            "1"
        } else {
            "0"
        })
        .arg(if fill.group.is_some_and(|g| g.expiring) {
            "1"
        } else {
            "0"
        })
        .arg(px(fence_for));
    call
}

/// Whether `err` means the connection must be replaced: it dropped or cannot be made, or
/// (if `read_only_reopens`) the server is a replica now.
fn needs_reopen(err: &redis::RedisError, read_only_reopens: impl FnOnce() -> bool) -> bool {
    err.is_connection_dropped() || err.is_io_error() || (is_read_only(err) && read_only_reopens())
}

/// How often at most a `READONLY` reply reopens a store that does not follow a master: its
/// address may name a replica for good (then each reopen finds one again).
const READ_ONLY_REOPEN_EVERY: Duration = Duration::from_secs(1);

/// Whether `err` is a `READONLY` answer: the command did not run.
fn is_read_only(err: &redis::RedisError) -> bool {
    err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
        // Before Redis 7, a script's refused write comes wrapped in the script's error:
        // `ERR Error running script (call to f_..): @user_script:1: @user_script: 1:
        // -READONLY You can't write against a read only replica.`
        || crate::error::script_error_code(err) == Some("READONLY")
}

fn px(ttl: Duration) -> u64 {
    ttl.as_millis().clamp(1, MAX_PX_MS) as u64
}

/// `prefix` as a SCAN pattern that matches exactly the keys starting with it: the glob
/// characters are escaped.
fn prefix_pattern(prefix: &str) -> String {
    let mut pattern = String::with_capacity(prefix.len() + 8);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('*');
    pattern
}

/// `name` (`GET` or `MGET`) of `keys`, its buffers sized once: `redis::cmd` grows them
/// argument by argument, a reallocation per key on every read.
fn read_cmd<K: AsRef<str>>(name: &str, keys: &[K]) -> redis::Cmd {
    let bytes = keys.iter().map(|k| k.as_ref().len()).sum::<usize>();
    let mut cmd = redis::Cmd::with_capacity(1 + keys.len(), name.len() + bytes);
    cmd.arg(name);
    for key in keys {
        cmd.arg(key.as_ref());
    }
    cmd
}

/// `SET key value` and then `options` (`NX`, `GET`), with `PX ttl` if given, its buffers
/// sized once: `redis::cmd` grows them argument by argument, several reallocations on
/// every miss's write.
fn set_cmd(key: &str, value: &[u8], ttl: Option<Duration>, options: &[&str]) -> redis::Cmd {
    // "PX" and up to 20 digits.
    let expiry = 22;
    let options_len = options.iter().map(|o| o.len()).sum::<usize>();
    let mut cmd = redis::Cmd::with_capacity(
        5 + options.len(),
        3 + key.len() + value.len() + expiry + options_len,
    );
    cmd.arg("SET").arg(key).arg(value);
    if let Some(ttl) = ttl {
        cmd.arg("PX").arg(px(ttl));
    }
    for option in options {
        cmd.arg(*option);
    }
    cmd
}

impl<C: Conn> RedisStore<C> {
    /// A store over `conn`, made on [`made_on`]'s runtime (none yet: the first operation
    /// makes one); `reopen` makes another.
    pub(super) fn new(
        conn: Option<C>,
        reopen: impl Fn() -> Connecting<C> + Send + Sync + 'static,
        tier: Option<Arc<LocalTier>>,
        fence_for: Duration,
    ) -> Self {
        RedisStore {
            conn: Arc::new(ArcSwap::from_pointee(Bound::new(
                conn,
                made_on::<C>(),
                0,
                0,
            ))),
            reopen: Box::new(reopen),
            reopening: Mutex::new(None),
            tier,
            follows_master: false,
            read_only_reopened: Mutex::new(None),
            moves: None,
            replica: None,
            fence_for,
            checking: Arc::new(AtomicBool::new(false)),
            untracked: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Starts the check that keeps this store's local tier (if it has one) honest: every
    /// [`HEARTBEAT`], a `PING` to each master, within `timeout` (see [`heartbeat`]).
    pub(super) fn checking_liveness(self, timeout: Duration) -> Self {
        if let Some(tier) = &self.tier {
            let (conn, tier) = (Arc::downgrade(&self.conn), Arc::downgrade(tier));
            let moves = self.moves.clone();
            background().spawn(heartbeat(conn, tier, moves, timeout));
        }
        self
    }

    /// This store serves relaxed reads from `replica` when it can.
    pub(super) fn reading_from(mut self, replica: Arc<Replica>) -> Self {
        self.replica = Some(replica);
        self
    }

    /// Whether relaxed reads may be answered by a replica.
    pub(crate) fn reads_replicas(&self) -> bool {
        self.replica.is_some()
    }

    /// `command` of `keys` on the replica, if there is one and it answers (see
    /// [`Backend::replica_read`](crate::store::Backend::replica_read)).
    pub(crate) async fn replica_read<K: AsRef<str>, T: redis::FromRedisValue>(
        &self,
        command: &str,
        keys: &[K],
    ) -> Option<T> {
        match (&self.replica, keys.is_empty()) {
            (Some(replica), false) => replica.query(&read_cmd(command, keys)).await,
            _ => None,
        }
    }

    /// This store reopens its connection when the server answers `READONLY`, and when
    /// `moves` (the master's moves, counted from 0 by a watcher) changes: its reopen finds
    /// the current master.
    pub(super) fn following_master(mut self, moves: Arc<AtomicU64>) -> Self {
        self.follows_master = true;
        self.moves = Some(moves);
        self
    }

    /// The master's moves so far (0 for a store that does not follow one).
    fn moves(&self) -> u64 {
        self.moves.as_ref().map_or(0, |m| m.load(Ordering::Acquire))
    }

    /// The connection to use and its generation, unless there is none yet or it is not
    /// usable (see [`Bound::usable`]): then the generation to replace.
    fn conn(&self) -> Result<(C, u64), u64> {
        let moves = self.moves();
        let bound = self.conn.load();
        match bound.usable(moves) {
            Some(conn) => Ok((conn.clone(), bound.generation)),
            None => Err(bound.generation),
        }
    }

    /// Runs `op` on the connection. A connection that drops (Redis restarted, a network
    /// fault) is replaced: `op` runs again on a new one if `resend` allows (else the next
    /// operation takes the new one). If the runtime whose tasks drive the connection has
    /// shut down (as each `#[tokio::test]`'s does, or a `block_on`'s), or shuts down under
    /// it, it is replaced too. A `READONLY` answer also gets a new connection: behind
    /// Sentinel, to the master the Sentinels name now; on one server, to wherever its
    /// address leads now (see [`must_replace`](Self::must_replace)). A few tries at most,
    /// all within the operation's timeout; while Redis is down, one connection attempt at a
    /// time (the breaker paces the operations that start them). A cluster's connection
    /// reconnects to its nodes by itself.
    async fn with_conn<T, Fut>(&self, resend: Resend, op: impl Fn(C) -> Fut) -> Result<T>
    where
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let (mut conn, mut generation) = match self.conn() {
            Ok(current) => current,
            Err(gone) => Box::pin(self.reopen_after(gone)).await?,
        };
        for attempt in 0..3 {
            match op(conn).await {
                Err(err)
                    if self.must_replace(&err)
                        || Box::pin(self.runtime_went_away(generation, &err)).await =>
                {
                    let bound = self.conn.load();
                    if bound.generation == generation {
                        bound.failed.store(true, Ordering::Release);
                    }
                    if resend == Resend::Never && !is_read_only(&err) {
                        // It may have run before the connection failed: the new
                        // connection is for the next operation.
                        drop(self.reopening_after(generation));
                        return Err(Error::redis(err));
                    }
                    (conn, generation) = Box::pin(self.reopen_after(generation)).await?;
                }
                // A cluster's connection replaces a node's dropped connection by itself:
                // what may run twice is sent again on it, once that had a moment.
                Err(err)
                    if C::RECONNECTS
                        && resend == Resend::Safe
                        && (err.is_connection_dropped() || err.is_io_error()) =>
                {
                    Box::pin(tokio::time::sleep(RECONNECT_PAUSE * 4u32.pow(attempt))).await;
                    (conn, generation) = match self.conn() {
                        Ok(current) => current,
                        Err(gone) => Box::pin(self.reopen_after(gone)).await?,
                    };
                }
                done => return done.map_err(Error::redis),
            }
        }
        op(conn).await.map_err(Error::redis)
    }

    /// Whether `err` means this store's connection must be replaced: it dropped (unless it
    /// reconnects by itself), or the server answered `READONLY`. Behind Sentinel, a new
    /// connection finds the master again. On one server, the address may lead elsewhere by
    /// now (a DNS name or a load balancer moved by a failover, which leaves the demoted
    /// server's connections open): it reopens at most once every
    /// [`READ_ONLY_REOPEN_EVERY`], as the address may name a replica for good. (A
    /// cluster's connection follows its slots by itself.)
    fn must_replace(&self, err: &redis::RedisError) -> bool {
        if C::RECONNECTS && !self.follows_master {
            return false;
        }
        needs_reopen(err, || self.follows_master || self.read_only_may_reopen())
    }

    /// Whether a `READONLY` reply may reopen this store's connection now (see
    /// [`must_replace`](Self::must_replace)); if so, it is the last to.
    #[cold]
    fn read_only_may_reopen(&self) -> bool {
        let mut last = self
            .read_only_reopened
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if last.is_some_and(|at| now.saturating_duration_since(at) < READ_ONLY_REOPEN_EVERY) {
            return false;
        }
        *last = Some(now);
        true
    }

    /// Whether connection `generation` failed with `err` because the runtime that runs it
    /// is gone (or the connection was replaced meanwhile). A runtime shutting down drops
    /// the connection's tasks before or after the one that marks it gone, so a dropped
    /// connection asks the runtime itself: a task spawned on a runtime that has shut down
    /// is cancelled at once.
    #[cold]
    async fn runtime_went_away(&self, generation: u64, err: &redis::RedisError) -> bool {
        let (runtime, gone) = {
            let bound = self.conn.load();
            if bound.generation != generation || bound.usable(self.moves()).is_none() {
                return true;
            }
            if !(err.is_connection_dropped() || err.is_io_error()) {
                return false;
            }
            match &bound.runtime {
                Some(runtime) => (runtime.clone(), bound.runtime_gone.clone()),
                None => return false,
            }
        };
        // (Bounded: a current-thread runtime outside `block_on` runs no task until it is
        // entered again or dropped.)
        let probe = tokio::time::timeout(Duration::from_millis(100), runtime.spawn(async {}));
        if matches!(probe.await, Ok(Ok(()))) {
            return false;
        }
        gone.store(true, Ordering::Release);
        true
    }

    /// A new connection, unless connection `failed` was already replaced (then the one that
    /// replaced it). Fails when no connection can be made.
    #[cold]
    async fn reopen_after(&self, failed: u64) -> Result<(C, u64)> {
        let mut attempt = match self.reopening_after(failed) {
            Ok(replaced) => return Ok(replaced),
            Err(attempt) => attempt,
        };
        // A failure is the operation's fault, logged (rate-limited) by the caller.
        let outcome = attempt
            .wait_for(Option::is_some)
            .await
            .map(|outcome| outcome.clone());
        let interrupted = |why| {
            Error::redis(redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::Interrupted,
                why,
            )))
        };
        match outcome {
            // The connection in place, if still usable: behind Sentinel, the master may
            // have moved while it was made (to the one the Sentinels named before).
            Ok(Some(Ok(_))) => self
                .replaced(failed)
                .ok_or_else(|| interrupted("the master moved while a connection to it was made")),
            Ok(Some(Err(err))) => Err(Error::redis(err)),
            Ok(None) | Err(_) => Err(interrupted(
                "the runtime making a new connection to Redis shut down",
            )),
        }
    }

    /// The connection that replaced connection `failed`, or the attempt to make one: the
    /// attempt under way, else a new one. The attempt runs as a task of the runtime the
    /// replaced connection ran on while that is a live multi-thread one, else of the
    /// caller's, where the connection then runs (no thread hop per command); on redcache's
    /// connection thread instead if that runtime is a current-thread one (which runs tasks
    /// only inside its `block_on`) or the runtime of the connection it replaces has shut
    /// down (the callers run on several runtimes, one after another).
    fn reopening_after(&self, failed: u64) -> std::result::Result<(C, u64), Attempt<C>> {
        let mut slot = self
            .reopening
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(replaced) = self.replaced(failed) {
            return Ok(replaced);
        }
        // Under way: not done, and its task not dropped.
        let running =
            |attempt: &&Attempt<C>| attempt.borrow().is_none() && attempt.has_changed().is_ok();
        if let Some(running) = slot.as_ref().filter(running) {
            return Err(running.clone());
        }
        // Counted before asking: a move during the lookup retires what it finds.
        let moves = self.moves();
        let current = self.conn.load();
        // The runtime the connection ran on, while it runs and is a multi-thread one (a
        // reconnection asked for by redcache's own tasks, such as an eviction's retry,
        // must not move a service's connection onto redcache's one thread); else the
        // caller's if it can (see `lasting_runtime`).
        let runtime = match (
            &current.runtime,
            current.runtime_gone.load(Ordering::Acquire),
        ) {
            (Some(runtime), false) if runtime.runtime_flavor() == RuntimeFlavor::MultiThread => {
                runtime.clone()
            }
            (_, true) => background().clone(),
            _ => lasting_runtime(),
        };
        // One attempt at a time (`reopening`), so the generation counts up.
        let generation = current.generation + 1;
        if let Some(tier) = &self.tier {
            // What the old connection tracked, the new one does not.
            tier.clear();
        }
        let (done, attempt) = watch::channel(None);
        let (connecting, conn, tier) = ((self.reopen)(), self.conn.clone(), self.tier.clone());
        let untracked = self.untracked.clone();
        runtime.spawn(async move {
            let made = connecting.await.map(|made| {
                // Made on this task's runtime, which its `Bound` watches.
                let runtime = Handle::try_current().ok();
                let bound = Bound::new(Some(made.clone()), runtime, generation, moves);
                conn.store(Arc::new(bound));
                // The new connection asks Redis to track again.
                untracked.store(false, Ordering::Relaxed);
                if let Some(tier) = &tier {
                    // And again once it is in place: reads on the old connection (behind
                    // Sentinel, a demoted master still answers them) may have kept
                    // copies meanwhile that no connection tracks now.
                    tier.clear();
                }
                tracing::debug!(generation, "redcache: connected to Redis again");
                (made, generation)
            });
            done.send_replace(Some(made));
        });
        *slot = Some(attempt.clone());
        Err(attempt)
    }

    /// Operations keep timing out on the connection in use. Redis may only be slow (a
    /// long script, a fork, a paused process), or the connection dead without a reset (its
    /// peer gone: nothing fails on it, and the kernel gives it up a quarter of an hour
    /// later). So it is asked for a `PING`, in the background, one check at a time: no
    /// answer within `check_for` (or the connection found dropped) marks it failed, and the
    /// next operation makes a new one (as for a dropped connection). A connection that
    /// answers, even with an error (`BUSY` behind a long script), is kept.
    pub(crate) fn stalled(&self, check_for: Duration) {
        /// Lets the next check start when this one ends, however it ends.
        struct Checked(Arc<AtomicBool>);
        impl Drop for Checked {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        let bound = self.conn.load_full();
        let Some(mut conn) = bound.usable(self.moves()).cloned() else {
            return;
        };
        if self.checking.swap(true, Ordering::AcqRel) {
            return;
        }
        let checked = Checked(self.checking.clone());
        background().spawn(async move {
            let _checked = checked;
            let ping = redis::cmd("PING");
            let answer = tokio::time::timeout(check_for, ping.query_async::<()>(&mut conn));
            let silent = match answer.await {
                Ok(Ok(())) => false,
                Ok(Err(err)) => err.is_io_error() || err.is_connection_dropped(),
                Err(_) => true,
            };
            if silent {
                bound.failed.store(true, Ordering::Release);
                tracing::warn!(
                    generation = bound.generation,
                    "redcache: operations time out on the connection to Redis and it answers \
                     no PING; the next operation makes a new one"
                );
            }
        });
    }

    /// The connection that replaced connection `failed`, if it was replaced by one that
    /// is usable.
    fn replaced(&self, failed: u64) -> Option<(C, u64)> {
        let moves = self.moves();
        let bound = self.conn.load();
        match bound.usable(moves) {
            Some(conn) if bound.generation != failed => Some((conn.clone(), bound.generation)),
            _ => None,
        }
    }

    /// The local tier, if there is one.
    pub(crate) fn local_tier(&self) -> Option<&Arc<LocalTier>> {
        self.tier.as_ref()
    }

    /// Whether this store holds a working connection, as far as its operations tell (see
    /// [`Health::connected`](crate::Health::connected)).
    pub(crate) fn link(&self) -> Link {
        let bound = self.conn.load();
        if bound.usable(self.moves()).is_some() {
            return Link::Up;
        }
        let attempt_failed = self
            .reopening
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_some_and(|attempt| matches!(&*attempt.borrow(), Some(Err(_))));
        // A connection retired without a fault (its runtime gone, the master moved) is
        // made again by the next operation, as a lazy store's first one.
        match bound.failed.load(Ordering::Acquire) || attempt_failed {
            true => Link::Down,
            false => Link::NotYet,
        }
    }

    /// A read whose keys Redis then tracks for this connection (an invalidation push when
    /// they change), for the local tier: the entry, its group's generation, and how long
    /// the entry has left (`PTTL`), in one round trip.
    pub(crate) async fn get_tracked(
        &self,
        key: &str,
        gen_key: Option<&str>,
    ) -> Result<(EntryAndGen, Option<Duration>)> {
        if self.untracked.load(Ordering::Relaxed) {
            return self.untracked_read(key, gen_key).await;
        }
        match self.tracked_read(key, gen_key).await {
            // While a cluster slot migrates, the key's new master answers a read of it
            // only right after `ASKING`, and `CLIENT CACHING YES` would take that turn.
            // Read it untracked then (the cluster connection follows the `ASK`), and keep
            // no copy (no `PTTL`).
            //
            // Likewise when Redis refuses `CLIENT CACHING YES` (an ACL user without
            // `+client|caching`): it tracks none of this connection's reads, and no push
            // would ever retire a copy of one. (A pipeline on one server fails whole; a
            // cluster's hands back each reply, see `tracked_read`.) Not asked again until
            // a new connection: each read would cost two round trips.
            Err(err) if err.is_cluster_redirect() || err.is_no_permission_at(0) => {
                if !err.is_cluster_redirect() {
                    self.untracked.store(true, Ordering::Relaxed);
                    warn_untracked(&err);
                }
                self.untracked_read(key, gen_key).await
            }
            read => read,
        }
    }

    /// [`get_tracked`](Self::get_tracked)'s read when Redis will not track it: no copy may
    /// be kept (no `PTTL`).
    async fn untracked_read(
        &self,
        key: &str,
        gen_key: Option<&str>,
    ) -> Result<(EntryAndGen, Option<Duration>)> {
        let found = match gen_key {
            Some(gen_key) => self.get_with_gen(key, gen_key).await?,
            None => (self.get(key).await?, None),
        };
        Ok((found, None))
    }

    /// [`get_tracked`](Self::get_tracked)'s one round trip.
    async fn tracked_read(
        &self,
        key: &str,
        gen_key: Option<&str>,
    ) -> Result<(EntryAndGen, Option<Duration>)> {
        let mut pipe = redis::pipe();
        pipe.cmd("CLIENT").arg("CACHING").arg("YES");
        match gen_key {
            Some(gen_key) => pipe.cmd("MGET").arg(key).arg(gen_key),
            None => pipe.cmd("GET").arg(key),
        };
        pipe.cmd("PTTL").arg(key);
        let replies = self
            .with_conn(Resend::Safe, |conn| {
                let pipe = &pipe;
                async move { conn.pipe_at(key, pipe).await }
            })
            .await?;
        let [caching, found, left] = <[redis::Value; 3]>::try_from(replies).map_err(|replies| {
            Error::redis(redis::RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "a tracked read's replies",
                format!("{replies:?}"),
            )))
        })?;
        // A reply that is an error (a key of another type) is that error, as for a plain read.
        let parse = |reply: redis::Value| match reply {
            redis::Value::ServerError(err) => Err(Error::redis(err.into())),
            reply => Ok(reply),
        };
        let (found, left) = (parse(found)?, parse(left)?);
        let found = match gen_key {
            Some(_) => redis::from_redis_value(found),
            None => redis::from_redis_value(found).map(|entry| (entry, None)),
        };
        let found = found.map_err(|e| Error::redis(e.into()))?;
        let left: i64 = redis::from_redis_value(left).map_err(|e| Error::redis(e.into()))?;
        // Tracked only if Redis took `CLIENT CACHING YES`. A cluster's pipeline hands back
        // its refusal as a reply (on one server the pipeline fails, see `get_tracked`): the
        // read stands, and nothing is kept of it.
        if caching != redis::Value::Okay {
            warn_untracked(&caching);
            return Ok((found, None));
        }
        // -1 (no expiry) and -2 (no key): nothing to keep.
        let left = u64::try_from(left).ok().map(Duration::from_millis);
        Ok((found, left))
    }

    /// Sends one command on the shared connection.
    async fn query<T: redis::FromRedisValue>(&self, resend: Resend, cmd: &redis::Cmd) -> Result<T> {
        self.with_conn(resend, |mut conn| async move {
            cmd.query_async(&mut conn).await
        })
        .await
    }

    /// An invalidation's write: `SET key <made()> [PX ttl] GET`. Sent again on a new
    /// connection, with another `made()` (a new tombstone or generation): writing one again
    /// only invalidates once more, where the same one could bring back what a reader saw
    /// before another client's invalidation. What it replaced, unknown when that is one of
    /// its own earlier writes (the connection dropped after Redis ran it).
    async fn invalidating(
        &self,
        key: &str,
        ttl: Option<Duration>,
        made: impl Fn() -> Vec<u8>,
    ) -> Result<Replaced> {
        let written = Mutex::new(Vec::new());
        let old: Option<Vec<u8>> = match self
            .with_conn(Resend::Safe, |mut conn| {
                let value = made();
                let cmd = set_cmd(key, &value, ttl, &["GET"]);
                written
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(value);
                async move { cmd.query_async(&mut conn).await }
            })
            .await
        {
            // `SET .. GET` refuses a key of another type, which holds no entry; a plain
            // `SET` writes over it, so that a fill begun before cannot land there after.
            Err(err) if err.reply_code() == Some("WRONGTYPE") => {
                // Made anew for each send, as above.
                self.with_conn(Resend::Safe, |mut conn| {
                    let cmd = set_cmd(key, &made(), ttl, &[]);
                    async move { cmd.query_async::<()>(&mut conn).await }
                })
                .await?;
                return Ok(Replaced::Was(None));
            }
            old => old?,
        };
        let written = written.into_inner().unwrap_or_else(PoisonError::into_inner);
        // Sent more than once, a tombstone in the reply may be another client's written
        // over our first one (which then retired the entry): not known either.
        let unknown = |old: &[u8]| {
            written.iter().any(|w| w == old)
                || (written.len() > 1 && crate::codec::is_tombstone(old))
        };
        Ok(match old {
            Some(old) if unknown(&old) => Replaced::Unknown,
            old => Replaced::Was(old),
        })
    }

    /// `key`'s value, as a read of several keys finds it: `MGET` of the one key, to which
    /// a key of another type is nothing (`GET` fails with `WRONGTYPE`).
    async fn get_lenient(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let found: Vec<Option<Vec<u8>>> =
            self.query(Resend::Safe, &read_cmd("MGET", &[key])).await?;
        Ok(found.into_iter().next().flatten())
    }
}

impl<C: Conn> Store for RedisStore<C> {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.query(Resend::Safe, &read_cmd("GET", &[key])).await
    }

    async fn get_with_gen(&self, key: &str, gen_key: &str) -> Result<EntryAndGen> {
        match self
            .query(Resend::Safe, &read_cmd("MGET", &[key, gen_key]))
            .await
        {
            // A cluster slot moving with one of the two moved and not the other: `MGET` of
            // both is refused until the move ends. Each read alone follows its key's `ASK`.
            // Together they find what one read would have at some moment between them (a
            // generation never comes back, and a fill checks it again).
            // (Boxed: this rare path's two reads would otherwise size every read's future,
            // which each hit moves, to twice a plain read's.)
            Err(err) if err.is_split_by_migration() => {
                let split = futures_util::future::try_join(
                    self.get_lenient(key),
                    self.get_lenient(gen_key),
                );
                Box::pin(split).await
            }
            read => read,
        }
    }

    async fn fill(&self, fill: &Fill<'_>) -> Result<bool> {
        if let (Seen::Nothing, None) = (fill.seen, fill.group) {
            // The common miss: "only if there is still nothing" is SET NX, no script.
            return self.set_nx(fill.key, fill.value, Some(fill.ttl)).await;
        }
        let stored: Result<i64> = self
            .with_conn(Resend::Never, |mut conn| {
                let invocation = fill_invocation(fill, self.fence_for);
                async move { invocation.invoke_async(&mut conn).await }
            })
            .await;
        match stored {
            // A miss's grouped fill while its cluster slot moves, the entry and the
            // generation on either side: it cannot check the one where it writes the
            // other, so it does not store (the next miss after the move does). A writer's
            // (`put!`) fails, and retires the entry instead.
            Err(err) if err.is_split_by_migration() && !matches!(fill.seen, Seen::Any) => Ok(false),
            stored => Ok(stored? == 1),
        }
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        if !C::PIPELINES_SPAN_SLOTS {
            // On a cluster, each key on its own, all sent at once: a redirect is for one
            // key's slot, and is followed for that key (`cluster::ClusterConn`). (A key
            // of another type is nothing, as to a multi-key `MGET`: `GET` would fail the
            // whole batch.)
            let found = keys.iter().map(|key| self.get_lenient(key));
            return futures_util::future::join_all(found)
                .await
                .into_iter()
                .collect();
        }
        self.query(Resend::Safe, &read_cmd("MGET", keys)).await
    }

    async fn fill_many(&self, fills: &[Fill<'_>]) -> Result<Vec<bool>> {
        if fills.is_empty() {
            return Ok(Vec::new());
        }
        if !C::PIPELINES_SPAN_SLOTS {
            // Each fill on its own, all sent at once: each goes to its key's node.
            let stored = futures_util::future::join_all(fills.iter().map(|f| self.fill(f))).await;
            return stored.into_iter().collect();
        }
        let invocations: Vec<_> = fills
            .iter()
            .map(|fill| fill_invocation(fill, self.fence_for))
            .collect();
        // Each reply on its own (an error one among them does not fail the others'), so
        // that only the script fills a server without the script refused are sent again.
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for (fill, invocation) in fills.iter().zip(&invocations) {
            if let (Seen::Nothing, None) = (fill.seen, fill.group) {
                pipe.add_command(set_cmd(fill.key, fill.value, Some(fill.ttl), &["NX"]));
            } else {
                pipe.invoke_script(invocation);
            }
        }
        let (pipe, invocations) = (&pipe, &invocations);
        let stored: Vec<redis::Value> = self
            .with_conn(Resend::Never, |mut conn| async move {
                let mut replies: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
                let unknown: Vec<usize> = (0..replies.len())
                    .filter(|&i| matches!(&replies[i], redis::Value::ServerError(e) if e.kind() == Some(redis::ServerErrorKind::NoScript)))
                    .collect();
                if !unknown.is_empty() {
                    // A pipeline does not load scripts itself: load it once and send again
                    // what it refused. The rest ran: a `SET NX` sent again would find its
                    // own value and answer nil, as if another writer had been first.
                    fill_script().prepare_invoke().load_async(&mut conn).await?;
                    let mut again = redis::pipe();
                    for &i in &unknown {
                        again.invoke_script(&invocations[i]);
                    }
                    let answers: Vec<redis::Value> = again.query_async(&mut conn).await?;
                    for (i, answer) in unknown.into_iter().zip(answers) {
                        replies[i] = answer;
                    }
                }
                match replies.iter().find_map(|r| match r {
                    redis::Value::ServerError(err) => Some(err.clone()),
                    _ => None,
                }) {
                    Some(err) => Err(err.into()),
                    None => Ok(replies),
                }
            })
            .await?;
        // SET NX answers OK or nil; the script 1 or 0.
        Ok(stored
            .into_iter()
            .map(|reply| matches!(reply, redis::Value::Okay | redis::Value::Int(1)))
            .collect())
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<()> {
        // A writer's write: kept as long as it fences (see `FILL_LUA`).
        let kept = ttl.max(self.fence_for);
        self.query(Resend::Never, &set_cmd(key, value, Some(kept), &[]))
            .await
    }

    async fn retire(&self, key: &str, ttl: Duration) -> Result<Replaced> {
        self.invalidating(key, Some(ttl), crate::codec::encode_tombstone)
            .await
    }

    async fn regenerate(&self, key: &str, ttl: Option<Duration>) -> Result<Replaced> {
        self.invalidating(key, ttl, || {
            crate::key::new_generation().to_string().into_bytes()
        })
        .await
    }

    async fn set_nx(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        // OK when it stored, nil when the key was there (read as a `Value`: no string made).
        let reply: redis::Value = self
            .query(Resend::Never, &set_cmd(key, value, ttl, &["NX"]))
            .await?;
        Ok(matches!(
            reply,
            redis::Value::Okay | redis::Value::SimpleString(_)
        ))
    }

    async fn delete_if(&self, key: &str, value: &[u8]) -> Result<bool> {
        // `EVAL`, not the script's `EVALSHA`: on a server that does not know the script
        // yet, redis-rs loads it and sends it again, and a release given up by its caller
        // (the operation timed out, the call was cancelled) would lose that second send,
        // leaving the lease to fence every process for its whole length. Sent once, it runs
        // after what this connection sent before it (the lease's `SET NX`). It deletes only
        // what still holds this caller's token, so it is sent again on a new connection if
        // the first one failed under it (a caller's runtime shutting down): run twice, the
        // second finds nothing to delete.
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(RELEASE_LUA).arg(1).arg(key).arg(value);
        let removed: i64 = self.query(Resend::Safe, &cmd).await?;
        Ok(removed == 1)
    }

    async fn ttl(&self, key: &str) -> Result<Option<Duration>> {
        let ms: i64 = self
            .query(Resend::Safe, redis::cmd("PTTL").arg(key))
            .await?;
        // -2: no such key; -1: no expiry (a group generation, or not written by redcache).
        Ok(match ms {
            -2 => None,
            -1 => Some(Duration::MAX),
            ms => Some(Duration::from_millis(ms.max(0) as u64)),
        })
    }

    async fn invalidate_prefix(
        &self,
        prefix: &str,
        batch: usize,
        ttl: Duration,
        step: Duration,
    ) -> Result<u64> {
        let pattern = prefix_pattern(prefix);
        let mut replaced = 0;
        // SCAN walks each master's keyspace a bounded step at a time, and each step's keys
        // are handled by one short script (one per key on a cluster, whose scripts cannot
        // span slots), so no single command holds Redis for long (never KEYS). Keys are
        // bytes: one that is not UTF-8 is handled like any other.
        let (mut conn, mut generation) = match self.conn() {
            Ok(current) => current,
            Err(gone) => within(step, self.reopen_after(gone)).await?,
        };
        let mut drops = 0;
        // The connection times no command out (each single operation runs under the
        // operation timeout, `Core::op`), so each step of the walk has its own.
        let (masters, layout) = self
            .walk_masters(&mut conn, &mut generation, &mut drops, step)
            .await?;
        for node in masters {
            let mut cursor: u64 = 0;
            loop {
                let mut scan = redis::cmd("SCAN");
                scan.arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(batch);
                let reply = match within(step, conn.send_to(&node, scan)).await {
                    Ok(reply) => reply,
                    Err(err) => {
                        (conn, generation) =
                            self.walk_again(err, &mut drops, generation, step).await?;
                        // The new connection may reach another server (a restart, a new
                        // master), whose cursors mean other places: the walk of this node
                        // starts over (what it retired is not counted again).
                        cursor = 0;
                        continue;
                    }
                };
                let (next, keys): (u64, Vec<Vec<u8>>) =
                    redis::from_redis_value(reply).map_err(|e| Error::redis(e.into()))?;
                // At most SCRIPT_KEYS keys per script, so that none holds Redis for long.
                for keys in keys.chunks(SCRIPT_KEYS) {
                    replaced += within(step, self.tombstone_keys(keys, ttl)).await?;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        // Keys that moved to a master already walked, from one not walked yet, were
        // missed: a slot's whole migration can fall between the two looks.
        let (_, after) = self
            .walk_masters(&mut conn, &mut generation, &mut drops, step)
            .await?;
        if after != layout {
            return Err(Error::resharding(
                "slots moved between the cluster's masters during the walk (a resharding): \
                 keys that moved may have been missed; try again",
            ));
        }
        Ok(replaced)
    }
}

/// `op`, or `Error::Timeout` once `after` has passed.
async fn within<T>(after: Duration, op: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(after, op)
        .await
        .unwrap_or(Err(Error::Timeout { after }))
}

impl<C: Conn> RedisStore<C> {
    /// What the prefix walk does after a step of it failed with `err`: if the connection
    /// dropped under it, the step runs again on a new one (a few times at most, counted in
    /// `drops`); any other error ends the walk.
    async fn walk_again(
        &self,
        err: Error,
        drops: &mut u32,
        generation: u64,
        step: Duration,
    ) -> Result<(C, u64)> {
        let (dropped, node_dropped) = match &err {
            Error::Redis { source } => match source.downcast_ref::<redis::RedisError>() {
                Some(err) => (
                    self.must_replace(err),
                    C::RECONNECTS && (err.is_connection_dropped() || err.is_io_error()),
                ),
                None => (false, false),
            },
            _ => (false, false),
        };
        if !(dropped || node_dropped) || *drops >= 3 {
            return Err(err);
        }
        *drops += 1;
        if !dropped {
            // A cluster's connection replaces a node's by itself: the step runs again on it.
            tokio::time::sleep(RECONNECT_PAUSE * 4u32.pow(*drops - 1)).await;
            if let Ok(current) = self.conn() {
                return Ok(current);
            }
        }
        within(step, self.reopen_after(generation)).await
    }

    /// The masters the prefix walk visits and who serves which slots (`Conn::masters`), as
    /// one step of the walk: on a new connection if the current one dropped under it.
    async fn walk_masters(
        &self,
        conn: &mut C,
        generation: &mut u64,
        drops: &mut u32,
        step: Duration,
    ) -> Result<(Vec<Node>, String)> {
        loop {
            match within(step, conn.masters()).await {
                Ok(masters) => return Ok(masters),
                Err(err) => {
                    (*conn, *generation) = self.walk_again(err, drops, *generation, step).await?
                }
            }
        }
    }

    /// Runs the prefix invalidation script over `keys`: once for all of them, or once per
    /// key (sent together) where a script may not span slots.
    async fn tombstone_keys(&self, keys: &[Vec<u8>], ttl: Duration) -> Result<u64> {
        if C::PIPELINES_SPAN_SLOTS {
            return self.tombstone_script(keys, ttl).await;
        }
        let replies = keys.chunks(1).map(|key| self.tombstone_script(key, ttl));
        futures_util::future::join_all(replies)
            .await
            .into_iter()
            .sum()
    }

    /// The prefix invalidation script over `keys`, which one script may hold. Sent again on
    /// a new connection, with new tombstones (a new random base for their ids): the same
    /// ones could bring back what a reader saw before another client's invalidation. A key
    /// the first run retired is not counted again.
    async fn tombstone_script(&self, keys: &[Vec<u8>], ttl: Duration) -> Result<u64> {
        self.with_conn(Resend::Safe, |mut conn| {
            let mut call = invalidate_script().prepare_invoke();
            for key in keys {
                call.key(key.as_slice());
            }
            call.arg(px(ttl)).arg(rand::random::<u32>().max(1));
            async move { call.invoke_async::<u64>(&mut conn).await }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply_error(reply: &[u8]) -> redis::RedisError {
        redis::parse_redis_value(reply)
            .unwrap()
            .extract_error()
            .unwrap_err()
    }

    #[test]
    fn a_readonly_reply_reopens_only_when_the_store_says_so() {
        for reply in [
            &b"-READONLY You can't write against a read only replica.\r\n"[..],
            // A script's write on a replica (Redis 7).
            b"-READONLY You can't write against a read only replica. script: 4f5a, on @user_script:12.\r\n",
            // The same on Redis 6.2.
            b"-ERR Error running script (call to f_67ed14c1cb086d8c2fcf91ebe13410ba087fd0f8): @user_script:1: @user_script: 1: -READONLY You can't write against a read only replica. \r\n",
        ] {
            let err = reply_error(reply);
            assert!(needs_reopen(&err, || true), "{err}");
            assert!(!needs_reopen(&err, || false), "{err}");
        }
        let err = reply_error(b"-WRONGTYPE Operation against a key holding the wrong kind\r\n");
        assert!(!needs_reopen(&err, || true), "{err}");
    }

    #[test]
    fn prefix_patterns_escape_glob_characters() {
        assert_eq!(prefix_pattern("user:profile:"), "user:profile:*");
        assert_eq!(prefix_pattern("user*:"), "user\\*:*");
        assert_eq!(prefix_pattern("a?[b]\\c:"), "a\\?\\[b\\]\\\\c:*");
    }
}
