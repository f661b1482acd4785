struct Catalog;

impl Catalog {
    #[redcache::cached(ttl = 60, type_key = 7)]
    async fn price(&self, sku: u64) -> u64 {
        sku
    }
}

fn main() {}
