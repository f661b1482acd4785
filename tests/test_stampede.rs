//! Stampede control: a leader that panics or is cancelled does not strand its waiters,
//! `lock` makes several OS processes run the body once, a crashed holder's lease expires,
//! and early refresh keeps a hot key from expiring under steady load.

mod common;

use common::{test_config, RedisServer};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Yields until `counter` reaches `n` (or 10 s pass, so a bug fails instead of hanging).
async fn until(counter: &AtomicUsize, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while counter.load(SeqCst) < n {
        assert!(Instant::now() < deadline, "never reached {n}");
        tokio::task::yield_now().await;
    }
}

#[redcache::cached(prefix = "s:flaky", ttl = 60, skip(calls, cache, callers))]
async fn panics_first(
    id: u64,
    calls: &AtomicUsize,
    cache: &redcache::Cache,
    callers: usize,
) -> u64 {
    if calls.fetch_add(1, SeqCst) == 0 {
        // Every other caller is waiting on this flight when the leader dies.
        common::until_waiting(cache, callers - 1).await;
        panic!("the database connection broke");
    }
    id * 2
}

on_both_stores! {
    async fn a_panicking_leader_does_not_strand_its_waiters(b: Backend) {
        const CALLERS: usize = 50;
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..CALLERS {
            let (cache, calls) = (b.cache.clone(), calls.clone());
            tasks.push(tokio::spawn(async move {
                cache.scope(panics_first(21, &calls, &cache, CALLERS)).await
            }));
        }
        let (mut answered, mut panicked) = (0, 0);
        for task in tasks {
            match task.await {
                Ok(v) => {
                    assert_eq!(v, 42);
                    answered += 1;
                }
                Err(err) => {
                    // The body's own panic (not the barrier's, had the waiters not joined).
                    let panic = err.into_panic();
                    assert_eq!(
                        panic.downcast_ref::<&str>(),
                        Some(&"the database connection broke")
                    );
                    panicked += 1;
                }
            }
        }
        assert_eq!((answered, panicked), (CALLERS - 1, 1));
        assert_eq!(calls.load(SeqCst), 2, "one waiter took over; the rest shared its result");
    }
}

#[redcache::cached(prefix = "s:hang", ttl = 60, skip(calls))]
async fn hangs_first(id: u64, calls: &AtomicUsize) -> u64 {
    if calls.fetch_add(1, SeqCst) == 0 {
        std::future::pending::<()>().await;
    }
    id * 2
}

on_both_stores! {
    async fn a_cancelled_leader_does_not_strand_its_waiters(b: Backend) {
        const WAITERS: usize = 20;
        let calls = Arc::new(AtomicUsize::new(0));
        let spawn = |cache: redcache::Cache| {
            let calls = calls.clone();
            tokio::spawn(async move { cache.scope(hangs_first(21, &calls)).await })
        };
        let leader = spawn(b.cache.clone());
        until(&calls, 1).await; // the leader is in its body
        let waiters: Vec<_> = (0..WAITERS).map(|_| spawn(b.cache.clone())).collect();
        // Every waiter waits on the leader's flight when it is cancelled.
        common::until_waiting(&b.cache, WAITERS).await;
        leader.abort();
        assert!(leader.await.unwrap_err().is_cancelled());
        for waiter in waiters {
            assert_eq!(waiter.await.unwrap(), 42);
        }
        assert_eq!(calls.load(SeqCst), 2);
    }
}

