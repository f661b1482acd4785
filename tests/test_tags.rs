//! Tags with arguments: `#[cached(tags("user:{user_id}"))]` and
//! `redcache::invalidate_tag`, on a real Redis, a cluster, a master behind Sentinel and the
//! memory store, with body runs counted and what Redis holds read back.

mod common;

use common::{expected_key, Backend};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use tokio::sync::Notify;

#[redcache::cached(prefix = "tg:profile", ttl = 600, tags("user:{user_id}"))]
async fn profile(user_id: u64) -> String {
    format!("user {user_id}")
}

#[redcache::cached(prefix = "tg:orders", ttl = 600, tags("user:{user_id}", "orders"))]
async fn orders(user_id: u64, page: u32) -> Vec<u64> {
    vec![user_id * 100 + u64::from(page)]
}

/// Misses and hits of `cache` since `before`.
fn counts(cache: &redcache::Cache, before: redcache::Stats) -> (u64, u64) {
    let now = cache.stats();
    (now.misses - before.misses, now.hits - before.hits)
}

/// With Redis down, a tagged call cannot read its tags' generations: it runs its body,
/// and is counted under its prefix as a miss, as an untagged call whose read failed is.
#[tokio::test]
async fn a_tagged_call_in_an_outage_is_counted_as_a_miss() {
    let mut b = Backend::redis().await;
    b.server.as_mut().unwrap().stop();
    for id in 0..4 {
        assert_eq!(b.cache.scope(profile(id)).await, format!("user {id}"));
    }
    let stats = b.cache.stats_by_prefix();
    let profile = stats
        .iter()
        .find(|(p, _)| p == "tg:profile")
        .expect("counted")
        .1;
    assert_eq!((profile.misses, profile.hits), (4, 0));
    assert!(b.cache.stats().faults >= 1);
}

#[redcache::cached(
    prefix = "tg:slow",
    ttl = 600,
    tags("user:{user_id}"),
    skip(runs, cache)
)]
async fn slow_profile(user_id: u64, runs: &AtomicUsize, cache: &redcache::Cache) -> String {
    runs.fetch_add(1, SeqCst);
    // Every other caller waits on this run (it would wait in vain if each ran its own).
    common::until_waiting(cache, CALLERS - 1).await;
    format!("user {user_id}")
}

const CALLERS: usize = 20;

/// With Redis down, concurrent tagged calls of one key still share one body run, as
/// untagged calls whose reads failed do: the database behind a cache is never hit hardest
/// when the cache is out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tagged_calls_in_an_outage_share_one_body_run() {
    let mut b = Backend::redis().await;
    b.server.as_mut().unwrap().stop();
    let runs = Arc::new(AtomicUsize::new(0));
    let calls: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (cache, runs) = (b.cache.clone(), runs.clone());
            tokio::spawn(async move { cache.scope(slow_profile(9, &runs, &cache)).await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap(), "user 9");
    }
    assert_eq!(runs.load(SeqCst), 1);
    assert!(b.cache.stats().faults >= 1);
}

on_both_stores! {
    async fn invalidate_tag_retires_every_entry_carrying_it_across_functions(b: Backend) {
        let cache = &b.cache;
        let all = || async {
            profile(42).await;
            orders(42, 1).await;
            orders(42, 2).await;
            profile(7).await;
            orders(7, 1).await;
        };
        cache.scope(all()).await;
        let before = cache.stats();
        cache.scope(all()).await;
        assert_eq!(counts(cache, before), (0, 5), "{}: all hits", b.name());
        // User 42 changed: its three entries, of two functions, miss; user 7's hit.
        cache.invalidate_tag("user:42").await.unwrap();
        let before = cache.stats();
        cache.scope(all()).await;
        assert_eq!(counts(cache, before), (3, 2), "{}", b.name());
        // A tag shared by every call of a function: all of `orders`, none of `profile`.
        cache.scope(redcache::invalidate_tag("orders")).await.unwrap();
        let before = cache.stats();
        cache.scope(all()).await;
        assert_eq!(counts(cache, before), (3, 2), "{}", b.name());
        // A tag nothing carries: nothing changes.
        cache.invalidate_tag("user:1000").await.unwrap();
        let before = cache.stats();
        cache.scope(all()).await;
        assert_eq!(counts(cache, before), (0, 5), "{}", b.name());
        assert_eq!(cache.stats().invalidations, 3);
    }
}

