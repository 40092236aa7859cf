//! The run-to-completion shell tools: `shell` (argv), `container.exec` (its
//! old name), `local_shell`, and `shell_command` (a script for the user's
//! shell) (codex-compat §2.3–§2.6). Parsing mirrors Codex's serde structs so
//! that bad arguments produce the same serde error text.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::apply_patch::{self, Layout};
use super::{CommandRecord, ToolContext, ToolOutcome, resolve_workdir};
use crate::exec::{DEFAULT_TIMEOUT, ExecError, ExecSpec};
use crate::patch::invocation::{IMPLICIT_INVOCATION, Invocation, classify};
use crate::sandbox::denial::is_sandbox_denial;

/// `shell` / `container.exec` arguments (Codex's `ShellToolCallParams`).
/// Unknown fields are ignored, as in Codex.
#[derive(Debug, Deserialize, PartialEq)]
pub struct ShellParams {
    pub command: Vec<String>,
    pub workdir: Option<String>,
    #[serde(alias = "timeout")]
    pub timeout_ms: Option<u64>,
    // Approval parameters (§2.5): parsed so calls that set them are valid;
    // nothing acts on them until approvals exist.
    pub sandbox_permissions: Option<SandboxPermissions>,
    pub justification: Option<String>,
    pub prefix_rule: Option<Vec<String>>,
    pub additional_permissions: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize, PartialEq, Eq, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub enum SandboxPermissions {
    UseDefault,
    RequireEscalated,
    WithAdditionalPermissions,
}

/// A `local_shell_call` action (`{"type":"exec","command":[..],...}`). Also
/// takes `workdir`, so the `shell` argument form works under this name too.
#[derive(Debug, Deserialize, PartialEq)]
pub struct LocalShellAction {
    pub command: Vec<String>,
    pub timeout_ms: Option<u64>,
    #[serde(alias = "workdir")]
    pub working_directory: Option<String>,
    pub env: Option<HashMap<String, String>>,
}

/// A parsed argv shell call, whichever tool name it came under.
#[derive(Debug, PartialEq)]
pub struct ShellCall {
    pub command: Vec<String>,
    pub workdir: Option<String>,
    pub timeout_ms: Option<u64>,
    pub env: HashMap<String, String>,
}

/// Parses a `shell` / `container.exec` call; `Err` is the text for the model.
pub fn parse_shell(arguments: &str) -> Result<ShellCall, String> {
    let p: ShellParams = serde_json::from_str(arguments).map_err(parse_error)?;
    non_empty(ShellCall {
        command: p.command,
        workdir: p.workdir,
        timeout_ms: p.timeout_ms,
        env: HashMap::new(),
    })
}

/// Parses a `local_shell` call; `Err` is the text for the model.
pub fn parse_local_shell(arguments: &str) -> Result<ShellCall, String> {
    let a: LocalShellAction = serde_json::from_str(arguments).map_err(parse_error)?;
    non_empty(ShellCall {
        command: a.command,
        workdir: a.working_directory,
        timeout_ms: a.timeout_ms,
        env: a.env.unwrap_or_default(),
    })
}

fn parse_error(err: serde_json::Error) -> String {
    format!("failed to parse function arguments: {err}")
}

/// An empty argv cannot run; say so in the same words as a schema error.
fn non_empty(call: ShellCall) -> Result<ShellCall, String> {
    if call.command.is_empty() {
        Err("failed to parse function arguments: command must not be empty".to_string())
    } else {
        Ok(call)
    }
}

/// `shell_command` arguments (Codex's `ShellCommandToolCallParams`).
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

/// Parses a `shell_command` call; `Err` is the text for the model.
pub fn parse_shell_command(arguments: &str, user_shell: &str) -> Result<ShellCall, String> {
    let p: ShellCommandParams = serde_json::from_str(arguments).map_err(parse_error)?;
    Ok(ShellCall {
        command: shell_argv(user_shell, p.login.unwrap_or(true), &p.command),
        workdir: p.workdir,
        timeout_ms: p.timeout_ms,
        env: HashMap::new(),
    })
}

/// `[shell, "-lc" | "-c", script]`: how the user's shell runs a script.
pub fn shell_argv(shell: &str, login: bool, script: &str) -> Vec<String> {
    let flag = if login { "-lc" } else { "-c" };
    vec![shell.to_string(), flag.to_string(), script.to_string()]
}

/// `shell` / `container.exec`: structured layout.
pub async fn run_shell(ctx: &ToolContext<'_>, arguments: &str) -> ToolOutcome {
    match parse_shell(arguments) {
        Ok(call) => run(ctx, call, Layout::Structured).await,
        Err(text) => ToolOutcome::failure(text),
    }
}

/// `local_shell`: structured layout.
pub async fn run_local_shell(ctx: &ToolContext<'_>, arguments: &str) -> ToolOutcome {
    match parse_local_shell(arguments) {
        Ok(call) => run(ctx, call, Layout::Structured).await,
        Err(text) => ToolOutcome::failure(text),
    }
}

/// `shell_command`: the user's shell runs the script; freeform layout.
pub async fn run_shell_command(ctx: &ToolContext<'_>, arguments: &str) -> ToolOutcome {
    match parse_shell_command(arguments, ctx.user_shell) {
        Ok(call) => run(ctx, call, Layout::Freeform).await,
        Err(text) => ToolOutcome::failure(text),
    }
}

/// Runs a parsed call in the session cwd (or its `workdir`, relative to it)
/// and renders it in `layout`. An apply_patch invocation is applied as a
/// patch instead (codex-compat §6.6).
pub async fn run(ctx: &ToolContext<'_>, call: ShellCall, layout: Layout) -> ToolOutcome {
    let cwd = match resolve_workdir(ctx, call.workdir.as_deref()) {
        Ok(cwd) => cwd,
        Err(text) => return ToolOutcome::failure(text),
    };
    if let Some(outcome) = intercept_apply_patch(ctx, &call.command, &cwd, layout).await {
        return outcome;
    }
    let spec = ExecSpec {
        argv: call.command,
        cwd,
        timeout: call
            .timeout_ms
            .map_or(DEFAULT_TIMEOUT, Duration::from_millis),
        env: call.env,
        sandbox: ctx.sandbox.confinement(),
    };
    let out = match ctx.executor.run(&spec).await {
        Ok(out) => out,
        Err(err) => return ToolOutcome::failure(execution_error(&err)),
    };
    let record = CommandRecord {
        command: spec.argv,
        cwd: spec.cwd,
        exit_code: out.exit_code,
        duration: out.duration,
        aggregated_output: out.aggregated,
        process_id: None,
    };
    let text = match layout.render(
        &record.aggregated_output,
        out.exit_code,
        out.duration,
        ctx.policy,
    ) {
        Ok(text) => text,
        Err(err) => return ToolOutcome::failure(format!("execution error: {err}")),
    };
    let sandbox_denied = spec.sandbox.is_some()
        && is_sandbox_denial(
            out.exit_code,
            out.timed_out,
            &[&out.stdout, &out.stderr, &record.aggregated_output],
        );
    ToolOutcome {
        text,
        items: None,
        success: out.exit_code == 0 && !out.timed_out,
        sandbox_denied,
        command: Some(record),
    }
}

/// Applies a patch that arrived as a shell command; `None` for an ordinary
/// command.
async fn intercept_apply_patch(
    ctx: &ToolContext<'_>,
    argv: &[String],
    cwd: &Path,
    layout: Layout,
) -> Option<ToolOutcome> {
    match classify(argv) {
        Invocation::NotPatch => None,
        Invocation::Implicit => Some(ToolOutcome::failure(format!(
            "apply_patch verification failed: {IMPLICIT_INVOCATION}"
        ))),
        Invocation::Invalid(err) => Some(ToolOutcome::failure(format!(
            "apply_patch verification failed: {err}"
        ))),
        Invocation::Patch { hunks, workdir } => {
            Some(apply_patch::run_hunks(ctx, hunks, cwd, workdir.as_deref(), layout).await)
        }
    }
}

/// Codex renders runtime failures as `execution error: <Debug of CodexErr>`;
/// a spawn failure there is `Io(<io::Error Debug>)`.
fn execution_error(err: &ExecError) -> String {
    match err.io_error() {
        Some(io) => format!("execution error: Io({io:?})"),
        None => format!("execution error: {err}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_full_shell_schema() {
        let call = parse_shell(
            r#"{"command":["bash","-lc","ls"],"workdir":"sub","timeout_ms":500,
                "sandbox_permissions":"require_escalated","justification":"why",
                "prefix_rule":["ls"],"additional_permissions":{"network":{"enabled":true}},
                "unknown_field":1}"#,
        )
        .unwrap();
        assert_eq!(
            call,
            ShellCall {
                command: vec!["bash".into(), "-lc".into(), "ls".into()],
                workdir: Some("sub".into()),
                timeout_ms: Some(500),
                env: HashMap::new(),
            }
        );
    }

    #[test]
    fn timeout_is_an_alias_of_timeout_ms() {
        let call = parse_shell(r#"{"command":["true"],"timeout":42}"#).unwrap();
        assert_eq!(call.timeout_ms, Some(42));
        assert_eq!(call.workdir, None);
    }

    #[test]
    fn bad_arguments_give_codex_parse_errors() {
        assert_eq!(
            parse_shell(r#"{"workdir":"/tmp"}"#).unwrap_err(),
            "failed to parse function arguments: missing field `command` at line 1 column 18"
        );
        assert_eq!(
            parse_shell(r#"{"command":"ls -la"}"#).unwrap_err(),
            "failed to parse function arguments: invalid type: string \"ls -la\", expected a sequence at line 1 column 19"
        );
        let err = parse_shell(r#"{"command":["ls"],"timeout_ms":"5"}"#).unwrap_err();
        assert!(
            err.starts_with("failed to parse function arguments: invalid type: string"),
            "{err}"
        );
        let err = parse_shell(r#"{"command":["ls"],"sandbox_permissions":"root"}"#).unwrap_err();
        assert!(err.contains("unknown variant `root`"), "{err}");
        let err = parse_shell("not json").unwrap_err();
        assert!(
            err.starts_with("failed to parse function arguments: expected ident"),
            "{err}"
        );
    }

    #[test]
    fn empty_command_is_rejected_as_a_parse_error() {
        assert_eq!(
            parse_shell(r#"{"command":[]}"#).unwrap_err(),
            "failed to parse function arguments: command must not be empty"
        );
        assert!(parse_local_shell(r#"{"command":[]}"#).is_err());
    }

    #[test]
    fn parses_shell_command() {
        let call = parse_shell_command(
            r#"{"command":"ls -la","workdir":"w","timeout_ms":5,"login":false,"justification":"j"}"#,
            "/bin/zsh",
        )
        .unwrap();
        assert_eq!(
            call,
            ShellCall {
                command: vec!["/bin/zsh".into(), "-c".into(), "ls -la".into()],
                workdir: Some("w".into()),
                timeout_ms: Some(5),
                env: HashMap::new(),
            }
        );
        let call = parse_shell_command(r#"{"command":"pwd","timeout":9}"#, "bash").unwrap();
        assert_eq!(call.command, ["bash", "-lc", "pwd"]);
        assert_eq!(call.timeout_ms, Some(9));
        assert_eq!(
            parse_shell_command(r#"{"command":["ls"]}"#, "bash").unwrap_err(),
            "failed to parse function arguments: invalid type: sequence, expected a string at line 1 column 11"
        );
        assert_eq!(
            parse_shell_command("{}", "bash").unwrap_err(),
            "failed to parse function arguments: missing field `command` at line 1 column 2"
        );
    }

    #[test]
    fn local_shell_takes_the_action_form_and_the_shell_form() {
        let call = parse_local_shell(
            r#"{"type":"exec","command":["ls"],"timeout_ms":7,"working_directory":"/w","env":{"A":"1"},"user":"u"}"#,
        )
        .unwrap();
        assert_eq!(call.workdir.as_deref(), Some("/w"));
        assert_eq!(call.timeout_ms, Some(7));
        assert_eq!(call.env.get("A").map(String::as_str), Some("1"));
        let call = parse_local_shell(r#"{"command":["ls"],"workdir":"/x"}"#).unwrap();
        assert_eq!(call.workdir.as_deref(), Some("/x"));
    }
}
