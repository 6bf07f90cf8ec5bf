//! Redaction of streamed responses, SSE event by event, in the format the client receives.
//!
//! Network chunks are cut into whole events (a partial event waits for its end, as any SSE parser does).
//! The text deltas of each choice (OpenAI `choices[i].delta.content`) or content block (Anthropic
//! `content_block_delta` / `text_delta`) go through their own [`StreamRedactor`], so a secret spread over
//! many deltas is still seen whole. An event whose text is unchanged is forwarded byte for byte; one whose
//! text was masked or partly held back is re-serialised. Held text is released in the choice's finishing
//! chunk (OpenAI) or in an extra `content_block_delta` just before `content_block_stop` (Anthropic), and
//! whatever is left when the stream ends goes out before `[DONE]` / `message_stop`.

use super::stream::{Redactor, StreamRedactor};
use super::Counts;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The SSE dialect of the stream (the client's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SseFormat {
    OpenAi,
    Anthropic,
}

pub struct SseRedactor {
    r: Arc<Redactor>,
    format: SseFormat,
    buf: Vec<u8>,
    streams: BTreeMap<u64, StreamRedactor>,
    /// The last OpenAI chunk seen, for the envelope (`id`, `model`, `created`) of a chunk made up to release
    /// held text.
    template: Option<Value>,
    done: Counts,
}

/// Where the first event in `b` ends (after its blank line), if it is complete.
fn event_end(b: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i + 1 < b.len() {
        if b[i] == b'\n' {
            if b[i + 1] == b'\n' {
                return Some(i + 2);
            }
            if b[i + 1] == b'\r' && b.get(i + 2) == Some(&b'\n') {
                return Some(i + 3);
            }
        }
        i += 1;
    }
    None
}

/// The `data:` payload of an event (lines joined by `\n`), and its `event:` name.
fn parse_event(ev: &str) -> (Option<&str>, String) {
    let mut name = None;
    let mut data = String::new();
    for line in ev.lines() {
        if let Some(rest) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(rest.strip_prefix(' ').unwrap_or(rest));
        } else if let Some(rest) = line.strip_prefix("event:") {
            name = Some(rest.trim());
        }
    }
    (name, data)
}

