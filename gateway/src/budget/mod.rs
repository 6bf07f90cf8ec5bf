//! Budgets and token rate limits, enforced at admission: `BudgetSystem::admit` charges a call's estimate
//! (prompt bytes / 4 + its `max_tokens`, priced at the model's rates) against every budget and rate limit
//! that covers it, and the metering task settles the real cost and tokens when the call's event is
//! finished. A background task refreshes each budget's spend from the query service every
//! `sync_interval_ms`; `/v1/budgets` and `/admin/*` (in `http.rs`) show and change the state.

pub mod config;
pub mod http;
pub mod ledger;
pub mod notify;
pub mod period;
pub mod ratelimit;

use crate::error::GatewayError;
use config::{Action, BudgetConfigSet};
use ledger::{BudgetState, Crossing, Reservation};
use notify::Notifier;
use ratelimit::{LimitReservation, LimitState};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tollgate_events::{CallEvent, PriceTable, Usage};
use tracing::{info, warn};

/// Current time in UTC microseconds; injectable for tests.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// What the ledger asks the query service: the cost of the calls of one scope value in `[from, to)`.
#[derive(Debug, Clone)]
pub struct SpendQuery {
    pub scope: config::Scope,
    pub value: String,
    /// Tag budgets: (name, value).
    pub tag: Option<(String, String)>,
    pub from_us: i64,
    pub to_us: i64,
}

pub type SpendFuture<'a> = Pin<Box<dyn Future<Output = Result<u64, String>> + Send + 'a>>;

/// Where authoritative spend comes from (the query service, on either engine).
pub trait SpendSource: Send + Sync + 'static {
    fn spend(&self, q: SpendQuery) -> SpendFuture<'_>;
}

type Reloader = Box<dyn Fn() -> Result<BudgetConfigSet, String> + Send + Sync>;

pub struct BudgetSystem {
    budgets: RwLock<Arc<Vec<Arc<BudgetState>>>>,
    limits: RwLock<Arc<Vec<Arc<LimitState>>>>,
    admin_keys: RwLock<Vec<(String, [u8; 32])>>,
    prices: Arc<PriceTable>,
    clock: Clock,
    sync_interval_ms: AtomicU64,
    ingest_lag_ms: AtomicU64,
    default_output_tokens: AtomicU64,
    pub(crate) notifier: Notifier,
    source: RwLock<Option<Arc<dyn SpendSource>>>,
    reloader: Mutex<Option<Reloader>>,
    audit_path: Option<PathBuf>,
    rate_limited: Mutex<std::collections::BTreeMap<String, u64>>,
}

/// A call's admission: reservations to settle when it ends (settled with nothing if dropped unsettled).
pub struct Admission {
    sys: Arc<BudgetSystem>,
    budgets: Vec<Reservation>,
    limits: Vec<LimitReservation>,
    settled: bool,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission").field("budgets", &self.budgets.len()).field("limits", &self.limits.len()).finish()
    }
}

impl Admission {
    /// Records the call's real cost and tokens in place of its estimate.
    pub fn settle(mut self, cost_nanousd: u64, tokens: u64) {
        self.settle_inner(cost_nanousd, Some(tokens));
    }

    fn settle_inner(&mut self, cost: u64, tokens: Option<u64>) {
        if self.settled {
            return;
        }
        self.settled = true;
        let now = (self.sys.clock)();
        let mut crossings = Vec::new();
        for r in &self.budgets {
            let mut g = r.state.lock();
            if g.settle(r.generation, r.amount, cost, now) {
                crossings.extend(g.crossings(&r.state.id));
            }
        }
        if let Some(t) = tokens {
            for l in &self.limits {
                l.settle(t);
            }
        }
        self.sys.announce(crossings);
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        // Unsettled (the event never reached metering): free the reservation; tokens stay charged.
        self.settle_inner(0, None);
    }
}

/// The outcome of a successful admission.
pub struct Admitted {
    pub admission: Admission,
    /// `(cheaper model, budget that asked for it)` when a `downgrade` budget rerouted the call.
    pub downgrade: Option<(String, String)>,
}

fn system_now() -> i64 {
    crate::finish::now_us()
}

