//! RunTool's path: one execution per (session id, call id), run by a task of
//! its own so that it outlives the RPC that started it, journaled before it
//! starts and after it ends. [`crate::calls`] states the guarantees.

use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tracing::Instrument as _;

use keel_blobstore::BlobError;
use keel_proto::v1::{CommandRun, RunToolRequest, RunToolResponse};
use keel_tool_model::Invocation;
use sha2::{Digest as _, Sha256};
use tokio::time::Instant;
use tonic::Status;

use super::{DISPLAY_LIMIT_BYTES, ToolRunner, millis};
use crate::calls::journal::{StartedRecord, unix_ms};
use crate::calls::registry::{CancelTarget, Execution, Outcome, Role, Unstored};
use crate::calls::{CallKey, JournalEntry, aborted_text, is_shell_family, restarted_text};
use crate::exec::orphans::ProcessOwner;
use crate::format::cut_at_char_boundary;
use crate::tools::{self, ToolCall, ToolContext, ToolOutcome};

/// Tries at storing an output item before the call is left for a retry to
/// store.
const STORE_ATTEMPTS: u32 = 3;
const STORE_FIRST_BACKOFF: Duration = Duration::from_millis(200);

impl ToolRunner {
    /// Runs `req` unless its key has run or is running; either way returns
    /// the key's one response.
    pub(super) async fn run_tool_once(
        &self,
        req: RunToolRequest,
    ) -> Result<RunToolResponse, Status> {
        self.check_invocation(&req)?;
        let key = CallKey::new(&req.session_id, &req.call_id)
            .with_agent(&req.agent_id)
            .with_attempt(req.attempt);
        let digest = request_digest(&req);
        // A draining runner finishes what it has and answers what it
        // recorded, but starts nothing new: the worker runs the call on
        // the runner it moves the workspace to.
        if self.inner.fleet.draining()
            && self.inner.executions.get(&key).is_none()
            && matches!(
                self.inner.journal.lookup(&key).await,
                Ok(JournalEntry::Absent)
            )
        {
            return Err(super::errors::draining(format!(
                "tool-runner {} is draining; the call did not run",
                self.inner.fleet.runner_id()
            )));
        }
        loop {
            let (exec, role) = self.inner.executions.begin(&key, &digest);
            match role {
                Role::New => {
                    // The tool call's span, in the caller's trace (this
                    // call's span is the current one).
                    let span = tracing::info_span!(
                        "tool_call",
                        otel.name = format!("tool {}", req.tool_name),
                        session_id = %req.session_id,
                        call_id = %req.call_id,
                        tool = %req.tool_name,
                        keel.tool.attempt = req.attempt,
                        keel.tool.outcome = tracing::field::Empty,
                        keel.command.argv0 = tracing::field::Empty,
                        keel.command.exit_code = tracing::field::Empty,
                        keel.command.duration_ms = tracing::field::Empty,
                        keel.sandbox.mode = tracing::field::Empty,
                        keel.sandbox.denied = tracing::field::Empty,
                    );
                    tokio::spawn(
                        self.clone()
                            .drive(Arc::clone(&exec), req.clone())
                            .instrument(span),
                    );
                }
                Role::StoreAgain(unstored) => {
                    tokio::spawn(self.clone().store_again(Arc::clone(&exec), unstored));
                }
                Role::Attached => {
                    if !exec.request_digest.is_empty() && exec.request_digest != digest {
                        tracing::warn!(
                            session_id = %req.session_id,
                            call_id = %req.call_id,
                            tool = %req.tool_name,
                            "a repeated tool call differs from the first; answering with the first's result"
                        );
                    }
                    tracing::info!(
                        session_id = %req.session_id,
                        call_id = %req.call_id,
                        "attached to the tool call's execution"
                    );
                }
            }
            match exec.wait().await {
                Outcome::Response(response) => return Ok(RunToolResponse::clone(&response)),
                Outcome::Unstored(unstored) => {
                    return Err(super::errors::blob_store(format!(
                        "the tool ran but its output item could not be stored ({}); retry the call to store it",
                        unstored.error
                    )));
                }
                Outcome::Failed(status) => return Err(status),
                Outcome::Retry => {}
            }
        }
    }

