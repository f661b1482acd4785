//! The value envelope stored in Redis.
//!
//! A value is `{"v":1,"d":<the value as JSON>}`; a cached `None` is `{"v":1,"none":true}`.
//! Both are plain JSON, readable with `redis-cli`. `v` is the format version: anything
//! that is not exactly this format (another version, another type, foreign or corrupt
//! bytes) does not decode, and the caller treats it as a miss.

use serde::de::{self, DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserializer, Serialize};
use std::fmt;
use std::marker::PhantomData;

/// The version written into every envelope.
pub(crate) const FORMAT_VERSION: u64 = 1;

const VALUE_HEAD: &[u8] = br#"{"v":1,"d":"#;
const NULL_ENTRY: &[u8] = br#"{"v":1,"none":true}"#;

/// Encodes a value into its envelope.
pub(crate) fn encode_value<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(VALUE_HEAD);
    serde_json::to_writer(&mut out, value)?;
    out.push(b'}');
    Ok(out)
}

/// The envelope of a cached `None`.
pub(crate) fn encode_null() -> Vec<u8> {
    NULL_ENTRY.to_vec()
}

/// A decoded envelope.
#[derive(Debug, PartialEq)]
pub(crate) enum Decoded<T> {
    Value(T),
    Null,
}

/// Decodes an envelope, reading the value straight into `T` (no intermediate JSON tree).
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> serde_json::Result<Decoded<T>> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let decoded = EnvelopeSeed(PhantomData).deserialize(&mut de)?;
    de.end()?;
    Ok(decoded)
}

struct EnvelopeSeed<T>(PhantomData<T>);

impl<'de, T: DeserializeOwned> DeserializeSeed<'de> for EnvelopeSeed<T> {
    type Value = Decoded<T>;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_map(self)
    }
}

enum Field {
    Version,
    Data,
    None,
}

impl<'de> de::Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct FieldVisitor;
        impl Visitor<'_> for FieldVisitor {
            type Value = Field;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`v`, `d` or `none`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Field, E> {
                match v {
                    "v" => Ok(Field::Version),
                    "d" => Ok(Field::Data),
                    "none" => Ok(Field::None),
                    other => Err(E::unknown_field(other, &["v", "d", "none"])),
                }
            }
        }
        de.deserialize_identifier(FieldVisitor)
    }
}

impl<'de, T: DeserializeOwned> Visitor<'de> for EnvelopeSeed<T> {
    type Value = Decoded<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a redcache envelope of format version {FORMAT_VERSION}")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut version = None;
        let mut data = None;
        let mut none = false;
        while let Some(field) = map.next_key::<Field>()? {
            match field {
                Field::Version => {
                    if version.is_some() {
                        return Err(de::Error::duplicate_field("v"));
                    }
                    let v: u64 = map.next_value()?;
                    if v != FORMAT_VERSION {
                        return Err(de::Error::custom(format_args!(
                            "format version {v}, expected {FORMAT_VERSION}"
                        )));
                    }
                    version = Some(v);
                }
                Field::Data => {
                    if version.is_none() {
                        return Err(de::Error::custom("`d` before the format version"));
                    }
                    if data.is_some() {
                        return Err(de::Error::duplicate_field("d"));
                    }
                    data = Some(map.next_value::<T>()?);
                }
                Field::None => {
                    none = map.next_value::<bool>()?;
                    if !none {
                        let _ = map.next_value::<IgnoredAny>();
                        return Err(de::Error::custom("`none` must be true"));
                    }
                }
            }
        }
        if version.is_none() {
            return Err(de::Error::missing_field("v"));
        }
        match (data, none) {
            (Some(value), false) => Ok(Decoded::Value(value)),
            (None, true) => Ok(Decoded::Null),
            (Some(_), true) => Err(de::Error::custom("both `d` and `none`")),
            (None, false) => Err(de::Error::missing_field("d")),
        }
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
        let bytes = encode_value(&value).unwrap();
        assert_eq!(decode::<T>(&bytes).unwrap(), Decoded::Value(value));
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
        let bytes = encode_value(&Some(None::<u8>)).unwrap();
        assert_eq!(
            decode::<Option<Option<u8>>>(&bytes).unwrap(),
            Decoded::Value(None)
        );
    }

    #[test]
    fn envelope_is_readable_json() {
        let bytes = encode_value(&User {
            id: 1,
            name: "A".into(),
        })
        .unwrap();
        assert_eq!(bytes, br#"{"v":1,"d":{"id":1,"name":"A"}}"#);
        assert_eq!(encode_null(), br#"{"v":1,"none":true}"#);
    }

    #[test]
    fn null_entry_is_told_apart_from_a_null_value() {
        assert_eq!(decode::<Option<u8>>(&encode_null()).unwrap(), Decoded::Null);
        assert_eq!(
            decode::<Option<u8>>(&encode_value(&None::<u8>).unwrap()).unwrap(),
            Decoded::Value(None)
        );
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
}
