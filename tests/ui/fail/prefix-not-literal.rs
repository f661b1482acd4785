const PREFIX: &str = "user:name";

#[redcache::cached(prefix = PREFIX)]
async fn user_name(id: u64) -> String {
    let _ = PREFIX;
    format!("user {id}")
}

fn main() {}
