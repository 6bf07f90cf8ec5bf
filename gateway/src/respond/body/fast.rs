//! A direct reader of OpenAI chunks and bodies ([`ChunkMeta`]) and Anthropic events and messages
//! ([`AnthropicMeta`]) for what metering takes from them, in place of serde's derived deserializer on the
//! stream's hot path: every chunk of every stream goes through here, and serde's generic machinery
//! (visitors per field, a `Text` per string, each skipped value walked through `IgnoredAny`) was the
//! largest single cost of a metered stream.
//!
//! The rule that keeps it honest: it answers only when serde would give the same answer. It walks the
//! top-level object, `choices`, and each choice's `delta`/`message` itself, validating every value it
//! skips at least as strictly as serde_json does (string escapes and control characters, number
//! grammar, literals, nesting depth, trailing bytes; UTF-8 in every key and every string it keeps), and
//! hands anything unusual back: a duplicated field, a key with an escape or outside ASCII, a value of an
//! unexpected type, a struct written as an array. `None` means "ask serde", never "not a chunk". Nested
//! values that are rare or small (`usage`, `tool_calls`, Anthropic's `message`, `content_block`,
//! `content`, `error`) and strings with escapes are cut out by extent and given to serde as they are, so
//! their meaning is serde's by construction.

use super::{
    AnthropicBlockMeta, AnthropicDeltaMeta, AnthropicMeta, ChoiceMeta, Choices, ChunkMeta, CompletionDetails,
    MessageMeta, PromptDetails, Text, UsageJson,
};
use serde::Deserialize;
use std::borrow::Cow;
use tollgate_events::ReportedTokens;

/// Deeper than this, the payload goes to serde (whose own limit is 128 levels).
const MAX_DEPTH: u32 = 64;

/// The bytes that end a run of plain string content: the closing quote, an escape, a control character.
const SPECIAL: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 0x20 {
        t[c] = true;
        c += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// Reads an OpenAI chunk or whole response as serde would, or `None` to let serde decide.
pub(super) fn chunk_meta(payload: &[u8]) -> Option<ChunkMeta<'_>> {
    let mut s = Scan { b: payload, i: 0, depth: 0 };
    s.ws();
    let mut meta = ChunkMeta { model: None, choices: Choices::default(), usage: None, service_tier: None };
    let mut seen = Seen::default();
    s.object(|s, key| {
        match key {
            b"model" => s.text_field(&mut seen, 0, &mut meta.model)?,
            b"choices" => {
                seen.once(1)?;
                s.choices(&mut meta.choices)?;
            }
            b"usage" => {
                seen.once(2)?;
                meta.usage = s.opt_usage()?;
            }
            b"service_tier" => s.text_field(&mut seen, 3, &mut meta.service_tier)?,
            _ => s.skip()?,
        }
        Some(())
    })?;
    s.ws();
    (s.i == payload.len()).then_some(meta)
}

/// Reads an Anthropic stream event or whole message as serde would, or `None` to let serde decide. The
/// event's own fields and `delta` (every `content_block_delta`) are read here; the nested objects that
/// come once per stream (`message`, `content_block`, `usage`, `content`, `error`) are cut out and read
/// by serde.
pub(super) fn anthropic_meta<'a>(payload: &'a [u8]) -> Option<AnthropicMeta<'a>> {
    let mut s = Scan { b: payload, i: 0, depth: 0 };
    s.ws();
    let mut meta = AnthropicMeta {
        kind: Text::default(),
        model: None,
        content: Vec::new(),
        stop_reason: None,
        message: None,
        content_block: None,
        delta: None,
        usage: None,
        error: None,
    };
    let mut seen = Seen::default();
    s.object(|s, key| {
        match key {
            b"type" => {
                seen.once(0)?;
                // Not an `Option`: `null` is an error to serde.
                meta.kind = s.opt_text()??;
            }
            b"model" => s.text_field(&mut seen, 1, &mut meta.model)?,
            b"content" => {
                seen.once(2)?;
                meta.content = s.serde::<Vec<AnthropicBlockMeta<'a>>>()?;
            }
            b"stop_reason" => s.text_field(&mut seen, 3, &mut meta.stop_reason)?,
            b"message" => s.serde_field(&mut seen, 4, &mut meta.message)?,
            b"content_block" => s.serde_field(&mut seen, 5, &mut meta.content_block)?,
            b"delta" => {
                seen.once(6)?;
                meta.delta = s.opt_anthropic_delta()?;
            }
            b"usage" => s.serde_field(&mut seen, 7, &mut meta.usage)?,
            b"error" => s.serde_field(&mut seen, 8, &mut meta.error)?,
            _ => s.skip()?,
        }
        Some(())
    })?;
    s.ws();
    (s.i == payload.len()).then_some(meta)
}

/// Fields already read: serde's derived deserializer rejects a struct field given twice.
#[derive(Default)]
struct Seen(u16);

