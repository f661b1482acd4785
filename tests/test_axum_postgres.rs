//! The example service (`examples/axum_postgres.rs`), run in-process against a private
//! PostgreSQL and a private Redis (or the memory store), driven over loopback HTTP.
//!
//! After every request the test asserts how many queries the service has sent to
//! PostgreSQL: a read is a query the first time only, a write is one query and makes the
//! next read of what it changed one more, a missing product is a query once (its `None` is
//! cached), and concurrent first reads are one query.
//!
//! The client is hyper-util's (with http-body-util): hyper is already in the tree through
//! axum, so it costs a few small crates where reqwest would bring its own stack.

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
        let app = example::app(repo.clone(), cache);
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve the example");
        });
        Service {
            base: format!("http://{addr}"),
            repo,
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

/// The whole scenario; `service` is fresh (no query sent, an empty cache).
async fn catalogue(service: &Service) {
    assert_queries!(service, 0, "nothing asked yet");

    // A list: a query the first time, then answered from the cache.
    let first = service.get("/products").await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.json::<Vec<Product>>(), seed());
    assert_queries!(service, 1, "the first list");
    let again = service.get("/products").await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body, first.body);
    assert_queries!(service, 1, "the list again: cached");

    // Sixteen concurrent first reads of one product: one query between them.
    let mut reads = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let client = service.client.clone();
        let uri = format!("{}/products/3", service.base);
        reads.spawn(async move {
            let request = Request::get(uri).body(Full::new(Bytes::new())).unwrap();
            let response = client.request(request).await.unwrap();
            let status = response.status();
            (
                status,
                response.into_body().collect().await.unwrap().to_bytes(),
            )
        });
    }
    while let Some(read) = reads.join_next().await {
        let (status, body) = read.unwrap();
        assert_eq!(status, StatusCode::OK);
        let got: Product = serde_json::from_slice(&body).unwrap();
        assert_eq!(got, seed()[2]);
    }
    assert_queries!(service, 2, "16 concurrent first reads of /products/3");

    // One product: a query, then cached.
    let one = service.get("/products/1").await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.json::<Product>(), seed()[0]);
    assert_queries!(service, 3, "the first read of /products/1");
    let one_again = service.get("/products/1").await;
    assert_eq!(one_again.body, one.body);
    assert_queries!(service, 3, "/products/1 again: cached");

    // A missing product: 404, and its `None` is cached.
    for attempt in 0..3 {
        let missing = service.get("/products/99").await;
        assert_eq!(missing.status, StatusCode::NOT_FOUND, "attempt {attempt}");
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

    // A write is one query, and the next read of the product sees it (one more query:
    // the update evicted the entry).
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
    assert_eq!(
        after.json::<Product>(),
        product(1, "Espresso cup, white", 950)
    );
    assert_queries!(service, 6, "the read after the update loads the row again");
    service.get("/products/1").await;
    assert_queries!(service, 6, "and caches it");
    // The list was evicted with its group.
    let list = service.get("/products").await;
    assert_eq!(list.json::<Vec<Product>>()[0].name, "Espresso cup, white");
    assert_queries!(service, 7, "the list after the update");

    // A product asked for before it exists (a cached None), then created: the create
    // writes it through, so it is served at once, with no query.
    assert_eq!(
        service.get("/products/4").await.status,
        StatusCode::NOT_FOUND
    );
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
    assert_eq!(fresh.json::<Product>(), product(4, "Scale", 2500));
    assert_queries!(service, 9, "the new product was written through");

    // A delete: one query, then one for the next read, whose 404 is cached.
    let deleted = service.send(Method::DELETE, "/products/2", None, &[]).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_queries!(service, 10, "the DELETE");
    for _ in 0..2 {
        assert_eq!(
            service.get("/products/2").await.status,
            StatusCode::NOT_FOUND
        );
    }
    assert_queries!(
        service,
        11,
        "/products/2 after the delete: one query, then None"
    );
    let list: Vec<Product> = service.get("/products").await.json();
    assert_eq!(
        list.iter().map(|p| p.id).collect::<Vec<_>>(),
        [1, 3, 4],
        "the list after the delete"
    );
    assert_queries!(service, 12, "the list after the delete");

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
        13,
        "the UPDATE of a missing row (the invalid body sent none)"
    );

    // What the cache promises, in total: one query per read of something not yet cached
    // or changed since (the list 3 times: first, after the update, after the delete;
    // products 3, 1, 99, 4 once each; 1 and 2 again after their writes: 9) and one per
    // write that reached the database (4).
    let stats: serde_json::Value = service.get("/stats").await.json();
    assert_eq!(stats["database_queries"], 13);
    assert_queries!(service, 13, "/stats touches no database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalogue_on_redis() {
    let redis = RedisServer::start();
    let cache = redis.cache().await;
    let service = Service::start(cache.clone()).await;
    catalogue(&service).await;
    assert_eq!(cache.stats().faults, 0, "{:?}", cache.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalogue_on_memory() {
    let cache = redcache::Cache::memory_with(test_config().build());
    let service = Service::start(cache.clone()).await;
    catalogue(&service).await;
    assert_eq!(cache.stats().faults, 0, "{:?}", cache.stats());
}
