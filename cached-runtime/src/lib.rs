//! Runtime of [redcache](https://docs.rs/redcache): stores, keys, codec, TTLs, single
//! flight, stats. Use it through the `redcache` crate, which re-exports everything public.
//!
//! # Examples
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let cache = cached_runtime::Cache::memory();
//! let v: u32 = cache
//!     .get_or_insert_with("k", std::time::Duration::from_secs(5), || async { 7 })
//!     .await;
//! assert_eq!(v, 7);
//! # }
//! ```
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]

mod batch;
mod client;
mod codec;
mod config;
mod error;
mod flight;
mod health;
mod invalidate;
mod key;
mod stats;
mod store;
mod ttl;

#[doc(hidden)]
pub mod private;

pub use client::{init, stats, Cache};
pub use config::{Config, ConfigBuilder};
pub use error::{Error, Result};
pub use invalidate::{invalidate_group, invalidate_prefix};
pub use stats::Stats;
