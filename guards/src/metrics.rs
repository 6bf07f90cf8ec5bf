//! Counters of the guards and the cache, for `/metrics`: rule matches per guard, rule and action;
//! classifier calls and failures; masked values per kind and direction; context rejections; cache hits,
//! misses, bypasses, stores, store errors and the money hits saved. Every label value comes from config
//! or a fixed list, so the number of series is bounded.

use crate::redact::{Counts, Kind};
use crate::rules::Action;
use prometheus_client::encoding::DescriptorEncoder;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use tollgate_events::prom::{self, Kind as MetricKind};

#[derive(Default)]
pub struct GuardMetrics {
    /// (guard, rule, action) → matches.
    matches: Mutex<BTreeMap<(String, String, &'static str), u64>>,
    /// (direction, kind) → values masked.
    redacted: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    pub requests_blocked_by_redaction: AtomicU64,
    pub context_rejected: AtomicU64,
    /// Prompts the context check had to count exactly.
    pub context_counted: AtomicU64,
    pub classifier_calls: AtomicU64,
    pub classifier_errors: AtomicU64,
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    pub cache_bypassed: AtomicU64,
    pub cache_stores: AtomicU64,
    pub cache_store_errors: AtomicU64,
    pub cache_saved_nanousd: AtomicU64,
}

impl GuardMetrics {
    pub fn matched(&self, guard: &str, rule: &str, action: Action) {
        if let Ok(mut m) = self.matches.lock() {
            *m.entry((guard.to_string(), rule.to_string(), action.as_str())).or_default() += 1;
        }
    }

    pub fn redacted(&self, direction: &'static str, counts: &Counts) {
        if counts.total() == 0 {
            return;
        }
        if let Ok(mut m) = self.redacted.lock() {
            for (k, n) in counts.iter() {
                *m.entry((direction, k.as_str())).or_default() += u64::from(n);
            }
        }
    }

    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Matches so far of one guard and rule (tests and the admin view).
    pub fn matches_of(&self, guard: &str, rule: &str) -> u64 {
        self.matches
            .lock()
            .map(|m| m.iter().filter(|((g, r, _), _)| g == guard && r == rule).map(|(_, n)| *n).sum())
            .unwrap_or(0)
    }

    /// Encodes these counters into the process's metrics registry at scrape time.
    pub fn encode_metrics(&self, e: &mut DescriptorEncoder) -> std::fmt::Result {
        let matches: Vec<((String, String, &'static str), u64)> =
            self.matches.lock().map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect()).unwrap_or_default();
        prom::encode_family(
            e,
            "tollgate_guard_matches",
            "Injection-rule matches by guard, rule and action.",
            MetricKind::Counter,
            matches
                .iter()
                .map(|((g, r, a), n)| (vec![("guard", g.as_str()), ("rule", r.as_str()), ("action", *a)], *n as f64)),
        )?;
        let redacted: Vec<(&'static str, &'static str, u64)> = self
            .redacted
            .lock()
            .map(|m| {
                let m = &*m;
                ["request", "response"]
                    .into_iter()
                    .flat_map(|dir| {
                        Kind::ALL
                            .iter()
                            .map(move |k| (dir, k.as_str(), m.get(&(dir, k.as_str())).copied().unwrap_or(0)))
                    })
                    .collect()
            })
            .unwrap_or_default();
        prom::encode_family(
            e,
            "tollgate_redacted",
            "Values masked by redaction, by direction and kind.",
            MetricKind::Counter,
            redacted.iter().map(|(d, k, n)| (vec![("direction", *d), ("kind", *k)], *n as f64)),
        )?;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64;
        // The money cache hits saved is `tollgate_cache_saved_nanousd_total`, labelled like the cost
        // counter, in the gateway's families.
        let scalars: [(&str, &str, f64); 10] = [
            (
                "tollgate_redaction_blocked",
                "Requests refused because they carried secrets or PII (redaction mode block).",
                get(&self.requests_blocked_by_redaction),
            ),
            (
                "tollgate_context_rejected",
                "Requests refused because the prompt cannot fit the model's window or policy.",
                get(&self.context_rejected),
            ),
            (
                "tollgate_context_counted",
                "Prompts whose tokens had to be counted for the context check.",
                get(&self.context_counted),
            ),
            ("tollgate_guard_classifier_calls", "Calls to external classifiers.", get(&self.classifier_calls)),
            (
                "tollgate_guard_classifier_errors",
                "Classifier calls that failed or timed out.",
                get(&self.classifier_errors),
            ),
            ("tollgate_cache_hits", "Requests answered from the response cache.", get(&self.cache_hits)),
            ("tollgate_cache_misses", "Cacheable requests not found in the cache.", get(&self.cache_misses)),
            (
                "tollgate_cache_bypassed",
                "Cacheable requests that asked to bypass the cache.",
                get(&self.cache_bypassed),
            ),
            ("tollgate_cache_stores", "Responses written to the cache.", get(&self.cache_stores)),
            (
                "tollgate_cache_store_errors",
                "Cache reads or writes that failed (counted as misses).",
                get(&self.cache_store_errors),
            ),
        ];
        for (name, help, v) in scalars {
            prom::encode_scalar(e, name, help, MetricKind::Counter, v)?;
        }
        Ok(())
    }
}
