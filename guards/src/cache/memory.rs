//! In-memory cache store: least-recently-used eviction under an entry count and a byte bound, and a TTL
//! per entry (an expired entry is a miss and is dropped when seen or when evicted).

use super::{BoxFuture, CacheKey, CacheStore, CachedResponse};
use crate::GuardError;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Slot {
    value: Arc<CachedResponse>,
    expires: Instant,
    tick: u64,
    size: usize,
}

#[derive(Default)]
struct Inner {
    map: HashMap<CacheKey, Slot>,
    /// Use order: tick → key; the first entry is the least recently used.
    order: BTreeMap<u64, CacheKey>,
    tick: u64,
    bytes: usize,
}

pub struct MemoryCache {
    inner: Mutex<Inner>,
    max_entries: usize,
    max_bytes: usize,
    /// Entries evicted to make room (not counting expiry).
    pub evictions: AtomicU64,
}

impl MemoryCache {
    pub fn new(max_entries: usize, max_bytes: usize) -> MemoryCache {
        MemoryCache { inner: Mutex::new(Inner::default()), max_entries, max_bytes, evictions: AtomicU64::new(0) }
    }

    pub fn len(&self) -> usize {
        self.inner.lock().map(|i| i.map.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn bytes(&self) -> usize {
        self.inner.lock().map(|i| i.bytes).unwrap_or(0)
    }

    fn lookup(&self, key: &CacheKey, now: Instant) -> Option<Arc<CachedResponse>> {
        let mut g = self.inner.lock().ok()?;
        let inner = &mut *g;
        let slot = inner.map.get_mut(key)?;
        if slot.expires <= now {
            let (tick, size) = (slot.tick, slot.size);
            inner.map.remove(key);
            inner.order.remove(&tick);
            inner.bytes -= size;
            return None;
        }
        inner.order.remove(&slot.tick);
        inner.tick += 1;
        slot.tick = inner.tick;
        inner.order.insert(inner.tick, *key);
        Some(slot.value.clone())
    }

    fn store(&self, key: &CacheKey, value: Arc<CachedResponse>, ttl: Duration, now: Instant) {
        let size = value.size();
        if size > self.max_bytes || self.max_entries == 0 {
            return;
        }
        let Ok(mut g) = self.inner.lock() else { return };
        let inner = &mut *g;
        if let Some(old) = inner.map.remove(key) {
            inner.order.remove(&old.tick);
            inner.bytes -= old.size;
        }
        while inner.map.len() + 1 > self.max_entries || inner.bytes + size > self.max_bytes {
            let Some((&tick, &victim)) = inner.order.iter().next() else { break };
            inner.order.remove(&tick);
            if let Some(s) = inner.map.remove(&victim) {
                inner.bytes -= s.size;
                if s.expires > now {
                    self.evictions.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        inner.tick += 1;
        let tick = inner.tick;
        inner.order.insert(tick, *key);
        inner.bytes += size;
        inner.map.insert(*key, Slot { value, expires: now + ttl, tick, size });
    }
}

impl CacheStore for MemoryCache {
    fn get<'a>(&'a self, key: &'a CacheKey) -> BoxFuture<'a, Result<Option<Arc<CachedResponse>>, GuardError>> {
        let r = self.lookup(key, Instant::now());
        Box::pin(async move { Ok(r) })
    }

    fn put<'a>(
        &'a self,
        key: &'a CacheKey,
        value: Arc<CachedResponse>,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), GuardError>> {
        self.store(key, value, ttl, Instant::now());
        Box::pin(async { Ok(()) })
    }

    fn backend(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(body: &str) -> Arc<CachedResponse> {
        Arc::new(CachedResponse {
            status: 200,
            content_type: "application/json".into(),
            stream: false,
            served_model: "m".into(),
            provider: "openai".into(),
            upstream: "u".into(),
            finish_reason: "stop".into(),
            input_tokens: 1,
            output_tokens: 2,
            cached_input_tokens: 0,
            cache_write_tokens: 0,
            reasoning_tokens: 0,
            stored_at_us: 0,
            body: body.as_bytes().to_vec(),
        })
    }

    fn k(i: u8) -> CacheKey {
        CacheKey([i; 32])
    }

    #[test]
    fn evicts_the_least_recently_used_and_honours_ttl() {
        let c = MemoryCache::new(2, 1 << 20);
        let t0 = Instant::now();
        let ttl = Duration::from_secs(60);
        c.store(&k(1), resp("a"), ttl, t0);
        c.store(&k(2), resp("b"), ttl, t0);
        assert!(c.lookup(&k(1), t0).is_some()); // 1 is now more recent than 2
        c.store(&k(3), resp("c"), ttl, t0);
        assert!(c.lookup(&k(2), t0).is_none());
        assert_eq!(c.lookup(&k(1), t0).unwrap().body, b"a");
        assert_eq!(c.evictions.load(Ordering::Relaxed), 1);
        // Expired: a miss, and gone.
        assert!(c.lookup(&k(3), t0 + ttl).is_none());
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn stays_under_its_byte_bound() {
        let one = resp(&"x".repeat(1000)).size();
        let c = MemoryCache::new(1000, one * 3);
        let t0 = Instant::now();
        for i in 0..10 {
            c.store(&k(i), resp(&"x".repeat(1000)), Duration::from_secs(60), t0);
            assert!(c.bytes() <= one * 3);
        }
        assert_eq!(c.len(), 3);
        assert!(c.lookup(&k(9), t0).is_some() && c.lookup(&k(6), t0).is_none());
        // Larger than the whole bound: not stored.
        c.store(&k(50), resp(&"x".repeat(one * 4)), Duration::from_secs(60), t0);
        assert!(c.lookup(&k(50), t0).is_none());
    }

    #[test]
    fn encoding_round_trips() {
        let r = resp("data: {\"x\":1}\n\n");
        let back = CachedResponse::decode(&r.encode().unwrap()).unwrap();
        assert_eq!(&back, r.as_ref());
        assert!(CachedResponse::decode(b"\x02xxxx").is_err());
    }
}
