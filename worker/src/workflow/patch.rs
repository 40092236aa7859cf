//! apply_patch under approvals: the tool-runner reviews the patch (per-file
//! changes with diffs, the writable roots), Codex's patch safety (Codex:
//! `codex-rs/core/src/safety.rs`) decides, a person may be asked with the
//! changes, then the patch is applied — sandboxed, or anywhere once
//! approved. Patches that arrive through a shell tool (`apply_patch <<'EOF'`)
//! take the same path.

use keel_policy::{ApprovalSubject, PatchChange, PatchDecision, PatchDecisionInput, decide_patch};
use keel_proto::v1 as pb;
use keel_tool_model::{Invocation, PatchInvocation};
use keel_workflow_api::SandboxSettings;
use pb::event::Msg;
use temporalio_sdk::{ActivityExecutionError, WorkflowContext};

use super::approvals::{self, Approval};
use super::call::{Call, Run, Turn, execute};
use super::{ABORTED, AgentWorkflow, emit, failure_message, inline_output, lease, tool_options};
use crate::activities::{
    AppendItem, KeelActivities, PatchChangeKind, PatchFileChange, PatchReviewInput,
};

/// Where a patch comes from.
pub(super) struct PatchSource {
    /// Directory the patch's relative paths are resolved against.
    cwd: String,
    /// As ReviewPatch takes it: the raw patch when `custom`, else the JSON
    /// arguments of the apply_patch function.
    arguments: String,
    custom: bool,
    /// The stored call, for a patch too big to pass as `arguments`.
    call_item_digest: Option<String>,
    /// For a patch from a shell tool: what the tool-runner runs.
    invocation: Option<Invocation>,
}

impl PatchSource {
    /// An `apply_patch` tool call in the session directory `cwd`.
    pub(super) fn tool(call: &Call, cwd: String) -> Self {
        let (arguments, call_item_digest) = call.arguments_for_runner();
        Self {
            cwd,
            arguments,
            custom: call.custom,
            call_item_digest,
            invocation: None,
        }
    }

    /// A patch a shell-tool call carried.
    pub(super) fn shell(patch: PatchInvocation) -> Self {
        Self {
            cwd: patch.cwd.clone(),
            arguments: patch.patch.clone(),
            custom: true,
            call_item_digest: None,
            invocation: Some(Invocation::Patch(patch)),
        }
    }
}

