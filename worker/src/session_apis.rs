//! The session-api replicas a worker talks to: every address the names given
//! on the command line resolve to, re-resolved periodically, so a headless
//! Kubernetes service (one DNS name, an address per ready pod) reaches every
//! replica as replicas come and go.
//!
//! Two things go to every replica: live model deltas (best effort, dropped
//! when a replica is slow) and event notices (the newest offset of each
//! session whose log grew). Notices are coalesced per replica (only the
//! newest offset of a session is kept) and retried until the replica answers,
//! because a replica that misses one would leave its clients waiting.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use keel_proto::v1 as pb;
use keel_proto::v1::live_service_client::LiveServiceClient;
use keel_server::Traced;
use tokio::sync::{Notify, mpsc};
use tokio::task::AbortHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

pub use crate::targets::AddressError;
use crate::targets::{ReplicaKey, Target, resolve_all, update};

/// Deltas buffered per replica before newer ones are dropped.
const LIVE_BUFFER: usize = 256;
/// Sessions with an undelivered notice per replica; past it the newest are
/// dropped (and logged): the replica's clients catch up when they reconnect.
const MAX_PENDING_SESSIONS: usize = 100_000;
/// Notices per request.
const NOTICE_BATCH: usize = 1024;
/// How long one notice request may take.
const NOTICE_TIMEOUT: Duration = Duration::from_secs(5);
/// Retry back-off bounds for a replica that does not answer.
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(2);

struct Replica {
    client: LiveServiceClient<Traced<Channel>>,
    queue: Arc<Queue>,
    sender: AbortHandle,
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.sender.abort();
    }
}

impl Replica {
    fn new(channel: Channel) -> Self {
        let client = LiveServiceClient::new(Traced::new(channel));
        let queue = Arc::new(Queue::default());
        let sender = tokio::spawn(send_notices(client.clone(), queue.clone())).abort_handle();
        Self {
            client,
            queue,
            sender,
        }
    }
}

/// A replica's undelivered notices: sessions and their newest offsets.
#[derive(Default)]
struct Queue {
    pending: Mutex<BTreeMap<String, u64>>,
    wake: Notify,
}

impl Queue {
    fn notice(&self, session_id: &str, last_offset: u64) {
        {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(offset) = pending.get_mut(session_id) {
                *offset = (*offset).max(last_offset);
            } else if pending.len() >= MAX_PENDING_SESSIONS {
                tracing::warn!(%session_id, "session-api replica is not taking notices; dropping one");
                return;
            } else {
                pending.insert(session_id.to_string(), last_offset);
            }
        }
        self.wake.notify_one();
    }

    /// Takes up to a batch of pending notices.
    fn take_batch(&self) -> Vec<pb::EventsNotice> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let keys: Vec<String> = pending.keys().take(NOTICE_BATCH).cloned().collect();
        keys.into_iter()
            .filter_map(|k| {
                pending.remove(&k).map(|last_offset| {
                    // A log key: the session key, or `<session key>/<agent>`.
                    let (session_id, agent_id) = match k.split_once('/') {
                        Some((s, a)) => (s.to_string(), a.to_string()),
                        None => (k, String::new()),
                    };
                    pb::EventsNotice {
                        session_id,
                        last_offset,
                        agent_id,
                    }
                })
            })
            .collect()
    }

    /// Puts back notices a failed request did not deliver, unless newer
    /// ones arrived meanwhile.
    fn put_back(&self, notices: Vec<pb::EventsNotice>) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        for n in notices {
            let key = crate::notices::log_key(&n.session_id, &n.agent_id);
            let offset = pending.entry(key).or_insert(n.last_offset);
            *offset = (*offset).max(n.last_offset);
        }
    }
}

/// Delivers a replica's notices; runs until the replica is dropped.
async fn send_notices(mut client: LiveServiceClient<Traced<Channel>>, queue: Arc<Queue>) {
    let mut delay = RETRY_MIN;
    loop {
        let batch = queue.take_batch();
        if batch.is_empty() {
            queue.wake.notified().await;
            continue;
        }
        let mut request = tonic::Request::new(pb::NotifyRequest {
            notices: batch.clone(),
        });
        request.set_timeout(NOTICE_TIMEOUT);
        match client.notify(request).await {
            Ok(_) => delay = RETRY_MIN,
            Err(e) => {
                tracing::debug!(error = %e, "event notices not delivered; retrying");
                queue.put_back(batch);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(RETRY_MAX);
            }
        }
    }
}

