//! What `#[cached]` promises, checked on a real Redis and on the in-memory store.

mod common;

use common::expected_key;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
    tags: Vec<String>,
}

fn user(id: u64) -> User {
    User {
        id,
        name: format!("user {id}"),
        tags: vec!["a".into(), "b".into()],
    }
}

#[redcache::cached(prefix = "t:user", ttl = 60, skip(calls))]
async fn get_user(id: u64, calls: &AtomicUsize) -> Option<User> {
    calls.fetch_add(1, SeqCst);
    (id != 0).then(|| user(id))
}

on_both_stores! {
    async fn miss_then_hit(b: Backend) {
        let calls = AtomicUsize::new(0);
        b.cache.scope(async {
            let first = get_user(7, &calls).await;
            let second = get_user(7, &calls).await;
            assert_eq!(first, Some(user(7)));
            assert_eq!(second, first, "a hit returns what the body returned");
            assert_eq!(calls.load(SeqCst), 1, "the body ran once");
            get_user(8, &calls).await;
            assert_eq!(calls.load(SeqCst), 2, "other arguments, other entry");
        }).await;
        let stats = b.cache.stats();
        assert_eq!((stats.misses, stats.hits, stats.stores, stats.faults), (2, 1, 2, 0));
        assert!(b.exists(&expected_key("t:user", "[7]")).await);
    }
}

#[redcache::cached(prefix = "t:golden", skip(calls))]
async fn golden(n: u64, s: &str, calls: &AtomicUsize) -> String {
    calls.fetch_add(1, SeqCst);
    format!("{n}{s}")
}

