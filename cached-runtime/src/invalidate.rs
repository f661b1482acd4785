//! Invalidation: one entry (a tombstone), a whole eviction group (a new generation), a key
//! prefix (tombstones for what is there). Never skipped by the open breaker.

use crate::codec;
use crate::core::Core;
use crate::key;
use crate::stats::Event;
use crate::store::{Replaced, Store};
use crate::{Error, Result};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;
use tokio::time::Instant;

/// Keys a SCAN step looks at.
const SCAN_BATCH: usize = 250;

/// Runs a write's invalidations (`work`) to their end, even if the caller is dropped while
/// they wait on the store: on a task of their own on the runtime in use, awaited (inline
/// where there is none). The write they follow has been made; a caller dropped now (an
/// HTTP client gone, a `timeout` around the call) must not leave the entries it retires
/// answering with what the write replaced. The caller's span and subscriber go with them.
pub(crate) async fn to_the_end<F>(work: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    use std::sync::{Arc, Mutex, PoisonError};
    use tracing::instrument::WithSubscriber;
    use tracing::Instrument;
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return work.await;
    };
    // Taken by the task when it starts: a runtime shutting down cancels a task before
    // it runs, and the work is then done here.
    let slot = Arc::new(Mutex::new(Some(work)));
    let taken = slot.clone();
    let task = async move {
        let work = taken.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(work) = work {
            work.await;
        }
    };
    let task = runtime.spawn(task.in_current_span().with_current_subscriber());
    match task.await {
        Ok(()) => {}
        Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
        Err(_) => {
            let work = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
            if let Some(work) = work {
                work.await;
            }
        }
    }
}

impl Core {
    /// Replaces the entry at an exact store key (namespace included) with a tombstone that
    /// lives [`Config::max_fill_time`](crate::Config::max_fill_time); whether a live entry
    /// was there (not a tombstone, nor an entry past its TTL kept only as a fence). An
    /// error when that is not known (the reply was lost, though the entry is retired): for
    /// callers that answer it (`delete`, `invalidate!`).
    pub(crate) async fn invalidate_key(&self, key: &str) -> Result<bool> {
        let old = self.retire_key(key).await?.was()?;
        Ok(old.is_some_and(|old| codec::is_live(&old)))
    }

    /// [`invalidate_key`](Self::invalidate_key) for callers that need no answer
    /// (`#[evicts]`, a write-through that invalidates instead): a lost reply's
    /// invalidation is done, not a fault.
    pub(crate) async fn evict_key(&self, key: &str) -> Result<()> {
        self.retire_key(key).await.map(drop)
    }

    /// The tombstone's write, counted when it retired a live entry; what it replaced.
    async fn retire_key(&self, key: &str) -> Result<Replaced> {
        let ttl = self.config.max_fill_time();
        let old = self
            .op_invalidation(
                Some(self.config.op_timeout()),
                self.backend.retire(key, ttl),
            )
            .await;
        // This process's copy goes now, not when Redis's push arrives: the next call here
        // reads Redis. (Whatever else holds one gets the push.)
        self.local_changed(key);
        let old = old?;
        if let Replaced::Was(Some(old)) = &old {
            if codec::is_live(old) {
                self.record(None, Event::Invalidations(1));
            }
        }
        Ok(old)
    }

    /// Moves `group` to a new generation (see [`Cache::invalidate_group`](crate::Cache::invalidate_group)).
    pub(crate) async fn invalidate_group(&self, group: &str) -> Result<()> {
        if let Some(problem) = key::group_problem(group) {
            // (A name copied from a key, `{products}`, would move a generation no entry
            // is stamped with, and leave the group's entries served.)
            return Err(Error::config(format!(
                "invalidate_group({group:?}): no group has this name: {problem}"
            )));
        }
        let gen_key = self.group_key(group);
        let timeout = Some(self.config.op_timeout());
        let set = self
            .op_invalidation(timeout, self.backend.regenerate(&gen_key, None))
            .await;
        self.local_changed(&gen_key);
        set?;
        self.record(None, Event::Invalidations(1));
        Ok(())
    }

