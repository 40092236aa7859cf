//! After a sandboxed run failed (Codex: `codex-rs/core/src/tools/orchestrator.rs`, steps 3–4).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::{ApprovalKey, ApprovalPolicy};

/// The question Codex asks before re-running without the sandbox.
const RETRY_REASON: &str = "command failed; retry without sandbox?";

/// Whether a finished run is a sandbox *denial*: a sandbox was active and
/// Codex's rule (the tool model's [`keel_tool_model::is_sandbox_denial`])
/// says the failure was the sandbox's doing. Other failures — exit 2, 126,
/// 127 without the denial words — are the command's own.
pub fn is_sandbox_denial(
    sandboxed: bool,
    exit_code: i32,
    stdout: &str,
    stderr: &str,
    aggregated: &str,
) -> bool {
    sandboxed && keel_tool_model::is_sandbox_denial(exit_code, false, &[stdout, stderr, aggregated])
}

/// Everything [`decide_after_sandbox_denial`] needs.
#[derive(Clone, Copy, Debug)]
pub struct SandboxDenialInput<'a> {
    /// The turn's approval policy.
    pub approval_policy: ApprovalPolicy,
    /// The user approved this call before it ran (a prompt, or a session
    /// approval: `already_approved` of the allow decision).
    pub already_approved: bool,
    /// The call's session key ([`approval_key`](super::approval_key)).
    pub approval_key: &'a ApprovalKey,
    /// Keys approved with `approved_for_session` earlier in the session.
    pub approved_for_session: &'a BTreeSet<ApprovalKey>,
    /// The amendment of the allow decision, offered with the question.
    pub proposed_amendment: Option<&'a [String]>,
}

/// What to do after a sandbox denial.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum DenialDecision {
    /// Give the denial output to the model as the call's result
    /// (`on-request`, `never`).
    ReturnToModel,
    /// Re-run now without the sandbox: this call was already approved.
    RerunUnsandboxed,
    /// Ask first (`exec_approval_request` with this reason); on approval
    /// re-run without the sandbox.
    Prompt {
        /// `command failed; retry without sandbox?`
        reason: String,
        /// Offered as `approved_execpolicy_amendment`.
        proposed_amendment: Option<Vec<String>>,
    },
}

/// Codex's `codex-rs/core/src/tools/orchestrator.rs` step 4: `untrusted` and `on-failure` may re-run a denied command
/// without the sandbox, asking first unless this call (or its session key)
/// was already approved; `on-request` and `never` return the denial to the
/// model.
pub fn decide_after_sandbox_denial(input: &SandboxDenialInput<'_>) -> DenialDecision {
    if !super::asks_after_denial(input.approval_policy) {
        return DenialDecision::ReturnToModel;
    }
    if input.already_approved || input.approved_for_session.contains(input.approval_key) {
        return DenialDecision::RerunUnsandboxed;
    }
    DenialDecision::Prompt {
        reason: RETRY_REASON.to_owned(),
        proposed_amendment: input.proposed_amendment.map(<[String]>::to_vec),
    }
}

/// When the tool-runner could not run a call because its host cannot
/// enforce the sandbox (a restricted call is never run under a partial
/// sandbox): under `never` the refusal goes to the model; under every other
/// policy a person is asked whether to run it without the sandbox — every
/// time, since approving a command (or its session key) approved it in the
/// sandbox, not outside it. `why` is the tool-runner's text.
pub fn decide_when_sandbox_unavailable(
    approval_policy: ApprovalPolicy,
    why: &str,
) -> DenialDecision {
    if approval_policy == ApprovalPolicy::Never {
        return DenialDecision::ReturnToModel;
    }
    DenialDecision::Prompt {
        reason: format!("{why}; run it without the sandbox?"),
        proposed_amendment: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unenforceable_sandbox_is_put_to_a_person_except_under_never() {
        let why = "the workspace-write sandbox cannot be enforced on this host (landlock missing)";
        assert_eq!(
            decide_when_sandbox_unavailable(ApprovalPolicy::Never, why),
            DenialDecision::ReturnToModel
        );
        for policy in [
            ApprovalPolicy::Untrusted,
            ApprovalPolicy::OnFailure,
            ApprovalPolicy::OnRequest,
        ] {
            match decide_when_sandbox_unavailable(policy, why) {
                DenialDecision::Prompt {
                    reason,
                    proposed_amendment: None,
                } => assert!(reason.starts_with(why) && reason.ends_with("without the sandbox?")),
                other => panic!("{policy:?}: {other:?}"),
            }
        }
    }
}
