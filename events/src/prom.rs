//! What every crate needs to put its metrics into the process's one `prometheus-client` registry: the
//! `[metrics]` config, OpenTelemetry GenAI histogram buckets, a cap on label values that clients can
//! influence, a helper for scrape-time values (atomics read when `/metrics` is scraped) and the choice
//! between the two exposition formats.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// The label value that every value past a cap (or an unknown model) collapses into.
pub const OTHER: &str = "other";

/// Longest label value kept as it is; longer ones are [`OTHER`].
pub const MAX_LABEL_LEN: usize = 128;

/// OpenTelemetry GenAI semantic conventions' `ExplicitBucketBoundaries` for `gen_ai.client.token.usage`.
pub const TOKEN_USAGE_BUCKETS: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0,
    67108864.0,
];
/// … for `gen_ai.client.operation.duration` (seconds).
pub const OPERATION_DURATION_BUCKETS: [f64; 14] =
    [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92];
/// … for `gen_ai.server.time_to_first_token` (seconds).
pub const TIME_TO_FIRST_TOKEN_BUCKETS: [f64; 16] =
    [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0];
/// … for `gen_ai.server.time_per_output_token` (seconds).
pub const TIME_PER_OUTPUT_TOKEN_BUCKETS: [f64; 13] =
    [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5];
/// tollgate's own: the gateway's added time per call (seconds), from 10 µs to 100 ms.
pub const OVERHEAD_BUCKETS: [f64; 13] =
    [0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1];

/// `[metrics]` in `tollgate.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Who may read `/metrics`: `open` (anyone who reaches the port; the default, as Prometheus scrapers
    /// expect) or `key` (`Authorization: Bearer <virtual key with query = true>`; on `tollgate collector`,
    /// its ingest token). The page shows budget ids and spend, so use `key` where the port is not private.
    #[serde(default)]
    pub access: MetricsAccess,
    /// Attribution fields that label `tollgate_cost_nanousd_total`: any of `tenant`, `department`, `team`,
    /// `project`, `user`, `api_key_id`. Default `["department", "team"]`.
    #[serde(default = "default_cost_labels")]
    pub cost_labels: Vec<String>,
    /// Distinct values kept per label whose values come from clients or upstreams (models the config does
    /// not name, attribution, error types); later ones are counted under `other`.
    #[serde(default = "default_max_label_values")]
    pub max_label_values: usize,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MetricsAccess {
    #[default]
    Open,
    Key,
}

/// The attribution fields a cost label may name.
pub const COST_LABEL_FIELDS: [&str; 6] = ["tenant", "department", "team", "project", "user", "api_key_id"];

fn default_cost_labels() -> Vec<String> {
    vec!["department".into(), "team".into()]
}
fn default_max_label_values() -> usize {
    100
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            access: MetricsAccess::default(),
            cost_labels: default_cost_labels(),
            max_label_values: default_max_label_values(),
        }
    }
}

impl MetricsConfig {
    /// Pure check; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        for l in &self.cost_labels {
            if !COST_LABEL_FIELDS.contains(&l.as_str()) {
                return Err(format!("metrics.cost_labels: `{l}` is not one of {}", COST_LABEL_FIELDS.join(", ")));
            }
        }
        if self.cost_labels.len() != self.cost_labels.iter().collect::<HashSet<_>>().len() {
            return Err("metrics.cost_labels: a field is named twice".into());
        }
        if self.max_label_values == 0 || self.max_label_values > 100_000 {
            return Err("metrics.max_label_values: must be between 1 and 100000".into());
        }
        Ok(())
    }
}

/// A bounded set of label values: the first `max` distinct values (of at most [`MAX_LABEL_LEN`] bytes)
/// are kept; every other value is [`OTHER`]. Memory is bounded by `max × MAX_LABEL_LEN` whatever clients
/// send.
#[derive(Debug)]
pub struct LabelCap {
    max: usize,
    seen: Mutex<HashSet<Arc<str>>>,
    /// [`OTHER`], shared (handing it out allocates nothing).
    other: Arc<str>,
}

impl LabelCap {
    pub fn new(max: usize) -> LabelCap {
        LabelCap { max, seen: Mutex::new(HashSet::new()), other: Arc::from(OTHER) }
    }

    /// A cap that starts with `known` (values the config names, which are always kept as they are).
    pub fn with_known<'a>(max: usize, known: impl IntoIterator<Item = &'a str>) -> LabelCap {
        let seen = known.into_iter().map(Arc::from).collect::<HashSet<_>>();
        LabelCap { max: max.saturating_add(seen.len()), seen: Mutex::new(seen), other: Arc::from(OTHER) }
    }

    /// `v` itself if it is known or there is room for it, else [`OTHER`].
    pub fn bound(&self, v: &str) -> Arc<str> {
        if v.len() > MAX_LABEL_LEN {
            return self.other.clone();
        }
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = seen.get(v) {
            return s.clone();
        }
        if seen.len() >= self.max {
            return self.other.clone();
        }
        let s: Arc<str> = Arc::from(v);
        seen.insert(s.clone());
        s
    }

    /// Only values already known (the config's); anything else is [`OTHER`].
    pub fn known_or_other(&self, v: &str) -> Arc<str> {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.get(v).cloned().unwrap_or_else(|| self.other.clone())
    }
}

