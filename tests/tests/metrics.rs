//! Every Keel process serves Prometheus metrics (`--metrics-listen`): after a
//! turn with a command, each service's `/metrics` has the RED metrics of the
//! gRPC methods it answered, labelled by service, method and status code
//! only — no session id in any label, and a path nobody serves counted as
//! `unknown` — and the services' own metrics (the model-proxy's calls, the
//! tool-runner's tool calls).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use keel_proto::v1 as pb;
use keel_test_support::fake_model::{FakeModel, Scripted};
use keel_test_support::session;
use keel_test_support::stack::{Stack, StackOptions};

/// The value of the sample `name{labels}` (labels in Prometheus' order:
/// sorted by name), if present.
fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    let key = format!("{name}{{{labels}}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse().ok())
}

fn requests(text: &str, service: &str, method: &str, code: &str) -> f64 {
    sample(
        text,
        "keel_grpc_server_requests_total",
        &format!("code=\"{code}\",method=\"{method}\",service=\"{service}\""),
    )
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_service_serves_red_metrics_with_bounded_labels() {
    let fake = FakeModel::start(vec![
        // Retried by the model-proxy: its error and retry counters show.
        Scripted::error(500, "server_error", "try again"),
        Scripted::shell("c1", &["echo", "metered"]),
        Scripted::assistant("done"),
        Scripted::shell("c2", &["touch", "approved-file"]),
        Scripted::assistant("made it"),
    ])
    .await
    .unwrap();
    let mut options = StackOptions::new(fake.base_url());
    options.session_api_args = vec!["--sessions-metric-interval-secs".into(), "1".into()];
    // Prices for the cost counter.
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("config.toml");
    std::fs::write(
        &config,
        "[model_prices.test-model]\ninput_per_million = 1.0\ncached_input_per_million = 0.5\noutput_per_million = 2.0\n",
    )
    .unwrap();
    options.model_proxy_args = vec!["--config".into(), config.display().to_string()];
    let stack = Stack::launch(options).await.unwrap();
    let mut client = stack.connect().await.unwrap();
    let ws = tempfile::tempdir().unwrap();
    let (sid, mut events) = session::open_with_policy(
        &mut client,
        "metered-session",
        ws.path(),
        pb::ApprovalPolicy::Never,
    )
    .await
    .unwrap();
    session::send(&mut client, &sid, "t1", "run it")
        .await
        .unwrap();
    session::until_turn_complete(&mut events).await.unwrap();
    // A command that needs an approval, answered.
    let (asked_sid, mut asked) =
        session::open_with_policy(&mut client, "", ws.path(), pb::ApprovalPolicy::Untrusted)
            .await
            .unwrap();
    session::send(&mut client, &asked_sid, "t1", "make a file")
        .await
        .unwrap();
    let call_id = session::until_exec_approval(&mut asked)
        .await
        .unwrap()
        .call_id;
    // Sessions by status: one waits for the approval, one is idle.
    let sessions = |status: &str, text: &str| {
        sample(text, "keel_sessions", &format!("status=\"{status}\"")).unwrap_or(-1.0)
    };
    wait_for_metrics(
        &stack,
        "keel-session-api",
        "one session waiting, one idle",
        |t| {
            sessions("waiting", t) == 1.0
                && sessions("idle", t) == 1.0
                && sessions("running", t) == 0.0
        },
    )
    .await;
    session::approve(&mut client, &asked_sid, &call_id)
        .await
        .unwrap();
    session::until_turn_complete(&mut asked).await.unwrap();

    // A path session-api does not serve.
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", stack.session_api))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let e = pb::tool_service_client::ToolServiceClient::new(channel)
        .list_tools(pb::ListToolsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unimplemented);

    let api = stack.metrics("keel-session-api").await.unwrap();
    for method in ["CreateSession", "SendUserTurn"] {
        assert_eq!(
            requests(&api, "keel.v1.SessionService", method, "OK"),
            2.0,
            "{method}:\n{api}"
        );
    }
    assert_eq!(
        requests(&api, "keel.v1.SessionService", "Respond", "OK"),
        1.0,
        "{api}"
    );
    assert!(
        requests(&api, "keel.v1.LiveService", "Notify", "OK") >= 1.0,
        "{api}"
    );
    assert_eq!(
        requests(&api, "unknown", "unknown", "Unimplemented"),
        1.0,
        "{api}"
    );
    assert!(
        api.contains("keel_grpc_server_request_duration_seconds_bucket{method=\"SendUserTurn\",service=\"keel.v1.SessionService\",le=\"0.005\"}"),
        "{api}"
    );
    // session-api's own: events reached the streams live, and the approval
    // waited for its answer.
    let delivered: f64 = api
        .lines()
        .find_map(|l| l.strip_prefix("keel_event_delivery_lag_seconds_count "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(delivered >= 5.0, "{api}");
    assert_eq!(
        sample(
            &api,
            "keel_request_answer_wait_seconds_count",
            "kind=\"exec_approval\""
        ),
        Some(1.0),
        "{api}"
    );
    // The streams the test still holds open.
    assert_eq!(
        sample(
            &api,
            "keel_grpc_server_in_flight",
            "method=\"StreamEvents\",service=\"keel.v1.SessionService\""
        ),
        Some(2.0),
        "{api}"
    );

    let proxy = stack.metrics("keel-model-proxy").await.unwrap();
    assert_eq!(
        requests(&proxy, "keel.v1.ModelService", "StreamResponse", "OK"),
        4.0,
        "{proxy}"
    );
    // The model-proxy's own metrics, in the same endpoint.
    assert!(proxy.contains("keel_model_requests_total{"), "{proxy}");
    // What the calls cost, by the configured prices and the tokens counted.
    let tokens = |kind: &str| {
        sample(
            &proxy,
            "keel_model_tokens_total",
            &format!("kind=\"{kind}\",model=\"test-model\",provider=\"openai\""),
        )
        .unwrap()
    };
    let (input, cached, output) = (tokens("input"), tokens("cached_input"), tokens("output"));
    assert!(input > 0.0 && output > 0.0, "{proxy}");
    let cost = sample(
        &proxy,
        "keel_model_cost_usd_total",
        "model=\"test-model\",provider=\"openai\"",
    )
    .unwrap();
    let expected = ((input - cached) * 1.0 + cached * 0.5 + output * 2.0) / 1e6;
    assert!(
        (cost - expected).abs() < 1e-12,
        "{cost} != {expected}\n{proxy}"
    );

    let runner = stack.metrics("keel-tool-runner").await.unwrap();
    assert!(
        requests(&runner, "keel.v1.ToolService", "RunTool", "OK") >= 1.0,
        "{runner}"
    );
    // The tool-runner's own: calls by tool and outcome, and how long.
    assert_eq!(
        sample(
            &runner,
            "keel_tool_calls_total",
            "outcome=\"success\",tool=\"shell\""
        ),
        Some(2.0),
        "{runner}"
    );
    assert_eq!(
        sample(
            &runner,
            "keel_tool_call_duration_seconds_count",
            "tool=\"shell\""
        ),
        Some(2.0),
        "{runner}"
    );

    // The session's setup listed its MCP tools.
    let broker = stack.metrics("keel-mcp-broker").await.unwrap();
    assert!(
        requests(&broker, "keel.v1.McpBrokerService", "ListMcpTools", "OK") >= 1.0,
        "{broker}"
    );

    // Every process answers (the worker's server has health only); no
    // label names the session.
    let mut everything = String::new();
    for name in [
        "keel-session-api",
        "keel-model-proxy",
        "keel-tool-runner",
        "keel-mcp-broker",
        "keel-worker",
    ] {
        let text = stack.metrics(name).await.unwrap();
        assert!(!text.contains("metered-session"), "{name}:\n{text}");
        everything.push_str(&text);
    }

    wait_for_metrics(&stack, "keel-session-api", "two sessions idle", |t| {
        sessions("waiting", t) == 0.0 && sessions("idle", t) == 2.0
    })
    .await;

    // Every service that reads and writes blobs counts them.
    for name in ["keel-session-api", "keel-model-proxy", "keel-tool-runner"] {
        let text = stack.metrics(name).await.unwrap();
        assert!(
            sample(
                &text,
                "keel_blob_store_operations_total",
                "op=\"put\",outcome=\"ok\""
            )
            .is_some_and(|n| n >= 1.0),
            "{name}:\n{text}"
        );
        assert!(
            sample(&text, "keel_blob_store_bytes_total", "op=\"put\"").is_some_and(|n| n >= 1.0),
            "{name}:\n{text}"
        );
    }
    let proxy = stack.metrics("keel-model-proxy").await.unwrap();
    assert!(
        sample(
            &proxy,
            "keel_blob_store_operations_total",
            "op=\"get\",outcome=\"ok\""
        )
        .is_some_and(|n| n >= 1.0),
        "{proxy}"
    );

    // The Temporal SDK's own worker metrics, on the worker's second
    // endpoint: the workflow tasks and activities of these turns.
    let sdk = stack.temporal_metrics("keel-worker").await.unwrap();
    for family in [
        "temporal_workflow_task_execution_latency_seconds",
        "temporal_activity_execution_latency_seconds",
        "temporal_worker_task_slots_available",
    ] {
        assert!(
            sdk.contains(&format!("# TYPE {family} ")),
            "{family}:\n{sdk}"
        );
    }
    everything.push_str(&sdk);

    // Every metric the Grafana dashboard (deploy/grafana) charts is one the
    // processes export.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/grafana/keel-dashboard.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let charted = dashboard_metrics(&dashboard);
    assert!(charted.len() >= 10, "{charted:?}");
    for name in &charted {
        assert!(
            everything.contains(&format!("# TYPE {name} ")),
            "the dashboard charts {name}, which no process exports"
        );
    }
}

/// Scrapes `process` until `done` holds (its gauges change as sessions do).
async fn wait_for_metrics(stack: &Stack, process: &str, what: &str, done: impl Fn(&str) -> bool) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let text = stack.metrics(process).await.unwrap();
        if done(&text) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{process}: never {what}:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// The `keel_…` and `temporal_…` metric names in a Grafana dashboard's
/// queries, histogram series named by their family.
fn dashboard_metrics(dashboard: &serde_json::Value) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut queue = vec![dashboard];
    while let Some(value) = queue.pop() {
        match value {
            serde_json::Value::Object(map) => {
                for (key, v) in map {
                    if let (true, Some(expr)) = (key == "expr" || key == "query", v.as_str()) {
                        let mut rest = expr;
                        while let Some(at) = ["keel_", "temporal_"]
                            .iter()
                            .filter_map(|prefix| rest.find(prefix))
                            .min()
                        {
                            let tail = &rest[at..];
                            let end = tail
                                .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                                .unwrap_or(tail.len());
                            let name = &tail[..end];
                            let family = ["_bucket", "_sum", "_count"]
                                .iter()
                                .find_map(|s| name.strip_suffix(s))
                                .unwrap_or(name);
                            names.insert(family.to_string());
                            rest = &tail[end..];
                        }
                    }
                    queue.push(v);
                }
            }
            serde_json::Value::Array(items) => queue.extend(items),
            _ => {}
        }
    }
    names
}
