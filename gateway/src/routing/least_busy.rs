//! `least_busy`: the least loaded target first. A target whose upstream runs an inference engine with a
//! fresh reading (see [`super::engine`]) scores its queue depth, plus [`KV_WEIGHT`] × its KV-cache use,
//! plus the gateway's own calls in flight to it (calls sent since the last scrape are not in the engine's
//! figures yet; counting them keeps a burst from piling onto one engine between two scrapes). A target
//! without an engine, or whose reading is missing or stale, scores its calls in flight alone. Equal
//! scores take turns, so idle targets share the traffic. Open breakers skip a target (the plan does that).

use super::{Route, Strategy, Who};
use crate::config::RouteSpec;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// What a full KV cache weighs, in queued requests: an engine near its cache limit preempts or queues
/// the next request, so between two engines with the same queue, the emptier cache wins, and a nearly
/// full cache counts as a few requests waiting.
pub const KV_WEIGHT: f64 = 4.0;

pub struct LeastBusyStrategy {
    /// Turn counter: which of equally loaded targets goes first.
    turn: AtomicU64,
}

impl LeastBusyStrategy {
    pub fn build(_spec: &RouteSpec) -> Box<dyn Strategy> {
        Box::new(LeastBusyStrategy { turn: AtomicU64::new(0) })
    }
}

impl Strategy for LeastBusyStrategy {
    fn order(&self, route: &Route, _who: &Who<'_>, out: &mut Vec<usize>) {
        let now = Instant::now();
        let n = route.targets.len();
        let turn = (self.turn.fetch_add(1, Ordering::Relaxed) % n as u64) as usize;
        let mut scored: Vec<(f64, usize, usize)> = route
            .targets
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let own = t.in_flight.load(Ordering::Relaxed) as f64;
                let score = match t.engine.as_ref().and_then(|e| e.fresh(now)) {
                    Some(r) => r.waiting + KV_WEIGHT * r.kv_usage + own,
                    None => own,
                };
                (score, (i + n - turn) % n, i)
            })
            .collect();
        scored.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        out.extend(scored.into_iter().map(|(_, _, i)| i));
    }

    fn counts_in_flight(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::super::engine::{EngineLoad, EngineReading};
    use super::super::{Ask, RouteTable};
    use super::*;
    use crate::config::{GatewaySettings, RouteConfig, UpstreamConfig};
    use crate::providers::Upstream;
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use tollgate_events::{PriceBook, PriceTable};

    fn table(engines: [bool; 3]) -> RouteTable {
        let ups: Vec<UpstreamConfig> = (0..3)
            .map(|i| {
                let engine = if engines[i] { "engine = \"vllm\"\n" } else { "" };
                toml::from_str(&format!(
                    "name = \"u{i}\"\nbase_url = \"http://h{i}:8000/v1\"\nmodels = [\"gpt-4o\"]\n{engine}"
                ))
                .unwrap()
            })
            .collect();
        let route: RouteConfig = toml::from_str(
            "model = \"r\"\nstrategy = \"least_busy\"\ntargets = [{ upstream = \"u0\", model = \"gpt-4o\" }, \
             { upstream = \"u1\", model = \"gpt-4o\" }, { upstream = \"u2\", model = \"gpt-4o\" }]",
        )
        .unwrap();
        let v = crate::config::validate_with_prices(
            PriceTable::builtin(),
            &ups,
            &[route],
            &[],
            &BTreeMap::new(),
            &GatewaySettings::default(),
        )
        .unwrap();
        let upstreams: Vec<Arc<Upstream>> =
            v.upstreams.iter().cloned().filter_map(Upstream::new).map(Arc::new).collect();
        RouteTable::new(&v.routes, &upstreams, &Arc::new(PriceBook::new(v.prices.clone())))
    }

    fn first(t: &RouteTable) -> usize {
        let who = Who { key_id: "k", user: "u", ask: Ask::default() };
        t.get("r").unwrap().order(&who)[0]
    }

    fn load(t: &RouteTable, i: usize) -> &Arc<EngineLoad> {
        t.get("r").unwrap().targets[i].engine.as_ref().unwrap()
    }

    #[test]
    fn queue_then_kv_then_own_calls_decide() {
        let t = table([true, true, true]);
        let now = std::time::Instant::now();
        let set = |i: usize, waiting: f64, kv_usage: f64| {
            load(&t, i).set(EngineReading { waiting, running: 0.0, kv_usage }, now)
        };
        set(0, 5.0, 0.1);
        set(1, 1.0, 0.2);
        set(2, 3.0, 0.1);
        assert!((0..9).all(|_| first(&t) == 1), "shortest queue");
        // Same queues: the fuller cache loses (1 + 4 * 0.9 > 3 + 4 * 0.1).
        set(1, 1.0, 0.9);
        assert!((0..9).all(|_| first(&t) == 2));
        // Calls of its own in flight count on top of the engine's figures.
        t.get("r").unwrap().targets[2].in_flight.store(2, Ordering::Relaxed);
        assert!((0..9).all(|_| first(&t) == 1));
    }

    #[test]
    fn without_readings_own_calls_decide_and_equals_take_turns() {
        let t = table([true, false, false]);
        let firsts: Vec<usize> = (0..6).map(|_| first(&t)).collect();
        assert_eq!(firsts, [0, 1, 2, 0, 1, 2], "no reading (u0) or no engine: calls in flight, all 0");
        t.get("r").unwrap().targets[0].in_flight.store(1, Ordering::Relaxed);
        let firsts: Vec<usize> = (0..4).map(|_| first(&t)).collect();
        assert!(!firsts.contains(&0), "{firsts:?}");
    }
}
