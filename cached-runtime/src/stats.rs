//! Counters of what the cache did.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

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
    /// Of the hits and null hits, those the local tier served without a round trip to
    /// Redis ([`Config::local_capacity`](crate::Config::local_capacity)).
    pub local_hits: u64,
    /// Calls that found no usable entry and ran the body. One whose body then failed and
    /// that was answered with the old entry (`stale_if_error`) counts in `stale` too (a
    /// refresh answered so counts in `refreshes` and `stale`).
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
    /// Calls that recomputed an entry they could have been answered with: picked by early
    /// refresh (XFetch) before its expiry, or past its TTL within `stale_ttl`.
    pub refreshes: u64,
    /// Calls answered with an entry past its TTL: while another caller refreshed it
    /// (`stale_ttl`), or because the body failed (`stale_if_error`); and calls whose early
    /// refresh failed, answered with the entry they were refreshing (still valid).
    pub stale: u64,
    /// Waits for another process's fill lease that ran out (the caller then computed).
    pub lock_timeouts: u64,
    /// Store faults: errors, timeouts, undecodable or oversized values.
    pub faults: u64,
    /// Store operations skipped because the circuit breaker was open.
    pub skipped: u64,
    /// Whether the circuit breaker is open now.
    pub breaker_open: bool,
}

impl Stats {
    /// The share of calls answered from the cache (hits, null hits and stale answers over
    /// those and the misses); `None` before any call. A miss answered under
    /// `stale_if_error` after its body failed counts as a miss and a stale answer, so a
    /// service whose every miss fails shows 0.5 while it is answered from old entries.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let cache = redcache::Cache::memory();
    /// assert_eq!(cache.stats().hit_ratio(), None);
    /// for _ in 0..4 {
    ///     let _: u32 = cache.get_or_insert_with("k", std::time::Duration::from_secs(60), || async { 1 }).await;
    /// }
    /// assert_eq!(cache.stats().hit_ratio(), Some(0.75));
    /// # }
    /// ```
    pub fn hit_ratio(&self) -> Option<f64> {
        let served = self.hits + self.null_hits + self.stale;
        let calls = served + self.misses;
        (calls > 0).then(|| served as f64 / calls as f64)
    }
}

/// How a call was answered: the `result` of its span and of its metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Served {
    /// From an entry.
    Hit,
    /// From the local tier's copy of an entry (or of a cached `None`).
    LocalHit,
    /// From a cached `None`.
    NullHit,
    /// By the body, after a miss.
    Miss,
    /// By the entry, refreshed early by this call's body.
    Refresh,
    /// By the body, because the store failed or was skipped.
    Fault,
    /// By an entry past its TTL (`stale_ttl`, `stale_if_error`), or by the entry a failed
    /// early refresh was to replace; after a failed body, by an entry stored meanwhile,
    /// valid or not.
    Stale,
}

impl Served {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Served::Hit => "hit",
            Served::LocalHit => "local_hit",
            Served::NullHit => "null_hit",
            Served::Miss => "miss",
            Served::Refresh => "refresh",
            Served::Fault => "fault",
            Served::Stale => "stale",
        }
    }
}

/// Something a cache did, as its observers hear of it: the counters behind [`Stats`]
/// today (metrics and tracing can listen at the same place, [`Core::record`]).
///
/// [`Core::record`]: crate::core::Core::record
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    Hit,
    NullHit,
    /// A hit the local tier served (a value, or a cached `None` if `null`).
    LocalHit {
        null: bool,
    },
    Miss,
    /// `n` calls or ids missed at once (a batch).
    Misses(u64),
    Store,
    /// `n` entries invalidated.
    Invalidations(u64),
    Conflict,
    Refresh,
    /// A call answered with an entry past its TTL.
    Stale,
    LockTimeout,
    Fault,
    Skipped,
}

/// The counters behind [`Stats`], striped: each thread adds to a stripe of its own (in its
/// own cache line), so that threads counting hits at once do not take turns at one line;
/// a snapshot sums the stripes.
#[derive(Debug)]
pub(crate) struct Counters {
    stripes: Box<[Stripe]>,
}

/// Stripes per set of counters (a power of two).
const STRIPES: usize = 8;

#[derive(Debug, Default)]
#[repr(align(128))]
struct Stripe {
    hits: AtomicU64,
    misses: AtomicU64,
    null_hits: AtomicU64,
    stores: AtomicU64,
    invalidations: AtomicU64,
    conflicts: AtomicU64,
    refreshes: AtomicU64,
    stale: AtomicU64,
    lock_timeouts: AtomicU64,
    faults: AtomicU64,
    skipped: AtomicU64,
    /// Local hits on a value and on a cached `None`: counted once each, here, and added to
    /// `hits` and `null_hits` when read (one add per local hit, not two).
    local_hits: AtomicU64,
    local_null_hits: AtomicU64,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            stripes: (0..STRIPES).map(|_| Stripe::default()).collect(),
        }
    }
}

/// This thread's stripe, given out in turn as threads first count.
fn stripe_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static MINE: usize = NEXT.fetch_add(1, Relaxed) % STRIPES;
    }
    MINE.with(|i| *i)
}

impl Counters {
    pub(crate) fn record(&self, event: Event) {
        let stripe = &self.stripes[stripe_index()];
        let (counter, n) = match event {
            Event::Hit => (&stripe.hits, 1),
            Event::NullHit => (&stripe.null_hits, 1),
            Event::LocalHit { null: false } => (&stripe.local_hits, 1),
            Event::LocalHit { null: true } => (&stripe.local_null_hits, 1),
            Event::Miss => (&stripe.misses, 1),
            Event::Misses(n) => (&stripe.misses, n),
            Event::Store => (&stripe.stores, 1),
            Event::Invalidations(n) => (&stripe.invalidations, n),
            Event::Conflict => (&stripe.conflicts, 1),
            Event::Refresh => (&stripe.refreshes, 1),
            Event::Stale => (&stripe.stale, 1),
            Event::LockTimeout => (&stripe.lock_timeouts, 1),
            Event::Fault => (&stripe.faults, 1),
            Event::Skipped => (&stripe.skipped, 1),
        };
        counter.fetch_add(n, Relaxed);
    }

    pub(crate) fn snapshot(&self, breaker_open: bool) -> Stats {
        let sum = |counter: fn(&Stripe) -> &AtomicU64| {
            self.stripes.iter().map(|s| counter(s).load(Relaxed)).sum()
        };
        let local_hits: u64 = sum(|s| &s.local_hits);
        let local_null_hits: u64 = sum(|s| &s.local_null_hits);
        Stats {
            hits: sum(|s| &s.hits) + local_hits,
            local_hits: local_hits + local_null_hits,
            misses: sum(|s| &s.misses),
            null_hits: sum(|s| &s.null_hits) + local_null_hits,
            stores: sum(|s| &s.stores),
            invalidations: sum(|s| &s.invalidations),
            conflicts: sum(|s| &s.conflicts),
            refreshes: sum(|s| &s.refreshes),
            stale: sum(|s| &s.stale),
            lock_timeouts: sum(|s| &s.lock_timeouts),
            faults: sum(|s| &s.faults),
            skipped: sum(|s| &s.skipped),
            breaker_open,
        }
    }
}
