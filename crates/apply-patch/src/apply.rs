//! Turns parsed hunks into file changes (Codex: `codex-rs/apply-patch/src/`), in two
//! steps, as Codex's tool path does:
//!
//! 1. [`plan`] verifies the whole patch before anything is written: every
//!    path is checked against the workspace, every file to update or delete
//!    is read and every chunk located. Hunks are simulated in order over an
//!    in-memory overlay, so a later hunk sees what an earlier one did to the
//!    same file.
//! 2. [`execute`] writes the planned changes one by one. It is not atomic:
//!    if an I/O error stops it, earlier changes stay applied (Codex does the
//!    same, and a rollback could fail for the same reason).

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::{ErrorKind, Read as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use keel_paths::{Workspace, WorkspaceError, opened_path};

use crate::parser::{Chunk, Hunk};
use crate::seek::seek_sequence;

/// Why a patch cannot be applied; nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A path is outside the allowed workspace.
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
    #[error("Failed to read file to update {path}: {source}")]
    ReadForUpdate {
        path: String,
        source: std::io::Error,
    },
    #[error("Failed to delete file {0}")]
    DeleteMissing(String),
    #[error("Failed to delete file {0}: path is a directory")]
    DeleteDirectory(String),
    #[error("Failed to find context '{context}' in {path}")]
    ContextNotFound { context: String, path: String },
    #[error("Failed to find expected lines in {path}:\n{lines}")]
    LinesNotFound { path: String, lines: String },
}

/// Why writing stopped; earlier changes stay applied.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct WriteError {
    /// Codex's text: the failed step and path, without the OS error.
    message: String,
    #[source]
    source: std::io::Error,
}

impl WriteError {
    fn new(message: String, source: std::io::Error) -> Self {
        Self { message, source }
    }
}

/// One verified change, with absolute paths to act on and the patch's own
/// spelling for the summary. Serialisable: a sandboxed call's changes are
/// written by a confined helper (the tool-runner's apply_patch tool).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    Add {
        path: PathBuf,
        shown: String,
        contents: String,
    },
    Delete {
        path: PathBuf,
        shown: String,
    },
    Update {
        path: PathBuf,
        shown: String,
        move_to: Option<PathBuf>,
        /// What the file held before this hunk (for ReviewPatch's diff).
        original: String,
        contents: String,
    },
}

impl Change {
    /// The paths the change writes or removes.
    pub fn written_paths(&self) -> Vec<&Path> {
        match self {
            Self::Add { path, .. } | Self::Delete { path, .. } => vec![path],
            Self::Update { path, move_to, .. } => {
                let mut paths = vec![path.as_path()];
                paths.extend(move_to.as_deref());
                paths
            }
        }
    }
}

/// The files a successful patch touched, as the patch spells them.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Affected {
    pub added: Vec<String>,
    pub modified: Vec<String>,
    pub deleted: Vec<String>,
}

impl Affected {
    /// `Success. Updated the following files:` then `A`, `M` and `D` lines,
    /// each ending in a newline.
    pub fn summary(&self) -> String {
        let mut out = String::from("Success. Updated the following files:\n");
        for (mark, paths) in [
            ("A", &self.added),
            ("M", &self.modified),
            ("D", &self.deleted),
        ] {
            for path in paths {
                out.push_str(&format!("{mark} {path}\n"));
            }
        }
        out
    }
}

