//! One PostgreSQL per test, the way `server.rs` starts `redis-server`: `initdb` into a
//! fresh directory, `pg_ctl start` on a free loopback port, `pg_ctl stop -m immediate` and
//! the directory removed when the test ends.
//!
//! The binaries: `initdb` and `pg_ctl` on `PATH`, else those of the newest
//! `/usr/lib/postgresql/<version>/bin/` (where Debian's `postgresql` package puts them, off
//! `PATH`). `./scripts/test` installs that package when neither is found.
//!
//! **As root** (`id -u` is 0, as in CI and these containers), `initdb` refuses to run, and
//! the server would too: both are then run as the `postgres` user (`runuser -u postgres
//! --`, which the `postgresql` package creates), and the test's directory is handed to that
//! user (`chown`) so the server can write its data, socket and log there. As any other
//! user they run as that user.
//!
//! The cluster trusts every local connection (`initdb --auth=trust`, superuser
//! `postgres`), listens on 127.0.0.1 only, keeps its Unix socket in the test's directory,
//! and runs with `fsync=off`: nothing in it has to survive the test.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A PostgreSQL server owned by one test.
pub struct Postgres {
    port: u16,
    /// The test's directory: `data/` (the cluster), the Unix socket, `postgres.log`.
    dir: PathBuf,
    bin: PathBuf,
    /// Whether `pg_ctl` has started the server (so `Drop` stops it).
    running: bool,
}

/// The directory holding `initdb` and `pg_ctl`: that of `initdb` on `PATH`, else the newest
/// `/usr/lib/postgresql/<version>/bin`.
fn bin_dir() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).find(|dir| dir.join("initdb").is_file()));
    if let Some(dir) = on_path {
        // `initdb` is often a symbolic link (to Debian's directory): `pg_ctl` sits beside
        // it there either way.
        return dir;
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL's `initdb` is neither on PATH nor in /usr/lib/postgresql/*/bin: \
             install it with `apt-get install -y postgresql`, or run ./scripts/test, which does"
        ),
    }
}

/// Whether this process runs as root (`id -u` is 0).
fn is_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| {
        let out = Command::new("id").arg("-u").output().expect("run `id -u`");
        String::from_utf8_lossy(&out.stdout).trim() == "0"
    })
}

/// A free loopback port (another process may take it before the server binds it: the
/// caller retries on another).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// The last lines of `log`: what PostgreSQL said about why it did not start.
fn log_tail(log: &Path) -> String {
    const LINES: usize = 30;
    match std::fs::read(log) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            if lines.is_empty() {
                return format!("({} is empty)", log.display());
            }
            lines[lines.len().saturating_sub(LINES)..].join("\n")
        }
        Err(err) => format!("(cannot read {}: {err})", log.display()),
    }
}

fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

