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

pub struct MeteredBody {
    inner: UpstreamBody,
    guard: CallGuard,
    kind: BodyKind,
    /// The upstream's format, which metering reads.
    wire: Wire,
    translation: Translation,
    /// Reads a billable endpoint's answer (Responses API, media) in place of the chat/Messages scan.
    reader: Option<Box<BodyReader>>,
    /// Bytes handed out after the upstream's body ended: a translated whole body, or the closing
    /// events of a translated stream.
    tail: Option<Bytes>,
    /// Partial SSE line carried between frames, or the JSON body so far.
    buf: BytesMut,
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

impl MeteredBody {
    pub fn with_filter(mut self, filter: Option<Box<dyn crate::guards::ClientFilter>>) -> MeteredBody {
        self.filter = filter;
        self
    }

    pub fn new(
        inner: UpstreamBody,
        guard: CallGuard,
        kind: BodyKind,
        wire: Wire,
        translation: Translation,
        reader: Option<Box<BodyReader>>,
        idle: Duration,
    ) -> MeteredBody {
        MeteredBody {
            inner,
            guard,
            kind,
            wire,
            translation,
            reader,
            tail: None,
            buf: BytesMut::new(),
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
                self.buf.extend_from_slice(&data);
                let rewrite = hide_usage || self.translating();
                let mut out = if rewrite { BytesMut::with_capacity(data.len()) } else { BytesMut::new() };
                let mut consumed = 0;
                while let Some(nl) = memchr::memchr(b'\n', &self.buf[consumed..]) {
                    let line_end = consumed + nl + 1;
                    let keep = self.on_sse_line(consumed, line_end, hide_usage, &mut out);
                    if hide_usage && keep {
                        out.extend_from_slice(&self.buf[consumed..line_end]);
                    }
                    consumed = line_end;
                }
                let _ = self.buf.split_to(consumed);
                if rewrite {
                    out.freeze()
                } else {
                    data
                }
            }
        }
    }

    /// Handles the SSE line `buf[start..end]` (with its `\n`); returns whether to forward it unchanged.
    /// A translated stream writes what the client gets into `out` instead.
    fn on_sse_line(&mut self, start: usize, end: usize, hide_usage: bool, out: &mut BytesMut) -> bool {
        let mut line = &self.buf[start..end - 1];
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        if line.is_empty() {
            // Event boundary: the blank line of a cut-out event goes too.
            let keep = !self.skipping;
            self.skipping = false;
            return keep;
        }
        if self.skipping {
            return false;
        }
        let Some(payload) = line.strip_prefix(b"data:") else { return true };
        let payload = payload.strip_prefix(b" ").unwrap_or(payload);
        let text_before = self.guard.output_text.len();
        let mut keep = true;
        if let Some(r) = &mut self.reader {
            r.on_event(payload, &mut self.guard);
        } else {
            keep = scan_event(&mut self.guard, self.wire, &mut self.skipping, payload, hide_usage);
        }
        if self.guard.output_text.len() > text_before {
            self.guard.mark_content();
        }
        if let Translation::Stream(t) = &mut self.translation {
            t.on_data(payload, out);
        }
        keep
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
            BodyKind::Sse { .. } => {
                if let Translation::Stream(t) = &mut self.translation {
                    let mut out = BytesMut::new();
                    t.on_end(&mut out);
                    if !out.is_empty() {
                        self.tail = Some(out.freeze());
                    }
                }
            }
        }
        let status = self.guard.event.status_code;
        self.guard.finish(Outcome::Ok, status);
    }
}

/// Metering's look at one chat chunk or Messages event; returns whether to forward it (the usage chunk
/// tollgate asked for on a client's behalf is cut out: `skipping` then covers the rest of its event).
fn scan_event(guard: &mut CallGuard, wire: Wire, skipping: &mut bool, payload: &[u8], hide_usage: bool) -> bool {
    match wire {
        Wire::OpenAi => {
            if payload == b"[DONE]" {
                // The client has everything once this is forwarded; it may hang up before the
                // upstream's end of body reaches us, and that is still a complete call.
                let status = guard.event.status_code;
                guard.finish(Outcome::Ok, status);
            } else if let Ok(chunk) = serde_json::from_slice::<ChunkMeta>(payload) {
                let usage_only = chunk.choices.is_empty() && chunk.usage.is_some();
                absorb_openai(guard, chunk);
                if hide_usage && usage_only {
                    *skipping = true;
                    return false;
                }
            }
        }
        Wire::Anthropic => {
            if let Ok(ev) = serde_json::from_slice::<AnthropicMeta>(payload) {
                absorb_anthropic(guard, ev, false);
            }
        }
    }
    true
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
                g.output_text.push_str(&t);
            }
            for call in part.tool_calls.into_iter().flatten() {
                if let Some(f) = call.function {
                    for t in [f.name, f.arguments].into_iter().flatten() {
                        g.output_text.push_str(&t);
                    }
                }
            }
        }
        if let Some(t) = c.text {
            g.output_text.push_str(&t);
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
            g.output_text.push_str(t);
        }
        if let Some(input) = b.input.as_ref().filter(|i| i.as_object().is_none_or(|o| !o.is_empty())) {
            g.output_text.push_str(&input.to_string());
        }
    }
    if let Some(d) = &m.delta {
        for t in [&d.text, &d.partial_json, &d.thinking].into_iter().flatten() {
            g.output_text.push_str(t);
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

impl Drop for MeteredBody {
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

impl Body for MeteredBody {
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
                    this.deferred_error = Some(Box::new(e));
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
