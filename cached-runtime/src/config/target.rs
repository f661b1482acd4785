//! Where Redis is: a URL, a cluster's seed nodes, the Sentinels that know the master, or
//! host and port with credentials; how it is shown (credentials redacted), how it becomes
//! redis-rs connection details, and the one check that TLS is built in when the target
//! needs it.

use super::Config;
use crate::escape::percent_decoded;

/// Where Redis is, as the builder or the environment gave it: one of a URL, a cluster's
/// seed nodes, Sentinels or a host and port (none: `127.0.0.1:6379`), and credentials and
/// a database that apply over whichever it is (over a URL's own, too; for Sentinel, to the
/// data nodes only). Contradictions are reported by [`Target::problem`], not resolved
/// silently.
#[derive(Clone, Default, PartialEq, Eq)]
pub(super) struct Target {
    pub(super) url: Option<String>,
    pub(super) cluster: Option<Vec<String>>,
    pub(super) sentinel: Option<Sentinels>,
    pub(super) host: Option<(String, u16)>,
    pub(super) username: Option<String>,
    pub(super) password: Option<String>,
    pub(super) db: Option<i64>,
}

/// The Sentinels that watch the master, and the name they know it by (`sentinel monitor
/// <name> ...`).
#[derive(Clone, Default, PartialEq, Eq)]
pub(super) struct Sentinels {
    /// `redis://[user:password@]host:port` each (`rediss://` for TLS): the Sentinels' own
    /// addresses and credentials.
    pub(super) nodes: Vec<String>,
    pub(super) master: String,
}

impl Sentinels {
    /// What makes these Sentinels unusable, before any URL is parsed.
    fn problem(&self) -> Option<String> {
        if self.nodes.is_empty() {
            return Some("Config::sentinel / REDIS_SENTINEL_NODES names no Sentinel".into());
        }
        if self.master.trim().is_empty() {
            return Some(
                "the master name (Config::sentinel / REDIS_SENTINEL_MASTER) is empty: give \
                 the name the Sentinels monitor it by (`sentinel monitor <name> ...`)"
                    .into(),
            );
        }
        let tls = self.nodes.iter().filter(|n| is_tls_url(n)).count();
        if tls != 0 && tls != self.nodes.len() {
            return Some(format!(
                "Config::sentinel / REDIS_SENTINEL_NODES mixes rediss:// and redis:// URLs \
                 ({}): one scheme says whether the Sentinels and the master speak TLS",
                self.nodes
                    .iter()
                    .map(|n| redact_url(n))
                    .collect::<Vec<_>>()
                    .join(",")
            ));
        }
        None
    }
}

/// How the Sentinel store reaches the Sentinels, and the master they name.
pub(crate) struct SentinelSettings {
    /// The name the Sentinels know the master by.
    pub(crate) master: String,
    /// The Sentinels' addresses.
    pub(crate) nodes: Vec<redis::ConnectionAddr>,
    /// The Sentinels' user name and password, from their URLs (one pair for all of them:
    /// redis-rs's Sentinel client has one).
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
    /// The master's (and replicas') user name, password and database.
    pub(crate) data: redis::RedisConnectionInfo,
    /// TLS to the Sentinels and the data nodes alike (`rediss://` Sentinel URLs).
    pub(crate) tls: Option<redis::TlsMode>,
}

impl Target {
    /// Two ways to name the server at once, or a database on a cluster (which has only 0).
    pub(super) fn problem(&self) -> Option<String> {
        const URL: &str = "Config::url / REDIS_URL";
        const CLUSTER: &str = "Config::cluster_nodes / REDIS_CLUSTER_NODES";
        const SENTINEL: &str = "Config::sentinel / REDIS_SENTINEL_NODES";
        const HOST: &str = "Config::host / REDIS_HOST / REDIS_PORT";
        let given = [
            (self.url.is_some(), URL),
            (self.cluster.is_some(), CLUSTER),
            (self.sentinel.is_some(), SENTINEL),
            (self.host.is_some(), HOST),
        ];
        let named: Vec<&str> = given.iter().filter(|g| g.0).map(|g| g.1).collect();
        if named.len() > 1 {
            return Some(format!(
                "{} are both set: name the server one way only",
                named.join(" and ")
            ));
        }
        // Over a URL or a cluster's, checked with each URL's own password below.
        if self.username.is_some()
            && self.password.is_none()
            && self.url.is_none()
            && self.cluster.is_none()
        {
            return Some(
                "Config::username / REDIS_USERNAME is set without a password: redis-rs logs \
                 in only with a password, so the connection would be the `default` user's; \
                 set the user's password (any, for a `nopass` user)"
                    .into(),
            );
        }
        let urls = self
            .url
            .iter()
            .map(|u| (u, URL, true))
            .chain(self.cluster.iter().flatten().map(|u| (u, CLUSTER, true)))
            .chain(
                self.sentinel
                    .iter()
                    .flat_map(|s| &s.nodes)
                    .map(|u| (u, SENTINEL, false)),
            );
        for (url, what, data) in urls {
            // The data nodes' user name and password apply over their URLs' own.
            let over = data.then_some((&self.username, &self.password));
            if let Some(problem) = url_problem(url, what, over) {
                return Some(problem);
            }
        }
        if let (Some(_), Some(db)) = (&self.cluster, self.db) {
            if db != 0 {
                return Some(format!(
                    "Config::db / REDIS_DB is {db}, but a Redis Cluster has only database 0"
                ));
            }
        }
        if let (Some(nodes), None) = (&self.cluster, self.db) {
            // redis-rs would send every node the first node's `SELECT`.
            for node in nodes {
                // (`h1:7000` parses as a URL of scheme `h1`: not a Redis URL, refused as
                // such when connecting.)
                let db = url::Url::parse(node)
                    .ok()
                    .filter(|url| matches!(url.scheme(), "redis" | "rediss" | "valkey" | "valkeys"))
                    .and_then(|url| url.path().trim_matches('/').parse::<i64>().ok());
                if let Some(db) = db.filter(|db| *db != 0) {
                    return Some(format!(
                        "cluster node {} names database {db}, but a Redis Cluster has only \
                         database 0",
                        redact_url(node)
                    ));
                }
            }
        }
        self.sentinel.as_ref().and_then(Sentinels::problem)
    }

