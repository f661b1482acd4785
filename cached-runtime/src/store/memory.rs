//! The in-process store: for running without Redis (a single-instance service) and for
//! tests. Entries live in a bounded, sharded cache (quick_cache: CLOCK-PRO eviction, which
//! resists scans better than LRU), capped by entries and by bytes; each has its own expiry,
//! and an expired entry is never served. When what an invalidation or a write-through wrote
//! is evicted within `max_fill_time`, its key is remembered until then, so that it still
//! fences the fills whose reads came before it.
//!
//! Reads take only their shard's read lock. Writes are atomic per hash tag: every write to
//! a key takes the lock of its stripe, chosen by the key's Redis Cluster hash tag (the
//! `{group}` part if there is one, else the whole key), so a conditional fill that checks
//! an entry and its group's generation sees both unchanged until it writes, as the Redis
//! script does.

use super::{prefix_retires, EntryAndGen, Fill, Replaced, Seen, Store};
use crate::Result;
use quick_cache::sync::Cache;
use quick_cache::{DefaultHashBuilder, Lifecycle, OptionsBuilder, Weighter};
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
// tokio's clock, so tests can pause and advance time instead of sleeping.
use tokio::time::Instant;

/// Write locks (a power of two).
const STRIPES: usize = 64;

/// What an entry costs beyond its key and value bytes (the map slot, the expiry, the
/// shared buffer's header), for the byte cap (a local-tier copy's too).
pub(crate) const ENTRY_OVERHEAD: u64 = 64;

/// The longest key a shard leaves room for beside the largest value (see
/// [`Bounded::new`]).
const LARGEST_KEY: u64 = 1024;

/// The share of a shard's weight an entry may have (quick_cache's hot allocation, over
/// which it admits nothing), a little under its 0.97 for the rounding.
const SHARD_ADMITS: f64 = 0.96;

pub(crate) struct MemoryStore {
    entries: Cache<String, Entry, Weight, DefaultHashBuilder, KeepFences>,
    /// The keys whose fencing entry was evicted while it fenced (shared with `entries`'
    /// eviction hook).
    evicted: Arc<EvictedFences>,
    /// How long a writer's write fences: `max_fill_time`.
    fence_for: Duration,
    /// The weight of the largest entry a shard admits (see [`MemoryStore::holding`]): a
    /// fill over it is refused as too large, rather than dropped as it is written.
    admits: u64,
    stripes: [Mutex<()>; STRIPES],
    hasher: std::collections::hash_map::RandomState,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("entries", &self.entries.len())
            .field("bytes", &self.entries.weight())
            .finish()
    }
}

#[derive(Debug, Clone)]
struct Entry {
    value: Arc<[u8]>,
    /// `None`: never expires (group generations).
    expires: Option<Instant>,
    /// Until when it fences the fills whose reads came before it (see [`EvictedFences`]).
    fences_until: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|t| t > now)
    }
}

/// The keys whose fencing entry was evicted before its fence ended, and until when each
/// fences. A fill stores only if its key still holds what its read saw: an invalidation's
/// tombstone, a write-through's value or a path's new generation is how a fill whose read
/// came before them learns of them, and so is a later fill over one of those (which takes
/// over its deadline). Evicted, any of them would look like the nothing (or the expired
/// entry) that read saw, and the fill would store what the writer replaced. So for
/// `max_fill_time` after the write (a fill that late is not sent) its key is remembered
/// here, and a fill over nothing at it is refused. Only keys are kept, and only that long;
/// evicting a fill that fences nothing costs a miss, never a wrong value.
#[derive(Debug, Default)]
struct EvictedFences {
    keys: Mutex<Fenced>,
    /// How many keys are held: a fill over nothing reads it, and takes the lock only if
    /// there are any.
    held: AtomicUsize,
}

#[derive(Debug, Default)]
struct Fenced {
    until: HashMap<String, Instant>,
    /// The latest of `until`'s instants: past it, every one has ended.
    last: Option<Instant>,
}

impl EvictedFences {
    fn lock(&self) -> MutexGuard<'_, Fenced> {
        self.keys.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `key` was evicted, fencing until `until`.
    fn remember(&self, key: String, until: Instant, now: Instant) {
        let mut fenced = self.lock();
        // Ended fences go when the map would grow; if that frees less than half, it grows
        // (so that each pass is paid for by as many inserts).
        if fenced.until.len() == fenced.until.capacity() {
            fenced.until.retain(|_, t| *t > now);
            let len = fenced.until.len();
            if len * 2 > fenced.until.capacity() {
                fenced.until.reserve(len);
            }
        }
        let at = fenced.until.entry(key).or_insert(until);
        *at = (*at).max(until);
        fenced.last = fenced.last.max(Some(until));
        self.held.store(fenced.until.len(), Relaxed);
    }

    /// Whether `key`'s evicted entry still fences at `now`.
    fn fences(&self, key: &str, now: Instant) -> bool {
        if self.held.load(Relaxed) == 0 {
            return false;
        }
        let mut fenced = self.lock();
        if fenced.last.is_some_and(|last| last <= now) {
            // All have ended.
            *fenced = Fenced::default();
            self.held.store(0, Relaxed);
            return false;
        }
        fenced.until.get(key).is_some_and(|until| *until > now)
    }
}

