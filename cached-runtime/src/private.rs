//! What `#[cached]`-generated code calls. Not public API: no stability guarantees.

use crate::cache::{Cache, InUse};
use crate::core::Core;
use crate::global::{current, warn_not_initialized};
use crate::ttl::Policy;
use crate::Config;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::time::Duration;

use crate::aside::Tracked;
use crate::key;
use crate::local::{Held, Lookup, Value};
use crate::stats::{Event, Served};
use std::sync::Arc;

pub use crate::codec::{Codec, Format, Refresh, Stamp};
pub use crate::key::{KeyArg, KeyArgs};
pub use crate::shape::{CacheValue, Found, Holds, Hooks, Opt, Outcome, Plain, Res, ResOpt, Shape};
/// A tag's text, with its arguments formatted in: generated code names only this module
/// and `::core`, never `::std` (a crate may rename or shadow it).
pub use std::format;

/// A tag's text without arguments.
pub fn owned(text: &str) -> String {
    text.to_owned()
}

/// The attribute's options for one function, as a `static`.
#[derive(Debug)]
pub struct Spec {
    /// Key prefix.
    pub prefix: &'static str,
    /// TTL in seconds; `None`: the cache's default.
    pub ttl: Option<u64>,
    /// Largest extra random seconds; `None`: a tenth of the TTL.
    pub jitter: Option<u64>,
    /// TTL of a cached `None` in seconds (0: not cached); `None`: the cache's default.
    pub null_ttl: Option<u64>,
    /// The eviction group, if any.
    pub group: Option<&'static str>,
    /// Cross-process fill lock: its lease in milliseconds, if any.
    pub lock_ms: Option<u64>,
    /// XFetch's beta, if the function refreshes early.
    pub early_refresh: Option<f64>,
    /// Seconds past its TTL an entry is served while one caller refreshes it.
    pub stale_ttl: Option<u64>,
    /// Seconds past its TTL an entry is served when the body fails.
    pub stale_if_error: Option<u64>,
    /// The codec of its entries; `None`: the cache's.
    pub codec: Option<Codec>,
    /// Entries longer than this many bytes are compressed; `None`: the cache's threshold.
    pub compress_above: Option<usize>,
}

/// Whether this build writes MessagePack: `codec = "msgpack"` asserts it at compile time.
pub const MSGPACK: bool = cfg!(feature = "msgpack");

/// Whether this build compresses: `compress_above = N` asserts it at compile time.
pub const COMPRESSION: bool = cfg!(feature = "compression");

impl Spec {
    pub(crate) fn policy(&self, config: &Config) -> Policy {
        let ttl = self.ttl.unwrap_or(config.default_ttl());
        // Unless the function says otherwise, a `None` is kept no longer than a value
        // would be: `ttl = 5` means five seconds old at most, whatever the call returned.
        let null_ttl = self
            .null_ttl
            .unwrap_or_else(|| config.default_null_ttl().min(ttl));
        let policy = match self.jitter {
            Some(jitter) => Policy::seconds(ttl, jitter, null_ttl),
            None => Policy::seconds(ttl, 0, null_ttl).with_default_jitter(),
        };
        policy
            .with_lock(self.lock_ms.map(Duration::from_millis))
            .with_early_refresh(self.early_refresh)
            .with_stale(self.stale_ttl, self.stale_if_error)
            .with_format(config.format().with_own(self.codec, self.compress_above))
    }
}

/// One call of a `#[cached]` function, as far as the cache is concerned: its options and
/// its key material. `#[cached]` builds one for every call; `invalidate!`, `put!`, `key!`
/// and `#[evicts]` build one through the companion function the attribute emits, with the
/// same code, so the helpers can never derive another key.
pub struct Call<K, O> {
    spec: &'static Spec,
    args: KeyArgs,
    hooks: Hooks<O>,
    local: Option<LocalOps<O>>,
    /// `tags(..)`: the call's tags, built from its arguments.
    tags: Vec<String>,
    kind: PhantomData<fn() -> K>,
}

/// How the local tier keeps and hands out a function's results: only for a stored value
/// that is `Clone + Send + Sync + 'static` (see [`ViaClone`]).
pub struct LocalOps<O> {
    keep: fn(&O) -> Option<Value>,
    load: fn(&Value) -> Option<O>,
    null: fn() -> Option<O>,
}

impl<O> Clone for LocalOps<O> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<O> Copy for LocalOps<O> {}

impl<O> fmt::Debug for LocalOps<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalOps").finish_non_exhaustive()
    }
}

/// Asks, at compile time, whether a function's stored value can be kept in the local tier
/// (autoref specialization: `(&Probe::<K, O>::new()).local_ops()` finds [`ViaClone`] when
/// the value is `Clone + Send + Sync + 'static`, and [`NotLocal`] otherwise, including in a
/// generic function whose bounds do not say so).
pub struct Probe<K, O>(PhantomData<fn() -> (K, O)>);

