// Every return shape: `T`, `Option<T>`, `Result<T, E>`, `Result<Option<T>, E>`, a one-argument
// `Result` alias, `Option<Option<T>>` and `()`.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Profile {
    id: u64,
}

#[derive(Debug)]
struct MyErr;

impl fmt::Display for MyErr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("my error")
    }
}

impl std::error::Error for MyErr {}

type Result<T> = std::result::Result<T, MyErr>;

#[redcache::cached(ttl = 60)]
async fn plain(id: u64) -> Profile {
    Profile { id }
}

#[redcache::cached(ttl = 60, null_ttl = 5)]
async fn option(id: u64) -> Option<Profile> {
    (id > 0).then_some(Profile { id })
}

#[redcache::cached(ttl = 60)]
async fn result(id: u64) -> std::result::Result<Profile, MyErr> {
    if id > 0 {
        Ok(Profile { id })
    } else {
        Err(MyErr)
    }
}

#[redcache::cached(ttl = 60)]
async fn result_option(id: u64) -> std::result::Result<Option<Profile>, String> {
    Ok((id > 0).then_some(Profile { id }))
}

#[redcache::cached(ttl = 60)]
async fn alias(id: u64) -> Result<Profile> {
    if id > 0 {
        Ok(Profile { id })
    } else {
        Err(MyErr)
    }
}

#[redcache::cached(ttl = 60)]
async fn alias_option(id: u64) -> Result<Option<Profile>> {
    Ok((id > 0).then_some(Profile { id }))
}

#[redcache::cached(ttl = 60)]
async fn nested(id: u64) -> Option<Option<u64>> {
    match id {
        0 => None,
        1 => Some(None),
        id => Some(Some(id)),
    }
}

#[redcache::cached(ttl = 60)]
async fn unit(id: u64) {
    let _ = id;
}

#[redcache::cached(ttl = 60)]
async fn explicit_unit(id: u64) -> () {
    let _ = id;
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    redcache::Cache::memory()
        .scope(async {
            for _ in 0..2 {
                assert_eq!(plain(1).await, Profile { id: 1 });
                assert_eq!(option(1).await, Some(Profile { id: 1 }));
                assert_eq!(option(0).await, None);
                assert_eq!(result(1).await.unwrap(), Profile { id: 1 });
                assert!(result(0).await.is_err());
                assert_eq!(result_option(0).await, Ok(None));
                assert_eq!(alias(2).await.unwrap(), Profile { id: 2 });
                assert!(alias(0).await.is_err());
                assert_eq!(alias_option(0).await.unwrap(), None);
                assert_eq!(nested(0).await, None);
                assert_eq!(nested(1).await, Some(None));
                assert_eq!(nested(2).await, Some(Some(2)));
                unit(1).await;
                explicit_unit(1).await;
            }
        })
        .await;
}