    /// Tombstones the live entries under `prefix` (see
    /// [`Cache::invalidate_prefix`](crate::Cache::invalidate_prefix)); how many.
    pub(crate) async fn invalidate_prefix(&self, prefix: &str) -> Result<u64> {
        let start = key::prefix_start(self.config.namespace(), prefix);
        // Many commands: each step has the operation timeout, not the whole walk.
        let ttl = self.config.max_fill_time();
        let step = self.config.op_timeout();
        let walk = self
            .backend
            .invalidate_prefix(&start, SCAN_BATCH, ttl, step);
        let removed = self.op_invalidation(None, walk).await;
        // Copies are not kept by prefix, nor recent writes: every one counts as changed.
        self.local_changed_all();
        let removed = removed?;
        self.record(None, Event::Invalidations(removed));
        Ok(removed)
    }
}

/// What a declarative eviction (`#[evicts]`, `EvictLayer`, `retire_on_write`) retires.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Target {
    /// One entry, at its store key; its function's prefix names it in a fault's log.
    Key { key: String, prefix: &'static str },
    /// An eviction group.
    Group(String),
    /// A tag.
    Tag(String),
    /// Every cached response of a path.
    #[cfg(feature = "http")]
    Path(String),
}

/// An HTTP write route's evictions while its handler runs (see `http::EvictService` and
/// the layer's `retire_on_write`). Dropped armed (the request dropped mid-handler: a
/// client gone, a timeout around the route; or the handler panicked), it makes them on
/// redcache's own runtime, as a `#[evicts]` call dropped mid-body does: the write may have
/// been made before the handler stopped, and an eviction too many costs misses, where one
/// too few serves what the write replaced.
#[cfg(feature = "http")]
pub(crate) struct EvictIfDropped {
    armed: Option<(crate::Cache, Vec<Target>)>,
}

#[cfg(feature = "http")]
impl EvictIfDropped {
    /// Evictions of `targets` from `cache`, made if this is dropped before
    /// [`disarm`](Self::disarm).
    pub(crate) fn arm(cache: crate::Cache, targets: Vec<Target>) -> Self {
        EvictIfDropped {
            armed: Some((cache, targets)),
        }
    }

    /// The handler has answered: the caller evicts as its answer says.
    pub(crate) fn disarm(mut self) -> (crate::Cache, Vec<Target>) {
        self.armed.take().expect("armed until disarmed")
    }
}

#[cfg(feature = "http")]
impl Drop for EvictIfDropped {
    fn drop(&mut self) {
        if let Some((cache, targets)) = self.armed.take() {
            in_background(async move { cache.core().evict_all(targets).await });
        }
    }
}

/// Runs `work` (the evictions a caller dropped mid-write owes) on redcache's own runtime,
/// with the caller's span and subscriber; nothing waits for it.
pub(crate) fn in_background<F>(work: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    use tracing::instrument::WithSubscriber;
    use tracing::Instrument;
    crate::store::background().spawn(work.in_current_span().with_current_subscriber());
}

/// The first pause before a failed eviction is tried again; each later one is twice as
/// long, up to [`RETRY_PAUSE_MOST`].
const RETRY_PAUSE: Duration = Duration::from_millis(100);
const RETRY_PAUSE_MOST: Duration = Duration::from_secs(5);
/// How long a failed eviction is tried again: longer than most entries live.
const RETRY_FOR: Duration = Duration::from_secs(3600);
/// The most failed evictions kept to try again (each different); more are given up, and
/// say so.
const RETRIES_KEPT: usize = 10_000;

/// How often at most evictions given up for want of room are logged.
const LOG_GIVEN_UP_EVERY: Duration = Duration::from_secs(1);

