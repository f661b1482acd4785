// A `HashSet` under another name: the attribute cannot read it off the written type, and
// the argument's own type refuses it.
use std::collections::HashSet as Set;

type Ids = std::collections::HashSet<u64>;

#[redcache::cached(ttl = 60)]
async fn aliased(ids: Ids) -> usize {
    ids.len()
}

#[redcache::cached(ttl = 60)]
async fn renamed(user: u64, roles: &Set<String>) -> bool {
    let _ = user;
    roles.contains("admin")
}

#[redcache::cached(ttl = 60)]
async fn optional(ids: Option<Ids>) -> bool {
    ids.is_some()
}

#[redcache::cached(ttl = 60)]
async fn shared(ids: std::sync::Arc<Ids>, pages: Vec<Ids>) -> usize {
    ids.len() + pages.len()
}

// Not a set, or a type parameter: no error.
#[redcache::cached(ttl = 60)]
async fn listed(ids: Vec<u64>, id: u64) -> bool {
    ids.contains(&id)
}

#[redcache::cached(ttl = 60)]
async fn generic<T: serde::Serialize + Send + Sync>(value: T) -> bool {
    let _ = value;
    true
}

fn main() {}
