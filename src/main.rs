//! The `tollgate` command: parses the command line and the config file and wires the gateway, collector
//! and query crates together. No logic of its own beyond that.

use anyhow::Context;
use axum::extract::State;
use axum::response::IntoResponse;
use clap::{Parser, Subcommand};
use prometheus_client::registry::Registry;
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
use tollgate_events::prom::{self, MetricsAccess, MetricsConfig};
use tollgate_gateway::budget::config::{
    AdminKeyConfig, BudgetConfig, BudgetConfigSet, BudgetSettings, RateLimitConfig,
};
use tollgate_gateway::budget::{BudgetSystem, SpendFuture, SpendQuery, SpendSource, StoreSpend};
use tollgate_gateway::config::{GatewaySettings, KeyConfig, PriceConfig, RouteConfig, UpstreamConfig};
use tollgate_gateway::routing::stats::{RoutingStatsSource, StatsFuture, StoreRow, StoreStat};
use tollgate_gateway::ship::{open_spool, run_shipper, ShipConfig, ShipMetrics};
use tollgate_gateway::{GatewayMetrics, GatewayState, ValidatedConfig};
use tollgate_query::{Engine, QueryConfig, QueryService, TimeRange};
use tracing::{info, warn};

mod prices_cli;

#[derive(Parser)]
#[command(name = "tollgate", version, about = "An LLM gateway that meters every call into an exact, attributed record")]
struct Cli {
    /// Log lines as `text` (default) or `json` (one object per line, fields at the top level).
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Logs go to stderr; the level comes from `RUST_LOG` (default `info`).
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter);
    tollgate_gateway::reqlog::set_json(matches!(format, LogFormat::Json));
    match format {
        LogFormat::Text => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
        LogFormat::Json => builder.with_ansi(false).event_format(tollgate_gateway::reqlog::JsonLines).init(),
    }
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
        /// table, csv or json.
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Print one month's chargeback (the bill per department, team, project, user, key or model).
    Chargeback {
        #[arg(long, default_value = "tollgate.toml")]
        config: PathBuf,
        /// YYYY-MM (a UTC calendar month).
        #[arg(long)]
        month: String,
        /// Any of tenant, department, team, project, user, key, model, comma-separated.
        #[arg(long, default_value = "department")]
        by: String,
        /// table, csv or json.
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Dead-lettered ClickHouse batches (`<data_dir>/deadletter/`).
    Deadletter {
        #[command(subcommand)]
        action: DeadletterCmd,
    },
    /// Compact the Parquet call log's closed days now (what `storage.compact_interval_s` does in the
    /// background): small files become a few large sorted ones with a daily summary beside them.
    Compact {
        #[arg(long, default_value = "tollgate.toml")]
        config: PathBuf,
        /// Compact days before this date (YYYY-MM-DD, exclusive); default: `storage.compact_after_days`
        /// days before today.
        #[arg(long)]
        before: Option<String>,
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

#[derive(Subcommand)]
enum DeadletterCmd {
    /// Insert every dead-lettered batch into ClickHouse under its original batch id (each event lands
    /// once, also when run twice); landed files move to `deadletter/replayed/`.
    Replay {
        #[arg(long, default_value = "tollgate.toml")]
        config: PathBuf,
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
    /// `/metrics`: who may read it, and the labels of the cost counter.
    #[serde(default)]
    metrics: MetricsConfig,
    /// Prompt-injection guards (see the README's "Guards and the response cache").
    #[serde(default)]
    guards: Vec<tollgate_guards::config::GuardConfig>,
    /// Secret and PII redaction of requests and responses.
    #[serde(default)]
    redaction: tollgate_guards::config::RedactionConfig,
    /// The exact-match response cache.
    #[serde(default)]
    cache: Option<tollgate_guards::config::CacheConfig>,
    /// Context-window limits.
    #[serde(default)]
    context: tollgate_guards::config::ContextConfig,
}

/// The guards' sections of the config.
fn guards_config(cfg: &Config) -> tollgate_gateway::guards::GuardsConfig {
    tollgate_gateway::guards::GuardsConfig {
        guards: cfg.guards.clone(),
        redaction: cfg.redaction.clone(),
        cache: cfg.cache.clone(),
        context: cfg.context.clone(),
    }
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
    /// Threads that serve client connections, each holding its connections for their life (0: one per
    /// core; at most [`MAX_IO_THREADS`]).
    #[serde(default)]
    io_threads: usize,
}

/// Each connection thread is a runtime with a 2 MiB stack and upstream connections of its own; more
/// threads than this are a typo, not a plan.
const MAX_IO_THREADS: usize = 256;

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig { listen: default_listen(), shutdown_grace_ms: default_grace_ms(), io_threads: 0 }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StorageConfig {
    /// Where Parquet call logs (`calls/date=…/`) and the spill file live.
    #[serde(default = "default_data_dir")]
    data_dir: PathBuf,
    /// How often the Parquet sink's closed days are compacted (small files merged into a few large
    /// sorted ones, with a daily summary beside them); 0 turns background compaction off
    /// (`tollgate compact` still works).
    #[serde(default = "default_compact_interval_s")]
    compact_interval_s: u64,
    /// A day is compacted once it ended at least this many days ago (UTC); late events for a compacted
    /// day are fine (the day is read raw until it is compacted again).
    #[serde(default = "default_compact_after_days")]
    compact_after_days: u32,
    /// Rows per compacted file.
    #[serde(default = "default_compact_rows_per_file")]
    compact_rows_per_file: usize,
    /// An open day (not yet compacted) whose sink files (one per flush) reach this many has them merged
    /// into one file, checked every 30 s, so queries of today open a bounded number of files;
    /// 0 turns merging off. Needs `compact_interval_s` > 0 (the same background task).
    #[serde(default = "default_merge_open_day_files")]
    merge_open_day_files: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: default_data_dir(),
            compact_interval_s: default_compact_interval_s(),
            compact_after_days: default_compact_after_days(),
            compact_rows_per_file: default_compact_rows_per_file(),
            merge_open_day_files: default_merge_open_day_files(),
        }
    }
}

impl StorageConfig {
    /// `sink_batch_rows`: `collector.batch_max_rows`, the row groups of a busy sink, which merges copy.
    fn compaction(&self, sink_batch_rows: usize) -> tollgate_collector::parquet::CompactionConfig {
        let mut c =
            tollgate_collector::parquet::CompactionConfig::new(self.data_dir.clone()).for_sink_batches(sink_batch_rows);
        c.rows_per_file = self.compact_rows_per_file.max(1);
        c.merge_parts = self.merge_open_day_files;
        c
    }
}

fn default_compact_interval_s() -> u64 {
    3_600
}
fn default_compact_after_days() -> u32 {
    1
}
fn default_merge_open_day_files() -> usize {
    16
}
fn default_compact_rows_per_file() -> usize {
    4 * 1024 * 1024
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

/// Loads and validates; the error is one line that names the offending key. A relative `data_dir` is
/// taken relative to the config file's directory, so every command finds the same store wherever it
/// is run from.
fn load(path: &Path) -> Result<(Config, ValidatedConfig), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("config {}: {e}", path.display()))?;
    let mut cfg: Config = toml::from_str(&text).map_err(|e| toml_error_line(path, &text, &e))?;
    if cfg.storage.data_dir.is_relative() {
        let base = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        cfg.storage.data_dir = base.join(&cfg.storage.data_dir);
    }
    let base = tollgate_events::prices::store::table_with_stored(&cfg.storage.data_dir)
        .map_err(|e| format!("config {}: prices: {e}", path.display()))?;
    let validated =
        tollgate_gateway::validate_with_prices(base, &cfg.upstreams, &cfg.routes, &cfg.keys, &cfg.prices, &cfg.gateway)
            .map_err(|e| format!("config {}: {e}", path.display()))?;
    cfg.collector.validate().map_err(|e| format!("config {}: {e}", path.display()))?;
    cfg.metrics.validate().map_err(|e| format!("config {}: {e}", path.display()))?;
    if cfg.server.listen.parse::<std::net::SocketAddr>().is_err() {
        return Err(format!(
            "config {}: server.listen: `{}` is not an address like 127.0.0.1:8080",
            path.display(),
            cfg.server.listen
        ));
    }
    if cfg.server.io_threads > MAX_IO_THREADS {
        return Err(format!(
            "config {}: server.io_threads: {} is more than {MAX_IO_THREADS} (0 means one per core)",
            path.display(),
            cfg.server.io_threads
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
    guards_config(&cfg).validate().map_err(|e| format!("config {}: {e}", path.display()))?;
    if cfg.query.sql_max_rows == 0 || cfg.query.sql_timeout_ms == 0 {
        return Err(format!(
            "config {}: query.sql_max_rows and query.sql_timeout_ms must be greater than 0",
            path.display()
        ));
    }
    Ok((cfg, validated))
}

/// Upstreams whose `api_key_env` is missing or unset: `Err` for a hosted provider (its calls would go out
/// without a key and fail, or bill someone else's default credentials), `Ok` (a warning) for a server on
/// this machine or a private network, which often needs no key.
fn upstream_key_problems(cfg: &Config) -> Vec<Result<String, String>> {
    let mut out = Vec::new();
    for (i, u) in cfg.upstreams.iter().enumerate() {
        let problem = match &u.api_key_env {
            Some(var) if std::env::var_os(var).is_some_and(|v| !v.is_empty()) => continue,
            Some(var) => format!("environment variable `{var}` is not set"),
            None => "not set, so calls go out without an API key".to_string(),
        };
        let msg = format!("upstreams[{i}].api_key_env: {problem} (upstream `{}` at {})", u.name, u.base_url);
        out.push(if is_local_url(&u.base_url) { Ok(msg) } else { Err(msg) });
    }
    out
}

/// Whether a base URL points at this machine or a private network (loopback, RFC 1918, link-local,
/// unique-local, `localhost`, `*.local`/`*.internal`, or a single-label host name as in a compose file).
fn is_local_url(url: &str) -> bool {
    let Some(host) = url.parse::<axum::http::Uri>().ok().and_then(|u| u.host().map(str::to_string)) else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
    match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => ip.is_loopback() || ip.is_private() || ip.is_link_local(),
        Ok(std::net::IpAddr::V6(ip)) => {
            ip.is_loopback() || (ip.segments()[0] & 0xfe00) == 0xfc00 || (ip.segments()[0] & 0xffc0) == 0xfe80
        }
        Err(_) => {
            host == "localhost"
                || host.ends_with(".localhost")
                || host.ends_with(".local")
                || host.ends_with(".internal")
                || !host.contains('.')
        }
    }
}

/// A gateway that ships its events to a collector (`[shipping]`) has no call log of its own: its budgets
/// must read the fleet store, or they would count only the last few seconds of its own calls.
fn fleet_check(path: &Path, cfg: &Config) -> Result<(), String> {
    if cfg.shipping.is_some() && !cfg.budgets.is_empty() && cfg.query.engine != Engine::Clickhouse {
        return Err(format!(
            "config {}: query.engine: a gateway that ships its events ([shipping]) must read budget spend from the fleet store; set engine = \"clickhouse\" with a [clickhouse] section",
            path.display()
        ));
    }
    Ok(())
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
    fn spend(&self, from_us: i64, to_us: i64, qs: Vec<SpendQuery>) -> SpendFuture<'_> {
        Box::pin(async move {
            let mut reqs = Vec::with_capacity(qs.len());
            for q in qs {
                let filter = match q.tag {
                    Some((k, v)) => tollgate_query::SpendFilter::Tag(k, v),
                    None => tollgate_query::SpendFilter::scope(q.scope.as_str(), &q.value)
                        .ok_or_else(|| format!("no column for scope {}", q.scope.as_str()))?,
                };
                reqs.push(tollgate_query::SpendRequest { filter, keys: q.keys, pending: q.pending });
            }
            let range = TimeRange { from_us, to_us };
            let answers = self.0.spend_many(&range, &reqs).await.map_err(|e| match e {
                // The log should say what went wrong; this never reaches a client.
                tollgate_query::QueryError::Internal(detail) => format!("query failed: {detail}"),
                other => other.to_string(),
            })?;
            Ok(answers
                .into_iter()
                .map(|a| StoreSpend { others_nanousd: a.others_nanousd, present: a.present })
                .collect())
        })
    }
}

/// The spend source of a gateway that keeps no call log (it has no budgets: `tollgate check` refuses them).
struct NoStore;

impl SpendSource for NoStore {
    fn spend(&self, _from_us: i64, _to_us: i64, _qs: Vec<SpendQuery>) -> SpendFuture<'_> {
        Box::pin(async {
            Err("this gateway keeps no call log; budgets need query.engine = \"clickhouse\"".to_string())
        })
    }
}

