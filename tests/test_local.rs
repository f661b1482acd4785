//! The local tier (`Config::local_capacity`): hits served in process, kept coherent across
//! processes by Redis (RESP3 client tracking), never older than the Redis TTL, bounded.

mod common;

use common::{test_config, RedisServer};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

async fn local_cache(server_url: String, capacity: usize) -> redcache::Cache {
    redcache::Cache::connect(
        test_config()
            .url(server_url)
            .local_capacity(capacity)
            .build(),
    )
    .await
    .unwrap()
}

#[redcache::cached(prefix = "l:item", ttl = 60, skip(calls))]
async fn item(id: u64, calls: &AtomicUsize) -> u64 {
    calls.fetch_add(1, SeqCst);
    id
}

/// Calls `item(id)` until the local tier serves it (the first reads fill Redis, then the
/// local copy); how many calls that took.
async fn until_local(cache: &redcache::Cache, id: u64, calls: &AtomicUsize) -> usize {
    let before = cache.stats().local_hits;
    for n in 1..=10 {
        assert_eq!(cache.scope(item(id, calls)).await, id);
        if cache.stats().local_hits > before {
            return n;
        }
    }
    panic!(
        "the local tier never served item({id}): {:?}",
        cache.stats()
    );
}

#[tokio::test]
async fn hits_are_served_locally() {
    let server = RedisServer::start();
    let cache = local_cache(server.url(), 100).await;
    let calls = AtomicUsize::new(0);
    let n = until_local(&cache, 1, &calls).await;
    // Miss, Redis hit, then local; or one Redis hit more, when the push of the miss's own
    // fill lands after the first hit's read was sent (it retires that copy).
    assert!(n <= 4, "miss, Redis hit, then local: {n}");
    let before = cache.stats();
    let before_prefix = of_prefix(&cache, "l:item");
    for _ in 0..100 {
        assert_eq!(cache.scope(item(1, &calls)).await, 1);
    }
    let stats = cache.stats();
    assert_eq!(stats.local_hits - before.local_hits, 100, "{stats:?}");
    // A local hit is a hit, in total and for its function.
    assert_eq!(stats.hits - before.hits, 100, "{stats:?}");
    assert_eq!(stats.null_hits, before.null_hits, "{stats:?}");
    let by_prefix = of_prefix(&cache, "l:item");
    assert_eq!(by_prefix.hits - before_prefix.hits, 100, "{by_prefix:?}");
    assert_eq!(calls.load(SeqCst), 1);
}

/// The counters of `prefix` in `cache`.
fn of_prefix(cache: &redcache::Cache, prefix: &str) -> redcache::Stats {
    let all = cache.stats_by_prefix();
    let found = all.iter().find(|(p, _)| p == prefix);
    found.map(|(_, stats)| *stats).unwrap_or_default()
}

#[tokio::test]
async fn local_copies_never_outlive_the_redis_ttl() {
    let server = RedisServer::start();
    let cache = local_cache(server.url(), 100).await;
    let calls = AtomicUsize::new(0);
    let key = cache.scope(async { redcache::key!(short(2, _)) }).await;
    cache.scope(short(2, &calls)).await;
    until_local_short(&cache, &calls).await;
    // Wait for Redis itself to drop the entry (its own TTL), then read again.
    let mut conn = server.conn().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let exists: bool = redis::cmd("EXISTS")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        if !exists {
            break;
        }
        assert!(Instant::now() < deadline, "{key} never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = calls.load(SeqCst);
    cache.scope(short(2, &calls)).await;
    assert_eq!(
        calls.load(SeqCst),
        before + 1,
        "expired in Redis: a miss here too"
    );
}

#[redcache::cached(
    prefix = "l:fallible",
    ttl = 1,
    jitter = 0,
    stale_if_error = 3600,
    skip(calls)
)]
async fn fallible(id: u64, calls: &AtomicUsize) -> Result<u64, String> {
    Ok(id * 100 + calls.fetch_add(1, SeqCst) as u64)
}