impl BudgetSystem {
    pub fn new(set: BudgetConfigSet, prices: Arc<PriceTable>, audit_path: Option<PathBuf>) -> Arc<BudgetSystem> {
        BudgetSystem::with_clock(set, prices, audit_path, Arc::new(system_now))
    }

    pub fn with_clock(
        set: BudgetConfigSet,
        prices: Arc<PriceTable>,
        audit_path: Option<PathBuf>,
        clock: Clock,
    ) -> Arc<BudgetSystem> {
        let sys = BudgetSystem {
            budgets: RwLock::new(Arc::new(Vec::new())),
            limits: RwLock::new(Arc::new(Vec::new())),
            admin_keys: RwLock::new(Vec::new()),
            prices,
            clock,
            sync_interval_ms: AtomicU64::new(0),
            ingest_lag_ms: AtomicU64::new(0),
            default_output_tokens: AtomicU64::new(0),
            notifier: Notifier::new(),
            source: RwLock::new(None),
            reloader: Mutex::new(None),
            audit_path,
            rate_limited: Mutex::new(Default::default()),
        };
        sys.apply(set);
        Arc::new(sys)
    }

    /// A system with no budgets and no limits.
    pub fn disabled(prices: Arc<PriceTable>) -> Arc<BudgetSystem> {
        BudgetSystem::new(BudgetConfigSet::default(), prices, None)
    }

    pub fn now_us(&self) -> i64 {
        (self.clock)()
    }

    /// Installs a new configuration. Budgets with the same id, scope, match and period keep their
    /// window and spend (the cap and thresholds become the new config's); rate limits with the same id
    /// and scope keep their counters.
    pub fn apply(&self, set: BudgetConfigSet) {
        let old = self.budgets();
        let mut next = Vec::with_capacity(set.budgets.len());
        for def in set.budgets {
            match old.iter().find(|s| s.same_identity(&def)) {
                Some(s) => {
                    let mut g = s.lock();
                    g.cap = def.cap_nanousd;
                    g.def = def;
                    drop(g);
                    next.push(s.clone());
                }
                None => next.push(Arc::new(BudgetState::new(def))),
            }
        }
        *self.budgets.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        let old_limits = self.limits();
        let limits = set
            .rate_limits
            .into_iter()
            .map(|def| {
                let counters = old_limits
                    .iter()
                    .find(|l| l.def.id == def.id && l.def.scope == def.scope && l.def.value == def.value)
                    .map(|l| l.counters.clone())
                    .unwrap_or_default();
                Arc::new(LimitState { def, counters })
            })
            .collect();
        *self.limits.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(limits);
        *self.admin_keys.write().unwrap_or_else(|p| p.into_inner()) = set.admin_keys;
        self.sync_interval_ms.store(set.settings.sync_interval_ms.max(1), Ordering::Relaxed);
        self.ingest_lag_ms.store(set.settings.ingest_lag_ms, Ordering::Relaxed);
        self.default_output_tokens.store(set.settings.default_output_tokens, Ordering::Relaxed);
        self.notifier.set_webhook(set.settings.webhook_url);
    }

