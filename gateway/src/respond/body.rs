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
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};
use tollgate_events::{Outcome, ReportedTokens, ServiceTier};
use tracing::warn;

mod fast;

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

/// What the client gets for one upstream frame of a rewritten or translated stream. While that is one
/// unbroken run of the frame's own bytes (every line forwarded, or whole events cut at either end of the
/// frame), it is handed on as a slice of the frame rather than copied.
struct Out<'f> {
    frame: &'f Bytes,
    /// The run of `frame` handed on, while nothing else is.
    run: Range<usize>,
    /// Everything handed on, once it is not one run of `frame`.
    copy: Option<BytesMut>,
}

impl<'f> Out<'f> {
    fn new(frame: &'f Bytes) -> Out<'f> {
        Out { frame, run: 0..0, copy: None }
    }

    /// Forwards raw stream bytes: they extend the run when they are the frame's bytes that follow it.
    fn forward(&mut self, raw: &[u8]) {
        if raw.is_empty() {
            return;
        }
        if self.copy.is_none() {
            if let Some(at) = offset_in(self.frame, raw) {
                if self.run.is_empty() {
                    self.run = at..at + raw.len();
                    return;
                }
                if at == self.run.end {
                    self.run.end += raw.len();
                    return;
                }
            }
        }
        self.buf().extend_from_slice(raw);
    }

    /// Bytes that are not the frame's (held lines), after what was handed on so far.
    fn push(&mut self, bytes: &[u8]) {
        if !bytes.is_empty() {
            self.buf().extend_from_slice(bytes);
        }
    }

    /// The output as a buffer to append to (translations write here); copies the run once.
    fn buf(&mut self) -> &mut BytesMut {
        let (frame, run) = (self.frame, &self.run);
        self.copy.get_or_insert_with(|| {
            let mut b = BytesMut::with_capacity(frame.len());
            b.extend_from_slice(&frame[run.clone()]);
            b
        })
    }

    fn finish(self) -> Bytes {
        match self.copy {
            Some(b) => b.freeze(),
            None => self.frame.slice(self.run),
        }
    }
}

/// Where `raw` starts in `frame`, when it is a part of it (and not a copy of bytes held from before).
fn offset_in(frame: &[u8], raw: &[u8]) -> Option<usize> {
    let at = (raw.as_ptr() as usize).checked_sub(frame.as_ptr() as usize)?;
    (at.checked_add(raw.len())? <= frame.len()).then_some(at)
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
    /// The JSON body so far, when it came in more than one frame.
    buf: BytesMut,
    /// The JSON body's first frame, kept as it is (no copy) until a second one arrives.
    first: Option<Bytes>,
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
    /// When the last frame came: the idle timeout runs from here.
    last_frame: Instant,
    /// Fires at or before `last_frame + idle`; moved on only when it fires early, not on every frame
    /// (resetting a timer is a trip through the timer wheel).
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
            first: None,
            scanner: LineScanner::new(max_line),
            max_line,
            pending: None,
            held: BytesMut::new(),
            broken: false,
            last: Fate::Forward,
            skipping: false,
            idle,
            last_frame: Instant::now(),
            sleep: Box::pin(tokio::time::sleep(idle)),
            done: false,
            deferred_error: None,
            filter: None,
        }
    }

    /// The upstream has sent nothing for `idle`. Otherwise the timer is left armed (and this task
    /// registered with it) for the earliest moment that can become true.
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        while self.sleep.as_mut().poll(cx).is_ready() {
            let deadline = self.last_frame + self.idle;
            if deadline <= Instant::now() {
                return true;
            }
            self.sleep.as_mut().reset(deadline);
        }
        false
    }

    /// The client gets the upstream's bytes unchanged: a JSON body neither translated nor filtered.
    fn verbatim(&self) -> bool {
        self.kind == BodyKind::Json && !self.translating() && self.filter.is_none()
    }

    fn translating(&self) -> bool {
        !matches!(self.translation, Translation::None)
    }

    /// Inspects one data frame; returns what to forward to the client.
    fn on_data(&mut self, data: Bytes) -> Bytes {
        self.guard.event.response_bytes += data.len() as u64;
        match self.kind {
            BodyKind::Json => {
                let held = self.buf.len() + self.first.as_ref().map_or(0, Bytes::len);
                if held + data.len() <= MAX_JSON_INSPECT {
                    if held == 0 {
                        // Most answers are one frame: it is read where it is.
                        self.first = Some(data.clone());
                    } else {
                        if let Some(first) = self.first.take() {
                            self.buf.extend_from_slice(&first);
                        }
                        self.buf.extend_from_slice(&data);
                    }
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
                let mut out = Out::new(&data);
                let mut scanner = std::mem::replace(&mut self.scanner, LineScanner::new(0));
                scanner.feed(&data, &mut |p| self.on_piece(p, hide_usage, &mut out));
                self.scanner = scanner;
                let rewritten = out.finish();
                if rewrite {
                    rewritten
                } else {
                    data
                }
            }
        }
    }

    /// One piece from the line scanner. Only a rewritten stream (`hide_usage`) writes raw lines to `out`;
    /// a translated one writes what the translator makes of the payloads.
    fn on_piece(&mut self, p: Piece<'_>, hide_usage: bool, out: &mut Out<'_>) {
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
    fn line_too_long(&mut self, hide_usage: bool, out: &mut Out<'_>) {
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
            out.push(&self.held);
        }
        self.held.clear();
    }

    fn place(&mut self, fate: Fate, raw: &[u8], out: &mut Out<'_>) {
        match fate {
            Fate::Forward => out.forward(raw),
            Fate::Drop => {}
            Fate::Hold if self.held.len() + raw.len() > self.max_line => {
                self.line_too_long(true, out);
                out.forward(raw);
            }
            Fate::Hold => self.held.extend_from_slice(raw),
        }
    }

    /// Handles one SSE line (`text` without its line end) and says what becomes of its raw bytes.
    /// An event's `data` is read as soon as its first line is a whole payload (what every provider
    /// sends); otherwise its lines are joined with `\n`, as the SSE spec says, and read at its end.
    fn on_sse_line(&mut self, text: &[u8], hide_usage: bool, out: &mut Out<'_>) -> Fate {
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
                    out.push(&self.held);
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
    fn on_payload(&mut self, payload: &[u8], last: bool, out: &mut Out<'_>) -> Payload {
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
                    } else if let Some(chunk) = read_chunk(payload) {
                        p.usage_only = chunk.choices.is_empty() && chunk.usage.is_some();
                        absorb_openai(&mut self.guard, chunk);
                        p.understood = true;
                    }
                }
                Wire::Anthropic => {
                    if let Some(ev) = read_anthropic(payload) {
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
                t.on_data(payload, out.buf());
            }
        }
        p
    }

    /// Takes usage from a buffered JSON body and, when translating, builds the client's body; false when
    /// the bytes are not (yet) a whole response.
    fn absorb_json_body(&mut self) -> bool {
        let bytes = match self.first.take() {
            Some(first) => first,
            None => std::mem::take(&mut self.buf).freeze(),
        };
        let whole = match (&mut self.reader, self.wire) {
            (Some(r), _) => r.on_whole(&bytes, &mut self.guard),
            (None, Wire::OpenAi) => read_chunk(&bytes).map(|c| absorb_openai(&mut self.guard, c)).is_some(),
            (None, Wire::Anthropic) => {
                read_anthropic(&bytes).map(|m| absorb_anthropic(&mut self.guard, m, true)).is_some()
            }
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
            self.tail = Some(translated.map(|v| Bytes::from(v.to_string())).unwrap_or(bytes));
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
                let no_frame = Bytes::new();
                let mut out = Out::new(&no_frame);
                let mut scanner = std::mem::replace(&mut self.scanner, LineScanner::new(0));
                scanner.finish(&mut |p| self.on_piece(p, hide_usage, &mut out));
                self.scanner = scanner;
                if let Some(data) = self.pending.take() {
                    let p = self.on_payload(&data, true, &mut out);
                    if hide_usage && !p.usage_only {
                        out.push(&self.held);
                    }
                }
                self.held.clear();
                if let Translation::Stream(t) = &mut self.translation {
                    t.on_end(out.buf());
                }
                let out = out.finish();
                if !out.is_empty() {
                    self.tail = Some(out);
                }
            }
        }
        let status = self.guard.event.status_code;
        self.guard.finish(Outcome::Ok, status);
    }
}

