//! Test harness: a real `redis-server` per test, on a free loopback port, with no
//! persistence, stopped (and its directory removed) when the test ends.
#![allow(dead_code, unreachable_pub)]

use md5::{Digest, Md5};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// TLS material for a test server (PEM): its certificate and key, and the authority its
/// peers' certificates chain to (for a cluster's bus and replication).
pub struct Tls<'a> {
    pub cert: &'a str,
    pub key: &'a str,
    pub ca: Option<&'a str>,
}

/// A `redis-server` process owned by one test.
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
    extra: Vec<String>,
    /// Serves TLS only, with the certificate and key in `dir`.
    tls: bool,
}

fn binary() -> String {
    std::env::var("REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".into())
}

/// A free loopback port whose `+ 10000` is free too (a cluster node's bus port).
fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("no free loopback port");
        if port <= u16::MAX - 10_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

impl RedisServer {
    /// Starts a server on a free port.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server with extra `redis-server` arguments (e.g. `["--requirepass", "pw"]`).
    pub fn start_with(extra: &[&str]) -> Self {
        Self::start_inner(extra, None)
    }

    /// Starts a server that speaks TLS only, with this certificate and key (PEM).
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> Self {
        Self::start_inner(
            &[],
            Some(&Tls {
                cert: cert_pem,
                key: key_pem,
                ca: None,
            }),
        )
    }

    fn start_inner(extra: &[&str], tls: Option<&Tls<'_>>) -> Self {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "redcache-test-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create the server's directory");
        let mut extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        if let Some(tls) = tls {
            let (cert_file, key_file) = (dir.join("server.crt"), dir.join("server.key"));
            std::fs::write(&cert_file, tls.cert).unwrap();
            std::fs::write(&key_file, tls.key).unwrap();
            for (flag, file) in [
                ("--tls-cert-file", &cert_file),
                ("--tls-key-file", &key_file),
            ] {
                extra.push(flag.into());
                extra.push(file.display().to_string());
            }
            if let Some(ca) = tls.ca {
                // What the server trusts when it is the client: the cluster bus, replication.
                let ca_file = dir.join("ca.crt");
                std::fs::write(&ca_file, ca).unwrap();
                extra.extend([
                    "--tls-ca-cert-file".into(),
                    ca_file.display().to_string(),
                    "--tls-cluster".into(),
                    "yes".into(),
                    "--tls-replication".into(),
                    "yes".into(),
                ]);
            }
            extra.extend(["--tls-auth-clients".into(), "no".into()]);
        }
        // Another process may take the port between our probe and the server's bind: retry.
        for _ in 0..20 {
            let mut server = RedisServer {
                port: free_port(),
                dir: dir.clone(),
                child: None,
                extra: extra.clone(),
                tls: tls.is_some(),
            };
            if server.spawn() {
                return server;
            }
        }
        panic!("redis-server did not start on any of 20 free ports");
    }

    fn spawn(&mut self) -> bool {
        let mut cmd = Command::new(binary());
        let port = self.port.to_string();
        if self.tls {
            cmd.args(["--port", "0", "--tls-port", &port]);
        } else {
            cmd.args(["--port", &port]);
        }
        cmd.args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            .args(["--loglevel", "warning"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = match cmd.spawn() {
            Ok(child) => child,
            Err(err) => panic!(
                "cannot run `{}` ({err}): install it with `apt-get install -y redis-server`, \
                 or run ./scripts/test, which does",
                binary()
            ),
        };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(child) = &mut self.child {
                if let Ok(Some(_)) = child.try_wait() {
                    self.child = None;
                    return false; // exited: port taken
                }
            }
            if self.answers_ping() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.stop();
        false
    }

    fn answers_ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        if self.tls {
            // Listening is all that can be seen without a TLS client; clients retry.
            return true;
        }
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        let mut reply = [0u8; 64];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read(&mut reply).is_ok_and(|n| {
                let reply = &reply[..n];
                reply.starts_with(b"+PONG") || reply.starts_with(b"-NOAUTH")
            })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server is running").id()
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (its data is gone: nothing persists).
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.spawn() {
            assert!(Instant::now() < deadline, "redis-server did not restart");
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&self) {
        signal(self.pid(), "-STOP");
    }

    /// Thaws a paused server (SIGCONT).
    pub fn resume(&self) {
        signal(self.pid(), "-CONT");
    }

    /// A plain connection for looking at what the cache wrote.
    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .expect("connect to the test redis-server")
    }

    /// A cache on this server with the test configuration.
    pub async fn cache(&self) -> redcache::Cache {
        self.cache_with(test_config().url(self.url())).await
    }

    pub async fn cache_with(&self, config: redcache::ConfigBuilder) -> redcache::Cache {
        redcache::Cache::connect(config.build())
            .await
            .expect("connect the cache to the test redis-server")
    }
}

fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {sig} {pid} failed");
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A paused server cannot exit until it is thawed.
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
        }
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The configuration tests start from: generous timeouts so a loaded CI machine does not
/// trip them, except where a test sets its own.
pub fn test_config() -> redcache::ConfigBuilder {
    redcache::Config::builder()
        .op_timeout(Duration::from_secs(2))
        .connect_timeout(Duration::from_secs(5))
}

