//! Responses API requests (`POST /v1/responses`) translated for upstreams that do not speak it: into a
//! chat completions request, and into an Anthropic Messages request (through the chat form, whose
//! translation to Anthropic already exists; every field Anthropic cannot take is refused here first, so
//! the 400 names the Responses field the client wrote).
//!
//! As elsewhere, every field is translated, or is a no-op at its default value, or is refused with a
//! 400 naming it. Deliberate omissions, documented in the README: `store` (a translated response is not
//! stored anywhere, so it cannot be fetched or continued later), `reasoning.summary` (a preference the
//! upstream cannot honour; Anthropic's thinking comes back as reasoning text), `prompt_cache_key` /
//! `prompt_cache_retention` toward Anthropic (cache hints), and `reasoning` input items of earlier turns
//! (neither chat completions nor a translated Messages request can take reasoning back).

use super::request::{invalid, is_default, openai_to_anthropic, unsupported, ToAnthropic};
use crate::error::GatewayError;
use serde_json::{json, Map, Value};

/// Which upstream format the chat form is for: chat completions itself, or Anthropic after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Chat,
    Anthropic,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Chat => "OpenAI's chat completions API",
            Target::Anthropic => "Anthropic's Messages API",
        }
    }
}

/// Options for a Responses request going to an OpenAI-format upstream without `/v1/responses`.
pub struct ResponsesToChat {
    /// `max_completion_tokens` (OpenAI) or `max_tokens` (Azure OpenAI, OpenAI-compatible servers).
    pub max_tokens_field: &'static str,
    /// Add `stream_options.include_usage` to streams.
    pub include_usage: bool,
}

