//! Read-only binds for the protected paths inside writable roots (`.git`,
//! `.agents`, `.codex`). Landlock only ever adds rights down a tree, so a
//! writable cwd would make its `.git` writable too; a read-only bind mount
//! of `.git` onto itself, in a mount namespace of the command's own, takes
//! the writes away again (EROFS), as Codex's bubblewrap setup does. Landlock
//! then forbids the command from unmounting it.
//!
//! Root enters a new mount namespace directly; anyone else enters a user
//! namespace first (mapping their own ids), which gives the capabilities
//! for it inside; `execve` drops them again.

use std::path::{Path, PathBuf};

use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};
use nix::sys::statvfs::{FsFlags, statvfs};
use nix::unistd::{Gid, Uid};

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("cannot create a mount namespace: {0}")]
    Unshare(nix::Error),
    #[error("cannot map ids in the user namespace ({path}): {source}")]
    IdMap {
        path: &'static str,
        source: std::io::Error,
    },
    #[error("cannot make the mounts private: {0}")]
    Private(nix::Error),
    #[error("cannot bind {path} read-only: {source}")]
    Bind { path: PathBuf, source: nix::Error },
}

/// Enters a private mount namespace and binds each existing path in
/// `paths` read-only onto itself. Must run single-threaded.
pub(super) fn protect(paths: &[&Path]) -> Result<(), MountError> {
    enter_namespace()?;
    for path in paths {
        if std::fs::symlink_metadata(path).is_err() {
            continue;
        }
        bind_read_only(path)?;
    }
    Ok(())
}

fn enter_namespace() -> Result<(), MountError> {
    if Uid::effective().is_root() {
        unshare(CloneFlags::CLONE_NEWNS).map_err(MountError::Unshare)?;
    } else {
        let (uid, gid) = (Uid::effective(), Gid::effective());
        unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS)
            .map_err(MountError::Unshare)?;
        write_id_file("/proc/self/setgroups", "deny")?;
        write_id_file("/proc/self/uid_map", &format!("{uid} {uid} 1"))?;
        write_id_file("/proc/self/gid_map", &format!("{gid} {gid} 1"))?;
    }
    // Without this, binds made here would propagate to the host's mounts.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(MountError::Private)
}

fn write_id_file(path: &'static str, text: &str) -> Result<(), MountError> {
    std::fs::write(path, text).map_err(|source| MountError::IdMap { path, source })
}

fn bind_read_only(path: &Path) -> Result<(), MountError> {
    let err = |source| MountError::Bind {
        path: path.to_path_buf(),
        source,
    };
    mount(
        Some(path),
        path,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(err)?;
    // A remount must keep the flags the kernel locked on the original mount
    // (nosuid, nodev, ...), or a user namespace gets EPERM.
    let kept = statvfs(path)
        .map(|st| locked_flags(st.flags()))
        .map_err(err)?;
    mount(
        None::<&str>,
        path,
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | kept,
        None::<&str>,
    )
    .map_err(err)
}

fn locked_flags(flags: FsFlags) -> MsFlags {
    let mut out = MsFlags::empty();
    for (fs, ms) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if flags.contains(fs) {
            out |= ms;
        }
    }
    out
}
