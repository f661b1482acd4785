// A prefix is not a template: `{user_id}` would stay as it is in every key.
#[redcache::cached(prefix = "user:{user_id}", ttl = 60)]
async fn profile(user_id: u64) -> String {
    format!("user {user_id}")
}

fn main() {}
