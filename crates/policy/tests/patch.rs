#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Patch safety (Codex: `codex-rs/core/src/safety.rs`).

use std::collections::BTreeSet;

use keel_policy::decision::{GitEntry, RootFacts, patch_approval_keys};
use keel_policy::{
    ApprovalKey, ApprovalPolicy, PatchChange, PatchDecision, PatchDecisionInput, SandboxMode,
    WritableRoot, decide_patch,
};

const CWD: &str = "/work/repo";

fn add(path: &str) -> PatchChange {
    PatchChange::Add {
        path: path.to_owned(),
    }
}

fn roots() -> Vec<WritableRoot> {
    let facts = RootFacts {
        git: GitEntry::Dir,
        ..RootFacts::default()
    };
    vec![
        WritableRoot::protected(CWD, &facts, true),
        WritableRoot::protected("/tmp", &RootFacts::default(), false),
    ]
}

struct Case {
    policy: &'static str,
    mode: &'static str,
    changes: Vec<PatchChange>,
    sandbox: bool,
    session: BTreeSet<ApprovalKey>,
}

fn case(policy: &'static str, mode: &'static str, changes: Vec<PatchChange>) -> Case {
    Case {
        policy,
        mode,
        changes,
        sandbox: true,
        session: BTreeSet::new(),
    }
}

impl Case {
    fn decide(&self) -> PatchDecision {
        let roots = roots();
        decide_patch(&PatchDecisionInput {
            approval_policy: self.policy.parse::<ApprovalPolicy>().unwrap(),
            sandbox_mode: self.mode.parse::<SandboxMode>().unwrap(),
            cwd: CWD,
            writable_roots: &roots,
            changes: &self.changes,
            platform_sandbox_available: self.sandbox,
            approved_for_session: &self.session,
        })
    }
}

fn apply(sandboxed: bool) -> PatchDecision {
    PatchDecision::Apply {
        sandboxed,
        already_approved: false,
    }
}

fn ask(changes: &[PatchChange]) -> PatchDecision {
    PatchDecision::Ask {
        approval_keys: patch_approval_keys(CWD, changes),
    }
}

fn reject(reason: &str) -> PatchDecision {
    PatchDecision::Reject {
        reason: reason.to_owned(),
        text: format!("patch rejected: {reason}"),
    }
}

const OUTSIDE: &str = "writing outside of the project; rejected by user approval settings";
const READ_ONLY: &str =
    "writing is blocked by read-only sandbox; rejected by user approval settings";

#[test]
fn the_patch_table() {
    let inside = vec![add("src/new.rs"), add("/tmp/scratch.txt")];
    let outside = vec![add("src/ok.rs"), add("../other/x.rs")];

    assert_eq!(
        case("on-request", "workspace-write", vec![]).decide(),
        reject("empty patch")
    );
    assert_eq!(
        case("never", "danger-full-access", vec![]).decide(),
        reject("empty patch")
    );

    // untrusted always asks.
    for mode in ["read-only", "workspace-write", "danger-full-access"] {
        assert_eq!(
            case("untrusted", mode, inside.clone()).decide(),
            ask(&inside),
            "{mode}"
        );
    }
    // All writable: auto-approve, sandboxed unless nothing is.
    for policy in ["on-request", "on-failure", "never"] {
        assert_eq!(
            case(policy, "workspace-write", inside.clone()).decide(),
            apply(true)
        );
        assert_eq!(
            case(policy, "danger-full-access", outside.clone()).decide(),
            apply(false)
        );
    }
    // on-failure counts as all writable, even read-only.
    assert_eq!(
        case("on-failure", "read-only", outside.clone()).decide(),
        apply(true)
    );
    assert_eq!(
        case("on-failure", "workspace-write", outside.clone()).decide(),
        apply(true)
    );
    // Some path not writable: ask, or reject under never.
    assert_eq!(
        case("on-request", "workspace-write", outside.clone()).decide(),
        ask(&outside)
    );
    assert_eq!(
        case("never", "workspace-write", outside.clone()).decide(),
        reject(OUTSIDE)
    );
    assert_eq!(
        case("on-request", "read-only", inside.clone()).decide(),
        ask(&inside)
    );
    assert_eq!(
        case("never", "read-only", inside.clone()).decide(),
        reject(READ_ONLY)
    );
}