/// An OpenAI chunk or whole response as metering reads it: the direct reader's answer, or serde's when
/// that one declines (it answers only where serde would answer the same).
fn read_chunk(payload: &[u8]) -> Option<ChunkMeta<'_>> {
    fast::chunk_meta(payload).or_else(|| serde_json::from_slice::<ChunkMeta>(payload).ok())
}

/// An Anthropic stream event or whole message, read the same way.
fn read_anthropic(payload: &[u8]) -> Option<AnthropicMeta<'_>> {
    fast::anthropic_meta(payload).or_else(|| serde_json::from_slice::<AnthropicMeta>(payload).ok())
}

/// Takes usage, model, finish reason and content text from an OpenAI chunk or whole response.
fn absorb_openai(g: &mut CallGuard, chunk: ChunkMeta<'_>) {
    if let Some(m) = chunk.model.filter(|m| !m.is_empty()) {
        set_text(&mut g.event.served_model, &m);
    }
    // Usage first: a whole response carries it next to its text, which then needs no copy.
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
    for c in chunk.choices.into_iter() {
        if let Some(fr) = c.finish_reason {
            set_text(&mut g.event.finish_reason, &fr);
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
}

/// Applies an Anthropic usage object. Anthropic's `input_tokens` excludes cache reads and writes; the
/// event's `input_tokens` is the whole prompt. Counts in a later event (message_delta) are cumulative:
/// each field present replaces the earlier value. `output_final` is false for message_start, whose
/// `output_tokens` is a placeholder the message_delta replaces.
fn apply_anthropic_usage(g: &mut CallGuard, u: &AnthropicUsage<'_>, output_final: bool) {
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
fn absorb_anthropic(g: &mut CallGuard, m: AnthropicMeta<'_>, whole: bool) {
    let model = m.model.as_deref().or_else(|| m.message.as_ref().and_then(|msg| msg.model.as_deref()));
    if let Some(model) = model.filter(|x| !x.is_empty()) {
        set_text(&mut g.event.served_model, model);
    }
    if let Some(u) = m.message.as_ref().and_then(|msg| msg.usage.as_ref()) {
        apply_anthropic_usage(g, u, false);
    }
    if let Some(u) = &m.usage {
        apply_anthropic_usage(g, u, whole || &*m.kind == "message_delta");
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
            set_text(&mut g.event.finish_reason, r);
        }
    }
    if let Some(r) = &m.stop_reason {
        set_text(&mut g.event.finish_reason, r);
    }
    let status = g.event.status_code;
    match &*m.kind {
        // As with OpenAI's [DONE]: the client has everything once this is forwarded.
        "message_stop" => g.finish(Outcome::Ok, status),
        "error" => {
            let kind = m.error.as_ref().and_then(|e| e.kind.as_deref()).unwrap_or("upstream_error");
            set_text(&mut g.event.error_type, kind);
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
                    this.last_frame = Instant::now();
                    match frame.into_data() {
                        Ok(data) => {
                            let mut out = this.on_data(data);
                            if this.verbatim() && this.inner.size_hint().exact() == Some(0) {
                                // Once hyper has written the length it promised it stops polling and
                                // drops the body, so the end is metered now rather than at a `None`
                                // that may never be asked for.
                                this.done = true;
                                this.on_end();
                            }
                            if let Some(f) = this.filter.as_mut() {
                                out = f.on_chunk(out);
                            }
                            if out.is_empty() {
                                if this.done {
                                    return Poll::Ready(None);
                                }
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
                    if this.idle_expired(cx) {
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
        // A verbatim body has the upstream's length, when it sent one: hyper then sends Content-Length
        // rather than chunks. Anything rewritten (a cut usage chunk, a translation, a filter) may change
        // the length, so it promises none. An empty body promises none either: hyper would not poll it,
        // and its end would not be metered here.
        if self.verbatim() && !self.done {
            let hint = self.inner.size_hint();
            if hint.exact().is_some_and(|n| n > 0) {
                return hint;
            }
        }
        SizeHint::default()
    }
}

/// A JSON string as metering reads it: borrowed from the payload unless it had escapes, so reading a
/// chunk allocates only for text that is kept.
#[cfg_attr(test, derive(Debug))]
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Text<'a>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

impl Default for Text<'_> {
    fn default() -> Self {
        Text(Cow::Borrowed(""))
    }
}

impl std::ops::Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// Sets `to` to `text` (an owned copy) unless it already holds it, as a repeated `model` does.
fn set_text(to: &mut tollgate_events::Text, text: &str) {
    if to != text {
        to.clear();
        to.push_str(text);
    }
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug))]
struct ChunkMeta<'a> {
    #[serde(default, borrow)]
    model: Option<Text<'a>>,
    #[serde(default, borrow)]
    choices: Choices<'a>,
    #[serde(default)]
    usage: Option<UsageJson>,
    /// The tier the provider ran the call on (`default`, `flex`, `priority`, `scale`).
    #[serde(default, borrow)]
    service_tier: Option<Text<'a>>,
}

/// A chunk's `choices`: nearly always one, held without a `Vec` until there is a second.
#[derive(Default)]
#[cfg_attr(test, derive(Debug))]
struct Choices<'a> {
    first: Option<ChoiceMeta<'a>>,
    rest: Vec<ChoiceMeta<'a>>,
}

impl<'a> Choices<'a> {
    fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    fn into_iter(self) -> impl Iterator<Item = ChoiceMeta<'a>> {
        self.first.into_iter().chain(self.rest)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Choices<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Choices<'a>, D::Error> {
        struct V<'a>(std::marker::PhantomData<Choices<'a>>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Choices<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of choices")
            }
            fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Choices<'a>, S::Error> {
                let mut choices = Choices::default();
                while let Some(c) = seq.next_element()? {
                    if choices.first.is_none() {
                        choices.first = Some(c);
                    } else {
                        choices.rest.push(c);
                    }
                }
                Ok(choices)
            }
        }
        d.deserialize_seq(V(std::marker::PhantomData))
    }
}

