//! HTTP's caching rules for a shared cache (RFC 9111), as the layer applies them: what a
//! request asks of the cache, whether a response may be stored and for how long, and what
//! a variant's key is made of.

use crate::escape::percent_decoded;
use headers::HeaderMapExt;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;
use std::borrow::Cow;
use std::time::Duration;

/// What a request's `Cache-Control` (or `Pragma: no-cache`) asks of the cache.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Asks {
    /// `no-store`: nothing is read or written.
    pub(super) no_store: bool,
    /// `no-cache` (or `max-age=0`): not answered from the cache; the entry is refreshed.
    pub(super) no_cache: bool,
    /// `max-age=N`: an entry older than `N` seconds is not used.
    pub(super) max_age: Option<u64>,
    /// `min-fresh=N`: an entry fresh for less than `N` more seconds is not used.
    pub(super) min_fresh: Option<u64>,
    /// `max-stale=N` (`u64::MAX` without a value): a stale answer at most `N` seconds past
    /// its freshness is taken (with `max-age` too, which alone takes none).
    pub(super) max_stale: Option<u64>,
    /// `only-if-cached`: answered from the cache or with `504`, never by the handler.
    pub(super) only_if_cached: bool,
}

pub(super) fn asks(headers: &HeaderMap) -> Asks {
    if headers.contains_key(header::CACHE_CONTROL) {
        return match Directives::of(headers) {
            Some(cc) => Asks {
                no_store: cc.no_store,
                no_cache: cc.no_cache || cc.max_age == Some(0),
                max_age: cc.max_age,
                min_fresh: cc.min_fresh,
                max_stale: cc.max_stale,
                only_if_cached: cc.only_if_cached,
            },
            // What it asks cannot be read in full: not answered from the cache, as for
            // `no-cache`; and a `no-store` or `only-if-cached` it names still holds.
            None => Asks {
                no_cache: true,
                no_store: names(headers, &header::CACHE_CONTROL, "no-store"),
                only_if_cached: names(headers, &header::CACHE_CONTROL, "only-if-cached"),
                ..Asks::default()
            },
        };
    }
    Asks {
        // HTTP/1.0's form, still sent by some clients (RFC 9111 § 5.4): a list, whose
        // `no-cache` is matched in any case, as ABNF's literals are.
        no_cache: names(headers, &header::PRAGMA, "no-cache"),
        ..Asks::default()
    }
}

/// Whether a line of `header` (`Cache-Control`, `Pragma`) in `headers` names the directive
/// `name` (whatever its value), read leniently: for lines [`Directives::of`] cannot read. Read as bytes: a
/// directive's name is a token (ASCII), and bytes that are not text (obs-text, which hyper
/// accepts) can only be in a value.
fn names(headers: &HeaderMap, header: &HeaderName, name: &str) -> bool {
    headers.get_all(header).iter().any(|line| {
        line.as_bytes().split(|&b| b == b',').any(|directive| {
            let end = directive.iter().position(|&b| b == b'=');
            directive[..end.unwrap_or(directive.len())]
                .trim_ascii()
                .eq_ignore_ascii_case(name.as_bytes())
        })
    })
}

/// The `Cache-Control` directives of every line of `headers` that the layer acts on, read
/// as RFC 9111 § 5.2 says: names case-insensitively, values as tokens or quoted strings,
/// the qualified forms `private="…"` and `no-cache="…"` as the plain ones (the layer does
/// not store a response with some of its headers left out).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Directives {
    pub(super) no_store: bool,
    pub(super) no_cache: bool,
    pub(super) private: bool,
    pub(super) public: bool,
    /// `must-revalidate` or `proxy-revalidate`: never served stale.
    pub(super) revalidate: bool,
    pub(super) max_age: Option<u64>,
    pub(super) s_maxage: Option<u64>,
    /// Requests only.
    pub(super) min_fresh: Option<u64>,
    /// Requests only; `u64::MAX` without a value.
    pub(super) max_stale: Option<u64>,
    pub(super) only_if_cached: bool,
}

