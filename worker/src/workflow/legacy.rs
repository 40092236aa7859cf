//! The dispatch of turns recorded before the tool model (patch marker
//! `tool-model-v1`), kept only so those turns replay: the same activities
//! in the same order as when they ran. New turns never come here.
//!
//! Before the tool model the workflow read command arguments with code of
//! its own and the tool-runner with other code, and dispatched any tool the
//! tool-runner knew; `tool_calls::dispatch` replaced that (see
//! docs/security.md).

use keel_tool_model::{Escalation, SandboxPermissions};
use keel_workflow_api::DynamicToolDecl;
use serde::Deserialize;
use temporalio_sdk::WorkflowContext;

use super::call::{ARGUMENTS_TOO_LARGE, Call, Run, Shown, Turn, cwd, execute};
use super::command::{self, Subject};
use super::patch::{self, PatchSource};
use super::{AgentWorkflow, inline_output, own_tools};
use crate::activities::AppendItem;

/// The names the old dispatch ran as argv shell calls.
const SHELL_TOOLS: &[&str] = &["shell", "container.exec"];

/// A turn recorded before approvals: every call ran without a decision.
pub(super) async fn unapproved(
    ctx: &mut WorkflowContext<AgentWorkflow>,
    turn: Turn<'_>,
    call: &Call,
) -> AppendItem {
    let shown = shown_argv(call, ctx.state(cwd));
    let run = Run {
        shown,
        ..Run::default()
    };
    execute(ctx, turn, call, run).await.item
}

/// A turn recorded with approvals but before the tool model.
pub(super) async fn dispatch(
    ctx: &mut WorkflowContext<AgentWorkflow>,
    turn: Turn<'_>,
    call: &Call,
    dynamic: Option<DynamicToolDecl>,
) -> AppendItem {
    let workflow_tool =
        dynamic.is_some() || matches!(call.name.as_str(), "update_plan" | "request_user_input");
    match (call.name.as_str(), dynamic) {
        _ if call.truncated && workflow_tool => {
            inline_output(&call.call_id, ARGUMENTS_TOO_LARGE, call.custom)
        }
        _ if call.truncated && is_command_tool(&call.name) => {
            command::oversized_command(ctx, turn, call).await
        }
        (_, Some(decl)) => {
            own_tools::dynamic_tool(ctx, turn.id, call, &decl.namespace, &decl.name).await
        }
        ("update_plan", _) => own_tools::update_plan(ctx, turn.id, call),
        ("request_user_input", _) => own_tools::request_user_input(ctx, turn.id, call).await,
        ("apply_patch", _) => {
            let source = ctx.state(|s| PatchSource::tool(call, cwd(s)));
            patch::patch(ctx, turn, call, source).await
        }
        _ => match command_argv(&call.name, &call.arguments) {
            Some(argv) => {
                let subject = Subject {
                    argv,
                    cwd: ctx.state(cwd),
                    escalation: escalation(&call.arguments),
                    invocation: None,
                };
                command::run_command(ctx, turn, call, subject).await
            }
            None => {
                let (sandbox, cwd) = ctx.state(|s| (s.effective().sandbox, cwd(s)));
                let run = Run {
                    shown: shown_argv(call, cwd),
                    sandbox: Some(sandbox),
                    ..Run::default()
                };
                execute(ctx, turn, call, run).await.item
            }
        },
    }
}

fn is_command_tool(name: &str) -> bool {
    SHELL_TOOLS.contains(&name) || matches!(name, "shell_command" | "exec_command")
}

/// The argv shown in exec events (argv shell tools only).
fn shown_argv(call: &Call, cwd: String) -> Option<Shown> {
    #[derive(Deserialize)]
    struct Args {
        command: Vec<String>,
    }
    if !SHELL_TOOLS.contains(&call.name.as_str()) {
        return None;
    }
    let args: Args = serde_json::from_str(&call.arguments).ok()?;
    Some(Shown {
        argv: args.command,
        cwd,
    })
}

/// The argv the old dispatch judged: the argv of `shell`, or `[bash, -lc,
/// script]` for the string tools.
fn command_argv(name: &str, arguments: &str) -> Option<Vec<String>> {
    #[derive(Deserialize)]
    struct Argv {
        command: Vec<String>,
    }
    #[derive(Deserialize)]
    struct Script {
        command: String,
    }
    #[derive(Deserialize)]
    struct Exec {
        cmd: String,
    }
    let script = match name {
        n if SHELL_TOOLS.contains(&n) => {
            return serde_json::from_str::<Argv>(arguments)
                .ok()
                .map(|a| a.command);
        }
        "shell_command" => serde_json::from_str::<Script>(arguments).ok()?.command,
        "exec_command" => serde_json::from_str::<Exec>(arguments).ok()?.cmd,
        _ => return None,
    };
    Some(vec!["bash".into(), "-lc".into(), script])
}

/// The approval parameters as the old dispatch read them (any parse
/// failure: the defaults).
fn escalation(arguments: &str) -> Escalation {
    #[derive(Default, Deserialize)]
    #[serde(default)]
    struct ApprovalArgs {
        sandbox_permissions: SandboxPermissions,
        justification: Option<String>,
        prefix_rule: Option<Vec<String>>,
    }
    let args: ApprovalArgs = serde_json::from_str(arguments).unwrap_or_default();
    Escalation {
        sandbox_permissions: args.sandbox_permissions,
        justification: args.justification,
        prefix_rule: args.prefix_rule,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_old_reading_of_command_calls() {
        assert_eq!(
            command_argv("shell_command", r#"{"command":"ls -la"}"#),
            Some(vec!["bash".into(), "-lc".into(), "ls -la".into()])
        );
        assert_eq!(
            command_argv("exec_command", r#"{"cmd":"cargo test"}"#),
            Some(vec!["bash".into(), "-lc".into(), "cargo test".into()])
        );
        assert_eq!(command_argv("read_file", r#"{"path":"x"}"#), None);
        assert_eq!(command_argv("shell_command", r#"{"cmd":"x"}"#), None);
        assert_eq!(
            escalation(r#"{"command":["x"],"sandbox_permissions":"require_escalated"}"#)
                .sandbox_permissions,
            SandboxPermissions::RequireEscalated
        );
    }
}
