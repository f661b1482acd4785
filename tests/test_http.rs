//! The HTTP layer over real HTTP: an axum server on a free loopback port, hyper's client,
//! and a real `redis-server` (a cluster and the memory store too). Each test checks one
//! rule of the contract by the handler's run count, the status, the headers and the body.
#![cfg(feature = "http")]

mod common;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use common::Backend;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use redcache::http::{CacheLayer, EvictLayer};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The service under test: a catalogue whose handlers count their runs.
#[derive(Clone, Default)]
struct App {
    runs: Arc<Mutex<HashMap<&'static str, u64>>>,
    versions: Arc<Mutex<HashMap<u64, u64>>>,
    /// Bumped by the `/slow` handler, which then waits for `slow_gate` to open.
    slow_runs: Arc<AtomicU64>,
    /// Closed (no permit) until a test opens it: the requests sent together are all
    /// waiting on the one that runs by then.
    slow_gate: Gate,
    /// `/flaky` answers 503 while this is true.
    failing: Arc<std::sync::atomic::AtomicBool>,
    /// `/gated`, `/gated-flaky` and `/own-swr` wait for this from their second run on.
    gate: Arc<tokio::sync::Notify>,
}

/// A gate that opens once, for good (see `App::slow_gate`).
#[derive(Clone)]
struct Gate(Arc<tokio::sync::Semaphore>);

impl Default for Gate {
    fn default() -> Self {
        Gate(Arc::new(tokio::sync::Semaphore::new(0)))
    }
}

impl Gate {
    async fn passed(&self) {
        drop(self.0.acquire().await.unwrap());
    }

    fn open(&self) {
        self.0.add_permits(1);
    }
}

impl App {
    fn ran(&self, route: &'static str) {
        *self.runs.lock().unwrap().entry(route).or_default() += 1;
    }

    /// Waits (up to 10 s, yielding) until `route`'s handler has started `n` runs; fails
    /// with `what` if it has not.
    async fn until_runs(&self, route: &'static str, n: u64, what: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.runs(route) < n {
            assert!(std::time::Instant::now() < deadline, "{what}");
            tokio::task::yield_now().await;
        }
    }

    /// Waits (up to 10 s) until `/slow`'s handler has started `n` runs.
    async fn until_slow_runs(&self, n: u64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.slow_runs.load(Ordering::SeqCst) < n {
            assert!(std::time::Instant::now() < deadline, "/slow never ran");
            tokio::task::yield_now().await;
        }
    }

    fn runs(&self, route: &'static str) -> u64 {
        self.runs.lock().unwrap().get(route).copied().unwrap_or(0)
    }
}

async fn product(State(app): State<App>, Path(id): Path<u64>) -> impl IntoResponse {
    app.ran("product");
    let version = app.versions.lock().unwrap().get(&id).copied().unwrap_or(1);
    (
        [("content-type", "application/json")],
        format!(r#"{{"id":{id},"version":{version}}}"#),
    )
}

async fn update_product(State(app): State<App>, Path(id): Path<u64>) -> StatusCode {
    app.ran("update");
    *app.versions.lock().unwrap().entry(id).or_insert(1) += 1;
    StatusCode::NO_CONTENT
}

/// A form's write: the update, then `303 See Other` back to the product.
async fn form_update(State(app): State<App>, Path(id): Path<u64>) -> impl IntoResponse {
    update_product(State(app), Path(id)).await;
    let location = format!("/products/{id}");
    (
        StatusCode::SEE_OTHER,
        [(axum::http::header::LOCATION, location)],
    )
}

async fn failing_update(State(app): State<App>) -> StatusCode {
    app.ran("failing_update");
    StatusCode::CONFLICT
}

async fn search(State(app): State<App>, uri: axum::http::Uri) -> String {
    app.ran("search");
    format!("results for {}", uri.query().unwrap_or(""))
}

async fn search_post(State(app): State<App>, body: Bytes) -> Vec<u8> {
    app.ran("search_post");
    [b"results for ".as_slice(), &body].concat()
}

async fn lang(State(app): State<App>, headers: HeaderMap) -> impl IntoResponse {
    app.ran("lang");
    let lang = headers
        .get("accept-language")
        .map_or("none", |v| v.to_str().unwrap())
        .to_owned();
    ([("vary", "Accept-Language")], format!("hello in {lang}"))
}

/// Varies by `Accept-Language`, and does not say so.
async fn lang_unsaid(State(app): State<App>, headers: HeaderMap) -> String {
    app.ran("lang-unsaid");
    let lang = headers
        .get("accept-language")
        .map_or("none", |v| v.to_str().unwrap());
    format!("hello in {lang}")
}

async fn with_headers(
    State(app): State<App>,
    Path(kind): Path<String>,
    headers: HeaderMap,
) -> impl IntoResponse {
    app.ran("kind");
    let mut out = HeaderMap::new();
    match kind.as_str() {
        "no-store" => drop(out.insert("cache-control", HeaderValue::from_static("no-store"))),
        "private" => drop(out.insert("cache-control", HeaderValue::from_static("private"))),
        "cookie" => drop(out.insert("set-cookie", HeaderValue::from_static("session=1"))),
        "vary-any" => drop(out.insert("vary", HeaderValue::from_static("*"))),
        "public" => drop(out.insert(
            "cache-control",
            HeaderValue::from_static("public, max-age=30"),
        )),
        "own-etag" => drop(out.insert("etag", HeaderValue::from_static("W/\"v1\""))),
        "private-upper" => drop(out.insert("cache-control", HeaderValue::from_static("Private"))),
        "private-field" => drop(out.insert(
            "cache-control",
            HeaderValue::from_static("private=\"x-user\", max-age=60"),
        )),
        "unreadable" => drop(out.insert(
            "cache-control",
            HeaderValue::from_static("public, max-age=-1"),
        )),
        "expired" => drop(out.insert("expires", HeaderValue::from_static("0"))),
        // 60 s of `Expires` after its `Date`, all of them spent upstream.
        "expires-aged-out" => {
            out.insert(
                "date",
                HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
            );
            out.insert(
                "expires",
                HeaderValue::from_static("Sun, 06 Nov 1994 08:50:37 GMT"),
            );
            out.insert("age", HeaderValue::from_static("60"));
        }
        // Dated long ago: older than its max-age, though it says no `Age`.
        "dated" => {
            out.insert(
                "date",
                HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
            );
            out.insert("cache-control", HeaderValue::from_static("max-age=60"));
        }
        "aged" | "aged-out" => {
            let age = if kind == "aged" { "50" } else { "60" };
            out.insert("cache-control", HeaderValue::from_static("max-age=60"));
            out.insert("age", HeaderValue::from_static(age));
        }
        // A proxy's challenge to the handler, as a handler that proxies may pass it on.
        "proxy" => {
            out.insert(
                "proxy-authenticate",
                HeaderValue::from_static("Basic realm=\"upstream\""),
            );
            out.insert(
                "proxy-authentication-info",
                HeaderValue::from_static("nextnonce=\"1\""),
            );
        }
        "connection" => {
            out.insert("connection", HeaderValue::from_static("x-hop"));
            out.insert(
                "x-hop",
                HeaderValue::from_static("for this connection only"),
            );
        }
        _ => {}
    }
    let who = headers
        .get("authorization")
        .map_or("anonymous", |v| v.to_str().unwrap());
    (out, format!("{kind} for {who}"))
}

/// When `/conditional`'s representation last changed.
const LAST_MODIFIED: &str = "Sun, 06 Nov 1994 08:49:37 GMT";

/// Evaluates `If-Match` and `If-Unmodified-Since` (any date but its `Last-Modified` is
/// taken for an earlier one), then `If-None-Match`, as an origin server does.
async fn guarded(State(app): State<App>, headers: HeaderMap) -> axum::response::Response {
    app.ran("guarded");
    let asked = |name| headers.get(name).map(|v| v.to_str().unwrap());
    let validators = [("etag", "\"v1\""), ("last-modified", LAST_MODIFIED)];
    let failed = asked("if-match").is_some_and(|tags| !tags.contains("\"v1\""))
        || asked("if-unmodified-since").is_some_and(|date| date != LAST_MODIFIED);
    if failed {
        return (StatusCode::PRECONDITION_FAILED, validators).into_response();
    }
    if asked("if-none-match").is_some_and(|tags| tags.contains("\"v1\"")) {
        return (StatusCode::NOT_MODIFIED, validators).into_response();
    }
    (validators, "guarded v1").into_response()
}

/// A handler with validators of its own, which answers a current client `304` itself, as
/// a file server does (`ETag: "v1"`, `Last-Modified`); `/conditional/cookie` also sets a
/// cookie (so it is never stored). It takes a while, so that requests sent together
/// overlap with the one that runs, and counts the runs that were asked a condition.
async fn conditional(
    State(app): State<App>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> axum::response::Response {
    app.ran("conditional");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let asked = |name| headers.get(name).map(|v| v.to_str().unwrap());
    let mut out = HeaderMap::new();
    out.insert("etag", HeaderValue::from_static("\"v1\""));
    out.insert("last-modified", HeaderValue::from_static(LAST_MODIFIED));
    if uri.path().ends_with("/cookie") {
        out.insert("set-cookie", HeaderValue::from_static("seen=1"));
    }
    let current = match asked("if-none-match") {
        Some(tags) => tags.contains("\"v1\""),
        None => asked("if-modified-since") == Some(LAST_MODIFIED),
    };
    if current {
        app.ran("conditional 304");
        return (StatusCode::NOT_MODIFIED, out).into_response();
    }
    (out, [("content-type", "text/plain")], "version 1").into_response()
}

async fn missing(State(app): State<App>) -> StatusCode {
    app.ran("missing");
    StatusCode::NOT_FOUND
}

async fn big(State(app): State<App>) -> Vec<u8> {
    app.ran("big");
    (0..4096u32).map(|i| (i % 251) as u8).collect()
}

/// Says its body is 1000 bytes long, and sends 600.
async fn short(State(app): State<App>) -> axum::response::Response {
    app.ran("short");
    let mut response = axum::response::Response::new(axum::body::Body::from(vec![b'x'; 600]));
    let length = HeaderValue::from_static("1000");
    response
        .headers_mut()
        .insert(axum::http::header::CONTENT_LENGTH, length);
    response
}

/// A tenant's dashboard: whose it is, and for which host.
async fn dashboard(
    State(app): State<App>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> String {
    app.ran("dashboard");
    // The host as axum-extra's `Host` extractor reads it: a proxy's `Forwarded` host (of
    // its first element, the name and value trimmed, unquoted), else its
    // `X-Forwarded-Host`, else `Host`.
    let forwarded = headers.get("forwarded").and_then(|value| {
        let first = value.to_str().unwrap().split(',').next()?;
        first.split(';').find_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            let host = name.trim().eq_ignore_ascii_case("host");
            host.then(|| value.trim().trim_matches('"'))
        })
    });
    let host = forwarded
        .or_else(|| headers.get("x-forwarded-host").map(|v| v.to_str().unwrap()))
        .unwrap_or_else(|| headers["host"].to_str().unwrap());
    format!("{tenant} on {host}")
}

async fn update_dashboard(State(app): State<App>) -> StatusCode {
    app.ran("update dashboard");
    StatusCode::NO_CONTENT
}

async fn flaky(State(app): State<App>) -> (StatusCode, String) {
    app.ran("flaky");
    match app.failing.load(Ordering::SeqCst) {
        true => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the database is down".into(),
        ),
        false => (
            StatusCode::OK,
            format!("fresh as of run {}", app.runs("flaky")),
        ),
    }
}

/// `/gated-flaky`: `/flaky`, whose runs after the first wait for `gate` before they answer.
async fn gated_flaky(State(app): State<App>) -> (StatusCode, String) {
    app.ran("gated-flaky");
    let run = app.runs("gated-flaky");
    if run > 1 {
        app.gate.notified().await;
    }
    match app.failing.load(Ordering::SeqCst) {
        true => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the database is down".into(),
        ),
        false => (StatusCode::OK, format!("fresh as of run {run}")),
    }
}

async fn gated(State(app): State<App>) -> String {
    app.ran("gated");
    let run = app.runs("gated");
    if run > 1 {
        app.gate.notified().await;
    }
    format!("gated run {run}")
}

/// A route whose responses carry their own stale windows in `cache_control`: `503` while
/// `failing`; `/own-swr`'s runs after the first wait for `gate`.
async fn own_windows(
    app: App,
    name: &'static str,
    cache_control: &'static str,
) -> axum::response::Response {
    app.ran(name);
    if app.failing.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "the database is down").into_response();
    }
    let run = app.runs(name);
    if name == "own-swr" && run > 1 {
        app.gate.notified().await;
    }
    let headers = [(axum::http::header::CACHE_CONTROL, cache_control)];
    (headers, format!("{name} run {run}")).into_response()
}

/// An absolute link, as a page behind a proxy builds it: the scheme from
/// `X-Forwarded-Proto`, else `Forwarded`'s `proto=`, else `http`.
async fn origin(State(app): State<App>, headers: HeaderMap) -> String {
    app.ran("origin");
    let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_owned());
    let forwarded = header("forwarded").and_then(|f| {
        f.split(';')
            .find_map(|pair| pair.trim().strip_prefix("proto=").map(str::to_owned))
    });
    let proto = header("x-forwarded-proto")
        .or(forwarded)
        .unwrap_or_else(|| "http".into());
    format!("{proto}://{}/page", header("host").unwrap())
}

/// What a `GET` with a body sent (axum hands it to a handler like any other).
async fn echo(State(app): State<App>, body: Bytes) -> Bytes {
    app.ran("echo");
    body
}

/// `/lang` with a `Vary` the layer cannot read: `quoted` puts the name in quotes; `latin1`
/// adds a line that is not ASCII.
async fn lang_unreadable(
    State(app): State<App>,
    Path(how): Path<String>,
    headers: HeaderMap,
) -> impl IntoResponse {
    app.ran("lang unreadable");
    let lang = headers
        .get("accept-language")
        .map_or("none", |v| v.to_str().unwrap())
        .to_owned();
    let mut out = HeaderMap::new();
    if how == "quoted" {
        out.append("vary", HeaderValue::from_static("\"Accept-Language\""));
    } else {
        out.append("vary", HeaderValue::from_static("Accept-Language"));
        out.append("vary", HeaderValue::from_bytes(b"X-Caf\xe9").unwrap());
    }
    (out, format!("hello in {lang}"))
}

/// Ten bytes, or (for `Range: bytes=0-3`) the first four of them as `206`.
async fn ranged(State(app): State<App>, headers: HeaderMap) -> axum::response::Response {
    app.ran("ranged");
    const WHOLE: &str = "0123456789";
    match headers.get("range") {
        Some(range) if range == "bytes=0-3" => (
            StatusCode::PARTIAL_CONTENT,
            [("content-range", "bytes 0-3/10")],
            &WHOLE[..4],
        )
            .into_response(),
        _ => WHOLE.into_response(),
    }
}

/// A page, and a route's own `HEAD` handler for it that reads nothing.
async fn page(State(app): State<App>) -> &'static str {
    app.ran("page");
    "the whole page"
}

