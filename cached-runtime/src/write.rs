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
        let fence = match gen_key {
            Some(gen_key) => {
                let current = match self.op(self.backend.get(gen_key)).await? {
                    Some(raw) => Some(parse_gen(&raw).ok_or(Error::decode(BadGeneration))?),
                    None => None,
                };
                Some(GroupFence::at(gen_key, current).expiring(gen_expires))
            }
            None => None,
        };
        let gen = fence.map_or(0, |f| f.gen);
        let value_ttl = hooks.value_ttl(policy, value);
        let (mut stamp, kept) = hooks.stamp(policy, value, gen, value_ttl, Duration::ZERO);
        stamp.tags = tags;
        let (bytes, ttl) = match K::encode(value, stamp, policy.format()) {
            Outcome::Value(bytes) => (
                bytes.map_err(|source| Error::Encode { source })?,
                value_ttl + kept,
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
        // The local copy goes now, not when Redis's push for the write arrives: the next
        // call in this process reads the new value.
        self.local_changed(key);
        if !stored? {
            // The group was invalidated meanwhile: not storing is what that asked for.
            self.record(None, Event::Conflict);
        }
        Ok(())
    }
}
