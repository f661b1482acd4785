#[redcache::cached(ttl = 60)]
struct Profile {
    id: u64,
}

fn main() {
    let _ = Profile { id: 1 }.id;
}
