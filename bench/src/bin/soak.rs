//! Soak (issue 15): runs the release `tollgate serve` for `--minutes` under mixed traffic with hostile
//! inputs interleaved (bad and oversized bodies, hang-ups mid-upload, broken chunked framing, trickled
//! headers, wrong methods, huge headers, upstream streams with 1 MiB lines, lone-CR line ends,
//! multi-line `data`, a JSON answer to a stream request, clients leaving mid-stream, a prompt that once
//! broke the tokenizer, deep SQL and `repeat()` blow-ups), samples the gateway's RSS every second, and
//! writes the per-minute curve between the `soak` markers of `bench/RESULTS.md`.
//!
//! `cargo build --release -p tollgate -p tollgate-mock -p tollgate-bench && target/release/soak --minutes 10`
//! Not part of CI.

#[path = "../procs.rs"]
#[allow(dead_code)]
mod procs;

use anyhow::{bail, Context, Result};
use clap::Parser;
use procs::{free_port, rss_kib, ChildProc};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 6)]
    clients: usize,
    #[arg(long, default_value = "target/release/tollgate")]
    tollgate: PathBuf,
    #[arg(long, default_value = "target/release/tollgate-mock")]
    mock: PathBuf,
    #[arg(long, default_value = "bench/RESULTS.md")]
    results: PathBuf,
    /// Leave out the scenarios whose name contains this text (case-insensitive; repeatable), e.g.
    /// `--skip sql` to see whether the query path is what grows.
    #[arg(long)]
    skip: Vec<String>,
    /// An environment variable for the `tollgate` process, `KEY=VALUE` (repeatable), e.g.
    /// `--env MALLOC_ARENA_MAX=1`.
    #[arg(long)]
    env: Vec<String>,
    /// TOML appended to the soak's `tollgate.toml` (a section it does not set), e.g.
    /// `--config-extra $'[collector]\nflush_interval_ms = 30000'`.
    #[arg(long)]
    config_extra: Option<String>,
}

const KEY: &str = "sk-soak-0001";
const BEGIN: &str = "<!-- soak:begin -->";
const END: &str = "<!-- soak:end -->";

