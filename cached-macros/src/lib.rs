//! Procedural macros of [redcache](https://docs.rs/redcache). Use them through the
//! `redcache` crate: generated code names `::redcache::__private`.
//!
//! # Examples
//!
//! ```
//! #[redcache::cached(prefix = "user:name", ttl = 900)]
//! async fn user_name(id: u64) -> Option<String> {
//!     Some(format!("user {id}"))
//! }
//! ```
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]

use proc_macro::TokenStream;

mod attr;
mod error;
mod expand;
mod helpers;
mod item;
mod valid;

/// Caches an `async fn` in Redis: cache-aside under a stable key made of its arguments.
///
/// The first call with some arguments runs the body and stores its result as JSON; later
/// calls with the same arguments are answered from the cache until the entry expires. A
/// `None` is cached for a shorter time, an `Err` never, and a cache fault never fails the
/// call: the body runs. Calls use the cache of the enclosing `Cache::scope(..)`, else the
/// one installed globally (`redcache::init`, `Cache::install`), else none: the body runs
/// uncached and one warning is logged.
///
/// This page is the reference of the attribute's options, one section each; the
/// [README](https://docs.rs/crate/redcache/latest/source/README.md) is the guide (key
/// and value formats, failure semantics, invalidation, Redis Cluster).
///
/// # Examples
///
/// ```
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// struct UserProfile {
///     id: u64,
///     name: String,
/// }
///
/// #[redcache::cached(prefix = "user:profile", ttl = 900)]
/// async fn get_user_profile(user_id: u64) -> Option<UserProfile> {
///     // The database query: runs on a miss only.
///     (user_id == 42).then(|| UserProfile { id: 42, name: "Ada".into() })
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let cache = redcache::Cache::memory();
/// cache
///     .scope(async {
///         let first = get_user_profile(42).await; // a miss: the body runs
///         let second = get_user_profile(42).await; // a hit
///         assert_eq!(first, second);
///     })
///     .await;
/// assert_eq!((cache.stats().misses, cache.stats().hits), (1, 1));
/// # }
/// ```
///
/// # Options
///
/// Every option is optional: `#[cached]` alone caches with the defaults. They come in any
/// order, separated by commas: [`prefix`](#prefix), [`ttl`](#ttl),
/// [`jitter`](#jitter), [`null_ttl`](#null_ttl), [`skip`](#skip), [`key`](#key),
/// [`output`](#output), [`group`](#group), [`tags`](#tags), [`lock` / `lock_ms`](#lock--lock_ms),
/// [`early_refresh`](#early_refresh), [`stale_ttl`](#stale_ttl),
/// [`stale_if_error`](#stale_if_error), [`cache_if`](#cache_if),
/// [`codec`](#codec), [`compress_above`](#compress_above), [`type_key`](#type_key),
/// [`in_trait_impl`](#in_trait_impl).
///
/// Each is checked when the function compiles, and a mistake is an error at its own span:
/// an unknown option (the error lists the valid ones, and suggests one for names other
/// caching libraries use, such as `ttl_secs` or `ignore`), an option given twice, a value
/// of the wrong form. Every mistake is reported at once, and the function is kept as
/// written, so the rest of the crate still type-checks.
///
/// # `prefix`
///
/// `prefix = "user:profile"`: the start of every key of the function,
/// `[{namespace}:]{prefix}:{md5_hex}`, where `md5_hex` is the md5 of the key material (the
/// key arguments as a JSON array). Choose one that outlives refactoring: the default
/// changes when the function is renamed or moved.
///
/// - **Default:** `module_path!()`, `::` and the function's name, e.g.
///   `my_app::users::get_user_profile`.
/// - **Checked:** a non-empty string literal without whitespace, control characters or
///   braces (it is not a template: the arguments' hash follows it).
///
/// ```
/// #[redcache::cached(prefix = "user:name", ttl = 600)]
/// async fn user_name(id: u64) -> Option<String> {
///     Some(format!("user {id}"))
/// }
///
/// #[redcache::cached(ttl = 600)]
/// async fn user_email(id: u64) -> Option<String> {
///     Some(format!("user{id}@example.com"))
/// }
///
/// # fn main() {
/// // b358e7d6ea3cae2a7ca29ee59888f401 is the md5 of `[42]`.
/// assert_eq!(redcache::key!(user_name(42)), "user:name:b358e7d6ea3cae2a7ca29ee59888f401");
/// assert_eq!(
///     redcache::key!(user_email(42)),
///     concat!(module_path!(), "::user_email:b358e7d6ea3cae2a7ca29ee59888f401"),
/// );
/// # }
/// ```
///
/// # `ttl`
///
/// `ttl = 900`: how many seconds an entry lives, before [`jitter`](#jitter). Every entry
/// expires.
///
/// - **Default:** the cache's default TTL: 300 s (`Config::builder().default_ttl(..)`,
///   `REDCACHE_DEFAULT_TTL`).
/// - **Checked:** a whole number of seconds, greater than 0 (to not cache, leave the
///   attribute off).
///
/// A constant works too, by name or in an expression (`ttl = PROFILE_TTL`,
/// `ttl = 15 * MINUTE`): the compiler evaluates it as a `u64`, and refuses another type
/// (for a `Duration`, `ttl = PROFILE_TTL.as_secs()`) or a `ttl` of 0. [`jitter`](#jitter),
/// [`null_ttl`](#null_ttl), [`stale_ttl`](#stale_ttl) and
/// [`stale_if_error`](#stale_if_error) take constants the same way (0 allowed). The
/// expression is evaluated outside the function, so it names types, not `Self` or the
/// function's generic parameters (`ttl = Repo::TTL`, not `Self::TTL`). A path is read as a
/// constant when its last name is in upper case, as Rust names constants, and otherwise as
/// a function of the value (a function named in upper case, or a constant of a function
/// pointer, is taken for a number):
///
/// `ttl = until_expiry` (a path or a closure, `fn(&T) -> Duration`): the TTL computed
/// from the value stored (`T` of `T`, `Option<T>`, `Result<T, E>`), [`jitter`](#jitter)
/// added: a token cached until shortly before it expires, a price until the market
/// closes. A `None` still lives [`null_ttl`](#null_ttl); `put!` follows the same rule. A
/// function of another signature is a type error at the expression.
///
/// ```
/// use std::time::Duration;
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Token { value: String, expires_in: u64 }
///
/// #[redcache::cached(ttl = |t: &Token| Duration::from_secs(t.expires_in - 5), jitter = 0)]
/// async fn access_token(scope: String) -> Token {
///     Token { value: "t0k3n".into(), expires_in: 65 }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> redcache::Result<()> {
/// let cache = redcache::Cache::memory();
/// cache
///     .scope(async {
///         access_token("read".into()).await;
///         let key = redcache::key!(access_token("read".into()));
///         let left = cache.ttl(&key).await?.unwrap();
///         assert!(left > Duration::from_secs(59) && left <= Duration::from_secs(60));
///         Ok(())
///     })
///     .await
/// # }
/// ```
///
/// ```
/// use std::time::Duration;
///
/// const MINUTE: u64 = 60;
///
/// #[redcache::cached(ttl = MINUTE)]
/// async fn exchange_rate(currency: &str) -> f64 {
///     1.08
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> redcache::Result<()> {
/// let cache = redcache::Cache::memory();
/// cache
///     .scope(async {
///         exchange_rate("USD").await;
///         let key = redcache::key!(exchange_rate("USD"));
///         let left = cache.ttl(&key).await?.unwrap();
///         // 60 s, plus the default jitter of up to 6 s.
///         assert!(left > Duration::from_secs(59) && left <= Duration::from_secs(66));
///         Ok(())
///     })
///     .await
/// # }
/// ```
///
/// # `jitter`
///
/// `jitter = 30`: up to that many random extra seconds on each entry's TTL, drawn anew for
/// every write, so entries written together (after a deploy, a cold start) do not expire
/// together. `jitter = 0`: every entry lives exactly `ttl`.
///
/// - **Default:** a tenth of the effective `ttl` (integer division: 0 below 10 s); with
///   `ttl = f`, a tenth of the TTL each value asks for.
/// - **Checked:** a whole number of seconds.
///
/// ```
/// use std::time::Duration;
///
/// #[redcache::cached(ttl = 60, jitter = 0)]
/// async fn exchange_rate(currency: &str) -> f64 {
///     1.08
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> redcache::Result<()> {
/// let cache = redcache::Cache::memory();
/// cache
///     .scope(async {
///         exchange_rate("USD").await;
///         let key = redcache::key!(exchange_rate("USD"));
///         let left = cache.ttl(&key).await?.unwrap();
///         assert!(left > Duration::from_secs(59) && left <= Duration::from_secs(60));
///         Ok(())
///     })
///     .await
/// # }
/// ```
///
/// # `null_ttl`
///
/// `null_ttl = 30`: how many seconds a `None` (or an `Ok(None)`) lives, cached as a null
/// entry so that lookups of something absent do not all reach the database. No jitter.
/// `null_ttl = 0`: a `None` is not cached. Functions of the other return shapes have no
/// `None`: `null_ttl` on one is an error (an alias of an `Option` says what it is with
/// [`output`](#output)).
///
/// - **Default:** the cache's default null TTL: 60 s
///   (`Config::builder().default_null_ttl(..)`, `REDCACHE_NULL_TTL`), but no longer than
///   the function's `ttl`.
/// - **Checked:** a whole number of seconds.
///
/// ```
/// use std::sync::atomic::{AtomicU32, Ordering};
///
/// static QUERIES: AtomicU32 = AtomicU32::new(0);
///
/// #[redcache::cached(ttl = 600, null_ttl = 30)]
/// async fn find_user(email: &str) -> Option<u64> {
///     QUERIES.fetch_add(1, Ordering::Relaxed);
///     None // no such user
/// }
///
/// #[redcache::cached(ttl = 600, null_ttl = 0)]
/// async fn find_order(number: u64) -> Option<u64> {
///     QUERIES.fetch_add(1, Ordering::Relaxed);
///     None
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let cache = redcache::Cache::memory();
/// cache
///     .scope(async {
///         assert_eq!(find_user("nobody@example.com").await, None);
///         assert_eq!(find_user("nobody@example.com").await, None); // the null entry
///         assert_eq!(QUERIES.load(Ordering::Relaxed), 1);
///
///         find_order(7).await;
///         find_order(7).await; // not cached: queried again
///         assert_eq!(QUERIES.load(Ordering::Relaxed), 3);
///     })
///     .await;
/// assert_eq!(cache.stats().null_hits, 1);
/// # }
/// ```
///
/// # `skip`
///
/// `skip(db, request_id)`: arguments left out of the key: pools, clients, contexts, trace
/// ids. A skipped argument need not be `Serialize`, and calls that differ only in skipped
/// arguments share one entry. The helpers (`invalidate!`, `put!`, `key!`, `#[evicts]`)
/// take `_` for a skipped argument.
///
/// - **Default:** every argument is in the key (the receiver, `self`, never is). Every key
///   argument must be `serde::Serialize`; one that is not is an error at that argument.
/// - **Checked:** each name is an argument of the function (a name a pattern argument
///   binds counts); the error lists the arguments. Not with [`key`](#key), which already
///   says what the key is made of.
///
/// ```
/// /// A connection pool: not `Serialize`, and not part of what the result depends on.
/// struct Db;
///
/// #[redcache::cached(prefix = "user:name", ttl = 600, skip(db, request_id))]
/// async fn user_name(db: &Db, id: u64, request_id: u64) -> Option<String> {
///     Some(format!("user {id}"))
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let cache = redcache::Cache::memory();
/// cache
///     .scope(async {
///         user_name(&Db, 42, 1).await;
///         user_name(&Db, 42, 2).await; // the same entry: a hit
///     })
///     .await;
/// assert_eq!(cache.stats().hits, 1);
///
/// // The key is made of `id` only: the md5 of `[42]`.
/// let key = redcache::key!(user_name(_, 42, _));
/// assert_eq!(key, "user:name:b358e7d6ea3cae2a7ca29ee59888f401");
/// # }
/// ```
///
/// # `key`
///
/// `key = expr`: the key material instead of the arguments: any `Serialize` expression
/// over the arguments, evaluated on every call before the body. Its JSON is hashed as it
/// is, not wrapped in an array. For keying on part of an argument, or on a few of many.
///
/// - **Default:** the key arguments, as a JSON array.
/// - **Checked:** an expression; not with [`skip`](#skip). Its type must be
///   `serde::Serialize`, or the error points at the expression.
///
/// ```
/// struct Session {
///     user_id: u64,
///     token: String,
/// }
///
/// #[redcache::cached(prefix = "greeting", ttl = 60, key = session.user_id)]
/// async fn greeting(session: &Session) -> String {
///     format!("Hello, user {}", session.user_id)
/// }
///
/// # fn main() {
/// let session = Session { user_id: 42, token: "secret".into() };
/// // a1d0c6e83f027327d8461063f4ac58a6 is the md5 of `42`.
/// assert_eq!(redcache::key!(greeting(&session)), "greeting:a1d0c6e83f027327d8461063f4ac58a6");
/// # }
/// ```
///
/// # `type_key`
///
/// `type_key = "user_service"`: the name a function's entries are keyed under in place of
/// the names the compiler writes. Without it, the key material of a function in an impl
/// ends with the impl's self type and trait, and that of a generic function with each type
/// parameter's name, as `std::any::type_name` spells them; rustc does not promise to keep
/// that spelling, so a toolchain upgrade may change those keys (every call then misses
/// once; no entry is ever shared). With `type_key`, the material ends with this name
/// instead, and the keys depend only on the source. Free functions that are not generic
/// need no `type_key`: their keys never contain a compiler-written name.
///
/// For a generic function or an impl over a type parameter, the name must tell the
/// instances apart: give an expression of a `&str` over the parameters, such as an
/// associated constant (`type_key = T::NAME`). Two impls or instances that give the same
/// name share entries. Const parameters stay in the key by value.
///
/// - **Default:** the compiler's names, as above.
/// - **Checked:** a non-empty string literal, or an expression whose type is
///   `AsRef<str>` (else the error points at the expression).
///
/// ```
/// trait Entity {
///     const NAME: &'static str;
/// }
/// struct User;
/// impl Entity for User {
///     const NAME: &'static str = "user";
/// }
///
/// #[redcache::cached(prefix = "entity", ttl = 60, type_key = T::NAME)]
/// async fn load<T: Entity>(id: u64) -> String {
///     format!("{} {id}", T::NAME)
/// }
///
/// # fn main() {
/// // f8029e6debfe7c84563ea614dc84449b is the md5 of `[7,"user"]`.
/// assert_eq!(redcache::key!(load::<User>(7)), "entity:f8029e6debfe7c84563ea614dc84449b");
/// # }
/// ```
///
/// # `output`
///
/// `output = "result"`: the [return shape](#return-shapes) when the macro cannot see it
/// in the return type: a type alias, such as `type Answer = Result<u32, MyError>`, which
/// would otherwise be cached as a plain value (the whole `Result`, which must then be
/// `Serialize + DeserializeOwned`; its `Err` is still never cached, unless `output =
/// "value"` asks for the whole result, `Err` included).
///
/// - **Default:** from the last path segment of the declared return type.
/// - **Checked:** one of `"value"`, `"option"`, `"result"` and `"result_option"`.
///
/// ```
/// use std::sync::atomic::{AtomicU32, Ordering};
///
/// #[derive(Debug)]
/// struct MyError;
/// type Answer = Result<u32, MyError>;
///
/// static RUNS: AtomicU32 = AtomicU32::new(0);
///
/// #[redcache::cached(ttl = 60, output = "result")]
/// async fn answer(question: u32) -> Answer {
///     RUNS.fetch_add(1, Ordering::Relaxed);
///     if question == 0 { Err(MyError) } else { Ok(42) }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let cache = redcache::Cache::memory();
/// cache
///     .scope(async {
///         assert!(answer(0).await.is_err());
///         assert!(answer(0).await.is_err()); // an `Err` is never cached: runs again
///         assert_eq!(answer(1).await.unwrap(), 42);
///         assert_eq!(answer(1).await.unwrap(), 42); // a hit
///     })
///     .await;
/// assert_eq!(RUNS.load(Ordering::Relaxed), 3);
/// # }
/// ```
///
/// # `group`
///
/// `group = "products"`: puts the function in an eviction group, which several functions
/// can share. `redcache::invalidate_group("products")` (or `#[evicts(group =
/// "products")]`) invalidates every entry of every function in the group with one Redis
/// command, however many there are. The group is the Redis Cluster hash tag of the keys,
/// `[{namespace}:]{prefix}:{products}:{md5_hex}`, so a group lives on one shard: split a
/// very large or very busy family into several groups.
///
/// - **Default:** no group.
/// - **Checked:** a non-empty string literal without whitespace, control characters or
///   braces.
///
/// ```
/// #[redcache::cached(prefix = "shop:price", ttl = 600, group = "products")]
/// async fn price(sku: u32) -> u32 {
///     sku * 100
/// }
///
/// #[redcache::cached(prefix = "shop:stock", ttl = 600, group = "products")]
/// async fn stock(sku: u32) -> u32 {
///     3
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> redcache::Result<()> {
/// let cache = redcache::Cache::memory();
/// cache
///     .scope(async {
///         let key = redcache::key!(price(7));
///         assert_eq!(key, "shop:price:{products}:9b264f7a3d69a4d3335fb7b43eb133e4");
///         price(7).await;
///         stock(7).await;
///         redcache::invalidate_group("products").await?;
///         price(7).await; // both miss again
///         stock(7).await;
///         Ok::<_, redcache::Error>(())
///     })
///     .await?;
/// assert_eq!((cache.stats().misses, cache.stats().hits), (4, 0));
/// # Ok(())
/// # }
/// ```
///
/// # `tags`
///
/// `tags("user:{user_id}", "orders")`: tags built from each call's arguments, so that an
/// event handler can retire every entry about one entity, across functions (and prefixes),
/// with `redcache::invalidate_tag("user:42")`: one command, however many entries carry the
/// tag. Where a [`group`](#group) is a fixed family, a tag names an instance.
///
/// Each tag has a generation in Redis (`[{namespace}:]redcache:tag:{tag}`, a random number);
/// a tagged call reads the generations of its tags (one `MGET`, before the entry's read) and
/// stamps its entry with their digest. An entry stamped with another digest is a miss,
/// filled over; so a fill that started before an invalidation is never served after it.
/// The key of the entry does not depend on its tags: `key!`, `invalidate!`, `put!` and
/// `#[evicts]` work as without them. Costs: one more round trip per call, and the local
/// tier does not keep tagged values. A generation lives 7 days after it was created or
/// last invalidated: older entries miss once.
///
/// - **Default:** no tags.
/// - **Checked:** non-empty string literals; braces hold the name of an argument that is
///   part of the key (not in [`skip`](#skip)), whose value is written with `Display`. With
///   [`key`](#key), name only arguments the expression uses: calls that share a key must
///   carry the same tags (this one is not checked).
///
/// ```
/// #[redcache::cached(prefix = "profile", ttl = 600, tags("user:{user_id}"))]
/// async fn profile(user_id: u64) -> String {
///     format!("user {user_id}")
/// }
///
/// #[redcache::cached(prefix = "orders", ttl = 600, tags("user:{user_id}", "orders"))]
/// async fn orders(user_id: u64, page: u32) -> Vec<u64> {
///     vec![user_id * 100 + u64::from(page)]
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> redcache::Result<()> {
/// let cache = redcache::Cache::memory();
/// cache
///     .scope(async {
///         profile(42).await;
///         orders(42, 1).await;
///         orders(7, 1).await;
///         // User 42 changed: both of its entries go, user 7's stays.
///         redcache::invalidate_tag("user:42").await?;
///         profile(42).await;
///         orders(42, 1).await;
///         orders(7, 1).await;
///         Ok::<_, redcache::Error>(())
///     })
///     .await?;
/// assert_eq!((cache.stats().misses, cache.stats().hits), (5, 1));
/// # Ok(())
/// # }
/// ```
///
/// # `lock` / `lock_ms`
///
/// `lock`, or `lock_ms = 2000`: stampede control across processes. On a miss, one process
/// takes a lease on the key (`SET {key}:lock <token> NX PX <lease>`), re-reads the key,
/// runs the body, stores the result and gives the lease back; the other processes poll
/// the entry and are served as soon as it is filled, or run the body themselves once the
/// lease has run out (a crashed or slow holder). Within one process, concurrent calls for
/// one key always share one body run, with or without `lock`.
///
/// - **Default:** off. `lock` is a lease of 5000 ms; `lock_ms = N`, of N ms.
/// - **Checked:** `lock` is a flag, without a value; `lock_ms` a whole number of
///   milliseconds, greater than 0; not both.
///
/// ```
/// #[redcache::cached(ttl = 3600, lock_ms = 2000)]
/// async fn monthly_report(month: u8) -> String {
///     // Expensive: computed once for every process that misses it at the same time.
///     format!("report {month}")
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let cache = redcache::Cache::memory();
/// let report = cache.scope(monthly_report(5)).await;
/// assert_eq!(report, "report 5");
/// # }
/// ```
///
/// # `early_refresh`
///
/// `early_refresh = 1.0`: XFetch early refresh, with this β. Entries carry their expiry
/// and how long the body took; a hit is recomputed before the entry expires with
/// probability `exp(-time_to_expiry / (compute_time × β))`, while every other caller is
/// still served the entry. So a hot key is refreshed by one caller instead of missed by
/// all of them at expiry. 1.0 is the paper's default; a larger β refreshes earlier. A
/// refresh whose body returns `Err` or panics is answered with the entry it was
/// refreshing, still valid (read again first, as for `stale_if_error`, which may find a
/// newer one that answers instead), and the entry stays.
///
/// - **Default:** off.
/// - **Checked:** a number greater than 0 (`1`, `1.0`, `2.5`).
///
/// ```
/// #[redcache::cached(ttl = 60, early_refresh = 1.0)]
/// async fn leaderboard(game: u32) -> Vec<u64> {
///     vec![game.into(); 3]
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let cache = redcache::Cache::memory();
/// cache
///     .scope(async {
///         assert_eq!(leaderboard(1).await, leaderboard(1).await);
///     })
///     .await;
/// # }
/// ```
///
/// # `stale_ttl`
///
/// `stale_ttl = 30`: stale-while-revalidate (RFC 5861's name). An entry past its TTL, but
/// by less than this many seconds, is still an answer: one caller refreshes it (it leads
/// the key's single flight and runs the body; the fill fence applies as to any fill), and
/// every other caller meanwhile is answered with the old value at once. Entries stay in
/// the store for the TTL plus the window and carry their expiry. The caller that
/// refreshes waits for the body: a body borrows its arguments, so it cannot outlive the
/// call that runs it.
///
/// - **Default:** off (0).
/// - **Checked:** a whole number of seconds.
/// - **Counted:** `Stats::stale`, metric result `stale`.
///
/// ```
/// #[redcache::cached(ttl = 60, stale_ttl = 30)]
/// async fn exchange_rate(currency: String) -> f64 {
///     1.08
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let cache = redcache::Cache::memory();
/// assert_eq!(cache.scope(exchange_rate("EUR".into())).await, 1.08);
/// # }
/// ```
///
/// # `stale_if_error`
///
/// `stale_if_error = 300`: when the body returns `Err` (or panics) and the entry it was
/// to replace is past its TTL by less than this many seconds, that entry's value is the
/// answer instead; the failure is counted (`Stats::stale`) and logged (rate-limited). An
/// invalidated entry is never used this way: invalidation leaves a tombstone, not the old
/// value, and before it answers the entry is read again, so an invalidation (of the key,
/// its group or its tags) made while the body ran counts too; if Redis cannot say, the
/// failure stands. An entry that replaced it while the body ran (another process's fill,
/// a `put!`) answers instead, if it is valid or within its own window. Without such an
/// entry the `Err` (or the panic) goes to the caller as before.
///
/// - **Default:** off (0).
/// - **Checked:** a whole number of seconds, on a function returning `Result<T, E>` or
///   `Result<Option<T>, E>` (what else would fail?).
///
/// ```
/// #[redcache::cached(ttl = 60, stale_if_error = 300)]
/// async fn price(sku: u64) -> Result<u64, String> {
///     // SELECT price FROM products WHERE sku = $1; on an outage, the last price answers.
///     Ok(sku * 100)
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let cache = redcache::Cache::memory();
/// assert_eq!(cache.scope(price(3)).await, Ok(300));
/// # }
/// ```
///
/// # `codec`
///
/// `codec = "msgpack"`: how the function's values are written in the store. `"json"` (the
/// default, readable with `redis-cli`) or `"msgpack"`: MessagePack with field names,
/// smaller and faster to decode for large values, and as complete as JSON for serde
/// (`#[serde(flatten)]`, untagged enums and `serde_json::Value` round-trip). Every reader
/// decodes every codec, so changing it needs no flush: entries already written are read
/// as they are, and rewritten in the new codec on their next fill.
///
/// - **Default:** the cache's (`Config::builder().codec(..)`, `REDCACHE_CODEC`): JSON
///   unless set.
/// - **Checked:** `"json"` or `"msgpack"`; `"msgpack"` needs redcache's `msgpack` feature
///   (a compile error at the literal without it).
///
/// ```
/// #[derive(Clone, serde::Serialize, serde::Deserialize)]
/// struct Report {
///     rows: Vec<(u64, f64)>,
/// }
///
/// #[redcache::cached(ttl = 600, codec = "msgpack")]
/// async fn monthly_report(month: u32) -> Report {
///     Report { rows: (0..1000).map(|i| (i, f64::from(month) * 1.5)).collect() }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let cache = redcache::Cache::memory();
/// assert_eq!(cache.scope(monthly_report(2)).await.rows[10], (10, 3.0));
/// # }
/// ```
///
/// # `compress_above`
///
/// `compress_above = 4096`: entries longer than this many bytes (encoded, in either codec)
/// are stored compressed with LZ4, when that makes them shorter. A reader knows from the
/// entry's first byte whether it is compressed. Worth it for large, repetitive values
/// (JSON text, lists of similar records): less memory in Redis and fewer bytes on the
/// network, for a few microseconds per 50 KB. The size limit (`max_value_bytes`) applies to
/// the compressed size.
///
/// - **Default:** the cache's (`Config::builder().compress_above(..)`,
///   `REDCACHE_COMPRESS_ABOVE`): never, unless set.
/// - **Checked:** a whole number of bytes greater than 0; needs redcache's `compression`
///   feature (a compile error at the option without it).
///
/// ```
/// #[redcache::cached(ttl = 600, compress_above = 4096)]
/// async fn page_html(slug: String) -> String {
///     format!("<html>{}</html>", "<p>lorem ipsum</p>".repeat(1000))
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let cache = redcache::Cache::memory();
/// assert!(cache.scope(page_html("about".into())).await.len() > 4096);
/// # }
/// ```
///
/// # `cache_if`
///
/// `cache_if = is_complete` (a path or a closure, `fn(&T) -> bool`): a result is cached
/// only when the predicate accepts its value (not empty lists, not partial results). A
/// refused result is returned to its caller and neither stored nor handed to callers
/// waiting on it (they run the body themselves); `put!` of a refused value removes the
/// entry instead. A `None` is not a value: it follows [`null_ttl`](#null_ttl), and an
/// `Err` is never cached.
///
/// ```
/// #[redcache::cached(ttl = 60, cache_if = |items: &Vec<u32>| !items.is_empty())]
/// async fn recent_orders(user: u64) -> Vec<u32> {
///     Vec::new() // nothing yet: asked again next time
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let cache = redcache::Cache::memory();
/// cache.scope(async { recent_orders(1).await; recent_orders(1).await }).await;
/// assert_eq!((cache.stats().misses, cache.stats().stores), (2, 0));
/// # }
/// ```
///
/// # `in_trait_impl`
///
/// For a method in a trait impl. The attribute adds a hidden companion function next to
/// the function, which `invalidate!`, `put!`, `key!` and `#[evicts]` call to derive its
/// key; a trait impl accepts only the trait's items, so there the attribute must be told
/// not to (without the flag, the error is ``method `__redcache_key_<name>` is not a member
/// of trait``). Such a method is cached the same, but its entries are invalidated with a
/// [`group`](#group) or `redcache::invalidate_prefix`, not with the call-shaped helpers.
///
/// - **Default:** off.
/// - **Checked:** a flag, without a value; only on a function that takes `self`.
///
/// ```
/// trait Directory {
///     async fn name_of(&self, id: u64) -> Option<String>;
/// }
///
/// struct Ldap;
///
/// impl Directory for Ldap {
///     #[redcache::cached(ttl = 60, group = "directory", in_trait_impl)]
///     async fn name_of(&self, id: u64) -> Option<String> {
///         Some(format!("user {id}"))
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let cache = redcache::Cache::memory();
/// cache
///     .scope(async {
///         assert_eq!(Ldap.name_of(1).await, Ldap.name_of(1).await);
///     })
///     .await;
/// assert_eq!(cache.stats().hits, 1);
/// # }
/// ```
///
/// # Function shapes
///
/// The attribute goes on an `async fn`: on a plain `fn` or a `const fn` it is an error
/// (with `#[async_trait]`, which is not supported, put it on a native `async fn` in the
/// trait impl instead). The signature, attributes and doc comments stay as written; the
/// body runs inside the cache call, so `?` and `return` work as usual.
///
/// - **Free functions**, **methods and associated functions** of inherent impls (`&self`,
///   `self: Arc<Self>`, no receiver), and methods (with a receiver) of trait impls
///   ([`in_trait_impl`](#in_trait_impl)). The receiver is never in the key,
///   but the impl is (its self type and trait, or the [`type_key`](#type_key) given), so
///   impls never share entries.
/// - **Generic functions:** the name of each type parameter is in the key (`load::<User>`
///   and `load::<Team>` never share entries), and the value of each const parameter. To
///   keep such keys the same across toolchains, name them with [`type_key`](#type_key).
/// - **Pattern arguments:** each name a pattern binds is a key argument.
/// - **Reference arguments** are hashed by what they point to: `&str` and `String` give
///   the same key.
///
/// The README's *Function shapes* and *Keys and values* sections give the details and the
/// exact key format.
///
/// ```
/// use serde::{de::DeserializeOwned, Serialize};
///
/// struct UserService;
///
/// impl UserService {
///     #[redcache::cached(ttl = 300)]
///     async fn name_of(&self, id: u64) -> Option<String> {
///         Some(format!("user {id}"))
///     }
/// }
///
/// #[redcache::cached(ttl = 60)]
/// async fn load<T: Serialize + DeserializeOwned + Default>(id: u64) -> T {
///     T::default()
/// }
///
/// #[redcache::cached(ttl = 60)]
/// async fn manhattan((x, y): (i64, i64)) -> u64 {
///     x.unsigned_abs() + y.unsigned_abs()
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let cache = redcache::Cache::memory();
/// cache
///     .scope(async {
///         assert_eq!(UserService.name_of(1).await.as_deref(), Some("user 1"));
///         assert_eq!(load::<u64>(1).await, 0);
///         assert_eq!(load::<String>(1).await, ""); // another key: `T` differs
///         assert_eq!(manhattan((3, -4)).await, 7);
///     })
///     .await;
/// assert_eq!(cache.stats().misses, 4);
/// # }
/// ```
///
/// # Return shapes
///
/// The shape is picked from the last path segment of the declared return type (so
/// `std::io::Result<T>` is a `Result`), or given with [`output`](#output):
///
/// | return type | cached | not cached |
/// |---|---|---|
/// | `T` (anything else, `()` included) | the value | |
/// | `Option<T>` | `Some(v)`; `None` as a null entry, for [`null_ttl`](#null_ttl) | `None` when `null_ttl = 0` |
/// | `Result<T, E>` | `Ok(v)` | `Err(e)`: returned as it is |
/// | `Result<Option<T>, E>` | `Ok(Some(v))`; `Ok(None)` for `null_ttl` | `Err(e)` |
///
/// The cached value must be `Serialize + DeserializeOwned`; `E` needs nothing. A hit
/// returns a value equal to what the body returned. An `impl Trait` return type, or one
/// that holds an `impl Trait` (`Option<impl Display>`), is an error: name the type. The
/// README's *Return shapes* section has the details.
#[proc_macro_attribute]
pub fn cached(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::cached(args.into(), item.into()).into()
}

/// Invalidates the entries of `#[cached]` calls after the function's body succeeded (an
/// `Ok`, or any value when it returns no `Result`; a type alias of a `Result` is one, a
/// bare `impl Trait` is not, whatever type it hides). A call dropped while its body runs,
/// or whose body panics, invalidates them too, on a task of its own: its write may have
/// been made.
///
/// Targets, any number, evaluated from the arguments before the body runs: calls of
/// `#[cached]` functions (`user_name(id)`, `repo.find(id)`), `group = "products"`, and
/// `tag = "user:{id}"` (a format string over the arguments; see `#[cached(tags(..))]`).
///
/// # Examples
///
/// ```
/// #[redcache::cached(ttl = 600)]
/// async fn user_name(id: u64) -> Option<String> {
///     Some(format!("user {id}"))
/// }
///
/// #[redcache::evicts(user_name(id))]
/// async fn rename(id: u64, name: String) -> Result<(), std::io::Error> {
///     // UPDATE users SET name = $2 WHERE id = $1
///     Ok(())
/// }
/// ```
#[proc_macro_attribute]
pub fn evicts(args: TokenStream, item: TokenStream) -> TokenStream {
    helpers::evicts(args.into(), item.into()).into()
}

/// Invalidates the entry of one call of a `#[cached]` function: a future of
/// `redcache::Result<bool>`.
///
/// # Examples
///
/// ```
/// #[redcache::cached(ttl = 600)]
/// async fn user_name(id: u64) -> Option<String> {
///     Some(format!("user {id}"))
/// }
///
/// # async fn f() -> redcache::Result<()> {
/// let removed: bool = redcache::invalidate!(user_name(42)).await?;
/// # Ok(()) }
/// ```
#[proc_macro]
pub fn invalidate(input: TokenStream) -> TokenStream {
    helpers::call_helper(input.into(), "invalidate", "invalidate").into()
}

/// Stores a value as the result of one call of a `#[cached]` function (write-through): a
/// future of `redcache::Result<()>`.
///
/// It stores the new value or falls back to invalidating: a value the function does not
/// cache (refused by `cache_if`, a `None` with `null_ttl = 0`) retires the call's entry
/// instead, and so does a value that cannot be stored.
///
/// # Errors
///
/// `Error::NotCacheable` for an `Err` (the entry is left as it was). The value is over
/// `max_value_bytes` or does not serialize, or the store failed, timed out or is skipped
/// by the open circuit breaker (`Error::Unavailable`): the entry is retired all the same,
/// like an `invalidate!` (which the breaker never skips), so that no process serves the
/// value it was to replace, and the error says the new one was not stored.
///
/// # Examples
///
/// ```
/// #[redcache::cached(ttl = 600)]
/// async fn user_name(id: u64) -> Option<String> {
///     Some(format!("user {id}"))
/// }
///
/// # async fn f() -> redcache::Result<()> {
/// redcache::put!(user_name(42), Some("Ada".to_string())).await?;
/// # Ok(()) }
/// ```
#[proc_macro]
pub fn put(input: TokenStream) -> TokenStream {
    helpers::put(input.into()).into()
}

/// The exact key of one call of a `#[cached]` function, as a `String`.
///
/// # Examples
///
/// ```
/// #[redcache::cached(prefix = "user:name", ttl = 600)]
/// async fn user_name(id: u64) -> Option<String> {
///     Some(format!("user {id}"))
/// }
///
/// # fn main() {
/// let key: String = redcache::key!(user_name(42));
/// assert_eq!(key, "user:name:b358e7d6ea3cae2a7ca29ee59888f401");
/// # }
/// ```
#[proc_macro]
pub fn key(input: TokenStream) -> TokenStream {
    helpers::call_helper(input.into(), "key", "key").into()
}
