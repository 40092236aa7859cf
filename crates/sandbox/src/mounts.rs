//! The command's own view of the filesystem, built by PID 1 of its PID
//! namespace ([`super::init`]) in a mount namespace of its own, as Codex's
//! bubblewrap pipeline does (codex-rs/linux-sandbox/src/bwrap.rs: `--ro-bind`
//! of `.git`/`.codex` inside writable roots, `--dev /dev`, `--proc /proc`):
//!
//! 1. every mount made private, so nothing done here reaches the host, and
//!    the directories inside writable roots that hold a protected or hidden
//!    path pinned in place ([`pin`]);
//! 2. read-only binds of the protected paths inside writable roots (`.git`,
//!    `.agents`, `.codex`): Landlock only ever adds rights down a tree, so a
//!    writable cwd would make its `.git` writable too; the bind takes the
//!    writes away again (EROFS);
//! 3. hidden paths masked: an empty read-only tmpfs over each hidden
//!    directory, an empty read-only regular file bound over each hidden
//!    file — the tool-runner's state, the blob store, Codex's home;
//! 4. a minimal `/dev`: a tmpfs with `null`, `zero`, `full`, `random`,
//!    `urandom` and `tty` bound from the host, the `fd`, `stdin`, `stdout`
//!    and `stderr` links and a private `/dev/shm` — no disks, no raw
//!    memory, no `/dev/pts` (commands talk over pipes);
//! 5. a new `proc` on `/proc`, showing the PID namespace's processes only.
//!
//! Steps 3 and 4 stage their empty file and the new `/dev` on a tmpfs
//! mounted over `/proc` for the time it takes (the one directory that is
//! about to be replaced anyway), so nothing of the staging stays visible.
//! Landlock, applied afterwards, forbids the command to change any of it
//! (no mount, umount or pivot_root under a Landlock domain), the dropped
//! capabilities and the seccomp filter forbid it again.

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use nix::sys::statvfs::{FsFlags, statvfs};
use nix::unistd::{Gid, Uid};

/// The devices a command gets, bound from the host's `/dev`.
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];
/// The links of a minimal `/dev` (what bubblewrap's `--dev` creates).
const DEV_LINKS: [(&str, &str); 4] = [
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
];
/// The protected path created when missing.
const CODEX_DIR: &str = ".codex";
/// Where the staging tmpfs goes while the new `/dev` is built.
const STAGING: &str = "/proc";

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
    #[error("cannot create {path} to protect it: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot hide {path}: {source}")]
    Hide { path: PathBuf, source: nix::Error },
    #[error("cannot build the minimal /dev ({step}): {source}")]
    Dev {
        step: String,
        source: std::io::Error,
    },
    #[error("cannot mount a new /proc: {0}")]
    Proc(nix::Error),
}

/// Enters a new mount namespace with every mount private. Root (or a
/// process already in a user namespace of its own) enters it directly;
/// anyone else enters a user namespace first, mapping their own ids.
pub(super) fn enter_namespace(in_user_namespace: bool) -> Result<(), MountError> {
    if Uid::effective().is_root() || in_user_namespace {
        unshare(CloneFlags::CLONE_NEWNS).map_err(MountError::Unshare)?;
    } else {
        let (uid, gid) = (Uid::effective(), Gid::effective());
        unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS)
            .map_err(MountError::Unshare)?;
        map_ids(uid, gid)?;
    }
    // Without this, mounts made here would propagate to the host's.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(MountError::Private)
}

/// Maps `uid` and `gid` onto themselves in the user namespace just
/// entered (the only mapping an unprivileged process may write).
pub(super) fn map_ids(uid: Uid, gid: Gid) -> Result<(), MountError> {
    write_id_file("/proc/self/setgroups", "deny")?;
    write_id_file("/proc/self/uid_map", &format!("{uid} {uid} 1"))?;
    write_id_file("/proc/self/gid_map", &format!("{gid} {gid} 1"))
}

fn write_id_file(path: &'static str, text: &str) -> Result<(), MountError> {
    std::fs::write(path, text).map_err(|source| MountError::IdMap { path, source })
}

