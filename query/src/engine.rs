//! DataFusion over the Parquet call log. Report queries are fixed SQL texts whose identifiers come from
//! a fixed list and whose values are bound parameters; `/v1/sql` runs analysts' SQL read-only, with a
//! row cap and a timeout.

use crate::clickhouse::ChBackend;
use crate::error::QueryError;
use crate::params::TimeRange;
use crate::rollup::PercentileMethod;
use crate::routing_stats::{self, RoutingStatsRow};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, UInt32Type, UInt64Type};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::context::{SQLOptions, SessionContext};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::object_store::local::LocalFileSystem;
use datafusion::object_store::path::Path as ObjectPath;
use datafusion::prelude::SessionConfig;
use datafusion::scalar::ScalarValue;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// `[query]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryConfig {
    /// Most rows `/v1/sql` returns; more are cut and the answer says `truncated`.
    #[serde(default = "default_sql_max_rows")]
    pub sql_max_rows: usize,
    /// Longest a `/v1/sql` query may run before it is cancelled.
    #[serde(default = "default_sql_timeout_ms")]
    pub sql_timeout_ms: u64,
    /// Memory all running queries may use together; a query that needs more fails with a clear error.
    #[serde(default = "default_memory_limit_mb")]
    pub memory_limit_mb: usize,
    /// Threads that run queries. Queries never run on the gateway's threads, so a heavy query cannot
    /// slow down LLM traffic beyond taking these cores.
    #[serde(default = "default_query_threads")]
    pub threads: usize,
    /// Which store answers: `datafusion` (the Parquet files under the data dir) or `clickhouse` (the
    /// `[clickhouse]` server).
    #[serde(default)]
    pub engine: Engine,
    /// Answer showback, chargeback and budget spend from the daily rollup where the question allows it
    /// (ClickHouse's `calls_daily`, or the summaries Parquet compaction writes), the raw call log
    /// otherwise. The money is the same to the nano-dollar either way; off reads the raw log always.
    #[serde(default = "default_true")]
    pub rollups: bool,
    /// Latency percentiles are exact (nearest rank over every value) for ranges of up to this many
    /// successful calls per report, and read from a latency histogram (within 0.4%) above it, so that
    /// no report runs out of memory; the answer says which.
    #[serde(default = "default_exact_percentiles_max_calls")]
    pub exact_percentiles_max_calls: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Engine {
    #[default]
    Datafusion,
    Clickhouse,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            sql_max_rows: default_sql_max_rows(),
            sql_timeout_ms: default_sql_timeout_ms(),
            memory_limit_mb: default_memory_limit_mb(),
            threads: default_query_threads(),
            engine: Engine::default(),
            rollups: true,
            exact_percentiles_max_calls: default_exact_percentiles_max_calls(),
        }
    }
}

fn default_sql_max_rows() -> usize {
    10_000
}
fn default_sql_timeout_ms() -> u64 {
    10_000
}
fn default_memory_limit_mb() -> usize {
    512
}
fn default_query_threads() -> usize {
    1
}
fn default_true() -> bool {
    true
}
fn default_exact_percentiles_max_calls() -> u64 {
    1_000_000
}

/// A runtime that is shut down in the background when dropped (dropping a runtime inside another
/// runtime's task would panic).
struct QueryRuntime(Option<tokio::runtime::Runtime>);

impl Drop for QueryRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

pub struct QueryService {
    cfg: QueryConfig,
    backend: Backend,
}

enum Backend {
    DataFusion { session: LazySession, rt: QueryRuntime },
    ClickHouse(Box<ChBackend>),
}

/// DataFusion's session over `<data_dir>/calls`, made at the first query: a gateway that is never
/// queried (no budgets, no learning routes, no analyst) does not page in the engine's code and
/// function registry (about 20 MiB of resident memory).
struct LazySession {
    /// `<data_dir>/calls`, canonical.
    calls: PathBuf,
    memory_limit_mb: usize,
    ctx: OnceLock<SessionContext>,
    /// When the caches were last pruned of files that are gone (milliseconds since `made_at`).
    pruned_ms: AtomicU64,
    made_at: Instant,
}

/// How often the footer and statistics caches drop the entries of files that no longer exist.
const PRUNE_EVERY_MS: u64 = 30_000;

