//! What SessionApi asks of Temporal and the blob store on a call's behalf:
//! handles, signals and updates with their errors, the state query, the
//! limits that need Temporal (open sessions, the turn queue), stored
//! messages.

use super::*;

impl SessionApi {
    /// Refuses a new session when the caller's tenant has as many open
    /// sessions as it may (as far as Temporal's visibility store knows).
    pub(super) async fn check_open_sessions(
        &self,
        caller: &keel_auth::Caller,
    ) -> Result<(), Status> {
        let tenant = tenant_of(caller);
        let request = CountWorkflowExecutionsRequest {
            namespace: self.namespace.clone(),
            query: format!(
                "WorkflowType = '{}' AND WorkflowId STARTS_WITH '{}' AND ExecutionStatus = 'Running'",
                api::WORKFLOW_TYPE,
                api::tenant_workflow_id_prefix(tenant)
            ),
        };
        let mut client = self.client.clone();
        let open = WorkflowService::count_workflow_executions(
            &mut client,
            tonic::IntoRequest::into_request(request),
        )
        .await
        .map_err(|s| errors::unavailable("cannot count the open sessions", s))?
        .into_inner()
        .count;
        let max = self.tenants.limits().tenant_max_open_sessions;
        if open >= i64::from(max) {
            return Err(crate::limits::exhausted(
                &caller.tenant,
                format!("{open} sessions are open (at most {max}); close some (CloseSession)"),
                "--tenant-max-open-sessions",
                None,
            ));
        }
        Ok(())
    }

    pub(crate) fn handle(&self, session_id: &str) -> WorkflowHandle<Client, SessionWorkflow> {
        self.client
            .get_workflow_handle::<SessionWorkflow>(api::workflow_id(session_id))
    }

    /// The workflow holding an event log: the session's, or a sub-agent's.
    pub(crate) fn log_handle(
        &self,
        log: &crate::events::Log,
    ) -> WorkflowHandle<Client, SessionWorkflow> {
        self.client
            .get_workflow_handle::<SessionWorkflow>(log.workflow_id())
    }

    /// After a NOT_FOUND from a signal or query: was the session never there,
    /// or is it closed?
    pub(super) async fn missing_or_closed(&self, session_id: &str) -> Status {
        match self
            .handle(session_id)
            .describe(WorkflowDescribeOptions::default())
            .await
        {
            Ok(_) => errors::closed(session_id),
            Err(_) => errors::not_found(session_id),
        }
    }

    pub(super) async fn signal<S>(
        &self,
        session_id: &str,
        signal: S,
        input: S::Input,
        what: &str,
    ) -> Result<(), Status>
    where
        S: temporalio_common::SignalDefinition<Workflow = SessionWorkflow>,
        S::Input: Send,
    {
        match self
            .handle(session_id)
            .signal(signal, input, WorkflowSignalOptions::default())
            .await
        {
            Ok(()) => Ok(()),
            Err(e) => match errors::interaction(what, e) {
                Some(status) => Err(status),
                None => Err(self.missing_or_closed(session_id).await),
            },
        }
    }

    pub(super) async fn update<U>(
        &self,
        session_id: &str,
        update: U,
        input: U::Input,
    ) -> Result<U::Output, Status>
    where
        U: temporalio_common::UpdateDefinition<Workflow = SessionWorkflow>,
        U::Input: Send,
        U::Output: 'static,
    {
        match self
            .handle(session_id)
            .execute_update(update, input, WorkflowExecuteUpdateOptions::default())
            .await
        {
            Ok(out) => Ok(out),
            Err(e) => match errors::update(session_id, e) {
                Some(status) => Err(status),
                None => Err(self.missing_or_closed(session_id).await),
            },
        }
    }

    /// Stores a user message as a Responses API `message` item; returns its
    /// digest (what history carries) and the preview the event log shows.
    pub(super) async fn store_message(
        &self,
        key: &str,
        text: &str,
        images: Vec<serde_json::Value>,
    ) -> Result<(String, String, bool), Status> {
        let digest = self.store_item_with(key, "user", text, images).await?;
        let (preview, truncated) = api::cut_text(text, api::INLINE_TEXT_LIMIT);
        Ok((digest, preview, truncated))
    }

    /// Stores `text` as a Responses API `message` item of `role`; returns
    /// its digest.
    pub(super) async fn store_item(
        &self,
        key: &str,
        role: &str,
        text: &str,
    ) -> Result<String, Status> {
        self.store_item_with(key, role, text, Vec::new()).await
    }

    /// [`Self::store_item`], with `parts` (images) after the text.
    async fn store_item_with(
        &self,
        key: &str,
        role: &str,
        text: &str,
        parts: Vec<serde_json::Value>,
    ) -> Result<String, Status> {
        let mut content = vec![json!({"type": "input_text", "text": text})];
        content.extend(parts);
        let item = json!({
            "type": "message",
            "role": role,
            "content": content,
        });
        self.session_blobs(key)?
            .put_json(&item)
            .await
            .map_err(|e| errors::blob_store(format!("cannot store the {role} message: {e}")))
    }

    /// Refuses a turn while the session's queue of waiting turns is at its
    /// limit. The workflow keeps a memo flag current, so this is one
    /// Temporal call and needs no worker; the workflow refuses a turn that
    /// gets past a stale flag (with an `error` event). Other failures are
    /// left to the signal that follows, which reports them precisely.
    pub(super) async fn check_queue(&self, key: &str) -> Result<(), Status> {
        let Ok(description) = self
            .handle(key)
            .describe(WorkflowDescribeOptions::default())
            .await
        else {
            return Ok(());
        };
        let Some(info) = description.raw_description.workflow_execution_info else {
            return Ok(());
        };
        let full = wf_status(info.status) == WorkflowExecutionStatus::Running
            && info
                .memo
                .as_ref()
                .and_then(|m| m.fields.get(api::MEMO_QUEUE_FULL))
                .and_then(|p| serde_json::from_slice::<bool>(&p.data).ok())
                .unwrap_or(false);
        if full {
            return Err(errors::queue_full(key));
        }
        Ok(())
    }

    /// The session's state, FAILED_PRECONDITION when it is closed.
    pub(super) async fn open_state(&self, session_id: &str) -> Result<SessionState, Status> {
        let (state, wf) = self.state(session_id).await?;
        if !matches!(
            status_of(state.status, wf, false),
            pb::SessionStatus::Idle | pb::SessionStatus::Running
        ) {
            return Err(errors::closed(session_id));
        }
        Ok(state)
    }

    pub(crate) async fn state(
        &self,
        session_id: &str,
    ) -> Result<(SessionState, WorkflowExecutionStatus), Status> {
        let handle = self.handle(session_id);
        let description = handle
            .describe(WorkflowDescribeOptions::default())
            .await
            .map_err(|e| {
                errors::interaction("cannot read the session", e)
                    .unwrap_or_else(|| errors::not_found(session_id))
            })?;
        let state = handle
            .query(StateQuery, (), WorkflowQueryOptions::default())
            .await
            .map_err(|e| {
                errors::query("cannot read the session", e)
                    .unwrap_or_else(|| errors::not_found(session_id))
            })?;
        Ok((state, description.status()))
    }

    pub(crate) fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    pub(crate) fn metrics(&self) -> &crate::metrics::ApiMetrics {
        &self.metrics
    }

    /// The blob store part of the session with key `key`.
    pub(crate) fn session_blobs(&self, key: &str) -> Result<BlobStore, Status> {
        self.blobs
            .for_session(key)
            .map_err(|e| crate::errors::internal(e.to_string()))
    }
}