    /// The host and port of a target given neither as a URL nor as a cluster.
    fn host_and_port(&self) -> (&str, u16) {
        match &self.host {
            Some((host, port)) => (host, *port),
            None => ("127.0.0.1", 6379),
        }
    }

    /// ` (user u, password ***, db 3)`: the settings that apply over a URL, redacted.
    fn overrides(&self) -> String {
        let mut set = Vec::new();
        if let Some(u) = &self.username {
            set.push(format!("user {u}"));
        }
        if self.password.is_some() {
            set.push("password ***".to_string());
        }
        if let Some(db) = self.db {
            set.push(format!("db {db}"));
        }
        if set.is_empty() {
            String::new()
        } else {
            format!(" ({})", set.join(", "))
        }
    }

    /// `info` with the user name, password and database set over it.
    fn apply(&self, info: redis::ConnectionInfo) -> redis::ConnectionInfo {
        let redis = self.apply_to(info.redis_settings().clone());
        info.set_redis_settings(redis)
    }

    /// `redis` with the user name, password and database set over it.
    fn apply_to(&self, mut redis: redis::RedisConnectionInfo) -> redis::RedisConnectionInfo {
        if let Some(u) = &self.username {
            redis = redis.set_username(u);
        }
        if let Some(p) = &self.password {
            redis = redis.set_password(p);
        }
        if let Some(db) = self.db {
            redis = redis.set_db(db);
        }
        redis
    }
}

impl Config {
    /// Whether this is a Redis Cluster (seed nodes given with
    /// [`ConfigBuilder::cluster_nodes`](crate::ConfigBuilder::cluster_nodes) or
    /// `REDIS_CLUSTER_NODES`).
    ///
    /// # Examples
    ///
    /// ```
    /// let config = redcache::Config::builder()
    ///     .cluster_nodes(["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"])
    ///     .build();
    /// assert!(config.is_cluster() && !config.is_sentinel());
    /// ```
    pub fn is_cluster(&self) -> bool {
        self.target.cluster.is_some()
    }

    /// Whether the master is found through Redis Sentinel (given with
    /// [`ConfigBuilder::sentinel`](crate::ConfigBuilder::sentinel) or
    /// `REDIS_SENTINEL_NODES` and `REDIS_SENTINEL_MASTER`).
    ///
    /// # Examples
    ///
    /// ```
    /// let config = redcache::Config::builder()
    ///     .sentinel(["redis://10.0.0.1:26379"], "mymaster")
    ///     .build();
    /// assert!(config.is_sentinel() && !config.is_cluster());
    /// ```
    pub fn is_sentinel(&self) -> bool {
        self.target.sentinel.is_some()
    }

    /// The Redis address with any password replaced by `***`.
    ///
    /// # Examples
    ///
    /// ```
    /// let config = redcache::Config::builder().url("redis://:s3cret@cache:6379/1").build();
    /// assert_eq!(config.redacted_target(), "redis://:***@cache:6379/1");
    /// ```
    pub fn redacted_target(&self) -> String {
        let t = &self.target;
        if let Some(nodes) = &t.cluster {
            let nodes: Vec<String> = nodes.iter().map(|n| redact_url(n)).collect();
            return format!("cluster {}{}", nodes.join(","), t.overrides());
        }
        if let Some(sentinel) = &t.sentinel {
            let nodes: Vec<String> = sentinel.nodes.iter().map(|n| redact_url(n)).collect();
            return format!(
                "master {:?} of sentinels {}{}",
                sentinel.master,
                nodes.join(","),
                t.overrides()
            );
        }
        if let Some(url) = &t.url {
            return format!("{}{}", redact_url(url), t.overrides());
        }
        let auth = match (&t.username, &t.password) {
            (Some(u), Some(_)) => format!("{u}:***@"),
            (None, Some(_)) => ":***@".to_string(),
            (Some(u), None) => format!("{u}@"),
            (None, None) => String::new(),
        };
        let (host, port) = t.host_and_port();
        format!("redis://{auth}{host}:{port}/{}", t.db.unwrap_or(0))
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
        self.check_tls()?;
        let t = &self.target;
        if t.cluster.is_some() {
            return Err(crate::Error::config(
                "a Redis Cluster is reached through its seed nodes, not one address",
            ));
        }
        if t.sentinel.is_some() {
            return Err(crate::Error::config(
                "a master behind Sentinel is reached through the Sentinels, not one address",
            ));
        }
        let info = match &t.url {
            Some(url) => url.as_str().into_connection_info(),
            None => t.host_and_port().into_connection_info(),
        };
        Ok(t.apply(info.map_err(bad_url)?))
    }

