//! Command safety (Codex: `codex-rs/shell-command/src/command_safety/`, `codex-rs/shell-command/src/bash.rs`): which commands are known to be
//! read-only, which look dangerous, and a display summary of what a command
//! does.

mod dangerous;
mod known_safe;

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::shell;

pub use crate::parse_command::{ParsedCommand, parse_command};

/// How the heuristics see a command, before any exec-policy rule applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Safety {
    /// On Codex's known-safe list (Codex: `codex-rs/shell-command/src/command_safety/`): read-only, runs without asking.
    Safe,
    /// On Codex's dangerous list (Codex: `codex-rs/shell-command/src/command_safety/`), e.g. `rm -rf`.
    Dangerous,
    /// Neither: the approval policy and the sandbox decide.
    Unknown,
}

impl Safety {
    /// The snake_case name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Safe => "safe",
            Self::Dangerous => "dangerous",
            Self::Unknown => "unknown",
        }
    }
}

/// Classifies the argv that will actually run (for string tools, the
/// constructed `[shell, "-lc", script]`). Known-safe wins; a command that is
/// not known-safe but dangerous is [`Safety::Dangerous`].
pub fn classify(argv: &[String]) -> Safety {
    if is_known_safe(argv) {
        Safety::Safe
    } else if is_dangerous(argv) {
        Safety::Dangerous
    } else {
        Safety::Unknown
    }
}

/// Codex's `is_known_safe_command` (Codex: `codex-rs/shell-command/src/command_safety/`): argv[0] (by file name) is on the
/// allow-list and passes its special rule, or argv is a
/// `bash|zsh|sh -lc|-c` script whose every plain command is.
pub fn is_known_safe(argv: &[String]) -> bool {
    if known_safe::is_safe_to_exec(argv) {
        return true;
    }
    matches!(
        shell::plain_commands(argv),
        Some(commands) if !commands.is_empty()
            && commands.iter().all(|command| known_safe::is_safe_to_exec(command))
    )
}

/// Codex's `command_might_be_dangerous` (Codex: `codex-rs/shell-command/src/command_safety/`): a forced `rm`, `sudo` of a
/// dangerous command, or a plain script containing one.
pub fn is_dangerous(argv: &[String]) -> bool {
    dangerous::is_dangerous(argv)
}

/// The file name of an executable path: `/usr/bin/git` → `git`.
pub(crate) fn executable_name(raw: &str) -> Option<&str> {
    Path::new(raw).file_name()?.to_str()
}
