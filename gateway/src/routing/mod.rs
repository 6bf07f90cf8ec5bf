//! The route phase: a public model name maps to a [`Route`] (a model group) whose [`Strategy`] orders its
//! targets for each call; circuit breakers skip targets that are failing, and the retry budget decides
//! whether another attempt may follow a failure. A strategy is one file implementing [`Strategy`],
//! registered by one line in [`STRATEGIES`].

pub mod breaker;
pub mod fallback;
pub mod http;
pub mod retry_budget;
pub mod weighted;
pub mod window;

use crate::config::{RouteSpec, Sticky};
use crate::finish::EndObserver;
use crate::metrics::{RouteSeries, TargetSeries};
use crate::providers::Upstream;
use breaker::{Breaker, Verdict};
use retry_budget::RetryBudget;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tollgate_events::{CallEvent, Outcome};

/// Orders a route's targets for one call.
pub trait Strategy: Send + Sync {
    /// Target indices into `route.targets`, first choice first; each target at most once.
    fn order(&self, route: &Route, who: &Who<'_>, out: &mut Vec<usize>);
}

/// Every strategy, by the name `strategy` takes in a route's config.
pub static STRATEGIES: &[(&str, fn(&RouteSpec) -> Box<dyn Strategy>)] =
    &[("weighted", weighted::WeightedStrategy::build), ("fallback", fallback::FallbackStrategy::build)];

pub fn strategy_known(name: &str) -> bool {
    STRATEGIES.iter().any(|(n, _)| *n == name)
}

/// Who is calling, for sticky strategies.
pub struct Who<'a> {
    pub key_id: &'a str,
    pub user: &'a str,
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
        if self.breaker.enabled() {
            self.breaker.record(self.verdict(ev), Instant::now());
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
    pub fn new(specs: &[RouteSpec], upstreams: &[Arc<Upstream>]) -> RouteTable {
        let mut routes = Vec::new();
        for spec in specs {
            let Some(build) = STRATEGIES.iter().find(|(n, _)| *n == spec.strategy).map(|(_, b)| b) else {
                continue;
            };
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
                    }))
                })
                .collect();
            let label = if !spec.configured && spec.targets.len() == 1 { "direct" } else { spec.strategy.as_str() };
            routes.push(Arc::new(Route {
                strategy: build(spec),
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

    /// Routing series for `/metrics`.
    pub fn series(&self) -> Vec<RouteSeries<'_>> {
        let now = Instant::now();
        self.routes
            .iter()
            .filter(|r| r.spec.configured)
            .map(|r| RouteSeries {
                route: &r.spec.model,
                retries: r.retry_budget.retries.load(Ordering::Relaxed),
                retries_denied: r.retry_budget.denied.load(Ordering::Relaxed),
                targets: r
                    .targets
                    .iter()
                    .map(|t| TargetSeries {
                        target: &t.id,
                        state: t.breaker.state(now).code(),
                        opened: t.breaker.opened.load(Ordering::Relaxed),
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
