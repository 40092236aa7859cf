//! Per-call controls on the wire, providers chosen per request, and a
//! config.toml driving the proxy end to end.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use keel_model_proxy::config::{self, Overrides, RetryTiming};
use keel_model_proxy::controls::ReasoningEffort;
use keel_test_support::fake_model::{Scripted, sse};
use serde_json::json;
use tonic::Code;

#[tokio::test]
async fn controls_reach_the_responses_wire() {
    let mut h = harness(vec![Scripted::assistant("{}"), Scripted::assistant("x")]).await;
    let schema = json!({"type": "object", "properties": {"answer": {"type": "string"}},
        "required": ["answer"], "additionalProperties": false});
    let mut req = request(vec![]);
    req.model = "gpt-5.1-codex".into();
    req.reasoning_effort = "high".into();
    req.reasoning_summary = "detailed".into();
    req.verbosity = "low".into();
    req.service_tier = "fast".into();
    req.final_output_json_schema = schema.to_string();
    h.call_ok(req).await;
    let body = &h.fake.requests()[0].body;
    assert_eq!(body["model"], "gpt-5.1-codex");
    assert_eq!(
        body["reasoning"],
        json!({"effort": "high", "summary": "detailed"})
    );
    assert_eq!(body["include"], json!(["reasoning.encrypted_content"]));
    assert_eq!(body["service_tier"], "priority");
    assert_eq!(body["text"]["verbosity"], "low");
    assert_eq!(
        body["text"]["format"],
        json!({"type": "json_schema", "name": "codex_output_schema", "strict": true, "schema": schema})
    );
    assert_eq!(body["store"], false);
    assert_eq!(body["prompt_cache_key"], "sess-1");

    // Without controls none of them is sent.
    h.call_ok(request(vec![])).await;
    let body = &h.fake.requests()[1].body;
    for absent in ["reasoning", "include", "service_tier", "text"] {
        assert!(body.get(absent).is_none(), "{absent} in {body}");
    }
    assert_eq!(body["model"], "gpt-test");
}

#[tokio::test]
async fn configured_defaults_apply_and_requests_override_them() {
    let mut h = harness_with(
        vec![Scripted::assistant("a"), Scripted::assistant("b")],
        Setup {
            configure: Some(Box::new(|config, _| {
                config.defaults.reasoning_effort = Some(ReasoningEffort::Medium);
            })),
            ..Setup::default()
        },
    )
    .await;
    h.call_ok(request(vec![])).await;
    let mut req = request(vec![]);
    req.reasoning_effort = "minimal".into();
    h.call_ok(req).await;
    let reqs = h.fake.requests();
    assert_eq!(reqs[0].body["reasoning"], json!({"effort": "medium"}));
    assert_eq!(reqs[1].body["reasoning"], json!({"effort": "minimal"}));
}

#[tokio::test]
async fn invalid_controls_are_rejected_before_calling_the_vendor() {
    let mut h = harness(vec![]).await;
    let mut req = request(vec![]);
    req.reasoning_effort = "extreme".into();
    let err = h.call_err(req).await;
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("reasoning_effort"), "{err:?}");
    let mut req = request(vec![]);
    req.final_output_json_schema = "[]".into();
    assert_eq!(h.call_err(req).await.code(), Code::InvalidArgument);
    assert!(h.fake.requests().is_empty());
}

#[tokio::test]
async fn encrypted_reasoning_is_carried_into_the_next_request() {
    let mut h = harness(vec![
        Scripted::Events(vec![
            sse::created(),
            sse::reasoning("rs_1", &["Plan"]),
            sse::message("msg_1", "Done"),
            sse::completed("resp_1", 10, 5),
        ]),
        Scripted::assistant("again"),
    ])
    .await;
    let mut req = request(vec![inline(&user_message("one"))]);
    req.reasoning_effort = "low".into();
    let events = h.call_ok(req).await;
    let mut req = request(vec![inline(&user_message("two"))]);
    req.conversation.as_mut().unwrap().head = completed(&events).head.clone();
    req.reasoning_effort = "low".into();
    h.call_ok(req).await;
    let sent = &h.fake.requests()[1];
    let reasoning = &sent.input()[1];
    assert_eq!(reasoning["type"], "reasoning");
    assert_eq!(reasoning["encrypted_content"], "fake-encrypted-reasoning");
    assert!(reasoning.get("id").is_none(), "{reasoning}");
    assert_eq!(sent.body["include"], json!(["reasoning.encrypted_content"]));
}

#[tokio::test]
async fn chat_providers_get_controls_in_chat_form() {
    let mut h = harness_with(vec![Scripted::chat_assistant("{}")], Setup::chat()).await;
    let mut req = request(vec![]);
    req.model = "qwen3".into();
    req.reasoning_effort = "high".into();
    req.verbosity = "medium".into();
    req.service_tier = "flex".into();
    req.final_output_json_schema = r#"{"type":"object"}"#.into();
    h.call_ok(req).await;
    let body = &h.fake.requests()[0].body;
    assert_eq!(body["model"], "qwen3");
    assert_eq!(body["reasoning_effort"], "high");
    assert_eq!(body["verbosity"], "medium");
    assert_eq!(body["service_tier"], "flex");
    assert_eq!(
        body["response_format"],
        json!({"type": "json_schema", "json_schema":
            {"name": "codex_output_schema", "strict": true, "schema": {"type": "object"}}})
    );
    assert!(body.get("reasoning").is_none() && body.get("include").is_none());
}

