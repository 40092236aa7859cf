//! `keel-tool-runner`: serves `keel.v1.ToolService`, running the agent's
//! tool calls on the session's workspace. The hidden `keel-tool-runner
//! sandbox-exec` is the sandbox helper the tool-runner starts sandboxed
//! commands through. (Applying a patch by hand: the `apply-patch` command of
//! the keel-apply-patch crate.)

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser};
use keel_blobstore::BlobStore;
use keel_paths::Workspace;
use keel_proto::v1::tool_service_server::ToolServiceServer;
use keel_sandbox::limits::MIB;
use keel_sandbox::limits::ResourceLimits;
use keel_tool_runner::calls::{Journal, lock_state_dir};
use keel_tool_runner::clone::CloneSettings;
use keel_tool_runner::exec::orphans::ProcessRecords;
use keel_tool_runner::exec::{EnvInherit, EnvPattern, EnvPolicy, Executor};
use keel_tool_runner::fleet::{self, Fleet};
use keel_tool_runner::sandbox::{
    self, SandboxMode, SandboxPolicy, SandboxSettings, status::SandboxStatus,
};
use keel_tool_runner::{SERVICE_NAME, ToolRunner, ToolRunnerConfig};
use nix::sys::resource::{Resource, setrlimit};
use tonic::service::Routes;

#[derive(Debug, Parser)]
#[command(
    name = "keel-tool-runner",
    version,
    about = "Keel's tool-runner: runs the agent's commands"
)]
struct Cli {
    #[command(flatten)]
    serve: ServeOptions,
}

#[derive(Debug, Args)]
struct ServeOptions {
    #[command(flatten)]
    serve: keel_server::ServeArgs,
    #[command(flatten)]
    metrics: keel_server::MetricsArgs,
    /// Mutual TLS: only the worker (a client certificate naming
    /// `keel-worker`, by default) may run tools.
    #[command(flatten)]
    tls: keel_server::PeerTlsArgs,
    /// Kill an `exec_command` process nobody has written to or read from
    /// for this many seconds (0: never).
    #[arg(long, env = "KEEL_EXEC_IDLE_TIMEOUT_SECS", default_value_t = 1800)]
    exec_idle_timeout_secs: u64,
    /// The blob store session-api, model-proxy and tool-runner share (see
    /// keel_blobstore::BlobStoreArgs): `file:///abs/dir`,
    /// `s3://bucket[/prefix]`, `gs://bucket`, `az://container`, or
    /// `memory://` (tests).
    #[arg(long, env = "KEEL_BLOB_URL", value_name = "URL")]
    blob_url: String,
    /// Working directory for calls whose request names none. Defaults to the
    /// tool-runner's own current directory.
    #[arg(long, env = "KEEL_DEFAULT_CWD")]
    default_cwd: Option<PathBuf>,
    #[command(flatten)]
    workspace: WorkspaceArgs,
    /// Where the tool-runner journals its tool calls, so that a call retried
    /// after a worker crash or a tool-runner restart is never run twice.
    /// Defaults to a `tool-runner-state` directory next to a `file://` blob
    /// store, else to a new temporary directory (which does not survive a
    /// restart). One tool-runner per directory.
    #[arg(long, env = "KEEL_TOOL_RUNNER_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// This runner's id in a fleet (DescribeRunner, the sessions' leases).
    /// Defaults to the id kept in the state directory, made once from the
    /// host name and a random suffix.
    #[arg(long, env = "KEEL_RUNNER_ID")]
    runner_id: Option<String>,
    /// Commands (shell tools, exec_command) run at most this many at a
    /// time; the others wait for a slot. A runner at its limit gets no new
    /// workspace leases while others have room. 0: no limit.
    #[arg(long, env = "KEEL_MAX_CONCURRENT_COMMANDS", default_value_t = 0)]
    max_concurrent_commands: u32,
    /// On SIGTERM the runner drains: no new leases or calls (the worker
    /// moves those sessions to other runners) while the running calls
    /// finish, for at most this many seconds. Then it stops: a call still
    /// running is cut off and the worker reports it lost (never run again);
    /// a runner started again on the same state directory kills what it
    /// left running.
    #[arg(long, env = "KEEL_DRAIN_TIMEOUT_SECS", default_value_t = 300)]
    drain_timeout_secs: u64,
    /// Where sessions that name a git repository get their clones (a
    /// directory per session). It must lie in an allowed workspace root,
    /// on the volume the runners share. Unset: this runner clones nothing.
    #[arg(long, env = "KEEL_CLONE_ROOT")]
    clone_root: Option<PathBuf>,
    /// Also clone `file://` repositories (local mirrors, tests): a client
    /// then reads any repository this runner can. The variable takes 1/0,
    /// true/false, yes/no, on/off.
    #[arg(
        long,
        env = "KEEL_ALLOW_LOCAL_GIT",
        default_value_t = false,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    allow_local_git: bool,
    /// How long finished tool calls are remembered (a retry within it gets
    /// the recorded result). Pruned at startup and hourly.
    #[arg(
        long,
        env = "KEEL_TOOL_RUNNER_JOURNAL_RETENTION_HOURS",
        default_value_t = 72,
        value_parser = clap::value_parser!(u64).range(1..=24 * 365 * 10)
    )]
    journal_retention_hours: u64,
    #[command(flatten)]
    sandbox: SandboxArgs,
    #[command(flatten)]
    env: EnvArgs,
    #[command(flatten)]
    limits: LimitArgs,
}