/// An entry of a function with `stale_if_error` lives in Redis for its TTL and the error
/// window; a local copy of it would live as long, and be served long past the TTL.
#[tokio::test]
async fn a_function_that_may_answer_stale_is_never_served_locally() {
    let server = RedisServer::start();
    let cache = local_cache(server.url(), 100).await;
    let calls = AtomicUsize::new(0);
    assert_eq!(cache.scope(fallible(3, &calls)).await, Ok(300));
    // (Stamped before the call returned: its expiry is at most a second from now.)
    let stored = Instant::now();
    for _ in 0..10 {
        assert_eq!(cache.scope(fallible(3, &calls)).await, Ok(300));
    }
    assert_eq!(calls.load(SeqCst), 1);
    // Past the TTL (not the error window): the body runs again.
    tokio::time::sleep(
        (stored + Duration::from_millis(1100)).saturating_duration_since(Instant::now()),
    )
    .await;
    assert_eq!(
        cache.scope(fallible(3, &calls)).await,
        Ok(301),
        "not the old copy"
    );
    assert_eq!(cache.stats().local_hits, 0, "read from Redis each time");
}

/// Two versions of one function, as in a rolling deploy: the first keeps its entries for
/// a stale window past their TTL, the second (same prefix, same key) does not.
#[redcache::cached(
    prefix = "l:deploy",
    ttl = 1,
    jitter = 0,
    stale_ttl = 3600,
    skip(calls)
)]
async fn deploy_v1(id: u64, calls: &AtomicUsize) -> u64 {
    calls.fetch_add(1, SeqCst);
    id
}

#[redcache::cached(prefix = "l:deploy", ttl = 1, jitter = 0, skip(calls))]
async fn deploy_v2(id: u64, calls: &AtomicUsize) -> u64 {
    calls.fetch_add(1, SeqCst);
    id
}

/// A local copy lives until the entry's stamped expiry, not as long as Redis keeps the
/// entry for another version's stale window.
#[tokio::test]
async fn a_local_copy_never_outlives_the_entrys_own_expiry() {
    let server = RedisServer::start();
    let cache = local_cache(server.url(), 100).await;
    let calls = AtomicUsize::new(0);
    assert_eq!(cache.scope(deploy_v1(4, &calls)).await, 4);
    // (Stamped before the call returned: its expiry is at most a second from now.)
    let stored = Instant::now();
    let before = cache.stats().local_hits;
    for _ in 0..10 {
        if cache.stats().local_hits > before {
            break;
        }
        assert_eq!(cache.scope(deploy_v2(4, &calls)).await, 4);
    }
    assert!(cache.stats().local_hits > before, "{:?}", cache.stats());
    assert_eq!(calls.load(SeqCst), 1);
    tokio::time::sleep(
        (stored + Duration::from_millis(1100)).saturating_duration_since(Instant::now()),
    )
    .await;
    assert_eq!(cache.scope(deploy_v2(4, &calls)).await, 4);
    assert_eq!(calls.load(SeqCst), 2, "past its expiry: not the local copy");
}

#[redcache::cached(prefix = "l:short", ttl = 1, jitter = 0, skip(calls))]
async fn short(id: u64, calls: &AtomicUsize) -> u64 {
    calls.fetch_add(1, SeqCst);
    id
}

async fn until_local_short(cache: &redcache::Cache, calls: &AtomicUsize) {
    let before = cache.stats().local_hits;
    for _ in 0..10 {
        cache.scope(short(2, calls)).await;
        if cache.stats().local_hits > before {
            return;
        }
    }
    panic!("the local tier never served short(2)");
}

#[tokio::test]
async fn the_local_tier_is_bounded() {
    let server = RedisServer::start();
    let cache = local_cache(server.url(), 10).await;
    let calls = AtomicUsize::new(0);
    for id in 0..50 {
        until_local(&cache, id, &calls).await;
    }
    let before = cache.stats().local_hits;
    cache.scope(item(49, &calls)).await;
    assert_eq!(
        cache.stats().local_hits,
        before + 1,
        "a recent entry is local"
    );
    cache.scope(item(0, &calls)).await;
    assert_eq!(
        cache.stats().local_hits,
        before + 1,
        "the oldest was evicted: at most 10 entries are kept"
    );
    assert_eq!(
        calls.load(SeqCst),
        50,
        "an evicted local copy is still a Redis hit"
    );
}

/// The row the coherence test's function reads: a Redis key the parent rewrites.
#[redcache::cached(prefix = "l:row", ttl = 60)]
async fn row(id: u64) -> String {
    let mut conn = common::child_conn().await;
    let _: u64 = redis::cmd("INCR")
        .arg("test:child:runs")
        .query_async(&mut conn)
        .await
        .unwrap();
    redis::cmd("GET")
        .arg(format!("test:row:{id}"))
        .query_async(&mut conn)
        .await
        .unwrap()
}

