//! With the `metrics` feature: what a cache does, through the `metrics` facade, so the
//! application picks the exporter (Prometheus, OpenTelemetry, statsd). Labels are the
//! function's prefix and the result or the fault's kind, never a key: the number of series
//! is bounded by the number of cached functions.
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `redcache_requests_total` | counter | `prefix`, `result` = `hit`, `local_hit`, `null_hit`, `miss`, `stale` |
//! | `redcache_stores_total` | counter | `prefix` |
//! | `redcache_conflicts_total` | counter | `prefix` |
//! | `redcache_refreshes_total` | counter | `prefix` |
//! | `redcache_lock_timeouts_total` | counter | `prefix` |
//! | `redcache_invalidations_total` | counter | none |
//! | `redcache_faults_total` | counter | `kind` |
//! | `redcache_skipped_total` | counter | none |
//! | `redcache_breaker_open` | gauge | none (1 open, 0 closed) |
//! | `redcache_call_duration_seconds` | histogram | `prefix`, `result` = `hit`, `local_hit`, `null_hit`, `miss`, `refresh`, `fault`, `stale` |

use crate::stats::{Event, Served};
use crate::Error;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Mutex, PoisonError};
use tokio::time::Instant;

/// One event of a cache, for `prefix` if it belongs to one.
pub(crate) fn record(prefix: Option<&str>, event: Event) {
    // The per-call results, through this thread's handles.
    let result = match event {
        Event::Hit => Some((0, 1)),
        Event::LocalHit { .. } => Some((1, 1)),
        Event::NullHit => Some((2, 1)),
        Event::Miss => Some((3, 1)),
        Event::Misses(n) => Some((3, n)),
        Event::Stale => Some((4, 1)),
        _ => None,
    };
    if let Some((result, n)) = result {
        return request_of(prefix.unwrap_or_default(), result, n);
    }
    let prefix = || prefix.unwrap_or_default().to_owned();
    match event {
        Event::Hit
        | Event::NullHit
        | Event::LocalHit { .. }
        | Event::Miss
        | Event::Stale
        | Event::Misses(_) => {}
        Event::Store => {
            metrics::counter!("redcache_stores_total", "prefix" => prefix()).increment(1)
        }
        Event::Conflict => {
            metrics::counter!("redcache_conflicts_total", "prefix" => prefix()).increment(1)
        }
        Event::Refresh => {
            metrics::counter!("redcache_refreshes_total", "prefix" => prefix()).increment(1)
        }
        Event::LockTimeout => {
            metrics::counter!("redcache_lock_timeouts_total", "prefix" => prefix()).increment(1)
        }
        Event::Invalidations(n) => metrics::counter!("redcache_invalidations_total").increment(n),
        Event::Skipped => metrics::counter!("redcache_skipped_total").increment(1),
        // Counted by kind, in `fault`.
        Event::Fault => {}
    }
}

/// The results `redcache_requests_total` counts, in [`Handles::requests`] order.
const RESULTS: [&str; 5] = ["hit", "local_hit", "null_hit", "miss", "stale"];

/// How many uses a thread's handles serve before they are asked of the recorder again (so
/// that a recorder that drops idle series, as Prometheus's exporter can, gets them back).
const REFRESH_AFTER: u32 = 4096;

/// The handles of one prefix's per-call metrics, as one recorder gave them to this thread:
/// a hit then costs an atomic add (and a histogram sample), not a registry lookup with a
/// key built (and allocated) each time.
struct Handles {
    /// The recorder they came from (its address): another recorder gets its own.
    recorder: usize,
    prefix: Box<str>,
    requests: [Option<metrics::Counter>; RESULTS.len()],
    durations: [Option<metrics::Histogram>; SERVED.len()],
    uses: u32,
}

/// Every way a call is answered, in [`Handles::durations`] order.
const SERVED: [Served; 7] = [
    Served::Hit,
    Served::LocalHit,
    Served::NullHit,
    Served::Miss,
    Served::Refresh,
    Served::Fault,
    Served::Stale,
];

/// The recorder in use here (thread-local, else global), by address.
fn recorder() -> usize {
    metrics::with_recorder(|r| std::ptr::from_ref(r).cast::<()>() as usize)
}

/// Runs `f` with this thread's handles of `prefix` for the recorder in use.
fn with_handles<T>(prefix: &str, f: impl FnOnce(&mut Handles) -> T) -> T {
    thread_local! {
        /// The handles, and which of them was used last.
        static HANDLES: std::cell::RefCell<(Vec<Handles>, usize)> = const { std::cell::RefCell::new((Vec::new(), 0)) };
    }
    const KEPT: usize = 32;
    let recorder = recorder();
    HANDLES.with(|handles| {
        let (all, last) = &mut *handles.borrow_mut();
        let of = |h: &Handles| h.recorder == recorder && *h.prefix == *prefix;
        // A call's counter and its duration are asked for one after the other.
        let at = match all.get(*last).filter(|h| of(h)).map(|_| *last) {
            Some(at) => at,
            None => match all.iter().position(of) {
                Some(at) => at,
                None => {
                    if all.len() == KEPT {
                        all.remove(0);
                    }
                    all.push(Handles {
                        recorder,
                        prefix: prefix.into(),
                        requests: Default::default(),
                        durations: Default::default(),
                        uses: 0,
                    });
                    all.len() - 1
                }
            },
        };
        *last = at;
        let handles = &mut all[at];
        handles.uses += 1;
        if handles.uses > REFRESH_AFTER {
            handles.uses = 0;
            handles.requests = Default::default();
            handles.durations = Default::default();
        }
        f(handles)
    })
}

