//! The budget ledger: per budget and window, the authoritative spend from the query service (`snapshot`),
//! this gateway's own settled spend since that snapshot (`local`) and reservations for calls in flight
//! (`reserved`). A call is admitted only if `used < cap` and `used + estimate <= cap`, where
//! `used = snapshot + local + reserved`: a call that lands exactly on the cap is admitted, a budget that is
//! at its cap admits nothing more.
//!
//! Each budget's state sits behind its own mutex, held for a few comparisons and additions. A call
//! covered by several budgets locks them in configuration order (no deadlock) and reserves on all of
//! them or none, so concurrent calls can never jointly pass a cap.

use crate::budget::config::{Action, BudgetDef, Scope};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use tollgate_events::CallEvent;

/// Most settled-spend entries kept per window for pruning at the next sync. Beyond it the oldest are
/// forgotten but stay counted (over-counting is the safe side).
const MAX_LOG: usize = 65_536;

#[derive(Debug)]
pub struct Window {
    pub start_us: i64,
    pub end_us: i64,
    /// Spend counts from here: the window start, or the time of an admin reset.
    pub count_from_us: i64,
    pub snapshot: u64,
    pub local: u64,
    pub reserved: u64,
    /// (settled at µs, cost) of local spend, pruned once the store has surely seen it.
    log: VecDeque<(i64, u64)>,
    /// How many levels (soft thresholds, then the cap) have been announced in this window.
    pub notified: usize,
}

impl Window {
    fn new(start_us: i64, end_us: i64, count_from_us: i64) -> Window {
        Window {
            start_us,
            end_us,
            count_from_us,
            snapshot: 0,
            local: 0,
            reserved: 0,
            log: VecDeque::new(),
            notified: 0,
        }
    }

    /// Settled spend: the store's plus ours since.
    pub fn spent(&self) -> u64 {
        self.snapshot.saturating_add(self.local)
    }

    pub fn used(&self) -> u64 {
        self.spent().saturating_add(self.reserved)
    }
}

#[derive(Debug)]
pub struct Inner {
    pub def: Arc<BudgetDef>,
    /// The cap in force (the config's, or an admin's change).
    pub cap: u64,
    /// The current window; `None` while a fixed window is not open.
    pub win: Option<Window>,
    /// Changes whenever the window is replaced (rollover, reset): reservations and syncs of an older
    /// generation no longer apply.
    pub generation: u64,
    pub synced_at_us: Option<i64>,
    pub admitted: u64,
    pub rejected: u64,
    pub downgraded: u64,
}

#[derive(Debug)]
pub struct BudgetState {
    pub id: String,
    pub scope: Scope,
    pub value: String,
    tag: Option<(String, String)>,
    inner: Mutex<Inner>,
}

/// A threshold or the cap crossed by settled spend.
#[derive(Debug, Clone)]
pub struct Crossing {
    pub budget: String,
    /// Percent of the cap; 100 is the cap itself.
    pub percent: u32,
    pub spent: u64,
    pub cap: u64,
    pub window_end_us: i64,
}

impl BudgetState {
    pub fn new(def: Arc<BudgetDef>) -> BudgetState {
        BudgetState {
            id: def.id.clone(),
            scope: def.scope,
            value: def.value.clone(),
            tag: def.tag.clone(),
            inner: Mutex::new(Inner {
                cap: def.cap_nanousd,
                def,
                win: None,
                generation: 0,
                synced_at_us: None,
                admitted: 0,
                rejected: 0,
                downgraded: 0,
            }),
        }
    }

