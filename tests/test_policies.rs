//! Cache policies users ask for: the TTL computed from the value (`ttl = f`, for a token
//! that expires at a known time) and caching only some results (`cache_if = f`, not empty
//! lists), on a real Redis, a cluster and the memory store, with TTLs read back.

mod common;

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Token {
    value: String,
    expires_in: u64,
}

/// A token is cached until shortly before it expires.
fn until_expiry(token: &Token) -> Duration {
    Duration::from_secs(token.expires_in - 5)
}

#[redcache::cached(prefix = "p:token", ttl = until_expiry, jitter = 0, skip(calls))]
async fn token(scope: u64, calls: &AtomicUsize) -> Token {
    calls.fetch_add(1, SeqCst);
    Token {
        value: format!("token {scope}"),
        expires_in: 100 + scope * 100,
    }
}

#[redcache::cached(prefix = "p:maybe", ttl = |t: &Token| Duration::from_secs(t.expires_in), jitter = 0, null_ttl = 30, skip(calls))]
async fn maybe_token(scope: u64, calls: &AtomicUsize) -> Result<Option<Token>, String> {
    calls.fetch_add(1, SeqCst);
    Ok((scope != 0).then(|| Token {
        value: format!("token {scope}"),
        expires_in: 40 + scope,
    }))
}

/// No `jitter`: a tenth of the TTL the value asks for, not of the cache's default TTL.
#[redcache::cached(prefix = "p:short", ttl = |t: &Token| Duration::from_secs(t.expires_in), skip(calls))]
async fn short_token(scope: u64, calls: &AtomicUsize) -> Token {
    calls.fetch_add(1, SeqCst);
    Token {
        value: format!("token {scope}"),
        expires_in: if scope < 5 { 9 } else { 1000 },
    }
}

on_both_stores! {
    async fn a_computed_ttl_gets_a_tenth_of_itself_as_jitter(b: Backend) {
        let calls = AtomicUsize::new(0);
        b.cache.scope(async {
            for scope in 0..6 {
                short_token(scope, &calls).await;
            }
        }).await;
        assert_eq!(calls.load(SeqCst), 6, "{}", b.name());
        // 9 s: a tenth is under a second, so no jitter (the default TTL's tenth is 30 s,
        // which would make it 9 to 39). Read back in whole seconds, rounded, so less once
        // half a second has passed: 7 to 9 leaves a stall of two.
        for scope in 0..5 {
            let ttl = b.ttl_secs(&redcache::key!(short_token(scope, _))).await;
            assert!(matches!(ttl, Some(7..=9)), "{} {scope}: {ttl:?}", b.name());
        }
        // 1000 s: up to 100 s more.
        let ttl = b.ttl_secs(&redcache::key!(short_token(5, _))).await.unwrap();
        assert!((999..=1100).contains(&ttl), "{}: {ttl}", b.name());
    }
}

on_both_stores! {
    async fn the_ttl_is_computed_from_the_value(b: Backend) {
        let calls = AtomicUsize::new(0);
        b.cache.scope(async {
            for scope in [1, 2] {
                assert_eq!(token(scope, &calls).await.value, format!("token {scope}"));
                assert_eq!(token(scope, &calls).await.value, format!("token {scope}"));
            }
            assert!(maybe_token(3, &calls).await.unwrap().is_some());
            assert_eq!(maybe_token(0, &calls).await, Ok(None));
        }).await;
        assert_eq!(calls.load(SeqCst), 4, "{}", b.name());
        assert_eq!(b.ttl_secs(&redcache::key!(token(1, _))).await, Some(195), "{}", b.name());
        assert_eq!(b.ttl_secs(&redcache::key!(token(2, _))).await, Some(295), "{}", b.name());
        assert_eq!(b.ttl_secs(&redcache::key!(maybe_token(3, _))).await, Some(43), "{}", b.name());
        assert_eq!(
            b.ttl_secs(&redcache::key!(maybe_token(0, _))).await,
            Some(30),
            "a None still lives null_ttl ({})",
            b.name()
        );
        // Write-through follows the same rule.
        b.cache.scope(async {
            let written = Token { value: "rotated".into(), expires_in: 65 };
            redcache::put!(token(1, _), written).await.unwrap();
        }).await;
        assert_eq!(b.ttl_secs(&redcache::key!(token(1, _))).await, Some(60), "{}", b.name());
        assert_eq!(b.cache.scope(token(1, &calls)).await.value, "rotated");
    }
}

