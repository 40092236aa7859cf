//! A command call's decision and runs: Codex's approval decision (Codex:
//! `codex-rs/core/src/tools/orchestrator.rs`) on exactly the invocation
//! that will run, maybe a question to a person, the run sandboxed or not,
//! and after a sandbox denial — or a host that cannot sandbox at all —
//! maybe another question and a re-run without the sandbox.

use keel_policy::{
    ApprovalSubject, CommandDecision, CommandDecisionInput, DenialDecision, Rules,
    SandboxDenialInput, decide_after_sandbox_denial, decide_command,
    decide_when_sandbox_unavailable,
};
use keel_proto::v1 as pb;
use keel_tool_model::{Escalation, Invocation};
use keel_workflow_api::SandboxSettings;
use pb::event::Msg;
use temporalio_sdk::WorkflowContext;

use super::approvals::{self, Approval};
use super::call::{Call, Run, Shown, Turn, cwd, declined, execute};
use super::{AgentWorkflow, inline_output};
use crate::activities::AppendItem;

/// A command as the decision sees it.
pub(super) struct Subject {
    /// What the rules judge and a person is shown: the invocation's argv,
    /// preceded by `env NAME=VALUE…` when it sets variables.
    pub argv: Vec<String>,
    /// Where it runs (part of the approved-for-session key).
    pub cwd: String,
    pub escalation: Escalation,
    /// What the tool-runner runs; `None` only for turns recorded before the
    /// tool model, which the tool-runner read itself.
    pub invocation: Option<Invocation>,
}

/// A command: decide, maybe ask, run sandboxed or not, and after a sandbox
/// denial maybe ask again and re-run without the sandbox.
pub(super) async fn run_command(
    ctx: &mut WorkflowContext<AgentWorkflow>,
    turn: Turn<'_>,
    call: &Call,
    subject: Subject,
) -> AppendItem {
    let (settings, rules, approved) = ctx.state(|s| {
        (
            s.effective(),
            s.rules(),
            s.durable.approved_for_session.clone(),
        )
    });
    let Subject {
        argv,
        cwd,
        escalation,
        invocation,
    } = subject;
    let shown = Shown {
        argv: argv.clone(),
        cwd: cwd.clone(),
    };
    let key =
        keel_policy::decision::approval_key(&argv, &cwd, escalation.sandbox_permissions, None);
    let decision = decide_command(&CommandDecisionInput {
        argv: &argv,
        cwd: &cwd,
        approval_policy: settings.approval_policy,
        sandbox_mode: settings.sandbox.mode,
        sandbox_permissions: escalation.sandbox_permissions,
        additional_permissions: None,
        justification: escalation.justification.as_deref(),
        prefix_rule: escalation.prefix_rule.as_deref(),
        rules: &rules,
        approved_for_session: &approved,
    });
    let (sandboxed, already_approved, amendment) = match decision {
        CommandDecision::Reject { text } => return declined(ctx, turn, call, &shown, &text),
        CommandDecision::Forbid { reason } => {
            return declined(ctx, turn, call, &shown, &reason);
        }
        CommandDecision::Allow {
            sandboxed,
            already_approved,
            proposed_amendment,
        } => (sandboxed, already_approved, proposed_amendment),
        CommandDecision::Prompt {
            reason,
            proposed_amendment,
            approval_key,
            sandboxed,
        } => {
            let event = exec_request(call, &shown, reason, proposed_amendment.clone());
            let subject = ApprovalSubject::Command;
            match approvals::approve(
                ctx,
                turn.id,
                &call.call_id,
                subject,
                vec![approval_key],
                event,
            )
            .await
            {
                Approval::Run => (sandboxed, true, proposed_amendment),
                Approval::Rejected(text) => return declined(ctx, turn, call, &shown, &text),
            }
        }
    };
    let sandbox = if sandboxed {
        settings.sandbox.clone()
    } else {
        SandboxSettings::full_access()
    };
    let first = execute(
        ctx,
        turn,
        call,
        Run {
            shown: Some(shown.clone()),
            sandbox: Some(sandbox),
            attempt: 0,
            invocation: invocation.as_ref(),
        },
    )
    .await;
    let (denied, unavailable) = match &first.output {
        Some(o) if sandboxed => (o.sandbox_denied, o.sandbox_unavailable),
        _ => (false, false),
    };
    if !(denied || unavailable) || turn.cancel.is_cancelled() {
        return first.item;
    }
    let next = if unavailable {
        // Nothing ran; running it at all now means running it unconfined.
        let why = first
            .output
            .as_ref()
            .map(|o| o.output_preview.clone())
            .unwrap_or_default();
        decide_when_sandbox_unavailable(settings.approval_policy, &why)
    } else {
        let approved = ctx.state(|s| s.durable.approved_for_session.clone());
        decide_after_sandbox_denial(&SandboxDenialInput {
            approval_policy: settings.approval_policy,
            already_approved,
            approval_key: &key,
            approved_for_session: &approved,
            proposed_amendment: amendment.as_deref(),
        })
    };
    let rerun = Run {
        shown: Some(shown.clone()),
        sandbox: Some(SandboxSettings::full_access()),
        attempt: 1,
        invocation: invocation.as_ref(),
    };
    match next {
        DenialDecision::ReturnToModel => first.item,
        DenialDecision::RerunUnsandboxed => execute(ctx, turn, call, rerun).await.item,
        DenialDecision::Prompt {
            reason,
            proposed_amendment,
        } => {
            let event = exec_request(call, &shown, Some(reason), proposed_amendment);
            let subject = ApprovalSubject::Command;
            match approvals::approve(ctx, turn.id, &call.call_id, subject, vec![key], event).await {
                Approval::Run => execute(ctx, turn, call, rerun).await.item,
                Approval::Rejected(text) => inline_output(&call.call_id, &text, call.custom),
            }
        }
    }
}

