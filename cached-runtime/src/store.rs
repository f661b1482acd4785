//! Where entries live: Redis, or an in-process map.
//!
//! Both stores implement the same operations with the same semantics, so every behaviour
//! test runs on both. The one subtle operation is [`Store::fill`]: a miss stores its result
//! only if the key still holds what the miss read (nothing, or the same bytes) and, for a
//! function in an eviction group, the group's generation is unchanged. An invalidation
//! replaces the entry with a tombstone, so a fill that started before it fails the check
//! and cannot store a value computed from data the invalidation was meant to retire.

use crate::local::LocalTier;
use crate::Result;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

mod cluster;
mod memory;
mod redis;
mod sentinel;

pub(crate) use self::cluster::ClusterConn;
pub(crate) use self::memory::{Bounded, MemoryStore, ENTRY_OVERHEAD};
pub(crate) use self::redis::{background, Link, RedisStore};

/// What an invalidation's write (a tombstone, a new generation) replaced.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Replaced {
    /// What was there (`None`: nothing).
    Was(Option<Vec<u8>>),
    /// Not known: the connection dropped after Redis ran the write, which was sent again
    /// and found the first one's value.
    Unknown,
}

impl Replaced {
    /// Whether something was there, unless that is not known.
    pub(crate) fn was(self) -> crate::Result<Option<Vec<u8>>> {
        match self {
            Replaced::Was(old) => Ok(old),
            Replaced::Unknown => Err(crate::Error::redis(::redis::RedisError::from(
                std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    "the connection dropped after Redis ran the invalidation: it is done, but \
                     what it replaced is unknown",
                ),
            ))),
        }
    }
}

/// An entry and its group's raw generation, as one `MGET` reads them.
pub(crate) type EntryAndGen = (Option<Vec<u8>>, Option<Vec<u8>>);

/// What a read saw at a key, as a fill must find it again to store its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen<'a> {
    /// No entry.
    Nothing,
    /// These bytes (a tombstone, an entry that did not decode, a stale generation).
    Bytes(&'a [u8]),
    /// A key of another Redis type: overwritten.
    WrongType,
    /// Whatever is there (write-through): only the group generation is checked.
    Any,
}

/// The group generation a grouped fill was stamped with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GroupFence<'a> {
    /// The group's generation key.
    pub(crate) key: &'a str,
    /// The generation written into the value's envelope.
    pub(crate) gen: u64,
    /// The generation key did not exist when read: the fill creates it with `gen`.
    pub(crate) create: bool,
    /// The generation expires (a path's, of the HTTP layer): the fill makes it live at
    /// least as long as the entry. Group generations never expire. An expired generation
    /// only costs misses: no entry is stamped with "none".
    pub(crate) expiring: bool,
}

impl<'a> GroupFence<'a> {
    /// The fence of a write to a grouped entry: the generation that was read (`current`),
    /// or a new one that the write creates if there was none.
    pub(crate) fn at(key: &'a str, current: Option<u64>) -> Self {
        match current {
            Some(gen) => GroupFence {
                key,
                gen,
                create: false,
                expiring: false,
            },
            None => GroupFence {
                key,
                gen: crate::key::new_generation(),
                create: true,
                expiring: false,
            },
        }
    }

    /// The same fence, for a generation that expires (see [`GroupFence::expiring`]).
    pub(crate) fn expiring(self, expiring: bool) -> Self {
        GroupFence { expiring, ..self }
    }
}

/// A conditional write of a miss's result. Kept for `ttl`, or longer where the entry must
/// go on fencing older fills: a write-through (`Seen::Any`) as long as the store's fence
/// (`max_fill_time`), and a write over an entry that fenced as long as that entry would
/// have. Such an entry's stamp says when it expires (`Core::stamp_kept`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fill<'a> {
    pub(crate) key: &'a str,
    pub(crate) value: &'a [u8],
    pub(crate) ttl: Duration,
    pub(crate) seen: Seen<'a>,
    pub(crate) group: Option<GroupFence<'a>>,
}

