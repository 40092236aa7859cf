//! Builders for Chat Completions stream chunks (data-only events), one call
//! per chunk, ending with [`done`]:
//!
//! ```
//! use keel_test_support::fake_model::{Scripted, sse::chat};
//! let turn = Scripted::Events(vec![
//!     chat::text("Hel"),
//!     chat::text("lo"),
//!     chat::finish("stop"),
//!     chat::usage(10, 2),
//!     chat::done(),
//! ]);
//! ```
//!
//! Chunks without a `model` get the request's model filled in when served.

use serde_json::{Value, json};

use super::{SseEvent, raw};

/// A chunk with this `delta` for choice 0.
pub fn chunk(delta: Value) -> SseEvent {
    SseEvent::data_only(json!({
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 0,
        "choices": [{"index": 0, "delta": delta, "finish_reason": null}],
    }))
}

/// A piece of assistant text (`delta.content`).
pub fn text(delta: &str) -> SseEvent {
    chunk(json!({"role": "assistant", "content": delta}))
}

/// A piece of reasoning (`delta.reasoning`).
pub fn reasoning(delta: &str) -> SseEvent {
    chunk(json!({"reasoning": delta}))
}

/// A `delta.tool_calls` fragment. `id` and `name` come with a call's first
/// fragment; later ones carry only more `arguments`.
pub fn tool_call(index: u64, id: Option<&str>, name: Option<&str>, arguments: &str) -> SseEvent {
    let mut function = json!({"arguments": arguments});
    let mut call = json!({"index": index, "function": {}});
    if let Some(name) = name {
        function["name"] = json!(name);
    }
    call["function"] = function;
    if let Some(id) = id {
        call["id"] = json!(id);
        call["type"] = json!("function");
    }
    chunk(json!({"tool_calls": [call]}))
}

/// The chunk that ends choice 0: `stop`, `tool_calls` or `length`.
pub fn finish(reason: &str) -> SseEvent {
    SseEvent::data_only(json!({
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 0,
        "choices": [{"index": 0, "delta": {}, "finish_reason": reason}],
    }))
}

/// The usage chunk sent last when `stream_options.include_usage` is set.
pub fn usage(prompt_tokens: u64, completion_tokens: u64) -> SseEvent {
    usage_with(json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }))
}

/// A usage chunk with this `usage` object as given.
pub fn usage_with(usage: Value) -> SseEvent {
    SseEvent::data_only(json!({
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 0,
        "choices": [],
        "usage": usage,
    }))
}

/// `data: [DONE]`, the end of the stream.
pub fn done() -> SseEvent {
    raw("[DONE]")
}
