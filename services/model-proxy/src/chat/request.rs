//! Stored Responses API items as a Chat Completions request (Codex: `codex-rs/core/src/chat_completions.rs`): the
//! instructions as the system message, tool calls grouped into one
//! assistant message, tool outputs as `tool` messages, images as
//! `image_url` parts, and the reasoning a chat server returned attached to
//! the assistant message it belongs to.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::error::ProxyError;
use crate::wire::Prompt;

#[derive(Debug, Serialize)]
pub(crate) struct ChatRequest {
    pub model: String,
    pub messages: Vec<Value>,
    pub stream: bool,
    /// Asks for the usage chunk at the end of the stream.
    pub stream_options: Value,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_effort: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verbosity: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_tier: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_format: Option<Value>,
}

impl ChatRequest {
    pub(crate) fn new(p: Prompt) -> Result<Self, ProxyError> {
        let tools = tools(&p.tools)?;
        let has_tools = !tools.is_empty();
        let c = &p.controls;
        Ok(Self {
            messages: messages(&p.instructions, &p.input),
            stream: true,
            stream_options: json!({"include_usage": true}),
            // Servers reject tool settings without tools.
            tool_choice: has_tools.then_some("auto"),
            parallel_tool_calls: has_tools.then_some(p.parallel_tool_calls),
            tools,
            reasoning_effort: c.reasoning_effort.map(|e| e.as_str()),
            verbosity: c.verbosity.map(|v| v.as_str()),
            service_tier: c.service_tier.map(|t| t.wire_value()),
            response_format: c.output_schema.clone().map(|schema| {
                json!({"type": "json_schema", "json_schema":
                    {"name": "codex_output_schema", "strict": true, "schema": schema}})
            }),
            model: p.model,
        })
    }
}

/// Function tools in chat form. A `custom` tool cannot be expressed, so it
/// is rejected (the caller must offer the JSON variant); hosted tools such as
/// `web_search` are left out, as Codex does.
fn tools(tools: &[Value]) -> Result<Vec<Value>, ProxyError> {
    let mut out = Vec::with_capacity(tools.len());
    for tool in tools {
        let name = tool.get("name").and_then(Value::as_str).unwrap_or("?");
        match tool.get("type").and_then(Value::as_str) {
            Some("function") => {
                let mut function = tool.as_object().cloned().unwrap_or_default();
                function.remove("type");
                out.push(json!({"type": "function", "function": function}));
            }
            Some("custom") => {
                return Err(ProxyError::InvalidRequest(format!(
                    "tool {name:?} is a custom (freeform) tool, which Chat Completions providers \
                     cannot call; offer a function tool instead (e.g. JSON apply_patch)"
                )));
            }
            other => {
                tracing::warn!(tool = name, kind = ?other, "Chat Completions cannot offer this tool; left out");
            }
        }
    }
    Ok(out)
}

fn kind(item: &Value) -> &str {
    item.get("type").and_then(Value::as_str).unwrap_or_default()
}

fn role(item: &Value) -> &str {
    item.get("role").and_then(Value::as_str).unwrap_or_default()
}

fn is_call(item: &Value) -> bool {
    matches!(kind(item), "function_call" | "custom_tool_call")
}

