// A constant TTL of 0 is refused where the compiler evaluates it, as `ttl = 0` is.
const TTL: u64 = 0;

#[redcache::cached(ttl = TTL)]
async fn profile(id: u64) -> u64 {
    id
}

fn main() {}
