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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    keel_server::init_tracing(args.serve.log_format);
    keel_server::protect_process();
    let blobs = args.blobs.open()?;
    let client = args
        .temporal
        .connect(
            format!("keel-session-api@{}", std::process::id()),
            Duration::from_secs(60),
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
        },
    );
    let routes = tonic::service::Routes::new(SessionServiceServer::new(api.clone()))
        .add_service(LiveServiceServer::new(LiveApi::new(api)));
    keel_server::serve(
        &args.serve,
        routes,
        &["keel.v1.SessionService", "keel.v1.LiveService"],
    )
    .await?;
    Ok(())
}
