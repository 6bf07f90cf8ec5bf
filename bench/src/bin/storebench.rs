//! Store benchmark at fleet scale: generated calls (realistic cardinalities) into ClickHouse (the
//! collector's sink, with the rollup's materialized view live) and into Parquet (the sink's small files,
//! then compaction into sorted files with daily summaries), then the reports finance, budgets and
//! routing ask for, on both engines, from the raw tables and from the rollups, plus DuckDB on the same
//! Parquet files in the same run. Writes its tables between the `store-bench` markers of
//! `bench/RESULTS.md`.
//!
//! `target/release/storebench --clickhouse-url http://127.0.0.1:8123 --events 100000000`
//! (a scratch database `bench_<pid>` is created and dropped afterwards; `python3` with the `duckdb`
//! wheel runs the DuckDB side).

use anyhow::Context;
use clap::Parser;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tollgate_clickhouse::sink::PendingRows;
use tollgate_clickhouse::{ClickHouseConfig, ClickHouseSink};
use tollgate_collector::parquet::{compact_days, CallsLock, CompactionConfig};
use tollgate_collector::{ParquetSink, ParquetSinkConfig, PendingBatch};
use tollgate_events::{CallEvent, ClientApi, Endpoint, Outcome, UsageSource};
use tollgate_query::{parse_group_by, QueryConfig, QueryService, Report, SpendFilter, SpendRequest, TimeRange};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    clickhouse_url: String,
    #[arg(long, default_value_t = 100_000_000)]
    events: u64,
    /// Events per batch (the collector's `batch_max_rows`).
    #[arg(long, default_value_t = 100_000)]
    batch: u64,
    /// Where the Parquet files go (a fresh temp dir when not given).
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
    #[arg(long, default_value = "bench/RESULTS.md")]
    results: std::path::PathBuf,
    /// Runs per query (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Python with the `duckdb` wheel.
    #[arg(long, default_value = "python3")]
    python: String,
    /// Go on from a run that stopped after its ingest: use this existing ClickHouse database and the
    /// Parquet files already in `--data-dir` (not generated again), and skip the sink-files column (its
    /// cells then say so; take them from the earlier run's log).
    #[arg(long, requires = "data_dir")]
    resume: Option<String>,
    /// Ask only these questions (1-based, in the table's order, e.g. `--questions 1,6`); the others'
    /// cells say "not asked". DuckDB runs only with question 1.
    #[arg(long, value_delimiter = ',')]
    questions: Vec<usize>,
}

/// (name, input USD per 1M tokens in micro-dollars, output, provider)
const MODELS: [(&str, u64, u64, &str); 15] = [
    ("gpt-4o-mini", 150, 600, "openai"),
    ("gpt-4o", 2_500, 10_000, "openai"),
    ("gpt-4.1", 2_000, 8_000, "openai"),
    ("gpt-4.1-mini", 400, 1_600, "openai"),
    ("gpt-4.1-nano", 100, 400, "openai"),
    ("o3", 2_000, 8_000, "openai"),
    ("o3-mini", 1_100, 4_400, "openai"),
    ("o4-mini", 1_100, 4_400, "openai"),
    ("claude-sonnet-4-5", 3_000, 15_000, "anthropic"),
    ("claude-haiku-4-5", 1_000, 5_000, "anthropic"),
    ("claude-opus-4-1", 15_000, 75_000, "anthropic"),
    ("text-embedding-3-small", 20, 0, "openai"),
    ("text-embedding-3-large", 130, 0, "openai"),
    ("llama-3.3-70b", 230, 400, "vllm"),
    ("qwen-2.5-32b", 80, 300, "vllm"),
];
const DEPARTMENTS: usize = 20;
const TEAMS_PER_DEPARTMENT: usize = 10;
const USERS_PER_TEAM: usize = 10;
/// 2026-10-25 00:00 UTC; the calls spread over 37 days, to the end of November.
const START_US: i64 = 1_792_886_400_000_000;
const SPAN_US: i64 = 37 * 86_400_000_000;
/// 2026-11-30T12:00:00Z: "now" for the budget sync and the routing stats.
const SYNC_END_US: i64 = 1_796_040_000_000_000;

/// A cheap deterministic mixer (splitmix64) so both stores get the same calls.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

struct Names {
    departments: Vec<String>,
    teams: Vec<String>,
    users: Vec<String>,
    projects: Vec<String>,
    keys: Vec<String>,
}

