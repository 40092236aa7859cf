//! Responses API items as JSON: checking what callers give us, and the short
//! summary of an output item that the worker acts on.

use keel_proto::v1::output_item_done::Item;
use keel_proto::v1::{CustomToolCallItem, FunctionCallItem, MessageItem, OtherItem, ReasoningItem};
use serde_json::{Map, Value};

use crate::error::ProxyError;

/// Longest message text sent in a summary; the stored item keeps all of it.
pub(crate) const MESSAGE_TEXT_LIMIT: usize = 16 * 1024;

/// Parses an item a caller supplied: a JSON object with a string `type`.
pub(crate) fn parse_item(json: &str, what: &str) -> Result<Map<String, Value>, ProxyError> {
    let invalid = |reason: String| ProxyError::InvalidRequest(format!("{what}: {reason}"));
    match serde_json::from_str::<Value>(json) {
        Ok(Value::Object(item)) if item.get("type").is_some_and(Value::is_string) => Ok(item),
        Ok(_) => Err(invalid(
            "must be a JSON object with a string \"type\"".into(),
        )),
        Err(e) => Err(invalid(format!("not valid JSON: {e}"))),
    }
}

/// Drops the vendor's item id: with `store: false` an id refers to nothing,
/// and Codex never sends one back.
pub(crate) fn strip_id(mut item: Map<String, Value>) -> Map<String, Value> {
    item.remove("id");
    item
}

