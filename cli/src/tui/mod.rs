//! The interactive full-screen client of session-api: `keel` alone, `keel
//! tui [ID]` and `keel resume [ID] [--last]` (see docs/tui.md).
//!
//! Parts: [`model`] turns events into transcript cells, [`app`] turns keys
//! into actions, [`composer`] and [`picker`] are the input widgets — all
//! pure and unit-tested. [`view`] draws; [`net`] keeps the event stream
//! open across session-api restarts; this module runs the loop: terminal
//! events, stream events and RPC results in, actions carried out as RPCs.
//!
//! The terminal is restored on every way out: errors and returns through
//! [`Screen`]'s drop, panics through ratatui's panic hook, SIGTERM and
//! SIGHUP by ending the loop.

use std::io::{self, IsTerminal};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow};
use clap::Args;
use crossterm::event::{DisableBracketedPaste, EnableBracketedPaste, Event as TermEvent};
use crossterm::event::{EventStream, KeyEventKind};
use futures::StreamExt;
use keel_proto::v1::respond_request::Answer;
use keel_proto::v1::stream_events_response::Kind;
use keel_proto::v1::{
    CompactRequest, Event, ForkSessionRequest, GetSessionRequest, InterruptRequest,
    ListSessionsRequest, OverrideTurnContextRequest, RenameSessionRequest, Session,
    StreamEventsRequest, TurnContext,
};
use ratatui::DefaultTerminal;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::task::JoinHandle;

use crate::client::{SessionApi, Target};
use crate::config::{ConfigFlags, OssFlags};
use crate::run::{RunOptions, TurnInput, open_session, send_turn};
use crate::settings::TurnFlags;

mod app;
mod composer;
mod model;
mod net;
mod picker;
mod view;

use app::{Action, App, Link};
use model::{Tone, Transcript};
use net::NetEvent;

/// What `keel` prints, exiting 2, when it has no terminal to draw on.
pub(crate) const NO_TERMINAL: &str = "keel: the TUI needs a terminal; use `keel run PROMPT`";

/// Whether the TUI can run here: stdin and stdout are a terminal.
pub(crate) fn has_terminal() -> bool {
    io::stdout().is_terminal() && io::stdin().is_terminal()
}

/// How a new session is made (`keel`, `keel tui`, and `/new` later).
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct NewSessionFlags {
    /// Working directory for a new session's tools (default: the current
    /// directory).
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<PathBuf>,
    #[command(flatten)]
    pub settings: TurnFlags,
    #[command(flatten)]
    pub config: ConfigFlags,
    #[command(flatten)]
    pub oss: OssFlags,
}

/// `keel tui [ID]`.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct TuiArgs {
    /// A session to open (its history, then live). Default: a new
    /// session, created when the first message is sent.
    #[arg(value_name = "ID")]
    pub session: Option<String>,
    #[command(flatten)]
    pub new: NewSessionFlags,
}

/// `keel resume [ID] [--last]`.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct ResumeArgs {
    /// The session to open; without it (and --last), pick one.
    #[arg(value_name = "ID", conflicts_with = "last")]
    pub session: Option<String>,
    /// The newest session.
    #[arg(long)]
    pub last: bool,
    #[command(flatten)]
    pub new: NewSessionFlags,
}

/// Parses the command line; with no subcommand, as `keel tui`.
pub(crate) fn parse_or_tui<P: clap::Parser>() -> P {
    parse_from_or_tui(std::env::args_os().collect()).unwrap_or_else(|e| e.exit())
}

/// `args` parsed; with only global flags and no subcommand, as `... tui`.
fn parse_from_or_tui<P: clap::Parser>(args: Vec<std::ffi::OsString>) -> Result<P, clap::Error> {
    use clap::error::ErrorKind;
    match P::try_parse_from(&args) {
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::MissingSubcommand | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) =>
        {
            P::try_parse_from(args.into_iter().chain([std::ffi::OsString::from("tui")]))
        }
        parsed => parsed,
    }
}

/// What the first screen shows.
enum Start {
    New,
    Open(String),
    Newest,
    Pick,
}

pub(crate) async fn tui(target: Target, args: TuiArgs) -> Result<()> {
    let start = match args.session {
        Some(id) => Start::Open(id),
        None => Start::New,
    };
    run(target, start, args.new).await
}

