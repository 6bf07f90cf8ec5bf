//! The budget ledger: per budget and window, the store's spend of every call except this gateway's
//! unconfirmed ones (`snapshot`), this gateway's settled calls that the store does not hold yet (`local`,
//! kept by event id in `pending`) and reservations for calls in flight (`reserved`). Accounting is by
//! event id, not by time: a sync asks the store for the spend without the pending ids and for which of
//! them it holds; those move from `local` into `snapshot`. So no call is counted twice or missed,
//! however long the pipeline takes to deliver it. A call is admitted only if `used < cap` and `used + estimate <= cap`, where
//! `used = snapshot + local + reserved`: a call that lands exactly on the cap is admitted, a budget that is
//! at its cap admits nothing more.
//!
//! Each budget's state sits behind its own mutex, held for a few comparisons and additions. A call
//! covered by several budgets locks them in configuration order (no deadlock) and reserves on all of
//! them or none, so concurrent calls can never jointly pass a cap.

use crate::budget::config::{Action, BudgetDef, Scope};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tollgate_events::CallEvent;

/// Most unconfirmed calls kept by id per window. Beyond it the oldest are forgotten but stay counted in
/// `local` (they may then be counted twice once stored: over-counting is the safe side).
const MAX_PENDING: usize = 65_536;

/// Most pending ids named in one spend query (keeps the query small); calls beyond it stay counted
/// locally and are confirmed by later syncs, oldest first.
pub const MAX_PENDING_PER_QUERY: usize = 1_000;

