//! Configuration: a builder and `from_env`.

use std::fmt;
use std::time::Duration;

/// Where Redis is.
#[derive(Clone, PartialEq, Eq)]
enum Target {
    Url(String),
    /// Seed nodes of a Redis Cluster.
    Cluster(Vec<String>),
    Parts {
        host: String,
        port: u16,
        username: Option<String>,
        password: Option<String>,
        db: i64,
    },
}

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
    /// Entries of the local tier (0: none).
    local_capacity: usize,
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
            target: Target::Parts {
                host: "127.0.0.1".into(),
                port: 6379,
                username: None,
                password: None,
                db: 0,
            },
            namespace: None,
            default_ttl: 300,
            default_null_ttl: 60,
            op_timeout: Duration::from_millis(200),
            connect_timeout: Duration::from_secs(2),
            max_value_bytes: 1024 * 1024,
            breaker_threshold: 5,
            breaker_cooldown: Duration::from_secs(1),
            max_fill_time: Duration::from_secs(30),
            lazy: false,
            local_capacity: 0,
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
    /// Redis Cluster: `REDIS_CLUSTER_NODES`, comma-separated seed URLs
    /// (`redis://[user:password@]host:port`). Else Redis: `REDIS_URL`
    /// (`redis://[user:password@]host:port/db`); else `REDIS_HOST`
    /// (default `127.0.0.1`), `REDIS_PORT` (6379), `REDIS_USERNAME`, `REDIS_PASSWORD`,
    /// `REDIS_DB` (0). Tunables: `REDCACHE_NAMESPACE`, `REDCACHE_DEFAULT_TTL` and
    /// `REDCACHE_NULL_TTL` (seconds), `REDCACHE_TIMEOUT_MS`, `REDCACHE_CONNECT_TIMEOUT_MS`,
    /// `REDCACHE_MAX_VALUE_BYTES`, `REDCACHE_BREAKER_THRESHOLD`,
    /// `REDCACHE_BREAKER_COOLDOWN_MS`, `REDCACHE_MAX_FILL_MS`, `REDCACHE_LAZY`
    /// (`true`/`false`), `REDCACHE_LOCAL_CAPACITY`. TLS (`rediss://` URLs, feature `tls`): `REDIS_TLS_CA_CERT`, the path
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
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub(crate) fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Config {
        let get = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let mut b = Config::builder();
        if let Some(nodes) = get("REDIS_CLUSTER_NODES") {
            b = b.cluster_nodes(nodes.split(',').map(str::trim).filter(|n| !n.is_empty()));
        } else if let Some(url) = get("REDIS_URL") {
            b = b.url(url);
        } else {
            let mut host = "127.0.0.1".to_string();
            let mut port = 6379;
            let mut db = 0;
            if let Some(h) = get("REDIS_HOST") {
                host = h;
            }
            if let Some(p) = get("REDIS_PORT") {
                match p.trim().parse() {
                    Ok(p) => port = p,
                    Err(_) => b = b.invalid(format!("REDIS_PORT={p:?} is not a port number")),
                }
            }
            if let Some(d) = get("REDIS_DB") {
                match d.trim().parse() {
                    Ok(d) => db = d,
                    Err(_) => b = b.invalid(format!("REDIS_DB={d:?} is not a database number")),
                }
            }
            b.config.target = Target::Parts {
                host,
                port,
                username: get("REDIS_USERNAME"),
                password: get("REDIS_PASSWORD"),
                db,
            };
        }
        if let Some(ns) = get("REDCACHE_NAMESPACE") {
            b = b.namespace(ns);
        }
        fn num<T: std::str::FromStr>(
            b: &mut ConfigBuilder,
            name: &str,
            raw: Option<String>,
            set: impl FnOnce(&mut Config, T),
        ) {
            if let Some(raw) = raw {
                match raw.trim().parse::<T>() {
                    Ok(v) => set(&mut b.config, v),
                    Err(_) => {
                        let msg = format!("{name}={raw:?} is not a whole non-negative number");
                        b.config.invalid.get_or_insert(msg);
                    }
                }
            }
        }
        let ms = Duration::from_millis;
        num(
            &mut b,
            "REDCACHE_DEFAULT_TTL",
            get("REDCACHE_DEFAULT_TTL"),
            |c, v| c.default_ttl = v,
        );
        num(
            &mut b,
            "REDCACHE_NULL_TTL",
            get("REDCACHE_NULL_TTL"),
            |c, v| c.default_null_ttl = v,
        );
        num(
            &mut b,
            "REDCACHE_TIMEOUT_MS",
            get("REDCACHE_TIMEOUT_MS"),
            |c, v| c.op_timeout = ms(v),
        );
        num(
            &mut b,
            "REDCACHE_CONNECT_TIMEOUT_MS",
            get("REDCACHE_CONNECT_TIMEOUT_MS"),
            |c, v| c.connect_timeout = ms(v),
        );
        num(
            &mut b,
            "REDCACHE_MAX_VALUE_BYTES",
            get("REDCACHE_MAX_VALUE_BYTES"),
            |c, v| c.max_value_bytes = v,
        );
        num(
            &mut b,
            "REDCACHE_BREAKER_THRESHOLD",
            get("REDCACHE_BREAKER_THRESHOLD"),
            |c, v| c.breaker_threshold = v,
        );
        num(
            &mut b,
            "REDCACHE_BREAKER_COOLDOWN_MS",
            get("REDCACHE_BREAKER_COOLDOWN_MS"),
            |c, v| c.breaker_cooldown = ms(v),
        );
        if let Some(path) = get("REDIS_TLS_CA_CERT") {
            match std::fs::read(path.trim()) {
                Ok(pem) => b.config.tls_ca_cert = Some(pem),
                Err(err) => {
                    b = b.invalid(format!("REDIS_TLS_CA_CERT={path:?} cannot be read: {err}"))
                }
            }
        }
        if let Some(raw) = get("REDCACHE_LAZY") {
            match raw.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => b.config.lazy = true,
                "0" | "false" | "no" | "off" => b.config.lazy = false,
                _ => b = b.invalid(format!("REDCACHE_LAZY={raw:?} is not true or false")),
            }
        }
        num(
            &mut b,
            "REDCACHE_LOCAL_CAPACITY",
            get("REDCACHE_LOCAL_CAPACITY"),
            |c, v| c.local_capacity = v,
        );
        num(
            &mut b,
            "REDCACHE_MAX_FILL_MS",
            get("REDCACHE_MAX_FILL_MS"),
            |c, v| c.max_fill_time = ms(v),
        );
        b.build()
    }

    /// The namespace put in front of every key, if any.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// TTL in seconds for functions that set none.
    pub fn default_ttl(&self) -> u64 {
        self.default_ttl
    }

    /// TTL in seconds of a cached `None` for functions that set no `null_ttl`.
    pub fn default_null_ttl(&self) -> u64 {
        self.default_null_ttl
    }

    /// Longest wait for one Redis operation before the call goes on without the cache.
    pub fn op_timeout(&self) -> Duration {
        self.op_timeout
    }

    /// Longest wait for the connection at start-up.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// Largest encoded value that is stored; larger ones are skipped and counted as faults.
    pub fn max_value_bytes(&self) -> usize {
        self.max_value_bytes
    }

    /// Consecutive store faults that open the circuit breaker (0 turns it off).
    pub fn breaker_threshold(&self) -> u32 {
        self.breaker_threshold
    }

    /// How long an open breaker skips the store before one call probes it again.
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
    pub fn max_fill_time(&self) -> Duration {
        self.max_fill_time
    }

    /// Whether connecting waits for Redis (`false`, the default: `init` fails when Redis
    /// does not answer) or not (`true`: `init` succeeds at once, calls run uncached until
    /// Redis answers, and caching begins by itself when it does).
    pub fn lazy(&self) -> bool {
        self.lazy
    }

    /// How many entries the local tier holds (0: no local tier).
    ///
    /// With a local tier, entries read from Redis are also kept in this process, and a hit
    /// is served without a round trip. Redis keeps every copy coherent (RESP3 client-side
    /// caching: `CLIENT TRACKING`): when any process writes or invalidates a key, or it
    /// expires, each process that holds it drops its copy. Least recently used entries
    /// make room for new ones; none outlives its Redis TTL.
    pub fn local_capacity(&self) -> usize {
        self.local_capacity
    }

    /// The PEM certificates of the authorities a `rediss://` server may chain to, if set.
    pub fn tls_ca_cert(&self) -> Option<&[u8]> {
        self.tls_ca_cert.as_deref()
    }

    /// Whether this is a Redis Cluster (seed nodes given with
    /// [`ConfigBuilder::cluster_nodes`] or `REDIS_CLUSTER_NODES`).
    pub fn is_cluster(&self) -> bool {
        matches!(self.target, Target::Cluster(_))
    }

    /// The Redis address with any password replaced by `***`.
    pub fn redacted_target(&self) -> String {
        match &self.target {
            Target::Url(url) => redact_url(url),
            Target::Cluster(nodes) => {
                let nodes: Vec<String> = nodes.iter().map(|n| redact_url(n)).collect();
                format!("cluster {}", nodes.join(","))
            }
            Target::Parts {
                host,
                port,
                username,
                password,
                db,
            } => {
                let auth = match (username, password) {
                    (Some(u), Some(_)) => format!("{u}:***@"),
                    (None, Some(_)) => ":***@".to_string(),
                    (Some(u), None) => format!("{u}@"),
                    (None, None) => String::new(),
                };
                format!("redis://{auth}{host}:{port}/{db}")
            }
        }
    }

    pub(crate) fn invalid(&self) -> Option<&str> {
        self.invalid.as_deref()
    }

    pub(crate) fn connection_info(&self) -> crate::Result<redis::ConnectionInfo> {
        use redis::IntoConnectionInfo;
        let bad_url = |e: redis::RedisError| {
            crate::Error::config(format!(
                "REDIS_URL / Config::url {} is not a Redis URL ({}); expected \
                 redis://[user:password@]host:port/db",
                self.redacted_target(),
                e
            ))
        };
        let tls_url = |url: &String| url.starts_with("rediss://");
        if cfg!(not(feature = "tls"))
            && (self.tls_ca_cert.is_some()
                || matches!(&self.target, Target::Url(url) if tls_url(url))
                || matches!(&self.target, Target::Cluster(nodes) if nodes.iter().any(tls_url)))
        {
            return Err(crate::Error::config(
                "TLS (a rediss:// URL or a CA certificate) needs redcache's `tls` feature: \
                 redcache = { version = \"0.1\", features = [\"tls\"] }",
            ));
        }
        match &self.target {
            Target::Url(url) => url.as_str().into_connection_info().map_err(bad_url),
            Target::Cluster(_) => Err(crate::Error::config(
                "a Redis Cluster is reached through its seed nodes, not one address",
            )),
            Target::Parts {
                host,
                port,
                username,
                password,
                db,
            } => {
                let info = (host.as_str(), *port)
                    .into_connection_info()
                    .map_err(bad_url)?;
                let mut redis = info.redis_settings().clone().set_db(*db);
                if let Some(u) = username {
                    redis = redis.set_username(u);
                }
                if let Some(p) = password {
                    redis = redis.set_password(p);
                }
                Ok(info.set_redis_settings(redis))
            }
        }
    }
}

