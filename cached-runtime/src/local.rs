//! The local tier of decoded values (`Config::local_capacity`): `#[cached]` results read
//! from Redis, kept in this process as the values themselves, so that a hit is one lookup
//! and one clone. Looked up by the function and its key material (the canonical JSON of
//! the arguments): no md5, no key string.
//!
//! Coherence comes from Redis: each read that may fill the tier is tracked (RESP3 client
//! tracking, opt-in per read), and Redis pushes the name of every tracked key that changes
//! or expires. Pushes are handled in the connection's reader task as they arrive
//! ([`Invalidations`]), and by version, not by removal: every key hashes to one of many
//! version counters, and a push bumps its key's. A copy carries the versions of its key
//! (and its group's generation) taken *before* the read that brought it was sent, and is
//! served only while they are unchanged. So a push that lands between a read's reply and
//! the copy's insert (where a tier that removes entries on push would lose it) still
//! retires the copy: nothing is lost, by construction. A dropped connection (which ends
//! tracking) and Redis's "flush everything" bump one epoch that retires every copy.
//!
//! A copy also expires when its Redis entry does (the read asks `PTTL` in the same round
//! trip), and the tier is bounded by entries and bytes (quick_cache, CLOCK-PRO eviction).
//!
//! Each key has two counters, one in each of two tables, and a copy is retired when both of
//! its key's have moved: a push for its own key moves both, while a push for an unrelated
//! key retires it only if that key shares both counters, which happens about as often as
//! the square of the tables' fill (a retired copy costs a read from Redis, never a wrong
//! value).

use crate::store::{Bounded, ENTRY_OVERHEAD};
use quick_cache::sync::Cache;
use quick_cache::{Equivalent, Weighter};
use std::any::Any;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A decoded value, shared by every hit until it is cloned out.
pub(crate) type Value = Arc<dyn Any + Send + Sync>;

pub(crate) struct LocalTier {
    copies: Cache<CopyKey, Copy, Weight>,
    /// Version counters: two tables of `mask + 1`, one after the other; a key has one in
    /// each.
    versions: Box<[AtomicU32]>,
    mask: usize,
    /// Bumped when every copy must go (a dropped connection, a flush, a prefix invalidation).
    epoch: AtomicU64,
    hasher: std::collections::hash_map::RandomState,
}

impl std::fmt::Debug for LocalTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalTier")
            .field("copies", &self.copies.len())
            .field("bytes", &self.copies.weight())
            .finish()
    }
}

/// A copy's key: the function (its `Spec`'s address) and the key material.
#[derive(PartialEq, Eq)]
struct CopyKey {
    function: usize,
    material: Box<[u8]>,
}

impl Hash for CopyKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        Lookup {
            function: self.function,
            material: &self.material,
        }
        .hash(state);
    }
}

/// A [`CopyKey`] borrowed, for lookups that allocate nothing.
#[derive(Clone, Copy)]
pub(crate) struct Lookup<'a> {
    pub(crate) function: usize,
    pub(crate) material: &'a [u8],
}

impl Hash for Lookup<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_usize(self.function);
        state.write(self.material);
    }
}

impl Equivalent<CopyKey> for Lookup<'_> {
    fn equivalent(&self, key: &CopyKey) -> bool {
        self.function == key.function && *self.material == *key.material
    }
}

/// The versions a read saw before it was sent: a copy it brings is good while they hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mark {
    epoch: u64,
    entry: Versions,
    gen: Option<Versions>,
    /// When the read was sent: the copy's expiry counts from here.
    at: Instant,
}

/// A key's two counters and their values.
type Versions = [(usize, u32); 2];

#[derive(Clone)]
struct Copy {
    /// `None`: a cached `None`.
    value: Option<Value>,
    mark: Mark,
    expires: Instant,
    /// The encoded size it stands for (the byte cap).
    bytes: u64,
}

/// A copy weighs its bytes, but at least `floor`, so that the byte cap also bounds the
/// number of copies (`max_bytes / floor`).
#[derive(Clone)]
struct Weight {
    floor: u64,
}

impl Weighter<CopyKey, Copy> for Weight {
    fn weight(&self, key: &CopyKey, copy: &Copy) -> u64 {
        (key.material.len() as u64 + copy.bytes + ENTRY_OVERHEAD).max(self.floor)
    }
}

