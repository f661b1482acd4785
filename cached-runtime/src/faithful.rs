//! Whether a value reads back as the value written. JSON and MessagePack write `Some(x)` as
//! `x`, so a `Some` around something they write as `null`/nil (`None`, `()`, a
//! `serde_json::Value::Null`, and in JSON a unit struct) reads back as `None`: a
//! `Vec<Option<()>>` holding `Some(())`, or an `Option<Value>` field holding
//! `Some(Value::Null)`, would come back changed from every hit. JSON also writes NaN and the
//! infinities as `null`, which reads back as `None` in an `Option<f64>` and as nothing at all
//! in an `f64`. [`check`] walks a value as its codec will, before it is encoded, and flags
//! such a value. A type may still read it back as itself (a field whose
//! `deserialize_with` reads `null` as `Some(None)`), so the encoder then reads the envelope
//! back into the value's type and compares the two (`codec::encode_value`); where it cannot
//! (`Cache::set`, read back with any type) the flag stands. A value that would come back
//! changed is not stored (the call still returns it, as for any value that cannot be
//! encoded), never stored as a different one.
//!
//! (A function's own `Option` return needs none of this: its `None` has an entry of its own,
//! see the `shape` module.)

use serde::ser::{self, Serialize, Serializer};

/// `Ok` when `value`, written by JSON (`json`) or MessagePack, reads back as itself as far
/// as the codec can tell without its type: no `Some` around a value written as `null`,
/// and for JSON no NaN or infinity. With `typed` (an encoder that can read the value back
/// into its type and compare), what only that read can settle is suspect too:
/// - a 128-bit integer: it reads back as itself, except inside an untagged enum or a
///   flattened struct, whose content serde buffers in a form that has no 128-bit integers
///   (an untagged `Exact(i128)` then reads back as the next variant that takes the number,
///   say `Approx(f64)`), which the walk cannot see;
/// - a map of no stated length, which is how serde writes a struct with a
///   `#[serde(flatten)]` field: a flattened `Option` holding `None` writes nothing, and
///   reads back as `Some` when its type can be made of no fields.
pub(crate) fn check<T: Serialize + ?Sized>(
    value: &T,
    json: bool,
    typed: bool,
) -> serde_json::Result<()> {
    value.serialize(Walk {
        json,
        typed,
        under_some: false,
        raw: false,
    })
}

/// The walker: a serializer that writes nothing.
#[derive(Clone, Copy)]
struct Walk {
    json: bool,
    /// What only a read back settles is suspect (see [`check`]).
    typed: bool,
    /// The value being walked is directly inside a `Some` (or a newtype inside one).
    under_some: bool,
    /// The value being walked is the text of a serde_json `RawValue` (inside a `Some`).
    raw: bool,
}

impl Walk {
    /// For a value nested in this one (an element, a field, a variant's content): a `Some`
    /// above this one does not reach it.
    fn inner(self) -> Walk {
        Walk {
            under_some: false,
            raw: false,
            ..self
        }
    }

    /// A value written as `null`/nil: refused directly inside a `Some`.
    fn null(self, what: &str) -> serde_json::Result<()> {
        match self.under_some {
            true => Err(ser::Error::custom(format_args!(
                "a `Some` holding {what} would read back as `None`: not cached"
            ))),
            false => Ok(()),
        }
    }

    fn wide_int(self) -> serde_json::Result<()> {
        match self.typed {
            true => Err(ser::Error::custom(
                "a 128-bit integer inside an untagged enum or a flattened struct does not \
                 read back as itself: not cached",
            )),
            false => Ok(()),
        }
    }

    fn float(self, finite: bool) -> serde_json::Result<()> {
        match self.json && !finite {
            true => Err(ser::Error::custom(
                "JSON writes NaN and infinity as `null`, which does not read back as the \
                 number: not cached",
            )),
            false => Ok(()),
        }
    }
}

/// Serializer methods of values with nothing to check.
macro_rules! fine {
    ($($method:ident($($arg:ty),*);)*) => {
        $(fn $method(self, $(_: $arg),*) -> serde_json::Result<()> { Ok(()) })*
    };
}

/// Serializer methods that open a compound value, whose parts are walked on their own.
macro_rules! opens {
    ($($method:ident($($arg:ty),*);)*) => {
        $(fn $method(self, $(_: $arg),*) -> serde_json::Result<Walk> { Ok(self.inner()) })*
    };
}

