//! Credentials: ACL users and `requirepass` work through URLs and the builder, and a
//! password never shows in `Debug`, `Display`, errors or logs; nor do the arguments of a
//! tag, or a key the caller chose, in a fault's log.

mod common;

use common::{test_config, RedisServer};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

#[redcache::cached(prefix = "sec:item", ttl = 60, skip(calls))]
async fn item(id: u64, calls: &AtomicUsize) -> u64 {
    calls.fetch_add(1, SeqCst);
    id
}

const PASSWORD: &str = "pw-5f3c9e-secret";

fn acl_server() -> RedisServer {
    // `--user` takes the user's rules as separate arguments.
    let password = format!(">{PASSWORD}");
    RedisServer::start_with(&[
        "--requirepass",
        PASSWORD,
        "--user",
        "app",
        "on",
        &password,
        "~*",
        "&*",
        "+@all",
    ])
}

/// Stores `item(id)` and reads it back through `cache`.
async fn caches_through(cache: &redcache::Cache, id: u64) {
    let calls = AtomicUsize::new(0);
    assert_eq!(cache.scope(item(id, &calls)).await, id);
    assert_eq!(cache.scope(item(id, &calls)).await, id);
    assert_eq!(calls.load(SeqCst), 1, "the entry was stored and read back");
}

#[tokio::test]
async fn acl_users_and_requirepass_work_through_urls_and_the_builder() {
    let server = acl_server();
    let port = server.port();
    for (id, url) in [
        (1, format!("redis://app:{PASSWORD}@127.0.0.1:{port}")),
        (2, format!("redis://:{PASSWORD}@127.0.0.1:{port}/0")),
    ] {
        let cache = redcache::Cache::connect(test_config().url(url).build())
            .await
            .unwrap();
        caches_through(&cache, id).await;
        let shown = format!("{cache:?}");
        assert!(!shown.contains(PASSWORD), "{shown}");
    }
    let cache = redcache::Cache::connect(
        test_config()
            .host("127.0.0.1", port)
            .username("app")
            .password(PASSWORD)
            .build(),
    )
    .await
    .unwrap();
    caches_through(&cache, 3).await;
    // The usual deployment: the URL in the service's config, the password in a secret.
    let cache = redcache::Cache::connect(
        test_config()
            .url(format!("redis://127.0.0.1:{port}"))
            .password(PASSWORD)
            .build(),
    )
    .await
    .unwrap();
    caches_through(&cache, 4).await;
    assert_eq!(cache.stats().faults, 0);
    // Naming the server twice is refused, naming both settings.
    let err = redcache::Cache::connect(
        test_config()
            .url(format!("redis://127.0.0.1:{port}"))
            .host("127.0.0.1", port)
            .build(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("Config::url") && err.contains("Config::host"),
        "{err}"
    );
}

/// What redis-rs would quietly ignore is refused: a database given as a `?db=` query (it
/// reads the path only, so the cache would use database 0) and a user name without a
/// password (it logs in only with a password, so the cache would be the `default` user).
#[tokio::test]
async fn a_url_part_the_client_would_ignore_is_refused_not_dropped() {
    let server =
        RedisServer::start_with(&["--user", "reader", "on", "nopass", "~*", "&*", "+@all"]);
    let port = server.port();
    for (url, says) in [
        (
            format!("redis://127.0.0.1:{port}?db=3"),
            "redis://host:port/3",
        ),
        (
            format!("redis://reader@127.0.0.1:{port}"),
            "without a password",
        ),
    ] {
        let err = redcache::Cache::connect(test_config().url(url.clone()).build())
            .await
            .unwrap_err();
        assert!(
            matches!(err, redcache::Error::Config { .. }),
            "{url}: {err:?}"
        );
        assert!(err.to_string().contains(says), "{url}: {err}");
    }
    // Written the way it is read: the database in the path, any password for a `nopass`
    // user.
    let cache = redcache::Cache::connect(
        test_config()
            .url(format!("redis://reader:any@127.0.0.1:{port}/3"))
            .build(),
    )
    .await
    .unwrap();
    caches_through(&cache, 5).await;
    let mut raw = server.conn().await;
    let key = redcache::key!(item(5, _));
    let (in_3, in_0): (bool, bool) = redis::pipe()
        .cmd("SELECT")
        .arg(3)
        .ignore()
        .cmd("EXISTS")
        .arg(&key)
        .cmd("SELECT")
        .arg(0)
        .ignore()
        .cmd("EXISTS")
        .arg(&key)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(in_3 && !in_0, "stored in database 3 only");
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(clients.contains("user=reader"), "{clients}");
}

/// Collects what `tracing` logs, to check no password is in it.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// Captures everything logged on this thread until the guard is dropped.
    fn install() -> (Captured, tracing::subscriber::DefaultGuard) {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_max_level(tracing::Level::TRACE)
            .finish();
        (captured, tracing::subscriber::set_default(subscriber))
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_wrong_password_is_a_clear_error_that_never_shows_it() {
    let (captured, _guard) = Captured::install();

    let server = acl_server();
    let wrong = "wrong-9d1e-secret";
    let url = format!("redis://app:{wrong}@127.0.0.1:{}", server.port());
    let config = test_config().url(&url).build();
    let err = redcache::Cache::connect(config.clone()).await.unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, redcache::Error::Connect { .. }), "{err:?}");
    assert!(
        message.contains("could not connect to Redis at redis://app:***@127.0.0.1"),
        "{message}"
    );
    let everything = format!("{message} {err:?} {config:?}");
    assert!(!everything.contains(wrong), "{everything}");

    // A lazy cache with the wrong password: calls fail open, and the logged faults do not
    // show the password either.
    let cache = redcache::Cache::connect(test_config().url(&url).lazy(true).build())
        .await
        .unwrap();
    let calls = AtomicUsize::new(0);
    for _ in 0..3 {
        assert_eq!(cache.scope(item(2, &calls)).await, 2);
    }
    assert_eq!(calls.load(SeqCst), 3);
    assert!(cache.stats().faults >= 1);
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("cache fault"), "the fault was logged: {logs}");
    assert!(!logs.contains(wrong), "{logs}");
}

