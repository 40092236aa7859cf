//! Model tool calls: parse the arguments, run the tool, produce the one
//! output the model gets back. Every failure a model can cause (bad
//! arguments, an unknown tool, a command that cannot start, a path outside
//! the workspace) is an output with `success: false`, never an RPC error:
//! each call must get exactly one output (Codex:
//! `codex-rs/core/src/tools/router.rs`). Command-family calls are read by
//! the tool model (crate keel-tool-model), the same code the workflow
//! decides with, and run as the [`Invocation`] it yields.

pub mod apply_patch;
pub mod grep;
pub mod list_dir;
pub mod read_file;
pub mod shell;
pub mod specs;
pub mod unified_exec;
pub mod view_image;

use std::path::{Path, PathBuf};
use std::time::Duration;

use keel_tool_model::{Family, Invocation, family, parse_call};
use serde::de::DeserializeOwned;

use crate::exec::Executor;
use crate::exec::registry::ProcessRegistry;
use crate::format::TruncationPolicy;
use crate::sandbox::CallSandbox;
use keel_paths::Workspace;

/// What a tool call runs with.
#[derive(Debug, Clone, Copy)]
pub struct ToolContext<'a> {
    pub executor: &'a Executor,
    pub policy: TruncationPolicy,
    pub workspace: &'a Workspace,
    pub processes: &'a ProcessRegistry,
    /// Whose unified exec processes the call sees: the session, or
    /// `<session>/<agent>` for a sub-agent ([`crate::calls::process_scope`]).
    pub process_scope: &'a str,
    /// The session's working directory, canonical and inside the workspace.
    pub cwd: &'a Path,
    /// The user's shell for `shell_command` and `exec_command`.
    pub user_shell: &'a str,
    /// The call's sandbox: commands run confined by it, and apply_patch
    /// writes only what it allows.
    pub sandbox: &'a CallSandbox,
}

/// One call as the model made it.
#[derive(Debug, Clone, Copy)]
pub struct ToolCall<'a> {
    pub name: &'a str,
    /// JSON arguments, or the raw input of a custom tool call.
    pub arguments: &'a str,
    /// The model sent a `custom_tool_call`.
    pub custom: bool,
    /// What a command-family call runs, as its caller decided on it; `None`
    /// reads it from `arguments` here.
    pub invocation: Option<&'a Invocation>,
}

/// What a tool call produced.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolOutcome {
    /// The model-visible output text; for an `items` output, a short
    /// description for display.
    pub text: String,
    /// Set when the output is a content-item array (`view_image`) rather
    /// than text.
    pub items: Option<Vec<serde_json::Value>>,
    /// Codex's success flag.
    pub success: bool,
    /// Set when a command ran.
    pub command: Option<CommandRecord>,
    /// The call ran sandboxed and the sandbox refused it (Codex's denial
    /// rule, or apply_patch writing where the sandbox does not allow).
    pub sandbox_denied: bool,
}

impl ToolOutcome {
    pub(crate) fn failure(text: String) -> Self {
        Self {
            text,
            items: None,
            success: false,
            command: None,
            sandbox_denied: false,
        }
    }

    pub(crate) fn success(text: String) -> Self {
        Self {
            text,
            items: None,
            success: true,
            command: None,
            sandbox_denied: false,
        }
    }
}

/// The command a tool call ran, for clients to display.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandRecord {
    pub command: Vec<String>,
    pub cwd: PathBuf,
    /// Meaningless while `process_id` is set (the process still runs).
    pub exit_code: i32,
    pub duration: Duration,
    pub aggregated_output: String,
    /// Set while a unified exec process keeps running after the call.
    pub process_id: Option<i32>,
}

/// Runs one call.
pub async fn run_tool(ctx: &ToolContext<'_>, call: ToolCall<'_>) -> ToolOutcome {
    if call.custom {
        return match call.name {
            "apply_patch" => apply_patch::run_freeform(ctx, call.arguments).await,
            other => ToolOutcome::failure(format!("unsupported custom tool call: {other}")),
        };
    }
    let args = call.arguments;
    match family(call.name) {
        Family::Command | Family::WriteStdin => {
            if let Some(invocation) = call.invocation {
                return shell::run_invocation(ctx, invocation).await;
            }
            let cwd = ctx.cwd.to_string_lossy();
            match parse_call(call.name, args, &cwd, ctx.user_shell) {
                Some(Ok(parsed)) => shell::run_invocation(ctx, &parsed.invocation).await,
                Some(Err(text)) => ToolOutcome::failure(text),
                None => ToolOutcome::failure(format!("unsupported call: {}", call.name)),
            }
        }
        _ => match call.name {
            "apply_patch" => apply_patch::run_json(ctx, args).await,
            "read_file" => read_file::run(ctx, args).await,
            "list_dir" => list_dir::run(ctx, args).await,
            "grep_files" => grep::run(ctx, args).await,
            "view_image" => view_image::run(ctx, args).await,
            other => ToolOutcome::failure(format!("unsupported call: {other}")),
        },
    }
}

/// Parses JSON arguments; `Err` is Codex's text for the model.
pub(crate) fn parse_arguments<T: DeserializeOwned>(arguments: &str) -> Result<T, String> {
    serde_json::from_str(arguments)
        .map_err(|err| format!("failed to parse function arguments: {err}"))
}

/// `argv` joined for display, quoting words a shell would split.
pub(crate) fn shlex_join(argv: &[String]) -> String {
    argv.iter()
        .map(|word| {
            let plain = !word.is_empty()
                && word
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%^".contains(c));
            if plain {
                word.clone()
            } else {
                format!("'{}'", word.replace('\'', "'\"'\"'"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
pub(crate) mod tests;
