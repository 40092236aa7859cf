//! Approval decisions (Codex: `codex-rs/core/src/tools/handlers/shell.rs`, `codex-rs/core/src/tools/orchestrator.rs`, `codex-rs/protocol/src/protocol.rs`): whether a command or
//! patch runs, runs in the sandbox, asks the user first, or is refused.

mod command;
mod denial;
mod key;
mod patch;
mod review;

use serde::{Deserialize, Serialize};

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

/// The approval policy and sandbox mode: the tool model's types, shared with
/// the tool-runner (which enforces the mode) without this crate.
pub use keel_tool_model::{ApprovalPolicy, SandboxMode};

/// Whether a sandbox denial may turn into "retry without the sandbox?"
/// (Codex: `codex-rs/core/src/tools/orchestrator.rs`, step 4).
pub(crate) fn asks_after_denial(policy: ApprovalPolicy) -> bool {
    matches!(
        policy,
        ApprovalPolicy::Untrusted | ApprovalPolicy::OnFailure
    )
}

/// Codex's `codex-rs/core/src/tools/orchestrator.rs` step 1 for a tool without a rule of its own (commands and patches
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