/// What a lookup found.
pub(crate) enum Held {
    Value(Value),
    Null,
}

impl LocalTier {
    /// A tier of at most `max_entries` copies and `max_bytes` bytes, for values of up to
    /// `largest_value` bytes (the cache's `max_value_bytes`: the table leaves room for
    /// one, see [`Bounded`]).
    pub(crate) fn new(max_entries: usize, max_bytes: u64, largest_value: usize) -> Self {
        let Bounded { options, floor, .. } = Bounded::new(max_entries, max_bytes, largest_value);
        let max_entries = max_entries.max(1);
        // Enough counters that unrelated keys rarely share both of a key's (which only
        // costs a copy: a read from Redis, never a wrong value): 512 KiB at least.
        let counters = max_entries
            .saturating_mul(16)
            .clamp(1 << 16, 1 << 22)
            .next_power_of_two();
        LocalTier {
            copies: Cache::with_options(
                options,
                Weight { floor },
                Default::default(),
                Default::default(),
            ),
            versions: (0..2 * counters).map(|_| AtomicU32::new(0)).collect(),
            mask: counters - 1,
            epoch: AtomicU64::new(0),
            hasher: Default::default(),
        }
    }

    /// The key's counter in each table.
    fn slots(&self, key: &[u8]) -> [usize; 2] {
        let hash = self.hasher.hash_one(key);
        [
            hash as usize & self.mask,
            self.mask + 1 + ((hash >> 32) as usize & self.mask),
        ]
    }

    /// The versions of `key` (and its group's generation key) now, before a read of them is
    /// sent.
    pub(crate) fn mark(&self, key: &str, gen_key: Option<&str>) -> Mark {
        let version = |key: &str| {
            self.slots(key.as_bytes())
                .map(|slot| (slot, self.versions[slot].load(SeqCst)))
        };
        Mark {
            epoch: self.epoch.load(SeqCst),
            entry: version(key),
            gen: gen_key.map(version),
            at: Instant::now(),
        }
    }

    /// Whether no push retired what `mark` was taken for: the epoch is the same, and of
    /// each key, at least one counter has not moved.
    fn holds(&self, mark: &Mark) -> bool {
        let same = |versions: Versions| {
            versions
                .iter()
                .any(|&(slot, version)| self.versions[slot].load(SeqCst) == version)
        };
        self.epoch.load(SeqCst) == mark.epoch && same(mark.entry) && mark.gen.is_none_or(same)
    }

    /// The copy for `lookup`, if there is one still good: no push for its keys since its
    /// read was sent, not past its Redis TTL (at `now`). A copy that is no longer good is
    /// dropped.
    pub(crate) fn get(&self, lookup: Lookup<'_>, now: Instant) -> Option<Held> {
        let copy = self.copies.get(&lookup)?;
        if copy.expires > now && self.holds(&copy.mark) {
            return Some(match copy.value {
                Some(value) => Held::Value(value),
                None => Held::Null,
            });
        }
        self.copies.remove(&lookup);
        None
    }

    /// Keeps `value` (`None`: a cached `None`) of `bytes` encoded bytes (before
    /// compression), read after `mark` was taken, for `left` (its entry's TTL in Redis
    /// when read). Dropped at once if a push
    /// for its keys arrived since the mark (the insert comes after the check: a push that
    /// lands in between is seen by the next lookup).
    pub(crate) fn insert(
        &self,
        lookup: Lookup<'_>,
        value: Option<Value>,
        bytes: usize,
        mark: Mark,
        left: Duration,
    ) {
        if !self.holds(&mark) {
            return;
        }
        let key = CopyKey {
            function: lookup.function,
            material: lookup.material.into(),
        };
        let copy = Copy {
            value,
            mark,
            expires: mark.at + left,
            bytes: bytes as u64,
        };
        self.copies.insert(key, copy);
    }

    /// A push (or this process's own write) says `key` changed: retires its copies.
    pub(crate) fn changed(&self, key: &[u8]) {
        for slot in self.slots(key) {
            self.versions[slot].fetch_add(1, SeqCst);
        }
    }

