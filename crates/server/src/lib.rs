//! What every Keel gRPC server does the same way: bind, serve grpc.health.v1 and
//! reflection (v1 and v1alpha), log with `tracing`, and drain on SIGTERM/SIGINT.
//! A service's `main` parses its flags, builds its service and calls [`serve`].

use std::net::SocketAddr;
use std::path::PathBuf;

use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;

mod hardening;
mod logging;

pub use hardening::protect_process;
pub use logging::{LogFormat, init_tracing};

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
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, async move {
            shutdown_signal().await;
            tracing::info!("shutdown signal received, draining");
            // Tell load balancers first, so no new calls arrive while draining.
            for name in names.iter().chain(std::iter::once(&String::new())) {
                health
                    .set_service_status(name, tonic_health::ServingStatus::NotServing)
                    .await;
            }
        })
        .await?;
    tracing::info!("stopped");
    Ok(())
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