#[derive(Deserialize, Default)]
#[cfg_attr(test, derive(Debug))]
struct ChoiceMeta<'a> {
    #[serde(default, borrow)]
    delta: Option<MessageMeta<'a>>,
    #[serde(default, borrow)]
    message: Option<MessageMeta<'a>>,
    /// Legacy completions.
    #[serde(default, borrow)]
    text: Option<Text<'a>>,
    #[serde(default, borrow)]
    finish_reason: Option<Text<'a>>,
}

#[derive(Deserialize, Default)]
#[cfg_attr(test, derive(Debug))]
struct MessageMeta<'a> {
    #[serde(default, borrow)]
    content: Option<Text<'a>>,
    #[serde(default, borrow)]
    reasoning_content: Option<Text<'a>>,
    #[serde(default, borrow)]
    refusal: Option<Text<'a>>,
    #[serde(default, borrow)]
    tool_calls: Option<Vec<ToolCallMeta<'a>>>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug))]
struct ToolCallMeta<'a> {
    #[serde(default, borrow)]
    function: Option<FunctionMeta<'a>>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug))]
struct FunctionMeta<'a> {
    #[serde(default, borrow)]
    name: Option<Text<'a>>,
    #[serde(default, borrow)]
    arguments: Option<Text<'a>>,
}

