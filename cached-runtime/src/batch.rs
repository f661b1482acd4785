//! Batch cache-aside: many ids, one `MGET`, one load of the missing ones, one pipelined
//! write, under the same rules as single calls (hit counting, the size limit, the fill
//! deadline, the fence).

use crate::core::Core;
use crate::key::KeyArgs;
use crate::shape::{Opt, Outcome, Plain, Shape};
use crate::stats::Event;
use crate::store::{Fill, Seen, Store};
use crate::ttl::Policy;
use crate::Error;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::hash::Hash;
use std::time::Duration;

/// An id whose entry was not a hit.
struct Missing<'a, I> {
    id: &'a I,
    key: &'a str,
    /// What the read saw at its key: `Some(None)` nothing, `Some(Some(..))` these bytes;
    /// `None` when nothing is to be written there: the read failed, or the entry is one a
    /// batch must not write over.
    seen: Option<Option<&'a [u8]>>,
}

impl Core {
    /// Reads again from the master the keys where a replica found nothing or a tombstone,
    /// so that what a miss acts on, and what its fill must find again, is the master's (as
    /// for single calls). If that read fails, the replica's hits still answer; the misses
    /// are returned, not to be written over (what the master holds there is not known).
    async fn confirm_misses(
        &self,
        prefix: &str,
        keys: &[String],
        entries: &mut [Option<Vec<u8>>],
    ) -> Vec<bool> {
        let missed: Vec<usize> = (0..entries.len())
            .filter(|&i| entries[i].as_deref().is_none_or(crate::codec::is_tombstone))
            .collect();
        let mut unknown = vec![false; entries.len()];
        if missed.is_empty() {
            return unknown;
        }
        let again: Vec<String> = missed.iter().map(|&i| keys[i].clone()).collect();
        match self.op(self.backend.get_many(&again)).await {
            Ok(fresh) => {
                for (i, entry) in missed.into_iter().zip(fresh) {
                    entries[i] = entry;
                }
            }
            Err(err) => {
                self.fault(prefix, &err);
                for i in missed {
                    unknown[i] = true;
                }
            }
        }
        unknown
    }

    /// See [`Cache::get_or_insert_many`](crate::Cache::get_or_insert_many).
    pub(crate) async fn get_or_insert_many<I, V, F, Fut>(
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
        let namespace = self.config.namespace();
        let mut keyed = Vec::with_capacity(ids.len());
        let mut uncacheable = Vec::new();
        // Each id once: `load` gets it once, and one fill goes to its key.
        let mut distinct = HashSet::with_capacity(ids.len());
        for id in ids {
            if !distinct.insert(id) {
                continue;
            }
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
        // No operation for no keys: it would succeed without Redis, and tell the breaker
        // so.
        let (mut read, replica) = match keys.is_empty() {
            true => (Some(Vec::new()), false),
            false => match self
                .relaxed_op("MGET", &keys, self.backend.get_many(&keys))
                .await
            {
                Ok((entries, replica)) => (Some(entries), replica),
                Err(err) => {
                    self.fault(prefix, &err);
                    (None, false)
                }
            },
        };
        let mut unknown = Vec::new();
        if let (Some(entries), true) = (&mut read, replica) {
            unknown = self.confirm_misses(prefix, &keys, entries).await;
        }

        let mut out = HashMap::with_capacity(ids.len());
        let mut missing: Vec<Missing<'_, I>> = Vec::new();
        for (i, (id, key)) in keyed.iter().enumerate() {
            let mut entry = read
                .as_ref()
                .filter(|_| !unknown.get(i).copied().unwrap_or(false))
                .map(|entries| entries.get(i).and_then(|e| e.as_deref()));
            if let Some(Some(bytes)) = entry {
                // Read as `Option<V>`: a single-id function returning `Option` shares
                // these entries, and its cached `None` says the id does not exist.
                match <Opt as Shape<Option<V>>>::decode(bytes) {
                    // An entry of a tagged function, or written in a group: a batch cannot
                    // check those generations, so it is a miss. Nor is it written over: an
                    // untagged, ungrouped value there would escape their invalidations. The
                    // id's loaded value is returned, not stored.
                    Ok((_, stamp)) if stamp.tags != 0 || stamp.gen != 0 => entry = None,
                    // One past its TTL, kept for a single-id function's stale window: a
                    // miss, filled over.
                    Ok((_, stamp)) if stamp.expired() => {}
                    Ok((found, _)) => match self.count_hit(Some(prefix), found) {
                        Some((Some(value), _)) => {
                            out.insert((*id).clone(), value);
                            continue;
                        }
                        Some((None, _)) => continue,
                        None => {}
                    },
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
        self.record(Some(prefix), Event::Misses(wanted as u64));
        let mut to_load: Vec<I> = missing.iter().map(|m| m.id.clone()).collect();
        to_load.extend(uncacheable);
        let loaded = load(to_load).await;
        if missing.iter().all(|m| m.seen.is_none()) {
            // Nothing to write: the read failed, every id was uncacheable, or every entry
            // read was one a batch cannot check (tagged or grouped) and must not write over.
            out.extend(loaded);
            return out;
        }

        // Like every fill: not after an invalidation's tombstone may have expired (checked
        // again once the values are encoded, below; here, so that a batch already late
        // does not encode them for nothing).
        if self.past_fill_deadline(started) {
            let writable = missing
                .iter()
                .filter(|m| m.seen.is_some() && loaded.contains_key(m.id));
            self.refuse_late(prefix, writable.count());
            out.extend(loaded);
            return out;
        }
        let policy = Policy::exact(ttl);
        let mut encoded = Vec::with_capacity(missing.len());
        for Missing { id, key, seen } in &missing {
            let (Some(value), Some(seen)) = (loaded.get(*id), seen) else {
                continue;
            };
            // Over an entry the read saw, the store may keep it past its TTL (see
            // `Core::stamp_kept`).
            let read_saw = seen.map_or(Seen::Nothing, Seen::Bytes);
            let stamp = self.stamp_kept(Default::default(), policy.value_ttl(), &read_saw);
            match <Plain as Shape<V>>::encode(value, stamp, self.config.format()) {
                Outcome::Value(Ok(bytes)) => match self.check_size(bytes.len()) {
                    Ok(()) => encoded.push((*key, bytes, *seen)),
                    Err(err) => self.fault(key, &err),
                },
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
        if fills.is_empty() {
            // Nothing to write (the read failed, or nothing loaded could be stored): no
            // operation, which would succeed without Redis and reset the breaker.
            out.extend(loaded);
            return out;
        }
        // Checked again once the values are encoded, which takes its time too (a large
        // batch, or compression), just before the write.
        if self.past_fill_deadline(started) {
            self.refuse_late(prefix, fills.len());
            out.extend(loaded);
            return out;
        }
        match self.op(self.backend.fill_many(&fills)).await {
            Ok(stored) => {
                for stored in stored {
                    self.record(
                        Some(prefix),
                        if stored {
                            Event::Store
                        } else {
                            Event::Conflict
                        },
                    );
                }
            }
            Err(err) => self.fault(prefix, &err),
        }
        out.extend(loaded);
        out
    }

    /// Counts the `n` values of a batch of `prefix` not written for coming past the fill
    /// deadline, each a conflict, as a single call's late fill is.
    fn refuse_late(&self, prefix: &str, n: usize) {
        for _ in 0..n {
            self.record(Some(prefix), Event::Conflict);
        }
    }
}