/// The largest size flag, in MiB: anything above would overflow the byte
/// count or mean "unlimited" (RLIM_INFINITY).
const MAX_MIB: u64 = u64::MAX / MIB;

/// Resource limits (rlimits) for every command the tool-runner starts,
/// sandboxed or not. Each is off (inherited from the tool-runner) unless
/// set; RLIMIT_CORE is always 0. Set: commands start through the
/// `sandbox-exec` helper, which applies them before executing the command.
#[derive(Debug, Args)]
struct LimitArgs {
    /// RLIMIT_CPU: CPU seconds per process; SIGXCPU at the limit, SIGKILL
    /// a second later.
    #[arg(
        long,
        env = "KEEL_RLIMIT_CPU_SECS",
        value_name = "SECONDS",
        value_parser = clap::value_parser!(u64).range(1..u64::MAX)
    )]
    rlimit_cpu_secs: Option<u64>,
    /// RLIMIT_AS: virtual memory per process, in MiB; allocations beyond it
    /// fail (ENOMEM).
    #[arg(
        long,
        env = "KEEL_RLIMIT_AS_MB",
        value_name = "MIB",
        value_parser = clap::value_parser!(u64).range(1..MAX_MIB)
    )]
    rlimit_as_mb: Option<u64>,
    /// RLIMIT_NOFILE: open file descriptors per process; opening more fails
    /// (EMFILE).
    #[arg(
        long,
        env = "KEEL_RLIMIT_NOFILE",
        value_name = "N",
        value_parser = clap::value_parser!(u64).range(1..u64::MAX)
    )]
    rlimit_nofile: Option<u64>,
    /// RLIMIT_NPROC: processes (threads) of the tool-runner's user, counted
    /// over all of that user's processes — the tool-runner's own threads
    /// and other commands included — not per command; fork fails (EAGAIN)
    /// beyond it. Root is exempt. Meaningful with a dedicated user.
    #[arg(
        long,
        env = "KEEL_RLIMIT_NPROC",
        value_name = "N",
        value_parser = clap::value_parser!(u64).range(1..u64::MAX)
    )]
    rlimit_nproc: Option<u64>,
    /// RLIMIT_FSIZE: the largest file a process may write, in MiB; writing
    /// beyond it raises SIGXFSZ ("File size limit exceeded").
    #[arg(
        long,
        env = "KEEL_RLIMIT_FSIZE_MB",
        value_name = "MIB",
        value_parser = clap::value_parser!(u64).range(1..MAX_MIB)
    )]
    rlimit_fsize_mb: Option<u64>,
}

impl LimitArgs {
    fn limits(&self) -> ResourceLimits {
        ResourceLimits {
            cpu_secs: self.rlimit_cpu_secs,
            // The ranges keep these from overflowing.
            address_space_bytes: self.rlimit_as_mb.map(|mb| mb.saturating_mul(MIB)),
            open_files: self.rlimit_nofile,
            processes: self.rlimit_nproc,
            file_size_bytes: self.rlimit_fsize_mb.map(|mb| mb.saturating_mul(MIB)),
        }
    }
}

