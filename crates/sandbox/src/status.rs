//! What this host can enforce, found out once at startup by running the
//! helper's probe (`keel-tool-runner sandbox-exec --probe DIR`): the probe
//! confines itself exactly as a command would be and checks what took, so
//! the status is what commands really get, not what the kernel claims.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use keel_proto::v1::GetSandboxStatusResponse;

use super::SandboxPolicy;
use super::helper::{PROBE_FLAG, ProbeReport, SUBCOMMAND};

/// The sandbox enforcement of this tool-runner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxStatus {
    /// Landlock confines writes (read-only, workspace-write).
    pub filesystem_enforced: bool,
    /// `.git`, `.agents` and `.codex` inside writable roots are read-only.
    pub protected_paths_enforced: bool,
    /// Commands run in a PID namespace of their own with their own `/proc`.
    pub processes_isolated: bool,
    /// Hidden paths are masked.
    pub hidden_paths_enforced: bool,
    /// The minimal `/dev`, the reduced capabilities and the seccomp filter
    /// of always-denied calls are in place.
    pub privileges_dropped: bool,
    /// seccomp refuses network sockets.
    pub network_enforced: bool,
    /// The mechanisms in use, e.g. "landlock abi 7, mount namespace, …".
    pub mechanism: String,
    /// Why enforcement is missing or partial, per part; empty when
    /// complete.
    missing: Vec<(Part, String)>,
}

/// The parts of the sandbox, as [`SandboxStatus::missing_for`] names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Filesystem,
    ProtectedPaths,
    Processes,
    HiddenPaths,
    Privileges,
    Network,
}

