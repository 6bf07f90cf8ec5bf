//! The response body wrapper that meters a call as it streams: it forwards upstream frames to the client
//! as they arrive and looks only for what metering needs (first content, finish reason, usage, served
//! model), in the upstream's format (OpenAI chunks or Anthropic events). When client and upstream speak
//! the same format, SSE bytes are forwarded unchanged, except the usage chunk that tollgate itself asked
//! for on behalf of an OpenAI client that did not; that one event is cut out. When they differ, each
//! upstream event is translated as it arrives (a whole JSON body once it is complete). The wrapper owns
//! the call's `CallGuard`, so however the body ends (finished, upstream cut, idle timeout, client hung
//! up and hyper dropped it) exactly one event is emitted.

use crate::billable::reader::BodyReader;
use crate::config::Wire;
use crate::finish::CallGuard;
use crate::respond::upstream_body::UpstreamBody;
use crate::sse::{self, Field, LineScanner, Piece};
use crate::translate::{response, Translation};
use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use serde::Deserialize;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};
use tollgate_events::{Outcome, ReportedTokens, ServiceTier};
use tracing::warn;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How the body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// One JSON document (non-stream chat, completions, embeddings).
    Json,
    /// Server-sent events; `hide_usage` removes the usage-only chunk the client did not ask for.
    Sse { hide_usage: bool },
}

/// Largest non-stream body kept for usage extraction; larger ones are forwarded but estimated.
const MAX_JSON_INSPECT: usize = 64 * 1024 * 1024;

/// What happens to the raw bytes of an SSE line when the stream is rewritten (`hide_usage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Forward,
    Drop,
    /// Part of an event whose `data` spans lines: kept until its end decides.
    Hold,
}

/// What one `data` payload turned out to be.
#[derive(Default)]
struct Payload {
    /// Parsed as an event of the upstream's format (or OpenAI's `[DONE]`).
    understood: bool,
    /// An OpenAI chunk with usage and no choices: the one tollgate asked for on the client's behalf.
    usage_only: bool,
}

pub struct MeteredBody<B = UpstreamBody> {
    inner: B,
    guard: CallGuard,
    kind: BodyKind,
    /// The upstream's format, which metering reads.
    wire: Wire,
    translation: Translation,
    /// Reads a billable endpoint's answer (Responses API, media) in place of the chat/Messages scan.
    reader: Option<Box<BodyReader>>,
    /// Bytes handed out after the upstream's body ended: a translated whole body, the closing events of
    /// a translated stream, or the last line of a rewritten stream that had no line end.
    tail: Option<Bytes>,
    /// The JSON body so far.
    buf: BytesMut,
    /// SSE lines, across frames.
    scanner: LineScanner,
    /// Cap on one SSE line and on one event's joined `data`.
    max_line: usize,
    /// `data` of an event whose first line was not a whole payload; dispatched at the blank line.
    pending: Option<Vec<u8>>,
    /// Raw lines of that event, held back while it may still turn out to be the hidden usage chunk.
    held: BytesMut,
    /// The current event lost a line over the cap: it is not read.
    broken: bool,
    /// What happened to the last line (a split CRLF's LF follows it).
    last: Fate,
    /// Inside an SSE event being cut out.
    skipping: bool,
    idle: Duration,
    sleep: Pin<Box<Sleep>>,
    done: bool,
    /// An error to hand to hyper on the next poll. Returning it at once would make hyper drop frames it
    /// has not flushed yet; yielding once first lets the client get everything that arrived before it.
    deferred_error: Option<BoxError>,
    /// Response redaction and cache fill, over the bytes the client gets.
    filter: Option<Box<dyn crate::guards::ClientFilter>>,
}

impl<B> MeteredBody<B> {
    pub fn with_filter(mut self, filter: Option<Box<dyn crate::guards::ClientFilter>>) -> MeteredBody<B> {
        self.filter = filter;
        self
    }

    pub fn new(
        inner: B,
        guard: CallGuard,
        kind: BodyKind,
        wire: Wire,
        translation: Translation,
        reader: Option<Box<BodyReader>>,
        idle: Duration,
        max_line: usize,
    ) -> MeteredBody<B> {
        MeteredBody {
            inner,
            guard,
            kind,
            wire,
            translation,
            reader,
            tail: None,
            buf: BytesMut::new(),
            scanner: LineScanner::new(max_line),
            max_line,
            pending: None,
            held: BytesMut::new(),
            broken: false,
            last: Fate::Forward,
            skipping: false,
            idle,
            sleep: Box::pin(tokio::time::sleep(idle)),
            done: false,
            deferred_error: None,
            filter: None,
        }
    }

