//! Re-pricing stored events after a price fix: the engine-independent part (which events, their new
//! cost, the totals and the audit record). The Parquet and ClickHouse rewrites live with their stores.

use super::{tier_of_price_id, PriceTable, ServiceTier, Usage};
use crate::event::CallEvent;
use serde::Serialize;
use std::collections::BTreeMap;

/// Which stored events a re-price looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepriceScope {
    /// Microseconds since the epoch, inclusive.
    pub from_us: i64,
    /// Exclusive.
    pub to_us: i64,
    /// Only events whose served (or, when none, requested) model is this name, or this name with a date
    /// suffix.
    pub model: Option<String>,
}

impl RepriceScope {
    pub fn covers(&self, ts_start_us: i64, served: &str, requested: &str) -> bool {
        if ts_start_us < self.from_us || ts_start_us >= self.to_us {
            return false;
        }
        let Some(m) = &self.model else { return true };
        let name = if served.is_empty() { requested } else { served };
        name == m || super::strip_date_suffix(name) == Some(m.as_str()) || requested == m
    }
}

/// One event whose stored cost changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RepriceChange {
    pub event_id: String,
    pub ts_start_us: i64,
    pub served_model: String,
    pub old_price_id: String,
    pub new_price_id: String,
    pub old_cost_nanousd: u64,
    pub new_cost_nanousd: u64,
}

/// The new `(cost, price_id)` of a stored event under `table`, or `None` when it stays as it is. Priced
/// exactly as metering prices (matching, versions by the event's start time, bounds); the service tier
/// is the one its old `price_id` recorded, the 1-hour cache writes those its old cost implies. The
/// stored token counts are not changed.
pub fn reprice_event(table: &PriceTable, ev: &CallEvent) -> Option<RepriceChange> {
    let tier = tier_of_price_id(&ev.price_id);
    let mut e = ev.clone();
    table.price_event(&mut e, tier, cache_write_1h_of(table, ev, tier));
    if (e.cost_nanousd, e.price_id.as_str()) == (ev.cost_nanousd, ev.price_id.as_str()) {
        return None;
    }
    Some(RepriceChange {
        event_id: ev.event_id.clone(),
        ts_start_us: ev.ts_start_us,
        served_model: if ev.served_model.is_empty() { &ev.requested_model } else { &ev.served_model }.to_string(),
        old_price_id: ev.price_id.to_string(),
        new_price_id: e.price_id.into_string(),
        old_cost_nanousd: ev.cost_nanousd,
        new_cost_nanousd: e.cost_nanousd,
    })
}

/// The 1-hour cache writes of a stored event, which the event does not record: recovered from its old
/// cost when the table still holds the version that priced it (the old cost is then reproduced
/// exactly with them); 0 otherwise (all cache writes are then billed at the 5-minute rate).
fn cache_write_1h_of(table: &PriceTable, ev: &CallEvent, tier: ServiceTier) -> u64 {
    if ev.cache_write_tokens == 0 {
        return 0;
    }
    let Some(old) = table.by_price_id(&ev.price_id) else { return 0 };
    let usage = |w1h| Usage {
        input: ev.input_tokens,
        output: ev.output_tokens,
        cached_input: ev.cached_input_tokens,
        cache_write: ev.cache_write_tokens,
        cache_write_1h: w1h,
        reasoning: ev.reasoning_tokens,
        service_tier: tier,
    };
    let r = old.card(tier).0.rates_for(ev.input_tokens);
    let Some(step) = r.cache_write_1h.checked_sub(r.cache_write).filter(|s| *s > 0) else { return 0 };
    let base = old.cost(&usage(0)).nanousd;
    let Some(extra) = ev.cost_nanousd.checked_sub(base) else { return 0 };
    // extra ≈ w1h x step / 10^6, rounded once: solve, then keep it only if it reproduces the old cost.
    let guess = (u128::from(extra) * 1_000_000 + u128::from(step) / 2) / u128::from(step);
    let w1h = u64::try_from(guess).unwrap_or(0).min(ev.cache_write_tokens);
    if old.cost(&usage(w1h)).nanousd == ev.cost_nanousd {
        w1h
    } else {
        0
    }
}

/// Per (old price, new price): how many events and how much money.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RepriceGroup {
    pub old_price_id: String,
    pub new_price_id: String,
    pub events: u64,
    pub old_cost_nanousd: u64,
    pub new_cost_nanousd: u64,
}

/// The audit record of one re-price run: who changed what, and the money difference.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RepriceAudit {
    pub reprice_id: String,
    /// RFC 3339.
    pub at: String,
    pub who: String,
    pub engine: String,
    pub from_us: i64,
    pub to_us: i64,
    pub model: String,
    pub events_changed: u64,
    pub old_total_nanousd: u64,
    pub new_total_nanousd: u64,
    /// `new - old`, signed.
    pub delta_nanousd: i64,
    pub by_price: Vec<RepriceGroup>,
}

impl RepriceAudit {
    /// Sums `changes` into an audit record.
    pub fn of(changes: &[RepriceChange], head: RepriceAudit) -> RepriceAudit {
        let mut groups: BTreeMap<(String, String), RepriceGroup> = BTreeMap::new();
        let (mut old, mut new) = (0u64, 0u64);
        for c in changes {
            old = old.saturating_add(c.old_cost_nanousd);
            new = new.saturating_add(c.new_cost_nanousd);
            let g = groups.entry((c.old_price_id.clone(), c.new_price_id.clone())).or_insert_with(|| RepriceGroup {
                old_price_id: c.old_price_id.clone(),
                new_price_id: c.new_price_id.clone(),
                ..Default::default()
            });
            g.events += 1;
            g.old_cost_nanousd = g.old_cost_nanousd.saturating_add(c.old_cost_nanousd);
            g.new_cost_nanousd = g.new_cost_nanousd.saturating_add(c.new_cost_nanousd);
        }
        let delta = i128::from(new) - i128::from(old);
        RepriceAudit {
            events_changed: changes.len() as u64,
            old_total_nanousd: old,
            new_total_nanousd: new,
            delta_nanousd: i64::try_from(delta).unwrap_or(if delta < 0 { i64::MIN } else { i64::MAX }),
            by_price: groups.into_values().collect(),
            ..head
        }
    }
}
