//! Cache-aside, one call at a time: read, and on a miss single flight, the cross-process
//! lease if the function takes one, the body, and the fenced write; an early refresh runs
//! the same way. `#[cached]`, `get_or_insert_with` and (next) the HTTP layer all go
//! through [`Core::get_or_run`].
//!
//! The steps live beside this file: [`read`] (what a read saw and what it means: hit,
//! early refresh or miss), [`fill`] (storing a result behind the fence, and what waiters
//! may take), [`lease`] (the cross-process lock).

mod fill;
mod lease;
mod read;

use self::lease::{Lease, Locked};
use self::read::{Examined, Read, Stale};
use crate::core::Core;
use crate::flight::{self, Followed, Leader, Role, Shared};
use crate::shape::{Found, Hooks, Shape};
use crate::stats::{Event, Served};
use crate::store::Store as _;
use crate::ttl::unix_ms;
use crate::ttl::Policy;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;

/// How a call that runs its body after `read` is answered.
fn missed(read: &Read) -> Served {
    match read.unavailable() {
        true => Served::Fault,
        false => Served::Miss,
    }
}

/// The entry a call is about: its key, its group's generation key, and its function's
/// policy. They travel together through every step.
#[derive(Clone, Copy)]
pub(crate) struct Entry<'a> {
    /// The function's prefix (what stats and metrics are labelled by), if it has one.
    pub(crate) prefix: Option<&'a str>,
    pub(crate) key: &'a str,
    pub(crate) gen_key: Option<&'a str>,
    /// The generation at `gen_key` expires (a path's, of the HTTP layer).
    pub(crate) gen_expires: bool,
    /// The caller does not take the entry (an HTTP request's `no-cache`): it is read only so
    /// that the fill can replace it, and the body runs.
    pub(crate) force: bool,
    /// The caller may run the body (not an HTTP request that said `only-if-cached`): one
    /// that may not takes an entry to refresh or serve stale as it is, and leaves the
    /// refresh to a caller that can run it.
    pub(crate) may_run: bool,
    pub(crate) policy: &'a Policy,
    /// The call may fill the local tier: its reads are tracked by Redis, and this notes how
    /// long the entry the last read found has left.
    pub(crate) local: Option<&'a Tracked>,
    /// When the call began, if the caller read the clock already (to time the call): the
    /// first read's fill deadline counts from there, and no second clock read is needed.
    /// Earlier than the read, so the deadline only comes sooner.
    pub(crate) started: Option<Instant>,
    /// The digest of the generations of the call's tags, read before the entry (0: no
    /// tags): an entry stamped with another is a miss, and the fill stamps this one.
    pub(crate) tags: u64,
    /// The store failed before the call's key could be known for sure (an HTTP layer's
    /// group or tags could not be read): the call reads and writes nothing, as if every
    /// read had failed, but still shares its key's flight with the callers like it.
    pub(crate) unread: bool,
    /// Whether the caller takes an entry it read (its bytes), if it may refuse one (an
    /// HTTP request's `max-age` or `min-fresh`): one it refuses is read as by `force`.
    /// (A thin reference: every call's future holds an `Entry`.)
    pub(crate) accepts: Option<&'a Accepts<'a>>,
    /// A generation the key itself was made from, as read before the entry (an HTTP
    /// layer's group: in its keys' material, not on their stamps). A failed body is
    /// answered with a stale entry only while it is still the same (see
    /// [`Core::answer_stale`]). (A thin reference, as `accepts`.)
    pub(crate) keyed_gen: Option<&'a KeyedGen<'a>>,
}

impl Entry<'_> {
    /// The key as a logged fault names it: one the caller chose itself (the programmatic
    /// API's, which has no prefix) by its md5, as tags are (it may hold an email or a
    /// token); a key redcache derived, which ends in an md5 already, as it is.
    pub(crate) fn shown(&self) -> std::borrow::Cow<'_, str> {
        match self.prefix {
            Some(_) => self.key.into(),
            None => crate::key::shown("key", self.key).into(),
        }
    }
}

