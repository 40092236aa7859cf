//! What every Keel gRPC server does the same way: bind, serve grpc.health.v1 and
//! reflection (v1 and v1alpha), log with `tracing`, and drain on SIGTERM/SIGINT.
//! A service's `main` parses its flags, builds its service and calls [`serve`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_stream::wrappers::ReceiverStream;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;

pub mod codex_config;
mod deadline;
mod hardening;
mod logging;
pub mod metrics;
pub mod otlp_metrics;
pub mod telemetry;
pub mod tls;
mod web;

pub use deadline::Deadline;
pub use hardening::protect_process;
pub use logging::LogFormat;
pub use metrics::{MetricsArgs, ServerMetrics};
pub use telemetry::{Telemetry, Traced};
pub use tls::{ClientTls, PeerTlsArgs, ServerTls, TlsError, keep_alive};
pub use web::{Web, WebArgs, WebError};

/// Flags and environment shared by every Keel server.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on. Port 0 picks a free port (see --addr-file).
    #[arg(long, env = "KEEL_LISTEN", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Once listening, write the bound address (host:port) to this file.
    #[arg(long, env = "KEEL_ADDR_FILE")]
    pub addr_file: Option<PathBuf>,
    /// Log line format.
    #[arg(long, env = "KEEL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Longest a call may take before it is answered DEADLINE_EXCEEDED (a
    /// streaming call: until its stream starts). Default: the server's own
    /// (see docs/operations.md).
    #[arg(long, env = "KEEL_REQUEST_TIMEOUT_SECS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub request_timeout_secs: Option<u64>,
    /// Where the server records its gRPC metrics (see
    /// [`MetricsArgs::start`]); `None`: a registry nobody scrapes.
    #[arg(skip)]
    pub metrics: Option<ServerMetrics>,
    /// Serve browsers too (gRPC-Web and CORS; see [`WebArgs::web`]).
    /// `None`: plain gRPC over HTTP/2 only.
    #[arg(skip)]
    pub web: Option<Web>,
}

impl ServeArgs {
    /// The per-call deadline: the flag's, else the server's `default`.
    pub fn request_timeout(&self, default: std::time::Duration) -> std::time::Duration {
        self.request_timeout_secs
            .map(std::time::Duration::from_secs)
            .unwrap_or(default)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot write the address file {path}: {source}")]
    AddrFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot set up metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error(transparent)]
    Telemetry(#[from] telemetry::TelemetryError),
}

/// Serves `routes` plus health and reflection until SIGTERM or SIGINT, then
/// stops accepting and lets in-flight calls finish.
///
/// `service_names` are the fully qualified names reported SERVING by
/// grpc.health.v1 (the empty name, the whole server, is always reported).
pub async fn serve(
    args: &ServeArgs,
    routes: Routes,
    service_names: &[&str],
) -> Result<(), ServeError> {
    serve_with(args, routes, service_names, None).await
}

/// [`serve`], over mutual TLS when `tls` is set: a connection whose
/// handshake fails (no client certificate, one from another CA, one without
/// an allowed name) is dropped before any call.
pub async fn serve_with(
    args: &ServeArgs,
    routes: Routes,
    service_names: &[&str],
    tls: Option<Arc<ServerTls>>,
) -> Result<(), ServeError> {
    let until = async {
        shutdown_signal().await;
        tracing::info!("shutdown signal received, draining");
    };
    serve_until(args, routes, service_names, tls, until).await
}

/// [`serve_with`], stopping when `until` resolves rather than on the first
/// signal: a server that drains its own way first (the tool-runner
/// finishes its commands while refusing new ones) keeps serving — and
/// reporting SERVING — meanwhile.
pub async fn serve_until(
    args: &ServeArgs,
    routes: Routes,
    service_names: &[&str],
    tls: Option<Arc<ServerTls>>,
    until: impl std::future::Future<Output = ()>,
) -> Result<(), ServeError> {
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: args.listen,
            source,
        })?;
    let local = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: args.listen,
        source,
    })?;

    let (health, health_service) = tonic_health::server::health_reporter();
    for name in service_names {
        health
            .set_service_status(*name, tonic_health::ServingStatus::Serving)
            .await;
    }
    // List only what this server serves, so grpcurl shows the truth.
    let reflection = || {
        let mut b = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(keel_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name("grpc.health.v1.Health");
        for name in service_names {
            b = b.with_service_name(*name);
        }
        b
    };
    let reflection_v1 = reflection()
        .with_service_name("grpc.reflection.v1.ServerReflection")
        .build_v1()?;
    let reflection_v1alpha = reflection()
        .with_service_name("grpc.reflection.v1alpha.ServerReflection")
        .build_v1alpha()?;

    let routes = routes
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);

    if let Some(path) = &args.addr_file {
        write_addr_file(path, local)?;
    }
    tracing::info!(addr = %local, "listening");

    let names: Vec<String> = service_names.iter().map(|s| s.to_string()).collect();
    let shutdown = async move {
        until.await;
        // Tell load balancers first, so no new calls arrive while draining.
        for name in names.iter().chain(std::iter::once(&String::new())) {
            health
                .set_service_status(name, tonic_health::ServingStatus::NotServing)
                .await;
        }
    };
    let metrics = match &args.metrics {
        Some(metrics) => metrics.clone(),
        None => ServerMetrics::new()?,
    };
    let server = tonic::transport::Server::builder()
        // gRPC-Web comes over HTTP/1.1 as well.
        .accept_http1(args.web.is_some())
        .layer(web::WebLayer(args.web.clone()))
        .layer(metrics.layer(service_names))
        .add_routes(routes);
    match tls {
        None => {
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            server
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await?;
        }
        Some(tls) => {
            let (tx, rx) = tokio::sync::mpsc::channel(64);
            let accept = tokio::spawn(accept_tls(listener, tls, tx));
            let served = server
                .serve_with_incoming_shutdown(ReceiverStream::new(rx), shutdown)
                .await;
            accept.abort();
            served?;
        }
    }
    tracing::info!("stopped");
    Ok(())
}

type TlsConnection = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;

/// Accepts connections and hands each to the server once its handshake
/// completed (handshakes run concurrently, so a slow or silent peer holds
/// up no one).
async fn accept_tls(
    listener: TcpListener,
    tls: Arc<ServerTls>,
    tx: tokio::sync::mpsc::Sender<std::io::Result<TlsConnection>>,
) {
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                let _ = tcp.set_nodelay(true);
                let (tls, tx) = (tls.clone(), tx.clone());
                tokio::spawn(async move {
                    match tls.accept(tcp).await {
                        Ok(stream) => {
                            let _ = tx.send(Ok(stream)).await;
                        }
                        Err(e) => {
                            tracing::info!(%peer, error = %e, "connection refused: TLS handshake failed");
                        }
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot accept a connection");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// Writes atomically, so a reader never sees a half-written address.
fn write_addr_file(path: &std::path::Path, addr: SocketAddr) -> Result<(), ServeError> {
    let err = |source| ServeError::AddrFile {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, addr.to_string()).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// Resolves on the first SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the server");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
