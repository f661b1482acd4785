// The call-shaped helpers on every function shape the attribute accepts: free, generic,
// const-generic, patterns, references, `key = expr`, methods (`&self`, `Arc<Self>`), and
// `#[evicts]` with calls and a group.

use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Clone, Serialize, Deserialize)]
struct User {
    id: u64,
}

struct Pool;

#[redcache::cached(ttl = 60, skip(pool))]
async fn user(id: u64, pool: &Pool) -> Option<User> {
    let _ = pool;
    Some(User { id })
}

#[redcache::cached(ttl = 60)]
async fn first<T: Serialize + serde::de::DeserializeOwned + Clone, const N: usize>(
    items: Vec<T>,
) -> Option<T> {
    items.into_iter().nth(N)
}

#[redcache::cached(ttl = 60)]
async fn sum((a, b): (u32, u32), name: &str, tags: &[String]) -> usize {
    (a + b) as usize + name.len() + tags.len()
}

#[redcache::cached(ttl = 60, key = user.id)]
async fn by_user(user: &User, session: String) -> u64 {
    let _ = session;
    user.id
}

#[redcache::cached(ttl = 60, group = "teams")]
async fn team(id: u64) -> Result<String, std::io::Error> {
    Ok(format!("team {id}"))
}

struct Service;

impl Service {
    #[redcache::cached(ttl = 60)]
    async fn get(&self, id: u64) -> u64 {
        id
    }

    #[redcache::cached(ttl = 60)]
    async fn get_arc(self: Arc<Self>, id: u64) -> u64 {
        id
    }

    #[redcache::evicts(self.get(id), Self::get_arc(self, id), user(id, _), group = "teams")]
    async fn write(&self, id: u64) -> Result<(), std::io::Error> {
        let _ = id;
        Ok(())
    }
}

#[redcache::evicts(sum((1, 2), name, &[]))]
async fn write_unit(name: &str) {
    let _ = name;
}

async fn helpers() -> redcache::Result<()> {
    let svc = Arc::new(Service);
    let pool = Pool;
    let _: bool = redcache::invalidate!(user(1, &pool)).await?;
    let _: bool = redcache::invalidate!(user(1, _)).await?;
    redcache::put!(user(1, _), Some(User { id: 1 })).await?;
    let _: String = redcache::key!(first::<u8, 0>(vec![1]));
    let _: String = redcache::key!(sum((1, 2), "x", &["t".to_string()]));
    let _: String = redcache::key!(by_user(&User { id: 1 }, String::new()));
    redcache::put!(team(3), Ok("t".to_string())).await?;
    let _: bool = redcache::invalidate!(svc.get(1)).await?;
    let _: bool = redcache::invalidate!(Service::get(&svc, 1)).await?;
    let _: bool = redcache::invalidate!(svc.get_arc(1)).await?;
    redcache::put!(Service::get_arc(&svc, 1), 5).await?;
    svc.write(1).await.unwrap();
    write_unit("x").await;
    redcache::invalidate_group("teams").await?;
    let _: u64 = redcache::invalidate_prefix("x").await?;
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    redcache::Cache::memory().scope(helpers()).await.unwrap();
}
