#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Rules in decisions, amendments, approved-for-session keys, sandbox
//! denials and review answers (Codex: `codex-rs/execpolicy/`, `codex-rs/core/src/exec_policy.rs`, `codex-rs/core/src/tools/orchestrator.rs`, `codex-rs/protocol/src/protocol.rs`).

use std::collections::BTreeSet;

use keel_policy::decision::{
    ApprovalSubject, ExecPolicyAmendment, NetworkPolicyAmendment, NetworkPolicyRuleAction,
    approval_key, canonicalize_command_for_approval,
};
use keel_policy::{
    AdditionalPermissions, ApprovalKey, ApprovalPolicy, CommandDecision, CommandDecisionInput,
    DenialDecision, ReviewDecision, ReviewOutcome, Rules, SandboxDenialInput, SandboxMode,
    SandboxPermissions, decide_after_sandbox_denial, decide_command, is_sandbox_denial,
    resolve_review,
};
use proptest::prelude::*;

fn argv(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn bash(script: &str) -> Vec<String> {
    argv(&["bash", "-lc", script])
}

/// A call with sensible defaults; tests change what they exercise.
struct Call {
    argv: Vec<String>,
    policy: ApprovalPolicy,
    mode: SandboxMode,
    perms: SandboxPermissions,
    prefix_rule: Option<Vec<String>>,
    rules: Rules,
    session: BTreeSet<ApprovalKey>,
}

fn call(cmd: Vec<String>) -> Call {
    Call {
        argv: cmd,
        policy: ApprovalPolicy::OnRequest,
        mode: SandboxMode::WorkspaceWrite,
        perms: SandboxPermissions::UseDefault,
        prefix_rule: None,
        rules: Rules::default(),
        session: BTreeSet::new(),
    }
}

impl Call {
    fn rules(mut self, text: &str) -> Self {
        self.rules = Rules::parse("default.rules", text).unwrap();
        self
    }
    fn policy(mut self, policy: &str) -> Self {
        self.policy = policy.parse().unwrap();
        self
    }
    fn mode(mut self, mode: &str) -> Self {
        self.mode = mode.parse().unwrap();
        self
    }
    fn escalated(mut self) -> Self {
        self.perms = SandboxPermissions::RequireEscalated;
        self
    }
    fn prefix_rule(mut self, prefix: &[&str]) -> Self {
        self.prefix_rule = Some(argv(prefix));
        self
    }
    fn decide(&self) -> CommandDecision {
        decide_command(&CommandDecisionInput {
            argv: &self.argv,
            cwd: "/work",
            approval_policy: self.policy,
            sandbox_mode: self.mode,
            sandbox_permissions: self.perms,
            additional_permissions: None,
            justification: None,
            prefix_rule: self.prefix_rule.as_deref(),
            rules: &self.rules,
            approved_for_session: &self.session,
        })
    }
}

#[track_caller]
fn allow(decision: CommandDecision) -> (bool, Option<Vec<String>>) {
    match decision {
        CommandDecision::Allow {
            sandboxed,
            proposed_amendment,
            ..
        } => (sandboxed, proposed_amendment),
        other => panic!("expected allow, got {other:?}"),
    }
}

#[track_caller]
fn prompt(decision: CommandDecision) -> (Option<String>, Option<Vec<String>>) {
    match decision {
        CommandDecision::Prompt {
            reason,
            proposed_amendment,
            ..
        } => (reason, proposed_amendment),
        other => panic!("expected prompt, got {other:?}"),
    }
}

#[track_caller]
fn forbid(decision: CommandDecision) -> String {
    match decision {
        CommandDecision::Forbid { reason } => reason,
        other => panic!("expected forbid, got {other:?}"),
    }
}

const RULES: &str = r#"
prefix_rule(pattern=["cargo", "test"])
prefix_rule(pattern=["git", "push"], decision="prompt", justification="it publishes")
prefix_rule(pattern=["npm"], decision="prompt")
prefix_rule(pattern=["git", "clean"], decision="forbidden", justification="Use `git stash` instead.")
prefix_rule(pattern=[["shred", "dd"]], decision="forbidden")
prefix_rule(pattern=["cat"])
"#;

#[test]
fn explicit_allow_rules_run_without_the_sandbox() {
    assert_eq!(
        allow(call(argv(&["cargo", "test"])).rules(RULES).decide()),
        (false, None)
    );
    assert_eq!(
        allow(
            call(bash("cargo test -p x && cargo test -p y"))
                .rules(RULES)
                .decide()
        ),
        (false, None)
    );
    // A part the heuristics allowed keeps the sandbox.
    assert_eq!(
        allow(call(bash("cargo test && ls")).rules(RULES).decide()),
        (true, None)
    );
    // Rules beat `untrusted`.
    assert_eq!(
        allow(
            call(argv(&["cargo", "test"]))
                .rules(RULES)
                .policy("untrusted")
                .decide()
        ),
        (false, None)
    );
}

#[test]
fn prompt_rules_give_their_reason_and_cannot_prompt_under_never() {
    assert_eq!(
        prompt(call(argv(&["git", "push", "origin"])).rules(RULES).decide()),
        (
            Some("`git push origin` requires approval: it publishes".to_owned()),
            None
        )
    );
    assert_eq!(
        prompt(call(argv(&["npm", "install"])).rules(RULES).decide()).0,
        Some("`npm install` requires approval by policy".to_owned())
    );
    // Known-safe loses to a rule.
    assert!(matches!(
        call(bash("ls && npm ci")).rules(RULES).decide(),
        CommandDecision::Prompt { .. }
    ));
    assert_eq!(
        forbid(
            call(argv(&["git", "push"]))
                .rules(RULES)
                .policy("never")
                .decide()
        ),
        "approval required by policy, but AskForApproval is set to Never"
    );
}

#[test]
fn forbidden_texts() {
    assert_eq!(
        forbid(call(argv(&["git", "clean", "-fdx"])).rules(RULES).decide()),
        "`git clean -fdx` rejected: Use `git stash` instead."
    );
    assert_eq!(
        forbid(
            call(bash("ls && dd if=/dev/zero of=x"))
                .rules(RULES)
                .decide()
        ),
        "`bash -lc 'ls && dd if=/dev/zero of=x'` rejected: policy forbids commands starting with `dd`"
    );
    // The strictest decision wins across parts.
    assert!(matches!(
        call(bash("cargo test && git push && shred x"))
            .rules(RULES)
            .decide(),
        CommandDecision::Forbid { .. }
    ));
    // Forbidden even for known-safe commands and under danger-full-access.
    let rules = "prefix_rule(pattern=[\"ls\"], decision=\"forbidden\")";
    assert_eq!(
        forbid(
            call(argv(&["ls"]))
                .rules(rules)
                .mode("danger-full-access")
                .decide()
        ),
        "`ls` rejected: policy forbids commands starting with `ls`"
    );
}

#[test]
fn heredoc_scripts_match_rules_by_their_prefix_only() {
    let script = bash("cat <<EOF\nhello\nEOF");
    // An allow rule for `cat` covers it (and bypasses the sandbox)…
    assert_eq!(
        allow(call(script.clone()).rules(RULES).decide()),
        (false, None)
    );
    // …but not with a file redirect: the rule would send the command's
    // output, unsandboxed, wherever the script says.
    for redirected in [
        "cat <<EOF > notes.txt\nhello\nEOF",
        "cargo test <<EOF > /home/u/.bashrc\nx\nEOF",
        "cargo test > /home/u/.ssh/authorized_keys <<EOF\nx\nEOF",
    ] {
        let (sandboxed, _) = allow(call(bash(redirected)).rules(RULES).decide());
        assert!(sandboxed, "{redirected:?}");
    }
    // …but it is never known-safe by itself, and never proposes an amendment.
    assert_eq!(
        prompt(call(script.clone()).policy("untrusted").decide()),
        (None, None)
    );
    assert_eq!(allow(call(script).decide()), (true, None));
    let forbidden = "prefix_rule(pattern=[\"python3\"], decision=\"forbidden\")";
    assert!(matches!(
        call(bash("python3 <<'PY'\nprint(1)\nPY"))
            .rules(forbidden)
            .decide(),
        CommandDecision::Forbid { .. }
    ));
}

#[test]
fn amendment_proposals() {
    let escalated = |cmd: Vec<String>| call(cmd).escalated();
    // The model's prefix_rule, when allowing it lets the command run.
    assert_eq!(
        prompt(
            escalated(argv(&["cargo", "build", "--release"]))
                .prefix_rule(&["cargo", "build"])
                .decide()
        )
        .1,
        Some(argv(&["cargo", "build"]))
    );
    // Banned suggestions fall back to the first heuristics-prompted command.
    for banned in [
        &["python3"][..],
        &["bash", "-lc"],
        &["git"],
        &["sudo"],
        &["node", "-e"],
    ] {
        assert_eq!(
            prompt(
                escalated(argv(&["python3", "x.py"]))
                    .prefix_rule(banned)
                    .decide()
            )
            .1,
            Some(argv(&["python3", "x.py"])),
            "{banned:?}"
        );
    }
    // A suggestion that would not cover every part is not proposed.
    assert_eq!(
        prompt(
            escalated(bash("make && cargo build"))
                .prefix_rule(&["cargo"])
                .decide()
        )
        .1,
        Some(argv(&["make"]))
    );
    // No proposal when a rule prompts: allowing the rest would not help.
    assert_eq!(
        prompt(
            call(bash("git push && make"))
                .rules(RULES)
                .policy("untrusted")
                .prefix_rule(&["make"])
                .decide()
        )
        .1,
        None
    );
    // Allow decisions carry the amendment offered if a sandbox denial asks.
    assert_eq!(
        allow(
            call(argv(&["cargo", "build"]))
                .policy("on-failure")
                .decide()
        )
        .1,
        Some(argv(&["cargo", "build"]))
    );
    assert_eq!(
        allow(call(argv(&["cargo", "test"])).rules(RULES).decide()).1,
        None
    );
}

#[test]
fn approved_for_session_skips_the_question() {
    let mut c = call(bash("cargo build")).policy("untrusted");
    let CommandDecision::Prompt {
        approval_key: key,
        sandboxed,
        ..
    } = c.decide()
    else {
        panic!("expected a prompt");
    };
    assert!(sandboxed);
    c.session.insert(key);
    assert_eq!(
        c.decide(),
        CommandDecision::Allow {
            sandboxed: true,
            already_approved: true,
            proposed_amendment: Some(argv(&["cargo", "build"])),
        }
    );
    // The same command as plain argv shares the key; another cwd does not.
    c.argv = argv(&["cargo", "build"]);
    assert!(matches!(
        c.decide(),
        CommandDecision::Allow {
            already_approved: true,
            ..
        }
    ));
    c.argv = argv(&["cargo", "build", "--release"]);
    assert!(matches!(c.decide(), CommandDecision::Prompt { .. }));
    // Never overrides a rule's forbid.
    let mut forbidden = call(argv(&["git", "clean"])).rules(RULES);
    forbidden.session.insert(approval_key(
        &forbidden.argv,
        "/work",
        SandboxPermissions::UseDefault,
        None,
    ));
    assert!(matches!(forbidden.decide(), CommandDecision::Forbid { .. }));
}

#[test]
fn approval_keys_are_codexs() {
    assert_eq!(
        canonicalize_command_for_approval(&bash("cargo build")),
        argv(&["cargo", "build"])
    );
    assert_eq!(
        canonicalize_command_for_approval(&argv(&["zsh", "-c", "ls && pwd"])),
        argv(&["__codex_shell_script__", "-c", "ls && pwd"])
    );
    assert_eq!(
        canonicalize_command_for_approval(&bash("echo $HOME")),
        argv(&["__codex_shell_script__", "-lc", "echo $HOME"])
    );
    assert_eq!(
        canonicalize_command_for_approval(&argv(&["ls", "-l"])),
        argv(&["ls", "-l"])
    );

    let key = |perms, extra: Option<&AdditionalPermissions>| {
        approval_key(&argv(&["ls"]), "/w", perms, extra)
    };
    assert_ne!(
        key(SandboxPermissions::UseDefault, None),
        key(SandboxPermissions::RequireEscalated, None)
    );
    assert_ne!(
        key(SandboxPermissions::WithAdditionalPermissions, None),
        key(
            SandboxPermissions::WithAdditionalPermissions,
            Some(&AdditionalPermissions::default())
        )
    );
    assert_ne!(
        key(SandboxPermissions::UseDefault, None),
        approval_key(&argv(&["ls"]), "/x", SandboxPermissions::UseDefault, None)
    );
    let json = serde_json::to_value(key(SandboxPermissions::RequireEscalated, None)).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "type": "command",
            "command": ["ls"],
            "cwd": "/w",
            "sandbox_permissions": "require_escalated",
            "additional_permissions": null,
        })
    );
}

