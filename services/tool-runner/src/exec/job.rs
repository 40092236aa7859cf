//! Confined jobs: tool code (a file read, a listing, a search, a patch)
//! run inside the sandbox helper rather than in the tool-runner, so that it
//! sees exactly what a sandboxed command would — no other process's
//! `/proc`, no hidden path, no write outside the writable roots. The job
//! goes to the helper as JSON on stdin, its result comes back as JSON on
//! stdout ([`crate::sandbox::job`]); big inputs such as a 256 KiB patch
//! never touch argv.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};

use super::spawn::Spawned;
use super::{ExecError, Executor, exit_code};
use crate::sandbox::Confinement;
use crate::sandbox::job::ConfinedJob;

/// Longer than any job should take (grep_files gives up after 30 s); a job
/// stuck on, say, a FIFO is killed then.
pub const JOB_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest result read back (view_image's 20 MiB file, base64 in JSON).
const MAX_OUTPUT_BYTES: u64 = 64 * 1024 * 1024;
/// What is kept of the helper's stderr, for the error text.
const MAX_STDERR_BYTES: u64 = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Start(#[from] ExecError),
    #[error("the sandboxed {label} did not finish within {} seconds", JOB_TIMEOUT.as_secs())]
    TimedOut { label: String },
    #[error("the sandboxed {label} failed (exit code {exit_code}): {stderr}")]
    Failed {
        label: String,
        exit_code: i32,
        stderr: String,
    },
    #[error("the sandboxed {label} answered with an unreadable result: {source}")]
    Output {
        label: String,
        source: serde_json::Error,
    },
    #[error("cannot talk to the sandboxed {label}: {source}")]
    Io {
        label: String,
        source: std::io::Error,
    },
}

impl Executor {
    /// Runs `job` confined by `sandbox`, in `cwd`; `label` names it in
    /// errors and process records ("read_file").
    pub async fn run_job<J: ConfinedJob>(
        &self,
        label: &str,
        job: J,
        cwd: &Path,
        sandbox: &Confinement,
    ) -> Result<J::Output, JobError> {
        let input = serde_json::to_vec(&job.into_job()).map_err(|source| JobError::Output {
            label: label.to_string(),
            source,
        })?;
        let Spawned {
            mut child,
            mut group,
        } = self.spawn_job(label, cwd, sandbox)?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let io_error = |source| JobError::Io {
            label: label.to_string(),
            source,
        };
        let exchange = async {
            let write = async {
                if let Some(mut stdin) = stdin {
                    // A helper that failed before reading closes the pipe;
                    // its status and stderr say why.
                    let _ = stdin.write_all(&input).await;
                    let _ = stdin.shutdown().await;
                }
            };
            let (_, out, err, status) = tokio::join!(
                write,
                read_capped(stdout, MAX_OUTPUT_BYTES),
                read_capped(stderr, MAX_STDERR_BYTES),
                child.wait()
            );
            (out, err, status)
        };
        let finished = tokio::time::timeout(JOB_TIMEOUT, exchange).await;
        group.kill();
        let Ok((out, err, status)) = finished else {
            return Err(JobError::TimedOut {
                label: label.to_string(),
            });
        };
        let status = status.map_err(io_error)?;
        let out = out.map_err(io_error)?;
        if !status.success() {
            let err = err.unwrap_or_default();
            return Err(JobError::Failed {
                label: label.to_string(),
                exit_code: exit_code(status),
                stderr: String::from_utf8_lossy(&err).trim().to_string(),
            });
        }
        serde_json::from_slice(&out).map_err(|source| JobError::Output {
            label: label.to_string(),
            source,
        })
    }
}

/// Reads `reader` to its end, keeping at most `cap` bytes (the rest is
/// read and dropped, so the writer never blocks).
async fn read_capped<R: AsyncRead + Unpin>(
    reader: Option<R>,
    cap: u64,
) -> std::io::Result<Vec<u8>> {
    let Some(reader) = reader else {
        return Ok(Vec::new());
    };
    let mut kept = Vec::new();
    let mut limited = reader.take(cap);
    limited.read_to_end(&mut kept).await?;
    let mut rest = limited.into_inner();
    tokio::io::copy(&mut rest, &mut tokio::io::sink()).await?;
    Ok(kept)
}
