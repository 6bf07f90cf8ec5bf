//! `tollgate-bench`: measures the latency and throughput tollgate adds over going direct and over a bare proxy.

mod load;
mod procs;
mod report;
mod rounds;
mod stats;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use sha2::{Digest, Sha256};

use crate::load::LoadSpec;
use crate::procs::ChildProc;
use crate::report::{Report, Row, RssSample};

const REPRO_BUILD: &str = "cargo build --release -p tollgate -p tollgate-mock -p tollgate-bench";
const BODY: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello there"}]}"#;
const BODY_STREAM: &str =
    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello there"}],"stream":true}"#;
/// Sizes the per-worker latency vectors so the hot loop rarely reallocates.
const EXPECTED_RPS: usize = 40_000;

#[derive(Parser)]
#[command(
    about = "Load driver: direct to the mock upstream vs a bare proxy vs tollgate; writes bench/RESULTS.md",
    after_help = "Reproduce: cargo build --release -p tollgate -p tollgate-mock -p tollgate-bench && target/release/tollgate-bench --seconds 5"
)]
struct Args {
    /// Measured seconds per target, scenario and concurrency.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Warm-up seconds before each measured window (requests then are not counted).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Rounds of the whole matrix. Per scenario and concurrency each round gives every target one window,
    /// the targets taking turns and the first one rotating per round; above 1 the tables show the median
    /// over rounds with its range, and comparisons (÷ bare, tollgate vs before) are made within each round
    /// before their median is taken.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Scenarios: `non-stream` and `stream` on keep-alive connections; `new-connection` is non-stream
    /// with a new connection for every request, closed after the answer (its latency includes the connect),
    /// as clients without a connection pool do.
    #[arg(long, value_delimiter = ',', default_value = "non-stream,stream")]
    scenarios: Vec<Scenario>,
    /// Concurrency levels (workers, one keep-alive connection each).
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    concurrency: Vec<usize>,
    /// Targets to drive: `tollgate` is `tollgate serve` (the embedded default), `guarded` the same with
    /// every guard on (built-in injection rules on user and tool texts, request and response redaction),
    /// `gateway` is `tollgate gateway` (fleet mode) shipping to a `tollgate collector` started for it;
    /// `direct,bare` skips tollgate.
    #[arg(long, value_delimiter = ',', default_value = "direct,bare,tollgate,guarded,gateway")]
    only: Vec<Target>,
    /// tollgate-mock binary [default: next to this binary].
    #[arg(long)]
    mock: Option<PathBuf>,
    /// bareproxy binary [default: next to this binary].
    #[arg(long)]
    bareproxy: Option<PathBuf>,
    /// tollgate binary [default: next to this binary].
    #[arg(long)]
    tollgate: Option<PathBuf>,
    /// A second tollgate binary (e.g. built from an earlier commit), driven in the same run as the
    /// target `before`, so a change is compared with what it replaced under the same conditions.
    #[arg(long)]
    tollgate_before: Option<PathBuf>,
    /// Worker threads of the mock upstream.
    #[arg(long, default_value_t = 1)]
    mock_threads: usize,
    /// Worker threads of the bare proxy; 0 = one per core, like `#[tokio::main]`.
    #[arg(long, default_value_t = 0)]
    bare_threads: usize,
    /// Threads of this load driver's tokio runtime (1 = current_thread).
    #[arg(long, default_value_t = 1)]
    driver_threads: usize,
    /// Markdown file to update [default: bench/RESULTS.md in the source tree].
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Target {
    Direct,
    Bare,
    Tollgate,
    Guarded,
    Gateway,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    NonStream,
    Stream,
    NewConnection,
}

impl Scenario {
    /// (name in the tables, streamed, a new connection per request)
    fn spec(self) -> (&'static str, bool, bool) {
        match self {
            Scenario::NonStream => ("non-stream", false, false),
            Scenario::Stream => ("stream", true, false),
            Scenario::NewConnection => ("non-stream, new connection per request", false, true),
        }
    }
}

/// The guards of the `guarded` target: what a cautious platform team turns on.
const GUARDS: &str = r#"
[[guards]]
name = "injection"
builtin = ["all"]
roles = ["user", "tool"]
action = "block"

[redaction]
requests = "redact"
responses = "redact"
"#;

/// A temp directory removed on drop (declared before the children so it outlives them).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self> {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
        let p = std::env::temp_dir().join(format!("tollgate-bench-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p)?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.seconds == 0 || args.rounds == 0 || args.concurrency.is_empty() || args.concurrency.contains(&0) {
        bail!("--seconds, --rounds and every --concurrency value must be > 0");
    }
    if args.scenarios.is_empty() {
        bail!("--scenarios must name at least one scenario");
    }
    if !(0.0..=60.0).contains(&args.warmup) {
        bail!("--warmup must be within 0..=60 seconds");
    }
    let mut rt = if args.driver_threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(args.driver_threads);
        b
    };
    let rt = rt.enable_all().build()?;
    let busy_before = cpu_busy(Duration::from_secs(1));
    if busy_before.is_some_and(|b| b > 10.0) {
        eprintln!(
            "warning: the CPUs were {} busy before the run; other work on these cores skews the numbers",
            pct(busy_before)
        );
    }