/// Responses request → chat completions request.
pub fn responses_to_chat(req: &Value, opts: &ResponsesToChat) -> Result<Value, GatewayError> {
    let (mut chat, _) = to_chat(req, Target::Chat, opts.max_tokens_field)?;
    if opts.include_usage && chat.get("stream").and_then(Value::as_bool) == Some(true) {
        chat.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Ok(Value::Object(chat))
}

/// Anthropic's `thinking.budget_tokens` for a Responses `reasoning.effort`; `None` for no thinking.
fn thinking_budget(effort: &str) -> Result<Option<u64>, GatewayError> {
    match effort {
        "none" | "minimal" => Ok(None),
        "low" => Ok(Some(1_024)),
        "medium" => Ok(Some(4_096)),
        "high" => Ok(Some(16_384)),
        "xhigh" | "max" => Ok(Some(32_000)),
        other => Err(unsupported("reasoning.effort", format!("unknown effort `{other}`"))),
    }
}

/// Responses request → Anthropic Messages request. `reasoning.effort` becomes extended thinking with a
/// token budget (low 1,024, medium 4,096, high 16,384, xhigh/max 32,000) inside `max_output_tokens`.
pub fn responses_to_anthropic(req: &Value, opts: &ToAnthropic) -> Result<Value, GatewayError> {
    let (chat, effort) = to_chat(req, Target::Anthropic, "max_tokens")?;
    let client_max = chat.get("max_tokens").and_then(Value::as_u64);
    let temperature = chat.get("temperature").and_then(Value::as_f64);
    let forced_tool = matches!(chat.get("tool_choice"), Some(Value::Object(_)))
        || chat.get("tool_choice") == Some(&json!("required"));
    let mut out = openai_to_anthropic(&Value::Object(chat), opts)?;
    let Some(budget) = effort.as_deref().map(thinking_budget).transpose()?.flatten() else { return Ok(out) };
    if temperature.is_some_and(|t| t != 1.0) {
        return Err(unsupported(
            "temperature",
            "Anthropic's extended thinking (from `reasoning.effort`) needs temperature 1",
        ));
    }
    if forced_tool {
        return Err(unsupported("tool_choice", "Anthropic's extended thinking cannot be combined with a forced tool"));
    }
    let (max_tokens, budget) = match client_max {
        // The client's bound covers reasoning too, as in the Responses API.
        Some(max) if max > budget => (max, budget),
        Some(max) if max > 1_024 => (max, max - 1),
        Some(_) => {
            return Err(unsupported(
                "max_output_tokens",
                "must be above 1024 when `reasoning.effort` asks Anthropic for extended thinking",
            ))
        }
        None => (opts.default_max_tokens.saturating_add(budget), budget),
    };
    if let Some(o) = out.as_object_mut() {
        o.insert("max_tokens".into(), json!(max_tokens));
        o.insert("thinking".into(), json!({"type": "enabled", "budget_tokens": budget}));
    }
    Ok(out)
}

/// The chat form of a Responses request, and the reasoning effort it asked for.
fn to_chat(
    req: &Value,
    target: Target,
    max_tokens_field: &str,
) -> Result<(Map<String, Value>, Option<String>), GatewayError> {
    let obj = req.as_object().ok_or_else(|| invalid("expected a JSON object"))?;
    let mut out = Map::new();
    let mut messages: Vec<Value> = Vec::new();
    let mut effort = None;
    if let Some(instructions) = obj.get("instructions").filter(|v| !v.is_null()) {
        let text = instructions.as_str().ok_or_else(|| invalid("`instructions` must be a string"))?;
        messages.push(json!({"role": "system", "content": text}));
    }
    let refuse = |k: &str| unsupported(k, format!("the field has no equivalent in {}", target.name()));
    for (k, v) in obj {
        match k.as_str() {
            "instructions" => {}
            "model" | "stream" | "temperature" | "top_p" | "parallel_tool_calls" => {
                if !v.is_null() {
                    out.insert(k.clone(), v.clone());
                }
            }
            "max_output_tokens" => {
                if !v.is_null() {
                    out.insert(max_tokens_field.into(), v.clone());
                }
            }
            "input" => input_to_messages(v, target, &mut messages)?,
            "tools" => match v {
                Value::Null => {}
                Value::Array(list) => {
                    let tools = list
                        .iter()
                        .enumerate()
                        .map(|(i, t)| tool_to_chat(t, i, target))
                        .collect::<Result<Vec<_>, _>>()?;
                    if !tools.is_empty() {
                        out.insert("tools".into(), Value::Array(tools));
                    }
                }
                _ => return Err(invalid("`tools` must be an array")),
            },
            "tool_choice" => match v {
                Value::Null => {}
                Value::String(s) if matches!(s.as_str(), "auto" | "none" | "required") => {
                    out.insert("tool_choice".into(), v.clone());
                }
                Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
                    let name = o
                        .get("name")
                        .and_then(Value::as_str)
                        .ok_or_else(|| invalid("`tool_choice.name` is required"))?;
                    out.insert("tool_choice".into(), json!({"type": "function", "function": {"name": name}}));
                }
                _ => {
                    return Err(unsupported(
                        "tool_choice",
                        "only auto, none, required and a function tool can be translated",
                    ))
                }
            },
            "text" => text_config(v, target, &mut out)?,
            "reasoning" => {
                for (rk, rv) in v.as_object().into_iter().flatten() {
                    match rk.as_str() {
                        "effort" => {
                            if let Some(e) = rv.as_str() {
                                effort = Some(e.to_string());
                                if target == Target::Chat {
                                    out.insert("reasoning_effort".into(), rv.clone());
                                }
                            } else if !rv.is_null() {
                                return Err(invalid("`reasoning.effort` must be a string"));
                            }
                        }
                        // A presentation preference; see the module docs.
                        "summary" | "generate_summary" => {}
                        other => {
                            if !is_default(rv) {
                                return Err(refuse(&format!("reasoning.{other}")));
                            }
                        }
                    }
                }
                if !(v.is_null() || v.is_object()) {
                    return Err(invalid("`reasoning` must be an object"));
                }
            }
            "user" => {
                if !v.is_null() {
                    out.insert("user".into(), v.clone());
                }
            }
            "safety_identifier" => {
                if !v.is_null() {
                    match target {
                        Target::Chat => {
                            out.insert(k.clone(), v.clone());
                        }
                        // Anthropic's only per-end-user field; `user` wins when both are set.
                        Target::Anthropic => {
                            if obj.get("user").is_none_or(Value::is_null) {
                                out.insert("user".into(), v.clone());
                            }
                        }
                    }
                }
            }
            "prompt_cache_key" | "prompt_cache_retention" => {
                if target == Target::Chat && !v.is_null() {
                    out.insert(k.clone(), v.clone());
                }
            }
            "service_tier" => match v.as_str() {
                None if v.is_null() => {}
                Some("auto" | "default") => {}
                Some(_) if target == Target::Chat => {
                    out.insert(k.clone(), v.clone());
                }
                _ => return Err(unsupported("service_tier", "only `auto` and `default` can be translated")),
            },
            "truncation" => {
                if !(v.is_null() || v.as_str() == Some("disabled")) {
                    return Err(unsupported("truncation", "the upstream cannot truncate the context for you"));
                }
            }
            "store" | "stream_options" => {}
            "previous_response_id" => {
                if !v.is_null() {
                    return Err(unsupported(
                        "previous_response_id",
                        "the upstream serving this model does not store responses; send the whole conversation in `input`",
                    ));
                }
            }
            other => {
                if !is_default(v) {
                    return Err(refuse(other));
                }
            }
        }
    }
    if !out.contains_key("model") {
        return Err(invalid("`model` is required"));
    }
    if messages.is_empty() {
        return Err(invalid("`input` is required"));
    }
    out.insert("messages".into(), Value::Array(messages));
    Ok((out, effort))
}