/// Waits until the child process says it is ready (`test:child:ready`).
async fn until_child_ready(conn: &mut redis::aio::MultiplexedConnection) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready: Option<u8> = redis::cmd("GET")
            .arg("test:child:ready")
            .query_async(conn)
            .await
            .unwrap();
        if ready.is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "the child never got ready");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Run by `an_invalidation_in_one_process_reaches_the_local_tier_of_another`.
#[tokio::test]
#[ignore = "run as a child process by an_invalidation_in_one_process_reaches_the_local_tier_of_another"]
async fn child_reads_through_its_local_tier() {
    let url = common::child_url();
    let cache = local_cache(url, 100).await;
    let mut conn = common::child_conn().await;
    let mut local = false;
    for _ in 0..10 {
        assert_eq!(cache.scope(row(1)).await, "v1");
        if cache.stats().local_hits > 0 {
            local = true;
            break;
        }
    }
    assert!(
        local,
        "the child serves row(1) locally: {:?}",
        cache.stats()
    );
    let _: () = redis::cmd("SET")
        .arg("test:child:ready")
        .arg(1)
        .query_async(&mut conn)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let value = cache.scope(row(1)).await;
        if value == "v2" {
            break;
        }
        assert_eq!(value, "v1");
        assert!(Instant::now() < deadline, "the invalidation never arrived");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Held by the test that times a bound of 100 ms across processes and by the one that
/// loads both cores with another process's write loop: libtest runs two tests at once,
/// and the bound is not one of two processes on a machine the other test keeps busy.
static TIMED_OR_LOADED: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn an_invalidation_in_one_process_reaches_the_local_tier_of_another() {
    let _alone = TIMED_OR_LOADED.lock().await;
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    let _: () = redis::cmd("SET")
        .arg("test:row:1")
        .arg("v1")
        .query_async(&mut conn)
        .await
        .unwrap();
    let child = common::spawn_child("child_reads_through_its_local_tier", &server.url(), &[]);
    until_child_ready(&mut conn).await;
    let runs = |conn: &mut redis::aio::MultiplexedConnection| {
        let mut conn = conn.clone();
        async move {
            redis::cmd("GET")
                .arg("test:child:runs")
                .query_async::<u64>(&mut conn)
                .await
                .unwrap()
        }
    };
    let runs_before = runs(&mut conn).await;
    // The write, then its invalidation, from this process.
    let _: () = redis::cmd("SET")
        .arg("test:row:1")
        .arg("v2")
        .query_async(&mut conn)
        .await
        .unwrap();
    let cache = server.cache().await;
    let start = Instant::now();
    assert!(cache.scope(redcache::invalidate!(row(1))).await.unwrap());
    while runs(&mut conn).await == runs_before {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the child never missed"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let took = start.elapsed();
    common::child_succeeded(child);
    eprintln!("the other process missed {took:?} after the invalidation");
    assert!(
        took < Duration::from_millis(100),
        "the other process's local copy outlived the invalidation by {took:?}"
    );
}

/// The source of truth the write-loop tests change, and the function that reads it.
static SOURCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static SOURCE_RUNS: AtomicUsize = AtomicUsize::new(0);

#[redcache::cached(prefix = "l:source", ttl = 60)]
async fn source(id: u64) -> u64 {
    SOURCE_RUNS.fetch_add(1, SeqCst);
    SOURCE.load(SeqCst) + id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn this_process_reads_its_own_invalidations_and_writes_at_once() {
    let server = RedisServer::start();
    let cache = local_cache(server.url(), 100).await;
    let before = cache.stats().local_hits;
    // Readers keep the local tier busy (filling it, hitting it) while the writer changes the
    // source and invalidates, in a tight loop.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (cache, stop) = (cache.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(SeqCst) {
                    cache.scope(source(0)).await;
                }
            })
        })
        .collect();
    for i in 1..=300u64 {
        SOURCE.store(i, SeqCst);
        if i % 2 == 0 {
            assert!(cache.scope(redcache::invalidate!(source(0))).await.is_ok());
        } else {
            cache.scope(redcache::put!(source(0), i)).await.unwrap();
        }
        // A read that starts after the invalidation (or write) returned sees it.
        assert_eq!(cache.scope(source(0)).await, i, "round {i}");
    }
    stop.store(true, SeqCst);
    for reader in readers {
        reader.await.unwrap();
    }
    let stats = cache.stats();
    assert!(
        stats.local_hits > before,
        "the readers were served locally: {stats:?}"
    );
}

