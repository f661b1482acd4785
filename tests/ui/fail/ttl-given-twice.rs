fn ttl_of(_: &String) -> std::time::Duration {
    std::time::Duration::from_secs(5)
}

#[redcache::cached(ttl = 60, ttl = ttl_of)]
async fn name(id: u64) -> String {
    format!("user {id}")
}

fn main() {}
