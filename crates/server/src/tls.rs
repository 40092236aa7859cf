//! Mutual TLS between Keel's services.
//!
//! Each service presents a certificate signed by Keel's CA and checks its
//! peer's: the worker's calls to the tool-runner, model-proxy, mcp-broker
//! and session-api's internal listener are accepted only with a client
//! certificate that chains to the CA *and* names an allowed peer (a DNS
//! subject alternative name, `keel-worker` by default). A sandboxed command
//! that reaches these ports over the network has no such certificate, so the
//! handshake fails before any gRPC.
//!
//! The files are read again when they change (checked at most once a
//! second, on the next connection), so certificates can be rotated without
//! restarts; a rotation that does not load is logged and the previous
//! configuration stays.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use tokio::net::TcpStream;

/// The name a worker's certificate carries (a DNS subject alternative
/// name), which the services it calls require by default.
pub const WORKER_NAME: &str = "keel-worker";
/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often, at most, the files are checked for changes.
const RECHECK: Duration = Duration::from_secs(1);

/// Mutual TLS flags, shared by every process that talks to another Keel
/// service.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PeerTlsArgs {
    /// This process's certificate chain (PEM), signed by --tls-ca.
    #[arg(long, env = "KEEL_TLS_CERT", value_name = "PEM", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "KEEL_TLS_KEY", value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The CA that signs Keel's service certificates (PEM); peers must
    /// present a certificate that chains to it.
    #[arg(long, env = "KEEL_TLS_CA", value_name = "PEM", requires = "tls_cert")]
    pub tls_ca: Option<PathBuf>,
    /// Names (DNS subject alternative names) a client certificate must carry
    /// one of, for a server; comma-separated. Default: `keel-worker`.
    #[arg(
        long,
        env = "KEEL_TLS_PEER_NAMES",
        value_delimiter = ',',
        value_name = "NAME"
    )]
    pub tls_peer_name: Vec<String>,
    /// Talk to other Keel services in plaintext, without certificates: any
    /// process that reaches the port (a sandboxed command with network
    /// access included) can call it. For tests and trusted single-user
    /// hosts only.
    #[arg(long, env = "KEEL_INSECURE_PLAINTEXT", conflicts_with = "tls_cert")]
    pub insecure_plaintext: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "no certificates: pass --tls-cert, --tls-key and --tls-ca (mutual TLS between Keel's services), or --insecure-plaintext"
    )]
    Missing,
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("invalid TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("invalid peer name {0:?}")]
    PeerName(String),
}

/// The three files, as last loaded.
#[derive(Debug, Clone)]
struct Files {
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

type Stamp = Vec<Option<(SystemTime, u64)>>;

impl Files {
    fn stamp(&self) -> Stamp {
        [&self.cert, &self.key, &self.ca]
            .iter()
            .map(|p| {
                std::fs::metadata(p)
                    .ok()
                    .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
            })
            .collect()
    }

    fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_path_buf(),
            source,
        })
    }

    fn chain(&self) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        certs(&self.cert, &Self::read(&self.cert)?)
    }

    fn key(&self) -> Result<PrivateKeyDer<'static>, TlsError> {
        PrivateKeyDer::from_pem_slice(&Self::read(&self.key)?).map_err(|e| TlsError::Invalid {
            path: self.key.clone(),
            reason: format!("no private key: {e}"),
        })
    }

    fn roots(&self) -> Result<Arc<rustls::RootCertStore>, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in certs(&self.ca, &Self::read(&self.ca)?)? {
            roots.add(cert).map_err(|e| TlsError::Invalid {
                path: self.ca.clone(),
                reason: e.to_string(),
            })?;
        }
        Ok(Arc::new(roots))
    }
}

fn certs(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Invalid {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Invalid {
            path: path.to_path_buf(),
            reason: "no certificate in it".into(),
        });
    }
    Ok(certs)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A configuration built from files, built again when they change.
struct Reloading<T> {
    files: Files,
    build: fn(&Files, &[String]) -> Result<Arc<T>, TlsError>,
    names: Vec<String>,
    state: Mutex<(Stamp, Instant, Arc<T>)>,
}

