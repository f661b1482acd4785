async fn f() -> redcache::Result<()> {
    redcache::invalidate!("user:profile:1").await?;
    Ok(())
}

fn main() {}
