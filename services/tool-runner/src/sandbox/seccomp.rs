//! The seccomp filter of sandboxed commands (codex-compat §5.2): `ptrace`
//! and `io_uring_*` always fail with EPERM (ptrace could reach outside the
//! sandbox's view, io_uring bypasses the syscall filter); with the network
//! off, every socket call fails with EPERM and `socket`/`socketpair` work
//! only for AF_UNIX, so local IPC keeps working. A filter, once installed,
//! stays for the process and everything it executes.

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

/// Always refused.
const ALWAYS_DENIED: [libc::c_long; 4] = [
    libc::SYS_ptrace,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
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
        rules.insert(syscall, Vec::new());
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

/// Installs the filter on the calling (single-threaded) process. Sets
/// `no_new_privs`, which seccomp needs without CAP_SYS_ADMIN.
pub(super) fn install(restrict_network: bool) -> Result<(), SeccompError> {
    let program = filter(restrict_network)?;
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
    }
}
