//! An MCP tool call (Codex: `codex-rs/core/src/mcp_tool_call.rs`): the
//! `mcp_tool_call_begin` event, the approval Codex would ask for, the call
//! through the broker, and `mcp_tool_call_end`.
//!
//! Approval, as Codex decides it: nothing is asked in full-access mode
//! (approval `never` with `danger-full-access`), of a tool without
//! annotations in `auto` mode, or of a tool the operator set to `approve`;
//! a tool set to `prompt` always asks; otherwise a destructive tool asks, a
//! read-only one does not, and any other asks unless it says it is neither
//! destructive nor open-world. The question is a `request_user_input` with
//! Codex's id and labels; "Allow for this session" is remembered (for
//! `auto` tools).
//!
//! A server's question mid-call (MCP elicitation) becomes an
//! `elicitation_request` the user answers with Respond; the call waits in
//! the broker meanwhile, and workers may come and go. Under approval
//! `never` the question is declined without asking.
//!
//! A call cut short (the broker or the worker lost mid-call) runs again
//! only when the tool is read-only or idempotent and nobody has answered a
//! question of it; otherwise the model is told once that it was
//! interrupted.

use std::time::Duration;

use keel_policy::ApprovalKey;
use keel_proto::v1 as pb;
use keel_workflow_api::{Answer, ApprovalPolicy, McpToolEntry, RequestKind, SandboxMode};
use pb::event::Msg;
use temporalio_client::RetryPolicy;
use temporalio_sdk::{ActivityExecutionError, ActivityOptions, WorkflowContext};

use super::call::{ARGUMENTS_TOO_LARGE, Call, Turn};
use super::{
    ABORTED, AgentWorkflow, HEARTBEAT_TIMEOUT, approvals, emit, failure_message, inline_output,
};
use crate::activities::{
    AppendItem, KeelActivities, McpCallInput, McpCallOutput, McpQuestion, McpResumeInput,
};

/// Codex's question id prefix and answer labels.
const QUESTION_ID_PREFIX: &str = "mcp_tool_call_approval";
const ALLOW: &str = "Allow";
const ALLOW_FOR_SESSION: &str = "Allow for this session";
const CANCEL: &str = "Cancel";
/// Codex's outputs for a call the user did not allow.
const DECLINED: &str = "user rejected MCP tool call";
const CANCELLED: &str = "user cancelled MCP tool call";

enum Decision {
    Run,
    Declined,
    Cancelled,
}

