//! A service struct with cached `&self` methods, and write paths that keep the cache right.
//!
//! ```sh
//! cargo run --example service_layer                                        # in-process store
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --example service_layer       # Redis
//! ```
//!
//! Reads are `#[cached]` methods. Writes reach exactly their entries by naming the calls:
//!
//! * `rename` is `#[redcache::evicts(self.get_by_id(id), group = "teams")]`: once the
//!   update returned `Ok`, the user's entry and every entry of the `teams` group are gone;
//!   it also writes the new display name through with `redcache::put!`;
//! * `delete_user` calls `redcache::invalidate!(self.get_by_id(id))` itself.
//!
//! The helpers derive the key with the code the attribute generated, so they cannot drift
//! from it, and a miss that raced with the write cannot store the old row afterwards.

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

struct UserService {
    /// The "database".
    db: RwLock<HashMap<u64, User>>,
    /// Queries that reached the database.
    queries: AtomicUsize,
}

impl UserService {
    fn new() -> Self {
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
    #[redcache::cached(prefix = "svc:user", ttl = 600, null_ttl = 60)]
    async fn get_by_id(&self, id: u64) -> Option<User> {
        self.query().await;
        self.db.read().await.get(&id).cloned()
    }

    /// `Ok` is cached; an `Err` is returned as is and never stored. In the `teams` group:
    /// any write to a user invalidates every team listing at once.
    #[redcache::cached(prefix = "svc:team", ttl = 600, group = "teams")]
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

    #[redcache::cached(prefix = "svc:user_name", ttl = 600)]
    async fn display_name(&self, id: u64) -> Option<String> {
        self.query().await;
        self.db.read().await.get(&id).map(|u| u.name.clone())
    }

    /// Updates the database; on `Ok`, `#[evicts]` drops the user's entry and the `teams`
    /// group, and the new display name is written through.
    #[redcache::evicts(self.get_by_id(id), group = "teams")]
    async fn rename(&self, id: u64, name: &str) -> Result<(), DbError> {
        {
            let mut db = self.db.write().await;
            let user = db.get_mut(&id).ok_or(DbError::UnknownUser(id))?;
            user.name = name.to_string();
        }
        let name = Some(name.to_string());
        if let Err(err) = redcache::put!(self.display_name(id), name).await {
            // The database is right; drop the entry instead so the next read reloads it. If
            // the store is down, that fails too and the entry expires by its TTL.
            println!("  write-through failed ({err}); invalidating instead");
            let _ = redcache::invalidate!(self.display_name(id)).await;
        }
        Ok(())
    }

    /// Removes a user, then its entries.
    async fn delete_user(&self, id: u64) -> Result<(), DbError> {
        self.db
            .write()
            .await
            .remove(&id)
            .ok_or(DbError::UnknownUser(id))?;
        for removed in [
            redcache::invalidate!(self.get_by_id(id)).await,
            redcache::invalidate!(self.display_name(id)).await,
            redcache::invalidate_group("teams").await.map(|()| true),
        ] {
            if let Err(err) = removed {
                println!("  invalidation failed ({err}); the entry expires by its TTL");
            }
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
    let service = UserService::new();

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

    read!(service.display_name(1));
    read!(service.display_name(1));
    println!(
        "  the entry of get_by_id(1) is {}",
        redcache::key!(service.get_by_id(1))
    );

    println!(
        "\n# rename(1, \"Ada Lovelace\"): #[evicts(self.get_by_id(id), group = \"teams\")] + put!"
    );
    service
        .rename(1, "Ada Lovelace")
        .await
        .expect("user 1 exists");
    read!(service.get_by_id(1));
    read!(service.display_name(1));
    let _ = read!(service.list_by_team("core"));

    println!("\n# delete_user(2): invalidate!(self.get_by_id(id)), ...");
    read!(service.get_by_id(2));
    service.delete_user(2).await.expect("user 2 exists");
    read!(service.get_by_id(2));

    let stats = cache.stats();
    println!(
        "\nstats: hits={} misses={} null_hits={} stores={} invalidations={} conflicts={} faults={}",
        stats.hits,
        stats.misses,
        stats.null_hits,
        stats.stores,
        stats.invalidations,
        stats.conflicts,
        stats.faults
    );
    println!("database queries: {}", service.queries());

    // Leave nothing behind in a shared Redis.
    let removed = redcache::invalidate_prefix("svc").await.unwrap_or(0);
    println!("invalidate_prefix(\"svc\") removed {removed} entries");
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
