use std::pin::Pin;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use futures::{Stream, StreamExt as _};
use keel_blobstore::BlobStore;
use keel_proto::v1 as pb;
use keel_proto::v1::session_service_server::SessionService;
use keel_workflow_api::{
    self as api, ArchiveUpdate, CompactSignal, InterruptSignal, OverrideContextUpdate,
    RenameUpdate, RespondUpdate, RunStatus, SessionInput, SessionState, SessionWorkflow,
    ShutdownSignal, StateQuery, Steer, SteerUpdate, UserTurn, UserTurnSignal,
};
use serde_json::json;
use temporalio_client::{
    Client, WorkflowDescribeOptions, WorkflowExecuteUpdateOptions, WorkflowExecutionStatus,
    WorkflowHandle, WorkflowQueryOptions, WorkflowSignalOptions, WorkflowStartOptions,
    errors::WorkflowUpdateError, grpc::WorkflowService,
};
use temporalio_common::MemoValues;
use temporalio_common::protos::temporal::api::workflowservice::v1::{
    CountWorkflowExecutionsRequest, ListWorkflowExecutionsRequest,
};
use tonic::{Request, Response, Status};

use crate::errors;
use crate::events;
use crate::hub::Hub;
use crate::limits::{Limiter, TenantLimits};
use crate::{options, requests, settings};

mod agents;
mod convert;
mod lifecycle;
mod list;
mod temporal;

use convert::*;

const MAX_ID_LEN: usize = 64;
/// A user message (SendUserTurn, SteerTurn); the model gets it whole, from
/// the blob store.
const MAX_TEXT_BYTES: usize = 1024 * 1024;
/// Developer instructions travel in the session's workflow input (history).
const MAX_DEVELOPER_INSTRUCTIONS_BYTES: usize = 32 * 1024;
/// The largest request session-api decodes.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

fn check_text(text: &str) -> Result<(), Status> {
    if text.trim().is_empty() {
        return Err(crate::errors::invalid("text must not be empty"));
    }
    if text.len() > MAX_TEXT_BYTES {
        return Err(crate::errors::invalid(format!(
            "text is {} bytes; at most {MAX_TEXT_BYTES}",
            text.len()
        )));
    }
    Ok(())
}
/// Images per user turn, and their bytes together.
const MAX_IMAGES: usize = 8;
const MAX_IMAGE_BYTES: usize = 3 * 1024 * 1024;

/// A user turn's images as `input_image` parts (data URLs), checked.
fn image_parts(images: &[pb::InputImage]) -> Result<Vec<serde_json::Value>, Status> {
    use base64::Engine as _;
    if images.len() > MAX_IMAGES {
        return Err(crate::errors::invalid(format!(
            "images: at most {MAX_IMAGES} per turn, got {}",
            images.len()
        )));
    }
    let total: usize = images.iter().map(|i| i.data.len()).sum();
    if total > MAX_IMAGE_BYTES {
        return Err(crate::errors::invalid(format!(
            "images: {total} bytes together; at most {MAX_IMAGE_BYTES}"
        )));
    }
    images
        .iter()
        .enumerate()
        .map(|(n, image)| {
            if !matches!(
                image.mime_type.as_str(),
                "image/png" | "image/jpeg" | "image/gif" | "image/webp"
            ) {
                return Err(crate::errors::invalid(format!(
                    "images[{n}]: mime_type {:?} is not image/png, image/jpeg, image/gif or image/webp",
                    image.mime_type
                )));
            }
            if image.data.is_empty() {
                return Err(crate::errors::invalid(format!("images[{n}] is empty")));
            }
            let data = base64::engine::general_purpose::STANDARD.encode(&image.data);
            Ok(serde_json::json!({
                "type": "input_image",
                "image_url": format!("data:{};base64,{data}", image.mime_type),
            }))
        })
        .collect()
}

#[derive(Clone)]
pub struct SessionApi {
    hub: Arc<Hub>,
    client: Client,
    blobs: BlobStore,
    task_queue: String,
    namespace: String,
    limits: SessionLimits,
    tenants: Arc<Limiter>,
    metrics: crate::metrics::ApiMetrics,
}