impl Seen {
    fn once(&mut self, bit: u16) -> Option<()> {
        let m = 1 << bit;
        if self.0 & m != 0 {
            return None;
        }
        self.0 |= m;
        Some(())
    }
}

struct Scan<'a> {
    b: &'a [u8],
    i: usize,
    depth: u32,
}

impl<'a> Scan<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    /// An object at the cursor: `field` is called with the cursor on each value (after the colon and
    /// any whitespace) and must leave it just past the value.
    fn object(&mut self, mut field: impl FnMut(&mut Scan<'a>, &'a [u8]) -> Option<()>) -> Option<()> {
        self.container(b'{', b'}', |s| {
            let key = s.key()?;
            s.ws();
            s.eat(b':')?;
            s.ws();
            field(s, key)
        })
    }

    /// An array at the cursor: `element` is called with the cursor on each element and must leave it
    /// just past it.
    fn array(&mut self, element: impl FnMut(&mut Scan<'a>) -> Option<()>) -> Option<()> {
        self.container(b'[', b']', element)
    }

    /// `open`, items separated by commas (each read by `item`, which must leave the cursor just past
    /// it), `close`; whitespace anywhere between; one level deeper while inside.
    fn container(&mut self, open: u8, close: u8, mut item: impl FnMut(&mut Scan<'a>) -> Option<()>) -> Option<()> {
        self.eat(open)?;
        self.enter()?;
        self.ws();
        if self.eat(close).is_none() {
            loop {
                item(self)?;
                self.ws();
                match self.peek()? {
                    b',' => {
                        self.i += 1;
                        self.ws();
                    }
                    c if c == close => {
                        self.i += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        self.depth -= 1;
        Some(())
    }

    fn enter(&mut self) -> Option<()> {
        self.depth += 1;
        (self.depth <= MAX_DEPTH).then_some(())
    }

    /// A key without escapes, in ASCII (serde unescapes a key before matching it, and rejects one that
    /// is not UTF-8 even when the field is unknown; the fields read here are ASCII).
    fn key(&mut self) -> Option<&'a [u8]> {
        let (start, end, escaped) = self.string()?;
        let key = &self.b[start..end];
        (!escaped && key.is_ascii()).then_some(key)
    }

    /// A string at the cursor: its content's range and whether it has escapes. Rejects what serde_json
    /// rejects in any string: a control character, an unknown escape, `\u` without four hex digits (it
    /// does not check UTF-8 in a string it skips, nor does this; strings that are kept are checked).
    fn string(&mut self) -> Option<(usize, usize, bool)> {
        self.eat(b'"')?;
        let start = self.i;
        let mut escaped = false;
        // A byte loop with a table: the strings of a chunk are short (keys, ids, a token or two of
        // text), where a vectorised search costs more to set up than it saves.
        loop {
            let c = *self.b.get(self.i)?;
            self.i += 1;
            if !SPECIAL[usize::from(c)] {
                continue;
            }
            match c {
                b'"' => return Some((start, self.i - 1, escaped)),
                b'\\' => {
                    escaped = true;
                    match *self.b.get(self.i)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 1,
                        b'u' => {
                            let hex = self.b.get(self.i + 1..self.i + 5)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return None;
                            }
                            self.i += 5;
                        }
                        _ => return None,
                    }
                }
                // A control character.
                _ => return None,
            }
        }
    }

    /// `null` or a string, as serde reads an `Option<Text>`; a string with escapes is unescaped by serde.
    fn opt_text(&mut self) -> Option<Option<Text<'a>>> {
        if self.peek()? == b'n' {
            return self.literal(b"null").map(|()| None);
        }
        let from = self.i;
        let (start, end, escaped) = self.string()?;
        if escaped {
            return serde_json::from_slice::<Text<'a>>(&self.b[from..self.i]).ok().map(Some);
        }
        let text = std::str::from_utf8(&self.b[start..end]).ok()?;
        Some(Some(Text(Cow::Borrowed(text))))
    }

    /// A text field of a struct: once only, `null` or a string.
    fn text_field(&mut self, seen: &mut Seen, bit: u16, to: &mut Option<Text<'a>>) -> Option<()> {
        seen.once(bit)?;
        *to = self.opt_text()?;
        Some(())
    }

    /// A field of a struct that serde reads: once only, `null` or the value.
    fn serde_field<T: Deserialize<'a>>(&mut self, seen: &mut Seen, bit: u16, to: &mut Option<T>) -> Option<()> {
        seen.once(bit)?;
        *to = self.opt_serde()?;
        Some(())
    }

    /// `null` or a value serde reads from its own bytes (cut out by extent, validated while skipping).
    fn opt_serde<T: Deserialize<'a>>(&mut self) -> Option<Option<T>> {
        let raw = self.raw()?;
        if raw == b"null" {
            return Some(None);
        }
        serde_json::from_slice::<T>(raw).ok().map(Some)
    }

    /// A value serde reads from its own bytes (`null` included, which most types refuse).
    fn serde<T: Deserialize<'a>>(&mut self) -> Option<T> {
        serde_json::from_slice::<T>(self.raw()?).ok()
    }

    /// An OpenAI `usage` value as serde reads an `Option<UsageJson>`. Every whole response and the last
    /// chunk of a metered stream carry one, and serde's visitors (a `ReportedTokens` through
    /// `deserialize_any` per count) cost about as much as the rest of the body. Read here when it is an
    /// object of plain counts: unsigned integers or (for the optional ones) `null`, other fields of any
    /// JSON. Anything else (a count that is negative, fractional, a string or out of range; a duplicated
    /// field; a key with an escape) goes to serde as before, from the value's own bytes.
    fn opt_usage(&mut self) -> Option<Option<UsageJson>> {
        if self.peek()? == b'n' {
            return self.literal(b"null").map(|()| None);
        }
        let (from, depth) = (self.i, self.depth);
        if let Some(u) = self.usage() {
            return Some(Some(u));
        }
        (self.i, self.depth) = (from, depth);
        self.opt_serde()
    }

    fn usage(&mut self) -> Option<UsageJson> {
        let mut u = UsageJson {
            prompt_tokens: ReportedTokens::default(),
            completion_tokens: ReportedTokens::default(),
            prompt_tokens_details: None,
            completion_tokens_details: None,
        };
        let mut seen = Seen::default();
        self.object(|s, key| {
            match key {
                b"prompt_tokens" => {
                    seen.once(0)?;
                    u.prompt_tokens = s.count()?;
                }
                b"completion_tokens" => {
                    seen.once(1)?;
                    u.completion_tokens = s.count()?;
                }
                b"prompt_tokens_details" => {
                    seen.once(2)?;
                    u.prompt_tokens_details =
                        s.opt_details(b"cached_tokens")?.map(|cached_tokens| PromptDetails { cached_tokens });
                }
                b"completion_tokens_details" => {
                    seen.once(3)?;
                    u.completion_tokens_details = s
                        .opt_details(b"reasoning_tokens")?
                        .map(|reasoning_tokens| CompletionDetails { reasoning_tokens });
                }
                _ => s.skip()?,
            }
            Some(())
        })?;
        Some(u)
    }

    /// `null` (`None`) or a details object whose one field of interest, `field`, is an optional count:
    /// `Some(None)` when the object lacks it or has it `null`.
    fn opt_details(&mut self, field: &[u8]) -> Option<Option<Option<ReportedTokens>>> {
        if self.peek()? == b'n' {
            return self.literal(b"null").map(|()| None);
        }
        let mut count = None;
        let mut seen = Seen::default();
        self.object(|s, key| {
            if key == field {
                seen.once(0)?;
                if s.peek()? == b'n' {
                    s.literal(b"null")?;
                } else {
                    count = Some(s.count()?);
                }
            } else {
                s.skip()?;
            }
            Some(())
        })?;
        Some(Some(count))
    }

    /// A token count written as a plain unsigned integer that fits a `u64` (what serde_json hands
    /// `ReportedTokens` as `visit_u64`); `None` for any other number or value.
    fn count(&mut self) -> Option<ReportedTokens> {
        let start = self.i;
        let mut value: u64 = 0;
        while let Some(c) = self.peek().filter(u8::is_ascii_digit) {
            value = value.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
            self.i += 1;
        }
        let n = self.i - start;
        // No digits, a leading zero, or a fraction or exponent to follow: serde's answer, not this one.
        if n == 0 || (n > 1 && self.b[start] == b'0') || matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        Some(ReportedTokens { value, anomalous: false })
    }

    /// The bytes of the value at the cursor, skipped (and so validated).
    fn raw(&mut self) -> Option<&'a [u8]> {
        let from = self.i;
        self.skip()?;
        Some(&self.b[from..self.i])
    }

    /// An Anthropic event's `delta`: text, JSON or thinking as it streams, or the stop reason.
    fn opt_anthropic_delta(&mut self) -> Option<Option<AnthropicDeltaMeta<'a>>> {
        if self.peek()? == b'n' {
            return self.literal(b"null").map(|()| None);
        }
        let mut d = AnthropicDeltaMeta { text: None, partial_json: None, thinking: None, stop_reason: None };
        let mut seen = Seen::default();
        self.object(|s, key| {
            match key {
                b"text" => s.text_field(&mut seen, 0, &mut d.text)?,
                b"partial_json" => s.text_field(&mut seen, 1, &mut d.partial_json)?,
                b"thinking" => s.text_field(&mut seen, 2, &mut d.thinking)?,
                b"stop_reason" => s.text_field(&mut seen, 3, &mut d.stop_reason)?,
                _ => s.skip()?,
            }
            Some(())
        })?;
        Some(Some(d))
    }

    /// `choices`: an array of objects (serde accepts no `null` here; a choice written as an array is
    /// left to serde). Filled in place: these structs are a few hundred bytes, and returning them by
    /// value through each level copied them every time.
    fn choices(&mut self, choices: &mut Choices<'a>) -> Option<()> {
        self.array(|s| {
            let c = if choices.first.is_none() {
                choices.first.insert(ChoiceMeta::default())
            } else {
                choices.rest.push(ChoiceMeta::default());
                choices.rest.last_mut()?
            };
            s.choice(c)
        })
    }

    fn choice(&mut self, c: &mut ChoiceMeta<'a>) -> Option<()> {
        let mut seen = Seen::default();
        self.object(|s, key| {
            match key {
                b"delta" => {
                    seen.once(0)?;
                    s.opt_message(&mut c.delta)?;
                }
                b"message" => {
                    seen.once(1)?;
                    s.opt_message(&mut c.message)?;
                }
                b"text" => s.text_field(&mut seen, 2, &mut c.text)?,
                b"finish_reason" => s.text_field(&mut seen, 3, &mut c.finish_reason)?,
                _ => s.skip()?,
            }
            Some(())
        })
    }

    /// `null` (`to` stays `None`) or a message object, read into `to`.
    fn opt_message(&mut self, to: &mut Option<MessageMeta<'a>>) -> Option<()> {
        if self.peek()? == b'n' {
            return self.literal(b"null");
        }
        let m = to.insert(MessageMeta::default());
        let mut seen = Seen::default();
        self.object(|s, key| {
            match key {
                b"content" => s.text_field(&mut seen, 0, &mut m.content)?,
                b"reasoning_content" => s.text_field(&mut seen, 1, &mut m.reasoning_content)?,
                b"refusal" => s.text_field(&mut seen, 2, &mut m.refusal)?,
                b"tool_calls" => s.serde_field(&mut seen, 3, &mut m.tool_calls)?,
                _ => s.skip()?,
            }
            Some(())
        })
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.i.checked_add(word.len())?;
        (self.b.get(self.i..end)? == word).then(|| self.i = end)
    }

    /// Skips one value, validating it as serde_json's `IgnoredAny` does (or more strictly).
    fn skip(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' => self.object(|s, _| s.skip()),
            b'[' => self.array(|s| s.skip()),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    /// JSON's number grammar: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    fn number(&mut self) -> Option<()> {
        let _ = self.eat(b'-');
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.eat(b'.').is_some() {
            self.peek().filter(u8::is_ascii_digit)?;
            self.digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            self.peek().filter(u8::is_ascii_digit)?;
            self.digits();
        }
        Some(())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    //! The direct reader against serde's derived deserializer, which is the definition of the answer:
    //! on generated chunks and bodies (every field of interest in every type, unknown fields with any
    //! JSON, repeated fields, escapes, any whitespace) and on byte-level corruptions of them, whenever the
    //! reader answers serde answers the same; and on chunks in the forms providers send, it answers.
    use super::super::{AnthropicMeta, ChunkMeta};
    use super::{anthropic_meta, chunk_meta};
    use proptest::prelude::*;

    fn serde(payload: &[u8]) -> Option<String> {
        serde_json::from_slice::<ChunkMeta>(payload).ok().map(|c| format!("{c:?}"))
    }

    fn fast(payload: &[u8]) -> Option<String> {
        chunk_meta(payload).map(|c| format!("{c:?}"))
    }

    fn serde_anthropic(payload: &[u8]) -> Option<String> {
        serde_json::from_slice::<AnthropicMeta>(payload).ok().map(|c| format!("{c:?}"))
    }

    fn fast_anthropic(payload: &[u8]) -> Option<String> {
        anthropic_meta(payload).map(|c| format!("{c:?}"))
    }

    /// A JSON string literal of `s` as a serializer writes it (escapes where needed).
    fn lit(s: &str) -> String {
        serde_json::to_string(s).unwrap_or_default()
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z ]{0,12}",
            any::<String>(),
            Just("line\nbreak \"quoted\" back\\slash \u{1F600} \u{7}".to_string()),
        ]
    }

    /// Any JSON value, as text, with optional whitespace; depth-limited.
    fn any_json() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("null".to_string()),
            Just("true".to_string()),
            Just("false".to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| format!("{f:e}")),
            Just("-0.5E+3".to_string()),
            text().prop_map(|s| lit(&s)),
        ];
        leaf.prop_recursive(4, 24, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(" , "))),
                prop::collection::vec(("[a-z_]{1,8}", inner), 0..4).prop_map(|kv| {
                    let parts: Vec<String> = kv.iter().map(|(k, v)| format!("{}:{v}", lit(k))).collect();
                    format!("{{ {} }}", parts.join(","))
                }),
            ]
        })
    }

    /// A value for a field metering reads: mostly the type serde expects, sometimes anything.
    fn text_or_any() -> impl Strategy<Value = String> {
        prop_oneof![6 => text().prop_map(|s| lit(&s)), 2 => Just("null".to_string()), 1 => any_json()]
    }

    fn object(fields: Vec<(String, String)>, ws: &str) -> String {
        let parts: Vec<String> = fields.iter().map(|(k, v)| format!("{}{ws}:{ws}{v}", lit(k))).collect();
        format!("{{{ws}{}{ws}}}", parts.join(&format!("{ws},{ws}")))
    }

    /// Fields of one object: each named one maybe present (rarely twice), plus unknown ones; shuffled.
    fn fields(named: Vec<(&'static str, BoxedStrategy<String>)>, ws: &'static str) -> impl Strategy<Value = String> {
        let picks: Vec<BoxedStrategy<Vec<(String, String)>>> = named
            .into_iter()
            .map(|(k, v)| {
                prop::collection::vec(v, 0..=2)
                    .prop_map(move |vs| {
                        // Twice only now and then: serde rejects a repeated field.
                        let n = if vs.len() == 2 && vs[0].len() % 5 != 0 { 1 } else { vs.len() };
                        vs.into_iter().take(n).map(|v| (k.to_string(), v)).collect()
                    })
                    .boxed()
            })
            .collect();
        let extra = prop::collection::vec(("[a-z_]{1,10}", any_json()), 0..3);
        (picks, extra, any::<prop::sample::Index>()).prop_map(move |(picks, extra, rot)| {
            let mut all: Vec<(String, String)> = picks.into_iter().flatten().collect();
            all.extend(extra);
            if !all.is_empty() {
                let n = rot.index(all.len());
                all.rotate_left(n);
            }
            object(all, ws)
        })
    }

    /// A token count: mostly plain, sometimes each form serde reads differently or refuses.
    fn count() -> BoxedStrategy<String> {
        prop_oneof![
            6 => any::<u64>().prop_map(|n| n.to_string()),
            2 => (0u64..100).prop_map(|n| n.to_string()),
            1 => prop::sample::select(vec!["-3", "-0", "2.5", "1e3", "7E0", "05", "00", "\"7\"", "null", "true",
                "18446744073709551615", "18446744073709551616", "99999999999999999999999"])
                .prop_map(str::to_string),
        ]
        .boxed()
    }

    fn details(field: &'static str, ws: &'static str) -> BoxedStrategy<String> {
        prop_oneof![
            1 => Just("null".to_string()),
            5 => fields(vec![(field, count()), ("audio_tokens", count())], ws),
            1 => any_json(),
        ]
        .boxed()
    }

    fn usage(ws: &'static str) -> BoxedStrategy<String> {
        prop_oneof![
            1 => Just("null".to_string()),
            2 => (count(), count(), count()).prop_map(|(p, c, k)| format!(
                r#"{{"prompt_tokens":{p},"completion_tokens":{c},"total_tokens":1,"prompt_tokens_details":{{"cached_tokens":{k}}},"completion_tokens_details":{{"reasoning_tokens":0}}}}"#
            )),
            6 => fields(
                vec![
                    ("prompt_tokens", count()),
                    ("completion_tokens", count()),
                    ("total_tokens", count()),
                    ("prompt_tokens_details", details("cached_tokens", ws)),
                    ("completion_tokens_details", details("reasoning_tokens", ws)),
                ],
                ws,
            ),
            1 => any_json(),
        ]
        .boxed()
    }

    fn message(ws: &'static str) -> BoxedStrategy<String> {
        let tool = (text(), text()).prop_map(|(n, a)| {
            format!(
                r#"[{{"index":0,"id":"c1","type":"function","function":{{"name":{},"arguments":{}}}}}]"#,
                lit(&n),
                lit(&a)
            )
        });
        prop_oneof![
            1 => Just("null".to_string()),
            8 => fields(
                vec![
                    ("content", text_or_any().boxed()),
                    ("reasoning_content", text_or_any().boxed()),
                    ("refusal", text_or_any().boxed()),
                    ("tool_calls", prop_oneof![3 => tool, 1 => any_json()].boxed()),
                    ("role", Just("\"assistant\"".to_string()).boxed()),
                ],
                ws,
            ),
            1 => any_json(),
        ]
        .boxed()
    }

    fn choices(ws: &'static str) -> BoxedStrategy<String> {
        let choice = fields(
            vec![
                ("index", Just("0".to_string()).boxed()),
                ("delta", message(ws)),
                ("message", message(ws)),
                ("text", text_or_any().boxed()),
                ("finish_reason", text_or_any().boxed()),
                ("logprobs", any_json().boxed()),
            ],
            ws,
        );
        prop_oneof![
            8 => prop::collection::vec(choice, 0..3).prop_map(move |c| format!("[{ws}{}{ws}]", c.join(","))),
            1 => any_json(),
        ]
        .boxed()
    }

    fn chunk_in(ws: &'static str) -> BoxedStrategy<String> {
        fields(
            vec![
                ("id", Just("\"chatcmpl-1\"".to_string()).boxed()),
                ("object", Just("\"chat.completion.chunk\"".to_string()).boxed()),
                ("created", Just("1700000000".to_string()).boxed()),
                ("model", text_or_any().boxed()),
                ("choices", choices(ws)),
                ("usage", usage(ws)),
                ("service_tier", text_or_any().boxed()),
            ],
            ws,
        )
        .boxed()
    }

    fn chunk() -> impl Strategy<Value = String> {
        prop_oneof![chunk_in(""), chunk_in(" "), chunk_in("\n\t ")]
    }

    /// A choice, delta or message written as an array (serde reads a struct from its fields in order;
    /// the reader leaves that to serde).
    fn struct_as_array(c: &str) -> bool {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(c) else { return false };
        let Some(choices) = v.get("choices").and_then(|c| c.as_array()) else { return false };
        choices.iter().any(|c| {
            c.is_array() || ["delta", "message"].iter().any(|k| c.get(k).is_some_and(serde_json::Value::is_array))
        })
    }

    fn anthropic_usage() -> BoxedStrategy<String> {
        let count =
            prop_oneof![any::<u32>().prop_map(|n| n.to_string()), Just("-1".to_string()), Just("3.5".to_string())];
        prop_oneof![
            1 => Just("null".to_string()),
            4 => (count.clone(), count.clone(), count).prop_map(|(i, o, c)| format!(
                r#"{{"input_tokens":{i},"output_tokens":{o},"cache_read_input_tokens":{c},"cache_creation_input_tokens":0,"cache_creation":{{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":{c}}},"service_tier":"standard"}}"#
            )),
            1 => any_json(),
        ]
        .boxed()
    }

    fn anthropic_block(ws: &'static str) -> BoxedStrategy<String> {
        prop_oneof![
            4 => fields(
                vec![
                    ("type", Just("\"text\"".to_string()).boxed()),
                    ("text", text_or_any().boxed()),
                    ("thinking", text_or_any().boxed()),
                    ("name", text_or_any().boxed()),
                    ("input", any_json().boxed()),
                ],
                ws,
            ),
            1 => any_json(),
        ]
        .boxed()
    }

    fn anthropic_in(ws: &'static str) -> BoxedStrategy<String> {
        let kind = prop_oneof![
            Just("\"content_block_delta\"".to_string()),
            Just("\"message_delta\"".to_string()),
            Just("\"message_stop\"".to_string()),
            Just("\"error\"".to_string()),
            text_or_any(),
        ];
        let message = prop_oneof![
            3 => (text_or_any(), anthropic_usage()).prop_map(|(m, u)| format!(
                r#"{{"id":"msg_1","type":"message","role":"assistant","model":{m},"content":[],"stop_reason":null,"usage":{u}}}"#
            )),
            1 => any_json(),
        ];
        let delta = prop_oneof![
            6 => fields(
                vec![
                    ("type", Just("\"text_delta\"".to_string()).boxed()),
                    ("text", text_or_any().boxed()),
                    ("partial_json", text_or_any().boxed()),
                    ("thinking", text_or_any().boxed()),
                    ("stop_reason", text_or_any().boxed()),
                ],
                ws,
            ),
            1 => any_json(),
        ];
        fields(
            vec![
                ("type", kind.boxed()),
                ("index", Just("0".to_string()).boxed()),
                ("model", text_or_any().boxed()),
                ("content", prop_oneof![
                    4 => prop::collection::vec(anthropic_block(ws), 0..3).prop_map(|b| format!("[{}]", b.join(","))),
                    1 => any_json(),
                ].boxed()),
                ("stop_reason", text_or_any().boxed()),
                ("message", message.boxed()),
                ("content_block", anthropic_block(ws)),
                ("delta", delta.boxed()),
                ("usage", anthropic_usage()),
                ("error", prop_oneof![
                    Just(r#"{"type":"overloaded_error","message":"Overloaded"}"#.to_string()),
                    any_json(),
                ].boxed()),
            ],
            ws,
        )
        .boxed()
    }

    fn anthropic() -> impl Strategy<Value = String> {
        prop_oneof![anthropic_in(""), anthropic_in(" "), anthropic_in("\n\t ")]
    }

    /// An Anthropic event whose `delta` is written as an array (a struct serde reads from its fields in
    /// order; the reader leaves that to serde).
    fn delta_as_array(c: &str) -> bool {
        serde_json::from_str::<serde_json::Value>(c)
            .ok()
            .is_some_and(|v| v.get("delta").is_some_and(serde_json::Value::is_array))
    }

    /// One byte edit: replaced by a byte that matters to JSON, deleted, or the text cut short.
    fn corrupt(text: &str, at: prop::sample::Index, how: u8, byte: u8) -> Vec<u8> {
        let mut b = text.as_bytes().to_vec();
        if b.is_empty() {
            return b;
        }
        let i = at.index(b.len());
        const MEANINGFUL: &[u8] = b"\"\\{}[],:0-1eE.+ntfu\x01\x7f\xff\xc3";
        match how % 4 {
            0 => b[i] = MEANINGFUL[usize::from(byte) % MEANINGFUL.len()],
            1 => {
                b.remove(i);
            }
            2 => b.truncate(i),
            _ => b.insert(i, MEANINGFUL[usize::from(byte) % MEANINGFUL.len()]),
        }
        b
    }

    /// The reader and serde on a well-formed payload: the same answer, or the reader declines only where
    /// serde fails too or for what it leaves to serde (`exempt`).
    fn agree(f: Option<String>, s: Option<String>, exempt: bool, c: &str) -> Result<(), TestCaseError> {
        if let Some(f) = &f {
            prop_assert_eq!(Some(f), s.as_ref(), "{}", c);
        }
        prop_assert!(f.is_some() || s.is_none() || exempt, "declined what serde reads: {}", c);
        Ok(())
    }

    /// The reader on a corrupted payload: whenever it answers, serde answers the same.
    fn never_differs(
        read: fn(&[u8]) -> Option<String>,
        reference: fn(&[u8]) -> Option<String>,
        b: &[u8],
    ) -> Result<(), TestCaseError> {
        if let Some(f) = read(b) {
            prop_assert_eq!(Some(f), reference(b), "{}", String::from_utf8_lossy(b));
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

        /// On well-formed chunks the reader and serde agree exactly: both read it the same, or both
        /// decline (a repeated field, a value of the wrong type).
        #[test]
        fn reads_what_serde_reads(c in chunk()) {
            agree(fast(c.as_bytes()), serde(c.as_bytes()), struct_as_array(&c), &c)?;
        }

        /// Corrupted chunks: whenever the reader answers, serde answers the same.
        #[test]
        fn never_answers_where_serde_differs(
            c in chunk(),
            at in any::<prop::sample::Index>(),
            how in any::<u8>(),
            byte in any::<u8>(),
        ) {
            never_differs(fast, serde, &corrupt(&c, at, how, byte))?;
        }

        /// Anthropic events and messages: the reader and serde agree exactly on well-formed ones.
        #[test]
        fn reads_anthropic_events_as_serde_does(c in anthropic()) {
            agree(fast_anthropic(c.as_bytes()), serde_anthropic(c.as_bytes()), delta_as_array(&c), &c)?;
        }

        /// Corrupted Anthropic events: whenever the reader answers, serde answers the same.
        #[test]
        fn never_answers_an_anthropic_event_where_serde_differs(
            c in anthropic(),
            at in any::<prop::sample::Index>(),
            how in any::<u8>(),
            byte in any::<u8>(),
        ) {
            never_differs(fast_anthropic, serde_anthropic, &corrupt(&c, at, how, byte))?;
        }
    }

    /// Anthropic's stream events and whole message, as the API sends them, are read directly.
    #[test]
    fn reads_anthropic_events_directly() {
        let events: &[&str] = &[
            r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1,"service_tier":"standard"}}}"#,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            r#"{"type":"ping"}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello \"there\"\n"}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"city\": \"Par"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Let me see"}}"#,
            r#"{"type":"content_block_stop","index":0}"#,
            r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}}"#,
            r#"{"type":"message_stop"}"#,
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            r#"{"id":"msg_2","type":"message","role":"assistant","model":"claude-haiku-4-5","content":[{"type":"text","text":"Hi!"},{"type":"tool_use","id":"t1","name":"get_weather","input":{"city":"Paris"}}],"stop_reason":"tool_use","stop_sequence":null,"usage":{"input_tokens":10,"output_tokens":7,"cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":3}}}"#,
        ];
        for e in events {
            let f = fast_anthropic(e.as_bytes());
            assert!(f.is_some(), "not read directly: {e}");
            assert_eq!(f, serde_anthropic(e.as_bytes()), "{e}");
        }
        // `type` is not optional to serde: `null` there fails the whole event, and so declines here.
        let null_type = br#"{"type":null,"delta":{"text":"a"}}"#;
        assert_eq!((fast_anthropic(null_type), serde_anthropic(null_type)), (None, None));
    }

    /// Usage objects as providers send them are read without serde, with serde's answer; the forms that
    /// need serde's rules are declined by the direct reader (and so still read by serde).
    #[test]
    fn reads_provider_usage_directly() {
        use super::super::UsageJson;
        use super::Scan;
        let direct = |u: &str| {
            let mut s = Scan { b: u.as_bytes(), i: 0, depth: 0 };
            s.usage().filter(|_| s.i == u.len()).map(|u| format!("{u:?}"))
        };
        let by_serde = |u: &str| serde_json::from_str::<UsageJson>(u).ok().map(|u| format!("{u:?}"));
        for u in [
            r#"{"prompt_tokens":9,"completion_tokens":5,"total_tokens":14,"prompt_tokens_details":{"cached_tokens":3,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":2,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}"#,
            r#"{"prompt_tokens":9,"completion_tokens":5,"total_tokens":14}"#,
            r#"{"prompt_tokens": 0, "completion_tokens": 18446744073709551615, "prompt_tokens_details": null, "completion_tokens_details": {"reasoning_tokens": null}}"#,
            r#"{}"#,
        ] {
            let d = direct(u);
            assert!(d.is_some(), "not read directly: {u}");
            assert_eq!(d, by_serde(u), "{u}");
        }
        for u in [
            r#"{"prompt_tokens":1.5e1,"completion_tokens":5}"#,
            r#"{"prompt_tokens":-2,"completion_tokens":5}"#,
            r#"{"prompt_tokens":"7"}"#,
            r#"{"prompt_tokens":null}"#,
            r#"{"prompt_tokens":18446744073709551616}"#,
            r#"{"prompt_tokens":05}"#,
            r#"{"prompt_tokens":1,"prompt_tokens":2}"#,
            r#"{"prompt_tokens_details":{"cached_tokens":1,"cached_tokens":1}}"#,
            r#"{"prompt\u005ftokens":1}"#,
            r#"[1,2]"#,
        ] {
            assert_eq!(direct(u), None, "{u}");
        }
    }

    /// The forms providers send are read directly (not left to serde), with serde's answer.
    #[test]
    fn reads_provider_chunks_directly() {
        let chunks: &[&str] = &[
            r#"{"id":"chatcmpl-B","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":"x1"}"#,
            r#"{"id":"chatcmpl-B","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"Hel\"lo\n"},"logprobs":null,"finish_reason":null}]}"#,
            r#"{"id":"chatcmpl-B","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}"#,
            r#"{"id":"chatcmpl-B","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":5,"total_tokens":14,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"service_tier":"default"}"#,
            r#"{"id":"chatcmpl-C","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there.\nHow can I help?","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":5,"total_tokens":14},"service_tier":"default"}"#,
            r#"{"id":"cmpl-1","object":"text_completion","created":1,"model":"m","choices":[{"text":"abc","index":0,"logprobs":null,"finish_reason":"length"}]}"#,
            "{\n  \"model\": \"m\",\n  \"choices\": [ { \"delta\": { \"tool_calls\": [ { \"index\": 0, \"function\": { \"arguments\": \"{\\\"a\\\":1}\" } } ] } } ]\n}",
            r#"{"model":"m","choices":[{"delta":{"reasoning_content":"think"}}],"usage":{"prompt_tokens":1.5e1,"completion_tokens":-2}}"#,
        ];
        for c in chunks {
            let f = fast(c.as_bytes());
            assert!(f.is_some(), "not read directly: {c}");
            assert_eq!(f, serde(c.as_bytes()), "{c}");
        }
    }

    /// What the reader leaves to serde: a repeated field, a key with an escape, a choice written as an
    /// array, a `null` list of choices, trailing bytes, nesting deeper than its limit.
    #[test]
    fn leaves_the_unusual_to_serde() {
        let deep = format!(r#"{{"model":"m","x":{}1{}}}"#, "[".repeat(70), "]".repeat(70));
        let cases: Vec<String> = vec![
            r#"{"model":"a","model":"b"}"#.into(),
            r#"{"mod\u0065l":"a"}"#.into(),
            r#"{"choices":[[null]]}"#.into(),
            r#"{"choices":null}"#.into(),
            r#"{"model":"m"} x"#.into(),
            r#"{"model":"m",}"#.into(),
            r#"{"model":"m","n":01}"#.into(),
            "{\"model\":\"a\tb\"}".into(),
            deep,
        ];
        for c in &cases {
            assert_eq!(fast(c.as_bytes()), None, "{c}");
        }
        // serde itself: reads the escaped key and the array-shaped choice; rejects the rest.
        assert!(serde(cases[1].as_bytes()).is_some_and(|s| s.contains("\"a\"")));
        assert!(serde(cases[2].as_bytes()).is_some());
        for c in [&cases[0], &cases[3], &cases[4], &cases[5], &cases[6], &cases[7]] {
            assert_eq!(serde(c.as_bytes()), None, "{c}");
        }
        // Numbers outside JSON's grammar in a skipped field: serde rejects them, so must the reader.
        for n in ["-+1", "+1", "1.", "1e", "1e+", ".5", "-", "1.e3", "0x1", "--1", "Infinity", "1_0"] {
            let c = format!(r#"{{"model":"m","n":{n}}}"#);
            assert_eq!((fast(c.as_bytes()), serde(c.as_bytes())), (None, None), "{c}");
        }
        for n in ["-0", "0.5", "1e3", "1E-3", "-12.5e+10", "123456789012345678901234567890"] {
            let c = format!(r#"{{"model":"m","n":{n}}}"#);
            assert!(fast(c.as_bytes()).is_some() && fast(c.as_bytes()) == serde(c.as_bytes()), "{c}");
        }
    }
}
