//! Requests that wait for a person or a client: approvals, questions to the
//! user and dynamic tool calls. A request is pending until exactly one
//! answer is accepted (update `respond`, validated first so a stale or
//! unfitting answer is rejected without touching history) or its turn is
//! interrupted. Waiting is a workflow condition: no activity, no timer, no
//! history while nobody answers.

use keel_policy::{ApprovalKey, ApprovalSubject, ReviewDecision, resolve_review};
use keel_proto::v1 as pb;
use keel_workflow_api::{Answer, PendingRequest, RequestKind, Response};
use pb::event::Msg;
use temporalio_sdk::WorkflowContext;

use super::AgentWorkflow;

/// Patch marker: sessions before it kept the memo's status `running` while
/// a request waited; from it on the status reads `waiting` meanwhile.
const PATCH_MEMO_WAITING: &str = "memo-waiting-v1";

/// Ended requests remembered for precise rejections of late answers.
const REMEMBERED_ENDED_REQUESTS: usize = 256;

/// Why an answer is rejected; the message names the request and the cause.
#[derive(Debug, thiserror::Error)]
pub(super) enum RejectedAnswer {
    #[error("request {id:?} is not pending: {why}")]
    NotPending { id: String, why: String },
    #[error("request {id:?} already has an answer")]
    AlreadyAnswered { id: String },
    #[error("request {id:?} is {kind}; {detail}")]
    DoesNotFit {
        id: String,
        kind: &'static str,
        detail: &'static str,
    },
}

/// The update validator: the request must be pending, unanswered, and the
/// answer must fit its kind.
pub(super) fn validate(s: &AgentWorkflow, r: &Response) -> Result<(), RejectedAnswer> {
    let id = r.request_id.clone();
    let Some(request) = s.requests.iter().find(|q| q.request_id == r.request_id) else {
        let why = s
            .durable
            .ended_requests
            .iter()
            .find(|(ended, _)| *ended == r.request_id)
            .map(|(_, why)| why.clone())
            .unwrap_or_else(|| "no such request in this session".to_string());
        return Err(RejectedAnswer::NotPending { id, why });
    };
    if s.answers.contains_key(&r.request_id) {
        return Err(RejectedAnswer::AlreadyAnswered { id });
    }
    let kind = request.kind.describe();
    if !r.answer.fits(request.kind) {
        return Err(RejectedAnswer::DoesNotFit {
            id,
            kind,
            detail: "answer it with the matching kind of response",
        });
    }
    if request.kind == RequestKind::PatchApproval
        && matches!(
            r.answer,
            Answer::Review(ReviewDecision::ApprovedExecpolicyAmendment { .. })
        )
    {
        return Err(RejectedAnswer::DoesNotFit {
            id,
            kind,
            detail: "an exec-policy amendment applies to commands only",
        });
    }
    Ok(())
}

pub(super) fn pb_decision(d: &ReviewDecision) -> pb::ReviewDecisionKind {
    match d {
        ReviewDecision::Approved => pb::ReviewDecisionKind::Approved,
        ReviewDecision::ApprovedForSession => pb::ReviewDecisionKind::ApprovedForSession,
        ReviewDecision::ApprovedExecpolicyAmendment { .. } => {
            pb::ReviewDecisionKind::ApprovedExecpolicyAmendment
        }
        ReviewDecision::Abort => pb::ReviewDecisionKind::Abort,
        ReviewDecision::NetworkPolicyAmendment { .. }
        | ReviewDecision::Denied
        | ReviewDecision::TimedOut => pb::ReviewDecisionKind::Denied,
    }
}

