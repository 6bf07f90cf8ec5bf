//! Request bodies translated between OpenAI chat completions and Anthropic Messages, both ways.
//!
//! Every field of the client's body is looked at: it is translated, or it is a no-op at its default
//! value, or the request is refused with a 400 naming the field. Nothing is dropped silently. The only
//! deliberate omissions are documented in the README: Anthropic `cache_control` hints (OpenAI caches
//! prompts on its own) and `thinking` blocks of earlier assistant turns (OpenAI's chat API cannot take
//! reasoning back), both when going to an OpenAI-format upstream.

use crate::error::GatewayError;
use serde_json::{json, Map, Value};

pub(super) fn unsupported(param: impl Into<String>, message: impl Into<String>) -> GatewayError {
    GatewayError::Untranslatable { param: param.into(), message: message.into() }
}

pub(super) fn invalid(message: impl Into<String>) -> GatewayError {
    GatewayError::InvalidBody(message.into())
}

/// Whether `v` is absent-equivalent: null, false, zero, an empty string, array or object.
pub(super) fn is_default(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

fn as_str<'a>(v: &'a Value, param: &str) -> Result<&'a str, GatewayError> {
    v.as_str().ok_or_else(|| invalid(format!("`{param}` must be a string")))
}

/// The `text` of a text part/block, or a 400 naming it.
fn text_of<'a>(part: &'a Value, param: &str) -> Result<&'a str, GatewayError> {
    part.get("text").and_then(Value::as_str).ok_or_else(|| invalid(format!("`{param}.text` must be a string")))
}

/// Options for an OpenAI client's request going to an Anthropic upstream.
pub struct ToAnthropic {
    /// `max_tokens` when the client gave none (Anthropic requires it).
    pub default_max_tokens: u64,
}

