//! Redis Sentinel per test: a primary, one replica (`--replicaof`) and three Sentinels
//! (`redis-server <conf> --sentinel`, quorum 2, a master down after 1 s, failover timeout
//! 3 s), each on a free loopback port, all stopped and their directories removed when the
//! test ends.

use super::server::{cli, RedisServer, Tls};
use super::test_config;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The name the Sentinels monitor the master by.
pub const MASTER_NAME: &str = "redcache";

/// How long the Sentinels wait before they call an unanswering master down.
pub const DOWN_AFTER: Duration = Duration::from_millis(1000);

/// A primary, one replica and three Sentinels for one test.
pub struct RedisSentinel {
    /// The primary the Sentinels were first told of, then its replica; after a failover
    /// the replica is the master (see [`RedisSentinel::master_port`]).
    pub nodes: Vec<RedisServer>,
    pub sentinels: Vec<RedisServer>,
    /// The data nodes' `requirepass` (and `masterauth`, and the Sentinels' `auth-pass`).
    password: Option<String>,
    /// The Sentinels' own `requirepass`.
    sentinel_password: Option<String>,
    /// For TLS-only nodes and Sentinels: a file with the authority, for `redis-cli`.
    ca_file: Option<PathBuf>,
}

impl RedisSentinel {
    pub fn start() -> Self {
        Self::start_inner(None, None, None)
    }

    /// Data nodes that require `password` (clients, the replica and the Sentinels alike),
    /// and Sentinels that require `sentinel_password`.
    pub fn start_with_passwords(password: Option<&str>, sentinel_password: Option<&str>) -> Self {
        Self::start_inner(password, sentinel_password, None)
    }

    /// Data nodes and Sentinels that speak TLS only: to clients, for replication and
    /// among the Sentinels.
    pub fn start_tls(tls: &Tls<'_>) -> Self {
        assert!(tls.ca.is_some(), "TLS replication needs the authority");
        Self::start_inner(None, None, Some(tls))
    }

    fn start_inner(
        password: Option<&str>,
        sentinel_password: Option<&str>,
        tls: Option<&Tls<'_>>,
    ) -> Self {
        let mut data_args = vec![
            // The replica syncs at once rather than after the default 5 s.
            "--repl-diskless-sync-delay",
            "0",
        ];
        if let Some(pw) = password {
            data_args.extend(["--requirepass", pw, "--masterauth", pw]);
        }
        let primary = RedisServer::start_inner(&data_args, tls);
        let primary_port = primary.port().to_string();
        let mut replica_args = data_args.clone();
        replica_args.extend(["--replicaof", "127.0.0.1", &primary_port]);
        let replica = RedisServer::start_inner(&replica_args, tls);
        let ca_file = tls.and_then(|t| t.ca).map(|ca| {
            let file = primary.dir.join("cli-ca.crt");
            std::fs::write(&file, ca).unwrap();
            file
        });
        let mut this = RedisSentinel {
            nodes: vec![primary, replica],
            sentinels: Vec::new(),
            password: password.map(str::to_owned),
            sentinel_password: sentinel_password.map(str::to_owned),
            ca_file,
        };
        // The Sentinels learn of the replica from the primary's INFO, which they read as
        // soon as they connect: start them once it is attached.
        this.wait_until(Duration::from_secs(10), "the replica synced", |s| {
            s.data_cli(s.nodes[1].port(), &["INFO", "replication"])
                .contains("master_link_status:up")
        });
        let mut conf = format!(
            "sentinel monitor {MASTER_NAME} 127.0.0.1 {primary_port} 2\n\
             sentinel down-after-milliseconds {MASTER_NAME} {}\n\
             sentinel failover-timeout {MASTER_NAME} 3000\n\
             sentinel parallel-syncs {MASTER_NAME} 1\n",
            DOWN_AFTER.as_millis()
        );
        if let Some(pw) = password {
            conf.push_str(&format!("sentinel auth-pass {MASTER_NAME} {pw}\n"));
        }
        if let Some(pw) = sentinel_password {
            // Also what a Sentinel authenticates to the others with.
            conf.push_str(&format!("requirepass {pw}\n"));
        }
        this.sentinels = (0..3)
            .map(|_| RedisServer::start_sentinel(&conf, tls))
            .collect();
        this
    }

