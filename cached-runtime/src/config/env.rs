//! [`Config::from_env`]: the Redis target from `REDIS_*` variables and the tunables from
//! `REDCACHE_*` ones, each variable named once in a table. A variable that does not parse
//! is kept as the configuration's problem, reported by `init`/`Cache::connect`, so
//! `from_env` itself cannot fail.

use super::{Config, ConfigBuilder};
use crate::codec::Codec;
use std::time::Duration;

/// Sets a tunable from its variable's (trimmed) text; `Err` when the text does not parse.
type Setter = fn(&mut Config, &str) -> Result<(), ()>;

/// The whole non-negative numbers among the tunables.
const NUMBERS: &[(&str, Setter)] = &[
    ("REDCACHE_DEFAULT_TTL", |c, raw| {
        raw.parse().map(|v| c.default_ttl = v).map_err(drop)
    }),
    ("REDCACHE_NULL_TTL", |c, raw| {
        raw.parse().map(|v| c.default_null_ttl = v).map_err(drop)
    }),
    ("REDCACHE_TIMEOUT_MS", |c, raw| {
        raw.parse().map(|v| c.op_timeout = ms(v)).map_err(drop)
    }),
    ("REDCACHE_CONNECT_TIMEOUT_MS", |c, raw| {
        raw.parse().map(|v| c.connect_timeout = ms(v)).map_err(drop)
    }),
    ("REDCACHE_MAX_VALUE_BYTES", |c, raw| {
        raw.parse().map(|v| c.max_value_bytes = v).map_err(drop)
    }),
    ("REDCACHE_BREAKER_THRESHOLD", |c, raw| {
        raw.parse().map(|v| c.breaker_threshold = v).map_err(drop)
    }),
    ("REDCACHE_BREAKER_COOLDOWN_MS", |c, raw| {
        raw.parse()
            .map(|v| c.breaker_cooldown = ms(v))
            .map_err(drop)
    }),
    ("REDCACHE_LOCAL_CAPACITY", |c, raw| {
        raw.parse().map(|v| c.local_capacity = v).map_err(drop)
    }),
    ("REDCACHE_LOCAL_MAX_BYTES", |c, raw| {
        raw.parse().map(|v| c.local_max_bytes = v).map_err(drop)
    }),
    ("REDCACHE_MEMORY_CAPACITY", |c, raw| {
        raw.parse().map(|v| c.memory_capacity = v).map_err(drop)
    }),
    ("REDCACHE_MEMORY_MAX_BYTES", |c, raw| {
        raw.parse().map(|v| c.memory_max_bytes = v).map_err(drop)
    }),
    ("REDCACHE_MAX_FILL_MS", |c, raw| {
        raw.parse().map(|v| c.max_fill_time = ms(v)).map_err(drop)
    }),
    ("REDCACHE_COMPRESS_ABOVE", |c, raw| {
        raw.parse()
            .map(|v| c.compress_above = Some(v))
            .map_err(drop)
    }),
];

/// Turns a setting on or off.
type Switch = fn(&mut Config, bool);

/// The settings that are on or off (`true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`).
const SWITCHES: &[(&str, Switch)] = &[
    ("REDCACHE_LAZY", |c, on| c.lazy = on),
    ("REDIS_READ_FROM_REPLICAS", |c, on| {
        c.read_from_replicas = on
    }),
];

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

