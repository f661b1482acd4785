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

/// Awaits a future in a tracing span: where the future is built when no subscriber wants
/// the span (the common case), since moving it into the span's wrapper first copies the
/// whole future; in the wrapper otherwise. `$span` is a `&tracing::Span`.
macro_rules! in_span {
    ($span:expr, $future:expr) => {{
        let span: &::tracing::Span = $span;
        match span.is_disabled() {
            true => $future.await,
            false => ::tracing::Instrument::instrument($future, span.clone()).await,
        }
    }};
}

// Modules and the order they use each other in: ARCHITECTURE.md at the repository root.
mod aside;
mod batch;
mod cache;
mod codec;
mod config;
mod core;
mod error;
mod escape;
mod faithful;
mod flight;
mod global;
mod health;
#[cfg(feature = "http")]
pub mod http;
mod invalidate;
mod key;
mod local;
#[cfg(feature = "metrics")]
mod metrics;
mod recent;
mod shape;
mod stats;
mod store;
mod tags;
mod ttl;
mod write;

#[doc(hidden)]
pub mod private;

pub use cache::Cache;
pub use codec::Codec;
pub use config::{Config, ConfigBuilder};
pub use error::{Error, Result};
pub use global::{
    init, invalidate_group, invalidate_prefix, invalidate_tag, stats, stats_by_prefix,
};
pub use health::{Health, LastFault};
pub use stats::Stats;
