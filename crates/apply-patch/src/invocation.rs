//! Recognises apply_patch arriving through a shell tool (Codex:
//! `codex-rs/apply-patch/src/invocation.rs`).
//! Models trained on older Codex still write `apply_patch <<'EOF' … EOF`; such
//! a command must edit files through the patch code (with its workspace
//! checks and output texts), not run as a program that does not exist here.
//!
//! Recognition is conservative, like Codex's: the script must consist of
//! exactly `[cd <dir> &&] apply_patch <<DELIM`, the heredoc body, and the
//! closing delimiter. Anything more (`; echo done`, pipes, a second `cd`)
//! is an ordinary command.

use super::parser::{Hunk, ParseError, parse_patch};

const APPLY_PATCH_COMMANDS: [&str; 2] = ["apply_patch", "applypatch"];

/// What a command is, as far as apply_patch is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    /// An ordinary command.
    NotPatch,
    /// An apply_patch call: the patch text, its hunks, and the `cd`
    /// target, if any.
    Patch {
        body: String,
        hunks: Vec<Hunk>,
        workdir: Option<String>,
    },
    /// An apply_patch call whose patch does not parse.
    Invalid(ParseError),
    /// A bare patch given as the command, without `apply_patch`.
    Implicit,
}

/// The text Codex answers a bare patch with (after
/// `apply_patch verification failed: `).
pub const IMPLICIT_INVOCATION: &str =
    "patch detected without explicit call to apply_patch. Rerun as [\"apply_patch\", \"<patch>\"]";

/// Classifies an argv.
pub fn classify(argv: &[String]) -> Invocation {
    if let [body] = argv
        && parse_patch(body).is_ok()
    {
        return Invocation::Implicit;
    }
    let script = shell_script(argv);
    if let Some(script) = script
        && parse_patch(script).is_ok()
    {
        return Invocation::Implicit;
    }
    if let [program, body] = argv
        && APPLY_PATCH_COMMANDS.contains(&program.as_str())
    {
        return parsed(body, None);
    }
    match script.and_then(heredoc_invocation) {
        Some((body, workdir)) => parsed(&body, workdir),
        None => Invocation::NotPatch,
    }
}

fn parsed(body: &str, workdir: Option<String>) -> Invocation {
    match parse_patch(body) {
        Ok(hunks) => Invocation::Patch {
            body: body.to_string(),
            hunks,
            workdir,
        },
        Err(err) => Invocation::Invalid(err),
    }
}

/// The script of `bash|zsh|sh -c|-lc SCRIPT`, `pwsh|powershell [-NoProfile]
/// -Command SCRIPT` or `cmd /c SCRIPT`.
fn shell_script(argv: &[String]) -> Option<&str> {
    let (shell, flag, script) = match argv {
        [shell, flag, script] => (shell, flag, script),
        [shell, skip, flag, script]
            if is_powershell(shell) && skip.eq_ignore_ascii_case("-noprofile") =>
        {
            (shell, flag, script)
        }
        _ => return None,
    };
    let name = shell_name(shell);
    let ok = match name.as_str() {
        "bash" | "zsh" | "sh" => flag == "-c" || flag == "-lc",
        "pwsh" | "powershell" => flag.eq_ignore_ascii_case("-command"),
        "cmd" => flag.eq_ignore_ascii_case("/c"),
        _ => false,
    };
    ok.then_some(script.as_str())
}

fn is_powershell(shell: &str) -> bool {
    matches!(shell_name(shell).as_str(), "pwsh" | "powershell")
}

