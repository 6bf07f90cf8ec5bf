//! The exact-match response cache: what a key is made of ([`key`]), what is stored ([`CachedResponse`]),
//! and one store interface ([`CacheStore`]) with two implementations, in memory (LRU with TTL and a byte
//! bound, one gateway) and Redis (shared by a fleet of gateways).

pub mod key;
pub mod memory;
pub mod redis;

pub use key::{cache_key, CacheKey, KeyPolicy, Uncacheable};
pub use memory::MemoryCache;
pub use redis::RedisCache;

use crate::config::{CacheBackend, CacheConfig};
use crate::metrics::GuardMetrics;
use crate::GuardError;
use http::HeaderMap;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// A response as the client received it, with what metering needs to price a hit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedResponse {
    pub status: u16,
    pub content_type: String,
    /// Whether `body` is an SSE stream, replayed as is.
    pub stream: bool,
    pub served_model: String,
    pub provider: String,
    pub upstream: String,
    pub finish_reason: String,
    /// Token counts of the original call (normalised as in the call event).
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub cache_write_tokens: u64,
    pub reasoning_tokens: u64,
    /// When it was stored, µs since the Unix epoch.
    pub stored_at_us: i64,
    /// The exact response bytes (JSON body, or the whole SSE stream).
    #[serde(skip)]
    pub body: Vec<u8>,
}

/// Encoding version of a stored entry; an entry of another version is a miss.
const FORMAT: u8 = 1;

impl CachedResponse {
    /// `[FORMAT][u32 header length][header JSON][body]`: the body is stored raw, not as JSON text.
    pub fn encode(&self) -> Result<Vec<u8>, GuardError> {
        let header = serde_json::to_vec(self).map_err(|e| GuardError::Cache(e.to_string()))?;
        let len = u32::try_from(header.len()).map_err(|_| GuardError::Cache("header too large".into()))?;
        let mut out = Vec::with_capacity(5 + header.len() + self.body.len());
        out.push(FORMAT);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(&self.body);
        Ok(out)
    }

    pub fn decode(b: &[u8]) -> Result<CachedResponse, GuardError> {
        let bad = || GuardError::Cache("stored entry is corrupt or of another version".into());
        if b.len() < 5 || b[0] != FORMAT {
            return Err(bad());
        }
        let len = u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize;
        let header = b.get(5..5 + len).ok_or_else(bad)?;
        let mut r: CachedResponse = serde_json::from_slice(header).map_err(|_| bad())?;
        r.body = b[5 + len..].to_vec();
        Ok(r)
    }

    /// Memory an entry takes, for the size bound.
    pub fn size(&self) -> usize {
        self.body.len()
            + self.content_type.len()
            + self.served_model.len()
            + self.provider.len()
            + self.upstream.len()
            + 128
    }
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where cached responses live. Errors are the store's (Redis down, timeout); callers treat them as a miss.
pub trait CacheStore: Send + Sync {
    fn get<'a>(&'a self, key: &'a CacheKey) -> BoxFuture<'a, Result<Option<Arc<CachedResponse>>, GuardError>>;
    fn put<'a>(
        &'a self,
        key: &'a CacheKey,
        value: Arc<CachedResponse>,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), GuardError>>;
    /// `memory` or `redis`, for logs and metrics.
    fn backend(&self) -> &'static str;
}

/// What the cache does for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachePlan {
    pub key: CacheKey,
    /// Look the request up (false when the client asked for a fresh answer).
    pub lookup: bool,
    /// Store the answer (false for `no-store` and `x-tollgate-cache: bypass`).
    pub store: bool,
}

/// The response cache as the gateway uses it: which requests it covers, bypass headers, the store, metrics.
pub struct ResponseCache {
    cfg: CacheConfig,
    store: Arc<dyn CacheStore>,
    metrics: Arc<GuardMetrics>,
}

