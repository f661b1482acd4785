//! Store health: the circuit breaker, rate-limited fault logs, the last fault, and the
//! [`Health`] report readiness probes read.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Shortest gap between two fault log lines of one cache.
const LOG_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub(crate) struct Breaker {
    epoch: Instant,
    threshold: u32,
    cooldown_ms: u64,
    consecutive: AtomicU32,
    /// Milliseconds since `epoch` until which the store is skipped; 0 when closed.
    open_until: AtomicU64,
    last_log: AtomicU64,
    suppressed: AtomicU64,
}

impl Breaker {
    pub(crate) fn new(threshold: u32, cooldown: Duration) -> Self {
        Breaker {
            epoch: Instant::now(),
            threshold,
            cooldown_ms: u64::try_from(cooldown.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
            consecutive: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            last_log: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Milliseconds since `epoch`, never 0.
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1)
    }

    /// Whether the next store operation may go ahead. After the cool-down exactly one caller
    /// is let through to probe; the others keep skipping until it reports.
    pub(crate) fn allow(&self) -> bool {
        let until = self.open_until.load(Relaxed);
        if until == 0 {
            return true;
        }
        let now = self.now();
        now >= until
            && self
                .open_until
                .compare_exchange(
                    until,
                    now.saturating_add(self.cooldown_ms),
                    Relaxed,
                    Relaxed,
                )
                .is_ok()
    }

    pub(crate) fn is_open(&self) -> bool {
        self.open_until.load(Relaxed) != 0
    }

    /// An operation succeeded; whether that closed the breaker.
    pub(crate) fn success(&self) -> bool {
        if self.consecutive.load(Relaxed) != 0 {
            self.consecutive.store(0, Relaxed);
        }
        if self.open_until.load(Relaxed) != 0 {
            self.open_until.store(0, Relaxed);
            tracing::info!("redcache: the store answers again; circuit breaker closed");
            return true;
        }
        false
    }

    /// An operation faulted; whether that opened the breaker.
    pub(crate) fn failure(&self) -> bool {
        let n = self.consecutive.fetch_add(1, Relaxed).saturating_add(1);
        if self.threshold > 0 && n >= self.threshold {
            let until = self.now().saturating_add(self.cooldown_ms);
            if self.open_until.swap(until, Relaxed) == 0 {
                tracing::warn!(
                    faults = n,
                    cooldown_ms = self.cooldown_ms,
                    "redcache: circuit breaker open; calls skip the store for the cool-down"
                );
                return true;
            }
        }
        false
    }

    /// Whether a fault may be logged now; if so, how many were not logged since the last.
    pub(crate) fn may_log(&self) -> Option<u64> {
        let now = self.now();
        let last = self.last_log.load(Relaxed);
        let gap = u64::try_from(LOG_EVERY.as_millis()).unwrap_or(u64::MAX);
        if (last == 0 || now.saturating_sub(last) >= gap)
            && self
                .last_log
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok()
        {
            Some(self.suppressed.swap(0, Relaxed))
        } else {
            self.suppressed.fetch_add(1, Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_and_closes_on_success() {
        let h = Breaker::new(3, Duration::from_secs(3600));
        h.failure();
        h.failure();
        assert!(h.allow() && !h.is_open());
        h.failure();
        assert!(h.is_open() && !h.allow());
        h.success();
        assert!(h.allow() && !h.is_open());
    }

    #[test]
    fn one_probe_after_cooldown() {
        let h = Breaker::new(1, Duration::from_millis(1));
        h.failure();
        while h.now() < h.open_until.load(Relaxed) {
            std::hint::spin_loop();
        }
        assert!(h.allow(), "the probe goes through");
        assert!(!h.allow(), "others keep skipping while it runs");
        h.failure();
        assert!(h.is_open(), "a failed probe re-opens at once");
    }

    #[test]
    fn threshold_zero_never_opens() {
        let h = Breaker::new(0, Duration::from_secs(1));
        for _ in 0..100 {
            h.failure();
        }
        assert!(h.allow() && !h.is_open());
    }

    #[test]
    fn logs_are_rate_limited() {
        let h = Breaker::new(0, Duration::from_secs(1));
        assert_eq!(h.may_log(), Some(0));
        assert_eq!(h.may_log(), None);
        assert_eq!(h.may_log(), None);
        assert_eq!(h.suppressed.load(Relaxed), 2);
    }
}

/// How one cache's store is doing, for readiness probes: from
/// [`Cache::health`](crate::Cache::health).
///
/// # Examples
///
/// ```
/// let health = redcache::Cache::memory().health();
/// assert!(health.is_ready() && health.connected);
/// assert!(health.last_fault.is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Health {
    /// Whether the store is Redis (else the in-process store, always ready).
    pub remote: bool,
    /// Whether the store holds a working connection, as far as its operations tell. For a
    /// standalone or Sentinel store: false before a lazy cache's first operation
    /// connects, from an operation that found the connection dropped (or a check after
    /// timeouts in a row found it answering nothing) until it is replaced, and after the
    /// master moved until the next operation reconnects. A
    /// connection that drops while nothing is asked of it is seen by the next operation.
    /// A cluster's connection replaces its nodes' connections itself: it counts as
    /// connected from the start (its faults tell of a node that does not answer). Always
    /// true for the in-process store.
    pub connected: bool,
    /// The connection dropped (or failed to be made) and is not replaced yet.
    pub(crate) link_down: bool,
    /// Whether the circuit breaker is open: calls skip Redis and run their bodies.
    pub breaker_open: bool,
    /// Store faults in a row since the last success (the breaker opens at its threshold).
    pub consecutive_faults: u32,
    /// The most recent fault, if any: one a call went on without the cache through, or a
    /// store fault an operation returned to its caller (such as `Cache::get` or
    /// `invalidate!`).
    pub last_fault: Option<LastFault>,
}

impl Health {
    /// Whether calls are served by the cache: the breaker is closed, the last operation
    /// succeeded, and no operation found the connection down (a cache that has no
    /// connection only because none was asked for yet is ready: its next call connects).
    /// Calls still succeed either way (they fail open).
    ///
    /// It tells what the last operations found: it does not ask Redis. A probe that takes
    /// the service out of rotation when it is false may leave no call to find Redis back;
    /// such a probe should make one cache operation when it is not ready (as the example
    /// service's `/health` does with [`Cache::get`](crate::Cache::get); with the breaker
    /// open, that is one try per cool-down) and read the health again.
    pub fn is_ready(&self) -> bool {
        !self.breaker_open && self.consecutive_faults == 0 && !self.link_down
    }
}

/// A fault as [`Health`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LastFault {
    /// What went wrong (the error's message: never a password or cached data).
    pub error: String,
    /// When.
    pub at: std::time::SystemTime,
}

impl Breaker {
    /// Store faults in a row since the last success.
    pub(crate) fn consecutive(&self) -> u32 {
        self.consecutive.load(Relaxed)
    }
}
