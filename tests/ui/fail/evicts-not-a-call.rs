#[redcache::evicts(id + 1)]
async fn rename(id: u64) {
    let _ = id;
}

fn main() {}