impl Serializer for Walk {
    type Ok = ();
    type Error = serde_json::Error;
    type SerializeSeq = Walk;
    type SerializeTuple = Walk;
    type SerializeTupleStruct = Walk;
    type SerializeTupleVariant = Walk;
    type SerializeMap = Walk;
    type SerializeStruct = Walk;
    type SerializeStructVariant = Walk;

    fine! {
        serialize_bool(bool);
        serialize_i8(i8);
        serialize_i16(i16);
        serialize_i32(i32);
        serialize_i64(i64);
        serialize_u8(u8);
        serialize_u16(u16);
        serialize_u32(u32);
        serialize_u64(u64);
        serialize_char(char);
        serialize_bytes(&[u8]);
        serialize_unit_variant(&'static str, u32, &'static str);
    }

    fn serialize_i128(self, _: i128) -> serde_json::Result<()> {
        self.wide_int()
    }

    fn serialize_u128(self, _: u128) -> serde_json::Result<()> {
        self.wide_int()
    }

    fn serialize_str(self, text: &str) -> serde_json::Result<()> {
        match self.raw && text.trim() == "null" {
            true => self.null("a raw JSON `null`"),
            false => Ok(()),
        }
    }

    fn serialize_f32(self, v: f32) -> serde_json::Result<()> {
        self.float(v.is_finite())
    }

    fn serialize_f64(self, v: f64) -> serde_json::Result<()> {
        self.float(v.is_finite())
    }

