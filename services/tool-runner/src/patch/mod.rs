//! apply_patch: Codex's file-editing format (Codex: `codex-rs/apply-patch/src/`), shared by the
//! `apply_patch` tool, patches arriving through shell tools, and the
//! `keel-tool-runner apply-patch` command line.
//!
//! * [`parser`], [`seek`] and [`invocation`] are the pure parts, from the
//!   `keel-apply-patch` crate (text to hunks, line matching, recognising
//!   `apply_patch` run through a shell);
//! * [`apply`] verifies every hunk against the files, then writes.

pub mod apply;
pub use keel_apply_patch::{invocation, parser, seek};

use std::path::{Path, PathBuf};

use crate::sandbox::CallSandbox;
use crate::workspace::Workspace;

/// How applying a patch ended, with the texts Codex shows the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatchResult {
    /// Every change was written. `summary` is the `Success. Updated the
    /// following files:` text.
    Applied { summary: String },
    /// Nothing was written; `text` is the whole model-visible answer
    /// (`apply_patch verification failed: …` or `patch rejected: …`).
    Refused { text: String },
    /// Writing stopped midway; earlier changes stay. `message` is what
    /// Codex's apply_patch process prints on stderr.
    Failed { message: String },
    /// Nothing was written: the sandbox does not allow writing a path the
    /// patch touches. `text` is the whole model-visible answer.
    Denied { text: String },
}

impl PatchResult {
    /// The text the result carries.
    pub fn text(&self) -> &str {
        match self {
            Self::Applied { summary } => summary,
            Self::Refused { text } | Self::Denied { text } => text,
            Self::Failed { message } => message,
        }
    }
}

/// Parses, verifies and applies `patch` in `cwd` (canonical), with no
/// sandbox (the `apply-patch` command line).
pub fn apply_patch(patch: &str, cwd: &Path, workspace: &Workspace) -> PatchResult {
    let hunks = match parser::parse_patch(patch) {
        Ok(hunks) => hunks,
        Err(err) => return verification_failed(err),
    };
    apply_hunks(&hunks, cwd, workspace, &CallSandbox::unrestricted())
}

/// Verifies and applies already parsed hunks, writing only what `sandbox`
/// allows.
pub fn apply_hunks(
    hunks: &[parser::Hunk],
    cwd: &Path,
    workspace: &Workspace,
    sandbox: &CallSandbox,
) -> PatchResult {
    let changes = match verify(hunks, cwd, workspace, sandbox.hidden_from_reads()) {
        Ok(changes) => changes,
        Err(refused) => return refused,
    };
    // After verification, as Codex's sandboxed apply_patch process would
    // fail only when it writes.
    for change in &changes {
        for path in change.written_paths() {
            if let Err(text) = sandbox.check_write(cwd, path) {
                return PatchResult::Denied { text };
            }
        }
    }
    match apply::execute(&changes) {
        Ok(affected) => PatchResult::Applied {
            summary: affected.summary(),
        },
        Err(err) => PatchResult::Failed {
            message: err.to_string(),
        },
    }
}

/// Checks parsed hunks against the workspace and the files without writing
/// anything; `Err` is the refusal ([`PatchResult::Refused`]) the model
/// would get. ReviewPatch shares it with the tool. No file inside `hidden`
/// is read ([`apply::read_original`]).
pub fn verify(
    hunks: &[parser::Hunk],
    cwd: &Path,
    workspace: &Workspace,
    hidden: &[PathBuf],
) -> Result<Vec<apply::Change>, PatchResult> {
    if hunks.is_empty() {
        return Err(PatchResult::Refused {
            text: "patch rejected: empty patch".to_string(),
        });
    }
    match apply::plan(hunks, cwd, workspace, hidden) {
        Ok(changes) => Ok(changes),
        // Outside the workspace is a refusal, like Codex's safety check,
        // not a malformed patch.
        Err(apply::VerifyError::Workspace(err)) => Err(PatchResult::Refused {
            text: format!("patch rejected: {err}"),
        }),
        Err(err) => Err(verification_failed(err)),
    }
}

pub(crate) fn verification_failed(err: impl std::fmt::Display) -> PatchResult {
    PatchResult::Refused {
        text: format!("apply_patch verification failed: {err}"),
    }
}
