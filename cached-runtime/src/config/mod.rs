//! Configuration: [`Config`], its getters and `Debug` (here), the builder (`builder.rs`),
//! the environment (`env.rs`), and the Redis target: URLs, redaction, connection details
//! and the TLS check (`target.rs`).

mod builder;
mod env;
mod target;

pub use self::builder::ConfigBuilder;
pub(crate) use self::target::SentinelSettings;
use self::target::Target;
use crate::codec::{Codec, Format};
use std::fmt;
use std::time::Duration;

/// How redcache connects to Redis and the defaults of every cached function.
///
/// Build one with [`Config::builder`] or read it from the environment with
/// [`Config::from_env`]. Its `Debug` output never shows a password.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// let config = redcache::Config::builder()
///     .url("redis://:s3cret@cache.internal:6379/2")
///     .namespace("billing")
///     .default_ttl(600)
///     .op_timeout(Duration::from_millis(150))
///     .build();
/// assert_eq!(config.namespace(), Some("billing"));
/// assert!(!format!("{config:?}").contains("s3cret"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Config {
    target: Target,
    namespace: Option<String>,
    default_ttl: u64,
    default_null_ttl: u64,
    op_timeout: Duration,
    connect_timeout: Duration,
    max_value_bytes: usize,
    breaker_threshold: u32,
    breaker_cooldown: Duration,
    max_fill_time: Duration,
    lazy: bool,
    /// Behind Sentinel: hits may be read from a replica.
    read_from_replicas: bool,
    /// Entries of the local tier (0: none).
    local_capacity: usize,
    local_max_bytes: u64,
    /// How values are written (every reader reads every codec).
    codec: Codec,
    /// Entries longer than this many bytes are compressed (`None`: never).
    compress_above: Option<usize>,
    /// The in-process store's caps.
    memory_capacity: usize,
    memory_max_bytes: u64,
    /// PEM certificates of the authorities a `rediss://` server's certificate may chain to
    /// (else the system's roots).
    tls_ca_cert: Option<Vec<u8>>,
    /// A problem found while building (an environment variable that does not parse),
    /// reported by `init`/`Cache::connect` so `from_env` itself cannot fail.
    invalid: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            target: Target::default(),
            namespace: None,
            default_ttl: 300,
            default_null_ttl: 60,
            op_timeout: Duration::from_millis(200),
            connect_timeout: Duration::from_secs(2),
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            breaker_threshold: 5,
            breaker_cooldown: Duration::from_secs(1),
            max_fill_time: DEFAULT_MAX_FILL_TIME,
            lazy: false,
            read_from_replicas: false,
            local_capacity: 0,
            local_max_bytes: 64 << 20,
            codec: Codec::Json,
            compress_above: None,
            memory_capacity: DEFAULT_MEMORY_CAPACITY,
            memory_max_bytes: DEFAULT_MEMORY_MAX_BYTES,
            tls_ca_cert: None,
            invalid: None,
        }
    }
}

