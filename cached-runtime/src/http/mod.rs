//! HTTP response caching in front of routes: [`CacheLayer`], a `tower` layer for axum
//! routers and any tower/hyper service, with ETag/`304`, `Cache-Control`, `Age` and
//! `X-Cache`; [`EvictLayer`] for the write routes; [`invalidate_path`].
//!
//! It caches through the same cache as `#[cached]` (the scoped one, else the global one),
//! so the namespace, the stats and metrics (labelled by the layer's prefix), the breaker,
//! single flight per key, TTL jitter and the fill-race fence are the same.
//!
//! # Keys
//!
//! A response is stored at `[{ns}:]{prefix}:{http:<md5 of the decoded path>}:<md5 of the variant>`.
//! The variant is the method, the path, the query with its parameters sorted by name, the
//! origin (the target's scheme and authority, `Host`, `X-Forwarded-Host`,
//! `X-Forwarded-Proto`, `Forwarded`'s `host=` and `proto=`), the values of the request
//! headers the responses `Vary` by, whether the request carried `Authorization`, the
//! generation of the layer's group and, for a cached `POST`, the body's md5, its
//! `Content-Type` and its `Content-Encoding`. The path is the one the client asked for:
//! under axum's `Router::nest`, axum's `OriginalUri`, not the path without the nest's
//! prefix that the layer sees. The path's hash is the key's Redis Cluster hash tag, and
//! each path has a
//! generation at `[{ns}:]redcache:group:{http:<md5 of the path>}`, in the same slot:
//! every entry is stamped with it and read together with it (one `MGET`).
//! [`invalidate_path`] moves the path to a new generation, which retires every query and
//! variant of the path at once, without `KEYS` or `SCAN`, on a cluster too; and a response
//! computed before the invalidation cannot be stored after it (the fill checks the
//! generation it read). A path's generation expires with the last entry that uses it.
//!
//! A layer with a [`group`](CacheLayer::group) reads the group's generation first (one
//! more `GET`) and keys by it, so that `invalidate_group` retires the group's responses
//! as it does `#[cached]` entries of the group.

mod body;
mod rules;
mod stored;

pub use self::body::{Body, BoxError};

use self::body::Read;
use self::rules::{Material, NotStored};
use self::stored::{Answer, Stored};
use crate::aside::{Entry, KeyedGen};
use crate::cache::{Cache, InUse};
use crate::codec::{Format, Stamp};
use crate::core::Core;
use crate::global::{current, warn_not_initialized};
use crate::invalidate::{EvictIfDropped, Target};
use crate::key::{self, md5_hex};
use crate::shape::{Found, Hooks, Outcome, Shape};
use crate::stats::{Event, Served};
use crate::store::{Replaced, Store};
use crate::ttl::{default_jitter, unix_ms, Policy};
use crate::Result;
use bytes::Bytes;
use headers::{ETag, HeaderMapExt, IfModifiedSince, IfNoneMatch, LastModified};
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::Body as HttpBody;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};
use tower_layer::Layer;
use tower_service::Service;

/// The response header that says how the layer answered: `HIT` (from the cache), `MISS`
/// (the handler ran) or `BYPASS` (not a request the layer caches).
pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// Request headers a layer keys by at most: what responses' `Vary` adds beyond that is not
/// stored.
const MAX_VARY: usize = 16;

/// How a response was answered, as `X-Cache` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum XCache {
    Hit,
    Miss,
    Bypass,
}

impl XCache {
    fn value(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            XCache::Hit => "HIT",
            XCache::Miss => "MISS",
            XCache::Bypass => "BYPASS",
        })
    }
}

/// A [`tower_layer::Layer`] that caches the responses of the routes it wraps.
///
/// Only `GET` (and `HEAD`, answered from the `GET` entry without a body; a `HEAD` miss is
/// its handler's to answer, and fills nothing) is looked up, and `POST` if
/// [`cache_post`](Self::cache_post) says so; other methods pass through with `X-Cache:
/// BYPASS`, and a request of an unsafe method (`PUT`, `PATCH`, `DELETE`, a `POST`; under
/// `cache_post`, only one answered with a status the layer does not store) answered with
/// anything but an error retires the stored responses of its path ([`invalidate_path`],
/// RFC 9111 § 4.4). Responses with a status in
/// [`statuses`](Self::statuses) (`200`) are stored for [`ttl`](Self::ttl) plus jitter,
/// unless:
///
/// * they say `Cache-Control: no-store`, `private` or `no-cache`, or set a cookie;
/// * they are an event stream (`text/event-stream`), which is passed on as it comes;
/// * the request carried `Authorization` and the response does not say `public`;
/// * they say `Vary: *`, or their `Vary` names request headers the layer does not key by
///   yet (it learns them: the next requests are keyed by their values);
/// * the body is over [`max_body_bytes`](Self::max_body_bytes) (it is streamed through
///   unchanged).
///
/// A response's own `s-maxage`/`max-age` shortens the TTL. Stored responses get a strong
/// `ETag` (the body's md5) unless the handler set one, `Cache-Control: max-age=<its
/// lifetime>` unless the handler set `Cache-Control`, and `Age` on hits (what is left is
/// `max-age` less `Age`, as clients compute it); a request whose
/// `If-None-Match` matches (or, without one, whose `If-Modified-Since` is not before the
/// response's `Last-Modified`) gets `304 Not Modified`, on a hit or a miss: the layer
/// evaluates both itself, and the handler is asked for the whole response. One with
/// `If-Match` or `If-Unmodified-Since` goes to the handler, which alone can evaluate them
/// (`BYPASS`). A request's
/// `Cache-Control: no-cache` runs the handler and refreshes the entry, `no-store` runs it
/// and neither reads nor writes, `max-age=N` does not take an entry older than `N`
/// seconds.
///
/// When the store fails, the handler runs and its response is returned (`X-Cache: MISS`);
/// concurrent requests for one cold URL run the handler once.
///
/// The wrapped service's request body must be buildable from `Bytes` (for a cached
/// `POST`, whose body the layer reads): axum's `Body` is. Under a bare hyper service,
/// turn hyper's `Incoming` into such a body first (`axum::body::Body::new(incoming)`);
/// the response body may be any `http_body::Body` of `Bytes`.
///
/// # Examples
///
/// ```
/// use axum::{routing::get, Router};
/// use redcache::http::CacheLayer;
/// use std::time::Duration;
///
/// async fn list_products() -> &'static str {
///     "[]"
/// }
///
/// let app: Router = Router::new()
///     .route("/products", get(list_products))
///     .route_layer(CacheLayer::new().ttl(Duration::from_secs(300)).group("products"));
/// ```
#[derive(Clone)]
pub struct CacheLayer {
    settings: Arc<Settings>,
}

/// A function that makes a request's tags from its method, URI and headers.
type MakeTags = Arc<dyn Fn(&http::request::Parts) -> Vec<String> + Send + Sync>;

/// Tags of a request: fixed ones, and those a function makes from the request.
#[derive(Clone, Default)]
struct Tags {
    fixed: Vec<String>,
    from: Option<MakeTags>,
}

impl Tags {
    fn is_empty(&self) -> bool {
        self.fixed.is_empty() && self.from.is_none()
    }

    /// The tags of `request` (taken apart for the function, and put back together). The
    /// function sees the URI the client sent, as the key and the paths are made of: under
    /// axum's `Router::nest`, with the nest's prefix (`OriginalUri`).
    fn of<B>(&self, request: Request<B>) -> (Request<B>, Vec<String>) {
        let mut tags = self.fixed.clone();
        let Some(from) = &self.from else {
            return (request, tags);
        };
        let (mut parts, body) = request.into_parts();
        let sent = parts
            .extensions
            .get::<axum::extract::OriginalUri>()
            .map(|original| original.0.clone());
        let routed = sent.map(|sent| std::mem::replace(&mut parts.uri, sent));
        tags.extend(from(&parts));
        if let Some(routed) = routed {
            parts.uri = routed;
        }
        (Request::from_parts(parts, body), tags)
    }
}

impl fmt::Debug for Tags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tags")
            .field("fixed", &self.fixed)
            .field(
                "from",
                &self.from.as_ref().map(|_| "fn(&Parts) -> Vec<String>"),
            )
            .finish()
    }
}

#[derive(Clone)]
struct Settings {
    ttl: Option<Duration>,
    jitter: Option<Duration>,
    prefix: String,
    group: Option<String>,
    statuses: Vec<StatusCode>,
    max_body_bytes: usize,
    post: bool,
    /// Whether a write (an unsafe method) retires the stored responses of its path.
    retire_on_write: bool,
    stale_while_revalidate: Option<Duration>,
    stale_if_error: Option<Duration>,
    tags: Tags,
    cache: Option<Cache>,
    /// Request headers the key includes: declared, and learned from responses' `Vary`
    /// (replaced whole when one is learned, so a request takes it without a copy).
    vary: Arc<RwLock<Arc<[HeaderName]>>>,
}

impl Default for CacheLayer {
    fn default() -> Self {
        CacheLayer::new()
    }
}

impl fmt::Debug for CacheLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.settings;
        f.debug_struct("CacheLayer")
            .field("ttl", &s.ttl)
            .field("jitter", &s.jitter)
            .field("prefix", &s.prefix)
            .field("group", &s.group)
            .field("statuses", &s.statuses)
            .field("max_body_bytes", &s.max_body_bytes)
            .field("cache_post", &s.post)
            .field("retire_on_write", &s.retire_on_write)
            .field("stale_while_revalidate", &s.stale_while_revalidate)
            .field("stale_if_error", &s.stale_if_error)
            .field("tags", &s.tags)
            .field(
                "vary",
                &*s.vary.read().unwrap_or_else(PoisonError::into_inner),
            )
            .finish()
    }
}

