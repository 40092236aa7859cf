//! Runs one command to completion, the way Codex's `shell` tool does
//! (Codex: `codex-rs/core/src/tools/mod.rs`): its own process group, stdin from /dev/null, stdout and
//! stderr read concurrently and interleaved in read order, each kept up to
//! 1 MiB, and on timeout the whole group killed with exit code 124.

mod env;
mod group;
pub mod job;
pub mod orphans;
mod procfs;
pub mod registry;
mod spawn;
pub mod unified;

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt as _;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::time::Instant;

use crate::sandbox::Confinement;
pub use env::{
    CORE_VARS, EnvInherit, EnvPattern, EnvPolicy, EnvPolicyError, inheritable, is_secret_name,
    refused_env_var,
};
use keel_sandbox::limits::ResourceLimits;
use orphans::{ProcessOwner, ProcessRecords};
use spawn::Spawned;
pub use spawn::StdinMode;

/// Codex's default command timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(10_000);
/// The longest a command may run, whatever `timeout_ms` asks: well inside
/// the worker's one-hour bound on a tool call, which would otherwise cut
/// the call and run it again.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(50 * 60);

/// The timeout for a requested `timeout_ms` (none: the default), at most
/// [`MAX_TIMEOUT`].
pub fn timeout_for(ms: Option<u64>) -> Duration {
    ms.map_or(DEFAULT_TIMEOUT, Duration::from_millis)
        .min(MAX_TIMEOUT)
}
/// Output kept per stream; the rest is read (so the command never blocks on a
/// full pipe) and dropped.
pub const STREAM_CAP_BYTES: usize = 1024 * 1024;
/// The exit code reported for a timed-out command (`EXEC_TIMEOUT_EXIT_CODE`).
pub const TIMEOUT_EXIT_CODE: i32 = 124;
/// Shell convention: killed by signal N exits 128+N.
const SIGNAL_EXIT_BASE: i32 = 128;
/// Once the command has exited, how long processes it left in the background
/// may keep the pipes open before we stop reading (Codex also waits 2 s).
pub(crate) const IO_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
pub(crate) const READ_CHUNK_BYTES: usize = 8 * 1024;

/// What to run.
#[derive(Debug, Clone)]
pub struct ExecSpec {
    /// Program and arguments; the program is looked up on PATH.
    pub argv: Vec<String>,
    /// Working directory; callers pass an absolute path.
    pub cwd: PathBuf,
    pub timeout: Duration,
    /// Set on top of the inherited (secret-free) environment. The caller chose
    /// these, so they are passed even when named like secrets.
    pub env: HashMap<String, String>,
    /// The sandbox to run in; `None` runs the command directly.
    pub sandbox: Option<Confinement>,
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// The exit code; 124 on timeout; 128+N when killed by signal N.
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
    /// Both streams in read order. On timeout it starts with
    /// `command timed out after <ms> milliseconds\n`.
    pub aggregated: String,
    pub duration: Duration,
    pub timed_out: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("argv must not be empty")]
    EmptyArgv,
    #[error("invalid environment variable name {0:?}")]
    InvalidEnvName(String),
    /// A loader variable in the request's environment ([`refused_env_var`]).
    #[error("the environment variable {name} cannot be set by a tool call: {reason}")]
    RefusedEnvVar { name: String, reason: &'static str },
    #[error("cannot start {program:?}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error(
        "cannot run {program:?} sandboxed: this tool-runner has no sandbox helper (keel-tool-runner sandbox-exec)"
    )]
    NoSandboxHelper { program: String },
    #[error(
        "cannot run {program:?} under the configured resource limits: this tool-runner has no helper (keel-tool-runner sandbox-exec)"
    )]
    NoLimitsHelper { program: String },
    #[error("waiting for {program:?} failed: {source}")]
    Wait {
        program: String,
        source: std::io::Error,
    },
}

