#[redcache::cached(compress_above = "4kb")]
async fn page(slug: String) -> String {
    slug
}

#[redcache::cached(compress_above = 0)]
async fn other(slug: String) -> String {
    slug
}

fn main() {}