    fn translating(&self) -> bool {
        !matches!(self.translation, Translation::None)
    }

    /// Inspects one data frame; returns what to forward to the client.
    fn on_data(&mut self, data: Bytes) -> Bytes {
        self.guard.event.response_bytes += data.len() as u64;
        match self.kind {
            BodyKind::Json => {
                if self.buf.len() + data.len() <= MAX_JSON_INSPECT {
                    self.buf.extend_from_slice(&data);
                }
                if self.translating() {
                    // A whole body is translated once it is complete; its first byte goes out then.
                    Bytes::new()
                } else {
                    self.guard.mark_content();
                    data
                }
            }
            BodyKind::Sse { hide_usage } => {
                let rewrite = hide_usage || self.translating();
                let mut out = BytesMut::new();
                let mut scanner = std::mem::replace(&mut self.scanner, LineScanner::new(0));
                scanner.feed(&data, &mut |p| self.on_piece(p, hide_usage, &mut out));
                self.scanner = scanner;
                if rewrite {
                    out.freeze()
                } else {
                    data
                }
            }
        }
    }

    /// One piece from the line scanner. Only a rewritten stream (`hide_usage`) writes raw lines to `out`;
    /// a translated one writes what the translator makes of the payloads.
    fn on_piece(&mut self, p: Piece<'_>, hide_usage: bool, out: &mut BytesMut) {
        match p {
            Piece::Line { raw, text } => {
                let fate = self.on_sse_line(text, hide_usage, out);
                if hide_usage {
                    self.place(fate, raw, out);
                }
                self.last = fate;
            }
            Piece::LfAfterCr { raw } => {
                if hide_usage {
                    self.place(self.last, raw, out);
                }
            }
            Piece::Overlong { raw, first } => {
                if first {
                    self.line_too_long(hide_usage, out);
                }
                let fate = if self.skipping { Fate::Drop } else { Fate::Forward };
                if hide_usage {
                    self.place(fate, raw, out);
                }
                self.last = fate;
            }
        }
    }

    /// An SSE line or event went over `max_sse_line_bytes`: it is passed on unread (a translated stream
    /// cannot translate it and drops it), the event it belongs to is not metered, and it is counted.
    fn line_too_long(&mut self, hide_usage: bool, out: &mut BytesMut) {
        self.guard.metrics().sse_lines_too_long.inc();
        warn!(
            request_id = %self.guard.event.request_id,
            upstream = %self.guard.event.upstream,
            max_bytes = self.max_line,
            "upstream SSE line over gateway.max_sse_line_bytes: passed on unread"
        );
        self.pending = None;
        self.broken = true;
        if hide_usage {
            out.extend_from_slice(&self.held);
        }
        self.held.clear();
    }

    fn place(&mut self, fate: Fate, raw: &[u8], out: &mut BytesMut) {
        match fate {
            Fate::Forward => out.extend_from_slice(raw),
            Fate::Drop => {}
            Fate::Hold if self.held.len() + raw.len() > self.max_line => {
                self.line_too_long(true, out);
                out.extend_from_slice(raw);
            }
            Fate::Hold => self.held.extend_from_slice(raw),
        }
    }

