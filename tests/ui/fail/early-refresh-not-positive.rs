#[redcache::cached(ttl = 60, early_refresh = 0.0)]
async fn report(id: u64) -> u64 {
    id
}

fn main() {}
