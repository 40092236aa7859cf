//! Codex's command-safety, exec-policy and approval rules, as a pure
//! library for Keel's workflow (Codex:
//! `codex-rs/shell-command/src/command_safety/`, `codex-rs/execpolicy/`,
//! `codex-rs/core/src/tools/orchestrator.rs`, `codex-rs/core/src/safety.rs`).
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
//! * [`safety`]: [`classify`] an argv as safe / dangerous / unknown (Codex: `codex-rs/shell-command/src/command_safety/`, `codex-rs/shell-command/src/bash.rs`)
//!   and [`parse_command`] it into `parsed_cmd` summaries for events.
//! * [`execpolicy`]: parse `.rules` text into [`Rules`], match argv, and
//!   write amendments (Codex: `codex-rs/execpolicy/`).
//! * [`decision`]: [`decide_command`] (Codex: `codex-rs/core/src/tools/handlers/shell.rs`, `codex-rs/core/src/exec_policy.rs`, `codex-rs/core/src/tools/orchestrator.rs`),
//!   [`decide_after_sandbox_denial`] and [`is_sandbox_denial`] (Codex: `codex-rs/core/src/tools/orchestrator.rs`),
//!   [`decide_patch`] (Codex: `codex-rs/core/src/safety.rs`), [`tool_requires_approval`] for other tools
//!   (Codex: `codex-rs/core/src/tools/orchestrator.rs`), and [`resolve_review`] for the user's answer (Codex: `codex-rs/protocol/src/protocol.rs`).
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
