//! A cache outlives the tokio runtime that created it: the way people test code that uses
//! redcache (one shared `init` called from many `#[tokio::test]`s, each with its own
//! runtime), and programs that `block_on` several runtimes in turn (CLI tools, sync
//! wrappers). redis-rs drives a connection with tasks of the runtime it was made on; when
//! that runtime is gone, the next call makes a new connection on redcache's own connection
//! thread instead of faulting. A connection asked for on a current-thread runtime is made
//! on that thread from the start (a cluster's excepted), so it does not stall while that
//! runtime idles.

mod common;

use common::{test_config, RedisCluster, RedisSentinel, RedisServer};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use tokio::sync::OnceCell;

#[redcache::cached(prefix = "rt:item", ttl = 60, skip(calls))]
async fn item(id: u64, calls: &AtomicUsize) -> u64 {
    calls.fetch_add(1, SeqCst);
    id * 10
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// One "test": a miss then a hit for `id`, asserted through the body's run count.
async fn miss_then_hit(cache: &redcache::Cache, id: u64) {
    let calls = AtomicUsize::new(0);
    assert_eq!(cache.scope(item(id, &calls)).await, id * 10);
    assert_eq!(cache.scope(item(id, &calls)).await, id * 10);
    assert_eq!(calls.load(SeqCst), 1, "id {id}: a miss, then a hit");
}

/// A cache made on one runtime, then used from three more in turn, each dropped after its
/// calls: every call after the first runtime is gone still caches, and nothing faults.
fn outlives_its_runtime(config: redcache::ConfigBuilder) {
    let first = runtime();
    let cache = first
        .block_on(redcache::Cache::connect(config.build()))
        .unwrap();
    first.block_on(miss_then_hit(&cache, 1));
    drop(first);
    for id in 2..5 {
        let rt = runtime();
        rt.block_on(miss_then_hit(&cache, id));
        drop(rt);
    }
    let stats = cache.stats();
    assert_eq!((stats.misses, stats.hits), (4, 4), "{stats:?}");
    assert_eq!(
        stats.faults, 0,
        "no call faulted because a runtime was gone"
    );
    assert!(!stats.breaker_open);
}

#[test]
fn a_cache_outlives_the_runtime_that_created_it() {
    let server = RedisServer::start();
    outlives_its_runtime(test_config().url(server.url()));
}

#[test]
fn a_cache_with_a_local_tier_outlives_the_runtime_that_created_it() {
    let server = RedisServer::start();
    outlives_its_runtime(test_config().url(server.url()).local_capacity(100));
}

#[test]
fn a_cluster_cache_outlives_the_runtime_that_created_it() {
    let cluster = RedisCluster::start(3, 0);
    outlives_its_runtime(test_config().cluster_nodes(cluster.urls()));
}

#[test]
fn a_lazy_cache_outlives_the_runtime_that_created_it() {
    let server = RedisServer::start();
    outlives_its_runtime(test_config().url(server.url()).lazy(true));
}

/// A cache connected on a current-thread runtime that stays alive but idle (a set-up
/// runtime kept aside, or a `#[tokio::test]` whose thread blocks), then used from a
/// multi-thread runtime: the connection does not wait for the idle runtime to run its
/// tasks, so every call is answered by Redis in time.
fn serves_while_its_runtime_idles(config: redcache::ConfigBuilder) {
    let setup = runtime();
    let config = config.op_timeout(std::time::Duration::from_millis(500));
    let cache = setup
        .block_on(redcache::Cache::connect(config.build()))
        .unwrap();
    let service = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    service.block_on(async {
        miss_then_hit(&cache, 1).await;
        miss_then_hit(&cache, 2).await;
    });
    let stats = cache.stats();
    assert_eq!(
        (stats.misses, stats.hits, stats.faults),
        (2, 2, 0),
        "{stats:?}"
    );
    drop(setup);
}

#[test]
fn a_cache_serves_while_the_runtime_that_created_it_idles() {
    let server = RedisServer::start();
    serves_while_its_runtime_idles(test_config().url(server.url()));
}

#[test]
fn a_sentinel_cache_serves_while_the_runtime_that_created_it_idles() {
    let sentinel = RedisSentinel::start();
    serves_while_its_runtime_idles(sentinel.configure(test_config()));
}

/// The pattern users write: a `OnceCell`-guarded `redcache::init` called from every
/// `#[tokio::test]`, each of which has its own runtime. Ten such tests, run one after
/// another on threads of their own as the test harness would, then ten at once.
#[test]
fn many_tokio_tests_share_one_init() {
    static INIT: OnceCell<()> = OnceCell::const_new();
    let server = RedisServer::start();
    let url = server.url();
    let one_test = move |id: u64| {
        let url = url.clone();
        std::thread::spawn(move || {
            runtime().block_on(async {
                INIT.get_or_init(|| async {
                    redcache::init(test_config().url(url).build())
                        .await
                        .unwrap()
                })
                .await;
                let calls = AtomicUsize::new(0);
                assert_eq!(item(id, &calls).await, id * 10);
                assert_eq!(item(id, &calls).await, id * 10);
                assert_eq!(calls.load(SeqCst), 1, "test {id}: a miss, then a hit");
            })
        })
    };
    for id in 100..110 {
        one_test(id).join().expect("a test failed");
    }
    let at_once: Vec<_> = (200..210).map(one_test).collect();
    for test in at_once {
        test.join().expect("a test failed");
    }
    let stats = redcache::stats();
    assert_eq!((stats.misses, stats.hits), (20, 20), "{stats:?}");
    assert_eq!(stats.faults, 0, "{stats:?}");
    let calls = Arc::new(AtomicUsize::new(0));
    runtime().block_on(async {
        assert_eq!(item(100, &calls).await, 1000);
    });
    assert_eq!(
        calls.load(SeqCst),
        0,
        "still a hit from yet another runtime"
    );
    // A second `init` is refused as such, before it connects (here to nothing there).
    let again = runtime().block_on(redcache::init(
        test_config().url("redis://127.0.0.1:1").build(),
    ));
    assert!(
        matches!(again, Err(redcache::Error::AlreadyInitialized)),
        "{again:?}"
    );
}

/// A connection that drops while a caller on a current-thread runtime is the one to see it
/// is made again where every caller can use it: such a runtime runs its tasks only inside
/// its own `block_on`, so a connection made there would hang the service's other calls.
#[test]
fn a_connection_replaced_from_a_current_thread_runtime_serves_every_runtime() {
    let server = RedisServer::start();
    let service = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cache = service
        .block_on(redcache::Cache::connect(
            test_config().url(server.url()).build(),
        ))
        .unwrap();
    service.block_on(miss_then_hit(&cache, 1));
    // The cache's connection.
    assert!(server.kill_clients() >= 1);
    // A sync wrapper's runtime: it sees the drop first, then stays idle (not dropped).
    let wrapper = runtime();
    wrapper.block_on(miss_then_hit(&cache, 2));
    service.block_on(async {
        for id in 3..6 {
            miss_then_hit(&cache, id).await;
        }
    });
    let stats = cache.stats();
    assert_eq!(
        (stats.misses, stats.hits, stats.faults),
        (5, 5, 0),
        "{stats:?}"
    );
    drop(wrapper);
}
