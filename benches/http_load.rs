//! Requests per second through axum over real loopback HTTP, against a baseline measured in
//! the same run, on one `redis-server` this benchmark starts itself, for a ~180-byte JSON
//! body:
//!
//! - **baseline**: a handler that does one raw redis-rs `GET` (on a `MultiplexedConnection`)
//!   of a key holding the body and returns the bytes as `application/json`;
//! - **floor**: what the HTTP contract alone costs any cache that keeps it, with none of
//!   redcache's work: the md5 of the request's key material, the same raw `GET`, and the
//!   headers a hit carries (`ETag`, `Cache-Control: max-age`, `Age`, `X-Cache`);
//! - **layer**: the same path served by a handler behind `redcache::http::CacheLayer` on a
//!   cache connected to the same server, warmed so that every measured request is a Redis
//!   hit (the handler runs once, for the first request).
//!
//! The servers run in this process, on three loopback ports. Each client is a task sending
//! requests back to back over its own keep-alive hyper-util client. The three are measured
//! in turn (baseline, floor, layer, baseline, ..) at 1, 16, 64 and 256 clients.
//!
//! `cargo bench --bench http_load --features http` prints requests/s, p50/p99 latency and
//! the ratios layer/baseline, floor/baseline and layer/floor (median, min–max over the
//! repeats). Under `cargo test` it runs a few requests as a smoke test.

#[path = "../tests/common/mod.rs"]
mod common;
mod shared;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use redcache::http::CacheLayer;
use redis::AsyncCommands;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The path both servers serve.
const PATH: &str = "/profile";
/// Where the baseline reads the body from.
const RAW_KEY: &str = "bench:http:raw";

/// The body, as JSON.
fn body() -> Bytes {
    Bytes::from(serde_json::to_vec(&shared::profile(1)).unwrap())
}

/// The baseline: one `GET` of the body.
async fn raw_handler(
    State(mut redis): State<redis::aio::MultiplexedConnection>,
) -> impl IntoResponse {
    let bytes: Vec<u8> = redis.get(RAW_KEY).await.unwrap();
    (
        [(header::CONTENT_TYPE, "application/json")],
        Bytes::from(bytes),
    )
}

/// The floor the HTTP contract sets for any cache keeping it, with none of redcache's own
/// work: the key's md5 over method, path and query, one `GET` of the entry, and a hit's
/// headers (`ETag`, `Cache-Control: max-age`, `Age`, `X-Cache`) on the raw bytes.
async fn floor_handler(
    State(mut redis): State<redis::aio::MultiplexedConnection>,
    uri: Uri,
) -> impl IntoResponse {
    use md5::Digest;
    let digest = md5::Md5::new()
        .chain_update(b"GET ")
        .chain_update(uri.path())
        .chain_update(uri.query().unwrap_or_default())
        .finalize();
    std::hint::black_box(digest);
    let bytes: Vec<u8> = redis.get(RAW_KEY).await.unwrap();
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::ETAG, "\"d41d8cd98f00b204e9800998ecf8427e\""),
            (header::CACHE_CONTROL, "max-age=3600"),
            (header::AGE, "0"),
        ],
        [(redcache::http::X_CACHE, "HIT")],
        Bytes::from(bytes),
    )
}

/// The handler behind the layer: counts its runs (it should run once).
async fn cached_handler(State(runs): State<Arc<AtomicU64>>) -> impl IntoResponse {
    runs.fetch_add(1, Ordering::Relaxed);
    ([(header::CONTENT_TYPE, "application/json")], body())
}

/// Serves `router` on a free loopback port; the URL of `PATH` there.
async fn serve(router: Router) -> Uri {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let uri = format!("http://{}{PATH}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    uri.parse().unwrap()
}

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// One `GET` of `uri`: the `X-Cache` header (if any) and the body's length.
async fn fetch(client: &HttpClient, uri: &Uri) -> (Option<HeaderValue>, usize) {
    let response = client.get(uri.clone()).await.expect("the server answers");
    assert_eq!(response.status(), StatusCode::OK);
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts.headers.get("x-cache").cloned(), body.len())
}

/// One measurement: `clients` tasks, each with its own keep-alive client, sending
/// `per_client` requests back to back.
struct Run {
    requests_per_sec: f64,
    latencies: Vec<Duration>,
}

async fn measure(uri: &Uri, clients: usize, per_client: usize, expect_hit: bool) -> Run {
    let size = body().len();
    // Each task opens its connection (one request, not timed) before the clock starts.
    let start = Arc::new(tokio::sync::Barrier::new(clients + 1));
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let uri = uri.clone();
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
            let (x_cache, len) = fetch(&client, &uri).await;
            assert_eq!(len, size);
            if expect_hit {
                assert_eq!(
                    x_cache.as_ref().map(HeaderValue::as_bytes),
                    Some(&b"HIT"[..])
                );
            }
            start.wait().await;
            let mut latencies = Vec::with_capacity(per_client);
            for _ in 0..per_client {
                let t = Instant::now();
                let (_, len) = fetch(&client, &uri).await;
                latencies.push(t.elapsed());
                debug_assert_eq!(len, size);
            }
            latencies
        }));
    }
    start.wait().await;
    let t = Instant::now();
    let mut latencies = Vec::with_capacity(clients * per_client);
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let elapsed = t.elapsed();
    Run {
        requests_per_sec: latencies.len() as f64 / elapsed.as_secs_f64(),
        latencies,
    }
}