/// Run by `a_tight_write_loop_in_one_process_never_strands_a_stale_copy_in_another`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run as a child process by a_tight_write_loop_in_one_process_never_strands_a_stale_copy_in_another"]
async fn child_reads_while_another_process_writes() {
    let url = common::child_url();
    let cache = local_cache(url, 100).await;
    let mut conn = common::child_conn().await;
    // Hold a local copy before the parent starts writing (once it writes without pause,
    // every read may miss).
    for _ in 0..10 {
        cache.scope(row(1)).await;
        if cache.stats().local_hits > 0 {
            break;
        }
    }
    let stats = cache.stats();
    assert!(stats.local_hits > 0, "served locally first: {stats:?}");
    let _: () = redis::cmd("SET")
        .arg("test:child:ready")
        .arg(1)
        .query_async(&mut conn)
        .await
        .unwrap();
    // Read through the local tier while the parent writes, until it says it is done.
    loop {
        cache.scope(row(1)).await;
        let done: Option<String> = redis::cmd("GET")
            .arg("test:child:done")
            .query_async(&mut conn)
            .await
            .unwrap();
        if let Some(last) = done {
            // Every invalidation reached this process: the last value is read within
            // moments, not after the entry's 60 s TTL.
            let deadline = Instant::now() + Duration::from_secs(1);
            loop {
                let value = cache.scope(row(1)).await;
                if value == last {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "a stale copy outlived the last invalidation: {value}, not {last}"
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            break;
        }
    }
}

#[tokio::test]
async fn a_tight_write_loop_in_one_process_never_strands_a_stale_copy_in_another() {
    let _alone = TIMED_OR_LOADED.lock().await;
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    let writer = conn.clone();
    let set = |key: &'static str, value: String| {
        let mut conn = writer.clone();
        async move {
            let _: () = redis::cmd("SET")
                .arg(key)
                .arg(value)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
    };
    set("test:row:1", "v0".into()).await;
    let child = common::spawn_child(
        "child_reads_while_another_process_writes",
        &server.url(),
        &[],
    );
    until_child_ready(&mut conn).await;
    let cache = server.cache().await;
    let mut last = String::new();
    for i in 1..=2_000 {
        last = format!("v{i}");
        set("test:row:1", last.clone()).await;
        cache.scope(redcache::invalidate!(row(1))).await.unwrap();
    }
    set("test:child:done", last).await;
    common::child_succeeded(child);
}

/// A value that cannot be cloned: the local tier cannot keep it, and the function still
/// works, reading Redis each time.
#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
struct Unclonable(u64);

#[redcache::cached(prefix = "l:unclonable", ttl = 60, skip(calls))]
async fn unclonable(id: u64, calls: &AtomicUsize) -> Unclonable {
    calls.fetch_add(1, SeqCst);
    Unclonable(id)
}

#[tokio::test]
async fn values_that_cannot_be_cloned_are_read_from_redis() {
    let server = RedisServer::start();
    let cache = local_cache(server.url(), 100).await;
    let calls = AtomicUsize::new(0);
    for _ in 0..5 {
        assert_eq!(cache.scope(unclonable(3, &calls)).await, Unclonable(3));
    }
    let stats = cache.stats();
    assert_eq!(calls.load(SeqCst), 1);
    assert_eq!((stats.hits, stats.local_hits), (4, 0), "{stats:?}");
}

#[redcache::cached(prefix = "l:grouped", ttl = 60, group = "l-team", skip(calls))]
async fn grouped(id: u64, calls: &AtomicUsize) -> Option<u64> {
    calls.fetch_add(1, SeqCst);
    (id > 0).then_some(id)
}

#[tokio::test]
async fn a_group_invalidation_retires_local_copies_and_cached_nones_are_kept_too() {
    let server = RedisServer::start();
    let cache = local_cache(server.url(), 100).await;
    let calls = AtomicUsize::new(0);
    for id in [0, 1] {
        let before = cache.stats().local_hits;
        let mut served_locally = false;
        for _ in 0..10 {
            assert_eq!(
                cache.scope(grouped(id, &calls)).await,
                (id > 0).then_some(id)
            );
            if cache.stats().local_hits > before {
                served_locally = true;
                break;
            }
        }
        assert!(served_locally, "grouped({id}) was served locally");
    }
    let runs = calls.load(SeqCst);
    assert_eq!(runs, 2);
    assert!(cache.stats().null_hits >= 1);
    // A local hit on a cached `None` is a null hit, never a hit on a value.
    let before = cache.stats();
    for _ in 0..10 {
        assert_eq!(cache.scope(grouped(0, &calls)).await, None);
    }
    let stats = cache.stats();
    assert_eq!(stats.local_hits - before.local_hits, 10, "{stats:?}");
    assert_eq!(stats.null_hits - before.null_hits, 10, "{stats:?}");
    assert_eq!(stats.hits, before.hits, "{stats:?}");
    cache.invalidate_group("l-team").await.unwrap();
    assert_eq!(cache.scope(grouped(1, &calls)).await, Some(1));
    assert_eq!(cache.scope(grouped(0, &calls)).await, None);
    assert_eq!(calls.load(SeqCst), runs + 2, "both ran again at once");
}

/// A loop of local hits on a 2-worker runtime still lets timers fire: each hit spends the
/// task's cooperative budget.
#[test]
fn tasks_looping_on_local_hits_do_not_starve_timers() {
    let server = RedisServer::start();
    let url = server.url();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let hits = runtime.block_on(async move {
            let cache = local_cache(url, 100).await;
            let calls = AtomicUsize::new(0);
            until_local(&cache, 7, &calls).await;
            let loops: Vec<_> = (0..4)
                .map(|_| {
                    let cache = cache.clone();
                    tokio::spawn(async move {
                        let calls = AtomicUsize::new(0);
                        let stop = tokio::time::sleep(Duration::from_millis(200));
                        tokio::pin!(stop);
                        let mut n = 0u64;
                        loop {
                            tokio::select! {
                                biased;
                                _ = &mut stop => break n,
                                v = cache.scope(item(7, &calls)) => { assert_eq!(v, 7); n += 1 }
                            }
                        }
                    })
                })
                .collect();
            let mut hits = 0;
            for l in loops {
                hits += l.await.unwrap();
            }
            hits
        });
        let _ = done.send(hits);
    });
    let hits = finished
        .recv_timeout(Duration::from_secs(20))
        .expect("a loop of local hits never saw its 200 ms timer fire");
    assert!(hits > 0);
}