fn str_field(item: &Value, key: &str) -> String {
    item.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// The chat messages for `input`, after the system message.
pub(super) fn messages(instructions: &str, input: &[Value]) -> Vec<Value> {
    let reasoning = reasoning_anchors(input);
    let mut messages = vec![json!({"role": "system", "content": instructions})];
    let mut last_assistant_text: Option<String> = None;
    // Whether the last message is a group of tool calls that a following
    // call joins: servers expect parallel calls in one assistant message.
    let mut in_call_group = false;
    for (idx, item) in input.iter().enumerate() {
        let mut message = match kind(item) {
            "message" => {
                let (text, parts, has_image) = content(item.get("content"));
                let role = role(item);
                if role == "assistant" {
                    // Codex skips an assistant text that repeats the last one.
                    if last_assistant_text.as_deref() == Some(text.as_str()) {
                        continue;
                    }
                    last_assistant_text = Some(text.clone());
                }
                let content = if role != "assistant" && has_image {
                    Value::Array(parts)
                } else {
                    Value::String(text)
                };
                json!({"role": role, "content": content})
            }
            "function_call" | "custom_tool_call" => {
                let call = tool_call(item);
                if in_call_group && let Some(Value::Object(last)) = messages.last_mut() {
                    if let Some(Value::Array(calls)) = last.get_mut("tool_calls") {
                        calls.push(call);
                    }
                    attach_reasoning(last, reasoning.get(&idx));
                    continue;
                }
                json!({"role": "assistant", "content": null, "tool_calls": [call]})
            }
            "function_call_output" | "custom_tool_call_output" => {
                let output = match item.get("output") {
                    Some(Value::String(s)) => Value::String(s.clone()),
                    Some(Value::Array(_)) => {
                        let (text, parts, has_image) = content(item.get("output"));
                        if has_image {
                            Value::Array(parts)
                        } else {
                            Value::String(text)
                        }
                    }
                    Some(other) => Value::String(other.to_string()),
                    None => Value::String(String::new()),
                };
                json!({"role": "tool", "tool_call_id": str_field(item, "call_id"), "content": output})
            }
            // Reasoning rides on assistant messages; other items (web
            // searches, compaction markers) have no chat form.
            _ => continue,
        };
        in_call_group = is_call(item);
        if let Value::Object(m) = &mut message
            && m.get("role").and_then(Value::as_str) == Some("assistant")
        {
            attach_reasoning(m, reasoning.get(&idx));
        }
        messages.push(message);
    }
    messages
}

fn tool_call(item: &Value) -> Value {
    let id = str_field(item, "call_id");
    let name = str_field(item, "name");
    if kind(item) == "custom_tool_call" {
        return json!({"id": id, "type": "custom",
            "custom": {"name": name, "input": str_field(item, "input")}});
    }
    let arguments = match item.get("arguments") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}})
}

fn attach_reasoning(message: &mut Map<String, Value>, reasoning: Option<&String>) {
    let Some(reasoning) = reasoning else { return };
    match message.get_mut("reasoning") {
        Some(Value::String(existing)) => existing.push_str(reasoning),
        _ => {
            message.insert("reasoning".into(), Value::String(reasoning.clone()));
        }
    }
}

/// A message's (or tool output's) text, its chat content parts, and
/// whether an image is among them.
fn content(content: Option<&Value>) -> (String, Vec<Value>, bool) {
    let mut text = String::new();
    let mut parts = Vec::new();
    let mut has_image = false;
    match content {
        Some(Value::String(s)) => {
            text.push_str(s);
            parts.push(json!({"type": "text", "text": s}));
        }
        Some(Value::Array(items)) => {
            for part in items {
                match kind(part) {
                    "input_text" | "output_text" | "text" => {
                        let t = str_field(part, "text");
                        text.push_str(&t);
                        parts.push(json!({"type": "text", "text": t}));
                    }
                    "input_image" => {
                        has_image = true;
                        let url = str_field(part, "image_url");
                        parts.push(json!({"type": "image_url", "image_url": {"url": url}}));
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
    (text, parts, has_image)
}

/// Codex's rule for reasoning on chat: only reasoning after the last user
/// message is sent (none when a user message is the newest), attached to
/// the assistant message just before it, else to the call or assistant
/// message just after it. Keyed by the anchor's index in `input`.
fn reasoning_anchors(input: &[Value]) -> HashMap<usize, String> {
    let mut anchors: HashMap<usize, String> = HashMap::new();
    let last_emitted = input
        .iter()
        .rev()
        .find(|i| matches!(kind(i), "message") || is_call(i) || kind(i).ends_with("_output"));
    if last_emitted.is_some_and(|i| kind(i) == "message" && role(i) == "user") {
        return anchors;
    }
    let last_user = input
        .iter()
        .rposition(|i| kind(i) == "message" && role(i) == "user");
    let is_assistant_message = |i: &Value| kind(i) == "message" && role(i) == "assistant";
    for (idx, item) in input.iter().enumerate() {
        if last_user.is_some_and(|u| idx <= u) || kind(item) != "reasoning" {
            continue;
        }
        let text: String = item
            .get("content")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|c| matches!(kind(c), "reasoning_text" | "text"))
            .filter_map(|c| c.get("text").and_then(Value::as_str))
            .collect();
        if text.trim().is_empty() {
            continue;
        }
        let anchor = if idx > 0 && is_assistant_message(&input[idx - 1]) {
            Some(idx - 1)
        } else {
            input
                .get(idx + 1)
                .filter(|next| is_call(next) || is_assistant_message(next))
                .map(|_| idx + 1)
        };
        if let Some(anchor) = anchor {
            anchors.entry(anchor).or_default().push_str(&text);
        }
    }
    anchors
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
