#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Command safety (Codex: `codex-rs/shell-command/src/command_safety/`, `codex-rs/shell-command/src/bash.rs`) and `parsed_cmd` summaries.

use keel_policy::safety::{is_dangerous, is_known_safe};
use keel_policy::{ParsedCommand, Safety, classify, parse_command};

fn argv(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn bash(script: &str) -> Vec<String> {
    argv(&["bash", "-lc", script])
}

#[track_caller]
fn safe(items: &[&str]) {
    assert_eq!(classify(&argv(items)), Safety::Safe, "{items:?}");
}

#[track_caller]
fn not_safe(items: &[&str]) {
    assert!(
        !is_known_safe(&argv(items)),
        "{items:?} should not be known-safe"
    );
}

#[test]
fn the_always_safe_list() {
    for cmd in [
        "cat", "cd", "cut", "echo", "expr", "false", "grep", "head", "id", "ls", "nl", "paste",
        "pwd", "rev", "seq", "stat", "tail", "tr", "true", "uname", "uniq", "wc", "which",
        "whoami", "numfmt", "tac",
    ] {
        safe(&[cmd, "anything", "--at-all"]);
    }
    // By file name.
    safe(&["/bin/ls", "-la"]);
    safe(&["/usr/bin/cat", "Cargo.toml"]);
}

#[test]
fn everything_else_is_not_safe() {
    for items in [
        &["cargo", "check"][..],
        &["python3", "-c", "print(1)"],
        &["npm", "install"],
        &["make"],
        &["rm", "file"],
        &["sort", "file"],
        &["xargs", "ls"],
        &["bash"],
        &["env", "ls"],
        &["sudo", "ls"],
        &[],
    ] {
        not_safe(items);
    }
}

#[test]
fn base64_is_safe_unless_it_writes_a_file() {
    safe(&["base64"]);
    safe(&["base64", "-d", "in.txt"]);
    safe(&["base64", "--decode", "in.txt"]);
    not_safe(&["base64", "-o", "out.bin"]);
    not_safe(&["base64", "--output", "out.bin"]);
    not_safe(&["base64", "--output=out.bin"]);
    not_safe(&["base64", "-ob64.txt"]);
    not_safe(&["base64", "in.txt", "-o", "out"]);
}

#[test]
fn find_is_safe_unless_it_deletes_writes_or_executes() {
    safe(&["find", ".", "-name", "file.txt"]);
    safe(&["find", "src", "-type", "f", "-newer", "Cargo.toml"]);
    for option in [
        "-exec", "-execdir", "-ok", "-okdir", "-delete", "-fls", "-fprint", "-fprint0", "-fprintf",
    ] {
        not_safe(&["find", ".", "-name", "x", option, "rm", "{}", ";"]);
    }
    not_safe(&["find", ".", "-delete"]);
}

#[test]
fn rg_is_safe_unless_it_runs_helpers() {
    safe(&["rg", "Cargo.toml", "-n"]);
    safe(&["rg", "--files"]);
    safe(&["rg", "-i", "--glob", "*.rs", "TODO"]);
    not_safe(&["rg", "--pre", "pwned", "files"]);
    not_safe(&["rg", "--pre=pwned", "files"]);
    not_safe(&["rg", "--hostname-bin", "pwned", "files"]);
    not_safe(&["rg", "--hostname-bin=pwned", "files"]);
    not_safe(&["rg", "--search-zip", "files"]);
    not_safe(&["rg", "-z", "files"]);
}

#[test]
fn sed_is_safe_only_as_a_line_printer() {
    safe(&["sed", "-n", "10p"]);
    safe(&["sed", "-n", "1,5p", "file.txt"]);
    safe(&["sed", "-n", "120,240p", "src/lib.rs"]);
    not_safe(&["sed", "-i", "s/a/b/", "file.txt"]);
    not_safe(&["sed", "-n", "xp", "file.txt"]);
    not_safe(&["sed", "-n", "1,5", "file.txt"]);
    not_safe(&["sed", "-n", "1,2,3p", "file.txt"]);
    not_safe(&["sed", "-n", ",5p", "file.txt"]);
    not_safe(&["sed", "-n", "1,5p", "a.txt", "b.txt"]);
    not_safe(&["sed", "s/a/b/", "file.txt"]);
    not_safe(&["sed", "-n", "1p;w out", "f"]);
}

#[test]
fn git_is_safe_only_for_read_only_subcommands() {
    safe(&["git", "status"]);
    safe(&["git", "log", "-p", "-1"]);
    safe(&["git", "diff", "--stat", "HEAD~1"]);
    safe(&["git", "show", "HEAD"]);
    safe(&["git", "branch"]);
    safe(&["git", "branch", "--show-current"]);
    safe(&["git", "branch", "-a", "-vv", "--format=%(refname)"]);
    safe(&["git", "-C", "/repo", "status"]);
    safe(&["git", "--no-pager", "log"]);
    safe(&["/usr/bin/git", "status"]);

    not_safe(&["git", "push"]);
    not_safe(&["git", "fetch"]);
    not_safe(&["git", "commit", "-m", "x"]);
    not_safe(&["git", "reset", "--hard"]);
    not_safe(&["git", "checkout", "status"]);
    not_safe(&["git"]);
    // Branch with anything but listing flags changes branches.
    not_safe(&["git", "branch", "new-feature"]);
    not_safe(&["git", "branch", "-d", "old"]);
    not_safe(&["git", "branch", "-D", "old"]);
    // Config and path overrides, anywhere.
    not_safe(&["git", "-c", "core.pager=evil", "log"]);
    not_safe(&["git", "-ccore.pager=evil", "log"]);
    not_safe(&["git", "--config-env", "core.pager=X", "log"]);
    not_safe(&["git", "--config-env=core.pager=X", "log"]);
    not_safe(&["git", "--git-dir=/elsewhere", "status"]);
    not_safe(&["git", "--git-dir", "/elsewhere", "status"]);
    not_safe(&["git", "--work-tree=/x", "status"]);
    not_safe(&["git", "--exec-path=/x", "status"]);
    not_safe(&["git", "--namespace=x", "log"]);
    not_safe(&["git", "--super-prefix=x", "status"]);
    not_safe(&["git", "status", "-c", "x=y"]);
    // Writing, running programs, paging.
    not_safe(&["git", "diff", "--output=patch.diff"]);
    not_safe(&["git", "log", "--output", "x"]);
    not_safe(&["git", "diff", "--ext-diff"]);
    not_safe(&["git", "show", "--textconv", "HEAD"]);
    not_safe(&["git", "--paginate", "log"]);
    not_safe(&["git", "log", "--exec=x"]);
    not_safe(&["git", "log", "--exec", "x"]);
}

#[test]
fn scripts_are_safe_when_every_plain_command_is() {
    for script in [
        "ls",
        "ls -1",
        "ls && pwd",
        "echo 'hi' ; ls",
        "ls | wc -l",
        "grep -R \"Cargo.toml\" -n || true",
        "sed -n '1,5p' file.txt",
        "find . -name file.txt",
        "git status && git diff",
        "cat a.txt\ncat b.txt",
    ] {
        assert_eq!(classify(&bash(script)), Safety::Safe, "{script:?}");
    }
    assert!(is_known_safe(&argv(&["zsh", "-lc", "ls"])));
    assert!(is_known_safe(&argv(&["/bin/sh", "-c", "ls"])));
}

#[test]
fn scripts_are_not_safe_when_not_plain_or_any_command_is_not() {
    for script in [
        "ls > out",
        "ls >> out",
        "cat < /etc/passwd",
        "ls && rm -rf /",
        "find . -name file.txt -delete",
        "(ls)",
        "ls || (pwd && echo hi)",
        "echo $(whoami)",
        "echo `whoami`",
        "echo $HOME",
        "echo \"$HOME\"",
        "FOO=1 ls",
        "ls &",
        "ls ;; pwd",
        "ls | | wc",
        "ls &&",
        "cat <<EOF\nx\nEOF",
        "cat <<< x",
        "'git status'",
        "",
    ] {
        assert!(!is_known_safe(&bash(script)), "{script:?}");
    }
    // Only the three-argument form is a script.
    not_safe(&["bash", "-lc", "git", "status"]);
    not_safe(&["bash", "-lc"]);
    not_safe(&["bash", "-x", "ls"]);
}

#[test]
fn dangerous_commands() {
    for items in [
        &["rm", "-rf", "/"][..],
        &["rm", "-f", "file"],
        &["/bin/rm", "-rf", "x"],
        &["sudo", "rm", "-rf", "/"],
        &["sudo", "sudo", "rm", "-f", "x"],
        &["sudo", "bash", "-lc", "rm -rf /tmp/x"],
    ] {
        assert_eq!(classify(&argv(items)), Safety::Dangerous, "{items:?}");
    }
    for script in ["rm -rf / ; ls", "ls && rm -f x", "echo hi | sudo rm -rf /"] {
        assert_eq!(classify(&bash(script)), Safety::Dangerous, "{script:?}");
    }
}

#[test]
fn not_dangerous() {
    for items in [
        &["rm", "file"][..],
        &["rm", "-r", "dir"],
        &["rm", "dir", "-rf"],
        &["rm", "-fr", "dir"],
        &["rm", "--force", "x"],
        &["git", "reset", "--hard"],
        &["git", "push", "--force"],
        &["sudo", "ls"],
        &["sudo"],
        &[],
    ] {
        assert!(!is_dangerous(&argv(items)), "{items:?}");
    }
    // Not a plain script: unknown, not dangerous (Codex: `codex-rs/shell-command/src/command_safety/`, reads plain scripts only).
    assert_eq!(classify(&bash("rm -rf \"$X\"")), Safety::Unknown);
    assert_eq!(classify(&bash("echo 'rm -rf /'")), Safety::Safe);
}

#[test]
fn unicode_is_ordinary_word_text() {
    // tree-sitter-bash 0.25 segfaults on `{` + U+C4747 unless masked.
    assert_eq!(classify(&bash("{\u{c4747}")), Safety::Unknown);
    assert_eq!(classify(&bash("cat 日本.txt && ls ü")), Safety::Safe);
    assert_eq!(classify(&bash("rm -rf /tmp/é ; ls")), Safety::Dangerous);
    // A no-break space does not split words for bash.
    assert_eq!(classify(&bash("rm\u{a0}-rf x")), Safety::Unknown);
}

#[test]
fn the_required_script_examples() {
    assert_eq!(classify(&bash("ls && pwd")), Safety::Safe);
    assert_eq!(classify(&bash("ls > out")), Safety::Unknown);
    assert_eq!(classify(&bash("rm -rf / ; ls")), Safety::Dangerous);
    assert_eq!(classify(&argv(&["cargo", "build"])), Safety::Unknown);
}

#[test]
fn safety_serialises_in_snake_case() {
    assert_eq!(
        serde_json::to_string(&Safety::Dangerous).unwrap(),
        "\"dangerous\""
    );
    assert_eq!(Safety::Unknown.as_str(), "unknown");
}

fn read(cmd: &str, name: &str, path: &str) -> ParsedCommand {
    ParsedCommand::Read {
        cmd: cmd.to_owned(),
        name: name.to_owned(),
        path: path.to_owned(),
    }
}

#[test]
fn parsed_cmd_summaries() {
    assert_eq!(
        parse_command(&bash("cat webview/README.md")),
        vec![read(
            "cat webview/README.md",
            "README.md",
            "webview/README.md"
        )]
    );
    assert_eq!(
        parse_command(&bash("cd foo && cat foo.txt")),
        vec![read("cat foo.txt", "foo.txt", "foo/foo.txt")]
    );
    assert_eq!(
        parse_command(&argv(&["sed", "-n", "1,20p", "src/main.rs"])),
        vec![read("sed -n '1,20p' src/main.rs", "main.rs", "src/main.rs")]
    );
    assert_eq!(
        parse_command(&bash("head -n 50 Cargo.toml")),
        vec![read("head -n 50 Cargo.toml", "Cargo.toml", "Cargo.toml")]
    );
    assert_eq!(
        parse_command(&bash("ls -la | sed -n '1,120p'")),
        vec![ParsedCommand::ListFiles {
            cmd: "ls -la".to_owned(),
            path: None
        }]
    );
    assert_eq!(
        parse_command(&bash("rg --files webview/src | head -n 50")),
        vec![ParsedCommand::ListFiles {
            cmd: "rg --files webview/src".to_owned(),
            path: Some("webview".to_owned())
        }]
    );
    assert_eq!(
        parse_command(&bash("rg -n \"BUG|FIXME\" -S | head -n 200")),
        vec![ParsedCommand::Search {
            cmd: "rg -n 'BUG|FIXME' -S".to_owned(),
            query: Some("BUG|FIXME".to_owned()),
            path: None
        }]
    );
    assert_eq!(
        parse_command(&argv(&["grep", "-rn", "TODO", "src"])),
        vec![ParsedCommand::Search {
            cmd: "grep -rn TODO src".to_owned(),
            query: Some("TODO".to_owned()),
            path: Some("src".to_owned())
        }]
    );
    assert_eq!(
        parse_command(&argv(&["find", ".", "-name", "*.rs"])),
        vec![ParsedCommand::Search {
            cmd: "find . -name '*.rs'".to_owned(),
            query: Some("*.rs".to_owned()),
            path: Some(".".to_owned())
        }]
    );
    assert_eq!(
        parse_command(&argv(&["git", "ls-files", "src"])),
        vec![ParsedCommand::ListFiles {
            cmd: "git ls-files src".to_owned(),
            path: Some("src".to_owned())
        }]
    );
}

#[test]
fn any_unknown_step_makes_the_whole_command_unknown() {
    for script in [
        "git status | wc -l",
        "echo foo > bar",
        "cd foo && bar",
        "rg -l x src | xargs perl -pi -e 's/a/b/'",
    ] {
        assert_eq!(
            parse_command(&bash(script)),
            vec![ParsedCommand::Unknown {
                cmd: script.to_owned()
            }],
            "{script:?}"
        );
    }
    assert_eq!(
        parse_command(&argv(&["cargo", "test", "--", "a b"])),
        vec![ParsedCommand::Unknown {
            cmd: "cargo test -- 'a b'".to_owned()
        }]
    );
    assert_eq!(
        parse_command(&[]),
        vec![ParsedCommand::Unknown { cmd: String::new() }]
    );
}

#[test]
fn parsed_cmd_serialises_like_codex() {
    let json = serde_json::to_value(read("cat a", "a", "a")).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"type": "read", "cmd": "cat a", "name": "a", "path": "a"})
    );
    let json = serde_json::to_value(ParsedCommand::ListFiles {
        cmd: "ls".to_owned(),
        path: None,
    })
    .unwrap();
    assert_eq!(json["type"], "list_files");
}

/// Bash removes a backslash outside single quotes (and a backslash-newline
/// altogether) before the program sees its arguments; the words of the
/// parse tree still hold them. `\-delete` is `-delete` to `find`, and
/// a script whose words differ from what runs cannot be judged safe.
#[test]
fn backslashes_outside_single_quotes_make_a_script_unknown() {
    for script in [
        r"find . \-delete",
        r"find . -name x \-exec touch /tmp/pwned +",
        r"find . -\delete",
        r"find . -del\ete",
        "find . -\\\ndelete",
        "find . \"-de\\\nlete\"",
        r"rg \--pre=sh x",
        r"rg --p\re=sh x",
        r"git log \--output=/tmp/x",
        r"git \-c core.pager=sh log",
        r"base64 \-o /tmp/x y",
        r"sed -n 1p \-i x",
        r"ls && find . \-delete",
    ] {
        assert!(!is_known_safe(&bash(script)), "{script:?}");
    }
    // Inside single quotes a backslash is an ordinary character.
    assert!(is_known_safe(&bash(r"grep -n 'a\.b' file.txt")));
    assert!(is_known_safe(&bash(r"echo 'C:\dir'")));
}
