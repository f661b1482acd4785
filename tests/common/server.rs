//! One `redis-server` per test: started on a free loopback port with no persistence,
//! killed, paused (SIGSTOP) and restarted by the fault tests, stopped (and its directory
//! removed) when the test ends; plus `redis-cli` for looking at it. A Sentinel is one too,
//! started with a configuration file (`sentinel.rs`).

use super::test_config;
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
    /// Its working directory (a cluster keeps files for `redis-cli` there too).
    pub(super) dir: PathBuf,
    child: Option<Child>,
    extra: Vec<String>,
    /// Serves TLS only, with the certificate and key in `dir`.
    tls: bool,
    /// A configuration file in `dir`, passed first (a Sentinel's, which it rewrites).
    conf: Option<PathBuf>,
    /// Where the last start's output begins in `dir/server.log`.
    log_from: u64,
}

/// The server binary: `REDIS_SERVER_BIN`, or `redis-server` (e.g. a Valkey or an older
/// Redis, as `scripts/test-servers` runs the suite on).
fn binary() -> String {
    std::env::var("REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".into())
}

/// The client binary for looking at a server and creating a cluster: `REDIS_CLI_BIN`, or
/// `redis-cli`.
pub(super) fn cli_binary() -> String {
    std::env::var("REDIS_CLI_BIN").unwrap_or_else(|_| "redis-cli".into())
}

/// The last lines of what a server printed (its log goes to `server.log` in its directory),
/// from `from` bytes on: what the server said about why it did not start.
fn log_tail(log: &std::path::Path, from: u64) -> String {
    const LINES: usize = 30;
    let text = match std::fs::read(log) {
        Ok(bytes) => {
            String::from_utf8_lossy(&bytes[(from as usize).min(bytes.len())..]).into_owned()
        }
        Err(err) => return format!("(cannot read {}: {err})", log.display()),
    };
    let lines: Vec<&str> = text.lines().collect();
    if lines.is_empty() {
        return format!("({} is empty: the server printed nothing)", log.display());
    }
    lines[lines.len().saturating_sub(LINES)..].join("\n")
}

/// Who answers on a server's port while it starts.
enum Answering {
    Nobody,
    Ours,
    Other,
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

    pub(super) fn start_inner(extra: &[&str], tls: Option<&Tls<'_>>) -> Self {
        Self::start_configured(extra, tls, None)
    }

    /// Starts a Sentinel (`redis-server <conf> --sentinel`) whose configuration file holds
    /// `conf` (its `sentinel monitor` lines), speaking TLS only if `tls` is given.
    pub(super) fn start_sentinel(conf: &str, tls: Option<&Tls<'_>>) -> Self {
        Self::start_configured(&["--sentinel"], tls, Some(conf))
    }

    fn start_configured(extra: &[&str], tls: Option<&Tls<'_>>, conf: Option<&str>) -> Self {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "redcache-test-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create the server's directory");
        let conf = conf.map(|text| {
            let file = dir.join("redis.conf");
            std::fs::write(&file, text).expect("write the server's configuration file");
            file
        });
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
        // Another process may take the port between our probe and the server's bind: retry
        // on another port. One `RedisServer` for every try: dropping one removes `dir`, the
        // files above with it.
        let mut server = RedisServer {
            port: 0,
            dir,
            child: None,
            extra,
            tls: tls.is_some(),
            conf,
            log_from: 0,
        };
        for _ in 0..20 {
            server.port = free_port();
            if server.spawn() {
                return server;
            }
        }
        panic!(
            "`{}` did not start on any of 20 free ports; what it printed the last time \
             (port {}):\n{}",
            binary(),
            server.port,
            server.log_tail()
        );
    }

    /// What the server printed since it was last started.
    pub fn log_tail(&self) -> String {
        log_tail(&self.dir.join("server.log"), self.log_from)
    }

