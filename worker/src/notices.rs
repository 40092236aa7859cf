//! Event notices: after a workflow activation that appended events, tell the
//! session-api replicas the session's newest offset, so they read events
//! when there are some instead of polling.
//!
//! Workflow code records its log's newest offset here ([`record`]) when it
//! appends; the worker interceptor ([`NoticeInterceptor`]) takes it when the
//! activation's completion goes to Temporal and hands it to
//! [`SessionApis::notice`]. The notice may arrive before Temporal has
//! committed the workflow task, and that is safe: session-api reads events
//! with a query, and Temporal answers a query only after the workflow task in
//! flight has completed, so what clients see is always committed history. If
//! the task fails instead, the query answers the committed log and the retried
//! task sends its own notice.
//!
//! [`record`] is a write-only side channel out of workflow code: nothing in
//! the workflow reads it, so it cannot change what the workflow does. It is
//! also written when a run is replayed (after a worker restart or a cache
//! eviction), which re-sends the newest offset: harmless, because session-api
//! ignores offsets it has already read, and useful, because a notice lost with
//! a crashed worker is sent again.

use std::collections::BTreeMap;
use std::sync::Mutex;

use temporalio_common::protos::coresdk::workflow_completion::WorkflowActivationCompletion;
use temporalio_sdk::interceptors::WorkerInterceptor;

use crate::session_apis::SessionApis;

struct Progress {
    /// The log's key: the session key, or `<session key>/<agent id>` for a
    /// sub-agent's log (a session key holds no '/').
    log: String,
    last_offset: u64,
}

/// Runs with new events and no completion yet, by run id.
static PROGRESS: Mutex<BTreeMap<String, Progress>> = Mutex::new(BTreeMap::new());

/// Records that the run's event log — the session's, or its sub-agent
/// `agent`'s — now reaches `last_offset`.
pub fn record(run_id: &str, session_id: &str, agent: &str, last_offset: u64) {
    let mut progress = PROGRESS.lock().unwrap_or_else(|p| p.into_inner());
    match progress.get_mut(run_id) {
        Some(p) => p.last_offset = p.last_offset.max(last_offset),
        None => {
            progress.insert(
                run_id.to_string(),
                Progress {
                    log: log_key(session_id, agent),
                    last_offset,
                },
            );
        }
    }
}

/// The key notices name a log by: the session key, or `<session
/// key>/<agent id>`.
pub fn log_key(session_id: &str, agent: &str) -> String {
    if agent.is_empty() {
        session_id.to_string()
    } else {
        format!("{session_id}/{agent}")
    }
}

/// Takes the run's recorded progress: `(log key, newest offset)`.
fn take(run_id: &str) -> Option<(String, u64)> {
    PROGRESS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(run_id)
        .map(|p| (p.log, p.last_offset))
}

/// Sends each completed activation's new offset to the session-api replicas.
pub struct NoticeInterceptor {
    apis: SessionApis,
}

impl NoticeInterceptor {
    pub fn new(apis: SessionApis) -> Self {
        Self { apis }
    }
}

#[async_trait::async_trait(?Send)]
impl WorkerInterceptor for NoticeInterceptor {
    async fn on_workflow_activation_completion(&self, completion: &WorkflowActivationCompletion) {
        if let Some((log, last_offset)) = take(&completion.run_id) {
            self.apis.notice(&log, last_offset);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_offset_per_run_taken_once() {
        record("run-a", "s", "", 2);
        record("run-a", "s", "", 4);
        record("run-a", "s", "", 3);
        record("run-b", "t", "", 1);
        record("run-c", "t", "a1", 5);
        assert_eq!(take("run-a"), Some(("s".to_string(), 4)));
        assert_eq!(take("run-a"), None);
        assert_eq!(take("run-b"), Some(("t".to_string(), 1)));
        assert_eq!(take("run-c"), Some(("t/a1".to_string(), 5)));
    }
}