/// Codex's `shell_environment_policy` for every command: inherit, drop
/// secrets (unless told not to), exclude, set, include only — in that
/// order. Set by the operator; a request cannot change it.
#[derive(Debug, Args)]
struct EnvArgs {
    /// Which of the tool-runner's own variables commands inherit: all,
    /// core (HOME, LOGNAME, PATH, SHELL, USER, USERNAME, TMPDIR, TEMP, TMP)
    /// or none.
    #[arg(long, env = "KEEL_ENV_INHERIT", default_value = "all")]
    env_inherit: EnvInherit,
    /// Also pass variables named like secrets (*KEY*, *SECRET*, *TOKEN*,
    /// *PASSWORD*, case-insensitive), which are dropped by default. The
    /// variable takes 1/0, true/false, yes/no, on/off.
    #[arg(
        long,
        env = "KEEL_ENV_IGNORE_DEFAULT_EXCLUDES",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    env_ignore_default_excludes: bool,
    /// Drop variables whose name matches this glob (case-insensitive, `*`
    /// and `?`); repeatable, or comma-separated.
    #[arg(
        long = "env-exclude",
        env = "KEEL_ENV_EXCLUDE",
        value_name = "PATTERN",
        value_delimiter = ','
    )]
    env_exclude: Vec<String>,
    /// Set this variable for every command; repeatable. (No environment
    /// variable: values may hold any character.)
    #[arg(long = "env-set", value_name = "NAME=VALUE")]
    env_set: Vec<String>,
    /// Keep only variables whose name matches one of these globs, after
    /// the steps above; repeatable, or comma-separated.
    #[arg(
        long = "env-include-only",
        env = "KEEL_ENV_INCLUDE_ONLY",
        value_name = "PATTERN",
        value_delimiter = ','
    )]
    env_include_only: Vec<String>,
}

impl EnvArgs {
    fn policy(&self) -> anyhow::Result<EnvPolicy> {
        let patterns = |list: &[String]| {
            list.iter()
                .map(|p| EnvPattern::new(p))
                .collect::<Result<Vec<_>, _>>()
        };
        let mut policy = EnvPolicy {
            inherit: self.env_inherit,
            ignore_default_excludes: self.env_ignore_default_excludes,
            exclude: patterns(&self.env_exclude)?,
            set: Vec::new(),
            include_only: patterns(&self.env_include_only)?,
        };
        for assignment in &self.env_set {
            policy.push_set(assignment)?;
        }
        Ok(policy)
    }
}

#[derive(Debug, Args)]
struct SandboxArgs {
    /// The sandbox of calls that set none: read-only, workspace-write or
    /// danger-full-access.
    #[arg(long, env = "KEEL_DEFAULT_SANDBOX", default_value = "workspace-write")]
    default_sandbox: SandboxMode,
    /// INSECURE: run restricted calls with whatever this host can enforce
    /// instead of refusing those it cannot fully confine (the default
    /// refuses them: RunTool answers `sandbox_unavailable`). The variable
    /// takes 1/0, true/false, yes/no, on/off.
    #[arg(
        long,
        env = "KEEL_INSECURE_PARTIAL_SANDBOX",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    insecure_partial_sandbox: bool,
    /// Formerly made enforcement required; it is now the default, and the
    /// flag is accepted and ignored.
    #[arg(
        long,
        env = "KEEL_REQUIRE_SANDBOX",
        hide = true,
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    require_sandbox: bool,
    /// A directory or file sandboxed commands and file tools can neither
    /// read nor write (an empty read-only one is mounted in its place);
    /// repeatable. Added to the tool-runner's state directory, a `file://`
    /// blob store's directory and Codex's home, which are always hidden.
    /// Paths that do not exist are skipped.
    #[arg(
        long = "hide-path",
        env = "KEEL_HIDE_PATHS",
        value_name = "PATH",
        value_delimiter = ':'
    )]
    hide_paths: Vec<PathBuf>,
}

/// How often idle processes are looked for.
const REAP_EVERY: Duration = Duration::from_secs(60);