    /// Whether a new definition keeps this state (same budget, same window rules).
    pub fn same_identity(&self, def: &BudgetDef) -> bool {
        let inner = self.lock();
        self.id == def.id && self.scope == def.scope && self.value == def.value && inner.def.period == def.period
    }

    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether this budget covers a call with this attribution.
    pub fn covers(&self, ev: &CallEvent) -> bool {
        let v = match self.scope {
            Scope::Key => &ev.api_key_id,
            Scope::User => &ev.user,
            Scope::Project => &ev.project,
            Scope::Team => &ev.team,
            Scope::Department => &ev.department,
            Scope::Tenant => &ev.tenant,
            Scope::Tag => {
                return self.tag.as_ref().is_some_and(|(k, v)| ev.tags.get(k).is_some_and(|x| x == v));
            }
        };
        *v == self.value
    }

    pub fn tag(&self) -> Option<&(String, String)> {
        self.tag.as_ref()
    }
}

impl Inner {
    /// Moves to the window containing `now` (a new period starts from zero: the old one's calls belong
    /// to it, by their start time).
    pub fn roll(&mut self, now_us: i64) {
        let current = self.win.as_ref().map(|w| (w.start_us, w.end_us));
        let fits = current.is_some_and(|(s, e)| now_us >= s && now_us < e);
        if fits {
            return;
        }
        let next = self.def.period.window(now_us);
        if next != current {
            self.win = next.map(|(s, e)| Window::new(s, e, s));
            self.generation += 1;
            self.synced_at_us = None;
        }
    }

    /// Whether `estimate` fits: `used < cap` and `used + estimate <= cap`. No window: not applicable.
    pub fn fits(&self, estimate: u64) -> bool {
        match &self.win {
            None => true,
            Some(w) => {
                let used = w.used();
                used < self.cap && used.saturating_add(estimate) <= self.cap
            }
        }
    }

    pub fn reserve(&mut self, amount: u64) -> Option<u64> {
        let w = self.win.as_mut()?;
        w.reserved = w.reserved.saturating_add(amount);
        Some(self.generation)
    }

    /// Levels (soft thresholds then 100) that settled spend has reached and that were not announced yet.
    pub fn crossings(&mut self, id: &str) -> Vec<Crossing> {
        let cap = self.cap;
        let levels: Vec<u32> = self.def.soft_thresholds.iter().copied().chain(std::iter::once(100)).collect();
        let Some(w) = self.win.as_mut() else { return Vec::new() };
        let spent = w.spent();
        let reached = levels.iter().filter(|l| u128::from(spent) * 100 >= u128::from(cap) * u128::from(**l)).count();
        let mut out = Vec::new();
        if reached > w.notified {
            for l in &levels[w.notified..reached] {
                out.push(Crossing { budget: id.to_string(), percent: *l, spent, cap, window_end_us: w.end_us });
            }
            w.notified = reached;
        }
        out
    }

    /// Records a finished call's real cost against the reservation it held.
    pub fn settle(&mut self, generation: u64, reserved: u64, cost: u64, now_us: i64) -> bool {
        if generation != self.generation {
            return false;
        }
        let Some(w) = self.win.as_mut() else { return false };
        w.reserved = w.reserved.saturating_sub(reserved);
        w.local = w.local.saturating_add(cost);
        if cost > 0 {
            if w.log.len() >= MAX_LOG {
                w.log.pop_front();
            }
            w.log.push_back((now_us, cost));
        }
        true
    }

    /// Takes a fresh authoritative total, queried at `query_started_us`: local spend settled more than
    /// `lag_us` before the query is assumed to be in it and is dropped from the local count.
    pub fn apply_sync(&mut self, generation: u64, spent: u64, query_started_us: i64, lag_us: i64, now_us: i64) -> bool {
        if generation != self.generation {
            return false;
        }
        let Some(w) = self.win.as_mut() else { return false };
        w.snapshot = spent;
        let cutoff = query_started_us.saturating_sub(lag_us);
        while let Some((t, c)) = w.log.front().copied() {
            if t >= cutoff {
                break;
            }
            w.log.pop_front();
            w.local = w.local.saturating_sub(c);
        }
        self.synced_at_us = Some(now_us);
        true
    }

