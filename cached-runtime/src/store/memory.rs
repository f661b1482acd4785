//! The in-process store: a map with expiry, for running without Redis and for tests.

use super::{keeps_its_fence, EntryAndGen, Fill, Seen, Store};
use crate::Result;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;
// tokio's clock, so tests can pause and advance time instead of sleeping.
use tokio::time::Instant;

/// Writes between two sweeps of expired entries.
const SWEEP_EVERY: u64 = 1024;

#[derive(Debug, Default)]
pub(crate) struct MemoryStore {
    map: Mutex<HashMap<String, Entry>>,
    writes: AtomicU64,
}

#[derive(Debug)]
struct Entry {
    value: Vec<u8>,
    /// `None`: never expires (group generations).
    expires: Option<Instant>,
}

type Map = HashMap<String, Entry>;

impl MemoryStore {
    fn lock(&self) -> MutexGuard<'_, Map> {
        // A panic elsewhere while holding the lock leaves a consistent map: keep using it.
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The live entry at `key`, dropping it if it has expired.
    fn live<'a>(map: &'a mut Map, key: &str) -> Option<&'a Entry> {
        let now = Instant::now();
        if map
            .get(key)
            .is_some_and(|e| e.expires.is_some_and(|t| t <= now))
        {
            map.remove(key);
        }
        map.get(key)
    }

    fn value(map: &mut Map, key: &str) -> Option<Vec<u8>> {
        Self::live(map, key).map(|e| e.value.clone())
    }

    /// [`Store::fill`] under the lock already held.
    fn fill_locked(&self, map: &mut Map, fill: &Fill<'_>) -> bool {
        let current = Self::live(map, fill.key).map(|e| e.value.as_slice());
        let unchanged = match fill.seen {
            Seen::Nothing => current.is_none(),
            // Or nothing: what it read has expired since (an invalidation leaves a
            // tombstone, never nothing).
            Seen::Bytes(seen) => current.is_none_or(|c| c == seen),
            // This store holds no other types; a read never reports one.
            Seen::WrongType | Seen::Any => true,
        };
        if !unchanged {
            return false;
        }
        if let Some(group) = fill.group {
            let stamp = group.gen.to_string();
            match Self::live(map, group.key) {
                Some(gen) if gen.value != stamp.as_bytes() => return false,
                Some(_) => {}
                None if group.create => self.insert(map, group.key, stamp.as_bytes(), None),
                None => return false,
            }
        }
        self.insert(map, fill.key, fill.value, Some(fill.ttl));
        true
    }

    /// Inserts an entry, sweeping expired ones now and then so memory stays bounded.
    fn insert(&self, map: &mut Map, key: &str, value: &[u8], ttl: Option<Duration>) {
        let now = Instant::now();
        let expires = ttl.map(|ttl| {
            now.checked_add(ttl)
                .unwrap_or(now + Duration::from_secs(1 << 40))
        });
        if self.writes.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            map.retain(|_, e| e.expires.is_none_or(|t| t > now));
        }
        map.insert(
            key.to_owned(),
            Entry {
                value: value.to_vec(),
                expires,
            },
        );
    }
}

