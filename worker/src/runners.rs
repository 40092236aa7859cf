//! The tool-runner fleet as a worker sees it: every address the
//! `--tool-runner` names resolve to, each asked who it is
//! (`DescribeRunner`), so a session's calls reach the runner its workspace
//! is leased to by that runner's id — whatever address it has now — and new
//! leases go to the least loaded runner.
//!
//! Choosing: a runner that drains is never chosen; one whose commands fill
//! its limit only when every runner is full; among the rest, the one with
//! the fewest leases, ties broken by rendezvous hashing on the session id.
//! A worker counts each lease as it chooses it, so sessions started
//! together spread evenly; the runners' own counts (refreshed every
//! couple of seconds) decide across workers.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use keel_proto::v1 as pb;
use keel_proto::v1::tool_service_client::ToolServiceClient;
use keel_server::Traced;
use tonic::transport::Channel;

use crate::targets::{AddressError, ReplicaKey, Target, resolve_all, update};

/// How long a runner may take to describe itself before it counts as gone.
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(2);

/// One runner found at an address.
#[derive(Clone)]
struct Known {
    client: ToolServiceClient<Traced<Channel>>,
    addr: SocketAddr,
    load: pb::DescribeRunnerResponse,
}

/// Why no runner took a workspace.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("no tool-runner is available (none found behind {names}, or all are draining)")]
    NoRunner { names: String },
    /// Every candidate refused; the last refusal says why.
    #[error("no tool-runner can serve the workspace: {0}")]
    Refused(tonic::Status),
}

/// See the module documentation; cheap to clone.
#[derive(Clone)]
pub struct Runners {
    inner: Arc<Inner>,
}

struct Inner {
    targets: Vec<Target>,
    tls: Option<Arc<keel_server::ClientTls>>,
    /// Clients by (configured name, address), kept while the address
    /// resolves.
    channels: RwLock<BTreeMap<ReplicaKey, ToolServiceClient<Traced<Channel>>>>,
    /// Runners by id, from the last refresh.
    known: RwLock<BTreeMap<String, Known>>,
}

/// A session's workspace, taken by a runner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leased {
    pub runner_id: String,
    pub cwd: String,
}

