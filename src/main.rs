//! The `tollgate` command: parses the command line and the config file and wires the gateway, collector
//! and query crates together. No logic of its own beyond that.

use anyhow::Context;
use axum::extract::State;
use axum::response::IntoResponse;
use clap::{Parser, Subcommand};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tollgate_clickhouse::{ClickHouseConfig, ClickHouseSink, ClickHouseSinkMetrics};
use tollgate_collector::{
    Collector, CollectorConfig, CollectorMetrics, ParquetSink, ParquetSinkConfig, SinkKind, Sinks,
};
use tollgate_gateway::budget::config::{
    AdminKeyConfig, BudgetConfig, BudgetConfigSet, BudgetSettings, RateLimitConfig,
};
use tollgate_gateway::budget::{BudgetSystem, SpendFuture, SpendQuery, SpendSource};
use tollgate_gateway::config::{GatewaySettings, KeyConfig, PriceConfig, RouteConfig, UpstreamConfig};
use tollgate_gateway::ship::{run_shipper, ShipConfig, ShipMetrics};
use tollgate_gateway::{GatewayState, ValidatedConfig};
use tollgate_query::{Engine, QueryConfig, QueryService, TimeRange};
use tracing::{info, warn};

mod prices_cli;

#[derive(Parser)]
#[command(name = "tollgate", version, about = "An LLM gateway that meters every call into an exact, attributed record")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run gateway, collector and query service in one process (Parquet under the data dir and/or
    /// ClickHouse, as `[collector] sinks` says).
    Serve {
        #[arg(long, default_value = "tollgate.toml")]
        config: PathBuf,
    },
    /// Run only the gateway (and query service); events are shipped to a `tollgate collector` (`[shipping]`),
    /// through a local outbox spool.
    Gateway {
        #[arg(long, default_value = "tollgate.toml")]
        config: PathBuf,
    },
    /// Run only the collector: an ingest endpoint for gateways' event batches, the write-ahead log and the
    /// sinks (`[collector]`).
    Collector {
        #[arg(long, default_value = "tollgate.toml")]
        config: PathBuf,
    },
    /// Check a config file and exit.
    Check {
        #[arg(long, default_value = "tollgate.toml")]
        config: PathBuf,
    },
    /// Print a showback table (calls, tokens, cost) from the stored call log.
    Report {
        #[arg(long, default_value = "tollgate.toml")]
        config: PathBuf,
        /// YYYY-MM-DD or RFC 3339; default: first day of this month (UTC).
        #[arg(long)]
        from: Option<String>,
        /// YYYY-MM-DD (inclusive) or RFC 3339 (exclusive); default: now.
        #[arg(long)]
        to: Option<String>,
        #[arg(long, default_value = "department,team,model")]
        group_by: String,
        /// table or csv.
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Price catalogs: import a file, show the prices in force, diff a file against them.
    Prices {
        #[command(subcommand)]
        cmd: prices_cli::PricesCmd,
    },
    /// Recompute the cost of stored events with the prices in force (after a price fix), in every
    /// configured store; each run is recorded in an audit trail.
    Reprice {
        #[arg(long, default_value = "tollgate.toml")]
        config: PathBuf,
        /// YYYY-MM-DD or RFC 3339.
        #[arg(long)]
        from: String,
        /// YYYY-MM-DD (inclusive) or RFC 3339 (exclusive).
        #[arg(long)]
        to: String,
        /// Only events of this served model (or this name with a date suffix).
        #[arg(long)]
        model: Option<String>,
        /// Show what would change; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Who runs it, for the audit trail (default: $USER).
        #[arg(long)]
        by: Option<String>,
    },
    /// Print the `sha256:` hash of a virtual key, for the `hash` field of a `[[keys]]` entry.
    HashKey { key: String },
    /// Apply pending ClickHouse migrations (from `[clickhouse]` in the config, or the URL given).
    Migrate {
        #[arg(long, default_value = "tollgate.toml")]
        config: PathBuf,
        /// e.g. http://127.0.0.1:8123; overrides `clickhouse.url` (the config file is then optional).
        #[arg(long)]
        clickhouse_url: Option<String>,
        /// Overrides `clickhouse.database`.
        #[arg(long)]
        database: Option<String>,
    },
}