/// The output of a command call whose arguments are too big to keep in
/// history, and so to show a person or check.
pub(super) const OVERSIZED_COMMAND: &str = "command rejected: its arguments exceed 16 KiB, too long to show for approval or to check; write large inputs to a file with apply_patch and run a shorter command";

/// A command whose arguments exceed what history keeps (16 KiB): refused,
/// under every policy — neither the rules nor a person would see what runs.
pub(super) fn refuse_oversized(
    ctx: &mut WorkflowContext<AgentWorkflow>,
    turn: Turn<'_>,
    call: &Call,
) -> AppendItem {
    let shown = Shown {
        argv: vec![format!("{} …", call.arguments)],
        cwd: ctx.state(cwd),
    };
    declined(ctx, turn, call, &shown, OVERSIZED_COMMAND)
}

/// A command whose arguments are too big to keep in history, in turns
/// recorded before the tool model (`legacy`): the rules
/// cannot judge what they cannot see, so a person decides (under `never`
/// it is refused). Approved, the tool-runner reads the whole stored call —
/// the approval names it by digest — and runs it in the session's sandbox.
pub(super) async fn oversized_command(
    ctx: &mut WorkflowContext<AgentWorkflow>,
    turn: Turn<'_>,
    call: &Call,
) -> AppendItem {
    let (settings, cwd) = ctx.state(|s| (s.effective(), cwd(s)));
    let shown = Shown {
        argv: vec![format!("{} …", call.arguments)],
        cwd,
    };
    if settings.approval_policy == keel_policy::ApprovalPolicy::Never {
        let text = "command rejected: its arguments exceed 16 KiB, too long to check under approval policy never";
        return declined(ctx, turn, call, &shown, text);
    }
    let reason = Some(
        "the command's arguments exceed 16 KiB; Keel cannot check it automatically".to_string(),
    );
    let event = exec_request(call, &shown, reason, None);
    let subject = ApprovalSubject::Command;
    match approvals::approve(ctx, turn.id, &call.call_id, subject, Vec::new(), event).await {
        Approval::Run => {
            let run = Run {
                sandbox: Some(settings.sandbox),
                ..Run::default()
            };
            execute(ctx, turn, call, run).await.item
        }
        Approval::Rejected(text) => declined(ctx, turn, call, &shown, &text),
    }
}

fn exec_request(
    call: &Call,
    shown: &Shown,
    reason: Option<String>,
    amendment: Option<Vec<String>>,
) -> Msg {
    use pb::ReviewDecisionKind as K;
    let mut available = vec![K::Approved, K::ApprovedForSession];
    if amendment.is_some() {
        available.push(K::ApprovedExecpolicyAmendment);
    }
    available.extend([K::Denied, K::Abort]);
    Msg::ExecApprovalRequest(pb::ExecApprovalRequest {
        call_id: call.call_id.clone(),
        command: shown.argv.clone(),
        cwd: shown.cwd.clone(),
        reason: reason.unwrap_or_default(),
        proposed_execpolicy_amendment: amendment.unwrap_or_default(),
        parsed_cmd: keel_policy::parse_command(&shown.argv)
            .into_iter()
            .map(parsed_command)
            .collect(),
        available_decisions: available.into_iter().map(|k| k as i32).collect(),
    })
}

fn parsed_command(p: keel_policy::ParsedCommand) -> pb::ParsedCommand {
    use keel_policy::ParsedCommand as P;
    let base = |kind: &str, cmd: String| pb::ParsedCommand {
        r#type: kind.to_string(),
        cmd,
        ..Default::default()
    };
    match p {
        P::Read { cmd, name, path } => pb::ParsedCommand {
            name,
            path,
            ..base("read", cmd)
        },
        P::ListFiles { cmd, path } => pb::ParsedCommand {
            path: path.unwrap_or_default(),
            ..base("list_files", cmd)
        },
        P::Search { cmd, query, path } => pb::ParsedCommand {
            query: query.unwrap_or_default(),
            path: path.unwrap_or_default(),
            ..base("search", cmd)
        },
        P::Unknown { cmd } => base("unknown", cmd),
    }
}

impl AgentWorkflow {
    /// The exec-policy rules in force: the session's rules files (checked
    /// by session-api when the session was created), then the amendments
    /// approved in it.
    fn rules(&self) -> Rules {
        let mut rules = Rules::default();
        for file in &self.input.rules {
            // session-api refused files that do not parse.
            let _ = rules.add_source(&file.name, &file.text);
        }
        for prefix in &self.durable.allowed_prefixes {
            // An empty prefix was never accepted; nothing to add.
            let _ = rules.add_allow_prefix(prefix);
        }
        rules
    }
}
