//! Budgets and token rate limits, enforced at admission: `BudgetSystem::admit` charges a call's estimate
//! (prompt bytes / 4 + its `max_tokens`, priced at the model's rates) against every budget and rate limit
//! that covers it, and the metering task settles the real cost and tokens when the call's event is
//! finished. A background task refreshes each budget's spend from the query service every
//! `sync_interval_ms`, by event id (see `ledger.rs`); `/v1/budgets` and `/admin/*` (in `http.rs`) show
//! and change the state.

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
use prometheus_client::encoding::DescriptorEncoder;
use ratelimit::{LimitReservation, LimitState};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use tollgate_events::prom::{self, Kind};
use tollgate_events::{CallEvent, PriceTable, Usage};
use tracing::{info, warn};

/// Current time in UTC microseconds; injectable for tests.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// What the ledger asks the query service for one budget: the cost of the calls of one scope value
/// (in the range the whole ask is about).
#[derive(Debug, Clone)]
pub struct SpendQuery {
    pub scope: config::Scope,
    pub value: String,
    /// Tag budgets: (name, value).
    pub tag: Option<(String, String)>,
    /// Keys whose own attribution the budget matches: their calls count whatever their headers said.
    pub keys: Vec<String>,
    /// This gateway's settled calls the store has not confirmed yet: left out of the sum and looked up.
    pub pending: Vec<String>,
}

/// The store's answer to a [`SpendQuery`].
#[derive(Debug, Clone, Default)]
pub struct StoreSpend {
    /// Spend of the calls in scope, without the pending ones.
    pub others_nanousd: u64,
    /// The pending event ids the store holds.
    pub present: Vec<String>,
}

pub type SpendFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<StoreSpend>, String>> + Send + 'a>>;

/// Where authoritative spend comes from (the query service, on either engine).
pub trait SpendSource: Send + Sync + 'static {
    /// The spend of several budgets over `[from_us, to_us)`, one answer per query in the order asked
    /// (the store answers them together: one pass per scope kind, not one per budget).
    fn spend(&self, from_us: i64, to_us: i64, qs: Vec<SpendQuery>) -> SpendFuture<'_>;
}

type BudgetAsk<'a> = (&'a Arc<BudgetState>, Ask);

/// A budget's question prepared for a sync: its window's generation (an answer for an older window is
/// dropped), the range, the query.
struct Ask {
    generation: u64,
    range: (i64, i64),
    query: SpendQuery,
}

type Reloader = Box<dyn Fn() -> Result<BudgetConfigSet, String> + Send + Sync>;

pub struct BudgetSystem {
    budgets: RwLock<Arc<Vec<Arc<BudgetState>>>>,
    limits: RwLock<Arc<Vec<Arc<LimitState>>>>,
    admin_keys: RwLock<Vec<(String, [u8; 32])>>,
    prices: Arc<PriceTable>,
    clock: Clock,
    sync_interval_ms: AtomicU64,
    default_output_tokens: AtomicU64,
    pub(crate) notifier: Notifier,
    source: RwLock<Option<Arc<dyn SpendSource>>>,
    reloader: Mutex<Option<Reloader>>,
    audit_path: Option<PathBuf>,
    rate_limited: Mutex<std::collections::BTreeMap<String, u64>>,
    caps: Mutex<CapOverrides>,
}

