//! What a read saw, and what it means for a call: a hit, a hit due for early refresh
//! (XFetch), or a miss; and what a miss's fill must find again (the entry it read and the
//! group generation). Hits are counted here, for every caller (batches too).

use super::Entry;
use crate::core::Core;
use crate::key::{parse_gen, BadGeneration};
use crate::shape::{Found, Hooks, Shape};
use crate::stats::{Event, Served};
use crate::store::{GroupFence, Seen, Store};
use crate::ttl::{self, unix_ms};
use crate::Error;
use std::future::Future;
use std::time::Duration;

/// What a read means for a call.
pub(super) enum Examined<O> {
    Hit(Found<O>),
    /// A hit that XFetch picked for recomputation now, before it expires.
    Refresh(Found<O>),
    /// An entry past its TTL but within `stale_ttl`: served while one caller refreshes it.
    Stale(Found<O>),
    Miss,
}

/// What the read of a miss saw: what its fill must find again to store its result.
pub(super) enum Read {
    Found {
        entry: Option<Vec<u8>>,
        gen: Gen,
        /// A replica answered (a call's first read, reading from replicas): only a hit is
        /// served from it; anything else is read again from the master.
        replica: bool,
    },
    /// Redis rejected the read (a key of another Redis type): the fill overwrites it.
    WrongType,
    /// The store failed, timed out, is skipped, or refused the read for now: the call does
    /// not write either, so an outage adds at most one timeout to a call.
    Unavailable,
}

/// An entry `stale_if_error` may answer with, until `until_ms` (Unix milliseconds).
pub(super) struct Stale {
    pub(super) bytes: Vec<u8>,
    pub(super) until_ms: u64,
}

/// A group's generation as read (functions without a group read none: `Missing`).
#[derive(Clone, Copy)]
pub(super) enum Gen {
    Missing,
    At(u64),
    /// Not a generation redcache wrote: nothing of the group is used or stored until
    /// `invalidate_group` replaces it.
    Unusable,
}

impl Read {
    pub(super) fn entry(&self) -> Option<&[u8]> {
        match self {
            Read::Found { entry, .. } => entry.as_deref(),
            _ => None,
        }
    }

    pub(super) fn into_entry(self) -> Option<Vec<u8>> {
        match self {
            Read::Found { entry, .. } => entry,
            _ => None,
        }
    }

    /// Whether an entry written at generation `gen` is current (0: written outside a group).
    pub(super) fn gen_matches(&self, gen: u64) -> bool {
        match self {
            Read::Found {
                gen: Gen::At(current),
                ..
            } => gen == *current,
            Read::Found {
                gen: Gen::Missing, ..
            } => gen == 0,
            _ => false,
        }
    }

    /// Whether the read found a generation of the group other than `gen`: an invalidation
    /// of the group (or HTTP path) came after an entry written at `gen` was computed. (A
    /// read that found none saw no invalidation: each leaves a generation.)
    pub(super) fn saw_other_gen(&self, gen: u64) -> bool {
        matches!(self, Read::Found { gen: Gen::At(current), .. } if *current != gen)
    }

    /// Whether the store failed or was skipped.
    pub(super) fn unavailable(&self) -> bool {
        matches!(self, Read::Unavailable)
    }

    /// Whether the read found bytes at the key (an entry it could not use, a tombstone).
    pub(super) fn saw_entry(&self) -> bool {
        matches!(self, Read::Found { entry: Some(_), .. })
    }

    pub(super) fn writable(&self) -> bool {
        !matches!(
            self,
            Read::Unavailable
                | Read::Found {
                    gen: Gen::Unusable,
                    ..
                }
        )
    }

    pub(super) fn seen(&self) -> Seen<'_> {
        match self {
            Read::Found { entry: None, .. } => Seen::Nothing,
            Read::Found {
                entry: Some(bytes), ..
            } => Seen::Bytes(bytes),
            Read::WrongType | Read::Unavailable => Seen::WrongType,
        }
    }

    /// The generation a grouped fill stamps its value with: the one read, or a new one
    /// the fill creates if there was none.
    pub(super) fn fence<'a>(&self, at: Entry<'a>) -> Option<GroupFence<'a>> {
        let current = match self {
            Read::Found {
                gen: Gen::At(gen), ..
            } => Some(*gen),
            _ => None,
        };
        Some(GroupFence::at(at.gen_key?, current).expiring(at.gen_expires))
    }
}

