// `#[cached]` written by a `macro_rules!` macro: substituted literals are checked as the
// literals they are. The helpers take calls and groups substituted as `$call:expr`.

macro_rules! cached_lookup {
    ($name:ident, $prefix:literal, $ttl:literal, $codec:literal, $group:expr) => {
        #[redcache::cached(prefix = $prefix, ttl = $ttl, codec = $codec, group = $group)]
        async fn $name(id: u64) -> Option<String> {
            (id != 0).then(|| format!("{} {id}", $prefix))
        }
    };
}

cached_lookup!(user_name, "user:name", 900, "json", "users");
cached_lookup!(team_name, "team:name", 60, "json", "teams");

macro_rules! key_of {
    ($call:expr) => {
        redcache::key!($call)
    };
}

macro_rules! retire {
    ($call:expr) => {
        redcache::invalidate!($call)
    };
}

macro_rules! evicting {
    ($name:ident, $call:expr, $group:expr) => {
        #[redcache::evicts($call, group = $group)]
        async fn $name() -> Result<(), String> {
            Ok(())
        }
    };
}

evicting!(rename_user, user_name(7), "teams");

fn main() {
    let _ = (user_name(1), team_name(2), rename_user());
    assert_eq!(redcache::key!(user_name(7)).split(':').next(), Some("user"));
    assert_eq!(key_of!(user_name(7)), redcache::key!(user_name(7)));
    let _ = retire!(user_name(7));
}
