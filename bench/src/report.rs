//! Renders one run as markdown and splices it into RESULTS.md between this tool's markers.

use std::fmt::Write as _;

use crate::stats::{added, rps_ratio, RunSummary};

pub const BEGIN: &str = "<!-- gateway-bench:begin -->";
pub const END: &str = "<!-- gateway-bench:end -->";

pub const TARGET_ADDED_P50_US: f64 = 100.0;
pub const TARGET_RPS_RATIO: f64 = 0.60;
pub const TARGET_RSS_MIB: f64 = 40.0;

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
    pub tollgate_ran: bool,
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
                "| target | c | RPS | p50 µs | p99 µs | added p50 µs | added p99 µs | RPS ratio |".to_string();
            let mut rule = "|---|--:|--:|--:|--:|--:|--:|--:|".to_string();
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
                let _ = write!(
                    s,
                    "| {} | {} | {:.0} | {} | {} | {} | {} | {} |",
                    r.target,
                    r.concurrency,
                    x.rps,
                    us(x.p50_us),
                    us(x.p99_us),
                    signed_us(a50),
                    signed_us(a99),
                    ratio
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

        let _ = writeln!(s, "### Targets (tollgate)\n");
        if !self.tollgate_ran {
            let _ = writeln!(s, "Not evaluated: tollgate was not part of this run (`--only`).\n");
        } else {
            for (scenario, _) in &scenarios {
                let line = match (self.find(scenario, "tollgate", 1), self.direct(scenario, 1)) {
                    (Some(t), Some(d)) => match added(t.p50_us, d.p50_us) {
                        Some(a) => format!("{a:.1} µs — {}", mark(a <= TARGET_ADDED_P50_US)),
                        None => "no samples — **not met**".into(),
                    },
                    _ => "not measured (needs direct and tollgate at c=1)".into(),
                };
                let _ = writeln!(s, "- Added p50 ≤ {TARGET_ADDED_P50_US:.0} µs at c=1, {scenario}: {line}");
                let line = match (self.find(scenario, "tollgate", 32), self.direct(scenario, 32)) {
                    (Some(t), Some(d)) => match rps_ratio(t.rps, d.rps) {
                        Some(r) => format!("{:.0}% — {}", r * 100.0, mark(r >= TARGET_RPS_RATIO)),
                        None => "direct made no requests — **not met**".into(),
                    },
                    _ => "not measured (needs direct and tollgate at c=32)".into(),
                };
                let _ = writeln!(s, "- ≥ {:.0}% of direct RPS at c=32, {scenario}: {line}", TARGET_RPS_RATIO * 100.0);
            }
            let peak = self.rss.iter().filter(|m| m.process == "tollgate").map(|m| m.rss_kib).max();
            let hwm = self.rss.iter().filter(|m| m.process == "tollgate").map(|m| m.hwm_kib).max();
            let line = match (peak, hwm) {
                (Some(p), Some(h)) => {
                    format!("VmRSS {:.1} MiB (VmHWM {:.1} MiB) — {}", mib(p), mib(h), mark(mib(p) <= TARGET_RSS_MIB))
                }
                _ => "not sampled".into(),
            };
            let _ = writeln!(s, "- RSS ≤ {TARGET_RSS_MIB:.0} MB after c=32: {line}");
            let _ = writeln!(s);
        }
        let _ = writeln!(s, "{END}");
        s
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
            ("tollgate", 1, 8_000.0, 120.0),
            ("direct", 32, 20_000.0, 900.0),
            ("tollgate", 32, 15_000.0, 1200.0),
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
            rss: vec![RssSample { process: "tollgate", after: "x".into(), rss_kib: 20 * 1024, hwm_kib: 30 * 1024 }],
            tollgate_ran: true,
        };
        let md = r.render();
        assert!(md.contains("| tollgate | 1 | 8000 | 120.0 | 240.0 | +70.0 | +140.0 | 0.80 | 0 |"), "{md}");
        assert!(md.contains("at c=1, non-stream: 70.0 µs — **met**"), "{md}");
        assert!(md.contains("at c=32, non-stream: 75% — **met**"), "{md}");
        assert!(md.contains("VmRSS 20.0 MiB (VmHWM 30.0 MiB) — **met**"), "{md}");
    }
}
