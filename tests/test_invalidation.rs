//! Invalidation and write-through: the helpers name exactly the attribute's entries,
//! groups and prefixes remove whole families, `#[evicts]` runs after a successful write,
//! and a miss that raced with an invalidation never stores its older value. Each on a real
//! Redis and on the in-memory store.

mod common;

use common::expected_key;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Barrier;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Profile {
    id: u64,
    name: String,
}

fn profile(id: u64, name: &str) -> Profile {
    Profile {
        id,
        name: name.into(),
    }
}

/// The "database": rows by id, and how many queries reached it.
#[derive(Default)]
struct Db {
    rows: Mutex<std::collections::HashMap<u64, String>>,
    queries: AtomicUsize,
}

impl Db {
    fn with(rows: &[(u64, &str)]) -> Arc<Db> {
        let db = Db::default();
        for (id, name) in rows {
            db.rows.lock().unwrap().insert(*id, name.to_string());
        }
        Arc::new(db)
    }

    fn read(&self, id: u64) -> Option<Profile> {
        self.queries.fetch_add(1, SeqCst);
        let name = self.rows.lock().unwrap().get(&id).cloned()?;
        Some(profile(id, &name))
    }

    fn write(&self, id: u64, name: &str) {
        self.rows.lock().unwrap().insert(id, name.to_string());
    }

    fn queries(&self) -> usize {
        self.queries.load(SeqCst)
    }
}

#[redcache::cached(prefix = "i:profile", ttl = 100, jitter = 10, null_ttl = 20, skip(db))]
async fn get_profile(id: u64, db: &Db) -> Option<Profile> {
    db.read(id)
}

on_both_stores! {
    async fn key_names_the_entry_the_attribute_wrote(b: Backend) {
        let db = Db::with(&[(7, "Ada")]);
        b.cache.scope(get_profile(7, &db)).await;
        let key = redcache::key!(get_profile(7, _));
        assert_eq!(key, expected_key("i:profile", "[7]"));
        assert_eq!(key, redcache::key!(get_profile(7, &db)), "a skipped argument is ignored");
        assert!(b.exists(&key).await, "{key} on {}", b.name());
    }
}

on_both_stores! {
    async fn invalidate_removes_exactly_that_entry(b: Backend) {
        let db = Db::with(&[(1, "Ada"), (2, "Grace")]);
        b.cache.scope(async {
            get_profile(1, &db).await;
            get_profile(2, &db).await;
            assert_eq!(db.queries(), 2);
            assert!(redcache::invalidate!(get_profile(1, _)).await.unwrap(), "an entry was there");
            assert!(!redcache::invalidate!(get_profile(1, _)).await.unwrap(), "nothing left");
            assert_eq!(get_profile(1, &db).await, Some(profile(1, "Ada")));
            assert_eq!(db.queries(), 3, "the invalidated entry is a miss");
            get_profile(2, &db).await;
            assert_eq!(db.queries(), 3, "the other entry is untouched");
        }).await;
        assert_eq!(b.cache.stats().invalidations, 1);
    }
}

on_both_stores! {
    async fn put_writes_through_with_the_functions_rules(b: Backend) {
        let db = Db::with(&[(1, "Ada")]);
        b.cache.scope(async {
            get_profile(1, &db).await;
            redcache::put!(get_profile(1, _), Some(profile(1, "Ada L."))).await.unwrap();
            assert_eq!(get_profile(1, &db).await, Some(profile(1, "Ada L.")));
            redcache::put!(get_profile(9, _), None).await.unwrap();
            assert_eq!(get_profile(9, &db).await, None);
        }).await;
        assert_eq!(db.queries(), 1, "both reads after put! were hits");
        let ttl = b.ttl_secs(&expected_key("i:profile", "[1]")).await.unwrap();
        assert!((100..=110).contains(&ttl), "ttl + jitter: {ttl}");
        // Readers see the cached `None` for its null_ttl; Redis keeps a write-through shorter
        // than max_fill_time (30 s) that long, so that it still fences older misses.
        let null = expected_key("i:profile", "[9]");
        let own = b.cache.ttl(&null).await.unwrap().unwrap();
        assert_eq!((own.as_millis() + 500) / 1000, 20, "null_ttl");
        let kept = if b.is_redis() { 30 } else { 20 };
        assert_eq!(b.ttl_secs(&null).await, Some(kept), "{}", b.name());
        assert_eq!(b.cache.stats().null_hits, 1);
    }
}

#[derive(Debug, PartialEq)]
struct DbError;

#[redcache::cached(prefix = "i:fallible", ttl = 60, null_ttl = 0)]
async fn fallible(id: u64) -> Result<Option<u64>, DbError> {
    Ok(Some(id))
}

on_both_stores! {
    async fn put_refuses_an_err_and_a_none_that_is_not_cached_invalidates(b: Backend) {
        b.cache.scope(async {
            let err = redcache::put!(fallible(1), Err(DbError)).await.unwrap_err();
            assert!(matches!(err, redcache::Error::NotCacheable), "{err:?}");
            assert!(err.to_string().contains("an `Err` is never cached"), "{err}");
            fallible(2).await.unwrap();
            redcache::put!(fallible(2), Ok(None)).await.unwrap();
        }).await;
        assert!(!b.exists(&expected_key("i:fallible", "[1]")).await, "the Err was not stored");
        assert!(
            !b.exists(&expected_key("i:fallible", "[2]")).await,
            "null_ttl = 0: putting None drops the entry"
        );
    }
}