impl Names {
    fn new() -> Names {
        let departments: Vec<String> = (0..DEPARTMENTS).map(|d| format!("dept-{d:02}")).collect();
        let teams: Vec<String> = (0..DEPARTMENTS * TEAMS_PER_DEPARTMENT)
            .map(|t| format!("{}-team-{:02}", departments[t / TEAMS_PER_DEPARTMENT], t % TEAMS_PER_DEPARTMENT))
            .collect();
        let n_users = teams.len() * USERS_PER_TEAM;
        let users = (0..n_users).map(|u| format!("user-{u:04}")).collect();
        let projects = (0..teams.len() * 2).map(|p| format!("{}-p{}", teams[p / 2], p % 2)).collect();
        let keys = (0..n_users).map(|u| format!("key-{u:04}")).collect();
        Names { departments, teams, users, projects, keys }
    }
}

/// A UUIDv7 as the gateway makes them (its first 48 bits the call's start in ms), unique per `i`.
fn uuid_v7(ts_us: i64, r: u64, i: u64) -> String {
    let h = format!("{:012x}7{:03x}{:x}{:015x}", ts_us / 1000, r & 0xfff, 8 + (r >> 12) % 4, i & ((1 << 60) - 1));
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// The 30 budgets of the sync question (20 departments, 10 teams), each with the ids of its 100 latest
/// calls before the window's end pending, as a live gateway asks between two syncs.
fn sync_budgets(n: &Names, total: u64) -> anyhow::Result<Vec<SpendRequest>> {
    let end = i64::try_from(u128::from(total) * (SYNC_END_US - START_US) as u128 / SPAN_US as u128)?;
    let mut reqs = Vec::new();
    let scopes = (0..20)
        .map(|d| ("department", format!("dept-{d:02}")))
        .chain((0..10).map(|t| ("team", format!("dept-{:02}-team-{:02}", t * 2, t % 10))));
    for (scope, value) in scopes {
        let filter = SpendFilter::scope(scope, &value).ok_or_else(|| anyhow::anyhow!("scope"))?;
        let mut pending = Vec::new();
        let mut i = u64::try_from(end)?;
        while pending.len() < 100 && i > 0 {
            i -= 1;
            let c = call(n, i, total);
            if c.ts_start_us < SYNC_END_US && (c.department == value || c.team == value) {
                pending.push(c.event_id);
            }
        }
        reqs.push(SpendRequest { filter, keys: Vec::new(), pending });
    }
    Ok(reqs)
}

fn call(n: &Names, i: u64, total: u64) -> CallEvent {
    let r = mix(i);
    let user = (r % n.users.len() as u64) as usize;
    let team = user / USERS_PER_TEAM;
    let dept = team / TEAMS_PER_DEPARTMENT;
    // Each team leans on a few models; every model is used somewhere.
    let m = ((team as u64 * 7 + (r >> 12) % 4 + if (r >> 14) % 10 == 0 { (r >> 16) % 15 } else { 0 }) % 15) as usize;
    let (model, pin, pout, provider) = MODELS[m];
    let input = 50 + (r >> 20) % 4_000;
    let output = if pout == 0 { 0 } else { 1 + (r >> 32) % 800 };
    let cached = if (r >> 44).is_multiple_of(4) { input / 2 } else { 0 };
    let ts = START_US + (SPAN_US as u128 * u128::from(i) / u128::from(total.max(1))) as i64;
    let cost = (input * pin + output * pout) / 1_000 * 1_000 + (r >> 48) % 997;
    let outcome = match (r >> 52) % 100 {
        0 | 1 => Outcome::UpstreamError,
        2 => Outcome::RejectedBudget,
        _ => Outcome::Ok,
    };
    let base = 150 + (pout / 20) as u32;
    let tail = if (r >> 56).is_multiple_of(50) { 20_000 } else { 0 };
    let mut tags = BTreeMap::new();
    tags.insert("env".to_string(), if r.is_multiple_of(10) { "dev" } else { "prod" }.to_string());
    CallEvent {
        schema_version: tollgate_events::SCHEMA_VERSION,
        event_id: uuid_v7(ts, r, i),
        request_id: format!("req-{i}"),
        ts_start_us: ts,
        ts_end_us: ts + 400_000,
        tenant: "acme".into(),
        department: n.departments[dept].as_str().into(),
        team: n.teams[team].as_str().into(),
        project: n.projects[team * 2 + (user % 2)].as_str().into(),
        user: n.users[user].as_str().into(),
        api_key_id: n.keys[user].as_str().into(),
        tags,
        endpoint: if pout == 0 { Endpoint::Embeddings } else { Endpoint::Chat },
        client_api: if provider == "anthropic" { ClientApi::Anthropic } else { ClientApi::Openai },
        stream: r.is_multiple_of(3),
        provider: provider.into(),
        upstream: format!("{provider}-{}", (r >> 9) % 2).into(),
        requested_model: model.into(),
        served_model: model.into(),
        route: "default".into(),
        status_code: if outcome == Outcome::Ok { 200 } else { 502 },
        outcome,
        finish_reason: "stop".into(),
        input_tokens: input,
        output_tokens: output,
        cached_input_tokens: cached,
        usage_source: UsageSource::Provider,
        cost_nanousd: if outcome == Outcome::RejectedBudget { 0 } else { cost },
        price_id: format!("{model}@2026-10-01").into(),
        latency_ms: base + ((r >> 24) % 3_000) as u32 + tail,
        ttft_ms: if r.is_multiple_of(3) { 20 + ((r >> 28) % 500) as u32 } else { 0 },
        upstream_latency_ms: base + ((r >> 24) % 3_000) as u32,
        gateway_overhead_us: 40,
        request_bytes: input * 4,
        response_bytes: output * 4,
        ..Default::default()
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1000.0)
}

fn walk_size(p: &std::path::Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
        let path = e.path();
        if path.is_dir() {
            n += walk_size(&path);
        } else {
            n += e.metadata().map(|m| m.len()).unwrap_or(0);
        }
    }
    n
}

