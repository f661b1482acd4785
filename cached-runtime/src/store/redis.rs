//! Redis: one multiplexed connection that reconnects by itself.

use super::Store;
use crate::{Config, Error, Result};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::fmt;
use std::time::Duration;

/// Longest expiry sent to Redis (about 300 years), so a huge TTL never overflows `PX`.
const MAX_PX_MS: u128 = 10_000_000_000_000;

pub(crate) struct RedisStore {
    conn: ConnectionManager,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore").finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects and checks the server with `PING`, all within `connect_timeout`.
    pub(crate) async fn connect(config: &Config) -> Result<Self> {
        let info = config.connection_info()?;
        let target = config.redacted_target();
        let connect_error = |source: Box<dyn std::error::Error + Send + Sync>| Error::Connect {
            target: target.clone(),
            source,
        };
        let client = redis::Client::open(info).map_err(|e| connect_error(Box::new(e)))?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout()))
            .set_response_timeout(Some(config.op_timeout()))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let connect = async {
            let mut conn = ConnectionManager::new_with_config(client, manager_config).await?;
            redis::cmd("PING").query_async::<()>(&mut conn).await?;
            Ok::<_, redis::RedisError>(conn)
        };
        match tokio::time::timeout(config.connect_timeout(), connect).await {
            Ok(Ok(conn)) => Ok(RedisStore { conn }),
            Ok(Err(e)) => Err(connect_error(Box::new(e))),
            Err(_) => Err(connect_error(
                format!("no answer within {:?}", config.connect_timeout()).into(),
            )),
        }
    }
}

impl Store for RedisStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let mut conn = self.conn.clone();
        redis::cmd("GET")
            .arg(key)
            .query_async(&mut conn)
            .await
            .map_err(Error::redis)
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<()> {
        let mut conn = self.conn.clone();
        let px = ttl.as_millis().clamp(1, MAX_PX_MS) as u64;
        redis::cmd("SET")
            .arg(key)
            .arg(value)
            .arg("PX")
            .arg(px)
            .query_async(&mut conn)
            .await
            .map_err(Error::redis)
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        let mut conn = self.conn.clone();
        let removed: u64 = redis::cmd("UNLINK")
            .arg(key)
            .query_async(&mut conn)
            .await
            .map_err(Error::redis)?;
        Ok(removed > 0)
    }

    async fn ttl(&self, key: &str) -> Result<Option<Duration>> {
        let mut conn = self.conn.clone();
        let ms: i64 = redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .map_err(Error::redis)?;
        // -2: no such key; -1: no expiry (never written by redcache).
        Ok(match ms {
            -2 => None,
            -1 => Some(Duration::MAX),
            ms => Some(Duration::from_millis(ms.max(0) as u64)),
        })
    }
}
