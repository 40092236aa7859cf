//! The executions this process knows about, keyed by [`CallKey`]. An entry
//! lives while its call runs; once the call's response is journaled, the
//! journal answers and the entry goes. Entries whose response could not be
//! journaled, or whose output item could not be stored, stay (the memory is
//! then the only record) until pruned.
//!
//! Each entry publishes its outcome on a watch channel, so any number of
//! callers can wait for it and every one of them gets the same outcome.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use keel_proto::v1::RunToolResponse;
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::Status;

use super::CallKey;

/// How a call ended, as its callers see it.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    Response(Arc<RunToolResponse>),
    /// The tool ran, but its output item could not be stored: the next
    /// RunTool for the key stores it again rather than running the tool.
    Unstored(Arc<Unstored>),
    /// Nothing ran, and nothing is recorded (e.g. the journal is unusable).
    Failed(Status),
    /// A placeholder ended without a result of its own: ask again.
    Retry,
}

/// A ran call's output item, waiting to be stored.
#[derive(Debug)]
pub(crate) struct Unstored {
    pub item: serde_json::Value,
    /// The response, but for the item's digest.
    pub response: RunToolResponse,
    pub error: String,
}

#[derive(Debug, Clone)]
enum State {
    Running,
    Done(Outcome),
}

/// One call being run (or resolved from the journal), shared by everyone
/// waiting for it.
#[derive(Debug)]
pub(crate) struct Execution {
    pub key: CallKey,
    /// Identifies the request (tool, arguments, custom); empty for a
    /// placeholder. A retry with other arguments is a client bug, logged.
    pub request_digest: String,
    state: watch::Sender<State>,
    cancel: watch::Sender<bool>,
    /// Set when a cancellation actually stopped the tool.
    aborted: AtomicBool,
    /// RunTool callers waiting now.
    waiters: AtomicUsize,
    finished_at: Mutex<Option<Instant>>,
}

/// What [`Executions::begin`] made of a RunTool.
#[derive(Debug)]
pub(crate) enum Role {
    /// First of its key: the caller must start the execution.
    New,
    /// The key is running or has an outcome in memory: wait for it.
    Attached,
    /// The key ran but its item was not stored: the caller must store it.
    StoreAgain(Arc<Unstored>),
}

/// What [`Executions::begin_cancel`] found.
#[derive(Debug)]
pub(crate) enum CancelTarget {
    /// Running: its cancel flag is now set.
    Running(Arc<Execution>),
    /// It has an outcome in memory, which stands.
    Finished,
    /// Unknown here: a placeholder now holds the key; the caller consults
    /// the journal, then ends the placeholder.
    Unknown(Arc<Execution>),
}

impl Execution {
    fn new(key: CallKey, request_digest: String, cancelled: bool) -> Self {
        Self {
            key,
            request_digest,
            state: watch::Sender::new(State::Running),
            cancel: watch::Sender::new(cancelled),
            aborted: AtomicBool::new(false),
            waiters: AtomicUsize::new(0),
            finished_at: Mutex::new(None),
        }
    }

    fn is_running(&self) -> bool {
        matches!(*self.state.borrow(), State::Running)
    }

    /// Resolves once the call is cancelled.
    pub(crate) async fn cancelled(&self) {
        let mut rx = self.cancel.subscribe();
        if rx.wait_for(|cancelled| *cancelled).await.is_err() {
            // The sender lives as long as `self`; never reached.
            std::future::pending::<()>().await;
        }
    }

    #[cfg(test)]
    pub(crate) fn is_cancelled(&self) -> bool {
        *self.cancel.borrow()
    }

    /// Notes that the cancellation stopped the tool.
    pub(crate) fn mark_aborted(&self) {
        self.aborted.store(true, Ordering::SeqCst);
    }

    pub(crate) fn was_aborted(&self) -> bool {
        self.aborted.load(Ordering::SeqCst)
    }

    /// Publishes the outcome to every waiter, present and future.
    pub(crate) fn finish(&self, outcome: Outcome) {
        *self
            .finished_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        self.state.send_replace(State::Done(outcome));
    }

    /// Waits for the outcome as a RunTool caller (counted in
    /// [`Execution::waiters`]).
    pub(crate) async fn wait(&self) -> Outcome {
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let _counted = Decrement(&self.waiters);
        self.wait_done().await
    }

