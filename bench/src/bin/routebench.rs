//! The cost of the route decision on the request path: `Plan::new` (the strategy orders the targets,
//! the retry budget counts the request) and `next_target` (the breaker lets the call through), for a
//! one-target route of a listed model and for a sticky and a random weighted route with breakers on,
//! in a tight loop on one thread and on two threads at once (contention on the same route).
//!
//! `cargo build --release -p tollgate-bench --bin routebench && target/release/routebench`

use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;
use tollgate_gateway::config::{GatewaySettings, KeyConfig, PriceConfig, RouteConfig, UpstreamConfig};
use tollgate_gateway::providers::Upstream;
use tollgate_gateway::routing::{Plan, RouteTable, Who};

#[derive(Deserialize)]
struct Cfg {
    upstreams: Vec<UpstreamConfig>,
    routes: Vec<RouteConfig>,
    #[serde(default)]
    keys: Vec<KeyConfig>,
    #[serde(default)]
    prices: BTreeMap<String, PriceConfig>,
}

const CONFIG: &str = r#"
[[upstreams]]
name = "a"
base_url = "http://127.0.0.1:1/v1"
models = ["gpt-4o-mini"]
[[upstreams]]
name = "b"
base_url = "http://127.0.0.1:2/v1"
models = ["gpt-4o"]
[[routes]]
model = "canary"
strategy = "weighted"
targets = [{ upstream = "a", model = "gpt-4o-mini", weight = 90 }, { upstream = "b", model = "gpt-4o", weight = 10 }]
[[routes]]
model = "ab"
strategy = "weighted"
sticky = "user"
targets = [{ upstream = "a", model = "gpt-4o-mini", weight = 50 }, { upstream = "b", model = "gpt-4o", weight = 50 }]
"#;

fn per_call_ns(table: &RouteTable, model: &str, n: u64) -> f64 {
    let Some(route) = table.get(model).cloned() else { return f64::NAN };
    let who = Who { key_id: "eng-key", user: "alice" };
    let start = Instant::now();
    let mut picked = 0usize;
    for _ in 0..n {
        let mut plan = Plan::new(route.clone(), &who);
        if let Some(t) = plan.next_target() {
            picked += t.weight as usize;
        }
    }
    let ns = start.elapsed().as_nanos() as f64 / n as f64;
    std::hint::black_box(picked);
    ns
}

fn main() -> anyhow::Result<()> {
    let cfg: Cfg = toml::from_str(CONFIG)?;
    let v =
        tollgate_gateway::validate(&cfg.upstreams, &cfg.routes, &cfg.keys, &cfg.prices, &GatewaySettings::default())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    // The HTTP clients inside `Upstream` need a runtime to exist while they are built.
    let _guard = rt.enter();
    let upstreams: Vec<Arc<Upstream>> = v.upstreams.iter().cloned().filter_map(Upstream::new).map(Arc::new).collect();
    let table = Arc::new(RouteTable::new(&v.routes, &upstreams));
    let n = 2_000_000;
    for model in ["gpt-4o-mini", "canary", "ab"] {
        per_call_ns(&table, model, n / 10);
        let one = per_call_ns(&table, model, n);
        let two: Vec<f64> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..2).map(|_| s.spawn(|| per_call_ns(&table, model, n))).collect();
            hs.into_iter().filter_map(|h| h.join().ok()).collect()
        });
        let two_avg = two.iter().sum::<f64>() / two.len().max(1) as f64;
        println!("route `{model}`: {one:.0} ns per decision on one thread, {two_avg:.0} ns with two threads at once");
    }
    Ok(())
}
