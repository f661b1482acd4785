//! Reads from replicas behind Sentinel (`read_from_replicas`): hits are served by the
//! replica and only misses reach the master; an invalidation, a write-through or a
//! group's invalidation is read at once by the cache that made it (it reads those keys on
//! the master for a second, even with a replica that lags), and a write-through by another
//! cache once the replica has applied it; with the replica gone, the master serves the
//! hits (no body runs again, no fault) until a replica answers again, and a frozen one
//! costs one call half an operation timeout; and the option is refused without Sentinel
//! or with a local tier. What each server ran is read from `INFO commandstats` (counts,
//! not timing); waits are on the replica's replication offset, never a sleep.

mod common;

use common::{command_calls, test_config, RedisSentinel};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[redcache::cached(prefix = "r:item", ttl = 600, skip(calls))]
async fn item(id: u64, calls: &AtomicUsize) -> String {
    calls.fetch_add(1, SeqCst);
    format!("item {id}")
}

#[redcache::cached(prefix = "r:price", group = "catalog", ttl = 600, skip(calls))]
async fn price(sku: u64, calls: &AtomicUsize) -> u64 {
    calls.fetch_add(1, SeqCst);
    sku * 100
}

/// Hangs the first time it runs (a leader the test then cancels); answers after that.
#[redcache::cached(prefix = "r:hang", ttl = 600, skip(calls))]
async fn hangs_first(id: u64, calls: &AtomicUsize) -> u64 {
    if calls.fetch_add(1, SeqCst) == 0 {
        std::future::pending::<()>().await;
    }
    id * 2
}

/// A primary with its replica and Sentinels that know the replica, and a cache on them
/// that reads from replicas.
async fn start() -> (RedisSentinel, redcache::Cache) {
    let sentinel = RedisSentinel::start();
    sentinel.wait_for_replica();
    let cache = sentinel
        .cache_with(test_config().read_from_replicas(true))
        .await;
    assert!(cache.config().read_from_replicas());
    (sentinel, cache)
}

/// A primary with its replica and Sentinels, a cache on them that reads from replicas
/// (with `config`), and `item(id)` cached and on the replica.
async fn warmed(
    config: redcache::ConfigBuilder,
    id: u64,
    calls: &AtomicUsize,
) -> (RedisSentinel, redcache::Cache) {
    let sentinel = RedisSentinel::start();
    sentinel.wait_for_replica();
    let cache = sentinel.cache_with(config.read_from_replicas(true)).await;
    let (master, replica) = ports(&sentinel);
    cache.scope(item(id, calls)).await;
    sentinel.wait_until_replica_caught_up(master, replica).await;
    (sentinel, cache)
}

/// The data nodes' ports: the master's, then the replica's.
fn ports(sentinel: &RedisSentinel) -> (u16, u16) {
    (sentinel.nodes[0].port(), sentinel.nodes[1].port())
}

/// How many times `command` (lower case) ran on the data node on `port` since its counts
/// were reset.
async fn calls_of(sentinel: &RedisSentinel, port: u16, command: &str) -> u64 {
    let mut conn = sentinel.conn_to(port).await;
    command_calls(&mut conn)
        .await
        .get(command)
        .copied()
        .unwrap_or(0)
}

async fn reset_counts(sentinel: &RedisSentinel, port: u16) {
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut sentinel.conn_to(port).await)
        .await
        .unwrap();
}

