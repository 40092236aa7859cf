//! The sandbox: what commands and file tools may touch (Codex: `codex-rs/protocol/src/protocol.rs`).
//!
//! * [`SandboxPolicy`] is a call's mode and options, from the request or the
//!   tool-runner's `--default-sandbox`;
//! * [`WritableRoot`]s are what workspace-write may write: the cwd, `/tmp`,
//!   `$TMPDIR` and the configured roots, each minus its protected `.git`,
//!   `.agents` and `.codex` — one computation for the commands' sandbox, the
//!   file tools' checks and ReviewPatch;
//! * hidden paths ([`SandboxSettings::hidden_paths`]: the tool-runner's
//!   state, a `file://` blob store, Codex's home, `--hide-path`s) are masked
//!   for everything sandboxed, and refused to sandboxed patches;
//! * [`CallSandbox`] is one call's resolved sandbox: the write check the
//!   tool-runner applies to its own file writes (apply_patch), and the
//!   [`Confinement`] that commands and the reading file tools run under;
//! * [`helper`] is the child side: `keel-tool-runner sandbox-exec`, started
//!   with a clean environment, enters a PID namespace and forks
//!   ([`init`]); PID 1 builds the command's view of the filesystem
//!   ([`mounts`]: protected paths read-only, hidden paths masked, a
//!   minimal `/dev`, its own `/proc`), applies Landlock, drops capabilities
//!   ([`caps`]) and installs seccomp ([`seccomp`]), then runs the command —
//!   or a [`job`] of tool code. A re-exec helper rather than a `pre_exec`
//!   hook, because the workspace denies `unsafe` (Codex does the same);
//! * [`status`] probes at startup what this host enforces ([`probe`]);
//!   a restricted call it cannot fully enforce is refused unless the
//!   operator passed `--insecure-partial-sandbox`;
//! * [`denial`] is Codex's rule for telling a sandbox denial from an
//!   ordinary failure.
//!
//! danger-full-access runs commands directly, with no helper — unless the
//! operator set resource limits ([`limits`]), which the helper
//! applies to every command, confined or not.

mod caps;
pub mod denial;
pub mod helper;
mod init;
pub mod limits;
mod mounts;
mod probe;
mod seccomp;
pub mod status;
/// Which directories may be touched (the keel-paths crate).
pub use keel_paths as workspace;

use std::path::{Path, PathBuf};

use keel_proto::v1 as proto;
use serde::{Deserialize, Serialize};

use crate::workspace::Workspace;

/// The names protected inside every writable root.
const GIT: &str = ".git";
const AGENTS: &str = ".agents";
const CODEX: &str = ".codex";
/// The child environment variable Codex sets when the network is off.
pub const NETWORK_DISABLED_ENV: &str = "CODEX_SANDBOX_NETWORK_DISABLED";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SandboxError {
    #[error("unknown sandbox mode {0}")]
    UnknownMode(i32),
    #[error("writable root {0:?} must be an absolute path")]
    RelativeRoot(String),
}

/// Codex's sandbox modes (external-sandbox is not offered).
/// The modes, with Codex's spellings: the same type the workflow's
/// decisions use.
pub use keel_tool_model::SandboxMode;

/// A call's sandbox (Codex's `SandboxPolicy`). The workspace-write options
/// mean nothing under the other modes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxPolicy {
    pub mode: SandboxMode,
    /// Absolute directories writable besides the cwd and temp directories.
    pub writable_roots: Vec<PathBuf>,
    pub network_access: bool,
    pub exclude_tmpdir_env_var: bool,
    pub exclude_slash_tmp: bool,
}

impl SandboxPolicy {
    /// `mode` with the default options.
    pub fn new(mode: SandboxMode) -> Self {
        Self {
            mode,
            writable_roots: Vec::new(),
            network_access: false,
            exclude_tmpdir_env_var: false,
            exclude_slash_tmp: false,
        }
    }

