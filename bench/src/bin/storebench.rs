//! Store benchmark: events/s into ClickHouse (the collector's sink: RowBinary encoding + LZ4 inserts)
//! and into Parquet, then showback and latency report latency over the same generated calls on both
//! engines. Writes its tables between the `store-bench` markers of `bench/RESULTS.md`.
//!
//! `target/release/storebench --clickhouse-url http://127.0.0.1:8123 --events 10000000`
//! (a scratch database `bench_<pid>` is created and dropped afterwards).

use anyhow::Context;
use clap::Parser;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tollgate_clickhouse::sink::PendingRows;
use tollgate_clickhouse::{ClickHouseConfig, ClickHouseSink};
use tollgate_collector::{ParquetSink, ParquetSinkConfig, PendingBatch};
use tollgate_events::{CallEvent, ClientApi, Endpoint, Outcome, UsageSource};
use tollgate_query::{parse_group_by, QueryConfig, QueryService, TimeRange};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    clickhouse_url: String,
    #[arg(long, default_value_t = 10_000_000)]
    events: u64,
    /// Events per batch (the collector's `batch_max_rows`).
    #[arg(long, default_value_t = 100_000)]
    batch: u64,
    /// Where the Parquet files go (a fresh temp dir when not given).
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
    #[arg(long, default_value = "bench/RESULTS.md")]
    results: std::path::PathBuf,
    /// Runs per query (the median and the fastest are reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

const DEPARTMENTS: [&str; 12] = [
    "engineering",
    "finance",
    "research",
    "sales",
    "support",
    "legal",
    "marketing",
    "hr",
    "ops",
    "security",
    "data",
    "design",
];
const MODELS: [(&str, u64, u64); 8] = [
    ("gpt-4o-mini", 150, 600),
    ("gpt-4o", 2_500, 10_000),
    ("gpt-4.1", 2_000, 8_000),
    ("o3-mini", 1_100, 4_400),
    ("claude-sonnet-4-5", 3_000, 15_000),
    ("claude-haiku-4-5", 1_000, 5_000),
    ("text-embedding-3-small", 20, 0),
    ("house-llm", 38, 1_100),
];
/// 2026-10-01 00:00 UTC; the calls spread over October and November.
const START_US: i64 = 1_790_812_800_000_000;
const SPAN_US: i64 = 61 * 86_400_000_000;

/// A cheap deterministic mixer (splitmix64) so both stores get the same calls.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn call(i: u64, total: u64) -> CallEvent {
    let r = mix(i);
    let d = DEPARTMENTS[(r % 12) as usize];
    let (model, pin, pout) = MODELS[((r >> 8) % 8) as usize];
    let input = 50 + (r >> 16) % 4_000;
    let output = if pout == 0 { 0 } else { 1 + (r >> 28) % 800 };
    let cached = if (r >> 40).is_multiple_of(4) { input / 2 } else { 0 };
    let ts = START_US + (SPAN_US as u128 * u128::from(i) / u128::from(total.max(1))) as i64;
    let cost = (input * pin + output * pout) * 1_000 / 1_000_000 * 1_000;
    let mut tags = BTreeMap::new();
    tags.insert("env".to_string(), if r.is_multiple_of(10) { "dev" } else { "prod" }.to_string());
    CallEvent {
        schema_version: tollgate_events::SCHEMA_VERSION,
        event_id: format!("{:032x}", u128::from(r) << 64 | u128::from(i)),
        request_id: format!("req-{i}"),
        ts_start_us: ts,
        ts_end_us: ts + 400_000,
        tenant: "acme".into(),
        department: d.into(),
        team: format!("{d}-team-{}", (r >> 44) % 4),
        project: format!("p{}", (r >> 46) % 20),
        user: format!("user{}", (r >> 50) % 500),
        api_key_id: format!("key-{}", (r >> 52) % 40),
        tags,
        endpoint: if pout == 0 { Endpoint::Embeddings } else { Endpoint::Chat },
        client_api: if model.starts_with("claude") { ClientApi::Anthropic } else { ClientApi::Openai },
        stream: r.is_multiple_of(3),
        provider: if model.starts_with("claude") { "anthropic" } else { "openai" }.into(),
        upstream: "primary".into(),
        requested_model: model.into(),
        served_model: model.into(),
        status_code: 200,
        outcome: if r.is_multiple_of(50) { Outcome::UpstreamError } else { Outcome::Ok },
        finish_reason: "stop".into(),
        input_tokens: input,
        output_tokens: output,
        cached_input_tokens: cached,
        usage_source: UsageSource::Provider,
        cost_nanousd: cost,
        price_id: format!("{model}@2025-11-01"),
        latency_ms: 100 + ((r >> 20) % 3_000) as u32,
        ttft_ms: if r.is_multiple_of(3) { 20 + ((r >> 24) % 500) as u32 } else { 0 },
        upstream_latency_ms: 90 + ((r >> 20) % 3_000) as u32,
        gateway_overhead_us: 40,
        request_bytes: input * 4,
        response_bytes: output * 4,
        ..Default::default()
    }
}

