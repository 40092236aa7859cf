//! One turn: the user's message in, then model calls and the tool calls
//! they ask for until the model answers without tools (or the turn is
//! interrupted, fails, or reaches its iteration cap), then `turn_complete`.
//! The patch markers checked at the start of each turn live here.

use keel_proto::v1 as pb;
use keel_workflow_api::{
    FORKABLE_TURNS, ModelDefaults, RunStatus, SandboxMode, SessionSetup, TurnHead, Usage, UserTurn,
};
use pb::event::Msg;
use temporalio_sdk::{
    ActivityExecutionError, WorkflowCancellationToken, WorkflowContext, WorkflowResult,
};

use super::{
    ABORTED, AgentWorkflow, LEGACY_MAX_ITERATIONS, call, emit, failure_message, inline_output,
    lease, model_options, tool_calls, tool_options, upsert_memo,
};
use crate::activities::{AppendItem, KeelActivities, OutputItem, SetupInput, failure_type};
use crate::events::unix_ms;

pub(super) enum TurnEnd {
    Completed,
    Interrupted,
}

pub(super) async fn run_turn(
    ctx: &mut WorkflowContext<AgentWorkflow>,
    turn: UserTurn,
) -> WorkflowResult<()> {
    let cancel = WorkflowCancellationToken::new();
    let turn_id = turn.turn_id.clone();
    let approvals = ctx.patched(PATCH_APPROVALS);
    let tool_model = ctx.patched(PATCH_TOOL_MODEL);
    let iteration_setting = ctx.patched(PATCH_ITERATION_CAP);
    let call_prefix = ctx.patched(PATCH_CALL_PREFIX);
    let now = ctx.workflow_time();
    let started = now;
    ctx.state_mut(|s| {
        s.iteration_setting = iteration_setting;
        s.call_prefix = call_prefix;
        s.running_turn = Some(turn_id.clone());
        s.approvals = approvals;
        s.tool_model = tool_model;
        s.turn_context = turn.context.clone();
        s.turn_output_schema = turn.output_schema_digest.clone();
        s.last_call_tokens = 0;
        s.last_rate_limits = None;
        s.status = RunStatus::Running;
        s.turn_cancel = Some(cancel.clone());
        s.durable.last_activity_ms = unix_ms(now);
        s.durable.pending.push(if turn.inline_item.is_empty() {
            AppendItem::Digest(turn.item_digest.clone())
        } else {
            AppendItem::Inline(turn.inline_item.clone())
        });
        s.emit(now, &turn_id, Msg::TurnStarted(pb::TurnStarted {}));
        s.emit(
            now,
            &turn_id,
            Msg::UserMessage(pb::UserMessage {
                message: turn.text_preview.clone(),
                truncated: turn.text_truncated,
            }),
        );
    });
    upsert_memo(ctx, RunStatus::Running);
    // A crew starts with the session's first turn (new sessions only: no
    // session from before crews has one).
    // (The patch: a worker from before crews, given a crew session by a
    // newer session-api, ran its first turn without one; its history must
    // replay so.)
    if ctx.state(|s| {
        s.input.agent.is_none()
            && s.input.crew.is_some()
            && s.durable.turns_completed == 0
            && s.durable.agents.is_empty()
    }) && ctx.patched(PATCH_CREWS)
        && let Some(item) = super::collab::start_crew(ctx, &turn_id, &turn.text_preview).await
    {
        ctx.state_mut(|s| s.durable.pending.push(item));
    }

    let mut last_agent_message = String::new();
    let mut turn_usage = Usage::default();
    let end = sample_until_done(
        ctx,
        &turn_id,
        &cancel,
        &mut last_agent_message,
        &mut turn_usage,
    )
    .await;

    // Codex compacts when the context reaches the model's limit; here at
    // the end of the turn that reached it (the compaction runs before the
    // next turn, as a `keel compact` would).
    let over_limit = matches!(end, TurnEnd::Completed)
        && ctx.state(|s| {
            auto_compact_limit(s.durable.setup.as_ref()).is_some_and(|l| s.last_call_tokens >= l)
        });
    let compact = over_limit && ctx.patched(PATCH_AUTO_COMPACT);
    let now = ctx.workflow_time();
    super::trace::record(
        "turn",
        started,
        now,
        vec![
            opentelemetry::KeyValue::new(
                "keel.session_id",
                ctx.state(|s| s.input.session_id.clone()),
            ),
            opentelemetry::KeyValue::new("keel.turn_id", turn_id.clone()),
            opentelemetry::KeyValue::new(
                "keel.turn.outcome",
                match end {
                    TurnEnd::Completed => "completed",
                    TurnEnd::Interrupted => "interrupted",
                },
            ),
            opentelemetry::KeyValue::new("keel.tokens.input", turn_usage.input_tokens as i64),
            opentelemetry::KeyValue::new("keel.tokens.output", turn_usage.output_tokens as i64),
        ],
    );
    ctx.state_mut(|s| {
        s.durable.usage.add(&turn_usage);
        let rate_limits = s.last_rate_limits.take();
        s.emit(
            now,
            &turn_id,
            Msg::TokenCount(pb::TokenCount {
                total_token_usage: Some((&s.durable.usage).into()),
                last_token_usage: Some((&turn_usage).into()),
                model_context_window: s.durable.setup.as_ref().map_or(0, |x| x.context_window),
                rate_limits: rate_limits.as_ref().map(Into::into),
            }),
        );
        if compact {
            s.durable.compact_requested = true;
        }
        s.last_turn_status = Some(match end {
            TurnEnd::Completed => keel_workflow_api::AgentStatus::Completed(
                (!last_agent_message.is_empty()).then(|| last_agent_message.clone()),
            ),
            TurnEnd::Interrupted => keel_workflow_api::AgentStatus::Interrupted,
        });
        let msg = match end {
            TurnEnd::Completed => Msg::TurnComplete(pb::TurnComplete { last_agent_message }),
            TurnEnd::Interrupted => Msg::TurnAborted(pb::TurnAborted {
                reason: pb::TurnAbortReason::Interrupted as i32,
            }),
        };
        s.emit(now, &turn_id, msg);
        s.running_turn = None;
        // Steered messages no call sent (the turn was interrupted or
        // failed) go with the next turn's first call.
        let steered = std::mem::take(&mut s.steered);
        s.durable.pending.extend(steered);
        // Forks start from a turn's end: the conversation, and the items
        // no call has sent yet (outputs of the last tool calls).
        if s.durable.turn_heads.len() >= FORKABLE_TURNS {
            s.durable.turn_heads.pop_front();
        }
        s.durable.turn_heads.push_back(TurnHead {
            turn_id: turn_id.clone(),
            head: s.durable.head.clone(),
            pending: s.durable.pending.clone(),
            last_offset: s.durable.log.last_offset(),
        });
        s.status = RunStatus::Idle;
        s.turn_cancel = None;
        s.turn_context = None;
        s.turn_output_schema.clear();
        s.durable.turns_completed += 1;
        s.turns_this_run += 1;
        s.durable.last_activity_ms = unix_ms(now);
    });
    upsert_memo(ctx, RunStatus::Idle);
    Ok(())
}