async fn probe(State(app): State<App>) -> impl IntoResponse {
    app.ran("probe");
    [("x-probe", "yes")]
}

async fn slow(State(app): State<App>) -> String {
    app.slow_runs.fetch_add(1, Ordering::SeqCst);
    app.slow_gate.passed().await;
    "slow answer".to_owned()
}

/// The routes, with `layer` on the reads and an `EvictLayer` on the writes.
fn router(app: App, cache: &redcache::Cache, layer: CacheLayer) -> Router {
    let layer = layer.cache(cache.clone());
    let reads = Router::new()
        .route("/products/{id}", get(product))
        .route("/search", get(search).post(search_post))
        .route("/lang", get(lang))
        .route("/lang-unsaid", get(lang_unsaid))
        .route("/kind/{kind}", get(with_headers))
        .route("/missing", get(missing))
        .route("/big", get(big))
        .route("/short", get(short))
        .route("/slow", get(slow))
        .route("/flaky", get(flaky))
        .route("/gated", get(gated))
        .route("/conditional", get(conditional))
        .route("/conditional/cookie", get(conditional))
        .route("/guarded", get(guarded))
        .route("/origin", get(origin))
        .route("/echo", get(echo))
        .route("/lang-unreadable/{how}", get(lang_unreadable))
        .route("/ranged", get(ranged))
        .route("/events", get(events))
        .route(
            "/own-sie",
            get(|State(app): State<App>| {
                own_windows(app, "own-sie", "max-age=1, stale-if-error=30")
            }),
        )
        .route(
            "/own-swr",
            get(|State(app): State<App>| {
                own_windows(app, "own-swr", "max-age=1, stale-while-revalidate=30")
            }),
        )
        .route(
            "/own-revalidate",
            get(|State(app): State<App>| {
                own_windows(app, "own-revalidate", "max-age=1, must-revalidate")
            }),
        )
        .route(
            "/own-none",
            get(|State(app): State<App>| {
                own_windows(app, "own-none", "max-age=1, stale-if-error=0")
            }),
        )
        .route_layer(layer);
    let writes = Router::new()
        .route(
            "/products/{id}",
            axum::routing::put(update_product).post(form_update),
        )
        .route("/failing/{id}", post(failing_update))
        .route_layer(
            EvictLayer::new()
                .own_path()
                .path("/search")
                .tags_from(product_tag)
                .cache(cache.clone()),
        );
    reads.merge(writes).with_state(app)
}

/// `product:{id}` for `/products/{id}`, none for other paths.
fn product_tag(request: &axum::http::request::Parts) -> Vec<String> {
    match request.uri.path().strip_prefix("/products/") {
        Some(id) => vec![format!("product:{id}")],
        None => Vec::new(),
    }
}

/// A function whose entries carry the same tag as the product routes'; `runs` counts its
/// body's runs.
#[redcache::cached(prefix = "h:stock", ttl = 120, tags("product:{id}"), skip(runs))]
async fn stock(id: u64, runs: &AtomicU64) -> u64 {
    runs.fetch_add(1, Ordering::SeqCst);
    id * 10
}

/// A running server and a client for it.
struct Served {
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
    app: App,
}

/// What a request got back.
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    fn x_cache(&self) -> &str {
        self.header("x-cache").expect("every response says X-Cache")
    }

    /// Its `Age`, in seconds.
    fn age(&self) -> u64 {
        self.header("age").expect("an Age").parse().unwrap()
    }
}

async fn serve(cache: &redcache::Cache, layer: CacheLayer) -> Served {
    let app = App::default();
    serve_router(app.clone(), router(app, cache, layer)).await
}

/// Serves `router`, whose handlers count their runs in `app`.
async fn serve_router(app: App, router: Router) -> Served {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let client = Client::builder(TokioExecutor::new()).build_http();
    Served { base, client, app }
}

impl Served {
    async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        let mut request = axum::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
            .unwrap();
        let response = self
            .client
            .request(request)
            .await
            .expect("the server answers");
        let (parts, body) = response.into_parts();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
        }
    }

    async fn get(&self, path: &str) -> Reply {
        self.send("GET", path, &[], "").await
    }

    async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.send("GET", path, headers, "").await
    }
}

/// `/{tenant}/dashboard` alone behind the layer (the host is what its page depends on).
async fn serve_dashboard(cache: &redcache::Cache) -> Served {
    let app = App::default();
    let router = Router::new()
        .route("/{tenant}/dashboard", get(dashboard))
        .route_layer(layer().cache(cache.clone()))
        .with_state(app.clone());
    serve_router(app, router).await
}

fn layer() -> CacheLayer {
    CacheLayer::new()
        .ttl(Duration::from_secs(120))
        .jitter(Duration::ZERO)
        .max_body_bytes(1024)
}

/// A test on a real Redis, a real Redis Cluster and the memory store.
macro_rules! http_test {
    (async fn $name:ident($backend:ident: Backend) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn run($backend: Backend) $body

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn redis() {
                run(Backend::redis().await).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn cluster() {
                run(Backend::cluster().await).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn memory() {
                run(Backend::memory()).await
            }
        }
    };
}

http_test! {
    async fn miss_then_hit_with_etag_max_age_and_age(backend: Backend) {
        let served = serve(&backend.cache, layer()).await;
        let first = served.get("/products/7").await;
        assert_eq!(first.status, StatusCode::OK);
        assert_eq!(first.x_cache(), "MISS");
        assert_eq!(&first.body[..], br#"{"id":7,"version":1}"#);
        let etag = first.header("etag").expect("a stored response has an ETag").to_owned();
        let expected = format!("\"{:x}\"", md5::Md5::digest(&first.body));
        assert_eq!(etag, expected, "a strong ETag: the body's md5");
        assert_eq!(first.header("cache-control"), Some("max-age=120"));
        assert_eq!(first.header("age"), None);

        let second = served.get("/products/7").await;
        assert_eq!(second.x_cache(), "HIT");
        assert_eq!(second.status, StatusCode::OK);
        assert_eq!(second.body, first.body, "byte for byte");
        assert_eq!(second.header("etag"), Some(etag.as_str()));
        assert_eq!(second.header("content-type"), Some("application/json"));
        assert_eq!(second.header("content-length"), Some("20"));
        let age: u64 = second.header("age").expect("a hit has an Age").parse().unwrap();
        assert!(age <= 2, "age {age}");
        // The lifetime, whose `Age` a client subtracts (RFC 9111 § 4.2): not counted down
        // here as well.
        assert_eq!(second.header("cache-control"), Some("max-age=120"));
        assert_eq!(served.app.runs("product"), 1, "the hit did not run the handler");

        // The entry is where the README says, for the layer's TTL.
        let stats = backend.cache.stats_by_prefix();
        let http = stats.iter().find(|(p, _)| p == "http").expect("stats under the prefix").1;
        assert_eq!((http.hits, http.misses, http.stores), (1, 1, 1));
    }
}

http_test! {
    async fn the_scheme_a_proxy_passes_on_is_part_of_the_key(backend: Backend) {
        let served = serve(&backend.cache, layer()).await;
        let plain = served.get_with("/origin", &[("x-forwarded-proto", "http")]).await;
        assert_eq!(plain.x_cache(), "MISS");
        assert!(plain.body.starts_with(b"http://"), "{:?}", plain.body);
        for asks in [
            [("x-forwarded-proto", "https")],
            [("forwarded", "for=10.0.0.1;proto=https")],
        ] {
            let secure = served.get_with("/origin", &asks).await;
            assert_eq!(secure.x_cache(), "MISS", "{asks:?}");
            assert!(secure.body.starts_with(b"https://"), "{:?}", secure.body);
        }
        let again = served.get_with("/origin", &[("x-forwarded-proto", "https")]).await;
        assert_eq!(again.x_cache(), "HIT");
        assert!(again.body.starts_with(b"https://"));
        assert_eq!(served.app.runs("origin"), 3);
    }
}

http_test! {
    async fn a_get_with_a_body_goes_to_the_handler_and_is_not_stored(backend: Backend) {
        let served = serve(&backend.cache, layer()).await;
        for body in ["shoes", "hats"] {
            let reply = served.send("GET", "/echo", &[], body).await;
            assert_eq!((reply.x_cache(), &reply.body[..]), ("BYPASS", body.as_bytes()));
        }
        assert_eq!(served.app.runs("echo"), 2);
        // Without one, as usual.
        assert_eq!(served.get("/echo").await.x_cache(), "MISS");
        assert_eq!(served.get("/echo").await.x_cache(), "HIT");
        assert_eq!(served.app.runs("echo"), 3);
    }
}

http_test! {
    async fn a_vary_that_cannot_be_read_is_not_stored(backend: Backend) {
        let served = serve(&backend.cache, layer()).await;
        for how in ["quoted", "latin1"] {
            let path = format!("/lang-unreadable/{how}");
            for lang in ["en", "fr", "en"] {
                let reply = served.get_with(&path, &[("accept-language", lang)]).await;
                assert_eq!(reply.x_cache(), "MISS", "{how} {lang}");
                assert_eq!(reply.body, format!("hello in {lang}"), "{how}");
            }
        }
        assert_eq!(served.app.runs("lang unreadable"), 6);
    }
}

http_test! {
    async fn a_part_is_the_handlers_and_never_stored(backend: Backend) {
        let statuses = [StatusCode::OK, StatusCode::PARTIAL_CONTENT];
        let served = serve(&backend.cache, layer().statuses(statuses)).await;
        let part = served.get_with("/ranged", &[("range", "bytes=0-3")]).await;
        assert_eq!((part.status, &part.body[..]), (StatusCode::PARTIAL_CONTENT, &b"0123"[..]));
        assert_eq!(part.x_cache(), "BYPASS");
        let whole = served.get("/ranged").await;
        assert_eq!((whole.status, whole.x_cache(), &whole.body[..]), (StatusCode::OK, "MISS", &b"0123456789"[..]));
        let hit = served.get("/ranged").await;
        assert_eq!((hit.status, hit.x_cache(), &hit.body[..]), (StatusCode::OK, "HIT", &b"0123456789"[..]));
        let head = served.send("HEAD", "/ranged", &[], "").await;
        assert_eq!(head.header("content-length"), Some("10"));
        // A part of a stored response is still the handler's to answer.
        let part = served.get_with("/ranged", &[("range", "bytes=0-3")]).await;
        assert_eq!((part.status, part.x_cache(), &part.body[..]), (StatusCode::PARTIAL_CONTENT, "BYPASS", &b"0123"[..]));
        // The handler may not answer `only-if-cached`: the stored response does, whole.
        let only = served
            .get_with("/ranged", &[("range", "bytes=0-3"), ("cache-control", "only-if-cached")])
            .await;
        assert_eq!((only.status, only.x_cache(), &only.body[..]), (StatusCode::OK, "HIT", &b"0123456789"[..]));
        // A `HEAD` ignores `Range`.
        let head = served.send("HEAD", "/ranged", &[("range", "bytes=0-3")], "").await;
        assert_eq!((head.status, head.x_cache()), (StatusCode::OK, "HIT"));
        // The whole from its start, as browsers ask for media: the stored response.
        let from_start = served.get_with("/ranged", &[("range", "bytes=0-")]).await;
        assert_eq!((from_start.status, from_start.x_cache(), &from_start.body[..]), (StatusCode::OK, "HIT", &b"0123456789"[..]));
        assert_eq!(served.app.runs("ranged"), 3);
    }
}

/// A request body that tells nothing of its length or end, as a middleware's wrapper may
/// (tower-http's request body timeout passes no hints on).
struct Opaque(axum::body::Body);

impl hyper::body::Body for Opaque {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, axum::Error>>> {
        std::pin::Pin::new(&mut self.0).poll_frame(cx)
    }
}

/// One event, then a stream that stays open, as a server-sent events endpoint's does.
struct Events {
    sent: bool,
}

impl hyper::body::Body for Events {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        if std::mem::replace(&mut self.sent, true) {
            return std::task::Poll::Pending;
        }
        let event = Bytes::from_static(b"data: hello\n\n");
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(event))))
    }
}

/// An event stream that says nothing of caching (axum's `Sse` says `no-cache`).
async fn events(State(app): State<App>) -> axum::response::Response {
    app.ran("events");
    let body = axum::body::Body::new(Events { sent: false });
    ([("content-type", "text/event-stream")], body).into_response()
}

http_test! {
    async fn an_event_stream_is_passed_on_as_it_comes(backend: Backend) {
        let served = serve(&backend.cache, layer()).await;
        for run in 1..=2 {
            let request = axum::http::Request::get(format!("{}/events", served.base))
                .body(Full::default())
                .unwrap();
            let first = async {
                let response = served.client.request(request).await.unwrap();
                assert_eq!(response.headers()["x-cache"], "MISS");
                let frame = response.into_body().frame().await.unwrap().unwrap();
                frame.into_data().unwrap()
            };
            // Not held back for an end that never comes.
            let first = tokio::time::timeout(Duration::from_secs(10), first)
                .await
                .expect("the first event arrives while the stream is open");
            assert_eq!(&first[..], b"data: hello\n\n");
            assert_eq!(served.app.runs("events"), run, "never stored");
        }
    }
}

http_test! {
    async fn a_head_of_a_get_of_unknown_length_says_no_length(backend: Backend) {
        // Not stored (it never ends), so every `HEAD` is a miss the handler answers: with
        // no `Content-Length`, as without the layer, not the `0` of the empty body sent.
        let served = serve(&backend.cache, layer()).await;
        for run in 1..=2 {
            let head = served.send("HEAD", "/events", &[], "").await;
            assert_eq!((head.status, head.x_cache()), (StatusCode::OK, "MISS"));
            assert_eq!(head.header("content-length"), None, "run {run}");
            assert_eq!(head.header("content-type"), Some("text/event-stream"));
            assert!(head.body.is_empty());
            assert_eq!(served.app.runs("events"), run);
        }
        // One of known length says it, as a `GET` would.
        let head = served.send("HEAD", "/products/4", &[], "").await;
        assert_eq!(head.header("content-length"), Some("20"));
    }
}

http_test! {
    async fn if_match_and_if_unmodified_since_go_to_the_handler(backend: Backend) {
        let served = serve(&backend.cache, layer()).await;
        assert_eq!(served.get("/guarded").await.x_cache(), "MISS");
        let hit = served.get("/guarded").await;
        assert_eq!((hit.x_cache(), &hit.body[..]), ("HIT", &b"guarded v1"[..]));
        // Preconditions the cache cannot evaluate: the handler answers, and nothing is read
        // or written. A failed `If-Match` comes before a matching `If-None-Match`.
        let asked: [&[(&str, &str)]; 4] = [
            &[("if-match", "\"v2\"")],
            &[("if-match", "\"v2\""), ("if-none-match", "\"v1\"")],
            &[("if-unmodified-since", "Sat, 05 Nov 1994 08:49:37 GMT")],
            &[("if-match", "\"v1\"")],
        ];
        let expected = [
            StatusCode::PRECONDITION_FAILED,
            StatusCode::PRECONDITION_FAILED,
            StatusCode::PRECONDITION_FAILED,
            StatusCode::OK,
        ];
        for (n, (headers, status)) in asked.into_iter().zip(expected).enumerate() {
            let reply = served.get_with("/guarded", headers).await;
            assert_eq!((reply.status, reply.x_cache()), (status, "BYPASS"), "{headers:?}");
            assert_eq!(served.app.runs("guarded"), n as u64 + 2);
        }
        // The stored response still answers the others.
        let hit = served.get_with("/guarded", &[("if-none-match", "\"v1\"")]).await;
        assert_eq!((hit.status, hit.x_cache()), (StatusCode::NOT_MODIFIED, "HIT"));
        assert_eq!(served.app.runs("guarded"), 5);
    }
}

