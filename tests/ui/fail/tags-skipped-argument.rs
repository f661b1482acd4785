struct Db;

#[redcache::cached(ttl = 60, skip(db), tags("user:{user_id}", "db:{db}"))]
async fn profile(user_id: u64, db: &Db) -> String {
    let Db = db;
    format!("user {user_id}")
}

fn main() {}
