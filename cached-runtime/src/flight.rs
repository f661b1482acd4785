//! Single flight: concurrent calls with the same key in one process share one lookup and,
//! on a miss, one run of the body.
//!
//! The first caller of a key becomes the leader: it reads the store and, on a miss, runs
//! the body and writes the entry. Callers that arrive meanwhile follow: they wait for the
//! leader's encoded entry and decode it as a hit. A leader that is cancelled or panics
//! drops its channel; its followers then start over and one of them leads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::watch;

#[derive(Clone, Debug)]
pub(crate) enum Flight {
    Pending,
    /// The leader finished: its encoded entry, or `None` when it had nothing to share
    /// (an `Err`, a value that does not serialize).
    Done(Option<Arc<Vec<u8>>>),
}

#[derive(Debug, Default)]
pub(crate) struct Flights {
    map: Mutex<HashMap<String, (u64, watch::Receiver<Flight>)>>,
    next_id: AtomicU64,
}

pub(crate) enum Role<'a> {
    Leader(Leader<'a>),
    Follower(watch::Receiver<Flight>),
}

pub(crate) struct Leader<'a> {
    flights: &'a Flights,
    key: &'a str,
    id: u64,
    tx: watch::Sender<Flight>,
}

impl Flights {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, (u64, watch::Receiver<Flight>)>> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Leads the flight for `key`, or follows the one already under way.
    pub(crate) fn join<'a>(&'a self, key: &'a str) -> Role<'a> {
        let mut map = self.lock();
        if let Some((_, rx)) = map.get(key) {
            // A closed channel is a leader that went away without cleaning up yet.
            if rx.has_changed().is_ok() {
                return Role::Follower(rx.clone());
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(Flight::Pending);
        map.insert(key.to_owned(), (id, rx));
        Role::Leader(Leader {
            flights: self,
            key,
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
    /// Whether any caller is waiting on this flight (the map holds one receiver itself).
    pub(crate) fn has_followers(&self) -> bool {
        self.tx.receiver_count() > 1
    }

    /// Hands the result to the followers and ends the flight.
    pub(crate) fn finish(self, entry: Option<Arc<Vec<u8>>>) {
        self.tx.send_replace(Flight::Done(entry));
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        let mut map = self.flights.lock();
        if map.get(self.key).is_some_and(|(id, _)| *id == self.id) {
            map.remove(self.key);
        }
    }
}

/// What a follower got: the leader's entry, or a reason to start over.
pub(crate) async fn follow(mut rx: watch::Receiver<Flight>) -> Option<Arc<Vec<u8>>> {
    match rx.wait_for(|f| matches!(f, Flight::Done(_))).await {
        Ok(flight) => match &*flight {
            Flight::Done(entry) => entry.clone(),
            Flight::Pending => None,
        },
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn followers_get_the_leaders_entry() {
        let flights = Flights::default();
        let Role::Leader(leader) = flights.join("k") else {
            panic!("first caller leads")
        };
        let Role::Follower(rx) = flights.join("k") else {
            panic!("second caller follows")
        };
        assert!(leader.has_followers());
        let waiter = tokio::spawn(follow(rx));
        leader.finish(Some(Arc::new(b"entry".to_vec())));
        assert_eq!(waiter.await.unwrap().unwrap().as_slice(), b"entry");
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
        assert!(follow(rx).await.is_none());
        assert!(matches!(flights.join("k"), Role::Leader(_)));
    }

    #[test]
    fn distinct_keys_fly_separately() {
        let flights = Flights::default();
        let _a = flights.join("a");
        assert!(matches!(flights.join("b"), Role::Leader(_)));
    }
}
