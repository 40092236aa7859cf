//! Codex's command-safety, exec-policy and approval rules, as a pure
//! library for Keel's workflow (spec: `codex-compat.md` §2.5, §4, §5, §10).
//!
//! # Determinism
//!
//! Workflow code calls this crate, so every function here is a pure
//! function of its arguments: no clock, environment, filesystem, network or
//! randomness, and no hash-ordered iteration (collections are `Vec` and
//! `BTreeMap`/`BTreeSet`). Whatever the decisions depend on — rules text,
//! writable roots, what the user approved for the session — comes in as
//! arguments. Shell scripts are parsed with tree-sitter-bash, which is
//! deterministic. No function panics on any input.
//!
//! # Map
//!
//! * [`safety`]: [`classify`] an argv as safe / dangerous / unknown (§4.1–4.3)
//!   and [`parse_command`] it into `parsed_cmd` summaries for events.
//! * [`execpolicy`]: parse `.rules` text into [`Rules`], match argv, and
//!   write amendments (§4.5).
//! * [`decision`]: [`decide_command`] (§2.5, §5.3, §5.4),
//!   [`decide_after_sandbox_denial`] and [`is_sandbox_denial`] (§5.4),
//!   [`decide_patch`] (§5.5), [`tool_requires_approval`] for other tools
//!   (§5.4), and [`resolve_review`] for the user's answer (§10.3).
//!
//! # A command call, end to end
//!
//! 1. [`decide_command`]: `Reject`/`Forbid` → the text is the tool output;
//!    `Allow` → run; `Prompt` → send `exec_approval_request`, then
//!    [`resolve_review`] the answer (remember the key, persist the rule).
//! 2. Run, sandboxed as decided. If it fails, [`is_sandbox_denial`]; if so,
//!    [`decide_after_sandbox_denial`] says: return the output, re-run
//!    without the sandbox, or ask first.

#![warn(missing_docs)]

pub mod decision;
pub mod execpolicy;
mod parse_command;
pub mod safety;
mod shell;

pub use decision::{
    AdditionalPermissions, ApprovalKey, ApprovalPolicy, ApprovalSubject, CommandDecision,
    CommandDecisionInput, DenialDecision, ExecPolicyAmendment, PatchChange, PatchDecision,
    PatchDecisionInput, ReviewDecision, ReviewOutcome, SandboxDenialInput, SandboxMode,
    SandboxPermissions, WritableRoot, decide_after_sandbox_denial, decide_command, decide_patch,
    decide_when_sandbox_unavailable, is_sandbox_denial, resolve_review, tool_requires_approval,
};
pub use execpolicy::{Rules, RulesError, amendment_rule_text};
pub use safety::{ParsedCommand, Safety, classify, parse_command};