impl Runners {
    /// Checks the names; nothing is resolved until [`Runners::refresh`].
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
                known: RwLock::new(BTreeMap::new()),
            }),
        })
    }

    fn names(&self) -> String {
        self.inner
            .targets
            .iter()
            .map(|t| t.host_port.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Resolves the names and asks every address who it is. A name that
    /// does not resolve keeps its addresses; an address that does not
    /// answer is left out until it does.
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
            |channel| ToolServiceClient::new(Traced::new(channel)),
        );
        let clients: Vec<(SocketAddr, ToolServiceClient<Traced<Channel>>)> = self
            .inner
            .channels
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|((_, addr), client)| (*addr, client.clone()))
            .collect();
        let described =
            futures::future::join_all(clients.into_iter().map(|(addr, mut client)| async move {
                let mut request = tonic::Request::new(pb::DescribeRunnerRequest {});
                request.set_timeout(DESCRIBE_TIMEOUT);
                let answer =
                    tokio::time::timeout(DESCRIBE_TIMEOUT, client.describe_runner(request)).await;
                match answer {
                    Ok(Ok(load)) => Some(Known {
                        client,
                        addr,
                        load: load.into_inner(),
                    }),
                    Ok(Err(e)) => {
                        tracing::debug!(%addr, error = %e, "tool-runner does not describe itself");
                        None
                    }
                    Err(_) => None,
                }
            }))
            .await;
        let mut known = BTreeMap::new();
        for k in described.into_iter().flatten() {
            if let Some(other) = known.get(&k.load.runner_id).map(|o: &Known| o.addr) {
                tracing::warn!(runner_id = %k.load.runner_id, a = %other, b = %k.addr, "two tool-runners share an id; using one");
                continue;
            }
            known.insert(k.load.runner_id.clone(), k);
        }
        let mut current = self.inner.known.write().unwrap_or_else(|p| p.into_inner());
        for (id, k) in &known {
            if current.get(id).is_none_or(|old| old.addr != k.addr) {
                tracing::info!(runner_id = %id, addr = %k.addr, "tool-runner found");
            }
        }
        for (id, k) in current.iter() {
            if !known.contains_key(id) {
                tracing::info!(runner_id = %id, addr = %k.addr, "tool-runner gone");
            }
        }
        *current = known;
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

    /// The runner ids known now, in order.
    pub fn ids(&self) -> Vec<String> {
        self.known().keys().cloned().collect()
    }

    fn known(&self) -> BTreeMap<String, Known> {
        self.inner
            .known
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The client of runner `id`, refreshing once if it is not known.
    /// `None`: no address answers as that runner.
    pub async fn client(&self, id: &str) -> Option<ToolServiceClient<Traced<Channel>>> {
        if let Some(k) = self.known().get(id) {
            return Some(k.client.clone());
        }
        self.refresh().await;
        self.known().get(id).map(|k| k.client.clone())
    }

    /// Some runner, for sessions that started before workspaces were
    /// leased (one runner served everything then).
    pub async fn any(&self) -> Option<ToolServiceClient<Traced<Channel>>> {
        let pick = |known: BTreeMap<String, Known>| {
            known
                .into_values()
                .find(|k| !k.load.draining)
                .map(|k| k.client)
        };
        if let Some(client) = pick(self.known()) {
            return Some(client);
        }
        self.refresh().await;
        pick(self.known())
    }

    /// Leases the session's workspace — `cwd`, or a clone of `git` — to
    /// `keep` when it is still there and not draining, else to the best
    /// other runner that takes it. Chooses from what the last refresh saw
    /// (plus the leases this worker made since), so starting many sessions
    /// costs no refresh each, and a slow lease (a clone) holds up no other.
    pub async fn lease(
        &self,
        session_id: &str,
        cwd: &str,
        git: Option<&keel_workflow_api::GitSource>,
        keep: Option<&str>,
    ) -> Result<Leased, LeaseError> {
        if self.known().is_empty() {
            self.refresh().await;
        }
        let mut tried = BTreeSet::new();
        let mut refusal = None;
        let mut refreshed = false;
        loop {
            // Chosen and counted at once, so concurrent leases in this
            // worker spread.
            let pick = {
                let mut known = self.inner.known.write().unwrap_or_else(|p| p.into_inner());
                let id = choose(&known, session_id, keep, &tried);
                id.and_then(|id| known.get_mut(&id)).map(|k| {
                    k.load.leases += 1;
                    (k.load.runner_id.clone(), k.client.clone())
                })
            };
            let Some((id, mut client)) = pick else {
                // Everyone asked was gone or draining: look again once
                // (what the last refresh saw may be old) before giving up.
                if refusal.is_none() && !refreshed {
                    refreshed = true;
                    self.refresh().await;
                    tried.clear();
                    continue;
                }
                break;
            };
            tried.insert(id.clone());
            let request = pb::LeaseWorkspaceRequest {
                session_id: session_id.to_string(),
                cwd: cwd.to_string(),
                git: git.map(|g| pb::GitSource {
                    url: g.url.clone(),
                    r#ref: g.git_ref.clone(),
                }),
            };
            let answer = client.lease_workspace(request).await;
            let mut known = self.inner.known.write().unwrap_or_else(|p| p.into_inner());
            match answer {
                Ok(r) => {
                    let r = r.into_inner();
                    if let Some(k) = known.get_mut(&r.runner_id) {
                        k.load.leases = r.leases;
                    }
                    return Ok(Leased {
                        runner_id: r.runner_id,
                        cwd: r.cwd,
                    });
                }
                Err(status) => {
                    if let Some(k) = known.get_mut(&id) {
                        k.load.leases = k.load.leases.saturating_sub(1);
                    }
                    tracing::info!(runner_id = %id, %session_id, error = %status, "tool-runner did not take the workspace");
                    // A runner that drains or does not answer is skipped;
                    // what the others say about the workspace decides.
                    let skipped = status.code() == tonic::Code::Unavailable;
                    if !skipped {
                        refusal = Some(status);
                    }
                }
            }
        }
        Err(refusal.map_or_else(
            || LeaseError::NoRunner {
                names: self.names(),
            },
            LeaseError::Refused,
        ))
    }
}

