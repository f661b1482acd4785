//! The example service (`examples/axum_postgres.rs`), run in-process against a private
//! PostgreSQL and a private Redis (or the memory store), driven over loopback HTTP.
//!
//! After every request the test asserts how many queries the service has sent to
//! PostgreSQL and, for reads, how the response cache answered (`x-cache`): a read is a
//! query the first time only, then a `HIT`; a write is one query and the next read sees it
//! (a `MISS` and one more query, or none for a row written through); a missing product is a
//! 404 and a query once (its `None` is cached); concurrent first reads are one query.
//!
//! The client is hyper-util's (with http-body-util): hyper is already in the tree through
//! axum, so it costs a few small crates where reqwest would bring its own stack.
#![cfg(all(feature = "http", feature = "metrics"))]

mod common;

// `main` and what only it uses are dead code here.
#[allow(dead_code)]
#[path = "../examples/axum_postgres.rs"]
mod example;

use axum::body::Bytes;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use common::{test_config, Postgres, RedisServer};
use example::{Product, Repo};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;

/// The service on a free loopback port, its database, and a client for it.
struct Service {
    base: String,
    repo: Arc<Repo>,
    cache: redcache::Cache,
    client: Client<HttpConnector, Full<Bytes>>,
    server: tokio::task::JoinHandle<()>,
    /// Dropped after the server task is stopped (fields drop in order, after `drop`).
    _postgres: Postgres,
}

/// A response, read whole.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "the body is not the JSON expected ({err}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// How the response cache answered: `HIT`, `MISS` or `BYPASS`.
    fn x_cache(&self) -> &str {
        self.header("x-cache")
            .unwrap_or_else(|| panic!("no x-cache header: {self:?}"))
    }
}

