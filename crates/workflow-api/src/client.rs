//! Connecting to Temporal the same way from every Keel process.

use std::str::FromStr;
use std::time::Duration;

use std::path::PathBuf;

use temporalio_client::{
    Client, ClientOptions, ClientTlsOptions, Connection, ConnectionOptions, ErasedClientPlugin,
    TlsOptions, Url,
};

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("Temporal connection settings: {0}")]
    Config(String),
    #[error("invalid Temporal address {address:?}: {reason}")]
    InvalidAddress { address: String, reason: String },
    #[error("cannot connect to Temporal at {address} (gave up after {waited:?}): {reason}")]
    Unreachable {
        address: String,
        waited: Duration,
        reason: String,
    },
}

/// Where the session workflows live: the flags (and variables) of every
/// process that talks to Temporal.
#[derive(Debug, Clone, clap::Args)]
pub struct TemporalArgs {
    /// Temporal frontend: host:port, or a URL.
    #[arg(long, env = "TEMPORAL_ADDRESS", default_value = "127.0.0.1:7233")]
    pub temporal_address: String,
    /// Temporal namespace of the sessions.
    #[arg(long, env = "TEMPORAL_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// Task queue of the session workflows and their activities.
    #[arg(long, env = "KEEL_TASK_QUEUE", default_value = crate::DEFAULT_TASK_QUEUE)]
    pub task_queue: String,
    /// Talk TLS to Temporal, verifying its certificate against the system's
    /// roots (or --temporal-tls-ca). Implied by the other --temporal-tls-*
    /// flags and by an API key. (The environment names are the Temporal
    /// CLI's.)
    #[arg(long, env = "TEMPORAL_TLS")]
    pub temporal_tls: bool,
    /// The CA of Temporal's server certificate (PEM).
    #[arg(long, env = "TEMPORAL_TLS_CA_PATH", value_name = "PEM")]
    pub temporal_tls_ca: Option<PathBuf>,
    /// The name Temporal's certificate must carry, when it is not the
    /// address's host.
    #[arg(long, env = "TEMPORAL_TLS_SERVER_NAME", value_name = "NAME")]
    pub temporal_tls_server_name: Option<String>,
    /// A client certificate for mutual TLS with Temporal (PEM; read at
    /// start).
    #[arg(
        long,
        env = "TEMPORAL_TLS_CERT_PATH",
        value_name = "PEM",
        requires = "temporal_tls_key"
    )]
    pub temporal_tls_cert: Option<PathBuf>,
    /// The private key of --temporal-tls-cert (PEM).
    #[arg(
        long,
        env = "TEMPORAL_TLS_KEY_PATH",
        value_name = "PEM",
        requires = "temporal_tls_cert"
    )]
    pub temporal_tls_key: Option<PathBuf>,
    /// A file holding a Temporal API key (Temporal Cloud), sent as a bearer
    /// token over TLS. The TEMPORAL_API_KEY environment variable works too.
    #[arg(long, env = "TEMPORAL_API_KEY_PATH", value_name = "FILE")]
    pub temporal_api_key_file: Option<PathBuf>,
}

/// How to reach Temporal beyond its address, and the client's plugins.
#[derive(Clone, Default)]
pub struct Security {
    pub tls: Option<TlsOptions>,
    pub api_key: Option<String>,
    pub plugins: Vec<ErasedClientPlugin>,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("tls", &self.tls)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("plugins", &self.plugins.len())
            .finish()
    }
}

impl TemporalArgs {
    /// The TLS settings and API key the flags name, read from their files.
    pub fn security(&self) -> Result<Security, ConnectError> {
        let read = |path: &PathBuf| {
            std::fs::read(path)
                .map_err(|e| ConnectError::Config(format!("cannot read {}: {e}", path.display())))
        };
        let api_key = match (
            &self.temporal_api_key_file,
            std::env::var("TEMPORAL_API_KEY"),
        ) {
            (Some(path), _) => Some(String::from_utf8_lossy(&read(path)?).trim().to_string()),
            (None, Ok(key)) if !key.trim().is_empty() => Some(key.trim().to_string()),
            _ => None,
        };
        let tls = self.temporal_tls
            || self.temporal_tls_ca.is_some()
            || self.temporal_tls_cert.is_some()
            || self.temporal_tls_server_name.is_some()
            || api_key.is_some();
        if !tls {
            return Ok(Security::default());
        }
        let client_tls_options = match (&self.temporal_tls_cert, &self.temporal_tls_key) {
            (Some(cert), Some(key)) => Some(
                ClientTlsOptions::builder()
                    .client_cert(read(cert)?)
                    .client_private_key(read(key)?)
                    .build(),
            ),
            _ => None,
        };
        let options = TlsOptions::builder()
            .maybe_server_root_ca_cert(self.temporal_tls_ca.as_ref().map(read).transpose()?)
            .maybe_domain(self.temporal_tls_server_name.clone())
            .maybe_client_tls_options(client_tls_options)
            .build();
        Ok(Security {
            tls: Some(options),
            api_key,
            plugins: Vec::new(),
        })
    }

