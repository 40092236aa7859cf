//! The model-proxy's Responses API path over real gRPC on loopback, against
//! the scripted fake, with an on-disk blob store.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use keel_blobstore::conversation;
use keel_proto::v1::output_item_done::Item;
use keel_proto::v1::stream_response_response::Event;
use keel_proto::v1::{
    FunctionCallItem, ItemInput, MessageItem, ReasoningItem, TokenUsage, ToolSpec, item_input,
};
use keel_test_support::fake_model::{Scripted, sse};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tonic::Code;

#[tokio::test]
async fn completed_response_streams_events_and_extends_the_conversation() {
    let mut h = harness(vec![Scripted::Events(vec![
        sse::created(),
        sse::reasoning_summary_delta("rs_1", 0, "Thinking"),
        sse::reasoning("rs_1", &["Thinking", "about it"]),
        sse::text_delta("msg_1", "Hel"),
        sse::text_delta("msg_1", "lo"),
        sse::message("msg_1", "Hello"),
        sse::completed_with_usage(
            "resp_1",
            json!({
                "input_tokens": 100,
                "input_tokens_details": {"cached_tokens": 40},
                "output_tokens": 20,
                "output_tokens_details": {"reasoning_tokens": 7},
                "total_tokens": 120,
            }),
        ),
    ])])
    .await;
    // An existing conversation of one item, stored with a vendor id.
    let first = h
        .blobs
        .put_json(&json!({"type": "message", "id": "msg_0", "role": "user",
            "content": [{"type": "input_text", "text": "earlier"}]}))
        .await
        .unwrap();
    let head = conversation::append(&h.blobs, None, vec![first.clone()])
        .await
        .unwrap()
        .unwrap();
    let mut req = request(vec![inline(&user_message("hello"))]);
    req.conversation.as_mut().unwrap().head = head.clone();

    let (events, err) = h.call(req).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(events.len(), 6, "{events:#?}");
    let Event::ReasoningSummaryDelta(d) = &events[0] else {
        panic!("{:?}", events[0])
    };
    assert_eq!(
        (d.item_id.as_str(), d.summary_index, d.delta.as_str()),
        ("rs_1", 0, "Thinking")
    );
    // Deltas stream live; items are announced once the response completed.
    let (reasoning_digest, item) = item_done(&events[3]);
    assert_eq!(
        item,
        &Item::Reasoning(ReasoningItem {
            summary_text: "Thinking\n\nabout it".into(),
            content_text: String::new(),
        })
    );
    let deltas: Vec<&str> = events[1..3]
        .iter()
        .map(|e| match e {
            Event::OutputTextDelta(d) => {
                assert_eq!(d.item_id, "msg_1");
                d.delta.as_str()
            }
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(deltas, ["Hel", "lo"]);
    let (message_digest, item) = item_done(&events[4]);
    assert_eq!(
        item,
        &Item::Message(MessageItem {
            role: "assistant".into(),
            text: "Hello".into(),
            truncated: false
        })
    );
    let Event::Completed(done) = &events[5] else {
        panic!("{:?}", events[5])
    };
    assert_eq!(done.response_id, "resp_1");
    assert_eq!(done.model, "gpt-test");
    assert_eq!(
        done.usage,
        Some(TokenUsage {
            input_tokens: 100,
            cached_input_tokens: 40,
            output_tokens: 20,
            reasoning_output_tokens: 7,
            total_tokens: 120,
        })
    );

    // The new head: the old items, the appended input, then the outputs.
    let items = conversation::item_digests(&h.blobs, Some(&done.head))
        .await
        .unwrap();
    assert_eq!(items.len(), 4);
    assert_eq!(items[0], first);
    let appended: Value = h.blobs.get_json(&items[1]).await.unwrap();
    assert_eq!(appended, user_message("hello"));
    assert_eq!(items[2], reasoning_digest);
    assert_eq!(items[3], message_digest);
    let stored: Value = h.blobs.get_json(message_digest).await.unwrap();
    assert_eq!(stored["content"][0]["text"], "Hello");
    assert!(
        stored.get("id").is_none(),
        "item ids are not stored: {stored}"
    );

    // The vendor got the old item without its id, then the appended one.
    let sent = &h.fake.requests()[0];
    assert_eq!(sent.input().len(), 2);
    assert!(sent.input()[0].get("id").is_none());
    assert_eq!(sent.input()[0]["content"][0]["text"], "earlier");
    assert_eq!(sent.input()[1], user_message("hello"));
}

#[tokio::test]
async fn request_has_the_responses_api_shape() {
    let mut h = harness(vec![Scripted::assistant("ok")]).await;
    let first = h.blobs.put_json(&user_message("stored")).await.unwrap();
    let mut req = request(vec![digest(&first), inline(&user_message("new"))]);
    req.model = "gpt-5-codex".into();
    req.parallel_tool_calls = true;
    req.ephemeral_items_json = vec![
        json!({"type": "message", "role": "developer",
            "content": [{"type": "input_text", "text": "AGENTS.md says hi"}]})
        .to_string(),
        user_message("<environment_context/>").to_string(),
    ];
    let shell = json!({"type": "function", "name": "shell", "description": "Runs a command",
        "strict": false, "parameters": {"type": "object", "properties": {}}});
    req.tools = vec![ToolSpec {
        name: "shell".into(),
        json: shell.to_string(),
    }];

    let (events, err) = h.call(req).await;
    assert!(err.is_none(), "{err:?}");
    assert!(matches!(events.last(), Some(Event::Completed(c)) if c.model == "gpt-5-codex"));

    let reqs = h.fake.wait_for_requests(1, WAIT).await.unwrap();
    let sent = &reqs[0];
    assert_eq!(sent.path, "/v1/responses");
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert_eq!(sent.header("session_id"), Some("sess-1"));
    assert_eq!(sent.header("originator"), Some("keel"));
    assert_eq!(sent.header("accept"), Some("text/event-stream"));
    let body = &sent.body;
    assert_eq!(body["model"], "gpt-5-codex");
    assert_eq!(body["instructions"], "You are a coding agent.");
    let texts: Vec<&str> = sent
        .input()
        .iter()
        .map(|i| i["content"][0]["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        [
            "AGENTS.md says hi",
            "<environment_context/>",
            "stored",
            "new"
        ],
        "ephemeral items first, then the conversation"
    );
    assert_eq!(body["tools"], json!([shell]));
    assert_eq!(body["tool_choice"], "auto");
    assert_eq!(body["parallel_tool_calls"], true);
    assert_eq!(body["store"], false);
    assert_eq!(body["stream"], true);
    assert_eq!(body["prompt_cache_key"], "sess-1");
}

#[tokio::test]
async fn function_call_items_are_summarised() {
    let args = r#"{"command":["echo","hello"]}"#;
    let mut h = harness(vec![Scripted::tool_call("call_1", "shell", args)]).await;
    let (events, err) = h.call(request(vec![inline(&user_message("run it"))])).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(events.len(), 2);
    let (d, item) = item_done(&events[0]);
    assert_eq!(
        item,
        &Item::FunctionCall(FunctionCallItem {
            call_id: "call_1".into(),
            name: "shell".into(),
            arguments: args.into(),
            arguments_truncated: false,
        })
    );
    let stored: Value = h.blobs.get_json(d).await.unwrap();
    assert_eq!(stored["type"], "function_call");
    assert_eq!(stored["call_id"], "call_1");
    assert!(stored.get("id").is_none());
    assert!(matches!(&events[1], Event::Completed(_)));
}

#[tokio::test]
async fn context_window_exceeded_is_out_of_range_and_writes_no_head() {
    let mut h = harness(vec![Scripted::Events(vec![
        sse::created(),
        sse::message("msg_1", "partial"),
        sse::failed(
            "context_length_exceeded",
            "Your input exceeds the context window of this model.",
        ),
    ])])
    .await;
    let (events, err) = h.call(request(vec![inline(&user_message("huge"))])).await;
    let err = err.unwrap();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    assert!(
        err.message().starts_with("context window exceeded"),
        "{err:?}"
    );
    assert!(
        err.message().contains("exceeds the context window"),
        "{err:?}"
    );
    assert!(!events.iter().any(|e| matches!(e, Event::Completed(_))));
    assert!(
        h.segments().is_empty(),
        "no conversation segment may be written"
    );
}

#[tokio::test]
async fn stream_cut_before_completed_is_unavailable() {
    let mut h = harness_with(
        vec![
            Scripted::Events(vec![
                sse::created(),
                sse::text_delta("msg_1", "Hel"),
                sse::message("msg_1", "Hello"),
            ]),
            Scripted::aborted(vec![sse::created(), sse::text_delta("msg_2", "x")]),
        ],
        Setup::no_retries(),
    )
    .await;
    let (events, err) = h.call(request(vec![inline(&user_message("hi"))])).await;
    let err = err.unwrap();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(err.message(), "stream closed before response.completed");
    assert!(
        matches!(&events[..], [Event::OutputTextDelta(d)] if d.delta == "Hel"),
        "deltas before the cut are streamed, items of an unfinished response are not: {events:?}"
    );

    let (events, err) = h.call(request(vec![inline(&user_message("hi"))])).await;
    let err = err.unwrap();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        err.message().starts_with("error reading the SSE stream"),
        "{err:?}"
    );
    assert!(matches!(&events[..], [Event::OutputTextDelta(d)] if d.delta == "x"));
    assert!(
        h.segments().is_empty(),
        "no conversation segment may be written"
    );
}

#[tokio::test]
async fn rejected_key_is_unauthenticated_and_never_echoed() {
    let mut h = harness(vec![Scripted::error(
        401,
        "invalid_api_key",
        &format!("Incorrect API key provided: {KEY}."),
    )])
    .await;
    let err = h.call_err(request(vec![])).await;
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("HTTP 401"), "{err:?}");
    assert!(
        err.message().contains("Incorrect API key provided"),
        "{err:?}"
    );
    assert!(!err.message().contains(KEY), "the key leaked: {err:?}");
    assert!(
        !format!("{err:?}").contains("SECRET"),
        "the key leaked: {err:?}"
    );
}

