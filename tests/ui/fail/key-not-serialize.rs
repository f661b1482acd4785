struct Session {
    id: u64,
}

#[redcache::cached(ttl = 60, key = session)]
async fn user_name(session: &Session) -> String {
    format!("user {}", session.id)
}

fn main() {}