impl<T> Reloading<T> {
    fn new(
        files: Files,
        names: Vec<String>,
        build: fn(&Files, &[String]) -> Result<Arc<T>, TlsError>,
    ) -> Result<Self, TlsError> {
        let stamp = files.stamp();
        let config = build(&files, &names)?;
        Ok(Self {
            files,
            build,
            names,
            state: Mutex::new((stamp, Instant::now(), config)),
        })
    }

    fn current(&self) -> Arc<T> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.1.elapsed() >= RECHECK {
            state.1 = Instant::now();
            let stamp = self.files.stamp();
            if stamp != state.0 {
                state.0 = stamp;
                match (self.build)(&self.files, &self.names) {
                    Ok(config) => {
                        tracing::info!(cert = %self.files.cert.display(), "TLS certificates reloaded");
                        state.2 = config;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot reload the TLS certificates; keeping the ones loaded before");
                    }
                }
            }
        }
        state.2.clone()
    }
}

impl PeerTlsArgs {
    /// Mutual TLS with these files.
    pub fn with_files(cert: &Path, key: &Path, ca: &Path) -> Self {
        Self {
            tls_cert: Some(cert.to_path_buf()),
            tls_key: Some(key.to_path_buf()),
            tls_ca: Some(ca.to_path_buf()),
            ..Default::default()
        }
    }

    fn files(&self) -> Option<Files> {
        Some(Files {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            ca: self.tls_ca.clone()?,
        })
    }

    /// A server's side: mutual TLS, or plaintext when asked for explicitly
    /// (logged). Client certificates must name one of `--tls-peer-name`
    /// (default [`WORKER_NAME`]).
    pub fn server(&self, what: &str) -> Result<Option<Arc<ServerTls>>, TlsError> {
        let Some(files) = self.files() else {
            if self.insecure_plaintext {
                tracing::warn!(
                    "INSECURE: --insecure-plaintext: {what} accepts calls without TLS from anyone who reaches its port"
                );
                return Ok(None);
            }
            return Err(TlsError::Missing);
        };
        let names = if self.tls_peer_name.is_empty() {
            vec![WORKER_NAME.to_string()]
        } else {
            self.tls_peer_name.clone()
        };
        for name in &names {
            ServerName::try_from(name.as_str()).map_err(|_| TlsError::PeerName(name.clone()))?;
        }
        Ok(Some(Arc::new(ServerTls {
            config: Reloading::new(files, names, server_config)?,
        })))
    }

    /// A client's side: mutual TLS, or plaintext when asked for explicitly
    /// (logged).
    pub fn client(&self) -> Result<Option<Arc<ClientTls>>, TlsError> {
        let Some(files) = self.files() else {
            if self.insecure_plaintext {
                tracing::warn!(
                    "INSECURE: --insecure-plaintext: calls to Keel's services go without TLS or a client certificate"
                );
                return Ok(None);
            }
            return Err(TlsError::Missing);
        };
        Ok(Some(Arc::new(ClientTls {
            config: Reloading::new(files, Vec::new(), client_config)?,
        })))
    }
}

fn server_config(files: &Files, names: &[String]) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let inner =
        rustls::server::WebPkiClientVerifier::builder_with_provider(files.roots()?, provider())
            .build()
            .map_err(|e| TlsError::Invalid {
                path: files.ca.clone(),
                reason: e.to_string(),
            })?;
    let verifier = Arc::new(NamedClients {
        inner,
        names: names.to_vec(),
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(files.chain()?, files.key()?)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

fn client_config(files: &Files, _: &[String]) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(files.roots()?)
        .with_client_auth_cert(files.chain()?, files.key()?)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Client certificates must chain to the CA (the inner verifier) and name
/// one of the allowed peers.
#[derive(Debug)]
struct NamedClients {
    inner: Arc<dyn ClientCertVerifier>,
    names: Vec<String>,
}

impl ClientCertVerifier for NamedClients {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|e| rustls::Error::General(format!("unreadable client certificate: {e}")))?;
        let named = self.names.iter().any(|name| {
            ServerName::try_from(name.as_str())
                .is_ok_and(|n| cert.verify_is_valid_for_subject_name(&n).is_ok())
        });
        if !named {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName,
            ));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A server's mutual TLS.
pub struct ServerTls {
    config: Reloading<rustls::ServerConfig>,
}

impl ServerTls {
    /// Completes the handshake on an accepted connection.
    pub async fn accept(
        &self,
        tcp: TcpStream,
    ) -> io::Result<tokio_rustls::server::TlsStream<TcpStream>> {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.config.current());
        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))?
    }
}