#[redcache::cached(prefix = "i:note", ttl = 60, skip(runs))]
async fn note(id: u64, runs: &AtomicUsize) -> String {
    runs.fetch_add(1, SeqCst);
    format!("note {id}")
}

#[redcache::cached(prefix = "i:note:tagged", ttl = 60, tags("note:{id}"), skip(runs))]
async fn tagged_note(id: u64, runs: &AtomicUsize) -> String {
    runs.fetch_add(1, SeqCst);
    format!("tagged note {id}")
}

on_both_stores! {
    async fn a_put_or_set_over_max_value_bytes_retires_the_old_entry(b: Backend) {
        let cache = b.cache_with(common::test_config().max_value_bytes(256)).await;
        let runs = AtomicUsize::new(0);
        let big = "x".repeat(1000);
        cache.scope(async {
            assert_eq!(note(1, &runs).await, "note 1");
            assert_eq!(note(1, &runs).await, "note 1");
            assert_eq!(runs.load(SeqCst), 1, "{}: the second call was a hit", b.name());
            let err = redcache::put!(note(1, _), big.clone()).await.unwrap_err();
            assert!(matches!(err, redcache::Error::TooLarge { .. }), "{err:?}");
            assert_eq!(note(1, &runs).await, "note 1");
            assert_eq!(runs.load(SeqCst), 2, "{}: the old value was retired, a miss", b.name());
        }).await;

        let ttl = Duration::from_secs(60);
        cache.set("i:set", &"old", ttl).await.unwrap();
        assert_eq!(cache.get::<String>("i:set").await.unwrap().as_deref(), Some("old"));
        let err = cache.set("i:set", &big, ttl).await.unwrap_err();
        assert!(matches!(err, redcache::Error::TooLarge { .. }), "{err:?}");
        assert_eq!(cache.get::<String>("i:set").await.unwrap(), None, "{}: old value retired", b.name());
        assert_eq!(cache.stats().faults, 0, "{:?}", cache.stats());
    }
}

/// Opens `cache`'s breaker (threshold 1), unless it is open, with a read that times out on
/// the paused `server`, then lets Redis answer again: the cool-down still skips writes.
async fn open_breaker(server: &common::RedisServer, cache: &redcache::Cache) {
    if cache.stats().breaker_open {
        return;
    }
    server.pause();
    let read = cache.get::<u32>("i:absent").await;
    server.resume();
    assert!(
        matches!(read, Err(redcache::Error::Timeout { .. })),
        "{read:?}"
    );
    assert!(cache.stats().breaker_open);
}

/// Runs `write` (not started yet: futures are lazy) with `cache`'s breaker open, and checks
/// that the breaker skipped it.
async fn skipped_by_open_breaker(
    server: &common::RedisServer,
    cache: &redcache::Cache,
    write: impl std::future::Future<Output = redcache::Result<()>>,
) {
    open_breaker(server, cache).await;
    let done = write.await;
    assert!(
        matches!(done, Err(redcache::Error::Unavailable { .. })),
        "{done:?}"
    );
}

/// A `put!` or `set` skipped by the open breaker (`Error::Unavailable`) still retires the
/// entry, as an invalidation, which the breaker never skips: another process (here another
/// cache on the same Redis) no longer serves the value it was to replace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_or_set_skipped_by_the_open_breaker_retires_the_old_entry() {
    let server = common::RedisServer::start();
    let config = common::test_config()
        .url(server.url())
        .op_timeout(Duration::from_millis(200))
        .breaker_threshold(1)
        .breaker_cooldown(Duration::from_secs(60));
    let cache = server.cache_with(config).await;
    let other = server.cache().await;
    let (runs, tagged_runs) = (&AtomicUsize::new(0), &AtomicUsize::new(0));
    let ttl = Duration::from_secs(60);
    let reads = || async move {
        assert_eq!(note(1, runs).await, "note 1");
        assert_eq!(tagged_note(1, tagged_runs).await, "tagged note 1");
    };
    other.scope(reads()).await;
    other.scope(reads()).await;
    other.set("i:flag", &"old", ttl).await.unwrap();
    assert_eq!(
        (runs.load(SeqCst), tagged_runs.load(SeqCst)),
        (1, 1),
        "cached"
    );

    skipped_by_open_breaker(
        &server,
        &cache,
        cache.scope(redcache::put!(note(1, _), "new".to_owned())),
    )
    .await;
    // The tagged one is skipped as it reads its tags' generations.
    skipped_by_open_breaker(
        &server,
        &cache,
        cache.scope(redcache::put!(tagged_note(1, _), "new".to_owned())),
    )
    .await;
    skipped_by_open_breaker(&server, &cache, cache.set("i:flag", &"new", ttl)).await;

    other.scope(reads()).await;
    assert_eq!(
        (runs.load(SeqCst), tagged_runs.load(SeqCst)),
        (2, 2),
        "both entries were retired: misses"
    );
    assert_eq!(
        other.get::<String>("i:flag").await.unwrap(),
        None,
        "retired"
    );
}

struct Service {
    db: Arc<Db>,
}