/// How often the journal is pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// At shutdown, how long calls that nobody waits for may take to finish and
/// record their results.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// The longest a session's repository may take to clone.
const CLONE_TIMEOUT: Duration = Duration::from_secs(600);
/// The state directory's name next to a `file://` blob store.
const STATE_DIR_NAME: &str = "tool-runner-state";

#[derive(Debug, Args)]
struct WorkspaceArgs {
    /// A directory whose subtree tools may touch; repeatable. Without any,
    /// only the default cwd and its subtree.
    #[arg(
        long = "workspace-root",
        env = "KEEL_WORKSPACE_ROOTS",
        value_delimiter = ':'
    )]
    workspace_roots: Vec<PathBuf>,
    /// Let tools touch any directory this process can reach. The variable
    /// takes 1/0, true/false, yes/no, on/off.
    #[arg(
        long,
        env = "KEEL_ALLOW_ANY_WORKSPACE",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    allow_any_workspace: bool,
}

impl WorkspaceArgs {
    /// The allowed roots; relative ones are taken from `cwd`.
    fn workspace(&self, cwd: &Path, default_root: &Path) -> anyhow::Result<Workspace> {
        if self.allow_any_workspace {
            return Ok(Workspace::any());
        }
        let roots: Vec<PathBuf> = if self.workspace_roots.is_empty() {
            vec![default_root.to_path_buf()]
        } else {
            self.workspace_roots
                .iter()
                .map(|root| cwd.join(root))
                .collect()
        };
        Ok(Workspace::restricted(&roots)?)
    }
}

