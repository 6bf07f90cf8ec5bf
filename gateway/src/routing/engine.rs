//! Inference-engine load for `least_busy`: a task per upstream with an `engine` (vLLM or SGLang) scrapes
//! its Prometheus metrics every `engine_poll_ms` into an [`EngineLoad`] that the strategy reads.
//!
//! What is read: vLLM's `vllm:num_requests_waiting`, `vllm:num_requests_running` and
//! `vllm:kv_cache_usage_perc` (`vllm:gpu_cache_usage_perc` before vLLM 0.10); SGLang's
//! `sglang:num_queue_reqs`, `sglang:num_running_reqs` and `sglang:token_usage`. An engine's queue is
//! shared by every model it serves, so counts are summed over label sets (`model_name`, `engine`, data
//! parallel ranks) and KV use is the highest reported. Only those lines are handed to the parser
//! (`nom-openmetrics`), one at a time, so a line the parser does not take (a timestamp, a family
//! without samples) costs that line, not the whole page. Why line by line: Python's `prometheus_client`,
//! which both engines use, writes HELP and TYPE without samples for a labelled metric nothing was counted
//! in yet, and the whole-page parsers tried (`nom-openmetrics`, `prom_text_format_parser`) refuse such a
//! page; `prometheus-parse` cannot read names with `:` at all.
//!
//! A scrape is bounded: [`MAX_SCRAPE_BYTES`] of body and `engine_poll_ms` (at most [`MAX_SCRAPE_TIME`])
//! of time. Failures are counted (`tollgate_engine_scrape_errors_total`), logged once per failing spell,
//! and back off up to [`MAX_BACKOFF_FACTOR`] intervals; the task runs each scrape as its own task, so
//! even a panic in one is a failed scrape and polling goes on. It ends when the route table is dropped.

use crate::config::UpstreamConfig;
use crate::http_client::HttpClient;
use bytes::Bytes;
use http::{header, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// Largest metrics page read (vLLM's, histograms included, is tens of KiB).
pub const MAX_SCRAPE_BYTES: usize = 4 * 1024 * 1024;
/// Longest a scrape may take, whatever `engine_poll_ms` says.
pub const MAX_SCRAPE_TIME: Duration = Duration::from_secs(2);
/// A reading older than this many intervals is stale.
pub const STALE_AFTER_POLLS: u32 = 3;
/// Failing scrapes back off up to this many intervals (and at least up to 5 s).
pub const MAX_BACKOFF_FACTOR: u32 = 16;

/// The engines whose metrics are understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    Vllm,
    Sglang,
}

impl EngineKind {
    pub fn parse(s: &str) -> Option<EngineKind> {
        match s {
            "vllm" => Some(EngineKind::Vllm),
            "sglang" => Some(EngineKind::Sglang),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Vllm => "vllm",
            EngineKind::Sglang => "sglang",
        }
    }

    /// (waiting, running, KV-cache use) metric names.
    fn names(self) -> (&'static str, &'static str, &'static [&'static str]) {
        match self {
            EngineKind::Vllm => (
                "vllm:num_requests_waiting",
                "vllm:num_requests_running",
                &["vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"],
            ),
            EngineKind::Sglang => ("sglang:num_queue_reqs", "sglang:num_running_reqs", &["sglang:token_usage"]),
        }
    }
}

/// One scrape's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EngineReading {
    /// Requests queued, not yet scheduled.
    pub waiting: f64,
    /// Requests in the running batch.
    pub running: f64,
    /// KV-cache use, 0 to 1 (0 when the engine does not report it).
    pub kv_usage: f64,
}

/// The figures in a metrics page; `None` when it has no (finite) queue depth.
pub fn read(kind: EngineKind, text: &str) -> Option<EngineReading> {
    let (waiting_name, running_name, kv_names) = kind.names();
    let (mut waiting, mut running, mut kv) = (None::<f64>, 0.0, 0.0f64);
    let mut buf = String::new();
    for line in text.lines() {
        let line = line.trim();
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = &line[..name_end];
        let wanted = name == waiting_name || name == running_name || kv_names.contains(&name);
        if !wanted {
            continue;
        }
        // An infinite gauge says nothing here (and the parser reports ±Inf on stderr): skip it unparsed.
        let value = line[line.rfind('}').map_or(name_end, |i| i + 1)..].split_whitespace().next().unwrap_or("");
        if value.to_ascii_lowercase().ends_with("inf") {
            continue;
        }
        buf.clear();
        buf.push_str(line);
        buf.push('\n');
        let Ok((_, families)) = nom_openmetrics::parser::prometheus(&buf) else {
            debug!(line, "engine metrics line not understood; skipped");
            continue;
        };
        for s in families.iter().flat_map(|f| f.samples.iter()) {
            let v = s.number();
            if !v.is_finite() {
                continue;
            }
            let v = v.max(0.0);
            if s.name() == waiting_name {
                *waiting.get_or_insert(0.0) += v;
            } else if s.name() == running_name {
                running += v;
            } else {
                kv = kv.max(v.min(1.0));
            }
        }
    }
    Some(EngineReading { waiting: waiting?, running, kv_usage: kv })
}

