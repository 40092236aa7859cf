//! The decision for one command call: the escalation check
//! (`codex-rs/core/src/tools/handlers/shell.rs`), exec-policy
//! rules (Codex: `codex-rs/execpolicy/`), the heuristics for unmatched commands (Codex: `codex-rs/core/src/exec_policy.rs`) and the
//! approval half of the orchestration (Codex: `codex-rs/core/src/tools/orchestrator.rs`, steps 1–2).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::key::approval_key;
use super::{AdditionalPermissions, ApprovalKey, ApprovalPolicy, SandboxMode, SandboxPermissions};
use crate::execpolicy::{RuleDecision, RuleMatch, Rules};
use crate::parse_command::join;
use crate::safety::{is_dangerous, is_known_safe};
use crate::shell;

const PROMPT_CONFLICT_REASON: &str =
    "approval required by policy, but AskForApproval is set to Never";

/// Prefixes the model may suggest but that are never proposed as
/// amendments: allowing them would allow almost anything.
const BANNED_PREFIX_SUGGESTIONS: &[&[&str]] = &[
    &["python3"],
    &["python3", "-"],
    &["python3", "-c"],
    &["python"],
    &["python", "-"],
    &["python", "-c"],
    &["py"],
    &["py", "-3"],
    &["pythonw"],
    &["pyw"],
    &["pypy"],
    &["pypy3"],
    &["git"],
    &["bash"],
    &["bash", "-lc"],
    &["sh"],
    &["sh", "-c"],
    &["sh", "-lc"],
    &["zsh"],
    &["zsh", "-lc"],
    &["/bin/zsh"],
    &["/bin/zsh", "-lc"],
    &["/bin/bash"],
    &["/bin/bash", "-lc"],
    &["pwsh"],
    &["pwsh", "-Command"],
    &["pwsh", "-c"],
    &["powershell"],
    &["powershell", "-Command"],
    &["powershell", "-c"],
    &["powershell.exe"],
    &["powershell.exe", "-Command"],
    &["powershell.exe", "-c"],
    &["env"],
    &["sudo"],
    &["node"],
    &["node", "-e"],
    &["perl"],
    &["perl", "-e"],
    &["ruby"],
    &["ruby", "-e"],
    &["php"],
    &["php", "-r"],
    &["lua"],
    &["lua", "-e"],
    &["osascript"],
];

/// Everything [`decide_command`] needs; all of it comes from the tool call,
/// the turn's settings and the session's durable state.
#[derive(Clone, Copy, Debug)]
pub struct CommandDecisionInput<'a> {
    /// The argv that will run (for string tools, `[shell, "-lc", script]`).
    pub argv: &'a [String],
    /// The command's working directory (part of the session key).
    pub cwd: &'a str,
    /// The turn's approval policy.
    pub approval_policy: ApprovalPolicy,
    /// The turn's sandbox mode.
    pub sandbox_mode: SandboxMode,
    /// The model's `sandbox_permissions`.
    pub sandbox_permissions: SandboxPermissions,
    /// The model's `additional_permissions` (part of the session key).
    pub additional_permissions: Option<&'a AdditionalPermissions>,
    /// The model's `justification`, shown as the question when no rule
    /// gives a reason.
    pub justification: Option<&'a str>,
    /// The model's suggested `prefix_rule`.
    pub prefix_rule: Option<&'a [String]>,
    /// The exec-policy rules in force (amendments included).
    pub rules: &'a Rules,
    /// Keys approved with `approved_for_session` earlier in the session.
    pub approved_for_session: &'a BTreeSet<ApprovalKey>,
}

/// What to do with a command call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CommandDecision {
    /// Run it now.
    Allow {
        /// Run under the platform sandbox. False under
        /// `danger-full-access`, for `require_escalated` and when explicit
        /// allow rules cover every part of the command.
        sandboxed: bool,
        /// The user already approved this command (for the session). Pass
        /// it to [`decide_after_sandbox_denial`](super::decide_after_sandbox_denial).
        already_approved: bool,
        /// Offered if a sandbox denial later asks to re-run unsandboxed.
        proposed_amendment: Option<Vec<String>>,
    },
    /// Ask the user (`exec_approval_request`), then resolve the answer with
    /// [`resolve_review`](super::resolve_review).
    Prompt {
        /// The question: a rule's reason, else the model's justification.
        reason: Option<String>,
        /// The prefix `approved_execpolicy_amendment` would allow.
        proposed_amendment: Option<Vec<String>>,
        /// Remember this on `approved_for_session`.
        approval_key: ApprovalKey,
        /// Where it runs once approved: an approved `require_escalated`
        /// runs without the sandbox.
        sandboxed: bool,
    },
    /// Refused by a rule or by the policy.
    Forbid {
        /// The tool output for the model.
        reason: String,
    },
    /// Refused before any rule is consulted (Codex: `codex-rs/core/src/tools/handlers/shell.rs`).
    Reject {
        /// The tool output for the model.
        text: String,
    },
}