    /// The seed nodes of a cluster, as connection infos.
    pub(crate) fn cluster_connection_infos(&self) -> crate::Result<Vec<redis::ConnectionInfo>> {
        use redis::IntoConnectionInfo;
        let Some(nodes) = &self.target.cluster else {
            return Err(crate::Error::config("not a Redis Cluster configuration"));
        };
        if nodes.is_empty() {
            return Err(crate::Error::config(
                "REDIS_CLUSTER_NODES / Config::cluster_nodes names no node",
            ));
        }
        self.check_tls()?;
        nodes
            .iter()
            .map(|node| {
                let info = node.as_str().into_connection_info().map_err(|e| {
                    crate::Error::config(format!(
                        "cluster node {} is not a Redis URL ({e}); expected \
                         redis://[user:password@]host:port",
                        redact_url(node)
                    ))
                })?;
                Ok(self.target.apply(info))
            })
            .collect()
    }

    /// The Sentinels and what applies to the master they name.
    pub(crate) fn sentinel_settings(&self) -> crate::Result<SentinelSettings> {
        use redis::IntoConnectionInfo;
        let Some(sentinel) = &self.target.sentinel else {
            return Err(crate::Error::config("not a Redis Sentinel configuration"));
        };
        if let Some(problem) = sentinel.problem() {
            return Err(crate::Error::config(problem));
        }
        self.check_tls()?;
        let mut nodes = Vec::with_capacity(sentinel.nodes.len());
        let mut auth = None;
        let mut tls = None;
        for node in &sentinel.nodes {
            let bad = |why: String| {
                crate::Error::config(format!("Sentinel URL {} {why}", redact_url(node)))
            };
            let info = node.as_str().into_connection_info().map_err(|e| {
                bad(format!(
                    "is not a Redis URL ({e}); expected redis://[user:password@]host:port"
                ))
            })?;
            let settings = info.redis_settings();
            if settings.db() != 0 {
                return Err(bad(
                    "names a database, which a Sentinel has not: Config::db / REDIS_DB \
                     selects the master's"
                        .into(),
                ));
            }
            let credentials = (
                settings.username().map(str::to_owned),
                settings.password().map(str::to_owned),
            );
            match &auth {
                None => auth = Some(credentials),
                Some(first) if *first != credentials => {
                    return Err(bad(
                        "has other credentials than the first Sentinel URL: one user name \
                         and password serve every Sentinel"
                            .into(),
                    ))
                }
                Some(_) => {}
            }
            match info.addr() {
                redis::ConnectionAddr::Tcp(..) => {}
                // (`#insecure` is refused before: `Config::problem`.)
                redis::ConnectionAddr::TcpTls { .. } => tls = Some(redis::TlsMode::Secure),
                _ => return Err(bad("is not a TCP address".into())),
            }
            nodes.push(info.addr().clone());
        }
        let (username, password) = auth.unwrap_or_default();
        let data = self.target.apply_to(redis::RedisConnectionInfo::default());
        Ok(SentinelSettings {
            master: sentinel.master.clone(),
            nodes,
            username,
            password,
            data,
            tls,
        })
    }

    /// A CA certificate without a `rediss://` URL: a certificate says TLS is wanted, and
    /// only `rediss://` turns it on (behind Sentinel, `redis://` Sentinel URLs would
    /// connect in the clear, password included).
    ///
    /// Also a CA certificate with no PEM certificate in it (rustls would trust no server,
    /// and every handshake would fail as if the server's certificate were wrong), and a
    /// `rediss://…#insecure` URL (no certificate check, which redcache does not build in:
    /// redis-rs would refuse it only when connecting).
    pub(super) fn tls_problem(&self) -> Option<String> {
        let tls_url = |url: &&String| is_tls_url(url);
        let t = &self.target;
        let mut tls_urls = t
            .url
            .iter()
            .chain(t.cluster.iter().flatten())
            .chain(t.sentinel.iter().flat_map(|s| &s.nodes))
            .filter(tls_url);
        let insecure = |url: &&String| {
            url::Url::parse(url).is_ok_and(|url| url.fragment() == Some("insecure"))
        };
        if let Some(url) = tls_urls.clone().find(insecure) {
            return Some(format!(
                "{} asks for TLS without a certificate check (#insecure), which redcache \
                 does not build in: give the server's authority with Config::tls_ca_cert / \
                 REDIS_TLS_CA_CERT instead",
                redact_url(url)
            ));
        }
        let pem = self.tls_ca_cert.as_deref()?;
        if tls_urls.next().is_none() {
            return Some(
                "a CA certificate (Config::tls_ca_cert / REDIS_TLS_CA_CERT) is set, but no \
                 rediss:// URL: TLS is used only with rediss:// URLs (REDIS_URL, \
                 REDIS_CLUSTER_NODES or REDIS_SENTINEL_NODES); use them, or unset the \
                 certificate"
                    .to_string(),
            );
        }
        const BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";
        if !pem.windows(BEGIN.len()).any(|at| at == BEGIN) {
            return Some(
                "the CA certificate (Config::tls_ca_cert / REDIS_TLS_CA_CERT) holds no PEM \
                 certificate (-----BEGIN CERTIFICATE-----): nothing would be trusted; give \
                 the authority's certificate in PEM form"
                    .to_string(),
            );
        }
        None
    }