    /// Handles one SSE line (`text` without its line end) and says what becomes of its raw bytes.
    /// An event's `data` is read as soon as its first line is a whole payload (what every provider
    /// sends); otherwise its lines are joined with `\n`, as the SSE spec says, and read at its end.
    fn on_sse_line(&mut self, text: &[u8], hide_usage: bool, out: &mut BytesMut) -> Fate {
        match sse::field(text) {
            Field::Blank => {
                let mut keep = !self.skipping;
                if let Some(data) = self.pending.take() {
                    let p = self.on_payload(&data, true, out);
                    keep &= !(hide_usage && p.usage_only);
                }
                self.skipping = false;
                self.broken = false;
                if keep {
                    out.extend_from_slice(&self.held);
                }
                self.held.clear();
                if keep {
                    Fate::Forward
                } else {
                    Fate::Drop
                }
            }
            _ if self.skipping => Fate::Drop,
            Field::Data(_) if self.broken => Fate::Forward,
            Field::Data(value) => {
                if let Some(data) = &mut self.pending {
                    data.push(b'\n');
                    data.extend_from_slice(value);
                    if data.len() > self.max_line {
                        self.line_too_long(hide_usage, out);
                        return Fate::Forward;
                    }
                    return Fate::Hold;
                }
                let p = self.on_payload(value, false, out);
                if !p.understood {
                    self.pending = Some(value.to_vec());
                    Fate::Hold
                } else if hide_usage && p.usage_only {
                    self.skipping = true;
                    Fate::Drop
                } else {
                    Fate::Forward
                }
            }
            Field::Other if self.pending.is_some() => Fate::Hold,
            Field::Other => Fate::Forward,
        }
    }

    /// Meters one `data` payload and, when translating, translates it into `out`. A payload that is not
    /// (yet) understood goes to the translator only when it is `last` (the event has ended).
    fn on_payload(&mut self, payload: &[u8], last: bool, out: &mut BytesMut) -> Payload {
        let text_before = self.guard.output_len();
        let mut p = Payload::default();
        if let Some(r) = &mut self.reader {
            r.on_event(payload, &mut self.guard);
            p.understood = true;
        } else {
            match self.wire {
                Wire::OpenAi => {
                    if payload == b"[DONE]" {
                        // The client has everything once this is forwarded; it may hang up before the
                        // upstream's end of body reaches us, and that is still a complete call.
                        let status = self.guard.event.status_code;
                        self.guard.finish(Outcome::Ok, status);
                        p.understood = true;
                    } else if let Ok(chunk) = serde_json::from_slice::<ChunkMeta>(payload) {
                        p.usage_only = chunk.choices.is_empty() && chunk.usage.is_some();
                        absorb_openai(&mut self.guard, chunk);
                        p.understood = true;
                    }
                }
                Wire::Anthropic => {
                    if let Ok(ev) = serde_json::from_slice::<AnthropicMeta>(payload) {
                        absorb_anthropic(&mut self.guard, ev, false);
                        p.understood = true;
                    }
                }
            }
        }
        if self.guard.output_len() > text_before {
            self.guard.mark_content();
        }
        if p.understood || last {
            if let Translation::Stream(t) = &mut self.translation {
                t.on_data(payload, out);
            }
        }
        p
    }

    /// Takes usage from a buffered JSON body and, when translating, builds the client's body; false when
    /// the bytes are not (yet) a whole response.
    fn absorb_json_body(&mut self) -> bool {
        let bytes = std::mem::take(&mut self.buf);
        let whole = match (&mut self.reader, self.wire) {
            (Some(r), _) => r.on_whole(&bytes, &mut self.guard),
            (None, Wire::OpenAi) => {
                serde_json::from_slice::<ChunkMeta>(&bytes).map(|c| absorb_openai(&mut self.guard, c)).is_ok()
            }
            (None, Wire::Anthropic) => serde_json::from_slice::<AnthropicMeta>(&bytes)
                .map(|m| absorb_anthropic(&mut self.guard, m, true))
                .is_ok(),
        };
        let translated = match &self.translation {
            Translation::None | Translation::Stream(_) => None,
            Translation::JsonAnthropicToOpenAi { created } => serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .map(|v| response::anthropic_to_openai(&v, *created)),
            Translation::JsonToResponses { from, request, created } => {
                serde_json::from_slice::<serde_json::Value>(&bytes).ok().map(|v| match from {
                    Wire::OpenAi => crate::translate::responses_response::chat_to_responses(&v, request, *created),
                    Wire::Anthropic => {
                        crate::translate::responses_response::anthropic_to_responses(&v, request, *created)
                    }
                })
            }
            Translation::JsonOpenAiToAnthropic => {
                serde_json::from_slice::<serde_json::Value>(&bytes).ok().map(|v| response::openai_to_anthropic(&v))
            }
        };
        if self.translating() {
            self.guard.mark_content();
            // Not a response we can read: the client gets what the upstream sent rather than nothing.
            self.tail = Some(translated.map(|v| Bytes::from(v.to_string())).unwrap_or_else(|| bytes.freeze()));
        }
        whole
    }

