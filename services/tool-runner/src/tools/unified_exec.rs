//! Unified exec: `exec_command` starts a command and waits up to
//! `yield_time_ms` for it; if it is still running, the model gets a session
//! id and continues with `write_stdin` (codex-compat §2.1–§2.2). The output
//! is always sent with `success: true`; the exit code is in the text.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

use super::apply_patch::{self, Layout};
use super::shell::{SandboxPermissions, shell_argv};
use super::{
    CommandRecord, ToolContext, ToolOutcome, parse_arguments, resolve_workdir, shlex_join,
};
use crate::exec::unified::{Collected, LongRunningProcess};
use crate::format::{UnifiedExecOutput, new_chunk_id};
use crate::patch::invocation::{IMPLICIT_INVOCATION, Invocation, classify};
use crate::sandbox::denial::is_sandbox_denial;

/// `exec_command`'s default and bounds for `yield_time_ms`.
const EXEC_YIELD_DEFAULT_MS: u64 = 10_000;
const MIN_YIELD_MS: u64 = 250;
const MAX_YIELD_MS: u64 = 30_000;
/// `write_stdin`'s default; an empty poll waits at least the minimum and at
/// most `background_terminal_max_timeout`.
const WRITE_YIELD_DEFAULT_MS: u64 = 250;
const MIN_EMPTY_POLL_MS: u64 = 5_000;
const MAX_EMPTY_POLL_MS: u64 = 300_000;

/// Told to the model when it runs apply_patch through exec_command (Codex
/// sends it as a separate message; Keel appends it to the one output).
pub const APPLY_PATCH_VIA_EXEC_WARNING: &str = "Warning: apply_patch was requested via exec_command. Use the apply_patch tool instead of exec_command.";

#[derive(Debug, Deserialize, PartialEq)]
pub struct ExecCommandParams {
    pub cmd: String,
    pub workdir: Option<String>,
    pub shell: Option<String>,
    #[serde(default)]
    pub tty: bool,
    pub yield_time_ms: Option<u64>,
    pub max_output_tokens: Option<usize>,
    pub login: Option<bool>,
    pub sandbox_permissions: Option<SandboxPermissions>,
    pub justification: Option<String>,
    pub prefix_rule: Option<Vec<String>>,
    pub additional_permissions: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize, PartialEq)]
pub struct WriteStdinParams {
    /// The process id; the model is trained on the name `session_id`.
    pub session_id: i32,
    #[serde(default)]
    pub chars: String,
    pub yield_time_ms: Option<u64>,
    pub max_output_tokens: Option<usize>,
}

/// `exec_command`'s wait: default 10 s, clamped to 250 ms..=30 s.
pub fn exec_yield(requested: Option<u64>) -> Duration {
    let ms = requested.unwrap_or(EXEC_YIELD_DEFAULT_MS);
    Duration::from_millis(ms.clamp(MIN_YIELD_MS, MAX_YIELD_MS))
}

/// `write_stdin`'s wait: default 250 ms; an empty poll waits 5 s..=300 s, a
/// write 250 ms..=30 s.
pub fn write_yield(requested: Option<u64>, chars: &str) -> Duration {
    let ms = requested.unwrap_or(WRITE_YIELD_DEFAULT_MS);
    let ms = if chars.is_empty() {
        ms.clamp(MIN_EMPTY_POLL_MS, MAX_EMPTY_POLL_MS)
    } else {
        ms.clamp(MIN_YIELD_MS, MAX_YIELD_MS)
    };
    Duration::from_millis(ms)
}

