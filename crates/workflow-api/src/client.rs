//! Connecting to Temporal the same way from every Keel process.

use std::str::FromStr;
use std::time::Duration;

use temporalio_client::{Client, ClientOptions, Connection, ConnectionOptions, Url};

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
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
}

impl TemporalArgs {
    /// Connects as `identity` (see [`connect`]).
    pub async fn connect(
        &self,
        identity: String,
        patience: Duration,
    ) -> Result<Client, ConnectError> {
        connect(&self.temporal_address, &self.namespace, identity, patience).await
    }
}

/// Connects to `address` (`host:port` or a URL), retrying with back-off for
/// up to `patience`: in a fresh stack, or across a Temporal restart, the
/// server may still be starting.
pub async fn connect(
    address: &str,
    namespace: &str,
    identity: String,
    patience: Duration,
) -> Result<Client, ConnectError> {
    let url = if address.contains("://") {
        address.to_string()
    } else {
        format!("http://{address}")
    };
    let url = Url::from_str(&url).map_err(|e| ConnectError::InvalidAddress {
        address: address.into(),
        reason: e.to_string(),
    })?;
    let started = tokio::time::Instant::now();
    let mut delay = Duration::from_millis(100);
    loop {
        let opts = ConnectionOptions::new(url.clone())
            .identity(identity.clone())
            .build();
        let err = match Connection::connect(opts).await {
            Ok(conn) => {
                return Client::new(conn, ClientOptions::new(namespace).build()).map_err(|e| {
                    ConnectError::InvalidAddress {
                        address: address.into(),
                        reason: e.to_string(),
                    }
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