impl Service {
    #[redcache::cached(prefix = "i:svc", ttl = 60)]
    async fn by_id(&self, id: u64) -> Option<Profile> {
        self.db.read(id)
    }

    #[redcache::cached(prefix = "i:svc:arc", ttl = 60)]
    async fn by_id_arc(self: Arc<Self>, id: u64) -> Option<Profile> {
        self.db.read(id)
    }

    #[redcache::evicts(self.by_id(id), Self::by_id_arc(self, id))]
    async fn rename(&self, id: u64, name: &str) -> Result<(), DbError> {
        if name.is_empty() {
            return Err(DbError);
        }
        self.db.write(id, name);
        Ok(())
    }
}

on_both_stores! {
    async fn methods_are_named_with_call_syntax(b: Backend) {
        let svc = Arc::new(Service { db: Db::with(&[(1, "Ada")]) });
        b.cache.scope(async {
            svc.by_id(1).await;
            svc.clone().by_id_arc(1).await;
            let key = redcache::key!(svc.by_id(1));
            assert_eq!(key, redcache::key!(Service::by_id(&svc, 1)));
            let material = common::named(&[(b'i', "test_invalidation::Service")], "[1]");
            assert_eq!(key, common::expected_key_of("i:svc", &material), "Self's type name is in the key");
            assert!(redcache::invalidate!(svc.by_id(1)).await.unwrap());
            assert!(redcache::invalidate!(Service::by_id_arc(&svc, 1)).await.unwrap());
            svc.by_id(1).await;
            svc.clone().by_id_arc(1).await;
        }).await;
        assert_eq!(svc.db.queries(), 4, "both methods missed again after invalidation");
    }
}

/// A `Result` under another name: `#[evicts]` asks the type, as `#[cached]` does.
type Outcome<T> = Result<T, DbError>;

impl Service {
    #[redcache::evicts(self.by_id(id))]
    async fn rename_aliased(&self, id: u64, name: &str) -> Outcome<()> {
        if name.is_empty() {
            return Err(DbError);
        }
        self.db.write(id, name);
        Ok(())
    }
}

on_both_stores! {
    async fn evicts_on_a_result_alias_runs_after_an_ok_only(b: Backend) {
        let svc = Service { db: Db::with(&[(1, "Ada")]) };
        b.cache.scope(async {
            assert_eq!(svc.by_id(1).await.unwrap().name, "Ada");
            assert_eq!(svc.rename_aliased(1, "").await, Err(DbError));
            assert_eq!(svc.by_id(1).await.unwrap().name, "Ada", "an Err evicts nothing");
            assert_eq!(svc.db.queries(), 1);
            svc.rename_aliased(1, "Ada L.").await.unwrap();
            assert_eq!(svc.by_id(1).await.unwrap().name, "Ada L.");
        }).await;
        assert_eq!(svc.db.queries(), 2);
        assert_eq!(b.cache.stats().invalidations, 1);
    }
}

/// `impl Trait` returns: a bare one is no `Result` (every return evicts); inside a
/// `Result`, only an `Ok` does, and the body's returns still convert into the declared
/// error (`?`, a `Box` of a concrete error).
impl Service {
    #[redcache::evicts(self.by_id(id))]
    async fn rename_shown(&self, id: u64, name: &str) -> impl std::fmt::Display {
        self.db.write(id, name);
        format!("renamed {id}")
    }

    #[redcache::evicts(self.by_id(id))]
    async fn rename_checked(
        &self,
        id: u64,
        name: &str,
        version: &str,
    ) -> Result<impl std::fmt::Display, Box<dyn std::error::Error + Send + Sync>> {
        if name.is_empty() {
            return Err(Box::new(std::fmt::Error));
        }
        let version: u64 = version.parse()?;
        self.db.write(id, name);
        Ok(version)
    }
}

on_both_stores! {
    async fn evicts_takes_an_impl_trait_return(b: Backend) {
        let svc = Service { db: Db::with(&[(1, "Ada")]) };
        b.cache.scope(async {
            assert_eq!(svc.by_id(1).await.unwrap().name, "Ada");
            assert_eq!(svc.rename_shown(1, "Ada L.").await.to_string(), "renamed 1");
            assert_eq!(svc.by_id(1).await.unwrap().name, "Ada L.");
            assert!(svc.rename_checked(1, "", "2").await.is_err());
            assert!(svc.rename_checked(1, "Ada B.", "two").await.is_err());
            assert_eq!(svc.by_id(1).await.unwrap().name, "Ada L.", "an Err evicts nothing");
            assert_eq!(svc.db.queries(), 2);
            let version = svc.rename_checked(1, "Ada B.", "2").await.unwrap();
            assert_eq!(version.to_string(), "2");
            assert_eq!(svc.by_id(1).await.unwrap().name, "Ada B.");
        }).await;
        assert_eq!(svc.db.queries(), 3);
        assert_eq!(b.cache.stats().invalidations, 2);
    }
}

