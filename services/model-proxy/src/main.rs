//! `keel-model-proxy`: serves `keel.v1.ModelService` in front of an
//! OpenAI-compatible Responses API.

use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use keel_blobstore::BlobStore;
use keel_model_proxy::{ApiKey, Config, ModelProxy, SERVICE_NAME};
use tonic::service::Routes;

#[derive(Debug, Parser)]
#[command(
    name = "keel-model-proxy",
    about = "Keel's model-proxy: the only holder of model API keys"
)]
struct Args {
    #[command(flatten)]
    serve: keel_server::ServeArgs,
    /// The Responses API base URL (`/responses` is appended).
    #[arg(
        long,
        env = "OPENAI_BASE_URL",
        default_value = "https://api.openai.com/v1"
    )]
    openai_base_url: String,
    /// The vendor API key. Without one every call fails UNAUTHENTICATED.
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true)]
    openai_api_key: Option<ApiKey>,
    /// Model used when a request names none.
    #[arg(long, env = "KEEL_MODEL", default_value = "gpt-5-codex")]
    model: String,
    /// The blob store: `file:///abs/dir` or `memory://`.
    #[arg(long, env = "KEEL_BLOB_URL")]
    blob_url: String,
    /// Longest wait for the vendor's response headers or next SSE bytes.
    #[arg(long, env = "KEEL_STREAM_IDLE_TIMEOUT_MS", default_value_t = 300_000)]
    stream_idle_timeout_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // reqwest is built with `rustls-no-provider`: without this it panics.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    keel_server::init_tracing(args.serve.log_format);

    let blobs = BlobStore::open(&args.blob_url)?;
    let api_key = args.openai_api_key.and_then(ApiKey::non_empty);
    if api_key.is_none() {
        tracing::warn!("no OPENAI_API_KEY configured: every model call will fail UNAUTHENTICATED");
    }
    let config = Config {
        base_url: args.openai_base_url,
        api_key,
        default_model: args.model,
        stream_idle_timeout: Duration::from_millis(args.stream_idle_timeout_ms),
    };
    tracing::info!(base_url = %config.base_url, model = %config.default_model, "model-proxy configured");
    let proxy = ModelProxy::new(config, blobs).context("cannot build the HTTP client")?;
    let routes = Routes::new(proxy.into_server());
    keel_server::serve(&args.serve, routes, &[SERVICE_NAME]).await?;
    Ok(())
}
