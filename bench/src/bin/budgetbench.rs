//! The cost of the budget and rate-limit check on the request path: `BudgetSystem::admit` + settling,
//! for a call covered by three budgets (department, team, tag) and one rate limit, measured in a tight
//! loop on one thread and on two threads at once (contention on the same budgets).
//!
//! `cargo build --release -p tollgate-bench --bin budgetbench && target/release/budgetbench`

use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;
use tollgate_events::{CallEvent, PriceTable};
use tollgate_gateway::budget::config::{
    validate_budgets, AdminKeyConfig, BudgetConfig, BudgetSettings, RateLimitConfig,
};
use tollgate_gateway::budget::BudgetSystem;
use tollgate_gateway::config::{GatewaySettings, KeyConfig, PriceConfig, UpstreamConfig};

#[derive(Deserialize)]
struct Cfg {
    upstreams: Vec<UpstreamConfig>,
    keys: Vec<KeyConfig>,
    #[serde(default)]
    prices: BTreeMap<String, PriceConfig>,
    budgets: Vec<BudgetConfig>,
    rate_limits: Vec<RateLimitConfig>,
    #[serde(default)]
    budget_settings: BudgetSettings,
    #[serde(default)]
    admin_keys: Vec<AdminKeyConfig>,
}

const CONFIG: &str = r#"
[[upstreams]]
name = "mock"
kind = "openai_compatible"
base_url = "http://127.0.0.1:1/v1"
models = ["gpt-4o-mini", "gpt-4o"]
[[keys]]
id = "eng"
hash = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
department = "engineering"
team = "core"
[[budgets]]
id = "dept"
scope = "department"
match = "engineering"
period = "month"
time_zone = "Europe/Berlin"
cap_usd = "1000000000"
soft_thresholds = [80, 95]
action = "reject"
[[budgets]]
id = "team"
scope = "team"
match = "core"
period = "day"
cap_usd = "1000000000"
action = "downgrade"
downgrade_to = "gpt-4o-mini"
[[budgets]]
id = "tag"
scope = "tag"
match = "env=prod"
period = "week"
cap_usd = "1000000000"
action = "reject"
[[rate_limits]]
id = "tpm"
scope = "team"
tokens_per_minute = 1000000000000
requests_per_minute = 1000000000000
"#;

fn main() -> anyhow::Result<()> {
    let cfg: Cfg = toml::from_str(CONFIG)?;
    let v = tollgate_gateway::validate(&cfg.upstreams, &[], &cfg.keys, &cfg.prices, &GatewaySettings::default())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let set = validate_budgets(&cfg.budgets, &cfg.rate_limits, &cfg.budget_settings, &cfg.admin_keys, &v)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let sys = BudgetSystem::new(set, Arc::new(PriceTable::builtin()), None);
    let mut ev = CallEvent {
        department: "engineering".into(),
        team: "core".into(),
        api_key_id: "eng".into(),
        ..Default::default()
    };
    ev.tags.insert("env".into(), "prod".into());
    let n: u64 = 2_000_000;
    let run = move |sys: Arc<BudgetSystem>, ev: CallEvent| -> Result<std::time::Duration, String> {
        let t = Instant::now();
        for i in 0..n {
            let a = sys.admit(&ev, "gpt-4o", 1_000 + i % 7, 256).map_err(|e| e.to_string())?;
            a.admission.settle(1_234, 1_256);
        }
        Ok(t.elapsed())
    };
    // warm-up
    run(sys.clone(), ev.clone()).map_err(anyhow::Error::msg)?;
    let one = run(sys.clone(), ev.clone()).map_err(anyhow::Error::msg)?;
    let (s1, s2) = (sys.clone(), sys.clone());
    let (e1, e2) = (ev.clone(), ev.clone());
    let t = Instant::now();
    let h1 = std::thread::spawn(move || run(s1, e1));
    let h2 = std::thread::spawn(move || run(s2, e2));
    let a = h1.join().map_err(|_| anyhow::anyhow!("thread"))?.map_err(anyhow::Error::msg)?;
    let b = h2.join().map_err(|_| anyhow::anyhow!("thread"))?.map_err(anyhow::Error::msg)?;
    let wall = t.elapsed();
    let per = |d: std::time::Duration| d.as_nanos() as f64 / n as f64;
    println!("budget check (admit + settle; 3 budgets + 1 rate limit cover the call), {n} calls per thread:");
    println!("  1 thread:  {:.0} ns per call", per(one));
    println!(
        "  2 threads on the same budgets: {:.0} / {:.0} ns per call per thread ({:.0} ns wall per call overall)",
        per(a),
        per(b),
        wall.as_nanos() as f64 / (2 * n) as f64
    );
    Ok(())
}
