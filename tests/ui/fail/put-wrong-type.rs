#[redcache::cached(ttl = 60)]
async fn user(id: u64) -> Option<String> {
    Some(format!("user {id}"))
}

async fn f() -> redcache::Result<()> {
    redcache::put!(user(1), "Ada".to_string()).await?;
    Ok(())
}

fn main() {}