/// The account page of a user, tagged by the user's email.
#[redcache::cached(prefix = "sec:account", ttl = 60, tags("email:{email}"))]
async fn account(email: String) -> String {
    format!("account of {email}")
}

/// A write that retires the user's tagged entries.
#[redcache::evicts(tag = "email:{email}")]
async fn rename(email: String) {
    let _ = email;
}

/// A fault logs the tag it could not invalidate as its md5, as keys are: never the
/// argument it was built from (an email, here).
#[tokio::test]
async fn a_fault_log_never_shows_the_arguments_a_tag_was_built_from() {
    let (captured, _guard) = Captured::install();

    let mut server = RedisServer::start();
    let cache = server.cache().await;
    let email = "ada-7c1f@example.com";
    assert_eq!(
        cache.scope(account(email.into())).await,
        format!("account of {email}")
    );
    server.stop();
    cache.scope(rename(email.into())).await;
    assert!(cache.stats().faults >= 1, "{:?}", cache.stats());
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let shown = format!(
        "tag:{:x}",
        <md5::Md5 as md5::Digest>::digest(format!("email:{email}"))
    );
    assert!(logs.contains(&shown), "the tag is named by its md5: {logs}");
    assert!(!logs.contains("ada-7c1f"), "{logs}");
}

/// A fault on a key the caller chose itself (the programmatic API's) logs it by its md5,
/// as derived keys and tags are: such a key may hold an email or a token.
#[tokio::test]
async fn a_fault_log_names_a_callers_own_key_by_its_md5() {
    let (captured, _guard) = Captured::install();

    let mut server = RedisServer::start();
    // Two caches: each logs one fault a second.
    let (reading, writing) = (server.cache().await, server.cache().await);
    let key = "session:ada-7c1f@example.com";
    server.stop();
    let ttl = std::time::Duration::from_secs(60);
    let value = reading
        .get_or_insert_with(key, ttl, || async { 7u32 })
        .await;
    assert_eq!(value, 7, "answered by the closure");
    assert!(writing.set(key, &8u32, ttl).await.is_err());
    assert!(reading.stats().faults >= 1, "{:?}", reading.stats());
    assert!(writing.stats().faults >= 1, "{:?}", writing.stats());
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let warned: Vec<&str> = logs.lines().filter(|line| line.contains("WARN")).collect();
    let faults = warned.iter().filter(|line| line.contains("cache fault"));
    assert_eq!(
        faults.filter(|line| line.contains("key:")).count(),
        2,
        "both faults, the key by its md5: {logs}"
    );
    assert!(
        warned.iter().all(|line| !line.contains("ada-7c1f")),
        "{logs}"
    );
}
