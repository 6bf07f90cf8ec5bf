//! Renders one run (one or more rounds) as markdown and splices it into RESULTS.md between this tool's markers.

use std::fmt::Write as _;

use crate::rounds::RoundsView;
use crate::stats::{added, rps_ratio, RunSummary, Spread};

pub const BEGIN: &str = "<!-- gateway-bench:begin -->";
pub const END: &str = "<!-- gateway-bench:end -->";

/// Issue 17's targets, all against the bare proxy of the same run (direct is printed for reference: on
/// a 2-core box the mock, the proxy and the driver share the cores, so even a bare proxy is far from it).
/// At c=1, p50 added over the bare proxy.
pub const TARGET_ADDED_P50_OVER_BARE_US: f64 = 20.0;
/// At c=1, p99 at most this many times the bare proxy's.
pub const TARGET_P99_TIMES_BARE: f64 = 2.0;
/// At c=32, RPS at least this share of the bare proxy's.
pub const TARGET_RPS_OF_BARE: f64 = 0.80;
/// RSS after c=32, per mode: `tollgate serve` and `tollgate gateway`.
pub const TARGET_RSS_SERVE_MIB: f64 = 60.0;
pub const TARGET_RSS_GATEWAY_MIB: f64 = 30.0;
/// The gateways a run can have, with their RSS target.
const GATEWAYS: [(&str, f64); 4] = [
    ("tollgate", TARGET_RSS_SERVE_MIB),
    ("guarded", TARGET_RSS_SERVE_MIB),
    ("gateway", TARGET_RSS_GATEWAY_MIB),
    ("before", TARGET_RSS_SERVE_MIB),
];

/// A line of the tables: (scenario, target, concurrency).
type Key = (&'static str, &'static str, usize);

/// One measured window: a target at one concurrency in one scenario, in one round.
pub struct Row {
    pub scenario: &'static str,
    pub stream: bool,
    pub target: &'static str,
    pub concurrency: usize,
    /// Which round of the run (from 0); each round gives every target one window per scenario and c.
    pub round: usize,
    pub summary: RunSummary,
    /// CPU seconds (user + system) the target's own process used over the measured window; `None` for
    /// `direct` (no process of its own) or when /proc could not be read.
    pub cpu_s: Option<f64>,
}

impl Row {
    /// CPU microseconds per request completed in the window.
    pub fn cpu_us_per_req(&self) -> Option<f64> {
        let cpu = self.cpu_s?;
        (self.summary.requests > 0).then(|| cpu * 1e6 / self.summary.requests as f64)
    }
}

/// Memory of a child process sampled right after a high-concurrency run.
pub struct RssSample {
    pub process: &'static str,
    pub after: String,
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

pub struct Report {
    pub date: String,
    pub nproc: usize,
    pub cpu_model: String,
    pub command: String,
    pub setup: Vec<String>,
    /// How many rounds the rows come from; above 1 the tables show medians over rounds and their range.
    pub rounds: usize,
    pub rows: Vec<Row>,
    pub rss: Vec<RssSample>,
    /// Spawn → first request answered, per gateway.
    pub startup: Vec<(&'static str, std::time::Duration)>,
}

fn us(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |x| format!("{x:.1}"))
}

fn signed_us(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |x| format!("{x:+.1}"))
}

fn two(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |x| format!("{x:.2}"))
}

fn median(v: Option<Spread>) -> Option<f64> {
    v.map(|s| s.median)
}

/// `min–max` of a value over rounds, `decimals` after the point.
fn range(v: Option<Spread>, decimals: usize) -> String {
    v.map_or_else(|| "–".into(), |s| format!("{:.decimals$}–{:.decimals$}", s.min, s.max))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn mark(met: bool) -> &'static str {
    if met {
        "**met**"
    } else {
        "**not met**"
    }
}

/// The scenarios the target lines are checked in.
const TARGET_SCENARIOS: [&str; 2] = ["non-stream", "stream"];