/// The whole config file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    server: ServerConfig,
    #[serde(default)]
    storage: StorageConfig,
    #[serde(default)]
    gateway: GatewaySettings,
    #[serde(default)]
    collector: CollectorConfig,
    #[serde(default)]
    query: QueryConfig,
    #[serde(default)]
    clickhouse: Option<ClickHouseConfig>,
    #[serde(default)]
    shipping: Option<ShipConfig>,
    #[serde(default)]
    prices: BTreeMap<String, PriceConfig>,
    #[serde(default)]
    upstreams: Vec<UpstreamConfig>,
    /// Model groups (see the README's "Routes").
    #[serde(default)]
    routes: Vec<RouteConfig>,
    #[serde(default)]
    keys: Vec<KeyConfig>,
    /// Spending caps (see the README's "Budgets").
    #[serde(default)]
    budgets: Vec<BudgetConfig>,
    /// Token and request rate limits.
    #[serde(default)]
    rate_limits: Vec<RateLimitConfig>,
    #[serde(default)]
    budget_settings: BudgetSettings,
    /// Keys of the admin API (`/admin/*`).
    #[serde(default)]
    admin_keys: Vec<AdminKeyConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerConfig {
    /// Address for the gateway and query APIs.
    #[serde(default = "default_listen")]
    listen: String,
    /// On SIGTERM/Ctrl-C, how long open streams may run before they are cut.
    #[serde(default = "default_grace_ms")]
    shutdown_grace_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig { listen: default_listen(), shutdown_grace_ms: default_grace_ms() }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StorageConfig {
    /// Where Parquet call logs (`calls/date=…/`) and the spill file live.
    #[serde(default = "default_data_dir")]
    data_dir: PathBuf,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig { data_dir: default_data_dir() }
    }
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_grace_ms() -> u64 {
    30_000
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("./data")
}

/// Loads and validates; the error is one line that names the offending key.
fn load(path: &Path) -> Result<(Config, ValidatedConfig), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("config {}: {e}", path.display()))?;
    let cfg: Config = toml::from_str(&text).map_err(|e| toml_error_line(path, &text, &e))?;
    let base = tollgate_events::prices::store::table_with_stored(&cfg.storage.data_dir)
        .map_err(|e| format!("config {}: prices: {e}", path.display()))?;
    let validated =
        tollgate_gateway::validate_with_prices(base, &cfg.upstreams, &cfg.routes, &cfg.keys, &cfg.prices, &cfg.gateway)
            .map_err(|e| format!("config {}: {e}", path.display()))?;
    cfg.collector.validate().map_err(|e| format!("config {}: {e}", path.display()))?;
    if cfg.server.listen.parse::<std::net::SocketAddr>().is_err() {
        return Err(format!(
            "config {}: server.listen: `{}` is not an address like 127.0.0.1:8080",
            path.display(),
            cfg.server.listen
        ));
    }
    if let Some(ch) = &cfg.clickhouse {
        ch.validate().map_err(|e| format!("config {}: {e}", path.display()))?;
    }
    if let Some(sh) = &cfg.shipping {
        sh.validate().map_err(|e| format!("config {}: {e}", path.display()))?;
    }
    if cfg.collector.listen.parse::<std::net::SocketAddr>().is_err() {
        return Err(format!(
            "config {}: collector.listen: `{}` is not an address like 127.0.0.1:8090",
            path.display(),
            cfg.collector.listen
        ));
    }
    if let Some(var) = &cfg.collector.ingest_token_env {
        if std::env::var_os(var).is_none() {
            return Err(format!(
                "config {}: collector.ingest_token_env: environment variable `{var}` is not set",
                path.display()
            ));
        }
    }
    if cfg.clickhouse.is_none() {
        if cfg.collector.sinks.contains(&SinkKind::Clickhouse) {
            return Err(format!(
                "config {}: collector.sinks: `clickhouse` needs a [clickhouse] section with a url",
                path.display()
            ));
        }
        if cfg.query.engine == Engine::Clickhouse {
            return Err(format!(
                "config {}: query.engine: `clickhouse` needs a [clickhouse] section with a url",
                path.display()
            ));
        }
    }
    budget_set(path, &cfg, &validated)?;
    if cfg.query.sql_max_rows == 0 || cfg.query.sql_timeout_ms == 0 {
        return Err(format!(
            "config {}: query.sql_max_rows and query.sql_timeout_ms must be greater than 0",
            path.display()
        ));
    }
    Ok((cfg, validated))
}