/// The body of the cross-process test: counts its runs in Redis, then holds until every
/// process is inside its call (up to 10 s), so that without the lock each of them would
/// run it. The lease outlasts that wait: a child that starts late on a loaded machine must
/// find the lock held, not expired.
#[redcache::cached(prefix = "s:locked", ttl = 60, lock_ms = 15000)]
async fn locked_report(id: u64) -> u64 {
    let mut conn = common::child_conn().await;
    let _: u64 = redis::cmd("INCR")
        .arg("test:runs")
        .query_async(&mut conn)
        .await
        .unwrap();
    let processes: u64 = std::env::var("REDCACHE_CHILDREN").unwrap().parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let entered: u64 = redis::cmd("GET")
            .arg("test:entered")
            .query_async(&mut conn)
            .await
            .unwrap();
        if entered >= processes {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    id * 2
}

/// Run by `lock_runs_the_body_once_across_processes` in each child process.
#[tokio::test]
#[ignore = "run as a child process by lock_runs_the_body_once_across_processes"]
async fn child_calls_locked_report() {
    let url = common::child_url();
    let cache = redcache::Cache::connect(test_config().url(url).build())
        .await
        .unwrap();
    let mut conn = common::child_conn().await;
    let _: u64 = redis::cmd("INCR")
        .arg("test:entered")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(cache.scope(locked_report(7)).await, 14);
}

#[tokio::test]
async fn lock_runs_the_body_once_across_processes() {
    const PROCESSES: usize = 4;
    let server = RedisServer::start();
    let env = [("REDCACHE_CHILDREN", PROCESSES.to_string())];
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| common::spawn_child("child_calls_locked_report", &server.url(), &env))
        .collect();
    for child in children {
        common::child_succeeded(child);
    }
    let mut conn = server.conn().await;
    let runs: u64 = redis::cmd("GET")
        .arg("test:runs")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(runs, 1, "{PROCESSES} processes, one body run");
    let leases: Vec<String> = redis::cmd("KEYS")
        .arg("*:lock")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(leases.is_empty(), "the lease was released: {leases:?}");
}

#[redcache::cached(prefix = "s:lease", ttl = 60, lock_ms = 2000, skip(calls))]
async fn leased(id: u64, calls: &AtomicUsize) -> u64 {
    calls.fetch_add(1, SeqCst);
    id
}

