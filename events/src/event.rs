//! The `CallEvent` struct and its enums, with the JSON form used on the wire and in spool files.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The event's short text fields: names from the key and the route, models, reasons. Up to 24 bytes
/// are held inline (no allocation), which covers nearly every value; longer ones go to the heap as a
/// `String` would. An event is built on a request worker and dropped on the events thread, so inline
/// text is also text that thread does not free into the worker's allocator arena.
pub type Text = compact_str::CompactString;

/// Bumped whenever a field is added, removed or changes meaning. Stored in every row.
pub const SCHEMA_VERSION: u16 = 2;

/// Which API family an endpoint belongs to, as the client called it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    #[default]
    Chat,
    Messages,
    Embeddings,
    Completions,
    Models,
    Other,
    /// OpenAI's Responses API (`/v1/responses`).
    Responses,
    /// `/v1/audio/transcriptions`: speech to text.
    AudioTranscriptions,
    /// `/v1/audio/translations`: speech to English text.
    AudioTranslations,
    /// `/v1/audio/speech`: text to speech.
    AudioSpeech,
    /// `/v1/images/generations`.
    Images,
    /// `/v1/moderations` (free at OpenAI; still one event per call).
    Moderations,
}

/// The wire format the client spoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ClientApi {
    #[default]
    Openai,
    Anthropic,
}

/// How a call ended. Exactly one per event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    #[default]
    Ok,
    /// The provider answered with an error status, or cut the stream.
    UpstreamError,
    /// The provider did not answer (headers or next chunk) within the configured time.
    Timeout,
    /// The client hung up before the response was complete.
    ClientDisconnect,
    /// Missing or unknown virtual key.
    Unauthorized,
    RejectedBudget,
    RejectedRateLimit,
    RejectedGuard,
    RejectedContext,
    /// Malformed body, unknown model, model not allowed for the key.
    InvalidRequest,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::UpstreamError => "upstream_error",
            Outcome::Timeout => "timeout",
            Outcome::ClientDisconnect => "client_disconnect",
            Outcome::Unauthorized => "unauthorized",
            Outcome::RejectedBudget => "rejected_budget",
            Outcome::RejectedRateLimit => "rejected_rate_limit",
            Outcome::RejectedGuard => "rejected_guard",
            Outcome::RejectedContext => "rejected_context",
            Outcome::InvalidRequest => "invalid_request",
        }
    }
}

/// Where the token counts came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum UsageSource {
    /// The provider reported usage; counts are the provider's.
    #[default]
    Provider,
    /// Counted by tollgate with the model's own tokenizer (OpenAI models: `o200k_base`/`cl100k_base`).
    Estimated,
    /// Counted by tollgate with a tokenizer that is not the model's own: `cl100k_base` stands in for
    /// Claude and every other non-OpenAI model, whose tokenizers are not public. Expect it to be off by
    /// some percent (Claude's tokenizer usually yields more tokens than `cl100k_base` for the same text).
    EstimatedApprox,
    /// No tokens were involved (rejected before reaching a provider).
    None,
    /// The provider reported counts that were not believable (negative, fractional, far beyond the
    /// model's window, or a cost beyond u64): they were capped, and a metric and a warning say so.
    Capped,
}

impl UsageSource {
    pub fn as_str(self) -> &'static str {
        match self {
            UsageSource::Provider => "provider",
            UsageSource::Estimated => "estimated",
            UsageSource::EstimatedApprox => "estimated_approx",
            UsageSource::None => "none",
            UsageSource::Capped => "capped",
        }
    }
}

