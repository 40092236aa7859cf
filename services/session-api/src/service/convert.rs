//! Checks of request fields and conversions between the workflow's types
//! and the wire's.

use super::*;

pub(super) fn validate_id(field: &str, id: &str) -> Result<(), Status> {
    if id.is_empty()
        || id.len() > MAX_ID_LEN
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(crate::errors::invalid(format!(
            "{field} {id:?} is invalid: use 1 to {MAX_ID_LEN} letters, digits, '-' or '_'"
        )));
    }
    Ok(())
}

/// The key of the caller's session `session_id` (see
/// [`api::session_key`]): the caller's tenant is part of it, so no call can
/// reach another tenant's session.
pub(super) fn session_key(caller: &keel_auth::Caller, session_id: &str) -> String {
    api::session_key(tenant_of(caller), session_id)
}

/// The caller's tenant as the workflow contract names it (`None`: the
/// default tenant).
pub(super) fn tenant_of(caller: &keel_auth::Caller) -> Option<&str> {
    (caller.tenant != keel_auth::DEFAULT_TENANT).then_some(caller.tenant.as_str())
}

pub(super) fn required_session_id(id: &str) -> Result<(), Status> {
    if id.is_empty() {
        return Err(crate::errors::invalid("session_id is required"));
    }
    validate_id("session_id", id)
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub(super) fn timestamp_ms(ms: u64) -> Option<prost_types::Timestamp> {
    (ms > 0).then(|| prost_types::Timestamp {
        seconds: (ms / 1000) as i64,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    })
}

pub(super) fn wf_status(raw: i32) -> WorkflowExecutionStatus {
    use temporalio_common::protos::temporal::api::enums::v1::WorkflowExecutionStatus as Raw;
    Raw::try_from(raw)
        .map(Into::into)
        .unwrap_or(WorkflowExecutionStatus::Unknown)
}

/// A session name (CreateSessionRequest.name, RenameSession): at most
/// [`api::MAX_NAME_CHARS`] characters, no control characters.
pub(super) fn check_name(name: &str) -> Result<(), Status> {
    if name.chars().count() > api::MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(crate::errors::invalid(format!(
            "name must be at most {} characters with no control characters (tabs, newlines)",
            api::MAX_NAME_CHARS
        )));
    }
    Ok(())
}

/// The status a client sees: the workflow's own (`run`, and whether a
/// request waits for an answer) while it runs, else how it ended.
pub(super) fn status_of(
    run: RunStatus,
    wf: WorkflowExecutionStatus,
    waiting: bool,
) -> pb::SessionStatus {
    match wf {
        WorkflowExecutionStatus::Running => match run {
            RunStatus::Idle => pb::SessionStatus::Idle,
            RunStatus::Running if waiting => pb::SessionStatus::Waiting,
            RunStatus::Running => pb::SessionStatus::Running,
            RunStatus::Closed => pb::SessionStatus::Closed,
        },
        WorkflowExecutionStatus::Completed | WorkflowExecutionStatus::ContinuedAsNew => {
            pb::SessionStatus::Closed
        }
        _ => pb::SessionStatus::Failed,
    }
}

pub(super) fn session_from_state(s: &SessionState, wf: WorkflowExecutionStatus) -> pb::Session {
    let defaults = s.model_defaults.as_ref();
    let settings = s.settings.resolved(defaults);
    pb::Session {
        agents: super::agents::agent_infos(s),
        all_agents_token_usage: Some(super::agents::all_agents_usage(s)),
        model_provider: defaults.map(|d| d.provider.clone()).unwrap_or_default(),
        session_id: api::split_session_key(&s.session_id).1.to_string(),
        owner: s.owner.clone(),
        status: status_of(s.status, wf, !s.pending_requests.is_empty()) as i32,
        name: s.registry.name.clone(),
        archived: s.registry.archived,
        last_message: s.registry.last_message.clone(),
        forked_from: s.forked_from.as_ref().map(|f| pb::ForkOrigin {
            session_id: api::split_session_key(&f.session_id).1.to_string(),
            turn_id: f.turn_id.clone(),
            event_offset: f.last_offset,
        }),
        created_at: timestamp_ms(s.created_at_ms),
        last_activity_at: timestamp_ms(s.last_activity_ms),
        model: settings.model.clone(),
        cwd: s.cwd.clone(),
        last_event_offset: s.last_event_offset,
        turns_completed: s.turns_completed,
        queued_turns: s.queued_turns,
        total_token_usage: Some((&s.total_usage).into()),
        workflow_id: api::workflow_id(&s.session_id),
        history_rollovers: s.runs,
        context: Some((&settings).into()),
        pending_requests: s
            .pending_requests
            .iter()
            .map(|p| pb::PendingRequest {
                request_id: p.request_id.clone(),
                turn_id: p.turn_id.clone(),
                kind: pb::PendingRequestKind::from(p.kind) as i32,
                agent_id: String::new(),
            })
            .collect(),
        config: s
            .config
            .iter()
            .map(|e| pb::ConfigEntry {
                key: e.key.clone(),
                value: e.value.clone(),
                source: e.source.clone(),
            })
            .collect(),
        mcp_servers: s
            .mcp_servers
            .iter()
            .map(|m| pb::McpServerStatus {
                name: m.name.clone(),
                transport: m.transport.clone(),
                enabled: true,
                required: m.required,
                shared: m.shared,
                state: if m.running {
                    pb::McpServerState::Running
                } else {
                    pb::McpServerState::Failed
                } as i32,
                error: m.error.clone(),
                tool_count: m.tool_count,
            })
            .collect(),
        mcp_tools: s
            .mcp_tools
            .iter()
            .map(|t| {
                let spec = s
                    .mcp_tool_specs
                    .iter()
                    .find(|spec| spec.name == t.name)
                    .and_then(|spec| serde_json::from_str::<serde_json::Value>(&spec.json).ok())
                    .unwrap_or_default();
                pb::McpTool {
                    qualified_name: t.name.clone(),
                    server: t.server.clone(),
                    tool: t.tool.clone(),
                    description: spec["description"].as_str().unwrap_or_default().to_string(),
                    input_schema_json: spec
                        .get("parameters")
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                    annotations: t.annotated.then_some(pb::McpToolAnnotations {
                        read_only_hint: t.read_only,
                        destructive_hint: t.destructive,
                        idempotent_hint: t.idempotent,
                        open_world_hint: t.open_world,
                    }),
                    title: String::new(),
                    approval_mode: t.approval_mode.clone(),
                }
            })
            .collect(),
    }
}
