// A constant is evaluated outside the function: it names its type, not `Self`.
struct Repo;

impl Repo {
    const TTL: u64 = 900;

    #[redcache::cached(ttl = Self::TTL)]
    async fn find(&self, id: u64) -> u64 {
        id
    }
}

fn main() {}
