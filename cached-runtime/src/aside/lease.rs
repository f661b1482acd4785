//! The cross-process lease of `lock` / `lock_ms`: `SET {key}:lock <token> NX PX <lease>`,
//! taken by the first process to miss; the others poll the entry until it is filled or
//! the lease runs out. The holder gives it back with a compare-and-delete, also when it is
//! cancelled or panics.

use super::read::{Examined, Read};
use super::Entry;
use crate::core::Core;
use crate::key::new_generation;
use crate::shape::Shape;
use crate::stats::{Event, Served};
use crate::store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The outcome of trying for a key's cross-process lease.
pub(super) enum Locked<O> {
    /// Another process filled the entry while this one waited: a hit.
    Filled(O, Served, Option<Vec<u8>>),
    /// This caller holds the lease; the read made right after taking it, and when that
    /// read began (what the fill's deadline counts from).
    Acquired(Lease, Read, Instant),
    /// No lease (the wait ran out, or the store failed): compute without one, from this
    /// read, begun then.
    Proceed(Read, Instant),
}

/// A held cross-process lease: `SET {key}:lock <token> NX PX <lease>`. Given back when
/// the call ends, and also when it is cancelled (a client that disconnects drops its
/// handler) or its body panics: dropped while held, it releases itself in a task, so other
/// processes do not wait out the whole lease.
pub(super) struct Lease {
    core: Arc<Core>,
    key: String,
    token: String,
    held: bool,
}

impl Lease {
    /// Gives the lease back (only if this caller still holds it).
    pub(super) async fn release(mut self) {
        // With the breaker open, in the background (from `Drop`): the call does not wait
        // on a store that is out.
        if self.core.breaker_is_open() {
            return;
        }
        // Held until the release is done: a caller dropped while it is on its way gives
        // the lease back from `Drop` instead.
        self.core.release_lease(&self.key, &self.token, true).await;
        self.held = false;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.held {
            return;
        }
        let (core, key, token) = (
            self.core.clone(),
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.token),
        );
        // On redcache's own runtime: the caller's may be shutting down, idle (a current-
        // thread one), or absent. Its failure is no fault of its own: a `SET NX` that
        // timed out or was cancelled may not have been sent, and the lease expires anyway.
        crate::store::background().spawn(Core::in_background(async move {
            core.release_lease(&key, &token, false).await;
        }));
    }
}

impl Core {
    /// Takes the key's cross-process lease, or waits (polling, at most the lease's length)
    /// for the process that holds it to fill the entry.
    pub(super) async fn lock_or_wait<K: Shape<O>, O>(
        self: &Arc<Self>,
        at: Entry<'_>,
        lease: Duration,
    ) -> Locked<O> {
        let key = at.key;
        // Armed while a `SET NX` is on its way: one that times out or is cancelled may
        // still be run by Redis, and would then hold the lease with nobody to give it back
        // (every process would wait the whole lease). Dropped armed, it sends the
        // compare-and-delete, after the `SET` on the same connection; its token is this
        // call's own, so it removes nothing if the `SET` never ran.
        let mut claim = Lease {
            core: Arc::clone(self),
            key: format!("{key}:lock"),
            token: new_generation().to_string(),
            held: false,
        };
        let now = Instant::now();
        let deadline = now
            .checked_add(lease)
            .unwrap_or(now + Duration::from_secs(86_400));
        let mut pause = Duration::from_millis(2);
        loop {
            claim.held = true;
            let taken = self
                .backend
                .set_nx(&claim.key, claim.token.as_bytes(), Some(lease));
            match self.op(taken).await {
                Ok(true) => {
                    let begun = Instant::now();
                    let fresh = self.read(at).await;
                    return Locked::Acquired(claim, fresh, begun);
                }
                Ok(false) => claim.held = false,
                Err(err) => {
                    // Not sent at all when the breaker skipped it.
                    claim.held = !matches!(err, crate::Error::Unavailable { .. });
                    self.fault(key, &err);
                    return Locked::Proceed(Read::Unavailable, Instant::now());
                }
            }
            let now = Instant::now();
            if now >= deadline {
                // The holder is slow or gone: compute here rather than wait any longer.
                self.record(at.prefix, Event::LockTimeout);
                return Locked::Proceed(self.read(at).await, now);
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(Duration::from_millis(50));
            let read = self.read(at).await;
            if let Examined::Hit(found) | Examined::Refresh(found) = self.examine::<K, O>(at, &read)
            {
                if let Some((out, served)) = self.count_hit(at.prefix, found) {
                    return Locked::Filled(out, served, read.into_entry());
                }
            }
        }
    }

    /// Gives the lease at `key` back if `token` still holds it, even with the breaker open
    /// (skipped, it would fence every process for the whole lease); a failure is counted
    /// as a fault if `counted`.
    async fn release_lease(&self, key: &str, token: &str, counted: bool) {
        let release = self.backend.delete_if(key, token.as_bytes());
        match self.op_unskipped(release).await {
            Ok(_) => {}
            // It expires by itself.
            Err(err) if counted => self.fault(key, &err),
            Err(err) => tracing::debug!(key, error = %err, "redcache: a lease not given back"),
        }
    }
}