impl Store for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(Self::value(&mut self.lock(), key))
    }

    async fn get_with_gen(&self, key: &str, gen_key: &str) -> Result<EntryAndGen> {
        let mut map = self.lock();
        Ok((Self::value(&mut map, key), Self::value(&mut map, gen_key)))
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
        let mut map = self.lock();
        Ok(keys.iter().map(|k| Self::value(&mut map, k)).collect())
    }

    async fn fill_many(&self, fills: &[Fill<'_>]) -> Result<Vec<bool>> {
        let mut map = self.lock();
        Ok(fills
            .iter()
            .map(|f| self.fill_locked(&mut map, f))
            .collect())
    }

    async fn fill(&self, fill: &Fill<'_>) -> Result<bool> {
        let mut map = self.lock();
        Ok(self.fill_locked(&mut map, fill))
    }
    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<()> {
        let mut map = self.lock();
        self.insert(&mut map, key, value, Some(ttl));
        Ok(())
    }

    async fn replace(&self, key: &str, value: &[u8], ttl: Duration) -> Result<Option<Vec<u8>>> {
        let mut map = self.lock();
        let old = Self::value(&mut map, key);
        self.insert(&mut map, key, value, Some(ttl));
        Ok(old)
    }

    async fn set_persistent(&self, key: &str, value: &[u8]) -> Result<()> {
        let mut map = self.lock();
        self.insert(&mut map, key, value, None);
        Ok(())
    }

    async fn set_nx(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool> {
        let mut map = self.lock();
        if Self::live(&mut map, key).is_some() {
            return Ok(false);
        }
        self.insert(&mut map, key, value, Some(ttl));
        Ok(true)
    }

    async fn delete_if(&self, key: &str, value: &[u8]) -> Result<bool> {
        let mut map = self.lock();
        if Self::live(&mut map, key).is_some_and(|e| e.value == value) {
            map.remove(key);
            return Ok(true);
        }
        Ok(false)
    }

    async fn ttl(&self, key: &str) -> Result<Option<Duration>> {
        let mut map = self.lock();
        let now = Instant::now();
        Ok(Self::live(&mut map, key).map(|e| e.expires.map_or(Duration::MAX, |t| t - now)))
    }

    async fn invalidate_prefix(&self, prefix: &str, _batch: usize, ttl: Duration) -> Result<u64> {
        let mut map = self.lock();
        let now = Instant::now();
        let expires = now.checked_add(ttl);
        let mut replaced = 0;
        for (key, e) in map.iter_mut() {
            let live = e.expires.is_none_or(|t| t > now);
            if key.starts_with(prefix) && live && !keeps_its_fence(key.as_bytes(), &e.value) {
                e.value = crate::codec::encode_tombstone();
                e.expires = expires.or(e.expires);
                replaced += 1;
            }
        }
        Ok(replaced)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::GroupFence;

    #[tokio::test(start_paused = true)]
    async fn entries_expire_on_time() {
        let store = MemoryStore::default();
        store.set("k", b"v", Duration::from_secs(10)).await.unwrap();
        assert_eq!(store.ttl("k").await.unwrap(), Some(Duration::from_secs(10)));
        tokio::time::advance(Duration::from_millis(9_999)).await;
        assert_eq!(store.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(store.get("k").await.unwrap(), None);
        assert_eq!(
            store
                .invalidate_prefix("k", 10, Duration::from_secs(1))
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
        let store = MemoryStore::default();
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
        let store = MemoryStore::default();
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
        let store = MemoryStore::default();
        let fence = |gen, create| GroupFence {
            key: "g",
            gen,
            create,
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

    #[tokio::test]
    async fn a_prefix_invalidation_tombstones_that_family_only() {
        let store = MemoryStore::default();
        let ttl = Duration::from_secs(60);
        for key in ["user:1", "user:2", "user*:1", "users:1"] {
            store.set(key, b"v", ttl).await.unwrap();
        }
        store.set("user:3:lock", b"123", ttl).await.unwrap();
        assert_eq!(store.invalidate_prefix("user:", 10, ttl).await.unwrap(), 2);
        for key in ["user:1", "user:2"] {
            let raw = store.get(key).await.unwrap().unwrap();
            assert!(crate::codec::is_tombstone(&raw), "{key}");
        }
        assert_eq!(
            store.get("user:3:lock").await.unwrap().as_deref(),
            Some(&b"123"[..]),
            "a lease is kept"
        );
        assert_eq!(
            store.invalidate_prefix("user:", 10, ttl).await.unwrap(),
            0,
            "tombstones are kept and not counted again"
        );
        assert_eq!(store.invalidate_prefix("user*:", 10, ttl).await.unwrap(), 1);
        assert_eq!(
            store.get("users:1").await.unwrap().as_deref(),
            Some(&b"v"[..])
        );
    }

    #[tokio::test(start_paused = true)]
    async fn expired_entries_are_swept_so_memory_stays_bounded() {
        let store = MemoryStore::default();
        for i in 0..SWEEP_EVERY {
            store
                .set(&format!("k{i}"), b"v", Duration::from_secs(1))
                .await
                .unwrap();
        }
        tokio::time::advance(Duration::from_secs(2)).await;
        for i in 0..SWEEP_EVERY {
            store
                .set(&format!("n{i}"), b"v", Duration::from_secs(60))
                .await
                .unwrap();
        }
        assert_eq!(store.lock().len() as u64, SWEEP_EVERY);
    }
}
