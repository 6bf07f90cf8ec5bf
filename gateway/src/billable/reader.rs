//! Readers that meter the answers of the billable endpoints beyond chat and Messages, plugged into
//! `MeteredBody` in place of its chat/Messages scan: a Responses API answer forwarded byte for byte
//! (tokens of every kind, the served model, how it ended, built-in tool calls, and the response id,
//! remembered with the upstream that holds it), and the media endpoints (audio seconds, characters,
//! images), whose usage is counted in the units their prices are quoted in.

use super::media_usage::{image_usage, transcription_usage};
use super::response_ids;
use super::responses_usage::ResponsesMeta;
use crate::finish::CallGuard;
use bytes::Bytes;
use serde_json::Value;
use std::sync::Arc;
use tollgate_events::{Outcome, UnitUsage, UsageSource};

/// Non-token usage of a call and where its numbers came from, carried by the call's guard to the
/// metering task (which prices it with the unit price table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Units {
    pub usage: UnitUsage,
    pub source: UsageSource,
}

/// How an answer of one of these endpoints is read.
pub enum BodyReader {
    /// A Responses API answer (whole or SSE).
    Responses { meta: Box<ResponsesMeta>, text_seen: usize, remembered: bool },
    /// A transcription or translation; the upload gives the duration when the answer has none.
    Transcription { upload: Option<Bytes> },
    /// Speech: priced by the characters of the request's input, known before the answer.
    Speech(UnitUsage),
    /// An image generation: images by size and quality (from the request), or tokens.
    Images { request: Value },
    /// Moderations: free, nothing to read.
    Free,
}

impl BodyReader {
    pub fn responses() -> BodyReader {
        BodyReader::Responses { meta: Box::default(), text_seen: 0, remembered: false }
    }

    /// One SSE `data:` payload.
    pub fn on_event(&mut self, payload: &[u8], g: &mut CallGuard) {
        if let BodyReader::Responses { meta, .. } = self {
            meta.absorb_event(payload);
            self.sync(g);
        }
    }

    /// A whole body; false when it is not an answer this reader understands (the call is then
    /// estimated like any other unreadable answer).
    pub fn on_whole(&mut self, body: &[u8], g: &mut CallGuard) -> bool {
        let units = match self {
            BodyReader::Responses { meta, .. } => {
                let ok = meta.absorb_whole(body);
                self.sync(g);
                return ok;
            }
            BodyReader::Transcription { upload } => {
                let (usage, source) = transcription_usage(body, upload.as_deref());
                Units { usage, source }
            }
            BodyReader::Speech(u) => Units { usage: u.clone(), source: UsageSource::Provider },
            BodyReader::Images { request } => {
                Units { usage: image_usage(request, body), source: UsageSource::Provider }
            }
            BodyReader::Free => Units { usage: UnitUsage::default(), source: UsageSource::Provider },
        };
        // These endpoints have no token usage to estimate: their units are the whole usage.
        g.have_input_usage = true;
        g.have_output_usage = true;
        if !units.usage.is_empty() {
            g.units = Some(Box::new(units));
        }
        true
    }

    /// Copies what a Responses answer told so far into the call's event.
    fn sync(&mut self, g: &mut CallGuard) {
        let BodyReader::Responses { meta, text_seen, remembered } = self else { return };
        if let Some(new) = meta.output_text.get(*text_seen..).filter(|t| !t.is_empty()) {
            g.push_output(new);
            *text_seen = meta.output_text.len();
        }
        if let Some(m) = meta.model.as_ref().filter(|m| **m != g.event.served_model) {
            g.event.served_model = m.as_str().into();
        }
        if let (Some(id), false) = (&meta.response_id, *remembered) {
            if !g.event.upstream.is_empty() {
                response_ids::global().remember(id, Arc::from(g.event.upstream.as_str()));
                *remembered = true;
            }
        }
        if let Some(u) = meta.usage {
            let ev = &mut g.event;
            (ev.input_tokens, ev.cached_input_tokens, ev.cache_write_tokens) = (u.input, u.cached, u.cache_write);
            (ev.output_tokens, ev.reasoning_tokens) = (u.output, u.reasoning);
            g.have_input_usage = true;
            g.have_output_usage = true;
        }
        if !meta.tool_calls.is_empty() {
            let usage = UnitUsage { tool_calls: meta.tool_calls.clone(), ..Default::default() };
            g.units = Some(Box::new(Units { usage, source: UsageSource::Provider }));
        }
        if let Some(f) = &meta.finish {
            g.event.finish_reason = f.as_str().into();
        }
        if meta.terminal {
            let status = g.event.status_code;
            match &meta.error {
                Some(code) => {
                    g.event.error_type = code.as_str().into();
                    g.finish(Outcome::UpstreamError, status);
                }
                None => g.finish(Outcome::Ok, status),
            }
        }
    }
}