/// The checked budgets, rate limits and admin keys.
fn budget_set(path: &Path, cfg: &Config, v: &ValidatedConfig) -> Result<BudgetConfigSet, String> {
    tollgate_gateway::budget::config::validate_budgets(
        &cfg.budgets,
        &cfg.rate_limits,
        &cfg.budget_settings,
        &cfg.admin_keys,
        v,
    )
    .map_err(|e| format!("config {}: {e}", path.display()))
}

/// Budgets read their authoritative spend from the query service (either engine).
struct QuerySpend(Arc<QueryService>);

impl SpendSource for QuerySpend {
    fn spend(&self, q: SpendQuery) -> SpendFuture<'_> {
        Box::pin(async move {
            let filter = match q.tag {
                Some((k, v)) => tollgate_query::SpendFilter::Tag(k, v),
                None => tollgate_query::SpendFilter::scope(q.scope.as_str(), &q.value)
                    .ok_or_else(|| format!("no column for scope {}", q.scope.as_str()))?,
            };
            let range = TimeRange { from_us: q.from_us, to_us: q.to_us };
            self.0.spend(&range, &filter).await.map_err(|e| e.to_string())
        })
    }
}

/// toml's own error spans several lines; fold it into one that names the key at the error's line.
fn toml_error_line(path: &Path, text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let line_no = text[..span.start.min(text.len())].matches('\n').count() + 1;
            let line = text.lines().nth(line_no - 1).unwrap_or("").trim();
            let key = line.split('=').next().unwrap_or("").trim();
            format!("config {} line {line_no} (`{key}`): {msg}", path.display())
        }
        None => format!("config {}: {msg}", path.display()),
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::HashKey { key } => {
            println!("{}", tollgate_gateway::hash_key(&key));
            Ok(())
        }
        Cmd::Check { config } => {
            let (_, v) = load(&config).unwrap_or_else(|e| exit_config(e));
            println!(
                "config ok: {} upstreams, {} keys, {} priced models",
                v.upstreams.len(),
                v.keys.len(),
                v.prices.len()
            );
            Ok(())
        }
        Cmd::Serve { config } => {
            let (cfg, validated) = load(&config).unwrap_or_else(|e| exit_config(e));
            runtime()?.block_on(serve(cfg, validated, Mode::All, config))
        }
        Cmd::Gateway { config } => {
            let (cfg, validated) = load(&config).unwrap_or_else(|e| exit_config(e));
            if cfg.shipping.is_none() {
                exit_config(format!(
                    "config {}: shipping: `tollgate gateway` needs a [shipping] section with collector_url",
                    config.display()
                ));
            }
            runtime()?.block_on(serve(cfg, validated, Mode::Gateway, config))
        }
        Cmd::Collector { config } => {
            let (cfg, _) = load(&config).unwrap_or_else(|e| exit_config(e));
            runtime()?.block_on(collector_main(cfg))
        }
        Cmd::Migrate { config, clickhouse_url, database } => {
            let ch = migrate_target(&config, clickhouse_url, database).unwrap_or_else(|e| exit_config(e));
            match runtime()?.block_on(tollgate_clickhouse::migrate(&ch)) {
                Ok(applied) if applied.is_empty() => println!("database `{}` is up to date", ch.database),
                Ok(applied) => println!("database `{}`: applied migrations {applied:?}", ch.database),
                Err(e) => {
                    eprintln!("{e}");
                    std::process::exit(1);
                }
            }
            Ok(())
        }
        Cmd::Prices { cmd } => {
            // The prices in force: built-in, imported and `[prices]`, without checking upstreams (a config
            // that names a model only an import will price must still be able to diff and import).
            let load_prices = |p: &Path| -> Result<tollgate_events::PriceTable, String> {
                let text = std::fs::read_to_string(p).map_err(|e| format!("config {}: {e}", p.display()))?;
                let cfg: Config = toml::from_str(&text).map_err(|e| toml_error_line(p, &text, &e))?;
                let base = tollgate_events::prices::store::table_with_stored(&cfg.storage.data_dir)
                    .map_err(|e| format!("config {}: prices: {e}", p.display()))?;
                tollgate_gateway::validate_with_prices(base, &[], &[], &[], &cfg.prices, &cfg.gateway)
                    .map(|v| v.prices)
                    .map_err(|e| format!("config {}: {e}", p.display()))
            };
            let check = |p: &Path| load(p).map(|_| ());
            let data_dir = |p: &Path| -> Result<PathBuf, String> {
                let text = std::fs::read_to_string(p).map_err(|e| format!("config {}: {e}", p.display()))?;
                let cfg: Config = toml::from_str(&text).map_err(|e| toml_error_line(p, &text, &e))?;
                Ok(cfg.storage.data_dir)
            };
            prices_cli::prices(cmd, &load_prices, &data_dir, &check).unwrap_or_else(|e| {
                eprintln!("{e}");
                std::process::exit(1)
            });
            Ok(())
        }
        Cmd::Reprice { config, from, to, model, dry_run, by } => {
            let (cfg, v) = load(&config).unwrap_or_else(|e| exit_config(e));
            let target = prices_cli::RepriceTarget {
                data_dir: cfg.storage.data_dir.clone(),
                parquet: cfg.collector.sinks.contains(&SinkKind::Parquet),
                clickhouse: cfg.clickhouse.clone().filter(|_| cfg.collector.sinks.contains(&SinkKind::Clickhouse)),
                prices: v.prices,
            };
            let who = by.or_else(|| std::env::var("USER").ok()).unwrap_or_else(|| "unknown".into());
            runtime()?.block_on(prices_cli::reprice(target, &from, &to, model, dry_run, who))
        }
        Cmd::Report { config, from, to, group_by, format } => {
            let (cfg, _) = load(&config).unwrap_or_else(|e| exit_config(e));
            runtime()?.block_on(report(cfg, from, to, group_by, format))
        }
    }
}

