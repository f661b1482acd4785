//! Fail-open: whatever Redis does, a `#[cached]` call returns its body's result, within the
//! operation timeout, and caching comes back by itself.

mod common;

use common::{expected_key, is_tombstone, test_config, RedisServer};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

const OP_TIMEOUT: Duration = Duration::from_millis(200);
/// Scheduling slack on a loaded 2-core machine, on top of the one timeout a call may spend.
const SLACK: Duration = Duration::from_millis(300);

#[redcache::cached(prefix = "f:item", ttl = 60, skip(calls))]
async fn item(id: u64, calls: &AtomicUsize) -> String {
    calls.fetch_add(1, SeqCst);
    format!("item {id}")
}

#[redcache::cached(prefix = "f:grouped", group = "f:catalog", ttl = 60, skip(calls))]
async fn grouped(id: u64, calls: &AtomicUsize) -> String {
    calls.fetch_add(1, SeqCst);
    format!("grouped {id}")
}

#[redcache::cached(prefix = "f:tagged", ttl = 60, tags("f:owner:{id}"), skip(calls))]
async fn tagged(id: u64, calls: &AtomicUsize) -> String {
    calls.fetch_add(1, SeqCst);
    format!("tagged {id}")
}

/// A write to `item(id)`'s source: its entry is evicted after it.
#[redcache::evicts(item(id, _))]
async fn rename_item(id: u64) {
    let _ = id;
}

/// A write to everything of `id`: its item, the catalogue group and its owner's tag.
#[redcache::evicts(item(id, _), group = "f:catalog", tag = "f:owner:{id}")]
async fn change_everything(id: u64) {
    let _ = id;
}

async fn stored(server: &RedisServer, key: &str) -> bool {
    let Ok(client) = redis::Client::open(server.url()) else {
        return false;
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return false;
    };
    redis::cmd("EXISTS")
        .arg(key)
        .query_async::<bool>(&mut conn)
        .await
        .unwrap_or(false)
}

/// The bytes at `key`, read over a connection of the test's own (`None` for no value, or
/// a server that does not answer).
async fn raw_value(server: &RedisServer, key: &str) -> Option<Vec<u8>> {
    let client = redis::Client::open(server.url()).ok()?;
    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
    redis::cmd("GET")
        .arg(key)
        .query_async::<Option<Vec<u8>>>(&mut conn)
        .await
        .ok()?
}

/// A server of its own, and a cache on it with the operation timeout these tests bound
/// calls by.
async fn server_and_cache() -> (RedisServer, redcache::Cache) {
    let server = RedisServer::start();
    let cache = server
        .cache_with(test_config().url(server.url()).op_timeout(OP_TIMEOUT))
        .await;
    (server, cache)
}