/// Times kept in constants, as services keep them: a constant (or a constant expression)
/// of seconds stands wherever a number of seconds does.
const PROFILE_TTL: u64 = 15 * 60;
const NO_JITTER: u64 = 0;

mod settings {
    pub const MISSING_SECS: u64 = 20;
}

#[redcache::cached(
    prefix = "p:constant",
    ttl = PROFILE_TTL,
    jitter = NO_JITTER,
    null_ttl = settings::MISSING_SECS,
    skip(calls)
)]
async fn by_constant(id: u64, calls: &AtomicUsize) -> Option<u64> {
    calls.fetch_add(1, SeqCst);
    (id != 0).then_some(id * 10)
}

/// Kept past its TTL for `stale_ttl`.
const STALE_SECS: u64 = 30;

#[redcache::cached(
    prefix = "p:expression",
    ttl = 2 * PROFILE_TTL,
    jitter = 0,
    stale_ttl = (STALE_SECS),
    skip(calls)
)]
async fn by_expression(id: u64, calls: &AtomicUsize) -> u64 {
    calls.fetch_add(1, SeqCst);
    id
}

on_both_stores! {
    async fn ttls_can_be_named_constants(b: Backend) {
        let calls = AtomicUsize::new(0);
        b.cache.scope(async {
            for _ in 0..2 {
                assert_eq!(by_constant(4, &calls).await, Some(40));
                assert_eq!(by_constant(0, &calls).await, None);
                assert_eq!(by_expression(4, &calls).await, 4);
            }
        }).await;
        assert_eq!(calls.load(SeqCst), 3, "{}", b.name());
        let name = b.name();
        assert_eq!(b.ttl_secs(&redcache::key!(by_constant(4, _))).await, Some(900), "{name}");
        assert_eq!(b.ttl_secs(&redcache::key!(by_constant(0, _))).await, Some(20), "{name}");
        let doubled = b.ttl_secs(&redcache::key!(by_expression(4, _))).await;
        // Redis keeps the key through its stale window; the memory store's TTL is the
        // entry's own.
        let kept = if b.is_redis() { 1800 + 30 } else { 1800 };
        assert_eq!(doubled, Some(kept), "{name}");
    }
}

#[redcache::cached(prefix = "p:list", ttl = 60, cache_if = |items: &Vec<u32>| !items.is_empty(), skip(calls))]
async fn list(page: u32, calls: &AtomicUsize) -> Vec<u32> {
    calls.fetch_add(1, SeqCst);
    if page < 2 {
        vec![page; 3]
    } else {
        Vec::new()
    }
}

// The value's type is `Vec<u32>`: the predicate takes a reference to it.
#[allow(clippy::ptr_arg)]
fn complete(items: &Vec<u32>) -> bool {
    items.len() == 3
}

#[redcache::cached(prefix = "p:search", ttl = 60, cache_if = complete, skip(calls))]
async fn search(query: &str, calls: &AtomicUsize) -> Option<Vec<u32>> {
    calls.fetch_add(1, SeqCst);
    match query {
        "none" => None,
        "partial" => Some(vec![1]),
        _ => Some(vec![1, 2, 3]),
    }
}

on_both_stores! {
    async fn only_results_the_predicate_accepts_are_cached(b: Backend) {
        let calls = AtomicUsize::new(0);
        b.cache.scope(async {
            for _ in 0..2 {
                assert_eq!(list(1, &calls).await, [1, 1, 1]);
                assert!(list(5, &calls).await.is_empty());
            }
        }).await;
        assert_eq!(calls.load(SeqCst), 3, "the empty page ran each time ({})", b.name());
        assert!(b.exists(&redcache::key!(list(1, _))).await);
        assert!(!b.exists(&redcache::key!(list(5, _))).await, "{}", b.name());

        let calls = AtomicUsize::new(0);
        b.cache.scope(async {
            for _ in 0..2 {
                assert_eq!(search("full", &calls).await, Some(vec![1, 2, 3]));
                assert_eq!(search("partial", &calls).await, Some(vec![1]));
                assert_eq!(search("none", &calls).await, None);
            }
        }).await;
        // Full: cached; partial: not; None: cached as a None (the predicate sees values).
        assert_eq!(calls.load(SeqCst), 4, "{}", b.name());
        // A write-through of a result the predicate refuses drops the entry instead.
        b.cache.scope(async {
            redcache::put!(search("full", _), Some(vec![9])).await.unwrap();
        }).await;
        assert!(!b.exists(&redcache::key!(search("full", _))).await, "{}", b.name());
    }
}

