//! Batch cache-aside (`Cache::get_or_insert_many`): one read for many ids, one load of the
//! missing ones, entries shared with a single-id `#[cached]` function.

mod common;

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

fn user(id: u64) -> User {
    User {
        id,
        name: format!("user {id}"),
    }
}

const TTL: Duration = Duration::from_secs(60);

/// The "database": id 0 does not exist; records which ids each load asked for.
#[derive(Default)]
struct Db {
    loads: Mutex<Vec<Vec<u64>>>,
}

impl Db {
    async fn load(&self, mut ids: Vec<u64>) -> HashMap<u64, User> {
        ids.sort_unstable();
        self.loads.lock().unwrap().push(ids.clone());
        ids.into_iter()
            .filter(|id| *id != 0)
            .map(|id| (id, user(id)))
            .collect()
    }

    fn loads(&self) -> Vec<Vec<u64>> {
        self.loads.lock().unwrap().clone()
    }
}

#[redcache::cached(prefix = "b:user", ttl = 60, skip(calls))]
async fn get_user(id: u64, calls: &AtomicUsize) -> User {
    calls.fetch_add(1, SeqCst);
    user(id)
}

on_both_stores! {
    async fn only_the_missing_ids_are_loaded(b: Backend) {
        let db = Db::default();
        let c = &b.cache;
        let got = c.get_or_insert_many("b:user", &[1, 2, 3, 0], TTL, |ids| db.load(ids)).await;
        assert_eq!(got.len(), 3, "id 0 does not exist: absent, not an error");
        assert_eq!(got[&2], user(2));
        let got = c.get_or_insert_many("b:user", &[2, 3, 4, 0], TTL, |ids| db.load(ids)).await;
        assert_eq!(got.len(), 3);
        assert_eq!(db.loads(), vec![vec![0, 1, 2, 3], vec![0, 4]], "a missing id is not cached");
        let stats = c.stats();
        assert_eq!((stats.hits, stats.misses, stats.stores), (2, 6, 4));
        assert_eq!(b.ttl_secs(&common::expected_key("b:user", "[4]")).await, Some(60));
    }
}

on_both_stores! {
    async fn an_id_asked_twice_in_a_batch_is_loaded_and_stored_once(b: Backend) {
        let db = Db::default();
        let c = &b.cache;
        let got = c.get_or_insert_many("b:user", &[5, 5, 6, 5], TTL, |ids| db.load(ids)).await;
        assert_eq!(got, HashMap::from([(5, user(5)), (6, user(6))]));
        assert_eq!(db.loads(), vec![vec![5, 6]]);
        let stats = c.stats();
        assert_eq!((stats.misses, stats.stores, stats.conflicts), (2, 2, 0), "{stats:?}");
        let got = c.get_or_insert_many("b:user", &[6, 6], TTL, |ids| db.load(ids)).await;
        assert_eq!(got, HashMap::from([(6, user(6))]));
        assert_eq!((c.stats().hits, db.loads().len()), (1, 1));
    }
}

on_both_stores! {
    async fn a_batch_and_a_single_id_function_share_entries(b: Backend) {
        let db = Db::default();
        let calls = AtomicUsize::new(0);
        let c = &b.cache;
        c.scope(get_user(1, &calls)).await;
        c.get_or_insert_many("b:user", &[1, 2], TTL, |ids| db.load(ids)).await;
        assert_eq!(db.loads(), vec![vec![2]], "the single call's entry was a hit");
        assert_eq!(c.scope(get_user(2, &calls)).await, user(2));
        assert_eq!(calls.load(SeqCst), 1, "the batch's entry is a hit for the single call");
        c.scope(async { redcache::invalidate!(get_user(2, _)).await.unwrap() }).await;
        c.get_or_insert_many("b:user", &[1, 2], TTL, |ids| db.load(ids)).await;
        assert_eq!(db.loads(), vec![vec![2], vec![2]], "invalidate! reaches the batch entry");
    }
}

#[redcache::cached(prefix = "b:maybe", ttl = 60, skip(calls))]
async fn find_user(id: u64, calls: &AtomicUsize) -> Option<User> {
    calls.fetch_add(1, SeqCst);
    (id != 0).then(|| user(id))
}

on_both_stores! {
    async fn a_cached_none_of_a_single_id_function_is_a_null_hit_for_a_batch(b: Backend) {
        let db = Db::default();
        let calls = AtomicUsize::new(0);
        let c = &b.cache;
        assert_eq!(c.scope(find_user(0, &calls)).await, None);
        assert_eq!(c.scope(find_user(1, &calls)).await, Some(user(1)));
        let got = c.get_or_insert_many("b:maybe", &[0, 1, 2], TTL, |ids| db.load(ids)).await;
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[&1], user(1));
        assert_eq!(db.loads(), vec![vec![2]], "id 0 is known not to exist: not loaded");
        let stats = c.stats();
        assert_eq!((stats.hits, stats.null_hits, stats.faults), (1, 1, 0), "{stats:?}");
    }
}