/// A process took the lease of `key` for `ms` and died: nobody will release it.
async fn crashed_holder(conn: &mut redis::aio::MultiplexedConnection, key: &str, ms: u64) {
    let _: () = redis::cmd("SET")
        .arg(format!("{key}:lock"))
        .arg("crashed")
        .arg("PX")
        .arg(ms)
        .query_async(conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_crashed_holders_lease_expires() {
    let server = RedisServer::start();
    let cache = server.cache().await;
    let key = cache.scope(async { redcache::key!(leased(1, _)) }).await;
    // Timed from just before the lease is taken: the call cannot end before the lease
    // does, 300 ms after.
    let mut conn = server.conn().await;
    let start = Instant::now();
    crashed_holder(&mut conn, &key, 300).await;
    let calls = AtomicUsize::new(0);
    assert_eq!(cache.scope(leased(1, &calls)).await, 1);
    let waited = start.elapsed();
    assert_eq!(calls.load(SeqCst), 1);
    assert!(
        waited >= Duration::from_millis(300),
        "it waited for the lease: {waited:?}"
    );
    assert!(
        waited < Duration::from_millis(2000),
        "not for its own lock_ms: {waited:?}"
    );
    assert_eq!(cache.stats().lock_timeouts, 0);
}

#[redcache::cached(prefix = "s:long-lease", ttl = 60, lock_ms = 1500, skip(calls))]
async fn long_leased(id: u64, calls: &AtomicUsize) -> u64 {
    calls.fetch_add(1, SeqCst);
    id
}

/// A caller that waited out its whole `lock_ms` for a crashed holder's lease, longer here
/// than `max_fill_time`, still stores what its body computed: the fill's time counts from
/// the read it acts on, made after the wait, not from before the wait.
#[tokio::test]
async fn a_fill_after_a_long_wait_for_a_lease_is_stored() {
    let server = RedisServer::start();
    let config = common::test_config()
        .url(server.url())
        .op_timeout(Duration::from_millis(500))
        .max_fill_time(Duration::from_secs(1));
    let cache = server.cache_with(config).await;
    let key = cache
        .scope(async { redcache::key!(long_leased(1, _)) })
        .await;
    // It outlasts this caller's `lock_ms`.
    crashed_holder(&mut server.conn().await, &key, 5000).await;
    let calls = AtomicUsize::new(0);
    assert_eq!(cache.scope(long_leased(1, &calls)).await, 1);
    let stats = cache.stats();
    assert_eq!((stats.lock_timeouts, stats.conflicts), (1, 0), "{stats:?}");
    // Stored: the next call is a hit.
    assert_eq!(cache.scope(long_leased(1, &calls)).await, 1);
    assert_eq!(calls.load(SeqCst), 1);
}

/// A lease taken by a `SET NX` whose reply came too late (the caller timed out, or was
/// dropped) is given back: otherwise nobody holds it, and every process's next miss of the
/// key waits out the whole lease.
#[tokio::test]
async fn a_lease_taken_after_its_caller_timed_out_is_given_back() {
    let server = RedisServer::start();
    let config = || {
        test_config()
            .url(server.url())
            .op_timeout(Duration::from_millis(100))
            .build()
    };
    let (first, second) = (
        redcache::Cache::connect(config()).await.unwrap(),
        redcache::Cache::connect(config()).await.unwrap(),
    );
    // A connection that waits for its replies as long as the pause lasts.
    let mut conn = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection_with_config(
            &redis::AsyncConnectionConfig::new().set_response_timeout(None),
        )
        .await
        .unwrap();
    // Writes wait 600 ms: the first cache's `SET NX` for the lease times out, and Redis
    // runs it when the pause ends.
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(600)
        .arg("WRITE")
        .query_async(&mut conn)
        .await
        .unwrap();
    let calls = AtomicUsize::new(0);
    assert_eq!(first.scope(leased(3, &calls)).await, 3);
    assert_eq!(calls.load(SeqCst), 1, "the body ran without the lease");
    // A write of this connection waits for the pause to end; the first cache's commands,
    // paused before it, have run by then.
    let _: () = redis::cmd("SET")
        .arg("test:resumed")
        .arg(1)
        .query_async(&mut conn)
        .await
        .unwrap();
    let start = Instant::now();
    assert_eq!(second.scope(leased(3, &calls)).await, 3);
    let waited = start.elapsed();
    assert_eq!(calls.load(SeqCst), 2);
    assert_eq!(
        second.stats().lock_timeouts,
        0,
        "the lease was free: waited {waited:?}"
    );
    assert!(
        waited < Duration::from_millis(1500),
        "not for the lease's 2 s: {waited:?}"
    );
}

#[redcache::cached(
    prefix = "s:hot",
    ttl = 1,
    jitter = 0,
    early_refresh = 1.0,
    skip(calls)
)]
async fn hot(id: u64, calls: &AtomicUsize) -> u64 {
    calls.fetch_add(1, SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    id
}

#[redcache::cached(prefix = "s:cold", ttl = 1, jitter = 0, skip(calls))]
async fn plain_hot(id: u64, calls: &AtomicUsize) -> u64 {
    calls.fetch_add(1, SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn early_refresh_keeps_a_hot_key_from_expiring_under_load() {
    let server = RedisServer::start();
    let (early, control) = (server.cache().await, server.cache().await);
    let (early_calls, control_calls) =
        (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let run_for = Duration::from_millis(3_500);
    // Separate loops for each function: a miss of one must not hold up reads of the other.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (early, early_calls) = (early.clone(), early_calls.clone());
        tasks.push(tokio::spawn(async move {
            let start = Instant::now();
            while start.elapsed() < run_for {
                assert_eq!(early.scope(hot(1, &early_calls)).await, 1);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
        let (control, control_calls) = (control.clone(), control_calls.clone());
        tasks.push(tokio::spawn(async move {
            let start = Instant::now();
            while start.elapsed() < run_for {
                assert_eq!(control.scope(plain_hot(1, &control_calls)).await, 1);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let (e, c) = (early.stats(), control.stats());
    eprintln!("early refresh: {e:?}\nwithout: {c:?}");
    assert!(
        c.misses >= 3,
        "the 1 s entry expired under load without early refresh: {c:?}"
    );
    assert!(e.refreshes >= 2, "refreshed before each expiry: {e:?}");
    assert!(
        e.misses < c.misses && e.misses <= 2,
        "the hot key (almost) never expired: {e:?} vs {c:?}"
    );
    assert_eq!(
        early_calls.load(SeqCst) as u64,
        e.misses + e.refreshes,
        "the body ran only for misses and refreshes"
    );
}