/// Patch marker: turns recorded before it ran every tool call without
/// approvals, sandbox settings or the workflow-handled tools.
const PATCH_APPROVALS: &str = "approvals-v1";
/// A session's crew starts with its first turn.
const PATCH_CREWS: &str = "crews-v1";

/// Patch marker: turns recorded before it dispatched any tool the
/// tool-runner knew and read command arguments with the workflow's own
/// code (see `workflow/legacy.rs`); from it on, calls are read by the tool
/// model and only offered tools run.
const PATCH_TOOL_MODEL: &str = "tool-model-v1";
/// Turns started with this marker stop after the `max_iterations` setting
/// (none by default) instead of after 50 model calls.
const PATCH_ITERATION_CAP: &str = "iteration-cap-v1";

/// Patch marker: turns recorded before it sent the tools and ephemeral
/// items inline with every model call (see `workflow/prefix.rs`).
const PATCH_CALL_PREFIX: &str = "call-prefix-v1";

/// Patch marker: turns recorded before it never asked for a compaction
/// when the context reached the model's limit.
const PATCH_AUTO_COMPACT: &str = "auto-compact-v1";

/// The context size (tokens) at which a session compacts, as Codex computes
/// it (`codex-rs/protocol/src/openai_models.rs`,
/// `auto_compact_token_limit`): 90 % of the model's context window, or the
/// configured `model_auto_compact_token_limit` when that is lower. `None`
/// when neither is known.
pub(super) fn auto_compact_limit(setup: Option<&SessionSetup>) -> Option<u64> {
    let setup = setup?;
    let ninety = (setup.context_window > 0).then(|| setup.context_window.saturating_mul(9) / 10);
    let configured = (setup.auto_compact_token_limit > 0).then_some(setup.auto_compact_token_limit);
    match (configured, ninety) {
        (Some(c), Some(n)) => Some(c.min(n)),
        (c, n) => c.or(n),
    }
}

