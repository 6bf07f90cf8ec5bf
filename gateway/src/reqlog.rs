//! The request log: one structured line per call event at `info` (target `tollgate::request`), written by
//! the metering task once tokens and cost are final, so it costs the request path nothing. It carries
//! ids, attribution by key id, model, outcome, tokens, cost and timings; never the key, never the prompt
//! or the answer. Upstream failures get a second line at `warn` with the upstream's status.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use tollgate_events::{CallEvent, Outcome};

/// Whether request lines are written as JSON objects (`--log-format json`) rather than text.
static JSON: AtomicBool = AtomicBool::new(false);

/// Chooses the request lines' format; `main` calls it with the log format it gave `tracing`.
pub fn set_json(json: bool) {
    JSON.store(json, Ordering::Relaxed);
}

/// The request lines of one metering drain, written to stderr with one `write` when the drain ends.
///
/// The lines are formatted here, not through `tracing`'s generic field visitor (which cost 8% of the
/// gateway's CPU at 20k calls/s, plus a `write` system call per line); `RUST_LOG` still decides whether
/// they are written (`tollgate::request` at `info`, the upstream-error line at `warn`), and they keep
/// the shape of every other log line: text like `tracing`'s, or one JSON object per line.
pub struct RequestLog {
    buf: String,
    stamp: String,
    json: bool,
}

impl Default for RequestLog {
    fn default() -> Self {
        RequestLog::new()
    }
}

impl RequestLog {
    pub fn new() -> RequestLog {
        RequestLog { buf: String::new(), stamp: String::new(), json: JSON.load(Ordering::Relaxed) }
    }

    /// Adds the line (or lines) of one finished call event, if `RUST_LOG` lets them through.
    pub fn add(&mut self, ev: &CallEvent) {
        if !tracing::enabled!(target: "tollgate::request", tracing::Level::INFO) {
            return;
        }
        if self.stamp.is_empty() {
            // One timestamp per drain (at most 20 ms apart from the call's end; the event has the exact times).
            self.stamp = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        }
        let mut l = Line::start(&mut self.buf, &self.stamp, self.json, "INFO", "request");
        l.str("request_id", &ev.request_id);
        l.str("event_id", &ev.event_id);
        l.str("key_id", &ev.api_key_id);
        l.str("endpoint", ev.endpoint.as_str());
        l.bool("stream", ev.stream);
        l.str("route", &ev.route);
        l.str("model", &ev.requested_model);
        l.str("served_model", &ev.served_model);
        l.str("upstream", &ev.upstream);
        l.num("attempt", u64::from(ev.attempt));
        l.num("status", u64::from(ev.status_code));
        l.str("outcome", ev.outcome.as_str());
        l.str("error_type", &ev.error_type);
        l.num("input_tokens", ev.input_tokens);
        l.num("output_tokens", ev.output_tokens);
        l.num("cached_input_tokens", ev.cached_input_tokens);
        l.str("usage_source", ev.usage_source.as_str());
        l.num("cost_nanousd", ev.cost_nanousd);
        l.usd("cost_usd", ev.cost_nanousd);
        l.num("latency_ms", u64::from(ev.latency_ms));
        l.num("ttft_ms", u64::from(ev.ttft_ms));
        l.num("overhead_us", u64::from(ev.gateway_overhead_us));
        l.end();
        if matches!(ev.outcome, Outcome::UpstreamError | Outcome::Timeout)
            && tracing::enabled!(target: "tollgate::request", tracing::Level::WARN)
        {
            let mut l = Line::start(&mut self.buf, &self.stamp, self.json, "WARN", "upstream error");
            l.str("request_id", &ev.request_id);
            l.str("upstream", &ev.upstream);
            l.str("model", &ev.served_model);
            l.num("status", u64::from(ev.status_code));
            l.str("outcome", ev.outcome.as_str());
            l.str("error_type", &ev.error_type);
            l.end();
        }
    }

    /// Writes the lines gathered so far to stderr in one call and starts over.
    pub fn flush(&mut self) {
        if !self.buf.is_empty() {
            // A failed write to stderr has nowhere to be reported; the events themselves are stored anyway.
            let _ = std::io::stderr().lock().write_all(self.buf.as_bytes());
            self.buf.clear();
        }
        self.stamp.clear();
    }
}

impl Drop for RequestLog {
    fn drop(&mut self) {
        self.flush();
    }
}

/// One line being written: `2026-11-30T12:00:00.000000Z  INFO tollgate::request: request k=v …` or
/// `{"timestamp":…,"level":…,"target":"tollgate::request","k":v,…,"message":"request"}`.
struct Line<'a> {
    out: &'a mut String,
    json: bool,
    message: &'static str,
}

