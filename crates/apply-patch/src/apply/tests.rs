use std::fs;

use super::*;
use crate::parser::parse_patch;
use crate::{PatchResult, apply_patch};

struct Dir {
    _tmp: tempfile::TempDir,
    path: PathBuf,
    ws: Workspace,
}

fn dir() -> Dir {
    let tmp = tempfile::tempdir().unwrap();
    let path = fs::canonicalize(tmp.path()).unwrap();
    let ws = Workspace::restricted(std::slice::from_ref(&path)).unwrap();
    Dir {
        _tmp: tmp,
        path,
        ws,
    }
}

impl Dir {
    fn write(&self, name: &str, text: &str) {
        let path = self.path.join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }
    fn read(&self, name: &str) -> String {
        fs::read_to_string(self.path.join(name)).unwrap()
    }
    fn exists(&self, name: &str) -> bool {
        self.path.join(name).exists()
    }
    fn apply(&self, body: &str) -> PatchResult {
        apply_patch(
            &format!("*** Begin Patch\n{body}\n*** End Patch"),
            &self.path,
            &self.ws,
        )
    }
    fn refused(&self, body: &str) -> String {
        match self.apply(body) {
            PatchResult::Refused { text } => text,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    fn abs(&self, name: &str) -> String {
        self.path.join(name).display().to_string()
    }
}

fn applied(summary: &str) -> PatchResult {
    PatchResult::Applied {
        summary: summary.to_string(),
    }
}

fn update(original: &str, body: &str) -> Result<String, VerifyError> {
    let hunks = parse_patch(&format!(
        "*** Begin Patch\n*** Update File: f\n{body}\n*** End Patch"
    ))
    .unwrap();
    let Hunk::Update { chunks, .. } = &hunks[0] else {
        panic!("{hunks:?}")
    };
    updated_contents(original, chunks, "/w/f")
}

#[test]
fn add_delete_update_in_one_patch() {
    let d = dir();
    d.write("modify.txt", "line1\nline2\n");
    d.write("delete.txt", "obsolete\n");
    let result = d.apply(
        "*** Add File: nested/new.txt\n+created\n*** Delete File: delete.txt\n*** Update File: modify.txt\n@@\n-line2\n+changed",
    );
    assert_eq!(
        result,
        applied(
            "Success. Updated the following files:\nA nested/new.txt\nM modify.txt\nD delete.txt\n"
        )
    );
    assert_eq!(d.read("nested/new.txt"), "created\n");
    assert_eq!(d.read("modify.txt"), "line1\nchanged\n");
    assert!(!d.exists("delete.txt"));
}

#[test]
fn add_overwrites_an_existing_file() {
    let d = dir();
    d.write("dup.txt", "old\n");
    assert_eq!(
        d.apply("*** Add File: dup.txt\n+new"),
        applied("Success. Updated the following files:\nA dup.txt\n")
    );
    assert_eq!(d.read("dup.txt"), "new\n");
}

#[test]
fn move_writes_the_destination_and_removes_the_source() {
    let d = dir();
    d.write("old/name.txt", "old content\n");
    d.write("renamed/dir/name.txt", "existing\n");
    assert_eq!(
        d.apply("*** Update File: old/name.txt\n*** Move to: renamed/dir/name.txt\n@@\n-old content\n+new content"),
        applied("Success. Updated the following files:\nM old/name.txt\n")
    );
    assert!(!d.exists("old/name.txt"));
    assert_eq!(d.read("renamed/dir/name.txt"), "new content\n");
}

#[test]
fn several_chunks_in_one_update() {
    let d = dir();
    d.write("multi.txt", "line1\nline2\nline3\nline4\n");
    assert_eq!(
        d.apply("*** Update File: multi.txt\n@@\n-line2\n+changed2\n@@\n-line4\n+changed4"),
        applied("Success. Updated the following files:\nM multi.txt\n")
    );
    assert_eq!(d.read("multi.txt"), "line1\nchanged2\nline3\nchanged4\n");
}

#[test]
fn later_hunks_see_earlier_ones() {
    let d = dir();
    d.write("a.txt", "one\n");
    let result =
        d.apply("*** Update File: a.txt\n@@\n-one\n+two\n*** Update File: a.txt\n@@\n-two\n+three");
    assert_eq!(
        result,
        applied("Success. Updated the following files:\nM a.txt\nM a.txt\n")
    );
    assert_eq!(d.read("a.txt"), "three\n");
}

#[test]
fn interleaved_changes_and_end_of_file() {
    let got = update(
        "a\nb\nc\nd\ne\nf\n",
        "@@\n a\n-b\n+B\n@@\n c\n d\n-e\n+E\n@@\n f\n+g\n*** End of File",
    )
    .unwrap();
    assert_eq!(got, "a\nB\nc\nd\nE\nf\ng\n");
}

#[test]
fn end_of_file_anchors_at_the_last_occurrence() {
    let got = update("x\ny\nx\n", "@@\n-x\n+z\n*** End of File").unwrap();
    assert_eq!(got, "x\ny\nz\n");
    // Without the marker the first occurrence is taken.
    let got = update("x\ny\nx\n", "@@\n-x\n+z").unwrap();
    assert_eq!(got, "z\ny\nx\n");
}

#[test]
fn context_marker_narrows_the_search() {
    let got = update(
        "fn a() {\n    pass\n}\nfn b() {\n    pass\n}\n",
        "@@ fn b() {\n-    pass\n+    return",
    )
    .unwrap();
    assert_eq!(got, "fn a() {\n    pass\n}\nfn b() {\n    return\n}\n");
}

#[test]
fn pure_addition_appends() {
    let got = update("a\nb\n", "@@\n+c").unwrap();
    assert_eq!(got, "a\nb\nc\n");
}

#[test]
fn deletion_only_and_missing_final_newline() {
    assert_eq!(update("a\nb\nc\n", "@@\n a\n-b\n c").unwrap(), "a\nc\n");
    assert_eq!(
        update(
            "no newline at end",
            "@@\n-no newline at end\n+first\n+second"
        )
        .unwrap(),
        "first\nsecond\n"
    );
}

#[test]
fn trailing_empty_context_line_stands_for_the_final_newline() {
    // The empty line in the chunk is the file's end, which is not a line.
    assert_eq!(update("a\nb\n", "@@\n-b\n+c\n").unwrap(), "a\nc\n");
    assert_eq!(update("a\nb\n", " a\n-b\n+c\n ").unwrap(), "a\nc\n");
}

#[test]
fn the_four_matching_passes() {
    // 1. exact
    assert_eq!(update("x\n", "@@\n-x\n+y").unwrap(), "y\n");
    // 2. trailing whitespace (and CR) ignored
    assert_eq!(update("x  \r\nz\n", "@@\n-x\n+y").unwrap(), "y\nz\n");
    // 3. surrounding whitespace ignored. The matched region, context
    // included, is replaced by the patch's lines, as in Codex.
    assert_eq!(
        update(
            "    if a:\n        b()\nend\n",
            "@@\n if a:\n-    b()\n+    c()"
        )
        .unwrap(),
        "if a:\n    c()\nend\n"
    );
    // 4. typographic punctuation normalised
    assert_eq!(
        update(
            "print(\u{201C}it\u{2019}s\u{201D}) \u{2014} ok\n",
            "@@\n-print(\"it's\") - ok\n+done"
        )
        .unwrap(),
        "done\n"
    );
}

#[test]
fn unicode_content_round_trips() {
    assert_eq!(
        update("héllo\nwörld\n", "@@\n héllo\n-wörld\n+мир").unwrap(),
        "héllo\nмир\n"
    );
}

#[test]
fn verification_error_texts() {
    let d = dir();
    d.write("modify.txt", "line1\nline2\n");
    fs::create_dir(d.path.join("dir")).unwrap();
    assert_eq!(
        d.refused("*** Update File: modify.txt\n@@\n-missing\n+changed"),
        format!(
            "apply_patch verification failed: Failed to find expected lines in {}:\nmissing",
            d.abs("modify.txt")
        )
    );
    assert_eq!(
        d.refused("*** Update File: modify.txt\n@@ fn nowhere\n-line1\n+x"),
        format!(
            "apply_patch verification failed: Failed to find context 'fn nowhere' in {}",
            d.abs("modify.txt")
        )
    );
    assert_eq!(
        d.refused("*** Update File: missing.txt\n@@\n-old\n+new"),
        format!(
            "apply_patch verification failed: Failed to read file to update {}: No such file or directory (os error 2)",
            d.abs("missing.txt")
        )
    );
    assert_eq!(
        d.refused("*** Delete File: missing.txt"),
        format!(
            "apply_patch verification failed: Failed to delete file {}",
            d.abs("missing.txt")
        )
    );
    assert_eq!(
        d.refused("*** Delete File: dir"),
        format!(
            "apply_patch verification failed: Failed to delete file {}: path is a directory",
            d.abs("dir")
        )
    );
    assert_eq!(
        d.refused("*** Update File: foo.txt"),
        "apply_patch verification failed: Invalid patch hunk on line 2: Update file hunk for path 'foo.txt' is empty"
    );
    assert_eq!(
        apply_patch("*** Begin Patch\n*** End Patch", &d.path, &d.ws),
        PatchResult::Refused {
            text: "patch rejected: empty patch".to_string()
        }
    );
    assert_eq!(
        apply_patch("hello", &d.path, &d.ws),
        PatchResult::Refused {
            text: "apply_patch verification failed: Invalid patch: The first line of the patch must be '*** Begin Patch'".to_string()
        }
    );
    // Nothing was written by any of these.
    assert_eq!(d.read("modify.txt"), "line1\nline2\n");
}

#[test]
fn verification_happens_before_any_write() {
    let d = dir();
    let text = d
        .refused("*** Add File: created.txt\n+hello\n*** Update File: missing.txt\n@@\n-old\n+new");
    assert!(
        text.starts_with("apply_patch verification failed: Failed to read file to update"),
        "{text}"
    );
    assert!(!d.exists("created.txt"));
}

#[test]
fn a_write_failure_keeps_earlier_changes() {
    let d = dir();
    // `blocker` is a file, so nothing can be created under it: verification
    // (which reads, never writes) passes and the second write fails.
    d.write("blocker", "x\n");
    let result =
        d.apply("*** Add File: created.txt\n+hello\n*** Add File: blocker/inner.txt\n+nope");
    assert_eq!(
        result,
        PatchResult::Failed {
            message: format!(
                "Failed to create parent directories for {}",
                d.abs("blocker/inner.txt")
            )
        }
    );
    assert_eq!(d.read("created.txt"), "hello\n");
}

#[test]
fn paths_outside_the_workspace_are_refused() {
    let d = dir();
    let outside = tempfile::tempdir().unwrap();
    let outside_path = fs::canonicalize(outside.path()).unwrap();
    std::os::unix::fs::symlink(&outside_path, d.path.join("link")).unwrap();
    for body in [
        format!(
            "*** Add File: {}\n+x",
            outside_path.join("abs.txt").display()
        ),
        "*** Add File: ../escape.txt\n+x".to_string(),
        "*** Add File: link/through.txt\n+x".to_string(),
    ] {
        let text = d.refused(&body);
        assert!(
            text.starts_with("patch rejected: access denied: "),
            "{body}: {text}"
        );
    }
    d.write("inside.txt", "a\n");
    let text = d.refused(&format!(
        "*** Update File: inside.txt\n*** Move to: {}\n@@\n-a\n+b",
        outside_path.join("moved.txt").display()
    ));
    assert!(
        text.starts_with("patch rejected: access denied: "),
        "{text}"
    );
    assert_eq!(fs::read_dir(&outside_path).unwrap().count(), 0);
    assert_eq!(d.read("inside.txt"), "a\n");
}

#[test]
fn absolute_paths_inside_are_honoured() {
    let d = dir();
    let abs = d.abs("abs.txt");
    assert_eq!(
        d.apply(&format!("*** Add File: {abs}\n+x")),
        applied(&format!("Success. Updated the following files:\nA {abs}\n"))
    );
}

#[test]
fn an_update_reads_nothing_hidden_and_no_fifo() {
    let d = dir();
    d.write("hidden/secret", "sk-secret\n");
    let hidden = vec![d.path.join("hidden")];
    std::os::unix::fs::symlink(d.path.join("hidden/secret"), d.path.join("x")).unwrap();
    let hunks = parse_patch(
        "*** Begin Patch\n*** Update File: x\n*** Move to: leak.txt\n@@\n+added\n*** End Patch",
    )
    .unwrap();
    // Unsandboxed, the link is followed (as before).
    let changes = plan(&hunks, &d.path, &d.ws, &[]).unwrap();
    assert!(
        matches!(&changes[0], Change::Update { contents, .. } if contents == "sk-secret\nadded\n")
    );
    // Sandboxed, the file opened is checked, whatever checked the path.
    let err = plan(&hunks, &d.path, &d.ws, &hidden).unwrap_err();
    assert!(
        err.to_string().starts_with(&format!(
            "Failed to read file to update {}: it leads into a path the sandbox hides",
            d.abs("x")
        )),
        "{err}"
    );
    // A FIFO is refused at once (a read would wait for a writer forever).
    let fifo = d.path.join("fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    if made.is_ok_and(|status| status.success()) {
        let hunks =
            parse_patch("*** Begin Patch\n*** Update File: fifo\n@@\n+x\n*** End Patch").unwrap();
        let err = plan(&hunks, &d.path, &d.ws, &[]).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }
    // A directory fails as it always did.
    fs::create_dir(d.path.join("dir")).unwrap();
    let hunks =
        parse_patch("*** Begin Patch\n*** Update File: dir\n@@\n+x\n*** End Patch").unwrap();
    let err = plan(&hunks, &d.path, &d.ws, &[]).unwrap_err();
    assert!(err.to_string().contains("Is a directory"), "{err}");
}