    /// The request's policy; `default` when it sets none (or mode
    /// UNSPECIFIED, which means "keep the setting in force").
    pub fn from_proto(
        policy: Option<&proto::SandboxPolicy>,
        default: &SandboxPolicy,
    ) -> Result<Self, SandboxError> {
        let Some(policy) = policy else {
            return Ok(default.clone());
        };
        let mode = match proto::SandboxMode::try_from(policy.mode) {
            Ok(proto::SandboxMode::Unspecified) => return Ok(default.clone()),
            Ok(proto::SandboxMode::ReadOnly) => SandboxMode::ReadOnly,
            Ok(proto::SandboxMode::WorkspaceWrite) => SandboxMode::WorkspaceWrite,
            Ok(proto::SandboxMode::DangerFullAccess) => SandboxMode::DangerFullAccess,
            Err(_) => return Err(SandboxError::UnknownMode(policy.mode)),
        };
        let writable_roots = policy
            .writable_roots
            .iter()
            .map(|root| {
                let path = PathBuf::from(root);
                if path.is_absolute() {
                    Ok(path)
                } else {
                    Err(SandboxError::RelativeRoot(root.clone()))
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            mode,
            writable_roots,
            network_access: policy.network_access,
            exclude_tmpdir_env_var: policy.exclude_tmpdir_env_var,
            exclude_slash_tmp: policy.exclude_slash_tmp,
        })
    }

    /// Commands run in the platform sandbox (everything but
    /// danger-full-access restricts the filesystem).
    pub fn is_sandboxed(&self) -> bool {
        self.mode != SandboxMode::DangerFullAccess
    }

    pub fn restricts_network(&self) -> bool {
        match self.mode {
            SandboxMode::ReadOnly => true,
            SandboxMode::WorkspaceWrite => !self.network_access,
            SandboxMode::DangerFullAccess => false,
        }
    }

    /// What workspace-write may write, canonical, each with its protected
    /// subpaths (Codex's `get_writable_roots_with_cwd`); empty under the
    /// other modes. Roots that do not exist are left out: nothing can be
    /// written under them, and the sandbox can only name what exists.
    pub fn writable_roots(&self, cwd: &Path, tmpdir: Option<&Path>) -> Vec<WritableRoot> {
        if self.mode != SandboxMode::WorkspaceWrite {
            return Vec::new();
        }
        let mut candidates: Vec<(PathBuf, bool)> = self
            .writable_roots
            .iter()
            .map(|root| (root.clone(), false))
            .collect();
        candidates.push((cwd.to_path_buf(), true));
        if !self.exclude_slash_tmp {
            candidates.push((PathBuf::from("/tmp"), false));
        }
        if !self.exclude_tmpdir_env_var
            && let Some(tmpdir) = tmpdir.filter(|dir| dir.is_absolute())
        {
            candidates.push((tmpdir.to_path_buf(), false));
        }
        let mut roots: Vec<WritableRoot> = Vec::new();
        for (root, is_cwd) in candidates {
            let Ok(root) = std::fs::canonicalize(&root) else {
                continue;
            };
            match roots.iter_mut().find(|known| known.root == root) {
                // The cwd's extra protection wins over a plain duplicate.
                Some(known) if is_cwd => *known = WritableRoot::new(root, true),
                Some(_) => {}
                None => roots.push(WritableRoot::new(root, is_cwd)),
            }
        }
        roots
    }
}

/// A directory that may be written, minus protected subpaths.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WritableRoot {
    /// Canonical.
    pub root: PathBuf,
    /// Absolute; canonical where they exist.
    pub read_only_subpaths: Vec<PathBuf>,
}

impl WritableRoot {
    /// `root` (canonical) with Codex's protected subpaths: `.git` (and the
    /// gitdir a `.git` file points to), `.agents` if present, `.codex` if
    /// present — for the cwd even when missing, so the agent cannot create
    /// its own config.
    pub(crate) fn new(root: PathBuf, is_cwd: bool) -> Self {
        let mut read_only = Vec::new();
        let git = root.join(GIT);
        if git.is_dir() {
            read_only.push(canonical_or(git));
        } else if git.is_file() {
            if let Some(gitdir) = gitdir_of(&git, &root) {
                read_only.push(gitdir);
            }
            read_only.push(canonical_or(git));
        }
        let agents = root.join(AGENTS);
        if agents.exists() {
            read_only.push(canonical_or(agents));
        }
        let codex = root.join(CODEX);
        if codex.exists() || is_cwd {
            read_only.push(canonical_or(codex));
        }
        Self {
            root,
            read_only_subpaths: read_only,
        }
    }

    /// Whether the canonical `path` may be written under this root.
    pub fn allows(&self, path: &Path) -> bool {
        path.starts_with(&self.root)
            && !self
                .read_only_subpaths
                .iter()
                .any(|sub| path.starts_with(sub))
    }

    pub fn to_proto(&self) -> proto::WritableRoot {
        proto::WritableRoot {
            root: self.root.to_string_lossy().into_owned(),
            read_only_subpaths: self
                .read_only_subpaths
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect(),
        }
    }
}

fn canonical_or(path: PathBuf) -> PathBuf {
    std::fs::canonicalize(&path).unwrap_or(path)
}

