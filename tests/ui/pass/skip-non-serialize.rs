// `skip` leaves out arguments that are not `Serialize` (pools, clients, contexts).

use std::sync::Arc;

struct Pool {
    base: u64,
}

struct Context;

#[redcache::cached(ttl = 60, skip(pool, ctx))]
async fn load(pool: &Pool, id: u64, ctx: Arc<Context>) -> u64 {
    let _ = ctx;
    pool.base + id
}

#[redcache::cached(ttl = 60, skip(pool))]
async fn ping(pool: &Pool) -> bool {
    pool.base > 0
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    redcache::Cache::memory()
        .scope(async {
            assert_eq!(load(&Pool { base: 10 }, 1, Arc::new(Context)).await, 11);
            assert_eq!(load(&Pool { base: 20 }, 1, Arc::new(Context)).await, 11);
            assert!(ping(&Pool { base: 1 }).await);
        })
        .await;
}
