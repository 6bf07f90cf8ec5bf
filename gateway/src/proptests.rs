//! Property tests (issue 15): the SSE line scanner and the usage it extracts, whatever the chunk
//! boundaries, line ends, comments, multi-line `data` and garbage; and the OpenAI<->Anthropic
//! translators on arbitrary JSON (no panic; JSON out or a 400).
//! CI runs proptest's default 256 cases each; for a longer run:
//! `PROPTEST_CASES=20000 cargo test --workspace --lib -- proptests::`.

use crate::config::Wire;
use crate::finish::meter::{CallGuard, Meter, MeterReceiver};
use crate::metrics::GatewayMetrics;
use crate::respond::body::{BodyKind, MeteredBody};
use crate::sse::{LineScanner, Piece};
use crate::translate::{request, response, StreamTranslator, Translation};
use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use proptest::prelude::*;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tollgate_events::{CallEvent, PriceBook, PriceTable, UsageSource};

/// An upstream body made of given chunks, each ready at once (also used by `respond::body`'s tests).
pub(crate) struct Chunks(pub(crate) VecDeque<Bytes>);

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }
}

/// Cuts `data` at the given fractions (random chunk boundaries).
fn split(data: &[u8], cuts: &[prop::sample::Index]) -> Vec<Bytes> {
    let mut at: Vec<usize> = cuts.iter().map(|i| i.index(data.len() + 1)).collect();
    at.sort_unstable();
    at.dedup();
    let mut out = Vec::new();
    let mut prev = 0;
    for a in at.into_iter().chain([data.len()]) {
        if a > prev {
            out.push(Bytes::copy_from_slice(&data[prev..a]));
            prev = a;
        }
    }
    out
}

fn scan_all(chunks: &[Bytes], max: usize) -> (Vec<Vec<u8>>, Vec<u8>, bool) {
    let mut s = LineScanner::new(max);
    let mut lines = Vec::new();
    let mut raw = Vec::new();
    let mut overlong = false;
    let mut f = |p: Piece<'_>| match p {
        Piece::Line { raw: r, text } => {
            assert!(!text.contains(&b'\n') && !text.contains(&b'\r'));
            assert!(text.len() <= max, "a line over the cap was kept");
            assert!(r.starts_with(text));
            lines.push(text.to_vec());
            raw.extend_from_slice(r);
        }
        Piece::LfAfterCr { raw: r } => raw.extend_from_slice(r),
        Piece::Overlong { raw: r, .. } => {
            overlong = true;
            raw.extend_from_slice(r);
        }
    };
    for c in chunks {
        s.feed(c, &mut f);
        assert!(s.buffered() <= max);
    }
    s.finish(&mut f);
    (lines, raw, overlong)
}

#[derive(Debug, Clone, Copy)]
enum Eol {
    Lf,
    CrLf,
    Cr,
}

fn eol() -> impl Strategy<Value = Eol> {
    prop_oneof![Just(Eol::Lf), Just(Eol::CrLf), Just(Eol::Cr)]
}

impl Eol {
    fn bytes(self) -> &'static [u8] {
        match self {
            Eol::Lf => b"\n",
            Eol::CrLf => b"\r\n",
            Eol::Cr => b"\r",
        }
    }
}

/// One SSE event of a generated stream.
#[derive(Debug, Clone)]
enum Ev {
    /// A content chunk; `split_at` > 0 spreads its JSON over two `data:` lines.
    Content(String, usize),
    Comment(String),
    /// A `data:` payload that is no JSON at all.
    Garbage(String),
    /// An `event:`/`id:` field line before the next event.
    Field(String),
}

fn ev() -> impl Strategy<Value = Ev> {
    prop_oneof![
        4 => ("[a-zA-Z0-9 ]{0,12}", 0usize..40).prop_map(|(s, k)| Ev::Content(s, k)),
        1 => "[ -~]{0,20}".prop_map(Ev::Comment),
        1 => "[a-z ]{1,20}".prop_map(Ev::Garbage),
        1 => "(event|id|retry): [a-z0-9]{0,8}".prop_map(Ev::Field),
    ]
}

