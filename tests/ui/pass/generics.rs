// Generic functions: a type parameter and a const parameter (both are part of the key).

use serde::de::DeserializeOwned;
use serde::Serialize;

#[redcache::cached(ttl = 60)]
async fn first<T, const N: usize>(items: Vec<T>) -> Option<T>
where
    T: Serialize + DeserializeOwned + Clone,
{
    items.into_iter().nth(N)
}

#[redcache::cached(ttl = 60)]
async fn echo<T: Serialize + DeserializeOwned + Clone>(value: &T) -> T {
    value.clone()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    redcache::Cache::memory()
        .scope(async {
            assert_eq!(first::<u8, 0>(vec![1, 2]).await, Some(1));
            assert_eq!(first::<u8, 1>(vec![1, 2]).await, Some(2));
            assert_eq!(first::<u16, 1>(vec![1, 2]).await, Some(2));
            assert_eq!(first::<String, 5>(vec![]).await, None);
            assert_eq!(echo(&7u32).await, 7);
        })
        .await;
}