/// What the worker needs from an output item without fetching it.
pub(crate) fn summarize(item: &Map<String, Value>) -> Item {
    let text = |key: &str| {
        item.get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    match item.get("type").and_then(Value::as_str).unwrap_or_default() {
        "message" => {
            let full: String = parts(item, "content")
                .filter(|p| {
                    matches!(
                        p.get("type").and_then(Value::as_str),
                        Some("output_text" | "input_text")
                    )
                })
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect();
            let (text_cut, truncated) = cut(full, MESSAGE_TEXT_LIMIT);
            Item::Message(MessageItem {
                role: text("role"),
                text: text_cut,
                truncated,
            })
        }
        "function_call" => {
            let full = match item.get("arguments") {
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => String::new(),
            };
            let (arguments, arguments_truncated) = cut(full, MESSAGE_TEXT_LIMIT);
            Item::FunctionCall(FunctionCallItem {
                call_id: text("call_id"),
                name: text("name"),
                arguments,
                arguments_truncated,
            })
        }
        "custom_tool_call" => {
            let (input, input_truncated) = cut(text("input"), MESSAGE_TEXT_LIMIT);
            Item::CustomToolCall(CustomToolCallItem {
                call_id: text("call_id"),
                name: text("name"),
                input,
                input_truncated,
            })
        }
        "reasoning" => Item::Reasoning(ReasoningItem {
            summary_text: parts(item, "summary")
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n\n"),
            content_text: cut(
                parts(item, "content")
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .collect(),
                MESSAGE_TEXT_LIMIT,
            )
            .0,
        }),
        "web_search_call" => {
            let action = item.get("action");
            Item::Other(OtherItem {
                r#type: "web_search_call".into(),
                id: text("id"),
                web_search_query: action
                    .and_then(|a| a.get("query"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                web_search_action_json: action
                    .map(|a| cut(a.to_string(), ACTION_JSON_LIMIT).0)
                    .unwrap_or_default(),
            })
        }
        other => Item::Other(OtherItem {
            r#type: other.to_string(),
            id: text("id"),
            ..Default::default()
        }),
    }
}

/// How much of a web search's action reaches workflow history.
const ACTION_JSON_LIMIT: usize = 4096;

/// The elements of the array `item[key]` (none when absent).
fn parts<'a>(item: &'a Map<String, Value>, key: &str) -> impl Iterator<Item = &'a Value> {
    item.get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// `text` cut to at most `max` bytes at a char boundary, and whether it was.
fn cut(mut text: String, max: usize) -> (String, bool) {
    if text.len() <= max {
        return (text, false);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    (text, true)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use serde_json::json;

    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn message_text_is_concatenated_and_cut_at_a_char_boundary() {
        let item = obj(json!({"type": "message", "role": "assistant", "content": [
            {"type": "output_text", "text": "Hello, "},
            {"type": "refusal", "refusal": "no"},
            {"type": "output_text", "text": "world"},
        ]}));
        assert_eq!(
            summarize(&item),
            Item::Message(MessageItem {
                role: "assistant".into(),
                text: "Hello, world".into(),
                truncated: false
            })
        );
        let long = format!("a{}", "é".repeat(MESSAGE_TEXT_LIMIT));
        let item = obj(json!({"type": "message", "role": "user",
            "content": [{"type": "input_text", "text": long}]}));
        let Item::Message(m) = summarize(&item) else {
            panic!("a message")
        };
        assert!(m.truncated);
        assert_eq!(m.text.len(), MESSAGE_TEXT_LIMIT - 1);
        assert!(long.starts_with(&m.text));
    }

    #[test]
    fn other_kinds() {
        let reasoning = obj(json!({"type": "reasoning", "summary": [
            {"type": "summary_text", "text": "one"}, {"type": "summary_text", "text": "two"}]}));
        assert_eq!(
            summarize(&reasoning),
            Item::Reasoning(ReasoningItem {
                summary_text: "one\n\ntwo".into(),
                content_text: String::new(),
            })
        );
        let raw = obj(json!({"type": "reasoning", "summary": [],
            "content": [{"type": "reasoning_text", "text": "thinking"}]}));
        assert_eq!(
            summarize(&raw),
            Item::Reasoning(ReasoningItem {
                summary_text: String::new(),
                content_text: "thinking".into(),
            })
        );
        let patch = obj(
            json!({"type": "custom_tool_call", "call_id": "p", "name": "apply_patch",
            "input": "*** Begin Patch\n*** End Patch"}),
        );
        assert_eq!(
            summarize(&patch),
            Item::CustomToolCall(CustomToolCallItem {
                call_id: "p".into(),
                name: "apply_patch".into(),
                input: "*** Begin Patch\n*** End Patch".into(),
                input_truncated: false,
            })
        );
        let call = obj(
            json!({"type": "function_call", "call_id": "c", "name": "shell",
            "arguments": "{\"command\":[\"ls\"]}"}),
        );
        let Item::FunctionCall(f) = summarize(&call) else {
            panic!("a call")
        };
        assert_eq!((f.call_id.as_str(), f.name.as_str()), ("c", "shell"));
        assert_eq!(f.arguments, "{\"command\":[\"ls\"]}");
        let web = obj(
            json!({"type": "web_search_call", "id": "ws_1", "status": "completed",
            "action": {"type": "search", "query": "keel temporal"}}),
        );
        assert_eq!(
            summarize(&web),
            Item::Other(OtherItem {
                r#type: "web_search_call".into(),
                id: "ws_1".into(),
                web_search_query: "keel temporal".into(),
                web_search_action_json: r#"{"query":"keel temporal","type":"search"}"#.into(),
            })
        );
        let other = obj(json!({"type": "image_generation_call", "id": "ig_1"}));
        assert_eq!(
            summarize(&other),
            Item::Other(OtherItem {
                r#type: "image_generation_call".into(),
                id: "ig_1".into(),
                ..Default::default()
            })
        );
    }

    #[test]
    fn big_call_arguments_are_cut_and_flagged() {
        let big = "x".repeat(MESSAGE_TEXT_LIMIT + 10);
        let call = obj(
            json!({"type": "function_call", "call_id": "c", "name": "shell",
            "arguments": big}),
        );
        let Item::FunctionCall(f) = summarize(&call) else {
            panic!("not a function call")
        };
        assert!(f.arguments_truncated);
        assert_eq!(f.arguments.len(), MESSAGE_TEXT_LIMIT);
        let custom = obj(json!({"type": "custom_tool_call", "call_id": "c",
            "name": "apply_patch", "input": "small"}));
        let Item::CustomToolCall(c) = summarize(&custom) else {
            panic!("not a custom call")
        };
        assert!(!c.input_truncated);
        assert_eq!(c.input, "small");
    }

    #[test]
    fn caller_items_must_be_typed_objects() {
        assert!(parse_item(r#"{"type":"message","role":"user"}"#, "x").is_ok());
        for bad in ["[]", "{}", r#"{"type":1}"#, "nope", "\"message\""] {
            let err = parse_item(bad, "append[0]").unwrap_err();
            assert!(matches!(err, ProxyError::InvalidRequest(ref m) if m.starts_with("append[0]")));
        }
        let stripped = strip_id(obj(json!({"type": "message", "id": "msg_1"})));
        assert!(!stripped.contains_key("id"));
    }
}