impl Report {
    fn view(&self) -> RoundsView<'_> {
        RoundsView(&self.rows)
    }

    /// After a figure that is a median over rounds, say so and give its range; nothing for a single round.
    fn over_rounds(&self, v: Spread, fmt: impl Fn(f64) -> String) -> String {
        if self.rounds <= 1 {
            return String::new();
        }
        format!(" (median of {} rounds, range {} to {})", v.n, fmt(v.min), fmt(v.max))
    }

    /// Scenarios, and (scenario, target, c) in the order they were first measured.
    fn keys(&self) -> (Vec<(&'static str, bool)>, Vec<Key>) {
        let mut scenarios: Vec<(&'static str, bool)> = Vec::new();
        let mut keys = Vec::new();
        for r in &self.rows {
            if !scenarios.iter().any(|(n, _)| *n == r.scenario) {
                scenarios.push((r.scenario, r.stream));
            }
            let key = (r.scenario, r.target, r.concurrency);
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        (scenarios, keys)
    }

    /// The markdown block, markers included.
    pub fn render(&self) -> String {
        let multi = self.rounds > 1;
        let with_cpu = self.rows.iter().any(|r| r.cpu_s.is_some());
        let v = self.view();
        let mut s = String::new();
        let _ = writeln!(s, "{BEGIN}");
        let _ = writeln!(s, "## Gateway overhead: direct vs bare proxy vs tollgate\n");
        let _ = writeln!(s, "- Date: {}", self.date);
        let _ = writeln!(s, "- Machine: {} cores (nproc), {}", self.nproc, self.cpu_model);
        let _ = writeln!(s, "- Reproduce: `{}`", self.command);
        for line in &self.setup {
            let _ = writeln!(s, "- {line}");
        }
        let _ = writeln!(s);

        let (scenarios, keys) = self.keys();
        for (scenario, stream) in &scenarios {
            let _ = writeln!(s, "### {scenario}\n");
            let mut head = "| target | c | RPS |".to_string();
            let mut rule = "|---|--:|--:|".to_string();
            if multi {
                head.push_str(" RPS min–max |");
                rule.push_str("--:|");
            }
            head.push_str(" p50 µs | p99 µs | added p50 µs | added p99 µs | RPS ratio | ÷ bare |");
            rule.push_str("--:|--:|--:|--:|--:|--:|");
            if multi {
                head.push_str(" ÷ bare min–max |");
                rule.push_str("--:|");
            }
            if *stream {
                head.push_str(" first chunk p50 µs | first chunk p99 µs |");
                rule.push_str("--:|--:|");
            }
            head.push_str(if multi { " errors (all rounds) |" } else { " errors |" });
            rule.push_str("--:|");
            if with_cpu {
                head.push_str(" CPU µs/req |");
                rule.push_str("--:|");
            }
            let _ = writeln!(s, "{head}\n{rule}");
            for &(_, target, c) in keys.iter().filter(|(sc, _, _)| sc == scenario) {
                let each = |f: fn(&Row) -> Option<f64>| v.each(scenario, target, c, f);
                let rps = each(|r| Some(r.summary.rps));
                let (a50, a99, ratio) = if target == "direct" {
                    (None, None, None)
                } else {
                    (
                        v.paired(scenario, target, "direct", c, |x, d| added(x.summary.p50_us, d.summary.p50_us)),
                        v.paired(scenario, target, "direct", c, |x, d| added(x.summary.p99_us, d.summary.p99_us)),
                        v.paired(scenario, target, "direct", c, |x, d| rps_ratio(x.summary.rps, d.summary.rps)),
                    )
                };
                let of_bare = match target {
                    "direct" | "bare" => None,
                    _ => v.paired(scenario, target, "bare", c, |x, b| rps_ratio(x.summary.rps, b.summary.rps)),
                };
                let rps_text = median(rps).map_or_else(|| "–".into(), |x| format!("{x:.0}"));
                let _ = write!(s, "| {target} | {c} | {rps_text} |");
                if multi {
                    let _ = write!(s, " {} |", range(rps, 0));
                }
                let _ = write!(
                    s,
                    " {} | {} | {} | {} | {} | {} |",
                    us(median(each(|r| r.summary.p50_us))),
                    us(median(each(|r| r.summary.p99_us))),
                    signed_us(median(a50)),
                    signed_us(median(a99)),
                    two(median(ratio)),
                    two(median(of_bare)),
                );
                if multi {
                    let _ = write!(s, " {} |", range(of_bare, 2));
                }
                if *stream {
                    let _ = write!(
                        s,
                        " {} | {} |",
                        us(median(each(|r| r.summary.ttfb_p50_us))),
                        us(median(each(|r| r.summary.ttfb_p99_us)))
                    );
                }
                let _ = write!(s, " {} |", v.errors(scenario, target, c));
                if with_cpu {
                    let _ = write!(s, " {} |", us(median(each(Row::cpu_us_per_req))));
                }
                let _ = writeln!(s);
            }
            let _ = writeln!(s);
        }

        // The largest of each process's samples over the rounds, per sampling point.
        let mut rss: Vec<(&'static str, &str, u64, u64)> = Vec::new();
        for m in &self.rss {
            match rss.iter_mut().find(|(p, after, _, _)| *p == m.process && *after == m.after) {
                Some(e) => {
                    e.2 = e.2.max(m.rss_kib);
                    e.3 = e.3.max(m.hwm_kib);
                }
                None => rss.push((m.process, &m.after, m.rss_kib, m.hwm_kib)),
            }
        }
        if multi {
            let _ = writeln!(
                s,
                "### Memory (sampled at the end of the highest-concurrency runs; the largest over {} rounds)\n",
                self.rounds
            );
        } else {
            let _ = writeln!(s, "### Memory (sampled at the end of the highest-concurrency runs)\n");
        }
        if rss.is_empty() {
            let _ = writeln!(s, "Not sampled (no proxy ran at high concurrency).\n");
        } else {
            let _ = writeln!(s, "| process | after | VmRSS MiB | VmHWM MiB |\n|---|---|--:|--:|");
            for (process, after, rss_kib, hwm_kib) in &rss {
                let _ = writeln!(s, "| {process} | {after} | {:.1} | {:.1} |", mib(*rss_kib), mib(*hwm_kib));
            }
            let _ = writeln!(s);
        }

        if !self.startup.is_empty() {
            let _ = writeln!(s, "### Start-up (spawn → `listening on` → first chat completion answered 200)\n");
            let _ = writeln!(s, "| process | ms |\n|---|--:|");
            for (name, d) in &self.startup {
                let _ = writeln!(s, "| {name} | {:.1} |", d.as_secs_f64() * 1000.0);
            }
            let _ = writeln!(s);
        }
        if multi {
            let _ = writeln!(
                s,
                "### Targets (issue 17: against the bare proxy of this run; each figure is the median over the {} \
                 rounds of the comparison made within a round)\n",
                self.rounds
            );
        } else {
            let _ = writeln!(s, "### Targets (issue 17: against the bare proxy of this run)\n");
        }
        let mut any = false;
        for (gw, rss_target) in GATEWAYS {
            if !self.rows.iter().any(|r| r.target == gw) {
                continue;
            }
            any = true;
            // The lines are for clients that keep their connections.
            for (scenario, _) in scenarios.iter().filter(|(n, _)| TARGET_SCENARIOS.contains(n)) {
                self.target_lines(&mut s, gw, scenario);
            }
            let peak = self.rss.iter().filter(|m| m.process == gw).map(|m| m.rss_kib).max();
            let hwm = self.rss.iter().filter(|m| m.process == gw).map(|m| m.hwm_kib).max();
            let largest = if multi { format!(", the largest over {} rounds", self.rounds) } else { String::new() };
            let line = match (peak, hwm) {
                (Some(p), Some(h)) => format!(
                    "VmRSS {:.1} MiB (VmHWM {:.1} MiB{largest}) — {}",
                    mib(p),
                    mib(h),
                    mark(mib(p) <= rss_target)
                ),
                _ => "not sampled".into(),
            };
            let _ = writeln!(s, "- `{gw}`: RSS ≤ {rss_target:.0} MiB after c=32: {line}");
        }
        if !any {
            let _ = writeln!(s, "Not evaluated: no tollgate process was part of this run (`--only`).");
        }
        let _ = writeln!(s);
        if self.rows.iter().any(|r| r.target == "before") && self.rows.iter().any(|r| r.target == "tollgate") {
            self.before_lines(&mut s, &keys);
        }
        let _ = writeln!(s, "{END}");
        s
    }
}

impl Report {
    /// The c=1 latency and c=32 throughput targets of one gateway in one scenario.
    fn target_lines(&self, s: &mut String, gw: &str, scenario: &str) {
        let v = self.view();
        let line = if v.ran(scenario, gw, 1) && v.ran(scenario, "bare", 1) {
            let a = v.paired(scenario, gw, "bare", 1, |t, b| added(t.summary.p50_us, b.summary.p50_us));
            let times = v.paired(scenario, gw, "bare", 1, |t, b| {
                let (tp, bp) = t.summary.p99_us.zip(b.summary.p99_us)?;
                (bp > 0.0).then(|| tp / bp)
            });
            match (a, times) {
                (Some(a), Some(times)) => format!(
                    "p50 {:+.1} µs over bare{} — {}; p99 {:.2}× bare's{} — {}",
                    a.median,
                    self.over_rounds(a, |x| format!("{x:+.1}")),
                    mark(a.median <= TARGET_ADDED_P50_OVER_BARE_US),
                    times.median,
                    self.over_rounds(times, |x| format!("{x:.2}")),
                    mark(times.median <= TARGET_P99_TIMES_BARE)
                ),
                _ => "no samples — **not met**".into(),
            }
        } else {
            "not measured (needs bare and this gateway at c=1)".into()
        };
        let _ = writeln!(
            s,
            "- `{gw}`, {scenario}, c=1: added p50 ≤ {TARGET_ADDED_P50_OVER_BARE_US:.0} µs, p99 ≤ \
             {TARGET_P99_TIMES_BARE:.0}× bare: {line}"
        );
        let line = if v.ran(scenario, gw, 32) && v.ran(scenario, "bare", 32) {
            match v.paired(scenario, gw, "bare", 32, |t, b| rps_ratio(t.summary.rps, b.summary.rps)) {
                Some(r) => format!(
                    "{:.2}×{} — {}",
                    r.median,
                    self.over_rounds(r, |x| format!("{x:.2}")),
                    mark(r.median >= TARGET_RPS_OF_BARE)
                ),
                None => "bare made no requests — **not met**".into(),
            }
        } else {
            "not measured (needs bare and this gateway at c=32)".into()
        };
        let _ = writeln!(s, "- `{gw}`, {scenario}, c=32: RPS ≥ {TARGET_RPS_OF_BARE:.1}× bare: {line}");
    }

    /// `tollgate` against `before` (the `--tollgate-before` binary), compared within each round.
    fn before_lines(&self, s: &mut String, keys: &[Key]) {
        let v = self.view();
        if self.rounds > 1 {
            let _ = writeln!(
                s,
                "### tollgate vs before (each figure the median over the {} rounds of the comparison made within \
                 a round)\n",
                self.rounds
            );
        } else {
            let _ = writeln!(s, "### tollgate vs before (same run)\n");
        }
        for &(scenario, _, c) in keys.iter().filter(|(_, t, _)| *t == "tollgate") {
            let pair = |f: fn(&Row, &Row) -> Option<f64>| v.paired(scenario, "tollgate", "before", c, f);
            let mut parts = Vec::new();
            if let Some(r) = pair(|t, b| rps_ratio(t.summary.rps, b.summary.rps)) {
                parts.push(format!("RPS {:.2}× before's{}", r.median, self.over_rounds(r, |x| format!("{x:.2}"))));
            }
            if let Some(d) = pair(|t, b| added(t.summary.p50_us, b.summary.p50_us)) {
                parts.push(format!("p50 {:+.1} µs{}", d.median, self.over_rounds(d, |x| format!("{x:+.1}"))));
            }
            if let Some(r) = pair(|t, b| {
                let (tc, bc) = t.cpu_us_per_req().zip(b.cpu_us_per_req())?;
                (bc > 0.0).then(|| tc / bc)
            }) {
                parts.push(format!("CPU/req {:.2}× before's{}", r.median, self.over_rounds(r, |x| format!("{x:.2}"))));
            }
            let line = if parts.is_empty() { "not measured".into() } else { parts.join("; ") };
            let _ = writeln!(s, "- {scenario}, c={c}: {line}");
        }
        let _ = writeln!(s);
    }
}

/// Replaces this tool's block in `existing` (or appends it), leaving everything else as it was.
pub fn splice(existing: Option<&str>, block: &str) -> String {
    let Some(existing) = existing else {
        return format!("# Benchmark results\n\n{block}");
    };
    if let (Some(b), Some(e)) = (existing.find(BEGIN), existing.find(END)) {
        if b < e {
            let after = &existing[e + END.len()..];
            let after = after.strip_prefix('\n').unwrap_or(after);
            return format!("{}{block}{after}", &existing[..b]);
        }
    }
    let sep = if existing.is_empty() || existing.ends_with("\n\n") {
        ""
    } else if existing.ends_with('\n') {
        "\n"
    } else {
        "\n\n"
    };
    format!("{existing}{sep}{block}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splice_creates_replaces_and_appends() {
        let block = format!("{BEGIN}\nnew\n{END}\n");
        assert_eq!(splice(None, &block), format!("# Benchmark results\n\n{block}"));

        let old = format!("# R\n\nintro\n\n{BEGIN}\nold\n{END}\n\n## criterion\nkept\n");
        assert_eq!(splice(Some(&old), &block), format!("# R\n\nintro\n\n{block}\n## criterion\nkept\n"));

        let plain = "# R\n\nother section\n";
        assert_eq!(splice(Some(plain), &block), format!("{plain}\n{block}"));
    }

    fn summary(rps: f64, p50: f64, p99: f64) -> RunSummary {
        RunSummary {
            requests: 1,
            errors: 0,
            rps,
            p50_us: Some(p50),
            p99_us: Some(p99),
            ttfb_p50_us: None,
            ttfb_p99_us: None,
        }
    }

    #[test]
    fn render_marks_targets() {
        let rows = [
            ("direct", 1, 10_000.0, 50.0),
            ("bare", 1, 9_000.0, 100.0),
            ("tollgate", 1, 8_000.0, 115.0),
            ("gateway", 1, 8_000.0, 130.0),
            ("direct", 32, 40_000.0, 500.0),
            ("bare", 32, 20_000.0, 900.0),
            ("tollgate", 32, 17_000.0, 1000.0),
            ("gateway", 32, 15_000.0, 1200.0),
        ]
        .into_iter()
        .map(|(target, c, rps, p50)| Row {
            scenario: "non-stream",
            stream: false,
            target,
            concurrency: c,
            round: 0,
            summary: summary(rps, p50, p50 * 2.0),
            cpu_s: None,
        })
        .collect();
        let r = Report {
            date: "d".into(),
            nproc: 2,
            cpu_model: "cpu".into(),
            command: "cmd".into(),
            setup: vec![],
            rounds: 1,
            rows,
            rss: vec![
                RssSample { process: "tollgate", after: "x".into(), rss_kib: 50 * 1024, hwm_kib: 55 * 1024 },
                RssSample { process: "gateway", after: "x".into(), rss_kib: 31 * 1024, hwm_kib: 32 * 1024 },
            ],
            startup: vec![("tollgate", std::time::Duration::from_millis(12))],
        };
        let md = r.render();
        assert!(md.contains("| tollgate | 1 | 8000 | 115.0 | 230.0 | +65.0 | +130.0 | 0.80 | 0.89 | 0 |"), "{md}");
        assert!(md.contains("`tollgate`, non-stream, c=1: added p50 ≤ 20 µs, p99 ≤ 2× bare: p50 +15.0 µs over bare — **met**; p99 1.15× bare's — **met**"), "{md}");
        assert!(
            md.contains(
                "`gateway`, non-stream, c=1: added p50 ≤ 20 µs, p99 ≤ 2× bare: p50 +30.0 µs over bare — **not met**"
            ),
            "{md}"
        );
        assert!(md.contains("`tollgate`, non-stream, c=32: RPS ≥ 0.8× bare: 0.85× — **met**"), "{md}");
        assert!(md.contains("`gateway`, non-stream, c=32: RPS ≥ 0.8× bare: 0.75× — **not met**"), "{md}");
        assert!(md.contains("`tollgate`: RSS ≤ 60 MiB after c=32: VmRSS 50.0 MiB (VmHWM 55.0 MiB) — **met**"), "{md}");
        assert!(
            md.contains("`gateway`: RSS ≤ 30 MiB after c=32: VmRSS 31.0 MiB (VmHWM 32.0 MiB) — **not met**"),
            "{md}"
        );
        assert!(md.contains("| tollgate | 12.0 |"), "{md}");
    }

    fn report(rounds: usize, rows: Vec<Row>, rss: Vec<RssSample>) -> Report {
        Report {
            date: "d".into(),
            nproc: 2,
            cpu_model: "cpu".into(),
            command: "cmd".into(),
            setup: vec!["s1".into()],
            rounds,
            rows,
            rss,
            startup: vec![],
        }
    }

    /// With one round the block is what the bench wrote before rounds existed (no CPU data: no CPU column).
    #[test]
    fn one_round_renders_as_before() {
        let rows = [("direct", 10_000.0, 50.0), ("bare", 9_000.0, 100.0), ("tollgate", 8_000.0, 115.0)]
            .into_iter()
            .map(|(target, rps, p50)| Row {
                scenario: "non-stream",
                stream: false,
                target,
                concurrency: 1,
                round: 0,
                summary: summary(rps, p50, p50 * 2.0),
                cpu_s: None,
            })
            .collect();
        let rss = vec![RssSample {
            process: "tollgate",
            after: "non-stream c=1".into(),
            rss_kib: 50 * 1024,
            hwm_kib: 55 * 1024,
        }];
        let want = "<!-- gateway-bench:begin -->
## Gateway overhead: direct vs bare proxy vs tollgate

- Date: d
- Machine: 2 cores (nproc), cpu
- Reproduce: `cmd`
- s1

### non-stream

| target | c | RPS | p50 µs | p99 µs | added p50 µs | added p99 µs | RPS ratio | ÷ bare | errors |
|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|
| direct | 1 | 10000 | 50.0 | 100.0 | – | – | – | – | 0 |
| bare | 1 | 9000 | 100.0 | 200.0 | +50.0 | +100.0 | 0.90 | – | 0 |
| tollgate | 1 | 8000 | 115.0 | 230.0 | +65.0 | +130.0 | 0.80 | 0.89 | 0 |

### Memory (sampled at the end of the highest-concurrency runs)

| process | after | VmRSS MiB | VmHWM MiB |
|---|---|--:|--:|
| tollgate | non-stream c=1 | 50.0 | 55.0 |

### Targets (issue 17: against the bare proxy of this run)

- `tollgate`, non-stream, c=1: added p50 ≤ 20 µs, p99 ≤ 2× bare: p50 +15.0 µs over bare — **met**; p99 1.15× bare's — **met**
- `tollgate`, non-stream, c=32: RPS ≥ 0.8× bare: not measured (needs bare and this gateway at c=32)
- `tollgate`: RSS ≤ 60 MiB after c=32: VmRSS 50.0 MiB (VmHWM 55.0 MiB) — **met**

<!-- gateway-bench:end -->
";
        assert_eq!(report(1, rows, rss).render(), want);
    }

    /// One window: `requests` = RPS (1 s windows), p99 = 2 × p50, `round` errors, `cpu_s` CPU seconds.
    fn win(target: &'static str, c: usize, round: usize, rps: f64, p50: f64, cpu_s: Option<f64>) -> Row {
        Row {
            scenario: "non-stream",
            stream: false,
            target,
            concurrency: c,
            round,
            summary: RunSummary {
                requests: rps as usize,
                errors: round as u64,
                rps,
                p50_us: Some(p50),
                p99_us: Some(p50 * 2.0),
                ttfb_p50_us: None,
                ttfb_p99_us: None,
            },
            cpu_s,
        }
    }

    #[test]
    fn rounds_render_medians_of_paired_comparisons() {
        // Round 1 runs on a slower box than rounds 0 and 2; the order of targets rotates per round.
        let rows = vec![
            win("direct", 1, 0, 10_000.0, 50.0, None),
            win("bare", 1, 0, 9_000.0, 100.0, Some(0.09)),
            win("tollgate", 1, 0, 8_000.0, 115.0, Some(0.16)),
            win("bare", 1, 1, 5_000.0, 200.0, Some(0.05)),
            win("tollgate", 1, 1, 4_000.0, 210.0, Some(0.08)),
            win("direct", 1, 1, 6_000.0, 90.0, None),
            win("tollgate", 1, 2, 7_000.0, 150.0, Some(0.14)),
            win("direct", 1, 2, 9_000.0, 60.0, None),
            win("bare", 1, 2, 8_000.0, 120.0, Some(0.08)),
            win("direct", 32, 0, 34_000.0, 500.0, None),
            win("bare", 32, 0, 20_000.0, 900.0, Some(0.1)),
            win("before", 32, 0, 16_500.0, 1_100.0, Some(0.33)),
            win("tollgate", 32, 0, 17_000.0, 1_000.0, Some(0.34)),
            win("bare", 32, 1, 10_000.0, 1_300.0, Some(0.05)),
            win("before", 32, 1, 5_000.0, 1_400.0, Some(0.15)),
            win("tollgate", 32, 1, 6_000.0, 1_500.0, Some(0.15)),
            win("direct", 32, 1, 20_000.0, 600.0, None),
            win("before", 32, 2, 15_000.0, 1_000.0, Some(0.30)),
            win("tollgate", 32, 2, 13_500.0, 1_100.0, Some(0.27)),
            win("direct", 32, 2, 27_000.0, 550.0, None),
            win("bare", 32, 2, 15_000.0, 1_000.0, Some(0.075)),
        ];
        let rss = [(50, 55), (58, 57), (52, 61)]
            .into_iter()
            .map(|(rss, hwm)| RssSample {
                process: "tollgate",
                after: "non-stream c=32".into(),
                rss_kib: rss * 1024,
                hwm_kib: hwm * 1024,
            })
            .collect();
        let md = report(3, rows, rss).render();

        let head = "| target | c | RPS | RPS min–max | p50 µs | p99 µs | added p50 µs | added p99 µs | RPS ratio | \
                    ÷ bare | ÷ bare min–max | errors (all rounds) | CPU µs/req |";
        assert!(md.contains(head), "{md}");
        // RPS 17000/6000/13500; ÷ bare per round 0.85/0.60/0.90 (the ratio of the medians would be 0.90);
        // ÷ direct per round 0.50/0.30/0.50; p50 − direct's per round +500/+900/+550; CPU 20/25/20 µs.
        let row = "| tollgate | 32 | 13500 | 6000–17000 | 1100.0 | 2200.0 | +550.0 | +1100.0 | 0.50 | 0.85 | \
                   0.60–0.90 | 3 | 20.0 |";
        assert!(md.contains(row), "{md}");
        assert!(
            md.contains("| direct | 32 | 27000 | 20000–34000 | 550.0 | 1100.0 | – | – | – | – | – | 3 | – |"),
            "{md}"
        );
        assert!(md.contains("| bare | 32 | 15000 | 10000–20000 |"), "{md}");

        // Added p50 over bare per round +15/+10/+30; p99 × bare per round 1.15/1.05/1.25.
        assert!(
            md.contains(
                "- `tollgate`, non-stream, c=1: added p50 ≤ 20 µs, p99 ≤ 2× bare: p50 +15.0 µs over bare (median \
                 of 3 rounds, range +10.0 to +30.0) — **met**; p99 1.15× bare's (median of 3 rounds, range 1.05 to \
                 1.25) — **met**"
            ),
            "{md}"
        );
        assert!(
            md.contains(
                "- `tollgate`, non-stream, c=32: RPS ≥ 0.8× bare: 0.85× (median of 3 rounds, range 0.60 to 0.90) \
                 — **met**"
            ),
            "{md}"
        );
        assert!(md.contains("the median over the 3 rounds of the comparison made within a round"), "{md}");

        // Memory: the largest RSS and the largest HWM over the rounds, one line per sampling point.
        assert!(md.contains("the largest over 3 rounds)\n"), "{md}");
        assert_eq!(md.matches("| tollgate | non-stream c=32 |").count(), 1, "{md}");
        assert!(md.contains("| tollgate | non-stream c=32 | 58.0 | 61.0 |"), "{md}");
        assert!(md.contains("VmRSS 58.0 MiB (VmHWM 61.0 MiB, the largest over 3 rounds) — **met**"), "{md}");

        // tollgate ÷ before per round: RPS 1.03/1.2/0.9; p50 −100/+100/+100 µs; CPU/req 20÷20, 25÷30, 20÷20.
        assert!(
            md.contains(
                "- non-stream, c=32: RPS 1.03× before's (median of 3 rounds, range 0.90 to 1.20); p50 +100.0 µs \
                 (median of 3 rounds, range -100.0 to +100.0); CPU/req 1.00× before's (median of 3 rounds, range \
                 0.83 to 1.00)"
            ),
            "{md}"
        );
        assert!(md.contains("- non-stream, c=1: not measured\n"), "{md}");
    }
}