impl Config {
    /// A builder starting from the defaults (Redis at `127.0.0.1:6379`, TTL 300 s, null TTL
    /// 60 s, 200 ms operation timeout).
    ///
    /// # Examples
    ///
    /// ```
    /// let config = redcache::Config::builder().url("redis://127.0.0.1:6379").build();
    /// assert_eq!(config.default_ttl(), 300);
    /// ```
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder {
            config: Config::default(),
        }
    }

    /// Reads the configuration from the environment.
    ///
    /// The server, one way only (two are an error naming both): `REDIS_URL`
    /// (`redis://[user:password@]host:port/db`), `REDIS_CLUSTER_NODES` (a cluster's
    /// comma-separated seed URLs), `REDIS_SENTINEL_NODES` (the Sentinels' comma-separated
    /// URLs, with their own credentials) with `REDIS_SENTINEL_MASTER` (the master's name), or
    /// `REDIS_HOST` (default `127.0.0.1`) and `REDIS_PORT` (6379). `REDIS_URL` comes before
    /// `REDIS_HOST`/`REDIS_PORT`: with it, they are ignored (and a warning says so). `REDIS_USERNAME`,
    /// `REDIS_PASSWORD` and `REDIS_DB` (0) apply over any of them, a URL's own parts
    /// included (behind Sentinel: to the master, not to the Sentinels);
    /// `REDIS_READ_FROM_REPLICAS` (`true`/`false`) lets the Sentinels' replicas serve hits.
    /// Tunables: `REDCACHE_NAMESPACE`, `REDCACHE_DEFAULT_TTL` and
    /// `REDCACHE_NULL_TTL` (seconds), `REDCACHE_TIMEOUT_MS`, `REDCACHE_CONNECT_TIMEOUT_MS`,
    /// `REDCACHE_MAX_VALUE_BYTES`, `REDCACHE_BREAKER_THRESHOLD`,
    /// `REDCACHE_BREAKER_COOLDOWN_MS`, `REDCACHE_MAX_FILL_MS`, `REDCACHE_LAZY`
    /// (`true`/`false`), `REDCACHE_LOCAL_CAPACITY`, `REDCACHE_LOCAL_MAX_BYTES`,
    /// `REDCACHE_MEMORY_CAPACITY`, `REDCACHE_MEMORY_MAX_BYTES`, `REDCACHE_CODEC` (`json`, or
    /// `msgpack` with that feature), `REDCACHE_COMPRESS_ABOVE` (bytes; feature
    /// `compression`). TLS (`rediss://` URLs, feature `tls`): `REDIS_TLS_CA_CERT`, the path
    /// of a PEM file of the certificate authorities to trust (else the system's).
    ///
    /// A variable that does not parse is reported by [`init`](crate::init) or
    /// [`Cache::connect`](crate::Cache::connect), naming the variable.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # #[tokio::main] async fn main() -> Result<(), redcache::Error> {
    /// redcache::init(redcache::Config::from_env()).await?;
    /// # Ok(()) }
    /// ```
    pub fn from_env() -> Config {
        Self::from_vars(|name| std::env::var(name))
    }

    /// [`from_env`](Self::from_env) with `get` for `std::env::var`.
    fn from_vars(get: impl Fn(&str) -> Result<String, std::env::VarError>) -> Config {
        // A value that is not UTF-8 is refused, not taken for unset (a namespace read as
        // none would share every key with the applications that have none).
        let garbled = std::cell::RefCell::new(None);
        let config = Self::from_lookup(|name| match get(name) {
            Ok(value) => Some(value),
            Err(std::env::VarError::NotPresent) => None,
            Err(std::env::VarError::NotUnicode(_)) => {
                garbled.borrow_mut().get_or_insert_with(|| name.to_owned());
                None
            }
        });
        match garbled.into_inner() {
            Some(name) => ConfigBuilder { config }
                .invalid(format!("{name} is not valid UTF-8"))
                .build(),
            None => config,
        }
    }

    /// The namespace put in front of every key, if any.
    ///
    /// # Examples
    ///
    /// ```
    /// let config = redcache::Config::default();
    /// assert_eq!(config.namespace(), None);
    /// ```
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// TTL in seconds for functions that set none.
    ///
    /// # Examples
    ///
    /// ```
    /// let config = redcache::Config::default();
    /// assert_eq!(config.default_ttl(), 300);
    /// ```
    pub fn default_ttl(&self) -> u64 {
        self.default_ttl
    }

    /// TTL in seconds of a cached `None` for functions that set no `null_ttl`.
    ///
    /// # Examples
    ///
    /// ```
    /// let config = redcache::Config::default();
    /// assert_eq!(config.default_null_ttl(), 60);
    /// ```
    pub fn default_null_ttl(&self) -> u64 {
        self.default_null_ttl
    }

    /// Longest wait for one Redis operation before the call goes on without the cache.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let config = redcache::Config::default();
    /// assert_eq!(config.op_timeout(), Duration::from_millis(200));
    /// ```
    pub fn op_timeout(&self) -> Duration {
        self.op_timeout
    }

    /// Longest wait for the connection at start-up.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let config = redcache::Config::default();
    /// assert_eq!(config.connect_timeout(), Duration::from_secs(2));
    /// ```
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// Largest encoded value that is stored; larger ones are skipped and counted as faults.
    ///
    /// # Examples
    ///
    /// ```
    /// let config = redcache::Config::default();
    /// assert_eq!(config.max_value_bytes(), 1024 * 1024);
    /// ```
    pub fn max_value_bytes(&self) -> usize {
        self.max_value_bytes
    }

    /// Consecutive store faults that open the circuit breaker (0 turns it off).
    ///
    /// # Examples
    ///
    /// ```
    /// let config = redcache::Config::default();
    /// assert_eq!(config.breaker_threshold(), 5);
    /// ```
    pub fn breaker_threshold(&self) -> u32 {
        self.breaker_threshold
    }

    /// How long an open breaker skips the store before one call probes it again.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let config = redcache::Config::default();
    /// assert_eq!(config.breaker_cooldown(), Duration::from_secs(1));
    /// ```
    pub fn breaker_cooldown(&self) -> Duration {
        self.breaker_cooldown
    }

    /// Longest a miss may take, from its read to its write, and still store its result;
    /// also how long an invalidation leaves its tombstone.
    ///
    /// An invalidation (`invalidate!`, `put!`, `#[evicts]`, [`Cache::delete`]) replaces the
    /// entry with a small tombstone that lives this long, and a miss stores its result only
    /// if the key still holds what the miss read. So a miss that read the database before a
    /// write and finishes after the write's invalidation cannot store the old row. A miss
    /// that takes longer than this could outlive the tombstone, so its result is returned
    /// but neither stored nor shared (counted in [`Stats::conflicts`]).
    ///
    /// [`Cache::delete`]: crate::Cache::delete
    /// [`Stats::conflicts`]: crate::Stats::conflicts
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let config = redcache::Config::default();
    /// assert_eq!(config.max_fill_time(), Duration::from_secs(30));
    /// ```
    pub fn max_fill_time(&self) -> Duration {
        self.max_fill_time
    }

    /// Whether connecting waits for Redis (`false`, the default: `init` fails when Redis
    /// does not answer) or not (`true`: `init` succeeds at once, calls run uncached until
    /// Redis answers, and caching begins by itself when it does).
    ///
    /// # Examples
    ///
    /// ```
    /// let config = redcache::Config::default();
    /// assert!(!config.lazy());
    /// ```
    pub fn lazy(&self) -> bool {
        self.lazy
    }

    /// Whether hits may be served by a replica of the master behind Sentinel (`false`, the
    /// default: every read goes to the master).
    ///
    /// With `true`, the first read of a call goes to a replica the Sentinels name; a hit
    /// there is served as is, and anything else (no entry, a tombstone, an entry of an
    /// older group generation, an early refresh) is read again from the master before the
    /// body runs. Every write, fill, lease and invalidation goes to the master, so the
    /// fill-race fence is checked there exactly as without replicas.
    ///
    /// The price is staleness: a replica applies the master's writes after the
    /// replication lag, so for that long after an invalidation (or a write-through
    /// `put!`) a hit on the replica can still return the entry it retired, in every cache
    /// but the one that made the change: that one reads the keys it changed from the
    /// master for a second after, so its own next read finds its write. The lag is
    /// typically well under a millisecond on a LAN, but has no bound while a replica is
    /// disconnected from its master and still serving reads (Redis's default
    /// `replica-serve-stale-data yes`). A fill can never store a value computed before an
    /// invalidation, so a stale read lasts as long as the lag, never until the TTL.
    ///
    /// A replica that fails (no answer within half the operation timeout, an error reply
    /// such as `LOADING` or `MASTERDOWN`, a dropped connection) is left aside for a
    /// second and the read goes to the master; a failure the master made up for is not a
    /// cache fault. Only with [`sentinel`](crate::ConfigBuilder::sentinel), and not with a
    /// local tier ([`local_capacity`](Self::local_capacity)): both are configuration
    /// errors.
    ///
    /// # Examples
    ///
    /// ```
    /// let config = redcache::Config::default();
    /// assert!(!config.read_from_replicas());
    /// ```
    pub fn read_from_replicas(&self) -> bool {
        self.read_from_replicas
    }

    /// How many entries the local tier holds (0: no local tier).
    ///
    /// With a local tier, the values `#[cached]` functions read from Redis are also kept in
    /// this process, decoded, and a hit is served without a round trip or a decode: one
    /// lookup and one clone (the value's type must be `Clone + Send + Sync`; other
    /// functions, early refresh and `stale_ttl` read Redis each time). Redis keeps every
    /// copy coherent (RESP3 client-side caching: `CLIENT TRACKING`): when any process
    /// writes or invalidates a key, or it expires, each process that holds it drops its
    /// copy; an invalidation that arrives while a read is in flight discards what that
    /// read brings. The least useful entries make room for new ones (CLOCK-PRO); none
    /// outlives its Redis TTL.
    ///
    /// # Examples
    ///
    /// ```
    /// let config = redcache::Config::default();
    /// assert_eq!(config.local_capacity(), 0, "no local tier");
    /// ```
    pub fn local_capacity(&self) -> usize {
        self.local_capacity
    }

    /// Most bytes the local tier keeps (default 64 MiB), counted as the encoded size of
    /// each value (before compression), its key material and 64 bytes per entry.
    ///
    /// # Examples
    ///
    /// ```
    /// let config = redcache::Config::default();
    /// assert_eq!(config.local_max_bytes(), 64 << 20);
    /// ```
    pub fn local_max_bytes(&self) -> u64 {
        self.local_max_bytes
    }

    /// The codec values are written in, where a function names none (default
    /// [`Codec::Json`]). Readers decode every codec, whatever this says.
    ///
    /// # Examples
    ///
    /// ```
    /// let config = redcache::Config::default();
    /// assert_eq!(config.codec(), redcache::Codec::Json);
    /// ```
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Entries longer than this many bytes (encoded) are stored compressed with LZ4, where
    /// a function sets no threshold of its own (default `None`: never; needs the
    /// `compression` feature). The size limit [`Config::max_value_bytes`] applies to what
    /// is stored, after compression.
    ///
    /// # Examples
    ///
    /// ```
    /// let config = redcache::Config::default();
    /// assert_eq!(config.compress_above(), None);
    /// ```
    pub fn compress_above(&self) -> Option<usize> {
        self.compress_above
    }

    /// Most entries the in-process store ([`Cache::memory`](crate::Cache::memory)) keeps
    /// (default 100,000); past it, the least useful make room (CLOCK-PRO eviction).
    ///
    /// # Examples
    ///
    /// ```
    /// let config = redcache::Config::default();
    /// assert_eq!(config.memory_capacity(), 100_000);
    /// ```
    pub fn memory_capacity(&self) -> usize {
        self.memory_capacity
    }

    /// Most bytes (keys, values and 64 bytes per entry) the in-process store keeps
    /// (default 64 MiB).
    ///
    /// # Examples
    ///
    /// ```
    /// let config = redcache::Config::default();
    /// assert_eq!(config.memory_max_bytes(), 64 << 20);
    /// ```
    pub fn memory_max_bytes(&self) -> u64 {
        self.memory_max_bytes
    }

    /// The PEM certificates of the authorities a `rediss://` server may chain to, if set.
    ///
    /// # Examples
    ///
    /// ```
    /// let config = redcache::Config::default();
    /// assert_eq!(config.tls_ca_cert(), None);
    /// ```
    pub fn tls_ca_cert(&self) -> Option<&[u8]> {
        self.tls_ca_cert.as_deref()
    }

    pub(crate) fn invalid(&self) -> Option<&str> {
        self.invalid.as_deref()
    }

    /// What makes this configuration unusable for Redis, if anything: a variable that did
    /// not parse, or an operation timeout that leaves a fill no time to land while an
    /// invalidation's tombstone still fences it.
    pub(crate) fn problem(&self) -> Option<String> {
        if let Some(problem) = self.common_problem() {
            return Some(problem);
        }
        if let Some(problem) = self.target.problem() {
            return Some(problem);
        }
        if let Some(problem) = self.tls_problem() {
            return Some(problem);
        }
        let braced = self
            .namespace
            .as_deref()
            .is_some_and(|ns| ns.contains(['{', '}']));
        if braced && self.is_cluster() {
            return Some(
                "Config::namespace / REDCACHE_NAMESPACE holds a brace: a Redis Cluster hashes \
                 a key by its first `{..}`, which must be the hash tag redcache gives it (an \
                 entry and its group's generation in one slot); leave braces out"
                    .into(),
            );
        }
        if self.connect_timeout.is_zero() {
            return Some(
                "the connect timeout (Config::connect_timeout / REDCACHE_CONNECT_TIMEOUT_MS) \
                 is 0: no connection could ever be made; give it a second or so"
                    .into(),
            );
        }
        if self.target.db.is_some_and(|db| db < 0) {
            return Some("Config::db / REDIS_DB is negative: databases are numbered from 0".into());
        }
        if self.op_timeout.is_zero() {
            return Some(
                "the operation timeout (Config::op_timeout / REDCACHE_TIMEOUT_MS) is 0: every \
                 Redis operation would time out at once and nothing would be cached; give it \
                 a few hundred milliseconds (the default is 200)"
                    .into(),
            );
        }
        if self.local_capacity > MAX_CAPACITY {
            return Some(over_capacity(
                "Config::local_capacity / REDCACHE_LOCAL_CAPACITY",
                self.local_capacity,
            ));
        }
        if self.local_capacity > 0 && self.local_max_bytes == 0 {
            return Some(format!(
                "Config::local_max_bytes / REDCACHE_LOCAL_MAX_BYTES is 0 with a local tier of \
                 {} entries (Config::local_capacity / REDCACHE_LOCAL_CAPACITY): it would hold \
                 nothing; give it room (the default is 64 MiB), or set the capacity to 0 to \
                 turn the tier off",
                self.local_capacity
            ));
        }
        if self.read_from_replicas {
            if !self.is_sentinel() {
                return Some(
                    "Config::read_from_replicas / REDIS_READ_FROM_REPLICAS is set, but only a \
                     master behind Sentinel has replicas redcache can find: configure \
                     Config::sentinel / REDIS_SENTINEL_NODES, or turn replica reads off"
                        .into(),
                );
            }
            if self.local_capacity > 0 {
                return Some(format!(
                    "Config::read_from_replicas / REDIS_READ_FROM_REPLICAS and \
                     Config::local_capacity / REDCACHE_LOCAL_CAPACITY ({}) are both set: the \
                     local tier already serves hits without a round trip and is kept \
                     coherent by the master alone; use one or the other",
                    self.local_capacity
                ));
            }
        }
        if self.op_timeout >= self.max_fill_time {
            return Some(format!(
                "op_timeout ({:?}) must be shorter than max_fill_time ({:?}): a miss's write \
                 may land up to one operation timeout after it is sent, and must land while \
                 an invalidation's tombstone still fences it; lower REDCACHE_TIMEOUT_MS or \
                 raise REDCACHE_MAX_FILL_MS",
                self.op_timeout, self.max_fill_time
            ));
        }
        None
    }
}

