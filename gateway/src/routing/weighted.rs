//! `weighted`: the first attempt goes to a target drawn by weight (90/10 for a canary), or, when the
//! route is sticky, to the target a stable hash of the key or user picks, so one user sees one variant.
//! Retries go to the other targets, heaviest first.

use super::{stable_hash, Route, Strategy, Who};
use crate::config::{RouteSpec, Sticky};
use std::sync::atomic::{AtomicU64, Ordering};

pub struct WeightedStrategy {
    sticky: Option<Sticky>,
    /// Draw counter; its SplitMix64 mix is the draw (evenly spread, no lock, no RNG dependency).
    draws: AtomicU64,
}

impl WeightedStrategy {
    pub fn build(spec: &RouteSpec) -> Box<dyn Strategy> {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Box::new(WeightedStrategy { sticky: spec.sticky, draws: AtomicU64::new(seed) })
    }
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The target whose weight range holds `point` (in `0..total`).
fn pick(route: &Route, point: u64) -> usize {
    let mut acc = 0u64;
    for (i, t) in route.targets.iter().enumerate() {
        acc += u64::from(t.weight);
        if point < acc {
            return i;
        }
    }
    0
}

impl Strategy for WeightedStrategy {
    fn order(&self, route: &Route, who: &Who<'_>, out: &mut Vec<usize>) {
        let total: u64 = route.targets.iter().map(|t| u64::from(t.weight)).sum();
        if total == 0 {
            out.extend(0..route.targets.len());
            return;
        }
        let draw = match self.sticky.map(|s| who.sticky_value(s)).filter(|v| !v.is_empty()) {
            Some(v) => stable_hash(v),
            None => splitmix64(self.draws.fetch_add(1, Ordering::Relaxed)),
        };
        let first = pick(route, draw % total);
        out.push(first);
        let mut rest: Vec<usize> = (0..route.targets.len()).filter(|&i| i != first).collect();
        rest.sort_by_key(|&i| std::cmp::Reverse(route.targets[i].weight));
        out.extend(rest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_spread_evenly() {
        let n = 100_000u64;
        let low = (0..n).filter(|i| splitmix64(*i) % 100 < 10).count() as u64;
        assert!((9_000..11_000).contains(&low), "{low}");
    }
}
