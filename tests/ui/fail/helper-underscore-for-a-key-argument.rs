// `_` stands for a skipped argument only: passed for an argument that is part of the key,
// it is an error (it would otherwise be hashed as some placeholder, a key no call has).

#[redcache::cached(prefix = "tags", ttl = 60)]
async fn count_tags(tags: Vec<String>, owner: impl serde::Serialize + Send) -> usize {
    let _ = owner;
    tags.len()
}

fn main() {
    let _ = redcache::invalidate!(count_tags(vec![], _));
}