/// `/usr/bin/bash` → `bash`, `powershell.exe` → `powershell`.
fn shell_name(shell: &str) -> String {
    std::path::Path::new(shell)
        .file_stem()
        .and_then(|name| name.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase()
}

/// `[cd DIR &&] apply_patch <<DELIM\nBODY\nDELIM`: the body (without its
/// final newline) and DIR.
fn heredoc_invocation(script: &str) -> Option<(String, Option<String>)> {
    let mut rest = script.trim_start();
    let mut workdir = None;
    if let Some(after_cd) = rest.strip_prefix("cd")
        && after_cd.starts_with([' ', '\t'])
    {
        let (dir, after_dir) = shell_word(after_cd.trim_start())?;
        rest = after_dir.trim_start().strip_prefix("&&")?.trim_start();
        workdir = Some(dir);
    }
    let command = APPLY_PATCH_COMMANDS
        .iter()
        .find_map(|name| rest.strip_prefix(name))?;
    let after_op = command.trim_start_matches([' ', '\t']).strip_prefix("<<")?;
    let (after_op, strip_tabs) = match after_op.strip_prefix('-') {
        Some(rest) => (rest, true),
        None => (after_op, false),
    };
    let (header, body_and_end) = after_op.split_once('\n')?;
    let (delimiter, trailing) = shell_word(header.trim_start())?;
    if delimiter.is_empty() || !trailing.trim().is_empty() {
        return None;
    }
    let mut body = Vec::new();
    let mut lines = body_and_end.split('\n');
    for line in lines.by_ref() {
        let line = if strip_tabs {
            line.trim_start_matches('\t')
        } else {
            line
        };
        if line == delimiter {
            // Nothing may follow the heredoc.
            let tail: Vec<&str> = lines.collect();
            return tail
                .iter()
                .all(|l| l.trim().is_empty())
                .then(|| (body.join("\n"), workdir));
        }
        body.push(line);
    }
    None
}

/// One shell word at the start of `text`: `'raw'`, `"plain"` (no escapes or
/// expansions) or a bare word. Returns it unquoted, and what follows.
fn shell_word(text: &str) -> Option<(String, &str)> {
    let first = text.chars().next()?;
    if first == '\'' || first == '"' {
        let inner = &text[1..];
        let end = inner.find(first)?;
        let word = &inner[..end];
        if first == '"' && word.contains(['$', '`', '\\']) {
            return None;
        }
        return Some((word.to_string(), &inner[end + 1..]));
    }
    let end = text
        .find(|c: char| c.is_whitespace() || "'\";&|<>()`$\\".contains(c))
        .unwrap_or(text.len());
    (end > 0).then(|| (text[..end].to_string(), &text[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATCH: &str = "*** Begin Patch\n*** Add File: foo\n+hi\n*** End Patch";

    fn argv(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|s| s.to_string()).collect()
    }

    fn heredoc(prefix: &str, suffix: &str) -> String {
        format!("{prefix}apply_patch <<'PATCH'\n{PATCH}\nPATCH{suffix}")
    }

    fn is_patch(inv: &Invocation, workdir: Option<&str>) -> bool {
        matches!(inv, Invocation::Patch { hunks, workdir: w, .. } if hunks.len() == 1 && w.as_deref() == workdir)
    }

    #[test]
    fn direct_argv() {
        assert!(is_patch(&classify(&argv(&["apply_patch", PATCH])), None));
        assert!(is_patch(&classify(&argv(&["applypatch", PATCH])), None));
        assert!(matches!(
            classify(&argv(&["apply_patch", "nonsense"])),
            Invocation::Invalid(_)
        ));
    }

    #[test]
    fn heredocs_through_shells() {
        for (shell, flag) in [
            ("bash", "-lc"),
            ("/bin/bash", "-c"),
            ("zsh", "-lc"),
            ("sh", "-c"),
        ] {
            let inv = classify(&argv(&[shell, flag, &heredoc("", "")]));
            assert!(is_patch(&inv, None), "{shell} {flag}: {inv:?}");
        }
        for opener in ["<<EOF", "<< 'EOF'", "<<\"EOF\""] {
            let script = format!("apply_patch {opener}\n{PATCH}\nEOF\n");
            assert!(
                is_patch(&classify(&argv(&["bash", "-lc", &script])), None),
                "{opener}"
            );
        }
        let inv = classify(&argv(&[
            "powershell.exe",
            "-NoProfile",
            "-Command",
            &heredoc("", ""),
        ]));
        assert!(is_patch(&inv, None), "{inv:?}");
        let inv = classify(&argv(&["cmd.exe", "/c", &heredoc("cd foo && ", "")]));
        assert!(is_patch(&inv, Some("foo")), "{inv:?}");
    }

    #[test]
    fn cd_prefix() {
        for (prefix, dir) in [
            ("cd foo && ", "foo"),
            ("cd 'foo bar' && ", "foo bar"),
            ("cd \"foo bar\" && ", "foo bar"),
        ] {
            let inv = classify(&argv(&["bash", "-lc", &heredoc(prefix, "")]));
            assert!(is_patch(&inv, Some(dir)), "{prefix}: {inv:?}");
        }
    }

    #[test]
    fn anything_else_is_an_ordinary_command() {
        for (prefix, suffix) in [
            ("cd foo; ", ""),
            ("cd bar || ", ""),
            ("cd bar | ", ""),
            ("echo foo && ", ""),
            ("cd foo && cd bar && ", ""),
            ("cd foo bar && ", ""),
            ("cd bar && ", " && echo done"),
            ("echo foo; cd bar && ", ""),
        ] {
            let inv = classify(&argv(&["bash", "-lc", &heredoc(prefix, suffix)]));
            assert_eq!(inv, Invocation::NotPatch, "{prefix}…{suffix}");
        }
        let script = format!("apply_patch foo <<'PATCH'\n{PATCH}\nPATCH");
        assert_eq!(
            classify(&argv(&["bash", "-lc", &script])),
            Invocation::NotPatch
        );
        assert_eq!(classify(&argv(&["ls", "-la"])), Invocation::NotPatch);
        assert_eq!(
            classify(&argv(&["python", "-c", "print(1)"])),
            Invocation::NotPatch
        );
        assert_eq!(classify(&[]), Invocation::NotPatch);
    }

    #[test]
    fn bare_patches_are_flagged() {
        assert_eq!(classify(&argv(&[PATCH])), Invocation::Implicit);
        assert_eq!(
            classify(&argv(&["bash", "-lc", PATCH])),
            Invocation::Implicit
        );
    }
}
