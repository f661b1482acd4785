#[redcache::cached(ttl = 60)]
async fn name(id: u64) -> String {
    id
}

fn main() {}