/// The settings the unmatched-command heuristics depend on.
#[derive(Clone, Copy)]
struct Heuristics {
    policy: ApprovalPolicy,
    mode: SandboxMode,
    permissions: SandboxPermissions,
    /// The command came from the heredoc fallback (Codex: `codex-rs/shell-command/src/bash.rs`).
    heredoc: bool,
}

/// How one parsed command was judged: by rules, or (no rule matched) by
/// the heuristics.
enum Judged {
    Rules(Vec<RuleMatch>),
    Heuristics {
        command: Vec<String>,
        decision: RuleDecision,
    },
}

impl Judged {
    fn decision(&self) -> RuleDecision {
        match self {
            Self::Rules(matches) => matches
                .iter()
                .map(|m| m.decision)
                .max()
                .unwrap_or(RuleDecision::Allow),
            Self::Heuristics { decision, .. } => *decision,
        }
    }
}

/// Decides a command call the way Codex's shell handler and
/// `create_exec_approval_requirement_for_command` do. Deterministic and
/// pure.
pub fn decide_command(input: &CommandDecisionInput<'_>) -> CommandDecision {
    let policy = input.approval_policy;
    if input.sandbox_permissions.requests_escalation() && policy != ApprovalPolicy::OnRequest {
        let name = policy.codex_debug_name();
        return CommandDecision::Reject {
            text: format!(
                "approval policy is {name}; reject command — you should not ask for escalated permissions if the approval policy is {name}"
            ),
        };
    }
    let (commands, heredoc) = commands_for_policy(input.argv);
    let heuristics = Heuristics {
        policy,
        mode: input.sandbox_mode,
        permissions: input.sandbox_permissions,
        heredoc,
    };
    let judged = judge(input.rules, &commands, heuristics);
    let decision = judged
        .iter()
        .map(Judged::decision)
        .max()
        .unwrap_or(RuleDecision::Allow);
    let escalated = input.sandbox_permissions == SandboxPermissions::RequireEscalated;
    match decision {
        RuleDecision::Forbidden => CommandDecision::Forbid {
            reason: forbidden_reason(input.argv, &judged),
        },
        RuleDecision::Prompt if policy == ApprovalPolicy::Never => CommandDecision::Forbid {
            reason: PROMPT_CONFLICT_REASON.to_owned(),
        },
        RuleDecision::Prompt => {
            let proposed_amendment = if heredoc {
                None
            } else {
                requested_amendment(input, &commands, &judged, heuristics)
                    .or_else(|| heuristic_prompt_amendment(&judged))
            };
            let approval_key = approval_key(
                input.argv,
                input.cwd,
                input.sandbox_permissions,
                input.additional_permissions,
            );
            let sandboxed = !escalated && input.sandbox_mode.is_restricted();
            if input.approved_for_session.contains(&approval_key) {
                return CommandDecision::Allow {
                    sandboxed,
                    already_approved: true,
                    proposed_amendment,
                };
            }
            CommandDecision::Prompt {
                reason: prompt_reason(input.argv, &judged)
                    .or_else(|| input.justification.map(str::to_owned)),
                proposed_amendment,
                approval_key,
                sandboxed,
            }
        }
        RuleDecision::Allow => {
            // Explicit allow rules for every part mean "trusted": no sandbox.
            let bypass = judged.iter().all(|j| matches!(j, Judged::Rules(_)));
            CommandDecision::Allow {
                sandboxed: !(escalated || bypass) && input.sandbox_mode.is_restricted(),
                already_approved: false,
                proposed_amendment: if heredoc {
                    None
                } else {
                    heuristic_allow_amendment(&judged)
                },
            }
        }
    }
}

/// The commands rules are matched against: the plain commands of a script,
/// else the heredoc prefix, else the raw argv. The flag says "heredoc".
fn commands_for_policy(argv: &[String]) -> (Vec<Vec<String>>, bool) {
    match shell::plain_commands(argv) {
        Some(commands) if !commands.is_empty() => (commands, false),
        _ => match shell::heredoc_command_prefix(argv) {
            Some(prefix) => (vec![prefix], true),
            None => (vec![argv.to_vec()], false),
        },
    }
}

