//! One model tool call, start to output. The call is read by the tool model
//! (crate keel-tool-model), the same code the tool-runner reads it with:
//! a tool the session did not offer runs nothing; a command-family call
//! becomes the invocation it runs, and the approval decision (Codex:
//! `codex-rs/core/src/tools/orchestrator.rs`) judges exactly that — argv,
//! working directory, environment — before the tool-runner is told to run
//! exactly that. Then the sandbox to run under, the run, and the
//! on-failure retry after a sandbox denial. Patches are in `patch`, the
//! tools the workflow answers itself in `own_tools`, and the dispatch of
//! turns recorded before the tool model in `legacy`. Whatever happens, the
//! call gets exactly one output.

use keel_policy::{
    ApprovalSubject, CommandDecision, CommandDecisionInput, DenialDecision, Rules,
    SandboxDenialInput, decide_after_sandbox_denial, decide_command,
    decide_when_sandbox_unavailable,
};
use keel_proto::v1 as pb;
use keel_tool_model::{Escalation, Family, Invocation, Offered, family, parse_call};
use keel_workflow_api::{DynamicToolDecl, SandboxSettings};
use pb::event::Msg;
use temporalio_sdk::{ActivityExecutionError, WorkflowCancellationToken, WorkflowContext};

use super::approvals::{self, Approval};
use super::patch::PatchSource;
use super::{ABORTED, AgentWorkflow, failure_message, inline_output, tool_options};
use super::{legacy, own_tools, patch};
use crate::activities::{AppendItem, KeelActivities, ToolCallInput, ToolCallOutput};

/// A tool call as the model made it.
pub(super) struct Call {
    pub call_id: String,
    pub name: String,
    /// Cut at 16 KiB when `truncated`.
    pub arguments: String,
    pub custom: bool,
    /// The stored call item: how a call too big for history reaches the
    /// tool-runner.
    pub item_digest: String,
    pub truncated: bool,
}

impl Call {
    /// What the tool-runner needs to find the arguments.
    pub(super) fn arguments_for_runner(&self) -> (String, Option<String>) {
        if self.truncated {
            (String::new(), Some(self.item_digest.clone()))
        } else {
            (self.arguments.clone(), None)
        }
    }
}

/// The output of a workflow-handled call whose arguments were too big.
const ARGUMENTS_TOO_LARGE: &str = "failed to parse function arguments: the arguments exceed 16 KiB";

/// The user's shell for sessions whose setup did not report one.
const FALLBACK_USER_SHELL: &str = "/bin/bash";

/// Runs `call` and appends its output to the conversation.
pub(super) async fn run(
    ctx: &mut WorkflowContext<AgentWorkflow>,
    turn_id: &str,
    cancel: &WorkflowCancellationToken,
    call: Call,
) {
    let (approvals, tool_model, dynamic) = ctx.state(|s| {
        let dynamic = s
            .input
            .dynamic_tools
            .iter()
            .find(|t| t.model_name() == call.name)
            .cloned();
        (s.approvals, s.tool_model, dynamic)
    });
    let item = if !approvals {
        legacy::unapproved(ctx, turn_id, cancel, &call).await
    } else if !tool_model {
        legacy::dispatch(ctx, turn_id, cancel, &call, dynamic).await
    } else {
        dispatch(ctx, turn_id, cancel, &call, dynamic).await
    };
    ctx.state_mut(|s| s.durable.pending.push(item));
}