/// Calls `item(id)` until its entry shows up in Redis, for at most `within`.
async fn caching_resumes(
    cache: &redcache::Cache,
    server: &RedisServer,
    id: u64,
    within: Duration,
) -> Duration {
    let calls = AtomicUsize::new(0);
    let start = Instant::now();
    loop {
        assert_eq!(cache.scope(item(id, &calls)).await, format!("item {id}"));
        if stored(server, &expected_key("f:item", &format!("[{id}]"))).await {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "caching did not resume within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn unreachable_redis_at_startup_is_a_clear_error() {
    let mut server = RedisServer::start();
    let url = server.url();
    server.stop();
    let start = Instant::now();
    let err = redcache::Cache::connect(
        test_config()
            .url(url.clone())
            .connect_timeout(Duration::from_millis(500))
            .build(),
    )
    .await
    .unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert!(matches!(err, redcache::Error::Connect { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("could not connect to Redis at {url}")),
        "{message}"
    );
    assert!(message.contains("REDIS_URL"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lazy_cache_starts_without_redis_and_caches_once_it_appears() {
    let mut server = RedisServer::start();
    server.stop();
    let start = Instant::now();
    let cache = redcache::Cache::connect(
        test_config()
            .url(server.url())
            .op_timeout(OP_TIMEOUT)
            .lazy(true)
            .build(),
    )
    .await
    .expect("a lazy cache starts while Redis is down");
    assert!(start.elapsed() < OP_TIMEOUT, "{:?}", start.elapsed());
    let calls = AtomicUsize::new(0);
    for id in 1..=10 {
        let start = Instant::now();
        assert_eq!(cache.scope(item(id, &calls)).await, format!("item {id}"));
        let took = start.elapsed();
        assert!(took < OP_TIMEOUT + SLACK, "call {id} took {took:?}");
    }
    assert_eq!(calls.load(SeqCst), 10, "uncached while Redis is down");
    server.restart();
    let took = caching_resumes(&cache, &server, 4, Duration::from_secs(2)).await;
    eprintln!("caching began {took:?} after Redis appeared");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_test_calls_still_answer_and_caching_resumes() {
    let mut server = RedisServer::start();
    let cache = server
        .cache_with(
            test_config()
                .url(server.url())
                .op_timeout(OP_TIMEOUT)
                .breaker_threshold(0),
        )
        .await;
    let calls = AtomicUsize::new(0);
    assert_eq!(cache.scope(item(1, &calls)).await, "item 1");
    assert_eq!(cache.scope(item(1, &calls)).await, "item 1");
    assert_eq!(calls.load(SeqCst), 1);

    server.stop();
    for id in 1..=20 {
        let start = Instant::now();
        assert_eq!(cache.scope(item(id, &calls)).await, format!("item {id}"));
        let took = start.elapsed();
        assert!(took < OP_TIMEOUT + SLACK, "call {id} took {took:?}");
    }
    assert_eq!(
        calls.load(SeqCst),
        21,
        "with Redis down every call ran its body"
    );
    assert!(cache.stats().faults >= 20, "{:?}", cache.stats());

    server.restart();
    let took = caching_resumes(&cache, &server, 5, Duration::from_secs(2)).await;
    eprintln!("caching resumed {took:?} after the restart");
    let before = calls.load(SeqCst);
    assert_eq!(cache.scope(item(5, &calls)).await, "item 5");
    assert_eq!(calls.load(SeqCst), before, "a hit again");
}

/// A TCP proxy to a server. From when it is told, it waits before connecting each new
/// client through (a slow link or handshake: TLS across zones), or it loses the next
/// reply from the server with the connection (a reset after Redis ran the command), or it
/// goes silent: nothing more is passed either way, and no connection is closed (a network
/// partition without a reset), for every connection or for those made before
/// `dead_below` (numbered from 0 as they came: a peer gone without a reset, while new
/// connections reach the server). It counts the connections asked of it.
struct Proxy {
    port: u16,
    delay_ms: Arc<AtomicU64>,
    cut_next_reply: Arc<AtomicBool>,
    silent: Arc<AtomicBool>,
    dead_below: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
}

impl Proxy {
    async fn start(target_port: u16) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = Proxy {
            port: listener.local_addr().unwrap().port(),
            delay_ms: Arc::new(AtomicU64::new(0)),
            cut_next_reply: Arc::new(AtomicBool::new(false)),
            silent: Arc::new(AtomicBool::new(false)),
            dead_below: Arc::new(AtomicUsize::new(0)),
            accepted: Arc::new(AtomicUsize::new(0)),
        };
        let (delay, cut, silent, dead_below, count) = (
            proxy.delay_ms.clone(),
            proxy.cut_next_reply.clone(),
            proxy.silent.clone(),
            proxy.dead_below.clone(),
            proxy.accepted.clone(),
        );
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let number = count.fetch_add(1, SeqCst);
                let delay = Duration::from_millis(delay.load(SeqCst));
                let (cut, all_silent, dead_below) =
                    (cut.clone(), silent.clone(), dead_below.clone());
                let silent = move || all_silent.load(SeqCst) || number < dead_below.load(SeqCst);
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let target = ("127.0.0.1", target_port);
                    let Ok(server) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut from_client, mut to_client) = client.into_split();
                    let (mut from_server, mut to_server) = server.into_split();
                    let quiet = silent.clone();
                    let requests = tokio::spawn(async move {
                        let mut request = vec![0; 16 * 1024];
                        while let Ok(n @ 1..) = from_client.read(&mut request).await {
                            if !quiet() && to_server.write_all(&request[..n]).await.is_err() {
                                break;
                            }
                        }
                    });
                    let mut reply = vec![0; 16 * 1024];
                    while let Ok(n @ 1..) = from_server.read(&mut reply).await {
                        if silent() {
                            continue;
                        }
                        if cut.swap(false, SeqCst)
                            || to_client.write_all(&reply[..n]).await.is_err()
                        {
                            break;
                        }
                    }
                    // Both connections close with their halves.
                    requests.abort();
                });
            }
        });
        proxy
    }

    /// A cache that reaches the server through this proxy, with the operation timeout
    /// these tests bound calls by.
    async fn cache(&self, config: redcache::ConfigBuilder) -> redcache::Cache {
        let url = format!("redis://127.0.0.1:{}", self.port);
        let config = config.url(url).op_timeout(OP_TIMEOUT).build();
        redcache::Cache::connect(config).await.unwrap()
    }
}

/// Calls `item(1)` until one is a hit (its body did not run), for up to 30 s; each is
/// answered, by the body while Redis cannot be reached.
async fn until_a_hit(cache: &redcache::Cache, calls: &AtomicUsize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let before = calls.load(SeqCst);
        assert_eq!(cache.scope(item(1, calls)).await, "item 1");
        if calls.load(SeqCst) == before {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "Redis not reached again: {:?}",
            cache.stats()
        );
        tokio::task::yield_now().await;
    }
}

/// A connection whose peer went away without a reset (a host or a load balancer gone)
/// fails nothing: every operation on it times out, until the kernel gives it up a quarter
/// of an hour later. After a few timeouts in a row the store checks the connection, finds
/// it answers nothing, and makes a new one: calls are answered from Redis again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_gone_dead_without_a_reset_is_replaced() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    // The check of the connection (a `PING`) waits this long for an answer.
    let config = test_config()
        .connect_timeout(Duration::from_secs(1))
        .breaker_cooldown(Duration::from_millis(200));
    let cache = proxy.cache(config).await;
    let calls = AtomicUsize::new(0);
    until_a_hit(&cache, &calls).await;
    assert_eq!(calls.load(SeqCst), 1, "a miss, then a hit");
    assert_eq!(proxy.accepted.load(SeqCst), 1);

    // The connection goes dead; a new one would reach the server.
    proxy.dead_below.store(1, SeqCst);
    until_a_hit(&cache, &calls).await;
    assert!(cache.stats().faults >= 3, "{:?}", cache.stats());
    assert_eq!(proxy.accepted.load(SeqCst), 2, "one new connection");
}