impl Endpoint {
    /// Every endpoint, in the order of their ClickHouse `Enum8` codes (1, 2, …).
    pub const ALL: [Endpoint; 12] = [
        Endpoint::Chat,
        Endpoint::Messages,
        Endpoint::Embeddings,
        Endpoint::Completions,
        Endpoint::Models,
        Endpoint::Other,
        Endpoint::Responses,
        Endpoint::AudioTranscriptions,
        Endpoint::AudioTranslations,
        Endpoint::AudioSpeech,
        Endpoint::Images,
        Endpoint::Moderations,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Chat => "chat",
            Endpoint::Messages => "messages",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Completions => "completions",
            Endpoint::Models => "models",
            Endpoint::Other => "other",
            Endpoint::Responses => "responses",
            Endpoint::AudioTranscriptions => "audio_transcriptions",
            Endpoint::AudioTranslations => "audio_translations",
            Endpoint::AudioSpeech => "audio_speech",
            Endpoint::Images => "images",
            Endpoint::Moderations => "moderations",
        }
    }
}

impl ClientApi {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientApi::Openai => "openai",
            ClientApi::Anthropic => "anthropic",
        }
    }
}

/// One request that reached the gateway. Token semantics are normalised across providers:
/// `input_tokens` is the whole prompt, *including* `cached_input_tokens` and `cache_write_tokens`;
/// `output_tokens` is the whole completion, *including* `reasoning_tokens`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct CallEvent {
    pub schema_version: u16,
    // identity
    /// UUIDv7, unique per event; time-ordered.
    pub event_id: String,
    /// The client's `x-request-id`, or a generated one.
    pub request_id: String,
    /// Microseconds since the Unix epoch, UTC.
    pub ts_start_us: i64,
    pub ts_end_us: i64,
    // attribution
    pub tenant: Text,
    pub department: Text,
    pub team: Text,
    pub project: Text,
    pub user: Text,
    /// The virtual key's id from config, never the key itself.
    pub api_key_id: Text,
    pub tags: BTreeMap<String, String>,
    // call
    pub endpoint: Endpoint,
    pub client_api: ClientApi,
    pub stream: bool,
    pub provider: Text,
    pub upstream: Text,
    pub requested_model: Text,
    pub served_model: Text,
    pub route: Text,
    pub routing_strategy: Text,
    pub attempt: u16,
    pub fallback_from: Text,
    // outcome
    pub status_code: u16,
    pub outcome: Outcome,
    pub error_type: Text,
    pub finish_reason: Text,
    // usage
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub cache_write_tokens: u64,
    pub reasoning_tokens: u64,
    pub usage_source: UsageSource,
    // money
    /// USD × 10⁹, exact.
    pub cost_nanousd: u64,
    /// Which price-table entry priced this call (`model@version`), empty when unpriced.
    pub price_id: Text,
    // time
    pub latency_ms: u32,
    /// Time to the first byte of content, rounded up to whole milliseconds; 0 means no content came.
    pub ttft_ms: u32,
    pub upstream_latency_ms: u32,
    pub gateway_overhead_us: u32,
    // size
    pub request_bytes: u64,
    pub response_bytes: u64,
    // added in schema 2 (appended, so older files and tables only lack trailing columns)
    /// Answered from the response cache: no upstream call was made.
    pub cache_hit: bool,
    /// What a cache hit would have cost (USD × 10⁹); 0 otherwise.
    pub saved_nanousd: u64,
    /// The admission guard (`name:rule`) that rejected or flagged this call; empty when none did.
    pub guard: Text,
    /// The routing strategy's predicted cost of this attempt (USD × 10⁹); 0 when it predicted none.
    pub predicted_cost_nanousd: u64,
}

/// Events on their way from the metering task to the write-ahead log (`serve`) or the spool (`gateway`).
#[derive(Debug, Default)]
pub struct EventBatch {
    pub events: Vec<CallEvent>,
    /// Read back from the metering spill file. A run that crashed while replaying it sends its events
    /// again, so the log checks these against the ids it remembers. Live events are new by construction
    /// (each call's id is made once, and an event goes either to the queue or to the spill file): the log
    /// neither checks nor remembers them.
    pub replayed: bool,
}

/// Fields of a [`CallEvent`], which is also the length of its [`Positional`] form.
pub const CALL_EVENT_FIELDS: usize = 45;

