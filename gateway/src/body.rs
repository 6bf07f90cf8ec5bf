//! The response body wrapper that meters a call as it streams: it forwards upstream frames to the client
//! as they arrive and looks only for what metering needs (first content, finish reason, usage, served
//! model). SSE bytes are forwarded unchanged, except the usage chunk that tollgate itself asked for on
//! behalf of a client that did not; that one event is cut out. The wrapper owns the call's `CallGuard`,
//! so however the body ends (finished, upstream cut, idle timeout, client hung up and hyper dropped it)
//! exactly one event is emitted.

use crate::meter::CallGuard;
use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use serde::Deserialize;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};
use tollgate_events::Outcome;

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
    inner: Incoming,
    guard: CallGuard,
    kind: BodyKind,
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
}

impl MeteredBody {
    pub fn new(inner: Incoming, guard: CallGuard, kind: BodyKind, idle: Duration) -> MeteredBody {
        MeteredBody {
            inner,
            guard,
            kind,
            buf: BytesMut::new(),
            skipping: false,
            idle,
            sleep: Box::pin(tokio::time::sleep(idle)),
            done: false,
            deferred_error: None,
        }
    }

    /// Inspects one data frame; returns what to forward to the client.
    fn on_data(&mut self, data: Bytes) -> Bytes {
        self.guard.event.response_bytes += data.len() as u64;
        match self.kind {
            BodyKind::Json => {
                self.guard.mark_content();
                if self.buf.len() + data.len() <= MAX_JSON_INSPECT {
                    self.buf.extend_from_slice(&data);
                }
                data
            }
            BodyKind::Sse { hide_usage } => {
                self.buf.extend_from_slice(&data);
                let mut out = if hide_usage { BytesMut::with_capacity(data.len()) } else { BytesMut::new() };
                let mut consumed = 0;
                while let Some(nl) = memchr::memchr(b'\n', &self.buf[consumed..]) {
                    let line_end = consumed + nl + 1;
                    let keep = self.on_sse_line(consumed, line_end, hide_usage);
                    if hide_usage && keep {
                        out.extend_from_slice(&self.buf[consumed..line_end]);
                    }
                    consumed = line_end;
                }
                let _ = self.buf.split_to(consumed);
                if hide_usage {
                    out.freeze()
                } else {
                    data
                }
            }
        }
    }

    /// Handles the SSE line `buf[start..end]` (with its `\n`); returns whether to forward it.
    fn on_sse_line(&mut self, start: usize, end: usize, hide_usage: bool) -> bool {
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
        if payload == b"[DONE]" {
            // The client has everything once this is forwarded; it may hang up before the upstream's end
            // of body reaches us, and that is still a complete call.
            let status = self.guard.event.status_code;
            self.guard.finish(Outcome::Ok, status);
            return true;
        }
        let Ok(chunk) = serde_json::from_slice::<ChunkMeta>(payload) else { return true };
        let usage_only = chunk.choices.is_empty() && chunk.usage.is_some();
        let text_before = self.guard.output_text.len();
        self.absorb(chunk);
        if self.guard.output_text.len() > text_before {
            self.guard.mark_content();
        }
        if hide_usage && usage_only {
            self.skipping = true;
            return false;
        }
        true
    }

    /// Takes usage, model, finish reason and content text from a chunk or a whole response.
    fn absorb(&mut self, chunk: ChunkMeta) {
        let g = &mut self.guard;
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
        if let Some(u) = chunk.usage {
            g.have_input_usage = true;
            g.have_output_usage = true;
            g.event.input_tokens = u.prompt_tokens;
            g.event.output_tokens = u.completion_tokens;
            g.event.cached_input_tokens = u.prompt_tokens_details.and_then(|d| d.cached_tokens).unwrap_or(0);
            g.event.reasoning_tokens = u.completion_tokens_details.and_then(|d| d.reasoning_tokens).unwrap_or(0);
        }
    }

    /// Takes usage from a buffered JSON body; false when the bytes are not (yet) a whole response.
    fn absorb_json_body(&mut self) -> bool {
        match serde_json::from_slice::<ChunkMeta>(&std::mem::take(&mut self.buf)) {
            Ok(chunk) => {
                self.absorb(chunk);
                true
            }
            Err(_) => false,
        }
    }

    fn on_end(&mut self) {
        if self.kind == BodyKind::Json {
            self.absorb_json_body();
        }
        let status = self.guard.event.status_code;
        self.guard.finish(Outcome::Ok, status);
    }
}

impl Drop for MeteredBody {
    fn drop(&mut self) {
        // A client that read a whole JSON body may close before we saw the upstream's end of body: if the
        // bytes parse as a complete response, the call is complete.
        if !self.done && self.kind == BodyKind::Json && !self.guard.finished && self.absorb_json_body() {
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
                            let out = this.on_data(data);
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
        self.done && self.deferred_error.is_none()
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
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
    #[serde(default)]
    completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Deserialize)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct CompletionDetails {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}