impl<K, O> fmt::Debug for Probe<K, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Probe")
    }
}

impl<K, O> Probe<K, O> {
    /// The probe of a function of shape `K` returning `O`.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Probe(PhantomData)
    }
}

/// The local tier may keep the value: it is cloned out of the tier on each hit.
pub trait ViaClone<O> {
    /// How to keep and hand out the value.
    fn local_ops(&self) -> Option<LocalOps<O>>;
}

impl<K, O> ViaClone<O> for Probe<K, O>
where
    K: Holds<O>,
    K::Value: Clone + Send + Sync + 'static,
{
    fn local_ops(&self) -> Option<LocalOps<O>> {
        Some(LocalOps {
            keep: |out| K::value(out).map(|v| Arc::new(v.clone()) as Value),
            load: |held| held.downcast_ref::<K::Value>().cloned().map(K::wrap),
            null: K::null,
        })
    }
}

/// Asks, at compile time, whether a function the macro reads as returning a plain value
/// returns a `Result` after all, through a type alias (`type Answer = Result<u32,
/// MyError>`): its `Err` is then never cached either (autoref specialization, as for
/// [`Probe`]: `(&ErrProbe::<O>::new()).errs()` finds [`IsResult`] for a `Result`).
pub struct ErrProbe<O>(PhantomData<fn() -> O>);

impl<O> fmt::Debug for ErrProbe<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ErrProbe")
    }
}

impl<O> ErrProbe<O> {
    /// The probe of a function returning `O`.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        ErrProbe(PhantomData)
    }
}

/// The output is a `Result`: its `Err` is a failure, never cached.
pub trait IsResult<O> {
    /// Whether an output is a failure.
    fn errs(&self) -> Option<fn(&O) -> bool>;
}

impl<T, E> IsResult<Result<T, E>> for ErrProbe<Result<T, E>> {
    fn errs(&self) -> Option<fn(&Result<T, E>) -> bool> {
        Some(Result::is_err)
    }
}

/// Any other output: nothing about it is a failure.
pub trait NotResult<O> {
    /// Nothing.
    fn errs(&self) -> Option<fn(&O) -> bool>;
}

impl<O> NotResult<O> for &ErrProbe<O> {
    fn errs(&self) -> Option<fn(&O) -> bool> {
        None
    }
}

/// Asks, at compile time, whether a key argument is a std `HashSet` whatever it is called
/// (an alias such as `type Ids = HashSet<u64>`, a renamed import, `FxHashSet`), which the
/// attribute's check of the written type cannot see: a set lists its items in an order of
/// its own, so equal sets would get different keys. `(&SetProbe::of(&arg)).order()` finds
/// [`IsHashSet`] for a `HashSet` (by reference or not, or in an `Option`, a `Box`, an `Arc`,
/// an `Rc`, a `Vec` or a slice), and
/// [`NotHashSet`] otherwise, including a type parameter; [`ordered`] then refuses
/// [`Unordered`] with a compile error at the argument.
pub struct SetProbe<T: ?Sized>(PhantomData<fn() -> *const T>);

impl<T: ?Sized> fmt::Debug for SetProbe<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SetProbe")
    }
}

impl<T: ?Sized> SetProbe<T> {
    /// The probe of `arg`'s type.
    pub fn of(_arg: &T) -> Self {
        SetProbe(PhantomData)
    }
}

/// The argument is a `HashSet`.
#[derive(Debug)]
pub struct Unordered;

/// The argument is not a `HashSet`.
#[derive(Debug)]
pub struct Ordered;

/// A `HashSet`, in one of the forms [`SetProbe`] finds.
pub trait IsHashSet {
    /// [`Unordered`].
    fn order(&self) -> Unordered {
        Unordered
    }
}

/// The forms a set is passed in: itself, by reference, in an `Option` (of either), in a
/// box or a shared pointer, in a `Vec` or a slice.
macro_rules! hash_sets {
    ($($form:ty),* $(,)?) => {
        $(impl<T, S> IsHashSet for SetProbe<$form> {})*
    };
}

use std::collections::HashSet;

hash_sets! {
    HashSet<T, S>,
    &HashSet<T, S>,
    &mut HashSet<T, S>,
    Option<HashSet<T, S>>,
    Option<&HashSet<T, S>>,
    &Option<HashSet<T, S>>,
    Box<HashSet<T, S>>,
    std::sync::Arc<HashSet<T, S>>,
    std::rc::Rc<HashSet<T, S>>,
    Vec<HashSet<T, S>>,
    &Vec<HashSet<T, S>>,
    &[HashSet<T, S>],
}

