// `#[cached]` written by a `macro_rules!` macro: substituted literals are checked as the
// literals they are.

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

fn main() {
    let _ = (user_name(1), team_name(2));
    assert_eq!(redcache::key!(user_name(7)).split(':').next(), Some("user"));
}
