//! What "approved for session" remembers (Codex:
//! `codex-rs/core/src/tools/orchestrator.rs`, step 1). The workflow keeps a durable `BTreeSet<ApprovalKey>`.

use serde::{Deserialize, Serialize};

use super::{AdditionalPermissions, SandboxPermissions};
use crate::shell;

/// Marks a canonicalised shell script that is not a single plain command.
const CANONICAL_SCRIPT_PREFIX: &str = "__codex_shell_script__";

/// One remembered approval. A command is keyed as Codex's shell runtime
/// keys it; a patch is approved per file path, and a later patch skips the
/// question only when every path it touches was approved.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ApprovalKey {
    /// A shell command call.
    Command {
        /// [`canonicalize_command_for_approval`] of the argv.
        command: Vec<String>,
        /// The call's working directory.
        cwd: String,
        /// The call's `sandbox_permissions`.
        sandbox_permissions: SandboxPermissions,
        /// The call's `additional_permissions`.
        additional_permissions: Option<AdditionalPermissions>,
    },
    /// One file an approved patch touched.
    PatchPath {
        /// Absolute, lexically normalised.
        path: String,
    },
    /// An MCP tool, by its server's and its own raw names (Codex:
    /// `McpToolApprovalKey` in `codex-rs/core/src/mcp_tool_call.rs`).
    McpTool {
        /// The server's configured name.
        server: String,
        /// The tool's name as the server spells it.
        tool: String,
    },
}

/// The key under which approving `argv` "for session" is remembered.
pub fn approval_key(
    argv: &[String],
    cwd: &str,
    sandbox_permissions: SandboxPermissions,
    additional_permissions: Option<&AdditionalPermissions>,
) -> ApprovalKey {
    ApprovalKey::Command {
        command: canonicalize_command_for_approval(argv),
        cwd: cwd.to_owned(),
        sandbox_permissions,
        additional_permissions: additional_permissions.cloned(),
    }
}

/// Codex's `canonicalize_command_for_approval`: a shell script that is one
/// plain command is keyed by that command (so `bash -lc "cargo test"` and
/// `["cargo", "test"]` share approval); any other script by its shell flag
/// and exact text; anything else by its argv.
pub fn canonicalize_command_for_approval(argv: &[String]) -> Vec<String> {
    if let Some(commands) = shell::plain_commands(argv)
        && let [single] = commands.as_slice()
    {
        return single.clone();
    }
    match (shell::shell_script(argv), argv.get(1)) {
        (Some(script), Some(flag)) => vec![
            CANONICAL_SCRIPT_PREFIX.to_owned(),
            flag.clone(),
            script.to_owned(),
        ],
        _ => argv.to_vec(),
    }
}