#[tokio::test]
async fn missing_key_fails_before_calling_the_vendor() {
    let mut h = harness_with(
        vec![Scripted::assistant("never")],
        Setup {
            key: None,
            ..Setup::default()
        },
    )
    .await;
    let err = h.call_err(request(vec![])).await;
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(
        err.message(),
        "no API key configured: set OPENAI_API_KEY for the model-proxy"
    );
    assert!(h.fake.requests().is_empty());
}

#[tokio::test]
async fn http_errors_and_failed_responses_map_to_grpc_codes() {
    let cases = [
        (
            Scripted::error(
                400,
                "invalid_request_error",
                "Invalid schema for function 'shell'",
            ),
            Code::InvalidArgument,
            "Invalid schema for function 'shell'",
        ),
        (
            Scripted::error(
                404,
                "model_not_found",
                "The model `gpt-nope` does not exist",
            ),
            Code::NotFound,
            "gpt-nope",
        ),
        (
            Scripted::error(429, "insufficient_quota", "You exceeded your current quota"),
            Code::ResourceExhausted,
            "exceeded your current quota",
        ),
        (
            Scripted::error(503, "server_is_overloaded", "try later"),
            Code::Unavailable,
            "the model server is overloaded: try later",
        ),
        (
            Scripted::Events(vec![
                sse::created(),
                sse::failed("insufficient_quota", "no money"),
            ]),
            Code::ResourceExhausted,
            "no money",
        ),
        (
            Scripted::Events(vec![sse::failed(
                "rate_limit_exceeded",
                "try again in 1.5s",
            )]),
            Code::ResourceExhausted,
            "try again in 1.5s",
        ),
        (
            Scripted::Events(vec![sse::created(), sse::incomplete("max_output_tokens")]),
            Code::Unavailable,
            "Incomplete response returned, reason: max_output_tokens",
        ),
    ];
    let (script, expected): (Vec<_>, Vec<_>) = cases
        .into_iter()
        .map(|(s, code, text)| (s, (code, text)))
        .unzip();
    let mut h = harness_with(script, Setup::no_retries()).await;
    for (code, text) in expected {
        let err = h.call_err(request(vec![])).await;
        assert_eq!(err.code(), code, "{err:?}");
        assert!(err.message().contains(text), "{text:?} not in {err:?}");
    }
    // The script is exhausted: the fake answers 500, a retryable failure.
    let err = h.call_err(request(vec![])).await;
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("script exhausted"), "{err:?}");
}