/// OpenAI chat completions request → Anthropic Messages request.
pub fn openai_to_anthropic(req: &Value, opts: &ToAnthropic) -> Result<Value, GatewayError> {
    let obj = req.as_object().ok_or_else(|| invalid("expected a JSON object"))?;
    let mut out = Map::new();
    let mut system: Vec<Value> = Vec::new();
    let mut messages: Vec<(String, Vec<Value>)> = Vec::new();
    let mut tool_choice: Option<Value> = None;
    let mut disable_parallel = false;
    let mut has_tools = false;
    for (k, v) in obj {
        match k.as_str() {
            "model" | "stream" | "temperature" | "top_p" => {
                if !v.is_null() {
                    out.insert(k.clone(), v.clone());
                }
            }
            "max_tokens" | "max_completion_tokens" => {
                if !v.is_null() {
                    out.insert("max_tokens".into(), v.clone());
                }
            }
            "messages" => {
                let list = v.as_array().ok_or_else(|| invalid("`messages` must be an array"))?;
                for (i, m) in list.iter().enumerate() {
                    openai_message_to_anthropic(m, i, &mut system, &mut messages)?;
                }
            }
            "stop" => match v {
                Value::Null => {}
                Value::String(s) => {
                    out.insert("stop_sequences".into(), json!([s]));
                }
                Value::Array(a) if a.iter().all(Value::is_string) => {
                    if !a.is_empty() {
                        out.insert("stop_sequences".into(), v.clone());
                    }
                }
                _ => return Err(invalid("`stop` must be a string or an array of strings")),
            },
            "tools" => {
                if let Some(tools) = convert_tools(v, openai_tool_to_anthropic)? {
                    has_tools = true;
                    out.insert("tools".into(), tools);
                }
            }
            "tool_choice" => {
                tool_choice = match v {
                    Value::Null => None,
                    Value::String(s) => Some(match s.as_str() {
                        "auto" => json!({"type": "auto"}),
                        "none" => json!({"type": "none"}),
                        "required" => json!({"type": "any"}),
                        other => return Err(unsupported("tool_choice", format!("unknown value `{other}`"))),
                    }),
                    Value::Object(o) => {
                        let name =
                            o.get("function").and_then(|f| f.get("name")).and_then(Value::as_str).ok_or_else(|| {
                                unsupported(
                                    "tool_choice",
                                    "only `{\"type\":\"function\",\"function\":{\"name\":…}}` is supported",
                                )
                            })?;
                        Some(json!({"type": "tool", "name": name}))
                    }
                    _ => return Err(invalid("`tool_choice` must be a string or an object")),
                }
            }
            "parallel_tool_calls" => match v {
                Value::Null | Value::Bool(true) => {}
                Value::Bool(false) => disable_parallel = true,
                _ => return Err(invalid("`parallel_tool_calls` must be a boolean")),
            },
            "user" => {
                if !v.is_null() {
                    out.insert("metadata".into(), json!({"user_id": as_str(v, "user")?}));
                }
            }
            // Anthropic streams always carry usage; the gateway decides what the client sees.
            "stream_options" => {}
            "n" => {
                if !(v.is_null() || v.as_u64() == Some(1)) {
                    return Err(unsupported("n", "Anthropic returns one choice per request"));
                }
            }
            "response_format" => {
                let plain = v.is_null() || v.get("type").and_then(Value::as_str) == Some("text");
                if !plain {
                    return Err(unsupported(
                        "response_format",
                        "Anthropic has no JSON mode; describe the format in the prompt or use a tool",
                    ));
                }
            }
            "service_tier" => {
                if !(v.is_null() || v.as_str() == Some("auto")) {
                    return Err(unsupported("service_tier", "only `auto` can be translated"));
                }
            }
            other => {
                if !is_default(v) {
                    return Err(unsupported(other, "the field has no equivalent in Anthropic's Messages API"));
                }
            }
        }
    }
    if !out.contains_key("model") {
        return Err(invalid("`model` is required"));
    }
    if !out.contains_key("max_tokens") {
        out.insert("max_tokens".into(), json!(opts.default_max_tokens));
    }
    if disable_parallel && has_tools {
        let mut c = tool_choice.take().unwrap_or_else(|| json!({"type": "auto"}));
        if let Some(o) = c.as_object_mut() {
            if o.get("type").and_then(Value::as_str) != Some("none") {
                o.insert("disable_parallel_tool_use".into(), Value::Bool(true));
            }
        }
        tool_choice = Some(c);
    }
    if let Some(c) = tool_choice {
        if has_tools || c.get("type").and_then(Value::as_str) == Some("none") {
            out.insert("tool_choice".into(), c);
        }
    }
    match system.len() {
        0 => {}
        1 if system[0].as_object().is_some_and(|o| o.len() == 2) => {
            out.insert("system".into(), system[0]["text"].clone());
        }
        _ => {
            out.insert("system".into(), Value::Array(system));
        }
    }
    let msgs: Vec<Value> = messages
        .into_iter()
        .map(|(role, blocks)| {
            let content = match blocks.as_slice() {
                [b] if b.get("type").and_then(Value::as_str) == Some("text")
                    && b.as_object().is_some_and(|o| o.len() == 2) =>
                {
                    b["text"].clone()
                }
                _ => Value::Array(blocks),
            };
            json!({"role": role, "content": content})
        })
        .collect();
    out.insert("messages".into(), Value::Array(msgs));
    Ok(Value::Object(out))
}

/// Appends `blocks` as a message of `role`, merged into the previous one when it has the same role
/// (Anthropic wants turns to alternate; OpenAI sends consecutive tool results as separate messages).
fn push_message(messages: &mut Vec<(String, Vec<Value>)>, role: &str, blocks: Vec<Value>) {
    if blocks.is_empty() {
        return;
    }
    match messages.last_mut() {
        Some((r, prev)) if r == role => prev.extend(blocks),
        _ => messages.push((role.to_string(), blocks)),
    }
}

