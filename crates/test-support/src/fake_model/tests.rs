use std::time::Duration;

use futures::StreamExt as _;
use serde_json::{Value, json};

use super::*;

const WAIT: Duration = Duration::from_secs(10);

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

async fn post(model: &FakeModel, body: Value) -> reqwest::Response {
    client()
        .post(format!("{}/responses", model.base_url()))
        .header("session_id", "sess-1")
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Splits an SSE body into (event name, data JSON) pairs, checking the format.
fn parse_sse(text: &str) -> Vec<(String, Value)> {
    assert!(
        text.ends_with("\n\n"),
        "body must end with a blank line: {text:?}"
    );
    text.trim_end()
        .split("\n\n")
        .map(|block| {
            let mut lines = block.lines();
            let event = lines.next().unwrap().strip_prefix("event: ").unwrap();
            let data = lines.next().unwrap().strip_prefix("data: ").unwrap();
            assert!(lines.next().is_none(), "one data line per event: {block:?}");
            let data: Value = serde_json::from_str(data).unwrap();
            assert_eq!(data["type"], event, "type in JSON matches the event name");
            (event.to_string(), data)
        })
        .collect()
}

#[tokio::test]
async fn assistant_streams_responses_sse_and_records_the_request() {
    let model = FakeModel::start(vec![Scripted::assistant("hi there")])
        .await
        .unwrap();
    assert!(model.base_url().starts_with("http://127.0.0.1:"));
    assert!(model.base_url().ends_with("/v1"));

    let resp = post(
        &model,
        json!({"model": "gpt-test", "input": [{"type": "message"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let events = parse_sse(&resp.text().await.unwrap());
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(
        names,
        [
            "response.created",
            "response.output_text.delta",
            "response.output_item.done",
            "response.completed"
        ]
    );
    assert_eq!(events[1].1["delta"], "hi there");
    assert_eq!(events[2].1["item"]["content"][0]["text"], "hi there");
    assert_eq!(events[2].1["item"]["role"], "assistant");
    let completed = &events[3].1["response"];
    assert_eq!(
        completed["model"], "gpt-test",
        "model is echoed from the request"
    );
    assert_eq!(completed["usage"]["total_tokens"], 15);

    let reqs = model.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].method, "POST");
    assert_eq!(reqs[0].path, "/v1/responses");
    assert_eq!(reqs[0].header("Session_Id"), Some("sess-1"));
    assert_eq!(reqs[0].body["model"], "gpt-test");
    assert_eq!(reqs[0].input().len(), 1);
    assert_eq!(model.remaining(), 0);
    model.wait_for_closed_streams(1, WAIT).await.unwrap();
}

#[tokio::test]
async fn status_exhaustion_and_push() {
    let model = FakeModel::start(vec![Scripted::error(
        429,
        "rate_limit_exceeded",
        "slow down",
    )])
    .await
    .unwrap();

    let resp = post(&model, json!({"model": "m"})).await;
    assert_eq!(resp.status(), 429);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(body["error"]["message"], "slow down");

    let resp = post(&model, json!({"model": "m"})).await;
    assert_eq!(resp.status(), 500);
    let body: Value = resp.json().await.unwrap();
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("script exhausted"), "{msg}");
    assert!(msg.contains("#2"), "{msg}");

    model.push(Scripted::tool_call(
        "call_9",
        "shell",
        r#"{"command":["ls"]}"#,
    ));
    let resp = post(&model, json!({"model": "m"})).await;
    assert_eq!(resp.status(), 200);
    let events = parse_sse(&resp.text().await.unwrap());
    let item = &events[1].1["item"];
    assert_eq!(item["type"], "function_call");
    assert_eq!(item["call_id"], "call_9");
    assert_eq!(item["arguments"], r#"{"command":["ls"]}"#);
    assert_eq!(model.requests().len(), 3);
}

#[tokio::test]
async fn unknown_paths_and_bad_bodies_do_not_consume_the_script() {
    let model = FakeModel::start(vec![Scripted::assistant("x")])
        .await
        .unwrap();
    let c = client();
    let resp = c
        .post(format!("{}/embeddings", model.base_url()))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let resp = c
        .post(format!("{}/responses", model.base_url()))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(model.remaining(), 1);
    let reqs = model.requests();
    assert_eq!(reqs[0].path, "/v1/embeddings");
    assert_eq!(reqs[1].body, Value::Null);
}

#[tokio::test]
async fn wait_for_requests_wakes_on_arrival_and_times_out() {
    let model = FakeModel::start(vec![Scripted::assistant("a")])
        .await
        .unwrap();
    let err = model
        .wait_for_requests(1, Duration::from_millis(50))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("timed out"), "{err}");

    let url = format!("{}/responses", model.base_url());
    let sender = tokio::spawn(async move {
        client()
            .post(url)
            .json(&json!({"model": "m"}))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    let reqs = model.wait_for_requests(1, WAIT).await.unwrap();
    assert_eq!(reqs[0].body["model"], "m");
    assert!(sender.await.unwrap().contains("response.completed"));
}

#[tokio::test]
async fn aborted_stream_is_a_transport_error() {
    let model = FakeModel::start(vec![Scripted::aborted(vec![sse::created()])])
        .await
        .unwrap();
    let resp = post(&model, json!({"model": "m"})).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).starts_with("event: response.created\n"));
    assert!(
        body.next().await.unwrap().is_err(),
        "the body must not end cleanly"
    );
}

#[tokio::test]
async fn stalled_stream_closes_when_the_client_goes_away() {
    let model = FakeModel::start(vec![Scripted::stalled(vec![sse::created()])])
        .await
        .unwrap();
    let resp = post(&model, json!({"model": "m"})).await;
    let mut body = resp.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).starts_with("event: response.created\n"));
    let more = tokio::time::timeout(Duration::from_millis(100), body.next()).await;
    assert!(more.is_err(), "a stalled stream sends nothing more");
    assert_eq!(model.closed_streams(), 0);
    drop(body);
    model.wait_for_closed_streams(1, WAIT).await.unwrap();
}

#[tokio::test]
async fn paced_stream_delays_each_event() {
    let delay = Duration::from_millis(30);
    let model = FakeModel::start(vec![Scripted::paced(
        vec![sse::created(), sse::completed("r", 1, 1)],
        delay,
    )])
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let text = post(&model, json!({"model": "m"}))
        .await
        .text()
        .await
        .unwrap();
    assert!(started.elapsed() >= delay * 2);
    assert_eq!(parse_sse(&text).len(), 2);
}

#[test]
fn parses_json_scripts() {
    let script = parse_script(
        r#"[
            [{"type": "response.created"}, {"type": "response.completed", "response": {"id": "r"}}],
            {"status": 401, "body": {"error": {"message": "bad key"}}},
            {"events": [{"type": "response.created"}], "delay_ms": 5, "end": "stall"}
        ]"#,
    )
    .unwrap();
    assert_eq!(script.len(), 3);
    match &script[0] {
        Scripted::Events(events) => {
            assert_eq!(events[1].event, "response.completed");
            assert_eq!(events[1].data["response"]["id"], "r");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        script[1],
        Scripted::Status(401, json!({"error": {"message": "bad key"}}))
    );
    match &script[2] {
        Scripted::Stream(s) => {
            assert_eq!(s.delay, Duration::from_millis(5));
            assert_eq!(s.end, StreamEnd::Stall);
        }
        other => panic!("unexpected {other:?}"),
    }

    for bad in [
        "{}",
        "[1]",
        "[[{\"no_type\": 1}]]",
        "[{\"status\": 20000}]",
        "[{\"events\": [], \"end\": \"explode\"}]",
        "[{\"delay_ms\": 1}]",
        "not json",
    ] {
        assert!(parse_script(bad).is_err(), "{bad} must be rejected");
    }
}

#[test]
fn sse_wire_format() {
    let e = sse::text_delta("msg_1", "a\nb");
    let wire = e.to_wire();
    let data = wire
        .strip_prefix("event: response.output_text.delta\ndata: ")
        .and_then(|rest| rest.strip_suffix("\n\n"))
        .unwrap();
    assert!(!data.contains('\n'), "data stays on one line: {wire:?}");
    let data: Value = serde_json::from_str(data).unwrap();
    assert_eq!(data["type"], "response.output_text.delta");
    assert_eq!(data["delta"], "a\nb");
    assert_eq!(data["item_id"], "msg_1");
    let r = sse::reasoning("rs_1", &["one", "two"]);
    assert_eq!(r.data["item"]["summary"][1]["text"], "two");
    let f = sse::failed("context_length_exceeded", "too long");
    assert_eq!(
        f.data["response"]["error"]["code"],
        "context_length_exceeded"
    );
}

#[tokio::test]
async fn chat_completions_stream_data_only_chunks_and_done() {
    let model = FakeModel::start(vec![
        Scripted::chat_assistant("hello"),
        Scripted::chat_tool_call("call_1", "shell", r#"{"command":["ls"]}"#),
    ])
    .await
    .unwrap();
    let c = client();
    let resp = c
        .post(format!(
            "{}/chat/completions?api-version=1",
            model.base_url()
        ))
        .json(&json!({"model": "llama", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    let blocks: Vec<&str> = text.trim_end().split("\n\n").collect();
    assert_eq!(blocks.len(), 4, "{text}");
    assert!(
        blocks
            .iter()
            .all(|b| b.starts_with("data: ") && !b.contains("event:"))
    );
    let first: Value = serde_json::from_str(&blocks[0]["data: ".len()..]).unwrap();
    assert_eq!(first["choices"][0]["delta"]["content"], "hello");
    assert_eq!(first["model"], "llama", "the model is filled in");
    let usage: Value = serde_json::from_str(&blocks[2]["data: ".len()..]).unwrap();
    assert_eq!(usage["usage"]["total_tokens"], 15);
    assert_eq!(blocks[3], "data: [DONE]");

    let reqs = model.requests();
    assert_eq!(reqs[0].path, "/v1/chat/completions");
    assert_eq!(reqs[0].query, "api-version=1");
    assert_eq!(reqs[0].messages()[0]["content"], "hi");

    let text = c
        .post(format!("{}/chat/completions", model.base_url()))
        .json(&json!({"model": "m"}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let call: Value = serde_json::from_str(
        text.split("\n\n")
            .next()
            .unwrap()
            .strip_prefix("data: ")
            .unwrap(),
    )
    .unwrap();
    let fragment = &call["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!(fragment["id"], "call_1");
    assert_eq!(fragment["function"]["name"], "shell");
    assert_eq!(fragment["function"]["arguments"], r#"{"command":["ls"]}"#);
}

#[tokio::test]
async fn errors_can_carry_headers() {
    let model = FakeModel::start(vec![Scripted::rate_limited("2", "slow down")])
        .await
        .unwrap();
    let resp = post(&model, json!({"model": "m"})).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "2");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
}

#[test]
fn json_scripts_with_headers_and_chat_chunks() {
    let script = parse_script(
        r#"[
            {"status": 429, "headers": {"Retry-After": "1"}, "body": {"error": {"message": "x"}}},
            [{"choices": [{"index": 0, "delta": {"content": "hi"}}]}, "[DONE]"]
        ]"#,
    )
    .unwrap();
    assert_eq!(
        script[0],
        Scripted::StatusWithHeaders(
            429,
            vec![("Retry-After".into(), "1".into())],
            json!({"error": {"message": "x"}})
        )
    );
    let Scripted::Events(events) = &script[1] else {
        panic!("events")
    };
    assert!(events[0].to_wire().starts_with("data: {"));
    assert_eq!(events[1].to_wire(), "data: [DONE]\n\n");
    assert!(parse_script(r#"[{"status": 429, "headers": {"a": 1}}]"#).is_err());
}

#[tokio::test]
async fn routed_requests_take_their_own_script() {
    let model = FakeModel::start(vec![
        Scripted::assistant("main one"),
        Scripted::assistant("main two"),
    ])
    .await
    .unwrap();
    model.route("CHILD-TASK", vec![Scripted::assistant("child one")]);
    let user = |text: &str| {
        json!({"model": "m", "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]},
            // Not a user message: never routes.
            {"type": "function_call", "call_id": "c", "name": "spawn_agent", "arguments": "{\"message\":\"CHILD-TASK\"}"}
        ]})
    };
    let texts = |body: String| {
        parse_sse(&body)
            .into_iter()
            .filter_map(|(_, d)| d["delta"].as_str().map(String::from))
            .collect::<String>()
    };
    let first = post(&model, user("the root's task"))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(texts(first), "main one");
    let child = post(&model, user("CHILD-TASK: count files"))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(texts(child), "child one");
    let second = post(&model, user("the root again"))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(texts(second), "main two");
    // The route's script is used up: its next request is an error, not the
    // main script's.
    let resp = post(&model, user("CHILD-TASK again")).await;
    assert_eq!(resp.status(), 500);
}

#[tokio::test]
async fn outputs_the_request_carries_fill_in_the_script() {
    let model = FakeModel::start(vec![Scripted::tool_call(
        "w1",
        "wait_agent",
        r#"{"targets":["{{output:sp1:agent_id}}"],"other":"{{output:nope:agent_id}}"}"#,
    )])
    .await
    .unwrap();
    let body = json!({"model": "m", "input": [
        {"type": "function_call_output", "call_id": "sp1", "output": "{\"agent_id\":\"0b7c3f4e-9a52-4c1e-8a6f-2d1f5e9b7a10\",\"nickname\":null}"}
    ]});
    let text = post(&model, body).await.text().await.unwrap();
    let call = parse_sse(&text)
        .into_iter()
        .find_map(|(_, d)| {
            (d["item"]["type"] == "function_call").then(|| d["item"]["arguments"].clone())
        })
        .unwrap();
    assert_eq!(
        call,
        r#"{"targets":["0b7c3f4e-9a52-4c1e-8a6f-2d1f5e9b7a10"],"other":"{{output:nope:agent_id}}"}"#
    );
}