/// A client's mutual TLS.
pub struct ClientTls {
    config: Reloading<rustls::ClientConfig>,
}

impl ClientTls {
    /// A connector for [`tonic::transport::Endpoint::connect_with_connector`]:
    /// TCP to the URI's host and port, then TLS checking the server's
    /// certificate against `server_name` (default: the URI's host).
    pub fn connector(self: &Arc<Self>, server_name: Option<String>) -> TlsConnector {
        TlsConnector {
            tls: self.clone(),
            server_name,
        }
    }

    /// A channel to `addr` (`host:port` or `http(s)://host:port`) that
    /// connects on first use, over TLS when `tls` is set.
    pub fn lazy_channel(
        tls: Option<&Arc<Self>>,
        addr: &str,
        server_name: Option<String>,
    ) -> Result<tonic::transport::Channel, tonic::transport::Error> {
        let host_port = addr.split_once("://").map(|(_, rest)| rest).unwrap_or(addr);
        let endpoint = keep_alive(
            tonic::transport::Endpoint::from_shared(format!("http://{host_port}"))?
                .connect_timeout(Duration::from_secs(5))
                .tcp_nodelay(true),
        );
        Ok(match tls {
            Some(tls) => endpoint.connect_with_connector_lazy(tls.connector(server_name)),
            None => endpoint.connect_lazy(),
        })
    }
}

/// HTTP/2 pings on a channel, also while it carries no call: a peer whose
/// host vanished without closing the connection (a lost node) is noticed
/// within about half a minute, instead of when a long call's deadline
/// passes.
pub fn keep_alive(endpoint: tonic::transport::Endpoint) -> tonic::transport::Endpoint {
    endpoint
        .http2_keep_alive_interval(Duration::from_secs(15))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true)
}

/// See [`ClientTls::connector`].
#[derive(Clone)]
pub struct TlsConnector {
    tls: Arc<ClientTls>,
    server_name: Option<String>,
}

type Connected = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;

impl tower_service::Service<tonic::codegen::http::Uri> for TlsConnector {
    type Response = Connected;
    type Error = io::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = io::Result<Connected>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: tonic::codegen::http::Uri) -> Self::Future {
        let tls = self.tls.clone();
        let name_override = self.server_name.clone();
        Box::pin(async move {
            let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidInput, what);
            let host = uri
                .host()
                .ok_or_else(|| invalid(format!("{uri}: no host")))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri
                .port_u16()
                .ok_or_else(|| invalid(format!("{uri}: no port")))?;
            let name = name_override.unwrap_or_else(|| host.clone());
            let server_name = ServerName::try_from(name.clone())
                .map_err(|_| invalid(format!("{name:?} is not a valid TLS server name")))?;
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
                .await?
                .collect();
            let mut last = None;
            for addr in addrs {
                match TcpStream::connect(addr).await {
                    Ok(tcp) => {
                        tcp.set_nodelay(true)?;
                        let connector = tokio_rustls::TlsConnector::from(tls.config.current());
                        let stream = tokio::time::timeout(
                            HANDSHAKE_TIMEOUT,
                            connector.connect(server_name, tcp),
                        )
                        .await
                        .map_err(|_| {
                            io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")
                        })??;
                        return Ok(hyper_util::rt::TokioIo::new(stream));
                    }
                    Err(e) => last = Some(e),
                }
            }
            Err(last.unwrap_or_else(|| invalid(format!("{host} resolves to no address"))))
        })
    }
}

#[cfg(test)]
mod tests;