/// `entries`' eviction hook: an entry evicted while it fences leaves its key in
/// [`EvictedFences`].
///
/// quick_cache calls it at once, under the shard's lock (`RequestState` is `()`, nothing
/// is deferred), so the key is recorded before a fill can see the entry gone. It calls it
/// for an entry a write replaces, too: that one is not recorded (the new entry takes over
/// its deadline), told apart by its value's address, which [`REPLACING`] holds while
/// [`MemoryStore::insert`] writes.
#[derive(Debug, Clone, Default)]
struct KeepFences(Arc<EvictedFences>);

thread_local! {
    /// The address of the value that the write under way on this thread replaces, if any.
    static REPLACING: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Sets [`REPLACING`] for as long as it lives.
struct Replacing;

impl Replacing {
    fn set(value: Option<&Arc<[u8]>>) -> Replacing {
        REPLACING.set(value.map_or(0, address));
        Replacing
    }
}

impl Drop for Replacing {
    fn drop(&mut self) {
        REPLACING.set(0);
    }
}

/// The address of `value`'s bytes: the same for every clone of one `Arc`.
fn address(value: &Arc<[u8]>) -> usize {
    Arc::as_ptr(value).cast::<u8>() as usize
}

impl Lifecycle<String, Entry> for KeepFences {
    type RequestState = ();

    fn on_evict(&self, _: &mut (), key: String, entry: Entry) {
        let Some(until) = entry.fences_until else {
            return;
        };
        if REPLACING.get() == address(&entry.value) {
            return;
        }
        let now = Instant::now();
        if until > now && entry.live(now) {
            self.0.remember(key, until, now);
        }
    }
}

/// Whether a write is a writer's (an invalidation, a write-through), which fences the fills
/// whose reads came before it, or a fill's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Write {
    Fences,
    Fill,
}

/// An entry's weight: its bytes, but at least `floor`, so that the weight capacity
/// (`max_bytes`) bounds the number of entries (`max_bytes / floor`) as well as the bytes.
/// Entries that never expire (a group's generation) weigh nothing and are never evicted:
/// losing one would only cost misses, but there is one per group.
#[derive(Debug, Clone)]
struct Weight {
    floor: u64,
}

impl Weighter<String, Entry> for Weight {
    fn weight(&self, key: &String, entry: &Entry) -> u64 {
        if entry.expires.is_none() {
            return 0;
        }
        let bytes = (key.len() + entry.value.len()) as u64 + ENTRY_OVERHEAD;
        bytes.max(self.floor)
    }
}

/// How a quick_cache table bounded by entries and bytes is made, for entries that weigh
/// their bytes but at least [`floor`](Self::floor).
pub(crate) struct Bounded {
    /// The table's options.
    pub(crate) options: quick_cache::Options,
    /// The least an entry weighs, so that the byte cap bounds the entries too.
    pub(crate) floor: u64,
    /// The heaviest entry the table admits.
    pub(crate) admits: u64,
}

impl Bounded {
    /// A table of at most `max_entries` entries and `max_bytes` bytes (keys, values and
    /// [`ENTRY_OVERHEAD`] each), for values of up to `largest_value` bytes. It is split
    /// in shards, each with an equal part of `max_bytes`, and a shard admits no entry over
    /// 97% of its part (quick_cache's): so there are no more shards than leave each room
    /// for the largest value, or it would be dropped as it is written, on a machine of
    /// many cores (64 shards on 16 cores: 1 MiB each of the default 64 MiB).
    pub(crate) fn new(max_entries: usize, max_bytes: u64, largest_value: usize) -> Self {
        let max_entries = max_entries.max(1);
        let max_bytes = max_bytes.max(ENTRY_OVERHEAD);
        // Rounded up: `max_bytes / floor` entries is at most `max_entries`.
        let floor = max_bytes.div_ceil(max_entries as u64).max(1);
        let largest = (largest_value as u64)
            .saturating_add(LARGEST_KEY + ENTRY_OVERHEAD)
            .max(floor);
        let room = (max_bytes as f64 * SHARD_ADMITS / largest as f64) as usize;
        let parallelism = std::thread::available_parallelism().map_or(1, |n| n.get());
        // quick_cache's own count (4 per core), rounded down to a power of two (it rounds
        // up) that leaves the room.
        let shards = (parallelism * 4).min(room.max(1));
        let shards: usize = 1 << shards.ilog2();
        // Of the weight of a shard (quick_cache may make fewer, larger ones: never less).
        let admits = (max_bytes.div_ceil(shards as u64) as f64 * SHARD_ADMITS) as u64;
        // An entry weighing the whole store (`max_entries` 1) would not be admitted.
        let floor = floor.min(admits.max(1));
        let options = OptionsBuilder::new()
            .estimated_items_capacity(max_entries)
            .weight_capacity(max_bytes)
            .shards(shards)
            .build()
            .expect("both capacities are set");
        Bounded {
            options,
            floor,
            admits,
        }
    }
}

impl MemoryStore {
    /// A store of at most `max_entries` entries and `max_bytes` bytes (keys, values and a
    /// small overhead per entry).
    /// What an invalidation or a write-through writes is kept `fence_for` (the cache's
    /// `max_fill_time`).
    #[cfg(test)]
    pub(crate) fn new(max_entries: usize, max_bytes: u64, fence_for: Duration) -> Self {
        Self::holding(max_entries, max_bytes, 1 << 20, fence_for)
    }