impl LazySession {
    fn new(calls: PathBuf, memory_limit_mb: usize) -> LazySession {
        LazySession {
            calls,
            memory_limit_mb,
            ctx: OnceLock::new(),
            pruned_ms: AtomicU64::new(0),
            made_at: Instant::now(),
        }
    }

    fn get(&self) -> Result<SessionContext, QueryError> {
        if let Some(ctx) = self.ctx.get() {
            let now = self.made_at.elapsed().as_millis() as u64;
            let last = self.pruned_ms.load(Ordering::Relaxed);
            let due = now.saturating_sub(last) >= PRUNE_EVERY_MS;
            if due && self.pruned_ms.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
                prune_caches(ctx);
            }
            return Ok(ctx.clone());
        }
        let made = self.make()?;
        // Two first queries at once may both make one; the first stored is kept.
        Ok(self.ctx.get_or_init(|| made).clone())
    }

    fn make(&self) -> Result<SessionContext, QueryError> {
        let url = ListingTableUrl::parse(format!("{}/", self.calls.display()))?;
        let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
            .with_file_extension(".parquet")
            .with_table_partition_cols(vec![("date".to_string(), DataType::Utf8)]);
        let config = ListingTableConfig::new(url)
            .with_listing_options(options)
            .with_schema(tollgate_events::call_event_schema());
        let table = ListingTable::try_new(config)?;
        let session = SessionConfig::new().with_target_partitions(2).with_information_schema(false);
        // DataFusion caches directory listings forever by default: new Parquet files would never be seen.
        // Per-file metadata and statistics caches stay on (files are immutable once renamed into place).
        // Parquet footers and file statistics are cached up to 16 + 4 MiB: DataFusion's defaults (50 + 20
        // MiB) let the caches grow by up to 70 MiB as today's files pile up (one per flush until they are
        // compacted), which is more than the whole gateway needs.
        let cache = CacheManagerConfig::default()
            .with_list_files_cache_limit(0)
            .with_metadata_cache_limit(16 << 20)
            .with_file_statistics_cache_limit(4 << 20);
        let limit = self.memory_limit_mb.max(1);
        let runtime = RuntimeEnvBuilder::new()
            .with_cache_manager(cache)
            .with_memory_limit(limit * 1024 * 1024, 1.0)
            .build_arc()?;
        let ctx = SessionContext::new_with_config_rt(session, runtime);
        ctx.register_table("calls", Arc::new(table))?;
        ctx.register_table("calls_daily", rollup_table(&self.calls)?)?;
        crate::bounded::install(&ctx, (limit as u64) * 1024 * 1024);
        Ok(ctx)
    }
}

/// Drops the cached footers and statistics of files that no longer exist. Compaction and the merging of
/// an open day's sink files replace files all day long (a new name each time); without this, entries of
/// deleted files would sit in the caches until their size limits pushed them out, so the caches would
/// always grow to their limits (16 + 4 MiB) however few files there are. A few `stat` calls per cached
/// file, every [`PRUNE_EVERY_MS`].
fn prune_caches(ctx: &SessionContext) {
    let caches = &ctx.runtime_env().cache_manager;
    let fs = LocalFileSystem::new();
    let meta = caches.get_file_metadata_cache();
    for path in meta.list_entries().into_keys() {
        if !local_file_exists(&fs, &path) {
            meta.remove(&path);
        }
    }
    if let Some(stats) = caches.get_file_statistic_cache() {
        for key in stats.list_entries().into_keys() {
            if !local_file_exists(&fs, &key.path) {
                stats.remove(&key);
            }
        }
    }
}

