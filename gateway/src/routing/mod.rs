//! The route phase: a public model name maps to a [`Route`] (a model group) whose [`Strategy`] orders its
//! targets for each call; circuit breakers skip targets that are failing, and the retry budget decides
//! whether another attempt may follow a failure. A strategy is one file implementing [`Strategy`],
//! registered by one line in [`STRATEGIES`].

pub mod breaker;
pub mod fallback;
pub mod http;
pub mod least_cost;
pub mod least_latency;
pub mod retry_budget;
pub mod stats;
pub mod weighted;
pub mod window;

use crate::config::{RouteSpec, Sticky};
use crate::finish::EndObserver;
use crate::metrics::{RouteSeries, TargetSeries};
use crate::providers::Upstream;
use breaker::{Breaker, Verdict};
use retry_budget::RetryBudget;
use stats::{RoutingStatsSource, StoreRow, TargetStats};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tollgate_events::{CallEvent, Outcome, PriceBook};

/// Orders a route's targets for one call.
pub trait Strategy: Send + Sync {
    /// Target indices into `route.targets`, first choice first; each target at most once.
    fn order(&self, route: &Route, who: &Who<'_>, out: &mut Vec<usize>);

    /// Whether it decides from the targets' statistics (which are then recorded at each attempt's end).
    fn learns(&self) -> bool {
        false
    }

    /// The cost this call is predicted to have on `target`, recorded in its event.
    fn predicted_cost(&self, _route: &Route, _target: &Target, _ask: &Ask) -> Option<u64> {
        None
    }
}

/// Builds a route's strategy from its config.
pub type StrategyBuilder = fn(&RouteSpec) -> Box<dyn Strategy>;

/// Every strategy, by the name `strategy` takes in a route's config.
pub static STRATEGIES: &[(&str, StrategyBuilder)] = &[
    ("weighted", weighted::WeightedStrategy::build),
    ("fallback", fallback::FallbackStrategy::build),
    ("least_cost", least_cost::LeastCostStrategy::build),
    ("least_latency", least_latency::LeastLatencyStrategy::build),
];

pub fn strategy_known(name: &str) -> bool {
    STRATEGIES.iter().any(|(n, _)| *n == name)
}

/// Who is calling, for sticky strategies, and what the call asks for, for learning ones.
pub struct Who<'a> {
    pub key_id: &'a str,
    pub user: &'a str,
    pub ask: Ask,
}

/// What a call asks for, as far as a strategy needs it (read from the parsed request, never re-parsed).
#[derive(Debug, Clone, Copy, Default)]
pub struct Ask {
    /// A cheap estimate of the prompt's tokens (body bytes / 4, as budgets estimate).
    pub input_tokens: u64,
    /// The client's `max_tokens` (0 for embeddings).
    pub output_bound: Option<u64>,
    pub stream: bool,
}

impl Who<'_> {
    pub fn sticky_value(&self, sticky: Sticky) -> &str {
        match sticky {
            Sticky::Key => self.key_id,
            Sticky::User => self.user,
        }
    }
}

/// One upstream + model of a route, with its breaker.
pub struct Target {
    pub upstream: Arc<Upstream>,
    pub model: String,
    pub weight: u32,
    /// `upstream/model`, as `fallback_from` records it.
    pub id: String,
    pub breaker: Breaker,
    /// Recent attempts, for learning strategies.
    pub stats: TargetStats,
    /// Its route's strategy learns: record each attempt's end in `stats`.
    pub learn: bool,
    /// Calls whose first attempt went here (`tollgate_route_decisions_total`).
    pub decisions: AtomicU64,
}

impl Target {
    /// What an attempt's end says about the target's health.
    pub fn verdict(&self, ev: &CallEvent) -> Verdict {
        match ev.outcome {
            Outcome::Ok => Verdict::Success,
            Outcome::Timeout => Verdict::Failure,
            Outcome::UpstreamError => {
                let status = ::http::StatusCode::from_u16(ev.status_code).unwrap_or(::http::StatusCode::BAD_GATEWAY);
                // Below 400: a response that started well and broke off.
                if !status.is_client_error() && !status.is_server_error()
                    || self.upstream.provider.retryable_status(status)
                {
                    Verdict::Failure
                } else {
                    Verdict::Neutral
                }
            }
            _ => Verdict::Neutral,
        }
    }
}