#[tokio::test]
async fn hits_are_served_by_the_replica_and_misses_by_the_master() {
    let (sentinel, cache) = start().await;
    let (master, replica) = ports(&sentinel);
    reset_counts(&sentinel, master).await;
    reset_counts(&sentinel, replica).await;
    let calls = AtomicUsize::new(0);

    // A miss: the replica has nothing, the master is asked again (nothing), the body
    // runs and the fill goes to the master.
    assert_eq!(cache.scope(item(1, &calls)).await, "item 1");
    assert_eq!(calls.load(SeqCst), 1);
    assert_eq!(calls_of(&sentinel, replica, "get").await, 1);
    assert_eq!(
        calls_of(&sentinel, master, "get").await,
        1,
        "the miss, again"
    );
    assert_eq!(calls_of(&sentinel, master, "set").await, 1, "the fill");

    // Once the replica has the entry, every hit is its GET; the master runs none.
    sentinel.wait_until_replica_caught_up(master, replica).await;
    for _ in 0..5 {
        assert_eq!(cache.scope(item(1, &calls)).await, "item 1");
    }
    assert_eq!(calls.load(SeqCst), 1, "hits: the body did not run again");
    assert_eq!(calls_of(&sentinel, replica, "get").await, 6);
    assert_eq!(
        calls_of(&sentinel, master, "get").await,
        1,
        "no hit on the master"
    );

    // A grouped function reads the entry and the generation with one MGET, on the
    // replica too.
    assert_eq!(cache.scope(price(3, &calls)).await, 300);
    sentinel.wait_until_replica_caught_up(master, replica).await;
    let master_mgets = calls_of(&sentinel, master, "mget").await;
    let replica_mgets = calls_of(&sentinel, replica, "mget").await;
    for _ in 0..3 {
        assert_eq!(cache.scope(price(3, &calls)).await, 300);
    }
    assert_eq!(calls.load(SeqCst), 2);
    assert_eq!(
        calls_of(&sentinel, replica, "mget").await,
        replica_mgets + 3
    );
    assert_eq!(calls_of(&sentinel, master, "mget").await, master_mgets);

    // A batch: one MGET on the replica when everything is there.
    let loads = AtomicUsize::new(0);
    let load = |ids: Vec<u64>| {
        loads.fetch_add(1, SeqCst);
        async move {
            ids.into_iter()
                .map(|id| (id, id * 2))
                .collect::<HashMap<_, _>>()
        }
    };
    let ttl = Duration::from_secs(600);
    let first = cache
        .get_or_insert_many("r:batch", &[1, 2, 3], ttl, load)
        .await;
    assert_eq!(first.len(), 3);
    sentinel.wait_until_replica_caught_up(master, replica).await;
    let master_mgets = calls_of(&sentinel, master, "mget").await;
    let replica_mgets = calls_of(&sentinel, replica, "mget").await;
    let again = cache
        .get_or_insert_many("r:batch", &[1, 2, 3], ttl, load)
        .await;
    assert_eq!(again, HashMap::from([(1, 2), (2, 4), (3, 6)]));
    assert_eq!(loads.load(SeqCst), 1, "all three were hits");
    assert_eq!(
        calls_of(&sentinel, replica, "mget").await,
        replica_mgets + 1
    );
    assert_eq!(calls_of(&sentinel, master, "mget").await, master_mgets);

    let stats = cache.stats();
    assert_eq!((stats.hits, stats.faults), (11, 0), "{stats:?}");
}

#[tokio::test]
async fn an_invalidation_or_a_write_is_read_once_the_replica_has_it() {
    let (sentinel, cache) = start().await;
    let (master, replica) = ports(&sentinel);
    let calls = AtomicUsize::new(0);
    cache.scope(item(2, &calls)).await;
    sentinel.wait_until_replica_caught_up(master, replica).await;
    cache.scope(item(2, &calls)).await;
    assert_eq!(calls.load(SeqCst), 1, "a hit on the replica");

    // The invalidation goes to the master; the next call reads the master too (this cache
    // has just changed the key), misses, and the body runs. (Within the second this cache
    // reads the key on the master: nothing slow comes between.)
    let replica_gets = calls_of(&sentinel, replica, "get").await;
    assert!(cache
        .scope(redcache::invalidate!(item(2, _)))
        .await
        .unwrap());
    assert_eq!(cache.scope(item(2, &calls)).await, "item 2");
    assert_eq!(calls.load(SeqCst), 2, "invalidated: the body ran");
    assert_eq!(
        calls_of(&sentinel, replica, "get").await,
        replica_gets,
        "its own invalidation: read on the master"
    );
    // The fill replaced the tombstone on the master (the fenced compare-and-set).
    assert_eq!(cache.stats().conflicts, 0, "{:?}", cache.stats());
    sentinel.wait_until_replica_caught_up(master, replica).await;
    cache.scope(item(2, &calls)).await;
    assert_eq!(calls.load(SeqCst), 2, "filled again, and a hit");

    // A write-through on the master: the cache that wrote it reads it there at once (see
    // `a_caches_own_invalidations_and_writes_are_read_while_the_replica_lags`), and
    // another cache reads it on the replica once the replica has applied it.
    let replica_gets = calls_of(&sentinel, replica, "get").await;
    cache
        .scope(redcache::put!(item(2, _), "rewritten".to_string()))
        .await
        .unwrap();
    assert_eq!(cache.scope(item(2, &calls)).await, "rewritten");
    assert_eq!(
        calls_of(&sentinel, replica, "get").await,
        replica_gets,
        "its own write: read on the master"
    );
    sentinel.wait_until_replica_caught_up(master, replica).await;
    let other = sentinel
        .cache_with(test_config().read_from_replicas(true))
        .await;
    assert_eq!(other.scope(item(2, &calls)).await, "rewritten");
    assert_eq!(calls.load(SeqCst), 2);
    assert_eq!(
        calls_of(&sentinel, replica, "get").await,
        replica_gets + 1,
        "another cache: served by the replica"
    );
}