/// What one scenario did: the status line's code, or 0 when the connection ended without one.
type Tally = Arc<Mutex<BTreeMap<(&'static str, u16), u64>>>;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    let dir = std::env::temp_dir().join(format!("tollgate-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let hostile = start_hostile().await?;
    let mut mock_cmd = Command::new(&args.mock);
    mock_cmd.args(["--listen", "127.0.0.1:0", "--threads", "1"]);
    let mock = ChildProc::start("mock", mock_cmd, None, Duration::from_secs(10))?;
    let port = free_port()?;
    let config = dir.join("tollgate.toml");
    let mut config_toml = config_text(port, &dir, mock.addr, hostile);
    if let Some(extra) = &args.config_extra {
        config_toml.push_str(extra);
        config_toml.push('\n');
    }
    std::fs::write(&config, config_toml)?;
    let mut cmd = Command::new(&args.tollgate);
    cmd.arg("serve").arg("--config").arg(&config).env("RUST_LOG", "error");
    for kv in &args.env {
        let Some((k, v)) = kv.split_once('=') else { bail!("--env {kv}: expected KEY=VALUE") };
        cmd.env(k, v);
    }
    let skip: Vec<String> = args.skip.iter().map(|s| s.to_lowercase()).collect();
    let active: Arc<Vec<usize>> = Arc::new(
        (0..SCENARIOS.len()).filter(|&k| !skip.iter().any(|s| SCENARIOS[k].to_lowercase().contains(s))).collect(),
    );
    if active.is_empty() {
        bail!("--skip left no scenario to run");
    }
    let mut gw = ChildProc::start("tollgate", cmd, None, Duration::from_secs(30))?;
    let addr = gw.addr;
    let pid = gw.pid();

    let stop = Arc::new(AtomicBool::new(false));
    let tally: Tally = Arc::default();
    let mut workers = Vec::new();
    for w in 0..args.clients {
        let (stop, tally, active) = (stop.clone(), tally.clone(), active.clone());
        workers.push(tokio::spawn(async move {
            let mut i = w;
            while !stop.load(Ordering::Relaxed) {
                let k = active[i % active.len()];
                let status = scenario(addr, k).await;
                *tally.lock().unwrap_or_else(|e| e.into_inner()).entry((SCENARIOS[k], status)).or_default() += 1;
                i += STRIDE;
            }
        }));
    }
    let started = Instant::now();
    let total = Duration::from_secs_f64(args.minutes * 60.0);
    let mut samples: Vec<(f64, u64)> = Vec::new();
    let mut requests_at: Vec<u64> = Vec::new();
    let mut status_at: Vec<ProcStatus> = Vec::new();
    // The resident memory by kind of mapping at the end of each minute.
    let mut by_mapping: Vec<Mappings> = Vec::new();
    // Parquet files under `calls/` at the end of each minute (queries open every one of them).
    let mut files_at: Vec<usize> = Vec::new();
    while started.elapsed() < total {
        tokio::time::sleep(Duration::from_secs(1)).await;
        gw.check_alive()?;
        let (rss, _) = rss_kib(pid)?;
        let t = started.elapsed().as_secs_f64();
        samples.push((t, rss));
        status_at.push(proc_status(pid)?);
        requests_at.push(tally.lock().unwrap_or_else(|e| e.into_inner()).values().sum());
        let minute_ends = (t / 60.0) as usize > by_mapping.len() || started.elapsed() >= total;
        if minute_ends {
            by_mapping.push(mappings(pid)?);
            files_at.push(parquet_files(&dir.join("data").join("calls")));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = tokio::time::timeout(Duration::from_secs(30), w).await;
    }
    gw.check_alive()?;
    let (rss_end, hwm) = rss_kib(pid)?;
    let metrics = http_get(addr, "/metrics").await.unwrap_or_default();
    let metric = |name: &str| -> String {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
            .unwrap_or("?")
            .trim()
            .to_string()
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stored = sql_count(addr).await.unwrap_or(0);
    let sent: u64 = tally.lock().unwrap_or_else(|e| e.into_inner()).values().sum();

    let mut out = String::new();
    out.push_str(&format!("{BEGIN}\n## Soak: {} minutes of mixed and hostile traffic (issue 15)\n\n", args.minutes));
    out.push_str(&format!(
        "- Date: {}\n- Reproduce: `cargo build --release -p tollgate -p tollgate-mock -p tollgate-bench && target/release/soak --minutes {}`\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        args.minutes
    ));
    out.push_str(&format!(
        "- {} clients, each cycling through the scenarios below back to back (one connection per request); `tollgate serve` (release) with `max_request_bytes = 1 MiB`, `max_sse_line_bytes = 64 KiB`, `header_read_timeout_ms = 1000`, `body_read_timeout_ms = 2000`, `memory_limit_mb = 128`, `sql_timeout_ms = 3000`; mock upstream and a scripted hostile upstream on the same 2 cores.\n",
        args.clients
    ));
    if !args.skip.is_empty() || !args.env.is_empty() || args.config_extra.is_some() {
        out.push_str(&format!(
            "- This run: `--skip` {:?}, `--env` {:?}, `--config-extra` {:?} (scenarios left out, environment of `tollgate`, configuration added).\n",
            args.skip, args.env, args.config_extra
        ));
    }
    out.push_str(&format!(
        "- Requests: {sent}; call events stored at the end: {stored}; VmRSS at the end {:.1} MiB, peak (VmHWM) {:.1} MiB; `tollgate_events_spilled_total` {}, `tollgate_metering_panics_total` {}, `tollgate_sse_lines_too_long_total` {}, `tollgate_client_read_timeouts_total` {}.\n\n",
        rss_end as f64 / 1024.0,
        hwm as f64 / 1024.0,
        metric("tollgate_events_spilled_total"),
        metric("tollgate_metering_panics_total"),
        metric("tollgate_sse_lines_too_long_total"),
        metric("tollgate_client_read_timeouts_total"),
    ));
    out.push_str("### RSS per minute (sampled every second)\n\n| minute | requests | VmRSS min MiB | mean MiB | max MiB | last MiB | RssAnon last MiB | RssFile last MiB | threads max |\n|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    let minutes = (samples.len() as f64 / 60.0).ceil() as usize;
    let mut means = Vec::new();
    for m in 0..minutes {
        let part: Vec<u64> = samples.iter().filter(|(t, _)| (*t / 60.0) as usize == m).map(|(_, r)| *r).collect();
        if part.is_empty() {
            continue;
        }
        let idx: Vec<usize> =
            samples.iter().enumerate().filter(|(_, (t, _))| (*t / 60.0) as usize == m).map(|(i, _)| i).collect();
        let reqs = idx.last().map(|&l| requests_at[l]).unwrap_or(0)
            - idx.first().and_then(|&f| f.checked_sub(1)).map(|f| requests_at[f]).unwrap_or(0);
        let mib = |k: u64| k as f64 / 1024.0;
        let mean = part.iter().sum::<u64>() as f64 / part.len() as f64 / 1024.0;
        means.push(mean);
        let last = idx.last().map(|&l| status_at[l]).unwrap_or_default();
        let threads = idx.iter().map(|&i| status_at[i].threads).max().unwrap_or(0);
        out.push_str(&format!(
            "| {} | {reqs} | {:.1} | {mean:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {threads} |\n",
            m + 1,
            mib(*part.iter().min().unwrap_or(&0)),
            mib(*part.iter().max().unwrap_or(&0)),
            mib(*part.last().unwrap_or(&0)),
            mib(last.anon_kib),
            mib(last.file_kib),
        ));
    }
    if means.len() >= 4 {
        let early = means[1];
        let late = means[means.len() - 1];
        out.push_str(&format!(
            "\nMean RSS in minute 2: {early:.1} MiB; in the last minute: {late:.1} MiB ({:+.1}%). {}\n",
            (late - early) / early * 100.0,
            if late <= early * 1.10 { "Flat: within 10%." } else { "**Not flat: grew by more than 10%.**" }
        ));
    }
    out.push_str(
        "\n### Resident memory by mapping at the end of each minute (`/proc/PID/smaps`), MiB\n\n\
         `[heap]` is glibc's main arena (brk); arenas are the other glibc arenas (64 MiB-aligned \
         regions); thread stacks are the anonymous mappings right above a guard page (count of \
         stacks, resident MiB); other anonymous mappings are mostly single large allocations \
         (glibc serves those over 128 KiB-32 MiB with `mmap`); file pages are the binary and \
         libraries.\n\n\
         | minute | [heap] | arenas | thread stacks | other anonymous | file pages | Parquet files |\n|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    for (m, b) in by_mapping.iter().enumerate() {
        let mib = |k: u64| k as f64 / 1024.0;
        out.push_str(&format!(
            "| {} | {:.1} | {:.1} ({}) | {:.1} ({}) | {:.1} ({}) | {:.1} | {} |\n",
            m + 1,
            mib(b.heap),
            mib(b.arenas),
            b.arena_count,
            mib(b.stacks),
            b.stack_count,
            mib(b.other_anon),
            b.other_count,
            mib(b.file),
            files_at.get(m).copied().unwrap_or(0),
        ));
    }
    out.push_str("\n### Answers per scenario\n\n| scenario | status | count |\n|---|--:|--:|\n");
    for ((name, status), n) in tally.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        let s = if *status == 0 { "closed".to_string() } else { status.to_string() };
        out.push_str(&format!("| {name} | {s} | {n} |\n"));
    }
    out.push_str(&format!("{END}\n"));
    let existing = std::fs::read_to_string(&args.results).ok();
    let text = match existing.as_deref().and_then(|e| Some((e.find(BEGIN)?, e.find(END)?, e))) {
        Some((b, e, ex)) if b < e => format!("{}{out}{}", &ex[..b], ex[e + END.len()..].trim_start_matches('\n')),
        _ => format!("{}\n{out}", existing.unwrap_or_default().trim_end()),
    };
    std::fs::write(&args.results, text).with_context(|| format!("writing {}", args.results.display()))?;
    println!("{out}");
    drop(gw);
    drop(mock);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Each client steps through the scenarios by this much (coprime with their number, so every client
/// meets every scenario).
const STRIDE: usize = 7;

/// Parquet files (`*.parquet`) in the day directories under `calls`.
fn parquet_files(calls: &std::path::Path) -> usize {
    let days = std::fs::read_dir(calls).into_iter().flatten().flatten();
    days.flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
        .filter(|f| f.file_name().to_str().is_some_and(|n| n.ends_with(".parquet")))
        .count()
}

fn config_text(port: u16, dir: &std::path::Path, mock: SocketAddr, hostile: SocketAddr) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:{port}"
[storage]
data_dir = "{data}"
[gateway]
max_request_bytes = 1048576
max_sse_line_bytes = 65536
header_read_timeout_ms = 1000
body_read_timeout_ms = 2000
[query]
memory_limit_mb = 128
sql_timeout_ms = 3000
[[upstreams]]
name = "mock"
kind = "openai_compatible"
base_url = "http://{mock}/v1"
models = ["gpt-4o-mini", "gpt-4o"]
[[upstreams]]
name = "hostile"
kind = "openai_compatible"
base_url = "http://{hostile}/v1"
models = ["gpt-4.1"]
idle_timeout_ms = 5000
[[keys]]
id = "soak"
hash = "{hash}"
department = "soak"
query = true
"#,
        data = dir.join("data").display(),
        hash = tollgate_gateway::hash_key(KEY),
    )
}

fn chat(model: &str, prompt: &str, stream: bool) -> String {
    serde_json::json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": prompt}]}).to_string()
}

fn post(path: &str, body: &str, extra: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nhost: soak\r\nauthorization: Bearer {KEY}\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n{extra}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Sends `req`, reads the answer to the end (at most 30 s), returns its status code (0: none).
async fn exchange(addr: SocketAddr, req: &[u8]) -> u16 {
    let work = async {
        let mut tcp = TcpStream::connect(addr).await.ok()?;
        tcp.write_all(req).await.ok()?;
        let mut head = [0u8; 12];
        let mut got = 0;
        while got < head.len() {
            let n = tcp.read(&mut head[got..]).await.ok()?;
            if n == 0 {
                break;
            }
            got += n;
        }
        let mut sink = vec![0u8; 64 * 1024];
        while let Ok(n) = tcp.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
        std::str::from_utf8(head.get(9..12)?).ok()?.parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(30), work).await.ok().flatten().unwrap_or(0)
}

/// Writes `parts` and closes, or waits for the gateway to close (slow clients).
async fn raw(addr: SocketAddr, parts: &[&[u8]], hang_up: bool) -> u16 {
    let work = async {
        let mut tcp = TcpStream::connect(addr).await.ok()?;
        for p in parts {
            tcp.write_all(p).await.ok()?;
        }
        if hang_up {
            return Some(0);
        }
        let mut out = Vec::new();
        let _ = tcp.read_to_end(&mut out).await;
        std::str::from_utf8(out.get(9..12).unwrap_or(b"000")).ok()?.parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(30), work).await.ok().flatten().unwrap_or(0)
}

/// Reads a stream's first bytes, then leaves.
async fn leave_mid_stream(addr: SocketAddr, req: &[u8]) -> u16 {
    let work = async {
        let mut tcp = TcpStream::connect(addr).await.ok()?;
        tcp.write_all(req).await.ok()?;
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        while !got.windows(5).any(|w| w == b"data:") {
            let n = tcp.read(&mut buf).await.ok()?;
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        std::str::from_utf8(got.get(9..12)?).ok()?.parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(30), work).await.ok().flatten().unwrap_or(0)
}

fn sql(text: &str) -> Vec<u8> {
    post("/v1/sql", &serde_json::json!({ "sql": text }).to_string(), "")
}

/// The scenarios by number: normal traffic (the first six) most of the time, a hostile input in between.
const SCENARIOS: [&str; 25] = [
    "chat",
    "chat",
    "chat stream",
    "chat stream",
    "messages stream (translated)",
    "count_tokens",
    "bad JSON",
    "body over max_request_bytes",
    "hang-up mid-upload",
    "broken chunked body",
    "trickled headers",
    "GET on an LLM endpoint",
    "40 KiB header",
    "upstream 1 MiB SSE line",
    "upstream CR-only, multi-line data, no last newline",
    "upstream JSON to a stream request",
    "client leaves mid-stream",
    "1.1M spaces, usage estimated",
    "SQL 1000-term sum",
    "SQL 1000 UNION ALL",
    "SQL repeat() blow-up",
    "SQL EXPLAIN",
    "SQL showback",
    "unknown /v1/messages path",
    "count_tokens bad body",
];

/// Runs scenario `k` (an index into `SCENARIOS`), returns the status code it got (0: none).
async fn scenario(addr: SocketAddr, k: usize) -> u16 {
    match k {
        0 | 1 => exchange(addr, &post("/v1/chat/completions", &chat("gpt-4o-mini", "hello there", false), "")).await,
        2 | 3 => {
            exchange(addr, &post("/v1/chat/completions", &chat("gpt-4o-mini", "hello MOCK[tokens=20]", true), "")).await
        }
        4 => {
            let b = serde_json::json!({"model": "gpt-4o-mini", "max_tokens": 50, "stream": true,
                "messages": [{"role": "user", "content": "hi"}]})
            .to_string();
            exchange(addr, &post("/v1/messages", &b, "")).await
        }
        5 => exchange(addr, &post("/v1/messages/count_tokens", &chat("gpt-4o", "count these words", false), "")).await,
        6 => exchange(addr, &post("/v1/chat/completions", "{not json", "")).await,
        7 => {
            exchange(addr, &post("/v1/chat/completions", &chat("gpt-4o-mini", &"x".repeat(1_500_000), false), "")).await
        }
        8 => {
            let b = chat("gpt-4o-mini", "hello", false);
            let req = post("/v1/chat/completions", &b, "");
            raw(addr, &[&req[..req.len() - 10]], true).await
        }
        9 => {
            let h = format!("POST /v1/chat/completions HTTP/1.1\r\nhost: s\r\nauthorization: Bearer {KEY}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n");
            raw(addr, &[h.as_bytes(), b"zz\r\nnope\r\n0\r\n\r\n"], false).await
        }
        10 => raw(addr, &[b"POST /v1/chat/completions HTTP/1.1\r\nhost: s\r\nx-slow: "], false).await,
        11 => {
            raw(
                addr,
                &[format!("GET /v1/messages HTTP/1.1\r\nhost: s\r\nx-api-key: {KEY}\r\nconnection: close\r\n\r\n")
                    .as_bytes()],
                false,
            )
            .await
        }
        12 => {
            exchange(
                addr,
                &post(
                    "/v1/chat/completions",
                    &chat("gpt-4o-mini", "x", false),
                    &format!("x-pad: {}\r\n", "p".repeat(40 * 1024)),
                ),
            )
            .await
        }
        13 => exchange(addr, &post("/v1/chat/completions", &chat("gpt-4.1", "HOSTILE[long]", true), "")).await,
        14 => exchange(addr, &post("/v1/chat/completions", &chat("gpt-4.1", "HOSTILE[odd]", true), "")).await,
        15 => exchange(addr, &post("/v1/chat/completions", &chat("gpt-4.1", "HOSTILE[json]", true), "")).await,
        16 => {
            leave_mid_stream(
                addr,
                &post("/v1/chat/completions", &chat("gpt-4o-mini", "MOCK[tokens=40,delay_ms=5]", true), ""),
            )
            .await
        }
        17 => {
            exchange(
                addr,
                &post(
                    "/v1/chat/completions",
                    &chat("gpt-4o", &format!("{}MOCK[no_usage]", " ".repeat(1_048_000)), true),
                    "",
                ),
            )
            .await
        }
        18 => exchange(addr, &sql(&format!("SELECT {} AS n", vec!["1"; 1000].join("+")))).await,
        19 => {
            exchange(addr, &sql(&format!("SELECT count(*) FROM ({})", vec!["SELECT 1 AS x"; 1000].join(" UNION ALL "))))
                .await
        }
        20 => exchange(addr, &sql("SELECT length(repeat('x', 300000000))")).await,
        21 => exchange(addr, &sql("EXPLAIN SELECT department, sum(cost_nanousd) FROM calls GROUP BY department")).await,
        22 => {
            exchange(addr, &sql("SELECT department, count(*), sum(cost_nanousd) FROM calls GROUP BY department")).await
        }
        23 => exchange(addr, &post("/v1/messages/batches", "{}", "")).await,
        _ => exchange(addr, &post("/v1/messages/count_tokens", r#"{"model":"gpt-4o","messages":"x"}"#, "")).await,
    }
}

/// Per-second fields of `/proc/PID/status`.
#[derive(Clone, Copy, Default)]
struct ProcStatus {
    anon_kib: u64,
    file_kib: u64,
    threads: u64,
}

fn proc_status(pid: u32) -> Result<ProcStatus> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |key: &str| -> u64 {
        status.lines().find_map(|l| l.strip_prefix(key)?.trim().trim_end_matches("kB").trim().parse().ok()).unwrap_or(0)
    };
    Ok(ProcStatus { anon_kib: field("RssAnon:"), file_kib: field("RssFile:"), threads: field("Threads:") })
}

/// Resident KiB by kind of mapping (see the table's legend in the output).
#[derive(Default)]
struct Mappings {
    heap: u64,
    arenas: u64,
    arena_count: usize,
    stacks: u64,
    stack_count: usize,
    other_anon: u64,
    other_count: usize,
    file: u64,
}

/// glibc reserves each non-main arena as a region of this size and alignment (64-bit).
const ARENA_ALIGN: u64 = 64 << 20;

fn mappings(pid: u32) -> Result<Mappings> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))?;
    // (start, end, perms, name, rss KiB) per mapping, in address order.
    let mut maps: Vec<(u64, u64, String, String, u64)> = Vec::new();
    for line in smaps.lines() {
        let mut parts = line.split_whitespace();
        let first = parts.next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-') {
            if let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) {
                let perms = parts.next().unwrap_or("").to_string();
                let name = parts.nth(3).unwrap_or("").to_string();
                maps.push((a, b, perms, name, 0));
                continue;
            }
        }
        if first == "Rss:" {
            if let (Some(m), Some(kib)) = (maps.last_mut(), parts.next().and_then(|v| v.parse().ok())) {
                m.4 = kib;
            }
        }
    }
    let mut out = Mappings::default();
    for (i, (start, _end, perms, name, rss)) in maps.iter().enumerate() {
        if name == "[heap]" {
            out.heap += rss;
        } else if name.starts_with('/') {
            out.file += rss;
        } else if !name.is_empty() || perms.starts_with("---") {
            // [stack], [vdso], guard pages and reserved address space.
            out.other_anon += rss;
        } else if i > 0
            && maps[i - 1].2.starts_with("---")
            && maps[i - 1].1 == *start
            && maps[i - 1].1 - maps[i - 1].0 == 4096
        {
            out.stacks += rss;
            out.stack_count += 1;
        } else if start % ARENA_ALIGN == 0 {
            out.arenas += rss;
            out.arena_count += 1;
        } else {
            out.other_anon += rss;
            out.other_count += 1;
        }
    }
    Ok(out)
}

async fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    let mut tcp = TcpStream::connect(addr).await?;
    tcp.write_all(format!("GET {path} HTTP/1.1\r\nhost: s\r\nconnection: close\r\n\r\n").as_bytes()).await?;
    let mut out = Vec::new();
    tcp.read_to_end(&mut out).await?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

async fn sql_count(addr: SocketAddr) -> Result<u64> {
    let mut tcp = TcpStream::connect(addr).await?;
    tcp.write_all(&sql("SELECT count(*) AS n FROM calls")).await?;
    let mut out = Vec::new();
    tcp.read_to_end(&mut out).await?;
    let text = String::from_utf8_lossy(&out);
    let Some(body) = text.split("\r\n\r\n").nth(1) else { bail!("no body") };
    let v: serde_json::Value = serde_json::from_str(body.trim())?;
    v["rows"][0]["n"].as_u64().context("no count")
}

/// The scripted upstream: `HOSTILE[long]` (a 1 MiB SSE line between normal events), `HOSTILE[odd]`
/// (lone-CR line ends, a `data` field over two lines, no line end after `[DONE]`), `HOSTILE[json]` (a
/// JSON document to a stream request).
async fn start_hostile() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = hostile_answer(tcp).await;
            });
        }
    });
    Ok(addr)
}

async fn hostile_answer(mut tcp: TcpStream) -> std::io::Result<()> {
    let mut req = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let (head_end, len) = loop {
        let n = tcp.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        req.extend_from_slice(&buf[..n]);
        if let Some(i) = req.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&req[..i]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            break (i + 4, len);
        }
    };
    while req.len() < head_end + len {
        let n = tcp.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        req.extend_from_slice(&buf[..n]);
    }
    let body = String::from_utf8_lossy(&req[head_end..]).into_owned();
    let chunk = |c: &str| {
        serde_json::json!({"id": "h", "object": "chat.completion.chunk", "model": "gpt-4.1",
            "choices": [{"index": 0, "delta": {"content": c}, "finish_reason": null}]})
        .to_string()
    };
    let usage = r#"{"id":"h","object":"chat.completion.chunk","model":"gpt-4.1","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}"#;
    let sse_head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n".to_vec();
    if body.contains("HOSTILE[long]") {
        tcp.write_all(&sse_head).await?;
        tcp.write_all(format!("data: {}\n\ndata: {{\"junk\":\"", chunk("a")).as_bytes()).await?;
        let block = vec![b'x'; 64 * 1024];
        for _ in 0..16 {
            tcp.write_all(&block).await?;
        }
        tcp.write_all(format!("\"}}\n\ndata: {usage}\n\ndata: [DONE]\n\n").as_bytes()).await?;
    } else if body.contains("HOSTILE[odd]") {
        tcp.write_all(&sse_head).await?;
        let c = chunk("odd");
        let (a, b) = c.split_at(c.find("\"choices\"").unwrap_or(0));
        tcp.write_all(format!("data: {a}\rdata: {b}\r\rdata: {usage}\r\rdata: [DONE]").as_bytes()).await?;
    } else {
        let doc = r#"{"id":"h","object":"chat.completion","model":"gpt-4.1","choices":[{"index":0,"message":{"role":"assistant","content":"whole"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":1,"total_tokens":10}}"#;
        tcp.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n").await?;
        tcp.write_all(doc.as_bytes()).await?;
    }
    tcp.shutdown().await
}
