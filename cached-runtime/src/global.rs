//! What the program calls without a handle: `init`, `stats`, and invalidation of groups
//! and prefixes in the cache in use here (scoped, else global).

use crate::cache::Cache;
use crate::stats::Stats;
use crate::{Config, Error, Result};
use std::sync::atomic::{AtomicBool, Ordering};

/// Logs, once per process, that `#[cached]` ran without a cache.
pub(crate) fn warn_not_initialized() {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            "redcache: no cache installed; #[cached] functions run uncached. Call \
             redcache::init(Config::from_env()) at startup"
        );
    }
}

/// Connects to Redis with `config` and installs the cache globally.
///
/// # Errors
///
/// As [`Cache::connect`] and [`Cache::install`].
///
/// # Examples
///
/// ```no_run
/// # #[tokio::main] async fn main() -> Result<(), redcache::Error> {
/// redcache::init(redcache::Config::from_env()).await?;
/// # Ok(()) }
/// ```
pub async fn init(config: Config) -> Result<()> {
    // Refused before connecting: a second `init` would otherwise wait out the connect
    // timeout (or open a connection only to drop it) to say so.
    if Cache::installed() {
        return Err(Error::AlreadyInitialized);
    }
    Cache::connect(config).await?.install()
}

/// The counters of the cache in use here (scoped, else global); all zero when there is
/// none.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let cache = redcache::Cache::memory();
/// let stats = cache.scope(async { redcache::stats() }).await;
/// assert_eq!(stats.hits, 0);
/// # }
/// ```
pub fn stats() -> Stats {
    Cache::current().map(|c| c.stats()).unwrap_or_default()
}

/// The counters of each prefix of the cache in use here (scoped, else global); empty when
/// there is none. See [`Cache::stats_by_prefix`].
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let cache = redcache::Cache::memory();
/// assert!(cache.scope(async { redcache::stats_by_prefix() }).await.is_empty());
/// # }
/// ```
pub fn stats_by_prefix() -> Vec<(String, Stats)> {
    Cache::current()
        .map(|c| c.stats_by_prefix())
        .unwrap_or_default()
}

/// Invalidates every entry of an eviction group in the cache in use (scoped, else
/// global). See [`Cache::invalidate_group`].
///
/// # Errors
///
/// [`Error::NotInitialized`] when there is no cache; a store fault; [`Error::Config`] for
/// a name no group can have.
///
/// # Examples
///
/// ```no_run
/// # async fn f() -> Result<(), redcache::Error> {
/// redcache::invalidate_group("products").await?;
/// # Ok(()) }
/// ```
pub async fn invalidate_group(group: &str) -> Result<()> {
    current()?.invalidate_group(group).await
}

/// Invalidates every entry carrying `tag` in the cache in use (scoped, else global). See
/// [`Cache::invalidate_tag`].
///
/// # Errors
///
/// [`Error::NotInitialized`] when there is no cache; a store fault.
///
/// # Examples
///
/// ```no_run
/// # async fn f() -> Result<(), redcache::Error> {
/// redcache::invalidate_tag("user:42").await?;
/// # Ok(()) }
/// ```
pub async fn invalidate_tag(tag: &str) -> Result<()> {
    current()?.invalidate_tag(tag).await
}

/// Removes every entry under a key prefix in the cache in use (scoped, else global); how
/// many. See [`Cache::invalidate_prefix`].
///
/// # Errors
///
/// [`Error::NotInitialized`] when there is no cache; a store fault.
///
/// # Examples
///
/// ```no_run
/// # async fn f() -> Result<(), redcache::Error> {
/// let removed: u64 = redcache::invalidate_prefix("user:profile").await?;
/// # Ok(()) }
/// ```
pub async fn invalidate_prefix(prefix: &str) -> Result<u64> {
    current()?.invalidate_prefix(prefix).await
}

/// The cache in use here, or [`Error::NotInitialized`].
pub(crate) fn current() -> Result<Cache> {
    Cache::current().ok_or(Error::NotInitialized)
}
