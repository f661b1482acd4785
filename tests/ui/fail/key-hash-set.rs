use std::collections::HashSet;

#[redcache::cached(ttl = 60)]
async fn allowed(user: u64, roles: &HashSet<String>) -> bool {
    let _ = user;
    roles.contains("admin")
}

// Skipped, or keyed by an expression: no error.
#[redcache::cached(ttl = 60, skip(roles))]
async fn skipped(user: u64, roles: &HashSet<String>) -> bool {
    let _ = (user, roles);
    true
}

#[redcache::cached(ttl = 60, key = user)]
async fn keyed(user: u64, roles: Option<HashSet<u8>>) -> bool {
    let _ = (user, roles);
    true
}

#[redcache::cached(ttl = 60)]
async fn nested(ids: Option<(u8, std::collections::HashSet<u64>)>) -> bool {
    ids.is_some()
}

// A set in the keyed part of a pattern.
#[redcache::cached(ttl = 60)]
async fn destructured((id, ids): (u64, std::collections::HashSet<u64>)) -> bool {
    ids.contains(&id)
}

// Not a std `HashSet`: a type parameter of that name, a set of the caller's own, or one
// inside a pattern (whose names are keyed one by one).
#[redcache::cached(ttl = 60)]
async fn generic<HashSet: serde::Serialize + Send + Sync>(set: HashSet) -> bool {
    let _ = set;
    true
}

mod ordered {
    pub type HashSet<T> = std::collections::BTreeSet<T>;
}

#[redcache::cached(ttl = 60)]
async fn own(set: ordered::HashSet<u64>) -> usize {
    set.len()
}

#[redcache::cached(ttl = 60, skip(seen))]
async fn pattern((id, seen): (u64, std::collections::HashSet<u64>)) -> bool {
    seen.contains(&id)
}

#[redcache::cached(ttl = 60)]
async fn unbound((id, _): (u64, std::collections::HashSet<u64>)) -> u64 {
    id
}

fn main() {}