/// Lets a test hold the first run of a body until it has invalidated.
#[derive(Default)]
struct Gate {
    runs: AtomicUsize,
    started: Notify,
    release: Notify,
}

#[redcache::cached(prefix = "tg:gated", ttl = 600, tags("user:{user_id}"), skip(gate))]
async fn gated(user_id: u64, gate: &Gate) -> String {
    let run = gate.runs.fetch_add(1, SeqCst) + 1;
    if run == 1 {
        gate.started.notify_one();
        gate.release.notified().await;
    }
    format!("user {user_id} v{run}")
}

on_both_stores! {
    async fn a_fill_that_started_before_the_tag_invalidation_is_never_served_after_it(b: Backend) {
        let gate = Arc::new(Gate::default());
        let first = {
            let (cache, gate) = (b.cache.clone(), gate.clone());
            tokio::spawn(async move { cache.scope(gated(5, &gate)).await })
        };
        // The body runs with the database's old state; the write and the invalidation
        // happen meanwhile; then the body's (old) result is stored.
        gate.started.notified().await;
        b.cache.invalidate_tag("user:5").await.unwrap();
        gate.release.notify_one();
        assert_eq!(first.await.unwrap(), "user 5 v1", "the call gets its own result");
        // The next call does not get it: its entry carries the tag's old generation.
        assert_eq!(b.cache.scope(gated(5, &gate)).await, "user 5 v2", "{}", b.name());
        assert_eq!(b.cache.scope(gated(5, &gate)).await, "user 5 v2");
        assert_eq!(gate.runs.load(SeqCst), 2);
    }
}

on_both_stores! {
    async fn key_invalidate_and_put_work_on_tagged_functions(b: Backend) {
        // The tags are not in the key.
        assert_eq!(redcache::key!(profile(3)), expected_key("tg:profile", "[3]"));
        b.cache.scope(async {
            redcache::put!(profile(3), "put by a writer".to_owned()).await.unwrap();
            assert_eq!(profile(3).await, "put by a writer");
            assert!(redcache::invalidate!(profile(3)).await.unwrap());
            // The body's value again: it ran after `invalidate!`.
            assert_eq!(profile(3).await, "user 3");
            // A value put before the tag's invalidation is retired by it.
            redcache::put!(profile(3), "put again".to_owned()).await.unwrap();
            redcache::invalidate_tag("user:3").await.unwrap();
            assert_eq!(profile(3).await, "user 3");
        }).await;
    }
}

/// What Redis holds: the tag's generation with its TTL, the digest in the entry's stamp.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tag_generations_live_in_redis_for_a_week_and_an_invalidation_renews_them() {
    let b = Backend::redis().await;
    b.cache.scope(profile(11)).await;
    let gen_key = "redcache:tag:user:11";
    let first: String = b.raw(redis::cmd("GET").arg(gen_key)).await;
    let week = 7 * 24 * 3600;
    let ttl: i64 = b.raw(redis::cmd("TTL").arg(gen_key)).await;
    assert!((week - 5..=week).contains(&ttl), "ttl {ttl}");
    let entry = String::from_utf8(b.raw_get(&redcache::key!(profile(11))).await.unwrap()).unwrap();
    assert!(
        entry.contains(r#""tg":"#),
        "the entry carries the digest: {entry}"
    );
    // Let the TTL run down a little, then invalidate: a new generation, a full week.
    b.raw::<()>(redis::cmd("EXPIRE").arg(gen_key).arg(60)).await;
    b.cache.invalidate_tag("user:11").await.unwrap();
    let second: String = b.raw(redis::cmd("GET").arg(gen_key)).await;
    assert_ne!(first, second);
    let ttl: i64 = b.raw(redis::cmd("TTL").arg(gen_key)).await;
    assert!((week - 5..=week).contains(&ttl), "ttl {ttl}");
}