impl Config {
    pub(crate) fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Config {
        let get = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let mut b = Config::builder();
        if let Some(nodes) = get("REDIS_CLUSTER_NODES") {
            b = b.cluster_nodes(nodes.split(',').map(str::trim).filter(|n| !n.is_empty()));
        }
        if let Some(url) = get("REDIS_URL") {
            b = b.url(url);
        }
        b = sentinel(b, &get);
        b = target_parts(b, &get);
        if let Some(ns) = get("REDCACHE_NAMESPACE") {
            // Trimmed like every other value: a stray space from a `.env` or YAML file
            // would name other keys than the processes configured without it.
            b = b.namespace(ns.trim());
        }
        for (name, set) in NUMBERS {
            if let Some(raw) = get(name) {
                let digits = raw.trim();
                if set(&mut b.config, digits).is_err() {
                    let whole = !digits.is_empty() && digits.bytes().all(|d| d.is_ascii_digit());
                    b = b.invalid(match whole {
                        true => format!("{name}={raw:?} is too large"),
                        false => format!("{name}={raw:?} is not a whole non-negative number"),
                    });
                }
            }
        }
        if let Some(raw) = get("REDCACHE_CODEC") {
            match Codec::from_name(&raw.trim().to_ascii_lowercase()) {
                Some(codec) => b = b.codec(codec),
                None => b = b.invalid(format!("REDCACHE_CODEC={raw:?} is not json or msgpack")),
            }
        }
        if let Some(path) = get("REDIS_TLS_CA_CERT") {
            match std::fs::read(path.trim()) {
                Ok(pem) => b.config.tls_ca_cert = Some(pem),
                Err(err) => {
                    b = b.invalid(format!("REDIS_TLS_CA_CERT={path:?} cannot be read: {err}"))
                }
            }
        }
        for (name, set) in SWITCHES {
            if let Some(raw) = get(name) {
                match raw.trim().to_ascii_lowercase().as_str() {
                    "1" | "true" | "yes" | "on" => set(&mut b.config, true),
                    "0" | "false" | "no" | "off" => set(&mut b.config, false),
                    _ => b = b.invalid(format!("{name}={raw:?} is not true or false")),
                }
            }
        }
        b.build()
    }
}

/// `REDIS_SENTINEL_NODES` (comma-separated URLs) with `REDIS_SENTINEL_MASTER`: both or
/// neither, as in redis-py's and go-redis's Sentinel options, which need both.
fn sentinel(b: ConfigBuilder, get: &impl Fn(&str) -> Option<String>) -> ConfigBuilder {
    match (get("REDIS_SENTINEL_NODES"), get("REDIS_SENTINEL_MASTER")) {
        (Some(nodes), Some(master)) => b.sentinel(
            nodes.split(',').map(str::trim).filter(|n| !n.is_empty()),
            master.trim(),
        ),
        (Some(_), None) => b.invalid(
            "REDIS_SENTINEL_NODES is set but REDIS_SENTINEL_MASTER is not: name the master \
             as the Sentinels monitor it (`sentinel monitor <name> ...`)"
                .into(),
        ),
        (None, Some(_)) => b.invalid(
            "REDIS_SENTINEL_MASTER is set but REDIS_SENTINEL_NODES is not: list the \
             Sentinels' URLs, comma-separated"
                .into(),
        ),
        (None, None) => b,
    }
}