/// Evictions that failed because Redis could not be reached, to try again.
#[derive(Default)]
pub(crate) struct Retries {
    pending: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    /// The targets waiting for their next try, in the order they are tried.
    waiting: Vec<Target>,
    /// Every target waiting, and when it last failed as a write's eviction (a retry's
    /// failures do not count): one that fails again meanwhile is not kept twice.
    kept: HashMap<Target, Instant>,
    /// How many the retry task is trying now (they count toward [`RETRIES_KEPT`]).
    in_flight: usize,
    /// Whether the task that tries them again runs.
    running: bool,
    /// Evictions given up because too many were kept, not yet logged, and when that was
    /// last logged: a log of its own, once a second at most. (The faults' log would not
    /// do: each give-up follows its eviction's fault, which has just taken that log's
    /// turn.)
    given_up: (u64, Option<Instant>),
}

impl Pending {
    /// Keeps `target`, whose eviction failed at `now`, unless too many are kept (false).
    /// One already waiting takes `now` as its time: this write's eviction has its own hour.
    fn keep(&mut self, target: Target, now: Instant) -> bool {
        if let Some(kept) = self.kept.get_mut(&target) {
            *kept = now;
            return true;
        }
        if self.kept.len() + self.in_flight >= RETRIES_KEPT {
            return false;
        }
        self.kept.insert(target.clone(), now);
        self.waiting.push(target);
        true
    }

    /// Counts `n` evictions given up at `now`; how many to log now, if the last such log
    /// was a second ago or more.
    fn give_up(&mut self, n: u64, now: Instant) -> Option<u64> {
        let (count, logged) = &mut self.given_up;
        *count += n;
        if *count == 0 || logged.is_some_and(|at| now.duration_since(at) < LOG_GIVEN_UP_EVERY) {
            return None;
        }
        *logged = Some(now);
        Some(std::mem::take(count))
    }

    /// Evictions given up for want of room to log at `now`, when a pass of the retry task
    /// ends: once a second, as [`give_up`](Self::give_up) logs them, and all that are left
    /// if the task is `ending` (no pass would log them later).
    fn given_up_to_log(&mut self, now: Instant, ending: bool) -> Option<u64> {
        if !ending {
            return self.give_up(0, now);
        }
        let (count, logged) = &mut self.given_up;
        if *count == 0 {
            return None;
        }
        *logged = Some(now);
        Some(std::mem::take(count))
    }

    /// Takes every waiting target out, with its time, for a pass to try: one that fails
    /// again meanwhile (a newer write's eviction, maybe after this try has landed) is kept
    /// anew.
    fn take_due(&mut self) -> Vec<(Target, Instant)> {
        let waiting = std::mem::take(&mut self.waiting);
        let due: Vec<_> = waiting
            .into_iter()
            .filter_map(|target| self.kept.remove(&target).map(|since| (target, since)))
            .collect();
        self.in_flight = due.len();
        due
    }

    /// Puts back the targets a pass tried without success: they come first, then those
    /// that failed meanwhile. One in both keeps the later time.
    fn requeue(&mut self, failed: Vec<(Target, Instant)>) {
        self.in_flight = 0;
        let meanwhile = std::mem::take(&mut self.waiting);
        let mut again = HashSet::with_capacity(failed.len());
        for (target, since) in failed {
            let kept = self.kept.entry(target.clone()).or_insert(since);
            *kept = (*kept).max(since);
            again.insert(target.clone());
            self.waiting.push(target);
        }
        self.waiting.extend(
            meanwhile
                .into_iter()
                .filter(|target| !again.contains(target)),
        );
    }
}

impl Core {
    /// Retires `target`. A reply lost after Redis ran it is done, not a fault.
    async fn evict(&self, target: &Target) -> Result<()> {
        match target {
            Target::Key { key, .. } => self.evict_key(key).await,
            Target::Group(group) => self.invalidate_group(group).await,
            Target::Tag(tag) => self.invalidate_tag(tag).await,
            #[cfg(feature = "http")]
            Target::Path(path) => self.move_path(path).await.map(drop),
        }
    }

    /// Counts and logs a failed eviction of `target`.
    fn eviction_fault(&self, target: &Target, err: &Error) {
        match target {
            Target::Key { prefix, .. } => self.fault(prefix, err),
            Target::Group(group) => self.fault(group, err),
            Target::Tag(tag) => self.fault(&key::shown("tag", tag), err),
            #[cfg(feature = "http")]
            Target::Path(path) => self.fault(&crate::http::path_tag(path), err),
        }
    }

