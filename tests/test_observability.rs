//! What operators see: per-prefix stats and the hit ratio, `Cache::health()` for readiness
//! probes, and (with the `metrics` feature) exact counter values through a test recorder,
//! after known sequences of hits, misses, null hits, invalidations and faults with Redis
//! down. The spans are checked in `test_spans.rs`.

mod common;

use common::{test_config, RedisServer};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use std::time::Duration;

#[redcache::cached(prefix = "o:price", ttl = 60, skip(calls))]
async fn price(sku: u64, calls: &AtomicUsize) -> u64 {
    calls.fetch_add(1, SeqCst);
    sku * 100
}

#[redcache::cached(prefix = "o:user", ttl = 60, skip(calls))]
async fn user(id: u64, calls: &AtomicUsize) -> Option<String> {
    calls.fetch_add(1, SeqCst);
    (id != 0).then(|| format!("user {id}"))
}

/// Known traffic: `o:price` misses once and hits twice, then a `put!` stores one of its
/// entries; `o:user` misses twice (a value and a `None`) and is served the cached `None`
/// once.
async fn traffic(cache: &redcache::Cache) {
    let calls = AtomicUsize::new(0);
    cache
        .scope(async {
            for _ in 0..3 {
                assert_eq!(price(1, &calls).await, 100);
            }
            assert_eq!(user(7, &calls).await.as_deref(), Some("user 7"));
            assert_eq!(user(0, &calls).await, None);
            assert_eq!(user(0, &calls).await, None);
            redcache::put!(price(2, _), 250).await.unwrap();
        })
        .await;
    assert_eq!(calls.load(SeqCst), 3);
}

#[cfg(feature = "metrics")]
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

