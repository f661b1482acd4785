//! Write-through (`put!`): stores a value as a call's result under the function's TTL,
//! jitter and null rules, over whatever is there, but never into a group that was
//! invalidated since its generation was read. A write that cannot store its value retires
//! the entry instead, so that the value it was to replace is not served on.

use crate::core::Core;
use crate::key::{new_generation, parse_gen, BadGeneration};
use crate::shape::{Hooks, Outcome, Shape};
use crate::stats::Event;
use crate::store::{Fill, GroupFence, Seen, Store};
use crate::ttl::Policy;
use crate::{Error, Result};
use std::time::Duration;

impl Core {
    /// Stores `value` as the result of the call whose key is `key` (write-through), or
    /// retires the entry when the value is not cached for the function or cannot be stored
    /// (then the error is still returned). Its store, or its refusal, is counted under
    /// `prefix`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn put<K: Shape<O>, O>(
        &self,
        prefix: Option<&str>,
        key: &str,
        group: Option<&str>,
        tags: u64,
        policy: &Policy,
        hooks: Hooks<O>,
        value: &O,
    ) -> Result<()> {
        let gen_key = group.map(|group| self.group_key(group));
        self.put_fenced::<K, O>(
            prefix,
            key,
            gen_key.as_deref(),
            false,
            tags,
            policy,
            hooks,
            value,
        )
        .await
    }

    /// [`put`](Self::put) fenced by the generation at `gen_key`, which expires if
    /// `gen_expires` (a path's, of the HTTP layer).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn put_fenced<K: Shape<O>, O>(
        &self,
        prefix: Option<&str>,
        key: &str,
        gen_key: Option<&str>,
        gen_expires: bool,
        tags: u64,
        policy: &Policy,
        hooks: Hooks<O>,
        value: &O,
    ) -> Result<()> {
        if hooks.failed(value) {
            // An `Err` behind a type alias: never a value to store, as the shape's own.
            return Err(Error::NotCacheable);
        }
        if !hooks.caches(value) {
            // Not cached for this function: the next call computes it.
            return self.evict_key(key).await;
        }
        let stored = async {
            let current = match gen_key {
                Some(gen_key) => match self.op(self.backend.get(gen_key)).await? {
                    Some(raw) => Some(parse_gen(&raw).ok_or(Error::decode(BadGeneration))?),
                    None => None,
                },
                None => None,
            };
            self.put_from::<K, O>(
                prefix,
                key,
                gen_key,
                current,
                gen_expires,
                tags,
                policy,
                hooks,
                value,
            )
            .await
        };
        match stored.await {
            Ok(Put::Done) => Ok(()),
            // `None` is not cached for this function: the next call computes it.
            Ok(Put::Uncached) => self.evict_key(key).await,
            // An `Err` is never a value to store (a usage error): the entry stays as it was.
            Err(err @ Error::NotCacheable) => Err(err),
            Err(err) => self.retire_instead(key, key, err).await,
        }
    }

    /// The fallback of a write of `key` that failed with `err` after it set out to replace
    /// the entry (too large, not serializable, the store faulted, timed out or is skipped by
    /// the open breaker): the entry is retired, as an invalidation (which the breaker never
    /// skips), so that no process serves the value it was to replace until its TTL; `err`
    /// is still returned, since the new value was not stored. A retirement that fails too
    /// is counted and logged as a fault, naming the key as `shown`.
    pub(crate) async fn retire_instead(&self, key: &str, shown: &str, err: Error) -> Result<()> {
        if let Err(retire) = self.evict_key(key).await {
            self.fault(shown, &retire);
        }
        Err(err)
    }

    /// The write of [`put_fenced`](Self::put_fenced), the group's generation read as
    /// `current`. A group without one gets one first, created here (only if there is still
    /// none) rather than by the fill: a miss that read none and fills meanwhile would
    /// create it and store its older value, which this write's fill (refused where a
    /// generation exists) would then leave. Created this way, the miss's fill is refused
    /// instead; and an invalidation of the group after it still refuses this fill. If one
    /// was created since the read (a miss's fill, or an invalidation of the group, which a
    /// plain write would undo), the group changed since the read: the entry is retired,
    /// with whatever older value a miss stored there, and this value is not stored.
    #[allow(clippy::too_many_arguments)]
    async fn put_from<K: Shape<O>, O>(
        &self,
        prefix: Option<&str>,
        key: &str,
        gen_key: Option<&str>,
        current: Option<u64>,
        gen_expires: bool,
        tags: u64,
        policy: &Policy,
        hooks: Hooks<O>,
        value: &O,
    ) -> Result<Put> {
        let fence = match (gen_key, current) {
            (Some(gen_key), None) if !gen_expires => {
                let gen = new_generation();
                let text = gen.to_string();
                let created = self
                    .op(self.backend.set_nx(gen_key, text.as_bytes(), None))
                    .await?;
                if !created {
                    self.evict_key(key).await?;
                    self.record(prefix, Event::Conflict);
                    return Ok(Put::Done);
                }
                Some(GroupFence::at(gen_key, Some(gen)))
            }
            (Some(gen_key), current) => {
                Some(GroupFence::at(gen_key, current).expiring(gen_expires))
            }
            (None, _) => None,
        };
        let gen = fence.map_or(0, |f| f.gen);
        let value_ttl = hooks.value_ttl(policy, value);
        let (mut stamp, kept) = hooks.stamp(policy, value, gen, value_ttl, Duration::ZERO);
        stamp.tags = tags;
        // A writer's write: the store keeps it as long as it fences older fills.
        let seen = Seen::Any;
        let value_stamp = self.stamp_kept(stamp, value_ttl.saturating_add(kept), &seen);
        let (bytes, ttl) = match K::encode(value, value_stamp, policy.format()) {
            Outcome::Value(bytes) => (
                bytes.map_err(|source| Error::Encode { source })?,
                value_ttl.saturating_add(kept),
            ),
            Outcome::Null(bytes) => match policy.null_ttl() {
                Some(ttl) => (self.null_kept(bytes, stamp, ttl, &seen, policy), ttl),
                None => return Ok(Put::Uncached),
            },
            Outcome::Skip => return Err(Error::NotCacheable),
        };
        let fill = Fill {
            key,
            value: &bytes,
            ttl,
            seen,
            group: fence,
        };
        let stored = self
            .write_checked(prefix, || self.backend.fill(&fill), bytes.len())
            .await;
        // The local copy goes now, not when Redis's push for the write arrives: the next
        // call in this process reads the new value.
        self.local_changed(key);
        if !stored? {
            // The group was invalidated meanwhile: not storing is what that asked for.
            self.record(prefix, Event::Conflict);
        }
        Ok(Put::Done)
    }
}