pub(crate) async fn resume(target: Target, args: ResumeArgs) -> Result<()> {
    let start = match (args.session, args.last) {
        (Some(id), _) => Start::Open(id),
        (None, true) => Start::Newest,
        (None, false) => Start::Pick,
    };
    run(target, start, args.new).await
}

/// The settings of a new session, resolved as `keel run` resolves them.
fn new_session_options(flags: NewSessionFlags) -> Result<RunOptions> {
    let project = match &flags.cwd {
        Some(dir) => dir.clone(),
        None => std::env::current_dir().context("cannot read the current directory")?,
    };
    let parts =
        crate::config::for_new_session(&flags.config, &flags.settings, &flags.oss, Some(&project))?;
    Ok(RunOptions {
        parts: Some(parts),
        cwd: flags.cwd,
        settings: flags.settings,
        ..Default::default()
    })
}

fn copy(api: &SessionApi) -> SessionApi {
    SessionApi {
        client: api.client.clone(),
        target: api.target.clone(),
    }
}

async fn get_session(api: &SessionApi, id: &str) -> Result<Session> {
    api.client
        .clone()
        .get_session(GetSessionRequest {
            session_id: id.to_string(),
        })
        .await
        .map_err(|status| crate::respond::session_error(api, "GetSession", id, &status))?
        .into_inner()
        .session
        .ok_or_else(|| anyhow!("session-api returned no session {id}"))
}

/// Most events of a fork's parent shown before the fork's own.
const MAX_PRELUDE_EVENTS: usize = 100_000;

/// The parent's events a fork's history starts with: those up to the fork
/// point. `None` when they cannot be read (the parent deleted).
async fn fork_prelude(api: &SessionApi, session: &Session) -> Option<Vec<Event>> {
    let origin = session.forked_from.as_ref()?;
    let mut stream = api
        .client
        .clone()
        .stream_events(StreamEventsRequest {
            session_id: origin.session_id.clone(),
            after_offset: 0,
            follow: false,
            live_deltas: false,
            ..Default::default()
        })
        .await
        .ok()?
        .into_inner();
    let mut events = Vec::new();
    while let Ok(Some(response)) = stream.message().await {
        if let Some(Kind::Event(event)) = response.kind {
            if event.offset > origin.event_offset || events.len() >= MAX_PRELUDE_EVENTS {
                break;
            }
            events.push(event);
        }
    }
    Some(events)
}

async fn run(target: Target, start: Start, flags: NewSessionFlags) -> Result<()> {
    // Everything that may fail with a plain message fails before the
    // screen is taken.
    let new = new_session_options(flags)?;
    let api = SessionApi::connect(target).await?;
    let pick = matches!(start, Start::Pick);
    let first = match start {
        Start::New | Start::Pick => None,
        Start::Open(id) => Some(get_session(&api, &id).await?),
        Start::Newest => {
            let id = crate::sessions::newest(copy(&api)).await?;
            Some(get_session(&api, &id).await?)
        }
    };
    let mut screen = Screen::enter().context("cannot take over the terminal")?;
    let (net_tx, net_rx) = mpsc::unbounded_channel();
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let mut runner = Runner {
        api,
        app: App::default(),
        new,
        generation: 0,
        stream: None,
        net_tx,
        net_rx,
        done_tx,
        done_rx,
        creating: false,
        unsent: Vec::new(),
        tick: 0,
    };
    runner.app.transcript.status.approvals = approvals_of(&runner.new);
    if let Some(session) = first {
        let prelude = fork_prelude(&runner.api, &session).await;
        runner.show(session, false, prelude);
    } else {
        runner.app.note(
            Tone::Dim,
            "keel: type a message and press Enter to start a session (/help for commands)",
        );
        if pick {
            runner.act(Action::ListSessions);
            runner.app.picker = Some(picker::Picker::default());
        }
    }
    let result = runner.run(&mut screen.terminal).await;
    if let Some(stream) = runner.stream.take() {
        stream.abort();
    }
    drop(screen);
    result
}

/// The approval policy a new session starts with, for the status line.
fn approvals_of(options: &RunOptions) -> String {
    options
        .parts
        .as_ref()
        .and_then(|p| p.context.as_ref())
        .map(|c| c.approval_policy)
        .filter(|p| *p != 0)
        .map(crate::settings::policy_name)
        .unwrap_or_default()
}