impl CacheLayer {
    /// A layer with the defaults: the cache's default TTL (and a tenth of it as jitter),
    /// prefix `http`, no group, status `200`, bodies up to 1 MiB, `GET` and `HEAD` only.
    ///
    /// # Examples
    ///
    /// ```
    /// let layer = redcache::http::CacheLayer::new();
    /// ```
    pub fn new() -> Self {
        CacheLayer {
            settings: Arc::new(Settings {
                ttl: None,
                jitter: None,
                prefix: "http".to_owned(),
                group: None,
                statuses: vec![StatusCode::OK],
                max_body_bytes: 1 << 20,
                post: false,
                retire_on_write: true,
                stale_while_revalidate: None,
                stale_if_error: None,
                tags: Tags::default(),
                cache: None,
                vary: Arc::new(RwLock::new(Arc::from([]))),
            }),
        }
    }

    fn with(mut self, change: impl FnOnce(&mut Settings)) -> Self {
        change(Arc::make_mut(&mut self.settings));
        self
    }

    /// How long responses are stored (whole seconds, at least 1), before jitter.
    ///
    /// # Examples
    ///
    /// ```
    /// let layer = redcache::http::CacheLayer::new().ttl(std::time::Duration::from_secs(300));
    /// ```
    pub fn ttl(self, ttl: Duration) -> Self {
        self.with(|s| s.ttl = Some(ttl))
    }

    /// The largest random time (whole seconds) added to each entry's TTL, so entries
    /// stored together do not expire together; default a tenth of the TTL. It is part of
    /// the lifetime the response is sent with (the `max-age` the layer writes), and never
    /// lengthens a freshness the response gives itself.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let layer = redcache::http::CacheLayer::new().jitter(Duration::ZERO);
    /// ```
    pub fn jitter(self, jitter: Duration) -> Self {
        self.with(|s| s.jitter = Some(jitter))
    }

    /// The key prefix (default `http`): what the stats and metrics are labelled by. No
    /// braces on a Redis Cluster: it hashes a key by its first `{..}`, which must be the
    /// path's hash tag (the entry and its path's generation in one slot); there, a layer
    /// whose prefix has one passes every request to the handler, and says so once.
    ///
    /// # Examples
    ///
    /// ```
    /// let layer = redcache::http::CacheLayer::new().prefix("http:catalogue");
    /// ```
    pub fn prefix(self, prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        self.with(|s| s.prefix = prefix)
    }

    /// An eviction group shared with `#[cached(group = "..")]`: `invalidate_group` retires
    /// this layer's responses too. Costs one more `GET` per request.
    ///
    /// # Examples
    ///
    /// ```
    /// let layer = redcache::http::CacheLayer::new().group("products");
    /// ```
    ///
    /// # Panics
    ///
    /// When `group` is no group's name (empty, or with control characters or braces),
    /// which `invalidate_group` would refuse.
    pub fn group(self, group: impl Into<String>) -> Self {
        let group = group.into();
        if let Some(problem) = key::group_problem(&group) {
            panic!("CacheLayer::group({group:?}): {problem}");
        }
        self.with(|s| s.group = Some(group))
    }

    /// The statuses whose responses are stored (default `200` only).
    ///
    /// # Examples
    ///
    /// ```
    /// use http::StatusCode;
    /// let layer = redcache::http::CacheLayer::new()
    ///     .statuses([StatusCode::OK, StatusCode::NOT_FOUND]);
    /// ```
    pub fn statuses(self, statuses: impl IntoIterator<Item = StatusCode>) -> Self {
        let statuses = statuses.into_iter().collect();
        self.with(|s| s.statuses = statuses)
    }

    /// The largest body stored (default 1 MiB); larger bodies stream through unchanged.
    ///
    /// # Examples
    ///
    /// ```
    /// let layer = redcache::http::CacheLayer::new().max_body_bytes(256 * 1024);
    /// ```
    pub fn max_body_bytes(self, max: usize) -> Self {
        self.with(|s| s.max_body_bytes = max)
    }

    /// Request headers to key by from the start (responses' `Vary` adds more as they come).
    /// Stored responses name every header the layer keys by in their `Vary`.
    ///
    /// # Examples
    ///
    /// ```
    /// use http::header::ACCEPT_LANGUAGE;
    /// let layer = redcache::http::CacheLayer::new().vary([ACCEPT_LANGUAGE]);
    /// ```
    pub fn vary(self, names: impl IntoIterator<Item = HeaderName>) -> Self {
        let mut names: Vec<HeaderName> = names.into_iter().collect();
        names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        names.dedup();
        names.truncate(MAX_VARY);
        self.with(|s| s.vary = Arc::new(RwLock::new(names.into())))
    }

    /// Caches `POST` requests too, keyed by a hash of their body and by their
    /// `Content-Type` and `Content-Encoding` (off by default: for `POST` routes that only read, such as a search
    /// with a JSON query). A body larger than [`max_body_bytes`](Self::max_body_bytes), or
    /// of unknown length, passes through. A `POST` answered with a status the layer stores
    /// is a read, stored or not (with `Set-Cookie`, say): it retires nothing, where RFC
    /// 9111 § 4.4 would have any `POST` retire its path. One answered with another status
    /// (`303 See Other` after a form, `201`, `204`...), not an error, is a write: it
    /// retires the stored responses of its path, as a `PUT` does. A write that answers
    /// `200` under this layer retires nothing: put an [`EvictLayer`] on it.
    ///
    /// A `200` to a `POST` is stored, and an identical `POST` is answered with it: the
    /// handler does not run again. Put this layer on the `POST` routes that only read:
    /// axum's `Router::route_layer` puts a layer on every method of every route, a
    /// `MethodRouter`'s (`post(search).route_layer(..)`) on that method alone.
    ///
    /// # Examples
    ///
    /// ```
    /// use axum::{routing::post, Router};
    /// use redcache::http::CacheLayer;
    ///
    /// async fn search(query: String) -> String {
    ///     format!("results for {query}")
    /// }
    ///
    /// let app: Router = Router::new()
    ///     .route("/search", post(search).route_layer(CacheLayer::new().cache_post(true)));
    /// ```
    pub fn cache_post(self, yes: bool) -> Self {
        self.with(|s| s.post = yes)
    }

    /// Whether a request of an unsafe method (`PUT`, `PATCH`, `DELETE`, a `POST`; under
    /// [`cache_post`](Self::cache_post), only a `POST` answered with a status the layer
    /// does not store) answered with anything but an error retires the stored responses
    /// of its path, as RFC 9111 § 4.4 has a cache do (on by default). Each such request then
    /// waits for one Redis write (a new generation of its path, even one nothing was
    /// cached for), as [`invalidate_path`] does, and so does one dropped, or whose handler
    /// panics, before it answers (the write may have been made); turn it off for a layer
    /// over write routes
    /// whose paths are never read through it (an ingest endpoint), or that retire what
    /// they change themselves ([`EvictLayer`]).
    ///
    /// # Examples
    ///
    /// ```
    /// let layer = redcache::http::CacheLayer::new().retire_on_write(false);
    /// ```
    pub fn retire_on_write(self, yes: bool) -> Self {
        self.with(|s| s.retire_on_write = yes)
    }

    /// RFC 5861's `stale-while-revalidate`: a response past its TTL by less than `window`
    /// still answers at once (`X-Cache: HIT`, its `Age` past its `max-age`) while one
    /// request runs the handler to refresh it, as `#[cached(stale_ttl = ..)]`. A response
    /// with its own `Cache-Control: stale-while-revalidate=N` gets N seconds instead.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let layer = redcache::http::CacheLayer::new().stale_while_revalidate(Duration::from_secs(30));
    /// ```
    pub fn stale_while_revalidate(self, window: Duration) -> Self {
        self.with(|s| s.stale_while_revalidate = Some(window))
    }

    /// RFC 5861's `stale-if-error`: when the handler fails (a `5xx` response, or the
    /// service's error) and the response it was to replace is past its TTL by less than
    /// `window`, that response answers instead (`X-Cache: HIT`), as
    /// `#[cached(stale_if_error = ..)]`, or one that replaced it meanwhile (another
    /// request's, another process's) if it is fresh or within its own window. Never a
    /// response retired by an invalidation. A response with its own `Cache-Control:
    /// stale-if-error=N` gets N seconds instead.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let layer = redcache::http::CacheLayer::new().stale_if_error(Duration::from_secs(300));
    /// ```
    pub fn stale_if_error(self, window: Duration) -> Self {
        self.with(|s| s.stale_if_error = Some(window))
    }

    /// Tags every response stored through the layer with `tag`, as
    /// `#[cached(tags(..))]` tags a function's entries: `redcache::invalidate_tag(tag)`
    /// retires them (with every function's entries carrying it). May be given several
    /// times.
    ///
    /// # Examples
    ///
    /// ```
    /// let layer = redcache::http::CacheLayer::new().tag("catalogue");
    /// ```
    pub fn tag(self, tag: impl Into<String>) -> Self {
        let tag = tag.into();
        self.with(|s| s.tags.fixed.push(tag))
    }

    /// Tags each stored response with the tags `tags` makes from its request (its method,
    /// URI and headers), such as `user:42` from `/users/42/orders`. Each tag costs the
    /// request one read of its generation (all in one `MGET`). The URI is the one the
    /// client sent, as [`invalidate_path`] takes it: under axum's `Router::nest`, with the
    /// nest's prefix.
    ///
    /// # Examples
    ///
    /// ```
    /// let layer = redcache::http::CacheLayer::new().tags_from(|request| {
    ///     let mut segments = request.uri.path().split('/').skip(1);
    ///     match (segments.next(), segments.next()) {
    ///         (Some("users"), Some(id)) => vec![format!("user:{id}")],
    ///         _ => Vec::new(),
    ///     }
    /// });
    /// ```
    pub fn tags_from(
        self,
        tags: impl Fn(&http::request::Parts) -> Vec<String> + Send + Sync + 'static,
    ) -> Self {
        self.with(|s| s.tags.from = Some(Arc::new(tags)))
    }

    /// Caches in `cache` rather than in the cache in use where requests are handled.
    ///
    /// # Examples
    ///
    /// ```
    /// let layer = redcache::http::CacheLayer::new().cache(redcache::Cache::memory());
    /// ```
    pub fn cache(self, cache: Cache) -> Self {
        self.with(|s| s.cache = Some(cache))
    }
}