/// Anything else.
pub trait NotHashSet {
    /// [`Ordered`].
    fn order(&self) -> Ordered {
        Ordered
    }
}

impl<T: ?Sized> NotHashSet for &SetProbe<T> {}

/// What a key argument's order may be.
#[diagnostic::on_unimplemented(
    message = "a `HashSet` cannot be part of a key",
    label = "a `HashSet` (under another name)",
    note = "a `HashSet` lists its items in an order of its own, which differs between equal \
            sets, so equal arguments would get different keys (and `invalidate!` would miss)",
    note = "take a `BTreeSet` or a sorted `Vec`, or give `key = ..` or `skip(..)`"
)]
pub trait KeyOrder {}

impl KeyOrder for Ordered {}

/// Compiles only for a key argument that is not a `HashSet` ([`SetProbe`]).
#[inline(always)]
pub fn ordered<O: KeyOrder>(_order: O) {}

/// The value cannot be kept in the local tier: the function reads Redis each time.
pub trait NotLocal<O> {
    /// Nothing.
    fn local_ops(&self) -> Option<LocalOps<O>>;
}

impl<K, O> NotLocal<O> for &Probe<K, O> {
    fn local_ops(&self) -> Option<LocalOps<O>> {
        None
    }
}

impl<K, O> fmt::Debug for Call<K, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call")
            .field("spec", &self.spec)
            .field("args", &self.args)
            .finish()
    }
}

impl<K, O> Call<K, O> {
    /// The call of the function described by `spec` with key material `args`.
    pub fn new(spec: &'static Spec, args: KeyArgs) -> Self {
        Call {
            spec,
            args,
            hooks: Hooks::none(),
            local: None,
            tags: Vec::new(),
            kind: PhantomData,
        }
    }

    /// `tags(..)`: the tags of this call's entry.
    pub fn tags<const N: usize>(mut self, tags: [String; N]) -> Self {
        self.tags = tags.into();
        self
    }

    /// How the local tier keeps this function's values, if it can.
    pub fn local(mut self, ops: Option<LocalOps<O>>) -> Self {
        self.local = ops;
        self
    }

    /// `ttl = f`: the TTL computed from the result (`None`: the function's TTL).
    pub fn ttl_with(mut self, ttl: fn(&O) -> Option<Duration>) -> Self {
        self.hooks.ttl = Some(ttl);
        self
    }

    /// Which outputs are failures, never cached (and answered from a stale entry under
    /// `stale_if_error`), where the shape does not say: a `Result` behind a type alias.
    pub fn errs(mut self, errs: Option<fn(&O) -> bool>) -> Self {
        self.hooks.failed = errs;
        self
    }

    /// `cache_if = f`: whether a result is cached.
    pub fn cache_if(mut self, cache_if: fn(&O) -> bool) -> Self {
        self.hooks.cache_if = Some(cache_if);
        self
    }

    pub(crate) fn spec(&self) -> &'static Spec {
        self.spec
    }

    /// The entry's key in a cache with `namespace`.
    pub(crate) fn key(self, namespace: Option<&str>) -> crate::Result<String> {
        self.args.key(namespace, self.spec.prefix, self.spec.group)
    }
}

/// A function returning `T`.
pub fn plain<T, F>(call: Call<Plain, T>, body: F) -> impl Future<Output = T>
where
    T: CacheValue,
    F: Future<Output = T>,
{
    run(call, body)
}

/// A function returning `Option<T>`.
pub fn option<T, F>(call: Call<Opt, Option<T>>, body: F) -> impl Future<Output = Option<T>>
where
    T: CacheValue,
    F: Future<Output = Option<T>>,
{
    run(call, body)
}

/// A function returning `Result<T, E>`.
pub fn result<T, E, F>(call: Call<Res, Result<T, E>>, body: F) -> impl Future<Output = Result<T, E>>
where
    T: CacheValue,
    F: Future<Output = Result<T, E>>,
{
    run(call, body)
}

/// A function returning `Result<Option<T>, E>`.
pub fn result_option<T, E, F>(
    call: Call<ResOpt, Result<Option<T>, E>>,
    body: F,
) -> impl Future<Output = Result<Option<T>, E>>
where
    T: CacheValue,
    F: Future<Output = Result<Option<T>, E>>,
{
    run(call, body)
}

