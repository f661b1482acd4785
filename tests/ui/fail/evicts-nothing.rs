#[redcache::evicts()]
async fn rename(id: u64) {
    let _ = id;
}

fn main() {}