fn text_config(v: &Value, target: Target, out: &mut Map<String, Value>) -> Result<(), GatewayError> {
    let Some(o) = v.as_object() else {
        return if v.is_null() { Ok(()) } else { Err(invalid("`text` must be an object")) };
    };
    for (k, x) in o {
        match k.as_str() {
            "format" => {
                let kind = x.get("type").and_then(Value::as_str);
                match (kind, target) {
                    (None | Some("text"), _) => {}
                    (Some("json_object"), Target::Chat) => {
                        out.insert("response_format".into(), json!({"type": "json_object"}));
                    }
                    (Some("json_schema"), Target::Chat) => {
                        let mut schema = Map::new();
                        for f in ["name", "schema", "strict", "description"] {
                            if let Some(fv) = x.get(f).filter(|fv| !fv.is_null()) {
                                schema.insert(f.into(), fv.clone());
                            }
                        }
                        out.insert("response_format".into(), json!({"type": "json_schema", "json_schema": schema}));
                    }
                    (Some(other), _) => {
                        return Err(unsupported(
                            "text.format",
                            format!("`{other}` output cannot be requested from {}", target.name()),
                        ))
                    }
                }
            }
            "verbosity" => {
                if !(x.is_null() || x.as_str() == Some("medium")) {
                    if target == Target::Anthropic {
                        return Err(unsupported("text.verbosity", "has no equivalent in Anthropic's Messages API"));
                    }
                    out.insert("verbosity".into(), x.clone());
                }
            }
            other => {
                if !is_default(x) {
                    return Err(unsupported(
                        format!("text.{other}"),
                        format!("has no equivalent in {}", target.name()),
                    ));
                }
            }
        }
    }
    Ok(())
}

fn tool_to_chat(t: &Value, i: usize, target: Target) -> Result<Value, GatewayError> {
    let p = format!("tools[{i}]");
    let kind = t.get("type").and_then(Value::as_str).unwrap_or("?");
    if kind != "function" {
        return Err(unsupported(
            format!("{p}.type"),
            format!("built-in tool `{kind}` runs only at OpenAI; this model's upstream has no such tool"),
        ));
    }
    let name = t.get("name").and_then(Value::as_str).ok_or_else(|| invalid(format!("`{p}.name` is required")))?;
    let mut f = Map::new();
    f.insert("name".into(), json!(name));
    for (k, v) in t.as_object().into_iter().flatten() {
        match k.as_str() {
            "type" | "name" => {}
            "description" | "parameters" => {
                if !v.is_null() {
                    f.insert(k.clone(), v.clone());
                }
            }
            "strict" => match (v.as_bool(), target) {
                (Some(true), Target::Anthropic) => {
                    return Err(unsupported(
                        format!("{p}.strict"),
                        "Anthropic has no strict schema mode; send `strict: false`",
                    ))
                }
                (Some(b), Target::Chat) => {
                    f.insert("strict".into(), json!(b));
                }
                _ => {}
            },
            other => {
                if !is_default(v) {
                    return Err(unsupported(format!("{p}.{other}"), format!("has no equivalent in {}", target.name())));
                }
            }
        }
    }
    Ok(json!({"type": "function", "function": f}))
}

