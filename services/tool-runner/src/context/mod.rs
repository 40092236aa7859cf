//! What the model is told about the project before the first turn
//! (Codex: `codex-rs/core/src/agents_md.rs`, `codex-rs/core/src/context/environment_context.rs`): the AGENTS.md instructions, the
//! `<environment_context>` block, and git facts for clients.

pub mod agents_md;
pub mod environment;
pub mod git;

use std::fs::{File, OpenOptions};
use std::io::Read as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

pub use agents_md::{AgentsMdOptions, ProjectDoc, agents_md_message_text, discover};
pub use environment::{EnvironmentFacts, environment_context};
pub use git::{GitInfo, git_info};

/// Everything GetProjectContext returns, for a canonical `cwd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectContext {
    pub doc: Option<ProjectDoc>,
    pub git: GitInfo,
    pub environment_context: String,
}

/// Gathers the project context. Blocking: reads files. Nothing inside
/// `hidden` (canonical: the paths the sandbox masks) is read, whatever
/// link or `.git` file in the project points there.
pub fn gather(
    cwd: &Path,
    options: &AgentsMdOptions,
    facts: &EnvironmentFacts,
    hidden: &[PathBuf],
) -> ProjectContext {
    ProjectContext {
        doc: discover(cwd, options, hidden),
        git: git_info(cwd, hidden),
        environment_context: environment_context(cwd, facts),
    }
}

/// A file of the project opened for reading, and where it really is.
pub(crate) struct Opened {
    pub file: File,
    /// The opened file's path as the kernel names it (canonical).
    pub real_path: PathBuf,
}

/// Opens `path` for reading when it is a regular file outside every
/// `hidden` path. The project is the model's to write, and these reads are
/// the tool-runner's own, unconfined: so the check is made on the file
/// actually opened (`/proc/self/fd/N` names it), not on a path resolved
/// beforehand, which a symlink swapped in meanwhile would redirect.
/// `O_NONBLOCK`: a FIFO is refused, never waited on. With `no_follow`, a
/// final symlink is not followed (ELOOP).
pub(crate) fn open_visible(path: &Path, hidden: &[PathBuf], no_follow: bool) -> Option<Opened> {
    let flags = if no_follow {
        libc::O_NOFOLLOW | libc::O_NONBLOCK
    } else {
        libc::O_NONBLOCK
    };
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let real_path = keel_paths::opened_path(&file).ok()?;
    if let Some(inside) = hidden.iter().find(|hidden| real_path.starts_with(hidden)) {
        tracing::warn!(
            path = %path.display(),
            target = %real_path.display(),
            hidden = %inside.display(),
            "a project file leads into a hidden path; not read"
        );
        return None;
    }
    Some(Opened { file, real_path })
}

/// The text of a small project file (a git `HEAD`, ref or config), read
/// as [`open_visible`] allows and cut at `max_bytes` (a planted file of
/// any size costs no more).
pub(crate) fn read_visible(path: &Path, hidden: &[PathBuf], max_bytes: u64) -> Option<String> {
    let opened = open_visible(path, hidden, false)?;
    let mut data = Vec::new();
    opened.file.take(max_bytes).read_to_end(&mut data).ok()?;
    String::from_utf8(data).ok()
}
