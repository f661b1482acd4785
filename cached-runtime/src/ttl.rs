//! Time to live with random jitter.

use crate::codec::Format;
use rand::Rng;
use std::time::Duration;

/// How long entries written by one function live.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Policy {
    ttl: Duration,
    jitter_secs: u64,
    /// No jitter was set, so `jitter_secs` is a tenth of `ttl`: a TTL computed from a value
    /// gets a tenth of its own instead.
    jitter_by_default: bool,
    null_ttl: Option<Duration>,
    /// Cross-process fill lock lease.
    lock: Option<Duration>,
    /// XFetch's beta.
    early_refresh: Option<f64>,
    /// How long past its TTL an entry is served while one caller refreshes it.
    stale_ttl: Option<Duration>,
    /// How long past its TTL an entry is served when the body fails.
    stale_if_error: Option<Duration>,
    /// How its entries are written.
    format: Format,
}

impl Policy {
    /// `ttl` seconds plus up to `jitter` whole seconds; `None` cached for `null_ttl` seconds
    /// (0: not cached). A TTL of 0 is raised to 1 s: every entry expires, none is eternal
    /// and none is written already dead.
    pub(crate) fn seconds(ttl: u64, jitter: u64, null_ttl: u64) -> Self {
        Policy {
            ttl: Duration::from_secs(ttl.max(1)),
            jitter_secs: jitter,
            jitter_by_default: false,
            null_ttl: (null_ttl > 0).then(|| Duration::from_secs(null_ttl)),
            lock: None,
            early_refresh: None,
            stale_ttl: None,
            stale_if_error: None,
            format: Format::default(),
        }
    }

    /// With the jitter left to its default, [`default_jitter`]: a tenth of the TTL, also
    /// of a TTL computed from a value ([`value_ttl_from`](Self::value_ttl_from)).
    pub(crate) fn with_default_jitter(mut self) -> Self {
        self.jitter_secs = default_jitter(self.ttl.as_secs());
        self.jitter_by_default = true;
        self
    }

    /// With stale windows, in seconds (0 or `None`: none): `stale_ttl` serves an entry
    /// past its TTL while one caller refreshes it, `stale_if_error` when the body fails.
    pub(crate) fn with_stale(
        mut self,
        stale_ttl: Option<u64>,
        stale_if_error: Option<u64>,
    ) -> Self {
        let window = |s: Option<u64>| s.filter(|s| *s > 0).map(Duration::from_secs);
        self.stale_ttl = window(stale_ttl);
        self.stale_if_error = window(stale_if_error);
        self
    }

    /// Its entries written in `format`.
    pub(crate) fn with_format(mut self, format: Format) -> Self {
        self.format = format;
        self
    }

    /// How its entries are written.
    pub(crate) fn format(&self) -> Format {
        self.format
    }

    pub(crate) fn stale_ttl(&self) -> Option<Duration> {
        self.stale_ttl
    }

    pub(crate) fn stale_if_error(&self) -> Option<Duration> {
        self.stale_if_error
    }

    /// How long an entry is kept in the store past its TTL: the longer stale window.
    pub(crate) fn stale_window(&self) -> Duration {
        self.stale_ttl
            .unwrap_or_default()
            .max(self.stale_if_error.unwrap_or_default())
    }

    /// Whether entries carry their expiry (for early refresh or a stale window).
    pub(crate) fn stamps_expiry(&self) -> bool {
        self.early_refresh.is_some() || !self.stale_window().is_zero()
    }

    /// With a cross-process fill lock of this lease.
    pub(crate) fn with_lock(mut self, lock: Option<Duration>) -> Self {
        self.lock = lock;
        self
    }

    /// With early refresh (XFetch) of this beta.
    pub(crate) fn with_early_refresh(mut self, beta: Option<f64>) -> Self {
        self.early_refresh = beta.filter(|b| *b > 0.0);
        self
    }

    pub(crate) fn lock(&self) -> Option<Duration> {
        self.lock
    }

    pub(crate) fn early_refresh(&self) -> Option<f64> {
        self.early_refresh
    }

    /// Exactly `ttl`, no jitter, no null caching (the programmatic API).
    pub(crate) fn exact(ttl: Duration) -> Self {
        Policy {
            ttl: ttl.max(Duration::from_millis(1)),
            jitter_secs: 0,
            jitter_by_default: false,
            null_ttl: None,
            lock: None,
            early_refresh: None,
            stale_ttl: None,
            stale_if_error: None,
            format: Format::default(),
        }
    }

    /// A fresh TTL for one value: `ttl + rand(0..=jitter)`, so entries written together do
    /// not expire together.
    pub(crate) fn value_ttl(&self) -> Duration {
        let extra = if self.jitter_secs == 0 {
            0
        } else {
            rand::rng().random_range(0..=self.jitter_secs)
        };
        self.ttl.saturating_add(Duration::from_secs(extra))
    }