#[derive(Debug, Default)]
struct Last {
    reading: Option<EngineReading>,
    at: Option<Instant>,
}

/// An engine's last reading, shared by its polling task, `least_busy` and `/metrics`.
#[derive(Debug)]
pub struct EngineLoad {
    pub upstream: String,
    pub kind: EngineKind,
    pub url: String,
    pub poll: Duration,
    last: Mutex<Last>,
    /// Scrapes that failed (connection, status, timeout, size, no queue depth in the page).
    pub errors: AtomicU64,
}

impl EngineLoad {
    /// `None` for an upstream without an (understood) `engine`.
    pub fn new(cfg: &UpstreamConfig) -> Option<EngineLoad> {
        let kind = EngineKind::parse(cfg.engine.as_deref()?)?;
        Some(EngineLoad {
            upstream: cfg.name.clone(),
            kind,
            url: cfg.engine_metrics_url(),
            poll: Duration::from_millis(cfg.engine_poll_ms.max(1)),
            last: Mutex::new(Last::default()),
            errors: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Last> {
        self.last.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How old a reading may be and still count.
    pub fn stale_after(&self) -> Duration {
        self.poll * STALE_AFTER_POLLS
    }

    pub fn set(&self, reading: EngineReading, at: Instant) {
        *self.lock() = Last { reading: Some(reading), at: Some(at) };
    }

    /// The last reading if it is fresh at `now`.
    pub fn fresh(&self, now: Instant) -> Option<EngineReading> {
        let g = self.lock();
        let at = g.at?;
        (now.saturating_duration_since(at) <= self.stale_after()).then_some(g.reading).flatten()
    }

    /// The last reading (if any) and whether it is stale at `now` (no reading: stale).
    pub fn last(&self, now: Instant) -> (Option<EngineReading>, bool) {
        let g = self.lock();
        let stale = g.at.is_none_or(|at| now.saturating_duration_since(at) > self.stale_after());
        (g.reading, stale)
    }

    /// Scrapes every `poll` for as long as someone else holds the load.
    pub fn start(self: &Arc<Self>, client: HttpClient) {
        let weak = Arc::downgrade(self);
        tokio::spawn(poll_loop(weak, client));
    }
}

async fn poll_loop(weak: Weak<EngineLoad>, client: HttpClient) {
    let mut failures: u32 = 0;
    loop {
        let Some(load) = weak.upgrade() else { return };
        let (poll, kind) = (load.poll, load.kind);
        let outcome = match load.url.parse::<Uri>() {
            Ok(uri) => {
                let timeout = poll.min(MAX_SCRAPE_TIME);
                // Its own task: whatever happens in a scrape, this loop goes on.
                match tokio::spawn(scrape(client.clone(), uri, timeout, kind)).await {
                    Ok(r) => r,
                    Err(e) => Err(format!("scrape task failed: {e}")),
                }
            }
            Err(e) => Err(format!("bad metrics URL: {e}")),
        };
        match outcome {
            Ok(reading) => {
                load.set(reading, Instant::now());
                if failures > 0 {
                    info!(upstream = %load.upstream, url = %load.url, failures, "engine metrics readable again");
                }
                failures = 0;
            }
            Err(error) => {
                load.errors.fetch_add(1, Ordering::Relaxed);
                failures = failures.saturating_add(1);
                if failures == 1 {
                    warn!(upstream = %load.upstream, url = %load.url, %error,
                        "engine metrics scrape failed; least_busy counts the gateway's own calls in flight until it works again");
                } else {
                    debug!(upstream = %load.upstream, %error, failures, "engine metrics scrape failed again");
                }
            }
        }
        drop(load);
        tokio::time::sleep(next_wait(poll, failures)).await;
    }
}

/// The interval, doubled per consecutive failure up to [`MAX_BACKOFF_FACTOR`] intervals or 5 s,
/// whichever is longer.
pub fn next_wait(poll: Duration, failures: u32) -> Duration {
    if failures == 0 {
        return poll;
    }
    let cap = (poll * MAX_BACKOFF_FACTOR).min(Duration::from_secs(5).max(poll));
    (poll * 2u32.saturating_pow(failures.min(16) - 1)).min(cap)
}

/// One bounded GET of the metrics page, read into figures.
async fn scrape(client: HttpClient, uri: Uri, timeout: Duration, kind: EngineKind) -> Result<EngineReading, String> {
    let req = Request::get(uri)
        .header(header::ACCEPT, "text/plain;version=0.0.4")
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let body = tokio::time::timeout(timeout, async {
        let resp = client.request(req).await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("status {}", resp.status().as_u16()));
        }
        Limited::new(resp.into_body(), MAX_SCRAPE_BYTES)
            .collect()
            .await
            .map(|c| c.to_bytes())
            .map_err(|e| format!("reading the page: {e}"))
    })
    .await
    .map_err(|_| format!("no complete answer within {} ms", timeout.as_millis()))??;
    let text = std::str::from_utf8(&body).map_err(|_| "the page is not UTF-8".to_string())?;
    read(kind, text).ok_or_else(|| format!("no {} queue depth in the page", kind.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VLLM: &str = r#"# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="llama"} 3.0
vllm:num_requests_running{engine="1",model_name="llama"} 1.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="llama"} 7.0
vllm:num_requests_waiting{engine="1",model_name="llama"} 2.0
# HELP vllm:request_success_total Count of successfully processed requests.
# TYPE vllm:request_success_total counter
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="llama"} 0.25
vllm:kv_cache_usage_perc{engine="1",model_name="llama"} 0.5
vllm:num_requests_waiting_but_not_this 99
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{le="+Inf",model_name="llama"} 0.0
"#;

    #[test]
    fn vllm_counts_are_summed_and_kv_is_the_highest() {
        let r = read(EngineKind::Vllm, VLLM).unwrap();
        assert_eq!(r, EngineReading { waiting: 9.0, running: 4.0, kv_usage: 0.5 });
        // Before vLLM 0.10 the KV gauge had another name.
        let old = VLLM.replace("kv_cache_usage_perc", "gpu_cache_usage_perc");
        assert_eq!(read(EngineKind::Vllm, &old).unwrap().kv_usage, 0.5);
    }

    #[test]
    fn sglang_names_and_bad_lines() {
        let page = "sglang:num_queue_reqs{model_name=\"q\"} 4\nsglang:num_running_reqs{model_name=\"q\"} 2\n\
                    sglang:token_usage{model_name=\"q\"} 0.75\nsglang:num_queue_reqs{model_name=\"r\"} NaN\n\
                    sglang:num_queue_reqs{model_name=\"s\"} 1 1700000000000\nsglang:token_usage +Inf\n\
                    sglang:token_usage{model_name=\"Inf}\"} -inf\n";
        assert_eq!(read(EngineKind::Sglang, page), Some(EngineReading { waiting: 4.0, running: 2.0, kv_usage: 0.75 }));
        assert_eq!(read(EngineKind::Vllm, page), None, "no vLLM queue depth in an SGLang page");
        assert_eq!(read(EngineKind::Sglang, "garbage\n{{{ 1\n"), None);
        assert_eq!(read(EngineKind::Sglang, ""), None);
    }

    #[test]
    fn readings_go_stale_after_three_intervals() {
        let cfg: UpstreamConfig = toml::from_str(
            "name = \"g\"\nbase_url = \"http://gpu:8000/v1\"\nmodels = [\"m\"]\nengine = \"vllm\"\nengine_poll_ms = 100",
        )
        .unwrap();
        let load = EngineLoad::new(&cfg).unwrap();
        assert_eq!(load.url, "http://gpu:8000/metrics");
        let t0 = Instant::now();
        assert_eq!(load.last(t0), (None, true));
        let r = EngineReading { waiting: 1.0, running: 0.0, kv_usage: 0.1 };
        load.set(r, t0);
        assert_eq!(load.fresh(t0 + Duration::from_millis(300)), Some(r));
        assert_eq!(load.fresh(t0 + Duration::from_millis(301)), None);
        assert_eq!(load.last(t0 + Duration::from_millis(301)), (Some(r), true));
    }

    #[test]
    fn failures_back_off_within_bounds() {
        let p = Duration::from_millis(100);
        let waits: Vec<u128> = (0..8).map(|f| next_wait(p, f).as_millis()).collect();
        assert_eq!(waits, [100, 100, 200, 400, 800, 1600, 1600, 1600]);
        assert_eq!(next_wait(Duration::from_secs(1), 30), Duration::from_secs(5));
        assert_eq!(next_wait(Duration::from_secs(10), 30), Duration::from_secs(10));
    }
}
