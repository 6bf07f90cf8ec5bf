//! Renders one run as markdown and splices it into RESULTS.md between this tool's markers.

use std::fmt::Write as _;

use crate::stats::{added, rps_ratio, RunSummary};

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

/// One measured row: a target at one concurrency in one scenario.
pub struct Row {
    pub scenario: &'static str,
    pub stream: bool,
    pub target: &'static str,
    pub concurrency: usize,
    pub summary: RunSummary,
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

impl Report {
    fn direct(&self, scenario: &str, c: usize) -> Option<&RunSummary> {
        self.rows
            .iter()
            .find(|r| r.scenario == scenario && r.concurrency == c && r.target == "direct")
            .map(|r| &r.summary)
    }

    fn find(&self, scenario: &str, target: &str, c: usize) -> Option<&RunSummary> {
        self.rows
            .iter()
            .find(|r| r.scenario == scenario && r.concurrency == c && r.target == target)
            .map(|r| &r.summary)
    }

    /// The markdown block, markers included.
    pub fn render(&self) -> String {
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

        let mut scenarios: Vec<(&'static str, bool)> = Vec::new();
        for r in &self.rows {
            if !scenarios.iter().any(|(n, _)| *n == r.scenario) {
                scenarios.push((r.scenario, r.stream));
            }
        }
        for (scenario, stream) in &scenarios {
            let _ = writeln!(s, "### {scenario}\n");
            let mut head =
                "| target | c | RPS | p50 µs | p99 µs | added p50 µs | added p99 µs | RPS ratio | ÷ bare |".to_string();
            let mut rule = "|---|--:|--:|--:|--:|--:|--:|--:|--:|".to_string();
            if *stream {
                head.push_str(" first chunk p50 µs | first chunk p99 µs |");
                rule.push_str("--:|--:|");
            }
            head.push_str(" errors |");
            rule.push_str("--:|");
            let _ = writeln!(s, "{head}\n{rule}");
            for r in self.rows.iter().filter(|r| r.scenario == *scenario) {
                let d = self.direct(scenario, r.concurrency);
                let x = &r.summary;
                let (a50, a99, ratio) = if r.target == "direct" {
                    (None, None, None)
                } else {
                    (
                        d.and_then(|d| added(x.p50_us, d.p50_us)),
                        d.and_then(|d| added(x.p99_us, d.p99_us)),
                        d.and_then(|d| rps_ratio(x.rps, d.rps)),
                    )
                };
                let ratio = ratio.map_or_else(|| "–".into(), |v| format!("{v:.2}"));
                let of_bare = match (r.target, self.find(scenario, "bare", r.concurrency)) {
                    ("direct" | "bare", _) | (_, None) => None,
                    (_, Some(b)) => rps_ratio(x.rps, b.rps),
                };
                let of_bare = of_bare.map_or_else(|| "–".into(), |v| format!("{v:.2}"));
                let _ = write!(
                    s,
                    "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {} |",
                    r.target,
                    r.concurrency,
                    x.rps,
                    us(x.p50_us),
                    us(x.p99_us),
                    signed_us(a50),
                    signed_us(a99),
                    ratio,
                    of_bare
                );
                if *stream {
                    let _ = write!(s, " {} | {} |", us(x.ttfb_p50_us), us(x.ttfb_p99_us));
                }
                let _ = writeln!(s, " {} |", x.errors);
            }
            let _ = writeln!(s);
        }

        let _ = writeln!(s, "### Memory (sampled at the end of the highest-concurrency runs)\n");
        if self.rss.is_empty() {
            let _ = writeln!(s, "Not sampled (no proxy ran at high concurrency).\n");
        } else {
            let _ = writeln!(s, "| process | after | VmRSS MiB | VmHWM MiB |\n|---|---|--:|--:|");
            for m in &self.rss {
                let _ = writeln!(s, "| {} | {} | {:.1} | {:.1} |", m.process, m.after, mib(m.rss_kib), mib(m.hwm_kib));
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
        let _ = writeln!(s, "### Targets (issue 17: against the bare proxy of this run)\n");
        let mut any = false;
        for (gw, rss_target) in GATEWAYS {
            if !self.rows.iter().any(|r| r.target == gw) {
                continue;
            }
            any = true;
            for (scenario, _) in &scenarios {
                self.target_lines(&mut s, gw, scenario);
            }
            let peak = self.rss.iter().filter(|m| m.process == gw).map(|m| m.rss_kib).max();
            let hwm = self.rss.iter().filter(|m| m.process == gw).map(|m| m.hwm_kib).max();
            let line = match (peak, hwm) {
                (Some(p), Some(h)) => {
                    format!("VmRSS {:.1} MiB (VmHWM {:.1} MiB) — {}", mib(p), mib(h), mark(mib(p) <= rss_target))
                }
                _ => "not sampled".into(),
            };
            let _ = writeln!(s, "- `{gw}`: RSS ≤ {rss_target:.0} MiB after c=32: {line}");
        }
        if !any {
            let _ = writeln!(s, "Not evaluated: no tollgate process was part of this run (`--only`).");
        }
        let _ = writeln!(s);
        let _ = writeln!(s, "{END}");
        s
    }
}

impl Report {
    /// The c=1 latency and c=32 throughput targets of one gateway in one scenario.
    fn target_lines(&self, s: &mut String, gw: &str, scenario: &str) {
        let line = match (self.find(scenario, gw, 1), self.find(scenario, "bare", 1)) {
            (Some(t), Some(b)) => match (added(t.p50_us, b.p50_us), t.p99_us.zip(b.p99_us)) {
                (Some(a), Some((tp, bp))) if bp > 0.0 => {
                    let times = tp / bp;
                    format!(
                        "p50 {a:+.1} µs over bare — {}; p99 {times:.2}× bare's — {}",
                        mark(a <= TARGET_ADDED_P50_OVER_BARE_US),
                        mark(times <= TARGET_P99_TIMES_BARE)
                    )
                }
                _ => "no samples — **not met**".into(),
            },
            _ => "not measured (needs bare and this gateway at c=1)".into(),
        };
        let _ = writeln!(
            s,
            "- `{gw}`, {scenario}, c=1: added p50 ≤ {TARGET_ADDED_P50_OVER_BARE_US:.0} µs, p99 ≤ \
             {TARGET_P99_TIMES_BARE:.0}× bare: {line}"
        );
        let line = match (self.find(scenario, gw, 32), self.find(scenario, "bare", 32)) {
            (Some(t), Some(b)) => match rps_ratio(t.rps, b.rps) {
                Some(r) => format!("{r:.2}× — {}", mark(r >= TARGET_RPS_OF_BARE)),
                None => "bare made no requests — **not met**".into(),
            },
            _ => "not measured (needs bare and this gateway at c=32)".into(),
        };
        let _ = writeln!(s, "- `{gw}`, {scenario}, c=32: RPS ≥ {TARGET_RPS_OF_BARE:.1}× bare: {line}");
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
            summary: summary(rps, p50, p50 * 2.0),
        })
        .collect();
        let r = Report {
            date: "d".into(),
            nproc: 2,
            cpu_model: "cpu".into(),
            command: "cmd".into(),
            setup: vec![],
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
}
