// A free function with every option (`key` replaces the argument list, so it has its own
// function: `skip` and `key` together are an error).

#[redcache::cached(
    prefix = "user:name",
    ttl = 900,
    jitter = 30,
    null_ttl = 10,
    skip(verbose),
    group = "users",
    lock_ms = 3000,
    early_refresh = 1.5,
    codec = "json"
)]
async fn user_name(id: u64, verbose: bool) -> Option<String> {
    if verbose {
        println!("loading user {id}");
    }
    (id != 0).then(|| format!("user {id}"))
}

#[redcache::cached(prefix = "user:page", ttl = 900, jitter = 0, key = (id, page))]
async fn user_page(id: u64, page: u32, trace: &str) -> Vec<u64> {
    let _ = trace;
    vec![id, u64::from(page)]
}

#[redcache::cached]
async fn defaults(id: u64) -> u64 {
    id + 1
}

#[redcache::cached(lock, early_refresh = 2)]
async fn locked(id: u64) -> u64 {
    id + 3
}

#[redcache::cached()]
async fn empty_parens(id: u64) -> u64 {
    id + 2
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    redcache::Cache::memory()
        .scope(async {
            assert_eq!(user_name(7, true).await.as_deref(), Some("user 7"));
            assert_eq!(user_name(7, false).await.as_deref(), Some("user 7"));
            assert_eq!(user_name(0, false).await, None);
            assert_eq!(user_page(1, 2, "a").await, vec![1, 2]);
            assert_eq!(user_page(1, 2, "b").await, vec![1, 2]);
            assert_eq!(defaults(1).await, 2);
            assert_eq!(empty_parens(1).await, 3);
            assert_eq!(locked(1).await, 4);
        })
        .await;
}
