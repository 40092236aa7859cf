//! ReviewPatch: what an apply_patch call would change, per file, for a
//! person (or the workflow's patch-safety rule, Codex's `codex-rs/core/src/safety.rs`) to decide
//! on before anything is written. It parses and verifies exactly as RunTool
//! does (same workspace checks, same error texts), then describes each
//! change: an added file's content, a deleted file's current content, an
//! update's unified diff (computed from the in-memory result of applying
//! its chunks) and move destination.

use std::io::Read as _;
use std::path::PathBuf;

use keel_proto::v1::file_change::Kind;
use keel_proto::v1::{
    AddFile, DeleteFile, FileChange, ReviewPatchRequest, ReviewPatchResponse, UpdateFile,
};
use similar::TextDiff;
use tonic::Status;

use super::{DISPLAY_LIMIT_BYTES, ToolRunner, checked_dir};
use crate::format::cut_at_char_boundary;
use crate::patch::apply::{Change, open_original};
use crate::tools::apply_patch::review;

/// Context lines around each change in an update's diff (Codex's).
const DIFF_CONTEXT_LINES: usize = 1;

impl ToolRunner {
    pub(super) async fn review(
        &self,
        req: ReviewPatchRequest,
    ) -> Result<ReviewPatchResponse, Status> {
        let inner = &self.inner;
        let cwd = checked_dir(&inner.workspace, &inner.default_cwd, "cwd", &req.cwd, true)?;
        let policy = self.sandbox_policy(req.sandbox.as_ref())?;
        let sandbox = self.call_sandbox(policy, &cwd);
        let writable_roots = sandbox.roots().iter().map(|root| root.to_proto()).collect();
        let workspace = inner.workspace.clone();
        let review_cwd = cwd.clone();
        // Reads every file the patch touches: off the async threads. Under a
        // sandboxed policy nothing inside a hidden path is read or shown.
        let reviewed = tokio::task::spawn_blocking(move || {
            review(
                &req.arguments,
                req.custom,
                &review_cwd,
                &workspace,
                &sandbox,
            )
            .map(|changes| {
                changes
                    .iter()
                    .map(|change| file_change(change, sandbox.hidden_from_reads()))
                    .collect::<Vec<_>>()
            })
        })
        .await
        .map_err(|err| super::errors::internal(format!("cannot review the patch: {err}")))?;
        let (changes, error) = match reviewed {
            Ok(changes) => (changes, String::new()),
            Err(text) => (Vec::new(), text),
        };
        Ok(ReviewPatchResponse {
            cwd: cwd.to_string_lossy().into_owned(),
            changes,
            error,
            writable_roots,
            platform_sandbox_available: inner.sandbox.status.filesystem_enforced,
        })
    }
}

/// `change` as shown to a person; a file to delete shows its content,
/// read as verification reads (nothing inside `hidden`).
fn file_change(change: &Change, hidden: &[PathBuf]) -> FileChange {
    let (path, kind) = match change {
        Change::Add { path, contents, .. } => {
            let (content, truncated) = cut(contents);
            (path, Kind::Add(AddFile { content, truncated }))
        }
        Change::Delete { path, .. } => {
            // Verified to exist; a file that cannot be read shows empty.
            let mut bytes = Vec::new();
            if open_original(path, hidden)
                .and_then(|mut file| file.read_to_end(&mut bytes))
                .is_err()
            {
                bytes.clear();
            }
            let (content, truncated) = cut(&String::from_utf8_lossy(&bytes));
            (path, Kind::Delete(DeleteFile { content, truncated }))
        }
        Change::Update {
            path,
            move_to,
            original,
            contents,
            ..
        } => {
            let diff = TextDiff::from_lines(original.as_str(), contents.as_str())
                .unified_diff()
                .context_radius(DIFF_CONTEXT_LINES)
                .to_string();
            let (unified_diff, truncated) = cut(&diff);
            let move_path = move_to
                .as_ref()
                .map(|dest| dest.to_string_lossy().into_owned())
                .unwrap_or_default();
            (
                path,
                Kind::Update(UpdateFile {
                    unified_diff,
                    move_path,
                    truncated,
                }),
            )
        }
    };
    FileChange {
        path: path.to_string_lossy().into_owned(),
        kind: Some(kind),
    }
}

/// `text` cut to the display limit at a char boundary, and whether it was.
fn cut(text: &str) -> (String, bool) {
    let kept = cut_at_char_boundary(text, DISPLAY_LIMIT_BYTES);
    (kept.to_string(), kept.len() < text.len())
}
