//! Canonical means serde_json's compact form with every object's keys sorted, so a
//! `HashMap` argument gives the same key in every process, whatever its iteration order
//! and whatever serde_json features other crates turn on. It is written by `Canonical`, a
//! serializer of our own, straight into the material (no `serde_json::Value` tree), so one
//! value has one form wherever it sits, and two values of one type that serialize apart
//! never share a form (values serde writes alike, such as fields it skips, are alike here
//! too):
//!
//! - numbers, strings and sequences are exactly as serde_json writes them, an `f32` in its
//!   own shortest form (`0.1`, not the `f64` widening `0.10000000149011612`);
//! - an object's entries are sorted by key (as strings, byte-wise); map keys are strings,
//!   integers, floats, `bool`s and unit variants written as strings, as serde_json does;
//! - an object with two entries of one name is an error (a struct's field and a
//!   `#[serde(flatten)]` map's entry of that name, or two map keys written alike): which
//!   value came with which entry is part of the value, and no sorted form keeps it in
//!   every process; such a call runs uncached;
//! - a NaN or infinite float is an error (JSON would write all three as `null`, so
//!   `f(f64::INFINITY)` would answer `f(f64::NEG_INFINITY)`): such a call runs uncached;
//! - `None` is `null` and `Some(x)` is `x`, except when `x` itself is `null` (a nested
//!   `None`, `()`), such a wrapped value, or a sequence of one such element: then it is
//!   `[x]`, so `Some(None)` is `[null]`, `Some(Some(None))` is `[[null]]` and
//!   `Some(vec![None])` is `[[null]]`, never `None`'s `null` or `Some(None)`'s `[null]`.

use serde::ser::{self, Impossible};
use serde::Serialize;
use serde_json::ser::{CompactFormatter, Formatter};
use std::cmp::Ordering;

/// Appends the canonical JSON of `value` to `out`.
pub(super) fn write<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> serde_json::Result<()> {
    value
        .serialize(&mut Canonical {
            out,
            entries: Vec::new(),
        })
        .map(drop)
}

/// What a non-finite float in key material is reported as.
const NON_FINITE: &str = "a non-finite float (NaN or infinity) cannot be part of a cache key";

fn non_finite() -> serde_json::Error {
    ser::Error::custom(NON_FINITE)
}

/// serde_json's own words for a map key it cannot write.
fn key_must_be_a_string() -> serde_json::Error {
    ser::Error::custom("key must be a string")
}

/// Writing into a `Vec` cannot fail: the `io::Result`s of the formatter are all `Ok`.
#[inline]
fn infallible(written: std::io::Result<()>) {
    debug_assert!(written.is_ok(), "writing into a Vec cannot fail");
}

/// Writes `s` as a JSON string, escaped as serde_json escapes it.
#[inline]
pub(super) fn write_str(s: &str, out: &mut Vec<u8>) {
    let written = ser::Serializer::serialize_str(&mut serde_json::Serializer::new(out), s);
    debug_assert!(written.is_ok(), "writing into a Vec cannot fail");
}

/// The struct names serde_json's `Number` (with `arbitrary_precision`) and `RawValue`
/// serialize as: serde_json writes their text as JSON, not as a struct, and so do we.
const NUMBER_TOKEN: &str = "$serde_json::private::Number";
const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";

/// What a value was written as, as far as an enclosing `Some` needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Written {
    /// `null`: a `None`, `()`, a unit struct.
    Null,
    /// A `Some` of a null, wrapped: `[null]`, `[[null]]`, …
    WrappedSome,
    /// A sequence of one element that is any of these: `[null]` (`vec![None]`), `[[null]]`.
    /// It reads as a wrapped `Some`, so a `Some` of it is wrapped too.
    LoneNull,
    /// Anything else.
    Other,
}

/// One entry of an object being written: `"key":value` at `out[start..end]`, the key's
/// closing quote at `key_end - 1`.
#[derive(Debug, Clone, Copy)]
struct Entry {
    start: usize,
    key_end: usize,
    end: usize,
}

impl Entry {
    /// The key as written, escaped, without its quotes.
    fn key<'o>(&self, out: &'o [u8]) -> &'o [u8] {
        &out[self.start + 1..self.key_end - 1]
    }
}

