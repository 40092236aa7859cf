//! `AgentWorkflow`: one durable session. It reads like the agent loop it is —
//! wait for a user turn, ask the model, run the tools it calls, feed their
//! outputs back, repeat until the model answers without tools, report.
//!
//! Determinism rules (replay must reproduce every command): no wall clock, no
//! randomness, no I/O, no env reads, no tokio timers, no HashMap iteration.
//! Time comes from `ctx.workflow_time()`; everything from outside arrives as
//! activity results or signals. Changing the order of commands breaks running
//! sessions: gate such changes with `ctx.patched(..)` (see docs/).

mod approvals;
mod call;
mod collab;
mod command;
mod compact;
mod durable;
mod lease;
mod legacy;
mod mcp;
mod own_tools;
mod patch;
mod prefix;
mod tool_calls;
mod trace;
mod turn;

use std::collections::BTreeMap;
use std::time::Duration;

use keel_proto::v1 as pb;
use keel_workflow_api::{
    AgentStatus, AgentUpdate, ArchiveEventsInput, ContextPatch, EventArchive, EventsPage,
    EventsQuery, ForkPoint, MEMO_ARCHIVED, MEMO_LAST_ACTIVITY_MS, MEMO_LAST_MESSAGE, MEMO_NAME,
    MEMO_QUEUE_FULL, MEMO_STATUS, PendingRequest, Response, RunStatus, SessionInput,
    SessionOutcome, SessionState, Steer, TurnHead, TurnSettings, UserTurn, message_preview,
};
use pb::event::Msg;
use serde_json::json;
use temporalio_client::RetryPolicy;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ActivityExecutionError, ActivityOptions, ContinueAsNewOptions, MemoValue, SyncWorkflowContext,
    WorkflowCancellationToken, WorkflowContext, WorkflowContextView, WorkflowResult,
};

use crate::activities::{AppendItem, CloseInput, KeelActivities, ModelCallInput, failure_type};
use crate::tools;
use durable::Durable;

/// The output of a call that was interrupted before it finished.
const ABORTED: &str = "aborted by user";

/// Model calls per turn before the turn was stopped in turns that started
/// before the `max_iterations` setting existed (patch `iteration-cap-v1`).
pub const LEGACY_MAX_ITERATIONS: u32 = 50;
/// Heartbeat timeout of every activity: a worker that dies mid-activity is
/// noticed this fast. Activities heartbeat every second and the worker sends
/// them on at most every second (`max_heartbeat_throttle_interval`), so a
/// live activity has 2 s of slack.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(3);
/// Continue-as-new at a turn boundary once a run's history has this many
/// events (Temporal warns at 10 240 and terminates at 51 200).
pub const DEFAULT_HISTORY_EVENT_BUDGET: u32 = 8_000;
/// Turn ids remembered for de-duplicating retried SendUserTurn calls.
const REMEMBERED_TURN_IDS: usize = 256;

#[workflow]
pub struct AgentWorkflow {
    input: SessionInput,
    /// Everything that survives continue-as-new, as one value.
    durable: Durable,
    status: RunStatus,
    /// Cancels the running turn's activities; `None` while idle.
    turn_cancel: Option<WorkflowCancellationToken>,
    /// Turns run by this run; a run rolls over only after doing some work, so
    /// a tiny budget cannot make it roll over forever.
    turns_this_run: u32,
    /// The running turn's own settings, on top of the persistent ones.
    turn_context: Option<ContextPatch>,
    /// The running turn's final-output schema (a blob digest); empty: none.
    turn_output_schema: String,
    /// The running turn applies approvals and the workflow-handled tools
    /// (false only while replaying turns recorded before they existed).
    approvals: bool,
    /// The running turn reads tool calls through the tool model: offered
    /// tools only, decisions on exactly what runs (false only while
    /// replaying turns recorded before it).
    tool_model: bool,
    /// The running turn stops after the `max_iterations` setting rather
    /// than after [`LEGACY_MAX_ITERATIONS`] (false only while replaying turns
    /// recorded before the setting).
    iteration_setting: bool,
    /// The running turn's model calls send the call prefix by digest once
    /// the model-proxy holds it (false only while replaying turns recorded
    /// before patch `call-prefix-v1`).
    call_prefix: bool,
    /// Requests waiting for an answer, oldest first.
    requests: Vec<PendingRequest>,
    /// Accepted answers the waiting call has not taken yet.
    answers: BTreeMap<String, Response>,
    /// Roll over at the next turn boundary whatever the budget says (after a
    /// compaction, so the new run starts from the short conversation).
    rollover_requested: bool,
    /// This run's id, to tell session-api about new events (see
    /// [`crate::notices`]).
    run_id: String,
    /// The running turn's id; `None` while idle.
    running_turn: Option<String>,
    /// Messages steered into the running turn that no model call has sent
    /// yet. They follow `durable.pending` (the outputs of the calls before
    /// them); a turn that ends with some left hands them to the next turn.
    steered: Vec<AppendItem>,
    /// Tokens the running turn's last model call used (its input plus its
    /// output): how full the context window is.
    last_call_tokens: u64,
    /// The provider's rate limits as the running turn's last model call
    /// reported them.
    last_rate_limits: Option<crate::activities::RateLimits>,
    /// How the last turn ended, as a sub-agent reports it.
    last_turn_status: Option<keel_workflow_api::AgentStatus>,
}

