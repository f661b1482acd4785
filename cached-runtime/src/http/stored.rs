//! A stored response: what is kept of it (status, end-to-end headers, body, ETag, when it
//! was stored and for how long), and the responses made from it: `200` (or the stored
//! status) with its body, the same without a body for `HEAD`, and `304 Not Modified`.

use super::body::{self, Body};
use super::rules::{self, Freshness};
use super::XCache;
use crate::codec::{self, Decoded, Format, Stamp, Written};
use crate::shape::{Found, OwnWindows};
use bytes::Bytes;
use headers::HeaderMapExt as _;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use serde::de::Error as _;
use serde::{Deserialize, Serialize};

/// Headers never stored: hop-by-hop (RFC 9110 § 7.6.1), the framing (made again for each
/// response), what the layer itself sets per response, and those of a proxy the handler
/// may have reached the origin through (RFC 9111 § 3.1).
const NOT_STORED: [HeaderName; 11] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::TE,
    header::TRAILER,
    header::CONTENT_LENGTH,
    header::AGE,
    header::PROXY_AUTHENTICATE,
    HeaderName::from_static("proxy-authentication-info"),
];

/// Headers a `304` carries of the response it stands for (RFC 9110 § 15.4.5).
const KEPT_BY_304: [HeaderName; 6] = [
    header::CACHE_CONTROL,
    header::CONTENT_LOCATION,
    header::DATE,
    header::ETAG,
    header::EXPIRES,
    header::VARY,
];

/// A response as stored: its metadata in the entry's envelope, then its header block and
/// body as they were sent, unescaped (see [`Stored::encode`]).
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    meta: Meta,
    /// The end-to-end headers, `name: value\r\n` each, then an empty line.
    head: Bytes,
    body: Bytes,
}

/// What the envelope holds of a stored response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Meta {
    status: u16,
    /// When it was stored, in Unix milliseconds (its `Age` counts from then).
    stored_ms: u64,
    /// Seconds it is fresh for (the layer's jitter included), from when it was stored.
    ttl: u64,
    /// The handler set `Cache-Control`: sent as it is, not replaced by `max-age`.
    own_cc: bool,
    /// Seconds of the handler's own `stale-while-revalidate` (RFC 5861), if it set one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    swr: Option<u64>,
    /// Seconds of the handler's own `stale-if-error` (RFC 5861), if it set one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sie: Option<u64>,
    /// `must-revalidate`, `proxy-revalidate` or `s-maxage`: never served stale.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    revalidate: bool,
    /// Seconds it had spent upstream when stored (its own `Age`), added to the `Age` it is
    /// served with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    aged: Option<u64>,
    /// How many bytes after the envelope are the header block; the body follows it.
    head: usize,
    /// How many bytes the body is: an entry whose trailer is not exactly the two is
    /// refused, not answered with part of a body.
    len: usize,
}

