//! The `apply_patch` tool (codex-compat §2.7): the freeform custom tool (raw
//! patch text) and the JSON function (`{"input": …}`, alias `patch`), plus
//! patches intercepted from shell tools. Success is reported in the exec
//! layout of the tool that carried it — freeform for the custom tool and
//! `shell_command`, structured for the JSON tool and `shell` — as Codex runs
//! apply_patch as a command; refusals are plain text.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::{ToolContext, ToolOutcome, parse_arguments};
use crate::format::{
    FormatError, TruncationPolicy, freeform_shell_output, structured_shell_output,
};
use crate::patch::apply::Change;
use crate::patch::parser::{Hunk, parse_patch};
use crate::patch::{PatchResult, apply_hunks, verify};
use crate::sandbox::CallSandbox;
use crate::workspace::Workspace;

/// Which exec layout a successful (or I/O-failed) patch is reported in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Freeform,
    Structured,
}

impl Layout {
    pub fn render(
        self,
        body: &str,
        exit_code: i32,
        duration: Duration,
        policy: TruncationPolicy,
    ) -> Result<String, FormatError> {
        match self {
            Self::Freeform => Ok(freeform_shell_output(body, exit_code, duration, policy)),
            Self::Structured => structured_shell_output(body, exit_code, duration, policy),
        }
    }
}

/// The JSON form's arguments. Keel also takes `patch` for `input`.
#[derive(Debug, Deserialize)]
struct ApplyPatchParams {
    #[serde(alias = "patch")]
    input: String,
}

/// A `custom_tool_call` to apply_patch: the input is the patch.
pub async fn run_freeform(ctx: &ToolContext<'_>, input: &str) -> ToolOutcome {
    run_text(ctx, input, Layout::Freeform).await
}

/// A `function_call` to apply_patch.
pub async fn run_json(ctx: &ToolContext<'_>, arguments: &str) -> ToolOutcome {
    match parse_arguments::<ApplyPatchParams>(arguments) {
        Ok(params) => run_text(ctx, &params.input, Layout::Structured).await,
        Err(text) => ToolOutcome::failure(text),
    }
}

async fn run_text(ctx: &ToolContext<'_>, patch: &str, layout: Layout) -> ToolOutcome {
    match parse_patch(patch) {
        Ok(hunks) => run_hunks(ctx, hunks, ctx.cwd, None, layout).await,
        Err(err) => ToolOutcome::failure(format!("apply_patch verification failed: {err}")),
    }
}

/// What a call's patch would change, without writing anything (for
/// ReviewPatch); `Err` is the text RunTool would answer the model with.
/// `arguments` as in RunTool: the raw patch when `custom`, else the JSON
/// form.
/// Under a sandboxed `sandbox`, a hunk naming a hidden path is refused
/// before any file is read.
pub fn review(
    arguments: &str,
    custom: bool,
    cwd: &Path,
    workspace: &Workspace,
    sandbox: &CallSandbox,
) -> Result<Vec<Change>, String> {
    let patch = if custom {
        arguments.to_string()
    } else {
        parse_arguments::<ApplyPatchParams>(arguments)?.input
    };
    let hunks =
        parse_patch(&patch).map_err(|err| format!("apply_patch verification failed: {err}"))?;
    hidden_paths_untouched(sandbox, &hunks, cwd)?;
    verify(&hunks, cwd, workspace).map_err(|refused| refused.text().to_string())
}

/// Applies parsed hunks in `cwd` (or `workdir` relative to it, the `cd` of
/// `cd DIR && apply_patch`).
pub async fn run_hunks(
    ctx: &ToolContext<'_>,
    hunks: Vec<Hunk>,
    cwd: &Path,
    workdir: Option<&str>,
    layout: Layout,
) -> ToolOutcome {
    let cwd = match workdir {
        None => cwd.to_path_buf(),
        Some(dir) => match ctx.workspace.resolve_existing(cwd, Path::new(dir)) {
            Ok(dir) => dir,
            Err(err) => return ToolOutcome::failure(format!("patch rejected: {err}")),
        },
    };
    // Before anything is read: a sandboxed patch must not read (its
    // verification would tell what a file holds) or write a hidden path —
    // the tool-runner's state, the blob store, Codex's home.
    if let Err(text) = hidden_paths_untouched(ctx.sandbox, &hunks, &cwd) {
        return ToolOutcome {
            sandbox_denied: true,
            ..ToolOutcome::failure(text)
        };
    }
    let workspace = ctx.workspace.clone();
    let sandbox = ctx.sandbox.clone();
    let start = Instant::now();
    // File I/O, possibly on many files: off the async threads.
    let result =
        tokio::task::spawn_blocking(move || apply_hunks(&hunks, &cwd, &workspace, &sandbox)).await;
    let result = match result {
        Ok(result) => result,
        Err(err) => return ToolOutcome::failure(format!("execution error: {err}")),
    };
    patch_outcome(result, start.elapsed(), layout, ctx.policy)
}

/// `Err` (the model's text) when a hunk of a sandboxed call names a path
/// inside a hidden one.
fn hidden_paths_untouched(sandbox: &CallSandbox, hunks: &[Hunk], cwd: &Path) -> Result<(), String> {
    for hunk in hunks {
        sandbox.check_visible(cwd, Path::new(hunk.path()))?;
        if let Hunk::Update {
            move_path: Some(dest),
            ..
        } = hunk
        {
            sandbox.check_visible(cwd, Path::new(dest))?;
        }
    }
    Ok(())
}

/// The model's answer for a patch result.
pub fn patch_outcome(
    result: PatchResult,
    duration: Duration,
    layout: Layout,
    policy: TruncationPolicy,
) -> ToolOutcome {
    let (body, exit_code) = match result {
        PatchResult::Refused { text } => return ToolOutcome::failure(text),
        PatchResult::Denied { text } => {
            return ToolOutcome {
                sandbox_denied: true,
                ..ToolOutcome::failure(text)
            };
        }
        PatchResult::Applied { summary } => (summary, 0),
        // Codex's apply_patch process prints the error and exits 1.
        PatchResult::Failed { message } => (format!("{message}\n"), 1),
    };
    match layout.render(&body, exit_code, duration, policy) {
        Ok(text) => ToolOutcome {
            success: exit_code == 0,
            ..ToolOutcome::success(text)
        },
        Err(err) => ToolOutcome::failure(format!("execution error: {err}")),
    }
}