    pub fn budgets(&self) -> Arc<Vec<Arc<BudgetState>>> {
        self.budgets.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn limits(&self) -> Arc<Vec<Arc<LimitState>>> {
        self.limits.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn budget(&self, id: &str) -> Option<Arc<BudgetState>> {
        self.budgets().iter().find(|b| b.id == id).cloned()
    }

    pub fn default_output_tokens(&self) -> u64 {
        self.default_output_tokens.load(Ordering::Relaxed)
    }

    fn estimate_cost(&self, model: &str, input: u64, output: u64) -> u64 {
        self.prices.get(model).map(|p| p.cost_nanousd(&Usage { input, output, ..Default::default() })).unwrap_or(0)
    }

    /// Checks a call against its rate limits and budgets and reserves its estimate on all of them.
    pub fn admit(
        self: &Arc<Self>,
        ev: &CallEvent,
        model: &str,
        input_tokens: u64,
        output_tokens: u64,
    ) -> Result<Admitted, GatewayError> {
        let now = (self.clock)();
        let limits = self.limits();
        let limit_res = if limits.is_empty() {
            Vec::new()
        } else {
            ratelimit::admit(&limits, ev, input_tokens.saturating_add(output_tokens), now).map_err(|l| {
                *self.rate_limited.lock().unwrap_or_else(|p| p.into_inner()).entry(l.id.clone()).or_default() += 1;
                GatewayError::RateLimited {
                    limit: l.id,
                    which: l.which,
                    value: l.limit,
                    retry_after_s: l.retry_after_s.max(1),
                }
            })?
        };
        let mut admission = Admission { sys: self.clone(), budgets: Vec::new(), limits: limit_res, settled: false };
        let all = self.budgets();
        let covering: Vec<&Arc<BudgetState>> = all.iter().filter(|b| b.covers(ev)).collect();
        if covering.is_empty() {
            return Ok(Admitted { admission, downgrade: None });
        }
        let mut guards: Vec<_> = covering.iter().map(|b| b.lock()).collect();
        for g in guards.iter_mut() {
            g.roll(now);
        }
        let first_misfit =
            |guards: &[std::sync::MutexGuard<'_, ledger::Inner>], est: u64| guards.iter().position(|g| !g.fits(est));
        let mut est = self.estimate_cost(model, input_tokens, output_tokens);
        let mut downgrade = None;
        if let Some(i) = first_misfit(&guards, est) {
            let g = &guards[i];
            let target = match (g.action(), &g.def.downgrade_to) {
                (Action::Downgrade, Some(to)) if to != model => Some(to.clone()),
                _ => None,
            };
            let fits_cheaper = target.map(|to| {
                let cheaper = self.estimate_cost(&to, input_tokens, output_tokens);
                (first_misfit(&guards, cheaper), to, cheaper)
            });
            match fits_cheaper {
                Some((None, to, cheaper)) => {
                    est = cheaper;
                    downgrade = Some((to, covering[i].id.clone()));
                    guards[i].downgraded += 1;
                }
                other => {
                    let j = match other {
                        Some((Some(j), _, _)) => j,
                        _ => i,
                    };
                    let g = &mut guards[j];
                    g.rejected += 1;
                    let resets = g.win.as_ref().map(|w| w.end_us).unwrap_or(0);
                    let now_s = now.div_euclid(1_000_000);
                    return Err(GatewayError::BudgetExceeded {
                        budget: covering[j].id.clone(),
                        cap_usd: tollgate_events::format_usd(g.cap),
                        period: g.def.period.period.as_str(),
                        resets_at: crate::budget::http::rfc3339(resets),
                        retry_after_s: (resets.div_euclid(1_000_000) - now_s).max(1) as u64,
                    });
                }
            }
        }
        for (g, b) in guards.iter_mut().zip(&covering) {
            if let Some(generation) = g.reserve(est) {
                g.admitted += 1;
                admission.budgets.push(Reservation { state: (*b).clone(), generation, amount: est });
            }
        }
        Ok(Admitted { admission, downgrade })
    }

    fn announce(&self, crossings: Vec<Crossing>) {
        for c in crossings {
            self.notifier.crossed(c);
        }
    }

    /// Refreshes one budget's spend from the query service.
    pub async fn sync_one(&self, state: &Arc<BudgetState>, source: &dyn SpendSource) -> Result<(), String> {
        let now = (self.clock)();
        let (generation, q) = {
            let mut g = state.lock();
            g.roll(now);
            let Some(w) = &g.win else { return Ok(()) };
            let q = SpendQuery {
                scope: state.scope,
                value: state.value.clone(),
                tag: state.tag().cloned(),
                from_us: w.count_from_us,
                to_us: w.end_us,
            };
            (g.generation, q)
        };
        let started = (self.clock)();
        let spent = source.spend(q).await?;
        let lag_us = i64::try_from(self.ingest_lag_ms.load(Ordering::Relaxed)).unwrap_or(i64::MAX / 1000) * 1000;
        let crossings = {
            let mut g = state.lock();
            if g.apply_sync(generation, spent, started, lag_us, (self.clock)()) {
                g.crossings(&state.id)
            } else {
                Vec::new()
            }
        };
        self.announce(crossings);
        Ok(())
    }

    /// Refreshes every budget now.
    pub async fn sync_all(&self) {
        let source = self.source.read().unwrap_or_else(|p| p.into_inner()).clone();
        let Some(source) = source else { return };
        for b in self.budgets().iter() {
            if let Err(error) = self.sync_one(b, source.as_ref()).await {
                warn!(budget = %b.id, %error, "budget spend refresh failed; keeping the last snapshot");
            }
        }
    }

    /// Starts the periodic spend refresh and the webhook sender. Needs a Tokio runtime.
    pub fn start(self: &Arc<Self>, source: Arc<dyn SpendSource>) {
        *self.source.write().unwrap_or_else(|p| p.into_inner()) = Some(source);
        self.notifier.start();
        let sys = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(s) = sys.upgrade() else { return };
                s.sync_all().await;
                let ms = s.sync_interval_ms.load(Ordering::Relaxed);
                drop(s);
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            }
        });
    }

