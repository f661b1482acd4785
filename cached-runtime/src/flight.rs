//! Single flight: concurrent calls with the same key in one process share one run of the
//! body.
//!
//! A call reads the store first, without any bookkeeping, so a hit costs nothing here.
//! After a miss it joins the key's flight: the first caller becomes the leader and runs the
//! body and writes the entry; callers that arrive meanwhile follow: they wait for the
//! leader's encoded entry and decode it as a hit. A leader that is cancelled or panics
//! abandons its flight; its followers then start over and one of them leads.
//!
//! Because the read comes before the join, a caller could miss just before another
//! leader stores the entry and join just after that flight ended. Every flight therefore
//! bumps a counter of its key's stripe when it ends; a new leader whose stripe moved since
//! its read reads again before running the body (see [`Flights::stripe`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::Notify;

#[derive(Debug)]
enum Flight {
    /// The leader runs the body.
    Pending,
    /// The leader talks to the store again (its fill, a re-read, a lease): a caller that
    /// joins now may have read an invalidation that the leader's result predates, so it
    /// must not take that result; it waits, then reads again itself.
    Sealed,
    /// The leader finished: its encoded entry, or `None` when it had nothing to share
    /// (an `Err`, a result its fill did not store).
    Done(Option<Shared>),
    /// The leader went away without finishing (cancelled, panicked).
    Abandoned,
}

/// A leader's result as its followers get it.
#[derive(Clone, Debug)]
pub(crate) struct Shared {
    /// The encoded entry.
    pub(crate) entry: Arc<Vec<u8>>,
    /// Whether the leader's fenced fill stored it: then no invalidation came between the
    /// leader's read and its write. An unfenced result (the store was out, or the value is
    /// over the size limit) may predate an invalidation a follower saw.
    pub(crate) fenced: bool,
    /// For an unfenced result: this process's count of changes (`Core::changes`) when
    /// the leader began; a waiter that finds it moved since refuses the result.
    pub(crate) changes: u64,
}

impl Shared {
    /// An entry the leader's fenced fill stored (or a hit it read).
    pub(crate) fn stored(entry: Vec<u8>) -> Self {
        Shared {
            entry: Arc::new(entry),
            fenced: true,
            changes: 0,
        }
    }

    /// A result with nothing to fence it: the store was out, or it is over the size limit;
    /// computed by a leader that began when this process had made `changes` changes.
    pub(crate) fn unfenced(entry: Vec<u8>, changes: u64) -> Self {
        Shared {
            entry: Arc::new(entry),
            fenced: false,
            changes,
        }
    }
}

/// One flight, shared by its leader, the map and the callers that wait for it: its state
/// under a lock held for a read or an assignment, and a notification when it ends. (A
/// `watch` channel did this at several times the cost: its `send` wakes eight queues, and
/// a leader sends twice, to seal and to finish, on every miss.)
#[derive(Debug)]
pub(crate) struct Cell {
    state: Mutex<Flight>,
    ended: Notify,
}

impl Cell {
    fn state(&self) -> MutexGuard<'_, Flight> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ends the flight with `flight` (unless it ended already) and wakes its waiters.
    fn end(&self, flight: Flight) {
        {
            let mut state = self.state();
            if matches!(*state, Flight::Done(_) | Flight::Abandoned) {
                return;
            }
            *state = flight;
        }
        self.ended.notify_waiters();
    }
}

/// Stripes of flight-end counters (a power of two). Many: a caller whose stripe moved
/// between its read and its join reads again, and with 256 misses under way, 16 stripes
/// (one per last hex digit, as before) made nearly every miss read twice.
const STRIPES: usize = 4096;

/// Maps of the flights under way (a power of two), by stripe: concurrent misses of
/// different keys rarely take the same lock.
const SHARDS: usize = 64;

/// Keyed by the entry's key, hashed with quick_cache's seeded hasher (foldhash, as the
/// local tier's maps): SipHash of a ~50-byte key, three times a miss (join, then the
/// leader's lookup and removal), cost more than the map itself.
type Map = HashMap<Arc<str>, Arc<Cell>, quick_cache::DefaultHashBuilder>;

/// A shard's map on a cache line of its own.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Shard(Mutex<Map>);

#[derive(Debug)]
pub(crate) struct Flights {
    shards: Box<[Shard]>,
    ended: Box<[AtomicU64]>,
    /// Callers waiting on another's flight now (see [`Flights::waiting`]).
    waiting: AtomicUsize,
}

impl Default for Flights {
    fn default() -> Self {
        Flights {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            ended: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            waiting: AtomicUsize::new(0),
        }
    }
}

