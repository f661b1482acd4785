//! The in-process store: a map with expiry, for running without Redis and for tests.

use super::Store;
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
    expires: Instant,
}

impl MemoryStore {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        // A panic elsewhere while holding the lock leaves a consistent map: keep using it.
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The live entry at `key`, dropping it if it has expired.
    fn live<'a>(map: &'a mut HashMap<String, Entry>, key: &str) -> Option<&'a Entry> {
        let now = Instant::now();
        if map.get(key).is_some_and(|e| e.expires <= now) {
            map.remove(key);
        }
        map.get(key)
    }
}

impl Store for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let mut map = self.lock();
        Ok(Self::live(&mut map, key).map(|e| e.value.clone()))
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<()> {
        let now = Instant::now();
        let expires = now
            .checked_add(ttl)
            .unwrap_or(now + Duration::from_secs(1 << 40));
        let mut map = self.lock();
        if self.writes.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            map.retain(|_, e| e.expires > now);
        }
        map.insert(
            key.to_owned(),
            Entry {
                value: value.to_vec(),
                expires,
            },
        );
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        let mut map = self.lock();
        let live = Self::live(&mut map, key).is_some();
        map.remove(key);
        Ok(live)
    }

    async fn ttl(&self, key: &str) -> Result<Option<Duration>> {
        let mut map = self.lock();
        let now = Instant::now();
        Ok(Self::live(&mut map, key).map(|e| e.expires - now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn entries_expire_on_time() {
        let store = MemoryStore::default();
        store.set("k", b"v", Duration::from_secs(10)).await.unwrap();
        assert_eq!(store.ttl("k").await.unwrap(), Some(Duration::from_secs(10)));
        tokio::time::advance(Duration::from_millis(9_999)).await;
        assert_eq!(store.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(store.get("k").await.unwrap(), None);
        assert!(!store.delete("k").await.unwrap());
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
