//! What this host can enforce, found out once at startup by running the
//! helper's probe (`keel-tool-runner sandbox-exec --probe`): the probe
//! confines itself exactly as a command would be and reports what took, so
//! the status is what commands really get, not what the kernel claims.

use std::path::Path;
use std::process::{Command, Stdio};

use keel_proto::v1::GetSandboxStatusResponse;

use super::SandboxPolicy;
use super::helper::{ProbeReport, SUBCOMMAND};

/// The sandbox enforcement of this tool-runner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxStatus {
    /// Landlock confines writes (read-only, workspace-write).
    pub filesystem_enforced: bool,
    /// `.git`, `.agents` and `.codex` inside writable roots are read-only.
    pub protected_paths_enforced: bool,
    /// seccomp refuses network sockets.
    pub network_enforced: bool,
    /// The mechanisms in use, e.g. "landlock abi 7, mount namespace, seccomp".
    pub mechanism: String,
    /// Why enforcement is missing or partial; empty when complete.
    pub detail: String,
}

impl SandboxStatus {
    /// Nothing is enforced, for `detail`'s reason.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self {
            filesystem_enforced: false,
            protected_paths_enforced: false,
            network_enforced: false,
            mechanism: "none".to_string(),
            detail: detail.into(),
        }
    }

    /// Runs the probe of the helper binary `helper`.
    pub fn probe(helper: &Path) -> Self {
        let output = Command::new(helper)
            .args([SUBCOMMAND, "--probe"])
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
            missing.push(format!(
                "filesystem restrictions are not enforced: {}",
                report.landlock_detail
            ));
        }
        if report.mounts_enforced {
            mechanisms.push("mount namespace".to_string());
        } else {
            missing.push(format!(
                "protected paths (.git, .agents, .codex) inside writable roots stay writable: {}",
                report.mounts_detail
            ));
        }
        let network_enforced = report.seccomp_enforced && report.network_refused;
        if report.seccomp_enforced {
            mechanisms.push("seccomp".to_string());
        }
        if !network_enforced {
            missing.push(format!(
                "network restrictions are not enforced: {}",
                if report.seccomp_detail.is_empty() {
                    "a TCP socket was not refused under the filter"
                } else {
                    &report.seccomp_detail
                }
            ));
        }
        Self {
            filesystem_enforced: report.landlock_enforced,
            protected_paths_enforced: report.mounts_enforced,
            network_enforced,
            mechanism: if mechanisms.is_empty() {
                "none".to_string()
            } else {
                mechanisms.join(", ")
            },
            detail: missing.join("; "),
        }
    }

    /// Whether everything `policy` restricts is enforced here.
    pub fn enforces(&self, policy: &SandboxPolicy) -> bool {
        (!policy.is_sandboxed() || self.filesystem_enforced)
            && (!policy.restricts_network() || self.network_enforced)
    }

    pub fn to_proto(&self) -> GetSandboxStatusResponse {
        GetSandboxStatusResponse {
            filesystem_enforced: self.filesystem_enforced,
            network_enforced: self.network_enforced,
            mechanism: self.mechanism.clone(),
            detail: self.detail.clone(),
        }
    }
}
