//! Patch safety (Codex: `codex-rs/core/src/safety.rs`, `assess_patch_safety`).

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{ApprovalKey, ApprovalPolicy, SandboxMode};

const READ_ONLY_REASON: &str =
    "writing is blocked by read-only sandbox; rejected by user approval settings";
const OUTSIDE_REASON: &str = "writing outside of the project; rejected by user approval settings";

/// One file a patch touches; paths are as written in the patch (relative
/// paths resolve against the cwd).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PatchChange {
    /// `*** Add File: path`
    Add {
        /// The new file.
        path: String,
    },
    /// `*** Delete File: path`
    Delete {
        /// The deleted file.
        path: String,
    },
    /// `*** Update File: path` with an optional `*** Move to:`.
    Update {
        /// The updated file.
        path: String,
        /// Where it moves, if it does.
        move_path: Option<String>,
    },
}

impl PatchChange {
    fn path(&self) -> &str {
        match self {
            Self::Add { path } | Self::Delete { path } | Self::Update { path, .. } => path,
        }
    }

    /// Every path written: the file, and a move's destination.
    fn written(&self) -> impl Iterator<Item = &str> {
        let dest = match self {
            Self::Update { move_path, .. } => move_path.as_deref(),
            _ => None,
        };
        std::iter::once(self.path()).chain(dest)
    }
}

/// A directory commands and patches may write under, minus protected
/// subpaths. Building these needs the filesystem (does `/tmp` exist, is
/// `.git` a file), so the caller does it; [`WritableRoot::protected`] applies
/// Codex's protection rules to the facts it found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WritableRoot {
    /// Absolute.
    pub root: String,
    /// Absolute paths under `root` that stay read-only.
    pub read_only_subpaths: Vec<String>,
}

/// What `<root>/.git` is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum GitEntry {
    /// No `.git`.
    #[default]
    Missing,
    /// A `.git` directory.
    Dir,
    /// A `.git` file (worktree, submodule).
    File {
        /// The gitdir it points to (absolute, or relative to the root).
        gitdir: Option<String>,
    },
}

/// Facts about a writable root found on disk by the caller.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFacts {
    /// What `<root>/.git` is.
    pub git: GitEntry,
    /// `<root>/.agents` is a directory.
    pub agents_dir: bool,
    /// `<root>/.codex` is a directory.
    pub codex_dir: bool,
}

impl WritableRoot {
    /// A root with Codex's protected subpaths (Codex: `codex-rs/protocol/src/protocol.rs`): `.git` (and the gitdir
    /// a `.git` file points to), `.agents` if present, and `.codex` if
    /// present — always for the cwd's root.
    pub fn protected(root: &str, facts: &RootFacts, is_cwd: bool) -> Self {
        let base = Path::new(root);
        let mut read_only = Vec::new();
        if let GitEntry::File {
            gitdir: Some(gitdir),
        } = &facts.git
        {
            read_only.push(base.join(gitdir));
        }
        if facts.git != GitEntry::Missing {
            read_only.push(base.join(".git"));
        }
        if facts.agents_dir {
            read_only.push(base.join(".agents"));
        }
        if facts.codex_dir || is_cwd {
            read_only.push(base.join(".codex"));
        }
        Self {
            root: root.to_owned(),
            read_only_subpaths: read_only
                .iter()
                .map(|p| normalize(p).to_string_lossy().into_owned())
                .collect(),
        }
    }

    /// Whether the absolute, normalised `path` may be written.
    fn allows(&self, path: &Path) -> bool {
        path.starts_with(normalize(Path::new(&self.root)))
            && !self
                .read_only_subpaths
                .iter()
                .any(|sub| path.starts_with(normalize(Path::new(sub))))
    }
}

