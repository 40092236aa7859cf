//! apply_patch (Codex: `codex-rs/apply-patch/src/`) for the `apply_patch`
//! tool and patches arriving through shell tools: the format, verifying and
//! writing come from the keel-apply-patch crate; the tool-runner adds the
//! call's sandbox ([`apply_hunks`]).

pub use keel_apply_patch::{
    PatchResult, apply, apply_patch, invocation, parser, seek, verification_failed, verify,
};

use std::path::Path;

use crate::sandbox::CallSandbox;
use keel_paths::Workspace;

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
