//! Return shapes: how a cached function's return type maps to entries and back. `T` is
//! always cached ([`Plain`]), `Option<T>` caches `None` for the null TTL ([`Opt`]),
//! `Result<T, E>` never caches `Err` ([`Res`]), `Result<Option<T>, E>` both ([`ResOpt`]).
//! The macro picks one from the return type's last path segment.

use crate::codec::{self, Decoded, Format, Refresh, Stamp, Windows};
use crate::ttl::{millis, unix_ms, Policy};
use serde::de::{DeserializeOwned, Error as _};
use serde::Serialize;
use std::time::Duration;

/// What a cached function returns (inside `Option`/`Result`): JSON both ways. Named so a
/// mistake reads as one about caching, pointing at the return type.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be cached: it must implement `serde::Serialize` and `serde::de::DeserializeOwned`",
    label = "the cached value",
    note = "derive both: `#[derive(serde::Serialize, serde::Deserialize)]`; a type borrowing data (`&str`, `&[T]`) must be owned (`String`, `Vec<T>`)"
)]
pub trait CacheValue: Serialize + DeserializeOwned {}

impl<T: Serialize + DeserializeOwned> CacheValue for T {}

/// What to store for a result.
#[derive(Debug)]
pub enum Outcome {
    /// A value's envelope (or why it does not encode).
    Value(serde_json::Result<Vec<u8>>),
    /// A `None`'s envelope, cached for the null TTL.
    Null(Vec<u8>),
    /// Nothing (an `Err`).
    Skip,
}

/// What an entry held, as a function's output.
#[derive(Debug)]
pub enum Found<O> {
    /// A stored value.
    Value(O),
    /// A cached `None`.
    Null(O),
    /// A tombstone: the key was invalidated moments ago (a miss).
    Gone,
}

/// How the return type `O` maps to entries; implemented by the four kinds [`Plain`],
/// [`Opt`], [`Res`] and [`ResOpt`].
pub trait Shape<O> {
    /// What to store for `out`, with `stamp` in its envelope, written in `format`.
    fn encode(out: &O, stamp: Stamp, format: Format) -> Outcome;
    /// `O` from an entry, and the entry's stamp; an entry of the wrong kind is an error (a
    /// miss).
    fn decode(bytes: &[u8]) -> serde_json::Result<(Found<O>, Stamp)>;
    /// Whether `out` is a failure (an `Err`), which `stale_if_error` may answer instead.
    fn failed(out: &O) -> bool {
        let _ = out;
        false
    }
}

fn null_not_expected() -> serde_json::Error {
    serde_json::Error::custom("a cached None where this function returns no Option")
}

/// Reads an envelope with `wrap` turning its value into the output.
fn decode_with<T: CacheValue, O>(
    bytes: &[u8],
    wrap: impl FnOnce(T) -> O,
    null: Option<O>,
) -> serde_json::Result<(Found<O>, Stamp)> {
    let envelope = codec::decode::<T>(bytes)?;
    let found = match envelope.body {
        Decoded::Value(v) => Found::Value(wrap(v)),
        Decoded::Null => Found::Null(null.ok_or_else(null_not_expected)?),
        Decoded::Gone => Found::Gone,
    };
    Ok((found, envelope.stamp))
}

/// `T`: always cached.
#[derive(Debug)]
pub struct Plain;
/// `Option<T>`: `None` cached for the null TTL.
#[derive(Debug)]
pub struct Opt;
/// `Result<T, E>`: `Err` never cached.
#[derive(Debug)]
pub struct Res;
/// `Result<Option<T>, E>`: `Ok(None)` cached for the null TTL, `Err` never.
#[derive(Debug)]
pub struct ResOpt;

impl<T: CacheValue> Shape<T> for Plain {
    fn encode(out: &T, stamp: Stamp, format: Format) -> Outcome {
        Outcome::Value(codec::encode_value(out, stamp, format))
    }
    fn decode(bytes: &[u8]) -> serde_json::Result<(Found<T>, Stamp)> {
        decode_with(bytes, |v| v, None)
    }
}

impl<T: CacheValue> Shape<Option<T>> for Opt {
    fn encode(out: &Option<T>, stamp: Stamp, format: Format) -> Outcome {
        match out {
            Some(v) => Outcome::Value(codec::encode_value(v, stamp, format)),
            None => Outcome::Null(codec::encode_null(stamp.of_null(), format)),
        }
    }
    fn decode(bytes: &[u8]) -> serde_json::Result<(Found<Option<T>>, Stamp)> {
        decode_with(bytes, Some, Some(None))
    }
}

impl<T: CacheValue, E> Shape<Result<T, E>> for Res {
    fn encode(out: &Result<T, E>, stamp: Stamp, format: Format) -> Outcome {
        match out {
            Ok(v) => Outcome::Value(codec::encode_value(v, stamp, format)),
            Err(_) => Outcome::Skip,
        }
    }
    fn decode(bytes: &[u8]) -> serde_json::Result<(Found<Result<T, E>>, Stamp)> {
        decode_with(bytes, Ok, None)
    }
    fn failed(out: &Result<T, E>) -> bool {
        out.is_err()
    }
}