impl<S> Layer<S> for CacheLayer {
    type Service = CacheService<S>;

    fn layer(&self, inner: S) -> CacheService<S> {
        CacheService {
            inner,
            settings: self.settings.clone(),
        }
    }
}

/// The service [`CacheLayer`] wraps a route in.
#[derive(Clone)]
pub struct CacheService<S> {
    inner: S,
    settings: Arc<Settings>,
}

impl<S> fmt::Debug for CacheService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheService")
            .field("prefix", &self.settings.prefix)
            .finish_non_exhaustive()
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqB, ResB> Service<Request<ReqB>> for CacheService<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
    ReqB: HttpBody<Data = Bytes> + From<Bytes> + Send + 'static,
    ReqB::Error: Into<BoxError>,
    ResB: HttpBody<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<std::result::Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqB>) -> Self::Future {
        // The clone may not be ready: keep it, and use the one that is.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(handle(self.settings.clone(), inner, request))
    }
}

/// The key a layer is filling, on the request it hands its handler: a layer of the same
/// key within that handler passes the request on.
#[derive(Clone)]
struct Filling(Arc<str>);

/// The handler's response (or error) as it is, when it was not stored.
type Passed<E> = Option<std::result::Result<Response<Body>, E>>;

/// What the cache computes on a miss: a stored response, or (not stored) nothing: the
/// handler's response is then in the call's `Passed` slot.
type Filled = std::result::Result<Stored, NotFilled>;

/// A response that was not stored (the handler's response is handed back as it is).
#[derive(Debug)]
struct NotFilled {
    /// The handler failed (a `5xx`, or the service's error): `stale_if_error` may answer.
    failed: bool,
}

/// How the layer's results map to entries: a stored response in its own layout
/// ([`Stored::encode`]), nothing for a response not stored; only a failed handler counts
/// as a failure (a response that is merely not stored, say with `Set-Cookie`, is the
/// answer).
struct Responses;

impl Shape<Filled> for Responses {
    fn encode(out: &Filled, stamp: Stamp, format: Format) -> Outcome {
        match out {
            Ok(stored) => Outcome::Value(stored.encode(stamp, format)),
            Err(_) => Outcome::Skip,
        }
    }
    fn decode(bytes: &[u8]) -> serde_json::Result<(Found<Filled>, Stamp)> {
        let (found, stamp) = Stored::decode(bytes)?;
        let found = match found {
            Found::Value(stored) => Found::Value(Ok(stored)),
            Found::Null(stored) => Found::Null(Ok(stored)),
            Found::Gone => Found::Gone,
        };
        Ok((found, stamp))
    }
    fn failed(out: &Filled) -> bool {
        matches!(out, Err(NotFilled { failed: true }))
    }
}

