use std::collections::{BTreeSet, HashSet};

// A `key` expression is checked as arguments are: a `HashSet` there (or as an element of
// a tuple written there) would give equal calls different keys.
#[redcache::cached(ttl = 60, key = (tenant, ids))]
async fn report(tenant: u32, ids: &HashSet<u64>, trace: &str) -> usize {
    let _ = trace;
    ids.len() + tenant as usize
}

#[redcache::cached(ttl = 60, key = ids)]
async fn whole(ids: HashSet<u64>, trace: &str) -> usize {
    let _ = trace;
    ids.len()
}

// The set in an ordered form: no error.
#[redcache::cached(ttl = 60, key = (tenant, ids.iter().collect::<BTreeSet<_>>()))]
async fn sorted(tenant: u32, ids: &HashSet<u64>, trace: &str) -> usize {
    let _ = trace;
    ids.len() + tenant as usize
}

fn main() {}
