#[redcache::cached(ttl = 60, cache_if = true)]
async fn name(id: u64) -> String {
    format!("user {id}")
}

fn main() {}
