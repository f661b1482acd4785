//! Procedural macros of [redcache](https://docs.rs/redcache). Use them through the
//! `redcache` crate: generated code names `::redcache::__private`.
//!
//! # Examples
//!
//! ```
//! #[redcache::cached(prefix = "user:name", ttl = 900)]
//! async fn user_name(id: u64) -> Option<String> {
//!     Some(format!("user {id}"))
//! }
//! ```
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]

use proc_macro::TokenStream;

mod attr;
mod error;
mod expand;
mod item;

/// Caches an `async fn` in Redis. See the `redcache` crate documentation for the options.
///
/// # Examples
///
/// ```
/// #[redcache::cached(ttl = 60, skip(verbose))]
/// async fn square(x: u64, verbose: bool) -> u64 {
///     x * x
/// }
/// ```
#[proc_macro_attribute]
pub fn cached(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::cached(args.into(), item.into()).into()
}
