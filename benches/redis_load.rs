//! Load benchmark against baselines measured in the same run, on one `redis-server` this
//! benchmark starts itself, for a ~200-byte struct:
//!
//! - raw redis-rs `GET` + `serde_json::from_slice` on a `MultiplexedConnection` (the
//!   fastest raw client): the baseline for a hit;
//! - the **floor** the contract sets for any cache that keeps it, with none of redcache's
//!   work: the key made as `#[cached]` makes it (the md5 of the arguments' JSON, in hex,
//!   after the prefix), the same raw `GET`, and the value read out of its envelope
//!   (`{"v":1,"d":..}`) by serde;
//! - a `#[cached]` hit on Redis, on the local tier in front of Redis
//!   (`Config::local_capacity`), and on the in-process memory store;
//! - raw `GET` (a miss) + `SET` of the encoded value: the baseline for a miss;
//! - a `#[cached]` miss: `GET`, the body, the fenced fill (`EVALSHA`).
//!
//! `cargo bench --bench redis_load` prints, at 1, 16, 64 and 256 concurrent tasks, each
//! ratio to its baseline as the median (min–max) of three rounds that interleave the
//! columns (raw, floor, redcache, raw, floor, redcache...), and the local tier's hits per
//! second.
//! Throughput counts every call; the p99 is of every 7th call of each task, timed. Under
//! `cargo test` it runs a few operations as a smoke test.

#[path = "../tests/common/mod.rs"]
mod common;
mod shared;

use shared::{profile, spread, Profile};

use md5::Digest as _;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[redcache::cached(prefix = "bench:profile", ttl = 3600)]
async fn cached_profile(id: u64) -> Profile {
    profile(id)
}

#[redcache::cached(prefix = "bench:miss", ttl = 3600)]
async fn missed_profile(id: u64) -> Profile {
    profile(id)
}

/// A key nobody used yet: every call of `missed_profile` with it is a miss.
fn fresh_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1 << 32);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// The floor's entry of `id`: what `#[cached]` keeps, `{"v":1,"d":<the value>}`.
#[derive(serde::Deserialize)]
struct Envelope {
    #[allow(dead_code)]
    v: u8,
    d: Profile,
}

/// The floor's key for `id`, made as `#[cached]` makes its keys: the prefix, then the md5
/// of the arguments' JSON in hex.
fn floor_key(id: u64) -> String {
    let digest = md5::Md5::digest(serde_json::to_vec(&[id]).unwrap());
    format!("bench:floor:{digest:x}")
}

struct Row {
    ops_per_sec: f64,
    p99: Duration,
}

/// Runs `op(task)` from `tasks` concurrent tasks, `per_task` times each. Each task reads
/// its own key, so single flight does not merge the cached calls.
async fn measure<F, Fut>(tasks: usize, per_task: usize, op: F) -> Row
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    measure_in(None, tasks, per_task, op).await
}

/// One call in this many is timed for the p99: timing every call would add two clock reads
/// and a stored sample to each (about a sixth of a local-tier hit), while the throughput is
/// read off the whole run. Odd, so the timed calls do not line up with tokio's budget of
/// 128 (a local hit that spends the last of it yields to the scheduler, and a stride that
/// divides 128 would time every such call, or none).
const TIME_EVERY: usize = 7;

/// [`measure`], each task's whole loop in `cache`'s scope (as a request handler or a test
/// runs in one), when given.
async fn measure_in<F, Fut>(
    cache: Option<&redcache::Cache>,
    tasks: usize,
    per_task: usize,
    op: F,
) -> Row
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let start = Instant::now();
    let mut handles = Vec::new();
    for task in 0..tasks as u64 {
        let op = op.clone();
        let calls = async move {
            let mut lat = Vec::with_capacity(per_task / TIME_EVERY + 1);
            for call in 0..per_task {
                if call % TIME_EVERY == 0 {
                    let t = Instant::now();
                    op(task).await;
                    lat.push(t.elapsed());
                } else {
                    op(task).await;
                }
            }
            lat
        };
        handles.push(match cache {
            Some(cache) => {
                let cache = cache.clone();
                tokio::spawn(async move { cache.scope(calls).await })
            }
            None => tokio::spawn(calls),
        });
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    let elapsed = start.elapsed();
    all.sort_unstable();
    Row {
        ops_per_sec: (tasks * per_task) as f64 / elapsed.as_secs_f64(),
        p99: all[all.len() * 99 / 100],
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(full));
}