/// A replica applies the master's writes after the replication lag, made here as long as
/// the test needs: the replica is pointed at a port where no master answers (a listener
/// that never accepts), and goes on serving what it has (`replica-serve-stale-data yes`,
/// the default). What a cache invalidated or wrote is still what its next calls of those
/// keys find: for a while after its change, their reads go to the master. A key it did not
/// change is still served by the replica.
#[tokio::test]
async fn a_caches_own_invalidations_and_writes_are_read_while_the_replica_lags() {
    let calls = AtomicUsize::new(0);
    let (sentinel, cache) = warmed(test_config(), 2, &calls).await;
    let (master, replica) = ports(&sentinel);
    cache.scope(item(3, &calls)).await;
    cache.scope(price(1, &calls)).await;
    sentinel.wait_until_replica_caught_up(master, replica).await;
    assert_eq!(calls.load(SeqCst), 3);
    // The Sentinels would point the replica back at its master after a few seconds (and
    // drop its clients' connections): not within this test. (Each read below follows its
    // change within the second this cache reads the key on the master: nothing slow comes
    // between.)
    for port in sentinel.sentinels.iter().map(|s| s.port()) {
        let set = sentinel.sentinel_cli(
            port,
            &[
                "SENTINEL",
                "SET",
                common::MASTER_NAME,
                "failover-timeout",
                "600000",
            ],
        );
        assert_eq!(set.trim(), "OK");
    }
    let nowhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = nowhere.local_addr().unwrap().port().to_string();
    let moved = sentinel.data_cli(replica, &["REPLICAOF", "127.0.0.1", &port]);
    assert_eq!(moved.trim(), "OK");

    assert!(cache
        .scope(redcache::invalidate!(item(2, _)))
        .await
        .unwrap());
    assert_eq!(cache.scope(item(2, &calls)).await, "item 2");
    assert_eq!(
        calls.load(SeqCst),
        4,
        "the invalidation was read: the body ran"
    );
    cache
        .scope(redcache::put!(item(2, _), "rewritten".to_string()))
        .await
        .unwrap();
    assert_eq!(cache.scope(item(2, &calls)).await, "rewritten");
    cache.invalidate_group("catalog").await.unwrap();
    reset_counts(&sentinel, master).await;
    assert_eq!(cache.scope(price(1, &calls)).await, 100);
    assert_eq!(calls.load(SeqCst), 5, "the group's new generation was read");
    assert_eq!(
        calls_of(&sentinel, master, "mget").await,
        1,
        "the entry and its generation read once, on the master"
    );

    reset_counts(&sentinel, master).await;
    assert_eq!(cache.scope(item(3, &calls)).await, "item 3");
    assert_eq!(calls.load(SeqCst), 5);
    assert_eq!(
        calls_of(&sentinel, master, "get").await,
        0,
        "a key not changed here: served by the replica"
    );
    // The replica lagged throughout: it never had the write-through.
    let mut on_replica = sentinel.conn_to(replica).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("r:item:*")
        .query_async(&mut on_replica)
        .await
        .unwrap();
    assert_eq!(keys.len(), 2, "{keys:?}");
    for key in keys {
        let entry: Vec<u8> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut on_replica)
            .await
            .unwrap();
        assert!(!String::from_utf8_lossy(&entry).contains("rewritten"));
    }
    drop(nowhere);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_replica_gone_the_master_serves_the_hits_until_one_answers_again() {
    let (mut sentinel, cache) = start().await;
    let (master, replica) = ports(&sentinel);
    let calls = AtomicUsize::new(0);
    cache.scope(item(3, &calls)).await;
    sentinel.wait_until_replica_caught_up(master, replica).await;
    cache.scope(item(3, &calls)).await;
    assert_eq!(calls.load(SeqCst), 1);

    sentinel.nodes[1].stop();
    reset_counts(&sentinel, master).await;
    for _ in 0..10 {
        let started = Instant::now();
        assert_eq!(cache.scope(item(3, &calls)).await, "item 3");
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "a call took {:?}",
            started.elapsed()
        );
    }
    assert_eq!(calls.load(SeqCst), 1, "every call was a hit");
    assert_eq!(
        calls_of(&sentinel, master, "get").await,
        10,
        "each hit read once, on the master"
    );
    let stats = cache.stats();
    assert_eq!((stats.faults, stats.hits), (0, 11), "{stats:?}");

    // The replica comes back (empty, then synced from the master): reads go to it again
    // once the Sentinels name it and the cache looks for it (every second).
    sentinel.nodes[1].restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        assert_eq!(cache.scope(item(3, &calls)).await, "item 3");
        if calls_of(&sentinel, replica, "get").await > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "reads did not return to the replica"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        calls.load(SeqCst),
        1,
        "no body ran while the replica was away"
    );
    assert_eq!(cache.stats().faults, 0, "{:?}", cache.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_stops_answering_costs_one_call_half_an_operation_timeout() {
    const OP_TIMEOUT: Duration = Duration::from_secs(1);
    let calls = AtomicUsize::new(0);
    let (sentinel, cache) = warmed(test_config().op_timeout(OP_TIMEOUT), 4, &calls).await;

    // Frozen: its connection stays open, nothing answers. The first call waits half the
    // operation timeout for it, then the master answers; the next ones skip it.
    sentinel.nodes[1].pause();
    let mut took = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        assert_eq!(cache.scope(item(4, &calls)).await, "item 4");
        took.push(started.elapsed());
    }
    sentinel.nodes[1].resume();
    eprintln!("calls with the replica frozen took {took:?}");
    assert!(
        took[0] >= OP_TIMEOUT / 2 && took[0] < OP_TIMEOUT,
        "the first call: {:?}",
        took[0]
    );
    assert!(
        took[1..].iter().all(|t| *t < OP_TIMEOUT / 4),
        "the replica was asked again at once: {took:?}"
    );
    assert_eq!(calls.load(SeqCst), 1, "every call was a hit");
    let stats = cache.stats();
    assert_eq!((stats.faults, stats.hits), (0, 5), "{stats:?}");
}