    /// TLS (a `rediss://` URL or a CA certificate) needs the `tls` feature.
    fn check_tls(&self) -> crate::Result<()> {
        let tls_url = |url: &String| is_tls_url(url);
        let t = &self.target;
        let wants_tls = self.tls_ca_cert.is_some()
            || t.url.iter().any(tls_url)
            || t.cluster.iter().flatten().any(tls_url)
            || t.sentinel.iter().flat_map(|s| &s.nodes).any(tls_url);
        if cfg!(not(feature = "tls")) && wants_tls {
            return Err(crate::Error::config(
                "TLS (a rediss:// URL or a CA certificate) needs redcache's `tls` feature: \
                 redcache = { version = \"0.1\", features = [\"tls\"] }",
            ));
        }
        // redis-rs builds its TLS settings with rustls's process-wide provider. rustls
        // picks one by itself only when one alone is built in, and panics otherwise (an
        // application whose other crates build in aws-lc-rs as well as redcache's ring).
        // An application that installs its own first keeps it.
        #[cfg(feature = "tls")]
        if wants_tls && rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        Ok(())
    }
}

/// Whether `url` asks for TLS, as redis-rs reads its scheme (`rediss://`, `valkeys://`, in
/// any case).
fn is_tls_url(url: &str) -> bool {
    let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
    scheme.eq_ignore_ascii_case("rediss") || scheme.eq_ignore_ascii_case("valkeys")
}

/// What redis-rs would silently ignore in `url`: a `?db=` query on a TCP URL (it reads the
/// database from the path only), or a user name with no password (it logs in only with a
/// password, so the connection would be the `default` user's). `over`: the user name and
/// password set apart, which apply over the URL's own.
/// A URL whose user name or password holds `/`, `?` or `#` as it is: a URL's address ends
/// at the first of them, so the URL would not parse, or would name the user as its host
/// and read the rest as a path, query or fragment (`redis://default:#pw@cache` reaches
/// `default:6379`). Told by an `@` after one of them where no Redis URL has one: in a URL
/// that does not parse, or in the path (a database number), the fragment, or a query
/// parameter's name (`?x=a@b` is a value, and left alone). (A socket's credentials are in
/// its query.)
fn unescaped_credentials(url: &str, what: &str, data: bool) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme.ends_with("unix") {
        return None;
    }
    let at = rest.rfind('@')?;
    rest[..at].find(['/', '?', '#'])?;
    // (Credentials that parsed may be only part of a password that holds an `@` too.)
    let misread = match url::Url::parse(url) {
        Err(_) => true,
        Ok(parsed) => {
            let named = |pair: &str| pair.split('=').next().is_some_and(|n| n.contains('@'));
            parsed.path().contains('@')
                || parsed.fragment().is_some_and(|f| f.contains('@'))
                || parsed.query().is_some_and(|q| q.split('&').any(named))
        }
    };
    if !misread {
        return None;
    }
    let or = if data {
        ", or give the password with Config::password / REDIS_PASSWORD"
    } else {
        ""
    };
    Some(format!(
        "{what} {} has `/`, `?` or `#` in its user name or password, where a URL ends its \
         address: percent-encode them (%2F, %3F, %23){or}",
        redact_url(url)
    ))
}