    /// [`new`](Self::new), for values of up to `largest_value` bytes (the cache's
    /// `max_value_bytes`), sized by [`Bounded::new`]. A store too small for even one such
    /// value (`max_bytes` under about `largest_value`) refuses a fill over what it admits
    /// as too large.
    pub(crate) fn holding(
        max_entries: usize,
        max_bytes: u64,
        largest_value: usize,
        fence_for: Duration,
    ) -> Self {
        let Bounded {
            options,
            floor,
            admits,
        } = Bounded::new(max_entries, max_bytes, largest_value);
        let evicted = Arc::new(EvictedFences::default());
        MemoryStore {
            entries: Cache::with_options(
                options,
                Weight { floor },
                DefaultHashBuilder::default(),
                KeepFences(evicted.clone()),
            ),
            evicted,
            fence_for,
            admits,
            stripes: std::array::from_fn(|_| Mutex::new(())),
            hasher: Default::default(),
        }
    }

    /// The write lock of `key`'s hash tag.
    fn lock(&self, key: &str) -> MutexGuard<'_, ()> {
        self.stripe(self.stripe_of(key))
    }

    /// The write locks a fill takes: its key's, and its group generation's, which it may
    /// write too. They share one when the keys share a hash tag, as redcache writes them;
    /// a namespace or prefix with braces of its own can part them, and a fill holding only
    /// the entry's lock could then write back a generation an invalidation had just
    /// replaced. Taken in the order of their stripes, as every fill takes them.
    fn lock_fill(&self, fill: &Fill<'_>) -> (MutexGuard<'_, ()>, Option<MutexGuard<'_, ()>>) {
        let entry = self.stripe_of(fill.key);
        let Some(gen) = fill
            .group
            .map(|g| self.stripe_of(g.key))
            .filter(|g| *g != entry)
        else {
            return (self.stripe(entry), None);
        };
        let first = self.stripe(entry.min(gen));
        (first, Some(self.stripe(entry.max(gen))))
    }

    /// The stripe of `key`'s hash tag.
    fn stripe_of(&self, key: &str) -> usize {
        self.hasher.hash_one(hash_tag(key)) as usize & (STRIPES - 1)
    }

    fn stripe(&self, stripe: usize) -> MutexGuard<'_, ()> {
        // A panic elsewhere while holding the lock leaves nothing half-written: go on.
        self.stripes[stripe]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The live entry at `key`; an expired one is dropped.
    fn live(&self, key: &str) -> Option<Entry> {
        let entry = self.entries.get(key)?;
        let now = Instant::now();
        if entry.live(now) {
            return Some(entry);
        }
        self.entries.remove_if(key, |e| !e.live(now));
        None
    }

    fn value(&self, key: &str) -> Option<Vec<u8>> {
        self.live(key).map(|e| e.value.to_vec())
    }

    /// Until when a `write` at `key` now fences older fills: a writer's for `fence_for`,
    /// and a write over an entry that still fences as long as that entry (a fill over a
    /// tombstone stands in for it against older fills).
    fn fences_until(&self, key: &str, write: Write, now: Instant) -> Option<Instant> {
        let inherited = self
            .entries
            .peek(key)
            .and_then(|e| e.fences_until.filter(|until| *until > now && e.live(now)));
        let own = (write == Write::Fences).then(|| later(now, self.fence_for));
        inherited.max(own)
    }

    /// Writes `value` at `key`, under the key's write lock, already held. An entry that
    /// fences lives at least as long as it does, past its TTL if need be: expired, it would
    /// leave nothing, which a fill whose read came before the writer's write takes for what
    /// it saw (its stamp says when it expired, and readers take it for a miss from then on).
    fn insert(&self, key: &str, value: &[u8], ttl: Option<Duration>, write: Write) {
        let now = Instant::now();
        let fences_until = self.fences_until(key, write, now);
        let expires = ttl.map(|ttl| later(now, ttl).max(fences_until.unwrap_or(now)));
        let current = self.entries.peek(key);
        let entry = Entry {
            value: value.into(),
            expires,
            fences_until,
        };
        // `current` holds its value's bytes, so no other value has their address meanwhile.
        let _replacing = Replacing::set(current.as_ref().map(|e| &e.value));
        self.entries.insert(key.to_owned(), entry);
    }

    /// `TooLarge` if `fill` weighs more than a shard admits, which would drop it as it is
    /// written (only in a store smaller than `max_value_bytes` allows for: see `holding`).
    fn admitted(&self, fill: &Fill<'_>) -> Result<()> {
        self.admits(fill.key, fill.value)
    }

    /// Whether `value` fits at `key` (see [`admitted`](Self::admitted)).
    fn admits(&self, key: &str, value: &[u8]) -> Result<()> {
        let weight = (key.len() + value.len()) as u64 + ENTRY_OVERHEAD;
        if weight <= self.admits {
            return Ok(());
        }
        let room = self
            .admits
            .saturating_sub(key.len() as u64 + ENTRY_OVERHEAD);
        Err(crate::Error::TooLarge {
            size: value.len(),
            max: usize::try_from(room).unwrap_or(usize::MAX),
        })
    }

    /// [`Store::fill`] of a fill the store admits: takes its write locks.
    fn fill_admitted(&self, fill: &Fill<'_>) -> bool {
        let _locked = self.lock_fill(fill);
        self.fill_locked(fill)
    }

    /// [`Store::fill`] under the key's write lock, already held.
    fn fill_locked(&self, fill: &Fill<'_>) -> bool {
        let current = self.live(fill.key);
        let current = current.as_ref().map(|e| &*e.value);
        // Nothing there, and no fence evicted from there.
        let nothing = || current.is_none() && !self.evicted.fences(fill.key, Instant::now());
        let unchanged = match fill.seen {
            Seen::Nothing => nothing(),
            // Or nothing: what it read has expired since (an invalidation leaves a
            // tombstone, never nothing).
            Seen::Bytes(seen) => current.is_some_and(|c| c == seen) || nothing(),
            // This store holds no other types; a read never reports one.
            Seen::WrongType | Seen::Any => true,
        };
        if !unchanged {
            return false;
        }
        // A write-through stores over whatever is there: a writer's write.
        let write = match fill.seen {
            Seen::Any => Write::Fences,
            _ => Write::Fill,
        };
        if let Some(group) = fill.group {
            let stamp = group.gen.to_string();
            // As long as the entry, which may outlive its TTL (see `insert`).
            let now = Instant::now();
            let entry_lives = self
                .fences_until(fill.key, write, now)
                .map_or(fill.ttl, |until| fill.ttl.max(until - now));
            let lives = group.expiring.then_some(entry_lives);
            match self.live(group.key) {
                Some(gen) if *gen.value != *stamp.as_bytes() => return false,
                Some(gen) => {
                    let outlives = |t: Instant| {
                        Instant::now()
                            .checked_add(entry_lives)
                            .is_some_and(|e| t >= e)
                    };
                    if group.expiring && !gen.expires.is_none_or(outlives) {
                        self.insert(group.key, stamp.as_bytes(), lives, Write::Fill);
                    }
                }
                // A generation evicted since the read would be made anew here.
                None if group.create && !self.evicted.fences(group.key, Instant::now()) => {
                    self.insert(group.key, stamp.as_bytes(), lives, Write::Fill)
                }
                None => return false,
            }
        }
        self.insert(fill.key, fill.value, Some(fill.ttl), write);
        true
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// `after` from `now`, or (past what a clock can hold) far enough to be never.
fn later(now: Instant, after: Duration) -> Instant {
    now.checked_add(after)
        .unwrap_or(now + Duration::from_secs(1 << 40))
}

/// The part of `key` Redis Cluster hashes: the first `{..}` with something inside, else
/// the whole key. A grouped entry and its generation share it.
fn hash_tag(key: &str) -> &str {
    if let Some(open) = key.find('{') {
        if let Some(len) = key[open + 1..].find('}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

impl Store for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.value(key))
    }

    async fn get_with_gen(&self, key: &str, gen_key: &str) -> Result<EntryAndGen> {
        Ok((self.value(key), self.value(gen_key)))
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
        Ok(keys.iter().map(|k| self.value(k)).collect())
    }

    async fn fill_many(&self, fills: &[Fill<'_>]) -> Result<Vec<bool>> {
        // One too large for the store is not stored (the others are).
        Ok(fills
            .iter()
            .map(|f| self.admitted(f).is_ok() && self.fill_admitted(f))
            .collect())
    }

    async fn fill(&self, fill: &Fill<'_>) -> Result<bool> {
        self.admitted(fill)?;
        Ok(self.fill_admitted(fill))
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<()> {
        // Refused as a fill is: the table would drop it, and report it kept.
        self.admits(key, value)?;
        let _locked = self.lock(key);
        // `Cache::set`'s write-through.
        self.insert(key, value, Some(ttl), Write::Fences);
        Ok(())
    }

    async fn retire(&self, key: &str, ttl: Duration) -> Result<Replaced> {
        let _locked = self.lock(key);
        let old = self.value(key);
        let tombstone = crate::codec::encode_tombstone();
        self.insert(key, &tombstone, Some(ttl), Write::Fences);
        Ok(Replaced::Was(old))
    }

    async fn regenerate(&self, key: &str, ttl: Option<Duration>) -> Result<Replaced> {
        let _locked = self.lock(key);
        let old = self.value(key);
        let gen = crate::key::new_generation().to_string();
        self.insert(key, gen.as_bytes(), ttl, Write::Fences);
        Ok(Replaced::Was(old))
    }

    async fn set_nx(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        let _locked = self.lock(key);
        if self.live(key).is_some() {
            return Ok(false);
        }
        self.insert(key, value, ttl, Write::Fill);
        Ok(true)
    }

    async fn delete_if(&self, key: &str, value: &[u8]) -> Result<bool> {
        let _locked = self.lock(key);
        if self.live(key).is_some_and(|e| *e.value == *value) {
            self.entries.remove(key);
            return Ok(true);
        }
        Ok(false)
    }

    async fn ttl(&self, key: &str) -> Result<Option<Duration>> {
        let now = Instant::now();
        Ok(self
            .live(key)
            .map(|e| e.expires.map_or(Duration::MAX, |t| t - now)))
    }

    async fn invalidate_prefix(
        &self,
        prefix: &str,
        _batch: usize,
        ttl: Duration,
        _step: Duration,
    ) -> Result<u64> {
        let keys: Vec<String> = self
            .entries
            .iter()
            .map(|(key, _)| key)
            .filter(|key| key.starts_with(prefix))
            .collect();
        let mut replaced = 0;
        for key in keys {
            let _locked = self.lock(&key);
            let tombstone = crate::codec::encode_tombstone();
            let Some(e) = self.live(&key) else {
                // Gone since the keys were listed (expired, or evicted under the caps): a
                // miss that read it may still fill, and a fill over nothing stores. A
                // tombstone refuses that fill, as over a live entry, and a miss that reads
                // it later fills over it; not counted. (Not at a lease's key, which may
                // have been one: a tombstone there would hold the lease.)
                if !key.ends_with(":lock") {
                    self.insert(&key, &tombstone, Some(ttl), Write::Fences);
                }
                continue;
            };
            if let Some(counted) = prefix_retires(key.as_bytes(), &e.value) {
                // Always expiring, as on Redis: a tombstone over a generation (which never
                // expires) would otherwise leave its group without one for good.
                self.insert(&key, &tombstone, Some(ttl), Write::Fences);
                replaced += u64::from(counted);
            }
        }
        Ok(replaced)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::GroupFence;

    /// `max_fill_time`, by default.
    const FENCE: Duration = Duration::from_secs(30);

    /// However many cores split the table, each part has room for the largest value the
    /// cache stores (here a 1 MiB store with the default 1 MiB limit: one part).
    #[tokio::test]
    async fn a_value_up_to_the_size_limit_is_kept_whatever_the_shards() {
        let store = MemoryStore::holding(100_000, 1 << 20, 1 << 20, FENCE);
        let big = vec![b'x'; 300 << 10];
        assert!(store.fill(&fill(&big, Seen::Nothing, None)).await.unwrap());
        assert_eq!(
            store.get("k").await.unwrap().map(|v| v.len()),
            Some(big.len())
        );
        // The default store, on any machine: a value of nearly 1 MiB.
        let store = MemoryStore::holding(100_000, 64 << 20, 1 << 20, FENCE);
        let big = vec![b'x'; (1 << 20) - 100];
        assert!(store.fill(&fill(&big, Seen::Nothing, None)).await.unwrap());
        assert_eq!(
            store.get("k").await.unwrap().map(|v| v.len()),
            Some(big.len())
        );
        // A store smaller than that value: refused as too large, not reported stored.
        let store = MemoryStore::holding(100_000, 1 << 20, 1 << 20, FENCE);
        let refused = store.fill(&fill(&big, Seen::Nothing, None)).await;
        assert!(
            matches!(refused, Err(crate::Error::TooLarge { .. })),
            "{refused:?}"
        );
        assert_eq!(store.get("k").await.unwrap(), None);
        // In a batch too, beside one it stores.
        let small = Fill {
            key: "small",
            ..fill(b"v", Seen::Nothing, None)
        };
        let stored = store
            .fill_many(&[fill(&big, Seen::Nothing, None), small])
            .await
            .unwrap();
        assert_eq!(stored, [false, true]);
        assert_eq!(store.get("k").await.unwrap(), None);
        assert_eq!(
            store.get("small").await.unwrap().as_deref(),
            Some(&b"v"[..])
        );
    }

    #[tokio::test]
    async fn a_store_of_one_entry_keeps_the_latest() {
        let store = MemoryStore::new(1, 1 << 20, FENCE);
        for key in ["a", "b"] {
            let one = Fill {
                key,
                ..fill(b"v", Seen::Nothing, None)
            };
            assert!(store.fill(&one).await.unwrap());
            assert_eq!(store.get(key).await.unwrap().as_deref(), Some(&b"v"[..]));
        }
        assert_eq!(store.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn entries_expire_on_time() {
        let store = MemoryStore::new(1000, 1 << 20, FENCE);
        let ten = Fill {
            ttl: Duration::from_secs(10),
            ..fill(b"v", Seen::Nothing, None)
        };
        assert!(store.fill(&ten).await.unwrap());
        assert_eq!(store.ttl("k").await.unwrap(), Some(Duration::from_secs(10)));
        tokio::time::advance(Duration::from_millis(9_999)).await;
        assert_eq!(store.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(store.get("k").await.unwrap(), None);
        assert_eq!(
            store
                .invalidate_prefix("k", 10, Duration::from_secs(1), Duration::from_secs(1))
                .await
                .unwrap(),
            0,
            "expired: not counted"
        );
    }

    fn fill<'a>(value: &'a [u8], seen: Seen<'a>, group: Option<GroupFence<'a>>) -> Fill<'a> {
        Fill {
            key: "k",
            value,
            ttl: Duration::from_secs(60),
            seen,
            group,
        }
    }

    #[tokio::test]
    async fn a_fill_stores_only_over_what_its_read_saw() {
        let store = MemoryStore::new(1000, 1 << 20, FENCE);
        assert!(store.fill(&fill(b"a", Seen::Nothing, None)).await.unwrap());
        assert!(!store.fill(&fill(b"b", Seen::Nothing, None)).await.unwrap());
        assert!(!store
            .fill(&fill(b"b", Seen::Bytes(b"x"), None))
            .await
            .unwrap());
        assert!(store
            .fill(&fill(b"b", Seen::Bytes(b"a"), None))
            .await
            .unwrap());
        assert!(store.fill(&fill(b"c", Seen::Any, None)).await.unwrap());
        assert_eq!(store.get("k").await.unwrap().as_deref(), Some(&b"c"[..]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_fill_stores_over_nothing_when_what_its_read_saw_expired() {
        let store = MemoryStore::new(1000, 1 << 20, FENCE);
        store.set("k", b"a", Duration::from_secs(1)).await.unwrap();
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(store
            .fill(&fill(b"b", Seen::Bytes(b"a"), None))
            .await
            .unwrap());
        assert_eq!(store.get("k").await.unwrap().as_deref(), Some(&b"b"[..]));
    }

    #[tokio::test]
    async fn a_grouped_fill_needs_the_generation_it_read() {
        let store = MemoryStore::new(1000, 1 << 20, FENCE);
        let fence = |gen, create| GroupFence {
            key: "g",
            gen,
            create,
            expiring: false,
        };
        // The generation key vanished since the read: refused.
        assert!(!store
            .fill(&fill(b"a", Seen::Any, Some(fence(5, false))))
            .await
            .unwrap());
        // None when read: the fill creates it.
        assert!(store
            .fill(&fill(b"a", Seen::Any, Some(fence(5, true))))
            .await
            .unwrap());
        assert_eq!(store.get("g").await.unwrap().as_deref(), Some(&b"5"[..]));
        assert_eq!(store.ttl("g").await.unwrap(), Some(Duration::MAX));
        // Another process created or bumped it meanwhile: refused.
        assert!(!store
            .fill(&fill(b"b", Seen::Any, Some(fence(6, true))))
            .await
            .unwrap());
        assert!(store
            .fill(&fill(b"b", Seen::Any, Some(fence(5, false))))
            .await
            .unwrap());
    }

    /// A key listed by a prefix invalidation whose entry is gone before its turn (here it
    /// expired; eviction under the caps is the other way) gets a tombstone still: a fill
    /// over nothing would store what a miss read before, and one over the tombstone is a
    /// later miss's.
    #[tokio::test(start_paused = true)]
    async fn a_prefix_invalidation_fences_a_key_whose_entry_is_gone() {
        let store = MemoryStore::new(1000, 1 << 20, FENCE);
        let short = Fill {
            ttl: Duration::from_secs(10),
            ..fill(b"old", Seen::Nothing, None)
        };
        assert!(store.fill(&short).await.unwrap());
        tokio::time::advance(Duration::from_secs(10)).await;
        let ttl = Duration::from_secs(60);
        assert_eq!(store.invalidate_prefix("k", 10, ttl, ttl).await.unwrap(), 0);
        let late = fill(b"older", Seen::Bytes(b"old"), None);
        assert!(!store.fill(&late).await.unwrap(), "fenced");
        // A miss that read after the invalidation stores at once.
        let tombstone = store.get("k").await.unwrap().expect("a tombstone");
        assert!(crate::codec::is_tombstone(&tombstone));
        let next = fill(b"new", Seen::Bytes(&tombstone), None);
        assert!(store.fill(&next).await.unwrap());
        assert_eq!(store.get("k").await.unwrap().as_deref(), Some(&b"new"[..]));
    }

    #[tokio::test]
    async fn a_prefix_invalidation_tombstones_that_family_only() {
        let store = MemoryStore::new(1000, 1 << 20, FENCE);
        let ttl = Duration::from_secs(60);
        for key in ["user:1", "user:2", "user*:1", "users:1"] {
            store.set(key, b"v", ttl).await.unwrap();
        }
        store.set("user:3:lock", b"123", ttl).await.unwrap();
        // A key that never expires (a group's generation) gets a tombstone that does.
        assert!(store.set_nx("user:gen", b"42", None).await.unwrap());
        assert_eq!(
            store
                .invalidate_prefix("user:", 10, ttl, ttl)
                .await
                .unwrap(),
            3
        );
        let left = store.ttl("user:gen").await.unwrap();
        assert!(
            left.is_some_and(|left| left <= ttl && left > ttl / 2),
            "{left:?}"
        );
        for key in ["user:1", "user:2"] {
            let raw = store.get(key).await.unwrap().unwrap();
            assert!(crate::codec::is_tombstone(&raw), "{key}");
        }
        assert_eq!(
            store.get("user:3:lock").await.unwrap().as_deref(),
            Some(&b"123"[..]),
            "a lease is kept"
        );
        let before = store.get("user:1").await.unwrap();
        assert_eq!(
            store
                .invalidate_prefix("user:", 10, ttl, ttl)
                .await
                .unwrap(),
            0,
            "tombstones are not counted again"
        );
        let after = store.get("user:1").await.unwrap().unwrap();
        assert!(crate::codec::is_tombstone(&after));
        assert_ne!(Some(after), before, "a tombstone is replaced by a new one");
        assert_eq!(
            store
                .invalidate_prefix("user*:", 10, ttl, ttl)
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            store.get("users:1").await.unwrap().as_deref(),
            Some(&b"v"[..])
        );
    }

    #[tokio::test]
    async fn a_million_distinct_keys_stay_within_the_caps() {
        let store = MemoryStore::new(10_000, 4 << 20, FENCE);
        let value = [7u8; 100];
        for i in 0..1_000_000u32 {
            let key = format!("user:{i}");
            let fill = Fill {
                key: &key,
                value: &value,
                ttl: Duration::from_secs(600),
                seen: Seen::Nothing,
                group: None,
            };
            assert!(store.fill(&fill).await.unwrap());
        }
        assert!(store.len() <= 10_000, "{} entries", store.len());
        assert!(
            store.entries.weight() <= 4 << 20,
            "{} bytes",
            store.entries.weight()
        );
        // What is kept is served: the most recent keys, whole.
        let kept = store.get("user:999999").await.unwrap();
        assert_eq!(kept.as_deref(), Some(&value[..]));
    }

    /// What a miss's fill over nothing writes at `key`.
    async fn filled(store: &MemoryStore, key: &str) {
        let fill = Fill {
            key,
            value: b"v",
            ttl: Duration::from_secs(600),
            seen: Seen::Nothing,
            group: None,
        };
        assert!(store.fill(&fill).await.unwrap(), "{key}");
    }

    /// A store of 100 entries, full of others, so that eviction looks at new entries first.
    async fn full_store() -> MemoryStore {
        let store = MemoryStore::new(100, 1 << 20, FENCE);
        for i in 0..1_000u32 {
            filled(&store, &format!("warm:{i}")).await;
        }
        store
    }

    /// [`pressure`] until `key`'s entry has been evicted.
    async fn evict(store: &MemoryStore, key: &str) {
        pressure(store).await;
        assert!(store.entries.peek(key).is_none(), "{key} was evicted");
    }

    /// 100,000 fills of other keys, each read back (read entries move to the hot part,
    /// whose own evictions then reach what was hot before). The store stays in its caps.
    async fn pressure(store: &MemoryStore) {
        for i in 0..100_000u32 {
            let key = format!("other:{i}");
            filled(store, &key).await;
            store.get(&key).await.unwrap();
        }
        assert!(store.len() <= 100, "{} entries", store.len());
    }

    #[tokio::test(start_paused = true)]
    async fn what_fences_a_fill_outlives_a_shorter_ttl() {
        let old = || fill(b"old", Seen::Nothing, None);
        let short = Duration::from_secs(1);
        // A write-through with a TTL shorter than its fence: kept (its stamp says when it
        // expired), so a miss that read nothing before it is still refused.
        let store = MemoryStore::new(1000, 1 << 20, FENCE);
        store.set("k", b"new", short).await.unwrap();
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(!store.fill(&old()).await.unwrap());
        assert!(store.ttl("k").await.unwrap().unwrap() <= FENCE);
        // A fill over a tombstone stands in for it as long as it would have stood.
        let store = MemoryStore::new(1000, 1 << 20, FENCE);
        store.retire("k", FENCE).await.unwrap();
        let tombstone = store.get("k").await.unwrap().unwrap();
        let over = Fill {
            ttl: short,
            ..fill(b"new", Seen::Bytes(&tombstone), None)
        };
        assert!(store.fill(&over).await.unwrap());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(!store.fill(&old()).await.unwrap());
        // Until the fence ends: then it is gone, and a miss fills the key.
        tokio::time::advance(FENCE).await;
        assert_eq!(store.get("k").await.unwrap(), None);
        assert!(store.fill(&old()).await.unwrap());
        // A fill over nothing fences nothing, and ends with its TTL.
        let store = MemoryStore::new(1000, 1 << 20, FENCE);
        let plain = Fill {
            ttl: short,
            ..old()
        };
        assert!(store.fill(&plain).await.unwrap());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(store.get("k").await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_fence_beyond_what_a_clock_holds_never_ends() {
        let store = MemoryStore::new(1000, 1 << 20, Duration::MAX);
        store.set("k", b"v", Duration::from_secs(1)).await.unwrap();
        store.retire("k", Duration::MAX).await.unwrap();
        assert!(!store
            .fill(&fill(b"old", Seen::Nothing, None))
            .await
            .unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn what_fences_a_fill_still_fences_once_evicted() {
        // The race it closes: a call reads nothing at "k"; a writer invalidates or writes
        // through; many other entries are written; the call's fill arrives. Had the
        // writer's entry left no trace, it would look like the nothing the call read.
        let old = || fill(b"old", Seen::Nothing, None);
        // An invalidation's tombstone.
        let store = full_store().await;
        store.retire("k", FENCE).await.unwrap();
        evict(&store, "k").await;
        assert!(!store.fill(&old()).await.unwrap());
        // Nor a fill whose read saw an entry that is gone now.
        let seen_gone = fill(b"old", Seen::Bytes(b"a"), None);
        assert!(!store.fill(&seen_gone).await.unwrap());
        // A prefix invalidation's.
        let store = full_store().await;
        filled(&store, "k").await;
        let replaced = store.invalidate_prefix("k", 10, FENCE, FENCE).await;
        assert_eq!(replaced.unwrap(), 1);
        evict(&store, "k").await;
        let seen_value = fill(b"old", Seen::Bytes(b"v"), None);
        assert!(!store.fill(&seen_value).await.unwrap());
        // A write-through's value: `put!`, and `Cache::set`.
        let store = full_store().await;
        assert!(store.fill(&fill(b"new", Seen::Any, None)).await.unwrap());
        evict(&store, "k").await;
        assert!(!store.fill(&old()).await.unwrap());
        let store = full_store().await;
        store.set("k", b"new", FENCE).await.unwrap();
        evict(&store, "k").await;
        assert!(!store.fill(&old()).await.unwrap());
        // A later call's fill over the tombstone stands in for it.
        let store = full_store().await;
        store.retire("k", FENCE).await.unwrap();
        let tombstone = store.get("k").await.unwrap().unwrap();
        let over = fill(b"new", Seen::Bytes(&tombstone), None);
        assert!(store.fill(&over).await.unwrap());
        evict(&store, "k").await;
        assert!(!store.fill(&old()).await.unwrap());
        // A path's new generation (HTTP): a fill that read none would create its own.
        let store = full_store().await;
        let path_gen = store.regenerate("g", Some(Duration::from_secs(3600))).await;
        assert_eq!(path_gen.unwrap(), Replaced::Was(None));
        evict(&store, "g").await;
        let fence = GroupFence::at("g", None).expiring(true);
        let grouped = fill(b"old", Seen::Nothing, Some(fence));
        assert!(!store.fill(&grouped).await.unwrap());
    }

    #[tokio::test]
    async fn a_write_over_a_fence_records_nothing() {
        let store = full_store().await;
        store.retire("k", FENCE).await.unwrap();
        let tombstone = store.get("k").await.unwrap().unwrap();
        let over = fill(b"new", Seen::Bytes(&tombstone), None);
        assert!(store.fill(&over).await.unwrap());
        assert!(store.fill(&fill(b"newer", Seen::Any, None)).await.unwrap());
        store.set("k", b"newest", FENCE).await.unwrap();
        assert_eq!(store.evicted.held.load(Relaxed), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_evicted_fence_ends_at_its_deadline() {
        let store = full_store().await;
        store.retire("k", FENCE).await.unwrap();
        let tombstone = store.get("k").await.unwrap().unwrap();
        tokio::time::advance(FENCE / 2).await;
        // A fill over the tombstone fences until the tombstone's deadline.
        let over = fill(b"new", Seen::Bytes(&tombstone), None);
        assert!(store.fill(&over).await.unwrap());
        pressure(&store).await;
        assert!(!store
            .fill(&fill(b"old", Seen::Nothing, None))
            .await
            .unwrap());
        tokio::time::advance(FENCE / 2).await;
        assert!(store
            .fill(&fill(b"late", Seen::Nothing, None))
            .await
            .unwrap());
        // Nothing is remembered past its deadline.
        assert_eq!(store.evicted.held.load(Relaxed), 0);
        // A fill over nothing fences nothing.
        let store = full_store().await;
        filled(&store, "k").await;
        pressure(&store).await;
        assert!(store
            .fill(&fill(b"again", Seen::Nothing, None))
            .await
            .unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_invalidations_stays_in_the_caps_and_fences_every_key() {
        let store = MemoryStore::new(100, 1 << 20, FENCE);
        for i in 0..1_000u32 {
            store.retire(&format!("gone:{i}"), FENCE).await.unwrap();
        }
        assert!(store.len() <= 100, "{} entries", store.len());
        for i in [0, 500, 999] {
            let key = format!("gone:{i}");
            let late = Fill {
                key: &key,
                ..fill(b"old", Seen::Nothing, None)
            };
            assert!(!store.fill(&late).await.unwrap(), "{key}");
        }
        tokio::time::advance(FENCE).await;
        filled(&store, "gone:0").await;
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_tombstone_is_evicted_like_any_entry() {
        let store = full_store().await;
        store.retire("k", FENCE).await.unwrap();
        tokio::time::advance(FENCE + Duration::from_secs(1)).await;
        pressure(&store).await;
        assert!(store.entries.peek("k").is_none(), "evicted");
        assert_eq!(store.evicted.held.load(Relaxed), 0, "not remembered");
    }

    #[test]
    fn sixteen_concurrent_writers_never_exceed_the_capacity() {
        const CAP: usize = 1_000;
        let store = Arc::new(MemoryStore::new(CAP, 1 << 30, FENCE));
        let writers: Vec<_> = (0..16)
            .map(|w| {
                let store = store.clone();
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_time()
                        .build()
                        .unwrap();
                    rt.block_on(async {
                        let mut most = 0;
                        for i in 0..5_000 {
                            let key = format!("w{w}:{i}");
                            store
                                .set(&key, b"v", Duration::from_secs(60))
                                .await
                                .unwrap();
                            most = most.max(store.len());
                        }
                        most
                    })
                })
            })
            .collect();
        for writer in writers {
            let most = writer.join().unwrap();
            assert!(most <= CAP, "a writer saw {most} entries");
        }
        assert!(store.len() <= CAP);
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_entry_is_never_served_by_any_read() {
        let store = MemoryStore::new(100, 1 << 20, FENCE);
        let one = Fill {
            ttl: Duration::from_secs(1),
            ..fill(b"v", Seen::Nothing, None)
        };
        assert!(store.fill(&one).await.unwrap());
        assert!(store.set_nx("g", b"1", None).await.unwrap());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(store.get("k").await.unwrap(), None);
        assert_eq!(store.get_many(&["k".into()]).await.unwrap(), vec![None]);
        assert_eq!(store.get_with_gen("k", "g").await.unwrap().0, None);
        assert_eq!(store.ttl("k").await.unwrap(), None);
        assert!(store
            .set_nx("k", b"w", Some(Duration::from_secs(1)))
            .await
            .unwrap());
        assert_eq!(store.get("g").await.unwrap().as_deref(), Some(&b"1"[..]));
    }

    #[test]
    fn a_fill_holds_its_generations_lock_when_braces_part_the_two() {
        let store = MemoryStore::new(1000, 1 << 20, FENCE);
        // A namespace with a brace of its own: the entry hashes by `:price:{products`.
        let (key, gen_key) = (
            "shop{:price:{products}:9f8a",
            "shop{:redcache:group:{products}",
        );
        assert_ne!(hash_tag(key), hash_tag(gen_key));
        let fill = Fill {
            key,
            value: b"v",
            ttl: Duration::from_secs(60),
            seen: Seen::Nothing,
            group: Some(GroupFence {
                key: gen_key,
                gen: 1,
                create: true,
                expiring: false,
            }),
        };
        let held = store.lock_fill(&fill);
        for k in [key, gen_key] {
            assert!(store.stripes[store.stripe_of(k)].try_lock().is_err(), "{k}");
        }
        drop(held);
        assert!(store.stripes[store.stripe_of(gen_key)].try_lock().is_ok());
    }

    #[test]
    fn a_grouped_key_and_its_generation_share_a_write_lock() {
        assert_eq!(hash_tag("ns:price:{products}:9f8a"), "products");
        assert_eq!(hash_tag("ns:redcache:group:{products}"), "products");
        assert_eq!(hash_tag("user:{}:1"), "user:{}:1");
        assert_eq!(hash_tag("plain"), "plain");
    }
}
