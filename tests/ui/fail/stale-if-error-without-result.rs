// `stale_if_error` answers a failed call: a function that cannot fail has no use for it.
#[redcache::cached(ttl = 60, stale_if_error = 300)]
async fn price(sku: u64) -> u64 {
    sku * 100
}

#[redcache::cached(ttl = 60, stale_ttl = "30")]
async fn rate(currency: String) -> f64 {
    let _ = currency;
    1.0
}

fn main() {}
