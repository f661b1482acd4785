//! Write-through (`put!`): stores a value as a call's result under the function's TTL,
//! jitter and null rules, over whatever is there, but never into a group that was
//! invalidated since its generation was read.

use crate::core::Core;
use crate::key::{parse_gen, BadGeneration};
use crate::shape::{Hooks, Outcome, Shape};
use crate::stats::Event;
use crate::store::{Fill, GroupFence, Seen, Store};
use crate::ttl::Policy;
use crate::{Error, Result};
use std::time::Duration;

impl Core {
    /// Stores `value` as the result of the call whose key is `key` (write-through).
    pub(crate) async fn put<K: Shape<O>, O>(
        &self,
        key: &str,
        group: Option<&str>,
        tags: u64,
        policy: &Policy,
        hooks: Hooks<O>,
        value: &O,
    ) -> Result<()> {
        let gen_key = group.map(|group| self.group_key(group));
        self.put_fenced::<K, O>(key, gen_key.as_deref(), false, tags, policy, hooks, value)
            .await
    }

    /// [`put`](Self::put) fenced by the generation at `gen_key`, which expires if
    /// `gen_expires` (a path's, of the HTTP layer).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn put_fenced<K: Shape<O>, O>(
        &self,
        key: &str,
        gen_key: Option<&str>,
        gen_expires: bool,
        tags: u64,
        policy: &Policy,
        hooks: Hooks<O>,
        value: &O,
    ) -> Result<()> {
        if !hooks.caches(value) {
            // Not cached for this function: the next call computes it.
            return self.invalidate_key(key).await.map(drop);
        }
        let fence = self.read_fence(gen_key, gen_expires).await?;
        self.put_from::<K, O>(key, fence, gen_key, gen_expires, tags, policy, hooks, value)
            .await
    }

    /// The fence of the generation at `gen_key` as it is now (none without a group).
    async fn read_fence<'k>(
        &self,
        gen_key: Option<&'k str>,
        gen_expires: bool,
    ) -> Result<Option<GroupFence<'k>>> {
        let Some(gen_key) = gen_key else {
            return Ok(None);
        };
        let current = match self.op(self.backend.get(gen_key)).await? {
            Some(raw) => Some(parse_gen(&raw).ok_or(Error::decode(BadGeneration))?),
            None => None,
        };
        Ok(Some(GroupFence::at(gen_key, current).expiring(gen_expires)))
    }

    /// The write of [`put_fenced`](Self::put_fenced), fenced by `fence` as first read. A
    /// group with no generation yet gets one from the first fill, maybe that of a miss that
    /// read nothing before this write and stores its older value: then the generation is
    /// read again and the write made again under it (twice at most).
    #[allow(clippy::too_many_arguments)]
    async fn put_from<K: Shape<O>, O>(
        &self,
        key: &str,
        mut fence: Option<GroupFence<'_>>,
        gen_key: Option<&str>,
        gen_expires: bool,
        tags: u64,
        policy: &Policy,
        hooks: Hooks<O>,
        value: &O,
    ) -> Result<()> {
        for tries_left in (0..3).rev() {
            let created = fence.is_some_and(|f| f.create);
            let gen = fence.map_or(0, |f| f.gen);
            let value_ttl = hooks.value_ttl(policy, value);
            let (mut stamp, kept) = hooks.stamp(policy, value, gen, value_ttl, Duration::ZERO);
            stamp.tags = tags;
            let (bytes, ttl) = match K::encode(value, stamp, policy.format()) {
                Outcome::Value(bytes) => (
                    bytes.map_err(|source| Error::Encode { source })?,
                    value_ttl.saturating_add(kept),
                ),
                Outcome::Null(bytes) => match policy.null_ttl() {
                    Some(ttl) => (bytes, ttl),
                    // `None` is not cached for this function: the next call computes it.
                    None => return self.invalidate_key(key).await.map(drop),
                },
                Outcome::Skip => return Err(Error::NotCacheable),
            };
            let fill = Fill {
                key,
                value: &bytes,
                ttl,
                seen: Seen::Any,
                group: fence,
            };
            let stored = self
                .write_checked(None, || self.backend.fill(&fill), bytes.len())
                .await;
            // The local copy goes now, not when Redis's push for the write arrives: the
            // next call in this process reads the new value.
            self.local_changed(key);
            if stored? {
                break;
            }
            if !created || tries_left == 0 {
                // The group was invalidated meanwhile: not storing is what that asked for.
                self.record(None, Event::Conflict);
                break;
            }
            fence = self.read_fence(gen_key, gen_expires).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::codec::{self, Decoded};
    use crate::shape::{Hooks, Plain};
    use crate::store::{Fill, GroupFence, Seen, Store};
    use crate::ttl::Policy;
    use std::time::Duration;

    /// A miss that read no generation fills first, creating one and storing its older
    /// value; a `put!` that also read none before that is refused once, then made under the
    /// generation the miss created.
    #[tokio::test]
    async fn a_put_outlives_a_miss_that_created_the_group_generation_first() {
        let cache = crate::Cache::memory();
        let core = cache.core();
        let gen_key = core.group_key("g");
        let key = "p:{g}:1";
        let policy = Policy::seconds(60, 0, 0);
        let miss = Fill {
            key,
            value: &codec::encode_value(&"old", Default::default(), Default::default()).unwrap(),
            ttl: Duration::from_secs(60),
            seen: Seen::Nothing,
            group: Some(GroupFence::at(&gen_key, None)),
        };
        assert!(core.backend.fill(&miss).await.unwrap());
        // What the `put!` read before the miss's fill: no generation.
        let read_before = Some(GroupFence::at(gen_key.as_str(), None));
        let new = "new".to_owned();
        core.put_from::<Plain, String>(
            key,
            read_before,
            Some(&gen_key),
            false,
            0,
            &policy,
            Hooks::none(),
            &new,
        )
        .await
        .unwrap();
        let stored = core.backend.get(key).await.unwrap().unwrap();
        let decoded = codec::decode::<String>(&stored).unwrap();
        assert_eq!(decoded.body, Decoded::Value("new".to_owned()));
        assert_eq!(cache.stats().conflicts, 0);
    }
}
