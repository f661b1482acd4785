async fn user(id: u64) -> u64 {
    id
}

#[redcache::evicts(user(id))]
async fn rename(id: u64) {
    let _ = id;
}

fn main() {}