/// The call through the tool model.
async fn dispatch(
    ctx: &mut WorkflowContext<AgentWorkflow>,
    turn_id: &str,
    cancel: &WorkflowCancellationToken,
    call: &Call,
    dynamic: Option<DynamicToolDecl>,
) -> AppendItem {
    let offered = ctx.state(|s| {
        let specs = s.offered_tools();
        Offered::from_specs(specs.iter().map(|t| (t.name.as_str(), t.json.as_str())))
    });
    if let Err(text) = offered.check(&call.name, call.custom) {
        return inline_output(&call.call_id, &text, call.custom);
    }
    if let Some(decl) = dynamic {
        if call.truncated {
            return inline_output(&call.call_id, ARGUMENTS_TOO_LARGE, call.custom);
        }
        return own_tools::dynamic_tool(ctx, turn_id, call, &decl.namespace, &decl.name).await;
    }
    match family(&call.name) {
        Family::Workflow if call.truncated => {
            inline_output(&call.call_id, ARGUMENTS_TOO_LARGE, call.custom)
        }
        Family::Workflow if call.name == keel_tool_model::names::UPDATE_PLAN => {
            own_tools::update_plan(ctx, turn_id, call)
        }
        Family::Workflow => own_tools::request_user_input(ctx, turn_id, call).await,
        Family::ApplyPatch => {
            let source = ctx.state(|s| PatchSource::tool(call, cwd(s)));
            patch::patch(ctx, turn_id, cancel, call, source).await
        }
        Family::Command | Family::WriteStdin if call.truncated => {
            oversized_command(ctx, turn_id, cancel, call).await
        }
        Family::Command | Family::WriteStdin => {
            let (cwd, user_shell) = ctx.state(|s| (cwd(s), user_shell(s)));
            match parse_call(&call.name, &call.arguments, &cwd, &user_shell) {
                None => inline_output(
                    &call.call_id,
                    &format!("unsupported call: {}", call.name),
                    call.custom,
                ),
                Some(Err(text)) => inline_output(&call.call_id, &text, call.custom),
                Some(Ok(parsed)) => match parsed.invocation {
                    Invocation::Command(command) => {
                        let subject = Subject {
                            argv: command.judged_argv(),
                            cwd: command.cwd.clone(),
                            escalation: parsed.escalation,
                            invocation: Some(Invocation::Command(command)),
                        };
                        run_command(ctx, turn_id, cancel, call, subject).await
                    }
                    Invocation::Patch(shell_patch) => {
                        let source = PatchSource::shell(shell_patch);
                        patch::patch(ctx, turn_id, cancel, call, source).await
                    }
                    // Reaches only processes of this session, which the
                    // command decision started.
                    invocation @ Invocation::WriteStdin(_) => {
                        let sandbox = ctx.state(|s| s.effective().sandbox);
                        let run = Run {
                            sandbox: Some(sandbox),
                            invocation: Some(&invocation),
                            ..Run::default()
                        };
                        execute(ctx, turn_id, cancel, call, run).await.item
                    }
                },
            }
        }
        // Read-only tools run in the session's sandbox.
        Family::File => {
            let sandbox = ctx.state(|s| s.effective().sandbox);
            let run = Run {
                sandbox: Some(sandbox),
                ..Run::default()
            };
            execute(ctx, turn_id, cancel, call, run).await.item
        }
        // Offered, but no tool Keel runs (e.g. a hosted tool).
        Family::Other => inline_output(
            &call.call_id,
            &format!("unsupported call: {}", call.name),
            call.custom,
        ),
    }
}

pub(super) fn cwd(s: &AgentWorkflow) -> String {
    match &s.durable.setup {
        Some(setup) if !setup.cwd.is_empty() => setup.cwd.clone(),
        _ => s.input.cwd.clone(),
    }
}

fn user_shell(s: &AgentWorkflow) -> String {
    match &s.durable.setup {
        Some(setup) if !setup.user_shell.is_empty() => setup.user_shell.clone(),
        _ => FALLBACK_USER_SHELL.to_string(),
    }
}

/// What one run on the tool-runner produced.
pub(super) struct Executed {
    pub item: AppendItem,
    pub output: Option<ToolCallOutput>,
}