fn main() -> anyhow::Result<ExitCode> {
    // Before anything else, and before any thread exists: the helper enters
    // namespaces and installs seccomp, which need a single thread.
    if let Some(code) = sandbox::helper::dispatch::<sandbox::job::Job>() {
        return Ok(code);
    }
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
    runtime.block_on(serve(cli.serve))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(mut args: ServeOptions) -> anyhow::Result<()> {
    let _telemetry = keel_server::telemetry::init("keel-tool-runner", args.serve.log_format)?;
    let server_metrics = args.metrics.start().await?;
    args.serve.metrics = Some(server_metrics.clone());
    keel_server::protect_process();
    let tls = args.tls.server("the tool-runner")?;
    let exec_idle_timeout_secs = args.exec_idle_timeout_secs;
    let blob_url = args.blob_url;
    let blobs = BlobStore::open(&blob_url)?.with_metrics(server_metrics.registry())?;
    let env_policy = args.env.policy()?;
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    // A relative --default-cwd is taken from where the tool-runner started, so
    // every command gets an absolute workdir.
    let default_cwd = args
        .default_cwd
        .map_or_else(|| cwd.clone(), |dir| cwd.join(dir));
    let default_cwd = std::fs::canonicalize(&default_cwd)
        .with_context(|| format!("--default-cwd {} cannot be used", default_cwd.display()))?;
    let workspace = args.workspace.workspace(&cwd, &default_cwd)?;
    tracing::info!(
        default_cwd = %default_cwd.display(),
        allow_any_workspace = workspace.allows_any(),
        workspace_roots = ?workspace.roots(),
        "tool-runner configured"
    );

    let clone_root = args.clone_root.map(|dir| cwd.join(dir));
    if args.allow_local_git {
        tracing::warn!(
            "--allow-local-git: sessions may clone file:// repositories, any this runner can read"
        );
    }
    let state_dir = match args.state_dir {
        Some(dir) => cwd.join(dir),
        None => default_state_dir(&blob_url)?,
    };
    let _lock = lock_state_dir(&state_dir)?;
    let runner_id = fleet::runner_id(&state_dir, args.runner_id.as_deref())
        .with_context(|| format!("cannot keep the runner id in {}", state_dir.display()))?;
    tracing::info!(
        runner_id = %runner_id,
        max_concurrent_commands = args.max_concurrent_commands,
        "tool-runner identity"
    );
    let journal = Journal::open(&state_dir)?;
    // Holding the lock, before any command starts: what a previous
    // tool-runner on this directory left running is killed now.
    let records = ProcessRecords::new(journal.dir());
    match records.reap_orphans() {
        Ok(report) if report.killed > 0 => tracing::warn!(
            killed = report.killed,
            "killed commands a previous tool-runner left running; their calls report the loss"
        ),
        Ok(_) => {}
        Err(err) => {
            tracing::warn!(error = %err, "cannot look for commands a previous tool-runner left running");
        }
    }
    let journal_retention = Duration::from_secs(args.journal_retention_hours * 3600);
    tracing::info!(
        state_dir = %state_dir.display(),
        journal_retention_hours = args.journal_retention_hours,
        "tool-call journal opened"
    );

    // No command needs to dump core, and a core file could hold what the
    // command read; children inherit the limit.
    if let Err(err) = setrlimit(Resource::RLIMIT_CORE, 0, 0) {
        tracing::warn!(error = %err, "cannot disable core dumps");
    }
    tracing::info!(
        inherit = %env_policy.inherit,
        ignore_default_excludes = env_policy.ignore_default_excludes,
        exclude = ?env_policy.exclude.iter().map(EnvPattern::as_str).collect::<Vec<_>>(),
        // Names only: a value may be a credential the operator passes on.
        set = ?env_policy.set.iter().map(|(name, _)| name).collect::<Vec<_>>(),
        include_only = ?env_policy.include_only.iter().map(EnvPattern::as_str).collect::<Vec<_>>(),
        "command environment policy"
    );
    let limits = args.limits.limits();
    log_limits(&limits);
    let hidden = hidden_paths(&args.sandbox, &cwd, &state_dir, &blob_url);
    let (executor, sandbox) = sandbox_settings(&args.sandbox, &env_policy, hidden)?;
    if let Err(why) = sandbox.check_cwd(&default_cwd) {
        tracing::warn!("--default-cwd cannot be used by calls: {why}");
    }
    let executor = executor
        .with_process_records(records)
        .with_resource_limits(limits);
    let clones = CloneSettings {
        root: clone_root,
        allow_local: args.allow_local_git,
        timeout: CLONE_TIMEOUT,
    };
    let partial = clones.remove_partial_clones();
    if partial > 0 {
        tracing::info!(removed = partial, "removed clones left unfinished");
    }
    let runner = ToolRunner::new(ToolRunnerConfig {
        executor,
        sandbox,
        blobs,
        default_cwd,
        workspace,
        journal,
        journal_retention,
        fleet: std::sync::Arc::new(Fleet::new(runner_id, args.max_concurrent_commands)),
        clones,
        metrics: keel_tool_runner::metrics::ToolMetrics::in_registry(server_metrics.registry())?,
    });
    let idle = Duration::from_secs(exec_idle_timeout_secs);
    let reaping = (idle > Duration::ZERO).then(|| {
        let reaper = runner.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(REAP_EVERY);
            loop {
                every.tick().await;
                reaper.reap_idle_processes(idle);
            }
        })
    });
    let pruner = runner.clone();
    let pruning = tokio::spawn(async move {
        // The first tick is immediate: pruning at startup.
        let mut every = tokio::time::interval(PRUNE_EVERY);
        loop {
            every.tick().await;
            match pruner.prune_journal().await {
                Ok(0) => {}
                Ok(removed) => tracing::info!(removed, "pruned the tool-call journal"),
                Err(err) => tracing::warn!(error = %err, "cannot prune the tool-call journal"),
            }
        }
    });
    // The largest request is a patch or a command the model wrote: far below
    // this.
    // A command may run for up to 50 minutes (its timeout_ms cap) inside
    // the worker's one-hour bound on a tool call; the deadline is just past
    // that bound.
    let routes = Routes::new(keel_server::Deadline::new(
        ToolServiceServer::new(runner.clone()).max_decoding_message_size(16 * 1024 * 1024),
        args.serve
            .request_timeout(std::time::Duration::from_secs(3660)),
    ));
    let drain_timeout = Duration::from_secs(args.drain_timeout_secs);
    let draining = runner.clone();
    let drained = std::sync::Arc::new(tokio::sync::Notify::new());
    let drained_tx = drained.clone();
    let until = async move {
        keel_server::shutdown_signal().await;
        draining.fleet().start_draining();
        let running = draining.running_calls();
        tracing::info!(
            running_calls = running,
            timeout_secs = drain_timeout.as_secs(),
            "shutdown signal received: draining (no new leases or calls; running calls finish)"
        );
        let left = draining.finish_running_calls(drain_timeout).await;
        tracing::info!(left, "drained; stopping");
        drained_tx.notify_one();
    };
    let serve = keel_server::serve_until(&args.serve, routes, &[SERVICE_NAME], tls, until);
    tokio::pin!(serve);
    // The server's own shutdown waits for calls in flight; after the drain
    // the runner does not wait for them any more.
    let served = tokio::select! {
        served = &mut serve => served,
        () = async {
            drained.notified().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::warn!("calls still in flight after the drain are cut off");
            Ok(())
        }
    };
    pruning.abort();
    if let Some(reaping) = reaping {
        reaping.abort();
    }
    let left = runner.finish_running_calls(SHUTDOWN_GRACE).await;
    if left > 0 {
        tracing::warn!(
            calls = left,
            "tool calls still running at exit are killed; a retry will report them as cut by a restart"
        );
    }
    served?;
    Ok(())
}