/// Whether a cached object store path of the local file system still names a file (a path that
/// cannot be mapped counts as present: its entry stays, as before pruning).
fn local_file_exists(fs: &LocalFileSystem, path: &ObjectPath) -> bool {
    let Ok(p) = fs.path_to_filesystem(path) else { return true };
    !matches!(std::fs::symlink_metadata(p), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
}

/// Sums over a group of calls. Money in exact nano-USD.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Totals {
    /// Billable requests, each counted once: by its last attempt (the events whose `finish_reason` is
    /// not `retried`); refused requests are in `rejected`.
    pub calls: u64,
    /// Requests the gateway refused before any provider billed them.
    pub rejected: u64,
    /// Upstream attempts (every event but the refused ones); equals `calls` when nothing was retried.
    pub attempts: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub cache_write_tokens: u64,
    pub reasoning_tokens: u64,
    pub cost_nanousd: u64,
    /// Calls answered from the response cache, and what they would have cost.
    pub cache_hits: u64,
    pub saved_nanousd: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShowbackRow {
    /// Group-by values in the order asked.
    pub group: Vec<(String, String)>,
    pub totals: Totals,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatencyRow {
    pub group: Vec<(String, String)>,
    pub calls: u64,
    /// Nearest-rank percentiles (the value at 0-based rank ⌊p·n⌋ of the sorted values), milliseconds.
    pub latency_ms: [u32; 3],
    /// Same over calls that produced content (ttft > 0); `None` when none did.
    pub ttft_ms: Option<[u32; 3]>,
    /// Exact, or read from the latency histogram (large ranges).
    pub percentiles: PercentileMethod,
}

/// Whose calls a budget's spend counts: a column from a fixed list, or a tag `name = value`.
#[derive(Debug, Clone, PartialEq)]
pub enum SpendFilter {
    Column(&'static str, String),
    Tag(String, String),
}

impl SpendFilter {
    /// A budget scope (`key`, `user`, `project`, `team`, `department`, `tenant`) and its value.
    pub fn scope(scope: &str, value: &str) -> Option<SpendFilter> {
        let col = match scope {
            "key" => "api_key_id",
            "user" => "user",
            "project" => "project",
            "team" => "team",
            "department" => "department",
            "tenant" => "tenant",
            _ => return None,
        };
        Some(SpendFilter::Column(col, value.to_string()))
    }
}

/// What a budget's spend counts, asked by one gateway.
#[derive(Debug, Clone, PartialEq)]
pub struct SpendRequest {
    pub filter: SpendFilter,
    /// Calls made with these keys count too, whatever their attribution says: a budget binds the keys
    /// whose own attribution it matches, and a header cannot move their calls out of it.
    pub keys: Vec<String>,
    /// Event ids of calls the asking gateway counts itself until the store confirms them: they are left
    /// out of the sum, and those the store holds are named in the answer.
    pub pending: Vec<String>,
}

impl SpendRequest {
    /// The spend of `filter`'s calls, with no extra keys and nothing pending.
    pub fn of(filter: SpendFilter) -> SpendRequest {
        SpendRequest { filter, keys: Vec::new(), pending: Vec::new() }
    }
}

/// A budget's spend as the store sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpendAnswer {
    /// Cost of the selected calls, except the pending ones.
    pub others_nanousd: u64,
    /// The pending event ids the store holds.
    pub present: Vec<String>,
}

/// An analyst's query result: columns (name, engine type) and rows as JSON objects.
pub struct SqlResult {
    pub columns: Vec<(String, String)>,
    pub rows: Vec<serde_json::Value>,
    pub truncated: bool,
}

pub(crate) const PERCENTILES: [f64; 3] = [0.5, 0.95, 0.99];

/// Stack of each query thread (the default is 2 MiB).
const QUERY_THREAD_STACK: usize = 16 * 1024 * 1024;

impl QueryService {
    /// Registers `calls` over `<data_dir>/calls` (created if missing).
    pub fn open(data_dir: PathBuf, cfg: QueryConfig) -> Result<QueryService, QueryError> {
        let dir = data_dir.join("calls");
        std::fs::create_dir_all(&dir).map_err(|e| QueryError::Internal(format!("{}: {e}", dir.display())))?;
        let abs = std::fs::canonicalize(&dir).map_err(|e| QueryError::Internal(format!("{}: {e}", dir.display())))?;
        // Checked now, so a bad data dir fails the start rather than the first query.
        ListingTableUrl::parse(format!("{}/", abs.display()))?;
        let session = LazySession::new(abs, cfg.memory_limit_mb);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cfg.threads.max(1))
            .thread_name("tollgate-query")
            // Planning and optimising recurse over the expression tree; with DataFusion's
            // `recursive_protection` the stack grows on the heap when it runs low, and this leaves room
            // for what is not annotated (e.g. dropping a deep tree).
            .thread_stack_size(QUERY_THREAD_STACK)
            .enable_all()
            .build()
            .map_err(|e| QueryError::Internal(format!("query runtime: {e}")))?;
        Ok(QueryService { cfg, backend: Backend::DataFusion { session, rt: QueryRuntime(Some(rt)) } })
    }

    /// Answers from ClickHouse instead (same reports, same shapes).
    pub fn open_clickhouse(ch: tollgate_clickhouse::ClickHouseConfig, cfg: QueryConfig) -> QueryService {
        QueryService { backend: Backend::ClickHouse(Box::new(ChBackend::new(ch))), cfg }
    }

    pub fn engine(&self) -> Engine {
        match self.backend {
            Backend::DataFusion { .. } => Engine::Datafusion,
            Backend::ClickHouse(_) => Engine::Clickhouse,
        }
    }

    pub fn config(&self) -> &QueryConfig {
        &self.cfg
    }

    /// Runs `work` on the query runtime; gives up (and aborts it) after `limit`. The deadline is kept on
    /// the caller's runtime, so it fires even while a query thread is busy inside a long computation.
    async fn on_query_runtime<T, F>(&self, limit: Duration, work: F) -> Result<T, QueryError>
    where
        T: Send + 'static,
        F: std::future::Future<Output = Result<T, QueryError>> + Send + 'static,
    {
        let Backend::DataFusion { rt, .. } = &self.backend else {
            return Err(QueryError::Internal("not a DataFusion service".into()));
        };
        let Some(rt) = rt.0.as_ref() else { return Err(QueryError::Internal("query runtime stopped".into())) };
        let mut handle = rt.spawn(work);
        match tokio::time::timeout(limit, &mut handle).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(QueryError::Internal(format!("query task: {e}"))),
            Err(_) => {
                handle.abort();
                Err(QueryError::Timeout(limit.as_millis() as u64))
            }
        }
    }

    pub(crate) fn ch(&self) -> Option<&ChBackend> {
        match &self.backend {
            Backend::ClickHouse(ch) => Some(ch.as_ref()),
            Backend::DataFusion { .. } => None,
        }
    }

    fn ctx(&self) -> Result<SessionContext, QueryError> {
        match &self.backend {
            Backend::DataFusion { session, .. } => session.get(),
            Backend::ClickHouse(_) => Err(QueryError::Internal("not a DataFusion service".into())),
        }
    }

    pub(crate) async fn run(&self, sql: &str, params: Vec<ScalarValue>) -> Result<Vec<RecordBatch>, QueryError> {
        let ctx = self.ctx()?;
        let sql = sql.to_string();
        // Report queries get a generous fixed limit: they are ours and scan only the asked range.
        self.on_query_runtime(Duration::from_secs(300), async move {
            let mut tries = 0;
            loop {
                let df = ctx.sql(&sql).await?.with_param_values(params.clone())?;
                match df.collect().await.map_err(QueryError::from) {
                    // Compaction or a merge replaced a listed file: planned again, over the new files.
                    Err(e) if tries < RELIST_TRIES && file_vanished(&e.to_string()) => tries += 1,
                    r => return r,
                }
            }
        })
        .await
    }

    pub(crate) fn range_params(r: &TimeRange) -> Vec<ScalarValue> {
        vec![
            ScalarValue::TimestampMicrosecond(Some(r.from_us), Some("UTC".into())),
            ScalarValue::TimestampMicrosecond(Some(r.to_us), Some("UTC".into())),
            ScalarValue::Utf8(Some(r.from_date())),
            ScalarValue::Utf8(Some(r.to_date())),
        ]
    }

    /// Calls, tokens and cost per group, most expensive first.
    pub async fn showback(&self, range: &TimeRange, group: &[(&str, &str)]) -> Result<Vec<ShowbackRow>, QueryError> {
        if let Some(rows) = self.showback_from_rollup(range, group).await? {
            return Ok(rows);
        }
        self.showback_raw(range, group).await
    }

    /// Showback from the raw call log only.
    pub async fn showback_raw(
        &self,
        range: &TimeRange,
        group: &[(&str, &str)],
    ) -> Result<Vec<ShowbackRow>, QueryError> {
        if let Backend::ClickHouse(ch) = &self.backend {
            return ch.showback(range, group).await;
        }
        let (select, by) = group_sql(group);
        let sql = format!(
            "SELECT {select} sum(CASE WHEN finish_reason = 'retried' OR outcome IN ({refused}) THEN 0 ELSE 1 END) AS calls, \
             sum(CASE WHEN outcome IN ({refused}) THEN 1 ELSE 0 END) AS rejected, \
             sum(CASE WHEN outcome IN ({refused}) THEN 0 ELSE 1 END) AS attempts, \
             sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens, \
             sum(cached_input_tokens) AS cached_input_tokens, sum(cache_write_tokens) AS cache_write_tokens, \
             sum(reasoning_tokens) AS reasoning_tokens, sum(cost_nanousd) AS cost_nanousd, \
             sum(CASE WHEN cache_hit THEN 1 ELSE 0 END) AS cache_hits, sum(saved_nanousd) AS saved_nanousd \
             FROM calls WHERE ts_start >= $1 AND ts_start < $2 AND date >= $3 AND date <= $4 {by} \
             ORDER BY cost_nanousd DESC{order}",
            order = order_sql(group),
            refused = crate::report::refused_outcomes_sql(),
        );
        let batches = self.run(&sql, Self::range_params(range)).await?;
        let mut rows = Vec::new();
        for b in &batches {
            for i in 0..b.num_rows() {
                let totals = Totals {
                    calls: u64_at(b, "calls", i)?,
                    rejected: u64_at(b, "rejected", i)?,
                    attempts: u64_at(b, "attempts", i)?,
                    input_tokens: u64_at(b, "input_tokens", i)?,
                    output_tokens: u64_at(b, "output_tokens", i)?,
                    cached_input_tokens: u64_at(b, "cached_input_tokens", i)?,
                    cache_write_tokens: u64_at(b, "cache_write_tokens", i)?,
                    reasoning_tokens: u64_at(b, "reasoning_tokens", i)?,
                    cost_nanousd: u64_at(b, "cost_nanousd", i)?,
                    cache_hits: u64_at(b, "cache_hits", i)?,
                    saved_nanousd: u64_at(b, "saved_nanousd", i)?,
                };
                rows.push(ShowbackRow { group: group_values(b, group, i)?, totals });
            }
        }
        Ok(rows)
    }

    /// Latency and time-to-first-token percentiles of successful calls per group.
    pub async fn latency(&self, range: &TimeRange, group: &[(&str, &str)]) -> Result<Vec<LatencyRow>, QueryError> {
        if let Some(rows) = self.latency_scaled(range, group).await? {
            return Ok(rows);
        }
        if let Backend::ClickHouse(ch) = &self.backend {
            return ch.latency(range, group).await;
        }
        let (select, by) = group_sql(group);
        let sql = format!(
            "SELECT {select} count(*) AS calls, \
             array_agg(latency_ms ORDER BY latency_ms) AS lat, \
             array_agg(ttft_ms ORDER BY ttft_ms) FILTER (WHERE ttft_ms > 0) AS ttft \
             FROM calls WHERE ts_start >= $1 AND ts_start < $2 AND date >= $3 AND date <= $4 AND outcome = 'ok' {by} \
             ORDER BY calls DESC{order}",
            order = order_sql(group),
        );
        let batches = self.run(&sql, Self::range_params(range)).await?;
        let mut rows = Vec::new();
        for b in &batches {
            for i in 0..b.num_rows() {
                let lat = sorted_list(b, "lat", i)?;
                let ttft = sorted_list(b, "ttft", i)?;
                rows.push(LatencyRow {
                    group: group_values(b, group, i)?,
                    calls: u64_at(b, "calls", i)?,
                    latency_ms: nearest_rank(&lat).unwrap_or([0; 3]),
                    ttft_ms: nearest_rank(&ttft),
                    percentiles: PercentileMethod::Exact,
                });
            }
        }
        Ok(rows)
    }

    /// Per-target attempt statistics over `range` (see [`crate::routing_stats`]).
    pub async fn routing_stats(&self, range: &TimeRange) -> Result<Vec<RoutingStatsRow>, QueryError> {
        if let Backend::ClickHouse(ch) = &self.backend {
            return ch.routing_stats(range).await;
        }
        let batches = self.run(routing_stats::DATAFUSION_SQL, Self::range_params(range)).await?;
        let mut rows = Vec::new();
        for b in &batches {
            for i in 0..b.num_rows() {
                let text = |name: &str| -> Result<String, QueryError> {
                    arrow::util::display::array_value_to_string(column(b, name)?, i)
                        .map_err(|e| QueryError::Internal(e.to_string()))
                };
                let ttft = sorted_list(b, "ttft", i)?;
                rows.push(RoutingStatsRow {
                    route: text("route")?,
                    upstream: text("upstream")?,
                    model: text("model")?,
                    requests: u64_at(b, "requests", i)?,
                    ok: u64_at(b, "ok", i)?,
                    upstream_errors: u64_at(b, "upstream_errors", i)?,
                    timeouts: u64_at(b, "timeouts", i)?,
                    client_disconnects: u64_at(b, "client_disconnects", i)?,
                    latency_ms: routing_stats::p50_p95(nearest_rank(&sorted_list(b, "lat", i)?).unwrap_or([0; 3])),
                    ttft_ms: nearest_rank(&ttft).map(routing_stats::p50_p95),
                    input_tokens: u64_at(b, "input_tokens", i)?,
                    output_tokens: u64_at(b, "output_tokens", i)?,
                    cost_nanousd: u64_at(b, "cost_nanousd", i)?,
                    ok_output_tokens: u64_at(b, "ok_output_tokens", i)?,
                    ok_generation_ms: u64_at(b, "ok_generation_ms", i)?,
                });
            }
        }
        Ok(rows)
    }

    /// Runs an analyst's query read-only: one SELECT/WITH/EXPLAIN statement, no DDL, DML or SET, at most
    /// `sql_max_rows` rows, cancelled after `sql_timeout_ms`.
    pub async fn sql(&self, sql: &str) -> Result<SqlResult, QueryError> {
        let first = first_keyword(sql);
        if !matches!(first.as_str(), "SELECT" | "WITH" | "EXPLAIN" | "VALUES") {
            return Err(QueryError::NotReadOnly(format!("statement starts with `{first}`")));
        }
        crate::sqlguard::check_shape(sql)?;
        if let Backend::ClickHouse(ch) = &self.backend {
            return ch.sql(sql, &self.cfg).await;
        }
        let options = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
        let timeout = Duration::from_millis(self.cfg.sql_timeout_ms);
        let max = self.cfg.sql_max_rows;
        let ctx = self.ctx()?;
        let sql = sql.to_string();
        // EXPLAIN must stay the root of its plan, and its output is the plan: no row cap on it.
        let explain = first == "EXPLAIN";
        let work = async move {
            let mut tries = 0;
            loop {
                let df = ctx.sql_with_options(&sql, options).await.map_err(classify)?;
                let df = if explain { df } else { df.limit(0, Some(max + 1)).map_err(classify)? };
                match df.collect().await {
                    // Compaction or a merge replaced a listed file: planned again, over the new files.
                    Err(e) if tries < RELIST_TRIES && file_vanished(&e.to_string()) => tries += 1,
                    r => return r.map_err(classify),
                }
            }
        };
        let mut batches = self.on_query_runtime(timeout, work).await?;
        let total: usize = batches.iter().map(|b| b.num_rows()).sum();
        let truncated = total > max;
        if truncated {
            let mut left = max;
            for b in batches.iter_mut() {
                let take = b.num_rows().min(left);
                *b = b.slice(0, take);
                left -= take;
            }
        }
        let (columns, rows) = batches_to_json(&batches)?;
        Ok(SqlResult { columns, rows, truncated })
    }
}