/// A serializer that appends canonical JSON (see the module documentation) to `out`.
/// Everything is written in place; an object's entries are sorted in place when it ends.
struct Canonical<'o> {
    out: &'o mut Vec<u8>,
    /// The entries of the objects being written, innermost last: an object sorts its own
    /// tail of this stack when it ends, and pops it. The only allocation, and only for
    /// material that holds an object.
    entries: Vec<Entry>,
}

impl Canonical<'_> {
    #[inline]
    fn formatted(&mut self, write: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>) -> Written {
        infallible(write(self.out));
        Written::Other
    }

    #[inline]
    fn null(&mut self) -> Written {
        self.out.extend_from_slice(b"null");
        Written::Null
    }

    /// Starts an object's entry: the separator, the key (written by `key`), the colon.
    fn begin_entry(
        &mut self,
        base: usize,
        key: impl FnOnce(&mut Vec<u8>) -> serde_json::Result<()>,
    ) -> serde_json::Result<Entry> {
        if self.entries.len() > base {
            self.out.push(b',');
        }
        let start = self.out.len();
        key(self.out)?;
        let key_end = self.out.len();
        self.out.push(b':');
        Ok(Entry {
            start,
            key_end,
            end: 0,
        })
    }

    #[inline]
    fn end_entry(&mut self, mut entry: Entry) {
        entry.end = self.out.len();
        self.entries.push(entry);
    }

    /// Sorts the entries of the object whose first entry is `entries[base]` by name, unless
    /// they already are (a struct whose fields are declared in order, a `BTreeMap`), and
    /// pops them. Two entries of one name are an error: which value came with which is part
    /// of the value (`{page: 1, extra: {page: 2}}` is not `{page: 2, extra: {page: 1}}`),
    /// and the order they are written in need not be the same in every process (two
    /// `HashMap` keys that are written alike).
    fn sort_object(&mut self, base: usize) -> serde_json::Result<()> {
        let Canonical { out, entries } = self;
        let object = &mut entries[base..];
        let order = |a: &Entry, b: &Entry| compare_keys(a.key(out), b.key(out));
        if !object.is_sorted_by(|a, b| order(a, b) == Ordering::Less) {
            object.sort_unstable_by(order);
            if object
                .windows(2)
                .any(|pair| order(&pair[0], &pair[1]) == Ordering::Equal)
            {
                entries.truncate(base);
                return Err(ser::Error::custom(
                    "an object with two entries of one name (a field and a flattened map's \
                     entry, or two map keys written alike) cannot be part of a cache key",
                ));
            }
            // The entries sit in out[start..end], comma separated, in the order written:
            // append them sorted, then move them back over the unsorted ones.
            let start = object.iter().map(|e| e.start).min().unwrap_or(out.len());
            let end = out.len();
            for (i, entry) in object.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_within(entry.start..entry.end);
            }
            out.copy_within(end.., start);
            out.truncate(end);
        }
        entries.truncate(base);
        Ok(())
    }
}

/// Orders two object keys as written (escaped, without quotes) as the strings they are.
fn compare_keys(a: &[u8], b: &[u8]) -> Ordering {
    if !a.contains(&b'\\') && !b.contains(&b'\\') {
        return a.cmp(b);
    }
    unescaped(a).cmp(unescaped(b))
}

/// The bytes of a string that serde_json escaped. It escapes only `"`, `\` and control
/// characters (all ASCII), so the UTF-8 of everything else is untouched.
fn unescaped(s: &[u8]) -> impl Iterator<Item = u8> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        let byte = *s.get(i)?;
        i += 1;
        if byte != b'\\' {
            return Some(byte);
        }
        let escape = *s.get(i)?;
        i += 1;
        Some(match escape {
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                // `\u00XX`: a control character.
                let hex = s.get(i..i + 4)?;
                i += 4;
                u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?
            }
            other => other,
        })
    })
}

impl<'s, 'o> ser::Serializer for &'s mut Canonical<'o> {
    type Ok = Written;
    type Error = serde_json::Error;
    type SerializeSeq = Seq<'s, 'o>;
    type SerializeTuple = Seq<'s, 'o>;
    type SerializeTupleStruct = Seq<'s, 'o>;
    type SerializeTupleVariant = Seq<'s, 'o>;
    type SerializeMap = Object<'s, 'o>;
    type SerializeStruct = Object<'s, 'o>;
    type SerializeStructVariant = Object<'s, 'o>;

