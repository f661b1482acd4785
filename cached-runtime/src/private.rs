//! What `#[cached]`-generated code calls. Not public API: no stability guarantees.

use crate::client::{warn_not_initialized, Cache};
use crate::codec::{self, Decoded};
use crate::ttl::{default_jitter, Policy};
use serde::de::{DeserializeOwned, Error as _};
use serde::Serialize;
use std::future::Future;
use std::marker::PhantomData;

pub use crate::key::{KeyArg, KeyArgs};

/// What a cached function returns (inside `Option`/`Result`): JSON both ways. Named so a
/// mistake reads as one about caching, pointing at the return type.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be cached: it must implement `serde::Serialize` and `serde::de::DeserializeOwned`",
    label = "the cached value",
    note = "derive both: `#[derive(serde::Serialize, serde::Deserialize)]`; a type borrowing data (`&str`, `&[T]`) must be owned (`String`, `Vec<T>`)"
)]
pub trait CacheValue: Serialize + DeserializeOwned {}

impl<T: Serialize + DeserializeOwned> CacheValue for T {}

/// The attribute's options for one function, as a `static`.
#[derive(Debug)]
pub struct Spec {
    /// Key prefix.
    pub prefix: &'static str,
    /// TTL in seconds; `None`: the cache's default.
    pub ttl: Option<u64>,
    /// Largest extra random seconds; `None`: a tenth of the TTL.
    pub jitter: Option<u64>,
    /// TTL of a cached `None` in seconds (0: not cached); `None`: the cache's default.
    pub null_ttl: Option<u64>,
}

impl Spec {
    fn policy(&self, cache: &Cache) -> Policy {
        let config = cache.config();
        let ttl = self.ttl.unwrap_or(config.default_ttl());
        let jitter = self.jitter.unwrap_or_else(|| default_jitter(ttl));
        let null_ttl = self.null_ttl.unwrap_or(config.default_null_ttl());
        Policy::seconds(ttl, jitter, null_ttl)
    }
}

/// What to store for a result.
#[derive(Debug)]
pub enum Outcome {
    /// A value's envelope (or why it does not encode).
    Value(serde_json::Result<Vec<u8>>),
    /// A `None`, cached for the null TTL.
    Null,
    /// Nothing (an `Err`).
    Skip,
}

/// A result read back from an entry.
#[derive(Debug)]
pub enum Hit<O> {
    /// From a stored value.
    Value(O),
    /// From a cached `None`.
    Null(O),
}

/// How a return type maps to entries.
pub trait Shape {
    /// The function's return type.
    type Output;
    /// What to store for `out`.
    fn outcome(out: &Self::Output) -> Outcome;
    /// `Output` from an entry; an entry of the wrong kind is an error (a miss).
    fn decode(bytes: &[u8]) -> serde_json::Result<Hit<Self::Output>>;
}

fn null_not_expected() -> serde_json::Error {
    serde_json::Error::custom("a cached None where this function returns no Option")
}

/// `T`: always cached.
#[derive(Debug)]
pub struct Plain<T>(PhantomData<T>);
/// `Option<T>`: `None` cached for the null TTL.
#[derive(Debug)]
pub struct Opt<T>(PhantomData<T>);
/// `Result<T, E>`: `Err` never cached.
#[derive(Debug)]
pub struct Res<T, E>(PhantomData<(T, E)>);
/// `Result<Option<T>, E>`: `Ok(None)` cached for the null TTL, `Err` never.
#[derive(Debug)]
pub struct ResOpt<T, E>(PhantomData<(T, E)>);

impl<T: CacheValue> Shape for Plain<T> {
    type Output = T;
    fn outcome(out: &T) -> Outcome {
        Outcome::Value(codec::encode_value(out))
    }
    fn decode(bytes: &[u8]) -> serde_json::Result<Hit<T>> {
        match codec::decode(bytes)? {
            Decoded::Value(v) => Ok(Hit::Value(v)),
            Decoded::Null => Err(null_not_expected()),
        }
    }
}

impl<T: CacheValue> Shape for Opt<T> {
    type Output = Option<T>;
    fn outcome(out: &Option<T>) -> Outcome {
        match out {
            Some(v) => Outcome::Value(codec::encode_value(v)),
            None => Outcome::Null,
        }
    }
    fn decode(bytes: &[u8]) -> serde_json::Result<Hit<Option<T>>> {
        Ok(match codec::decode(bytes)? {
            Decoded::Value(v) => Hit::Value(Some(v)),
            Decoded::Null => Hit::Null(None),
        })
    }
}

impl<T: CacheValue, E> Shape for Res<T, E> {
    type Output = Result<T, E>;
    fn outcome(out: &Result<T, E>) -> Outcome {
        match out {
            Ok(v) => Outcome::Value(codec::encode_value(v)),
            Err(_) => Outcome::Skip,
        }
    }
    fn decode(bytes: &[u8]) -> serde_json::Result<Hit<Result<T, E>>> {
        match codec::decode(bytes)? {
            Decoded::Value(v) => Ok(Hit::Value(Ok(v))),
            Decoded::Null => Err(null_not_expected()),
        }
    }
}