/// Pins `dirs` (existing directories) in place: each is bound onto itself,
/// with what is mounted below it, so that it becomes a mount point, which
/// `rename` refuses (EBUSY). Without this, a command could rename a
/// writable directory that holds a hidden or protected path and put its
/// own in its place, for the tool-runner (and later calls) to trust.
pub(super) fn pin(dirs: &[PathBuf]) -> Result<(), MountError> {
    for dir in dirs {
        if !std::fs::symlink_metadata(dir).is_ok_and(|meta| meta.is_dir()) {
            continue;
        }
        mount(
            Some(dir),
            dir,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|source| MountError::Bind {
            path: dir.clone(),
            source,
        })?;
    }
    Ok(())
}

/// The directories to [`pin`]: every ancestor of a path in `held` that a
/// writable root (`roots`) would let a command rename — one strictly
/// inside a root — outermost first.
pub(super) fn pinned_ancestors(held: &[&Path], roots: &[&Path]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for path in held {
        for ancestor in path.ancestors().skip(1) {
            let movable = roots
                .iter()
                .any(|root| ancestor.starts_with(root) && ancestor != *root);
            if movable && !out.iter().any(|known| known == ancestor) {
                out.push(ancestor.to_path_buf());
            }
        }
    }
    out.sort_by_key(|dir| dir.components().count());
    out
}

/// Binds each existing path in `paths` read-only onto itself.
///
/// A missing `.codex` (protected in the cwd even when missing, so that a
/// command cannot write its own Codex configuration) is created first, as
/// an empty directory: a bind needs something to bind onto, and this
/// mount namespace shares the host's filesystem. The other protected paths
/// are listed only when they exist.
pub(super) fn protect(paths: &[&Path]) -> Result<(), MountError> {
    for path in paths {
        if std::fs::symlink_metadata(path).is_err() {
            if path.file_name().is_none_or(|name| name != CODEX_DIR) {
                continue;
            }
            std::fs::create_dir(path).map_err(|source| MountError::Create {
                path: path.to_path_buf(),
                source,
            })?;
        }
        bind_read_only(path, path).map_err(|source| MountError::Bind {
            path: path.to_path_buf(),
            source,
        })?;
    }
    Ok(())
}

/// The staging tmpfs over `/proc`, while it is mounted.
pub(super) struct Staging {
    empty_file: PathBuf,
}

impl Staging {
    /// Mounts the staging tmpfs with an empty read-only file in it.
    pub(super) fn mount() -> Result<Self, MountError> {
        let dev_err = |step: &str| {
            let step = step.to_string();
            move |source| MountError::Dev { step, source }
        };
        mount_tmpfs(Path::new(STAGING), MsFlags::empty(), "mode=0755")
            .map_err(std::io::Error::from)
            .map_err(dev_err("staging tmpfs"))?;
        let empty_file = Path::new(STAGING).join("empty");
        std::fs::write(&empty_file, b"").map_err(dev_err("empty file"))?;
        Ok(Self { empty_file })
    }

    /// Masks each existing path of `hidden`: an empty read-only tmpfs over
    /// a directory, the empty file bound read-only over anything else.
    /// Paths under `/proc` and `/dev` are replaced wholesale anyway.
    pub(super) fn hide(&self, hidden: &[PathBuf]) -> Result<(), MountError> {
        for path in hidden {
            if path.starts_with("/proc") || path.starts_with("/dev") {
                continue;
            }
            // Not following a final symlink: the tool-runner names
            // canonical paths, so a link here was planted since.
            let Ok(meta) = std::fs::symlink_metadata(path) else {
                continue;
            };
            let err = |source| MountError::Hide {
                path: path.clone(),
                source,
            };
            if meta.is_dir() {
                mount_tmpfs(
                    path,
                    MsFlags::MS_RDONLY | MsFlags::MS_NODEV,
                    "mode=0555,size=4k",
                )
                .map_err(err)?;
            } else if meta.file_type().is_symlink() {
                return Err(err(nix::Error::ELOOP));
            } else {
                bind_read_only(&self.empty_file, path).map_err(err)?;
            }
        }
        Ok(())
    }

