//! The settings a call is decided and run under, with Codex's spellings
//! (Codex: `codex-rs/protocol/src/protocol.rs`, `AskForApproval` and
//! `SandboxMode`): the approval policy (for the workflow's decisions) and
//! the sandbox mode (which the tool-runner enforces). Part of workflow
//! history: never rename a variant or its spelling.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

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
    /// the escalation rejection
    /// (`codex-rs/core/src/tools/handlers/shell.rs`).
    pub fn codex_debug_name(self) -> &'static str {
        match self {
            Self::Untrusted => "UnlessTrusted",
            Self::OnFailure => "OnFailure",
            Self::OnRequest => "OnRequest",
            Self::Never => "Never",
        }
    }
}

impl fmt::Display for ApprovalPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ApprovalPolicy {
    type Err = SettingParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "untrusted" => Ok(Self::Untrusted),
            "on-failure" => Ok(Self::OnFailure),
            "on-request" => Ok(Self::OnRequest),
            "never" => Ok(Self::Never),
            _ => Err(SettingParseError {
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
    /// platform sandbox is used (Codex: `codex-rs/core/src/tools/sandboxing.rs`).
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
    type Err = SettingParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read-only" => Ok(Self::ReadOnly),
            "workspace-write" => Ok(Self::WorkspaceWrite),
            "danger-full-access" => Ok(Self::DangerFullAccess),
            _ => Err(SettingParseError {
                what: "sandbox mode",
                value: s.to_owned(),
                expected: "read-only, workspace-write, danger-full-access",
            }),
        }
    }
}

/// A policy or mode name that is not one of Codex's spellings.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{value}` (expected one of: {expected})")]
pub struct SettingParseError {
    what: &'static str,
    value: String,
    expected: &'static str,
}