/// The key the documentation promises: `[{namespace}:]{prefix}:{md5 of material}`,
/// computed here independently of the runtime.
pub fn expected_key(prefix: &str, material: &str) -> String {
    let digest = Md5::digest(material.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}:{hex}")
}

/// Whether `raw` is the tombstone an invalidation leaves (`{"v":1,"gone":<id>}`).
pub fn is_tombstone(raw: &[u8]) -> bool {
    raw.starts_with(br#"{"v":1,"gone":"#)
}

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
        let auth: Vec<&str> = match password {
            Some(pw) => vec!["--requirepass", pw, "--masterauth", pw],
            None => vec![],
        };
        let nodes: Vec<RedisServer> = (0..masters * (1 + replicas))
            .map(|_| {
                let mut args = vec![
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "1000",
                    // Slots of a failed master are refused, the others still served.
                    "--cluster-require-full-coverage",
                    "no",
                    // Replicas sync at once (a failover needs a synced replica).
                    "--repl-diskless-sync-delay",
                    "0",
                ];
                args.extend(&auth);
                RedisServer::start_inner(&args, tls)
            })
            .collect();
        let ca_file = tls.and_then(|t| t.ca).map(|ca| {
            let file = nodes[0].dir.join("cli-ca.crt");
            std::fs::write(&file, ca).unwrap();
            file
        });
        let mut create = Command::new("redis-cli");
        if let Some(pw) = password {
            create.args(["-a", pw, "--no-auth-warning"]);
        }
        if let Some(file) = &ca_file {
            create.arg("--tls").arg("--cacert").arg(file);
        }
        create.arg("--cluster").arg("create");
        for node in &nodes {
            create.arg(format!("127.0.0.1:{}", node.port()));
        }
        let out = create
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("run redis-cli (it comes with redis-server)");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = RedisCluster {
            nodes,
            password: password.map(str::to_owned),
            ca_file,
        };
        cluster.wait_until_ok();
        cluster
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
        let running: Vec<&RedisServer> = self.nodes.iter().filter(|n| n.child.is_some()).collect();
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
            .filter(|n| n.child.is_some())
            .filter(|n| self.cli(n.port(), &["ROLE"]).starts_with("master"))
            .map(|n| self.cli(n.port(), &["DBSIZE"]).trim().parse().unwrap())
            .collect()
    }

    fn running_port(&self) -> u16 {
        self.nodes
            .iter()
            .find(|n| n.child.is_some())
            .expect("a running node")
            .port()
    }
}

/// Logs every command the server runs from now on (SLOWLOG with no threshold), to read
/// back with [`commands_logged`].
pub async fn log_commands(conn: &mut redis::aio::MultiplexedConnection) {
    for (name, value) in [
        ("slowlog-log-slower-than", "0"),
        ("slowlog-max-len", "1000000"),
    ] {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg(name)
            .arg(value)
            .query_async(conn)
            .await
            .unwrap();
    }
    let _: () = redis::cmd("SLOWLOG")
        .arg("RESET")
        .query_async(conn)
        .await
        .unwrap();
}

/// Like [`log_commands`], but logs only commands that held the server `micros` or more,
/// and resets the per-command call counts that [`command_calls`] reads.
pub async fn log_commands_slower_than(conn: &mut redis::aio::MultiplexedConnection, micros: u64) {
    log_commands(conn).await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("slowlog-log-slower-than")
        .arg(micros)
        .query_async(conn)
        .await
        .unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(conn)
        .await
        .unwrap();
}

/// How many times each command (lower case) ran since the counts were reset, commands run
/// by scripts included, from `INFO commandstats`.
pub async fn command_calls(
    conn: &mut redis::aio::MultiplexedConnection,
) -> std::collections::HashMap<String, u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .filter_map(|line| {
            let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = stats
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_string(), calls))
        })
        .filter(|(name, _)| !matches!(name.as_str(), "info" | "config" | "slowlog"))
        .collect()
}

