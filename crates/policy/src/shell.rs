//! Reading `bash -lc <script>` invocations (Codex: `codex-rs/shell-command/src/bash.rs`).
//!
//! Scripts are parsed with tree-sitter-bash, the grammar Codex uses, so that
//! "is this a plain word-only script?" has the same answer here as there.
//! Nothing in this module splits strings on whitespace: words come only from
//! the grammar.

use std::path::Path;

use tree_sitter::{Node, Parser, Tree};

/// Named node kinds a plain script may contain (Codex: `codex-rs/shell-command/src/bash.rs`). Anything else —
/// substitutions, expansions, redirections, subshells, assignments,
/// comments, control flow — rejects the whole script.
const PLAIN_KINDS: &[&str] = &[
    "program",
    "list",
    "pipeline",
    "command",
    "command_name",
    "word",
    "string",
    "string_content",
    "raw_string",
    "number",
    "concatenation",
];

/// Anonymous tokens a plain script may contain: the four operators and the
/// quote characters of `string` nodes. Whitespace-only tokens (a newline
/// used as a separator) are accepted too, as in Codex.
const PLAIN_TOKENS: &[&str] = &["&&", "||", ";", "|", "\"", "'"];

/// Node kinds that may hang off the single command of a heredoc script
/// (Codex: `codex-rs/shell-command/src/bash.rs`): they attach input to the command without changing its argv. A
/// file redirect is not one of them (Codex's current
/// `parse_shell_lc_single_command_prefix` refuses it too): the prefix may
/// match an allow rule, which runs the command without the sandbox, and
/// `X <<EOF > ~/.bashrc` would then write wherever the model chose.
const HEREDOC_ATTACHMENTS: &[&str] = &[
    "heredoc_body",
    "simple_heredoc_body",
    "heredoc_redirect",
    "herestring_redirect",
    "redirected_statement",
];

/// Directories a shell named by absolute path must be in to count as the
/// system's shell.
const SYSTEM_BIN_DIRS: &[&str] = &["/bin", "/usr/bin", "/usr/local/bin", "/opt/homebrew/bin"];

/// The script of `[bash|zsh|sh, -lc|-c, script]`, the only shape Codex reads
/// as a shell invocation. The flag must be exactly `-lc` or `-c`. The shell
/// is recognised by file name, as Codex does, but only as a bare name (found
/// on PATH) or an absolute path in a system directory (`/bin/bash`,
/// `/usr/bin/zsh`): a model may choose the shell (`exec_command`'s `shell`),
/// and `./bash` or `/tmp/bash` is whatever the model wrote there, not a shell
/// whose script the rules can judge.
pub(crate) fn shell_script(argv: &[String]) -> Option<&str> {
    let [shell, flag, script] = argv else {
        return None;
    };
    if !matches!(flag.as_str(), "-lc" | "-c") {
        return None;
    }
    let path = Path::new(shell);
    let trusted_location = if shell.contains('/') {
        path.parent()
            .and_then(Path::to_str)
            .is_some_and(|dir| SYSTEM_BIN_DIRS.contains(&dir))
    } else {
        true
    };
    let stem = path.file_stem()?.to_str()?;
    (trusted_location && matches!(stem, "bash" | "zsh" | "sh")).then_some(script.as_str())
}

/// The plain commands of a shell invocation, or `None` when `argv` is not a
/// shell invocation or its script is not plain (Codex: `codex-rs/shell-command/src/bash.rs`). An empty script gives
/// `Some(vec![])`; callers treat that as "not parsed".
pub(crate) fn plain_commands(argv: &[String]) -> Option<Vec<Vec<String>>> {
    parse_plain_script(shell_script(argv)?)
}