impl<T: CacheValue, E> Shape for ResOpt<T, E> {
    type Output = Result<Option<T>, E>;
    fn outcome(out: &Result<Option<T>, E>) -> Outcome {
        match out {
            Ok(Some(v)) => Outcome::Value(codec::encode_value(v)),
            Ok(None) => Outcome::Null,
            Err(_) => Outcome::Skip,
        }
    }
    fn decode(bytes: &[u8]) -> serde_json::Result<Hit<Result<Option<T>, E>>> {
        Ok(match codec::decode(bytes)? {
            Decoded::Value(v) => Hit::Value(Ok(Some(v))),
            Decoded::Null => Hit::Null(Ok(None)),
        })
    }
}

/// Runs one cached call of shape `S`.
async fn run<S, F>(spec: &'static Spec, key: KeyArgs, body: F) -> S::Output
where
    S: Shape,
    F: Future<Output = S::Output>,
{
    let Some(cache) = Cache::current() else {
        warn_not_initialized();
        return body.await;
    };
    let key = match key.key(cache.config().namespace(), spec.prefix) {
        Ok(key) => key,
        Err(err) => {
            cache.fault(spec.prefix, &err);
            return body.await;
        }
    };
    let policy = spec.policy(&cache);
    cache.get_or_run::<S, F>(&key, &policy, body).await
}

/// A function returning `T`.
pub async fn plain<T, F>(spec: &'static Spec, key: KeyArgs, body: F) -> T
where
    T: CacheValue,
    F: Future<Output = T>,
{
    run::<Plain<T>, F>(spec, key, body).await
}

/// A function returning `Option<T>`.
pub async fn option<T, F>(spec: &'static Spec, key: KeyArgs, body: F) -> Option<T>
where
    T: CacheValue,
    F: Future<Output = Option<T>>,
{
    run::<Opt<T>, F>(spec, key, body).await
}

/// A function returning `Result<T, E>`.
pub async fn result<T, E, F>(spec: &'static Spec, key: KeyArgs, body: F) -> Result<T, E>
where
    T: CacheValue,
    F: Future<Output = Result<T, E>>,
{
    run::<Res<T, E>, F>(spec, key, body).await
}

/// A function returning `Result<Option<T>, E>`.
pub async fn result_option<T, E, F>(
    spec: &'static Spec,
    key: KeyArgs,
    body: F,
) -> Result<Option<T>, E>
where
    T: CacheValue,
    F: Future<Output = Result<Option<T>, E>>,
{
    run::<ResOpt<T, E>, F>(spec, key, body).await
}

/// Names a type in the key material of a generic function.
pub fn type_name<T: ?Sized>() -> &'static str {
    core::any::type_name::<T>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<S: Shape>(out: S::Output) -> (S::Output, bool)
    where
        S::Output: Clone,
    {
        let bytes = match S::outcome(&out) {
            Outcome::Value(bytes) => bytes.unwrap(),
            Outcome::Null => codec::encode_null(),
            Outcome::Skip => panic!("not cacheable"),
        };
        match S::decode(&bytes).unwrap() {
            Hit::Value(v) => (v, false),
            Hit::Null(v) => (v, true),
        }
    }

    #[test]
    fn every_shape_returns_what_was_stored() {
        assert_eq!(round_trip::<Plain<u8>>(3), (3, false));
        assert_eq!(round_trip::<Plain<()>>(()), ((), false));
        assert_eq!(round_trip::<Opt<u8>>(Some(3)), (Some(3), false));
        assert_eq!(round_trip::<Opt<u8>>(None), (None, true));
        assert_eq!(
            round_trip::<Opt<Option<u8>>>(Some(None)),
            (Some(None), false)
        );
        assert_eq!(round_trip::<Opt<Option<u8>>>(None), (None, true));
        assert_eq!(
            round_trip::<Opt<Option<u8>>>(Some(Some(1))),
            (Some(Some(1)), false)
        );
        assert_eq!(round_trip::<Res<u8, String>>(Ok(3)), (Ok(3), false));
        assert_eq!(round_trip::<ResOpt<u8, String>>(Ok(None)), (Ok(None), true));
        assert_eq!(
            round_trip::<ResOpt<Option<u8>, String>>(Ok(Some(None))),
            (Ok(Some(None)), false)
        );
    }

    #[test]
    fn errors_are_never_stored() {
        assert!(matches!(
            Res::<u8, String>::outcome(&Err("e".into())),
            Outcome::Skip
        ));
        assert!(matches!(
            ResOpt::<u8, String>::outcome(&Err("e".into())),
            Outcome::Skip
        ));
    }

    #[test]
    fn a_null_entry_is_a_miss_for_shapes_without_option() {
        assert!(Plain::<Option<u8>>::decode(&codec::encode_null()).is_err());
        assert!(Res::<u8, ()>::decode(&codec::encode_null()).is_err());
    }
}
