//! [`ConfigBuilder`]: chained setters over the defaults.

use super::Config;
use crate::codec::Codec;
use std::time::Duration;

/// Builds a [`Config`]; start from [`Config::builder`].
///
/// # Examples
///
/// ```
/// let config = redcache::Config::builder().host("10.0.0.5", 6380).password("pw").db(3).build();
/// assert_eq!(config.redacted_target(), "redis://:***@10.0.0.5:6380/3");
/// ```
#[must_use]
#[derive(Debug, Clone)]
pub struct ConfigBuilder {
    pub(super) config: Config,
}

impl Default for ConfigBuilder {
    fn default() -> Self {
        Config::builder()
    }
}

impl ConfigBuilder {
    /// Redis URL: `redis://[user:password@]host:port/db` (`rediss://` needs TLS support).
    /// [`username`](Self::username), [`password`](Self::password) and [`db`](Self::db)
    /// apply over the URL's own. Name the server one way only: a URL together with
    /// [`host`](Self::host), [`cluster_nodes`](Self::cluster_nodes) or
    /// [`sentinel`](Self::sentinel) is a configuration error.
    ///
    /// # Examples
    ///
    /// ```
    /// // The URL from the service's config, the password from a secret.
    /// let config = redcache::Config::builder()
    ///     .url("redis://cache.internal:6379/2")
    ///     .password("s3cret")
    ///     .build();
    /// assert_eq!(config.redacted_target(), "redis://cache.internal:6379/2 (password ***)");
    /// ```
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.config.target.url = Some(url.into());
        self
    }

    /// A Redis Cluster, reached through these seed nodes (`redis://[user:password@]host:port`
    /// each; one reachable node is enough, the others are discovered). Instead of
    /// [`url`](Self::url) or [`host`](Self::host); [`username`](Self::username) and
    /// [`password`](Self::password) apply to every node.
    ///
    /// # Examples
    ///
    /// ```
    /// let config = redcache::Config::builder()
    ///     .cluster_nodes(["redis://10.0.0.1:6379", "redis://10.0.0.2:6379"])
    ///     .build();
    /// assert!(config.is_cluster());
    /// ```
    pub fn cluster_nodes<I, S>(mut self, nodes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config.target.cluster = Some(nodes.into_iter().map(Into::into).collect());
        self
    }

    /// A master found through Redis Sentinel: the Sentinels' URLs
    /// (`redis://[user:password@]host:port` each, typically port 26379; one that answers is
    /// enough) and the name they monitor the master by (`sentinel monitor <name> ...` in
    /// their configuration). Instead of [`url`](Self::url), [`host`](Self::host) or
    /// [`cluster_nodes`](Self::cluster_nodes).
    ///
    /// One setter takes both because neither means anything without the other, as redis-rs's
    /// `SentinelClient::build(nodes, master_name, ..)`, redis-py's
    /// `Sentinel(nodes).master_for(name)` and go-redis's `FailoverOptions{MasterName,
    /// SentinelAddrs}` take them.
    ///
    /// Credentials: those in the Sentinel URLs are the Sentinels' own (one user name and
    /// password for all of them); [`username`](Self::username),
    /// [`password`](Self::password) and [`db`](Self::db) apply to the master, as over a URL.
    /// `rediss://` Sentinel URLs (feature `tls`) mean TLS to the Sentinels and to the
    /// master, verified against [`tls_ca_cert`](Self::tls_ca_cert) or the system's roots.
    ///
    /// The cache connects to the master the Sentinels name; when a failover promotes a
    /// replica, the next operation that fails on the old master asks the Sentinels again
    /// and goes on with the new one.
    ///
    /// # Examples
    ///
    /// ```
    /// let config = redcache::Config::builder()
    ///     .sentinel(
    ///         ["redis://:s3cret@10.0.0.1:26379", "redis://:s3cret@10.0.0.2:26379"],
    ///         "mymaster",
    ///     )
    ///     .password("master-s3cret")
    ///     .build();
    /// assert!(config.is_sentinel());
    /// assert_eq!(
    ///     config.redacted_target(),
    ///     "master \"mymaster\" of sentinels redis://:***@10.0.0.1:26379,redis://:***@10.0.0.2:26379 \
    ///      (password ***)"
    /// );
    /// ```
    pub fn sentinel<I, S>(mut self, nodes: I, master_name: impl Into<String>) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config.target.sentinel = Some(super::target::Sentinels {
            nodes: nodes.into_iter().map(Into::into).collect(),
            master: master_name.into(),
        });
        self
    }

    /// Redis host and port (instead of a URL; default `127.0.0.1:6379`).
    ///
    /// # Examples
    ///
    /// ```
    /// let config = redcache::Config::builder().host("cache.internal", 6380).build();
    /// assert_eq!(config.redacted_target(), "redis://cache.internal:6380/0");
    /// ```
    pub fn host(mut self, host: impl Into<String>, port: u16) -> Self {
        self.config.target.host = Some((host.into(), port));
        self
    }

    /// ACL user name; over a URL's own, if the server is given as a URL. It needs a
    /// password (any, for a `nopass` user): without one the client would not log in as the
    /// user, so connecting is refused with [`Error::Config`](crate::Error::Config).
    ///
    /// # Examples
    ///
    /// ```
    /// let config = redcache::Config::builder()
    ///     .url("redis://cache.internal:6379")
    ///     .username("app")
    ///     .password("s3cret")
    ///     .build();
    /// assert!(!config.redacted_target().contains("s3cret"));
    /// ```
    pub fn username(mut self, username: impl Into<String>) -> Self {
        self.config.target.username = Some(username.into());
        self
    }

    /// Password; over a URL's own, if the server is given as a URL.
    ///
    /// # Examples
    ///
    /// ```
    /// let config = redcache::Config::builder()
    ///     .host("cache.internal", 6379)
    ///     .password("s3cret")
    ///     .build();
    /// assert_eq!(config.redacted_target(), "redis://:***@cache.internal:6379/0");
    /// ```
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.config.target.password = Some(password.into());
        self
    }

    /// Database number; over a URL's own, if the server is given as a URL.
    ///
    /// # Examples
    ///
    /// ```
    /// let config = redcache::Config::builder().host("cache.internal", 6379).db(2).build();
    /// assert_eq!(config.redacted_target(), "redis://cache.internal:6379/2");
    /// ```
    pub fn db(mut self, db: i64) -> Self {
        self.config.target.db = Some(db);
        self
    }

    /// A prefix for every key (`{namespace}:{prefix}:{hash}`), to share one Redis between
    /// applications or deployments.
    ///
    /// # Examples
    ///
    /// ```
    /// let config = redcache::Config::builder().namespace("shop-eu").build();
    /// assert_eq!(config.namespace(), Some("shop-eu"));
    /// ```
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        let ns = namespace.into();
        self.config.namespace = if ns.is_empty() { None } else { Some(ns) };
        self
    }

    /// TTL in seconds for functions that set none (default 300; 0 is raised to 1).
    ///
    /// # Examples
    ///
    /// ```
    /// let config = redcache::Config::builder().default_ttl(600).build();
    /// assert_eq!(config.default_ttl(), 600);
    /// ```
    pub fn default_ttl(mut self, secs: u64) -> Self {
        self.config.default_ttl = secs;
        self
    }

    /// TTL in seconds of a cached `None` for functions that set no `null_ttl` (default 60;
    /// never longer than the function's own `ttl`; 0 turns null caching off).
    ///
    /// # Examples
    ///
    /// ```
    /// let config = redcache::Config::builder().default_null_ttl(0).build();
    /// assert_eq!(config.default_null_ttl(), 0);
    /// ```
    pub fn default_null_ttl(mut self, secs: u64) -> Self {
        self.config.default_null_ttl = secs;
        self
    }

    /// Longest wait for one Redis operation (default 200 ms).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let config = redcache::Config::builder().op_timeout(Duration::from_millis(50)).build();
    /// assert_eq!(config.op_timeout(), Duration::from_millis(50));
    /// ```
    pub fn op_timeout(mut self, timeout: Duration) -> Self {
        self.config.op_timeout = timeout;
        self
    }

    /// Longest wait for the connection at start-up (default 2 s).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let config = redcache::Config::builder().connect_timeout(Duration::from_secs(5)).build();
    /// assert_eq!(config.connect_timeout(), Duration::from_secs(5));
    /// ```
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// Largest encoded value that is stored (default 1 MiB).
    ///
    /// # Examples
    ///
    /// ```
    /// let config = redcache::Config::builder().max_value_bytes(256 * 1024).build();
    /// assert_eq!(config.max_value_bytes(), 256 * 1024);
    /// ```
    pub fn max_value_bytes(mut self, bytes: usize) -> Self {
        self.config.max_value_bytes = bytes;
        self
    }

    /// Consecutive store faults that open the circuit breaker (default 5; 0 turns it off).
    ///
    /// # Examples
    ///
    /// ```
    /// let config = redcache::Config::builder().breaker_threshold(10).build();
    /// assert_eq!(config.breaker_threshold(), 10);
    /// ```
    pub fn breaker_threshold(mut self, faults: u32) -> Self {
        self.config.breaker_threshold = faults;
        self
    }

    /// How long an open breaker skips the store (default 1 s).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let config = redcache::Config::builder().breaker_cooldown(Duration::from_secs(5)).build();
    /// assert_eq!(config.breaker_cooldown(), Duration::from_secs(5));
    /// ```
    pub fn breaker_cooldown(mut self, cooldown: Duration) -> Self {
        self.config.breaker_cooldown = cooldown;
        self
    }

    /// Longest a miss may take and still store its result, and how long invalidations
    /// leave tombstones (default 30 s; see [`Config::max_fill_time`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// // For functions that may take minutes: their results are still stored.
    /// let config = redcache::Config::builder().max_fill_time(Duration::from_secs(300)).build();
    /// assert_eq!(config.max_fill_time(), Duration::from_secs(300));
    /// ```
    pub fn max_fill_time(mut self, time: Duration) -> Self {
        self.config.max_fill_time = time;
        self
    }

    /// Start without waiting for Redis (default `false`; see [`Config::lazy`]): for
    /// services that must boot while Redis is down.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), redcache::Error> {
    /// // Nothing listens on port 1: a lazy cache still starts, and every call runs its body.
    /// let config = redcache::Config::builder().url("redis://127.0.0.1:1").lazy(true).build();
    /// let cache = redcache::Cache::connect(config).await?;
    /// assert!(cache.is_redis());
    /// # Ok(()) }
    /// ```
    pub fn lazy(mut self, lazy: bool) -> Self {
        self.config.lazy = lazy;
        self
    }

    /// Behind Sentinel, let a replica serve hits (default `false`; see
    /// [`Config::read_from_replicas`] for the staleness this allows): the first read of a
    /// call goes to a replica the Sentinels name, and everything else (a miss's second
    /// read, fills, leases, invalidations) to the master. Without
    /// [`sentinel`](Self::sentinel), or with [`local_capacity`](Self::local_capacity), it
    /// is a configuration error.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let config = redcache::Config::builder()
    ///     .sentinel(["redis://10.0.0.1:26379", "redis://10.0.0.2:26379"], "mymaster")
    ///     .read_from_replicas(true)
    ///     .build();
    /// assert!(config.read_from_replicas());
    ///
    /// // Without Sentinel there is no replica to read from.
    /// let alone = redcache::Config::builder()
    ///     .url("redis://127.0.0.1:6379")
    ///     .read_from_replicas(true)
    ///     .build();
    /// let err = redcache::Cache::connect(alone).await.unwrap_err();
    /// assert!(err.to_string().contains("Sentinel"), "{err}");
    /// # }
    /// ```
    pub fn read_from_replicas(mut self, read_from_replicas: bool) -> Self {
        self.config.read_from_replicas = read_from_replicas;
        self
    }

    /// Keep up to `entries` entries in this process too, kept coherent by Redis (default 0:
    /// no local tier; see [`Config::local_capacity`]).
    ///
    /// # Examples
    ///
    /// ```
    /// let config = redcache::Config::builder().local_capacity(10_000).build();
    /// assert_eq!(config.local_capacity(), 10_000);
    /// ```
    pub fn local_capacity(mut self, entries: usize) -> Self {
        self.config.local_capacity = entries;
        self
    }

    /// Most bytes the local tier keeps (default 64 MiB; see [`Config::local_max_bytes`]).
    ///
    /// # Examples
    ///
    /// ```
    /// let config = redcache::Config::builder()
    ///     .local_capacity(10_000)
    ///     .local_max_bytes(8 << 20)
    ///     .build();
    /// assert_eq!(config.local_max_bytes(), 8 << 20);
    /// ```
    pub fn local_max_bytes(mut self, bytes: u64) -> Self {
        self.config.local_max_bytes = bytes;
        self
    }

    /// The codec values are written in, where a function names none (default
    /// [`Codec::Json`]; see [`Config::codec`]). [`Codec::MessagePack`] needs the `msgpack`
    /// feature: without it, `init` and `Cache::connect` refuse the configuration.
    ///
    /// # Examples
    ///
    /// ```
    /// use redcache::{Codec, Config};
    ///
    /// let config = Config::builder().codec(Codec::MessagePack).build();
    /// assert_eq!(config.codec(), Codec::MessagePack);
    /// ```
    pub fn codec(mut self, codec: Codec) -> Self {
        self.config.codec = codec;
        self
    }

    /// Compress entries longer than `bytes` with LZ4, where a function sets no threshold of
    /// its own (see [`Config::compress_above`]). Needs the `compression` feature: without
    /// it, `init` and `Cache::connect` refuse the configuration.
    ///
    /// # Examples
    ///
    /// ```
    /// let config = redcache::Config::builder().compress_above(4096).build();
    /// assert_eq!(config.compress_above(), Some(4096));
    /// ```
    pub fn compress_above(mut self, bytes: usize) -> Self {
        self.config.compress_above = Some(bytes);
        self
    }

    /// Most entries the in-process store keeps (default 100,000; see
    /// [`Config::memory_capacity`]).
    ///
    /// # Examples
    ///
    /// ```
    /// let config = redcache::Config::builder()
    ///     .memory_capacity(10_000)
    ///     .memory_max_bytes(16 << 20)
    ///     .build();
    /// let cache = redcache::Cache::memory_with(config);
    /// assert_eq!(cache.config().memory_capacity(), 10_000);
    /// ```
    pub fn memory_capacity(mut self, entries: usize) -> Self {
        self.config.memory_capacity = entries;
        self
    }

    /// Most bytes the in-process store keeps (default 64 MiB; see
    /// [`Config::memory_max_bytes`]).
    ///
    /// # Examples
    ///
    /// ```
    /// let config = redcache::Config::builder().memory_max_bytes(16 << 20).build();
    /// assert_eq!(config.memory_max_bytes(), 16 << 20);
    /// ```
    pub fn memory_max_bytes(mut self, bytes: u64) -> Self {
        self.config.memory_max_bytes = bytes;
        self
    }

    /// Trust these certificate authorities (PEM) for `rediss://`, instead of the system's
    /// roots: for a Redis whose certificate a private CA signed. Needs the `tls` feature.
    /// A file without a PEM certificate in it is an [`Error::Config`](crate::Error::Config).
    ///
    /// TLS (any `rediss://` URL) runs on rustls's process-wide crypto provider. Where the
    /// application has installed none when the cache connects, redcache installs ring's:
    /// an application that wants another (aws-lc-rs) installs it before `init` or
    /// `Cache::connect`.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let config = redcache::Config::builder()
    ///     .url("redis://cache.internal:6379")
    ///     .tls_ca_cert(b"-----BEGIN CERTIFICATE-----".to_vec())
    ///     .build();
    /// // A CA certificate is for `rediss://`: with `redis://`, refused before connecting.
    /// let err = redcache::Cache::connect(config).await.unwrap_err();
    /// assert!(matches!(err, redcache::Error::Config { .. }), "{err}");
    /// # }
    /// ```
    pub fn tls_ca_cert(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.config.tls_ca_cert = Some(pem.into());
        self
    }

    /// The finished configuration.
    ///
    /// # Examples
    ///
    /// ```
    /// let config: redcache::Config = redcache::Config::builder().namespace("t").build();
    /// assert_eq!(config.namespace(), Some("t"));
    /// ```
    pub fn build(self) -> Config {
        self.config
    }

    pub(super) fn invalid(mut self, message: String) -> Self {
        self.config.invalid.get_or_insert(message);
        self
    }
}