#[workflow_methods]
impl AgentWorkflow {
    #[init]
    pub fn new(ctx: &WorkflowContextView, mut input: SessionInput) -> Self {
        let durable = Durable::resume(&input);
        // Carried into `durable`; kept out of the input the next run gets.
        input.carried = None;
        Self {
            input,
            durable,
            status: RunStatus::Idle,
            turn_cancel: None,
            turns_this_run: 0,
            turn_context: None,
            turn_output_schema: String::new(),
            approvals: false,
            tool_model: false,
            iteration_setting: false,
            call_prefix: false,
            requests: Vec::new(),
            answers: BTreeMap::new(),
            rollover_requested: false,
            run_id: ctx.run_id().to_string(),
            running_turn: None,
            steered: Vec::new(),
            last_call_tokens: 0,
            last_rate_limits: None,
            last_turn_status: None,
        }
    }

    #[run]
    pub async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<SessionOutcome> {
        if ctx.state(|s| s.durable.runs == 0) {
            let resolved = ctx.patched(PATCH_SESSION_CONFIGURED);
            if resolved {
                // Best effort: without the defaults the event shows the
                // session's own settings, as before.
                let provider = ctx.state(|s| s.input.model_provider.clone());
                let described = if provider.is_empty() {
                    ctx.execute_activity(KeelActivities::describe_defaults, (), describe_options())
                        .await
                } else {
                    ctx.execute_activity(
                        KeelActivities::describe_provider,
                        provider,
                        describe_options(),
                    )
                    .await
                };
                match described {
                    Ok(defaults) => ctx.state_mut(|s| s.durable.model_defaults = Some(defaults)),
                    Err(e) => tracing::warn!(error = %e, "cannot read the model-proxy's defaults"),
                }
            }
            let now = ctx.workflow_time();
            ctx.state_mut(|s| {
                let msg = s.session_configured(resolved);
                s.emit(now, "", msg);
                // A sub-agent's first turn is the task it was started with.
                if let Some(link) = s.input.agent.as_ref().filter(|l| !l.task.is_empty())
                    && s.durable.inbox.is_empty()
                    && s.durable.turns_completed == 0
                {
                    let turn = collab::first_turn(link);
                    s.durable.recent_turn_ids.push_back(turn.turn_id.clone());
                    s.durable.inbox.push_back(turn);
                }
            });
        }
        // Sessions from before the event archive drop old events from the
        // window; from the patch on, the window keeps them until archived.
        // Sub-agents keep their events in their window only (the archive
        // belongs to the session's own log).
        let agent = ctx.state(|s| s.input.agent.is_some());
        let archiving = ctx.patched(PATCH_EVENT_ARCHIVE) && !agent;
        if archiving {
            ctx.state_mut(|s| {
                let upto = match &s.durable.archive {
                    Some(archive) => archive.upto,
                    // What the window dropped before is gone.
                    None => s.durable.log.first_offset() - 1,
                };
                s.durable.log.archive_from(upto);
            });
        }
        loop {
            if archiving {
                archive_events(ctx).await;
            }
            // Turn boundary: roll the history over before it grows too long.
            let history = ctx.history_length();
            let suggested = ctx.continue_as_new_suggested();
            if let Some(next) = ctx.state(|s| s.next_run_input(history, suggested)) {
                ctx.continue_as_new(next, ContinueAsNewOptions::default())?;
            }
            ctx.wait_condition(|s| {
                !s.durable.inbox.is_empty()
                    || s.durable.shutdown_requested
                    || s.durable.compact_requested
            })
            .await?;
            if ctx.state(|s| s.durable.compact_requested && !s.durable.shutdown_requested) {
                compact::run(ctx).await;
                continue;
            }
            let (next, was_full) = ctx.state_mut(|s| {
                let max = s.input.max_queued_turns as usize;
                let was_full = max > 0 && s.durable.inbox.len() >= max;
                if s.durable.shutdown_requested {
                    (None, false)
                } else {
                    (s.durable.inbox.pop_front(), was_full)
                }
            });
            if was_full {
                set_queue_full_async(ctx, false);
            }
            match next {
                Some(turn) => {
                    if agent && !collab::report(ctx, AgentStatus::Running).await {
                        // The session is gone: so is its sub-agent.
                        ctx.state_mut(|s| s.durable.shutdown_requested = true);
                        break;
                    }
                    // The turn's activities and spans continue the trace
                    // its signal came with.
                    let cx = trace::turn_context(&turn.trace, &turn.turn_id);
                    opentelemetry::trace::FutureExt::with_context(turn::run_turn(ctx, turn), cx)
                        .await?;
                    if agent {
                        let status = ctx
                            .state_mut(|s| s.last_turn_status.take())
                            .unwrap_or(AgentStatus::Completed(None));
                        if !collab::report(ctx, status).await {
                            ctx.state_mut(|s| s.durable.shutdown_requested = true);
                        }
                    }
                }
                None => break,
            }
        }
        collab::shut_down_agents(ctx).await;
        // A sub-agent's processes are closed with its session's.
        if ctx.patched(PATCH_CLOSE_TOOL_SESSION) && !agent {
            // Best effort: the session closes whatever the tool-runner says
            // (a tool-runner restart kills its processes anyway).
            let (session_id, lease) =
                ctx.state(|s| (s.input.session_id.clone(), s.durable.lease.clone()));
            let _ = match lease {
                Some(runner) => {
                    ctx.execute_activity(
                        KeelActivities::close_runner_session,
                        CloseInput { session_id, runner },
                        close_options(),
                    )
                    .await
                }
                None => {
                    ctx.execute_activity(
                        KeelActivities::close_tool_session,
                        session_id,
                        close_options(),
                    )
                    .await
                }
            };
        }
        let now = ctx.workflow_time();
        let outcome = ctx.state_mut(|s| {
            if !s.durable.inbox.is_empty() {
                let n = s.durable.inbox.len();
                s.durable.inbox.clear();
                s.emit(
                    now,
                    "",
                    Msg::Warning(pb::Warning {
                        message: format!("session closed: {n} queued turn(s) dropped"),
                    }),
                );
            }
            s.status = RunStatus::Closed;
            s.emit(now, "", Msg::ShutdownComplete(pb::ShutdownComplete {}));
            SessionOutcome {
                turns_completed: s.durable.turns_completed,
                total_usage: s.durable.usage,
            }
        });
        if agent {
            collab::report(ctx, AgentStatus::Shutdown).await;
        }
        upsert_memo(ctx, RunStatus::Closed);
        Ok(outcome)
    }

