// `#[evicts]` on functions of other return types than a `Result`: an alias of one (asked
// of the type), a reference, a type parameter, `Self`, a type from a `macro_rules!`
// fragment.

#[redcache::cached(ttl = 60)]
async fn user(id: u64) -> Option<String> {
    Some(format!("user {id}"))
}

type Outcome<T> = Result<T, std::io::Error>;

#[redcache::evicts(user(id))]
async fn rename(id: u64) -> Outcome<()> {
    let _ = id;
    Ok(())
}

#[redcache::evicts(user(id))]
async fn label(id: u64) -> &'static str {
    let _ = id;
    "renamed"
}

#[redcache::evicts(user(id))]
async fn echo<T: Send>(id: u64, value: T) -> T {
    let _ = id;
    value
}

struct Counter(u64);

impl Counter {
    #[redcache::evicts(user(id))]
    async fn reset(id: u64) -> Self {
        Counter(id)
    }
}

macro_rules! evicting {
    ($name:ident -> $ret:ty) => {
        #[redcache::evicts(user(id))]
        async fn $name(id: u64) -> $ret {
            Default::default()
        }
    };
}

evicting!(cleared -> Option<u64>);

#[tokio::main(flavor = "current_thread")]
async fn main() {
    redcache::Cache::memory()
        .scope(async {
            rename(1).await.unwrap();
            assert_eq!(label(1).await, "renamed");
            assert_eq!(echo(1, 7u8).await, 7);
            assert_eq!(Counter::reset(1).await.0, 1);
            assert_eq!(cleared(1).await, None);
        })
        .await;
}
