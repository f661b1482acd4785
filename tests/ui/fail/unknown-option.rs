#[redcache::cached(ttl = 60, refresh = 10)]
async fn square(x: u64) -> u64 {
    x * x
}

fn main() {}
