//! The core of one cache: its store, configuration, counters, flights and breaker, and the
//! rules every operation goes through, each written once: the operation timeout and the
//! breaker, fault counting and rate-limited logs, the size limit, the fill deadline,
//! namespacing, and the one place observers hear what happened ([`Core::record`]).
//!
//! Everything above works on a `Core`: the cache-aside steps (`aside/`), invalidation,
//! write-through and batches, each an `impl Core` block of its own file, and the public
//! handle [`Cache`](crate::Cache), which holds an `Arc<Core>`.

use crate::codec::Stamp;
use crate::flight::Flights;
use crate::health::{Breaker, Health, LastFault};
use crate::key;
use crate::stats::{Counters, Event, Stats};
use crate::store::{Backend, Seen};
use crate::ttl::Policy;
use crate::{Config, Error, Result};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::time::Instant;

/// Store faults in a row after which a timeout has the connection checked ([`Core::stalled`]).
const STALLED_AFTER: u32 = 3;

pub(crate) struct Core {
    pub(crate) backend: Backend,
    pub(crate) config: Config,
    pub(crate) flights: Flights,
    counters: Counters,
    /// The same counters for each prefix (never per key: bounded by the functions).
    by_prefix: RwLock<HashMap<Box<str>, Arc<Counters>>>,
    health: Breaker,
    /// What `redcache_breaker_open` was last set to.
    #[cfg(feature = "metrics")]
    breaker_gauge: crate::metrics::BreakerGauge,
    last_fault: Mutex<Option<LastFault>>,
    /// Unique in the process: names this cache in per-thread lookups.
    id: u64,
    /// Invalidations and writes-through this process made, counted as each starts and as
    /// it ends: a flight's waiter refuses an unfenced result if one came after the flight
    /// began (with the breaker open it cannot read their traces).
    changes: AtomicU64,
    /// Evictions that failed because Redis could not be reached, to try again.
    pub(crate) retries: crate::invalidate::Retries,
    /// With reads from replicas: the keys this cache changed lately, whose reads go to the
    /// master (see [`relaxed_op`](Self::relaxed_op)).
    recent: Option<crate::recent::Recent>,
}

impl Core {
    pub(crate) fn new(backend: Backend, config: Config) -> Core {
        let health = Breaker::new(config.breaker_threshold(), config.breaker_cooldown());
        let recent = backend.reads_replicas().then(crate::recent::Recent::new);
        Core {
            backend,
            config,
            flights: Flights::default(),
            counters: Counters::default(),
            by_prefix: RwLock::default(),
            health,
            #[cfg(feature = "metrics")]
            breaker_gauge: Default::default(),
            last_fault: Mutex::default(),
            id: {
                static NEXT: AtomicU64 = AtomicU64::new(0);
                NEXT.fetch_add(1, Ordering::Relaxed)
            },
            changes: AtomicU64::new(0),
            retries: Default::default(),
            recent,
        }
    }

    /// Tells the observers what happened, for `prefix` if the event belongs to one: the
    /// counters behind [`Stats`] (in total and per prefix) and, with the `metrics`
    /// feature, the `metrics` facade.
    pub(crate) fn record(&self, prefix: Option<&str>, event: Event) {
        self.counters.record(event);
        if let Some(prefix) = prefix {
            self.record_for(prefix, event);
        }
        #[cfg(feature = "metrics")]
        crate::metrics::record(prefix, event);
    }

    /// Records `event` in the counters of `prefix`, found in this thread's short list of
    /// the ones it used last (no lock, no shared cache line), else in the cache's map.
    fn record_for(&self, prefix: &str, event: Event) {
        /// Per-prefix counters this thread used lately: (cache id, prefix, counters).
        type Recent = Vec<(u64, Box<str>, Arc<Counters>)>;
        thread_local! {
            static RECENT: std::cell::RefCell<Recent> = const { std::cell::RefCell::new(Vec::new()) };
        }
        const KEPT: usize = 16;
        let recorded = RECENT.with(|recent| {
            let recent = recent.borrow();
            let found = recent
                .iter()
                .find(|(id, p, _)| *id == self.id && **p == *prefix);
            found
                .map(|(_, _, counters)| counters.record(event))
                .is_some()
        });
        if recorded {
            return;
        }
        let counters = self.shared_counters_of(prefix);
        counters.record(event);
        RECENT.with(|recent| {
            let mut recent = recent.borrow_mut();
            if recent.len() == KEPT {
                recent.remove(0);
            }
            recent.push((self.id, prefix.into(), counters));
        });
    }

