fn ttl_of(value: &String) -> u64 {
    value.len() as u64
}

#[redcache::cached(ttl = ttl_of)]
async fn name(id: u64) -> String {
    format!("user {id}")
}

fn main() {}
