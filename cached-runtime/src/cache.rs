//! The cache handle: [`Cache`], the global and scoped instance (`install`, `scope`,
//! `current`), and the public API, each method its documentation and a delegation to the
//! [`Core`].

use crate::codec::{self, Decoded, Stamp};
use crate::core::Core;
use crate::health::Health;
use crate::shape::{Hooks, Plain, Res};
use crate::stats::Stats;
use crate::store::{Backend, MemoryStore, RedisStore, Seen, Store};
use crate::ttl::{unix_ms, Policy};
use crate::{Config, Error, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

static GLOBAL: OnceLock<Cache> = OnceLock::new();

tokio::task_local! {
    static SCOPED: Cache;
}

/// A cache: a store (Redis or in-process) plus its configuration, counters, breaker and
/// in-flight calls. Cheap to clone: clones share everything.
///
/// `#[cached]` functions use the cache of the enclosing [`scope`](Cache::scope), else the
/// one [`install`](Cache::install)ed globally (by [`init`](crate::init)), else none (the body
/// just runs).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), redcache::Error> {
/// let cache = redcache::Cache::memory();
/// cache.set("greeting", &"hello", Duration::from_secs(60)).await?;
/// assert_eq!(cache.get::<String>("greeting").await?, Some("hello".to_string()));
/// assert!(cache.delete("greeting").await?);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Cache {
    core: Arc<Core>,
}

impl Cache {
    fn new(backend: Backend, config: Config) -> Cache {
        Cache {
            core: Arc::new(Core::new(backend, config)),
        }
    }