impl Meta {
    /// The metadata exactly as serde_json writes `Meta` (its fields in order, those that are
    /// unset left out), read without serde's field matching; `None` for anything else, which
    /// serde then reads (or refuses).
    fn written(json: &mut Written<'_>) -> Option<Meta> {
        let status = u16::try_from(json.field(br#"{"status":"#)??).ok()?;
        let stored_ms = json.field(br#","stored_ms":"#)??;
        let ttl = json.field(br#","ttl":"#)??;
        if !json.literal(br#","own_cc":"#) {
            return None;
        }
        let own_cc = json.boolean()?;
        let swr = json.field(br#","swr":"#)?;
        let sie = json.field(br#","sie":"#)?;
        let revalidate = match json.literal(br#","revalidate":"#) {
            true => json.boolean()?,
            false => false,
        };
        let aged = json.field(br#","aged":"#)?;
        let head = usize::try_from(json.field(br#","head":"#)??).ok()?;
        let len = usize::try_from(json.field(br#","len":"#)??).ok()?;
        json.literal(b"}").then_some(Meta {
            status,
            stored_ms,
            ttl,
            own_cc,
            swr,
            sie,
            revalidate,
            aged,
            head,
            len,
        })
    }
}

/// The end of a header line.
const CRLF: &[u8] = b"\r\n";

impl Stored {
    /// What to store of a response the handler made, whose body is `body`, fresh as
    /// `fresh` says; `None` if its `ETag` is not text.
    pub(super) fn new(
        status: StatusCode,
        headers: &HeaderMap,
        body: Bytes,
        fresh: Freshness,
        now_ms: u64,
    ) -> Option<Stored> {
        let mut head = Vec::with_capacity(256);
        // Headers the response's `Connection` names are hop-by-hop too (RFC 9110 § 7.6.1).
        let hop_by_hop = |name: &HeaderName| {
            headers
                .get_all(header::CONNECTION)
                .iter()
                .filter_map(|value| value.to_str().ok())
                .flat_map(|value| value.split(','))
                .any(|named| named.trim().eq_ignore_ascii_case(name.as_str()))
        };
        for (name, value) in headers {
            if NOT_STORED.contains(name) || *name == super::X_CACHE || hop_by_hop(name) {
                continue;
            }
            push_line(&mut head, name.as_str(), value.as_bytes());
        }
        // A response stored without a `Date` gets the time it was received (RFC 9110
        // § 6.6.1): every answer from the entry says when it was made.
        if !headers.contains_key(header::DATE) {
            let received = std::time::UNIX_EPOCH + std::time::Duration::from_millis(now_ms);
            let mut dated = HeaderMap::new();
            dated.typed_insert(headers::Date::from(received));
            if let Some(date) = dated.get(header::DATE) {
                push_line(&mut head, header::DATE.as_str(), date.as_bytes());
            }
        }
        match headers.get(header::ETAG).map(HeaderValue::to_str) {
            Some(Ok(_)) => {}
            Some(Err(_)) => return None,
            None => {
                // A strong validator: the body's hash.
                let etag = format!("\"{}\"", crate::key::md5_hex(&body));
                push_line(&mut head, header::ETAG.as_str(), etag.as_bytes());
            }
        }
        head.extend_from_slice(CRLF);
        let directive = |name| rules::extension_directive(headers, name);
        Some(Stored {
            meta: Meta {
                swr: directive("stale-while-revalidate"),
                sie: directive("stale-if-error"),
                status: status.as_u16(),
                own_cc: headers.contains_key(header::CACHE_CONTROL),
                stored_ms: now_ms,
                ttl: fresh.ttl,
                revalidate: fresh.revalidate,
                aged: (fresh.age > 0).then_some(fresh.age),
                head: head.len(),
                len: body.len(),
            },
            head: Bytes::from(head),
            body,
        })
    }

    /// The entry: `{"v":1,..,"d":{"status":200,"stored_ms":..,"ttl":300,"own_cc":false,
    /// "head":58,"len":179}}`, then the header block as HTTP/1.1 writes it
    /// (`content-type: text/plain\r\n..\r\n\r\n`), then the body's bytes. Neither is
    /// escaped or re-encoded, so a hit reads them as they are (and they stay readable with
    /// `redis-cli`); in `format`'s codec and compression otherwise, like any entry.
    pub(super) fn encode(&self, stamp: Stamp, format: Format) -> serde_json::Result<Vec<u8>> {
        codec::encode_with_trailer(&self.meta, stamp, format, &[&self.head, &self.body])
    }

    /// Reads an entry [`Stored::encode`] wrote.
    pub(super) fn decode(bytes: &[u8]) -> serde_json::Result<(Found<Stored>, Stamp)> {
        let (envelope, trailer) = codec::decode_with_trailer(bytes, Meta::written)?;
        let found = match envelope.body {
            Decoded::Value(meta) => {
                if meta.head.checked_add(meta.len) != Some(trailer.len()) {
                    return Err(serde_json::Error::custom(format_args!(
                        "a stored response of {} bytes after its envelope, which says {} + {}",
                        trailer.len(),
                        meta.head,
                        meta.len
                    )));
                }
                // The block is its lines, each ending in CRLF, then an empty line.
                let block = &trailer[..meta.head];
                if !(block == CRLF || block.ends_with(b"\r\n\r\n")) {
                    return Err(serde_json::Error::custom("a stored header block not ended"));
                }
                let head = trailer.slice(..meta.head);
                let body = trailer.slice(meta.head..);
                Found::Value(Stored { meta, head, body })
            }
            Decoded::Null => {
                return Err(serde_json::Error::custom(
                    "a cached None where a response was expected",
                ))
            }
            Decoded::Gone => Found::Gone,
        };
        Ok((found, envelope.stamp))
    }

    /// The stored headers, in the order they were sent: name and value, slices of the
    /// header block.
    fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        let mut rest = &self.head[..];
        std::iter::from_fn(move || {
            let end = rest.windows(CRLF.len()).position(|w| w == CRLF)?;
            let line = &rest[..end];
            rest = &rest[end + CRLF.len()..];
            // The empty line ends the block.
            let colon = line.iter().position(|&b| b == b':')?;
            let value = line.get(colon + 2..).unwrap_or_default();
            Some((&line[..colon], value))
        })
    }

    /// How long it is fresh for (the layer's jitter included).
    pub(super) fn ttl(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.meta.ttl)
    }

    /// The stale windows the handler set on it, if it set either; none at all for a
    /// response that must be revalidated (whatever the layer's windows).
    pub(super) fn windows(&self) -> Option<OwnWindows> {
        let secs = |s: Option<u64>| s.map(std::time::Duration::from_secs);
        let Meta {
            swr,
            sie,
            revalidate,
            ..
        } = self.meta;
        if revalidate {
            let none = Some(std::time::Duration::ZERO);
            return Some((none, none));
        }
        (swr.is_some() || sie.is_some()).then(|| (secs(swr), secs(sie)))
    }

    /// The `ETag` it was sent with (the handler's, or one made from the body: every stored
    /// response has one).
    pub(super) fn etag(&self) -> Option<&str> {
        self.headers()
            .find(|(name, _)| *name == header::ETAG.as_str().as_bytes())
            .and_then(|(_, value)| std::str::from_utf8(value).ok())
    }

    /// The `Last-Modified` it was sent with, if the handler set one that reads as a date.
    pub(super) fn last_modified(&self) -> Option<std::time::SystemTime> {
        let (_, value) = self
            .headers()
            .find(|(name, _)| *name == header::LAST_MODIFIED.as_str().as_bytes())?;
        let value = HeaderValue::from_bytes(value).ok()?;
        let date: headers::LastModified =
            headers::Header::decode(&mut std::iter::once(&value)).ok()?;
        Some(date.into())
    }

    /// Its status is a `2xx`.
    pub(super) fn is_success(&self) -> bool {
        (200..300).contains(&self.meta.status)
    }

    /// Whole seconds it stays fresh, `elapsed` seconds after it was stored.
    pub(super) fn fresh_for(&self, elapsed: u64) -> u64 {
        self.meta.ttl.saturating_sub(elapsed)
    }

    /// Whole seconds since it was stored.
    pub(super) fn elapsed(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.meta.stored_ms) / 1000
    }

    /// Whole seconds it has been stale for (past its freshness): 0 while fresh.
    pub(super) fn staleness(&self, now_ms: u64) -> u64 {
        self.elapsed(now_ms).saturating_sub(self.meta.ttl)
    }

    /// Its age (RFC 9111 § 4.2.3): the seconds since it was stored, and those it had
    /// spent upstream before.
    pub(super) fn age(&self, now_ms: u64) -> u64 {
        self.elapsed(now_ms)
            .saturating_add(self.meta.aged.unwrap_or(0))
    }

    /// The response to send: the stored one (without its body for `HEAD`), or `304`.
    pub(super) fn respond(&self, answer: Answer, now_ms: u64) -> Response<Body> {
        let age = self.age(now_ms);
        let status = match answer.not_modified {
            true => StatusCode::NOT_MODIFIED,
            false => StatusCode::from_u16(self.meta.status).unwrap_or(StatusCode::OK),
        };
        // Room for the stored headers, those the layer sets on this response and the
        // `Content-Length` that axum's router adds to it (from the body's exact length)
        // when the layer has not: a map one entry short would be grown there, its buckets
        // allocated again and every entry hashed again. A plain JSON hit is 7:
        // `content-type`, `date`, `etag` stored, and `cache-control`, `age`, `x-cache`,
        // `content-length`. Bounded well under what `with_capacity` accepts (lines of one
        // name share an entry, so a response may have more lines than a map has room for
        // names); it grows as needed.
        let lines = self.head.iter().filter(|&&b| b == b'\n').count();
        let set = 2 + usize::from(!self.meta.own_cc) + usize::from(answer.from_cache || age > 0);
        let mut headers = HeaderMap::with_capacity(lines.saturating_sub(1).min(60) + set);
        for (name, value) in self.headers() {
            let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name),
                HeaderValue::from_maybe_shared(self.head.slice_ref(value)),
            ) else {
                continue;
            };
            if answer.not_modified && !KEPT_BY_304.contains(&name) {
                continue;
            }
            headers.append(name, value);
        }
        if !self.meta.own_cc {
            // Its whole freshness lifetime, from when the response was made: a client or
            // a downstream cache takes what is left as `max-age` less the age, which it
            // reads from `Age` and `Date` (RFC 9111 § 4.2). A `max-age` counted down
            // here too would count the age twice, and go stale halfway through.
            let lifetime = self.meta.ttl.saturating_add(self.meta.aged.unwrap_or(0));
            headers.insert(header::CACHE_CONTROL, number_value(b"max-age=", lifetime));
        }
        // On a miss too, if it had an age upstream: the handler's own response said it.
        if answer.from_cache || age > 0 {
            headers.insert(header::AGE, number_value(b"", age));
        }
        headers.insert(super::X_CACHE, answer.x_cache.value());
        let body = match (answer.not_modified, answer.head) {
            (true, _) => body::empty(),
            (false, true) => {
                // What a `GET` would get, said without the body (not for a status that
                // has no length: RFC 9110 § 8.6).
                if !super::rules::lengthless(status) {
                    let len = number_value(b"", self.body.len() as u64);
                    headers.insert(header::CONTENT_LENGTH, len);
                }
                body::empty()
            }
            // The server frames it from the body's exact length.
            (false, false) => body::full(self.body.clone()),
        };
        let mut response = Response::new(body);
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        response
    }
}

/// `prefix` then the decimal digits of `n`, as a header value. Written into a buffer of
/// the thread's that many values share (one allocation per few hundred values instead of
/// one each: a hit answers with two or three).
fn number_value(prefix: &[u8], n: u64) -> HeaderValue {
    thread_local! {
        static ARENA: std::cell::RefCell<bytes::BytesMut> =
            std::cell::RefCell::new(bytes::BytesMut::new());
    }
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    let digits = &digits[at..];
    let write = |arena: &mut bytes::BytesMut| {
        if arena.capacity() < prefix.len() + digits.len() {
            arena.reserve(4096);
        }
        arena.extend_from_slice(prefix);
        arena.extend_from_slice(digits);
        arena.split().freeze()
    };
    let bytes = ARENA
        .try_with(|arena| {
            arena
                .try_borrow_mut()
                .ok()
                .map(|mut arena| write(&mut arena))
        })
        .ok()
        .flatten()
        .unwrap_or_else(|| write(&mut bytes::BytesMut::new()));
    // Digits after a header-safe prefix always make a valid value.
    HeaderValue::from_maybe_shared(bytes).unwrap_or(HeaderValue::from_static("0"))
}

/// Appends `name: value\r\n`.
fn push_line(head: &mut Vec<u8>, name: &str, value: &[u8]) {
    head.extend_from_slice(name.as_bytes());
    head.extend_from_slice(b": ");
    head.extend_from_slice(value);
    head.extend_from_slice(CRLF);
}

/// How a stored response is answered with.
#[derive(Debug, Clone, Copy)]
pub(super) struct Answer {
    pub(super) x_cache: XCache,
    /// Served from the cache (it gets an `Age`), not just stored.
    pub(super) from_cache: bool,
    /// A `HEAD` request: no body.
    pub(super) head: bool,
    /// The request's `If-None-Match` matched (or, without one, its `If-Modified-Since`
    /// is not before `Last-Modified`): `304`.
    pub(super) not_modified: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh(ttl: u64) -> Freshness {
        Freshness {
            ttl,
            own: None,
            revalidate: false,
            age: 0,
        }
    }

    fn stored(body: &'static [u8]) -> Stored {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        headers.append(
            header::LINK,
            HeaderValue::from_bytes(b"<a>; x=\xe9").unwrap(),
        );
        Stored::new(
            StatusCode::OK,
            &headers,
            Bytes::from_static(body),
            fresh(60),
            0,
        )
        .expect("storable")
    }

    fn read(bytes: &[u8]) -> Stored {
        match Stored::decode(bytes).unwrap() {
            (Found::Value(stored), stamp) => {
                assert_eq!(stamp.gen, 7);
                stored
            }
            (other, _) => panic!("{other:?}"),
        }
    }

    fn round_trip_in(body: &'static [u8], format: Format) -> Stored {
        let stamp = Stamp::gen(7);
        read(&stored(body).encode(stamp, format).unwrap())
    }

    fn round_trip(body: &'static [u8]) -> Stored {
        round_trip_in(body, Format::default())
    }

    #[test]
    fn text_and_binary_bodies_come_back_byte_for_byte() {
        assert_eq!(round_trip(b"hello \xc3\xa9").body, &b"hello \xc3\xa9"[..]);
        assert_eq!(round_trip(b"\xff\x00\xfe").body, &b"\xff\x00\xfe"[..]);
        assert_eq!(round_trip(b"").body, &b""[..]);
        // A body that looks like header lines or an envelope is still just the body.
        let tricky = b"\r\n\r\nx: y\r\n{\"v\":1}";
        assert_eq!(round_trip(tricky).body, &tricky[..]);
    }

    #[test]
    fn headers_come_back_in_order_and_byte_for_byte() {
        let back = round_trip(b"{}");
        let headers: Vec<(&[u8], &[u8])> = back.headers().collect();
        assert_eq!(
            headers,
            [
                (&b"content-type"[..], &b"text/plain"[..]),
                (b"link", b"<a>; x=\xe9"),
                // None came with it: the time it was received.
                (b"date", b"Thu, 01 Jan 1970 00:00:00 GMT"),
                (b"etag", b"\"99914b932bd37a50b983c5e7c90ae93b\""),
            ]
        );
    }

    #[test]
    fn the_entry_is_the_envelope_then_the_header_block_then_the_body() {
        let bytes = stored(br#"{"id":1}"#)
            .encode(Stamp::gen(7), Format::default())
            .unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            text.starts_with(r#"{"v":1,"g":7,"d":{"status":200,"#),
            "{text}"
        );
        assert!(
            text.ends_with("}}content-type: text/plain\r\nlink: <a>; x=\u{fffd}\r\ndate: Thu, 01 Jan 1970 00:00:00 GMT\r\netag: \"d2ce28b9a7fd7e4407e2b0fd499b7fe4\"\r\n\r\n{\"id\":1}"),
            "{text}"
        );
    }

    #[test]
    fn an_entry_cut_or_grown_is_an_error_not_another_response() {
        let bytes = stored(b"abc")
            .encode(Stamp::gen(7), Format::default())
            .unwrap();
        // Cut anywhere: in the envelope, the header block or the body.
        for cut in 0..bytes.len() {
            assert!(Stored::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut grown = bytes.clone();
        grown.push(b'x');
        assert!(Stored::decode(&grown).is_err());
        // Lengths that add up but end the header block inside a line.
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        let text = Stored::new(
            StatusCode::OK,
            &headers,
            Bytes::from_static(b"abc"),
            fresh(60),
            0,
        )
        .unwrap()
        .encode(Stamp::gen(7), Format::default())
        .unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(Stored::decode(text.as_bytes()).is_ok());
        let digits = text.split(r#""head":"#).nth(1).unwrap();
        let head: usize = digits[..digits.find(',').unwrap()].parse().unwrap();
        let moved = text
            .replace(
                &format!(r#""head":{head},"#),
                &format!(r#""head":{},"#, head - 2),
            )
            .replace(r#""len":3}"#, r#""len":5}"#);
        assert_ne!(moved, text);
        assert!(Stored::decode(moved.as_bytes()).is_err(), "{moved}");
        assert!(Stored::decode(b"12").is_err());
    }

    #[cfg(feature = "msgpack")]
    #[test]
    fn message_pack_entries_carry_the_same_trailer() {
        let format = Format {
            codec: crate::codec::Codec::MessagePack,
            compress_above: None,
        };
        let back = round_trip_in(b"{\"a\":1}", format);
        assert_eq!(back.body, &b"{\"a\":1}"[..]);
        // `content-type`, `link`, the `date` it was received and the `etag`.
        assert_eq!(back.headers().count(), 4);
    }

    #[cfg(feature = "compression")]
    #[test]
    fn compressed_entries_carry_the_trailer_inside() {
        let format = Format {
            codec: crate::codec::Codec::Json,
            compress_above: Some(16),
        };
        let body: &'static [u8] = &[b'x'; 4096];
        let bytes = stored(body).encode(Stamp::gen(7), format).unwrap();
        assert!(bytes.len() < 1024, "{}", bytes.len());
        let back = read(&bytes);
        assert_eq!(back.body, body);
        // `content-type`, `link`, the `date` it was received and the `etag`.
        assert_eq!(back.headers().count(), 4);
    }

    #[test]
    fn the_written_metadata_is_read_as_serde_reads_it() {
        let plain = Meta {
            status: 200,
            stored_ms: 1_764_000_000_123,
            ttl: 300,
            own_cc: false,
            swr: None,
            sie: None,
            revalidate: false,
            aged: None,
            head: 58,
            len: 179,
        };
        let all = Meta {
            status: 404,
            own_cc: true,
            swr: Some(30),
            sie: Some(0),
            revalidate: true,
            aged: Some(50),
            ..plain.clone()
        };
        for meta in [plain, all] {
            let json = serde_json::to_vec(&meta).unwrap();
            let mut read = Written::new(&json);
            assert_eq!(Meta::written(&mut read).as_ref(), Some(&meta));
            assert_eq!(read.at(), json.len());
            // One byte changed anywhere: read the same as serde reads it, or left to serde.
            for at in 0..json.len() {
                for byte in [b'0', b'9', b'"', b',', b'x', b'}'] {
                    let mut changed = json.clone();
                    changed[at] = byte;
                    let mut fast = Written::new(&changed);
                    if let Some(meta) = Meta::written(&mut fast) {
                        // As the envelope's reader reads it: the value, then where it ended.
                        let mut slow =
                            serde_json::Deserializer::from_slice(&changed).into_iter::<Meta>();
                        let text = String::from_utf8_lossy(&changed);
                        assert_eq!(Some(meta), slow.next().and_then(Result::ok), "{text}");
                        assert_eq!(fast.at(), slow.byte_offset(), "{text}");
                    }
                }
            }
        }
    }

    #[test]
    fn number_values_are_their_digits() {
        for n in [0, 7, 10, 300, 86_400, u64::MAX] {
            assert_eq!(number_value(b"", n), n.to_string().as_str());
            assert_eq!(
                number_value(b"max-age=", n),
                format!("max-age={n}").as_str()
            );
        }
        // Many in a row share buffers and stay apart.
        let values: Vec<HeaderValue> = (0..2000).map(|n| number_value(b"", n)).collect();
        for (n, value) in values.iter().enumerate() {
            assert_eq!(value, n.to_string().as_str());
        }
    }

    #[test]
    fn framing_is_not_stored_and_a_strong_etag_is_made() {
        let stored = round_trip(b"abc");
        assert!(stored.headers().all(|(n, _)| n != b"content-length"));
        assert_eq!(stored.etag(), Some("\"900150983cd24fb0d6963f7d28e17f72\""));
    }

    #[test]
    fn a_304_keeps_only_the_validators_and_cache_headers() {
        let stored = round_trip(b"abc");
        let answer = Answer {
            x_cache: XCache::Hit,
            from_cache: true,
            head: false,
            not_modified: true,
        };
        let response = stored.respond(answer, 61_000);
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
        assert!(response.headers().get(header::CONTENT_TYPE).is_none());
        assert_eq!(response.headers()[header::AGE], "61");
        // Its lifetime, which the age is past: stale to the client, counted once.
        assert_eq!(response.headers()[header::CACHE_CONTROL], "max-age=60");
    }

    /// `max-age` is the response's whole lifetime, from when it was made upstream; what is
    /// left is that less `Age`, as a client computes it (RFC 9111 § 4.2).
    #[test]
    fn max_age_is_the_lifetime_and_age_counts_down_what_is_left() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        // It arrived 50 s old, with 10 s left of its upstream freshness.
        let aged = Freshness {
            age: 50,
            ..fresh(10)
        };
        let stored = Stored::new(StatusCode::OK, &headers, Bytes::from_static(b"x"), aged, 0);
        let stored = stored.expect("storable");
        let answer = |from_cache| Answer {
            x_cache: XCache::Hit,
            from_cache,
            head: false,
            not_modified: false,
        };
        let left = |response: &Response<Body>| {
            let h = response.headers();
            let max_age: u64 = h[header::CACHE_CONTROL].to_str().unwrap()["max-age=".len()..]
                .parse()
                .unwrap();
            let age: u64 = h[header::AGE].to_str().unwrap().parse().unwrap();
            max_age.saturating_sub(age)
        };
        assert_eq!(left(&stored.respond(answer(false), 0)), 10);
        assert_eq!(left(&stored.respond(answer(true), 4_000)), 6);
        assert_eq!(left(&stored.respond(answer(true), 12_000)), 0);
    }

    /// A hit of a plain JSON response (its type stored with the layer's `Date` and `ETag`)
    /// gets a header map with room for the `Content-Length` that axum's router adds to it:
    /// that insert does not grow (allocate and hash again) the map.
    #[test]
    fn a_plain_hit_has_room_for_the_content_length_its_router_adds() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let stored = Stored::new(
            StatusCode::OK,
            &headers,
            Bytes::from_static(b"{}"),
            fresh(60),
            0,
        )
        .expect("storable");
        let answer = Answer {
            x_cache: XCache::Hit,
            from_cache: true,
            head: false,
            not_modified: false,
        };
        let mut response = stored.respond(answer, 1_000);
        assert_eq!(response.headers().len(), 6, "{:?}", response.headers());
        let room = response.headers().capacity();
        let length = HeaderValue::from_static("2");
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, length);
        assert_eq!(response.headers().capacity(), room, "grown");
    }
}
