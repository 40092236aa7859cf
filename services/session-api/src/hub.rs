//! One feed per watched session, however many clients watch it: a single
//! poller reads the workflow's event log (through the `events` query, which
//! writes nothing to history) and broadcasts new events; live deltas
//! published by workers are broadcast on the same feed. A feed stops polling
//! when its last watcher leaves.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use keel_proto::v1 as pb;
use keel_workflow_api::{EventsPage, EventsQuery, EventsQueryDef};
use temporalio_client::errors::WorkflowQueryError;
use temporalio_client::{Client, WorkflowHandle, WorkflowQueryOptions};
use tokio::sync::{Notify, broadcast, watch};

use crate::events::decode_page;

/// Poll back-off bounds; a live delta (the model is writing) resets it.
pub(crate) const POLL_MIN: Duration = Duration::from_millis(50);
pub(crate) const POLL_MAX: Duration = Duration::from_millis(500);
/// Events per query answer.
pub(crate) const PAGE: u32 = 256;
/// Broadcast buffer; a watcher that falls further behind catches up by query.
const BUFFER: usize = 1024;

type Handle = WorkflowHandle<Client, keel_workflow_api::SessionWorkflow>;

pub(crate) struct Feed {
    pub events: broadcast::Sender<Arc<pb::Event>>,
    pub live: broadcast::Sender<pb::LiveDelta>,
    /// Newest offset broadcast so far, and whether the session has closed.
    pub progress: watch::Sender<(u64, bool)>,
    wake: Notify,
}

#[derive(Default)]
pub(crate) struct Hub {
    feeds: Mutex<HashMap<String, Weak<Feed>>>,
}

impl Hub {
    /// The session's feed, starting its poller if nobody watches it yet.
    /// Hold the `Arc` while watching; the poller stops after the last one
    /// is dropped.
    pub(crate) fn watch(
        self: &Arc<Self>,
        session_id: &str,
        handle: Handle,
        start_after: u64,
    ) -> Arc<Feed> {
        let mut feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(feed) = feeds.get(session_id).and_then(Weak::upgrade) {
            return feed;
        }
        let feed = Arc::new(Feed {
            events: broadcast::channel(BUFFER).0,
            live: broadcast::channel(BUFFER).0,
            progress: watch::channel((start_after, false)).0,
            wake: Notify::new(),
        });
        feeds.insert(session_id.to_string(), Arc::downgrade(&feed));
        tokio::spawn(poll(
            Arc::downgrade(&feed),
            session_id.to_string(),
            handle,
            start_after,
        ));
        feed
    }

    /// Delivers a live delta to the session's watchers; false when nobody
    /// watches the session.
    pub(crate) fn publish(&self, session_id: &str, delta: pb::LiveDelta) -> bool {
        let feed = {
            let feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
            feeds.get(session_id).and_then(Weak::upgrade)
        };
        match feed {
            Some(feed) => {
                // The model is writing: durable events will follow soon.
                feed.wake.notify_one();
                feed.live.send(delta).is_ok()
            }
            None => false,
        }
    }
}

pub(crate) async fn query(handle: &Handle, after: u64) -> Result<EventsPage, WorkflowQueryError> {
    handle
        .query(
            EventsQueryDef,
            EventsQuery { after, max: PAGE },
            WorkflowQueryOptions::default(),
        )
        .await
}

/// The one poller of a session: runs while anyone holds the feed.
async fn poll(feed: Weak<Feed>, session_id: String, handle: Handle, mut after: u64) {
    let mut delay = POLL_MIN;
    loop {
        let Some(f) = feed.upgrade() else { return };
        match query(&handle, after).await {
            Ok(page) => {
                let closed = page.closed;
                let last = page.last_offset;
                match decode_page(page) {
                    Ok(events) => {
                        let got = !events.is_empty();
                        for e in events {
                            after = e.offset;
                            let _ = f.events.send(Arc::new(e));
                        }
                        f.progress.send_replace((after, closed && after >= last));
                        if closed && after >= last {
                            return;
                        }
                        if got {
                            delay = POLL_MIN;
                            if after < last {
                                continue;
                            }
                        } else {
                            delay = (delay * 2).min(POLL_MAX);
                        }
                    }
                    Err(e) => {
                        tracing::error!(%session_id, error = %e, "corrupt event log page");
                        delay = POLL_MAX;
                    }
                }
            }
            Err(WorkflowQueryError::NotFound(_)) => {
                f.progress.send_replace((after, true));
                return;
            }
            Err(e) => {
                // A worker restart or a Temporal hiccup: keep watching.
                tracing::warn!(%session_id, error = %e, "reading events failed; retrying");
                delay = POLL_MAX;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = f.wake.notified() => { delay = POLL_MIN; }
        }
        drop(f);
    }
}
