//! keel-worker: polls Temporal for session workflows and their activities.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use keel_worker::activities::KeelActivities;
use keel_worker::affinity::Affine;
use keel_worker::balanced::balanced;
use keel_worker::notices::NoticeInterceptor;
use keel_worker::runners::Runners;
use keel_worker::session_apis::SessionApis;
use keel_worker::workflow::AgentWorkflow;
use temporalio_common::telemetry::metrics::CoreMeter;
use temporalio_common::telemetry::{
    PrometheusExporterOptions, TelemetryOptions, start_prometheus_metric_exporter,
};
use temporalio_sdk::opentelemetry::{
    OpenTelemetryPlugin, WorkflowIdGenerator, WorkflowSpanProcessor,
};
use temporalio_sdk::runtime::RuntimeOptions;
use temporalio_sdk::{Runtime, Worker, WorkerOptions};

#[derive(Debug, Parser)]
#[command(name = "keel-worker", version, about = "Keel's Temporal worker")]
struct Args {
    /// Health endpoint (grpc.health.v1).
    #[command(flatten)]
    serve: keel_server::ServeArgs,
    #[command(flatten)]
    metrics: keel_server::MetricsArgs,
    #[command(flatten)]
    temporal: keel_workflow_api::client::TemporalArgs,
    /// Serve the Temporal SDK's own worker metrics (task slots, poll and
    /// task latencies, sticky cache) in Prometheus' text format on
    /// `http://ADDR/metrics` — an endpoint of its own, beside
    /// --metrics-listen's (off by default; port 0 picks a free port).
    #[arg(long, env = "KEEL_TEMPORAL_METRICS_LISTEN", value_name = "ADDR")]
    temporal_metrics_listen: Option<std::net::SocketAddr>,
    /// Once the Temporal SDK's metrics endpoint listens, write its address
    /// (host:port) to this file.
    #[arg(
        long,
        env = "KEEL_TEMPORAL_METRICS_ADDR_FILE",
        value_name = "FILE",
        requires = "temporal_metrics_listen"
    )]
    temporal_metrics_addr_file: Option<std::path::PathBuf>,
    /// model-proxy names (host:port or http(s)://host:port,
    /// comma-separated). Every address a name resolves to is a replica (a
    /// headless Kubernetes service names them all); model calls are
    /// balanced over them.
    #[arg(
        long,
        env = "KEEL_MODEL_PROXY_ADDR",
        value_delimiter = ',',
        required = true
    )]
    model_proxy: Vec<String>,
    /// tool-runner names (host:port or http(s)://host:port,
    /// comma-separated). Every address a name resolves to is a runner (a
    /// headless Kubernetes service names a StatefulSet's pods); each
    /// session's workspace is leased to one of them and its calls go there.
    #[arg(
        long,
        env = "KEEL_TOOL_RUNNER_ADDR",
        value_delimiter = ',',
        required = true
    )]
    tool_runner: Vec<String>,
    /// How often the tool-runner names are resolved and the runners asked
    /// for their load, so runners that start or stop are found.
    #[arg(long, env = "KEEL_TOOL_RUNNER_REFRESH_MS", default_value_t = 2000)]
    tool_runner_refresh_ms: u64,
    /// session-api names (host:port or http(s)://host:port, comma-separated).
    /// Every address a name resolves to is a replica (a headless Kubernetes
    /// service names them all); each gets the live model deltas and a notice
    /// whenever a session's events change. None: clients see events only when
    /// session-api reads them for another reason (a new stream, a gap).
    #[arg(long, env = "KEEL_SESSION_API_ADDRS", value_delimiter = ',')]
    session_api: Vec<String>,
    /// How often the session-api names are resolved again, so replicas that
    /// start or stop are found.
    #[arg(long, env = "KEEL_SESSION_API_REFRESH_MS", default_value_t = 2000)]
    session_api_refresh_ms: u64,
    /// How long a session's next workflow task waits for the worker that has
    /// the session cached before any worker may take it. Short, so a crashed
    /// worker delays its sessions by about this much; longer means fewer
    /// history replays on a busy cluster.
    #[arg(long, env = "KEEL_STICKY_TIMEOUT_MS", default_value_t = 2000)]
    sticky_timeout_ms: u64,
    /// Mutual TLS to the model-proxy, tool-runner, mcp-broker and
    /// session-api's internal listeners: this worker's certificate (naming
    /// `keel-worker`) and the CA their certificates chain to.
    #[command(flatten)]
    tls: keel_server::PeerTlsArgs,
    /// mcp-broker names (comma-separated, resolved like the others). A
    /// session always reaches the same replica while the set stays the
    /// same (its MCP connections live there). None: sessions get no MCP
    /// tools (and a session that names MCP servers cannot start).
    #[arg(long, env = "KEEL_MCP_BROKER_ADDR", value_delimiter = ',')]
    mcp_broker: Vec<String>,
    /// How often the model-proxy and mcp-broker names are resolved again.
    #[arg(long, env = "KEEL_SERVICE_REFRESH_MS", default_value_t = 2000)]
    service_refresh_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    // Workflow spans get the same ids when a workflow is replayed, and spans
    // started while replaying are not exported again (the Temporal SDK's
    // OpenTelemetry plugin).
    let telemetry = keel_server::telemetry::init_with(
        "keel-worker",
        args.serve.log_format,
        WorkflowSpanProcessor::new,
        WorkflowIdGenerator::default(),
    )?;
    args.serve.metrics = Some(args.metrics.start().await?);
    keel_server::protect_process();

    let identity = keel_worker::orphans::identity();
    let client = args
        .temporal
        .connect(identity.clone(), Duration::from_secs(60))
        .await?;
    // Calls a crashed predecessor on this host left running are retried now
    // rather than after their heartbeat timeout.
    tokio::spawn(keel_worker::orphans::recover(
        client.clone(),
        args.temporal.namespace.clone(),
        args.temporal.task_queue.clone(),
        identity.clone(),
    ));

    let tls = args.tls.client()?;
    let session_apis = SessionApis::new(&args.session_api, tls.clone())?;
    if session_apis.is_empty() {
        tracing::warn!(
            "no --session-api: clients will not see live deltas, and new events only when they reconnect"
        );
    }
    session_apis
        .keep_resolving(Duration::from_millis(args.session_api_refresh_ms.max(100)))
        .await;
    let runners = Runners::new(&args.tool_runner, tls.clone())?;
    runners
        .keep_refreshing(Duration::from_millis(args.tool_runner_refresh_ms.max(100)))
        .await;
    let every = Duration::from_millis(args.service_refresh_ms.max(100));
    let model = balanced(&args.model_proxy, tls.clone(), every)?;
    let brokers = if args.mcp_broker.is_empty() {
        None
    } else {
        let brokers = Affine::new(&args.mcp_broker, tls.clone())?;
        brokers.keep_refreshing(every).await;
        Some(brokers)
    };
    let activities = KeelActivities::new(model, runners, brokers, session_apis.clone());
    let options = WorkerOptions::new(args.temporal.task_queue.clone())
        .register_workflow::<AgentWorkflow>()?
        .register_activities(activities)
        .worker_interceptor(NoticeInterceptor::new(session_apis))
        .sticky_queue_schedule_to_start_timeout(std::time::Duration::from_millis(
            args.sticky_timeout_ms,
        ))
        // Heartbeats reach Temporal within a second, well inside the
        // workflow's 3 s heartbeat timeout (the default throttle, 0.8 of the
        // timeout, would leave 0.6 s).
        .max_heartbeat_throttle_interval(Duration::from_secs(1));
    // Traced: the trace context rides in Temporal's `_tracer-data` header
    // from session-api's signal to the workflow, its activities and the
    // services they call.
    let options = if telemetry.tracing() {
        options.worker_plugin(OpenTelemetryPlugin::builder().global_propagator().build())
    } else {
        options
    }
    .build();
    let runtime = Runtime::from_current_tokio(runtime_options(&args)?)?;
    let mut worker = Worker::new(&runtime, client, options)?;
    let shutdown = worker.shutdown_handle();

    // The health server stops on the same SIGTERM; the worker then drains.
    let health = tokio::spawn({
        let serve = args.serve.clone();
        async move { keel_server::serve(&serve, tonic::service::Routes::default(), &[]).await }
    });
    tracing::info!(task_queue = %args.temporal.task_queue, "worker polling");
    let run = worker.run();
    tokio::pin!(run);
    tokio::select! {
        r = &mut run => r?,
        _ = keel_server::shutdown_signal() => {
            tracing::info!("shutdown signal received, draining in-flight tasks");
            shutdown();
            run.await?;
        }
    }
    health.abort();
    tracing::info!("worker stopped");
    Ok(())
}

