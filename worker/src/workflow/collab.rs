//! Codex's collaboration tools (`features.multi_agent`; Codex:
//! `codex-rs/core/src/tools/handlers/multi_agents/`): `spawn_agent` starts a
//! sub-agent — the same agent loop as a workflow of its own, a child of the
//! session's workflow with its own history and rollovers — and `wait_agent`
//! waits, on a durable timer, until one of them reaches a final status.
//! Sub-agents report to the session's workflow with the `agent_update`
//! signal; the session keeps a small registry of them (status, final
//! message, tokens), nothing of their work.
//!
//! A sub-agent runs with its session's settings and keeps its own event
//! log (clients read it with the session's, `StreamEventsRequest.
//! all_agents`, from the `collab_agent_spawn_end` event on). Its approvals
//! are its own pending requests: session-api lists them with the session's
//! and routes answers and interrupts to it (its `request_user_input`
//! questions too). It is offered neither the client's dynamic tools nor MCP
//! tools, nor what its role takes away.
//!
//! What this version does not do yet (docs/design/sub-agents.md):
//! `resume_agent`, nested agents, and sub-agents' live deltas.

use std::time::Duration;

use keel_proto::v1 as pb;
use keel_workflow_api::{
    AGENT_MESSAGE_LIMIT, AgentEntry, AgentLink, AgentStatus, AgentUpdate, ApprovalPolicy, Carried,
    ContextPatch, INLINE_TEXT_LIMIT, SandboxMode, SandboxSettings, SessionInput, TurnSettings,
    UserTurn, agent_workflow_id, cut_text, workflow_id,
};
use pb::event::Msg;
use serde::Deserialize;
use serde_json::json;
use temporalio_sdk::{
    CancellableFuture, ChildWorkflowOptions, ParentClosePolicy, SignalWorkflowOptions,
    WorkflowCancellationToken, WorkflowContext, WorkflowIdReusePolicy,
};

use super::call::Call;
use super::{AgentWorkflow, inline_output};
use crate::activities::AppendItem;

/// What `reasoning_effort` may be (as CreateSession takes it).
const EFFORTS: [&str; 6] = ["none", "minimal", "low", "medium", "high", "xhigh"];
/// The longest model slug `spawn_agent` takes (as CreateSession).
const MAX_MODEL_LEN: usize = 128;
/// Sub-agents one session may start in all (each registry entry may keep a
/// 16 KiB final message, and the registry is carried across rollovers).
const MAX_AGENTS_PER_SESSION: usize = 32;
/// `wait_agent`'s output carries at most this much of the agents' final
/// messages together (each cut to its share): the output stays in the
/// session's history, and a model may wait again and again in one turn.
const WAIT_OUTPUT_BUDGET: usize = 16 * 1024;
/// `wait_agent`'s timeout (Codex: `multi_agents_common.rs`).
pub(crate) const DEFAULT_WAIT_MS: i64 = 30_000;
pub(crate) const MIN_WAIT_MS: i64 = 10_000;
pub(crate) const MAX_WAIT_MS: i64 = 3_600_000;

fn output(call: &Call, text: &str) -> AppendItem {
    inline_output(&call.call_id, text, call.custom)
}

/// The call's arguments, or the output telling the model they do not parse.
fn parse<T: serde::de::DeserializeOwned>(call: &Call) -> Result<T, AppendItem> {
    serde_json::from_str(&call.arguments)
        .map_err(|e| output(call, &keel_tool_model::parse_error(&e)))
}

