struct Profile {
    name: String,
}

#[redcache::cached(ttl = 60)]
async fn profile(id: u64) -> Profile {
    Profile {
        name: format!("user {id}"),
    }
}

fn main() {
    let _ = |p: Profile| p.name;
}
