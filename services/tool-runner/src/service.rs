//! `keel.v1.ToolService`. `Exec` and the other RPCs report bad requests as
//! gRPC errors; `RunTool` answers the model, so everything the model got
//! wrong (a path outside the workspace included) becomes an output item, and
//! only a malformed request from the worker (or a blob store failure) is a
//! gRPC error. RunTool is idempotent per (session id, call id); the `run`
//! submodule holds that path and [`crate::calls`] explains the guarantees.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use keel_blobstore::BlobStore;
use keel_proto::v1::tool_service_server::ToolService;
use keel_proto::v1::{
    ApplyPatchFormat, CancelToolCallRequest, CancelToolCallResponse, CloseToolSessionRequest,
    CloseToolSessionResponse, DescribeRunnerRequest, DescribeRunnerResponse, ExecRequest,
    ExecResponse, GetProjectContextRequest, GetProjectContextResponse, GetSandboxStatusRequest,
    GetSandboxStatusResponse, GitInfo, LeaseWorkspaceRequest, LeaseWorkspaceResponse,
    ListToolsRequest, ListToolsResponse, ReviewPatchRequest, ReviewPatchResponse, RunToolRequest,
    RunToolResponse, ShellToolKind, ToolSpec,
};
use tonic::{Request, Response, Status};

use crate::calls::registry::Executions;
use crate::calls::{CallKey, Journal, JournalError};
use crate::clone::CloneSettings;
use crate::context::{self, AgentsMdOptions, EnvironmentFacts, agents_md_message_text};
use crate::exec::registry::ProcessRegistry;
use crate::exec::{ExecError, ExecSpec, Executor};
use crate::fleet::Fleet;
use crate::format::TruncationPolicy;
use crate::sandbox::{CallSandbox, SandboxPolicy, SandboxSettings};
use crate::tools::specs::{ApplyPatchTool, ShellTool, ToolOptions, tool_specs};
use keel_paths::{Workspace, WorkspaceError};

mod errors;
mod review;
mod run;

/// The name grpc.health.v1 reports SERVING.
pub const SERVICE_NAME: &str = "keel.v1.ToolService";

/// How much output a response carries for display. The model's copy is the
/// stored item, which has its own (larger) budget.
pub const DISPLAY_LIMIT_BYTES: usize = 16 * 1024;

/// The user's shell when `SHELL` is not set.
const FALLBACK_SHELL: &str = "/bin/bash";

/// How long finished calls are remembered unless configured otherwise.
pub const DEFAULT_JOURNAL_RETENTION: Duration = Duration::from_secs(72 * 3600);

/// How the tool-runner is set up.
#[derive(Debug, Clone)]
pub struct ToolRunnerConfig {
    pub executor: Executor,
    pub blobs: BlobStore,
    /// Where calls without a cwd run; absolute.
    pub default_cwd: PathBuf,
    pub workspace: Workspace,
    /// Where calls are journaled (see [`crate::calls`]).
    pub journal: Journal,
    /// How long finished calls are remembered.
    pub journal_retention: Duration,
    /// The default sandbox, whether it is required, and what this host
    /// enforces.
    pub sandbox: SandboxSettings,
    /// This runner's id, leases, command limit and draining state.
    pub fleet: Arc<Fleet>,
    /// Where and how sessions' repositories are cloned.
    pub clones: CloneSettings,
    /// Tool calls by tool and outcome (in the server's registry).
    pub metrics: crate::metrics::ToolMetrics,
}

/// The gRPC service; cheap to clone.
#[derive(Debug, Clone)]
pub struct ToolRunner {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    executor: Executor,
    blobs: BlobStore,
    default_cwd: PathBuf,
    workspace: Workspace,
    policy: TruncationPolicy,
    processes: ProcessRegistry,
    /// The shell `shell_command` and `exec_command` use.
    user_shell: String,
    environment: EnvironmentFacts,
    journal: Journal,
    journal_retention: Duration,
    /// The calls running (or remembered only in memory), by key.
    executions: Executions,
    sandbox: SandboxSettings,
    fleet: Arc<Fleet>,
    clones: CloneSettings,
    metrics: crate::metrics::ToolMetrics,
}