impl Config {
    /// The seed nodes of a cluster, as connection infos.
    pub(crate) fn cluster_connection_infos(&self) -> crate::Result<Vec<redis::ConnectionInfo>> {
        use redis::IntoConnectionInfo;
        let Target::Cluster(nodes) = &self.target else {
            return Err(crate::Error::config("not a Redis Cluster configuration"));
        };
        if nodes.is_empty() {
            return Err(crate::Error::config(
                "REDIS_CLUSTER_NODES / Config::cluster_nodes names no node",
            ));
        }
        if cfg!(not(feature = "tls")) && nodes.iter().any(|n| n.starts_with("rediss://")) {
            return Err(crate::Error::config(
                "TLS (rediss://) needs redcache's `tls` feature: \
                 redcache = { version = \"0.1\", features = [\"tls\"] }",
            ));
        }
        nodes
            .iter()
            .map(|node| {
                node.as_str().into_connection_info().map_err(|e| {
                    crate::Error::config(format!(
                        "cluster node {} is not a Redis URL ({e}); expected \
                         redis://[user:password@]host:port",
                        redact_url(node)
                    ))
                })
            })
            .collect()
    }
}

/// Replaces the credentials of a `scheme://user:password@host` URL: everything between
/// `://` and the last `@` (a password may hold `/`, `?`, `#` or `@`), keeping a plain user
/// name so the address stays recognisable.
fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return if url.contains('@') {
            "<unparsable URL with credentials>".to_string()
        } else {
            url.to_string()
        };
    };
    let rest = &url[scheme_end..];
    let Some(at) = rest.rfind('@') else {
        return url.to_string();
    };
    let plain = |user: &str| {
        user.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    let user = match rest[..at].split_once(':') {
        Some((user, _)) if plain(user) => user,
        _ => "",
    };
    format!("{}{user}:***{}", &url[..scheme_end], &rest[at..])
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
            .field("local_capacity", &self.local_capacity)
            .field("tls_ca_cert", &self.tls_ca_cert.as_ref().map(|_| "<set>"))
            .finish_non_exhaustive()
    }
}

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
    config: Config,
}