    /// Waits for the outcome.
    pub(crate) async fn wait_done(&self) -> Outcome {
        let mut rx = self.state.subscribe();
        match rx.wait_for(|state| !matches!(state, State::Running)).await {
            Ok(state) => match &*state {
                State::Done(outcome) => outcome.clone(),
                State::Running => Outcome::Retry,
            },
            // The sender lives as long as `self`; never reached.
            Err(_) => Outcome::Retry,
        }
    }

    pub(crate) fn waiters(&self) -> usize {
        self.waiters.load(Ordering::SeqCst)
    }

    fn finished_before(&self, cutoff: Instant) -> bool {
        self.finished_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|at| at <= cutoff)
    }
}

struct Decrement<'a>(&'a AtomicUsize);

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Debug, Default)]
pub(crate) struct Executions {
    entries: Mutex<HashMap<CallKey, Arc<Execution>>>,
}

impl Executions {
    fn entries(&self) -> MutexGuard<'_, HashMap<CallKey, Arc<Execution>>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Joins the key's execution, or registers a new one.
    pub(crate) fn begin(&self, key: &CallKey, request_digest: &str) -> (Arc<Execution>, Role) {
        let mut entries = self.entries();
        if let Some(exec) = entries.get(key) {
            let unstored = match &*exec.state.borrow() {
                State::Done(Outcome::Unstored(unstored)) => Some(Arc::clone(unstored)),
                _ => None,
            };
            if let Some(unstored) = unstored {
                // Running again, so other callers wait for this store.
                exec.state.send_replace(State::Running);
                return (Arc::clone(exec), Role::StoreAgain(unstored));
            }
            return (Arc::clone(exec), Role::Attached);
        }
        let exec = Arc::new(Execution::new(
            key.clone(),
            request_digest.to_string(),
            false,
        ));
        entries.insert(key.clone(), Arc::clone(&exec));
        (exec, Role::New)
    }

    /// Cancels the key's running execution, or holds the key with a
    /// cancelled placeholder when there is none.
    pub(crate) fn begin_cancel(&self, key: &CallKey) -> CancelTarget {
        let mut entries = self.entries();
        if let Some(exec) = entries.get(key) {
            if !exec.is_running() {
                return CancelTarget::Finished;
            }
            exec.cancel.send_replace(true);
            return CancelTarget::Running(Arc::clone(exec));
        }
        let placeholder = Arc::new(Execution::new(key.clone(), String::new(), true));
        entries.insert(key.clone(), Arc::clone(&placeholder));
        CancelTarget::Unknown(placeholder)
    }

    /// Forgets `exec` (if it still holds its key).
    pub(crate) fn remove(&self, exec: &Arc<Execution>) {
        let mut entries = self.entries();
        if entries
            .get(&exec.key)
            .is_some_and(|current| Arc::ptr_eq(current, exec))
        {
            entries.remove(&exec.key);
        }
    }

    /// The highest attempt of the call known in memory, if any.
    pub(crate) fn latest_attempt(&self, call: &CallKey) -> Option<u32> {
        self.entries()
            .keys()
            .filter(|key| {
                key.session_id == call.session_id
                    && key.agent_id == call.agent_id
                    && key.call_id == call.call_id
            })
            .map(|key| key.attempt)
            .max()
    }

    /// The key's execution, if any.
    pub(crate) fn get(&self, key: &CallKey) -> Option<Arc<Execution>> {
        self.entries().get(key).cloned()
    }

    /// The running executions, of one session or of all.
    pub(crate) fn running(&self, session_id: Option<&str>) -> Vec<Arc<Execution>> {
        self.entries()
            .values()
            .filter(|exec| session_id.is_none_or(|s| exec.key.session_id == s))
            .filter(|exec| exec.is_running())
            .cloned()
            .collect()
    }

    /// Cancels the running executions of `session_id` and returns them.
    pub(crate) fn cancel_session(&self, session_id: &str) -> Vec<Arc<Execution>> {
        let running = self.running(Some(session_id));
        for exec in &running {
            exec.cancel.send_replace(true);
        }
        running
    }