impl Directives {
    /// `None` when a line is not text, or a directive the layer acts on has a value that
    /// is not a whole number of seconds (`max-age=-1`, `max-age=1.5`): the caller then
    /// fails closed.
    pub(super) fn of(headers: &HeaderMap) -> Option<Directives> {
        let mut cc = Directives::default();
        for line in headers.get_all(header::CACHE_CONTROL) {
            for directive in split_directives(line.to_str().ok()?)? {
                let (name, value) = match directive.split_once('=') {
                    Some((name, value)) => (name.trim(), Some(unquoted(value.trim()))),
                    None => (directive, None),
                };
                let seconds = || value?.parse::<u64>().ok();
                // Several values: the shortest (RFC 9111 § 4.2.1 leaves it open).
                let least = |old: Option<u64>, new: u64| Some(old.map_or(new, |o| o.min(new)));
                let is = |known: &str| name.eq_ignore_ascii_case(known);
                if is("no-store") {
                    cc.no_store = true;
                } else if is("no-cache") {
                    cc.no_cache = true;
                } else if is("private") {
                    cc.private = true;
                } else if is("public") {
                    cc.public = true;
                } else if is("must-revalidate") || is("proxy-revalidate") {
                    cc.revalidate = true;
                } else if is("max-age") {
                    cc.max_age = least(cc.max_age, seconds()?);
                } else if is("s-maxage") {
                    cc.s_maxage = least(cc.s_maxage, seconds()?);
                } else if is("min-fresh") {
                    cc.min_fresh = Some(cc.min_fresh.unwrap_or(0).max(seconds()?));
                } else if is("max-stale") {
                    let max = match value {
                        Some(_) => seconds()?,
                        None => u64::MAX,
                    };
                    cc.max_stale = least(cc.max_stale, max);
                } else if is("only-if-cached") {
                    cc.only_if_cached = true;
                }
            }
        }
        Some(cc)
    }
}

/// The directives of one `Cache-Control` line: split at commas outside quoted strings (a
/// quote opens one only as a value's first character, after `=`), trimmed, empty ones left
/// out; `None` when a quoted string is not closed (the line cannot be read).
fn split_directives(line: &str) -> Option<Vec<&str>> {
    let bytes = line.as_bytes();
    let mut directives = Vec::new();
    let (mut start, mut at) = (0, 0);
    // After a directive's `=` and before its value's first character.
    let mut value_starts = false;
    while at < bytes.len() {
        match bytes[at] {
            b'"' if value_starts => {
                // A quoted string, with `\` escapes, to its closing quote.
                at += 1;
                loop {
                    match bytes.get(at)? {
                        b'\\' => at += 2,
                        b'"' => break,
                        _ => at += 1,
                    }
                }
                value_starts = false;
            }
            b'=' => value_starts = true,
            b' ' | b'\t' => {}
            b',' => {
                directives.push(line[start..at].trim());
                start = at + 1;
                value_starts = false;
            }
            _ => value_starts = false,
        }
        at += 1;
    }
    directives.push(line.get(start..)?.trim());
    directives.retain(|d| !d.is_empty());
    Some(directives)
}

/// A directive's value without its quotes, if quoted.
fn unquoted(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
}

/// Why a response is not stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum NotStored {
    /// Its status is not one the layer caches.
    Status,
    /// `Cache-Control: no-store`, `private`, `no-cache`, or a freshness of zero.
    Directive,
    /// It sets a cookie.
    SetCookie,
    /// An event stream (`text/event-stream`): it has no end to wait for, and nothing in
    /// it can be replayed.
    EventStream,
    /// The request carried `Authorization` and the response does not say `public`.
    Authorization,
    /// `Vary: *`: no request is like another; or a `Vary` that cannot be read, which may
    /// name any header.
    VaryAny,
    /// `Vary` names request headers the key did not include: they are learned for the next
    /// requests.
    VaryUnknown(Vec<HeaderName>),
}

/// How long a storable response is fresh, and what it allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Freshness {
    /// Seconds: the layer's TTL, or less if the response says so.
    pub(super) ttl: u64,
    /// The response's own freshness (`s-maxage`, `max-age`, or `Expires`), which the
    /// layer's jitter must not lengthen.
    pub(super) own: Option<u64>,
    /// `must-revalidate`, `proxy-revalidate` or `s-maxage` (RFC 9111 § 5.2.2): a shared
    /// cache never serves it stale, whatever the layer's stale windows.
    pub(super) revalidate: bool,
    /// Seconds it had spent upstream when it reached the layer: its `Age`, or the time
    /// since its `Date` if that is longer.
    pub(super) age: u64,
}