    #[signal(name = "user_turn")]
    pub fn user_turn(&mut self, ctx: &mut SyncWorkflowContext<Self>, turn: UserTurn) {
        if self.durable.shutdown_requested || self.durable.recent_turn_ids.contains(&turn.turn_id) {
            return;
        }
        let max = self.input.max_queued_turns as usize;
        if max > 0 && self.durable.inbox.len() >= max {
            // Session-api refuses turns while the memo says the queue is
            // full; this one came anyway (sent before the memo was written,
            // or while no worker ran). Not remembered: sent again later, it
            // is queued.
            let now = ctx.workflow_time();
            self.emit(
                now,
                &turn.turn_id,
                Msg::Error(pb::ErrorEvent {
                    message: format!(
                        "turn not queued: {max} turns are waiting already (the session's limit, session-api --max-queued-turns); send it again once some have run"
                    ),
                    codex_error_info: "queue_full".into(),
                }),
            );
            return;
        }
        let mut turn = turn;
        turn.trace = keel_server::telemetry::current_trace_carrier();
        self.durable.recent_turn_ids.push_back(turn.turn_id.clone());
        if self.durable.recent_turn_ids.len() > REMEMBERED_TURN_IDS {
            self.durable.recent_turn_ids.pop_front();
        }
        self.durable.inbox.push_back(turn);
        if max > 0 && self.durable.inbox.len() == max {
            set_queue_full(ctx, true);
        }
    }

