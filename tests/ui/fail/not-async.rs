#[redcache::cached(ttl = 60)]
fn square(x: u64) -> u64 {
    x * x
}

fn main() {}
