//! Redis cache store, shared by every gateway that points at the same server: `SET key value PX ttl` and
//! `GET key`, under a key prefix. Redis bounds its own memory (`maxmemory` with `allkeys-lru` is the
//! setting for a cache); each operation has a timeout, and a failure is reported to the caller, who treats
//! it as a miss, so a Redis outage costs money (calls are not served from cache) but never fails a call.

use super::{BoxFuture, CacheKey, CacheStore, CachedResponse};
use crate::GuardError;
use redis::aio::ConnectionManager;
use std::sync::Arc;
use std::time::Duration;

pub struct RedisCache {
    conn: ConnectionManager,
    prefix: String,
    timeout: Duration,
}

impl RedisCache {
    /// Connects (start-up I/O: a bad URL or an unreachable server is an error here, not at the first call).
    pub async fn connect(url: &str, prefix: &str, timeout: Duration) -> Result<RedisCache, GuardError> {
        let client = redis::Client::open(url).map_err(|e| GuardError::Cache(format!("redis url: {e}")))?;
        let conn = tokio::time::timeout(timeout.max(Duration::from_secs(5)), ConnectionManager::new(client))
            .await
            .map_err(|_| GuardError::Cache(format!("redis at {url}: connect timed out")))?
            .map_err(|e| GuardError::Cache(format!("redis at {url}: {e}")))?;
        Ok(RedisCache { conn, prefix: prefix.to_string(), timeout })
    }

    fn key(&self, k: &CacheKey) -> String {
        format!("{}{}", self.prefix, k.hex())
    }

    async fn get_impl(&self, key: &CacheKey) -> Result<Option<Arc<CachedResponse>>, GuardError> {
        let mut conn = self.conn.clone();
        let cmd = redis::cmd("GET").arg(self.key(key)).clone();
        let got: Option<Vec<u8>> = tokio::time::timeout(self.timeout, cmd.query_async(&mut conn))
            .await
            .map_err(|_| GuardError::Cache("redis GET timed out".into()))?
            .map_err(|e| GuardError::Cache(format!("redis GET: {e}")))?;
        match got {
            None => Ok(None),
            Some(b) => CachedResponse::decode(&b).map(|r| Some(Arc::new(r))),
        }
    }

    async fn put_impl(&self, key: &CacheKey, value: Arc<CachedResponse>, ttl: Duration) -> Result<(), GuardError> {
        let bytes = value.encode()?;
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut conn = self.conn.clone();
        let cmd = redis::cmd("SET").arg(self.key(key)).arg(bytes).arg("PX").arg(ms).clone();
        let _: () = tokio::time::timeout(self.timeout, cmd.query_async(&mut conn))
            .await
            .map_err(|_| GuardError::Cache("redis SET timed out".into()))?
            .map_err(|e| GuardError::Cache(format!("redis SET: {e}")))?;
        Ok(())
    }
}

impl CacheStore for RedisCache {
    fn get<'a>(&'a self, key: &'a CacheKey) -> BoxFuture<'a, Result<Option<Arc<CachedResponse>>, GuardError>> {
        Box::pin(self.get_impl(key))
    }

    fn put<'a>(
        &'a self,
        key: &'a CacheKey,
        value: Arc<CachedResponse>,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), GuardError>> {
        Box::pin(self.put_impl(key, value, ttl))
    }

    fn backend(&self) -> &'static str {
        "redis"
    }
}