    fn shared_counters_of(&self, prefix: &str) -> Arc<Counters> {
        let known = self
            .by_prefix
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(counters) = known.get(prefix) {
            return counters.clone();
        }
        drop(known);
        let mut known = self
            .by_prefix
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        known.entry(prefix.into()).or_default().clone()
    }

    /// A snapshot of the counters.
    pub(crate) fn stats(&self) -> Stats {
        self.counters.snapshot(self.health.is_open())
    }

    /// A snapshot of each prefix's counters, by prefix.
    pub(crate) fn stats_by_prefix(&self) -> Vec<(String, Stats)> {
        let known = self
            .by_prefix
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let open = self.health.is_open();
        let mut all: Vec<(String, Stats)> = known
            .iter()
            .map(|(prefix, counters)| (prefix.to_string(), counters.snapshot(open)))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Whether the breaker is open (operations that it may skip are skipped).
    pub(crate) fn breaker_is_open(&self) -> bool {
        self.health.is_open()
    }

    /// How the store is doing.
    pub(crate) fn health(&self) -> Health {
        let link = self.backend.link();
        Health {
            remote: self.backend.is_remote(),
            connected: link == crate::store::Link::Up,
            link_down: link == crate::store::Link::Down,
            breaker_open: self.health.is_open(),
            consecutive_faults: self.health.consecutive(),
            last_fault: self
                .last_fault
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }

    /// `key` in this cache's namespace.
    pub(crate) fn full_key(&self, key: &str) -> String {
        key::namespaced(self.config.namespace(), &[key])
    }

    /// This cache's write of `key` has ended (or failed, which may have written it all the
    /// same): its local copies (if any) are retired now, before Redis's push for the write
    /// arrives; and with reads from replicas, its reads of `key` go to the master for
    /// [`READ_OWN_WRITES`](crate::recent::READ_OWN_WRITES), so that a replica that has not
    /// yet applied the write does not answer them with what it replaced.
    pub(crate) fn local_changed(&self, key: &str) {
        self.changed();
        if let Some(recent) = &self.recent {
            recent.changed(key);
        }
        if let Some(tier) = self.backend.local_tier() {
            tier.changed(key.as_bytes());
        }
    }

    /// [`local_changed`](Self::local_changed) for keys not known one by one (a prefix's):
    /// every local copy goes, and every read skips the replicas for a while.
    pub(crate) fn local_changed_all(&self) {
        if let Some(recent) = &self.recent {
            recent.changed_all();
        }
        if let Some(tier) = self.backend.local_tier() {
            tier.clear();
        }
    }

    /// Where `group`'s generation lives in this cache.
    pub(crate) fn group_key(&self, group: &str) -> String {
        key::group_key(self.config.namespace(), group)
    }

    /// `stamp` for an entry of `ttl` written after a read that saw `seen`: with its expiry
    /// if the store may keep it longer, to go on fencing older fills (a writer's entry, or
    /// one written over an entry that fenced; see `FILL_LUA`).
    pub(crate) fn stamp_kept(&self, stamp: Stamp, ttl: Duration, seen: &Seen<'_>) -> Stamp {
        match seen {
            Seen::Nothing => stamp,
            _ if ttl >= self.config.max_fill_time() => stamp,
            _ => stamp.expiring_in(ttl),
        }
    }

    /// A cached `None`'s envelope `bytes`, written again with its expiry if the store may
    /// keep it past `ttl` (see [`stamp_kept`](Self::stamp_kept)).
    pub(crate) fn null_kept(
        &self,
        bytes: Vec<u8>,
        stamp: Stamp,
        ttl: Duration,
        seen: &Seen<'_>,
        policy: &Policy,
    ) -> Vec<u8> {
        let null = stamp.of_null();
        match self.stamp_kept(null, ttl, seen) {
            kept if kept == null => bytes,
            kept => crate::codec::encode_null(kept, policy.format()),
        }
    }

    /// Whether a value of `len` encoded bytes may be stored.
    pub(crate) fn check_size(&self, len: usize) -> Result<()> {
        let max = self.config.max_value_bytes();
        if len > max {
            return Err(Error::TooLarge { size: len, max });
        }
        Ok(())
    }

    /// Whether a fill for a read made at `started` may no longer be sent: it lands up to an
    /// operation timeout after it is sent (the memory store's writes never wait), and must
    /// still find the tombstone of any invalidation since the read, which lives
    /// `max_fill_time`.
    pub(crate) fn past_fill_deadline(&self, started: Instant) -> bool {
        let margin = match self.backend.is_remote() {
            true => self.config.op_timeout(),
            false => Duration::ZERO,
        };
        started.elapsed().saturating_add(margin) >= self.config.max_fill_time()
    }

    /// Runs a write of `len` encoded bytes under the size limit, the timeout and the
    /// breaker, and counts it if it stored.
    pub(crate) async fn write_checked<F, Fut>(
        &self,
        prefix: Option<&str>,
        write: F,
        len: usize,
    ) -> Result<bool>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<bool>>,
    {
        self.check_size(len)?;
        let stored = self.op(write()).await?;
        if stored {
            self.record(prefix, Event::Store);
        }
        Ok(stored)
    }

    /// Runs one store operation under the timeout and the breaker.
    pub(crate) fn op<F: Future<Output = Result<T>>, T>(&self, op: F) -> Op<'_, F> {
        self.op_checked(Some(self.config.op_timeout()), true, op)
    }

    /// A relaxed read (a call's first read, a batch's): `command` of `keys` answered by a
    /// replica if the store reads replicas and one answers, else `master` under the breaker
    /// and what is left of the operation timeout (all of it, without replicas). A
    /// replica's answer is outside the breaker: it says nothing of the master, which every
    /// miss, fill and invalidation needs, and hits a healthy replica serves would otherwise
    /// keep closing the breaker (and resetting its count of faults) while the master times
    /// out. The master answers too for a key this cache changed in the last
    /// [`READ_OWN_WRITES`](crate::recent::READ_OWN_WRITES)
    /// ([`local_changed`](Self::local_changed)). With whether a replica answered: what the
    /// master answered needs no second read.
    pub(crate) async fn relaxed_op<K, T, F>(
        &self,
        command: &'static str,
        keys: &[K],
        master: F,
    ) -> Result<(T, bool)>
    where
        K: AsRef<str>,
        T: ::redis::FromRedisValue,
        F: Future<Output = Result<T>>,
    {
        if !self.backend.reads_replicas() {
            return self.op(master).await.map(|found| (found, false));
        }
        let started = Instant::now();
        // Not for a key this cache has just changed: the replica may not have it yet.
        let own_write = self
            .recent
            .as_ref()
            .is_some_and(|recent| recent.any_changed(keys, started));
        if !own_write {
            if let Some(found) = self.backend.replica_read(command, keys).await {
                return Ok((found, true));
            }
        }
        let left = self.config.op_timeout().saturating_sub(started.elapsed());
        self.op_checked(Some(left), true, master)
            .await
            .map(|found| (found, false))
    }

    /// Runs an invalidation: under `timeout` (if given; an operation of many commands, the
    /// prefix walk, gives each of its steps the operation timeout instead), but never skipped by the breaker (an invalidation
    /// that is not even tried would leave the old entry served elsewhere without a trace);
    /// its outcome still informs the breaker.
    pub(crate) async fn op_invalidation<F: Future<Output = Result<T>>, T>(
        &self,
        timeout: Option<Duration>,
        op: F,
    ) -> Result<T> {
        self.changed();
        let done = self.op_checked(timeout, false, op).await;
        self.changed();
        done
    }

    /// Counts an invalidation or a write-through of this process (see `changes`), except
    /// one tried again in the background: the first try counted it, and every result
    /// computed since comes after the write it follows.
    fn changed(&self) {
        if !in_background_retry() {
            self.changes.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Runs one store operation under the timeout, never skipped by the breaker (a lease's
    /// release: skipped, the lease would fence every process for its whole length).
    pub(crate) fn op_unskipped<F: Future<Output = Result<T>>, T>(&self, op: F) -> Op<'_, F> {
        self.op_checked(Some(self.config.op_timeout()), false, op)
    }

    /// How many invalidations and writes-through this process has made so far.
    pub(crate) fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    /// The operation's future. Awaited at once by every caller, so the breaker is asked
    /// (and a skip counted) here rather than at the first poll.
    fn op_checked<F: Future<Output = Result<T>>, T>(
        &self,
        timeout: Option<Duration>,
        skippable: bool,
        op: F,
    ) -> Op<'_, F> {
        let mode = if !self.backend.is_remote() {
            Mode::Local
        } else if skippable && !self.health.allow() {
            self.record(None, Event::Skipped);
            Mode::Skipped {
                cooldown: self.config.breaker_cooldown(),
            }
        } else {
            match timeout {
                Some(after) => Mode::Timed {
                    timer: tokio::time::sleep(after),
                    after,
                },
                None => Mode::Untimed,
            }
        };
        Op {
            core: self,
            op,
            mode,
        }
    }

    /// What an operation's outcome tells the breaker.
    fn settle<T>(&self, result: &Result<T>) {
        let health = &self.health;
        let changed = match result {
            Ok(_) => health.success(),
            // A background retry's failures would keep the breaker open (each moves its
            // reopening on) for what only retries the outage's work; its successes count.
            Err(err) if err.is_store_fault() && !in_background_retry() => {
                // Returned to a caller (`Cache::get`, `invalidate!`) as well as met by a
                // call that went on without the cache: either way, the fault in a row
                // that `Health` reports.
                self.note_fault(err);
                health.failure()
            }
            Err(_) => false,
        };
        #[cfg(feature = "metrics")]
        self.breaker_gauge.report(changed, || health.is_open());
        #[cfg(not(feature = "metrics"))]
        let _ = changed;
    }

    /// An operation timed out. A connection whose peer went away without a reset (a host
    /// or a load balancer gone, a stale NAT entry) fails nothing: every operation on it
    /// times out until the kernel gives it up, a quarter of an hour later. So after
    /// [`STALLED_AFTER`] faults in a row, a timeout has the store check that its connection
    /// still answers (a `PING`, one check at a time, within the connect timeout), and
    /// replace it if not.
    fn stalled(&self) {
        if self.health.consecutive() >= STALLED_AFTER {
            self.backend.stalled(self.config.connect_timeout());
        }
    }

    /// Whether a warning may be logged now (at most one a second per cache), and how many
    /// were held back since the last one.
    pub(crate) fn may_log(&self) -> Option<u64> {
        self.health.may_log()
    }

    /// Keeps `err` as the fault [`Health::last_fault`](crate::Health::last_fault) reports.
    fn note_fault(&self, err: &Error) {
        *self
            .last_fault
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(LastFault {
            error: err.to_string(),
            at: std::time::SystemTime::now(),
        });
    }

    /// Counts a fault and logs it, at most once a second per cache. A skipped operation
    /// (open breaker) is counted apart and not logged again.
    pub(crate) fn fault(&self, key: &str, err: &Error) {
        if matches!(err, Error::Unavailable { .. }) {
            return;
        }
        self.record(None, Event::Fault);
        #[cfg(feature = "metrics")]
        crate::metrics::fault(err);
        self.note_fault(err);
        if let Some(suppressed) = self.health.may_log() {
            tracing::warn!(
                key,
                error = %err,
                suppressed,
                "redcache: cache fault; the call went on without the cache"
            );
        }
    }
}

tokio::task_local! {
    /// Set while work that failed is tried again in the background (see
    /// [`Core::in_background`]).
    static BACKGROUND_RETRY: ();
}

/// Whether this runs within [`Core::in_background`].
fn in_background_retry() -> bool {
    BACKGROUND_RETRY.try_with(|_| ()).is_ok()
}

impl Core {
    /// Runs `work`, a retry in the background of what failed (an eviction, a lease's
    /// release): its failures do not inform the breaker, and its invalidations do not count
    /// as new changes (see `changed`).
    pub(crate) async fn in_background<F: Future>(work: F) -> F::Output {
        BACKGROUND_RETRY.scope((), work).await
    }
}

pin_project_lite::pin_project! {
    /// One store operation under the timeout and the breaker ([`Core::op`]). A future of
    /// its own, not an `async fn`: an `async fn` keeps the operation twice (as its argument
    /// and as what it awaits), which doubled the size of every read's future above it and
    /// the bytes each hit copied as those futures moved into their callers.
    pub(crate) struct Op<'a, F> {
        core: &'a Core,
        // The operation is held here alone, whatever the mode: each wrapper around it
        // (tokio's `Timeout`, an enum's variant) was one more copy of it as the operation
        // was built.
        #[pin]
        op: F,
        #[pin]
        mode: Mode,
    }
}

pin_project_lite::pin_project! {
    #[project = ModeProj]
    enum Mode {
        /// The memory store: nothing to time out, no breaker.
        Local,
        /// A remote store, under the operation timeout: the operation is polled first, then
        /// (while it is pending) its timer.
        Timed { #[pin] timer: tokio::time::Sleep, after: Duration },
        /// A remote store, without a timeout of its own.
        Untimed,
        /// Not tried: the breaker is open.
        Skipped { cooldown: Duration },
    }
}

impl<F: Future<Output = Result<T>>, T> Future for Op<'_, F> {
    type Output = Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        let this = self.project();
        let result = match this.mode.project() {
            ModeProj::Local => return this.op.poll(cx),
            ModeProj::Skipped { cooldown } => {
                return Poll::Ready(Err(Error::Unavailable {
                    cooldown: *cooldown,
                }))
            }
            ModeProj::Untimed => ready!(this.op.poll(cx)),
            ModeProj::Timed { timer, after } => match this.op.poll(cx) {
                Poll::Ready(result) => result,
                Poll::Pending => {
                    // Outside the task's budget: an operation that spent its last unit
                    // must not keep its timer from firing (tokio's `Timeout` polls its
                    // timer unconstrained then, too).
                    ready!(Pin::new(&mut tokio::task::unconstrained(timer)).poll(cx));
                    let result = Err(Error::Timeout { after: *after });
                    this.core.settle(&result);
                    this.core.stalled();
                    return Poll::Ready(result);
                }
            },
        };
        this.core.settle(&result);
        Poll::Ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    /// A store operation that never completes and spends all that is left of the task's
    /// budget each time it is polled.
    struct SpendsTheBudget;

    impl Future for SpendsTheBudget {
        type Output = Result<()>;

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
            loop {
                let spend = std::pin::pin!(tokio::task::consume_budget());
                if spend.poll(cx).is_pending() {
                    return Poll::Pending;
                }
            }
        }
    }

