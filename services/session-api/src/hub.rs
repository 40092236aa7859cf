//! One feed per watched session, however many clients watch it: a single
//! reader reads the workflow's event log (through the `events` query, which
//! writes nothing to history) and broadcasts new events; live deltas
//! published by workers are broadcast on the same feed.
//!
//! The reader does not poll. It reads once when the feed starts, then only
//! when a worker's notice (`LiveService.Notify`) says the log reaches past
//! what it has read, or to retry a read that failed. It stops when its last
//! watcher leaves or the session closes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use keel_proto::v1 as pb;
use keel_workflow_api::{EventsPage, EventsQuery, EventsQueryDef};
use temporalio_client::errors::WorkflowQueryError;
use temporalio_client::{Client, WorkflowHandle, WorkflowQueryOptions};
use tokio::sync::{broadcast, watch};

use crate::events::decode_page;

/// Wait before reading again after a read failed (a worker restart, a
/// Temporal hiccup).
pub(crate) const RETRY: Duration = Duration::from_millis(500);
/// Events per query answer.
pub(crate) const PAGE: u32 = 256;
/// Broadcast buffer; a watcher that falls further behind catches up by query.
const BUFFER: usize = 256;

type Handle = WorkflowHandle<Client, keel_workflow_api::SessionWorkflow>;

pub(crate) struct Feed {
    pub events: broadcast::Sender<Arc<pb::Event>>,
    pub live: broadcast::Sender<pb::LiveDelta>,
    /// Newest offset broadcast so far, and whether the session has closed.
    pub progress: watch::Sender<(u64, bool)>,
    /// Newest offset a worker said the log reaches.
    noticed: watch::Sender<u64>,
}

#[derive(Default)]
pub(crate) struct Hub {
    feeds: Mutex<HashMap<String, Weak<Feed>>>,
}

impl Hub {
    /// The session's feed, starting its reader if nobody watches it yet.
    /// Hold the `Arc` while watching; the reader stops after the last one
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
        feeds.retain(|_, f| f.strong_count() > 0);
        let feed = Arc::new(Feed {
            events: broadcast::channel(BUFFER).0,
            live: broadcast::channel(BUFFER).0,
            progress: watch::channel((start_after, false)).0,
            noticed: watch::channel(0).0,
        });
        feeds.insert(session_id.to_string(), Arc::downgrade(&feed));
        tokio::spawn(read(
            Arc::downgrade(&feed),
            feed.noticed.subscribe(),
            session_id.to_string(),
            handle,
            start_after,
        ));
        feed
    }

    fn feed(&self, session_id: &str) -> Option<Arc<Feed>> {
        let feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        feeds.get(session_id).and_then(Weak::upgrade)
    }

    /// Delivers a live delta to the session's watchers; false when nobody
    /// watches the session.
    pub(crate) fn publish(&self, session_id: &str, delta: pb::LiveDelta) -> bool {
        self.feed(session_id)
            .is_some_and(|feed| feed.live.send(delta).is_ok())
    }

    /// A worker says the session's log reaches `last_offset`; false when
    /// nobody watches the session here.
    pub(crate) fn notice(&self, session_id: &str, last_offset: u64) -> bool {
        match self.feed(session_id) {
            Some(feed) => {
                feed.noticed.send_if_modified(|n| {
                    let newer = last_offset > *n;
                    *n = (*n).max(last_offset);
                    newer
                });
                true
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

/// The one reader of a session: runs while anyone holds the feed.
async fn read(
    feed: Weak<Feed>,
    mut noticed: watch::Receiver<u64>,
    session_id: String,
    handle: Handle,
    mut after: u64,
) {
    loop {
        // Read everything the log has past `after`.
        loop {
            let Some(f) = feed.upgrade() else { return };
            match query(&handle, after).await {
                Ok(page) => {
                    let closed = page.closed;
                    let last = page.last_offset;
                    match decode_page(page) {
                        Ok(events) => {
                            for e in events {
                                after = e.offset;
                                let _ = f.events.send(Arc::new(e));
                            }
                            let done = closed && after >= last;
                            f.progress.send_replace((after, done));
                            if done {
                                return;
                            }
                            if after >= last {
                                break;
                            }
                        }
                        Err(e) => {
                            tracing::error!(%session_id, error = %e, "corrupt event log page");
                            drop(f);
                            tokio::time::sleep(RETRY).await;
                        }
                    }
                }
                Err(WorkflowQueryError::NotFound(_)) => {
                    f.progress.send_replace((after, true));
                    return;
                }
                Err(e) => {
                    tracing::warn!(%session_id, error = %e, "reading events failed; retrying");
                    drop(f);
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
        // Then wait for a worker to say there is more.
        loop {
            if *noticed.borrow_and_update() > after {
                break;
            }
            if noticed.changed().await.is_err() {
                // The last watcher left.
                return;
            }
        }
    }
}