/// How [`execute`] runs a call.
#[derive(Default)]
pub(super) struct Run<'a> {
    /// The command shown in exec events; no events without it.
    pub shown: Option<Shown>,
    /// `None`: the tool-runner's default sandbox.
    pub sandbox: Option<SandboxSettings>,
    /// 0, or 1 for the re-run after a sandbox denial.
    pub attempt: u32,
    /// What the tool-runner must run (command-family calls).
    pub invocation: Option<&'a Invocation>,
}

/// A command as clients are shown it.
#[derive(Clone)]
pub(super) struct Shown {
    pub argv: Vec<String>,
    pub cwd: String,
}

/// Runs the call on the tool-runner, with exec events when `run.shown` is
/// set.
pub(super) async fn execute(
    ctx: &mut WorkflowContext<AgentWorkflow>,
    turn_id: &str,
    cancel: &WorkflowCancellationToken,
    call: &Call,
    run: Run<'_>,
) -> Executed {
    let session_cwd = ctx.state(cwd);
    let now = ctx.workflow_time();
    if let Some(shown) = &run.shown {
        ctx.state_mut(|s| {
            s.emit(
                now,
                turn_id,
                Msg::ExecCommandBegin(pb::ExecCommandBegin {
                    call_id: call.call_id.clone(),
                    command: shown.argv.clone(),
                    cwd: shown.cwd.clone(),
                }),
            )
        });
    }
    let (arguments, call_item_digest) = call.arguments_for_runner();
    let user_shell = match run.invocation {
        Some(_) => ctx.state(user_shell),
        None => String::new(),
    };
    let input = ToolCallInput {
        session_id: ctx.state(|s| s.input.session_id.clone()),
        call_id: call.call_id.clone(),
        name: call.name.clone(),
        arguments,
        cwd: session_cwd,
        custom: call.custom,
        sandbox: run.sandbox,
        attempt: run.attempt,
        call_item_digest,
        invocation: run.invocation.cloned(),
        user_shell,
    };
    let result = ctx
        .execute_activity(KeelActivities::run_tool, input, tool_options(cancel))
        .await;
    let now = ctx.workflow_time();
    let (executed, end) = match result {
        Ok(out) => {
            let end = out.command.as_ref().map(|c| pb::ExecCommandEnd {
                call_id: call.call_id.clone(),
                command: c.command.clone(),
                cwd: c.cwd.clone(),
                exit_code: c.exit_code,
                duration_ms: c.duration_ms,
                aggregated_output: c.aggregated_output.clone(),
                formatted_output: out.output_preview.clone(),
                status: if out.success {
                    pb::ExecCommandStatus::Completed
                } else {
                    pb::ExecCommandStatus::Failed
                } as i32,
            });
            let executed = Executed {
                item: AppendItem::Digest(out.output_digest.clone()),
                output: Some(out),
            };
            (executed, end)
        }
        Err(e) => {
            let text = match &e {
                ActivityExecutionError::Cancelled(_) => ABORTED.to_string(),
                other => format!("execution error: {}", failure_message(other).0),
            };
            let end = run.shown.as_ref().map(|shown| pb::ExecCommandEnd {
                call_id: call.call_id.clone(),
                command: shown.argv.clone(),
                cwd: shown.cwd.clone(),
                exit_code: -1,
                duration_ms: 0,
                aggregated_output: String::new(),
                formatted_output: text.clone(),
                status: pb::ExecCommandStatus::Failed as i32,
            });
            let executed = Executed {
                item: inline_output(&call.call_id, &text, call.custom),
                output: None,
            };
            (executed, end)
        }
    };
    if let Some(end) = end {
        ctx.state_mut(|s| s.emit(now, turn_id, Msg::ExecCommandEnd(end)));
    }
    executed
}