/// One request through the layer.
///
/// (Not an `async fn`: one would move its arguments into locals of their own, and so hold
/// the request twice in the future that each request allocates and moves.)
#[allow(clippy::manual_async_fn)]
fn handle<S, ReqB, ResB>(
    settings: Arc<Settings>,
    mut inner: S,
    mut request: Request<ReqB>,
) -> impl Future<Output = std::result::Result<Response<Body>, S::Error>>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ReqB: HttpBody<Data = Bytes> + From<Bytes> + Send + 'static,
    ReqB::Error: Into<BoxError>,
    ResB: HttpBody<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    async move {
        let method = request.method().clone();
        let looked_up = method == Method::GET
            || method == Method::HEAD
            || (method == Method::POST && settings.post);
        if !looked_up && !method.is_safe() && settings.retire_on_write {
            return Box::pin(pass_unsafe(&settings, &mut inner, request, false)).await;
        }
        let asks = rules::asks(request.headers());
        // `no-store` forbids storing what the handler answers; with `only-if-cached`, the
        // handler may not answer (RFC 9111 § 5.2.1.7): the cache answers or `504`, storing
        // nothing either way. A `GET` or `HEAD` with a body (which axum hands a handler like
        // any other) is not keyed by it, as a `POST` is: not looked up; nor a `Range` for a
        // part, unless `only-if-cached` (the handler may not answer it: a stored response
        // answers whole, else `504`).
        if !looked_up
            || (asks.no_store && !asks.only_if_cached)
            || bodied(&request)
            || ((partial(&request) || preconditioned(&request)) && !asks.only_if_cached)
        {
            if method == Method::POST && settings.retire_on_write {
                return Box::pin(pass_unsafe(&settings, &mut inner, request, true)).await;
            }
            return Box::pin(pass(&mut inner, request, XCache::Bypass)).await;
        }

        let Some(cache) = settings.cache() else {
            warn_not_initialized();
            return Box::pin(pass(&mut inner, request, XCache::Bypass)).await;
        };
        let core = cache.core();
        if core.config.is_cluster() && settings.prefix.contains(['{', '}']) {
            warn_braced_prefix(&settings.prefix);
            return Box::pin(pass(&mut inner, request, XCache::Bypass)).await;
        }
        let body_hash = if method == Method::POST {
            match Box::pin(read_request_body(request, settings.max_body_bytes)).await {
                Ok((read, hash)) => {
                    request = read;
                    hash
                }
                Err(Unread::Pass(passed)) if settings.retire_on_write => {
                    return Box::pin(pass_unsafe(&settings, &mut inner, *passed, true)).await
                }
                Err(Unread::Pass(passed)) => {
                    return Box::pin(pass(&mut inner, *passed, XCache::Bypass)).await
                }
                Err(Unread::Failed) => {
                    return Ok(marked(bodiless(StatusCode::BAD_REQUEST), XCache::Bypass))
                }
            }
        } else {
            None
        };
        // The generations of the request's tags and of the layer's group, if it has them:
        // stamped on what is stored. If one cannot be read, nothing is read or stored for the
        // request, but it still shares one handler run with the requests like it (the store
        // is likely out, when the handler's backend most needs that).
        let mut tags = 0;
        let mut tag_names = Vec::new();
        let mut unreadable = None;
        if !settings.tags.is_empty() {
            let (taken, names) = settings.tags.of(request);
            request = taken;
            tag_names = names;
            if !tag_names.is_empty() {
                match Box::pin(core.tag_digest(&tag_names)).await {
                    Ok(digest) => tags = digest,
                    Err(err) => unreadable = Some((path_tag(target(&request).path()), err)),
                }
            }
        }
        let target = target(&request);
        let path_tag = path_tag(target.path());
        let gen_key = core.group_key(&path_tag);
        // Where the layer's group keeps its generation.
        let group_key = settings.group.as_ref().map(|group| core.group_key(group));
        let group_gen = match (&group_key, &unreadable) {
            (Some(group_key), None) => match Box::pin(group_generation(core, group_key)).await {
                Ok(gen) => Some(gen),
                Err(err) => {
                    unreadable = Some((gen_key.clone(), err));
                    None
                }
            },
            _ => None,
        };
        if let Some((name, err)) = &unreadable {
            core.fault(name, err);
        }
        let unread = unreadable.is_some();
        let keyed_by = settings
            .vary
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let authorized = request.headers().contains_key(header::AUTHORIZATION);
        let mut material = Material::new();
        material
            .part(if method == Method::POST {
                b"POST"
            } else {
                b"GET"
            })
            .part(target.path().as_bytes())
            .part(rules::sorted_query(target.query().unwrap_or("")).as_bytes());
        add_host(&mut material, &request, target);
        for name in keyed_by.iter() {
            material.header(name, request.headers());
        }
        if unread {
            // Requests keyed alike may carry other tags (`tags_from` may read what the key
            // does not): without their generations' digest to tell them apart on the stamp,
            // the names keep them in flights of their own.
            for name in &tag_names {
                material.part(name.as_bytes());
            }
        }
        material
            .part(&[u8::from(authorized)])
            // `?` where the group's generation could not be read: no generation is written
            // so, and such a key is never read or written (`unread`).
            .part(match (&group_gen, unread) {
                (Some(gen), _) => gen,
                (None, true) => b"?",
                (None, false) => b"-",
            })
            .part(body_hash.as_deref().unwrap_or("").as_bytes());
        if method == Method::POST {
            // The same bytes as another type are another request (a handler may parse JSON
            // and refuse text), and so are they in another coding (a decompressing layer
            // before the handler hands it other bytes for `gzip` than for none).
            material.header(&header::CONTENT_TYPE, request.headers());
            material.header(&header::CONTENT_ENCODING, request.headers());
        }
        let namespace = core.config.namespace();
        let key = key::derive_key(
            namespace,
            &settings.prefix,
            Some(&path_tag),
            &material.into_bytes(),
        );
        // A layer of the same key inside another's handler (an axum layer over a router that
        // nests routers with layers of their own): the outer one stores the response, and this
        // one passes it on. Joining the outer one's flight, it would wait on itself.
        if request
            .extensions()
            .get::<Filling>()
            .is_some_and(|filling| *filling.0 == *key)
        {
            return Box::pin(pass(&mut inner, request, XCache::Bypass)).await;
        }
        let ttl = settings
            .ttl
            .unwrap_or(Duration::from_secs(core.config.default_ttl()));
        let jitter = settings
            .jitter
            .map_or_else(|| default_jitter(ttl.as_secs()), |j| j.as_secs());
        let whole = |window: Option<Duration>| window.map(|w| w.as_secs());
        // The jitter is drawn as the response is stored (`Fill::run`), into the lifetime its
        // `max-age` says: the engine adds none.
        let policy = Policy::seconds(ttl.as_secs(), 0, 0)
            .with_stale(
                whole(settings.stale_while_revalidate),
                whole(settings.stale_if_error),
            )
            .with_format(core.config.format());
        // A `GET`'s validators are the layer's to evaluate: the handler is asked for the whole
        // response, which can be stored (see `Conditions`). A cached `POST` keeps its own.
        let conditions = (method != Method::POST).then(|| Conditions::take(request.headers_mut()));
        let head = method == Method::HEAD;
        if head {
            // The GET entry answers a HEAD. On a miss the handler answers the `HEAD` as it
            // came, and nothing is stored: under axum the layer wraps each method's handler,
            // and a route's own `head` handler (`get(page).head(probe)`), asked for a `GET`,
            // would fill the entry a `GET` is answered from with its answer to a `HEAD`. A
            // `HEAD` ignores `Range` (RFC 9110 § 14.2).
            request.headers_mut().remove(header::RANGE);
            request.headers_mut().remove(header::IF_RANGE);
        }
        // A request that says how old or how fresh a response it takes refuses the others as
        // they are read: the handler answers it, and the request is counted once, as a miss.
        let accepts = |bytes: &[u8]| match Stored::decode(bytes) {
            Ok((Found::Value(stored) | Found::Null(stored), stamp)) => {
                let now = unix_ms();
                let expired = stamp.refresh.is_some_and(|r| now >= r.expires_ms);
                !refuses(&asks, &stored, now, expired)
            }
            // Not a response: the engine reads it as it reads any.
            _ => true,
        };
        let asks_freshness =
            asks.max_age.is_some() || asks.min_fresh.is_some() || asks.max_stale.is_some();
        let keyed_gen = match (&group_key, &group_gen) {
            (Some(key), Some(gen)) => Some(KeyedGen { key, gen }),
            _ => None,
        };
        let accepts: crate::aside::Accepts<'_> = &accepts;
        let at = Entry {
            prefix: Some(&settings.prefix),
            key: &key,
            gen_key: Some(&gen_key),
            gen_expires: true,
            force: asks.no_cache,
            // With `only-if-cached`, a stale response the request accepts answers it: the
            // handler may not run for it, and the refresh is left to a request that may. A
            // `HEAD`'s answer is never stored: it refreshes nothing, and leads no flight that
            // `GET`s would wait on.
            may_run: !asks.only_if_cached && !head,
            policy: &policy,
            local: None,
            started: None,
            tags,
            unread,
            accepts: asks_freshness.then_some(&accepts),
            // The group's generation is in the key, not on the stamp: a stale answer to a
            // failed handler checks it is still current.
            keyed_gen: keyed_gen.as_ref(),
        };
        let fill = Fill {
            key: &key,
            posted: method == Method::POST && settings.retire_on_write,
            settings: &settings,
            keyed_by: &keyed_by,
            authorized,
            ttl,
            jitter,
            only_if_cached: asks.only_if_cached,
            head,
        };
        let mut request = Some(request);
        let mut passed: Passed<S::Error> = None;
        // The retirement of the path of a `POST` the handler was asked to answer
        // (`Fill::posted`), armed until its answer decides.
        let mut written: Option<EvictIfDropped> = None;
        let (mut filled, mut served) = run(core, at, &tag_names, async {
            Box::pin(fill.run(&mut inner, &mut request, &mut passed, &mut written)).await
        })
        .await;
        // One clock read for the request's freshness checks and the response's `Age`.
        let now = unix_ms();
        if let Ok(stored) = &filled {
            // Checked again for a response the read did not examine (another request's, shared
            // with this one), or that aged past what the request takes since it was read.
            // (Unless the handler has already run for this request: it failed, and the old
            // response answered for it under `stale-if-error`, which the request gets. Nor for
            // one the handler has just made for another request: its run for this one would
            // answer no younger or fresher.)
            if served.is_hit()
                && stored.elapsed(now) > 0
                && refuses(&asks, stored, now, served == Served::Stale)
                && request.is_some()
            {
                if asks.only_if_cached {
                    // Not one the request accepts, and the handler may not answer.
                    return Ok(marked(bodiless(StatusCode::GATEWAY_TIMEOUT), XCache::Miss));
                }
                // Older than the request accepts: the handler answers, and the entry is
                // refreshed (or a refresh already under way answers).
                let at = Entry { force: true, ..at };
                (filled, served) = run(core, at, &tag_names, async {
                    Box::pin(fill.run(&mut inner, &mut request, &mut passed, &mut written)).await
                })
                .await;
            }
        }
        // A `POST`'s retirement still armed: its handler answered a write, or did not
        // answer (it panicked; a stale response may answer for it under `stale_if_error`),
        // and its write may have been made. (One that answered a read or failed was
        // disarmed as it answered: `Fill::run`.)
        if let Some(pending) = written {
            Box::pin(evict_armed(pending)).await;
        }
        let stored = match filled {
            Ok(stored) => stored,
            Err(NotFilled { .. }) => {
                return match passed {
                    // The handler's answer to a `HEAD`: without a body, whatever serves it
                    // (hyper strips one; other stacks may not).
                    Some(response) if head => response.map(|mut r| {
                        if answer_condition(&mut r, conditions.as_ref()) {
                            return marked(r, XCache::Miss);
                        }
                        // Its length stays said, as a server would say it for a `HEAD` (not
                        // where a length may not be sent: RFC 9110 § 8.6, RFC 9112 § 6.2).
                        let (mut parts, body) = r.into_parts();
                        let lengthless = rules::lengthless(parts.status)
                            || parts.headers.contains_key(header::TRANSFER_ENCODING);
                        // (An empty one says nothing of the `GET`'s length: the layer says
                        // none, and the empty body's `0` stands, as without the layer.)
                        let len = HttpBody::size_hint(&body).exact();
                        let said = match len.filter(|&len| len > 0 && !lengthless) {
                            Some(len) => {
                                parts
                                    .headers
                                    .entry(header::CONTENT_LENGTH)
                                    .or_insert(HeaderValue::from(len));
                                true
                            }
                            None => {
                                len == Some(0) || parts.headers.contains_key(header::CONTENT_LENGTH)
                            }
                        };
                        // Where no length is said, the body says none either: a server or
                        // framework that writes `Content-Length` off a body's exact size
                        // (axum does) would write an empty body's `0` as the `GET`'s length.
                        let body = if said {
                            body::empty()
                        } else {
                            body::lengthless()
                        };
                        marked(Response::from_parts(parts, body), XCache::Miss)
                    }),
                    Some(response) => response.map(|mut r| {
                        answer_condition(&mut r, conditions.as_ref());
                        marked(r, XCache::Miss)
                    }),
                    // Not reached: a `NotFilled` is only made after the handler's response was
                    // put there, or when the handler has no request left to answer, which the
                    // freshness check above avoids. Never an empty `200` if it were.
                    None => Ok(marked(
                        bodiless(StatusCode::INTERNAL_SERVER_ERROR),
                        XCache::Miss,
                    )),
                };
            }
        };
        let from_cache = served.is_hit();
        // Evaluated only where a cache may (RFC 9111 § 4.3.2, RFC 9110 § 13.2.1): for a `GET`
        // or `HEAD`, of a stored `2xx`. `If-None-Match`, else `If-Modified-Since` (see
        // `Conditions`).
        let not_modified = match &conditions {
            Some(conditions) if stored.is_success() => {
                conditions.not_modified(|| stored.etag(), || stored.last_modified())
            }
            _ => false,
        };
        let answer = Answer {
            x_cache: if from_cache {
                XCache::Hit
            } else {
                XCache::Miss
            },
            from_cache,
            head,
            not_modified,
        };
        Ok(stored.respond(answer, now))
    }
}

/// Whether a request that `asks` refuses `stored` at `now` (unix ms), read past its
/// expiry (kept for a stale window) if `expired`: older than its `max-age`, fresh for less
/// than its `min-fresh`, or stale when it says `max-age` without a `max-stale` that covers
/// it, or `max-stale=N` alone and it is more than `N` seconds past its freshness (RFC 9111
/// § 5.2.1.1, § 5.2.1.2, § 5.2.1.3): one served under `stale-while-revalidate` while
/// another request refreshes, past the `max-age` it would be sent with.
fn refuses(asks: &rules::Asks, stored: &Stored, now: u64, expired: bool) -> bool {
    let too_old = asks.max_age.is_some_and(|max| stored.age(now) > max);
    let fresh_for = stored.fresh_for(stored.elapsed(now));
    let too_close = asks.min_fresh.is_some_and(|min| fresh_for < min);
    let stale = expired || fresh_for == 0;
    let stale_refused = stale
        && (asks.max_age.is_some() || asks.max_stale.is_some())
        && asks.max_stale.is_none_or(|max| stored.staleness(now) > max);
    too_old || too_close || stale_refused
}

/// The validators of a `GET` or `HEAD` request (`If-None-Match`, `If-Modified-Since`),
/// taken off it before the handler runs: the layer evaluates them itself (RFC 9110
/// § 13.2.2), against the stored response or, when it is not stored, the handler's. The
/// handler is then asked for the whole response, which can be stored for every client. A
/// handler that answered a current client `304` itself would store nothing, and every
/// request of clients revalidating their copies (browsers after a deploy or an
/// invalidation) would reach it, none waiting on another's fill.
///
/// `If-Range` stays: it decides whether a `Range` is served, which only the handler does.
#[derive(Debug)]
struct Conditions {
    /// The request had `If-None-Match`: `If-Modified-Since` is then not evaluated, even
    /// if the list could not be read.
    has_none_match: bool,
    if_none_match: Option<IfNoneMatch>,
    if_modified_since: Option<IfModifiedSince>,
}

impl Conditions {
    /// The request's validators, removed from `headers`.
    fn take(headers: &mut http::HeaderMap) -> Conditions {
        let has_none_match = headers.contains_key(header::IF_NONE_MATCH);
        if !has_none_match && !headers.contains_key(header::IF_MODIFIED_SINCE) {
            return Conditions {
                has_none_match,
                if_none_match: None,
                if_modified_since: None,
            };
        }
        let conditions = Conditions {
            has_none_match,
            if_none_match: headers.typed_get(),
            // An unreadable date, or more than one, is no condition (RFC 9110 § 13.1.3).
            if_modified_since: headers.typed_get(),
        };
        headers.remove(header::IF_NONE_MATCH);
        headers.remove(header::IF_MODIFIED_SINCE);
        conditions
    }