#[tokio::test]
async fn silent_vendor_hits_the_idle_timeout() {
    let mut h = harness_with(
        vec![Scripted::stalled(vec![sse::created()])],
        Setup {
            idle_timeout: Duration::from_millis(200),
            ..Setup::no_retries()
        },
    )
    .await;
    let err = h.call_err(request(vec![])).await;
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(err.message(), "idle timeout waiting for SSE");
    h.fake.wait_for_closed_streams(1, WAIT).await.unwrap();
}

#[tokio::test]
async fn client_going_away_stops_the_vendor_stream() {
    let mut h = harness_with(
        vec![Scripted::stalled(vec![
            sse::created(),
            sse::text_delta("msg_1", "first"),
        ])],
        // Far longer than the wait below: only cancellation can close it in time.
        Setup {
            idle_timeout: Duration::from_secs(600),
            ..Setup::default()
        },
    )
    .await;
    let mut stream = h
        .client
        .stream_response(request(vec![]))
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(WAIT, stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(first.event, Some(Event::OutputTextDelta(_))));
    assert_eq!(h.fake.closed_streams(), 0);
    drop(stream);
    h.fake.wait_for_closed_streams(1, WAIT).await.unwrap();
}

#[tokio::test]
async fn bad_inputs_are_rejected_before_calling_the_vendor() {
    let mut h = harness(vec![]).await;
    let err = h
        .call_err(request(vec![ItemInput {
            kind: Some(item_input::Kind::InlineJson(r#"{"role":"user"}"#.into())),
        }]))
        .await;
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("conversation.append[0]"), "{err:?}");

    let missing = "ab".repeat(32);
    let err = h.call_err(request(vec![digest(&missing)])).await;
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains(&missing), "{err:?}");

    let mut req = request(vec![]);
    req.conversation.as_mut().unwrap().head = missing.clone();
    let err = h.call_err(req).await;
    assert_eq!(err.code(), Code::NotFound);

    let err = h.call_err(request(vec![digest("../../etc/passwd")])).await;
    assert_eq!(err.code(), Code::InvalidArgument);

    let mut req = request(vec![]);
    req.ephemeral_items_json = vec!["[1,2]".into()];
    let err = h.call_err(req).await;
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("ephemeral_items_json[0]"), "{err:?}");

    let mut req = request(vec![]);
    req.tools = vec![ToolSpec {
        name: "shell".into(),
        json: "{not json".into(),
    }];
    assert_eq!(h.call_err(req).await.code(), Code::InvalidArgument);

    let mut req = request(vec![]);
    req.session_id.clear();
    assert_eq!(h.call_err(req).await.code(), Code::InvalidArgument);

    assert!(h.fake.requests().is_empty());
}