impl Core {
    /// What a read means for a call: a hit, a hit due for early refresh, or a miss.
    pub(super) fn examine<K: Shape<O>, O>(&self, at: Entry<'_>, read: &Read) -> Examined<O> {
        let taken = |bytes: &&[u8]| !at.force && at.accepts.is_none_or(|accepts| accepts(bytes));
        let Some(bytes) = read.entry().filter(taken) else {
            return Examined::Miss;
        };
        match K::decode(bytes) {
            // A tombstone: a miss, filled over.
            Ok((Found::Gone, _)) => Examined::Miss,
            Ok((found, stamp)) if read.gen_matches(stamp.gen) && stamp.tags == at.tags => {
                if let Some(entry) = stamp.refresh {
                    let now = unix_ms();
                    if now >= entry.expires_ms {
                        // Past its TTL, kept for the stale windows.
                        let late = Duration::from_millis(now - entry.expires_ms);
                        let window = stamp
                            .windows
                            .map_or_else(|| at.policy.stale_ttl(), |w| w.stale());
                        return match window {
                            Some(window) if late < window => Examined::Stale(found),
                            _ => Examined::Miss,
                        };
                    }
                }
                if let (Some(tracked), Some(entry)) = (at.local, stamp.refresh) {
                    // Kept in Redis past its expiry (for another version's stale window):
                    // a local copy lives only until then.
                    let fresh = entry.expires_ms.saturating_sub(unix_ms());
                    tracked.cap(Duration::from_millis(fresh));
                }
                if let (Some(beta), Some(entry)) = (at.policy.early_refresh(), stamp.refresh) {
                    let to_expiry = entry.expires_ms as f64 - unix_ms() as f64;
                    let r = 1.0 - rand::random::<f64>();
                    if ttl::should_refresh(to_expiry, entry.compute_ms as f64, beta, r) {
                        return Examined::Refresh(found);
                    }
                }
                Examined::Hit(found)
            }
            // Written before the group or one of its tags was invalidated: a miss.
            Ok(_) => Examined::Miss,
            // Corrupt, foreign or older-format data: a miss, overwritten.
            Err(err) => {
                self.fault(&at.shown(), &Error::decode_json(&err));
                Examined::Miss
            }
        }
    }

    /// The entry `read` found, if it may answer should the body fail (under
    /// `stale_if_error`, or until it expires as the entry the call is `refreshing`): a
    /// value of the current group generation (never a tombstone: an invalidated entry is
    /// gone), within the window. Bytes, not the value: the caller holds them across the
    /// body, and a decoded output need not be `Send`.
    pub(super) fn stale_candidate<K: Shape<O>, O>(
        &self,
        at: Entry<'_>,
        hooks: Hooks<O>,
        read: &Read,
        refreshing: bool,
    ) -> Option<Stale> {
        if at.policy.stale_if_error().is_none() && !hooks.sets_windows() && !refreshing {
            return None;
        }
        let bytes = read.entry()?;
        match K::decode(bytes) {
            Ok((Found::Value(_), stamp))
                if read.gen_matches(stamp.gen) && stamp.tags == at.tags =>
            {
                let if_error = stamp
                    .windows
                    .map_or_else(|| at.policy.stale_if_error(), |w| w.if_error());
                // An entry refreshed early is still valid: it answers the refresher too if
                // the body fails, until it expires. (Past its TTL, within `stale_ttl`, only
                // `stale_if_error` lets it answer a failure.)
                let window = if_error.or(refreshing.then_some(Duration::ZERO))?;
                let until_ms = stamp
                    .refresh?
                    .expires_ms
                    .saturating_add(ttl::millis(window));
                (unix_ms() < until_ms).then(|| Stale {
                    bytes: bytes.to_vec(),
                    until_ms,
                })
            }
            _ => None,
        }
    }