/// An ACL user that may not send `CLIENT CACHING`: Redis tracks none of its reads, so no
/// push would retire a copy of one. None is kept: every hit reads Redis, and another
/// process's invalidation is seen at once.
#[tokio::test]
async fn reads_redis_does_not_track_are_never_kept_locally() {
    let server = RedisServer::start();
    let mut admin = server.conn().await;
    let refused: redis::RedisResult<()> = redis::cmd("ACL")
        .arg(common::no_caching_user(false))
        .query_async(&mut admin)
        .await;
    if refused.is_err() {
        let _: () = redis::cmd("ACL")
            .arg(common::no_caching_user(true))
            .query_async(&mut admin)
            .await
            .unwrap();
    }
    let url = format!("redis://app:pw@127.0.0.1:{}", server.port());
    let cache = local_cache(url, 100).await;
    let calls = AtomicUsize::new(0);
    for _ in 0..5 {
        assert_eq!(cache.scope(item(7, &calls)).await, 7);
    }
    let stats = cache.stats();
    assert_eq!(
        (stats.hits, stats.local_hits, stats.faults),
        (4, 0, 0),
        "{stats:?}"
    );
    assert_eq!(calls.load(SeqCst), 1);
    // Once refused, not asked again: each hit is one `GET`, not a refused tracked read
    // (whose `GET` and `PTTL` Redis runs) and then a `GET`.
    let before = common::command_calls(&mut admin).await;
    for _ in 0..10 {
        assert_eq!(cache.scope(item(7, &calls)).await, 7);
    }
    let after = common::command_calls(&mut admin).await;
    let ran = |name: &str| after.get(name).unwrap_or(&0) - before.get(name).unwrap_or(&0);
    assert_eq!((ran("get"), ran("pttl")), (10, 0));
    // Another process invalidates the entry: the next call misses.
    let other = server.cache().await;
    assert!(other
        .scope(redcache::invalidate!(item(7, _)))
        .await
        .unwrap());
    assert_eq!(cache.scope(item(7, &calls)).await, 7);
    assert_eq!(calls.load(SeqCst), 2, "the invalidation was seen");
}
