//! Secret and PII redaction: detectors ([`detect`]), masking of request and response JSON bodies
//! ([`redact_json`]), and of streamed responses ([`stream`] for text arriving in pieces, [`sse`] for the
//! SSE events that carry it).

pub mod detect;
pub mod sse;
pub mod stream;

pub use detect::{Detectors, Found, Kind};
pub use sse::{SseFormat, SseRedactor};
pub use stream::{Redactor, StreamRedactor, MAX_HOLD};

use serde_json::Value;

/// How many matches of each kind were masked. Values are never kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts([u32; 8]);

impl Counts {
    pub fn add(&mut self, k: Kind) {
        let i = Kind::ALL.iter().position(|x| *x == k).unwrap_or(0);
        self.0[i] = self.0[i].saturating_add(1);
    }
    pub fn get(&self, k: Kind) -> u32 {
        Kind::ALL.iter().position(|x| *x == k).map(|i| self.0[i]).unwrap_or(0)
    }
    pub fn total(&self) -> u32 {
        self.0.iter().sum()
    }
    pub fn merge(&mut self, o: &Counts) {
        for (a, b) in self.0.iter_mut().zip(o.0) {
            *a = a.saturating_add(b);
        }
    }
    /// Non-zero counts, by kind.
    pub fn iter(&self) -> impl Iterator<Item = (Kind, u32)> + '_ {
        Kind::ALL.iter().zip(self.0).filter(|(_, n)| *n > 0).map(|(k, n)| (*k, n))
    }
    /// `email:2,card:1`: the form recorded in call-event tags.
    pub fn summary(&self) -> String {
        self.iter().map(|(k, n)| format!("{}:{n}", k.as_str())).collect::<Vec<_>>().join(",")
    }
}

/// Object keys whose string values are never text a person wrote: identifiers, enums, and binary payloads
/// (image data URLs, base64 sources), which the detectors must not touch.
const NOT_TEXT: &[&str] = &[
    "id",
    "type",
    "role",
    "model",
    "object",
    "name",
    "tool_call_id",
    "tool_use_id",
    "finish_reason",
    "stop_reason",
    "system_fingerprint",
    "image_url",
    "url",
    "source",
    "data",
    "media_type",
    "cache_control",
    "signature",
    "service_tier",
    "usage",
];

/// Masks every text string of a request or non-streamed response body, in place (both formats: message
/// contents, parts and blocks, tool arguments and results). Returns what was masked.
pub fn redact_json(r: &Redactor, v: &mut Value) -> Counts {
    let mut c = Counts::default();
    walk(r, v, &mut c);
    c
}

