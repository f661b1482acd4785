//! The README's main command: cache one async function and watch a miss turn into a hit.
//!
//! ```sh
//! cargo run --example quickstart                                        # in-process store
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --example quickstart       # Redis
//! ```
//!
//! With `REDIS_URL` set, every `REDIS_*`/`REDCACHE_*` variable of `Config::from_env` applies
//! (`REDCACHE_NAMESPACE=example` keeps the example's keys apart). Set `RUST_LOG=debug` to see
//! more of what redcache logs; warnings (cache faults) are shown by default.

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct UserProfile {
    id: u64,
    name: String,
    plan: String,
}

/// How many times the body (the "database query") really ran.
static BODY_RUNS: AtomicUsize = AtomicUsize::new(0);

/// The first call for an id runs the body and stores its result for 900 s (plus up to 90 s of
/// jitter); later calls are answered from the cache. An unknown id (`None`) is cached too,
/// for 60 s, so a flood of lookups for it does not reach the database.
#[redcache::cached(prefix = "user:profile", ttl = 900)]
async fn get_user_profile(user_id: u64) -> Option<UserProfile> {
    BODY_RUNS.fetch_add(1, Ordering::SeqCst);
    // Stands in for the database query.
    tokio::time::sleep(Duration::from_millis(50)).await;
    (user_id != 0).then(|| UserProfile {
        id: user_id,
        name: "Ada Lovelace".to_string(),
        plan: "pro".to_string(),
    })
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();

    choose_store().await;

    for call in ["first call ", "second call"] {
        let runs_before = BODY_RUNS.load(Ordering::SeqCst);
        let started = Instant::now();
        let profile = get_user_profile(42).await;
        let elapsed = started.elapsed();
        let ran = BODY_RUNS.load(Ordering::SeqCst) > runs_before;
        let outcome = if ran {
            "miss: the body ran"
        } else {
            "hit:  answered from the cache"
        };
        println!("{call}  get_user_profile(42) -> {profile:?}");
        println!("             {outcome} in {elapsed:.2?}");
    }

    let runs = BODY_RUNS.load(Ordering::SeqCst);
    println!("body runs: {runs} for 2 calls");
    if runs == 0 {
        println!(
            "(an earlier run stored the entry in Redis; it lives for 900-990 s, so this run \
             only hit)"
        );
    }

    let stats = redcache::stats();
    println!(
        "stats: hits={} misses={} null_hits={} stores={} faults={} skipped={} breaker_open={}",
        stats.hits,
        stats.misses,
        stats.null_hits,
        stats.stores,
        stats.faults,
        stats.skipped,
        stats.breaker_open
    );
}

/// Redis when `REDIS_URL` is set (falling back to memory if it cannot be reached), else the
/// in-process store.
async fn choose_store() {
    if std::env::var_os("REDIS_URL").is_some() {
        let config = redcache::Config::from_env();
        let target = config.redacted_target();
        match redcache::init(config).await {
            Ok(()) => {
                println!("store: Redis at {target}");
                return;
            }
            Err(err) => {
                println!("store: Redis is not usable ({err})");
                println!("       falling back to the in-process memory store");
            }
        }
    } else {
        println!("store: in-process memory (set REDIS_URL=redis://127.0.0.1:6379 to use Redis)");
    }
    redcache::Cache::memory()
        .install()
        .expect("nothing else installs a cache in this example");
}
