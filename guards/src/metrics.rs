//! Counters of the guards and the cache, for `/metrics`: rule matches per guard, rule and action;
//! classifier calls and failures; masked values per kind and direction; context rejections; cache hits,
//! misses, bypasses, stores, store errors and the money hits saved. Every label value comes from config
//! or a fixed list, so the number of series is bounded.

use crate::redact::{Counts, Kind};
use crate::rules::Action;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

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

    /// Prometheus text exposition of these counters.
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP tollgate_guard_matches_total Injection-rule matches by guard, rule and action.\n# TYPE tollgate_guard_matches_total counter"
        );
        if let Ok(m) = self.matches.lock() {
            for ((g, r, a), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "tollgate_guard_matches_total{{guard=\"{}\",rule=\"{}\",action=\"{a}\"}} {n}",
                    esc(g),
                    esc(r)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP tollgate_redacted_total Values masked by redaction, by direction and kind.\n# TYPE tollgate_redacted_total counter"
        );
        if let Ok(m) = self.redacted.lock() {
            for dir in ["request", "response"] {
                for k in Kind::ALL {
                    let n = m.get(&(dir, k.as_str())).copied().unwrap_or(0);
                    let _ = writeln!(out, "tollgate_redacted_total{{direction=\"{dir}\",kind=\"{}\"}} {n}", k.as_str());
                }
            }
        }
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let scalars: [(&str, &str, u64); 11] = [
            (
                "tollgate_redaction_blocked_total",
                "Requests refused because they carried secrets or PII (redaction mode block).",
                get(&self.requests_blocked_by_redaction),
            ),
            (
                "tollgate_context_rejected_total",
                "Requests refused because the prompt cannot fit the model's window or policy.",
                get(&self.context_rejected),
            ),
            (
                "tollgate_context_counted_total",
                "Prompts whose tokens had to be counted for the context check.",
                get(&self.context_counted),
            ),
            ("tollgate_guard_classifier_calls_total", "Calls to external classifiers.", get(&self.classifier_calls)),
            (
                "tollgate_guard_classifier_errors_total",
                "Classifier calls that failed or timed out.",
                get(&self.classifier_errors),
            ),
            ("tollgate_cache_hits_total", "Requests answered from the response cache.", get(&self.cache_hits)),
            ("tollgate_cache_misses_total", "Cacheable requests not found in the cache.", get(&self.cache_misses)),
            (
                "tollgate_cache_bypassed_total",
                "Cacheable requests that asked to bypass the cache.",
                get(&self.cache_bypassed),
            ),
            ("tollgate_cache_stores_total", "Responses written to the cache.", get(&self.cache_stores)),
            (
                "tollgate_cache_store_errors_total",
                "Cache reads or writes that failed (counted as misses).",
                get(&self.cache_store_errors),
            ),
            (
                "tollgate_cache_saved_nanousd_total",
                "What cache hits would have cost, nano-USD.",
                get(&self.cache_saved_nanousd),
            ),
        ];
        for (name, help, v) in scalars {
            tollgate_events::prom::write_scalar(out, name, "counter", help, v);
        }
    }
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
