//! The tools the workflow answers itself: `update_plan` (a plan event),
//! `request_user_input` (questions to the client) and the client's dynamic
//! tools (calls the client runs). The last two wait for the client as
//! pending requests, like approvals.

use keel_proto::v1 as pb;
use keel_workflow_api::{Answer, RequestKind};
use pb::event::Msg;
use serde::Deserialize;
use serde_json::json;
use temporalio_sdk::WorkflowContext;

use super::approvals;
use super::call::Call;
use super::{ABORTED, AgentWorkflow, emit, inline_output};
use crate::activities::AppendItem;

fn parse_error(call: &Call, e: &serde_json::Error) -> AppendItem {
    let text = format!("failed to parse function arguments: {e}");
    inline_output(&call.call_id, &text, call.custom)
}

/// `update_plan` (Codex: `codex-rs/core/src/tools/handlers/plan.rs`): a plan event; the model gets "Plan updated".
pub(super) fn update_plan(
    ctx: &mut WorkflowContext<AgentWorkflow>,
    turn_id: &str,
    call: &Call,
) -> AppendItem {
    #[derive(Deserialize)]
    struct Step {
        step: String,
        status: String,
    }
    #[derive(Deserialize)]
    struct Args {
        #[serde(default)]
        explanation: Option<String>,
        plan: Vec<Step>,
    }
    let args: Args = match serde_json::from_str(&call.arguments) {
        Ok(a) => a,
        Err(e) => return parse_error(call, &e),
    };
    if let Some(bad) = args
        .plan
        .iter()
        .find(|s| !["pending", "in_progress", "completed"].contains(&s.status.as_str()))
    {
        let text = format!(
            "failed to parse function arguments: unknown status {:?} (expected pending, in_progress or completed)",
            bad.status
        );
        return inline_output(&call.call_id, &text, call.custom);
    }
    if args
        .plan
        .iter()
        .filter(|s| s.status == "in_progress")
        .count()
        > 1
    {
        let text = "failed to parse function arguments: at most one step can be in_progress";
        return inline_output(&call.call_id, text, call.custom);
    }
    emit(
        ctx,
        turn_id,
        Msg::PlanUpdate(pb::PlanUpdate {
            explanation: args.explanation.unwrap_or_default(),
            plan: args
                .plan
                .into_iter()
                .map(|p| pb::PlanItem {
                    step: p.step,
                    status: p.status,
                })
                .collect(),
        }),
    );
    inline_output(&call.call_id, "Plan updated", call.custom)
}

/// `request_user_input` (Codex: `codex-rs/core/src/tools/handlers/request_user_input.rs`): the questions go to the client; the answers
/// are the output.
pub(super) async fn request_user_input(
    ctx: &mut WorkflowContext<AgentWorkflow>,
    turn_id: &str,
    call: &Call,
) -> AppendItem {
    #[derive(Deserialize)]
    struct Choice {
        label: String,
        description: String,
    }
    #[derive(Deserialize)]
    struct Question {
        id: String,
        header: String,
        question: String,
        options: Vec<Choice>,
    }
    #[derive(Deserialize)]
    struct Args {
        questions: Vec<Question>,
    }
    let args: Args = match serde_json::from_str(&call.arguments) {
        Ok(a) => a,
        Err(e) => return parse_error(call, &e),
    };
    if args.questions.is_empty() || args.questions.len() > 3 {
        let text = "failed to parse function arguments: questions must hold 1 to 3 questions";
        return inline_output(&call.call_id, text, call.custom);
    }
    let event = Msg::RequestUserInput(pb::RequestUserInput {
        call_id: call.call_id.clone(),
        questions: args
            .questions
            .into_iter()
            .map(|q| pb::UserInputQuestion {
                id: q.id,
                header: q.header,
                question: q.question,
                options: q
                    .options
                    .into_iter()
                    .map(|o| pb::UserInputOption {
                        label: o.label,
                        description: o.description,
                    })
                    .collect(),
                is_other: true,
            })
            .collect(),
    });
    let kind = RequestKind::UserInput;
    match approvals::ask(ctx, turn_id, &call.call_id, kind, event).await {
        Some(Answer::UserInput(answers)) => {
            let answers: serde_json::Map<String, serde_json::Value> = answers
                .into_iter()
                .map(|(id, a)| (id, json!({ "answers": a })))
                .collect();
            let text = json!({ "answers": answers }).to_string();
            inline_output(&call.call_id, &text, call.custom)
        }
        _ => inline_output(
            &call.call_id,
            "request_user_input was cancelled before receiving a response",
            call.custom,
        ),
    }
}

/// A client tool (Codex: `codex-rs/core/src/tools/handlers/dynamic.rs`): the call goes to the client; its stored result
/// is the output.
pub(super) async fn dynamic_tool(
    ctx: &mut WorkflowContext<AgentWorkflow>,
    turn_id: &str,
    call: &Call,
    namespace: &str,
    tool: &str,
) -> AppendItem {
    let event = Msg::DynamicToolCallRequest(pb::DynamicToolCallRequest {
        call_id: call.call_id.clone(),
        namespace: namespace.to_string(),
        tool: tool.to_string(),
        arguments: call.arguments.clone(),
    });
    let kind = RequestKind::DynamicTool;
    match approvals::ask(ctx, turn_id, &call.call_id, kind, event).await {
        Some(Answer::DynamicTool {
            output_digest,
            success,
        }) => {
            emit(
                ctx,
                turn_id,
                Msg::DynamicToolCallResponse(pb::DynamicToolCallResponse {
                    call_id: call.call_id.clone(),
                    success,
                }),
            );
            AppendItem::Digest(output_digest)
        }
        _ => inline_output(&call.call_id, ABORTED, call.custom),
    }
}
