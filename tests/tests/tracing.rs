//! One trace per turn across every hop, exported over OTLP to a receiver
//! in the test: the client's `traceparent` → session-api's call → the
//! Temporal signal → the workflow's handling of it → each activity → the
//! model-proxy's and the tool-runner's spans, and the workflow's own spans
//! for the turn and the wait for an approval. The worker is killed while
//! the approval waits; the trace goes on, in the same trace, with every
//! parent link intact. The tool-runner exports over OTLP/HTTP, the others
//! over gRPC; log lines (JSON) carry the trace, session, turn and call ids;
//! metrics are pushed over OTLP as well.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::collections::BTreeSet;
use std::time::Duration;

use keel_proto::v1 as pb;
use keel_test_support::fake_model::{FakeModel, Scripted};
use keel_test_support::otlp::{OtlpReceiver, ReceivedSpan};
use keel_test_support::session;
use keel_test_support::stack::{Stack, StackOptions};

const WAIT: Duration = Duration::from_secs(30);

fn in_trace<'a>(spans: &'a [ReceivedSpan], trace: &str) -> Vec<&'a ReceivedSpan> {
    spans.iter().filter(|s| s.trace_id == trace).collect()
}

fn has(spans: &[ReceivedSpan], trace: &str, service: &str, name: &str) -> usize {
    in_trace(spans, trace)
        .into_iter()
        .filter(|s| s.service == service && s.name == name)
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_turn_is_one_trace_from_the_client_to_every_service_across_a_worker_kill() {
    let otlp = OtlpReceiver::start().await.unwrap();
    let fake = FakeModel::start(vec![
        Scripted::shell("c1", &["touch", "traced-file"]),
        Scripted::assistant("done"),
    ])
    .await
    .unwrap();
    let mut options = StackOptions::new(fake.base_url());
    options.env = otlp.env();
    options.env.push(("KEEL_LOG_FORMAT".into(), "json".into()));
    // The tool-runner exports over OTLP/HTTP, the others over gRPC.
    options.tool_runner_env = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), otlp.http_endpoint()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL".into(), "http/protobuf".into()),
    ];
    let mut stack = Stack::launch(options).await.unwrap();
    let mut client = stack.connect().await.unwrap();
    let ws = tempfile::tempdir().unwrap();
    let (sid, mut events) = session::open_with_policy(
        &mut client,
        "traced-session",
        ws.path(),
        pb::ApprovalPolicy::Untrusted,
    )
    .await
    .unwrap();

    // The client's own span: its trace is the turn's.
    let trace = uuid::Uuid::new_v4().simple().to_string();
    let client_span = format!("{:016x}", rand_u64());
    let mut request = tonic::Request::new(pb::SendUserTurnRequest {
        session_id: sid.clone(),
        text: "make a file".into(),
        turn_id: "t1".into(),
        ..Default::default()
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace}-{client_span}-01").parse().unwrap(),
    );
    // Baggage a client made up does not pass for Keel's own.
    request
        .metadata_mut()
        .insert("baggage", "keel.turn_id=forged".parse().unwrap());
    client.send_user_turn(request).await.unwrap();
    let call_id = session::until_exec_approval(&mut events)
        .await
        .unwrap()
        .call_id;

    // What the worker did so far is exported before it dies (a kill -9
    // loses what a process has not sent yet, which is not what this test
    // is about).
    otlp.wait_until(WAIT, "the first model call's spans", |spans| {
        has(spans, &trace, "keel-worker", "RunActivity:model_call") == 1
            && has(spans, &trace, "keel-worker", "StartActivity:model_call") == 1
            && has(spans, &trace, "keel-worker", "HandleSignal:user_turn") == 1
    })
    .await
    .unwrap();
    stack.kill("keel-worker").unwrap();
    stack.restart("keel-worker").unwrap();

    session::approve(&mut client, &sid, &call_id).await.unwrap();
    session::until_turn_complete(&mut events).await.unwrap();
    assert!(ws.path().join("traced-file").exists());

    let spans = otlp
        .wait_until(WAIT, "the whole turn's spans", |spans| {
            has(spans, &trace, "keel-worker", "turn") == 1
                && has(spans, &trace, "keel-worker", "RunActivity:run_tool") == 1
                && has(spans, &trace, "keel-tool-runner", "tool shell") == 1
                && has(spans, &trace, "keel-model-proxy", "model call test-model") == 2
                && has(spans, &trace, "keel-worker", "RunActivity:model_call") == 2
        })
        .await
        .unwrap();
    let turn = in_trace(&spans, &trace);
    let names: Vec<String> = turn
        .iter()
        .map(|s| format!("{}:{}", s.service, s.name))
        .collect();
    eprintln!("the turn's trace: {names:#?}");

    // session-api's span continues the client's.
    let api = turn
        .iter()
        .find(|s| {
            s.service == "keel-session-api" && s.name == "keel.v1.SessionService/SendUserTurn"
        })
        .unwrap_or_else(|| panic!("no session-api span in {names:?}"));
    assert_eq!(api.parent_span_id, client_span);
    assert_eq!(api.attr("rpc.grpc.status_code"), Some("0"));

    // Every other span's parent is in the trace: nothing hangs loose, not
    // even what the restarted worker recorded.
    let ids: BTreeSet<&str> = turn.iter().map(|s| s.span_id.as_str()).collect();
    for span in &turn {
        if span.span_id == api.span_id {
            continue;
        }
        assert!(
            ids.contains(span.parent_span_id.as_str()),
            "{}:{} has parent {} outside the trace {names:?}",
            span.service,
            span.name,
            span.parent_span_id
        );
    }
    for span in &turn {
        let expected = if span.service == "keel-tool-runner" {
            "http"
        } else {
            "grpc"
        };
        assert_eq!(span.via, expected, "{span:?}");
    }
    // Nothing recorded twice by the replaying worker.
    assert_eq!(ids.len(), turn.len(), "{names:?}");

    let parent_of = |span: &ReceivedSpan| {
        turn.iter()
            .find(|p| p.span_id == span.parent_span_id)
            .map(|p| format!("{}:{}", p.service, p.name))
            .unwrap_or_default()
    };
    // The chain, hop by hop.
    for span in turn
        .iter()
        .filter(|s| s.service == "keel-model-proxy" && s.name.starts_with("model call"))
    {
        assert_eq!(
            parent_of(span),
            "keel-model-proxy:keel.v1.ModelService/StreamResponse"
        );
        assert_eq!(span.attr("gen_ai.request.model"), Some("test-model"));
        assert!(span.attr("gen_ai.usage.input_tokens").is_some(), "{span:?}");
        assert!(
            span.attr("keel.model.time_to_first_byte_ms").is_some(),
            "{span:?}"
        );
        assert_eq!(span.attr("keel.model.outcome"), Some("ok"));
        let server = turn
            .iter()
            .find(|p| p.span_id == span.parent_span_id)
            .unwrap();
        assert_eq!(parent_of(server), "keel-worker:RunActivity:model_call");
    }
    let tool = turn
        .iter()
        .find(|s| s.service == "keel-tool-runner" && s.name == "tool shell")
        .unwrap();
    assert_eq!(tool.attr("keel.command.argv0"), Some("touch"));
    assert_eq!(tool.attr("keel.command.exit_code"), Some("0"));
    assert_eq!(tool.attr("keel.tool.outcome"), Some("success"));
    assert!(tool.attr("keel.sandbox.mode").is_some(), "{tool:?}");
    assert_eq!(
        parent_of(tool),
        "keel-tool-runner:keel.v1.ToolService/RunTool"
    );
    let runner_server = turn
        .iter()
        .find(|p| p.span_id == tool.parent_span_id)
        .unwrap();
    assert_eq!(parent_of(runner_server), "keel-worker:RunActivity:run_tool");
    for activity in turn.iter().filter(|s| s.name.starts_with("RunActivity:")) {
        let start = turn
            .iter()
            .find(|p| p.span_id == activity.parent_span_id)
            .unwrap();
        assert!(start.name.starts_with("StartActivity:"), "{names:?}");
        assert_eq!(parent_of(start), "keel-worker:HandleSignal:user_turn");
    }
    let signal = turn
        .iter()
        .find(|s| s.name == "HandleSignal:user_turn")
        .unwrap();
    assert_eq!(
        parent_of(signal),
        "keel-session-api:SignalWorkflow:user_turn"
    );

    // The workflow's own spans: the approval's wait, as long as it took
    // (across the kill), and the turn.
    let wait = turn.iter().find(|s| s.name == "wait for answer").unwrap();
    assert_eq!(parent_of(wait), "keel-worker:HandleSignal:user_turn");
    assert_eq!(wait.attr("keel.request.decision"), Some("approved"));
    assert_eq!(wait.attr("keel.call_id"), Some("c1"));
    assert!(wait.end_unix_nano > wait.start_unix_nano);
    let turn_span = turn.iter().find(|s| s.name == "turn").unwrap();
    assert_eq!(turn_span.attr("keel.turn_id"), Some("t1"));
    assert_eq!(turn_span.attr("keel.turn.outcome"), Some("completed"));
    assert!(turn_span.start_unix_nano <= wait.start_unix_nano);
    assert!(turn_span.end_unix_nano >= wait.end_unix_nano);

    // Log lines say which trace, session and call they belong to.
    let logged = |process: &str, message: &str| -> serde_json::Value {
        let text = stack.proc(process).unwrap().log_text();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|l| l["message"] == message && l["trace_id"] == trace.as_str())
            .unwrap_or_else(|| {
                panic!("no {message:?} line of trace {trace} in {process}'s log:\n{text}")
            })
    };
    let line = logged("keel-tool-runner", "tool call");
    assert_eq!(line["call_id"], "c1", "{line}");
    assert_eq!(line["turn_id"], "t1", "{line}");
    assert_eq!(line["session_id"], stack.session_key(&sid), "{line}");
    assert_eq!(line["span_id"], tool.span_id.as_str(), "{line}");
    for process in [
        "keel-session-api",
        "keel-worker",
        "keel-model-proxy",
        "keel-tool-runner",
    ] {
        let text = stack.proc(process).unwrap().log_text();
        assert!(!text.contains("forged"), "{process}:\n{text}");
    }
    let line = logged("keel-model-proxy", "model response completed");
    assert_eq!(line["session_id"], stack.session_key(&sid), "{line}");
    assert_eq!(line["turn_id"], "t1", "{line}");
    assert_eq!(line["level"], "INFO", "{line}");

    // Metrics are pushed over OTLP too: over gRPC from session-api, over
    // HTTP from the tool-runner.
    let pushed = |service: &str, via: &str| {
        otlp.metrics().iter().any(|m| {
            m.service == service && m.via == via && m.name == "keel_grpc_server_requests_total"
        })
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while !(pushed("keel-session-api", "grpc") && pushed("keel-tool-runner", "http")) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no OTLP metrics: {:?}",
            otlp.metrics()
                .iter()
                .map(|m| (&m.service, m.via))
                .collect::<std::collections::BTreeSet<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // For the replay tests: a history whose signal carries trace context.
    keel_test_support::history::close_and_record(
        &mut client,
        &stack.temporal_address,
        &sid,
        "traced_closed",
    )
    .await
    .unwrap();
}

fn rand_u64() -> u64 {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    u64::from_le_bytes(bytes[..8].try_into().unwrap()) | 1
}