/// Patch marker: sessions started before it offer only the built-in `shell`
/// tool and send no project context (see docs/workflow-evolution.md).
const PATCH_SESSION_SETUP: &str = "session-setup-v1";

/// Fetches the session's tools and project context once. `Ok(false)`: the
/// turn was interrupted; `Err`: the failure's message and class.
async fn ensure_setup(
    ctx: &mut WorkflowContext<AgentWorkflow>,
    cancel: &WorkflowCancellationToken,
) -> Result<bool, (String, String)> {
    if ctx.state(|s| s.durable.setup.is_some()) || !ctx.patched(PATCH_SESSION_SETUP) {
        return Ok(true);
    }
    let mut input = ctx.state(|s| SetupInput {
        session_id: s.input.session_id.clone(),
        cwd: s.input.cwd.clone(),
        shell_tool: s.input.shell_tool,
        json_apply_patch: s
            .durable
            .model_defaults
            .as_ref()
            .is_some_and(ModelDefaults::no_custom_tools),
        mcp_servers: s.input.mcp_servers.clone(),
        runner: None,
        features: s.input.features.clone(),
        model: s.effective().model,
        full_access: s.effective().sandbox.mode == SandboxMode::DangerFullAccess,
        project_doc: s.input.project_doc.clone(),
        provider: s.input.model_provider.clone(),
    });
    let mut moved = false;
    let prepared = loop {
        input.runner = match lease::runner(ctx, cancel).await {
            Ok(runner) => runner,
            Err(e) => break Err(e),
        };
        // A session cloned from a repository works in the clone.
        if let Some(clone) = ctx.state(|s| s.durable.workspace.clone()) {
            input.cwd = clone;
        }
        let prepared = ctx
            .execute_activity(
                KeelActivities::prepare_session,
                input.clone(),
                tool_options(cancel),
            )
            .await;
        // Reading the tools and context changes nothing: it runs again on
        // the runner the workspace moves to.
        match (&prepared, &input.runner) {
            (Err(e), Some(from)) if !moved && lease::moved(e).is_some() => {
                moved = true;
                if let Err(e) = lease::move_off(ctx, cancel, from, "").await {
                    break Err(e);
                }
            }
            _ => break prepared,
        }
    };
    match prepared {
        Ok(setup) => {
            ctx.state_mut(|s| s.durable.setup = Some(setup));
            Ok(true)
        }
        Err(ActivityExecutionError::Cancelled(_)) => Ok(false),
        Err(e) => Err(failure_message(&e)),
    }
}

