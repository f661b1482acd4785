#[redcache::evicts(tag = "user:{id}")]
async fn rename(user_id: u64) -> Result<(), String> {
    let _ = user_id;
    Ok(())
}

fn main() {}