    /// The client's copy of a representation with these validators is current, and gets
    /// `304 Not Modified`: by `If-None-Match` (weak comparison) if the request has one,
    /// else by `If-Modified-Since` against `Last-Modified`. Without a `Last-Modified` there
    /// is no date to compare (RFC 9110 § 13.1.3): not the time it was stored, which another
    /// instance's clock may have set.
    /// (Each validator is looked up only if the request asks about it.)
    fn not_modified<'a>(
        &self,
        etag: impl FnOnce() -> Option<&'a str>,
        last_modified: impl FnOnce() -> Option<SystemTime>,
    ) -> bool {
        if self.has_none_match {
            let Some(condition) = &self.if_none_match else {
                return false;
            };
            // `*`: any current representation, with or without a tag (RFC 9110 § 13.1.2).
            if *condition == IfNoneMatch::any() {
                return true;
            }
            return etag()
                .and_then(|etag| etag.parse::<ETag>().ok())
                .is_some_and(|etag| !condition.precondition_passes(&etag));
        }
        match self.if_modified_since {
            Some(since) => last_modified().is_some_and(|modified| !since.is_modified(modified)),
            None => false,
        }
    }
}

/// Representation metadata that a `304` made from a whole response leaves out (RFC 9110
/// § 15.4.5): it describes a body the `304` does not carry.
const CONTENT_HEADERS: [HeaderName; 9] = [
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    header::CONTENT_ENCODING,
    header::CONTENT_LANGUAGE,
    header::CONTENT_RANGE,
    header::CONTENT_DISPOSITION,
    header::TRANSFER_ENCODING,
    HeaderName::from_static("content-digest"),
    HeaderName::from_static("repr-digest"),
];

/// Makes `response`, the handler's answer to a request whose validators the layer took
/// (`conditions`), into `304 Not Modified` if it is a `2xx` the client's copy matches: the
/// answer the handler would have given. It keeps the response's other headers
/// (`Set-Cookie` too: the response was not stored, and a handler's own `304` may set a
/// cookie); whether it did. A body over `max_body_bytes`, streamed otherwise, is dropped
/// unread.
fn answer_condition(response: &mut Response<Body>, conditions: Option<&Conditions>) -> bool {
    let Some(conditions) = conditions else {
        return false;
    };
    let headers = response.headers();
    let etag = || headers.get(header::ETAG).and_then(|v| v.to_str().ok());
    let last_modified = || headers.typed_get::<LastModified>().map(SystemTime::from);
    if !response.status().is_success() || !conditions.not_modified(etag, last_modified) {
        return false;
    }
    *response.status_mut() = StatusCode::NOT_MODIFIED;
    for name in &CONTENT_HEADERS {
        response.headers_mut().remove(name);
    }
    *response.body_mut() = body::empty();
    true
}

/// The generation of `group`, which the layer's keys include. A group without one gets one
/// now, as the first `#[cached]` fill in it would: keys made without one would no longer
/// be read once it had one. Created only where there is none (`SET NX`): requests (and
/// processes) that found none at once key by the one that was made first, so a cold group
/// runs a URL's handler once, and no entry is left under a generation replaced at once.
async fn group_generation(core: &Core, gen_key: &str) -> Result<Vec<u8>> {
    if let Some(gen) = core.op(core.backend.get(gen_key)).await? {
        return Ok(gen);
    }
    core.create_generation(gen_key, None).await
}

/// Looks up (or fills) the entry at `at`, in a `redcache.call` span like a `#[cached]`
/// call's (prefix, key hash, result), timed for the `metrics` histogram.
async fn run<F>(core: &Arc<Core>, at: Entry<'_>, tag_names: &[String], fill: F) -> (Filled, Served)
where
    F: Future<Output = Filled>,
{
    let hooks = Hooks {
        // The lifetime its `max-age` says: the layer's TTL and jitter, or less if the
        // response gave a freshness of its own.
        ttl: Some(|filled: &Filled| filled.as_ref().ok().map(Stored::ttl)),
        cache_if: None,
        // And its own `stale-while-revalidate`/`stale-if-error` replace the layer's.
        windows: Some(|filled: &Filled| filled.as_ref().ok().and_then(Stored::windows)),
        failed: None,
    };
    let prefix = at.prefix.unwrap_or_default();
    let span = tracing::debug_span!(
        "redcache.call",
        prefix,
        key.hash = at.key.rsplit_once(':').map_or(at.key, |(_, hash)| hash),
        result = tracing::field::Empty,
    );
    // One clock read times the request and starts its first read's fill deadline.
    let started = tokio::time::Instant::now();
    let at = Entry {
        started: Some(started),
        ..at
    };
    let (filled, served) = in_span!(
        &span,
        core.run_at::<Responses, Filled, F>(at, hooks, tag_names, fill)
    );
    span.record("result", served.as_str());
    #[cfg(feature = "metrics")]
    crate::metrics::call(prefix, served, started);
    (filled, served)
}

impl Served {
    /// Answered from the cache (or by the leader of the key's flight), fresh or stale.
    fn is_hit(self) -> bool {
        matches!(self, Served::Hit | Served::NullHit | Served::Stale)
    }
}

/// What running the handler on a miss needs.
struct Fill<'a> {
    /// The key the response is stored under: the request carries it to the handler
    /// ([`Filling`]).
    key: &'a str,
    /// A `POST` that retires its path if the handler answers it as a write: the
    /// retirement is armed when the handler runs, and made if the request is dropped or
    /// the handler panics before it answers ([`EvictIfDropped`]): see `handle`.
    posted: bool,
    settings: &'a Settings,
    keyed_by: &'a [HeaderName],
    authorized: bool,
    ttl: Duration,
    /// Seconds: up to this much is added at random to the TTL of every stored response
    /// (never past a freshness the response gives itself), so that responses stored
    /// together do not expire together.
    jitter: u64,
    /// The request said `only-if-cached`: a miss is answered `504`, not by the handler.
    only_if_cached: bool,
    /// A `HEAD`: the handler's answer is passed on, never stored.
    head: bool,
}

impl Fill<'_> {
    /// Runs the handler with the request in `request`; a response that may be stored is
    /// read whole and returned, any other is put in `passed` as it is.
    async fn run<S, ReqB, ResB>(
        &self,
        inner: &mut S,
        request: &mut Option<Request<ReqB>>,
        passed: &mut Passed<S::Error>,
        written: &mut Option<EvictIfDropped>,
    ) -> Filled
    where
        S: Service<Request<ReqB>, Response = Response<ResB>>,
        ResB: HttpBody<Data = Bytes> + Send + 'static,
        ResB::Error: Into<BoxError>,
    {
        if self.only_if_cached {
            *passed = Some(Ok(bodiless(StatusCode::GATEWAY_TIMEOUT)));
            return Err(NotFilled { failed: false });
        }
        let Some(mut request) = request.take() else {
            return Err(NotFilled { failed: false });
        };
        if self.posted {
            *written = self.settings.retire(&request);
        }
        request
            .extensions_mut()
            .insert(Filling(Arc::from(self.key)));
        let answered = inner.call(request).await;
        // A `POST`'s answer decides its retirement: kept armed only for a write (a status
        // the layer does not store, and no error), made once the request is answered.
        let wrote = answered
            .as_ref()
            .is_ok_and(|r| self.settings.posted_wrote(r.status()));
        if !wrote {
            if let Some(pending) = written.take() {
                pending.disarm();
            }
        }
        let response = match answered {
            Ok(response) => response,
            Err(err) => {
                *passed = Some(Err(err));
                return Err(NotFilled { failed: true });
            }
        };
        let (parts, body) = response.into_parts();
        let failed = parts.status.is_server_error();
        let pass_on = |body: Body, passed: &mut Passed<S::Error>| {
            *passed = Some(Ok(Response::from_parts(parts.clone(), body)));
            Err(NotFilled { failed })
        };
        if self.head {
            return pass_on(body::boxed(body), passed);
        }
        let settings = self.settings;
        let fresh = match rules::storable(
            parts.status,
            &parts.headers,
            &settings.statuses,
            self.authorized,
            self.keyed_by,
            self.ttl,
        ) {
            // Drawn into the lifetime the response is kept and sent with (the `max-age`
            // the layer writes), so that it is never served older than that as fresh (RFC
            // 9111 § 4.2.4); never past a freshness of the response's own.
            Ok(fresh) if self.jitter > 0 => rules::Freshness {
                ttl: (fresh.ttl + rand::Rng::random_range(&mut rand::rng(), 0..=self.jitter))
                    .min(fresh.own.unwrap_or(u64::MAX)),
                ..fresh
            },
            Ok(fresh) => fresh,
            Err(why) => {
                if let NotStored::VaryUnknown(names) = why {
                    learn(settings, names);
                }
                return pass_on(body::boxed(body), passed);
            }
        };
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|len| len > settings.max_body_bytes as u64) {
            return pass_on(body::boxed(body), passed);
        }
        match body::read_up_to(body, settings.max_body_bytes).await {
            // Shorter or longer than its `Content-Length` says: not a whole response, and
            // stored, it would be served with a length made to match. Passed on as it came,
            // for the server to fail as it would without the layer.
            Read::Whole(bytes) if declared.is_some_and(|len| len != bytes.len() as u64) => {
                pass_on(body::full(bytes), passed)
            }
            Read::Whole(bytes) => {
                let headers = rules::announcing_vary(&parts.headers, self.keyed_by);
                match Stored::new(parts.status, &headers, bytes.clone(), fresh, unix_ms()) {
                    Some(stored) => Ok(stored),
                    None => pass_on(body::full(bytes), passed),
                }
            }
            Read::Partial(body) => pass_on(body, passed),
        }
    }
}

/// A response of `status` and no body, made by the layer itself: `400` for a cached `POST`
/// whose body could not be read whole (what axum's own body extractors answer when
/// buffering a body fails), `504` for an `only-if-cached` request nothing stored answers
/// (RFC 9111 § 5.2.1.7).
fn bodiless(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(body::empty());
    *response.status_mut() = status;
    response
}

