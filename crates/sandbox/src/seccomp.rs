//! The seccomp filter of sandboxed commands (Codex: `codex-rs/protocol/src/protocol.rs`): with the
//! network off, every socket call fails with EPERM and `socket`/`socketpair`
//! work only for AF_UNIX, so local IPC keeps working; and, whatever the
//! network, the calls in [`ALWAYS_DENIED`] fail with EPERM — those that
//! reach past what Landlock, the namespaces and the dropped capabilities
//! cover — and so does any mode with a set-id bit ([`MODE_SETTING`]). A
//! filter, once installed, stays for the process and everything it
//! executes.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp does not support the {0} architecture")]
    Arch(&'static str),
    #[error("cannot build the seccomp filter: {0}")]
    Build(#[from] seccompiler::BackendError),
    #[error("cannot install the seccomp filter: {0}")]
    Install(#[from] seccompiler::Error),
}

/// Always refused, by group. Most also need a capability the command no
/// longer has ([`super::caps`]); the filter refuses them again, so that a
/// capability regained some other way (a user namespace of its own) buys
/// nothing.
const ALWAYS_DENIED: &[libc::c_long] = &[
    // Another process's memory and execution (Codex denies ptrace; the
    // PID namespace limits the reach, the filter closes it).
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    // io_uring performs its operations outside this filter's view.
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    // Kernel code: loading and removing modules, replacing the kernel.
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_reboot,
    // Opening a file by handle skips every path check, Landlock's and the
    // mounts' (the "shocker" container escape).
    libc::SYS_open_by_handle_at,
    // Kernel attack surface an ordinary command never needs: eBPF programs,
    // perf events (kernel addresses, side channels), userfaultfd (the
    // classic race-widening exploit primitive), the kernel log.
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_syslog,
    // Kernel keyrings are not namespaced: keys of the host's users.
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    // Host-wide state: swap, the clock, process accounting, quotas.
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_clock_adjtime,
    libc::SYS_adjtimex,
    libc::SYS_acct,
    libc::SYS_quotactl,
    libc::SYS_quotactl_fd,
    // The mount table: Landlock already forbids changing it, and the
    // command's view (read-only binds, hidden paths, /dev, /proc) must stay
    // as built.
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_mount_setattr,
    // Raw I/O ports (x86 only).
    #[cfg(target_arch = "x86_64")]
    libc::SYS_iopl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_ioperm,
];

/// The mode bits that make an executable run with its owner's or its
/// group's ids.
const SET_ID_BITS: [u64; 2] = [libc::S_ISUID as u64, libc::S_ISGID as u64];

/// `fchmodat2` (Linux 6.6): the same number on every architecture
/// (asm-generic), not yet named by libc for all of them.
const SYS_FCHMODAT2: libc::c_long = 452;

/// The calls that set a file's mode, with the index of the mode argument.
/// A command owns what it creates, and an owner needs no capability to
/// set the set-user-ID or set-group-ID bit of its own file; such a file
/// outlives the command on the host, where it would run with the ids of
/// the command's user (root, or the user Keel runs as) for any local user.
/// So a mode with either bit fails with EPERM, whatever the call. `mkdir`
/// is not among them: those bits on a directory run nothing.
const MODE_SETTING: &[(libc::c_long, u8)] = &[
    (libc::SYS_fchmod, 1),
    (libc::SYS_fchmodat, 2),
    (SYS_FCHMODAT2, 2),
    (libc::SYS_openat, 3),
    (libc::SYS_mknodat, 2),
    #[cfg(target_arch = "x86_64")]
    (libc::SYS_chmod, 1),
    #[cfg(target_arch = "x86_64")]
    (libc::SYS_open, 2),
    #[cfg(target_arch = "x86_64")]
    (libc::SYS_creat, 1),
    #[cfg(target_arch = "x86_64")]
    (libc::SYS_mknod, 1),
];

/// Refused with the network off. `recvfrom` stays allowed: tools such as
/// cargo talk to their children over socketpairs with it (Codex's note).
const NETWORK_DENIED: [libc::c_long; 13] = [
    libc::SYS_connect,
    libc::SYS_accept,
    libc::SYS_accept4,
    libc::SYS_bind,
    libc::SYS_listen,
    libc::SYS_getpeername,
    libc::SYS_getsockname,
    libc::SYS_shutdown,
    libc::SYS_sendto,
    libc::SYS_sendmmsg,
    libc::SYS_recvmmsg,
    libc::SYS_getsockopt,
    libc::SYS_setsockopt,
];

fn filter(restrict_network: bool) -> Result<BpfProgram, SeccompError> {
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|_| SeccompError::Arch(std::env::consts::ARCH))?;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    // An empty rule list matches every call of that syscall.
    for syscall in ALWAYS_DENIED {
        rules.insert(*syscall, Vec::new());
    }
    // Rules in a list are alternatives: either bit set in the mode.
    for (syscall, mode_arg) in MODE_SETTING {
        let set_id = SET_ID_BITS
            .iter()
            .map(|bit| {
                SeccompRule::new(vec![SeccompCondition::new(
                    *mode_arg,
                    SeccompCmpArgLen::Dword,
                    SeccompCmpOp::MaskedEq(*bit),
                    *bit,
                )?])
            })
            .collect::<Result<Vec<_>, _>>()?;
        rules.insert(*syscall, set_id);
    }
    if restrict_network {
        for syscall in NETWORK_DENIED {
            rules.insert(syscall, Vec::new());
        }
        let not_unix = || {
            SeccompRule::new(vec![SeccompCondition::new(
                0,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::Ne,
                libc::AF_UNIX as u64,
            )?])
        };
        rules.insert(libc::SYS_socket, vec![not_unix()?]);
        rules.insert(libc::SYS_socketpair, vec![not_unix()?]);
    }
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )?;
    Ok(filter.try_into()?)
}

/// `openat2` takes its mode in a structure, which a filter cannot read: it
/// fails with ENOSYS, as on a kernel without it, and callers fall back to
/// `openat`, whose mode the main filter checks.
fn without_openat2() -> Result<BpfProgram, SeccompError> {
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|_| SeccompError::Arch(std::env::consts::ARCH))?;
    let rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::from([(libc::SYS_openat2, Vec::new())]);
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )?;
    Ok(filter.try_into()?)
}

/// Installs the filters on the calling (single-threaded) process, which
/// has set `no_new_privs` already (seccomp needs it without
/// CAP_SYS_ADMIN).
pub(super) fn install(restrict_network: bool) -> Result<(), SeccompError> {
    let program = filter(restrict_network)?;
    let openat2 = without_openat2()?;
    seccompiler::apply_filter(&openat2)?;
    seccompiler::apply_filter(&program)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_build_for_this_architecture() {
        assert!(!filter(false).unwrap().is_empty());
        assert!(filter(true).unwrap().len() > filter(false).unwrap().len());
        assert!(!without_openat2().unwrap().is_empty());
    }
}
