//! Storing a miss's result behind the fence: only if the key and the group still hold what
//! the read saw, and only while an invalidation since the read is sure to have left its
//! tombstone. Also what the callers waiting on the flight may take: a fenced result, or an
//! unfenced one when there was nothing to write it to.

use super::read::Read;
use super::Entry;
use crate::core::Core;
use crate::flight::Shared;
use crate::shape::{Hooks, Outcome, Shape};
use crate::stats::Event;
use crate::store::{Fill, Store};
use crate::Error;
use std::time::Duration;
use tokio::time::Instant;

impl Core {
    /// Stores a miss's result if nothing changed at the key since `read`; the entry to hand
    /// to the callers waiting on this flight, if they may have it, and whether it is fenced.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn store_result<K: Shape<O>, O>(
        &self,
        at: Entry<'_>,
        hooks: Hooks<O>,
        read: &Read,
        out: &O,
        started: Instant,
        compute: Duration,
        changes: u64,
    ) -> Option<Shared> {
        let (key, policy) = (at.key, at.policy);
        if !hooks.caches(out) {
            // `cache_if` said no: returned, not stored, not handed to waiters.
            return None;
        }
        let fence = read.fence(at);
        let value_ttl = hooks.value_ttl(policy, out);
        let (mut stamp, kept) =
            hooks.stamp(policy, out, fence.map_or(0, |f| f.gen), value_ttl, compute);
        stamp.tags = at.tags;
        let seen = read.seen();
        let value_stamp = self.stamp_kept(stamp, value_ttl.saturating_add(kept), &seen);
        let (bytes, ttl) = match K::encode(out, value_stamp, policy.format()) {
            // Kept past its TTL for the stale windows; its stamp says when it expired.
            Outcome::Value(Ok(bytes)) => (bytes, Some(value_ttl.saturating_add(kept))),
            Outcome::Value(Err(source)) => {
                self.fault(&at.shown(), &Error::Encode { source });
                return None;
            }
            Outcome::Null(bytes) => match policy.null_ttl() {
                Some(ttl) => (self.null_kept(bytes, stamp, ttl, &seen, policy), Some(ttl)),
                None => (bytes, None),
            },
            Outcome::Skip => return None,
        };
        // Waiters get the result if the fenced fill stored it (then no invalidation came
        // between the read and the write), or unfenced if there was nothing to write it to:
        // the store is out or the value is over the size limit (sharing spares the
        // database; a waiter that saw an invalidation refuses an unfenced result).
        let Some(ttl) = ttl.filter(|_| read.writable()) else {
            return matches!(read, Read::Unavailable).then(|| Shared::unfenced(bytes, changes));
        };
        let max_fill = self.config.max_fill_time();
        if self.past_fill_deadline(started) {
            // An invalidation during the run may have left no trace by now: neither store
            // nor share the result.
            self.record(at.prefix, Event::Conflict);
            tracing::debug!(
                key,
                ?max_fill,
                "redcache: a miss outlasted max_fill_time; not stored"
            );
            return None;
        }
        let fill = Fill {
            key,
            value: &bytes,
            ttl,
            seen,
            group: fence,
        };
        // Boxed: the store operation's future is most of this one's, which every miss
        // allocates with the rest of its state (see `run_from`).
        match Box::pin(self.write_checked(at.prefix, || self.backend.fill(&fill), bytes.len()))
            .await
        {
            Ok(true) => Some(Shared::stored(bytes)),
            Ok(false) => {
                // Invalidated or rewritten while the body ran: the result may be older than
                // what is there now. The caller gets it; the cache and the waiters do not.
                self.record(at.prefix, Event::Conflict);
                None
            }
            Err(err) => {
                self.fault(&at.shown(), &err);
                // Skipped by the open breaker (the store is out), or too large to store.
                // Any other fault (a timeout, a lost connection) may hide a fill that ran
                // and was refused.
                matches!(err, Error::Unavailable { .. } | Error::TooLarge { .. })
                    .then(|| Shared::unfenced(bytes, changes))
            }
        }
    }
}
