//! A product catalogue: an axum service on PostgreSQL, its reads cached with redcache.
//!
//! ```sh
//! # In-process cache (no Redis):
//! DATABASE_URL=postgres://postgres:secret@127.0.0.1:5432/postgres \
//!     cargo run --example axum_postgres --features http,metrics
//! # Redis:
//! DATABASE_URL=postgres://postgres:secret@127.0.0.1:5432/postgres \
//!     REDIS_URL=redis://127.0.0.1:6379 cargo run --example axum_postgres --features http,metrics
//! ```
//!
//! `DATABASE_URL` is required (the service creates and seeds its `products` table);
//! `LISTEN_ADDR` defaults to `127.0.0.1:3000`. Then:
//!
//! ```sh
//! curl -i localhost:3000/products/1                      # x-cache: MISS, then HIT
//! curl -i -X PUT localhost:3000/products/1 -H 'content-type: application/json' \
//!      -d '{"name": "Espresso cup, white", "price_cents": 950}'
//! curl localhost:3000/stats                              # {"database_queries": ...}
//! curl localhost:3000/health                             # {"ready": true, ...}
//! curl localhost:3000/metrics                            # Prometheus text format
//! ```
//!
//! Two tiers of caching, in one store:
//!
//! * **Data** ([`Repo`]): reads are `#[redcache::cached]` methods. `get_product` caches a
//!   missing row as `None` for `null_ttl`, so repeated requests for an unknown id do not
//!   reach the database; `list_products` is in the `products` group. Writes keep them
//!   right: `update_product` and `delete_product` are `#[redcache::evicts(..)]`, and
//!   `create_product` writes the new row through with `redcache::put!`.
//! * **HTTP responses** ([`app`]): the `GET` routes are behind
//!   `redcache::http::CacheLayer` (`x-cache: HIT|MISS`, `ETag`, `304 Not Modified`), the
//!   list in the `products` group too; the write routes are behind `EvictLayer`, which,
//!   after any response but an error, evicts that group and the request's own path. A 404
//!   is not stored as a response, but the data tier still answers it without a query.
//!
//! The database client is tokio-postgres: plain async calls, no macros and no database
//! needed at compile time, and a much smaller build than sqlx. One `tokio_postgres::Client`
//! is shared by every request (it pipelines concurrent queries); a busy service would use
//! a pool such as deadpool-postgres.
//!
//! The service counts the queries it sends to PostgreSQL (`GET /stats`), so what the cache
//! saved can be seen: the tests (`tests/test_axum_postgres.rs`) run it in-process against a
//! private PostgreSQL and Redis and assert that count after every request.

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use redcache::http::{CacheLayer, EvictLayer};
use redcache::Cache;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::Duration;
use tokio_postgres::NoTls;

/// A row of the `products` table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    /// Its key, given by the database.
    pub id: i64,
    /// What it is called.
    pub name: String,
    /// Its price, in cents.
    pub price_cents: i64,
}

/// The body of `POST /products` and `PUT /products/{id}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NewProduct {
    /// Not empty.
    pub name: String,
    /// Not negative.
    pub price_cents: i64,
}

/// A failed database call. Never cached (a `#[cached]` read that fails is tried again by
/// the next request), and a write that fails evicts nothing.
#[derive(Debug)]
pub enum DbError {
    /// PostgreSQL could not be reached, or refused the statement.
    Postgres(tokio_postgres::Error),
    /// An update or delete named a product that does not exist.
    NoSuchProduct(i64),
}

impl fmt::Display for DbError {
    /// For `Postgres`, tokio-postgres's message and its causes (the server's error, the
    /// refused connection): `error connecting to server: Connection refused (os error 111)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbError::Postgres(err) => {
                write!(f, "{err}")?;
                let mut cause = std::error::Error::source(err);
                while let Some(err) = cause {
                    write!(f, ": {err}")?;
                    cause = err.source();
                }
                Ok(())
            }
            DbError::NoSuchProduct(id) => write!(f, "no product {id}"),
        }
    }
}

impl std::error::Error for DbError {}

impl From<tokio_postgres::Error> for DbError {
    fn from(err: tokio_postgres::Error) -> Self {
        DbError::Postgres(err)
    }
}

/// The catalogue's data access: cached reads, writes that keep the cache right, and a
/// count of the queries sent to PostgreSQL.
#[derive(Debug)]
pub struct Repo {
    client: tokio_postgres::Client,
    queries: AtomicU64,
}

