//! `keel-tool-runner`: serves `keel.v1.ToolService`, running the agent's
//! commands on the session's workspace.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use keel_blobstore::BlobStore;
use keel_proto::v1::tool_service_server::ToolServiceServer;
use keel_tool_runner::{SERVICE_NAME, ToolRunner};
use tonic::service::Routes;

#[derive(Debug, Parser)]
#[command(
    name = "keel-tool-runner",
    version,
    about = "Keel's tool-runner: runs the agent's commands"
)]
struct Args {
    #[command(flatten)]
    serve: keel_server::ServeArgs,
    /// The blob store for tool output items: `file:///abs/dir` or `memory://`.
    #[arg(long, env = "KEEL_BLOB_URL")]
    blob_url: String,
    /// Working directory for calls whose request names none. Defaults to the
    /// tool-runner's own current directory.
    #[arg(long, env = "KEEL_DEFAULT_CWD")]
    default_cwd: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    keel_server::init_tracing(args.serve.log_format);

    let blobs = BlobStore::open(&args.blob_url)?;
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    // A relative --default-cwd is taken from where the tool-runner started, so
    // every command gets an absolute workdir.
    let default_cwd = args
        .default_cwd
        .map_or_else(|| cwd.clone(), |dir| cwd.join(dir));
    tracing::info!(default_cwd = %default_cwd.display(), "tool-runner configured");

    let runner = ToolRunner::new(blobs, default_cwd);
    let routes = Routes::new(ToolServiceServer::new(runner));
    keel_server::serve(&args.serve, routes, &[SERVICE_NAME]).await?;
    Ok(())
}