/// A generation that is lost (expired, evicted) is replaced by a new random one: the
/// entries miss, and an entry of a generation before an invalidation never comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_tag_generation_is_a_miss_never_an_old_value() {
    let b = Backend::redis().await;
    let gate = Gate::default();
    let gen_key = "redcache:tag:user:12";
    // v1 stored under the first generation, then the tag is invalidated: v2 under the
    // second.
    gate.started.notify_one();
    gate.release.notify_one();
    assert_eq!(b.cache.scope(gated(12, &gate)).await, "user 12 v1");
    b.cache.invalidate_tag("user:12").await.unwrap();
    assert_eq!(b.cache.scope(gated(12, &gate)).await, "user 12 v2");
    // The generation is lost: the next call misses (a third run), never v1 again.
    b.raw::<()>(redis::cmd("DEL").arg(gen_key)).await;
    assert_eq!(b.cache.scope(gated(12, &gate)).await, "user 12 v3");
    assert_eq!(b.cache.scope(gated(12, &gate)).await, "user 12 v3");
    assert_eq!(gate.runs.load(SeqCst), 3);
}

/// With Redis down, a tagged call cannot read its tags: the body runs and its result is
/// returned; the fault is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_redis_down_a_tagged_call_runs_its_body() {
    let mut b = Backend::redis().await;
    let gate = Gate::default();
    gate.started.notify_one();
    gate.release.notify_one();
    b.server.as_mut().unwrap().stop();
    assert_eq!(b.cache.scope(gated(13, &gate)).await, "user 13 v1");
    assert_eq!(b.cache.scope(gated(13, &gate)).await, "user 13 v2");
    assert_eq!(gate.runs.load(SeqCst), 2);
    assert!(b.cache.stats().faults >= 1, "{:?}", b.cache.stats());
}

#[redcache::evicts(tag = "user:{user_id}")]
async fn rename(user_id: u64, fail: bool) -> Result<(), String> {
    match fail {
        true => Err(format!("user {user_id}: conflict")),
        false => Ok(()),
    }
}

on_both_stores! {
    async fn evicts_retires_a_tag_after_the_write_succeeded(b: Backend) {
        let cache = &b.cache;
        let both = || async {
            profile(21).await;
            orders(21, 1).await;
        };
        cache.scope(both()).await;
        // A write that failed evicts nothing.
        assert!(cache.scope(rename(21, true)).await.is_err());
        let before = cache.stats();
        cache.scope(both()).await;
        assert_eq!(counts(cache, before), (0, 2), "{}", b.name());
        // A write that succeeded retires both functions' entries for user 21.
        cache.scope(rename(21, false)).await.unwrap();
        let before = cache.stats();
        cache.scope(both()).await;
        assert_eq!(counts(cache, before), (2, 0), "{}", b.name());
    }
}

/// A caller that read the tag's new generation never takes the result of a flight that
/// began before the invalidation (its leader's body read the old data). On the memory
/// store, where one poll takes a call up to its wait on the flight: deterministic.
#[tokio::test(flavor = "current_thread")]
async fn a_follower_that_read_the_new_generation_does_not_take_the_older_flights_result() {
    let cache = redcache::Cache::memory();
    let gate = Arc::new(Gate::default());
    let leader = {
        let (cache, gate) = (cache.clone(), gate.clone());
        tokio::spawn(async move { cache.scope(gated(8, &gate)).await })
    };
    gate.started.notified().await;
    cache.invalidate_tag("user:8").await.unwrap();
    let mut follower = std::pin::pin!(cache.scope(gated(8, &gate)));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(
        follower.as_mut().poll(&mut cx).is_pending(),
        "the second call waits on the first one's flight"
    );
    gate.release.notify_one();
    assert_eq!(leader.await.unwrap(), "user 8 v1");
    assert_eq!(follower.await, "user 8 v2", "not the flight's older result");
    assert_eq!(gate.runs.load(SeqCst), 2);
}

#[redcache::cached(prefix = "tg:maybe", ttl = 600, tags("user:{id}"), skip(runs))]
async fn maybe(id: u64, runs: &AtomicUsize) -> Option<String> {
    runs.fetch_add(1, SeqCst);
    (id != 0).then(|| format!("user {id}"))
}

on_both_stores! {
    async fn a_tagged_functions_none_is_cached_and_retired_by_its_tag(b: Backend) {
        let runs = AtomicUsize::new(0);
        b.cache.scope(async {
            assert_eq!(maybe(0, &runs).await, None);
            assert_eq!(maybe(0, &runs).await, None, "a null hit");
            assert_eq!(runs.load(SeqCst), 1, "{}", b.name());
            redcache::invalidate_tag("user:0").await.unwrap();
            assert_eq!(maybe(0, &runs).await, None);
            assert_eq!(runs.load(SeqCst), 2, "the tag retired the cached None");
            // `put!` of a `None` stamps the current generations too.
            redcache::put!(maybe(0, _), None).await.unwrap();
            assert_eq!(maybe(0, &runs).await, None);
            assert_eq!(runs.load(SeqCst), 2, "the put None is a null hit");
        }).await;
        assert_eq!(b.cache.stats().null_hits, 2);
    }
}