fn openai_chunk(content: &str) -> String {
    json!({"id": "c", "object": "chat.completion.chunk", "model": "m",
           "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]})
    .to_string()
}

/// `data` lines of a payload, split over two lines at a point that keeps it JSON once joined with `\n`.
fn data_lines(payload: &str, split_at: usize, eol: Eol, out: &mut Vec<u8>) {
    let cut = payload.find(',').filter(|_| split_at > 0).map(|c| c + 1);
    let parts: Vec<&str> = match cut {
        Some(c) => vec![&payload[..c], &payload[c..]],
        None => vec![payload],
    };
    for p in parts {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(p.as_bytes());
        out.extend_from_slice(eol.bytes());
    }
}

/// A whole OpenAI stream: the events, then the usage chunk and `[DONE]` (its final line end optional).
fn openai_stream(evs: &[Ev], eol: Eol, prompt: u64, completion: u64, final_eol: bool) -> (Vec<u8>, String) {
    let mut out = Vec::new();
    let mut text = String::new();
    let e = eol.bytes();
    for ev in evs {
        match ev {
            Ev::Content(s, k) => {
                data_lines(&openai_chunk(s), *k, eol, &mut out);
                text.push_str(s);
            }
            Ev::Comment(c) => {
                out.push(b':');
                out.extend_from_slice(c.as_bytes());
                out.extend_from_slice(e);
                continue;
            }
            Ev::Garbage(g) => data_lines(g, 0, eol, &mut out),
            Ev::Field(f) => {
                out.extend_from_slice(f.as_bytes());
                out.extend_from_slice(e);
                continue;
            }
        }
        out.extend_from_slice(e);
    }
    let usage = json!({"id": "c", "object": "chat.completion.chunk", "model": "m", "choices": [],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}});
    data_lines(&usage.to_string(), 1, eol, &mut out);
    out.extend_from_slice(e);
    out.extend_from_slice(b"data: [DONE]");
    if final_eol {
        out.extend_from_slice(e);
        out.extend_from_slice(e);
    }
    (out, text)
}

fn meter() -> (Meter, MeterReceiver) {
    let spill = std::env::temp_dir().join(format!("tollgate-proptest-{}.jsonl", std::process::id()));
    Meter::new(16, Arc::new(PriceBook::new(PriceTable::builtin())), spill, Arc::new(GatewayMetrics::default()))
}

/// Runs chunks through a `MeteredBody`; returns what the client got and the emitted event.
fn meter_stream(chunks: Vec<Bytes>, kind: BodyKind, wire: Wire, translation: Translation) -> (Vec<u8>, CallEvent) {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_time().build() {
        Ok(rt) => rt,
        Err(e) => panic!("runtime: {e}"),
    };
    let (m, mut rx) = meter();
    let out = rt.block_on(async {
        let mut guard = CallGuard::new(m.clone(), CallEvent { request_id: "p".into(), ..Default::default() });
        guard.event.status_code = 200;
        let body = MeteredBody::new(
            Chunks(chunks.into()),
            guard,
            kind,
            wire,
            translation,
            None,
            Duration::from_secs(5),
            64 * 1024,
        );
        match body.collect().await {
            Ok(c) => c.to_bytes().to_vec(),
            Err(e) => panic!("body failed: {e}"),
        }
    });
    let pending = rx.try_recv_for_tests().expect("one event");
    (out, pending.event)
}

proptest! {
    #[test]
    fn scanner_keeps_every_byte_and_the_same_lines_whatever_the_chunks(
        data in prop::collection::vec(prop_oneof![Just(b'\n'), Just(b'\r'), Just(b'a'), Just(b':'), any::<u8>()], 0..400),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let whole = scan_all(&[Bytes::from(data.clone())], 1 << 20);
        let chunked = scan_all(&split(&data, &cuts), 1 << 20);
        prop_assert_eq!(&whole.1, &data);
        prop_assert_eq!(&chunked.1, &data);
        prop_assert_eq!(whole.0, chunked.0);
    }

    #[test]
    fn scanner_never_keeps_a_line_over_the_cap(
        data in prop::collection::vec(prop_oneof![8 => Just(b'x'), 1 => Just(b'\n'), 1 => Just(b'\r')], 0..600),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
        max in 1usize..64,
    ) {
        let (lines, raw, _) = scan_all(&split(&data, &cuts), max);
        prop_assert_eq!(raw, data);
        prop_assert!(lines.iter().all(|l| l.len() <= max));
    }

    /// Usage is read from the provider's chunk whatever the line ends, chunking, comments, fields,
    /// multi-line data and garbage around it; a stream the client asked usage for passes unchanged, and
    /// one it did not ask for loses exactly the usage event.
    #[test]
    fn openai_usage_is_extracted_whatever_the_framing(
        evs in prop::collection::vec(ev(), 0..12),
        eol in eol(),
        prompt in 0u64..1_000_000,
        completion in 0u64..100_000,
        final_eol in any::<bool>(),
        hide_usage in any::<bool>(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..16),
    ) {
        let (stream, _) = openai_stream(&evs, eol, prompt, completion, final_eol);
        let (out, ev) =
            meter_stream(split(&stream, &cuts), BodyKind::Sse { hide_usage }, Wire::OpenAi, Translation::None);
        prop_assert_eq!((ev.input_tokens, ev.output_tokens), (prompt, completion));
        prop_assert_eq!(ev.outcome, tollgate_events::Outcome::Ok);
        if hide_usage {
            // Exactly the usage event is gone: everything before it, then `[DONE]`.
            let cut = String::from_utf8_lossy(&stream).find("data: {\"choices\":[],").unwrap_or(0);
            let mut expected = stream[..cut].to_vec();
            expected.extend_from_slice(b"data: [DONE]");
            if final_eol {
                expected.extend_from_slice(eol.bytes());
                expected.extend_from_slice(eol.bytes());
            }
            prop_assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&expected));
        } else {
            prop_assert_eq!(&out, &stream);
        }
    }

    /// Anthropic events: input usage from message_start, output from message_delta, whatever the
    /// framing.
    #[test]
    fn anthropic_usage_is_extracted_whatever_the_framing(
        texts in prop::collection::vec("[a-z ]{0,10}", 0..8),
        eol in eol(),
        input in 0u64..1_000_000,
        output in 0u64..100_000,
        split_lines in any::<bool>(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..16),
    ) {
        let mut s = Vec::new();
        let e = eol.bytes();
        let mut event = |name: &str, v: Value| {
            s.extend_from_slice(format!("event: {name}").as_bytes());
            s.extend_from_slice(e);
            data_lines(&v.to_string(), usize::from(split_lines), eol, &mut s);
            s.extend_from_slice(e);
        };
        event("message_start", json!({"type": "message_start", "message": {"id": "m", "model": "claude-haiku-4-5",
            "usage": {"input_tokens": input, "output_tokens": 1}}}));
        for t in &texts {
            event("content_block_delta", json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": t}}));
        }
        event("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": output}}));
        event("message_stop", json!({"type": "message_stop"}));
        let (out, ev) = meter_stream(split(&s, &cuts), BodyKind::Sse { hide_usage: false }, Wire::Anthropic, Translation::None);
        prop_assert_eq!(out, s);
        prop_assert_eq!((ev.input_tokens, ev.output_tokens), (input, output));
        prop_assert_eq!(ev.finish_reason.as_str(), "end_turn");
        prop_assert_eq!(ev.usage_source, UsageSource::Provider);
    }

    /// Garbage of any kind from the upstream, translated or not: no panic, and one event.
    #[test]
    fn arbitrary_upstream_bytes_never_panic(
        data in prop::collection::vec(any::<u8>(), 0..600),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        mode in 0u8..5,
    ) {
        let (kind, wire, translation) = match mode {
            0 => (BodyKind::Sse { hide_usage: true }, Wire::OpenAi, Translation::None),
            1 => (BodyKind::Sse { hide_usage: false }, Wire::Anthropic,
                  Translation::Stream(Box::new(StreamTranslator::anthropic_to_openai(true, 0)))),
            2 => (BodyKind::Sse { hide_usage: false }, Wire::OpenAi,
                  Translation::Stream(Box::new(StreamTranslator::openai_to_anthropic()))),
            3 => (BodyKind::Json, Wire::OpenAi, Translation::JsonOpenAiToAnthropic),
            _ => (BodyKind::Json, Wire::Anthropic, Translation::JsonAnthropicToOpenAi { created: 0 }),
        };
        let (_, ev) = meter_stream(split(&data, &cuts), kind, wire, translation);
        prop_assert_eq!(ev.request_id.as_str(), "p");
    }
}

