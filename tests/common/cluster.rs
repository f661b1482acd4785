//! A local Redis Cluster per test: `redis-server --cluster-enabled yes` nodes joined with
//! `redis-cli --cluster create`, and what the cluster tests ask of it (slot owners, node
//! ids, keys per master).

use super::server::{cli, cli_binary, RedisServer, Tls};
use super::test_config;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The nodes' `cluster-node-timeout` (ms): a failed master is noticed, and its replica
/// promoted, within a few seconds.
const NODE_TIMEOUT_MS: &str = "1000";

/// Their node timeout while they join (ms): how long a node may stall then.
const JOIN_NODE_TIMEOUT_MS: &str = "10000";

/// How long `redis-cli --cluster create` may take: about a second when the nodes join.
const CREATE_TIMEOUT: Duration = Duration::from_secs(30);

/// How many sets of nodes are tried before a cluster is given up.
const CREATE_TRIES: u32 = 3;

/// A local Redis Cluster for one test: `masters` masters with `replicas` replicas each,
/// `redis-server --cluster-enabled yes` processes on free loopback ports joined with
/// `redis-cli --cluster create`, stopped when the test ends.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
    /// Every node's `requirepass` (and `masterauth`), if set.
    password: Option<String>,
    /// For a TLS-only cluster: a file with the authority, for `redis-cli`.
    ca_file: Option<PathBuf>,
}

impl RedisCluster {
    pub fn start(masters: usize, replicas: usize) -> Self {
        Self::start_inner(masters, replicas, None, None)
    }

    /// A cluster whose nodes require `password` (clients and replicas alike).
    pub fn start_with_password(masters: usize, replicas: usize, password: &str) -> Self {
        Self::start_inner(masters, replicas, Some(password), None)
    }

    /// A cluster that speaks TLS only: to clients, on its bus and for replication.
    pub fn start_tls(masters: usize, replicas: usize, tls: &Tls<'_>) -> Self {
        assert!(tls.ca.is_some(), "a TLS cluster needs the authority");
        Self::start_inner(masters, replicas, None, Some(tls))
    }

