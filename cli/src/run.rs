//! `keel run`: send one user turn and show what the agent does until the turn
//! ends. The session lives on in the server; `--session` continues it.
//!
//! Requests of the turn (approvals, questions) are asked on the terminal
//! when stdin is one; otherwise `keel run` prints how to answer them with
//! `keel approve` / `deny` / `answer` and keeps following, since another
//! client may answer.
//!
//! At a terminal, a line typed while the turn runs (and nothing is asked)
//! steers it, as Enter does in Codex: the model sees it at its next call.
//! A line ended with Tab (Tab, then Enter) is queued as the next turn
//! instead, as Tab does in Codex; `keel run` then follows that turn too.

use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use keel_proto::v1::event::Msg;
use keel_proto::v1::stream_events_response::Kind;
use keel_proto::v1::{
    CreateSessionRequest, Event, GetSessionRequest, InterruptRequest, SendUserTurnRequest, Session,
    SessionStatus, SteerTurnRequest, StreamEventsRequest, StreamEventsResponse,
};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc::UnboundedReceiver;
use tonic::{Code, Status, Streaming};

use crate::ask::{self, Asker, Step};
use crate::client::{SessionApi, Target};
use crate::render::{HumanRenderer, JsonRenderer, Renderer, Style, abort_reason_name, note};
use crate::respond::{how_to_answer, respond};
use crate::settings::TurnFlags;

#[derive(Debug, Clone, Default)]
pub(crate) struct RunOptions {
    pub session: Option<String>,
    /// A new session's name.
    pub name: Option<String>,
    /// A new session's configuration (`None` with `--session`).
    pub parts: Option<crate::config::SessionParts>,
    pub cwd: Option<PathBuf>,
    /// A repository to clone for a new session instead of `cwd`.
    pub git: Option<keel_proto::v1::GitSource>,
    /// Image files sent with the prompt.
    pub images: Vec<PathBuf>,
    /// A JSON Schema file the turn's final answer must follow.
    pub output_schema: Option<PathBuf>,
    /// For a new session, its starting settings; with `--session`, this
    /// turn's.
    pub settings: TurnFlags,
    pub json: bool,
    /// The words of the prompt; a single "-" reads it from stdin.
    pub prompt: Vec<String>,
}

pub(crate) async fn run(target: Target, options: RunOptions) -> Result<()> {
    let from_stdin = options.prompt.len() == 1 && options.prompt[0] == "-";
    let prompt = read_prompt(&options.prompt)?;
    let images = read_images(&options.images)?;
    let schema = match &options.output_schema {
        Some(path) => read_schema(path)?,
        None => String::new(),
    };
    // Asking needs a person at a terminal, and a stdin the prompt did not use.
    let interactive = !from_stdin && io::stdin().is_terminal();
    let renderer = renderer(options.json);
    let mut api = SessionApi::connect(target).await?;
    let session = open_session(&mut api, &options).await?;
    let session_id = session.session_id.clone();
    note(format_args!("session: {session_id}"));
    // A new session got the settings when it was created; an existing one
    // gets them for this turn only.
    let context = match options.session {
        Some(_) => options.settings.to_context(),
        None => None,
    };
    // The turn id is chosen here, so a SendUserTurn retried after a lost
    // answer cannot start the turn twice (the session drops a repeated id).
    // The stream opens while the turn is sent: one round trip fewer before
    // the first event.
    let turn_id = uuid::Uuid::new_v4().to_string();
    let mut streams = api.client.clone();
    let (sent, stream) = tokio::join!(
        send_turn(
            &mut api,
            &session_id,
            TurnInput {
                text: prompt,
                images,
                schema,
            },
            &turn_id,
            context
        ),
        streams.stream_events(StreamEventsRequest {
            session_id: session_id.clone(),
            after_offset: session.last_event_offset,
            // Sub-agents from earlier turns: only what they do from now on.
            agent_offsets: session
                .agents
                .iter()
                .map(|a| keel_proto::v1::AgentOffset {
                    agent_id: a.agent_id.clone(),
                    after_offset: a.last_event_offset,
                })
                .collect(),
            follow: true,
            live_deltas: renderer.wants_deltas(),
            // Sub-agents' events too, each under a line naming its agent.
            all_agents: true,
            ..Default::default()
        }),
    );
    sent?;
    let stream = stream
        .map_err(|status| api.error("StreamEvents", &status))?
        .into_inner();
    if interactive {
        note(
            "(type to steer this turn with Enter; end a line with Tab, then Enter, to queue it as the next turn)",
        );
    }
    let watch = Watch {
        api,
        session_id,
        turn: Turn::new(turn_id),
        queued: std::collections::VecDeque::new(),
        failures: Vec::new(),
        renderer,
        asker: interactive.then(Asker::default),
        lines: interactive.then(ask::stdin_lines),
        prompt_open: false,
    };
    watch.follow(stream).await
}

