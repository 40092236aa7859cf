//! Which directories may be touched. Every path a request or a tool call
//! names is resolved against the filesystem — canonicalised, so `..` and
//! symlinks are followed to where they really lead — and only then compared
//! with the allowed roots. Comparing unresolved paths would let
//! `link-to-etc/passwd` or `sub/../../etc` through.
//!
//! The tool-runner confines its own reads and writes and where commands
//! start with a [`Workspace`]; the sandbox (keel-sandbox) confines what
//! commands do; apply_patch (keel-apply-patch) resolves every path a patch
//! names through one.

use std::io::ErrorKind;
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    /// The resolved path lies outside every allowed root.
    #[error("access denied: {path} is outside the allowed workspace ({roots})")]
    OutsideRoots { path: PathBuf, roots: String },
    /// The path (or, for a path to be created, its nearest existing
    /// ancestor) could not be resolved.
    #[error("cannot resolve {path}: {source}")]
    Resolve {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A path to be created climbs out through `..` below a directory that
    /// does not exist yet, which the filesystem cannot resolve.
    #[error("cannot resolve {0}: `..` after a directory that does not exist")]
    DotDotAfterMissing(PathBuf),
    /// A symlink whose target does not exist, met while resolving a path to
    /// be created.
    #[error("cannot resolve {0}: it is a symbolic link to a path that does not exist")]
    DanglingSymlink(PathBuf),
    /// A configured root does not exist.
    #[error("workspace root {path} cannot be used: {source}")]
    BadRoot {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl WorkspaceError {
    /// True when the path was resolved and is simply not allowed (as opposed
    /// to not existing), which gRPC reports as PERMISSION_DENIED.
    pub fn is_denied(&self) -> bool {
        matches!(self, Self::OutsideRoots { .. })
    }

    /// True when the path (or its ancestor) does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Resolve { source, .. } if source.kind() == ErrorKind::NotFound)
    }
}

/// The allowed roots. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Workspace {
    /// Canonical roots; ignored when `allow_any`.
    roots: Vec<PathBuf>,
    allow_any: bool,
}