/// Runs one cached call. The four entry points above name `T: CacheValue` themselves, so
/// a type that cannot be cached is reported as such, at the return type.
async fn run<K, O, F>(call: Call<K, O>, body: F) -> O
where
    K: Shape<O>,
    F: Future<Output = O>,
{
    // Pinned here, once: the call's own future holds the body, and what it awaits gets a
    // pointer to it, so a hit never copies the body's future (a database query's can be
    // large) on its way down.
    let mut body = std::pin::pin!(body);
    let spec = call.spec();
    let hooks = call.hooks;
    let material = match call.args.material() {
        Ok(material) => material,
        Err(err) => {
            // Nothing is read or written for it (not a miss).
            match Cache::in_use() {
                Some(cache) => cache.core().fault(spec.prefix, &err),
                None => {
                    warn_not_initialized();
                    return body.await;
                }
            }
            // Its span has no key to show.
            let span = call_span(spec.prefix);
            span.record("result", Served::Fault.as_str());
            return in_span!(&span, body);
        }
    };
    // With `metrics`, the call is timed from here, and the same instant starts its first
    // read's fill deadline (tokio's clock: std's, unless a test pauses it).
    #[cfg(feature = "metrics")]
    let started = tokio::time::Instant::now();
    let lookup = Lookup {
        function: spec as *const Spec as usize,
        material: &material,
    };
    // The local tier: for values it can clone, and not for early refresh, `stale_ttl` or
    // `stale_if_error`, which decide from the entry's expiry on each read (their entries
    // outlive the TTL in Redis, and so would a copy), nor for tagged calls, whose
    // entries a tag's invalidation retires without touching their keys. Its hits borrow
    // the cache in use: they never wait, and so never hold it across an await.
    let ops = match call.local {
        Some(ops)
            if spec.early_refresh.is_none()
                && spec.stale_ttl.is_none()
                && spec.stale_if_error.is_none()
                && call.tags.is_empty() =>
        {
            Some(ops)
        }
        _ => None,
    };
    let in_use = match ops {
        Some(ops) => {
            // A local hit never waits, so it spends the task's budget itself, and a task
            // looping on hits yields to the scheduler (and its timers) now and then. Spent
            // before the tier is asked: a call dropped at that yield has counted nothing.
            tokio::task::consume_budget().await;
            Cache::answer_or_in_use(|cache| {
                local_hit(
                    cache.core(),
                    spec,
                    ops,
                    lookup,
                    #[cfg(feature = "metrics")]
                    started,
                )
            })
        }
        None => Err(Cache::in_use()),
    };
    let cache = match in_use {
        Ok(out) => return out,
        Err(Some(cache)) => cache,
        Err(None) => {
            warn_not_initialized();
            return body.await;
        }
    };
    let core = cache.core();
    let local = core.backend.local_tier().zip(ops);
    // Without `metrics`, only a call that reads the store needs the instant.
    #[cfg(not(feature = "metrics"))]
    let started = tokio::time::Instant::now();
    let key = key::derive_key(core.config.namespace(), spec.prefix, spec.group, &material);
    // One span per call (nearly free when no subscriber wants `debug`): the prefix, the
    // key's hash (never its arguments) and how it was answered.
    let span = call_span(spec.prefix);
    if !span.is_disabled() {
        span.record("key.hash", key_hash(&key));
    }
    // A tagged call reads its tags' generations first. If it cannot (the store is likely
    // out), it reads and stores nothing, but still shares one body run with the calls like
    // it, as an untagged call in an outage does: those of its key whose tags could not be
    // read either (a call that read them stamps its result with generations this one
    // cannot check), in a flight of their own.
    let tags = match call.tags.is_empty() {
        true => Some(0),
        // Boxed: only tagged calls take it, and inline it would size every call's future.
        false => match in_span!(&span, Box::pin(core.tag_digest(&call.tags))) {
            Ok(digest) => Some(digest),
            Err(err) => {
                core.fault(&key, &err);
                None
            }
        },
    };
    let unread_key;
    let flight_key = match tags {
        Some(_) => &key,
        None => {
            unread_key = unread_flight_key(&key);
            &unread_key
        }
    };
    let gen_key = spec.group.map(|g| core.group_key(g));
    let policy = spec.policy(&core.config);
    // Taken before the read is sent: a push for the key that arrives after it retires
    // whatever the read brings.
    let mark = local.map(|(tier, _)| tier.mark(&key, gen_key.as_deref()));
    let tracked = Tracked::default();
    let (out, served) = in_span!(
        &span,
        core.get_or_run::<K, O, _>(
            Some(spec.prefix),
            flight_key,
            gen_key.as_deref(),
            &policy,
            hooks,
            local.map(|_| &tracked),
            Some(started),
            (tags, &call.tags),
            body.as_mut(),
        )
    );
    span.record("result", served.as_str());
    #[cfg(feature = "metrics")]
    crate::metrics::call(spec.prefix, served, started);
    // A hit read from Redis is kept locally (a miss's own fill is not: Redis pushes the
    // invalidation of this process's own write, and the next read brings it back).
    if let (Some((tier, ops)), Some(mark), Some((left, bytes))) = (local, mark, tracked.left()) {
        let value = match served {
            Served::Hit => (ops.keep)(&out).map(Some),
            Served::NullHit => Some(None),
            _ => None,
        };
        if let Some(value) = value {
            tier.insert(lookup, value, bytes, mark, left);
        }
    }
    out
}

