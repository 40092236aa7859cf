//! The Responses API: the request body (Codex: `codex-rs/core/src/client.rs`) and its Server-Sent Events
//! turned into [`ResponseEvent`]s (Codex: `codex-rs/codex-api/src/sse/responses.rs`).

use keel_proto::v1::TokenUsage;
use serde::Serialize;
use serde_json::{Value, json};

use crate::error::ProxyError;
use crate::sse::{SseEvent, SseReader};
use crate::wire::{Prompt, ResponseEvent, count, text};

/// The request body. `store` is false, so items are never referenced by id.
#[derive(Debug, Serialize)]
pub struct ResponsesRequest {
    pub model: String,
    pub instructions: String,
    pub input: Vec<Value>,
    pub tools: Vec<Value>,
    pub tool_choice: &'static str,
    pub parallel_tool_calls: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<Reasoning>,
    pub store: bool,
    pub stream: bool,
    /// `reasoning.encrypted_content` when reasoning is on: with `store:
    /// false` the only way to carry reasoning into the next request.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_tier: Option<&'static str>,
    /// The session id: stable for the whole conversation, so the vendor's
    /// prompt cache keeps hitting.
    pub prompt_cache_key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<TextControls>,
}

#[derive(Debug, Serialize)]
pub struct Reasoning {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effort: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<&'static str>,
}

#[derive(Debug, Serialize)]
pub struct TextControls {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verbosity: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<Value>,
}

impl ResponsesRequest {
    pub fn new(p: Prompt) -> Self {
        let c = &p.controls;
        let reasoning = c.wants_reasoning().then(|| Reasoning {
            effort: c.reasoning_effort.map(|e| e.as_str()),
            summary: c.reasoning_summary.map(|s| s.as_str()),
        });
        let format = c.output_schema.clone().map(|schema| {
            json!({"type": "json_schema", "name": "codex_output_schema", "strict": true, "schema": schema})
        });
        let verbosity = c.verbosity.map(|v| v.as_str());
        let text =
            (verbosity.is_some() || format.is_some()).then_some(TextControls { verbosity, format });
        Self {
            include: if reasoning.is_some() {
                vec!["reasoning.encrypted_content"]
            } else {
                Vec::new()
            },
            reasoning,
            service_tier: c.service_tier.map(|t| t.wire_value()),
            text,
            model: p.model,
            instructions: p.instructions,
            input: p.input,
            tools: p.tools,
            tool_choice: "auto",
            parallel_tool_calls: p.parallel_tool_calls,
            store: false,
            stream: true,
            prompt_cache_key: p.session_id,
        }
    }
}

/// A Responses API stream.
pub struct ResponsesStream {
    sse: SseReader,
}

impl ResponsesStream {
    pub fn new(sse: SseReader) -> Self {
        Self { sse }
    }

    /// The next event worth acting on. `response.failed`,
    /// `response.incomplete` and a stream that ends before
    /// `response.completed` are errors.
    pub async fn next(&mut self) -> Result<ResponseEvent, ProxyError> {
        loop {
            let Some(sse) = self.sse.next().await? else {
                return Err(ProxyError::StreamClosed);
            };
            if let Some(event) = parse_event(&sse)? {
                return Ok(event);
            }
        }
    }
}

/// One SSE event; `Ok(None)` for events the proxy does not need, and for data
/// that is not JSON (skipped, as Codex does).
fn parse_event(sse: &SseEvent) -> Result<Option<ResponseEvent>, ProxyError> {
    let Ok(data) = serde_json::from_str::<Value>(&sse.data) else {
        tracing::debug!(event = %sse.event, "skipping an SSE event whose data is not JSON");
        return Ok(None);
    };
    let kind = data
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or(&sse.event);
    let response = data.get("response").unwrap_or(&Value::Null);
    let index = |key: &str| {
        data.get(key)
            .and_then(Value::as_u64)
            .and_then(|i| u32::try_from(i).ok())
            .unwrap_or(0)
    };
    Ok(match kind {
        "response.output_text.delta" => {
            text(&data, "delta").map(|delta| ResponseEvent::OutputTextDelta {
                item_id: text(&data, "item_id").unwrap_or_default(),
                delta,
            })
        }
        "response.reasoning_summary_text.delta" => {
            text(&data, "delta").map(|delta| ResponseEvent::ReasoningSummaryDelta {
                item_id: text(&data, "item_id").unwrap_or_default(),
                summary_index: index("summary_index"),
                delta,
            })
        }
        "response.reasoning_text.delta" => {
            text(&data, "delta").map(|delta| ResponseEvent::ReasoningTextDelta {
                item_id: text(&data, "item_id").unwrap_or_default(),
                content_index: index("content_index"),
                delta,
            })
        }
        "response.output_item.done" => match data.get("item") {
            Some(Value::Object(item)) => Some(ResponseEvent::OutputItemDone(item.clone())),
            _ => {
                tracing::warn!("skipping response.output_item.done without an item object");
                None
            }
        },
        "response.completed" => Some(ResponseEvent::Completed {
            response_id: text(response, "id").unwrap_or_default(),
            model: text(response, "model"),
            usage: usage(response.get("usage").unwrap_or(&Value::Null)),
        }),
        "response.failed" => {
            let error = response.get("error").unwrap_or(&Value::Null);
            let code = text(error, "code").unwrap_or_default();
            let message = text(error, "message")
                .unwrap_or_else(|| "the model API reported response.failed".into());
            return Err(ProxyError::from_code(&code, message));
        }
        "response.incomplete" => {
            let reason = response
                .get("incomplete_details")
                .and_then(|d| text(d, "reason"))
                .unwrap_or_else(|| "unknown".into());
            return Err(ProxyError::Incomplete(reason));
        }
        _ => None,
    })
}