on_both_stores! {
    async fn evicts_runs_after_an_ok_only(b: Backend) {
        let svc = Arc::new(Service { db: Db::with(&[(1, "Ada")]) });
        b.cache.scope(async {
            assert_eq!(svc.by_id(1).await.unwrap().name, "Ada");
            assert_eq!(svc.clone().by_id_arc(1).await.unwrap().name, "Ada");
            assert_eq!(svc.rename(1, "").await, Err(DbError));
            assert_eq!(svc.by_id(1).await.unwrap().name, "Ada", "an Err evicts nothing");
            assert_eq!(svc.db.queries(), 2);
            svc.rename(1, "Ada L.").await.unwrap();
            assert_eq!(svc.by_id(1).await.unwrap().name, "Ada L.");
            assert_eq!(svc.clone().by_id_arc(1).await.unwrap().name, "Ada L.");
        }).await;
        assert_eq!(svc.db.queries(), 4);
        assert_eq!(b.cache.stats().invalidations, 2);
    }
}

#[redcache::cached(prefix = "i:price", group = "catalog", ttl = 60, skip(db))]
async fn price(sku: u64, db: &Db) -> Option<Profile> {
    db.read(sku)
}

#[redcache::cached(prefix = "i:stock", group = "catalog", ttl = 60, skip(db))]
async fn stock(sku: u64, db: &Db) -> Option<Profile> {
    db.read(sku)
}

#[redcache::evicts(group = "catalog")]
async fn reprice(db: &Db, sku: u64, name: &str) {
    db.write(sku, name);
}

on_both_stores! {
    async fn a_group_is_invalidated_at_once(b: Backend) {
        let db = Db::with(&[(1, "a"), (2, "b")]);
        b.cache.scope(async {
            for sku in [1, 2] {
                price(sku, &db).await;
                stock(sku, &db).await;
                get_profile(sku, &db).await;
            }
            assert_eq!(db.queries(), 6);
            for sku in [1, 2] {
                price(sku, &db).await;
                stock(sku, &db).await;
            }
            assert_eq!(db.queries(), 6, "grouped entries hit like any other");
            redcache::invalidate_group("catalog").await.unwrap();
            for sku in [1, 2] {
                price(sku, &db).await;
                stock(sku, &db).await;
                get_profile(sku, &db).await;
            }
            assert_eq!(db.queries(), 10, "every entry of the group missed; others hit");
            reprice(&db, 1, "a2").await;
            assert_eq!(price(1, &db).await.unwrap().name, "a2", "#[evicts(group)]");
            assert_eq!(db.queries(), 11);
        }).await;
        let key = redcache::key!(price(1, _));
        assert_eq!(key, expected_key("i:price:{catalog}", "[1]"), "the group is a hash tag");
        assert!(b.exists(&key).await);
    }
}