impl EndObserver for Target {
    fn ended(&self, ev: &CallEvent) {
        let now = Instant::now();
        if self.breaker.enabled() {
            self.breaker.record(self.verdict(ev), now);
        }
        if self.learn {
            self.stats.record(ev, now);
        }
    }
}

/// A model group.
pub struct Route {
    pub spec: RouteSpec,
    pub targets: Vec<Arc<Target>>,
    strategy: Box<dyn Strategy>,
    pub retry_budget: RetryBudget,
    /// Recorded as `routing_strategy`: the strategy's name, `direct` for a model under one upstream.
    pub label: String,
    /// The price catalog in force (for predicting costs).
    pub prices: Arc<PriceBook>,
}

impl Route {
    /// The targets to try for one call, in order (before breakers); empty for a one-target route
    /// (nothing to order, nothing to allocate).
    pub fn order(&self, who: &Who<'_>) -> Vec<usize> {
        let mut out = Vec::new();
        if self.targets.len() > 1 {
            out.reserve_exact(self.targets.len());
            self.strategy.order(self, who, &mut out);
        }
        out
    }

    /// Whether its strategy learns from the targets' statistics.
    pub fn learns(&self) -> bool {
        self.strategy.learns()
    }

    /// The cost this call is predicted to have on `target` (0: the strategy predicts none).
    pub fn predicted_cost(&self, target: &Target, ask: &Ask) -> u64 {
        self.strategy.predicted_cost(self, target, ask).unwrap_or(0)
    }

    /// How long one of the gateway's own calls counts in a target's statistics.
    pub fn stats_window(&self) -> Duration {
        Duration::from_millis(self.spec.stats_window_ms)
    }

    /// The model whose price estimates this route's calls at admission: its first target's.
    pub fn price_model(&self) -> &str {
        self.targets.first().map(|t| t.model.as_str()).unwrap_or(&self.spec.model)
    }
}

/// A call's way through its route: the targets in order, each tried when its breaker lets it, at most
/// `max_attempts` in all.
pub struct Plan {
    pub route: Arc<Route>,
    order: Vec<usize>,
    pos: usize,
    pub attempts: u32,
}

impl Plan {
    pub fn new(route: Arc<Route>, who: &Who<'_>) -> Plan {
        // Only a route that can retry has a retry budget to count against.
        if route.spec.max_attempts > 1 {
            route.retry_budget.request(Instant::now());
        }
        let order = route.order(who);
        Plan { route, order, pos: 0, attempts: 0 }
    }

    /// Number of targets in the order.
    fn len(&self) -> usize {
        self.order.len().max(1).min(self.route.targets.len())
    }

    fn target_at(&self, pos: usize) -> &Arc<Target> {
        let i = if self.order.is_empty() { 0 } else { self.order[pos % self.order.len()] };
        &self.route.targets[i]
    }

    /// The next target whose breaker lets a call through, skipping open ones; `None` when attempts are
    /// used up or every remaining target is open.
    pub fn next_target(&mut self) -> Option<Arc<Target>> {
        if self.attempts >= self.route.spec.max_attempts || self.route.targets.is_empty() {
            return None;
        }
        let now = Instant::now();
        // Look at each target at most once per call to `next_target` (a route shorter than
        // `max_attempts` comes round again).
        for _ in 0..self.len() {
            let t = self.target_at(self.pos).clone();
            self.pos += 1;
            if t.breaker.try_pass(now) {
                if self.attempts == 0 {
                    t.decisions.fetch_add(1, Ordering::Relaxed);
                }
                self.attempts += 1;
                return Some(t);
            }
        }
        None
    }

    /// The target the next attempt would most likely go to (for deciding whether to wait on a
    /// `Retry-After`): the one after the current position.
    pub fn peek(&self) -> Option<&Arc<Target>> {
        if self.attempts >= self.route.spec.max_attempts || self.route.targets.is_empty() {
            return None;
        }
        Some(self.target_at(self.pos))
    }

