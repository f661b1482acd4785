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
use std::time::Duration;

/// One event of a cache, for `prefix` if it belongs to one.
pub(crate) fn record(prefix: Option<&str>, event: Event) {
    let prefix = || prefix.unwrap_or_default().to_owned();
    match event {
        Event::Hit => request(prefix(), "hit", 1),
        Event::NullHit => request(prefix(), "null_hit", 1),
        Event::LocalHit { .. } => request(prefix(), "local_hit", 1),
        Event::Miss => request(prefix(), "miss", 1),
        Event::Stale => request(prefix(), "stale", 1),
        Event::Misses(n) => request(prefix(), "miss", n),
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

fn request(prefix: String, result: &'static str, n: u64) {
    metrics::counter!("redcache_requests_total", "prefix" => prefix, "result" => result)
        .increment(n);
}

/// A fault, by kind.
pub(crate) fn fault(err: &Error) {
    metrics::counter!("redcache_faults_total", "kind" => err.kind()).increment(1);
}

/// The breaker's state after an operation.
pub(crate) fn breaker(open: bool) {
    metrics::gauge!("redcache_breaker_open").set(if open { 1.0 } else { 0.0 });
}

/// One `#[cached]` call or HTTP request through the layer: how long it took, by how it was
/// answered.
pub(crate) fn call(prefix: impl Into<metrics::SharedString>, served: Served, took: Duration) {
    metrics::histogram!(
        "redcache_call_duration_seconds",
        "prefix" => prefix.into(),
        "result" => served.as_str()
    )
    .record(took.as_secs_f64());
}