    /// A sub-agent's status (see [`collab`]); older updates change nothing.
    #[signal(name = "agent_update")]
    pub fn agent_update(&mut self, _ctx: &mut SyncWorkflowContext<Self>, update: AgentUpdate) {
        if let Some(entry) = self
            .durable
            .agents
            .iter_mut()
            .find(|a| a.agent_id == update.agent_id)
            && update.seq > entry.last_seq
        {
            entry.last_seq = update.seq;
            entry.status = update.status;
            entry.usage = update.usage;
            entry.turns = update.turns;
            entry.last_offset = update.last_offset;
        }
    }

    #[signal(name = "interrupt")]
    pub fn interrupt(&mut self, _ctx: &mut SyncWorkflowContext<Self>, _input: ()) {
        if let Some(token) = &self.turn_cancel {
            token.cancel_with_reason("interrupted");
        }
    }

    #[signal(name = "compact")]
    pub fn compact(&mut self, _ctx: &mut SyncWorkflowContext<Self>, _input: ()) {
        if !self.durable.shutdown_requested {
            self.durable.compact_requested = true;
        }
    }

    #[signal(name = "shutdown")]
    pub fn shutdown(&mut self, _ctx: &mut SyncWorkflowContext<Self>, _input: ()) {
        self.durable.shutdown_requested = true;
        if let Some(token) = &self.turn_cancel {
            token.cancel_with_reason("shutdown");
        }
    }

    #[update_validator(respond)]
    pub fn validate_respond(
        &self,
        _ctx: &WorkflowContextView,
        r: &Response,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        approvals::validate(self, r).map_err(Into::into)
    }

    /// Answers a pending request; the waiting call takes the answer.
    #[update(name = "respond")]
    pub fn respond(&mut self, _ctx: &mut SyncWorkflowContext<Self>, r: Response) {
        self.answers.insert(r.request_id.clone(), r);
    }

    /// Changes the persistent settings, from the next model call on, and
    /// reports them (a `session_configured` event; the answer).
    #[update(name = "override_context")]
    pub fn override_context(
        &mut self,
        ctx: &mut SyncWorkflowContext<Self>,
        patch: ContextPatch,
    ) -> TurnSettings {
        self.durable.settings = self.durable.settings.with(&patch);
        if ctx.patched(PATCH_CONFIGURED_ON_OVERRIDE) {
            let now = ctx.workflow_time();
            let msg = self.session_configured(true);
            self.emit(now, "", msg);
        }
        self.durable
            .settings
            .resolved(self.durable.model_defaults.as_ref())
    }

    #[update_validator(steer)]
    pub fn validate_steer(
        &self,
        _ctx: &WorkflowContextView,
        steer: &Steer,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        match &self.running_turn {
            Some(running) if *running == steer.expected_turn_id => Ok(()),
            Some(running) => Err(format!(
                "turn {:?} is not running (turn {running:?} is)",
                steer.expected_turn_id
            )
            .into()),
            None => Err(format!(
                "turn {:?} is not running (no turn is)",
                steer.expected_turn_id
            )
            .into()),
        }
    }

    /// Adds a message to the running turn: the model sees it at its next
    /// call (Codex's `turn/steer`).
    #[update(name = "steer")]
    pub fn steer(&mut self, ctx: &mut SyncWorkflowContext<Self>, steer: Steer) {
        let now = ctx.workflow_time();
        self.steered.push(AppendItem::Digest(steer.item_digest));
        self.emit(
            now,
            &steer.expected_turn_id,
            Msg::UserMessage(pb::UserMessage {
                message: steer.text_preview,
                truncated: steer.text_truncated,
            }),
        );
    }

    #[update_validator(rename)]
    pub fn validate_rename(
        &self,
        _ctx: &WorkflowContextView,
        _name: &String,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.open_for_registry()
    }