/// OpenAI's usage object (chat, completions, embeddings).
#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug))]
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
#[cfg_attr(test, derive(Debug))]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: Option<ReportedTokens>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug))]
struct CompletionDetails {
    #[serde(default)]
    reasoning_tokens: Option<ReportedTokens>,
}

/// What metering reads from an Anthropic stream event or whole message.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug))]
struct AnthropicMeta<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: Text<'a>,
    /// Whole message.
    #[serde(default, borrow)]
    model: Option<Text<'a>>,
    #[serde(default, borrow)]
    content: Vec<AnthropicBlockMeta<'a>>,
    #[serde(default, borrow)]
    stop_reason: Option<Text<'a>>,
    /// message_start.
    #[serde(default, borrow)]
    message: Option<AnthropicMessageMeta<'a>>,
    /// content_block_start.
    #[serde(default, borrow)]
    content_block: Option<AnthropicBlockMeta<'a>>,
    /// content_block_delta and message_delta.
    #[serde(default, borrow)]
    delta: Option<AnthropicDeltaMeta<'a>>,
    /// message_delta and whole message.
    #[serde(default, borrow)]
    usage: Option<AnthropicUsage<'a>>,
    #[serde(default, borrow)]
    error: Option<AnthropicErrorMeta<'a>>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug))]
