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
//!
//! Two other encodings are opt-in ([`Codec`], [`Format`]), and every reader reads all of
//! them, whatever it writes, telling them apart by the first byte:
//! - `{`: the JSON envelope above.
//! - a MessagePack map (`0x80`–`0x8f`, `0xde`, `0xdf`; feature `msgpack`): the same
//!   envelope, the same field names, with the value written by `rmp-serde` with its field
//!   names.
//! - `0xc1` (a byte neither JSON nor MessagePack ever starts with; feature `compression`):
//!   a JSON or MessagePack envelope (and its trailer, if it has one: an HTTP response's
//!   header block and body) compressed with LZ4, after its length (4 bytes, little endian).
//!
//! A reader without the feature an entry needs fails to decode it, which is a miss.

use serde::de::{self, DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserializer, Serialize};
use std::fmt;
use std::io::Write as _;
use std::marker::PhantomData;
use std::time::Duration;

/// A failure this module describes itself, as the JSON error the callers count, marked as
/// ours ([`OWN_FAULT`]): its text names no cached data, so a decode error shows it whole
/// where a serde message is only classified (it may quote the data). Pass only fixed text
/// and numbers.
fn fault(message: impl fmt::Display) -> serde_json::Error {
    <serde_json::Error as de::Error>::custom(format_args!("{OWN_FAULT}{message}"))
}

/// What starts the text of a [`fault`].
pub(crate) const OWN_FAULT: &str = "redcache: ";

/// Another library's error, as the JSON error the callers count (not marked as ours: its
/// text is not shown whole when reading), and what an encoding says: an encoding error
/// is shown whole, and is never marked.
fn foreign(err: impl fmt::Display) -> serde_json::Error {
    <serde_json::Error as de::Error>::custom(err)
}

/// The version written into every envelope.
pub(crate) const FORMAT_VERSION: u64 = 1;

/// The first byte of a compressed envelope: `0xc1` is never used in MessagePack, and no
/// JSON text starts with it.
const COMPRESSED: u8 = 0xc1;

/// How values are encoded in the store. Every reader decodes every codec (each entry says
/// which it holds), so a change of codec needs no flush: entries written before it are
/// still read, and rewritten in the new codec as they expire.
///
/// ```
/// use redcache::{Codec, Config};
///
/// let config = Config::builder().codec(Codec::Json).build();
/// assert_eq!(config.codec(), Codec::Json);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Codec {
    /// JSON, readable with `redis-cli` (the default).
    #[default]
    Json,
    /// MessagePack, with field names (feature `msgpack`): about half the size of JSON for
    /// numbers and byte-heavy values, and faster to decode. Field names keep it
    /// self-describing, so `#[serde(flatten)]`, untagged enums and `serde_json::Value`
    /// round-trip as they do with JSON.
    MessagePack,
}

impl Codec {
    /// Its name in `#[cached(codec = "..")]` and `REDCACHE_CODEC`.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Json => "json",
            Codec::MessagePack => "msgpack",
        }
    }

    /// The codec of this name (`json`, `msgpack`), if any.
    pub fn from_name(name: &str) -> Option<Codec> {
        match name {
            "json" => Some(Codec::Json),
            "msgpack" => Some(Codec::MessagePack),
            _ => None,
        }
    }

    /// Whether this build can write it (MessagePack needs the `msgpack` feature).
    pub(crate) fn available(self) -> bool {
        match self {
            Codec::Json => true,
            Codec::MessagePack => cfg!(feature = "msgpack"),
        }
    }
}

/// How an entry is written: its codec, and the size above which it is compressed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Format {
    pub(crate) codec: Codec,
    /// Envelopes longer than this many bytes are compressed (`None`: never).
    pub(crate) compress_above: Option<usize>,
}

impl Format {
    /// This format with a function's own choices, where it made them, in place of these.
    pub(crate) fn with_own(self, codec: Option<Codec>, compress_above: Option<usize>) -> Format {
        Format {
            codec: codec.unwrap_or(self.codec),
            compress_above: compress_above.or(self.compress_above),
        }
    }
}

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
    /// Whether the entry is past its TTL (kept for a stale window, which only a
    /// `#[cached]` call that knows the function's windows may use).
    pub(crate) fn expired(&self) -> bool {
        self.refresh
            .is_some_and(|entry| crate::ttl::unix_ms() >= entry.expires_ms)
    }

    /// `self`, saying that its entry expires `ttl` from now if it says no expiry yet, and
    /// with no stale window: for an entry the store may keep past its TTL, which readers
    /// must then take for a miss. A store keeps an entry written after a read that saw
    /// something, or by a writer, as long as it still fences older fills (see `FILL_LUA`).
    pub(crate) fn expiring_in(mut self, ttl: Duration) -> Self {
        if self.refresh.is_none() {
            self.refresh = Some(Refresh {
                expires_ms: crate::ttl::unix_ms().saturating_add(crate::ttl::millis(ttl)),
                compute_ms: 0,
            });
            self.windows = Some(Windows::default());
        }
        self
    }

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

/// Encodes a value into its envelope, in `format`: an error if it would read back as
/// another value of its type (see the `faithful` module).
pub(crate) fn encode_value<T: Serialize + DeserializeOwned>(
    value: &T,
    stamp: Stamp,
    format: Format,
) -> serde_json::Result<Vec<u8>> {
    let plain = encode_plain(value, stamp, format, true, |plain| {
        // Read back as the reader will, and compared as key material is (which tells
        // `Some(None)` from `None`).
        decode::<T>(plain).is_ok_and(|envelope| match envelope.body {
            Decoded::Value(back) => crate::key::same_material(value, &back),
            Decoded::Null | Decoded::Gone => false,
        })
    })?;
    compress(plain, format.compress_above)
}