impl Default for ConfigBuilder {
    fn default() -> Self {
        Config::builder()
    }
}

impl ConfigBuilder {
    /// Redis URL: `redis://[user:password@]host:port/db` (`rediss://` needs TLS support).
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.config.target = Target::Url(url.into());
        self
    }

    /// A Redis Cluster, reached through these seed nodes (`redis://[user:password@]host:port`
    /// each; one reachable node is enough, the others are discovered). Instead of
    /// [`url`](Self::url) or [`host`](Self::host).
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
        self.config.target = Target::Cluster(nodes.into_iter().map(Into::into).collect());
        self
    }

    /// Redis host and port (instead of a URL).
    pub fn host(mut self, host: impl Into<String>, port: u16) -> Self {
        let (username, password, db) = self.parts();
        self.config.target = Target::Parts {
            host: host.into(),
            port,
            username,
            password,
            db,
        };
        self
    }

    /// ACL user name (with [`host`](Self::host)).
    pub fn username(mut self, username: impl Into<String>) -> Self {
        if let Target::Parts { username: u, .. } = &mut self.ensure_parts() {
            *u = Some(username.into());
        }
        self
    }

    /// Password (with [`host`](Self::host)).
    pub fn password(mut self, password: impl Into<String>) -> Self {
        if let Target::Parts { password: p, .. } = &mut self.ensure_parts() {
            *p = Some(password.into());
        }
        self
    }

    /// Database number (with [`host`](Self::host)).
    pub fn db(mut self, db: i64) -> Self {
        if let Target::Parts { db: d, .. } = &mut self.ensure_parts() {
            *d = db;
        }
        self
    }

    /// A prefix for every key (`{namespace}:{prefix}:{hash}`), to share one Redis between
    /// applications or deployments.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        let ns = namespace.into();
        self.config.namespace = if ns.is_empty() { None } else { Some(ns) };
        self
    }

    /// TTL in seconds for functions that set none (default 300; 0 is raised to 1).
    pub fn default_ttl(mut self, secs: u64) -> Self {
        self.config.default_ttl = secs;
        self
    }

    /// TTL in seconds of a cached `None` for functions that set no `null_ttl` (default 60;
    /// 0 turns null caching off).
    pub fn default_null_ttl(mut self, secs: u64) -> Self {
        self.config.default_null_ttl = secs;
        self
    }

    /// Longest wait for one Redis operation (default 200 ms).
    pub fn op_timeout(mut self, timeout: Duration) -> Self {
        self.config.op_timeout = timeout;
        self
    }

    /// Longest wait for the connection at start-up (default 2 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// Largest encoded value that is stored (default 1 MiB).
    pub fn max_value_bytes(mut self, bytes: usize) -> Self {
        self.config.max_value_bytes = bytes;
        self
    }

    /// Consecutive store faults that open the circuit breaker (default 5; 0 turns it off).
    pub fn breaker_threshold(mut self, faults: u32) -> Self {
        self.config.breaker_threshold = faults;
        self
    }

    /// How long an open breaker skips the store (default 1 s).
    pub fn breaker_cooldown(mut self, cooldown: Duration) -> Self {
        self.config.breaker_cooldown = cooldown;
        self
    }

    /// Longest a miss may take and still store its result, and how long invalidations
    /// leave tombstones (default 30 s; see [`Config::max_fill_time`]).
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

    /// Trust these certificate authorities (PEM) for `rediss://`, instead of the system's
    /// roots: for a Redis whose certificate a private CA signed. Needs the `tls` feature.
    pub fn tls_ca_cert(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.config.tls_ca_cert = Some(pem.into());
        self
    }

    /// The finished configuration.
    pub fn build(self) -> Config {
        self.config
    }

    fn invalid(mut self, message: String) -> Self {
        self.config.invalid.get_or_insert(message);
        self
    }

    fn parts(&self) -> (Option<String>, Option<String>, i64) {
        match &self.config.target {
            Target::Parts {
                username,
                password,
                db,
                ..
            } => (username.clone(), password.clone(), *db),
            Target::Url(_) | Target::Cluster(_) => (None, None, 0),
        }
    }

    fn ensure_parts(&mut self) -> &mut Target {
        if let Target::Url(_) | Target::Cluster(_) = self.config.target {
            self.config.target = Config::default().target;
        }
        &mut self.config.target
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> Config {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn url_wins_over_parts() {
        let c = env(&[("REDIS_URL", "redis://h:1/2"), ("REDIS_HOST", "other")]);
        assert_eq!(c.redacted_target(), "redis://h:1/2");
    }

    #[test]
    fn parts_and_tunables() {
        let c = env(&[
            ("REDIS_HOST", "cache"),
            ("REDIS_PORT", "6380"),
            ("REDIS_PASSWORD", "hunter2"),
            ("REDIS_DB", "4"),
            ("REDCACHE_NAMESPACE", "svc"),
            ("REDCACHE_DEFAULT_TTL", "900"),
            ("REDCACHE_NULL_TTL", "0"),
            ("REDCACHE_TIMEOUT_MS", "75"),
            ("REDCACHE_MAX_FILL_MS", "5000"),
            ("REDCACHE_LAZY", "true"),
            ("REDCACHE_LOCAL_CAPACITY", "500"),
        ]);
        assert_eq!(c.redacted_target(), "redis://:***@cache:6380/4");
        assert_eq!(c.namespace(), Some("svc"));
        assert_eq!(c.default_ttl(), 900);
        assert_eq!(c.default_null_ttl(), 0);
        assert_eq!(c.op_timeout(), Duration::from_millis(75));
        assert_eq!(c.max_fill_time(), Duration::from_secs(5));
        assert!(c.lazy());
        assert_eq!(c.local_capacity(), 500);
        assert!(c.invalid().is_none());
        let info = c.connection_info().unwrap();
        assert_eq!(info.redis_settings().db(), 4);
        assert_eq!(info.redis_settings().password(), Some("hunter2"));
    }

    #[test]
    fn a_bad_variable_is_named() {
        let c = env(&[("REDCACHE_TIMEOUT_MS", "fast")]);
        assert_eq!(
            c.invalid(),
            Some(r#"REDCACHE_TIMEOUT_MS="fast" is not a whole non-negative number"#)
        );
        let c = env(&[("REDIS_PORT", "70000")]);
        assert!(c.invalid().unwrap().contains("REDIS_PORT"));
    }

    #[test]
    fn passwords_never_show() {
        for url in [
            "redis://:pw-secret@h:6379/0",
            "redis://user:pw-secret@h:6379",
            "rediss://user:pw-secret@h",
            "redis://user:pw@secret@h/1",
        ] {
            let c = Config::builder().url(url).build();
            let shown = format!("{c:?} {}", c.redacted_target());
            assert!(!shown.contains("secret"), "{shown}");
            assert!(shown.contains("***"), "{shown}");
        }
        let c = Config::builder()
            .host("h", 1)
            .username("u")
            .password("pw-secret")
            .build();
        assert!(!format!("{c:?}").contains("secret"));
        let err = Config::builder()
            .url("redis//:pw-secret@h")
            .build()
            .connection_info()
            .unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn tls_without_the_feature_says_how_to_get_it() {
        let err = Config::builder()
            .url("rediss://:pw-secret@h:6380")
            .build()
            .connection_info()
            .unwrap_err()
            .to_string();
        assert!(err.contains("`tls` feature"), "{err}");
        assert!(!err.contains("secret"), "{err}");
    }

    #[test]
    fn cluster_nodes_from_the_environment() {
        let c = env(&[
            (
                "REDIS_CLUSTER_NODES",
                "redis://:pw-secret@h1:7000, redis://h2:7001,",
            ),
            ("REDIS_URL", "redis://ignored:1"),
        ]);
        assert!(c.is_cluster());
        assert_eq!(
            c.redacted_target(),
            "cluster redis://:***@h1:7000,redis://h2:7001"
        );
        assert_eq!(c.cluster_connection_infos().unwrap().len(), 2);
        assert!(!format!("{c:?}").contains("secret"));
    }

    #[test]
    fn passwords_with_url_delimiters_never_show() {
        for password in ["pa/ss", "pa?ss", "pa#ss", "p@ss/w?rd#x", "a:b/c"] {
            let secret = format!("{password}-secret");
            for url in [
                format!("redis://:{secret}@h:6379/0"),
                format!("redis://user:{secret}@h:6379/1?protocol=resp3"),
                format!("rediss://user:{secret}@h"),
            ] {
                let c = Config::builder().url(&url).build();
                let shown = format!("{c:?} {}", c.redacted_target());
                assert!(!shown.contains("secret"), "{shown}");
                assert!(shown.contains(":***@h"), "{shown}");
                let c = Config::builder().cluster_nodes([url.as_str()]).build();
                let shown = format!("{c:?} {}", c.redacted_target());
                assert!(!shown.contains("secret"), "{shown}");
                if let Err(err) = c.cluster_connection_infos() {
                    assert!(!err.to_string().contains("secret"), "{err}");
                }
            }
            let err = Config::builder()
                .url(format!("redis//user:{secret}@h"))
                .build()
                .connection_info()
                .unwrap_err();
            assert!(!err.to_string().contains("secret"), "{err}");
        }
        assert_eq!(
            redact_url("redis://user:p/w?x#y@h:1/2"),
            "redis://user:***@h:1/2"
        );
    }

    #[test]
    fn redaction_keeps_the_rest() {
        assert_eq!(redact_url("redis://u:p@h:1/2"), "redis://u:***@h:1/2");
        assert_eq!(redact_url("redis://h:1/2"), "redis://h:1/2");
    }
}
