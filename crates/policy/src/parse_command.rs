//! `parsed_cmd`: a short, human-readable summary of what a command does, for
//! `exec_approval_request` and `exec_command_begin` events (Codex:
//! `codex-rs/protocol/src/protocol.rs`). It is display metadata only — no
//! decision depends on it.

use serde::{Deserialize, Serialize};

use crate::safety::is_known_safe;
use crate::shell;

/// One summarised step of a command, as Codex's `ParsedCommand`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ParsedCommand {
    /// Reads one file (`cat`, `head -n 5 f`, `sed -n 1,5p f`, …).
    Read {
        /// The command as shown to the user.
        cmd: String,
        /// A short name for the file.
        name: String,
        /// The file, relative to the command's cwd (after any `cd`).
        path: String,
    },
    /// Lists files (`ls`, `tree`, `rg --files`, `find` without a filter, …).
    ListFiles {
        /// The command as shown to the user.
        cmd: String,
        /// A short name for the directory listed.
        path: Option<String>,
    },
    /// Searches (`rg foo`, `grep -n foo src`, `find . -name x`, …).
    Search {
        /// The command as shown to the user.
        cmd: String,
        /// What is searched for.
        query: Option<String>,
        /// A short name for where.
        path: Option<String>,
    },
    /// Anything else. When any step is unknown, the whole command is one
    /// `Unknown` holding the script (or the joined argv).
    Unknown {
        /// The script, or the argv joined with shell quoting.
        cmd: String,
    },
}

/// Summarises `argv`. A `bash -lc` script is summarised per plain command
/// (formatting helpers in pipelines such as `| head -n 20` are dropped and
/// `cd` is folded into later paths); any other argv is one command. Never
/// splits a string on whitespace.
pub fn parse_command(argv: &[String]) -> Vec<ParsedCommand> {
    let parsed = match shell::shell_script(argv) {
        Some(script) => summarize_script(script),
        None => vec![summarize(argv)],
    };
    let mut deduped: Vec<ParsedCommand> = Vec::with_capacity(parsed.len());
    for command in parsed {
        if deduped.last() != Some(&command) {
            deduped.push(command);
        }
    }
    if deduped.is_empty()
        || deduped
            .iter()
            .any(|command| matches!(command, ParsedCommand::Unknown { .. }))
    {
        let cmd = shell::shell_script(argv).map_or_else(|| join(argv), str::to_owned);
        return vec![ParsedCommand::Unknown { cmd }];
    }
    deduped
}

fn summarize_script(script: &str) -> Vec<ParsedCommand> {
    let unknown = || {
        vec![ParsedCommand::Unknown {
            cmd: script.to_owned(),
        }]
    };
    let Some(commands) = shell::parse_plain_script(script) else {
        return unknown();
    };
    let pipeline_reads_with_sed = commands.len() > 1
        && commands
            .iter()
            .any(|words| words.len() >= 2 && words[0] == "sed" && words[1] == "-n");
    let mut cwd: Option<String> = None;
    let mut summaries = Vec::new();
    for words in commands.iter().filter(|words| !is_formatting_helper(words)) {
        if words.first().is_some_and(|cmd| cmd == "cd") {
            if let Some(dir) = cd_target(&words[1..]) {
                cwd = Some(match &cwd {
                    Some(base) => join_path(base, &dir),
                    None => dir,
                });
            }
            continue;
        }
        let summary = match summarize(words) {
            ParsedCommand::Read { cmd, name, path } => ParsedCommand::Read {
                cmd,
                name,
                path: cwd
                    .as_deref()
                    .map_or(path.clone(), |base| join_path(base, &path)),
            },
            other => other,
        };
        summaries.push(summary);
    }
    if summaries.len() > 1 {
        summaries.retain(|s| !matches!(s, ParsedCommand::Unknown { cmd } if cmd == "true"));
    }
    if summaries.is_empty() {
        return unknown();
    }
    // `cat f | sed -n 1,20p` reads one file; show what actually ran.
    if let [ParsedCommand::Read { name, path, .. }] = summaries.as_slice()
        && pipeline_reads_with_sed
    {
        return vec![ParsedCommand::Read {
            cmd: script.to_owned(),
            name: name.clone(),
            path: path.clone(),
        }];
    }
    summaries
}