impl<'a> Line<'a> {
    fn start(out: &'a mut String, stamp: &str, json: bool, level: &str, message: &'static str) -> Line<'a> {
        if json {
            let _ = write!(out, "{{\"timestamp\":\"{stamp}\",\"level\":\"{level}\",\"target\":\"tollgate::request\"");
        } else {
            let _ = write!(out, "{stamp} {level:>5} tollgate::request: {message}");
        }
        Line { out, json, message }
    }

    fn key(&mut self, k: &str) {
        // Keys are this file's literals: nothing to escape.
        let (open, close) = if self.json { (",\"", "\":") } else { (" ", "=") };
        self.out.push_str(open);
        self.out.push_str(k);
        self.out.push_str(close);
    }

    fn str(&mut self, k: &str, v: &str) {
        self.key(k);
        if self.json {
            json_string(self.out, v);
        } else if v.is_empty() {
            // What `{v:?}` writes for it, without the formatter (most calls have several empty fields).
            self.out.push_str("\"\"");
        } else if v.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'=' && b != b'\\') {
            self.out.push_str(v);
        } else {
            // Quoted and escaped like `tracing` does for strings (Debug): a client-chosen value can neither
            // break the line nor forge a field.
            let _ = write!(self.out, "{v:?}");
        }
    }

    fn num(&mut self, k: &str, v: u64) {
        self.key(k);
        self.out.push_str(itoa::Buffer::new().format(v));
    }

    /// Nano-USD as exact dollars with nine places (`write_usd`, into the line): bare in text, a JSON string
    /// in JSON.
    fn usd(&mut self, k: &str, nanos: u64) {
        self.key(k);
        if self.json {
            self.out.push('"');
        }
        let _ = tollgate_events::write_usd(self.out, nanos);
        if self.json {
            self.out.push('"');
        }
    }

    fn bool(&mut self, k: &str, v: bool) {
        self.key(k);
        self.out.push_str(if v { "true" } else { "false" });
    }

    fn end(self) {
        if self.json {
            self.out.push_str(",\"message\":");
            json_string(self.out, self.message);
            self.out.push('}');
        }
        self.out.push('\n');
    }
}

/// A JSON string literal (RFC 8259 escaping: quote, backslash and control characters).
fn json_string(out: &mut String, v: &str) {
    out.push('"');
    if !v.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        out.push_str(v);
        out.push('"');
        return;
    }
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
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

    fn lines(json: bool, ev: &tollgate_events::CallEvent) -> String {
        let sub = tracing_subscriber::fmt().with_writer(Buf::default()).finish();
        tracing::subscriber::with_default(sub, || {
            let mut log = super::RequestLog::new();
            log.json = json;
            log.add(ev);
            std::mem::take(&mut log.buf)
        })
    }

    #[test]
    fn json_lines_are_one_object_with_typed_fields() {
        let ev = tollgate_events::CallEvent {
            request_id: "r\"1\n\u{1}".into(),
            status_code: 503,
            outcome: tollgate_events::Outcome::UpstreamError,
            cost_nanousd: 257_500,
            ..Default::default()
        };
        let text = lines(true, &ev);
        let v: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(v.len(), 2, "{text}");
        assert_eq!(v[0]["message"], "request");
        assert_eq!(v[0]["level"], "INFO");
        assert_eq!(v[0]["target"], "tollgate::request");
        assert_eq!(v[0]["request_id"], "r\"1\n\u{1}");
        assert_eq!(v[0]["status"], 503);
        assert_eq!(v[0]["stream"], false);
        assert_eq!(v[0]["cost_nanousd"], 257_500);
        assert_eq!(v[0]["cost_usd"], "0.000257500");
        assert!(chrono::DateTime::parse_from_rfc3339(v[0]["timestamp"].as_str().unwrap()).is_ok());
        assert_eq!((v[1]["message"].as_str(), v[1]["level"].as_str()), (Some("upstream error"), Some("WARN")));
    }

    #[test]
    fn dollars_are_written_with_nine_places_in_both_formats() {
        for nanos in [0, 1, 9, 257_500, 999_999_999, 1_000_000_000, 12_345_678_901, u64::MAX] {
            let ev = tollgate_events::CallEvent { cost_nanousd: nanos, ..Default::default() };
            let want = tollgate_events::format_usd(nanos);
            assert!(lines(false, &ev).contains(&format!(" cost_usd={want} ")), "{nanos}");
            let v: serde_json::Value = serde_json::from_str(lines(true, &ev).lines().next().unwrap()).unwrap();
            assert_eq!(v["cost_usd"], want.as_str(), "{nanos}");
        }
    }

    #[test]
    fn text_lines_quote_what_could_break_them() {
        let ev = tollgate_events::CallEvent {
            request_id: "a b=c\nstatus=200".into(),
            api_key_id: "key-1".into(),
            status_code: 200,
            ..Default::default()
        };
        let text = lines(false, &ev);
        assert_eq!(text.lines().count(), 1, "{text}");
        let line = text.lines().next().unwrap();
        let (head, fields) = line.split_once(" tollgate::request: request ").unwrap();
        assert!(head.ends_with("  INFO") && chrono::DateTime::parse_from_rfc3339(&head[..head.len() - 6]).is_ok());
        assert!(fields.starts_with(r#"request_id="a b=c\nstatus=200" "#), "{fields}");
        assert!(
            fields.contains(" key_id=key-1 ") && fields.contains(" status=200 ") && fields.contains(" stream=false ")
        );
        assert_eq!(fields.matches(" status=").count(), 1);
        // An empty value is an empty quoted string, as `tracing` writes one.
        assert!(fields.contains(r#" model="" "#) && fields.contains(r#" upstream="" "#), "{fields}");
    }

    #[test]
    fn nothing_is_written_when_the_filter_says_no() {
        let sub = tracing_subscriber::fmt()
            .with_writer(Buf::default())
            .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
            .finish();
        let ev = tollgate_events::CallEvent { request_id: "r".into(), ..Default::default() };
        let text = tracing::subscriber::with_default(sub, || {
            let mut log = super::RequestLog::new();
            log.add(&ev);
            std::mem::take(&mut log.buf)
        });
        assert_eq!(text, "");
    }
}
