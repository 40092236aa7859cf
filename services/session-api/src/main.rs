//! keel-session-api: Keel's client-facing gRPC door. Sessions are Temporal
//! workflows; this process is a Temporal client and keeps no state of its own.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use keel_proto::v1::session_service_server::SessionServiceServer;
use keel_session_api::{SessionApi, SessionLimits};
use temporalio_client::{Client, ClientOptions, Connection, ConnectionOptions, Url};

#[derive(Debug, Parser)]
#[command(
    name = "keel-session-api",
    version,
    about = "Keel's client-facing session service"
)]
struct Args {
    #[command(flatten)]
    serve: keel_server::ServeArgs,
    /// Temporal frontend, host:port.
    #[arg(long, env = "TEMPORAL_ADDRESS", default_value = "127.0.0.1:7233")]
    temporal_address: String,
    #[arg(long, env = "TEMPORAL_NAMESPACE", default_value = "default")]
    namespace: String,
    /// Task queue the Keel workers poll.
    #[arg(long, env = "KEEL_TASK_QUEUE", default_value = keel_workflow_api::DEFAULT_TASK_QUEUE)]
    task_queue: String,
    /// Blob store for user messages: file:///dir or memory:// (tests).
    #[arg(long, env = "KEEL_BLOB_URL")]
    blob_url: String,
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
    let blobs = keel_blobstore::BlobStore::open(&args.blob_url)?;
    let client = connect(&args.temporal_address, &args.namespace).await?;
    let api = SessionApi::new(
        client,
        blobs,
        args.task_queue,
        args.namespace,
        SessionLimits {
            retained_events: args.retained_events,
            history_event_budget: args.history_event_budget,
        },
    );
    let routes = tonic::service::Routes::new(SessionServiceServer::new(api));
    keel_server::serve(&args.serve, routes, &["keel.v1.SessionService"]).await?;
    Ok(())
}

/// Connects to Temporal, retrying for a while: in a fresh stack Temporal may
/// still be starting.
async fn connect(address: &str, namespace: &str) -> anyhow::Result<Client> {
    let url = if address.contains("://") {
        address.to_string()
    } else {
        format!("http://{address}")
    };
    let url = Url::from_str(&url).context("invalid --temporal-address")?;
    let mut delay = Duration::from_millis(100);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let opts = ConnectionOptions::new(url.clone())
            .identity(format!("keel-session-api@{}", std::process::id()))
            .build();
        match Connection::connect(opts).await {
            Ok(conn) => return Ok(Client::new(conn, ClientOptions::new(namespace).build())?),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, %address, "Temporal not reachable yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(e) => {
                return Err(e).with_context(|| format!("cannot connect to Temporal at {address}"));
            }
        }
    }
}
