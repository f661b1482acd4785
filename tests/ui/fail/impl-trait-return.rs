#[redcache::cached(ttl = 60)]
async fn name(id: u64) -> impl std::fmt::Display {
    format!("user {id}")
}

fn main() {}