/// The default [`Config::max_fill_time`].
const DEFAULT_MAX_FILL_TIME: Duration = Duration::from_secs(30);

/// The default [`Config::max_value_bytes`]: 1 MiB.
const DEFAULT_MAX_VALUE_BYTES: usize = 1024 * 1024;

/// The default [`Config::memory_capacity`].
const DEFAULT_MEMORY_CAPACITY: usize = 100_000;

/// The default [`Config::memory_max_bytes`]: 64 MiB.
const DEFAULT_MEMORY_MAX_BYTES: u64 = 64 << 20;

/// The most entries a local tier or an in-memory store may be given: a hundred million.
const MAX_CAPACITY: usize = 100_000_000;

/// `name`'s `capacity` is over [`MAX_CAPACITY`].
fn over_capacity(name: &str, capacity: usize) -> String {
    format!(
        "{name} ({capacity}) is over {MAX_CAPACITY} entries: the table for them is set up in \
         advance, and would not fit in memory"
    )
}

impl Config {
    /// What makes this configuration unusable for the in-process store: what makes it
    /// unusable for Redis too ([`common_problem`](Self::common_problem)), or a store that
    /// would hold nothing.
    pub(crate) fn memory_problem(&self) -> Option<String> {
        if let Some(problem) = self.common_problem() {
            return Some(problem);
        }
        let empty = [
            (
                self.memory_capacity == 0,
                "Config::memory_capacity / REDCACHE_MEMORY_CAPACITY",
            ),
            (
                self.memory_max_bytes == 0,
                "Config::memory_max_bytes / REDCACHE_MEMORY_MAX_BYTES",
            ),
        ];
        let (_, name) = empty.into_iter().find(|(zero, _)| *zero)?;
        Some(format!(
            "{name} is 0: the in-process store would hold nothing (leave it unset for the \
             default)"
        ))
    }