fn openai_message_to_anthropic(
    m: &Value,
    i: usize,
    system: &mut Vec<Value>,
    messages: &mut Vec<(String, Vec<Value>)>,
) -> Result<(), GatewayError> {
    let p = format!("messages[{i}]");
    let obj = m.as_object().ok_or_else(|| invalid(format!("`{p}` must be an object")))?;
    let role = obj.get("role").and_then(Value::as_str).ok_or_else(|| invalid(format!("`{p}.role` is required")))?;
    for (k, v) in obj {
        let known = matches!(k.as_str(), "role" | "content")
            || (role == "assistant" && matches!(k.as_str(), "tool_calls" | "refusal" | "annotations" | "audio"))
            || (role == "tool" && k == "tool_call_id");
        if !known && !is_default(v) {
            return Err(unsupported(format!("{p}.{k}"), "the field has no equivalent in Anthropic's Messages API"));
        }
    }
    let content = obj.get("content").unwrap_or(&Value::Null);
    match role {
        "system" | "developer" => {
            system.extend(text_blocks(content, &format!("{p}.content"))?);
        }
        "user" => {
            let blocks = user_blocks(content, &format!("{p}.content"))?;
            push_message(messages, "user", blocks);
        }
        "assistant" => {
            let mut blocks = text_blocks(content, &format!("{p}.content"))?;
            blocks.retain(|b| b.get("text").and_then(Value::as_str).is_some_and(|t| !t.is_empty()));
            if let Some(refusal) = obj.get("refusal").and_then(Value::as_str).filter(|r| !r.is_empty()) {
                blocks.push(json!({"type": "text", "text": refusal}));
            }
            if let Some(calls) = obj.get("tool_calls").filter(|c| !c.is_null()) {
                let calls = calls.as_array().ok_or_else(|| invalid(format!("`{p}.tool_calls` must be an array")))?;
                for (j, c) in calls.iter().enumerate() {
                    let cp = format!("{p}.tool_calls[{j}]");
                    let f = c
                        .get("function")
                        .ok_or_else(|| unsupported(format!("{cp}.type"), "only function calls can be translated"))?;
                    let id = c.get("id").and_then(Value::as_str).unwrap_or_default();
                    let name = f.get("name").and_then(Value::as_str).unwrap_or_default();
                    let args = f.get("arguments").and_then(Value::as_str).unwrap_or("{}");
                    let input: Value = if args.trim().is_empty() {
                        json!({})
                    } else {
                        serde_json::from_str(args).map_err(|_| {
                            unsupported(
                                format!("{cp}.function.arguments"),
                                "must be a JSON object to become a tool_use input",
                            )
                        })?
                    };
                    blocks.push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
                }
            }
            push_message(messages, "assistant", blocks);
        }
        "tool" => {
            let id = obj
                .get("tool_call_id")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(format!("`{p}.tool_call_id` is required")))?;
            let result = match content {
                Value::String(s) => Value::String(s.clone()),
                other => Value::Array(text_blocks(other, &format!("{p}.content"))?),
            };
            push_message(messages, "user", vec![json!({"type": "tool_result", "tool_use_id": id, "content": result})]);
        }
        other => return Err(unsupported(format!("{p}.role"), format!("role `{other}` cannot be translated"))),
    }
    Ok(())
}

/// Text-only content (system, assistant, tool results): a string or a list of text parts.
fn text_blocks(content: &Value, p: &str) -> Result<Vec<Value>, GatewayError> {
    match content {
        Value::Null => Ok(Vec::new()),
        Value::String(s) => Ok(vec![json!({"type": "text", "text": s})]),
        Value::Array(parts) => parts
            .iter()
            .enumerate()
            .map(|(j, part)| {
                let pp = format!("{p}[{j}]");
                match part.get("type").and_then(Value::as_str) {
                    Some("text") => Ok(json!({"type": "text", "text": text_of(part, &pp)?})),
                    Some("refusal") => Ok(json!({"type": "text", "text": part.get("refusal").and_then(Value::as_str).unwrap_or_default()})),
                    other => Err(unsupported(
                        format!("{pp}.type"),
                        format!("`{}` parts cannot be translated here", other.unwrap_or("?")),
                    )),
                }
            })
            .collect(),
        _ => Err(invalid(format!("`{p}` must be a string or an array"))),
    }
}