/// Which stripe `key` belongs to: a hash of its last 8 bytes, hex digits of its md5 for
/// every key `#[cached]` and the HTTP layer derive. Keys that share a stripe only cost
/// each other an extra read.
fn stripe_of(key: &str) -> usize {
    let bytes = key.as_bytes();
    let tail = &bytes[bytes.len().saturating_sub(8)..];
    let mixed = tail.iter().fold(0u64, |h, &b| {
        (h.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    });
    (mixed >> 52) as usize & (STRIPES - 1)
}

/// A caller counted as waiting on a flight (see [`Flights::wait`]).
pub(crate) struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(crate) enum Role<'a> {
    Leader(Leader<'a>),
    Follower(Arc<Cell>),
    /// The flight is sealed or done: wait for its end, then read again.
    Late(Arc<Cell>),
}

pub(crate) struct Leader<'a> {
    flights: &'a Flights,
    key: Arc<str>,
    stripe: usize,
    cell: Arc<Cell>,
}

impl Flights {
    fn shard(&self, stripe: usize) -> MutexGuard<'_, Map> {
        self.shards[stripe & (SHARDS - 1)]
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// How many flights of `key`'s stripe have ended: read it before reading the store;
    /// if it moved by the time this caller leads a flight, a flight may have stored the
    /// entry after the read, so read again.
    pub(crate) fn stripe(&self, key: &str) -> u64 {
        self.ended[stripe_of(key)].load(Ordering::Acquire)
    }

    /// Leads the flight for `key`, or follows the one already under way.
    pub(crate) fn join<'a>(&'a self, key: &str) -> Role<'a> {
        let stripe = stripe_of(key);
        let mut map = self.shard(stripe);
        if let Some(cell) = map.get(key) {
            // An abandoned flight is a leader that went away without cleaning up yet.
            match *cell.state() {
                Flight::Pending => return Role::Follower(cell.clone()),
                Flight::Sealed | Flight::Done(_) => return Role::Late(cell.clone()),
                Flight::Abandoned => {}
            }
        }
        let key: Arc<str> = Arc::from(key);
        let cell = Arc::new(Cell {
            state: Mutex::new(Flight::Pending),
            ended: Notify::new(),
        });
        map.insert(key.clone(), cell.clone());
        Role::Leader(Leader {
            flights: self,
            key,
            stripe,
            cell,
        })
    }

    /// Counts a caller as waiting on another's flight until the guard is dropped (the
    /// wait ended, or the caller was cancelled). Only followers pay for it.
    pub(crate) fn wait(&self) -> Waiting<'_> {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        Waiting(&self.waiting)
    }

    /// How many callers wait on another's flight now.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.0.lock().unwrap().len()).sum()
    }
}

impl Leader<'_> {
    /// From now on, callers that join wait for the end and read again (see
    /// [`Flight::Sealed`]).
    pub(crate) fn seal(&self) {
        let mut state = self.cell.state();
        if matches!(*state, Flight::Pending) {
            *state = Flight::Sealed;
        }
    }

    /// Hands the result to the followers and ends the flight.
    pub(crate) fn finish(self, shared: Option<Shared>) {
        self.cell.end(Flight::Done(shared));
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        // Counted before the flight can be replaced (an abandoned cell counts as none):
        // whoever leads the key next sees it, and reads again.
        self.flights.ended[self.stripe].fetch_add(1, Ordering::Release);
        // A leader that did not finish releases its followers: they start over.
        self.cell.end(Flight::Abandoned);
        let mut map = self.flights.shard(self.stripe);
        if map
            .get(&self.key)
            .is_some_and(|cell| Arc::ptr_eq(cell, &self.cell))
        {
            map.remove(&self.key);
        }
    }
}

/// How a flight ended for a caller that waited on it.
pub(crate) enum Followed {
    /// The leader's result.
    Shared(Shared),
    /// The leader finished with nothing it may share, or it stalled past the bound:
    /// compute without a flight.
    Nothing,
    /// The leader went away (cancelled, panicked): start over.
    Again,
}

