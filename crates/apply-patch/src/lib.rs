//! apply_patch, Codex's file-editing format (Codex: `codex-rs/apply-patch`),
//! shared by the workflow (which must recognise a patch arriving through a
//! shell tool to put it to the patch decision), the tool-runner (which
//! applies it under the call's sandbox) and the `apply-patch` command:
//!
//! * [`parser`] turns the text into hunks;
//! * [`seek`] finds a chunk's lines in a file's text (the four matching
//!   passes);
//! * [`invocation`] recognises `apply_patch` run through a shell;
//! * [`apply`] verifies every hunk against the files, then writes;
//!   [`apply_patch`] does both for a patch text, with Codex's texts.
//!
//! The first three are pure; [`apply`] resolves every path through a
//! [`keel_paths::Workspace`].

pub mod apply;
pub mod invocation;
pub mod parser;
pub mod seek;

use std::path::{Path, PathBuf};

use keel_paths::Workspace;

pub use invocation::{IMPLICIT_INVOCATION, Invocation, classify};
pub use parser::{Chunk, Hunk, ParseError, parse_patch};

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

/// Parses, verifies and applies `patch` in `cwd` (canonical), inside
/// `workspace`, with no sandbox (the `apply-patch` command).
pub fn apply_patch(patch: &str, cwd: &Path, workspace: &Workspace) -> PatchResult {
    let hunks = match parser::parse_patch(patch) {
        Ok(hunks) => hunks,
        Err(err) => return verification_failed(err),
    };
    let changes = match verify(&hunks, cwd, workspace, &[]) {
        Ok(changes) => changes,
        Err(refused) => return refused,
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

pub fn verification_failed(err: impl std::fmt::Display) -> PatchResult {
    PatchResult::Refused {
        text: format!("apply_patch verification failed: {err}"),
    }
}