fn denial(policy: &str, already_approved: bool, session: &BTreeSet<ApprovalKey>) -> DenialDecision {
    let key = approval_key(
        &argv(&["make"]),
        "/work",
        SandboxPermissions::UseDefault,
        None,
    );
    let amendment = argv(&["make"]);
    decide_after_sandbox_denial(&SandboxDenialInput {
        approval_policy: policy.parse().unwrap(),
        already_approved,
        approval_key: &key,
        approved_for_session: session,
        proposed_amendment: Some(&amendment),
    })
}

#[test]
fn after_a_sandbox_denial() {
    let none = BTreeSet::new();
    let ask = DenialDecision::Prompt {
        reason: "command failed; retry without sandbox?".to_owned(),
        proposed_amendment: Some(argv(&["make"])),
    };
    assert_eq!(denial("on-failure", false, &none), ask);
    assert_eq!(denial("untrusted", false, &none), ask);
    assert_eq!(
        denial("on-failure", true, &none),
        DenialDecision::RerunUnsandboxed
    );
    assert_eq!(
        denial("untrusted", true, &none),
        DenialDecision::RerunUnsandboxed
    );
    let session = BTreeSet::from([approval_key(
        &argv(&["make"]),
        "/work",
        SandboxPermissions::UseDefault,
        None,
    )]);
    assert_eq!(
        denial("on-failure", false, &session),
        DenialDecision::RerunUnsandboxed
    );
    for policy in ["on-request", "never"] {
        assert_eq!(denial(policy, false, &none), DenialDecision::ReturnToModel);
        assert_eq!(
            denial(policy, true, &session),
            DenialDecision::ReturnToModel
        );
    }
}

