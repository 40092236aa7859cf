//! The argv shell tools: `shell`, `container.exec` (its old name) and
//! `local_shell` (codex-compat §2.3, §2.5). Parsing mirrors Codex's serde
//! structs so that bad arguments produce the same serde error text.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::{CommandRecord, ToolOutcome};
use crate::exec::{DEFAULT_TIMEOUT, ExecError, ExecSpec, Executor};
use crate::format::{TruncationPolicy, structured_shell_output};

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

/// Runs a parsed call in `base_cwd` (or its `workdir`, relative to it) and
/// renders the structured layout.
pub async fn run(
    executor: &Executor,
    policy: TruncationPolicy,
    call: ShellCall,
    base_cwd: &Path,
) -> ToolOutcome {
    // `join` keeps an absolute workdir as it is, like Codex's `resolve_path`.
    let cwd = match &call.workdir {
        Some(dir) => base_cwd.join(dir),
        None => base_cwd.to_path_buf(),
    };
    let spec = ExecSpec {
        argv: call.command,
        cwd,
        timeout: call
            .timeout_ms
            .map_or(DEFAULT_TIMEOUT, Duration::from_millis),
        env: call.env,
    };
    let out = match executor.run(&spec).await {
        Ok(out) => out,
        Err(err) => return ToolOutcome::failure(execution_error(&err)),
    };
    let record = CommandRecord {
        command: spec.argv,
        cwd: spec.cwd,
        exit_code: out.exit_code,
        duration: out.duration,
        aggregated_output: out.aggregated,
    };
    let text = match structured_shell_output(
        &record.aggregated_output,
        out.exit_code,
        out.duration,
        policy,
    ) {
        Ok(text) => text,
        Err(err) => return ToolOutcome::failure(format!("execution error: {err}")),
    };
    ToolOutcome {
        text,
        success: out.exit_code == 0 && !out.timed_out,
        command: Some(record),
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
