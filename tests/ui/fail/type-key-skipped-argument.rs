trait Repo: Sync {
    fn table(&self) -> &'static str;
}

#[redcache::cached(ttl = 60, skip(repo), type_key = repo.table())]
async fn user<R: Repo>(repo: &R, id: u64) -> String {
    format!("{} {id}", repo.table())
}

fn main() {}