/// Column (name, type) pairs and JSON row objects.
type JsonRows = (Vec<(String, String)>, Vec<serde_json::Value>);

fn batches_to_json(batches: &[RecordBatch]) -> Result<JsonRows, QueryError> {
    let mut columns = Vec::new();
    if let Some(b) = batches.first() {
        for f in b.schema().fields() {
            columns.push((f.name().clone(), f.data_type().to_string()));
        }
    }
    let mut buf = Vec::new();
    {
        let mut w = arrow::json::ArrayWriter::new(&mut buf);
        let refs: Vec<&RecordBatch> = batches.iter().collect();
        w.write_batches(&refs).map_err(|e| QueryError::Internal(e.to_string()))?;
        w.finish().map_err(|e| QueryError::Internal(e.to_string()))?;
    }
    let rows = if buf.is_empty() {
        Vec::new()
    } else {
        serde_json::from_slice::<Vec<serde_json::Value>>(&buf).map_err(|e| QueryError::Internal(e.to_string()))?
    };
    Ok((columns, rows))
}

/// How many times a query whose listed file vanished is planned again (each time over a fresh listing):
/// compaction or a merge exchanged the day's files between DataFusion's listing and its reading.
const RELIST_TRIES: u32 = 2;

/// Whether an error says a file the query listed was gone when it was opened.
fn file_vanished(message: &str) -> bool {
    message.contains("No such file") || message.contains("not found") || message.contains("NotFound")
}