    fn on_end(&mut self) {
        match self.kind {
            BodyKind::Json => {
                self.absorb_json_body();
            }
            BodyKind::Sse { hide_usage } => {
                // A last line without a line end, and an event without its blank line, still count, and
                // a rewritten stream still hands them to the client.
                let mut out = BytesMut::new();
                let mut scanner = std::mem::replace(&mut self.scanner, LineScanner::new(0));
                scanner.finish(&mut |p| self.on_piece(p, hide_usage, &mut out));
                self.scanner = scanner;
                if let Some(data) = self.pending.take() {
                    let p = self.on_payload(&data, true, &mut out);
                    if hide_usage && !p.usage_only {
                        out.extend_from_slice(&self.held);
                    }
                }
                self.held.clear();
                if let Translation::Stream(t) = &mut self.translation {
                    t.on_end(&mut out);
                }
                if !out.is_empty() {
                    self.tail = Some(out.freeze());
                }
            }
        }
        let status = self.guard.event.status_code;
        self.guard.finish(Outcome::Ok, status);
    }
}

/// Takes usage, model, finish reason and content text from an OpenAI chunk or whole response.
fn absorb_openai(g: &mut CallGuard, chunk: ChunkMeta) {
    if let Some(m) = chunk.model.filter(|m| !m.is_empty()) {
        if g.event.served_model != m {
            g.event.served_model = m;
        }
    }
    for c in chunk.choices {
        if let Some(fr) = c.finish_reason {
            g.event.finish_reason = fr;
        }
        for part in [c.delta, c.message].into_iter().flatten() {
            for t in [part.content, part.reasoning_content, part.refusal].into_iter().flatten() {
                g.push_output(&t);
            }
            for call in part.tool_calls.into_iter().flatten() {
                if let Some(f) = call.function {
                    for t in [f.name, f.arguments].into_iter().flatten() {
                        g.push_output(&t);
                    }
                }
            }
        }
        if let Some(t) = c.text {
            g.push_output(&t);
        }
    }
    if let Some(t) = chunk.service_tier.filter(|t| !t.is_empty()) {
        g.hints.service_tier = Some(ServiceTier::parse(&t));
    }
    if let Some(u) = chunk.usage {
        g.have_input_usage = true;
        g.have_output_usage = true;
        let cached = u.prompt_tokens_details.and_then(|d| d.cached_tokens).unwrap_or_default();
        let reasoning = u.completion_tokens_details.and_then(|d| d.reasoning_tokens).unwrap_or_default();
        g.hints.anomalous_usage |=
            [u.prompt_tokens, u.completion_tokens, cached, reasoning].iter().any(|r| r.anomalous);
        g.event.input_tokens = u.prompt_tokens.value;
        g.event.output_tokens = u.completion_tokens.value;
        g.event.cached_input_tokens = cached.value;
        g.event.reasoning_tokens = reasoning.value;
    }
}

/// Applies an Anthropic usage object. Anthropic's `input_tokens` excludes cache reads and writes; the
/// event's `input_tokens` is the whole prompt. Counts in a later event (message_delta) are cumulative:
/// each field present replaces the earlier value. `output_final` is false for message_start, whose
/// `output_tokens` is a placeholder the message_delta replaces.
fn apply_anthropic_usage(g: &mut CallGuard, u: &AnthropicUsage, output_final: bool) {
    let counts = [u.input_tokens, u.output_tokens, u.cache_read_input_tokens, u.cache_creation_input_tokens];
    g.hints.anomalous_usage |= counts.iter().flatten().any(|r| r.anomalous);
    if let Some(t) = u.service_tier.as_deref().filter(|t| !t.is_empty()) {
        g.hints.service_tier = Some(ServiceTier::parse(t));
    }
    if let Some(h) = u.cache_creation.as_ref().and_then(|c| c.ephemeral_1h_input_tokens) {
        g.hints.anomalous_usage |= h.anomalous;
        g.hints.cache_write_1h = h.value;
    }
    let ev = &mut g.event;
    if u.input_tokens.is_some() || u.cache_read_input_tokens.is_some() || u.cache_creation_input_tokens.is_some() {
        let uncached = u.input_tokens.map(|r| r.value).unwrap_or_else(|| {
            ev.input_tokens.saturating_sub(ev.cached_input_tokens).saturating_sub(ev.cache_write_tokens)
        });
        let read = u.cache_read_input_tokens.map_or(ev.cached_input_tokens, |r| r.value);
        let write = u.cache_creation_input_tokens.map_or(ev.cache_write_tokens, |r| r.value);
        // Saturating: absurd counts are capped by metering, never wrapped.
        ev.input_tokens = uncached.saturating_add(read).saturating_add(write);
        ev.cached_input_tokens = read;
        ev.cache_write_tokens = write;
        g.have_input_usage = true;
    }
    if output_final {
        if let Some(out) = u.output_tokens {
            ev.output_tokens = out.value;
            g.have_output_usage = true;
        }
    }
}