impl Postgres {
    /// Creates a cluster in a fresh directory and starts it on a free loopback port; returns
    /// once it accepts connections.
    ///
    /// # Panics
    ///
    /// If the binaries are missing, or `initdb` or the server fails: the message names the
    /// step and quotes what PostgreSQL printed.
    pub fn start() -> Self {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "redcache-pg-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create the PostgreSQL test directory");
        let mut pg = Postgres {
            port: 0,
            dir,
            bin: bin_dir(),
            running: false,
        };
        if is_root() {
            let out = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&pg.dir)
                .output()
                .expect("run chown");
            assert!(
                out.status.success(),
                "running as root, PostgreSQL must run as the `postgres` user, but \
                 `chown -R postgres:postgres {}` failed (is there a `postgres` user? \
                 `apt-get install -y postgresql` creates it):\n{}",
                pg.dir.display(),
                output_text(&out)
            );
        }
        pg.initdb();
        // The port is the only setting passed at start: on a clash, the next try gets
        // another one.
        for _ in 0..10 {
            pg.port = free_port();
            if pg.pg_ctl_start() {
                pg.running = true;
                pg.wait_accepting();
                return pg;
            }
        }
        panic!(
            "PostgreSQL (`{}`) did not start on any of 10 free ports; the end of {}:\n{}",
            pg.bin.join("pg_ctl").display(),
            pg.log().display(),
            log_tail(&pg.log())
        );
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`: the superuser, no password.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// `bin/<program>`, run as the `postgres` user when we are root, in the test's
    /// directory (that user may not be allowed into ours).
    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        let mut cmd = if is_root() {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(program);
            cmd
        } else {
            Command::new(program)
        };
        cmd.current_dir(&self.dir);
        cmd
    }

    fn run(&self, what: &str, cmd: &mut Command) -> Output {
        cmd.stdin(Stdio::null())
            .output()
            .unwrap_or_else(|err| panic!("cannot run {what} ({cmd:?}): {err}"))
    }

    fn initdb(&self) {
        let out = self.run(
            "initdb",
            self.command("initdb")
                .arg("-D")
                .arg(self.data())
                .args(["--username=postgres", "--auth=trust"])
                .args(["--encoding=UTF8", "--locale=C"])
                // No fsync of the new files: the cluster lives as long as the test.
                .arg("--no-sync"),
        );
        assert!(
            out.status.success(),
            "`initdb -D {}` failed ({}):\n{}",
            self.data().display(),
            out.status,
            output_text(&out)
        );
        // Everything but the port, in the cluster's own configuration file (no shell
        // quoting of paths through `pg_ctl -o`).
        let settings = format!(
            "\n# redcache test harness\nlisten_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{}'\nfsync = off\nsynchronous_commit = off\n\
             full_page_writes = off\n",
            self.dir.display()
        );
        let conf = self.data().join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf)
            .unwrap_or_else(|err| panic!("read {}: {err}", conf.display()));
        text.push_str(&settings);
        std::fs::write(&conf, text).unwrap_or_else(|err| panic!("write {}: {err}", conf.display()));
    }

    /// `pg_ctl start -w` on `self.port`: true once the server is up, false if it exited
    /// because the port was taken.
    ///
    /// # Panics
    ///
    /// If it failed for any other reason.
    fn pg_ctl_start(&self) -> bool {
        let log_len = std::fs::metadata(self.log()).map_or(0, |m| m.len());
        let out = self.run(
            "pg_ctl start",
            self.command("pg_ctl")
                .arg("start")
                .arg("-D")
                .arg(self.data())
                .arg("-l")
                .arg(self.log())
                .args(["-o", &format!("-c port={}", self.port)])
                // Waits until the server is ready for connections, or has exited.
                .args(["-w", "-t", "60"]),
        );
        if out.status.success() {
            return true;
        }
        let log = std::fs::read(self.log()).unwrap_or_default();
        let new = String::from_utf8_lossy(&log[(log_len as usize).min(log.len())..]);
        if new.contains("could not bind") || new.contains("Address already in use") {
            return false;
        }
        panic!(
            "`pg_ctl start` of PostgreSQL on port {} failed ({}):\n{}\nthe end of {}:\n{}",
            self.port,
            out.status,
            output_text(&out),
            self.log().display(),
            log_tail(&self.log())
        );
    }

    /// Waits until the port takes TCP connections (`pg_ctl -w` has already seen the server
    /// ready; this checks it is ours on that port).
    fn wait_accepting(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL started but does not accept connections on 127.0.0.1:{}; \
                 the end of {}:\n{}",
                self.port,
                self.log().display(),
                log_tail(&self.log())
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the server logged (its log file's last lines).
    pub fn log_tail(&self) -> String {
        log_tail(&self.log())
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.running {
            // Immediate: no checkpoint, nothing to keep.
            let _ = self
                .command("pg_ctl")
                .arg("stop")
                .arg("-D")
                .arg(self.data())
                .args(["-m", "immediate", "-w", "-t", "30"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