const CONFIG: &str = r#"
model = "file-model"
model_provider = "openai"
approval_policy = "on-request"
sandbox_mode = "workspace-write"

[model_providers.local]
name = "Local vLLM"
base_url = "FAKE_URL"
env_key = "LOCAL_KEY"
wire_api = "chat"
query_params = { api-version = "2025-01-01" }
http_headers = { "X-Static" = "yes" }
env_http_headers = { "X-Tenant" = "LOCAL_TENANT" }
request_max_retries = 0
stream_max_retries = 1

[model_providers.keyless]
name = "Needs a key"
base_url = "FAKE_URL"
env_key = "UNSET_KEY"
env_key_instructions = "Get one at example.test"

[mcp_servers.docs]
command = "docs-server"
"#;

/// The fake environment the proxy reads the config's variables from.
fn env(name: &str) -> Option<String> {
    HashMap::from([
        ("OPENAI_API_KEY", KEY),
        ("LOCAL_KEY", "local-key-77"),
        ("LOCAL_TENANT", "tenant-secret-99"),
    ])
    .get(name)
    .map(|v| v.to_string())
}

fn setup_from_config_toml() -> Setup {
    Setup {
        configure: Some(Box::new(|config, fake_url| {
            let text = CONFIG.replace("FAKE_URL", fake_url);
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("config.toml");
            std::fs::write(&path, text).unwrap();
            let overrides = Overrides {
                config_file: Some(path),
                openai_base_url: Some(fake_url.to_string()),
                ..Overrides::default()
            };
            *config = config::load(&overrides, &env).unwrap();
            config.retry = RetryTiming {
                base_delay: Duration::from_millis(1),
                max_delay: Duration::from_secs(5),
            };
        })),
        ..Setup::default()
    }
}

#[tokio::test]
async fn requests_pick_providers_from_config_toml() {
    let mut h = harness_with(
        vec![
            Scripted::assistant("from openai"),
            Scripted::error(500, "server_error", "boom"),
            Scripted::chat_assistant("from local"),
        ],
        setup_from_config_toml(),
    )
    .await;
    // The default provider: openai, with the file's model.
    let events = h.call_ok(request(vec![])).await;
    assert_eq!(completed(&events).model, "file-model");

    // A named one: chat, with its query params, headers and key; its
    // request_max_retries = 0 makes the 500 a stream retry at once.
    let mut req = request(vec![]);
    req.provider = "local".into();
    let events = h.call_ok(req).await;
    assert_eq!(
        stream_errors(&events),
        [("Reconnecting... 1/1".to_string(), 1)]
    );
    let reqs = h.fake.requests();
    let sent = &reqs[2];
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(sent.query, "api-version=2025-01-01");
    assert_eq!(sent.header("authorization"), Some("Bearer local-key-77"));
    assert_eq!(sent.header("x-static"), Some("yes"));
    assert_eq!(sent.header("x-tenant"), Some("tenant-secret-99"));
    assert_eq!(sent.body["model"], "file-model");
    assert_eq!(reqs[0].path, "/v1/responses");
    assert_eq!(
        reqs[0].header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert_eq!(reqs[0].header("x-tenant"), None);

    let mut req = request(vec![]);
    req.provider = "nope".into();
    let err = h.call_err(req).await;
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.message(),
        "unknown model provider \"nope\"; configured providers: keyless, lmstudio, local, ollama, openai"
    );

    let mut req = request(vec![]);
    req.provider = "keyless".into();
    let err = h.call_err(req).await;
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(
        err.message(),
        "no API key configured: set UNSET_KEY for the model-proxy (Get one at example.test)"
    );
    assert_eq!(h.fake.requests().len(), 3);
}

#[tokio::test]
async fn secrets_from_the_environment_are_scrubbed_from_errors() {
    let mut h = harness_with(
        vec![Scripted::error(
            400,
            "invalid_request_error",
            "bad tenant tenant-secret-99 for key local-key-77",
        )],
        setup_from_config_toml(),
    )
    .await;
    let mut req = request(vec![]);
    req.provider = "local".into();
    let err = h.call_err(req).await;
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.message(),
        "the model API rejected the request (HTTP 400): bad tenant <redacted> for key <redacted>"
    );
}

#[test]
fn a_malformed_config_toml_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        "model = \"x\"\n[model_providers.p]\nwire_api = \"soap\"\n",
    )
    .unwrap();
    let err = config::load(
        &Overrides {
            config_file: Some(path.clone()),
            ..Overrides::default()
        },
        &|_: &str| -> Option<String> { None },
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with(&format!("invalid config file {}:3:", path.display())),
        "{err}"
    );
    assert!(err.contains("soap"), "{err}");
}
