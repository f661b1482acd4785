//! Defects found by reading the runtime against its promises, each pinned by a test that
//! failed before its fix: no caller waits in a convoy, a lease dies with its holder, a
//! stalled leader cannot hold its followers forever, an early refresh leads its key's
//! flight, an oversize result is still shared, an unfenced result never reaches a caller
//! that saw an invalidation (of its key, or of its group), `invalidate_prefix` never
//! weakens a fence, and a full in-process store still fences a miss after evicting what a
//! write left.

mod common;

use common::{is_tombstone, test_config, RedisServer};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Barrier;

/// Yields until `counter` reaches `n` (or 10 s pass, so a bug fails instead of hanging).
async fn until(counter: &AtomicUsize, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while counter.load(SeqCst) < n && Instant::now() < deadline {
        tokio::task::yield_now().await;
    }
    assert!(counter.load(SeqCst) >= n, "never reached {n}");
}

/// Counts how many bodies run at once, and the most that ever did.
#[derive(Default)]
struct Concurrency {
    now: AtomicUsize,
    peak: AtomicUsize,
    runs: AtomicUsize,
}

impl Concurrency {
    async fn run<T>(&self, body: impl std::future::Future<Output = T>) -> T {
        self.runs.fetch_add(1, SeqCst);
        let now = self.now.fetch_add(1, SeqCst) + 1;
        self.peak.fetch_max(now, SeqCst);
        let out = body.await;
        self.now.fetch_sub(1, SeqCst);
        out
    }
}

#[redcache::cached(prefix = "c:convoy", ttl = 60, lock, skip(c))]
async fn failing_locked(id: u64, c: &Concurrency) -> Result<u64, String> {
    c.run(tokio::time::sleep(Duration::from_millis(100))).await;
    Err(format!("the database is down ({id})"))
}

on_both_stores! {
    async fn callers_of_a_failing_locked_body_do_not_queue_one_after_another(b: Backend) {
        const CALLERS: usize = 20;
        let c = Arc::new(Concurrency::default());
        let start = Instant::now();
        let tasks: Vec<_> = (0..CALLERS)
            .map(|_| {
                let (cache, c) = (b.cache.clone(), c.clone());
                tokio::spawn(async move { cache.scope(failing_locked(1, &c)).await })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap(), Err("the database is down (1)".to_string()));
        }
        // Every caller runs the failing body itself (an `Err` is never shared) and, once
        // the first flight ended with nothing to share, all at once instead of in a queue.
        assert_eq!(c.runs.load(SeqCst), CALLERS, "{}", b.name());
        assert!(
            c.peak.load(SeqCst) >= CALLERS / 2,
            "bodies ran one after another (at most {} at once, {:?} in all) on {}",
            c.peak.load(SeqCst),
            start.elapsed(),
            b.name()
        );
    }
}

#[redcache::cached(prefix = "c:lease", ttl = 60, lock_ms = 5000, skip(entered, mode))]
async fn leased(id: u64, entered: &AtomicUsize, mode: &str) -> u64 {
    entered.fetch_add(1, SeqCst);
    match mode {
        "hang" => std::future::pending().await,
        "panic" => panic!("the handler panicked"),
        _ => id * 2,
    }
}

/// The lease of `leased(id)`, as the cache names it.
fn lease_key(id: u64) -> String {
    format!("{}:lock", redcache::key!(leased(id, _, _)))
}

on_both_stores! {
    async fn a_lease_is_released_when_its_holder_is_cancelled_or_panics(b: Backend) {
        for (id, mode) in [(1, "hang"), (2, "panic")] {
            let entered = Arc::new(AtomicUsize::new(0));
            let holder = {
                let (cache, entered) = (b.cache.clone(), entered.clone());
                tokio::spawn(async move { cache.scope(leased(id, &entered, mode)).await })
            };
            until(&entered, 1).await;
            if b.is_redis() && mode == "hang" {
                assert!(b.raw_get(&lease_key(id)).await.is_some(), "the holder took the lease");
            }
            if mode == "hang" {
                // A client that disconnects: the handler's future is dropped.
                holder.abort();
                assert!(holder.await.unwrap_err().is_cancelled());
            } else {
                assert!(holder.await.unwrap_err().is_panic());
            }
            if b.is_redis() {
                let deadline = Instant::now() + Duration::from_secs(2);
                while b.raw_get(&lease_key(id)).await.is_some() {
                    assert!(
                        Instant::now() < deadline,
                        "the {mode} holder's lease outlived it ({})",
                        b.name()
                    );
                    tokio::task::yield_now().await;
                }
            }
            // The next caller is not kept waiting for the lease's 5 s.
            let started = Instant::now();
            let got = b.cache.scope(leased(id, &AtomicUsize::new(0), "ok")).await;
            assert_eq!(got, id * 2);
            assert!(
                started.elapsed() < Duration::from_millis(2500),
                "waited {:?} for a dead holder's lease ({mode}, {})",
                started.elapsed(),
                b.name()
            );
        }
    }
}