#[derive(Deserialize)]
struct InputItem {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
struct SpawnArgs {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    items: Option<Vec<InputItem>>,
    #[serde(default)]
    agent_type: Option<String>,
    #[serde(default)]
    fork_context: Option<bool>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    reasoning_effort: Option<String>,
}

/// The task's text, checked as Codex's `parse_collab_input` checks it.
fn task_text(args: &SpawnArgs) -> Result<String, String> {
    input_text(&args.message, &args.items)
}

/// A collaboration tool's message or items as text, checked as Codex's
/// `parse_collab_input` checks them.
fn input_text(message: &Option<String>, items: &Option<Vec<InputItem>>) -> Result<String, String> {
    match (message, items) {
        (Some(_), Some(_)) => Err("Provide either message or items, but not both".into()),
        (None, None) => Err("Provide one of: message or items".into()),
        (Some(message), None) => {
            if message.trim().is_empty() {
                Err("Empty message can't be sent to an agent".into())
            } else {
                Ok(message.clone())
            }
        }
        (None, Some(items)) => {
            if items.is_empty() {
                return Err("Items can't be empty".into());
            }
            let mut parts = Vec::new();
            for item in items {
                match (item.kind.as_str(), &item.text) {
                    ("text", Some(text)) => parts.push(text.clone()),
                    (kind, _) => {
                        return Err(format!(
                            "collab tool failed: unsupported input item type {kind}"
                        ));
                    }
                }
            }
            Ok(parts.join("\n"))
        }
    }
}

#[derive(Deserialize)]
struct TargetArgs {
    target: String,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    items: Option<Vec<InputItem>>,
    #[serde(default)]
    interrupt: bool,
}

/// The session's sub-agent `target` names, or the text the model gets
/// (Codex's `collab_agent_error` texts).
fn find_agent(s: &AgentWorkflow, target: &str) -> Result<AgentEntry, String> {
    if let Err(e) = uuid::Uuid::parse_str(target) {
        return Err(format!(
            "invalid agent id {}: {e:?}",
            cut_text(target, 64).0
        ));
    }
    match s.durable.agents.iter().find(|a| a.agent_id == target) {
        None => Err(format!("agent with id {target} not found")),
        Some(a) => Ok(a.clone()),
    }
}

/// `send_input`: gives a sub-agent its next turn (queued behind a running
/// one, or after interrupting it with `interrupt`), as Codex's
/// `Op::UserInput`; answers `{"submission_id": ...}`.
pub(super) async fn send_input(
    ctx: &mut WorkflowContext<AgentWorkflow>,
    call: &Call,
) -> AppendItem {
    let args: TargetArgs = match parse(call) {
        Ok(a) => a,
        Err(item) => return item,
    };
    let text = match input_text(&args.message, &args.items) {
        Ok(text) => text,
        Err(text) => return output(call, &text),
    };
    let found = ctx.state(|s| {
        let agent = find_agent(s, &args.target)?;
        if agent.closed || agent.status == AgentStatus::Shutdown {
            return Err(format!("agent with id {} is closed", agent.agent_id));
        }
        let max = s.input.agent_limits.max_turns;
        if max > 0 && agent.inputs >= max {
            return Err(format!(
                "collab tool failed: agent {} has used its {max} turns (agent_max_turns)",
                agent.agent_id
            ));
        }
        // The turn runs with the parent's sandbox and approval policy as
        // they are now (narrowed by the agent's role), not as they were at
        // the spawn.
        let role = s
            .input
            .agent_roles
            .iter()
            .find(|r| !agent.role.is_empty() && r.name == agent.role);
        let (approval_policy, sandbox, _) = narrow(&s.effective(), role);
        let context = ContextPatch {
            approval_policy: Some(approval_policy),
            sandbox: Some(sandbox),
            ..ContextPatch::default()
        };
        Ok((
            agent_workflow_id(&s.input.session_id, &agent.agent_id),
            context,
        ))
    });
    let (workflow, context) = match found {
        Ok(found) => found,
        Err(text) => return output(call, &text),
    };
    if args.interrupt {
        let _ = ctx
            .external_workflow(workflow.clone(), None)
            .signal(
                AgentWorkflow::interrupt,
                (),
                SignalWorkflowOptions::default(),
            )
            .await;
    }
    let mut turn = first_turn(&AgentLink {
        task: text,
        spawn_call_id: call.call_id.clone(),
        ..AgentLink::default()
    });
    turn.context = Some(context);
    // Working again: a wait must not take the last turn's result. Reset
    // before the signal goes, so no update of the new turn that arrives
    // with the signal's resolution is overwritten.
    let target = args.target.clone();
    let before = ctx.state_mut(|s| {
        let a = s.durable.agents.iter_mut().find(|a| a.agent_id == target)?;
        let before = a.status.clone();
        if a.status.is_final() {
            a.status = AgentStatus::PendingInit;
        }
        Some((before, a.last_seq))
    });
    let sent = ctx
        .external_workflow(workflow, None)
        .signal(
            AgentWorkflow::user_turn,
            turn,
            SignalWorkflowOptions::default(),
        )
        .await;
    let sent_ok = sent.is_ok();
    ctx.state_mut(|s| {
        if let Some(a) = s.durable.agents.iter_mut().find(|a| a.agent_id == target) {
            if sent_ok {
                a.inputs += 1;
            } else if let Some((status, seq)) = before
                && a.last_seq == seq
            {
                // Nothing came from the agent since: as it was.
                a.status = status;
            }
        }
    });
    if let Err(e) = sent {
        return output(call, &format!("collab tool failed: {e}"));
    }
    let submission = ctx.uuid4();
    output(call, &json!({ "submission_id": submission }).to_string())
}

/// `close_agent`: shuts a sub-agent down (its workflow ends once its turn,
/// if any, is cancelled); answers `{"previous_status": S}`.
pub(super) async fn close_agent(
    ctx: &mut WorkflowContext<AgentWorkflow>,
    call: &Call,
) -> AppendItem {
    let args: TargetArgs = match parse(call) {
        Ok(a) => a,
        Err(item) => return item,
    };
    let found = ctx.state(|s| {
        find_agent(s, &args.target).map(|a| {
            (
                a.clone(),
                agent_workflow_id(&s.input.session_id, &a.agent_id),
            )
        })
    });
    let (agent, workflow) = match found {
        Ok(found) => found,
        Err(text) => return output(call, &text),
    };
    if !agent.closed && agent.status != AgentStatus::Shutdown {
        // A workflow that is gone (terminated, deleted) has nothing to shut
        // down: closed all the same, so it holds no place.
        if let Err(e) = shut_down(ctx, workflow).await {
            tracing::debug!(error = %e, "close_agent: the agent's workflow is gone");
        }
        let target = agent.agent_id.clone();
        ctx.state_mut(|s| {
            if let Some(a) = s.durable.agents.iter_mut().find(|a| a.agent_id == target) {
                a.closed = true;
            }
        });
    }
    output(
        call,
        &json!({ "previous_status": agent.status }).to_string(),
    )
}

/// `spawn_agent`: starts a sub-agent on its task and answers
/// `{"agent_id": ..., "nickname": null}` at once.
pub(super) async fn spawn_agent(
    ctx: &mut WorkflowContext<AgentWorkflow>,
    turn_id: &str,
    call: &Call,
) -> AppendItem {
    let args: SpawnArgs = match parse(call) {
        Ok(a) => a,
        Err(item) => return item,
    };
    let task = match task_text(&args) {
        Ok(task) => task,
        Err(text) => return output(call, &text),
    };
    if let Some(model) = &args.model
        && (model.len() > MAX_MODEL_LEN || model.chars().any(char::is_control))
    {
        let shown = cut_text(model, 64).0;
        return output(
            call,
            &format!(
                "Unknown model `{shown}` for spawn_agent: at most {MAX_MODEL_LEN} printable characters"
            ),
        );
    }
    if let Some(effort) = &args.reasoning_effort
        && !effort.is_empty()
        && !EFFORTS.contains(&effort.as_str())
    {
        let shown = cut_text(effort, 64).0;
        return output(
            call,
            &format!(
                "Reasoning effort `{shown}` is not supported. Supported reasoning efforts: {}",
                EFFORTS.join(", ")
            ),
        );
    }
    if args.fork_context == Some(true) {
        return output(
            call,
            "collab tool failed: fork_context is not supported by this version of Keel",
        );
    }
    let spawn = Spawn {
        call_id: call.call_id.clone(),
        task,
        model: args.model.clone().unwrap_or_default(),
        reasoning_effort: args.reasoning_effort.clone().unwrap_or_default(),
        role: args.agent_type.clone().unwrap_or_default(),
    };
    match start_agent(ctx, turn_id, spawn).await {
        Ok(agent_id) => output(
            call,
            &json!({"agent_id": agent_id, "nickname": null}).to_string(),
        ),
        Err(text) => output(call, &text),
    }
}

/// A sub-agent to start: by `spawn_agent`, or as a crew member.
pub(super) struct Spawn {
    /// The call that starts it (a crew member's: `crew-<n>`); its first
    /// turn's id.
    pub call_id: String,
    pub task: String,
    /// Empty: the parent's.
    pub model: String,
    pub reasoning_effort: String,
    /// Empty or `default`: the parent's settings as they are.
    pub role: String,
}

/// Starts a sub-agent: checks the role and the limits, then starts its
/// workflow, with `collab_agent_spawn_begin`/`_end` events in the
/// session's log. `Err` is the text the model gets (Codex's where Codex has
/// one).
pub(super) async fn start_agent(
    ctx: &mut WorkflowContext<AgentWorkflow>,
    turn_id: &str,
    spawn: Spawn,
) -> Result<String, String> {
    let role_name = match spawn.role.as_str() {
        "" | "default" => None,
        name => Some(name.to_string()),
    };
    let role = match &role_name {
        None => None,
        Some(name) => match ctx.state(|s| {
            s.input
                .agent_roles
                .iter()
                .find(|r| &r.name == name)
                .cloned()
        }) {
            Some(role) => Some(role),
            None => return Err(format!("unknown agent_type '{}'", cut_text(name, 64).0)),
        },
    };
    let refusal = ctx.state(|s| {
        let limits = s.input.agent_limits;
        let depth = s.input.agent.as_ref().map_or(0, |link| link.depth);
        if depth >= limits.max_depth() {
            return Some("Agent depth limit reached. Solve the task yourself.".to_string());
        }
        if holding_a_place(s) >= limits.max_threads() as usize {
            return Some("collab spawn failed: agent thread limit reached".to_string());
        }
        // The registry travels in every rollover's input: bounded.
        if s.durable.agents.len() >= MAX_AGENTS_PER_SESSION {
            return Some(format!(
                "collab spawn failed: this session has started {MAX_AGENTS_PER_SESSION} sub-agents, the most one session may; reuse one with send_input"
            ));
        }
        None
    });
    if let Some(text) = refusal {
        return Err(text);
    }
    let sender = ctx.state(|s| s.input.client_agent_id().to_string());
    let (prompt, _) = cut_text(&spawn.task, INLINE_TEXT_LIMIT);
    super::emit(
        ctx,
        turn_id,
        Msg::CollabAgentSpawnBegin(pb::CollabAgentSpawnBegin {
            call_id: spawn.call_id.clone(),
            sender_thread_id: sender.clone(),
            prompt: prompt.clone(),
            model: spawn.model.clone(),
            reasoning_effort: spawn.reasoning_effort.clone(),
        }),
    );
    let role_shown = role_name.clone().unwrap_or_default();
    let end = |new_thread_id: String, status: AgentStatus| {
        Msg::CollabAgentSpawnEnd(pb::CollabAgentSpawnEnd {
            call_id: spawn.call_id.clone(),
            sender_thread_id: sender.clone(),
            new_thread_id,
            new_agent_nickname: String::new(),
            new_agent_role: role_shown.clone(),
            prompt: prompt.clone(),
            model: spawn.model.clone(),
            reasoning_effort: spawn.reasoning_effort.clone(),
            status: Some((&status).into()),
        })
    };
    let agent_id = ctx.uuid4();
    let (child, child_workflow, narrowed) = ctx.state(|s| {
        let (child, narrowed) = child_input(s, &agent_id, &spawn, role.as_ref());
        let wf = agent_workflow_id(&s.input.session_id, &agent_id);
        (child, wf, narrowed)
    });
    if let Some(text) = narrowed {
        super::emit(ctx, turn_id, Msg::Warning(pb::Warning { message: text }));
    }
    ctx.state_mut(|s| {
        s.durable.agents.push(AgentEntry {
            agent_id: agent_id.clone(),
            parent_agent_id: sender.clone(),
            depth: 1,
            role: role_shown.clone(),
            status: AgentStatus::PendingInit,
            last_seq: 0,
            usage: Default::default(),
            turns: 0,
            inputs: 1,
            last_offset: 0,
            closed: false,
        })
    });
    let options = ChildWorkflowOptions::builder()
        .workflow_id(child_workflow)
        // Never cancelled: a cancellation of the session's run must not
        // reach its agents (they are ended by signal).
        .cancellation_token(WorkflowCancellationToken::new())
        // The session rolls over while its agents work, and a new run does
        // not adopt the old run's children: the session ends them itself.
        .parent_close_policy(ParentClosePolicy::Abandon)
        .id_reuse_policy(WorkflowIdReusePolicy::RejectDuplicate)
        .build();
    match ctx
        .start_child_workflow(AgentWorkflow::run, child, options)
        .await
    {
        Ok(_started) => {
            // The agent may have reported already; its status as known now.
            let status = ctx.state(|s| {
                s.durable
                    .agents
                    .iter()
                    .find(|a| a.agent_id == agent_id)
                    .map_or(AgentStatus::PendingInit, |a| a.status.clone())
            });
            super::emit(ctx, turn_id, end(agent_id.clone(), status));
            Ok(agent_id)
        }
        Err(e) => {
            ctx.state_mut(|s| s.durable.agents.retain(|a| a.agent_id != agent_id));
            super::emit(ctx, turn_id, end(String::new(), AgentStatus::NotFound));
            Err(format!("collab spawn failed: {e}"))
        }
    }
}

/// The session's crew (`SessionInput.crew`) starts at its first turn,
/// before its first model call: each member through [`start_agent`] (call
/// ids `crew-1`, `crew-2`, …; a member without a task gets the turn's
/// message), then a developer message telling the model who they are.
pub(super) async fn start_crew(
    ctx: &mut WorkflowContext<AgentWorkflow>,
    turn_id: &str,
    turn_text: &str,
) -> Option<AppendItem> {
    let crew = ctx.state(|s| s.input.crew.clone())?;
    let mut lines = Vec::new();
    for (n, member) in crew.members.iter().enumerate() {
        let task = if member.task.is_empty() {
            turn_text.to_string()
        } else {
            member.task.clone()
        };
        let spawn = Spawn {
            call_id: format!("crew-{}", n + 1),
            task,
            model: String::new(),
            reasoning_effort: String::new(),
            role: member.role.clone(),
        };
        lines.push(match start_agent(ctx, turn_id, spawn).await {
            Ok(agent_id) => format!("- {agent_id} ({})", member.role),
            Err(text) => format!("- a {} agent could not start: {text}", member.role),
        });
    }
    let text = format!(
        "Crew `{}` has started these sub-agents on the task (agent id, role); wait for them with wait_agent:\n{}",
        crew.name,
        lines.join("\n")
    );
    let item = json!({
        "type": "message",
        "role": "developer",
        "content": [{"type": "input_text", "text": text}],
    });
    Some(AppendItem::Inline(item.to_string()))
}

/// A sub-agent's approval policy and sandbox under `parent`'s settings:
/// its role's where they are no wider (a sandbox no wider; under the
/// parent's `untrusted`, no other policy), the parent's otherwise; and what
/// the role wanted and did not get.
fn narrow(
    parent: &TurnSettings,
    role: Option<&keel_workflow_api::AgentRole>,
) -> (ApprovalPolicy, SandboxSettings, Vec<String>) {
    let mut approval_policy = parent.approval_policy;
    let mut sandbox = parent.sandbox.clone();
    let mut narrowed = Vec::new();
    if let Some(role) = role {
        if let Some(mode) = role.sandbox_mode {
            if sandbox_rank(mode) > sandbox_rank(parent.sandbox.mode) {
                narrowed.push(format!(
                    "sandbox {} (its parent's is {})",
                    mode.as_str(),
                    parent.sandbox.mode.as_str()
                ));
            } else {
                sandbox.mode = mode;
            }
        }
        if let Some(policy) = role.approval_policy {
            if parent.approval_policy == ApprovalPolicy::Untrusted
                && policy != ApprovalPolicy::Untrusted
            {
                narrowed.push(format!(
                    "approval policy {} (its parent asks as untrusted)",
                    policy.as_str()
                ));
            } else {
                approval_policy = policy;
            }
        }
    }
    (approval_policy, sandbox, narrowed)
}

/// Agents holding a place: started and not closed (Codex counts agents
/// until they are closed, `codex-rs/core/src/agent/guards.rs`).
fn holding_a_place(s: &AgentWorkflow) -> usize {
    s.durable
        .agents
        .iter()
        .filter(|a| !a.closed && a.status != AgentStatus::Shutdown)
        .count()
}

/// How wide a sandbox is: a sub-agent's is never wider than its parent's.
fn sandbox_rank(mode: SandboxMode) -> u8 {
    match mode {
        SandboxMode::ReadOnly => 0,
        SandboxMode::WorkspaceWrite => 1,
        SandboxMode::DangerFullAccess => 2,
    }
}

/// The sub-agent's input: the session's, as a sub-agent at depth 1, with
/// the session's setup (tools without MCP's, project context, workspace
/// lease) and its settings in force now, then the model and effort the
/// spawn asked for, then its role — narrowed to its parent's sandbox, and
/// under a parent's `untrusted` asking as the parent does. The text says
/// what the role wanted and did not get.
fn child_input(
    s: &AgentWorkflow,
    agent_id: &str,
    spawn: &Spawn,
    role: Option<&keel_workflow_api::AgentRole>,
) -> (SessionInput, Option<String>) {
    let parent = s.effective();
    let mut settings = parent.clone();
    if !spawn.model.trim().is_empty() {
        settings.model = spawn.model.clone();
    }
    if !spawn.reasoning_effort.trim().is_empty() {
        settings.reasoning_effort = spawn.reasoning_effort.clone();
    }
    let mut input = s.input.clone();
    let (approval_policy, sandbox, narrowed) = narrow(&parent, role);
    settings.approval_policy = approval_policy;
    settings.sandbox = sandbox;
    if let Some(role) = role {
        if !role.model.is_empty() {
            settings.model = role.model.clone();
        }
        if !role.reasoning_effort.is_empty() {
            settings.reasoning_effort = role.reasoning_effort.clone();
        }
        if !role.developer_instructions_digest.is_empty() {
            input.developer_instructions = String::new();
            input
                .developer_instructions_digest
                .clone_from(&role.developer_instructions_digest);
        }
    }
    let narrowed = (!narrowed.is_empty()).then(|| {
        format!(
            "role {} wants {}; the agent runs with its parent's instead (a sub-agent is never given more than its parent has)",
            spawn.role,
            narrowed.join(" and ")
        )
    });
    // No MCP tools: the broker keys parked calls by session and call id,
    // which two agents could share.
    let setup = s.durable.setup.clone().map(|mut setup| {
        setup.mcp_tools.clear();
        setup.mcp_servers.clear();
        setup
    });
    input.carried = Some(Carried {
        setup,
        settings: Some(settings),
        model_defaults: s.durable.model_defaults.clone(),
        lease: s.durable.lease.clone(),
        workspace: s.durable.workspace.clone(),
        ..Carried::default()
    });
    input.agent = Some(AgentLink {
        agent_id: agent_id.to_string(),
        parent_agent_id: s.input.client_agent_id().to_string(),
        root_workflow_id: workflow_id(&s.input.session_id),
        depth: s.input.agent.as_ref().map_or(0, |link| link.depth) + 1,
        role: role.map(|r| r.name.clone()).unwrap_or_default(),
        nickname: String::new(),
        task: spawn.task.clone(),
        spawn_call_id: spawn.call_id.clone(),
        disabled_tools: role.map(|r| r.disabled_tools.clone()).unwrap_or_default(),
    });
    // The client's own tools answer the session's own agent.
    input.dynamic_tools = Vec::new();
    input.name = String::new();
    input.forked_from = None;
    // A sub-agent starts no agents (depth 1 is the deepest).
    input.agent_roles = Vec::new();
    input.crew = None;
    (input, narrowed)
}

/// A sub-agent's first turn: its task, as its first user message.
pub(super) fn first_turn(link: &AgentLink) -> UserTurn {
    let item = json!({
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": link.task}],
    });
    let (text_preview, text_truncated) = cut_text(&link.task, INLINE_TEXT_LIMIT);
    UserTurn {
        turn_id: link.spawn_call_id.clone(),
        item_digest: String::new(),
        inline_item: item.to_string(),
        text_preview,
        text_truncated,
        ..UserTurn::default()
    }
}

#[derive(Deserialize)]
struct WaitArgs {
    targets: Vec<String>,
    #[serde(default)]
    timeout_ms: Option<i64>,
}

/// `wait_agent`: answers `{"status": {id: status, ...}, "timed_out": bool}`
/// once any target is final (with every target final by then), or
/// `{"status": {}, "timed_out": true}` when the timeout (a workflow timer)
/// fires first.
pub(super) async fn wait_agent(
    ctx: &mut WorkflowContext<AgentWorkflow>,
    turn_id: &str,
    call: &Call,
) -> AppendItem {
    let args: WaitArgs = match parse(call) {
        Ok(a) => a,
        Err(item) => return item,
    };
    if args.targets.is_empty() {
        return output(call, "agent ids must be non-empty");
    }
    let timeout_ms = args.timeout_ms.unwrap_or(DEFAULT_WAIT_MS);
    if timeout_ms <= 0 {
        return output(call, "timeout_ms must be greater than zero");
    }
    let timeout_ms = timeout_ms.clamp(MIN_WAIT_MS, MAX_WAIT_MS);
    for id in &args.targets {
        if let Err(e) = uuid::Uuid::parse_str(id) {
            return output(call, &format!("invalid agent id {id}: {e:?}"));
        }
    }
    let sender = ctx.state(|s| s.input.client_agent_id().to_string());
    super::emit(
        ctx,
        turn_id,
        Msg::CollabWaitingBegin(pb::CollabWaitingBegin {
            sender_thread_id: sender.clone(),
            receiver_thread_ids: args.targets.clone(),
            call_id: call.call_id.clone(),
        }),
    );
    let waiting_end = |statuses: &std::collections::BTreeMap<String, AgentStatus>| {
        Msg::CollabWaitingEnd(pb::CollabWaitingEnd {
            sender_thread_id: sender.clone(),
            call_id: call.call_id.clone(),
            statuses: statuses
                .iter()
                .map(|(id, status)| (id.clone(), status.into()))
                .collect(),
        })
    };
    let targets = args.targets.clone();
    let any_final = move |s: &AgentWorkflow| {
        targets.iter().any(|id| {
            s.durable
                .agents
                .iter()
                .find(|a| &a.agent_id == id)
                .is_none_or(|a| a.status.is_final())
        })
    };
    if !ctx.state(&any_final) {
        let ended = {
            let mut timer = std::pin::pin!(ctx.timer(Duration::from_millis(timeout_ms as u64)));
            let condition = any_final.clone();
            let ended = temporalio_sdk::workflows::select! {
                _ = ctx.wait_condition(move |s: &AgentWorkflow| condition(s) || s.turn_interrupted()) => true,
                _ = timer.as_mut() => false,
            };
            if ended {
                timer.cancel();
            }
            ended
        };
        if ctx.state(|s| s.turn_interrupted()) {
            super::emit(ctx, turn_id, waiting_end(&Default::default()));
            return output(call, super::ABORTED);
        }
        if !ended {
            super::emit(ctx, turn_id, waiting_end(&Default::default()));
            return output(call, &json!({"status": {}, "timed_out": true}).to_string());
        }
    }
    let statuses = ctx.state(|s| {
        let mut statuses = std::collections::BTreeMap::new();
        for id in &args.targets {
            let status = match s.durable.agents.iter().find(|a| &a.agent_id == id) {
                Some(a) if a.status.is_final() => a.status.clone(),
                Some(_) => continue,
                None => AgentStatus::NotFound,
            };
            statuses.insert(id.clone(), status);
        }
        let share = WAIT_OUTPUT_BUDGET / statuses.len().max(1);
        for status in statuses.values_mut() {
            if let AgentStatus::Completed(Some(message)) = status {
                *message = cut_text(message, share).0;
            }
        }
        statuses
    });
    super::emit(ctx, turn_id, waiting_end(&statuses));
    output(
        call,
        &json!({"status": statuses, "timed_out": false}).to_string(),
    )
}

/// A sub-agent tells the session's workflow its status. `false` when the
/// session's workflow is gone (the agent then shuts down).
pub(super) async fn report(ctx: &mut WorkflowContext<AgentWorkflow>, status: AgentStatus) -> bool {
    let Some((root, update)) = ctx.state_mut(|s| {
        let link = s.input.agent.clone()?;
        s.durable.agent_seq += 1;
        let status = match status {
            AgentStatus::Completed(Some(message)) => {
                AgentStatus::Completed(Some(cut_text(&message, AGENT_MESSAGE_LIMIT).0))
            }
            other => other,
        };
        Some((
            link.root_workflow_id,
            AgentUpdate {
                agent_id: link.agent_id,
                seq: s.durable.agent_seq,
                status,
                usage: s.durable.usage,
                turns: s.durable.turns_completed,
                last_offset: s.durable.log.last_offset(),
            },
        ))
    }) else {
        return true;
    };
    ctx.external_workflow(root, None)
        .signal(
            AgentWorkflow::agent_update,
            update,
            SignalWorkflowOptions::default(),
        )
        .await
        .is_ok()
}

/// The session closes: every sub-agent still open shuts down too.
pub(super) async fn shut_down_agents(ctx: &mut WorkflowContext<AgentWorkflow>) {
    let open: Vec<String> = ctx.state(|s| {
        s.durable
            .agents
            .iter()
            .filter(|a| a.status != AgentStatus::Shutdown)
            .map(|a| agent_workflow_id(&s.input.session_id, &a.agent_id))
            .collect()
    });
    for workflow in open {
        // Best effort: one already gone has nothing to shut down.
        let _ = shut_down(ctx, workflow).await;
    }
}

/// Signals `shutdown` to the sub-agent's workflow.
async fn shut_down(
    ctx: &mut WorkflowContext<AgentWorkflow>,
    workflow: String,
) -> Result<(), impl std::fmt::Display> {
    ctx.external_workflow(workflow, None)
        .signal(
            AgentWorkflow::shutdown,
            (),
            SignalWorkflowOptions::default(),
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(json: &str) -> SpawnArgs {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn task_texts_are_codexs() {
        assert_eq!(task_text(&args(r#"{"message":"go"}"#)).unwrap(), "go");
        assert_eq!(
            task_text(&args(
                r#"{"items":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}"#
            ))
            .unwrap(),
            "a\nb"
        );
        for (json, text) in [
            (
                r#"{"message":"a","items":[]}"#,
                "Provide either message or items, but not both",
            ),
            (r#"{}"#, "Provide one of: message or items"),
            (
                r#"{"message":"  "}"#,
                "Empty message can't be sent to an agent",
            ),
            (r#"{"items":[]}"#, "Items can't be empty"),
            (
                r#"{"items":[{"type":"image","image_url":"x"}]}"#,
                "collab tool failed: unsupported input item type image",
            ),
        ] {
            assert_eq!(task_text(&args(json)).unwrap_err(), text, "{json}");
        }
    }

    #[test]
    fn statuses_serialize_as_codex_does() {
        let s = |status: AgentStatus| serde_json::to_string(&status).unwrap();
        assert_eq!(s(AgentStatus::PendingInit), r#""pending_init""#);
        assert_eq!(s(AgentStatus::NotFound), r#""not_found""#);
        assert_eq!(
            s(AgentStatus::Completed(Some("hi".into()))),
            r#"{"completed":"hi"}"#
        );
        assert_eq!(s(AgentStatus::Completed(None)), r#"{"completed":null}"#);
        assert_eq!(s(AgentStatus::Errored("x".into())), r#"{"errored":"x"}"#);
        assert!(!AgentStatus::Running.is_final());
        assert!(AgentStatus::Interrupted.is_final());
    }
}