/// The Responses API `usage` object; absent or null parts count as 0.
fn usage(u: &Value) -> TokenUsage {
    let input_tokens = count(u.get("input_tokens"));
    let output_tokens = count(u.get("output_tokens"));
    let total = count(u.get("total_tokens"));
    TokenUsage {
        input_tokens,
        cached_input_tokens: count(u.pointer("/input_tokens_details/cached_tokens")),
        output_tokens,
        reasoning_output_tokens: count(u.pointer("/output_tokens_details/reasoning_tokens")),
        total_tokens: if total > 0 {
            total
        } else {
            input_tokens + output_tokens
        },
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::controls::{
        CallControls, ReasoningEffort, ReasoningSummary, ServiceTier, Verbosity,
    };

    fn parse(data: &str) -> Result<Option<ResponseEvent>, ProxyError> {
        parse_event(&SseEvent {
            event: "x".into(),
            data: data.into(),
            ..SseEvent::default()
        })
    }

    fn prompt(controls: CallControls) -> Prompt {
        Prompt {
            session_id: "s".into(),
            model: "m".into(),
            instructions: "i".into(),
            input: vec![],
            tools: vec![],
            parallel_tool_calls: false,
            controls,
        }
    }

    #[test]
    fn controls_shape_the_request() {
        let plain =
            serde_json::to_value(ResponsesRequest::new(prompt(CallControls::default()))).unwrap();
        for absent in ["reasoning", "include", "service_tier", "text"] {
            assert!(plain.get(absent).is_none(), "{absent}: {plain}");
        }
        let full = serde_json::to_value(ResponsesRequest::new(prompt(CallControls {
            reasoning_effort: Some(ReasoningEffort::High),
            reasoning_summary: Some(ReasoningSummary::Concise),
            verbosity: Some(Verbosity::Low),
            service_tier: Some(ServiceTier::Fast),
            output_schema: Some(json!({"type": "object"})),
            personality: None,
        })))
        .unwrap();
        assert_eq!(
            full["reasoning"],
            json!({"effort": "high", "summary": "concise"})
        );
        assert_eq!(full["include"], json!(["reasoning.encrypted_content"]));
        assert_eq!(full["service_tier"], "priority");
        assert_eq!(full["text"]["verbosity"], "low");
        assert_eq!(
            full["text"]["format"],
            json!({"type": "json_schema", "name": "codex_output_schema", "strict": true,
                "schema": {"type": "object"}})
        );
        let summary_only = serde_json::to_value(ResponsesRequest::new(prompt(CallControls {
            reasoning_summary: Some(ReasoningSummary::Auto),
            ..CallControls::default()
        })))
        .unwrap();
        assert_eq!(summary_only["reasoning"], json!({"summary": "auto"}));
    }

    #[test]
    fn usage_maps_and_null_details_count_zero() {
        let u = usage(&json!({
            "input_tokens": 100,
            "input_tokens_details": {"cached_tokens": 40},
            "output_tokens": 20,
            "output_tokens_details": {"reasoning_tokens": 7},
            "total_tokens": 120,
        }));
        assert_eq!(
            u,
            TokenUsage {
                input_tokens: 100,
                cached_input_tokens: 40,
                output_tokens: 20,
                reasoning_output_tokens: 7,
                total_tokens: 120,
            }
        );
        let u = usage(&json!({
            "input_tokens": 3,
            "input_tokens_details": null,
            "output_tokens": 2,
            "output_tokens_details": null,
        }));
        assert_eq!(
            (
                u.cached_input_tokens,
                u.reasoning_output_tokens,
                u.total_tokens
            ),
            (0, 0, 5)
        );
        assert_eq!(usage(&Value::Null), TokenUsage::default());
    }

    #[test]
    fn events_parse_and_unknown_or_broken_ones_are_skipped() {
        assert_eq!(
            parse(r#"{"type":"response.output_text.delta","item_id":"m","delta":"hi"}"#).unwrap(),
            Some(ResponseEvent::OutputTextDelta {
                item_id: "m".into(),
                delta: "hi".into()
            })
        );
        assert_eq!(
            parse(r#"{"type":"response.reasoning_summary_text.delta","item_id":"r","summary_index":2,"delta":"d"}"#)
                .unwrap(),
            Some(ResponseEvent::ReasoningSummaryDelta {
                item_id: "r".into(),
                summary_index: 2,
                delta: "d".into()
            })
        );
        assert_eq!(
            parse(r#"{"type":"response.reasoning_text.delta","item_id":"r","content_index":1,"delta":"raw"}"#)
                .unwrap(),
            Some(ResponseEvent::ReasoningTextDelta {
                item_id: "r".into(),
                content_index: 1,
                delta: "raw".into()
            })
        );
        assert_eq!(
            parse(r#"{"type":"response.created","response":{}}"#).unwrap(),
            None
        );
        assert_eq!(parse("not json").unwrap(), None);
        assert_eq!(
            parse(r#"{"type":"response.output_item.done"}"#).unwrap(),
            None
        );
        let Err(ProxyError::Incomplete(reason)) = parse(
            r#"{"type":"response.incomplete","response":{"incomplete_details":{"reason":"max_output_tokens"}}}"#,
        ) else {
            panic!("incomplete must fail")
        };
        assert_eq!(reason, "max_output_tokens");
        let Err(ProxyError::ContextWindowExceeded(msg)) = parse(
            r#"{"type":"response.failed","response":{"error":{"code":"context_length_exceeded","message":"too long"}}}"#,
        ) else {
            panic!("failed must fail")
        };
        assert_eq!(msg, "too long");
    }
}
