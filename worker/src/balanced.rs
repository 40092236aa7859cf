//! Client-side load balancing for stateless services (the model-proxy):
//! every address the configured names resolve to (a headless Service has
//! one per ready pod) is a lazily connected channel, and each request goes
//! to the less loaded of two random ones (tower's power-of-two-choices
//! balancer over pending requests — what tonic's own `balance_channel`
//! does, here over Keel's mutual-TLS channels). The names are resolved
//! again periodically, so replicas that start or stop are found, and each
//! replica's health is checked each time: only those answering SERVING are
//! balanced over (a replica that died or drains leaves within a period).

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::body::Body;
use tonic::transport::Channel;
use tower::ServiceExt as _;
use tower::balance::p2c::Balance;
use tower::buffer::Buffer;
use tower::discover::Change;
use tower::load::{CompleteOnResponse, PendingRequestsDiscover};
use tower::util::BoxCloneSyncService;

use crate::targets::{AddressError, ReplicaKey, Target, resolve_all, serving, update};

/// Requests waiting for a replica, per client.
const BUFFER: usize = 1024;

/// A gRPC channel over every replica of the names.
pub type BalancedChannel =
    BoxCloneSyncService<http::Request<Body>, http::Response<Body>, BalanceError>;

/// Why a balanced request failed: the replica's error (a transport error,
/// found by tonic in the source chain), or the balancer's. A concrete type
/// rather than a boxed one, so the clients' futures stay `Send` in every
/// context (a boxed `dyn Error` trips a higher-ranked lifetime check).
#[derive(Debug)]
pub struct BalanceError(tower::BoxError);

impl std::fmt::Display for BalanceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for BalanceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

type Key = ReplicaKey;

/// The channel, and the task that keeps its replica set current (every
/// `every`, from now on).
pub fn balanced(
    names: &[String],
    tls: Option<Arc<keel_server::ClientTls>>,
    every: Duration,
) -> Result<BalancedChannel, AddressError> {
    let targets = Target::parse_all(names)?;
    let (changes, discovered) = mpsc::channel::<Result<Change<Key, Channel>, Infallible>>(64);
    let discover = PendingRequestsDiscover::new::<http::Request<Body>>(
        ReceiverStream::new(discovered),
        CompleteOnResponse::default(),
    );
    let balance: Balance<_, http::Request<Body>> = Balance::new(discover);
    let service = BoxCloneSyncService::new(
        Buffer::new(balance, BUFFER).map_err(BalanceError as fn(tower::BoxError) -> BalanceError),
    );
    tokio::spawn(keep_resolving(targets, tls, every, changes));
    Ok(service)
}

async fn keep_resolving(
    targets: Vec<Target>,
    tls: Option<Arc<keel_server::ClientTls>>,
    every: Duration,
    changes: mpsc::Sender<Result<Change<Key, Channel>, Infallible>>,
) {
    // Every address the names resolve to, and those in the balancer now
    // (the ones that answered SERVING at the last look).
    let mut channels: BTreeMap<Key, Channel> = BTreeMap::new();
    let mut balanced: BTreeSet<Key> = BTreeSet::new();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let resolved = resolve_all(&targets).await;
        update(&targets, resolved, tls.as_ref(), &mut channels, |channel| {
            channel
        });
        let checks = channels
            .iter()
            .map(|(key, channel)| async move { (*key, serving(channel).await) });
        let healthy: BTreeSet<Key> = futures::future::join_all(checks)
            .await
            .into_iter()
            .filter_map(|(key, ok)| ok.then_some(key))
            .collect();
        let gone: Vec<Key> = balanced.difference(&healthy).copied().collect();
        for key in gone {
            tracing::info!(replica = %key.1, "replica left the balancer (gone, down or draining)");
            balanced.remove(&key);
            if changes.send(Ok(Change::Remove(key))).await.is_err() {
                return;
            }
        }
        for key in healthy {
            if balanced.contains(&key) {
                continue;
            }
            let Some(channel) = channels.get(&key) else {
                continue;
            };
            tracing::info!(replica = %key.1, "replica joined the balancer");
            balanced.insert(key);
            if changes
                .send(Ok(Change::Insert(key, channel.clone())))
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use tonic_health::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    /// A server whose health service reports the whole server as
    /// `server` and the service "who" as `who`, so answers show which
    /// server gave them. Returns the address and the reporter.
    async fn serve(
        server: ServingStatus,
        who: ServingStatus,
    ) -> (SocketAddr, tonic_health::server::HealthReporter) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter.set_service_status("", server).await;
        reporter.set_service_status("who", who).await;
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        (addr, reporter)
    }

    async fn who(client: &mut HealthClient<BalancedChannel>, n: usize) -> BTreeMap<i32, usize> {
        let mut seen = BTreeMap::new();
        for _ in 0..n {
            let status = client
                .check(tonic_health::pb::HealthCheckRequest {
                    service: "who".into(),
                })
                .await
                .unwrap()
                .into_inner()
                .status;
            *seen.entry(status).or_default() += 1;
        }
        seen
    }

    #[tokio::test]
    async fn requests_spread_over_serving_replicas_only() {
        use tonic_health::pb::health_check_response::ServingStatus as Wire;
        let (a, _a) = serve(ServingStatus::Serving, ServingStatus::Serving).await;
        let (b, _b) = serve(ServingStatus::Serving, ServingStatus::NotServing).await;
        // Down (or draining): it must get nothing while it says so.
        let (c, c_health) = serve(ServingStatus::NotServing, ServingStatus::Unknown).await;
        let channel = balanced(
            &[a.to_string(), b.to_string(), c.to_string()],
            None,
            Duration::from_millis(50),
        )
        .unwrap();
        let mut client = HealthClient::new(channel);
        let seen = who(&mut client, 200).await;
        assert!(
            !seen.contains_key(&(Wire::Unknown as i32)),
            "a replica that is not serving got requests: {seen:?}"
        );
        assert!(
            seen.get(&(Wire::Serving as i32)).is_some_and(|n| *n >= 20)
                && seen
                    .get(&(Wire::NotServing as i32))
                    .is_some_and(|n| *n >= 20),
            "both serving replicas answered: {seen:?}"
        );
        // It comes back: it joins within a refresh.
        c_health
            .set_service_status("", ServingStatus::Serving)
            .await;
        let joined = async {
            loop {
                if who(&mut client, 20)
                    .await
                    .contains_key(&(Wire::Unknown as i32))
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), joined)
            .await
            .expect("the replica joined the balancer");
    }
}