/// A response's `headers` with the request headers the layer keys by (`keyed_by`) that
/// its `Vary` does not name added to it: what is stored, so that a cache downstream, made
/// to keep the response by the `max-age` the layer writes, keys it as the layer does (RFC
/// 9111 § 4.1) when the handler left them unsaid. (A `Vary` that could not be read is
/// never stored.)
pub(super) fn announcing_vary<'h>(
    headers: &'h HeaderMap,
    keyed_by: &[HeaderName],
) -> Cow<'h, HeaderMap> {
    let said: Vec<HeaderName> = headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    let unsaid: Vec<&str> = keyed_by
        .iter()
        .filter(|name| !said.contains(name))
        .map(HeaderName::as_str)
        .collect();
    if unsaid.is_empty() {
        return Cow::Borrowed(headers);
    }
    let mut announced = headers.clone();
    let names = HeaderValue::from_str(&unsaid.join(", ")).expect("header names are values");
    announced.append(header::VARY, names);
    Cow::Owned(announced)
}

/// Whether a response with `status` and `headers` may be stored, and if so for how long:
/// the layer's `ttl`, or less if the response's `s-maxage`, `max-age` or `Expires` says
/// so.
pub(super) fn storable(
    status: StatusCode,
    headers: &HeaderMap,
    statuses: &[StatusCode],
    authorized: bool,
    keyed_by: &[HeaderName],
    ttl: Duration,
) -> Result<Freshness, NotStored> {
    // A part of the resource (RFC 9111 § 3.3) is not the resource its key names, whatever
    // statuses the layer was given.
    if !statuses.contains(&status)
        || status == StatusCode::PARTIAL_CONTENT
        || headers.contains_key(header::CONTENT_RANGE)
    {
        return Err(NotStored::Status);
    }
    // A `Cache-Control` that cannot be read may say `no-store` or `private`: not stored.
    let cc = Directives::of(headers).ok_or(NotStored::Directive)?;
    if cc.no_store || cc.private || cc.no_cache {
        return Err(NotStored::Directive);
    }
    // An `Age` that cannot be read: as old as can be, not stored. Its age is the larger of
    // what `Age` says and how long ago its `Date` was (RFC 9111 § 4.2.3).
    let age = age_of(headers)
        .ok_or(NotStored::Directive)?
        .max(apparent_age(headers));
    // Its freshness lifetime (RFC 9111 § 4.2.1), less the age it already has.
    let own = cc
        .s_maxage
        .or(cc.max_age)
        // `Expires` counts only without either (RFC 9111 § 5.3).
        .or_else(|| expires_in(headers))
        .map(|lifetime| lifetime.saturating_sub(age));
    let mut ttl = ttl.as_secs().max(1);
    if let Some(fresh) = own {
        if fresh == 0 {
            return Err(NotStored::Directive);
        }
        ttl = ttl.min(fresh);
    }
    if headers.contains_key(header::SET_COOKIE) {
        return Err(NotStored::SetCookie);
    }
    if event_stream(headers) {
        return Err(NotStored::EventStream);
    }
    if authorized && !cc.public {
        return Err(NotStored::Authorization);
    }
    let mut unknown: Vec<HeaderName> = Vec::new();
    for value in headers.get_all(header::VARY) {
        // A `Vary` that is not ASCII, or names what is not a header name (`"Accept"`,
        // quoted): it may mean any header, so the response is not stored, as for `*`.
        let value = value.to_str().map_err(|_| NotStored::VaryAny)?;
        for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name == "*" {
                return Err(NotStored::VaryAny);
            }
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| NotStored::VaryAny)?;
            if !keyed_by.contains(&name) && !unknown.contains(&name) {
                unknown.push(name);
            }
        }
    }
    if !unknown.is_empty() {
        return Err(NotStored::VaryUnknown(unknown));
    }
    Ok(Freshness {
        ttl,
        own,
        revalidate: cc.revalidate || cc.s_maxage.is_some(),
        age,
    })
}

/// Whether a response of `status` may say no length, its body empty by definition (RFC
/// 9110 § 8.6: a `1xx`, a `204`, a `304`).
pub(super) fn lengthless(status: StatusCode) -> bool {
    status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
}

/// Whether the response's `Content-Type` is `text/event-stream` (the media type's name is
/// case-insensitive, and parameters may follow it).
fn event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("text/event-stream"))
}

/// The response's own `Age` in seconds: 0 without one, at most 2^31 (RFC 9111 § 1.2.2: a
/// larger one counts as 2^31); `None` when it cannot be read.
fn age_of(headers: &HeaderMap) -> Option<u64> {
    /// What RFC 9111 says a cache takes any larger number of seconds for.
    const MOST: u64 = 1 << 31;
    let Some(age) = headers.get(header::AGE) else {
        return Some(0);
    };
    let digits = age.to_str().ok()?.trim();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(digits.parse::<u64>().map_or(MOST, |age| age.min(MOST)))
}

