#[redcache::cached(ttl = 60, tags("user:{user.id}", "orders}"))]
async fn profile(user: u64) -> String {
    format!("user {user}")
}

fn main() {}
