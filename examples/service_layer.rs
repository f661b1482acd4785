//! A service struct with cached `&self` methods, and a write path that keeps the cache right.
//!
//! ```sh
//! cargo run --example service_layer                                        # in-process store
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --example service_layer       # Redis
//! ```
//!
//! # Which reads a write can reach today
//!
//! A `#[cached]` method's key is derived inside the macro and the runtime: the prefix, then
//! the md5 of the arguments *and of `Self`'s type name* (`service_layer::UserService`).
//! Until the call-shaped helpers (`redcache::invalidate!(service.get_by_id(1))`, `put!`,
//! `key!`) exist, user code cannot name that key without copying the derivation, and a copy
//! would drift from it. So this example does not invent one. Instead it uses the two tools
//! that are honest today:
//!
//! * **`#[cached]` with a TTL that is the staleness you accept** (`get_by_id`,
//!   `list_by_team`). After a write, these reads may return the old value until the entry
//!   expires. The TTLs here are 2 s so you can watch it happen; pick yours the same way.
//! * **The programmatic [`redcache::Cache`] API for reads a write must update at once**
//!   (`display_name`): the service owns the key (`svc:user_name:{id}`), so `rename` writes
//!   the new value through with `Cache::set`, and `delete_user` removes it with
//!   `Cache::delete`.

use redcache::Cache;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::RwLock;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
    team: String,
}

#[derive(Debug)]
enum DbError {
    UnknownTeam(String),
    UnknownUser(u64),
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbError::UnknownTeam(team) => write!(f, "no team named {team:?}"),
            DbError::UnknownUser(id) => write!(f, "no user with id {id}"),
        }
    }
}

impl std::error::Error for DbError {}

/// How long a display name stays cached (it is written through on every rename).
const NAME_TTL: Duration = Duration::from_secs(600);

struct UserService {
    /// The "database".
    db: RwLock<HashMap<u64, User>>,
    /// Queries that reached the database.
    queries: AtomicUsize,
    /// For the reads and writes that go through the programmatic API. `#[cached]` methods
    /// use the cache installed globally (the same one, in `main`).
    cache: Cache,
}

impl UserService {
    fn new(cache: Cache) -> Self {
        let users = [
            (1, "Ada", "core"),
            (2, "Grace", "core"),
            (3, "Linus", "kernel"),
        ]
        .into_iter()
        .map(|(id, name, team)| {
            let user = User {
                id,
                name: name.to_string(),
                team: team.to_string(),
            };
            (id, user)
        })
        .collect();
        UserService {
            db: RwLock::new(users),
            queries: AtomicUsize::new(0),
            cache,
        }
    }

    async fn query(&self) {
        self.queries.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }

    /// `&self` is not part of the key (`UserService`'s type name is). An unknown id is
    /// cached as `None` for `null_ttl`.
    #[redcache::cached(prefix = "svc:user", ttl = 2, jitter = 0, null_ttl = 2)]
    async fn get_by_id(&self, id: u64) -> Option<User> {
        self.query().await;
        self.db.read().await.get(&id).cloned()
    }

    /// `Ok` is cached; an `Err` is returned as is and never stored.
    #[redcache::cached(prefix = "svc:team", ttl = 2, jitter = 0)]
    async fn list_by_team(&self, team: &str) -> Result<Vec<User>, DbError> {
        self.query().await;
        let db = self.db.read().await;
        let mut members: Vec<User> = db.values().filter(|u| u.team == team).cloned().collect();
        if members.is_empty() {
            return Err(DbError::UnknownTeam(team.to_string()));
        }
        members.sort_by_key(|u| u.id);
        Ok(members)
    }

    /// The key of a programmatic entry: the service owns it, so writes can reach it.
    fn name_key(id: u64) -> String {
        format!("svc:user_name:{id}")
    }

    /// Cache-aside through the programmatic API: the same single flight and fail-open
    /// rules as `#[cached]`.
    async fn display_name(&self, id: u64) -> Option<String> {
        self.cache
            .get_or_insert_with(&Self::name_key(id), NAME_TTL, || async {
                self.query().await;
                self.db.read().await.get(&id).map(|u| u.name.clone())
            })
            .await
    }

