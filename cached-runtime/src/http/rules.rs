//! HTTP's caching rules for a shared cache (RFC 9111), as the layer applies them: what a
//! request asks of the cache, whether a response may be stored and for how long, and what
//! a variant's key is made of.

use headers::{CacheControl, HeaderMapExt, Vary};
use http::header::{self, HeaderMap, HeaderName};
use http::{HeaderValue, StatusCode};
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
}

pub(super) fn asks(headers: &HeaderMap) -> Asks {
    match headers.typed_get::<CacheControl>() {
        Some(cc) => {
            let max_age = cc.max_age().map(|d| d.as_secs());
            Asks {
                no_store: cc.no_store(),
                no_cache: cc.no_cache() || max_age == Some(0),
                max_age,
            }
        }
        None => Asks {
            // HTTP/1.0's form, still sent by some clients (RFC 9111 § 5.4).
            no_cache: headers
                .get_all(header::PRAGMA)
                .iter()
                .any(|v| v.to_str().is_ok_and(|v| v.contains("no-cache"))),
            ..Asks::default()
        },
    }
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
    /// The request carried `Authorization` and the response does not say `public`.
    Authorization,
    /// `Vary: *`: no request is like another.
    VaryAny,
    /// `Vary` names request headers the key did not include: they are learned for the next
    /// requests.
    VaryUnknown(Vec<HeaderName>),
}

/// Whether a response with `status` and `headers` may be stored, and if so for how many
/// seconds: the layer's `ttl`, or less if the response's `s-maxage`/`max-age` says so.
pub(super) fn storable(
    status: StatusCode,
    headers: &HeaderMap,
    statuses: &[StatusCode],
    authorized: bool,
    keyed_by: &[HeaderName],
    ttl: Duration,
) -> Result<u64, NotStored> {
    if !statuses.contains(&status) {
        return Err(NotStored::Status);
    }
    let cc = headers.typed_get::<CacheControl>();
    let mut ttl = ttl.as_secs().max(1);
    if let Some(cc) = &cc {
        if cc.no_store() || cc.private() || cc.no_cache() {
            return Err(NotStored::Directive);
        }
        if let Some(fresh) = cc.s_max_age().or(cc.max_age()) {
            if fresh.is_zero() {
                return Err(NotStored::Directive);
            }
            ttl = ttl.min(fresh.as_secs().max(1));
        }
    }
    if headers.contains_key(header::SET_COOKIE) {
        return Err(NotStored::SetCookie);
    }
    if authorized && !cc.as_ref().is_some_and(CacheControl::public) {
        return Err(NotStored::Authorization);
    }
    if let Some(vary) = headers.typed_get::<Vary>() {
        if vary.is_any() {
            return Err(NotStored::VaryAny);
        }
        let unknown: Vec<HeaderName> = vary
            .iter_strs()
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .filter(|name| !keyed_by.contains(name))
            .collect();
        if !unknown.is_empty() {
            return Err(NotStored::VaryUnknown(unknown));
        }
    }
    Ok(ttl)
}

/// The seconds of a `Cache-Control` directive that `headers`' typed `CacheControl` does
/// not know (RFC 5861's `stale-while-revalidate=N` and `stale-if-error=N`), from every
/// `Cache-Control` line of `headers`: the first occurrence, by name case-insensitively, with
/// its value as a token or a quoted string. `None` when absent or not a whole number.
pub(super) fn extension_directive(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|line| line.split(','))
        .find_map(|directive| {
            let (key, value) = directive.split_once('=')?;
            key.trim().eq_ignore_ascii_case(name).then(|| {
                let value = value.trim();
                let value = value
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(value);
                value.parse::<u64>().ok()
            })
        })
        .flatten()
}

/// The query with its parameters in order of name (parameters of one name keep their
/// order, which may matter to the handler); empty parameters dropped.
pub(super) fn sorted_query(query: &str) -> String {
    let mut params: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    params.sort_by_key(|p| p.split_once('=').map_or(*p, |(name, _)| name));
    params.join("&")
}

/// The material of a variant's key: method, path, sorted query, the values of the request
/// headers it is keyed by, whether the request was authorized, the group's generation,
/// and (for `POST`) the body's hash. Each part is length-prefixed, so no two requests that
/// differ give the same bytes.
pub(super) struct Material(Vec<u8>);

impl Material {
    pub(super) fn new() -> Self {
        Material(Vec::with_capacity(128))
    }

    pub(super) fn part(&mut self, bytes: &[u8]) -> &mut Self {
        self.0
            .extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        self.0.extend_from_slice(bytes);
        self
    }

    /// A request header: its name, then each value (a header sent twice differs from one
    /// sent once with both values), or a marker for its absence.
    pub(super) fn header(&mut self, name: &HeaderName, headers: &HeaderMap) -> &mut Self {
        self.part(name.as_str().as_bytes());
        let values: Vec<&HeaderValue> = headers.get_all(name).iter().collect();
        self.0.push(u8::from(!values.is_empty()));
        self.0
            .extend_from_slice(&(values.len() as u64).to_le_bytes());
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
        assert_eq!(swr(&[(cc, "stale-while-revalidate=soon")]), None);
        assert_eq!(swr(&[(cc, "stale-while-revalidate")]), None);
        assert_eq!(swr(&[("x-other", "stale-while-revalidate=5")]), None);
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
