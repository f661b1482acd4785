//! The value envelope stored in Redis.
//!
//! A value is `{"v":1,"d":<the value as JSON>}`; a cached `None` is `{"v":1,"none":true}`.
//! Entries of a function in an eviction group carry the group's generation:
//! `{"v":1,"g":<generation>,"d":..}`; entries of a function with early refresh carry their
//! expiry (Unix milliseconds) and how long the body took (milliseconds):
//! `{"v":1,"x":<expiry>,"t":<compute>,"d":..}`, and an entry with stale windows of its own
//! (an HTTP response's `stale-while-revalidate`/`stale-if-error`) also those, in
//! milliseconds: `"w":<stale>,"e":<if error>` after `"t"`. Entries of a tagged call carry
//! the digest of its tags' generations, `"tg":<digest>`, after `"g"`. An invalidated key
//! holds a tombstone,
//! `{"v":1,"gone":<random id>}`, for a short while, so that a fill that started before the
//! invalidation cannot store its (older) value. All plain JSON, readable with `redis-cli`.
//! `v` is the format version: anything that is not exactly this format (another version,
//! another type, foreign or corrupt bytes) does not decode, and the caller treats it as a
//! miss.

use serde::de::{self, DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserializer, Serialize};
use std::fmt;
use std::io::Write as _;
use std::marker::PhantomData;
use std::time::Duration;

/// The version written into every envelope.
pub(crate) const FORMAT_VERSION: u64 = 1;

/// What an envelope carries besides its content.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stamp {
    /// The group generation it was written at (0: no group).
    pub(crate) gen: u64,
    /// For early refresh: when it expires and how long computing it took.
    pub(crate) refresh: Option<Refresh>,
    /// Stale windows of this entry's own, in place of the function's (an HTTP response's
    /// `stale-while-revalidate`/`stale-if-error`); only with `refresh`, which says when it
    /// expired.
    pub(crate) windows: Option<Windows>,
    /// The digest of the generations of the call's tags it was written at (0: no tags).
    pub(crate) tags: u64,
}

/// An entry's own stale windows, in milliseconds (0: none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Windows {
    /// Served past its expiry while one caller refreshes it.
    pub(crate) stale_ms: u64,
    /// Served past its expiry when the body fails.
    pub(crate) if_error_ms: u64,
}

impl Windows {
    /// Windows of whole durations (`None`: none).
    pub(crate) fn new(stale: Option<Duration>, if_error: Option<Duration>) -> Self {
        let ms = |d: Option<Duration>| d.map_or(0, crate::ttl::millis);
        Windows {
            stale_ms: ms(stale),
            if_error_ms: ms(if_error),
        }
    }

    /// The `stale-while-revalidate` window, if any.
    pub(crate) fn stale(&self) -> Option<Duration> {
        (self.stale_ms > 0).then(|| Duration::from_millis(self.stale_ms))
    }

    /// The `stale-if-error` window, if any.
    pub(crate) fn if_error(&self) -> Option<Duration> {
        (self.if_error_ms > 0).then(|| Duration::from_millis(self.if_error_ms))
    }

    /// How long past its expiry the entry is kept: the longer window.
    pub(crate) fn longest(&self) -> Duration {
        Duration::from_millis(self.stale_ms.max(self.if_error_ms))
    }
}

/// What early refresh (XFetch) needs to know of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refresh {
    /// Expiry, in Unix milliseconds.
    pub(crate) expires_ms: u64,
    /// How long the body took, in milliseconds.
    pub(crate) compute_ms: u64,
}

impl Stamp {
    /// What a cached `None` keeps of `self`: the group generation and the tags' digest
    /// (it carries no expiry, so no windows).
    pub(crate) fn of_null(self) -> Self {
        Stamp {
            gen: self.gen,
            tags: self.tags,
            ..Stamp::default()
        }
    }