pub async fn run_exec_command(ctx: &ToolContext<'_>, arguments: &str) -> ToolOutcome {
    let params: ExecCommandParams = match parse_arguments(arguments) {
        Ok(params) => params,
        Err(text) => return ToolOutcome::failure(text),
    };
    let cwd = match resolve_workdir(ctx, params.workdir.as_deref()) {
        Ok(cwd) => cwd,
        Err(text) => return ToolOutcome::failure(text),
    };
    let shell = params.shell.as_deref().unwrap_or(ctx.user_shell);
    let argv = shell_argv(shell, params.login.unwrap_or(true), &params.cmd);

    match classify(&argv) {
        Invocation::NotPatch => {}
        Invocation::Implicit => {
            return ToolOutcome::failure(format!(
                "apply_patch verification failed: {IMPLICIT_INVOCATION}"
            ));
        }
        Invocation::Invalid(err) => {
            return ToolOutcome::failure(format!("apply_patch verification failed: {err}"));
        }
        Invocation::Patch { hunks, workdir } => {
            let patched =
                apply_patch::run_hunks(ctx, hunks, &cwd, workdir.as_deref(), Layout::Freeform)
                    .await;
            // Codex answers with the patch's own output in this layout, with
            // no chunk id, and a separate warning message.
            let text = UnifiedExecOutput {
                output: &format!("{}\n\n{APPLY_PATCH_VIA_EXEC_WARNING}", patched.text),
                max_output_tokens: params.max_output_tokens,
                ..Default::default()
            }
            .render(ctx.policy);
            return ToolOutcome { text, ..patched };
        }
    }

    let display = shlex_join(&argv);
    let failed = |message: String| {
        ToolOutcome::failure(format!(
            "exec_command failed for `{display}`: CreateProcess {{ message: {message:?} }}"
        ))
    };
    let start = Instant::now();
    let process = match LongRunningProcess::start(
        ctx.executor,
        argv.clone(),
        &cwd,
        params.tty,
        ctx.sandbox.confinement().as_ref(),
    ) {
        Ok(process) => Arc::new(process),
        Err(err) => {
            let message = err
                .io_error()
                .map_or_else(|| err.to_string(), ToString::to_string);
            return failed(message);
        }
    };
    // Registered before waiting, so closing the session during the wait
    // kills it too.
    let process_id = match ctx.processes.insert(ctx.session_id, Arc::clone(&process)) {
        Ok(id) => id,
        Err(err) => return failed(err.to_string()),
    };
    // A call cancelled during the wait takes its process along: the model
    // never learns its id, so nobody could reach it.
    let unregister = KillUnlessReturned {
        ctx,
        process_id,
        armed: true,
    };
    let collected = process
        .collect(start + exec_yield(params.yield_time_ms))
        .await;
    unregister.disarm();
    finish(
        ctx,
        &process,
        process_id,
        collected,
        start,
        params.max_output_tokens,
    )
}

pub async fn run_write_stdin(ctx: &ToolContext<'_>, arguments: &str) -> ToolOutcome {
    let params: WriteStdinParams = match parse_arguments(arguments) {
        Ok(params) => params,
        Err(text) => return ToolOutcome::failure(text),
    };
    let Some(process) = ctx.processes.get(ctx.session_id, params.session_id) else {
        return ToolOutcome::failure(format!(
            "write_stdin failed: Unknown process id {}",
            params.session_id
        ));
    };
    let start = Instant::now();
    if !params.chars.is_empty()
        && let Err(err) = process.write_stdin(&params.chars).await
    {
        return ToolOutcome::failure(format!("write_stdin failed: {err}"));
    }
    let deadline = start + write_yield(params.yield_time_ms, &params.chars);
    let collected = process.collect(deadline).await;
    finish(
        ctx,
        &process,
        params.session_id,
        collected,
        start,
        params.max_output_tokens,
    )
}

/// Kills and forgets an `exec_command`'s process if the call's future is
/// dropped (the call was cancelled) before it returns.
struct KillUnlessReturned<'a, 'b> {
    ctx: &'a ToolContext<'b>,
    process_id: i32,
    armed: bool,
}