/// Hits the replica serves say nothing of the master: while the master does not answer,
/// its faults (the misses' reads) open the breaker although hits keep arriving, and the
/// replica keeps serving hits with the breaker open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_from_the_replica_do_not_keep_the_breaker_closed() {
    let calls = AtomicUsize::new(0);
    let config = test_config()
        // The replica's half, 125 ms, is ample on a loaded machine; two misses' timeouts
        // stay well under the Sentinels' down-after time (no failover).
        .op_timeout(Duration::from_millis(250))
        .breaker_threshold(2)
        .breaker_cooldown(Duration::from_secs(30));
    let (sentinel, cache) = warmed(config, 5, &calls).await;

    // Frozen for well under the Sentinels' down-after time: no failover. A hit, then a
    // miss whose read on the master times out, twice.
    sentinel.nodes[0].pause();
    for id in 50..52 {
        assert_eq!(cache.scope(item(5, &calls)).await, "item 5");
        assert_eq!(cache.scope(item(id, &calls)).await, format!("item {id}"));
    }
    let health = cache.health();
    let hit_with_the_breaker_open = cache.scope(item(5, &calls)).await;
    sentinel.nodes[0].resume();
    assert!(health.breaker_open, "two faults in a row: {health:?}");
    assert_eq!(health.consecutive_faults, 2, "{health:?}");
    assert_eq!(hit_with_the_breaker_open, "item 5");
    assert_eq!(
        calls.load(SeqCst),
        3,
        "the first fill and two misses ran bodies"
    );
    assert_eq!(cache.stats().hits, 3, "{:?}", cache.stats());
}