/// The ClickHouse settings `tollgate migrate` uses: the config's, with the command line's overrides.
fn migrate_target(config: &Path, url: Option<String>, database: Option<String>) -> Result<ClickHouseConfig, String> {
    let from_file = if url.is_none() || config.exists() { Some(load(config)?.0.clickhouse) } else { None };
    let mut ch = match (from_file.flatten(), url.clone()) {
        (Some(c), _) => c,
        (None, Some(u)) => ClickHouseConfig::new(u, "tollgate"),
        (None, None) => {
            return Err(format!(
                "config {}: clickhouse: no [clickhouse] section; pass --clickhouse-url",
                config.display()
            ))
        }
    };
    if let Some(u) = url {
        ch.url = u;
    }
    if let Some(d) = database {
        ch.database = d;
    }
    ch.validate()?;
    Ok(ch)
}

fn exit_config(e: String) -> ! {
    eprintln!("{e}");
    std::process::exit(2)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Gateway, collector and query service in one process.
    All,
    /// Gateway and query service; events shipped to a collector process.
    Gateway,
}

/// Opens the configured sinks (start-up I/O).
fn open_sinks(cfg: &Config, data_dir: &Path) -> anyhow::Result<(Sinks, Option<Arc<ClickHouseSinkMetrics>>)> {
    let mut sinks = Sinks::default();
    if cfg.collector.sinks.contains(&SinkKind::Parquet) {
        sinks.parquet = Some(
            ParquetSink::open(ParquetSinkConfig::new(data_dir.to_path_buf())).context("opening the Parquet sink")?,
        );
    }
    let mut ch_metrics = None;
    if let (true, Some(ch)) = (cfg.collector.sinks.contains(&SinkKind::Clickhouse), &cfg.clickhouse) {
        let sink = ClickHouseSink::open(ch.clone(), data_dir).context("opening the ClickHouse sink")?;
        ch_metrics = Some(sink.metrics.clone());
        sinks.clickhouse = Some(sink);
    }
    Ok((sinks, ch_metrics))
}