fn file_count(p: &std::path::Path, ext: &str) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
        let path = e.path();
        if path.is_dir() {
            n += file_count(&path, ext);
        } else if path.to_string_lossy().ends_with(ext) {
            n += 1;
        }
    }
    n
}

/// The questions, each answered by one call on a service; returns a checksum of the answer (money or
/// calls) so that every configuration can be checked to agree.
#[derive(Clone, Copy)]
enum Question {
    ShowbackDepartment,
    ShowbackDepartmentTeamModel,
    ChargebackCsv,
    LatencyDay,
    LatencyMonth,
    BudgetSync,
    RoutingStats,
}

const QUESTIONS: [(Question, &str); 7] = [
    (Question::ShowbackDepartment, "showback by department, November"),
    (Question::ShowbackDepartmentTeamModel, "showback by department, team, model, November"),
    (Question::ChargebackCsv, "chargeback CSV by department, team, project, November"),
    (Question::LatencyDay, "latency p50/p95/p99 by model, one day"),
    (Question::LatencyMonth, "latency p50/p95/p99 by model, November"),
    (Question::BudgetSync, "budget sync: 30 budgets with 100 pending calls each, month to date in America/New_York"),
    (Question::RoutingStats, "routing stats, last 15 minutes"),
];

async fn ask(svc: &QueryService, q: Question, budgets: &[SpendRequest]) -> anyhow::Result<u64> {
    let month = TimeRange::parse(Some("2026-11-01"), Some("2026-11-30"))?;
    let e = |e: tollgate_query::QueryError| anyhow::anyhow!("{e}");
    Ok(match q {
        Question::ShowbackDepartment => {
            let g = parse_group_by(Some("department"), &[])?;
            svc.showback(&month, &g).await.map_err(e)?.iter().map(|r| r.totals.cost_nanousd).sum()
        }
        Question::ShowbackDepartmentTeamModel => {
            let g = parse_group_by(Some("department,team,model"), &[])?;
            svc.showback(&month, &g).await.map_err(e)?.iter().map(|r| r.totals.cost_nanousd).sum()
        }
        Question::ChargebackCsv => {
            let report = Report::chargeback(svc, "2026-11", Some("department,team,project")).await.map_err(e)?;
            std::hint::black_box(report.csv(true));
            report.total.cost_nanousd
        }
        Question::LatencyDay => {
            let day = TimeRange::parse(Some("2026-11-15"), Some("2026-11-15"))?;
            let g = parse_group_by(Some("model"), &[])?;
            svc.latency(&day, &g).await.map_err(e)?.iter().map(|r| r.calls).sum()
        }
        Question::LatencyMonth => {
            let g = parse_group_by(Some("model"), &[])?;
            svc.latency(&month, &g).await.map_err(e)?.iter().map(|r| r.calls).sum()
        }
        Question::BudgetSync => {
            // Month to date in New York (UTC-5 in November): partial days at both ends. All 30 asked
            // together, as the gateway's sync asks them; the checksum counts the pending calls held too.
            let window = TimeRange::parse(Some("2026-11-01T04:00:00Z"), Some("2026-11-30T12:00:00Z"))?;
            let answers = svc.spend_many(&window, budgets).await.map_err(e)?;
            answers.iter().map(|a| a.others_nanousd + a.present.len() as u64).sum()
        }
        Question::RoutingStats => {
            let w = TimeRange::parse(Some("2026-11-30T11:45:00Z"), Some("2026-11-30T12:00:00Z"))?;
            svc.routing_stats(&w).await.map_err(e)?.iter().map(|r| r.requests).sum()
        }
    })
}