    /// Drops outcomes kept only in memory that are older than `retention`.
    pub(crate) fn prune(&self, retention: Duration) -> usize {
        let Some(cutoff) = Instant::now().checked_sub(retention) else {
            return 0;
        };
        let mut entries = self.entries();
        let before = entries.len();
        entries.retain(|_, exec| exec.is_running() || !exec.finished_before(cutoff));
        before - entries.len()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(text: &str) -> Outcome {
        Outcome::Response(Arc::new(RunToolResponse {
            output_preview: text.into(),
            ..Default::default()
        }))
    }

    fn preview(outcome: &Outcome) -> &str {
        match outcome {
            Outcome::Response(r) => &r.output_preview,
            other => panic!("not a response: {other:?}"),
        }
    }

    #[tokio::test]
    async fn one_execution_per_key_and_everyone_gets_its_outcome() {
        let execs = Executions::default();
        let key = CallKey::new("s", "c");
        let (first, role) = execs.begin(&key, "r");
        assert!(matches!(role, Role::New));
        let (second, role) = execs.begin(&key, "r");
        assert!(matches!(role, Role::Attached));
        assert!(Arc::ptr_eq(&first, &second));
        let (other, role) = execs.begin(&CallKey::new("s2", "c"), "r");
        assert!(matches!(role, Role::New) && !Arc::ptr_eq(&first, &other));

        let waiter = {
            let second = Arc::clone(&second);
            tokio::spawn(async move { second.wait().await })
        };
        while first.waiters() == 0 {
            tokio::task::yield_now().await;
        }
        first.finish(response("done"));
        assert_eq!(preview(&waiter.await.unwrap()), "done");
        assert_eq!(preview(&first.wait().await), "done");
        assert_eq!(first.waiters(), 0);
        assert_eq!(execs.running(None).len(), 1, "only the other one runs");
        execs.remove(&first);
        assert!(execs.get(&key).is_none());
        assert!(matches!(execs.begin(&key, "r").1, Role::New));
    }

    #[tokio::test]
    async fn cancel_targets() {
        let execs = Executions::default();
        let key = CallKey::new("s", "c");
        let (exec, _) = execs.begin(&key, "r");
        assert!(!exec.is_cancelled());
        let CancelTarget::Running(target) = execs.begin_cancel(&key) else {
            panic!("running")
        };
        assert!(Arc::ptr_eq(&exec, &target));
        exec.cancelled().await;
        exec.finish(response("aborted"));
        assert!(matches!(execs.begin_cancel(&key), CancelTarget::Finished));
        execs.remove(&exec);

        let CancelTarget::Unknown(placeholder) = execs.begin_cancel(&key) else {
            panic!("unknown")
        };
        assert!(placeholder.is_cancelled());
        // A RunTool meanwhile attaches to the placeholder and is told to ask
        // again once it ends.
        let (attached, role) = execs.begin(&key, "r");
        assert!(matches!(role, Role::Attached) && Arc::ptr_eq(&attached, &placeholder));
        placeholder.finish(Outcome::Retry);
        execs.remove(&placeholder);
        assert!(matches!(attached.wait().await, Outcome::Retry));
    }

    #[tokio::test]
    async fn unstored_outcomes_are_stored_again_and_pruned() {
        let execs = Executions::default();
        let key = CallKey::new("s", "c");
        let (exec, _) = execs.begin(&key, "r");
        exec.finish(Outcome::Unstored(Arc::new(Unstored {
            item: serde_json::json!({}),
            response: RunToolResponse::default(),
            error: "down".into(),
        })));
        let (again, role) = execs.begin(&key, "r");
        assert!(matches!(role, Role::StoreAgain(_)) && Arc::ptr_eq(&exec, &again));
        assert!(again.is_running());
        again.finish(response("stored"));
        assert!(matches!(execs.begin(&key, "r").1, Role::Attached));
        assert_eq!(execs.prune(Duration::from_secs(3600)), 0);
        assert_eq!(execs.prune(Duration::ZERO), 1);
        assert_eq!(execs.len(), 0);
    }

    #[tokio::test]
    async fn cancelling_a_session_reaches_only_its_running_calls() {
        let execs = Executions::default();
        let (a, _) = execs.begin(&CallKey::new("s", "a"), "r");
        let (b, _) = execs.begin(&CallKey::new("s", "b"), "r");
        let (c, _) = execs.begin(&CallKey::new("t", "c"), "r");
        b.finish(response("done"));
        let cancelled = execs.cancel_session("s");
        assert_eq!(cancelled.len(), 1);
        assert!(a.is_cancelled() && !b.is_cancelled() && !c.is_cancelled());
    }
}