    /// What makes this configuration unusable for Redis and for the in-process store: a
    /// variable that did not parse, no room for any value, more entries than can be set
    /// up, or a codec or compression this build lacks.
    fn common_problem(&self) -> Option<String> {
        if let Some(invalid) = self.invalid() {
            return Some(invalid.to_string());
        }
        if self.max_value_bytes == 0 {
            return Some(
                "Config::max_value_bytes / REDCACHE_MAX_VALUE_BYTES is 0: every value would be \
                 too large to store"
                    .into(),
            );
        }
        if self.max_fill_time.is_zero() {
            return Some(
                "Config::max_fill_time / REDCACHE_MAX_FILL_MS is 0: every miss would be past \
                 its deadline to store, and nothing would be cached"
                    .into(),
            );
        }
        if self.memory_capacity > MAX_CAPACITY {
            return Some(over_capacity(
                "Config::memory_capacity / REDCACHE_MEMORY_CAPACITY",
                self.memory_capacity,
            ));
        }
        self.format_problem()
    }

    /// This configuration without what [`memory_problem`](Self::memory_problem) names that
    /// the in-process store can go on without: a `max_value_bytes`, `max_fill_time`,
    /// capacity or size of 0 (nothing could be stored) is the default's. (A variable that
    /// did not parse was never applied, and the capacity is capped by
    /// [`memory_entries`](Self::memory_entries).) A codec or compression this build lacks
    /// gives way to JSON, uncompressed: with it, every value would fail to encode, and
    /// nothing would be cached.
    pub(crate) fn usable_in_memory(mut self) -> Config {
        if !self.codec.available() {
            self.codec = Codec::Json;
        }
        if !cfg!(feature = "compression") {
            self.compress_above = None;
        }
        if self.max_value_bytes == 0 {
            self.max_value_bytes = DEFAULT_MAX_VALUE_BYTES;
        }
        if self.max_fill_time.is_zero() {
            self.max_fill_time = DEFAULT_MAX_FILL_TIME;
        }
        if self.memory_capacity == 0 {
            self.memory_capacity = DEFAULT_MEMORY_CAPACITY;
        }
        if self.memory_max_bytes == 0 {
            self.memory_max_bytes = DEFAULT_MEMORY_MAX_BYTES;
        }
        self
    }