/// The argv vectors of a script made only of plain commands joined by `&&`,
/// `||`, `;` and `|`, in source order.
///
/// A backslash outside single quotes makes a script not plain (a Keel
/// addition to Codex's rules): bash removes it — and a backslash-newline
/// altogether, inside double quotes too — before the program sees its
/// arguments, while the parse tree's words keep it (or split there). The
/// words would not be what runs: `find . \-delete` is `find . -delete`
/// to bash, and no known-safe check or rule could see the `-delete`.
pub(crate) fn parse_plain_script(script: &str) -> Option<Vec<Vec<String>>> {
    let tree = parse(script)?;
    let root = tree.root_node();
    if root.has_error() {
        return None;
    }
    let mut commands = Vec::new();
    let mut single_quoted = Vec::new();
    let mut stack = vec![root];
    while let Some(node) = stack.pop() {
        let kind = node.kind();
        if node.is_named() {
            if !PLAIN_KINDS.contains(&kind) {
                return None;
            }
            if kind == "command" {
                commands.push(node);
            }
            if kind == "raw_string" {
                single_quoted.push(node.byte_range());
            }
        } else if !(PLAIN_TOKENS.contains(&kind) || kind.trim().is_empty()) {
            return None;
        }
        let mut cursor = node.walk();
        stack.extend(node.children(&mut cursor));
    }
    let escaped = script
        .match_indices('\\')
        .any(|(at, _)| !single_quoted.iter().any(|quoted| quoted.contains(&at)));
    if escaped {
        return None;
    }
    // The walk is depth-first through a stack; restore source order.
    commands.sort_by_key(Node::start_byte);
    commands
        .into_iter()
        .map(|command| plain_words(command, script))
        .collect()
}

/// The literal words of the one command in a heredoc script (Codex: `codex-rs/shell-command/src/bash.rs`), e.g.
/// `["cat"]` for `cat <<EOF > out.txt …`. Used only to match exec-policy
/// rules: it never makes a command known-safe.
///
/// The script must contain a heredoc and no file redirect, exactly one
/// command, that command must sit directly in the program (no subshell,
/// loop or list around it) and its words must be bare literals. Leading
/// `VAR=value` assignments are rejected: they could change which program
/// runs (`PATH=…`). So is a backslash before the heredoc's body (its
/// command line), for the reason [`parse_plain_script`] gives; the body
/// itself is the command's input, backslashes and all.
pub(crate) fn heredoc_command_prefix(argv: &[String]) -> Option<Vec<String>> {
    let script = shell_script(argv)?;
    let tree = parse(script)?;
    let root = tree.root_node();
    if root.has_error()
        || !has_descendant(root, "heredoc_redirect")
        || has_descendant(root, "file_redirect")
    {
        return None;
    }
    let body_start =
        first_start(root, &["heredoc_body", "simple_heredoc_body"]).unwrap_or(script.len());
    if script.get(..body_start)?.contains('\\') {
        return None;
    }
    let command = single_command(root)?;
    let mut parent = command.parent();
    while let Some(node) = parent {
        if !matches!(node.kind(), "program" | "redirected_statement") {
            return None;
        }
        parent = node.parent();
    }
    let mut words = Vec::new();
    let mut cursor = command.walk();
    for child in command.named_children(&mut cursor) {
        match child.kind() {
            "command_name" => {
                let word = child.named_child(0)?;
                words.push(literal_text(word, script)?);
            }
            "word" | "number" => words.push(literal_text(child, script)?),
            "comment" => {}
            kind if HEREDOC_ATTACHMENTS.contains(&kind) => {}
            _ => return None,
        }
    }
    (!words.is_empty()).then_some(words)
}

/// Parses `script` with tree-sitter-bash. Node byte ranges index into
/// `script` itself.
///
/// The grammar sees every non-ASCII character as a run of `a`s of the same
/// UTF-8 length: tree-sitter-bash 0.25 crashes the process on some
/// characters (`{` followed by U+C4747, found by this crate's property
/// tests), and to bash any non-ASCII character is an ordinary word
/// character anyway (tree-sitter would otherwise split words at Unicode
/// spaces, which bash does not). Byte offsets are unchanged, so words are
/// still cut from the original text.
fn parse(script: &str) -> Option<Tree> {
    let masked: String = script
        .chars()
        .flat_map(|c| {
            let (c, n) = if c.is_ascii() {
                (c, 1)
            } else {
                ('a', c.len_utf8())
            };
            std::iter::repeat_n(c, n)
        })
        .collect();
    let mut parser = Parser::new();
    parser
        .set_language(&tree_sitter_bash::LANGUAGE.into())
        .ok()?;
    parser.parse(masked.as_bytes(), None)
}