#[tokio::test]
async fn unreachable_vendor_is_unavailable() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", closed.local_addr().unwrap());
    drop(closed);
    let mut h = harness_with(
        vec![],
        Setup {
            base_url: Some(url),
            ..Setup::default()
        },
    )
    .await;
    let err = h.call_err(request(vec![])).await;
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        err.message().starts_with("cannot reach the model API"),
        "{err:?}"
    );
}

#[tokio::test]
async fn custom_tools_pass_through_and_their_calls_are_summarised() {
    let patch = "*** Begin Patch\n*** Add File: a.txt\n+hi\n*** End Patch\n";
    let mut h = harness(vec![Scripted::Events(vec![
        sse::created(),
        sse::output_item_done(json!({"type": "custom_tool_call", "id": "ctc_1",
            "status": "completed", "call_id": "call_p", "name": "apply_patch", "input": patch})),
        sse::completed("resp_1", 10, 5),
    ])])
    .await;
    let tool = json!({"type": "custom", "name": "apply_patch", "description": "Edit files",
        "format": {"type": "grammar", "syntax": "lark", "definition": "start: begin_patch"}});
    let mut req = request(vec![inline(&user_message("add a.txt"))]);
    req.tools = vec![ToolSpec {
        name: "apply_patch".into(),
        json: tool.to_string(),
    }];
    let (events, err) = h.call(req).await;
    assert!(err.is_none(), "{err:?}");
    let (digest, item) = item_done(&events[0]);
    assert_eq!(
        item,
        &Item::CustomToolCall(keel_proto::v1::CustomToolCallItem {
            call_id: "call_p".into(),
            name: "apply_patch".into(),
            input: patch.into(),
            input_truncated: false,
        })
    );
    let stored: Value = h.blobs.get_json(digest).await.unwrap();
    assert_eq!(stored["type"], "custom_tool_call");
    assert!(stored.get("id").is_none());
    assert_eq!(h.fake.requests()[0].body["tools"], json!([tool]));
}