/// Verifies `hunks` against the files under `cwd` (relative paths resolve
/// against it; absolute ones are kept) and returns the changes to make.
/// No file inside `hidden` (canonical) is read: see [`read_original`].
pub fn plan(
    hunks: &[Hunk],
    cwd: &Path,
    workspace: &Workspace,
    hidden: &[PathBuf],
) -> Result<Vec<Change>, VerifyError> {
    // What earlier hunks did to a path: Some(contents) or None (deleted).
    let mut overlay: HashMap<PathBuf, Option<String>> = HashMap::new();
    let mut changes = Vec::with_capacity(hunks.len());
    for hunk in hunks {
        let shown = hunk.path().to_string();
        let path = cwd.join(hunk.path());
        // The check resolves symlinks; the change acts on the path as named
        // (deleting a link removes the link, as Codex does).
        workspace.resolve_for_write(cwd, Path::new(hunk.path()))?;
        let display = path.display().to_string();
        match hunk {
            Hunk::Add { contents, .. } => {
                overlay.insert(path.clone(), Some(contents.clone()));
                changes.push(Change::Add {
                    path,
                    shown,
                    contents: contents.clone(),
                });
            }
            Hunk::Delete { .. } => {
                match overlay.get(&path) {
                    Some(Some(_)) => {}
                    Some(None) => return Err(VerifyError::DeleteMissing(display)),
                    None => match std::fs::metadata(&path) {
                        Ok(meta) if meta.is_dir() => {
                            return Err(VerifyError::DeleteDirectory(display));
                        }
                        Ok(_) => {}
                        Err(_) => return Err(VerifyError::DeleteMissing(display)),
                    },
                }
                overlay.insert(path.clone(), None);
                changes.push(Change::Delete { path, shown });
            }
            Hunk::Update {
                move_path, chunks, ..
            } => {
                let original = match overlay.get(&path) {
                    Some(Some(contents)) => contents.clone(),
                    Some(None) => {
                        return Err(VerifyError::ReadForUpdate {
                            path: display,
                            source: std::io::Error::from(std::io::ErrorKind::NotFound),
                        });
                    }
                    None => read_original(&path, hidden).map_err(|source| {
                        VerifyError::ReadForUpdate {
                            path: display.clone(),
                            source,
                        }
                    })?,
                };
                let contents = updated_contents(&original, chunks, &display)?;
                let move_to = match move_path {
                    Some(dest) => {
                        workspace.resolve_for_write(cwd, Path::new(dest))?;
                        let dest = cwd.join(dest);
                        overlay.insert(path.clone(), None);
                        overlay.insert(dest.clone(), Some(contents.clone()));
                        Some(dest)
                    }
                    None => {
                        overlay.insert(path.clone(), Some(contents.clone()));
                        None
                    }
                };
                changes.push(Change::Update {
                    path,
                    shown,
                    move_to,
                    original,
                    contents,
                });
            }
        }
    }
    Ok(changes)
}

/// The text of the file an update starts from — read by the tool-runner
/// itself, unconfined, from a workspace the model writes to. Whether the
/// file lies in a hidden path is decided on the file opened, not on the
/// path: a check of the path beforehand (the caller's) can be raced by a
/// command that swaps the file for a symlink into a hidden path between
/// the check and the read, and the text read goes into the patch's
/// result. Only a regular file is read (`O_NONBLOCK`: a FIFO is refused,
/// never waited on); a directory fails the read as it always did (EISDIR).
pub fn read_original(path: &Path, hidden: &[PathBuf]) -> std::io::Result<String> {
    let mut text = String::new();
    open_original(path, hidden)?.read_to_string(&mut text)?;
    Ok(text)
}

