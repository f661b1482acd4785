//! Invalidation: one entry (a tombstone), a whole eviction group (a new generation), a key
//! prefix (tombstones for what is there). Never skipped by the open breaker.

use crate::codec;
use crate::core::Core;
use crate::key;
use crate::stats::Event;
use crate::store::{Replaced, Store};
use crate::Result;

/// Keys a SCAN step looks at.
const SCAN_BATCH: usize = 250;

/// Runs a write's invalidations (`work`) to their end, even if the caller is dropped while
/// they wait on the store: on a task of their own on the runtime in use, awaited (inline
/// where there is none). The write they follow has been made; a caller dropped now (an
/// HTTP client gone, a `timeout` around the call) must not leave the entries it retires
/// answering with what the write replaced. The caller's span and subscriber go with them.
pub(crate) async fn to_the_end<F>(work: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    use std::sync::{Arc, Mutex, PoisonError};
    use tracing::instrument::WithSubscriber;
    use tracing::Instrument;
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return work.await;
    };
    // Taken by the task when it starts: a runtime shutting down cancels a task before
    // it runs, and the work is then done here.
    let slot = Arc::new(Mutex::new(Some(work)));
    let taken = slot.clone();
    let task = async move {
        let work = taken.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(work) = work {
            work.await;
        }
    };
    let task = runtime.spawn(task.in_current_span().with_current_subscriber());
    match task.await {
        Ok(()) => {}
        Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
        Err(_) => {
            let work = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
            if let Some(work) = work {
                work.await;
            }
        }
    }
}

impl Core {
    /// Replaces the entry at an exact store key (namespace included) with a tombstone that
    /// lives [`Config::max_fill_time`](crate::Config::max_fill_time); whether a live entry
    /// was there (not a tombstone, nor an entry past its TTL kept only as a fence). An
    /// error when that is not known (the reply was lost, though the entry is retired): for
    /// callers that answer it (`delete`, `invalidate!`).
    pub(crate) async fn invalidate_key(&self, key: &str) -> Result<bool> {
        let old = self.retire_key(key).await?.was()?;
        Ok(old.is_some_and(|old| codec::is_live(&old)))
    }

    /// [`invalidate_key`](Self::invalidate_key) for callers that need no answer
    /// (`#[evicts]`, a write-through that invalidates instead): a lost reply's
    /// invalidation is done, not a fault.
    pub(crate) async fn evict_key(&self, key: &str) -> Result<()> {
        self.retire_key(key).await.map(drop)
    }

    /// The tombstone's write, counted when it retired a live entry; what it replaced.
    async fn retire_key(&self, key: &str) -> Result<Replaced> {
        let ttl = self.config.max_fill_time();
        let old = self
            .op_invalidation(
                Some(self.config.op_timeout()),
                self.backend.retire(key, ttl),
            )
            .await;
        // This process's copy goes now, not when Redis's push arrives: the next call here
        // reads Redis. (Whatever else holds one gets the push.)
        self.local_changed(key);
        let old = old?;
        if let Replaced::Was(Some(old)) = &old {
            if codec::is_live(old) {
                self.record(None, Event::Invalidations(1));
            }
        }
        Ok(old)
    }

    /// Moves `group` to a new generation (see [`Cache::invalidate_group`](crate::Cache::invalidate_group)).
    pub(crate) async fn invalidate_group(&self, group: &str) -> Result<()> {
        let gen_key = self.group_key(group);
        let timeout = Some(self.config.op_timeout());
        let set = self
            .op_invalidation(timeout, self.backend.regenerate(&gen_key, None))
            .await;
        self.local_changed(&gen_key);
        set?;
        self.record(None, Event::Invalidations(1));
        Ok(())
    }

    /// Tombstones the live entries under `prefix` (see
    /// [`Cache::invalidate_prefix`](crate::Cache::invalidate_prefix)); how many.
    pub(crate) async fn invalidate_prefix(&self, prefix: &str) -> Result<u64> {
        let start = key::prefix_start(self.config.namespace(), prefix);
        // Many commands: each step has the operation timeout, not the whole walk.
        let ttl = self.config.max_fill_time();
        let step = self.config.op_timeout();
        let walk = self
            .backend
            .invalidate_prefix(&start, SCAN_BATCH, ttl, step);
        let removed = self.op_invalidation(None, walk).await;
        // Copies are not kept by prefix: every one goes.
        if let Some(tier) = self.backend.local_tier() {
            tier.clear();
        }
        let removed = removed?;
        self.record(None, Event::Invalidations(removed));
        Ok(removed)
    }
}