/// Adds request headers named by a response's `Vary` to those the layer keys by.
fn learn(settings: &Settings, names: Vec<HeaderName>) {
    let mut vary = settings
        .vary
        .write()
        .unwrap_or_else(PoisonError::into_inner);
    let mut learned = vary.to_vec();
    for name in names {
        if learned.len() < MAX_VARY && !learned.contains(&name) {
            learned.push(name);
        }
    }
    learned.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    *vary = learned.into();
}

/// Why a `POST`'s body was not read for its key.
enum Unread<B> {
    /// Larger than the layer reads, or of unknown length: the request as it came, for the
    /// handler.
    Pass(Box<Request<B>>),
    /// Its reading failed (the client went away), it ran past `max_body_bytes` (and so
    /// past the `Content-Length` it declared), or it ended in trailers (HTTP/2): what was
    /// read cannot be handed on in a request of its type.
    Failed,
}

/// The request with its body read whole (at most `max` bytes, as its `Content-Length`
/// says) and the body's md5.
async fn read_request_body<B>(
    request: Request<B>,
    max: usize,
) -> std::result::Result<(Request<B>, Option<String>), Unread<B>>
where
    B: HttpBody<Data = Bytes> + From<Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_none_or(|len| len > max as u64) {
        return Err(Unread::Pass(Box::new(request)));
    }
    let (parts, body) = request.into_parts();
    let bytes = match body::read_up_to(body, max).await {
        Read::Whole(bytes) => bytes,
        // Not looked up, nothing stored, and the handler does not run: it would get an
        // empty body or part of one, and might act on it.
        Read::Partial(_) => return Err(Unread::Failed),
    };
    let hash = md5_hex(&bytes);
    Ok((Request::from_parts(parts, B::from(bytes)), Some(hash)))
}

/// The handler's response to `request`, not looked up.
async fn pass<S, ReqB, ResB>(
    inner: &mut S,
    request: Request<ReqB>,
    x_cache: XCache,
) -> std::result::Result<Response<Body>, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: HttpBody<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    let response = inner.call(request).await?;
    Ok(marked(response.map(body::boxed), x_cache))
}

/// The handler's response to a request of an unsafe method (RFC 9110 § 9.2.1: `PUT`,
/// `DELETE`, `PATCH`, an uncached `POST`...), not looked up. A response other than an
/// error retires every stored response of the target's path (RFC 9111 § 4.4), as
/// [`invalidate_path`] does: the write is seen by the next read of the path. A failed
/// invalidation is logged and counted; the response is returned all the same.
///
/// `posted`: a `POST` under `cache_post` that is not looked up (its body is too large to
/// key by, or of unknown length; the request said `no-store`). Answered with a status the
/// layer does not store (`303 See Other` after a form, `201`, `204`), it is a write as
/// above. One the layer would store is a read that was not stored, and retires nothing:
/// no request can empty a path's responses by its headers alone.
async fn pass_unsafe<S, ReqB, ResB>(
    settings: &Settings,
    inner: &mut S,
    request: Request<ReqB>,
    posted: bool,
) -> std::result::Result<Response<Body>, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: HttpBody<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    let pending = settings.retire(&request);
    let response = pass(inner, request, XCache::Bypass).await;
    let wrote = response.as_ref().is_ok_and(|r| match posted {
        true => settings.posted_wrote(r.status()),
        false => is_a_write(r.status()),
    });
    evict_after(pending, wrote).await;
    response
}

impl Settings {
    /// Whether a `POST` under `cache_post` whose handler answered `status` made a write:
    /// a status the layer does not store (a form's `303`, a `201`), and no error. One
    /// answered with a status the layer stores is a read, stored or not.
    fn posted_wrote(&self, status: StatusCode) -> bool {
        is_a_write(status) && !self.statuses.contains(&status)
    }

    /// The retirement of every stored response of `request`'s path, armed before its
    /// handler runs (see [`EvictIfDropped`]); `None` where no cache is set up.
    fn retire<B>(&self, request: &Request<B>) -> Option<EvictIfDropped> {
        let cache = self.cache()?;
        let cache = Cache::clone(&cache);
        let path = Target::Path(target(request).path().to_owned());
        Some(EvictIfDropped::arm(cache, vec![path]))
    }

    /// The layer's own cache, else the one in use here (the global one borrowed, as a
    /// `#[cached]` call does: no shared reference count written per request).
    fn cache(&self) -> Option<LayerCache<'_>> {
        match &self.cache {
            Some(cache) => Some(LayerCache::Own(cache)),
            None => Cache::in_use().map(LayerCache::InUse),
        }
    }
}

/// The cache a request goes through ([`Settings::cache`]).
enum LayerCache<'a> {
    Own(&'a Cache),
    InUse(InUse),
}

impl std::ops::Deref for LayerCache<'_> {
    type Target = Cache;

    fn deref(&self) -> &Cache {
        match self {
            LayerCache::Own(cache) => cache,
            LayerCache::InUse(cache) => cache,
        }
    }
}

fn marked(mut response: Response<Body>, x_cache: XCache) -> Response<Body> {
    response.headers_mut().insert(X_CACHE, x_cache.value());
    response
}

/// The request's target as the client sent it. Under axum's `Router::nest` a layer sees
/// the path without the nest's prefix; axum keeps the original as `OriginalUri`.
fn target<B>(request: &Request<B>) -> &http::Uri {
    request
        .extensions()
        .get::<axum::extract::OriginalUri>()
        .map_or(request.uri(), |original| &original.0)
}

/// Whether a request other than a `POST` carries a body: as its headers say in HTTP/1
/// (`Content-Length` over 0, or `Transfer-Encoding`), or its body's known length; and in
/// HTTP/2 and later, which frame a body without either header, unless its stream has
/// ended. In HTTP/1 not from the body's lack of an end: a body wrapped by a middleware
/// that does not pass its hints on (a timeout's) would make every `GET` look like one with
/// a body. (Over HTTP/2, such a wrapper makes `GET`s pass uncached: a body the key does
/// not hold must never be answered from another request's entry.)
fn bodied<B: HttpBody>(request: &Request<B>) -> bool {
    if request.method() == Method::POST {
        return false;
    }
    let headers = request.headers();
    // A length it declares settles it, in any version.
    if let Some(len) = headers.get(header::CONTENT_LENGTH) {
        return len
            .to_str()
            .ok()
            .and_then(|len| len.trim().parse::<u64>().ok())
            .is_none_or(|len| len > 0);
    }
    headers.contains_key(header::TRANSFER_ENCODING)
        || request.body().size_hint().lower() > 0
        || (request.version() >= http::Version::HTTP_2
            && !request.body().is_end_stream()
            && request.body().size_hint().exact() != Some(0))
}

/// Whether a `GET` asks for a part the handler should answer: any `Range` but the whole
/// resource from its start (`bytes=0-`, what browsers send for media and downloads, which
/// a stored response answers whole; a range unit's name is case-insensitive). A `HEAD`
/// ignores `Range` (RFC 9110 § 14.2). A part is never stored either way.
fn partial<B>(request: &Request<B>) -> bool {
    request.method() == Method::GET
        && request.headers().get(header::RANGE).is_some_and(|range| {
            !range
                .as_bytes()
                .trim_ascii()
                .eq_ignore_ascii_case(b"bytes=0-")
        })
}

/// Whether `request` has a precondition that only its handler can evaluate: `If-Match`
/// or `If-Unmodified-Since` (RFC 9110 § 13.1.1, § 13.1.4), which come before
/// `If-None-Match` and `If-Modified-Since` (§ 13.2.2: a `GET` whose `If-Match` fails is
/// answered `412`, whatever its `If-None-Match` says). A cache does not evaluate them (RFC
/// 9111 § 4.3.2), and a stored response answered in their place would disregard them.
fn preconditioned<B>(request: &Request<B>) -> bool {
    let headers = request.headers();
    headers.contains_key(header::IF_MATCH) || headers.contains_key(header::IF_UNMODIFIED_SINCE)
}

/// Says once per process that a layer's prefix has a brace, which on a cluster parts its
/// entries from their path's generation (the first `{..}` of a key is its hash tag).
fn warn_braced_prefix(prefix: &str) {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::error!(
            prefix,
            "redcache: a CacheLayer prefix with a brace cannot be used on a Redis Cluster (a \
             key's first {{..}} must be its path's hash tag); its requests go to the handler \
             uncached: leave braces out of the prefix"
        );
    }
}

/// Adds the origin the request is for to `material` (a shared cache keys by the whole
/// target URI): the target's scheme and authority (an absolute-form target, HTTP/2's
/// `:scheme` and `:authority`) and the `Host` header, all, as a handler may read either:
/// a request naming one host in its target and another in `Host` shares no entry with a
/// request for either alone. And what a proxy may pass on, which handlers read before
/// those (axum-extra's `Host` and `Scheme` extractors do): `X-Forwarded-Host`,
/// `X-Forwarded-Proto`, and the `host=` and `proto=` parameters of `Forwarded` (only
/// those: its `for=` names each client, and would give each its own entries). Otherwise a
/// client could send one of them past a proxy that keeps it, and have the page its handler
/// builds for that host or scheme (its absolute links, its redirects) served to everyone.
fn add_host<B>(material: &mut Material, request: &Request<B>, target: &http::Uri) {
    let headers = request.headers();
    let authority = target.authority().map(http::uri::Authority::as_str);
    material.part(authority.unwrap_or("").as_bytes());
    material.part(target.scheme_str().unwrap_or("").as_bytes());
    material.header(&header::HOST, headers);
    material.header(&X_FORWARDED_HOST, headers);
    material.header(&X_FORWARDED_PROTO, headers);
    let forwarded = |wanted: &[u8]| -> Vec<&[u8]> {
        headers
            .get_all(header::FORWARDED)
            .iter()
            .flat_map(|value| value.as_bytes().split(|&b| b == b',' || b == b';'))
            .filter_map(|pair| {
                let pair = pair.trim_ascii();
                let (name, value) = pair.split_at(pair.iter().position(|&b| b == b'=')?);
                // Spaces around the name too: not in RFC 7239's grammar, but handlers'
                // parsers (axum-extra's `Host`) trim them, and so read the value.
                name.trim_ascii()
                    .eq_ignore_ascii_case(wanted)
                    .then_some(&value[1..])
            })
            .collect()
    };
    for named in [forwarded(b"host"), forwarded(b"proto")] {
        // Counted first, as a header's values are: no other part can read as one of them.
        material.count(named.len());
        for value in named {
            material.part(value);
        }
    }
}