/// Events as JSON lines, or for a person (coloured where a terminal shows
/// them and `NO_COLOR` is unset).
fn renderer(json: bool) -> Renderer<io::Stdout, io::Stderr> {
    let out = io::stdout();
    let err = io::stderr();
    if json {
        return Renderer::Json(JsonRenderer::new(out));
    }
    let color = std::env::var_os("NO_COLOR").is_none();
    let out_style = Style {
        color: color && out.is_terminal(),
    };
    let err_style = Style {
        color: color && err.is_terminal(),
    };
    Renderer::Human(HumanRenderer::new(out, out_style, err, err_style))
}

/// `keel attach`: follows a session — its events after `from` (0: from
/// the start), then live — without sending anything, until the session
/// closes or Ctrl-C detaches. At a terminal, its requests are asked as
/// `keel run` asks them, and a typed line steers the running turn.
pub(crate) async fn attach(
    target: Target,
    session_id: String,
    from: u64,
    json: bool,
) -> Result<()> {
    let interactive = io::stdin().is_terminal();
    let renderer = renderer(json);
    let api = SessionApi::connect(target).await?;
    let stream = api
        .client
        .clone()
        .stream_events(StreamEventsRequest {
            session_id: session_id.clone(),
            after_offset: from,
            follow: true,
            live_deltas: renderer.wants_deltas(),
            // Sub-agents' events too, each under a line naming its agent.
            all_agents: true,
            ..Default::default()
        })
        .await
        .map_err(|status| {
            crate::respond::session_error(&api, "StreamEvents", &session_id, &status)
        })?
        .into_inner();
    note(format_args!(
        "attached to {session_id} (Ctrl-C detaches; the session goes on)"
    ));
    let watch = Watch {
        api,
        session_id,
        turn: Turn::every(),
        queued: std::collections::VecDeque::new(),
        failures: Vec::new(),
        renderer,
        asker: interactive.then(Asker::default),
        lines: interactive.then(ask::stdin_lines),
        prompt_open: false,
    };
    watch.follow(stream).await
}

/// Joins the prompt's words; "-" alone means stdin.
fn read_prompt(words: &[String]) -> Result<String> {
    let prompt = if words.len() == 1 && words[0] == "-" {
        let mut text = String::new();
        io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the prompt from stdin")?;
        text
    } else {
        words.join(" ")
    };
    if prompt.trim().is_empty() {
        bail!("the prompt is empty: keel run \"what to do\"");
    }
    Ok(prompt)
}

/// The image files of `--image`, by their extension's type.
/// `--output-schema`: a JSON object, checked here so a mistake is named
/// with its file.
fn read_schema(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the output schema {}", path.display()))?;
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(serde_json::Value::Object(_)) => Ok(text),
        Ok(_) => bail!("the output schema {} is not a JSON object", path.display()),
        Err(e) => bail!(
            "the output schema {} is not valid JSON: {e}",
            path.display()
        ),
    }
}

