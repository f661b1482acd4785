//! The codecs side by side, for a ~200-byte value and a ~50 KB one: JSON (the default),
//! MessagePack, and each compressed with LZ4 (`compress_above = 1024`), on one
//! `redis-server` this benchmark starts itself and on the memory store.
//!
//! `cargo bench --bench codecs --features msgpack,compression` prints, for each value and
//! codec, the bytes Redis holds, and `#[cached]` hits per second on Redis (1 and 16 tasks)
//! and on the memory store (1 task: the decode's cost with no network), each as a ratio to
//! JSON's in the same round, the median (min–max) of rounds that interleave the codecs.
//! Under `cargo test` it runs a few operations as a smoke test.

#[path = "../tests/common/mod.rs"]
mod common;
mod shared;

use serde::{Deserialize, Serialize};
use shared::{profile, spread, Profile};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

/// A ~50 KB value: a catalogue page of 200 products, as a service would cache a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Catalogue {
    pub shop: u64,
    pub products: Vec<Product>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Product {
    pub id: u64,
    pub name: String,
    pub description: String,
    pub price_cents: u64,
    pub stock: u32,
    pub tags: Vec<String>,
}

fn catalogue(shop: u64) -> Catalogue {
    Catalogue {
        shop,
        products: (0..200)
            .map(|i| Product {
                id: shop * 1000 + i,
                name: format!("Product {i} of shop {shop}"),
                description: format!(
                    "A sturdy item number {i}, made to last, shipped in two days, with a \
                     one-year warranty and free returns."
                ),
                price_cents: 999 + i * 10,
                stock: (i % 17) as u32,
                tags: vec!["garden".into(), format!("size-{}", i % 5)],
            })
            .collect(),
    }
}

macro_rules! codec_fns {
    ($($name:ident: $value:ty = $make:ident, $prefix:literal $(, $opt:ident = $v:literal)*;)*) => {
        $(
            #[redcache::cached(prefix = $prefix, ttl = 3600 $(, $opt = $v)*)]
            async fn $name(id: u64) -> $value {
                $make(id)
            }
        )*
    };
}

codec_fns! {
    small_json: Profile = profile, "codecs:small:json";
    small_msgpack: Profile = profile, "codecs:small:msgpack", codec = "msgpack";
    small_json_lz4: Profile = profile, "codecs:small:json-lz4", compress_above = 1024;
    small_msgpack_lz4: Profile = profile, "codecs:small:msgpack-lz4", codec = "msgpack", compress_above = 1024;
    large_json: Catalogue = catalogue, "codecs:large:json";
    large_msgpack: Catalogue = catalogue, "codecs:large:msgpack", codec = "msgpack";
    large_json_lz4: Catalogue = catalogue, "codecs:large:json-lz4", compress_above = 1024;
    large_msgpack_lz4: Catalogue = catalogue, "codecs:large:msgpack-lz4", codec = "msgpack", compress_above = 1024;
}

type Call = Arc<dyn Fn(u64) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// One codec of one value: its name and a call of its function.
struct Mode {
    name: &'static str,
    call: Call,
    key: String,
}

fn mode<F, Fut, T>(name: &'static str, f: F, key: String) -> Mode
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = T> + Send + 'static,
{
    let f = Arc::new(f);
    Mode {
        name,
        call: Arc::new(move |id| {
            let fut = f(id);
            Box::pin(async move {
                std::hint::black_box(fut.await);
            })
        }),
        key,
    }
}

fn modes() -> [Vec<Mode>; 2] {
    [
        vec![
            mode("JSON", small_json, redcache::key!(small_json(0))),
            mode(
                "MessagePack",
                small_msgpack,
                redcache::key!(small_msgpack(0)),
            ),
            mode(
                "JSON + LZ4",
                small_json_lz4,
                redcache::key!(small_json_lz4(0)),
            ),
            mode(
                "MessagePack + LZ4",
                small_msgpack_lz4,
                redcache::key!(small_msgpack_lz4(0)),
            ),
        ],
        vec![
            mode("JSON", large_json, redcache::key!(large_json(0))),
            mode(
                "MessagePack",
                large_msgpack,
                redcache::key!(large_msgpack(0)),
            ),
            mode(
                "JSON + LZ4",
                large_json_lz4,
                redcache::key!(large_json_lz4(0)),
            ),
            mode(
                "MessagePack + LZ4",
                large_msgpack_lz4,
                redcache::key!(large_msgpack_lz4(0)),
            ),
        ],
    ]
}

/// Calls per second of `call` from `tasks` tasks, `per_task` calls each, each task on its
/// own id (all warm), in `cache`'s scope.
async fn rate(cache: &redcache::Cache, call: &Call, tasks: u64, per_task: usize) -> f64 {
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|id| {
            let (call, cache) = (call.clone(), cache.clone());
            tokio::spawn(cache.scope(async move {
                for _ in 0..per_task {
                    call(id).await;
                }
            }))
        })
        .collect();
    for handle in handles {
        handle.await.unwrap();
    }
    (tasks as usize * per_task) as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(full));
}

async fn run(full: bool) {
    let server = common::RedisServer::start();
    let redis = server.cache().await;
    let memory = redcache::Cache::memory();
    let mut conn = server.conn().await;
    let rounds = if full { 5 } else { 1 };
    println!(
        "{rounds} interleaved rounds; each ratio is to JSON in the same round, median (min–max)\n"
    );
    println!(
        "{:>6} | {:>17} | {:>14} | {:>22} | {:>22} | {:>22} | {:>16}",
        "value",
        "codec",
        "bytes in Redis",
        "Redis hit, 1 task",
        "Redis hit, 16 tasks",
        "memory hit, 1 task",
        "memory hit (µs)"
    );
    for (size, modes) in ["200 B", "50 KB"].iter().zip(modes()) {
        // Warm every id each measurement uses, in both stores.
        for mode in &modes {
            for id in 0..16 {
                redis.scope((mode.call)(id)).await;
                memory.scope((mode.call)(id)).await;
            }
        }
        let ops = |small: usize, large: usize| match (full, *size == "200 B") {
            (false, _) => 20,
            (true, true) => small,
            (true, false) => large,
        };
        // [mode][column][round]
        let mut rates = vec![vec![Vec::new(); 3]; modes.len()];
        for _ in 0..rounds {
            for (m, mode) in modes.iter().enumerate() {
                rates[m][0].push(rate(&redis, &mode.call, 1, ops(5_000, 1_000)).await);
                rates[m][1].push(rate(&redis, &mode.call, 16, ops(1_000, 200)).await);
                rates[m][2].push(rate(&memory, &mode.call, 1, ops(100_000, 2_000)).await);
            }
        }
        for (m, mode) in modes.iter().enumerate() {
            let bytes: Vec<u8> = redis::cmd("GET")
                .arg(&mode.key)
                .query_async(&mut conn)
                .await
                .unwrap();
            let ratio = |column: usize| {
                spread(
                    (0..rounds)
                        .map(|r| rates[m][column][r] / rates[0][column][r])
                        .collect(),
                )
            };
            let mut memory_rates = rates[m][2].clone();
            memory_rates.sort_by(f64::total_cmp);
            println!(
                "{size:>6} | {:>17} | {:>14} | {:>22} | {:>22} | {:>22} | {:>16.2}",
                mode.name,
                bytes.len(),
                ratio(0),
                ratio(1),
                ratio(2),
                1e6 / memory_rates[rounds / 2]
            );
        }
    }
    let stats = redis.stats();
    assert_eq!((stats.faults, stats.conflicts), (0, 0), "{stats:?}");
}