/// `X-Forwarded-Host`, the host a proxy says a request was for.
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// `X-Forwarded-Proto`, the scheme a proxy says a request came in with.
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// The hash tag (and generation name) of a path's entries: `http:<md5 of the path>`, of
/// the path as the handler sees it (see [`decoded_path`]), so that `/products/%34%32` is
/// retired with `/products/42`.
pub(crate) fn path_tag(path: &str) -> String {
    let mut tag = String::with_capacity(37);
    tag.push_str("http:");
    key::push_md5_hex(&mut tag, &decoded_path(path));
    tag
}

/// `path` with its percent-encoded bytes decoded, as routers decode them for handlers.
/// `%2F` and `%25` too: a router does not match `/a%2Fb` where it matches `/a/b`, but
/// axum's captures decode them, so a wildcard route's handler (`/files/{*key}`) gets `a/b`
/// for both, and a write to either must retire the other. Spellings that only share a tag
/// are retired together; each keeps its own entries.
fn decoded_path(path: &str) -> std::borrow::Cow<'_, [u8]> {
    if !path.contains('%') {
        return path.as_bytes().into();
    }
    crate::escape::percent_decoded(path.as_bytes(), false, b"").into()
}

impl Core {
    /// Moves `path` to a new generation (see [`invalidate_path`]); 1 if it had one (an entry
    /// was stored there lately), else 0.
    pub(crate) async fn invalidate_path(&self, path: &str) -> Result<u64> {
        // Unknown: the path moved, but whether it had a generation is not known.
        let old = self.move_path(path).await?.was()?;
        Ok(u64::from(old.is_some()))
    }

    /// Moves `path` to a new generation; what it replaced (counted if it was one).
    pub(crate) async fn move_path(&self, path: &str) -> Result<Replaced> {
        // A query is not part of a path: every query of the path goes.
        let path = path.split_once('?').map_or(path, |(path, _)| path);
        let gen_key = self.group_key(&path_tag(path));
        // The new generation must outlive any fill that read the old one (or none).
        let ttl = self.config.max_fill_time();
        let timeout = Some(self.config.op_timeout());
        let moved = self
            .op_invalidation(timeout, self.backend.regenerate(&gen_key, Some(ttl)))
            .await;
        self.local_changed(&gen_key);
        let moved = moved?;
        if let Replaced::Was(Some(_)) = moved {
            self.record(None, Event::Invalidations(1));
        }
        Ok(moved)
    }
}

impl Cache {
    /// Retires every cached response of `path` in this cache: all its queries and
    /// variants, under every prefix (see [`invalidate_path`]).
    ///
    /// # Errors
    ///
    /// When the store fails. Also when the connection dropped after Redis ran the
    /// invalidation, before its reply arrived: the path moved, but whether it had entries
    /// is unknown.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> redcache::Result<()> {
    /// let cache = redcache::Cache::memory();
    /// cache.invalidate_path("/products/42").await?;
    /// # Ok(()) }
    /// ```
    pub async fn invalidate_path(&self, path: &str) -> Result<u64> {
        self.core().invalidate_path(path).await
    }
}

/// Retires every cached response of `path` (`/products/42`: all its queries and variants,
/// for every host, under every layer's prefix) in the cache in use here (scoped, else
/// global), in every process that shares the store. A query in `path` is ignored. Returns
/// 1 if responses of the path were cached lately, else 0.
///
/// `path` is the whole path a client asks for (with the prefixes of `Router::nest`), as
/// a client sends it: percent-encoded where it must be (`/items/100%25`). Paths are
/// compared decoded, as a handler reads them, so `/products/%34%32` and `/products/42` are
/// one path, and so are `/files/a%2Fb` and `/files/a/b` (a wildcard capture reads both as
/// `a/b`).
///
/// A response the handler was computing when this ran is not stored afterwards.
///
/// # Errors
///
/// [`Error::NotInitialized`](crate::Error::NotInitialized) without a cache; the store's
/// error when it fails.
///
/// # Examples
///
/// ```no_run
/// # async fn f() -> redcache::Result<()> {
/// // After `UPDATE products SET .. WHERE id = 42`:
/// redcache::http::invalidate_path("/products/42").await?;
/// # Ok(()) }
/// ```
pub async fn invalidate_path(path: &str) -> Result<u64> {
    current()?.invalidate_path(path).await
}

/// A [`tower_layer::Layer`] for write routes: after a `2xx` or `3xx` response to a request of
/// an unsafe method (`POST`, `PUT`, `PATCH`, `DELETE`, ..), it retires the cached responses
/// of the paths and the `#[cached]` entries and responses of the groups it names, before the
/// response is returned, so the client's next read sees the write. A request of a safe
/// method (`GET`, `HEAD`, `OPTIONS`, `TRACE`) writes nothing, and retires nothing (RFC 9111
/// § 4.4): the layer may sit over reads and writes alike.
/// A request dropped while its handler runs (a client gone, a timeout around the route),
/// or whose handler panics, has them made too, on redcache's own runtime, as a `#[evicts]`
/// call has: the write may have been made.
/// A failed invalidation is logged and counted; the response is returned all the same,
/// and one that failed because Redis could not be reached is tried again in the
/// background until it lands (as for `#[evicts]`: see the README).
///
/// # Examples
///
/// ```
/// use axum::{routing::put, Router};
/// use redcache::http::EvictLayer;
///
/// async fn update_product() -> &'static str {
///     "ok"
/// }
///
/// let app: Router = Router::new()
///     .route("/products/{id}", put(update_product))
///     // PUT /products/42 retires GET /products/42, GET /products?.., and the group.
///     .route_layer(EvictLayer::new().own_path().path("/products").group("products"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct EvictLayer {
    evicts: Arc<Evicts>,
}

#[derive(Debug, Clone, Default)]
struct Evicts {
    paths: Vec<String>,
    groups: Vec<String>,
    tags: Tags,
    own_path: bool,
    cache: Option<Cache>,
}

impl EvictLayer {
    /// A layer that evicts nothing yet.
    ///
    /// # Examples
    ///
    /// ```
    /// let layer = redcache::http::EvictLayer::new().own_path();
    /// ```
    pub fn new() -> Self {
        EvictLayer::default()
    }

    fn with(mut self, change: impl FnOnce(&mut Evicts)) -> Self {
        change(Arc::make_mut(&mut self.evicts));
        self
    }

    /// Also retires the responses of `path`.
    ///
    /// # Examples
    ///
    /// ```
    /// let layer = redcache::http::EvictLayer::new().path("/products");
    /// ```
    pub fn path(self, path: impl Into<String>) -> Self {
        let path = path.into();
        self.with(|e| e.paths.push(path))
    }

    /// Also retires `group` (as `redcache::invalidate_group`).
    ///
    /// # Examples
    ///
    /// ```
    /// let layer = redcache::http::EvictLayer::new().group("products");
    /// ```
    ///
    /// # Panics
    ///
    /// When `group` is no group's name (empty, or with control characters or braces).
    pub fn group(self, group: impl Into<String>) -> Self {
        let group = group.into();
        if let Some(problem) = key::group_problem(&group) {
            panic!("EvictLayer::group({group:?}): {problem}");
        }
        self.with(|e| e.groups.push(group))
    }

    /// Also retires the responses of the request's own path (`PUT /products/42` retires
    /// `GET /products/42`): the whole path the client asked for, also under
    /// `Router::nest` (axum's `OriginalUri`).
    ///
    /// # Examples
    ///
    /// ```
    /// let layer = redcache::http::EvictLayer::new().own_path();
    /// ```
    pub fn own_path(self) -> Self {
        self.with(|e| e.own_path = true)
    }

    /// Also retires every entry carrying `tag` (of `#[cached(tags(..))]` functions and of
    /// `CacheLayer::tag`/`tags_from` routes). May be given several times.
    ///
    /// # Examples
    ///
    /// ```
    /// let layer = redcache::http::EvictLayer::new().tag("catalogue");
    /// ```
    pub fn tag(self, tag: impl Into<String>) -> Self {
        let tag = tag.into();
        self.with(|e| e.tags.fixed.push(tag))
    }

    /// Also retires every entry carrying one of the tags `tags` makes from the request
    /// (`PUT /users/42` → `user:42`). The URI is the one the client sent, as
    /// [`CacheLayer::tags_from`] sees it.
    ///
    /// # Examples
    ///
    /// ```
    /// let layer = redcache::http::EvictLayer::new().tags_from(|request| {
    ///     let id = request.uri.path().trim_start_matches("/users/");
    ///     vec![format!("user:{id}")]
    /// });
    /// ```
    pub fn tags_from(
        self,
        tags: impl Fn(&http::request::Parts) -> Vec<String> + Send + Sync + 'static,
    ) -> Self {
        self.with(|e| e.tags.from = Some(Arc::new(tags)))
    }

    /// Invalidates in `cache` rather than in the cache in use where requests are handled.
    ///
    /// # Examples
    ///
    /// ```
    /// let layer = redcache::http::EvictLayer::new().cache(redcache::Cache::memory());
    /// ```
    pub fn cache(self, cache: Cache) -> Self {
        self.with(|e| e.cache = Some(cache))
    }
}

impl<S> Layer<S> for EvictLayer {
    type Service = EvictService<S>;

    fn layer(&self, inner: S) -> EvictService<S> {
        EvictService {
            inner,
            evicts: self.evicts.clone(),
        }
    }
}

