//! The expansion compiles without warnings under strict lints.
#![deny(
    warnings,
    unused,
    unused_qualifications,
    unused_results,
    unused_extern_crates,
    unused_import_braces,
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub,
    trivial_casts,
    trivial_numeric_casts,
    single_use_lifetimes,
    let_underscore_drop,
    non_ascii_idents,
    clippy::all,
    clippy::pedantic
)]

use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// Its id.
    pub id: u64,
}

/// A failure.
#[derive(Debug)]
pub struct Failure;

/// A service.
#[derive(Debug)]
pub struct Service {
    base: u64,
}

impl Service {
    /// A user by id.
    #[redcache::cached(prefix = "lint:user", ttl = 60, jitter = 5, null_ttl = 5)]
    pub async fn user(&self, id: u64) -> Option<User> {
        (id > 0).then_some(User { id: id + self.base })
    }

    /// A user, through an `Arc`.
    ///
    /// # Errors
    ///
    /// [`Failure`] for id 0.
    #[redcache::cached(ttl = 60)]
    pub async fn user_arc(self: Arc<Self>, id: u64) -> Result<User, Failure> {
        if id > 0 {
            Ok(User { id: id + self.base })
        } else {
            Err(Failure)
        }
    }
}

/// Every user of a page.
///
/// # Errors
///
/// Never, in this example.
#[redcache::cached(ttl = 60, skip(service))]
pub async fn page(service: &Service, page: u32) -> Result<Option<Vec<User>>, Failure> {
    let first = service.user(u64::from(page)).await;
    Ok(first.map(|user| vec![user]))
}

/// No return value.
#[redcache::cached(key = (id, "touch"))]
pub async fn touch(id: u64) {
    let _ = id;
}

/// A generic function.
#[redcache::cached(ttl = 60)]
pub async fn largest<T, const N: usize>(values: &[T]) -> Option<T>
where
    T: Serialize + serde::de::DeserializeOwned + Ord + Clone,
{
    values.iter().take(N).max().cloned()
}

/// A function without arguments.
#[redcache::cached]
pub async fn constant() -> u32 {
    7
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let service = Arc::new(Service { base: 0 });
    redcache::Cache::memory()
        .scope(async {
            assert_eq!(service.user(1).await, Some(User { id: 1 }));
            assert!(Arc::clone(&service).user_arc(0).await.is_err());
            assert!(page(&service, 1).await.is_ok());
            touch(1).await;
            assert_eq!(largest::<u8, 2>(&[1, 3, 2]).await, Some(3));
            assert_eq!(constant().await, 7);
        })
        .await;
}
