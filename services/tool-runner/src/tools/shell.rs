//! Commands run to completion (`shell`, `container.exec`, `local_shell`,
//! `shell_command`; Codex: `codex-rs/core/src/tools/handlers/shell.rs`),
//! and the dispatch of every command-family invocation. What runs is the
//! tool model's [`Invocation`], read from the call by the same code the
//! workflow decided with.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use keel_tool_model::env::refused_env_var;
use keel_tool_model::{CommandInvocation, Invocation, PatchInvocation, PatchOutput, RunMode};

use super::apply_patch::{self, Layout};
use super::{CommandRecord, ToolContext, ToolOutcome, unified_exec};
use crate::exec::{ExecError, ExecSpec};
use crate::format::UnifiedExecOutput;
use crate::patch::parser::parse_patch;
use crate::sandbox::denial::is_sandbox_denial;

/// Runs `invocation`.
pub async fn run_invocation(ctx: &ToolContext<'_>, invocation: &Invocation) -> ToolOutcome {
    match invocation {
        Invocation::Command(command) => run_command(ctx, command).await,
        Invocation::Patch(patch) => run_patch(ctx, patch).await,
        Invocation::WriteStdin(input) => unified_exec::write_stdin(ctx, input).await,
    }
}

async fn run_command(ctx: &ToolContext<'_>, command: &CommandInvocation) -> ToolOutcome {
    // The tool model refuses these already; an invocation from elsewhere
    // must not set them either.
    if let Some((name, why)) = refused_env(&command.env) {
        return ToolOutcome::failure(format!(
            "execution error: the environment variable {name:?} cannot be set by a tool call: {why}"
        ));
    }
    let cwd = match command_cwd(ctx, &command.cwd) {
        Ok(cwd) => cwd,
        Err(text) => return ToolOutcome::failure(text),
    };
    match command.run {
        RunMode::Complete { timeout_ms, layout } => {
            let layout = match layout {
                keel_tool_model::Layout::Structured => Layout::Structured,
                keel_tool_model::Layout::Freeform => Layout::Freeform,
            };
            let timeout = crate::exec::timeout_for(timeout_ms);
            let env = command.env.clone().into_iter().collect();
            run_complete(ctx, command.argv.clone(), cwd, env, timeout, layout).await
        }
        RunMode::Session {
            tty,
            yield_time_ms,
            max_output_tokens,
        } => {
            unified_exec::start(
                ctx,
                command.argv.clone(),
                &cwd,
                tty,
                yield_time_ms,
                max_output_tokens,
            )
            .await
        }
    }
}

fn refused_env(env: &BTreeMap<String, String>) -> Option<(&str, &'static str)> {
    env.keys()
        .find_map(|name| refused_env_var(name).map(|why| (name.as_str(), why)))
}

/// The directory a command runs in: the invocation's (absolute) `cwd`,
/// canonicalised and checked against the workspace. `Err` is the text for
/// the model when it lies outside. A directory that does not exist is
/// passed through so that the spawn reports it the way Codex does.
fn command_cwd(ctx: &ToolContext<'_>, cwd: &str) -> Result<PathBuf, String> {
    match ctx.workspace.resolve_existing(ctx.cwd, Path::new(cwd)) {
        Ok(path) => Ok(path),
        Err(err) if err.is_not_found() => Ok(ctx.cwd.join(cwd)),
        Err(err) => Err(err.to_string()),
    }
}

/// A patch that arrived through a shell tool (Codex routes those to
/// apply_patch), rendered as that tool renders.
async fn run_patch(ctx: &ToolContext<'_>, patch: &PatchInvocation) -> ToolOutcome {
    let hunks = match parse_patch(&patch.patch) {
        Ok(hunks) => hunks,
        Err(err) => {
            return ToolOutcome::failure(format!("apply_patch verification failed: {err}"));
        }
    };
    let layout = match patch.output {
        PatchOutput::Structured => Layout::Structured,
        PatchOutput::Freeform | PatchOutput::ExecCommand { .. } => Layout::Freeform,
    };
    let patched = apply_patch::run_hunks(ctx, hunks, ctx.cwd, Some(&patch.cwd), layout).await;
    match patch.output {
        PatchOutput::ExecCommand { max_output_tokens } => {
            // Codex answers with the patch's own output in this layout, with
            // no chunk id, and a separate warning message.
            let text = UnifiedExecOutput {
                output: &format!(
                    "{}\n\n{}",
                    patched.text,
                    unified_exec::APPLY_PATCH_VIA_EXEC_WARNING
                ),
                max_output_tokens: max_output_tokens.map(unified_exec::token_count),
                ..Default::default()
            }
            .render(ctx.policy);
            ToolOutcome { text, ..patched }
        }
        PatchOutput::Structured | PatchOutput::Freeform => patched,
    }
}

/// Runs `argv` to completion in `cwd` and renders it in `layout`.
async fn run_complete(
    ctx: &ToolContext<'_>,
    argv: Vec<String>,
    cwd: PathBuf,
    env: HashMap<String, String>,
    timeout: Duration,
    layout: Layout,
) -> ToolOutcome {
    let spec = ExecSpec {
        argv,
        cwd,
        timeout,
        env,
        sandbox: ctx.sandbox.confinement(),
    };
    let out = match ctx.executor.run(&spec).await {
        Ok(out) => out,
        Err(err) => return ToolOutcome::failure(execution_error(&err)),
    };
    let record = CommandRecord {
        command: spec.argv,
        cwd: spec.cwd,
        exit_code: out.exit_code,
        duration: out.duration,
        aggregated_output: out.aggregated,
        process_id: None,
    };
    let text = match layout.render(
        &record.aggregated_output,
        out.exit_code,
        out.duration,
        ctx.policy,
    ) {
        Ok(text) => text,
        Err(err) => return ToolOutcome::failure(format!("execution error: {err}")),
    };
    let sandbox_denied = spec.sandbox.is_some()
        && is_sandbox_denial(
            out.exit_code,
            out.timed_out,
            &[&out.stdout, &out.stderr, &record.aggregated_output],
        );
    ToolOutcome {
        text,
        items: None,
        success: out.exit_code == 0 && !out.timed_out,
        sandbox_denied,
        command: Some(record),
    }
}

/// Codex renders runtime failures as `execution error: <Debug of CodexErr>`;
/// a spawn failure there is `Io(<io::Error Debug>)`.
fn execution_error(err: &ExecError) -> String {
    match err.io_error() {
        Some(io) => format!("execution error: Io({io:?})"),
        None => format!("execution error: {err}"),
    }
}
