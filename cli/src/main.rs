//! `keel`: run a local Keel stack and drive coding-agent sessions.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

mod agents_config;
mod ask;
mod client;
mod config;
mod control;
mod mcp;
mod policy;
mod render;
mod respond;
mod run;
mod sessions;
mod settings;
mod stack;
mod state;
mod tui;

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
    /// A file holding the bearer token for session-api. The KEEL_TOKEN
    /// environment variable wins over it; for the local stack the default
    /// is the token `keel up` made.
    #[arg(long, global = true, env = "KEEL_TOKEN_FILE", value_name = "FILE")]
    token_file: Option<PathBuf>,
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
        /// A directory sessions may work in (their `--cwd` and below);
        /// repeatable. Default: your home directory. Applies when the
        /// tool-runner starts (`keel down` first to change it).
        #[arg(
            long = "workspace-root",
            env = "KEEL_WORKSPACE_ROOTS",
            value_name = "DIR",
            value_delimiter = ':'
        )]
        workspace_roots: Vec<PathBuf>,
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
    ///
    /// The settings flags set a new session's settings, or, with --session,
    /// this turn's only (`keel override` changes them for good). Approval
    /// requests and questions are asked on the terminal when stdin is one.
    Run {
        /// Continue this session instead of creating one.
        #[arg(long, value_name = "ID")]
        session: Option<String>,
        /// A name for the new session (`keel sessions --search` finds it).
        #[arg(long, value_name = "NAME", conflicts_with = "session")]
        name: Option<String>,
        /// Working directory for a new session's tools (default: the current directory).
        #[arg(long, value_name = "DIR", conflicts_with = "git")]
        cwd: Option<PathBuf>,
        /// Work in a clone of this repository instead (https://; the
        /// tool-runner clones it, where its operator allows).
        #[arg(long, value_name = "URL")]
        git: Option<String>,
        /// The branch, tag or commit of --git to check out (default: the
        /// repository's default branch).
        #[arg(long = "ref", value_name = "REF", requires = "git")]
        git_ref: Option<String>,
        /// An image to send with the prompt (PNG, JPEG, GIF or WebP);
        /// repeatable.
        #[arg(long = "image", value_name = "FILE")]
        images: Vec<PathBuf>,
        /// A JSON Schema file the final answer must follow (as `codex exec
        /// --output-schema`).
        #[arg(long, value_name = "FILE")]
        output_schema: Option<PathBuf>,
        #[command(flatten)]
        settings: settings::TurnFlags,
        #[command(flatten)]
        config: config::ConfigFlags,
        #[command(flatten)]
        oss: config::OssFlags,
        /// Print each event as one JSON object per line.
        #[arg(long)]
        json: bool,
        /// Start the sub-agents of config.toml's `[crews.NAME]` with the
        /// new session's first turn (turns `features.multi_agent` on).
        #[arg(long, value_name = "NAME", conflicts_with = "session")]
        crew: Option<String>,
        /// What to ask; "-" reads it from stdin.
        #[arg(required = true, value_name = "PROMPT")]
        prompt: Vec<String>,
    },
    /// List sessions, newest first.
    Sessions(sessions::ListArgs),
    /// Name a session (an empty name clears it).
    Rename {
        #[arg(value_name = "ID")]
        session: String,
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Archive a session: `keel sessions` leaves it out unless asked
    /// (--archived, --all); it still takes turns.
    Archive {
        #[arg(value_name = "ID")]
        session: String,
    },
    /// Undo `keel archive`.
    Unarchive {
        #[arg(value_name = "ID")]
        session: String,
    },
    /// Delete a session for good: its workflow, history and blobs (asks
    /// first; --yes does not).
    Delete {
        #[arg(value_name = "ID")]
        session: String,
        /// Do not ask.
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Start a new session from another's conversation as one of its turns
    /// left it; prints the new session's id.
    Fork(sessions::ForkArgs),
    /// List a session's requests waiting for an answer.
    Pending(control::PendingArgs),
    /// Approve a pending command or patch.
    Approve(respond::ApproveArgs),
    /// Deny a pending command or patch.
    Deny(respond::DenyArgs),
    /// Answer a pending question of the agent.
    Answer(respond::AnswerArgs),
    /// Change a session's settings for the rest of the session and print them.
    Override(control::OverrideArgs),
    /// Add a message to a session's running turn: the model sees it at its
    /// next call and the turn goes on (Codex's steering).
    Steer(control::SteerArgs),
    /// Follow a session without sending anything: its events from the start
    /// (or after --from), then live, until it closes or Ctrl-C detaches.
    /// At a terminal, its requests are asked as `keel run` asks them.
    Attach {
        /// The session (see `keel sessions`).
        #[arg(required_unless_present = "last", conflicts_with = "last")]
        session: Option<String>,
        /// The newest session instead.
        #[arg(long)]
        last: bool,
        /// Show only events after this offset (0: everything kept).
        #[arg(long, value_name = "OFFSET", default_value_t = 0)]
        from: u64,
        /// Print each event as one JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Close a session: its running turn is interrupted, queued turns are
    /// dropped, and it accepts no more.
    Close { session: String },
    /// Abort a session's running turn, if any.
    Interrupt { session: String },
    /// Summarise a session's conversation so far and continue from the
    /// summary (runs after the current turn).
    Compact { session: String },
    /// A session's MCP servers and tools.
    #[command(subcommand)]
    Mcp(mcp::McpCommand),
    /// Check commands against Keel's approval rules, offline.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Your Codex configuration as a new session gets it (offline).
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Manage a session-api token file (offline).
    #[command(subcommand)]
    Token(TokenCommand),
    /// The interactive terminal UI (also `keel` with no command): a new
    /// session, created when the first message is sent, or session ID.
    Tui(tui::TuiArgs),
    /// Open a session in the terminal UI: ID, the newest (--last), or one
    /// picked from a list.
    Resume(tui::ResumeArgs),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print each setting a new session would start with and where it came
    /// from: `$CODEX_HOME/config.toml` (or `KEEL_CONFIG`), the profile, `-c`
    /// or a flag. Keys other services read, keys Keel does not support and
    /// unknown keys are listed after.
    Show {
        #[command(flatten)]
        config: config::ConfigFlags,
        #[command(flatten)]
        settings: settings::TurnFlags,
        #[command(flatten)]
        oss: config::OssFlags,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Add a new bearer token to a token file (created if missing, mode
    /// 0600) and print it. Only its SHA-256 is stored: this is the one time
    /// the token is shown. session-api picks it up within a second.
    Create {
        /// The token file session-api reads (--tokens-file).
        #[arg(long, value_name = "FILE")]
        tokens_file: PathBuf,
        /// Who the token speaks for (recorded on what it does).
        #[arg(long)]
        principal: String,
        /// Whose sessions the token reaches.
        #[arg(long)]
        tenant: String,
    },
}

fn token(command: &TokenCommand) -> ExitCode {
    match command {
        TokenCommand::Create {
            tokens_file,
            principal,
            tenant,
        } => match keel_auth::append_token(tokens_file, principal, tenant) {
            Ok(token) => {
                println!("{token}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                render::note(format_args!("keel: {e}"));
                ExitCode::FAILURE
            }
        },
    }
}

fn main() -> ExitCode {
    let cli: Cli = tui::parse_or_tui();
    if matches!(cli.command, Command::Tui(_) | Command::Resume(_)) && !tui::has_terminal() {
        render::note(tui::NO_TERMINAL);
        return ExitCode::from(2);
    }
    // Offline and synchronous: no state directory, runtime or stack needed.
    if let Command::Policy(command) = &cli.command {
        return policy::run(command);
    }
    if let Command::Token(command) = &cli.command {
        return token(command);
    }
    if let Command::Config(ConfigCommand::Show {
        config,
        settings,
        oss,
        json,
    }) = &cli.command
    {
        return config::show(config, settings, oss, *json);
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
        let target = resolve_target(
            cli.global.addr.as_deref(),
            cli.global.token_file.as_deref(),
            &state,
        )?;
        SessionApi::connect(target).await
    };
    match cli.command {
        Command::Up {
            timeout,
            workspace_roots,
        } => {
            let cwd = std::env::current_dir().context("cannot read the current directory")?;
            let roots = workspace_roots.iter().map(|root| cwd.join(root)).collect();
            stack()
                .with_workspace_roots(roots)
                .up(Duration::from_secs(timeout.max(1)))
                .await
        }
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
            name,
            cwd,
            git,
            git_ref,
            images,
            output_schema,
            settings,
            config,
            oss,
            json,
            crew,
            prompt,
        } => {
            let target = resolve_target(
                cli.global.addr.as_deref(),
                cli.global.token_file.as_deref(),
                &state,
            )?;
            // A new session starts from the user's configuration; a turn of
            // an existing one only from its flags.
            let parts = match &session {
                Some(_) => None,
                None => {
                    let project = match (&git, &cwd) {
                        (Some(_), _) => None,
                        (None, Some(dir)) => Some(dir.clone()),
                        (None, None) => Some(
                            std::env::current_dir().context("cannot read the current directory")?,
                        ),
                    };
                    let mut parts =
                        config::for_new_session(&config, &settings, &oss, project.as_deref())?;
                    if let Some(name) = &crew {
                        parts.select_crew(name)?;
                    }
                    Some(parts)
                }
            };
            let options = run::RunOptions {
                session,
                name,
                parts,
                cwd,
                git: git.map(|url| keel_proto::v1::GitSource {
                    url,
                    r#ref: git_ref.unwrap_or_default(),
                }),
                images,
                output_schema,
                settings,
                json,
                prompt,
            };
            run::run(target, options).await
        }
        Command::Sessions(args) => sessions::show(connect().await?, args).await,
        Command::Rename { session, name } => {
            sessions::rename(connect().await?, session, name).await
        }
        Command::Archive { session } => sessions::archive(connect().await?, session, true).await,
        Command::Unarchive { session } => sessions::archive(connect().await?, session, false).await,
        Command::Delete { session, yes } => sessions::delete(connect().await?, session, yes).await,
        Command::Fork(args) => sessions::fork(connect().await?, args).await,
        Command::Pending(args) => control::pending(connect().await?, args).await,
        Command::Approve(args) => respond::approve(connect().await?, args).await,
        Command::Deny(args) => respond::deny(connect().await?, args).await,
        Command::Answer(args) => respond::answer(connect().await?, args).await,
        Command::Mcp(command) => mcp::run(connect().await?, command).await,
        Command::Override(args) => control::override_context(connect().await?, args).await,
        Command::Steer(args) => control::steer(connect().await?, args).await,
        Command::Interrupt { session } => control::interrupt(connect().await?, session).await,
        Command::Close { session } => control::close(connect().await?, session).await,
        Command::Attach {
            session,
            last,
            from,
            json,
        } => {
            let session = match (session, last) {
                (Some(id), _) => id,
                (None, _) => sessions::newest(connect().await?).await?,
            };
            let target = resolve_target(
                cli.global.addr.as_deref(),
                cli.global.token_file.as_deref(),
                &state,
            )?;
            run::attach(target, session, from, json).await
        }
        Command::Compact { session } => control::compact(connect().await?, session).await,
        Command::Tui(args) => {
            let target = resolve_target(
                cli.global.addr.as_deref(),
                cli.global.token_file.as_deref(),
                &state,
            )?;
            tui::tui(target, args).await
        }
        Command::Resume(args) => {
            let target = resolve_target(
                cli.global.addr.as_deref(),
                cli.global.token_file.as_deref(),
                &state,
            )?;
            tui::resume(target, args).await
        }
        // Answered in `main` before the runtime starts.
        Command::Policy(_) | Command::Token(_) | Command::Config(_) => Ok(()),
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
    fn steer_arguments() {
        let cli =
            Cli::try_parse_from(["keel", "steer", "abc", "also", "check", "x", "--queue"]).unwrap();
        match cli.command {
            Command::Steer(args) => {
                assert_eq!(args.session, "abc");
                assert_eq!(args.text, ["also", "check", "x"]);
                assert!(args.queue);
                assert_eq!(args.turn, None);
            }
            other => panic!("parsed as {other:?}"),
        }
        assert!(
            Cli::try_parse_from(["keel", "steer", "abc"]).is_err(),
            "text is required"
        );
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
    fn run_settings_flags() {
        let cli = Cli::try_parse_from([
            "keel",
            "run",
            "--approval-policy",
            "never",
            "--sandbox",
            "read-only",
            "--model",
            "m",
            "--effort",
            "low",
            "--summary",
            "auto",
            "--personality",
            "friendly",
            "go",
        ])
        .unwrap();
        let Command::Run { settings, .. } = cli.command else {
            panic!("not run");
        };
        let context = settings.to_context().unwrap();
        assert_eq!(context.model.as_deref(), Some("m"));
        assert_eq!(context.personality.as_deref(), Some("friendly"));
        assert!(Cli::try_parse_from(["keel", "run", "--sandbox", "none", "go"]).is_err());
    }

    #[test]
    fn request_commands() {
        let parse = |args: &[&str]| Cli::try_parse_from(std::iter::once(&"keel").chain(args));
        assert!(parse(&["approve", "s", "c1"]).is_ok());
        assert!(parse(&["approve", "s", "c1", "--for-session"]).is_ok());
        assert!(parse(&["approve", "s", "c1", "--amendment", "rm", "-rf"]).is_ok());
        assert!(
            parse(&["approve", "s", "c1", "--for-session", "--amendment", "rm"]).is_err(),
            "one kind of approval"
        );
        assert!(
            parse(&["approve", "s"]).is_err(),
            "the request id is required"
        );
        assert!(parse(&["deny", "s", "c1", "--abort"]).is_ok());
        assert!(parse(&["answer", "s", "q1", "--answer", "lang=Rust"]).is_ok());
        assert!(
            parse(&["answer", "s", "q1"]).is_err(),
            "an answer is required"
        );
        assert!(parse(&["answer", "s", "q1", "--answer", "Rust"]).is_err());
        assert!(parse(&["pending", "s", "--json"]).is_ok());
        assert!(parse(&["override", "s"]).is_ok());
        assert!(parse(&["override", "s", "--approval-policy", "untrusted", "--json"]).is_ok());
        assert!(parse(&["interrupt", "s"]).is_ok());
        assert!(parse(&["interrupt"]).is_err());
        assert!(parse(&["compact", "s"]).is_ok());
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
        assert!(matches!(cli.command, Command::Up { timeout: 5, .. }));
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