/// The terminal in raw mode on the alternate screen, with bracketed
/// paste; restored when dropped.
struct Screen {
    terminal: DefaultTerminal,
}

impl Screen {
    fn enter() -> io::Result<Self> {
        let terminal = ratatui::try_init().inspect_err(|_| ratatui::restore())?;
        // Also turn bracketed paste off when panicking (ratatui's hook,
        // installed by try_init, restores the rest).
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let _ = crossterm::execute!(io::stdout(), DisableBracketedPaste);
            hook(info);
        }));
        if let Err(e) = crossterm::execute!(io::stdout(), EnableBracketedPaste) {
            ratatui::restore();
            return Err(e);
        }
        Ok(Screen { terminal })
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = crossterm::execute!(io::stdout(), DisableBracketedPaste);
        ratatui::restore();
    }
}

/// The result of an RPC run in the background.
enum Done {
    /// A session to show: opened (its history replayed), or created for
    /// the first message (`created`: what is on screen stays).
    Opened {
        session: Box<Session>,
        created: bool,
        /// For a fork: its parent's history (see [`fork_prelude`]).
        prelude: Option<Vec<Event>>,
    },
    CreateFailed(String),
    Sessions(Result<Vec<Session>, String>),
    SendFailed {
        turn_id: String,
        error: String,
    },
    Note(Tone, String),
    /// The open session has this name now.
    Renamed(String),
    /// Something was printed over the screen (the note of an amendment
    /// written to the rules file): draw it all again.
    Repaint,
}

struct Runner {
    api: SessionApi,
    app: App,
    /// How `/new` and the first message create a session.
    new: RunOptions,
    /// Tells the current stream's events from a replaced one's.
    generation: u64,
    stream: Option<JoinHandle<()>>,
    net_tx: UnboundedSender<(u64, NetEvent)>,
    net_rx: UnboundedReceiver<(u64, NetEvent)>,
    done_tx: UnboundedSender<Done>,
    done_rx: UnboundedReceiver<Done>,
    /// A CreateSession is under way.
    creating: bool,
    /// Messages waiting for the session being created: (text, turn id).
    unsent: Vec<(String, String)>,
    tick: usize,
}

impl Runner {
    async fn run(&mut self, terminal: &mut DefaultTerminal) -> Result<()> {
        let mut keys = EventStream::new();
        let mut ticker = tokio::time::interval(Duration::from_millis(200));
        let mut sigterm = signal(SignalKind::terminate()).context("cannot watch for SIGTERM")?;
        let mut sighup = signal(SignalKind::hangup()).context("cannot watch for SIGHUP")?;
        let mut dirty = true;
        loop {
            if dirty {
                let now = SystemTime::now();
                terminal
                    .draw(|frame| view::draw(frame, &self.app, now, self.tick))
                    .context("cannot draw on the terminal")?;
            }
            tokio::select! {
                event = keys.next() => match event {
                    Some(Ok(TermEvent::Key(key))) if key.kind != KeyEventKind::Release => {
                        for action in self.app.key(key) {
                            self.act(action);
                        }
                        dirty = true;
                    }
                    Some(Ok(TermEvent::Paste(text))) => {
                        self.app.paste(&text);
                        dirty = true;
                    }
                    Some(Ok(_)) => dirty = true,
                    Some(Err(e)) => return Err(e).context("cannot read the terminal"),
                    None => return Ok(()),
                },
                Some((generation, event)) = self.net_rx.recv() => {
                    self.net(generation, event);
                    // A replay comes in bursts: take what is there before
                    // drawing.
                    while let Ok((generation, event)) = self.net_rx.try_recv() {
                        self.net(generation, event);
                    }
                    dirty = true;
                }
                Some(done) = self.done_rx.recv() => {
                    if matches!(done, Done::Repaint) {
                        terminal.clear().context("cannot draw on the terminal")?;
                    }
                    self.done(done);
                    dirty = true;
                }
                _ = ticker.tick() => {
                    self.tick = self.tick.wrapping_add(1);
                    dirty = self.app.transcript.running.is_some()
                        || matches!(self.app.link, Link::Reconnecting { .. });
                }
                _ = sigterm.recv() => return Ok(()),
                _ = sighup.recv() => return Ok(()),
            }
            if self.app.quit {
                return Ok(());
            }
        }
    }