fn read_images(paths: &[PathBuf]) -> Result<Vec<keel_proto::v1::InputImage>> {
    paths
        .iter()
        .map(|path| {
            let mime_type = image_type(path).ok_or_else(|| {
                anyhow!(
                    "--image {}: not a .png, .jpg, .jpeg, .gif or .webp file",
                    path.display()
                )
            })?;
            let data = std::fs::read(path)
                .with_context(|| format!("--image {}: cannot read it", path.display()))?;
            Ok(keel_proto::v1::InputImage {
                mime_type: mime_type.to_string(),
                data,
            })
        })
        .collect()
}

fn image_type(path: &Path) -> Option<&'static str> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    Some(match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        _ => return None,
    })
}

/// Sends the turn, again with the same id while session-api is unreachable
/// (a few times, briefly): the session ignores a turn id it has seen.
/// What a turn sends.
pub(crate) struct TurnInput {
    pub text: String,
    pub images: Vec<keel_proto::v1::InputImage>,
    /// The final-output JSON Schema; empty: none.
    pub schema: String,
}

pub(crate) async fn send_turn(
    api: &mut SessionApi,
    session_id: &str,
    turn: TurnInput,
    turn_id: &str,
    context: Option<keel_proto::v1::TurnContext>,
) -> Result<()> {
    let request = SendUserTurnRequest {
        session_id: session_id.to_string(),
        text: turn.text,
        turn_id: turn_id.to_string(),
        context,
        images: turn.images,
        final_output_json_schema: turn.schema,
    };
    let (result, _) = while_unavailable(|| {
        let (mut client, request) = (api.client.clone(), request.clone());
        async move { client.send_user_turn(request).await }
    })
    .await;
    let Err(status) = result else {
        return Ok(());
    };
    Err(match status.code() {
        Code::FailedPrecondition => anyhow!(
            "session {session_id} accepts no more turns: {} (start a new one without --session)",
            status.message()
        ),
        Code::InvalidArgument => anyhow!("the turn was refused: {}", status.message()),
        _ => api.error("SendUserTurn", &status),
    })
}

/// Calls `call` (the same request each time) again while session-api is
/// UNAVAILABLE, a few times, briefly. Returns the last result and how many
/// calls were made.
async fn while_unavailable<T, F, Fut>(mut call: F) -> (Result<T, Status>, u32)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Status>>,
{
    let mut delay = std::time::Duration::from_millis(200);
    let mut attempts = 1;
    loop {
        match call().await {
            Err(status) if status.code() == Code::Unavailable && attempts < 4 => {
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempts += 1;
            }
            result => return (result, attempts),
        }
    }
}

/// What woke the watch loop.
enum Happened {
    /// Boxed: a response is far bigger than the other variants.
    Stream(Box<Result<Option<StreamEventsResponse>, Status>>),
    Line(Option<String>),
    Interrupt,
}

/// Following our turn (and those queued from this terminal): their events,
/// the person's answers and messages, Ctrl-C.
struct Watch<O, E> {
    api: SessionApi,
    session_id: String,
    turn: Turn,
    /// Turns queued from this terminal, to follow after `turn`.
    queued: std::collections::VecDeque<String>,
    /// How the turns before `turn` failed.
    failures: Vec<String>,
    renderer: Renderer<O, E>,
    /// Present when requests are asked on the terminal.
    asker: Option<Asker>,
    lines: Option<UnboundedReceiver<String>>,
    /// A prompt is on stderr, waiting for its line.
    prompt_open: bool,
}