    /// Retires each of `targets`. Faults are counted and logged, never returned: the write
    /// they follow stands. One that failed because Redis could not be reached (a dropped
    /// connection, a timeout) or refused it for now (loading its data after a restart, busy
    /// with a script, out of memory: `Error::is_transient`) may have left the entry there,
    /// to be served again once Redis answers (a partition, a restart with persistence): it
    /// is tried again in the background, with growing pauses (0.1 s to 5 s), until it
    /// succeeds, for up to an hour, as long as the cache lives.
    ///
    /// The targets are retired at once, not one after another: a Redis that does not
    /// answer costs the write one operation timeout, not one per target.
    pub(crate) async fn evict_all(self: &Arc<Self>, targets: Vec<Target>) {
        let done = match targets.as_slice() {
            [one] => vec![self.evict(one).await],
            _ => futures_util::future::join_all(targets.iter().map(|t| self.evict(t))).await,
        };
        let mut failed = Vec::new();
        for (target, done) in targets.into_iter().zip(done) {
            if let Err(err) = done {
                self.eviction_fault(&target, &err);
                if err.is_transient() {
                    failed.push(target);
                }
            }
        }
        if !failed.is_empty() {
            self.retry_later(failed);
        }
    }

    /// Keeps `failed` to try again, and starts the task that does if it is not running.
    fn retry_later(self: &Arc<Self>, failed: Vec<Target>) {
        let now = Instant::now();
        let mut given_up = 0;
        let mut pending = self
            .retries
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for target in failed {
            if !pending.keep(target, now) {
                given_up += 1;
            }
        }
        if !pending.running && !pending.waiting.is_empty() {
            pending.running = true;
            // On redcache's own runtime: the caller's may end before Redis is back.
            let retry = Core::in_background(retry(Arc::downgrade(self)));
            crate::store::background().spawn(retry);
        }
        let logged = pending.give_up(given_up, now);
        drop(pending);
        if let Some(given_up) = logged {
            tracing::error!(
                given_up,
                kept = RETRIES_KEPT,
                "redcache: evictions failed while too many others wait to be tried again; \
                 they are given up, and their entries may be served until their TTL"
            );
        }
    }
}