    fn serialize_none(self) -> serde_json::Result<()> {
        self.null("`None`")
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> serde_json::Result<()> {
        value.serialize(Walk {
            under_some: true,
            ..self
        })
    }

    fn serialize_unit(self) -> serde_json::Result<()> {
        self.null("`()` or a null")
    }

    fn serialize_unit_struct(self, _: &'static str) -> serde_json::Result<()> {
        // MessagePack writes a unit struct as an empty array, JSON as `null`.
        match self.json {
            true => self.null("a unit struct"),
            false => Ok(()),
        }
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> serde_json::Result<()> {
        // Written as its content: inside a `Some`, so is the content.
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        value: &T,
    ) -> serde_json::Result<()> {
        value.serialize(self.inner())
    }

    opens! {
        serialize_seq(Option<usize>);
        serialize_tuple(usize);
        serialize_tuple_struct(&'static str, usize);
        serialize_tuple_variant(&'static str, u32, &'static str, usize);
        serialize_struct_variant(&'static str, u32, &'static str, usize);
    }

    fn serialize_map(self, len: Option<usize>) -> serde_json::Result<Walk> {
        match (len, self.typed) {
            (None, true) => Err(ser::Error::custom(
                "a struct with a `#[serde(flatten)]` field (a map of no stated length) does \
                 not read back as itself: not cached",
            )),
            _ => Ok(self.inner()),
        }
    }

    fn serialize_struct(self, name: &'static str, _: usize) -> serde_json::Result<Walk> {
        // serde_json's `RawValue` writes its one field's text as it is, which may be `null`.
        Ok(
            match name == "$serde_json::private::RawValue" && self.under_some {
                true => Walk { raw: true, ..self },
                false => self.inner(),
            },
        )
    }

    fn is_human_readable(&self) -> bool {
        // As the codecs say (rmp-serde is not, by default), so that types which write
        // themselves differently for each are walked as they will be written.
        self.json
    }
}

/// Every element, field and entry of a compound value is walked on its own.
macro_rules! compound {
    ($($trait:ident::$method:ident($($name:ty),*);)*) => {
        $(impl ser::$trait for Walk {
            type Ok = ();
            type Error = serde_json::Error;

            fn $method<T: Serialize + ?Sized>(&mut self, $(_: $name,)* value: &T) -> serde_json::Result<()> {
                value.serialize(*self)
            }

            fn end(self) -> serde_json::Result<()> {
                Ok(())
            }
        })*
    };
}

compound! {
    SerializeSeq::serialize_element();
    SerializeTuple::serialize_element();
    SerializeTupleStruct::serialize_field();
    SerializeTupleVariant::serialize_field();
    SerializeStruct::serialize_field(&'static str);
    SerializeStructVariant::serialize_field(&'static str);
}

impl ser::SerializeMap for Walk {
    type Ok = ();
    type Error = serde_json::Error;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> serde_json::Result<()> {
        key.serialize(*self)
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> serde_json::Result<()> {
        value.serialize(*self)
    }

    fn end(self) -> serde_json::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::check;
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Unit;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Wrap(Option<u8>);

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Row {
        mean: Option<f64>,
        extra: Option<serde_json::Value>,
        flag: Option<()>,
    }

    /// Every value `check` lets through reads back from JSON (`json`) or MessagePack as
    /// itself, and every one it refuses would not have.
    fn agrees<T>(value: &T, json: bool)
    where
        T: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug,
    {
        let back: Option<T> = match json {
            true => serde_json::to_vec(value)
                .ok()
                .and_then(|bytes| serde_json::from_slice(&bytes).ok()),
            #[cfg(feature = "msgpack")]
            false => rmp_serde::to_vec_named(value)
                .ok()
                .and_then(|bytes| rmp_serde::from_slice(&bytes).ok()),
            #[cfg(not(feature = "msgpack"))]
            false => unreachable!("MessagePack needs the `msgpack` feature"),
        };
        assert_eq!(
            check(value, json, false).is_ok(),
            back.as_ref() == Some(value),
            "{value:?} read back as {back:?}"
        );
    }

    fn agrees_with_json<T>(value: &T)
    where
        T: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug,
    {
        agrees(value, true);
    }

    #[test]
    fn a_some_around_a_null_is_refused_and_everything_else_passes() {
        agrees_with_json(&Some(Some(None::<u8>)));
        agrees_with_json(&Some(Some(Some(1u8))));
        agrees_with_json(&Some(None::<u8>));
        agrees_with_json(&vec![Some(()), None]);
        agrees_with_json(&vec![None::<()>, None]);
        agrees_with_json(&Some(Unit));
        agrees_with_json(&Unit);
        agrees_with_json(&Some(Wrap(None)));
        agrees_with_json(&Some(Wrap(Some(3))));
        agrees_with_json(&Row {
            mean: Some(1.5),
            extra: Some(serde_json::json!({"a": null})),
            flag: None,
        });
        agrees_with_json(&Row {
            mean: None,
            extra: Some(serde_json::Value::Null),
            flag: None,
        });
        agrees_with_json(&Row {
            mean: None,
            extra: None,
            flag: Some(()),
        });
        agrees_with_json(&Row {
            mean: Some(f64::NAN),
            extra: None,
            flag: None,
        });
        agrees_with_json(&Some(f64::INFINITY));
        agrees_with_json(&std::collections::BTreeMap::from([(1u8, Some(None::<u8>))]));
    }

    #[test]
    fn a_non_finite_float_is_refused_only_where_it_becomes_null() {
        assert!(check(&f64::NAN, true, false).is_err());
        assert!(check(&f32::NEG_INFINITY, true, false).is_err());
        assert!(check(&vec![1.0f64, f64::NAN], true, false).is_err());
        // MessagePack keeps floats as they are.
        assert!(check(&Some(f64::NAN), false, false).is_ok());
        // A unit struct is an empty array in MessagePack, not nil.
        assert!(check(&Some(Unit), false, false).is_ok());
        assert!(check(&Some(()), false, false).is_err());
        assert!(check(&Some(serde_json::Value::Null), false, false).is_err());
    }

    #[test]
    fn a_raw_null_inside_a_some_is_suspected() {
        /// Serializes as serde_json's `RawValue` does.
        struct Raw(&'static str);
        impl Serialize for Raw {
            fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeStruct;
                let mut s = ser.serialize_struct("$serde_json::private::RawValue", 1)?;
                s.serialize_field("$serde_json::private::RawValue", self.0)?;
                s.end()
            }
        }
        assert!(check(&Some(Raw("null")), true, false).is_err());
        assert!(check(&Some(Raw(" null ")), false, false).is_err());
        assert!(check(&Raw("null"), true, false).is_ok());
        assert!(check(&Some(Raw("[1]")), true, false).is_ok());
        assert!(check(&Some(Raw("\"null\"")), true, false).is_ok());
    }

    #[cfg(feature = "msgpack")]
    #[test]
    fn messagepack_agrees() {
        agrees(&Some(Some(None::<u8>)), false);
        agrees(&Some(Some(Some(1u8))), false);
        agrees(&vec![Some(()), None], false);
        agrees(&Some(Unit), false);
        agrees(&Some(Wrap(None)), false);
        agrees(
            &Row {
                mean: Some(2.0),
                extra: Some(serde_json::Value::Null),
                flag: None,
            },
            false,
        );
    }
}