#[redcache::cached(
    prefix = "p:flaky",
    ttl = 1,
    jitter = 0,
    stale_if_error = 30,
    skip(fail, calls)
)]
async fn flaky(id: u64, fail: &AtomicUsize, calls: &AtomicUsize) -> Result<String, String> {
    let run = calls.fetch_add(1, SeqCst) + 1;
    match fail.load(SeqCst) {
        0 => Ok(format!("value {id} from run {run}")),
        1 => Err("the database is down".into()),
        _ => panic!("the driver panicked"),
    }
}

/// Waits until entries written `before` with a TTL of one second are past it (their
/// expiry is wall-clock time in the entry).
async fn past_one_second_ttl(written: std::time::Instant) {
    let past = Duration::from_millis(1100);
    if let Some(left) = past.checked_sub(written.elapsed()) {
        tokio::time::sleep(left).await;
    }
}

on_both_stores! {
    async fn stale_if_error_answers_a_failing_body_with_the_old_entry(b: Backend) {
        let (fail, calls) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let first = b.cache.scope(flaky(1, &fail, &calls)).await;
        // (Stamped before the call returned: its expiry is at most a second from now.)
        let written = std::time::Instant::now();
        assert_eq!(first.as_deref(), Ok("value 1 from run 1"));
        // Kept in Redis for the TTL plus the window; `Cache::ttl` (what `ttl_secs` reads on
        // the in-process store) tells the TTL alone, after which `Cache::get` has nothing.
        let key = b.cache.scope(async { redcache::key!(flaky(1, _, _)) }).await;
        let kept = if b.is_redis() { 31 } else { 1 };
        assert_eq!(b.ttl_secs(&key).await, Some(kept), "{}", b.name());
        let own = b.cache.ttl(&key).await.unwrap().unwrap();
        assert!(own <= Duration::from_secs(1), "{own:?} ({})", b.name());
        past_one_second_ttl(written).await;

        // Past its TTL the body runs; when it fails, the old value answers.
        fail.store(1, SeqCst);
        let answered = b.cache.scope(flaky(1, &fail, &calls)).await;
        assert_eq!(answered.as_deref(), Ok("value 1 from run 1"), "{}", b.name());
        assert_eq!(calls.load(SeqCst), 2, "the body ran");
        // A panic too.
        fail.store(2, SeqCst);
        let answered = b.cache.scope(flaky(1, &fail, &calls)).await;
        assert_eq!(answered.as_deref(), Ok("value 1 from run 1"));
        assert_eq!(b.cache.stats().stale, 2);
        // Once the body succeeds, its value is stored and served.
        fail.store(0, SeqCst);
        assert_eq!(b.cache.scope(flaky(1, &fail, &calls)).await.as_deref(), Ok("value 1 from run 4"));
        assert_eq!(b.cache.scope(flaky(1, &fail, &calls)).await.as_deref(), Ok("value 1 from run 4"));
        assert_eq!(calls.load(SeqCst), 4);

        // Never an invalidated entry: the error goes to the caller.
        b.cache.scope(redcache::invalidate!(flaky(1, _, _))).await.unwrap();
        fail.store(1, SeqCst);
        assert_eq!(b.cache.scope(flaky(1, &fail, &calls)).await, Err("the database is down".into()));
        // Nor without an entry.
        assert_eq!(b.cache.scope(flaky(2, &fail, &calls)).await, Err("the database is down".into()));
        assert_eq!(b.cache.stats().stale, 2);
    }
}

#[redcache::cached(
    prefix = "p:gated",
    ttl = 1,
    jitter = 0,
    stale_if_error = 30,
    group = "p:gated",
    tags("p:gated:{id}"),
    skip(fail, started, go)
)]
async fn gated_flaky(
    id: u64,
    fail: &AtomicUsize,
    started: &tokio::sync::Semaphore,
    go: &tokio::sync::Semaphore,
) -> Result<String, String> {
    gated(id, fail, started, go).await
}

/// The body of the gated functions: a value, or (when told to fail) a failure that says it
/// has started, then waits to be let go.
async fn gated(
    id: u64,
    fail: &AtomicUsize,
    started: &tokio::sync::Semaphore,
    go: &tokio::sync::Semaphore,
) -> Result<String, String> {
    if fail.load(SeqCst) == 0 {
        return Ok(format!("value {id}"));
    }
    started.add_permits(1);
    go.acquire().await.unwrap().forget();
    Err("the database is down".into())
}