/// Analyst errors (bad SQL, unknown column, refused statement) are the analyst's to fix: say what.
fn classify(e: datafusion::error::DataFusionError) -> QueryError {
    use datafusion::error::DataFusionError as E;
    match e.find_root() {
        E::ResourcesExhausted(msg) => QueryError::MemoryLimit(msg.clone()),
        E::SQL(..) | E::Plan(..) | E::SchemaError(..) | E::NotImplemented(..) => {
            QueryError::InvalidSql(e.find_root().to_string())
        }
        _ => {
            let msg = e.to_string();
            if msg.contains("not supported") || msg.contains("DDL") || msg.contains("DML") {
                QueryError::NotReadOnly(msg)
            } else {
                QueryError::InvalidSql(msg)
            }
        }
    }
}

/// The first keyword of a statement, skipping whitespace, comments and opening parentheses.
fn first_keyword(sql: &str) -> String {
    let mut s = sql;
    loop {
        let t = s.trim_start_matches(|c: char| c.is_whitespace() || c == '(');
        if let Some(rest) = t.strip_prefix("--") {
            s = rest.split_once('\n').map(|x| x.1).unwrap_or("");
        } else if let Some(rest) = t.strip_prefix("/*") {
            s = rest.split_once("*/").map(|x| x.1).unwrap_or("");
        } else {
            return t.chars().take_while(|c| c.is_ascii_alphabetic()).collect::<String>().to_ascii_uppercase();
        }
    }
}