impl ExecError {
    /// The underlying OS error, for callers that render it Codex's way.
    pub fn io_error(&self) -> Option<&std::io::Error> {
        match self {
            Self::Spawn { source, .. } | Self::Wait { source, .. } => Some(source),
            Self::EmptyArgv
            | Self::InvalidEnvName(_)
            | Self::RefusedEnvVar { .. }
            | Self::NoSandboxHelper { .. }
            | Self::NoLimitsHelper { .. } => None,
        }
    }
}

/// Runs commands with a fixed environment (the operator's
/// [`EnvPolicy`] applied once, at startup); cheap to clone.
#[derive(Debug, Clone)]
pub struct Executor {
    base_env: Arc<[(OsString, OsString)]>,
    /// The binary whose `sandbox-exec` subcommand confines sandboxed
    /// commands (the tool-runner's own); without one, sandboxed commands
    /// cannot start.
    sandbox_helper: Option<PathBuf>,
    /// The operator's rlimits for every command; when any is set, even
    /// unsandboxed commands start through the helper, which applies them.
    limits: ResourceLimits,
    /// Where every process group started is recorded, so that a restart
    /// can kill what a crash left running.
    records: Option<ProcessRecords>,
    /// The call this executor runs commands for (see [`Executor::owned_by`]).
    owner: Option<Arc<ProcessOwner>>,
}

impl Executor {
    /// Inherits the tool-runner's own environment, minus secrets.
    pub fn from_process_env() -> Self {
        Self::with_inherited_env(std::env::vars_os())
    }

    /// Inherits `vars`, minus secrets. Tests use this instead of mutating the
    /// process environment.
    pub fn with_inherited_env(vars: impl IntoIterator<Item = (OsString, OsString)>) -> Self {
        Self::with_env_policy(vars, &EnvPolicy::default())
    }

    /// Commands start from `policy` applied to `vars` (the tool-runner's
    /// own environment).
    pub fn with_env_policy(
        vars: impl IntoIterator<Item = (OsString, OsString)>,
        policy: &EnvPolicy,
    ) -> Self {
        Self {
            base_env: policy.apply(vars).into(),
            sandbox_helper: None,
            limits: ResourceLimits::default(),
            records: None,
            owner: None,
        }
    }

    /// Records every process group started in `records`.
    pub fn with_process_records(mut self, records: ProcessRecords) -> Self {
        self.records = Some(records);
        self
    }

    /// This executor for one tool call: the records of what it starts name
    /// the call.
    pub fn owned_by(&self, owner: ProcessOwner) -> Self {
        Self {
            owner: Some(Arc::new(owner)),
            ..self.clone()
        }
    }

    /// Confines sandboxed commands through `helper sandbox-exec`.
    pub fn with_sandbox_helper(mut self, helper: PathBuf) -> Self {
        self.sandbox_helper = Some(helper);
        self
    }

    /// Starts every command under `limits` (through the helper when any is
    /// set, so this needs [`Executor::with_sandbox_helper`] too).
    pub fn with_resource_limits(mut self, limits: ResourceLimits) -> Self {
        self.limits = limits;
        self
    }

    pub fn resource_limits(&self) -> &ResourceLimits {
        &self.limits
    }

    pub fn sandbox_helper(&self) -> Option<&std::path::Path> {
        self.sandbox_helper.as_deref()
    }

