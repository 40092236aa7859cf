#![allow(clippy::unwrap_used, clippy::panic)]

use serde_json::json;

use super::*;
use crate::controls::{CallControls, ReasoningEffort, ServiceTier, Verbosity};

fn user(text: &str) -> Value {
    json!({"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]})
}

fn assistant(text: &str) -> Value {
    json!({"type": "message", "role": "assistant",
        "content": [{"type": "output_text", "text": text}]})
}

fn call(id: &str, name: &str, args: &str) -> Value {
    json!({"type": "function_call", "call_id": id, "name": name, "arguments": args})
}

fn output(id: &str, out: &str) -> Value {
    json!({"type": "function_call_output", "call_id": id, "output": out})
}

fn reasoning(text: &str) -> Value {
    json!({"type": "reasoning", "summary": [],
        "content": [{"type": "reasoning_text", "text": text}]})
}

#[test]
fn items_map_to_messages() {
    let input = vec![
        json!({"type": "message", "role": "developer",
            "content": [{"type": "input_text", "text": "be brief"}]}),
        user("list files"),
        reasoning("I should run ls and pwd."),
        call("c1", "shell", r#"{"command":["ls"]}"#),
        call("c2", "shell", r#"{"command":["pwd"]}"#),
        output("c1", "a.txt"),
        output("c2", "/repo"),
        json!({"type": "web_search_call", "status": "completed"}),
        assistant("There is a.txt in /repo."),
    ];
    let got = messages("You are Keel.", &input);
    let want = vec![
        json!({"role": "system", "content": "You are Keel."}),
        json!({"role": "developer", "content": "be brief"}),
        json!({"role": "user", "content": "list files"}),
        json!({"role": "assistant", "content": null, "reasoning": "I should run ls and pwd.",
            "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "shell", "arguments": r#"{"command":["ls"]}"#}},
            {"id": "c2", "type": "function", "function": {"name": "shell", "arguments": r#"{"command":["pwd"]}"#}},
        ]}),
        json!({"role": "tool", "tool_call_id": "c1", "content": "a.txt"}),
        json!({"role": "tool", "tool_call_id": "c2", "content": "/repo"}),
        json!({"role": "assistant", "content": "There is a.txt in /repo."}),
    ];
    assert_eq!(got, want);
}

#[test]
fn images_become_parts_and_duplicates_are_skipped() {
    let input = vec![
        json!({"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "what is this?"},
            {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
        ]}),
        assistant("A cat."),
        assistant("A cat."),
        json!({"type": "custom_tool_call", "call_id": "p1", "name": "apply_patch", "input": "*** Begin Patch"}),
        json!({"type": "custom_tool_call_output", "call_id": "p1", "output": "Done"}),
        json!({"type": "function_call_output", "call_id": "v1", "output": [
            {"type": "input_image", "image_url": "data:image/png;base64,BBBB"}]}),
    ];
    let got = messages("i", &input);
    assert_eq!(
        got[1]["content"],
        json!([
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        ])
    );
    assert_eq!(got[2], json!({"role": "assistant", "content": "A cat."}));
    assert_eq!(
        got[3]["tool_calls"][0],
        json!({"id": "p1", "type": "custom", "custom": {"name": "apply_patch", "input": "*** Begin Patch"}})
    );
    assert_eq!(
        got[4],
        json!({"role": "tool", "tool_call_id": "p1", "content": "Done"})
    );
    assert_eq!(got[5]["content"][0]["type"], "image_url");
    assert_eq!(got.len(), 6, "the duplicate assistant text is skipped");
}

#[test]
fn reasoning_attaches_only_after_the_last_user_message() {
    // Older reasoning (before the last user message) is dropped; a
    // reasoning item right after an assistant message attaches to it.
    let input = vec![
        user("one"),
        reasoning("old thoughts"),
        assistant("answer one"),
        user("two"),
        assistant("answer two"),
        reasoning("afterthought"),
        call("c1", "shell", "{}"),
    ];
    let got = messages("i", &input);
    assert!(got[2].get("reasoning").is_none(), "{:?}", got[2]);
    assert_eq!(got[4]["content"], "answer two");
    assert_eq!(got[4]["reasoning"], "afterthought");
    assert!(got[5].get("reasoning").is_none());

    // When the newest message is the user's, no reasoning is sent at all.
    let input = vec![user("one"), reasoning("r"), assistant("a"), user("two")];
    assert!(
        messages("i", &input)
            .iter()
            .all(|m| m.get("reasoning").is_none())
    );
}

#[test]
fn tools_and_controls() {
    let prompt = |tools: Vec<Value>, parallel| Prompt {
        session_id: "s".into(),
        model: "llama".into(),
        instructions: "i".into(),
        input: vec![user("hi")],
        tools,
        parallel_tool_calls: parallel,
        controls: CallControls {
            reasoning_effort: Some(ReasoningEffort::Low),
            verbosity: Some(Verbosity::High),
            service_tier: Some(ServiceTier::Fast),
            output_schema: Some(json!({"type": "object"})),
            ..CallControls::default()
        },
    };
    let shell = json!({"type": "function", "name": "shell", "description": "Runs",
        "strict": false, "parameters": {"type": "object"}});
    let web = json!({"type": "web_search"});
    let req =
        serde_json::to_value(ChatRequest::new(prompt(vec![shell, web], true)).unwrap()).unwrap();
    assert_eq!(
        req["tools"],
        json!([{"type": "function", "function": {"name": "shell", "description": "Runs",
            "strict": false, "parameters": {"type": "object"}}}])
    );
    assert_eq!(req["tool_choice"], "auto");
    assert_eq!(req["parallel_tool_calls"], true);
    assert_eq!(req["stream"], true);
    assert_eq!(req["stream_options"], json!({"include_usage": true}));
    assert_eq!(req["reasoning_effort"], "low");
    assert_eq!(req["verbosity"], "high");
    assert_eq!(req["service_tier"], "priority");
    assert_eq!(req["response_format"]["type"], "json_schema");
    assert_eq!(
        req["response_format"]["json_schema"]["schema"],
        json!({"type": "object"})
    );
    assert_eq!(req["model"], "llama");

    let bare = serde_json::to_value(ChatRequest::new(prompt(vec![], true)).unwrap()).unwrap();
    for absent in ["tools", "tool_choice", "parallel_tool_calls"] {
        assert!(bare.get(absent).is_none(), "{absent}");
    }

    let custom = json!({"type": "custom", "name": "apply_patch", "format": {"type": "grammar"}});
    let Err(ProxyError::InvalidRequest(msg)) = ChatRequest::new(prompt(vec![custom], false)) else {
        panic!("custom tools are rejected")
    };
    assert!(msg.contains("apply_patch"), "{msg}");
}