/// Keeps `server` busy with [`BUSY`] for 1.5 s, on a connection of the test's own (which
/// waits as long); the script's task answers 1 when it ends.
async fn busy_for_a_while(
    server: &RedisServer,
) -> tokio::task::JoinHandle<redis::RedisResult<i64>> {
    let client = redis::Client::open(server.url()).unwrap();
    let patient = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    let mut busy = client
        .get_multiplexed_async_connection_with_config(&patient)
        .await
        .unwrap();
    tokio::spawn(async move {
        redis::Script::new(BUSY)
            .arg(1_500_000)
            .invoke_async::<i64>(&mut busy)
            .await
    })
}

/// [`busy_for_a_while`], once `server` refuses other commands with `BUSY` (50 ms into the
/// script, not 5 s: `lua-time-limit` is the name Redis 6.2 knows, and Redis 7 and Valkey
/// keep it for `busy-reply-threshold`).
async fn refusing_busy(server: &RedisServer) -> tokio::task::JoinHandle<redis::RedisResult<i64>> {
    let client = redis::Client::open(server.url()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("lua-time-limit")
        .arg(50)
        .query_async(&mut admin)
        .await
        .unwrap();
    let script = busy_for_a_while(server).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let answer: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut admin).await;
        match answer {
            Err(err) if err.code() == Some("BUSY") => return script,
            _ => {
                assert!(Instant::now() < deadline, "Redis never answered BUSY");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// A script that keeps the server busy for `ARGV[1]` microseconds.
const BUSY: &str = r"
local t = redis.call('TIME')
local start = tonumber(t[1]) * 1000000 + tonumber(t[2])
while true do
  t = redis.call('TIME')
  if tonumber(t[1]) * 1000000 + tonumber(t[2]) - start > tonumber(ARGV[1]) then
    return 1
  end
end
";

/// A Redis that is only slow (a long script, a fork) times operations out as a dead link
/// does, but it still answers: the check finds its connection alive, and it is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_redis_keeps_its_connection() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let config = test_config()
        .connect_timeout(Duration::from_secs(5))
        .breaker_cooldown(Duration::from_millis(200));
    let cache = proxy.cache(config).await;
    let calls = AtomicUsize::new(0);
    until_a_hit(&cache, &calls).await;
    assert_eq!(calls.load(SeqCst), 1, "a miss, then a hit");

    let script = busy_for_a_while(&server).await;
    let mut id = 100;
    while !script.is_finished() {
        id += 1;
        // Answered by the body while Redis is busy.
        assert_eq!(cache.scope(item(id, &calls)).await, format!("item {id}"));
        tokio::task::yield_now().await;
    }
    assert_eq!(script.await.unwrap().unwrap(), 1);
    assert!(cache.stats().faults >= 3, "{:?}", cache.stats());

    until_a_hit(&cache, &calls).await;
    assert_eq!(proxy.accepted.load(SeqCst), 1, "the connection was kept");
}

/// The local tier's copies stay good only while Redis's invalidation pushes arrive. A link
/// that goes silent (a partition without a reset) fails nothing by itself, and a process
/// answering from its tier asks Redis nothing; its heartbeat finds the silence and retires
/// every copy, so a write made elsewhere meanwhile is not hidden behind a stale copy for
/// longer than a heartbeat and an operation timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_link_retires_the_local_tier_within_a_heartbeat() {
    /// `HEARTBEAT` in the store.
    const HEARTBEAT: Duration = Duration::from_millis(500);
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let cache = proxy.cache(test_config().local_capacity(100)).await;
    let calls = AtomicUsize::new(0);
    // A miss, a hit from Redis, then hits from the tier (read again if a heartbeat slowed
    // by the machine retired the copy meanwhile).
    for _ in 0..50 {
        assert_eq!(cache.scope(item(1, &calls)).await, "item 1");
        if cache.stats().local_hits >= 1 {
            break;
        }
    }
    assert_eq!(calls.load(SeqCst), 1);
    assert!(cache.stats().local_hits >= 1, "{:?}", cache.stats());

    proxy.silent.store(true, SeqCst);
    // Another process changes the entry; its push cannot reach this one.
    let other = server.cache().await;
    assert!(other
        .scope(redcache::invalidate!(item(1, _)))
        .await
        .unwrap());
    let start = Instant::now();
    loop {
        let before = calls.load(SeqCst);
        assert_eq!(cache.scope(item(1, &calls)).await, "item 1");
        if calls.load(SeqCst) > before {
            // The tier no longer answered; Redis cannot: the body ran (fail-open).
            break;
        }
        // A heartbeat, its timeout and the call's own (about 0.9 s), with room for a
        // loaded machine; without the heartbeat the copy is served until TCP gives up.
        assert!(
            start.elapsed() < HEARTBEAT + 2 * OP_TIMEOUT + 4 * SLACK,
            "the stale copy was still served after {:?}",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!(
        "copies retired {:?} after the link went silent",
        start.elapsed()
    );
}

/// A connection the server drops while Redis stays up (`CLIENT KILL`, a proxy's or a load
/// balancer's idle timeout) costs no call anything: the next operation connects again and
/// runs there, so the call is still a hit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_server_drops_is_replaced_within_the_next_call() {
    let (server, cache) = server_and_cache().await;
    let calls = AtomicUsize::new(0);
    assert_eq!(cache.scope(item(1, &calls)).await, "item 1");
    assert_eq!(cache.scope(item(1, &calls)).await, "item 1");
    assert_eq!(calls.load(SeqCst), 1);

    for round in 1..=3 {
        // The cache's connection (and, at most, redis-cli's of the round before).
        assert!(server.kill_clients() >= 1, "round {round}");
        assert_eq!(cache.scope(item(1, &calls)).await, "item 1");
        assert_eq!(calls.load(SeqCst), 1, "round {round}: still a hit");
    }
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.faults), (4, 0), "{stats:?}");
}

