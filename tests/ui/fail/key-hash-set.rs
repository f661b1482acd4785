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

fn main() {}
