//! The model's tools, described once for every part of Keel that handles a
//! tool call: the workflow decides on a call (approval, sandbox) and the
//! tool-runner runs it, and both read the call through this crate, so what
//! was approved is exactly what runs.
//!
//! * [`names`]: the tool names, and which [`Family`] each belongs to;
//! * [`Offered`]: the tools a session offers; a call of anything else gets
//!   Codex's unsupported-call text and runs nothing;
//! * [`parse_call`]: a command-family call (`shell`, `container.exec`,
//!   `local_shell`, `shell_command`, `exec_command`, `write_stdin`) as the
//!   [`Invocation`] it runs — argv, working directory, environment, how it
//!   runs and is rendered — plus the approval parameters the model sent
//!   ([`Escalation`]). A command that is really an `apply_patch` call
//!   becomes a [`PatchInvocation`], which goes through the patch decision;
//! * [`env`]: the variables a call may never set;
//! * [`toolset`]: which tools a session offers, chosen as Codex chooses
//!   them from the features and the model;
//! * [`truncate`]: how much of a tool's output the model sees (Codex's
//!   middle truncation), for the tool-runner's outputs and MCP results.
//!
//! Everything here is a pure function of its arguments (no filesystem,
//! clock or environment), so the workflow can call it deterministically.
//! Types that reach workflow history ([`Invocation`] and what it holds)
//! are serialised with serde: never rename a field or variant.

mod denial;
pub mod env;
pub mod git;
mod invocation;
pub mod names;
mod offered;
mod params;
mod path;
mod settings;
#[cfg(any(test, feature = "spec-check"))]
pub mod spec_check;
pub mod toolset;
pub mod truncate;

pub use denial::is_sandbox_denial;
pub use invocation::{
    CommandInvocation, Escalation, Invocation, Layout, ParsedCall, PatchInvocation, PatchOutput,
    RunMode, SandboxPermissions, WriteStdinInvocation, parse_call,
};
pub use names::{Family, family};
pub use offered::{Offered, ToolForm};
pub use params::{
    ExecCommandParams, LocalShellAction, ShellCommandParams, ShellParams, WriteStdinParams,
};
pub use path::resolve_dir;
pub use settings::{ApprovalPolicy, SandboxMode, SettingParseError};

/// The text a model gets for arguments that do not fit the tool's schema.
pub fn parse_error(err: impl std::fmt::Display) -> String {
    format!("failed to parse function arguments: {err}")
}

/// Longest sub-agent id a tool call may name.
pub const MAX_AGENT_ID_LEN: usize = 64;

/// Whether `id` can name a sub-agent of a session: letters, digits, '-'
/// and '_', at most [`MAX_AGENT_ID_LEN`] characters (a UUID fits). Empty
/// names the session's own agent.
pub fn valid_agent_id(id: &str) -> bool {
    id.len() <= MAX_AGENT_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod agent_id_tests {
    use super::*;

    #[test]
    fn agent_ids() {
        assert!(valid_agent_id(""));
        assert!(valid_agent_id("0b7c3f4e-9a52-4c1e-8a6f-2d1f5e9b7a10"));
        assert!(valid_agent_id(&"a".repeat(64)));
        assert!(!valid_agent_id(&"a".repeat(65)));
        for bad in ["a/b", "a\0b", "a.b", "../x", "a b", "é"] {
            assert!(!valid_agent_id(bad), "{bad:?}");
        }
    }
}