/// A command the tool-runner would not run: begin and a `declined` end, so
/// clients see every call, and the reason as the output.
fn declined(
    ctx: &mut WorkflowContext<AgentWorkflow>,
    turn_id: &str,
    call: &Call,
    shown: &Shown,
    text: &str,
) -> AppendItem {
    let now = ctx.workflow_time();
    ctx.state_mut(|s| {
        s.emit(
            now,
            turn_id,
            Msg::ExecCommandBegin(pb::ExecCommandBegin {
                call_id: call.call_id.clone(),
                command: shown.argv.clone(),
                cwd: shown.cwd.clone(),
            }),
        );
        s.emit(
            now,
            turn_id,
            Msg::ExecCommandEnd(pb::ExecCommandEnd {
                call_id: call.call_id.clone(),
                command: shown.argv.clone(),
                cwd: shown.cwd.clone(),
                exit_code: -1,
                duration_ms: 0,
                aggregated_output: String::new(),
                formatted_output: text.to_string(),
                status: pb::ExecCommandStatus::Declined as i32,
            }),
        );
    });
    inline_output(&call.call_id, text, call.custom)
}

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
    turn_id: &str,
    cancel: &WorkflowCancellationToken,
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
        CommandDecision::Reject { text } => return declined(ctx, turn_id, call, &shown, &text),
        CommandDecision::Forbid { reason } => {
            return declined(ctx, turn_id, call, &shown, &reason);
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
                turn_id,
                &call.call_id,
                subject,
                vec![approval_key],
                event,
            )
            .await
            {
                Approval::Run => (sandboxed, true, proposed_amendment),
                Approval::Rejected(text) => return declined(ctx, turn_id, call, &shown, &text),
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
        turn_id,
        cancel,
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
    if !(denied || unavailable) || cancel.is_cancelled() {
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
        DenialDecision::RerunUnsandboxed => execute(ctx, turn_id, cancel, call, rerun).await.item,
        DenialDecision::Prompt {
            reason,
            proposed_amendment,
        } => {
            let event = exec_request(call, &shown, Some(reason), proposed_amendment);
            let subject = ApprovalSubject::Command;
            match approvals::approve(ctx, turn_id, &call.call_id, subject, vec![key], event).await {
                Approval::Run => execute(ctx, turn_id, cancel, call, rerun).await.item,
                Approval::Rejected(text) => inline_output(&call.call_id, &text, call.custom),
            }
        }
    }
}

/// A command whose arguments are too big to keep in history: the rules
/// cannot judge what they cannot see, so a person decides (under `never`
/// it is refused). Approved, the tool-runner reads the whole stored call —
/// the approval names it by digest — and runs it in the session's sandbox.
pub(super) async fn oversized_command(
    ctx: &mut WorkflowContext<AgentWorkflow>,
    turn_id: &str,
    cancel: &WorkflowCancellationToken,
    call: &Call,
) -> AppendItem {
    let (settings, cwd) = ctx.state(|s| (s.effective(), cwd(s)));
    let shown = Shown {
        argv: vec![format!("{} …", call.arguments)],
        cwd,
    };
    if settings.approval_policy == keel_policy::ApprovalPolicy::Never {
        let text = "command rejected: its arguments exceed 16 KiB, too long to check under approval policy never";
        return declined(ctx, turn_id, call, &shown, text);
    }
    let reason = Some(
        "the command's arguments exceed 16 KiB; Keel cannot check it automatically".to_string(),
    );
    let event = exec_request(call, &shown, reason, None);
    let subject = ApprovalSubject::Command;
    match approvals::approve(ctx, turn_id, &call.call_id, subject, Vec::new(), event).await {
        Approval::Run => {
            let run = Run {
                sandbox: Some(settings.sandbox),
                ..Run::default()
            };
            execute(ctx, turn_id, cancel, call, run).await.item
        }
        Approval::Rejected(text) => declined(ctx, turn_id, call, &shown, &text),
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
    /// The exec-policy rules in force: the session's amendments.
    fn rules(&self) -> Rules {
        let mut rules = Rules::default();
        for prefix in &self.durable.allowed_prefixes {
            // An empty prefix was never accepted; nothing to add.
            let _ = rules.add_allow_prefix(prefix);
        }
        rules
    }
}
