//! Multi-process tests: the test binary starts itself again as a child process that runs
//! one ignored test against the parent's Redis.

use std::process::{Child, Command, Stdio};

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
