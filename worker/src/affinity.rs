//! Session affinity for a replicated stateful service (the mcp-broker,
//! whose MCP connections and waiting calls live in its memory): every
//! address the configured names resolve to is a replica, and a session
//! always goes to the same one — the highest rendezvous hash of (session,
//! address) — as long as the replica set stays the same. When a replica
//! goes, only its sessions move; when one comes, about 1/N of the sessions
//! move to it (their MCP servers start again there, as after a broker
//! restart). Only replicas answering grpc.health.v1 SERVING count, checked
//! at every resolution.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tonic::transport::Channel;

use crate::targets::{AddressError, ReplicaKey, Target, resolve_all, serving, update};

/// See the module documentation; cheap to clone.
#[derive(Clone)]
pub struct Affine {
    inner: Arc<Inner>,
}

struct Inner {
    targets: Vec<Target>,
    tls: Option<Arc<keel_server::ClientTls>>,
    channels: RwLock<BTreeMap<ReplicaKey, Channel>>,
    /// The replicas that answered SERVING at the last look.
    healthy: RwLock<BTreeMap<ReplicaKey, Channel>>,
}

impl Affine {
    /// Checks the names; nothing is resolved until [`Affine::refresh`].
    pub fn new(
        names: &[String],
        tls: Option<Arc<keel_server::ClientTls>>,
    ) -> Result<Self, AddressError> {
        let targets = Target::parse_all(names)?;
        Ok(Self {
            inner: Arc::new(Inner {
                targets,
                tls,
                channels: RwLock::new(BTreeMap::new()),
                healthy: RwLock::new(BTreeMap::new()),
            }),
        })
    }

    /// Resolves the names now (a name that does not resolve keeps its
    /// replicas) and checks each replica's health: sessions go only to
    /// replicas answering SERVING.
    pub async fn refresh(&self) {
        let resolved = resolve_all(&self.inner.targets).await;
        update(
            &self.inner.targets,
            resolved,
            self.inner.tls.as_ref(),
            &mut self
                .inner
                .channels
                .write()
                .unwrap_or_else(|p| p.into_inner()),
            |channel| channel,
        );
        let all: Vec<(ReplicaKey, Channel)> = self
            .inner
            .channels
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, c)| (*k, c.clone()))
            .collect();
        let checked = futures::future::join_all(all.into_iter().map(|(key, channel)| async move {
            serving(&channel).await.then_some((key, channel))
        }))
        .await;
        let healthy: BTreeMap<_, _> = checked.into_iter().flatten().collect();
        let mut current = self
            .inner
            .healthy
            .write()
            .unwrap_or_else(|p| p.into_inner());
        for key in current.keys().filter(|k| !healthy.contains_key(k)) {
            tracing::info!(replica = %key.1, "replica out (gone, down or draining); its sessions move");
        }
        *current = healthy;
    }

    /// Refreshes now, then every `every` in the background.
    pub async fn keep_refreshing(&self, every: Duration) {
        self.refresh().await;
        let this = self.clone();
        crate::targets::repeat(every, move || {
            let this = this.clone();
            async move { this.refresh().await }
        });
    }

    /// The replica of `session_id`, if any is known (refreshing once if
    /// none is).
    pub async fn for_session(&self, session_id: &str) -> Option<Channel> {
        if let Some(channel) = self.pick(session_id) {
            return Some(channel);
        }
        self.refresh().await;
        self.pick(session_id)
    }

    fn pick(&self, session_id: &str) -> Option<Channel> {
        self.inner
            .healthy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .max_by_key(|((_, addr), _)| weight(session_id, &addr.to_string()))
            .map(|(_, channel)| channel.clone())
    }
}

/// The rendezvous weight of (session, replica): the first 8 bytes of a
/// SHA-256, the same in every worker whatever it was built with.
pub(crate) fn weight(session_id: &str, replica: &str) -> u64 {
    use sha2::Digest as _;
    let digest = sha2::Sha256::new()
        .chain_update(session_id.as_bytes())
        .chain_update([0u8])
        .chain_update(replica.as_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_the_sessions_of_a_replica_that_goes_move() {
        let three = [addr("10.0.0.1:1"), addr("10.0.0.2:1"), addr("10.0.0.3:1")];
        let best = |replicas: &[SocketAddr], s: &str| {
            *replicas
                .iter()
                .max_by_key(|a| weight(s, &a.to_string()))
                .unwrap()
        };
        let mut moved = 0;
        let mut counts = BTreeMap::new();
        for i in 0..300 {
            let s = format!("s{i}");
            let before = best(&three, &s);
            *counts.entry(before).or_insert(0) += 1;
            let after = best(&three[..2], &s);
            if before != three[2] {
                assert_eq!(before, after, "a session of a remaining replica stays");
            } else {
                moved += 1;
            }
        }
        assert!(
            counts.values().all(|n| (60..=140).contains(n)),
            "{counts:?}"
        );
        assert_eq!(moved, counts[&three[2]]);
    }
}