/// [`encode_value`] for a value whose reader's type is not known ([`Cache::set`]
/// (crate::Cache::set), read with any type): one the `faithful` walk suspects is refused.
pub(crate) fn encode_untyped<T: Serialize + ?Sized>(
    value: &T,
    stamp: Stamp,
    format: Format,
) -> serde_json::Result<Vec<u8>> {
    compress(
        encode_plain(value, stamp, format, false, |_| false)?,
        format.compress_above,
    )
}

/// A value's envelope in `format`'s codec, uncompressed. If the `faithful` walk suspects
/// the value would not read back as itself, `reads_back` is asked, with the envelope;
/// `typed`: it can read the value back into its type (so 128-bit integers are checked).
fn encode_plain<T: Serialize + ?Sized>(
    value: &T,
    stamp: Stamp,
    format: Format,
    typed: bool,
    reads_back: impl FnOnce(&[u8]) -> bool,
) -> serde_json::Result<Vec<u8>> {
    let suspect = crate::faithful::check(value, format.codec == Codec::Json, typed).err();
    let plain = match format.codec {
        Codec::Json => {
            let mut out = head(stamp);
            out.extend_from_slice(br#""d":"#);
            serde_json::to_writer(&mut out, value)?;
            out.push(b'}');
            out
        }
        Codec::MessagePack => msgpack::encode(stamp, Some(value))?,
    };
    match suspect {
        Some(err) if !reads_back(&plain) => Err(err),
        _ => Ok(plain),
    }
}

/// Encodes a value's envelope followed by `trailer`, raw bytes that no codec escapes or
/// re-encodes (a response's header block and body: JSON would escape every quote of a
/// JSON body, and a reader would unescape it again on every hit). The two are compressed
/// together when `format` compresses.
#[cfg(feature = "http")]
pub(crate) fn encode_with_trailer<T: Serialize + ?Sized>(
    value: &T,
    stamp: Stamp,
    format: Format,
    trailer: &[&[u8]],
) -> serde_json::Result<Vec<u8>> {
    let mut plain = encode_plain(value, stamp, format, false, |_| false)?;
    for part in trailer {
        plain.extend_from_slice(part);
    }
    compress(plain, format.compress_above)
}

/// Decodes an envelope that [`encode_with_trailer`] wrote, and the bytes after it (none
/// for an envelope written without a trailer). `written` reads a value as its encoder lays
/// it out, if it can (then returns where it ends); serde reads anything else.
#[cfg(feature = "http")]
pub(crate) fn decode_with_trailer<T: DeserializeOwned>(
    bytes: &[u8],
    written: fn(&mut Written<'_>) -> Option<T>,
) -> serde_json::Result<(Envelope<T>, bytes::Bytes)> {
    match bytes.split_first() {
        Some((&COMPRESSED, packed)) => {
            let plain = bytes::Bytes::from(lz4::decompress(packed)?);
            let (envelope, end) = decode_prefix(&plain, written)?;
            Ok((envelope, plain.slice(end..)))
        }
        _ => {
            let (envelope, end) = decode_prefix(bytes, written)?;
            Ok((envelope, bytes::Bytes::copy_from_slice(&bytes[end..])))
        }
    }
}

/// Decodes the envelope at the start of uncompressed `bytes`, and where it ends.
#[cfg(feature = "http")]
fn decode_prefix<T: DeserializeOwned>(
    bytes: &[u8],
    written: fn(&mut Written<'_>) -> Option<T>,
) -> serde_json::Result<(Envelope<T>, usize)> {
    if let Some(0x80..=0x8f | 0xde | 0xdf) = bytes.first() {
        return msgpack::decode_prefix(bytes);
    }
    /// An envelope as a `Deserialize` type, for serde_json's stream reader.
    struct Whole<T>(Envelope<T>);
    impl<'de, T: DeserializeOwned> de::Deserialize<'de> for Whole<T> {
        fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
            EnvelopeSeed(PhantomData).deserialize(de).map(Whole)
        }
    }
    // Only an object may start it: a stream reader would also take a number, and read
    // the trailer's digits into it.
    if bytes.first() != Some(&b'{') {
        return Err(fault("an entry that is not an envelope"));
    }
    // The layout `encode_plain` writes, read without serde's field matching (as in
    // `decode_plain`); the value ends at its own closing bracket, then the envelope's.
    if let Some((stamp, at)) = written_stamp(bytes) {
        let mut json = Written::new(bytes);
        json.at = at;
        let read = match written(&mut json) {
            Some(value) => Some((value, json.at())),
            None => {
                let mut values =
                    serde_json::Deserializer::from_slice(&bytes[at..]).into_iter::<T>();
                match values.next() {
                    Some(Ok(value)) => Some((value, at + values.byte_offset())),
                    _ => None,
                }
            }
        };
        if let Some((value, end)) = read {
            if bytes.get(end) == Some(&b'}') {
                let envelope = Envelope {
                    body: Decoded::Value(value),
                    stamp,
                };
                return Ok((envelope, end + 1));
            }
        }
    }
    let mut values = serde_json::Deserializer::from_slice(bytes).into_iter::<Whole<T>>();
    match values.next() {
        Some(Ok(Whole(envelope))) => Ok((envelope, values.byte_offset())),
        Some(Err(err)) => Err(err),
        None => Err(fault("an empty entry")),
    }
}

/// The envelope of a cached `None`, in `format`'s codec (never compressed: it is short).
pub(crate) fn encode_null(stamp: Stamp, format: Format) -> Vec<u8> {
    if format.codec == Codec::MessagePack {
        // A stamp and `true` always encode; without the feature, JSON.
        if let Ok(bytes) = msgpack::encode::<()>(stamp, None) {
            return bytes;
        }
    }
    let mut out = head(stamp);
    out.extend_from_slice(br#""none":true}"#);
    out
}

/// `plain` compressed, behind [`COMPRESSED`] and its length, when it is longer than
/// `above` bytes and compressing makes it shorter; else `plain`.
fn compress(plain: Vec<u8>, above: Option<usize>) -> serde_json::Result<Vec<u8>> {
    match above {
        Some(above) if plain.len() > above => lz4::compress(plain),
        _ => Ok(plain),
    }
}

/// How many bytes `entry` holds once decompressed: a compressed entry's claimed plain
/// length (a decode checks it is the length it holds), else its own.
pub(crate) fn plain_len(entry: &[u8]) -> usize {
    match entry {
        [COMPRESSED, a, b, c, d, ..] => u32::from_le_bytes([*a, *b, *c, *d]) as usize,
        _ => entry.len(),
    }
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

/// Decodes an envelope of any codec, compressed or not, reading the value straight into
/// `T` (no intermediate tree).
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> serde_json::Result<Envelope<T>> {
    match bytes.split_first() {
        Some((&COMPRESSED, packed)) => decode_plain(&lz4::decompress(packed)?),
        _ => decode_plain(bytes),
    }
}

/// Decodes an uncompressed envelope: MessagePack if it starts as a map, else JSON.
fn decode_plain<T: DeserializeOwned>(bytes: &[u8]) -> serde_json::Result<Envelope<T>> {
    if let Some(0x80..=0x8f | 0xde | 0xdf) = bytes.first() {
        return msgpack::decode(bytes);
    }
    // The layout `encode_plain` writes, read without serde's field matching; anything
    // else (or a value that fails) goes the general way, which says what is wrong.
    if let Some((stamp, at)) = written_stamp(bytes) {
        if let Some(value) = bytes[at..]
            .strip_suffix(b"}")
            .and_then(|json| serde_json::from_slice(json).ok())
        {
            return Ok(Envelope {
                body: Decoded::Value(value),
                stamp,
            });
        }
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let decoded = EnvelopeSeed(PhantomData).deserialize(&mut de)?;
    de.end()?;
    Ok(decoded)
}

/// The stamp of a value's envelope exactly as [`head`] and [`encode_plain`] write it
/// (`{"v":1,`, the stamp's fields in `head`'s order, then `"d":`), and where the value
/// starts; `None` for any other layout, which the general decoder reads (or refuses).
/// Only what that decoder would read the same way is taken: each field once, in order,
/// numbers as JSON writes them.
fn written_stamp(bytes: &[u8]) -> Option<(Stamp, usize)> {
    let mut json = Written::new(bytes);
    if !json.literal(br#"{"v":1,"#) {
        return None;
    }
    // Each field the stamp has is followed by a comma.
    let mut field = |name: &[u8]| match json.field(name)? {
        Some(number) => json.literal(b",").then_some(Some(number)),
        None => Some(None),
    };
    let gen = field(br#""g":"#)?;
    let tags = field(br#""tg":"#)?;
    let expiry = field(br#""x":"#)?;
    let compute = field(br#""t":"#)?;
    let stale = field(br#""w":"#)?;
    let if_error = field(br#""e":"#)?;
    let refresh = match (expiry, compute) {
        (Some(expires_ms), Some(compute_ms)) => Some(Refresh {
            expires_ms,
            compute_ms,
        }),
        (None, None) => None,
        _ => return None,
    };
    let windows = match (stale, if_error, refresh) {
        (Some(stale_ms), Some(if_error_ms), Some(_)) => Some(Windows {
            stale_ms,
            if_error_ms,
        }),
        (None, None, _) => None,
        _ => return None,
    };
    if !json.literal(br#""d":"#) {
        return None;
    }
    let stamp = Stamp {
        gen: gen.unwrap_or(0),
        refresh,
        windows,
        tags: tags.unwrap_or(0),
    };
    Some((stamp, json.at()))
}

/// A reader of JSON exactly as redcache's own encoders lay it out: literal text, and
/// numbers as JSON writes them (no sign, no leading zero, within `u64`). What it does not
/// recognise, the caller hands to serde.
pub(crate) struct Written<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Written<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Written { bytes, at: 0 }
    }

    /// Where it has read up to.
    pub(crate) fn at(&self) -> usize {
        self.at
    }

    /// Reads `text` if it comes next; whether it did.
    pub(crate) fn literal(&mut self, text: &[u8]) -> bool {
        let next = self.bytes[self.at..].starts_with(text);
        if next {
            self.at += text.len();
        }
        next
    }

    /// The number after `name` (`"field":`), if `name` comes next: `Some(None)` if it does
    /// not, `None` if it does without a number after it.
    pub(crate) fn field(&mut self, name: &[u8]) -> Option<Option<u64>> {
        match self.literal(name) {
            true => self.number().map(Some),
            false => Some(None),
        }
    }

    /// A number as JSON writes a `u64`.
    pub(crate) fn number(&mut self) -> Option<u64> {
        // One pass over the digits (an entry's stamp and an HTTP entry's metadata read a
        // dozen numbers on every hit).
        let rest = &self.bytes[self.at..];
        let mut number: u64 = 0;
        let mut digits = 0;
        for &byte in rest {
            let digit = byte.wrapping_sub(b'0');
            if digit > 9 {
                break;
            }
            number = number.checked_mul(10)?.checked_add(u64::from(digit))?;
            digits += 1;
        }
        if digits == 0 || (digits > 1 && rest[0] == b'0') {
            return None;
        }
        self.at += digits;
        Some(number)
    }

    /// `true` or `false`.
    #[cfg(feature = "http")]
    pub(crate) fn boolean(&mut self) -> Option<bool> {
        if self.literal(b"true") {
            Some(true)
        } else if self.literal(b"false") {
            Some(false)
        } else {
            None
        }
    }
}

/// Whether `bytes` hold an entry a reader may still be served: not a tombstone, nor an
/// entry the store keeps past its TTL only to go on fencing older fills (its stamp says it
/// has expired, with no stale window; see `Stamp::expiring_in`). Anything that does not
/// decode counts as one.
pub(crate) fn is_live(bytes: &[u8]) -> bool {
    match decode::<IgnoredAny>(bytes) {
        Ok(Envelope {
            body: Decoded::Gone,
            ..
        }) => false,
        Ok(Envelope { stamp, .. }) => {
            !(stamp.expired() && stamp.windows == Some(Windows::default()))
        }
        Err(_) => true,
    }
}

/// Whether `bytes` are a tombstone (without decoding a value). Tombstones are always JSON,
/// so other encodings are not looked into.
pub(crate) fn is_tombstone(bytes: &[u8]) -> bool {
    bytes.first() == Some(&b'{')
        && matches!(
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

/// The MessagePack envelope: the JSON envelope's fields, in its order, as a map.
mod msgpack {
    use super::Stamp;
    use super::{fault, foreign};
    #[cfg(feature = "msgpack")]
    use super::{Envelope, EnvelopeSeed, FORMAT_VERSION};
    use serde::de::DeserializeOwned;
    use serde::Serialize;
    #[cfg(feature = "msgpack")]
    use serde::{de::DeserializeSeed, ser::SerializeMap, Serializer};

    /// An envelope to write: a stamp and a value, or a stamp and `none`.
    #[cfg(feature = "msgpack")]
    struct Out<'a, T: ?Sized> {
        stamp: Stamp,
        value: Option<&'a T>,
    }

    #[cfg(feature = "msgpack")]
    impl<T: Serialize + ?Sized> Serialize for Out<'_, T> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let Stamp {
                gen,
                refresh,
                windows,
                tags,
            } = self.stamp;
            let windows = windows.filter(|_| refresh.is_some());
            let len = 2
                + usize::from(gen != 0)
                + usize::from(tags != 0)
                + 2 * usize::from(refresh.is_some())
                + 2 * usize::from(windows.is_some());
            let mut map = s.serialize_map(Some(len))?;
            map.serialize_entry("v", &FORMAT_VERSION)?;
            if gen != 0 {
                map.serialize_entry("g", &gen)?;
            }
            if tags != 0 {
                map.serialize_entry("tg", &tags)?;
            }
            if let Some(r) = refresh {
                map.serialize_entry("x", &r.expires_ms)?;
                map.serialize_entry("t", &r.compute_ms)?;
            }
            if let Some(w) = windows {
                map.serialize_entry("w", &w.stale_ms)?;
                map.serialize_entry("e", &w.if_error_ms)?;
            }
            match self.value {
                Some(value) => map.serialize_entry("d", value)?,
                None => map.serialize_entry("none", &true)?,
            }
            map.end()
        }
    }

    /// The envelope of `value` (`None`: of a cached `None`).
    #[cfg(feature = "msgpack")]
    pub(super) fn encode<T: Serialize + ?Sized>(
        stamp: Stamp,
        value: Option<&T>,
    ) -> serde_json::Result<Vec<u8>> {
        rmp_serde::to_vec_named(&Out { stamp, value }).map_err(foreign)
    }

    /// Reads an envelope, and nothing after it.
    #[cfg(feature = "msgpack")]
    pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> serde_json::Result<Envelope<T>> {
        let (decoded, end) = decode_prefix(bytes)?;
        if end != bytes.len() {
            return Err(fault(format_args!(
                "{} bytes after a MessagePack envelope",
                bytes.len() - end
            )));
        }
        Ok(decoded)
    }

    /// How deep a MessagePack entry may nest: serde_json's limit, for the same reason.
    #[cfg(feature = "msgpack")]
    const MAX_DEPTH: usize = 128;

    /// Reads the envelope at the start of `bytes`, and where it ends.
    #[cfg(feature = "msgpack")]
    pub(super) fn decode_prefix<T: DeserializeOwned>(
        bytes: &[u8],
    ) -> serde_json::Result<(Envelope<T>, usize)> {
        let mut rest = bytes;
        let mut de = rmp_serde::Deserializer::new(&mut rest);
        // As deep as serde_json reads (rmp-serde's own limit is 1,024): a corrupt entry of
        // nested arrays must be a miss, not a stack overflow of the thread reading it.
        de.set_max_depth(MAX_DEPTH);
        // rmp-serde's message may quote the data: only its kind is said.
        let decoded = EnvelopeSeed(std::marker::PhantomData)
            .deserialize(&mut de)
            .map_err(|err| {
                use rmp_serde::decode::Error as E;
                match err {
                    E::DepthLimitExceeded => fault("a MessagePack entry nested too deep"),
                    E::InvalidMarkerRead(_) | E::InvalidDataRead(_) | E::Utf8Error(_) => {
                        fault("not valid MessagePack")
                    }
                    _ => fault("MessagePack of another shape or type"),
                }
            })?;
        drop(de);
        Ok((decoded, bytes.len() - rest.len()))
    }

    #[cfg(not(feature = "msgpack"))]
    pub(super) fn encode<T: Serialize + ?Sized>(
        _: Stamp,
        _: Option<&T>,
    ) -> serde_json::Result<Vec<u8>> {
        Err(foreign(
            "Codec::MessagePack needs redcache's `msgpack` feature",
        ))
    }

    #[cfg(not(feature = "msgpack"))]
    pub(super) fn decode<T: DeserializeOwned>(_: &[u8]) -> serde_json::Result<super::Envelope<T>> {
        Err(fault(
            "a MessagePack entry, and this build has no `msgpack` feature",
        ))
    }

    #[cfg(all(not(feature = "msgpack"), feature = "http"))]
    pub(super) fn decode_prefix<T: DeserializeOwned>(
        _: &[u8],
    ) -> serde_json::Result<(super::Envelope<T>, usize)> {
        Err(fault(
            "a MessagePack entry, and this build has no `msgpack` feature",
        ))
    }
}

/// LZ4 blocks behind [`COMPRESSED`] and the plain length.
mod lz4 {
    #[cfg(feature = "compression")]
    use super::COMPRESSED;
    use super::{fault, foreign};

    /// The most a block may claim to expand to: LZ4 never expands more than 255 times, and
    /// no entry outgrows a Redis string (512 MiB). A corrupt length is refused before any
    /// allocation.
    #[cfg(feature = "compression")]
    fn plausible(claimed: usize, packed: usize) -> bool {
        claimed <= packed.saturating_mul(255).saturating_add(16) && claimed <= 512 << 20
    }

    /// `plain` compressed, or `plain` itself if that is not shorter.
    #[cfg(feature = "compression")]
    pub(super) fn compress(plain: Vec<u8>) -> serde_json::Result<Vec<u8>> {
        let Ok(len) = u32::try_from(plain.len()) else {
            return Ok(plain);
        };
        let mut out = vec![0; 5 + lz4_flex::block::get_maximum_output_size(plain.len())];
        out[0] = COMPRESSED;
        out[1..5].copy_from_slice(&len.to_le_bytes());
        let written = lz4_flex::block::compress_into(&plain, &mut out[5..]).map_err(foreign)?;
        if 5 + written >= plain.len() {
            return Ok(plain);
        }
        out.truncate(5 + written);
        Ok(out)
    }

    /// The envelope inside a compressed entry (after its first byte).
    #[cfg(feature = "compression")]
    pub(super) fn decompress(packed: &[u8]) -> serde_json::Result<Vec<u8>> {
        let Some((len, block)) = packed.split_first_chunk::<4>() else {
            return Err(fault("a compressed entry without its length"));
        };
        let len = u32::from_le_bytes(*len) as usize;
        if !plausible(len, block.len()) {
            return Err(fault(format_args!(
                "a compressed entry of {} bytes claims {len}",
                block.len()
            )));
        }
        let mut plain = vec![0; len];
        match lz4_flex::block::decompress_into(block, &mut plain) {
            Ok(n) if n == len => Ok(plain),
            Ok(n) => Err(fault(format_args!(
                "a compressed entry claims {len} bytes and holds {n}"
            ))),
            Err(e) => Err(fault(format_args!(
                "a compressed entry that does not decompress ({e})"
            ))),
        }
    }

    #[cfg(not(feature = "compression"))]
    pub(super) fn compress(_: Vec<u8>) -> serde_json::Result<Vec<u8>> {
        Err(foreign(
            "compress_above needs redcache's `compression` feature",
        ))
    }

    #[cfg(not(feature = "compression"))]
    pub(super) fn decompress(_: &[u8]) -> serde_json::Result<Vec<u8>> {
        Err(fault(
            "a compressed entry, and this build has no `compression` feature",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::collections::HashMap;

    const JSON: Format = Format {
        codec: Codec::Json,
        compress_above: None,
    };

    /// Every format this build writes: each codec, plain and always compressed.
    fn formats() -> Vec<Format> {
        let codecs = [Codec::Json, Codec::MessagePack];
        let compress = [None, Some(0)];
        let compress = &compress[..if cfg!(feature = "compression") { 2 } else { 1 }];
        codecs
            .into_iter()
            .filter(|c| c.available())
            .flat_map(|codec| {
                compress.iter().map(move |&compress_above| Format {
                    codec,
                    compress_above,
                })
            })
            .collect()
    }

    #[test]
    fn codec_names_round_trip() {
        for codec in [Codec::Json, Codec::MessagePack] {
            assert_eq!(Codec::from_name(codec.name()), Some(codec));
        }
        assert_eq!(Codec::from_name("bson"), None);
    }

    #[test]
    fn what_a_build_cannot_write_is_an_error_not_another_format() {
        let msgpack = Format {
            codec: Codec::MessagePack,
            compress_above: None,
        };
        assert_eq!(
            encode_value(&1u8, Stamp::default(), msgpack).is_ok(),
            cfg!(feature = "msgpack")
        );
        let compressed = Format {
            compress_above: Some(0),
            ..JSON
        };
        let long = "x".repeat(1000);
        assert_eq!(
            encode_value(&long, Stamp::default(), compressed).is_ok(),
            cfg!(feature = "compression")
        );
    }

    #[test]
    fn every_format_round_trips_values_and_stamps() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Inner {
            city: String,
        }
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        #[serde(untagged)]
        enum Either {
            Number(u64),
            Text(String),
        }
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        enum Kind {
            Unit,
            Pair(u8, u8),
        }
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "type")]
        enum Event {
            Created { by: String },
            Deleted,
        }
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Rich {
            id: u64,
            #[serde(flatten)]
            inner: Inner,
            either: Vec<Either>,
            kinds: Vec<Kind>,
            extra: serde_json::Value,
            bytes: Vec<u8>,
            missing: Option<String>,
            events: Vec<Event>,
            #[serde(skip_serializing_if = "Option::is_none", default)]
            skipped: Option<u8>,
        }
        let rich = || Rich {
            id: u64::MAX,
            inner: Inner {
                city: "Kraków".into(),
            },
            either: vec![Either::Number(3), Either::Text("three".into())],
            kinds: vec![Kind::Unit, Kind::Pair(1, 2)],
            extra: serde_json::json!({"a": [1, -2, 3.5, null, true], "b": {"c": "d"}}),
            bytes: vec![0, 255, 7],
            missing: None,
            events: vec![Event::Created { by: "ada".into() }, Event::Deleted],
            skipped: None,
        };
        let stamp = Stamp {
            gen: 9,
            tags: 11,
            refresh: Some(Refresh {
                expires_ms: 1_700_000_000_000,
                compute_ms: 4,
            }),
            windows: Some(Windows {
                stale_ms: 1,
                if_error_ms: 2,
            }),
        };
        for format in formats() {
            let bytes = encode_value(&rich(), stamp, format).unwrap();
            assert_eq!(
                decode::<Rich>(&bytes).unwrap(),
                Envelope {
                    body: Decoded::Value(rich()),
                    stamp
                },
                "{format:?}"
            );
            let null = encode_null(stamp.of_null(), format);
            assert_eq!(
                decode::<Rich>(&null).unwrap(),
                Envelope {
                    body: Decoded::Null,
                    stamp: stamp.of_null()
                },
                "{format:?}"
            );
            assert!(!is_tombstone(&bytes) && !is_tombstone(&null));
        }
    }

    #[test]
    fn an_entry_nested_deeper_than_json_reads_is_a_miss_in_every_codec() {
        let nested = |depth: usize| {
            (0..depth).fold(serde_json::json!(1), |inner, _| {
                serde_json::Value::Array(vec![inner])
            })
        };
        for format in formats() {
            let shallow = encode_value(&nested(100), Stamp::default(), format).unwrap();
            assert!(
                matches!(decode::<serde_json::Value>(&shallow).unwrap().body, Decoded::Value(v) if v == nested(100)),
                "{format:?}"
            );
            // Written, as any value is; read, it is an error (a miss), never a reader
            // recursing as deep as the bytes say.
            let deep = encode_value(&nested(200), Stamp::default(), format).unwrap();
            assert!(decode::<serde_json::Value>(&deep).is_err(), "{format:?}");
        }
    }

    #[cfg(feature = "msgpack")]
    #[test]
    fn msgpack_envelopes_are_maps_with_the_json_field_names() {
        let msgpack = Format {
            codec: Codec::MessagePack,
            compress_above: None,
        };
        let user = User {
            id: 1,
            name: "A".into(),
        };
        let bytes = encode_value(&user, Stamp::gen(42), msgpack).unwrap();
        assert_eq!(bytes[0], 0x83, "a map of three entries");
        // Any MessagePack reader sees the envelope, and the value's field names.
        let seen: serde_json::Value = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(
            seen,
            serde_json::json!({"v": 1, "g": 42, "d": {"id": 1, "name": "A"}})
        );
        let json = encode_value(&user, Stamp::gen(42), JSON).unwrap();
        assert!(
            bytes.len() < json.len(),
            "{} vs {}",
            bytes.len(),
            json.len()
        );
        // Trailing bytes, or an envelope cut short, are not an entry.
        let mut longer = bytes.clone();
        longer.push(0xc0);
        assert!(decode::<User>(&longer).is_err());
        assert!(decode::<User>(&bytes[..bytes.len() - 1]).is_err());
        // The same checks as for JSON: version first, exactly 1.
        let other: Vec<u8> = rmp_serde::to_vec_named(&serde_json::json!({"v": 2, "d": 1})).unwrap();
        assert!(decode::<u8>(&other).is_err());
    }

    #[cfg(feature = "compression")]
    #[test]
    fn compression_applies_above_its_threshold_when_it_pays() {
        let above = |n| Format {
            compress_above: Some(n),
            ..JSON
        };
        let long = "redcache ".repeat(5_000);
        let plain = encode_value(&long, Stamp::default(), JSON).unwrap();
        let packed = encode_value(&long, Stamp::default(), above(1024)).unwrap();
        assert_eq!(packed[0], COMPRESSED);
        // What the local tier weighs a copy by: the plain size, not the packed one.
        assert_eq!(plain_len(&packed), plain.len());
        assert_eq!(plain_len(&plain), plain.len());
        assert!(
            packed.len() * 10 < plain.len(),
            "{} vs {}",
            packed.len(),
            plain.len()
        );
        assert_eq!(
            u32::from_le_bytes(packed[1..5].try_into().unwrap()) as usize,
            plain.len()
        );
        assert_eq!(
            decode::<String>(&packed).unwrap().body,
            Decoded::Value(long.clone())
        );
        // At or below the threshold, plain JSON, readable with redis-cli.
        assert_eq!(
            encode_value(&long, Stamp::default(), above(plain.len())).unwrap(),
            plain
        );
        // Where compressing does not shorten it, plain.
        assert_eq!(
            encode_value(&1u8, Stamp::default(), above(0)).unwrap(),
            br#"{"v":1,"d":1}"#
        );
        // A corrupt block, a length that lies, or a length no block could reach: errors,
        // and nothing allocated for the lie.
        let mut corrupt = packed.clone();
        corrupt.truncate(packed.len() / 2);
        assert!(decode::<String>(&corrupt).is_err());
        let mut lying = packed.clone();
        lying[1..5].copy_from_slice(&(plain.len() as u32 + 1).to_le_bytes());
        assert!(decode::<String>(&lying).is_err());
        let mut huge = packed.clone();
        huge[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        let err = decode::<String>(&huge).unwrap_err().to_string();
        assert!(err.contains("claims"), "{err}");
        assert!(decode::<String>(&[COMPRESSED, 1, 0]).is_err());
        // Compression never nests.
        let mut nested = vec![COMPRESSED];
        nested.extend_from_slice(&lz4::compress(packed.clone()).unwrap()[1..]);
        assert!(decode::<String>(&nested).is_err());
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct User {
        id: u64,
        name: String,
    }

    fn round_trip<T: Serialize + DeserializeOwned + PartialEq + fmt::Debug>(value: T) {
        let bytes = encode_value(&value, Stamp::default(), JSON).unwrap();
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
        // JSON has one `null` for both. So a value holding such a `Some` is not encoded
        // (it would come back as another value), and `None` is.
        let err = encode_value(&Some(None::<u8>), Stamp::default(), JSON).unwrap_err();
        assert!(err.to_string().contains("read back as `None`"), "{err}");
        let err = encode_value(&vec![Some(())], Stamp::default(), JSON).unwrap_err();
        assert!(err.to_string().contains("read back as `None`"), "{err}");
        let bytes = encode_value(&None::<Option<u8>>, Stamp::default(), JSON).unwrap();
        assert_eq!(
            decode::<Option<Option<u8>>>(&bytes).unwrap().body,
            Decoded::Value(None)
        );
        let err = encode_value(&f64::NAN, Stamp::default(), JSON).unwrap_err();
        assert!(err.to_string().contains("NaN"), "{err}");
    }

    /// `null` read as `Some(None)`: the "absent, null or set" field of a PATCH payload.
    fn present<'de, D, T>(de: D) -> Result<Option<T>, D::Error>
    where
        D: serde::Deserializer<'de>,
        T: serde::Deserialize<'de>,
    {
        T::deserialize(de).map(Some)
    }

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Patch {
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            deserialize_with = "present"
        )]
        email: Option<Option<String>>,
    }

    #[test]
    fn a_type_that_reads_its_null_back_as_some_is_stored() {
        let mut formats = vec![JSON];
        if Codec::MessagePack.available() {
            formats.push(JSON.with_own(Some(Codec::MessagePack), None));
        }
        for format in formats {
            for email in [None, Some(None), Some(Some("a@b".to_string()))] {
                let patch = Patch { email };
                let bytes = encode_value(&patch, Stamp::default(), format).unwrap();
                assert_eq!(
                    decode::<Patch>(&bytes).unwrap().body,
                    Decoded::Value(patch),
                    "{format:?}"
                );
            }
        }
        // Where the reader's type is not known, the suspicion stands.
        let patch = Patch { email: Some(None) };
        assert!(encode_untyped(&patch, Stamp::default(), JSON).is_err());
    }

    #[test]
    fn envelope_is_readable_json() {
        let user = User {
            id: 1,
            name: "A".into(),
        };
        let bytes = encode_value(&user, Stamp::default(), JSON).unwrap();
        assert_eq!(bytes, br#"{"v":1,"d":{"id":1,"name":"A"}}"#);
        assert_eq!(
            encode_null(Stamp::default(), JSON),
            br#"{"v":1,"none":true}"#
        );
        let stamp = Stamp {
            windows: None,
            tags: 0,
            gen: 42,
            refresh: Some(Refresh {
                expires_ms: 1_700_000_000_000,
                compute_ms: 12,
            }),
        };
        let bytes = encode_value(&user, stamp, JSON).unwrap();
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
        assert_eq!(
            encode_null(Stamp::gen(7), JSON),
            br#"{"v":1,"g":7,"none":true}"#
        );
        // An entry's own stale windows follow its expiry.
        let stamp = Stamp {
            windows: Some(Windows {
                stale_ms: 30_000,
                if_error_ms: 0,
            }),
            ..stamp
        };
        let bytes = encode_value(&1u8, stamp, JSON).unwrap();
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
        let bytes = encode_value(&1u8, stamp, JSON).unwrap();
        assert_eq!(bytes, br#"{"v":1,"g":7,"tg":99,"d":1}"#);
        assert_eq!(decode::<u8>(&bytes).unwrap().stamp, stamp);
        assert_eq!(
            decode::<u8>(&encode_null(Stamp::gen(7), JSON))
                .unwrap()
                .stamp
                .gen,
            7
        );
    }

    #[test]
    fn null_entry_is_told_apart_from_a_null_value() {
        assert_eq!(
            decode::<Option<u8>>(&encode_null(Stamp::default(), JSON))
                .unwrap()
                .body,
            Decoded::Null
        );
        assert_eq!(
            decode::<Option<u8>>(&encode_value(&None::<u8>, Stamp::default(), JSON).unwrap())
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
        assert!(!is_tombstone(&encode_null(Stamp::default(), JSON)));
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

        #[test]
        fn floats_that_take_two_roundings_read_back_exactly() {
            // serde_json's own list of floats its fast parser reads one step off.
            for x in [51.248178375505404_f64, 8.357_730_402_938_84e-305] {
                let bytes = encode_value(&x, Stamp::default(), JSON).unwrap();
                let Decoded::Value(back) = decode::<f64>(&bytes).unwrap().body else {
                    panic!("a value");
                };
                assert_eq!(back.to_bits(), x.to_bits(), "{x:e} read back as {back:e}");
            }
        }

        #[test]
        fn a_wide_integer_an_untagged_enum_cannot_read_back_is_not_stored() {
            #[derive(Debug, PartialEq, Serialize, Deserialize)]
            #[serde(untagged)]
            enum Amount {
                Exact(i128),
                Approx(f64),
            }
            #[derive(Debug, PartialEq, Serialize, Deserialize)]
            struct Plain {
                big: u128,
                small: i128,
            }
            for format in formats() {
                // Read back, it would be `Approx(5.0)`.
                assert!(encode_value(&Amount::Exact(5), Stamp::default(), format).is_err());
                let approx = encode_value(&Amount::Approx(5.5), Stamp::default(), format).unwrap();
                let Decoded::Value(back) = decode::<Amount>(&approx).unwrap().body else {
                    panic!("a value");
                };
                assert_eq!(back, Amount::Approx(5.5));
                // Outside untagged enums and flattened structs they read back, and are stored.
                let plain = Plain {
                    big: u64::MAX as u128,
                    small: -7,
                };
                let bytes = encode_value(&plain, Stamp::default(), format).unwrap();
                let Decoded::Value(back) = decode::<Plain>(&bytes).unwrap().body else {
                    panic!("a value");
                };
                assert_eq!(back, plain);
                assert!(encode_untyped(&plain, Stamp::default(), format).is_ok());
            }
        }

        #[test]
        fn a_flattened_none_that_would_read_back_as_some_is_not_stored() {
            #[derive(Debug, PartialEq, Serialize, Deserialize)]
            struct Inner {
                b: Option<u8>,
            }
            #[derive(Debug, PartialEq, Serialize, Deserialize)]
            struct Doc {
                a: u8,
                #[serde(flatten)]
                extra: Option<Inner>,
            }
            for format in formats() {
                // `None` writes no field, and `Inner` is made of none: read back, it would
                // be `Some(Inner { b: None })`.
                let none = Doc { a: 1, extra: None };
                assert!(encode_value(&none, Stamp::default(), format).is_err());
                // A flattened value that reads back as itself is stored.
                let some = Doc {
                    a: 1,
                    extra: Some(Inner { b: Some(2) }),
                };
                let bytes = encode_value(&some, Stamp::default(), format).unwrap();
                let Decoded::Value(back) = decode::<Doc>(&bytes).unwrap().body else {
                    panic!("a value");
                };
                assert_eq!(back, some);
            }
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
            fn the_written_layout_is_read_as_the_general_decoder_reads_it(
                stamp in stamp(),
                value in any::<Option<u32>>(),
                at in any::<usize>(),
                byte in any::<u8>(),
            ) {
                let bytes = encode_value(&value, stamp, JSON).unwrap();
                let (read, start) = written_stamp(&bytes).expect("the layout head() writes");
                prop_assert_eq!(read, stamp);
                prop_assert_eq!(&bytes[start - 4..start], &br#""d":"#[..]);
                // Any change to one byte: both ways agree, or the short way declines.
                let mut changed = bytes.clone();
                let at = at % changed.len();
                changed[at] = byte;
                let general = {
                    let mut de = serde_json::Deserializer::from_slice(&changed);
                    EnvelopeSeed::<Option<u32>>(PhantomData)
                        .deserialize(&mut de)
                        .and_then(|decoded| de.end().map(|()| decoded))
                };
                let either = decode::<Option<u32>>(&changed);
                prop_assert_eq!(either.ok(), general.ok());
            }

            #[test]
            fn mutated_envelopes_never_panic(
                value in ".*",
                at in any::<usize>(),
                byte in any::<u8>(),
            ) {
                for format in formats() {
                    let mut bytes = encode_value(&value, Stamp::default(), format).unwrap();
                    let at = at % bytes.len();
                    bytes[at] = byte;
                    let _ = decode::<String>(&bytes);
                }
            }

            #[test]
            fn finite_floats_round_trip_bit_for_bit(
                x in any::<f64>().prop_filter("finite", |x| x.is_finite()),
                y in any::<f32>().prop_filter("finite", |y| y.is_finite()),
            ) {
                for format in formats() {
                    let bytes = encode_value(&(x, y), Stamp::default(), format).unwrap();
                    let Decoded::Value((a, b)) = decode::<(f64, f32)>(&bytes).unwrap().body else {
                        panic!("a value");
                    };
                    prop_assert_eq!((a.to_bits(), b.to_bits()), (x.to_bits(), y.to_bits()));
                }
            }

            #[test]
            fn values_round_trip_exactly(
                text in ".*",
                numbers in proptest::collection::vec(any::<i64>(), 0..16),
                map in proptest::collection::btree_map(".*", any::<Option<u32>>(), 0..8),
                stamp in stamp(),
            ) {
                let value = (text, numbers, map);
                for format in formats() {
                    let bytes = encode_value(&value, stamp, format).unwrap();
                    let decoded = decode::<(String, Vec<i64>, BTreeMap<String, Option<u32>>)>(&bytes).unwrap();
                    prop_assert_eq!(decoded, Envelope { body: Decoded::Value(value.clone()), stamp });
                    let null = decode::<u8>(&encode_null(stamp.of_null(), format)).unwrap();
                    prop_assert_eq!(null, Envelope { body: Decoded::Null, stamp: stamp.of_null() });
                }
            }
        }
    }
}
