//! Cache async functions in Redis with one attribute.
//!
//! [`#[cached]`](cached) turns an `async fn` into cache-aside: the first call runs the body
//! and stores the result as JSON under a stable key; later calls with the same arguments are
//! answered from the cache until the entry expires. `None` is cached for a shorter time,
//! `Err` never, and a cache fault never fails the call (the body runs).
//!
//! # Examples
//!
//! The in-process store, scoped to one block (in a service, call [`init`] once at start-up
//! instead, with [`Config::from_env`]):
//!
//! ```
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
//! struct UserProfile {
//!     id: u64,
//!     name: String,
//! }
//!
//! #[redcache::cached(prefix = "user:profile", ttl = 900)]
//! async fn get_user_profile(user_id: u64) -> Option<UserProfile> {
//!     // The database query: runs on a miss only.
//!     (user_id == 42).then(|| UserProfile { id: 42, name: "Ada".into() })
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let cache = redcache::Cache::memory();
//! cache
//!     .scope(async {
//!         let first = get_user_profile(42).await; // miss: the body runs
//!         let second = get_user_profile(42).await; // hit
//!         assert_eq!(first, second);
//!         assert_eq!(get_user_profile(7).await, None); // a None is cached too
//!     })
//!     .await;
//!
//! let stats = cache.stats();
//! assert_eq!((stats.misses, stats.hits, stats.stores), (2, 1, 2));
//! # }
//! ```
//!
//! With Redis:
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> Result<(), redcache::Error> {
//! // REDIS_URL (or REDIS_HOST/REDIS_PORT/...), REDCACHE_* tunables.
//! redcache::init(redcache::Config::from_env()).await?;
//! # Ok(()) }
//! ```
//!
//! # Guide
//!
//! The README is the full guide; in short:
//!
//! - **Options** ([`cached`], with a section and an example for each; README § Options
//!   in one table): `prefix` (default `module_path!()::fn_name`), `ttl` (default 300 s),
//!   `jitter` (default `ttl / 10`), `null_ttl` (default 60 s, at most `ttl`; 0: `None` not
//!   cached),
//!   `skip(..)`, `key = expr`, `output`, `group`, `lock` / `lock_ms`, `early_refresh`,
//!   `in_trait_impl`.
//! - **Function and return shapes** (README § Function shapes, § Return shapes): free
//!   functions, `&self`/`Arc<Self>` methods (the receiver is not in the key, `Self`'s type
//!   name is), generic functions; `T`, `Option<T>`, `Result<T, E>`,
//!   `Result<Option<T>, E>` (an `Err` is never cached).
//! - **Configuration** (README § Configuration): [`Config::builder`] and
//!   [`Config::from_env`]; [`init`], [`Cache::connect`], [`Cache::memory`],
//!   [`Cache::install`], [`Cache::scope`].
//! - **Keys and values** (README § Keys and values): `[{namespace}:]{prefix}:{md5_hex}` over
//!   the canonical JSON of the key arguments; values are `{"v":1,"d":..}` /
//!   `{"v":1,"none":true}`; TTL is `ttl + rand(0..=jitter)` seconds.
//! - **Failure semantics** (README § Failure semantics): operation timeout, fail-open,
//!   circuit breaker, single flight; counted in [`stats()`].
//! - **Programmatic API** (README § Programmatic API): [`Cache::get`], [`Cache::set`],
//!   [`Cache::delete`], [`Cache::ttl`], [`Cache::get_or_insert_with`].
//! - **HTTP caching** (feature `http`, README § HTTP caching): `http::CacheLayer` in front
//!   of axum/tower routes (ETag, `304`, `Cache-Control`, `Age`, `X-Cache`),
//!   `http::EvictLayer` for write routes, `http::invalidate_path`.
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]

pub use cached_macros::{cached, evicts, invalidate, key, put};
pub use cached_runtime::{
    init, invalidate_group, invalidate_prefix, invalidate_tag, stats, stats_by_prefix, Cache,
    Codec, Config, ConfigBuilder, Error, Health, LastFault, Result, Stats,
};

#[cfg(feature = "http")]
pub use cached_runtime::http;

/// What `#[cached]`-generated code calls. Not public API: it may change in any release.
#[doc(hidden)]
pub mod __private {
    pub use cached_runtime::private::*;
}

/// The README's Rust blocks, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
