//! Redis Sentinel: the cache finds the master through the Sentinels, with their own
//! credentials and the master's; a failover under load answers every call and caching
//! resumes on the promoted replica; a manual failover moves the cache when the Sentinels
//! switch, while the old master still takes writes, and a Sentinel that missed the switch
//! does not take it back; and no local copy outlives a
//! failover. (The whole behaviour suite also runs
//! behind Sentinel: see `on_both_stores!`.)

mod common;

use common::{expected_key, test_config, RedisSentinel, DOWN_AFTER, MASTER_NAME};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The Sentinels' `failover-timeout` (tests/common/sentinel.rs).
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(3);

#[redcache::cached(prefix = "s:item", ttl = 600, skip(calls))]
async fn item(id: u64, calls: &AtomicUsize) -> String {
    calls.fetch_add(1, SeqCst);
    format!("item {id}")
}

/// The account the failover test reads: "v1" until another process writes "v2" through.
#[redcache::cached(prefix = "s:account", ttl = 600)]
async fn account() -> String {
    "v1".to_string()
}

#[redcache::cached(prefix = "s:find", ttl = 600, null_ttl = 30, skip(calls))]
async fn find(id: u64, calls: &AtomicUsize) -> Option<u64> {
    calls.fetch_add(1, SeqCst);
    (id != 0).then_some(id)
}

#[redcache::cached(prefix = "s:load", ttl = 600, skip(calls))]
async fn load(id: u64, calls: &AtomicUsize) -> Result<u64, String> {
    calls.fetch_add(1, SeqCst);
    if id == 0 {
        return Err("down".into());
    }
    Ok(id)
}

#[redcache::cached(prefix = "s:price", group = "catalog", ttl = 600, skip(calls))]
async fn price(sku: u64, calls: &AtomicUsize) -> u64 {
    calls.fetch_add(1, SeqCst);
    sku * 100
}