/// The runner a session's workspace should go to, among those not tried
/// yet: `keep` if it is there and not draining; never a draining one; a
/// full one only when all are; else the fewest leases, ties broken by
/// rendezvous hashing.
fn choose(
    known: &BTreeMap<String, Known>,
    session_id: &str,
    keep: Option<&str>,
    tried: &BTreeSet<String>,
) -> Option<String> {
    known
        .values()
        .filter(|k| !k.load.draining && !tried.contains(&k.load.runner_id))
        .min_by_key(|k| {
            let kept = keep == Some(k.load.runner_id.as_str());
            let full = k.load.max_concurrent_commands > 0
                && k.load.running_commands + k.load.waiting_commands
                    >= k.load.max_concurrent_commands;
            (
                !kept,
                full,
                k.load.leases,
                rendezvous(session_id, &k.load.runner_id),
            )
        })
        .map(|k| k.load.runner_id.clone())
}

/// Rendezvous (highest random weight) hashing: each session ranks the
/// runners its own way, so ties do not all go to the same runner.
fn rendezvous(session_id: &str, runner_id: &str) -> std::cmp::Reverse<u64> {
    std::cmp::Reverse(crate::affinity::weight(session_id, runner_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_rank_runners_differently() {
        let runners = ["a", "b", "c"];
        let mut firsts = BTreeMap::new();
        for i in 0..300 {
            let session = format!("s{i}");
            let best = runners
                .iter()
                .min_by_key(|r| rendezvous(&session, r))
                .unwrap();
            *firsts.entry(*best).or_insert(0) += 1;
        }
        // Each runner comes first for a fair share of sessions.
        for r in runners {
            let n = firsts.get(r).copied().unwrap_or(0);
            assert!((60..=140).contains(&n), "{firsts:?}");
        }
    }

    fn known(loads: &[(&str, u32, u32, bool)]) -> BTreeMap<String, Known> {
        let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:9").connect_lazy();
        loads
            .iter()
            .map(|(id, leases, running, draining)| {
                (
                    id.to_string(),
                    Known {
                        client: ToolServiceClient::new(Traced::new(channel.clone())),
                        addr: "127.0.0.1:9".parse().unwrap(),
                        load: pb::DescribeRunnerResponse {
                            runner_id: id.to_string(),
                            max_concurrent_commands: 2,
                            running_commands: *running,
                            waiting_commands: 0,
                            leases: *leases,
                            draining: *draining,
                        },
                    },
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn the_least_leased_runner_with_room_is_chosen() {
        let none = BTreeSet::new();
        let k = known(&[("a", 3, 0, false), ("b", 1, 0, false), ("c", 0, 0, true)]);
        // Draining never; fewest leases otherwise.
        assert_eq!(choose(&k, "s", None, &none).as_deref(), Some("b"));
        // The previous runner is kept while it is there and not draining.
        assert_eq!(choose(&k, "s", Some("a"), &none).as_deref(), Some("a"));
        assert_eq!(choose(&k, "s", Some("c"), &none).as_deref(), Some("b"));
        // A full runner only when every runner is full.
        let k = known(&[("a", 3, 0, false), ("b", 1, 2, false)]);
        assert_eq!(choose(&k, "s", None, &none).as_deref(), Some("a"));
        let k = known(&[("a", 3, 2, false), ("b", 1, 2, false)]);
        assert_eq!(choose(&k, "s", None, &none).as_deref(), Some("b"));
        // Runners that refused are not asked again.
        let tried = BTreeSet::from(["b".to_string()]);
        assert_eq!(choose(&k, "s", None, &tried).as_deref(), Some("a"));
        let tried = BTreeSet::from(["a".to_string(), "b".to_string()]);
        assert_eq!(choose(&k, "s", None, &tried), None);
    }

    #[test]
    fn bad_names_are_refused() {
        assert!(Runners::new(&["tool-runner".to_string()], None).is_err());
        assert!(Runners::new(&["tool-runner:50051".to_string()], None).is_ok());
    }
}
