//! The helper's process structure: a PID namespace whose first process
//! (PID 1) confines itself and then runs the command, as bubblewrap's
//! `--unshare-pid` does in Codex's Linux sandbox
//! (codex-rs/linux-sandbox/src/bwrap.rs).
//!
//! The helper `unshare`s a new PID namespace and a new IPC namespace (and,
//! when it is not root, a user namespace to own them, mapping its own
//! ids), then forks. The child is PID 1 of the new namespace: it sees and
//! can signal only the processes
//! started inside, never the tool-runner, the model proxy or anything else
//! on the host. The parent stays outside, in the host's mount namespace,
//! as a plain waiter, and exits with PID 1's status (128+N when a signal N
//! killed it), so the tool-runner sees the command's status as before.
//!
//! PID 1 then leaves the helper's session for one of its own (`setsid`),
//! as bubblewrap's `--new-session` does (Codex's Linux sandbox passes it):
//! a session has at most one controlling terminal, and a new one has none.
//! Otherwise the command would inherit the tool-runner's — the terminal of
//! the shell that ran `keel up` — and `/dev/tty` would reach it: TIOCSTI
//! pushes input into that shell (which then runs it, unsandboxed), and the
//! terminal's settings and the user's keystrokes are there for the taking
//! (CVE-2017-5226 for bubblewrap without `--new-session`).
//!
//! PID 1 runs the command as a child, reaps every process orphaned inside
//! the namespace while it waits (it is their init), and exits with the
//! command's status. When PID 1 exits the kernel kills whatever is left in
//! the namespace: a command's background processes (`sleep 100 &`) do not
//! outlive its call — bubblewrap's behaviour with `--unshare-pid` too. The
//! tool-runner's process-group SIGKILL reaches the helper's waiter; PID 1,
//! in a session (and so a process group) of its own, dies with it
//! (PR_SET_PDEATHSIG, set before it leaves the group, so that a kill in
//! between still finds it in the group), and the kernel then kills every
//! process left in the namespace.
//!
//! The fork (rather than a second exec of the helper binary, which becomes
//! PID 1 just as well without `unsafe`) costs a fraction of a millisecond
//! where the exec costs the binary's startup again; the helper is
//! single-threaded when it forks, which is what makes the fork sound.

use std::ffi::OsString;
use std::path::Path;

use nix::errno::Errno;
use nix::sched::{CloneFlags, unshare};
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Gid, Pid, Uid, fork};

use super::helper::HelperError;
use super::mounts;

/// Shell convention: killed by signal N exits 128+N.
const SIGNAL_EXIT_BASE: i32 = 128;
/// Exit codes for a command that could not be executed, as a shell's.
pub(super) const EXIT_CANNOT_EXECUTE: i32 = 126;
pub(super) const EXIT_NOT_FOUND: i32 = 127;

/// The namespaces PID 1 finds itself in.
#[derive(Debug, Default)]
pub(super) struct Namespaces {
    /// A new PID namespace, whose PID 1 this process is.
    pub pid_isolated: bool,
    /// Why not, when not.
    pub pid_detail: String,
    /// This process owns a user namespace of its own already (so its
    /// mount namespace needs no other).
    pub in_user_namespace: bool,
}