fn write_event(out: &mut Vec<u8>, name: Option<&str>, data: &Value) {
    if let Some(n) = name {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(n.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(data.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}

impl SseRedactor {
    pub fn new(r: Arc<Redactor>, format: SseFormat) -> SseRedactor {
        SseRedactor { r, format, buf: Vec::new(), streams: BTreeMap::new(), template: None, done: Counts::default() }
    }

    /// What was masked so far.
    pub fn counts(&self) -> Counts {
        let mut c = self.done;
        for s in self.streams.values() {
            c.merge(&s.counts);
        }
        c
    }

    /// Bytes held back right now: a partial event plus the text held by each choice or block.
    pub fn held(&self) -> usize {
        self.buf.len() + self.streams.values().map(StreamRedactor::held).sum::<usize>()
    }

    /// Takes the next network chunk; returns the bytes to send to the client now.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::with_capacity(chunk.len() + 64);
        let mut at = 0;
        while let Some(len) = event_end(&self.buf[at..]) {
            let ev = self.buf[at..at + len].to_vec();
            self.event(&ev, &mut out);
            at += len;
        }
        self.buf.drain(..at);
        out
    }

    /// The upstream stream ended: releases every held byte.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        self.flush_all(&mut out);
        out.append(&mut self.buf);
        out
    }

    fn stream(&mut self, index: u64) -> &mut StreamRedactor {
        let r = &self.r;
        self.streams.entry(index).or_insert_with(|| StreamRedactor::new(r.clone()))
    }

    /// Releases held text of every choice/block, as events of their own.
    fn flush_all(&mut self, out: &mut Vec<u8>) {
        let indexes: Vec<u64> = self.streams.keys().copied().collect();
        for i in indexes {
            let Some(mut s) = self.streams.remove(&i) else { continue };
            let text = s.finish();
            self.done.merge(&s.counts);
            if text.is_empty() {
                continue;
            }
            match self.format {
                SseFormat::OpenAi => {
                    let mut chunk = self.template.clone().unwrap_or_else(|| json!({"object": "chat.completion.chunk"}));
                    chunk["choices"] = json!([{"index": i, "delta": {"content": text}, "finish_reason": null}]);
                    write_event(out, None, &chunk);
                }
                SseFormat::Anthropic => write_event(out, Some("content_block_delta"), &text_delta(i, text)),
            }
        }
    }

    fn event(&mut self, raw: &[u8], out: &mut Vec<u8>) {
        let Ok(ev) = std::str::from_utf8(raw) else {
            out.extend_from_slice(raw);
            return;
        };
        let (name, data) = parse_event(ev);
        if data.trim() == "[DONE]" {
            self.flush_all(out);
            out.extend_from_slice(raw);
            return;
        }
        let Ok(mut v) = serde_json::from_str::<Value>(&data) else {
            out.extend_from_slice(raw);
            return;
        };
        let changed = match self.format {
            SseFormat::OpenAi => self.openai(&mut v),
            SseFormat::Anthropic => match self.anthropic(&mut v, out) {
                Some(changed) => changed,
                None => {
                    // message_stop: release everything first.
                    self.flush_all(out);
                    false
                }
            },
        };
        if changed {
            write_event(out, name, &v);
        } else {
            out.extend_from_slice(raw);
        }
    }

    /// Masks an OpenAI chunk's content deltas; true when the chunk changed.
    fn openai(&mut self, v: &mut Value) -> bool {
        let Some(choices) = v.get_mut("choices").and_then(Value::as_array_mut) else { return false };
        let mut changed = false;
        let mut results = Vec::new();
        for (pos, c) in choices.iter().enumerate() {
            let index = c.get("index").and_then(Value::as_u64).unwrap_or(pos as u64);
            let content = c.pointer("/delta/content").and_then(Value::as_str).map(str::to_string);
            let finished = c.get("finish_reason").is_some_and(|f| !f.is_null());
            results.push((pos, index, content, finished));
        }
        for (pos, index, content, finished) in results {
            let mut text = match &content {
                Some(s) => self.stream(index).push(s),
                None => String::new(),
            };
            if finished {
                if let Some(mut s) = self.streams.remove(&index) {
                    text.push_str(&s.finish());
                    self.done.merge(&s.counts);
                }
            }
            if content.as_deref() != Some(text.as_str()) && !(content.is_none() && text.is_empty()) {
                changed = true;
                if let Some(delta) = v["choices"][pos].get_mut("delta").and_then(Value::as_object_mut) {
                    delta.insert("content".into(), Value::String(text));
                } else {
                    v["choices"][pos]["delta"] = json!({ "content": text });
                }
            }
        }
        if self.template.is_none() {
            let mut t = v.clone();
            if let Some(o) = t.as_object_mut() {
                o.remove("usage");
                o.remove("choices");
            }
            self.template = Some(t);
        }
        changed
    }

    /// Masks an Anthropic event; `None` for `message_stop`.
    fn anthropic(&mut self, v: &mut Value, out: &mut Vec<u8>) -> Option<bool> {
        let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
        match v.get("type").and_then(Value::as_str) {
            Some("content_block_delta") => {
                let Some(text) = v.pointer("/delta/text").and_then(Value::as_str).map(str::to_string) else {
                    return Some(false);
                };
                let masked = self.stream(index).push(&text);
                if masked == text {
                    return Some(false);
                }
                v["delta"]["text"] = Value::String(masked);
                Some(true)
            }
            Some("content_block_stop") => {
                if let Some(mut s) = self.streams.remove(&index) {
                    let rest = s.finish();
                    self.done.merge(&s.counts);
                    if !rest.is_empty() {
                        write_event(out, Some("content_block_delta"), &text_delta(index, rest));
                    }
                }
                Some(false)
            }
            Some("message_stop") => None,
            _ => Some(false),
        }
    }
}

fn text_delta(index: u64, text: String) -> Value {
    json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redact::Kind;

    fn openai_stream(pieces: &[&str]) -> Vec<u8> {
        let mut s = String::new();
        for p in pieces {
            let c = json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
                           "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": null}]});
            s.push_str(&format!("data: {c}\n\n"));
        }
        let end = json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
                         "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
        s.push_str(&format!("data: {end}\n\ndata: [DONE]\n\n"));
        s.into_bytes()
    }

    /// The text a client assembles from an OpenAI stream.
    fn openai_text(bytes: &[u8]) -> String {
        let s = std::str::from_utf8(bytes).unwrap();
        let mut text = String::new();
        for ev in s.split("\n\n").filter(|e| !e.is_empty()) {
            let data = ev.strip_prefix("data: ").unwrap();
            if data == "[DONE]" {
                continue;
            }
            let v: Value = serde_json::from_str(data).unwrap();
            if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
                text.push_str(t);
            }
        }
        text
    }

    #[test]
    fn a_secret_split_across_two_sse_chunks_at_every_byte_offset() {
        let r = Redactor::new(&Kind::ALL).unwrap();
        // The key is also spread over two deltas; the text has multi-byte characters around it.
        let stream = openai_stream(&["Voilà — the key is sk-proj-abcdefghij", "klmnopqrstuvwxyz0123 ✓ fin"]);
        let want_text = "Voilà — the key is [REDACTED:api_key] ✓ fin";
        for cut in 1..stream.len() {
            let mut s = SseRedactor::new(r.clone(), SseFormat::OpenAi);
            let mut out = s.push(&stream[..cut]);
            out.extend(s.push(&stream[cut..]));
            out.extend(s.finish());
            let text = openai_text(&out);
            assert_eq!(text, want_text, "cut at {cut}");
            assert_eq!(s.counts().get(Kind::ApiKey), 1);
            assert!(std::str::from_utf8(&out).is_ok());
            assert!(out.ends_with(b"data: [DONE]\n\n"));
        }
    }

    #[test]
    fn events_without_secrets_are_forwarded_byte_for_byte() {
        let r = Redactor::new(&Kind::ALL).unwrap();
        let stream = openai_stream(&["Hello", " world.", " "]);
        let mut s = SseRedactor::new(r, SseFormat::OpenAi);
        let mut out = s.push(&stream);
        out.extend(s.finish());
        // "Hello" is held until " world." shows it was a whole word, so the first chunks change; the text
        // does not.
        assert_eq!(openai_text(&out), "Hello world. ");
        let plain = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a b \"}}]}\n\n";
        let mut s = SseRedactor::new(Redactor::new(&Kind::ALL).unwrap(), SseFormat::OpenAi);
        assert_eq!(s.push(plain), plain.to_vec());
    }

    #[test]
    fn anthropic_blocks_release_held_text_before_their_stop() {
        let r = Redactor::new(&Kind::ALL).unwrap();
        let ev = |t: &str, d: Value| format!("event: {t}\ndata: {d}\n\n");
        let mut stream = String::new();
        stream.push_str(&ev("message_start", json!({"type": "message_start", "message": {"id": "m"}})));
        for p in ["Write to bob@exam", "ple.com", " or call"] {
            stream.push_str(&ev("content_block_delta", text_delta(0, p.to_string())));
        }
        stream.push_str(&ev("content_block_stop", json!({"type": "content_block_stop", "index": 0})));
        stream.push_str(&ev("message_stop", json!({"type": "message_stop"})));
        let mut s = SseRedactor::new(r, SseFormat::Anthropic);
        let mut out = s.push(stream.as_bytes());
        out.extend(s.finish());
        let out = String::from_utf8(out).unwrap();
        let mut text = String::new();
        for e in out.split("\n\n").filter(|e| e.contains("content_block_delta")) {
            let data = e.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
            let v: Value = serde_json::from_str(data).unwrap();
            text.push_str(v["delta"]["text"].as_str().unwrap());
        }
        assert_eq!(text, "Write to [REDACTED:email] or call");
        let stop = out.find("content_block_stop").unwrap();
        assert!(out.rfind("content_block_delta").unwrap() < stop);
    }
}