impl KillUnlessReturned<'_, '_> {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for KillUnlessReturned<'_, '_> {
    fn drop(&mut self) {
        if self.armed {
            self.ctx
                .processes
                .remove(self.ctx.session_id, self.process_id);
        }
    }
}

/// Renders a call's result; forgets the process once it has exited.
fn finish(
    ctx: &ToolContext<'_>,
    process: &LongRunningProcess,
    process_id: i32,
    collected: Collected,
    start: Instant,
    max_output_tokens: Option<usize>,
) -> ToolOutcome {
    let running = collected.exit_code.is_none();
    if !running {
        ctx.processes.remove(ctx.session_id, process_id);
    }
    let wall_time = start.elapsed();
    let text = UnifiedExecOutput {
        chunk_id: &new_chunk_id(),
        wall_time,
        exit_code: collected.exit_code,
        process_id: running.then_some(process_id),
        output: &collected.output,
        max_output_tokens,
    }
    .render(ctx.policy);
    let sandbox_denied = process.sandboxed
        && collected
            .exit_code
            .is_some_and(|code| is_sandbox_denial(code, false, &[&collected.output]));
    ToolOutcome {
        text,
        items: None,
        success: true,
        sandbox_denied,
        command: Some(CommandRecord {
            command: process.command.clone(),
            cwd: process.cwd.clone(),
            exit_code: collected.exit_code.unwrap_or(-1),
            duration: wall_time,
            aggregated_output: collected.output,
            process_id: running.then_some(process_id),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yield_clamping() {
        assert_eq!(exec_yield(None), Duration::from_millis(10_000));
        assert_eq!(exec_yield(Some(1)), Duration::from_millis(250));
        assert_eq!(exec_yield(Some(1_000_000)), Duration::from_millis(30_000));
        assert_eq!(exec_yield(Some(1234)), Duration::from_millis(1234));
        assert_eq!(write_yield(None, "x"), Duration::from_millis(250));
        assert_eq!(
            write_yield(Some(99_999), "x"),
            Duration::from_millis(30_000)
        );
        assert_eq!(write_yield(None, ""), Duration::from_millis(5_000));
        assert_eq!(write_yield(Some(10_000), ""), Duration::from_millis(10_000));
        assert_eq!(
            write_yield(Some(10_000_000), ""),
            Duration::from_millis(300_000)
        );
    }

    #[test]
    fn parses_exec_command() {
        let p: ExecCommandParams = parse_arguments(
            r#"{"cmd":"ls","workdir":"w","shell":"/bin/zsh","tty":true,"yield_time_ms":5,
                "max_output_tokens":7,"login":false,"sandbox_permissions":"use_default"}"#,
        )
        .unwrap();
        assert_eq!(p.cmd, "ls");
        assert_eq!(p.workdir.as_deref(), Some("w"));
        assert_eq!(p.shell.as_deref(), Some("/bin/zsh"));
        assert!(p.tty);
        assert_eq!(
            (p.yield_time_ms, p.max_output_tokens, p.login),
            (Some(5), Some(7), Some(false))
        );
        let p: ExecCommandParams = parse_arguments(r#"{"cmd":"ls"}"#).unwrap();
        assert!(!p.tty && p.workdir.is_none() && p.login.is_none());
        assert_eq!(
            parse_arguments::<ExecCommandParams>(r#"{"command":"ls"}"#).unwrap_err(),
            "failed to parse function arguments: missing field `cmd` at line 1 column 16"
        );
    }

    #[test]
    fn parses_write_stdin() {
        let p: WriteStdinParams = parse_arguments(r#"{"session_id":1234}"#).unwrap();
        assert_eq!(
            p,
            WriteStdinParams {
                session_id: 1234,
                chars: String::new(),
                yield_time_ms: None,
                max_output_tokens: None
            }
        );
        let p: WriteStdinParams = parse_arguments(
            r#"{"session_id":1,"chars":"q\n","yield_time_ms":9,"max_output_tokens":3}"#,
        )
        .unwrap();
        assert_eq!(
            (p.chars.as_str(), p.yield_time_ms, p.max_output_tokens),
            ("q\n", Some(9), Some(3))
        );
        let err = parse_arguments::<WriteStdinParams>(r#"{"session_id":"x"}"#).unwrap_err();
        assert!(
            err.starts_with("failed to parse function arguments: invalid type: string"),
            "{err}"
        );
    }
}
