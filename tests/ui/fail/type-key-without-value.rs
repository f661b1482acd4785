#[redcache::cached(type_key)]
async fn price(sku: u64) -> u64 {
    sku
}

fn main() {}