/// The call's value from the local tier of `core`, if it holds a good copy: recorded as a
/// local hit (stats, span, metrics).
fn local_hit<O>(
    core: &Core,
    spec: &'static Spec,
    ops: LocalOps<O>,
    lookup: Lookup<'_>,
    #[cfg(feature = "metrics")] started: tokio::time::Instant,
) -> Option<O> {
    let (out, null) = core
        .backend
        .local_tier()?
        .get(lookup, std::time::Instant::now())
        .and_then(|held| match held {
            Held::Value(value) => (ops.load)(&value).map(|out| (out, false)),
            Held::Null => (ops.null)().map(|out| (out, true)),
        })?;
    core.record(Some(spec.prefix), Event::LocalHit { null });
    let span = call_span(spec.prefix);
    if !span.is_disabled() {
        let key = key::derive_key(
            core.config.namespace(),
            spec.prefix,
            spec.group,
            lookup.material,
        );
        span.record("key.hash", key_hash(&key));
        span.record("result", Served::LocalHit.as_str());
    }
    #[cfg(feature = "metrics")]
    crate::metrics::call(spec.prefix, Served::LocalHit, started);
    Some(out)
}

/// The flight of the calls of `key` whose tags could not be read: never read or written
/// (it is no key of the store), apart from the flight of `key` itself. (The tags are made
/// of the key's arguments: calls of one key carry the same.)
fn unread_flight_key(key: &str) -> String {
    format!("{key}?unread")
}

/// The span of one call, its key's hash and result recorded later.
fn call_span(prefix: &'static str) -> tracing::Span {
    tracing::debug_span!(
        "redcache.call",
        prefix,
        key.hash = tracing::field::Empty,
        result = tracing::field::Empty,
    )
}

/// The md5 part of a key.
fn key_hash(key: &str) -> &str {
    key.rsplit_once(':').map_or(key, |(_, hash)| hash)
}

/// `invalidate!(f(..))`: replaces the call's entry with a tombstone; whether there was one.
pub async fn invalidate<K, O>(call: Call<K, O>) -> crate::Result<bool> {
    let cache = current()?;
    let core = cache.core();
    let key = call.key(core.config.namespace())?;
    core.invalidate_key(&key).await
}

/// `put!(f(..), value)`: stores `value` as the call's result, under the function's TTL,
/// jitter and null rules; if it cannot, retires the entry and returns why. Dropped before
/// it is done (a client gone, a `timeout` around the caller), it retires the entry on a
/// task of its own: the write it follows was made, and the value it was to replace must
/// not be served on.
pub async fn put<K: Shape<O>, O>(mut call: Call<K, O>, value: O) -> crate::Result<()> {
    let cache = current()?;
    let core = cache.core();
    let spec = call.spec();
    let hooks = call.hooks;
    let policy = spec.policy(&core.config);
    let tags = std::mem::take(&mut call.tags);
    let key = call.key(core.config.namespace())?;
    let mut unfinished = RetireIfDropped {
        core,
        key: Some(&key),
        prefix: spec.prefix,
    };
    let put = async {
        let tags = match tags.is_empty() {
            true => 0,
            false => match core.tag_digest(&tags).await {
                Ok(digest) => digest,
                // Without the generations the value cannot be stamped, nor stored.
                Err(err) => return core.retire_instead(&key, &key, err).await,
            },
        };
        core.put::<K, O>(
            Some(spec.prefix),
            &key,
            spec.group,
            tags,
            &policy,
            hooks,
            &value,
        )
        .await
    };
    let done = put.await;
    unfinished.key = None;
    done
}

/// A `put!` under way: dropped before it is done (its `key` still there), it retires the
/// entry at `key` on redcache's own runtime, as an eviction (tried again while Redis is
/// out of reach).
struct RetireIfDropped<'a> {
    core: &'a Arc<Core>,
    key: Option<&'a str>,
    prefix: &'static str,
}

impl Drop for RetireIfDropped<'_> {
    fn drop(&mut self) {
        use tracing::instrument::WithSubscriber;
        let Some(key) = self.key else {
            return;
        };
        let core = self.core.clone();
        let target = crate::invalidate::Target::Key {
            key: key.to_owned(),
            prefix: self.prefix,
        };
        let retire = async move { core.evict_all(vec![target]).await };
        crate::store::background().spawn(retire.with_current_subscriber());
    }
}