#[test]
fn what_counts_as_a_sandbox_denial() {
    assert!(is_sandbox_denial(
        true,
        1,
        "",
        "touch: x: Read-only file system",
        ""
    ));
    assert!(is_sandbox_denial(
        true,
        1,
        "",
        "",
        "bash: /etc/x: Permission denied"
    ));
    assert!(is_sandbox_denial(
        true,
        2,
        "Operation not permitted",
        "",
        ""
    ));
    assert!(is_sandbox_denial(true, 1, "", "Landlock refused", ""));
    assert!(
        is_sandbox_denial(true, 159, "", "", ""),
        "SIGSYS from seccomp"
    );
    assert!(
        !is_sandbox_denial(true, 0, "permission denied", "", ""),
        "success"
    );
    assert!(
        !is_sandbox_denial(false, 1, "", "permission denied", ""),
        "no sandbox"
    );
    for code in [1, 2, 126, 127] {
        assert!(
            !is_sandbox_denial(true, code, "", "command not found", ""),
            "{code}"
        );
    }
}

#[test]
fn review_answers() {
    let cmd = ApprovalSubject::Command;
    let run = ReviewOutcome {
        run: true,
        ..ReviewOutcome::default()
    };
    assert_eq!(resolve_review(cmd, &ReviewDecision::Approved), run);
    assert_eq!(
        resolve_review(cmd, &ReviewDecision::ApprovedForSession),
        ReviewOutcome {
            remember_for_session: true,
            ..run.clone()
        }
    );
    let amendment = ReviewDecision::ApprovedExecpolicyAmendment {
        proposed_execpolicy_amendment: ExecPolicyAmendment {
            command: argv(&["cargo", "build"]),
        },
    };
    assert_eq!(
        resolve_review(cmd, &amendment),
        ReviewOutcome {
            persist_rule: Some(
                r#"prefix_rule(pattern=["cargo", "build"], decision="allow")"#.to_owned()
            ),
            allow_prefix: Some(argv(&["cargo", "build"])),
            ..run.clone()
        }
    );
    let rejected = |text: &str, abort_turn| ReviewOutcome {
        rejection: Some(text.to_owned()),
        abort_turn,
        ..ReviewOutcome::default()
    };
    assert_eq!(
        resolve_review(cmd, &ReviewDecision::Denied),
        rejected("exec command rejected by user", false)
    );
    assert_eq!(
        resolve_review(cmd, &ReviewDecision::TimedOut),
        rejected("exec command rejected by user", false)
    );
    assert_eq!(
        resolve_review(cmd, &ReviewDecision::Abort),
        rejected("exec command rejected by user", true)
    );
    assert_eq!(
        resolve_review(ApprovalSubject::Patch, &ReviewDecision::Denied),
        rejected("patch rejected by user", false)
    );
    let network = |action| ReviewDecision::NetworkPolicyAmendment {
        network_policy_amendment: NetworkPolicyAmendment {
            host: "example.com".to_owned(),
            action,
        },
    };
    assert_eq!(
        resolve_review(cmd, &network(NetworkPolicyRuleAction::Allow)),
        run
    );
    assert_eq!(
        resolve_review(cmd, &network(NetworkPolicyRuleAction::Deny)),
        rejected("exec command rejected by user", false)
    );
}