const COLUMNS: &str = "id, name, price_cents";

/// A row as a product; an error (not a panic) if the table's columns are of other types
/// (a `products` table of another application in the same database).
fn product(row: &tokio_postgres::Row) -> Result<Product, DbError> {
    Ok(Product {
        id: row.try_get(0)?,
        name: row.try_get(1)?,
        price_cents: row.try_get(2)?,
    })
}

impl Repo {
    /// Connects to PostgreSQL at `url` (`postgres://user:password@host:port/database`), with
    /// a 5 s connect timeout unless the URL sets one. The connection is driven by a task
    /// spawned on the current tokio runtime.
    ///
    /// # Errors
    ///
    /// If the URL does not parse or the server cannot be reached or refuses the login.
    pub async fn connect(url: &str) -> Result<Repo, DbError> {
        let mut config: tokio_postgres::Config = url.parse()?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        let (client, connection) = config.connect(NoTls).await?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::error!("the PostgreSQL connection failed: {err}");
            }
        });
        Ok(Repo {
            client,
            queries: AtomicU64::new(0),
        })
    }

    /// Creates the `products` table if it is missing, and seeds it with three products if
    /// it is empty. Not counted in [`Repo::queries`].
    ///
    /// # Errors
    ///
    /// If the database refuses the statements.
    pub async fn migrate(&self) -> Result<(), DbError> {
        self.client
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS products (
                     id          BIGSERIAL PRIMARY KEY,
                     name        TEXT NOT NULL,
                     price_cents BIGINT NOT NULL CHECK (price_cents >= 0)
                 );
                 INSERT INTO products (name, price_cents)
                 SELECT * FROM (VALUES ('Espresso cup', 900), ('Milk jug', 1850),
                                       ('Hand grinder', 12900)) AS seed
                 WHERE NOT EXISTS (SELECT 1 FROM products);",
            )
            .await?;
        Ok(())
    }

    /// How many queries requests have sent to PostgreSQL so far.
    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::SeqCst)
    }

    /// Counts one query; called right before each one is sent.
    fn count_query(&self) {
        self.queries.fetch_add(1, Ordering::SeqCst);
    }

    /// One product, `Ok(None)` if there is no such row. Cached for 5 minutes; a missing
    /// row is cached as `None` for 30 s (a flood of requests for an unknown id reaches the
    /// database once). An `Err` is not cached.
    #[redcache::cached(prefix = "catalog:product", ttl = 300, null_ttl = 30)]
    pub async fn get_product(&self, id: i64) -> Result<Option<Product>, DbError> {
        self.count_query();
        let sql = format!("SELECT {COLUMNS} FROM products WHERE id = $1");
        let row = self.client.query_opt(&sql, &[&id]).await?;
        row.as_ref().map(product).transpose()
    }

    /// The first `limit` products by id. Cached for a minute, in the `products` group:
    /// every write invalidates all the lists at once, whatever their `limit`.
    #[redcache::cached(prefix = "catalog:products", ttl = 60, group = "products")]
    pub async fn list_products(&self, limit: i64) -> Result<Vec<Product>, DbError> {
        self.count_query();
        let sql = format!("SELECT {COLUMNS} FROM products ORDER BY id LIMIT $1");
        let rows = self.client.query(&sql, &[&limit]).await?;
        rows.iter().map(product).collect()
    }

    /// Inserts a product. On `Ok`, the lists are evicted, and the new row is written
    /// through to `get_product`'s entry: a cached `None` for that id (a client that asked
    /// for it before it existed) would otherwise hide it for up to 30 s.
    ///
    /// # Errors
    ///
    /// If the database refuses the row.
    #[redcache::evicts(group = "products")]
    pub async fn create_product(&self, new: &NewProduct) -> Result<Product, DbError> {
        self.count_query();
        let sql =
            format!("INSERT INTO products (name, price_cents) VALUES ($1, $2) RETURNING {COLUMNS}");
        let row = self
            .client
            .query_one(&sql, &[&new.name, &new.price_cents])
            .await?;
        let created = product(&row)?;
        let id = created.id;
        if let Err(err) = redcache::put!(self.get_product(id), Ok(Some(created.clone()))).await {
            // The row is in the database; drop the entry instead, so the next read loads
            // it. If the store is down that fails too, and a stale entry lives its TTL.
            tracing::warn!("write-through of product {id} failed ({err}); invalidating");
            let _ = redcache::invalidate!(self.get_product(id)).await;
        }
        Ok(created)
    }

    /// Replaces a product's name and price. On `Ok`, `#[evicts]` drops its `get_product`
    /// entry and every list (the next read loads the row again: an eviction, unlike a
    /// write-through, cannot store an older row than a concurrent update's).
    ///
    /// # Errors
    ///
    /// [`DbError::NoSuchProduct`] if there is no such row (nothing is evicted), or the
    /// database's error.
    #[redcache::evicts(self.get_product(id), group = "products")]
    pub async fn update_product(&self, id: i64, new: &NewProduct) -> Result<Product, DbError> {
        self.count_query();
        let sql = format!(
            "UPDATE products SET name = $2, price_cents = $3 WHERE id = $1 RETURNING {COLUMNS}"
        );
        let row = self
            .client
            .query_opt(&sql, &[&id, &new.name, &new.price_cents])
            .await?;
        row.as_ref()
            .map(product)
            .transpose()?
            .ok_or(DbError::NoSuchProduct(id))
    }

    /// Deletes a product. On `Ok`, `#[evicts]` drops its entry and every list.
    ///
    /// # Errors
    ///
    /// [`DbError::NoSuchProduct`] if there is no such row (nothing is evicted), or the
    /// database's error.
    #[redcache::evicts(self.get_product(id), group = "products")]
    pub async fn delete_product(&self, id: i64) -> Result<(), DbError> {
        self.count_query();
        let deleted = self
            .client
            .execute("DELETE FROM products WHERE id = $1", &[&id])
            .await?;
        if deleted == 0 {
            return Err(DbError::NoSuchProduct(id));
        }
        Ok(())
    }
}