impl<O: Write, E: Write> Watch<O, E> {
    async fn follow(mut self, mut stream: Streaming<StreamEventsResponse>) -> Result<()> {
        let session_id = self.session_id.clone();
        let mut sigint = signal(SignalKind::interrupt()).context("cannot watch for Ctrl-C")?;
        let mut interrupted = false;
        loop {
            let turn_id = self.turn.id.clone();
            let happened = tokio::select! {
                message = stream.message() => Happened::Stream(Box::new(message)),
                line = next_line(&mut self.lines) => Happened::Line(line),
                _ = sigint.recv() => Happened::Interrupt,
            };
            match happened {
                Happened::Stream(message) => match *message {
                    Ok(Some(response)) => match response.kind {
                        Some(Kind::Event(event)) => {
                            let progress = self.event(event)?;
                            if let Progress::Failed(why) = &progress {
                                self.failures.push(why.clone());
                            }
                            if progress != Progress::Running {
                                match self.queued.pop_front() {
                                    Some(next) => {
                                        note(format_args!("following the queued turn {next}"));
                                        self.turn = Turn::new(next);
                                    }
                                    None => match self.failures.pop() {
                                        None => return Ok(()),
                                        Some(why) => bail!(why),
                                    },
                                }
                            }
                        }
                        Some(Kind::Gap(gap)) => {
                            self.renderer.gap(&gap).context("cannot write the output")?
                        }
                        Some(Kind::Delta(delta)) if delta.turn_id == turn_id => self
                            .renderer
                            .delta(&delta)
                            .context("cannot write the output")?,
                        Some(Kind::Delta(_)) | None => {}
                    },
                    Ok(None) if self.turn.every => bail!(
                        "the event stream of {session_id} ended (keel attach {session_id} follows it again)"
                    ),
                    Ok(None) => bail!(
                        "the event stream ended before turn {turn_id} finished \
                     (it may still be running: keel run --session {session_id} ...)"
                    ),
                    Err(status) => {
                        return Err(self.api.error("StreamEvents", &status));
                    }
                },
                Happened::Line(line) => self.line(line).await,
                Happened::Interrupt if self.turn.every => {
                    self.close_prompt();
                    note(format_args!(
                        "detached from {session_id}; the session goes on"
                    ));
                    return Ok(());
                }
                Happened::Interrupt => {
                    self.close_prompt();
                    if interrupted {
                        bail!(
                            "stopped watching; turn {turn_id} of session {session_id} may still be running"
                        );
                    }
                    interrupted = true;
                    note("interrupting the turn (Ctrl-C again to stop watching)");
                    let request = InterruptRequest {
                        session_id: session_id.clone(),
                        ..Default::default()
                    };
                    if let Err(status) = self.api.client.interrupt(request).await {
                        note(format_args!("{:#}", self.api.error("Interrupt", &status)));
                    }
                }
            }
        }
    }

    fn event(&mut self, event: Event) -> Result<Progress> {
        // A sub-agent's event is shown (its requests with how to answer
        // them), but the turn followed is the session's own.
        let sub_agent = !event.parent_agent_id.is_empty();
        if !sub_agent && !self.turn.concerns(&event) && !self.queued.contains(&event.turn_id) {
            return Ok(Progress::Running);
        }
        let Some(msg) = &event.msg else {
            return Ok(Progress::Running);
        };
        if !silent(msg) {
            self.close_prompt();
        }
        self.renderer
            .event(&event)
            .context("cannot write the output")?;
        let hint = how_to_answer(&self.session_id, msg);
        if sub_agent {
            if let Some(hint) = hint {
                note(hint);
            }
            self.open_prompt();
            return Ok(Progress::Running);
        }
        match (&mut self.asker, msg) {
            (Some(asker), Msg::RequestResolved(r)) => {
                asker.resolved(&r.call_id);
            }
            (Some(asker), msg) if ask::askable(msg) => {
                // Lines typed before anything was asked must not answer it
                // (nor be lost without a word).
                if !asker.asking()
                    && let Some(lines) = &mut self.lines
                {
                    while let Ok(line) = lines.try_recv() {
                        note(format_args!(
                            "not sent, a question came first: {}",
                            line.trim()
                        ));
                    }
                }
                asker.offer(msg);
            }
            _ => {
                if let Some(hint) = hint {
                    note(hint);
                }
            }
        }
        let progress = self.turn.observe(&event);
        if progress == Progress::Running {
            self.open_prompt();
        }
        Ok(progress)
    }