    /// Shows `session`: its events from the start, then live.
    fn show(&mut self, session: Session, created: bool, prelude: Option<Vec<Event>>) {
        let id = session.session_id.clone();
        if created {
            let status = model::Status::from_session(&session);
            let old = std::mem::replace(&mut self.app.transcript.status, status);
            // What the person chose before the session existed stays shown
            // until the session's settings arrive.
            let s = &mut self.app.transcript.status;
            if s.approvals.is_empty() {
                s.approvals = old.approvals;
            }
        } else {
            self.app.reset();
            self.app.transcript = Transcript::for_session(&session);
            if let Some(origin) = &session.forked_from {
                self.app.transcript.fork_prelude(origin, prelude.as_deref());
            }
        }
        self.app.session_id = Some(id.clone());
        self.app.link = Link::Live;
        if let Some(stream) = self.stream.take() {
            stream.abort();
        }
        self.generation += 1;
        self.stream = Some(net::follow(
            self.api.client.clone(),
            id,
            0,
            self.generation,
            self.net_tx.clone(),
        ));
    }

    fn net(&mut self, generation: u64, event: NetEvent) {
        if generation != self.generation {
            return;
        }
        match event {
            NetEvent::Response(response) => match response.kind {
                Some(Kind::Event(event))
                    if self.app.transcript.event(&event, SystemTime::now()) =>
                {
                    self.app.pending.retain(|(id, _)| *id != event.turn_id);
                }
                Some(Kind::Event(_)) => {}
                Some(Kind::Gap(gap)) => self.app.transcript.gap(&gap),
                Some(Kind::Delta(delta)) => self.app.transcript.delta(&delta),
                None => {}
            },
            NetEvent::Connected => self.app.link = Link::Live,
            NetEvent::Lost { attempt, why } => {
                self.app.link = Link::Reconnecting { attempt, why };
            }
            NetEvent::Ended => self.app.link = Link::Ended("session closed".to_string()),
            NetEvent::Failed(why) => {
                self.app
                    .note(Tone::Error, &format!("the event stream failed: {why}"));
                self.app.link = Link::Ended("not following".to_string());
            }
        }
    }

    fn done(&mut self, done: Done) {
        match done {
            Done::Opened {
                session,
                created,
                prelude,
            } => {
                self.show(*session, created, prelude);
                if created {
                    self.creating = false;
                    for (text, turn_id) in std::mem::take(&mut self.unsent) {
                        self.send(text, turn_id);
                    }
                }
            }
            Done::Renamed(name) => {
                self.app
                    .note(Tone::Dim, &format!("session renamed {name:?}"));
                self.app.transcript.status.name = name;
            }
            Done::CreateFailed(error) => {
                self.creating = false;
                self.app.pending.clear();
                self.unsent.clear();
                self.app.note(Tone::Error, &error);
            }
            Done::Sessions(result) => {
                if let Some(picker) = &mut self.app.picker {
                    match result {
                        Ok(sessions) => picker.loaded(sessions),
                        Err(e) => picker.error = Some(e),
                    }
                }
            }
            Done::SendFailed { turn_id, error } => {
                self.app.pending.retain(|(id, _)| *id != turn_id);
                self.app.note(Tone::Error, &error);
            }
            Done::Note(tone, text) => self.app.note(tone, &text),
            Done::Repaint => {}
        }
    }

    /// Runs `work` in the background; its result comes back as a [`Done`].
    fn spawn<F>(&self, work: F)
    where
        F: std::future::Future<Output = Option<Done>> + Send + 'static,
    {
        let tx = self.done_tx.clone();
        tokio::spawn(async move {
            if let Some(done) = work.await {
                let _ = tx.send(done);
            }
        });
    }

    fn send(&mut self, text: String, turn_id: String) {
        let Some(session_id) = self.app.session_id.clone() else {
            self.unsent.push((text, turn_id));
            if !self.creating {
                self.creating = true;
                self.create();
            }
            return;
        };
        let mut api = copy(&self.api);
        self.spawn(async move {
            let turn = TurnInput {
                text,
                images: Vec::new(),
                schema: String::new(),
            };
            match send_turn(&mut api, &session_id, turn, &turn_id, None).await {
                Ok(()) => None,
                Err(e) => Some(Done::SendFailed {
                    turn_id,
                    error: format!("{e:#}"),
                }),
            }
        });
    }