    /// Connects as `identity` (see [`connect_with`]).
    pub async fn connect(
        &self,
        identity: String,
        patience: Duration,
    ) -> Result<Client, ConnectError> {
        self.connect_with_plugins(identity, patience, Vec::new())
            .await
    }

    /// [`Self::connect`], with client plugins (the Temporal SDK's tracing
    /// plugin, when traces are exported).
    pub async fn connect_with_plugins(
        &self,
        identity: String,
        patience: Duration,
        plugins: Vec<ErasedClientPlugin>,
    ) -> Result<Client, ConnectError> {
        let security = Security {
            plugins,
            ..self.security()?
        };
        connect_with(
            &self.temporal_address,
            &self.namespace,
            identity,
            patience,
            &security,
        )
        .await
    }
}

/// Connects to `address` (`host:port` or a URL) in plaintext; see
/// [`connect_with`].
pub async fn connect(
    address: &str,
    namespace: &str,
    identity: String,
    patience: Duration,
) -> Result<Client, ConnectError> {
    connect_with(address, namespace, identity, patience, &Security::default()).await
}

/// Connects to `address` (`host:port` or a URL), retrying with back-off for
/// up to `patience`: in a fresh stack, or across a Temporal restart, the
/// server may still be starting.
pub async fn connect_with(
    address: &str,
    namespace: &str,
    identity: String,
    patience: Duration,
    security: &Security,
) -> Result<Client, ConnectError> {
    let scheme = if security.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let url = match address.split_once("://") {
        Some((_, rest)) => format!("{scheme}://{rest}"),
        None => format!("{scheme}://{address}"),
    };
    let url = Url::from_str(&url).map_err(|e| ConnectError::InvalidAddress {
        address: address.into(),
        reason: e.to_string(),
    })?;
    let started = tokio::time::Instant::now();
    let mut delay = Duration::from_millis(100);
    loop {
        let mut opts = ConnectionOptions::new(url.clone())
            .identity(identity.clone())
            .build();
        opts.tls_options = security.tls.clone();
        opts.api_key = security.api_key.clone();
        let err = match Connection::connect(opts).await {
            Ok(conn) => {
                let options = ClientOptions::new(namespace)
                    .plugins(security.plugins.iter().cloned())
                    .build();
                return Client::new(conn, options).map_err(|e| ConnectError::InvalidAddress {
                    address: address.into(),
                    reason: e.to_string(),
                });
            }
            Err(e) => e.to_string(),
        };
        if started.elapsed() >= patience {
            return Err(ConnectError::Unreachable {
                address: address.into(),
                waited: started.elapsed(),
                reason: err,
            });
        }
        tracing::warn!(error = %err, %address, "Temporal not reachable yet; retrying");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        temporal: TemporalArgs,
    }

    fn args(flags: &[&str]) -> TemporalArgs {
        Cli::try_parse_from(std::iter::once("x").chain(flags.iter().copied()))
            .unwrap()
            .temporal
    }

    #[test]
    fn tls_and_keys_come_from_the_flags() {
        // No flags: plaintext (the variable is the only other way in).
        if std::env::var_os("TEMPORAL_API_KEY").is_none() {
            let plain = args(&[]).security().unwrap();
            assert!(plain.tls.is_none() && plain.api_key.is_none());
        }
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "secret-key\n").unwrap();
        let with_key = args(&["--temporal-api-key-file", key.to_str().unwrap()])
            .security()
            .unwrap();
        assert_eq!(with_key.api_key.as_deref(), Some("secret-key"));
        assert!(with_key.tls.is_some(), "an API key implies TLS");
        let named = args(&["--temporal-tls-server-name", "x.tmprl.cloud"])
            .security()
            .unwrap();
        assert_eq!(named.tls.unwrap().domain.as_deref(), Some("x.tmprl.cloud"));
        let missing = args(&["--temporal-tls-ca", "/no/such/ca.pem"]).security();
        assert!(matches!(missing, Err(ConnectError::Config(m)) if m.contains("/no/such/ca.pem")));
        // A certificate needs its key.
        assert!(
            Cli::try_parse_from(["x", "--temporal-tls-cert", "/c.pem"]).is_err(),
            "--temporal-tls-cert without --temporal-tls-key"
        );
    }
}