/// `key!(f(..))`: the call's key in the cache in use (its namespace), else without one.
///
/// # Panics
///
/// When the key material cannot be serialized (a map with keys that are not strings or
/// numbers, a NaN or infinite float, an object with two entries of one name).
pub fn key<K, O>(call: Call<K, O>) -> String {
    let cache = Cache::current();
    match call.key(cache.as_ref().and_then(|c| c.config().namespace())) {
        Ok(key) => key,
        Err(err) => panic!("redcache::key!: {err}"),
    }
}

/// The entries a `#[evicts(..)]` function removes once its body succeeded (or stopped
/// before it returned).
#[derive(Debug, Default)]
pub struct Evict {
    calls: Vec<(&'static Spec, KeyArgs)>,
    groups: Vec<&'static str>,
    tags: Vec<String>,
}

impl Evict {
    /// No targets yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the entry of one call.
    pub fn call<K, O>(mut self, call: Call<K, O>) -> Self {
        self.calls.push((call.spec, call.args));
        self
    }

    /// Adds a whole eviction group.
    pub fn group(mut self, group: &'static str) -> Self {
        self.groups.push(group);
        self
    }

    /// Adds every entry carrying `tag`.
    pub fn tag(mut self, tag: String) -> Self {
        self.tags.push(tag);
        self
    }

    /// Removes every target from `cache` (the cache in use when the call began); faults
    /// are counted and logged, never returned (those of an unreachable Redis are tried
    /// again: `Core::evict_all`): the write the body made stands either way. Done to the
    /// end even if the call is dropped meanwhile.
    async fn run(self, cache: Option<InUse>) {
        let Some(cache) = cache else {
            warn_not_initialized();
            return;
        };
        crate::invalidate::to_the_end(self.remove(cache.into_owned())).await;
    }

    /// Removes every target from `cache`.
    async fn remove(self, cache: Cache) {
        use crate::invalidate::Target;
        let core = cache.core();
        let namespace = core.config.namespace();
        let mut targets = Vec::with_capacity(self.calls.len());
        for (spec, args) in self.calls {
            match args.key(namespace, spec.prefix, spec.group) {
                Ok(key) => targets.push(Target::Key {
                    key,
                    prefix: spec.prefix,
                }),
                Err(err) => core.fault(spec.prefix, &err),
            }
        }
        for group in self.groups {
            targets.push(Target::Group(group.to_owned()));
        }
        targets.extend(self.tags.into_iter().map(Target::Tag));
        core.evict_all(targets).await;
    }
}

/// What tells a failed output, if anything does (an [`ErrProbe`]'s answer).
pub type Failure<O> = Option<fn(&O) -> bool>;

/// A `#[evicts]` function whose return type does not read as a `Result`: evicts after the
/// body, unless `errs` (an [`ErrProbe`]'s answer: the type is an alias of a `Result`)
/// says it failed (or if the call is dropped or panics before its body returns: see
/// `EvictIfDropped`).
pub async fn evict_after<O, F: Future<Output = O>>(
    (evict, errs): (Evict, Failure<O>),
    body: F,
) -> O {
    let mut running = EvictIfDropped::arm(evict);
    let out = body.await;
    let (evict, cache) = running.disarm();
    if !errs.is_some_and(|errs| errs(&out)) {
        evict.run(cache).await;
    }
    out
}

/// A `#[evicts]` function returning `Result`: evicts after an `Ok` (or if the call is
/// dropped or panics before its body returns: see `EvictIfDropped`).
pub async fn evict_on_ok<T, E, F>(evict: Evict, body: F) -> Result<T, E>
where
    F: Future<Output = Result<T, E>>,
{
    let mut running = EvictIfDropped::arm(evict);
    let out = body.await;
    let (evict, cache) = running.disarm();
    if out.is_ok() {
        evict.run(cache).await;
    }
    out
}

/// A `#[evicts]` call's targets while its body runs. Dropped with them (the call dropped
/// mid-body: a client gone, a `timeout` around it; or the body panicked), it evicts them
/// on redcache's own runtime, as [`Evict::run`] would: the write may have been made before
/// the body stopped, and an eviction too many costs misses (of every entry of a group or
/// tag target), where one too few serves what the write replaced.
struct EvictIfDropped {
    /// The targets, and the cache in use when the call began (a scoped one cannot be found
    /// again from `drop`), which they are evicted from either way.
    armed: Option<(Evict, Option<InUse>)>,
}

impl EvictIfDropped {
    fn arm(evict: Evict) -> Self {
        EvictIfDropped {
            armed: Some((evict, Cache::in_use())),
        }
    }