/// Median time of `runs` answers (after one warm-up) and the answer's checksum, or the error.
async fn time(
    svc: &QueryService,
    q: Question,
    runs: usize,
    budgets: &[SpendRequest],
) -> Result<(Duration, u64), String> {
    let mut times = Vec::new();
    let mut sum = 0;
    for i in 0..=runs.max(1) {
        let t = Instant::now();
        sum = ask(svc, q, budgets).await.map_err(|e| e.to_string())?;
        if i > 0 {
            times.push(t.elapsed());
        }
    }
    Ok((median(times), sum))
}

/// DuckDB runs the query DataFusion's raw showback runs (`QueryService::showback_raw`): the same
/// columns and the same sums (calls, rejected, attempts, tokens of each kind, cost, cache hits, savings).
const DUCKDB: &str = r#"
import duckdb, json, sys, time
path, runs, refused = sys.argv[1], int(sys.argv[2]), sys.argv[3]
out = {}
for threads in (1, 2):
    con = duckdb.connect()
    con.execute(f"SET threads={threads}")
    con.execute("SET enable_progress_bar = false")
    sql = f"""SELECT department,
              sum(CASE WHEN finish_reason = 'retried' OR outcome IN ({refused}) THEN 0 ELSE 1 END) AS calls,
              sum(CASE WHEN outcome IN ({refused}) THEN 1 ELSE 0 END) AS rejected,
              sum(CASE WHEN outcome IN ({refused}) THEN 0 ELSE 1 END) AS attempts,
              sum(input_tokens), sum(output_tokens), sum(cached_input_tokens), sum(cache_write_tokens),
              sum(reasoning_tokens), sum(cost_nanousd) AS cost, sum(CASE WHEN cache_hit THEN 1 ELSE 0 END),
              sum(saved_nanousd)
              FROM read_parquet('{path}/calls/*/*.parquet', hive_partitioning=true)
              WHERE ts_start >= TIMESTAMPTZ '2026-11-01 00:00:00+00' AND ts_start < TIMESTAMPTZ '2026-12-01 00:00:00+00'
                AND date >= DATE '2026-11-01' AND date <= DATE '2026-11-30'
              GROUP BY department ORDER BY cost DESC, department"""
    con.execute(sql).fetchall()
    times = []
    for _ in range(runs):
        t = time.perf_counter(); rows = con.execute(sql).fetchall(); times.append(time.perf_counter() - t)
    times.sort()
    out[f"threads{threads}_ms"] = times[len(times) // 2] * 1000
    out["total"] = int(sum(r[9] for r in rows))
print(json.dumps(out))
"#;

/// DuckDB's monthly showback by department on the same Parquet files: (median ms with 1 thread, with 2
/// threads, total nano-USD).
fn duckdb(python: &str, dir: &std::path::Path, runs: usize) -> anyhow::Result<(f64, f64, u64)> {
    let out = std::process::Command::new(python)
        .args(["-c", DUCKDB, &dir.display().to_string(), &runs.to_string(), &tollgate_query::refused_outcomes_sql()])
        .output()
        .context("running python3 for DuckDB")?;
    anyhow::ensure!(out.status.success(), "duckdb: {}", String::from_utf8_lossy(&out.stderr));
    // The answer is the last line (anything DuckDB itself prints comes before it).
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
    let v: serde_json::Value = serde_json::from_str(last).with_context(|| format!("duckdb printed: {stdout}"))?;
    let f = |k: &str| v.get(k).and_then(|x| x.as_f64()).unwrap_or(f64::NAN);
    Ok((f("threads1_ms"), f("threads2_ms"), v.get("total").and_then(|x| x.as_u64()).unwrap_or(0)))
}

async fn ch_size(cfg: &ClickHouseConfig, table: &str) -> anyhow::Result<u64> {
    let rows = tollgate_clickhouse::fetch_json(
        cfg.client()
            .query("SELECT toUInt64(sum(bytes_on_disk)) FROM system.parts WHERE active AND database = ? AND table = ?")
            .bind(cfg.database.as_str())
            .bind(table),
        Duration::from_secs(30),
    )
    .await?;
    Ok(rows.first().and_then(|r| r.first()).and_then(|v| v.as_u64()).unwrap_or(0))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tmp;
    let data_dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => {
            tmp = std::env::temp_dir().join(format!("tollgate-storebench-{}", std::process::id()));
            tmp.clone()
        }
    };
    if args.resume.is_none() {
        let _ = std::fs::remove_dir_all(&data_dir);
    }
    std::fs::create_dir_all(&data_dir)?;
    let db = args.resume.clone().unwrap_or_else(|| format!("bench_{}", std::process::id()));
    let mut chcfg = ClickHouseConfig::new(args.clickhouse_url.clone(), db.clone());
    chcfg.request_timeout_ms = 600_000;
    chcfg.insert_timeout_ms = 600_000;
    tollgate_clickhouse::migrate(&chcfg).await.context("migrating the bench database")?;
    let version = tollgate_clickhouse::fetch_json(chcfg.client().query("SELECT version()"), Duration::from_secs(10))
        .await?
        .first()
        .and_then(|r| r.first())
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default();
    let mut ch = ClickHouseSink::open(chcfg.clone(), &data_dir)?;
    let mut pq = ParquetSink::open(ParquetSinkConfig::new(data_dir.clone()))?;
    let names = Names::new();

    let started = Instant::now();
    let (mut ch_time, mut pq_time, mut gen_time) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut sum = 0u64;
    let mut i = if args.resume.is_some() { args.events } else { 0 };
    if args.resume.is_some() {
        sum = u64::MAX;
    }
    while i < args.events {
        let n = args.batch.min(args.events - i);
        let t = Instant::now();
        let chunk: Vec<CallEvent> = (i..i + n).map(|k| call(&names, k, args.events)).collect();
        gen_time += t.elapsed();
        sum += chunk.iter().map(|e| e.cost_nanousd).sum::<u64>();
        let chunk = Arc::new(chunk);
        let t = Instant::now();
        let mut p = PendingRows::default();
        ch.append(&mut p, &chunk);
        for mut b in ch.seal(&mut p)? {
            ch.write(&mut b).await.map_err(|e| anyhow::anyhow!("insert: {e}"))?;
        }
        ch_time += t.elapsed();
        let t = Instant::now();
        let mut pb = PendingBatch::default();
        for e in chunk.iter() {
            pq.append(&mut pb, e);
        }
        let sealed = pq.seal(&mut pb)?;
        pq.write(sealed).await?;
        pq_time += t.elapsed();
        i += n;
        if (i / n).is_multiple_of(20) || i == args.events {
            eprintln!("{i} events, {:.0} s", started.elapsed().as_secs_f64());
        }
    }
    let rate = |d: Duration| args.events as f64 / d.as_secs_f64();
    let pq_small_bytes = walk_size(&data_dir.join("calls"));
    let pq_small_files = file_count(&data_dir.join("calls"), ".parquet");
    let ch_bytes = ch_size(&chcfg, "calls").await?;
    let ch_rollup_bytes = ch_size(&chcfg, "calls_daily").await?;

    let mut results: Vec<(String, Vec<String>)> = QUESTIONS.iter().map(|(_, l)| (l.to_string(), Vec::new())).collect();
    let mut checks: Vec<Vec<u64>> = vec![Vec::new(); QUESTIONS.len()];
    async fn column(
        svc: &QueryService,
        runs: usize,
        results: &mut [(String, Vec<String>)],
        checks: &mut [Vec<u64>],
        label: &str,
        budgets: &[SpendRequest],
        only: &[usize],
    ) {
        for (k, (q, name)) in QUESTIONS.iter().enumerate() {
            if !only.is_empty() && !only.contains(&(k + 1)) {
                results[k].1.push("not asked".into());
                continue;
            }
            match time(svc, *q, runs, budgets).await {
                Ok((d, sum)) => {
                    results[k].1.push(ms(d));
                    checks[k].push(sum);
                }
                Err(e) => {
                    eprintln!("{label}: {name}: {e}");
                    let short: String = e.chars().take(50).collect();
                    results[k].1.push(format!("failed: {}", short.replace('|', "/")));
                }
            }
            eprintln!("{label}: {name}: {}", results[k].1.last().map(String::as_str).unwrap_or(""));
        }
    }
    let budgets = sync_budgets(&names, args.events)?;
    let asks_showback = args.questions.is_empty() || args.questions.contains(&1);
    let raw_cfg = QueryConfig { rollups: false, ..QueryConfig::default() };
    // DataFusion on the sink's small files (no summaries yet).
    let duck_small = if args.resume.is_some() {
        for r in results.iter_mut() {
            r.1.push("(earlier run)".into());
        }
        (f64::NAN, f64::NAN, 0)
    } else {
        let df_small = QueryService::open(data_dir.clone(), raw_cfg.clone())?;
        column(&df_small, args.runs, &mut results, &mut checks, "datafusion small files", &budgets, &args.questions)
            .await;
        drop(df_small);
        if asks_showback {
            duckdb(&args.python, &data_dir, args.runs)?
        } else {
            (f64::NAN, f64::NAN, 0)
        }
    };

    let t = Instant::now();
    let lock = CallsLock::open(&data_dir)?;
    let days = tokio::task::spawn_blocking({
        let d = data_dir.clone();
        move || compact_days(&CompactionConfig::new(d), &lock, u64::MAX, "2100-01-01")
    })
    .await??;
    let compact_time = t.elapsed();
    let pq_bytes = walk_size(&data_dir.join("calls"));
    let pq_files = file_count(&data_dir.join("calls"), ".parquet");
    let summary_rows: u64 = days.iter().map(|d| d.summary_rows).sum();

    let df_raw = QueryService::open(data_dir.clone(), raw_cfg.clone())?;
    column(&df_raw, args.runs, &mut results, &mut checks, "datafusion compacted", &budgets, &args.questions).await;
    drop(df_raw);
    let df_roll = QueryService::open(data_dir.clone(), QueryConfig::default())?;
    column(&df_roll, args.runs, &mut results, &mut checks, "datafusion rollup", &budgets, &args.questions).await;
    drop(df_roll);
    let duck = if asks_showback { duckdb(&args.python, &data_dir, args.runs)? } else { (f64::NAN, f64::NAN, 0) };
    let ch_raw = QueryService::open_clickhouse(chcfg.clone(), raw_cfg);
    column(&ch_raw, args.runs, &mut results, &mut checks, "clickhouse raw", &budgets, &args.questions).await;
    let ch_roll = QueryService::open_clickhouse(chcfg.clone(), QueryConfig::default());
    column(&ch_roll, args.runs, &mut results, &mut checks, "clickhouse rollup", &budgets, &args.questions).await;

    let mut disagreements = Vec::new();
    for (k, c) in checks.iter().enumerate() {
        let mut d = c.clone();
        d.dedup();
        if d.len() > 1 {
            disagreements.push(format!("{}: {c:?}", QUESTIONS[k].1));
        }
    }
    let month_total = checks[0].first().copied().unwrap_or(0);
    let duck_agrees = duck.2 == month_total && (args.resume.is_some() || duck_small.2 == month_total);
    let df_showback = results[0].1.get(1).and_then(|s| s.parse::<f64>().ok()).unwrap_or(f64::NAN);

    let rows: Vec<String> = results.iter().map(|(l, cells)| format!("| {l} | {} |", cells.join(" | "))).collect();
    let block = format!(
        "<!-- store-bench:begin -->\n## Stores at fleet scale: ingest, compaction, rollups and reports ({events} calls)\n\n\
         - Date: {date}\n- Reproduce: `cargo build --release -p tollgate-bench --bin storebench && bench/clickhouse-server.sh` (prints a URL), then \
         `target/release/storebench --clickhouse-url <url> --events {events}` (needs `python3 -m pip install duckdb`).\n\
         - Machine: this 2-core box; ClickHouse {version} (Debian's package, default settings) on the same machine; DuckDB \
         (Python wheel) in the same run on the same Parquet files.\n\
         - Calls: {events} generated over 37 days (2026-10-25 .. 2026-11-30), 20 departments, 200 teams, 400 projects, \
         2,000 users and keys, 15 models, 3 outcomes, in time order, sink batches of {batch}. Money in every answer \
         checked equal across all engine configurations{check} and against DuckDB ({duck_ok}).\n\
         - Query service as configured by default (`query.threads = 1`, `memory_limit_mb = 512`, \
         `exact_percentiles_max_calls = 1000000`: larger latency ranges come from the histogram, within 0.4%); \
         median of {runs} runs after a warm-up.\n\n\
         | store | ingest events/s | ingest s | on disk |\n|---|--:|--:|--:|\n\
         | ClickHouse (RowBinary + LZ4 over HTTP, rollup view live) | {ch_rate:.0} | {ch_s:.0} | calls {ch_mb:.0} MB + calls_daily {chr_mb:.1} MB |\n\
         | Parquet (zstd, sink files) | {pq_rate:.0} | {pq_s:.0} | {pqs_mb:.0} MB in {pqs_files} files |\n\
         | Parquet after compaction | – | {cmp_s:.0} (compaction) | {pq_mb:.0} MB in {pq_files} files + {summary_rows} summary rows |\n\n\
         (generating the calls took {gen_s:.0} s more, not counted above)\n\n\
         | query (median ms) | DataFusion, sink files | DataFusion, compacted, raw | DataFusion, compacted + summaries | ClickHouse raw | ClickHouse rollup |\n\
         |---|--:|--:|--:|--:|--:|\n{table}\n\n\
         DuckDB, monthly showback by department on the same files: sink files {d1s:.0} ms (1 thread) / {d2s:.0} ms (2 threads); \
         compacted files {d1:.0} ms (1 thread) / {d2:.0} ms (2 threads). DataFusion raw on the compacted files \
         ({df_showback:.0} ms, 1 thread) is {ratio:.2}x DuckDB's 1-thread time.\n\
         <!-- store-bench:end -->",
        date = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        events = args.events,
        batch = args.batch,
        runs = args.runs,
        check = if disagreements.is_empty() { String::new() } else { format!(" (DISAGREEMENTS: {})", disagreements.join("; ")) },
        duck_ok = if !asks_showback {
            "not run"
        } else if duck_agrees {
            "agrees"
        } else {
            "DISAGREES"
        },
        ch_rate = rate(ch_time),
        ch_s = ch_time.as_secs_f64(),
        ch_mb = ch_bytes as f64 / 1e6,
        chr_mb = ch_rollup_bytes as f64 / 1e6,
        pq_rate = rate(pq_time),
        pq_s = pq_time.as_secs_f64(),
        pqs_mb = pq_small_bytes as f64 / 1e6,
        pqs_files = pq_small_files,
        cmp_s = compact_time.as_secs_f64(),
        pq_mb = pq_bytes as f64 / 1e6,
        gen_s = gen_time.as_secs_f64(),
        d1s = duck_small.0,
        d2s = duck_small.1,
        d1 = duck.0,
        d2 = duck.1,
        ratio = df_showback / duck.0,
        table = rows.join("\n"),
    );
    println!("{block}");
    anyhow::ensure!(
        !asks_showback || (month_total > 0 && month_total <= sum),
        "monthly total {month_total} vs generated {sum}"
    );
    let old = std::fs::read_to_string(&args.results).unwrap_or_default();
    let new = match (old.find("<!-- store-bench:begin -->"), old.find("<!-- store-bench:end -->")) {
        (Some(a), Some(b)) => format!("{}{}{}", &old[..a], block, &old[b + "<!-- store-bench:end -->".len()..]),
        _ => format!("{}\n{block}\n", old.trim_end()),
    };
    std::fs::write(&args.results, new)?;
    let _ = tollgate_clickhouse::run(
        chcfg.server_client().query_raw(&format!("DROP DATABASE IF EXISTS `{db}`")),
        Duration::from_secs(300),
    )
    .await;
    let _ = std::fs::remove_dir_all(&data_dir);
    anyhow::ensure!(disagreements.is_empty(), "engines disagree: {disagreements:?}");
    Ok(())
}
