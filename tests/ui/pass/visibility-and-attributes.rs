// Visibility, doc comments and other attributes are kept on the expanded function; a
// `#[cfg]` written after `#[cached]` applies to what it generates too, and a body's inner
// attributes stay the function's.

mod users {
    /// The name of user `id`.
    ///
    /// Cached for a minute.
    #[redcache::cached(prefix = "users:name", ttl = 60)]
    #[must_use]
    #[allow(clippy::needless_pass_by_value)]
    pub(crate) async fn name(id: u64) -> String {
        format!("user {id}")
    }

    #[doc = "Whether user `id` exists."]
    #[redcache::cached(ttl = 60)]
    #[inline]
    pub async fn exists(id: u64) -> bool {
        id > 0
    }

    #[redcache::cached(ttl = 60)]
    #[allow(non_snake_case)]
    pub(super) async fn Legacy(id: u64) -> u64 {
        id
    }

    #[cfg(any())]
    #[redcache::cached(ttl = 60)]
    pub(crate) async fn compiled_out(id: u64) -> NotAType {
        id
    }

    #[redcache::cached(ttl = 60)]
    #[cfg(any())]
    pub async fn backend(id: u64) -> NotAType {
        id
    }

    #[redcache::cached(ttl = 60)]
    #[cfg(not(any()))]
    pub async fn backend(id: u64) -> u64 {
        id + 1
    }

    // Attributes on a parameter (other than `#[cfg]`) stay on it.
    #[redcache::cached(ttl = 60)]
    pub async fn scaled(id: u64, #[allow(unused_variables)] unit: u32) -> u64 {
        id
    }

    #[redcache::cached(ttl = 60)]
    pub async fn widened(id: u32) -> u64 {
        #![allow(clippy::cast_lossless)]
        //! Inner doc comments and attributes are the function's.
        id as u64
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    redcache::Cache::memory()
        .scope(async {
            assert_eq!(users::name(1).await, "user 1");
            assert!(users::exists(1).await);
            assert_eq!(users::Legacy(3).await, 3);
            assert_eq!(users::backend(3).await, 4);
            assert_eq!(redcache::key!(users::backend(3)), redcache::key!(users::backend(3)));
            assert_eq!(users::widened(3).await, 3);
            assert_eq!(users::scaled(3, 1000).await, 3);
        })
        .await;
}