#[tokio::test]
async fn a_batch_is_one_mget_and_one_pipelined_write() {
    let server = common::RedisServer::start();
    let cache = server.cache().await;
    let db = Db::default();
    let ids: Vec<u64> = (1..=100).collect();
    cache
        .get_or_insert_many("b:user", &ids[..50], TTL, |ids| db.load(ids))
        .await;
    let mut conn = server.conn().await;
    common::log_commands(&mut conn).await;
    let got = cache
        .get_or_insert_many("b:user", &ids, TTL, |ids| db.load(ids))
        .await;
    assert_eq!(got.len(), 100);
    assert_eq!(db.loads()[1], (51..=100).collect::<Vec<_>>());
    let commands: Vec<String> = common::commands_logged(&mut conn)
        .await
        .into_iter()
        .map(|c| c.name)
        .collect();
    let count = |name: &str| commands.iter().filter(|c| *c == name).count();
    assert_eq!(count("MGET"), 1, "one MGET for 100 ids: {commands:?}");
    // Nothing was there for the 50 loaded ids: each fill is SET NX (no script needed).
    assert_eq!(count("SET"), 50, "one fill per loaded id: {commands:?}");
    assert_eq!(commands.len(), 51, "nothing else: {commands:?}");
    assert_eq!(cache.stats().stores, 100);
}

/// A batch whose fills mix `SET NX` (nothing was there) and the fill script (an
/// invalidation's tombstone was), sent to a server that does not have the script (a new or
/// restarted one, or after `SCRIPT FLUSH`): only the script's fills are sent again, so
/// every value is stored and counted as stored, none as a conflict with itself.
#[tokio::test]
async fn a_batch_sent_before_the_script_is_loaded_stores_and_counts_each_value_once() {
    let server = common::RedisServer::start();
    let cache = server.cache().await;
    assert!(!cache
        .delete(&common::expected_key("b:user", "[2]"))
        .await
        .unwrap());
    let mut conn = server.conn().await;
    let () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .unwrap();
    let before = cache.stats();
    let db = Db::default();
    let got = cache
        .get_or_insert_many("b:user", &[1, 2], TTL, |ids| db.load(ids))
        .await;
    assert_eq!((got[&1].clone(), got[&2].clone()), (user(1), user(2)));
    let after = cache.stats();
    assert_eq!(after.stores - before.stores, 2, "{after:?}");
    assert_eq!(after.conflicts - before.conflicts, 0, "{after:?}");
    assert_eq!(after.faults, 0, "{after:?}");
    let calls = AtomicUsize::new(0);
    for id in [1, 2] {
        assert_eq!(cache.scope(get_user(id, &calls)).await, user(id));
    }
    assert_eq!(calls.load(SeqCst), 0, "both stored");
}

#[tokio::test]
async fn a_batch_fails_open() {
    let mut server = common::RedisServer::start();
    let cache = server
        .cache_with(
            common::test_config()
                .url(server.url())
                .op_timeout(Duration::from_millis(200)),
        )
        .await;
    server.stop();
    let db = Db::default();
    let got = cache
        .get_or_insert_many("b:user", &[1, 2, 3], TTL, |ids| db.load(ids))
        .await;
    assert_eq!(got.len(), 3);
    assert_eq!(db.loads(), vec![vec![1, 2, 3]]);
    assert!(cache.stats().faults >= 1);
}

/// In an outage a batch's failed read counts toward the breaker, and the fill it then has
/// nothing for is no operation: it used to "succeed" without Redis, which reset the count
/// of faults, so batches alone never opened the breaker and each waited out the timeout.
#[tokio::test]
async fn batches_in_an_outage_open_the_breaker() {
    let mut server = common::RedisServer::start();
    let cache = server
        .cache_with(
            common::test_config()
                .url(server.url())
                .op_timeout(Duration::from_millis(200))
                .breaker_threshold(2)
                .breaker_cooldown(Duration::from_secs(60)),
        )
        .await;
    server.stop();
    let db = Db::default();
    for _ in 0..2 {
        let got = cache
            .get_or_insert_many("b:user", &[1, 2], TTL, |ids| db.load(ids))
            .await;
        assert_eq!(got.len(), 2);
    }
    let health = cache.health();
    assert!(
        health.breaker_open && health.consecutive_faults == 2,
        "{health:?}"
    );
    assert!(!health.is_ready());
    // Open: the read is skipped, once per batch; the loaded values are still returned.
    let skipped = cache.stats().skipped;
    let got = cache
        .get_or_insert_many("b:user", &[3], TTL, |ids| db.load(ids))
        .await;
    assert_eq!(got[&3], user(3));
    assert_eq!(cache.stats().skipped, skipped + 1);
    assert_eq!(db.loads().len(), 3);
}

