//! Single flight: concurrent calls with the same key in one process share one run of the
//! body.
//!
//! A call reads the store first, without any bookkeeping, so a hit costs nothing here.
//! After a miss it joins the key's flight: the first caller becomes the leader and runs the
//! body and writes the entry; callers that arrive meanwhile follow: they wait for the
//! leader's encoded entry and decode it as a hit. A leader that is cancelled or panics
//! drops its channel; its followers then start over and one of them leads.
//!
//! Because the read comes before the join, a caller could miss just before another
//! leader stores the entry and join just after that flight ended. Every flight therefore
//! bumps a counter of its key's stripe when it ends; a new leader whose stripe moved since
//! its read reads again before running the body (see [`Flights::stripe`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::watch;

#[derive(Clone, Debug)]
pub(crate) enum Flight {
    /// The leader runs the body.
    Pending,
    /// The leader talks to the store again (its fill, a re-read, a lease): a caller that
    /// joins now may have read an invalidation that the leader's result predates, so it
    /// must not take that result; it waits, then reads again itself.
    Sealed,
    /// The leader finished: its encoded entry, or `None` when it had nothing to share
    /// (an `Err`, a result its fill did not store).
    Done(Option<Shared>),
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

/// Stripes of flight-end counters (a power of two). Many: a caller whose stripe moved
/// between its read and its join reads again, and with 256 misses under way, 16 stripes
/// (one per last hex digit, as before) made nearly every miss read twice.
const STRIPES: usize = 4096;

#[derive(Debug)]
pub(crate) struct Flights {
    map: Mutex<HashMap<String, (u64, watch::Receiver<Flight>)>>,
    next_id: AtomicU64,
    ended: Box<[AtomicU64]>,
}

impl Default for Flights {
    fn default() -> Self {
        Flights {
            map: Mutex::default(),
            next_id: AtomicU64::new(0),
            ended: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
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

pub(crate) enum Role<'a> {
    Leader(Leader<'a>),
    Follower(watch::Receiver<Flight>),
    /// The flight is sealed or done: wait for its end, then read again.
    Late(watch::Receiver<Flight>),
}

pub(crate) struct Leader<'a> {
    flights: &'a Flights,
    key: String,
    id: u64,
    tx: watch::Sender<Flight>,
}

impl Flights {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, (u64, watch::Receiver<Flight>)>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many flights of `key`'s stripe have ended: read it before reading the store;
    /// if it moved by the time this caller leads a flight, a flight may have stored the
    /// entry after the read, so read again.
    pub(crate) fn stripe(&self, key: &str) -> u64 {
        self.ended[stripe_of(key)].load(Ordering::Acquire)
    }

    /// Leads the flight for `key`, or follows the one already under way.
    pub(crate) fn join<'a>(&'a self, key: &str) -> Role<'a> {
        let mut map = self.lock();
        if let Some((_, rx)) = map.get(key) {
            // A closed channel is a leader that went away without cleaning up yet.
            if rx.has_changed().is_ok() {
                return match *rx.borrow() {
                    Flight::Pending => Role::Follower(rx.clone()),
                    Flight::Sealed | Flight::Done(_) => Role::Late(rx.clone()),
                };
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(Flight::Pending);
        map.insert(key.to_owned(), (id, rx));
        Role::Leader(Leader {
            flights: self,
            key: key.to_owned(),
            id,
            tx,
        })
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

impl Leader<'_> {
    /// From now on, callers that join wait for the end and read again (see
    /// [`Flight::Sealed`]).
    pub(crate) fn seal(&self) {
        self.tx.send_if_modified(|flight| {
            let pending = matches!(flight, Flight::Pending);
            if pending {
                *flight = Flight::Sealed;
            }
            pending
        });
    }

    /// Hands the result to the followers and ends the flight.
    pub(crate) fn finish(self, shared: Option<Shared>) {
        self.tx.send_replace(Flight::Done(shared));
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        // Counted before the flight leaves the map: whoever leads the key next sees it.
        self.flights.ended[stripe_of(&self.key)].fetch_add(1, Ordering::Release);
        let mut map = self.flights.lock();
        if map.get(&self.key).is_some_and(|(id, _)| *id == self.id) {
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
pub(crate) async fn follow(mut rx: watch::Receiver<Flight>, within: Duration) -> Followed {
    let ended = rx.wait_for(|f| matches!(f, Flight::Done(_)));
    match tokio::time::timeout(within, ended).await {
        Ok(Ok(flight)) => match &*flight {
            Flight::Done(Some(shared)) => Followed::Shared(shared.clone()),
            Flight::Done(None) => Followed::Nothing,
            Flight::Pending | Flight::Sealed => Followed::Again,
        },
        Ok(Err(_)) => Followed::Again,
        Err(_) => Followed::Nothing,
    }
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
            leader.tx.receiver_count(),
            2,
            "the map's receiver and the follower's"
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
