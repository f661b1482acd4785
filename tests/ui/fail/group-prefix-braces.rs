#[redcache::cached(group = "products", prefix = "shop:{x}")]
async fn price(sku: u64) -> u64 {
    sku
}

fn main() {}