impl SandboxStatus {
    /// Nothing is enforced, for `detail`'s reason.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self {
            filesystem_enforced: false,
            protected_paths_enforced: false,
            processes_isolated: false,
            hidden_paths_enforced: false,
            privileges_dropped: false,
            network_enforced: false,
            mechanism: "none".to_string(),
            missing: vec![(Part::Filesystem, detail.into())],
        }
    }

    /// Runs the probe of the helper binary `helper`, in a new directory
    /// under `tmp`, removed afterwards.
    pub fn probe(helper: &Path, tmp: &Path) -> Self {
        let dir = tmp.join(format!(
            "keel-sandbox-probe-{}",
            uuid::Uuid::new_v4().simple()
        ));
        if let Err(err) = std::fs::create_dir(&dir) {
            return Self::unavailable(format!(
                "cannot create the probe directory {}: {err}",
                dir.display()
            ));
        }
        let status = Self::probe_in(helper, &dir);
        if let Err(err) = std::fs::remove_dir_all(&dir) {
            tracing::warn!(dir = %dir.display(), error = %err, "cannot remove the sandbox probe's directory");
        }
        status
    }

    fn probe_in(helper: &Path, dir: &PathBuf) -> Self {
        let output = Command::new(helper)
            .arg(SUBCOMMAND)
            .arg(PROBE_FLAG)
            .arg(dir)
            // The helper's environment is fixed: nothing of ours.
            .env_clear()
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .output();
        let output = match output {
            Ok(output) => output,
            Err(err) => {
                return Self::unavailable(format!(
                    "cannot run the sandbox helper {}: {err}",
                    helper.display()
                ));
            }
        };
        match serde_json::from_slice::<ProbeReport>(&output.stdout) {
            Ok(report) => Self::from_report(&report),
            Err(err) => Self::unavailable(format!(
                "the sandbox helper's probe failed ({err}): {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )),
        }
    }

    pub(crate) fn from_report(report: &ProbeReport) -> Self {
        let mut mechanisms = Vec::new();
        let mut missing = Vec::new();
        if report.landlock_enforced {
            mechanisms.push(format!("landlock abi {}", report.landlock_abi));
        } else {
            missing.push((
                Part::Filesystem,
                format!(
                    "filesystem restrictions are not enforced: {}",
                    report.landlock_detail
                ),
            ));
        }
        if report.mounts_enforced {
            mechanisms.push("mount namespace".to_string());
        } else {
            missing.push((
                Part::ProtectedPaths,
                format!(
                    "protected paths (.git, .agents, .codex) inside writable roots stay writable: {}",
                    report.mounts_detail
                ),
            ));
        }
        if report.hidden_enforced {
            mechanisms.push("hidden paths".to_string());
        } else {
            missing.push((
                Part::HiddenPaths,
                format!(
                    "hidden paths (the tool-runner's state, the blob store, Codex's home) stay readable: {}",
                    report.hidden_detail
                ),
            ));
        }
        if report.processes_isolated {
            mechanisms.push("pid namespace".to_string());
        } else {
            missing.push((
                Part::Processes,
                format!(
                    "commands see and can signal other processes: {}",
                    report.processes_detail
                ),
            ));
        }
        if report.devices_minimal {
            mechanisms.push("minimal /dev".to_string());
        }
        if report.capabilities_dropped {
            mechanisms.push("reduced capabilities".to_string());
        }
        if report.seccomp_enforced {
            mechanisms.push("seccomp".to_string());
        }
        let privileges_dropped =
            report.devices_minimal && report.capabilities_dropped && report.seccomp_enforced;
        if !privileges_dropped {
            let mut why = Vec::new();
            if !report.devices_minimal {
                why.push(format!("no minimal /dev: {}", report.devices_detail));
            }
            if !report.capabilities_dropped {
                why.push(format!(
                    "capabilities not reduced: {}",
                    report.capabilities_detail
                ));
            }
            if !report.seccomp_enforced {
                why.push(format!("no seccomp filter: {}", report.seccomp_detail));
            }
            missing.push((
                Part::Privileges,
                format!(
                    "devices and kernel interfaces stay reachable ({})",
                    why.join(", ")
                ),
            ));
        }
        let network_enforced = report.seccomp_enforced && report.network_refused;
        if !network_enforced {
            missing.push((
                Part::Network,
                format!(
                    "network restrictions are not enforced: {}",
                    if report.seccomp_detail.is_empty() {
                        "a TCP socket was not refused under the filter"
                    } else {
                        &report.seccomp_detail
                    }
                ),
            ));
        }
        Self {
            filesystem_enforced: report.landlock_enforced,
            protected_paths_enforced: report.mounts_enforced,
            processes_isolated: report.processes_isolated,
            hidden_paths_enforced: report.hidden_enforced,
            privileges_dropped,
            network_enforced,
            mechanism: if mechanisms.is_empty() {
                "none".to_string()
            } else {
                mechanisms.join(", ")
            },
            missing,
        }
    }

    /// Whether everything `policy` restricts is enforced here: for any
    /// sandboxed policy the filesystem, the protected paths, the process
    /// isolation, the hidden paths and the dropped privileges; the network
    /// too when the policy turns it off.
    pub fn enforces(&self, policy: &SandboxPolicy) -> bool {
        self.missing_parts(policy).next().is_none()
    }

    /// Why `policy` is not fully enforced here; empty when it is.
    pub fn missing_for(&self, policy: &SandboxPolicy) -> String {
        self.missing_parts(policy)
            .map(|(_, why)| why.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn missing_parts<'a>(
        &'a self,
        policy: &SandboxPolicy,
    ) -> impl Iterator<Item = &'a (Part, String)> + 'a {
        let sandboxed = policy.is_sandboxed();
        let network = policy.restricts_network();
        self.missing.iter().filter(move |(part, _)| match part {
            Part::Network => network,
            Part::Filesystem
            | Part::ProtectedPaths
            | Part::Processes
            | Part::HiddenPaths
            | Part::Privileges => sandboxed,
        })
    }

    /// Everything missing, for the startup log and the status RPC.
    pub fn detail(&self) -> String {
        self.missing
            .iter()
            .map(|(_, why)| why.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Whether every part is enforced.
    pub fn complete(&self) -> bool {
        self.missing.is_empty()
    }

    /// The status RPC's answer; `hidden_paths` are the paths commands
    /// cannot see.
    pub fn to_proto(&self, hidden_paths: &[PathBuf]) -> GetSandboxStatusResponse {
        GetSandboxStatusResponse {
            filesystem_enforced: self.filesystem_enforced,
            network_enforced: self.network_enforced,
            mechanism: self.mechanism.clone(),
            detail: self.detail(),
            protected_paths_enforced: self.protected_paths_enforced,
            processes_isolated: self.processes_isolated,
            hidden_paths_enforced: self.hidden_paths_enforced,
            hidden_paths: hidden_paths
                .iter()
                .map(|path| path.to_string_lossy().into_owned())
                .collect(),
            privileges_dropped: self.privileges_dropped,
        }
    }
}
