//! The contract check (`scripts/check-contracts`) itself: it passes the
//! contracts as they are and additive changes, and fails changes that would
//! break a client built from the current `proto/` — over the wire or in
//! JSON — and unformatted files.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else if entry.path().extension().is_some_and(|e| e == "proto")
            || entry.file_name() == "buf.yaml"
        {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}

/// A copy of `proto/` with `session.proto` edited by `edit`.
fn changed(edit: impl FnOnce(String) -> String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo_root().join("proto"), dir.path());
    let file = dir.path().join("keel/v1/session.proto");
    let before = std::fs::read_to_string(&file).unwrap();
    let after = edit(before.clone());
    assert_ne!(before, after, "the edit changed nothing");
    std::fs::write(&file, after).unwrap();
    dir
}

/// Runs the check of `input` against the repository's `proto/`: success,
/// and everything it printed.
fn check(input: &Path) -> (bool, String) {
    let root = repo_root();
    let out = Command::new(root.join("scripts/check-contracts"))
        .arg("--input")
        .arg(input)
        .arg("--against")
        .arg(root.join("proto"))
        .output()
        .expect("scripts/check-contracts runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Replaces `from` where it starts a line right after StreamEventsRequest's
/// comment on `after_offset` (other messages have an `after_offset` too).
fn replace_once(text: String, from: &str, to: &str) -> String {
    const ANCHOR: &str = "after_offset = N and misses nothing.\n";
    let (from, to) = (format!("{ANCHOR}{from}"), format!("{ANCHOR}{to}"));
    assert_eq!(
        text.matches(&from).count(),
        1,
        "{from:?} once in session.proto"
    );
    text.replacen(&from, &to, 1)
}

#[test]
fn unchanged_and_additive_contracts_pass() {
    let same = tempfile::tempdir().unwrap();
    copy_dir(&repo_root().join("proto"), same.path());
    let (ok, out) = check(same.path());
    assert!(ok, "{out}");

    // A new field and a new message are compatible.
    let added = changed(|t| {
        replace_once(
            t,
            "  uint64 after_offset = 2;\n",
            "  uint64 after_offset = 2;\n  // A test's new field.\n  string note = 99;\n",
        ) + "\n// A test's new message.\nmessage Added {\n  string name = 1;\n}\n"
    });
    let (ok, out) = check(added.path());
    assert!(ok, "{out}");
}

#[test]
fn a_changed_field_type_fails() {
    let dir =
        changed(|t| replace_once(t, "  uint64 after_offset = 2;", "  int64 after_offset = 2;"));
    let (ok, out) = check(dir.path());
    assert!(!ok, "{out}");
    assert!(out.contains("after_offset"), "{out}");
    assert!(out.contains("break clients"), "{out}");
}

#[test]
fn a_renamed_field_fails_for_json_clients() {
    // Same number and type (the wire is unchanged), another JSON name.
    let dir =
        changed(|t| replace_once(t, "  uint64 after_offset = 2;", "  uint64 from_offset = 2;"));
    let (ok, out) = check(dir.path());
    assert!(!ok, "{out}");
    assert!(out.contains("after_offset"), "{out}");
}

#[test]
fn a_removed_field_fails() {
    let dir = changed(|t| replace_once(t, "  uint64 after_offset = 2;\n", ""));
    let (ok, out) = check(dir.path());
    assert!(!ok, "{out}");
    assert!(out.contains("StreamEventsRequest"), "{out}");
}

#[test]
fn unformatted_contracts_fail() {
    let dir = changed(|t| {
        replace_once(
            t,
            "  uint64 after_offset = 2;",
            "  uint64    after_offset = 2;",
        )
    });
    let (ok, out) = check(dir.path());
    assert!(!ok, "{out}");
    assert!(out.contains("not formatted"), "{out}");
}

/// The default bases: the commit `proto/BREAKING_BASE` names and every
/// later commit that changed `proto/`, so what was added after the base is
/// kept too; `none` skips the check, loudly.
#[test]
fn fields_added_after_the_base_are_kept_too() {
    let repo = tempfile::tempdir().unwrap();
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .arg("-C")
            .arg(repo.path())
            .args(["-c", "user.name=t", "-c", "user.email=t@example.test"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let proto = repo.path().join("proto");
    copy_dir(&repo_root().join("proto"), &proto);
    git(&["init", "-q", "-b", "work"]);
    git(&["add", "."]);
    git(&["commit", "-qm", "published"]);
    let published = git(&["rev-parse", "HEAD"]);
    let session = proto.join("keel/v1/session.proto");
    let text = std::fs::read_to_string(&session).unwrap();
    std::fs::write(
        &session,
        replace_once(
            text,
            "  uint64 after_offset = 2;\n",
            "  uint64 after_offset = 2;\n  // Added after the base.\n  string note = 99;\n",
        ),
    )
    .unwrap();
    std::fs::write(proto.join("BREAKING_BASE"), format!("{published}\n")).unwrap();
    git(&["add", "."]);
    git(&["commit", "-qm", "a field"]);

    let check = || {
        let out = Command::new(repo_root().join("scripts/check-contracts"))
            .arg("--repo")
            .arg(repo.path())
            .arg("--input")
            .arg(&proto)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let (ok, out) = check();
    assert!(ok, "{out}");

    // Renaming the new field breaks JSON clients of the second commit,
    // though the base never had it.
    let text = std::fs::read_to_string(&session).unwrap();
    std::fs::write(&session, {
        assert_eq!(text.matches("string note = 99;").count(), 1);
        text.replacen("string note = 99;", "string remark = 99;", 1)
    })
    .unwrap();
    let (ok, out) = check();
    assert!(!ok, "{out}");
    assert!(out.contains("note"), "{out}");

    // A deliberate break says so.
    std::fs::write(proto.join("BREAKING_BASE"), "none\n").unwrap();
    let (ok, out) = check();
    assert!(ok, "{out}");
    assert!(out.contains("buf breaking is skipped"), "{out}");
}
