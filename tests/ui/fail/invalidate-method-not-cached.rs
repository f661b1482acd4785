struct Service;

impl Service {
    async fn get(&self, id: u64) -> u64 {
        id
    }
}

async fn f(svc: &Service) -> redcache::Result<()> {
    redcache::invalidate!(svc.get(1)).await?;
    Ok(())
}

fn main() {}