    /// Creates a session as `keel run` would, with the choices of `/model`
    /// and `/approvals` made before it existed.
    fn create(&mut self) {
        let mut options = self.new.clone();
        if let Some(chosen) = self.app.settings.to_context() {
            merge(&mut options, &chosen);
            if chosen.model.is_some() {
                options.settings.model = chosen.model;
            }
        }
        let mut api = copy(&self.api);
        self.spawn(async move {
            Some(match open_session(&mut api, &options).await {
                Ok(session) => Done::Opened {
                    session: Box::new(session),
                    created: true,
                    prelude: None,
                },
                Err(e) => Done::CreateFailed(format!("{e:#}")),
            })
        });
    }

    fn act(&mut self, action: Action) {
        let session_id = self.app.session_id.clone().unwrap_or_default();
        let api = copy(&self.api);
        match action {
            Action::Send { text, turn_id } => self.send(text, turn_id),
            Action::Interrupt if !session_id.is_empty() => self.spawn(async move {
                let request = InterruptRequest {
                    session_id,
                    ..Default::default()
                };
                match api.client.clone().interrupt(request).await {
                    Ok(_) => None,
                    Err(status) => Some(Done::Note(
                        Tone::Error,
                        format!("{:#}", api.error("Interrupt", &status)),
                    )),
                }
            }),
            Action::Respond { request_id, answer } => {
                let mut api = api;
                // `respond` notes on stderr where it wrote an amendment.
                let amendment = matches!(
                    &answer,
                    Answer::Decision(d) if !d.execpolicy_amendment.is_empty()
                );
                self.spawn(async move {
                    match crate::respond::respond(&mut api, &session_id, &request_id, None, answer)
                        .await
                    {
                        Ok(()) => amendment.then_some(Done::Repaint),
                        Err(e) => Some(Done::Note(Tone::Error, format!("{e:#}"))),
                    }
                });
            }
            Action::Compact if !session_id.is_empty() => self.spawn(async move {
                let request = CompactRequest { session_id };
                Some(match api.client.clone().compact(request).await {
                    Ok(_) => Done::Note(
                        Tone::Dim,
                        "compaction queued: it runs after the current turn".to_string(),
                    ),
                    Err(status) => {
                        Done::Note(Tone::Error, format!("{:#}", api.error("Compact", &status)))
                    }
                })
            }),
            Action::Override(context) if !session_id.is_empty() => self.spawn(async move {
                let request = OverrideTurnContextRequest {
                    session_id,
                    context: Some(context),
                };
                Some(
                    match api.client.clone().override_turn_context(request).await {
                        Ok(answer) => {
                            let context = answer.into_inner().context.unwrap_or_default();
                            Done::Note(Tone::Dim, settings_note(&context))
                        }
                        Err(status) => Done::Note(
                            Tone::Error,
                            format!("{:#}", api.error("OverrideTurnContext", &status)),
                        ),
                    },
                )
            }),
            Action::ListSessions => self.spawn(async move {
                let request = ListSessionsRequest {
                    page_size: picker::PAGE_SIZE,
                    ..Default::default()
                };
                Some(Done::Sessions(
                    match api.client.clone().list_sessions(request).await {
                        Ok(page) => Ok(page.into_inner().sessions),
                        Err(status) => Err(format!("{:#}", api.error("ListSessions", &status))),
                    },
                ))
            }),
            Action::Open(id) => self.spawn(async move {
                Some(match get_session(&api, &id).await {
                    Ok(session) => Done::Opened {
                        prelude: fork_prelude(&api, &session).await,
                        session: Box::new(session),
                        created: false,
                    },
                    Err(e) => Done::Note(Tone::Error, format!("{e:#}")),
                })
            }),
            Action::Rename(name) if !session_id.is_empty() => self.spawn(async move {
                let request = RenameSessionRequest {
                    session_id: session_id.clone(),
                    name: name.clone(),
                };
                Some(match api.client.clone().rename_session(request).await {
                    Ok(_) => Done::Renamed(name),
                    Err(status) => Done::Note(
                        Tone::Error,
                        format!("{:#}", api.error("RenameSession", &status)),
                    ),
                })
            }),
            Action::Fork if !session_id.is_empty() => self.spawn(async move {
                let request = ForkSessionRequest {
                    session_id,
                    ..Default::default()
                };
                let forked = api
                    .client
                    .clone()
                    .fork_session(request)
                    .await
                    .map(|r| r.into_inner().session);
                Some(match forked {
                    Ok(Some(session)) => Done::Opened {
                        prelude: fork_prelude(&api, &session).await,
                        session: Box::new(session),
                        created: false,
                    },
                    Ok(None) => Done::Note(Tone::Error, "ForkSession returned no session".into()),
                    Err(status) => Done::Note(
                        Tone::Error,
                        format!("{:#}", api.error("ForkSession", &status)),
                    ),
                })
            }),
            Action::Interrupt
            | Action::Compact
            | Action::Override(_)
            | Action::Rename(_)
            | Action::Fork
            | Action::Quit => {}
        }
    }
}