    /// The body has returned: the caller evicts as its result says.
    fn disarm(&mut self) -> (Evict, Option<InUse>) {
        self.armed.take().expect("disarmed once")
    }
}

impl Drop for EvictIfDropped {
    fn drop(&mut self) {
        match self.armed.take() {
            Some((evict, Some(cache))) => {
                crate::invalidate::in_background(evict.remove(cache.into_owned()));
            }
            Some((_, None)) => warn_not_initialized(),
            None => {}
        }
    }
}

/// The value `out` stores (see [`Holds`]), for the hooks generated code writes.
pub fn stored_value<K: Holds<O>, O>(out: &O) -> Option<&K::Value> {
    K::value(out)
}

/// What a helper passes for an argument written `_`: only a skipped argument takes it (it
/// is not `Serialize`, so it can never be part of a key).
#[derive(Debug, Clone, Copy)]
pub struct Skipped;

/// Names a type in the key material of a generic function.
pub fn type_name<T: ?Sized>() -> &'static str {
    core::any::type_name::<T>()
}

/// What `type_key = ..` may be: anything that reads as a string.
#[diagnostic::on_unimplemented(
    message = "`type_key` must be a string, and `{Self}` is not `AsRef<str>`",
    label = "the name this function's entries are keyed under",
    note = "write a string literal, `type_key = \"user_service\"`, or a `&str` of the type parameters, `type_key = T::NAME`"
)]
pub trait TypeKey {
    /// The name, as it goes into the key material.
    fn type_key(&self) -> &str;
}

impl<T: AsRef<str> + ?Sized> TypeKey for T {
    fn type_key(&self) -> &str {
        self.as_ref()
    }
}

/// The name `type_key = ..` gives, for the key material.
pub fn type_key<T: TypeKey + ?Sized>(name: &T) -> &str {
    name.type_key()
}

/// `args` plus the item a `#[cached]` function is defined in, unless that is its module
/// `module`: `here` is a closure written in the function's body, and rustc names a
/// closure's type by the path of the function it is in (`<Store as Repo<User>>::find`,
/// `Table<User>::load`, `outer::inner`) followed by `::{{closure}}`. A free function adds
/// nothing, so its keys are those of its arguments alone.
///
/// An impl over a closure or an async block (`Renderer<app::main::{{closure}}>`), a
/// function pointer or a `dyn Fn` has no name of its own: rustc writes every one of a
/// function or signature alike, so the call is not cached (see [`KeyArgs::ty`]).
pub fn within<F>(args: KeyArgs, _here: &F, module: &'static str) -> KeyArgs {
    match item_of(core::any::type_name::<F>(), module) {
        Some((item, true)) => args.unnamed(item),
        Some((item, false)) => args.item(item),
        None => args,
    }
}

/// Whether `item`'s type arguments name a callable with no name of its own (a closure,
/// an async block, a function pointer, a `dyn Fn`).
fn over_an_unnamed_callable(item: &str) -> bool {
    item.find('<')
        .is_some_and(|at| crate::key::names_an_unnamed_callable(&item[at..]))
}