/// Takes usage, model, stop reason and content text from an Anthropic stream event, or from a whole
/// message when `whole`.
fn absorb_anthropic(g: &mut CallGuard, m: AnthropicMeta, whole: bool) {
    let model = m.model.or_else(|| m.message.as_ref().and_then(|msg| msg.model.clone()));
    if let Some(model) = model.filter(|x| !x.is_empty()) {
        if g.event.served_model != model {
            g.event.served_model = model;
        }
    }
    if let Some(u) = m.message.as_ref().and_then(|msg| msg.usage.as_ref()) {
        apply_anthropic_usage(g, u, false);
    }
    if let Some(u) = &m.usage {
        apply_anthropic_usage(g, u, whole || m.kind == "message_delta");
    }
    for b in m.content.iter().chain(m.content_block.iter()) {
        for t in [&b.text, &b.thinking, &b.name].into_iter().flatten() {
            g.push_output(t);
        }
        if let Some(input) = b.input.as_ref().filter(|i| i.as_object().is_none_or(|o| !o.is_empty())) {
            g.push_output(&input.to_string());
        }
    }
    if let Some(d) = &m.delta {
        for t in [&d.text, &d.partial_json, &d.thinking].into_iter().flatten() {
            g.push_output(t);
        }
        if let Some(r) = &d.stop_reason {
            g.event.finish_reason.clone_from(r);
        }
    }
    if let Some(r) = m.stop_reason {
        g.event.finish_reason = r;
    }
    let status = g.event.status_code;
    match m.kind.as_str() {
        // As with OpenAI's [DONE]: the client has everything once this is forwarded.
        "message_stop" => g.finish(Outcome::Ok, status),
        "error" => {
            let kind = m.error.and_then(|e| e.kind).unwrap_or_else(|| "upstream_error".into());
            g.event.error_type = kind;
            g.finish(Outcome::UpstreamError, status);
        }
        _ => {}
    }
}

impl<B> Drop for MeteredBody<B> {
    fn drop(&mut self) {
        // A client that read a whole JSON body may close before we saw the upstream's end of body: if the
        // bytes parse as a complete response, the call is complete.
        // (A translated body is only handed out whole at the end, so that cannot have happened there.)
        if !self.done
            && self.kind == BodyKind::Json
            && !self.translating()
            && !self.guard.finished
            && self.absorb_json_body()
        {
            let status = self.guard.event.status_code;
            self.guard.finish(Outcome::Ok, status);
        }
    }
}

