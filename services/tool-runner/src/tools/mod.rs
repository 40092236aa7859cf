//! Model tool calls: parse the arguments, run the tool, produce the one text
//! the model gets back. Every failure a model can cause (bad arguments, an
//! unknown tool, a command that cannot start) is an output with
//! `success: false`, never an RPC error: each call must get exactly one output
//! (codex-compat §1, §1.1).

pub mod shell;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::exec::Executor;
use crate::format::TruncationPolicy;

/// What a tool call produced.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolOutcome {
    /// The model-visible output text.
    pub text: String,
    /// Codex's success flag: false for a failed call, a non-zero exit or a
    /// timeout.
    pub success: bool,
    /// Set when a command ran.
    pub command: Option<CommandRecord>,
}

impl ToolOutcome {
    fn failure(text: String) -> Self {
        Self {
            text,
            success: false,
            command: None,
        }
    }
}

/// The command a tool call ran, for clients to display.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandRecord {
    pub command: Vec<String>,
    pub cwd: PathBuf,
    pub exit_code: i32,
    pub duration: Duration,
    pub aggregated_output: String,
}

/// Runs the call `tool_name(arguments)` with `base_cwd` as the directory
/// relative workdirs resolve against.
pub async fn run_tool(
    executor: &Executor,
    policy: TruncationPolicy,
    tool_name: &str,
    arguments: &str,
    base_cwd: &Path,
) -> ToolOutcome {
    let parsed = match tool_name {
        "shell" | "container.exec" => shell::parse_shell(arguments),
        "local_shell" => shell::parse_local_shell(arguments),
        other => return ToolOutcome::failure(format!("unsupported call: {other}")),
    };
    match parsed {
        Ok(call) => shell::run(executor, policy, call, base_cwd).await,
        Err(text) => ToolOutcome::failure(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn call(tool: &str, args: &str, cwd: &Path) -> ToolOutcome {
        let executor = Executor::with_inherited_env(std::env::vars_os());
        run_tool(&executor, TruncationPolicy::default(), tool, args, cwd).await
    }

    fn output_json(outcome: &ToolOutcome) -> serde_json::Value {
        serde_json::from_str(&outcome.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", outcome.text))
    }

    #[tokio::test]
    async fn shell_success_has_the_structured_layout() {
        let dir = tempfile::tempdir().unwrap();
        let out = call("shell", r#"{"command":["sh","-c","echo hi"]}"#, dir.path()).await;
        assert!(out.success);
        let json = output_json(&out);
        assert_eq!(json["output"], "hi\n");
        assert_eq!(json["metadata"]["exit_code"], 0);
        assert!(json["metadata"]["duration_seconds"].is_f64());
        let record = out.command.unwrap();
        assert_eq!(record.command, ["sh", "-c", "echo hi"]);
        assert_eq!(record.cwd, dir.path());
        assert_eq!(record.aggregated_output, "hi\n");
    }

    #[tokio::test]
    async fn aliases_run_the_same_tool() {
        let dir = tempfile::tempdir().unwrap();
        for tool in ["container.exec", "local_shell"] {
            let out = call(tool, r#"{"command":["sh","-c","exit 0"]}"#, dir.path()).await;
            assert!(out.success, "{tool}: {}", out.text);
        }
    }

    #[tokio::test]
    async fn non_zero_exit_and_timeout_are_failures() {
        let dir = tempfile::tempdir().unwrap();
        let out = call(
            "shell",
            r#"{"command":["sh","-c","echo no >&2; exit 2"]}"#,
            dir.path(),
        )
        .await;
        assert!(!out.success);
        assert_eq!(output_json(&out)["metadata"]["exit_code"], 2);
        assert_eq!(output_json(&out)["output"], "no\n");

        let out = call(
            "shell",
            r#"{"command":["sleep","30"],"timeout_ms":200}"#,
            dir.path(),
        )
        .await;
        assert!(!out.success);
        let json = output_json(&out);
        assert_eq!(json["metadata"]["exit_code"], 124);
        let body = json["output"].as_str().unwrap();
        assert!(body.starts_with("command timed out after "), "{body}");
        assert!(body.ends_with(" milliseconds\n"), "{body}");
    }

    #[tokio::test]
    async fn relative_workdir_resolves_against_the_base_cwd() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let out = call(
            "shell",
            r#"{"command":["pwd"],"workdir":"sub"}"#,
            dir.path(),
        )
        .await;
        assert!(out.success, "{}", out.text);
        assert_eq!(out.command.unwrap().cwd, dir.path().join("sub"));
    }

    #[tokio::test]
    async fn model_errors_are_outputs_not_rpc_errors() {
        let dir = tempfile::tempdir().unwrap();
        let out = call("frobnicate", "{}", dir.path()).await;
        assert_eq!(out.text, "unsupported call: frobnicate");
        assert!(!out.success && out.command.is_none());

        let out = call("shell", r#"{"cmd":"ls"}"#, dir.path()).await;
        assert!(
            out.text
                .starts_with("failed to parse function arguments: missing field `command`")
        );
        assert!(!out.success);

        let out = call(
            "shell",
            r#"{"command":["true"],"workdir":"missing"}"#,
            dir.path(),
        )
        .await;
        assert_eq!(
            out.text,
            r#"execution error: Io(Os { code: 2, kind: NotFound, message: "No such file or directory" })"#
        );
        assert!(!out.success && out.command.is_none());
    }
}
