//! The dangerous list (Codex: `codex-rs/shell-command/src/command_safety/`). It is deliberately short: it
//! only decides between prompting and running in the sandbox, and under
//! `never` between running and refusing.

use super::executable_name;
use crate::shell;

pub(super) fn is_dangerous(argv: &[String]) -> bool {
    let argv = strip_sudo(argv);
    is_forced_rm(argv)
        || shell::plain_commands(argv).is_some_and(|commands| {
            commands
                .iter()
                .any(|command| is_forced_rm(strip_sudo(command)))
        })
}

/// `sudo <rest>` is as dangerous as `<rest>`. Stripping in a loop rather
/// than recursing keeps a long run of `sudo`s from growing the stack.
fn strip_sudo(mut argv: &[String]) -> &[String] {
    while let Some((first, rest)) = argv.split_first() {
        if executable_name(first) != Some("sudo") {
            break;
        }
        argv = rest;
    }
    argv
}

/// `rm` whose second argv token is exactly `-f` or `-rf`.
fn is_forced_rm(argv: &[String]) -> bool {
    argv.first().and_then(|cmd| executable_name(cmd)) == Some("rm")
        && argv
            .get(1)
            .is_some_and(|flag| matches!(flag.as_str(), "-f" | "-rf"))
}
