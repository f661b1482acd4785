#[redcache::cached(ttl = 60)]
async fn user(id: u64) -> u64 {
    id
}

async fn f() -> redcache::Result<()> {
    redcache::put!(user(1)).await?;
    Ok(())
}

fn main() {}
