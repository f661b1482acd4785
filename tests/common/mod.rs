//! Test harness of the behaviour tests: each test starts its own Redis (a `redis-server`,
//! a local Redis Cluster, or a primary with a replica and three Sentinels, on free loopback
//! ports) and stops it when it ends, and [`on_both_stores!`] runs one behaviour on a
//! server, a cluster, a master behind Sentinel and the memory store.
//!
//! One concern per file, re-exported here so tests write `common::RedisServer`:
//! - `server.rs`: [`RedisServer`] (free ports, signals, `redis-cli`);
//! - `cluster.rs`: [`RedisCluster`];
//! - `sentinel.rs`: [`RedisSentinel`];
//! - `process.rs`: child processes of multi-process tests;
//! - `commands.rs`: SLOWLOG and `INFO commandstats`, what the server ran;
//! - `forward.rs`: [`Forwarder`], an address a failover can move;
//! - `postgres.rs`: [`Postgres`], a private PostgreSQL for the example service's test.
#![allow(dead_code, unreachable_pub)]

mod cluster;
mod commands;
mod forward;
mod postgres;
mod process;
mod sentinel;
mod server;

// Each test binary uses part of the harness (hence `dead_code` above too).
#[allow(unused_imports)]
pub use cluster::RedisCluster;
#[allow(unused_imports)]
pub use commands::{
    command_calls, commands_logged, log_commands, log_commands_slower_than, Logged,
};
#[allow(unused_imports)]
pub use forward::Forwarder;
#[allow(unused_imports)]
pub use postgres::Postgres;
#[allow(unused_imports)]
pub use process::{child_conn, child_succeeded, child_url, spawn_child};
#[allow(unused_imports)]
pub use sentinel::{RedisSentinel, DOWN_AFTER, MASTER_NAME};
#[allow(unused_imports)]
pub use server::{cli, RedisServer, Tls};

use md5::{Digest, Md5};
use std::time::Duration;

/// The configuration tests start from: generous timeouts so a loaded CI machine does not
/// trip them, except where a test sets its own.
/// The `ACL SETUSER` arguments for a user `app` (password `pw`) that may run everything but
/// `CLIENT CACHING`: as Redis 7 and Valkey take them or, `for_6_2`, as Redis 6.2 must (it
/// takes no `-` for one subcommand: all of `CLIENT` but what a connection's set-up and the
/// local tier's heartbeat need), for a server that refuses the first.
pub fn no_caching_user(for_6_2: bool) -> Vec<&'static str> {
    let mut args = vec!["SETUSER", "app", "on", ">pw", "~*", "+@all"];
    match for_6_2 {
        false => args.push("-client|caching"),
        true => args.extend(["-client", "+client|tracking", "+client|id"]),
    }
    args
}

pub fn test_config() -> redcache::ConfigBuilder {
    redcache::Config::builder()
        .op_timeout(Duration::from_secs(2))
        .connect_timeout(Duration::from_secs(5))
}

/// The key the documentation promises: `[{namespace}:]{prefix}:{md5 of material}`,
/// computed here independently of the runtime.
pub fn expected_key(prefix: &str, material: &str) -> String {
    expected_key_of(prefix, material.as_bytes())
}

/// [`expected_key`] of material that is not text (see [`named`]).
#[allow(dead_code)]
pub fn expected_key_of(prefix: &str, material: &[u8]) -> String {
    let digest = Md5::digest(material);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}:{hex}")
}

/// The key material of arguments `json` with `names` before it, as a generic function
/// (`b't'`, a type parameter's name) or a function in an impl (`b'i'`, the impl) writes
/// them: each a zero byte, its kind, its length (u64, little-endian) and its bytes, then a
/// zero byte.
#[allow(dead_code)]
pub fn named(names: &[(u8, &str)], json: &str) -> Vec<u8> {
    let mut material = Vec::new();
    for (kind, name) in names {
        material.push(0);
        material.push(*kind);
        material.extend_from_slice(&(name.len() as u64).to_le_bytes());
        material.extend_from_slice(name.as_bytes());
    }
    material.push(0);
    material.extend_from_slice(json.as_bytes());
    material
}

