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
    assert!(n <= 3, "miss, Redis hit, then local: {n}");
    let before = cache.stats().local_hits;
    for _ in 0..100 {
        assert_eq!(cache.scope(item(1, &calls)).await, 1);
    }
    let stats = cache.stats();
    assert_eq!(stats.local_hits - before, 100, "{stats:?}");
    assert_eq!(calls.load(SeqCst), 1);
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

#[tokio::test]
async fn an_invalidation_in_one_process_reaches_the_local_tier_of_another() {
    let server = RedisServer::start();
    let mut conn = server.conn().await;
    let _: () = redis::cmd("SET")
        .arg("test:row:1")
        .arg("v1")
        .query_async(&mut conn)
        .await
        .unwrap();
    let child = common::spawn_child("child_reads_through_its_local_tier", &server.url(), &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready: Option<u8> = redis::cmd("GET")
            .arg("test:child:ready")
            .query_async(&mut conn)
            .await
            .unwrap();
        if ready.is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "the child never got ready");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
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