/// The directory a `.git` file (`gitdir: PATH`, of worktrees and
/// submodules) points to, relative to the root when relative.
fn gitdir_of(git_file: &Path, root: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(git_file).ok()?;
    let target = text.lines().find_map(|line| line.strip_prefix("gitdir:"))?;
    let target = root.join(target.trim());
    std::fs::canonicalize(target).ok()
}

/// How the tool-runner applies sandboxes.
#[derive(Debug, Clone)]
pub struct SandboxSettings {
    /// For calls that set none (`--default-sandbox`).
    pub default_policy: SandboxPolicy,
    /// Run restricted calls with whatever this host enforces instead of
    /// refusing them (`--insecure-partial-sandbox`). Off by default: a
    /// restricted call is refused unless every restriction of its policy is
    /// enforced here.
    pub allow_partial: bool,
    /// What sandboxed commands and file tools can neither read nor write
    /// (absolute; [`SandboxSettings::hidden_paths`] tells why).
    pub hidden_paths: Vec<PathBuf>,
    /// What this host enforces.
    pub status: status::SandboxStatus,
}

impl SandboxSettings {
    /// No sandbox: calls without a policy run with full access, and a
    /// restricted call is refused. For tests of everything but the sandbox.
    pub fn disabled() -> Self {
        Self {
            default_policy: SandboxPolicy::new(SandboxMode::DangerFullAccess),
            allow_partial: false,
            hidden_paths: Vec::new(),
            status: status::SandboxStatus::unavailable("no sandbox helper is configured"),
        }
    }

    /// Why a call under `policy` must not run here, if it must not: the
    /// host cannot enforce everything the policy restricts, and the
    /// operator did not accept a partial sandbox. The text is the model's
    /// (and the user's) answer.
    pub fn refusal(&self, policy: &SandboxPolicy) -> Option<String> {
        (!self.allow_partial && policy.is_sandboxed() && !self.status.enforces(policy)).then(|| {
            format!(
                "the {} sandbox cannot be enforced on this host ({})",
                policy.mode,
                self.status.missing_for(policy)
            )
        })
    }

    /// Whether confinement failures must stop a command (the default)
    /// rather than let it run with what took.
    pub fn require(&self) -> bool {
        !self.allow_partial
    }

    /// The paths that exist now among the hidden ones, canonical: what a
    /// call's confinement masks.
    pub fn existing_hidden_paths(&self) -> Vec<PathBuf> {
        existing_canonical(&self.hidden_paths)
    }

    /// Why `cwd` (canonical) cannot be a session's working directory: it
    /// lies inside a hidden path, so its own commands could not see it.
    pub fn check_cwd(&self, cwd: &Path) -> Result<(), String> {
        match self
            .existing_hidden_paths()
            .into_iter()
            .find(|hidden| cwd.starts_with(hidden))
        {
            Some(hidden) => Err(format!(
                "the working directory {} lies inside {}, which the sandbox hides from commands and file tools (the tool-runner's state, the blob store, Codex's home or a --hide-path)",
                cwd.display(),
                hidden.display()
            )),
            None => Ok(()),
        }
    }
}

/// The canonical form of each path of `paths` that exists, without
/// duplicates; paths that do not exist are skipped.
pub fn existing_canonical(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for path in paths {
        if let Ok(path) = std::fs::canonicalize(path)
            && !out.contains(&path)
        {
            out.push(path);
        }
    }
    out
}

/// What a sandboxed command is confined to; handed to the helper as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confinement {
    /// Writable roots (empty: nothing is writable, read-only mode).
    pub writable: Vec<WritableRoot>,
    /// Directories and files masked by empty read-only ones: the command
    /// can neither read nor write what they hold. Canonical, existing.
    #[serde(default)]
    pub hidden: Vec<PathBuf>,
    /// Block non-AF_UNIX sockets and socket calls.
    pub restrict_network: bool,
    /// Fail rather than run when a restriction cannot be applied.
    pub require: bool,
}

/// One call's sandbox, resolved against its cwd.
#[derive(Debug, Clone)]
pub struct CallSandbox {
    pub policy: SandboxPolicy,
    roots: Vec<WritableRoot>,
    hidden: Vec<PathBuf>,
    require: bool,
}

impl CallSandbox {
    /// `policy` for a call in `cwd` (canonical); `tmpdir` is the commands'
    /// `$TMPDIR`.
    pub fn new(policy: SandboxPolicy, cwd: &Path, tmpdir: Option<&Path>, require: bool) -> Self {
        let roots = policy.writable_roots(cwd, tmpdir);
        Self {
            policy,
            roots,
            hidden: Vec::new(),
            require,
        }
    }