#[redcache::cached(prefix = "c:stall", ttl = 60, skip(calls))]
async fn stalls_first(id: u64, calls: &AtomicUsize) -> u64 {
    if calls.fetch_add(1, SeqCst) == 0 {
        // Stuck, but not dropped: its future stays alive in a task that never ends.
        std::future::pending::<()>().await;
    }
    id * 2
}

on_both_stores! {
    async fn a_stalled_leader_holds_its_followers_at_most_max_fill_time(b: Backend) {
        let cache = b
            .cache_with(
                test_config()
                    .op_timeout(Duration::from_millis(200))
                    .max_fill_time(Duration::from_millis(800)),
            )
            .await;
        let calls = Arc::new(AtomicUsize::new(0));
        let leader = {
            let (cache, calls) = (cache.clone(), calls.clone());
            tokio::spawn(async move { cache.scope(stalls_first(21, &calls)).await })
        };
        until(&calls, 1).await;
        let started = Instant::now();
        let follower = tokio::time::timeout(
            Duration::from_secs(10),
            cache.scope(stalls_first(21, &calls)),
        )
        .await
        .expect("a follower waited on a stalled leader without bound");
        assert_eq!(follower, 42);
        assert_eq!(calls.load(SeqCst), 2, "the follower ran the body itself");
        assert!(started.elapsed() >= Duration::from_millis(700), "it waited first");
        leader.abort();
    }
}

/// A body that the test holds until it says so.
struct Hold {
    entered: Barrier,
    release: Barrier,
}

impl Hold {
    fn new() -> Arc<Hold> {
        Arc::new(Hold {
            entered: Barrier::new(2),
            release: Barrier::new(2),
        })
    }
}

#[redcache::cached(
    prefix = "c:refresh",
    ttl = 1,
    jitter = 0,
    early_refresh = 1e12,
    skip(calls, hold)
)]
async fn refreshed(id: u64, calls: &AtomicUsize, hold: Option<&Hold>) -> u64 {
    let n = calls.fetch_add(1, SeqCst) as u64;
    if let Some(hold) = hold {
        hold.entered.wait().await;
        hold.release.wait().await;
    }
    id * 100 + n
}

on_both_stores! {
    async fn an_early_refresh_leads_its_keys_flight(b: Backend) {
        let calls = Arc::new(AtomicUsize::new(0));
        assert_eq!(b.cache.scope(refreshed(1, &calls, None)).await, 100);
        // The next reader refreshes early (β is huge) and holds in its body.
        let hold = Hold::new();
        let refresher = {
            let (cache, calls, hold) = (b.cache.clone(), calls.clone(), hold.clone());
            tokio::spawn(async move { cache.scope(refreshed(1, &calls, Some(&hold))).await })
        };
        hold.entered.wait().await;
        assert_eq!(b.cache.stats().refreshes, 1);
        // Meanwhile the entry expires: a caller now misses, and must wait for the
        // refresh rather than run the body once more.
        let deadline = Instant::now() + Duration::from_secs(5);
        while b.cache.ttl(&redcache::key!(refreshed(1, _, _))).await.unwrap().is_some() {
            assert!(Instant::now() < deadline, "the entry never expired");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let missed = {
            let (cache, calls) = (b.cache.clone(), calls.clone());
            tokio::spawn(async move { cache.scope(refreshed(1, &calls, None)).await })
        };
        let misses = b.cache.stats().misses;
        // Before the fix the late caller led a flight of its own and ran the body (a third
        // run): it must wait on the refresh's.
        common::until_waiting(&b.cache, 1).await;
        hold.release.wait().await;
        assert_eq!(refresher.await.unwrap(), 101);
        assert_eq!(missed.await.unwrap(), 101, "the miss got the refresh's value ({})", b.name());
        assert_eq!(calls.load(SeqCst), 2, "no third run ({})", b.name());
        assert_eq!(b.cache.stats().misses, misses, "{}", b.name());
    }
}

#[redcache::cached(prefix = "c:big", ttl = 60, skip(calls, cache))]
async fn big(id: u64, calls: &AtomicUsize, cache: &redcache::Cache, callers: usize) -> String {
    big_body(id, calls, cache, callers).await
}

#[redcache::cached(
    prefix = "c:big-grouped",
    group = "c-big",
    ttl = 60,
    skip(calls, cache)
)]
async fn big_in_group(
    id: u64,
    calls: &AtomicUsize,
    cache: &redcache::Cache,
    callers: usize,
) -> String {
    big_body(id, calls, cache, callers).await
}