impl<T: CacheValue, E> Shape<Result<Option<T>, E>> for ResOpt {
    fn encode(out: &Result<Option<T>, E>, stamp: Stamp, format: Format) -> Outcome {
        match out {
            Ok(Some(v)) => Outcome::Value(codec::encode_value(v, stamp, format)),
            Ok(None) => Outcome::Null(codec::encode_null(stamp.of_null(), format)),
            Err(_) => Outcome::Skip,
        }
    }
    fn decode(bytes: &[u8]) -> serde_json::Result<(Found<Result<Option<T>, E>>, Stamp)> {
        decode_with(bytes, |v| Ok(Some(v)), Some(Ok(None)))
    }
    fn failed(out: &Result<Option<T>, E>) -> bool {
        out.is_err()
    }
}

/// The value a return shape stores, if the output holds one: `T` of `T`, of `Some(T)`, of
/// `Ok(T)`, of `Ok(Some(T))`. What `ttl = f` and `cache_if = f` look at.
pub trait Holds<O> {
    /// The stored value's type.
    type Value;
    /// The stored value in `out`, if any.
    fn value(out: &O) -> Option<&Self::Value>;
    /// The output holding `value`.
    fn wrap(value: Self::Value) -> O;
    /// The output of a cached `None`, if the shape caches one.
    fn null() -> Option<O>;
}

impl<T> Holds<T> for Plain {
    type Value = T;
    fn value(out: &T) -> Option<&T> {
        Some(out)
    }
    fn wrap(value: T) -> T {
        value
    }
    fn null() -> Option<T> {
        None
    }
}

impl<T> Holds<Option<T>> for Opt {
    type Value = T;
    fn value(out: &Option<T>) -> Option<&T> {
        out.as_ref()
    }
    fn wrap(value: T) -> Option<T> {
        Some(value)
    }
    fn null() -> Option<Option<T>> {
        Some(None)
    }
}

impl<T, E> Holds<Result<T, E>> for Res {
    type Value = T;
    fn value(out: &Result<T, E>) -> Option<&T> {
        out.as_ref().ok()
    }
    fn wrap(value: T) -> Result<T, E> {
        Ok(value)
    }
    fn null() -> Option<Result<T, E>> {
        None
    }
}

impl<T, E> Holds<Result<Option<T>, E>> for ResOpt {
    type Value = T;
    fn value(out: &Result<Option<T>, E>) -> Option<&T> {
        out.as_ref().ok().and_then(Option::as_ref)
    }
    fn wrap(value: T) -> Result<Option<T>, E> {
        Ok(Some(value))
    }
    fn null() -> Option<Result<Option<T>, E>> {
        Some(Ok(None))
    }
}

/// The stale windows a value sets for itself: `stale-while-revalidate`, `stale-if-error`.
pub(crate) type OwnWindows = (Option<Duration>, Option<Duration>);

/// A function's hooks on its results: the TTL computed from the value (`ttl = f`) and
/// whether a result is cached at all (`cache_if = f`).
pub struct Hooks<O> {
    pub(crate) ttl: Option<fn(&O) -> Option<Duration>>,
    pub(crate) cache_if: Option<fn(&O) -> bool>,
    /// Stale windows a value sets for itself, in place of the function's (an HTTP
    /// response's own `stale-while-revalidate`/`stale-if-error`): `None` if it sets
    /// neither; a window it does not set is the function's.
    pub(crate) windows: Option<fn(&O) -> Option<OwnWindows>>,
    /// Which outputs are failures where the shape cannot tell (a `Result` behind a type
    /// alias, read as a plain value): never cached, as the shape's own failures.
    pub(crate) failed: Option<fn(&O) -> bool>,
}

impl<O> Clone for Hooks<O> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<O> Copy for Hooks<O> {}

impl<O> std::fmt::Debug for Hooks<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("ttl", &self.ttl.is_some())
            .field("cache_if", &self.cache_if.is_some())
            .field("windows", &self.windows.is_some())
            .field("failed", &self.failed.is_some())
            .finish()
    }
}

impl<O> Hooks<O> {
    /// No hooks: the function's TTL, everything its shape caches.
    pub(crate) fn none() -> Self {
        Hooks {
            ttl: None,
            cache_if: None,
            windows: None,
            failed: None,
        }
    }

    /// Whether `out` may be cached.
    pub(crate) fn caches(&self, out: &O) -> bool {
        !self.failed(out) && self.cache_if.is_none_or(|f| f(out))
    }

    /// Whether `out` is a failure the shape cannot see ([`failed`](Self::failed)).
    pub(crate) fn failed(&self, out: &O) -> bool {
        self.failed.is_some_and(|f| f(out))
    }

    /// The TTL `out`'s value asks for, before jitter.
    pub(crate) fn ttl(&self, out: &O) -> Option<Duration> {
        self.ttl.and_then(|f| f(out))
    }