/// Everything [`decide_patch`] needs.
#[derive(Clone, Copy, Debug)]
pub struct PatchDecisionInput<'a> {
    /// The turn's approval policy.
    pub approval_policy: ApprovalPolicy,
    /// The turn's sandbox mode.
    pub sandbox_mode: SandboxMode,
    /// Absolute.
    pub cwd: &'a str,
    /// Used under `workspace-write` (the cwd's root included).
    pub writable_roots: &'a [WritableRoot],
    /// The files the patch touches.
    pub changes: &'a [PatchChange],
    /// A platform sandbox can be set up to apply the patch.
    pub platform_sandbox_available: bool,
    /// Keys approved with `approved_for_session` earlier in the session.
    pub approved_for_session: &'a BTreeSet<ApprovalKey>,
}

/// What to do with an `apply_patch` call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PatchDecision {
    /// Apply without asking.
    Apply {
        /// Apply under the platform sandbox.
        sandboxed: bool,
        /// Every path was approved for the session before: a sandbox denial
        /// re-runs without asking.
        already_approved: bool,
    },
    /// Ask (`apply_patch_approval_request`). Once approved the patch is
    /// applied even outside the writable roots; on `approved_for_session`
    /// remember every key.
    Ask {
        /// One per changed file.
        approval_keys: Vec<ApprovalKey>,
    },
    /// Refused.
    Reject {
        /// Why, e.g. `empty patch`.
        reason: String,
        /// The tool output for the model: `patch rejected: <reason>`.
        text: String,
    },
}

/// The session keys of a patch: one per changed file, absolute and
/// normalised, sorted.
pub fn patch_approval_keys(cwd: &str, changes: &[PatchChange]) -> Vec<ApprovalKey> {
    let paths: BTreeSet<String> = changes
        .iter()
        .map(|change| resolve(cwd, change.path()).to_string_lossy().into_owned())
        .collect();
    paths
        .into_iter()
        .map(|path| ApprovalKey::PatchPath { path })
        .collect()
}

/// Decides an `apply_patch` call as Codex's `codex-rs/core/src/safety.rs` does. Pure: writability is judged
/// lexically against the roots the caller supplies.
pub fn decide_patch(input: &PatchDecisionInput<'_>) -> PatchDecision {
    if input.changes.is_empty() {
        return reject("empty patch");
    }
    let policy = input.approval_policy;
    let mode = input.sandbox_mode;
    if policy == ApprovalPolicy::Untrusted {
        return ask(input);
    }
    let all_writable = match mode {
        SandboxMode::DangerFullAccess => true,
        SandboxMode::ReadOnly => false,
        SandboxMode::WorkspaceWrite => {
            input
                .changes
                .iter()
                .flat_map(PatchChange::written)
                .all(|path| {
                    let path = resolve(input.cwd, path);
                    input.writable_roots.iter().any(|root| root.allows(&path))
                })
        }
    };
    let cannot_ask = policy == ApprovalPolicy::Never;
    if all_writable || policy == ApprovalPolicy::OnFailure {
        if mode == SandboxMode::DangerFullAccess {
            return PatchDecision::Apply {
                sandboxed: false,
                already_approved: false,
            };
        }
        if input.platform_sandbox_available {
            return PatchDecision::Apply {
                sandboxed: true,
                already_approved: false,
            };
        }
    }
    if cannot_ask {
        return reject(if mode == SandboxMode::ReadOnly {
            READ_ONLY_REASON
        } else {
            OUTSIDE_REASON
        });
    }
    ask(input)
}

fn ask(input: &PatchDecisionInput<'_>) -> PatchDecision {
    let approval_keys = patch_approval_keys(input.cwd, input.changes);
    if approval_keys
        .iter()
        .all(|key| input.approved_for_session.contains(key))
    {
        return PatchDecision::Apply {
            sandboxed: input.sandbox_mode.is_restricted(),
            already_approved: true,
        };
    }
    PatchDecision::Ask { approval_keys }
}

fn reject(reason: &str) -> PatchDecision {
    PatchDecision::Reject {
        reason: reason.to_owned(),
        text: format!("patch rejected: {reason}"),
    }
}

fn resolve(cwd: &str, path: &str) -> PathBuf {
    normalize(&Path::new(cwd).join(path))
}

/// Removes `.` and resolves `..` without touching the filesystem.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}