/// Whether `raw` is the tombstone an invalidation leaves (`{"v":1,"gone":<id>}`).
pub fn is_tombstone(raw: &[u8]) -> bool {
    raw.starts_with(br#"{"v":1,"gone":"#)
}

/// Waits (yielding, for up to 10 s) until `n` calls of `cache` wait on another call's
/// flight: the barrier of tests whose callers must have joined a flight, where a sleep would
/// let a late caller lead a flight of its own and the test pass without the behaviour.
pub async fn until_waiting(cache: &redcache::Cache, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while cache.flight_waiters() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {n} callers joined the flight",
            cache.flight_waiters()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Where a behaviour test runs: a real Redis, a real Redis Cluster, a real master behind
/// Sentinel, or the in-memory store.
pub struct Backend {
    pub server: Option<RedisServer>,
    pub cluster: Option<RedisCluster>,
    pub sentinel: Option<RedisSentinel>,
    pub cache: redcache::Cache,
}

impl Backend {
    pub async fn redis() -> Self {
        let server = RedisServer::start();
        let cache = server.cache().await;
        Backend {
            server: Some(server),
            cluster: None,
            sentinel: None,
            cache,
        }
    }

    pub async fn cluster() -> Self {
        let cluster = RedisCluster::start(3, 0);
        let cache = cluster.cache().await;
        Backend {
            server: None,
            cluster: Some(cluster),
            sentinel: None,
            cache,
        }
    }

    pub async fn sentinel() -> Self {
        let sentinel = RedisSentinel::start();
        let cache = sentinel.cache().await;
        Backend {
            server: None,
            cluster: None,
            sentinel: Some(sentinel),
            cache,
        }
    }

    pub fn memory() -> Self {
        Backend {
            server: None,
            cluster: None,
            sentinel: None,
            cache: redcache::Cache::memory_with(test_config().build()),
        }
    }

    /// Whether entries are in Redis (a server, a cluster or a master behind Sentinel),
    /// where raw commands reach them.
    pub fn is_redis(&self) -> bool {
        self.server.is_some() || self.cluster.is_some() || self.sentinel.is_some()
    }

    /// `config` pointed at this store's Redis (left as it is for the memory store).
    pub fn configure(&self, config: redcache::ConfigBuilder) -> redcache::ConfigBuilder {
        match (&self.server, &self.cluster, &self.sentinel) {
            (Some(server), _, _) => config.url(server.url()),
            (_, Some(cluster), _) => config.cluster_nodes(cluster.urls()),
            (_, _, Some(sentinel)) => sentinel.configure(config),
            _ => config,
        }
    }

    /// Another cache on the same store, with `config` (whose address is replaced).
    pub async fn cache_with(&self, config: redcache::ConfigBuilder) -> redcache::Cache {
        let config = self.configure(config).build();
        if !self.is_redis() {
            return redcache::Cache::memory_with(config);
        }
        redcache::Cache::connect(config)
            .await
            .unwrap_or_else(|err| panic!("connect another cache to {}: {err}", self.name()))
    }

    /// Runs a raw command against the store's Redis (a server, the cluster, or the master
    /// behind Sentinel).
    pub async fn raw<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        match (&self.server, &self.cluster, &self.sentinel) {
            (Some(server), _, _) => cmd.query_async(&mut server.conn().await).await.unwrap(),
            (_, Some(cluster), _) => cmd.query_async(&mut cluster.conn().await).await.unwrap(),
            (_, _, Some(sentinel)) => cmd.query_async(&mut sentinel.conn().await).await.unwrap(),
            _ => panic!("raw access needs Redis"),
        }
    }

    /// TTL in whole seconds as Redis's own `TTL` reports it; on the memory store, the
    /// entry's own time left (`Cache::ttl`, which counts no stale window), rounded the same
    /// way; `None` when there is no entry (a tombstone left by an invalidation is none).
    pub async fn ttl_secs(&self, key: &str) -> Option<u64> {
        if !self.is_redis() {
            return self
                .cache
                .ttl(key)
                .await
                .unwrap()
                .map(|d| (d.as_millis() as u64 + 500) / 1000);
        }
        let raw: Option<Vec<u8>> = self.raw(redis::cmd("GET").arg(key)).await;
        if raw.is_some_and(|raw| is_tombstone(&raw)) {
            return None;
        }
        let ttl: i64 = self.raw(redis::cmd("TTL").arg(key)).await;
        assert_ne!(ttl, -1, "{key} has no expiry");
        (ttl >= 0).then_some(ttl as u64)
    }

    pub async fn exists(&self, key: &str) -> bool {
        self.ttl_secs(key).await.is_some()
    }

    /// The raw bytes stored at `key` (Redis only).
    pub async fn raw_get(&self, key: &str) -> Option<Vec<u8>> {
        self.raw(redis::cmd("GET").arg(key)).await
    }

    pub fn name(&self) -> &'static str {
        match (&self.server, &self.cluster, &self.sentinel) {
            (Some(_), _, _) => "redis",
            (_, Some(_), _) => "cluster",
            (_, _, Some(_)) => "sentinel",
            _ => "memory",
        }
    }
}

/// Declares a behaviour test that runs on a real Redis, on a real Redis Cluster, on a real
/// master behind Sentinel and on the memory store.
#[macro_export]
macro_rules! on_both_stores {
    ($(#[$meta:meta])* async fn $name:ident($backend:ident: Backend) $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn run($backend: $crate::common::Backend) $body

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            $(#[$meta])*
            async fn redis() {
                run($crate::common::Backend::redis().await).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            $(#[$meta])*
            async fn cluster() {
                run($crate::common::Backend::cluster().await).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            $(#[$meta])*
            async fn sentinel() {
                run($crate::common::Backend::sentinel().await).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            $(#[$meta])*
            async fn memory() {
                run($crate::common::Backend::memory()).await
            }
        }
    };
}