    /// Stamped with a group generation only.
    #[cfg(test)]
    pub(crate) fn gen(gen: u64) -> Self {
        Stamp {
            gen,
            ..Stamp::default()
        }
    }
}

/// Encodes a value into its envelope.
pub(crate) fn encode_value<T: Serialize + ?Sized>(
    value: &T,
    stamp: Stamp,
) -> serde_json::Result<Vec<u8>> {
    let mut out = head(stamp);
    out.extend_from_slice(br#""d":"#);
    serde_json::to_writer(&mut out, value)?;
    out.push(b'}');
    Ok(out)
}

/// The envelope of a cached `None`.
pub(crate) fn encode_null(stamp: Stamp) -> Vec<u8> {
    let mut out = head(stamp);
    out.extend_from_slice(br#""none":true}"#);
    out
}

/// A tombstone: unique, so two invalidations never leave equal bytes.
pub(crate) fn encode_tombstone() -> Vec<u8> {
    let id: u64 = rand::random();
    format!(r#"{{"v":{FORMAT_VERSION},"gone":{id}}}"#).into_bytes()
}

/// `{"v":1,` and the stamp's fields.
fn head(stamp: Stamp) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(br#"{"v":1,"#);
    // Writing numbers into a Vec cannot fail.
    if stamp.gen != 0 {
        let _ = write!(out, r#""g":{},"#, stamp.gen);
    }
    if stamp.tags != 0 {
        let _ = write!(out, r#""tg":{},"#, stamp.tags);
    }
    if let Some(r) = stamp.refresh {
        let _ = write!(out, r#""x":{},"t":{},"#, r.expires_ms, r.compute_ms);
        if let Some(w) = stamp.windows {
            let _ = write!(out, r#""w":{},"e":{},"#, w.stale_ms, w.if_error_ms);
        }
    }
    out
}

/// What an envelope holds.
#[derive(Debug, PartialEq)]
pub(crate) enum Decoded<T> {
    Value(T),
    Null,
    /// A tombstone: the key was invalidated moments ago.
    Gone,
}

/// A decoded envelope: its content and its stamp.
#[derive(Debug, PartialEq)]
pub(crate) struct Envelope<T> {
    pub(crate) body: Decoded<T>,
    pub(crate) stamp: Stamp,
}

/// Decodes an envelope, reading the value straight into `T` (no intermediate JSON tree).
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> serde_json::Result<Envelope<T>> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let decoded = EnvelopeSeed(PhantomData).deserialize(&mut de)?;
    de.end()?;
    Ok(decoded)
}

/// Whether `bytes` are a tombstone (without decoding a value).
pub(crate) fn is_tombstone(bytes: &[u8]) -> bool {
    matches!(
        decode::<IgnoredAny>(bytes),
        Ok(Envelope {
            body: Decoded::Gone,
            ..
        })
    )
}

struct EnvelopeSeed<T>(PhantomData<T>);

impl<'de, T: DeserializeOwned> DeserializeSeed<'de> for EnvelopeSeed<T> {
    type Value = Envelope<T>;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_map(self)
    }
}

enum Field {
    Version,
    Generation,
    Tags,
    Expiry,
    Compute,
    StaleWindow,
    IfErrorWindow,
    Data,
    None,
    Gone,
}

const FIELDS: &[&str] = &["v", "g", "tg", "x", "t", "w", "e", "d", "none", "gone"];

impl<'de> de::Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct FieldVisitor;
        impl Visitor<'_> for FieldVisitor {
            type Value = Field;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`v`, `g`, `tg`, `x`, `t`, `w`, `e`, `d`, `none` or `gone`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Field, E> {
                match v {
                    "v" => Ok(Field::Version),
                    "g" => Ok(Field::Generation),
                    "tg" => Ok(Field::Tags),
                    "x" => Ok(Field::Expiry),
                    "t" => Ok(Field::Compute),
                    "w" => Ok(Field::StaleWindow),
                    "e" => Ok(Field::IfErrorWindow),
                    "d" => Ok(Field::Data),
                    "none" => Ok(Field::None),
                    "gone" => Ok(Field::Gone),
                    other => Err(E::unknown_field(other, FIELDS)),
                }
            }
        }
        de.deserialize_identifier(FieldVisitor)
    }
}

fn once<T, E: de::Error>(slot: &mut Option<T>, name: &'static str, value: T) -> Result<(), E> {
    if slot.is_some() {
        return Err(E::duplicate_field(name));
    }
    *slot = Some(value);
    Ok(())
}

impl<'de, T: DeserializeOwned> Visitor<'de> for EnvelopeSeed<T> {
    type Value = Envelope<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a redcache envelope of format version {FORMAT_VERSION}")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut version = None;
        let mut gen = None;
        let mut tags = None;
        let mut expiry = None;
        let mut compute = None;
        let mut stale_window = None;
        let mut if_error_window = None;
        let mut data = None;
        let mut none = None;
        let mut gone = None;
        while let Some(field) = map.next_key::<Field>()? {
            if version.is_none() && !matches!(field, Field::Version) {
                return Err(de::Error::custom("the format version must come first"));
            }
            match field {
                Field::Version => {
                    let v: u64 = map.next_value()?;
                    if v != FORMAT_VERSION {
                        return Err(de::Error::custom(format_args!(
                            "format version {v}, expected {FORMAT_VERSION}"
                        )));
                    }
                    once(&mut version, "v", v)?;
                }
                Field::Generation => once(&mut gen, "g", map.next_value::<u64>()?)?,
                Field::Tags => once(&mut tags, "tg", map.next_value::<u64>()?)?,
                Field::Expiry => once(&mut expiry, "x", map.next_value::<u64>()?)?,
                Field::Compute => once(&mut compute, "t", map.next_value::<u64>()?)?,
                Field::StaleWindow => once(&mut stale_window, "w", map.next_value::<u64>()?)?,
                Field::IfErrorWindow => once(&mut if_error_window, "e", map.next_value::<u64>()?)?,
                Field::Data => once(&mut data, "d", map.next_value::<T>()?)?,
                Field::None => {
                    if !map.next_value::<bool>()? {
                        return Err(de::Error::custom("`none` must be true"));
                    }
                    once(&mut none, "none", ())?;
                }
                Field::Gone => once(&mut gone, "gone", map.next_value::<u64>()?)?,
            }
        }
        if version.is_none() {
            return Err(de::Error::missing_field("v"));
        }
        let body = match (data, none, gone) {
            (Some(value), None, None) => Decoded::Value(value),
            (None, Some(()), None) => Decoded::Null,
            (None, None, Some(_)) if gen.is_none() && tags.is_none() && expiry.is_none() => {
                Decoded::Gone
            }
            (None, None, None) => return Err(de::Error::missing_field("d")),
            _ => return Err(de::Error::custom("more than one of `d`, `none`, `gone`")),
        };
        let refresh = match (expiry, compute) {
            (Some(expires_ms), Some(compute_ms)) => Some(Refresh {
                expires_ms,
                compute_ms,
            }),
            (None, None) => None,
            _ => return Err(de::Error::custom("`x` and `t` go together")),
        };
        let windows = match (stale_window, if_error_window) {
            (Some(stale_ms), Some(if_error_ms)) if refresh.is_some() => Some(Windows {
                stale_ms,
                if_error_ms,
            }),
            (None, None) => None,
            _ => return Err(de::Error::custom("`w` and `e` go together, with `x`")),
        };
        Ok(Envelope {
            body,
            stamp: Stamp {
                gen: gen.unwrap_or(0),
                refresh,
                windows,
                tags: tags.unwrap_or(0),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::collections::HashMap;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct User {
        id: u64,
        name: String,
    }

    fn round_trip<T: Serialize + DeserializeOwned + PartialEq + fmt::Debug>(value: T) {
        let bytes = encode_value(&value, Stamp::default()).unwrap();
        assert_eq!(decode::<T>(&bytes).unwrap().body, Decoded::Value(value));
    }

    #[test]
    fn values_round_trip_exactly() {
        round_trip(User {
            id: 7,
            name: "Ada".into(),
        });
        round_trip(());
        round_trip(None::<u8>);
        round_trip(Some(Some(3u8)));
        round_trip(String::from("żółw \"quoted\""));
        round_trip(vec![1.5f64, -0.0, 1e300]);
        round_trip(HashMap::from([(1u32, "a".to_string())]));
        round_trip(u64::MAX);
        round_trip(i64::MIN);
    }

    #[test]
    fn json_cannot_tell_some_none_from_none_inside_a_value() {
        // Why `Option` returns get their own shape (a `None` entry): inside a value,
        // JSON has one `null` for both.
        let bytes = encode_value(&Some(None::<u8>), Stamp::default()).unwrap();
        assert_eq!(
            decode::<Option<Option<u8>>>(&bytes).unwrap().body,
            Decoded::Value(None)
        );
    }

    #[test]
    fn envelope_is_readable_json() {
        let user = User {
            id: 1,
            name: "A".into(),
        };
        let bytes = encode_value(&user, Stamp::default()).unwrap();
        assert_eq!(bytes, br#"{"v":1,"d":{"id":1,"name":"A"}}"#);
        assert_eq!(encode_null(Stamp::default()), br#"{"v":1,"none":true}"#);
        let stamp = Stamp {
            windows: None,
            tags: 0,
            gen: 42,
            refresh: Some(Refresh {
                expires_ms: 1_700_000_000_000,
                compute_ms: 12,
            }),
        };
        let bytes = encode_value(&user, stamp).unwrap();
        assert_eq!(
            bytes,
            br#"{"v":1,"g":42,"x":1700000000000,"t":12,"d":{"id":1,"name":"A"}}"#
        );
        assert_eq!(
            decode::<User>(&bytes).unwrap(),
            Envelope {
                body: Decoded::Value(user),
                stamp
            }
        );
        assert_eq!(encode_null(Stamp::gen(7)), br#"{"v":1,"g":7,"none":true}"#);
        // An entry's own stale windows follow its expiry.
        let stamp = Stamp {
            windows: Some(Windows {
                stale_ms: 30_000,
                if_error_ms: 0,
            }),
            ..stamp
        };
        let bytes = encode_value(&1u8, stamp).unwrap();
        assert_eq!(
            bytes,
            br#"{"v":1,"g":42,"x":1700000000000,"t":12,"w":30000,"e":0,"d":1}"#
        );
        assert_eq!(decode::<u8>(&bytes).unwrap().stamp, stamp);
        // A tagged entry carries the digest of its tags' generations.
        let stamp = Stamp {
            tags: 99,
            ..Stamp::gen(7)
        };
        let bytes = encode_value(&1u8, stamp).unwrap();
        assert_eq!(bytes, br#"{"v":1,"g":7,"tg":99,"d":1}"#);
        assert_eq!(decode::<u8>(&bytes).unwrap().stamp, stamp);
        assert_eq!(
            decode::<u8>(&encode_null(Stamp::gen(7))).unwrap().stamp.gen,
            7
        );
    }

    #[test]
    fn null_entry_is_told_apart_from_a_null_value() {
        assert_eq!(
            decode::<Option<u8>>(&encode_null(Stamp::default()))
                .unwrap()
                .body,
            Decoded::Null
        );
        assert_eq!(
            decode::<Option<u8>>(&encode_value(&None::<u8>, Stamp::default()).unwrap())
                .unwrap()
                .body,
            Decoded::Value(None)
        );
    }

    #[test]
    fn tombstones_are_unique_and_recognised() {
        let (a, b) = (encode_tombstone(), encode_tombstone());
        assert_ne!(a, b, "two invalidations leave different bytes");
        assert!(is_tombstone(&a));
        assert_eq!(decode::<User>(&a).unwrap().body, Decoded::Gone);
        assert!(!is_tombstone(&encode_null(Stamp::default())));
        assert!(!is_tombstone(b"garbage"));
    }

    #[test]
    fn anything_else_does_not_decode() {
        let bad: &[&[u8]] = &[
            b"",
            b"garbage",
            b"42",
            b"{}",
            br#"{"d":1}"#,
            br#"{"v":2,"d":1}"#,
            br#"{"v":1}"#,
            br#"{"v":1,"d":"text"}"#,
            br#"{"v":1,"d":1,"none":true}"#,
            br#"{"v":1,"none":false}"#,
            br#"{"v":1,"d":1,"x":0}"#,
            br#"{"v":1,"d":1} trailing"#,
            br#"{"v":1,"d":1,"d":2}"#,
            br#"{"d":1,"v":1}"#,
            br#"{"v":1,"g":-1,"d":1}"#,
            br#"{"v":1,"g":1,"g":2,"d":1}"#,
            br#"{"v":1,"gone":1,"d":1}"#,
            br#"{"v":1,"g":3,"gone":1}"#,
            br#"{"v":1,"x":3,"d":1}"#,
            br#"{"v":1,"t":3,"d":1}"#,
            br#"{"v":1,"w":3,"e":0,"d":1}"#,
            br#"{"v":1,"x":3,"t":1,"w":3,"d":1}"#,
            b"\xff\xfe",
        ];
        for bytes in bad {
            assert!(
                decode::<u32>(bytes).is_err(),
                "{:?} decoded",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;
        use std::collections::BTreeMap;

        fn stamp() -> impl Strategy<Value = Stamp> {
            (
                any::<u64>(),
                proptest::option::of((
                    any::<u64>(),
                    any::<u64>(),
                    proptest::option::of((any::<u64>(), any::<u64>())),
                )),
                any::<u64>(),
            )
                .prop_map(|(gen, refresh, tags)| Stamp {
                    gen,
                    tags,
                    refresh: refresh.map(|(expires_ms, compute_ms, _)| Refresh {
                        expires_ms,
                        compute_ms,
                    }),
                    // Windows go only with an expiry.
                    windows: refresh.and_then(|(_, _, windows)| {
                        windows.map(|(stale_ms, if_error_ms)| Windows {
                            stale_ms,
                            if_error_ms,
                        })
                    }),
                })
        }

        proptest! {
            #[test]
            fn any_bytes_decode_or_fail_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
                let _ = decode::<serde_json::Value>(&bytes);
                let _ = decode::<String>(&bytes);
                let _ = decode::<Vec<u64>>(&bytes);
                let _ = is_tombstone(&bytes);
            }

            #[test]
            fn mutated_envelopes_never_panic(
                value in ".*",
                at in any::<usize>(),
                byte in any::<u8>(),
            ) {
                let mut bytes = encode_value(&value, Stamp::default()).unwrap();
                let at = at % bytes.len();
                bytes[at] = byte;
                let _ = decode::<String>(&bytes);
            }

            #[test]
            fn values_round_trip_exactly(
                text in ".*",
                numbers in proptest::collection::vec(any::<i64>(), 0..16),
                map in proptest::collection::btree_map(".*", any::<Option<u32>>(), 0..8),
                stamp in stamp(),
            ) {
                let value = (text, numbers, map);
                let bytes = encode_value(&value, stamp).unwrap();
                let decoded = decode::<(String, Vec<i64>, BTreeMap<String, Option<u32>>)>(&bytes).unwrap();
                prop_assert_eq!(decoded, Envelope { body: Decoded::Value(value), stamp });
                let null = decode::<u8>(&encode_null(stamp.of_null())).unwrap();
                prop_assert_eq!(null, Envelope { body: Decoded::Null, stamp: stamp.of_null() });
            }
        }
    }
}
