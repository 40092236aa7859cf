//! Compact: the model-proxy summarises the conversation into a new, short
//! one (the recent user messages plus the summary); the session continues
//! from it and rolls its history over at once.

use keel_proto::v1 as pb;
use keel_workflow_api::RunStatus;
use pb::event::Msg;
use temporalio_sdk::{ActivityExecutionError, WorkflowCancellationToken, WorkflowContext};

use super::{AgentWorkflow, failure_message, model_options, upsert_memo};
use crate::activities::{KeelActivities, OutputItem};
use crate::events::unix_ms;

/// Serves a Compact request. Interruptible like a turn.
pub(super) async fn run(ctx: &mut WorkflowContext<AgentWorkflow>) {
    let cancel = WorkflowCancellationToken::new();
    let now = ctx.workflow_time();
    ctx.state_mut(|s| {
        s.durable.compact_requested = false;
        s.status = RunStatus::Running;
        s.turn_cancel = Some(cancel.clone());
        s.durable.last_activity_ms = unix_ms(now);
    });
    upsert_memo(ctx, RunStatus::Running);
    let input = ctx.state(|s| s.model_call_input("", true));
    let result = ctx
        .execute_activity(KeelActivities::model_call, input, model_options(&cancel))
        .await;
    let now = ctx.workflow_time();
    ctx.state_mut(|s| {
        let msg = match result {
            Ok(out) => {
                s.durable.head = Some(out.head.clone());
                s.durable.pending.clear();
                s.durable.usage.add(&out.usage);
                // The next run starts from the short conversation.
                s.rollover_requested = true;
                s.turns_this_run += 1;
                let summary = out
                    .items
                    .iter()
                    .find_map(|i| match i {
                        OutputItem::Message { role, text, .. } if role == "assistant" => {
                            Some(text.clone())
                        }
                        _ => None,
                    })
                    .unwrap_or_default();
                Msg::ContextCompacted(pb::ContextCompacted { summary })
            }
            Err(ActivityExecutionError::Cancelled(_)) => Msg::Warning(pb::Warning {
                message: "compaction interrupted; the conversation is unchanged".into(),
            }),
            Err(e) => {
                let (message, class) = failure_message(&e);
                Msg::Error(pb::ErrorEvent {
                    message: format!("cannot compact the conversation: {message}"),
                    codex_error_info: class,
                })
            }
        };
        s.emit(now, "", msg);
        s.status = RunStatus::Idle;
        s.turn_cancel = None;
        s.durable.last_activity_ms = unix_ms(now);
    });
    upsert_memo(ctx, RunStatus::Idle);
}
