#[redcache::cached(ttl = 60, in_trait_impl)]
async fn user(id: u64) -> u64 {
    id
}

fn main() {}