impl Workspace {
    /// Only `roots` (canonicalised here; each must exist) and their subtrees.
    pub fn restricted(roots: &[PathBuf]) -> Result<Self, WorkspaceError> {
        let roots = roots
            .iter()
            .map(|root| {
                std::fs::canonicalize(root).map_err(|source| WorkspaceError::BadRoot {
                    path: root.clone(),
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            roots,
            allow_any: false,
        })
    }

    /// Any directory the process can reach.
    pub fn any() -> Self {
        Self {
            roots: Vec::new(),
            allow_any: true,
        }
    }

    pub fn allows_any(&self) -> bool {
        self.allow_any
    }

    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// Resolves an existing path (`path` joined onto `base` when relative)
    /// and checks it. The result is canonical.
    pub fn resolve_existing(&self, base: &Path, path: &Path) -> Result<PathBuf, WorkspaceError> {
        let joined = base.join(path);
        let canonical =
            std::fs::canonicalize(&joined).map_err(|source| WorkspaceError::Resolve {
                path: joined.clone(),
                source,
            })?;
        self.check(canonical)
    }

    /// Resolves a path that may not exist yet (a file a patch creates): the
    /// nearest existing ancestor is canonicalised and the missing rest
    /// appended. The result is checked like [`Self::resolve_existing`].
    pub fn resolve_for_write(&self, base: &Path, path: &Path) -> Result<PathBuf, WorkspaceError> {
        let joined = base.join(path);
        let mut existing = joined.clone();
        let mut missing: Vec<std::ffi::OsString> = Vec::new();
        let canonical = loop {
            match std::fs::canonicalize(&existing) {
                Ok(canonical) => break canonical,
                // NotADirectory: a component is a file, so the rest cannot
                // exist; creating it will fail, and nothing escapes.
                Err(err)
                    if matches!(err.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) =>
                {
                    // It exists but does not resolve: a symlink to nowhere.
                    // Writing through it would create its target, wherever
                    // that is.
                    if std::fs::symlink_metadata(&existing).is_ok() {
                        return Err(WorkspaceError::DanglingSymlink(existing));
                    }
                    // `file_name` is None for a path ending in `..`: the
                    // kernel cannot resolve `..` below a missing directory.
                    let Some(name) = existing.file_name().map(ToOwned::to_owned) else {
                        return Err(WorkspaceError::DotDotAfterMissing(joined));
                    };
                    missing.push(name);
                    if !existing.pop() {
                        return Err(WorkspaceError::Resolve {
                            path: joined,
                            source: err,
                        });
                    }
                }
                Err(source) => {
                    return Err(WorkspaceError::Resolve {
                        path: joined,
                        source,
                    });
                }
            }
        };
        let mut resolved = canonical;
        for name in missing.iter().rev() {
            resolved.push(name);
        }
        self.check(resolved)
    }

    /// Checks an already canonical path.
    pub fn check(&self, canonical: PathBuf) -> Result<PathBuf, WorkspaceError> {
        if self.allow_any || self.roots.iter().any(|root| canonical.starts_with(root)) {
            Ok(canonical)
        } else {
            Err(WorkspaceError::OutsideRoots {
                path: canonical,
                roots: self.describe_roots(),
            })
        }
    }

    fn describe_roots(&self) -> String {
        let names: Vec<String> = self
            .roots
            .iter()
            .map(|root| root.display().to_string())
            .collect();
        if names.is_empty() {
            "no workspace roots are configured".to_string()
        } else {
            format!("allowed roots: {}", names.join(", "))
        }
    }
}

/// Where an open file really is: its canonical path as the kernel names
/// it (`/proc/self/fd/N`). A check made on this path holds for what is
/// read from `file`, whatever a symlink or a rename changes afterwards —
/// unlike a check on a path resolved before the open.
pub fn opened_path(file: &std::fs::File) -> std::io::Result<PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, tempfile::TempDir, Workspace) {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("sub")).unwrap();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        let ws = Workspace::restricted(&[root.path().to_path_buf()]).unwrap();
        (root, outside, ws)
    }

    #[test]
    fn paths_inside_resolve_to_canonical_form() {
        let (root, _outside, ws) = setup();
        let canonical_root = std::fs::canonicalize(root.path()).unwrap();
        let got = ws
            .resolve_existing(root.path(), Path::new("sub/../sub"))
            .unwrap();
        assert_eq!(got, canonical_root.join("sub"));
        let got = ws
            .resolve_for_write(root.path(), Path::new("sub/new/dir/file.txt"))
            .unwrap();
        assert_eq!(got, canonical_root.join("sub/new/dir/file.txt"));
    }

    #[test]
    fn dot_dot_cannot_escape() {
        let (root, outside, ws) = setup();
        let rel = Path::new("..").join(outside.path().file_name().unwrap());
        let err = ws.resolve_existing(root.path(), &rel).unwrap_err();
        assert!(err.is_denied(), "{err}");
        assert!(err.to_string().starts_with("access denied: "), "{err}");
        let err = ws
            .resolve_for_write(root.path(), &rel.join("new.txt"))
            .unwrap_err();
        assert!(err.is_denied(), "{err}");
        let err = ws
            .resolve_for_write(root.path(), Path::new("missing/../../x"))
            .unwrap_err();
        assert!(
            matches!(err, WorkspaceError::DotDotAfterMissing(_)),
            "{err}"
        );
    }

    #[test]
    fn absolute_paths_outside_are_denied() {
        let (root, outside, ws) = setup();
        let err = ws
            .resolve_existing(root.path(), &outside.path().join("secret"))
            .unwrap_err();
        assert!(err.is_denied(), "{err}");
        let err = ws
            .resolve_for_write(root.path(), &outside.path().join("new"))
            .unwrap_err();
        assert!(err.is_denied(), "{err}");
    }

    #[test]
    fn symlinks_out_are_followed_and_denied() {
        let (root, outside, ws) = setup();
        std::os::unix::fs::symlink(outside.path(), root.path().join("link")).unwrap();
        let err = ws
            .resolve_existing(root.path(), Path::new("link/secret"))
            .unwrap_err();
        assert!(err.is_denied(), "{err}");
        let err = ws
            .resolve_for_write(root.path(), Path::new("link/new.txt"))
            .unwrap_err();
        assert!(err.is_denied(), "{err}");
        // A dangling link pointing out is no way around it either: creating
        // through it would write outside.
        std::os::unix::fs::symlink(outside.path().join("nope"), root.path().join("dangling"))
            .unwrap();
        let err = ws
            .resolve_for_write(root.path(), Path::new("dangling"))
            .unwrap_err();
        assert!(matches!(err, WorkspaceError::DanglingSymlink(_)), "{err}");
    }

    #[test]
    fn allow_any_accepts_everything_resolvable() {
        let (root, outside, _ws) = setup();
        let ws = Workspace::any();
        let got = ws
            .resolve_existing(root.path(), &outside.path().join("secret"))
            .unwrap();
        assert_eq!(
            got,
            std::fs::canonicalize(outside.path().join("secret")).unwrap()
        );
        let err = ws
            .resolve_existing(root.path(), Path::new("missing"))
            .unwrap_err();
        assert!(err.is_not_found(), "{err}");
    }

    #[test]
    fn missing_roots_are_rejected_at_start() {
        let err = Workspace::restricted(&[PathBuf::from("/nonexistent/keel-root")]).unwrap_err();
        assert!(matches!(err, WorkspaceError::BadRoot { .. }), "{err}");
    }
}