    /// A request that carries an invocation must carry the one its tool
    /// and arguments yield here: what the caller decided on is what runs.
    /// A mismatch (a caller built from another version of the tool model,
    /// or one that edited the invocation) runs nothing.
    fn check_invocation(&self, req: &RunToolRequest) -> Result<(), Status> {
        let Some(wire) = &req.invocation else {
            return Ok(());
        };
        let expected =
            Invocation::try_from(wire).map_err(|err| super::errors::invalid(err.to_string()))?;
        let user_shell = self.user_shell_for(req);
        let mismatch = |why: String| {
            tracing::warn!(session_id = %req.session_id, call_id = %req.call_id, tool = %req.tool_name, "{why}");
            Err(super::errors::invocation_mismatch(format!(
                "the call's invocation does not match its arguments, so nothing ran: {why}"
            )))
        };
        match keel_tool_model::parse_call(&req.tool_name, &req.arguments, &req.cwd, user_shell) {
            None => mismatch(format!("{} is not a command tool", req.tool_name)),
            Some(Err(text)) => mismatch(format!("the arguments do not parse ({text})")),
            Some(Ok(parsed)) if parsed.invocation != expected => mismatch(format!(
                "the arguments yield {:?}, the request carries {expected:?}",
                parsed.invocation
            )),
            Some(Ok(_)) => Ok(()),
        }
    }

    /// The user's shell a request's scripts run with.
    fn user_shell_for<'a>(&'a self, req: &'a RunToolRequest) -> &'a str {
        if req.user_shell.is_empty() {
            &self.inner.user_shell
        } else {
            &req.user_shell
        }
    }

    /// The execution's task: resolve the key from the journal or run the
    /// tool, then publish the outcome.
    async fn drive(self, exec: Arc<Execution>, req: RunToolRequest) {
        let unfinished = Unfinished {
            runner: &self,
            exec: &exec,
            armed: true,
        };
        let (outcome, journaled) = self.resolve(&exec, &req).await;
        unfinished.disarm();
        self.settle(&exec, outcome, journaled);
    }

    async fn resolve(&self, exec: &Execution, req: &RunToolRequest) -> (Outcome, bool) {
        let journal = &self.inner.journal;
        let key = &exec.key;
        let outcome = match journal.lookup(key).await {
            Err(err) => {
                tracing::error!(session_id = %key.session_id, call_id = %key.call_id, error = %err, "cannot read the tool-call journal");
                return (
                    Outcome::Failed(super::errors::journal(format!(
                        "cannot read the tool-call journal: {err}"
                    ))),
                    false,
                );
            }
            Ok(JournalEntry::Finished(response)) => {
                tracing::info!(session_id = %key.session_id, call_id = %key.call_id, "tool call answered from the journal");
                return (Outcome::Response(Arc::new(response)), true);
            }
            Ok(JournalEntry::Started) => {
                tracing::warn!(
                    session_id = %key.session_id,
                    call_id = %key.call_id,
                    tool = %req.tool_name,
                    "the tool call was running when the tool-runner stopped; not running it again"
                );
                ToolOutcome::failure(restarted_text(&req.tool_name))
            }
            Ok(JournalEntry::Cancelled) => {
                ToolOutcome::failure(aborted_text(&req.tool_name, Duration::ZERO))
            }
            Ok(JournalEntry::Absent) => {
                let record = StartedRecord {
                    session_id: &req.session_id,
                    call_id: &req.call_id,
                    tool_name: &req.tool_name,
                    attempt: req.attempt,
                    started_at_unix_ms: unix_ms(SystemTime::now()),
                    tool_runner_pid: std::process::id(),
                };
                if let Err(err) = journal.record_started(key, &record).await {
                    tracing::error!(session_id = %key.session_id, call_id = %key.call_id, error = %err, "cannot journal a tool call; not running it");
                    return (
                        Outcome::Failed(super::errors::journal(format!(
                            "cannot journal the tool call, so it was not run: {err}"
                        ))),
                        false,
                    );
                }
                self.execute_cancellable(exec, req).await
            }
        };
        let (item, response) = output_item(req, &outcome);
        self.store_and_record(exec, item, response).await
    }