/// The Parquet day summaries (`calls/date=…/summary.rollup`) as the table `calls_daily`.
fn rollup_table(calls_dir: &std::path::Path) -> Result<Arc<ListingTable>, QueryError> {
    let url = ListingTableUrl::parse(format!("{}/", calls_dir.display()))?;
    let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
        .with_file_extension(".rollup")
        .with_table_partition_cols(vec![("date".to_string(), DataType::Utf8)]);
    let config =
        ListingTableConfig::new(url).with_listing_options(options).with_schema(tollgate_events::rollup_schema());
    Ok(Arc::new(ListingTable::try_new(config)?))
}

pub(crate) fn group_sql(group: &[(&str, &str)]) -> (String, String) {
    if group.is_empty() {
        return (String::new(), String::new());
    }
    let cols: Vec<String> = group.iter().map(|(name, col)| format!("\"{col}\" AS \"{name}\"")).collect();
    let by: Vec<String> = group.iter().map(|(_, col)| format!("\"{col}\"")).collect();
    (format!("{}, ", cols.join(", ")), format!("GROUP BY {}", by.join(", ")))
}

fn order_sql(group: &[(&str, &str)]) -> String {
    group.iter().map(|(name, _)| format!(", \"{name}\"")).collect()
}

pub(crate) fn column<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a Arc<dyn Array>, QueryError> {
    b.column_by_name(name).ok_or_else(|| QueryError::Internal(format!("missing column {name}")))
}