/// Tries the cache's failed evictions again until none is left (see
/// [`Core::evict_all`]); ends with the cache.
async fn retry(core: Weak<Core>) {
    let mut pause = RETRY_PAUSE;
    loop {
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(RETRY_PAUSE_MOST);
        let Some(core) = core.upgrade() else {
            return;
        };
        let due = core
            .retries
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take_due();
        let (mut made, mut given_up, mut failed) = (0, 0, Vec::new());
        let mut due = due.into_iter();
        while let Some((target, since)) = due.next() {
            match core.evict(&target).await {
                Ok(()) => made += 1,
                Err(err) if err.is_transient() && since.elapsed() < RETRY_FOR => {
                    // Redis is still out of reach, or refusing: the rest wait for the next
                    // pass rather than each wait out its own timeout now (those past their
                    // hour are given up). This one goes last, so one node out of a
                    // cluster's reach does not hold back what others could take at the
                    // next pass.
                    for (rest, since) in due.by_ref() {
                        match since.elapsed() < RETRY_FOR {
                            true => failed.push((rest, since)),
                            false => given_up += 1,
                        }
                    }
                    failed.push((target, since));
                }
                Err(err) => {
                    given_up += 1;
                    core.eviction_fault(&target, &err);
                }
            }
        }
        if made > 0 {
            tracing::info!(
                made,
                "redcache: evictions that failed while Redis could not be reached (or refused \
                 them for now) are made"
            );
        }
        if given_up > 0 {
            tracing::error!(
                given_up,
                "redcache: evictions are given up after failing for an hour (or for good); \
                 their entries may be served until their TTL"
            );
        }
        let mut pending = core
            .retries
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        pending.requeue(failed);
        // Give-ups for want of room not logged yet (they came within a second of the
        // last such log, and none came since to log them): logged once a second, and all
        // that are left when the task ends.
        let ending = pending.waiting.is_empty();
        if let Some(given_up) = pending.given_up_to_log(Instant::now(), ending) {
            drop(pending);
            tracing::error!(
                given_up,
                kept = RETRIES_KEPT,
                "redcache: evictions failed while too many others waited to be tried again; \
                 they were given up, and their entries may be served until their TTL"
            );
            pending = core
                .retries
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
        }
        if pending.waiting.is_empty() {
            pending.running = false;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(name: &str) -> Target {
        Target::Group(name.into())
    }

    #[tokio::test]
    async fn a_name_no_group_can_have_is_refused() {
        let cache = crate::Cache::memory();
        for name in ["", "{products}", "products}", "a\nb"] {
            let err = cache.invalidate_group(name).await.unwrap_err();
            assert!(matches!(err, Error::Config { .. }), "{name:?}: {err}");
            assert!(err.to_string().contains("no group has this name"), "{err}");
        }
        cache.invalidate_group("products").await.unwrap();
        // An HTTP layer's group may have a space.
        cache.invalidate_group("my products").await.unwrap();
        assert_eq!(cache.stats().invalidations, 2);
    }

    /// A write's eviction that fails while the same target waits gives it a new hour; a
    /// pass's failures go back first, those that failed meanwhile after them, once each.
    #[test]
    fn a_target_kept_again_takes_the_later_time() {
        let t0 = Instant::now();
        let (t1, t2) = (t0 + Duration::from_secs(60), t0 + Duration::from_secs(120));
        let mut pending = Pending::default();
        assert!(pending.keep(group("a"), t0));
        assert!(pending.keep(group("b"), t0));
        assert!(pending.keep(group("a"), t1));
        assert_eq!(pending.waiting, [group("a"), group("b")]);

        // A pass tries both and fails (the failing one goes last), while a write fails to
        // evict `a` and `c`.
        let tried = pending.take_due();
        assert_eq!(tried, [(group("a"), t1), (group("b"), t0)]);
        assert!(pending.kept.is_empty());
        assert_eq!(pending.in_flight, 2);
        assert!(pending.keep(group("a"), t2));
        assert!(pending.keep(group("c"), t2));
        pending.requeue(vec![tried[1].clone(), tried[0].clone()]);
        assert_eq!(pending.waiting, [group("b"), group("a"), group("c")]);
        assert_eq!(
            pending.kept,
            HashMap::from([(group("a"), t2), (group("b"), t0), (group("c"), t2)])
        );
        assert_eq!(pending.in_flight, 0);
    }

    /// Evictions given up for want of room are logged at once, then at most once a
    /// second with the count since; none given up, nothing to log.
    #[test]
    fn evictions_given_up_are_logged_once_a_second_with_their_count() {
        let t0 = Instant::now();
        let mut pending = Pending::default();
        assert_eq!(pending.give_up(0, t0), None);
        assert_eq!(pending.give_up(1, t0), Some(1));
        assert_eq!(pending.give_up(2, t0 + Duration::from_millis(100)), None);
        assert_eq!(pending.give_up(4, t0 + Duration::from_millis(900)), None);
        assert_eq!(
            pending.give_up(1, t0 + Duration::from_millis(1_000)),
            Some(7)
        );
        assert_eq!(pending.give_up(0, t0 + Duration::from_secs(5)), None);
        assert_eq!(pending.give_up(1, t0 + Duration::from_secs(5)), Some(1));
        // A pass of the retry task logs what is left once a second, and all of it as the
        // task ends.
        let t5 = t0 + Duration::from_secs(5);
        assert_eq!(pending.give_up(3, t5 + Duration::from_millis(100)), None);
        let pass = t5 + Duration::from_millis(200);
        assert_eq!(pending.given_up_to_log(pass, false), None);
        assert_eq!(pending.given_up_to_log(pass, true), Some(3));
        assert_eq!(pending.given_up_to_log(pass, true), None);
    }
}