on_both_stores! {
    async fn batches_and_cache_get_never_serve_a_tagged_entry(b: Backend) {
        let cache = &b.cache;
        assert_eq!(cache.scope(profile(31)).await, "user 31");
        let key = cache.scope(async { redcache::key!(profile(31)) }).await;
        // `Cache::get` cannot check the entry's tags: it reads nothing there.
        assert_eq!(cache.get::<String>(&key).await.unwrap(), None, "{}", b.name());
        // A batch over the same prefix loads the id instead of serving the tagged entry,
        // which a tag invalidation may have retired.
        cache.invalidate_tag("user:31").await.unwrap();
        let loaded = AtomicUsize::new(0);
        let load = |ids: Vec<u64>| {
            loaded.fetch_add(ids.len(), SeqCst);
            async move {
                ids.into_iter()
                    .map(|id| (id, format!("fresh {id}")))
                    .collect::<std::collections::HashMap<_, _>>()
            }
        };
        let ttl = std::time::Duration::from_secs(60);
        let got = cache.get_or_insert_many("tg:profile", &[31u64], ttl, load).await;
        assert_eq!(got[&31], "fresh 31");
        assert_eq!(loaded.load(SeqCst), 1);
    }
}

#[redcache::cached(prefix = "tg:counted", ttl = 600, tags("user:{id}"), skip(runs))]
async fn counted(id: u64, runs: &AtomicUsize) -> String {
    runs.fetch_add(1, SeqCst);
    format!("tagged {id}")
}

/// A batch over `counted`'s prefix for id 42; each load's ids are recorded in `loads`.
async fn batch_of_42(
    cache: &redcache::Cache,
    loads: &std::sync::Mutex<Vec<Vec<u64>>>,
) -> std::collections::HashMap<u64, String> {
    let load = |ids: Vec<u64>| {
        loads.lock().unwrap().push(ids.clone());
        async move {
            ids.into_iter()
                .map(|id| (id, format!("loaded {id}")))
                .collect()
        }
    };
    let ttl = std::time::Duration::from_secs(60);
    cache
        .get_or_insert_many("tg:counted", &[42], ttl, load)
        .await
}

on_both_stores! {
    async fn a_batch_never_writes_over_a_tagged_entry(b: Backend) {
        let cache = &b.cache;
        let runs = AtomicUsize::new(0);
        let loads = std::sync::Mutex::new(Vec::new());
        let key = cache.scope(async { redcache::key!(counted(42, _)) }).await;
        assert_eq!(cache.scope(counted(42, &runs)).await, "tagged 42");
        // The tagged entry is a miss for the batch: it loads 42 and returns that value...
        assert_eq!(batch_of_42(cache, &loads).await[&42], "loaded 42", "{}", b.name());
        assert_eq!(*loads.lock().unwrap(), vec![vec![42]]);
        // ...without storing it over the tagged entry, which stays the function's hit.
        assert_eq!(cache.get::<String>(&key).await.unwrap(), None, "{}", b.name());
        assert_eq!(cache.scope(counted(42, &runs)).await, "tagged 42");
        assert_eq!(runs.load(SeqCst), 1, "{}: the tagged entry is still there", b.name());

        cache.invalidate_tag("user:42").await.unwrap();
        // No untagged value of the batch's escaped the invalidation: it loads 42 again.
        assert_eq!(batch_of_42(cache, &loads).await[&42], "loaded 42");
        assert_eq!(*loads.lock().unwrap(), vec![vec![42], vec![42]], "{}", b.name());
        assert_eq!(cache.get::<String>(&key).await.unwrap(), None);
        assert_eq!(cache.scope(counted(42, &runs)).await, "tagged 42");
        assert_eq!(runs.load(SeqCst), 2, "{}: the tag retired the entry, a miss", b.name());
        assert_eq!(batch_of_42(cache, &loads).await[&42], "loaded 42");
        assert_eq!(loads.lock().unwrap().len(), 3, "{}: still not the batch's own", b.name());
    }
}