impl Service {
    /// A fresh PostgreSQL, migrated and seeded, and the example's app on `cache`, served by
    /// `axum::serve` on this runtime.
    async fn start(cache: redcache::Cache) -> Service {
        let postgres = Postgres::start();
        let repo = Repo::connect(&postgres.url())
            .await
            .unwrap_or_else(|err| panic!("connect to the test PostgreSQL: {err}"));
        repo.migrate().await.expect("create and seed the table");
        let repo = Arc::new(repo);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = example::app(repo.clone(), cache.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve the example");
        });
        Service {
            base: format!("http://{addr}"),
            repo,
            cache,
            client: Client::builder(TokioExecutor::new()).build_http(),
            server,
            _postgres: postgres,
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut request = Request::builder()
            .method(method.clone())
            .uri(format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let body = match body {
            Some(json) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(json.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        let response = self
            .client
            .request(request.body(body).unwrap())
            .await
            .unwrap_or_else(|err| panic!("{method} {path}: {err}"));
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .unwrap_or_else(|err| panic!("{method} {path}: read the body: {err}"))
            .to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, None, &[]).await
    }

    fn queries(&self) -> u64 {
        self.repo.queries()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Asserts the number of queries sent to PostgreSQL so far.
macro_rules! assert_queries {
    ($service:expr, $n:expr, $why:expr) => {
        assert_eq!($service.queries(), $n, "database queries: {}", $why)
    };
}

fn product(id: i64, name: &str, price_cents: i64) -> Product {
    Product {
        id,
        name: name.to_string(),
        price_cents,
    }
}

/// The seed rows of `Repo::migrate`.
fn seed() -> Vec<Product> {
    vec![
        product(1, "Espresso cup", 900),
        product(2, "Milk jug", 1850),
        product(3, "Hand grinder", 12900),
    ]
}

/// The value of `series` (its name and labels, as the scrape writes them) in a Prometheus
/// scrape; 0 if it is not there yet.
fn series_value(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|line| {
            line.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// The whole scenario; `service` is fresh (no query sent, an empty cache).
async fn catalogue(service: &Service) {
    assert_queries!(service, 0, "nothing asked yet");
    // The recorder is the process's: what this run records is the difference.
    let scraped_before = service.get("/metrics").await;
    let scraped_before = String::from_utf8(scraped_before.body.to_vec()).unwrap();

    // A list: a query the first time, then answered from the response cache.
    let first = service.get("/products").await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.x_cache(), "MISS");
    assert_eq!(first.json::<Vec<Product>>(), seed());
    assert_queries!(service, 1, "the first list");
    let again = service.get("/products").await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.x_cache(), "HIT");
    assert_eq!(again.body, first.body);
    assert_queries!(service, 1, "the list again: cached");

    // Sixteen concurrent first reads of one product: one query between them.
    let mut reads = tokio::task::JoinSet::new();
    let mut answered_by = Vec::new();
    for _ in 0..16 {
        let client = service.client.clone();
        let uri = format!("{}/products/3", service.base);
        reads.spawn(async move {
            let request = Request::get(uri).body(Full::new(Bytes::new())).unwrap();
            let response = client.request(request).await.unwrap();
            let status = response.status();
            let x_cache = response.headers()["x-cache"].to_str().unwrap().to_owned();
            (
                status,
                x_cache,
                response.into_body().collect().await.unwrap().to_bytes(),
            )
        });
    }
    while let Some(read) = reads.join_next().await {
        let (status, x_cache, body) = read.unwrap();
        assert_eq!(status, StatusCode::OK);
        let got: Product = serde_json::from_slice(&body).unwrap();
        assert_eq!(got, seed()[2]);
        answered_by.push(x_cache);
    }
    answered_by.sort();
    let mut expected = vec!["HIT".to_owned(); 15];
    expected.push("MISS".to_owned());
    assert_eq!(
        answered_by, expected,
        "one handler run, shared by the others"
    );
    assert_queries!(service, 2, "16 concurrent first reads of /products/3");

    // One product: a query, then cached.
    let one = service.get("/products/1").await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.x_cache(), "MISS");
    assert_eq!(one.json::<Product>(), seed()[0]);
    assert_queries!(service, 3, "the first read of /products/1");
    let one_again = service.get("/products/1").await;
    assert_eq!(one_again.x_cache(), "HIT");
    assert_eq!(one_again.body, one.body);
    assert_queries!(service, 3, "/products/1 again: cached");
    // A client that has it already: 304, no body, no query.
    let etag = one.header("etag").expect("a stored response has an ETag");
    let max_age = one.header("cache-control").expect("and a Cache-Control");
    assert!(max_age.starts_with("max-age="), "{max_age}");
    let not_modified = service
        .send(Method::GET, "/products/1", None, &[("if-none-match", etag)])
        .await;
    assert_eq!(not_modified.status, StatusCode::NOT_MODIFIED);
    assert!(not_modified.body.is_empty());
    assert_queries!(service, 3, "a conditional request for /products/1");

    // A missing product: 404, and its `None` is cached.
    for attempt in 0..3 {
        let missing = service.get("/products/99").await;
        assert_eq!(missing.status, StatusCode::NOT_FOUND, "attempt {attempt}");
        // The response cache stores 200s only: the handler runs, the data cache answers.
        assert_eq!(missing.x_cache(), "MISS", "attempt {attempt}");
        assert_eq!(
            missing.json::<serde_json::Value>(),
            serde_json::json!({"error": "no product 99"})
        );
        assert_queries!(
            service,
            4,
            "404s after the first are answered by the cached None"
        );
    }

    // A write is one query, and the next read of the product sees it: the response was
    // evicted by its path, the data by `#[evicts]`, so one more query.
    let changed = serde_json::json!({"name": "Espresso cup, white", "price_cents": 950});
    let put = service
        .send(Method::PUT, "/products/1", Some(changed), &[])
        .await;
    assert_eq!(put.status, StatusCode::OK);
    assert_eq!(
        put.json::<Product>(),
        product(1, "Espresso cup, white", 950)
    );
    assert_queries!(service, 5, "the UPDATE");
    let after = service.get("/products/1").await;
    assert_eq!(after.status, StatusCode::OK);
    assert_eq!(after.x_cache(), "MISS");
    let white = product(1, "Espresso cup, white", 950);
    assert_eq!(after.json::<Product>(), white);
    assert_queries!(service, 6, "the read after the update loads the row again");
    assert_ne!(after.header("etag"), Some(etag), "a new body, a new ETag");
    let stale = service
        .send(Method::GET, "/products/1", None, &[("if-none-match", etag)])
        .await;
    assert_eq!(
        stale.status,
        StatusCode::OK,
        "the old ETag no longer matches"
    );
    assert_eq!(stale.x_cache(), "HIT");
    assert_eq!(stale.body, after.body);
    assert_queries!(service, 6, "and caches it");
    // The list was evicted with its group.
    let list = service.get("/products").await;
    assert_eq!(list.x_cache(), "MISS");
    assert_eq!(list.json::<Vec<Product>>()[0], white);
    assert_queries!(service, 7, "the list after the update");

    // A product asked for before it exists (a cached None), then created: the create
    // writes it through, so it is served at once, with no query.
    let before = service.get("/products/4").await;
    assert_eq!(before.status, StatusCode::NOT_FOUND);
    assert_queries!(service, 8, "/products/4 before it exists");
    let new = serde_json::json!({"name": "Scale", "price_cents": 2500});
    let created = service
        .send(Method::POST, "/products", Some(new), &[])
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(created.header("location"), Some("/products/4"));
    assert_eq!(created.json::<Product>(), product(4, "Scale", 2500));
    assert_queries!(service, 9, "the INSERT");
    let fresh = service.get("/products/4").await;
    assert_eq!(fresh.status, StatusCode::OK);
    assert_eq!(
        fresh.x_cache(),
        "MISS",
        "no response was stored for the 404"
    );
    assert_eq!(fresh.json::<Product>(), product(4, "Scale", 2500));
    assert_queries!(service, 9, "the new product was written through");
    assert_eq!(service.get("/products/4").await.x_cache(), "HIT");
    let list = service.get("/products").await;
    assert_eq!(list.x_cache(), "MISS", "the create evicted the list");
    assert_eq!(list.json::<Vec<Product>>().len(), 4);
    assert_queries!(service, 10, "the list after the create");

    // A delete: one query, then one for the next read, whose 404 is cached.
    let deleted = service.send(Method::DELETE, "/products/2", None, &[]).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_queries!(service, 11, "the DELETE");
    for _ in 0..2 {
        let gone = service.get("/products/2").await;
        assert_eq!(gone.status, StatusCode::NOT_FOUND);
        assert_eq!(gone.x_cache(), "MISS", "a 404 is not a stored response");
    }
    assert_queries!(
        service,
        12,
        "/products/2 after the delete: one query, then None"
    );
    let list = service.get("/products").await;
    assert_eq!(list.x_cache(), "MISS");
    let ids: Vec<i64> = list.json::<Vec<Product>>().iter().map(|p| p.id).collect();
    assert_eq!(ids, [1, 3, 4], "the list after the delete");
    assert_queries!(service, 13, "the list after the delete");

    // Writes that fail change nothing and evict nothing.
    let bad = serde_json::json!({"name": " ", "price_cents": 1});
    let refused = service
        .send(Method::PUT, "/products/1", Some(bad), &[])
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    let absent = serde_json::json!({"name": "Nothing", "price_cents": 1});
    let not_found = service
        .send(Method::PUT, "/products/99", Some(absent), &[])
        .await;
    assert_eq!(not_found.status, StatusCode::NOT_FOUND);
    assert_queries!(
        service,
        14,
        "the UPDATE of a missing row (the invalid body sent none)"
    );
    // A product's path is its id in digits: `/products/01` would be cached under a path
    // that writes to `/products/1` do not evict. No such path, and no query.
    for path in ["/products/01", "/products/+1"] {
        let other = service.get(path).await;
        assert_eq!(other.status, StatusCode::NOT_FOUND, "{path}");
        let write = serde_json::json!({"name": "Other", "price_cents": 1});
        let put = service.send(Method::PUT, path, Some(write), &[]).await;
        assert_eq!(put.status, StatusCode::NOT_FOUND, "{path}");
    }
    assert_eq!(
        service.get("/products/one").await.status,
        StatusCode::BAD_REQUEST
    );
    assert_queries!(service, 14, "ids not in the product's own form");
    assert_eq!(service.get("/products").await.x_cache(), "HIT");
    assert_eq!(service.get("/products/1").await.x_cache(), "HIT");
    assert_queries!(
        service,
        14,
        "reads after the failed writes: nothing was evicted"
    );

    // What the cache promises, in total: one query per read of something not yet cached
    // or changed since (the list 4 times: first, after the update, the create and the
    // delete; products 3, 1, 99 and 4 once each; 1 and 2 again after their writes: 10) and
    // one per write that reached the database (4).
    let stats: serde_json::Value = service.get("/stats").await.json();
    assert_eq!(stats["database_queries"], 10 + 4);
    assert_queries!(service, 14, "/stats touches no database");

    // The data cache's own account agrees: every query of a read was one of its misses
    // (get_product: 3, 1, 99, 1, 4, 2; list_products: 4), and the repeated 404s (99 twice,
    // 2 once) were cached Nones. The store never failed.
    let by_prefix = service.cache.stats_by_prefix();
    let of = |prefix: &str| {
        by_prefix
            .iter()
            .find(|(p, _)| p == prefix)
            .map(|(_, stats)| *stats)
            .unwrap_or_else(|| panic!("no stats for {prefix}: {by_prefix:?}"))
    };
    let (one, list) = (of("catalog:product"), of("catalog:products"));
    assert_eq!((one.misses, one.null_hits), (6, 3), "{one:?}");
    assert_eq!(list.misses, 4, "{list:?}");
    assert_eq!(service.queries(), one.misses + list.misses + 4);
    let stats = service.cache.stats();
    assert_eq!((stats.faults, stats.conflicts), (0, 0), "{stats:?}");

    // What an operator's probe and scraper read: the scrape counts what this run did, as
    // the cache's own stats do.
    let health = service.get("/health").await;
    assert_eq!(health.status, StatusCode::OK);
    let body = health.json::<serde_json::Value>();
    assert_eq!(
        (&body["ready"], &body["connected"]),
        (&true.into(), &true.into())
    );
    let scrape = service.get("/metrics").await;
    assert_eq!(scrape.status, StatusCode::OK);
    let text = String::from_utf8(scrape.body.to_vec()).unwrap();
    let recorded =
        |series: &str| series_value(&text, series) - series_value(&scraped_before, series);
    let requests = |prefix: &str, result: &str| {
        recorded(&format!(
            r#"redcache_requests_total{{prefix="{prefix}",result="{result}"}}"#
        ))
    };
    assert_eq!(
        requests("catalog:product", "null_hit"),
        one.null_hits,
        "{text}"
    );
    assert_eq!(requests("catalog:product", "miss"), one.misses, "{text}");
    assert_eq!(requests("catalog:products", "miss"), list.misses, "{text}");
    let http = of("http");
    assert!(http.hits >= 8, "{http:?}");
    assert_eq!(requests("http", "hit"), http.hits, "{text}");
    assert_eq!(
        recorded(r#"redcache_call_duration_seconds_count{prefix="http",result="hit"}"#),
        http.hits,
        "one duration per hit: {text}"
    );
    assert_queries!(service, 14, "/health and /metrics touch no database");
}

/// On Redis, then on the in-process store: one after the other, so that each run's
/// scrape of the process's one recorder counts its own traffic alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalogue_on_redis_then_memory() {
    let redis = RedisServer::start();
    let service = Service::start(redis.cache().await).await;
    catalogue(&service).await;
    drop(service);
    let service = Service::start(redcache::Cache::memory_with(test_config().build())).await;
    catalogue(&service).await;
}