async fn opaque(request: axum::extract::Request) -> axum::extract::Request {
    request.map(|body| axum::body::Body::new(Opaque(body)))
}

http_test! {
    async fn a_prefix_with_a_brace_is_cached_except_on_a_cluster(backend: Backend) {
        let served = serve(&backend.cache, layer().prefix("{api}")).await;
        let cluster = backend.cache.config().is_cluster();
        assert_eq!(served.get("/products/6").await.x_cache(), if cluster { "BYPASS" } else { "MISS" });
        assert_eq!(served.get("/products/6").await.x_cache(), if cluster { "BYPASS" } else { "HIT" });
        assert_eq!(served.app.runs("product"), if cluster { 2 } else { 1 });
        assert_eq!(backend.cache.stats().faults, 0, "nothing sent that would fail");
    }
}

http_test! {
    async fn a_get_whose_body_a_middleware_wraps_is_cached(backend: Backend) {
        let app = App::default();
        let router = Router::new()
            .route("/products/{id}", get(product))
            .route_layer(layer().cache(backend.cache.clone()))
            .layer(axum::middleware::map_request(opaque))
            .with_state(app.clone());
        let served = serve_router(app, router).await;
        assert_eq!(served.get("/products/5").await.x_cache(), "MISS");
        assert_eq!(served.get("/products/5").await.x_cache(), "HIT");
        assert_eq!(served.app.runs("product"), 1);
    }
}

