// `#[evicts]` on what is not a function with a body: the error names `#[evicts]`.
#[redcache::cached(ttl = 60)]
async fn user(id: u64) -> u64 {
    id
}

#[redcache::evicts(user(1))]
struct Rename;

trait Users {
    #[redcache::evicts(user(id))]
    async fn rename(&self, id: u64);
}

fn main() {}