/// Apply pending ClickHouse migrations before serving, so the query engine finds its tables; a server that
/// is down does not stop the process (the sink retries them before its first insert).
async fn migrate_at_start(cfg: &Config) {
    if let Some(ch) = cfg.clickhouse.as_ref().filter(|c| c.migrate_on_start) {
        if let Err(error) = tollgate_clickhouse::migrate(ch).await {
            warn!(%error, "clickhouse migrations at start failed; the sink retries them");
        }
    }
}

async fn serve(cfg: Config, validated: ValidatedConfig, mode: Mode, config_path: PathBuf) -> anyhow::Result<()> {
    let data_dir = cfg.storage.data_dir.clone();
    std::fs::create_dir_all(&data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    migrate_at_start(&cfg).await;
    let query = Arc::new(open_query(&cfg)?);

    let budget_cfg = budget_set(&config_path, &cfg, &validated).map_err(anyhow::Error::msg)?;
    let budgets =
        BudgetSystem::new(budget_cfg, Arc::new(validated.prices.clone()), Some(data_dir.join("admin-audit.jsonl")));
    if let Some(w) = validated.prices.staleness_warning_today() {
        warn!(read_on = tollgate_events::BUILTIN_PRICES_READ_ON, "{w}");
    }
    let (gateway, meter_rx) =
        GatewayState::start_with_budgets(validated, data_dir.join("spool").join("overflow.jsonl"), budgets.clone());
    // SIGHUP and POST /admin/reload re-read the config and the imported catalog: budgets and prices.
    let price_book = gateway.meter.prices().clone();
    budgets.set_reloader(Box::new(move || {
        let (c, v) = load(&config_path)?;
        let set = budget_set(&config_path, &c, &v)?;
        info!(models = v.prices.len(), "prices reloaded");
        price_book.replace(v.prices);
        Ok(set)
    }));
    budgets.start(Arc::new(QuerySpend(query.clone())));
    spawn_sighup_reload(budgets.clone());
    let (coll_tx, coll_rx) = mpsc::channel(tollgate_collector::queue_batches(cfg.collector.queue_capacity));
    let metering = tokio::spawn(tollgate_gateway::run_metering(meter_rx, coll_tx.clone()));
    let grace = Duration::from_millis(cfg.server.shutdown_grace_ms);
    let (collector_metrics, ch_metrics, ship_metrics, collector) = match (mode, cfg.shipping.clone()) {
        (Mode::Gateway, Some(ship)) => {
            let m = Arc::new(ShipMetrics::default());
            let task = tokio::spawn(run_shipper(coll_rx, ship, data_dir.clone(), m.clone(), grace));
            (None, None, Some(m), task)
        }
        _ => {
            let (sinks, ch_metrics) = open_sinks(&cfg, &data_dir)?;
            let m = Arc::new(CollectorMetrics::default());
            let collector =
                Collector::start(&data_dir, sinks, &cfg.collector, m.clone()).context("opening the write-ahead log")?;
            let task = tokio::spawn(tollgate_collector::run_intake(coll_rx, collector));
            (Some(m), ch_metrics, None, task)
        }
    };

    let metrics_state = MetricsState {
        gateway: Some(gateway.clone()),
        collector: collector_metrics,
        clickhouse: ch_metrics,
        shipping: ship_metrics,
        collector_tx: Some(coll_tx),
    };
    let auth_state = gateway.clone();
    let query_routes = tollgate_query::app(query)
        .merge(tollgate_gateway::budget::http::budget_routes(budgets.clone()))
        .layer(axum::middleware::from_fn(move |req: axum::extract::Request, next: axum::middleware::Next| {
            let gw = auth_state.clone();
            async move {
                match gw.query_allowed(req.headers()) {
                    Ok(()) => next.run(req).await,
                    Err(e) => e.into_response(),
                }
            }
        }));
    let app = tollgate_gateway::app(gateway)
        .merge(query_routes)
        .merge(tollgate_gateway::budget::http::admin_routes(budgets))
        // Unknown paths reach the gateway's fallback: a 404 in OpenAI's shape and one call event.
        .merge(axum::Router::new().route("/metrics", axum::routing::get(metrics)).with_state(metrics_state));

    let listener = tokio::net::TcpListener::bind(&cfg.server.listen)
        .await
        .with_context(|| format!("binding {}", cfg.server.listen))?;
    let addr = listener.local_addr()?;
    // Without TCP_NODELAY the last small SSE write of a stream waits for the client's delayed ACK (~40 ms).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
    });
    println!("listening on {addr}");
    info!(%addr, data_dir = %data_dir.display(), "tollgate serving");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(async move {
        let mut rx = stop_rx;
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = rx.wait_for(|s| *s).await;
            })
            .await
    });
    shutdown_signal().await;
    info!("shutting down: no new connections; waiting for open calls");
    let _ = stop_tx.send(true);
    let grace = Duration::from_millis(cfg.server.shutdown_grace_ms);
    let server_abort = server.abort_handle();
    if tokio::time::timeout(grace, server).await.is_err() {
        warn!(grace_ms = cfg.server.shutdown_grace_ms, "open calls did not finish in time; cutting them");
        server_abort.abort();
    }
    // With the server gone every event sender is dropped: metering drains, then the collector flushes.
    let _ = metering.await;
    let _ = collector.await;
    info!("all call events written; bye");
    Ok(())
}