/// Logs the commands' resource limits, and warns about those the
/// tool-runner's own hard limits keep lower (commands inherit those).
fn log_limits(limits: &ResourceLimits) {
    tracing::info!(limits = %limits, "command resource limits (core=0 always)");
    for lowered in limits.lowered_by_current_limits() {
        tracing::warn!(
            resource = lowered.resource,
            configured = lowered.configured,
            effective = lowered.effective,
            "a command resource limit is above the tool-runner's own hard limit; commands get the lower one"
        );
    }
}

/// What sandboxed commands and file tools cannot see: the tool-runner's
/// state directory (journal, process records), a `file://` blob store's
/// directory, Codex's home (`$CODEX_HOME`, else `$HOME/.codex`: auth.json,
/// config.toml) and the operator's `--hide-path`s, absolute.
fn hidden_paths(args: &SandboxArgs, cwd: &Path, state_dir: &Path, blob_url: &str) -> Vec<PathBuf> {
    let mut paths = vec![state_dir.to_path_buf()];
    paths.extend(file_blob_dir(blob_url));
    let codex_home = std::env::var_os("CODEX_HOME")
        .filter(|home| !home.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".codex")));
    if let Some(home) = &codex_home {
        ensure_hidden_dir(home);
    }
    paths.extend(codex_home);
    paths.extend(args.hide_paths.iter().cloned());
    let mut out: Vec<PathBuf> = Vec::new();
    for path in paths {
        let path = cwd.join(path);
        // Canonical where it exists already; checked again at each call.
        let path = std::fs::canonicalize(&path).unwrap_or(path);
        if !out.contains(&path) {
            out.push(path);
        }
    }
    out
}

/// Creates Codex's home, empty and private, when it does not exist: a
/// hidden path is masked only where something exists to mask, and a
/// sandboxed command working in the home directory could otherwise create
/// `~/.codex/config.toml` — which the model-proxy reads, base URL and all.
fn ensure_hidden_dir(dir: &Path) {
    use std::os::unix::fs::DirBuilderExt as _;
    if std::fs::symlink_metadata(dir).is_ok() {
        return;
    }
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => tracing::info!(
            path = %dir.display(),
            "created Codex's home (empty) so that sandboxed commands cannot create it"
        ),
        Err(err) => tracing::warn!(
            path = %dir.display(),
            error = %err,
            "cannot create Codex's home: a sandboxed command working above it could create it and plant a configuration"
        ),
    }
}

