//! Which upstream created which Responses API response: `GET`/`DELETE /v1/responses/{id}` go to it, and
//! a request with `previous_response_id` is sent only to it (no other upstream holds that conversation).
//! Bounded: past `capacity` ids the oldest is forgotten first. The memory is per gateway process; an id
//! it does not know (forgotten, or created through another gateway) is routed like any other request.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

/// Default number of remembered ids: at ~100 bytes each, about 10 MB.
pub const DEFAULT_CAPACITY: usize = 100_000;

#[derive(Default)]
struct Inner {
    by_id: HashMap<String, Arc<str>>,
    order: VecDeque<String>,
}

/// Response id → name of the upstream that holds it.
pub struct ResponseIds {
    inner: Mutex<Inner>,
    capacity: usize,
}

impl ResponseIds {
    pub fn new(capacity: usize) -> ResponseIds {
        ResponseIds { inner: Mutex::new(Inner::default()), capacity: capacity.max(1) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records that `upstream` holds `id`.
    pub fn remember(&self, id: &str, upstream: Arc<str>) {
        let mut g = self.lock();
        if g.by_id.insert(id.to_string(), upstream).is_none() {
            g.order.push_back(id.to_string());
        }
        while g.order.len() > self.capacity {
            if let Some(old) = g.order.pop_front() {
                g.by_id.remove(&old);
            }
        }
    }

    /// The upstream holding `id`, if remembered.
    pub fn upstream_of(&self, id: &str) -> Option<Arc<str>> {
        self.lock().by_id.get(id).cloned()
    }

    /// Forgets `id` (after a successful DELETE).
    pub fn forget(&self, id: &str) {
        let mut g = self.lock();
        if g.by_id.remove(id).is_some() {
            g.order.retain(|k| k != id);
        }
    }

    pub fn len(&self) -> usize {
        self.lock().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The process's memory (one per gateway process, like the upstream connections it describes).
pub fn global() -> &'static ResponseIds {
    static GLOBAL: LazyLock<ResponseIds> = LazyLock::new(ResponseIds::default);
    &GLOBAL
}

impl Default for ResponseIds {
    fn default() -> Self {
        ResponseIds::new(DEFAULT_CAPACITY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_forgets_and_stays_bounded() {
        let ids = ResponseIds::new(2);
        let a: Arc<str> = Arc::from("a");
        ids.remember("r1", a.clone());
        ids.remember("r2", Arc::from("b"));
        ids.remember("r1", a.clone());
        assert_eq!(ids.upstream_of("r1").as_deref(), Some("a"));
        assert_eq!(ids.len(), 2);
        ids.remember("r3", a);
        assert_eq!(ids.len(), 2);
        assert!(ids.upstream_of("r1").is_none(), "the oldest id goes first");
        assert_eq!(ids.upstream_of("r3").as_deref(), Some("a"));
        ids.forget("r2");
        assert!(ids.upstream_of("r2").is_none());
        assert_eq!(ids.len(), 1);
    }
}
