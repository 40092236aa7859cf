//! One model tool call, start to output: the approval decision (Codex's
//! §5 tables, computed here from durable state), the sandbox to run under,
//! the run on the tool-runner, the on-failure retry after a sandbox denial,
//! and the tools the workflow itself answers (`update_plan`,
//! `request_user_input`, client tools). Whatever happens, the call gets
//! exactly one output.

use keel_policy::{
    ApprovalSubject, CommandDecision, CommandDecisionInput, DenialDecision, PatchChange,
    PatchDecision, PatchDecisionInput, Rules, SandboxDenialInput, SandboxPermissions,
    decide_after_sandbox_denial, decide_command, decide_patch,
};
use keel_proto::v1 as pb;
use keel_workflow_api::{Answer, RequestKind, SandboxSettings};
use pb::event::Msg;
use serde::Deserialize;
use serde_json::json;
use temporalio_sdk::{ActivityExecutionError, WorkflowCancellationToken, WorkflowContext};

use super::approvals::{self, Approval};
use super::{ABORTED, AgentWorkflow, emit, failure_message, inline_output, tool_options};
use crate::activities::{
    AppendItem, KeelActivities, PatchChangeKind, PatchFileChange, PatchReviewInput, ToolCallInput,
    ToolCallOutput,
};
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
    fn arguments_for_runner(&self) -> (String, Option<String>) {
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
        (_, Some(decl)) => dynamic_tool(ctx, turn_id, &call, &decl.namespace, &decl.name).await,
        ("update_plan", _) => update_plan(ctx, turn_id, &call),
        ("request_user_input", _) => request_user_input(ctx, turn_id, &call).await,
        ("apply_patch", _) => patch(ctx, turn_id, cancel, &call).await,
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

fn cwd(s: &AgentWorkflow) -> String {
    match &s.setup {
        Some(setup) if !setup.cwd.is_empty() => setup.cwd.clone(),
        _ => s.input.cwd.clone(),
    }
}

/// What one run on the tool-runner produced.
struct Executed {
    item: AppendItem,
    output: Option<ToolCallOutput>,
}

/// Runs the call on the tool-runner under `sandbox`, with exec events when
/// `argv` is known.
async fn execute(
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

/// An apply_patch call: review it on the tool-runner, decide (§5.5), maybe
/// ask with the per-file changes, then apply.
async fn patch(
    ctx: &mut WorkflowContext<AgentWorkflow>,
    turn_id: &str,
    cancel: &WorkflowCancellationToken,
    call: &Call,
) -> AppendItem {
    let (settings, approved, cwd) =
        ctx.state(|s| (s.effective(), s.approved_for_session.clone(), cwd(s)));
    let (arguments, call_item_digest) = call.arguments_for_runner();
    let input = PatchReviewInput {
        cwd,
        arguments,
        custom: call.custom,
        sandbox: settings.sandbox.clone(),
        call_item_digest,
    };
    let review = match ctx
        .execute_activity(KeelActivities::review_patch, input, tool_options(cancel))
        .await
    {
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
        let sandbox = Some(settings.sandbox);
        return execute(ctx, turn_id, cancel, call, None, sandbox, 0)
            .await
            .item;
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
            match approvals::approve(ctx, turn_id, &call.call_id, subject, approval_keys, event)
                .await
            {
                // Once approved, the patch applies even outside the
                // writable roots (§5.5).
                Approval::Run => (SandboxSettings::full_access(), false),
                Approval::Rejected(text) => {
                    return inline_output(&call.call_id, &text, call.custom);
                }
            }
        }
    };
    emit(
        ctx,
        turn_id,
        Msg::PatchApplyBegin(pb::PatchApplyBegin {
            call_id: call.call_id.clone(),
            auto_approved,
            changes: shown,
        }),
    );
    let executed = execute(ctx, turn_id, cancel, call, None, Some(sandbox), 0).await;
    let (output, success) = match &executed.output {
        Some(o) => (o.output_preview.clone(), o.success),
        None => (ABORTED.to_string(), false),
    };
    emit(
        ctx,
        turn_id,
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

fn parse_error(call: &Call, e: &serde_json::Error) -> AppendItem {
    let text = format!("failed to parse function arguments: {e}");
    inline_output(&call.call_id, &text, call.custom)
}

/// `update_plan` (§2.12): a plan event; the model gets "Plan updated".
fn update_plan(ctx: &mut WorkflowContext<AgentWorkflow>, turn_id: &str, call: &Call) -> AppendItem {
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

/// `request_user_input` (§2.13): the questions go to the client; the answers
/// are the output.
async fn request_user_input(
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

/// A client tool (§2.17): the call goes to the client; its stored result
/// is the output.
async fn dynamic_tool(
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
