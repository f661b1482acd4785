//! Counters of what the cache did.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A snapshot of one cache's counters, from [`stats`](crate::stats) or
/// [`Cache::stats`](crate::Cache::stats).
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let cache = redcache::Cache::memory();
/// let _: u32 = cache.get_or_insert_with("k", std::time::Duration::from_secs(60), || async { 1 }).await;
/// let _: u32 = cache.get_or_insert_with("k", std::time::Duration::from_secs(60), || async { 1 }).await;
/// let stats = cache.stats();
/// assert_eq!((stats.misses, stats.hits, stats.stores), (1, 1, 1));
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Calls answered from the cache with a value.
    pub hits: u64,
    /// Reads of entries the local tier served without a round trip to Redis
    /// ([`Config::local_capacity`](crate::Config::local_capacity)).
    pub local_hits: u64,
    /// Calls that found no usable entry and ran the body.
    pub misses: u64,
    /// Calls answered from the cache with a cached `None`.
    pub null_hits: u64,
    /// Entries written.
    pub stores: u64,
    /// Entries removed by invalidation (and group invalidations).
    pub invalidations: u64,
    /// Misses whose result was not stored because the entry was invalidated or rewritten
    /// while the body ran (or the body outlasted [`Config::max_fill_time`]).
    ///
    /// [`Config::max_fill_time`]: crate::Config::max_fill_time
    pub conflicts: u64,
    /// Hits that early refresh (XFetch) picked to recompute before expiry.
    pub refreshes: u64,
    /// Waits for another process's fill lease that ran out (the caller then computed).
    pub lock_timeouts: u64,
    /// Store faults: errors, timeouts, undecodable or oversized values.
    pub faults: u64,
    /// Store operations skipped because the circuit breaker was open.
    pub skipped: u64,
    /// Whether the circuit breaker is open now.
    pub breaker_open: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) null_hits: AtomicU64,
    pub(crate) stores: AtomicU64,
    pub(crate) invalidations: AtomicU64,
    pub(crate) conflicts: AtomicU64,
    pub(crate) refreshes: AtomicU64,
    pub(crate) lock_timeouts: AtomicU64,
    pub(crate) faults: AtomicU64,
    pub(crate) skipped: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub(crate) fn snapshot(&self, breaker_open: bool, local_hits: u64) -> Stats {
        Stats {
            hits: self.hits.load(Relaxed),
            local_hits,
            misses: self.misses.load(Relaxed),
            null_hits: self.null_hits.load(Relaxed),
            stores: self.stores.load(Relaxed),
            invalidations: self.invalidations.load(Relaxed),
            conflicts: self.conflicts.load(Relaxed),
            refreshes: self.refreshes.load(Relaxed),
            lock_timeouts: self.lock_timeouts.load(Relaxed),
            faults: self.faults.load(Relaxed),
            skipped: self.skipped.load(Relaxed),
            breaker_open,
        }
    }
}
