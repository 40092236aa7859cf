//! Capabilities of sandboxed commands. Commands may run as root (tests and
//! CI do); root's full capability set would let a command load kernel
//! modules, open files by handle past every path check (CAP_DAC_READ_SEARCH,
//! the "shocker" escape), read raw memory and disks, or change the clock.
//! So the bounding set — which caps what any later `execve` can give root
//! (`P'(permitted) = P(inheritable) | P(bounding)` for uid 0, see
//! capabilities(7)) — is cut down to [`KEPT`], the inheritable and ambient
//! sets are emptied, and permitted/effective are reduced to what is kept.
//!
//! What is kept, and why it is safe here: file ownership and permission
//! overrides (CHOWN, DAC_OVERRIDE, FOWNER, FSETID) are what root commands
//! expect of root in their own files — workspaces checked out by another
//! user, build tools fixing modes — and every write stays bounded by
//! Landlock and the read-only and hidden mounts, whatever the permission
//! bits say; SETUID/SETGID let a root command drop to another user (package
//! managers do), never gain one (`no_new_privs` makes setuid binaries
//! inert); KILL reaches only the processes of the command's own PID
//! namespace. These are a subset of a container runtime's defaults (Docker
//! also keeps MKNOD, NET_RAW, NET_BIND_SERVICE, SYS_CHROOT, AUDIT_WRITE,
//! SETPCAP and SETFCAP, which nothing here needs).

use caps::{CapSet, Capability, CapsHashSet};

/// The capabilities a sandboxed command may still have.
pub(super) const KEPT: [Capability; 7] = [
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FOWNER,
    Capability::CAP_FSETID,
    Capability::CAP_KILL,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
];

#[derive(Debug, thiserror::Error)]
#[error("cannot drop capabilities ({step}): {source}")]
pub struct CapsError {
    step: &'static str,
    source: caps::errors::CapsError,
}

/// The kept set as a bit mask, as `/proc/PID/status` prints it.
pub(super) fn kept_mask() -> u64 {
    KEPT.iter().fold(0, |mask, cap| mask | cap.bitmask())
}

/// Reduces this process's capabilities, for it and everything it starts.
/// Dropping from the bounding set needs CAP_SETPCAP, so that goes first.
pub(super) fn drop_capabilities() -> Result<(), CapsError> {
    let kept: CapsHashSet = KEPT.into_iter().collect();
    let err = |step| move |source| CapsError { step, source };
    // Capabilities this library does not know (none on Linux 6.18, whose
    // last is CAP_CHECKPOINT_RESTORE) cannot be named here; the probe checks
    // the resulting masks against `kept_mask` and reports any extra bit.
    for cap in caps::all() {
        if !kept.contains(&cap) && caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
            caps::drop(None, CapSet::Bounding, cap).map_err(err("bounding"))?;
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(err("ambient"))?;
    caps::clear(None, CapSet::Inheritable).map_err(err("inheritable"))?;
    let permitted = caps::read(None, CapSet::Permitted).map_err(err("read permitted"))?;
    let remaining: CapsHashSet = permitted.intersection(&kept).copied().collect();
    // Effective first: it must stay a subset of permitted at every step.
    caps::set(None, CapSet::Effective, &remaining).map_err(err("effective"))?;
    caps::set(None, CapSet::Permitted, &remaining).map_err(err("permitted"))?;
    Ok(())
}