impl ResponseCache {
    /// Opens the configured store (connects to Redis: start-up I/O).
    pub async fn start(cfg: CacheConfig, metrics: Arc<GuardMetrics>) -> Result<ResponseCache, GuardError> {
        cfg.validate()?;
        let store: Arc<dyn CacheStore> = match cfg.backend {
            CacheBackend::Memory => Arc::new(MemoryCache::new(cfg.max_entries, cfg.max_bytes)),
            CacheBackend::Redis => {
                let url = cfg.redis_url.clone().unwrap_or_default();
                Arc::new(
                    RedisCache::connect(&url, &cfg.redis_prefix, Duration::from_millis(cfg.redis_timeout_ms)).await?,
                )
            }
        };
        Ok(ResponseCache { cfg, store, metrics })
    }

    /// A cache over any store (tests, benchmarks).
    pub fn with_store(cfg: CacheConfig, store: Arc<dyn CacheStore>, metrics: Arc<GuardMetrics>) -> ResponseCache {
        ResponseCache { cfg, store, metrics }
    }

    pub fn backend(&self) -> &'static str {
        self.store.backend()
    }

    pub fn max_entry_bytes(&self) -> usize {
        self.cfg.max_entry_bytes
    }

    /// The plan for a request, or `None` when its route is not cached or the request is not cacheable.
    /// `Cache-Control: no-cache` skips the lookup and stores the fresh answer; `Cache-Control: no-store`
    /// and `x-tollgate-cache: bypass` skip both.
    pub fn plan(
        &self,
        headers: &HeaderMap,
        tenant: &str,
        client_api: &str,
        endpoint: &str,
        model: &str,
        body: &serde_json::Value,
    ) -> Option<CachePlan> {
        if !self.cfg.covers(model) {
            return None;
        }
        let key = cache_key(tenant, client_api, endpoint, model, body, KeyPolicy { sampled: self.cfg.sampled }).ok()?;
        let has = |name: &str, token: &str| {
            headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        };
        let bypass = has("x-tollgate-cache", "bypass") || has("cache-control", "no-store");
        let refresh = has("cache-control", "no-cache");
        if bypass || refresh {
            GuardMetrics::inc(&self.metrics.cache_bypassed);
        }
        Some(CachePlan { key, lookup: !bypass && !refresh, store: !bypass })
    }

    /// The stored answer, if any. A store failure is logged, counted, and a miss.
    pub async fn get(&self, key: &CacheKey) -> Option<Arc<CachedResponse>> {
        match self.store.get(key).await {
            Ok(Some(r)) => {
                GuardMetrics::inc(&self.metrics.cache_hits);
                Some(r)
            }
            Ok(None) => {
                GuardMetrics::inc(&self.metrics.cache_misses);
                None
            }
            Err(error) => {
                tracing::warn!(backend = self.store.backend(), %error, "cache read failed; treated as a miss");
                GuardMetrics::inc(&self.metrics.cache_store_errors);
                GuardMetrics::inc(&self.metrics.cache_misses);
                None
            }
        }
    }

    /// Stores an answer in the background (the client is not kept waiting). Too large: skipped.
    pub fn put(self: &Arc<Self>, key: CacheKey, value: CachedResponse) {
        if value.body.len() > self.cfg.max_entry_bytes {
            return;
        }
        let me = self.clone();
        let ttl = Duration::from_secs(self.cfg.ttl_s);
        tokio::spawn(async move {
            match me.store.put(&key, Arc::new(value), ttl).await {
                Ok(()) => GuardMetrics::inc(&me.metrics.cache_stores),
                Err(error) => {
                    tracing::warn!(backend = me.store.backend(), %error, "cache write failed");
                    GuardMetrics::inc(&me.metrics.cache_store_errors);
                }
            }
        });
    }

    /// Stores an answer and waits for the store to confirm (tests, benchmarks).
    pub async fn put_now(&self, key: CacheKey, value: CachedResponse) -> Result<(), GuardError> {
        self.store.put(&key, Arc::new(value), Duration::from_secs(self.cfg.ttl_s)).await
    }
}
