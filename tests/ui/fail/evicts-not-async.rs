#[redcache::cached(ttl = 60)]
async fn user(id: u64) -> u64 {
    id
}

#[redcache::evicts(user(id))]
fn rename(id: u64) {
    let _ = id;
}

fn main() {}
