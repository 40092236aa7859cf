//! `apply-patch` as a real process: Codex's standalone apply_patch, confined
//! to the current directory unless told otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn apply_patch(dir: &Path, patch: &str, extra: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_apply-patch"))
        .args(extra)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(patch.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

#[test]
fn applies_a_patch_in_the_current_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("modify.txt"), "line1\nline2\n").unwrap();
    std::fs::write(dir.path().join("delete.txt"), "x\n").unwrap();
    let patch = "*** Begin Patch\n*** Add File: nested/new.txt\n+created\n*** Delete File: delete.txt\n*** Update File: modify.txt\n@@\n-line2\n+changed\n*** End Patch\n";
    let out = apply_patch(dir.path(), patch, &[]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        stdout(&out),
        "Success. Updated the following files:\nA nested/new.txt\nM modify.txt\nD delete.txt\n"
    );
    assert_eq!(stderr(&out), "");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("nested/new.txt")).unwrap(),
        "created\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("modify.txt")).unwrap(),
        "line1\nchanged\n"
    );
    assert!(!dir.path().join("delete.txt").exists());
}

#[test]
fn failures_print_the_model_text_and_exit_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = std::fs::canonicalize(dir.path()).unwrap();
    let out = apply_patch(
        dir.path(),
        "*** Begin Patch\n*** Update File: missing.txt\n@@\n-a\n+b\n*** End Patch",
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "");
    assert_eq!(
        stderr(&out),
        format!(
            "apply_patch verification failed: Failed to read file to update {}: No such file or directory (os error 2)\n",
            cwd.join("missing.txt").display()
        )
    );
    let out = apply_patch(dir.path(), "*** Begin Patch\n*** End Patch", &[]);
    assert_eq!(
        (stderr(&out).as_str(), out.status.code()),
        ("patch rejected: empty patch\n", Some(1))
    );
    let out = apply_patch(dir.path(), "garbage", &[]);
    assert_eq!(
        stderr(&out),
        "apply_patch verification failed: Invalid patch: The first line of the patch must be '*** Begin Patch'\n"
    );
}

#[test]
fn stays_in_the_current_directory_unless_told_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let inner = dir.path().join("inner");
    std::fs::create_dir(&inner).unwrap();
    let patch = "*** Begin Patch\n*** Add File: ../escaped.txt\n+x\n*** End Patch";
    let out = apply_patch(&inner, patch, &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).starts_with("patch rejected: access denied: "),
        "{}",
        stderr(&out)
    );
    assert!(!dir.path().join("escaped.txt").exists());

    let out = apply_patch(&inner, patch, &["--allow-any-workspace"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(dir.path().join("escaped.txt").exists());

    let root = dir.path().display().to_string();
    let patch = "*** Begin Patch\n*** Add File: ../second.txt\n+x\n*** End Patch";
    let out = apply_patch(&inner, patch, &["--workspace-root", &root]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn the_patch_may_be_the_argument_and_usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_apply-patch"))
        .arg("*** Begin Patch\n*** Add File: a.txt\n+a\n*** End Patch")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("a.txt")).unwrap(),
        "a\n"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_apply-patch"))
        .args(["one", "two"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("exactly one argument"),
        "{}",
        stderr(&out)
    );
    // Nothing on stdin.
    let out = apply_patch(dir.path(), "", &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).starts_with("Usage: apply-patch"),
        "{}",
        stderr(&out)
    );
}