/// The model ↔ tools loop of one turn.
async fn sample_until_done(
    ctx: &mut WorkflowContext<AgentWorkflow>,
    turn_id: &str,
    cancel: &WorkflowCancellationToken,
    last_agent_message: &mut String,
    turn_usage: &mut Usage,
) -> TurnEnd {
    match ensure_setup(ctx, cancel).await {
        Ok(true) => {}
        Ok(false) => return TurnEnd::Interrupted,
        Err((message, class)) => {
            emit(
                ctx,
                turn_id,
                Msg::Error(pb::ErrorEvent {
                    message: format!("cannot prepare the session: {message}"),
                    codex_error_info: class,
                }),
            );
            return TurnEnd::Completed;
        }
    }
    // `None`: no limit.
    let cap = ctx.state(
        |s| match (s.iteration_setting, s.effective().max_iterations) {
            (false, _) => Some(LEGACY_MAX_ITERATIONS),
            (true, 0) => None,
            (true, n) => Some(n),
        },
    );
    let mut model_calls: u32 = 0;
    let mut prefix_resent = false;
    while cap.is_none_or(|cap| model_calls < cap) {
        model_calls += 1;
        let (input, sent) = ctx.state(|s| {
            (
                s.model_call_input(turn_id, false),
                (s.durable.pending.len(), s.steered.len()),
            )
        });
        let stored = input.store_prefix.then(|| input.prefix_digest.clone());
        let result = ctx
            .execute_activity(KeelActivities::model_call, input, model_options(cancel))
            .await;
        let now = ctx.workflow_time();
        let output = match result {
            Ok(o) => o,
            Err(ActivityExecutionError::Cancelled(_)) => return TurnEnd::Interrupted,
            Err(e) => {
                let (message, class) = failure_message(&e);
                if class == failure_type::PREFIX_MISSING && !prefix_resent {
                    // The proxy's blob store lost the prefix: send it again,
                    // once (the call did not happen).
                    prefix_resent = true;
                    model_calls -= 1;
                    ctx.state_mut(|s| s.durable.stored_prefix = None);
                    continue;
                }
                ctx.state_mut(|s| {
                    s.emit(
                        now,
                        turn_id,
                        Msg::Error(pb::ErrorEvent {
                            message,
                            codex_error_info: class,
                        }),
                    )
                });
                return TurnEnd::Completed;
            }
        };
        turn_usage.add(&output.usage);
        let mut calls = Vec::new();
        ctx.state_mut(|s| {
            s.last_call_tokens = output.usage.total_tokens;
            if output.rate_limits.is_some() {
                s.last_rate_limits = output.rate_limits.clone();
            }
            if stored.is_some() {
                s.durable.stored_prefix = stored;
            }
            s.durable.head = Some(output.head.clone());
            // What this call sent is now in the conversation; messages
            // steered in meanwhile wait for the next call.
            s.durable
                .pending
                .drain(..sent.0.min(s.durable.pending.len()));
            s.steered.drain(..sent.1.min(s.steered.len()));
            for item in &output.items {
                match item {
                    OutputItem::Message {
                        role,
                        text,
                        truncated,
                        ..
                    } if role == "assistant" => {
                        *last_agent_message = text.clone();
                        s.emit(
                            now,
                            turn_id,
                            Msg::AgentMessage(pb::AgentMessage {
                                message: text.clone(),
                                truncated: *truncated,
                            }),
                        );
                    }
                    OutputItem::Reasoning { summary, .. } if !summary.is_empty() => s.emit(
                        now,
                        turn_id,
                        Msg::AgentReasoning(pb::AgentReasoning {
                            text: summary.clone(),
                        }),
                    ),
                    OutputItem::FunctionCall {
                        digest,
                        call_id,
                        name,
                        arguments,
                        arguments_truncated,
                    } => calls.push(call::Call {
                        call_id: call_id.clone(),
                        name: name.clone(),
                        arguments: arguments.clone(),
                        custom: false,
                        item_digest: digest.clone(),
                        truncated: *arguments_truncated,
                    }),
                    OutputItem::CustomToolCall {
                        digest,
                        call_id,
                        name,
                        input,
                        input_truncated,
                    } => calls.push(call::Call {
                        call_id: call_id.clone(),
                        name: name.clone(),
                        arguments: input.clone(),
                        custom: true,
                        item_digest: digest.clone(),
                        truncated: *input_truncated,
                    }),
                    // The provider searched; the item stays in the
                    // conversation, and nothing runs here.
                    OutputItem::Other {
                        web_search: Some(search),
                        ..
                    } => {
                        s.emit(
                            now,
                            turn_id,
                            Msg::WebSearchBegin(pb::WebSearchBegin {
                                call_id: search.call_id.clone(),
                            }),
                        );
                        s.emit(
                            now,
                            turn_id,
                            Msg::WebSearchEnd(pb::WebSearchEnd {
                                call_id: search.call_id.clone(),
                                query: search.query.clone(),
                                action_json: search.action_json.clone(),
                            }),
                        );
                    }
                    _ => {}
                }
            }
        });
        if calls.is_empty() {
            // A message steered in while the model answered gets its answer
            // in this turn.
            if ctx.state(|s| s.steered.is_empty()) {
                return TurnEnd::Completed;
            }
            continue;
        }
        for call in calls {
            if cancel.is_cancelled() {
                ctx.state_mut(|s| {
                    s.durable
                        .pending
                        .push(inline_output(&call.call_id, ABORTED, call.custom))
                });
                continue;
            }
            let turn = call::Turn {
                id: turn_id,
                cancel,
            };
            tool_calls::run(ctx, turn, call).await;
        }
        if cancel.is_cancelled() {
            return TurnEnd::Interrupted;
        }
    }
    let message = match ctx.state(|s| s.iteration_setting) {
        true => format!(
            "Maximum iterations ({model_calls}) reached (the max_iterations setting). Send another message to continue."
        ),
        false => format!(
            "Maximum iterations ({LEGACY_MAX_ITERATIONS}) reached. Send another message to continue."
        ),
    };
    emit(
        ctx,
        turn_id,
        Msg::AgentMessage(pb::AgentMessage {
            message: message.clone(),
            truncated: false,
        }),
    );
    *last_agent_message = message;
    TurnEnd::Completed
}
