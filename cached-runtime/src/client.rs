//! The cache handle, the global instance and scoped overrides.

use crate::codec::{self, Decoded};
use crate::flight::{self, Flights, Role};
use crate::health::Health;
use crate::stats::{Counters, Stats};
use crate::store::{Backend, MemoryStore, RedisStore, Store};
use crate::ttl::Policy;
use crate::{Config, Error, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
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
    inner: Arc<Inner>,
}

struct Inner {
    backend: Backend,
    config: Config,
    counters: Counters,
    flights: Flights,
    health: Health,
}

/// What a store read gave.
enum Fetched {
    Entry(Vec<u8>),
    Nothing,
    /// The store failed, timed out or is skipped: the call does not write either, so an
    /// outage adds at most one timeout to a call.
    Unavailable,
}

impl Cache {
    fn new(backend: Backend, config: Config) -> Cache {
        let health = Health::new(config.breaker_threshold(), config.breaker_cooldown());
        Cache {
            inner: Arc::new(Inner {
                backend,
                config,
                counters: Counters::default(),
                flights: Flights::default(),
                health,
            }),
        }
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
        if let Some(problem) = config.invalid() {
            return Err(Error::config(problem));
        }
        let store = RedisStore::connect(&config).await?;
        Ok(Cache::new(Backend::Redis(store), config))
    }

    /// An in-process cache with the default configuration: for running without Redis, and
    /// for tests. Entries expire as they would in Redis.
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
        Cache::new(Backend::Memory(MemoryStore::default()), config)
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
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Whether entries go to Redis (else to the in-process store).
    pub fn is_redis(&self) -> bool {
        self.inner.backend.is_remote()
    }

    /// A snapshot of this cache's counters.
    pub fn stats(&self) -> Stats {
        self.inner.counters.snapshot(self.inner.health.is_open())
    }