    /// Names the session (an empty name clears it).
    #[update(name = "rename")]
    pub fn rename(&mut self, ctx: &mut SyncWorkflowContext<Self>, name: String) {
        if let Err(e) = ctx.upsert_memo([(MEMO_NAME, Some(MemoValue::new(name.clone())))]) {
            tracing::warn!(error = %e, "cannot update the session memo");
        }
        self.durable.registry.name = name;
    }

    #[update_validator(archive)]
    pub fn validate_archive(
        &self,
        _ctx: &WorkflowContextView,
        _archived: &bool,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.open_for_registry()
    }

    /// Sets or clears the archived flag.
    #[update(name = "archive")]
    pub fn archive(&mut self, ctx: &mut SyncWorkflowContext<Self>, archived: bool) {
        if self.durable.registry.archived == archived {
            return;
        }
        if let Err(e) = ctx.upsert_memo([(MEMO_ARCHIVED, Some(MemoValue::new(archived)))]) {
            tracing::warn!(error = %e, "cannot update the session memo");
        }
        self.durable.registry.archived = archived;
    }

    #[query(name = "events")]
    pub fn events(&self, _ctx: &WorkflowContextView, q: EventsQuery) -> EventsPage {
        self.durable.log.page(
            q,
            self.status == RunStatus::Closed,
            self.durable.archive.as_ref(),
        )
    }

    /// What a fork at `turn_id` (empty: the newest ended turn) starts
    /// from.
    #[query(name = "fork_point")]
    pub fn fork_point(&self, _ctx: &WorkflowContextView, turn_id: String) -> Option<ForkPoint> {
        let heads = &self.durable.turn_heads;
        let turn = if turn_id.is_empty() {
            heads.back()
        } else {
            heads.iter().find(|t| t.turn_id == turn_id)
        };
        let turn = match turn {
            Some(turn) => turn.clone(),
            // No turn remembered (none ended yet, or all ended before
            // sessions remembered them): an idle session's conversation.
            None if turn_id.is_empty() && self.status == RunStatus::Idle => TurnHead {
                turn_id: String::new(),
                head: self.durable.head.clone(),
                pending: self.durable.pending.clone(),
                last_offset: self.durable.log.last_offset(),
            },
            None => return None,
        };
        Some(ForkPoint {
            input: SessionInput {
                carried: None,
                ..self.input.clone()
            },
            settings: self.durable.settings.clone(),
            turn,
            name: self.durable.registry.name.clone(),
        })
    }

    #[query(name = "state")]
    pub fn state(&self, _ctx: &WorkflowContextView, _input: ()) -> SessionState {
        SessionState {
            session_id: self.input.session_id.clone(),
            status: self.status,
            model: self.durable.settings.model.clone(),
            cwd: self.input.cwd.clone(),
            created_at_ms: self.input.created_at_ms,
            last_activity_ms: self.durable.last_activity_ms,
            last_event_offset: self.durable.log.last_offset(),
            turns_completed: self.durable.turns_completed,
            queued_turns: self.durable.inbox.len() as u32,
            total_usage: self.durable.usage,
            runs: self.durable.runs,
            settings: self.durable.settings.clone(),
            pending_requests: self.requests.clone(),
            owner: self.input.owner.clone(),
            model_defaults: self.durable.model_defaults.clone(),
            mcp_servers: self
                .durable
                .setup
                .iter()
                .flat_map(|x| x.mcp_servers.clone())
                .collect(),
            mcp_tools: self
                .durable
                .setup
                .iter()
                .flat_map(|x| x.mcp_tools.clone())
                .collect(),
            mcp_tool_specs: self
                .durable
                .setup
                .iter()
                .flat_map(|x| {
                    x.mcp_tools
                        .iter()
                        .filter_map(|t| x.tools.iter().find(|spec| spec.name == t.name).cloned())
                })
                .collect(),
            config: self.input.config.clone(),
            registry: self.durable.registry.clone(),
            forked_from: self.input.forked_from.clone(),
            agents: self.durable.agents.clone(),
        }
    }
}

impl AgentWorkflow {
    /// Registry changes are taken until the session starts closing.
    fn open_for_registry(&self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if self.durable.shutdown_requested || self.status == RunStatus::Closed {
            return Err("the session is closed".into());
        }
        Ok(())
    }