    /// Runs the tool until it finishes or the call is cancelled; dropping
    /// the tool's future kills what it started.
    async fn execute_cancellable(&self, exec: &Execution, req: &RunToolRequest) -> ToolOutcome {
        let start = Instant::now();
        let outcome = tokio::select! {
            biased;
            () = exec.cancelled() => {
                exec.mark_aborted();
                ToolOutcome::failure(aborted_text(&req.tool_name, start.elapsed()))
            }
            outcome = async {
                // Commands hold one of the runner's slots while they run.
                let _slot = match is_shell_family(&req.tool_name) {
                    true => Some(self.inner.fleet.command_slot().await),
                    false => None,
                };
                self.execute(req).await
            } => outcome,
        };
        let label = crate::metrics::outcome_label(&outcome, exec.was_aborted());
        self.inner
            .metrics
            .call(&req.tool_name, label, start.elapsed());
        let span = tracing::Span::current();
        span.record("keel.tool.outcome", label);
        span.record("keel.sandbox.denied", outcome.sandbox_denied);
        span.record(
            "keel.sandbox.mode",
            req.sandbox
                .as_ref()
                .and_then(|s| keel_proto::v1::SandboxMode::try_from(s.mode).ok())
                .map_or("default", |mode| mode.as_str_name()),
        );
        if let Some(command) = &outcome.command {
            // The program only: arguments may hold what should not leave
            // the runner.
            if let Some(argv0) = command.command.first() {
                span.record("keel.command.argv0", argv0.as_str());
            }
            if command.process_id.is_none() {
                span.record("keel.command.exit_code", command.exit_code);
            }
            span.record(
                "keel.command.duration_ms",
                command.duration.as_secs_f64() * 1000.0,
            );
        }
        tracing::info!(
            session_id = %req.session_id,
            call_id = %req.call_id,
            tool = %req.tool_name,
            custom = req.custom,
            attempt = req.attempt,
            sandbox = req
                .sandbox
                .as_ref()
                .and_then(|s| keel_proto::v1::SandboxMode::try_from(s.mode).ok())
                .map_or("default", |mode| mode.as_str_name()),
            success = outcome.success,
            sandbox_denied = outcome.sandbox_denied,
            aborted = exec.was_aborted(),
            exit_code = outcome.command.as_ref().map(|c| c.exit_code),
            "tool call"
        );
        outcome
    }

    /// The tool call itself.
    async fn execute(&self, req: &RunToolRequest) -> ToolOutcome {
        let inner = &self.inner;
        // Validated by RunTool before the call was registered.
        let policy = match self.sandbox_policy(req.sandbox.as_ref()) {
            Ok(policy) => policy,
            Err(status) => return ToolOutcome::failure(status.message().to_string()),
        };
        match self.session_cwd(&req.cwd) {
            Ok(cwd) => {
                let sandbox = self.call_sandbox(policy, &cwd);
                // Process records name the call, for the log of a restart
                // that kills what it left running.
                let executor = inner.executor.owned_by(ProcessOwner {
                    session_id: req.session_id.clone(),
                    call_id: req.call_id.clone(),
                    attempt: req.attempt,
                    tool_name: req.tool_name.clone(),
                });
                let ctx = ToolContext {
                    executor: &executor,
                    policy: inner.policy,
                    workspace: &inner.workspace,
                    processes: &inner.processes,
                    process_scope: &crate::calls::process_scope(&req.session_id, &req.agent_id),
                    cwd: &cwd,
                    user_shell: self.user_shell_for(req),
                    sandbox: &sandbox,
                };
                // Checked by check_invocation before the call was registered.
                let invocation = req
                    .invocation
                    .as_ref()
                    .and_then(|wire| Invocation::try_from(wire).ok());
                let call = ToolCall {
                    name: &req.tool_name,
                    arguments: &req.arguments,
                    custom: req.custom,
                    invocation: invocation.as_ref(),
                };
                tools::run_tool(&ctx, call).await
            }
            // The model must still get its one output for this call.
            Err(err) => ToolOutcome::failure(err.to_string()),
        }
    }

    /// Stores the output item and journals the response.
    async fn store_and_record(
        &self,
        exec: &Execution,
        item: serde_json::Value,
        mut response: RunToolResponse,
    ) -> (Outcome, bool) {
        let key = &exec.key;
        match self.store_item(&key.session_id, &item).await {
            Ok(digest) => response.output_item_digest = digest,
            Err(err) => {
                tracing::error!(session_id = %key.session_id, call_id = %key.call_id, error = %err, "cannot store a tool output item; a retry will store it");
                let unstored = Unstored {
                    item,
                    response,
                    error: err.to_string(),
                };
                return (Outcome::Unstored(Arc::new(unstored)), false);
            }
        }
        let journaled = match self.inner.journal.record_result(key, &response).await {
            Ok(()) => true,
            Err(err) => {
                // The memory is now the only record: a retry still gets this
                // response, unless the tool-runner restarts first.
                tracing::error!(session_id = %key.session_id, call_id = %key.call_id, error = %err, "cannot journal a tool call's result");
                false
            }
        };
        (Outcome::Response(Arc::new(response)), journaled)
    }

