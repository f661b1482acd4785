// An `impl Trait` inside the return type cannot be stored either.
#[redcache::cached(ttl = 60)]
async fn name(id: u64) -> Option<impl std::fmt::Display> {
    Some(format!("user {id}"))
}

fn main() {}
