#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Every row of the Codex's `codex-rs/core/src/exec_policy.rs` decision table, with the Codex's `codex-rs/core/src/tools/handlers/shell.rs` escalation check and
//! the Codex's `codex-rs/core/src/tools/orchestrator.rs` sandbox choice: policy × safe/dangerous/unknown × escalation ×
//! sandbox mode, for plain argv and for `bash -lc` scripts.

use std::collections::BTreeSet;

use keel_policy::{
    ApprovalPolicy, CommandDecision, CommandDecisionInput, Rules, SandboxMode, SandboxPermissions,
    decide_command,
};

fn argv(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// Expected outcome, compactly: `A` allow in the sandbox, `a` allow
/// without it, `P` prompt then run sandboxed, `p` prompt then run
/// unsandboxed, `F` forbid, `R` reject (Codex: `codex-rs/core/src/tools/handlers/shell.rs`).
type Row = (&'static str, &'static str, &'static str, [char; 3]);

/// Columns: read-only, workspace-write, danger-full-access.
const TABLE: &[Row] = &[
    // untrusted: only known-safe runs unasked; escalation is rejected.
    ("untrusted", "safe", "use_default", ['A', 'A', 'a']),
    ("untrusted", "safe", "require_escalated", ['R', 'R', 'R']),
    (
        "untrusted",
        "safe",
        "with_additional_permissions",
        ['R', 'R', 'R'],
    ),
    ("untrusted", "dangerous", "use_default", ['P', 'P', 'p']),
    (
        "untrusted",
        "dangerous",
        "require_escalated",
        ['R', 'R', 'R'],
    ),
    (
        "untrusted",
        "dangerous",
        "with_additional_permissions",
        ['R', 'R', 'R'],
    ),
    ("untrusted", "unknown", "use_default", ['P', 'P', 'p']),
    ("untrusted", "unknown", "require_escalated", ['R', 'R', 'R']),
    (
        "untrusted",
        "unknown",
        "with_additional_permissions",
        ['R', 'R', 'R'],
    ),
    // on-failure: everything runs sandboxed, dangerous asks first.
    ("on-failure", "safe", "use_default", ['A', 'A', 'a']),
    ("on-failure", "safe", "require_escalated", ['R', 'R', 'R']),
    (
        "on-failure",
        "safe",
        "with_additional_permissions",
        ['R', 'R', 'R'],
    ),
    ("on-failure", "dangerous", "use_default", ['P', 'P', 'p']),
    (
        "on-failure",
        "dangerous",
        "require_escalated",
        ['R', 'R', 'R'],
    ),
    (
        "on-failure",
        "dangerous",
        "with_additional_permissions",
        ['R', 'R', 'R'],
    ),
    ("on-failure", "unknown", "use_default", ['A', 'A', 'a']),
    (
        "on-failure",
        "unknown",
        "require_escalated",
        ['R', 'R', 'R'],
    ),
    (
        "on-failure",
        "unknown",
        "with_additional_permissions",
        ['R', 'R', 'R'],
    ),
    // on-request: the model asks by escalating; known-safe never prompts.
    ("on-request", "safe", "use_default", ['A', 'A', 'a']),
    ("on-request", "safe", "require_escalated", ['a', 'a', 'a']),
    (
        "on-request",
        "safe",
        "with_additional_permissions",
        ['A', 'A', 'a'],
    ),
    ("on-request", "dangerous", "use_default", ['P', 'P', 'p']),
    (
        "on-request",
        "dangerous",
        "require_escalated",
        ['p', 'p', 'p'],
    ),
    (
        "on-request",
        "dangerous",
        "with_additional_permissions",
        ['P', 'P', 'p'],
    ),
    ("on-request", "unknown", "use_default", ['A', 'A', 'a']),
    (
        "on-request",
        "unknown",
        "require_escalated",
        ['p', 'p', 'a'],
    ),
    (
        "on-request",
        "unknown",
        "with_additional_permissions",
        ['P', 'P', 'a'],
    ),
    // never: never prompts; dangerous is refused unless nothing is sandboxed.
    ("never", "safe", "use_default", ['A', 'A', 'a']),
    ("never", "safe", "require_escalated", ['R', 'R', 'R']),
    (
        "never",
        "safe",
        "with_additional_permissions",
        ['R', 'R', 'R'],
    ),
    ("never", "dangerous", "use_default", ['F', 'F', 'a']),
    ("never", "dangerous", "require_escalated", ['R', 'R', 'R']),
    (
        "never",
        "dangerous",
        "with_additional_permissions",
        ['R', 'R', 'R'],
    ),
    ("never", "unknown", "use_default", ['A', 'A', 'a']),
    ("never", "unknown", "require_escalated", ['R', 'R', 'R']),
    (
        "never",
        "unknown",
        "with_additional_permissions",
        ['R', 'R', 'R'],
    ),
];

const MODES: [SandboxMode; 3] = [
    SandboxMode::ReadOnly,
    SandboxMode::WorkspaceWrite,
    SandboxMode::DangerFullAccess,
];

/// Two spellings of each kind of command: argv and a `bash -lc` script.
fn commands(kind: &str) -> [Vec<String>; 2] {
    match kind {
        "safe" => [
            argv(&["ls", "-la"]),
            argv(&["bash", "-lc", "ls && pwd | wc -l"]),
        ],
        "dangerous" => [
            argv(&["rm", "-rf", "/tmp/x"]),
            argv(&["bash", "-lc", "rm -rf /tmp/x ; ls"]),
        ],
        _ => [
            argv(&["cargo", "build"]),
            argv(&["bash", "-lc", "ls && cargo build"]),
        ],
    }
}

fn permissions(name: &str) -> SandboxPermissions {
    serde_json::from_value(serde_json::Value::String(name.to_owned())).unwrap()
}

fn decide(
    policy: ApprovalPolicy,
    mode: SandboxMode,
    perms: SandboxPermissions,
    cmd: &[String],
) -> CommandDecision {
    let rules = Rules::default();
    let session = BTreeSet::new();
    decide_command(&CommandDecisionInput {
        argv: cmd,
        cwd: "/work",
        approval_policy: policy,
        sandbox_mode: mode,
        sandbox_permissions: perms,
        additional_permissions: None,
        justification: Some("need to build"),
        prefix_rule: None,
        rules: &rules,
        approved_for_session: &session,
    })
}

fn shape(decision: &CommandDecision) -> char {
    match decision {
        CommandDecision::Allow {
            sandboxed: true, ..
        } => 'A',
        CommandDecision::Allow {
            sandboxed: false, ..
        } => 'a',
        CommandDecision::Prompt {
            sandboxed: true, ..
        } => 'P',
        CommandDecision::Prompt {
            sandboxed: false, ..
        } => 'p',
        CommandDecision::Forbid { .. } => 'F',
        CommandDecision::Reject { .. } => 'R',
    }
}

#[test]
fn every_row_of_the_decision_table() {
    assert_eq!(TABLE.len(), 4 * 3 * 3, "every policy × safety × escalation");
    for (policy, kind, perms, expected) in TABLE {
        let policy: ApprovalPolicy = policy.parse().unwrap();
        let perms = permissions(perms);
        for cmd in commands(kind) {
            for (mode, want) in MODES.iter().zip(expected) {
                let got = decide(policy, *mode, perms, &cmd);
                assert_eq!(
                    shape(&got),
                    *want,
                    "{policy} / {mode} / {perms:?} / {cmd:?}: {got:?}"
                );
            }
        }
    }
}

#[test]
fn texts_of_the_table() {
    let escalated = SandboxPermissions::RequireEscalated;
    let default = SandboxPermissions::UseDefault;
    let ww = SandboxMode::WorkspaceWrite;
    for (policy, name) in [
        (ApprovalPolicy::Never, "Never"),
        (ApprovalPolicy::OnFailure, "OnFailure"),
        (ApprovalPolicy::Untrusted, "UnlessTrusted"),
    ] {
        assert_eq!(
            decide(policy, ww, escalated, &argv(&["ls"])),
            CommandDecision::Reject {
                text: format!(
                    "approval policy is {name}; reject command — you should not ask for escalated permissions if the approval policy is {name}"
                )
            }
        );
    }
    assert_eq!(
        decide(
            ApprovalPolicy::Never,
            ww,
            default,
            &argv(&["bash", "-lc", "rm -rf /tmp/x ; ls"])
        ),
        CommandDecision::Forbid {
            reason: "`bash -lc 'rm -rf /tmp/x ; ls'` rejected: blocked by policy".to_owned()
        }
    );
    // A heuristic prompt shows the model's justification.
    match decide(
        ApprovalPolicy::Untrusted,
        ww,
        default,
        &argv(&["cargo", "build"]),
    ) {
        CommandDecision::Prompt { reason, .. } => {
            assert_eq!(reason.as_deref(), Some("need to build"))
        }
        other => panic!("{other:?}"),
    }
}