/// The session-api replicas behind the configured names.
#[derive(Clone, Default)]
pub struct SessionApis {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    targets: Vec<Target>,
    /// Mutual TLS to the replicas' internal listeners, when configured.
    tls: Option<Arc<keel_server::ClientTls>>,
    /// By (index of the configured name, address).
    replicas: RwLock<BTreeMap<ReplicaKey, Arc<Replica>>>,
}

impl SessionApis {
    /// Checks the addresses; nothing is resolved or connected until
    /// [`SessionApis::resolve`] runs (see [`SessionApis::keep_resolving`]).
    pub fn new(
        addrs: &[String],
        tls: Option<Arc<keel_server::ClientTls>>,
    ) -> Result<Self, AddressError> {
        let targets = Target::parse_all(addrs)?;
        Ok(Self {
            inner: Arc::new(Inner {
                targets,
                tls,
                replicas: RwLock::new(BTreeMap::new()),
            }),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.inner.targets.is_empty()
    }

    /// Resolves every configured name now and updates the replica set: new
    /// addresses get a client, vanished ones are dropped. A name that does
    /// not resolve keeps the replicas it had.
    pub async fn resolve(&self) {
        let resolved = resolve_all(&self.inner.targets).await;
        update(
            &self.inner.targets,
            resolved,
            self.inner.tls.as_ref(),
            &mut self
                .inner
                .replicas
                .write()
                .unwrap_or_else(|p| p.into_inner()),
            |channel| Arc::new(Replica::new(channel)),
        );
    }

    /// Resolves now, then every `every` in the background.
    pub async fn keep_resolving(&self, every: Duration) {
        self.resolve().await;
        if self.is_empty() {
            return;
        }
        let this = self.clone();
        crate::targets::repeat(every, move || {
            let this = this.clone();
            async move { this.resolve().await }
        });
    }

    fn replicas(&self) -> Vec<Arc<Replica>> {
        self.inner
            .replicas
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// How many replicas are known now.
    pub fn replica_count(&self) -> usize {
        self.replicas().len()
    }

    /// A client of every replica known now (for calls any one answers).
    pub fn clients(&self) -> Vec<LiveServiceClient<Traced<Channel>>> {
        self.replicas().iter().map(|r| r.client.clone()).collect()
    }

    /// Tells every replica that a log reaches `last_offset`; `log` is
    /// [`crate::notices::log_key`]'s.
    pub fn notice(&self, log: &str, last_offset: u64) {
        for r in self.replicas() {
            r.queue.notice(log, last_offset);
        }
    }

    /// Opens one best-effort delta stream per replica for a model call.
    /// Deltas are dropped, never waited for, when a stream is slow or down.
    pub fn live_publishers(&self) -> Vec<mpsc::Sender<pb::PublishRequest>> {
        self.replicas()
            .into_iter()
            .map(|r| {
                let (tx, rx) = mpsc::channel(LIVE_BUFFER);
                let mut client = r.client.clone();
                tokio::spawn(async move {
                    if let Err(e) = client.publish(ReceiverStream::new(rx)).await {
                        tracing::debug!(error = %e, "live deltas not delivered");
                    }
                });
                tx
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resolves_every_address_of_a_name() {
        let apis = SessionApis::new(
            &["127.0.0.1:9".to_string(), "localhost:9".to_string()],
            None,
        )
        .unwrap();
        apis.resolve().await;
        // 127.0.0.1 once for the literal, and at least one address for localhost.
        assert!(apis.replica_count() >= 2, "{}", apis.replica_count());
        let before = apis.replica_count();
        apis.resolve().await;
        assert_eq!(
            apis.replica_count(),
            before,
            "re-resolving keeps the same replicas"
        );
    }

    #[test]
    fn notices_coalesce_and_undelivered_ones_are_kept() {
        let q = Queue::default();
        q.notice("s1", 3);
        q.notice("s1", 2);
        q.notice("s2", 1);
        let batch = q.take_batch();
        let got: Vec<_> = batch
            .iter()
            .map(|n| (n.session_id.as_str(), n.last_offset))
            .collect();
        assert_eq!(got, vec![("s1", 3), ("s2", 1)]);
        assert!(q.take_batch().is_empty());
        // A newer notice arrives while the batch is in flight, then the
        // request fails: the newer offset wins, the other is queued again.
        q.notice("s1", 5);
        q.put_back(batch);
        let got: Vec<_> = q
            .take_batch()
            .into_iter()
            .map(|n| (n.session_id, n.last_offset))
            .collect();
        assert_eq!(got, vec![("s1".to_string(), 5), ("s2".to_string(), 1)]);
    }
}