/// `total_connections_received` of the server `conn` is connected to.
async fn connections_received(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|line| line.strip_prefix("total_connections_received:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no total_connections_received in {info}"))
}

/// Makes the server on `port` a replica of the one on `of`, and waits until it refuses a
/// write.
async fn demote(port: u16, of: u16) {
    assert_eq!(
        common::cli(port, &["REPLICAOF", "127.0.0.1", &of.to_string()]).trim(),
        "OK"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !common::cli(port, &["SET", "demoted?", "1"]).starts_with("READONLY") {
        assert!(
            Instant::now() < deadline,
            "the server on {port} still takes writes"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A failover behind a DNS name or a load balancer: new connections to the cache's address
/// reach the promoted server, while the demoted one keeps the connections already made open
/// (it serves reads) and answers their writes `READONLY`. Each cache reconnects at its first
/// one and writes again there: the miss is stored on the promoted server, the next call is a
/// hit, and nothing counts as a fault. Both writes a miss makes: `SET NX` over nothing, and
/// the fill script of a grouped function (whose refusal Redis 6.2 wraps in the script's
/// error).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_demoted_behind_a_moved_address_is_left_at_its_first_readonly() {
    let old = RedisServer::start();
    let new = RedisServer::start();
    let address = common::Forwarder::start(old.port()).await;
    let config = || test_config().url(address.url()).op_timeout(OP_TIMEOUT);
    let (set_nx, script) = (
        old.cache_with(config()).await,
        old.cache_with(config()).await,
    );
    let calls = AtomicUsize::new(0);
    assert_eq!(set_nx.scope(item(1, &calls)).await, "item 1");
    assert!(stored(&old, &expected_key("f:item", "[1]")).await);

    address.point_at(new.port());
    demote(old.port(), new.port()).await;
    assert_eq!(set_nx.scope(item(2, &calls)).await, "item 2");
    let key = expected_key("f:item", "[2]");
    assert!(
        stored(&new, &key).await,
        "the miss is stored on the promoted server"
    );
    assert_eq!(set_nx.scope(item(2, &calls)).await, "item 2");
    assert_eq!(script.scope(grouped(2, &calls)).await, "grouped 2");
    assert_eq!(script.scope(grouped(2, &calls)).await, "grouped 2");
    assert_eq!(calls.load(SeqCst), 3, "the second calls are hits");
    for cache in [&set_nx, &script] {
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.faults), (1, 0), "{stats:?}");
    }
}

/// An address that names a replica for good (a misconfiguration): each write refused with
/// `READONLY` is a fault, the call still answered by its body, and the cache reconnects
/// no more than once a second, not at every write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_named_for_good_is_not_reconnected_to_at_every_write() {
    let primary = RedisServer::start();
    let replica = RedisServer::start();
    demote(replica.port(), primary.port()).await;
    let cache = replica
        .cache_with(test_config().url(replica.url()).op_timeout(OP_TIMEOUT))
        .await;
    let mut conn = replica.conn().await;
    let before = connections_received(&mut conn).await;
    let started = Instant::now();
    let calls = AtomicUsize::new(0);
    for id in 0..50 {
        assert_eq!(cache.scope(item(id, &calls)).await, format!("item {id}"));
    }
    assert_eq!(calls.load(SeqCst), 50);
    let reconnects = connections_received(&mut conn).await - before;
    let allowed = 1 + started.elapsed().as_secs();
    assert!(
        reconnects <= allowed,
        "{reconnects} reconnections in {:?}",
        started.elapsed()
    );
    assert_eq!(cache.stats().faults, 50, "{:?}", cache.stats());
}

