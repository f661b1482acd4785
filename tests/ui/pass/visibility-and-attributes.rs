// Visibility, doc comments and other attributes are kept on the expanded function.

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
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    redcache::Cache::memory()
        .scope(async {
            assert_eq!(users::name(1).await, "user 1");
            assert!(users::exists(1).await);
            assert_eq!(users::Legacy(3).await, 3);
        })
        .await;
}
