trait Directory {
    async fn name(&self, id: u64) -> Option<String>;
}

struct Ldap;

impl Directory for Ldap {
    #[redcache::cached(ttl = 60)]
    async fn name(&self, id: u64) -> Option<String> {
        Some(format!("user {id}"))
    }
}

fn main() {}
