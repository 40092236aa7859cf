//! `keel-tool-runner`: serves `keel.v1.ToolService`, running the agent's
//! tool calls on the session's workspace; `keel-tool-runner apply-patch`
//! applies a patch from stdin the way the `apply_patch` tool does.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use keel_blobstore::BlobStore;
use keel_proto::v1::tool_service_server::ToolServiceServer;
use keel_tool_runner::exec::Executor;
use keel_tool_runner::format::TruncationPolicy;
use keel_tool_runner::patch::{PatchResult, apply_patch};
use keel_tool_runner::tools::apply_patch::{Layout, patch_outcome};
use keel_tool_runner::workspace::Workspace;
use keel_tool_runner::{SERVICE_NAME, ToolRunner, ToolRunnerConfig};
use tonic::service::Routes;

#[derive(Debug, Parser)]
#[command(
    name = "keel-tool-runner",
    version,
    about = "Keel's tool-runner: runs the agent's commands",
    // `apply-patch` needs no blob store.
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeOptions,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply a patch read from stdin in the current directory, print what
    /// the model would get, and exit non-zero if it did not apply.
    ApplyPatch(ApplyPatchArgs),
}

#[derive(Debug, Args)]
struct ServeOptions {
    #[command(flatten)]
    serve: keel_server::ServeArgs,
    /// The blob store for tool output items: `file:///abs/dir` or `memory://`.
    #[arg(long, env = "KEEL_BLOB_URL", required = true)]
    blob_url: Option<String>,
    /// Working directory for calls whose request names none. Defaults to the
    /// tool-runner's own current directory.
    #[arg(long, env = "KEEL_DEFAULT_CWD")]
    default_cwd: Option<PathBuf>,
    #[command(flatten)]
    workspace: WorkspaceArgs,
}

#[derive(Debug, Args)]
struct ApplyPatchArgs {
    #[command(flatten)]
    workspace: WorkspaceArgs,
}

#[derive(Debug, Args)]
struct WorkspaceArgs {
    /// A directory whose subtree tools may touch; repeatable. Without any,
    /// only the default cwd (for apply-patch, the current directory) and its
    /// subtree.
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
    let cli = Cli::parse();
    match cli.command {
        Some(Command::ApplyPatch(args)) => apply_patch_command(&args),
        None => {
            let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
            runtime.block_on(serve(cli.serve))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn serve(args: ServeOptions) -> anyhow::Result<()> {
    keel_server::init_tracing(args.serve.log_format);
    let blob_url = args.blob_url.context("--blob-url is required")?;
    let blobs = BlobStore::open(&blob_url)?;
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

    let runner = ToolRunner::new(ToolRunnerConfig {
        executor: Executor::from_process_env(),
        blobs,
        default_cwd,
        workspace,
    });
    let routes = Routes::new(ToolServiceServer::new(runner));
    keel_server::serve(&args.serve, routes, &[SERVICE_NAME]).await?;
    Ok(())
}

/// The freeform apply_patch tool, from a shell: same parser, checks and
/// texts.
fn apply_patch_command(args: &ApplyPatchArgs) -> anyhow::Result<ExitCode> {
    let mut patch = String::new();
    std::io::stdin()
        .read_to_string(&mut patch)
        .context("cannot read the patch from stdin")?;
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let cwd = std::fs::canonicalize(&cwd).context("cannot resolve the current directory")?;
    let workspace = args.workspace.workspace(&cwd, &cwd)?;
    let start = Instant::now();
    let result = apply_patch(&patch, &cwd, &workspace);
    let applied = matches!(result, PatchResult::Applied { .. });
    let outcome = patch_outcome(
        result,
        start.elapsed(),
        Layout::Freeform,
        TruncationPolicy::default(),
    );
    print!("{}", outcome.text);
    if !outcome.text.ends_with('\n') {
        println!();
    }
    Ok(if applied && outcome.success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