on_both_stores! {
    async fn stats_are_kept_per_prefix_with_a_hit_ratio(b: Backend) {
        traffic(&b.cache).await;
        let by_prefix = b.cache.stats_by_prefix();
        let names: Vec<&str> = by_prefix.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(names, ["o:price", "o:user"], "{}", b.name());
        let (price, user) = (&by_prefix[0].1, &by_prefix[1].1);
        // (The `put!`'s store counts under its function's prefix.)
        assert_eq!((price.misses, price.hits, price.null_hits, price.stores), (1, 2, 0, 2));
        assert_eq!((user.misses, user.hits, user.null_hits, user.stores), (2, 0, 1, 2));
        assert_eq!(price.hit_ratio(), Some(2.0 / 3.0));
        assert_eq!(user.hit_ratio(), Some(1.0 / 3.0));
        let total = b.cache.stats();
        assert_eq!((total.misses, total.hits, total.null_hits, total.stores), (3, 2, 1, 4));
        assert_eq!(total.hit_ratio(), Some(0.5));
        assert_eq!(b.cache.scope(async { redcache::stats_by_prefix() }).await, by_prefix);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_the_last_fault_and_recovers() {
    let server = RedisServer::start();
    let cache = server
        .cache_with(
            test_config()
                .url(server.url())
                .op_timeout(Duration::from_millis(200))
                .breaker_threshold(3),
        )
        .await;
    let health = cache.health();
    assert!(health.remote && health.is_ready() && health.last_fault.is_none());
    let calls = AtomicUsize::new(0);
    server.pause();
    let before = std::time::SystemTime::now();
    assert_eq!(cache.scope(price(5, &calls)).await, 500, "fails open");
    let health = cache.health();
    assert!(!health.is_ready());
    assert!(health.consecutive_faults >= 1, "{health:?}");
    let fault = health.last_fault.clone().expect("a fault was recorded");
    // Our operation timeout or the connection's own, whichever fires first.
    assert!(
        fault.error.contains("did not answer") || fault.error.contains("timed out"),
        "{fault:?}"
    );
    assert!(fault.at >= before);
    for _ in 0..3 {
        cache.scope(price(5, &calls)).await;
    }
    assert!(cache.health().breaker_open);
    server.resume();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !cache.health().is_ready() {
        assert!(std::time::Instant::now() < deadline, "{:?}", cache.health());
        cache.scope(price(6, &calls)).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let health = cache.health();
    assert!(!health.breaker_open && health.consecutive_faults == 0);
    // The last fault is still reported: the latest of the outage's timeouts.
    let last = health.last_fault.expect("still reported");
    assert!(
        last.error.contains("did not answer") || last.error.contains("timed out"),
        "{last:?}"
    );
    assert!(last.at >= fault.at);
}

/// A store fault a direct operation returns (`Cache::get` while Redis does not answer) is
/// one of the faults in a row `Health` counts, and the one it reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_a_fault_a_direct_operation_returned() {
    let server = RedisServer::start();
    let cache = server
        .cache_with(
            test_config()
                .url(server.url())
                .op_timeout(Duration::from_millis(200)),
        )
        .await;
    server.pause();
    let err = cache
        .get::<u64>("k")
        .await
        .expect_err("Redis does not answer");
    let health = cache.health();
    assert!(health.consecutive_faults >= 1, "{health:?}");
    let fault = health.last_fault.expect("the fault is reported");
    assert_eq!(fault.error, err.to_string());
    server.resume();
}

/// `Health::connected`: not yet for a lazy cache before its first call (which is ready:
/// that call connects), then yes; no once a call found the connection dropped and Redis
/// refused a new one; yes again once a call reconnected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_says_whether_redis_is_connected() {
    assert!(redcache::Cache::memory().health().connected);
    let mut server = RedisServer::start();
    let cache = server
        .cache_with(
            test_config()
                .url(server.url())
                .op_timeout(Duration::from_millis(200))
                .lazy(true),
        )
        .await;
    let health = cache.health();
    assert!(!health.connected && health.is_ready(), "{health:?}");
    let calls = AtomicUsize::new(0);
    assert_eq!(cache.scope(price(1, &calls)).await, 100);
    assert!(cache.health().connected, "{:?}", cache.health());

    server.stop();
    assert_eq!(cache.scope(price(2, &calls)).await, 200, "fails open");
    let health = cache.health();
    assert!(!health.connected && !health.is_ready(), "{health:?}");

    server.restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !cache.health().connected {
        assert!(std::time::Instant::now() < deadline, "{:?}", cache.health());
        tokio::time::sleep(Duration::from_millis(50)).await;
        cache.scope(price(3, &calls)).await;
    }
    assert!(cache.health().is_ready(), "{:?}", cache.health());
}

#[cfg(feature = "metrics")]
mod with_metrics {
    use super::*;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
    use metrics_util::MetricKind;

    /// The metric `name` with exactly `labels`, as the recorder kept it.
    fn value<'a>(
        snapshot: &'a [(metrics_util::CompositeKey, DebugValue)],
        kind: MetricKind,
        name: &str,
        labels: &[(&str, &str)],
    ) -> Option<&'a DebugValue> {
        snapshot.iter().find_map(|(key, value)| {
            let (k, key) = (key.kind(), key.key());
            let mut got: Vec<(&str, &str)> = key.labels().map(|l| (l.key(), l.value())).collect();
            got.sort();
            let mut want = labels.to_vec();
            want.sort();
            (k == kind && key.name() == name && got == want).then_some(value)
        })
    }

    /// What the recorder holds now (histograms are drained).
    fn snapshot(snapshotter: &Snapshotter) -> Vec<(metrics_util::CompositeKey, DebugValue)> {
        snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(key, _, _, value)| (key, value))
            .collect()
    }

    /// A cache whose breaker opens after two faults of at most 200 ms each.
    fn outage_config(server: &RedisServer) -> redcache::ConfigBuilder {
        test_config()
            .url(server.url())
            .op_timeout(Duration::from_millis(200))
            .breaker_threshold(2)
    }

    fn counter(
        snapshot: &[(metrics_util::CompositeKey, DebugValue)],
        name: &str,
        labels: &[(&str, &str)],
    ) -> u64 {
        match value(snapshot, MetricKind::Counter, name, labels) {
            Some(DebugValue::Counter(n)) => *n,
            other => panic!("{name} {labels:?}: {other:?}"),
        }
    }

    /// `redcache_breaker_open` is one gauge for the process: it stays 1 while one cache's
    /// breaker is open, however many operations another, healthy cache makes (each thread
    /// sets the gauge again every 4,096 operations).
    #[test]
    fn the_breaker_gauge_stays_open_while_any_cache_has_its_breaker_open() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let mut server = RedisServer::start();
        let other = RedisServer::start();
        metrics::with_local_recorder(&recorder, || {
            runtime().block_on(async {
                let down = server.cache_with(outage_config(&server)).await;
                let healthy = other.cache().await;
                server.stop();
                let calls = AtomicUsize::new(0);
                for _ in 0..2 {
                    assert_eq!(down.scope(price(2, &calls)).await, 200, "fails open");
                }
                assert!(down.stats().breaker_open);
                for i in 0..5_000 {
                    healthy.scope(price(i % 10, &calls)).await;
                }
                assert!(healthy.stats().hits > 4_096, "{:?}", healthy.stats());
                assert!(down.stats().breaker_open);
                assert_eq!(breaker_gauge(&snapshotter), Some(1.0));
                // Dropped, the cache no longer counts.
                drop(down);
                assert_eq!(breaker_gauge(&snapshotter), Some(0.0));
            })
        });
    }

    #[test]
    fn counters_have_exact_values_after_known_traffic_and_an_outage() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let mut server = RedisServer::start();
        // Read while the cache lives: one dropped no longer counts as an open breaker.
        let snapshot = metrics::with_local_recorder(&recorder, || {
            runtime().block_on(async {
                let cache = server.cache_with(outage_config(&server)).await;
                traffic(&cache).await;
                let calls = AtomicUsize::new(0);
                cache
                    .scope(redcache::invalidate!(price(1, _)))
                    .await
                    .unwrap();
                cache.invalidate_group("o:none").await.unwrap();
                server.stop();
                for _ in 0..2 {
                    assert_eq!(cache.scope(price(2, &calls)).await, 200, "fails open");
                }
                assert!(cache.stats().breaker_open);
                snapshot(&snapshotter)
            })
        });
        let requests = |prefix, result| {
            counter(
                &snapshot,
                "redcache_requests_total",
                &[("prefix", prefix), ("result", result)],
            )
        };
        assert_eq!(requests("o:price", "hit"), 2);
        // One miss before the outage, two during it (they read nothing and ran the body).
        assert_eq!(requests("o:price", "miss"), 3);
        assert_eq!(requests("o:user", "miss"), 2);
        assert_eq!(requests("o:user", "null_hit"), 1);
        assert_eq!(
            counter(&snapshot, "redcache_stores_total", &[("prefix", "o:price")]),
            2,
            "a miss's and a put!'s"
        );
        assert_eq!(
            counter(&snapshot, "redcache_stores_total", &[("prefix", "o:user")]),
            2
        );
        assert_eq!(counter(&snapshot, "redcache_invalidations_total", &[]), 2);
        let faults: u64 = ["connection", "timeout"]
            .iter()
            .filter_map(|kind| {
                match value(
                    &snapshot,
                    MetricKind::Counter,
                    "redcache_faults_total",
                    &[("kind", kind)],
                ) {
                    Some(DebugValue::Counter(n)) => Some(*n),
                    _ => None,
                }
            })
            .sum();
        assert_eq!(faults, 2, "both reads of the outage faulted: {snapshot:?}");
        match value(&snapshot, MetricKind::Gauge, "redcache_breaker_open", &[]) {
            Some(DebugValue::Gauge(open)) => assert_eq!(open.into_inner(), 1.0),
            other => panic!("{other:?}"),
        }
        match value(
            &snapshot,
            MetricKind::Histogram,
            "redcache_call_duration_seconds",
            &[("prefix", "o:price"), ("result", "hit")],
        ) {
            Some(DebugValue::Histogram(samples)) => {
                assert_eq!(samples.len(), 2);
                // Each sample is the call's duration, read when the recorder takes it.
                assert!(
                    samples
                        .iter()
                        .all(|s| s.into_inner() > 0.0 && s.into_inner() < 10.0),
                    "{samples:?}"
                );
            }
            other => panic!("{other:?}"),
        }
        match value(
            &snapshot,
            MetricKind::Histogram,
            "redcache_call_duration_seconds",
            &[("prefix", "o:price"), ("result", "fault")],
        ) {
            Some(DebugValue::Histogram(samples)) => assert_eq!(samples.len(), 2),
            other => panic!("{other:?}"),
        }
    }

    /// `redcache_breaker_open` as the recorder holds it now.
    fn breaker_gauge(snapshotter: &Snapshotter) -> Option<f64> {
        let snapshot = snapshot(snapshotter);
        match value(&snapshot, MetricKind::Gauge, "redcache_breaker_open", &[]) {
            Some(DebugValue::Gauge(open)) => Some(open.into_inner()),
            None => None,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_breaker_gauge_follows_the_breaker_through_an_outage_and_back() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let server = RedisServer::start();
        metrics::with_local_recorder(&recorder, || {
            runtime().block_on(async {
                let cache = server
                    .cache_with(outage_config(&server).breaker_cooldown(Duration::from_millis(200)))
                    .await;
                let calls = AtomicUsize::new(0);
                // The first operation sets it, though the state is the initial one.
                cache.scope(price(1, &calls)).await;
                assert_eq!(breaker_gauge(&snapshotter), Some(0.0));
                server.pause();
                for _ in 0..2 {
                    assert_eq!(cache.scope(price(2, &calls)).await, 200, "fails open");
                }
                assert!(cache.stats().breaker_open);
                assert_eq!(breaker_gauge(&snapshotter), Some(1.0));
                server.resume();
                let deadline = std::time::Instant::now() + Duration::from_secs(5);
                while cache.stats().breaker_open {
                    assert!(std::time::Instant::now() < deadline, "{:?}", cache.stats());
                    cache.scope(price(3, &calls)).await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                assert_eq!(breaker_gauge(&snapshotter), Some(0.0), "closed again");
            })
        });
    }
}