    /// Updates the database, then writes the new name through to the cache.
    ///
    /// As with any cache-aside write path, a concurrent `display_name` miss that read the
    /// old row before this update can still store the old name after it; `NAME_TTL` bounds
    /// how long that lasts.
    async fn rename(&self, id: u64, name: &str) -> Result<(), DbError> {
        {
            let mut db = self.db.write().await;
            let user = db.get_mut(&id).ok_or(DbError::UnknownUser(id))?;
            user.name = name.to_string();
        }
        let name = Some(name.to_string());
        let key = Self::name_key(id);
        match self.cache.set(&key, &name, NAME_TTL).await {
            Ok(()) => println!("  database updated; cache.set({key:?}, {name:?}) written through"),
            Err(err) => {
                // The database is already right. Try to drop the entry instead, so the next read
                // reloads it; if the store is down, the entry expires after NAME_TTL.
                println!("  write-through failed ({err}); deleting the entry instead");
                let _ = self.cache.delete(&key).await;
            }
        }
        Ok(())
    }

    /// Removes a user, then its programmatic entry.
    async fn delete_user(&self, id: u64) -> Result<(), DbError> {
        self.db
            .write()
            .await
            .remove(&id)
            .ok_or(DbError::UnknownUser(id))?;
        let key = Self::name_key(id);
        match self.cache.delete(&key).await {
            Ok(removed) => println!("  database updated; cache.delete({key:?}) -> {removed}"),
            Err(err) => println!("  cache.delete failed ({err}); the entry expires on its own"),
        }
        Ok(())
    }
}

/// Awaits a read of the service and prints its result and where it came from.
macro_rules! read {
    ($service:ident . $($call:tt)+) => {{
        let before = $service.queries();
        let result = $service.$($call)+.await;
        let from = if $service.queries() > before { "database" } else { "cache" };
        println!("{:<25} -> {:<60} [{from}]", stringify!($($call)+), format!("{result:?}"));
        result
    }};
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();

    let cache = choose_store().await;
    cache
        .install()
        .expect("nothing else installs a cache in this example");
    let service = UserService::new(cache.clone());

    println!("\n# #[cached] &self methods");
    read!(service.get_by_id(1));
    read!(service.get_by_id(1));
    println!("  an unknown id is cached as None (null_ttl):");
    read!(service.get_by_id(99));
    read!(service.get_by_id(99));
    let _ = read!(service.list_by_team("core"));
    let _ = read!(service.list_by_team("core"));
    println!("  an Err is never cached:");
    let _ = read!(service.list_by_team("nobody"));
    let _ = read!(service.list_by_team("nobody"));

    println!("\n# programmatic cache-aside (Cache::get_or_insert_with)");
    read!(service.display_name(1));
    read!(service.display_name(1));

    println!("\n# rename(1, \"Ada Lovelace\")");
    service
        .rename(1, "Ada Lovelace")
        .await
        .expect("user 1 exists");
    read!(service.display_name(1));
    println!(
        "  the #[cached] entry cannot be reached by the write yet, so it is stale until its TTL:"
    );
    read!(service.get_by_id(1));
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    println!("  2.1 s later it has expired:");
    read!(service.get_by_id(1));

    println!("\n# delete_user(2)");
    read!(service.display_name(2));
    service.delete_user(2).await.expect("user 2 exists");
    read!(service.display_name(2));

    let stats = cache.stats();
    println!(
        "\nstats: hits={} misses={} null_hits={} stores={} invalidations={} faults={}",
        stats.hits, stats.misses, stats.null_hits, stats.stores, stats.invalidations, stats.faults
    );
    println!("database queries: {}", service.queries());

    // Leave nothing behind in a shared Redis: the #[cached] entries expire within 2 s; the
    // programmatic ones are removed here.
    for id in [1, 2] {
        let _ = cache.delete(&UserService::name_key(id)).await;
    }
}

/// Redis when `REDIS_URL` is set (falling back to memory if it cannot be reached), else the
/// in-process store.
async fn choose_store() -> Cache {
    if std::env::var_os("REDIS_URL").is_some() {
        let config = redcache::Config::from_env();
        let target = config.redacted_target();
        match Cache::connect(config).await {
            Ok(cache) => {
                println!("store: Redis at {target}");
                return cache;
            }
            Err(err) => {
                println!("store: Redis is not usable ({err})");
                println!("       falling back to the in-process memory store");
            }
        }
    } else {
        println!("store: in-process memory (set REDIS_URL=redis://127.0.0.1:6379 to use Redis)");
    }
    Cache::memory()
}
