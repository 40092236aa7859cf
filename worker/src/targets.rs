//! Service names a worker resolves itself: each names a set of replicas (a
//! headless Kubernetes Service has an address per ready pod), resolved
//! again and again as replicas come and go.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

/// A configured address that is not `host:port` or `http(s)://host:port`.
#[derive(Debug, thiserror::Error)]
#[error("invalid service address {0:?}: expected host:port or http(s)://host:port")]
pub struct AddressError(String);

/// One configured name, e.g. `session-api-headless:50051`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) scheme: &'static str,
    pub(crate) host_port: String,
}

impl Target {
    pub(crate) fn parse(addr: &str) -> Result<Self, AddressError> {
        let (scheme, rest) = match addr.split_once("://") {
            Some(("http", rest)) => ("http", rest),
            Some(("https", rest)) => ("https", rest),
            Some(_) => return Err(AddressError(addr.to_string())),
            None => ("http", addr),
        };
        let rest = rest.trim_end_matches('/');
        let valid = rest
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !valid || rest.contains('/') {
            return Err(AddressError(addr.to_string()));
        }
        Ok(Self {
            scheme,
            host_port: rest.to_string(),
        })
    }

    /// Every configured name, checked.
    pub(crate) fn parse_all(names: &[String]) -> Result<Vec<Self>, AddressError> {
        names.iter().map(|n| Self::parse(n)).collect()
    }

    /// A lazily connecting channel to one of the name's addresses.
    pub(crate) fn channel(
        &self,
        addr: SocketAddr,
        tls: Option<&Arc<keel_server::ClientTls>>,
    ) -> Result<Channel, tonic::transport::Error> {
        match tls {
            // The certificate names the configured host, not the address it
            // resolved to.
            Some(tls) => {
                let host = self.host_port.rsplit_once(':').map(|(host, _)| {
                    host.trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_string()
                });
                keel_server::ClientTls::lazy_channel(Some(tls), &addr.to_string(), host)
            }
            None => Endpoint::from_shared(format!("{}://{addr}", self.scheme)).map(|e| {
                keel_server::keep_alive(e.connect_timeout(Duration::from_secs(5)).tcp_nodelay(true))
                    .connect_lazy()
            }),
        }
    }

    /// Every address the name resolves to now.
    pub(crate) async fn resolve(&self) -> std::io::Result<std::collections::BTreeSet<SocketAddr>> {
        Ok(tokio::net::lookup_host(&self.host_port).await?.collect())
    }
}

/// A replica: the index of the configured name it came from, and its
/// address.
pub(crate) type ReplicaKey = (usize, SocketAddr);

/// What each name resolves to now; `None` where it does not resolve (it
/// keeps the replicas it had).
pub(crate) async fn resolve_all(targets: &[Target]) -> Vec<Option<BTreeSet<SocketAddr>>> {
    let mut out = Vec::with_capacity(targets.len());
    for target in targets {
        out.push(match target.resolve().await {
            Ok(addrs) => Some(addrs),
            Err(e) => {
                tracing::warn!(name = %target.host_port, error = %e, "cannot resolve");
                None
            }
        });
    }
    out
}

/// Brings `replicas` in line with `resolved` (from [`resolve_all`]):
/// addresses that went are dropped, new ones get `make` of a lazily
/// connecting channel.
pub(crate) fn update<T>(
    targets: &[Target],
    resolved: Vec<Option<BTreeSet<SocketAddr>>>,
    tls: Option<&Arc<keel_server::ClientTls>>,
    replicas: &mut BTreeMap<ReplicaKey, T>,
    make: impl Fn(Channel) -> T,
) {
    for (index, (target, addrs)) in targets.iter().zip(resolved).enumerate() {
        let Some(addrs) = addrs else {
            continue;
        };
        replicas.retain(|(t, addr), _| *t != index || addrs.contains(addr));
        for addr in addrs {
            if replicas.contains_key(&(index, addr)) {
                continue;
            }
            match target.channel(addr, tls) {
                Ok(channel) => {
                    tracing::info!(name = %target.host_port, replica = %addr, "replica found");
                    replicas.insert((index, addr), make(channel));
                }
                Err(e) => {
                    tracing::warn!(name = %target.host_port, error = %e, "invalid replica address")
                }
            }
        }
    }
}

/// Runs `f` every `every` from now on, in the background (the first run
/// one period from now).
pub(crate) fn repeat<F, Fut>(every: Duration, mut f: F)
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            f().await;
        }
    });
}

/// How long a replica may take to answer a health check.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether the replica behind `channel` answers grpc.health.v1 SERVING for
/// the whole server: a replica that is down, or draining (it reports
/// NOT_SERVING from its shutdown signal on), gets no new requests.
pub(crate) async fn serving(channel: &Channel) -> bool {
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let mut request = tonic::Request::new(tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    });
    request.set_timeout(HEALTH_TIMEOUT);
    matches!(
        tokio::time::timeout(HEALTH_TIMEOUT, health.check(request)).await,
        Ok(Ok(r)) if r.get_ref().status
            == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            Target::parse("session-api:50051").unwrap(),
            Target {
                scheme: "http",
                host_port: "session-api:50051".into()
            }
        );
        assert_eq!(
            Target::parse("https://[::1]:7/").unwrap(),
            Target {
                scheme: "https",
                host_port: "[::1]:7".into()
            }
        );
        for bad in [
            "session-api",
            "ftp://x:1",
            "x:port",
            ":80",
            "http://x:1/path",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }
}
