//! Where Redis is: a URL, a cluster's seed nodes, or host and port with credentials; how
//! it is shown (credentials redacted), how it becomes redis-rs connection details, and the
//! one check that TLS is built in when the target needs it.

use super::Config;

/// Where Redis is.
#[derive(Clone, PartialEq, Eq)]
pub(super) enum Target {
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

impl Config {
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
        self.check_tls()?;
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

    /// TLS (a `rediss://` URL or a CA certificate) needs the `tls` feature.
    fn check_tls(&self) -> crate::Result<()> {
        let tls_url = |url: &String| url.starts_with("rediss://");
        let wants_tls = self.tls_ca_cert.is_some()
            || match &self.target {
                Target::Url(url) => tls_url(url),
                Target::Cluster(nodes) => nodes.iter().any(tls_url),
                Target::Parts { .. } => false,
            };
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
    fn redaction_keeps_the_rest() {
        assert_eq!(redact_url("redis://u:p@h:1/2"), "redis://u:***@h:1/2");
        assert_eq!(redact_url("redis://h:1/2"), "redis://h:1/2");
    }
}
