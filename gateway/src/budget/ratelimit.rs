//! Token and request rate limits in fixed UTC windows (the minute, the day), per key, user or team:
//! charged with the estimate at admission, corrected to real usage when the call settles. Counters live
//! in this gateway's memory: with several gateways each enforces the limits on its own traffic.

use crate::budget::config::{LimitScope, RateLimitDef};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use tollgate_events::CallEvent;

const MINUTE_US: i64 = 60_000_000;
const DAY_US: i64 = 86_400_000_000;

#[derive(Debug, Default)]
pub struct Counter {
    minute: i64,
    minute_requests: u64,
    minute_tokens: u64,
    day: i64,
    day_tokens: u64,
}

impl Counter {
    fn roll(&mut self, now_us: i64) {
        let m = now_us.div_euclid(MINUTE_US);
        if m != self.minute {
            self.minute = m;
            self.minute_requests = 0;
            self.minute_tokens = 0;
        }
        let d = now_us.div_euclid(DAY_US);
        if d != self.day {
            self.day = d;
            self.day_tokens = 0;
        }
    }
}

pub type Counters = Arc<RwLock<HashMap<String, Arc<Mutex<Counter>>>>>;

#[derive(Debug)]
pub struct LimitState {
    pub def: Arc<RateLimitDef>,
    pub counters: Counters,
}

/// Why a call was refused: the limit, which of its numbers, and when to retry.
#[derive(Debug, Clone, PartialEq)]
pub struct Limited {
    pub id: String,
    pub which: &'static str,
    pub limit: u64,
    pub retry_after_s: u64,
}

/// Tokens charged on one counter at admission.
#[derive(Debug)]
pub struct LimitReservation {
    counter: Arc<Mutex<Counter>>,
    minute: i64,
    day: i64,
    estimate: u64,
}

impl LimitReservation {
    /// Replaces the estimate with the real token count (in the windows it was charged to).
    pub fn settle(&self, tokens: u64) {
        let mut c = self.counter.lock().unwrap_or_else(|p| p.into_inner());
        if c.minute == self.minute {
            c.minute_tokens = c.minute_tokens.saturating_sub(self.estimate).saturating_add(tokens);
        }
        if c.day == self.day {
            c.day_tokens = c.day_tokens.saturating_sub(self.estimate).saturating_add(tokens);
        }
    }
}

fn scope_value(scope: LimitScope, ev: &CallEvent) -> &str {
    match scope {
        LimitScope::Key => &ev.api_key_id,
        LimitScope::User => &ev.user,
        LimitScope::Team => &ev.team,
    }
}

impl LimitState {
    fn counter(&self, who: &str) -> Arc<Mutex<Counter>> {
        if let Some(c) = self.counters.read().unwrap_or_else(|p| p.into_inner()).get(who) {
            return c.clone();
        }
        let mut map = self.counters.write().unwrap_or_else(|p| p.into_inner());
        map.entry(who.to_string()).or_default().clone()
    }
}

impl LimitState {
    /// Per window this limit sets: the free share of the most loaded subject's current window.
    pub fn headroom(&self, now_us: i64) -> Vec<(&'static str, f64)> {
        let (minute, day) = (now_us.div_euclid(MINUTE_US), now_us.div_euclid(DAY_US));
        let mut used = [0u64; 3];
        for c in self.counters.read().unwrap_or_else(|p| p.into_inner()).values() {
            let c = c.lock().unwrap_or_else(|p| p.into_inner());
            if c.minute == minute {
                used[0] = used[0].max(c.minute_requests);
                used[1] = used[1].max(c.minute_tokens);
            }
            if c.day == day {
                used[2] = used[2].max(c.day_tokens);
            }
        }
        let d = &self.def;
        [
            ("requests_per_minute", d.requests_per_minute, used[0]),
            ("tokens_per_minute", d.tokens_per_minute, used[1]),
            ("tokens_per_day", d.tokens_per_day, used[2]),
        ]
        .into_iter()
        .filter_map(|(w, limit, used)| limit.filter(|l| *l > 0).map(|l| (w, (1.0 - used as f64 / l as f64).max(0.0))))
        .collect()
    }
}

