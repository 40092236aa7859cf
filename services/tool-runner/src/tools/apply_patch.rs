//! The `apply_patch` tool (Codex: `codex-rs/core/src/tools/handlers/apply_patch.rs`): the freeform custom tool (raw
//! patch text) and the JSON function (`{"input": …}`, alias `patch`), plus
//! patches intercepted from shell tools. Success is reported in the exec
//! layout of the tool that carried it — freeform for the custom tool and
//! `shell_command`, structured for the JSON tool and `shell` — as Codex runs
//! apply_patch as a command; refusals are plain text.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{ToolContext, ToolOutcome, parse_arguments};
use crate::format::{
    FormatError, TruncationPolicy, freeform_shell_output, structured_shell_output,
};
use crate::patch::apply::{Affected, Change, execute};
use crate::patch::parser::{Hunk, parse_patch};
use crate::patch::{PatchResult, verify};
use crate::sandbox::job::{ConfinedJob, Job};
use crate::sandbox::{CallSandbox, Confinement};
use keel_paths::Workspace;

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
    verify(&hunks, cwd, workspace, sandbox.hidden_from_reads())
        .map_err(|refused| refused.text().to_string())
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
    // Verification reads every file the patch touches: off the async
    // threads.
    let plan_cwd = cwd.clone();
    let planned =
        tokio::task::spawn_blocking(move || plan(&hunks, &plan_cwd, &workspace, &sandbox)).await;
    let changes = match planned {
        Ok(Ok(changes)) => changes,
        Ok(Err(result)) => return patch_outcome(result, start.elapsed(), layout, ctx.policy),
        Err(err) => return ToolOutcome::failure(format!("execution error: {err}")),
    };
    // The writes happen confined: under the call's sandbox, or — for an
    // unsandboxed (approved) patch — with exactly the directories it
    // writes writable, so that a symlink a background command swaps in
    // after the checks cannot send a write elsewhere.
    let job = ApplyPatchJob { changes };
    let written = match write_confinement(ctx, &job.changes) {
        Some(confinement) => ctx
            .executor
            .run_job("apply_patch", job, &cwd, &confinement)
            .await
            .map_err(|err| format!("execution error: {err}")),
        None => tokio::task::spawn_blocking(move || job.run())
            .await
            .map_err(|err| format!("execution error: {err}")),
    };
    let result = match written {
        Ok(Ok(affected)) => PatchResult::Applied {
            summary: affected.summary(),
        },
        Ok(Err(message)) => PatchResult::Failed { message },
        Err(text) => return ToolOutcome::failure(text),
    };
    patch_outcome(result, start.elapsed(), layout, ctx.policy)
}

/// Verifies the hunks and checks every path they write against the
/// sandbox; `Err` is the refusal. Nothing is written.
fn plan(
    hunks: &[Hunk],
    cwd: &Path,
    workspace: &Workspace,
    sandbox: &CallSandbox,
) -> Result<Vec<Change>, PatchResult> {
    // The hidden-path check above was made on the paths; verification
    // reads the files, which may have been swapped for links since.
    let changes = verify(hunks, cwd, workspace, sandbox.hidden_from_reads())?;
    // After verification, as Codex's sandboxed apply_patch process would
    // fail only when it writes.
    for change in &changes {
        for path in change.written_paths() {
            sandbox
                .check_write(cwd, path)
                .map_err(|text| PatchResult::Denied { text })?;
        }
    }
    Ok(changes)
}

/// Where a patch's writes are confined: the call's confinement when it is
/// sandboxed; else, when the tool-runner has a helper, the directories the
/// patch writes (the nearest existing one for each path); else nowhere
/// (the writes happen in the tool-runner, as in tests without a helper).
fn write_confinement(ctx: &ToolContext<'_>, changes: &[Change]) -> Option<Confinement> {
    if let Some(confinement) = ctx.sandbox.confinement() {
        return Some(confinement);
    }
    ctx.executor.sandbox_helper()?;
    let mut dirs: Vec<PathBuf> = Vec::new();
    for change in changes {
        for path in change.written_paths() {
            let existing = path
                .parent()
                .into_iter()
                .flat_map(Path::ancestors)
                .find_map(|dir| std::fs::canonicalize(dir).ok());
            if let Some(dir) = existing
                && !dirs.contains(&dir)
            {
                dirs.push(dir);
            }
        }
    }
    Some(ctx.sandbox.confinement_writing(&dirs))
}

/// Writes verified changes (inside the confined helper).
#[derive(Debug, Serialize, Deserialize)]
pub struct ApplyPatchJob {
    changes: Vec<Change>,
}

impl ConfinedJob for ApplyPatchJob {
    /// What was written, or Codex's text for where writing stopped.
    type Output = Result<Affected, String>;

    fn run(self) -> Self::Output {
        execute(&self.changes).map_err(|err| err.to_string())
    }

    fn into_job(self) -> Job {
        Job::ApplyPatch(self)
    }
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