/// `input`: a string (one user message) or a list of items.
fn input_to_messages(v: &Value, target: Target, messages: &mut Vec<Value>) -> Result<(), GatewayError> {
    let items = match v {
        Value::Null => return Ok(()),
        Value::String(s) => {
            messages.push(json!({"role": "user", "content": s}));
            return Ok(());
        }
        Value::Array(items) => items,
        _ => return Err(invalid("`input` must be a string or an array of items")),
    };
    for (i, item) in items.iter().enumerate() {
        let p = format!("input[{i}]");
        let obj = item.as_object().ok_or_else(|| invalid(format!("`{p}` must be an object")))?;
        let kind =
            obj.get("type").and_then(Value::as_str).unwrap_or(if obj.contains_key("role") { "message" } else { "?" });
        match kind {
            "message" => messages.push(message_to_chat(obj, &p, target)?),
            "function_call" => {
                let call_id = obj
                    .get("call_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid(format!("`{p}.call_id` is required")))?;
                let name = obj
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid(format!("`{p}.name` is required")))?;
                let args = obj.get("arguments").and_then(Value::as_str).unwrap_or("{}");
                let call = json!({"id": call_id, "type": "function", "function": {"name": name, "arguments": args}});
                // Consecutive calls (and the assistant text just before them) are one chat turn.
                match messages.last_mut().filter(|m| m["role"] == "assistant") {
                    Some(Value::Object(m)) => match m.get_mut("tool_calls").and_then(Value::as_array_mut) {
                        Some(calls) => calls.push(call),
                        None => {
                            m.insert("tool_calls".into(), json!([call]));
                        }
                    },
                    _ => messages.push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
                }
            }
            "function_call_output" => {
                let call_id = obj
                    .get("call_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid(format!("`{p}.call_id` is required")))?;
                let content = match obj.get("output") {
                    Some(Value::String(s)) => json!(s),
                    Some(Value::Array(parts)) => {
                        let texts = parts
                            .iter()
                            .enumerate()
                            .map(|(j, part)| match part.get("type").and_then(Value::as_str) {
                                Some("input_text") => part
                                    .get("text")
                                    .and_then(Value::as_str)
                                    .map(str::to_string)
                                    .ok_or_else(|| invalid(format!("`{p}.output[{j}].text` must be a string"))),
                                other => Err(unsupported(
                                    format!("{p}.output[{j}].type"),
                                    format!("`{}` tool output cannot be translated", other.unwrap_or("?")),
                                )),
                            })
                            .collect::<Result<Vec<_>, _>>()?;
                        json!(texts.join("\n"))
                    }
                    _ => return Err(invalid(format!("`{p}.output` must be a string or an array"))),
                };
                messages.push(json!({"role": "tool", "tool_call_id": call_id, "content": content}));
            }
            // Earlier reasoning cannot be given back to a translated upstream (see the module docs).
            "reasoning" => {}
            other => {
                return Err(unsupported(
                    format!("{p}.type"),
                    format!("`{other}` items cannot be sent to {}", target.name()),
                ))
            }
        }
    }
    Ok(())
}

fn message_to_chat(obj: &Map<String, Value>, p: &str, target: Target) -> Result<Value, GatewayError> {
    let role = obj.get("role").and_then(Value::as_str).ok_or_else(|| invalid(format!("`{p}.role` is required")))?;
    let chat_role = match role {
        "user" | "assistant" => role,
        // Non-OpenAI models know no developer role; both are the system prompt there.
        "system" | "developer" => "system",
        other => return Err(unsupported(format!("{p}.role"), format!("role `{other}` cannot be translated"))),
    };
    for (k, v) in obj {
        if !matches!(k.as_str(), "role" | "content" | "type" | "id" | "status" | "phase") && !is_default(v) {
            return Err(unsupported(format!("{p}.{k}"), format!("has no equivalent in {}", target.name())));
        }
    }
    let content = match obj.get("content").unwrap_or(&Value::Null) {
        Value::String(s) => json!(s),
        Value::Array(parts) => {
            let mut out = Vec::with_capacity(parts.len());
            for (j, part) in parts.iter().enumerate() {
                let pp = format!("{p}.content[{j}]");
                let text = |key: &str| {
                    part.get(key)
                        .and_then(Value::as_str)
                        .ok_or_else(|| invalid(format!("`{pp}.{key}` must be a string")))
                };
                match part.get("type").and_then(Value::as_str) {
                    Some("input_text" | "output_text") => out.push(json!({"type": "text", "text": text("text")?})),
                    Some("refusal") => out.push(json!({"type": "text", "text": text("refusal")?})),
                    Some("input_image") if chat_role == "user" => {
                        let Some(url) = part.get("image_url").and_then(Value::as_str) else {
                            return Err(unsupported(
                                format!("{pp}.file_id"),
                                "uploaded files live at OpenAI; send the image as a URL or a data URL",
                            ));
                        };
                        let mut image = json!({"url": url});
                        if let Some(d) = part.get("detail").and_then(Value::as_str).filter(|d| *d != "auto") {
                            if target == Target::Anthropic {
                                return Err(unsupported(
                                    format!("{pp}.detail"),
                                    format!("`{d}` has no equivalent in Anthropic's Messages API"),
                                ));
                            }
                            image["detail"] = json!(d);
                        }
                        out.push(json!({"type": "image_url", "image_url": image}));
                    }
                    other => {
                        return Err(unsupported(
                            format!("{pp}.type"),
                            format!("`{}` content cannot be sent to {}", other.unwrap_or("?"), target.name()),
                        ))
                    }
                }
            }
            // Text-only content of any role as one string: what every chat server accepts.
            if out.iter().all(|x| x["type"] == "text") {
                json!(out.iter().filter_map(|x| x["text"].as_str()).collect::<Vec<_>>().join(""))
            } else {
                Value::Array(out)
            }
        }
        _ => return Err(invalid(format!("`{p}.content` must be a string or an array"))),
    };
    Ok(json!({"role": chat_role, "content": content}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(v: Value) -> Result<Value, GatewayError> {
        responses_to_chat(&v, &ResponsesToChat { max_tokens_field: "max_completion_tokens", include_usage: true })
    }

    fn anthropic(v: Value) -> Result<Value, GatewayError> {
        responses_to_anthropic(&v, &ToAnthropic { default_max_tokens: 1000 })
    }

    fn param(e: GatewayError) -> String {
        match e {
            GatewayError::Untranslatable { param, .. } => param,
            other => format!("not untranslatable: {other}"),
        }
    }

    #[test]
    fn a_tool_conversation_becomes_chat() {
        let req = json!({
            "model": "llama-3",
            "instructions": "Be brief.",
            "input": [
                {"role": "user", "content": "weather in Paris?"},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]},
                {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": "{\"city\":\"Paris\"}"},
                {"type": "function_call", "call_id": "call_2", "name": "weather", "arguments": "{\"city\":\"Lyon\"}"},
                {"type": "reasoning", "id": "rs_1", "summary": []},
                {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
                {"type": "function_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "rain"}]},
                {"role": "user", "content": [
                    {"type": "input_text", "text": "and this?"},
                    {"type": "input_image", "image_url": "https://example.com/a.png", "detail": "low"}
                ]}
            ],
            "tools": [{"type": "function", "name": "weather", "description": "d", "parameters": {"type": "object"}, "strict": true}],
            "tool_choice": {"type": "function", "name": "weather"},
            "max_output_tokens": 100,
            "stream": true,
            "store": true,
            "reasoning": {"effort": "low", "summary": "auto"},
            "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}, "strict": true}},
            "temperature": 0.5,
            "metadata": {},
            "include": []
        });
        let out = chat(req).unwrap();
        assert_eq!(
            out,
            json!({
                "model": "llama-3",
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "weather in Paris?"},
                    {"role": "assistant", "content": "Checking.", "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                        {"id": "call_2", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Lyon\"}"}}
                    ]},
                    {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                    {"role": "tool", "tool_call_id": "call_2", "content": "rain"},
                    {"role": "user", "content": [
                        {"type": "text", "text": "and this?"},
                        {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}}
                    ]}
                ],
                "tools": [{"type": "function", "function": {"name": "weather", "description": "d", "parameters": {"type": "object"}, "strict": true}}],
                "tool_choice": {"type": "function", "function": {"name": "weather"}},
                "max_completion_tokens": 100,
                "stream": true,
                "stream_options": {"include_usage": true},
                "reasoning_effort": "low",
                "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}, "strict": true}},
                "temperature": 0.5
            })
        );
    }

    #[test]
    fn a_plain_request_becomes_anthropic_with_thinking_inside_the_bound() {
        let req = json!({"model": "claude-sonnet-4-5", "input": "hi", "instructions": "sys", "max_output_tokens": 8000,
            "reasoning": {"effort": "medium"}, "user": "u-1",
            "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": false}]});
        let out = anthropic(req).unwrap();
        assert_eq!(
            out,
            json!({
                "model": "claude-sonnet-4-5", "system": "sys", "max_tokens": 8000,
                "messages": [{"role": "user", "content": "hi"}],
                "metadata": {"user_id": "u-1"},
                "tools": [{"name": "f", "input_schema": {"type": "object"}}],
                "thinking": {"type": "enabled", "budget_tokens": 4096}
            })
        );
        // No bound from the client: the upstream's default plus the budget.
        let out = anthropic(json!({"model": "c", "input": "hi", "reasoning": {"effort": "high"}})).unwrap();
        assert_eq!(out["max_tokens"], 1000 + 16_384);
        // A small bound keeps the budget inside it.
        let out =
            anthropic(json!({"model": "c", "input": "hi", "max_output_tokens": 2000, "reasoning": {"effort": "high"}}))
                .unwrap();
        assert_eq!((out["max_tokens"].as_u64(), out["thinking"]["budget_tokens"].as_u64()), (Some(2000), Some(1999)));
        // Minimal effort: no thinking at all.
        assert!(anthropic(json!({"model": "c", "input": "hi", "reasoning": {"effort": "minimal"}}))
            .unwrap()
            .get("thinking")
            .is_none());
    }

    #[test]
    fn untranslatable_fields_are_refused_by_their_responses_name() {
        let base = |k: &str, v: Value| {
            let mut r = json!({"model": "m", "input": "hi"});
            r[k] = v;
            r
        };
        let web = json!([{"type": "web_search"}]);
        assert_eq!(param(chat(base("tools", web.clone())).unwrap_err()), "tools[0].type");
        assert_eq!(param(anthropic(base("tools", web)).unwrap_err()), "tools[0].type");
        let strict = json!([{"type": "function", "name": "f", "strict": true}]);
        assert!(chat(base("tools", strict.clone())).is_ok());
        assert_eq!(param(anthropic(base("tools", strict)).unwrap_err()), "tools[0].strict");
        let json_mode = json!({"format": {"type": "json_object"}});
        assert!(chat(base("text", json_mode.clone())).is_ok());
        assert_eq!(param(anthropic(base("text", json_mode)).unwrap_err()), "text.format");
        assert_eq!(param(chat(base("previous_response_id", json!("resp_1"))).unwrap_err()), "previous_response_id");
        assert_eq!(param(chat(base("include", json!(["file_search_call.results"]))).unwrap_err()), "include");
        assert_eq!(param(chat(base("background", json!(true))).unwrap_err()), "background");
        assert_eq!(param(chat(base("truncation", json!("auto"))).unwrap_err()), "truncation");
        assert_eq!(param(chat(base("metadata", json!({"a": "b"}))).unwrap_err()), "metadata");
        assert_eq!(param(anthropic(base("service_tier", json!("flex"))).unwrap_err()), "service_tier");
        let file = json!([{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}]);
        assert_eq!(param(chat(base("input", file)).unwrap_err()), "input[0].content[0].file_id");
        let refitem = json!([{"type": "item_reference", "id": "msg_1"}]);
        assert_eq!(param(chat(base("input", refitem)).unwrap_err()), "input[0].type");
        let hot = json!({"model": "m", "input": "hi", "temperature": 0.2, "reasoning": {"effort": "low"}});
        assert_eq!(param(anthropic(hot).unwrap_err()), "temperature");
        let tiny = json!({"model": "m", "input": "hi", "max_output_tokens": 500, "reasoning": {"effort": "low"}});
        assert_eq!(param(anthropic(tiny).unwrap_err()), "max_output_tokens");
        // Defaults pass and leave no trace.
        let ok = chat(json!({"model": "m", "input": "hi", "truncation": "disabled", "background": false,
            "service_tier": "auto", "text": {"format": {"type": "text"}, "verbosity": "medium"}, "top_logprobs": 0}))
        .unwrap();
        assert_eq!(ok, json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}));
    }
}