struct AnthropicMessageMeta<'a> {
    #[serde(default, borrow)]
    model: Option<Text<'a>>,
    #[serde(default, borrow)]
    usage: Option<AnthropicUsage<'a>>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug))]
struct AnthropicBlockMeta<'a> {
    #[serde(default, borrow)]
    text: Option<Text<'a>>,
    #[serde(default, borrow)]
    thinking: Option<Text<'a>>,
    #[serde(default, borrow)]
    name: Option<Text<'a>>,
    #[serde(default)]
    input: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug))]
struct AnthropicDeltaMeta<'a> {
    #[serde(default, borrow)]
    text: Option<Text<'a>>,
    #[serde(default, borrow)]
    partial_json: Option<Text<'a>>,
    #[serde(default, borrow)]
    thinking: Option<Text<'a>>,
    #[serde(default, borrow)]
    stop_reason: Option<Text<'a>>,
}

/// Anthropic's usage object; every field may be absent from a given event.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug))]
struct AnthropicUsage<'a> {
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
    #[serde(default, borrow)]
    service_tier: Option<Text<'a>>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug))]
struct AnthropicCacheCreation {
    #[serde(default)]
    ephemeral_1h_input_tokens: Option<ReportedTokens>,
}

#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug))]
struct AnthropicErrorMeta<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: Option<Text<'a>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finish::meter::{Meter, MeterReceiver, PendingEvent};
    use crate::metrics::GatewayMetrics;
    use http_body_util::BodyExt;
    use std::collections::VecDeque;
    use std::convert::Infallible;
    use std::sync::Arc;
    use tollgate_events::{CallEvent, PriceBook, PriceTable};

    use crate::proptests::Chunks as Frames;

    /// An upstream body whose frames arrive when a test sends them; it ends when the sender is dropped.
    struct Channel(tokio::sync::mpsc::Receiver<Bytes>);

    impl Body for Channel {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
        }
    }

    /// An upstream body that says its length, as hyper's does for an answer with Content-Length.
    struct Sized(VecDeque<Bytes>);

    impl Body for Sized {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
        }
        fn size_hint(&self) -> SizeHint {
            SizeHint::with_exact(self.0.iter().map(|b| b.len() as u64).sum())
        }
    }

    fn metered<B>(inner: B, kind: BodyKind, idle: Duration) -> (MeteredBody<B>, MeterReceiver) {
        let spill = std::env::temp_dir().join(format!("tollgate-body-test-{}.jsonl", std::process::id()));
        let (m, rx) =
            Meter::new(16, Arc::new(PriceBook::new(PriceTable::builtin())), spill, Arc::new(GatewayMetrics::default()));
        let mut guard = CallGuard::new(m, CallEvent { request_id: "t".into(), ..Default::default() });
        guard.event.status_code = 200;
        guard.request_body = Some(Bytes::from_static(b"{}"));
        (MeteredBody::new(inner, guard, kind, Wire::OpenAi, Translation::None, None, idle, 64 * 1024), rx)
    }

    fn event(rx: &mut MeterReceiver) -> PendingEvent {
        match rx.try_recv_for_tests() {
            Some(p) => p,
            None => panic!("no event"),
        }
    }

    const ROLE: &[u8] =
        b"data: {\"model\":\"m\",\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n";
    const TEXT: &[u8] = b"data: {\"model\":\"m\",\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n";
    const USAGE: &[u8] =
        b"data: {\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2}}\n\n";
    const DONE: &[u8] = b"data: [DONE]\n\n";

    /// A rewritten stream hands on the upstream's own frames, not copies, when nothing in them changes;
    /// a frame that loses the usage event at its end is handed on as a slice of itself.
    #[tokio::test]
    async fn frames_forwarded_unchanged_are_not_copied() {
        let text_and_usage = Bytes::from([TEXT, USAGE].concat());
        let frames = [Bytes::from_static(ROLE), text_and_usage.clone(), Bytes::from_static(DONE)];
        let (mut body, mut rx) = metered(
            Frames(frames.iter().cloned().collect()),
            BodyKind::Sse { hide_usage: true },
            Duration::from_secs(5),
        );
        let mut got = Vec::new();
        while let Some(f) = body.frame().await {
            got.push(f.ok().and_then(|f| f.into_data().ok()).unwrap_or_default());
        }
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].as_ptr(), frames[0].as_ptr());
        assert_eq!((got[1].as_ptr(), &got[1][..]), (text_and_usage.as_ptr(), TEXT));
        assert_eq!(got[2].as_ptr(), frames[2].as_ptr());
        drop(body);
        let ev = event(&mut rx).event;
        assert_eq!((ev.input_tokens, ev.output_tokens, ev.served_model.as_str()), (7, 2, "m"));
    }

    /// Lines split across frames, and an event held back until its end, come out whole and in order.
    #[tokio::test]
    async fn held_and_split_lines_are_handed_on_in_order() {
        let stream =
            [ROLE, b"data: {\"choices\":[{\"delta\":\n", b"data: {\"content\":\"a\"}}]}\n\n", TEXT, USAGE, DONE]
                .concat();
        for cut in 1..stream.len() {
            let frames = [Bytes::copy_from_slice(&stream[..cut]), Bytes::copy_from_slice(&stream[cut..])];
            let (body, mut rx) =
                metered(Frames(frames.into()), BodyKind::Sse { hide_usage: true }, Duration::from_secs(5));
            let out = match body.collect().await {
                Ok(c) => c.to_bytes(),
                Err(e) => panic!("{e}"),
            };
            let usage_at = stream.len() - USAGE.len() - DONE.len();
            assert_eq!(&out[..], [&stream[..usage_at], DONE].concat(), "cut at {cut}");
            let p = event(&mut rx);
            assert_eq!((p.event.input_tokens, p.event.output_tokens), (7, 2));
        }
    }

    /// Strings with escapes (which cannot be borrowed from the payload) and several choices are read
    /// like any other: the content kept for estimation is the unescaped text of every choice.
    #[tokio::test]
    async fn escaped_text_and_several_choices_are_kept_for_estimation() {
        let chunk = br#"data: {"model":"m\u00e9","choices":[{"delta":{"content":"a\"b\n"}},{"index":1,"delta":{"content":"c"},"finish_reason":"st\u006fp"}]}

data: [DONE]

"#;
        let (body, mut rx) = metered(
            Frames([Bytes::from_static(chunk)].into()),
            BodyKind::Sse { hide_usage: false },
            Duration::from_secs(5),
        );
        assert!(body.collect().await.is_ok());
        let p = event(&mut rx);
        assert_eq!((p.event.served_model.as_str(), p.event.finish_reason.as_str()), ("mé", "stop"));
        let estimate = p.estimate.as_deref().map(|e| (e.output, e.output_text.as_str()));
        assert_eq!(estimate, Some((true, "a\"b\nc")));
    }

    /// The idle timeout runs from the last frame: a stream whose frames keep coming lasts longer than it,
    /// and a stream that goes quiet ends with it.
    #[tokio::test]
    async fn idle_timeout_runs_from_the_last_frame() {
        let idle = Duration::from_millis(600);
        let (tx, rx_frames) = tokio::sync::mpsc::channel(8);
        let (body, mut rx) = metered(Channel(rx_frames), BodyKind::Sse { hide_usage: false }, idle);
        let feed = tokio::spawn(async move {
            for frame in [ROLE, TEXT, TEXT, TEXT, TEXT, USAGE, DONE] {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let _ = tx.send(Bytes::from_static(frame)).await;
            }
        });
        let out = body.collect().await.map(|c| c.to_bytes());
        assert!(out.is_ok_and(|b| b.ends_with(DONE)));
        let _ = feed.await;
        assert_eq!(event(&mut rx).event.outcome, Outcome::Ok);

        let (tx, rx_frames) = tokio::sync::mpsc::channel(8);
        let (body, mut rx) = metered(Channel(rx_frames), BodyKind::Sse { hide_usage: false }, idle);
        let _ = tx.send(Bytes::from_static(ROLE)).await;
        assert!(body.collect().await.is_err());
        drop(tx);
        let ev = event(&mut rx).event;
        assert_eq!((ev.outcome, ev.error_type.as_str()), (Outcome::Timeout, "upstream_idle_timeout"));
    }

    /// A JSON answer passed on unchanged keeps the upstream's length, and is metered once that many
    /// bytes are out, even by a reader that stops there (as hyper does) and whatever the bytes are.
    #[tokio::test]
    async fn a_verbatim_json_body_has_the_upstreams_length_and_ends_with_it() {
        let whole = br#"{"model":"m","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":3,"completion_tokens":1}}"#;
        for answer in [&whole[..], b"not json"] {
            let (a, b) = answer.split_at(answer.len() / 2);
            let frames = [Bytes::copy_from_slice(a), Bytes::copy_from_slice(b)];
            let (mut body, mut rx) = metered(Sized(frames.into()), BodyKind::Json, Duration::from_secs(5));
            assert_eq!(body.size_hint().exact(), Some(answer.len() as u64));
            let mut got = Vec::new();
            while got.len() < answer.len() {
                match body.frame().await {
                    Some(Ok(f)) => got.extend_from_slice(f.data_ref().map_or(&[][..], |d| &d[..])),
                    _ => panic!("body ended early"),
                }
            }
            assert_eq!(got, answer);
            assert!(body.is_end_stream());
            drop(body);
            let ev = event(&mut rx).event;
            assert_eq!((ev.outcome, ev.status_code), (Outcome::Ok, 200));
            if answer == whole {
                assert_eq!((ev.input_tokens, ev.output_tokens), (3, 1));
            }
        }
        // Nothing to promise for an empty body (hyper would not poll it) or a rewritten one.
        let (body, _rx) = metered(Sized(VecDeque::new()), BodyKind::Json, Duration::from_secs(5));
        assert_eq!(body.size_hint().exact(), None);
        let sse = Sized([Bytes::from_static(TEXT)].into());
        let (body, _rx) = metered(sse, BodyKind::Sse { hide_usage: false }, Duration::from_secs(5));
        assert_eq!(body.size_hint().exact(), None);
    }
}
