// A method of a trait impl, with a native `async fn` in the trait.

trait Directory {
    async fn name(&self, id: u64) -> Option<String>;
}

struct Ldap;

impl Directory for Ldap {
    // A trait impl takes no extra items: no companion, so no call-shaped helpers.
    #[redcache::cached(prefix = "ldap:name", ttl = 60, in_trait_impl)]
    async fn name(&self, id: u64) -> Option<String> {
        (id < 100).then(|| format!("user {id}"))
    }
}

async fn lookup<D: Directory>(directory: &D, id: u64) -> Option<String> {
    directory.name(id).await
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    redcache::Cache::memory()
        .scope(async {
            assert_eq!(lookup(&Ldap, 1).await.as_deref(), Some("user 1"));
            assert_eq!(lookup(&Ldap, 1).await.as_deref(), Some("user 1"));
            assert_eq!(lookup(&Ldap, 100).await, None);
        })
        .await;
}
