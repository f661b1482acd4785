#[redcache::cached(lock_ms = 0)]
async fn report(id: u64) -> u64 {
    id
}

fn main() {}