/// What a handler answers when it fails.
#[derive(Debug)]
enum ApiError {
    NotFound(i64),
    /// A path whose id is not written as the product's id is (`/products/01`): no such
    /// path. Answering it would cache the product under a path its writes do not evict.
    NoSuchPath,
    BadId,
    Invalid(&'static str),
    Db(DbError),
}

impl From<DbError> for ApiError {
    fn from(err: DbError) -> Self {
        match err {
            DbError::NoSuchProduct(id) => ApiError::NotFound(id),
            err => ApiError::Db(err),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            ApiError::NotFound(id) => (StatusCode::NOT_FOUND, format!("no product {id}")),
            ApiError::NoSuchPath => (
                StatusCode::NOT_FOUND,
                "no such path: a product is at /products/{id}, its id in digits".to_string(),
            ),
            ApiError::BadId => (
                StatusCode::BAD_REQUEST,
                "a product's id is a number".to_string(),
            ),
            ApiError::Invalid(why) => (StatusCode::UNPROCESSABLE_ENTITY, why.to_string()),
            ApiError::Db(err) => {
                tracing::error!("database error: {err}");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "database error".to_string(),
                )
            }
        };
        (status, Json(serde_json::json!({ "error": message }))).into_response()
    }
}

/// What the handlers share.
#[derive(Clone, Debug)]
struct AppState {
    repo: Arc<Repo>,
    cache: Cache,
}

/// `GET /products?limit=N`: the first N products (default 100, at most 1000).
#[derive(Debug, Deserialize)]
struct ListParams {
    limit: Option<i64>,
}

async fn list_products(
    State(state): State<AppState>,
    Query(params): Query<ListParams>,
) -> Result<Json<Vec<Product>>, ApiError> {
    let limit = params.limit.unwrap_or(100).clamp(1, 1000);
    Ok(Json(state.repo.list_products(limit).await?))
}

/// The id of a `/products/{id}` path, written as the product's id is. The HTTP cache keys
/// and evicts by path: `/products/01` or `/products/+1` answered as product 1 would be
/// cached under a path that `PUT /products/1` does not evict, and served stale.
fn product_id(raw: &str) -> Result<i64, ApiError> {
    let id: i64 = raw.parse().map_err(|_| ApiError::BadId)?;
    if id.to_string() != raw {
        return Err(ApiError::NoSuchPath);
    }
    Ok(id)
}