    /// Starts counting afresh from `now` (admin reset); calls in flight settle into the old count.
    pub fn reset(&mut self, now_us: i64) {
        self.roll(now_us);
        if let Some(w) = &self.win {
            self.win = Some(Window::new(w.start_us, w.end_us, now_us));
            self.generation += 1;
            self.synced_at_us = None;
        }
    }

    pub fn action(&self) -> Action {
        self.def.action
    }
}

/// A reservation held by an admitted call.
#[derive(Debug)]
pub struct Reservation {
    pub state: Arc<BudgetState>,
    pub generation: u64,
    pub amount: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::period::{Period, PeriodSpec};

    fn def(cap: u64, fixed: Option<(i64, i64)>, period: Period) -> Arc<BudgetDef> {
        Arc::new(BudgetDef {
            id: "b".into(),
            scope: Scope::Team,
            value: "core".into(),
            tag: None,
            period: PeriodSpec { period, tz: "America/New_York".parse().unwrap(), fixed },
            cap_nanousd: cap,
            soft_thresholds: vec![50, 90],
            action: Action::Reject,
            downgrade_to: None,
        })
    }

    #[test]
    fn boundary_exactly_at_cap() {
        let s = BudgetState::new(def(100, Some((0, 1_000)), Period::Fixed));
        let mut g = s.lock();
        g.roll(10);
        assert!(g.fits(100), "landing exactly on the cap is admitted");
        assert!(!g.fits(101));
        let gen = g.reserve(60).unwrap();
        assert!(g.fits(40) && !g.fits(41));
        g.reserve(40).unwrap();
        assert!(!g.fits(0), "a budget at its cap admits nothing, not even a free call");
        assert!(g.settle(gen, 60, 10, 20));
        assert!(g.fits(50) && !g.fits(51));
    }

    #[test]
    fn rollover_at_month_end_in_the_time_zone_starts_from_zero() {
        let us = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp_micros();
        let s = BudgetState::new(def(100, None, Period::Month));
        let mut g = s.lock();
        g.roll(us("2026-01-31T23:00:00-05:00"));
        let gen = g.reserve(30).unwrap();
        assert!(g.settle(gen, 30, 100, 0));
        assert!(!g.fits(1), "January is spent");
        // 23:59:59 local on the 31st is already February in UTC, but not in New York.
        g.roll(us("2026-02-01T04:59:59Z"));
        assert!(!g.fits(1));
        g.roll(us("2026-02-01T05:00:00Z"));
        assert!(g.fits(100), "February starts from zero");
        assert!(!g.settle(gen, 30, 5, 0), "a January call settling late does not count in February");
        assert_eq!(g.win.as_ref().unwrap().used(), 0);
    }

    #[test]
    fn sync_prunes_only_what_the_store_has_surely_seen_and_thresholds_fire_once() {
        let s = BudgetState::new(def(100, Some((0, i64::MAX)), Period::Fixed));
        let mut g = s.lock();
        g.roll(1);
        let gen = g.generation;
        g.reserve(20).unwrap();
        g.settle(gen, 20, 20, 1_000);
        g.reserve(35).unwrap();
        g.settle(gen, 35, 35, 9_000);
        let c = g.crossings("b");
        assert_eq!(c.iter().map(|c| c.percent).collect::<Vec<_>>(), vec![50]);
        assert!(g.crossings("b").is_empty(), "announced once");
        // Store saw 20 (+ 7 from another gateway); the 35 settled within the lag stays counted locally.
        assert!(g.apply_sync(gen, 27, 10_000, 5_000, 10_000));
        assert_eq!(g.win.as_ref().unwrap().spent(), 62);
        g.reset(20_000);
        assert_eq!(g.win.as_ref().unwrap().used(), 0);
        assert!(!g.apply_sync(gen, 27, 20_000, 0, 20_000), "a sync of the old count is ignored");
    }
}