    fn start_inner(
        masters: usize,
        replicas: usize,
        password: Option<&str>,
        tls: Option<&Tls<'_>>,
    ) -> Self {
        // A node that times out its bus handshake with another (after the node timeout, at
        // least 1 s: a node stalled that long on a busy machine) is left out of the
        // cluster for good, and `--cluster create` then waits for it forever (seen on Redis
        // 7.0 and Valkey 8.0). The nodes join with a 10 s node timeout, then run with the
        // 1 s the failover tests need; a try that still fails is made again with new nodes.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let cluster = Self::launch(masters, replicas, password, tls);
            cluster.set_node_timeout(JOIN_NODE_TIMEOUT_MS);
            match cluster.create(replicas) {
                Ok(()) => {
                    cluster.wait_until_ok();
                    cluster.set_node_timeout(NODE_TIMEOUT_MS);
                    return cluster;
                }
                Err(said) if attempt < CREATE_TRIES => {
                    eprintln!("the cluster's nodes did not join (try {attempt}), again:\n{said}");
                }
                Err(said) => {
                    panic!("the cluster's nodes did not join in {CREATE_TRIES} tries:\n{said}")
                }
            }
        }
    }

    /// `masters * (1 + replicas)` cluster-enabled nodes, not yet joined.
    fn launch(
        masters: usize,
        replicas: usize,
        password: Option<&str>,
        tls: Option<&Tls<'_>>,
    ) -> Self {
        let auth: Vec<&str> = match password {
            Some(pw) => vec!["--requirepass", pw, "--masterauth", pw],
            None => vec![],
        };
        let nodes: Vec<RedisServer> = (0..masters * (1 + replicas))
            .map(|_| Self::node(&auth, tls))
            .collect();
        let ca_file = tls.and_then(|t| t.ca).map(|ca| {
            let file = nodes[0].dir.join("cli-ca.crt");
            std::fs::write(&file, ca).unwrap();
            file
        });
        RedisCluster {
            nodes,
            password: password.map(str::to_owned),
            ca_file,
        }
    }

    /// One cluster-enabled node, not yet joined.
    fn node(auth: &[&str], tls: Option<&Tls<'_>>) -> RedisServer {
        let mut args = vec![
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            NODE_TIMEOUT_MS,
            // Slots of a failed master are refused, the others still served.
            "--cluster-require-full-coverage",
            "no",
            // Replicas sync at once (a failover needs a synced replica).
            "--repl-diskless-sync-delay",
            "0",
        ];
        args.extend(auth);
        RedisServer::start_inner(&args, tls)
    }

    /// Starts one more master, serving no slot yet, and joins it to the cluster (of no
    /// password or TLS): its index in `nodes`, once every node knows it.
    pub fn add_master(&mut self) -> usize {
        assert!(self.password.is_none() && self.ca_file.is_none());
        let node = Self::node(&[], None);
        let port = node.port().to_string();
        let met = self.cli(
            self.nodes[0].port(),
            &["CLUSTER", "MEET", "127.0.0.1", &port],
        );
        assert_eq!(met.trim(), "OK", "CLUSTER MEET");
        self.nodes.push(node);
        let new = self.nodes.len() - 1;
        let id = self.node_id(new);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let known = self.nodes.iter().all(|node| {
                let view = self.cli(node.port(), &["CLUSTER", "NODES"]);
                // The link state is the eighth field (`connected` or `disconnected`).
                let linked = |l: &&str| l.split_whitespace().nth(7) == Some("connected");
                view.lines().filter(linked).count() == self.nodes.len()
                    && view.contains(&id)
                    && !view.contains("handshake")
            });
            if known {
                self.wait_until_ok();
                return new;
            }
            assert!(Instant::now() < deadline, "the new master did not join");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sets every node's `cluster-node-timeout` (milliseconds).
    fn set_node_timeout(&self, ms: &str) {
        for node in &self.nodes {
            let said = self.cli(node.port(), &["CONFIG", "SET", "cluster-node-timeout", ms]);
            assert_eq!(said.trim(), "OK", "CONFIG SET cluster-node-timeout {ms}");
        }
    }

    /// Joins the nodes with `redis-cli --cluster create`, `replicas` replicas per master.
    /// What the cli printed, and each node's view of the cluster, if the nodes did not
    /// agree within [`CREATE_TIMEOUT`].
    fn create(&self, replicas: usize) -> Result<(), String> {
        let mut create = Command::new(cli_binary());
        if let Some(pw) = &self.password {
            create.args(["-a", pw, "--no-auth-warning"]);
        }
        if let Some(file) = &self.ca_file {
            create.arg("--tls").arg("--cacert").arg(file);
        }
        create.arg("--cluster").arg("create");
        for node in &self.nodes {
            create.arg(format!("127.0.0.1:{}", node.port()));
        }
        // Its output goes to a file: nothing reads a pipe while it runs.
        let log = self.nodes[0].dir.join("cluster-create.log");
        let out = std::fs::File::create(&log).expect("create the cli's log file");
        let mut child = create
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("duplicate the log file handle"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|err| {
                panic!("run `{}` (it comes with redis-server): {err}", cli_binary())
            });
        let said = || std::fs::read_to_string(&log).unwrap_or_default();
        let deadline = Instant::now() + CREATE_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("wait for the cli") {
                assert!(
                    status.success(),
                    "redis-cli --cluster create failed:\n{}",
                    said()
                );
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                let mut said = said();
                for node in &self.nodes {
                    let view = self.cli(node.port(), &["CLUSTER", "NODES"]);
                    said.push_str(&format!("CLUSTER NODES at {}:\n{view}", node.port()));
                }
                return Err(said);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `redis-cli` against one node, with the cluster's password and TLS.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        let mut all: Vec<&str> = Vec::new();
        if let Some(pw) = &self.password {
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

    /// Waits until every running node reports the cluster healthy, and every replica is
    /// in sync with its master.
    pub fn wait_until_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let running: Vec<&RedisServer> = self.nodes.iter().filter(|n| n.is_running()).collect();
        loop {
            let ok = running.iter().all(|node| {
                let info = self.cli(node.port(), &["CLUSTER", "INFO"]);
                let replication = self.cli(node.port(), &["INFO", "replication"]);
                let synced = replication.contains("role:master")
                    || replication.contains("master_link_status:up");
                info.contains("cluster_state:ok")
                    && info.contains("cluster_slots_ok:16384")
                    && synced
            });
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not become healthy"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn urls(&self) -> Vec<String> {
        let auth = self
            .password
            .as_ref()
            .map_or(String::new(), |pw| format!(":{pw}@"));
        let scheme = if self.ca_file.is_some() {
            "rediss"
        } else {
            "redis"
        };
        self.nodes
            .iter()
            .map(|n| format!("{scheme}://{auth}127.0.0.1:{}", n.port()))
            .collect()
    }

    pub async fn cache(&self) -> redcache::Cache {
        self.cache_with(test_config()).await
    }

    pub async fn cache_with(&self, config: redcache::ConfigBuilder) -> redcache::Cache {
        redcache::Cache::connect(config.cluster_nodes(self.urls()).build())
            .await
            .expect("connect the cache to the test cluster")
    }

    /// A plain cluster connection for looking at what the cache wrote.
    pub async fn conn(&self) -> redis::cluster_async::ClusterConnection {
        redis::cluster::ClusterClient::new(self.urls())
            .unwrap()
            .get_async_connection()
            .await
            .expect("connect to the test cluster")
    }

    /// The node that serves `key` now (a master).
    pub fn owner_of(&self, key: &str) -> usize {
        self.try_owner_of(key)
            .unwrap_or_else(|| panic!("no master serves {key}"))
    }

    /// The node that serves `key` now, if any (none during a failover).
    pub fn try_owner_of(&self, key: &str) -> Option<usize> {
        let slot: u16 = self
            .cli(self.running_port(), &["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .unwrap();
        let nodes = self.cli(self.running_port(), &["CLUSTER", "NODES"]);
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if !fields[2].contains("master") || fields[2].contains("fail") {
                continue;
            }
            let port: u16 = fields[1]
                .split('@')
                .next()
                .unwrap()
                .rsplit_once(':')
                .unwrap()
                .1
                .parse()
                .unwrap();
            for range in &fields[8..] {
                let (lo, hi) = match range.split_once('-') {
                    Some((lo, hi)) => (lo.parse::<u16>().unwrap(), hi.parse::<u16>().unwrap()),
                    None => match range.parse::<u16>() {
                        Ok(s) => (s, s),
                        Err(_) => continue, // an importing/migrating marker
                    },
                };
                if (lo..=hi).contains(&slot) {
                    return self.nodes.iter().position(|n| n.port() == port);
                }
            }
        }
        None
    }

    /// Starts moving `key`'s slot from master `from` to master `to`, the way `redis-cli
    /// --cluster reshard` does (IMPORTING, then MIGRATING): the slot.
    pub fn start_moving(&self, key: &str, from: usize, to: usize) -> String {
        let slot = self
            .cli(self.nodes[0].port(), &["CLUSTER", "KEYSLOT", key])
            .trim()
            .to_string();
        let (from_id, to_id) = (self.node_id(from), self.node_id(to));
        let imported = self.cli(
            self.nodes[to].port(),
            &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id],
        );
        assert!(imported.contains("OK"), "SETSLOT IMPORTING: {imported}");
        let migrating = self.cli(
            self.nodes[from].port(),
            &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id],
        );
        assert!(migrating.contains("OK"), "SETSLOT MIGRATING: {migrating}");
        slot
    }

    /// Moves `key` from master `from` to master `to` mid-move (`MIGRATE`).
    pub fn migrate(&self, key: &str, from: usize, to: usize) {
        let to_port = self.nodes[to].port().to_string();
        let moved = self.cli(
            self.nodes[from].port(),
            &["MIGRATE", "127.0.0.1", &to_port, key, "0", "5000"],
        );
        assert!(moved.contains("OK"), "MIGRATE: {moved}");
    }

    /// Ends a slot's move: every node says master `to` serves it.
    pub fn finish_moving(&self, slot: &str, to: usize) {
        let to_id = self.node_id(to);
        for node in &self.nodes {
            self.cli(node.port(), &["CLUSTER", "SETSLOT", slot, "NODE", &to_id]);
        }
    }

    /// The node id of node `i`.
    pub fn node_id(&self, i: usize) -> String {
        cli(self.nodes[i].port(), &["CLUSTER", "MYID"])
            .trim()
            .to_string()
    }

    /// Keys held by each running master (replicas are not counted).
    pub fn keys_per_master(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| n.is_running())
            .filter(|n| self.cli(n.port(), &["ROLE"]).starts_with("master"))
            .map(|n| self.cli(n.port(), &["DBSIZE"]).trim().parse().unwrap())
            .collect()
    }

    fn running_port(&self) -> u16 {
        self.nodes
            .iter()
            .find(|n| n.is_running())
            .expect("a running node")
            .port()
    }
}