    fn serialize_bool(self, v: bool) -> serde_json::Result<Written> {
        Ok(self.formatted(|out| CompactFormatter.write_bool(out, v)))
    }
    fn serialize_i8(self, v: i8) -> serde_json::Result<Written> {
        Ok(self.formatted(|out| CompactFormatter.write_i8(out, v)))
    }
    fn serialize_i16(self, v: i16) -> serde_json::Result<Written> {
        Ok(self.formatted(|out| CompactFormatter.write_i16(out, v)))
    }
    fn serialize_i32(self, v: i32) -> serde_json::Result<Written> {
        Ok(self.formatted(|out| CompactFormatter.write_i32(out, v)))
    }
    fn serialize_i64(self, v: i64) -> serde_json::Result<Written> {
        Ok(self.formatted(|out| CompactFormatter.write_i64(out, v)))
    }
    fn serialize_i128(self, v: i128) -> serde_json::Result<Written> {
        Ok(self.formatted(|out| CompactFormatter.write_i128(out, v)))
    }
    fn serialize_u8(self, v: u8) -> serde_json::Result<Written> {
        Ok(self.formatted(|out| CompactFormatter.write_u8(out, v)))
    }
    fn serialize_u16(self, v: u16) -> serde_json::Result<Written> {
        Ok(self.formatted(|out| CompactFormatter.write_u16(out, v)))
    }
    fn serialize_u32(self, v: u32) -> serde_json::Result<Written> {
        Ok(self.formatted(|out| CompactFormatter.write_u32(out, v)))
    }
    fn serialize_u64(self, v: u64) -> serde_json::Result<Written> {
        Ok(self.formatted(|out| CompactFormatter.write_u64(out, v)))
    }
    fn serialize_u128(self, v: u128) -> serde_json::Result<Written> {
        Ok(self.formatted(|out| CompactFormatter.write_u128(out, v)))
    }
    fn serialize_f32(self, v: f32) -> serde_json::Result<Written> {
        if !v.is_finite() {
            return Err(non_finite());
        }
        Ok(self.formatted(|out| CompactFormatter.write_f32(out, v)))
    }
    fn serialize_f64(self, v: f64) -> serde_json::Result<Written> {
        if !v.is_finite() {
            return Err(non_finite());
        }
        Ok(self.formatted(|out| CompactFormatter.write_f64(out, v)))
    }
    fn serialize_char(self, v: char) -> serde_json::Result<Written> {
        self.serialize_str(v.encode_utf8(&mut [0; 4]))
    }
    fn serialize_str(self, v: &str) -> serde_json::Result<Written> {
        write_str(v, self.out);
        Ok(Written::Other)
    }
    fn serialize_bytes(self, v: &[u8]) -> serde_json::Result<Written> {
        Ok(self.formatted(|out| CompactFormatter.write_byte_array(out, v)))
    }
    fn serialize_none(self) -> serde_json::Result<Written> {
        Ok(self.null())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> serde_json::Result<Written> {
        let start = self.out.len();
        match value.serialize(&mut *self)? {
            Written::Other => Ok(Written::Other),
            Written::Null | Written::WrappedSome | Written::LoneNull => {
                self.out.insert(start, b'[');
                self.out.push(b']');
                Ok(Written::WrappedSome)
            }
        }
    }
    fn serialize_unit(self) -> serde_json::Result<Written> {
        Ok(self.null())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> serde_json::Result<Written> {
        Ok(self.null())
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> serde_json::Result<Written> {
        self.serialize_str(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> serde_json::Result<Written> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> serde_json::Result<Written> {
        // `{"Variant":value}`: one entry, nothing to sort.
        self.out.push(b'{');
        write_str(variant, self.out);
        self.out.push(b':');
        value.serialize(&mut *self)?;
        self.out.push(b'}');
        Ok(Written::Other)
    }
    fn serialize_seq(self, _len: Option<usize>) -> serde_json::Result<Seq<'s, 'o>> {
        self.out.push(b'[');
        Ok(Seq::new(self, b"]"))
    }
    fn serialize_tuple(self, len: usize) -> serde_json::Result<Seq<'s, 'o>> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> serde_json::Result<Seq<'s, 'o>> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> serde_json::Result<Seq<'s, 'o>> {
        // `{"Variant":[..]}`
        self.out.push(b'{');
        write_str(variant, self.out);
        self.out.extend_from_slice(b":[");
        Ok(Seq::new(self, b"]}"))
    }
    fn serialize_map(self, _len: Option<usize>) -> serde_json::Result<Object<'s, 'o>> {
        self.out.push(b'{');
        Ok(Object::new(self, ObjectKind::Object(b"}")))
    }
    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> serde_json::Result<Object<'s, 'o>> {
        match name {
            NUMBER_TOKEN => Ok(Object::new(self, ObjectKind::Number)),
            RAW_VALUE_TOKEN => Ok(Object::new(self, ObjectKind::RawValue(Written::Other))),
            _ => self.serialize_map(Some(len)),
        }
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        _len: usize,
    ) -> serde_json::Result<Object<'s, 'o>> {
        // `{"Variant":{..}}`: the outer object has one entry, the inner one is sorted.
        self.out.push(b'{');
        write_str(variant, self.out);
        self.out.extend_from_slice(b":{");
        Ok(Object::new(self, ObjectKind::Object(b"}}")))
    }
}

/// A sequence, a tuple or a tuple variant being written.
struct Seq<'s, 'o> {
    ser: &'s mut Canonical<'o>,
    /// How many elements so far, and what the first was written as.
    count: usize,
    first: Written,
    close: &'static [u8],
}

impl<'s, 'o> Seq<'s, 'o> {
    fn new(ser: &'s mut Canonical<'o>, close: &'static [u8]) -> Self {
        Seq {
            ser,
            count: 0,
            first: Written::Other,
            close,
        }
    }

    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> serde_json::Result<()> {
        if self.count > 0 {
            self.ser.out.push(b',');
        }
        let written = value.serialize(&mut *self.ser)?;
        if self.count == 0 {
            self.first = written;
        }
        self.count += 1;
        Ok(())
    }

    fn finish(self) -> serde_json::Result<Written> {
        self.ser.out.extend_from_slice(self.close);
        // `[x]` with `x` a null or a wrapped form is what a `Some` of `x` is written as.
        let lone_null = self.count == 1 && self.close == b"]" && self.first != Written::Other;
        Ok(if lone_null {
            Written::LoneNull
        } else {
            Written::Other
        })
    }
}

impl ser::SerializeSeq for Seq<'_, '_> {
    type Ok = Written;
    type Error = serde_json::Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> serde_json::Result<()> {
        self.element(value)
    }
    fn end(self) -> serde_json::Result<Written> {
        self.finish()
    }
}

impl ser::SerializeTuple for Seq<'_, '_> {
    type Ok = Written;
    type Error = serde_json::Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> serde_json::Result<()> {
        self.element(value)
    }
    fn end(self) -> serde_json::Result<Written> {
        self.finish()
    }
}

impl ser::SerializeTupleStruct for Seq<'_, '_> {
    type Ok = Written;
    type Error = serde_json::Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> serde_json::Result<()> {
        self.element(value)
    }
    fn end(self) -> serde_json::Result<Written> {
        self.finish()
    }
}

impl ser::SerializeTupleVariant for Seq<'_, '_> {
    type Ok = Written;
    type Error = serde_json::Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> serde_json::Result<()> {
        self.element(value)
    }
    fn end(self) -> serde_json::Result<Written> {
        self.finish()
    }
}

enum ObjectKind {
    /// A map or a struct, closed by these bytes.
    Object(&'static [u8]),
    /// serde_json's `Number` with `arbitrary_precision`: its digits, as they are.
    Number,
    /// serde_json's `RawValue`: its JSON, made canonical; what it was written as.
    RawValue(Written),
}

/// A map, a struct or a struct variant being written.
struct Object<'s, 'o> {
    ser: &'s mut Canonical<'o>,
    kind: ObjectKind,
    /// Where this object's entries start in `ser.entries`.
    base: usize,
    /// The entry whose key is written and whose value is next.
    pending: Option<Entry>,
}

impl<'s, 'o> Object<'s, 'o> {
    fn new(ser: &'s mut Canonical<'o>, kind: ObjectKind) -> Self {
        let base = ser.entries.len();
        Object {
            ser,
            kind,
            base,
            pending: None,
        }
    }

    fn field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> serde_json::Result<()> {
        match self.kind {
            ObjectKind::Object(_) => {
                let entry = self.ser.begin_entry(self.base, |out| {
                    write_str(key, out);
                    Ok(())
                })?;
                value.serialize(&mut *self.ser)?;
                self.ser.end_entry(entry);
            }
            ObjectKind::Number => {
                let digits = token_text(key, NUMBER_TOKEN, value)?;
                if digits.parse::<serde_json::Number>().is_err() {
                    return Err(ser::Error::custom("invalid number"));
                }
                self.ser.out.extend_from_slice(digits.as_bytes());
            }
            ObjectKind::RawValue(_) => {
                let json = token_text(key, RAW_VALUE_TOKEN, value)?;
                let value: serde_json::Value = serde_json::from_str(&json)?;
                self.kind = ObjectKind::RawValue(value.serialize(&mut *self.ser)?);
            }
        }
        Ok(())
    }

    fn finish(self) -> serde_json::Result<Written> {
        match self.kind {
            ObjectKind::Object(close) => {
                self.ser.sort_object(self.base)?;
                self.ser.out.extend_from_slice(close);
                Ok(Written::Other)
            }
            ObjectKind::Number => Ok(Written::Other),
            ObjectKind::RawValue(written) => Ok(written),
        }
    }
}

/// The text serde_json's `Number` or `RawValue` carries in its one field.
fn token_text<T: Serialize + ?Sized>(
    key: &str,
    token: &str,
    value: &T,
) -> serde_json::Result<String> {
    match serde_json::to_value(value)? {
        serde_json::Value::String(text) if key == token => Ok(text),
        _ => Err(ser::Error::custom(format_args!("malformed {token}"))),
    }
}

impl ser::SerializeMap for Object<'_, '_> {
    type Ok = Written;
    type Error = serde_json::Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> serde_json::Result<()> {
        let entry = self
            .ser
            .begin_entry(self.base, |out| key.serialize(MapKey { out }))?;
        self.pending = Some(entry);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> serde_json::Result<()> {
        let entry = self
            .pending
            .take()
            .ok_or_else(|| ser::Error::custom("a map value without its key"))?;
        value.serialize(&mut *self.ser)?;
        self.ser.end_entry(entry);
        Ok(())
    }
    fn end(self) -> serde_json::Result<Written> {
        self.finish()
    }
}

impl ser::SerializeStruct for Object<'_, '_> {
    type Ok = Written;
    type Error = serde_json::Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> serde_json::Result<()> {
        self.field(key, value)
    }
    fn end(self) -> serde_json::Result<Written> {
        self.finish()
    }
}

impl ser::SerializeStructVariant for Object<'_, '_> {
    type Ok = Written;
    type Error = serde_json::Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> serde_json::Result<()> {
        self.field(key, value)
    }
    fn end(self) -> serde_json::Result<Written> {
        self.finish()
    }
}

/// Writes a map key as a JSON string, as serde_json does when it makes a `Value`: strings,
/// chars and unit variants as they are; integers, floats and `bool`s as their JSON text in
/// quotes; newtype structs as what they hold. Anything else is an error.
struct MapKey<'o> {
    out: &'o mut Vec<u8>,
}

impl MapKey<'_> {
    fn quoted(
        self,
        write: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>,
    ) -> serde_json::Result<()> {
        self.out.push(b'"');
        infallible(write(self.out));
        self.out.push(b'"');
        Ok(())
    }
}

impl ser::Serializer for MapKey<'_> {
    type Ok = ();
    type Error = serde_json::Error;
    type SerializeSeq = Impossible<(), serde_json::Error>;
    type SerializeTuple = Impossible<(), serde_json::Error>;
    type SerializeTupleStruct = Impossible<(), serde_json::Error>;
    type SerializeTupleVariant = Impossible<(), serde_json::Error>;
    type SerializeMap = Impossible<(), serde_json::Error>;
    type SerializeStruct = Impossible<(), serde_json::Error>;
    type SerializeStructVariant = Impossible<(), serde_json::Error>;

    fn serialize_bool(self, v: bool) -> serde_json::Result<()> {
        self.quoted(|out| CompactFormatter.write_bool(out, v))
    }
    fn serialize_i8(self, v: i8) -> serde_json::Result<()> {
        self.quoted(|out| CompactFormatter.write_i8(out, v))
    }
    fn serialize_i16(self, v: i16) -> serde_json::Result<()> {
        self.quoted(|out| CompactFormatter.write_i16(out, v))
    }
    fn serialize_i32(self, v: i32) -> serde_json::Result<()> {
        self.quoted(|out| CompactFormatter.write_i32(out, v))
    }
    fn serialize_i64(self, v: i64) -> serde_json::Result<()> {
        self.quoted(|out| CompactFormatter.write_i64(out, v))
    }
    fn serialize_i128(self, v: i128) -> serde_json::Result<()> {
        self.quoted(|out| CompactFormatter.write_i128(out, v))
    }
    fn serialize_u8(self, v: u8) -> serde_json::Result<()> {
        self.quoted(|out| CompactFormatter.write_u8(out, v))
    }
    fn serialize_u16(self, v: u16) -> serde_json::Result<()> {
        self.quoted(|out| CompactFormatter.write_u16(out, v))
    }
    fn serialize_u32(self, v: u32) -> serde_json::Result<()> {
        self.quoted(|out| CompactFormatter.write_u32(out, v))
    }
    fn serialize_u64(self, v: u64) -> serde_json::Result<()> {
        self.quoted(|out| CompactFormatter.write_u64(out, v))
    }
    fn serialize_u128(self, v: u128) -> serde_json::Result<()> {
        self.quoted(|out| CompactFormatter.write_u128(out, v))
    }
    fn serialize_f32(self, v: f32) -> serde_json::Result<()> {
        if !v.is_finite() {
            return Err(non_finite());
        }
        self.quoted(|out| CompactFormatter.write_f32(out, v))
    }
    fn serialize_f64(self, v: f64) -> serde_json::Result<()> {
        if !v.is_finite() {
            return Err(non_finite());
        }
        self.quoted(|out| CompactFormatter.write_f64(out, v))
    }
    fn serialize_char(self, v: char) -> serde_json::Result<()> {
        self.serialize_str(v.encode_utf8(&mut [0; 4]))
    }
    fn serialize_str(self, v: &str) -> serde_json::Result<()> {
        write_str(v, self.out);
        Ok(())
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> serde_json::Result<()> {
        self.serialize_str(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> serde_json::Result<()> {
        value.serialize(self)
    }
    fn serialize_bytes(self, _v: &[u8]) -> serde_json::Result<()> {
        Err(key_must_be_a_string())
    }
    fn serialize_none(self) -> serde_json::Result<()> {
        Err(key_must_be_a_string())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, _value: &T) -> serde_json::Result<()> {
        Err(key_must_be_a_string())
    }
    fn serialize_unit(self) -> serde_json::Result<()> {
        Err(key_must_be_a_string())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> serde_json::Result<()> {
        Err(key_must_be_a_string())
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> serde_json::Result<()> {
        Err(key_must_be_a_string())
    }
    fn serialize_seq(self, _len: Option<usize>) -> serde_json::Result<Self::SerializeSeq> {
        Err(key_must_be_a_string())
    }
    fn serialize_tuple(self, _len: usize) -> serde_json::Result<Self::SerializeTuple> {
        Err(key_must_be_a_string())
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> serde_json::Result<Self::SerializeTupleStruct> {
        Err(key_must_be_a_string())
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> serde_json::Result<Self::SerializeTupleVariant> {
        Err(key_must_be_a_string())
    }
    fn serialize_map(self, _len: Option<usize>) -> serde_json::Result<Self::SerializeMap> {
        Err(key_must_be_a_string())
    }
    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> serde_json::Result<Self::SerializeStruct> {
        Err(key_must_be_a_string())
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> serde_json::Result<Self::SerializeStructVariant> {
        Err(key_must_be_a_string())
    }
}
