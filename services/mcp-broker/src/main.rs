//! keel-mcp-broker: owns the sessions' connections to MCP servers (see the
//! crate docs and proto/keel/v1/mcp.proto).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use keel_mcp_broker::{config, pool::Pool, service::Broker};
use keel_proto::v1::mcp_broker_service_server::McpBrokerServiceServer;

#[derive(Debug, Parser)]
#[command(name = "keel-mcp-broker", version, about = "Keel's MCP broker")]
struct Args {
    #[command(flatten)]
    serve: keel_server::ServeArgs,
    #[command(flatten)]
    metrics: keel_server::MetricsArgs,
    /// Mutual TLS: only the worker (and session-api) may use the servers.
    #[command(flatten)]
    tls: keel_server::PeerTlsArgs,
    #[command(flatten)]
    blobs: keel_blobstore::BlobStoreArgs,
    /// Codex's config.toml whose `[mcp_servers.<name>]` tables are the
    /// servers (default: $CODEX_HOME/config.toml, else
    /// ~/.codex/config.toml, where a missing file means no servers).
    #[arg(long, env = "KEEL_CONFIG")]
    config: Option<PathBuf>,
    /// Stop a session's server process after it has been idle this many
    /// seconds (it starts again on the next call).
    #[arg(long, env = "KEEL_MCP_IDLE_TIMEOUT_SECS", default_value_t = 600)]
    idle_timeout_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    let _telemetry = keel_server::telemetry::init("keel-mcp-broker", args.serve.log_format)?;
    let server_metrics = args.metrics.start().await?;
    args.serve.metrics = Some(server_metrics.clone());
    keel_server::protect_process();
    let tls = args.tls.server("the mcp-broker")?;
    let env = |name: &str| std::env::var(name).ok();
    let config = config::load(args.config.as_deref(), &env)?;
    for s in config.servers.values() {
        tracing::info!(server = %s.name, transport = s.transport.name(), enabled = s.enabled, required = s.required, shared = s.shared, "MCP server configured");
    }
    let blobs = args.blobs.open()?.with_metrics(server_metrics.registry())?;
    let pool = Arc::new(Pool::new(Arc::new(config)));
    let idle = Duration::from_secs(args.idle_timeout_secs.max(1));
    let reaper = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(
                (idle / 4).clamp(Duration::from_secs(1), Duration::from_secs(30)),
            );
            loop {
                tick.tick().await;
                let n = pool.reap_idle(idle).await;
                if n > 0 {
                    tracing::info!(stopped = n, "stopped idle MCP servers");
                }
            }
        })
    };
    let routes = tonic::service::Routes::new(keel_server::Deadline::new(
        McpBrokerServiceServer::new(Broker::new(pool.clone(), blobs))
            .max_decoding_message_size(4 * 1024 * 1024),
        args.serve.request_timeout(Duration::from_secs(600)),
    ));
    let served =
        keel_server::serve_with(&args.serve, routes, &["keel.v1.McpBrokerService"], tls).await;
    reaper.abort();
    pool.close_all().await;
    served?;
    Ok(())
}