/// User content: text and images (URL or base64 data URL).
fn user_blocks(content: &Value, p: &str) -> Result<Vec<Value>, GatewayError> {
    let Value::Array(parts) = content else { return text_blocks(content, p) };
    parts
        .iter()
        .enumerate()
        .map(|(j, part)| {
            let pp = format!("{p}[{j}]");
            match part.get("type").and_then(Value::as_str) {
                Some("text") => Ok(json!({"type": "text", "text": text_of(part, &pp)?})),
                Some("image_url") => {
                    let img = part.get("image_url").ok_or_else(|| invalid(format!("`{pp}.image_url` is required")))?;
                    let url = img
                        .get("url")
                        .and_then(Value::as_str)
                        .ok_or_else(|| invalid(format!("`{pp}.image_url.url` is required")))?;
                    if let Some(detail) = img.get("detail").and_then(Value::as_str).filter(|d| *d != "auto") {
                        return Err(unsupported(
                            format!("{pp}.image_url.detail"),
                            format!("`{detail}` has no equivalent in Anthropic's Messages API"),
                        ));
                    }
                    image_source(url, &pp).map(|source| json!({"type": "image", "source": source}))
                }
                other => Err(unsupported(
                    format!("{pp}.type"),
                    format!("`{}` parts cannot be sent to an Anthropic upstream", other.unwrap_or("?")),
                )),
            }
        })
        .collect()
}

fn image_source(url: &str, p: &str) -> Result<Value, GatewayError> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) =
            rest.split_once(',').ok_or_else(|| invalid(format!("`{p}.image_url.url` is not a valid data URL")))?;
        let media_type = meta
            .strip_suffix(";base64")
            .ok_or_else(|| unsupported(format!("{p}.image_url.url"), "data URLs must be base64"))?;
        return Ok(json!({"type": "base64", "media_type": media_type, "data": data}));
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(json!({"type": "url", "url": url}));
    }
    Err(unsupported(format!("{p}.image_url.url"), "must be an http(s) URL or a base64 data URL"))
}

/// A `tools` array converted tool by tool (either direction); `None` when absent, null or empty.
fn convert_tools(
    v: &Value,
    convert: fn(&Value, usize) -> Result<Value, GatewayError>,
) -> Result<Option<Value>, GatewayError> {
    match v {
        Value::Null => Ok(None),
        Value::Array(list) => {
            let tools = list.iter().enumerate().map(|(i, t)| convert(t, i)).collect::<Result<Vec<_>, _>>()?;
            Ok((!tools.is_empty()).then_some(Value::Array(tools)))
        }
        _ => Err(invalid("`tools` must be an array")),
    }
}

fn openai_tool_to_anthropic(t: &Value, i: usize) -> Result<Value, GatewayError> {
    let p = format!("tools[{i}]");
    if t.get("type").and_then(Value::as_str) != Some("function") {
        return Err(unsupported(format!("{p}.type"), "only `function` tools can be translated"));
    }
    let f = t.get("function").ok_or_else(|| invalid(format!("`{p}.function` is required")))?;
    if f.get("strict").and_then(Value::as_bool) == Some(true) {
        return Err(unsupported(format!("{p}.function.strict"), "Anthropic has no strict schema mode"));
    }
    let name =
        f.get("name").and_then(Value::as_str).ok_or_else(|| invalid(format!("`{p}.function.name` is required")))?;
    let mut out = Map::new();
    out.insert("name".into(), json!(name));
    if let Some(d) = f.get("description").filter(|d| !d.is_null()) {
        out.insert("description".into(), d.clone());
    }
    let schema = f
        .get("parameters")
        .filter(|s| !s.is_null())
        .cloned()
        .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
    out.insert("input_schema".into(), schema);
    Ok(Value::Object(out))
}

/// Options for an Anthropic client's request going to an OpenAI-format upstream.
pub struct ToOpenAi {
    /// Add `stream_options.include_usage` to streams (the upstream's `stream_include_usage`).
    pub include_usage: bool,
    /// `max_completion_tokens` (OpenAI itself, whose reasoning models refuse `max_tokens`) or
    /// `max_tokens` (Azure OpenAI and OpenAI-compatible servers, which all accept it).
    pub max_tokens_field: &'static str,
}