on_both_stores! {
    async fn stale_if_error_never_answers_with_an_entry_invalidated_while_the_body_ran(b: Backend) {
        let fail = AtomicUsize::new(0);
        let (started, go) = (tokio::sync::Semaphore::new(0), tokio::sync::Semaphore::new(0));
        let call = || b.cache.scope(gated_flaky(1, &fail, &started, &go));
        // Each way to invalidate the entry, made while the failing body runs; then none.
        for how in ["key", "group", "tag", "nothing"] {
            fail.store(0, SeqCst);
            assert_eq!(call().await.as_deref(), Ok("value 1"), "{how}");
            // Stamped before the call returned.
            past_one_second_ttl(std::time::Instant::now()).await;
            fail.store(1, SeqCst);
            let invalidate = async {
                started.acquire().await.unwrap().forget();
                let cache = &b.cache;
                match how {
                    "key" => cache
                        .scope(redcache::invalidate!(gated_flaky(1, _, _, _)))
                        .await
                        .map(drop),
                    "group" => cache.invalidate_group("p:gated").await,
                    "tag" => cache.invalidate_tag("p:gated:1").await,
                    _ => Ok(()),
                }
                .unwrap();
                go.add_permits(1);
            };
            let both = async { tokio::join!(call(), invalidate) };
            let (answered, ()) = tokio::time::timeout(Duration::from_secs(20), both)
                .await
                .unwrap_or_else(|_| panic!("{how}: the entry was still a hit ({})", b.name()));
            let expected = match how {
                "nothing" => Ok("value 1".to_owned()),
                _ => Err("the database is down".to_owned()),
            };
            assert_eq!(answered, expected, "{how} ({})", b.name());
        }
        assert_eq!(b.cache.stats().stale, 1, "{:?}", b.cache.stats());
    }
}

/// As `gated_flaky`, under a key of its own, in no group and with no tags.
#[redcache::cached(
    prefix = "p:replaced",
    ttl = 1,
    jitter = 0,
    stale_if_error = 30,
    skip(fail, started, go)
)]
async fn replaced_flaky(
    id: u64,
    fail: &AtomicUsize,
    started: &tokio::sync::Semaphore,
    go: &tokio::sync::Semaphore,
) -> Result<String, String> {
    gated(id, fail, started, go).await
}

on_both_stores! {
    async fn stale_if_error_answers_with_an_entry_stored_while_the_body_ran(b: Backend) {
        let fail = AtomicUsize::new(0);
        let (started, go) = (tokio::sync::Semaphore::new(0), tokio::sync::Semaphore::new(0));
        let call = || b.cache.scope(replaced_flaky(3, &fail, &started, &go));
        assert_eq!(call().await.as_deref(), Ok("value 3"));
        past_one_second_ttl(std::time::Instant::now()).await;
        fail.store(1, SeqCst);
        // While the failing body runs, another writer stores a newer value.
        let put = async {
            started.acquire().await.unwrap().forget();
            let value = Ok("value 3, rewritten".to_owned());
            b.cache.scope(redcache::put!(replaced_flaky(3, _, _, _), value)).await.unwrap();
            go.add_permits(1);
        };
        let (answered, ()) = tokio::join!(call(), put);
        assert_eq!(answered.as_deref(), Ok("value 3, rewritten"), "{}", b.name());
        assert_eq!(b.cache.stats().stale, 1);
        // Stored as it was, not by the failed body. (Its body may run if the entry has
        // expired meanwhile: let it fail at once, and the entry answers.)
        go.add_permits(1);
        assert_eq!(call().await.as_deref(), Ok("value 3, rewritten"));
    }
}

/// Picked for early refresh on (nearly) every hit: its first run takes 20 ms, and its TTL
/// is short against that times β.
#[redcache::cached(
    prefix = "p:early",
    ttl = 60,
    jitter = 0,
    early_refresh = 1000000000.0,
    skip(fail, calls)
)]
async fn refreshed_early(
    id: u64,
    fail: &AtomicUsize,
    calls: &AtomicUsize,
) -> Result<String, String> {
    let run = calls.fetch_add(1, SeqCst) + 1;
    if run == 1 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    match fail.load(SeqCst) {
        0 => Ok(format!("value {id} from run {run}")),
        _ => Err("the database is down".into()),
    }
}

