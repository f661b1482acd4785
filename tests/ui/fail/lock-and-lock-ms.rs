#[redcache::cached(lock, lock_ms = 2000)]
async fn report(id: u64) -> u64 {
    id
}

fn main() {}