async fn big_body(id: u64, calls: &AtomicUsize, cache: &redcache::Cache, callers: usize) -> String {
    calls.fetch_add(1, SeqCst);
    // Every other caller waits on this flight.
    common::until_waiting(cache, callers - 1).await;
    "x".repeat(4096 + id as usize)
}

on_both_stores! {
    async fn a_result_over_max_value_bytes_is_shared_with_the_waiters(b: Backend) {
        const CALLERS: usize = 20;
        let cache = b.cache_with(test_config().max_value_bytes(1024)).await;
        // Also in a group that has no generation yet (none is written: nothing is stored).
        for grouped in [false, true] {
            let calls = Arc::new(AtomicUsize::new(0));
            let tasks: Vec<_> = (0..CALLERS)
                .map(|_| {
                    let (cache, calls) = (cache.clone(), calls.clone());
                    tokio::spawn(async move {
                        cache
                            .scope(async {
                                match grouped {
                                    false => big(1, &calls, &cache, CALLERS).await,
                                    true => big_in_group(1, &calls, &cache, CALLERS).await,
                                }
                            })
                            .await
                    })
                })
                .collect();
            for task in tasks {
                assert_eq!(task.await.unwrap().len(), 4097);
            }
            let runs = calls.load(SeqCst);
            assert_eq!(runs, 1, "one body run for every waiter ({}, grouped: {grouped})", b.name());
        }
        assert_eq!(cache.stats().stores, 0, "nothing over the limit is stored");
    }
}

#[redcache::cached(prefix = "c:unbounded", ttl = 60)]
async fn doubled(id: u64) -> u64 {
    id * 2
}

on_both_stores! {
    async fn an_unbounded_operation_timeout_caches_in_memory_and_is_refused_for_redis(b: Backend) {
        let config = b.configure(test_config().op_timeout(Duration::MAX));
        if !b.is_redis() {
            // No operation of the memory store waits: nothing to bound, it caches.
            let cache = redcache::Cache::memory_with(config.build());
            assert_eq!(cache.scope(doubled(4)).await, 8);
            assert_eq!(cache.scope(doubled(4)).await, 8);
            let stats = cache.stats();
            assert_eq!((stats.misses, stats.hits, stats.stores), (1, 1, 1));
            return;
        }
        // A fill may land up to one operation timeout after it is sent, and must land while
        // an invalidation's tombstone still fences it: an unbounded timeout cannot promise
        // that, so it is a configuration error, not a cache that silently never stores.
        let err = redcache::Cache::connect(config.build()).await.unwrap_err();
        assert!(matches!(err, redcache::Error::Config { .. }), "{err}");
        let message = err.to_string();
        assert!(
            message.contains("op_timeout") && message.contains("max_fill_time"),
            "{message}"
        );
    }
}

/// A "database" of one row per id, set by the test.
#[derive(Default)]
struct Rows(Mutex<std::collections::HashMap<u64, &'static str>>);

impl Rows {
    fn set(&self, id: u64, value: &'static str) {
        self.0.lock().unwrap().insert(id, value);
    }

    /// Reads the row, then holds (if asked) before returning it.
    async fn read(&self, id: u64, hold: Option<&Hold>) -> String {
        let value = format!("{id}:{}", self.0.lock().unwrap()[&id]);
        if let Some(hold) = hold {
            hold.entered.wait().await;
            hold.release.wait().await;
        }
        value
    }
}

#[redcache::cached(prefix = "c:unfenced", ttl = 60, skip(db, hold))]
async fn row(id: u64, db: &Rows, hold: Option<&Hold>) -> String {
    db.read(id, hold).await
}

/// A leader of `row(id)` whose read timed out (Redis paused), held in its body with the
/// old row: its result has nothing to fence it. Redis answers again, and the row is
/// written and invalidated.
struct TimedOutLeader {
    cache: redcache::Cache,
    db: Arc<Rows>,
    hold: Arc<Hold>,
    leader: tokio::task::JoinHandle<String>,
}

async fn leader_past_a_timed_out_read(
    server: &RedisServer,
    op_timeout: Duration,
    id: u64,
) -> TimedOutLeader {
    let config = test_config()
        .url(server.url())
        .op_timeout(op_timeout)
        .breaker_threshold(1000);
    let cache = server.cache_with(config).await;
    let db = Arc::new(Rows::default());
    db.set(id, "old");
    server.pause();
    let hold = Hold::new();
    let leader = {
        let (cache, db, hold) = (cache.clone(), db.clone(), hold.clone());
        tokio::spawn(async move { cache.scope(row(id, &db, Some(&hold))).await })
    };
    hold.entered.wait().await;
    server.resume();
    db.set(id, "new");
    cache
        .scope(redcache::invalidate!(row(id, _, _)))
        .await
        .unwrap();
    TimedOutLeader {
        cache,
        db,
        hold,
        leader,
    }
}

/// A leader whose read timed out (Redis paused) runs with nothing to fence its result; a
/// caller that joins after Redis is back and reads the invalidation's tombstone must not
/// take that result.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unfenced_result_never_reaches_a_caller_that_saw_the_invalidation() {
    let server = RedisServer::start();
    let TimedOutLeader {
        cache,
        db,
        hold,
        leader,
    } = leader_past_a_timed_out_read(&server, Duration::from_millis(300), 1).await;
    let joined = {
        let (cache, db) = (cache.clone(), db.clone());
        tokio::spawn(async move { cache.scope(row(1, &db, None)).await })
    };
    // The caller read the tombstone and joined the leader's flight.
    common::until_waiting(&cache, 1).await;
    hold.release.wait().await;
    assert_eq!(
        leader.await.unwrap(),
        "1:old",
        "the leader returns what it read"
    );
    assert_eq!(
        joined.await.unwrap(),
        "1:new",
        "the caller saw the invalidation"
    );
    assert_eq!(cache.scope(row(1, &db, None)).await, "1:new");
}

