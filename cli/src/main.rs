//! `keel`: run a local Keel stack and drive coding-agent sessions.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

mod client;
mod policy;
mod render;
mod run;
mod sessions;
mod stack;
mod state;

use client::{SessionApi, resolve_target};
use stack::Stack;
use state::StateDir;

/// Run a local Keel stack and drive durable coding-agent sessions.
#[derive(Debug, Parser)]
#[command(name = "keel", version)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct Global {
    /// Where the local stack keeps its database, logs, pids and addresses.
    #[arg(long, global = true, env = "KEEL_STATE_DIR", value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// The session-api to talk to (host:port or http://host:port); default: the local stack's.
    #[arg(long, global = true, env = "KEEL_ADDR", value_name = "ADDR")]
    addr: Option<String>,
    /// The Temporal frontend (default 127.0.0.1:7233, or what `keel up` last used).
    #[arg(
        long,
        global = true,
        env = "TEMPORAL_ADDRESS",
        value_name = "HOST:PORT"
    )]
    temporal_address: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the local stack (a Temporal dev server if none answers, and Keel's services).
    Up {
        /// Seconds to wait for each component to become healthy.
        #[arg(long, default_value_t = 30, value_name = "SECS")]
        timeout: u64,
    },
    /// Stop what `keel up` started.
    Down,
    /// Show each component's address, pid and health.
    Status {
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Send a prompt to a new (or --session) session and show the turn.
    Run {
        /// Continue this session instead of creating one.
        #[arg(long, value_name = "ID")]
        session: Option<String>,
        /// Model for a new session (default: the model-proxy's).
        #[arg(long, value_name = "MODEL")]
        model: Option<String>,
        /// Working directory for a new session's tools (default: the current directory).
        #[arg(long, value_name = "DIR")]
        cwd: Option<PathBuf>,
        /// Print each event as one JSON object per line.
        #[arg(long)]
        json: bool,
        /// What to ask; "-" reads it from stdin.
        #[arg(required = true, value_name = "PROMPT")]
        prompt: Vec<String>,
    },
    /// List sessions, newest first.
    Sessions {
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Check commands against Keel's approval rules, offline.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Offline and synchronous: no state directory, runtime or stack needed.
    if let Command::Policy(command) = &cli.command {
        return policy::run(command);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            render::note(format_args!("keel: cannot start the async runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            render::note(format_args!("keel: {e:#}"));
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> Result<()> {
    let state = StateDir::resolve(cli.global.state_dir.as_deref())?;
    let stack = || Stack::new(state.clone(), cli.global.temporal_address.clone());
    let connect = || async {
        let target = resolve_target(cli.global.addr.as_deref(), &state)?;
        SessionApi::connect(target).await
    };
    match cli.command {
        Command::Up { timeout } => stack().up(Duration::from_secs(timeout.max(1))).await,
        Command::Down => stack().down().await,
        Command::Status { json } => {
            let statuses = stack().status().await;
            let text = if json {
                format!("{}\n", stack::status_json(&statuses))
            } else {
                stack::status_table(&statuses)
            };
            use std::io::Write;
            std::io::stdout()
                .write_all(text.as_bytes())
                .context("cannot write the output")
        }
        Command::Run {
            session,
            model,
            cwd,
            json,
            prompt,
        } => {
            let target = resolve_target(cli.global.addr.as_deref(), &state)?;
            let options = run::RunOptions {
                session,
                model,
                cwd,
                json,
                prompt,
            };
            run::run(target, options).await
        }
        Command::Sessions { json } => sessions::show(connect().await?, json).await,
        // Answered in `main` before the runtime starts.
        Command::Policy(_) => Ok(()),
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_arguments() {
        let cli = Cli::try_parse_from([
            "keel",
            "--state-dir",
            "/tmp/s",
            "run",
            "--session",
            "abc",
            "--json",
            "fix",
            "the bug",
        ])
        .unwrap();
        assert_eq!(cli.global.state_dir, Some(PathBuf::from("/tmp/s")));
        match cli.command {
            Command::Run {
                session,
                json,
                prompt,
                ..
            } => {
                assert_eq!(session.as_deref(), Some("abc"));
                assert!(json);
                assert_eq!(prompt, ["fix", "the bug"]);
            }
            other => panic!("parsed as {other:?}"),
        }
        assert!(Cli::try_parse_from(["keel", "run"]).is_err());
    }

    #[test]
    fn global_flags_go_anywhere() {
        let cli = Cli::try_parse_from([
            "keel",
            "status",
            "--json",
            "--addr",
            "127.0.0.1:1",
            "--temporal-address",
            "127.0.0.1:2",
        ])
        .unwrap();
        assert_eq!(cli.global.addr.as_deref(), Some("127.0.0.1:1"));
        assert_eq!(cli.global.temporal_address.as_deref(), Some("127.0.0.1:2"));
        assert!(matches!(cli.command, Command::Status { json: true }));
        let cli = Cli::try_parse_from(["keel", "up", "--timeout", "5"]).unwrap();
        assert!(matches!(cli.command, Command::Up { timeout: 5 }));
    }

    #[test]
    fn policy_check_arguments() {
        let parse =
            |args: &[&str]| Cli::try_parse_from(["keel", "policy", "check"].iter().chain(args));
        assert!(parse(&["--", "ls", "-la"]).is_ok());
        assert!(
            parse(&[
                "--approval-policy",
                "never",
                "--sandbox",
                "workspace-write",
                "--rules",
                "a",
                "--rules",
                "b",
                "--",
                "ls"
            ])
            .is_ok()
        );
        assert!(parse(&["ls"]).is_err(), "the command comes after --");
        assert!(parse(&["--"]).is_err(), "a command is required");
        assert!(parse(&["--approval-policy", "sometimes", "--", "ls"]).is_err());
        assert!(parse(&["--sandbox", "full", "--", "ls"]).is_err());
    }
}