/// One call of `prefix` answered with `result` (one of [`RESULTS`]), `n` times.
fn request_of(prefix: &str, result: usize, n: u64) {
    with_handles(prefix, |h| {
        h.requests[result]
            .get_or_insert_with(|| {
                metrics::counter!(
                    "redcache_requests_total",
                    "prefix" => prefix.to_owned(),
                    "result" => RESULTS[result]
                )
            })
            .increment(n)
    });
}

/// A fault, by kind.
pub(crate) fn fault(err: &Error) {
    metrics::counter!("redcache_faults_total", "kind" => err.kind()).increment(1);
}

/// How many caches have their breaker open now, by the recorder (its address) each was
/// counted under: `redcache_breaker_open` is 1 while any cache of its recorder has. One
/// unlabelled gauge for every cache, so each sets it from this count, never from its own
/// breaker alone (a healthy cache would set it back to 0 while another's stays open). By
/// recorder, as the gauge is: a process has one, but a thread may have its own.
///
/// Held while counting and setting: each operation that changes a breaker sets the gauge
/// after its change, reading the count under the lock, so the last set is the latest
/// count.
static OPEN_BREAKERS: Mutex<Vec<(usize, usize)>> = Mutex::new(Vec::new());

/// Adds `by` (+1 or -1) to the count of open breakers of `recorder`; the count now.
fn count_open(counts: &mut Vec<(usize, usize)>, recorder: usize, by: isize) -> usize {
    let at = counts.iter().position(|(r, _)| *r == recorder);
    let now = at.map_or(0, |at| counts[at].1).saturating_add_signed(by);
    match (at, now) {
        (Some(at), 0) => drop(counts.swap_remove(at)),
        (Some(at), now) => counts[at].1 = now,
        (None, 0) => {}
        (None, now) => counts.push((recorder, now)),
    }
    now
}

/// `redcache_breaker_open`, on the recorder in use: 1 while `any` breaker is open.
fn set_breaker_gauge(any: bool) {
    metrics::gauge!("redcache_breaker_open").set(if any { 1.0 } else { 0.0 });
}

/// What a cache last told `redcache_breaker_open`, and to which recorder: an operation
/// sets the gauge only when it changed the breaker, or the recorder differs from the one
/// last set, so the operations of a healthy store read two shared words and write none (a
/// set on each one was a registry lookup, and every core writing one cache line).
#[derive(Default)]
pub(crate) struct BreakerGauge {
    /// The recorder it was set on (its address), 0 before the first set.
    recorder: AtomicUsize,
    /// Whether this cache's breaker was open at that set: counted in [`OPEN_BREAKERS`]
    /// under that recorder.
    open: AtomicBool,
}

impl BreakerGauge {
    /// The breaker's state after an operation, which `changed` it or not; `open` reads it.
    pub(crate) fn report(&self, changed: bool, open: impl Fn() -> bool) {
        thread_local! {
            static UNTIL_REFRESH: std::cell::Cell<u32> = const { std::cell::Cell::new(REFRESH_AFTER) };
        }
        // Every so many operations a thread sets it anyway, for a recorder that drops
        // series left unchanged for a while.
        let refresh = UNTIL_REFRESH.with(|left| {
            let now = left.get().saturating_sub(1);
            left.set(if now == 0 { REFRESH_AFTER } else { now });
            now == 0
        });
        let recorder = recorder();
        if !changed
            && !refresh
            && self.recorder.load(Relaxed) == recorder
            && self.open.load(Relaxed) == open()
        {
            return;
        }
        let mut counts = OPEN_BREAKERS.lock().unwrap_or_else(PoisonError::into_inner);
        let state = open();
        if self.open.load(Relaxed) {
            count_open(&mut counts, self.recorder.load(Relaxed), -1);
        }
        set_breaker_gauge(count_open(&mut counts, recorder, isize::from(state)) > 0);
        self.open.store(state, Relaxed);
        self.recorder.store(recorder, Relaxed);
    }
}

impl Drop for BreakerGauge {
    /// A cache dropped with its breaker open no longer counts (and the gauge says so, if
    /// the recorder it was counted under is the one in use).
    fn drop(&mut self) {
        if !*self.open.get_mut() {
            return;
        }
        let mut counts = OPEN_BREAKERS.lock().unwrap_or_else(PoisonError::into_inner);
        let counted = *self.recorder.get_mut();
        let left = count_open(&mut counts, counted, -1);
        if recorder() == counted {
            set_breaker_gauge(left > 0);
        }
    }
}

/// The time since a call began, as a histogram sample: read off the clock only when the
/// histogram takes the sample. A histogram of no recorder (`metrics`' no-op) never asks,
/// so with none installed a call pays no clock read for its duration.
struct Since(Instant);

impl metrics::IntoF64 for Since {
    fn into_f64(self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }
}

/// One `#[cached]` call or HTTP request through the layer, begun at `started`: how long it
/// took, by how it was answered.
pub(crate) fn call(prefix: &str, served: Served, started: Instant) {
    let at = SERVED.iter().position(|s| *s == served).unwrap_or_default();
    with_handles(prefix, |h| {
        h.durations[at]
            .get_or_insert_with(|| {
                metrics::histogram!(
                    "redcache_call_duration_seconds",
                    "prefix" => prefix.to_owned(),
                    "result" => served.as_str()
                )
            })
            .record(Since(started))
    });
}