async fn get_product(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Product>, ApiError> {
    let id = product_id(&id)?;
    match state.repo.get_product(id).await? {
        Some(product) => Ok(Json(product)),
        None => Err(ApiError::NotFound(id)),
    }
}

fn validate(new: &NewProduct) -> Result<(), ApiError> {
    if new.name.trim().is_empty() {
        return Err(ApiError::Invalid("name must not be empty"));
    }
    if new.price_cents < 0 {
        return Err(ApiError::Invalid("price_cents must not be negative"));
    }
    Ok(())
}

async fn create_product(
    State(state): State<AppState>,
    Json(new): Json<NewProduct>,
) -> Result<Response, ApiError> {
    validate(&new)?;
    let created = state.repo.create_product(&new).await?;
    let location = format!("/products/{}", created.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(created),
    )
        .into_response())
}

async fn update_product(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(new): Json<NewProduct>,
) -> Result<Json<Product>, ApiError> {
    let id = product_id(&id)?;
    validate(&new)?;
    Ok(Json(state.repo.update_product(id, &new).await?))
}

async fn delete_product(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = product_id(&id)?;
    state.repo.delete_product(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /stats`: the queries sent to PostgreSQL and the cache's counters. Answers from
/// memory, touching neither the database nor the store.
async fn stats(State(state): State<AppState>) -> Json<serde_json::Value> {
    let cache = state.cache.stats();
    Json(serde_json::json!({
        "database_queries": state.repo.queries(),
        "cache": {
            "store": if state.cache.is_redis() { "redis" } else { "memory" },
            "hits": cache.hits,
            "null_hits": cache.null_hits,
            "misses": cache.misses,
            "stores": cache.stores,
            "invalidations": cache.invalidations,
            "faults": cache.faults,
        },
    }))
}

/// `GET /health`: readiness for a load balancer or Kubernetes probe. `200` while the
/// cache's store answers (or is the in-process one), `503` while it does not (its last
/// operation failed, its connection was found down, or its circuit breaker is open, and
/// this probe's own operation failed too); either way the body says why. The service still answers requests when Redis is
/// out (every read goes to the database): take it out of rotation only if the database
/// could not carry the load.
async fn health(State(state): State<AppState>) -> Response {
    let mut health = state.cache.health();
    if !health.is_ready() {
        // Out of rotation, the service may get no other request that reaches Redis: this
        // one asks it (through the breaker: one probe per cool-down at most), so that
        // readiness comes back once Redis answers again.
        let _ = state.cache.get::<u8>("health:probe").await;
        health = state.cache.health();
    }
    let body = serde_json::json!({
        "ready": health.is_ready(),
        "store": if state.cache.is_redis() { "redis" } else { "memory" },
        "connected": health.connected,
        "breaker_open": health.breaker_open,
        "last_fault": health.last_fault.as_ref().map(|f| f.error.clone()),
    });
    let status = match health.is_ready() {
        true => StatusCode::OK,
        false => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, Json(body)).into_response()
}

/// The Prometheus recorder of this process, installed by the first call: redcache's
/// counters and histograms (`redcache_requests_total{prefix, result}`, ...) go to it
/// through the `metrics` facade. A thread of its own runs the recorder's upkeep every 5 s,
/// which drains the histograms' samples into their buckets: without it they would pile
/// up between scrapes (without end if nothing scrapes).
fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let handle = PrometheusBuilder::new()
            .install_recorder()
            .expect("no other metrics recorder in this process");
        let upkept = handle.clone();
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_secs(5));
            upkept.run_upkeep();
        });
        handle
    })
}

/// `GET /metrics`: everything recorded, in Prometheus' text format.
async fn metrics() -> Response {
    let text = prometheus().render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// The service's routes:
///
/// | route | handler | HTTP cache |
/// |---|---|---|
/// | `GET /products?limit=N` | [`Repo::list_products`] | 60 s, group `products` |
/// | `GET /products/{id}` | [`Repo::get_product`] (404 if missing) | 5 min |
/// | `POST /products` | [`Repo::create_product`] (201) | evicts the group and `/products` |
/// | `PUT /products/{id}` | [`Repo::update_product`] | evicts the group and the path |
/// | `DELETE /products/{id}` | [`Repo::delete_product`] (204) | evicts the group and the path |
/// | `GET /stats` | queries sent, cache counters | none |
/// | `GET /health` | readiness (`200`, or `503` while the cache is not ready) | none |
/// | `GET /metrics` | Prometheus text format | none |
///
/// Every request is served inside `cache.scope(..)`, so the handlers' `#[cached]` calls
/// and the HTTP layers use `cache`, whatever is installed globally: two apps in one process (the tests' Redis
/// and memory runs) each use their own.
pub fn app(repo: Arc<Repo>, cache: Cache) -> Router {
    prometheus();
    let state = AppState {
        repo,
        cache: cache.clone(),
    };
    // One layer per route: they differ in TTL and group.
    let list = Router::new()
        .route("/products", get(list_products))
        .route_layer(
            CacheLayer::new()
                .ttl(Duration::from_secs(60))
                .group("products"),
        );
    let item = Router::new()
        .route("/products/{id}", get(get_product))
        .route_layer(CacheLayer::new().ttl(Duration::from_secs(300)));
    let writes = Router::new()
        .route("/products", post(create_product))
        .route("/products/{id}", put(update_product).delete(delete_product))
        .route_layer(EvictLayer::new().group("products").own_path());
    Router::new()
        .merge(list)
        .merge(item)
        .merge(writes)
        .route("/stats", get(stats))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(state)
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            cache.clone().scope(next.run(request))
        }))
}