    /// Starts a fourth Sentinel that watches the same master but never hears of a switch:
    /// it logs into the data nodes as an ACL user with no channels (so it neither hears
    /// nor sends the Sentinels' hello messages, which carry a switch) and without
    /// `REPLICAOF` (so it cannot reconfigure a node to its stale view). It stays with the
    /// master it was started on, as a Sentinel cut off from the others does. Its port.
    pub fn start_lagging_sentinel(&mut self) -> RedisServer {
        assert!(
            self.password.is_none() && self.ca_file.is_none(),
            "plain data nodes only"
        );
        for node in &self.nodes {
            let reply = self.data_cli(
                node.port(),
                &[
                    "ACL",
                    "SETUSER",
                    "lagging",
                    "on",
                    ">lagging",
                    "~*",
                    "resetchannels",
                    "+@all",
                    "-replicaof",
                    "-slaveof",
                ],
            );
            assert!(reply.contains("OK"), "ACL SETUSER: {reply}");
        }
        let conf = format!(
            "sentinel monitor {MASTER_NAME} 127.0.0.1 {} 2\n\
             sentinel auth-user {MASTER_NAME} lagging\n\
             sentinel auth-pass {MASTER_NAME} lagging\n\
             sentinel down-after-milliseconds {MASTER_NAME} 60000\n",
            self.master_port()
        );
        RedisServer::start_sentinel(&conf, None)
    }

    /// The Sentinels' URLs, with their password.
    pub fn urls(&self) -> Vec<String> {
        let auth = self
            .sentinel_password
            .as_ref()
            .map_or(String::new(), |pw| format!(":{pw}@"));
        let scheme = if self.ca_file.is_some() {
            "rediss"
        } else {
            "redis"
        };
        self.sentinels
            .iter()
            .map(|s| format!("{scheme}://{auth}127.0.0.1:{}", s.port()))
            .collect()
    }

    /// `config` pointed at this master through the Sentinels, with the data nodes'
    /// password.
    pub fn configure(&self, config: redcache::ConfigBuilder) -> redcache::ConfigBuilder {
        let config = config.sentinel(self.urls(), MASTER_NAME);
        match &self.password {
            Some(pw) => config.password(pw),
            None => config,
        }
    }

    pub async fn cache(&self) -> redcache::Cache {
        self.cache_with(test_config()).await
    }

    pub async fn cache_with(&self, config: redcache::ConfigBuilder) -> redcache::Cache {
        redcache::Cache::connect(self.configure(config).build())
            .await
            .expect("connect the cache through the test Sentinels")
    }

    /// `redis-cli` against a Sentinel, with its password.
    pub fn sentinel_cli(&self, port: u16, args: &[&str]) -> String {
        self.cli(port, self.sentinel_password.as_deref(), args)
    }

    /// `redis-cli` against a data node, with its password.
    pub fn data_cli(&self, port: u16, args: &[&str]) -> String {
        self.cli(port, self.password.as_deref(), args)
    }

    fn cli(&self, port: u16, password: Option<&str>, args: &[&str]) -> String {
        let mut all: Vec<&str> = Vec::new();
        if let Some(pw) = password {
            all.extend(["-a", pw, "--no-auth-warning"]);
        }
        let ca;
        if let Some(file) = &self.ca_file {
            ca = file.display().to_string();
            all.extend(["--tls", "--cacert", &ca]);
        }
        all.extend(args);
        cli(port, &all)
    }

    /// The master's port as the first running Sentinel that answers names it
    /// (`SENTINEL get-master-addr-by-name`).
    pub fn master_port(&self) -> u16 {
        for sentinel in self.sentinels.iter().filter(|s| s.is_running()) {
            let reply = self.sentinel_cli(
                sentinel.port(),
                &["SENTINEL", "get-master-addr-by-name", MASTER_NAME],
            );
            if let Some(port) = reply.lines().nth(1).and_then(|p| p.trim().parse().ok()) {
                return port;
            }
        }
        panic!("no Sentinel names the master {MASTER_NAME}");
    }