/// The query service on the configured engine.
fn open_query(cfg: &Config) -> anyhow::Result<QueryService> {
    match (cfg.query.engine, &cfg.clickhouse) {
        (Engine::Clickhouse, Some(ch)) => Ok(QueryService::open_clickhouse(ch.clone(), cfg.query.clone())),
        _ => Ok(QueryService::open(cfg.storage.data_dir.clone(), cfg.query.clone())?),
    }
}

/// SIGHUP re-reads the config file and applies its budgets, rate limits and admin keys.
fn spawn_sighup_reload(budgets: Arc<BudgetSystem>) {
    #[cfg(unix)]
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else { return };
        while hup.recv().await.is_some() {
            match budgets.reload("SIGHUP") {
                Ok(()) => info!("budgets reloaded on SIGHUP"),
                Err(error) => warn!(%error, "reload on SIGHUP failed; keeping the running budgets"),
            }
        }
    });
    #[cfg(not(unix))]
    let _ = budgets;
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[derive(Clone)]
struct MetricsState {
    gateway: Option<Arc<GatewayState>>,
    collector: Option<Arc<CollectorMetrics>>,
    clickhouse: Option<Arc<ClickHouseSinkMetrics>>,
    shipping: Option<Arc<ShipMetrics>>,
    collector_tx: Option<mpsc::Sender<Vec<tollgate_events::CallEvent>>>,
}

async fn metrics(State(m): State<MetricsState>) -> impl IntoResponse {
    let mut out = String::with_capacity(4096);
    if let Some(g) = &m.gateway {
        g.meter.metrics().render(&mut out, g.meter.queue_depth());
        g.budgets.render(&mut out);
        g.render_routes(&mut out);
    }
    if let Some(c) = &m.collector {
        let depth = m.collector_tx.as_ref().map(|t| t.max_capacity() - t.capacity()).unwrap_or(0);
        c.render(&mut out, depth);
    }
    if let Some(ch) = &m.clickhouse {
        ch.render(&mut out);
    }
    if let Some(s) = &m.shipping {
        s.render(&mut out);
    }
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}