#[redcache::cached(prefix = "c:pfx", ttl = 60, skip(db, hold))]
async fn prefixed(id: u64, db: &Rows, hold: Option<&Hold>) -> String {
    db.read(id, hold).await
}

on_both_stores! {
    async fn invalidate_prefix_tombstones_live_entries_and_renews_tombstones(b: Backend) {
        let db = Arc::new(Rows::default());
        db.set(1, "old");
        db.set(2, "old");
        // Entry 1 is live; entry 2 was just invalidated by an exact call, and a miss that
        // read nothing before that invalidation is still running.
        assert_eq!(b.cache.scope(prefixed(1, &db, None)).await, "1:old");
        let hold = Hold::new();
        let slow = {
            let (cache, db, hold) = (b.cache.clone(), db.clone(), hold.clone());
            tokio::spawn(async move { cache.scope(prefixed(2, &db, Some(&hold))).await })
        };
        hold.entered.wait().await;
        db.set(1, "new");
        db.set(2, "new");
        b.cache.scope(redcache::invalidate!(prefixed(2, _, _))).await.unwrap();
        let removed = b.cache.scope(redcache::invalidate_prefix("c:pfx")).await.unwrap();
        assert_eq!(removed, 1, "one live entry; a tombstone is not counted ({})", b.name());
        if b.is_redis() {
            for id in [1, 2] {
                let raw = b.raw_get(&redcache::key!(prefixed(id, _, _))).await;
                assert!(raw.as_deref().is_some_and(is_tombstone), "{id}: {raw:?}");
            }
        }
        hold.release.wait().await;
        assert_eq!(slow.await.unwrap(), "2:old", "the slow call returns what it read");
        // Its old row was refused: the fence of the exact invalidation held.
        assert_eq!(b.cache.scope(prefixed(2, &db, None)).await, "2:new", "{}", b.name());
        assert_eq!(b.cache.scope(prefixed(1, &db, None)).await, "1:new", "{}", b.name());
    }
}