/// The call prefix (tools and ephemeral items, stored items among them) is
/// stored once under its digest and used by digest afterwards; a wrong
/// digest, a prefix sent twice and an unknown digest are refused precisely.
#[tokio::test]
async fn a_stored_call_prefix_is_used_by_digest() {
    use prost::Message as _;
    use sha2::{Digest as _, Sha256};

    let mut h = harness(vec![Scripted::assistant("one"), Scripted::assistant("two")]).await;
    let developer = h
        .blobs
        .put_json(&json!({"type": "message", "role": "developer",
            "content": [{"type": "input_text", "text": "stored instructions"}]}))
        .await
        .unwrap();
    let shell = json!({"type": "function", "name": "shell", "parameters": {"type": "object"}});
    let prefix = keel_proto::v1::CallPrefix {
        tools: vec![ToolSpec {
            name: "shell".into(),
            json: shell.to_string(),
        }],
        ephemeral_item_digests: vec![developer],
        ephemeral_items_json: vec![user_message("<environment_context/>").to_string()],
    };
    let digest = hex::encode(Sha256::digest(prefix.encode_to_vec()));
    let with_prefix = |req: &mut keel_proto::v1::StreamResponseRequest| {
        req.tools = prefix.tools.clone();
        req.ephemeral_item_digests = prefix.ephemeral_item_digests.clone();
        req.ephemeral_items_json = prefix.ephemeral_items_json.clone();
    };

    // A digest that does not match what was sent.
    let mut req = request(vec![inline(&user_message("hi"))]);
    with_prefix(&mut req);
    req.store_prefix = true;
    req.prefix_digest = "0".repeat(64);
    let (_, err) = h.call(req).await;
    let err = err.unwrap();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains(&digest), "{err:?}");

    // Not stored yet.
    let mut req = request(vec![inline(&user_message("hi"))]);
    req.prefix_digest = digest.clone();
    let (_, err) = h.call(req).await;
    let err = err.unwrap();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let info = keel_proto::v1::ErrorInfo::from_status(&err).unwrap();
    assert_eq!(info.class, "prefix_missing");

    // Stored by the first call, named by the second.
    let mut req = request(vec![inline(&user_message("first"))]);
    with_prefix(&mut req);
    req.store_prefix = true;
    req.prefix_digest = digest.clone();
    let (_, err) = h.call(req).await;
    assert!(err.is_none(), "{err:?}");
    let mut req = request(vec![inline(&user_message("second"))]);
    req.prefix_digest = digest.clone();
    let (_, err) = h.call(req).await;
    assert!(err.is_none(), "{err:?}");

    // Inline parts beside a stored prefix are ambiguous.
    let mut req = request(vec![inline(&user_message("third"))]);
    req.prefix_digest = digest.clone();
    req.ephemeral_items_json = vec![user_message("extra").to_string()];
    let (_, err) = h.call(req).await;
    assert_eq!(err.unwrap().code(), Code::InvalidArgument);

    let reqs = h.fake.wait_for_requests(2, WAIT).await.unwrap();
    assert_eq!(reqs.len(), 2, "refused calls never reach the model");
    for sent in &reqs {
        let texts: Vec<&str> = sent
            .input()
            .iter()
            .map(|i| i["content"][0]["text"].as_str().unwrap())
            .collect();
        assert_eq!(
            texts[..2],
            ["stored instructions", "<environment_context/>"]
        );
        assert_eq!(sent.body["tools"], json!([shell]));
    }
}