/// `tollgate collector`: the ingest endpoint, the write-ahead log and the sinks.
async fn collector_main(cfg: Config) -> anyhow::Result<()> {
    let data_dir = cfg.storage.data_dir.clone();
    std::fs::create_dir_all(&data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    migrate_at_start(&cfg).await;
    let (sinks, ch_metrics) = open_sinks(&cfg, &data_dir)?;
    let coll_metrics = Arc::new(CollectorMetrics::default());
    let collector = Arc::new(
        Collector::start(&data_dir, sinks, &cfg.collector, coll_metrics.clone())
            .context("opening the write-ahead log")?,
    );
    let token = cfg.collector.ingest_token_env.as_ref().and_then(|v| std::env::var(v).ok()).map(Arc::from);
    if token.is_none() {
        warn!("collector.ingest_token_env is not set: any caller may send events");
    }
    let metrics_state = MetricsState {
        gateway: None,
        collector: Some(coll_metrics),
        clickhouse: ch_metrics,
        shipping: None,
        collector_tx: None,
    };
    let app = tollgate_collector::ingest::app(tollgate_collector::ingest::IngestState {
        collector: collector.clone(),
        token,
    })
    .merge(axum::Router::new().route("/metrics", axum::routing::get(metrics)).with_state(metrics_state))
    .route("/healthz", axum::routing::get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind(&cfg.collector.listen)
        .await
        .with_context(|| format!("binding {}", cfg.collector.listen))?;
    let addr = listener.local_addr()?;
    println!("listening on {addr}");
    info!(%addr, data_dir = %data_dir.display(), "tollgate collector serving");
    axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await?;
    info!("collector: no new batches; letting the sinks write what is in the log");
    match Arc::try_unwrap(collector) {
        Ok(c) => c.close().await,
        Err(_) => warn!("collector still referenced at shutdown; the log keeps what the sinks did not write"),
    }
    info!("bye");
    Ok(())
}

async fn report(
    cfg: Config,
    from: Option<String>,
    to: Option<String>,
    group_by: String,
    format: String,
) -> anyhow::Result<()> {
    let svc = open_query(&cfg)?;
    let range = TimeRange::parse(from.as_deref(), to.as_deref())?;
    let group = tollgate_query::parse_group_by(Some(&group_by), &[])?;
    let rows = svc.showback(&range, &group).await?;
    if format == "csv" {
        print!("{}", tollgate_query::showback_csv(&group, &rows));
        return Ok(());
    }
    let mut header: Vec<String> = group.iter().map(|(n, _)| (*n).to_string()).collect();
    header.extend(["calls", "input_tokens", "output_tokens", "cost_usd"].map(String::from));
    let mut table: Vec<Vec<String>> = vec![header];
    let mut total = tollgate_query::Totals::default();
    for r in &rows {
        tollgate_query::add_totals(&mut total, &r.totals);
        let mut line: Vec<String> =
            r.group.iter().map(|(_, v)| if v.is_empty() { "-".into() } else { v.clone() }).collect();
        line.extend([
            r.totals.calls.to_string(),
            r.totals.input_tokens.to_string(),
            r.totals.output_tokens.to_string(),
            tollgate_events::format_usd(r.totals.cost_nanousd),
        ]);
        table.push(line);
    }
    let mut last: Vec<String> =
        group.iter().enumerate().map(|(i, _)| if i == 0 { "TOTAL".into() } else { String::new() }).collect();
    if last.is_empty() {
        last.push("TOTAL".into());
        table[0].insert(0, String::new());
        for row in table.iter_mut().skip(1) {
            row.insert(0, String::new());
        }
    }
    last.extend([
        total.calls.to_string(),
        total.input_tokens.to_string(),
        total.output_tokens.to_string(),
        tollgate_events::format_usd(total.cost_nanousd),
    ]);
    table.push(last);
    let widths: Vec<usize> = (0..table[0].len()).map(|c| table.iter().map(|r| r[c].len()).max().unwrap_or(0)).collect();
    let numeric_from = group.len().max(1);
    println!(
        "showback {} .. {}",
        TimeRange::render(range.from_us),
        if range.to_us == i64::MAX { "now".to_string() } else { TimeRange::render(range.to_us) }
    );
    for (i, row) in table.iter().enumerate() {
        let cells: Vec<String> =
            row.iter()
                .enumerate()
                .map(|(c, v)| {
                    if c >= numeric_from {
                        format!("{v:>w$}", w = widths[c])
                    } else {
                        format!("{v:<w$}", w = widths[c])
                    }
                })
                .collect();
        println!("{}", cells.join("  ").trim_end());
        if i == 0 || i == table.len() - 2 {
            println!("{}", widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("  "));
        }
    }
    Ok(())
}
