#[redcache::cached(ttl = 60, prefix = "square", ttl = 120)]
async fn square(x: u64) -> u64 {
    x * x
}

fn main() {}