fn walk(r: &Redactor, v: &mut Value, c: &mut Counts) {
    match v {
        Value::String(s) => {
            if let Some(masked) = r.redact(s, c) {
                *s = masked;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| walk(r, i, c)),
        Value::Object(map) => {
            for (k, x) in map.iter_mut() {
                if !NOT_TEXT.contains(&k.as_str()) {
                    walk(r, x, c);
                }
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn all() -> std::sync::Arc<Redactor> {
        Redactor::new(&Kind::ALL).unwrap()
    }

    #[test]
    fn masks_request_texts_but_not_images_or_ids() {
        let r = all();
        let mut body = json!({"model": "gpt-4o", "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "my card is 4111 1111 1111 1111, mail me at a.b@example.com"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,DE89370400440532013000AAAA"}}]},
            {"role": "tool", "tool_call_id": "call_AKIAIOSFODNN7EXAMPLE", "content": "key=sk-proj-abcdefghijklmnopqrstuvwxyz"}
        ]});
        let c = redact_json(&r, &mut body);
        assert_eq!(c.summary(), "api_key:1,email:1,card:1");
        assert_eq!(
            body["messages"][0]["content"][0]["text"],
            "my card is [REDACTED:card], mail me at [REDACTED:email]"
        );
        assert_eq!(
            body["messages"][0]["content"][1]["image_url"]["url"],
            "data:image/png;base64,DE89370400440532013000AAAA"
        );
        assert_eq!(body["messages"][1]["tool_call_id"], "call_AKIAIOSFODNN7EXAMPLE");
        assert_eq!(body["messages"][1]["content"], "key=[REDACTED:api_key]");
    }

    /// Streams `text` cut at `cuts` and returns the concatenated output.
    fn streamed(r: &std::sync::Arc<Redactor>, text: &str, cuts: &[usize]) -> (String, Counts, usize) {
        let mut s = StreamRedactor::new(r.clone());
        let mut out = String::new();
        let mut at = 0;
        let mut max_held = 0;
        for &c in cuts {
            out.push_str(&s.push(&text[at..c]));
            max_held = max_held.max(s.held());
            at = c;
        }
        out.push_str(&s.push(&text[at..]));
        out.push_str(&s.finish());
        (out, s.counts, max_held)
    }

    const SAMPLE: &str = "Héllo ✓ — reach me at jane.doe@example.com or +44 20 7946 0958; key sk-proj-abcdefghijklmnopqrstuvwxyz0123, card 4111-1111-1111-1111, IBAN GB82 WEST 1234 5698 7654 32, token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NSJ9.SflKxwRJSMeKKF2QT4fwpM 日本語 AKIAIOSFODNN7EXAMPLE.\n-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\n-----END PRIVATE KEY-----\nbye 🙂";

    #[test]
    fn a_secret_split_at_every_byte_offset_is_masked_and_utf8_stays_intact() {
        let r = all();
        let mut counts = Counts::default();
        let want = r.redact(SAMPLE, &mut counts).unwrap();
        assert_eq!(counts.total(), 8, "{}", counts.summary());
        for cut in (1..SAMPLE.len()).filter(|c| SAMPLE.is_char_boundary(*c)) {
            let (got, c, _) = streamed(&r, SAMPLE, &[cut]);
            assert_eq!(got, want, "cut at {cut}");
            assert_eq!(c, counts, "cut at {cut}");
        }
        // One byte... one character at a time.
        let every: Vec<usize> = (1..SAMPLE.len()).filter(|c| SAMPLE.is_char_boundary(*c)).collect();
        assert_eq!(streamed(&r, SAMPLE, &every).0, want);
    }

    #[test]
    fn holds_back_only_the_word_in_progress() {
        let r = all();
        let mut s = StreamRedactor::new(r);
        let out = s.push("The answer is forty two and then some");
        // "some" could still grow into an e-mail address; everything before it is released.
        assert_eq!(out, "The answer is forty two and then ");
        assert_eq!(s.held(), 4);
        assert_eq!(s.push(" more. "), "some more. ");
        assert_eq!(s.finish(), "");
    }

    #[test]
    fn held_text_is_bounded() {
        let r = all();
        let mut s = StreamRedactor::new(r);
        let mut out = s.push("-----BEGIN PRIVATE KEY-----\n");
        for _ in 0..2000 {
            out.push_str(&s.push("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=\n"));
            assert!(s.held() <= MAX_HOLD + 64);
        }
        out.push_str(&s.finish());
        assert_eq!(out.len(), 28 + 2000 * 37);
    }

    /// Property: for random noise around the sample and random cut points (a seeded xorshift, so a
    /// failure is reproducible), streaming gives exactly the one-shot result.
    #[test]
    fn any_split_gives_the_one_shot_result() {
        let r = all();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        const NOISE: &[u8] = b" abcxyz0123456789@.+-";
        for _ in 0..200 {
            let noise: String =
                (0..next() % 40).map(|_| NOISE[(next() % NOISE.len() as u64) as usize] as char).collect();
            let text = format!("{noise}{SAMPLE}{noise}");
            let mut c = Counts::default();
            let want = r.redact(&text, &mut c).unwrap_or_else(|| text.clone());
            let mut cuts: Vec<usize> = (0..next() % 12)
                .map(|_| (next() % text.len() as u64) as usize)
                .filter(|x| text.is_char_boundary(*x))
                .collect();
            cuts.sort();
            cuts.dedup();
            let (got, gc, _) = streamed(&r, &text, &cuts);
            assert_eq!(got, want, "noise {noise:?} cuts {cuts:?}");
            assert_eq!(gc, c);
        }
    }
}
