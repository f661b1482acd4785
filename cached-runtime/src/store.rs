//! Where entries live: Redis, or an in-process map.

use crate::Result;
use std::future::Future;
use std::time::Duration;

mod memory;
mod redis;

pub(crate) use self::memory::MemoryStore;
pub(crate) use self::redis::RedisStore;

/// The operations a backing store provides. Every value is an encoded envelope; every
/// write carries its TTL.
pub(crate) trait Store {
    /// The bytes at `key`, or `None` when there is no live entry.
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Vec<u8>>>> + Send;
    /// Writes `value` at `key`, expiring after `ttl`.
    fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Removes `key`; whether an entry was there.
    fn delete(&self, key: &str) -> impl Future<Output = Result<bool>> + Send;
    /// Time left before `key` expires, or `None` when there is no entry.
    fn ttl(&self, key: &str) -> impl Future<Output = Result<Option<Duration>>> + Send;
}

/// The store of one [`Cache`](crate::Cache), dispatched statically (no boxed futures on the
/// hit path).
#[derive(Debug)]
pub(crate) enum Backend {
    Redis(RedisStore),
    Memory(MemoryStore),
}

impl Backend {
    /// Whether operations can stall and need the operation timeout and the breaker.
    pub(crate) fn is_remote(&self) -> bool {
        matches!(self, Backend::Redis(_))
    }
}

impl Store for Backend {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        match self {
            Backend::Redis(s) => s.get(key).await,
            Backend::Memory(s) => s.get(key).await,
        }
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<()> {
        match self {
            Backend::Redis(s) => s.set(key, value, ttl).await,
            Backend::Memory(s) => s.set(key, value, ttl).await,
        }
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        match self {
            Backend::Redis(s) => s.delete(key).await,
            Backend::Memory(s) => s.delete(key).await,
        }
    }

    async fn ttl(&self, key: &str) -> Result<Option<Duration>> {
        match self {
            Backend::Redis(s) => s.ttl(key).await,
            Backend::Memory(s) => s.ttl(key).await,
        }
    }
}