    /// The value at `key` (the namespace is added), or `None` when there is none or it does
    /// not decode as `T` (that counts as a fault, like a corrupt entry).
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
        let key = self.full_key(key);
        let Some(bytes) = self.op(self.inner.backend.get(&key)).await? else {
            return Ok(None);
        };
        match codec::decode::<T>(&bytes) {
            Ok(Decoded::Value(value)) => Ok(Some(value)),
            Ok(Decoded::Null) => Ok(None),
            Err(err) => {
                self.fault(&key, &Error::decode(err));
                Ok(None)
            }
        }
    }

    /// Stores `value` at `key` (the namespace is added) for exactly `ttl`.
    ///
    /// # Errors
    ///
    /// The value does not serialize or is over [`Config::max_value_bytes`], or the store
    /// failed.
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
        let bytes = codec::encode_value(value).map_err(|source| Error::Encode { source })?;
        let key = self.full_key(key);
        self.write_checked(&key, &bytes, Policy::exact(ttl).value_ttl())
            .await
    }

    /// Removes the entry at `key` (the namespace is added); whether there was one.
    ///
    /// # Errors
    ///
    /// The store failed.
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
        let key = self.full_key(key);
        self.delete_key(&key).await
    }

    /// Removes the entry at an exact store key (namespace included), as `#[cached]`
    /// derives it.
    pub(crate) async fn delete_key(&self, key: &str) -> Result<bool> {
        let removed = self.op(self.inner.backend.delete(key)).await?;
        if removed {
            Counters::bump(&self.inner.counters.invalidations);
        }
        Ok(removed)
    }

    /// Time left before the entry at `key` (the namespace is added) expires; `None` when
    /// there is none.
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
        let key = self.full_key(key);
        self.op(self.inner.backend.ttl(&key)).await
    }

    /// Cache-aside for code without the attribute: the value at `key` (the namespace is
    /// added), else `init()`'s result, stored for exactly `ttl`.
    ///
    /// Same rules as `#[cached]`: concurrent calls for one key run `init` once, and a store
    /// fault never fails the call (`init` runs and its value is returned).
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
        let key = self.full_key(key);
        let policy = Policy::exact(ttl);
        self.get_or_run::<crate::private::Plain<T>, _>(&key, &policy, async move { init().await })
            .await
    }

    fn full_key(&self, key: &str) -> String {
        match self.inner.config.namespace() {
            Some(ns) => format!("{ns}:{key}"),
            None => key.to_owned(),
        }
    }

    /// The cache `#[cached]` calls use here: the scoped one, else the global one.
    pub(crate) fn current() -> Option<Cache> {
        SCOPED
            .try_with(Cache::clone)
            .ok()
            .or_else(|| GLOBAL.get().cloned())
    }

    /// The heart of every cached call: single flight, read, run on a miss, write.
    pub(crate) async fn get_or_run<S, F>(&self, key: &str, policy: &Policy, body: F) -> S::Output
    where
        S: crate::private::Shape,
        F: Future<Output = S::Output>,
    {
        loop {
            match self.inner.flights.join(key) {
                Role::Follower(rx) => {
                    if let Some(entry) = flight::follow(rx).await {
                        if let Ok(hit) = S::decode(&entry) {
                            return self.count_hit(hit);
                        }
                    }
                    // The leader had nothing to share or went away: start over.
                }
                Role::Leader(leader) => {
                    let fetched = self.fetch(key).await;
                    let writable = !matches!(fetched, Fetched::Unavailable);
                    if let Fetched::Entry(bytes) = fetched {
                        match S::decode(&bytes) {
                            Ok(hit) => {
                                if leader.has_followers() {
                                    leader.finish(Some(Arc::new(bytes)));
                                }
                                return self.count_hit(hit);
                            }
                            // Corrupt, foreign or older-format data: a miss, overwritten below.
                            Err(err) => self.fault(key, &Error::decode(err)),
                        }
                    }
                    Counters::bump(&self.inner.counters.misses);
                    let out = body.await;
                    let entry = match S::outcome(&out) {
                        crate::private::Outcome::Value(Ok(bytes)) => {
                            if writable {
                                self.write(key, &bytes, policy.value_ttl()).await;
                            }
                            Some(bytes)
                        }
                        crate::private::Outcome::Value(Err(source)) => {
                            self.fault(key, &Error::Encode { source });
                            None
                        }
                        crate::private::Outcome::Null => {
                            let bytes = codec::encode_null();
                            if let Some(ttl) = policy.null_ttl().filter(|_| writable) {
                                self.write(key, &bytes, ttl).await;
                            }
                            Some(bytes)
                        }
                        crate::private::Outcome::Skip => None,
                    };
                    leader.finish(entry.map(Arc::new));
                    return out;
                }
            }
        }
    }

    fn count_hit<O>(&self, hit: crate::private::Hit<O>) -> O {
        match hit {
            crate::private::Hit::Value(out) => {
                Counters::bump(&self.inner.counters.hits);
                out
            }
            crate::private::Hit::Null(out) => {
                Counters::bump(&self.inner.counters.null_hits);
                out
            }
        }
    }

    /// Reads `key`; faults are recorded, never returned.
    async fn fetch(&self, key: &str) -> Fetched {
        match self.op(self.inner.backend.get(key)).await {
            Ok(Some(bytes)) => Fetched::Entry(bytes),
            Ok(None) => Fetched::Nothing,
            Err(err) => {
                self.fault(key, &err);
                if err.is_store_fault() || matches!(err, Error::Unavailable { .. }) {
                    Fetched::Unavailable
                } else {
                    // Redis rejected the read (e.g. a key of another type): write over it.
                    Fetched::Nothing
                }
            }
        }
    }

    /// Writes `key`; faults are recorded, never returned.
    async fn write(&self, key: &str, bytes: &[u8], ttl: Duration) {
        if let Err(err) = self.write_checked(key, bytes, ttl).await {
            self.fault(key, &err);
        }
    }

    async fn write_checked(&self, key: &str, bytes: &[u8], ttl: Duration) -> Result<()> {
        let max = self.inner.config.max_value_bytes();
        if bytes.len() > max {
            return Err(Error::TooLarge {
                size: bytes.len(),
                max,
            });
        }
        self.op(self.inner.backend.set(key, bytes, ttl)).await?;
        Counters::bump(&self.inner.counters.stores);
        Ok(())
    }

    /// Runs one store operation under the timeout and the breaker.
    async fn op<T>(&self, op: impl Future<Output = Result<T>>) -> Result<T> {
        if !self.inner.backend.is_remote() {
            return op.await;
        }
        let health = &self.inner.health;
        if !health.allow() {
            Counters::bump(&self.inner.counters.skipped);
            return Err(Error::Unavailable {
                cooldown: self.inner.config.breaker_cooldown(),
            });
        }
        let after = self.inner.config.op_timeout();
        let result = match tokio::time::timeout(after, op).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout { after }),
        };
        match &result {
            Ok(_) => health.success(),
            Err(err) if err.is_store_fault() => health.failure(),
            Err(_) => {}
        }
        result
    }

    /// Counts a fault and logs it, at most once a second per cache. A skipped operation
    /// (open breaker) is counted apart and not logged again.
    pub(crate) fn fault(&self, key: &str, err: &Error) {
        if matches!(err, Error::Unavailable { .. }) {
            return;
        }
        Counters::bump(&self.inner.counters.faults);
        if let Some(suppressed) = self.inner.health.may_log() {
            tracing::warn!(
                key,
                error = %err,
                suppressed,
                "redcache: cache fault; the call went on without the cache"
            );
        }
    }
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("store", &if self.is_redis() { "redis" } else { "memory" })
            .field("config", &self.inner.config)
            .field("stats", &self.stats())
            .finish()
    }
}

/// Logs, once per process, that `#[cached]` ran without a cache.
pub(crate) fn warn_not_initialized() {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            "redcache: no cache installed; #[cached] functions run uncached. Call \
             redcache::init(Config::from_env()) at startup"
        );
    }
}

/// Connects to Redis with `config` and installs the cache globally.
///
/// # Errors
///
/// As [`Cache::connect`] and [`Cache::install`].
///
/// # Examples
///
/// ```no_run
/// # #[tokio::main] async fn main() -> Result<(), redcache::Error> {
/// redcache::init(redcache::Config::from_env()).await?;
/// # Ok(()) }
/// ```
pub async fn init(config: Config) -> Result<()> {
    Cache::connect(config).await?.install()
}

/// The counters of the cache in use here (scoped, else global); all zero when there is
/// none.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let cache = redcache::Cache::memory();
/// let stats = cache.scope(async { redcache::stats() }).await;
/// assert_eq!(stats.hits, 0);
/// # }
/// ```
pub fn stats() -> Stats {
    Cache::current().map(|c| c.stats()).unwrap_or_default()
}