/// Arbitrary JSON, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
        "[ -~]{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("user"),
            Just("assistant"),
            Just("system"),
            Just("tool"),
            Just("text"),
            Just("image_url"),
            Just("tool_use"),
            Just("tool_result"),
            Just("function"),
            Just("auto"),
            Just("required"),
        ]
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Object keys the translators look at, and some they do not know.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop_oneof![
            Just("model"),
            Just("messages"),
            Just("role"),
            Just("content"),
            Just("type"),
            Just("text"),
            Just("system"),
            Just("tools"),
            Just("tool_choice"),
            Just("tool_calls"),
            Just("function"),
            Just("name"),
            Just("arguments"),
            Just("input"),
            Just("id"),
            Just("tool_use_id"),
            Just("stream"),
            Just("max_tokens"),
            Just("max_completion_tokens"),
            Just("stop"),
            Just("image_url"),
            Just("url"),
            Just("source"),
            Just("parameters"),
            Just("input_schema"),
            Just("usage"),
            Just("choices"),
            Just("message"),
            Just("delta"),
            Just("finish_reason"),
            Just("stop_reason"),
            Just("index"),
            Just("response_format"),
            Just("metadata"),
            Just("thinking"),
            Just("n"),
            Just("temperature"),
        ]
        .prop_map(String::from),
        "[a-z_]{1,8}",
    ]
}