    /// Whether another attempt could follow this one.
    pub fn has_more(&self) -> bool {
        self.attempts < self.route.spec.max_attempts
    }
}

/// Every route, by public model name.
pub struct RouteTable {
    pub routes: Vec<Arc<Route>>,
    by_model: HashMap<String, Arc<Route>>,
}

impl RouteTable {
    /// `upstreams` in config order; the specs come from validation, which checked every name.
    pub fn new(specs: &[RouteSpec], upstreams: &[Arc<Upstream>], prices: &Arc<PriceBook>) -> RouteTable {
        let mut routes = Vec::new();
        for spec in specs {
            let Some(build) = STRATEGIES.iter().find(|(n, _)| *n == spec.strategy).map(|(_, b)| b) else {
                continue;
            };
            let strategy = build(spec);
            let learn = strategy.learns();
            let targets = spec
                .targets
                .iter()
                .filter_map(|t| {
                    let upstream = upstreams.get(t.upstream)?.clone();
                    Some(Arc::new(Target {
                        id: format!("{}/{}", upstream.cfg.name, t.model),
                        upstream,
                        model: t.model.clone(),
                        weight: t.weight,
                        breaker: Breaker::new(spec.breaker.clone()),
                        stats: TargetStats::default(),
                        learn,
                        decisions: AtomicU64::new(0),
                    }))
                })
                .collect();
            let label = if !spec.configured && spec.targets.len() == 1 { "direct" } else { spec.strategy.as_str() };
            routes.push(Arc::new(Route {
                strategy,
                prices: prices.clone(),
                retry_budget: RetryBudget::new(spec.retry_budget.clone()),
                label: label.to_string(),
                spec: spec.clone(),
                targets,
            }));
        }
        let by_model = routes.iter().map(|r| (r.spec.model.clone(), r.clone())).collect();
        RouteTable { routes, by_model }
    }

    pub fn get(&self, model: &str) -> Option<&Arc<Route>> {
        self.by_model.get(model)
    }

    /// Reads the store's statistics every `interval` (over the last `window_s` seconds) into the
    /// targets of learning routes, for as long as the table lives. Nothing to do without such routes.
    pub fn start_stats(self: &Arc<Self>, source: Arc<dyn RoutingStatsSource>, interval: Duration, window_s: u64) {
        if interval.is_zero() || !self.routes.iter().any(|r| r.learns()) {
            return;
        }
        let table = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(t) = table.upgrade() else { return };
                match source.routing_stats(window_s).await {
                    Ok(rows) => t.apply_store(&rows, crate::finish::now_us()),
                    Err(error) => {
                        tracing::warn!(%error, "routing stats from the store failed; routes keep their own view")
                    }
                }
                drop(t);
                tokio::time::sleep(interval).await;
            }
        });
    }

    /// Hands each learning target its row of the store's answer (none: the store saw no call of it).
    pub fn apply_store(&self, rows: &[StoreRow], now_us: i64) {
        for r in self.routes.iter().filter(|r| r.learns()) {
            for t in &r.targets {
                let row = rows
                    .iter()
                    .find(|x| x.route == r.spec.model && x.upstream == t.upstream.cfg.name && x.model == t.model);
                t.stats.set_store(row.map(|x| x.stat), now_us);
            }
        }
    }

    /// Routing series for `/metrics`.
    pub fn series(&self) -> Vec<RouteSeries<'_>> {
        let now = Instant::now();
        self.routes
            .iter()
            .filter(|r| r.spec.configured)
            .map(|r| RouteSeries {
                route: &r.spec.model,
                strategy: &r.label,
                retries: r.retry_budget.retries.load(Ordering::Relaxed),
                retries_denied: r.retry_budget.denied.load(Ordering::Relaxed),
                targets: r
                    .targets
                    .iter()
                    .map(|t| TargetSeries {
                        target: &t.id,
                        state: t.breaker.state(now).code(),
                        opened: t.breaker.opened.load(Ordering::Relaxed),
                        decisions: t.decisions.load(Ordering::Relaxed),
                    })
                    .collect(),
            })
            .collect()
    }
}

/// FNV-1a: a stable hash (the same user lands on the same target across restarts and gateways).
pub fn stable_hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}
