async fn not_cached(id: u64) -> u64 {
    id
}

async fn f() -> redcache::Result<()> {
    redcache::invalidate!(not_cached(1)).await?;
    Ok(())
}

fn main() {}
