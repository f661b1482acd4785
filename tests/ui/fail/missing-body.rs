trait Users {
    #[redcache::cached(ttl = 60)]
    async fn name(&self, id: u64) -> String;
}

fn main() {}