/// A call event as a JSON array of its fields in declaration order (`[2,"0190…","req-1",…]`): the same
/// values as the object form without the keys, which are most of an object's bytes and of the time it takes
/// to write. For records a tollgate process writes and reads back itself (the collector's write-ahead log);
/// anything another process reads keeps the object form. [`event_from_json`] reads both, and `CallEvent`'s
/// deserializer fills the fields an older, shorter array lacks with their defaults (fields are only ever
/// appended, see [`SCHEMA_VERSION`]).
pub struct Positional<'a>(pub &'a CallEvent);

impl Serialize for Positional<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        // Every field named, so a field added to `CallEvent` does not compile here until it is written too
        // (in its place: the array's order is the struct's).
        let CallEvent {
            schema_version,
            event_id,
            request_id,
            ts_start_us,
            ts_end_us,
            tenant,
            department,
            team,
            project,
            user,
            api_key_id,
            tags,
            endpoint,
            client_api,
            stream,
            provider,
            upstream,
            requested_model,
            served_model,
            route,
            routing_strategy,
            attempt,
            fallback_from,
            status_code,
            outcome,
            error_type,
            finish_reason,
            input_tokens,
            output_tokens,
            cached_input_tokens,
            cache_write_tokens,
            reasoning_tokens,
            usage_source,
            cost_nanousd,
            price_id,
            latency_ms,
            ttft_ms,
            upstream_latency_ms,
            gateway_overhead_us,
            request_bytes,
            response_bytes,
            cache_hit,
            saved_nanousd,
            guard,
            predicted_cost_nanousd,
        } = self.0;
        let mut t = s.serialize_tuple(CALL_EVENT_FIELDS)?;
        t.serialize_element(schema_version)?;
        t.serialize_element(event_id)?;
        t.serialize_element(request_id)?;
        t.serialize_element(ts_start_us)?;
        t.serialize_element(ts_end_us)?;
        t.serialize_element(tenant)?;
        t.serialize_element(department)?;
        t.serialize_element(team)?;
        t.serialize_element(project)?;
        t.serialize_element(user)?;
        t.serialize_element(api_key_id)?;
        t.serialize_element(tags)?;
        t.serialize_element(endpoint)?;
        t.serialize_element(client_api)?;
        t.serialize_element(stream)?;
        t.serialize_element(provider)?;
        t.serialize_element(upstream)?;
        t.serialize_element(requested_model)?;
        t.serialize_element(served_model)?;
        t.serialize_element(route)?;
        t.serialize_element(routing_strategy)?;
        t.serialize_element(attempt)?;
        t.serialize_element(fallback_from)?;
        t.serialize_element(status_code)?;
        t.serialize_element(outcome)?;
        t.serialize_element(error_type)?;
        t.serialize_element(finish_reason)?;
        t.serialize_element(input_tokens)?;
        t.serialize_element(output_tokens)?;
        t.serialize_element(cached_input_tokens)?;
        t.serialize_element(cache_write_tokens)?;
        t.serialize_element(reasoning_tokens)?;
        t.serialize_element(usage_source)?;
        t.serialize_element(cost_nanousd)?;
        t.serialize_element(price_id)?;
        t.serialize_element(latency_ms)?;
        t.serialize_element(ttft_ms)?;
        t.serialize_element(upstream_latency_ms)?;
        t.serialize_element(gateway_overhead_us)?;
        t.serialize_element(request_bytes)?;
        t.serialize_element(response_bytes)?;
        t.serialize_element(cache_hit)?;
        t.serialize_element(saved_nanousd)?;
        t.serialize_element(guard)?;
        t.serialize_element(predicted_cost_nanousd)?;
        t.end()
    }
}

/// Reads one event in either JSON form: an object, or a [`Positional`] array. An array longer than this
/// build's `CallEvent` (written by a later release, which may only have appended fields) is read up to the
/// fields this build knows.
pub fn event_from_json(line: &[u8]) -> serde_json::Result<CallEvent> {
    serde_json::from_slice::<EitherForm>(line).map(|e| e.0)
}

/// A call event in either JSON form (see [`event_from_json`]), for reading it inside a larger document.
pub struct EitherForm(pub CallEvent);