/// Whole seconds from the response's `Date` (else now) to its `Expires`: its freshness
/// lifetime; 0 when that is past or the date cannot be read (`Expires: 0` means already
/// expired, RFC 9111 § 5.3); `None` without an `Expires`.
fn expires_in(headers: &HeaderMap) -> Option<u64> {
    use std::time::SystemTime;
    if !headers.contains_key(header::EXPIRES) {
        return None;
    }
    let Some(expires) = headers.typed_get::<headers::Expires>() else {
        return Some(0);
    };
    let now = headers
        .typed_get::<headers::Date>()
        .map_or_else(SystemTime::now, SystemTime::from);
    let left = SystemTime::from(expires).duration_since(now);
    Some(left.map_or(0, |left| left.as_secs()))
}

/// Whole seconds since the response's `Date`, its apparent age (RFC 9111 § 4.2.3): 0
/// without one, or one that cannot be read or is ahead of this clock.
fn apparent_age(headers: &HeaderMap) -> u64 {
    headers
        .typed_get::<headers::Date>()
        .and_then(|date| {
            std::time::SystemTime::now()
                .duration_since(date.into())
                .ok()
        })
        .map_or(0, |age| age.as_secs())
}

/// The seconds of a `Cache-Control` directive that `headers`' typed `CacheControl` does
/// not know (RFC 5861's `stale-while-revalidate=N` and `stale-if-error=N`), from every
/// `Cache-Control` line of `headers`: the first occurrence, by name case-insensitively, with
/// its value as a token or a quoted string. `None` when absent or not a whole number.
pub(super) fn extension_directive(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        // Split as the other directives are: a comma in a quoted string ends nothing.
        .filter_map(|value| split_directives(value.to_str().ok()?))
        .flatten()
        .find_map(|directive| {
            let (key, value) = directive.split_once('=')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| unquoted(value.trim()).parse::<u64>().ok())
        })
        .flatten()
}

/// The query with its parameters in order of name (parameters of one name keep their
/// order, which may matter to the handler); empty parameters dropped. Names are compared
/// as a handler reads them (`application/x-www-form-urlencoded`: `+` is a space, `%71` is
/// `q`; bytes that are not UTF-8 are U+FFFD, as `serde_urlencoded` gives them), so that
/// two spellings of one name keep their order too: `?q=a&%71=b` is not the same query as
/// `?%71=b&q=a`, nor `?%FF=1&%FE=2` as `?%FE=2&%FF=1`.
pub(super) fn sorted_query(query: &str) -> String {
    let mut params: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    if params.iter().any(|p| param_name(p).contains(['%', '+'])) {
        params.sort_by_cached_key(|p| {
            let name = percent_decoded(param_name(p).as_bytes(), true, b"");
            String::from_utf8_lossy(&name).into_owned()
        });
    } else {
        params.sort_by_key(|p| param_name(p));
    }
    params.join("&")
}

/// A query parameter's name, as written.
fn param_name(param: &str) -> &str {
    param.split_once('=').map_or(param, |(name, _)| name)
}

/// The material of a variant's key: method, path, sorted query, the values of the request
/// headers it is keyed by, whether the request was authorized, the group's generation,
/// and (for `POST`) the body's hash.
///
/// Each part is its length then its bytes, and each count a number of its own: the lengths
/// and counts are LEB128 varints (7 bits a byte, the high bit set on all but the last), so
/// no two requests that differ write the same bytes, and a request's material (about 100
/// bytes of parts and a dozen lengths) fits in two md5 blocks where fixed 8-byte lengths
/// took four.
pub(super) struct Material(Vec<u8>);

impl Material {
    pub(super) fn new() -> Self {
        Material(Vec::with_capacity(192))
    }

    pub(super) fn part(&mut self, bytes: &[u8]) -> &mut Self {
        self.count(bytes.len());
        self.0.extend_from_slice(bytes);
        self
    }

    /// A number, as a varint.
    pub(super) fn count(&mut self, n: usize) -> &mut Self {
        let mut n = n as u64;
        while n >= 0x80 {
            self.0.push((n as u8) | 0x80);
            n >>= 7;
        }
        self.0.push(n as u8);
        self
    }

    /// A request header: its name, then each value (a header sent twice differs from one
    /// sent once with both values), or a marker for its absence.
    pub(super) fn header(&mut self, name: &HeaderName, headers: &HeaderMap) -> &mut Self {
        self.part(name.as_str().as_bytes());
        let values = headers.get_all(name);
        let count = values.iter().count();
        self.0.push(u8::from(count > 0));
        self.count(count);
        for value in values {
            self.part(value.as_bytes());
        }
        self
    }