/// A generation a key was made from: where it is kept, and what it was.
#[derive(Debug)]
pub(crate) struct KeyedGen<'a> {
    pub(crate) key: &'a str,
    pub(crate) gen: &'a [u8],
}

/// A caller's check of an entry's bytes: whether it takes it (see [`Entry::accepts`]).
pub(crate) type Accepts<'a> = &'a (dyn Fn(&[u8]) -> bool + Sync);

/// What the entry a tracked read found has left in Redis, as that read saw it, and its
/// size.
#[derive(Debug, Default)]
pub(crate) struct Tracked {
    /// Milliseconds plus one; 0: nothing to keep (no entry, no expiry, no read).
    left_ms: AtomicU64,
    bytes: AtomicU64,
}

impl Tracked {
    /// The last tracked read found an entry of `bytes` with `left` to live (`None`: found
    /// nothing to keep).
    pub(crate) fn note(&self, left: Option<Duration>, bytes: usize) {
        let ms = left.map_or(0, |d| (d.as_millis() as u64).saturating_add(1));
        self.left_ms.store(ms, Relaxed);
        self.bytes.store(bytes as u64, Relaxed);
    }

    /// The entry is fresh for at most `fresh` more (its stamped expiry): a local copy
    /// never outlives that, though Redis keeps the entry longer for a stale window.
    pub(crate) fn cap(&self, fresh: Duration) {
        let ms = (fresh.as_millis() as u64).saturating_add(1);
        self.left_ms.fetch_min(ms, Relaxed);
    }

    /// What the last tracked read saw the entry had left, and its size, if it found one.
    pub(crate) fn left(&self) -> Option<(Duration, usize)> {
        match self.left_ms.load(Relaxed) {
            0 => None,
            ms => Some((
                Duration::from_millis(ms - 1),
                self.bytes.load(Relaxed) as usize,
            )),
        }
    }
}

/// Where a call stands before its body would run.
enum Step<'a, O> {
    /// Answered (a hit, or a waiter served by its leader).
    Done(O, Served),
    /// The flight it waited on ended with nothing to share: start over.
    Again,
    /// Run the body, then [`Core::complete`].
    Run(Run<'a>),
    /// Start over and, after a miss, run the body without a flight.
    Solo,
}

/// A body to run, and what its result's write needs.
struct Run<'a> {
    flight: Flight<'a>,
    /// How the call will have been answered: a miss, a refresh, or a fault of the store.
    served: Served,
    /// What the read saw: the fill must find it again.
    read: Read,
    /// When the read started (the fill fence counts from then).
    started: Instant,
    /// The cross-process lease, if the function takes one.
    lease: Option<Lease>,
    /// This process's count of changes when the body was about to run (see
    /// `Shared::changes`).
    changes: u64,
}

/// Why this call runs the body.
enum Flight<'a> {
    /// It leads the key's flight, after a miss or to refresh the entry early: callers that
    /// miss meanwhile wait for its result instead of running the body once more.
    Lead(Leader<'a>),
    /// The flight it waited on had nothing to share: it runs on its own.
    Solo,
}

/// A body whose panic is caught (as `Err(payload)`), so that `stale_if_error` can answer a
/// panicking body too; without an entry to answer with, the panic goes on.
struct CatchPanic<'a, F>(Pin<&'a mut F>);

