#[redcache::cached(ttl = 60, tags(user_id))]
async fn profile(user_id: u64) -> String {
    format!("user {user_id}")
}

fn main() {}