#[test]
fn without_a_platform_sandbox_writable_patches_ask() {
    let inside = vec![add("src/new.rs")];
    let mut c = case("on-request", "workspace-write", inside.clone());
    c.sandbox = false;
    assert_eq!(c.decide(), ask(&inside));
    c.policy = "never";
    assert_eq!(c.decide(), reject(OUTSIDE));
    c.policy = "on-failure";
    c.mode = "read-only";
    assert_eq!(c.decide(), ask(&inside));
    // Nothing to sandbox under danger-full-access.
    c.mode = "danger-full-access";
    assert_eq!(c.decide(), apply(false));
}

#[test]
fn protected_paths_and_normalisation() {
    let not_writable = [
        add(".git/config"),
        add(".codex/config.toml"), // protected for the cwd even when missing
        add("src/../../escape.rs"),
        add("/etc/passwd"),
        PatchChange::Delete {
            path: "/work/repo2/x".to_owned(),
        },
        PatchChange::Update {
            path: "src/lib.rs".to_owned(),
            move_path: Some("/home/me/lib.rs".to_owned()),
        },
    ];
    for change in not_writable {
        let changes = vec![change];
        assert_eq!(
            case("on-request", "workspace-write", changes.clone()).decide(),
            ask(&changes),
            "{changes:?}"
        );
    }
    let writable = [
        add("./src/./a.rs"),
        add("src/../README.md"),
        add(".gitignore"),
        add("/tmp/x/../y"),
        PatchChange::Update {
            path: "a.rs".to_owned(),
            move_path: Some("b/a.rs".to_owned()),
        },
    ];
    for change in writable {
        assert_eq!(
            case("on-request", "workspace-write", vec![change.clone()]).decide(),
            apply(true),
            "{change:?}"
        );
    }
}

#[test]
fn protected_roots_follow_codex() {
    let facts = RootFacts {
        git: GitEntry::File {
            gitdir: Some("/work/main/.git/worktrees/repo".to_owned()),
        },
        agents_dir: true,
        codex_dir: false,
    };
    let root = WritableRoot::protected("/work/repo", &facts, false);
    assert_eq!(
        root.read_only_subpaths,
        vec![
            "/work/main/.git/worktrees/repo",
            "/work/repo/.git",
            "/work/repo/.agents"
        ]
    );
    let root = WritableRoot::protected("/tmp", &RootFacts::default(), false);
    assert!(root.read_only_subpaths.is_empty());
}

#[test]
fn approved_for_session_is_per_path() {
    let changes = vec![add("b.rs"), add("a.rs"), add("./a.rs")];
    let keys = patch_approval_keys(CWD, &changes);
    assert_eq!(
        keys,
        vec![
            ApprovalKey::PatchPath {
                path: "/work/repo/a.rs".to_owned()
            },
            ApprovalKey::PatchPath {
                path: "/work/repo/b.rs".to_owned()
            },
        ]
    );
    let mut c = case("untrusted", "workspace-write", changes);
    c.session.insert(keys[0].clone());
    assert!(
        matches!(c.decide(), PatchDecision::Ask { .. }),
        "only a.rs approved"
    );
    c.session.insert(keys[1].clone());
    assert_eq!(
        c.decide(),
        PatchDecision::Apply {
            sandboxed: true,
            already_approved: true
        }
    );
    // A subset of approved paths is approved too.
    c.changes = vec![add("a.rs")];
    assert!(matches!(
        c.decide(),
        PatchDecision::Apply {
            already_approved: true,
            ..
        }
    ));
}