    /// Runs `spec` to completion. Dropping the returned future kills the
    /// command's process group.
    pub async fn run(&self, spec: &ExecSpec) -> Result<ExecOutput, ExecError> {
        let program = spec.argv.first().cloned().unwrap_or_default();
        let start = Instant::now();
        let Spawned {
            mut child,
            mut group,
        } = self.spawn(
            &spec.argv,
            &spec.cwd,
            &spec.env,
            StdinMode::Null,
            spec.sandbox.as_ref(),
        )?;

        let mut stdout = child.stdout.take();
        let mut stderr = child.stderr.take();
        let mut out_buf = vec![0u8; READ_CHUNK_BYTES];
        let mut err_buf = vec![0u8; READ_CHUNK_BYTES];
        let mut capture = Capture::default();
        let mut status: Option<ExitStatus> = None;
        let mut timed_out = false;
        let deadline = tokio::time::sleep(spec.timeout);
        tokio::pin!(deadline);
        let drain = tokio::time::sleep(IO_DRAIN_TIMEOUT);
        tokio::pin!(drain);

        loop {
            if status.is_some() && stdout.is_none() && stderr.is_none() {
                break;
            }
            tokio::select! {
                n = read_chunk(&mut stdout, &mut out_buf), if stdout.is_some() => match n {
                    Some(n) => capture.push(Stream::Stdout, &out_buf[..n]),
                    None => stdout = None,
                },
                n = read_chunk(&mut stderr, &mut err_buf), if stderr.is_some() => match n {
                    Some(n) => capture.push(Stream::Stderr, &err_buf[..n]),
                    None => stderr = None,
                },
                res = child.wait(), if status.is_none() => {
                    let exit = res.map_err(|source| ExecError::Wait {
                        program: program.clone(),
                        source,
                    })?;
                    status = Some(exit);
                    drain.as_mut().reset(Instant::now() + IO_DRAIN_TIMEOUT);
                }
                () = &mut deadline, if status.is_none() && !timed_out => {
                    timed_out = true;
                    // Killing the group closes every pipe writer it holds, so
                    // the reads above finish and `wait` returns.
                    group.kill();
                    // Should the group signal have failed, at least the leader goes.
                    let _ = child.start_kill();
                }
                () = &mut drain, if status.is_some() => break,
            }
        }
        // Whatever the command left running dies with the call: a process that
        // outlives its call would run unaccounted for, and twice on a retry.
        group.kill();
        let duration = start.elapsed();

        let exit_code = match status {
            _ if timed_out => TIMEOUT_EXIT_CODE,
            Some(status) => exit_code(status),
            None => -1,
        };
        let mut aggregated = String::from_utf8_lossy(&capture.aggregated).into_owned();
        if timed_out {
            // Codex prints the measured duration, not the configured timeout.
            aggregated = format!(
                "command timed out after {} milliseconds\n{aggregated}",
                duration.as_millis()
            );
        }
        Ok(ExecOutput {
            exit_code,
            stdout: String::from_utf8_lossy(&capture.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&capture.stderr).into_owned(),
            aggregated,
            duration,
            timed_out,
        })
    }
}

/// The exit code a shell would report: 128+N when killed by signal N.
pub(crate) fn exit_code(status: ExitStatus) -> i32 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => SIGNAL_EXIT_BASE + signal,
        (None, None) => -1,
    }
}

/// Reads what is available; `None` at end of stream. A read error ends the
/// stream too: there is nothing better to do with a broken pipe.
/// Cancel-safe, as `select!` needs: it only awaits one `read`.
pub(crate) async fn read_chunk<R: AsyncRead + Unpin>(
    reader: &mut Option<R>,
    buf: &mut [u8],
) -> Option<usize> {
    let reader = reader.as_mut()?;
    match reader.read(buf).await {
        Ok(0) | Err(_) => None,
        Ok(n) => Some(n),
    }
}

#[derive(Debug, Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

#[derive(Debug, Default)]
struct Capture {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    aggregated: Vec<u8>,
}

impl Capture {
    /// Keeps what fits under the stream's cap, in both the stream's buffer and
    /// the interleaved one.
    fn push(&mut self, stream: Stream, bytes: &[u8]) {
        let buf = match stream {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
        };
        let room = STREAM_CAP_BYTES.saturating_sub(buf.len());
        let kept = &bytes[..bytes.len().min(room)];
        buf.extend_from_slice(kept);
        self.aggregated.extend_from_slice(kept);
    }
}

#[cfg(test)]
mod tests;
