//! Builders for Responses API stream events, one call per event, so a scripted
//! response reads like the stream it produces:
//!
//! ```
//! use keel_test_support::fake_model::{Scripted, sse};
//! let turn = Scripted::Events(vec![
//!     sse::created(),
//!     sse::function_call("call_1", "shell", r#"{"command":["echo","hello"]}"#),
//!     sse::completed("resp_1", 10, 5),
//! ]);
//! ```
//!
//! Events that carry a `response` object without a `model` get the request's
//! `model` filled in when served, as the real API echoes it.
//!
//! Chat Completions streams are data-only events: see [`chat`] for their
//! builders, and [`raw`] for text sent as is (`[DONE]`, or malformed data).

pub mod chat;

use serde_json::{Value, json};

/// One server-sent event: `event: <type>` and `data: <json>`, where the JSON
/// also carries the `type` (as the Responses API sends it). With an empty
/// `event` it is a data-only event (as Chat Completions sends them), and
/// string data is then sent verbatim rather than as JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub event: String,
    pub data: Value,
}

impl SseEvent {
    /// An event named after its JSON's `type` (`message` when it has none).
    pub fn new(data: Value) -> Self {
        let event = data
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("message")
            .to_string();
        Self { event, data }
    }

    /// A data-only event carrying `data` as JSON.
    pub fn data_only(data: Value) -> Self {
        Self {
            event: String::new(),
            data,
        }
    }

    /// The event in SSE wire format, terminated by a blank line.
    pub fn to_wire(&self) -> String {
        match (&self.data, self.event.is_empty()) {
            (Value::String(text), true) => format!("data: {text}\n\n"),
            (data, true) => format!("data: {data}\n\n"),
            (data, false) => format!("event: {}\ndata: {data}\n\n", self.event),
        }
    }

    /// Sets `response.model` (Responses API) or the chunk's `model` (Chat
    /// Completions) to `model` when the event has none.
    pub(crate) fn fill_model(&mut self, model: &str) {
        if let Some(resp) = self.data.get_mut("response").and_then(Value::as_object_mut) {
            resp.entry("model")
                .or_insert_with(|| Value::String(model.to_string()));
        } else if self.event.is_empty()
            && let Some(chunk) = self.data.as_object_mut()
            && chunk.get("object").and_then(Value::as_str) == Some("chat.completion.chunk")
        {
            chunk
                .entry("model")
                .or_insert_with(|| Value::String(model.to_string()));
        }
    }
}

/// A data-only event whose data is `text`, sent verbatim.
pub fn raw(text: &str) -> SseEvent {
    SseEvent::data_only(Value::String(text.to_string()))
}

/// Any event, from its JSON (which must carry `type`).
pub fn event(data: Value) -> SseEvent {
    SseEvent::new(data)
}

/// `response.created`.
pub fn created() -> SseEvent {
    event(json!({
        "type": "response.created",
        "response": {"id": "resp_created", "object": "response", "status": "in_progress"},
    }))
}

/// `response.output_text.delta`: a piece of assistant text.
pub fn text_delta(item_id: &str, delta: &str) -> SseEvent {
    event(json!({
        "type": "response.output_text.delta",
        "item_id": item_id,
        "output_index": 0,
        "content_index": 0,
        "delta": delta,
    }))
}

/// `response.reasoning_summary_text.delta`: a piece of a reasoning summary.
pub fn reasoning_summary_delta(item_id: &str, summary_index: u32, delta: &str) -> SseEvent {
    event(json!({
        "type": "response.reasoning_summary_text.delta",
        "item_id": item_id,
        "output_index": 0,
        "summary_index": summary_index,
        "delta": delta,
    }))
}

/// `response.output_item.done` with any item.
pub fn output_item_done(item: Value) -> SseEvent {
    event(json!({
        "type": "response.output_item.done",
        "output_index": 0,
        "item": item,
    }))
}

/// A finished assistant message.
pub fn message(id: &str, text: &str) -> SseEvent {
    output_item_done(json!({
        "type": "message",
        "id": id,
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }))
}

/// A finished function call; `arguments` is the JSON string the model wrote.
pub fn function_call(call_id: &str, name: &str, arguments: &str) -> SseEvent {
    output_item_done(json!({
        "type": "function_call",
        "id": format!("fc_{call_id}"),
        "status": "completed",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }))
}

/// A finished hosted web search (`web_search_call`) for `query`.
pub fn web_search_call(id: &str, query: &str) -> SseEvent {
    output_item_done(json!({
        "type": "web_search_call",
        "id": id,
        "status": "completed",
        "action": {"type": "search", "query": query},
    }))
}

/// A finished reasoning item with these summary parts.
pub fn reasoning(id: &str, summary: &[&str]) -> SseEvent {
    let parts: Vec<Value> = summary
        .iter()
        .map(|text| json!({"type": "summary_text", "text": text}))
        .collect();
    output_item_done(json!({
        "type": "reasoning",
        "id": id,
        "summary": parts,
        "encrypted_content": "fake-encrypted-reasoning",
    }))
}

/// `response.completed` with this usage (no cached or reasoning tokens).
pub fn completed(response_id: &str, input_tokens: u64, output_tokens: u64) -> SseEvent {
    completed_with_usage(
        response_id,
        json!({
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + output_tokens,
        }),
    )
}

/// `response.completed` with a usage object as given (may be `null`).
pub fn completed_with_usage(response_id: &str, usage: Value) -> SseEvent {
    event(json!({
        "type": "response.completed",
        "response": {
            "id": response_id,
            "object": "response",
            "status": "completed",
            "usage": usage,
        },
    }))
}

/// `response.failed` with this error code (e.g. `context_length_exceeded`).
pub fn failed(code: &str, message: &str) -> SseEvent {
    event(json!({
        "type": "response.failed",
        "response": {
            "id": "resp_failed",
            "object": "response",
            "status": "failed",
            "error": {"code": code, "message": message},
        },
    }))
}

/// `response.incomplete` for this reason (e.g. `max_output_tokens`).
pub fn incomplete(reason: &str) -> SseEvent {
    event(json!({
        "type": "response.incomplete",
        "response": {
            "id": "resp_incomplete",
            "object": "response",
            "status": "incomplete",
            "incomplete_details": {"reason": reason},
        },
    }))
}
