//! `keel.v1.ToolService`. `Exec` is the raw primitive and reports bad
//! requests as gRPC errors; `RunTool` answers the model, so everything the
//! model got wrong becomes an output item, and only a malformed request from
//! the worker (or a blob store failure) is a gRPC error.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use keel_blobstore::BlobStore;
use keel_proto::v1::tool_service_server::ToolService;
use keel_proto::v1::{CommandRun, ExecRequest, ExecResponse, RunToolRequest, RunToolResponse};
use tonic::{Request, Response, Status};

use crate::exec::{DEFAULT_TIMEOUT, ExecError, ExecSpec, Executor};
use crate::format::{TruncationPolicy, cut_at_char_boundary};
use crate::tools;

/// The name grpc.health.v1 reports SERVING.
pub const SERVICE_NAME: &str = "keel.v1.ToolService";

/// How much output a response carries for display. The model's copy is the
/// stored item, which has its own (larger) budget.
pub const DISPLAY_LIMIT_BYTES: usize = 16 * 1024;

/// The gRPC service; cheap to clone.
#[derive(Debug, Clone)]
pub struct ToolRunner {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    executor: Executor,
    blobs: BlobStore,
    /// Where calls without a cwd run; absolute.
    default_cwd: PathBuf,
    policy: TruncationPolicy,
}

impl ToolRunner {
    /// Commands inherit this process's environment, minus secrets.
    pub fn new(blobs: BlobStore, default_cwd: PathBuf) -> Self {
        Self::with_executor(Executor::from_process_env(), blobs, default_cwd)
    }

    pub fn with_executor(executor: Executor, blobs: BlobStore, default_cwd: PathBuf) -> Self {
        Self {
            inner: Arc::new(Inner {
                executor,
                blobs,
                default_cwd,
                policy: TruncationPolicy::default(),
            }),
        }
    }
}

#[tonic::async_trait]
impl ToolService for ToolRunner {
    async fn exec(&self, request: Request<ExecRequest>) -> Result<Response<ExecResponse>, Status> {
        let req = request.into_inner();
        if req.argv.is_empty() {
            return Err(Status::invalid_argument("argv must not be empty"));
        }
        let cwd = checked_workdir(&req.workdir)?;
        let timeout = match req.timeout_ms {
            0 => DEFAULT_TIMEOUT,
            ms => Duration::from_millis(ms),
        };
        let spec = ExecSpec {
            argv: req.argv,
            cwd,
            timeout,
            env: req.env,
        };
        let out = self.inner.executor.run(&spec).await.map_err(exec_status)?;
        tracing::info!(argv = ?spec.argv, exit_code = out.exit_code, duration_ms = out.duration.as_millis(), "exec");
        Ok(Response::new(ExecResponse {
            exit_code: out.exit_code,
            stdout: out.stdout,
            stderr: out.stderr,
            aggregated_output: out.aggregated,
            duration_ms: millis(out.duration),
            timed_out: out.timed_out,
        }))
    }

    async fn run_tool(
        &self,
        request: Request<RunToolRequest>,
    ) -> Result<Response<RunToolResponse>, Status> {
        let req = request.into_inner();
        if req.call_id.is_empty() {
            return Err(Status::invalid_argument("call_id must not be empty"));
        }
        if req.tool_name.is_empty() {
            return Err(Status::invalid_argument("tool_name must not be empty"));
        }
        let inner = &self.inner;
        // A relative session cwd is taken from the default one, so commands
        // always get an absolute directory.
        let base_cwd = if req.cwd.is_empty() {
            inner.default_cwd.clone()
        } else {
            inner.default_cwd.join(&req.cwd)
        };
        let outcome = tools::run_tool(
            &inner.executor,
            inner.policy,
            &req.tool_name,
            &req.arguments,
            &base_cwd,
        )
        .await;
        tracing::info!(
            session_id = %req.session_id,
            call_id = %req.call_id,
            tool = %req.tool_name,
            success = outcome.success,
            exit_code = outcome.command.as_ref().map(|c| c.exit_code),
            "tool call"
        );

        let item = serde_json::json!({
            "type": "function_call_output",
            "call_id": req.call_id,
            "output": outcome.text,
        });
        let digest = inner
            .blobs
            .put_json(&item)
            .await
            .map_err(|e| Status::internal(format!("cannot store the output item: {e}")))?;

        Ok(Response::new(RunToolResponse {
            output_item_digest: digest,
            success: outcome.success,
            output_preview: cut_at_char_boundary(&outcome.text, DISPLAY_LIMIT_BYTES).to_string(),
            command: outcome.command.map(|c| CommandRun {
                command: c.command,
                cwd: c.cwd.to_string_lossy().into_owned(),
                exit_code: c.exit_code,
                duration_ms: millis(c.duration),
                aggregated_output: cut_at_char_boundary(&c.aggregated_output, DISPLAY_LIMIT_BYTES)
                    .to_string(),
            }),
        }))
    }
}

/// Exec's workdir must be an existing absolute directory. Checked up front
/// because a spawn would report a missing directory exactly like a missing
/// program.
fn checked_workdir(workdir: &str) -> Result<PathBuf, Status> {
    let path = Path::new(workdir);
    if !path.is_absolute() {
        return Err(Status::invalid_argument(format!(
            "workdir must be an absolute path, got {workdir:?}"
        )));
    }
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Ok(path.to_path_buf()),
        Ok(_) => Err(Status::failed_precondition(format!(
            "workdir {workdir} is not a directory"
        ))),
        Err(e) if e.kind() == ErrorKind::NotFound => Err(Status::not_found(format!(
            "workdir {workdir} does not exist"
        ))),
        Err(e) => Err(Status::failed_precondition(format!(
            "cannot use workdir {workdir}: {e}"
        ))),
    }
}

fn exec_status(err: ExecError) -> Status {
    let message = err.to_string();
    match &err {
        ExecError::EmptyArgv | ExecError::InvalidEnvName(_) => Status::invalid_argument(message),
        ExecError::Spawn { source, .. } => match source.kind() {
            ErrorKind::NotFound => Status::not_found(message),
            ErrorKind::PermissionDenied => Status::failed_precondition(message),
            ErrorKind::InvalidInput => Status::invalid_argument(message),
            _ => Status::internal(message),
        },
        ExecError::Wait { .. } => Status::internal(message),
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
