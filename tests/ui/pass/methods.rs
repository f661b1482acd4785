// Methods with `&self` and `self: Arc<Self>`: the receiver is never part of the key.

use std::sync::Arc;

struct Users {
    greeting: String,
}

impl Users {
    #[redcache::cached(prefix = "users:by_ref", ttl = 60)]
    async fn name(&self, id: u64) -> String {
        format!("{} {id}", self.greeting)
    }

    #[redcache::cached(prefix = "users:by_arc", ttl = 60)]
    async fn name_arc(self: Arc<Self>, id: u64) -> String {
        format!("{} {id}", self.greeting)
    }

    #[redcache::cached(ttl = 60)]
    async fn count(&self) -> usize {
        self.greeting.len()
    }
}

struct Repo<T> {
    items: Vec<T>,
}

impl<T: Clone + Send + Sync> Repo<T> {
    // `Self` (here `Repo<T>`) is part of the key, so `Repo<u8>` and `Repo<u16>` never share
    // entries.
    #[redcache::cached(ttl = 60)]
    async fn len(&self, extra: usize) -> usize {
        self.items.len() + extra
    }
}

fn assert_send<T: Send>(value: T) -> T {
    value
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let users = Arc::new(Users {
        greeting: "hello".to_owned(),
    });
    redcache::Cache::memory()
        .scope(async {
            assert_eq!(users.name(1).await, "hello 1");
            assert_eq!(assert_send(users.name(1)).await, "hello 1");
            assert_eq!(Arc::clone(&users).name_arc(2).await, "hello 2");
            assert_eq!(assert_send(Arc::clone(&users).name_arc(2)).await, "hello 2");
            assert_eq!(users.count().await, 5);
            assert_eq!(Repo { items: vec![1u8] }.len(1).await, 2);
            assert_eq!(
                Repo {
                    items: vec![1u16, 2]
                }
                .len(1)
                .await,
                3
            );
        })
        .await;
}