/// Records the request, emits its event and waits for the answer. `None`:
/// the turn was interrupted first (the request ends unanswered). A
/// sub-agent asks its session's owner the same way: the request is in its
/// own state and log, and session-api routes the answer to it.
pub(super) async fn ask(
    ctx: &mut WorkflowContext<AgentWorkflow>,
    turn_id: &str,
    request_id: &str,
    kind: RequestKind,
    event: Msg,
) -> Option<Answer> {
    let now = ctx.workflow_time();
    let asked = now;
    ctx.state_mut(|s| {
        s.requests.push(PendingRequest {
            request_id: request_id.to_string(),
            turn_id: turn_id.to_string(),
            kind,
            asked_ms: crate::events::unix_ms(now),
        });
        s.emit(now, turn_id, event);
    });
    // ListSessions shows sessions waiting for someone.
    let mark_waiting = ctx.patched(PATCH_MEMO_WAITING);
    if mark_waiting {
        super::upsert_status(ctx, keel_workflow_api::MEMO_STATUS_WAITING);
    }
    let id = request_id.to_string();
    let waited = ctx
        .wait_condition(move |s: &AgentWorkflow| {
            s.answers.contains_key(&id) || s.turn_interrupted()
        })
        .await;
    let now = ctx.workflow_time();
    if mark_waiting && ctx.state(|s| s.requests.len() == 1) {
        super::upsert_memo(ctx, keel_workflow_api::RunStatus::Running);
    }
    let (answer, decision) = ctx.state_mut(|s| {
        s.requests.retain(|q| q.request_id != request_id);
        let response = s.answers.remove(request_id);
        let response = response.filter(|_| waited.is_ok() && !s.turn_interrupted());
        let answered_by = response
            .as_ref()
            .map(|r| r.answered_by.clone())
            .unwrap_or_default();
        let answer = response.map(|r| r.answer);
        let decision = match (&answer, kind) {
            (Some(Answer::Review(d)), _) => pb_decision(d),
            (None, RequestKind::ExecApproval | RequestKind::PatchApproval) => {
                pb::ReviewDecisionKind::Abort
            }
            _ => pb::ReviewDecisionKind::Unspecified,
        };
        let why = match &answer {
            Some(Answer::Review(d)) => format!(
                "it was already answered ({})",
                pb_decision(d)
                    .as_str_name()
                    .trim_start_matches("REVIEW_DECISION_KIND_")
                    .to_lowercase()
            ),
            Some(_) => "it was already answered".to_string(),
            None => "its turn was interrupted before it was answered".to_string(),
        };
        s.durable
            .ended_requests
            .push_back((request_id.to_string(), why));
        if s.durable.ended_requests.len() > REMEMBERED_ENDED_REQUESTS {
            s.durable.ended_requests.pop_front();
        }
        s.emit(
            now,
            turn_id,
            Msg::RequestResolved(pb::RequestResolved {
                call_id: request_id.to_string(),
                kind: pb::PendingRequestKind::from(kind) as i32,
                decision: decision as i32,
                answered_by,
            }),
        );
        (answer, decision)
    });
    super::trace::record(
        "wait for answer",
        asked,
        now,
        vec![
            opentelemetry::KeyValue::new("keel.turn_id", turn_id.to_string()),
            opentelemetry::KeyValue::new("keel.call_id", request_id.to_string()),
            opentelemetry::KeyValue::new(
                "keel.request.kind",
                pb::PendingRequestKind::from(kind).as_str_name(),
            ),
            opentelemetry::KeyValue::new(
                "keel.request.decision",
                decision
                    .as_str_name()
                    .trim_start_matches("REVIEW_DECISION_KIND_")
                    .to_lowercase(),
            ),
            opentelemetry::KeyValue::new("keel.request.answered", answer.is_some()),
        ],
    );
    answer
}

/// The outcome of an approval request.
pub(super) enum Approval {
    /// Go ahead.
    Run,
    /// Do not run; the text is the call's output.
    Rejected(String),
}

/// Asks for an approval and applies the decision's durable effects:
/// remembering keys for the session, adding an allowed prefix, ending the
/// turn on `abort`.
pub(super) async fn approve(
    ctx: &mut WorkflowContext<AgentWorkflow>,
    turn_id: &str,
    call_id: &str,
    subject: ApprovalSubject,
    keys: Vec<ApprovalKey>,
    event: Msg,
) -> Approval {
    let kind = match subject {
        ApprovalSubject::Command => RequestKind::ExecApproval,
        ApprovalSubject::Patch => RequestKind::PatchApproval,
    };
    let Some(Answer::Review(decision)) = ask(ctx, turn_id, call_id, kind, event).await else {
        return Approval::Rejected(super::ABORTED.to_string());
    };
    let outcome = resolve_review(subject, &decision);
    ctx.state_mut(|s| {
        if outcome.remember_for_session {
            s.durable.approved_for_session.extend(keys);
        }
        if let Some(prefix) = outcome.allow_prefix.clone() {
            s.durable.allowed_prefixes.push(prefix);
        }
        if outcome.abort_turn
            && let Some(token) = &s.turn_cancel
        {
            token.cancel_with_reason("aborted by the user's decision");
        }
    });
    if outcome.run {
        Approval::Run
    } else {
        Approval::Rejected(
            outcome
                .rejection
                .unwrap_or_else(|| "exec command rejected by user".to_string()),
        )
    }
}