/// Pipeline helpers that only format another command's output.
fn is_formatting_helper(words: &[String]) -> bool {
    let Some((cmd, args)) = words.split_first() else {
        return false;
    };
    let counted = |flag: &str, count: &str| {
        matches!(flag, "-n" | "-c")
            && count
                .strip_prefix('+')
                .unwrap_or(count)
                .bytes()
                .all(|b| b.is_ascii_digit())
    };
    match cmd.as_str() {
        "wc" | "tr" | "cut" | "sort" | "uniq" | "tee" | "column" | "yes" | "printf" | "awk" => true,
        // `| xargs perl -pi -e …` edits files: only a read-only xargs is a helper.
        "xargs" => xargs_command(args).is_none_or(is_known_safe),
        "head" | "tail" => match args {
            [] => true,
            [arg] => arg.starts_with('-'),
            [flag, count] => counted(flag, count),
            _ => false,
        },
        "sed" => sed_read_path(args).is_none(),
        _ => false,
    }
}

fn summarize(words: &[String]) -> ParsedCommand {
    let cmd = join(words);
    let Some((head, args)) = words.split_first() else {
        return ParsedCommand::Unknown { cmd };
    };
    let read = |path: String| ParsedCommand::Read {
        cmd: cmd.clone(),
        name: short_display_path(&path),
        path,
    };
    let list = |path: Option<String>| ParsedCommand::ListFiles {
        cmd: cmd.clone(),
        path: path.map(|p| short_display_path(&p)),
    };
    let search = |query: Option<String>, path: Option<String>| ParsedCommand::Search {
        cmd: cmd.clone(),
        query,
        path: path.map(|p| short_display_path(&p)),
    };
    match head.as_str() {
        "ls" | "eza" | "exa" => list(operands(args, &["-I", "-w", "--color"]).first().cloned()),
        "tree" => list(operands(args, &["-L", "-P", "-I"]).first().cloned()),
        "du" => list(
            operands(args, &["-d", "--max-depth", "-B"])
                .first()
                .cloned(),
        ),
        "rg" | "rga" => {
            let ops = operands(
                args,
                &["-g", "--glob", "-t", "--type", "-m", "-A", "-B", "-C"],
            );
            if args.iter().any(|arg| arg == "--files") {
                list(ops.first().cloned())
            } else {
                search(ops.first().cloned(), ops.get(1).cloned())
            }
        }
        "grep" | "egrep" | "fgrep" => grep_like(args, search),
        "ag" | "ack" | "pt" => {
            let ops = operands(args, &["-G", "-g", "--ignore-dir"]);
            search(ops.first().cloned(), ops.get(1).cloned())
        }
        "git" => match args.split_first() {
            Some((sub, rest)) if sub == "grep" => grep_like(rest, search),
            Some((sub, rest)) if sub == "ls-files" => list(
                operands(rest, &["--exclude", "--exclude-from"])
                    .first()
                    .cloned(),
            ),
            _ => ParsedCommand::Unknown { cmd },
        },
        "fd" => {
            let ops = operands(
                args,
                &["-t", "--type", "-e", "--extension", "-E", "--exclude"],
            );
            match ops.as_slice() {
                [one] if is_pathish(one) => list(Some(one.clone())),
                [query, rest @ ..] => search(Some(query.clone()), rest.first().cloned()),
                [] => list(None),
            }
        }
        "find" => {
            let path = args
                .iter()
                .find(|a| !a.starts_with('-') && !matches!(a.as_str(), "!" | "(" | ")"))
                .cloned();
            let query = args
                .iter()
                .position(|a| matches!(a.as_str(), "-name" | "-iname" | "-path" | "-regex"))
                .and_then(|i| args.get(i + 1).cloned());
            if query.is_some() {
                search(query, path)
            } else {
                list(path)
            }
        }
        "cat" | "more" | "bat" | "batcat" | "less" => {
            match operands(args, &["--theme", "--language", "-p", "--pattern"]).as_slice() {
                [path] => read(path.clone()),
                _ => ParsedCommand::Unknown { cmd },
            }
        }
        "head" | "tail" | "nl" => {
            match operands(args, &["-n", "-c", "-s", "-w", "-v", "-i", "-b"]).as_slice() {
                [path] => read(path.clone()),
                _ => ParsedCommand::Unknown { cmd },
            }
        }
        "sed" => sed_read_path(args).map_or(ParsedCommand::Unknown { cmd: cmd.clone() }, read),
        _ => ParsedCommand::Unknown { cmd },
    }
}

