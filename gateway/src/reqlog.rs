//! The request log: one structured line per call event at `info` (target `tollgate::request`), written by
//! the metering task once tokens and cost are final, so it costs the request path nothing. It carries
//! ids, attribution by key id, model, outcome, tokens, cost and timings; never the key, never the prompt
//! or the answer. Upstream failures get a second line at `warn` with the upstream's status.

use tollgate_events::{format_usd, CallEvent, Outcome};
use tracing::{info, warn};

/// Logs one finished call event.
pub fn log_event(ev: &CallEvent) {
    info!(
        target: "tollgate::request",
        request_id = %ev.request_id,
        event_id = %ev.event_id,
        key_id = %ev.api_key_id,
        endpoint = ev.endpoint.as_str(),
        stream = ev.stream,
        route = %ev.route,
        model = %ev.requested_model,
        served_model = %ev.served_model,
        upstream = %ev.upstream,
        attempt = ev.attempt,
        status = ev.status_code,
        outcome = ev.outcome.as_str(),
        error_type = %ev.error_type,
        input_tokens = ev.input_tokens,
        output_tokens = ev.output_tokens,
        cached_input_tokens = ev.cached_input_tokens,
        usage_source = ev.usage_source.as_str(),
        cost_nanousd = ev.cost_nanousd,
        cost_usd = %format_usd(ev.cost_nanousd),
        latency_ms = ev.latency_ms,
        ttft_ms = ev.ttft_ms,
        overhead_us = ev.gateway_overhead_us,
        "request"
    );
    if matches!(ev.outcome, Outcome::UpstreamError | Outcome::Timeout) {
        warn!(
            target: "tollgate::request",
            request_id = %ev.request_id,
            upstream = %ev.upstream,
            model = %ev.served_model,
            status = ev.status_code,
            outcome = ev.outcome.as_str(),
            error_type = %ev.error_type,
            "upstream error"
        );
    }
}

/// `--log-format json`: every log line as one JSON object with `timestamp`, `level`, `target`, `message`
/// and the event's fields at the top level. (tracing-subscriber's own `json` feature would do it too, but
/// it changes the features of `tracing-core` and so rebuilds every crate that logs, DataFusion included.)
pub struct JsonLines;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for JsonLines
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let meta = event.metadata();
        let mut obj = serde_json::Map::new();
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        obj.insert("timestamp".into(), now.into());
        obj.insert("level".into(), meta.level().as_str().into());
        obj.insert("target".into(), meta.target().into());
        event.record(&mut JsonFields(&mut obj));
        writeln!(writer, "{}", serde_json::Value::Object(obj))
    }
}

struct JsonFields<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl tracing::field::Visit for JsonFields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::fmt::MakeWriter;

    #[derive(Clone, Default)]
    struct Buf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl<'a> MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Buf {
            self.clone()
        }
    }

    #[test]
    fn json_lines_are_one_object_with_typed_fields() {
        let buf = Buf::default();
        let sub = tracing_subscriber::fmt().with_writer(buf.clone()).event_format(super::JsonLines).finish();
        tracing::subscriber::with_default(sub, || {
            super::log_event(&tollgate_events::CallEvent {
                request_id: "r\"1".into(),
                status_code: 200,
                cost_nanousd: 257_500,
                ..Default::default()
            });
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let v: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(v["message"], "request");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["target"], "tollgate::request");
        assert_eq!(v["request_id"], "r\"1");
        assert_eq!(v["status"], 200);
        assert_eq!(v["cost_nanousd"], 257_500);
        assert_eq!(v["cost_usd"], "0.000257500");
    }
}
