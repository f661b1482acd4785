use std::time::Duration;

// A constant stands for a number of seconds, a `u64`: a `Duration` is reported at the
// constant (`PROFILE_TTL.as_secs()` is one).
const PROFILE_TTL: Duration = Duration::from_secs(900);

#[redcache::cached(ttl = PROFILE_TTL)]
async fn profile(id: u64) -> u64 {
    id
}

fn main() {}