    /// Builds the minimal `/dev` on a tmpfs of its own inside the staging
    /// area, then moves it over `/dev`.
    pub(super) fn build_dev(&self) -> Result<(), MountError> {
        let dev = Path::new(STAGING).join("dev");
        let step =
            |what: String| move |source: std::io::Error| MountError::Dev { step: what, source };
        std::fs::create_dir(&dev).map_err(step("mkdir".into()))?;
        mount_tmpfs(&dev, MsFlags::MS_NODEV, "mode=0755")
            .map_err(std::io::Error::from)
            .map_err(step("tmpfs".into()))?;
        for name in DEVICES {
            let host = Path::new("/dev").join(name);
            if std::fs::metadata(&host).is_err() {
                continue;
            }
            let node = dev.join(name);
            std::fs::write(&node, b"").map_err(step(format!("{name} mount point")))?;
            mount(
                Some(&host),
                &node,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(std::io::Error::from)
            .map_err(step(format!("bind {name}")))?;
        }
        for (name, target) in DEV_LINKS {
            std::os::unix::fs::symlink(target, dev.join(name))
                .map_err(step(format!("link {name}")))?;
        }
        let shm = dev.join("shm");
        std::fs::create_dir(&shm).map_err(step("mkdir shm".into()))?;
        // Private to the command: it goes with the mount namespace.
        mount_tmpfs(&shm, MsFlags::MS_NODEV, "mode=1777")
            .map_err(std::io::Error::from)
            .map_err(step("shm".into()))?;
        // Nothing new in /dev itself; the bound devices and /dev/shm are
        // mounts of their own and keep their rights.
        let kept = locked_flags(&dev)
            .map_err(std::io::Error::from)
            .map_err(step("statvfs".into()))?;
        mount(
            None::<&str>,
            &dev,
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NODEV | kept,
            None::<&str>,
        )
        .map_err(std::io::Error::from)
        .map_err(step("read-only".into()))?;
        mount(
            Some(&dev),
            "/dev",
            None::<&str>,
            MsFlags::MS_MOVE,
            None::<&str>,
        )
        .map_err(std::io::Error::from)
        .map_err(step("move onto /dev".into()))
    }

    /// Removes the staging tmpfs (what was bound from it stays) and mounts
    /// a new `proc` on `/proc`: the processes of this PID namespace only.
    pub(super) fn finish_with_proc(self) -> Result<(), MountError> {
        umount2(STAGING, MntFlags::MNT_DETACH).map_err(MountError::Proc)?;
        mount(
            Some("proc"),
            "/proc",
            Some("proc"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None::<&str>,
        )
        .map_err(MountError::Proc)
    }

    /// Removes the staging tmpfs, leaving the host's `/proc` (when the
    /// sandbox is partial and a new one cannot be had).
    pub(super) fn abandon(self) {
        let _ = umount2(STAGING, MntFlags::MNT_DETACH);
    }
}

fn mount_tmpfs(path: &Path, flags: MsFlags, data: &str) -> nix::Result<()> {
    mount(
        Some("tmpfs"),
        path,
        Some("tmpfs"),
        flags | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some(data),
    )
}

/// Binds `source` onto `target` and makes that mount read-only.
fn bind_read_only(source: &Path, target: &Path) -> nix::Result<()> {
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )?;
    // A remount must keep the flags the kernel locked on the original mount
    // (nosuid, nodev, ...), or a user namespace gets EPERM.
    let kept = locked_flags(target)?;
    mount(
        None::<&str>,
        target,
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | kept,
        None::<&str>,
    )
}

fn locked_flags(path: &Path) -> nix::Result<MsFlags> {
    let flags = statvfs(path)?.flags();
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
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ancestors_a_command_could_rename_are_pinned() {
        let roots = [Path::new("/tmp"), Path::new("/tmp/w/cwd")];
        let held = [
            Path::new("/tmp/w/cwd/a/b/state"),
            Path::new("/tmp/w/cwd/.git"),
            Path::new("/srv/blobs"),
        ];
        assert_eq!(
            pinned_ancestors(&held, &roots),
            ["/tmp/w", "/tmp/w/cwd", "/tmp/w/cwd/a", "/tmp/w/cwd/a/b"].map(PathBuf::from)
        );
        assert!(pinned_ancestors(&held, &[]).is_empty());
    }
}
