//! A Chat Completions stream assembled into Responses API events (Codex: `codex-rs/core/src/chat_completions.rs`):
//! `delta.content` and `delta.reasoning` stream as deltas, `delta.tool_calls`
//! fragments merge by index (or id), and at the end the reasoning, the
//! message and the calls are emitted as Responses API items, then
//! `Completed` with the usage of the final chunk.

use std::collections::VecDeque;

use keel_proto::v1::TokenUsage;
use serde_json::{Map, Value, json};

use crate::error::ProxyError;
use crate::sse::SseReader;
use crate::wire::{ResponseEvent, count, text};

pub struct ChatStream {
    sse: SseReader,
    ready: VecDeque<ResponseEvent>,
    text: String,
    reasoning: String,
    calls: Vec<CallFragments>,
    finish_reason: Option<String>,
    usage: Option<TokenUsage>,
    response_id: String,
    model: Option<String>,
    finished: bool,
}

#[derive(Debug, Default)]
struct CallFragments {
    index: Option<u64>,
    id: Option<String>,
    name: String,
    arguments: String,
}

impl ChatStream {
    pub fn new(sse: SseReader) -> Self {
        Self {
            sse,
            ready: VecDeque::new(),
            text: String::new(),
            reasoning: String::new(),
            calls: Vec::new(),
            finish_reason: None,
            usage: None,
            response_id: String::new(),
            model: None,
            finished: false,
        }
    }

    /// The next event. The stream completes at `[DONE]`, or when the body
    /// ends after a `finish_reason`; a body that ends with neither was cut.
    pub async fn next(&mut self) -> Result<ResponseEvent, ProxyError> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Ok(event);
            }
            if self.finished {
                return Err(ProxyError::StreamClosed);
            }
            let Some(sse) = self.sse.next().await? else {
                if self.finish_reason.is_none() {
                    return Err(ProxyError::StreamClosed);
                }
                self.finish();
                continue;
            };
            let data = sse.data.trim();
            if data == "[DONE]" || data == "DONE" {
                self.finish();
                continue;
            }
            match serde_json::from_str::<Value>(data) {
                Ok(chunk) => self.on_chunk(&chunk)?,
                Err(_) => tracing::debug!("skipping a chat chunk that is not JSON"),
            }
        }
    }

    fn on_chunk(&mut self, chunk: &Value) -> Result<(), ProxyError> {
        if let Some(error) = chunk.get("error").filter(|e| !e.is_null()) {
            let code = text(error, "code").or_else(|| text(error, "type"));
            let message = text(error, "message").unwrap_or_else(|| error.to_string());
            return Err(ProxyError::from_code(&code.unwrap_or_default(), message));
        }
        if self.response_id.is_empty() {
            self.response_id = text(chunk, "id").unwrap_or_default();
        }
        if let Some(model) = text(chunk, "model") {
            self.model = Some(model);
        }
        if let Some(u) = chunk.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(usage(u));
        }
        let Some(choice) = chunk.pointer("/choices/0") else {
            return Ok(());
        };
        let delta = choice.get("delta").unwrap_or(&Value::Null);
        if let Some(t) = content_text(delta.get("content")).filter(|t| !t.is_empty()) {
            self.text.push_str(&t);
            self.ready.push_back(ResponseEvent::OutputTextDelta {
                item_id: self.item_id("msg"),
                delta: t,
            });
        }
        // Servers differ: `reasoning` (a string, `{text}` or `{content}`),
        // `reasoning_content`, or reasoning only on a final `message`.
        for r in [
            delta.get("reasoning"),
            delta.get("reasoning_content"),
            choice.pointer("/message/reasoning"),
        ] {
            if let Some(t) = reasoning_text(r).filter(|t| !t.is_empty()) {
                self.reasoning.push_str(&t);
                self.ready.push_back(ResponseEvent::ReasoningTextDelta {
                    item_id: self.item_id("rs"),
                    content_index: 0,
                    delta: t,
                });
            }
        }
        for call in delta
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            self.merge_call(call);
        }
        if let Some(reason) = text(choice, "finish_reason").filter(|r| !r.is_empty()) {
            if reason == "length" {
                return Err(ProxyError::ContextWindowExceeded(
                    "the model hit its token limit (finish_reason \"length\"); \
                     start a new session or compact the conversation"
                        .into(),
                ));
            }
            self.finish_reason = Some(reason);
        }
        Ok(())
    }

    /// Joins a `tool_calls` fragment to its call: by `index`, else by `id`,
    /// else to the newest call (a continuation without either).
    fn merge_call(&mut self, fragment: &Value) {
        let index = fragment.get("index").and_then(Value::as_u64);
        let id = text(fragment, "id").filter(|id| !id.is_empty());
        let found = match (index, &id) {
            (Some(i), _) => self.calls.iter().position(|c| c.index == Some(i)),
            (None, Some(id)) => self.calls.iter().position(|c| c.id.as_ref() == Some(id)),
            (None, None) => self.calls.len().checked_sub(1),
        };
        let pos = found.unwrap_or_else(|| {
            self.calls.push(CallFragments {
                index,
                ..CallFragments::default()
            });
            self.calls.len() - 1
        });
        let Some(call) = self.calls.get_mut(pos) else {
            return;
        };
        if call.id.is_none() {
            call.id = id;
        }
        let function = fragment.get("function").unwrap_or(&Value::Null);
        if let Some(name) = text(function, "name").filter(|n| !n.is_empty()) {
            call.name = name;
        }
        if let Some(args) = function.get("arguments").and_then(Value::as_str) {
            call.arguments.push_str(args);
        }
    }

    /// Queues the finished items and `Completed`.
    fn finish(&mut self) {
        self.finished = true;
        if !self.reasoning.is_empty() {
            self.ready.push_back(done(json!({
                "type": "reasoning",
                "summary": [],
                "content": [{"type": "reasoning_text", "text": std::mem::take(&mut self.reasoning)}],
            })));
        }
        if !self.text.is_empty() {
            self.ready.push_back(done(json!({
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": std::mem::take(&mut self.text)}],
            })));
        }
        for (n, call) in std::mem::take(&mut self.calls).into_iter().enumerate() {
            if call.name.is_empty() {
                tracing::warn!("dropping a chat tool call without a name");
                continue;
            }
            let call_id = call
                .id
                .unwrap_or_else(|| format!("tool-call-{}", call.index.unwrap_or(n as u64)));
            self.ready.push_back(done(json!({
                "type": "function_call",
                "name": call.name,
                "arguments": call.arguments,
                "call_id": call_id,
            })));
        }
        self.ready.push_back(ResponseEvent::Completed {
            response_id: std::mem::take(&mut self.response_id),
            model: self.model.take(),
            usage: self.usage.take().unwrap_or_default(),
        });
    }

    fn item_id(&self, prefix: &str) -> String {
        format!("{prefix}_{}", self.response_id)
    }
}

