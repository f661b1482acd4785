// `key = expr`: the key material is an expression over the arguments.

use serde::Serialize;

struct User {
    id: u64,
    session: String,
}

#[derive(Serialize)]
struct Query<'a> {
    term: &'a str,
    page: u32,
}

#[redcache::cached(ttl = 60, key = (user.id, page))]
async fn feed(user: &User, page: u32) -> Vec<String> {
    vec![format!("{} {} {page}", user.id, user.session)]
}

#[redcache::cached(ttl = 60, key = Query { term: term.trim(), page })]
async fn search(term: &str, page: u32) -> usize {
    term.len() + page as usize
}

#[redcache::cached(ttl = 60, key = "constant")]
async fn constant(id: u64) -> u64 {
    id
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let user = User {
        id: 1,
        session: "s1".to_owned(),
    };
    redcache::Cache::memory()
        .scope(async {
            assert_eq!(feed(&user, 2).await, vec!["1 s1 2".to_owned()]);
            assert_eq!(search(" rust ", 1).await, 7);
            assert_eq!(search("rust", 1).await, 7);
            assert_eq!(constant(1).await, 1);
            assert_eq!(constant(2).await, 1);
        })
        .await;
}