fn plain_words(command: Node<'_>, src: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut cursor = command.walk();
    for child in command.named_children(&mut cursor) {
        let word = match child.kind() {
            "command_name" => {
                let name = child.named_child(0)?;
                if name.kind() != "word" {
                    return None;
                }
                text(name, src)?.to_owned()
            }
            "word" | "number" => text(child, src)?.to_owned(),
            "string" => double_quoted(child, src)?,
            "raw_string" => single_quoted(child, src)?,
            "concatenation" => concatenation(child, src)?,
            _ => return None,
        };
        words.push(word);
    }
    Some(words)
}

/// Adjacent pieces such as `-g"*.py"` form one word.
fn concatenation(node: Node<'_>, src: &str) -> Option<String> {
    let mut word = String::new();
    let mut cursor = node.walk();
    for part in node.named_children(&mut cursor) {
        match part.kind() {
            "word" | "number" => word.push_str(text(part, src)?),
            "string" => word.push_str(&double_quoted(part, src)?),
            "raw_string" => word.push_str(&single_quoted(part, src)?),
            _ => return None,
        }
    }
    (!word.is_empty()).then_some(word)
}

/// A double-quoted string counts only when it holds plain text: any
/// expansion inside makes its value unknowable here.
fn double_quoted(node: Node<'_>, src: &str) -> Option<String> {
    let mut cursor = node.walk();
    if node
        .named_children(&mut cursor)
        .any(|part| part.kind() != "string_content")
    {
        return None;
    }
    let raw = text(node, src)?;
    Some(raw.strip_prefix('"')?.strip_suffix('"')?.to_owned())
}

fn single_quoted(node: Node<'_>, src: &str) -> Option<String> {
    let raw = text(node, src)?;
    Some(raw.strip_prefix('\'')?.strip_suffix('\'')?.to_owned())
}

fn literal_text(node: Node<'_>, src: &str) -> Option<String> {
    if !matches!(node.kind(), "word" | "number") || node.named_child_count() != 0 {
        return None;
    }
    text(node, src).map(str::to_owned)
}

fn text<'s>(node: Node<'_>, src: &'s str) -> Option<&'s str> {
    src.get(node.byte_range())
}

fn has_descendant(root: Node<'_>, kind: &str) -> bool {
    let mut stack = vec![root];
    while let Some(node) = stack.pop() {
        if node.kind() == kind {
            return true;
        }
        let mut cursor = node.walk();
        stack.extend(node.named_children(&mut cursor));
    }
    false
}

/// Where the first node of one of `kinds` starts, if any.
fn first_start(root: Node<'_>, kinds: &[&str]) -> Option<usize> {
    let mut first = None;
    let mut stack = vec![root];
    while let Some(node) = stack.pop() {
        if kinds.contains(&node.kind()) {
            first = Some(first.map_or(node.start_byte(), |at: usize| at.min(node.start_byte())));
        }
        let mut cursor = node.walk();
        stack.extend(node.named_children(&mut cursor));
    }
    first
}

