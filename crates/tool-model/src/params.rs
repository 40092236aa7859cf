//! The tools' arguments, as Codex's serde structs read them (Codex:
//! `codex-rs/protocol/src/models.rs`, `codex-rs/core/src/tools/handlers/`),
//! so that bad arguments produce the same serde error text. Unknown fields
//! are ignored, as in Codex.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::invocation::SandboxPermissions;

/// `shell` / `container.exec` (Codex's `ShellToolCallParams`).
#[derive(Debug, Deserialize, PartialEq)]
pub struct ShellParams {
    pub command: Vec<String>,
    pub workdir: Option<String>,
    #[serde(alias = "timeout")]
    pub timeout_ms: Option<u64>,
    pub sandbox_permissions: Option<SandboxPermissions>,
    pub justification: Option<String>,
    pub prefix_rule: Option<Vec<String>>,
    /// Feature-gated in Codex; accepted and not acted on.
    pub additional_permissions: Option<serde_json::Value>,
}

/// A `local_shell_call` action (`{"type":"exec","command":[..],...}`). Also
/// takes `workdir`, so the `shell` argument form works under this name too.
#[derive(Debug, Deserialize, PartialEq)]
pub struct LocalShellAction {
    pub command: Vec<String>,
    pub timeout_ms: Option<u64>,
    #[serde(alias = "workdir")]
    pub working_directory: Option<String>,
    pub env: Option<BTreeMap<String, String>>,
}

/// `shell_command` (Codex's `ShellCommandToolCallParams`).
#[derive(Debug, Deserialize, PartialEq)]
pub struct ShellCommandParams {
    pub command: String,
    pub workdir: Option<String>,
    #[serde(alias = "timeout")]
    pub timeout_ms: Option<u64>,
    /// Run the shell as a login shell (`-lc`); default true.
    pub login: Option<bool>,
    pub sandbox_permissions: Option<SandboxPermissions>,
    pub justification: Option<String>,
    pub prefix_rule: Option<Vec<String>>,
    pub additional_permissions: Option<serde_json::Value>,
}

/// `exec_command` (Codex's `ExecCommandArgs`).
#[derive(Debug, Deserialize, PartialEq)]
pub struct ExecCommandParams {
    pub cmd: String,
    pub workdir: Option<String>,
    /// The shell to run `cmd` with; the user's shell when unset.
    pub shell: Option<String>,
    #[serde(default)]
    pub tty: bool,
    pub yield_time_ms: Option<u64>,
    pub max_output_tokens: Option<u64>,
    pub login: Option<bool>,
    pub sandbox_permissions: Option<SandboxPermissions>,
    pub justification: Option<String>,
    pub prefix_rule: Option<Vec<String>>,
    pub additional_permissions: Option<serde_json::Value>,
}

/// `write_stdin` (Codex's `WriteStdinArgs`).
#[derive(Debug, Deserialize, PartialEq)]
pub struct WriteStdinParams {
    /// The process id; the model is trained on the name `session_id`.
    pub session_id: i32,
    #[serde(default)]
    pub chars: String,
    pub yield_time_ms: Option<u64>,
    pub max_output_tokens: Option<u64>,
}
