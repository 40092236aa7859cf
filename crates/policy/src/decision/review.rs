//! The user's answer to an approval request (Codex: `codex-rs/protocol/src/protocol.rs`).

use serde::{Deserialize, Serialize};

use crate::execpolicy::amendment_rule_text;

/// A prefix rule the user accepted along with the command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecPolicyAmendment {
    /// The argv prefix to allow.
    pub command: Vec<String>,
}

/// Allow or deny a host in a network amendment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkPolicyRuleAction {
    /// Let the command reach the host.
    Allow,
    /// Keep it blocked.
    Deny,
}

/// A network rule the user chose along with the command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkPolicyAmendment {
    /// The host the command tried to reach.
    pub host: String,
    /// Allow or deny it.
    pub action: NetworkPolicyRuleAction,
}

/// Codex's `ReviewDecision` (`denied` is the default).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewDecision {
    /// Run once.
    Approved,
    /// Run, and persist the prefix rule.
    ApprovedExecpolicyAmendment {
        /// The prefix rule to persist.
        proposed_execpolicy_amendment: ExecPolicyAmendment,
    },
    /// Run, and remember the approval key for the session.
    ApprovedForSession,
    /// Run if the amendment allows the host.
    NetworkPolicyAmendment {
        /// The network rule chosen.
        network_policy_amendment: NetworkPolicyAmendment,
    },
    /// Do not run.
    #[default]
    Denied,
    /// Nobody answered in time: do not run.
    TimedOut,
    /// Deny, and stop the turn until the user's next input.
    Abort,
}

/// What was approved: the rejection texts differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalSubject {
    /// `exec_approval_request`.
    Command,
    /// `apply_patch_approval_request`.
    Patch,
}

/// What the workflow does with an answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewOutcome {
    /// Run the command / apply the patch.
    pub run: bool,
    /// Insert the request's approval key(s) into the session's set.
    pub remember_for_session: bool,
    /// Append this line to `default.rules` (unless already there) and add
    /// the prefix to the in-memory rules.
    pub persist_rule: Option<String>,
    /// The prefix of `persist_rule`.
    pub allow_prefix: Option<Vec<String>>,
    /// The tool output when not run.
    pub rejection: Option<String>,
    /// `abort`: end the turn after answering the call.
    pub abort_turn: bool,
}

/// Maps a [`ReviewDecision`] to its effects. An approved
/// `require_escalated` call or on-failure retry runs without the sandbox;
/// that choice was already made by the decision that asked.
pub fn resolve_review(subject: ApprovalSubject, decision: &ReviewDecision) -> ReviewOutcome {
    let run = ReviewOutcome {
        run: true,
        ..ReviewOutcome::default()
    };
    match decision {
        ReviewDecision::Approved => run,
        ReviewDecision::ApprovedForSession => ReviewOutcome {
            remember_for_session: true,
            ..run
        },
        ReviewDecision::ApprovedExecpolicyAmendment {
            proposed_execpolicy_amendment,
        } => {
            let prefix = &proposed_execpolicy_amendment.command;
            // An empty prefix cannot become a rule; the command still runs.
            let persist_rule = amendment_rule_text(prefix).ok();
            ReviewOutcome {
                allow_prefix: persist_rule.as_ref().map(|_| prefix.clone()),
                persist_rule,
                ..run
            }
        }
        ReviewDecision::NetworkPolicyAmendment {
            network_policy_amendment,
        } if network_policy_amendment.action == NetworkPolicyRuleAction::Allow => run,
        ReviewDecision::NetworkPolicyAmendment { .. }
        | ReviewDecision::Denied
        | ReviewDecision::TimedOut => rejected(subject, false),
        ReviewDecision::Abort => rejected(subject, true),
    }
}

fn rejected(subject: ApprovalSubject, abort_turn: bool) -> ReviewOutcome {
    let text = match subject {
        ApprovalSubject::Command => "exec command rejected by user",
        ApprovalSubject::Patch => "patch rejected by user",
    };
    ReviewOutcome {
        rejection: Some(text.to_owned()),
        abort_turn,
        ..ReviewOutcome::default()
    }
}