/// The command `xargs` runs, after its options.
fn xargs_command(args: &[String]) -> Option<&[String]> {
    let mut i = 0;
    while let Some(arg) = args.get(i) {
        if arg == "--" {
            return args.get(i + 1..).filter(|rest| !rest.is_empty());
        }
        if !arg.starts_with('-') {
            return args.get(i..);
        }
        let takes_value = matches!(arg.as_str(), "-E" | "-e" | "-I" | "-L" | "-n" | "-P" | "-s");
        i += if takes_value { 2 } else { 1 };
    }
    None
}

/// `grep [-e PAT] PAT [PATH]`: the query is the pattern, the path follows.
fn grep_like(
    args: &[String],
    search: impl Fn(Option<String>, Option<String>) -> ParsedCommand,
) -> ParsedCommand {
    let pattern = args
        .iter()
        .position(|a| a == "-e" || a == "--regexp")
        .and_then(|i| args.get(i + 1).cloned());
    let ops = operands(args, &["-e", "--regexp", "-f", "-m", "-A", "-B", "-C"]);
    match pattern {
        Some(pattern) => search(Some(pattern), ops.first().cloned()),
        None => search(ops.first().cloned(), ops.get(1).cloned()),
    }
}

/// `sed -n <range>p FILE` reads FILE.
fn sed_read_path(args: &[String]) -> Option<String> {
    match args {
        [flag, range, path] if flag == "-n" && is_print_range(range) && !path.starts_with('-') => {
            Some(path.clone())
        }
        _ => None,
    }
}

fn is_print_range(arg: &str) -> bool {
    arg.strip_suffix('p').is_some_and(|range| {
        !range.is_empty()
            && range
                .split(',')
                .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            && range.split(',').count() <= 2
    })
}

/// Positional operands, skipping the values of `flags_with_values` and
/// treating everything after `--` as an operand.
fn operands(args: &[String], flags_with_values: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == "--" {
            out.extend(iter.by_ref().cloned());
        } else if flags_with_values.contains(&arg.as_str()) {
            iter.next();
        } else if !arg.starts_with('-') {
            out.push(arg.clone());
        }
    }
    out
}

fn cd_target(args: &[String]) -> Option<String> {
    match args.iter().position(|a| a == "--") {
        Some(i) => args.get(i + 1).cloned(),
        None => args.iter().rfind(|a| !a.starts_with('-')).cloned(),
    }
}

fn is_pathish(s: &str) -> bool {
    s == "." || s == ".." || s.contains('/')
}

fn join_path(base: &str, rel: &str) -> String {
    if rel.starts_with('/') || base.is_empty() || base == "." {
        rel.to_owned()
    } else {
        format!("{}/{rel}", base.trim_end_matches('/'))
    }
}

/// The last path component that says something: `webview/src` → `webview`.
fn short_display_path(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    trimmed
        .rsplit('/')
        .find(|part| !matches!(*part, "" | "build" | "dist" | "node_modules" | "src"))
        .unwrap_or(trimmed)
        .to_owned()
}

/// Joins argv for display with shell quoting.
pub(crate) fn join(words: &[String]) -> String {
    shlex::try_join(words.iter().map(String::as_str)).unwrap_or_else(|_| words.join(" "))
}