    /// The next run's input when this run should continue-as-new now: at a
    /// turn boundary, when Temporal suggests it or the budget is spent.
    fn next_run_input(&self, history_length: u32, suggested: bool) -> Option<SessionInput> {
        let budget = match self.input.history_event_budget {
            0 => DEFAULT_HISTORY_EVENT_BUDGET,
            n => n,
        };
        if self.durable.shutdown_requested
            || self.turns_this_run == 0
            || !(suggested || history_length >= budget || self.rollover_requested)
        {
            return None;
        }
        Some(SessionInput {
            carried: Some(self.durable.carry()),
            ..self.input.clone()
        })
    }

    fn emit(&mut self, ctx_time: Option<std::time::SystemTime>, turn_id: &str, msg: Msg) {
        // Pickers show the newest message; the memo takes it at the next
        // status change.
        match &msg {
            Msg::UserMessage(m) => {
                self.durable.registry.last_message = message_preview(&m.message);
            }
            Msg::AgentMessage(m) => {
                self.durable.registry.last_message = message_preview(&m.message);
            }
            _ => {}
        }
        let offset = self.durable.log.push(ctx_time, turn_id, msg);
        let agent = self
            .input
            .agent
            .as_ref()
            .map_or("", |a| a.agent_id.as_str());
        crate::notices::record(&self.run_id, &self.input.session_id, agent, offset);
    }

    /// A `session_configured` event: what the session runs with now (the
    /// model-proxy's defaults filled in), or — for sessions started before
    /// patch `session-configured-v1`, replayed — the event as they had it.
    fn session_configured(&self, resolved: bool) -> Msg {
        // The id the client knows (the key without its tenant).
        let session_id = keel_workflow_api::split_session_key(&self.input.session_id)
            .1
            .to_string();
        if !resolved {
            return Msg::SessionConfigured(pb::SessionConfigured {
                session_id,
                model: self.durable.settings.model.clone(),
                cwd: self.input.cwd.clone(),
                ..Default::default()
            });
        }
        let defaults = self.durable.model_defaults.as_ref();
        let settings = self.durable.settings.resolved(defaults);
        Msg::SessionConfigured(pb::SessionConfigured {
            session_id,
            model: settings.model.clone(),
            cwd: self.input.cwd.clone(),
            model_provider: defaults.map(|d| d.provider.clone()).unwrap_or_default(),
            context: Some((&settings).into()),
            history_rollovers: self.durable.runs,
        })
    }

    /// The settings for the next model or tool call.
    fn effective(&self) -> TurnSettings {
        match &self.turn_context {
            Some(patch) => self.durable.settings.with(patch),
            None => self.durable.settings.clone(),
        }
    }

    /// The next model call: the conversation head and pending items, the
    /// tools on offer (none for a compaction) and the per-call context.
    fn model_call_input(&self, turn_id: &str, compact: bool) -> ModelCallInput {
        let settings = self.effective();
        let tools = if compact {
            Vec::new()
        } else {
            self.offered_tools()
        };
        let mut input = ModelCallInput {
            session_id: self.input.session_id.clone(),
            turn_id: turn_id.to_string(),
            model: settings.model,
            head: self.durable.head.clone(),
            append: self
                .durable
                .pending
                .iter()
                .chain(&self.steered)
                .cloned()
                .collect(),
            tools,
            parallel_tool_calls: false,
            ephemeral_items: developer_items(&self.input.developer_instructions)
                .into_iter()
                .chain(
                    self.durable
                        .setup
                        .iter()
                        .flat_map(|x| x.context_items.clone()),
                )
                .collect(),
            reasoning_effort: settings.reasoning_effort,
            reasoning_summary: settings.reasoning_summary,
            personality: settings.personality,
            compact,
            events_before: self.durable.log.last_offset(),
            ephemeral_item_digests: Some(&self.input.developer_instructions_digest)
                .filter(|d| !d.is_empty())
                .cloned()
                .into_iter()
                .collect(),
            prefix_digest: String::new(),
            store_prefix: false,
            provider: self.input.model_provider.clone(),
            output_schema_digest: if compact {
                String::new()
            } else {
                self.turn_output_schema.clone()
            },
            instructions_digest: self.input.base_instructions_digest.clone(),
            no_live_deltas: self.input.agent.is_some(),
        };
        // A compaction (rare, and without tools) sends its prefix inline.
        if self.call_prefix && !compact {
            prefix::by_reference(&mut input, self.durable.stored_prefix.as_deref());
        }
        input
    }

