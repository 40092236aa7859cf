//! The known-safe list and its special rules (Codex: `codex-rs/shell-command/src/command_safety/`).

use super::executable_name;

/// Always safe: they read, print or compute, and have no option that writes
/// or runs another program. `numfmt` and `tac` are Linux-only upstream;
/// Keel runs commands only on Linux, and deciding by the *host* the
/// workflow happens to replay on would break determinism.
const ALWAYS_SAFE: &[&str] = &[
    "cat", "cd", "cut", "echo", "expr", "false", "grep", "head", "id", "ls", "nl", "numfmt",
    "paste", "pwd", "rev", "seq", "stat", "tac", "tail", "tr", "true", "uname", "uniq", "wc",
    "which", "whoami",
];

/// Options that make `find` delete, write files or run commands.
const UNSAFE_FIND_OPTIONS: &[&str] = &[
    "-exec", "-execdir", "-ok", "-okdir", "-delete", "-fls", "-fprint", "-fprint0", "-fprintf",
];

/// `rg` options that run another program (with a value, separate or `=`).
const UNSAFE_RG_WITH_VALUE: &[&str] = &["--pre", "--hostname-bin"];
/// `rg` options that call out to decompressors.
const UNSAFE_RG_FLAGS: &[&str] = &["--search-zip", "-z"];

/// One argv, without looking inside shell scripts.
pub(super) fn is_safe_to_exec(argv: &[String]) -> bool {
    let Some(name) = argv.first().and_then(|cmd| executable_name(cmd)) else {
        return false;
    };
    let args = &argv[1..];
    match name {
        name if ALWAYS_SAFE.contains(&name) => true,
        "base64" => !args
            .iter()
            .any(|arg| arg.starts_with("-o") || arg == "--output" || arg.starts_with("--output=")),
        "find" => !args
            .iter()
            .any(|arg| UNSAFE_FIND_OPTIONS.contains(&arg.as_str())),
        "rg" => !args.iter().any(|arg| {
            UNSAFE_RG_FLAGS.contains(&arg.as_str())
                || UNSAFE_RG_WITH_VALUE
                    .iter()
                    .any(|opt| arg == opt || is_inline_value(arg, opt))
        }),
        "sed" => is_sed_print(argv),
        "git" => is_safe_git(args),
        _ => false,
    }
}

/// `sed -n <N>p [file]` or `sed -n <M>,<N>p [file]`: at most 4 argv entries.
fn is_sed_print(argv: &[String]) -> bool {
    argv.len() <= 4
        && argv.get(1).is_some_and(|arg| arg == "-n")
        && argv.get(2).is_some_and(|arg| is_line_range_print(arg))
}

/// Matches `^(\d+,)?\d+p$`.
fn is_line_range_print(arg: &str) -> bool {
    let Some(range) = arg.strip_suffix('p') else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match range.split_once(',') {
        Some((from, to)) => digits(from) && digits(to),
        None => digits(range),
    }
}

/// Options that point git at other configuration, repositories or
/// programs; any of them anywhere makes `git` not safe.
const GIT_OVERRIDES: &[&str] = &[
    "--config-env",
    "--exec-path",
    "--git-dir",
    "--namespace",
    "--super-prefix",
    "--work-tree",
];

/// Options that write files, run programs or start a pager.
const GIT_UNSAFE_ANYWHERE: &[&str] = &["--ext-diff", "--textconv", "--paginate"];
const GIT_UNSAFE_WITH_VALUE: &[&str] = &["--output", "--exec"];

const GIT_READ_ONLY_SUBCOMMANDS: &[&str] = &["status", "log", "diff", "show", "branch"];

/// Flags under which `git branch` only lists.
const GIT_BRANCH_LISTING: &[&str] = &[
    "--list",
    "-l",
    "--show-current",
    "-a",
    "--all",
    "-r",
    "--remotes",
    "-v",
    "-vv",
    "--verbose",
];

fn is_safe_git(args: &[String]) -> bool {
    let overridden = args.iter().any(|arg| {
        arg.starts_with("-c")
            || GIT_OVERRIDES
                .iter()
                .any(|opt| arg == opt || is_inline_value(arg, opt))
    });
    let unsafe_option = args.iter().any(|arg| {
        GIT_UNSAFE_ANYWHERE.contains(&arg.as_str())
            || GIT_UNSAFE_WITH_VALUE
                .iter()
                .any(|opt| arg == opt || is_inline_value(arg, opt))
    });
    if overridden || unsafe_option {
        return false;
    }
    let Some(index) = git_subcommand_index(args) else {
        return false;
    };
    match args[index].as_str() {
        "branch" => args[index + 1..]
            .iter()
            .all(|arg| GIT_BRANCH_LISTING.contains(&arg.as_str()) || arg.starts_with("--format=")),
        subcommand => GIT_READ_ONLY_SUBCOMMANDS.contains(&subcommand),
    }
}

/// Git's first non-option argument is its subcommand. Global options are
/// skipped; `-C <dir>` is the only one left that takes a separate value
/// once the overrides above have been refused.
fn git_subcommand_index(args: &[String]) -> Option<usize> {
    let mut skip_value = false;
    for (index, arg) in args.iter().enumerate() {
        if skip_value {
            skip_value = false;
        } else if arg == "-C" {
            skip_value = true;
        } else if !arg.starts_with('-') {
            return Some(index);
        }
    }
    None
}

fn is_inline_value(arg: &str, option: &str) -> bool {
    arg.strip_prefix(option)
        .is_some_and(|rest| rest.starts_with('='))
}