/// The service [`EvictLayer`] wraps a route in.
#[derive(Debug, Clone)]
pub struct EvictService<S> {
    inner: S,
    evicts: Arc<Evicts>,
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for EvictService<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send,
    ReqB: Send + 'static,
    ResB: Send + 'static,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = BoxFuture<std::result::Result<Response<ResB>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqB>) -> Self::Future {
        if request.method().is_safe() {
            return Box::pin(self.inner.call(request));
        }
        let own_path = self
            .evicts
            .own_path
            .then(|| target(&request).path().to_owned());
        let (request, tags) = self.evicts.tags.of(request);
        let evicts = self.evicts.clone();
        let response = self.inner.call(request);
        Box::pin(async move {
            // Armed before the handler first runs, with the cache in use where the request
            // is handled (a scoped one cannot be found again from a drop): made if the
            // request is dropped before the handler answers.
            let pending = evicts
                .cache
                .clone()
                .or_else(Cache::current)
                .map(|cache| EvictIfDropped::arm(cache, targets(&evicts, own_path, tags)));
            let response = response.await;
            evict_after(
                pending,
                response.as_ref().is_ok_and(|r| is_a_write(r.status())),
            )
            .await;
            response
        })
    }
}

/// A write route's targets: its paths (and the request's own), groups and tags.
fn targets(evicts: &Evicts, own_path: Option<String>, tags: Vec<String>) -> Vec<Target> {
    let paths = evicts
        .paths
        .iter()
        .cloned()
        .chain(own_path)
        .map(Target::Path);
    let groups = evicts.groups.iter().cloned().map(Target::Group);
    let tags = tags.into_iter().map(Target::Tag);
    paths.chain(groups).chain(tags).collect()
}

/// After a write's handler answered: makes the evictions `pending` holds if its answer
/// says it `wrote` ([`is_a_write`], or for a cached `POST` `Settings::posted_wrote`), else
/// drops them. Failures are logged and counted, and those that failed because Redis could
/// not be reached are tried again (see `Core::evict_all`). `pending` is `None` where no
/// cache is set up.
async fn evict_after(pending: Option<EvictIfDropped>, wrote: bool) {
    match pending {
        Some(pending) if wrote => evict_armed(pending).await,
        Some(pending) => {
            pending.disarm();
        }
        None if wrote => warn_not_initialized(),
        None => {}
    }
}

/// Whether a write's handler answering `status` made its write: any status but an error
/// (RFC 9111 § 4.4): a `303 See Other` after a form's `POST` is a write that succeeded.
fn is_a_write(status: StatusCode) -> bool {
    !status.is_client_error() && !status.is_server_error()
}

/// Makes the evictions `pending` holds, to the end even if the client goes away
/// meanwhile: the write is made.
async fn evict_armed(pending: EvictIfDropped) {
    let (cache, targets) = pending.disarm();
    crate::invalidate::to_the_end(async move { cache.core().evict_all(targets).await }).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};
    use std::convert::Infallible;
    use std::future::{ready, Ready};

    /// A body that tells nothing of its length or end, as a middleware's wrapper may.
    fn no_hints() -> impl HttpBody<Data = Bytes> {
        http_body_util::StreamBody::new(futures_util::stream::empty::<
            std::result::Result<http_body::Frame<Bytes>, Infallible>,
        >())
    }

    #[test]
    fn a_get_has_a_body_when_its_headers_say_so() {
        let request = |headers: &[(&str, &str)], body: &'static str| {
            let mut request = Request::get("/")
                .body(Full::new(Bytes::from(body)))
                .unwrap();
            for (name, value) in headers {
                request.headers_mut().insert(
                    HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    HeaderValue::from_str(value).unwrap(),
                );
            }
            request
        };
        assert!(!bodied(&request(&[], "")));
        assert!(!bodied(&request(&[("content-length", "0")], "")));
        assert!(bodied(&request(&[("content-length", "5")], "")));
        assert!(bodied(&request(&[("transfer-encoding", "chunked")], "")));
        assert!(!bodied(&request(&[("content-length", "00")], "")));
        // A body of known length (HTTP/2 needs no header).
        assert!(bodied(&request(&[], "shoes")));
        // A body that tells nothing of its length or end (a middleware's wrapper).
        let unknown = Request::get("/").body(no_hints()).unwrap();
        assert!(!bodied(&unknown));
        // Over HTTP/2, a stream that has not ended carries one.
        let mut h2 = Request::get("/").body(no_hints()).unwrap();
        *h2.version_mut() = http::Version::HTTP_2;
        assert!(bodied(&h2));
        let mut ended = request(&[], "");
        *ended.version_mut() = http::Version::HTTP_2;
        assert!(!bodied(&ended));
        // Or that says it has no length.
        let mut empty = Request::get("/")
            .header("content-length", "0")
            .body(no_hints())
            .unwrap();
        *empty.version_mut() = http::Version::HTTP_2;
        assert!(!bodied(&empty), "its declared length settles it");
    }

    #[test]
    fn a_part_is_a_range_of_a_get_other_than_the_whole() {
        let get = |range: &str| Request::get("/").header("range", range).body(()).unwrap();
        assert!(partial(&get("bytes=0-3")));
        assert!(partial(&get("items=0-3")));
        assert!(!partial(&get("bytes=0-")));
        assert!(!partial(&get(" Bytes=0- ")));
        assert!(!partial(&Request::get("/").body(()).unwrap()));
        let head = Request::head("/")
            .header("range", "bytes=0-3")
            .body(())
            .unwrap();
        assert!(!partial(&head));
    }

    /// Answers every request with `status` and `body`, and notes the methods it was asked
    /// with.
    #[derive(Clone)]
    struct Answers {
        status: StatusCode,
        body: &'static str,
        methods: Arc<std::sync::Mutex<Vec<Method>>>,
    }

    impl Answers {
        fn new(status: StatusCode, body: &'static str) -> Self {
            let methods = Arc::default();
            Answers {
                status,
                body,
                methods,
            }
        }
    }

    impl Service<Request<Full<Bytes>>> for Answers {
        type Response = Response<Full<Bytes>>;
        type Error = Infallible;
        type Future = Ready<std::result::Result<Self::Response, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::result::Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: Request<Full<Bytes>>) -> Self::Future {
            self.methods.lock().unwrap().push(request.method().clone());
            let mut response = Response::new(Full::from(self.body));
            *response.status_mut() = self.status;
            ready(Ok(response))
        }
    }

    #[tokio::test]
    async fn a_head_miss_is_the_handlers_and_a_hit_has_no_body() {
        let handler = Answers::new(StatusCode::OK, "found");
        let mut service = CacheLayer::new()
            .cache(Cache::memory())
            .layer(handler.clone());
        let head = || Request::head("/page").body(Full::default()).unwrap();
        // A miss: the handler is asked the `HEAD` itself, and nothing is stored. What it
        // answers goes without a body (it gave one), its length said.
        let response = service.call(head()).await.unwrap();
        assert_eq!(response.headers()[X_CACHE], "MISS");
        assert_eq!(response.headers()[header::CONTENT_LENGTH], "5");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert!(body.is_empty(), "{body:?}");
        let get = Request::get("/page").body(Full::default()).unwrap();
        let response = service.call(get).await.unwrap();
        assert_eq!(
            response.headers()[X_CACHE],
            "MISS",
            "the HEAD stored nothing"
        );
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "found");
        assert_eq!(
            *handler.methods.lock().unwrap(),
            [Method::HEAD, Method::GET]
        );
        // A hit: the `GET` entry's headers, without its body, whatever serves it.
        let response = service.call(head()).await.unwrap();
        assert_eq!(response.headers()[X_CACHE], "HIT");
        assert_eq!(response.headers()[header::CONTENT_LENGTH], "5");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert!(body.is_empty(), "{body:?}");
        assert_eq!(handler.methods.lock().unwrap().len(), 2);
    }

    #[test]
    #[should_panic(
        expected = "CacheLayer::group(\"{products}\"): a group name has no control characters or braces"
    )]
    fn a_layer_group_no_invalidation_could_reach_is_refused() {
        let _ = CacheLayer::new().group("{products}");
    }

    #[test]
    #[should_panic(expected = "EvictLayer::group(\"\")")]
    fn an_eviction_of_an_empty_group_is_refused() {
        let _ = EvictLayer::new().group("");
    }

    #[tokio::test]
    async fn a_head_answered_no_content_says_no_length() {
        let mut service = CacheLayer::new()
            .statuses([StatusCode::OK, StatusCode::NO_CONTENT])
            .cache(Cache::memory())
            .layer(Answers::new(StatusCode::NO_CONTENT, ""));
        let head = || Request::head("/probe").body(Full::default()).unwrap();
        let response = service.call(head()).await.unwrap();
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert_eq!(response.headers()[X_CACHE], "MISS");
        assert_eq!(response.headers().get(header::CONTENT_LENGTH), None);
        // Stored by a `GET`, and a hit for the next `HEAD`.
        let get = Request::get("/probe").body(Full::default()).unwrap();
        assert_eq!(service.call(get).await.unwrap().headers()[X_CACHE], "MISS");
        let response = service.call(head()).await.unwrap();
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert_eq!(response.headers()[X_CACHE], "HIT");
        assert_eq!(response.headers().get(header::CONTENT_LENGTH), None);
    }

    #[test]
    fn paths_decode_as_routers_decode_them_but_for_slash_and_percent() {
        let cases: [(&str, &[u8]); 8] = [
            ("/products/42", b"/products/42"),
            ("/products/%34%32", b"/products/42"),
            ("/a%40b/caf%C3%A9", "/a@b/café".as_bytes()),
            ("/a%2fb", b"/a/b"),
            ("/a%2Fb", b"/a/b"),
            ("/100%25", b"/100%"),
            // Not escapes: kept as they are.
            ("/50%", b"/50%"),
            ("/%zz%4", b"/%zz%4"),
        ];
        for (path, decoded) in cases {
            assert_eq!(&*decoded_path(path), decoded, "{path}");
        }
    }
}
