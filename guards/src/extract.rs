//! The texts of a request that guards look at, each with the role it came from: OpenAI chat (`messages`
//! with string or part-list content, `tool` results, assistant tool-call arguments), Anthropic Messages
//! (`system`, content blocks, `tool_result` blocks), legacy completions (`prompt`) and embeddings
//! (`input`). Images and other binary parts are skipped.

use serde_json::Value;

/// Who wrote a piece of text. Tool results carry text the user did not write (web pages, files, API
/// answers): the usual carrier of indirect injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Role::System => 1,
            Role::User => 2,
            Role::Assistant => 4,
            Role::Tool => 8,
        }
    }

    fn parse(s: &str) -> Role {
        match s {
            "system" | "developer" => Role::System,
            "assistant" | "model" => Role::Assistant,
            "tool" | "function" | "ipython" => Role::Tool,
            _ => Role::User,
        }
    }
}

/// A set of roles, as a bit mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RoleSet(u8);

impl RoleSet {
    pub fn of(roles: &[Role]) -> RoleSet {
        RoleSet(roles.iter().fold(0, |m, r| m | r.bit()))
    }
    pub fn contains(self, r: Role) -> bool {
        self.0 & r.bit() != 0
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// One piece of text and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment<'a> {
    pub role: Role,
    pub text: &'a str,
}

/// Every text of a request body, in order.
pub fn segments(body: &Value) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    if let Some(system) = body.get("system") {
        content(system, Role::System, &mut out);
    }
    if let Some(messages) = body.get("messages").and_then(Value::as_array) {
        for m in messages {
            let role = Role::parse(m.get("role").and_then(Value::as_str).unwrap_or("user"));
            if let Some(c) = m.get("content") {
                content(c, role, &mut out);
            }
            // OpenAI assistant tool calls: the arguments the model wrote.
            if let Some(calls) = m.get("tool_calls").and_then(Value::as_array) {
                for call in calls {
                    if let Some(args) = call.pointer("/function/arguments").and_then(Value::as_str) {
                        out.push(Segment { role, text: args });
                    }
                }
            }
        }
    }
    for field in ["prompt", "input"] {
        match body.get(field) {
            Some(Value::String(s)) => out.push(Segment { role: Role::User, text: s }),
            Some(Value::Array(items)) => {
                out.extend(items.iter().filter_map(Value::as_str).map(|s| Segment { role: Role::User, text: s }))
            }
            _ => {}
        }
    }
    out
}

/// A message's content: a string, or a list of parts (OpenAI) / blocks (Anthropic).
fn content<'a>(c: &'a Value, role: Role, out: &mut Vec<Segment<'a>>) {
    match c {
        Value::String(s) => out.push(Segment { role, text: s }),
        Value::Array(parts) => {
            for p in parts {
                match p.get("type").and_then(Value::as_str) {
                    // Anthropic tool results, whatever message they ride in.
                    Some("tool_result") => {
                        if let Some(inner) = p.get("content") {
                            content(inner, Role::Tool, out);
                        }
                    }
                    // Anthropic documents (retrieved text) count as tool output: the user did not write them.
                    Some("document") => {
                        if let Some(s) = p.pointer("/source/data").and_then(Value::as_str) {
                            if p.pointer("/source/type").and_then(Value::as_str) == Some("text") {
                                out.push(Segment { role: Role::Tool, text: s });
                            }
                        }
                    }
                    _ => {
                        if let Some(s) = p.get("text").and_then(Value::as_str) {
                            out.push(Segment { role, text: s });
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_texts_of_both_formats_with_their_roles() {
        let openai = json!({"messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{\"q\":1}"}}]},
            {"role": "tool", "tool_call_id": "c", "content": "page text"}
        ]});
        let s = segments(&openai);
        let got: Vec<_> = s.iter().map(|s| (s.role, s.text)).collect();
        assert_eq!(
            got,
            vec![
                (Role::System, "be brief"),
                (Role::User, "hi"),
                (Role::Assistant, "{\"q\":1}"),
                (Role::Tool, "page text")
            ]
        );
        let anthropic = json!({"system": [{"type": "text", "text": "sys"}], "messages": [
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": "result"}]},
                                          {"type": "text", "text": "question"}]}
        ]});
        let got: Vec<_> = segments(&anthropic).iter().map(|s| (s.role, s.text)).collect();
        assert_eq!(got, vec![(Role::System, "sys"), (Role::Tool, "result"), (Role::User, "question")]);
        let emb = json!({"input": ["a", "b"]});
        assert_eq!(segments(&emb).len(), 2);
    }
}
