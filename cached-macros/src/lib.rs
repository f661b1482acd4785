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
mod helpers;
mod item;
mod valid;

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

/// Invalidates the entries of `#[cached]` calls after the function's body succeeded (an
/// `Ok`, or any value when it returns no `Result`).
///
/// # Examples
///
/// ```
/// #[redcache::cached(ttl = 600)]
/// async fn user_name(id: u64) -> Option<String> {
///     Some(format!("user {id}"))
/// }
///
/// #[redcache::evicts(user_name(id))]
/// async fn rename(id: u64, name: String) -> Result<(), std::io::Error> {
///     // UPDATE users SET name = $2 WHERE id = $1
///     Ok(())
/// }
/// ```
#[proc_macro_attribute]
pub fn evicts(args: TokenStream, item: TokenStream) -> TokenStream {
    helpers::evicts(args.into(), item.into()).into()
}

/// Invalidates the entry of one call of a `#[cached]` function: a future of
/// `redcache::Result<bool>`.
///
/// # Examples
///
/// ```
/// #[redcache::cached(ttl = 600)]
/// async fn user_name(id: u64) -> Option<String> {
///     Some(format!("user {id}"))
/// }
///
/// # async fn f() -> redcache::Result<()> {
/// let removed: bool = redcache::invalidate!(user_name(42)).await?;
/// # Ok(()) }
/// ```
#[proc_macro]
pub fn invalidate(input: TokenStream) -> TokenStream {
    helpers::call_helper(input.into(), "invalidate", "invalidate").into()
}

/// Stores a value as the result of one call of a `#[cached]` function (write-through): a
/// future of `redcache::Result<()>`.
///
/// # Examples
///
/// ```
/// #[redcache::cached(ttl = 600)]
/// async fn user_name(id: u64) -> Option<String> {
///     Some(format!("user {id}"))
/// }
///
/// # async fn f() -> redcache::Result<()> {
/// redcache::put!(user_name(42), Some("Ada".to_string())).await?;
/// # Ok(()) }
/// ```
#[proc_macro]
pub fn put(input: TokenStream) -> TokenStream {
    helpers::put(input.into()).into()
}

/// The exact key of one call of a `#[cached]` function, as a `String`.
///
/// # Examples
///
/// ```
/// #[redcache::cached(prefix = "user:name", ttl = 600)]
/// async fn user_name(id: u64) -> Option<String> {
///     Some(format!("user {id}"))
/// }
///
/// # fn main() {
/// let key: String = redcache::key!(user_name(42));
/// assert_eq!(key, "user:name:b358e7d6ea3cae2a7ca29ee59888f401");
/// # }
/// ```
#[proc_macro]
pub fn key(input: TokenStream) -> TokenStream {
    helpers::call_helper(input.into(), "key", "key").into()
}
