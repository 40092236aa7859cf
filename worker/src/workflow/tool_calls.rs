//! One model tool call, start to output: the dispatch, the approval
//! decision for commands (Codex's §5 tables, computed here from durable
//! state), the sandbox to run under, the run on the tool-runner and the
//! on-failure retry after a sandbox denial. Patches are in `patch`, the
//! tools the workflow answers itself in `own_tools`. Whatever happens, the
//! call gets exactly one output.

use keel_policy::{
    ApprovalSubject, CommandDecision, CommandDecisionInput, DenialDecision, Rules,
    SandboxDenialInput, SandboxPermissions, decide_after_sandbox_denial, decide_command,
};
use keel_proto::v1 as pb;
use keel_workflow_api::SandboxSettings;
use pb::event::Msg;
use serde::Deserialize;
use temporalio_sdk::{ActivityExecutionError, WorkflowCancellationToken, WorkflowContext};

use super::approvals::{self, Approval};
use super::{ABORTED, AgentWorkflow, failure_message, inline_output, tool_options};
use super::{own_tools, patch};
use crate::activities::{AppendItem, KeelActivities, ToolCallInput, ToolCallOutput};
use crate::tools;

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

/// Names of the tools that run a command the approval rules must judge.
fn is_command_tool(name: &str) -> bool {
    tools::SHELL_TOOLS.contains(&name) || matches!(name, "shell_command" | "exec_command")
}

/// The output of a workflow-handled call whose arguments were too big.
const ARGUMENTS_TOO_LARGE: &str = "failed to parse function arguments: the arguments exceed 16 KiB";

/// Runs `call` and appends its output to the conversation.
pub(super) async fn run(
    ctx: &mut WorkflowContext<AgentWorkflow>,
    turn_id: &str,
    cancel: &WorkflowCancellationToken,
    call: Call,
) {
    let (approvals, dynamic) = ctx.state(|s| {
        let dynamic = s
            .input
            .dynamic_tools
            .iter()
            .find(|t| t.model_name() == call.name)
            .cloned();
        (s.approvals, dynamic)
    });
    if !approvals {
        let argv = shell_argv(&call);
        let item = execute(ctx, turn_id, cancel, &call, argv, None, 0)
            .await
            .item;
        return push(ctx, item);
    }
    let workflow_tool =
        dynamic.is_some() || matches!(call.name.as_str(), "update_plan" | "request_user_input");
    let item = match (call.name.as_str(), dynamic) {
        _ if call.truncated && workflow_tool => {
            inline_output(&call.call_id, ARGUMENTS_TOO_LARGE, call.custom)
        }
        _ if call.truncated && is_command_tool(&call.name) => {
            oversized_command(ctx, turn_id, cancel, &call).await
        }
        (_, Some(decl)) => {
            own_tools::dynamic_tool(ctx, turn_id, &call, &decl.namespace, &decl.name).await
        }
        ("update_plan", _) => own_tools::update_plan(ctx, turn_id, &call),
        ("request_user_input", _) => own_tools::request_user_input(ctx, turn_id, &call).await,
        ("apply_patch", _) => patch::patch(ctx, turn_id, cancel, &call).await,
        _ => match tools::command_argv(&call.name, &call.arguments) {
            Some(argv) => command(ctx, turn_id, cancel, &call, argv).await,
            None => {
                let sandbox = ctx.state(|s| s.effective().sandbox);
                let argv = shell_argv(&call);
                execute(ctx, turn_id, cancel, &call, argv, Some(sandbox), 0)
                    .await
                    .item
            }
        },
    };
    push(ctx, item);
}

fn push(ctx: &mut WorkflowContext<AgentWorkflow>, item: AppendItem) {
    ctx.state_mut(|s| s.pending.push(item));
}

/// The argv shown in exec events (argv shell tools only).
fn shell_argv(call: &Call) -> Option<Vec<String>> {
    if tools::SHELL_TOOLS.contains(&call.name.as_str()) {
        tools::shell_argv(&call.arguments)
    } else {
        None
    }
}

