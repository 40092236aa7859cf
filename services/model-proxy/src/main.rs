//! `keel-model-proxy`: serves `keel.v1.ModelService` in front of the model
//! providers of Codex's config.toml (Responses API or Chat Completions).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use keel_model_proxy::config::{self, Limits, Overrides};
use keel_model_proxy::{ApiKey, Metrics, ModelProxy, SERVICE_NAME};
use tonic::service::Routes;

#[derive(Debug, Parser)]
#[command(
    name = "keel-model-proxy",
    about = "Keel's model-proxy: the only holder of model API keys"
)]
struct Args {
    #[command(flatten)]
    serve: keel_server::ServeArgs,
    /// Mutual TLS: only the worker (a client certificate naming
    /// `keel-worker`, by default) may spend the model keys.
    #[command(flatten)]
    tls: keel_server::PeerTlsArgs,
    /// Codex's config.toml to read (default: $CODEX_HOME/config.toml, else
    /// ~/.codex/config.toml, where a missing file means defaults).
    #[arg(long, env = "KEEL_CONFIG")]
    config: Option<PathBuf>,
    /// The `[profiles.<name>]` to use instead of the file's `profile`.
    #[arg(long, env = "KEEL_PROFILE")]
    profile: Option<String>,
    /// The default provider instead of the file's `model_provider`.
    #[arg(long, env = "KEEL_MODEL_PROVIDER")]
    model_provider: Option<String>,
    /// The built-in `openai` provider's base URL (`/responses` is appended).
    #[arg(long, env = "OPENAI_BASE_URL")]
    openai_base_url: Option<String>,
    /// The built-in `openai` provider's key. Without one its calls fail
    /// UNAUTHENTICATED.
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true)]
    openai_api_key: Option<ApiKey>,
    /// Model used when a request names none (default: the file's `model`,
    /// else gpt-5-codex).
    #[arg(long, env = "KEEL_MODEL")]
    model: Option<String>,
    #[command(flatten)]
    blobs: keel_blobstore::BlobStoreArgs,
    /// Longest wait for a vendor's response headers or next SSE bytes, for
    /// every provider (default: each provider's `stream_idle_timeout_ms`).
    #[arg(long, env = "KEEL_STREAM_IDLE_TIMEOUT_MS")]
    stream_idle_timeout_ms: Option<u64>,
    #[command(flatten)]
    metrics: keel_server::MetricsArgs,
    /// Calls in flight per provider.
    #[arg(long, env = "KEEL_MAX_CONCURRENT_PER_PROVIDER", default_value_t = 64)]
    max_concurrent_per_provider: usize,
    /// Calls waiting for a slot per provider; past that a call fails
    /// RESOURCE_EXHAUSTED at once.
    #[arg(long, env = "KEEL_MAX_QUEUED_PER_PROVIDER", default_value_t = 256)]
    max_queued_per_provider: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // reqwest is built with `rustls-no-provider`: without this it panics.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut args = Args::parse();
    let _telemetry = keel_server::telemetry::init("keel-model-proxy", args.serve.log_format)?;
    keel_server::protect_process();
    let tls = args.tls.server("the model-proxy")?;

    let overrides = Overrides {
        config_file: args.config.clone(),
        profile: args.profile.clone(),
        model: args.model.clone(),
        model_provider: args.model_provider.clone(),
        openai_base_url: args.openai_base_url.clone(),
        openai_api_key: args.openai_api_key.clone(),
        stream_idle_timeout: args.stream_idle_timeout_ms.map(Duration::from_millis),
    };
    let mut config = config::load(&overrides, &|name| std::env::var(name).ok())?;
    config.limits = Limits {
        max_concurrent_per_provider: args.max_concurrent_per_provider.max(1),
        max_queued_per_provider: args.max_queued_per_provider,
    };
    for p in config.providers.values() {
        tracing::info!(
            provider = %p.id,
            base_url = %p.base_url,
            wire_api = p.wire_api.as_str(),
            key = if p.api_key.is_some() { "set" } else if p.env_key.is_some() { "missing" } else { "not needed" },
            "model provider"
        );
    }
    if let Some(p) = config.providers.get(&config.default_provider)
        && p.missing_key()
    {
        tracing::warn!(
            provider = %p.id,
            env_key = p.env_key.as_deref().unwrap_or_default(),
            "the default provider has no API key: its calls will fail UNAUTHENTICATED"
        );
    }
    tracing::info!(provider = %config.default_provider, model = %config.default_model, "model-proxy configured");

    let server_metrics = args.metrics.start().await?;
    let blobs = args.blobs.open()?.with_metrics(server_metrics.registry())?;
    let metrics = Arc::new(
        Metrics::in_registry(server_metrics.registry().clone()).context("cannot set up metrics")?,
    );
    args.serve.metrics = Some(server_metrics);
    let proxy = ModelProxy::with_metrics(config, blobs, metrics)
        .context("cannot set up the model-proxy")?;
    // StreamResponse answers with its stream at once; the deadline bounds
    // that, not the model's answer (bounded by the idle timeout and retries).
    let routes = Routes::new(keel_server::Deadline::new(
        proxy.into_server(),
        args.serve
            .request_timeout(std::time::Duration::from_secs(60)),
    ));
    keel_server::serve_with(&args.serve, routes, &[SERVICE_NAME], tls).await?;
    Ok(())
}