impl ToolRunner {
    pub fn new(config: ToolRunnerConfig) -> Self {
        let user_shell = config
            .executor
            .inherited_var("SHELL")
            .filter(|shell| !shell.is_empty())
            .unwrap_or_else(|| FALLBACK_SHELL.to_string());
        let environment = EnvironmentFacts::detect(
            Some(&user_shell),
            config.executor.inherited_var("TZ").as_deref(),
        );
        Self {
            inner: Arc::new(Inner {
                executor: config.executor,
                blobs: config.blobs,
                default_cwd: config.default_cwd,
                workspace: config.workspace,
                policy: TruncationPolicy::default(),
                processes: ProcessRegistry::default(),
                user_shell,
                environment,
                journal: config.journal,
                journal_retention: config.journal_retention,
                executions: Executions::default(),
                sandbox: config.sandbox,
                fleet: config.fleet,
                clones: config.clones,
                metrics: config.metrics,
            }),
        }
    }

    /// This runner's place in the fleet.
    pub fn fleet(&self) -> &Fleet {
        &self.inner.fleet
    }

    /// How many unified exec processes are alive, across sessions.
    pub fn live_processes(&self) -> usize {
        self.inner.processes.len()
    }

    /// How many tool calls are running, across sessions.
    pub fn running_calls(&self) -> usize {
        self.inner.executions.running(None).len()
    }

    /// How many RunTool callers wait for the call's running execution.
    pub fn callers_waiting(&self, session_id: &str, call_id: &str) -> usize {
        self.inner
            .executions
            .get(&CallKey::new(session_id, call_id))
            .map_or(0, |exec| exec.waiters())
    }

    /// Forgets finished calls older than the retention, on disk and in
    /// memory; returns how many entries went. The binary runs it at startup
    /// and hourly.
    pub async fn prune_journal(&self) -> Result<usize, JournalError> {
        let retention = self.inner.journal_retention;
        let in_memory = self.inner.executions.prune(retention);
        let on_disk = self.inner.journal.prune(retention).await?;
        Ok(in_memory + on_disk)
    }

    /// Kills the `exec_command` processes nobody has used for `idle`.
    pub fn reap_idle_processes(&self, idle: Duration) -> usize {
        self.inner.processes.reap_idle(idle)
    }

    /// Waits up to `grace` for the running calls to finish (at shutdown, so
    /// that calls nobody waits for any more still record their results);
    /// returns how many are still running.
    pub async fn finish_running_calls(&self, grace: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + grace;
        let mut left = 0;
        for exec in self.inner.executions.running(None) {
            if tokio::time::timeout_at(deadline, exec.wait_done())
                .await
                .is_err()
            {
                left += 1;
            }
        }
        left
    }

    /// A request's sandbox policy; the default when it sets none.
    fn sandbox_policy(
        &self,
        policy: Option<&keel_proto::v1::SandboxPolicy>,
    ) -> Result<SandboxPolicy, Status> {
        SandboxPolicy::from_proto(policy, &self.inner.sandbox.default_policy)
            .map_err(|err| errors::invalid(err.to_string()))
    }

    /// One call's sandbox in its (canonical) cwd, with the hidden paths
    /// that exist now.
    fn call_sandbox(&self, policy: SandboxPolicy, cwd: &Path) -> CallSandbox {
        let tmpdir = self
            .inner
            .executor
            .inherited_var("TMPDIR")
            .map(PathBuf::from);
        let settings = &self.inner.sandbox;
        CallSandbox::new(policy, cwd, tmpdir.as_deref(), settings.require())
            .with_hidden(settings.existing_hidden_paths())
    }

    /// The session cwd (canonical) for a request's `cwd`: inside the
    /// workspace, and not inside a hidden path (its commands could not see
    /// it). `Err` is the text for the model.
    fn session_cwd(&self, cwd: &str) -> Result<PathBuf, String> {
        let cwd = self
            .inner
            .workspace
            .resolve_existing(&self.inner.default_cwd, Path::new(cwd))
            .map_err(|err: WorkspaceError| err.to_string())?;
        self.inner.sandbox.check_cwd(&cwd)?;
        Ok(cwd)
    }