pub(super) fn cwd(s: &AgentWorkflow) -> String {
    match &s.setup {
        Some(setup) if !setup.cwd.is_empty() => setup.cwd.clone(),
        _ => s.input.cwd.clone(),
    }
}

/// What one run on the tool-runner produced.
pub(super) struct Executed {
    pub item: AppendItem,
    pub output: Option<ToolCallOutput>,
}

/// Runs the call on the tool-runner under `sandbox`, with exec events when
/// `argv` is known.
pub(super) async fn execute(
    ctx: &mut WorkflowContext<AgentWorkflow>,
    turn_id: &str,
    cancel: &WorkflowCancellationToken,
    call: &Call,
    argv: Option<Vec<String>>,
    sandbox: Option<SandboxSettings>,
    attempt: u32,
) -> Executed {
    let cwd = ctx.state(cwd);
    let now = ctx.workflow_time();
    if let Some(command) = &argv {
        ctx.state_mut(|s| {
            s.emit(
                now,
                turn_id,
                Msg::ExecCommandBegin(pb::ExecCommandBegin {
                    call_id: call.call_id.clone(),
                    command: command.clone(),
                    cwd: cwd.clone(),
                }),
            )
        });
    }
    let (arguments, call_item_digest) = call.arguments_for_runner();
    let input = ToolCallInput {
        session_id: ctx.state(|s| s.input.session_id.clone()),
        call_id: call.call_id.clone(),
        name: call.name.clone(),
        arguments,
        cwd: cwd.clone(),
        custom: call.custom,
        sandbox,
        attempt,
        call_item_digest,
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
            let end = argv.clone().map(|command| pb::ExecCommandEnd {
                call_id: call.call_id.clone(),
                command,
                cwd: cwd.clone(),
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
    argv: &[String],
    text: &str,
) -> AppendItem {
    let now = ctx.workflow_time();
    ctx.state_mut(|s| {
        let cwd = cwd(s);
        s.emit(
            now,
            turn_id,
            Msg::ExecCommandBegin(pb::ExecCommandBegin {
                call_id: call.call_id.clone(),
                command: argv.to_vec(),
                cwd: cwd.clone(),
            }),
        );
        s.emit(
            now,
            turn_id,
            Msg::ExecCommandEnd(pb::ExecCommandEnd {
                call_id: call.call_id.clone(),
                command: argv.to_vec(),
                cwd,
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

/// The approval parameters of a command call (§2.5).
#[derive(Default, Deserialize)]
#[serde(default)]
struct ApprovalArgs {
    sandbox_permissions: SandboxPermissions,
    justification: Option<String>,
    prefix_rule: Option<Vec<String>>,
}

/// A command: decide, maybe ask, run sandboxed or not, and after a sandbox
/// denial maybe ask again and re-run without the sandbox.
async fn command(
    ctx: &mut WorkflowContext<AgentWorkflow>,
    turn_id: &str,
    cancel: &WorkflowCancellationToken,
    call: &Call,
    argv: Vec<String>,
) -> AppendItem {
    let args: ApprovalArgs = serde_json::from_str(&call.arguments).unwrap_or_default();
    let (settings, rules, approved, cwd) = ctx.state(|s| {
        (
            s.effective(),
            s.rules(),
            s.approved_for_session.clone(),
            cwd(s),
        )
    });
    let key = keel_policy::decision::approval_key(&argv, &cwd, args.sandbox_permissions, None);
    let decision = decide_command(&CommandDecisionInput {
        argv: &argv,
        cwd: &cwd,
        approval_policy: settings.approval_policy,
        sandbox_mode: settings.sandbox.mode,
        sandbox_permissions: args.sandbox_permissions,
        additional_permissions: None,
        justification: args.justification.as_deref(),
        prefix_rule: args.prefix_rule.as_deref(),
        rules: &rules,
        approved_for_session: &approved,
    });
    let (sandboxed, already_approved, amendment) = match decision {
        CommandDecision::Reject { text } => return declined(ctx, turn_id, call, &argv, &text),
        CommandDecision::Forbid { reason } => {
            return declined(ctx, turn_id, call, &argv, &reason);
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
            let event = exec_request(call, &argv, &cwd, reason, proposed_amendment.clone());
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
                Approval::Rejected(text) => return declined(ctx, turn_id, call, &argv, &text),
            }
        }
    };
    let sandbox = if sandboxed {
        settings.sandbox.clone()
    } else {
        SandboxSettings::full_access()
    };
    let argv_event = Some(argv.clone());
    let first = execute(
        ctx,
        turn_id,
        cancel,
        call,
        argv_event.clone(),
        Some(sandbox),
        0,
    )
    .await;
    let denied = sandboxed && first.output.as_ref().is_some_and(|o| o.sandbox_denied);
    if !denied || cancel.is_cancelled() {
        return first.item;
    }
    let approved = ctx.state(|s| s.approved_for_session.clone());
    let next = decide_after_sandbox_denial(&SandboxDenialInput {
        approval_policy: settings.approval_policy,
        already_approved,
        approval_key: &key,
        approved_for_session: &approved,
        proposed_amendment: amendment.as_deref(),
    });
    let full = Some(SandboxSettings::full_access());
    match next {
        DenialDecision::ReturnToModel => first.item,
        DenialDecision::RerunUnsandboxed => {
            execute(ctx, turn_id, cancel, call, argv_event, full, 1)
                .await
                .item
        }
        DenialDecision::Prompt {
            reason,
            proposed_amendment,
        } => {
            let event = exec_request(call, &argv, &cwd, Some(reason), proposed_amendment);
            let subject = ApprovalSubject::Command;
            match approvals::approve(ctx, turn_id, &call.call_id, subject, vec![key], event).await {
                Approval::Run => {
                    execute(ctx, turn_id, cancel, call, argv_event, full, 1)
                        .await
                        .item
                }
                Approval::Rejected(text) => inline_output(&call.call_id, &text, call.custom),
            }
        }
    }
}

/// A command whose arguments are too big to keep in history: the rules
/// cannot judge what they cannot see, so a person decides (under `never`
/// it is refused). Approved, it runs in the session's sandbox.
async fn oversized_command(
    ctx: &mut WorkflowContext<AgentWorkflow>,
    turn_id: &str,
    cancel: &WorkflowCancellationToken,
    call: &Call,
) -> AppendItem {
    let (settings, cwd) = ctx.state(|s| (s.effective(), cwd(s)));
    let shown = vec![format!("{} …", call.arguments)];
    if settings.approval_policy == keel_policy::ApprovalPolicy::Never {
        let text = "command rejected: its arguments exceed 16 KiB, too long to check under approval policy never";
        return declined(ctx, turn_id, call, &shown, text);
    }
    let reason = Some(
        "the command's arguments exceed 16 KiB; Keel cannot check it automatically".to_string(),
    );
    let event = exec_request(call, &shown, &cwd, reason, None);
    let subject = ApprovalSubject::Command;
    match approvals::approve(ctx, turn_id, &call.call_id, subject, Vec::new(), event).await {
        Approval::Run => {
            let sandbox = Some(settings.sandbox);
            execute(ctx, turn_id, cancel, call, None, sandbox, 0)
                .await
                .item
        }
        Approval::Rejected(text) => declined(ctx, turn_id, call, &shown, &text),
    }
}

fn exec_request(
    call: &Call,
    argv: &[String],
    cwd: &str,
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
        command: argv.to_vec(),
        cwd: cwd.to_string(),
        reason: reason.unwrap_or_default(),
        proposed_execpolicy_amendment: amendment.unwrap_or_default(),
        parsed_cmd: keel_policy::parse_command(argv)
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
        for prefix in &self.allowed_prefixes {
            // An empty prefix was never accepted; nothing to add.
            let _ = rules.add_allow_prefix(prefix);
        }
        rules
    }
}
