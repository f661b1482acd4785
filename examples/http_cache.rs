//! HTTP response caching in front of axum routes: see `X-Cache`, `ETag` and `304` with curl.
//!
//! ```sh
//! cargo run --example http_cache --features http                                    # in-process store
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --example http_cache --features http   # Redis
//! ```
//!
//! Then, in another terminal (the README's "HTTP caching" section shows the output):
//!
//! ```sh
//! curl -i localhost:3000/products/42                                  # X-Cache: MISS
//! curl -i localhost:3000/products/42                                  # X-Cache: HIT, Age
//! curl -i -H 'If-None-Match: "<etag from above>"' localhost:3000/products/42   # 304
//! curl -i -X PUT localhost:3000/products/42                           # evicts it
//! curl -i localhost:3000/products/42                                  # MISS, new version
//! ```
//!
//! `PORT` picks another port than 3000.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::{Json, Router};
use redcache::http::{CacheLayer, EvictLayer};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Serialize)]
struct Product {
    id: u64,
    name: String,
    version: u64,
}

/// The "database": a version per product, bumped by `PUT`.
#[derive(Clone, Default)]
struct Db {
    versions: Arc<Mutex<HashMap<u64, u64>>>,
    queries: Arc<AtomicU64>,
}

async fn get_product(State(db): State<Db>, Path(id): Path<u64>) -> Json<Product> {
    let queries = db.queries.fetch_add(1, Ordering::SeqCst) + 1;
    println!("handler ran: GET /products/{id} (database queries so far: {queries})");
    let version = *db.versions.lock().unwrap().entry(id).or_insert(1);
    Json(Product {
        id,
        name: format!("product {id}"),
        version,
    })
}

async fn update_product(State(db): State<Db>, Path(id): Path<u64>) -> StatusCode {
    *db.versions.lock().unwrap().entry(id).or_insert(1) += 1;
    println!("handler ran: PUT /products/{id}");
    StatusCode::NO_CONTENT
}

#[tokio::main]
async fn main() {
    choose_store().await;
    let reads = Router::new()
        .route("/products/{id}", get(get_product))
        .route_layer(
            CacheLayer::new()
                .ttl(Duration::from_secs(300))
                .group("products"),
        );
    let writes = Router::new()
        .route("/products/{id}", put(update_product))
        // After a 2xx: GET /products/{id} (every query and variant) and the group go.
        .route_layer(EvictLayer::new().own_path().group("products"));
    let app = reads.merge(writes).with_state(Db::default());

    let port = std::env::var("PORT").unwrap_or_else(|_| "3000".into());
    let listener = match tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("cannot listen on 127.0.0.1:{port} ({err}); set PORT to a free port");
            std::process::exit(1);
        }
    };
    println!("listening on http://127.0.0.1:{port}  (try: curl -i localhost:{port}/products/42)");
    axum::serve(listener, app).await.expect("the server runs");
}

/// Redis when `REDIS_URL` is set, else the in-process store.
async fn choose_store() {
    if std::env::var_os("REDIS_URL").is_some() {
        let config = redcache::Config::from_env();
        let target = config.redacted_target();
        match redcache::init(config).await {
            Ok(()) => return println!("store: Redis at {target}"),
            Err(err) => println!("store: Redis is not usable ({err}); using the in-process store"),
        }
    } else {
        println!("store: in-process memory (set REDIS_URL=redis://127.0.0.1:6379 to use Redis)");
    }
    redcache::Cache::memory()
        .install()
        .expect("nothing else installs a cache in this example");
}