    /// Retires every copy: tracking was lost (the connection dropped) or Redis said
    /// everything changed (a flush), or a prefix was invalidated.
    pub(crate) fn clear(&self) {
        self.epoch.fetch_add(1, SeqCst);
        self.copies.clear();
    }

    /// Copies held now (expired or retired ones included until looked up or evicted).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.copies.len()
    }
}

/// Receives a connection's push messages in its reader task, as they arrive: Redis's
/// invalidations retire copies, and a dropped connection (tracking ends with it) retires
/// them all.
pub(crate) struct Invalidations(pub(crate) Arc<LocalTier>);

impl redis::aio::AsyncPushSender for Invalidations {
    fn send(&self, info: redis::PushInfo) -> Result<(), redis::aio::SendError> {
        match info.kind {
            redis::PushKind::Invalidate => match info.data.first() {
                Some(redis::Value::Array(keys)) => {
                    for key in keys {
                        match key {
                            redis::Value::BulkString(key) => self.0.changed(key),
                            redis::Value::SimpleString(key) => self.0.changed(key.as_bytes()),
                            _ => self.0.clear(),
                        }
                    }
                }
                // `null`: the server flushed everything (FLUSHALL, FLUSHDB).
                _ => self.0.clear(),
            },
            redis::PushKind::Disconnection => self.0.clear(),
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(material: &[u8]) -> Lookup<'_> {
        Lookup {
            function: 1,
            material,
        }
    }

    fn value(n: u64) -> Option<Value> {
        Some(Arc::new(n))
    }

    fn held(tier: &LocalTier, material: &[u8]) -> Option<u64> {
        match tier.get(lookup(material), Instant::now())? {
            Held::Value(v) => v.downcast_ref::<u64>().copied(),
            Held::Null => None,
        }
    }

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn a_copy_is_served_until_its_key_changes() {
        let tier = LocalTier::new(100, 1 << 20, 1 << 20);
        let mark = tier.mark("p:a", None);
        tier.insert(lookup(b"[1]"), value(7), 10, mark, MINUTE);
        assert_eq!(held(&tier, b"[1]"), Some(7));
        tier.changed(b"p:a");
        assert_eq!(held(&tier, b"[1]"), None);
        assert_eq!(tier.len(), 0, "a retired copy is dropped when found");
    }

    #[test]
    fn a_tier_of_one_copy_keeps_the_latest() {
        let tier = LocalTier::new(1, 1 << 20, 1 << 20);
        for n in 1..=2 {
            let material = n.to_string();
            let mark = tier.mark(&format!("p:{n}"), None);
            tier.insert(lookup(material.as_bytes()), value(n), 10, mark, MINUTE);
            assert_eq!(held(&tier, material.as_bytes()), Some(n));
        }
        assert_eq!(tier.len(), 1);
    }

    #[test]
    fn a_push_between_the_read_and_the_insert_is_not_lost() {
        let tier = LocalTier::new(100, 1 << 20, 1 << 20);
        let mark = tier.mark("p:a", None);
        // The reply is on its way; the invalidation lands first.
        tier.changed(b"p:a");
        tier.insert(lookup(b"[1]"), value(7), 10, mark, MINUTE);
        assert_eq!(held(&tier, b"[1]"), None);
    }

    #[test]
    fn a_group_invalidation_retires_the_copies_of_the_group() {
        let tier = LocalTier::new(100, 1 << 20, 1 << 20);
        let mark = tier.mark("p:{g}:a", Some("redcache:group:{g}"));
        tier.insert(lookup(b"[1]"), value(7), 10, mark, MINUTE);
        assert_eq!(held(&tier, b"[1]"), Some(7));
        tier.changed(b"redcache:group:{g}");
        assert_eq!(held(&tier, b"[1]"), None);
    }

    #[test]
    fn pushes_for_other_keys_rarely_retire_a_copy() {
        // Room for ten times the copies, so that no copy is evicted: only pushes retire.
        let tier = LocalTier::new(1000, 1 << 20, 1 << 20);
        let marks: Vec<_> = (0..100)
            .map(|n| {
                let key = format!("p:{n}");
                let mark = tier.mark(&key, None);
                tier.insert(lookup(key.as_bytes()), value(n), 10, mark, MINUTE);
                key
            })
            .collect();
        for n in 100..10_100 {
            tier.changed(format!("p:{n}").as_bytes());
        }
        let kept = marks
            .iter()
            .filter(|key| held(&tier, key.as_bytes()).is_some())
            .count();
        // 10,000 other keys over 65,536 counters a table: about 2% share both.
        assert!(kept >= 90, "{kept} of 100 copies survived");
    }

    #[test]
    fn a_copy_expires_with_its_entry() {
        let tier = LocalTier::new(100, 1 << 20, 1 << 20);
        let mark = tier.mark("p:a", None);
        tier.insert(lookup(b"[1]"), value(7), 10, mark, Duration::ZERO);
        assert_eq!(held(&tier, b"[1]"), None);
    }

    #[test]
    fn a_lost_connection_retires_every_copy() {
        let tier = Arc::new(LocalTier::new(100, 1 << 20, 1 << 20));
        let mark = tier.mark("p:a", None);
        tier.insert(lookup(b"[1]"), value(7), 10, mark, MINUTE);
        let pushes = Invalidations(tier.clone());
        let drop = redis::PushInfo {
            kind: redis::PushKind::Disconnection,
            data: vec![],
        };
        redis::aio::AsyncPushSender::send(&pushes, drop).unwrap();
        assert_eq!(held(&tier, b"[1]"), None);
        // And a copy whose read was sent before the drop is never kept.
        tier.insert(lookup(b"[1]"), value(7), 10, mark, MINUTE);
        assert_eq!(held(&tier, b"[1]"), None);
    }

    #[test]
    fn an_invalidation_push_retires_the_keys_it_names() {
        let tier = Arc::new(LocalTier::new(100, 1 << 20, 1 << 20));
        for (material, key) in [(&b"[1]"[..], "p:a"), (b"[2]", "p:b"), (b"[3]", "p:c")] {
            let mark = tier.mark(key, None);
            tier.insert(lookup(material), value(1), 10, mark, MINUTE);
        }
        let push = redis::PushInfo {
            kind: redis::PushKind::Invalidate,
            data: vec![redis::Value::Array(vec![
                redis::Value::BulkString(b"p:a".to_vec()),
                redis::Value::BulkString(b"p:b".to_vec()),
            ])],
        };
        redis::aio::AsyncPushSender::send(&Invalidations(tier.clone()), push).unwrap();
        assert_eq!(held(&tier, b"[1]"), None);
        assert_eq!(held(&tier, b"[2]"), None);
        assert_eq!(held(&tier, b"[3]"), Some(1));
        let flush = redis::PushInfo {
            kind: redis::PushKind::Invalidate,
            data: vec![redis::Value::Nil],
        };
        redis::aio::AsyncPushSender::send(&Invalidations(tier.clone()), flush).unwrap();
        assert_eq!(held(&tier, b"[3]"), None);
    }

    /// A copy as large as a value may be is kept, however many cores split the table: a
    /// shard of quick_cache admits nothing over 97% of its part of the bytes.
    #[test]
    fn a_copy_of_the_largest_value_is_kept() {
        let largest = 400 << 10;
        // Beside 2 MiB, 8 shards (4 per core on 2 cores) would admit nothing over 250 KiB.
        let tier = LocalTier::new(10_000, 2 << 20, largest);
        let mark = tier.mark("p:big", None);
        tier.insert(lookup(b"[1]"), value(1), largest, mark, MINUTE);
        assert_eq!(held(&tier, b"[1]"), Some(1));
    }

    #[test]
    fn the_tier_is_bounded_by_entries_and_bytes() {
        let tier = LocalTier::new(100, 1 << 20, 1 << 20);
        for n in 0..10_000u64 {
            let material = format!("[{n}]");
            let mark = tier.mark(&material, None);
            tier.insert(lookup(material.as_bytes()), value(n), 10, mark, MINUTE);
        }
        assert!(tier.len() <= 100, "{}", tier.len());
        let tier = LocalTier::new(1_000, 10_000, 1 << 20);
        for n in 0..1_000u64 {
            let material = format!("[{n}]");
            let mark = tier.mark(&material, None);
            tier.insert(lookup(material.as_bytes()), value(n), 1_000, mark, MINUTE);
        }
        assert!(tier.copies.weight() <= 10_000, "{}", tier.copies.weight());
        assert!(tier.len() <= 10, "{}", tier.len());
    }
}
