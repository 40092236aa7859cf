//! Unified exec: `exec_command` starts a command and waits up to
//! `yield_time_ms` for it; if it is still running, the model gets a session
//! id and continues with `write_stdin` (Codex:
//! `codex-rs/core/src/unified_exec/`). The output is always sent with
//! `success: true`; the exit code is in the text.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use keel_tool_model::WriteStdinInvocation;
use tokio::time::Instant;

use super::{CommandRecord, ToolContext, ToolOutcome, shlex_join};
use crate::exec::unified::{Collected, LongRunningProcess};
use crate::format::{UnifiedExecOutput, new_chunk_id};
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

/// A `max_output_tokens` from the wire as a count (saturating).
pub(crate) fn token_count(tokens: u64) -> usize {
    usize::try_from(tokens).unwrap_or(usize::MAX)
}

/// `exec_command`: starts `argv` in `cwd` and waits for it up to the yield
/// time; a process still running stays registered for `write_stdin`.
pub async fn start(
    ctx: &ToolContext<'_>,
    argv: Vec<String>,
    cwd: &Path,
    tty: bool,
    yield_time_ms: Option<u64>,
    max_output_tokens: Option<u64>,
) -> ToolOutcome {
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
        cwd,
        tty,
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
    let process_id = match ctx
        .processes
        .insert(ctx.process_scope, Arc::clone(&process))
    {
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
    let collected = process.collect(start + exec_yield(yield_time_ms)).await;
    unregister.disarm();
    finish(
        ctx,
        &process,
        process_id,
        collected,
        start,
        max_output_tokens,
    )
}

/// `write_stdin`: writes to (or polls) a process of the same session.
pub async fn write_stdin(ctx: &ToolContext<'_>, input: &WriteStdinInvocation) -> ToolOutcome {
    let Some(process) = ctx.processes.get(ctx.process_scope, input.process_id) else {
        return ToolOutcome::failure(format!(
            "write_stdin failed: Unknown process id {}",
            input.process_id
        ));
    };
    let start = Instant::now();
    if !input.chars.is_empty()
        && let Err(err) = process.write_stdin(&input.chars).await
    {
        return ToolOutcome::failure(format!("write_stdin failed: {err}"));
    }
    let deadline = start + write_yield(input.yield_time_ms, &input.chars);
    let collected = process.collect(deadline).await;
    finish(
        ctx,
        &process,
        input.process_id,
        collected,
        start,
        input.max_output_tokens,
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
                .remove(self.ctx.process_scope, self.process_id);
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
    max_output_tokens: Option<u64>,
) -> ToolOutcome {
    let running = collected.exit_code.is_none();
    if !running {
        ctx.processes.remove(ctx.process_scope, process_id);
    }
    let wall_time = start.elapsed();
    let text = UnifiedExecOutput {
        chunk_id: &new_chunk_id(),
        wall_time,
        exit_code: collected.exit_code,
        process_id: running.then_some(process_id),
        output: &collected.output,
        max_output_tokens: max_output_tokens.map(token_count),
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
}
