//! `GET /metrics` as a vLLM or SGLang server writes it (Python `prometheus_client` text: HELP and TYPE
//! lines, `model_name` labels, families without samples, histograms), with figures the test sets:
//! `engine=vllm|sglang,waiting=N,running=N,kv=F` plus `legacy_kv` (vLLM's pre-0.10
//! `vllm:gpu_cache_usage_perc`), `status=N` (answer with that error status) and `hang` (never answer).
//! An instance without engine settings has no `/metrics` (404), like any other OpenAI-compatible server.

use axum::body::Body;
use axum::response::Response;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, StatusCode};
use std::fmt::Write as _;
use std::time::Duration;

/// The engine an instance plays and what its metrics say.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct EngineMetrics {
    pub sglang: bool,
    pub waiting: u64,
    pub running: u64,
    pub kv: f64,
    pub legacy_kv: bool,
    pub status: Option<u16>,
    pub hang: bool,
}

fn value<T: std::str::FromStr>(key: &str, v: Option<&str>) -> Result<T, String> {
    let v = v.ok_or_else(|| format!("engine setting `{key}` needs a value"))?;
    v.parse().map_err(|_| format!("engine setting `{key}` has a bad value `{v}`"))
}

/// Parses `engine=vllm,waiting=3,...`; empty: no engine. Unknown keys are an error.
pub(crate) fn parse(spec: &str) -> Result<Option<EngineMetrics>, String> {
    let mut m = EngineMetrics::default();
    let mut engine = None;
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (key, v) = match item.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (item, None),
        };
        match key {
            "engine" => engine = Some(value::<String>(key, v)?),
            "waiting" => m.waiting = value(key, v)?,
            "running" => m.running = value(key, v)?,
            "kv" => m.kv = value(key, v)?,
            "status" => m.status = Some(value(key, v)?),
            "legacy_kv" => m.legacy_kv = true,
            "hang" => m.hang = true,
            other => return Err(format!("unknown engine setting `{other}`")),
        }
    }
    match engine.as_deref() {
        None if spec.trim().is_empty() => Ok(None),
        None => Err("engine settings need `engine=vllm` or `engine=sglang`".into()),
        Some("vllm") => Ok(Some(m)),
        Some("sglang") => Ok(Some(EngineMetrics { sglang: true, ..m })),
        Some(other) => Err(format!("unknown engine `{other}`; use vllm or sglang")),
    }
}

/// The exposition text.
pub(crate) fn exposition(m: &EngineMetrics) -> String {
    let labels = "model_name=\"mock-model\"";
    let mut out = String::from(
        "# HELP python_gc_objects_collected_total Objects collected during gc\n\
         # TYPE python_gc_objects_collected_total counter\n\
         python_gc_objects_collected_total{generation=\"0\"} 1234.0\n",
    );
    let mut gauge = |name: &str, help: &str, v: String| {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{{labels}}} {v}\n");
    };
    let (w, r, kv) = (format!("{:.1}", m.waiting as f64), format!("{:.1}", m.running as f64), format!("{}", m.kv));
    if m.sglang {
        gauge("sglang:num_running_reqs", "The number of running requests.", r);
        gauge("sglang:num_queue_reqs", "The number of requests in the waiting queue.", w);
        gauge("sglang:token_usage", "The token usage.", kv);
    } else {
        let kv_name = if m.legacy_kv { "vllm:gpu_cache_usage_perc" } else { "vllm:kv_cache_usage_perc" };
        gauge("vllm:num_requests_running", "Number of requests in model execution batches.", r);
        gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.", w);
        gauge(kv_name, "KV-cache usage. 1 means 100 percent usage.", kv);
        // A labelled family nothing was counted in yet: HELP and TYPE only.
        out.push_str(
            "# HELP vllm:request_success_total Count of successfully processed requests.\n\
             # TYPE vllm:request_success_total counter\n",
        );
        let _ = write!(
            out,
            "# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.\n\
             # TYPE vllm:time_to_first_token_seconds histogram\n\
             vllm:time_to_first_token_seconds_bucket{{le=\"0.001\",{labels}}} 0.0\n\
             vllm:time_to_first_token_seconds_bucket{{le=\"+Inf\",{labels}}} 0.0\n\
             vllm:time_to_first_token_seconds_count{{{labels}}} 0.0\n\
             vllm:time_to_first_token_seconds_sum{{{labels}}} 0.0\n"
        );
    }
    out
}

/// Answers `GET /metrics`.
pub(crate) async fn metrics(m: Option<EngineMetrics>) -> Response {
    let Some(m) = m else {
        return plain(StatusCode::NOT_FOUND, "Not Found".into());
    };
    if m.hang {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    if let Some(code) = m.status.and_then(|s| StatusCode::from_u16(s).ok()).filter(|c| !c.is_success()) {
        return plain(code, "simulated metrics failure\n".into());
    }
    plain(StatusCode::OK, exposition(&m))
}

fn plain(status: StatusCode, text: String) -> Response {
    let mut resp = Response::new(Body::from(text));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_and_typos_are_refused() {
        assert_eq!(parse("").unwrap(), None);
        let m = parse("engine=sglang, waiting=4, kv=0.5").unwrap().unwrap();
        assert!(m.sglang && m.waiting == 4 && m.kv == 0.5);
        assert!(parse("waiting=4").is_err());
        assert!(parse("engine=tgi").is_err());
        assert!(parse("engine=vllm,queue=3").is_err());
    }

    #[test]
    fn pages_name_each_engines_gauges() {
        let v = exposition(&parse("engine=vllm,waiting=7,running=2,kv=0.25").unwrap().unwrap());
        assert!(v.contains("vllm:num_requests_waiting{model_name=\"mock-model\"} 7.0\n"), "{v}");
        assert!(v.contains("vllm:kv_cache_usage_perc{model_name=\"mock-model\"} 0.25\n"), "{v}");
        let old = exposition(&parse("engine=vllm,legacy_kv,kv=0.5").unwrap().unwrap());
        assert!(old.contains("vllm:gpu_cache_usage_perc{model_name=\"mock-model\"} 0.5\n"), "{old}");
        let s = exposition(&parse("engine=sglang,waiting=3,running=1,kv=0.9").unwrap().unwrap());
        assert!(s.contains("sglang:num_queue_reqs{model_name=\"mock-model\"} 3.0\n"), "{s}");
        assert!(s.contains("sglang:token_usage{model_name=\"mock-model\"} 0.9\n"), "{s}");
    }
}