on_both_stores! {
    async fn a_prefix_invalidation_fences_a_miss_that_read_a_tombstone(b: Backend) {
        let db = Arc::new(Rows::default());
        db.set(3, "old");
        // An exact invalidation left a tombstone; a miss reads it, then the old row.
        b.cache.scope(redcache::invalidate!(prefixed(3, _, _))).await.unwrap();
        let hold = Hold::new();
        let slow = {
            let (cache, db, hold) = (b.cache.clone(), db.clone(), hold.clone());
            tokio::spawn(async move { cache.scope(prefixed(3, &db, Some(&hold))).await })
        };
        hold.entered.wait().await;
        // The row changes, and a prefix invalidation covers the key after that.
        db.set(3, "new");
        let removed = b.cache.scope(redcache::invalidate_prefix("c:pfx")).await.unwrap();
        assert_eq!(removed, 0, "a tombstone is not counted ({})", b.name());
        hold.release.wait().await;
        assert_eq!(slow.await.unwrap(), "3:old", "the slow call returns what it read");
        // What it read predates the prefix invalidation: it was not stored.
        assert_eq!(b.cache.scope(prefixed(3, &db, None)).await, "3:new", "{}", b.name());
        assert_eq!(b.cache.stats().conflicts, 1, "{:?}", b.cache.stats());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_prefix_runs_with_the_breaker_open_and_handles_binary_keys() {
    let server = RedisServer::start();
    let cache = server
        .cache_with(
            test_config()
                .url(server.url())
                .op_timeout(Duration::from_millis(100))
                .breaker_threshold(2)
                .breaker_cooldown(Duration::from_secs(60)),
        )
        .await;
    let mut conn = server.conn().await;
    let _: () = redis::cmd("SET")
        .arg(b"bin:\xff\xfe:1".as_slice())
        .arg("foreign")
        .query_async(&mut conn)
        .await
        .unwrap();
    cache
        .set("bin:2", &2u32, Duration::from_secs(60))
        .await
        .unwrap();
    // Open the breaker: two timeouts while Redis is paused.
    server.pause();
    for _ in 0..2 {
        assert!(cache.get::<u32>("bin:2").await.is_err());
    }
    server.resume();
    assert!(cache.stats().breaker_open);
    assert!(matches!(
        cache.get::<u32>("bin:2").await,
        Err(redcache::Error::Unavailable { .. })
    ));
    // An invalidation is never skipped by the breaker, and a key that is not UTF-8 does
    // not stop the walk.
    assert_eq!(cache.invalidate_prefix("bin").await.unwrap(), 2);
    for key in [b"bin:\xff\xfe:1".as_slice(), b"bin:2"] {
        let raw: Option<Vec<u8>> = redis::cmd("GET")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(raw.as_deref().is_some_and(is_tombstone), "{raw:?}");
    }
}

/// The generic-repository pattern: one store, one trait, an impl per entity.
#[derive(Debug)]
struct User;
#[derive(Debug)]
struct Team;

trait Entity {
    const NAME: &'static str;
}

impl Entity for User {
    const NAME: &'static str = "user";
}

impl Entity for Team {
    const NAME: &'static str = "team";
}

struct Store;

trait Repo<T> {
    async fn find(&self, id: u64) -> String;
}

impl Repo<User> for Store {
    #[redcache::cached(prefix = "c:repo", ttl = 60, in_trait_impl)]
    async fn find(&self, id: u64) -> String {
        format!("user {id}")
    }
}

impl Repo<Team> for Store {
    #[redcache::cached(prefix = "c:repo", ttl = 60, in_trait_impl)]
    async fn find(&self, id: u64) -> String {
        format!("team {id}")
    }
}

struct Table<T>(std::marker::PhantomData<T>);

impl Table<User> {
    #[redcache::cached(prefix = "c:table", ttl = 60)]
    async fn named(id: u64) -> String {
        format!("user {id}")
    }
}

impl Table<Team> {
    #[redcache::cached(prefix = "c:table", ttl = 60)]
    async fn named(id: u64) -> String {
        format!("team {id}")
    }
}

impl<T: Entity> Table<T> {
    #[redcache::cached(prefix = "c:load", ttl = 60)]
    async fn load(id: u64) -> String {
        format!("{} {id}", T::NAME)
    }
}

on_both_stores! {
    async fn same_named_functions_of_different_impls_never_share_entries(b: Backend) {
        b.cache.scope(async {
            for _ in 0..2 {
                assert_eq!(<Store as Repo<User>>::find(&Store, 1).await, "user 1");
                assert_eq!(<Store as Repo<Team>>::find(&Store, 1).await, "team 1");
                assert_eq!(Table::<User>::named(1).await, "user 1");
                assert_eq!(Table::<Team>::named(1).await, "team 1");
                assert_eq!(Table::<User>::load(1).await, "user 1");
                assert_eq!(Table::<Team>::load(1).await, "team 1");
            }
        }).await;
        let stats = b.cache.stats();
        assert_eq!((stats.misses, stats.hits), (6, 6), "{} {stats:?}", b.name());
    }
}

/// A generic free function and a method named alike in one module, with one prefix: the
/// type parameter's name and the impl's are told apart.
#[redcache::cached(prefix = "c:same", ttl = 60)]
async fn same_name<T: Entity>(id: u64) -> String {
    format!("{} {id} (the free function)", T::NAME)
}

impl User {
    #[redcache::cached(prefix = "c:same", ttl = 60)]
    async fn same_name(id: u64) -> String {
        format!("user {id} (the method)")
    }
}

/// Two repositories behind one generic function, the repository skipped: its type still
/// tells their entries apart.
trait Repository {}
struct Users;
struct Orders;
impl Repository for Users {}
impl Repository for Orders {}

#[redcache::cached(prefix = "c:repos", ttl = 60, skip(repo))]
async fn fetch<R: Repository + Send>(repo: R, id: u64) -> String {
    drop(repo);
    format!(
        "{} {id}",
        std::any::type_name::<R>()
            .rsplit("::")
            .next()
            .unwrap_or_default()
    )
}

#[tokio::test]
async fn type_names_never_read_like_an_impl_and_a_skipped_arguments_type_stays_in_the_key() {
    assert_ne!(
        redcache::key!(same_name::<User>(7)),
        redcache::key!(User::same_name(7))
    );
    let cache = redcache::Cache::memory();
    cache
        .scope(async {
            assert_eq!(same_name::<User>(7).await, "user 7 (the free function)");
            assert_eq!(User::same_name(7).await, "user 7 (the method)");
            // The repository is skipped, not its type: each keeps its own entries.
            assert_eq!(fetch(Users, 3).await, "Users 3");
            assert_eq!(fetch(Orders, 3).await, "Orders 3");
            assert_ne!(
                redcache::key!(fetch::<Users>(_, 3)),
                redcache::key!(fetch::<Orders>(_, 3))
            );
            assert!(redcache::invalidate!(fetch::<Users>(_, 3)).await.unwrap());
        })
        .await;
}

/// The key material of a function in an impl carries the impl's path as rustc writes it,
/// apart from the arguments; functions outside impls add nothing.
#[tokio::test]
async fn keys_of_functions_in_impls_carry_the_impl() {
    use common::expected_key;
    let user = "test_correctness::Table<test_correctness::User>";
    let team = "test_correctness::Table<test_correctness::Team>";
    assert_eq!(
        redcache::key!(Table::<User>::named(1)),
        common::expected_key_of("c:table", &common::named(&[(b'i', user)], "[1]"))
    );
    assert_eq!(
        redcache::key!(Table::<Team>::named(1)),
        common::expected_key_of("c:table", &common::named(&[(b'i', team)], "[1]"))
    );
    assert_eq!(
        redcache::key!(Table::<Team>::load(7)),
        common::expected_key_of("c:load", &common::named(&[(b'i', team)], "[7]"))
    );
    assert_eq!(
        redcache::key!(doubled(4)),
        expected_key("c:unbounded", "[4]")
    );
    // Methods of trait impls have no companion (a trait impl takes no extra items): their
    // entries, as written to Redis.
    let server = RedisServer::start();
    let cache = server.cache().await;
    cache
        .scope(async {
            <Store as Repo<User>>::find(&Store, 1).await;
            <Store as Repo<Team>>::find(&Store, 1).await;
        })
        .await;
    let keys = server.keys("c:repo:*").await;
    let mut expected: Vec<String> = ["User", "Team"]
        .iter()
        .map(|entity| {
            let item = format!(
                "<test_correctness::Store as test_correctness::Repo<test_correctness::{entity}>>"
            );
            common::expected_key_of("c:repo", &common::named(&[(b'i', &item)], "[1]"))
        })
        .collect();
    expected.sort();
    assert_eq!(keys, expected);
}

/// With `type_key`, the key material ends with the name written in the source, in place
/// of the names rustc writes for the impl and the type parameters: these keys are the same
/// on every toolchain, so they are pinned here as literals.
struct UserService;

impl UserService {
    #[redcache::cached(prefix = "c:svc", ttl = 60, type_key = "user_service")]
    async fn get_by_id(&self, id: u64) -> String {
        format!("user {id}")
    }
}

struct Pinned<T>(std::marker::PhantomData<T>);

impl<T: Entity> Pinned<T> {
    #[redcache::cached(prefix = "c:pinned", ttl = 60, type_key = T::NAME)]
    async fn load(id: u64) -> String {
        format!("{} {id}", T::NAME)
    }
}

#[redcache::cached(prefix = "c:generic", ttl = 60, type_key = T::NAME)]
async fn load_generic<T: Entity>(id: u64) -> String {
    format!("{} {id}", T::NAME)
}

#[redcache::cached(prefix = "c:keyed", ttl = 60, key = id, type_key = "v2")]
async fn keyed(id: u64, page: u32) -> String {
    format!("{id} {page}")
}

trait PinnedRepo<T> {
    async fn find(&self, id: u64) -> String;
}

impl PinnedRepo<User> for Store {
    #[redcache::cached(prefix = "c:prepo", ttl = 60, in_trait_impl, type_key = "repo:user")]
    async fn find(&self, id: u64) -> String {
        format!("user {id}")
    }
}

impl PinnedRepo<Team> for Store {
    #[redcache::cached(prefix = "c:prepo", ttl = 60, in_trait_impl, type_key = "repo:team")]
    async fn find(&self, id: u64) -> String {
        format!("team {id}")
    }
}

#[tokio::test]
async fn type_key_pins_the_keys_of_methods_and_generic_functions() {
    // md5 of `[1,"user_service"]`, `[7,"user"]`, `[7,"team"]` and `[1,"v2"]`.
    assert_eq!(
        redcache::key!(UserService.get_by_id(1)),
        "c:svc:1d95c9793d31ea3f2993b21b25f024cd"
    );
    assert_eq!(
        redcache::key!(Pinned::<User>::load(7)),
        "c:pinned:f8029e6debfe7c84563ea614dc84449b"
    );
    assert_eq!(
        redcache::key!(Pinned::<Team>::load(7)),
        "c:pinned:b0fd5cfca02179aef46c72fe7ee45b12"
    );
    assert_eq!(
        redcache::key!(load_generic::<User>(7)),
        "c:generic:f8029e6debfe7c84563ea614dc84449b"
    );
    assert_eq!(
        redcache::key!(keyed(1, 3)),
        "c:keyed:e1e21ad098f3fa0e74211dd7c4f7468e"
    );
    // Trait-impl methods have no companion: their entries, as written to Redis (md5 of
    // `[1,"repo:user"]` and `[1,"repo:team"]`).
    let server = RedisServer::start();
    let cache = server.cache().await;
    cache
        .scope(async {
            assert_eq!(<Store as PinnedRepo<User>>::find(&Store, 1).await, "user 1");
            assert_eq!(<Store as PinnedRepo<Team>>::find(&Store, 1).await, "team 1");
            assert_eq!(UserService.get_by_id(1).await, "user 1");
        })
        .await;
    let keys = server.keys("c:*").await;
    assert_eq!(
        keys,
        [
            "c:prepo:c72cf9452081d8a680a819746324cdf8",
            "c:prepo:f0dfb7f6f08c2377c4ce72f242e93c03",
            "c:svc:1d95c9793d31ea3f2993b21b25f024cd",
        ]
    );
}

on_both_stores! {
    async fn instances_with_their_own_type_key_never_share_entries(b: Backend) {
        b.cache.scope(async {
            for _ in 0..2 {
                assert_eq!(Pinned::<User>::load(1).await, "user 1");
                assert_eq!(Pinned::<Team>::load(1).await, "team 1");
                assert_eq!(load_generic::<User>(1).await, "user 1");
                assert_eq!(load_generic::<Team>(1).await, "team 1");
                assert_eq!(<Store as PinnedRepo<User>>::find(&Store, 1).await, "user 1");
                assert_eq!(<Store as PinnedRepo<Team>>::find(&Store, 1).await, "team 1");
            }
            // `invalidate!` derives the same key as the call.
            assert!(redcache::invalidate!(Pinned::<Team>::load(1)).await.unwrap());
            assert_eq!(Pinned::<Team>::load(1).await, "team 1");
            // With `key = id`, the page is not in the key: the second call is a hit.
            assert_eq!(keyed(1, 3).await, "1 3");
            assert_eq!(keyed(1, 4).await, "1 3");
        }).await;
        let stats = b.cache.stats();
        assert_eq!((stats.misses, stats.hits), (8, 7), "{} {stats:?}", b.name());
    }
}

/// On a full in-process store, what an invalidation or a write-through left at a key can
/// be evicted before a slow miss that read before it stores. The miss must still be
/// refused: the nothing left behind is not the nothing it read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_memory_store_still_fences_a_miss_from_before_a_write() {
    let cache = redcache::Cache::memory_with(test_config().memory_capacity(100).build());
    let ttl = Duration::from_secs(600);
    for write in ["delete", "set"] {
        let key = format!("fenced:{write}");
        let hold = Hold::new();
        let miss = {
            let (cache, key, hold) = (cache.clone(), key.clone(), hold.clone());
            tokio::spawn(async move {
                let read_old = || async move {
                    hold.entered.wait().await;
                    hold.release.wait().await;
                    "old".to_string()
                };
                cache.get_or_insert_with(&key, ttl, read_old).await
            })
        };
        // The miss read nothing, and has the old value.
        hold.entered.wait().await;
        match write {
            "delete" => assert!(!cache.delete(&key).await.unwrap()),
            _ => cache.set(&key, "new", ttl).await.unwrap(),
        }
        // Other keys, each read twice, until the store has evicted what the write left.
        for i in 0..20_000 {
            let other = format!("other:{write}:{i}");
            for _ in 0..2 {
                let one: u8 = cache.get_or_insert_with(&other, ttl, || async { 1 }).await;
                assert_eq!(one, 1);
            }
        }
        if write == "set" {
            assert_eq!(
                cache.ttl(&key).await.unwrap(),
                None,
                "the value was evicted"
            );
        }
        hold.release.wait().await;
        assert_eq!(miss.await.unwrap(), "old", "the miss returns what it read");
        assert_eq!(cache.get::<String>(&key).await.unwrap(), None, "{write}");
    }
    assert_eq!(cache.stats().conflicts, 2, "both fills refused");
}

#[redcache::cached(prefix = "c:grouped", group = "c-grouped", ttl = 60, skip(db, hold))]
async fn grouped_row(id: u64, db: &Rows, hold: Option<&Hold>) -> String {
    // Longer than the cache's `max_value_bytes`: never stored, shared unfenced.
    format!("{:>200}", db.read(id, hold).await)
}

/// A result too large to store is shared with the callers waiting on its flight, unfenced.
/// A caller that joined after its group was invalidated read the new generation; the
/// leader read another (here none yet: its stamp carries the one it would have created)
/// and computed from before the write: the caller runs its own.
#[tokio::test]
async fn an_unfenced_result_of_an_older_group_generation_is_not_shared() {
    let cache = redcache::Cache::memory_with(test_config().max_value_bytes(100).build());
    let db = Arc::new(Rows::default());
    db.set(1, "old");
    let hold = Hold::new();
    let leader = {
        let (cache, db, hold) = (cache.clone(), db.clone(), hold.clone());
        tokio::spawn(async move { cache.scope(grouped_row(1, &db, Some(&hold))).await })
    };
    hold.entered.wait().await;
    db.set(1, "new");
    cache.invalidate_group("c-grouped").await.unwrap();
    // One poll takes the caller through its read (the memory store never waits) into the
    // leader's flight, where it waits.
    let mut joined = Box::pin(cache.scope(grouped_row(1, &db, None)));
    let waiting = std::future::poll_fn(|cx| {
        std::task::Poll::Ready(std::future::Future::poll(joined.as_mut(), cx).is_pending())
    })
    .await;
    assert!(waiting, "the caller waits on the leader's flight");
    hold.release.wait().await;
    assert_eq!(leader.await.unwrap().trim_start(), "1:old");
    assert_eq!(
        joined.await.trim_start(),
        "1:new",
        "it saw the invalidation"
    );
}

/// When a read fails (Redis does not answer in time), a caller cannot see an
/// invalidation's trace, and the flight's leader, whose read failed too, shares its result
/// unfenced. A caller that joins the flight after an invalidation this process made must
/// not get the leader's result, computed before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_that_cannot_read_refuses_a_result_from_before_an_invalidation() {
    let server = RedisServer::start();
    let TimedOutLeader {
        cache,
        db,
        hold,
        leader,
    } = leader_past_a_timed_out_read(&server, Duration::from_millis(100), 8).await;
    // The next caller's read times out too: polled here until its fault is counted, it
    // then waits on the leader's flight (nothing in between waits).
    server.pause();
    let faults = cache.stats().faults;
    let mut joined = Box::pin(cache.scope(row(8, &db, None)));
    let waiting = std::future::poll_fn(|cx| {
        let pending = std::future::Future::poll(joined.as_mut(), cx).is_pending();
        match cache.stats().faults > faults {
            true => std::task::Poll::Ready(pending),
            false => std::task::Poll::Pending,
        }
    })
    .await;
    assert!(waiting, "the caller waits on the leader's flight");
    server.resume();
    hold.release.wait().await;
    assert_eq!(
        leader.await.unwrap(),
        "8:old",
        "the leader returns what it read"
    );
    assert_eq!(
        joined.await,
        "8:new",
        "the caller came after the invalidation"
    );
}