fn single_command(root: Node<'_>) -> Option<Node<'_>> {
    let mut found = None;
    let mut stack = vec![root];
    while let Some(node) = stack.pop() {
        if node.kind() == "command" {
            if found.is_some() {
                return None;
            }
            found = Some(node);
        }
        let mut cursor = node.walk();
        stack.extend(node.named_children(&mut cursor));
    }
    found
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn words(script: &str) -> Option<Vec<Vec<String>>> {
        parse_plain_script(script)
    }

    fn argv(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn plain_scripts_give_their_commands_in_order() {
        assert_eq!(
            words("ls && pwd; echo 'hi there' | wc -l").unwrap(),
            vec![
                argv(&["ls"]),
                argv(&["pwd"]),
                argv(&["echo", "hi there"]),
                argv(&["wc", "-l"])
            ]
        );
        assert_eq!(
            words(r#"rg -n "foo" -g"*.py" 12"#).unwrap(),
            vec![argv(&["rg", "-n", "foo", "-g*.py", "12"])]
        );
        assert_eq!(
            words(r#"echo "/usr"'/'"local"/bin"#).unwrap(),
            vec![argv(&["echo", "/usr/local/bin"])]
        );
        assert_eq!(
            words("ls\npwd").unwrap(),
            vec![argv(&["ls"]), argv(&["pwd"])]
        );
        assert_eq!(words("").unwrap(), Vec::<Vec<String>>::new());
        assert_eq!(
            words("echo héllo 'wörld' \"日本\" a\u{a0}b").unwrap(),
            vec![argv(&["echo", "héllo", "wörld", "日本", "a\u{a0}b"])]
        );
    }

    #[test]
    fn anything_but_plain_words_rejects_the_script() {
        for script in [
            "ls > out.txt",
            "cat < in",
            "cat <<EOF\nx\nEOF",
            "cat <<< hi",
            "(ls)",
            "ls || (pwd && echo hi)",
            "echo $(pwd)",
            "echo `pwd`",
            "echo $HOME",
            "echo ${HOME}",
            "echo \"hi $USER\"",
            "FOO=bar ls",
            "ls &",
            "echo hi & echo bye",
            "ls ;; pwd",
            "ls | | wc",
            "ls &&",
            "&& ls",
            "ls # comment",
            "if true; then ls; fi",
            "for a in b; do ls; done",
            "{ ls; }",
            "\"ls\" -l",
            "ls 2>&1",
            "echo \"unterminated",
            // Crashed tree-sitter-bash before non-ASCII was masked.
            "{\u{c4747}",
        ] {
            assert_eq!(words(script), None, "{script:?}");
        }
    }

    #[test]
    fn only_three_argument_shell_invocations_are_scripts() {
        assert_eq!(shell_script(&argv(&["bash", "-lc", "ls"])), Some("ls"));
        assert_eq!(shell_script(&argv(&["/bin/zsh", "-c", "ls"])), Some("ls"));
        assert_eq!(shell_script(&argv(&["sh", "-c", "ls"])), Some("ls"));
        assert_eq!(shell_script(&argv(&["bash", "-lc", "git", "status"])), None);
        assert_eq!(shell_script(&argv(&["bash", "-x", "ls"])), None);
        assert_eq!(shell_script(&argv(&["python3", "-c", "ls"])), None);
        assert_eq!(shell_script(&argv(&["fish", "-c", "ls"])), None);
        assert_eq!(
            shell_script(&argv(&["/usr/bin/bash", "-c", "ls"])),
            Some("ls")
        );
        // A "shell" the model may have written is not judged as one.
        for planted in [
            "./bash",
            "bin/bash",
            "/tmp/bash",
            "/work/repo/sh",
            "/bin/../tmp/bash",
        ] {
            assert_eq!(
                shell_script(&argv(&[planted, "-lc", "ls"])),
                None,
                "{planted}"
            );
        }
    }

    #[test]
    fn heredoc_prefix_takes_the_single_commands_words() {
        let prefix = |script: &str| heredoc_command_prefix(&argv(&["bash", "-lc", script]));
        assert_eq!(prefix("cat <<EOF\nhello $X\nEOF").unwrap(), argv(&["cat"]));
        // tree-sitter-bash drops a lone `-` word; Codex sees the same.
        assert_eq!(
            prefix("python3 - <<'PY'\nprint(1)\nPY").unwrap(),
            argv(&["python3"])
        );
        assert_eq!(
            prefix("python3 script.py --n 3 <<'PY'\nx\nPY").unwrap(),
            argv(&["python3", "script.py", "--n", "3"])
        );
        // A body with backslashes is the command's input, nothing more.
        assert_eq!(
            prefix("python3 - <<'PY'\nprint('a\\nb')\nPY").unwrap(),
            argv(&["python3"])
        );
        // A file redirect writes where the script says: no prefix (an
        // allow rule would run it without the sandbox), nor a backslash in
        // the command line.
        assert_eq!(prefix("cat <<EOF > out.txt\nx\nEOF"), None);
        assert_eq!(prefix("cat > out.txt <<EOF\nx\nEOF"), None);
        assert_eq!(prefix("cat <<EOF 2>&1\nx\nEOF"), None);
        assert_eq!(prefix("c\\at <<EOF\nx\nEOF"), None);
        // No heredoc, two commands, a substitution, an assignment, a subshell.
        assert_eq!(prefix("cat > out.txt"), None);
        assert_eq!(prefix("cat <<< hi"), None);
        assert_eq!(prefix("cat <<EOF | sh\nx\nEOF"), None);
        assert_eq!(prefix("cat <<EOF > $(evil)\nx\nEOF"), None);
        assert_eq!(prefix("PATH=/x cat <<EOF\nx\nEOF"), None);
        assert_eq!(prefix("(cat <<EOF\nx\nEOF\n)"), None);
        assert_eq!(prefix("cat \"$F\" <<EOF\nx\nEOF"), None);
    }
}
