//! Codecs and compression: `#[cached(codec = "msgpack")]`, `compress_above = N`, and the
//! cache-wide `Config::codec`/`compress_above`, on a real Redis, a cluster, a master behind
//! Sentinel and the memory store, with body runs counted and the stored bytes decoded here
//! independently (rmp-serde, lz4_flex) where Redis holds them.

mod common;

use common::{Backend, RedisServer};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Address {
    city: String,
    zip: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
enum Line {
    Sku(u64),
    Named { name: String, qty: u32 },
}

/// What a MessagePack codec without field names would lose: flattened fields, an untagged
/// enum, a free-form JSON value, a missing optional.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    id: u64,
    #[serde(flatten)]
    address: Address,
    lines: Vec<Line>,
    meta: serde_json::Value,
    note: Option<String>,
}

fn order(id: u64) -> Order {
    Order {
        id,
        address: Address {
            city: "Gdańsk".into(),
            zip: "80-001".into(),
        },
        lines: vec![
            Line::Sku(id * 10),
            Line::Named {
                name: "tea".into(),
                qty: 2,
            },
        ],
        meta: serde_json::json!({"source": "web", "weights": [1.5, -2, null], "gift": true}),
        note: None,
    }
}

#[redcache::cached(prefix = "codec:order", ttl = 600, codec = "msgpack", skip(runs))]
async fn order_msgpack(id: u64, runs: &AtomicUsize) -> Option<Order> {
    runs.fetch_add(1, SeqCst);
    (id != 0).then(|| order(id))
}

/// The same prefix and arguments, so the same key: in the cache's codec.
#[redcache::cached(prefix = "codec:order", ttl = 600, skip(runs))]
async fn order_default(id: u64, runs: &AtomicUsize) -> Option<Order> {
    runs.fetch_add(1, SeqCst);
    (id != 0).then(|| order(id))
}

/// The same key again, in JSON whatever the cache's codec.
#[redcache::cached(prefix = "codec:order", ttl = 600, codec = "json", skip(runs))]
async fn order_json(id: u64, runs: &AtomicUsize) -> Option<Order> {
    runs.fetch_add(1, SeqCst);
    (id != 0).then(|| order(id))
}

/// A page of `len` repetitive bytes: what compression is for.
fn page_text(slug: &str, len: usize) -> String {
    let mut text = format!("<h1>{slug}</h1>");
    while text.len() < len {
        text.push_str("<p>redcache keeps this page close to the service.</p>");
    }
    text
}

#[redcache::cached(prefix = "codec:page", ttl = 600, compress_above = 1024, skip(runs))]
async fn page(slug: String, len: usize, runs: &AtomicUsize) -> String {
    runs.fetch_add(1, SeqCst);
    page_text(&slug, len)
}

#[redcache::cached(
    prefix = "codec:page-mp",
    ttl = 600,
    codec = "msgpack",
    compress_above = 1024,
    skip(runs)
)]
async fn page_msgpack(slug: String, len: usize, runs: &AtomicUsize) -> String {
    runs.fetch_add(1, SeqCst);
    page_text(&slug, len)
}