    /// Starts the server on `self.port`; false if it exited (the port was taken, or it
    /// cannot start at all: its output, in `dir/server.log`, says which).
    fn spawn(&mut self) -> bool {
        // The server logs to its stdout (no `--logfile`); errors about its arguments go to
        // stderr. Both are appended to one file, kept for the failure message.
        let log_path = self.dir.join("server.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("create the server's log file");
        self.log_from = log.metadata().map_or(0, |m| m.len());
        let log_err = log.try_clone().expect("duplicate the log file handle");
        let mut cmd = Command::new(binary());
        if let Some(conf) = &self.conf {
            cmd.arg(conf);
        }
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
            .stdout(log)
            .stderr(log_err);
        let child = match cmd.spawn() {
            Ok(child) => child,
            Err(err) => panic!(
                "cannot run `{}` ({err}): install it with `apt-get install -y redis-server`, \
                 or run ./scripts/test, which does (REDIS_SERVER_BIN names another binary)",
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
            match self.answering() {
                Answering::Ours => return true,
                // Another test's server took the port between its check and our bind
                // (ours is exiting): not ours to use.
                Answering::Other => {
                    self.stop();
                    return false;
                }
                Answering::Nobody => {}
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
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        let mut reply = [0u8; 64];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read(&mut reply).is_ok_and(|n| {
                let reply = &reply[..n];
                reply.starts_with(b"+PONG") || reply.starts_with(b"-NOAUTH")
            })
    }

    /// Who answers on the port: `INFO server`'s `process_id` tells this server from
    /// another that took the port first.
    fn answering(&self) -> Answering {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return Answering::Nobody;
        };
        if self.tls {
            // Listening is all that can be seen without a TLS client; clients retry.
            return Answering::Ours;
        }
        let Some(pid) = self.child.as_ref().map(std::process::Child::id) else {
            return Answering::Nobody;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        if stream.write_all(b"INFO server\r\n").is_err() {
            return Answering::Nobody;
        }
        let mut reply = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&reply);
            if text.starts_with("-NOAUTH") {
                // A password asked first: its process cannot be seen; only ours can have
                // been started with one here.
                return Answering::Ours;
            }
            // The whole line: the number may arrive in two reads.
            let field = text.find("process_id:").and_then(|at| {
                let rest = &text[at + "process_id:".len()..];
                rest.find("\r\n").map(|end| rest[..end].trim().to_owned())
            });
            if let Some(field) = field {
                return match field.parse::<u32>() {
                    // Ours, and ready (`INFO` is answered while loading, `PING` is not).
                    Ok(id) if id == pid && self.answers_ping() => Answering::Ours,
                    Ok(id) if id == pid => Answering::Nobody,
                    Ok(_) => Answering::Other,
                    Err(_) => Answering::Nobody,
                };
            }
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return Answering::Nobody,
                Ok(n) => reply.extend_from_slice(&chunk[..n]),
            }
        }
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

    /// Closes every client connection but `redis-cli`'s own (`CLIENT KILL TYPE normal`),
    /// as a restart or a proxy's idle timeout would, while the server stays up; how many
    /// it closed.
    pub fn kill_clients(&self) -> u64 {
        let killed = cli(
            self.port,
            &["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"],
        );
        killed
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("CLIENT KILL answered {killed:?}"))
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
            assert!(
                Instant::now() < deadline,
                "`{}` did not restart on port {}; what it printed the last time:\n{}",
                binary(),
                self.port,
                self.log_tail()
            );
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

    /// The keys matching `pattern`, sorted (`KEYS` returns them in no set order).
    pub async fn keys(&self, pattern: &str) -> Vec<String> {
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg(pattern)
            .query_async(&mut self.conn().await)
            .await
            .unwrap();
        keys.sort();
        keys
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

/// Runs `redis-cli -p <port> <args>` (or `REDIS_CLI_BIN`) and returns what it printed.
pub fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new(cli_binary())
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("run `{}`: {err}", cli_binary()));
    String::from_utf8_lossy(&out.stdout).into_owned()
}
