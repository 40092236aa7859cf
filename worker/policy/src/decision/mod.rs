//! Approval decisions (Codex compat §2.5, §5, §10.3): whether a command or
//! patch runs, runs in the sandbox, asks the user first, or is refused.

mod command;
mod denial;
mod key;
mod patch;
mod review;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use command::{CommandDecision, CommandDecisionInput, decide_command};
pub use denial::{
    DenialDecision, SandboxDenialInput, decide_after_sandbox_denial,
    decide_when_sandbox_unavailable, is_sandbox_denial,
};
pub use key::{ApprovalKey, approval_key, canonicalize_command_for_approval};
pub use patch::{
    GitEntry, PatchChange, PatchDecision, PatchDecisionInput, RootFacts, WritableRoot,
    decide_patch, patch_approval_keys,
};
pub use review::{
    ApprovalSubject, ExecPolicyAmendment, NetworkPolicyAmendment, NetworkPolicyRuleAction,
    ReviewDecision, ReviewOutcome, resolve_review,
};

/// When the user is asked (Codex's `AskForApproval`). Serialised and parsed
/// with Codex's spellings: `untrusted`, `on-failure`, `on-request`, `never`
/// (snake_case spellings are accepted when deserialising too).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub enum ApprovalPolicy {
    /// Only known-safe commands run unasked; patches always ask.
    #[serde(
        rename = "untrusted",
        alias = "unless_trusted",
        alias = "unless-trusted"
    )]
    Untrusted,
    /// Everything runs sandboxed; a sandbox denial asks to re-run without it.
    #[serde(rename = "on-failure", alias = "on_failure")]
    OnFailure,
    /// The model asks by requesting escalation (the default).
    #[default]
    #[serde(rename = "on-request", alias = "on_request")]
    OnRequest,
    /// Never ask: what would ask is refused instead.
    #[serde(rename = "never")]
    Never,
}

impl ApprovalPolicy {
    /// Codex's spelling, as accepted by [`FromStr`].
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Untrusted => "untrusted",
            Self::OnFailure => "on-failure",
            Self::OnRequest => "on-request",
            Self::Never => "never",
        }
    }

    /// The name Codex's `{:?}` prints, which is what reaches the model in
    /// the §2.5 escalation rejection.
    pub fn codex_debug_name(self) -> &'static str {
        match self {
            Self::Untrusted => "UnlessTrusted",
            Self::OnFailure => "OnFailure",
            Self::OnRequest => "OnRequest",
            Self::Never => "Never",
        }
    }

    /// Whether a sandbox denial may turn into "retry without the sandbox?"
    /// (§5.4 step 4).
    pub(crate) fn asks_after_denial(self) -> bool {
        matches!(self, Self::Untrusted | Self::OnFailure)
    }
}

impl fmt::Display for ApprovalPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ApprovalPolicy {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "untrusted" => Ok(Self::Untrusted),
            "on-failure" => Ok(Self::OnFailure),
            "on-request" => Ok(Self::OnRequest),
            "never" => Ok(Self::Never),
            _ => Err(ParseError {
                what: "approval policy",
                value: s.to_owned(),
                expected: "untrusted, on-failure, on-request, never",
            }),
        }
    }
}

/// Where commands may write (Codex's `sandbox_mode`). Serialised and parsed
/// with Codex's spellings: `read-only`, `workspace-write`,
/// `danger-full-access`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub enum SandboxMode {
    /// No writes; the whole disk is readable.
    #[default]
    #[serde(rename = "read-only", alias = "read_only")]
    ReadOnly,
    /// Writes only inside the writable roots.
    #[serde(rename = "workspace-write", alias = "workspace_write")]
    WorkspaceWrite,
    /// No sandbox at all.
    #[serde(rename = "danger-full-access", alias = "danger_full_access")]
    DangerFullAccess,
}

impl SandboxMode {
    /// Codex's spelling, as accepted by [`FromStr`].
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReadOnly => "read-only",
            Self::WorkspaceWrite => "workspace-write",
            Self::DangerFullAccess => "danger-full-access",
        }
    }

    /// Whether the filesystem is restricted, which is also whether the
    /// platform sandbox is used (§5.4 step 2).
    pub fn is_restricted(self) -> bool {
        !matches!(self, Self::DangerFullAccess)
    }
}

impl fmt::Display for SandboxMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SandboxMode {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read-only" => Ok(Self::ReadOnly),
            "workspace-write" => Ok(Self::WorkspaceWrite),
            "danger-full-access" => Ok(Self::DangerFullAccess),
            _ => Err(ParseError {
                what: "sandbox mode",
                value: s.to_owned(),
                expected: "read-only, workspace-write, danger-full-access",
            }),
        }
    }
}

/// §5.4 step 1 for a tool without a rule of its own (commands and patches
/// have theirs): whether a call must be approved before it runs. Never
/// under `never` and `on-failure`, under `on-request` only when the
/// filesystem is restricted, always under `untrusted`.
pub fn tool_requires_approval(policy: ApprovalPolicy, mode: SandboxMode) -> bool {
    match policy {
        ApprovalPolicy::Never | ApprovalPolicy::OnFailure => false,
        ApprovalPolicy::OnRequest => mode.is_restricted(),
        ApprovalPolicy::Untrusted => true,
    }
}

/// A policy or mode name that is not one of Codex's spellings.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("unknown {what} `{value}` (expected one of: {expected})")]
pub struct ParseError {
    what: &'static str,
    value: String,
    expected: &'static str,
}

/// The model's `sandbox_permissions` argument: the tool model's type, so
/// the workflow decides on what the tool-runner will read.
pub use keel_tool_model::SandboxPermissions;

/// The model's `additional_permissions` argument (feature-gated upstream):
/// `{network:{enabled}, file_system:{read:[abs], write:[abs]}}`. Part of the
/// approved-for-session key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AdditionalPermissions {
    /// Network access beyond the sandbox's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkPermissions>,
    /// Paths beyond the writable roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_system: Option<FileSystemPermissions>,
}

/// `additional_permissions.network`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NetworkPermissions {
    /// Turn the network on for this command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// `additional_permissions.file_system`: absolute paths.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FileSystemPermissions {
    /// Extra readable paths.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<Vec<String>>,
    /// Extra writable paths.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write: Option<Vec<String>>,
}