/// The executor with this binary as its sandbox helper, and the sandbox
/// settings with what the host enforces (probed and logged now).
fn sandbox_settings(
    args: &SandboxArgs,
    env_policy: &EnvPolicy,
    hidden_paths: Vec<PathBuf>,
) -> anyhow::Result<(Executor, SandboxSettings)> {
    let helper = std::env::current_exe().context("cannot find the tool-runner's own binary")?;
    let status = SandboxStatus::probe(&helper, &std::env::temp_dir());
    if args.require_sandbox {
        tracing::info!(
            "--require-sandbox (KEEL_REQUIRE_SANDBOX) is the default now and has no effect"
        );
    }
    let hidden = hidden_paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>();
    if status.complete() {
        tracing::info!(mechanism = %status.mechanism, default_sandbox = %args.default_sandbox, hidden_paths = ?hidden, "sandbox enforced");
    } else if args.insecure_partial_sandbox {
        tracing::warn!(
            mechanism = %status.mechanism,
            not_enforced = %status.detail(),
            default_sandbox = %args.default_sandbox,
            "INSECURE: --insecure-partial-sandbox: restricted calls run although this host does not enforce everything their sandbox promises; not enforced: {}",
            status.detail()
        );
    } else {
        tracing::warn!(mechanism = %status.mechanism, detail = %status.detail(), default_sandbox = %args.default_sandbox, "sandbox incomplete: restricted calls this host cannot fully confine are refused (sandbox_unavailable); --insecure-partial-sandbox runs them anyway");
    }
    let executor =
        Executor::with_env_policy(std::env::vars_os(), env_policy).with_sandbox_helper(helper);
    let settings = SandboxSettings {
        default_policy: SandboxPolicy::new(args.default_sandbox),
        allow_partial: args.insecure_partial_sandbox,
        hidden_paths,
        status,
    };
    Ok((executor, settings))
}

/// The directory of a `file://` blob store.
fn file_blob_dir(blob_url: &str) -> Option<PathBuf> {
    url::Url::parse(blob_url)
        .ok()
        .filter(|url| url.scheme() == "file")
        .and_then(|url| url.to_file_path().ok())
}

/// `tool-runner-state` next to a `file://` blob store's directory; for
/// another store, a new temporary directory.
fn default_state_dir(blob_url: &str) -> anyhow::Result<PathBuf> {
    let blob_dir = file_blob_dir(blob_url);
    if let Some(parent) = blob_dir.as_deref().and_then(Path::parent) {
        return Ok(parent.join(STATE_DIR_NAME));
    }
    let dir = std::env::temp_dir().join(format!(
        "keel-tool-runner-state-{}",
        uuid::Uuid::new_v4().simple()
    ));
    tracing::warn!(
        state_dir = %dir.display(),
        "no --state-dir and no file:// blob store: journaling tool calls in a temporary directory, which a restart does not find again; a call retried across a restart may run twice"
    );
    Ok(dir)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        let mut argv = vec!["keel-tool-runner", "--blob-url", "memory://"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv)
    }

    fn limits(args: &[&str]) -> ResourceLimits {
        parse(args).unwrap().serve.limits.limits()
    }

    #[test]
    fn no_limit_flags_mean_no_limits() {
        // Unless the environment running the tests sets KEEL_RLIMIT_*.
        if std::env::vars().any(|(name, _)| name.starts_with("KEEL_RLIMIT_")) {
            return;
        }
        assert!(limits(&[]).is_empty());
    }

    #[test]
    fn limit_flags_parse_into_limits() {
        let got = limits(&[
            "--rlimit-cpu-secs",
            "10",
            "--rlimit-as-mb",
            "2048",
            "--rlimit-nofile",
            "256",
            "--rlimit-nproc",
            "64",
            "--rlimit-fsize-mb",
            "1",
        ]);
        assert_eq!(
            got,
            ResourceLimits {
                cpu_secs: Some(10),
                address_space_bytes: Some(2048 * MIB),
                open_files: Some(256),
                processes: Some(64),
                file_size_bytes: Some(MIB),
            }
        );
        let one = limits(&["--rlimit-fsize-mb=5"]);
        assert_eq!(one.file_size_bytes, Some(5 * MIB));
        assert_eq!(one.cpu_secs, None);
    }

    #[test]
    fn bad_limit_values_are_refused() {
        for bad in [
            &["--rlimit-cpu-secs", "0"][..],
            &["--rlimit-cpu-secs", "-1"][..],
            &["--rlimit-cpu-secs", "ten"][..],
            &["--rlimit-as-mb", "0"][..],
            &["--rlimit-fsize-mb", "1.5"][..],
            &["--rlimit-nofile", "0"][..],
            &["--rlimit-nproc", ""][..],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
        // Large enough to overflow the byte count.
        let overflow = (MAX_MIB + 1).to_string();
        assert!(parse(&["--rlimit-as-mb", &overflow]).is_err());
        let largest = (MAX_MIB - 1).to_string();
        assert_eq!(
            limits(&["--rlimit-fsize-mb", &largest]).file_size_bytes,
            Some((MAX_MIB - 1) * MIB)
        );
    }
}