impl<F: Future> Future for CatchPanic<'_, F> {
    type Output = std::thread::Result<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let body = self.get_mut().0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| body.poll(cx))) {
            Ok(Poll::Ready(out)) => Poll::Ready(Ok(out)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

impl Core {
    /// The entry that answers after the body failed or panicked (see
    /// [`stale_candidate`](Self::stale_candidate)), if it is still within its window and
    /// nothing invalidated it while the body ran: read again, it is the same bytes under
    /// the same group generation (and tags' generations, and the generation its key was
    /// made from, if any: [`Entry::keyed_gen`]). An entry that replaced it
    /// meanwhile (another process's fill, a `put!`) answers instead, if it may: a value of
    /// the current generations, valid or within its own `stale_if_error` window; never a
    /// tombstone. If that cannot be known (Redis does not answer), the body's failure
    /// stands. Counted and logged (rate-limited).
    async fn answer_stale<K: Shape<O>, O>(
        &self,
        at: Entry<'_>,
        hooks: Hooks<O>,
        tag_names: &[String],
        stale: Stale,
    ) -> Option<O> {
        let again = self.read(Entry { local: None, ..at }).await;
        let stale = if again.entry() == Some(&stale.bytes[..]) {
            stale
        } else {
            self.stale_candidate::<K, O>(at, hooks, &again, true)?
        };
        if unix_ms() >= stale.until_ms {
            return None;
        }
        let (Found::Value(out), stamp) = K::decode(&stale.bytes).ok()? else {
            return None;
        };
        if !again.gen_matches(stamp.gen) {
            return None;
        }
        if !tag_names.is_empty() && self.tag_digest(tag_names).await.ok()? != stamp.tags {
            return None;
        }
        if let Some(keyed) = at.keyed_gen {
            // Retired meanwhile, the entry is no longer read under its key's generation.
            let now = self.op(self.backend.get(keyed.key)).await.ok()?;
            if now.as_deref() != Some(keyed.gen) {
                return None;
            }
        }
        self.record(at.prefix, Event::Stale);
        if let Some(suppressed) = self.may_log() {
            tracing::warn!(
                key = at.key,
                suppressed,
                "redcache: the body failed; answered with the stored entry \
                 (stale_if_error, or a refresh)"
            );
        }
        Some(out)
    }
}

/// What a call's first read found, when it was not a hit ([`Core::begin`]).
struct First<O> {
    /// The flight stripe's count before the read.
    stripe: u64,
    /// This process's count of changes before the read (see `Shared::changes`).
    changes: u64,
    started: Instant,
    read: Read,
    examined: Examined<O>,
}

/// A hit, or what the first read found otherwise (boxed: it is carried into the boxed
/// state of a non-hit, which every argument of an async fn occupies twice).
enum Begun<O> {
    Hit(O, Served),
    More(Box<First<O>>),
}

/// Runs `body` and measures it (XFetch's delta).
async fn timed<O>(body: impl Future<Output = O>) -> (O, Duration) {
    let start = Instant::now();
    let out = body.await;
    (out, start.elapsed())
}

impl Core {
    /// The heart of every cached call: read, then on a miss single flight, the
    /// cross-process lease if the function takes one, the body, and the fenced write.
    ///
    /// This is the only part generic over the body's future, and so the only part each
    /// `#[cached]` function gets its own copy of: it awaits [`step`](Self::step) and
    /// [`complete`](Self::complete), which are generic over the return type alone.
    ///
    /// A plain function returning [`run_at`](Self::run_at)'s future, so that no layer of
    /// its own holds (and copies) that future.
    ///
    /// `tags`: the digest of the generations of the call's tags (`tag_names`), `None` if
    /// they could not be read: the call then reads and writes nothing ([`Entry::unread`]).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn get_or_run<'a, K, O, F>(
        self: &'a Arc<Self>,
        prefix: Option<&'a str>,
        key: &'a str,
        gen_key: Option<&'a str>,
        policy: &'a Policy,
        hooks: Hooks<O>,
        local: Option<&'a Tracked>,
        started: Option<Instant>,
        (tags, tag_names): (Option<u64>, &'a [String]),
        body: F,
    ) -> impl Future<Output = (O, Served)> + 'a
    where
        K: Shape<O> + 'a,
        O: 'a,
        F: Future<Output = O> + 'a,
    {
        let at = Entry {
            prefix,
            key,
            gen_key,
            gen_expires: false,
            force: false,
            may_run: true,
            policy,
            local,
            started,
            // Tags whose generations could not be read: nothing is read or written.
            tags: tags.unwrap_or(0),
            unread: tags.is_none(),
            accepts: None,
            keyed_gen: None,
        };
        self.run_at::<K, O, F>(at, hooks, tag_names, body)
    }

    /// A call's first read, and its answer if that is a hit. What the read saw otherwise
    /// goes on to [`run_from`](Self::run_from), which acts on it as its first
    /// [`step`](Self::step) would have.
    ///
    /// (Not an `async fn`: one would hold each argument twice, in the future each hit
    /// builds and moves. Below it, the read takes the entry by reference.)
    #[allow(clippy::manual_async_fn)]
    fn begin<'a, K: Shape<O> + 'a, O: 'a>(
        &'a self,
        at: &'a Entry<'a>,
    ) -> impl Future<Output = Begun<O>> + 'a {
        async move {
            // Before the read, as in `step`: a flight that ends after it is noticed, and an
            // invalidation this process made before it.
            let stripe = self.flights.stripe(at.key);
            let changes = self.changes();
            let started = at.started.unwrap_or_else(Instant::now);
            let read = self.read_relaxed(at).await;
            let examined = match self.examine::<K, O>(*at, &read) {
                Examined::Hit(found) => match self.count_hit(at.prefix, found) {
                    Some((out, served)) => return Begun::Hit(out, served),
                    // A tombstone: a miss.
                    None => Examined::Miss,
                },
                examined => examined,
            };
            Begun::More(Box::new(First {
                stripe,
                changes,
                started,
                read,
                examined,
            }))
        }
    }

    /// [`get_or_run`](Self::get_or_run) for an entry already described.
    ///
    /// A hit is answered by [`begin`](Self::begin) alone; everything else continues in
    /// [`run_from`](Self::run_from) from that read, boxed. So the future every call builds,
    /// awaits and moves is the first read's, a fraction of the whole machinery's: a hit
    /// does not pay to copy the flight, lease and fill states it never enters.
    ///
    /// `tag_names`: the call's tags (whose generations make `at.tags`), read again only
    /// before a failed body is answered with the entry (see
    /// [`answer_stale`](Self::answer_stale)).
    #[allow(clippy::manual_async_fn)] // holds its arguments once, as `begin`
    pub(crate) fn run_at<'a, K, O, F>(
        self: &'a Arc<Self>,
        at: Entry<'a>,
        hooks: Hooks<O>,
        tag_names: &'a [String],
        body: F,
    ) -> impl Future<Output = (O, Served)> + 'a
    where
        K: Shape<O> + 'a,
        O: 'a,
        F: Future<Output = O> + 'a,
    {
        async move {
            match self.begin::<K, O>(&at).await {
                Begun::Hit(out, served) => (out, served),
                Begun::More(first) => {
                    let from = self.run_from::<K, O, F>(&at, hooks, tag_names, body, Some(first));
                    Box::pin(from).await
                }
            }
        }
    }

    /// [`run_at`](Self::run_at), from a first read already made, if any.
    ///
    /// Its state is what every non-hit allocates, so it is kept under the 1,032 bytes glibc
    /// serves from per-thread caches (above, an allocation goes to the shared bins and
    /// consolidates them first): what it would hold only on some paths is boxed where it is
    /// awaited, each step among them, and large arguments come by reference or boxed.
    async fn run_from<K, O, F>(
        self: &Arc<Self>,
        at: &Entry<'_>,
        hooks: Hooks<O>,
        tag_names: &[String],
        body: F,
        mut first: Option<Box<First<O>>>,
    ) -> (O, Served)
    where
        K: Shape<O>,
        F: Future<Output = O>,
    {
        let at = *at;
        let mut solo = false;
        // Only the first step's read follows the call's start closely.
        let mut started = at.started;
        loop {
            match Box::pin(self.step::<K, O>(&at, solo, started.take(), first.take())).await {
                Step::Done(out, served) => return (out, served),
                Step::Again => continue,
                // The flight it waited on ended with nothing to share (an `Err`, a result
                // that was not stored): running the body now beats queueing behind another
                // flight that may end the same way.
                Step::Solo => solo = true,
                Step::Run(run) => {
                    let served = run.served;
                    let refreshing = served == Served::Refresh;
                    let stale = self.stale_candidate::<K, O>(at, hooks, &run.read, refreshing);
                    let body = std::pin::pin!(body);
                    let (out, compute) = timed(CatchPanic(body)).await;
                    let out = match out {
                        Ok(out) => out,
                        Err(panic) => {
                            // The flight and the lease end as the run is dropped.
                            drop(run);
                            let answered = match stale {
                                Some(stale) => {
                                    Box::pin(self.answer_stale::<K, O>(at, hooks, tag_names, stale))
                                        .await
                                }
                                None => None,
                            };
                            match answered {
                                Some(out) => return (out, Served::Stale),
                                None => std::panic::resume_unwind(panic),
                            }
                        }
                    };
                    Box::pin(self.complete::<K, O>(at, hooks, run, &out, compute)).await;
                    if let (Some(stale), true) = (stale, K::failed(&out) || hooks.failed(&out)) {
                        let answered =
                            Box::pin(self.answer_stale::<K, O>(at, hooks, tag_names, stale));
                        if let Some(out) = answered.await {
                            return (out, Served::Stale);
                        }
                    }
                    return (out, served);
                }
            }
        }
    }

    /// Everything a call does before its body would run: a hit, a reason to start over,
    /// or the body to run (as the key's flight leader, as its early refresher, or `solo`:
    /// without a flight).
    ///
    /// `first`: the call's first read, made by [`begin`](Self::begin), in place of this
    /// step's own.
    async fn step<'a, K: Shape<O>, O>(
        self: &'a Arc<Self>,
        at: &Entry<'_>,
        solo: bool,
        started: Option<Instant>,
        first: Option<Box<First<O>>>,
    ) -> Step<'a, O> {
        let at = *at;
        let key = at.key;
        // Only a call's first read (`begin`'s) may have gone to a replica.
        let relaxed = first.is_some();
        let (stripe, changes, mut started, mut read, mut examined) = match first.map(|f| *f) {
            Some(First {
                stripe,
                changes,
                started,
                read,
                examined,
            }) => (stripe, changes, started, read, examined),
            None => {
                // Read first: a hit needs no flight.
                let stripe = self.flights.stripe(key);
                let changes = self.changes();
                let started = started.unwrap_or_else(Instant::now);
                // Boxed, as every read in a step: a call's first read is `begin`'s, so a
                // step reads only when it starts over or a flight ended meanwhile; inline,
                // the read would size the boxed state every miss allocates. From the
                // master, as every read but the first: this call may have seen an
                // invalidation there (a tombstone) that a replica has not applied yet.
                let read = Box::pin(self.read(at)).await;
                let examined = self.examine::<K, O>(at, &read);
                (stripe, changes, started, read, examined)
            }
        };
        if relaxed
            && matches!(read, Read::Found { replica: true, .. })
            && !matches!(examined, Examined::Hit(_))
        {
            // A replica may have answered, up to the replication lag behind the master:
            // only its hits are served. What a miss, a stale entry or a refresh acts on,
            // and what its fill must find again, is the master's, as without replicas; so
            // a replica that has not yet received a fill does not run the body once more.
            read = Box::pin(self.read(at)).await;
            examined = self.examine::<K, O>(at, &read);
        }
        let stale = matches!(examined, Examined::Stale(_));
        match examined {
            Examined::Hit(found) => {
                if let Some((out, served)) = self.count_hit(at.prefix, found) {
                    return Step::Done(out, served);
                }
            }
            // Refreshed by one caller, leading the key's flight: one at a time in this
            // process, and a caller that misses meanwhile waits for it. Callers that find a
            // flight under way, or that may not run the body, are answered with the entry:
            // still valid (early refresh), or past its TTL but within `stale_ttl`.
            Examined::Refresh(found) | Examined::Stale(found) => {
                // (A caller that may not run the body does not join, even as a leader.)
                let leader = match at.may_run.then(|| self.flights.join(key)) {
                    Some(Role::Leader(leader)) => Some(leader),
                    _ => None,
                };
                let Some(leader) = leader else {
                    return match (found, stale) {
                        (Found::Value(out) | Found::Null(out), true) => {
                            self.record(at.prefix, Event::Stale);
                            Step::Done(out, Served::Stale)
                        }
                        (found, _) => match self.count_hit(at.prefix, found) {
                            Some((out, served)) => Step::Done(out, served),
                            None => Step::Again,
                        },
                    };
                };
                self.record(at.prefix, Event::Refresh);
                return Step::Run(Run {
                    flight: Flight::Lead(leader),
                    served: Served::Refresh,
                    read,
                    started,
                    lease: None,
                    changes: self.changes(),
                });
            }
            Examined::Miss => {}
        }
        // A caller that may not run the body leads no flight either: others would wait on
        // it for nothing, then each run their own.
        if solo || !at.may_run {
            self.record(at.prefix, Event::Miss);
            return Step::Run(Run {
                flight: Flight::Solo,
                served: missed(&read),
                read,
                started,
                lease: None,
                changes: self.changes(),
            });
        }
        let wait = self.config.max_fill_time();
        let leader = match self.flights.join(key) {
            // Boxed: only followers wait.
            Role::Follower(rx) => {
                return match Box::pin(self.follow(rx, wait)).await {
                    // An unfenced result may predate the invalidation whose trace (a
                    // tombstone) this caller read: it computes its own.
                    Followed::Shared(shared) if !shared.fenced && read.saw_entry() => Step::Solo,
                    // Nor may it predate an invalidation this process made after the leader
                    // began and before this caller read, which the read could not show
                    // (Redis did not answer it). One made later is no newer than this call.
                    Followed::Shared(shared) if !shared.fenced && shared.changes < changes => {
                        Step::Solo
                    }
                    Followed::Shared(shared) => match K::decode(&shared.entry) {
                        // The leader read other generations of the tags (it began before
                        // an invalidation this caller saw): its result may be older.
                        Ok((_, stamp)) if stamp.tags != at.tags => Step::Solo,
                        // Likewise an unfenced result of another generation of the group
                        // (or the HTTP path) than this caller read: an invalidation of it
                        // leaves no tombstone to see.
                        Ok((_, stamp)) if !shared.fenced && read.saw_other_gen(stamp.gen) => {
                            Step::Solo
                        }
                        Ok((found, _)) => match self.count_hit(at.prefix, found) {
                            Some((out, served)) => Step::Done(out, served),
                            None => Step::Again,
                        },
                        Err(_) => Step::Again,
                    },
                    // Nothing to share (an `Err`, a result not stored), or the leader
                    // stalled: running the body now beats queueing behind another flight
                    // that may end the same way.
                    Followed::Nothing => Step::Solo,
                    // The leader went away: start over, one of the waiters leads.
                    Followed::Again => Step::Again,
                };
            }
            Role::Late(rx) => {
                // The leader may hold a result from before an invalidation this caller
                // read: wait for it to end, then read again; if it had nothing to share,
                // run the body now rather than queue behind the next leader.
                return match Box::pin(self.follow(rx, wait)).await {
                    Followed::Nothing => Step::Solo,
                    Followed::Shared(_) | Followed::Again => Step::Again,
                };
            }
            Role::Leader(leader) => leader,
        };
        if self.flights.stripe(key) != stripe {
            // A flight ended since the read (perhaps this key's): read again.
            leader.seal();
            (started, read) = (Instant::now(), Box::pin(self.read(at)).await);
            if let Examined::Hit(found) | Examined::Refresh(found) = self.examine::<K, O>(at, &read)
            {
                if let Some((out, served)) = self.count_hit(at.prefix, found) {
                    leader.finish(read.into_entry().map(Shared::stored));
                    return Step::Done(out, served);
                }
            }
        }
        if let Some(lock) = at.policy.lock().filter(|_| read.writable()) {
            // Boxed, as every path that only some calls take: an inline future would size
            // every call's future (copied as each hit awaits it) to the largest path.
            return Box::pin(self.lead_under_lease::<K, O>(at, lock, leader)).await;
        }
        self.record(at.prefix, Event::Miss);
        Step::Run(Run {
            flight: Flight::Lead(leader),
            served: missed(&read),
            read,
            started,
            lease: None,
            changes: self.changes(),
        })
    }

    /// Waits on another caller's flight, counted as waiting meanwhile
    /// ([`Cache::flight_waiters`](crate::Cache::flight_waiters)).
    async fn follow(&self, rx: Arc<flight::Cell>, wait: Duration) -> Followed {
        let _waiting = self.flights.wait();
        flight::follow(rx, wait).await
    }

    /// The rest of a leader's step when the function takes the cross-process lease
    /// (`lock`): the entry another process filled while this one waited, or the body to
    /// run, with the lease if it was taken.
    async fn lead_under_lease<'a, K: Shape<O>, O>(
        self: &'a Arc<Self>,
        at: Entry<'_>,
        lock: Duration,
        leader: Leader<'a>,
    ) -> Step<'a, O> {
        leader.seal();
        // The fill's deadline counts from the read it acts on, made after the wait: a
        // long wait for a lease (up to `lock_ms`) does not eat into `max_fill_time`.
        let (read, lease, begun) = match self.lock_or_wait::<K, O>(at, lock).await {
            Locked::Filled(out, served, entry) => {
                leader.finish(entry.map(Shared::stored));
                return Step::Done(out, served);
            }
            Locked::Acquired(held, fresh, begun) => {
                // Double-check: the previous holder may have filled just now. (An entry
                // that new picked for early refresh is taken, as the wait takes it: run
                // again, the body's failure would have no entry to fall back on.)
                if let Examined::Hit(found) | Examined::Refresh(found) =
                    self.examine::<K, O>(at, &fresh)
                {
                    if let Some((out, served)) = self.count_hit(at.prefix, found) {
                        leader.finish(fresh.into_entry().map(Shared::stored));
                        held.release().await;
                        return Step::Done(out, served);
                    }
                }
                (fresh, Some(held), begun)
            }
            Locked::Proceed(fresh, begun) => (fresh, None, begun),
        };
        self.record(at.prefix, Event::Miss);
        Step::Run(Run {
            flight: Flight::Lead(leader),
            served: missed(&read),
            read,
            started: begun,
            lease,
            changes: self.changes(),
        })
    }

    /// After the body ran: stores its result, releases the lease, ends the flight.
    async fn complete<K: Shape<O>, O>(
        &self,
        at: Entry<'_>,
        hooks: Hooks<O>,
        run: Run<'_>,
        out: &O,
        compute: Duration,
    ) {
        let Run {
            flight,
            read,
            started,
            lease,
            changes,
            ..
        } = run;
        if let Flight::Lead(leader) = &flight {
            leader.seal();
        }
        let shared = self
            .store_result::<K, O>(at, hooks, &read, out, started, compute, changes)
            .await;
        if let Flight::Lead(leader) = flight {
            leader.finish(shared);
        }
        if let Some(held) = lease {
            Box::pin(held.release()).await;
        }
    }
}
