#[redcache::cached(skip(pool))]
async fn user_name(id: u64, verbose: bool) -> String {
    let _ = verbose;
    format!("user {id}")
}

fn main() {}