    /// The core every operation of this cache runs on.
    pub(crate) fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// Connects to Redis and checks it with `PING`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the configuration is unusable, [`Error::Connect`] when Redis
    /// does not answer within [`Config::connect_timeout`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # #[tokio::main] async fn main() -> Result<(), redcache::Error> {
    /// let cache = redcache::Cache::connect(redcache::Config::from_env()).await?;
    /// cache.install()?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(config: Config) -> Result<Cache> {
        if let Some(problem) = config.problem() {
            return Err(Error::config(problem));
        }
        let backend = if config.is_cluster() {
            Backend::Cluster(RedisStore::connect_cluster(&config).await?)
        } else if config.is_sentinel() {
            Backend::Redis(RedisStore::connect_sentinel(&config).await?)
        } else {
            Backend::Redis(RedisStore::connect(&config).await?)
        };
        Ok(Cache::new(backend, config))
    }

    /// An in-process cache with the default configuration: for running without Redis, and
    /// for tests. Entries expire as they would in Redis; the store is bounded (100,000
    /// entries and 64 MiB by default: [`Config::memory_capacity`],
    /// [`Config::memory_max_bytes`]) and sharded, so a hit takes no global lock.
    ///
    /// # Examples
    ///
    /// ```
    /// let cache = redcache::Cache::memory();
    /// assert!(!cache.is_redis());
    /// ```
    pub fn memory() -> Cache {
        Self::memory_with(Config::default())
    }

    /// An in-process cache with `config`'s namespace, TTLs and limits (its Redis address is
    /// not used).
    ///
    /// # Examples
    ///
    /// ```
    /// let cache = redcache::Cache::memory_with(redcache::Config::builder().namespace("t").build());
    /// assert_eq!(cache.config().namespace(), Some("t"));
    /// ```
    pub fn memory_with(config: Config) -> Cache {
        if let Some(problem) = config.memory_problem() {
            tracing::error!(
                problem,
                "redcache: the in-process store's configuration has a problem; going on \
                 without the setting it names (Cache::try_memory_with refuses it instead)"
            );
        }
        let config = config.usable_in_memory();
        let store = MemoryStore::holding(
            config.memory_entries(),
            config.memory_max_bytes(),
            config.max_value_bytes(),
            config.max_fill_time(),
        );
        Cache::new(Backend::Memory(Box::new(store)), config)
    }

    /// [`memory_with`](Self::memory_with), but a configuration it cannot use (a variable of
    /// [`Config::from_env`] that did not parse, a `max_value_bytes`, `max_fill_time`,
    /// `memory_capacity` or `memory_max_bytes` of 0, more entries than can be set up, a
    /// codec or compression this build lacks) is an error rather than a logged problem.
    ///
    /// # Errors
    ///
    /// [`Error::Config`], naming the setting.
    ///
    /// # Examples
    ///
    /// ```
    /// let config = redcache::Config::builder().max_value_bytes(0).build();
    /// let err = redcache::Cache::try_memory_with(config).unwrap_err();
    /// assert!(err.to_string().contains("REDCACHE_MAX_VALUE_BYTES"));
    /// ```
    pub fn try_memory_with(config: Config) -> Result<Cache> {
        match config.memory_problem() {
            Some(problem) => Err(Error::config(problem)),
            None => Ok(Self::memory_with(config)),
        }
    }

    /// Makes this the global cache of the process.
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyInitialized`] if a global cache is already installed.
    ///
    /// # Examples
    ///
    /// ```
    /// redcache::Cache::memory().install().unwrap();
    /// assert!(redcache::Cache::memory().install().is_err());
    /// ```
    pub fn install(&self) -> Result<()> {
        GLOBAL
            .set(self.clone())
            .map_err(|_| Error::AlreadyInitialized)
    }

    /// Whether a cache is installed globally already (a second `init` is refused before
    /// it connects).
    pub(crate) fn installed() -> bool {
        GLOBAL.get().is_some()
    }

    /// Runs `fut` with this cache as the one every `#[cached]` call inside it uses, whatever
    /// is installed globally. Tasks spawned inside `fut` do not inherit the scope.
    ///
    /// # Examples
    ///
    /// ```
    /// #[redcache::cached(ttl = 60)]
    /// async fn double(x: u32) -> u32 { x * 2 }
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let cache = redcache::Cache::memory();
    /// cache.scope(async {
    ///     assert_eq!(double(21).await, 42);
    ///     assert_eq!(double(21).await, 42);
    /// }).await;
    /// assert_eq!(cache.stats().hits, 1);
    /// # }
    /// ```
    pub fn scope<F: Future>(&self, fut: F) -> impl Future<Output = F::Output> {
        SCOPED.scope(self.clone(), fut)
    }

    /// This cache's configuration.
    ///
    /// # Examples
    ///
    /// ```
    /// let cache = redcache::Cache::memory_with(redcache::Config::builder().default_ttl(60).build());
    /// assert_eq!(cache.config().default_ttl(), 60);
    /// ```
    pub fn config(&self) -> &Config {
        &self.core.config
    }

    /// Whether entries go to Redis or a Redis Cluster (else to the in-process store).
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(!redcache::Cache::memory().is_redis());
    /// ```
    pub fn is_redis(&self) -> bool {
        self.core.backend.is_remote()
    }

    /// How many calls of this cache wait right now for another call's run of the same key
    /// (single flight): those a stampede on a cold or expiring key holds back from the
    /// backend. A gauge, for a dashboard or a test that waits until callers have
    /// joined a flight.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use std::time::Duration;
    /// let cache = redcache::Cache::memory();
    /// let (release, held) = tokio::sync::oneshot::channel::<()>();
    /// let slow = cache.get_or_insert_with("k", Duration::from_secs(60), || async {
    ///     held.await.ok();
    ///     1u32
    /// });
    /// let waiter = cache.get_or_insert_with("k", Duration::from_secs(60), || async { 2u32 });
    /// let both = async { tokio::join!(slow, waiter) };
    /// let watch = async {
    ///     while cache.flight_waiters() == 0 {
    ///         tokio::task::yield_now().await;
    ///     }
    ///     release.send(()).unwrap();
    /// };
    /// let ((slow, waiter), ()) = tokio::join!(both, watch);
    /// assert_eq!((slow, waiter), (1, 1), "the waiter got the first call's result");
    /// assert_eq!(cache.flight_waiters(), 0);
    /// # }
    /// ```
    pub fn flight_waiters(&self) -> usize {
        self.core.flights.waiting()
    }

    /// A snapshot of this cache's counters.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use std::time::Duration;
    /// let cache = redcache::Cache::memory();
    /// for _ in 0..2 {
    ///     let _: u32 = cache.get_or_insert_with("k", Duration::from_secs(60), || async { 7 }).await;
    /// }
    /// let stats = cache.stats();
    /// assert_eq!((stats.misses, stats.hits, stats.stores), (1, 1, 1));
    /// # }
    /// ```
    pub fn stats(&self) -> Stats {
        self.core.stats()
    }

    /// The counters of each prefix this cache has served: `#[cached]` functions by their
    /// prefix, batches by theirs. Each counts hits, local hits, null hits, misses, stale
    /// answers, stores, conflicts, refreshes and lock timeouts of its own calls; faults,
    /// skipped operations and invalidations are counted for the whole cache
    /// ([`stats`](Self::stats)). Sorted by prefix; one entry per function, never per key.
    ///
    /// # Examples
    ///
    /// ```
    /// #[redcache::cached(prefix = "square", ttl = 60)]
    /// async fn square(x: u64) -> u64 { x * x }
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let cache = redcache::Cache::memory();
    /// cache.scope(async { square(3).await + square(3).await }).await;
    /// let by_prefix = cache.stats_by_prefix();
    /// assert_eq!(by_prefix[0].0, "square");
    /// assert_eq!((by_prefix[0].1.misses, by_prefix[0].1.hits), (1, 1));
    /// assert_eq!(by_prefix[0].1.hit_ratio(), Some(0.5));
    /// # }
    /// ```
    pub fn stats_by_prefix(&self) -> Vec<(String, Stats)> {
        self.core.stats_by_prefix()
    }

    /// How the store is doing, for a readiness probe: the breaker's state, the faults in a
    /// row, and the last fault with its time. Calls never fail because of the cache; this
    /// tells whether they are being served by it.
    ///
    /// # Examples
    ///
    /// ```
    /// let cache = redcache::Cache::memory();
    /// let health = cache.health();
    /// assert!(health.is_ready() && !health.breaker_open);
    /// ```
    pub fn health(&self) -> Health {
        self.core.health()
    }

    /// The value at `key` (the namespace is added), or `None` when there is none or it does
    /// not decode as `T` (that counts as a fault, like a corrupt entry). An entry of a
    /// `#[cached]` function in a group or with tags is `None` here (their invalidations
    /// move generations this read does not check), and so is one past its TTL that is kept
    /// for a stale window.
    ///
    /// # Errors
    ///
    /// The store failed, timed out, or is skipped by the open circuit breaker.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), redcache::Error> {
    /// let cache = redcache::Cache::memory();
    /// assert_eq!(cache.get::<u32>("absent").await?, None);
    /// # Ok(()) }
    /// ```
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        let key = self.core.full_key(key);
        let Some(bytes) = self.core.op(self.core.backend.get(&key)).await? else {
            return Ok(None);
        };
        match codec::decode::<T>(&bytes) {
            // An entry of a tagged or grouped function may be retired by a tag or its
            // group: not read here, where neither generation is known. Nor one past its
            // TTL, kept for a stale window.
            Ok(envelope)
                if envelope.stamp.tags != 0
                    || envelope.stamp.gen != 0
                    || envelope.stamp.expired() =>
            {
                Ok(None)
            }
            Ok(envelope) => match envelope.body {
                Decoded::Value(value) => Ok(Some(value)),
                Decoded::Null | Decoded::Gone => Ok(None),
            },
            Err(err) => {
                self.core
                    .fault(&crate::key::shown("key", &key), &Error::decode_json(&err));
                Ok(None)
            }
        }
    }

    /// Stores `value` at `key` (the namespace is added) for exactly `ttl`.
    ///
    /// Like an invalidation, the write fences for [`Config::max_fill_time`]: a
    /// `get_or_insert_with` that read before it cannot store its older value afterwards,
    /// even once `ttl` has passed. So under a shorter `ttl`, Redis keeps the entry that
    /// long, stamped with its expiry: every reader takes it for gone after `ttl`.
    ///
    /// A value that cannot be stored does not leave the one it was to replace: the entry at
    /// `key` is retired instead (as by [`delete`](Self::delete), which the open circuit
    /// breaker never skips), and the error is returned.
    ///
    /// # Errors
    ///
    /// The value does not serialize, would not read back as itself (a `Some` around a value
    /// written as `null`, such as `Some(None)` inside it, or in JSON a NaN or infinity: any
    /// reader's type would get another value), or is over [`Config::max_value_bytes`] (or,
    /// in the in-process store, over the room it has for one value: [`Error::TooLarge`]);
    /// or the store failed, timed out or is skipped by the open circuit breaker
    /// ([`Error::Unavailable`]).
    ///
    /// `set` does not know the type its value will be read as, so it cannot read the value
    /// back: what only that type tells (a 128-bit integer inside an untagged enum, a
    /// flattened `Option` holding `None`) is stored as written. `#[cached]` and
    /// [`get_or_insert_with`](Self::get_or_insert_with) read such values back and compare
    /// before they store them.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), redcache::Error> {
    /// let cache = redcache::Cache::memory();
    /// cache.set("answer", &42u32, std::time::Duration::from_secs(10)).await?;
    /// assert_eq!(cache.get::<u32>("answer").await?, Some(42));
    /// # Ok(()) }
    /// ```
    pub async fn set<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        ttl: Duration,
    ) -> Result<()> {
        let key = self.core.full_key(key);
        let ttl = Policy::exact(ttl).value_ttl();
        // A writer's write: kept at least as long as it fences the fills whose reads came
        // before it (`max_fill_time`), which a shorter TTL would end early. Its stamp then
        // says when it expires, and readers take it for gone from then on.
        let stamp = self.core.stamp_kept(Stamp::default(), ttl, &Seen::Any);
        let bytes = match codec::encode_untyped(value, stamp, self.core.config.format()) {
            Ok(bytes) => bytes,
            Err(source) => {
                let shown = crate::key::shown("key", &key);
                return self
                    .core
                    .retire_instead(&key, &shown, Error::Encode { source })
                    .await;
            }
        };
        let written = self
            .core
            .write_checked(
                None,
                || async {
                    self.core
                        .backend
                        .set(&key, &bytes, ttl)
                        .await
                        .map(|()| true)
                },
                bytes.len(),
            )
            .await;
        // As for `put!`: this process's copy of the key goes now.
        self.core.local_changed(&key);
        match written {
            Ok(_) => Ok(()),
            Err(err) => {
                let shown = crate::key::shown("key", &key);
                self.core.retire_instead(&key, &shown, err).await
            }
        }
    }

    /// Removes the entry at `key` (the namespace is added); whether there was one.
    ///
    /// Like every invalidation, this leaves a small tombstone for
    /// [`Config::max_fill_time`], so that a `get_or_insert_with` that started before it
    /// cannot store its older value afterwards.
    ///
    /// # Errors
    ///
    /// The store failed. Also when the connection dropped after Redis ran the deletion,
    /// before its reply arrived: the entry is gone, but whether there was one is unknown.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), redcache::Error> {
    /// let cache = redcache::Cache::memory();
    /// assert!(!cache.delete("absent").await?);
    /// # Ok(()) }
    /// ```
    pub async fn delete(&self, key: &str) -> Result<bool> {
        let key = self.core.full_key(key);
        self.core.invalidate_key(&key).await
    }

    /// Time left before the entry at `key` (the namespace is added) expires; `None` when
    /// there is none. Of an entry of a grouped or tagged `#[cached]` function, this is its
    /// own expiry: its group or tags may have retired it already, which only its
    /// function's reads check (and [`get`](Self::get) reads no such entry).
    ///
    /// # Errors
    ///
    /// The store failed.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), redcache::Error> {
    /// use std::time::Duration;
    /// let cache = redcache::Cache::memory();
    /// cache.set("k", &1, Duration::from_secs(30)).await?;
    /// assert!(cache.ttl("k").await?.unwrap() <= Duration::from_secs(30));
    /// # Ok(()) }
    /// ```
    pub async fn ttl(&self, key: &str) -> Result<Option<Duration>> {
        let key = self.core.full_key(key);
        let Some(bytes) = self.core.op(self.core.backend.get(&key)).await? else {
            return Ok(None);
        };
        // The entry's own expiry, where it says one: the store may keep it longer (a stale
        // window, or the fence of a write; see `Cache::set`).
        let stamped = match codec::decode::<serde::de::IgnoredAny>(&bytes) {
            Ok(envelope) if matches!(envelope.body, Decoded::Gone) => return Ok(None),
            Ok(envelope) => envelope.stamp.refresh.map(|r| r.expires_ms),
            Err(_) => None,
        };
        let left = self.core.op(self.core.backend.ttl(&key)).await?;
        Ok(match stamped {
            Some(expires_ms) => {
                let stamped = Duration::from_millis(expires_ms.saturating_sub(unix_ms()));
                left.map(|left| left.min(stamped))
                    .filter(|left| !left.is_zero())
            }
            None => left,
        })
    }

    /// Cache-aside for code without the attribute: the value at `key` (the namespace is
    /// added), else `init()`'s result, stored for exactly `ttl`.
    ///
    /// Same rules as `#[cached]`: concurrent calls for one key run `init` once, and a store
    /// fault never fails the call (`init` runs and its value is returned). Whatever `init`
    /// returns is stored; for a load that can fail, whose errors must not be cached, use
    /// [`try_get_or_insert_with`](Self::try_get_or_insert_with).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use std::time::Duration;
    /// let cache = redcache::Cache::memory();
    /// let v: u64 = cache.get_or_insert_with("answer", Duration::from_secs(60), || async { 42 }).await;
    /// let v2: u64 = cache.get_or_insert_with("answer", Duration::from_secs(60), || async { 0 }).await;
    /// assert_eq!((v, v2), (42, 42));
    /// # }
    /// ```
    pub async fn get_or_insert_with<T, F, Fut>(&self, key: &str, ttl: Duration, init: F) -> T
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        let key = self.core.full_key(key);
        let policy = Policy::exact(ttl).with_format(self.core.config.format());
        let run = async move { init().await };
        self.core
            .get_or_run::<Plain, T, _>(
                None,
                &key,
                None,
                &policy,
                Hooks::none(),
                None,
                None,
                (Some(0), &[]),
                run,
            )
            .await
            .0
    }

    /// [`get_or_insert_with`](Self::get_or_insert_with) for a load that can fail: an `Ok`
    /// is stored, an `Err` is returned and never stored, as for a `#[cached]` function
    /// that returns `Result` (the next call runs `init` again; concurrent calls waiting on
    /// the failed one run their own).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use std::time::Duration;
    /// let cache = redcache::Cache::memory();
    /// let ttl = Duration::from_secs(60);
    /// let failed: Result<u64, String> =
    ///     cache.try_get_or_insert_with("row:7", ttl, || async { Err("timeout".into()) }).await;
    /// assert!(failed.is_err());
    /// // Not cached: the next call loads again.
    /// let loaded: Result<u64, String> =
    ///     cache.try_get_or_insert_with("row:7", ttl, || async { Ok(7) }).await;
    /// let cached: Result<u64, String> =
    ///     cache.try_get_or_insert_with("row:7", ttl, || async { Ok(0) }).await;
    /// assert_eq!((loaded, cached), (Ok(7), Ok(7)));
    /// # }
    /// ```
    pub async fn try_get_or_insert_with<T, E, F, Fut>(
        &self,
        key: &str,
        ttl: Duration,
        init: F,
    ) -> std::result::Result<T, E>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<T, E>>,
    {
        let key = self.core.full_key(key);
        let policy = Policy::exact(ttl).with_format(self.core.config.format());
        let run = async move { init().await };
        let hooks = Hooks::none();
        self.core
            .get_or_run::<Res, _, _>(
                None,
                &key,
                None,
                &policy,
                hooks,
                None,
                None,
                (Some(0), &[]),
                run,
            )
            .await
            .0
    }

    /// Cache-aside for many ids at once: the entries present are read with one `MGET`,
    /// `load` runs once with the ids that missed (each once, however often `ids` has it),
    /// and what it returns is stored with one pipelined write (each entry for exactly
    /// `ttl`). Returns the value of every id that
    /// was cached or loaded; an id `load` leaves out is simply absent (and not cached), and
    /// so is an id whose entry is a cached `None` (written by a single-id function that
    /// returns `Option`): a null hit, not loaded again.
    ///
    /// Each id has the key `[{namespace}:]{prefix}:{md5 of [id]}`. That is the key of a
    /// free (not a method), non-generic, ungrouped `#[cached(prefix = "..")]` function
    /// whose one key argument (any other is `skip`ped) is the id, without `key = ..`: only
    /// such a function shares entries with the batch, and `invalidate!` on it invalidates
    /// the batch's entry too. A method's keys (which name its impl), a generic function's
    /// (its type arguments) and a grouped function's (its group) differ from the batch's,
    /// so `invalidate!` or `invalidate_group` on those never reach the batch's entries.
    /// An entry of a tagged function (or written in a group) is a miss for the batch,
    /// which cannot check its generations, and is not written over: the id's loaded value
    /// is returned without being stored, so the entry stays under its tags' (or group's)
    /// invalidations. But the batch cannot know a function's tags where it finds no entry
    /// (or a tombstone): it stores the value there without tags, and a tag's invalidation
    /// does not retire it (`invalidate!` on the function does, and the function's own
    /// calls read it as a miss and write over it). Do not batch over a tagged function's
    /// prefix: give the batch a prefix of its own.
    ///
    /// Stores are fenced like every fill (an entry invalidated while `load` ran is not
    /// overwritten) and the call fails open: if Redis fails, `load` gets every id and its
    /// result is returned. Batches do not share single flights with each other.
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
        self.core.get_or_insert_many(prefix, ids, ttl, load).await
    }

    /// Invalidates every entry of the eviction group `group` (`#[cached(group = "..")]`)
    /// at once: the group moves to a new generation, and entries of older generations are
    /// misses from then on (they expire by their TTL). One Redis command, whatever the
    /// size of the group.
    ///
    /// # Errors
    ///
    /// The store failed or timed out; or `group` is no group's name
    /// ([`Error::Config`](crate::Error::Config)): empty, or with control characters or
    /// braces (a key shows its group in braces, `{products}`).
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
        self.core.invalidate_group(group).await
    }

    /// Invalidates every entry carrying `tag`, of every `#[cached(tags(..))]` function, in
    /// one command: the tag moves to a new random generation, and an entry stamped with
    /// another is a miss from then on (a fill that started before this call included).
    /// The entries stay in Redis until their TTL.
    ///
    /// # Errors
    ///
    /// The store failed or timed out.
    ///
    /// # Examples
    ///
    /// ```
    /// #[redcache::cached(ttl = 600, tags("user:{user_id}"))]
    /// async fn orders(user_id: u64) -> Vec<u64> { vec![user_id * 10] }
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), redcache::Error> {
    /// let cache = redcache::Cache::memory();
    /// cache.scope(async { orders(42).await; orders(7).await }).await;
    /// cache.invalidate_tag("user:42").await?;
    /// cache.scope(async { orders(42).await; orders(7).await }).await;
    /// // user 42's entry missed again, user 7's did not.
    /// assert_eq!((cache.stats().misses, cache.stats().hits), (3, 1));
    /// # Ok(()) }
    /// ```
    pub async fn invalidate_tag(&self, tag: &str) -> Result<()> {
        self.core.invalidate_tag(tag).await
    }

    /// Invalidates every entry whose key starts with `prefix` + `:` (the namespace is
    /// added): the entries of every `#[cached(prefix = ..)]` function whose prefix is
    /// `prefix` or starts with `prefix:`. Returns how many entries were invalidated.
    ///
    /// Redis is walked with `SCAN` in steps of 250 keys, and the live entries are replaced
    /// by tombstones with one short script per 100 keys (one per key on a cluster), so no
    /// command holds Redis for long, whatever the number of keys (never `KEYS`). Tombstones
    /// already there (of exact invalidations) are replaced by new ones and not counted, so
    /// a miss that read one does not store what it read; leases are left as they are. Glob
    /// characters in `prefix` (`*`, `?`, `[`, `]`, `\`) match only themselves.
    /// Like every invalidation, it is never skipped by the open breaker.
    ///
    /// What it cannot fence: a miss already running for a key that had *no* entry (there
    /// was nothing to find), which may store its value afterwards. Exact calls
    /// (`invalidate!`, `#[evicts]`) and groups are race-safe for such keys too; use them on
    /// write paths, and prefixes for maintenance and bulk purges.
    ///
    /// # Errors
    ///
    /// The store failed; entries removed before the fault stay removed. (A step whose
    /// connection dropped runs again on a new one; if the first run's reply was lost, what
    /// that run retired is not counted: the count is then a lower bound.) On a cluster,
    /// also while a slot is migrating between masters, or if slots moved during the walk:
    /// a key that moved behind it could have been missed, so try again once the
    /// resharding is done.
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
        self.core.invalidate_prefix(prefix).await
    }

    /// The cache `#[cached]` calls use here: the scoped one, else the global one.
    pub(crate) fn current() -> Option<Cache> {
        Cache::in_use().map(InUse::into_owned)
    }

    /// [`current`](Self::current) for one call: the global cache is borrowed, not cloned,
    /// so calls on many threads do not all write its reference count (one contended cache
    /// line per call, twice).
    pub(crate) fn in_use() -> Option<InUse> {
        Cache::answer_or_in_use(|_| None::<std::convert::Infallible>)
            .err()
            .flatten()
    }

    /// `f`'s answer from the cache in use, borrowed while `f` runs, without touching its
    /// reference count (not even a scoped cache's, which every task in the scope shares):
    /// for work that never waits, such as a local-tier hit. When `f` has no answer, the
    /// cache in use as [`in_use`](Self::in_use) gives it, from the same lookup; `Err(None)`
    /// when no cache is set up.
    pub(crate) fn answer_or_in_use<R>(
        f: impl FnOnce(&Cache) -> Option<R>,
    ) -> Result<R, Option<InUse>> {
        let mut f = Some(f);
        let scoped = SCOPED.try_with(|scoped| {
            f.take()
                .and_then(|f| f(scoped))
                .ok_or_else(|| Some(InUse::Scoped(scoped.clone())))
        });
        match (scoped, f) {
            (Ok(answer), _) => answer,
            (Err(_), f) => match GLOBAL.get() {
                Some(global) => f.and_then(|f| f(global)).ok_or(Some(InUse::Global(global))),
                None => Err(None),
            },
        }
    }
}

/// The cache a call uses ([`Cache::in_use`]).
pub(crate) enum InUse {
    Global(&'static Cache),
    Scoped(Cache),
}

impl InUse {
    /// The cache itself, to keep (a task of its own takes it).
    pub(crate) fn into_owned(self) -> Cache {
        match self {
            InUse::Global(cache) => cache.clone(),
            InUse::Scoped(cache) => cache,
        }
    }
}

impl std::ops::Deref for InUse {
    type Target = Cache;

    fn deref(&self) -> &Cache {
        match self {
            InUse::Global(cache) => cache,
            InUse::Scoped(cache) => cache,
        }
    }
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field(
                "store",
                &match self.core.backend {
                    Backend::Redis(_) if self.core.config.is_sentinel() => "redis sentinel",
                    Backend::Redis(_) => "redis",
                    Backend::Cluster(_) => "redis cluster",
                    Backend::Memory(_) => "memory",
                },
            )
            .field("config", &self.core.config)
            .field("stats", &self.stats())
            .finish()
    }
}