/// TTL in seconds of `key` on the data node on `port`.
async fn ttl_on(sentinel: &RedisSentinel, port: u16, key: &str) -> i64 {
    redis::cmd("TTL")
        .arg(key)
        .query_async(&mut sentinel.conn_to(port).await)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_core_behaviours_through_sentinel() {
    let sentinel = RedisSentinel::start();
    let cache = sentinel.cache().await;
    assert!(cache.config().is_sentinel());
    assert!(format!("{cache:?}").contains("redis sentinel"));
    let calls = AtomicUsize::new(0);
    cache
        .scope(async {
            // Miss, then hit.
            assert_eq!(item(1, &calls).await, "item 1");
            assert_eq!(item(1, &calls).await, "item 1");
            assert_eq!(calls.load(SeqCst), 1, "a hit");
            // A None is cached (null_ttl); an Err is not.
            assert_eq!(find(0, &calls).await, None);
            assert_eq!(find(0, &calls).await, None);
            assert_eq!(calls.load(SeqCst), 2, "the None was cached");
            assert_eq!(load(0, &calls).await, Err("down".into()));
            assert_eq!(load(0, &calls).await, Err("down".into()));
            assert_eq!(calls.load(SeqCst), 4, "an Err is never cached");
            // invalidate!: the next call misses.
            assert!(redcache::invalidate!(item(1, _)).await.unwrap());
            assert_eq!(item(1, &calls).await, "item 1");
            assert_eq!(calls.load(SeqCst), 5);
            // A group, invalidated at once.
            price(1, &calls).await;
            price(2, &calls).await;
            price(1, &calls).await;
            assert_eq!(calls.load(SeqCst), 7);
            redcache::invalidate_group("catalog").await.unwrap();
            price(1, &calls).await;
            price(2, &calls).await;
            assert_eq!(calls.load(SeqCst), 9, "both grouped entries missed");
        })
        .await;
    // The entries are on the primary, with their TTLs (the replica has them too).
    let primary = sentinel.master_port();
    assert_eq!(primary, sentinel.nodes[0].port(), "no failover happened");
    let key = expected_key("s:item", "[1]");
    let ttl = ttl_on(&sentinel, primary, &key).await;
    assert!(
        (590..=660).contains(&ttl),
        "TTL {ttl} (600 s and up to 60 s of jitter)"
    );
    let null_ttl = ttl_on(&sentinel, primary, &expected_key("s:find", "[0]")).await;
    assert!((20..=30).contains(&null_ttl), "null TTL {null_ttl}");
    assert_eq!(
        ttl_on(&sentinel, primary, &expected_key("s:load", "[0]")).await,
        -2
    );
    let stats = cache.stats();
    assert_eq!(stats.faults, 0, "{stats:?}");
}

#[tokio::test]
async fn sentinels_and_the_master_each_take_their_own_password() {
    let sentinel = RedisSentinel::start_with_passwords(Some("data-secret"), Some("watch-secret"));
    let cache = sentinel.cache().await;
    let calls = AtomicUsize::new(0);
    cache.scope(item(1, &calls)).await;
    cache.scope(item(1, &calls)).await;
    assert_eq!(
        calls.load(SeqCst),
        1,
        "cached on the password-protected master"
    );
    // The Sentinel URLs' password is the Sentinels'; `password` is the master's.
    let wrong = test_config()
        .sentinel(sentinel.urls(), MASTER_NAME)
        .password("wrong-secret")
        .connect_timeout(Duration::from_secs(2))
        .build();
    let err = redcache::Cache::connect(wrong).await.unwrap_err();
    assert!(matches!(err, redcache::Error::Connect { .. }), "{err}");
    let message = err.to_string();
    assert!(!message.contains("secret"), "{message}");
    assert!(message.contains("of sentinels"), "{message}");
    let no_sentinel_password: Vec<String> = sentinel
        .sentinels
        .iter()
        .map(|s| format!("redis://127.0.0.1:{}", s.port()))
        .collect();
    let err = redcache::Cache::connect(
        test_config()
            .sentinel(no_sentinel_password, MASTER_NAME)
            .password("data-secret")
            .build(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, redcache::Error::Connect { .. }), "{err}");
    // A master name the Sentinels do not know.
    let err = redcache::Cache::connect(
        test_config()
            .sentinel(sentinel.urls(), "elsewhere")
            .password("data-secret")
            .build(),
    )
    .await
    .unwrap_err();
    assert!(!err.to_string().contains("secret"), "{err}");
}

#[tokio::test]
async fn a_lazy_cache_finds_the_master_on_its_first_call() {
    let sentinel = RedisSentinel::start();
    let cache = redcache::Cache::connect(sentinel.configure(test_config().lazy(true)).build())
        .await
        .unwrap();
    let calls = AtomicUsize::new(0);
    cache.scope(item(3, &calls)).await;
    cache.scope(item(3, &calls)).await;
    assert_eq!(calls.load(SeqCst), 1, "{:?}", cache.stats());
    // Nothing answers at these addresses: a lazy cache still starts, and runs bodies.
    let nowhere = redcache::Cache::connect(
        test_config()
            .sentinel(["redis://127.0.0.1:1", "redis://127.0.0.1:2"], MASTER_NAME)
            .lazy(true)
            .build(),
    )
    .await
    .unwrap();
    assert_eq!(nowhere.scope(item(4, &calls)).await, "item 4");
    assert_eq!(nowhere.scope(item(4, &calls)).await, "item 4");
    assert_eq!(calls.load(SeqCst), 3);
    assert!(nowhere.stats().faults > 0);
}

/// `SENTINEL FAILOVER` on the first Sentinel (which asks no other for agreement), then
/// waits until every Sentinel names another master than `old`.
async fn manual_failover(sentinel: &RedisSentinel, old: u16) {
    let reply = sentinel.sentinel_cli(
        sentinel.sentinels[0].port(),
        &["SENTINEL", "FAILOVER", MASTER_NAME],
    );
    assert!(reply.contains("OK"), "SENTINEL FAILOVER: {reply}");
    sentinel
        .wait_for_new_master(old, FAILOVER_TIMEOUT + Duration::from_secs(10))
        .await;
}

/// Calls `item(id)` until a call is a hit after the body ran (a miss stored it); how long
/// that took. (Not "a miss then at once a hit": with a local tier, the read right after a
/// fill may still see the empty key it read before, until Redis's invalidation of the
/// fill arrives, and miss once more.)
async fn until_cached(cache: &redcache::Cache, id: u64, within: Duration) -> Duration {
    let started = Instant::now();
    let probe = AtomicUsize::new(0);
    loop {
        let runs = probe.load(SeqCst);
        cache.scope(item(id, &probe)).await;
        if runs > 0 && probe.load(SeqCst) == runs {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "caching did not resume within {within:?}: {:?}",
            cache.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failover_under_load_answers_every_call_and_caching_resumes_on_the_new_master() {
    const OP_TIMEOUT: Duration = Duration::from_millis(200);
    let mut sentinel = RedisSentinel::start();
    sentinel.wait_until_ready_for_failover();
    let (old, replica) = (sentinel.nodes[0].port(), sentinel.nodes[1].port());
    let cache = sentinel
        .cache_with(test_config().op_timeout(OP_TIMEOUT))
        .await;
    let calls = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for task in 0..4u64 {
        let (cache, calls, stop, answered) =
            (cache.clone(), calls.clone(), stop.clone(), answered.clone());
        load.push(tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            let mut i = 0;
            while !stop.load(SeqCst) {
                let id = 1000 + task * 100 + i % 20;
                let start = Instant::now();
                assert_eq!(cache.scope(item(id, &calls)).await, format!("item {id}"));
                slowest = slowest.max(start.elapsed());
                answered.fetch_add(1, SeqCst);
                i += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            slowest
        }));
    }
    // Under load, and caching, before the failover.
    let deadline = Instant::now() + Duration::from_secs(10);
    while cache.stats().hits < 20 {
        assert!(Instant::now() < deadline, "no caching before the failover");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let before = answered.load(SeqCst);
    sentinel.nodes[0].stop();
    let failover = sentinel
        .wait_for_new_master(old, DOWN_AFTER + FAILOVER_TIMEOUT + Duration::from_secs(10))
        .await;
    eprintln!("the Sentinels promoted the replica {failover:?} after the kill");
    assert_eq!(
        sentinel.master_port(),
        replica,
        "the replica is the master now"
    );
    // Caching resumes on the new master soon after the Sentinels name it.
    let resumed = until_cached(&cache, 1, Duration::from_secs(2)).await;
    eprintln!("caching resumed {resumed:?} after the promotion");
    let mut conn = sentinel.conn_to(replica).await;
    let stored: Option<Vec<u8>> = redis::cmd("GET")
        .arg(expected_key("s:item", "[1]"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(stored.is_some(), "the entry is on the new master");
    stop.store(true, SeqCst);
    let mut slowest = Duration::ZERO;
    for task in load {
        slowest = slowest.max(task.await.expect("no call panicked or failed"));
    }
    let during = answered.load(SeqCst) - before;
    eprintln!("{during} calls answered during and after the failover; slowest {slowest:?}");
    assert!(during > 0);
    // Each call is bounded by the operation timeout: a read, and at most a re-read.
    assert!(
        slowest < 2 * OP_TIMEOUT + Duration::from_millis(300),
        "slowest call {slowest:?}"
    );
    assert!(cache.stats().faults > 0, "the dead master was noticed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_failover_moves_the_cache_when_the_sentinels_switch() {
    // The old master lives on: the Sentinels promote the replica at once but reconfigure
    // the old master only some 10 s later, and until then it takes writes. The cache
    // follows the Sentinels' `+switch-master`, not the old master's failures.
    let sentinel = RedisSentinel::start();
    sentinel.wait_until_ready_for_failover();
    let (old, replica) = (sentinel.nodes[0].port(), sentinel.nodes[1].port());
    let cache = sentinel.cache().await;
    let calls = AtomicUsize::new(0);
    cache.scope(item(1, &calls)).await;
    manual_failover(&sentinel, old).await;
    assert_eq!(sentinel.master_port(), replica);
    assert!(
        sentinel.data_cli(old, &["ROLE"]).starts_with("master"),
        "the old master is not reconfigured yet"
    );
    let resumed = until_cached(&cache, 2, Duration::from_secs(2)).await;
    eprintln!("caching resumed {resumed:?} after the switch");
    let key = expected_key("s:item", "[2]");
    assert!(
        ttl_on(&sentinel, replica, &key).await > 0,
        "written on the new master"
    );
    assert_eq!(ttl_on(&sentinel, old, &key).await, -2, "not on the old one");
    // Invalidations go to the new master too.
    assert!(cache
        .scope(redcache::invalidate!(item(1, _)))
        .await
        .unwrap());
    let before = calls.load(SeqCst);
    cache.scope(item(1, &calls)).await;
    assert_eq!(
        calls.load(SeqCst),
        before + 1,
        "invalidated on the new master"
    );
}

/// A Sentinel that has not heard of a manual failover names the old master, which still
/// answers `ROLE` as a master until the Sentinels reconfigure it. Once the cache has heard
/// the switch, a lookup that lands on such a Sentinel asks again: every reconnection after
/// the switch goes to the new master, and nothing is written on the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_that_missed_the_switch_does_not_take_the_cache_back() {
    let mut sentinel = RedisSentinel::start();
    sentinel.wait_until_ready_for_failover();
    let lagging = sentinel.start_lagging_sentinel();
    let (old, replica) = (sentinel.nodes[0].port(), sentinel.nodes[1].port());
    // The cache logs into the data nodes as its own user, so that its connections (and
    // only those) can be dropped.
    for port in [old, replica] {
        let reply = sentinel.data_cli(
            port,
            &["ACL", "SETUSER", "app", "on", ">app", "~*", "&*", "+@all"],
        );
        assert!(reply.contains("OK"), "ACL SETUSER: {reply}");
    }
    // The watcher listens to the first Sentinel, the one that fails over; lookups ask
    // from each in turn, the lagging one included.
    let mut urls = sentinel.urls();
    urls.push(format!("redis://127.0.0.1:{}", lagging.port()));
    let cache = redcache::Cache::connect(
        test_config()
            .sentinel(urls, MASTER_NAME)
            .username("app")
            .password("app")
            .build(),
    )
    .await
    .unwrap();
    let calls = AtomicUsize::new(0);
    cache.scope(item(1, &calls)).await;
    manual_failover(&sentinel, old).await;
    let named = sentinel.sentinel_cli(
        lagging.port(),
        &["SENTINEL", "get-master-addr-by-name", MASTER_NAME],
    );
    assert!(
        named.contains(&old.to_string()),
        "the lagging Sentinel names the old master: {named}"
    );
    // Several reconnections, so that lookups start from every Sentinel in turn.
    for id in 10..16 {
        // Some 10 s after the switch the Sentinels reconfigure the old master, and from
        // then on no lookup can land there.
        if !sentinel.data_cli(old, &["ROLE"]).starts_with("master") {
            assert!(
                id > 10,
                "the old master was reconfigured before the first round"
            );
            break;
        }
        for port in [old, replica] {
            sentinel.data_cli(port, &["CLIENT", "KILL", "USER", "app"]);
        }
        until_cached(&cache, id, Duration::from_secs(5)).await;
        let key = expected_key("s:item", &format!("[{id}]"));
        let (on_new, on_old) = (
            ttl_on(&sentinel, replica, &key).await,
            ttl_on(&sentinel, old, &key).await,
        );
        if !sentinel.data_cli(old, &["ROLE"]).starts_with("master") {
            // Reconfigured meanwhile: as a replica it may hold the new master's keys.
            assert!(
                id > 10,
                "the old master was reconfigured during the first round"
            );
            break;
        }
        assert!(on_new > 0, "{id}: written on the new master");
        assert_eq!(on_old, -2, "{id}: not on the old one");
    }
}

/// Reads `account()` until the local tier serves it (the push of the miss's own fill may
/// retire the copy the first hit brings).
async fn until_account_is_local(cache: &redcache::Cache) {
    for _ in 0..10 {
        assert_eq!(cache.scope(account()).await, "v1");
        if cache.stats().local_hits > 0 {
            return;
        }
    }
    panic!("never served locally: {:?}", cache.stats());
}

/// Writes "v2" through to `account()` from another process's cache, on the node at `port`.
async fn write_v2_on(port: u16) {
    let writer = redcache::Cache::connect(
        test_config()
            .url(format!("redis://127.0.0.1:{port}"))
            .build(),
    )
    .await
    .unwrap();
    writer
        .scope(redcache::put!(account(), "v2".to_string()))
        .await
        .unwrap();
}

/// After a manual failover the old master lives on, unreconfigured, for some 10 s: a
/// process that answers only local hits makes no Redis call, and the old master sends it no
/// push for a write on the new one. The switch itself retires its copies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_failover_retires_the_local_copies_at_once() {
    let sentinel = RedisSentinel::start();
    sentinel.wait_until_ready_for_failover();
    let (old, replica) = (sentinel.nodes[0].port(), sentinel.nodes[1].port());
    let cache = sentinel.cache_with(test_config().local_capacity(100)).await;
    until_account_is_local(&cache).await;
    manual_failover(&sentinel, old).await;
    assert_eq!(sentinel.master_port(), replica);
    write_v2_on(replica).await;
    let written = Instant::now();
    loop {
        if cache.scope(account()).await == "v2" {
            break;
        }
        assert!(
            sentinel.data_cli(old, &["ROLE"]).starts_with("master"),
            "the old master was reconfigured before the copy went: the test shows nothing"
        );
        assert!(
            written.elapsed() < Duration::from_secs(2),
            "a copy read from the old master outlived the switch"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_local_copy_outlives_a_failover() {
    let mut sentinel = RedisSentinel::start();
    sentinel.wait_until_ready_for_failover();
    let (old, replica) = (sentinel.nodes[0].port(), sentinel.nodes[1].port());
    let cache = sentinel.cache_with(test_config().local_capacity(100)).await;
    until_account_is_local(&cache).await;
    let local_hits = |cache: &redcache::Cache| cache.stats().local_hits;
    sentinel.nodes[0].stop();
    sentinel
        .wait_for_new_master(old, DOWN_AFTER + FAILOVER_TIMEOUT + Duration::from_secs(10))
        .await;
    until_cached(&cache, 5, Duration::from_secs(2)).await;
    // On the new master, read it (locally again), then write through another connection.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let before = local_hits(&cache);
        let read = cache.scope(account()).await;
        if read == "v1" && local_hits(&cache) > before {
            break;
        }
        assert!(Instant::now() < deadline, "{read:?} {:?}", cache.stats());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    write_v2_on(replica).await;
    let written = Instant::now();
    loop {
        if cache.scope(account()).await == "v2" {
            break;
        }
        assert!(
            written.elapsed() < Duration::from_millis(100),
            "a stale local copy outlived the write after the failover"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eprintln!(
        "the new value was read {:?} after the write",
        written.elapsed()
    );
}