pub(crate) fn u64_at(b: &RecordBatch, name: &str, i: usize) -> Result<u64, QueryError> {
    let c = column(b, name)?;
    if c.is_null(i) {
        return Ok(0);
    }
    match c.data_type() {
        DataType::UInt64 => Ok(c.as_primitive::<UInt64Type>().value(i)),
        DataType::Int64 => Ok(c.as_primitive::<arrow::datatypes::Int64Type>().value(i).max(0) as u64),
        t => Err(QueryError::Internal(format!("column {name} has type {t}"))),
    }
}

pub(crate) fn group_values(
    b: &RecordBatch,
    group: &[(&str, &str)],
    i: usize,
) -> Result<Vec<(String, String)>, QueryError> {
    group
        .iter()
        .map(|(name, _)| {
            let c = column(b, name)?;
            let v =
                arrow::util::display::array_value_to_string(c, i).map_err(|e| QueryError::Internal(e.to_string()))?;
            Ok(((*name).to_string(), v))
        })
        .collect()
}

fn sorted_list(b: &RecordBatch, name: &str, i: usize) -> Result<Vec<u32>, QueryError> {
    let c = column(b, name)?;
    if c.is_null(i) {
        return Ok(Vec::new());
    }
    let list = c.as_list::<i32>().value(i);
    let values = list.as_primitive::<UInt32Type>();
    Ok(values.iter().flatten().collect())
}