impl<'de> Deserialize<'de> for EitherForm {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<EitherForm, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = EitherForm;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a call event (a JSON object or array)")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<EitherForm, A::Error> {
                CallEvent::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(EitherForm)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<EitherForm, A::Error> {
                positional_seq(seq).map(|(e, _)| EitherForm(e))
            }
        }
        d.deserialize_any(V)
    }
}

/// Reads a [`Positional`] array's elements in one pass: the event and how many elements the array had.
/// Fields past its end keep their defaults; elements past this build's fields are skipped.
pub fn positional_seq<'de, A: serde::de::SeqAccess<'de>>(seq: A) -> Result<(CallEvent, usize), A::Error> {
    let mut counted = Counted { seq, n: 0 };
    // `CallEvent`'s derived reader takes the elements in declaration order (the order `Positional` writes).
    let ev = CallEvent::deserialize(serde::de::value::SeqAccessDeserializer::new(&mut counted))?;
    while serde::de::SeqAccess::next_element::<serde::de::IgnoredAny>(&mut counted)?.is_some() {}
    Ok((ev, counted.n))
}

/// A sequence that counts the elements taken from it.
struct Counted<A> {
    seq: A,
    n: usize,
}

impl<'de, A: serde::de::SeqAccess<'de>> serde::de::SeqAccess<'de> for Counted<A> {
    type Error = A::Error;

    fn next_element_seed<T: serde::de::DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, A::Error> {
        let next = self.seq.next_element_seed(seed)?;
        self.n += usize::from(next.is_some());
        Ok(next)
    }

    fn size_hint(&self) -> Option<usize> {
        self.seq.size_hint()
    }
}

impl CallEvent {
    /// The UTC calendar date of `ts_start`, `YYYY-MM-DD`: the Parquet partition the event lands in.
    pub fn date(&self) -> String {
        date_of_day(self.day())
    }

    /// Days since the Unix epoch of `ts_start` (UTC): a cheap partition key.
    pub fn day(&self) -> i64 {
        self.ts_start_us.div_euclid(86_400_000_000)
    }
}