    /// Counts a hit for `prefix`; `None` for a tombstone (a miss).
    pub(crate) fn count_hit<O>(
        &self,
        prefix: Option<&str>,
        found: Found<O>,
    ) -> Option<(O, Served)> {
        match found {
            Found::Value(out) => {
                self.record(prefix, Event::Hit);
                Some((out, Served::Hit))
            }
            Found::Null(out) => {
                self.record(prefix, Event::NullHit);
                Some((out, Served::NullHit))
            }
            Found::Gone => None,
        }
    }

    /// Reads `key` (and the group generation) from the master; faults are recorded, never
    /// returned.
    #[allow(clippy::manual_async_fn)] // holds `at` once: see `read_from`
    pub(super) fn read<'a>(&'a self, at: Entry<'a>) -> impl Future<Output = Read> + 'a {
        async move { self.read_from(&at, false).await }
    }

    /// [`read`](Self::read), but a replica may answer (reading from replicas): a hit may be
    /// older than the master by the replication lag. Anything else is read again with
    /// `read` before it is acted on.
    pub(super) fn read_relaxed<'a>(&'a self, at: &'a Entry<'a>) -> impl Future<Output = Read> + 'a {
        self.read_from(at, true)
    }

    /// (The entry by reference: a hit's first read holds it once, in its caller.)
    async fn read_from(&self, at: &Entry<'_>, relaxed: bool) -> Read {
        if at.unread {
            return Read::Unavailable;
        }
        let key = at.key;
        let b = &self.backend;
        // A replica may answer only a store that reads replicas (that read is boxed below:
        // its future is larger, and would size every call's future to it).
        let relaxed = relaxed && b.reads_replicas();
        if let Some(tracked) = at.local {
            tracked.note(None, 0);
        }
        let result =
            match (at.gen_key, relaxed) {
                // Boxed: the tracked read's future is several times a plain read's, and would
                // size every call's future (which each hit copies as it is awaited) to it.
                _ if at.local.is_some() => Box::pin(self.op(b.get_tracked(key, at.gen_key)))
                    .await
                    .map(|(found, left)| {
                        if let (Some(tracked), Some(entry)) = (at.local, &found.0) {
                            // Weighed as the bytes it decodes from: a compressed
                            // entry's plain length, which the copy's size follows.
                            tracked.note(left, crate::codec::plain_len(entry));
                        }
                        (found, false)
                    }),
                (None, false) => self
                    .op(b.get(key))
                    .await
                    .map(|entry| ((entry, None), false)),
                (None, true) => Box::pin(self.relaxed_op("GET", &[key], b.get(key)))
                    .await
                    .map(|(entry, replica)| ((entry, None), replica)),
                (Some(gen_key), false) => self
                    .op(b.get_with_gen(key, gen_key))
                    .await
                    .map(|found| (found, false)),
                (Some(gen_key), true) => {
                    let master = b.get_with_gen(key, gen_key);
                    Box::pin(self.relaxed_op("MGET", &[key, gen_key], master)).await
                }
            };
        match result {
            Ok(((entry, gen), replica)) => {
                let gen = match gen.as_deref().map(parse_gen) {
                    None => Gen::Missing,
                    Some(Some(gen)) => Gen::At(gen),
                    Some(None) => {
                        self.fault(&at.shown(), &Error::decode(BadGeneration));
                        Gen::Unusable
                    }
                };
                Read::Found {
                    entry,
                    gen,
                    replica,
                }
            }
            Err(err) => {
                self.fault(&at.shown(), &err);
                // Refused for now too (`LOADING`, `BUSY`, `CLUSTERDOWN`, ..): a fill would be
                // refused the same way (in a cluster, after the resends), so none is sent.
                if err.is_transient() || matches!(err, Error::Unavailable { .. }) {
                    Read::Unavailable
                } else {
                    // Redis rejected the read (a key of another type): write over it.
                    Read::WrongType
                }
            }
        }
    }
}