fn judge(rules: &Rules, commands: &[Vec<String>], heuristics: Heuristics) -> Vec<Judged> {
    commands
        .iter()
        .map(|command| {
            let matches = rules.matches(command);
            if matches.is_empty() {
                Judged::Heuristics {
                    command: command.clone(),
                    decision: unmatched_decision(command, heuristics),
                }
            } else {
                Judged::Rules(matches)
            }
        })
        .collect()
}

/// Codex's `codex-rs/core/src/exec_policy.rs`, one parsed command that no rule matched.
fn unmatched_decision(command: &[String], h: Heuristics) -> RuleDecision {
    if !h.heredoc && is_known_safe(command) {
        return RuleDecision::Allow;
    }
    if is_dangerous(command) {
        return match h.policy {
            ApprovalPolicy::Never if h.mode.is_restricted() => RuleDecision::Forbidden,
            ApprovalPolicy::Never => RuleDecision::Allow,
            _ => RuleDecision::Prompt,
        };
    }
    match h.policy {
        ApprovalPolicy::Untrusted => RuleDecision::Prompt,
        ApprovalPolicy::OnFailure | ApprovalPolicy::Never => RuleDecision::Allow,
        ApprovalPolicy::OnRequest => {
            if h.mode.is_restricted() && h.permissions.requests_escalation() {
                RuleDecision::Prompt
            } else {
                RuleDecision::Allow
            }
        }
    }
}

/// The model's `prefix_rule`, when it is not banned, no rule already
/// matched, and allowing it would let every part of this command run.
fn requested_amendment(
    input: &CommandDecisionInput<'_>,
    commands: &[Vec<String>],
    judged: &[Judged],
    heuristics: Heuristics,
) -> Option<Vec<String>> {
    let prefix = input.prefix_rule.filter(|p| !p.is_empty())?;
    let banned = BANNED_PREFIX_SUGGESTIONS
        .iter()
        .any(|banned| prefix.iter().map(String::as_str).eq(banned.iter().copied()));
    if banned || judged.iter().any(|j| matches!(j, Judged::Rules(_))) {
        return None;
    }
    let mut amended = input.rules.clone();
    amended.add_allow_prefix(prefix).ok()?;
    judge(&amended, commands, heuristics)
        .iter()
        .all(|j| j.decision() == RuleDecision::Allow)
        .then(|| prefix.to_vec())
}

/// The first command the heuristics prompted for, unless a rule prompts
/// too (allowing the heuristic one would not stop the question).
fn heuristic_prompt_amendment(judged: &[Judged]) -> Option<Vec<String>> {
    if judged
        .iter()
        .any(|j| matches!(j, Judged::Rules(_)) && j.decision() == RuleDecision::Prompt)
    {
        return None;
    }
    first_heuristic(judged, RuleDecision::Prompt)
}

/// Offered when a sandbox denial asks to re-run: the first command the
/// heuristics allowed, unless any rule matched.
fn heuristic_allow_amendment(judged: &[Judged]) -> Option<Vec<String>> {
    if judged.iter().any(|j| matches!(j, Judged::Rules(_))) {
        return None;
    }
    first_heuristic(judged, RuleDecision::Allow)
}

fn first_heuristic(judged: &[Judged], wanted: RuleDecision) -> Option<Vec<String>> {
    judged.iter().find_map(|j| match j {
        Judged::Heuristics { command, decision } if *decision == wanted => Some(command.clone()),
        _ => None,
    })
}

/// The most specific rule match with `decision` (the last of equals, like
/// Codex's `max_by_key`).
fn most_specific(judged: &[Judged], decision: RuleDecision) -> Option<&RuleMatch> {
    judged
        .iter()
        .filter_map(|j| match j {
            Judged::Rules(matches) => Some(matches),
            Judged::Heuristics { .. } => None,
        })
        .flatten()
        .filter(|m| m.decision == decision)
        .max_by_key(|m| m.matched_prefix.len())
}

fn forbidden_reason(argv: &[String], judged: &[Judged]) -> String {
    let command = join(argv);
    match most_specific(judged, RuleDecision::Forbidden) {
        Some(RuleMatch {
            justification: Some(justification),
            ..
        }) => format!("`{command}` rejected: {justification}"),
        Some(rule) => format!(
            "`{command}` rejected: policy forbids commands starting with `{}`",
            join(&rule.matched_prefix)
        ),
        None => format!("`{command}` rejected: blocked by policy"),
    }
}

/// Only a prompting rule gives a reason of its own.
fn prompt_reason(argv: &[String], judged: &[Judged]) -> Option<String> {
    let command = join(argv);
    most_specific(judged, RuleDecision::Prompt).map(|rule| match &rule.justification {
        Some(justification) => format!("`{command}` requires approval: {justification}"),
        None => format!("`{command}` requires approval by policy"),
    })
}