/// Kinds of scrape-time values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// Encodes one family of scrape-time values (read from atomics or state when `/metrics` is scraped) into
/// a registry collector's encoder. `name` has no `_total`: counters get it from the encoder. Each sample
/// is (labels, value).
pub fn encode_family<'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: Kind,
    samples: impl IntoIterator<Item = (Vec<(&'a str, &'a str)>, f64)>,
) -> std::fmt::Result {
    let samples: Vec<_> = samples.into_iter().collect();
    if samples.is_empty() {
        return Ok(());
    }
    let metric_type = match kind {
        Kind::Counter => ConstCounter::new(0u64).metric_type(),
        Kind::Gauge => ConstGauge::new(0i64).metric_type(),
    };
    let mut family = encoder.encode_descriptor(name, help, None, metric_type)?;
    for (labels, v) in samples {
        let m = family.encode_family(&labels)?;
        match kind {
            // Counters here are sums of integers: exact as u64 when whole.
            Kind::Counter if v.fract() == 0.0 && v >= 0.0 => ConstCounter::new(v as u64).encode(m)?,
            Kind::Counter => ConstCounter::new(v).encode(m)?,
            // Whole gauges print as integers (byte counts, offsets), not as `123.0`.
            Kind::Gauge if v.fract() == 0.0 && v.abs() < 9.0e15 => ConstGauge::new(v as i64).encode(m)?,
            Kind::Gauge => ConstGauge::new(v).encode(m)?,
        }
    }
    Ok(())
}

/// One unlabelled scrape-time value.
pub fn encode_scalar(encoder: &mut DescriptorEncoder, name: &str, help: &str, kind: Kind, v: f64) -> std::fmt::Result {
    encode_family(encoder, name, help, kind, [(Vec::new(), v)])
}

type ScrapeFn = Box<dyn Fn(&mut DescriptorEncoder) -> std::fmt::Result + Send + Sync>;

/// A registry collector that runs `f` at every scrape: how state kept in atomics or behind locks (queues,
/// the write-ahead log, sinks, budgets) gets into the registry without copying it into gauges.
pub fn scrape_fn(
    name: &'static str,
    f: impl Fn(&mut DescriptorEncoder) -> std::fmt::Result + Send + Sync + 'static,
) -> Box<dyn Collector> {
    Box::new(ScrapeCollector { name, f: Box::new(f) })
}

struct ScrapeCollector {
    name: &'static str,
    f: ScrapeFn,
}

impl std::fmt::Debug for ScrapeCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScrapeCollector").field("name", &self.name).finish()
    }
}

impl Collector for ScrapeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        (self.f)(&mut encoder)
    }
}

/// The content type of [`encode`]'s output.
pub fn content_type(openmetrics: bool) -> &'static str {
    if openmetrics {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        prometheus_client::encoding::prometheus_text::CONTENT_TYPE
    }
}

/// Whether a scraper's `Accept` header asks for OpenMetrics (Prometheus does).
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

/// The registry in OpenMetrics (what Prometheus asks for) or in Prometheus text format 0.0.4 (every
/// other reader: `promtool check metrics`, curl, older scrapers); both written by `prometheus-client`.
pub fn encode(registry: &Registry, openmetrics: bool) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let r = if openmetrics {
        prometheus_client::encoding::text::encode(&mut out, registry)
    } else {
        prometheus_client::encoding::prometheus_text::encode(&mut out, registry)
    };
    if let Err(error) = r {
        // Only a collector's formatting error gets here; serve what was written, marked.
        out.push_str(&format!("# encoding stopped: {error}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::histogram::Histogram;

    #[test]
    fn text_format_names_counter_families_with_total() {
        let mut r = Registry::default();
        let c: Family<Vec<(String, String)>, Counter> = Family::default();
        c.get_or_create(&vec![("model".into(), "m".into())]).inc_by(3);
        r.register("x", "Things", c);
        let h = Histogram::new([1.0, 2.0]);
        h.observe(1.5);
        r.register("y_seconds", "Time", h);
        let text = encode(&r, false);
        assert!(text.contains("# HELP x_total Things.\n# TYPE x_total counter\nx_total{model=\"m\"} 3\n"), "{text}");
        assert!(text.contains("# TYPE y_seconds histogram\n"), "{text}");
        assert!(text.contains("y_seconds_bucket{le=\"2\"} 1\n"), "{text}");
        assert!(!text.contains("# EOF"));
        let om = encode(&r, true);
        assert!(om.contains("# TYPE x counter\n") && om.ends_with("# EOF\n"), "{om}");
    }

    #[test]
    fn label_cap_collapses_past_the_cap_and_long_values() {
        let cap = LabelCap::with_known(2, ["gpt-4o"]);
        assert_eq!(&*cap.bound("gpt-4o"), "gpt-4o");
        assert_eq!(&*cap.bound("a"), "a");
        assert_eq!(&*cap.bound("b"), "b");
        assert_eq!(&*cap.bound("c"), OTHER);
        assert_eq!(&*cap.bound("a"), "a");
        assert_eq!(&*cap.bound(&"x".repeat(MAX_LABEL_LEN + 1)), OTHER);
        assert_eq!(&*cap.known_or_other("zzz"), OTHER);
    }

    #[test]
    fn config_names_its_bad_key() {
        let c = MetricsConfig { cost_labels: vec!["prompt".into()], ..Default::default() };
        assert!(c.validate().unwrap_err().starts_with("metrics.cost_labels"));
        let c = MetricsConfig { max_label_values: 0, ..Default::default() };
        assert!(c.validate().unwrap_err().starts_with("metrics.max_label_values"));
        MetricsConfig::default().validate().unwrap();
    }
}