/// Runs `call` of `tool` and returns its output item.
pub(super) async fn call(
    ctx: &mut WorkflowContext<AgentWorkflow>,
    turn: Turn<'_>,
    call: &Call,
    tool: McpToolEntry,
) -> AppendItem {
    if call.truncated {
        return inline_output(&call.call_id, ARGUMENTS_TOO_LARGE, call.custom);
    }
    // Codex parses the arguments before anything else: bad JSON is the
    // model's to fix, and nothing starts.
    if !call.arguments.trim().is_empty()
        && let Err(e) = serde_json::from_str::<serde_json::Value>(&call.arguments)
    {
        return inline_output(&call.call_id, &format!("err: {e}"), call.custom);
    }
    let invocation = pb::McpInvocation {
        server: tool.server.clone(),
        tool: tool.tool.clone(),
        arguments: call.arguments.clone(),
    };
    emit(
        ctx,
        turn.id,
        Msg::McpToolCallBegin(pb::McpToolCallBegin {
            call_id: call.call_id.clone(),
            invocation: Some(invocation.clone()),
        }),
    );
    match decide(ctx, turn, call, &tool).await {
        Decision::Run => {}
        Decision::Declined => return skipped(ctx, turn, call, invocation, DECLINED),
        Decision::Cancelled => return skipped(ctx, turn, call, invocation, CANCELLED),
    }
    let (session_id, events_before) =
        ctx.state(|s| (s.input.session_id.clone(), s.durable.log.last_offset()));
    let input = McpCallInput {
        session_id,
        call_id: call.call_id.clone(),
        server: tool.server.clone(),
        tool: tool.tool.clone(),
        arguments: call.arguments.clone(),
        turn_id: turn.id.to_string(),
        events_before,
    };
    let options = mcp_options(turn, tool.may_repeat());
    let mut result = ctx
        .execute_activity(KeelActivities::call_mcp_tool, input, options)
        .await;
    let mut questions = 0u32;
    loop {
        match result {
            Ok(McpCallOutput {
                elicitation: Some(question),
                ..
            }) => {
                questions += 1;
                let Some((action, content_json)) =
                    elicit(ctx, turn, call, &tool, questions, question).await
                else {
                    // Interrupted while the user thought: the broker ends
                    // the waiting call (best effort).
                    let cancel = resume_input(ctx, turn, call, "cancel", String::new());
                    let _ = ctx
                        .execute_activity(
                            KeelActivities::resume_mcp_call,
                            cancel,
                            abandon_options(),
                        )
                        .await;
                    end(ctx, turn, call, invocation, ABORTED);
                    return inline_output(&call.call_id, ABORTED, call.custom);
                };
                let resume = resume_input(ctx, turn, call, &action, content_json);
                result = ctx
                    .execute_activity(
                        KeelActivities::resume_mcp_call,
                        resume,
                        mcp_options(turn, false),
                    )
                    .await;
            }
            Ok(out) => {
                emit(
                    ctx,
                    turn.id,
                    Msg::McpToolCallEnd(pb::McpToolCallEnd {
                        call_id: call.call_id.clone(),
                        invocation: Some(invocation),
                        duration_ms: out.duration_ms,
                        success: out.success,
                        result_json: out.result_json,
                        result_truncated: out.result_truncated,
                        error: out.error,
                    }),
                );
                return AppendItem::Digest(out.output_digest);
            }
            Err(ActivityExecutionError::Cancelled(_)) => {
                end(ctx, turn, call, invocation, ABORTED);
                return inline_output(&call.call_id, ABORTED, call.custom);
            }
            Err(e) => {
                let (message, _) = failure_message(&e);
                let text = if tool.may_repeat() && questions == 0 {
                    format!("tool call error: {message}")
                } else {
                    format!(
                        "tool call error: the call was interrupted ({message}); it was not run again because the tool is not marked read-only or idempotent, or the user had answered its question"
                    )
                };
                end(ctx, turn, call, invocation, &text);
                return inline_output(&call.call_id, &text, call.custom);
            }
        }
    }
}

fn resume_input(
    ctx: &WorkflowContext<AgentWorkflow>,
    turn: Turn<'_>,
    call: &Call,
    action: &str,
    content_json: String,
) -> McpResumeInput {
    let (session_id, events_before) =
        ctx.state(|s| (s.input.session_id.clone(), s.durable.log.last_offset()));
    McpResumeInput {
        session_id,
        call_id: call.call_id.clone(),
        action: action.to_string(),
        content_json,
        turn_id: turn.id.to_string(),
        events_before,
    }
}

/// The server's question to the user, as a pending request; `None` when
/// the turn was interrupted first. Under approval `never` nobody is asked:
/// the question is declined.
async fn elicit(
    ctx: &mut WorkflowContext<AgentWorkflow>,
    turn: Turn<'_>,
    call: &Call,
    tool: &McpToolEntry,
    n: u32,
    question: McpQuestion,
) -> Option<(String, String)> {
    let never = ctx.state(|s| s.effective().approval_policy == ApprovalPolicy::Never);
    if never {
        return Some(("decline".into(), String::new()));
    }
    let request_id = format!("{}-elicitation-{n}", call.call_id);
    let event = Msg::ElicitationRequest(pb::ElicitationRequest {
        request_id: request_id.clone(),
        server_name: tool.server.clone(),
        message: question.message,
        requested_schema_json: question.requested_schema_json,
        call_id: call.call_id.clone(),
    });
    match approvals::ask(ctx, turn.id, &request_id, RequestKind::Elicitation, event).await {
        Some(Answer::Elicitation {
            action,
            content_json,
        }) => Some((action, content_json)),
        _ => None,
    }
}

