//! `least_cost`: the cheapest predicted target first. A call's predicted cost on a target is its
//! estimated prompt tokens × the target's input price + its expected output tokens (the client's
//! `max_tokens`, else the target's observed mean output, else [`DEFAULT_OUTPUT_TOKENS`]) × the output
//! price, from the price catalog in force. Targets are written best quality first; `quality_floor`
//! cuts the list below the lowest acceptable one. Open breakers skip a target (the plan does that), so
//! the first target tried is the cheapest healthy one.

use super::{Ask, Route, Strategy, Target, Who};
use crate::config::RouteSpec;
use std::time::{Duration, Instant};
use tollgate_events::{PriceTable, Usage};

/// Expected output of a call without `max_tokens` on a target nothing is known about yet.
pub const DEFAULT_OUTPUT_TOKENS: u64 = 256;

pub struct LeastCostStrategy {
    floor: Option<usize>,
    window: Duration,
}

impl LeastCostStrategy {
    pub fn build(spec: &RouteSpec) -> Box<dyn Strategy> {
        Box::new(LeastCostStrategy { floor: spec.quality_floor, window: Duration::from_millis(spec.stats_window_ms) })
    }

    fn predict(&self, prices: &PriceTable, target: &Target, ask: &Ask, now: Instant) -> Option<u64> {
        let price = prices.get(&target.model)?;
        let output = match ask.output_bound {
            Some(n) => n,
            None => target
                .stats
                .view(now, self.window)
                .mean_output_tokens
                .map(|m| m.ceil() as u64)
                .unwrap_or(DEFAULT_OUTPUT_TOKENS),
        };
        Some(price.cost_nanousd(&Usage { input: ask.input_tokens, output, ..Default::default() }))
    }
}

impl Strategy for LeastCostStrategy {
    fn order(&self, route: &Route, who: &Who<'_>, out: &mut Vec<usize>) {
        let prices = route.prices.current();
        let now = Instant::now();
        let last = self.floor.unwrap_or(usize::MAX).min(route.targets.len().saturating_sub(1));
        let mut costs: Vec<(u64, usize)> = (0..=last)
            .map(|i| (self.predict(&prices, &route.targets[i], &who.ask, now).unwrap_or(u64::MAX), i))
            .collect();
        // Equal costs keep the written (quality) order.
        costs.sort_unstable();
        out.extend(costs.into_iter().map(|(_, i)| i));
    }

    fn learns(&self) -> bool {
        true
    }

    fn predicted_cost(&self, route: &Route, target: &Target, ask: &Ask) -> Option<u64> {
        self.predict(&route.prices.current(), target, ask, Instant::now())
    }
}
