// `null_ttl` is how long a `None` lives: a function whose return type (read by its last
// segment) has none would ignore it, as it would for an alias of an `Option`.
type MaybeUser = Option<u64>;

#[redcache::cached(ttl = 900, null_ttl = 0)]
async fn find(id: u64) -> MaybeUser {
    (id > 0).then_some(id)
}

#[redcache::cached(ttl = 900, null_ttl = 30)]
async fn load(id: u64) -> Result<u64, String> {
    Ok(id)
}

// Said with `output`, an alias is fine.
#[redcache::cached(ttl = 900, null_ttl = 0, output = "option")]
async fn find_said(id: u64) -> MaybeUser {
    (id > 0).then_some(id)
}

fn main() {}
