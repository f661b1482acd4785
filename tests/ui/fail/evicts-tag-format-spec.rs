#[redcache::evicts(tag = "user:{id:?}")]
async fn rename(id: u64) -> Result<(), String> {
    let _ = id;
    Ok(())
}

fn main() {}
