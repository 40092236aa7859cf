//! One model tool call, start to output. The call is read by the tool model
//! (crate keel-tool-model), the same code the tool-runner reads it with:
//! a tool the session did not offer runs nothing; a command-family call
//! becomes the invocation it runs, and the approval decision (Codex:
//! `codex-rs/core/src/tools/orchestrator.rs`) judges exactly that — argv,
//! working directory, environment — before the tool-runner is told to run
//! exactly that. Then the sandbox to run under, the run, and the
//! on-failure retry after a sandbox denial (in `command`). Patches are in
//! `patch`, MCP tools in `mcp`, the tools the workflow answers itself in
//! `own_tools`, running a
//! call on the tool-runner in `call`, and the dispatch of turns recorded
//! before the tool model in `legacy`. Whatever happens, the call gets
//! exactly one output.

use keel_tool_model::{Family, Invocation, Offered, family, parse_call};
use keel_workflow_api::DynamicToolDecl;
use temporalio_sdk::WorkflowContext;

use super::call::{ARGUMENTS_TOO_LARGE, Call, Run, Turn, cwd, execute, user_shell};
use super::command::{self, Subject};
use super::patch::{self, PatchSource};
use super::{AgentWorkflow, collab, inline_output, legacy, mcp, own_tools};
use crate::activities::AppendItem;

/// Runs `call` and appends its output to the conversation.
pub(super) async fn run(ctx: &mut WorkflowContext<AgentWorkflow>, turn: Turn<'_>, call: Call) {
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
        legacy::unapproved(ctx, turn, &call).await
    } else if !tool_model {
        legacy::dispatch(ctx, turn, &call, dynamic).await
    } else {
        dispatch(ctx, turn, &call, dynamic).await
    };
    ctx.state_mut(|s| s.durable.pending.push(item));
}

/// The call through the tool model.
async fn dispatch(
    ctx: &mut WorkflowContext<AgentWorkflow>,
    turn: Turn<'_>,
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
    let mcp_tool = ctx.state(|s| {
        s.durable
            .setup
            .iter()
            .flat_map(|setup| &setup.mcp_tools)
            .find(|t| t.name == call.name)
            .cloned()
    });
    if let Some(tool) = mcp_tool {
        return mcp::call(ctx, turn, call, tool).await;
    }
    if let Some(decl) = dynamic {
        if call.truncated {
            return inline_output(&call.call_id, ARGUMENTS_TOO_LARGE, call.custom);
        }
        return own_tools::dynamic_tool(ctx, turn.id, call, &decl.namespace, &decl.name).await;
    }
    match family(&call.name) {
        Family::Workflow if call.truncated => {
            inline_output(&call.call_id, ARGUMENTS_TOO_LARGE, call.custom)
        }
        Family::Workflow if call.name == keel_tool_model::names::UPDATE_PLAN => {
            own_tools::update_plan(ctx, turn.id, call)
        }
        Family::Workflow => own_tools::request_user_input(ctx, turn.id, call).await,
        Family::Collab if call.truncated => {
            inline_output(&call.call_id, ARGUMENTS_TOO_LARGE, call.custom)
        }
        Family::Collab if call.name == keel_tool_model::names::SPAWN_AGENT => {
            collab::spawn_agent(ctx, turn.id, call).await
        }
        Family::Collab if call.name == keel_tool_model::names::SEND_INPUT => {
            collab::send_input(ctx, call).await
        }
        Family::Collab if call.name == keel_tool_model::names::CLOSE_AGENT => {
            collab::close_agent(ctx, call).await
        }
        Family::Collab => collab::wait_agent(ctx, turn.id, call).await,
        Family::ApplyPatch => {
            let source = ctx.state(|s| PatchSource::tool(call, cwd(s)));
            patch::patch(ctx, turn, call, source).await
        }
        // What cannot be shown whole cannot be decided on: a person asked
        // would see the start of the arguments, and what runs is whatever
        // follows it.
        Family::Command | Family::WriteStdin if call.truncated => {
            command::refuse_oversized(ctx, turn, call)
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
                        command::run_command(ctx, turn, call, subject).await
                    }
                    Invocation::Patch(shell_patch) => {
                        let source = PatchSource::shell(shell_patch);
                        patch::patch(ctx, turn, call, source).await
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
                        execute(ctx, turn, call, run).await.item
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
            execute(ctx, turn, call, run).await.item
        }
        // Offered, but no tool Keel runs (e.g. a hosted tool).
        Family::Other => inline_output(
            &call.call_id,
            &format!("unsupported call: {}", call.name),
            call.custom,
        ),
    }
}