/// How a write-through's store ended, when it did not fail.
enum Put {
    /// The value is stored, or refused by an invalidation of its group since the read
    /// (which retired the entry).
    Done,
    /// The value is a `None` its function does not cache (`null_ttl = 0`): the entry is to
    /// be retired instead.
    Uncached,
}

#[cfg(test)]
mod tests {
    use crate::codec::{self, Decoded};
    use crate::shape::{Hooks, Plain};
    use crate::store::{Fill, GroupFence, Seen, Store};
    use crate::ttl::Policy;
    use std::time::Duration;

    fn encoded(text: &str) -> Vec<u8> {
        codec::encode_value(&text.to_owned(), Default::default(), Default::default()).unwrap()
    }

    async fn stored(core: &crate::core::Core, key: &str) -> Decoded<String> {
        let raw = core.backend.get(key).await.unwrap().unwrap();
        codec::decode::<String>(&raw).unwrap().body
    }

    /// `put!` of `value` at `key` of group `g`, whose generation it read as `read`.
    async fn put(core: &crate::core::Core, key: &str, read: Option<u64>, value: &str) {
        let gen_key = core.group_key("g");
        let policy = Policy::seconds(60, 0, 0);
        let value = value.to_owned();
        core.put_from::<Plain, String>(
            None,
            key,
            Some(&gen_key),
            read,
            false,
            0,
            &policy,
            Hooks::none(),
            &value,
        )
        .await
        .unwrap();
    }

    /// A miss that read no generation fills after a `put!` read none too: the miss's
    /// older value is not kept (nor the `put!`'s, whose group changed since its read).
    #[tokio::test]
    async fn a_put_retires_what_a_miss_stored_after_creating_the_group_generation() {
        let cache = crate::Cache::memory();
        let core = cache.core();
        let gen_key = core.group_key("g");
        let key = "p:{g}:1";
        let miss = Fill {
            key,
            value: &encoded("old"),
            ttl: Duration::from_secs(60),
            seen: Seen::Nothing,
            group: Some(GroupFence::at(&gen_key, None)),
        };
        assert!(core.backend.fill(&miss).await.unwrap());
        // The `put!` read no generation, before the miss's fill.
        put(core, key, None, "new").await;
        assert!(matches!(stored(core, key).await, Decoded::Gone));
        assert_eq!(cache.stats().conflicts, 1);
    }

    /// A `put!` that read no generation, then an invalidation of the group that creates
    /// one: the `put!` does not write over it, and stores nothing.
    #[tokio::test]
    async fn a_put_never_undoes_an_invalidation_that_created_the_group_generation() {
        let cache = crate::Cache::memory();
        let core = cache.core();
        let gen_key = core.group_key("g");
        let key = "p:{g}:3";
        core.invalidate_group("g").await.unwrap();
        let invalidated = core.backend.get(&gen_key).await.unwrap();
        assert!(invalidated.is_some());
        put(core, key, None, "old").await;
        assert_eq!(core.backend.get(&gen_key).await.unwrap(), invalidated);
        assert!(matches!(stored(core, key).await, Decoded::Gone));
        assert_eq!(cache.stats().conflicts, 1);
    }

    /// A `put!` whose group was invalidated after it read the generation stores nothing.
    #[tokio::test]
    async fn a_put_never_writes_into_a_group_invalidated_since_its_read() {
        let cache = crate::Cache::memory();
        let core = cache.core();
        let key = "p:{g}:2";
        core.invalidate_group("g").await.unwrap();
        let raw = core
            .backend
            .get(&core.group_key("g"))
            .await
            .unwrap()
            .unwrap();
        let read = crate::key::parse_gen(&raw);
        core.invalidate_group("g").await.unwrap();
        put(core, key, read, "old").await;
        assert_eq!(core.backend.get(key).await.unwrap(), None);
        assert_eq!(cache.stats().conflicts, 1);
    }
}