/// The enclosing item of `closure_path` unless it is `module`, and whether it is
/// [`over_an_unnamed_callable`]: read once per thread and call site, then remembered by
/// the strings' addresses (a type name is a `'static` string, so the same address and
/// length always hold the same name).
fn item_of(closure_path: &'static str, module: &'static str) -> Option<(&'static str, bool)> {
    type Seen = (usize, usize, usize, Option<(&'static str, bool)>);
    const SLOTS: usize = 16;
    thread_local! {
        static SEEN: [std::cell::Cell<Seen>; SLOTS] =
            const { [const { std::cell::Cell::new((0, 0, 0, None)) }; SLOTS] };
    }
    let id = (
        closure_path.as_ptr() as usize,
        closure_path.len(),
        module.as_ptr() as usize,
    );
    let read = || match enclosing_item(closure_path) {
        Some(item) if item != module => Some((item, over_an_unnamed_callable(item))),
        _ => None,
    };
    SEEN.try_with(|seen| {
        let slot = &seen[(id.0 >> 3) % SLOTS];
        let (path, len, module, item) = slot.get();
        if (path, len, module) == id {
            return item;
        }
        let item = read();
        slot.set((id.0, id.1, id.2, item));
        item
    })
    .unwrap_or_else(|_| read())
}

/// The path of the item that holds the function named in `closure_path` (the function's
/// own path, then `::{{closure}}` once or more).
fn enclosing_item(closure_path: &str) -> Option<&str> {
    let mut path = closure_path;
    while let Some(rest) = path.strip_suffix("}}").and_then(before_last_braces) {
        path = rest;
    }
    last_segment_start(path).map(|at| &path[..at])
}

/// `path` before its last `::{{` (a byte scan: this runs on every call, and a substring
/// search would cost more than the rest of the key).
fn before_last_braces(path: &str) -> Option<&str> {
    let bytes = path.as_bytes();
    (4..=bytes.len())
        .rev()
        .find(|&end| &bytes[end - 4..end] == b"::{{")
        .map(|end| &path[..end - 4])
}

/// Where the last `::` outside angle brackets is (`Repo<a::B>::f` → before `::f`).
fn last_segment_start(path: &str) -> Option<usize> {
    let bytes = path.as_bytes();
    let mut depth = 0usize;
    let mut i = bytes.len();
    while i > 1 {
        i -= 1;
        match bytes[i] {
            // `->` in a function pointer type is not a bracket.
            b'>' if bytes[i - 1] != b'-' => depth += 1,
            b'<' => depth = depth.saturating_sub(1),
            b':' if depth == 0 && bytes[i - 1] == b':' => return Some(i - 1),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_item_is_remembered_per_call_site_and_stays_right() {
        let paths = [
            "app::f::{{closure}}",
            "<app::Store as app::Repo<app::User>>::find::{{closure}}",
            "app::Table<app::User>::load::{{closure}}::{{closure}}",
        ];
        for _ in 0..3 {
            for path in paths {
                let direct = enclosing_item(path).filter(|item| *item != "app");
                assert_eq!(item_of(path, "app"), direct.map(|i| (i, false)), "{path}");
            }
        }
        assert_eq!(item_of(paths[0], "app"), None);
        assert_eq!(
            item_of(paths[1], "app"),
            Some(("<app::Store as app::Repo<app::User>>", false))
        );
        assert_eq!(
            item_of(
                "app::Renderer<app::main::{{closure}}>::show::{{closure}}",
                "app"
            ),
            Some(("app::Renderer<app::main::{{closure}}>", true))
        );
    }

    #[test]
    fn an_impl_over_an_unnamed_callable_is_told_from_one_over_a_type_declared_in_one() {
        assert!(over_an_unnamed_callable(
            "app::Renderer<app::main::{{closure}}>"
        ));
        assert!(over_an_unnamed_callable(
            "<app::Table<app::f::{{closure}}> as app::Repo>"
        ));
        assert!(!over_an_unnamed_callable(
            "app::Table<app::t::{{closure}}::Row>"
        ));
        assert!(!over_an_unnamed_callable(
            "<app::t::{{closure}}::MockRepo as app::Repo>"
        ));
        assert!(!over_an_unnamed_callable("app::Table<app::Row>"));
        assert!(!over_an_unnamed_callable("app::t::{{closure}}::Store"));
        assert!(over_an_unnamed_callable(
            "app::Renderer<fn(u64) -> alloc::string::String>"
        ));
        assert!(over_an_unnamed_callable(
            "app::Renderer<alloc::boxed::Box<dyn core::ops::function::Fn(u64)>>"
        ));
        assert!(!over_an_unnamed_callable("app::Renderer<app::title>"));
    }

    #[test]
    fn the_enclosing_item_is_read_from_a_closures_path() {
        let cases = [
            (
                "app::users::find::{{closure}}::{{closure}}",
                Some("app::users"),
            ),
            (
                "app::users::__redcache_key_find::{{closure}}",
                Some("app::users"),
            ),
            (
                "<app::Store as app::Repo<app::User>>::find::{{closure}}",
                Some("<app::Store as app::Repo<app::User>>"),
            ),
            (
                "app::Table<alloc::vec::Vec<app::User>>::load::{{closure}}",
                Some("app::Table<alloc::vec::Vec<app::User>>"),
            ),
            (
                "app::Table<fn(u8) -> u8>::load<u8, 3>::{{closure}}",
                Some("app::Table<fn(u8) -> u8>"),
            ),
            (
                "app::outer::inner::{{closure}}::{{closure}}",
                Some("app::outer"),
            ),
            ("find::{{closure}}", None),
        ];
        for (path, item) in cases {
            assert_eq!(enclosing_item(path), item, "{path}");
        }
    }

    #[test]
    fn a_free_function_adds_nothing_and_an_impl_its_path() {
        fn material(args: KeyArgs) -> String {
            String::from_utf8(args.material().unwrap()).unwrap()
        }
        let here = || ();
        let module = module_path!();
        // This closure is in a function of this module: nothing is added.
        assert_eq!(
            material(within(KeyArgs::new().arg(&1), &here, module)),
            "[1]"
        );
        struct Table;
        impl Table {
            fn args() -> KeyArgs {
                within(KeyArgs::new().arg(&1), &|| (), module_path!())
            }
        }
        let item = format!(
            "{}::a_free_function_adds_nothing_and_an_impl_its_path::Table",
            module_path!()
        );
        let mut expected = vec![0, b'i'];
        expected.extend_from_slice(&(item.len() as u64).to_le_bytes());
        expected.extend_from_slice(item.as_bytes());
        expected.push(0);
        expected.extend_from_slice(b"[1]");
        assert_eq!(Table::args().material().unwrap(), expected);
    }
}