/// Waits for the end of a flight, at most `within`: a leader that stalls without being
/// dropped (a body stuck on a lock, a hung connection) holds its followers no longer than
/// that, and then they run the body themselves.
pub(crate) async fn follow(cell: Arc<Cell>, within: Duration) -> Followed {
    let ended = async {
        loop {
            // Listening before looking: an end after the look wakes this waiter.
            let notified = cell.ended.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match &*cell.state() {
                Flight::Done(Some(shared)) => return Followed::Shared(shared.clone()),
                Flight::Done(None) => return Followed::Nothing,
                Flight::Abandoned => return Followed::Again,
                Flight::Pending | Flight::Sealed => {}
            }
            notified.await;
        }
    };
    tokio::time::timeout(within, ended)
        .await
        .unwrap_or(Followed::Nothing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_misses_rarely_share_a_stripe() {
        // 256 keys of one prefix, as 256 concurrent misses would have: nearly all on
        // stripes of their own, so a flight's end rarely sends another call to read again.
        let keys = (0..256u32).map(|i| crate::key::derive_key(None, "p", None, &i.to_le_bytes()));
        let stripes: std::collections::HashSet<usize> = keys.map(|k| stripe_of(&k)).collect();
        assert!(stripes.len() > 240, "{} stripes", stripes.len());
    }

    const WAIT: Duration = Duration::from_secs(30);

    fn shared(entry: &[u8]) -> Shared {
        Shared::stored(entry.to_vec())
    }

    #[tokio::test]
    async fn followers_get_the_leaders_entry() {
        let flights = Flights::default();
        let Role::Leader(leader) = flights.join("k") else {
            panic!("first caller leads")
        };
        let Role::Follower(rx) = flights.join("k") else {
            panic!("second caller follows")
        };
        assert_eq!(
            Arc::strong_count(&leader.cell),
            3,
            "the leader's, the map's and the follower's"
        );
        let waiter = tokio::spawn(follow(rx, WAIT));
        leader.finish(Some(shared(b"entry")));
        let Followed::Shared(shared) = waiter.await.unwrap() else {
            panic!("the entry was shared")
        };
        assert_eq!(shared.entry.as_slice(), b"entry");
        assert_eq!(flights.len(), 0);
    }

    #[tokio::test]
    async fn followers_already_waiting_are_woken_by_the_end() {
        let flights = Flights::default();
        // Each waiter is polled once before the flight ends, so it is parked on the cell.
        let waiting = |rx| {
            let mut waiter = Box::pin(follow(rx, WAIT));
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            assert!(std::future::Future::poll(waiter.as_mut(), &mut cx).is_pending());
            waiter
        };
        let Role::Leader(leader) = flights.join("done") else {
            panic!("first caller leads")
        };
        let Role::Follower(rx) = flights.join("done") else {
            panic!("second caller follows")
        };
        let waiter = waiting(rx);
        leader.finish(Some(shared(b"entry")));
        let Followed::Shared(shared) = waiter.await else {
            panic!("the entry was shared")
        };
        assert_eq!(shared.entry.as_slice(), b"entry");

        let leader = flights.join("gone");
        let Role::Follower(rx) = flights.join("gone") else {
            panic!("second caller follows")
        };
        let waiter = waiting(rx);
        drop(leader);
        assert!(matches!(waiter.await, Followed::Again));
        assert_eq!(flights.len(), 0);
    }

    #[tokio::test]
    async fn a_dropped_leader_releases_its_followers_and_the_key() {
        let flights = Flights::default();
        let leader = flights.join("k");
        let Role::Follower(rx) = flights.join("k") else {
            panic!("second caller follows")
        };
        drop(leader);
        assert!(matches!(follow(rx, WAIT).await, Followed::Again));
        assert!(matches!(flights.join("k"), Role::Leader(_)));
    }

    #[tokio::test]
    async fn callers_joining_a_sealed_flight_are_late() {
        let flights = Flights::default();
        let Role::Leader(leader) = flights.join("k") else {
            panic!("first caller leads")
        };
        let Role::Follower(early) = flights.join("k") else {
            panic!("joined while the body runs: a follower")
        };
        leader.seal();
        let Role::Late(late) = flights.join("k") else {
            panic!("joined after the seal: late")
        };
        leader.finish(Some(shared(b"entry")));
        assert!(matches!(follow(early, WAIT).await, Followed::Shared(_)));
        assert!(matches!(follow(late, WAIT).await, Followed::Shared(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_leader_holds_its_followers_only_so_long() {
        let flights = Flights::default();
        let _stalled = flights.join("k");
        let Role::Follower(rx) = flights.join("k") else {
            panic!("second caller follows")
        };
        let start = tokio::time::Instant::now();
        assert!(matches!(follow(rx, WAIT).await, Followed::Nothing));
        assert_eq!(start.elapsed(), WAIT);
    }

    #[test]
    fn an_ended_flight_moves_its_stripe() {
        let flights = Flights::default();
        let before = flights.stripe("k");
        drop(flights.join("k"));
        assert_eq!(flights.stripe("k"), before + 1);
    }

    #[test]
    fn distinct_keys_fly_separately() {
        let flights = Flights::default();
        let _a = flights.join("a");
        assert!(matches!(flights.join("b"), Role::Leader(_)));
    }
}