    let bin_dir = std::env::current_exe()?.parent().map(Path::to_path_buf).context("no directory for current exe")?;
    let bin = |flag: &Option<PathBuf>, name: &str| flag.clone().unwrap_or_else(|| bin_dir.join(name));
    let tmp = TempDir::new()?;
    let start_timeout = Duration::from_secs(10);

    let mut mock_cmd = Command::new(bin(&args.mock, "tollgate-mock"));
    mock_cmd.args(["--listen", "127.0.0.1:0", "--threads", &args.mock_threads.to_string()]);
    let mut mock = ChildProc::start("tollgate-mock", mock_cmd, None, start_timeout)?;

    let mut bare = None;
    if args.only.contains(&Target::Bare) {
        let mut cmd = Command::new(bin(&args.bareproxy, "bareproxy"));
        cmd.args(["--listen", "127.0.0.1:0", "--upstream", &format!("http://{}", mock.addr)]);
        cmd.args(["--threads", &args.bare_threads.to_string()]);
        bare = Some(ChildProc::start("bareproxy", cmd, None, start_timeout)?);
    }

    let key = format!("tg-bench-{:016x}", SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64);
    // Start-up to the first request served, per gateway: spawn → `listening on` → first 200 answer.
    let mut startup: Vec<(&'static str, Duration)> = Vec::new();
    let mut start_gateway = |name: &'static str, binary: PathBuf, mode: &str, extra: &str| -> Result<ChildProc> {
        let addr = SocketAddr::from(([127, 0, 0, 1], procs::free_port()?));
        let config = tmp.0.join(format!("{name}.toml"));
        let text = gateway_config(addr, &tmp.0.join(format!("{name}-data")), mock.addr, &key) + extra;
        std::fs::write(&config, text)?;
        let mut cmd = Command::new(binary);
        cmd.arg(mode).arg("--config").arg(&config);
        let t0 = Instant::now();
        let p = ChildProc::start(name, cmd, Some(addr), Duration::from_secs(30))?;
        first_answer(p.addr, &key)?;
        startup.push((name, t0.elapsed()));
        Ok(p)
    };
    let mut tollgate = None;
    let mut before = None;
    let mut guarded = None;
    let mut collector = None;
    let mut fleet = None;
    if args.only.contains(&Target::Tollgate) {
        tollgate = Some(start_gateway("tollgate", bin(&args.tollgate, "tollgate"), "serve", "")?);
        if let Some(b) = &args.tollgate_before {
            before = Some(start_gateway("before", b.clone(), "serve", "")?);
        }
    }
    if args.only.contains(&Target::Guarded) {
        guarded = Some(start_gateway("guarded", bin(&args.tollgate, "tollgate"), "serve", GUARDS)?);
    }
    if args.only.contains(&Target::Gateway) {
        // The collector the fleet-mode gateway ships to (its own data dir, Parquet sink).
        let caddr = SocketAddr::from(([127, 0, 0, 1], procs::free_port()?));
        let config = tmp.0.join("collector.toml");
        let data = tmp.0.join("collector-data");
        std::fs::write(
            &config,
            format!("[storage]\ndata_dir = \"{}\"\n\n[collector]\nlisten = \"{caddr}\"\n", data.display()),
        )?;
        let mut cmd = Command::new(bin(&args.tollgate, "tollgate"));
        cmd.arg("collector").arg("--config").arg(&config);
        collector = Some(ChildProc::start("collector", cmd, Some(caddr), Duration::from_secs(30))?);
        let ship = format!("\n[shipping]\ncollector_url = \"http://{caddr}\"\n");
        fleet = Some(start_gateway("gateway", bin(&args.tollgate, "tollgate"), "gateway", &ship)?);
    }

