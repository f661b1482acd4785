//! Cache async functions in Redis with one attribute.
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]

pub use cached_macros::cached;
pub use cached_runtime::{init, stats, Cache, Config, ConfigBuilder, Error, Result, Stats};

/// What `#[cached]`-generated code calls. Not public API: it may change in any release.
#[doc(hidden)]
pub mod __private {
    pub use cached_runtime::private::*;
}
