//! apply_patch: Codex's file-editing format (codex-compat §6), shared by the
//! `apply_patch` tool, patches arriving through shell tools, and the
//! `keel-tool-runner apply-patch` command line.
//!
//! * [`parser`] turns the text into hunks;
//! * [`seek`] finds a chunk's lines in a file (the four matching passes);
//! * [`apply`] verifies every hunk, then writes;
//! * [`invocation`] recognises `apply_patch` run through a shell.

pub mod apply;
pub mod invocation;
pub mod parser;
pub mod seek;

use std::path::Path;

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
}

/// Parses, verifies and applies `patch` in `cwd` (canonical).
pub fn apply_patch(patch: &str, cwd: &Path, workspace: &Workspace) -> PatchResult {
    let hunks = match parser::parse_patch(patch) {
        Ok(hunks) => hunks,
        Err(err) => return verification_failed(err),
    };
    apply_hunks(&hunks, cwd, workspace)
}

/// Verifies and applies already parsed hunks.
pub fn apply_hunks(hunks: &[parser::Hunk], cwd: &Path, workspace: &Workspace) -> PatchResult {
    if hunks.is_empty() {
        return PatchResult::Refused {
            text: "patch rejected: empty patch".to_string(),
        };
    }
    let changes = match apply::plan(hunks, cwd, workspace) {
        Ok(changes) => changes,
        // Outside the workspace is a refusal, like Codex's safety check,
        // not a malformed patch.
        Err(apply::VerifyError::Workspace(err)) => {
            return PatchResult::Refused {
                text: format!("patch rejected: {err}"),
            };
        }
        Err(err) => return verification_failed(err),
    };
    match apply::execute(&changes) {
        Ok(affected) => PatchResult::Applied {
            summary: affected.summary(),
        },
        Err(err) => PatchResult::Failed {
            message: err.to_string(),
        },
    }
}

fn verification_failed(err: impl std::fmt::Display) -> PatchResult {
    PatchResult::Refused {
        text: format!("apply_patch verification failed: {err}"),
    }
}