    let mut targets: Vec<(&'static str, SocketAddr)> = Vec::new();
    if args.only.contains(&Target::Direct) {
        targets.push(("direct", mock.addr));
    }
    if let Some(b) = &bare {
        targets.push(("bare", b.addr));
    }
    if let Some(t) = &before {
        targets.push(("before", t.addr));
    }
    if let Some(t) = &tollgate {
        targets.push(("tollgate", t.addr));
    }
    if let Some(t) = &guarded {
        targets.push(("guarded", t.addr));
    }
    if let Some(t) = &fleet {
        targets.push(("gateway", t.addr));
    }
    let max_c = args.concurrency.iter().copied().max().unwrap_or(1);

    let mut rows = Vec::new();
    let mut rss = Vec::new();
    for (scenario, stream, fresh_connections) in args.scenarios.iter().map(|s| s.spec()) {
        for &c in &args.concurrency {
            for round in 0..args.rounds {
                // Each round another target goes first (the cyclic order stays), so no target always meets
                // the box first or last.
                let first = round % targets.len().max(1);
                for &(target, addr) in targets[first..].iter().chain(&targets[..first]) {
                    let process = match target {
                        "bare" => bare.as_ref(),
                        "tollgate" => tollgate.as_ref(),
                        "before" => before.as_ref(),
                        "gateway" => fleet.as_ref(),
                        "guarded" => guarded.as_ref(),
                        _ => None,
                    }
                    .map(|p| (p.name, p.pid()));
                    let spec = LoadSpec {
                        addr,
                        path: "/v1/chat/completions".into(),
                        body: Bytes::from_static(if stream { BODY_STREAM } else { BODY }.as_bytes()),
                        bearer: Some(format!("Bearer {key}")),
                        stream,
                        fresh_connections,
                        concurrency: c,
                        measure: Duration::from_secs(args.seconds),
                        expected_rps: EXPECTED_RPS,
                    };
                    let t_measure = Instant::now() + Duration::from_secs_f64(args.warmup);
                    let t_end = t_measure + spec.measure;
                    let (summary, cpu_s) = std::thread::scope(|scope| {
                        let sampler = process.map(|(_, pid)| scope.spawn(move || cpu_over(pid, t_measure, t_end)));
                        let summary = rt.block_on(load::run(spec, t_measure));
                        (summary, sampler.and_then(|h| h.join().ok()).flatten())
                    });
                    let summary = summary?;
                    let round_tag =
                        if args.rounds > 1 { format!(" r{}/{}", round + 1, args.rounds) } else { String::new() };
                    let cpu_tag = match (cpu_s, summary.requests) {
                        (Some(cpu), n) if n > 0 => format!(" cpu={:.1}µs/req", cpu * 1e6 / n as f64),
                        _ => String::new(),
                    };
                    eprintln!(
                        "{scenario:>10} c={c:<3}{round_tag} {target:<8} rps={:>8.0} p50={:>8.1}µs p99={:>8.1}µs n={} errors={}{cpu_tag}",
                        summary.rps,
                        summary.p50_us.unwrap_or(f64::NAN),
                        summary.p99_us.unwrap_or(f64::NAN),
                        summary.requests,
                        summary.errors
                    );
                    let procs = [&mut bare, &mut before, &mut tollgate, &mut guarded, &mut fleet, &mut collector];
                    for p in [Some(&mut mock)].into_iter().chain(procs.into_iter().map(Option::as_mut)).flatten() {
                        p.check_alive()?;
                    }
                    if let (true, Some((name, pid))) = (c == max_c, process) {
                        let (rss_kib, hwm_kib) = procs::rss_kib(pid)?;
                        rss.push(RssSample { process: name, after: format!("{scenario} c={c}"), rss_kib, hwm_kib });
                    }
                    rows.push(Row { scenario, stream, target, concurrency: c, round, summary, cpu_s });
                }
            }
        }
    }

    // The gateway's own measure of its request-path work (every phase before the upstream call and
    // after its headers), from the call events of the run.
    let mut overhead = Vec::new();
    for p in [before.as_ref(), tollgate.as_ref(), guarded.as_ref()].into_iter().flatten() {
        std::thread::sleep(Duration::from_millis(1500));
        match gateway_overhead(p.addr, &key) {
            Ok(line) => overhead.push(format!("`{}`: {line}", p.name)),
            Err(error) => eprintln!("warning: gateway_overhead_us of {} unavailable: {error}", p.name),
        }
    }
    let nproc = std::thread::available_parallelism().map_or(1, |n| n.get());
    let driver = if args.driver_threads <= 1 {
        "a current_thread".to_string()
    } else {
        format!("a {}-thread", args.driver_threads)
    };
    let each_target = if args.rounds > 1 {
        format!(
            "Each target: {} s measured after a {} s warm-up, per scenario and concurrency, in each of {} rounds: per \
             scenario and concurrency every target gets one window per round, in turn, the first one rotating per round. \
             RPS, latencies and CPU are the median over rounds (for an even count, the mean of the middle two); added, RPS ratio and ÷ bare are \
             computed within each round and their median shown; min–max is the range over rounds; errors are summed.",
            args.seconds, args.warmup, args.rounds
        )
    } else {
        format!(
            "Each target: {} s measured after a {} s warm-up, per scenario and concurrency;",
            args.seconds, args.warmup
        )
    };
    let with_cpu = rows.iter().any(|r| r.cpu_s.is_some());
    let fresh = if args.scenarios.contains(&Scenario::NewConnection) {
        " (in `new connection per request` each worker opens a new connection for every request and closes it \
         after the answer; its latency includes the connect)"
    } else {
        ""
    };
    let report = Report {
        date: utc_now()?,
        nproc,
        cpu_model: cpu_model(),
        command: repro_command(),
        rounds: args.rounds,
        setup: vec![
            format!(
                "{each_target} c workers each own one keep-alive HTTP/1 connection{fresh}; the driver runs on {driver} tokio \
                 runtime on the same {nproc} cores as the processes under test."
            ),
            format!(
                "Upstream: `tollgate-mock --threads {}` (5 content tokens, no delay). Request: `{BODY}` (plus \
                 `\"stream\":true`), with a bearer key. bare = `bareproxy --threads {}` (hyper pass-through, no metering; \
                 0 = one per core).",
                args.mock_threads, args.bare_threads
            ),
            format!(
                "Latency: request sent → last body byte read (streams: through `data: [DONE]`); first chunk = time to \
                 the first body chunk. Only requests that started and finished inside the window count. added = target \
                 − direct; RPS ratio = target ÷ direct; ÷ bare = target's RPS ÷ the bare proxy's in the same {}.",
                if args.rounds > 1 { "round" } else { "run" }
            ),
            format!(
                "CPU busy in the second before the run: {}; in the second after: {}; load average after: {}. \
                 Anything else running on these cores skews the numbers.",
                pct(busy_before),
                pct(cpu_busy(Duration::from_secs(1))),
                loadavg()
            ),
        ]
        .into_iter()
        .chain(with_cpu.then(|| {
            "CPU µs/req: user + system CPU time of the target's own process (all threads, /proc/PID/stat, in \
             clock ticks) over the measured window ÷ the requests completed in it; the mock upstream and the \
             driver are not counted, nor `gateway`'s collector; `direct` has no process of its own."
                .to_string()
        }))
        .chain((!overhead.is_empty()).then(|| {
            format!(
                "Phase chain per request, as the gateway measures it (`gateway_overhead_us` of the run's call \
                 events: authenticate, parse, admission, route, building the upstream request, and the response \
                 head): {}. `before` is `--tollgate-before`.",
                overhead.join("; ")
            )
        }))
        .collect(),
        rows,
        rss,
        startup,
    };
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/RESULTS.md")));
    let existing = std::fs::read_to_string(&out).ok();
    std::fs::write(&out, report::splice(existing.as_deref(), &report.render()))
        .with_context(|| format!("writing {}", out.display()))?;
    eprintln!("wrote {}", out.display());
    Ok(())
}

/// CPU seconds `pid` used between `from` and `to` (sleeping until each); `None` if /proc could not be read.
fn cpu_over(pid: u32, from: Instant, to: Instant) -> Option<f64> {
    std::thread::sleep(from.saturating_duration_since(Instant::now()));
    let start = procs::cpu_secs(pid).ok()?;
    std::thread::sleep(to.saturating_duration_since(Instant::now()));
    Some(procs::cpu_secs(pid).ok()? - start)
}

fn gateway_config(listen: SocketAddr, data_dir: &Path, mock: SocketAddr, key: &str) -> String {
    let hash = hex::encode(Sha256::digest(key.as_bytes()));
    format!(
        r#"[server]
listen = "{listen}"

[storage]
data_dir = "{data}"

[[upstreams]]
name = "mock"
kind = "openai_compatible"
base_url = "http://{mock}/v1"
models = ["gpt-4o-mini"]

[[keys]]
id = "bench"
hash = "sha256:{hash}"
department = "bench"
team = "perf"
query = true
"#,
        data = data_dir.display()
    )
}

/// Sends chat completions until one is answered 200 (a fresh gateway may still be opening its store).
fn first_answer(addr: SocketAddr, key: &str) -> Result<()> {
    use std::io::{Read, Write};
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut s = std::net::TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            s,
            "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {key}\r\n\
             content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{BODY}",
            BODY.len()
        )?;
        let mut resp = String::new();
        s.read_to_string(&mut resp)?;
        if resp.starts_with("HTTP/1.1 200") {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("no 200 answer from {addr} within 30 s; last: {}", resp.lines().next().unwrap_or(""));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Median and mean `gateway_overhead_us` of the successful calls a gateway stored, through `/v1/sql`.
fn gateway_overhead(addr: SocketAddr, key: &str) -> Result<String> {
    use std::io::{Read, Write};
    let sql = "SELECT median(gateway_overhead_us) AS p50, avg(gateway_overhead_us) AS mean, count(*) AS n \
               FROM calls WHERE outcome = 'ok'";
    let body = serde_json::json!({ "sql": sql }).to_string();
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "POST /v1/sql HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {key}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let json = resp.split_once("\r\n\r\n").map(|(_, b)| b).context("no HTTP body")?;
    let v: serde_json::Value = serde_json::from_str(json).with_context(|| format!("not JSON: {json}"))?;
    let row = &v["rows"][0];
    let num = |k: &str| row[k].as_f64().context("missing number");
    Ok(format!("p50 {:.0} µs, mean {:.1} µs over {} calls", num("p50")?, num("mean")?, num("n")?))
}

fn repro_command() -> String {
    let args: Vec<String> = std::env::args().skip(1).map(|a| shell_quote(&a)).collect();
    let mut cmd = format!("{REPRO_BUILD} && target/release/tollgate-bench");
    for a in args {
        cmd.push(' ');
        cmd.push_str(&a);
    }
    cmd
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.,/=:".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The 1, 5 and 15 minute load averages, to tell a quiet box from a busy one when reading results.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" / "))
        .unwrap_or_else(|| "unknown".into())
}

/// Percentage of all CPUs busy over `window`, from /proc/stat (user+nice+system+irq+softirq+steal).
fn cpu_busy(window: Duration) -> Option<f64> {
    fn sample() -> Option<(u64, u64)> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let f: Vec<u64> = stat.lines().next()?.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
        let total: u64 = f.iter().take(8).sum();
        let idle = f.get(3)? + f.get(4)?;
        Some((total, idle))
    }
    let (t0, i0) = sample()?;
    std::thread::sleep(window);
    let (t1, i1) = sample()?;
    let dt = t1.checked_sub(t0).filter(|d| *d > 0)?;
    Some(100.0 * (dt - (i1 - i0).min(dt)) as f64 / dt as f64)
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "unknown".into(), |v| format!("{v:.0}%"))
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn utc_now() -> Result<String> {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    Ok(format!("{y:04}-{m:02}-{d:02} {:02}:{:02} UTC", rem / 3600, rem % 3600 / 60))
}

/// Days since 1970-01-01 → (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(20_454), (2026, 1, 1));
    }

    #[test]
    fn config_hashes_the_key() {
        let cfg =
            gateway_config("127.0.0.1:1".parse().unwrap(), Path::new("/tmp/d"), "127.0.0.1:2".parse().unwrap(), "abc");
        assert!(cfg.contains("sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
        assert!(cfg.contains(r#"base_url = "http://127.0.0.1:2/v1""#));
        assert!(cfg.contains(r#"listen = "127.0.0.1:1""#));
    }
}