/// Learning routes read per-target statistics from the query service (either engine).
struct QueryStats(Arc<QueryService>);

impl RoutingStatsSource for QueryStats {
    fn routing_stats(&self, window_s: u64) -> StatsFuture<'_> {
        Box::pin(async move {
            let range = tollgate_query::routing_stats::window(Some(&format!("{window_s}s")), None)
                .map_err(|e| e.to_string())?;
            let rows = self.0.routing_stats(&range).await.map_err(|e| e.to_string())?;
            Ok(rows
                .into_iter()
                .map(|r| StoreRow {
                    stat: StoreStat {
                        requests: r.requests,
                        latency_p95_ms: r.latency_ms[1],
                        ttft_p95_ms: r.ttft_ms.map(|t| t[1]),
                        mean_output_tokens: if r.ok == 0 { 0.0 } else { r.ok_output_tokens as f64 / r.ok as f64 },
                        error_rate: r.error_rate(),
                    },
                    route: r.route,
                    upstream: r.upstream,
                    model: r.model,
                })
                .collect())
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

/// glibc gives each thread that allocates an arena of its own (up to eight per core) and keeps what is
/// freed in each one; under c=32 load `tollgate serve` held about 35 MiB more anonymous memory with
/// the default than with two arenas, at the same throughput (bench/RESULTS.md, issue 17).
///
/// glibc also raises its mmap threshold (128 KiB to start with) to the size of each mmapped block that
/// is freed, up to 32 MiB: after the first Parquet batch or write-ahead-log record of a few hundred KiB,
/// such buffers come from the arenas, which they fragment and which keep what they freed. Setting the
/// trim threshold turns that off (the mmap threshold stays at 128 KiB) and lets an arena keep up to
/// 1 MiB free at its top, so the per-batch buffers of metering do not make it shrink and grow every
/// 20 ms: `serve` after c=32 held 51 MiB instead of 62-80 MiB in the same run, at the same CPU per
/// request (a 128 KiB trim threshold saved as much memory but cost 14% more CPU per request).
///
/// `MALLOC_ARENA_MAX`, `MALLOC_TRIM_THRESHOLD_` or `MALLOC_MMAP_THRESHOLD_` in the environment still decide.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_malloc() {
    let unset = |name: &str| std::env::var_os(name).is_none();
    // SAFETY: `mallopt` only sets allocator parameters; it runs before any other thread exists.
    if unset("MALLOC_ARENA_MAX") {
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
    if unset("MALLOC_TRIM_THRESHOLD_") && unset("MALLOC_MMAP_THRESHOLD_") {
        unsafe {
            libc::mallopt(libc::M_TRIM_THRESHOLD, 1024 * 1024);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_malloc() {}

/// How often the background thread hands glibc's free pages back to the system.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_EVERY: Duration = Duration::from_secs(5);

/// glibc returns memory to the system only from the top of each arena: pages freed in the middle (a
/// metering batch, a Parquet batch, a burst of connections) stay resident until reused. `malloc_trim`
/// releases every whole free page of every arena; run every [`TRIM_EVERY`] on the background thread it
/// kept `serve` after a c=32 load at about its working set (bench/RESULTS.md, eleventh round), with CPU
/// per call within the runs' noise (the trim itself was 1 of 2,195 samples of a 4-s c=32 profile; the
/// pages the load reuses are faulted in again).
/// Off when `MALLOC_TRIM_THRESHOLD_` is set (the operator tuned glibc themselves).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn spawn_malloc_trim(handle: &tokio::runtime::Handle) {
    if std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_some() {
        return;
    }
    handle.spawn(async {
        let mut tick = tokio::time::interval(TRIM_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            // SAFETY: `malloc_trim` only releases free memory of the allocator's own arenas.
            unsafe {
                libc::malloc_trim(0);
            }
        }
    });
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn spawn_malloc_trim(_handle: &tokio::runtime::Handle) {}

fn main() -> anyhow::Result<()> {
    tune_malloc();
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.cmd {
        Cmd::HashKey { key } => {
            println!("{}", tollgate_gateway::hash_key(&key));
            Ok(())
        }
        Cmd::Check { config } => {
            let (cfg, v) = load(&config).unwrap_or_else(|e| exit_config(e));
            fleet_check(&config, &cfg).unwrap_or_else(|e| exit_config(e));
            // `serve` starts without provider keys (a fresh machine); `check` says what that means.
            let problems = upstream_key_problems(&cfg);
            if let Some(e) = problems.iter().find_map(|p| p.as_ref().err()) {
                exit_config(format!("config {}: {e}", config.display()));
            }
            for w in problems.iter().flatten() {
                eprintln!("warning: config {}: {w}", config.display());
            }
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
            fleet_check(&config, &cfg).unwrap_or_else(|e| exit_config(e));
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
            // A collector only takes batches (gateways wait for its answer off their request path) and
            // writes them: all of it is batch work, which on a shared host should not preempt the request
            // path of a gateway beside it.
            batch_scheduling();
            let rt =
                tokio::runtime::Builder::new_multi_thread().enable_all().on_thread_start(batch_scheduling).build()?;
            rt.block_on(collector_main(cfg))
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
        Cmd::Deadletter { action: DeadletterCmd::Replay { config } } => {
            let (cfg, _) = load(&config).unwrap_or_else(|e| exit_config(e));
            let Some(ch) = cfg.clickhouse.clone() else {
                exit_config(format!("config {}: clickhouse: no [clickhouse] section to replay into", config.display()))
            };
            let r = runtime()?.block_on(tollgate_clickhouse::deadletter::replay(ch, &cfg.storage.data_dir))?;
            for (f, n) in &r.inserted {
                println!("inserted {n} events from {}", f.display());
            }
            for (f, n) in &r.already_present {
                println!("already stored: {n} events of {}", f.display());
            }
            for (f, why) in &r.failed {
                eprintln!("not replayed: {}: {why}", f.display());
            }
            println!(
                "{} files replayed, {} already stored, {} left",
                r.inserted.len(),
                r.already_present.len(),
                r.failed.len()
            );
            if !r.failed.is_empty() {
                std::process::exit(1);
            }
            Ok(())
        }
        Cmd::Chargeback { config, month, by, format } => {
            let (cfg, _) = load(&config).unwrap_or_else(|e| exit_config(e));
            runtime()?.block_on(chargeback(cfg, month, by, format))
        }
        Cmd::Compact { config, before } => {
            let (cfg, _) = load(&config).unwrap_or_else(|e| exit_config(e));
            compact(&cfg, before)
        }
    }
}

/// `tollgate compact`: compacts closed days now, next to a running collector or not (the sink and
/// compaction coordinate through a lock file; only what the sink committed is compacted).
fn compact(cfg: &Config, before: Option<String>) -> anyhow::Result<()> {
    use tollgate_collector::parquet as pq;
    let c = cfg.storage.compaction(cfg.collector.batch_max_rows);
    let lock = pq::CallsLock::open(&c.data_dir)?;
    let before = before.unwrap_or_else(|| pq::cutoff_date(cfg.storage.compact_after_days));
    let days = pq::compact_days(&c, &lock, pq::committed_offset(&c.data_dir), &before)?;
    for d in &days {
        println!(
            "{}: {} files -> {} ({} rows, {} summary rows)",
            d.date, d.files_before, d.files_after, d.rows, d.summary_rows
        );
    }
    println!("compacted {} days before {before}", days.len());
    Ok(())
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

/// A single-threaded runtime on a thread of its own (`tollgate-events`) for the per-event work behind the
/// request path: metering, the write-ahead log and the sinks. Its batches then do not sit on a worker of
/// the main runtime while client connections queued behind them wait.
struct Background {
    /// Spawns on the runtime; while `handle.enter()`'s guard lives, `tokio::spawn` does too.
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Background {
    fn start() -> anyhow::Result<Background> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("tollgate-events")
            .on_thread_start(batch_scheduling)
            .build()?;
        let handle = rt.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new().name("tollgate-events".into()).spawn(move || {
            batch_scheduling();
            rt.block_on(async {
                let _ = stopped.await;
            });
        })?;
        Ok(Background { handle, stop: Some(stop), thread: Some(thread) })
    }

    /// Ends the thread once the tasks that matter have been awaited.
    fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            // Joining from an async context blocks a worker only for the runtime's drop.
            let _ = t.join();
        }
    }
}

/// Marks the calling thread `SCHED_BATCH` with a long time slice: the same share of the CPU as any other
/// thread, but it yields to the request path in both directions. Its wake-ups never preempt a running
/// thread, so a metering batch waits for a request in flight; and a request-path thread that wakes while
/// it runs takes the core at once. The second half is the slice: Linux's EEVDF scheduler (6.6 and later)
/// lets a waking thread preempt the running one only when the waking one's deadline (its virtual time plus
/// its slice) comes first, and a running thread keeps the core for its slice regardless unless the waking
/// thread asked for a shorter slice (6.12 and later). With the default slice (about 1.4 ms on two cores)
/// a connection thread could wait that long behind a Parquet write or a write-ahead-log batch; with
/// [`BACKGROUND_SLICE`] on these threads the connection threads' default slice is the shorter one. The
/// share of the CPU is the weight's (nice), not the slice's, so the background work never starves.
/// Best effort: on older kernels the slice is ignored and only `SCHED_BATCH` applies.
fn batch_scheduling() {
    #[cfg(target_os = "linux")]
    {
        if sched::set_batch_with_slice(BACKGROUND_SLICE).is_err() {
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: sets the scheduling policy of the calling thread (pid 0) with a valid parameter.
            let _ = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
        }
    }
}

/// The time slice background threads ask for: long enough that every request-path thread's default
/// slice is shorter (the kernel clamps a requested slice to 0.1-100 ms).
const BACKGROUND_SLICE: Duration = Duration::from_millis(20);

#[cfg(target_os = "linux")]
mod sched {
    use std::time::Duration;

    /// `struct sched_attr` of `sched_setattr(2)`, its first version (48 bytes, `SCHED_ATTR_SIZE_VER0`).
    #[repr(C)]
    #[derive(Default)]
    struct SchedAttr {
        size: u32,
        policy: u32,
        flags: u64,
        nice: i32,
        priority: u32,
        /// For `SCHED_OTHER` and `SCHED_BATCH` since Linux 6.12: the requested time slice.
        runtime: u64,
        deadline: u64,
        period: u64,
    }

    /// Switches the calling thread to `SCHED_BATCH` with the given slice, keeping its nice value.
    pub fn set_batch_with_slice(slice: Duration) -> std::io::Result<()> {
        let mut attr = SchedAttr { size: std::mem::size_of::<SchedAttr>() as u32, ..Default::default() };
        // SAFETY: reads the calling thread's (0) attributes into a buffer of the size passed.
        let r = unsafe { libc::syscall(libc::SYS_sched_getattr, 0, &mut attr as *mut SchedAttr, attr.size, 0) };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        attr.size = std::mem::size_of::<SchedAttr>() as u32;
        attr.policy = libc::SCHED_BATCH as u32;
        attr.flags = 0;
        attr.priority = 0;
        attr.runtime = u64::try_from(slice.as_nanos()).unwrap_or(u64::MAX);
        // SAFETY: sets the calling thread's (0) attributes from a fully initialised struct of the size given.
        let r = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
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
        if cfg.storage.compact_interval_s > 0 {
            tokio::spawn(tollgate_collector::parquet::run_compaction(
                cfg.storage.compaction(cfg.collector.batch_max_rows),
                Duration::from_secs(cfg.storage.compact_interval_s),
                cfg.storage.compact_after_days,
            ));
        }
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
    let config_label = config_path.display().to_string();
    let data_dir = cfg.storage.data_dir.clone();
    std::fs::create_dir_all(&data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    migrate_at_start(&cfg).await;
    // A gateway that ships its events and reads no fleet store keeps no call log: it has nothing to
    // query, so it does not carry the query engine (DataFusion's session and its runtime) at all.
    let keeps_no_log = mode == Mode::Gateway && cfg.query.engine != Engine::Clickhouse;
    let query = if keeps_no_log { None } else { Some(Arc::new(open_query(&cfg)?)) };

    let budget_cfg = budget_set(&config_path, &cfg, &validated).map_err(anyhow::Error::msg)?;
    let budgets =
        BudgetSystem::new(budget_cfg, Arc::new(validated.prices.clone()), Some(data_dir.join("admin-audit.jsonl")));
    budgets.keep_caps_in(data_dir.join("budget-caps.json")).map_err(anyhow::Error::msg)?;
    if let Some(w) = validated.prices.staleness_warning_today() {
        warn!(read_on = tollgate_events::BUILTIN_PRICES_READ_ON, "{w}");
    }
    let guards = tollgate_gateway::guards::Guards::start(&guards_config(&cfg))
        .await
        .map_err(|e| anyhow::anyhow!("config {config_label}: {e}"))?;
    // The process's one metrics registry: every part registers its families into it.
    let mut registry = Registry::default();
    let gw_metrics = Arc::new(GatewayMetrics::new(&cfg.metrics, validated.model_routes.keys().map(String::as_str)));
    gw_metrics.register(&mut registry);
    let b = budgets.clone();
    registry.register_collector(prom::scrape_fn("budgets", move |e| b.encode_metrics(e)));
    let g = guards.clone();
    registry.register_collector(prom::scrape_fn("guards", move |e| g.metrics.encode_metrics(e)));
    let (gateway, meter_rx) = GatewayState::start_with(
        validated,
        data_dir.join("spool").join("overflow.jsonl"),
        budgets.clone(),
        gw_metrics,
        guards,
    );
    registry.register_collector(prom::scrape_fn("routes", gateway.routes_encoder()));
    // SIGHUP and POST /admin/reload re-read the config and the imported catalog: budgets and prices.
    let price_book = gateway.meter.prices().clone();
    budgets.set_reloader(Box::new(move || {
        let (c, v) = load(&config_path)?;
        let set = budget_set(&config_path, &c, &v)?;
        info!(models = v.prices.len(), "prices reloaded");
        price_book.replace(v.prices);
        Ok(set)
    }));
    match &query {
        Some(q) => {
            budgets.start(Arc::new(QuerySpend(q.clone())));
            gateway.start_routing_stats(Arc::new(QueryStats(q.clone())));
        }
        // `tollgate check` refuses budgets here; learning routes keep their own view.
        None => budgets.start(Arc::new(NoStore)),
    }
    gateway.start_engine_polls();
    spawn_sighup_reload(budgets.clone());
    let (coll_tx, coll_rx) = mpsc::channel(tollgate_collector::queue_batches(cfg.collector.queue_capacity));
    // A weak handle for the queue-depth metric: the queue closes when metering drops its sender.
    let coll_weak = coll_tx.downgrade();
    // Metering and the collector (write-ahead log, sinks, or the shipper) run on a runtime of their
    // own thread: their batches every 20 ms then never hold up a worker that client connections wait on.
    let background = Background::start()?;
    let metering = background.handle.spawn(tollgate_gateway::run_metering(meter_rx, coll_tx));
    spawn_malloc_trim(&background.handle);
    let grace = Duration::from_millis(cfg.server.shutdown_grace_ms);
    let entered = background.handle.enter();
    let collector = match (mode, cfg.shipping.clone()) {
        (Mode::Gateway, Some(ship)) => {
            let m = Arc::new(ShipMetrics::default());
            let spool = open_spool(&ship, &data_dir).map_err(|e| {
                anyhow::anyhow!("storage.data_dir: cannot open the outbox spool under {}: {e}", data_dir.display())
            })?;
            let task = tokio::spawn(run_shipper(coll_rx, spool, ship, m.clone(), grace));
            registry.register_collector(prom::scrape_fn("shipping", move |e| m.encode_metrics(e)));
            task
        }
        _ => {
            let (sinks, ch_metrics) = open_sinks(&cfg, &data_dir)?;
            let m = Arc::new(CollectorMetrics::default());
            let collector =
                Collector::start(&data_dir, sinks, &cfg.collector, m.clone()).context("opening the write-ahead log")?;
            let task = tokio::spawn(tollgate_collector::run_intake(coll_rx, collector));
            let depth = move || coll_weak.upgrade().map(|t| t.max_capacity() - t.capacity()).unwrap_or(0);
            register_collector_metrics(&mut registry, m, ch_metrics, depth);
            task
        }
    };
    drop(entered);

    let metrics_state = MetricsState {
        registry: Arc::new(registry),
        access: match cfg.metrics.access {
            MetricsAccess::Open => MetricsGuard::Open,
            MetricsAccess::Key => MetricsGuard::QueryKey(gateway.clone()),
        },
    };
    let auth_state = gateway.clone();
    // A shipping gateway's own store is empty: answering reports from it would print $0 bills.
    let reports = match query {
        Some(q) => tollgate_query::app(q),
        None => tollgate_query::no_store_app(
            "this gateway ships its events to a collector and keeps no call log; query a process whose query.engine reads the fleet store (clickhouse)",
        ),
    };
    let query_routes = reports.merge(tollgate_gateway::budget::http::budget_routes(budgets.clone())).layer(
        axum::middleware::from_fn(move |req: axum::extract::Request, next: axum::middleware::Next| {
            let gw = auth_state.clone();
            async move {
                match gw.query_allowed(req.headers()) {
                    Ok(()) => next.run(req).await,
                    Err(e) => e.into_response(),
                }
            }
        }),
    );
    let front_door = gateway.clone();
    let app = tollgate_gateway::app(gateway)
        .merge(query_routes)
        .merge(tollgate_gateway::budget::http::admin_routes(budgets))
        .merge(tollgate_ui::routes())
        .merge(axum::Router::new().route("/metrics", axum::routing::get(metrics)).with_state(metrics_state))
        .method_not_allowed_fallback(|m: axum::http::Method| async move {
            tollgate_gateway::GatewayError::MethodNotAllowed(m.to_string())
        });
    // Unknown paths reach the gateway router's fallback (billable::handlers::unknown_endpoint).

    let listener = tokio::net::TcpListener::bind(&cfg.server.listen)
        .await
        .with_context(|| format!("binding {}", cfg.server.listen))?;
    let addr = listener.local_addr()?;
    let stop_signal = shutdown_signal();
    println!("listening on {addr}");
    info!(%addr, data_dir = %data_dir.display(), "tollgate serving");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let limits = tollgate_gateway::listen::ClientLimits::from_settings(&cfg.gateway);
    let io_threads = cfg.server.io_threads;
    let server = tokio::spawn(async move {
        let mut rx = stop_rx;
        tollgate_gateway::listen::serve(listener, app, front_door, limits, io_threads, async move {
            let _ = rx.wait_for(|s| *s).await;
        })
        .await
    });
    stop_signal.await;
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
    background.stop();
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

/// Registers the SIGTERM and SIGINT handlers now, and returns the future that waits for either. Called
/// before "listening" is printed, so a supervisor that stops the process right after it started still
/// gets a graceful shutdown rather than the default action of the signal.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[derive(Clone)]
struct MetricsState {
    registry: Arc<Registry>,
    access: MetricsGuard,
}

/// Who may read `/metrics` (`metrics.access`).
#[derive(Clone)]
enum MetricsGuard {
    Open,
    /// A virtual key allowed to query.
    QueryKey(Arc<GatewayState>),
    /// `tollgate collector`: its ingest token.
    Token(Arc<str>),
}

/// The collector's and the ClickHouse sink's scrape-time metrics.
fn register_collector_metrics(
    registry: &mut Registry,
    m: Arc<CollectorMetrics>,
    ch: Option<Arc<ClickHouseSinkMetrics>>,
    depth: impl Fn() -> usize + Send + Sync + 'static,
) {
    registry.register_collector(prom::scrape_fn("collector", move |e| m.encode_metrics(e, depth())));
    if let Some(ch) = ch {
        registry.register_collector(prom::scrape_fn("clickhouse", move |e| ch.encode_metrics(e)));
    }
}

async fn metrics(State(m): State<MetricsState>, headers: axum::http::HeaderMap) -> axum::response::Response {
    let allowed = match &m.access {
        MetricsGuard::Open => Ok(()),
        MetricsGuard::QueryKey(g) => g.query_allowed(&headers).map_err(|e| e.into_response()),
        MetricsGuard::Token(t) => {
            let presented = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
            if presented.and_then(|v| v.strip_prefix("Bearer ")) == Some(&**t) {
                Ok(())
            } else {
                Err((axum::http::StatusCode::UNAUTHORIZED, "a bearer token is required for /metrics\n").into_response())
            }
        }
    };
    if let Err(resp) = allowed {
        return resp;
    }
    let accept = headers.get(axum::http::header::ACCEPT).and_then(|v| v.to_str().ok());
    let openmetrics = prom::wants_openmetrics(accept);
    let body = prom::encode(&m.registry, openmetrics);
    ([(axum::http::header::CONTENT_TYPE, prom::content_type(openmetrics))], body).into_response()
}

/// `tollgate collector`: the ingest endpoint, the write-ahead log and the sinks.
async fn collector_main(cfg: Config) -> anyhow::Result<()> {
    let data_dir = cfg.storage.data_dir.clone();
    std::fs::create_dir_all(&data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    migrate_at_start(&cfg).await;
    let (sinks, ch_metrics) = open_sinks(&cfg, &data_dir)?;
    let coll_metrics = Arc::new(CollectorMetrics::default());
    let mut registry = Registry::default();
    register_collector_metrics(&mut registry, coll_metrics.clone(), ch_metrics, || 0);
    let collector = Arc::new(
        Collector::start(&data_dir, sinks, &cfg.collector, coll_metrics.clone())
            .context("opening the write-ahead log")?,
    );
    let token: Option<Arc<str>> =
        cfg.collector.ingest_token_env.as_ref().and_then(|v| std::env::var(v).ok()).map(Arc::from);
    if token.is_none() {
        warn!("collector.ingest_token_env is not set: any caller may send events");
    }
    let metrics_state = MetricsState {
        registry: Arc::new(registry),
        access: match (cfg.metrics.access, &token) {
            (MetricsAccess::Open, _) => MetricsGuard::Open,
            (MetricsAccess::Key, Some(t)) => MetricsGuard::Token(t.clone()),
            (MetricsAccess::Key, None) => exit_config(
                "config: metrics.access: `key` on `tollgate collector` needs collector.ingest_token_env (its bearer token)"
                    .into(),
            ),
        },
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
    let stop_signal = shutdown_signal();
    println!("listening on {addr}");
    info!(%addr, data_dir = %data_dir.display(), "tollgate collector serving");
    axum::serve(listener, app).with_graceful_shutdown(stop_signal).await?;
    info!("collector: no new batches; letting the sinks write what is in the log");
    match Arc::try_unwrap(collector) {
        Ok(c) => c.close().await,
        Err(_) => warn!("collector still referenced at shutdown; the log keeps what the sinks did not write"),
    }
    info!("bye");
    Ok(())
}

/// `tollgate report`: a showback over a time range, as a table, CSV or JSON.
async fn report(
    cfg: Config,
    from: Option<String>,
    to: Option<String>,
    group_by: String,
    format: String,
) -> anyhow::Result<()> {
    let svc = open_query(&cfg)?;
    let range = TimeRange::parse(from.as_deref(), to.as_deref())?;
    let report = tollgate_query::Report::showback(&svc, range, Some(group_by.as_str()), &[]).await?;
    print_report(&report, &format, false)
}

/// `tollgate chargeback --month`: one month's bill, as a table, CSV or JSON.
async fn chargeback(cfg: Config, month: String, by: String, format: String) -> anyhow::Result<()> {
    let svc = open_query(&cfg)?;
    let report = tollgate_query::Report::chargeback(&svc, &month, Some(by.as_str())).await?;
    print_report(&report, &format, true)
}

fn print_report(report: &tollgate_query::Report, format: &str, csv_total: bool) -> anyhow::Result<()> {
    match format {
        "table" => print!("{}", report.table()),
        "csv" => print!("{}", report.csv(csv_total)),
        "json" => println!("{}", report.json()),
        other => anyhow::bail!("--format must be table, csv or json, got `{other}`"),
    }
    Ok(())
}

#[cfg(test)]
mod config_props;
