#[redcache::cached(ttl = "900")]
async fn square(x: u64) -> u64 {
    x * x
}

fn main() {}
