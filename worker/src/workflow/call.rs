//! One tool call on the tool-runner: the call as the model made it, how it
//! runs (sandbox, attempt, the invocation decided on, the command shown to
//! clients), the `run_tool` activity with its exec events, and the
//! `declined` end of a call that does not run. The decisions before it are
//! in `command` and `patch`.

use keel_proto::v1 as pb;
use keel_tool_model::Invocation;
use keel_workflow_api::SandboxSettings;
use pb::event::Msg;
use temporalio_sdk::{ActivityExecutionError, WorkflowCancellationToken, WorkflowContext};

use super::{ABORTED, AgentWorkflow, failure_message, inline_output, lease, tool_options};
use crate::activities::{AppendItem, KeelActivities, ToolCallInput, ToolCallOutput};

/// The running turn, as the code handling its calls needs it.
#[derive(Clone, Copy)]
pub(super) struct Turn<'a> {
    /// The turn's id, on its events.
    pub(super) id: &'a str,
    /// Cancelled when the turn is interrupted.
    pub(super) cancel: &'a WorkflowCancellationToken,
}

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
pub(super) const ARGUMENTS_TOO_LARGE: &str =
    "failed to parse function arguments: the arguments exceed 16 KiB";

/// The user's shell for sessions whose setup did not report one.
const FALLBACK_USER_SHELL: &str = "/bin/bash";

pub(super) fn cwd(s: &AgentWorkflow) -> String {
    match &s.durable.setup {
        Some(setup) if !setup.cwd.is_empty() => setup.cwd.clone(),
        _ => s.input.cwd.clone(),
    }
}

pub(super) fn user_shell(s: &AgentWorkflow) -> String {
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

impl Shown {
    fn begin(&self, call_id: &str) -> Msg {
        Msg::ExecCommandBegin(pb::ExecCommandBegin {
            call_id: call_id.to_string(),
            command: self.argv.clone(),
            cwd: self.cwd.clone(),
        })
    }

    /// The end of a command that did not run, or whose run never reported
    /// back.
    fn ended_without_running(
        &self,
        call_id: &str,
        text: &str,
        status: pb::ExecCommandStatus,
    ) -> Msg {
        Msg::ExecCommandEnd(pb::ExecCommandEnd {
            call_id: call_id.to_string(),
            command: self.argv.clone(),
            cwd: self.cwd.clone(),
            exit_code: -1,
            duration_ms: 0,
            aggregated_output: String::new(),
            formatted_output: text.to_string(),
            status: status as i32,
        })
    }
}

/// Runs the call on the tool-runner, with exec events when `run.shown` is
/// set.
pub(super) async fn execute(
    ctx: &mut WorkflowContext<AgentWorkflow>,
    turn: Turn<'_>,
    call: &Call,
    run: Run<'_>,
) -> Executed {
    let session_cwd = ctx.state(cwd);
    let now = ctx.workflow_time();
    if let Some(shown) = &run.shown {
        ctx.state_mut(|s| s.emit(now, turn.id, shown.begin(&call.call_id)));
    }
    let (arguments, call_item_digest) = call.arguments_for_runner();
    let user_shell = match run.invocation {
        Some(_) => ctx.state(user_shell),
        None => String::new(),
    };
    let mut input = ToolCallInput {
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
        runner: None,
        agent_id: ctx.state(|s| s.input.tool_agent_id().to_string()),
    };
    // The text of a call that did not get an answer from the tool-runner.
    let failed = |e: &ActivityExecutionError| match e {
        ActivityExecutionError::Cancelled(_) => ABORTED.to_string(),
        other => format!("execution error: {}", failure_message(other).0),
    };
    let mut moved = false;
    let result = loop {
        let runner = match lease::runner(ctx, turn.cancel).await {
            Ok(runner) => runner,
            Err(e) => break Err(failed(&e)),
        };
        input.runner = runner.clone();
        // A move may have put a cloned workspace elsewhere.
        input.cwd = ctx.state(cwd);
        let result = ctx
            .execute_activity(
                KeelActivities::run_tool,
                input.clone(),
                tool_options(turn.cancel),
            )
            .await;
        let how = result.as_ref().err().and_then(lease::moved);
        match (result, runner, how) {
            // The workspace moves once per call; a call whose runner went
            // away mid-run is lost, one that never ran runs on the new one.
            (Err(_), Some(from), Some(how)) if !moved => {
                moved = true;
                if let Err(e) = lease::move_off(ctx, turn.cancel, &from, turn.id).await {
                    break Err(failed(&e));
                }
                match how {
                    lease::Moved::NotRun => continue,
                    lease::Moved::Lost => break Err(lease::lost_text(run.shown.is_some())),
                }
            }
            (Ok(out), _, _) => break Ok(out),
            (Err(e), _, _) => break Err(failed(&e)),
        }
    };
    let now = ctx.workflow_time();
    let (executed, end) = match result {
        Ok(out) => {
            let end = out.command.as_ref().map(|c| {
                Msg::ExecCommandEnd(pb::ExecCommandEnd {
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
                })
            });
            let executed = Executed {
                item: AppendItem::Digest(out.output_digest.clone()),
                output: Some(out),
            };
            (executed, end)
        }
        Err(text) => {
            let failed = pb::ExecCommandStatus::Failed;
            let end = run
                .shown
                .as_ref()
                .map(|shown| shown.ended_without_running(&call.call_id, &text, failed));
            let executed = Executed {
                item: inline_output(&call.call_id, &text, call.custom),
                output: None,
            };
            (executed, end)
        }
    };
    if let Some(end) = end {
        ctx.state_mut(|s| s.emit(now, turn.id, end));
    }
    executed
}

/// A command the tool-runner would not run: begin and a `declined` end, so
/// clients see every call, and the reason as the output.
pub(super) fn declined(
    ctx: &mut WorkflowContext<AgentWorkflow>,
    turn: Turn<'_>,
    call: &Call,
    shown: &Shown,
    text: &str,
) -> AppendItem {
    let now = ctx.workflow_time();
    let declined = pb::ExecCommandStatus::Declined;
    ctx.state_mut(|s| {
        s.emit(now, turn.id, shown.begin(&call.call_id));
        s.emit(
            now,
            turn.id,
            shown.ended_without_running(&call.call_id, text, declined),
        );
    });
    inline_output(&call.call_id, text, call.custom)
}