    /// A retry in the background (of an eviction, a lease's release) neither counts as a
    /// new change (which would make single-flight followers refuse their leader's result
    /// during an outage) nor lets its failures inform the breaker; outside it, both count.
    #[tokio::test]
    async fn a_background_retry_counts_no_change_and_no_failure() {
        let store = MemoryStore::new(16, 1 << 20, Duration::from_secs(1));
        let core = Core::new(Backend::Memory(Box::new(store)), Config::default());
        let failing = |core| Op {
            core,
            op: std::future::ready(Err::<(), _>(Error::Timeout {
                after: Duration::from_millis(1),
            })),
            mode: Mode::Untimed,
        };
        Core::in_background(async {
            core.op_invalidation(None, async { Ok(()) }).await.unwrap();
            assert!(failing(&core).await.is_err());
        })
        .await;
        assert_eq!(core.changes(), 0);
        assert_eq!(core.health().consecutive_faults, 0);
        core.op_invalidation(None, async { Ok(()) }).await.unwrap();
        assert!(failing(&core).await.is_err());
        assert_eq!(core.changes(), 2, "counted as it starts and as it ends");
        assert_eq!(core.health().consecutive_faults, 1);
    }

    #[tokio::test]
    async fn the_timeout_fires_when_the_operation_spends_the_whole_budget() {
        let store = MemoryStore::new(16, 1 << 20, Duration::from_secs(1));
        let core = Core::new(Backend::Memory(Box::new(store)), Config::default());
        let after = Duration::from_millis(50);
        let op = Op {
            core: &core,
            op: SpendsTheBudget,
            mode: Mode::Timed {
                timer: tokio::time::sleep(after),
                after,
            },
        };
        // tokio's own timeout polls its timer outside the budget too, so this one fires.
        let done = tokio::time::timeout(Duration::from_secs(10), op).await;
        assert!(
            matches!(done, Ok(Err(Error::Timeout { after: a })) if a == after),
            "{done:?}"
        );
    }
}