/// A request with the translators' fields filled with arbitrary JSON.
fn request_like() -> impl Strategy<Value = Value> {
    (json_value(), prop::collection::vec((key(), json_value()), 0..6)).prop_map(|(messages, extra)| {
        let mut o = serde_json::Map::new();
        o.insert("model".into(), json!("m"));
        o.insert("messages".into(), messages);
        for (k, v) in extra {
            o.insert(k, v);
        }
        Value::Object(o)
    })
}

fn is_json(v: &Value) -> bool {
    serde_json::to_string(v).ok().and_then(|s| serde_json::from_str::<Value>(&s).ok()).is_some()
}

proptest! {
    #[test]
    fn request_translators_answer_json_or_a_400(req in prop_oneof![json_value(), request_like()]) {
        let to_anthropic = request::openai_to_anthropic(&req, &request::ToAnthropic { default_max_tokens: 1024 });
        let to_openai = request::anthropic_to_openai(
            &req,
            &request::ToOpenAi { include_usage: true, max_tokens_field: "max_tokens" },
        );
        for r in [to_anthropic, to_openai] {
            match r {
                Ok(v) => prop_assert!(is_json(&v) && v.is_object()),
                Err(e) => prop_assert_eq!(e.status().as_u16(), 400, "{}", e),
            }
        }
    }

    #[test]
    fn response_translators_never_panic(resp in json_value(), payloads in prop::collection::vec(json_value(), 0..6)) {
        prop_assert!(is_json(&response::anthropic_to_openai(&resp, 0)));
        prop_assert!(is_json(&response::openai_to_anthropic(&resp)));
        for mut t in [StreamTranslator::anthropic_to_openai(true, 0), StreamTranslator::openai_to_anthropic()] {
            let mut out = BytesMut::new();
            for p in &payloads {
                t.on_data(p.to_string().as_bytes(), &mut out);
            }
            t.on_end(&mut out);
            // Whatever came out is SSE whose data lines are JSON.
            for line in out[..].split(|b: &u8| *b == b'\n') {
                if let Some(d) = line.strip_prefix(b"data: ") {
                    prop_assert!(d == b"[DONE]" || serde_json::from_slice::<Value>(d).is_ok());
                }
            }
        }
    }
}
