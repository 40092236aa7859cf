#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `keel policy check` runs the real binary, offline.

use std::process::{Command, Output};

fn keel(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["policy", "check"])
        .args(args)
        // No stack, state or server is involved.
        .env("KEEL_STATE_DIR", "/nonexistent/keel-state")
        .env_remove("KEEL_ADDR")
        .output()
        .expect("run keel")
}

#[track_caller]
fn json(output: &Output) -> serde_json::Value {
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout.clone()).unwrap();
    assert_eq!(stdout.lines().count(), 1, "one JSON object: {stdout}");
    serde_json::from_str(&stdout).unwrap()
}

#[test]
fn safe_commands_are_allowed() {
    let out = keel(&["--", "bash", "-lc", "ls && pwd"]);
    assert_eq!(
        json(&out),
        serde_json::json!({"safety": "safe", "decision": "allow"})
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "{\"safety\":\"safe\",\"decision\":\"allow\"}\n"
    );
}

#[test]
fn dangerous_commands_are_forbidden_under_never() {
    let out = keel(&[
        "--approval-policy",
        "never",
        "--sandbox",
        "workspace-write",
        "--",
        "rm",
        "-rf",
        "/tmp/x",
    ]);
    assert_eq!(
        json(&out),
        serde_json::json!({
            "safety": "dangerous",
            "decision": "forbid",
            "reason": "`rm -rf /tmp/x` rejected: blocked by policy",
        })
    );
    let out = keel(&["--approval-policy", "untrusted", "--", "cargo", "build"]);
    assert_eq!(
        json(&out),
        serde_json::json!({"safety": "unknown", "decision": "prompt"})
    );
}

#[test]
fn rules_files_are_applied_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("a.rules");
    let second = dir.path().join("b.rules");
    std::fs::write(&first, "prefix_rule(pattern=[\"git\", \"push\"])\n").unwrap();
    std::fs::write(
        &second,
        "prefix_rule(pattern=[\"git\", \"push\"], decision=\"prompt\", justification=\"it publishes\")\n",
    )
    .unwrap();
    let out = keel(&[
        "--rules",
        first.to_str().unwrap(),
        "--rules",
        second.to_str().unwrap(),
        "--",
        "git",
        "push",
    ]);
    assert_eq!(
        json(&out),
        serde_json::json!({
            "safety": "unknown",
            "decision": "prompt",
            "reason": "`git push` requires approval: it publishes",
        })
    );
}

#[test]
fn bad_input_exits_2() {
    let missing = keel(&["--rules", "/nonexistent/x.rules", "--", "ls"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(missing.stdout.is_empty());
    let stderr = String::from_utf8(missing.stderr).unwrap();
    assert!(
        stderr.starts_with("keel: cannot read rules file /nonexistent/x.rules: "),
        "{stderr}"
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.rules");
    std::fs::write(
        &bad,
        "prefix_rule(pattern=[\"ls\"])\nnetwork_rule(host=\"x\")\n",
    )
    .unwrap();
    let invalid = keel(&["--rules", bad.to_str().unwrap(), "--", "ls"]);
    assert_eq!(invalid.status.code(), Some(2));
    let stderr = String::from_utf8(invalid.stderr).unwrap();
    assert!(
        stderr.contains("bad.rules:2: unsupported rule `network_rule(...)`"),
        "{stderr}"
    );

    // Flags are clap's business (its usage errors exit 2 too).
    let flag = keel(&["--approval-policy", "sometimes", "--", "ls"]);
    assert_eq!(flag.status.code(), Some(2));
    assert!(
        String::from_utf8(flag.stderr)
            .unwrap()
            .contains("unknown approval policy `sometimes`")
    );
}
