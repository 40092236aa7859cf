//! What the model gets for an MCP call: the `function_call_output` item made
//! from the server's `CallToolResult` as Codex makes it
//! (`codex-rs/protocol/src/models.rs`, `as_function_call_output_payload`):
//!
//! * non-null `structuredContent` is sent as its JSON text;
//! * otherwise every content block becomes an item — `text` an
//!   `input_text`, `image` an `input_image` with a data URL, anything else
//!   (audio, resources, links) an `input_text` holding the block's JSON;
//! * `success` is `!isError`;
//! * the output starts with `Wall time: <seconds> seconds\nOutput:\n` — the
//!   whole output when the body is empty, a leading `input_text` before
//!   content items;
//! * text is cut to Codex's default budget (10 000 tokens), several text
//!   items sharing it (keel_tool_model::truncate).

use std::time::Duration;

use keel_tool_model::truncate::{TruncationPolicy, truncate_items, truncate_middle};
use serde_json::{Value, json};

/// The item to store and whether the call succeeded.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub item: Value,
    pub success: bool,
}

fn header(wall: Duration) -> String {
    format!("Wall time: {:.4} seconds\nOutput:\n", wall.as_secs_f64())
}

/// The output for a `CallToolResult` (as JSON).
pub fn from_result(call_id: &str, result: &Value, wall: Duration) -> Output {
    let success = result.get("isError").and_then(Value::as_bool) != Some(true);
    let policy = TruncationPolicy::default();
    let output = match result.get("structuredContent").filter(|v| !v.is_null()) {
        Some(structured) => {
            let text = truncate_middle(&structured.to_string(), policy);
            Value::String(format!("{}{text}", header(wall)))
        }
        None => {
            let blocks = result
                .get("content")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default();
            if blocks.is_empty() {
                Value::String(header(wall))
            } else {
                let items = blocks.iter().map(content_item).collect();
                let mut all = vec![json!({"type": "input_text", "text": header(wall)})];
                all.extend(truncate_items(items, policy));
                Value::Array(all)
            }
        }
    };
    Output {
        item: json!({"type": "function_call_output", "call_id": call_id, "output": output}),
        success,
    }
}

/// The output for a call that failed before the server answered (Codex
/// turns such a failure into an error result with one text block).
pub fn from_error(call_id: &str, message: &str, wall: Duration) -> Output {
    let result = json!({"content": [{"type": "text", "text": message}], "isError": true});
    from_result(call_id, &result, wall)
}

fn content_item(block: &Value) -> Value {
    let kind = block.get("type").and_then(Value::as_str);
    match kind {
        Some("text") => match block.get("text").and_then(Value::as_str) {
            Some(text) => json!({"type": "input_text", "text": text}),
            None => raw(block),
        },
        Some("image") => match block.get("data").and_then(Value::as_str) {
            Some(data) if data.starts_with("data:") => {
                json!({"type": "input_image", "image_url": data})
            }
            Some(data) => {
                let mime = block
                    .get("mimeType")
                    .or_else(|| block.get("mime_type"))
                    .and_then(Value::as_str)
                    .unwrap_or("application/octet-stream");
                json!({"type": "input_image", "image_url": format!("data:{mime};base64,{data}")})
            }
            None => raw(block),
        },
        _ => raw(block),
    }
}

fn raw(block: &Value) -> Value {
    json!({"type": "input_text", "text": block.to_string()})
}

#[cfg(test)]
mod tests {
    use super::*;

    const WALL: Duration = Duration::from_millis(12);

    #[test]
    fn text_content_becomes_items_after_the_wall_time() {
        let result = json!({"content": [{"type": "text", "text": "Echo: hi"}]});
        let out = from_result("c1", &result, WALL);
        assert!(out.success);
        assert_eq!(
            out.item,
            json!({"type": "function_call_output", "call_id": "c1", "output": [
                {"type": "input_text", "text": "Wall time: 0.0120 seconds\nOutput:\n"},
                {"type": "input_text", "text": "Echo: hi"},
            ]})
        );
    }

    #[test]
    fn structured_content_wins_and_is_error_means_failure() {
        let result = json!({
            "content": [{"type": "text", "text": "ignored"}],
            "structuredContent": {"temperature": 22.5},
            "isError": true,
        });
        let out = from_result("c2", &result, WALL);
        assert!(!out.success);
        assert_eq!(
            out.item["output"],
            json!("Wall time: 0.0120 seconds\nOutput:\n{\"temperature\":22.5}")
        );
        let null = json!({"content": [], "structuredContent": null});
        assert_eq!(
            from_result("c3", &null, WALL).item["output"],
            json!("Wall time: 0.0120 seconds\nOutput:\n")
        );
    }

    #[test]
    fn images_become_data_urls_and_other_blocks_their_json() {
        let result = json!({"content": [
            {"type": "image", "data": "iVBORw0KGgo=", "mimeType": "image/png"},
            {"type": "image", "data": "data:image/gif;base64,R0lG"},
            {"type": "resource_link", "uri": "test://static/resource/1", "name": "r1"},
        ]});
        let output = from_result("c4", &result, WALL).item["output"].clone();
        assert_eq!(
            output[1],
            json!({"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="})
        );
        assert_eq!(
            output[2],
            json!({"type": "input_image", "image_url": "data:image/gif;base64,R0lG"})
        );
        assert_eq!(output[3]["type"], "input_text");
        assert!(
            output[3]["text"]
                .as_str()
                .unwrap()
                .contains("test://static/resource/1")
        );
    }

    #[test]
    fn failures_are_error_results() {
        let out = from_error("c5", "tool call error: timed out after 2 s", WALL);
        assert!(!out.success);
        assert_eq!(
            out.item["output"][1]["text"],
            "tool call error: timed out after 2 s"
        );
    }

    #[test]
    fn huge_text_is_cut_to_the_default_budget() {
        let big = "x".repeat(100_000);
        let result = json!({"content": [{"type": "text", "text": big}]});
        let output = from_result("c6", &result, WALL).item["output"].clone();
        let text = output[1]["text"].as_str().unwrap();
        assert!(text.len() < 41_000, "{}", text.len());
        assert!(text.contains("tokens truncated"));
    }
}
