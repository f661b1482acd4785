// `#[evicts]` on functions of other return types than a `Result`: an alias of one (asked
// of the type), a reference, a type parameter, `Self`, a type from a `macro_rules!`
// fragment, an `impl Trait` (alone or in a `Result`).

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

#[redcache::evicts(user(id))]
async fn shown(id: u64) -> impl std::fmt::Display {
    format!("shown {id}")
}

#[redcache::evicts(user(id))]
async fn checked(id: u64) -> Result<impl std::fmt::Display, std::io::Error> {
    if id == 0 {
        return Err(std::io::Error::other("no user 0"));
    }
    Ok(id)
}

/// The body's returns still convert into the declared error: `?`, and a `Box` of a
/// concrete error.
#[redcache::evicts(user(id))]
async fn parsed(id: u64, text: &str) -> Result<impl std::fmt::Display, Box<dyn std::error::Error>> {
    if id == 0 {
        return Err(Box::new(std::fmt::Error));
    }
    let n: u64 = text.parse()?;
    Ok(n)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cache = redcache::Cache::memory();
    let store = &cache;
    let cached = |id| async move { store.ttl(&redcache::key!(user(id))).await.unwrap() };
    cache
        .scope(async {
            user(2).await;
            assert!(cached(2).await.is_some());
            assert_eq!(shown(2).await.to_string(), "shown 2");
            assert!(cached(2).await.is_none());
            user(3).await;
            assert_eq!(checked(3).await.unwrap().to_string(), "3");
            assert!(cached(3).await.is_none());
            user(0).await;
            assert!(checked(0).await.is_err());
            assert!(cached(0).await.is_some(), "an `Err` evicts nothing");
            assert!(parsed(0, "1").await.is_err());
            assert!(parsed(4, "x").await.is_err());
            assert!(cached(0).await.is_some());
            assert_eq!(parsed(2, "5").await.unwrap().to_string(), "5");
            rename(1).await.unwrap();
            assert_eq!(label(1).await, "renamed");
            assert_eq!(echo(1, 7u8).await, 7);
            assert_eq!(Counter::reset(1).await.0, 1);
            assert_eq!(cleared(1).await, None);
        })
        .await;
}