fn median(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[0])
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
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
    let _ = std::fs::remove_dir_all(&data_dir);
    std::fs::create_dir_all(&data_dir)?;
    let db = format!("bench_{}", std::process::id());
    let chcfg = ClickHouseConfig::new(args.clickhouse_url.clone(), db.clone());
    tollgate_clickhouse::migrate(&chcfg).await.context("migrating the bench database")?;
    let version = tollgate_clickhouse::fetch_json(chcfg.client().query("SELECT version()"), Duration::from_secs(10))
        .await?
        .first()
        .and_then(|r| r.first())
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default();
    let mut ch = ClickHouseSink::open(chcfg.clone(), &data_dir)?;
    let mut pq = ParquetSink::open(ParquetSinkConfig::new(data_dir.clone()))?;

    let (mut ch_time, mut pq_time, mut bytes) = (Duration::ZERO, Duration::ZERO, 0usize);
    let mut sum = 0u64;
    let mut i = 0;
    while i < args.events {
        let n = args.batch.min(args.events - i);
        let chunk: Vec<CallEvent> = (i..i + n).map(|k| call(k, args.events)).collect();
        sum += chunk.iter().map(|e| e.cost_nanousd).sum::<u64>();
        let chunk = Arc::new(chunk);
        let t = Instant::now();
        let mut p = PendingRows::default();
        ch.append(&mut p, &chunk);
        bytes += p.bytes();
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
        eprint!("\r{i} events");
    }
    eprintln!();
    let rate = |d: Duration| args.events as f64 / d.as_secs_f64();

    let df = QueryService::open(data_dir.clone(), QueryConfig::default())?;
    let chq = QueryService::open_clickhouse(chcfg.clone(), QueryConfig::default());
    let month = TimeRange::parse(Some("2026-11-01"), Some("2026-11-30"))?;
    let all = TimeRange::parse(Some("2026-10-01"), Some("2026-11-30"))?;
    let mut lines = Vec::new();
    for (label, range, group, latency) in [
        ("showback by department, one month", &month, "department", false),
        ("showback by department,team,model, two months", &all, "department,team,model", false),
        ("latency p50/p95/p99 by model, one month", &month, "model", true),
    ] {
        let g = parse_group_by(Some(group), &[])?;
        let mut cells = vec![label.to_string()];
        let mut totals = Vec::new();
        for svc in [&df, &chq] {
            let mut times = Vec::new();
            let mut failed = None;
            for _ in 0..args.runs.max(1) {
                let t = Instant::now();
                let r = if latency {
                    svc.latency(range, &g).await.map(|rows| rows.iter().map(|r| r.calls).sum::<u64>())
                } else {
                    svc.showback(range, &g).await.map(|rows| rows.iter().map(|r| r.totals.cost_nanousd).sum::<u64>())
                };
                match r {
                    Ok(total) => {
                        totals.push(total);
                        times.push(t.elapsed());
                    }
                    Err(e) => {
                        failed = Some(format!("{e:?}"));
                        break;
                    }
                }
            }
            match failed {
                None => {
                    let (med, best) = median(times);
                    cells.push(ms(med));
                    cells.push(ms(best));
                }
                Some(e) => {
                    eprintln!("{label}: {e}");
                    let short: String = e.chars().take(60).collect();
                    cells.push(format!("failed: {}", short.replace('|', "/")));
                    cells.push("-".into());
                }
            }
        }
        totals.dedup();
        anyhow::ensure!(totals.len() == 1, "{label}: the engines disagree: {totals:?}");
        lines.push(format!("| {} |", cells.join(" | ")));
    }
    let all_g = parse_group_by(Some("department"), &[])?;
    let check = df
        .showback(&all, &all_g)
        .await
        .map_err(|e| anyhow::anyhow!("check: {e:?}"))?
        .iter()
        .map(|r| r.totals.cost_nanousd)
        .sum::<u64>();
    anyhow::ensure!(check == sum, "DataFusion total {check} != generated {sum}");
    let parquet_bytes: u64 = walk_size(&data_dir.join("calls"));

    let block = format!(
        "<!-- store-bench:begin -->\n## Stores: ingest and report latency\n\n\
         - Date: {date}\n- Reproduce: `cargo build --release -p tollgate-bench && bench/clickhouse-server.sh` (prints a URL), then \
         `target/release/storebench --clickhouse-url <url> --events {events}`\n\
         - Server: ClickHouse {version} on this 2-core box (Debian's package, default settings), same machine as the benchmark.\n\
         - {events} generated calls over two months (12 departments, 48 teams, 8 models), in time order, batches of {batch}; \
         the time is the sink's own work (encoding + insert, or Arrow + zstd Parquet + fsync), not generating the calls.\n\
         - Query service as configured by default (`query.threads = 1` for DataFusion); median and fastest of {runs} runs; \
         both engines' totals checked equal to the nano-dollar.\n\n\
         | sink | events/s | total s | notes |\n|---|--:|--:|---|\n\
         | ClickHouse (RowBinary + LZ4 over HTTP) | {ch_rate:.0} | {ch_s:.1} | {mb:.0} MB of RowBinary before LZ4 |\n\
         | Parquet (zstd) | {pq_rate:.0} | {pq_s:.1} | {pq_mb:.0} MB on disk |\n\n\
         | query | DataFusion median ms | DataFusion best ms | ClickHouse median ms | ClickHouse best ms |\n|---|--:|--:|--:|--:|\n{rows}\n\
         <!-- store-bench:end -->",
        date = chrono_now(),
        events = args.events,
        batch = args.batch,
        runs = args.runs,
        ch_rate = rate(ch_time),
        ch_s = ch_time.as_secs_f64(),
        mb = bytes as f64 / 1e6,
        pq_rate = rate(pq_time),
        pq_s = pq_time.as_secs_f64(),
        pq_mb = parquet_bytes as f64 / 1e6,
        rows = lines.join("\n"),
    );
    println!("{block}");
    let old = std::fs::read_to_string(&args.results).unwrap_or_default();
    let new = match (old.find("<!-- store-bench:begin -->"), old.find("<!-- store-bench:end -->")) {
        (Some(a), Some(b)) => format!("{}{}{}", &old[..a], block, &old[b + "<!-- store-bench:end -->".len()..]),
        _ => format!("{}\n{block}\n", old.trim_end()),
    };
    std::fs::write(&args.results, new)?;
    let _ = tollgate_clickhouse::run(
        chcfg.server_client().query_raw(&format!("DROP DATABASE IF EXISTS `{db}`")),
        Duration::from_secs(60),
    )
    .await;
    let _ = std::fs::remove_dir_all(&data_dir);
    Ok(())
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

fn chrono_now() -> String {
    chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string()
}