/// Whether the call may run, asking the user when Codex would.
async fn decide(
    ctx: &mut WorkflowContext<AgentWorkflow>,
    turn: Turn<'_>,
    call: &Call,
    tool: &McpToolEntry,
) -> Decision {
    let (full_access, remembered) = ctx.state(|s| {
        let settings = s.effective();
        let key = ApprovalKey::McpTool {
            server: tool.server.clone(),
            tool: tool.tool.clone(),
        };
        (
            settings.approval_policy == ApprovalPolicy::Never
                && settings.sandbox.mode == SandboxMode::DangerFullAccess,
            s.durable.approved_for_session.contains(&key),
        )
    });
    let mode = tool.approval_mode.as_str();
    if full_access || mode == "approve" || (mode != "prompt" && !tool.annotated) {
        return Decision::Run;
    }
    if !tool.requires_approval() && mode != "prompt" {
        return Decision::Run;
    }
    // Remembering applies to `auto` tools only (Codex).
    let may_remember = mode != "prompt";
    if may_remember && remembered {
        return Decision::Run;
    }
    let question_id = format!("{QUESTION_ID_PREFIX}_{}", call.call_id);
    let mut options = vec![pb::UserInputOption {
        label: ALLOW.into(),
        description: "Run the tool and continue.".into(),
    }];
    if may_remember {
        options.push(pb::UserInputOption {
            label: ALLOW_FOR_SESSION.into(),
            description: "Run the tool and remember this choice for this session.".into(),
        });
    }
    options.push(pb::UserInputOption {
        label: CANCEL.into(),
        description: "Cancel this tool call.".into(),
    });
    let event = Msg::RequestUserInput(pb::RequestUserInput {
        call_id: call.call_id.clone(),
        questions: vec![pb::UserInputQuestion {
            id: question_id.clone(),
            header: "Approve app tool call?".into(),
            question: format!(
                "Allow the {} MCP server to run tool \"{}\"?",
                tool.server, tool.tool
            ),
            options,
            is_other: false,
        }],
    });
    let answer = approvals::ask(ctx, turn.id, &call.call_id, RequestKind::UserInput, event).await;
    let Some(Answer::UserInput(answers)) = answer else {
        return Decision::Cancelled;
    };
    let chosen = answers.get(&question_id).cloned().unwrap_or_default();
    let has = |label: &str| chosen.iter().any(|a| a == label);
    if has("Decline") {
        Decision::Declined
    } else if has(ALLOW_FOR_SESSION) && may_remember {
        ctx.state_mut(|s| {
            s.durable.approved_for_session.insert(ApprovalKey::McpTool {
                server: tool.server.clone(),
                tool: tool.tool.clone(),
            });
        });
        Decision::Run
    } else if has(ALLOW) || has(ALLOW_FOR_SESSION) {
        Decision::Run
    } else {
        Decision::Cancelled
    }
}

/// The end of a call that did not run: its event and output.
fn skipped(
    ctx: &mut WorkflowContext<AgentWorkflow>,
    turn: Turn<'_>,
    call: &Call,
    invocation: pb::McpInvocation,
    message: &str,
) -> AppendItem {
    end(ctx, turn, call, invocation, message);
    inline_output(&call.call_id, message, call.custom)
}

fn end(
    ctx: &mut WorkflowContext<AgentWorkflow>,
    turn: Turn<'_>,
    call: &Call,
    invocation: pb::McpInvocation,
    error: &str,
) {
    emit(
        ctx,
        turn.id,
        Msg::McpToolCallEnd(pb::McpToolCallEnd {
            call_id: call.call_id.clone(),
            invocation: Some(invocation),
            success: false,
            error: error.to_string(),
            ..Default::default()
        }),
    );
}

/// One attempt for a tool that is not safe to repeat (a second attempt
/// could run it twice); a few for one that is.
fn mcp_options(turn: Turn<'_>, may_repeat: bool) -> ActivityOptions {
    let attempts = if may_repeat { 3 } else { 1 };
    // The broker bounds the call itself (tool_timeout_sec); this bounds a
    // broker that never answers.
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(3600))
        .heartbeat_timeout(HEARTBEAT_TIMEOUT)
        .cancellation_token(turn.cancel.clone())
        .retry_policy(
            RetryPolicy::builder()
                .initial_interval(Duration::from_secs(1))
                .backoff_coefficient(2.0)
                .maximum_interval(Duration::from_secs(10))
                .maximum_attempts(attempts)
                .build(),
        )
        .summary("mcp tool call")
        .build()
}

/// Ending a call nobody will answer: short, not tied to the (interrupted)
/// turn.
fn abandon_options() -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(30))
        .retry_policy(
            RetryPolicy::builder()
                .initial_interval(Duration::from_secs(1))
                .maximum_attempts(2)
                .build(),
        )
        .summary("abandon mcp call")
        .build()
}
