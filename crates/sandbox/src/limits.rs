//! Resource limits (rlimits) for the commands the tool-runner starts, set by
//! the operator (`--rlimit-*`). Each one is off (inherited from the
//! tool-runner) unless configured; RLIMIT_CORE is always 0, apart from these.
//!
//! The workspace denies `unsafe`, so there is no `pre_exec` hook to set them
//! between fork and exec: the re-exec helper (`keel-tool-runner
//! sandbox-exec`, [`crate::helper`]) applies them to itself right
//! before it executes the command, which inherits them. Sandboxed commands
//! start through the helper anyway; unsandboxed ones go through it only when
//! a limit is configured, so the direct spawn stays the fast path.
//!
//! What a limit does to a command is the kernel's ordinary answer — a
//! signal (SIGXCPU, SIGXFSZ) or a failing call (EMFILE, ENOMEM, EAGAIN) —
//! and the tool reports it like any other failure.

use std::fmt;

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use serde::{Deserialize, Serialize};

/// One mebibyte, the unit of the size flags.
pub const MIB: u64 = 1024 * 1024;

/// The limits every command gets; `None` leaves a resource as inherited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceLimits {
    /// RLIMIT_CPU, seconds of CPU time per process: SIGXCPU at the limit,
    /// SIGKILL one second later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_secs: Option<u64>,
    /// RLIMIT_AS, bytes of virtual memory per process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_space_bytes: Option<u64>,
    /// RLIMIT_NOFILE, open file descriptors per process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_files: Option<u64>,
    /// RLIMIT_NPROC, processes (threads) of the command's real user id —
    /// all of them, not only the command's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processes: Option<u64>,
    /// RLIMIT_FSIZE, bytes a process may write into one file: SIGXFSZ (or
    /// EFBIG where the signal is ignored) beyond it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_size_bytes: Option<u64>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LimitError {
    /// Deliberately worded without "sandbox" or an errno text of its own:
    /// a limit that cannot be set is not a sandbox denial.
    #[error("cannot set the resource limit {resource} to {value}: {source}")]
    Set {
        resource: &'static str,
        value: u64,
        source: nix::Error,
    },
}

/// A limit the tool-runner's own hard limit keeps lower than configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lowered {
    pub resource: &'static str,
    pub configured: u64,
    pub effective: u64,
}

impl ResourceLimits {
    /// No limit configured: commands inherit the tool-runner's.
    pub fn is_empty(&self) -> bool {
        self.entries().iter().all(|entry| entry.value.is_none())
    }

    /// Applies the configured limits to the calling process (the helper,
    /// just before it executes the command). Soft and hard limits are both
    /// set, so the command cannot raise them again; a value above the
    /// current hard limit is lowered to it (raising a hard limit needs
    /// privileges, and the tool-runner warned about it at startup).
    pub fn apply(&self) -> Result<(), LimitError> {
        for entry in self.entries() {
            let Some(value) = entry.value else { continue };
            let (_, current_hard) =
                getrlimit(entry.resource).map_err(|source| LimitError::Set {
                    resource: entry.name,
                    value,
                    source,
                })?;
            let hard = entry.hard(value).min(current_hard);
            let soft = value.min(hard);
            setrlimit(entry.resource, soft, hard).map_err(|source| LimitError::Set {
                resource: entry.name,
                value,
                source,
            })?;
        }
        Ok(())
    }

    /// The configured limits that this process's hard limits (which the
    /// commands inherit) keep lower, as [`ResourceLimits::apply`] will.
    pub fn lowered_by_current_limits(&self) -> Vec<Lowered> {
        self.entries()
            .iter()
            .filter_map(|entry| {
                let configured = entry.value?;
                let (_, hard) = getrlimit(entry.resource).ok()?;
                (configured > hard).then_some(Lowered {
                    resource: entry.name,
                    configured,
                    effective: hard,
                })
            })
            .collect()
    }