/// `YYYY-MM-DD` of a day number from [`CallEvent::day`].
pub fn date_of_day(day: i64) -> String {
    chrono::DateTime::from_timestamp(day * 86_400, 0).unwrap_or_default().format("%Y-%m-%d").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field a value of its own, none the default: a field written out of place cannot read back equal.
    fn distinct_event() -> CallEvent {
        let mut e = CallEvent {
            schema_version: SCHEMA_VERSION,
            event_id: "ev-1".into(),
            request_id: "req-2".into(),
            ts_start_us: 3,
            ts_end_us: 4,
            tenant: "tenant-5".into(),
            department: "dept-6".into(),
            team: "team-7".into(),
            project: "proj-8".into(),
            user: "user-9".into(),
            api_key_id: "key-10".into(),
            tags: BTreeMap::new(),
            endpoint: Endpoint::Messages,
            client_api: ClientApi::Anthropic,
            stream: true,
            provider: "prov-15".into(),
            upstream: "up-16".into(),
            requested_model: "req-model-17".into(),
            served_model: "served-model-18".into(),
            route: "route-19".into(),
            routing_strategy: "strategy-20".into(),
            attempt: 21,
            fallback_from: "from-22".into(),
            status_code: 23,
            outcome: Outcome::Timeout,
            error_type: "err-25 \"quoted\"\n".into(),
            finish_reason: "fin-26".into(),
            input_tokens: 27,
            output_tokens: 28,
            cached_input_tokens: 29,
            cache_write_tokens: 30,
            reasoning_tokens: 31,
            usage_source: UsageSource::EstimatedApprox,
            cost_nanousd: u64::MAX - 33,
            price_id: "price-34".into(),
            latency_ms: 35,
            ttft_ms: 36,
            upstream_latency_ms: 37,
            gateway_overhead_us: 38,
            request_bytes: 39,
            response_bytes: 40,
            cache_hit: true,
            saved_nanousd: 42,
            guard: "guard-43".into(),
            predicted_cost_nanousd: 44,
        };
        e.tags.insert("env".into(), "prod".into());
        e.tags.insert("ü".into(), "ä".into());
        e
    }

    #[test]
    fn positional_form_reads_back_field_for_field() {
        let e = distinct_event();
        let json = serde_json::to_vec(&Positional(&e)).unwrap();
        let values: Vec<serde_json::Value> = serde_json::from_slice(&json).unwrap();
        assert_eq!(values.len(), CALL_EVENT_FIELDS);
        // As many fields as the object form has keys.
        let object: serde_json::Map<String, serde_json::Value> =
            serde_json::from_value(serde_json::to_value(&e).unwrap()).unwrap();
        assert_eq!(object.len(), CALL_EVENT_FIELDS);
        assert_eq!(event_from_json(&json).unwrap(), e);
        // The object form is read the same way.
        assert_eq!(event_from_json(&serde_json::to_vec(&e).unwrap()).unwrap(), e);
        // Each element is the object form's value of the field in that place.
        let order: Vec<&str> = DECLARED.to_vec();
        for (i, name) in order.iter().enumerate() {
            assert_eq!(values[i], object[*name], "field {name} at {i}");
        }
    }

    /// The fields in declaration order, as written in the struct above.
    const DECLARED: [&str; CALL_EVENT_FIELDS] = [
        "schema_version",
        "event_id",
        "request_id",
        "ts_start_us",
        "ts_end_us",
        "tenant",
        "department",
        "team",
        "project",
        "user",
        "api_key_id",
        "tags",
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
        "cache_hit",
        "saved_nanousd",
        "guard",
        "predicted_cost_nanousd",
    ];

    #[test]
    fn shorter_and_longer_arrays_from_other_releases() {
        let e = distinct_event();
        let mut values: Vec<serde_json::Value> =
            serde_json::to_value(Positional(&e)).unwrap().as_array().unwrap().clone();
        // A later release appended two fields: they are left out.
        values.push(serde_json::json!(7));
        values.push(serde_json::json!("x"));
        assert_eq!(event_from_json(&serde_json::to_vec(&values).unwrap()).unwrap(), e);
        // An earlier release had fewer fields: the missing ones are defaults.
        values.truncate(CALL_EVENT_FIELDS - 4);
        let back = event_from_json(&serde_json::to_vec(&values).unwrap()).unwrap();
        let expected =
            CallEvent { saved_nanousd: 0, guard: Text::default(), predicted_cost_nanousd: 0, cache_hit: false, ..e };
        assert_eq!(back, expected);
        // Not an event at all.
        assert!(event_from_json(b"[1,2,3,").is_err());
        assert!(event_from_json(b"[\"a\"]").is_err());
        assert!(event_from_json(b"7").is_err());
    }

    #[test]
    fn json_round_trip_keeps_every_field() {
        let mut e = CallEvent {
            schema_version: SCHEMA_VERSION,
            event_id: "0190".into(),
            outcome: Outcome::ClientDisconnect,
            usage_source: UsageSource::Estimated,
            cost_nanousd: u64::MAX,
            ts_start_us: 1_700_000_000_000_000,
            ..Default::default()
        };
        e.tags.insert("env".into(), "prod".into());
        let json = serde_json::to_string(&e).unwrap();
        assert!(json.contains("\"outcome\":\"client_disconnect\""));
        assert!(json.contains("\"usage_source\":\"estimated\""));
        let back: CallEvent = serde_json::from_str(&json).unwrap();
        assert_eq!(back, e);
        for endpoint in Endpoint::ALL {
            let e = CallEvent { endpoint, ..Default::default() };
            let json = serde_json::to_string(&e).unwrap();
            assert!(json.contains(&format!("\"endpoint\":\"{}\"", endpoint.as_str())), "{json}");
            assert_eq!(serde_json::from_str::<CallEvent>(&json).unwrap().endpoint, endpoint);
        }
        assert_eq!(e.date(), "2023-11-14");
    }
}