on_both_stores! {
    async fn an_early_refresh_that_fails_answers_with_the_entry_it_was_refreshing(b: Backend) {
        let (fail, calls) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let call = || b.cache.scope(refreshed_early(1, &fail, &calls));
        assert_eq!(call().await.as_deref(), Ok("value 1 from run 1"));
        // The entry is valid for a minute: a refresh that fails does not fail the call.
        fail.store(1, SeqCst);
        assert_eq!(call().await.as_deref(), Ok("value 1 from run 1"), "{}", b.name());
        assert_eq!(calls.load(SeqCst), 2, "the refresh ran");
        // One that succeeds replaces it.
        fail.store(0, SeqCst);
        assert_eq!(call().await.as_deref(), Ok("value 1 from run 3"));
        assert_eq!(b.cache.stats().refreshes, 2, "{:?}", b.cache.stats());
    }
}

#[redcache::cached(
    prefix = "p:swr",
    ttl = 1,
    jitter = 0,
    stale_ttl = 30,
    skip(gate, calls)
)]
async fn refreshed(id: u64, gate: &tokio::sync::Semaphore, calls: &AtomicUsize) -> String {
    let run = calls.fetch_add(1, SeqCst) + 1;
    if run > 1 {
        // The refresh waits until the test lets it finish.
        gate.acquire().await.unwrap().forget();
    }
    format!("value {id} from run {run}")
}

on_both_stores! {
    async fn stale_ttl_serves_the_old_entry_while_one_caller_refreshes(b: Backend) {
        let gate = tokio::sync::Semaphore::new(0);
        let calls = AtomicUsize::new(0);
        assert_eq!(b.cache.scope(refreshed(1, &gate, &calls)).await, "value 1 from run 1");
        // (Stamped before the call returned: its expiry is at most a second from now.)
        let written = std::time::Instant::now();
        let key = b.cache.scope(async { redcache::key!(refreshed(1, _, _)) }).await;
        let kept = if b.is_redis() { 31 } else { 1 };
        assert_eq!(b.ttl_secs(&key).await, Some(kept), "{}", b.name());
        past_one_second_ttl(written).await;

        let refresher = b.cache.scope(refreshed(1, &gate, &calls));
        let others = async {
            // Once the refresh is running, everyone else is answered at once, unrefreshed.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while calls.load(SeqCst) < 2 {
                assert!(std::time::Instant::now() < deadline, "the refresh never ran");
                tokio::task::yield_now().await;
            }
            for _ in 0..3 {
                let answer = tokio::time::timeout(
                    Duration::from_secs(10),
                    b.cache.scope(refreshed(1, &gate, &calls)),
                )
                .await
                .expect("a stale answer does not wait for the refresh");
                assert_eq!(answer, "value 1 from run 1");
            }
            gate.add_permits(1);
        };
        let (refreshed_value, ()) = tokio::join!(refresher, others);
        assert_eq!(refreshed_value, "value 1 from run 2", "the refresher gets the new value");
        assert_eq!(calls.load(SeqCst), 2, "one refresh, {}", b.name());
        assert_eq!(b.cache.stats().stale, 3);
        // The refreshed entry is served from then on.
        gate.add_permits(1);
        assert_eq!(b.cache.scope(refreshed(1, &gate, &calls)).await, "value 1 from run 2");
        assert_eq!(calls.load(SeqCst), 2);
    }
}

#[redcache::cached(prefix = "p:forever", ttl = |_: &u64| Duration::MAX, stale_ttl = 60, skip(calls))]
async fn kept_for_good(id: u64, calls: &AtomicUsize) -> u64 {
    calls.fetch_add(1, SeqCst);
    id
}

/// A TTL as long as it gets, with a stale window on top: stored for as long as the store
/// keeps anything, not a panic in the caller's task.
#[tokio::test]
async fn the_longest_ttl_with_a_stale_window_is_stored_not_a_panic() {
    let cache = redcache::Cache::memory();
    let calls = AtomicUsize::new(0);
    for _ in 0..2 {
        assert_eq!(cache.scope(kept_for_good(9, &calls)).await, 9);
    }
    assert_eq!(calls.load(SeqCst), 1);
    let stats = cache.stats();
    assert_eq!((stats.stores, stats.hits), (1, 1), "{stats:?}");
}