    /// The data node that is the master now.
    pub fn master(&self) -> &RedisServer {
        let port = self.master_port();
        self.nodes
            .iter()
            .find(|n| n.port() == port)
            .expect("the master is one of the data nodes")
    }

    /// A plain connection to the master now, for looking at what the cache wrote.
    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        self.conn_to(self.master_port()).await
    }

    /// A plain connection to the data node on `port`.
    pub async fn conn_to(&self, port: u16) -> redis::aio::MultiplexedConnection {
        let auth = self
            .password
            .as_ref()
            .map_or(String::new(), |pw| format!(":{pw}@"));
        redis::Client::open(format!("redis://{auth}127.0.0.1:{port}"))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .expect("connect to a test data node")
    }

    /// Waits until a failover can happen: every Sentinel knows the replica and the two
    /// other Sentinels (they find each other through the master, every 2 s).
    pub fn wait_until_ready_for_failover(&self) {
        self.wait_until(
            Duration::from_secs(20),
            "the Sentinels know each other",
            |s| {
                s.sentinels.iter().all(|sentinel| {
                    let port = sentinel.port();
                    let others = s.sentinel_cli(port, &["SENTINEL", "sentinels", MASTER_NAME]);
                    let replicas = s.sentinel_cli(port, &["SENTINEL", "replicas", MASTER_NAME]);
                    others.lines().filter(|l| l.trim() == "runid").count() == 2
                        && replicas.contains(&s.nodes[1].port().to_string())
                })
            },
        );
    }

    /// Waits until every Sentinel lists the replica (they read it from the master's
    /// `INFO` once they connect): from then on, a replica can be found through them.
    pub fn wait_for_replica(&self) {
        let replica = self.nodes[1].port().to_string();
        self.wait_until(
            Duration::from_secs(20),
            "the Sentinels know the replica",
            |s| {
                s.sentinels.iter().all(|sentinel| {
                    s.sentinel_cli(sentinel.port(), &["SENTINEL", "replicas", MASTER_NAME])
                        .contains(&replica)
                })
            },
        );
    }

    /// Waits until the replica on `replica` has applied everything the master on `master`
    /// had sent when this was called: its `INFO replication` offset reaches the
    /// master's.
    pub async fn wait_until_replica_caught_up(&self, master: u16, replica: u16) {
        let offset = |port: u16, fields: &[&str]| -> Option<u64> {
            let info = self.data_cli(port, &["INFO", "replication"]);
            fields.iter().find_map(|field| {
                info.lines()
                    .find_map(|line| line.trim().strip_prefix(field)?.parse().ok())
            })
        };
        let target = offset(master, &["master_repl_offset:"]).expect("the master's offset");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // The offset a replica has applied (`slave_repl_offset`, also under its newer
            // name in servers that have one).
            let applied = offset(replica, &["slave_repl_offset:", "replica_repl_offset:"]);
            if applied.is_some_and(|applied| applied >= target) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the replica did not reach offset {target} within 10 s (at {applied:?})"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until every running Sentinel names a master other than the one on
    /// `old_port`; how long that took (to within the 100 ms between asks: each ask starts
    /// a `redis-cli` per Sentinel, which the calls a test times share the cores with).
    pub async fn wait_for_new_master(&self, old_port: u16, within: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let promoted = self
                .sentinels
                .iter()
                .filter(|s| s.is_running())
                .all(|sentinel| {
                    let reply = self.sentinel_cli(
                        sentinel.port(),
                        &["SENTINEL", "get-master-addr-by-name", MASTER_NAME],
                    );
                    reply
                        .lines()
                        .nth(1)
                        .and_then(|p| p.trim().parse::<u16>().ok())
                        .is_some_and(|p| p != old_port)
                });
            if promoted {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < within,
                "the Sentinels did not promote the replica within {within:?}; the first \
                 Sentinel printed:\n{}",
                self.sentinels[0].log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn wait_until(&self, within: Duration, what: &str, done: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + within;
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "{what}: not within {within:?}; the first Sentinel printed:\n{}",
                self.sentinels
                    .first()
                    .map_or_else(String::new, RedisServer::log_tail)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