#[test]
fn tools_without_their_own_rule() {
    use keel_policy::tool_requires_approval;
    for mode in ["read-only", "workspace-write", "danger-full-access"] {
        let mode: SandboxMode = mode.parse().unwrap();
        assert!(!tool_requires_approval(ApprovalPolicy::Never, mode));
        assert!(!tool_requires_approval(ApprovalPolicy::OnFailure, mode));
        assert!(tool_requires_approval(ApprovalPolicy::Untrusted, mode));
        assert_eq!(
            tool_requires_approval(ApprovalPolicy::OnRequest, mode),
            mode.is_restricted()
        );
    }
}

#[test]
fn wire_spellings() {
    for (text, policy) in [
        ("untrusted", ApprovalPolicy::Untrusted),
        ("on-failure", ApprovalPolicy::OnFailure),
        ("on-request", ApprovalPolicy::OnRequest),
        ("never", ApprovalPolicy::Never),
    ] {
        assert_eq!(text.parse::<ApprovalPolicy>().unwrap(), policy);
        assert_eq!(policy.to_string(), text);
        assert_eq!(serde_json::to_value(policy).unwrap(), text);
        assert_eq!(
            serde_json::from_value::<ApprovalPolicy>(text.into()).unwrap(),
            policy
        );
    }
    assert_eq!(
        serde_json::from_value::<ApprovalPolicy>("on_request".into()).unwrap(),
        ApprovalPolicy::OnRequest
    );
    assert_eq!(
        "on_request"
            .parse::<ApprovalPolicy>()
            .unwrap_err()
            .to_string(),
        "unknown approval policy `on_request` (expected one of: untrusted, on-failure, on-request, never)"
    );
    for (text, mode) in [
        ("read-only", SandboxMode::ReadOnly),
        ("workspace-write", SandboxMode::WorkspaceWrite),
        ("danger-full-access", SandboxMode::DangerFullAccess),
    ] {
        assert_eq!(text.parse::<SandboxMode>().unwrap(), mode);
        assert_eq!(serde_json::to_value(mode).unwrap(), text);
    }
    assert_eq!(
        "full".parse::<SandboxMode>().unwrap_err().to_string(),
        "unknown sandbox mode `full` (expected one of: read-only, workspace-write, danger-full-access)"
    );
    assert_eq!(
        serde_json::to_value(ReviewDecision::ApprovedExecpolicyAmendment {
            proposed_execpolicy_amendment: ExecPolicyAmendment {
                command: argv(&["ls"])
            }
        })
        .unwrap(),
        serde_json::json!({"approved_execpolicy_amendment": {"proposed_execpolicy_amendment": {"command": ["ls"]}}})
    );
    assert_eq!(
        serde_json::to_value(ReviewDecision::ApprovedForSession).unwrap(),
        "approved_for_session"
    );
    let decision = call(argv(&["git", "clean"])).rules(RULES).decide();
    let json = serde_json::to_value(&decision).unwrap();
    assert_eq!(json["type"], "forbid");
    assert_eq!(
        serde_json::from_value::<CommandDecision>(json).unwrap(),
        decision
    );
}

