//! The CPU cost of a hit without the network: key derivation, envelope decode, and a whole
//! `#[cached]` hit on the in-process memory store (which adds the single-flight
//! bookkeeping and the store lookup). `cargo bench --bench hit_path`.

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;

mod shared;
use shared::{profile, Profile};

#[redcache::cached(prefix = "bench:profile", ttl = 3600)]
async fn cached_profile(id: u64) -> Profile {
    profile(id)
}

#[redcache::cached(prefix = "bench:search", ttl = 3600)]
async fn search(team: &str, page: u32, tags: &[String]) -> Vec<u64> {
    vec![u64::from(page); tags.len() + team.len()]
}

fn hit_path(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cache = redcache::Cache::memory();
    let tags = vec!["a".to_string(), "b".to_string()];
    rt.block_on(cache.scope(async {
        cached_profile(7).await;
        search("core", 2, &tags).await;
    }));

    c.bench_function("key: one u64", |b| {
        b.iter(|| redcache::key!(cached_profile(black_box(7))))
    });
    c.bench_function("key: &str, u32, &[String]", |b| {
        b.iter(|| redcache::key!(search(black_box("core"), 2, &tags)))
    });
    let json = serde_json::to_vec(&profile(7)).unwrap();
    c.bench_function("decode: ~180-byte struct, plain serde_json", |b| {
        b.iter(|| serde_json::from_slice::<Profile>(black_box(&json)).unwrap())
    });
    c.bench_function("hit: #[cached] on the memory store", |b| {
        b.to_async(&rt)
            .iter(|| cache.scope(async { cached_profile(black_box(7)).await }))
    });
    c.bench_function("hit: #[cached] with 3 key arguments, memory store", |b| {
        b.to_async(&rt)
            .iter(|| cache.scope(async { search(black_box("core"), 2, &tags).await }))
    });
}

criterion_group!(benches, hit_path);
criterion_main!(benches);
