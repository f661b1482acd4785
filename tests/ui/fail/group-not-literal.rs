#[redcache::cached(group = products)]
async fn price(sku: u64) -> u64 {
    sku
}

fn main() {}