/// Anthropic Messages request → OpenAI chat completions request.
pub fn anthropic_to_openai(req: &Value, opts: &ToOpenAi) -> Result<Value, GatewayError> {
    let obj = req.as_object().ok_or_else(|| invalid("expected a JSON object"))?;
    let mut out = Map::new();
    let mut messages: Vec<Value> = Vec::new();
    let mut has_tools = false;
    let mut parallel: Option<bool> = None;
    let mut stream = false;
    if let Some(system) = obj.get("system").filter(|s| !s.is_null()) {
        let text = match system {
            Value::String(s) => s.clone(),
            Value::Array(blocks) => blocks
                .iter()
                .enumerate()
                .map(|(j, b)| match b.get("type").and_then(Value::as_str) {
                    Some("text") => text_of(b, &format!("system[{j}]")).map(str::to_string),
                    _ => Err(unsupported(format!("system[{j}].type"), "only text blocks can be translated")),
                })
                .collect::<Result<Vec<_>, _>>()?
                .join("\n\n"),
            _ => return Err(invalid("`system` must be a string or an array of text blocks")),
        };
        messages.push(json!({"role": "system", "content": text}));
    }
    for (k, v) in obj {
        match k.as_str() {
            "system" => {}
            "model" | "temperature" | "top_p" => {
                if !v.is_null() {
                    out.insert(k.clone(), v.clone());
                }
            }
            "stream" => {
                stream = v.as_bool().unwrap_or(false);
                if !v.is_null() {
                    out.insert(k.clone(), v.clone());
                }
            }
            "max_tokens" => {
                if !v.is_null() {
                    out.insert(opts.max_tokens_field.into(), v.clone());
                }
            }
            "messages" => {
                let list = v.as_array().ok_or_else(|| invalid("`messages` must be an array"))?;
                for (i, m) in list.iter().enumerate() {
                    anthropic_message_to_openai(m, i, &mut messages)?;
                }
            }
            "stop_sequences" => match v {
                Value::Null => {}
                Value::Array(a) if a.iter().all(Value::is_string) => {
                    if !a.is_empty() {
                        out.insert("stop".into(), v.clone());
                    }
                }
                _ => return Err(invalid("`stop_sequences` must be an array of strings")),
            },
            "tools" => {
                if let Some(tools) = convert_tools(v, anthropic_tool_to_openai)? {
                    has_tools = true;
                    out.insert("tools".into(), tools);
                }
            }
            "tool_choice" => {
                if v.is_null() {
                    continue;
                }
                let choice = match v.get("type").and_then(Value::as_str) {
                    Some("auto") => json!("auto"),
                    Some("any") => json!("required"),
                    Some("none") => json!("none"),
                    Some("tool") => {
                        let name = v
                            .get("name")
                            .and_then(Value::as_str)
                            .ok_or_else(|| invalid("`tool_choice.name` is required"))?;
                        json!({"type": "function", "function": {"name": name}})
                    }
                    _ => return Err(unsupported("tool_choice.type", "unknown tool choice")),
                };
                if v.get("disable_parallel_tool_use").and_then(Value::as_bool) == Some(true) {
                    parallel = Some(false);
                }
                out.insert("tool_choice".into(), choice);
            }
            "metadata" => {
                if let Some(m) = v.as_object() {
                    for (mk, mv) in m {
                        match mk.as_str() {
                            "user_id" => {
                                if !mv.is_null() {
                                    out.insert("user".into(), json!(as_str(mv, "metadata.user_id")?));
                                }
                            }
                            other => {
                                if !mv.is_null() {
                                    return Err(unsupported(format!("metadata.{other}"), "has no OpenAI equivalent"));
                                }
                            }
                        }
                    }
                } else if !v.is_null() {
                    return Err(invalid("`metadata` must be an object"));
                }
            }
            "thinking" => {
                let off = v.is_null() || v.get("type").and_then(Value::as_str) == Some("disabled");
                if !off {
                    return Err(unsupported(
                        "thinking",
                        "extended thinking cannot be requested from an OpenAI-format upstream",
                    ));
                }
            }
            "service_tier" => {
                if !(v.is_null() || v.as_str() == Some("auto")) {
                    return Err(unsupported("service_tier", "only `auto` can be translated"));
                }
            }
            other => {
                if !is_default(v) {
                    return Err(unsupported(other, "the field has no equivalent in OpenAI's chat completions API"));
                }
            }
        }
    }
    if !out.contains_key("model") {
        return Err(invalid("`model` is required"));
    }
    if let (Some(p), true) = (parallel, has_tools) {
        out.insert("parallel_tool_calls".into(), json!(p));
    }
    if stream && opts.include_usage {
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    out.insert("messages".into(), Value::Array(messages));
    Ok(Value::Object(out))
}

fn anthropic_message_to_openai(m: &Value, i: usize, out: &mut Vec<Value>) -> Result<(), GatewayError> {
    let p = format!("messages[{i}]");
    let obj = m.as_object().ok_or_else(|| invalid(format!("`{p}` must be an object")))?;
    let role = obj.get("role").and_then(Value::as_str).ok_or_else(|| invalid(format!("`{p}.role` is required")))?;
    for (k, v) in obj {
        if !matches!(k.as_str(), "role" | "content") && !is_default(v) {
            return Err(unsupported(
                format!("{p}.{k}"),
                "the field has no equivalent in OpenAI's chat completions API",
            ));
        }
    }
    let content = obj.get("content").unwrap_or(&Value::Null);
    let blocks: Vec<Value> = match content {
        Value::String(s) => {
            out.push(json!({"role": role, "content": s}));
            return Ok(());
        }
        Value::Array(b) => b.clone(),
        _ => return Err(invalid(format!("`{p}.content` must be a string or an array of blocks"))),
    };
    match role {
        "user" => {
            // Tool results become `tool` messages, which must directly follow the assistant's calls.
            let mut parts = Vec::new();
            for (j, b) in blocks.iter().enumerate() {
                let bp = format!("{p}.content[{j}]");
                match b.get("type").and_then(Value::as_str) {
                    Some("text") => parts.push(json!({"type": "text", "text": text_of(b, &bp)?})),
                    Some("image") => parts.push(json!({"type": "image_url", "image_url": {"url": image_url(b, &bp)?}})),
                    Some("tool_result") => {
                        let id = b
                            .get("tool_use_id")
                            .and_then(Value::as_str)
                            .ok_or_else(|| invalid(format!("`{bp}.tool_use_id` is required")))?;
                        let mut text = match b.get("content").unwrap_or(&Value::Null) {
                            Value::Null => String::new(),
                            Value::String(s) => s.clone(),
                            Value::Array(inner) => inner
                                .iter()
                                .enumerate()
                                .map(|(k, c)| match c.get("type").and_then(Value::as_str) {
                                    Some("text") => text_of(c, &format!("{bp}.content[{k}]")).map(str::to_string),
                                    other => Err(unsupported(
                                        format!("{bp}.content[{k}].type"),
                                        format!(
                                            "`{}` blocks in tool results cannot be sent to an OpenAI-format upstream",
                                            other.unwrap_or("?")
                                        ),
                                    )),
                                })
                                .collect::<Result<Vec<_>, _>>()?
                                .join("\n"),
                            _ => return Err(invalid(format!("`{bp}.content` must be a string or an array"))),
                        };
                        if b.get("is_error").and_then(Value::as_bool) == Some(true) {
                            text.insert_str(0, "Error: ");
                        }
                        out.push(json!({"role": "tool", "tool_call_id": id, "content": text}));
                    }
                    other => {
                        return Err(unsupported(
                            format!("{bp}.type"),
                            format!("`{}` blocks cannot be sent to an OpenAI-format upstream", other.unwrap_or("?")),
                        ))
                    }
                }
            }
            if !parts.is_empty() {
                let content = match parts.as_slice() {
                    [only] if only["type"] == "text" => only["text"].clone(),
                    _ => Value::Array(parts),
                };
                out.push(json!({"role": "user", "content": content}));
            }
        }
        "assistant" => {
            let mut text = String::new();
            let mut calls = Vec::new();
            for (j, b) in blocks.iter().enumerate() {
                let bp = format!("{p}.content[{j}]");
                match b.get("type").and_then(Value::as_str) {
                    Some("text") => text.push_str(text_of(b, &bp)?),
                    Some("tool_use") => {
                        let id = b.get("id").and_then(Value::as_str).unwrap_or_default();
                        let name = b.get("name").and_then(Value::as_str).unwrap_or_default();
                        let args = b.get("input").map(Value::to_string).unwrap_or_else(|| "{}".into());
                        calls
                            .push(json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}}));
                    }
                    // OpenAI's chat API cannot take earlier reasoning back; omitted (documented).
                    Some("thinking" | "redacted_thinking") => {}
                    other => {
                        return Err(unsupported(
                            format!("{bp}.type"),
                            format!("`{}` blocks cannot be sent to an OpenAI-format upstream", other.unwrap_or("?")),
                        ))
                    }
                }
            }
            let mut msg = Map::new();
            msg.insert("role".into(), json!("assistant"));
            msg.insert("content".into(), if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) });
            if !calls.is_empty() {
                msg.insert("tool_calls".into(), Value::Array(calls));
            }
            out.push(Value::Object(msg));
        }
        other => return Err(unsupported(format!("{p}.role"), format!("role `{other}` cannot be translated"))),
    }
    Ok(())
}