/// The SDK runtime's options: its metrics on their own endpoint when
/// --temporal-metrics-listen is set (the SDK serves them itself), with
/// Prometheus' naming (`_total` counters, durations in `_seconds`).
fn runtime_options(args: &Args) -> anyhow::Result<RuntimeOptions> {
    let Some(addr) = args.temporal_metrics_listen else {
        return Ok(RuntimeOptions::default());
    };
    let started = start_prometheus_metric_exporter(
        PrometheusExporterOptions::builder()
            .socket_addr(addr)
            .counters_total_suffix(true)
            .use_seconds_for_durations(true)
            .unit_suffix(true)
            .build(),
    )
    .with_context(|| format!("cannot serve the Temporal SDK's metrics on {addr}"))?;
    if let Some(path) = &args.temporal_metrics_addr_file {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, started.bound_addr.to_string())
            .and_then(|()| std::fs::rename(&tmp, path))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    tracing::info!(addr = %started.bound_addr, "serving the Temporal SDK's metrics on /metrics");
    let telemetry = TelemetryOptions::builder()
        .metrics(started.meter as Arc<dyn CoreMeter>)
        .build();
    RuntimeOptions::builder()
        .telemetry_options(telemetry)
        .build()
        .map_err(|e| anyhow::anyhow!("Temporal SDK runtime options: {e}"))
}