    fn entries(&self) -> [Entry; 5] {
        [
            Entry {
                name: "RLIMIT_CPU",
                resource: Resource::RLIMIT_CPU,
                value: self.cpu_secs,
                // SIGXCPU at the soft limit says what happened; SIGKILL a
                // second later ends a command that ignores it.
                hard_margin: 1,
            },
            Entry {
                name: "RLIMIT_AS",
                resource: Resource::RLIMIT_AS,
                value: self.address_space_bytes,
                hard_margin: 0,
            },
            Entry {
                name: "RLIMIT_NOFILE",
                resource: Resource::RLIMIT_NOFILE,
                value: self.open_files,
                hard_margin: 0,
            },
            Entry {
                name: "RLIMIT_NPROC",
                resource: Resource::RLIMIT_NPROC,
                value: self.processes,
                hard_margin: 0,
            },
            Entry {
                name: "RLIMIT_FSIZE",
                resource: Resource::RLIMIT_FSIZE,
                value: self.file_size_bytes,
                hard_margin: 0,
            },
        ]
    }
}

struct Entry {
    name: &'static str,
    resource: Resource,
    value: Option<u64>,
    /// How far above the soft limit the hard one goes.
    hard_margin: u64,
}

impl Entry {
    fn hard(&self, soft: u64) -> u64 {
        soft.saturating_add(self.hard_margin)
    }
}

/// `cpu=10s as=2048MiB …`, or `none`; for the startup log.
impl fmt::Display for ResourceLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(secs) = self.cpu_secs {
            parts.push(format!("cpu={secs}s"));
        }
        if let Some(bytes) = self.address_space_bytes {
            parts.push(format!("as={}", size(bytes)));
        }
        if let Some(n) = self.open_files {
            parts.push(format!("nofile={n}"));
        }
        if let Some(n) = self.processes {
            parts.push(format!("nproc={n}"));
        }
        if let Some(bytes) = self.file_size_bytes {
            parts.push(format!("fsize={}", size(bytes)));
        }
        if parts.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&parts.join(" "))
        }
    }
}

fn size(bytes: u64) -> String {
    if bytes.is_multiple_of(MIB) {
        format!("{}MiB", bytes / MIB)
    } else {
        format!("{bytes}B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_by_default() {
        let limits = ResourceLimits::default();
        assert!(limits.is_empty());
        assert_eq!(limits.to_string(), "none");
        assert_eq!(serde_json::to_string(&limits).unwrap(), "{}");
        assert!(limits.lowered_by_current_limits().is_empty());
        // Nothing to apply, nothing changes.
        limits.apply().unwrap();
    }

    #[test]
    fn any_limit_makes_it_non_empty_and_round_trips() {
        let limits = ResourceLimits {
            cpu_secs: Some(10),
            address_space_bytes: Some(2048 * MIB),
            open_files: Some(256),
            processes: Some(64),
            file_size_bytes: Some(MIB + 1),
        };
        assert!(!limits.is_empty());
        assert_eq!(
            limits.to_string(),
            "cpu=10s as=2048MiB nofile=256 nproc=64 fsize=1048577B"
        );
        let json = serde_json::to_string(&limits).unwrap();
        assert_eq!(
            serde_json::from_str::<ResourceLimits>(&json).unwrap(),
            limits
        );
        let one = ResourceLimits {
            file_size_bytes: Some(MIB),
            ..ResourceLimits::default()
        };
        assert!(!one.is_empty());
        assert_eq!(
            serde_json::to_string(&one).unwrap(),
            r#"{"file_size_bytes":1048576}"#
        );
    }

    #[test]
    fn the_cpu_hard_limit_leaves_a_second_for_sigxcpu() {
        let limits = ResourceLimits {
            cpu_secs: Some(5),
            open_files: Some(100),
            ..ResourceLimits::default()
        };
        let entries = limits.entries();
        let cpu = entries.iter().find(|e| e.name == "RLIMIT_CPU").unwrap();
        assert_eq!(cpu.hard(5), 6);
        let nofile = entries.iter().find(|e| e.name == "RLIMIT_NOFILE").unwrap();
        assert_eq!(nofile.hard(100), 100);
        assert_eq!(cpu.hard(u64::MAX), u64::MAX);
    }

    #[test]
    fn limits_above_the_hard_limit_are_reported_as_lowered() {
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        if hard == u64::MAX {
            // Unlimited here: nothing can be lowered.
            return;
        }
        let limits = ResourceLimits {
            open_files: Some(hard + 1),
            ..ResourceLimits::default()
        };
        assert_eq!(
            limits.lowered_by_current_limits(),
            [Lowered {
                resource: "RLIMIT_NOFILE",
                configured: hard + 1,
                effective: hard,
            }]
        );
    }
}