/// How many times each cell is measured; the rounds interleave (raw, redcache, raw, ...).
const REPEATS: usize = 3;

/// One round of every column at one concurrency.
struct Round {
    raw: Row,
    floor: Row,
    hit: Row,
    local: Row,
    memory: Row,
    raw_miss: Row,
    miss: Row,
}

async fn run(full: bool) {
    let server = common::RedisServer::start();
    let cache = server.cache().await;
    let client = redis::Client::open(server.url()).unwrap();
    // The fastest raw client: one multiplexed connection, no reconnect layer.
    let raw = client.get_multiplexed_async_connection().await.unwrap();
    cache.install().unwrap();
    let memory = redcache::Cache::memory();
    let local = server
        .cache_with(common::test_config().url(server.url()).local_capacity(1024))
        .await;

    // Populate one entry per task: the raw baseline as plain JSON, the cached function
    // through the macro.
    let mut size = 0;
    for id in 0..256 {
        let json = serde_json::to_vec(&profile(id)).unwrap();
        size = json.len();
        let enveloped = [&br#"{"v":1,"d":"#[..], &json, b"}"].concat();
        let _: () = raw.clone().set(format!("raw:{id}"), json).await.unwrap();
        let _: () = raw.clone().set(floor_key(id), enveloped).await.unwrap();
        assert_eq!(cached_profile(id).await, profile(id));
        memory.scope(cached_profile(id)).await;
        // Read until the local tier holds it.
        for _ in 0..3 {
            local.scope(cached_profile(id)).await;
        }
    }
    let total_ops = if full { 40_000 } else { 200 };
    let repeats = if full { REPEATS } else { 1 };
    println!(
        "value: {size} bytes of JSON; {total_ops} operations per cell; {repeats} interleaved \
         rounds; each ratio is the median (min–max) of the rounds'\n"
    );
    println!(
        "{:>5} | {:>24} | {:>24} | {:>24} | {:>24} | {:>24} | {:>26} | {:>24} | {:>24} | {:>24}",
        "tasks",
        "Redis hit / raw GET",
        "floor / raw GET",
        "Redis hit / floor",
        "p99 Redis hit / raw",
        "local hit / Redis hit",
        "local hits/s (p99)",
        "memory hit / raw GET",
        "miss / raw GET+SET",
        "p99 miss / raw"
    );
    for tasks in [1usize, 16, 64, 256] {
        let per_task = (total_ops / tasks).max(1);
        let mut rounds = Vec::new();
        for _ in 0..repeats {
            rounds.push(round(&raw, &local, &memory, tasks, per_task).await);
        }
        let ratio = |f: &dyn Fn(&Round) -> f64| spread(rounds.iter().map(f).collect());
        let best_local = rounds
            .iter()
            .map(|r| &r.local)
            .max_by(|a, b| a.ops_per_sec.total_cmp(&b.ops_per_sec))
            .unwrap();
        println!(
            "{tasks:>5} | {:>24} | {:>24} | {:>24} | {:>24} | {:>24} | {:>26} | {:>24} | {:>24} | {:>24}",
            ratio(&|r| r.hit.ops_per_sec / r.raw.ops_per_sec),
            ratio(&|r| r.floor.ops_per_sec / r.raw.ops_per_sec),
            ratio(&|r| r.hit.ops_per_sec / r.floor.ops_per_sec),
            ratio(&|r| r.hit.p99.as_secs_f64() / r.raw.p99.as_secs_f64()),
            ratio(&|r| r.local.ops_per_sec / r.hit.ops_per_sec),
            format!(
                "{:.2} M ({:.1?})",
                best_local.ops_per_sec / 1e6,
                best_local.p99
            ),
            ratio(&|r| r.memory.ops_per_sec / r.raw.ops_per_sec),
            ratio(&|r| r.miss.ops_per_sec / r.raw_miss.ops_per_sec),
            ratio(&|r| r.miss.p99.as_secs_f64() / r.raw_miss.p99.as_secs_f64()),
        );
    }
    batch(&cache, full).await;
    let stats = redcache::stats();
    assert_eq!(stats.faults, 0, "{stats:?}");
    assert_eq!(stats.conflicts, 0, "{stats:?}");
    let local = local.stats();
    assert!(local.local_hits > 0 && local.faults == 0, "{local:?}");
}

/// Every column once, in turn, at `tasks` concurrent tasks.
async fn round(
    raw: &redis::aio::MultiplexedConnection,
    local: &redcache::Cache,
    memory: &redcache::Cache,
    tasks: usize,
    per_task: usize,
) -> Round {
    let raw_row = {
        let raw = raw.clone();
        measure(tasks, per_task, move |id| {
            let mut raw = raw.clone();
            async move {
                let bytes: Vec<u8> = raw.get(format!("raw:{id}")).await.unwrap();
                let p: Profile = serde_json::from_slice(&bytes).unwrap();
                std::hint::black_box(p);
            }
        })
        .await
    };
    let floor_row = {
        let raw = raw.clone();
        measure(tasks, per_task, move |id| {
            let mut raw = raw.clone();
            async move {
                let bytes: Vec<u8> = raw.get(floor_key(id)).await.unwrap();
                let entry: Envelope = serde_json::from_slice(&bytes).unwrap();
                std::hint::black_box(entry.d);
            }
        })
        .await
    };
    let hit_row = measure(tasks, per_task, |id| async move {
        std::hint::black_box(cached_profile(id).await);
    })
    .await;
    let local_row = measure_in(Some(local), tasks, per_task, |id| async move {
        std::hint::black_box(cached_profile(id).await);
    })
    .await;
    let mem_row = measure_in(Some(memory), tasks, per_task, |id| async move {
        std::hint::black_box(cached_profile(id).await);
    })
    .await;
    let raw_miss_row = {
        let raw = raw.clone();
        measure(tasks, per_task, move |_| {
            let mut raw = raw.clone();
            async move {
                let key = format!("raw:miss:{}", fresh_id());
                let bytes: Option<Vec<u8>> = raw.get(&key).await.unwrap();
                assert!(bytes.is_none());
                let json = serde_json::to_vec(&profile(1)).unwrap();
                let _: () = raw.set_ex(&key, json, 3600).await.unwrap();
            }
        })
        .await
    };
    let miss_row = measure(tasks, per_task, |_| async move {
        std::hint::black_box(missed_profile(fresh_id()).await);
    })
    .await;
    Round {
        raw: raw_row,
        floor: floor_row,
        hit: hit_row,
        local: local_row,
        memory: mem_row,
        raw_miss: raw_miss_row,
        miss: miss_row,
    }
}

/// 100 cached ids: one `get_or_insert_many` (one MGET) against 100 single `#[cached]`
/// calls, one after another and all at once. The batch and the single function share their
/// entries (same prefix, one argument).
async fn batch(cache: &redcache::Cache, full: bool) {
    let ids: Vec<u64> = (0..100).collect();
    let rounds = if full { 300 } else { 2 };
    let ttl = Duration::from_secs(3600);
    let time = |label: &'static str, took: Duration| {
        let per = took / rounds;
        println!("{label:<42} {per:>10.1?} per 100 ids");
        per
    };
    println!("\nbatch of 100 cached ids ({rounds} rounds)");
    let start = Instant::now();
    for _ in 0..rounds {
        let got: std::collections::HashMap<u64, Profile> = cache
            .get_or_insert_many("bench:profile", &ids, ttl, |missing| async move {
                assert!(missing.is_empty(), "every id is cached");
                std::collections::HashMap::new()
            })
            .await;
        assert_eq!(got.len(), 100);
    }
    let batched = time("get_or_insert_many (one MGET)", start.elapsed());
    let start = Instant::now();
    for _ in 0..rounds {
        for &id in &ids {
            std::hint::black_box(cached_profile(id).await);
        }
    }
    let sequential = time("100 #[cached] calls, one after another", start.elapsed());
    let start = Instant::now();
    for _ in 0..rounds {
        let calls: Vec<_> = ids
            .iter()
            .map(|&id| tokio::spawn(cached_profile(id)))
            .collect();
        for call in calls {
            std::hint::black_box(call.await.unwrap());
        }
    }
    let concurrent = time("100 #[cached] calls, all at once", start.elapsed());
    println!(
        "batch: {:.1}x faster than sequential calls, {:.1}x faster than concurrent ones",
        sequential.as_secs_f64() / batched.as_secs_f64(),
        concurrent.as_secs_f64() / batched.as_secs_f64()
    );
}

use redis::AsyncCommands;
