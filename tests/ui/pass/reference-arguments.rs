// Reference and `impl Trait` arguments: `&str`, `&[T]`, `&T`, `impl Serialize`.

use serde::Serialize;
use std::collections::HashMap;

#[derive(Serialize)]
struct Filter {
    active: bool,
}

#[redcache::cached(ttl = 60)]
async fn greet(name: &str) -> String {
    format!("hello {name}")
}

#[redcache::cached(ttl = 60)]
async fn total(values: &[u64]) -> u64 {
    values.iter().sum()
}

#[redcache::cached(ttl = 60)]
async fn count(filter: &Filter, tags: &HashMap<String, u32>) -> usize {
    if filter.active {
        tags.len()
    } else {
        0
    }
}

#[redcache::cached(ttl = 60)]
async fn describe(value: impl Serialize + Send) -> bool {
    let _ = value;
    true
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    redcache::Cache::memory()
        .scope(async {
            assert_eq!(greet("ann").await, "hello ann");
            assert_eq!(total(&[1, 2, 3]).await, 6);
            let tags = HashMap::from([("a".to_owned(), 1)]);
            assert_eq!(count(&Filter { active: true }, &tags).await, 1);
            assert!(describe(("x", 1)).await);
        })
        .await;
}
