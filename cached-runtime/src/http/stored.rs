//! A stored response: what is kept of it (status, end-to-end headers, body, ETag, when it
//! was stored and for how long), and the responses made from it: `200` (or the stored
//! status) with its body, the same without a body for `HEAD`, and `304 Not Modified`.

use super::body::{self, Body};
use super::{rules, XCache};
use crate::shape::OwnWindows;
use base64::Engine as _;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Headers never stored: hop-by-hop (RFC 9110 § 7.6.1), the framing (made again for each
/// response), and what the layer itself sets per response.
const NOT_STORED: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::TE,
    header::TRAILER,
    header::CONTENT_LENGTH,
    header::AGE,
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

/// A response as stored: `{"status":200,"headers":[["content-type","text/plain"],..],
/// "body":{"text":".."},"etag":"\"..\"","stored_ms":..,"ttl":300,"own_cc":false}`. A body that
/// is not UTF-8 is stored as `{"base64":".."}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Stored {
    status: u16,
    headers: Vec<(String, String)>,
    body: StoredBody,
    /// The `ETag` sent with it (the handler's, or made from the body).
    etag: String,
    /// When it was stored, in Unix milliseconds (its `Age` counts from then).
    stored_ms: u64,
    /// Seconds it is fresh for (before jitter): `max-age` counts down from it.
    ttl: u64,
    /// The handler set `Cache-Control`: sent as it is, not replaced by `max-age`.
    own_cc: bool,
    /// Seconds of the handler's own `stale-while-revalidate` (RFC 5861), if it set one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    swr: Option<u64>,
    /// Seconds of the handler's own `stale-if-error` (RFC 5861), if it set one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sie: Option<u64>,
}

impl Stored {
    /// What to store of a response the handler made, whose body is `body`, fresh for `ttl`
    /// seconds; `None` if a header cannot be stored (not UTF-8).
    pub(super) fn new(
        status: StatusCode,
        headers: &HeaderMap,
        body: Bytes,
        ttl: u64,
        now_ms: u64,
    ) -> Option<Stored> {
        let mut kept = Vec::with_capacity(headers.len() + 1);
        for (name, value) in headers {
            if NOT_STORED.contains(name) || *name == super::X_CACHE {
                continue;
            }
            let value = String::from_utf8(value.as_bytes().to_vec()).ok()?;
            kept.push((name.as_str().to_owned(), value));
        }
        let etag = match headers.get(header::ETAG).map(HeaderValue::to_str) {
            Some(Ok(etag)) => etag.to_owned(),
            Some(Err(_)) => return None,
            None => {
                // A strong validator: the body's hash.
                let etag = format!("\"{}\"", crate::key::md5_hex(&body));
                kept.push((header::ETAG.as_str().to_owned(), etag.clone()));
                etag
            }
        };
        let directive = |name| rules::extension_directive(headers, name);
        Some(Stored {
            swr: directive("stale-while-revalidate"),
            sie: directive("stale-if-error"),
            status: status.as_u16(),
            own_cc: headers.contains_key(header::CACHE_CONTROL),
            headers: kept,
            body: StoredBody(body),
            etag,
            stored_ms: now_ms,
            ttl,
        })
    }

    /// How long it is fresh for (before jitter).
    pub(super) fn ttl(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.ttl)
    }

    /// The stale windows the handler set on it, if it set either.
    pub(super) fn windows(&self) -> Option<OwnWindows> {
        let secs = |s: Option<u64>| s.map(std::time::Duration::from_secs);
        (self.swr.is_some() || self.sie.is_some()).then(|| (secs(self.swr), secs(self.sie)))
    }

    pub(super) fn etag(&self) -> &str {
        &self.etag
    }

    /// Whole seconds since it was stored.
    pub(super) fn age(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.stored_ms) / 1000
    }

    /// The response to send: the stored one (without its body for `HEAD`), or `304`.
    pub(super) fn respond(&self, answer: Answer, now_ms: u64) -> Response<Body> {
        let age = self.age(now_ms);
        let status = match answer.not_modified {
            true => StatusCode::NOT_MODIFIED,
            false => StatusCode::from_u16(self.status).unwrap_or(StatusCode::OK),
        };
        let mut headers = HeaderMap::with_capacity(self.headers.len() + 4);
        for (name, value) in &self.headers {
            let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) else {
                continue;
            };
            if answer.not_modified && !KEPT_BY_304.contains(&name) {
                continue;
            }
            headers.append(name, value);
        }
        if !self.own_cc {
            let left = self.ttl.saturating_sub(age);
            let max_age = HeaderValue::try_from(format!("max-age={left}"));
            headers.insert(
                header::CACHE_CONTROL,
                max_age.unwrap_or(HeaderValue::from_static("max-age=0")),
            );
        }
        if answer.from_cache {
            headers.insert(header::AGE, HeaderValue::from(age));
        }
        headers.insert(super::X_CACHE, answer.x_cache.value());
        let body = if answer.not_modified {
            body::empty()
        } else {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(self.body.0.len()));
            match answer.head {
                true => body::empty(),
                false => body::full(self.body.0.clone()),
            }
        };
        let mut response = Response::new(body);
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        response
    }
}

/// How a stored response is answered with.
#[derive(Debug, Clone, Copy)]
pub(super) struct Answer {
    pub(super) x_cache: XCache,
    /// Served from the cache (it gets an `Age`), not just stored.
    pub(super) from_cache: bool,
    /// A `HEAD` request: no body.
    pub(super) head: bool,
    /// The request's `If-None-Match` matched: `304`.
    pub(super) not_modified: bool,
}

/// The body bytes: text as it is (readable with `redis-cli`), anything else in base64.
#[derive(Debug, Clone)]
struct StoredBody(Bytes);

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum BodyRepr<'a> {
    Text(&'a str),
    Base64(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum OwnedBodyRepr {
    Text(String),
    Base64(String),
}

impl Serialize for StoredBody {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(text) => BodyRepr::Text(text).serialize(serializer),
            Err(_) => {
                let encoded = base64::engine::general_purpose::STANDARD.encode(&self.0);
                BodyRepr::Base64(encoded).serialize(serializer)
            }
        }
    }
}

impl<'de> Deserialize<'de> for StoredBody {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes = match OwnedBodyRepr::deserialize(deserializer)? {
            OwnedBodyRepr::Text(text) => Bytes::from(text),
            OwnedBodyRepr::Base64(encoded) => base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map(Bytes::from)
                .map_err(D::Error::custom)?,
        };
        Ok(StoredBody(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(body: &'static [u8]) -> Stored {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        let stored = Stored::new(StatusCode::OK, &headers, Bytes::from_static(body), 60, 0)
            .expect("storable");
        let json = serde_json::to_vec(&stored).unwrap();
        serde_json::from_slice(&json).unwrap()
    }

    #[test]
    fn text_and_binary_bodies_come_back_byte_for_byte() {
        assert_eq!(round_trip(b"hello \xc3\xa9").body.0, &b"hello \xc3\xa9"[..]);
        assert_eq!(round_trip(b"\xff\x00\xfe").body.0, &b"\xff\x00\xfe"[..]);
    }

    #[test]
    fn framing_is_not_stored_and_a_strong_etag_is_made() {
        let stored = round_trip(b"abc");
        assert!(stored.headers.iter().all(|(n, _)| n != "content-length"));
        assert_eq!(stored.etag(), "\"900150983cd24fb0d6963f7d28e17f72\"");
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
        assert_eq!(response.headers()[header::CACHE_CONTROL], "max-age=0");
    }
}