    async fn line(&mut self, line: Option<String>) {
        // The person's Enter ended the prompt's line.
        self.prompt_open = false;
        let Some(line) = line else {
            let asking = self.asker.as_ref().is_some_and(Asker::asking);
            self.asker = None;
            self.lines = None;
            if !asking {
                return;
            }
            note(format_args!(
                "stdin closed: answer the pending requests with keel approve / deny / answer \
                 (see keel pending {})",
                self.session_id
            ));
            return;
        };
        if !self.asker.as_ref().is_some_and(Asker::asking) {
            self.message(line).await;
            return;
        }
        let Some(step) = self.asker.as_mut().and_then(|a| a.input(&line)) else {
            return;
        };
        match step {
            Step::Prompt(prompt) => self.show_prompt(&prompt),
            Step::Answer {
                request_id, answer, ..
            } => {
                let sent =
                    respond(&mut self.api, &self.session_id, &request_id, None, answer).await;
                if let Err(e) = sent {
                    note(format_args!("keel: {e:#}"));
                }
                self.open_prompt();
            }
        }
    }

    /// A line typed while nothing is asked: steers the running turn, or
    /// — ended with Tab — is queued as a new turn.
    async fn message(&mut self, line: String) {
        let queue = line.ends_with('\t');
        let text = line.trim().to_string();
        if text.is_empty() {
            return;
        }
        if queue {
            let turn_id = uuid::Uuid::new_v4().to_string();
            let turn = TurnInput {
                text,
                images: Vec::new(),
                schema: String::new(),
            };
            match send_turn(&mut self.api, &self.session_id, turn, &turn_id, None).await {
                Ok(()) => {
                    note(format_args!("queued turn {turn_id}"));
                    self.queued.push_back(turn_id);
                }
                Err(e) => note(format_args!("keel: {e:#}")),
            }
            return;
        }
        let request = SteerTurnRequest {
            session_id: self.session_id.clone(),
            text,
            expected_turn_id: self.turn.id.clone(),
            // Our turn ended in the meantime: the message starts the next.
            queue_if_not_running: true,
        };
        match self.api.client.steer_turn(request).await {
            Ok(answer) => {
                let answer = answer.into_inner();
                if answer.queued {
                    note(format_args!(
                        "the turn had ended; queued turn {}",
                        answer.turn_id
                    ));
                    self.queued.push_back(answer.turn_id);
                } else {
                    note(format_args!("steered turn {}", answer.turn_id));
                }
            }
            Err(status) => note(format_args!("{:#}", self.api.error("SteerTurn", &status))),
        }
    }

    /// Shows the current request's prompt unless it is already shown.
    fn open_prompt(&mut self) {
        if self.prompt_open {
            return;
        }
        if let Some(prompt) = self.asker.as_ref().and_then(Asker::prompt) {
            self.show_prompt(&prompt);
        }
    }

    fn show_prompt(&mut self, prompt: &str) {
        let mut err = io::stderr().lock();
        let _ = err.write_all(prompt.as_bytes());
        let _ = err.flush();
        self.prompt_open = true;
    }

    /// Ends the prompt's line so other output does not run into it; the
    /// prompt is shown again afterwards.
    fn close_prompt(&mut self) {
        if self.prompt_open {
            let _ = writeln!(io::stderr().lock());
            self.prompt_open = false;
        }
    }
}

/// Events that print nothing for a person, so an open prompt stays as it is.
fn silent(msg: &Msg) -> bool {
    matches!(
        msg,
        Msg::TokenCount(_) | Msg::TurnStarted(_) | Msg::SessionConfigured(_) | Msg::UserMessage(_)
    )
}

