//! Batch cache-aside: many ids, one `MGET`, one load of the missing ones, one pipelined
//! write.

use crate::client::Cache;
use crate::key::KeyArgs;
use crate::private::{Found, Outcome, Plain, Shape};
use crate::stats::Counters;
use crate::store::{Fill, Seen, Store};
use crate::ttl::Policy;
use crate::Error;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// An id whose entry was not a hit.
struct Missing<'a, I> {
    id: &'a I,
    key: &'a str,
    /// What the read saw at its key: `Some(None)` nothing, `Some(Some(..))` these bytes;
    /// `None` when the read failed (then nothing is written).
    seen: Option<Option<&'a [u8]>>,
}

impl Cache {
    /// Cache-aside for many ids at once: the entries present are read with one `MGET`,
    /// `load` runs once with the ids that missed, and what it returns is stored with one
    /// pipelined write (each entry for exactly `ttl`). Returns the value of every id that
    /// was cached or loaded; an id `load` leaves out is simply absent (and not cached).
    ///
    /// Each id has the key a `#[cached(prefix = "..")]` function of that one argument
    /// would use (`[{namespace}:]{prefix}:{md5 of [id]}`), so a batch loader and a
    /// single-id cached function share entries; `invalidate!` on the single function
    /// invalidates the batch's entry too. Stores are fenced like every fill (an entry
    /// invalidated while `load` ran is not overwritten) and the call fails open: if Redis
    /// fails, `load` gets every id and its result is returned. Batches do not share
    /// single flights with each other.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let cache = redcache::Cache::memory();
    /// let ttl = Duration::from_secs(60);
    /// let load = |ids: Vec<u64>| async move {
    ///     // SELECT id, name FROM users WHERE id = ANY($1)
    ///     ids.into_iter().filter(|id| *id != 3).map(|id| (id, format!("user {id}"))).collect()
    /// };
    /// let users: HashMap<u64, String> = cache.get_or_insert_many("user", &[1, 2, 3], ttl, load).await;
    /// assert_eq!(users.len(), 2); // 3 does not exist
    /// let again: HashMap<u64, String> =
    ///     cache.get_or_insert_many("user", &[1, 2], ttl, |_| async { HashMap::new() }).await;
    /// assert_eq!(again[&2], "user 2"); // both hits: `load` got nothing to do
    /// # }
    /// ```
    pub async fn get_or_insert_many<I, V, F, Fut>(
        &self,
        prefix: &str,
        ids: &[I],
        ttl: Duration,
        load: F,
    ) -> HashMap<I, V>
    where
        I: Serialize + Eq + Hash + Clone,
        V: Serialize + DeserializeOwned,
        F: FnOnce(Vec<I>) -> Fut,
        Fut: Future<Output = HashMap<I, V>>,
    {
        let namespace = self.config().namespace();
        let mut keyed = Vec::with_capacity(ids.len());
        let mut uncacheable = Vec::new();
        for id in ids {
            match KeyArgs::new().arg(id).key(namespace, prefix, None) {
                Ok(key) => keyed.push((id, key)),
                Err(err) => {
                    self.fault(prefix, &err);
                    uncacheable.push(id.clone());
                }
            }
        }
        let keys: Vec<String> = keyed.iter().map(|(_, key)| key.clone()).collect();
        let started = tokio::time::Instant::now();
        let read = match self.op(self.inner.backend.get_many(&keys)).await {
            Ok(entries) => Some(entries),
            Err(err) => {
                self.fault(prefix, &err);
                None
            }
        };

        let mut out = HashMap::with_capacity(ids.len());
        let mut missing: Vec<Missing<'_, I>> = Vec::new();
        for (i, (id, key)) in keyed.iter().enumerate() {
            let entry = read
                .as_ref()
                .map(|entries| entries.get(i).and_then(|e| e.as_deref()));
            if let Some(Some(bytes)) = entry {
                match <Plain as Shape<V>>::decode(bytes) {
                    Ok((Found::Value(value), _)) => {
                        Counters::bump(&self.inner.counters.hits);
                        out.insert((*id).clone(), value);
                        continue;
                    }
                    Ok(_) => {}
                    Err(err) => self.fault(key, &Error::decode_json(&err)),
                }
            }
            missing.push(Missing {
                id,
                key,
                seen: entry,
            });
        }
        if missing.is_empty() && uncacheable.is_empty() {
            return out;
        }
        let wanted = missing.len() + uncacheable.len();
        self.inner.counters.misses.fetch_add(wanted as u64, Relaxed);
        let mut to_load: Vec<I> = missing.iter().map(|m| m.id.clone()).collect();
        to_load.extend(uncacheable);
        let loaded = load(to_load).await;

        // Like every fill: not after an invalidation's tombstone may have expired.
        if self.past_fill_deadline(started) {
            Counters::bump(&self.inner.counters.conflicts);
            out.extend(loaded);
            return out;
        }
        let policy = Policy::exact(ttl);
        let mut encoded = Vec::with_capacity(missing.len());
        for Missing { id, key, seen } in &missing {
            let (Some(value), Some(seen)) = (loaded.get(*id), seen) else {
                continue;
            };
            match <Plain as Shape<V>>::encode(value, Default::default()) {
                Outcome::Value(Ok(bytes)) if bytes.len() <= self.config().max_value_bytes() => {
                    encoded.push((*key, bytes, *seen));
                }
                Outcome::Value(Ok(bytes)) => self.fault(
                    key,
                    &Error::TooLarge {
                        size: bytes.len(),
                        max: self.config().max_value_bytes(),
                    },
                ),
                Outcome::Value(Err(source)) => self.fault(key, &Error::Encode { source }),
                Outcome::Null(_) | Outcome::Skip => {}
            }
        }
        let fills: Vec<Fill<'_>> = encoded
            .iter()
            .map(|(key, bytes, seen)| Fill {
                key,
                value: bytes,
                ttl: policy.value_ttl(),
                seen: seen.map_or(Seen::Nothing, Seen::Bytes),
                group: None,
            })
            .collect();
        match self.op(self.inner.backend.fill_many(&fills)).await {
            Ok(stored) => {
                for stored in stored {
                    let counter = if stored {
                        &self.inner.counters.stores
                    } else {
                        &self.inner.counters.conflicts
                    };
                    Counters::bump(counter);
                }
            }
            Err(err) => self.fault(prefix, &err),
        }
        out.extend(loaded);
        out
    }
}
