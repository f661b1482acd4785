//! The cache handle, the global instance and scoped overrides.

use crate::codec::{self, Decoded, Refresh, Stamp};
use crate::flight::{self, Flights, Followed, Leader, Role, Shared};
use crate::health::Health;
use crate::key::{self, new_generation, parse_gen, BadGeneration};
use crate::private::{Found, Outcome, Plain, Shape};
use crate::stats::{Counters, Stats};
use crate::store::{Backend, Fill, GroupFence, MemoryStore, RedisStore, Seen, Store};
use crate::ttl::{self, Policy};
use crate::{Config, Error, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::time::Instant;

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
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) backend: Backend,
    pub(crate) config: Config,
    pub(crate) counters: Counters,
    flights: Flights,
    health: Health,
}

/// Where a call stands before its body would run.
enum Step<'a, O> {
    /// Answered (a hit, or a waiter served by its leader).
    Done(O),
    /// The flight it waited on ended with nothing to share: start over.
    Again,
    /// Run the body, then [`Cache::complete`].
    Run(Run<'a>),
    /// Start over and, after a miss, run the body without a flight.
    Solo,
}

/// A body to run, and what its result's write needs.
struct Run<'a> {
    flight: Flight<'a>,
    /// What the read saw: the fill must find it again.
    read: Read,
    /// When the read started (the fill fence counts from then).
    started: Instant,
    /// The cross-process lease, if the function takes one.
    lease: Option<Lease>,
}

/// Why this call runs the body.
enum Flight<'a> {
    /// It leads the key's flight, after a miss or to refresh the entry early: callers that
    /// miss meanwhile wait for its result instead of running the body once more.
    Lead(Leader<'a>),
    /// The flight it waited on had nothing to share: it runs on its own.
    Solo,
}

/// What a read means for a call.
enum Examined<O> {
    Hit(Found<O>),
    /// A hit that XFetch picked for recomputation now, before it expires.
    Refresh(Found<O>),
    Miss,
}

/// The outcome of trying for a key's cross-process lease.
enum Locked<O> {
    /// Another process filled the entry while this one waited: a hit.
    Filled(O, Option<Vec<u8>>),
    /// This caller holds the lease; the read made right after taking it.
    Acquired(Lease, Read),
    /// No lease (the wait ran out, or the store failed): compute without one.
    Proceed(Read),
}

/// A held cross-process lease: `SET {key}:lock <token> NX PX <lease>`. Given back when
/// the call ends, and also when it is cancelled (a client that disconnects drops its
/// handler) or its body panics: dropped while held, it releases itself in a task, so other
/// processes do not wait out the whole lease.
struct Lease {
    cache: Cache,
    key: String,
    token: String,
    held: bool,
}

impl Lease {
    /// Gives the lease back (only if this caller still holds it).
    async fn release(mut self) {
        self.held = false;
        self.cache.release_lease(&self.key, &self.token).await;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.held {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (cache, key, token) = (
                self.cache.clone(),
                std::mem::take(&mut self.key),
                std::mem::take(&mut self.token),
            );
            runtime.spawn(async move { cache.release_lease(&key, &token).await });
        }
    }
}

/// Runs `body` and measures it (XFetch's delta).
async fn timed<O>(body: impl Future<Output = O>) -> (O, Duration) {
    let start = Instant::now();
    let out = body.await;
    (out, start.elapsed())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Wall-clock milliseconds since the Unix epoch (entries' expiry for early refresh).
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, millis)
}

/// What the read of a miss saw: what its fill must find again to store its result.
enum Read {
    Found {
        entry: Option<Vec<u8>>,
        gen: Gen,
    },
    /// Redis rejected the read (a key of another Redis type): the fill overwrites it.
    WrongType,
    /// The store failed, timed out or is skipped: the call does not write either, so an
    /// outage adds at most one timeout to a call.
    Unavailable,
}

/// A group's generation as read (functions without a group read none: `Missing`).
#[derive(Clone, Copy)]
enum Gen {
    Missing,
    At(u64),
    /// Not a generation redcache wrote: nothing of the group is used or stored until
    /// `invalidate_group` replaces it.
    Unusable,
}

