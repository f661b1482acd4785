//! Invalidation and write-through: one entry, a whole eviction group, a key prefix.

use crate::client::Cache;
use crate::codec;
use crate::key::{self, new_generation, parse_gen, BadGeneration};
use crate::private::{Outcome, Shape};
use crate::stats::Counters;
use crate::store::{Fill, GroupFence, Seen, Store};
use crate::ttl::Policy;
use crate::{Error, Result};

/// Keys a SCAN step looks at, and so the most an UNLINK removes at once.
const SCAN_BATCH: usize = 1000;

impl Cache {
    /// Replaces the entry at an exact store key (namespace included) with a tombstone that
    /// lives [`Config::max_fill_time`](crate::Config::max_fill_time); whether a live entry
    /// was there.
    pub(crate) async fn invalidate_key(&self, key: &str) -> Result<bool> {
        let tombstone = codec::encode_tombstone();
        let ttl = self.inner.config.max_fill_time();
        let old = self
            .op_invalidation(
                Some(self.inner.config.op_timeout()),
                self.inner.backend.replace(key, &tombstone, ttl),
            )
            .await?;
        let removed = old.is_some_and(|old| !codec::is_tombstone(&old));
        if removed {
            Counters::bump(&self.inner.counters.invalidations);
        }
        Ok(removed)
    }

    /// Stores `value` as the result of the call whose key is `key` (write-through).
    pub(crate) async fn put<K: Shape<O>, O>(
        &self,
        key: &str,
        group: Option<&str>,
        policy: &Policy,
        value: &O,
    ) -> Result<()> {
        let fence = match group {
            Some(group) => {
                let gen_key = key::group_key(self.inner.config.namespace(), group);
                let (gen, create) = match self.op(self.inner.backend.get(&gen_key)).await? {
                    Some(raw) => (parse_gen(&raw).ok_or(Error::decode(BadGeneration))?, false),
                    None => (new_generation(), true),
                };
                Some((gen_key, gen, create))
            }
            None => None,
        };
        let gen = fence.as_ref().map_or(0, |f| f.1);
        let (bytes, ttl) = match K::encode(value, codec::Stamp::gen(gen)) {
            Outcome::Value(bytes) => (
                bytes.map_err(|source| Error::Encode { source })?,
                policy.value_ttl(),
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
            group: fence.as_ref().map(|(key, gen, create)| GroupFence {
                key,
                gen: *gen,
                create: *create,
            }),
        };
        let stored = self
            .write_checked(|| self.inner.backend.fill(&fill), bytes.len())
            .await?;
        if !stored {
            // The group was invalidated meanwhile: not storing is what that asked for.
            Counters::bump(&self.inner.counters.conflicts);
        }
        Ok(())
    }

    /// Invalidates every entry of the eviction group `group` (`#[cached(group = "..")]`)
    /// at once: the group moves to a new generation, and entries of older generations are
    /// misses from then on (they expire by their TTL). One Redis command, whatever the
    /// size of the group.
    ///
    /// # Errors
    ///
    /// The store failed or timed out.
    ///
    /// # Examples
    ///
    /// ```
    /// #[redcache::cached(group = "products", ttl = 600)]
    /// async fn price(sku: u32) -> u32 { sku * 100 }
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), redcache::Error> {
    /// let cache = redcache::Cache::memory();
    /// cache.scope(async { price(1).await }).await;
    /// cache.invalidate_group("products").await?;
    /// cache.scope(async { price(1).await }).await; // a miss again
    /// assert_eq!(cache.stats().misses, 2);
    /// # Ok(()) }
    /// ```
    pub async fn invalidate_group(&self, group: &str) -> Result<()> {
        let gen_key = key::group_key(self.inner.config.namespace(), group);
        let gen = new_generation().to_string();
        let timeout = Some(self.inner.config.op_timeout());
        self.op_invalidation(
            timeout,
            self.inner.backend.set_persistent(&gen_key, gen.as_bytes()),
        )
        .await?;
        Counters::bump(&self.inner.counters.invalidations);
        Ok(())
    }

    /// Invalidates every entry whose key starts with `prefix` + `:` (the namespace is
    /// added): the entries of every `#[cached(prefix = ..)]` function whose prefix is
    /// `prefix` or starts with `prefix:`. Returns how many entries were invalidated.
    ///
    /// Redis is walked with `SCAN` in steps of 1000 keys, and each step's live entries are
    /// replaced by tombstones with one script (one per key on a cluster), so no command
    /// holds Redis for long, whatever the number of keys (never `KEYS`). Tombstones already
    /// there (of exact invalidations) and leases are left as they are, so a prefix never
    /// weakens a fence. Glob characters in `prefix` (`*`, `?`, `[`, `]`, `\`) match only
    /// themselves. Like every invalidation, it is never skipped by the open breaker.
    ///
    /// What it cannot fence: a miss already running for a key that had *no* entry (there
    /// was nothing to find), which may store its value afterwards. Exact calls
    /// (`invalidate!`, `#[evicts]`) and groups are race-safe for such keys too; use them on
    /// write paths, and prefixes for maintenance and bulk purges.
    ///
    /// # Errors
    ///
    /// The store failed; entries removed before the fault stay removed.
    ///
    /// # Examples
    ///
    /// ```
    /// #[redcache::cached(prefix = "user:profile", ttl = 600)]
    /// async fn profile(id: u64) -> String { format!("user {id}") }
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), redcache::Error> {
    /// let cache = redcache::Cache::memory();
    /// cache.scope(async { profile(1).await + &profile(2).await }).await;
    /// assert_eq!(cache.invalidate_prefix("user:profile").await?, 2);
    /// # Ok(()) }
    /// ```
    pub async fn invalidate_prefix(&self, prefix: &str) -> Result<u64> {
        let start = key::prefix_start(self.inner.config.namespace(), prefix);
        // Many commands: each has its own timeout (the connection's), not the whole walk.
        let ttl = self.inner.config.max_fill_time();
        let walk = self
            .inner
            .backend
            .invalidate_prefix(&start, SCAN_BATCH, ttl);
        let removed = self.op_invalidation(None, walk).await?;
        self.inner
            .counters
            .invalidations
            .fetch_add(removed, std::sync::atomic::Ordering::Relaxed);
        Ok(removed)
    }
}

/// Invalidates every entry of an eviction group in the cache in use (scoped, else
/// global). See [`Cache::invalidate_group`].
///
/// # Errors
///
/// [`Error::NotInitialized`] when there is no cache; a store fault.
///
/// # Examples
///
/// ```no_run
/// # async fn f() -> Result<(), redcache::Error> {
/// redcache::invalidate_group("products").await?;
/// # Ok(()) }
/// ```
pub async fn invalidate_group(group: &str) -> Result<()> {
    current()?.invalidate_group(group).await
}

/// Removes every entry under a key prefix in the cache in use (scoped, else global); how
/// many. See [`Cache::invalidate_prefix`].
///
/// # Errors
///
/// [`Error::NotInitialized`] when there is no cache; a store fault.
///
/// # Examples
///
/// ```no_run
/// # async fn f() -> Result<(), redcache::Error> {
/// let removed: u64 = redcache::invalidate_prefix("user:profile").await?;
/// # Ok(()) }
/// ```
pub async fn invalidate_prefix(prefix: &str) -> Result<u64> {
    current()?.invalidate_prefix(prefix).await
}

fn current() -> Result<Cache> {
    Cache::current().ok_or(Error::NotInitialized)
}
