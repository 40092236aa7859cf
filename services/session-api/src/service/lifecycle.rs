//! Starting a session's workflow (CreateSession, ForkSession) and ending a
//! session for good (DeleteSession).

use keel_workflow_api::{Carried, ForkOrigin, ForkQuery, Registry};
use temporalio_common::protos::temporal::api::common::v1::WorkflowExecution;
use temporalio_common::protos::temporal::api::workflowservice::v1::DeleteWorkflowExecutionRequest;

use super::*;

/// How long DeleteSession waits for Temporal to remove a running workflow.
const DELETE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl SessionApi {
    /// Starts the workflow of a new session with key `key`, with the
    /// registry's memo fields set from the start (so the session is listed
    /// with them before its workflow first runs).
    pub(super) async fn start_session(
        &self,
        key: &str,
        input: &SessionInput,
    ) -> Result<(), Status> {
        let mut memo = MemoValues::new();
        memo.insert(api::MEMO_NAME, input.name.clone())
            .insert(api::MEMO_CWD, input.cwd.clone())
            .insert(api::MEMO_ARCHIVED, false);
        let options = WorkflowStartOptions::new(self.task_queue.clone(), api::workflow_id(key))
            .memo(memo)
            .build();
        self.client
            .start_workflow(SessionWorkflow, input.clone(), options)
            .await
            .map_err(|e| errors::start(key, e))?;
        Ok(())
    }

    /// ForkSession: the parent's fork point, its blobs copied to the new
    /// session's prefix, and the new session's workflow started from them.
    pub(super) async fn fork(
        &self,
        caller: &keel_auth::Caller,
        req: pb::ForkSessionRequest,
    ) -> Result<pb::Session, Status> {
        required_session_id(&req.session_id)?;
        if !req.turn_id.is_empty() {
            validate_id("turn_id", &req.turn_id)?;
        }
        check_name(&req.name)?;
        let child_id = if req.new_session_id.is_empty() {
            uuid::Uuid::new_v4().to_string()
        } else {
            validate_id("new_session_id", &req.new_session_id)?;
            req.new_session_id
        };
        let parent = session_key(caller, &req.session_id);
        let child = session_key(caller, &child_id);
        let point = self
            .handle(&parent)
            .query(ForkQuery, req.turn_id.clone(), WorkflowQueryOptions::default())
            .await
            .map_err(|e| {
                errors::query("cannot read the session", e)
                    .unwrap_or_else(|| errors::not_found(&parent))
            })?
            .ok_or_else(|| {
                errors::status(
                    tonic::Code::FailedPrecondition,
                    "turn_not_forkable",
                    if req.turn_id.is_empty() {
                        format!(
                            "session {:?} has no ended turn to fork at while a turn runs; fork at a turn id, or when it is idle",
                            req.session_id
                        )
                    } else {
                        format!(
                            "turn {:?} is not one of session {:?}'s newest {} ended turns",
                            req.turn_id,
                            req.session_id,
                            api::FORKABLE_TURNS
                        )
                    },
                )
            })?;
        self.check_open_sessions(caller).await?;
        let name = if !req.name.is_empty() {
            req.name
        } else if point.name.is_empty() {
            String::new()
        } else {
            let forked = format!("{} (fork)", point.name);
            forked.chars().take(api::MAX_NAME_CHARS).collect()
        };
        // The conversation's blobs (and everything else the parent stored)
        // become the fork's own, so deleting either leaves the other whole.
        self.blobs
            .copy_session(&parent, &child)
            .await
            .map_err(|e| errors::blob_store(format!("cannot copy the session's blobs: {e}")))?;
        let origin = ForkOrigin {
            session_id: parent.clone(),
            turn_id: point.turn.turn_id.clone(),
            last_offset: point.turn.last_offset,
        };
        let input = SessionInput {
            session_id: child.clone(),
            created_at_ms: now_ms(),
            owner: caller.principal.clone(),
            max_queued_turns: self.limits.max_queued_turns,
            retained_events: self.limits.retained_events,
            history_event_budget: self.limits.history_event_budget,
            name: name.clone(),
            forked_from: Some(origin),
            // The parent's crew started with the parent (the fork inherits
            // no sub-agents).
            crew: None,
            carried: Some(Carried {
                head: point.turn.head.clone(),
                pending: point.turn.pending.clone(),
                settings: Some(point.settings.clone()),
                registry: Registry {
                    name,
                    ..Registry::default()
                },
                ..Carried::default()
            }),
            ..point.input
        };
        self.start_session(&child, &input).await?;
        tracing::info!(session = %child, parent = %parent, turn = %point.turn.turn_id, principal = %caller.principal, "session forked");
        let state = SessionState {
            session_id: child,
            owner: input.owner.clone(),
            status: RunStatus::Idle,
            model: point.settings.model.clone(),
            settings: point.settings,
            cwd: input.cwd.clone(),
            created_at_ms: input.created_at_ms,
            last_activity_ms: input.created_at_ms,
            registry: Registry {
                name: input.name.clone(),
                ..Registry::default()
            },
            forked_from: input.forked_from.clone(),
            config: input.config.clone(),
            ..Default::default()
        };
        Ok(session_from_state(&state, WorkflowExecutionStatus::Running))
    }

    /// DeleteSession: the blobs, then every run of the workflow and of its
    /// sub-agents' workflows, then the blobs again (a tool call that ended meanwhile may have stored its
    /// output). Temporal removes a running workflow at once (terminating
    /// it); one that has already ended goes once Temporal's background
    /// tasks get to it (seconds to a minute), so for those the call does not
    /// wait.
    pub(super) async fn delete(&self, key: &str) -> Result<u64, Status> {
        let handle = self.handle(key);
        let description = handle
            .describe(WorkflowDescribeOptions::default())
            .await
            .map_err(|e| {
                errors::interaction("cannot read the session", e)
                    .unwrap_or_else(|| errors::not_found(key))
            })?;
        let running = description.status() == WorkflowExecutionStatus::Running;
        let mut blobs = self.delete_blobs(key).await?;
        // The current run first (a running one is terminated and removed at
        // once), then the runs continue-as-new left behind.
        self.delete_run(api::workflow_id(key), String::new())
            .await?;
        let query = format!(
            "WorkflowId = '{}' AND ExecutionStatus = 'ContinuedAsNew'",
            api::workflow_id(key)
        );
        self.delete_listed(&query).await?;
        // Its sub-agents' workflows, every run (a running one is
        // terminated by its deletion).
        let query = format!(
            "WorkflowId STARTS_WITH '{}'",
            api::agent_workflow_id(key, "")
        );
        self.delete_listed(&query).await?;
        if running {
            let deadline = tokio::time::Instant::now() + DELETE_WAIT;
            while handle
                .describe(WorkflowDescribeOptions::default())
                .await
                .is_ok()
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
        blobs += self.delete_blobs(key).await?;
        Ok(blobs)
    }

    /// Deletes every run the visibility query lists.
    async fn delete_listed(&self, query: &str) -> Result<(), Status> {
        let mut token = Vec::new();
        loop {
            let page = self.visibility_page(query, 100, token, false).await?;
            for info in page.executions {
                if let Some(execution) = info.execution {
                    self.delete_run(execution.workflow_id, execution.run_id)
                        .await?;
                }
            }
            if page.next_page_token.is_empty() {
                return Ok(());
            }
            token = page.next_page_token;
        }
    }

    async fn delete_blobs(&self, key: &str) -> Result<u64, Status> {
        self.blobs
            .delete_session(key)
            .await
            .map(|n| n as u64)
            .map_err(|e| errors::blob_store(format!("cannot delete the session's blobs: {e}")))
    }

    /// Asks Temporal to delete one run (`run_id` empty: the newest).
    async fn delete_run(&self, workflow_id: String, run_id: String) -> Result<(), Status> {
        let request = DeleteWorkflowExecutionRequest {
            namespace: self.namespace.clone(),
            workflow_execution: Some(WorkflowExecution {
                workflow_id,
                run_id,
            }),
        };
        let mut client = self.client.clone();
        match WorkflowService::delete_workflow_execution(
            &mut client,
            tonic::IntoRequest::into_request(request),
        )
        .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(()),
            Err(s) => Err(errors::unavailable("cannot delete the session", s)),
        }
    }
}