fn image_url(block: &Value, p: &str) -> Result<String, GatewayError> {
    let src = block.get("source").ok_or_else(|| invalid(format!("`{p}.source` is required")))?;
    match src.get("type").and_then(Value::as_str) {
        Some("base64") => {
            let mt = src.get("media_type").and_then(Value::as_str).unwrap_or("image/png");
            let data = src
                .get("data")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(format!("`{p}.source.data` is required")))?;
            Ok(format!("data:{mt};base64,{data}"))
        }
        Some("url") => Ok(src
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(format!("`{p}.source.url` is required")))?
            .to_string()),
        other => Err(unsupported(
            format!("{p}.source.type"),
            format!("`{}` image sources cannot be translated", other.unwrap_or("?")),
        )),
    }
}

fn anthropic_tool_to_openai(t: &Value, i: usize) -> Result<Value, GatewayError> {
    let p = format!("tools[{i}]");
    if let Some(kind) = t.get("type").and_then(Value::as_str).filter(|k| *k != "custom") {
        return Err(unsupported(format!("{p}.type"), format!("server tool `{kind}` exists only at Anthropic")));
    }
    let name = t.get("name").and_then(Value::as_str).ok_or_else(|| invalid(format!("`{p}.name` is required")))?;
    let mut f = Map::new();
    f.insert("name".into(), json!(name));
    if let Some(d) = t.get("description").filter(|d| !d.is_null()) {
        f.insert("description".into(), d.clone());
    }
    if let Some(s) = t.get("input_schema").filter(|s| !s.is_null()) {
        f.insert("parameters".into(), s.clone());
    }
    Ok(json!({"type": "function", "function": f}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to_anthropic(v: Value) -> Result<Value, GatewayError> {
        openai_to_anthropic(&v, &ToAnthropic { default_max_tokens: 1024 })
    }

    fn to_openai(v: Value) -> Result<Value, GatewayError> {
        anthropic_to_openai(&v, &ToOpenAi { include_usage: true, max_tokens_field: "max_tokens" })
    }

    fn param(e: GatewayError) -> String {
        match e {
            GatewayError::Untranslatable { param, .. } => param,
            other => format!("not untranslatable: {other}"),
        }
    }

    #[test]
    fn openai_chat_becomes_anthropic_messages() {
        let req = json!({
            "model": "claude-sonnet-4-5",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [
                    {"type": "text", "text": "What is in these?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "auto"}}
                ]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":\"cat\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "a cat"},
                {"role": "user", "content": "thanks"}
            ],
            "stop": "END",
            "temperature": 0.2,
            "top_p": 0.9,
            "stream": true,
            "stream_options": {"include_usage": true},
            "n": 1,
            "user": "u-7",
            "tools": [{"type": "function", "function": {"name": "lookup", "description": "find", "parameters": {"type": "object"}}}],
            "tool_choice": "required",
            "parallel_tool_calls": false
        });
        let out = to_anthropic(req).unwrap();
        assert_eq!(
            out,
            json!({
                "model": "claude-sonnet-4-5",
                "system": "Be brief.",
                "messages": [
                    {"role": "user", "content": [
                        {"type": "text", "text": "What is in these?"},
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0K"}},
                        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}
                    ]},
                    {"role": "assistant", "content": [{"type": "tool_use", "id": "call_1", "name": "lookup", "input": {"q": "cat"}}]},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": "call_1", "content": "a cat"},
                        {"type": "text", "text": "thanks"}
                    ]}
                ],
                "stop_sequences": ["END"],
                "temperature": 0.2,
                "top_p": 0.9,
                "stream": true,
                "metadata": {"user_id": "u-7"},
                "tools": [{"name": "lookup", "description": "find", "input_schema": {"type": "object"}}],
                "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
                "max_tokens": 1024
            })
        );
    }

    #[test]
    fn untranslatable_openai_fields_are_refused_by_name() {
        let base = |extra: Value| {
            let mut v = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
            for (k, x) in extra.as_object().unwrap() {
                v[k] = x.clone();
            }
            v
        };
        assert_eq!(param(to_anthropic(base(json!({"n": 2}))).unwrap_err()), "n");
        assert_eq!(param(to_anthropic(base(json!({"logprobs": true}))).unwrap_err()), "logprobs");
        assert_eq!(param(to_anthropic(base(json!({"seed": 7}))).unwrap_err()), "seed");
        assert_eq!(
            param(to_anthropic(base(json!({"response_format": {"type": "json_object"}}))).unwrap_err()),
            "response_format"
        );
        let audio = json!({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]});
        assert_eq!(param(to_anthropic(base(audio)).unwrap_err()), "messages[0].content[0].type");
        let named = json!({"messages": [{"role": "user", "content": "x", "name": "bob"}]});
        assert_eq!(param(to_anthropic(base(named)).unwrap_err()), "messages[0].name");
        // Defaults are fine and do not appear upstream.
        let ok = to_anthropic(base(json!({"logprobs": false, "frequency_penalty": 0, "seed": null}))).unwrap();
        assert!(ok.get("logprobs").is_none() && ok.get("seed").is_none());
        assert_eq!(ok["messages"], json!([{"role": "user", "content": "hi"}]));
    }

    #[test]
    fn anthropic_messages_become_openai_chat() {
        let req = json!({
            "model": "gpt-4o-mini",
            "max_tokens": 300,
            "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "Look:"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/"}}
                ]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "x"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "found"}]},
                    {"type": "tool_result", "tool_use_id": "toolu_2", "content": "boom", "is_error": true},
                    {"type": "text", "text": "and?"}
                ]}
            ],
            "stop_sequences": ["END", "STOP"],
            "temperature": 0.5,
            "stream": true,
            "metadata": {"user_id": "u-1"},
            "tools": [{"name": "lookup", "description": "find", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "tool", "name": "lookup", "disable_parallel_tool_use": true}
        });
        let out = to_openai(req).unwrap();
        assert_eq!(
            out,
            json!({
                "model": "gpt-4o-mini",
                "max_tokens": 300,
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": [
                        {"type": "text", "text": "Look:"},
                        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/"}}
                    ]},
                    {"role": "assistant", "content": "Checking.", "tool_calls": [
                        {"id": "toolu_1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":\"x\"}"}}
                    ]},
                    {"role": "tool", "tool_call_id": "toolu_1", "content": "found"},
                    {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: boom"},
                    {"role": "user", "content": "and?"}
                ],
                "stop": ["END", "STOP"],
                "temperature": 0.5,
                "stream": true,
                "stream_options": {"include_usage": true},
                "user": "u-1",
                "tools": [{"type": "function", "function": {"name": "lookup", "description": "find", "parameters": {"type": "object"}}}],
                "tool_choice": {"type": "function", "function": {"name": "lookup"}},
                "parallel_tool_calls": false
            })
        );
    }

    #[test]
    fn untranslatable_anthropic_fields_are_refused_by_name() {
        let base = |k: &str, v: Value| {
            let mut r = json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
            r[k] = v;
            r
        };
        assert_eq!(param(to_openai(base("top_k", json!(40))).unwrap_err()), "top_k");
        assert_eq!(
            param(to_openai(base("thinking", json!({"type": "enabled", "budget_tokens": 1024}))).unwrap_err()),
            "thinking"
        );
        assert_eq!(
            param(
                to_openai(base("tools", json!([{"type": "web_search_20250305", "name": "web_search"}]))).unwrap_err()
            ),
            "tools[0].type"
        );
        let doc = json!([{"role": "user", "content": [{"type": "document", "source": {"type": "text", "data": "x"}}]}]);
        assert_eq!(param(to_openai(base("messages", doc)).unwrap_err()), "messages[0].content[0].type");
        assert!(to_openai(base("thinking", json!({"type": "disabled"}))).is_ok());
    }
}
