//! The keys a cache changed lately, for a store that reads replicas (see
//! [`Core::relaxed_op`](crate::core::Core::relaxed_op)).
//!
//! A replica applies the master's writes after the replication lag. A call that reads a
//! replica right after its cache invalidated or wrote the call's key could find what that
//! replaced, though the invalidation had returned before the call began. So for
//! [`READ_OWN_WRITES`] after a cache changes a key (an entry, a group's or a path's
//! generation), its reads of that key go to the master. Keys are kept in two sets of
//! stripes, by two parts of one hash: a key whose two stripes are both those of keys just
//! changed is read from the master too, which is only slower. With `k` keys changed in the
//! last second, the share of other keys read from the master is about
//! `(1 - e^(-k/4096))²`: one in about 4 million for two keys, 0.06% at 100 changes a
//! second, 5% at 1,000, 50% at 5,000.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// How long after a cache changes a key its reads of that key skip the replicas: many
/// times the replication lag of a replica that keeps up (well under a millisecond on a
/// LAN), few enough that a cache that writes now and then still reads its hits from the
/// replicas.
pub(crate) const READ_OWN_WRITES: Duration = Duration::from_secs(1);

/// Stripes of keys in each of the two sets (a power of two).
const STRIPES: usize = 4096;

#[derive(Debug)]
pub(crate) struct Recent {
    /// Per stripe (the two sets one after the other): until when (milliseconds since
    /// `origin`) a change there sends reads to the master; 0 for a stripe no change
    /// reached.
    until: Box<[AtomicU64]>,
    /// The same for every key: a prefix was invalidated (its keys are not known here).
    all_until: AtomicU64,
    origin: Instant,
    hasher: std::collections::hash_map::RandomState,
}

impl Recent {
    pub(crate) fn new() -> Self {
        Recent {
            until: (0..2 * STRIPES).map(|_| AtomicU64::new(0)).collect(),
            all_until: AtomicU64::new(0),
            origin: Instant::now(),
            hasher: Default::default(),
        }
    }

    /// `key`'s stripe in each set.
    fn stripes(&self, key: &str) -> [&AtomicU64; 2] {
        let hash = self.hasher.hash_one(key);
        [
            &self.until[hash as usize & (STRIPES - 1)],
            &self.until[STRIPES + ((hash >> 32) as usize & (STRIPES - 1))],
        ]
    }

    /// Milliseconds since `origin` at `at`.
    fn ms(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_millis()).unwrap_or(u64::MAX)
    }

    /// When a change ending now stops sending reads to the master.
    fn deadline(&self) -> u64 {
        self.ms(Instant::now() + READ_OWN_WRITES)
    }

    /// The cache changed `key` (its change has ended, or failed, which may have written
    /// it all the same).
    pub(crate) fn changed(&self, key: &str) {
        let deadline = self.deadline();
        for stripe in self.stripes(key) {
            stripe.fetch_max(deadline, Ordering::AcqRel);
        }
    }

    /// The cache changed keys it does not know one by one (a prefix's).
    pub(crate) fn changed_all(&self) {
        self.all_until.fetch_max(self.deadline(), Ordering::AcqRel);
    }

    /// Whether a read of `keys` starting at `at` must go to the master: the cache changed
    /// one of them (or every key) less than [`READ_OWN_WRITES`] before.
    pub(crate) fn any_changed<K: AsRef<str>>(&self, keys: &[K], at: Instant) -> bool {
        let now = self.ms(at);
        now < self.all_until.load(Ordering::Acquire)
            || keys.iter().any(|key| {
                self.stripes(key.as_ref())
                    .iter()
                    .all(|stripe| now < stripe.load(Ordering::Acquire))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_key_reads_the_master_for_a_while_and_others_do_not() {
        let recent = Recent::new();
        let now = Instant::now();
        assert!(!recent.any_changed(&["a", "b"], now));
        recent.changed("a");
        let now = Instant::now();
        assert!(recent.any_changed(&["a"], now));
        assert!(recent.any_changed(&["b", "a"], now), "any of the keys");
        let others = (0..1000)
            .map(|i| format!("key:{i}"))
            .filter(|key| recent.any_changed(&[key], now))
            .count();
        assert!(
            others <= 1,
            "{others} keys share the changed key's two stripes"
        );
        let later = now + READ_OWN_WRITES + Duration::from_millis(1);
        assert!(!recent.any_changed(&["a"], later), "the window ended");
    }

    #[test]
    fn a_change_of_every_key_reads_the_master_for_any() {
        let recent = Recent::new();
        recent.changed_all();
        let now = Instant::now();
        assert!(recent.any_changed(&["x"], now));
        assert!(recent.any_changed::<&str>(&[], now));
        assert!(!recent.any_changed(&["x"], now + READ_OWN_WRITES + Duration::from_millis(1)));
    }
}