/// Opens a file of the patch for reading, as [`read_original`] reads it.
pub fn open_original(path: &Path, hidden: &[PathBuf]) -> std::io::Result<std::fs::File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let kind = file.metadata()?.file_type();
    if !(kind.is_file() || kind.is_dir()) {
        return Err(std::io::Error::new(
            ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let real = opened_path(&file)?;
    if hidden.iter().any(|hidden| real.starts_with(hidden)) {
        return Err(std::io::Error::new(
            ErrorKind::PermissionDenied,
            "it leads into a path the sandbox hides",
        ));
    }
    Ok(file)
}

/// Writes the changes in order. Stops at the first failure, leaving what
/// was already written.
pub fn execute(changes: &[Change]) -> Result<Affected, WriteError> {
    let mut affected = Affected::default();
    for change in changes {
        match change {
            Change::Add {
                path,
                shown,
                contents,
            } => {
                create_parent(path)?;
                std::fs::write(path, contents).map_err(|e| {
                    WriteError::new(format!("Failed to write file {}", path.display()), e)
                })?;
                affected.added.push(shown.clone());
            }
            Change::Delete { path, shown } => {
                std::fs::remove_file(path).map_err(|e| {
                    WriteError::new(format!("Failed to delete file {}", path.display()), e)
                })?;
                affected.deleted.push(shown.clone());
            }
            Change::Update {
                path,
                shown,
                move_to,
                contents,
                ..
            } => {
                let target = move_to.as_ref().unwrap_or(path);
                create_parent(target)?;
                std::fs::write(target, contents).map_err(|e| {
                    WriteError::new(format!("Failed to write file {}", target.display()), e)
                })?;
                if move_to.as_ref().is_some_and(|dest| dest != path) {
                    std::fs::remove_file(path).map_err(|e| {
                        WriteError::new(format!("Failed to remove original {}", path.display()), e)
                    })?;
                }
                affected.modified.push(shown.clone());
            }
        }
    }
    Ok(affected)
}

fn create_parent(path: &Path) -> Result<(), WriteError> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => {
            std::fs::create_dir_all(parent).map_err(|e| {
                WriteError::new(
                    format!("Failed to create parent directories for {}", path.display()),
                    e,
                )
            })
        }
        _ => Ok(()),
    }
}

/// Applies `chunks` to `original`. The result always ends with exactly one
/// newline.
pub fn updated_contents(
    original: &str,
    chunks: &[Chunk],
    path: &str,
) -> Result<String, VerifyError> {
    let mut lines: Vec<String> = original.split('\n').map(str::to_string).collect();
    // The empty element after the final newline is not a line.
    if lines.last().is_some_and(String::is_empty) {
        lines.pop();
    }
    let replacements = replacements(&lines, chunks, path)?;
    // Bottom-up, so earlier indices stay valid.
    for (start, old_len, new_lines) in replacements.into_iter().rev() {
        let end = (start + old_len).min(lines.len());
        lines.splice(start..end, new_lines);
    }
    if !lines.last().is_some_and(String::is_empty) {
        lines.push(String::new());
    }
    Ok(lines.join("\n"))
}

/// `(start, old_len, new_lines)` for each chunk, sorted by start.
fn replacements(
    lines: &[String],
    chunks: &[Chunk],
    path: &str,
) -> Result<Vec<(usize, usize, Vec<String>)>, VerifyError> {
    let mut out = Vec::with_capacity(chunks.len());
    let mut index = 0;
    for chunk in chunks {
        if let Some(context) = &chunk.change_context {
            let found = seek_sequence(lines, std::slice::from_ref(context), index, false);
            let Some(at) = found else {
                return Err(VerifyError::ContextNotFound {
                    context: context.clone(),
                    path: path.to_string(),
                });
            };
            index = at + 1;
        }

        if chunk.old_lines.is_empty() {
            // A pure addition goes at the end of the file.
            let at = if lines.last().is_some_and(String::is_empty) {
                lines.len() - 1
            } else {
                lines.len()
            };
            out.push((at, 0, chunk.new_lines.clone()));
            continue;
        }

        let mut pattern: &[String] = &chunk.old_lines;
        let mut new_lines: &[String] = &chunk.new_lines;
        let mut found = seek_sequence(lines, pattern, index, chunk.is_end_of_file);
        // A trailing empty old line stands for the file's final newline,
        // which is not a line here: retry without it.
        if found.is_none() && pattern.last().is_some_and(String::is_empty) {
            pattern = &pattern[..pattern.len() - 1];
            if new_lines.last().is_some_and(String::is_empty) {
                new_lines = &new_lines[..new_lines.len() - 1];
            }
            found = seek_sequence(lines, pattern, index, chunk.is_end_of_file);
        }
        let Some(at) = found else {
            return Err(VerifyError::LinesNotFound {
                path: path.to_string(),
                lines: chunk.old_lines.join("\n"),
            });
        };
        out.push((at, pattern.len(), new_lines.to_vec()));
        index = at + pattern.len();
    }
    out.sort_by_key(|(at, _, _)| *at);
    Ok(out)
}

#[cfg(test)]
mod tests;