    /// The tools offered to the model: the tool-runner's, then (with
    /// approvals) the ones the workflow answers, sorted by name.
    fn offered_tools(&self) -> Vec<keel_workflow_api::ToolSpec> {
        let mut offered = match &self.durable.setup {
            Some(setup) => setup.tools.clone(),
            None => tools::legacy_tools(),
        };
        if self.approvals {
            // A sub-agent asks its questions of the session's owner, as it
            // asks for approvals (it has no dynamic tools).
            offered.extend(tools::workflow_tools(&self.input.dynamic_tools, true));
            let multi_agent = self
                .input
                .features
                .as_ref()
                .is_some_and(|f| f.multi_agent == Some(true));
            if multi_agent && self.input.agent.is_none() {
                offered.extend(tools::collab_tools(&self.input.agent_roles));
            }
            offered.sort_by(|a, b| a.name.cmp(&b.name));
        }
        // A sub-agent's role may take tools away (never add them).
        if let Some(link) = &self.input.agent {
            offered.retain(|t| !link.disabled_tools.contains(&t.name));
        }
        offered
    }

    fn turn_interrupted(&self) -> bool {
        self.turn_cancel.as_ref().is_some_and(|t| t.is_cancelled())
    }
}

/// Records `msg` in the event log at the current workflow time.
fn emit(ctx: &mut WorkflowContext<AgentWorkflow>, turn_id: &str, msg: Msg) {
    let now = ctx.workflow_time();
    ctx.state_mut(|s| s.emit(now, turn_id, msg));
}

fn upsert_memo(ctx: &WorkflowContext<AgentWorkflow>, status: RunStatus) {
    upsert_status(ctx, status.as_str());
}

/// Writes the memo's status, last activity and newest message. The memo
/// changes nothing a replay compares (Temporal checks the command, not its
/// values), so the message could join the status writes sessions already
/// recorded.
fn upsert_status(ctx: &WorkflowContext<AgentWorkflow>, status: &str) {
    let (last, message) = ctx.state(|s| {
        (
            s.durable.last_activity_ms,
            s.durable.registry.last_message.clone(),
        )
    });
    if let Err(e) = ctx.upsert_memo([
        (MEMO_STATUS, Some(MemoValue::new(status.to_string()))),
        (MEMO_LAST_ACTIVITY_MS, Some(MemoValue::new(last))),
        (MEMO_LAST_MESSAGE, Some(MemoValue::new(message))),
    ]) {
        // Visibility only; a failure here must not fail the session.
        tracing::warn!(error = %e, "cannot update the session memo");
    }
}

/// Tells session-api (through the memo) whether the queue is at its limit.
fn set_queue_full<W>(ctx: &SyncWorkflowContext<W>, full: bool) {
    if let Err(e) = ctx.upsert_memo([(MEMO_QUEUE_FULL, Some(MemoValue::new(full)))]) {
        // A stale memo only costs a turn that the workflow then refuses.
        tracing::warn!(error = %e, "cannot update the session memo");
    }
}

fn set_queue_full_async(ctx: &WorkflowContext<AgentWorkflow>, full: bool) {
    if let Err(e) = ctx.upsert_memo([(MEMO_QUEUE_FULL, Some(MemoValue::new(full)))]) {
        tracing::warn!(error = %e, "cannot update the session memo");
    }
}

fn model_options(cancel: &WorkflowCancellationToken) -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(600))
        .heartbeat_timeout(HEARTBEAT_TIMEOUT)
        .cancellation_token(cancel.clone())
        .retry_policy(
            // 0.5 s first (a model call cut by a dead worker starts again
            // soon), then 1, 2, 4, 8, 16 s: the same 30 s window as before.
            RetryPolicy::builder()
                .initial_interval(Duration::from_millis(500))
                .backoff_coefficient(2.0)
                .maximum_interval(Duration::from_secs(30))
                .maximum_attempts(7)
                .build(),
        )
        .summary("model call")
        .build()
}