http_test! {
    async fn if_none_match_gets_304_on_hit_and_on_miss(backend: Backend) {
        let served = serve(&backend.cache, layer()).await;
        let etag = format!("\"{:x}\"", md5::Md5::digest(br#"{"id":3,"version":1}"#));
        // A miss: the handler runs, its response is stored, and the client's copy is current.
        let miss = served.get_with("/products/3", &[("if-none-match", &etag)]).await;
        assert_eq!(miss.status, StatusCode::NOT_MODIFIED);
        assert_eq!(miss.x_cache(), "MISS");
        assert!(miss.body.is_empty());
        assert_eq!(miss.header("etag"), Some(etag.as_str()));
        assert_eq!(miss.header("content-type"), None, "a 304 carries validators, not content headers");
        // A hit, with a weak form of the tag (If-None-Match compares weakly) among others.
        let weak = format!("\"other\", W/{etag}");
        let hit = served.get_with("/products/3", &[("if-none-match", &weak)]).await;
        assert_eq!(hit.status, StatusCode::NOT_MODIFIED);
        assert_eq!(hit.x_cache(), "HIT");
        assert!(hit.body.is_empty());
        assert!(hit.header("age").is_some());
        // A tag that does not match: the whole response.
        let other = served.get_with("/products/3", &[("if-none-match", "\"nope\"")]).await;
        assert_eq!(other.status, StatusCode::OK);
        assert_eq!(&other.body[..], br#"{"id":3,"version":1}"#);
        assert_eq!(served.app.runs("product"), 1);
    }
}

http_test! {
    async fn a_conditional_miss_asks_the_handler_for_the_whole_response(backend: Backend) {
        let served = serve(&backend.cache, layer()).await;
        // The client's copy is current: the layer answers `304`, from the whole response
        // it asked the handler for and stored.
        let miss = served.get_with("/conditional", &[("if-none-match", "\"v1\"")]).await;
        assert_eq!((miss.status, miss.x_cache()), (StatusCode::NOT_MODIFIED, "MISS"));
        assert!(miss.body.is_empty());
        assert_eq!(miss.header("etag"), Some("\"v1\""));
        assert_eq!(served.app.runs("conditional 304"), 0, "the handler was asked no condition");
        let hit = served.get("/conditional").await;
        assert_eq!((hit.status, hit.x_cache()), (StatusCode::OK, "HIT"));
        assert_eq!(&hit.body[..], b"version 1");
        let stale_copy = served.get_with("/conditional", &[("if-none-match", "\"v0\"")]).await;
        assert_eq!((stale_copy.status, &stale_copy.body[..]), (StatusCode::OK, &b"version 1"[..]));
        assert_eq!(served.app.runs("conditional"), 1);
    }
}

http_test! {
    async fn revalidating_clients_on_a_cold_url_run_the_handler_once(backend: Backend) {
        let served = Arc::new(serve(&backend.cache, layer()).await);
        let requests: Vec<_> = (0..50)
            .map(|_| {
                let served = served.clone();
                tokio::spawn(async move {
                    served.get_with("/conditional", &[("if-none-match", "\"v1\"")]).await
                })
            })
            .collect();
        for request in requests {
            let reply = request.await.unwrap();
            assert_eq!(reply.status, StatusCode::NOT_MODIFIED);
            assert!(reply.body.is_empty());
        }
        assert_eq!(served.app.runs("conditional"), 1);
    }
}

http_test! {
    async fn if_modified_since_is_compared_with_last_modified(backend: Backend) {
        let served = serve(&backend.cache, layer()).await;
        let since = |date| [("if-modified-since", date)];
        // Not modified since the date the client has, on a miss and on hits.
        let miss = served.get_with("/conditional", &since(LAST_MODIFIED)).await;
        assert_eq!((miss.status, miss.x_cache()), (StatusCode::NOT_MODIFIED, "MISS"));
        assert!(miss.body.is_empty());
        let later = served.get_with("/conditional", &since("Mon, 07 Nov 1994 08:49:37 GMT")).await;
        assert_eq!((later.status, later.x_cache()), (StatusCode::NOT_MODIFIED, "HIT"));
        let head = served.send("HEAD", "/conditional", &since(LAST_MODIFIED), "").await;
        assert_eq!((head.status, head.x_cache()), (StatusCode::NOT_MODIFIED, "HIT"));
        // Modified since an earlier date, or no date that can be read: the whole response.
        let earlier = served.get_with("/conditional", &since("Sun, 06 Nov 1994 08:49:36 GMT")).await;
        assert_eq!((earlier.status, &earlier.body[..]), (StatusCode::OK, &b"version 1"[..]));
        let unreadable = served.get_with("/conditional", &since("yesterday")).await;
        assert_eq!((unreadable.status, &unreadable.body[..]), (StatusCode::OK, &b"version 1"[..]));
        // `If-None-Match` decides when there is one.
        let both = [("if-none-match", "\"v0\""), ("if-modified-since", LAST_MODIFIED)];
        let tagged = served.get_with("/conditional", &both).await;
        assert_eq!((tagged.status, &tagged.body[..]), (StatusCode::OK, &b"version 1"[..]));
        assert_eq!(served.app.runs("conditional"), 1);
        assert_eq!(served.app.runs("conditional 304"), 0);
        // A response without `Last-Modified` has no date to compare.
        served.get("/products/3").await;
        let undated = served.get_with("/products/3", &since("Fri, 01 Jan 2100 00:00:00 GMT")).await;
        assert_eq!((undated.status, undated.x_cache()), (StatusCode::OK, "HIT"));
        assert_eq!(&undated.body[..], br#"{"id":3,"version":1}"#);
    }
}

http_test! {
    async fn a_response_not_stored_answers_a_current_client_with_304(backend: Backend) {
        let served = serve(&backend.cache, layer()).await;
        let current = served.get_with("/conditional/cookie", &[("if-none-match", "W/\"v1\"")]).await;
        assert_eq!((current.status, current.x_cache()), (StatusCode::NOT_MODIFIED, "MISS"));
        assert!(current.body.is_empty());
        assert_eq!(current.header("set-cookie"), Some("seen=1"), "the handler's cookie is kept");
        assert_eq!(current.header("etag"), Some("\"v1\""));
        assert_eq!(current.header("content-type"), None, "a 304 describes no body");
        let since = served.get_with("/conditional/cookie", &[("if-modified-since", LAST_MODIFIED)]).await;
        assert_eq!((since.status, since.x_cache()), (StatusCode::NOT_MODIFIED, "MISS"));
        let other = served.get_with("/conditional/cookie", &[("if-none-match", "\"v0\"")]).await;
        assert_eq!((other.status, other.x_cache()), (StatusCode::OK, "MISS"));
        assert_eq!(&other.body[..], b"version 1");
        assert_eq!(other.header("content-type"), Some("text/plain"));
        assert_eq!(served.app.runs("conditional"), 3, "never stored");
        assert_eq!(served.app.runs("conditional 304"), 0);
        // `*` matches whatever the handler answers, even without a tag.
        let any = served.get_with("/kind/cookie", &[("if-none-match", "*")]).await;
        assert_eq!((any.status, any.x_cache()), (StatusCode::NOT_MODIFIED, "MISS"));
        assert_eq!(any.header("set-cookie"), Some("session=1"));
        assert!(any.body.is_empty());
    }
}

http_test! {
    async fn head_is_answered_from_the_get_entry(backend: Backend) {
        let served = serve(&backend.cache, layer()).await;
        // A miss: the handler answers the `HEAD`, and nothing is stored.
        let head = served.send("HEAD", "/products/5", &[], "").await;
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(head.x_cache(), "MISS");
        assert!(head.body.is_empty());
        assert_eq!(head.header("content-length"), Some("20"));
        let get = served.get("/products/5").await;
        assert_eq!(get.x_cache(), "MISS", "a HEAD fills nothing");
        assert_eq!(&get.body[..], br#"{"id":5,"version":1}"#);
        let head = served.send("HEAD", "/products/5", &[], "").await;
        assert_eq!(head.x_cache(), "HIT");
        assert!(head.body.is_empty());
        assert_eq!(head.header("content-length"), Some("20"));
        assert_eq!(served.app.runs("product"), 2);
    }
}

http_test! {
    async fn a_routes_own_head_handler_never_fills_the_get_entry(backend: Backend) {
        // axum layers each method's handler: the `HEAD` reaches the layer over `probe`.
        let app = App::default();
        let router = Router::new()
            .route("/page", get(page).head(probe))
            .route_layer(layer().cache(backend.cache.clone()))
            .with_state(app.clone());
        let served = serve_router(app, router).await;
        for run in 1..=2 {
            let head = served.send("HEAD", "/page", &[], "").await;
            assert_eq!((head.status, head.x_cache()), (StatusCode::OK, "MISS"));
            assert_eq!(head.header("x-probe"), Some("yes"));
            assert_eq!(served.app.runs("probe"), run);
        }
        let get = served.get("/page").await;
        assert_eq!((get.status, get.x_cache()), (StatusCode::OK, "MISS"));
        assert_eq!(&get.body[..], b"the whole page", "not the HEAD handler's answer");
        let hit = served.get("/page").await;
        assert_eq!((hit.x_cache(), &hit.body[..]), ("HIT", &b"the whole page"[..]));
        // Now the `GET` entry answers a `HEAD`.
        let head = served.send("HEAD", "/page", &[], "").await;
        assert_eq!((head.status, head.x_cache()), (StatusCode::OK, "HIT"));
        assert_eq!(head.header("content-length"), Some("14"));
        assert_eq!((served.app.runs("page"), served.app.runs("probe")), (1, 2));
    }
}

http_test! {
    async fn request_no_cache_refreshes_and_no_store_bypasses(backend: Backend) {
        let served = serve(&backend.cache, layer()).await;
        served.get("/products/1").await;
        served.app.versions.lock().unwrap().insert(1, 2);
        // The cached version until a client asks for a fresh one.
        assert_eq!(&served.get("/products/1").await.body[..], br#"{"id":1,"version":1}"#);
        let fresh = served.get_with("/products/1", &[("cache-control", "no-cache")]).await;
        assert_eq!(fresh.x_cache(), "MISS");
        assert_eq!(&fresh.body[..], br#"{"id":1,"version":2}"#);
        let after = served.get("/products/1").await;
        assert_eq!((after.x_cache(), &after.body[..]), ("HIT", &br#"{"id":1,"version":2}"#[..]), "refreshed");
        assert_eq!(served.app.runs("product"), 2);

        served.app.versions.lock().unwrap().insert(1, 3);
        let bypass = served.get_with("/products/1", &[("cache-control", "no-store")]).await;
        assert_eq!(bypass.x_cache(), "BYPASS");
        assert_eq!(&bypass.body[..], br#"{"id":1,"version":3}"#);
        let still = served.get("/products/1").await;
        assert_eq!(&still.body[..], br#"{"id":1,"version":2}"#, "no-store wrote nothing");
        assert_eq!(served.app.runs("product"), 3);
        // Also when another directive of the request cannot be read.
        served.app.versions.lock().unwrap().insert(1, 4);
        let unreadable = [("cache-control", "no-store, max-age=-1")];
        let bypass = served.get_with("/products/1", &unreadable).await;
        assert_eq!((bypass.x_cache(), &bypass.body[..]), ("BYPASS", &br#"{"id":1,"version":4}"#[..]));
        let still = served.get("/products/1").await;
        assert_eq!(&still.body[..], br#"{"id":1,"version":2}"#, "no-store wrote nothing");
        assert_eq!(served.app.runs("product"), 4);
        // And a line that is not text (obs-text in a value): as one that cannot be read,
        // the handler answers and refreshes the entry; never a `504` as if it had said
        // `only-if-cached`.
        served.app.versions.lock().unwrap().insert(1, 5);
        let not_text = [("cache-control", "max-age=60, x=\"café\"")];
        let fresh = served.get_with("/products/1", &not_text).await;
        assert_eq!(
            (fresh.status, fresh.x_cache(), &fresh.body[..]),
            (StatusCode::OK, "MISS", &br#"{"id":1,"version":5}"#[..])
        );
        let after = served.get("/products/1").await;
        assert_eq!((after.x_cache(), &after.body[..]), ("HIT", &br#"{"id":1,"version":5}"#[..]), "refreshed");
        assert_eq!(served.app.runs("product"), 5);
    }
}

http_test! {
    async fn request_max_age_refuses_older_entries(backend: Backend) {
        let served = serve(&backend.cache, layer()).await;
        served.get("/products/9").await;
        served.app.versions.lock().unwrap().insert(9, 2);
        // Young enough for max-age=60: a hit.
        let young = served.get_with("/products/9", &[("cache-control", "max-age=60")]).await;
        assert_eq!((young.x_cache(), &young.body[..]), ("HIT", &br#"{"id":9,"version":1}"#[..]));
        // Once the entry is two seconds old (its Age says so), max-age=1 refuses it.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let age: u64 = served.get("/products/9").await.header("age").unwrap().parse().unwrap();
            if age >= 2 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the entry never aged");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let refused = served.get_with("/products/9", &[("cache-control", "max-age=1")]).await;
        assert_eq!(refused.x_cache(), "MISS");
        assert_eq!(&refused.body[..], br#"{"id":9,"version":2}"#);
        served.app.versions.lock().unwrap().insert(9, 3);
        // The entry was refreshed by that request: young again.
        let ok = served.get_with("/products/9", &[("cache-control", "max-age=60")]).await;
        assert_eq!((ok.x_cache(), &ok.body[..]), ("HIT", &br#"{"id":9,"version":2}"#[..]));
        assert_eq!(served.app.runs("product"), 2);
    }
}

http_test! {
    async fn a_jittered_response_says_the_max_age_it_is_kept_for(backend: Backend) {
        // Fresh for one second, and up to 30 s of jitter: each response is sent with the
        // lifetime it was drawn, and served as a hit no older than that (RFC 9111 § 4.2.4).
        let layer = layer().ttl(Duration::from_secs(1)).jitter(Duration::from_secs(30));
        let served = serve(&backend.cache, layer).await;
        let mut lifetimes = Vec::new();
        for id in 1..=20u64 {
            let miss = served.get(&format!("/products/{id}")).await;
            assert_eq!(miss.x_cache(), "MISS");
            let max_age: u64 = miss
                .header("cache-control")
                .and_then(|cc| cc.strip_prefix("max-age="))
                .expect("a max-age")
                .parse()
                .unwrap();
            assert!((1..=31).contains(&max_age), "{max_age}");
            lifetimes.push((id, max_age));
        }
        // (Stamped before the last call returned.)
        let written = std::time::Instant::now();
        assert!(
            lifetimes.iter().any(|&(_, max_age)| max_age >= 3),
            "no jitter drawn in 20 responses: {lifetimes:?}"
        );
        past_one_second_ttl(written).await;
        for (id, max_age) in lifetimes {
            let again = served.get(&format!("/products/{id}")).await;
            if max_age >= 3 {
                // Still within the lifetime it was sent with.
                assert_eq!(again.x_cache(), "HIT", "/products/{id}, max-age={max_age}");
                assert!(again.age() <= max_age, "/products/{id}, max-age={max_age}");
            } else if max_age == 1 {
                assert_eq!(again.x_cache(), "MISS", "/products/{id} past its max-age=1");
            }
        }
    }
}

http_test! {
    async fn the_jitter_spreads_responses_fresh_for_longer_by_their_own_say(backend: Backend) {
        // `public, max-age=30` under a layer of one second and up to 30 s of jitter: each
        // entry lives its second and the jitter drawn for it, as long as its own 30 s allow.
        let layer = layer().ttl(Duration::from_secs(1)).jitter(Duration::from_secs(30));
        let served = serve(&backend.cache, layer).await;
        for n in 1..=20 {
            let miss = served.get(&format!("/kind/public?n={n}")).await;
            assert_eq!(miss.x_cache(), "MISS");
            assert_eq!(miss.header("cache-control"), Some("public, max-age=30"));
        }
        // (Stamped before the last call returned.)
        let written = std::time::Instant::now();
        past_one_second_ttl(written).await;
        let mut hits = 0;
        for n in 1..=20 {
            let again = served.get(&format!("/kind/public?n={n}")).await;
            if again.x_cache() == "HIT" {
                hits += 1;
                assert!(again.age() <= 30);
            }
        }
        assert!(hits > 0, "every entry expired with the layer's one second");
    }
}

http_test! {
    async fn responses_that_must_not_be_stored_are_not(backend: Backend) {
        let served = serve(&backend.cache, layer()).await;
        let kinds = [
            "no-store",
            "private",
            "cookie",
            "vary-any",
            "private-upper",
            "private-field",
            "unreadable",
            "expired",
        ];
        for kind in kinds {
            let path = format!("/kind/{kind}");
            for _ in 0..2 {
                let reply = served.get(&path).await;
                assert_eq!(reply.status, StatusCode::OK);
                assert_eq!(reply.x_cache(), "MISS", "{kind}");
                assert_eq!(reply.header("etag"), None, "{kind}: not stored, not tagged");
            }
        }
        // The handler's own headers pass through.
        assert_eq!(served.get("/kind/cookie").await.header("set-cookie"), Some("session=1"));
        assert_eq!(served.app.runs("kind"), 17);
        // Statuses other than 200 are not stored.
        assert_eq!(served.get("/missing").await.status, StatusCode::NOT_FOUND);
        assert_eq!(served.get("/missing").await.x_cache(), "MISS");
        assert_eq!(served.app.runs("missing"), 2);
        assert_eq!(backend.cache.stats().stores, 0);
    }
}

http_test! {
    async fn authorization_is_stored_only_when_public(backend: Backend) {
        let served = serve(&backend.cache, layer()).await;
        let auth = [("authorization", "Bearer alice")];
        for _ in 0..2 {
            let reply = served.get_with("/kind/plain", &auth).await;
            assert_eq!((reply.x_cache(), &reply.body[..]), ("MISS", &b"plain for Bearer alice"[..]));
        }
        // An anonymous request does not get what an authorized one got, nor the reverse.
        let anonymous = served.get("/kind/plain").await;
        assert_eq!(&anonymous.body[..], b"plain for anonymous");
        let again = served.get_with("/kind/plain", &auth).await;
        assert_eq!(&again.body[..], b"plain for Bearer alice");
        // `public` lets a response to an authorized request be stored.
        let first = served.get_with("/kind/public", &auth).await;
        assert_eq!(first.x_cache(), "MISS");
        let second = served.get_with("/kind/public", &auth).await;
        assert_eq!(second.x_cache(), "HIT");
        assert_eq!(second.header("cache-control"), Some("public, max-age=30"), "the handler's own");
        assert_eq!(served.app.runs("kind"), 5);
    }
}

http_test! {
    async fn vary_headers_are_part_of_the_key(backend: Backend) {
        let served = serve(&backend.cache, layer()).await;
        let fr = [("accept-language", "fr")];
        let de = [("accept-language", "de")];
        // The first response teaches the layer that /lang varies by Accept-Language.
        assert_eq!(&served.get_with("/lang", &fr).await.body[..], b"hello in fr");
        let fr1 = served.get_with("/lang", &fr).await;
        assert_eq!((fr1.x_cache(), &fr1.body[..]), ("MISS", &b"hello in fr"[..]));
        let fr2 = served.get_with("/lang", &fr).await;
        assert_eq!((fr2.x_cache(), &fr2.body[..]), ("HIT", &b"hello in fr"[..]));
        let de1 = served.get_with("/lang", &de).await;
        assert_eq!((de1.x_cache(), &de1.body[..]), ("MISS", &b"hello in de"[..]));
        let de2 = served.get_with("/lang", &de).await;
        assert_eq!((de2.x_cache(), &de2.body[..]), ("HIT", &b"hello in de"[..]));
        assert_eq!(de2.header("vary"), Some("Accept-Language"));
        assert_eq!(served.app.runs("lang"), 3);

        // A layer told up front stores the first response already.
        let cache = backend.cache_with(common::test_config().namespace("declared")).await;
        let declared = serve(&cache, layer().vary([axum::http::header::ACCEPT_LANGUAGE])).await;
        declared.get_with("/lang", &fr).await;
        assert_eq!(declared.get_with("/lang", &fr).await.x_cache(), "HIT");
        assert_eq!(&declared.get_with("/lang", &de).await.body[..], b"hello in de");
        assert_eq!(declared.app.runs("lang"), 2);
    }
}

http_test! {
    async fn what_the_layer_keys_by_is_announced_in_vary(backend: Backend) {
        // The layer keys by `Accept-Language`, and the `max-age` it writes lets caches
        // downstream keep the response: they are told to key by it too.
        let vary = [axum::http::header::ACCEPT_LANGUAGE];
        let served = serve(&backend.cache, layer().vary(vary)).await;
        let fr = [("accept-language", "fr")];
        let miss = served.get_with("/lang-unsaid", &fr).await;
        assert_eq!((miss.x_cache(), &miss.body[..]), ("MISS", &b"hello in fr"[..]));
        assert_eq!(miss.header("cache-control"), Some("max-age=120"));
        assert_eq!(miss.header("vary"), Some("accept-language"));
        let hit = served.get_with("/lang-unsaid", &fr).await;
        assert_eq!((hit.x_cache(), hit.header("vary")), ("HIT", Some("accept-language")));
        let etag = hit.header("etag").unwrap().to_owned();
        let revalidated = served
            .get_with("/lang-unsaid", &[("accept-language", "fr"), ("if-none-match", &etag)])
            .await;
        assert_eq!(revalidated.status, StatusCode::NOT_MODIFIED);
        assert_eq!(revalidated.header("vary"), Some("accept-language"));
        assert_eq!(served.app.runs("lang-unsaid"), 1);
        // A handler that says it keeps its own word, once.
        served.get_with("/lang", &fr).await;
        let said = served.get_with("/lang", &fr).await;
        assert_eq!(said.x_cache(), "HIT");
        let lines: Vec<_> = said.headers.get_all("vary").iter().collect();
        assert_eq!(lines, ["Accept-Language"]);
    }
}

http_test! {
    async fn query_parameter_order_does_not_matter(backend: Backend) {
        let served = serve(&backend.cache, layer()).await;
        let first = served.get("/search?q=shoes&page=2").await;
        assert_eq!((first.x_cache(), &first.body[..]), ("MISS", &b"results for q=shoes&page=2"[..]));
        let same = served.get("/search?page=2&q=shoes").await;
        assert_eq!(same.x_cache(), "HIT");
        assert_eq!(same.body, first.body);
        let other = served.get("/search?page=3&q=shoes").await;
        assert_eq!(other.x_cache(), "MISS");
        assert_eq!(served.app.runs("search"), 2);
        // `%71` is `q` to the handler: these two give it `q` in opposite orders.
        let one = served.get("/search?q=a&%71=b").await;
        let two = served.get("/search?%71=b&q=a").await;
        assert_eq!((one.x_cache(), &one.body[..]), ("MISS", &b"results for q=a&%71=b"[..]));
        assert_eq!((two.x_cache(), &two.body[..]), ("MISS", &b"results for %71=b&q=a"[..]));
        assert_eq!(served.app.runs("search"), 4);
    }
}

http_test! {
    async fn oversize_bodies_stream_through_unchanged(backend: Backend) {
        let served = serve(&backend.cache, layer()).await;
        let expected: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
        for _ in 0..2 {
            let reply = served.get("/big").await;
            assert_eq!(reply.x_cache(), "MISS");
            assert_eq!(&reply.body[..], &expected[..]);
        }
        assert_eq!(served.app.runs("big"), 2);
        assert_eq!(backend.cache.stats().stores, 0);
    }
}

http_test! {
    async fn a_cached_post_whose_body_is_cut_short_never_reaches_the_handler(backend: Backend) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let served = serve(&backend.cache, layer().cache_post(true)).await;
        // A client that says 100 bytes, sends 4 and stops sending.
        let address = served.base.trim_start_matches("http://");
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let head = "POST /search HTTP/1.1\r\nhost: shop.test\r\ncontent-length: 100\r\n\r\n";
        stream.write_all(format!("{head}q=sh").as_bytes()).await.unwrap();
        stream.shutdown().await.unwrap();
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await.unwrap();
        let reply = String::from_utf8_lossy(&reply);
        assert!(reply.starts_with("HTTP/1.1 400 "), "{reply}");
        assert!(reply.to_ascii_lowercase().contains("x-cache: bypass"), "{reply}");
        assert_eq!(served.app.runs("search_post"), 0, "no handler run on part of a body");
        // A whole body is answered as before.
        let whole = served.send("POST", "/search", &[], "q=shoes").await;
        assert_eq!((whole.x_cache(), &whole.body[..]), ("MISS", &b"results for q=shoes"[..]));
        assert_eq!(served.app.runs("search_post"), 1);
    }
}

http_test! {
    async fn other_methods_pass_through_and_post_is_opt_in(backend: Backend) {
        let served = serve(&backend.cache, layer()).await;
        for _ in 0..2 {
            let reply = served.send("POST", "/search", &[], "q=shoes").await;
            assert_eq!((reply.x_cache(), &reply.body[..]), ("BYPASS", &b"results for q=shoes"[..]));
        }
        assert_eq!(served.app.runs("search_post"), 2);

        let cache = backend.cache_with(common::test_config().namespace("post")).await;
        let posting = serve(&cache, layer().cache_post(true)).await;
        let first = posting.send("POST", "/search", &[], "q=shoes").await;
        assert_eq!((first.x_cache(), &first.body[..]), ("MISS", &b"results for q=shoes"[..]));
        let second = posting.send("POST", "/search", &[], "q=shoes").await;
        assert_eq!((second.x_cache(), &second.body[..]), ("HIT", &b"results for q=shoes"[..]));
        let other = posting.send("POST", "/search", &[], "q=boots").await;
        assert_eq!((other.x_cache(), &other.body[..]), ("MISS", &b"results for q=boots"[..]));
        // The same bytes as another type: another request.
        let typed = [("content-type", "application/json")];
        let json = posting.send("POST", "/search", &typed, "q=shoes").await;
        assert_eq!((json.x_cache(), &json.body[..]), ("MISS", &b"results for q=shoes"[..]));
        let again = posting.send("POST", "/search", &typed, "q=shoes").await;
        assert_eq!(again.x_cache(), "HIT");
        // The same bytes in another coding: another request (a decompressing layer would
        // hand the handler other bytes).
        let coded = [("content-type", "application/json"), ("content-encoding", "gzip")];
        let gzip = posting.send("POST", "/search", &coded, "q=shoes").await;
        assert_eq!((gzip.x_cache(), &gzip.body[..]), ("MISS", &b"results for q=shoes"[..]));
        assert_eq!(posting.send("POST", "/search", &coded, "q=shoes").await.x_cache(), "HIT");
        // A GET of the same path is another entry.
        assert_eq!(posting.get("/search?q=shoes").await.x_cache(), "MISS");
        assert_eq!(posting.app.runs("search_post"), 4);
    }
}

http_test! {
    async fn an_unsafe_method_through_the_layer_retires_its_path(backend: Backend) {
        let app = App::default();
        let router = Router::new()
            .route(
                "/products/{id}",
                get(product).put(update_product).patch(failing_update),
            )
            .route_layer(layer().cache(backend.cache.clone()))
            .with_state(app.clone());
        let served = serve_router(app, router).await;
        served.get("/products/5").await;
        let other_query = served.get("/products/5?view=full").await;
        assert_eq!(other_query.x_cache(), "MISS");
        assert_eq!(served.get("/products/5").await.x_cache(), "HIT");
        // A write that fails retires nothing.
        let refused = served.send("PATCH", "/products/5", &[], "").await;
        assert_eq!((refused.status, refused.x_cache()), (StatusCode::CONFLICT, "BYPASS"));
        assert_eq!(served.get("/products/5").await.x_cache(), "HIT");
        // One that succeeds retires every query of the path: the next reads see it.
        let put = served.send("PUT", "/products/5", &[], "").await;
        assert_eq!((put.status, put.x_cache()), (StatusCode::NO_CONTENT, "BYPASS"));
        for path in ["/products/5", "/products/5?view=full"] {
            let read = served.get(path).await;
            assert_eq!((read.x_cache(), &read.body[..]), ("MISS", &br#"{"id":5,"version":2}"#[..]));
        }
        assert_eq!(served.get("/products/5").await.x_cache(), "HIT");
        assert_eq!(served.app.runs("product"), 4);
        assert_eq!(served.app.runs("update"), 1);
        assert_eq!(backend.cache.stats().faults, 0);

        // Turned off, a write leaves the stored responses (the handler retires what it
        // changes itself, or nothing read through the layer changes).
        let app = App::default();
        let cache = backend.cache_with(common::test_config().namespace("no-retire")).await;
        let router = Router::new()
            .route("/products/{id}", get(product).put(update_product))
            .route_layer(layer().retire_on_write(false).cache(cache))
            .with_state(app.clone());
        let served = serve_router(app, router).await;
        served.get("/products/5").await;
        assert_eq!(served.send("PUT", "/products/5", &[], "").await.status, StatusCode::NO_CONTENT);
        let read = served.get("/products/5").await;
        assert_eq!((read.x_cache(), &read.body[..]), ("HIT", &br#"{"id":5,"version":1}"#[..]));
    }
}

http_test! {
    async fn a_post_answered_as_a_write_retires_its_path_and_a_read_does_not(backend: Backend) {
        // One layer over a route's read and its form's write, as `route_layer` puts it.
        let app = App::default();
        let router = Router::new()
            .route("/products/{id}", get(product).post(form_update))
            .route("/search", get(search).post(search_post))
            .route_layer(layer().cache_post(true).cache(backend.cache.clone()))
            .with_state(app.clone());
        let served = serve_router(app, router).await;
        let read = |version: u64| format!(r#"{{"id":8,"version":{version}}}"#);
        assert_eq!(served.get("/products/8").await.x_cache(), "MISS");
        assert_eq!(served.get("/products/8").await.x_cache(), "HIT");
        // Answered `303`, which is not stored: the write is seen by the next read.
        let form = [("content-type", "application/x-www-form-urlencoded")];
        let post = served.send("POST", "/products/8", &form, "name=new").await;
        assert_eq!(post.status, StatusCode::SEE_OTHER);
        let after = served.get("/products/8").await;
        assert_eq!((after.x_cache(), &after.body[..]), ("MISS", read(2).as_bytes()));
        // So is one whose body is too large to key by.
        assert_eq!(served.get("/products/8").await.x_cache(), "HIT");
        let large = "x".repeat(2048);
        let post = served.send("POST", "/products/8", &form, &large).await;
        assert_eq!((post.status, post.x_cache()), (StatusCode::SEE_OTHER, "BYPASS"));
        let after = served.get("/products/8").await;
        assert_eq!((after.x_cache(), &after.body[..]), ("MISS", read(3).as_bytes()));
        assert_eq!(served.app.runs("update"), 2);
        // A read answered `200` and not stored (too large to key by, or `no-store`)
        // retires nothing.
        assert_eq!(served.get("/search?q=a").await.x_cache(), "MISS");
        let post = served.send("POST", "/search", &[], &large).await;
        assert_eq!((post.status, post.x_cache()), (StatusCode::OK, "BYPASS"));
        let no_store = [("cache-control", "no-store")];
        let post = served.send("POST", "/search", &no_store, "q=b").await;
        assert_eq!((post.status, post.x_cache()), (StatusCode::OK, "BYPASS"));
        // Looked up, and not stored (a request with `Authorization`).
        let authorized = [("authorization", "Bearer x")];
        let post = served.send("POST", "/search", &authorized, "q=c").await;
        assert_eq!((post.status, post.x_cache()), (StatusCode::OK, "MISS"));
        assert_eq!(served.get("/search?q=a").await.x_cache(), "HIT");
    }
}

http_test! {
    async fn tags_are_made_from_the_path_the_client_sent_under_a_nest(backend: Backend) {
        let tag = |request: &axum::http::request::Parts| match request.uri.path().strip_prefix("/api/products/") {
            Some(id) => vec![format!("product:{id}")],
            None => Vec::new(),
        };
        let app = App::default();
        let api = Router::new()
            .route("/products/{id}", get(product))
            .route_layer(layer().tags_from(tag).cache(backend.cache.clone()));
        let router = Router::new().nest("/api", api).with_state(app.clone());
        let served = serve_router(app, router).await;
        assert_eq!(served.get("/api/products/9").await.x_cache(), "MISS");
        assert_eq!(served.get("/api/products/9").await.x_cache(), "HIT");
        backend.cache.invalidate_tag("product:9").await.unwrap();
        assert_eq!(served.get("/api/products/9").await.x_cache(), "MISS", "tagged product:9");
        assert_eq!(served.app.runs("product"), 2);
    }
}

http_test! {
    async fn a_layer_within_a_layer_of_the_same_key_answers_at_once(backend: Backend) {
        // The outer layer wraps the nested route, layer and all.
        let app = App::default();
        let api = Router::new()
            .route("/products/{id}", get(product))
            .route_layer(layer().cache(backend.cache.clone()));
        let router = Router::new()
            .nest("/api", api)
            .layer(layer().cache(backend.cache.clone()))
            .with_state(app.clone());
        let served = serve_router(app, router).await;
        let first = tokio::time::timeout(Duration::from_secs(10), served.get("/api/products/7"))
            .await
            .expect("not waiting on itself");
        assert_eq!((first.status, first.x_cache()), (StatusCode::OK, "MISS"));
        assert_eq!(&first.body[..], br#"{"id":7,"version":1}"#);
        let hit = served.get("/api/products/7").await;
        assert_eq!((hit.x_cache(), &hit.body[..]), ("HIT", &br#"{"id":7,"version":1}"#[..]));
        assert_eq!(served.app.runs("product"), 1);
    }
}

http_test! {
    async fn an_evict_layer_over_reads_retires_only_after_writes(backend: Backend) {
        // One router, the cache and the evictions over both its methods, as a layer over a
        // whole router is.
        let app = App::default();
        let router = Router::new()
            .route("/products/{id}", get(product).put(update_product))
            .route_layer(layer().cache(backend.cache.clone()))
            .route_layer(EvictLayer::new().own_path().cache(backend.cache.clone()))
            .with_state(app.clone());
        let served = serve_router(app, router).await;
        assert_eq!(served.get("/products/3").await.x_cache(), "MISS");
        let again = served.get("/products/3").await;
        assert_eq!((again.x_cache(), &again.body[..]), ("HIT", &br#"{"id":3,"version":1}"#[..]));
        assert_eq!(served.send("HEAD", "/products/3", &[], "").await.x_cache(), "HIT");
        assert_eq!(served.app.runs("product"), 1);
        assert_eq!(backend.cache.stats().invalidations, 0);
        // A write retires the path: the next read sees it.
        assert_eq!(served.send("PUT", "/products/3", &[], "").await.status, StatusCode::NO_CONTENT);
        let read = served.get("/products/3").await;
        assert_eq!((read.x_cache(), &read.body[..]), ("MISS", &br#"{"id":3,"version":2}"#[..]));
        assert_eq!(served.get("/products/3").await.x_cache(), "HIT");
        assert_eq!(served.app.runs("product"), 2);
    }
}

/// A write's handler that makes its write, then never answers.
async fn update_then_hang(State(app): State<App>, Path(id): Path<u64>) -> StatusCode {
    update_product(State(app), Path(id)).await;
    std::future::pending().await
}

/// Answers `408` for a request its route has not answered within 300 ms, dropping the
/// route's future, as tower-http's `TimeoutLayer` does.
async fn time_out(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    match tokio::time::timeout(Duration::from_millis(300), next.run(request)).await {
        Ok(response) => response,
        Err(_) => StatusCode::REQUEST_TIMEOUT.into_response(),
    }
}

http_test! {
    async fn a_write_dropped_mid_handler_after_its_write_still_retires(backend: Backend) {
        // A timeout around the routes drops each write's handler after it has written: the
        // layer's own retirement of a `PUT`, an `EvictLayer`'s, and a cached `POST`'s.
        let app = App::default();
        let cache = &backend.cache;
        let router = Router::new()
            .route("/products/{id}", get(product).put(update_then_hang))
            .route_layer(layer().cache(cache.clone()))
            .merge(
                Router::new()
                    .route("/items/{id}", get(product))
                    .route_layer(layer().cache(cache.clone()))
                    .merge(
                        Router::new()
                            .route("/items/{id}", axum::routing::put(update_then_hang))
                            .route_layer(EvictLayer::new().own_path().cache(cache.clone())),
                    ),
            )
            .merge(
                Router::new()
                    .route("/posts/{id}", get(product).post(update_then_hang))
                    .route_layer(layer().cache_post(true).cache(cache.clone())),
            )
            .layer(axum::middleware::from_fn(time_out))
            .with_state(app.clone());
        let served = serve_router(app, router).await;
        let writes = [("PUT", "/products/1"), ("PUT", "/items/2"), ("POST", "/posts/3")];
        for (n, (method, path)) in writes.into_iter().enumerate() {
            let id = n + 1;
            let before = format!(r#"{{"id":{id},"version":1}}"#);
            assert_eq!(served.get(path).await.x_cache(), "MISS");
            let hit = served.get(path).await;
            assert_eq!((hit.x_cache(), &hit.body[..]), ("HIT", before.as_bytes()));
            // (A `POST` with a body of known length: the layer keys by it, and its
            // handler runs as a miss's.)
            let write = served.send(method, path, &[], "q").await;
            assert_eq!(write.status, StatusCode::REQUEST_TIMEOUT, "{method} {path}");
            assert_eq!(served.app.runs("update"), id as u64, "the write was made");
            // The retirement runs on a task of its own: the next reads see it soon.
            let after = format!(r#"{{"id":{id},"version":2}}"#);
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            loop {
                let read = served.get(path).await;
                if read.body == after.as_bytes() {
                    assert_eq!(read.x_cache(), "MISS");
                    break;
                }
                assert_eq!(read.body, before.as_bytes());
                assert!(
                    std::time::Instant::now() < deadline,
                    "{method} {path}: the value the write replaced is still served"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        assert_eq!(served.app.runs("product"), 6, "read once before and once after each write");
    }
}

/// A read by `POST` (a search) whose body stalls after its first bytes.
async fn stalling_read(State(app): State<App>) -> axum::response::Response {
    app.ran("stalling_read");
    let body = axum::body::Body::new(Events { sent: false });
    ([("content-type", "application/json")], body).into_response()
}

/// A `POST` whose first run reads (and is stored); every later one writes, then panics.
async fn read_then_write_and_panic(State(app): State<App>, Path(id): Path<u64>) -> String {
    app.ran("read_then_write");
    if app.runs("read_then_write") > 1 {
        update_product(State(app), Path(id)).await;
        panic!("the handler fails after its write");
    }
    "read".to_owned()
}

http_test! {
    async fn a_post_retires_by_what_its_handler_answered_not_by_how_it_ended(backend: Backend) {
        let app = App::default();
        let cache = &backend.cache;
        let posts = layer()
            .ttl(Duration::from_secs(1))
            .stale_if_error(Duration::from_secs(30))
            .cache_post(true)
            .cache(cache.clone());
        let router = Router::new()
            .route("/reads/{id}", get(product))
            .route("/panics/{id}", get(product))
            .route_layer(layer().cache(cache.clone()))
            .merge(
                Router::new()
                    .route("/reads/{id}", post(stalling_read))
                    .route("/panics/{id}", post(read_then_write_and_panic))
                    .route_layer(posts),
            )
            .layer(axum::middleware::from_fn(time_out))
            .with_state(app.clone());
        let served = serve_router(app, router).await;
        // A read by `POST` dropped while its body is read (the handler answered `200`, a
        // status the layer stores): its path is not retired.
        assert_eq!(served.get("/reads/1").await.x_cache(), "MISS");
        let post = served.send("POST", "/reads/1", &[], "q").await;
        assert_eq!(post.status, StatusCode::REQUEST_TIMEOUT);
        assert_eq!(served.app.runs("stalling_read"), 1);
        let read = served.get("/reads/1").await;
        assert_eq!((read.x_cache(), &read.body[..]), ("HIT", &br#"{"id":1,"version":1}"#[..]));
        // A `POST` whose handler panics after its write, answered by its stale response:
        // the path is retired, and the next read sees the write.
        assert_eq!(served.get("/panics/2").await.x_cache(), "MISS");
        let first = served.send("POST", "/panics/2", &[], "q").await;
        let written = std::time::Instant::now();
        assert_eq!((first.x_cache(), &first.body[..]), ("MISS", &b"read"[..]));
        past_one_second_ttl(written).await;
        let stale = served.send("POST", "/panics/2", &[], "q").await;
        assert_eq!((stale.status, stale.x_cache()), (StatusCode::OK, "HIT"));
        assert_eq!(&stale.body[..], b"read");
        assert_eq!(served.app.runs("update"), 1, "the write was made");
        let read = served.get("/panics/2").await;
        assert_eq!((read.x_cache(), &read.body[..]), ("MISS", &br#"{"id":2,"version":2}"#[..]));
        assert_eq!(served.app.runs("product"), 3);
    }
}

http_test! {
    async fn nested_routes_and_hosts_never_share_entries(backend: Backend) {
        // Under `nest`, the layer sees `/dashboard` for every tenant: the key and the path
        // tag come from the path the client asked for.
        let app = App::default();
        let tenant = Router::new()
            .route("/dashboard", get(dashboard))
            .route_layer(layer().cache(backend.cache.clone()))
            .merge(
                Router::new()
                    .route("/dashboard", axum::routing::put(update_dashboard))
                    .route_layer(EvictLayer::new().own_path().cache(backend.cache.clone())),
            );
        let router = Router::new().nest("/{tenant}", tenant).with_state(app.clone());
        let served = serve_router(app, router).await;
        let host = served.base.trim_start_matches("http://").to_owned();
        let acme = served.get("/acme/dashboard").await;
        assert_eq!(acme.x_cache(), "MISS");
        assert_eq!(acme.body, format!("acme on {host}"));
        let globex = served.get("/globex/dashboard").await;
        assert_eq!(globex.x_cache(), "MISS");
        assert_eq!(globex.body, format!("globex on {host}"));
        assert_eq!(served.get("/acme/dashboard").await.x_cache(), "HIT");
        // Another host, the same path: its own entry.
        let other = served
            .get_with("/acme/dashboard", &[("host", "other.example")])
            .await;
        assert_eq!(other.x_cache(), "MISS");
        assert_eq!(other.body, "acme on other.example");
        assert_eq!(served.app.runs("dashboard"), 3);
        // The full path retires them, by hand or by the nested write route.
        assert_eq!(backend.cache.invalidate_path("/acme/dashboard").await.unwrap(), 1);
        assert_eq!(served.get("/acme/dashboard").await.x_cache(), "MISS");
        assert_eq!(served.get("/globex/dashboard").await.x_cache(), "HIT");
        let put = served.send("PUT", "/globex/dashboard", &[], "").await;
        assert_eq!(put.status, StatusCode::NO_CONTENT);
        assert_eq!(served.get("/globex/dashboard").await.x_cache(), "MISS");
        assert_eq!(served.app.runs("dashboard"), 5);
    }
}

http_test! {
    async fn a_percent_encoded_path_is_retired_with_the_path_it_decodes_to(backend: Backend) {
        let served = serve(&backend.cache, layer()).await;
        // `%34%32` is `42`, for the router as for the handler.
        let encoded = served.get("/products/%34%32").await;
        assert_eq!(encoded.x_cache(), "MISS");
        assert_eq!(encoded.body, r#"{"id":42,"version":1}"#);
        assert_eq!(served.get("/products/%34%32").await.x_cache(), "HIT");
        let put = served.send("PUT", "/products/42", &[], "").await;
        assert_eq!(put.status, StatusCode::NO_CONTENT);
        let after = served.get("/products/%34%32").await;
        assert_eq!(after.x_cache(), "MISS", "retired by the write to /products/42");
        assert_eq!(after.body, r#"{"id":42,"version":2}"#);
        // And the other way round, by hand; an encoded `/` as well (a wildcard capture
        // reads it as a `/`).
        assert_eq!(backend.cache.invalidate_path("/products/%34%32").await.unwrap(), 1);
        assert_eq!(served.get("/products/%34%32").await.x_cache(), "MISS");
        assert_eq!(served.get("/products/%34%32").await.x_cache(), "HIT");
        assert_eq!(backend.cache.invalidate_path("/products%2F42").await.unwrap(), 1);
        assert_eq!(served.get("/products/%34%32").await.x_cache(), "MISS");
        assert_eq!(served.app.runs("product"), 4);
    }
}

http_test! {
    async fn a_body_that_is_not_its_content_length_is_not_stored(backend: Backend) {
        let served = serve(&backend.cache, layer()).await;
        for _ in 0..2 {
            let uri = format!("{}/short", served.base).parse().unwrap();
            // The server cannot send what the handler declared: the client gets a failed
            // or cut body, never a whole 600 bytes made to look complete.
            if let Ok(response) = served.client.get(uri).await {
                assert_eq!(response.headers()["x-cache"], "MISS");
                assert_eq!(response.headers()["content-length"], "1000");
                let body = response.into_body().collect().await;
                assert!(body.is_err(), "a cut body fails at the client");
            }
        }
        assert_eq!(served.app.runs("short"), 2, "never stored, so never a hit");
    }
}

http_test! {
    async fn invalidate_path_retires_every_query_and_variant(backend: Backend) {
        let served = serve(&backend.cache, layer()).await;
        for path in ["/search?q=a", "/search?q=b", "/search", "/products/1"] {
            served.get(path).await;
            assert_eq!(served.get(path).await.x_cache(), "HIT");
        }
        assert_eq!(backend.cache.invalidate_path("/search").await.unwrap(), 1);
        for path in ["/search?q=a", "/search?q=b", "/search"] {
            assert_eq!(served.get(path).await.x_cache(), "MISS", "{path}");
        }
        assert_eq!(served.get("/products/1").await.x_cache(), "HIT", "other paths stay");
        assert_eq!(served.app.runs("search"), 6);
        // A path never cached: nothing to retire.
        assert_eq!(backend.cache.invalidate_path("/nothing").await.unwrap(), 0);
    }
}

http_test! {
    async fn a_write_route_evicts_and_the_next_read_sees_the_write(backend: Backend) {
        let served = serve(&backend.cache, layer()).await;
        served.get("/products/4").await;
        served.get("/search?q=x").await;
        assert_eq!(served.get("/products/4").await.x_cache(), "HIT");
        let put = served.send("PUT", "/products/4", &[], "").await;
        assert_eq!(put.status, StatusCode::NO_CONTENT);
        let read = served.get("/products/4").await;
        assert_eq!((read.x_cache(), &read.body[..]), ("MISS", &br#"{"id":4,"version":2}"#[..]));
        assert_eq!(served.get("/search?q=x").await.x_cache(), "MISS", "the named path too");
        // A write that failed evicts nothing.
        assert_eq!(served.get("/search?q=x").await.x_cache(), "HIT");
        assert_eq!(served.send("POST", "/failing/4", &[], "").await.status, StatusCode::CONFLICT);
        assert_eq!(served.get("/search?q=x").await.x_cache(), "HIT");
    }
}

http_test! {
    async fn groups_are_shared_with_cached_functions(backend: Backend) {
        let served = serve(&backend.cache, layer().group("catalogue")).await;
        served.get("/products/2").await;
        assert_eq!(served.get("/products/2").await.x_cache(), "HIT");
        backend.cache.invalidate_group("catalogue").await.unwrap();
        let after = served.get("/products/2").await;
        assert_eq!(after.x_cache(), "MISS");
        assert_eq!(served.get("/products/2").await.x_cache(), "HIT");
        assert_eq!(served.app.runs("product"), 2);
    }
}

/// Waits until entries written `before` with a TTL of one second are past it.
async fn past_one_second_ttl(written: std::time::Instant) {
    if let Some(left) = Duration::from_millis(1100).checked_sub(written.elapsed()) {
        tokio::time::sleep(left).await;
    }
}

http_test! {
    async fn a_hit_counts_its_age_once_in_age_not_in_max_age_too(backend: Backend) {
        // A client or a CDN takes `max-age` less `Age` as what is left (RFC 9111 § 4.2):
        // `max-age` stays the lifetime, and the time since the response was stored is in
        // `Age` alone.
        let served = serve(&backend.cache, layer().ttl(Duration::from_secs(10))).await;
        assert_eq!(served.get("/products/5").await.x_cache(), "MISS");
        // Stored before the answer came back: a second past this, `Age` is at least 1.
        past_one_second_ttl(std::time::Instant::now()).await;
        let hit = served.get("/products/5").await;
        assert_eq!(hit.x_cache(), "HIT");
        assert_eq!(hit.header("cache-control"), Some("max-age=10"));
        let age = hit.age();
        assert!((1..=3).contains(&age), "age {age}");
        assert_eq!(served.app.runs("product"), 1);
    }
}

http_test! {
    async fn only_if_cached_takes_a_stale_response_and_leaves_the_refresh(backend: Backend) {
        let layer = layer()
            .ttl(Duration::from_secs(1))
            .stale_while_revalidate(Duration::from_secs(30));
        let served = serve(&backend.cache, layer).await;
        assert_eq!(&served.get("/products/4").await.body[..], br#"{"id":4,"version":1}"#);
        // Counted from when the response was stored, at the latest.
        let written = std::time::Instant::now();
        served.app.versions.lock().unwrap().insert(4, 2);
        past_one_second_ttl(written).await;
        let asking = |line| [("cache-control", line)];
        // `only-if-cached` takes the stale response (it says no `max-age`), and the handler,
        // which may not answer it, is left to refresh it for another request.
        let only = served.get_with("/products/4", &asking("only-if-cached")).await;
        assert_eq!((only.status, only.x_cache()), (StatusCode::OK, "HIT"));
        assert_eq!(&only.body[..], br#"{"id":4,"version":1}"#);
        // Stale to whoever reads it: as old as its lifetime, or older.
        assert_eq!(only.header("cache-control"), Some("max-age=1"));
        assert!(only.age() >= 1, "{:?}", only.header("age"));
        assert_eq!(served.app.runs("product"), 1);
        // The next request that may run the handler refreshes it.
        let refreshed = served.get("/products/4").await;
        assert_eq!((refreshed.x_cache(), &refreshed.body[..]), ("MISS", &br#"{"id":4,"version":2}"#[..]));
        assert_eq!(served.app.runs("product"), 2);
        let after = served.get("/products/4").await;
        assert_eq!((after.x_cache(), &after.body[..]), ("HIT", &br#"{"id":4,"version":2}"#[..]));
        assert_eq!(served.app.runs("product"), 2);
    }
}

http_test! {
    async fn stale_if_error_answers_a_failing_handler_with_the_old_response(backend: Backend) {
        let layer = layer().ttl(Duration::from_secs(1)).stale_if_error(Duration::from_secs(30));
        let served = serve(&backend.cache, layer).await;
        let first = served.get("/flaky").await;
        // (Stamped before the call returned: its expiry is at most a second from now.)
        let written = std::time::Instant::now();
        assert_eq!((first.x_cache(), &first.body[..]), ("MISS", &b"fresh as of run 1"[..]));
        past_one_second_ttl(written).await;
        served.app.failing.store(true, Ordering::SeqCst);
        let stale = served.get("/flaky").await;
        assert_eq!(stale.status, StatusCode::OK, "the old response, not the 503");
        assert_eq!((stale.x_cache(), &stale.body[..]), ("HIT", &b"fresh as of run 1"[..]));
        assert_eq!(stale.header("cache-control"), Some("max-age=1"));
        assert!(stale.age() >= 1, "stale to the client: {:?}", stale.header("age"));
        assert_eq!(served.app.runs("flaky"), 2, "the handler ran and failed");
        // A request that asks for fresher than that gets the same: its handler ran, and
        // failed, so the old response is what answers it (not the 503, not an empty 200).
        let picky = served.get_with("/flaky", &[("cache-control", "min-fresh=1")]).await;
        assert_eq!((picky.status, picky.x_cache()), (StatusCode::OK, "HIT"));
        assert_eq!(&picky.body[..], b"fresh as of run 1");
        assert_eq!(served.app.runs("flaky"), 3, "the handler ran once for it");
        // Retired by an invalidation: the failure goes through.
        backend.cache.invalidate_path("/flaky").await.unwrap();
        let failed = served.get("/flaky").await;
        assert_eq!((failed.status, failed.x_cache()), (StatusCode::SERVICE_UNAVAILABLE, "MISS"));
        assert_eq!(backend.cache.stats().stale, 2);
    }
}

http_test! {
    async fn stale_if_error_never_answers_with_a_group_invalidated_while_the_handler_ran(
        backend: Backend
    ) {
        // The layer's group generation is in its keys, not on their stamps: read again
        // before the old response answers a failed handler.
        let app = App::default();
        let layer = layer()
            .group("flaky-group")
            .ttl(Duration::from_secs(1))
            .stale_if_error(Duration::from_secs(30))
            .cache(backend.cache.clone());
        let router = Router::new()
            .route("/gated-flaky", get(gated_flaky))
            .route_layer(layer)
            .with_state(app.clone());
        let served = Arc::new(serve_router(app, router).await);
        let first = served.get("/gated-flaky").await;
        let written = std::time::Instant::now();
        assert_eq!((first.x_cache(), &first.body[..]), ("MISS", &b"fresh as of run 1"[..]));
        past_one_second_ttl(written).await;
        served.app.failing.store(true, Ordering::SeqCst);
        let request = {
            let served = served.clone();
            tokio::spawn(async move { served.get("/gated-flaky").await })
        };
        served.app.until_runs("gated-flaky", 2, "the handler never ran again").await;
        // The group is retired while the handler runs; then the handler fails.
        backend.cache.invalidate_group("flaky-group").await.unwrap();
        served.app.gate.notify_one();
        let failed = request.await.unwrap();
        assert_eq!((failed.status, failed.x_cache()), (StatusCode::SERVICE_UNAVAILABLE, "MISS"));
        assert_eq!(&failed.body[..], b"the database is down");
        assert_eq!(backend.cache.stats().stale, 0);
        assert_eq!(served.app.runs("gated-flaky"), 2);
    }
}

http_test! {
    async fn a_request_sharing_a_response_just_made_takes_it(backend: Backend) {
        // Fresher than any response of this layer is (120 s): a request with `min-fresh`
        // that joins another's run of the handler gets that response, just made, without
        // a run of its own, counted once, as a hit.
        let served = Arc::new(serve(&backend.cache, layer()).await);
        assert_eq!(&served.get("/gated").await.body[..], b"gated run 1");
        backend.cache.invalidate_path("/gated").await.unwrap();
        let before = backend.cache.stats();
        let leader = {
            let served = served.clone();
            tokio::spawn(async move { served.get("/gated").await })
        };
        served.app.until_runs("gated", 2, "the leader never ran").await;
        let follower = {
            let served = served.clone();
            tokio::spawn(async move {
                served.get_with("/gated", &[("cache-control", "min-fresh=600")]).await
            })
        };
        common::until_waiting(&backend.cache, 1).await;
        served.app.gate.notify_one();
        let led = leader.await.unwrap();
        assert_eq!((led.x_cache(), &led.body[..]), ("MISS", &b"gated run 2"[..]));
        let followed = tokio::time::timeout(Duration::from_secs(10), follower)
            .await
            .expect("the follower ran the handler again")
            .unwrap();
        assert_eq!((followed.x_cache(), &followed.body[..]), ("HIT", &b"gated run 2"[..]));
        assert_eq!(served.app.runs("gated"), 2);
        let after = backend.cache.stats();
        assert_eq!(
            (after.hits - before.hits, after.misses - before.misses),
            (1, 1),
            "the leader's miss and the follower's hit"
        );
    }
}

http_test! {
    async fn stale_while_revalidate_answers_at_once_while_one_request_refreshes(backend: Backend) {
        let layer = layer()
            .ttl(Duration::from_secs(1))
            .stale_while_revalidate(Duration::from_secs(30));
        let served = Arc::new(serve(&backend.cache, layer).await);
        assert_eq!(&served.get("/gated").await.body[..], b"gated run 1");
        // (Stamped before the call returned: its expiry is at most a second from now.)
        let written = std::time::Instant::now();
        past_one_second_ttl(written).await;
        let refresher = {
            let served = served.clone();
            tokio::spawn(async move { served.get("/gated").await })
        };
        served.app.until_runs("gated", 2, "the refresh never started").await;
        for _ in 0..3 {
            let stale = served.get("/gated").await;
            assert_eq!((stale.x_cache(), &stale.body[..]), ("HIT", &b"gated run 1"[..]));
        }
        // A request that says `max-age` wants no stale answer, however young (RFC 9111
        // § 5.2.1.1): with `only-if-cached`, nothing else may answer it. Its `max-stale`
        // takes one.
        let asking = |line| [("cache-control", line)];
        let refused = served.get_with("/gated", &asking("max-age=600, only-if-cached")).await;
        assert_eq!(refused.status, StatusCode::GATEWAY_TIMEOUT);
        let taken = served
            .get_with("/gated", &asking("max-age=600, max-stale, only-if-cached"))
            .await;
        assert_eq!((taken.x_cache(), &taken.body[..]), ("HIT", &b"gated run 1"[..]));
        let bounded = served
            .get_with("/gated", &asking("max-age=600, max-stale=30, only-if-cached"))
            .await;
        assert_eq!((bounded.x_cache(), &bounded.body[..]), ("HIT", &b"gated run 1"[..]));
        // `max-stale=N` alone bounds how stale an answer it takes (§ 5.2.1.2): once the
        // entry is a whole second past its freshness, `max-stale=0` refuses it.
        let a_second_stale = written + Duration::from_millis(2_050);
        tokio::time::sleep_until(tokio::time::Instant::from_std(a_second_stale)).await;
        let within = served.get_with("/gated", &asking("max-stale=30, only-if-cached")).await;
        assert_eq!((within.x_cache(), &within.body[..]), ("HIT", &b"gated run 1"[..]));
        let beyond = served.get_with("/gated", &asking("max-stale=0, only-if-cached")).await;
        assert_eq!(beyond.status, StatusCode::GATEWAY_TIMEOUT);
        served.app.gate.notify_one();
        let refreshed = refresher.await.unwrap();
        assert_eq!((refreshed.x_cache(), &refreshed.body[..]), ("MISS", &b"gated run 2"[..]));
        let fresh = served.get("/gated").await;
        assert_eq!((fresh.x_cache(), &fresh.body[..]), ("HIT", &b"gated run 2"[..]));
        assert_eq!(served.app.runs("gated"), 2);
        // The cache answered stale six times: the three plain requests and the three
        // `max-stale` took (those refused are misses, counted once each).
        assert_eq!(backend.cache.stats().stale, 6);
    }
}

http_test! {
    async fn the_handlers_own_stale_if_error_answers_when_it_later_fails(backend: Backend) {
        // The layer has no stale window; the response sets `stale-if-error=30`.
        let served = serve(&backend.cache, layer()).await;
        let first = served.get("/own-sie").await;
        // (Stamped before the call returned: its expiry is at most a second from now.)
        let written = std::time::Instant::now();
        assert_eq!((first.x_cache(), &first.body[..]), ("MISS", &b"own-sie run 1"[..]));
        past_one_second_ttl(written).await;
        served.app.failing.store(true, Ordering::SeqCst);
        let stale = served.get("/own-sie").await;
        assert_eq!(stale.status, StatusCode::OK, "the old response, not the 503");
        assert_eq!((stale.x_cache(), &stale.body[..]), ("HIT", &b"own-sie run 1"[..]));
        assert_eq!(stale.header("cache-control"), Some("max-age=1, stale-if-error=30"));
        assert_eq!(served.app.runs("own-sie"), 2, "the handler ran and failed");
        assert_eq!(backend.cache.stats().stale, 1);
    }
}

http_test! {
    async fn own_stale_while_revalidate_serves_during_a_refresh(backend: Backend) {
        let served = Arc::new(serve(&backend.cache, layer()).await);
        assert_eq!(&served.get("/own-swr").await.body[..], b"own-swr run 1");
        // (Stamped before the call returned: its expiry is at most a second from now.)
        let written = std::time::Instant::now();
        past_one_second_ttl(written).await;
        let refresher = {
            let served = served.clone();
            tokio::spawn(async move { served.get("/own-swr").await })
        };
        served.app.until_runs("own-swr", 2, "the refresh never started").await;
        let stale = served.get("/own-swr").await;
        assert_eq!((stale.x_cache(), &stale.body[..]), ("HIT", &b"own-swr run 1"[..]));
        served.app.gate.notify_one();
        let refreshed = refresher.await.unwrap();
        assert_eq!((refreshed.x_cache(), &refreshed.body[..]), ("MISS", &b"own-swr run 2"[..]));
        assert_eq!(served.app.runs("own-swr"), 2);
        assert_eq!(backend.cache.stats().stale, 1);
    }
}

http_test! {
    async fn the_handlers_own_stale_if_error_of_zero_overrides_the_layers(backend: Backend) {
        // The layer's stale-while-revalidate keeps the entry in the store past its TTL, so
        // it is the entry's own `stale-if-error=0` that refuses to answer with it.
        let layer = layer()
            .stale_if_error(Duration::from_secs(30))
            .stale_while_revalidate(Duration::from_secs(30));
        let served = serve(&backend.cache, layer).await;
        assert_eq!(served.get("/own-none").await.x_cache(), "MISS");
        // (Stamped before the call returned: its expiry is at most a second from now.)
        let written = std::time::Instant::now();
        past_one_second_ttl(written).await;
        served.app.failing.store(true, Ordering::SeqCst);
        let failed = served.get("/own-none").await;
        assert_eq!((failed.status, failed.x_cache()), (StatusCode::SERVICE_UNAVAILABLE, "MISS"));
        assert_eq!(backend.cache.stats().stale, 0);
    }
}

http_test! {
    async fn the_layers_jitter_never_keeps_a_response_past_its_own_max_age(backend: Backend) {
        // Up to 30 s of jitter over a two-minute TTL; the response says `max-age=1`.
        let served = serve(&backend.cache, layer().jitter(Duration::from_secs(30))).await;
        assert_eq!(served.get("/own-none").await.x_cache(), "MISS");
        // (Stamped before the call returned: its expiry is at most a second from now.)
        let written = std::time::Instant::now();
        past_one_second_ttl(written).await;
        let after = served.get("/own-none").await;
        assert_eq!(after.x_cache(), "MISS");
        assert_eq!(&after.body[..], b"own-none run 2");
    }
}

http_test! {
    async fn a_response_that_must_be_revalidated_is_never_served_stale(backend: Backend) {
        let layer = layer()
            .stale_while_revalidate(Duration::from_secs(30))
            .stale_if_error(Duration::from_secs(30));
        let served = serve(&backend.cache, layer).await;
        assert_eq!(served.get("/own-revalidate").await.x_cache(), "MISS");
        // (Stamped before the call returned: its expiry is at most a second from now.)
        let written = std::time::Instant::now();
        assert_eq!(served.get("/own-revalidate").await.x_cache(), "HIT");
        past_one_second_ttl(written).await;
        // Past its max-age: the handler answers, not the old response.
        let fresh = served.get("/own-revalidate").await;
        assert_eq!((fresh.x_cache(), &fresh.body[..]), ("MISS", &b"own-revalidate run 2"[..]));
        let written = std::time::Instant::now();
        past_one_second_ttl(written).await;
        served.app.failing.store(true, Ordering::SeqCst);
        let failed = served.get("/own-revalidate").await;
        assert_eq!((failed.status, failed.x_cache()), (StatusCode::SERVICE_UNAVAILABLE, "MISS"));
        assert_eq!(backend.cache.stats().stale, 0);
    }
}

http_test! {
    async fn a_write_answered_with_a_redirect_evicts_too(backend: Backend) {
        let served = serve(&backend.cache, layer()).await;
        served.get("/products/6").await;
        assert_eq!(served.get("/products/6").await.x_cache(), "HIT");
        let form = served.send("POST", "/products/6", &[], "").await;
        assert_eq!(form.status, StatusCode::SEE_OTHER);
        let read = served.get("/products/6").await;
        assert_eq!((read.x_cache(), &read.body[..]), ("MISS", &br#"{"id":6,"version":2}"#[..]));
    }
}

http_test! {
    async fn if_none_match_is_not_evaluated_for_a_stored_status_other_than_2xx(backend: Backend) {
        let layer = layer().statuses([StatusCode::OK, StatusCode::NOT_FOUND]);
        let served = serve(&backend.cache, layer).await;
        assert_eq!(served.get("/missing").await.x_cache(), "MISS");
        let again = served.get_with("/missing", &[("if-none-match", "*")]).await;
        assert_eq!((again.status, again.x_cache()), (StatusCode::NOT_FOUND, "HIT"));
        assert_eq!(served.app.runs("missing"), 1);
    }
}

http_test! {
    async fn a_target_naming_another_host_than_host_shares_no_entry(backend: Backend) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let served = serve_dashboard(&backend.cache).await;
        // An absolute-form target for one host, a `Host` header for another, sent as is.
        let address = served.base.trim_start_matches("http://");
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let request = "GET http://victim.test/acme/dashboard HTTP/1.1\r\n\
                       Host: attacker.test\r\nConnection: close\r\n\r\n";
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("acme on attacker.test"), "{answer}");
        // The host's own request: its own entry, its own page.
        let victim = served.get_with("/acme/dashboard", &[("host", "victim.test")]).await;
        assert_eq!(victim.x_cache(), "MISS");
        assert_eq!(&victim.body[..], b"acme on victim.test");
        assert_eq!(served.app.runs("dashboard"), 2);
    }
}

http_test! {
    async fn a_host_a_proxy_passes_on_is_keyed_and_a_client_address_is_not(backend: Backend) {
        let served = serve_dashboard(&backend.cache).await;
        let host = served.base.trim_start_matches("http://").to_owned();
        let own = format!("acme on {host}");
        // A client's `X-Forwarded-Host` that a proxy kept: its page is its own.
        let forged = [("x-forwarded-host", "evil.test")];
        let poisoned = served.get_with("/acme/dashboard", &forged).await;
        assert_eq!((poisoned.x_cache(), &poisoned.body[..]), ("MISS", &b"acme on evil.test"[..]));
        let plain = served.get("/acme/dashboard").await;
        assert_eq!((plain.x_cache(), &plain.body[..]), ("MISS", own.as_bytes()));
        // `Forwarded`: its host is keyed...
        let via = [("forwarded", "for=192.0.2.1;host=evil.test")];
        let forwarded = served.get_with("/acme/dashboard", &via).await;
        assert_eq!((forwarded.x_cache(), &forwarded.body[..]), ("MISS", &b"acme on evil.test"[..]));
        assert_eq!(served.get("/acme/dashboard").await.x_cache(), "HIT");
        // ...and the client's address is not: another client, the same entry.
        let other = [("forwarded", "for=192.0.2.2;host=evil.test")];
        let shared = served.get_with("/acme/dashboard", &other).await;
        assert_eq!((shared.x_cache(), &shared.body[..]), ("HIT", &b"acme on evil.test"[..]));
        // A space before `=`, which the handler's parser reads past: keyed all the same (not
        // a plain request's entry, which another client would then be served).
        let spaced = [("forwarded", "for=192.0.2.3; host =evil.test")];
        let spaced = served.get_with("/acme/dashboard", &spaced).await;
        assert_eq!((spaced.x_cache(), &spaced.body[..]), ("HIT", &b"acme on evil.test"[..]));
        let plain = served.get("/acme/dashboard").await;
        assert_eq!((plain.x_cache(), &plain.body[..]), ("HIT", own.as_bytes()));
        assert_eq!(served.app.runs("dashboard"), 3);
    }
}

http_test! {
    async fn request_only_if_cached_and_min_fresh(backend: Backend) {
        let served = serve(&backend.cache, layer()).await;
        let only = [("cache-control", "only-if-cached")];
        let cold = served.get_with("/products/9", &only).await;
        assert_eq!((cold.status, cold.x_cache()), (StatusCode::GATEWAY_TIMEOUT, "MISS"));
        // With `no-store` as well: still never the handler (`no-store` forbids storing, and
        // `only-if-cached` answering from anything but the cache).
        let unstored = [("cache-control", "no-store, only-if-cached")];
        let cold = served.get_with("/products/9", &unstored).await;
        assert_eq!((cold.status, cold.x_cache()), (StatusCode::GATEWAY_TIMEOUT, "MISS"));
        assert_eq!(served.app.runs("product"), 0, "the handler never answers it");
        assert_eq!(served.get("/products/9").await.x_cache(), "MISS");
        let cached = served.get_with("/products/9", &only).await;
        assert_eq!((cached.status, cached.x_cache()), (StatusCode::OK, "HIT"));
        let cached = served.get_with("/products/9", &unstored).await;
        assert_eq!((cached.status, cached.x_cache()), (StatusCode::OK, "HIT"));
        // Fresh for about 120 s more: min-fresh=60 takes it, min-fresh=600 does not.
        let min_fresh = |seconds| [("cache-control", seconds)];
        let near = served.get_with("/products/9", &min_fresh("min-fresh=60")).await;
        assert_eq!(near.x_cache(), "HIT");
        // A response the request refuses is counted once, as a miss (not a hit, then a
        // miss for the handler's run).
        let http = |cache: &redcache::Cache| {
            let stats = cache.stats_by_prefix();
            let http = stats.into_iter().find(|(p, _)| p == "http").unwrap().1;
            (http.hits, http.misses)
        };
        let (hits, misses) = http(&backend.cache);
        let far = served.get_with("/products/9", &min_fresh("min-fresh=600")).await;
        assert_eq!(far.x_cache(), "MISS");
        assert_eq!(http(&backend.cache), (hits, misses + 1));
        let both = [("cache-control", "min-fresh=600, only-if-cached")];
        assert_eq!(served.get_with("/products/9", &both).await.status, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(http(&backend.cache), (hits, misses + 2));
        assert_eq!(served.app.runs("product"), 2);
    }
}

http_test! {
    async fn a_response_keeps_the_age_it_had_and_loses_its_hop_by_hop_headers(backend: Backend) {
        let served = serve(&backend.cache, layer()).await;
        let miss = served.get("/kind/aged").await;
        assert_eq!(miss.x_cache(), "MISS");
        assert_eq!(miss.header("age"), Some("50"), "the age it came with");
        let hit = served.get("/kind/aged").await;
        assert_eq!(hit.x_cache(), "HIT");
        let age: u64 = hit.header("age").unwrap().parse().unwrap();
        assert!((50..=52).contains(&age), "50 s old upstream: {age}");
        // As old as its max-age or its `Expires` already (by `Age`, or by `Date`): not
        // stored.
        for kind in ["aged-out", "expires-aged-out", "dated"] {
            for _ in 0..2 {
                let path = format!("/kind/{kind}");
                assert_eq!(served.get(&path).await.x_cache(), "MISS", "{kind}");
            }
        }
        // A header its `Connection` names belongs to that connection (the server does not
        // send it on): not replayed either.
        assert_eq!(served.get("/kind/connection").await.header("x-hop"), None);
        let hit = served.get("/kind/connection").await;
        assert_eq!(hit.x_cache(), "HIT");
        assert_eq!(hit.header("x-hop"), None);
        // Nor what a proxy between the handler and its origin said to the handler.
        for x_cache in ["MISS", "HIT"] {
            let reply = served.get("/kind/proxy").await;
            assert_eq!(reply.x_cache(), x_cache);
            assert_eq!(reply.header("proxy-authenticate"), None, "{x_cache}");
            assert_eq!(reply.header("proxy-authentication-info"), None, "{x_cache}");
        }
    }
}

http_test! {
    async fn a_response_stored_without_a_date_keeps_the_time_it_was_received(backend: Backend) {
        let served = serve(&backend.cache, layer()).await;
        let miss = served.get("/products/31").await;
        assert_eq!(miss.x_cache(), "MISS");
        let date = miss.header("date").expect("a date").to_owned();
        let etag = miss.header("etag").expect("an etag").to_owned();
        // The server's clock moves on (its `Date` has whole seconds) ...
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let hit = served.get("/products/31").await;
        assert_eq!(hit.x_cache(), "HIT");
        assert_eq!(hit.header("date"), Some(date.as_str()), "when it was made");
        let age: u64 = hit.header("age").unwrap().parse().unwrap();
        assert!(age >= 1, "{age}");
        let not_modified = served.get_with("/products/31", &[("if-none-match", &etag)]).await;
        assert_eq!(not_modified.status, StatusCode::NOT_MODIFIED);
        assert_eq!(not_modified.header("date"), Some(date.as_str()));
        // ... and says so where nothing is stored.
        let bypass = served.get_with("/products/31", &[("cache-control", "no-store")]).await;
        assert_eq!(bypass.x_cache(), "BYPASS");
        assert_ne!(bypass.header("date"), Some(date.as_str()));
        assert_eq!(served.app.runs("product"), 2);
    }
}

http_test! {
    async fn a_head_ignores_a_range_on_a_miss_too(backend: Backend) {
        // The handler is asked for the whole response, without the `Range`.
        let served = serve(&backend.cache, layer()).await;
        let head = served.send("HEAD", "/ranged", &[("range", "bytes=0-3")], "").await;
        assert_eq!((head.status, head.x_cache()), (StatusCode::OK, "MISS"));
        assert_eq!(head.header("content-length"), Some("10"));
        assert_eq!(head.header("content-range"), None);
        assert_eq!(served.app.runs("ranged"), 1);
    }
}

/// The handler's own windows keep the entry in Redis past its freshness for as long as
/// the longer one: TTL = max-age + window.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn entries_with_the_handlers_own_window_live_past_max_age_in_redis() {
    let backend = Backend::redis().await;
    let served = serve(&backend.cache, layer().jitter(Duration::ZERO)).await;
    served.get("/own-sie").await;
    let keys: Vec<String> = backend.raw(redis::cmd("KEYS").arg("http:*")).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    let ttl = backend.ttl_secs(&keys[0]).await.unwrap();
    assert!(
        (30..=31).contains(&ttl),
        "max-age=1 plus stale-if-error=30: ttl {ttl}"
    );
    let raw = String::from_utf8(backend.raw_get(&keys[0]).await.unwrap()).unwrap();
    assert!(
        raw.contains(r#""w":0,"e":30000,"#),
        "the entry's own windows: {raw}"
    );
}

http_test! {
    async fn tagged_routes_are_retired_with_the_functions_that_share_their_tags(backend: Backend) {
        let layer = layer().tag("catalogue").tags_from(product_tag);
        let served = serve(&backend.cache, layer).await;
        for path in ["/products/1", "/products/2"] {
            assert_eq!(served.get(path).await.x_cache(), "MISS");
            assert_eq!(served.get(path).await.x_cache(), "HIT");
        }
        // One product's tag: its route (and nothing else).
        backend.cache.invalidate_tag("product:1").await.unwrap();
        assert_eq!(served.get("/products/1").await.x_cache(), "MISS");
        assert_eq!(served.get("/products/2").await.x_cache(), "HIT");
        // The layer's fixed tag: every route behind it.
        backend.cache.invalidate_tag("catalogue").await.unwrap();
        assert_eq!(served.get("/products/1").await.x_cache(), "MISS");
        assert_eq!(served.get("/products/2").await.x_cache(), "MISS");
        assert_eq!(served.app.runs("product"), 5);
        // A function and a route that share a tag go together.
        let runs = AtomicU64::new(0);
        backend.cache.scope(stock(3, &runs)).await;
        served.get("/products/3").await;
        backend.cache.invalidate_tag("product:3").await.unwrap();
        assert_eq!(backend.cache.scope(stock(3, &runs)).await, 30);
        assert_eq!(runs.load(Ordering::SeqCst), 2, "the function missed");
        assert_eq!(served.get("/products/3").await.x_cache(), "MISS", "the route too");
    }
}

http_test! {
    async fn a_write_route_retires_the_tags_it_makes_from_its_request(backend: Backend) {
        let served = serve(&backend.cache, layer()).await;
        let runs = AtomicU64::new(0);
        backend.cache.scope(stock(5, &runs)).await;
        backend.cache.scope(stock(6, &runs)).await;
        // PUT /products/5 retires the tag `product:5`: the function's entry for 5 only.
        let put = served.send("PUT", "/products/5", &[], "").await;
        assert_eq!(put.status, StatusCode::NO_CONTENT);
        backend.cache.scope(stock(5, &runs)).await;
        backend.cache.scope(stock(6, &runs)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }
}

/// `n` requests for `/slow` at once, through `cache`: each answered with its body; how
/// many had `X-Cache: MISS`. The handler answers once the others all wait on its run.
async fn slow_at_once(served: &Arc<Served>, cache: &redcache::Cache, n: usize) -> usize {
    let requests: Vec<_> = (0..n)
        .map(|_| {
            let served = served.clone();
            tokio::spawn(async move { served.get("/slow").await })
        })
        .collect();
    served.app.until_slow_runs(1).await;
    common::until_waiting(cache, n - 1).await;
    served.app.slow_gate.open();
    let mut misses = 0;
    for request in requests {
        let reply = request.await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(&reply.body[..], b"slow answer");
        misses += usize::from(reply.x_cache() == "MISS");
    }
    misses
}

http_test! {
    async fn a_hundred_requests_for_one_cold_url_run_the_handler_once(backend: Backend) {
        let served = Arc::new(serve(&backend.cache, layer()).await);
        assert_eq!(slow_at_once(&served, &backend.cache, 100).await, 1);
        assert_eq!(served.app.slow_runs.load(Ordering::SeqCst), 1);
    }
}

http_test! {
    async fn a_hundred_requests_in_a_group_with_no_generation_yet_run_the_handler_once(
        backend: Backend
    ) {
        // Each request finds no generation for the group: they all key by the one made
        // first, so they share one run, and its entry is found again.
        let served = Arc::new(serve(&backend.cache, layer().group("cold")).await);
        assert_eq!(slow_at_once(&served, &backend.cache, 100).await, 1);
        assert_eq!(served.app.slow_runs.load(Ordering::SeqCst), 1);
        assert_eq!(served.get("/slow").await.x_cache(), "HIT");
        assert_eq!(served.app.slow_runs.load(Ordering::SeqCst), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_redis_down_every_request_is_answered_by_the_handler() {
    let mut backend = Backend::redis().await;
    let served = serve(&backend.cache, layer().group("g")).await;
    served.get("/products/1").await;
    assert_eq!(served.get("/products/1").await.x_cache(), "HIT");
    let http = |cache: &redcache::Cache| {
        let stats = cache.stats_by_prefix();
        stats.into_iter().find(|(p, _)| p == "http").unwrap().1
    };
    let before = http(&backend.cache);
    backend.server.as_mut().unwrap().stop();
    for i in 0..5 {
        let reply = served.get("/products/1").await;
        assert_eq!(reply.status, StatusCode::OK, "request {i}");
        assert_eq!(reply.x_cache(), "MISS");
        assert_eq!(&reply.body[..], br#"{"id":1,"version":1}"#);
    }
    assert_eq!(served.app.runs("product"), 6);
    assert!(backend.cache.stats().faults >= 1);
    // Except a request that said `only-if-cached`: nothing stored answers it now.
    let only = served
        .get_with("/products/1", &[("cache-control", "only-if-cached")])
        .await;
    assert_eq!(
        (only.status, only.x_cache()),
        (StatusCode::GATEWAY_TIMEOUT, "MISS")
    );
    assert_eq!(served.app.runs("product"), 6);
    // Each counted under the layer's prefix, as a miss, though the group's generation
    // could not be read.
    assert_eq!(http(&backend.cache).misses - before.misses, 6);
    // Requests at once still share one run of the handler, group or not: the database
    // behind it needs that most while Redis is out.
    let served = Arc::new(served);
    assert_eq!(slow_at_once(&served, &backend.cache, 20).await, 1);
    assert_eq!(served.app.slow_runs.load(Ordering::SeqCst), 1);
    assert_eq!(http(&backend.cache).misses - before.misses, 7);
}

/// Runs of [`tenant_page`] begun.
static TENANT_PAGES: AtomicU64 = AtomicU64::new(0);

/// A page that depends on the request's `X-Tenant`, which the route's tags name and its
/// key does not. Each run waits (up to 2 s) until two have begun, so requests sent
/// together overlap: were they all to share the first one's run, it would answer every
/// tenant with its page.
async fn tenant_page(headers: HeaderMap) -> String {
    TENANT_PAGES.fetch_add(1, Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while TENANT_PAGES.load(Ordering::SeqCst) < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let tenant = headers.get("x-tenant").and_then(|v| v.to_str().ok());
    format!("page of {}", tenant.unwrap_or("-"))
}

/// With Redis down the tags' generations cannot be read, whose digest keeps apart on an
/// entry's stamp the requests a key does not: requests of other tags still get their own
/// handler's answer, never one another's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_redis_down_requests_of_other_tags_never_share_a_response() {
    let mut backend = Backend::redis().await;
    let tenant = |request: &axum::http::request::Parts| {
        let tenant = request
            .headers
            .get("x-tenant")
            .and_then(|v| v.to_str().ok());
        vec![format!("tenant:{}", tenant.unwrap_or("-"))]
    };
    let app = App::default();
    let router = Router::new()
        .route("/page", get(tenant_page))
        .route_layer(layer().tags_from(tenant).cache(backend.cache.clone()))
        .with_state(app.clone());
    let served = Arc::new(serve_router(app, router).await);
    backend.server.as_mut().unwrap().stop();
    let requests: Vec<_> = ["a", "b", "a", "b"]
        .into_iter()
        .map(|tenant| {
            let served = served.clone();
            tokio::spawn(async move {
                let reply = served.get_with("/page", &[("x-tenant", tenant)]).await;
                (tenant, reply)
            })
        })
        .collect();
    for request in requests {
        let (tenant, reply) = request.await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(&reply.body[..], format!("page of {tenant}").as_bytes());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn entries_live_for_the_layer_ttl_in_redis() {
    let backend = Backend::redis().await;
    let served = serve(&backend.cache, layer().ttl(Duration::from_secs(300))).await;
    served.get("/products/8").await;
    let keys: Vec<String> = backend.raw(redis::cmd("KEYS").arg("http:*")).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    let path_hash = format!("{:x}", md5::Md5::digest(b"/products/8"));
    assert!(
        keys[0].starts_with(&format!("http:{{http:{path_hash}}}:")),
        "the path's hash is the hash tag: {}",
        keys[0]
    );
    let ttl = backend.ttl_secs(&keys[0]).await.unwrap();
    assert!((298..=300).contains(&ttl), "ttl {ttl}");
    // The path's generation lives at least as long.
    let gen_key = format!("redcache:group:{{http:{path_hash}}}");
    let gen_ttl: i64 = backend.raw(redis::cmd("TTL").arg(&gen_key)).await;
    assert!(gen_ttl >= 298, "generation ttl {gen_ttl}");
    // What is stored is readable: the envelope, then the header block and the body as
    // they were sent.
    let raw = String::from_utf8(backend.raw_get(&keys[0]).await.unwrap()).unwrap();
    assert!(raw.starts_with(r#"{"v":1,"#), "{raw}");
    assert!(raw.contains(r#""status":200,"#), "{raw}");
    assert!(
        raw.contains("}}content-type: application/json\r\n"),
        "{raw}"
    );
    assert!(raw.ends_with("\r\n\r\n{\"id\":8,\"version\":1}"), "{raw}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_response_computed_before_an_invalidation_is_not_stored_after_it() {
    let backend = Backend::redis().await;
    let served = Arc::new(serve(&backend.cache, layer()).await);
    // `/gated`'s first run is stored; retired, the next run waits for the gate.
    assert_eq!(served.get("/gated").await.x_cache(), "MISS");
    backend.cache.invalidate_path("/gated").await.unwrap();
    // That run is under way when the path is invalidated again: its response is returned
    // but not stored.
    let pending = {
        let served = served.clone();
        tokio::spawn(async move { served.get("/gated").await })
    };
    served
        .app
        .until_runs("gated", 2, "the handler never ran again")
        .await;
    backend.cache.invalidate_path("/gated").await.unwrap();
    served.app.gate.notify_one();
    let pending = pending.await.unwrap();
    assert_eq!(
        (pending.status, &pending.body[..]),
        (StatusCode::OK, &b"gated run 2"[..])
    );
    assert_eq!(backend.cache.stats().conflicts, 1);
    // (The next run does not wait: the gate keeps this permit for it.)
    served.app.gate.notify_one();
    let next = served.get("/gated").await;
    assert_eq!(
        (next.x_cache(), &next.body[..]),
        ("MISS", &b"gated run 3"[..]),
        "the pre-invalidation response was not stored"
    );
}

use md5::Digest as _;

#[cfg(feature = "metrics")]
#[test]
fn metrics_count_requests_by_the_layer_prefix() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    use metrics_util::MetricKind;
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        runtime.block_on(async {
            let backend = Backend::redis().await;
            let served = serve(&backend.cache, layer().prefix("http:catalogue")).await;
            assert_eq!(served.get("/products/1").await.x_cache(), "MISS");
            let hit = served.get("/products/1").await;
            assert_eq!(hit.x_cache(), "HIT");
            let etag = hit.header("etag").unwrap().to_owned();
            let not_modified = served
                .get_with("/products/1", &[("if-none-match", &etag)])
                .await;
            assert_eq!(not_modified.status, StatusCode::NOT_MODIFIED);
            assert_eq!(served.get("/kind/no-store").await.x_cache(), "MISS");
            assert_eq!(
                backend.cache.invalidate_path("/products/1").await.unwrap(),
                1
            );
            assert_eq!(served.get("/products/1").await.x_cache(), "MISS");
        })
    });
    let snapshot: Vec<_> = snapshotter.snapshot().into_vec();
    let find = |kind: MetricKind, name: &str, labels: &[(&str, &str)]| {
        snapshot.iter().find_map(|(key, _, _, value)| {
            let mut got: Vec<(&str, &str)> =
                key.key().labels().map(|l| (l.key(), l.value())).collect();
            got.sort();
            let mut want = labels.to_vec();
            want.sort();
            (key.kind() == kind && key.key().name() == name && got == want).then_some(value)
        })
    };
    let counter =
        |name: &str, labels: &[(&str, &str)]| match find(MetricKind::Counter, name, labels) {
            Some(DebugValue::Counter(n)) => *n,
            other => panic!("{name} {labels:?}: {other:?}"),
        };
    let prefix = ("prefix", "http:catalogue");
    assert_eq!(
        counter("redcache_requests_total", &[prefix, ("result", "miss")]),
        3
    );
    assert_eq!(
        counter("redcache_requests_total", &[prefix, ("result", "hit")]),
        2
    );
    assert_eq!(counter("redcache_stores_total", &[prefix]), 2);
    assert_eq!(counter("redcache_invalidations_total", &[]), 1);
    let timed = |result| match find(
        MetricKind::Histogram,
        "redcache_call_duration_seconds",
        &[prefix, ("result", result)],
    ) {
        Some(DebugValue::Histogram(values)) => values.len(),
        other => panic!("{result}: {other:?}"),
    };
    assert_eq!((timed("miss"), timed("hit")), (3, 2));
}

#[redcache::cached(prefix = "t:fresh", ttl = 60, group = "fresh")]
async fn in_fresh_group(n: u64) -> u64 {
    n * 2
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_without_a_generation_yet_caches_from_the_first_response() {
    let backend = Backend::redis().await;
    let served = serve(&backend.cache, layer().group("fresh")).await;
    assert_eq!(served.get("/products/6").await.x_cache(), "MISS");
    // A #[cached] fill in the group finds the generation the layer made, and keeps it.
    let gen_before: Option<String> = backend
        .raw(redis::cmd("GET").arg("redcache:group:{fresh}"))
        .await;
    assert!(gen_before
        .as_deref()
        .is_some_and(|g| g.parse::<u64>().is_ok_and(|g| g != 0)));
    assert_eq!(backend.cache.scope(in_fresh_group(1)).await, 2);
    let gen_after: Option<String> = backend
        .raw(redis::cmd("GET").arg("redcache:group:{fresh}"))
        .await;
    assert_eq!(gen_after, gen_before);
    assert_eq!(served.get("/products/6").await.x_cache(), "HIT");
    assert_eq!(served.app.runs("product"), 1);
}