#[tokio::test]
async fn group_generation_and_entries_share_a_hash_tag_in_redis() {
    let server = common::RedisServer::start();
    let cache = server.cache().await;
    let db = Db::with(&[(1, "a")]);
    cache.scope(price(1, &db)).await;
    let keys = server.keys("*").await;
    let mut conn = server.conn().await;
    assert_eq!(
        keys,
        [
            expected_key("i:price:{catalog}", "[1]"),
            "redcache:group:{catalog}".to_string()
        ]
    );
    let gen: String = redis::cmd("GET")
        .arg(&keys[1])
        .query_async(&mut conn)
        .await
        .unwrap();
    let raw: String = redis::cmd("GET")
        .arg(&keys[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        raw,
        format!(r#"{{"v":1,"g":{gen},"d":{{"id":1,"name":"a"}}}}"#)
    );
    let ttl: i64 = redis::cmd("TTL")
        .arg(&keys[1])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(ttl, -1, "a generation never expires");
}

/// Pauses a body between its database read and its return, so a test can write and
/// invalidate in between.
struct Gate {
    read_done: Barrier,
    release: Barrier,
}

impl Gate {
    fn new() -> Arc<Gate> {
        Arc::new(Gate {
            read_done: Barrier::new(2),
            release: Barrier::new(2),
        })
    }
}

/// Reads the row, then holds at the gate (if any) before returning it.
async fn read_held_at(id: u64, db: &Db, gate: Option<&Gate>) -> Option<Profile> {
    let row = db.read(id);
    if let Some(gate) = gate {
        gate.read_done.wait().await;
        gate.release.wait().await;
    }
    row
}

#[redcache::cached(prefix = "i:race", ttl = 60, skip(db, gate))]
async fn racing_read(id: u64, db: &Db, gate: Option<&Gate>) -> Option<Profile> {
    read_held_at(id, db, gate).await
}

#[redcache::cached(prefix = "i:race:group", group = "race", ttl = 60, skip(db, gate))]
async fn racing_grouped_read(id: u64, db: &Db, gate: Option<&Gate>) -> Option<Profile> {
    read_held_at(id, db, gate).await
}

/// A miss reads the old row; a writer updates it and invalidates (with `invalidate`);
/// then the miss returns. The next calls must see the new row. If `joins`, a caller that
/// arrives after the write finds the slow miss's flight (the write left no value to hit)
/// and waits on it: it must not get the slow miss's row.
async fn fill_race<F, Fut, R, RFut>(b: &common::Backend, invalidate: F, read: R, joins: bool)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
    R: Fn(Arc<Db>, Option<Arc<Gate>>) -> RFut,
    RFut: std::future::Future<Output = Option<Profile>> + Send + 'static,
{
    let db = Db::with(&[(1, "old")]);
    let gate = Gate::new();
    let slow = tokio::spawn(b.cache.scope(read(db.clone(), Some(gate.clone()))));
    gate.read_done.wait().await; // the slow miss has read "old"
    db.write(1, "new");
    b.cache.scope(invalidate()).await;
    // A caller that arrives now joins the slow miss's flight; it must not get its row.
    let joined = tokio::spawn(b.cache.scope(read(db.clone(), None)));
    if joins {
        common::until_waiting(&b.cache, 1).await;
    }
    gate.release.wait().await;
    assert_eq!(
        slow.await.unwrap().unwrap().name,
        "old",
        "the slow call itself returns what it read"
    );
    assert_eq!(joined.await.unwrap().unwrap().name, "new", "{}", b.name());
    assert_eq!(
        b.cache.scope(read(db.clone(), None)).await.unwrap().name,
        "new",
        "the old row was not stored ({})",
        b.name()
    );
    assert_eq!(b.cache.stats().conflicts, 1, "{:?}", b.cache.stats());
}

on_both_stores! {
    async fn a_miss_that_raced_an_invalidation_does_not_store_its_old_value(b: Backend) {
        fill_race(
            &b,
            || async { redcache::invalidate!(racing_read(1, _, _)).await.unwrap(); },
            |db, gate| async move { racing_read(1, &db, gate.as_deref()).await },
            true,
        )
        .await;
    }
}

on_both_stores! {
    async fn a_miss_that_raced_a_put_does_not_overwrite_it(b: Backend) {
        fill_race(
            &b,
            || async {
                redcache::put!(racing_read(1, _, _), Some(profile(1, "new"))).await.unwrap();
            },
            |db, gate| async move { racing_read(1, &db, gate.as_deref()).await },
            // (It reads the `put!`'s value: a hit.)
            false,
        )
        .await;
    }
}

on_both_stores! {
    async fn a_miss_that_raced_a_group_invalidation_does_not_store_its_old_value(b: Backend) {
        fill_race(
            &b,
            || async { redcache::invalidate_group("race").await.unwrap(); },
            |db, gate| async move { racing_grouped_read(1, &db, gate.as_deref()).await },
            true,
        )
        .await;
    }
}

#[redcache::cached(prefix = "i:slow", ttl = 60, skip(db))]
async fn slow_read(id: u64, db: &Db) -> Option<Profile> {
    let row = db.read(id);
    // Longer than max_fill_time in the test below (a slow query, not a wait for a result).
    tokio::time::sleep(Duration::from_millis(600)).await;
    row
}

#[redcache::cached(prefix = "i:fast", ttl = 60, skip(db))]
async fn fast_read(id: u64, db: &Db) -> Option<Profile> {
    db.read(id)
}

#[tokio::test]
async fn a_miss_slower_than_max_fill_time_is_returned_not_stored() {
    let server = common::RedisServer::start();
    // A fill must land within max_fill_time, an operation timeout of margin included.
    let cache = server
        .cache_with(
            common::test_config()
                .url(server.url())
                .op_timeout(Duration::from_millis(100))
                .max_fill_time(Duration::from_millis(500)),
        )
        .await;
    let db = Db::with(&[(1, "a")]);
    assert_eq!(cache.scope(fast_read(1, &db)).await.unwrap().name, "a");
    assert_eq!(
        cache.stats().stores,
        1,
        "a fast miss is stored under the same config"
    );
    assert_eq!(cache.scope(slow_read(1, &db)).await.unwrap().name, "a");
    assert_eq!(cache.stats().conflicts, 1);
    assert_eq!(cache.stats().stores, 1, "the slow miss was not stored");
    let key = redcache::key!(slow_read(1, _));
    assert_eq!(
        cache.ttl(&key).await.unwrap(),
        None,
        "a tombstone written by an invalidation this long ago could be gone: not stored"
    );
}

on_both_stores! {
    async fn invalidate_prefix_removes_a_family_and_escapes_globs(b: Backend) {
        let c = &b.cache;
        let ttl = Duration::from_secs(60);
        for key in ["fam:1", "fam:2", "fam:sub:3", "fam*:4", "famx:5", "fa:6"] {
            c.set(key, &1, ttl).await.unwrap();
        }
        assert_eq!(c.invalidate_prefix("fam*").await.unwrap(), 1, "`*` is literal");
        assert_eq!(c.invalidate_prefix("fam").await.unwrap(), 3);
        assert_eq!(c.invalidate_prefix("fam").await.unwrap(), 0);
        for key in ["famx:5", "fa:6"] {
            assert_eq!(c.get::<u32>(key).await.unwrap(), Some(1), "{key} kept");
        }
        let db = Db::with(&[(1, "a"), (2, "b")]);
        b.cache.scope(async {
            get_profile(1, &db).await;
            get_profile(2, &db).await;
            assert_eq!(redcache::invalidate_prefix("i:profile").await.unwrap(), 2);
            get_profile(1, &db).await;
        }).await;
        assert_eq!(db.queries(), 3);
    }
}

on_both_stores! {
    async fn helpers_use_the_caches_namespace(b: Backend) {
        let cache = b.cache_with(common::test_config().namespace("ns")).await;
        let db = Db::with(&[(1, "a")]);
        cache.scope(async {
            assert_eq!(redcache::key!(get_profile(1, _)), format!("ns:{}", expected_key("i:profile", "[1]")));
            get_profile(1, &db).await;
            assert!(redcache::invalidate!(get_profile(1, _)).await.unwrap());
            get_profile(1, &db).await;
        }).await;
        assert_eq!(db.queries(), 2);
        assert_eq!(redcache::key!(get_profile(1, _)), expected_key("i:profile", "[1]"), "no cache: no namespace");
    }
}

#[tokio::test]
async fn helpers_without_a_cache_say_so() {
    let err = redcache::invalidate!(get_profile(1, _)).await.unwrap_err();
    assert!(matches!(err, redcache::Error::NotInitialized), "{err:?}");
    assert!(
        err.to_string().contains("redcache::init"),
        "the message says how to fix it: {err}"
    );
}

#[redcache::cached(prefix = "i:race:absent", ttl = 60, null_ttl = 0, skip(db, gate))]
async fn racing_absent(id: u64, db: &Db, gate: Option<&Gate>) -> Option<Profile> {
    read_held_at(id, db, gate).await
}

on_both_stores! {
    async fn a_result_that_is_not_stored_is_not_handed_to_later_callers(b: Backend) {
        // `None` is not cached here, so the slow miss's result is never fenced by a fill:
        // a caller that arrives after the row was written and invalidated (and joins the
        // slow miss's flight) must not get it.
        let db = Db::with(&[]);
        let gate = Gate::new();
        let slow = {
            let (db, gate) = (db.clone(), gate.clone());
            tokio::spawn(b.cache.scope(async move { racing_absent(1, &db, Some(&gate)).await }))
        };
        gate.read_done.wait().await; // the slow miss found no row
        db.write(1, "new");
        b.cache.scope(async { redcache::invalidate!(racing_absent(1, _, _)).await.unwrap() }).await;
        let joined = {
            let db = db.clone();
            tokio::spawn(b.cache.scope(async move { racing_absent(1, &db, None).await }))
        };
        common::until_waiting(&b.cache, 1).await;
        gate.release.wait().await;
        assert_eq!(slow.await.unwrap(), None, "the slow call returns what it read");
        assert_eq!(
            joined.await.unwrap().map(|p| p.name).as_deref(),
            Some("new"),
            "{}",
            b.name()
        );
    }
}

/// Reads the row, then waits for the test to open `gate` before returning it.
#[redcache::cached(prefix = "i:stalled", ttl = 60, skip(gate, db))]
async fn stalled_read(id: u64, gate: &tokio::sync::Semaphore, db: &Db) -> Option<Profile> {
    let row = db.read(id);
    drop(gate.acquire().await.unwrap());
    row
}

/// How many `SET` commands the server has run.
async fn sets_run(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    common::command_calls(conn)
        .await
        .get("set")
        .copied()
        .unwrap_or_default()
}

/// The bound the README states: a fill sent within `max_fill_time − op_timeout` of its read
/// and executed by Redis within `max_fill_time` of it meets any invalidation made since.
/// Here the fill is sent into a stalled Redis, the client gives up on it (a fault), and
/// Redis runs it half a second later, after the invalidation: it finds the tombstone and
/// stores nothing.
#[tokio::test]
async fn a_fill_that_runs_late_after_a_redis_stall_still_meets_the_invalidation() {
    let server = common::RedisServer::start();
    let cache = server
        .cache_with(
            common::test_config()
                .url(server.url())
                .op_timeout(Duration::from_millis(200))
                .max_fill_time(Duration::from_secs(5)),
        )
        .await;
    let mut admin = server.conn().await;
    let db = Db::with(&[(1, "old")]);
    let gate = tokio::sync::Semaphore::new(0);
    let key = cache
        .scope(async { redcache::key!(stalled_read(1, _, _)) })
        .await;
    let call = cache.scope(stalled_read(1, &gate, &db));
    let writer = async {
        // The body has read the old row.
        while db.queries() == 0 {
            tokio::task::yield_now().await;
        }
        db.write(1, "new");
        assert!(!cache
            .scope(redcache::invalidate!(stalled_read(1, _, _)))
            .await
            .unwrap());
        let sets = sets_run(&mut admin).await;
        server.pause();
        gate.add_permits(1);
        // The client gives up on the fill after its operation timeout...
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while cache.stats().faults == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the fill never timed out"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // ...and Redis, stalled for half a second in all, runs it afterwards.
        tokio::time::sleep(Duration::from_millis(300)).await;
        server.resume();
        while sets_run(&mut admin).await == sets {
            assert!(std::time::Instant::now() < deadline, "the fill never ran");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let (got, ()) = tokio::join!(call, writer);
    assert_eq!(got.unwrap().name, "old", "the caller gets what it computed");
    let stored: Vec<u8> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(
        stored.starts_with(br#"{"v":1,"gone":"#),
        "the late fill stored {:?} over the tombstone",
        String::from_utf8_lossy(&stored)
    );
    let open = tokio::sync::Semaphore::new(1);
    assert_eq!(
        cache.scope(stalled_read(1, &open, &db)).await.unwrap().name,
        "new"
    );
}

/// Until `cache` answers `key` with nothing: its entry's TTL has passed.
async fn until_gone(cache: &redcache::Cache, key: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while cache.get::<String>(key).await.unwrap().is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{key} never expired"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A cache-aside miss that reads nothing at `key`, then holds at `gate` before its
/// `init` returns "old".
fn held_miss(
    cache: &redcache::Cache,
    key: &'static str,
    gate: Arc<Gate>,
) -> tokio::task::JoinHandle<String> {
    let cache = cache.clone();
    tokio::spawn(async move {
        cache
            .get_or_insert_with(key, Duration::from_secs(60), || async move {
                gate.read_done.wait().await;
                gate.release.wait().await;
                "old".to_owned()
            })
            .await
    })
}

on_both_stores! {
    async fn a_write_shorter_than_max_fill_time_still_fences_an_older_miss(b: Backend) {
        // The write's TTL ends long before `max_fill_time` (30 s): had its entry left
        // nothing behind at expiry, the older miss would store "old" for a minute.
        let cache = &b.cache;
        let gate = Gate::new();
        let slow = held_miss(cache, "w:short", gate.clone());
        gate.read_done.wait().await; // the miss read nothing
        cache.set("w:short", "new", Duration::from_secs(2)).await.unwrap();
        let own = cache.ttl("w:short").await.unwrap().expect("just written");
        assert!(own <= Duration::from_secs(2), "{own:?}");
        until_gone(cache, "w:short").await;
        assert_eq!(cache.ttl("w:short").await.unwrap(), None, "{}", b.name());
        gate.release.wait().await;
        assert_eq!(slow.await.unwrap(), "old", "the slow call returns what it read");
        assert_eq!(
            cache.get::<String>("w:short").await.unwrap(),
            None,
            "the older value was not stored ({})",
            b.name()
        );
        // What the store still holds there is a fence, not an entry.
        assert!(!cache.delete("w:short").await.unwrap(), "{}", b.name());
        assert_eq!(cache.stats().invalidations, 0);
        let next = cache
            .get_or_insert_with("w:short", Duration::from_secs(60), || async { "fresh".to_owned() })
            .await;
        assert_eq!(next, "fresh", "{}", b.name());
        assert_eq!(cache.stats().conflicts, 1, "{:?}", cache.stats());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fill_over_a_tombstone_keeps_its_fence_past_a_shorter_ttl() {
    // Process A's miss reads nothing; A invalidates; process B reads the tombstone and
    // fills over it with a TTL shorter than the tombstone had left. When B's entry
    // expires, A's older value must still be refused.
    let server = common::RedisServer::start();
    let a = server.cache().await;
    let b = server.cache().await;
    let gate = Gate::new();
    let slow = held_miss(&a, "w:over", gate.clone());
    gate.read_done.wait().await;
    assert!(!a.delete("w:over").await.unwrap());
    let filled = b
        .get_or_insert_with("w:over", Duration::from_secs(2), || async {
            "new".to_owned()
        })
        .await;
    assert_eq!(filled, "new");
    assert_eq!(
        b.get::<String>("w:over").await.unwrap().as_deref(),
        Some("new")
    );
    until_gone(&b, "w:over").await;
    gate.release.wait().await;
    assert_eq!(slow.await.unwrap(), "old");
    assert_eq!(
        a.get::<String>("w:over").await.unwrap(),
        None,
        "the older value was not stored"
    );
    assert_eq!(a.stats().conflicts, 1, "{:?}", a.stats());
    // Once expired, the entry is filled over as any miss.
    let next = b
        .get_or_insert_with("w:over", Duration::from_secs(60), || async {
            "fresh".to_owned()
        })
        .await;
    assert_eq!(next, "fresh");
    assert_eq!(
        a.get::<String>("w:over").await.unwrap().as_deref(),
        Some("fresh")
    );
}

#[redcache::cached(prefix = "i:first", ttl = 100, skip(db))]
async fn first_view(id: u64, db: &Db) -> Option<Profile> {
    db.read(id)
}

#[redcache::cached(prefix = "i:second", ttl = 100, skip(db))]
async fn second_view(id: u64, db: &Db) -> Option<Profile> {
    db.read(id)
}

#[redcache::evicts(first_view(id, _), second_view(id, _))]
async fn rename_both(db: &Db, id: u64, name: &str) {
    db.write(id, name);
}

#[redcache::cached(prefix = "i:put-dropped", group = "put-dropped", ttl = 60, skip(db))]
async fn grouped_view(id: u64, db: &Db) -> Option<Profile> {
    db.read(id)
}

/// A `put!` dropped while it reads its group's generation (a client gone, a timeout), so
/// before it writes: the entry it was to replace is retired all the same.
#[tokio::test]
async fn a_put_dropped_before_its_write_retires_the_entry() {
    let server = common::RedisServer::start();
    let cache = server.cache().await;
    let db = Db::with(&[(1, "a")]);
    cache.scope(grouped_view(1, &db)).await;
    assert_eq!(db.queries(), 1);
    db.write(1, "a2");
    {
        use std::future::Future;
        let put = redcache::put!(grouped_view(1, _), Some(profile(1, "a2")));
        let mut put = std::pin::pin!(cache.scope(put));
        // One poll: the generation's read is sent, and waits (the server is frozen, so the
        // connection's thread cannot have its answer yet); then the put is dropped.
        server.pause();
        let polled = std::future::poll_fn(|cx| std::task::Poll::Ready(put.as_mut().poll(cx))).await;
        assert!(polled.is_pending(), "waits on Redis");
    }
    server.resume();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let view = cache.scope(grouped_view(1, &db)).await;
        if view.unwrap().name == "a2" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the old value is still served"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(db.queries(), 2, "read again once, after the retirement");
}

/// A `#[evicts]` call dropped after its write, while its first invalidation waits on Redis
/// (a client gone, a timeout): its invalidations are still all made.
#[tokio::test]
async fn evictions_are_made_even_if_the_call_is_dropped_after_its_write() {
    let server = common::RedisServer::start();
    let cache = server.cache().await;
    let db = Db::with(&[(1, "a")]);
    cache
        .scope(async {
            first_view(1, &db).await;
            second_view(1, &db).await;
        })
        .await;
    assert_eq!(db.queries(), 2);
    {
        use std::future::Future;
        let mut write = std::pin::pin!(cache.scope(rename_both(&db, 1, "a2")));
        // One poll: the write is made, the first invalidation is sent; then it is dropped.
        let polled =
            std::future::poll_fn(|cx| std::task::Poll::Ready(write.as_mut().poll(cx))).await;
        assert!(polled.is_pending(), "waits on Redis");
    }
    assert_eq!(db.rows.lock().unwrap()[&1], "a2", "the write was made");
    // Both entries are retired (by the invalidations' own task): each view reads the write.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (first, second) = cache
            .scope(async { (first_view(1, &db).await, second_view(1, &db).await) })
            .await;
        if first.unwrap().name == "a2" && second.unwrap().name == "a2" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "an invalidation was lost"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[redcache::evicts(first_view(id, _))]
async fn rename_then_audit(db: &Db, id: u64, name: &str) -> Result<(), String> {
    db.write(id, name);
    // The audit after the write, which never ends: the call is dropped here.
    std::future::pending::<()>().await;
    Ok(())
}

#[redcache::evicts(first_view(id, _))]
async fn rename_then_panic(db: &Db, id: u64, name: &str) -> Result<(), String> {
    db.write(id, name);
    panic!("the audit after the write failed");
}

/// Reads `first_view(1)` until it answers `name`, for at most 10 s.
async fn until_first_view_is(cache: &redcache::Cache, db: &Db, name: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while cache.scope(first_view(1, db)).await.unwrap().name != name {
        assert!(
            std::time::Instant::now() < deadline,
            "the value the write replaced is still served"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A `#[evicts]` call dropped while its body runs, after its write (a client gone, a
/// `timeout` around it), or whose body panics after it: its targets are evicted all the
/// same.
#[tokio::test]
async fn evictions_are_made_if_the_body_is_dropped_or_panics_after_its_write() {
    let server = common::RedisServer::start();
    let cache = server.cache().await;
    let db: &'static Db = Box::leak(Box::new(Db::with(&[(1, "a")])));
    cache.scope(first_view(1, db)).await;
    {
        use std::future::Future;
        let mut write = std::pin::pin!(cache.scope(rename_then_audit(db, 1, "a2")));
        let polled =
            std::future::poll_fn(|cx| std::task::Poll::Ready(write.as_mut().poll(cx))).await;
        assert!(polled.is_pending(), "the body waits");
    }
    assert_eq!(db.rows.lock().unwrap()[&1], "a2", "the write was made");
    until_first_view_is(&cache, db, "a2").await;
    let write = tokio::spawn(cache.clone().scope(rename_then_panic(db, 1, "a3")));
    assert!(write.await.unwrap_err().is_panic());
    until_first_view_is(&cache, db, "a3").await;
    assert_eq!(db.queries(), 3, "read again once after each write");
}

/// The walk's own part of each step: every `SCAN` it sends matches the prefix and asks for
/// 250 keys (what a server returns for that is its own choice, and differs between Redis
/// and Valkey), and nothing reads the whole keyspace at once.
#[tokio::test]
async fn each_scan_step_asks_for_250_keys() {
    let server = common::RedisServer::start();
    let cache = server.cache().await;
    let mut conn = server.conn().await;
    let mut pipe = redis::pipe();
    for i in 0..1_000 {
        pipe.cmd("SET").arg(format!("walked:{i}")).arg("x").ignore();
    }
    pipe.query_async::<()>(&mut conn).await.unwrap();
    common::log_commands(&mut conn).await;
    assert_eq!(cache.invalidate_prefix("walked").await.unwrap(), 1_000);
    let logged = common::commands_logged(&mut conn).await;
    let scans: Vec<&Vec<String>> = logged
        .iter()
        .filter(|c| c.name == "SCAN")
        .map(|c| &c.args)
        .collect();
    assert!(!scans.is_empty());
    for args in &scans {
        // `SCAN cursor [MATCH pattern] [COUNT n] ...`: options by pairs after the cursor.
        let option = |wanted: &str| {
            args[2..]
                .chunks(2)
                .find(|pair| pair[0].eq_ignore_ascii_case(wanted))
                .and_then(|pair| pair.get(1).cloned())
        };
        assert_eq!(option("COUNT").as_deref(), Some("250"), "{args:?}");
        assert!(
            option("MATCH").is_some_and(|pattern| pattern.starts_with("walked:")),
            "{args:?}"
        );
    }
    assert!(
        logged.iter().all(|c| c.name != "KEYS"),
        "no KEYS: {:?}",
        logged.iter().map(|c| &c.name).collect::<Vec<_>>()
    );
}
