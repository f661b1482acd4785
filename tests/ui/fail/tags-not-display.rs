#[derive(serde::Serialize)]
struct Id(u64);

#[redcache::cached(ttl = 60, tags("user:{id}"))]
async fn profile(id: Id) -> String {
    format!("user {}", id.0)
}

fn main() {}