    /// The in-process store's capacity, at most what can be set up.
    pub(crate) fn memory_entries(&self) -> usize {
        self.memory_capacity.min(MAX_CAPACITY)
    }
}

impl Config {
    /// How entries are written where a function says nothing of its own.
    pub(crate) fn format(&self) -> Format {
        Format {
            codec: self.codec,
            compress_above: self.compress_above,
        }
    }

    /// A codec or compression this build cannot write.
    pub(crate) fn format_problem(&self) -> Option<String> {
        if !self.codec.available() {
            return Some(format!(
                "Config::codec / REDCACHE_CODEC is {:?}, which needs redcache's `{}` feature",
                self.codec.name(),
                self.codec.name()
            ));
        }
        if self.compress_above.is_some() && !cfg!(feature = "compression") {
            return Some(
                "Config::compress_above / REDCACHE_COMPRESS_ABOVE is set, which needs \
                 redcache's `compression` feature"
                    .into(),
            );
        }
        None
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("redis", &self.redacted_target())
            .field("namespace", &self.namespace)
            .field("default_ttl", &self.default_ttl)
            .field("default_null_ttl", &self.default_null_ttl)
            .field("op_timeout", &self.op_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_value_bytes", &self.max_value_bytes)
            .field("breaker_threshold", &self.breaker_threshold)
            .field("breaker_cooldown", &self.breaker_cooldown)
            .field("max_fill_time", &self.max_fill_time)
            .field("lazy", &self.lazy)
            .field("read_from_replicas", &self.read_from_replicas)
            .field("local_capacity", &self.local_capacity)
            .field("local_max_bytes", &self.local_max_bytes)
            .field("codec", &self.codec)
            .field("compress_above", &self.compress_above)
            .field("memory_capacity", &self.memory_capacity)
            .field("memory_max_bytes", &self.memory_max_bytes)
            .field("tls_ca_cert", &self.tls_ca_cert.as_ref().map(|_| "<set>"))
            .finish_non_exhaustive()
    }
}
