#[redcache::cached(ttl = 60)]
const async fn square(x: u64) -> u64 {
    x * x
}

fn main() {}