    /// How long `out` is stored fresh: the TTL its value asks for (else the function's),
    /// with `policy`'s jitter.
    pub(crate) fn value_ttl(&self, policy: &Policy, out: &O) -> Duration {
        match self.ttl(out) {
            Some(base) => policy.value_ttl_from(base),
            None => policy.value_ttl(),
        }
    }

    /// The stale windows of `out`'s entry, if its value sets any: those it sets, else the
    /// function's.
    fn windows(&self, policy: &Policy, out: &O) -> Option<Windows> {
        let (stale, if_error) = self.windows.and_then(|f| f(out))?;
        Some(Windows::new(
            stale.or(policy.stale_ttl()),
            if_error.or(policy.stale_if_error()),
        ))
    }

    /// Whether a value may set its own stale windows (so entries may carry them).
    pub(crate) fn sets_windows(&self) -> bool {
        self.windows.is_some()
    }

    /// The stamp of `out` stored now, fresh for `value_ttl`, at group generation `gen`,
    /// computed in `compute`; and how long past `value_ttl` the store keeps it (for the
    /// stale windows: the value's own, else the function's).
    pub(crate) fn stamp(
        &self,
        policy: &Policy,
        out: &O,
        gen: u64,
        value_ttl: Duration,
        compute: Duration,
    ) -> (Stamp, Duration) {
        let windows = self.windows(policy, out);
        let kept = windows.map_or_else(|| policy.stale_window(), |w| w.longest());
        let refresh = (policy.stamps_expiry() || !kept.is_zero()).then(|| Refresh {
            expires_ms: unix_ms().saturating_add(millis(value_ttl)),
            compute_ms: millis(compute),
        });
        let stamp = Stamp {
            gen,
            refresh,
            windows: windows.filter(|_| refresh.is_some()),
            tags: 0,
        };
        (stamp, kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<K: Shape<O>, O>(out: O) -> (O, bool) {
        let bytes = match K::encode(&out, Stamp::default(), Format::default()) {
            Outcome::Value(bytes) => bytes.unwrap(),
            Outcome::Null(bytes) => bytes,
            Outcome::Skip => panic!("not cacheable"),
        };
        match K::decode(&bytes).unwrap().0 {
            Found::Value(v) => (v, false),
            Found::Null(v) => (v, true),
            Found::Gone => panic!("not a tombstone"),
        }
    }

    #[test]
    fn every_shape_returns_what_was_stored() {
        assert_eq!(round_trip::<Plain, u8>(3), (3, false));
        assert_eq!(round_trip::<Plain, ()>(()), ((), false));
        assert_eq!(round_trip::<Opt, Option<u8>>(Some(3)), (Some(3), false));
        assert_eq!(round_trip::<Opt, Option<u8>>(None), (None, true));
        assert_eq!(
            round_trip::<Opt, Option<Option<u8>>>(Some(None)),
            (Some(None), false)
        );
        assert_eq!(round_trip::<Opt, Option<Option<u8>>>(None), (None, true));
        assert_eq!(
            round_trip::<Opt, Option<Option<u8>>>(Some(Some(1))),
            (Some(Some(1)), false)
        );
        assert_eq!(round_trip::<Res, Result<u8, String>>(Ok(3)), (Ok(3), false));
        assert_eq!(
            round_trip::<ResOpt, Result<Option<u8>, String>>(Ok(None)),
            (Ok(None), true)
        );
        assert_eq!(
            round_trip::<ResOpt, Result<Option<Option<u8>>, String>>(Ok(Some(None))),
            (Ok(Some(None)), false)
        );
    }

    #[test]
    fn errors_are_never_stored() {
        assert!(matches!(
            <Res as Shape<Result<u8, String>>>::encode(
                &Err("e".into()),
                Stamp::default(),
                Format::default()
            ),
            Outcome::Skip
        ));
        assert!(matches!(
            <ResOpt as Shape<Result<Option<u8>, String>>>::encode(
                &Err("e".into()),
                Stamp::default(),
                Format::default()
            ),
            Outcome::Skip
        ));
    }

    #[test]
    fn a_null_entry_is_a_miss_for_shapes_without_option() {
        assert!(<Plain as Shape<Option<u8>>>::decode(&codec::encode_null(
            Stamp::default(),
            Format::default()
        ))
        .is_err());
        assert!(<Res as Shape<Result<u8, ()>>>::decode(&codec::encode_null(
            Stamp::default(),
            Format::default()
        ))
        .is_err());
    }

    #[test]
    fn a_tombstone_is_gone_for_every_shape() {
        let tomb = codec::encode_tombstone();
        assert!(matches!(
            <Plain as Shape<u8>>::decode(&tomb).unwrap().0,
            Found::Gone
        ));
        assert!(matches!(
            <Opt as Shape<Option<u8>>>::decode(&tomb).unwrap().0,
            Found::Gone
        ));
    }
}