#[redcache::cached(prefix = "c:in-group", group = "c-read", ttl = 60)]
async fn in_group(id: u64) -> u64 {
    id + 1
}

#[redcache::cached(prefix = "c:stale-user", ttl = 1, jitter = 0, stale_ttl = 600)]
async fn stale_user(id: u64) -> String {
    format!("user {id} v1")
}

on_both_stores! {
    async fn the_programmatic_reads_never_return_what_a_function_would_not(b: Backend) {
        let cache = &b.cache;
        // A grouped entry, after its group was invalidated: `Cache::get` cannot check
        // the generation, so it does not return the entry, before or after.
        assert_eq!(cache.scope(in_group(1)).await, 2);
        let key = cache.scope(async { redcache::key!(in_group(1)) }).await;
        // `Cache::get` adds the namespace itself.
        let key = match cache.config().namespace() {
            Some(ns) => key.strip_prefix(&format!("{ns}:")).unwrap().to_owned(),
            None => key,
        };
        let key = key.as_str();
        assert_eq!(cache.get::<u64>(key).await.unwrap(), None, "{}", b.name());
        cache.invalidate_group("c-read").await.unwrap();
        assert_eq!(cache.get::<u64>(key).await.unwrap(), None, "{}", b.name());
        // An entry past its TTL, kept for the function's stale window: a batch over the
        // same keys loads it again.
        assert_eq!(cache.scope(stale_user(7)).await, "user 7 v1");
        // (Stamped before the call returned: its expiry is at most a second from now.)
        let stored = Instant::now();
        tokio::time::sleep(
            (stored + Duration::from_millis(1100)).saturating_duration_since(Instant::now()),
        )
        .await;
        let loads = AtomicUsize::new(0);
        let users: std::collections::HashMap<u64, String> = cache
            .get_or_insert_many("c:stale-user", &[7u64], Duration::from_secs(60), |ids| {
                loads.fetch_add(1, SeqCst);
                async move { ids.into_iter().map(|id| (id, format!("user {id} v2"))).collect() }
            })
            .await;
        assert_eq!(users[&7], "user 7 v2", "{}", b.name());
        assert_eq!(loads.load(SeqCst), 1);
    }
}