/// Checks every limit that covers the call and charges all of them, or none.
pub fn admit(
    limits: &[Arc<LimitState>],
    ev: &CallEvent,
    estimate: u64,
    now_us: i64,
) -> Result<Vec<LimitReservation>, Limited> {
    let mut matched = Vec::new();
    for l in limits {
        let who = scope_value(l.def.scope, ev);
        if who.is_empty() || l.def.value.as_deref().is_some_and(|v| v != who) {
            continue;
        }
        matched.push((l, l.counter(who)));
    }
    if matched.is_empty() {
        return Ok(Vec::new());
    }
    let mut guards: Vec<_> = matched.iter().map(|(_, c)| c.lock().unwrap_or_else(|p| p.into_inner())).collect();
    let to_minute = (MINUTE_US - now_us.rem_euclid(MINUTE_US) + 999_999) / 1_000_000;
    let to_day = (DAY_US - now_us.rem_euclid(DAY_US) + 999_999) / 1_000_000;
    for ((l, _), g) in matched.iter().zip(guards.iter_mut()) {
        g.roll(now_us);
        let d = &l.def;
        let refuse = |which, limit| Limited { id: d.id.clone(), which, limit, retry_after_s: 0 };
        if let Some(n) = d.requests_per_minute.filter(|n| g.minute_requests >= *n) {
            return Err(Limited { retry_after_s: to_minute as u64, ..refuse("requests_per_minute", n) });
        }
        if let Some(n) = d.tokens_per_minute.filter(|n| g.minute_tokens.saturating_add(estimate) > *n) {
            return Err(Limited { retry_after_s: to_minute as u64, ..refuse("tokens_per_minute", n) });
        }
        if let Some(n) = d.tokens_per_day.filter(|n| g.day_tokens.saturating_add(estimate) > *n) {
            return Err(Limited { retry_after_s: to_day as u64, ..refuse("tokens_per_day", n) });
        }
    }
    let mut out = Vec::with_capacity(matched.len());
    for ((_, c), g) in matched.iter().zip(guards.iter_mut()) {
        g.minute_requests += 1;
        g.minute_tokens = g.minute_tokens.saturating_add(estimate);
        g.day_tokens = g.day_tokens.saturating_add(estimate);
        out.push(LimitReservation { counter: c.clone(), minute: g.minute, day: g.day, estimate });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(rpm: Option<u64>, tpm: Option<u64>) -> Arc<LimitState> {
        Arc::new(LimitState {
            def: Arc::new(RateLimitDef {
                id: "l".into(),
                scope: LimitScope::Team,
                value: None,
                requests_per_minute: rpm,
                tokens_per_minute: tpm,
                tokens_per_day: None,
            }),
            counters: Default::default(),
        })
    }

    #[test]
    fn tokens_are_charged_on_estimate_and_settled_on_usage() {
        let l = [limit(None, Some(100))];
        let ev = CallEvent { team: "core".into(), ..Default::default() };
        let r = admit(&l, &ev, 60, 1_000_000).unwrap();
        let e = admit(&l, &ev, 41, 2_000_000).unwrap_err();
        assert_eq!((e.which, e.limit, e.retry_after_s), ("tokens_per_minute", 100, 58));
        r[0].settle(10);
        admit(&l, &ev, 90, 3_000_000).unwrap();
        assert!(admit(&l, &ev, 1, 4_000_000).is_err());
        assert!(admit(&l, &ev, 100, 61_000_000).is_ok(), "a new minute");
        let other = CallEvent { team: "other".into(), ..Default::default() };
        assert!(admit(&l, &other, 100, 61_000_000).is_ok(), "each team has its own counter");
    }

    #[test]
    fn requests_per_minute() {
        let l = [limit(Some(2), None)];
        let ev = CallEvent { team: "core".into(), ..Default::default() };
        admit(&l, &ev, 0, 0).unwrap();
        admit(&l, &ev, 0, 0).unwrap();
        assert_eq!(admit(&l, &ev, 0, 0).unwrap_err().which, "requests_per_minute");
    }
}