    pub fn source(&self) -> Option<Arc<dyn SpendSource>> {
        self.source.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// How `/admin/reload` and SIGHUP get a fresh configuration.
    pub fn set_reloader(&self, f: Reloader) {
        *self.reloader.lock().unwrap_or_else(|p| p.into_inner()) = Some(f);
    }

    /// Re-reads the configuration through the reloader and applies it.
    pub fn reload(&self, who: &str) -> Result<(), String> {
        let set = {
            let r = self.reloader.lock().unwrap_or_else(|p| p.into_inner());
            let Some(f) = r.as_ref() else { return Err("this process cannot reload its configuration".into()) };
            f()?
        };
        let (b, l) = (set.budgets.len(), set.rate_limits.len());
        self.apply(set);
        self.audit(who, "reload", "", serde_json::json!({"budgets": b, "rate_limits": l}));
        Ok(())
    }

    /// The admin key's id, if these headers carry one.
    pub fn admin(&self, headers: &::http::HeaderMap) -> Option<String> {
        use sha2::Digest;
        let key = crate::keys::presented_key(headers)?;
        let digest: [u8; 32] = sha2::Sha256::digest(key.as_bytes()).into();
        self.admin_keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|(_, d)| *d == digest)
            .map(|(id, _)| id.clone())
    }

    /// Logs an admin change (who, when, what) and appends it to the audit file.
    pub fn audit(&self, who: &str, action: &str, budget: &str, detail: serde_json::Value) {
        let at = http::rfc3339((self.clock)());
        info!(admin = %who, action, budget, %detail, at = %at, "admin change");
        let line = serde_json::json!({"at": at, "who": who, "action": action, "budget": budget, "detail": detail});
        if let Some(path) = &self.audit_path {
            let write = || -> std::io::Result<()> {
                use std::io::Write;
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
                writeln!(f, "{line}")?;
                f.sync_data()
            };
            if let Err(error) = write() {
                warn!(%error, path = %path.display(), "cannot append to the admin audit log");
            }
        }
    }

    /// Prometheus lines for budgets and rate limits.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let budgets = self.budgets();
        if !budgets.is_empty() {
            let _ = writeln!(out, "# TYPE tollgate_budget_spent_nanousd gauge");
            for b in budgets.iter() {
                let g = b.lock();
                let (spent, reserved) = g.win.as_ref().map(|w| (w.spent(), w.reserved)).unwrap_or((0, 0));
                let id = &b.id;
                let _ = writeln!(out, "tollgate_budget_spent_nanousd{{budget=\"{id}\"}} {spent}");
                let _ = writeln!(out, "tollgate_budget_reserved_nanousd{{budget=\"{id}\"}} {reserved}");
                let _ = writeln!(out, "tollgate_budget_cap_nanousd{{budget=\"{id}\"}} {}", g.cap);
                let _ = writeln!(out, "tollgate_budget_admitted_total{{budget=\"{id}\"}} {}", g.admitted);
                let _ = writeln!(out, "tollgate_budget_rejected_total{{budget=\"{id}\"}} {}", g.rejected);
                let _ = writeln!(out, "tollgate_budget_downgraded_total{{budget=\"{id}\"}} {}", g.downgraded);
            }
        }
        self.notifier.render(out);
        for (id, n) in self.rate_limited.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(out, "tollgate_rate_limit_rejected_total{{limit=\"{id}\"}} {n}");
        }
    }
}