async fn next_line(lines: &mut Option<UnboundedReceiver<String>>) -> Option<String> {
    match lines {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Creates a session, or fetches the one `--session` names.
pub(crate) async fn open_session(api: &mut SessionApi, options: &RunOptions) -> Result<Session> {
    let session = match &options.session {
        None => {
            let cwd = if options.git.is_some() {
                // The session works in its clone.
                String::new()
            } else {
                let cwd = match &options.cwd {
                    Some(dir) => dir.clone(),
                    None => std::env::current_dir().context("cannot read the current directory")?,
                };
                let cwd = std::path::absolute(&cwd)
                    .with_context(|| format!("cannot make {} absolute", cwd.display()))?;
                cwd.to_str()
                    .ok_or_else(|| anyhow!("the directory {} is not valid UTF-8", cwd.display()))?
                    .to_string()
            };
            // The id is chosen here, so a CreateSession retried after a lost
            // answer finds the session it made instead of making another.
            let parts = options.parts.clone().unwrap_or_default();
            let request = CreateSessionRequest {
                session_id: uuid::Uuid::new_v4().to_string(),
                model: options.settings.model.clone().unwrap_or_default(),
                cwd,
                developer_instructions: parts.developer_instructions,
                context: parts.context.or_else(|| options.settings.to_context()),
                git: options.git.clone(),
                features: Some(parts.features),
                project_doc: parts.project_doc,
                rules: parts.rules,
                config: parts.config,
                model_provider: parts.model_provider,
                base_instructions: parts.base_instructions,
                name: options.name.clone().unwrap_or_default(),
                agent_roles: parts.agent_roles,
                agent_limits: parts.agent_limits,
                crew: parts.crew,
                ..Default::default()
            };
            let call = || {
                let (mut client, request) = (api.client.clone(), request.clone());
                async move { client.create_session(request).await }
            };
            match while_unavailable(call).await {
                (Ok(response), _) => response.into_inner().session,
                // An earlier attempt made it before its answer was lost.
                (Err(status), attempts) if status.code() == Code::AlreadyExists && attempts > 1 => {
                    api.client
                        .get_session(GetSessionRequest {
                            session_id: request.session_id.clone(),
                        })
                        .await
                        .map_err(|status| api.error("GetSession", &status))?
                        .into_inner()
                        .session
                }
                (Err(status), _) => {
                    return Err(match status.code() {
                        Code::InvalidArgument => {
                            anyhow!("the session was refused: {}", status.message())
                        }
                        _ => api.error("CreateSession", &status),
                    });
                }
            }
        }
        Some(id) => {
            if options.cwd.is_some() {
                note("note: --cwd only applies to new sessions; ignored with --session");
            }
            let response = api
                .client
                .get_session(GetSessionRequest {
                    session_id: id.clone(),
                })
                .await
                .map_err(|status| match status.code() {
                    Code::NotFound => anyhow!(
                        "no session {id:?} at session-api {} (list them with `keel sessions`)",
                        api.target.display
                    ),
                    Code::InvalidArgument => {
                        anyhow!("invalid session id {id:?}: {}", status.message())
                    }
                    _ => api.error("GetSession", &status),
                })?;
            let session = response.into_inner().session;
            if let Some(s) = &session {
                if s.status == SessionStatus::Closed as i32 {
                    bail!("session {id} is closed; start a new one (omit --session)");
                }
                if s.status == SessionStatus::Failed as i32 {
                    bail!("session {id} has failed; start a new one (omit --session)");
                }
            }
            session
        }
    };
    session.ok_or_else(|| anyhow!("session-api at {} returned no session", api.target.display))
}

/// What the stream has told us about our turn so far.
struct Turn {
    /// Our turn; with `every`, the session's running (or last) turn.
    id: String,
    error: Option<String>,
    /// Every turn of the session (`keel attach`): the watch ends when the
    /// session closes, not with a turn.
    every: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum Progress {
    Running,
    Completed,
    Failed(String),
}

impl Turn {
    fn new(id: String) -> Self {
        Self {
            id,
            error: None,
            every: false,
        }
    }

    /// Every turn, until the session closes.
    fn every() -> Self {
        Self {
            id: String::new(),
            error: None,
            every: true,
        }
    }

    /// Our turn's events and session-level ones; not those of turns queued
    /// before ours.
    fn concerns(&self, event: &Event) -> bool {
        self.every || event.turn_id.is_empty() || event.turn_id == self.id
    }

    fn observe(&mut self, event: &Event) -> Progress {
        if self.every {
            return match &event.msg {
                Some(Msg::TurnStarted(_)) => {
                    self.id = event.turn_id.clone();
                    Progress::Running
                }
                Some(Msg::ShutdownComplete(_)) => Progress::Completed,
                _ => Progress::Running,
            };
        }
        let ours = event.turn_id == self.id;
        match &event.msg {
            Some(Msg::Error(e)) if ours => {
                self.error = Some(e.message.clone());
                Progress::Running
            }
            Some(Msg::TurnComplete(_)) if ours => match &self.error {
                None => Progress::Completed,
                Some(message) => Progress::Failed(format!("the turn failed: {message}")),
            },
            Some(Msg::TurnAborted(a)) if ours => Progress::Failed(format!(
                "the turn was aborted ({})",
                abort_reason_name(a.reason)
            )),
            Some(Msg::ShutdownComplete(_)) => {
                Progress::Failed("the session was closed before the turn finished".to_string())
            }
            _ => Progress::Running,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use keel_proto::v1::{ErrorEvent, ShutdownComplete, TurnAborted, TurnComplete, TurnStarted};

    use super::*;

    fn ev(offset: u64, turn: &str, msg: Msg) -> Event {
        Event {
            agent_id: String::new(),
            parent_agent_id: String::new(),
            offset,
            turn_id: turn.to_string(),
            time: None,
            msg: Some(msg),
        }
    }

    #[test]
    fn turn_outcomes() {
        let mut t = Turn::new("t2".to_string());
        let other = ev(1, "t1", Msg::TurnComplete(TurnComplete::default()));
        assert!(!t.concerns(&other));
        assert!(t.concerns(&ev(2, "", Msg::TurnStarted(TurnStarted {}))));
        assert_eq!(
            t.observe(&ev(3, "t2", Msg::TurnComplete(TurnComplete::default()))),
            Progress::Completed
        );

        let mut t = Turn::new("t2".to_string());
        let error = Msg::Error(ErrorEvent {
            message: "model unreachable".to_string(),
            codex_error_info: String::new(),
        });
        assert_eq!(t.observe(&ev(3, "t2", error)), Progress::Running);
        assert_eq!(
            t.observe(&ev(4, "t2", Msg::TurnComplete(TurnComplete::default()))),
            Progress::Failed("the turn failed: model unreachable".to_string())
        );

        let mut t = Turn::new("t2".to_string());
        assert_eq!(
            t.observe(&ev(3, "t2", Msg::TurnAborted(TurnAborted { reason: 1 }))),
            Progress::Failed("the turn was aborted (interrupted)".to_string())
        );
        assert_eq!(
            t.observe(&ev(4, "", Msg::ShutdownComplete(ShutdownComplete {}))),
            Progress::Failed("the session was closed before the turn finished".to_string())
        );
    }

    #[test]
    fn prompts() {
        assert_eq!(
            read_prompt(&["run".to_string(), "echo".to_string()]).unwrap(),
            "run echo"
        );
        assert!(read_prompt(&[]).is_err());
        assert!(read_prompt(&["  ".to_string()]).is_err());
    }
}

#[cfg(test)]
mod image_tests {
    use super::*;

    #[test]
    fn images_are_typed_by_their_extension() {
        assert_eq!(image_type(Path::new("a.PNG")), Some("image/png"));
        assert_eq!(image_type(Path::new("b.jpeg")), Some("image/jpeg"));
        assert_eq!(image_type(Path::new("c.webp")), Some("image/webp"));
        assert_eq!(image_type(Path::new("d.svg")), None);
        assert_eq!(image_type(Path::new("noext")), None);
        let err = read_images(&[PathBuf::from("x.bmp")]).unwrap_err();
        assert!(err.to_string().contains("not a .png"), "{err}");
    }
}
