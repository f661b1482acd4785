//! Where Redis is: a URL, a cluster's seed nodes, or host and port with credentials; how
//! it is shown (credentials redacted), how it becomes redis-rs connection details, and the
//! one check that TLS is built in when the target needs it.

use super::Config;

/// Where Redis is, as the builder or the environment gave it: one of a URL, a cluster's
/// seed nodes or a host and port (none: `127.0.0.1:6379`), and credentials and a database
/// that apply over whichever it is (over a URL's own, too). Contradictions are reported by
/// [`Target::problem`], not resolved silently.
#[derive(Clone, Default, PartialEq, Eq)]
pub(super) struct Target {
    pub(super) url: Option<String>,
    pub(super) cluster: Option<Vec<String>>,
    pub(super) host: Option<(String, u16)>,
    pub(super) username: Option<String>,
    pub(super) password: Option<String>,
    pub(super) db: Option<i64>,
}

impl Target {
    /// Two ways to name the server at once, or a database on a cluster (which has only 0).
    pub(super) fn problem(&self) -> Option<String> {
        const URL: &str = "Config::url / REDIS_URL";
        const CLUSTER: &str = "Config::cluster_nodes / REDIS_CLUSTER_NODES";
        const HOST: &str = "Config::host / REDIS_HOST / REDIS_PORT";
        let given = [
            (self.url.is_some(), URL),
            (self.cluster.is_some(), CLUSTER),
            (self.host.is_some(), HOST),
        ];
        let named: Vec<&str> = given.iter().filter(|g| g.0).map(|g| g.1).collect();
        if named.len() > 1 {
            return Some(format!(
                "{} are both set: name the server one way only",
                named.join(" and ")
            ));
        }
        match (&self.cluster, self.db) {
            (Some(_), Some(db)) if db != 0 => Some(format!(
                "Config::db / REDIS_DB is {db}, but a Redis Cluster has only database 0"
            )),
            _ => None,
        }
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
        let mut redis = info.redis_settings().clone();
        if let Some(u) = &self.username {
            redis = redis.set_username(u);
        }
        if let Some(p) = &self.password {
            redis = redis.set_password(p);
        }
        if let Some(db) = self.db {
            redis = redis.set_db(db);
        }
        info.set_redis_settings(redis)
    }
}

impl Config {
    /// Whether this is a Redis Cluster (seed nodes given with
    /// [`ConfigBuilder::cluster_nodes`](crate::ConfigBuilder::cluster_nodes) or
    /// `REDIS_CLUSTER_NODES`).
    pub fn is_cluster(&self) -> bool {
        self.target.cluster.is_some()
    }

    /// The Redis address with any password replaced by `***`.
    pub fn redacted_target(&self) -> String {
        let t = &self.target;
        if let Some(nodes) = &t.cluster {
            let nodes: Vec<String> = nodes.iter().map(|n| redact_url(n)).collect();
            return format!("cluster {}{}", nodes.join(","), t.overrides());
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

    /// TLS (a `rediss://` URL or a CA certificate) needs the `tls` feature.
    fn check_tls(&self) -> crate::Result<()> {
        let tls_url = |url: &String| url.starts_with("rediss://");
        let t = &self.target;
        let wants_tls = self.tls_ca_cert.is_some()
            || t.url.iter().any(tls_url)
            || t.cluster.iter().flatten().any(tls_url);
        if cfg!(not(feature = "tls")) && wants_tls {
            return Err(crate::Error::config(
                "TLS (a rediss:// URL or a CA certificate) needs redcache's `tls` feature: \
                 redcache = { version = \"0.1\", features = [\"tls\"] }",
            ));
        }
        Ok(())
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
        ] {
            let problem = c.build().problem().unwrap();
            assert!(problem.contains(a) && problem.contains(b), "{problem}");
            assert!(!problem.contains("secret"), "{problem}");
        }
    }

    #[test]
    fn redaction_keeps_the_rest() {
        assert_eq!(redact_url("redis://u:p@h:1/2"), "redis://u:***@h:1/2");
        assert_eq!(redact_url("redis://h:1/2"), "redis://h:1/2");
    }
}