    async fn store_item(
        &self,
        session_id: &str,
        item: &serde_json::Value,
    ) -> Result<String, BlobError> {
        let blobs = self.inner.blobs.for_session(session_id)?;
        let mut backoff = STORE_FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            match blobs.put_json(item).await {
                Ok(digest) => return Ok(digest),
                Err(err) if attempt < STORE_ATTEMPTS => {
                    tracing::warn!(attempt, error = %err, "cannot store a tool output item; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff *= 4;
                    attempt += 1;
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// A retry of a call whose item was not stored: store it now.
    async fn store_again(self, exec: Arc<Execution>, unstored: Arc<Unstored>) {
        let unfinished = Unfinished {
            runner: &self,
            exec: &exec,
            armed: true,
        };
        let (outcome, journaled) = self
            .store_and_record(&exec, unstored.item.clone(), unstored.response.clone())
            .await;
        unfinished.disarm();
        self.settle(&exec, outcome, journaled);
    }

    /// Publishes the outcome; once the journal holds it (or nothing is worth
    /// keeping), the journal answers from now on and the entry goes.
    fn settle(&self, exec: &Arc<Execution>, outcome: Outcome, journaled: bool) {
        let keep = !journaled && matches!(outcome, Outcome::Response(_) | Outcome::Unstored(_));
        exec.finish(outcome);
        if !keep {
            self.inner.executions.remove(exec);
        }
    }

    /// CancelToolCall: true when a running call was stopped.
    pub(super) async fn cancel_call(&self, key: &CallKey) -> Result<bool, Status> {
        match self.inner.executions.begin_cancel(key) {
            CancelTarget::Running(exec) => {
                exec.wait_done().await;
                Ok(exec.was_aborted())
            }
            CancelTarget::Finished => Ok(false),
            CancelTarget::Unknown(placeholder) => {
                // While the placeholder holds the key no RunTool can start it,
                // so the tombstone cannot come too late.
                let journal = &self.inner.journal;
                let tombstone = match journal.lookup(key).await {
                    Ok(JournalEntry::Absent) => journal.record_cancelled(key).await,
                    Ok(_) => Ok(()),
                    Err(err) => Err(err),
                };
                placeholder.finish(Outcome::Retry);
                self.inner.executions.remove(&placeholder);
                tombstone.map_err(|err| {
                    super::errors::journal(format!("cannot journal the cancellation: {err}"))
                })?;
                Ok(false)
            }
        }
    }

    /// Cancels the session's running calls and waits for them to record
    /// their aborted outputs; returns how many were stopped.
    pub(super) async fn cancel_session_calls(&self, session_id: &str) -> usize {
        let running = self.inner.executions.cancel_session(session_id);
        let mut stopped = 0;
        for exec in running {
            exec.wait_done().await;
            if exec.was_aborted() {
                stopped += 1;
            }
        }
        stopped
    }
}

/// Should an execution's task end without an outcome (the runtime shutting
/// down under it), its waiters are told instead of waiting forever.
struct Unfinished<'a> {
    runner: &'a ToolRunner,
    exec: &'a Arc<Execution>,
    armed: bool,
}

impl Unfinished<'_> {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.exec
                .finish(Outcome::Failed(super::errors::shutting_down(
                    "the tool call stopped before it finished: the tool-runner is shutting down",
                )));
            self.runner.inner.executions.remove(self.exec);
        }
    }
}

/// Identifies what a request asks for, to notice a retry that differs.
fn request_digest(req: &RunToolRequest) -> String {
    let mut hasher = Sha256::new();
    for part in [&req.tool_name, &req.arguments, &req.cwd, &req.user_shell] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hasher.update([u8::from(req.custom)]);
    hasher.update(
        req.sandbox
            .as_ref()
            .map(prost::Message::encode_to_vec)
            .unwrap_or_default(),
    );
    hex::encode(hasher.finalize())
}

/// The output item the model gets, and the response without its digest.
fn output_item(
    req: &RunToolRequest,
    outcome: &ToolOutcome,
) -> (serde_json::Value, RunToolResponse) {
    let output = match &outcome.items {
        Some(items) => serde_json::Value::Array(items.clone()),
        None => serde_json::Value::String(outcome.text.clone()),
    };
    let item_type = if req.custom {
        "custom_tool_call_output"
    } else {
        "function_call_output"
    };
    let item = serde_json::json!({
        "type": item_type,
        "call_id": req.call_id,
        "output": output,
    });
    let response = RunToolResponse {
        output_item_digest: String::new(),
        success: outcome.success,
        output_preview: cut_at_char_boundary(&outcome.text, DISPLAY_LIMIT_BYTES).to_string(),
        command: outcome.command.as_ref().map(|c| CommandRun {
            command: c.command.clone(),
            cwd: c.cwd.to_string_lossy().into_owned(),
            exit_code: c.exit_code,
            duration_ms: millis(c.duration),
            aggregated_output: cut_at_char_boundary(&c.aggregated_output, DISPLAY_LIMIT_BYTES)
                .to_string(),
            running: c.process_id.is_some(),
            process_id: c.process_id.unwrap_or_default(),
        }),
        sandbox_denied: outcome.sandbox_denied,
        sandbox_unavailable: false,
    };
    (item, response)
}