#[derive(Debug)]
pub struct Window {
    pub start_us: i64,
    pub end_us: i64,
    /// Spend counts from here: the window start, or the time of an admin reset.
    pub count_from_us: i64,
    /// The store's spend, without the calls that were pending when it was asked.
    pub snapshot: u64,
    /// This gateway's settled spend the store has not confirmed yet.
    pub local: u64,
    pub reserved: u64,
    /// event id → cost of this gateway's settled calls the store has not confirmed. UUIDv7 ids sort by
    /// time, so the first entries are the oldest.
    pending: BTreeMap<String, u64>,
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
            pending: BTreeMap::new(),
            notified: 0,
        }
    }

    /// The ids a sync asks the store about: the oldest pending calls.
    pub fn pending_ids(&self) -> Vec<String> {
        self.pending.keys().take(MAX_PENDING_PER_QUERY).cloned().collect()
    }

    /// Settled spend: the store's plus ours that it does not hold yet.
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
    /// One sync at a time: two overlapping syncs would both leave the same pending ids out of the
    /// store's sum, and the second would no longer find them pending to count them back in.
    pub(crate) syncing: tokio::sync::Mutex<()>,
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
            syncing: tokio::sync::Mutex::new(()),
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

    /// Whether this budget covers a call: by the call's attribution, or because the call's key is bound
    /// by this budget through its own attribution (headers refine reports, they do not escape budgets).
    pub fn covers(&self, ev: &CallEvent) -> bool {
        if self.lock().def.keys.iter().any(|k| *k == ev.api_key_id) {
            return true;
        }
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

    /// Records a finished request's real cost, event by event, against the reservation it held.
    pub fn settle(&mut self, generation: u64, reserved: u64, events: &[(String, u64)]) -> bool {
        if generation != self.generation {
            return false;
        }
        let Some(w) = self.win.as_mut() else { return false };
        w.reserved = w.reserved.saturating_sub(reserved);
        for (event_id, cost) in events {
            if *cost == 0 || w.pending.contains_key(event_id) {
                continue;
            }
            w.local = w.local.saturating_add(*cost);
            if w.pending.len() >= MAX_PENDING {
                w.pending.pop_first();
            }
            w.pending.insert(event_id.clone(), *cost);
        }
        true
    }

    /// Takes a fresh answer from the store, asked with `asked` pending ids: `others` is the spend without
    /// them, `present` those the store holds (now counted in the snapshot instead of locally).
    pub fn apply_sync(
        &mut self,
        generation: u64,
        others: u64,
        asked: &[String],
        present: &[String],
        now_us: i64,
    ) -> bool {
        if generation != self.generation {
            return false;
        }
        let Some(w) = self.win.as_mut() else { return false };
        let asked: std::collections::HashSet<&str> = asked.iter().map(String::as_str).collect();
        let mut snapshot = others;
        for id in present {
            // Only an asked id was left out of `others`; anything else is already in it.
            if !asked.contains(id.as_str()) {
                continue;
            }
            if let Some(c) = w.pending.remove(id) {
                w.local = w.local.saturating_sub(c);
                snapshot = snapshot.saturating_add(c);
            }
        }
        w.snapshot = snapshot;
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
            keys: Vec::new(),
            unmatched_ok: false,
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
        assert!(g.settle(gen, 60, &[("e1".into(), 10)]));
        assert!(g.fits(50) && !g.fits(51));
    }

    #[test]
    fn rollover_at_month_end_in_the_time_zone_starts_from_zero() {
        let us = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp_micros();
        let s = BudgetState::new(def(100, None, Period::Month));
        let mut g = s.lock();
        g.roll(us("2026-01-31T23:00:00-05:00"));
        let gen = g.reserve(30).unwrap();
        assert!(g.settle(gen, 30, &[("e1".into(), 100)]));
        assert!(!g.fits(1), "January is spent");
        // 23:59:59 local on the 31st is already February in UTC, but not in New York.
        g.roll(us("2026-02-01T04:59:59Z"));
        assert!(!g.fits(1));
        g.roll(us("2026-02-01T05:00:00Z"));
        assert!(g.fits(100), "February starts from zero");
        assert!(!g.settle(gen, 30, &[("e2".into(), 5)]), "a January call settling late does not count in February");
        assert_eq!(g.win.as_ref().unwrap().used(), 0);
    }

    #[test]
    fn sync_moves_only_stored_calls_from_local_to_the_snapshot_and_thresholds_fire_once() {
        let s = BudgetState::new(def(100, Some((0, i64::MAX)), Period::Fixed));
        let mut g = s.lock();
        g.roll(1);
        let gen = g.generation;
        g.reserve(20).unwrap();
        g.settle(gen, 20, &[("0001".into(), 20)]);
        g.reserve(35).unwrap();
        g.settle(gen, 35, &[("0002".into(), 35)]);
        assert!(g.settle(gen, 0, &[("0002".into(), 35)]), "a call settled twice counts once");
        let c = g.crossings("b");
        assert_eq!(c.iter().map(|c| c.percent).collect::<Vec<_>>(), vec![50]);
        assert!(g.crossings("b").is_empty(), "announced once");
        let asked = g.win.as_ref().unwrap().pending_ids();
        assert_eq!(asked, ["0001", "0002"]);
        // The store holds 0001 (and 7 from another gateway), not 0002 yet: 7 + 20 + 35, nothing twice.
        assert!(g.apply_sync(gen, 7, &asked, &["0001".to_string()], 10_000));
        let w = g.win.as_ref().unwrap();
        assert_eq!((w.snapshot, w.local, w.spent()), (27, 35, 62));
        assert_eq!(w.pending_ids(), ["0002"]);
        // However late it lands, 0002 stays counted until the store has it.
        let asked = w.pending_ids();
        assert!(g.apply_sync(gen, 27, &asked, &[], 20_000));
        assert_eq!(g.win.as_ref().unwrap().spent(), 62);
        assert!(g.apply_sync(gen, 27, &asked, &["0002".to_string(), "zz".to_string()], 30_000));
        assert_eq!((g.win.as_ref().unwrap().spent(), g.win.as_ref().unwrap().local), (62, 0));
        g.reset(40_000);
        assert_eq!(g.win.as_ref().unwrap().used(), 0);
        assert!(!g.apply_sync(gen, 27, &[], &[], 40_000), "a sync of the old count is ignored");
    }
}