/// The requests/s of `runs` over those of `base`, per pair of measurements taken in turn:
/// the median (min–max).
fn ratio(runs: &[Run], base: &[Run]) -> String {
    let mut ratios: Vec<f64> = base
        .iter()
        .zip(runs)
        .map(|(b, r)| r.requests_per_sec / b.requests_per_sec)
        .collect();
    let median = median(&mut ratios);
    format!(
        "{median:.2}x ({:.2}–{:.2}x)",
        ratios[0],
        ratios[ratios.len() - 1]
    )
}

/// The `q`-quantile of sorted latencies.
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// Requests/s (median over the repeats) and p50/p99 of all the repeats' requests.
fn cell(runs: &mut [Run]) -> String {
    let mut rates: Vec<f64> = runs.iter().map(|r| r.requests_per_sec).collect();
    let mut all: Vec<Duration> = runs
        .iter_mut()
        .flat_map(|r| r.latencies.drain(..))
        .collect();
    all.sort_unstable();
    format!(
        "{:>8.0} {:>8.1?} {:>8.1?}",
        median(&mut rates),
        quantile(&all, 0.5),
        quantile(&all, 0.99)
    )
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
    let mut redis = server.conn().await;
    let _: () = redis.set(RAW_KEY, body().to_vec()).await.unwrap();
    let cache = redcache::Cache::connect(common::test_config().url(server.url()).build())
        .await
        .unwrap();

    let baseline = serve(
        Router::new()
            .route(PATH, get(raw_handler))
            .with_state(redis.clone()),
    )
    .await;
    let floor = serve(
        Router::new()
            .route(PATH, get(floor_handler))
            .with_state(redis),
    )
    .await;
    let runs = Arc::new(AtomicU64::new(0));
    let layer = CacheLayer::new()
        .ttl(Duration::from_secs(3600))
        .cache(cache.clone());
    let cached = serve(
        Router::new()
            .route(PATH, get(cached_handler))
            .route_layer(layer)
            .with_state(runs.clone()),
    )
    .await;

    // Warm the layer: the first request runs the handler, the second is a hit.
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let (x_cache, _) = fetch(&client, &cached).await;
    assert_eq!(x_cache.unwrap(), "MISS");
    let (x_cache, len) = fetch(&client, &cached).await;
    assert_eq!(x_cache.unwrap(), "HIT");
    assert_eq!(len, body().len());
    let (x_cache, len) = fetch(&client, &baseline).await;
    assert!(x_cache.is_none());
    assert_eq!(len, body().len());
    let (x_cache, len) = fetch(&client, &floor).await;
    assert_eq!(x_cache.unwrap(), "HIT");
    assert_eq!(len, body().len());

    let (concurrency, total, repeats): (&[usize], usize, usize) = if full {
        (&[1, 16, 64, 256], 20_000, 5)
    } else {
        (&[1, 16], 64, 1)
    };
    println!(
        "body: {} bytes of JSON; {total} requests per measurement, {repeats} repeats per \
         concurrency, baseline, floor and layer in turn\n",
        body().len()
    );
    println!(
        "{:>7} | {:>26} | {:>26} | {:>26} | {:>22} | {:>22} | {:>22}",
        "clients",
        "baseline: req/s p50 p99",
        "floor: req/s p50 p99",
        "layer: req/s p50 p99",
        "layer/baseline",
        "floor/baseline",
        "layer/floor"
    );
    let stats_before = cache.stats();
    let mut layer_requests = 0;
    for &clients in concurrency {
        let per_client = (total / clients).max(1);
        let mut base_runs = Vec::with_capacity(repeats);
        let mut floor_runs = Vec::with_capacity(repeats);
        let mut layer_runs = Vec::with_capacity(repeats);
        for _ in 0..repeats {
            base_runs.push(measure(&baseline, clients, per_client, false).await);
            floor_runs.push(measure(&floor, clients, per_client, true).await);
            layer_runs.push(measure(&cached, clients, per_client, true).await);
            layer_requests += clients * (per_client + 1);
        }
        let layer = ratio(&layer_runs, &base_runs);
        let floor_ratio = ratio(&floor_runs, &base_runs);
        let over_floor = ratio(&layer_runs, &floor_runs);
        println!(
            "{clients:>7} | {} | {} | {} | {layer} | {floor_ratio} | {over_floor}",
            cell(&mut base_runs),
            cell(&mut floor_runs),
            cell(&mut layer_runs),
        );
    }

    // Every measured request was a hit: the handler ran once, for the warming request.
    assert_eq!(runs.load(Ordering::Relaxed), 1, "the handler ran once");
    let stats = cache.stats();
    assert_eq!(stats.hits - stats_before.hits, layer_requests as u64);
    assert_eq!(stats.misses, 1, "{stats:?}");
    assert_eq!(stats.faults, 0, "{stats:?}");
}