/// A batch whose misses cannot be read again from the master (it does not answer) still
/// takes its hits from the replica: only the missing ids are loaded, and nothing is
/// written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_keeps_the_replicas_hits_while_the_master_does_not_answer() {
    let calls = AtomicUsize::new(0);
    let config = test_config().op_timeout(Duration::from_millis(250));
    let (sentinel, cache) = warmed(config, 5, &calls).await;
    let (master, replica) = ports(&sentinel);
    let loaded = std::sync::Mutex::new(Vec::new());
    let load = |ids: Vec<u64>| {
        loaded.lock().unwrap().push(ids.clone());
        async move {
            ids.into_iter()
                .map(|id| (id, id * 2))
                .collect::<HashMap<_, _>>()
        }
    };
    let ttl = Duration::from_secs(600);
    cache.get_or_insert_many("r:kept", &[1, 2], ttl, load).await;
    sentinel.wait_until_replica_caught_up(master, replica).await;

    // Frozen for well under the Sentinels' down-after time: no failover.
    sentinel.nodes[0].pause();
    let got = cache
        .get_or_insert_many("r:kept", &[1, 2, 3], ttl, load)
        .await;
    sentinel.nodes[0].resume();
    assert_eq!(got, HashMap::from([(1, 2), (2, 4), (3, 6)]));
    assert_eq!(
        *loaded.lock().unwrap(),
        [vec![1, 2], vec![3]],
        "1 and 2 were hits"
    );
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.faults), (2, 1), "{stats:?}");
}

#[tokio::test]
async fn replica_reads_need_sentinel_and_no_local_tier() {
    let err = redcache::Cache::connect(
        test_config()
            .url("redis://127.0.0.1:1")
            .read_from_replicas(true)
            .build(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, redcache::Error::Config { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("read_from_replicas") && message.contains("Config::sentinel"),
        "{message}"
    );
    let err = redcache::Cache::connect(
        test_config()
            .sentinel(["redis://127.0.0.1:1"], "m")
            .read_from_replicas(true)
            .local_capacity(100)
            .build(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, redcache::Error::Config { .. }), "{err}");
    assert!(err.to_string().contains("local_capacity"), "{err}");
}

/// Waits (up to 10 s) until `done` says so, polling.
async fn until<F: std::future::Future<Output = bool>>(mut done: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out");
        tokio::task::yield_now().await;
    }
}

/// Only a call's first read may go to a replica. A caller that read the key, then waited
/// on a flight that ended with nothing (its leader was cancelled), reads again from the
/// master: it may have seen an invalidation there that the replica has not applied yet.
#[tokio::test]
async fn a_read_after_a_wait_goes_to_the_master() {
    let (sentinel, cache) = start().await;
    let (master, replica) = ports(&sentinel);
    reset_counts(&sentinel, master).await;
    reset_counts(&sentinel, replica).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let spawn = || {
        let (cache, calls) = (cache.clone(), calls.clone());
        tokio::spawn(async move { cache.scope(hangs_first(7, &calls)).await })
    };
    // The leader reads the replica, then the master (nothing on either), and hangs in its
    // body; the waiter reads both the same way and waits on its flight.
    let leader = spawn();
    until(|| async { calls.load(SeqCst) == 1 }).await;
    let waiter = spawn();
    until(|| async { calls_of(&sentinel, master, "get").await == 2 }).await;
    common::until_waiting(&cache, 1).await;
    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());
    assert_eq!(waiter.await.unwrap(), 14);
    assert_eq!(calls.load(SeqCst), 2, "the waiter ran the body");
    assert_eq!(
        calls_of(&sentinel, replica, "get").await,
        2,
        "each call's first read only"
    );
    assert_eq!(
        calls_of(&sentinel, master, "set").await,
        1,
        "the waiter's fill"
    );
}