fn tool_options(cancel: &WorkflowCancellationToken) -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(3600))
        .heartbeat_timeout(HEARTBEAT_TIMEOUT)
        .cancellation_token(cancel.clone())
        .retry_policy(
            RetryPolicy::builder()
                .initial_interval(Duration::from_secs(1))
                .backoff_coefficient(2.0)
                .maximum_interval(Duration::from_secs(10))
                .maximum_attempts(crate::activities::TOOL_ATTEMPTS)
                .build(),
        )
        .summary("tool call")
        .build()
}

/// Closing the session's tool-runner state: short, a few attempts.
fn close_options() -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(30))
        .retry_policy(
            RetryPolicy::builder()
                .initial_interval(Duration::from_secs(1))
                .maximum_attempts(3)
                .build(),
        )
        .summary("close tool session")
        .build()
}

/// A failed activity's user-facing message and Codex error class.
fn failure_message(e: &ActivityExecutionError) -> (String, String) {
    use temporalio_common::error::IncomingError;
    match e.cause() {
        Some(c @ IncomingError::Application(af)) => (
            c.failure().message.clone(),
            af.type_name().unwrap_or(failure_type::OTHER).to_string(),
        ),
        Some(other) => (other.failure().message.clone(), failure_type::OTHER.into()),
        None => (e.to_string(), failure_type::OTHER.into()),
    }
}

/// A `function_call_output` item the workflow synthesises (small by design).
fn inline_output(call_id: &str, output: &str, custom: bool) -> AppendItem {
    let kind = if custom {
        "custom_tool_call_output"
    } else {
        "function_call_output"
    };
    AppendItem::Inline(json!({"type": kind, "call_id": call_id, "output": output}).to_string())
}

/// Patch marker: sessions started before it reported only their own model
/// and cwd in `session_configured`; from it on, the session reads the
/// model-proxy's defaults first and reports every setting.
const PATCH_SESSION_CONFIGURED: &str = "session-configured-v1";
/// Patch marker: overrides answered before it emitted no event.
const PATCH_CONFIGURED_ON_OVERRIDE: &str = "configured-on-override-v1";

/// Reading the model-proxy's defaults: short, a few attempts.
fn describe_options() -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(10))
        .retry_policy(
            RetryPolicy::builder()
                .initial_interval(Duration::from_secs(1))
                .maximum_attempts(3)
                .build(),
        )
        .summary("model defaults")
        .build()
}

/// Patch marker: runs before it had no event archive.
const PATCH_EVENT_ARCHIVE: &str = "event-archive-v1";

/// At a turn boundary, moves the events waiting in the window to the
/// session's event archive when the window would soon drop them. Best
/// effort: without session-api the window keeps them (up to its byte cap)
/// and the next boundary tries again.
async fn archive_events(ctx: &mut WorkflowContext<AgentWorkflow>) {
    let Some(input) = ctx.state(|s| {
        let log = &s.durable.log;
        log.archive_due().then(|| ArchiveEventsInput {
            session_id: s.input.session_id.clone(),
            after: log.archived_upto().unwrap_or(0),
            upto: log.last_offset(),
            prev: s.durable.archive.as_ref().map(|a| a.head.clone()),
        })
    }) else {
        return;
    };
    // Short: it holds up the next turn, and the next boundary tries again.
    let options = ActivityOptions::with_start_to_close_timeout(Duration::from_secs(10))
        .retry_policy(
            RetryPolicy::builder()
                .initial_interval(Duration::from_millis(500))
                .maximum_attempts(2)
                .build(),
        )
        .summary("archive events")
        .build();
    let upto = input.upto;
    match ctx
        .execute_activity(KeelActivities::archive_events, input, options)
        .await
    {
        Ok(head) => ctx.state_mut(|s| {
            s.durable.archive = Some(EventArchive { head, upto });
            s.durable.log.archive_from(upto);
        }),
        Err(e) => tracing::warn!(error = %e, "cannot archive the session's events"),
    }
}

/// Patch marker: sessions closed by code before it did not end their
/// tool-runner state (`exec_command` processes lived on until pruned).
const PATCH_CLOSE_TOOL_SESSION: &str = "close-tool-session-v1";

/// Developer instructions as a per-call (never stored) developer message.
fn developer_items(instructions: &str) -> Vec<String> {
    if instructions.is_empty() {
        return Vec::new();
    }
    vec![
        json!({
            "type": "message",
            "role": "developer",
            "content": [{"type": "input_text", "text": instructions}],
        })
        .to_string(),
    ]
}