/// Connecting again may take longer than the operation timeout (a slow link): the calls
/// that wait for it fall back to their bodies within one timeout each, the one connection
/// attempt goes on without them, and caching resumes when it is made; no call starts an
/// attempt of its own meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnection_slower_than_the_operation_timeout_completes_once() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let cache = proxy.cache(test_config().breaker_threshold(0)).await;
    let calls = AtomicUsize::new(0);
    assert_eq!(cache.scope(item(1, &calls)).await, "item 1");
    assert_eq!(cache.scope(item(1, &calls)).await, "item 1");
    assert_eq!((calls.load(SeqCst), proxy.accepted.load(SeqCst)), (1, 1));

    proxy
        .delay_ms
        .store(3 * OP_TIMEOUT.as_millis() as u64, SeqCst);
    assert!(server.kill_clients() >= 1, "the proxy's connection");
    let start = Instant::now();
    let mut fell_back = 0;
    loop {
        let before = calls.load(SeqCst);
        let call = Instant::now();
        assert_eq!(cache.scope(item(1, &calls)).await, "item 1");
        let took = call.elapsed();
        assert!(took < OP_TIMEOUT + SLACK, "a call took {took:?}");
        if calls.load(SeqCst) == before {
            break;
        }
        fell_back += 1;
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "caching did not resume ({fell_back} calls ran their bodies)"
        );
    }
    assert!(fell_back >= 1, "the reconnection outlasted a call");
    assert_eq!(proxy.accepted.load(SeqCst), 2, "one connection attempt");
}

/// An invalidation whose connection drops after Redis ran it, before its reply arrived, is
/// sent again on the new connection, with a new tombstone or generation (writing one again
/// only invalidates once more). Its second reply then holds the first one's: a deletion
/// reports the outcome as unknown rather than "nothing was there", and the entry is gone; an
/// eviction (`#[evicts]`) and a group's invalidation are done, and say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_whose_reply_is_lost_is_done_and_its_answer_unknown() {
    let server = RedisServer::start();
    let proxy = Proxy::start(server.port()).await;
    let cache = proxy.cache(test_config()).await;
    cache
        .set("k", &7u32, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(cache.get::<u32>("k").await.unwrap(), Some(7));

    proxy.cut_next_reply.store(true, SeqCst);
    let deleted = cache.delete("k").await;
    assert!(
        matches!(deleted, Err(redcache::Error::Redis { .. })),
        "the outcome is unknown, not false: {deleted:?}"
    );
    assert_eq!(cache.get::<u32>("k").await.unwrap(), None, "deleted");
    assert_eq!(proxy.accepted.load(SeqCst), 2, "connected again");
    assert!(!cache.delete("k").await.unwrap(), "nothing left to delete");

    // An eviction needs no answer: it is done, not a fault.
    let items = AtomicUsize::new(0);
    assert_eq!(cache.scope(item(1, &items)).await, "item 1");
    proxy.cut_next_reply.store(true, SeqCst);
    cache.scope(rename_item(1)).await;
    assert_eq!(cache.stats().faults, 0, "{:?}", cache.stats());
    assert_eq!(cache.scope(item(1, &items)).await, "item 1");
    assert_eq!(items.load(SeqCst), 2, "the evicted entry is a miss");

    let calls = AtomicUsize::new(0);
    for _ in 0..2 {
        assert_eq!(cache.scope(grouped(1, &calls)).await, "grouped 1");
    }
    proxy.cut_next_reply.store(true, SeqCst);
    cache.invalidate_group("f:catalog").await.unwrap();
    assert_eq!(proxy.accepted.load(SeqCst), 4, "connected again");
    assert_eq!(cache.scope(grouped(1, &calls)).await, "grouped 1");
    assert_eq!(calls.load(SeqCst), 2, "the group's entry is a miss");
}

/// An invalidation whose connection the server had already dropped (`CLIENT KILL`, an idle
/// timeout of Redis or of a proxy, while the service had nothing to ask) runs on the new
/// connection: the entries are retired and the answer is Redis's, not a fault that leaves
/// stale entries behind. A prefix's walk takes the new connection where it stands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_on_a_dropped_connection_runs_on_the_new_one() {
    let (server, cache) = server_and_cache().await;
    let calls = AtomicUsize::new(0);
    assert_eq!(cache.scope(item(1, &calls)).await, "item 1");
    for key in ["k", "p:1", "p:2"] {
        cache
            .set(key, &7u32, Duration::from_secs(60))
            .await
            .unwrap();
    }

    assert!(server.kill_clients() >= 1, "the cache's connection");
    let invalidated = cache.scope(redcache::invalidate!(item(1, _))).await;
    assert!(invalidated.unwrap(), "the entry was there");
    assert!(server.kill_clients() >= 1, "the new connection");
    assert!(cache.delete("k").await.unwrap(), "the entry was there");
    assert!(server.kill_clients() >= 1, "the third connection");
    assert_eq!(cache.invalidate_prefix("p").await.unwrap(), 2);

    assert_eq!(cache.scope(item(1, &calls)).await, "item 1");
    assert_eq!(calls.load(SeqCst), 2, "the invalidated entry is a miss");
    for key in ["k", "p:1", "p:2"] {
        assert_eq!(cache.get::<u32>(key).await.unwrap(), None, "{key} is gone");
    }
    assert_eq!(cache.stats().faults, 0, "{:?}", cache.stats());
}