    /// `base` plus this policy's jitter: a TTL a function computed from its value. Without a
    /// jitter of its own, a tenth of `base` (not of the function's TTL, which may be far
    /// longer than the TTL the value asks for).
    pub(crate) fn value_ttl_from(&self, base: Duration) -> Duration {
        let jitter = if self.jitter_by_default {
            default_jitter(base.as_secs())
        } else {
            self.jitter_secs
        };
        let extra = if jitter == 0 {
            0
        } else {
            rand::rng().random_range(0..=jitter)
        };
        base.max(Duration::from_millis(1))
            .saturating_add(Duration::from_secs(extra))
    }

    /// The TTL of a cached `None`, if `None` is cached.
    pub(crate) fn null_ttl(&self) -> Option<Duration> {
        self.null_ttl
    }
}

/// XFetch (Vattani, Chierichetti, Lowenstein: "Optimal Probabilistic Cache Stampede
/// Prevention", VLDB 2015): recompute now if `now - compute * beta * ln(r) >= expiry`, that
/// is with probability `exp(-time_to_expiry / (compute * beta))`, for `r` uniform in
/// `(0, 1]`. Hot keys are recomputed by one early caller instead of by every caller at
/// expiry; the longer the computation, the earlier.
pub(crate) fn should_refresh(time_to_expiry_ms: f64, compute_ms: f64, beta: f64, r: f64) -> bool {
    if time_to_expiry_ms <= 0.0 {
        return true;
    }
    -(compute_ms.max(1.0)) * beta * r.ln() >= time_to_expiry_ms
}

/// Whole milliseconds of `d`, saturating.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Wall-clock milliseconds since the Unix epoch (entries' expiry for early refresh).
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, millis)
}

/// The jitter used when a function sets none: a tenth of the TTL.
pub(crate) fn default_jitter(ttl: u64) -> u64 {
    ttl / 10
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_in_range_and_varies() {
        let p = Policy::seconds(100, 20, 0);
        let ttls: Vec<u64> = (0..500).map(|_| p.value_ttl().as_secs()).collect();
        assert!(ttls.iter().all(|t| (100..=120).contains(t)), "{ttls:?}");
        assert!(
            ttls.contains(&100) && ttls.contains(&120),
            "both ends reachable"
        );
    }

    #[test]
    fn a_default_jitter_is_a_tenth_of_the_ttl_a_value_asks_for() {
        let p = Policy::seconds(300, 0, 0).with_default_jitter();
        assert!((300..=330).contains(&p.value_ttl().as_secs()));
        for _ in 0..100 {
            assert_eq!(
                p.value_ttl_from(Duration::from_secs(9)),
                Duration::from_secs(9)
            );
            let long = p.value_ttl_from(Duration::from_secs(1000)).as_secs();
            assert!((1000..=1100).contains(&long), "{long}");
        }
        let set = Policy::seconds(300, 30, 0);
        let ttls: Vec<u64> = (0..500)
            .map(|_| set.value_ttl_from(Duration::from_secs(9)).as_secs())
            .collect();
        assert!(ttls.iter().all(|t| (9..=39).contains(t)) && ttls.contains(&39));
    }

    #[test]
    fn zero_jitter_is_exact_and_zero_ttl_is_raised() {
        assert_eq!(
            Policy::seconds(900, 0, 0).value_ttl(),
            Duration::from_secs(900)
        );
        assert_eq!(Policy::seconds(0, 0, 0).value_ttl(), Duration::from_secs(1));
        assert_eq!(default_jitter(900), 90);
        assert_eq!(default_jitter(5), 0);
    }

    #[test]
    fn null_ttl_zero_turns_null_caching_off() {
        assert_eq!(Policy::seconds(10, 1, 0).null_ttl(), None);
        assert_eq!(
            Policy::seconds(10, 1, 30).null_ttl(),
            Some(Duration::from_secs(30))
        );
        assert_eq!(Policy::exact(Duration::from_secs(5)).null_ttl(), None);
    }

    #[test]
    fn xfetch_refreshes_with_probability_exp_minus_ttl_over_delta_beta() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        const N: usize = 200_000;
        for (ttl, compute, beta) in [
            (100.0, 100.0, 1.0),
            (300.0, 100.0, 1.0),
            (300.0, 100.0, 2.0),
            (50.0, 10.0, 1.0),
        ] {
            let hits = (0..N)
                .filter(|_| should_refresh(ttl, compute, beta, 1.0 - rng.random::<f64>()))
                .count();
            let expected: f64 = (-ttl / (compute * beta)).exp();
            let observed = hits as f64 / N as f64;
            assert!(
                (observed - expected).abs() < 0.005,
                "ttl {ttl} compute {compute} beta {beta}: {observed} vs {expected}"
            );
        }
        assert!(should_refresh(0.0, 10.0, 1.0, 1.0), "expired: always");
        assert!(
            !should_refresh(1.0, 10.0, 1.0, 1.0),
            "r = 1: ln 1 = 0, never early"
        );
    }

    #[test]
    fn huge_ttl_saturates() {
        // No overflow panic: the sum saturates at the largest Duration.
        let ttl = Policy::seconds(u64::MAX, 5, 0).value_ttl();
        assert!(ttl >= Duration::from_secs(u64::MAX), "{ttl:?}");
    }
}