    /// Also masks `hidden` (canonical, existing) from the call's commands
    /// and file tools.
    pub fn with_hidden(mut self, hidden: Vec<PathBuf>) -> Self {
        self.hidden = hidden;
        self
    }

    /// No sandbox (danger-full-access).
    pub fn unrestricted() -> Self {
        Self {
            policy: SandboxPolicy::new(SandboxMode::DangerFullAccess),
            roots: Vec::new(),
            hidden: Vec::new(),
            require: false,
        }
    }

    pub fn roots(&self) -> &[WritableRoot] {
        &self.roots
    }

    /// What the tool-runner must not read on a sandboxed call's behalf
    /// (a patch's files): the hidden paths; nothing for an unsandboxed one.
    pub fn hidden_from_reads(&self) -> &[PathBuf] {
        if self.policy.is_sandboxed() {
            &self.hidden
        } else {
            &[]
        }
    }

    /// What commands (and confined file tools) are started under; `None`
    /// runs them directly.
    pub fn confinement(&self) -> Option<Confinement> {
        self.policy.is_sandboxed().then(|| Confinement {
            writable: self.roots.clone(),
            hidden: self.hidden.clone(),
            restrict_network: self.policy.restricts_network(),
            require: self.require,
        })
    }

    /// The confinement for writing exactly under `dirs` (an unsandboxed
    /// patch, which the user approved: the directories it writes, as they
    /// are now): those directories writable — protected paths included, the
    /// user approved — the hidden paths masked, no network. Best effort:
    /// on a host that enforces less, what it enforces only narrows an
    /// unsandboxed write.
    pub fn confinement_writing(&self, dirs: &[PathBuf]) -> Confinement {
        let mut writable: Vec<WritableRoot> = Vec::new();
        for dir in dirs {
            if writable.iter().any(|root| root.root == *dir) {
                continue;
            }
            writable.push(WritableRoot {
                root: dir.clone(),
                read_only_subpaths: Vec::new(),
            });
        }
        Confinement {
            writable,
            hidden: self.hidden.clone(),
            restrict_network: true,
            require: false,
        }
    }

    /// Whether the tool-runner may touch `path` (relative to `cwd`) for a
    /// sandboxed call at all: not inside a hidden path. Symlinks and `..`
    /// are resolved first (a path that does not resolve is checked as
    /// written); unsandboxed calls are not checked.
    pub fn check_visible(&self, cwd: &Path, path: &Path) -> Result<(), String> {
        if !self.policy.is_sandboxed() {
            return Ok(());
        }
        let resolved = Workspace::any()
            .resolve_for_write(cwd, path)
            .unwrap_or_else(|_| cwd.join(path));
        self.check_not_hidden(&resolved)
    }

    fn check_not_hidden(&self, resolved: &Path) -> Result<(), String> {
        match self
            .hidden
            .iter()
            .find(|hidden| resolved.starts_with(hidden))
        {
            Some(hidden) => Err(format!(
                "patch rejected: {} is blocked by the {} sandbox: it lies inside {}, which sandboxed tools cannot see",
                resolved.display(),
                self.policy.mode,
                hidden.display()
            )),
            None => Ok(()),
        }
    }

    /// Whether the tool-runner may write `path` (relative to `cwd`) for the
    /// call; `Err` is the refusal the model gets. Symlinks and `..` are
    /// resolved first, as the kernel would.
    pub fn check_write(&self, cwd: &Path, path: &Path) -> Result<(), String> {
        if !self.policy.is_sandboxed() {
            return Ok(());
        }
        // A path that does not resolve cannot be shown to be inside.
        let resolved = Workspace::any()
            .resolve_for_write(cwd, path)
            .map_err(|err| {
                format!("patch rejected: the sandbox cannot allow writing there: {err}")
            })?;
        self.check_not_hidden(&resolved)?;
        if self.policy.mode == SandboxMode::ReadOnly {
            return Err(format!(
                "patch rejected: writing {} is blocked by the read-only sandbox",
                resolved.display()
            ));
        }
        if self.roots.iter().any(|root| root.allows(&resolved)) {
            return Ok(());
        }
        let protected = self
            .roots
            .iter()
            .any(|root| resolved.starts_with(&root.root));
        let why = if protected {
            "a protected path (.git, .agents, .codex) inside the writable roots"
        } else {
            "outside the writable roots"
        };
        Err(format!(
            "patch rejected: writing {} is blocked by the workspace-write sandbox: it is {why}",
            resolved.display()
        ))
    }
}

#[cfg(test)]
mod tests;
