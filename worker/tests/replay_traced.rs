//! With tracing on, replaying recorded histories records no span again.
//! A test binary of its own: it installs a global tracer provider, which
//! the other replay tests (run without the tracing plugin) must not see.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

mod common;

use common::histories;

use keel_worker::workflow::AgentWorkflow;
use temporalio_client::WorkflowHistory;
use temporalio_sdk::workflow_replayer::{WorkflowReplayer, WorkflowReplayerOptions};

/// With tracing on, replaying a session's history records no span again:
/// not the plugin's workflow spans, not the workflow's own turn and
/// approval spans (they were recorded when the workflow first ran). The
/// traced history's signal carries a `_tracer-data` header.
#[tokio::test]
async fn replays_record_no_spans() {
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SimpleSpanProcessor};
    use temporalio_sdk::opentelemetry::{
        OpenTelemetryPlugin, WorkflowIdGenerator, WorkflowSpanProcessor,
    };
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(WorkflowSpanProcessor::new(SimpleSpanProcessor::new(
            exporter.clone(),
        )))
        .with_id_generator(WorkflowIdGenerator::default())
        .build();
    keel_server::telemetry::install(&provider);
    let replayer = WorkflowReplayer::new(
        WorkflowReplayerOptions::new()
            .register_workflow::<AgentWorkflow>()
            .unwrap()
            .worker_plugin(OpenTelemetryPlugin::builder().global_propagator().build())
            .build(),
    )
    .unwrap();
    let all = histories();
    assert!(
        all.iter()
            .any(|(name, bytes)| name.ends_with("traced_closed.json")
                && String::from_utf8_lossy(bytes).contains("_tracer-data")),
        "no traced history"
    );
    for (name, bytes) in all {
        let history = WorkflowHistory::from_json(&bytes).unwrap();
        if let Err(e) = replayer.replay_workflow(history).await {
            panic!("{name} does not replay with tracing on: {e}");
        }
    }
    provider.force_flush().unwrap();
    let spans: Vec<String> = exporter
        .get_finished_spans()
        .unwrap()
        .into_iter()
        .map(|s| s.name.to_string())
        .collect();
    assert!(spans.is_empty(), "replays recorded spans: {spans:?}");
}
