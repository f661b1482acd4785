//! The spans operators' tracing sees: one `debug` span per cached call with its prefix, key
//! hash and result, and one `trace` span per Redis operation with OpenTelemetry's names.
//!
//! In a binary of their own: `tracing` caches each callsite's interest process-wide, and a
//! test thread without a subscriber hitting a callsite while another test installs its
//! scoped subscriber can leave that interest at "never" for the rest of the run.

mod common;

use common::{test_config, RedisServer};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

#[redcache::cached(prefix = "o:price", ttl = 60, skip(calls))]
async fn price(sku: u64, calls: &AtomicUsize) -> u64 {
    calls.fetch_add(1, SeqCst);
    sku * 100
}

#[redcache::cached(prefix = "o:user", ttl = 60, skip(calls))]
async fn user(id: u64, calls: &AtomicUsize) -> Option<String> {
    calls.fetch_add(1, SeqCst);
    (id != 0).then(|| format!("user {id}"))
}

/// Known traffic: `o:price` misses once and hits twice; `o:user` misses twice (a value and
/// a `None`) and is served the cached `None` once.
async fn traffic(cache: &redcache::Cache) {
    let calls = AtomicUsize::new(0);
    cache
        .scope(async {
            for _ in 0..3 {
                assert_eq!(price(1, &calls).await, 100);
            }
            assert_eq!(user(7, &calls).await.as_deref(), Some("user 7"));
            assert_eq!(user(0, &calls).await, None);
            assert_eq!(user(0, &calls).await, None);
        })
        .await;
    assert_eq!(calls.load(SeqCst), 3);
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A span's fields, values as text.
type Fields = Vec<(String, String)>;

/// Spans as a subscriber sees them: name and fields.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<(String, Fields)>>>);

struct FieldText<'a>(&'a mut Vec<(String, String)>);

impl tracing::field::Visit for FieldText<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0
            .push((field.name().to_string(), format!("{value:?}")));
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.push((field.name().to_string(), value.to_string()));
    }
}

impl<S> tracing_subscriber::Layer<S> for Spans
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut fields = vec![("id".to_string(), id.into_u64().to_string())];
        attrs.record(&mut FieldText(&mut fields));
        self.0
            .lock()
            .unwrap()
            .push((attrs.metadata().name().to_string(), fields));
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut spans = self.0.lock().unwrap();
        let id = id.into_u64().to_string();
        if let Some((_, fields)) = spans
            .iter_mut()
            .rev()
            .find(|(_, f)| f.iter().any(|(k, v)| k == "id" && *v == id))
        {
            values.record(&mut FieldText(fields));
        }
    }
}

/// The `redcache.call` spans seen, in order: prefix, key hash and result (the last value
/// recorded of each).
fn call_spans(spans: &Spans) -> Vec<(String, String, String)> {
    let spans = spans.0.lock().unwrap();
    spans
        .iter()
        .filter(|(name, _)| name == "redcache.call")
        .map(|(_, fields)| {
            let get = |k: &str| {
                fields
                    .iter()
                    .rev()
                    .find(|(name, _)| name == k)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            (get("prefix"), get("key.hash"), get("result"))
        })
        .collect()
}

#[test]
fn each_cached_call_has_a_debug_span_with_prefix_key_hash_and_result() {
    use tracing_subscriber::layer::SubscriberExt;
    let spans = Spans::default();
    let subscriber = tracing_subscriber::registry().with(spans.clone());
    tracing::subscriber::with_default(subscriber, || {
        runtime().block_on(traffic(&redcache::Cache::memory()));
    });
    let calls = call_spans(&spans);
    let price_hash = common::expected_key("o:price", "[1]")["o:price:".len()..].to_string();
    let expected: Vec<(String, String, String)> = [
        ("o:price", price_hash.as_str(), "miss"),
        ("o:price", &price_hash, "hit"),
        ("o:price", &price_hash, "hit"),
    ]
    .iter()
    .map(|(p, h, r)| (p.to_string(), h.to_string(), r.to_string()))
    .collect();
    assert_eq!(calls[..3], expected[..]);
    let results: Vec<&str> = calls[3..].iter().map(|c| c.2.as_str()).collect();
    assert_eq!(results, ["miss", "miss", "null_hit"]);
    assert!(calls.iter().all(|c| c.1.len() == 32), "{calls:?}");
}

#[test]
fn each_redis_operation_has_a_trace_span_with_opentelemetry_names() {
    use tracing_subscriber::layer::SubscriberExt;
    let server = RedisServer::start();
    let spans = Spans::default();
    let subscriber = tracing_subscriber::registry().with(spans.clone());
    tracing::subscriber::with_default(subscriber, || {
        runtime().block_on(async {
            let cache = redcache::Cache::connect(test_config().url(server.url()).build())
                .await
                .unwrap();
            let calls = AtomicUsize::new(0);
            cache
                .scope(async {
                    assert_eq!(price(2, &calls).await, 200);
                    assert_eq!(price(2, &calls).await, 200);
                })
                .await;
            assert_eq!(calls.load(SeqCst), 1);
        });
    });
    let spans = spans.0.lock().unwrap();
    let field = |fields: &Fields, k: &str| {
        fields
            .iter()
            .find(|(name, _)| name == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let ops: Vec<(String, String)> = spans
        .iter()
        .filter(|(name, _)| name == "redcache.store")
        .map(|(_, f)| (field(f, "db.system.name"), field(f, "db.operation.name")))
        .collect();
    let expected = [("redis", "GET"), ("redis", "SET"), ("redis", "GET")]
        .map(|(s, o)| (s.to_string(), o.to_string()));
    // A miss reads and stores (SET NX), a hit reads.
    assert_eq!(ops, expected);
}

#[redcache::cached(prefix = "o:half", ttl = 60)]
async fn half(x: f64) -> f64 {
    x / 2.0
}

#[redcache::cached(prefix = "o:owned", ttl = 60, tags("o:owner:{id}"))]
async fn owned(id: u64) -> u64 {
    id
}

/// A call that runs uncached because of a fault still has its span, with result `fault`:
/// key material that cannot be serialized (no key to show), and a tagged call whose tags'
/// generations cannot be read (Redis is gone).
#[test]
fn a_call_that_faults_before_its_read_has_a_span_too() {
    use tracing_subscriber::layer::SubscriberExt;
    let mut server = RedisServer::start();
    let spans = Spans::default();
    let subscriber = tracing_subscriber::registry().with(spans.clone());
    tracing::subscriber::with_default(subscriber, || {
        runtime().block_on(async {
            let cache = redcache::Cache::connect(
                test_config()
                    .url(server.url())
                    .op_timeout(std::time::Duration::from_millis(200))
                    .build(),
            )
            .await
            .unwrap();
            assert!(cache.scope(half(f64::NAN)).await.is_nan());
            server.stop();
            assert_eq!(cache.scope(owned(3)).await, 3);
            assert_eq!(cache.stats().faults, 2, "{:?}", cache.stats());
        });
    });
    let calls = call_spans(&spans);
    let owned_hash = common::expected_key("o:owned", "[3]")["o:owned:".len()..].to_string();
    let expected = [
        ("o:half", "", "fault"),
        ("o:owned", owned_hash.as_str(), "fault"),
    ]
    .map(|(p, h, r)| (p.to_string(), h.to_string(), r.to_string()));
    assert_eq!(calls, expected);
}