/// A command the server ran since [`log_commands`]: its name (upper case), its arguments
/// and how long it held the server.
pub struct Logged {
    pub name: String,
    pub args: Vec<String>,
    pub micros: u64,
}

/// The commands logged since [`log_commands`] (commands a script ran inside Redis
/// included), oldest first, without the test's own `SLOWLOG`/`CONFIG`.
pub async fn commands_logged(conn: &mut redis::aio::MultiplexedConnection) -> Vec<Logged> {
    let log: Vec<redis::Value> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(-1)
        .query_async(conn)
        .await
        .unwrap();
    let mut logged: Vec<Logged> = log
        .iter()
        .map(|entry| {
            let redis::Value::Array(fields) = entry else {
                panic!("a slowlog entry is an array")
            };
            let micros = redis::from_redis_value_ref(&fields[2]).unwrap();
            let args: Vec<String> = redis::from_redis_value_ref(&fields[3]).unwrap();
            Logged {
                name: args[0].to_ascii_uppercase(),
                args,
                micros,
            }
        })
        .filter(|c| c.name != "SLOWLOG" && c.name != "CONFIG")
        .collect();
    logged.reverse();
    logged
}

/// A connection for a child process of a multi-process test (`REDCACHE_CHILD_URL`).
pub async fn child_conn() -> redis::aio::MultiplexedConnection {
    redis::Client::open(child_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// The Redis a child process of a multi-process test uses.
pub fn child_url() -> String {
    std::env::var("REDCACHE_CHILD_URL").expect("REDCACHE_CHILD_URL")
}

/// Starts this test binary again as a child process running only the ignored test `test`,
/// against `url`, with `env` set too.
pub fn spawn_child(test: &str, url: &str, env: &[(&str, String)]) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--ignored", "--quiet"])
        .env("REDCACHE_CHILD_URL", url)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for a child process and fails the test, with its output, if it failed.
pub fn child_succeeded(child: Child) {
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "a child process failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `redis-cli -p <port> <args>` and returns what it printed.
pub fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Where a behaviour test runs: a real Redis, a real Redis Cluster, or the in-memory
/// store.
pub struct Backend {
    pub server: Option<RedisServer>,
    pub cluster: Option<RedisCluster>,
    pub cache: redcache::Cache,
}

impl Backend {
    pub async fn redis() -> Self {
        let server = RedisServer::start();
        let cache = server.cache().await;
        Backend {
            server: Some(server),
            cluster: None,
            cache,
        }
    }

    pub async fn cluster() -> Self {
        let cluster = RedisCluster::start(3, 0);
        let cache = cluster.cache().await;
        Backend {
            server: None,
            cluster: Some(cluster),
            cache,
        }
    }

    pub fn memory() -> Self {
        Backend {
            server: None,
            cluster: None,
            cache: redcache::Cache::memory_with(test_config().build()),
        }
    }

    /// Whether entries are in Redis (a server or a cluster), where raw commands reach them.
    pub fn is_redis(&self) -> bool {
        self.server.is_some() || self.cluster.is_some()
    }

    /// Another cache on the same store, with `config` (whose address is replaced).
    pub async fn cache_with(&self, config: redcache::ConfigBuilder) -> redcache::Cache {
        match (&self.server, &self.cluster) {
            (Some(server), _) => server.cache_with(config.url(server.url())).await,
            (_, Some(cluster)) => cluster.cache_with(config).await,
            _ => redcache::Cache::memory_with(config.build()),
        }
    }

    /// Runs a raw command against the store's Redis (a server or the cluster).
    pub async fn raw<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        match (&self.server, &self.cluster) {
            (Some(server), _) => cmd.query_async(&mut server.conn().await).await.unwrap(),
            (_, Some(cluster)) => cmd.query_async(&mut cluster.conn().await).await.unwrap(),
            _ => panic!("raw access needs Redis"),
        }
    }

    /// TTL in whole seconds as Redis's own `TTL` reports it (the memory store's remaining
    /// time is rounded the same way); `None` when there is no entry (a tombstone left by an
    /// invalidation is none).
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
        match (&self.server, &self.cluster) {
            (Some(_), _) => "redis",
            (_, Some(_)) => "cluster",
            _ => "memory",
        }
    }
}

/// Declares a behaviour test that runs on a real Redis, on a real Redis Cluster and on the
/// memory store.
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
            async fn memory() {
                run($crate::common::Backend::memory()).await
            }
        }
    };
}