/// A batch whose read failed has nothing to write, however long its load took: no
/// conflict is counted for it.
#[tokio::test]
async fn a_slow_batch_in_an_outage_counts_no_conflict() {
    let mut server = common::RedisServer::start();
    let cache = server
        .cache_with(
            common::test_config()
                .url(server.url())
                .op_timeout(Duration::from_millis(100))
                .max_fill_time(Duration::from_millis(300)),
        )
        .await;
    server.stop();
    let got = cache
        .get_or_insert_many("b:user", &[1, 2], TTL, |ids| async move {
            tokio::time::sleep(Duration::from_millis(400)).await;
            ids.into_iter()
                .map(|id| (id, user(id)))
                .collect::<HashMap<_, _>>()
        })
        .await;
    assert_eq!(got.len(), 2);
    let stats = cache.stats();
    assert_eq!(
        (stats.misses, stats.conflicts, stats.stores),
        (2, 0, 0),
        "{stats:?}"
    );
}

/// A value whose encoding takes `ENCODING` (a large batch, or one compressed).
#[derive(Debug, Clone, PartialEq, Deserialize)]
struct SlowToEncode(u64);

const ENCODING: Duration = Duration::from_millis(250);

impl Serialize for SlowToEncode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        std::thread::sleep(ENCODING);
        serializer.serialize_newtype_struct("SlowToEncode", &self.0)
    }
}

/// A batch loads an id while it is invalidated, and its load ends well within the fill
/// deadline; its values are encoded past it, when the invalidation's tombstone (which
/// lives `max_fill_time`) has expired: the batch must not store what it loaded.
async fn a_batch_encoded_past_its_fill_deadline_stores_nothing(cache: redcache::Cache) {
    let key = common::expected_key("b:slow", "[1]");
    let begun = std::time::Instant::now();
    // The load ends this long after the batch began: within the deadline (300 ms, less
    // the operation timeout of 50 ms on Redis), the encoding past the tombstone's life.
    let load_ends = Duration::from_millis(150);
    let got = cache
        .get_or_insert_many("b:slow", &[1u64], TTL, |ids| {
            let (cache, key) = (cache.clone(), key.clone());
            async move {
                // The row changes and the writer invalidates, while the load reads.
                assert!(!cache.delete(&key).await.unwrap());
                tokio::time::sleep(load_ends.saturating_sub(begun.elapsed())).await;
                ids.into_iter()
                    .map(|id| (id, SlowToEncode(id)))
                    .collect::<HashMap<_, _>>()
            }
        })
        .await;
    assert_eq!(
        got.get(&1),
        Some(&SlowToEncode(1)),
        "the caller gets its load"
    );
    assert!(
        begun.elapsed() > Duration::from_millis(300),
        "encoded past the tombstone's life"
    );
    assert_eq!(cache.get::<SlowToEncode>(&key).await.unwrap(), None);
    let stats = cache.stats();
    assert_eq!((stats.stores, stats.conflicts), (0, 1), "{stats:?}");
}

#[tokio::test]
async fn a_batch_encoded_past_its_fill_deadline_stores_nothing_in_redis() {
    let server = common::RedisServer::start();
    let cache = server
        .cache_with(
            common::test_config()
                .url(server.url())
                .op_timeout(Duration::from_millis(50))
                .max_fill_time(Duration::from_millis(300)),
        )
        .await;
    a_batch_encoded_past_its_fill_deadline_stores_nothing(cache).await;
}

#[tokio::test]
async fn a_batch_encoded_past_its_fill_deadline_stores_nothing_in_memory() {
    let config = redcache::Config::builder()
        .max_fill_time(Duration::from_millis(300))
        .build();
    a_batch_encoded_past_its_fill_deadline_stores_nothing(redcache::Cache::memory_with(config))
        .await;
}

/// An entry written in a group (its envelope stamped with a generation) is a miss for a
/// batch, which cannot check that generation, and is not written over: out of its group's
/// invalidations, an ungrouped value there would be served on.
#[tokio::test]
async fn a_batch_never_serves_nor_writes_over_an_entry_of_a_group() {
    let server = common::RedisServer::start();
    let cache = server.cache().await;
    let key = common::expected_key("b:user", "[5]");
    cache.set(&key, &user(5), TTL).await.unwrap();
    let mut conn = server.conn().await;
    let plain: Vec<u8> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    let head = br#"{"v":1,"#;
    assert!(
        plain.starts_with(head),
        "{}",
        String::from_utf8_lossy(&plain)
    );
    let grouped = [&br#"{"v":1,"g":7,"#[..], &plain[head.len()..]].concat();
    let () = redis::cmd("SET")
        .arg(&key)
        .arg(&grouped)
        .arg("EX")
        .arg(60)
        .query_async(&mut conn)
        .await
        .unwrap();

    let db = Db::default();
    let got = cache
        .get_or_insert_many("b:user", &[5], TTL, |ids| db.load(ids))
        .await;
    assert_eq!(got[&5], user(5));
    assert_eq!(db.loads(), vec![vec![5]], "the grouped entry is a miss");
    let now: Vec<u8> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(now, grouped, "and is not written over");
    assert_eq!(cache.stats().stores, 1, "only the `set`");
}