/// A patch: review it on the tool-runner, decide, maybe ask with the
/// per-file changes, then apply.
pub(super) async fn patch(
    ctx: &mut WorkflowContext<AgentWorkflow>,
    turn: Turn<'_>,
    call: &Call,
    source: PatchSource,
) -> AppendItem {
    let (settings, approved, session_id) = ctx.state(|s| {
        (
            s.effective(),
            s.durable.approved_for_session.clone(),
            s.input.session_id.clone(),
        )
    });
    let mut input = PatchReviewInput {
        session_id,
        cwd: source.cwd,
        arguments: source.arguments,
        custom: source.custom,
        sandbox: settings.sandbox.clone(),
        call_item_digest: source.call_item_digest,
        runner: None,
    };
    let invocation = source.invocation.as_ref();
    let mut moved = false;
    let reviewed = loop {
        input.runner = match lease::runner(ctx, turn.cancel).await {
            Ok(runner) => runner,
            Err(e) => break Err(e),
        };
        let reviewed = ctx
            .execute_activity(
                KeelActivities::review_patch,
                input.clone(),
                tool_options(turn.cancel),
            )
            .await;
        // A review changes nothing: it runs again on the runner the
        // workspace moves to.
        match (&reviewed, &input.runner) {
            (Err(e), Some(from)) if !moved && lease::moved(e).is_some() => {
                moved = true;
                if let Err(e) = lease::move_off(ctx, turn.cancel, from, turn.id).await {
                    break Err(e);
                }
            }
            _ => break reviewed,
        }
    };
    let review = match reviewed {
        Ok(review) => review,
        Err(ActivityExecutionError::Cancelled(_)) => {
            return inline_output(&call.call_id, ABORTED, call.custom);
        }
        Err(e) => {
            let text = format!("execution error: {}", failure_message(&e).0);
            return inline_output(&call.call_id, &text, call.custom);
        }
    };
    if !review.error.is_empty() {
        // The tool-runner gives the model the same error text, and writes
        // nothing.
        let run = Run {
            sandbox: Some(settings.sandbox),
            invocation,
            ..Run::default()
        };
        return execute(ctx, turn, call, run).await.item;
    }
    let changes: Vec<PatchChange> = review.changes.iter().map(policy_change).collect();
    let decision = decide_patch(&PatchDecisionInput {
        approval_policy: settings.approval_policy,
        sandbox_mode: settings.sandbox.mode,
        cwd: &review.cwd,
        writable_roots: &review.writable_roots,
        changes: &changes,
        platform_sandbox_available: review.platform_sandbox_available,
        approved_for_session: &approved,
    });
    let shown: Vec<pb::FileChange> = review.changes.iter().map(file_change).collect();
    let (sandbox, auto_approved) = match decision {
        PatchDecision::Reject { text, .. } => {
            return inline_output(&call.call_id, &text, call.custom);
        }
        PatchDecision::Apply { sandboxed, .. } => {
            let sandbox = if sandboxed {
                settings.sandbox.clone()
            } else {
                SandboxSettings::full_access()
            };
            (sandbox, true)
        }
        PatchDecision::Ask { approval_keys } => {
            let event = Msg::ApplyPatchApprovalRequest(pb::ApplyPatchApprovalRequest {
                call_id: call.call_id.clone(),
                changes: shown.clone(),
                reason: String::new(),
            });
            let subject = ApprovalSubject::Patch;
            match approvals::approve(ctx, turn.id, &call.call_id, subject, approval_keys, event)
                .await
            {
                // Once approved, the patch applies even outside the
                // writable roots (Codex: `codex-rs/core/src/safety.rs`).
                Approval::Run => (SandboxSettings::full_access(), false),
                Approval::Rejected(text) => {
                    return inline_output(&call.call_id, &text, call.custom);
                }
            }
        }
    };
    emit(
        ctx,
        turn.id,
        Msg::PatchApplyBegin(pb::PatchApplyBegin {
            call_id: call.call_id.clone(),
            auto_approved,
            changes: shown,
        }),
    );
    let run = Run {
        sandbox: Some(sandbox),
        invocation,
        ..Run::default()
    };
    let executed = execute(ctx, turn, call, run).await;
    let (output, success) = match &executed.output {
        Some(o) => (o.output_preview.clone(), o.success),
        None => (ABORTED.to_string(), false),
    };
    emit(
        ctx,
        turn.id,
        Msg::PatchApplyEnd(pb::PatchApplyEnd {
            call_id: call.call_id.clone(),
            output,
            success,
        }),
    );
    executed.item
}

fn policy_change(c: &PatchFileChange) -> PatchChange {
    let path = c.path.clone();
    match c.kind {
        PatchChangeKind::Add => PatchChange::Add { path },
        PatchChangeKind::Delete => PatchChange::Delete { path },
        PatchChangeKind::Update => PatchChange::Update {
            path,
            move_path: c.move_path.clone(),
        },
    }
}

fn file_change(c: &PatchFileChange) -> pb::FileChange {
    use pb::file_change::Kind;
    let (content, truncated) = (c.text.clone(), c.truncated);
    pb::FileChange {
        path: c.path.clone(),
        kind: Some(match c.kind {
            PatchChangeKind::Add => Kind::Add(pb::AddFile { content, truncated }),
            PatchChangeKind::Delete => Kind::Delete(pb::DeleteFile { content, truncated }),
            PatchChangeKind::Update => Kind::Update(pb::UpdateFile {
                unified_diff: content,
                move_path: c.move_path.clone().unwrap_or_default(),
                truncated,
            }),
        }),
    }
}