    /// RunTool's answer to a call whose sandbox this host cannot enforce:
    /// not an error, but an output the model (or, first, the user asked
    /// whether to run it unsandboxed) gets, flagged `sandbox_unavailable`.
    /// Nothing ran, so nothing is journaled: a retry is refused the same
    /// way, and an approved re-run comes as another attempt.
    async fn sandbox_unavailable(
        &self,
        req: &RunToolRequest,
        text: String,
    ) -> Result<RunToolResponse, Status> {
        let item = serde_json::json!({
            "type": if req.custom { "custom_tool_call_output" } else { "function_call_output" },
            "call_id": req.call_id,
            "output": text,
        });
        let digest = self
            .inner
            .blobs
            .for_session(&req.session_id)
            .map_err(|e| errors::invalid(e.to_string()))?
            .put_json(&item)
            .await
            .map_err(|err| {
                errors::blob_store(format!("cannot store the tool output item: {err}"))
            })?;
        Ok(RunToolResponse {
            output_item_digest: digest,
            success: false,
            output_preview: crate::format::cut_at_char_boundary(&text, DISPLAY_LIMIT_BYTES)
                .to_string(),
            command: None,
            sandbox_denied: false,
            sandbox_unavailable: true,
        })
    }
}

#[tonic::async_trait]
impl ToolService for ToolRunner {
    async fn exec(&self, request: Request<ExecRequest>) -> Result<Response<ExecResponse>, Status> {
        let req = request.into_inner();
        if req.argv.is_empty() {
            return Err(errors::invalid("argv must not be empty"));
        }
        let inner = &self.inner;
        let cwd = checked_dir(
            &inner.workspace,
            &inner.default_cwd,
            "workdir",
            &req.workdir,
            true,
        )?;
        let timeout = crate::exec::timeout_for((req.timeout_ms != 0).then_some(req.timeout_ms));
        // The raw primitive runs under the default sandbox, with its workdir
        // as the cwd.
        let policy = inner.sandbox.default_policy.clone();
        if let Some(refusal) = inner.sandbox.refusal(&policy) {
            return Err(errors::sandbox_unavailable(refusal));
        }
        if policy.is_sandboxed() {
            inner
                .sandbox
                .check_cwd(&cwd)
                .map_err(errors::unusable_directory)?;
        }
        let sandbox = self.call_sandbox(policy, &cwd).confinement();
        let spec = ExecSpec {
            argv: req.argv,
            cwd,
            timeout,
            env: req.env,
            sandbox,
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
        let mut req = request.into_inner();
        check_key(&req.session_id, &req.call_id)?;
        check_agent(&req.agent_id)?;
        if req.tool_name.is_empty() {
            return Err(errors::invalid("tool_name must not be empty"));
        }
        if !req.call_item_digest.is_empty() {
            req.arguments = self
                .stored_arguments(&req.session_id, &req.call_item_digest)
                .await?;
            req.call_item_digest.clear();
        }
        let policy = self.sandbox_policy(req.sandbox.as_ref())?;
        // Commands and the file tools run confined; apply_patch writes only
        // where the tool-runner's own check allows (and never into a
        // hidden path), so it is not refused here.
        if runs_confined(&req.tool_name)
            && let Some(refusal) = self.inner.sandbox.refusal(&policy)
        {
            tracing::warn!(session_id = %req.session_id, call_id = %req.call_id, tool = %req.tool_name, "{refusal}");
            return self
                .sandbox_unavailable(&req, refusal)
                .await
                .map(Response::new);
        }
        self.run_tool_once(req).await.map(Response::new)
    }

    async fn cancel_tool_call(
        &self,
        request: Request<CancelToolCallRequest>,
    ) -> Result<Response<CancelToolCallResponse>, Status> {
        let req = request.into_inner();
        check_key(&req.session_id, &req.call_id)?;
        check_agent(&req.agent_id)?;
        // The latest attempt of the call: after an approved re-run, that is
        // the one that may still be running.
        let key = CallKey::new(&req.session_id, &req.call_id).with_agent(&req.agent_id);
        let attempt = self.inner.executions.latest_attempt(&key).unwrap_or(0);
        let key = key.with_attempt(attempt);
        let was_running = self.cancel_call(&key).await?;
        tracing::info!(
            session_id = %req.session_id,
            call_id = %req.call_id,
            was_running,
            "tool call cancelled"
        );
        Ok(Response::new(CancelToolCallResponse { was_running }))
    }

    async fn list_tools(
        &self,
        request: Request<ListToolsRequest>,
    ) -> Result<Response<ListToolsResponse>, Status> {
        let req = request.into_inner();
        let options = tool_options(&req)?;
        let tools = tool_specs(&options)
            .into_iter()
            .map(|(name, json)| ToolSpec { name, json })
            .collect();
        Ok(Response::new(ListToolsResponse { tools }))
    }

    async fn close_tool_session(
        &self,
        request: Request<CloseToolSessionRequest>,
    ) -> Result<Response<CloseToolSessionResponse>, Status> {
        let req = request.into_inner();
        if req.session_id.is_empty() {
            return Err(errors::invalid("session_id must not be empty"));
        }
        // The calls first: a cancelled exec_command removes its own process.
        let cancelled = self.cancel_session_calls(&req.session_id).await;
        let killed = self.inner.processes.close_session(&req.session_id);
        self.inner.fleet.release(&req.session_id);
        tracing::info!(session_id = %req.session_id, cancelled, killed, "session closed");
        Ok(Response::new(CloseToolSessionResponse {}))
    }

    async fn get_project_context(
        &self,
        request: Request<GetProjectContextRequest>,
    ) -> Result<Response<GetProjectContextResponse>, Status> {
        let req = request.into_inner();
        let inner = &self.inner;
        let cwd = if req.cwd.is_empty() {
            inner.default_cwd.to_string_lossy().into_owned()
        } else {
            req.cwd.clone()
        };
        let cwd = checked_dir(&inner.workspace, &inner.default_cwd, "cwd", &cwd, false)?;
        for (field, names) in [
            ("fallback_filenames", &req.fallback_filenames),
            ("project_root_markers", &req.project_root_markers),
        ] {
            if let Some(bad) = names
                .iter()
                .find(|name| !context::agents_md::is_plain_name(name))
            {
                return Err(errors::invalid(format!(
                    "{field}: {bad:?} is not a plain file name (no '/', '.' or '..')"
                )));
            }
        }
        let options = AgentsMdOptions {
            max_bytes: match req.project_doc_max_bytes {
                0 => context::agents_md::DEFAULT_MAX_BYTES,
                n => n,
            },
            root_markers: if req.disable_project_root_walk {
                Vec::new()
            } else if req.project_root_markers.is_empty() {
                vec![".git".to_string()]
            } else {
                req.project_root_markers
            },
            fallback_filenames: req.fallback_filenames,
        };
        let facts = self.inner.environment.clone();
        let gather_cwd = cwd.clone();
        // What the sandbox hides stays out of the model's context too.
        let hidden = inner.sandbox.existing_hidden_paths();
        let gathered = tokio::task::spawn_blocking(move || {
            context::gather(&gather_cwd, &options, &facts, &hidden)
        })
        .await
        .map_err(|e| errors::internal(format!("cannot read the project context: {e}")))?;
        let (agents_md, agents_md_message_text, agents_md_paths) = match gathered.doc {
            Some(doc) => (
                doc.text.clone(),
                agents_md_message_text(&cwd, &doc.text),
                doc.paths
                    .iter()
                    .map(|p| p.to_string_lossy().into_owned())
                    .collect(),
            ),
            None => (String::new(), String::new(), Vec::new()),
        };
        Ok(Response::new(GetProjectContextResponse {
            cwd: cwd.to_string_lossy().into_owned(),
            agents_md,
            agents_md_message_text,
            git: Some(GitInfo {
                branch: gathered.git.branch,
                commit: gathered.git.commit,
                remote_url: gathered.git.remote_url,
            }),
            environment_context: gathered.environment_context,
            agents_md_paths,
            user_shell: inner.user_shell.clone(),
        }))
    }

    async fn review_patch(
        &self,
        request: Request<ReviewPatchRequest>,
    ) -> Result<Response<ReviewPatchResponse>, Status> {
        let mut req = request.into_inner();
        if !req.call_item_digest.is_empty() {
            req.arguments = self
                .stored_arguments(&req.session_id, &req.call_item_digest)
                .await?;
            req.call_item_digest.clear();
        }
        self.review(req).await.map(Response::new)
    }

    async fn get_sandbox_status(
        &self,
        _request: Request<GetSandboxStatusRequest>,
    ) -> Result<Response<GetSandboxStatusResponse>, Status> {
        let sandbox = &self.inner.sandbox;
        Ok(Response::new(
            sandbox.status.to_proto(&sandbox.hidden_paths),
        ))
    }

    async fn describe_runner(
        &self,
        _request: Request<DescribeRunnerRequest>,
    ) -> Result<Response<DescribeRunnerResponse>, Status> {
        let fleet = &self.inner.fleet;
        let load = fleet.load();
        Ok(Response::new(DescribeRunnerResponse {
            runner_id: fleet.runner_id().to_string(),
            max_concurrent_commands: load.max_concurrent_commands,
            running_commands: load.running_commands,
            waiting_commands: load.waiting_commands,
            leases: load.leases,
            draining: load.draining,
        }))
    }

    async fn lease_workspace(
        &self,
        request: Request<LeaseWorkspaceRequest>,
    ) -> Result<Response<LeaseWorkspaceResponse>, Status> {
        let req = request.into_inner();
        check_key(&req.session_id, "lease")?;
        let fleet = &self.inner.fleet;
        if fleet.draining() {
            return Err(errors::draining(format!(
                "tool-runner {} is draining and takes no new workspaces",
                fleet.runner_id()
            )));
        }
        let cwd = if let Some(git) = &req.git {
            let clone = self
                .inner
                .clones
                .workspace(&req.session_id, &git.url, &git.r#ref)
                .await
                .map_err(errors::clone_error)?;
            let clone = clone.display().to_string();
            checked_dir(
                &self.inner.workspace,
                &self.inner.default_cwd,
                "the clone",
                &clone,
                true,
            )?
        } else if req.cwd.is_empty() {
            self.inner.default_cwd.clone()
        } else {
            checked_dir(
                &self.inner.workspace,
                &self.inner.default_cwd,
                "cwd",
                &req.cwd,
                true,
            )?
        };
        self.inner
            .sandbox
            .check_cwd(&cwd)
            .map_err(errors::unusable_directory)?;
        let leases = fleet.lease(&req.session_id);
        tracing::info!(session_id = %req.session_id, cwd = %cwd.display(), leases, "workspace leased");
        Ok(Response::new(LeaseWorkspaceResponse {
            runner_id: fleet.runner_id().to_string(),
            cwd: cwd.display().to_string(),
            leases,
        }))
    }
}

/// The tools that run inside the platform sandbox under a sandboxed
/// policy: those that start commands, and the file tools that read
/// (`read_file`, `list_dir`, `grep_files`, `view_image`).
fn runs_confined(tool_name: &str) -> bool {
    crate::calls::is_shell_family(tool_name)
        || matches!(
            tool_name,
            "read_file" | "list_dir" | "grep_files" | "view_image"
        )
}

/// A call id is required; NUL is refused in both ids so that the journal's
/// key digest is unambiguous.
fn check_key(session_id: &str, call_id: &str) -> Result<(), Status> {
    if call_id.is_empty() {
        return Err(errors::invalid("call_id must not be empty"));
    }
    if call_id.contains('\0') {
        return Err(errors::invalid("call_id must not contain NUL"));
    }
    // The session's blobs are stored under its key: check it before
    // anything runs.
    keel_blobstore::validate_session_key(session_id).map_err(|_| {
        errors::invalid(format!(
            "session_id {session_id:?} is not a session key: 1 to 200 letters, digits, '.', '_' or '-'"
        ))
    })
}

/// A sub-agent's id, when a call names one (see `RunToolRequest.agent_id`).
fn check_agent(agent_id: &str) -> Result<(), Status> {
    if keel_tool_model::valid_agent_id(agent_id) {
        Ok(())
    } else {
        Err(errors::invalid(format!(
            "agent_id {agent_id:?} is not an agent id: at most {} letters, digits, '-' or '_'",
            keel_tool_model::MAX_AGENT_ID_LEN
        )))
    }
}

fn tool_options(req: &ListToolsRequest) -> Result<ToolOptions, Status> {
    let apply_patch = match ApplyPatchFormat::try_from(req.apply_patch_format) {
        Ok(ApplyPatchFormat::Unspecified | ApplyPatchFormat::Freeform) => ApplyPatchTool::Freeform,
        Ok(ApplyPatchFormat::Json) => ApplyPatchTool::Json,
        Ok(ApplyPatchFormat::None) => ApplyPatchTool::None,
        Err(_) => {
            return Err(errors::invalid(format!(
                "unknown apply_patch_format {}",
                req.apply_patch_format
            )));
        }
    };
    let shell = match ShellToolKind::try_from(req.shell_tool) {
        Ok(ShellToolKind::Unspecified | ShellToolKind::ExecCommand) => ShellTool::UnifiedExec,
        Ok(ShellToolKind::Shell) => ShellTool::Shell,
        Ok(ShellToolKind::ShellCommand) => ShellTool::ShellCommand,
        Ok(ShellToolKind::None) => ShellTool::None,
        Err(_) => {
            return Err(errors::invalid(format!(
                "unknown shell_tool {}",
                req.shell_tool
            )));
        }
    };
    Ok(ToolOptions {
        shell,
        apply_patch,
        view_image: req.include_view_image,
        view_image_original_detail: req.view_image_original_detail,
        file_tools: !req.exclude_file_tools,
        approval_parameters: req.include_approval_parameters,
    })
}

/// An existing directory inside the workspace, canonical; a relative `dir`
/// is taken from `base` unless `must_be_absolute` (Exec's workdir).
fn checked_dir(
    workspace: &Workspace,
    base: &Path,
    what: &str,
    dir: &str,
    must_be_absolute: bool,
) -> Result<PathBuf, Status> {
    let path = Path::new(dir);
    if dir.is_empty() || (must_be_absolute && !path.is_absolute()) {
        return Err(errors::invalid(format!(
            "{what} must be an absolute path, got {dir:?}"
        )));
    }
    let resolved = workspace
        .resolve_existing(base, path)
        .map_err(|err| match &err {
            _ if err.is_denied() => errors::outside_workspace(err.to_string()),
            _ if err.is_not_found() => errors::not_found(format!("{what} {dir} does not exist")),
            _ => errors::unusable_directory(format!("cannot use {what} {dir}: {err}")),
        })?;
    if !resolved.is_dir() {
        return Err(errors::unusable_directory(format!(
            "{what} {dir} is not a directory"
        )));
    }
    Ok(resolved)
}

fn exec_status(err: ExecError) -> Status {
    let message = err.to_string();
    match &err {
        ExecError::EmptyArgv | ExecError::InvalidEnvName(_) | ExecError::RefusedEnvVar { .. } => {
            errors::invalid(message)
        }
        ExecError::Spawn { source, .. } => match source.kind() {
            ErrorKind::NotFound => errors::spawn_failed(tonic::Code::NotFound, message),
            ErrorKind::PermissionDenied => {
                errors::spawn_failed(tonic::Code::FailedPrecondition, message)
            }
            ErrorKind::InvalidInput => errors::spawn_failed(tonic::Code::InvalidArgument, message),
            _ => errors::internal(message),
        },
        ExecError::Wait { .. } => errors::internal(message),
        ExecError::NoSandboxHelper { .. } | ExecError::NoLimitsHelper { .. } => {
            errors::sandbox_unavailable(message)
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl ToolRunner {
    /// The arguments of a stored `function_call` (its `arguments`) or
    /// `custom_tool_call` (its `input`) item.
    async fn stored_arguments(&self, session_id: &str, digest: &str) -> Result<String, Status> {
        // Sessions' items are under their own prefix; ReviewPatch callers
        // from before it sent the session read the shared part.
        let blobs = if session_id.is_empty() {
            self.inner.blobs.clone()
        } else {
            self.inner
                .blobs
                .for_session(session_id)
                .map_err(|e| errors::invalid(e.to_string()))?
        };
        let item: serde_json::Value = blobs.get_json(digest).await.map_err(|e| match e {
            keel_blobstore::BlobError::InvalidDigest(_)
            | keel_blobstore::BlobError::NotFound(_) => {
                errors::invalid(format!("call_item_digest: {e}"))
            }
            corrupt @ keel_blobstore::BlobError::Corrupt { .. } => {
                errors::blob_corrupt(format!("cannot read the call item: {corrupt}"))
            }
            other => errors::blob_store(format!("cannot read the call item: {other}")),
        })?;
        let field = match item.get("type").and_then(serde_json::Value::as_str) {
            Some("function_call") => "arguments",
            Some("custom_tool_call") => "input",
            _ => {
                return Err(errors::invalid(
                    "call_item_digest must name a function_call or custom_tool_call item",
                ));
            }
        };
        Ok(match item.get(field) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        })
    }
}

#[cfg(test)]
mod tests;