/// The operations a backing store provides. Every value is an encoded envelope; every
/// entry write carries its TTL.
pub(crate) trait Store {
    /// The bytes at `key`, or `None` when there is no live entry.
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Vec<u8>>>> + Send;
    /// The bytes at `key` and the raw generation at `gen_key`, in one round trip.
    fn get_with_gen(
        &self,
        key: &str,
        gen_key: &str,
    ) -> impl Future<Output = Result<EntryAndGen>> + Send;
    /// Stores a miss's result if the key and the group are as the read saw them; whether
    /// it was stored.
    fn fill(&self, fill: &Fill<'_>) -> impl Future<Output = Result<bool>> + Send;
    /// The bytes at each of `keys`, in one round trip.
    fn get_many(
        &self,
        keys: &[String],
    ) -> impl Future<Output = Result<Vec<Option<Vec<u8>>>>> + Send;
    /// [`fill`](Store::fill) for each, in one round trip; whether each was stored.
    fn fill_many(&self, fills: &[Fill<'_>]) -> impl Future<Output = Result<Vec<bool>>> + Send;
    /// Writes `value` at `key`, whatever was there: a writer's write, which fences the fills
    /// whose reads came before it, and so is kept for `ttl` or the store's fence
    /// (`max_fill_time`), the longer (its stamp says when it expires).
    fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Replaces `key` by a new tombstone living `ttl` (an invalidation); what was there.
    /// Sent again on a new connection, with another new tombstone: the same one written
    /// again could bring back one that a reader saw before another client's invalidation.
    fn retire(&self, key: &str, ttl: Duration) -> impl Future<Output = Result<Replaced>> + Send;
    /// Moves `key` (a group's, a tag's or a path's generation) to a new generation, made
    /// here, expiring after `ttl` (`None`: never); what was there. Sent again on a new
    /// connection with another new generation: the same one written again could restore
    /// it over a newer one that another client wrote in between.
    fn regenerate(
        &self,
        key: &str,
        ttl: Option<Duration>,
    ) -> impl Future<Output = Result<Replaced>> + Send;
    /// Writes `value` at `key` for `ttl` (`None`: with no expiry) if there is nothing
    /// there; whether it did (a lease, a generation made where there was none).
    fn set_nx(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> impl Future<Output = Result<bool>> + Send;
    /// Removes `key` if it holds `value` (a lease's owner releasing it); whether it did.
    fn delete_if(&self, key: &str, value: &[u8]) -> impl Future<Output = Result<bool>> + Send;
    /// Time left before `key` expires, or `None` when there is no entry.
    fn ttl(&self, key: &str) -> impl Future<Output = Result<Option<Duration>>> + Send;
    /// Replaces every key that starts with `prefix` by a tombstone living `ttl`, walking
    /// `batch` keys at a time, each step (a `SCAN` and its scripts) within `step`, except
    /// leases (see [`prefix_retires`]); how many entries it replaced, tombstones (replaced by
    /// new ones) not counted.
    fn invalidate_prefix(
        &self,
        prefix: &str,
        batch: usize,
        ttl: Duration,
        step: Duration,
    ) -> impl Future<Output = Result<u64>> + Send;
}

/// What a prefix invalidation does with `value` at `key`: `None` for a lease (`{key}:lock`
/// holding its owner's decimal token), left as it is; else it writes a new tombstone, and
/// `Some(true)` when what it replaced counts as an entry (not a tombstone). A tombstone is
/// replaced too: a miss that read it would otherwise find it unchanged and store what it
/// read before this invalidation. The Redis script applies the same rule.
pub(crate) fn prefix_retires(key: &[u8], value: &[u8]) -> Option<bool> {
    let lease =
        key.ends_with(b":lock") && !value.is_empty() && value.iter().all(u8::is_ascii_digit);
    (!lease).then(|| !crate::codec::is_tombstone(value))
}

/// The store of one [`Cache`](crate::Cache), dispatched statically (no boxed futures on the
/// hit path).
#[derive(Debug)]
pub(crate) enum Backend {
    /// A standalone server, or the master behind Sentinel (and, reading from replicas, a
    /// replica the Sentinels name).
    Redis(RedisStore),
    Cluster(RedisStore<ClusterConn>),
    Memory(Box<MemoryStore>),
}

/// Awaits a Redis operation in its `redcache.store` span.
macro_rules! traced {
    ($command:expr, $op:expr) => {
        in_span!(&store_span($command), $op)
    };
}

impl Backend {
    /// Whether operations can stall and need the operation timeout and the breaker.
    pub(crate) fn is_remote(&self) -> bool {
        !matches!(self, Backend::Memory(_))
    }

    /// Operations keep timing out on the connection: check that it still answers, and
    /// replace it if not (see [`RedisStore::stalled`]). A cluster's connection, which
    /// reconnects its nodes by itself, and the in-process store are left as they are.
    pub(crate) fn stalled(&self, check_for: Duration) {
        if let Backend::Redis(s) = self {
            s.stalled(check_for);
        }
    }

    /// What the store knows of its connection (the in-process store's is always up).
    pub(crate) fn link(&self) -> Link {
        match self {
            Backend::Redis(s) => s.link(),
            Backend::Cluster(s) => s.link(),
            Backend::Memory(_) => Link::Up,
        }
    }

    /// Whether the relaxed reads may be answered by a replica: then a read that is not a
    /// hit is read again from the master.
    pub(crate) fn reads_replicas(&self) -> bool {
        match self {
            Backend::Redis(s) => s.reads_replicas(),
            Backend::Cluster(_) | Backend::Memory(_) => false,
        }
    }

    /// `command` (`GET`, `MGET`) of `keys` answered by a replica (reading from replicas),
    /// possibly older than the master by the replication lag; `None` when the master must
    /// answer instead (see [`Core::relaxed_op`](crate::core::Core::relaxed_op)).
    pub(crate) async fn replica_read<K: AsRef<str>, T: ::redis::FromRedisValue>(
        &self,
        command: &'static str,
        keys: &[K],
    ) -> Option<T> {
        match self {
            Backend::Redis(s) => traced!(command, s.replica_read(command, keys)),
            Backend::Cluster(_) | Backend::Memory(_) => None,
        }
    }

    /// The local tier in front of Redis, if there is one.
    pub(crate) fn local_tier(&self) -> Option<&Arc<LocalTier>> {
        match self {
            Backend::Redis(s) => s.local_tier(),
            Backend::Cluster(s) => s.local_tier(),
            Backend::Memory(_) => None,
        }
    }

    /// A read that Redis then tracks for the local tier (see
    /// [`RedisStore::get_tracked`]); on the memory store, a plain read with no TTL.
    pub(crate) async fn get_tracked(
        &self,
        key: &str,
        gen_key: Option<&str>,
    ) -> Result<(EntryAndGen, Option<Duration>)> {
        match self {
            Backend::Redis(s) => traced!("PIPELINE", s.get_tracked(key, gen_key)),
            Backend::Cluster(s) => traced!("PIPELINE", s.get_tracked(key, gen_key)),
            Backend::Memory(s) => {
                let found = match gen_key {
                    Some(gen_key) => s.get_with_gen(key, gen_key).await?,
                    None => (s.get(key).await?, None),
                };
                Ok((found, None))
            }
        }
    }
}

/// Forwards each operation to the store in use. Operations on Redis run in a `trace` span
/// named `redcache.store` with OpenTelemetry's database attributes (`db.system.name`
/// `redis`, `db.operation.name` the command); a span that no subscriber wants costs one
/// check of a static.
macro_rules! dispatch {
    ($command:expr, $self:ident . $op:ident ( $($arg:expr),* )) => {
        match $self {
            Backend::Redis(s) => traced!($command, s.$op($($arg),*)),
            Backend::Cluster(s) => traced!($command, s.$op($($arg),*)),
            Backend::Memory(s) => s.$op($($arg),*).await,
        }
    };
}

/// The span of one Redis operation.
fn store_span(command: &'static str) -> tracing::Span {
    tracing::trace_span!(
        "redcache.store",
        db.system.name = "redis",
        db.operation.name = command
    )
}

impl Store for Backend {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        dispatch!("GET", self.get(key))
    }

    async fn get_with_gen(&self, key: &str, gen_key: &str) -> Result<EntryAndGen> {
        dispatch!("MGET", self.get_with_gen(key, gen_key))
    }

    async fn fill(&self, fill: &Fill<'_>) -> Result<bool> {
        dispatch!(
            // The common miss is SET NX; a fenced fill is a script.
            match (fill.seen, fill.group) {
                (Seen::Nothing, None) => "SET",
                _ => "EVALSHA",
            },
            self.fill(fill)
        )
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
        dispatch!("MGET", self.get_many(keys))
    }

    async fn fill_many(&self, fills: &[Fill<'_>]) -> Result<Vec<bool>> {
        dispatch!("PIPELINE", self.fill_many(fills))
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<()> {
        dispatch!("SET", self.set(key, value, ttl))
    }

    async fn retire(&self, key: &str, ttl: Duration) -> Result<Replaced> {
        dispatch!("SET", self.retire(key, ttl))
    }

    async fn regenerate(&self, key: &str, ttl: Option<Duration>) -> Result<Replaced> {
        dispatch!("SET", self.regenerate(key, ttl))
    }

    async fn set_nx(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        dispatch!("SET", self.set_nx(key, value, ttl))
    }

    async fn delete_if(&self, key: &str, value: &[u8]) -> Result<bool> {
        dispatch!("EVAL", self.delete_if(key, value))
    }

    async fn ttl(&self, key: &str) -> Result<Option<Duration>> {
        dispatch!("PTTL", self.ttl(key))
    }

    async fn invalidate_prefix(
        &self,
        prefix: &str,
        batch: usize,
        ttl: Duration,
        step: Duration,
    ) -> Result<u64> {
        dispatch!("SCAN", self.invalidate_prefix(prefix, batch, ttl, step))
    }
}