/// `REDIS_HOST`/`REDIS_PORT` (unless `REDIS_URL` names the server: it comes first), and
/// `REDIS_USERNAME`, `REDIS_PASSWORD` and `REDIS_DB`, which apply over `REDIS_URL` or
/// `REDIS_CLUSTER_NODES` as well, and to the master behind `REDIS_SENTINEL_NODES`.
fn target_parts(mut b: ConfigBuilder, get: &impl Fn(&str) -> Option<String>) -> ConfigBuilder {
    // Kubernetes's service links set `REDIS_PORT=tcp://10.96.0.5:6379` in every pod of a
    // namespace with a Service named `redis`: not a port anyone chose, ignored.
    let mut port = get("REDIS_PORT").filter(|port| !port.trim_start().starts_with("tcp://"));
    let mut host = get("REDIS_HOST");
    if get("REDIS_URL").is_some() && (host.is_some() || port.is_some()) {
        let ignored = match (host.take(), port.take()) {
            (Some(_), Some(_)) => "REDIS_HOST and REDIS_PORT are",
            (Some(_), None) => "REDIS_HOST is",
            _ => "REDIS_PORT is",
        };
        tracing::warn!("redcache: {ignored} ignored: REDIS_URL names the server");
    }
    if let Some(host) = host {
        match port
            .as_deref()
            .map(str::trim)
            .map(str::parse)
            .unwrap_or(Ok(6379))
        {
            // Trimmed: a stray space from a `.env` file would be looked up as part of the name.
            Ok(port) => b = b.host(host.trim(), port),
            Err(_) => {
                b = b.invalid(format!(
                    "REDIS_PORT={:?} is not a port number",
                    port.unwrap_or_default()
                ))
            }
        }
    } else if let Some(p) = port {
        match p.trim().parse() {
            Ok(port) => b = b.host("127.0.0.1", port),
            Err(_) => b = b.invalid(format!("REDIS_PORT={p:?} is not a port number")),
        }
    }
    if let Some(u) = get("REDIS_USERNAME") {
        // Trimmed too (a user name holds no spaces); the password is taken as written.
        b = b.username(u.trim());
    }
    if let Some(p) = get("REDIS_PASSWORD") {
        b = b.password(p);
    }
    if let Some(d) = get("REDIS_DB") {
        match d.trim().parse::<i64>() {
            Ok(d) if d >= 0 => b = b.db(d),
            _ => b = b.invalid(format!("REDIS_DB={d:?} is not a database number")),
        }
    }
    b
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
    fn a_url_comes_before_a_host_and_port() {
        for extra in [
            &[("REDIS_HOST", "other")][..],
            &[("REDIS_PORT", "6380")],
            &[("REDIS_HOST", "other"), ("REDIS_PORT", "not a port")],
        ] {
            let mut vars = vec![("REDIS_URL", "redis://h:1/2")];
            vars.extend_from_slice(extra);
            let c = env(&vars);
            assert_eq!(c.problem(), None, "{extra:?}");
            let info = c.connection_info().unwrap();
            assert_eq!(info.addr().to_string(), "h:1", "{extra:?}");
            assert_eq!(info.redis_settings().db(), 2, "{extra:?}");
        }
    }

    #[test]
    fn credentials_and_db_from_the_environment_apply_over_the_url() {
        let c = env(&[
            ("REDIS_URL", "redis://olduser:oldpw@cache.internal:6380/1"),
            ("REDIS_USERNAME", "svc"),
            ("REDIS_PASSWORD", "pw-secret"),
            ("REDIS_DB", "4"),
        ]);
        assert_eq!(c.problem(), None);
        let info = c.connection_info().unwrap();
        assert_eq!(info.addr().to_string(), "cache.internal:6380");
        assert_eq!(info.redis_settings().username(), Some("svc"));
        assert_eq!(info.redis_settings().password(), Some("pw-secret"));
        assert_eq!(info.redis_settings().db(), 4);
        let shown = format!("{c:?} {}", c.redacted_target());
        assert!(
            !shown.contains("secret") && !shown.contains("oldpw"),
            "{shown}"
        );
        assert_eq!(
            c.redacted_target(),
            "redis://olduser:***@cache.internal:6380/1 (user svc, password ***, db 4)"
        );
        // Only the password: the URL's user name and database stay.
        let c = env(&[
            ("REDIS_URL", "redis://olduser@cache.internal:6380/1"),
            ("REDIS_PASSWORD", "pw-secret"),
        ]);
        let info = c.connection_info().unwrap();
        assert_eq!(info.redis_settings().username(), Some("olduser"));
        assert_eq!(info.redis_settings().password(), Some("pw-secret"));
        assert_eq!(info.redis_settings().db(), 1);
    }

    #[test]
    fn a_cluster_and_a_url_are_a_contradiction_and_credentials_reach_every_node() {
        let c = env(&[
            ("REDIS_CLUSTER_NODES", "redis://h1:7000,redis://h2:7001"),
            ("REDIS_URL", "redis://h:1"),
        ]);
        let problem = c.problem().unwrap();
        assert!(
            problem.contains("REDIS_URL") && problem.contains("REDIS_CLUSTER_NODES"),
            "{problem}"
        );
        let c = env(&[
            ("REDIS_CLUSTER_NODES", "redis://h1:7000,redis://h2:7001"),
            ("REDIS_PASSWORD", "pw-secret"),
        ]);
        assert_eq!(c.problem(), None);
        for info in c.cluster_connection_infos().unwrap() {
            assert_eq!(info.redis_settings().password(), Some("pw-secret"));
        }
        assert!(!format!("{c:?}").contains("secret"));
        let c = env(&[
            ("REDIS_CLUSTER_NODES", "redis://h1:7000"),
            ("REDIS_DB", "3"),
        ]);
        assert!(c.problem().unwrap().contains("only database 0"));
    }

    #[test]
    fn a_kubernetes_service_link_is_not_a_port_and_namespaces_are_trimmed() {
        let c = env(&[
            ("REDIS_URL", "redis://cache:6379/0"),
            ("REDIS_PORT", "tcp://10.96.0.5:6379"),
            ("REDCACHE_NAMESPACE", "svc "),
        ]);
        assert_eq!(c.problem(), None);
        assert_eq!(c.redacted_target(), "redis://cache:6379/0");
        assert_eq!(c.namespace(), Some("svc"));
        let c = env(&[("REDIS_PORT", "tcp://10.96.0.5:6379")]);
        assert_eq!(c.problem(), None);
    }

    #[test]
    fn a_number_too_large_is_said_to_be() {
        let c = env(&[("REDCACHE_BREAKER_THRESHOLD", "5000000000")]);
        assert_eq!(
            c.problem().unwrap(),
            "REDCACHE_BREAKER_THRESHOLD=\"5000000000\" is too large"
        );
        let c = env(&[("REDCACHE_BREAKER_THRESHOLD", "-1")]);
        assert!(c
            .problem()
            .unwrap()
            .contains("not a whole non-negative number"));
    }

    #[test]
    fn a_zero_timeout_or_value_size_is_refused() {
        let c = env(&[("REDCACHE_TIMEOUT_MS", "0")]);
        assert!(c.problem().unwrap().contains("REDCACHE_TIMEOUT_MS"));
        let c = env(&[("REDCACHE_MAX_VALUE_BYTES", "0")]);
        assert!(c.problem().unwrap().contains("REDCACHE_MAX_VALUE_BYTES"));
        // No time to store a miss's result: for the in-process store too.
        let c = env(&[("REDCACHE_MAX_FILL_MS", "0")]);
        assert!(c.memory_problem().unwrap().contains("REDCACHE_MAX_FILL_MS"));
        assert!(c.problem().unwrap().contains("REDCACHE_MAX_FILL_MS"));
        assert_eq!(c.usable_in_memory().memory_problem(), None);
        // A local tier with no room: for Redis. The in-process store's sizes are its own.
        let c = env(&[
            ("REDCACHE_LOCAL_CAPACITY", "1000"),
            ("REDCACHE_LOCAL_MAX_BYTES", "0"),
        ]);
        assert!(c.problem().unwrap().contains("REDCACHE_LOCAL_MAX_BYTES"));
        assert_eq!(c.memory_problem(), None);
        let c = env(&[("REDCACHE_LOCAL_MAX_BYTES", "0")]);
        assert_eq!(c.problem(), None, "no local tier");
        for name in ["REDCACHE_MEMORY_CAPACITY", "REDCACHE_MEMORY_MAX_BYTES"] {
            let c = env(&[(name, "0")]);
            assert!(c.memory_problem().unwrap().contains(name));
            assert_eq!(c.problem(), None, "{name}: not used with Redis");
        }
    }

    #[test]
    fn a_capacity_past_any_memory_is_refused() {
        let c = env(&[("REDCACHE_LOCAL_CAPACITY", &usize::MAX.to_string())]);
        assert!(c.problem().unwrap().contains("REDCACHE_LOCAL_CAPACITY"));
        let c = env(&[("REDCACHE_LOCAL_CAPACITY", "100000000")]);
        assert_eq!(c.problem(), None);
    }

    #[test]
    fn a_host_and_a_user_name_are_trimmed() {
        let c = env(&[
            ("REDIS_HOST", " cache \n"),
            ("REDIS_PORT", "6380"),
            ("REDIS_USERNAME", "app "),
            ("REDIS_PASSWORD", "pw"),
        ]);
        let info = c.connection_info().unwrap();
        assert_eq!(info.addr().to_string(), "cache:6380");
        assert_eq!(info.redis_settings().username(), Some("app"));
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
            ("REDCACHE_LOCAL_MAX_BYTES", "4096"),
            ("REDCACHE_MEMORY_CAPACITY", "2000"),
            ("REDCACHE_MEMORY_MAX_BYTES", "1048576"),
            ("REDCACHE_CODEC", "MsgPack"),
            ("REDCACHE_COMPRESS_ABOVE", "2048"),
        ]);
        assert_eq!(c.redacted_target(), "redis://:***@cache:6380/4");
        assert_eq!(c.namespace(), Some("svc"));
        assert_eq!(c.default_ttl(), 900);
        assert_eq!(c.default_null_ttl(), 0);
        assert_eq!(c.op_timeout(), Duration::from_millis(75));
        assert_eq!(c.max_fill_time(), Duration::from_secs(5));
        assert!(c.lazy());
        assert_eq!(c.local_capacity(), 500);
        assert_eq!(c.local_max_bytes(), 4096);
        assert_eq!(c.memory_capacity(), 2000);
        assert_eq!(c.memory_max_bytes(), 1 << 20);
        assert_eq!(c.codec(), Codec::MessagePack);
        assert_eq!(c.compress_above(), Some(2048));
        assert!(c.invalid().is_none());
        let info = c.connection_info().unwrap();
        assert_eq!(info.redis_settings().db(), 4);
        assert_eq!(info.redis_settings().password(), Some("hunter2"));
    }

    #[test]
    fn the_in_process_store_refuses_what_it_cannot_use() {
        for (name, value) in [
            ("REDCACHE_MEMORY_CAPACITY", "50k"),
            ("REDCACHE_DEFAULT_TTL", "1h"),
            ("REDCACHE_MAX_VALUE_BYTES", "0"),
            ("REDCACHE_MEMORY_CAPACITY", "1000000000"),
        ] {
            let err = crate::Cache::try_memory_with(env(&[(name, value)])).unwrap_err();
            assert!(
                matches!(err, crate::Error::Config { .. }) && err.to_string().contains(name),
                "{name}={value}: {err}"
            );
        }
        // What only Redis uses is not its concern.
        let c = env(&[("REDCACHE_TIMEOUT_MS", "0"), ("REDIS_DB", "3")]);
        assert!(crate::Cache::try_memory_with(c).is_ok());
        // Taken anyway, the capacity is bounded.
        let c = env(&[("REDCACHE_MEMORY_CAPACITY", "1000000000")]);
        assert_eq!(c.memory_entries(), 100_000_000);
    }

    #[test]
    fn what_cannot_be_used_is_refused_not_ignored() {
        // Not UTF-8: refused, not taken for unset.
        let c = Config::from_vars(|name| match name {
            "REDCACHE_NAMESPACE" => Err(std::env::VarError::NotUnicode(std::ffi::OsString::from(
                "shop",
            ))),
            _ => Err(std::env::VarError::NotPresent),
        });
        assert_eq!(c.invalid(), Some("REDCACHE_NAMESPACE is not valid UTF-8"));
        assert!(env(&[("REDIS_DB", "-1")])
            .invalid()
            .unwrap()
            .contains("REDIS_DB"));
        let c = Config::builder().db(-1).build();
        assert!(c.problem().unwrap().contains("negative"));
        let c = Config::builder().connect_timeout(Duration::ZERO).build();
        assert!(c.problem().unwrap().contains("REDCACHE_CONNECT_TIMEOUT_MS"));
        let c = env(&[("REDCACHE_CONNECT_TIMEOUT_MS", "0")]);
        assert!(c.problem().unwrap().contains("connect timeout"));
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
        let c = env(&[("REDCACHE_CODEC", "bson")]);
        assert_eq!(
            c.invalid(),
            Some(r#"REDCACHE_CODEC="bson" is not json or msgpack"#)
        );
    }

    #[test]
    fn a_format_this_build_cannot_write_is_refused() {
        let c = env(&[("REDCACHE_CODEC", "msgpack")]);
        assert_eq!(c.problem().is_some(), !cfg!(feature = "msgpack"));
        let c = env(&[("REDCACHE_COMPRESS_ABOVE", "1024")]);
        let problem = c.problem();
        assert_eq!(problem.is_some(), !cfg!(feature = "compression"));
        if let Some(problem) = problem {
            assert!(problem.contains("`compression` feature"), "{problem}");
        }
    }

    /// The in-process store refuses such a format too (`try_memory_with`), and
    /// `memory_with` goes on in JSON, uncompressed, rather than failing every value.
    #[tokio::test]
    async fn the_memory_store_goes_on_without_a_format_this_build_lacks() {
        let configs = [
            crate::Config::builder()
                .codec(crate::Codec::MessagePack)
                .build(),
            crate::Config::builder().compress_above(16).build(),
        ];
        let lacking = [!cfg!(feature = "msgpack"), !cfg!(feature = "compression")];
        for (config, lacks) in configs.into_iter().zip(lacking) {
            let refused = crate::Cache::try_memory_with(config.clone());
            assert_eq!(refused.is_err(), lacks, "{config:?}");
            let cache = crate::Cache::memory_with(config);
            let value = "a value long enough to be compressed".repeat(4);
            let ttl = std::time::Duration::from_secs(60);
            cache.set("k", &value, ttl).await.unwrap();
            assert_eq!(cache.get::<String>("k").await.unwrap(), Some(value));
        }
    }

    #[test]
    fn sentinel_from_the_environment() {
        let c = env(&[
            (
                "REDIS_SENTINEL_NODES",
                "redis://:sentinel-secret@s1:26379, redis://:sentinel-secret@s2:26379,",
            ),
            ("REDIS_SENTINEL_MASTER", " mymaster "),
            ("REDIS_PASSWORD", "master-secret"),
            ("REDIS_DB", "2"),
        ]);
        assert_eq!(c.problem(), None);
        assert!(c.is_sentinel());
        let s = c.sentinel_settings().unwrap();
        assert_eq!(s.master, "mymaster");
        assert_eq!(s.nodes.len(), 2);
        assert_eq!(s.password.as_deref(), Some("sentinel-secret"));
        assert_eq!(s.data.password(), Some("master-secret"));
        assert_eq!(s.data.db(), 2);
        let shown = format!("{c:?} {}", c.redacted_target());
        assert!(!shown.contains("secret"), "{shown}");
        // Both or neither.
        let c = env(&[("REDIS_SENTINEL_NODES", "redis://s1:26379")]);
        assert!(c.problem().unwrap().contains("REDIS_SENTINEL_MASTER"));
        let c = env(&[("REDIS_SENTINEL_MASTER", "mymaster")]);
        assert!(c.problem().unwrap().contains("REDIS_SENTINEL_NODES"));
        // And the one way to name the server.
        let c = env(&[
            ("REDIS_SENTINEL_NODES", "redis://s1:26379"),
            ("REDIS_SENTINEL_MASTER", "mymaster"),
            ("REDIS_URL", "redis://h:1"),
        ]);
        let problem = c.problem().unwrap();
        assert!(
            problem.contains("REDIS_URL") && problem.contains("REDIS_SENTINEL_NODES"),
            "{problem}"
        );
    }

    #[test]
    fn replica_reads_from_the_environment_need_sentinel_and_no_local_tier() {
        let sentinel = [
            ("REDIS_SENTINEL_NODES", "redis://s1:26379"),
            ("REDIS_SENTINEL_MASTER", "mymaster"),
        ];
        let c = env(&[
            sentinel[0],
            sentinel[1],
            ("REDIS_READ_FROM_REPLICAS", "true"),
        ]);
        assert_eq!(c.problem(), None);
        assert!(c.read_from_replicas());
        assert!(!env(&sentinel).read_from_replicas(), "off by default");
        let c = env(&[("REDIS_READ_FROM_REPLICAS", "maybe")]);
        assert_eq!(
            c.invalid(),
            Some(r#"REDIS_READ_FROM_REPLICAS="maybe" is not true or false"#)
        );
        // Without Sentinel: no replica to read from.
        let c = env(&[
            ("REDIS_URL", "redis://h:1"),
            ("REDIS_READ_FROM_REPLICAS", "yes"),
        ]);
        let problem = c.problem().unwrap();
        assert!(
            problem.contains("REDIS_READ_FROM_REPLICAS")
                && problem.contains("REDIS_SENTINEL_NODES"),
            "{problem}"
        );
        // With a local tier: one or the other.
        let c = env(&[
            sentinel[0],
            sentinel[1],
            ("REDIS_READ_FROM_REPLICAS", "1"),
            ("REDCACHE_LOCAL_CAPACITY", "100"),
        ]);
        let problem = c.problem().unwrap();
        assert!(problem.contains("REDCACHE_LOCAL_CAPACITY"), "{problem}");
        // Off is no problem anywhere.
        let c = env(&[
            ("REDIS_URL", "redis://h:1"),
            ("REDIS_READ_FROM_REPLICAS", "off"),
        ]);
        assert_eq!(c.problem(), None);
    }

    #[test]
    fn cluster_nodes_from_the_environment() {
        let c = env(&[(
            "REDIS_CLUSTER_NODES",
            "redis://:pw-secret@h1:7000, redis://h2:7001,",
        )]);
        assert!(c.is_cluster());
        assert_eq!(
            c.redacted_target(),
            "cluster redis://:***@h1:7000,redis://h2:7001"
        );
        assert_eq!(c.cluster_connection_infos().unwrap().len(), 2);
        assert!(!format!("{c:?}").contains("secret"));
    }
}
