//! Providers with `wire_api = "chat"` (Codex: `codex-rs/core/src/chat_completions.rs`): the request on the wire, the
//! streamed chunks assembled into Responses API items, and failures.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use keel_blobstore::conversation;
use keel_proto::v1::output_item_done::Item;
use keel_proto::v1::stream_response_response::Event;
use keel_proto::v1::{FunctionCallItem, MessageItem, ReasoningItem, TokenUsage, ToolSpec};
use keel_test_support::fake_model::Scripted;
use keel_test_support::fake_model::sse::{self, chat};
use serde_json::{Value, json};
use tonic::Code;

fn shell_tool() -> ToolSpec {
    let json = json!({"type": "function", "name": "shell", "description": "Runs a command",
        "strict": false, "parameters": {"type": "object", "properties": {}}});
    ToolSpec {
        name: "shell".into(),
        json: json.to_string(),
    }
}

#[tokio::test]
async fn text_and_reasoning_stream_and_are_stored_as_responses_items() {
    let mut h = harness_with(
        vec![Scripted::Events(vec![
            chat::reasoning("Let me "),
            chat::chunk(json!({"reasoning": {"text": "think."}})),
            chat::text("Hel"),
            chat::chunk(json!({"content": [{"type": "text", "text": "lo"}]})),
            chat::finish("stop"),
            chat::usage_with(json!({
                "prompt_tokens": 200,
                "prompt_tokens_details": {"cached_tokens": 150},
                "completion_tokens": 30,
                "completion_tokens_details": {"reasoning_tokens": 12},
                "total_tokens": 230,
            })),
            chat::done(),
        ])],
        Setup::chat(),
    )
    .await;
    let mut req = request(vec![inline(&user_message("hello"))]);
    req.tools = vec![shell_tool()];
    req.parallel_tool_calls = true;
    let events = h.call_ok(req).await;

    let reasoning: String = events
        .iter()
        .filter_map(|e| match e {
            Event::ReasoningTextDelta(d) => Some(d.delta.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(reasoning, "Let me think.");
    let text: String = events
        .iter()
        .filter_map(|e| match e {
            Event::OutputTextDelta(d) => Some(d.delta.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(text, "Hello");
    assert_eq!(
        items(&events),
        [
            &Item::Reasoning(ReasoningItem {
                summary_text: String::new(),
                content_text: "Let me think.".into(),
            }),
            &Item::Message(MessageItem {
                role: "assistant".into(),
                text: "Hello".into(),
                truncated: false,
            }),
        ]
    );
    let done = completed(&events);
    assert_eq!(done.response_id, "chatcmpl-fake");
    assert_eq!(done.model, "gpt-test", "the chunk's model");
    assert_eq!(
        done.usage,
        Some(TokenUsage {
            input_tokens: 200,
            cached_input_tokens: 150,
            output_tokens: 30,
            reasoning_output_tokens: 12,
            total_tokens: 230,
        })
    );

    // Stored as Responses API items, so the rest of Keel sees no difference.
    let digests = conversation::item_digests(&h.blobs, Some(&done.head))
        .await
        .unwrap();
    assert_eq!(digests.len(), 3);
    let stored: Value = h.blobs.get_json(&digests[1]).await.unwrap();
    assert_eq!(
        stored,
        json!({"type": "reasoning", "summary": [],
            "content": [{"type": "reasoning_text", "text": "Let me think."}]})
    );
    let stored: Value = h.blobs.get_json(&digests[2]).await.unwrap();
    assert_eq!(
        stored,
        json!({"type": "message", "role": "assistant",
            "content": [{"type": "output_text", "text": "Hello"}]})
    );

    let sent = &h.fake.requests()[0];
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert_eq!(sent.header("session_id"), Some("sess-1"));
    let body = &sent.body;
    assert_eq!(body["model"], "gpt-test");
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"], json!({"include_usage": true}));
    assert_eq!(
        sent.messages(),
        [
            json!({"role": "system", "content": "You are a coding agent."}),
            json!({"role": "user", "content": "hello"}),
        ]
    );
    assert_eq!(
        body["tools"],
        json!([{"type": "function", "function": {"name": "shell", "description": "Runs a command",
            "strict": false, "parameters": {"type": "object", "properties": {}}}}])
    );
    assert_eq!(body["tool_choice"], "auto");
    assert_eq!(body["parallel_tool_calls"], true);
    assert!(body.get("input").is_none() && body.get("store").is_none());
}

#[tokio::test]
async fn tool_call_fragments_merge_and_go_back_as_chat_messages() {
    let mut h = harness_with(
        vec![
            Scripted::Events(vec![
                chat::text("Running both."),
                chat::tool_call(0, Some("call_a"), Some("shell"), r#"{"command":"#),
                chat::tool_call(1, Some("call_b"), Some("shell"), r#"{"command":["pwd"]}"#),
                chat::tool_call(0, None, None, r#"["ls"]}"#),
                // No id: named after its index. No name: dropped.
                chat::tool_call(2, None, Some("shell"), "{}"),
                chat::tool_call(3, Some("call_x"), None, "{}"),
                chat::finish("tool_calls"),
                chat::done(),
            ]),
            Scripted::chat_assistant("All done."),
        ],
        Setup::chat(),
    )
    .await;
    let mut req = request(vec![inline(&user_message("list and locate"))]);
    req.tools = vec![shell_tool()];
    let events = h.call_ok(req).await;
    let calls: Vec<&FunctionCallItem> = items(&events)
        .into_iter()
        .filter_map(|i| match i {
            Item::FunctionCall(f) => Some(f),
            _ => None,
        })
        .collect();
    let got: Vec<(&str, &str)> = calls
        .iter()
        .map(|c| (c.call_id.as_str(), c.arguments.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("call_a", r#"{"command":["ls"]}"#),
            ("call_b", r#"{"command":["pwd"]}"#),
            ("tool-call-2", "{}"),
        ]
    );
    assert!(matches!(items(&events)[0], Item::Message(m) if m.text == "Running both."));
    let done = completed(&events);
    assert_eq!(
        done.usage,
        Some(TokenUsage::default()),
        "no usage chunk: zeros"
    );

    // The next call carries the calls (grouped) and their outputs.
    let outputs: Vec<_> = ["call_a", "call_b", "tool-call-2"]
        .iter()
        .map(|id| inline(&json!({"type": "function_call_output", "call_id": id, "output": format!("out {id}")})))
        .collect();
    let mut req = request(outputs);
    req.conversation.as_mut().unwrap().head = done.head.clone();
    let events = h.call_ok(req).await;
    assert!(matches!(items(&events)[0], Item::Message(m) if m.text == "All done."));
    let sent = h.fake.requests()[1].messages().to_vec();
    assert_eq!(sent.len(), 7, "{sent:#?}");
    assert_eq!(
        sent[2],
        json!({"role": "assistant", "content": "Running both."})
    );
    assert_eq!(sent[3]["content"], Value::Null);
    let ids: Vec<&str> = sent[3]["tool_calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["call_a", "call_b", "tool-call-2"]);
    assert_eq!(
        sent[3]["tool_calls"][0]["function"],
        json!({"name": "shell", "arguments": r#"{"command":["ls"]}"#})
    );
    assert_eq!(
        sent[4],
        json!({"role": "tool", "tool_call_id": "call_a", "content": "out call_a"})
    );
    assert_eq!(sent[6]["tool_call_id"], "tool-call-2");
}

#[tokio::test]
async fn fragments_without_index_merge_by_id() {
    let mut h = harness_with(
        vec![Scripted::Events(vec![
            chat::chunk(json!({"tool_calls": [{"id": "a", "function": {"name": "shell", "arguments": "{\"x\""}}]})),
            chat::chunk(json!({"tool_calls": [{"id": "b", "function": {"name": "shell", "arguments": "{}"}}]})),
            chat::chunk(json!({"tool_calls": [{"id": "a", "function": {"arguments": ":1}"}}]})),
            chat::finish("tool_calls"),
            chat::done(),
        ])],
        Setup::chat(),
    )
    .await;
    let events = h.call_ok(request(vec![])).await;
    let got: Vec<(String, String)> = items(&events)
        .into_iter()
        .map(|i| match i {
            Item::FunctionCall(f) => (f.call_id.clone(), f.arguments.clone()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        got,
        [
            ("a".to_string(), "{\"x\":1}".to_string()),
            ("b".to_string(), "{}".to_string())
        ]
    );
}

#[tokio::test]
async fn finish_reason_length_is_out_of_range_and_writes_nothing() {
    let mut h = harness_with(
        vec![Scripted::Events(vec![
            chat::text("partial"),
            chat::finish("length"),
            chat::done(),
        ])],
        Setup::chat(),
    )
    .await;
    let (events, err) = h.call(request(vec![inline(&user_message("huge"))])).await;
    let err = err.unwrap();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    assert!(
        err.message().starts_with("context window exceeded"),
        "{err:?}"
    );
    assert!(!events.iter().any(|e| matches!(e, Event::Completed(_))));
    assert!(h.segments().is_empty());
    assert_eq!(h.fake.requests().len(), 1, "not retried");
}

#[tokio::test]
async fn error_chunks_map_like_responses_failures() {
    let mut h = harness_with(
        vec![Scripted::Events(vec![
            chat::text("x"),
            sse::SseEvent::data_only(json!({"error": {"code": "context_length_exceeded",
                "message": "This model's maximum context length is 4096 tokens"}})),
        ])],
        Setup::chat(),
    )
    .await;
    let err = h.call_err(request(vec![])).await;
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    assert!(err.message().contains("4096 tokens"), "{err:?}");
}

#[tokio::test]
async fn cut_or_unfinished_chat_streams_are_retried_and_malformed_chunks_skipped() {
    let mut h = harness_with(
        vec![
            // Cut mid-body.
            Scripted::aborted(vec![chat::text("par")]),
            // Ended cleanly, but with neither a finish_reason nor [DONE].
            Scripted::Events(vec![chat::text("tial")]),
            // Malformed chunks are skipped; [DONE] without a finish_reason
            // still completes.
            Scripted::Events(vec![
                sse::raw("{oops"),
                sse::raw(": a comment-like line"),
                chat::chunk(json!({"content": 42})),
                chat::text("whole"),
                chat::done(),
            ]),
        ],
        Setup::chat(),
    )
    .await;
    let events = h.call_ok(request(vec![])).await;
    assert_eq!(stream_errors(&events).len(), 2, "{events:?}");
    assert_eq!(
        items(&events),
        [&Item::Message(MessageItem {
            role: "assistant".into(),
            text: "whole".into(),
            truncated: false
        })]
    );
    assert_eq!(h.fake.requests().len(), 3);
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_retried_on_chat_too() {
    let mut h = harness_with(
        vec![
            Scripted::rate_limited("0", "slow down"),
            Scripted::error(500, "server_error", "boom"),
            Scripted::chat_assistant("ok"),
        ],
        Setup::chat(),
    )
    .await;
    let events = h.call_ok(request(vec![])).await;
    assert_eq!(stream_errors(&events).len(), 1);
    assert!(matches!(items(&events)[0], Item::Message(m) if m.text == "ok"));
}

#[tokio::test]
async fn custom_tools_are_rejected_for_chat_providers() {
    let mut h = harness_with(vec![Scripted::chat_assistant("never")], Setup::chat()).await;
    let mut req = request(vec![]);
    req.tools = vec![ToolSpec {
        name: "apply_patch".into(),
        json: json!({"type": "custom", "name": "apply_patch", "description": "patch",
            "format": {"type": "grammar", "syntax": "lark", "definition": "start: x"}})
        .to_string(),
    }];
    let err = h.call_err(req).await;
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("custom (freeform)"), "{err:?}");
    assert!(h.fake.requests().is_empty());
}