fn done(item: Value) -> ResponseEvent {
    match item {
        Value::Object(map) => ResponseEvent::OutputItemDone(map),
        _ => ResponseEvent::OutputItemDone(Map::new()),
    }
}

/// `delta.content`: a string, or parts carrying `text`.
fn content_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => Some(
            parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect(),
        ),
        _ => None,
    }
}

fn reasoning_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        obj @ Value::Object(_) => text(obj, "text").or_else(|| text(obj, "content")),
        _ => None,
    }
}

/// Chat Completions `usage`; absent parts count as 0.
pub(crate) fn usage(u: &Value) -> TokenUsage {
    let input_tokens = count(u.get("prompt_tokens"));
    let output_tokens = count(u.get("completion_tokens"));
    let total = count(u.get("total_tokens"));
    TokenUsage {
        input_tokens,
        cached_input_tokens: count(u.pointer("/prompt_tokens_details/cached_tokens")),
        output_tokens,
        reasoning_output_tokens: count(u.pointer("/completion_tokens_details/reasoning_tokens")),
        total_tokens: if total > 0 {
            total
        } else {
            input_tokens + output_tokens
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn usage_maps_cached_and_reasoning_tokens() {
        let u = usage(&json!({
            "prompt_tokens": 200,
            "prompt_tokens_details": {"cached_tokens": 150},
            "completion_tokens": 30,
            "completion_tokens_details": {"reasoning_tokens": 12},
            "total_tokens": 230,
        }));
        assert_eq!(
            u,
            TokenUsage {
                input_tokens: 200,
                cached_input_tokens: 150,
                output_tokens: 30,
                reasoning_output_tokens: 12,
                total_tokens: 230,
            }
        );
        let u = usage(&json!({"prompt_tokens": 4, "completion_tokens": 1,
            "prompt_tokens_details": null}));
        assert_eq!((u.cached_input_tokens, u.total_tokens), (0, 5));
    }

    #[test]
    fn content_and_reasoning_shapes() {
        assert_eq!(content_text(Some(&json!("hi"))).unwrap(), "hi");
        assert_eq!(
            content_text(Some(&json!([{"type": "text", "text": "a"}, {"text": "b"}]))).unwrap(),
            "ab"
        );
        assert_eq!(content_text(Some(&Value::Null)), None);
        assert_eq!(reasoning_text(Some(&json!("r"))).unwrap(), "r");
        assert_eq!(reasoning_text(Some(&json!({"text": "t"}))).unwrap(), "t");
        assert_eq!(reasoning_text(Some(&json!({"content": "c"}))).unwrap(), "c");
        assert_eq!(reasoning_text(None), None);
    }
}