/// The raw entry at `key`, if the store is Redis (the memory store keeps the same bytes,
/// but only Redis can be read without redcache).
/// A float serde_json's fast parser would read one step off.
#[redcache::cached(prefix = "c:rate", ttl = 60, skip(runs))]
async fn rate(id: u64, runs: &AtomicUsize) -> f64 {
    runs.fetch_add(1, SeqCst);
    51.248178375505404 + id as f64 * 0.0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
enum Amount {
    Exact(i128),
    Approx(f64),
}

/// A 128-bit integer in an untagged enum: serde's buffering reads it back as the next
/// variant.
#[redcache::cached(prefix = "c:amount", ttl = 60, skip(runs))]
async fn amount(id: u64, runs: &AtomicUsize) -> Amount {
    runs.fetch_add(1, SeqCst);
    Amount::Exact(i128::from(id))
}

on_both_stores! {
    async fn numbers_are_never_served_changed(b: Backend) {
        let runs = AtomicUsize::new(0);
        b.cache.scope(async {
            for _ in 0..3 {
                let hit = rate(1, &runs).await;
                assert_eq!(hit.to_bits(), 51.248178375505404_f64.to_bits(), "{hit:e}");
            }
        }).await;
        assert_eq!(runs.load(SeqCst), 1, "stored, then hits ({})", b.name());
        let runs = AtomicUsize::new(0);
        b.cache.scope(async {
            for _ in 0..3 {
                assert_eq!(amount(5, &runs).await, Amount::Exact(5));
            }
        }).await;
        assert_eq!(runs.load(SeqCst), 3, "not stored, so never served changed ({})", b.name());
        assert!(!b.exists(&redcache::key!(amount(5, _))).await);
    }
}

/// The bytes Redis holds at `key` (which must be there); `None` on the in-process store,
/// which keeps no bytes a client could read.
async fn raw(b: &Backend, key: &str) -> Option<Vec<u8>> {
    if b.is_redis() {
        Some(b.raw_get(key).await.expect("the entry is in Redis"))
    } else {
        None
    }
}

/// The JSON envelope of `value`, as the README documents it: `{"v":1,"d":<value>}`.
fn json_envelope(value: &str) -> Vec<u8> {
    format!(r#"{{"v":1,"d":{}}}"#, serde_json::to_string(value).unwrap()).into_bytes()
}

/// A MessagePack entry read by rmp-serde, as JSON.
fn msgpack_seen(raw: &[u8]) -> serde_json::Value {
    assert!(
        matches!(raw[0], 0x80..=0x8f | 0xde | 0xdf),
        "a MessagePack map, not {:?}",
        String::from_utf8_lossy(raw)
    );
    rmp_serde::from_slice(raw).expect("any MessagePack reader reads the entry")
}

/// A compressed entry's envelope, uncompressed by lz4_flex.
fn uncompressed(raw: &[u8]) -> Vec<u8> {
    assert_eq!(raw[0], 0xc1, "a compressed entry");
    lz4_flex::block::decompress_size_prepended(&raw[1..]).expect("an LZ4 block")
}

on_both_stores! {
    async fn msgpack_values_round_trip_hit_and_cache_none(b: Backend) {
        let runs = AtomicUsize::new(0);
        b.cache
            .scope(async {
                assert_eq!(order_msgpack(1, &runs).await, Some(order(1)));
                assert_eq!(order_msgpack(1, &runs).await, Some(order(1)), "a hit");
                assert_eq!(order_msgpack(0, &runs).await, None);
                assert_eq!(order_msgpack(0, &runs).await, None, "a cached None");
            })
            .await;
        assert_eq!(runs.load(SeqCst), 2, "{}", b.name());
        let stats = b.cache.stats();
        assert_eq!((stats.hits, stats.null_hits, stats.faults), (1, 1, 0));
        let key = redcache::key!(order_msgpack(1, &runs));
        if let Some(raw) = raw(&b, &key).await {
            let value = serde_json::to_value(order(1)).unwrap();
            assert_eq!(msgpack_seen(&raw), serde_json::json!({"v": 1, "d": value}));
            let ttl = b.ttl_secs(&key).await.unwrap();
            assert!((590..=660).contains(&ttl), "{ttl}");
            let none = raw_none(&b, &redcache::key!(order_msgpack(0, &runs))).await;
            assert_eq!(msgpack_seen(&none), serde_json::json!({"v": 1, "none": true}));
        }
    }
}

async fn raw_none(b: &Backend, key: &str) -> Vec<u8> {
    raw(b, key).await.expect("the None is stored")
}

on_both_stores! {
    async fn entries_of_one_codec_are_read_by_functions_of_the_other(b: Backend) {
        // A rollout: the new build writes MessagePack, the old one JSON, on the same keys.
        let runs = AtomicUsize::new(0);
        b.cache
            .scope(async {
                assert_eq!(order_json(5, &runs).await, Some(order(5)));
                assert_eq!(order_msgpack(5, &runs).await, Some(order(5)), "JSON read");
                assert_eq!(order_msgpack(6, &runs).await, Some(order(6)));
                assert_eq!(order_json(6, &runs).await, Some(order(6)), "MessagePack read");
            })
            .await;
        assert_eq!(runs.load(SeqCst), 2, "{}: each key filled once", b.name());
        assert_eq!(b.cache.stats().faults, 0);
        if let Some(raw5) = raw(&b, &redcache::key!(order_json(5, &runs))).await {
            assert_eq!(raw5[0], b'{');
            let raw6 = raw(&b, &redcache::key!(order_json(6, &runs))).await.unwrap();
            assert_eq!(msgpack_seen(&raw6)["d"]["id"], 6);
            assert!(raw6.len() < raw5.len(), "{} vs {}", raw6.len(), raw5.len());
        }
    }
}

on_both_stores! {
    async fn large_values_are_stored_compressed_above_the_threshold(b: Backend) {
        let runs = AtomicUsize::new(0);
        let big = page_text("big", 50_000);
        let small = page_text("small", 200);
        b.cache
            .scope(async {
                for _ in 0..2 {
                    assert_eq!(page("big".into(), 50_000, &runs).await, big);
                    assert_eq!(page("small".into(), 200, &runs).await, small);
                    assert_eq!(page_msgpack("big".into(), 50_000, &runs).await, big);
                }
            })
            .await;
        assert_eq!(runs.load(SeqCst), 3, "{}: each filled once", b.name());
        let stats = b.cache.stats();
        assert_eq!((stats.hits, stats.faults), (3, 0));
        let key = redcache::key!(page("big".into(), 50_000, &runs));
        if let Some(stored) = raw(&b, &key).await {
            // LZ4 inside, JSON inside that: exactly the envelope JSON would have stored.
            let json = json_envelope(&big);
            assert_eq!(uncompressed(&stored), json);
            assert!(stored.len() * 10 < json.len(), "{} vs {}", stored.len(), json.len());
            let ttl = b.ttl_secs(&key).await.unwrap();
            assert!((590..=660).contains(&ttl), "{ttl}");
            // Below the threshold: plain JSON, readable with redis-cli.
            let key = redcache::key!(page("small".into(), 200, &runs));
            let stored = raw(&b, &key).await.unwrap();
            assert_eq!(stored, json_envelope(&small));
            // MessagePack compressed: a MessagePack envelope inside.
            let key = redcache::key!(page_msgpack("big".into(), 50_000, &runs));
            let inside = uncompressed(&raw(&b, &key).await.unwrap());
            assert_eq!(msgpack_seen(&inside), serde_json::json!({"v": 1, "d": big}));
        }
    }
}

on_both_stores! {
    async fn the_cache_wide_codec_applies_where_a_function_names_none(b: Backend) {
        let cache = b
            .cache_with(
                common::test_config()
                    .codec(redcache::Codec::MessagePack)
                    .compress_above(1024),
            )
            .await;
        let runs = AtomicUsize::new(0);
        let big: Vec<String> = (0..500).map(|i| format!("row {i} of a long report")).collect();
        cache
            .scope(async {
                assert_eq!(order_default(7, &runs).await, Some(order(7)));
                assert_eq!(order_json(8, &runs).await, Some(order(8)));
                assert_eq!(order_default(7, &runs).await, Some(order(7)), "a hit");
                assert_eq!(order_json(8, &runs).await, Some(order(8)), "a hit");
            })
            .await;
        assert_eq!(runs.load(SeqCst), 2, "{}", b.name());
        // The programmatic API writes in the cache's format too.
        cache.set("report", &big, Duration::from_secs(60)).await.unwrap();
        assert_eq!(cache.get::<Vec<String>>("report").await.unwrap(), Some(big.clone()));
        let loaded: Vec<String> = cache
            .get_or_insert_with("report:2", Duration::from_secs(60), || async { big.clone() })
            .await;
        assert_eq!(loaded, big);
        assert_eq!(cache.stats().faults, 0);
        if b.is_redis() {
            let raw7 = raw(&b, &redcache::key!(order_default(7, &runs))).await.unwrap();
            assert_eq!(msgpack_seen(&raw7)["d"]["city"], "Gdańsk");
            let raw8 = raw(&b, &redcache::key!(order_json(8, &runs))).await.unwrap();
            assert_eq!(raw8[0], b'{', "the function's own codec wins");
            for key in ["report", "report:2"] {
                let inside = uncompressed(&raw(&b, key).await.unwrap());
                assert_eq!(msgpack_seen(&inside)["d"][499], "row 499 of a long report");
            }
        }
    }
}

on_both_stores! {
    async fn put_and_invalidate_write_and_retire_msgpack_entries(b: Backend) {
        let runs = AtomicUsize::new(0);
        let mut edited = order(9);
        edited.note = Some("leave at the door".into());
        b.cache
            .scope(async {
                redcache::put!(order_msgpack(9, &runs), Some(edited.clone())).await.unwrap();
                assert_eq!(order_msgpack(9, &runs).await, Some(edited.clone()));
                assert_eq!(order_json(9, &runs).await, Some(edited.clone()));
                assert!(redcache::invalidate!(order_msgpack(9, &runs)).await.unwrap());
                assert_eq!(order_msgpack(9, &runs).await, Some(order(9)));
            })
            .await;
        assert_eq!(runs.load(SeqCst), 1, "{}: only after the invalidation", b.name());
        if let Some(stored) = raw(&b, &redcache::key!(order_msgpack(9, &runs))).await {
            assert_eq!(msgpack_seen(&stored)["d"]["note"], serde_json::Value::Null);
        }
    }
}

/// Entries that claim what they are not: each is a miss (a counted fault), the body's value
/// is returned, and a good entry replaces the bad one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn corrupt_entries_of_every_format_are_misses_and_are_replaced() {
    let server = RedisServer::start();
    let cache = redcache::Cache::connect(common::test_config().url(server.url()).build())
        .await
        .unwrap();
    let mut conn = server.conn().await;
    let runs = AtomicUsize::new(0);
    let corrupt: [(&str, Vec<u8>); 4] = [
        // A compressed entry whose length claims 2 GiB: refused before any allocation.
        ("huge", [&[0xc1, 0, 0, 0, 0x80][..], &[0x1f; 32]].concat()),
        // A compressed entry cut short.
        ("cut", {
            let mut packed = lz4_flex::block::compress_prepend_size(&[b'{'; 4000]);
            packed.truncate(packed.len() / 2);
            [&[0xc1][..], &packed].concat()
        }),
        // A MessagePack envelope whose value claims a 4 GiB string.
        (
            "str",
            vec![
                0x82, 0xa1, b'v', 1, 0xa1, b'd', 0xdb, 0xff, 0xff, 0xff, 0xff, b'x',
            ],
        ),
        // A MessagePack envelope of another format version.
        (
            "version",
            rmp_serde::to_vec_named(&serde_json::json!({"v": 2, "d": "x"})).unwrap(),
        ),
    ];
    for (i, (slug, bytes)) in corrupt.iter().enumerate() {
        let key = redcache::key!(page_msgpack((*slug).to_owned(), 2000, &runs));
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg(bytes)
            .arg("EX")
            .arg(600)
            .query_async(&mut conn)
            .await
            .unwrap();
        let value = cache
            .scope(page_msgpack((*slug).to_owned(), 2000, &runs))
            .await;
        assert_eq!(value, page_text(slug, 2000), "{slug}");
        assert_eq!(runs.load(SeqCst), i + 1, "{slug}: the body ran");
        assert_eq!(cache.stats().faults, i as u64 + 1, "{slug}: counted");
        let stored: Vec<u8> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        let inside = uncompressed(&stored);
        assert_eq!(
            msgpack_seen(&inside)["d"],
            page_text(slug, 2000),
            "{slug}: replaced"
        );
        // And now a hit.
        cache
            .scope(page_msgpack((*slug).to_owned(), 2000, &runs))
            .await;
        assert_eq!(runs.load(SeqCst), i + 1, "{slug}");
    }
}