/// Caps changed through the admin API, kept in a file so they survive a restart. An override holds
/// while the config's own cap is the one it replaced; a config that changes the cap wins.
#[derive(Default)]
struct CapOverrides {
    path: Option<PathBuf>,
    /// budget id → (admin cap, config cap it replaced)
    caps: std::collections::BTreeMap<String, (u64, u64)>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct CapOverride {
    cap_nanousd: u64,
    config_cap_nanousd: u64,
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
    /// Records the real cost of the request's events (`(event id, cost)`, one per upstream attempt) and
    /// its tokens in place of its estimate.
    pub fn settle(mut self, events: &[(String, u64)], tokens: u64) {
        self.settle_inner(events, Some(tokens));
    }

    fn settle_inner(&mut self, events: &[(String, u64)], tokens: Option<u64>) {
        if self.settled {
            return;
        }
        self.settled = true;
        let mut crossings = Vec::new();
        for r in &self.budgets {
            let mut g = r.state.lock();
            if g.settle(r.generation, r.amount, events) {
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

    /// Whether it reserved nothing (no budget or limit covers the call): settling it would do nothing.
    pub fn is_empty(&self) -> bool {
        self.budgets.is_empty() && self.limits.is_empty()
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        // Unsettled (the event never reached metering): free the reservation; tokens stay charged.
        self.settle_inner(&[], None);
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
            default_output_tokens: AtomicU64::new(0),
            notifier: Notifier::new(),
            source: RwLock::new(None),
            reloader: Mutex::new(None),
            audit_path,
            rate_limited: Mutex::new(Default::default()),
            caps: Mutex::new(CapOverrides::default()),
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
        self.apply_cap_overrides();
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
        self.default_output_tokens.store(set.settings.default_output_tokens, Ordering::Relaxed);
        self.notifier.set_webhook(set.settings.webhook_url);
    }

    /// Reads the admin cap overrides kept in `path` (if any) and keeps later changes there.
    pub fn keep_caps_in(&self, path: PathBuf) -> Result<(), String> {
        let caps = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<std::collections::BTreeMap<String, CapOverride>>(&bytes)
                .map_err(|e| format!("{}: {e}", path.display()))?
                .into_iter()
                .map(|(id, o)| (id, (o.cap_nanousd, o.config_cap_nanousd)))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Default::default(),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        *self.caps.lock().unwrap_or_else(|p| p.into_inner()) = CapOverrides { path: Some(path), caps };
        self.apply_cap_overrides();
        Ok(())
    }

    fn apply_cap_overrides(&self) {
        let caps = self.caps.lock().unwrap_or_else(|p| p.into_inner());
        for b in self.budgets().iter() {
            let mut g = b.lock();
            if let Some((cap, config_cap)) = caps.caps.get(&b.id) {
                if *config_cap == g.def.cap_nanousd {
                    g.cap = *cap;
                }
            }
        }
    }

    /// Sets a budget's cap (admin API) and records it so that it survives a restart; returns the old cap.
    pub fn set_cap(&self, b: &BudgetState, cap: u64) -> Result<u64, String> {
        let (old, config_cap) = {
            let mut g = b.lock();
            (std::mem::replace(&mut g.cap, cap), g.def.cap_nanousd)
        };
        let mut caps = self.caps.lock().unwrap_or_else(|p| p.into_inner());
        caps.caps.insert(b.id.clone(), (cap, config_cap));
        let Some(path) = caps.path.clone() else { return Ok(old) };
        let doc: std::collections::BTreeMap<&String, CapOverride> = caps
            .caps
            .iter()
            .map(|(id, (c, cc))| (id, CapOverride { cap_nanousd: *c, config_cap_nanousd: *cc }))
            .collect();
        let write = || -> std::io::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = path.with_extension("tmp");
            let mut f = std::fs::File::create(&tmp)?;
            std::io::Write::write_all(&mut f, &serde_json::to_vec_pretty(&doc).map_err(std::io::Error::other)?)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            match path.parent() {
                Some(dir) => std::fs::File::open(dir)?.sync_all(),
                None => Ok(()),
            }
        };
        write().map_err(|e| format!("the new cap applies but could not be saved to {}: {e}", path.display()))?;
        Ok(old)
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

    /// Checks a call against its rate limits and budgets and reserves its estimate on all of them. A
    /// downgrade goes only to a model the key may use (`may_use`); otherwise the call is refused.
    pub fn admit(
        self: &Arc<Self>,
        ev: &CallEvent,
        model: &str,
        input_tokens: u64,
        output_tokens: u64,
        may_use: &dyn Fn(&str) -> bool,
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
                (Action::Downgrade, Some(to)) if to != model && may_use(to) => Some(to.clone()),
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

    /// A budget's question for the store, or `None` when it has no open window.
    fn ask(&self, state: &BudgetState) -> Option<Ask> {
        let mut g = state.lock();
        g.roll((self.clock)());
        let w = g.win.as_ref()?;
        let query = SpendQuery {
            scope: state.scope,
            value: state.value.clone(),
            tag: state.tag().cloned(),
            keys: g.def.keys.clone(),
            pending: w.pending_ids(),
        };
        Some(Ask { generation: g.generation, range: (w.count_from_us, w.end_us), query })
    }

    /// Takes the store's answer to `ask` and announces the thresholds it crosses.
    fn take(&self, state: &BudgetState, ask: &Ask, answer: &StoreSpend) {
        let crossings = {
            let mut g = state.lock();
            let now = (self.clock)();
            if g.apply_sync(ask.generation, answer.others_nanousd, &ask.query.pending, &answer.present, now) {
                g.crossings(&state.id)
            } else {
                Vec::new()
            }
        };
        self.announce(crossings);
    }

    /// Refreshes one budget's spend from the query service: the store's spend without this gateway's
    /// pending calls, and which of those it now holds.
    pub async fn sync_one(&self, state: &Arc<BudgetState>, source: &dyn SpendSource) -> Result<(), String> {
        let _one_at_a_time = state.syncing.lock().await;
        let Some(ask) = self.ask(state) else { return Ok(()) };
        let answers = source.spend(ask.range.0, ask.range.1, vec![ask.query.clone()]).await?;
        let answer = answers.first().ok_or("the store gave no answer")?;
        self.take(state, &ask, answer);
        Ok(())
    }

    /// Refreshes every budget now: the budgets that share a window are asked together, so the store
    /// answers 30 monthly budgets with a few grouped queries instead of 30.
    pub async fn sync_all(&self) {
        let source = self.source.read().unwrap_or_else(|p| p.into_inner()).clone();
        let Some(source) = source else { return };
        let budgets = self.budgets();
        // Every budget's sync lock, in list order (as any other `sync_all` takes them), held until its
        // answer is taken: two overlapping syncs of one budget would both leave its pending ids out.
        let mut locks = Vec::with_capacity(budgets.len());
        for b in budgets.iter() {
            locks.push(b.syncing.lock().await);
        }
        let mut by_range: std::collections::BTreeMap<(i64, i64), Vec<BudgetAsk<'_>>> =
            std::collections::BTreeMap::new();
        for b in budgets.iter() {
            if let Some(ask) = self.ask(b) {
                by_range.entry(ask.range).or_default().push((b, ask));
            }
        }
        for ((from_us, to_us), asks) in by_range {
            let qs = asks.iter().map(|(_, a)| a.query.clone()).collect();
            match source.spend(from_us, to_us, qs).await {
                Ok(answers) if answers.len() == asks.len() => {
                    for ((b, ask), answer) in asks.iter().zip(&answers) {
                        self.take(b, ask, answer);
                    }
                }
                Ok(answers) => warn!(
                    asked = asks.len(),
                    answered = answers.len(),
                    "budget spend refresh got the wrong number of answers; keeping the last snapshots"
                ),
                Err(error) => {
                    let ids: Vec<&str> = asks.iter().map(|(b, _)| b.id.as_str()).collect();
                    warn!(budgets = %ids.join(","), %error, "budget spend refresh failed; keeping the last snapshots");
                }
            }
        }
        drop(locks);
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

    /// Scrape-time values for budgets and rate limits: spend, cap, remaining, hours to exhaustion at
    /// the window's average burn rate so far, and each rate limit's headroom (its tightest subject).
    pub fn encode_metrics(&self, e: &mut DescriptorEncoder) -> std::fmt::Result {
        let now = (self.clock)();
        let budgets = self.budgets();
        type Row = (String, [f64; 9], Option<f64>);
        let rows: Vec<Row> = budgets
            .iter()
            .map(|b| {
                let g = b.lock();
                let (spent, reserved, start, end, from) = g
                    .win
                    .as_ref()
                    .map(|w| (w.spent(), w.reserved, w.start_us, w.end_us, w.count_from_us))
                    .unwrap_or((0, 0, 0, 0, now));
                let remaining = g.cap as f64 - spent as f64;
                // Average burn since the window (or an admin reset) began, in nano-USD per hour.
                let hours_elapsed = (now - from) as f64 / 3.6e9;
                let hours = (spent > 0 && hours_elapsed > 0.0)
                    .then(|| (remaining.max(0.0) / (spent as f64 / hours_elapsed)).max(0.0));
                let v = [
                    spent as f64,
                    reserved as f64,
                    g.cap as f64,
                    remaining,
                    start as f64 / 1e6,
                    end as f64 / 1e6,
                    g.admitted as f64,
                    g.rejected as f64,
                    g.downgraded as f64,
                ];
                (b.id.clone(), v, hours)
            })
            .collect();
        let families: [(&str, Kind, &str); 9] = [
            ("tollgate_budget_spent_nanousd", Kind::Gauge, "Settled spend in the budget's current window (nano-USD)."),
            ("tollgate_budget_reserved_nanousd", Kind::Gauge, "Estimates reserved by calls in flight (nano-USD)."),
            ("tollgate_budget_cap_nanousd", Kind::Gauge, "The budget's cap in force (nano-USD)."),
            (
                "tollgate_budget_remaining_nanousd",
                Kind::Gauge,
                "Cap minus settled spend (negative after an overshoot).",
            ),
            ("tollgate_budget_window_start_timestamp_seconds", Kind::Gauge, "Start of the current window (Unix time)."),
            ("tollgate_budget_window_end_timestamp_seconds", Kind::Gauge, "End of the current window (Unix time)."),
            ("tollgate_budget_admitted", Kind::Counter, "Calls the budget admitted."),
            ("tollgate_budget_rejected", Kind::Counter, "Calls the budget rejected."),
            ("tollgate_budget_downgraded", Kind::Counter, "Calls the budget rerouted to a cheaper model."),
        ];
        for (i, (name, kind, help)) in families.into_iter().enumerate() {
            prom::encode_family(
                e,
                name,
                help,
                kind,
                rows.iter().map(|(id, v, _)| (vec![("budget", id.as_str())], v[i])),
            )?;
        }
        prom::encode_family(
            e,
            "tollgate_budget_exhaustion_seconds",
            "Time until the cap is reached at the window's average burn rate so far (absent while nothing is spent).",
            Kind::Gauge,
            rows.iter().filter_map(|(id, _, h)| h.map(|h| (vec![("budget", id.as_str())], h * 3600.0))),
        )?;
        self.notifier.encode_metrics(e)?;
        let rejected: Vec<(String, u64)> =
            self.rate_limited.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(k, v)| (k.clone(), *v)).collect();
        prom::encode_family(
            e,
            "tollgate_rate_limit_rejected",
            "Calls refused by a rate limit.",
            Kind::Counter,
            rejected.iter().map(|(id, n)| (vec![("limit", id.as_str())], *n as f64)),
        )?;
        let headroom: Vec<(String, &'static str, f64)> = self
            .limits()
            .iter()
            .flat_map(|l| l.headroom(now).into_iter().map(|(w, h)| (l.def.id.clone(), w, h)))
            .collect();
        prom::encode_family(
            e,
            "tollgate_rate_limit_headroom_ratio",
            "Share of a rate limit still free in its current window, for its most loaded subject (1 = unused).",
            Kind::Gauge,
            headroom.iter().map(|(id, w, h)| (vec![("limit", id.as_str()), ("window", *w)], *h)),
        )
    }
}