/// The value at 0-based rank ⌊p·n⌋ (clamped) of sorted values, for p50/p95/p99: the definition
/// ClickHouse's `quantileExact` uses, so both engines give the same numbers.
fn nearest_rank(sorted: &[u32]) -> Option<[u32; 3]> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    let pick = |p: f64| sorted[((p * n as f64) as usize).min(n - 1)];
    Some([pick(PERCENTILES[0]), pick(PERCENTILES[1]), pick(PERCENTILES[2])])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_matches_definition() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(nearest_rank(&v), Some([51, 96, 100]));
        assert_eq!(nearest_rank(&[7]), Some([7, 7, 7]));
        assert_eq!(nearest_rank(&[]), None);
    }

    /// A file's cached footer and statistics go once the file is gone (compaction replaced it), so the
    /// caches hold the files that exist, not every file ever read up to their limits.
    #[test]
    fn pruning_drops_cache_entries_of_deleted_files() {
        let dir = std::env::temp_dir().join(format!("tg-prune-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let day = dir.join("calls/date=2026-11-03");
        std::fs::create_dir_all(&day).unwrap();
        let ev = |i: i64| tollgate_events::CallEvent {
            ts_start_us: 1_793_664_000_000_000 + i,
            cost_nanousd: 7,
            ..Default::default()
        };
        for (name, n) in [("part-1.parquet", 3), ("part-2.parquet", 4)] {
            let batch = tollgate_events::to_record_batch(&(0..n).map(ev).collect::<Vec<_>>()).unwrap();
            let f = std::fs::File::create(day.join(name)).unwrap();
            let mut w = datafusion::parquet::arrow::ArrowWriter::try_new(f, batch.schema(), None).unwrap();
            w.write(&batch).unwrap();
            w.close().unwrap();
        }
        let svc = QueryService::open(dir.clone(), QueryConfig::default()).unwrap();
        let Backend::DataFusion { session, rt } = &svc.backend else { panic!("DataFusion") };
        let count = |session: &LazySession| -> usize {
            let rt = rt.0.as_ref().unwrap();
            let ctx = session.get().unwrap();
            rt.block_on(async {
                let b = ctx.sql("SELECT count(*) AS n FROM calls").await.unwrap().collect().await.unwrap();
                b[0].column(0).as_primitive::<arrow::datatypes::Int64Type>().value(0) as usize
            })
        };
        assert_eq!(count(session), 7);
        let ctx = session.get().unwrap();
        let meta = ctx.runtime_env().cache_manager.get_file_metadata_cache();
        assert_eq!(meta.len(), 2, "both footers cached");
        std::fs::remove_file(day.join("part-1.parquet")).unwrap();
        assert_eq!(count(session), 4);
        assert_eq!(meta.len(), 2, "the deleted file's footer is still cached");
        prune_caches(&ctx);
        assert_eq!(meta.len(), 1, "only the file that exists stays");
        let stats = ctx.runtime_env().cache_manager.get_file_statistic_cache().unwrap();
        assert!(stats.list_entries().keys().all(|k| k.path.as_ref().ends_with("part-2.parquet")));
        let fs = LocalFileSystem::new();
        assert!(local_file_exists(&fs, &ObjectPath::from_filesystem_path(day.join("part-2.parquet")).unwrap()));
        assert!(!local_file_exists(&fs, &ObjectPath::from("no/such/file")));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn first_keyword_skips_comments() {
        assert_eq!(first_keyword("  -- hi\n /* x */ (select 1)"), "SELECT");
        assert_eq!(first_keyword("insert into calls values (1)"), "INSERT");
        assert_eq!(first_keyword("with a as (select 1) select * from a"), "WITH");
    }
}