/// Enters a new PID namespace — and a new IPC namespace with it — and
/// forks. Returns in the child, PID 1 of the namespace; the parent waits
/// for it and exits with its status, never returning. Without `require`,
/// namespaces that cannot be had are reported and the fork happens anyway.
///
/// The IPC namespace (bubblewrap's `--unshare-ipc`): System V message
/// queues, semaphores and shared memory, and POSIX message queues, are
/// named by key or id, not by path, so neither the mounts nor Landlock
/// stand between a command and those of every other process of its user
/// on the host. PID 1 and the command get an empty set of their own.
///
/// Must be called while the process is single-threaded.
pub(super) fn enter(require: bool) -> Result<Namespaces, HelperError> {
    let root = Uid::effective().is_root();
    let (uid, gid) = (Uid::effective(), Gid::effective());
    let mut namespaces = Namespaces::default();
    let flags = if root {
        CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWIPC
    } else {
        CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWIPC
    };
    let entered = unshare(flags)
        .map_err(|err| format!("cannot create PID and IPC namespaces: {err}"))
        .and_then(|()| {
            if root {
                Ok(())
            } else {
                mounts::map_ids(uid, gid).map_err(|err| err.to_string())
            }
        });
    match entered {
        Ok(()) => {
            namespaces.pid_isolated = true;
            namespaces.in_user_namespace = !root;
        }
        Err(detail) if require => return Err(HelperError::PidNamespace(detail)),
        Err(detail) => namespaces.pid_detail = detail,
    }
    // SAFETY: the helper is single-threaded here — `dispatch` runs first
    // thing in `main`, before anything could start a thread, and nothing
    // since has — so the child is a complete copy of the only thread, with
    // no lock held by another thread that could never be released.
    #[allow(unsafe_code)]
    let forked = unsafe { fork() };
    match forked.map_err(HelperError::Fork)? {
        ForkResult::Child => {
            // Should the waiter be killed alone, PID 1 (and with it the
            // whole namespace) follows. Before the setsid below: until then
            // the group kill reaches PID 1 directly.
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(|err| {
                HelperError::Session(format!("cannot set PR_SET_PDEATHSIG: {err}"))
            })?;
            // No controlling terminal: see the module's notes. PID 1 is not
            // a process group leader (its group is the helper's), so this
            // cannot fail with EPERM.
            nix::unistd::setsid().map_err(|err| {
                HelperError::Session(format!("cannot start a new session: {err}"))
            })?;
            Ok(namespaces)
        }
        ForkResult::Parent { child } => std::process::exit(wait_for(child)),
    }
}

/// Marks every descriptor but stdin, stdout and stderr close-on-exec, so
/// that none reaches the command. The helper opens none of its own before
/// this; what it finds open came from the tool-runner's own parent (a
/// shell, a supervisor) without close-on-exec and passed through the
/// tool-runner to every command it starts. A sandboxed command must not
/// get them: a descriptor of a directory the sandbox hides leads past the
/// mask (`/proc/self/fd/N/…` reaches the directory itself, and Landlock
/// lets everything be read). Flags only (CLOSE_RANGE_CLOEXEC, Linux 5.11,
/// older than any kernel whose Landlock can confine writes): no
/// descriptor this process might own is closed under it.
pub(super) fn close_inherited_descriptors() -> Result<(), HelperError> {
    // SAFETY: close_range(2) takes no pointer and, with
    // CLOSE_RANGE_CLOEXEC, closes nothing: it sets FD_CLOEXEC on the
    // descriptors from 3 up, which affects only a later execve.
    #[allow(unsafe_code)]
    let rc = unsafe {
        libc::close_range(
            3,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC as libc::c_int,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(HelperError::Descriptors(std::io::Error::last_os_error()))
    }
}

/// Waits for `child` and returns its status as an exit code.
fn wait_for(child: Pid) -> i32 {
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, signal, _)) => return SIGNAL_EXIT_BASE + signal as i32,
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => return EXIT_CANNOT_EXECUTE,
        }
    }
}

/// PID 1's work: starts `program` with exactly `env`, inheriting stdio and
/// the working directory, reaps every process until the command itself
/// exits, and returns the command's status as an exit code.
pub(super) fn run_command(
    program: &OsString,
    args: &[OsString],
    env: &[(OsString, OsString)],
) -> i32 {
    let spawned = std::process::Command::new(program)
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .spawn();
    let child = match spawned {
        Ok(child) => child,
        Err(err) => {
            eprintln!(
                "keel-tool-runner sandbox-exec: cannot execute {}: {err}",
                Path::new(program).display()
            );
            return if err.kind() == std::io::ErrorKind::NotFound {
                EXIT_NOT_FOUND
            } else {
                EXIT_CANNOT_EXECUTE
            };
        }
    };
    let Ok(raw) = i32::try_from(child.id()) else {
        return EXIT_CANNOT_EXECUTE;
    };
    let command = Pid::from_raw(raw);
    loop {
        // Any child: orphans reparented to PID 1 are reaped here too.
        match waitpid(None::<Pid>, None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == command => return code,
            Ok(WaitStatus::Signaled(pid, signal, _)) if pid == command => {
                return SIGNAL_EXIT_BASE + signal as i32;
            }
            Ok(_) | Err(Errno::EINTR) => {}
            // No child left before the command was seen to end: cannot
            // happen while PID 1 is the only one reaping.
            Err(_) => return EXIT_CANNOT_EXECUTE,
        }
    }
}