/// Puts the choices made with `/model` and `/approvals` into a new
/// session's starting settings.
fn merge(options: &mut RunOptions, chosen: &TurnContext) {
    let Some(parts) = options.parts.as_mut() else {
        return;
    };
    let context = parts.context.get_or_insert_with(TurnContext::default);
    if chosen.model.is_some() {
        context.model = chosen.model.clone();
    }
    if chosen.approval_policy != 0 {
        context.approval_policy = chosen.approval_policy;
    }
}

/// `settings: model m, approvals never, sandbox read-only`.
fn settings_note(context: &TurnContext) -> String {
    let mut parts = Vec::new();
    if let Some(model) = &context.model {
        parts.push(format!("model {model}"));
    }
    if context.approval_policy != 0 {
        parts.push(format!(
            "approvals {}",
            crate::settings::policy_name(context.approval_policy)
        ));
    }
    if let Some(sandbox) = &context.sandbox {
        parts.push(format!(
            "sandbox {}",
            crate::settings::sandbox_name(sandbox.mode)
        ));
    }
    format!("settings: {}", parts.join(", "))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::{Cli, Command};

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        parse_from_or_tui(args.iter().map(Into::into).collect())
    }

    #[test]
    fn no_command_is_the_tui() {
        assert!(matches!(parse(&["keel"]).unwrap().command, Command::Tui(_)));
        let cli = parse(&["keel", "--addr", "127.0.0.1:1"]).unwrap();
        assert_eq!(cli.global.addr.as_deref(), Some("127.0.0.1:1"));
        assert!(matches!(cli.command, Command::Tui(_)));
        let Command::Tui(args) = parse(&["keel", "tui", "abc", "--model", "m"])
            .unwrap()
            .command
        else {
            panic!("not tui");
        };
        assert_eq!(args.session.as_deref(), Some("abc"));
        assert_eq!(args.new.settings.model.as_deref(), Some("m"));
        // Mistakes stay mistakes.
        assert!(parse(&["keel", "frobnicate"]).is_err());
        assert!(parse(&["keel", "--model", "m"]).is_err());
    }

    #[test]
    fn resume_arguments() {
        let Command::Resume(args) = parse(&["keel", "resume", "--last"]).unwrap().command else {
            panic!("not resume");
        };
        assert!(args.last && args.session.is_none());
        let Command::Resume(args) = parse(&["keel", "resume", "abc"]).unwrap().command else {
            panic!("not resume");
        };
        assert_eq!(args.session.as_deref(), Some("abc"));
        assert!(parse(&["keel", "resume", "abc", "--last"]).is_err());
    }

    #[test]
    fn settings_notes_and_merges() {
        let context = TurnContext {
            model: Some("m2".to_string()),
            approval_policy: keel_proto::v1::ApprovalPolicy::Never as i32,
            ..Default::default()
        };
        assert_eq!(
            settings_note(&context),
            "settings: model m2, approvals never"
        );
        let mut options = RunOptions {
            parts: Some(crate::config::SessionParts::default()),
            ..Default::default()
        };
        merge(&mut options, &context);
        let merged = options.parts.unwrap().context.unwrap();
        assert_eq!(merged.model.as_deref(), Some("m2"));
        assert_eq!(merged.approval_policy, context.approval_policy);
    }
}