    pub(super) fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn stale_directives_are_read_from_every_cache_control_line() {
        fn swr(pairs: &[(&'static str, &'static str)]) -> Option<u64> {
            extension_directive(&headers(pairs), "stale-while-revalidate")
        }
        fn sie(pairs: &[(&'static str, &'static str)]) -> Option<u64> {
            extension_directive(&headers(pairs), "stale-if-error")
        }
        let cc = "cache-control";
        assert_eq!(
            swr(&[(cc, "max-age=60, stale-while-revalidate=30")]),
            Some(30)
        );
        assert_eq!(
            swr(&[(cc, "max-age=60"), (cc, "Stale-While-Revalidate=\"45\"")]),
            Some(45)
        );
        assert_eq!(
            sie(&[(cc, "public,stale-if-error=600 , max-age=5")]),
            Some(600)
        );
        assert_eq!(swr(&[(cc, "max-age=60, stale-if-error=600")]), None);
        // Inside another directive's quoted string: not a directive.
        let quoted = r#"max-age=60, x="a, stale-while-revalidate=86400, b""#;
        assert_eq!(swr(&[(cc, quoted)]), None);
        assert_eq!(
            swr(&[(cc, r#"x="a, b", stale-while-revalidate=20"#)]),
            Some(20)
        );
        assert_eq!(swr(&[(cc, "stale-while-revalidate=soon")]), None);
        assert_eq!(swr(&[(cc, "stale-while-revalidate")]), None);
        assert_eq!(swr(&[("x-other", "stale-while-revalidate=5")]), None);
    }

    fn fresh(pairs: &[(&'static str, &'static str)]) -> Result<Freshness, NotStored> {
        let keyed = [header::ACCEPT_LANGUAGE];
        storable(
            StatusCode::OK,
            &headers(pairs),
            &[StatusCode::OK],
            false,
            &keyed,
            Duration::from_secs(300),
        )
    }

    fn check(pairs: &[(&'static str, &'static str)], authorized: bool) -> Result<u64, NotStored> {
        let keyed = [header::ACCEPT_LANGUAGE];
        storable(
            StatusCode::OK,
            &headers(pairs),
            &[StatusCode::OK],
            authorized,
            &keyed,
            Duration::from_secs(300),
        )
        .map(|fresh| fresh.ttl)
    }

    #[test]
    fn directives_are_read_whatever_their_case_or_qualifiers() {
        let cc = "cache-control";
        for never in [
            "Private",
            "NO-STORE",
            "No-Cache",
            r#"private="x-user""#,
            r#"no-cache="set-cookie, x-user", max-age=60"#,
            "public, max-age=60, private",
        ] {
            assert_eq!(
                check(&[(cc, never)], false),
                Err(NotStored::Directive),
                "{never}"
            );
        }
        // A line that cannot be read might have said `private`: not stored.
        for unreadable in [
            "max-age=-1",
            "max-age=1.5",
            "s-maxage=",
            "no-store, max-age=x",
        ] {
            assert_eq!(
                check(&[(cc, unreadable)], false),
                Err(NotStored::Directive),
                "{unreadable}"
            );
        }
        assert_eq!(check(&[(cc, "Max-Age=60")], false), Ok(60));
        assert_eq!(check(&[(cc, r#"max-age="60""#)], false), Ok(60));
        assert_eq!(
            check(&[(cc, "max-age=60"), (cc, "max-age=30")], false),
            Ok(30)
        );
        assert_eq!(
            check(&[(cc, r#"ext="a, private", max-age=60"#)], false),
            Ok(60)
        );
        assert_eq!(
            check(&[(cc, r#"ext="a " private", max-age=60"#)], false),
            Ok(60)
        );
        // A quote inside a token opens nothing; one left open makes the line unreadable.
        assert_eq!(
            check(&[(cc, r#"a=b"c, private"#)], false),
            Err(NotStored::Directive)
        );
        assert_eq!(
            check(&[(cc, r#"ext="a, private"#)], false),
            Err(NotStored::Directive)
        );
        assert_eq!(check(&[(cc, "PUBLIC")], true), Ok(300));
        // Requests: the same reading; one that cannot be read is not answered from the cache.
        assert!(asks(&headers(&[(cc, "No-Store")])).no_store);
        assert!(asks(&headers(&[(cc, "NO-CACHE")])).no_cache);
        assert!(asks(&headers(&[(cc, "max-age=soon")])).no_cache);
        assert_eq!(asks(&headers(&[(cc, "Max-Age=7")])).max_age, Some(7));
    }

    #[test]
    fn request_freshness_directives_and_an_upstream_age() {
        let cc = "cache-control";
        let asked = asks(&headers(&[(cc, "min-fresh=30, only-if-cached")]));
        assert_eq!((asked.min_fresh, asked.only_if_cached), (Some(30), true));
        assert_eq!(asks(&headers(&[])).min_fresh, None);
        let stale = |line| asks(&headers(&[(cc, line)])).max_stale;
        assert_eq!(stale("max-age=60, max-stale"), Some(u64::MAX));
        assert_eq!(stale("max-stale=30, Max-Stale=\"10\""), Some(10));
        assert_eq!(stale("max-age=60"), None);
        assert!(asks(&headers(&[(cc, "max-stale=later")])).no_cache);
        // A response already 50 s old upstream has 10 s of its max-age left.
        assert_eq!(check(&[(cc, "max-age=60"), ("age", "50")], false), Ok(10));
        assert_eq!(
            check(&[(cc, "max-age=60"), ("age", "60")], false),
            Err(NotStored::Directive)
        );
        assert_eq!(
            check(&[(cc, "max-age=60"), ("age", "soon")], false),
            Err(NotStored::Directive)
        );
    }

    #[test]
    fn a_responses_age_counts_against_expires_and_is_read_from_its_date_too() {
        use std::time::SystemTime;
        let at = |now: SystemTime, seconds_ago: i64| match seconds_ago {
            ago if ago >= 0 => now - Duration::from_secs(ago.unsigned_abs()),
            ahead => now + Duration::from_secs(ahead.unsigned_abs()),
        };
        // A response dated `date` seconds ago (ahead when negative), expiring `expires`
        // seconds from now if given, with the other headers in `pairs`.
        let freshness =
            |date: i64, expires: Option<i64>, pairs: &[(&'static str, &'static str)]| {
                let now = SystemTime::now();
                let mut headers = headers(pairs);
                headers.typed_insert(headers::Date::from(at(now, date)));
                if let Some(expires) = expires {
                    headers.typed_insert(headers::Expires::from(at(now, -expires)));
                }
                storable(
                    StatusCode::OK,
                    &headers,
                    &[StatusCode::OK],
                    false,
                    &[],
                    Duration::from_secs(300),
                )
                .map(|fresh| (fresh.ttl, fresh.age))
            };
        // 60 s of `Expires` from its `Date`, 50 of them spent upstream: 10 left.
        assert_eq!(freshness(0, Some(60), &[("age", "50")]), Ok((10, 50)));
        assert_eq!(
            freshness(0, Some(60), &[("age", "60")]),
            Err(NotStored::Directive)
        );
        // A `Date` 30 s ago without an `Age`: 30 s old.
        let (ttl, age) = freshness(30, None, &[("cache-control", "max-age=60")]).unwrap();
        assert!(
            (29..=30).contains(&ttl) && (30..=31).contains(&age),
            "{ttl} {age}"
        );
        // A `Date` ahead of this clock adds nothing; `Age` still counts.
        let ahead = freshness(-30, None, &[("cache-control", "max-age=60"), ("age", "20")]);
        assert_eq!(ahead, Ok((40, 20)));
    }

    #[test]
    fn the_response_own_freshness_bounds_the_entry_and_revalidation_forbids_staleness() {
        let cc = "cache-control";
        fn own(
            pairs: &[(&'static str, &'static str)],
        ) -> Result<(u64, Option<u64>, bool), NotStored> {
            fresh(pairs).map(|f| (f.ttl, f.own, f.revalidate))
        }
        assert_eq!(own(&[]), Ok((300, None, false)));
        assert_eq!(own(&[(cc, "max-age=60")]), Ok((60, Some(60), false)));
        assert_eq!(own(&[(cc, "max-age=9000")]), Ok((300, Some(9000), false)));
        assert_eq!(
            own(&[(cc, "max-age=60, must-revalidate")]),
            Ok((60, Some(60), true))
        );
        assert_eq!(own(&[(cc, "Proxy-Revalidate")]), Ok((300, None, true)));
        assert_eq!(own(&[(cc, "s-maxage=30")]), Ok((30, Some(30), true)));
        // `Expires`, counted from `Date`, when neither age directive is there (a `Date`
        // ahead of this clock, so that its age is none).
        let (date, later) = (
            "Sun, 01 Dec 2126 10:00:00 GMT",
            "Sun, 01 Dec 2126 10:00:45 GMT",
        );
        assert_eq!(
            own(&[("date", date), ("expires", later)]),
            Ok((45, Some(45), false))
        );
        assert_eq!(
            own(&[("date", date), ("expires", later), (cc, "max-age=100")]),
            Ok((100, Some(100), false))
        );
        for stale in [
            &[("expires", "0")][..],
            &[("date", later), ("expires", date)],
        ] {
            assert_eq!(own(stale), Err(NotStored::Directive), "{stale:?}");
        }
    }

    #[test]
    fn the_never_store_rules() {
        assert_eq!(check(&[], false), Ok(300));
        assert_eq!(
            check(&[("cache-control", "no-store")], false),
            Err(NotStored::Directive)
        );
        assert_eq!(
            check(&[("cache-control", "private, max-age=60")], false),
            Err(NotStored::Directive)
        );
        assert_eq!(
            check(&[("cache-control", "max-age=0")], false),
            Err(NotStored::Directive)
        );
        assert_eq!(
            check(&[("set-cookie", "a=b")], false),
            Err(NotStored::SetCookie)
        );
        for stream in ["text/event-stream", "Text/Event-Stream; charset=utf-8"] {
            assert_eq!(
                check(&[("content-type", stream)], false),
                Err(NotStored::EventStream)
            );
        }
        assert_eq!(check(&[("content-type", "text/plain")], false), Ok(300));
        assert_eq!(check(&[], true), Err(NotStored::Authorization));
        assert_eq!(check(&[("cache-control", "public")], true), Ok(300));
        assert_eq!(check(&[("vary", "*")], false), Err(NotStored::VaryAny));
        assert_eq!(check(&[("vary", "Accept-Language")], false), Ok(300));
        assert_eq!(
            check(&[("vary", "accept-language, x-tenant")], false),
            Err(NotStored::VaryUnknown(vec![HeaderName::from_static(
                "x-tenant"
            )]))
        );
    }

    #[test]
    fn the_response_can_shorten_the_ttl_but_not_lengthen_it() {
        assert_eq!(check(&[("cache-control", "max-age=60")], false), Ok(60));
        assert_eq!(
            check(&[("cache-control", "max-age=60, s-maxage=30")], false),
            Ok(30)
        );
        assert_eq!(check(&[("cache-control", "max-age=9000")], false), Ok(300));
    }

    #[test]
    fn a_status_not_listed_is_not_stored() {
        let result = storable(
            StatusCode::NOT_FOUND,
            &HeaderMap::new(),
            &[StatusCode::OK],
            false,
            &[],
            Duration::from_secs(1),
        );
        assert_eq!(result, Err(NotStored::Status));
    }

    #[test]
    fn request_directives() {
        assert_eq!(asks(&headers(&[])), Asks::default());
        assert!(asks(&headers(&[("cache-control", "no-store")])).no_store);
        assert!(asks(&headers(&[("cache-control", "no-cache")])).no_cache);
        assert!(asks(&headers(&[("cache-control", "max-age=0")])).no_cache);
        assert!(asks(&headers(&[("pragma", "no-cache")])).no_cache);
        assert!(asks(&headers(&[("pragma", "x-trace, No-Cache")])).no_cache);
        assert!(!asks(&headers(&[("pragma", "x-no-cache-please")])).no_cache);
        assert!(
            !asks(&headers(&[
                ("pragma", "no-cache"),
                ("cache-control", "max-age=5")
            ]))
            .no_cache,
            "Pragma is read only without Cache-Control"
        );
        assert_eq!(
            asks(&headers(&[("cache-control", "max-age=5")])).max_age,
            Some(5)
        );
    }

    #[test]
    fn query_parameters_in_any_order_are_one_query() {
        assert_eq!(sorted_query("b=2&a=1"), sorted_query("a=1&b=2"));
        assert_eq!(sorted_query("a=1&&b=2&"), "a=1&b=2");
        // Repeated names keep their order.
        assert_eq!(sorted_query("t=2&a=1&t=1"), "a=1&t=2&t=1");
        assert_ne!(sorted_query("t=2&t=1"), sorted_query("t=1&t=2"));
        // So do names a handler reads as one (`%71` is `q`, `+` a space): each query keeps
        // its own order of them.
        assert_ne!(sorted_query("q=a&%71=b"), sorted_query("%71=b&q=a"));
        assert_eq!(sorted_query("z=1&%71=b&q=a"), "%71=b&q=a&z=1");
        assert_ne!(sorted_query("a+b=1&a%20b=2"), sorted_query("a%20b=2&a+b=1"));
        // A `%` not followed by two hex digits is a name of its own, as it is written.
        assert_eq!(sorted_query("%zz=1&%=2&a=3"), "%=2&%zz=1&a=3");
        // Bytes that are not UTF-8 all read as U+FFFD: names a handler reads alike.
        assert_ne!(sorted_query("%FF=1&%FE=2"), sorted_query("%FE=2&%FF=1"));
        assert_ne!(
            sorted_query("%EF%BF%BD=1&%FF=2"),
            sorted_query("%FF=2&%EF%BF%BD=1")
        );
        assert_eq!(sorted_query("%FF=1&a=2"), "a=2&%FF=1");
    }

    #[test]
    fn a_request_directive_that_cannot_be_read_keeps_its_no_store_and_only_if_cached() {
        let cc = "cache-control";
        fn read(pairs: &[(&'static str, &'static str)]) -> Asks {
            asks(&headers(pairs))
        }
        let unreadable = read(&[(cc, "no-store, max-age=-1")]);
        assert!(unreadable.no_store && unreadable.no_cache, "{unreadable:?}");
        let split = read(&[(cc, "No-Store"), (cc, "min-fresh=x")]);
        assert!(split.no_store, "{split:?}");
        let only = read(&[(cc, "only-if-cached, max-age=1.5")]);
        assert!(only.only_if_cached && !only.no_store, "{only:?}");
        let neither = read(&[(cc, "max-age=soon")]);
        assert_eq!(
            neither,
            Asks {
                no_cache: true,
                ..Asks::default()
            }
        );
        // A line that is not text (obs-text, which hyper accepts, in a value): its
        // directives' names are read all the same. Not answered from the cache, and
        // neither `no-store` nor `only-if-cached` (which would refuse the request the
        // handler: a `504`, even with the entry there) unless it names them.
        let not_text = |line: &[u8]| {
            let mut headers = HeaderMap::new();
            headers.append(
                header::CACHE_CONTROL,
                http::HeaderValue::from_bytes(line).unwrap(),
            );
            asks(&headers)
        };
        let asked = not_text(b"max-age=60, x=\"caf\xc3\xa9\"");
        assert!(
            asked.no_cache && !asked.no_store && !asked.only_if_cached,
            "{asked:?}"
        );
        let asked = not_text(b"x=\"caf\xc3\xa9\", No-Store");
        assert!(asked.no_store && !asked.only_if_cached, "{asked:?}");
        let asked = not_text(b"only-if-cached, x=\xff");
        assert!(asked.only_if_cached && !asked.no_store, "{asked:?}");
    }

    #[test]
    fn an_age_that_cannot_be_read_is_not_stored_and_a_huge_one_is_two_to_the_31() {
        assert!(matches!(
            fresh(&[("age", "abc")]),
            Err(NotStored::Directive)
        ));
        assert!(matches!(fresh(&[("age", "-1")]), Err(NotStored::Directive)));
        assert!(matches!(fresh(&[("age", "")]), Err(NotStored::Directive)));
        let huge = fresh(&[("age", "99999999999999999999999")]).map(|f| f.age);
        assert_eq!(huge.ok(), Some(1 << 31));
        assert_eq!(fresh(&[("age", " 7 ")]).map(|f| f.age).ok(), Some(7));
    }

    #[test]
    fn material_parts_and_counts_are_self_delimiting() {
        let of = |parts: &[&[u8]]| {
            let mut material = Material::new();
            for part in parts {
                material.part(part);
            }
            material.into_bytes()
        };
        assert_ne!(of(&[b"a", b"bc"]), of(&[b"ab", b"c"]));
        assert_ne!(of(&[b"", b"a"]), of(&[b"a", b""]));
        assert_eq!(of(&[b"ab"]), b"\x02ab");
        // A length of 128 or more takes more bytes, each but the last with its high bit.
        let long = vec![b'x'; 300];
        let written = of(&[&long]);
        assert_eq!(&written[..2], &[0xac, 0x02]);
        assert_eq!(written.len(), 302);
        let mut counted = Material::new();
        counted.count(127).count(128).count(0);
        assert_eq!(counted.into_bytes(), [0x7f, 0x80, 0x01, 0x00]);
    }

    #[test]
    fn material_tells_absent_from_empty_headers() {
        let name = header::ACCEPT_LANGUAGE;
        let mut absent = Material::new();
        absent.header(&name, &HeaderMap::new());
        let mut empty = Material::new();
        empty.header(&name, &headers(&[("accept-language", "")]));
        assert_ne!(absent.into_bytes(), empty.into_bytes());
    }
}