proptest! {
    /// Any argv decides without panicking, and the same input always gives
    /// the same answer.
    #[test]
    fn decisions_are_total_and_deterministic(
        words in prop::collection::vec(".{0,12}", 0..6),
        script in ".{0,60}",
        policy in prop::sample::select(vec!["untrusted", "on-failure", "on-request", "never"]),
        mode in prop::sample::select(vec!["read-only", "workspace-write", "danger-full-access"]),
    ) {
        for cmd in [words.clone(), bash(&script)] {
            let c = call(cmd.clone()).rules(RULES).policy(policy).mode(mode);
            prop_assert_eq!(c.decide(), c.decide());
            let _ = keel_policy::classify(&cmd);
            let _ = keel_policy::parse_command(&cmd);
        }
    }

    /// Scripts built from shell-ish pieces exercise the parser's corners.
    #[test]
    fn shellish_scripts_never_panic(
        parts in prop::collection::vec(
            prop::sample::select(vec![
                "ls", " ", "&&", "||", ";", "|", "&", "'a b'", "\"c\"", "$X", "$(pwd)", "`id`",
                "(", ")", "{", "}", "<<EOF\nx\nEOF\n", "<<<", ">", "2>&1", "\n", "#", "rm", "-rf",
                "sudo", "bash -lc ", "\\", "*", "=", "if", "then", "fi",
            ]),
            0..30,
        ),
    ) {
        let cmd = bash(&parts.concat());
        let _ = keel_policy::classify(&cmd);
        let _ = keel_policy::parse_command(&cmd);
        let _ = call(cmd).policy("untrusted").decide();
    }
}
