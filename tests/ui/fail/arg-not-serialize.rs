struct Pool;

#[redcache::cached(ttl = 60)]
async fn user_name(pool: &Pool, id: u64) -> String {
    let _ = pool;
    format!("user {id}")
}

fn main() {}