/// Per-session limits session-api gives every new session.
#[derive(Clone, Copy, Debug, Default)]
pub struct SessionLimits {
    /// Events kept for replay (0: the workflow's default).
    pub retained_events: u32,
    /// Continue-as-new after this many history events (0: the default).
    pub history_event_budget: u32,
    /// User turns a new session may have waiting behind its running one
    /// (0: no limit).
    pub max_queued_turns: u32,
}

impl SessionApi {
    pub fn new(
        client: Client,
        blobs: BlobStore,
        task_queue: String,
        namespace: String,
        limits: SessionLimits,
        tenant_limits: TenantLimits,
        metrics: crate::metrics::ApiMetrics,
    ) -> Self {
        Self {
            hub: Arc::new(Hub::default()),
            client,
            blobs,
            task_queue,
            namespace,
            limits,
            tenants: Arc::new(Limiter::new(tenant_limits)),
            metrics,
        }
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::StreamEventsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl SessionService for SessionApi {
    async fn create_session(
        &self,
        request: Request<pb::CreateSessionRequest>,
    ) -> Result<Response<pb::CreateSessionResponse>, Status> {
        let caller = keel_auth::caller(&request)?;
        let req = request.into_inner();
        let session_id = if req.session_id.is_empty() {
            uuid::Uuid::new_v4().to_string()
        } else {
            validate_id("session_id", &req.session_id)?;
            req.session_id
        };
        let key = session_key(&caller, &session_id);
        if req.cwd.len() > settings::MAX_PATH_LEN || req.cwd.contains('\0') {
            return Err(crate::errors::invalid(format!(
                "cwd is not a path (at most {} bytes, no NUL)",
                settings::MAX_PATH_LEN
            )));
        }
        if req.developer_instructions.len() > MAX_DEVELOPER_INSTRUCTIONS_BYTES {
            return Err(crate::errors::invalid(format!(
                "developer_instructions is {} bytes; at most {MAX_DEVELOPER_INSTRUCTIONS_BYTES}",
                req.developer_instructions.len()
            )));
        }
        settings::check_model("model", &req.model)?;
        check_name(&req.name)?;
        if !req.cwd.is_empty() && !req.cwd.starts_with('/') {
            return Err(crate::errors::invalid(format!(
                "cwd {:?} must be an absolute path",
                req.cwd
            )));
        }
        let context = settings::patch(req.context)?;
        let dynamic_tools = settings::dynamic_tools(req.dynamic_tools)?;
        let mcp_servers = settings::mcp_servers(req.mcp_servers)?;
        let git = settings::git_source(req.git, &req.cwd)?;
        let features = options::features(req.features)?;
        let multi_agent = features
            .as_ref()
            .and_then(|f| f.multi_agent)
            .unwrap_or(false);
        let (roles, agent_limits, crew) = options::agents(
            req.agent_roles,
            req.agent_limits,
            req.crew,
            multi_agent,
            MAX_DEVELOPER_INSTRUCTIONS_BYTES,
        )?;
        let project_doc = options::project_doc(req.project_doc)?;
        let rules = options::rules(req.rules)?;
        let config = options::config(req.config)?;
        let model_provider = options::model_provider(req.model_provider)?;
        options::base_instructions(&req.base_instructions)?;
        if pb::ShellToolKind::try_from(req.shell_tool).is_err() {
            return Err(crate::errors::invalid(format!(
                "shell_tool: unknown ShellToolKind {}",
                req.shell_tool
            )));
        }
        // Stored once; the workflow and its history carry the digest.
        let base_instructions_digest = if req.base_instructions.is_empty() {
            String::new()
        } else {
            self.session_blobs(&key)?
                .put(req.base_instructions.clone().into_bytes())
                .await
                .map_err(|e| {
                    errors::blob_store(format!("cannot store the base instructions: {e}"))
                })?
        };
        let developer_instructions_digest = if req.developer_instructions.is_empty() {
            String::new()
        } else {
            self.store_item(&key, "developer", &req.developer_instructions)
                .await?
        };
        // A role's instructions are stored as the session's are.
        let mut agent_roles = Vec::with_capacity(roles.len());
        for options::RoleInput {
            mut role,
            developer_instructions,
        } in roles
        {
            if !developer_instructions.is_empty() {
                role.developer_instructions_digest = self
                    .store_item(&key, "developer", &developer_instructions)
                    .await?;
            }
            agent_roles.push(role);
        }
        let input = SessionInput {
            session_id: key.clone(),
            model: req.model,
            context,
            dynamic_tools,
            shell_tool: req.shell_tool,
            cwd: req.cwd,
            developer_instructions: String::new(),
            developer_instructions_digest,
            max_queued_turns: self.limits.max_queued_turns,
            mcp_servers,
            git,
            features,
            project_doc,
            rules,
            config,
            model_provider,
            base_instructions_digest,
            created_at_ms: now_ms(),
            retained_events: self.limits.retained_events,
            history_event_budget: self.limits.history_event_budget,
            carried: None,
            owner: caller.principal.clone(),
            name: req.name,
            forked_from: None,
            // The session's own agent.
            agent: None,
            agent_roles,
            agent_limits,
            crew,
        };
        self.check_open_sessions(&caller).await?;
        self.start_session(&key, &input).await?;
        tracing::info!(session = %key, principal = %caller.principal, "session created");
        let settings = api::TurnSettings::initial(&input.model, input.context.as_ref());
        let state = SessionState {
            session_id: key,
            owner: caller.principal,
            status: RunStatus::Idle,
            model: settings.model.clone(),
            settings,
            cwd: input.cwd,
            created_at_ms: input.created_at_ms,
            last_activity_ms: input.created_at_ms,
            registry: api::Registry {
                name: input.name,
                ..Default::default()
            },
            ..Default::default()
        };
        Ok(Response::new(pb::CreateSessionResponse {
            session: Some(session_from_state(&state, WorkflowExecutionStatus::Running)),
        }))
    }

    async fn send_user_turn(
        &self,
        request: Request<pb::SendUserTurnRequest>,
    ) -> Result<Response<pb::SendUserTurnResponse>, Status> {
        let caller = keel_auth::caller(&request)?;
        let req = request.into_inner();
        required_session_id(&req.session_id)?;
        let key = session_key(&caller, &req.session_id);
        check_text(&req.text)?;
        let images = image_parts(&req.images)?;
        let context = settings::patch(req.context)?;
        let schema = options::output_schema(&req.final_output_json_schema)?;
        self.tenants.take_turn(&caller.tenant)?;
        self.check_queue(&key).await?;
        let turn_id = if req.turn_id.is_empty() {
            uuid::Uuid::new_v4().to_string()
        } else {
            validate_id("turn_id", &req.turn_id)?;
            req.turn_id
        };
        let (item_digest, text_preview, text_truncated) =
            self.store_message(&key, &req.text, images).await?;
        // Stored, so no workflow history repeats it with every turn.
        let output_schema_digest = match schema {
            None => String::new(),
            Some(schema) => self
                .session_blobs(&key)?
                .put_json(&schema)
                .await
                .map_err(|e| errors::blob_store(format!("cannot store the output schema: {e}")))?,
        };
        let turn = UserTurn {
            turn_id: turn_id.clone(),
            item_digest,
            inline_item: String::new(),
            text_preview,
            text_truncated,
            context,
            output_schema_digest,
            // The workflow sets it from the signal's trace context.
            trace: Default::default(),
        };
        self.signal(&key, UserTurnSignal, turn, "cannot send the turn")
            .await?;
        Ok(Response::new(pb::SendUserTurnResponse { turn_id }))
    }

    async fn steer_turn(
        &self,
        request: Request<pb::SteerTurnRequest>,
    ) -> Result<Response<pb::SteerTurnResponse>, Status> {
        let caller = keel_auth::caller(&request)?;
        let req = request.into_inner();
        required_session_id(&req.session_id)?;
        let key = session_key(&caller, &req.session_id);
        check_text(&req.text)?;
        if req.expected_turn_id.is_empty() {
            return Err(crate::errors::invalid(
                "expected_turn_id must name the turn to steer",
            ));
        }
        validate_id("expected_turn_id", &req.expected_turn_id)?;
        self.tenants.take_turn(&caller.tenant)?;
        let (item_digest, text_preview, text_truncated) =
            self.store_message(&key, &req.text, Vec::new()).await?;
        let steer = Steer {
            expected_turn_id: req.expected_turn_id.clone(),
            item_digest: item_digest.clone(),
            text_preview: text_preview.clone(),
            text_truncated,
        };
        let refusal = match self
            .handle(&key)
            .execute_update(SteerUpdate, steer, WorkflowExecuteUpdateOptions::default())
            .await
        {
            Ok(()) => {
                return Ok(Response::new(pb::SteerTurnResponse {
                    turn_id: req.expected_turn_id,
                    queued: false,
                }));
            }
            // The workflow refused: that turn is not running.
            Err(WorkflowUpdateError::Failed(failure)) => failure.message,
            Err(e) => {
                return Err(match errors::update(&key, e) {
                    Some(status) => status,
                    None => self.missing_or_closed(&key).await,
                });
            }
        };
        if !req.queue_if_not_running {
            return Err(errors::status(
                tonic::Code::FailedPrecondition,
                "turn_not_running",
                format!(
                    "session {:?}: {refusal}; send it as a new turn (SendUserTurn) or set queue_if_not_running",
                    req.session_id
                ),
            ));
        }
        self.check_queue(&key).await?;
        let turn_id = uuid::Uuid::new_v4().to_string();
        let turn = UserTurn {
            turn_id: turn_id.clone(),
            item_digest,
            inline_item: String::new(),
            text_preview,
            text_truncated,
            context: None,
            output_schema_digest: String::new(),
            trace: Default::default(),
        };
        self.signal(&key, UserTurnSignal, turn, "cannot queue the turn")
            .await?;
        Ok(Response::new(pb::SteerTurnResponse {
            turn_id,
            queued: true,
        }))
    }

    type StreamEventsStream = EventStream;

    async fn stream_events(
        &self,
        request: Request<pb::StreamEventsRequest>,
    ) -> Result<Response<Self::StreamEventsStream>, Status> {
        let caller = keel_auth::caller(&request)?;
        let req = request.into_inner();
        required_session_id(&req.session_id)?;
        let key = session_key(&caller, &req.session_id);
        // Fail fast on an unknown session or a future offset.
        let (state, _) = self.state(&key).await?;
        let own_log = req.agent_id.is_empty() || req.agent_id == req.session_id;
        if own_log && req.after_offset > state.last_event_offset {
            return Err(errors::status(
                tonic::Code::OutOfRange,
                "offset_out_of_range",
                format!(
                    "after_offset {} is beyond the newest event ({})",
                    req.after_offset, state.last_event_offset
                ),
            ));
        }
        if !req.all_agents && !req.agent_offsets.is_empty() {
            return Err(errors::invalid("agent_offsets needs all_agents"));
        }
        // One sub-agent's log.
        let agent = match req.agent_id.as_str() {
            "" => None,
            id if id == req.session_id => None,
            _ if req.all_agents => {
                return Err(errors::invalid(
                    "agent_id streams one agent; all_agents streams them all: set one of them",
                ));
            }
            id => match state.agents.iter().find(|a| a.agent_id == id) {
                Some(a) => Some(events::Log::agent(&key, &a.agent_id, &a.parent_agent_id)),
                None => {
                    return Err(errors::status(
                        tonic::Code::InvalidArgument,
                        "agent_not_found",
                        format!(
                            "session {} has no agent {}",
                            req.session_id,
                            api::cut_text(id, 64).0
                        ),
                    ));
                }
            },
        };
        let mut offsets = std::collections::BTreeMap::new();
        for o in &req.agent_offsets {
            let Some(agent) = state.agents.iter().find(|a| a.agent_id == o.agent_id) else {
                return Err(errors::invalid(format!(
                    "agent_offsets names {}, which is not an agent of session {}",
                    api::cut_text(&o.agent_id, 64).0,
                    req.session_id
                )));
            };
            if offsets
                .insert(agent.agent_id.clone(), o.after_offset)
                .is_some()
            {
                return Err(errors::invalid(format!(
                    "agent_offsets names {} twice",
                    agent.agent_id
                )));
            }
        }
        let slot = self.tenants.open_stream(&caller.tenant)?;
        let stream: Self::StreamEventsStream = if let Some(log) = agent {
            Box::pin(events::stream(
                self.clone(),
                log,
                req.after_offset,
                req.follow,
                false,
            ))
        } else if req.all_agents {
            let known = state
                .agents
                .iter()
                .map(|a| (a.agent_id.clone(), a.parent_agent_id.clone()))
                .collect();
            Box::pin(events::merged(
                self.clone(),
                key,
                req.after_offset,
                offsets,
                known,
                req.follow,
                req.live_deltas,
            ))
        } else {
            Box::pin(events::stream(
                self.clone(),
                events::Log::session(&key),
                req.after_offset,
                req.follow,
                req.live_deltas,
            ))
        };
        // The tenant's stream is counted until the client goes away.
        let stream = stream.map(move |item| {
            let _open = &slot;
            item
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_session(
        &self,
        request: Request<pb::GetSessionRequest>,
    ) -> Result<Response<pb::GetSessionResponse>, Status> {
        let caller = keel_auth::caller(&request)?;
        let req = request.into_inner();
        required_session_id(&req.session_id)?;
        let key = session_key(&caller, &req.session_id);
        let (state, wf) = self.state(&key).await?;
        let mut session = session_from_state(&state, wf);
        if wf == WorkflowExecutionStatus::Running && !state.agents.is_empty() {
            let asked = self.agents_pending(&key, &state).await;
            if !asked.is_empty() {
                session.status = status_of(state.status, wf, true) as i32;
            }
            session
                .pending_requests
                .extend(asked.into_iter().map(|r| pb::PendingRequest {
                    request_id: r.request.request_id,
                    turn_id: r.request.turn_id,
                    kind: pb::PendingRequestKind::from(r.request.kind) as i32,
                    agent_id: r.agent_id,
                }));
        }
        Ok(Response::new(pb::GetSessionResponse {
            session: Some(session),
        }))
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let caller = keel_auth::caller(&request)?;
        let req = request.into_inner();
        let filter = list::Filter::new(req.filter)?;
        let page = self
            .list(tenant_of(&caller), req.page_size, &req.page_token, filter)
            .await?;
        Ok(Response::new(page))
    }

    async fn rename_session(
        &self,
        request: Request<pb::RenameSessionRequest>,
    ) -> Result<Response<pb::RenameSessionResponse>, Status> {
        let caller = keel_auth::caller(&request)?;
        let req = request.into_inner();
        required_session_id(&req.session_id)?;
        check_name(&req.name)?;
        let key = session_key(&caller, &req.session_id);
        self.update(&key, RenameUpdate, req.name).await?;
        Ok(Response::new(pb::RenameSessionResponse {}))
    }

    async fn archive_session(
        &self,
        request: Request<pb::ArchiveSessionRequest>,
    ) -> Result<Response<pb::ArchiveSessionResponse>, Status> {
        let caller = keel_auth::caller(&request)?;
        let req = request.into_inner();
        required_session_id(&req.session_id)?;
        let key = session_key(&caller, &req.session_id);
        self.update(&key, ArchiveUpdate, true).await?;
        Ok(Response::new(pb::ArchiveSessionResponse {}))
    }

    async fn unarchive_session(
        &self,
        request: Request<pb::UnarchiveSessionRequest>,
    ) -> Result<Response<pb::UnarchiveSessionResponse>, Status> {
        let caller = keel_auth::caller(&request)?;
        let req = request.into_inner();
        required_session_id(&req.session_id)?;
        let key = session_key(&caller, &req.session_id);
        self.update(&key, ArchiveUpdate, false).await?;
        Ok(Response::new(pb::UnarchiveSessionResponse {}))
    }

    async fn delete_session(
        &self,
        request: Request<pb::DeleteSessionRequest>,
    ) -> Result<Response<pb::DeleteSessionResponse>, Status> {
        let caller = keel_auth::caller(&request)?;
        let req = request.into_inner();
        required_session_id(&req.session_id)?;
        let key = session_key(&caller, &req.session_id);
        let blobs_deleted = self.delete(&key).await?;
        tracing::info!(session = %key, principal = %caller.principal, blobs_deleted, "session deleted");
        Ok(Response::new(pb::DeleteSessionResponse { blobs_deleted }))
    }

    async fn fork_session(
        &self,
        request: Request<pb::ForkSessionRequest>,
    ) -> Result<Response<pb::ForkSessionResponse>, Status> {
        let caller = keel_auth::caller(&request)?;
        let session = self.fork(&caller, request.into_inner()).await?;
        Ok(Response::new(pb::ForkSessionResponse {
            session: Some(session),
        }))
    }

    async fn interrupt(
        &self,
        request: Request<pb::InterruptRequest>,
    ) -> Result<Response<pb::InterruptResponse>, Status> {
        let caller = keel_auth::caller(&request)?;
        let req = request.into_inner();
        required_session_id(&req.session_id)?;
        let key = session_key(&caller, &req.session_id);
        if req.agent_id.is_empty() || req.agent_id == req.session_id {
            self.signal(&key, InterruptSignal, (), "cannot interrupt")
                .await?;
        }
        if req.agent_id != req.session_id {
            // The session's sub-agents too (or the one named).
            let (state, _) = self.state(&key).await?;
            let only = (!req.agent_id.is_empty()).then_some(req.agent_id.as_str());
            self.interrupt_agents(&key, &state, only).await?;
        }
        Ok(Response::new(pb::InterruptResponse {}))
    }

    async fn close_session(
        &self,
        request: Request<pb::CloseSessionRequest>,
    ) -> Result<Response<pb::CloseSessionResponse>, Status> {
        let caller = keel_auth::caller(&request)?;
        let req = request.into_inner();
        required_session_id(&req.session_id)?;
        let key = session_key(&caller, &req.session_id);
        match self
            .signal(&key, ShutdownSignal, (), "cannot close the session")
            .await
        {
            // Closing a closed session is a no-op.
            Err(s) if s.code() == tonic::Code::FailedPrecondition => {}
            other => other?,
        }
        Ok(Response::new(pb::CloseSessionResponse {}))
    }

    async fn compact(
        &self,
        request: Request<pb::CompactRequest>,
    ) -> Result<Response<pb::CompactResponse>, Status> {
        let caller = keel_auth::caller(&request)?;
        let req = request.into_inner();
        required_session_id(&req.session_id)?;
        let key = session_key(&caller, &req.session_id);
        self.signal(&key, CompactSignal, (), "cannot compact")
            .await?;
        Ok(Response::new(pb::CompactResponse {}))
    }

    async fn override_turn_context(
        &self,
        request: Request<pb::OverrideTurnContextRequest>,
    ) -> Result<Response<pb::OverrideTurnContextResponse>, Status> {
        let caller = keel_auth::caller(&request)?;
        let req = request.into_inner();
        required_session_id(&req.session_id)?;
        let key = session_key(&caller, &req.session_id);
        let patch = settings::patch(req.context)?.unwrap_or_default();
        let settings = self.update(&key, OverrideContextUpdate, patch).await?;
        Ok(Response::new(pb::OverrideTurnContextResponse {
            context: Some((&settings).into()),
        }))
    }

    async fn respond(
        &self,
        request: Request<pb::RespondRequest>,
    ) -> Result<Response<pb::RespondResponse>, Status> {
        let caller = keel_auth::caller(&request)?;
        let req = request.into_inner();
        required_session_id(&req.session_id)?;
        let key = session_key(&caller, &req.session_id);
        if req.request_id.is_empty() {
            return Err(crate::errors::invalid("request_id is required"));
        }
        let state = self.open_state(&key).await?;
        let target = self
            .respond_target(&key, &state, &req.agent_id, &req.request_id)
            .await?;
        let pending = target.pending.as_ref();
        let (kind, asked_ms) = (pending.map(|p| p.kind), pending.map_or(0, |p| p.asked_ms));
        let answer = requests::answer(
            &self.session_blobs(&key)?,
            &req.request_id,
            kind,
            req.answer,
        )
        .await?;
        let response = api::Response {
            request_id: req.request_id.clone(),
            answer,
            answered_by: caller.principal.clone(),
        };
        match &target.agent_id {
            None => self.update(&key, RespondUpdate, response).await?,
            Some(agent_id) => self.respond_agent(&key, agent_id, response).await?,
        }
        if let Some(kind) = kind {
            self.metrics.answered(kind, asked_ms);
        }
        let agent = target.agent_id.as_deref().unwrap_or("");
        tracing::info!(session = %key, principal = %caller.principal, request_id = %req.request_id, agent, "request answered");
        Ok(Response::new(pb::RespondResponse {}))
    }
}