/// The same for the invalidations that move a generation (a group's, a tag's, a path's):
/// sent again on the new connection, with another new generation, so that they never
/// restore one that another client replaced in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generation_moved_on_a_dropped_connection_moves_on_the_new_one() {
    let (server, cache) = server_and_cache().await;
    let (in_group, with_tag) = (AtomicUsize::new(0), AtomicUsize::new(0));
    for _ in 0..2 {
        assert_eq!(cache.scope(grouped(1, &in_group)).await, "grouped 1");
        assert_eq!(cache.scope(tagged(1, &with_tag)).await, "tagged 1");
    }
    assert_eq!((in_group.load(SeqCst), with_tag.load(SeqCst)), (1, 1));

    assert!(server.kill_clients() >= 1, "the cache's connection");
    cache.invalidate_group("f:catalog").await.unwrap();
    assert!(server.kill_clients() >= 1, "the new connection");
    cache.invalidate_tag("f:owner:1").await.unwrap();
    #[cfg(feature = "http")]
    {
        assert!(server.kill_clients() >= 1, "the third connection");
        assert_eq!(
            cache.invalidate_path("/items/1").await.unwrap(),
            0,
            "never cached"
        );
    }

    assert_eq!(cache.scope(grouped(1, &in_group)).await, "grouped 1");
    assert_eq!(cache.scope(tagged(1, &with_tag)).await, "tagged 1");
    assert_eq!(
        (in_group.load(SeqCst), with_tag.load(SeqCst)),
        (2, 2),
        "both invalidated entries are misses"
    );
    assert_eq!(cache.stats().faults, 0, "{:?}", cache.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_redis_costs_one_timeout_then_the_breaker_skips_it() {
    let server = RedisServer::start();
    let cache = server
        .cache_with(
            test_config()
                .url(server.url())
                .op_timeout(OP_TIMEOUT)
                .breaker_threshold(3)
                .breaker_cooldown(Duration::from_millis(500)),
        )
        .await;
    let calls = AtomicUsize::new(0);
    assert_eq!(cache.scope(item(1, &calls)).await, "item 1");

    server.pause();
    for id in 10..13 {
        let start = Instant::now();
        assert_eq!(cache.scope(item(id, &calls)).await, format!("item {id}"));
        let took = start.elapsed();
        assert!(
            took >= OP_TIMEOUT,
            "a paused Redis should cost the timeout: {took:?}"
        );
        assert!(took < OP_TIMEOUT + SLACK, "call {id} took {took:?}");
    }
    let stats = cache.stats();
    assert!(
        stats.breaker_open,
        "3 consecutive timeouts open the breaker: {stats:?}"
    );
    assert_eq!(stats.faults, 3);
    let start = Instant::now();
    for id in 20..120 {
        assert_eq!(cache.scope(item(id, &calls)).await, format!("item {id}"));
    }
    let took = start.elapsed();
    assert!(
        took < OP_TIMEOUT,
        "100 calls with the breaker open added {took:?}, not a timeout each"
    );
    assert!(cache.stats().skipped >= 99, "{:?}", cache.stats());

    server.resume();
    caching_resumes(&cache, &server, 7, Duration::from_secs(2)).await;
    assert!(!cache.stats().breaker_open);
}

/// The connection times no command out by itself: every operation runs under the
/// operation timeout, and the prefix walk, many commands, gives each step its own. A frozen
/// Redis costs each invalidation one timeout, never a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_redis_costs_each_invalidation_one_timeout() {
    let (server, cache) = server_and_cache().await;
    let calls = AtomicUsize::new(0);
    assert_eq!(cache.scope(item(1, &calls)).await, "item 1");

    server.pause();
    let start = Instant::now();
    // Bounded here too, so that a regression fails rather than hangs.
    let walk = tokio::time::timeout(Duration::from_secs(10), cache.invalidate_prefix("f:item"));
    let err = walk.await.expect("the walk hung").unwrap_err();
    let took = start.elapsed();
    assert!(matches!(err, redcache::Error::Timeout { .. }), "{err}");
    assert!(took >= OP_TIMEOUT && took < OP_TIMEOUT + SLACK, "{took:?}");
    let start = Instant::now();
    let err = cache.invalidate_group("g").await.unwrap_err();
    assert!(matches!(err, redcache::Error::Timeout { .. }), "{err}");
    assert!(
        start.elapsed() < OP_TIMEOUT + SLACK,
        "{:?}",
        start.elapsed()
    );

    server.resume();
    // The same connection answers again: nothing was left waiting on it.
    let removed = cache.invalidate_prefix("f:item").await.unwrap();
    assert_eq!(removed, 1);
    assert_eq!(cache.scope(item(1, &calls)).await, "item 1");
    assert_eq!(calls.load(SeqCst), 2, "the invalidation retired the entry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_redis_under_concurrent_load_never_fails_a_call() {
    let mut server = RedisServer::start();
    let cache = server
        .cache_with(test_config().url(server.url()).op_timeout(OP_TIMEOUT))
        .await;
    let calls = std::sync::Arc::new(AtomicUsize::new(0));
    let round = |cache: redcache::Cache, base: u64| {
        let calls = calls.clone();
        async move {
            let mut tasks = Vec::new();
            for i in 0..200u64 {
                let (cache, calls) = (cache.clone(), calls.clone());
                tasks.push(tokio::spawn(async move {
                    let start = Instant::now();
                    let id = base + i % 50;
                    let got = cache.scope(item(id, &calls)).await;
                    assert_eq!(got, format!("item {id}"));
                    start.elapsed()
                }));
            }
            let mut slowest = Duration::ZERO;
            for task in tasks {
                slowest = slowest.max(task.await.expect("no call panics"));
            }
            slowest
        }
    };
    round(cache.clone(), 0).await;
    server.stop();
    let slowest = round(cache.clone(), 1000).await;
    assert!(slowest < OP_TIMEOUT + SLACK, "slowest call {slowest:?}");
    server.restart();
    caching_resumes(&cache, &server, 3, Duration::from_secs(2)).await;
}

#[redcache::cached(prefix = "f:big", ttl = 60, skip(calls))]
async fn big(id: u64, calls: &AtomicUsize) -> String {
    calls.fetch_add(1, SeqCst);
    format!("{id}").repeat(1000)
}

#[tokio::test]
async fn redis_out_of_memory_fails_open_without_opening_the_breaker() {
    let server = RedisServer::start_with(&["--maxmemory-policy", "noeviction"]);
    let mut conn = server.conn().await;
    // Fill Redis, then set its limit below what it holds: it refuses writes with OOM.
    let filler = "x".repeat(3 * 1024 * 1024);
    let _: () = redis::cmd("SET")
        .arg("filler")
        .arg(&filler)
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("2mb")
        .query_async(&mut conn)
        .await
        .unwrap();
    let refused: redis::RedisResult<()> = redis::cmd("SET")
        .arg("probe")
        .arg("x")
        .query_async(&mut conn)
        .await;
    assert!(
        refused.unwrap_err().to_string().contains("OOM"),
        "Redis is out of memory"
    );
    let cache = server.cache().await;
    let calls = AtomicUsize::new(0);
    for _ in 0..10 {
        assert_eq!(cache.scope(big(7, &calls)).await.len(), 1000);
    }
    assert_eq!(
        calls.load(SeqCst),
        10,
        "nothing could be stored: every call ran its body"
    );
    let stats = cache.stats();
    assert_eq!(stats.faults, 10, "{stats:?}");
    assert!(
        !stats.breaker_open && stats.skipped == 0,
        "Redis answers, it only refuses writes: the breaker stays closed ({stats:?})"
    );
}

/// A cache on `server` whose breaker stays closed (its reads go to Redis whatever fails),
/// with `item(7)` stored: the cache, the body's count of runs (1), the entry's key and
/// its bytes in Redis.
async fn item_seven_stored(
    server: &RedisServer,
    op_timeout: Duration,
) -> (redcache::Cache, AtomicUsize, String, Vec<u8>) {
    let cache = server
        .cache_with(
            test_config()
                .url(server.url())
                .op_timeout(op_timeout)
                .breaker_threshold(100),
        )
        .await;
    let calls = AtomicUsize::new(0);
    for _ in 0..2 {
        assert_eq!(cache.scope(item(7, &calls)).await, "item 7");
    }
    assert_eq!(calls.load(SeqCst), 1, "a miss, then a hit");
    let key = cache.scope(async { redcache::key!(item(7, _)) }).await;
    let entry = raw_value(server, &key).await.expect("the entry is stored");
    (cache, calls, key, entry)
}

/// Waits (up to 15 s) until `key` holds a tombstone: the retried eviction landed. Fails if
/// the deadline passes with `entry` (the one the write retired) or anything else there.
async fn until_a_tombstone(server: &RedisServer, key: &str, entry: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = raw_value(server, key).await;
        if now.as_deref().is_some_and(is_tombstone) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the entry the write retired is still there: {:?}",
            now.map(|raw| raw == entry)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An eviction Redis refused for now (here `BUSY`, behind a long script; as `LOADING` after
/// a restart, `OOM` under `noeviction`) is tried again until it lands, as one that could
/// not reach Redis: given up, the entry the write retired would be served until its TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eviction_refused_while_redis_is_busy_is_made_once_it_is_not() {
    let server = RedisServer::start();
    let (cache, calls, key, entry) = item_seven_stored(&server, Duration::from_secs(2)).await;

    let script = refusing_busy(&server).await;
    let faults = cache.stats().faults;
    cache.scope(rename_item(7)).await;
    assert!(
        !script.is_finished(),
        "the eviction was sent while Redis was busy"
    );
    assert_eq!(
        cache.stats().faults,
        faults + 1,
        "refused: {:?}",
        cache.stats()
    );
    assert_eq!(script.await.unwrap().unwrap(), 1);
    until_a_tombstone(&server, &key, &entry).await;
    assert_eq!(cache.scope(item(7, &calls)).await, "item 7");
    assert_eq!(calls.load(SeqCst), 2, "the retired entry was a miss");
}

/// A read Redis refused for now (`BUSY` here; `LOADING`, `CLUSTERDOWN` alike) is answered
/// by the body, and no fill is sent after it: it would be refused the same way (a cluster
/// resends such a refusal for 0.1 s first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_refused_for_now_is_answered_by_the_body_and_sends_no_fill() {
    let server = RedisServer::start();
    let cache = server.cache().await;
    let calls = AtomicUsize::new(0);
    let script = refusing_busy(&server).await;
    let faults = cache.stats().faults;
    assert_eq!(cache.scope(item(42, &calls)).await, "item 42");
    assert!(
        !script.is_finished(),
        "the call was made while Redis was busy"
    );
    assert_eq!(calls.load(SeqCst), 1);
    assert_eq!(
        cache.stats().faults,
        faults + 1,
        "the read's refusal, and no fill's: {:?}",
        cache.stats()
    );
    assert_eq!(script.await.unwrap().unwrap(), 1);
    // Once Redis answers, the call is cached as ever.
    assert_eq!(cache.scope(item(42, &calls)).await, "item 42");
    assert_eq!(cache.scope(item(42, &calls)).await, "item 42");
    assert_eq!(calls.load(SeqCst), 2);
}

/// A write with several evictions costs a frozen Redis one timeout, not one per target:
/// they are sent at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_with_several_evictions_costs_a_frozen_redis_one_timeout() {
    let server = RedisServer::start();
    let (cache, items, key, entry) = item_seven_stored(&server, OP_TIMEOUT).await;
    let (in_group, with_tag) = (AtomicUsize::new(0), AtomicUsize::new(0));
    for _ in 0..2 {
        assert_eq!(cache.scope(grouped(7, &in_group)).await, "grouped 7");
        assert_eq!(cache.scope(tagged(7, &with_tag)).await, "tagged 7");
    }

    server.pause();
    let faults = cache.stats().faults;
    let start = Instant::now();
    cache.scope(change_everything(7)).await;
    let took = start.elapsed();
    assert!(took >= OP_TIMEOUT && took < OP_TIMEOUT + SLACK, "{took:?}");
    assert_eq!(cache.stats().faults, faults + 3, "{:?}", cache.stats());

    server.resume();
    // Landed once Redis answers: the commands it held, or their retries.
    until_a_tombstone(&server, &key, &entry).await;
    assert_eq!(cache.scope(item(7, &items)).await, "item 7");
    assert_eq!(items.load(SeqCst), 2, "the evicted item is a miss");
    let deadline = Instant::now() + Duration::from_secs(15);
    while in_group.load(SeqCst) < 2 || with_tag.load(SeqCst) < 2 {
        assert!(
            Instant::now() < deadline,
            "a group's or a tag's move never landed"
        );
        assert_eq!(cache.scope(grouped(7, &in_group)).await, "grouped 7");
        assert_eq!(cache.scope(tagged(7, &with_tag)).await, "tagged 7");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!((in_group.load(SeqCst), with_tag.load(SeqCst)), (2, 2));
}

/// An eviction refused for want of replicas (`NOREPLICAS`: a master with
/// `min-replicas-to-write`, as the README suggests behind Sentinel, just promoted and not yet
/// followed by the others) is tried again until it lands, once the replicas are back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eviction_refused_for_want_of_replicas_is_made_once_they_are_back() {
    let server = RedisServer::start();
    let (cache, calls, key, entry) = item_seven_stored(&server, Duration::from_secs(2)).await;
    let client = redis::Client::open(server.url()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let conn = admin.clone();
    let replicas = |n: u32| {
        let mut admin = conn.clone();
        async move {
            let _: () = redis::cmd("CONFIG")
                .arg("SET")
                .arg("min-replicas-to-write")
                .arg(n)
                .query_async(&mut admin)
                .await
                .unwrap();
        }
    };
    replicas(1).await;
    let faults = cache.stats().faults;
    cache.scope(rename_item(7)).await;
    assert_eq!(
        cache.stats().faults,
        faults + 1,
        "refused: {:?}",
        cache.stats()
    );
    let now: Option<Vec<u8>> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(
        now,
        Some(entry.clone()),
        "the refused eviction changed nothing"
    );
    replicas(0).await;
    until_a_tombstone(&server, &key, &entry).await;
    assert_eq!(cache.scope(item(7, &calls)).await, "item 7");
    assert_eq!(calls.load(SeqCst), 2, "the retired entry was a miss");
}

/// An eviction that failed because Redis could not be reached is made once Redis answers
/// again: a server restarted with its data (here from its append-only file) would
/// otherwise serve the entry the write retired until its TTL, in every process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eviction_that_failed_in_an_outage_is_made_once_redis_is_back() {
    let mut server = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    // The breaker stays closed through the outage, whatever its length: the loop's reads
    // below go to Redis.
    let (cache, calls, key, entry) = item_seven_stored(&server, OP_TIMEOUT).await;

    server.stop();
    cache.scope(rename_item(7)).await;
    assert_eq!(cache.stats().faults, 1, "{:?}", cache.stats());
    server.restart();
    // The restart restores the entry the write retired; nothing but the retried eviction
    // writes the key meanwhile, and its tombstone stays for the fill time (30 s).
    until_a_tombstone(&server, &key, &entry).await;
    for _ in 0..2 {
        assert_eq!(cache.scope(item(7, &calls)).await, "item 7");
    }
    assert_eq!(
        calls.load(SeqCst),
        2,
        "the retired entry was a miss, then a hit"
    );
}