impl<B> Body for MeteredBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(e) = this.deferred_error.take() {
            return Poll::Ready(Some(Err(e)));
        }
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let deadline = Instant::now() + this.idle;
                    this.sleep.as_mut().reset(deadline);
                    match frame.into_data() {
                        Ok(data) => {
                            let mut out = this.on_data(data);
                            if let Some(f) = this.filter.as_mut() {
                                out = f.on_chunk(out);
                            }
                            if out.is_empty() {
                                continue;
                            }
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                        Err(other) => return Poll::Ready(Some(Ok(other))),
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    // The upstream cut the response: the client sees the same abort, the event says so.
                    this.done = true;
                    let status = this.guard.event.status_code;
                    this.guard.event.error_type = "upstream_stream_cut".into();
                    this.guard.finish(Outcome::UpstreamError, status);
                    this.deferred_error = Some(e.into());
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Poll::Ready(None) => {
                    this.done = true;
                    this.on_end();
                    if let Some(f) = this.filter.as_mut() {
                        let mut tail = this.tail.take().map(|t| f.on_chunk(t).to_vec()).unwrap_or_default();
                        tail.extend_from_slice(&f.on_end(&mut this.guard));
                        if !tail.is_empty() {
                            this.tail = Some(Bytes::from(tail));
                        }
                    }
                    if let Some(tail) = this.tail.take() {
                        return Poll::Ready(Some(Ok(Frame::data(tail))));
                    }
                    return Poll::Ready(None);
                }
                Poll::Pending => {
                    if this.sleep.as_mut().poll(cx).is_ready() {
                        this.done = true;
                        let status = this.guard.event.status_code;
                        this.guard.event.error_type = "upstream_idle_timeout".into();
                        this.guard.finish(Outcome::Timeout, status);
                        this.deferred_error = Some("upstream idle timeout".into());
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.deferred_error.is_none() && self.tail.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        // Cutting the usage chunk changes the length, so never promise one.
        SizeHint::default()
    }
}

#[derive(Deserialize)]
struct ChunkMeta {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Vec<ChoiceMeta>,
    #[serde(default)]
    usage: Option<UsageJson>,
    /// The tier the provider ran the call on (`default`, `flex`, `priority`, `scale`).
    #[serde(default)]
    service_tier: Option<String>,
}

#[derive(Deserialize)]
struct ChoiceMeta {
    #[serde(default)]
    delta: Option<MessageMeta>,
    #[serde(default)]
    message: Option<MessageMeta>,
    /// Legacy completions.
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct MessageMeta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    reasoning_content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCallMeta>>,
}

#[derive(Deserialize)]
struct ToolCallMeta {
    #[serde(default)]
    function: Option<FunctionMeta>,
}

#[derive(Deserialize)]
struct FunctionMeta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

/// OpenAI's usage object (chat, completions, embeddings).
#[derive(Deserialize)]
pub(crate) struct UsageJson {
    #[serde(default)]
    prompt_tokens: ReportedTokens,
    #[serde(default)]
    completion_tokens: ReportedTokens,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
    #[serde(default)]
    completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Deserialize)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: Option<ReportedTokens>,
}

#[derive(Deserialize)]
struct CompletionDetails {
    #[serde(default)]
    reasoning_tokens: Option<ReportedTokens>,
}

/// What metering reads from an Anthropic stream event or whole message.
#[derive(Deserialize)]
struct AnthropicMeta {
    #[serde(rename = "type", default)]
    kind: String,
    /// Whole message.
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    content: Vec<AnthropicBlockMeta>,
    #[serde(default)]
    stop_reason: Option<String>,
    /// message_start.
    #[serde(default)]
    message: Option<AnthropicMessageMeta>,
    /// content_block_start.
    #[serde(default)]
    content_block: Option<AnthropicBlockMeta>,
    /// content_block_delta and message_delta.
    #[serde(default)]
    delta: Option<AnthropicDeltaMeta>,
    /// message_delta and whole message.
    #[serde(default)]
    usage: Option<AnthropicUsage>,
    #[serde(default)]
    error: Option<AnthropicErrorMeta>,
}

#[derive(Deserialize)]
struct AnthropicMessageMeta {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    usage: Option<AnthropicUsage>,
}

#[derive(Deserialize)]
struct AnthropicBlockMeta {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    thinking: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    input: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct AnthropicDeltaMeta {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    partial_json: Option<String>,
    #[serde(default)]
    thinking: Option<String>,
    #[serde(default)]
    stop_reason: Option<String>,
}

/// Anthropic's usage object; every field may be absent from a given event.
#[derive(Deserialize)]
struct AnthropicUsage {
    #[serde(default)]
    input_tokens: Option<ReportedTokens>,
    #[serde(default)]
    output_tokens: Option<ReportedTokens>,
    #[serde(default)]
    cache_read_input_tokens: Option<ReportedTokens>,
    #[serde(default)]
    cache_creation_input_tokens: Option<ReportedTokens>,
    /// Split of the cache writes by lifetime.
    #[serde(default)]
    cache_creation: Option<AnthropicCacheCreation>,
    /// `standard`, `priority` or `batch`.
    #[serde(default)]
    service_tier: Option<String>,
}

#[derive(Deserialize)]
struct AnthropicCacheCreation {
    #[serde(default)]
    ephemeral_1h_input_tokens: Option<ReportedTokens>,
}

#[derive(Deserialize)]
struct AnthropicErrorMeta {
    #[serde(rename = "type", default)]
    kind: Option<String>,
}