fn url_problem(
    url: &str,
    what: &str,
    over: Option<(&Option<String>, &Option<String>)>,
) -> Option<String> {
    let data = over.is_some();
    if let Some(problem) = unescaped_credentials(url, what, data) {
        return Some(problem);
    }
    // What cannot be parsed is refused when connecting, with the parser's own error.
    let parsed = url::Url::parse(url).ok()?;
    let query = |name: &str| {
        parsed
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    let (user, password) = match parsed.scheme() {
        "redis" | "rediss" | "valkey" | "valkeys" => (
            (!parsed.username().is_empty()).then(|| parsed.username().to_owned()),
            parsed.password().map(str::to_owned),
        ),
        // A socket's path names no user: its query does.
        "unix" | "redis+unix" | "valkey+unix" => (query("user"), query("pass")),
        _ => return None,
    };
    let tcp = !parsed.scheme().ends_with("unix");
    if let Some(db) = query("db").filter(|_| tcp) {
        // A Sentinel has no database: the master's is Config::db.
        let fix = match data {
            true => format!("write it as redis://host:port/{db}, or set Config::db / REDIS_DB"),
            false => "the master's database is Config::db / REDIS_DB".to_string(),
        };
        return Some(format!(
            "{what} {} gives the database as a query (db={db}), which is read from the \
             path only: {fix}",
            redact_url(url)
        ));
    }
    let (over_user, over_password) = over.unwrap_or((&None, &None));
    let has_user = over_user.is_some() || user.is_some();
    let has_password = over_password.is_some() || password.is_some_and(|p| !p.is_empty());
    if has_user && !has_password && user.is_none() {
        return Some(format!(
            "Config::username / REDIS_USERNAME is set without a password (for {what} {}): \
             redis-rs logs in only with a password, so the connection would be the \
             `default` user's; set the user's password (any, for a `nopass` user)",
            redact_url(url)
        ));
    }
    if has_user && !has_password {
        return Some(format!(
            "{what} {} names a user without a password: redis-rs logs in only with a \
             password, so the connection would be the `default` user's; give the user's \
             password (any, for a `nopass` user)",
            redact_url(url)
        ));
    }
    None
}

/// Replaces the credentials of a `scheme://user:password@host` URL: everything between
/// `://` and the last `@` (a password may hold `/`, `?`, `#` or `@`), keeping a plain user
/// name so the address stays recognisable.
///
/// Also a password in the query (`redis+unix:///run/redis.sock?pass=..`, as redis-rs reads
/// unix-socket URLs, whose query may hold an `@` of its own; also written without `//`,
/// `unix:/run/redis.sock?pass=..`, which redis-rs takes too), and the part after a `:`
/// that cannot be a port in a URL without `@` (`redis://user:password` with the host left
/// out).
fn redact_url(url: &str) -> String {
    // The scheme is the leading run of its characters up to a `:`; an authority follows
    // only a `//` right after it (a `://` later on, in a query, is no authority).
    let scheme = url.find(':').filter(|&colon| {
        colon > 0
            && url[..colon]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    });
    let authority = scheme.filter(|&colon| url[colon + 1..].starts_with("//"));
    let Some(scheme_end) = authority.map(|colon| colon + 3) else {
        return if url.contains('@') {
            "<unparsable URL with credentials>".to_string()
        } else {
            // Only a query can hold a password here.
            redact_query(url)
        };
    };
    let scheme = &url[..scheme_end - 3];
    let rest = &url[scheme_end..];
    // A unix socket's URL names a path: its credentials are in the query alone.
    let unix = ["unix", "redis+unix", "valkey+unix"]
        .iter()
        .any(|name| scheme.eq_ignore_ascii_case(name));
    if unix {
        return format!("{}{}", &url[..scheme_end], redact_query(rest));
    }
    let plain = |user: &str| {
        user.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    let (credentials, after) = match rest.rfind('@') {
        Some(at) => {
            let user = match rest[..at].split_once(':') {
                Some((user, _)) if plain(user) => user,
                _ => "",
            };
            (format!("{user}:***"), &rest[at..])
        }
        None => {
            let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
            // After an IPv6 host's `]`, or else after the last `:`.
            let port = match authority.strip_prefix('[') {
                Some(v6) => v6
                    .split_once(']')
                    .map(|(_, port)| port.strip_prefix(':').unwrap_or(port)),
                None => authority.rsplit_once(':').map(|(_, port)| port),
            };
            match port {
                Some(port) if !port.bytes().all(|b| b.is_ascii_digit()) => {
                    let user = authority.split_once(':').map_or("", |(user, _)| user);
                    let user = if plain(user) { user } else { "" };
                    (format!("{user}:***"), &rest[authority.len()..])
                }
                _ => (String::new(), rest),
            }
        }
    };
    format!("{}{credentials}{}", &url[..scheme_end], redact_query(after))
}

/// `rest` (a URL from its host or path on) with the value of each `pass` or `password`
/// parameter of its query (the name read as redis-rs reads it: percent-decoded, in any
/// case) replaced by `***`.
fn redact_query(rest: &str) -> String {
    let Some((head, query)) = rest.split_once('?') else {
        return rest.to_string();
    };
    let secret = |name: &str| {
        let name = percent_decoded(name.as_bytes(), true, b"");
        let name = String::from_utf8_lossy(&name);
        name.eq_ignore_ascii_case("pass") || name.eq_ignore_ascii_case("password")
    };
    let params: Vec<String> = query
        .split('&')
        .map(|param| match param.split_once('=') {
            Some((name, _)) if secret(name) => format!("{name}=***"),
            _ => param.to_string(),
        })
        .collect();
    format!("{head}?{}", params.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        for url in [
            "redis://:pw-secret@h:6379/0",
            "redis://user:pw-secret@h:6379",
            "rediss://user:pw-secret@h",
            "redis://user:pw@secret@h/1",
            "redis+unix:///run/redis.sock?db=1&pass=pw-secret",
            "unix:///run/redis.sock?PASSWORD=pw-secret",
            "redis://default:pw-secret",
            "redis://default:pw-secret/0",
            "redis+unix:///run/redis.sock?user=ops@corp&pass=pw-secret",
            "redis+unix:///run/redis.sock?pass=pw@secret",
            "unix:///run/redis.sock?p%61ss=pw-secret",
            // Without `//`, which redis-rs reads the same.
            "unix:/run/redis.sock?pass=pw-secret",
            "redis+unix:/run/redis.sock?db=1&pass=pw-secret",
            "unix:/run/redis.sock?pass=pw://secret",
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

    #[test]
    fn addresses_without_secrets_show_as_written() {
        for url in [
            "redis://h:6379/0",
            "redis+unix:///run/redis.sock?db=1",
            "rediss://h",
            "redis://[::1]/0",
            "redis://[::1]:6380",
        ] {
            assert_eq!(redact_url(url), url);
        }
    }

    #[test]
    fn a_ca_certificate_without_a_rediss_url_is_refused() {
        let pem = b"-----BEGIN CERTIFICATE-----".to_vec();
        let sentinel = Config::builder()
            .sentinel(["redis://s1:26379"], "mymaster")
            .tls_ca_cert(pem.clone())
            .build();
        let plain = Config::builder()
            .url("redis://h:6379")
            .tls_ca_cert(pem)
            .build();
        for config in [sentinel, plain] {
            let err = config.problem().expect("refused");
            assert!(err.contains("rediss://"), "{err}");
        }
        for url in ["rediss://h:6380", "valkeys://h:6380", "REDISS://h:6380"] {
            let config = Config::builder()
                .url(url)
                .tls_ca_cert(b"-----BEGIN CERTIFICATE-----\nMIIB\n".to_vec())
                .build();
            assert_eq!(config.tls_problem(), None, "{url}");
        }
    }

    #[test]
    fn a_cluster_node_naming_a_database_is_refused() {
        for nodes in [
            ["redis://a:7000/2", "redis://b:7000"],
            ["redis://a:7000", "redis://b:7000/3"],
        ] {
            let err = Config::builder()
                .cluster_nodes(nodes)
                .build()
                .problem()
                .expect("refused");
            assert!(err.contains("only database 0"), "{err}");
        }
        for nodes in [
            ["redis://a:7000/0", "redis://b:7000/"],
            ["redis://a:7000", "redis://b:7000"],
        ] {
            assert_eq!(
                Config::builder().cluster_nodes(nodes).build().problem(),
                None
            );
        }
        // Not a Redis URL (its scheme would be `a`): not read as naming database 7000.
        let problem = Config::builder()
            .cluster_nodes(["a:7000", "b:7000"])
            .build()
            .problem();
        assert!(!problem.is_some_and(|p| p.contains("database")));
    }

    #[cfg(feature = "tls")]
    #[test]
    fn a_tls_url_has_a_crypto_provider_before_it_connects() {
        // (Process-wide; no test of this binary connects over TLS.)
        Config::builder()
            .url("rediss://h:6380")
            .build()
            .connection_info()
            .unwrap();
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    }

    #[test]
    fn a_ca_certificate_file_without_a_certificate_is_refused() {
        for pem in [
            &b""[..],
            b"-----BEGIN PRIVATE KEY-----\nMIIE\n",
            b"\x30\x82\x01",
        ] {
            let err = Config::builder()
                .url("rediss://h:6380")
                .tls_ca_cert(pem.to_vec())
                .build()
                .problem()
                .expect("refused");
            assert!(err.contains("REDIS_TLS_CA_CERT"), "{err}");
            assert!(err.contains("no PEM certificate"), "{err}");
        }
    }

    #[test]
    fn tls_without_a_certificate_check_is_refused_at_start() {
        let sentinel = Config::builder()
            .sentinel(["rediss://s1:26379#insecure"], "mymaster")
            .build();
        let plain = Config::builder()
            .url("rediss://:pw-secret@h:6380#insecure")
            .build();
        let cluster = Config::builder()
            .cluster_nodes(["rediss://a:7000", "rediss://b:7000#insecure"])
            .build();
        for config in [sentinel, plain, cluster] {
            let err = config.problem().expect("refused");
            assert!(err.contains("#insecure"), "{err}");
            assert!(err.contains("REDIS_TLS_CA_CERT"), "{err}");
            assert!(!err.contains("secret"), "{err}");
        }
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
    fn credentials_and_db_from_the_builder_apply_over_the_url() {
        let c = Config::builder()
            .url("redis://cache.internal:6379/2")
            .password("pw-secret")
            .build();
        assert_eq!(c.problem(), None);
        let info = c.connection_info().unwrap();
        assert_eq!(info.addr().to_string(), "cache.internal:6379");
        assert_eq!(info.redis_settings().password(), Some("pw-secret"));
        assert_eq!(info.redis_settings().db(), 2);
        let c = Config::builder()
            .url("redis://u:pw-secret@cache.internal:6379/2")
            .username("other")
            .db(5)
            .build();
        let info = c.connection_info().unwrap();
        assert_eq!(info.redis_settings().username(), Some("other"));
        assert_eq!(info.redis_settings().password(), Some("pw-secret"));
        assert_eq!(info.redis_settings().db(), 5);
        assert!(!format!("{c:?}").contains("secret"));
        // The order of the setters does not matter.
        let c = Config::builder()
            .password("pw-secret")
            .url("redis://h:1")
            .build();
        assert_eq!(
            c.connection_info().unwrap().redis_settings().password(),
            Some("pw-secret")
        );
    }

    #[test]
    fn what_redis_rs_would_ignore_is_refused() {
        let refused = |c: crate::ConfigBuilder, says: &str| {
            let problem = c.build().problem().expect("refused");
            assert!(problem.contains(says), "{problem}");
            assert!(!problem.contains("pw-secret"), "{problem}");
        };
        refused(
            Config::builder().url("redis://:pw-secret@h:6379?db=3"),
            "write it as redis://host:port/3",
        );
        refused(
            Config::builder().cluster_nodes(["redis://h:1", "redis://h:2/?db=1"]),
            "db=1",
        );
        refused(
            Config::builder().sentinel(["redis://s:26379?db=1"], "m"),
            "the master's database is Config::db",
        );
        for url in [
            "redis://app@h:6379",
            "rediss://app:@h",
            "redis+unix:///s.sock?user=app",
        ] {
            refused(
                Config::builder().url(url),
                "names a user without a password",
            );
        }
        refused(
            Config::builder().url("redis://h").username("app"),
            "REDIS_USERNAME is set without a password (for Config::url / REDIS_URL redis://h)",
        );
        refused(
            Config::builder().host("h", 1).username("app"),
            "REDIS_USERNAME is set without a password",
        );
        refused(
            Config::builder().sentinel(["redis://ops@s:26379"], "m"),
            "names a user without a password",
        );
        refused(
            Config::builder()
                .sentinel(["redis://s:26379"], "m")
                .username("app"),
            "REDIS_USERNAME is set without a password",
        );
        for fine in [
            Config::builder().url("redis://app:pw-secret@h:6379/3"),
            Config::builder()
                .url("redis://app@h:6379")
                .password("pw-secret"),
            Config::builder().url("redis+unix:///s.sock?db=3&user=app&pass=pw-secret"),
            Config::builder().url("redis://h:6379/?protocol=resp3"),
            Config::builder()
                .cluster_nodes(["redis://app@h:1"])
                .password("pw-secret"),
            Config::builder()
                .sentinel(["redis://ops:pw-secret@s:26379"], "m")
                .username("app")
                .password("pw-secret"),
        ] {
            assert_eq!(fine.build().problem(), None);
        }
    }

    #[test]
    fn a_namespace_with_a_brace_is_refused_on_a_cluster() {
        let cluster = || Config::builder().cluster_nodes(["redis://h:1"]);
        for ns in ["shop{", "{shop}", "a}b"] {
            let problem = cluster().namespace(ns).build().problem();
            assert!(problem.is_some_and(|p| p.contains("holds a brace")), "{ns}");
            // One server hashes nothing.
            assert_eq!(Config::builder().namespace(ns).build().problem(), None);
        }
        assert_eq!(cluster().namespace("shop:eu").build().problem(), None);
    }

    #[test]
    fn naming_the_server_twice_is_an_error_that_names_both() {
        for (c, a, b) in [
            (
                Config::builder()
                    .url("redis://h:1")
                    .cluster_nodes(["redis://h:2"]),
                "Config::url",
                "Config::cluster_nodes",
            ),
            (
                Config::builder().host("h", 1).url("redis://:pw-secret@h:1"),
                "Config::url",
                "Config::host",
            ),
            (
                Config::builder()
                    .cluster_nodes(["redis://h:2"])
                    .host("h", 1),
                "Config::cluster_nodes",
                "Config::host",
            ),
            (
                Config::builder()
                    .url("redis://:pw-secret@h:1")
                    .sentinel(["redis://:pw-secret@s:26379"], "m"),
                "Config::url",
                "Config::sentinel",
            ),
            (
                Config::builder()
                    .sentinel(["redis://s:26379"], "m")
                    .cluster_nodes(["redis://h:2"]),
                "Config::cluster_nodes",
                "Config::sentinel",
            ),
            (
                Config::builder()
                    .host("h", 1)
                    .sentinel(["redis://s:26379"], "m"),
                "Config::sentinel",
                "Config::host",
            ),
        ] {
            let problem = c.build().problem().unwrap();
            assert!(problem.contains(a) && problem.contains(b), "{problem}");
            assert!(!problem.contains("secret"), "{problem}");
        }
    }

    #[test]
    fn sentinel_credentials_are_the_sentinels_and_the_rest_applies_to_the_master() {
        let c = Config::builder()
            .sentinel(
                [
                    "redis://watch:sentinel-secret@s1:26379",
                    "redis://watch:sentinel-secret@s2:26380",
                ],
                "mymaster",
            )
            .username("app")
            .password("master-secret")
            .db(3)
            .build();
        assert_eq!(c.problem(), None);
        assert!(c.is_sentinel() && !c.is_cluster());
        let shown = format!("{c:?} {}", c.redacted_target());
        assert!(!shown.contains("secret"), "{shown}");
        assert_eq!(
            c.redacted_target(),
            "master \"mymaster\" of sentinels redis://watch:***@s1:26379,\
             redis://watch:***@s2:26380 (user app, password ***, db 3)"
        );
        let s = c.sentinel_settings().unwrap();
        assert_eq!(s.master, "mymaster");
        assert_eq!(
            s.nodes,
            [
                redis::ConnectionAddr::Tcp("s1".into(), 26379),
                redis::ConnectionAddr::Tcp("s2".into(), 26380)
            ]
        );
        assert_eq!(s.username.as_deref(), Some("watch"));
        assert_eq!(s.password.as_deref(), Some("sentinel-secret"));
        assert_eq!(s.data.username(), Some("app"));
        assert_eq!(s.data.password(), Some("master-secret"));
        assert_eq!(s.data.db(), 3);
        assert_eq!(s.tls, None);
        assert!(c.connection_info().is_err(), "no one address");
    }

    /// A password with `/`, `?` or `#` as it is: the URL would not parse, or would reach
    /// the user name as a host. Refused with how to write it, and without the password.
    #[test]
    fn a_password_that_ends_the_address_is_refused_with_the_fix() {
        for url in [
            "redis://:pw/secret@cache:6379",
            "redis://default:#pw-secret@cache:6379",
            "rediss://app:12?pw-secret@cache:6380/1",
            // With an `@` too: the URL parses with part of the password as credentials.
            "redis://user:p@ss/word-secret@cache:6379",
        ] {
            let problem = Config::builder().url(url).build().problem();
            let problem = problem.unwrap_or_else(|| panic!("{url}: accepted"));
            assert!(problem.contains("percent-encode"), "{problem}");
            assert!(problem.contains("REDIS_PASSWORD"), "{problem}");
            assert!(!problem.contains("secret"), "{problem}");
        }
        let sentinel = Config::builder().sentinel(["redis://:a#b-secret@s:26379"], "m");
        let problem = sentinel.build().problem().unwrap();
        assert!(problem.contains("percent-encode") && !problem.contains("REDIS_PASSWORD"));
        // Escaped, or with an `@` only where a URL may hold one, it is a URL like any other.
        for url in [
            "redis://:pw%2Fsecret@cache:6379",
            "redis://user:pw@cache:6379/0",
            "redis://cache:6379/0",
            "redis://cache:6379/0?client=a@b",
            "redis://[::1]:6379/0",
        ] {
            assert_eq!(Config::builder().url(url).build().problem(), None, "{url}");
        }
        let c = Config::builder()
            .url("redis://:pw%2Fsecret@cache:6379")
            .build();
        assert_eq!(
            c.connection_info().unwrap().redis_settings().password(),
            Some("pw/secret")
        );
    }

    #[test]
    fn unusable_sentinels_are_named_without_their_passwords() {
        for (c, expected) in [
            (
                Config::builder().sentinel(Vec::<String>::new(), "m"),
                "names no Sentinel",
            ),
            (
                Config::builder().sentinel(["redis://s:26379"], " "),
                "master name",
            ),
            (
                Config::builder().sentinel(["redis://:pw-secret@s:26379/2"], "m"),
                "names a database",
            ),
            (
                Config::builder().sentinel(
                    [
                        "redis://:pw-secret@s1:26379",
                        "redis://:other-secret@s2:26379",
                    ],
                    "m",
                ),
                "other credentials",
            ),
            (
                Config::builder().sentinel(["not a url :pw-secret@s"], "m"),
                "is not a Redis URL",
            ),
            (
                Config::builder().sentinel(
                    [
                        "rediss://:pw-secret@s1:26379",
                        "redis://:pw-secret@s2:26379",
                    ],
                    "m",
                ),
                "mixes rediss:// and redis://",
            ),
            (
                // TLS however its scheme is written.
                Config::builder().sentinel(
                    [
                        "valkeys://:pw-secret@s1:26379",
                        "REDIS://:pw-secret@s2:26379",
                    ],
                    "m",
                ),
                "mixes rediss:// and redis://",
            ),
            (
                Config::builder().sentinel(
                    [
                        "REDISS://:pw-secret@s1:26379",
                        "redis://:pw-secret@s2:26379",
                    ],
                    "m",
                ),
                "mixes rediss:// and redis://",
            ),
        ] {
            let err = c.build().sentinel_settings().err().unwrap().to_string();
            assert!(err.contains(expected), "{err}");
            assert!(!err.contains("secret"), "{err}");
        }
        // The checks that need no parsing are found before connecting, like the others.
        let c = Config::builder().sentinel(["redis://s:26379"], "").build();
        assert!(c.problem().unwrap().contains("master name"));
        // One scheme, however it is written, is no mix.
        let c = Config::builder()
            .sentinel(["REDISS://s1:26379", "rediss://s2:26379"], "m")
            .build();
        assert!(
            c.problem().is_none_or(|p| !p.contains("mixes")),
            "{:?}",
            c.problem()
        );
    }

    #[cfg(feature = "tls")]
    #[test]
    fn rediss_sentinels_mean_tls_to_the_master_too() {
        let c = Config::builder()
            .sentinel(["rediss://s1:26379", "rediss://s2:26379"], "m")
            .build();
        let s = c.sentinel_settings().unwrap();
        assert_eq!(s.tls, Some(redis::TlsMode::Secure));
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn rediss_sentinels_without_the_feature_say_how_to_get_it() {
        let err = Config::builder()
            .sentinel(["rediss://:pw-secret@s1:26379"], "m")
            .build()
            .sentinel_settings()
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("`tls` feature"), "{err}");
    }

    #[test]
    fn redaction_keeps_the_rest() {
        assert_eq!(redact_url("redis://u:p@h:1/2"), "redis://u:***@h:1/2");
        assert_eq!(redact_url("redis://h:1/2"), "redis://h:1/2");
    }
}
