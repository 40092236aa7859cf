//! keel-session-api: Keel's client-facing gRPC door. Sessions are Temporal
//! workflows; this process is a Temporal client and keeps no state of its own.

use std::time::Duration;

use clap::Parser;
use keel_proto::v1::live_service_server::LiveServiceServer;
use keel_proto::v1::session_service_server::SessionServiceServer;
use keel_session_api::{LiveApi, SessionApi, SessionLimits};

#[derive(Debug, Parser)]
#[command(
    name = "keel-session-api",
    version,
    about = "Keel's client-facing session service"
)]
struct Args {
    #[command(flatten)]
    serve: keel_server::ServeArgs,
    #[command(flatten)]
    metrics: keel_server::MetricsArgs,
    /// Browsers: gRPC-Web on the clients' listener (on by default) and the
    /// origins CORS allows (none by default).
    #[command(flatten)]
    web: keel_server::WebArgs,
    #[command(flatten)]
    auth: keel_auth::AuthArgs,
    #[command(flatten)]
    tenant_limits: keel_session_api::TenantLimits,
    /// Address of the internal listener, which serves LiveService (workers
    /// publish deltas and notices there) and never clients. Port 0 picks a
    /// free port (see --internal-addr-file). Keep it off the clients'
    /// network.
    #[arg(long, env = "KEEL_INTERNAL_LISTEN", default_value = "127.0.0.1:0")]
    internal_listen: std::net::SocketAddr,
    /// Once listening, write the internal listener's address to this file.
    #[arg(long, env = "KEEL_INTERNAL_ADDR_FILE")]
    internal_addr_file: Option<std::path::PathBuf>,
    /// Mutual TLS on the internal listener: only workers (a client
    /// certificate naming `keel-worker`, by default) may publish.
    #[command(flatten)]
    tls: keel_server::PeerTlsArgs,
    #[command(flatten)]
    temporal: keel_workflow_api::client::TemporalArgs,
    #[command(flatten)]
    blobs: keel_blobstore::BlobStoreArgs,
    /// Events each new session keeps for replay; clients further behind get a gap.
    #[arg(long, env = "KEEL_RETAINED_EVENTS", default_value_t = 2048, value_parser = clap::value_parser!(u32).range(16..=100_000))]
    retained_events: u32,
    /// Roll a session's history over (continue-as-new) at the first turn
    /// boundary after this many events; 0 for the default (8000).
    #[arg(long, env = "KEEL_HISTORY_EVENT_BUDGET", default_value_t = 0)]
    history_event_budget: u32,
    /// User turns each new session may have waiting behind its running one;
    /// past it SendUserTurn answers RESOURCE_EXHAUSTED.
    #[arg(long, env = "KEEL_MAX_QUEUED_TURNS", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    max_queued_turns: u32,
    /// How often the open sessions are counted by status for the
    /// `keel_sessions` gauge (one listing of Temporal's visibility store,
    /// a page per 1000 sessions).
    #[arg(long, env = "KEEL_SESSIONS_METRIC_INTERVAL_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    sessions_metric_interval_secs: u64,
}

/// Default per-call deadline: every call is a few Temporal round trips; an
/// update that waits for a worker is cut here rather than hanging.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    let telemetry = keel_server::telemetry::init("keel-session-api", args.serve.log_format)?;
    let server_metrics = args.metrics.start().await?;
    args.serve.metrics = Some(server_metrics.clone());
    args.serve.web = args.web.web()?;
    keel_server::protect_process();
    let auth = args.auth.authenticator().await?;
    let internal_tls = args.tls.server("session-api's internal listener")?;
    let blobs = args.blobs.open()?.with_metrics(server_metrics.registry())?;
    // Traced: signals, updates and queries carry the caller's trace context
    // to the workflow (Temporal's `_tracer-data` header).
    let plugins = if telemetry.tracing() {
        vec![
            temporalio_sdk::opentelemetry::OpenTelemetryPlugin::builder()
                .global_propagator()
                .build()
                .into(),
        ]
    } else {
        Vec::new()
    };
    let client = args
        .temporal
        .connect_with_plugins(
            format!("keel-session-api@{}", std::process::id()),
            Duration::from_secs(60),
            plugins,
        )
        .await?;
    let api = SessionApi::new(
        client,
        blobs,
        args.temporal.task_queue,
        args.temporal.namespace,
        SessionLimits {
            retained_events: args.retained_events,
            history_event_budget: args.history_event_budget,
            max_queued_turns: args.max_queued_turns,
        },
        args.tenant_limits,
        keel_session_api::metrics::ApiMetrics::in_registry(server_metrics.registry())?,
    );
    // The keel_sessions gauge (open sessions by status).
    tokio::spawn(
        api.clone()
            .report_session_counts(Duration::from_secs(args.sessions_metric_interval_secs)),
    );
    // Clients: every SessionService call is authenticated first, and
    // answered within the deadline (a StreamEvents call: until its stream
    // starts).
    let clients = tonic::service::Routes::new(keel_server::Deadline::new(
        keel_auth::RequireAuth::new(
            SessionServiceServer::new(api.clone())
                .max_decoding_message_size(keel_session_api::MAX_REQUEST_BYTES),
            auth,
        ),
        args.serve.request_timeout(REQUEST_TIMEOUT),
    ));
    // Live deltas and notices are small.
    let internal = tonic::service::Routes::new(
        LiveServiceServer::new(LiveApi::new(api)).max_decoding_message_size(1024 * 1024),
    );
    let internal_args = keel_server::ServeArgs {
        listen: args.internal_listen,
        addr_file: args.internal_addr_file.clone(),
        log_format: args.serve.log_format,
        // Publish is a long client stream; Notify answers at once.
        request_timeout_secs: None,
        // One registry for both listeners (their services tell them apart).
        metrics: args.serve.metrics.clone(),
        // Workers only: plain gRPC.
        web: None,
    };
    tokio::try_join!(
        keel_server::serve(&args.serve, clients, &["keel.v1.SessionService"]),
        keel_server::serve_with(
            &internal_args,
            internal,
            &["keel.v1.LiveService"],
            internal_tls
        ),
    )?;
    Ok(())
}