on_both_stores! {
    async fn key_is_the_documented_format(b: Backend) {
        let calls = AtomicUsize::new(0);
        b.cache.scope(golden(42, "x", &calls)).await;
        // md5 of `[42,"x"]`, pinned: changing the key format would orphan every entry.
        let key = "t:golden:f2a6f229156f54f3c6a0c4f73ecf014f";
        assert_eq!(key, expected_key("t:golden", r#"[42,"x"]"#));
        assert!(b.exists(key).await, "{key} not written on {}", b.name());
        if b.is_redis() {
            let raw = b.raw_get(key).await.unwrap();
            assert_eq!(raw, br#"{"v":1,"d":"42x"}"#, "the value is readable JSON");
        }
    }
}

#[tokio::test]
async fn namespace_prefixes_every_key() {
    let server = common::RedisServer::start();
    let cache = server
        .cache_with(common::test_config().url(server.url()).namespace("billing"))
        .await;
    let calls = AtomicUsize::new(0);
    cache.scope(golden(42, "x", &calls)).await;
    let keys = server.keys("*").await;
    assert_eq!(keys, ["billing:t:golden:f2a6f229156f54f3c6a0c4f73ecf014f"]);
}

#[redcache::cached(prefix = "t:noargs", skip(calls))]
async fn no_key_args(calls: &AtomicUsize) -> u32 {
    calls.fetch_add(1, SeqCst);
    5
}

#[redcache::cached(prefix = "t:refs", skip(calls))]
async fn reference_args(name: &str, ids: &[u32], u: &User, calls: &AtomicUsize) -> usize {
    calls.fetch_add(1, SeqCst);
    name.len() + ids.len() + u.tags.len()
}

#[redcache::cached(prefix = "t:pattern", skip(calls))]
async fn pattern_args((a, b): (u32, u32), User { id, .. }: User, calls: &AtomicUsize) -> u64 {
    calls.fetch_add(1, SeqCst);
    u64::from(a + b) + id
}

#[redcache::cached(prefix = "t:impl", skip(calls))]
async fn impl_arg(x: impl Serialize + Send, calls: &AtomicUsize) -> u8 {
    let _ = x;
    calls.fetch_add(1, SeqCst);
    1
}

#[redcache::cached(prefix = "t:keyexpr", key = (user.id, page / 10))]
async fn key_expr(user: &User, page: u32, calls: &AtomicUsize) -> u32 {
    calls.fetch_add(1, SeqCst);
    page
}

on_both_stores! {
    async fn key_material_follows_the_arguments(b: Backend) {
        let calls = AtomicUsize::new(0);
        let u = user(3);
        b.cache.scope(async {
            no_key_args(&calls).await;
            reference_args("ab", &[1, 2], &u, &calls).await;
            pattern_args((1, 2), u.clone(), &calls).await;
            impl_arg("x", &calls).await;
            key_expr(&u, 15, &calls).await;
            assert_eq!(key_expr(&u, 19, &calls).await, 15, "same key material: a hit");
        }).await;
        assert_eq!(calls.load(SeqCst), 5);
        let u_json = serde_json::to_string(&u).unwrap();
        for key in [
            expected_key("t:noargs", "[]"),
            expected_key("t:refs", &format!(r#"["ab",[1,2],{u_json}]"#)),
            expected_key("t:pattern", "[1,2,3]"),
            expected_key("t:impl", r#"["x"]"#),
            expected_key("t:keyexpr", "[3,1]"),
        ] {
            assert!(b.exists(&key).await, "{key} missing on {}", b.name());
        }
    }
}

on_both_stores! {
    async fn skipped_arguments_stay_out_of_the_key(b: Backend) {
        let (one, two) = (AtomicUsize::new(0), AtomicUsize::new(0));
        b.cache.scope(async {
            get_user(5, &one).await;
            get_user(5, &two).await;
        }).await;
        assert_eq!((one.load(SeqCst), two.load(SeqCst)), (1, 0));
    }
}

#[redcache::cached(prefix = "t:ttl", ttl = 100, jitter = 20, skip(calls))]
async fn with_jitter(i: u32, calls: &AtomicUsize) -> u32 {
    calls.fetch_add(1, SeqCst);
    i
}

#[redcache::cached(prefix = "t:ttl_default_jitter", ttl = 100, skip(calls))]
async fn default_jitter(i: u32, calls: &AtomicUsize) -> u32 {
    calls.fetch_add(1, SeqCst);
    i
}

on_both_stores! {
    async fn ttl_is_ttl_plus_random_jitter(b: Backend) {
        let calls = AtomicUsize::new(0);
        let mut seen = Vec::new();
        for i in 0..40 {
            b.cache.scope(with_jitter(i, &calls)).await;
            b.cache.scope(default_jitter(i, &calls)).await;
            // (`TTL` rounds to the nearest second: read more than half a second after the
            // write, a TTL of 100 reads 99.)
            let ttl = b.ttl_secs(&expected_key("t:ttl", &format!("[{i}]"))).await.unwrap();
            assert!((99..=120).contains(&ttl), "TTL {ttl} outside [100, 120] (99 rounded)");
            seen.push(ttl);
            let ttl = b
                .ttl_secs(&expected_key("t:ttl_default_jitter", &format!("[{i}]")))
                .await
                .unwrap();
            let why = "jitter = ttl/10";
            assert!((99..=110).contains(&ttl), "TTL {ttl} outside [100, 110] (99 rounded): {why}");
        }
        seen.sort_unstable();
        seen.dedup();
        assert!(seen.len() > 3, "jitter spreads expiries: {seen:?}");
    }
}

#[redcache::cached(prefix = "t:null", ttl = 100, null_ttl = 30, skip(calls))]
async fn find(id: u64, calls: &AtomicUsize) -> Option<u64> {
    calls.fetch_add(1, SeqCst);
    (id % 2 == 0).then_some(id)
}

/// No `null_ttl`: a `None` lives the default null TTL (60 s), but no longer than `ttl`.
#[redcache::cached(prefix = "t:shortnull", ttl = 5, skip(calls))]
async fn find_briefly(id: u64, calls: &AtomicUsize) -> Option<u64> {
    calls.fetch_add(1, SeqCst);
    (id % 2 == 0).then_some(id)
}

#[redcache::cached(prefix = "t:nonull", null_ttl = 0, skip(calls))]
async fn find_uncached_none(id: u64, calls: &AtomicUsize) -> Option<u64> {
    calls.fetch_add(1, SeqCst);
    (id % 2 == 0).then_some(id)
}

on_both_stores! {
    async fn none_is_cached_for_null_ttl(b: Backend) {
        let calls = AtomicUsize::new(0);
        b.cache.scope(async {
            assert_eq!(find(1, &calls).await, None);
            assert_eq!(find(1, &calls).await, None);
        }).await;
        assert_eq!(calls.load(SeqCst), 1, "the None was served from the cache");
        assert_eq!(b.ttl_secs(&expected_key("t:null", "[1]")).await, Some(30));
        let stats = b.cache.stats();
        assert_eq!((stats.null_hits, stats.hits), (1, 0));
        if b.is_redis() {
            let raw = b.raw_get(&expected_key("t:null", "[1]")).await.unwrap();
            assert_eq!(raw, br#"{"v":1,"none":true}"#);
        }
    }
}

on_both_stores! {
    async fn a_none_lives_no_longer_than_the_functions_ttl(b: Backend) {
        let calls = AtomicUsize::new(0);
        b.cache.scope(async {
            assert_eq!(find_briefly(1, &calls).await, None);
            assert_eq!(find_briefly(1, &calls).await, None);
        }).await;
        assert_eq!(calls.load(SeqCst), 1, "the None was served from the cache");
        assert_eq!(b.ttl_secs(&expected_key("t:shortnull", "[1]")).await, Some(5));
    }
}

on_both_stores! {
    async fn null_ttl_zero_turns_null_caching_off(b: Backend) {
        let calls = AtomicUsize::new(0);
        b.cache.scope(async {
            assert_eq!(find_uncached_none(1, &calls).await, None);
            assert_eq!(find_uncached_none(1, &calls).await, None);
            assert_eq!(find_uncached_none(2, &calls).await, Some(2));
            assert_eq!(find_uncached_none(2, &calls).await, Some(2));
        }).await;
        assert_eq!(calls.load(SeqCst), 3);
        assert!(!b.exists(&expected_key("t:nonull", "[1]")).await);
        assert!(b.exists(&expected_key("t:nonull", "[2]")).await);
    }
}

#[derive(Debug, PartialEq)]
struct DbError(String);

#[redcache::cached(prefix = "t:result", skip(calls))]
async fn load(id: u64, calls: &AtomicUsize) -> Result<User, DbError> {
    calls.fetch_add(1, SeqCst);
    if id == 0 {
        return Err(DbError("no connection".into()));
    }
    Ok(user(id))
}

#[redcache::cached(prefix = "t:result_option", null_ttl = 40, skip(calls))]
async fn load_opt(id: u64, calls: &AtomicUsize) -> Result<Option<User>, DbError> {
    calls.fetch_add(1, SeqCst);
    match id {
        0 => Err(DbError("down".into())),
        1 => Ok(None),
        id => Ok(Some(user(id))),
    }
}

on_both_stores! {
    async fn errors_are_never_stored(b: Backend) {
        let calls = AtomicUsize::new(0);
        b.cache.scope(async {
            for _ in 0..3 {
                assert_eq!(load(0, &calls).await, Err(DbError("no connection".into())));
                assert_eq!(load_opt(0, &calls).await, Err(DbError("down".into())));
            }
            assert_eq!(load(4, &calls).await, Ok(user(4)));
            assert_eq!(load(4, &calls).await, Ok(user(4)));
            assert_eq!(load_opt(1, &calls).await, Ok(None));
            assert_eq!(load_opt(1, &calls).await, Ok(None));
            assert_eq!(load_opt(5, &calls).await, Ok(Some(user(5))));
            assert_eq!(load_opt(5, &calls).await, Ok(Some(user(5))));
        }).await;
        assert_eq!(calls.load(SeqCst), 6 + 3, "every Err ran the body; Ok values were hits");
        assert!(!b.exists(&expected_key("t:result", "[0]")).await);
        assert!(!b.exists(&expected_key("t:result_option", "[0]")).await);
        assert_eq!(b.ttl_secs(&expected_key("t:result_option", "[1]")).await, Some(40));
    }
}

#[redcache::cached(prefix = "t:nested", skip(calls))]
async fn nested(i: u8, calls: &AtomicUsize) -> Option<Option<u8>> {
    calls.fetch_add(1, SeqCst);
    match i {
        0 => None,
        1 => Some(None),
        i => Some(Some(i)),
    }
}

#[redcache::cached(prefix = "t:unit", skip(calls))]
async fn unit(calls: &AtomicUsize) {
    calls.fetch_add(1, SeqCst);
}

#[redcache::cached(prefix = "t:map", skip(calls))]
async fn map_value(calls: &AtomicUsize) -> BTreeMap<String, Vec<Option<f64>>> {
    calls.fetch_add(1, SeqCst);
    BTreeMap::from([("a".into(), vec![Some(1.5), None]), ("ż".into(), vec![])])
}

on_both_stores! {
    async fn a_hit_equals_what_the_body_returned(b: Backend) {
        let calls = AtomicUsize::new(0);
        b.cache.scope(async {
            for i in 0..3 {
                let miss = nested(i, &calls).await;
                let hit = nested(i, &calls).await;
                assert_eq!(hit, miss, "Option<Option<u8>> for {i}");
            }
            unit(&calls).await;
            unit(&calls).await;
            let miss = map_value(&calls).await;
            assert_eq!(map_value(&calls).await, miss);
        }).await;
        assert_eq!(calls.load(SeqCst), 5);
    }
}

#[redcache::cached(prefix = "t:tags", skip(calls))]
async fn by_tags(tags: HashMap<String, u32>, calls: &AtomicUsize) -> usize {
    calls.fetch_add(1, SeqCst);
    tags.len()
}

fn tags(reverse: bool) -> HashMap<String, u32> {
    let mut map = HashMap::new();
    let mut ids: Vec<u32> = (0..64).collect();
    if reverse {
        ids.reverse();
    }
    for i in ids {
        map.insert(format!("tag{i}"), i);
    }
    map
}

on_both_stores! {
    async fn hashmap_order_never_changes_the_key(b: Backend) {
        let calls = AtomicUsize::new(0);
        b.cache.scope(async {
            by_tags(tags(false), &calls).await;
            by_tags(tags(true), &calls).await;
        }).await;
        assert_eq!(calls.load(SeqCst), 1);
        let sorted: BTreeMap<String, u32> = tags(false).into_iter().collect();
        let material = format!("[{}]", serde_json::to_string(&sorted).unwrap());
        assert!(b.exists(&expected_key("t:tags", &material)).await);
    }
}

#[redcache::cached(prefix = "t:generic", skip(calls))]
async fn parse_as<T>(text: &str, calls: &AtomicUsize) -> Option<T>
where
    T: std::str::FromStr + Serialize + serde::de::DeserializeOwned + Send,
{
    calls.fetch_add(1, SeqCst);
    text.parse().ok()
}

on_both_stores! {
    async fn generic_instances_never_share_entries(b: Backend) {
        let calls = AtomicUsize::new(0);
        b.cache.scope(async {
            assert_eq!(parse_as::<u8>("300", &calls).await, None);
            assert_eq!(parse_as::<u16>("300", &calls).await, Some(300));
            assert_eq!(parse_as::<u8>("300", &calls).await, None);
            assert_eq!(parse_as::<u16>("300", &calls).await, Some(300));
        }).await;
        assert_eq!(calls.load(SeqCst), 2);
        let material = common::named(&[(b't', "u16")], r#"["300"]"#);
        assert!(b.exists(&common::expected_key_of("t:generic", &material)).await);
    }
}

#[redcache::cached(prefix = "t:render", skip(render, calls))]
async fn render<F>(id: u64, render: F, calls: &AtomicUsize) -> String
where
    F: Fn(u64) -> String + Send,
{
    calls.fetch_add(1, SeqCst);
    render(id)
}

fn title(id: u64) -> String {
    format!("title {id}")
}

fn body(id: u64) -> String {
    format!("body {id}")
}

struct Renderer<F> {
    render: F,
    calls: AtomicUsize,
}

impl<F: Fn(u64) -> String + Send + Sync> Renderer<F> {
    #[redcache::cached(prefix = "t:renderer", ttl = 60)]
    async fn show(&self, id: u64) -> String {
        self.calls.fetch_add(1, SeqCst);
        (self.render)(id)
    }
}

on_both_stores! {
    async fn instances_for_two_closures_never_share_entries(b: Backend) {
        // rustc names both closures' types alike (`..::{{closure}}`): an instance for one
        // has no name to key it by, and is not cached (a fault each call), never answered
        // with what the other closure made.
        let calls = AtomicUsize::new(0);
        b.cache.scope(async {
            assert_eq!(render(1, |id| format!("title {id}"), &calls).await, "title 1");
            assert_eq!(render(1, |id| format!("body {id}"), &calls).await, "body 1");
            assert_eq!(render(1, |id| format!("title {id}"), &calls).await, "title 1");
        }).await;
        assert_eq!(calls.load(SeqCst), 3);
        assert_eq!(b.cache.stats().faults, 3);
        // A function's type has a name of its own: cached.
        b.cache.scope(async {
            assert_eq!(render(2, title, &calls).await, "title 2");
            assert_eq!(render(2, title, &calls).await, "title 2");
        }).await;
        assert_eq!(calls.load(SeqCst), 4);
        // Nor has an impl over one (`Renderer<..::{{closure}}>`).
        let titles = Renderer { render: |id| format!("title {id}"), calls: AtomicUsize::new(0) };
        let bodies = Renderer { render: |id| format!("body {id}"), calls: AtomicUsize::new(0) };
        b.cache.scope(async {
            assert_eq!(titles.show(1).await, "title 1");
            assert_eq!(bodies.show(1).await, "body 1");
            assert_eq!(titles.show(1).await, "title 1");
        }).await;
        assert_eq!(titles.calls.load(SeqCst) + bodies.calls.load(SeqCst), 3);
        assert_eq!(b.cache.stats().faults, 6);
        // Nor has a function pointer or a `dyn Fn`: every one of a signature has one name.
        let titled: fn(u64) -> String = title;
        let bodied: fn(u64) -> String = body;
        b.cache.scope(async {
            assert_eq!(render(3, titled, &calls).await, "title 3");
            assert_eq!(render(3, bodied, &calls).await, "body 3");
            let boxed: Box<dyn Fn(u64) -> String + Send> = Box::new(body);
            assert_eq!(render(3, boxed, &calls).await, "body 3");
        }).await;
        assert_eq!(calls.load(SeqCst), 7);
        assert_eq!(b.cache.stats().faults, 9);
    }
}

struct Users {
    calls: AtomicUsize,
}

struct Orders {
    calls: AtomicUsize,
}

impl Users {
    #[redcache::cached(ttl = 60)]
    async fn get(&self, id: u64) -> String {
        self.calls.fetch_add(1, SeqCst);
        format!("user {id}")
    }
}

impl Orders {
    #[redcache::cached(ttl = 60)]
    async fn get(&self, id: u64) -> String {
        self.calls.fetch_add(1, SeqCst);
        format!("order {id}")
    }

    #[redcache::cached(ttl = 60)]
    async fn get_arc(self: std::sync::Arc<Self>, id: u64) -> String {
        self.calls.fetch_add(1, SeqCst);
        format!("arc order {id}")
    }
}

on_both_stores! {
    async fn methods_of_two_types_never_share_entries(b: Backend) {
        let users = Users { calls: AtomicUsize::new(0) };
        let orders = std::sync::Arc::new(Orders { calls: AtomicUsize::new(0) });
        let other_users = Users { calls: AtomicUsize::new(0) };
        b.cache.scope(async {
            assert_eq!(users.get(1).await, "user 1");
            assert_eq!(orders.get(1).await, "order 1");
            assert_eq!(other_users.get(1).await, "user 1", "the receiver is not in the key");
            assert_eq!(orders.clone().get_arc(1).await, "arc order 1");
            assert_eq!(orders.clone().get_arc(1).await, "arc order 1");
        }).await;
        assert_eq!(users.calls.load(SeqCst), 1);
        assert_eq!(other_users.calls.load(SeqCst), 0);
        assert_eq!(orders.calls.load(SeqCst), 2);
    }
}

#[redcache::cached(prefix = "t:corrupt", skip(calls))]
async fn corruptible(id: u64, calls: &AtomicUsize) -> User {
    calls.fetch_add(1, SeqCst);
    user(id)
}

#[redcache::cached(prefix = "t:corrupt-grouped", group = "corrupt", skip(calls))]
async fn corruptible_grouped(id: u64, calls: &AtomicUsize) -> User {
    calls.fetch_add(1, SeqCst);
    user(id)
}

on_both_stores! {
    async fn undecodable_entries_are_a_miss_and_overwritten(b: Backend) {
        let calls = AtomicUsize::new(0);
        let key = expected_key("t:corrupt", "[9]");
        if b.is_redis() {
            let _: () = b.raw(redis::cmd("SET").arg(&key).arg(b"\xff garbage")).await;
        } else {
            // The memory store only holds envelopes: write one of another type.
            b.cache.set(&key, &"not a user", std::time::Duration::from_secs(60)).await.unwrap();
        }
        let got = b.cache.scope(corruptible(9, &calls)).await;
        assert_eq!(got, user(9));
        assert_eq!(calls.load(SeqCst), 1);
        assert_eq!(b.cache.stats().faults, 1, "the bad entry is counted as a fault");
        assert_eq!(b.cache.scope(corruptible(9, &calls)).await, user(9));
        assert_eq!(calls.load(SeqCst), 1, "the entry was overwritten with a good one");
    }
}

/// Writes a list at `key`: a key of another Redis type than redcache's strings.
async fn list_at(conn: &mut redis::aio::MultiplexedConnection, key: &str) {
    let _: () = redis::cmd("LPUSH")
        .arg(key)
        .arg("x")
        .query_async(conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn another_format_version_or_a_key_of_another_type_is_overwritten() {
    let server = common::RedisServer::start();
    let cache = server.cache().await;
    let mut conn = server.conn().await;
    let calls = AtomicUsize::new(0);
    let key = expected_key("t:corrupt", "[1]");
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(r#"{"v":2,"d":{"id":1}}"#)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(cache.scope(corruptible(1, &calls)).await, user(1));
    let key2 = expected_key("t:corrupt", "[2]");
    list_at(&mut conn, &key2).await;
    assert_eq!(
        cache.scope(corruptible(2, &calls)).await,
        user(2),
        "WRONGTYPE: the body still answers"
    );
    assert_eq!(calls.load(SeqCst), 2);
    assert_eq!(cache.scope(corruptible(1, &calls)).await, user(1));
    assert_eq!(cache.scope(corruptible(2, &calls)).await, user(2));
    assert_eq!(
        calls.load(SeqCst),
        2,
        "both entries were overwritten with good ones"
    );
    assert_eq!(cache.stats().faults, 2);
    // A grouped function reads its entry with its group's generation (`MGET`, which
    // answers nil for a key of another type): overwritten all the same.
    let key3 = cache
        .scope(async { redcache::key!(corruptible_grouped(3, _)) })
        .await;
    list_at(&mut conn, &key3).await;
    for _ in 0..2 {
        assert_eq!(cache.scope(corruptible_grouped(3, &calls)).await, user(3));
    }
    assert_eq!(calls.load(SeqCst), 3, "overwritten by the first fill");
}

/// An invalidation of a key of another type (a list at an entry's key) writes its
/// tombstone over it rather than failing: a fill begun before it (whose read saw the other
/// type) would otherwise land there after it and serve what the body read before the write.
#[tokio::test]
async fn an_invalidation_writes_over_a_key_of_another_type() {
    let server = common::RedisServer::start();
    let cache = server.cache().await;
    let mut conn = server.conn().await;
    let calls = AtomicUsize::new(0);
    let key = expected_key("t:corrupt", "[4]");
    list_at(&mut conn, &key).await;
    let removed = cache
        .scope(async { redcache::invalidate!(corruptible(4, _)).await })
        .await;
    assert!(
        matches!(removed, Ok(false)),
        "nothing of ours was there: {removed:?}"
    );
    let kind: String = redis::cmd("TYPE")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(kind, "string", "the tombstone is there");
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 0, "a tombstone expires: {ttl}");
    for _ in 0..2 {
        assert_eq!(cache.scope(corruptible(4, &calls)).await, user(4));
    }
    assert_eq!(calls.load(SeqCst), 1, "stored over the tombstone");
    assert_eq!(cache.stats().faults, 0);
}

#[redcache::cached(prefix = "t:stampede", skip(calls, entered, callers))]
async fn slow_cold(id: u64, calls: &AtomicUsize, entered: &AtomicUsize, callers: usize) -> u64 {
    calls.fetch_add(1, SeqCst);
    // Hold the body until every caller has made its call, so without single flight all of
    // them would miss.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while entered.load(SeqCst) < callers && std::time::Instant::now() < deadline {
        tokio::task::yield_now().await;
    }
    id * 2
}

on_both_stores! {
    async fn concurrent_callers_of_a_cold_key_run_the_body_once(b: Backend) {
        const CALLERS: usize = 1000;
        let calls = std::sync::Arc::new(AtomicUsize::new(0));
        let entered = std::sync::Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..CALLERS {
            let (cache, calls, entered) = (b.cache.clone(), calls.clone(), entered.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .scope(async {
                        entered.fetch_add(1, SeqCst);
                        slow_cold(21, &calls, &entered, CALLERS).await
                    })
                    .await
            }));
        }
        for task in tasks {
            assert_eq!(task.await.unwrap(), 42);
        }
        assert_eq!(calls.load(SeqCst), 1, "the body ran once for {CALLERS} callers");
        assert_eq!(b.cache.stats().misses, 1);
    }
}

on_both_stores! {
    async fn programmatic_cache_aside(b: Backend) {
        use std::time::Duration;
        let c = &b.cache;
        assert_eq!(c.get::<User>("manual:1").await.unwrap(), None);
        c.set("manual:1", &user(1), Duration::from_secs(50)).await.unwrap();
        assert_eq!(c.get::<User>("manual:1").await.unwrap(), Some(user(1)));
        assert_eq!(b.ttl_secs("manual:1").await, Some(50));
        assert_eq!(c.get::<u32>("manual:1").await.unwrap(), None, "another type: a miss");
        assert!(c.delete("manual:1").await.unwrap());
        assert!(!c.delete("manual:1").await.unwrap());
        let calls = AtomicUsize::new(0);
        for _ in 0..2 {
            let v: User = c
                .get_or_insert_with("manual:2", Duration::from_secs(30), || async {
                    calls.fetch_add(1, SeqCst);
                    user(2)
                })
                .await;
            assert_eq!(v, user(2));
        }
        assert_eq!(calls.load(SeqCst), 1);
        assert_eq!(b.ttl_secs("manual:2").await, Some(30));
        assert_eq!(c.stats().invalidations, 1);
        // A load that can fail: its `Err` is returned, never stored; its `Ok` is.
        let loads = AtomicUsize::new(0);
        let load = |ok: bool| {
            let loads = &loads;
            move || async move {
                loads.fetch_add(1, SeqCst);
                if ok { Ok(user(3)) } else { Err("the database timed out") }
            }
        };
        let ttl = Duration::from_secs(40);
        assert_eq!(c.try_get_or_insert_with("manual:3", ttl, load(false)).await, Err("the database timed out"));
        assert!(!b.exists("manual:3").await, "an Err is not stored");
        assert_eq!(c.try_get_or_insert_with("manual:3", ttl, load(true)).await, Ok(user(3)));
        assert_eq!(c.try_get_or_insert_with("manual:3", ttl, load(false)).await, Ok(user(3)), "a hit");
        assert_eq!(loads.load(SeqCst), 2);
        assert_eq!(b.ttl_secs("manual:3").await, Some(40));
    }
}

#[redcache::cached(prefix = "t:uninit", skip(calls))]
async fn uninitialised(calls: &AtomicUsize) -> u8 {
    calls.fetch_add(1, SeqCst);
    7
}

#[tokio::test]
async fn without_a_cache_the_body_runs_every_time() {
    // This test binary never installs a global cache.
    let calls = AtomicUsize::new(0);
    assert_eq!(uninitialised(&calls).await, 7);
    assert_eq!(uninitialised(&calls).await, 7);
    assert_eq!(calls.load(SeqCst), 2);
    assert_eq!(redcache::stats(), redcache::Stats::default());
}

#[redcache::cached(prefix = "t:sized", skip(calls))]
async fn sized(len: usize, calls: &AtomicUsize) -> String {
    calls.fetch_add(1, SeqCst);
    "x".repeat(len)
}

#[tokio::test]
async fn oversized_values_are_skipped_and_counted() {
    let server = common::RedisServer::start();
    let cache = server
        .cache_with(common::test_config().url(server.url()).max_value_bytes(64))
        .await;
    let calls = AtomicUsize::new(0);
    cache
        .scope(async {
            for _ in 0..2 {
                assert_eq!(sized(10, &calls).await.len(), 10);
                assert_eq!(
                    sized(100, &calls).await.len(),
                    100,
                    "the body's result still returns"
                );
            }
        })
        .await;
    assert_eq!(
        calls.load(SeqCst),
        1 + 2,
        "the small value was cached, the big one never"
    );
    let exists: bool = redis::cmd("EXISTS")
        .arg(expected_key("t:sized", "[100]"))
        .query_async(&mut server.conn().await)
        .await
        .unwrap();
    assert!(!exists);
    assert_eq!(cache.stats().faults, 2);
}

/// Run by `hashmap_keys_agree_across_processes` in a child process: writes one entry.
#[tokio::test]
#[ignore = "run as a child process by hashmap_keys_agree_across_processes"]
async fn child_writes_tags_entry() {
    let url = common::child_url();
    let cache = redcache::Cache::connect(common::test_config().url(url).build())
        .await
        .unwrap();
    let calls = AtomicUsize::new(0);
    assert_eq!(cache.scope(by_tags(tags(false), &calls)).await, 64);
    assert_eq!(calls.load(SeqCst), 1);
}

#[tokio::test]
async fn hashmap_keys_agree_across_processes() {
    let server = common::RedisServer::start();
    common::child_succeeded(common::spawn_child(
        "child_writes_tags_entry",
        &server.url(),
        &[],
    ));
    let mut conn = server.conn().await;
    let size: u64 = redis::cmd("DBSIZE").query_async(&mut conn).await.unwrap();
    assert_eq!(size, 1, "the child wrote one entry");
    // This process hashes its own HashMap, built in the other order with another seed.
    let cache = server.cache().await;
    let calls = AtomicUsize::new(0);
    assert_eq!(cache.scope(by_tags(tags(true), &calls)).await, 64);
    assert_eq!(calls.load(SeqCst), 0, "a hit on the other process's entry");
}

/// A return type written as an alias: the last path segment does not say `Result`.
type Lookup = Result<u32, DbError>;

#[redcache::cached(prefix = "t:alias", output = "result", skip(calls))]
async fn aliased(id: u32, calls: &AtomicUsize) -> Lookup {
    calls.fetch_add(1, SeqCst);
    if id == 0 {
        Err(DbError("down".into()))
    } else {
        Ok(id)
    }
}

/// An error that serializes: an alias of a `Result` with it is a cacheable plain value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ApiError(String);

type ApiResult<T> = Result<T, ApiError>;

#[redcache::cached(prefix = "t:api", skip(calls))]
async fn api_lookup(id: u32, calls: &AtomicUsize) -> ApiResult<u32> {
    calls.fetch_add(1, SeqCst);
    match id {
        0 => Err(ApiError("down".into())),
        _ => Ok(id),
    }
}

/// `output = "value"`: the whole result cached, `Err` included, as asked.
#[redcache::cached(prefix = "t:api_whole", output = "value", skip(calls))]
async fn api_lookup_whole(id: u32, calls: &AtomicUsize) -> ApiResult<u32> {
    api_lookup(id, calls).await
}

on_both_stores! {
    async fn an_aliased_result_never_caches_its_err_unless_told_to(b: Backend) {
        let calls = AtomicUsize::new(0);
        b.cache.scope(async {
            for _ in 0..2 {
                assert_eq!(api_lookup(0, &calls).await, Err(ApiError("down".into())));
                assert_eq!(api_lookup(3, &calls).await, Ok(3));
            }
        }).await;
        assert_eq!(calls.load(SeqCst), 3, "the Err ran its body each time, the Ok once");
        assert!(!b.exists(&expected_key("t:api", "[0]")).await);
        assert!(b.exists(&expected_key("t:api", "[3]")).await);
        // put! refuses an Err, as for a declared Result, and leaves the entry as it was.
        let err = b
            .cache
            .scope(redcache::put!(api_lookup(3, _), Err(ApiError("x".into()))))
            .await
            .unwrap_err();
        assert!(matches!(err, redcache::Error::NotCacheable), "{err}");
        assert_eq!(b.cache.scope(api_lookup(3, &calls)).await, Ok(3));
        assert_eq!(calls.load(SeqCst), 3, "still a hit");
        let calls = AtomicUsize::new(0);
        b.cache.scope(async {
            for _ in 0..2 {
                assert_eq!(api_lookup_whole(0, &calls).await, Err(ApiError("down".into())));
            }
        }).await;
        assert_eq!(calls.load(SeqCst), 1, "output = \"value\" caches the Err");
    }
}

on_both_stores! {
    async fn output_override_keeps_errors_out_of_the_cache_for_aliases(b: Backend) {
        let calls = AtomicUsize::new(0);
        b.cache.scope(async {
            assert_eq!(aliased(0, &calls).await, Err(DbError("down".into())));
            assert_eq!(aliased(0, &calls).await, Err(DbError("down".into())));
            assert_eq!(aliased(3, &calls).await, Ok(3));
            assert_eq!(aliased(3, &calls).await, Ok(3));
        }).await;
        assert_eq!(calls.load(SeqCst), 3);
        assert!(!b.exists(&expected_key("t:alias", "[0]")).await);
    }
}

#[redcache::cached(prefix = "t:huge", skip(calls))]
async fn huge_args(text: String, tags: Vec<String>, calls: &AtomicUsize) -> usize {
    calls.fetch_add(1, SeqCst);
    text.chars().count() + tags.len()
}

on_both_stores! {
    async fn huge_and_non_ascii_arguments_give_a_fixed_size_key(b: Backend) {
        let calls = AtomicUsize::new(0);
        let text = "żółw 🐢 Ω\n\t\"quoted\" ".repeat(50_000);
        let tags: Vec<String> = (0..1000).map(|i| format!("标签{i}")).collect();
        let expected = text.chars().count() + tags.len();
        b.cache.scope(async {
            assert_eq!(huge_args(text.clone(), tags.clone(), &calls).await, expected);
            assert_eq!(huge_args(text.clone(), tags.clone(), &calls).await, expected);
        }).await;
        assert_eq!(calls.load(SeqCst), 1);
        let material = serde_json::to_string(&(&text, &tags)).unwrap();
        let key = expected_key("t:huge", &material);
        assert_eq!(key.len(), "t:huge:".len() + 32);
        assert!(b.exists(&key).await);
    }
}

/// Serialize, but not as JSON: a map whose keys are tuples.
fn tuple_keyed() -> HashMap<(u8, u8), u8> {
    HashMap::from([((1, 2), 3)])
}

#[redcache::cached(prefix = "t:unencodable", skip(calls))]
async fn unencodable_value(id: u8, calls: &AtomicUsize) -> HashMap<(u8, u8), u8> {
    calls.fetch_add(1, SeqCst);
    let mut map = tuple_keyed();
    map.insert((id, id), id);
    map
}

#[redcache::cached(prefix = "t:unencodable_key", skip(calls))]
async fn unencodable_key(filter: HashMap<(u8, u8), u8>, calls: &AtomicUsize) -> usize {
    calls.fetch_add(1, SeqCst);
    filter.len()
}

on_both_stores! {
    async fn values_and_keys_that_do_not_serialize_fail_open(b: Backend) {
        let calls = AtomicUsize::new(0);
        b.cache.scope(async {
            for _ in 0..2 {
                let map = unencodable_value(7, &calls).await;
                assert_eq!(map.get(&(7, 7)), Some(&7), "the body's result is returned");
                assert_eq!(unencodable_key(tuple_keyed(), &calls).await, 1);
            }
        }).await;
        assert_eq!(calls.load(SeqCst), 4, "nothing could be cached: every call ran its body");
        let stats = b.cache.stats();
        assert_eq!((stats.faults, stats.stores), (4, 0), "{stats:?}");
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Reading {
    mean: Option<f64>,
    extra: Option<serde_json::Value>,
}

/// `Some(Value::Null)` and `Some(NaN)` are written as `null`, which reads back as `None`.
#[redcache::cached(prefix = "t:reading", skip(calls))]
async fn reading(id: u8, calls: &AtomicUsize) -> Reading {
    calls.fetch_add(1, SeqCst);
    match id {
        0 => Reading {
            mean: Some(1.5),
            extra: Some(serde_json::json!({"a": null})),
        },
        1 => Reading {
            mean: Some(1.5),
            extra: Some(serde_json::Value::Null),
        },
        _ => Reading {
            mean: Some(f64::NAN),
            extra: None,
        },
    }
}

on_both_stores! {
    async fn a_value_that_would_read_back_changed_is_returned_and_never_stored(b: Backend) {
        let calls = AtomicUsize::new(0);
        b.cache.scope(async {
            for _ in 0..2 {
                assert_eq!(reading(0, &calls).await.extra, Some(serde_json::json!({"a": null})));
                assert_eq!(reading(1, &calls).await.extra, Some(serde_json::Value::Null));
                assert!(reading(2, &calls).await.mean.is_some_and(f64::is_nan));
            }
        }).await;
        assert_eq!(calls.load(SeqCst), 5, "the faithful value was cached, the other two never");
        assert!(b.exists(&expected_key("t:reading", "[0]")).await);
        assert!(!b.exists(&expected_key("t:reading", "[1]")).await);
        assert!(!b.exists(&expected_key("t:reading", "[2]")).await);
        let stats = b.cache.stats();
        assert_eq!((stats.faults, stats.stores, stats.hits), (4, 1, 1), "{stats:?}");
    }
}

#[redcache::cached(prefix = "t:describe", skip(calls))]
async fn describe(x: f64, calls: &AtomicUsize) -> String {
    calls.fetch_add(1, SeqCst);
    format!("{x}")
}

on_both_stores! {
    async fn a_non_finite_float_argument_runs_uncached_and_never_shares_a_key(b: Backend) {
        let calls = AtomicUsize::new(0);
        b.cache.scope(async {
            assert_eq!(describe(f64::INFINITY, &calls).await, "inf");
            assert_eq!(describe(f64::NEG_INFINITY, &calls).await, "-inf", "not +inf's value");
            assert_eq!(describe(f64::NAN, &calls).await, "NaN");
            assert_eq!(describe(f64::INFINITY, &calls).await, "inf");
            assert_eq!(describe(f64::NEG_INFINITY, &calls).await, "-inf");
            assert_eq!(calls.load(SeqCst), 5, "a non-finite key is never cached");
            // A finite argument is cached as ever.
            assert_eq!(describe(1.5, &calls).await, "1.5");
            assert_eq!(describe(1.5, &calls).await, "1.5");
        }).await;
        assert_eq!(calls.load(SeqCst), 6);
        let stats = b.cache.stats();
        assert_eq!(
            (stats.faults, stats.stores, stats.hits, stats.misses),
            (5, 1, 1, 1),
            "each non-finite call is one fault, and nothing was read or written for it: {stats:?}"
        );
        assert!(b.exists(&expected_key("t:describe", "[1.5]")).await);
        // Neither NaN nor an infinity has a key: `key!` says why.
        let err = std::panic::catch_unwind(|| redcache::key!(describe(f64::NEG_INFINITY, _)))
            .unwrap_err();
        let message = err.downcast_ref::<String>().unwrap();
        assert!(
            message.contains("a non-finite float (NaN or infinity) cannot be part of a cache key"),
            "{message}"
        );
    }
}

#[redcache::cached(prefix = "t:choice", skip(calls))]
async fn choice(pick: Option<Option<u8>>, calls: &AtomicUsize) -> String {
    calls.fetch_add(1, SeqCst);
    format!("{pick:?}")
}

on_both_stores! {
    async fn none_and_some_none_arguments_have_their_own_entries(b: Backend) {
        let calls = AtomicUsize::new(0);
        let picks = [None, Some(None), Some(Some(3))];
        b.cache.scope(async {
            for _ in 0..2 {
                for pick in picks {
                    assert_eq!(choice(pick, &calls).await, format!("{pick:?}"));
                }
            }
        }).await;
        assert_eq!(calls.load(SeqCst), 3, "each argument ran once, then hit its own entry");
        let stats = b.cache.stats();
        assert_eq!((stats.stores, stats.hits, stats.faults), (3, 3, 0), "{stats:?}");
        for material in ["[null]", "[[null]]", "[3]"] {
            let key = expected_key("t:choice", material);
            assert!(b.exists(&key).await, "{material}: {key} missing on {}", b.name());
        }
    }
}

/// A value the in-process store has no room for (a store smaller than `max_value_bytes`
/// allows for) is refused by `set` as too large, as a fill is, and the entry it was to
/// replace is retired: never reported stored, then missing.
#[tokio::test]
async fn a_value_too_large_for_the_memory_store_is_refused_by_set() {
    let config = common::test_config().memory_max_bytes(1 << 20).build();
    let cache = redcache::Cache::memory_with(config);
    let ttl = std::time::Duration::from_secs(60);
    cache.set("k", "small", ttl).await.unwrap();
    assert_eq!(cache.stats().stores, 1);
    let big = "x".repeat((1 << 20) - 300);
    let refused = cache.set("k", &big, ttl).await.unwrap_err();
    assert!(
        matches!(refused, redcache::Error::TooLarge { .. }),
        "{refused:?}"
    );
    assert_eq!(
        cache.get::<String>("k").await.unwrap(),
        None,
        "the old value is retired"
    );
    assert_eq!(cache.stats().stores, 1);
}

/// `Cache::memory_with` goes on without a setting it cannot use, as its log says: a
/// `max_value_bytes`, capacity or size of 0 (read as "no limit" by some) would have made
/// the store keep nothing; the default holds instead. `try_memory_with` names the setting.
#[tokio::test]
async fn memory_with_goes_on_without_a_limit_of_zero() {
    let zeros = [
        (
            common::test_config().max_value_bytes(0).build(),
            "REDCACHE_MAX_VALUE_BYTES",
        ),
        (
            common::test_config().memory_capacity(0).build(),
            "REDCACHE_MEMORY_CAPACITY",
        ),
        (
            common::test_config().memory_max_bytes(0).build(),
            "REDCACHE_MEMORY_MAX_BYTES",
        ),
    ];
    for (config, setting) in zeros {
        let refused = redcache::Cache::try_memory_with(config.clone()).unwrap_err();
        assert!(refused.to_string().contains(setting), "{refused}");
        let cache = redcache::Cache::memory_with(config);
        cache
            .set("k", &1u8, std::time::Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(cache.get::<u8>("k").await.unwrap(), Some(1), "{setting}");
    }
    let defaults = redcache::Cache::memory_with(common::test_config().build());
    let zeros = redcache::Cache::memory_with(
        common::test_config()
            .max_value_bytes(0)
            .memory_capacity(0)
            .memory_max_bytes(0)
            .build(),
    );
    let limits = |c: &redcache::Cache| {
        let c = c.config();
        (
            c.max_value_bytes(),
            c.memory_capacity(),
            c.memory_max_bytes(),
        )
    };
    assert_eq!(limits(&zeros), limits(&defaults));
}