impl Read {
    fn entry(&self) -> Option<&[u8]> {
        match self {
            Read::Found { entry, .. } => entry.as_deref(),
            _ => None,
        }
    }

    fn into_entry(self) -> Option<Vec<u8>> {
        match self {
            Read::Found { entry, .. } => entry,
            _ => None,
        }
    }

    /// Whether an entry written at generation `gen` is current (0: written outside a group).
    fn gen_matches(&self, gen: u64) -> bool {
        match self {
            Read::Found {
                gen: Gen::At(current),
                ..
            } => gen == *current,
            Read::Found {
                gen: Gen::Missing, ..
            } => gen == 0,
            _ => false,
        }
    }

    /// Whether the read found bytes at the key (an entry it could not use, a tombstone).
    fn saw_entry(&self) -> bool {
        matches!(self, Read::Found { entry: Some(_), .. })
    }

    fn writable(&self) -> bool {
        !matches!(
            self,
            Read::Unavailable
                | Read::Found {
                    gen: Gen::Unusable,
                    ..
                }
        )
    }

    fn seen(&self) -> Seen<'_> {
        match self {
            Read::Found { entry: None, .. } => Seen::Nothing,
            Read::Found {
                entry: Some(bytes), ..
            } => Seen::Bytes(bytes),
            Read::WrongType | Read::Unavailable => Seen::WrongType,
        }
    }

    /// The generation a grouped fill stamps its value with: the one read, or a new one
    /// the fill creates if there was none.
    fn fence<'a>(&self, gen_key: Option<&'a str>) -> Option<GroupFence<'a>> {
        let key = gen_key?;
        let (gen, create) = match self {
            Read::Found {
                gen: Gen::At(gen), ..
            } => (*gen, false),
            _ => (new_generation(), true),
        };
        Some(GroupFence { key, gen, create })
    }
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
        if config.op_timeout() >= config.max_fill_time() {
            return Err(Error::config(format!(
                "op_timeout ({:?}) must be shorter than max_fill_time ({:?}): a miss's write \
                 may land up to one operation timeout after it is sent, and must land while \
                 an invalidation's tombstone still fences it; lower REDCACHE_TIMEOUT_MS or \
                 raise REDCACHE_MAX_FILL_MS",
                config.op_timeout(),
                config.max_fill_time()
            )));
        }
        let backend = if config.is_cluster() {
            Backend::Cluster(RedisStore::connect_cluster(&config).await?)
        } else {
            Backend::Redis(RedisStore::connect(&config).await?)
        };
        Ok(Cache::new(backend, config))
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

    /// Whether entries go to Redis or a Redis Cluster (else to the in-process store).
    pub fn is_redis(&self) -> bool {
        self.inner.backend.is_remote()
    }

    /// A snapshot of this cache's counters.
    pub fn stats(&self) -> Stats {
        self.inner
            .counters
            .snapshot(self.inner.health.is_open(), self.inner.backend.local_hits())
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
        match codec::decode::<T>(&bytes).map(|e| e.body) {
            Ok(Decoded::Value(value)) => Ok(Some(value)),
            Ok(Decoded::Null | Decoded::Gone) => Ok(None),
            Err(err) => {
                self.fault(&key, &Error::decode_json(&err));
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
        let bytes = codec::encode_value(value, Stamp::default())
            .map_err(|source| Error::Encode { source })?;
        let key = self.full_key(key);
        let ttl = Policy::exact(ttl).value_ttl();
        self.write_checked(
            || async {
                self.inner
                    .backend
                    .set(&key, &bytes, ttl)
                    .await
                    .map(|()| true)
            },
            bytes.len(),
        )
        .await
        .map(drop)
    }

    /// Removes the entry at `key` (the namespace is added); whether there was one.
    ///
    /// Like every invalidation, this leaves a small tombstone for
    /// [`Config::max_fill_time`], so that a `get_or_insert_with` that started before it
    /// cannot store its older value afterwards.
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
        self.invalidate_key(&key).await
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
        match self.op(self.inner.backend.get(&key)).await? {
            Some(bytes) if !codec::is_tombstone(&bytes) => {
                self.op(self.inner.backend.ttl(&key)).await
            }
            _ => Ok(None),
        }
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
        self.get_or_run::<Plain, T, _>(&key, None, &policy, async move { init().await })
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

    /// The heart of every cached call: read, then on a miss single flight, the
    /// cross-process lease if the function takes one, the body, and the fenced write.
    ///
    /// This is the only part generic over the body's future, and so the only part each
    /// `#[cached]` function gets its own copy of: it awaits [`step`](Self::step) and
    /// [`complete`](Self::complete), which are generic over the return type alone.
    pub(crate) async fn get_or_run<K, O, F>(
        &self,
        key: &str,
        group: Option<&str>,
        policy: &Policy,
        body: F,
    ) -> O
    where
        K: Shape<O>,
        F: Future<Output = O>,
    {
        let gen_key = group.map(|g| key::group_key(self.inner.config.namespace(), g));
        let gen_key = gen_key.as_deref();
        let mut solo = false;
        loop {
            match self.step::<K, O>(key, gen_key, policy, solo).await {
                Step::Done(out) => return out,
                Step::Again => continue,
                // The flight it waited on ended with nothing to share (an `Err`, a result
                // that was not stored): running the body now beats queueing behind another
                // flight that may end the same way.
                Step::Solo => solo = true,
                Step::Run(run) => {
                    let (out, compute) = timed(body).await;
                    self.complete::<K, O>(key, gen_key, policy, run, &out, compute)
                        .await;
                    return out;
                }
            }
        }
    }

    /// Everything a call does before its body would run: a hit, a reason to start over,
    /// or the body to run (as the key's flight leader, as its early refresher, or `solo`:
    /// without a flight).
    async fn step<K: Shape<O>, O>(
        &self,
        key: &str,
        gen_key: Option<&str>,
        policy: &Policy,
        solo: bool,
    ) -> Step<'_, O> {
        // Read first: a hit needs no flight.
        let stripe = self.inner.flights.stripe(key);
        let mut started = Instant::now();
        let mut read = self.read(key, gen_key).await;
        match self.examine::<K, O>(key, &read, policy) {
            Examined::Hit(found) => {
                if let Some(out) = self.count_hit(found) {
                    return Step::Done(out);
                }
            }
            Examined::Refresh(found) => {
                // The refresh leads the key's flight: one at a time in this process, and a
                // caller that misses meanwhile (the entry expired) waits for it. Callers
                // that find a flight under way are served the entry, still valid.
                let Role::Leader(leader) = self.inner.flights.join(key) else {
                    return match self.count_hit(found) {
                        Some(out) => Step::Done(out),
                        None => Step::Again,
                    };
                };
                Counters::bump(&self.inner.counters.refreshes);
                return Step::Run(Run {
                    flight: Flight::Lead(leader),
                    read,
                    started,
                    lease: None,
                });
            }
            Examined::Miss => {}
        }
        if solo {
            Counters::bump(&self.inner.counters.misses);
            return Step::Run(Run {
                flight: Flight::Solo,
                read,
                started,
                lease: None,
            });
        }
        let wait = self.inner.config.max_fill_time();
        let leader = match self.inner.flights.join(key) {
            Role::Follower(rx) => {
                return match flight::follow(rx, wait).await {
                    // An unfenced result may predate the invalidation whose trace (a
                    // tombstone) this caller read: it computes its own.
                    Followed::Shared(shared) if !shared.fenced && read.saw_entry() => Step::Solo,
                    Followed::Shared(shared) => match K::decode(&shared.entry) {
                        Ok((found, _)) => match self.count_hit(found) {
                            Some(out) => Step::Done(out),
                            None => Step::Again,
                        },
                        Err(_) => Step::Again,
                    },
                    // Nothing to share (an `Err`, a result not stored), or the leader
                    // stalled: running the body now beats queueing behind another flight
                    // that may end the same way.
                    Followed::Nothing => Step::Solo,
                    // The leader went away: start over, one of the waiters leads.
                    Followed::Again => Step::Again,
                };
            }
            Role::Late(rx) => {
                // The leader may hold a result from before an invalidation this caller
                // read: wait for it to end, then read again; if it had nothing to share,
                // run the body now rather than queue behind the next leader.
                return match flight::follow(rx, wait).await {
                    Followed::Nothing => Step::Solo,
                    Followed::Shared(_) | Followed::Again => Step::Again,
                };
            }
            Role::Leader(leader) => leader,
        };
        if self.inner.flights.stripe(key) != stripe {
            // A flight ended since the read (perhaps this key's): read again.
            leader.seal();
            (started, read) = (Instant::now(), self.read(key, gen_key).await);
            if let Examined::Hit(found) | Examined::Refresh(found) =
                self.examine::<K, O>(key, &read, policy)
            {
                if let Some(out) = self.count_hit(found) {
                    leader.finish(read.into_entry().map(Shared::stored));
                    return Step::Done(out);
                }
            }
        }
        let mut lease = None;
        if let Some(lock) = policy.lock().filter(|_| read.writable()) {
            leader.seal();
            // Counted from before the wait: errs on the safe side.
            let taken = Instant::now();
            match self.lock_or_wait::<K, O>(key, gen_key, policy, lock).await {
                Locked::Filled(out, entry) => {
                    leader.finish(entry.map(Shared::stored));
                    return Step::Done(out);
                }
                Locked::Acquired(held, fresh) => {
                    // Double-check: the previous holder may have filled just now.
                    if let Examined::Hit(found) = self.examine::<K, O>(key, &fresh, policy) {
                        if let Some(out) = self.count_hit(found) {
                            leader.finish(fresh.into_entry().map(Shared::stored));
                            held.release().await;
                            return Step::Done(out);
                        }
                    }
                    lease = Some(held);
                    (read, started) = (fresh, taken);
                }
                Locked::Proceed(fresh) => (read, started) = (fresh, taken),
            }
        }
        Counters::bump(&self.inner.counters.misses);
        Step::Run(Run {
            flight: Flight::Lead(leader),
            read,
            started,
            lease,
        })
    }

    /// After the body ran: stores its result, releases the lease, ends the flight.
    async fn complete<K: Shape<O>, O>(
        &self,
        key: &str,
        gen_key: Option<&str>,
        policy: &Policy,
        run: Run<'_>,
        out: &O,
        compute: Duration,
    ) {
        let Run {
            flight,
            read,
            started,
            lease,
        } = run;
        if let Flight::Lead(leader) = &flight {
            leader.seal();
        }
        let shared = self
            .store_result::<K, O>(key, gen_key, &read, policy, out, started, compute)
            .await;
        if let Flight::Lead(leader) = flight {
            leader.finish(shared);
        }
        if let Some(held) = lease {
            held.release().await;
        }
    }

    /// What a read means for a call: a hit, a hit due for early refresh, or a miss.
    fn examine<K: Shape<O>, O>(&self, key: &str, read: &Read, policy: &Policy) -> Examined<O> {
        let Some(bytes) = read.entry() else {
            return Examined::Miss;
        };
        match K::decode(bytes) {
            // A tombstone: a miss, filled over.
            Ok((Found::Gone, _)) => Examined::Miss,
            Ok((found, stamp)) if read.gen_matches(stamp.gen) => {
                if let (Some(beta), Some(entry)) = (policy.early_refresh(), stamp.refresh) {
                    let to_expiry = entry.expires_ms as f64 - unix_ms() as f64;
                    let r = 1.0 - rand::random::<f64>();
                    if ttl::should_refresh(to_expiry, entry.compute_ms as f64, beta, r) {
                        return Examined::Refresh(found);
                    }
                }
                Examined::Hit(found)
            }
            // Written before the group was invalidated: a miss.
            Ok(_) => Examined::Miss,
            // Corrupt, foreign or older-format data: a miss, overwritten.
            Err(err) => {
                self.fault(key, &Error::decode_json(&err));
                Examined::Miss
            }
        }
    }

    /// Takes the key's cross-process lease, or waits (polling, at most the lease's length)
    /// for the process that holds it to fill the entry.
    async fn lock_or_wait<K: Shape<O>, O>(
        &self,
        key: &str,
        gen_key: Option<&str>,
        policy: &Policy,
        lease: Duration,
    ) -> Locked<O> {
        let lease_key = format!("{key}:lock");
        let token = new_generation().to_string();
        let now = Instant::now();
        let deadline = now
            .checked_add(lease)
            .unwrap_or(now + Duration::from_secs(86_400));
        let mut pause = Duration::from_millis(2);
        loop {
            let taken = self
                .inner
                .backend
                .set_nx(&lease_key, token.as_bytes(), lease);
            match self.op(taken).await {
                Ok(true) => {
                    let held = Lease {
                        cache: self.clone(),
                        key: lease_key,
                        token,
                        held: true,
                    };
                    let fresh = self.read(key, gen_key).await;
                    return Locked::Acquired(held, fresh);
                }
                Ok(false) => {}
                Err(err) => {
                    self.fault(key, &err);
                    return Locked::Proceed(Read::Unavailable);
                }
            }
            let now = Instant::now();
            if now >= deadline {
                // The holder is slow or gone: compute here rather than wait any longer.
                Counters::bump(&self.inner.counters.lock_timeouts);
                return Locked::Proceed(self.read(key, gen_key).await);
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(Duration::from_millis(50));
            let read = self.read(key, gen_key).await;
            if let Examined::Hit(found) | Examined::Refresh(found) =
                self.examine::<K, O>(key, &read, policy)
            {
                if let Some(out) = self.count_hit(found) {
                    return Locked::Filled(out, read.into_entry());
                }
            }
        }
    }

    /// Gives the lease at `key` back if `token` still holds it.
    async fn release_lease(&self, key: &str, token: &str) {
        let release = self.inner.backend.delete_if(key, token.as_bytes());
        if let Err(err) = self.op(release).await {
            // It expires by itself.
            self.fault(key, &err);
        }
    }

    /// Stores a miss's result if nothing changed at the key since `read`; the entry to hand
    /// to the callers waiting on this flight, if they may have it, and whether it is fenced.
    #[allow(clippy::too_many_arguments)]
    async fn store_result<K: Shape<O>, O>(
        &self,
        key: &str,
        gen_key: Option<&str>,
        read: &Read,
        policy: &Policy,
        out: &O,
        started: Instant,
        compute: Duration,
    ) -> Option<Shared> {
        let fence = read.fence(gen_key);
        let value_ttl = policy.value_ttl();
        let stamp = Stamp {
            gen: fence.map_or(0, |f| f.gen),
            refresh: policy.early_refresh().map(|_| Refresh {
                expires_ms: unix_ms().saturating_add(millis(value_ttl)),
                compute_ms: millis(compute),
            }),
        };
        let (bytes, ttl) = match K::encode(out, stamp) {
            Outcome::Value(Ok(bytes)) => (bytes, Some(value_ttl)),
            Outcome::Value(Err(source)) => {
                self.fault(key, &Error::Encode { source });
                return None;
            }
            Outcome::Null(bytes) => (bytes, policy.null_ttl()),
            Outcome::Skip => return None,
        };
        // Waiters get the result if the fenced fill stored it (then no invalidation came
        // between the read and the write), or unfenced if there was nothing to write it to:
        // the store is out or the value is over the size limit (sharing spares the
        // database; a waiter that saw an invalidation refuses an unfenced result).
        let Some(ttl) = ttl.filter(|_| read.writable()) else {
            return matches!(read, Read::Unavailable).then(|| Shared::unfenced(bytes));
        };
        let max_fill = self.inner.config.max_fill_time();
        if self.past_fill_deadline(started) {
            // An invalidation during the run may have left no trace by now: neither store
            // nor share the result.
            Counters::bump(&self.inner.counters.conflicts);
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
            seen: read.seen(),
            group: fence,
        };
        match self
            .write_checked(|| self.inner.backend.fill(&fill), bytes.len())
            .await
        {
            Ok(true) => Some(Shared::stored(bytes)),
            Ok(false) => {
                // Invalidated or rewritten while the body ran: the result may be older than
                // what is there now. The caller gets it; the cache and the waiters do not.
                Counters::bump(&self.inner.counters.conflicts);
                None
            }
            Err(err) => {
                self.fault(key, &err);
                // Skipped by the open breaker (the store is out), or too large to store.
                // Any other fault (a timeout, a lost connection) may hide a fill that ran
                // and was refused.
                matches!(err, Error::Unavailable { .. } | Error::TooLarge { .. })
                    .then(|| Shared::unfenced(bytes))
            }
        }
    }

    /// Whether a fill for a read made at `started` may no longer be sent: it lands up to an
    /// operation timeout after it is sent (the memory store's writes never wait), and must
    /// still find the tombstone of any invalidation since the read, which lives
    /// `max_fill_time`.
    pub(crate) fn past_fill_deadline(&self, started: Instant) -> bool {
        let margin = match self.inner.backend.is_remote() {
            true => self.inner.config.op_timeout(),
            false => Duration::ZERO,
        };
        started.elapsed().saturating_add(margin) >= self.inner.config.max_fill_time()
    }

    /// Counts a hit; `None` for a tombstone (a miss).
    fn count_hit<O>(&self, found: Found<O>) -> Option<O> {
        match found {
            Found::Value(out) => {
                Counters::bump(&self.inner.counters.hits);
                Some(out)
            }
            Found::Null(out) => {
                Counters::bump(&self.inner.counters.null_hits);
                Some(out)
            }
            Found::Gone => None,
        }
    }

    /// Reads `key` (and the group generation); faults are recorded, never returned.
    async fn read(&self, key: &str, gen_key: Option<&str>) -> Read {
        let result = match gen_key {
            None => self
                .op(self.inner.backend.get(key))
                .await
                .map(|entry| (entry, None)),
            Some(gen_key) => self.op(self.inner.backend.get_with_gen(key, gen_key)).await,
        };
        match result {
            Ok((entry, gen)) => {
                let gen = match gen.as_deref().map(parse_gen) {
                    None => Gen::Missing,
                    Some(Some(gen)) => Gen::At(gen),
                    Some(None) => {
                        self.fault(key, &Error::decode(BadGeneration));
                        Gen::Unusable
                    }
                };
                Read::Found { entry, gen }
            }
            Err(err) => {
                self.fault(key, &err);
                if err.is_store_fault() || matches!(err, Error::Unavailable { .. }) {
                    Read::Unavailable
                } else {
                    // Redis rejected the read (a key of another type): write over it.
                    Read::WrongType
                }
            }
        }
    }

    /// Runs a write of `len` encoded bytes under the size limit, the timeout and the
    /// breaker, and counts it if it stored.
    pub(crate) async fn write_checked<F, Fut>(&self, write: F, len: usize) -> Result<bool>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<bool>>,
    {
        let max = self.inner.config.max_value_bytes();
        if len > max {
            return Err(Error::TooLarge { size: len, max });
        }
        let stored = self.op(write()).await?;
        if stored {
            Counters::bump(&self.inner.counters.stores);
        }
        Ok(stored)
    }

    /// Runs one store operation under the timeout and the breaker.
    pub(crate) async fn op<T>(&self, op: impl Future<Output = Result<T>>) -> Result<T> {
        self.op_within(Some(self.inner.config.op_timeout()), op)
            .await
    }

    /// Runs a store operation under the breaker and, if given, a timeout for the whole of
    /// it (operations of many commands rely on each command's own timeout).
    pub(crate) async fn op_within<T>(
        &self,
        timeout: Option<Duration>,
        op: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        self.op_checked(timeout, true, op).await
    }

    /// Runs an invalidation: under `timeout` (if given), but never skipped by the breaker
    /// (an invalidation that is not even tried would leave the old entry served elsewhere
    /// without a trace); its outcome still informs the breaker.
    pub(crate) async fn op_invalidation<T>(
        &self,
        timeout: Option<Duration>,
        op: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        self.op_checked(timeout, false, op).await
    }

    async fn op_checked<T>(
        &self,
        timeout: Option<Duration>,
        skippable: bool,
        op: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        if !self.inner.backend.is_remote() {
            return op.await;
        }
        let health = &self.inner.health;
        if skippable && !health.allow() {
            Counters::bump(&self.inner.counters.skipped);
            return Err(Error::Unavailable {
                cooldown: self.inner.config.breaker_cooldown(),
            });
        }
        let result = match timeout {
            Some(after) => match tokio::time::timeout(after, op).await {
                Ok(result) => result,
                Err(_) => Err(Error::Timeout { after }),
            },
            None => op.await,
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
            .field(
                "store",
                &match self.inner.backend {
                    Backend::Redis(_) => "redis",
                    Backend::Cluster(_) => "redis cluster",
                    Backend::Memory(_) => "memory",
                },
            )
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