/// Reads `DATABASE_URL` (required) and `REDIS_URL` (optional), prepares the database and
/// serves on `LISTEN_ADDR` (default `127.0.0.1:3000`).
#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();

    let repo = match connect_database().await {
        Ok(repo) => Arc::new(repo),
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(1);
        }
    };
    let cache = choose_store().await;
    // Code outside a request (jobs, start-up) uses the same cache.
    cache
        .install()
        .expect("nothing else installs a cache in this example");

    let addr = std::env::var("LISTEN_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = match tokio::net::TcpListener::bind(&addr).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("cannot listen on {addr} ({err}); set LISTEN_ADDR to a free address");
            std::process::exit(1);
        }
    };
    println!("listening on http://{addr} (GET /products, /stats, /health, /metrics)");
    if let Err(err) = axum::serve(listener, app(repo, cache)).await {
        eprintln!("the server stopped: {err}");
        std::process::exit(1);
    }
}

/// How to get a `DATABASE_URL`, for the messages below.
const DATABASE_URL_HELP: &str = "DATABASE_URL must point at a PostgreSQL database, e.g.\n  \
    DATABASE_URL=postgres://postgres:secret@127.0.0.1:5432/postgres\n\
    To get one: `docker run -d -e POSTGRES_PASSWORD=secret -p 5432:5432 postgres`, or\n  \
    `apt-get install postgresql` and a user with a password (`sudo -u postgres psql`).";

/// Connects to `DATABASE_URL` and migrates; on failure, the message to exit with.
async fn connect_database() -> Result<Repo, String> {
    let url = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => url,
        _ => return Err(format!("DATABASE_URL is not set.\n{DATABASE_URL_HELP}")),
    };
    let repo = Repo::connect(&url)
        .await
        .map_err(|err| format!("cannot connect to DATABASE_URL: {err}\n{DATABASE_URL_HELP}"))?;
    repo.migrate()
        .await
        .map_err(|err| format!("cannot create the products table at DATABASE_URL: {err}"))?;
    println!("database: PostgreSQL at DATABASE_URL, table products ready");
    Ok(repo)
}

/// Redis when `REDIS_URL` is set, else the in-process store. If Redis cannot be reached
/// at start-up, the service does not start (unless `REDCACHE_LAZY=true`, which starts it
/// uncached until Redis answers): a fallback to this process's own store would let
/// several instances each keep what the others' writes have evicted.
async fn choose_store() -> Cache {
    if std::env::var_os("REDIS_URL").is_some() {
        let config = redcache::Config::from_env();
        let target = config.redacted_target();
        match Cache::connect(config).await {
            Ok(cache) => {
                println!("store: Redis at {target}");
                return cache;
            }
            Err(err) => {
                eprintln!("store: Redis at REDIS_URL is not usable: {err}");
                eprintln!(
                    "       start Redis, unset REDIS_URL for the in-process store, or set \
                     REDCACHE_LAZY=true to start uncached until Redis answers"
                );
                std::process::exit(1);
            }
        }
    } else {
        println!("store: in-process memory (set REDIS_URL=redis://127.0.0.1:6379 to use Redis)");
    }
    Cache::memory()
}
