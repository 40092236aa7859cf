//! Tool names, as the model calls them (Codex: `codex-rs/tools/src/`).

/// The argv shell tool (`shell_type = default`).
pub const SHELL: &str = "shell";
/// The argv shell tool's old name, accepted wherever `shell` is.
pub const CONTAINER_EXEC: &str = "container.exec";
/// The hosted local shell (`shell_type = local`): an argv with an
/// environment.
pub const LOCAL_SHELL: &str = "local_shell";
/// A script for the user's shell (`shell_type = shell_command`).
pub const SHELL_COMMAND: &str = "shell_command";
/// Unified exec: starts a command that may keep running.
pub const EXEC_COMMAND: &str = "exec_command";
/// Unified exec: writes to (or polls) a running `exec_command` process.
pub const WRITE_STDIN: &str = "write_stdin";
pub const APPLY_PATCH: &str = "apply_patch";
pub const READ_FILE: &str = "read_file";
pub const LIST_DIR: &str = "list_dir";
pub const GREP_FILES: &str = "grep_files";
pub const VIEW_IMAGE: &str = "view_image";
/// Answered by the workflow itself.
pub const UPDATE_PLAN: &str = "update_plan";
/// Answered by the workflow itself, from the user.
pub const REQUEST_USER_INPUT: &str = "request_user_input";
/// Codex's collaboration tools (`features.multi_agent`), answered by the
/// workflow: a sub-agent is a workflow of its own.
pub const SPAWN_AGENT: &str = "spawn_agent";
pub const WAIT_AGENT: &str = "wait_agent";
pub const SEND_INPUT: &str = "send_input";
pub const CLOSE_AGENT: &str = "close_agent";

/// How a tool's calls are handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Runs a command: every call goes through the command decision.
    Command,
    /// Writes to a process an earlier `exec_command` started (and the
    /// command decision allowed).
    WriteStdin,
    /// Edits files: every call goes through the patch decision.
    ApplyPatch,
    /// Reads files (`read_file`, `list_dir`, `grep_files`, `view_image`):
    /// runs in the session's sandbox without asking.
    File,
    /// Answered by the workflow (`update_plan`, `request_user_input`).
    Workflow,
    /// Starts or waits for sub-agents (`spawn_agent`, `wait_agent`),
    /// answered by the workflow.
    Collab,
    /// No tool of Keel's (a client's dynamic tool, or nothing).
    Other,
}

/// The family of the tool called `name`.
pub fn family(name: &str) -> Family {
    match name {
        SHELL | CONTAINER_EXEC | LOCAL_SHELL | SHELL_COMMAND | EXEC_COMMAND => Family::Command,
        WRITE_STDIN => Family::WriteStdin,
        APPLY_PATCH => Family::ApplyPatch,
        READ_FILE | LIST_DIR | GREP_FILES | VIEW_IMAGE => Family::File,
        UPDATE_PLAN | REQUEST_USER_INPUT => Family::Workflow,
        SPAWN_AGENT | WAIT_AGENT | SEND_INPUT | CLOSE_AGENT => Family::Collab,
        _ => Family::Other,
    }
}
