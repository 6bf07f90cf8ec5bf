//! Call events → ClickHouse `RowBinary`, the format every release reads fastest. The column list below
//! and the enum numbers must match `migrations/`; `tests/clickhouse.rs` round-trips every field through a
//! real server to keep them honest.

use tollgate_events::{CallEvent, ClientApi, Endpoint, Outcome, UsageSource};

/// The columns an insert names, in the order [`encode`] writes them.
pub const COLUMNS: &[&str] = &[
    "schema_version",
    "event_id",
    "request_id",
    "ts_start",
    "ts_start_us",
    "ts_end_us",
    "date",
    "tenant",
    "department",
    "team",
    "project",
    "user",
    "api_key_id",
    "tag_keys",
    "tag_values",
    "endpoint",
    "client_api",
    "stream",
    "provider",
    "upstream",
    "requested_model",
    "served_model",
    "route",
    "routing_strategy",
    "attempt",
    "fallback_from",
    "status_code",
    "outcome",
    "error_type",
    "finish_reason",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "usage_source",
    "cost_nanousd",
    "price_id",
    "latency_ms",
    "ttft_ms",
    "upstream_latency_ms",
    "gateway_overhead_us",
    "request_bytes",
    "response_bytes",
    "batch_id",
    "cache_hit",
    "saved_nanousd",
    "guard",
    "predicted_cost_nanousd",
];

/// `INSERT INTO calls (…) FORMAT RowBinary`.
pub fn insert_sql() -> String {
    let cols: Vec<String> = COLUMNS.iter().map(|c| format!("`{c}`")).collect();
    format!("INSERT INTO calls ({}) FORMAT RowBinary", cols.join(", "))
}

fn endpoint_code(e: Endpoint) -> i8 {
    match e {
        Endpoint::Chat => 1,
        Endpoint::Messages => 2,
        Endpoint::Embeddings => 3,
        Endpoint::Completions => 4,
        Endpoint::Models => 5,
        Endpoint::Other => 6,
        Endpoint::Responses => 7,
        Endpoint::AudioTranscriptions => 8,
        Endpoint::AudioTranslations => 9,
        Endpoint::AudioSpeech => 10,
        Endpoint::Images => 11,
        Endpoint::Moderations => 12,
    }
}

fn client_api_code(c: ClientApi) -> i8 {
    match c {
        ClientApi::Openai => 1,
        ClientApi::Anthropic => 2,
    }
}

fn outcome_code(o: Outcome) -> i8 {
    match o {
        Outcome::Ok => 1,
        Outcome::UpstreamError => 2,
        Outcome::Timeout => 3,
        Outcome::ClientDisconnect => 4,
        Outcome::Unauthorized => 5,
        Outcome::RejectedBudget => 6,
        Outcome::RejectedRateLimit => 7,
        Outcome::RejectedGuard => 8,
        Outcome::RejectedContext => 9,
        Outcome::InvalidRequest => 10,
    }
}

fn usage_source_code(u: UsageSource) -> i8 {
    match u {
        UsageSource::Provider => 1,
        UsageSource::Estimated => 2,
        UsageSource::None => 3,
        UsageSource::EstimatedApprox => 4,
        UsageSource::Capped => 5,
    }
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn string(out: &mut Vec<u8>, s: &str) {
    varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Appends one row; returns the bytes written.
pub fn encode(out: &mut Vec<u8>, e: &CallEvent, batch_id: &str) -> usize {
    let start = out.len();
    out.extend_from_slice(&e.schema_version.to_le_bytes());
    string(out, &e.event_id);
    string(out, &e.request_id);
    let secs = e.ts_start_us.div_euclid(1_000_000).clamp(0, i64::from(u32::MAX)) as u32;
    out.extend_from_slice(&secs.to_le_bytes());
    out.extend_from_slice(&e.ts_start_us.to_le_bytes());
    out.extend_from_slice(&e.ts_end_us.to_le_bytes());
    let day = e.day().clamp(0, i64::from(u16::MAX)) as u16;
    out.extend_from_slice(&day.to_le_bytes());
    for s in [&e.tenant, &e.department, &e.team, &e.project, &e.user, &e.api_key_id] {
        string(out, s);
    }
    varint(out, e.tags.len() as u64);
    for k in e.tags.keys() {
        string(out, k);
    }
    varint(out, e.tags.len() as u64);
    for v in e.tags.values() {
        string(out, v);
    }
    out.push(endpoint_code(e.endpoint) as u8);
    out.push(client_api_code(e.client_api) as u8);
    out.push(u8::from(e.stream));
    for s in [&e.provider, &e.upstream, &e.requested_model, &e.served_model, &e.route, &e.routing_strategy] {
        string(out, s);
    }
    out.extend_from_slice(&e.attempt.to_le_bytes());
    string(out, &e.fallback_from);
    out.extend_from_slice(&e.status_code.to_le_bytes());
    out.push(outcome_code(e.outcome) as u8);
    string(out, &e.error_type);
    string(out, &e.finish_reason);
    for v in [e.input_tokens, e.output_tokens, e.cached_input_tokens, e.cache_write_tokens, e.reasoning_tokens] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.push(usage_source_code(e.usage_source) as u8);
    out.extend_from_slice(&e.cost_nanousd.to_le_bytes());
    string(out, &e.price_id);
    for v in [e.latency_ms, e.ttft_ms, e.upstream_latency_ms, e.gateway_overhead_us] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&e.request_bytes.to_le_bytes());
    out.extend_from_slice(&e.response_bytes.to_le_bytes());
    string(out, batch_id);
    out.push(u8::from(e.cache_hit));
    out.extend_from_slice(&e.saved_nanousd.to_le_bytes());
    string(out, &e.guard);
    out.extend_from_slice(&e.predicted_cost_nanousd.to_le_bytes());
    out.len() - start
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_strings_follow_leb128() {
        let mut b = Vec::new();
        varint(&mut b, 300);
        assert_eq!(b, [0xac, 0x02]);
        b.clear();
        string(&mut b, "hé");
        assert_eq!(b, [3, b'h', 0xc3, 0xa9]);
    }

    #[test]
    fn a_row_has_the_expected_size() {
        let e = CallEvent { event_id: "ab".into(), ..Default::default() };
        let mut b = Vec::new();
        let n = encode(&mut b, &e, "c");
        // fixed-width: 2+4+8+8+2 + 1+1+1 + 2+2+1 + 5*8+1+8 + 4*4+8+8 + 1+8+8 = 130; strings: 20 length
        // bytes + 3
        assert_eq!(n, 130 + 20 + 3 + 2);
        assert_eq!(COLUMNS.len(), 49);
    }

    #[test]
    fn endpoint_codes_match_the_latest_enum_migration() {
        let ddl = include_str!("../../migrations/0181_endpoint_responses.sql");
        for (i, e) in Endpoint::ALL.into_iter().enumerate() {
            let code = endpoint_code(e);
            assert_eq!(usize::try_from(code).unwrap(), i + 1, "{e:?}");
            assert!(ddl.contains(&format!("'{}' = {code}", e.as_str())), "{e:?} missing from 0181");
        }
    }
}
