//! `keel run`: send one user turn and show what the agent does until the turn
//! ends. The session lives on in the server; `--session` continues it.

use std::io::{self, IsTerminal, Read, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use keel_proto::v1::event::Msg;
use keel_proto::v1::stream_events_response::Kind;
use keel_proto::v1::{
    CreateSessionRequest, Event, GetSessionRequest, InterruptRequest, SendUserTurnRequest, Session,
    SessionStatus, StreamEventsRequest,
};
use tokio::signal::unix::{SignalKind, signal};
use tonic::Code;

use crate::client::{SessionApi, Target};
use crate::render::{HumanRenderer, JsonRenderer, Renderer, Style, abort_reason_name, note};

#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub session: Option<String>,
    pub model: Option<String>,
    pub cwd: Option<PathBuf>,
    pub json: bool,
    /// The words of the prompt; a single "-" reads it from stdin.
    pub prompt: Vec<String>,
}

pub async fn run(target: Target, options: RunOptions) -> Result<()> {
    let prompt = read_prompt(&options.prompt)?;
    let out = io::stdout();
    let err = io::stderr();
    let color = std::env::var_os("NO_COLOR").is_none();
    let renderer = if options.json {
        Renderer::Json(JsonRenderer::new(out))
    } else {
        let out_style = Style {
            color: color && out.is_terminal(),
        };
        let err_style = Style {
            color: color && err.is_terminal(),
        };
        Renderer::Human(HumanRenderer::new(out, out_style, err, err_style))
    };
    let api = SessionApi::connect(target).await?;
    run_turn(api, &options, prompt, renderer).await
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

/// The turn's life on the wire: open or create the session, queue the turn,
/// follow the event stream until the turn ends.
async fn run_turn<O: Write, E: Write>(
    mut api: SessionApi,
    options: &RunOptions,
    prompt: String,
    mut renderer: Renderer<O, E>,
) -> Result<()> {
    let session = open_session(&mut api, options).await?;
    let session_id = session.session_id.clone();
    note(format_args!("session: {session_id}"));

    let turn_id = api
        .client
        .send_user_turn(SendUserTurnRequest {
            session_id: session_id.clone(),
            text: prompt,
            turn_id: String::new(),
        })
        .await
        .map_err(|status| match status.code() {
            Code::FailedPrecondition => anyhow!(
                "session {session_id} accepts no more turns: {} (start a new one without --session)",
                status.message()
            ),
            _ => api.error("SendUserTurn", &status),
        })?
        .into_inner()
        .turn_id;
    if turn_id.is_empty() {
        bail!("session-api at {} returned no turn id", api.target.display);
    }

    let mut stream = api
        .client
        .stream_events(StreamEventsRequest {
            session_id: session_id.clone(),
            after_offset: session.last_event_offset,
            follow: true,
            live_deltas: renderer.wants_deltas(),
        })
        .await
        .map_err(|status| api.error("StreamEvents", &status))?
        .into_inner();

    let mut turn = Turn::new(turn_id.clone());
    let mut sigint = signal(SignalKind::interrupt()).context("cannot watch for Ctrl-C")?;
    let mut interrupted = false;
    loop {
        tokio::select! {
            message = stream.message() => {
                let response = match message {
                    Ok(Some(response)) => response,
                    Ok(None) => bail!(
                        "the event stream ended before turn {turn_id} finished \
                         (it may still be running: keel run --session {session_id} ...)"
                    ),
                    Err(status) => return Err(api.error("StreamEvents", &status)),
                };
                match response.kind {
                    Some(Kind::Event(event)) => {
                        if !turn.concerns(&event) {
                            continue;
                        }
                        renderer.event(&event).context("cannot write the output")?;
                        match turn.observe(&event) {
                            Progress::Running => {}
                            Progress::Completed => return Ok(()),
                            Progress::Failed(why) => bail!(why),
                        }
                    }
                    Some(Kind::Gap(gap)) => renderer.gap(&gap).context("cannot write the output")?,
                    Some(Kind::Delta(delta)) if delta.turn_id == turn_id => {
                        renderer.delta(&delta).context("cannot write the output")?
                    }
                    Some(Kind::Delta(_)) => {}
                    None => {}
                }
            }
            _ = sigint.recv() => {
                if interrupted {
                    bail!("stopped watching; turn {turn_id} of session {session_id} may still be running");
                }
                interrupted = true;
                note("interrupting the turn (Ctrl-C again to stop watching)");
                let mut client = api.client.clone();
                if let Err(status) = client
                    .interrupt(InterruptRequest { session_id: session_id.clone() })
                    .await
                {
                    note(format_args!("{:#}", api.error("Interrupt", &status)));
                }
            }
        }
    }
}

/// Creates a session, or fetches the one `--session` names.
async fn open_session(api: &mut SessionApi, options: &RunOptions) -> Result<Session> {
    let session = match &options.session {
        None => {
            let cwd = match &options.cwd {
                Some(dir) => dir.clone(),
                None => std::env::current_dir().context("cannot read the current directory")?,
            };
            let cwd = std::path::absolute(&cwd)
                .with_context(|| format!("cannot make {} absolute", cwd.display()))?;
            let cwd = cwd
                .to_str()
                .ok_or_else(|| anyhow!("the directory {} is not valid UTF-8", cwd.display()))?
                .to_string();
            api.client
                .create_session(CreateSessionRequest {
                    session_id: String::new(),
                    model: options.model.clone().unwrap_or_default(),
                    cwd,
                    developer_instructions: String::new(),
                })
                .await
                .map_err(|status| api.error("CreateSession", &status))?
                .into_inner()
                .session
        }
        Some(id) => {
            if options.model.is_some() || options.cwd.is_some() {
                note("note: --model and --cwd only apply to new sessions; ignored with --session");
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
    id: String,
    error: Option<String>,
}

#[derive(Debug, PartialEq, Eq)]
enum Progress {
    Running,
    Completed,
    Failed(String),
}

impl Turn {
    fn new(id: String) -> Self {
        Self { id, error: None }
    }

    /// Our turn's events and session-level ones; not those of turns queued
    /// before ours.
    fn concerns(&self, event: &Event) -> bool {
        event.turn_id.is_empty() || event.turn_id == self.id
    }

    fn observe(&mut self, event: &Event) -> Progress {
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
    use std::pin::Pin;
    use std::sync::{Arc, Mutex};

    use futures::Stream;
    use keel_proto::v1::session_service_server::{SessionService, SessionServiceServer};
    use keel_proto::v1::{
        AgentMessage, CloseSessionRequest, CloseSessionResponse, CreateSessionResponse, ErrorEvent,
        ExecCommandBegin, ExecCommandEnd, GetSessionResponse, InterruptResponse,
        ListSessionsRequest, ListSessionsResponse, SendUserTurnResponse, ShutdownComplete,
        StreamEventsResponse, TurnAborted, TurnComplete, TurnStarted,
    };
    use tonic::{Request, Response, Status};

    use super::*;
    use crate::client::resolve_target;
    use crate::state::StateDir;

    fn ev(offset: u64, turn: &str, msg: Msg) -> Event {
        Event {
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

    /// A session-api that plays a fixed script of events for every turn.
    #[derive(Clone, Default)]
    struct FakeApi {
        script: Vec<Msg>,
        /// What CreateSession received.
        created: Arc<Mutex<Vec<CreateSessionRequest>>>,
        /// Whether the stream ends after the script instead of staying open.
        end_early: bool,
    }

    fn session(id: &str) -> Session {
        Session {
            session_id: id.to_string(),
            status: SessionStatus::Idle as i32,
            last_event_offset: 1,
            ..Default::default()
        }
    }

    #[tonic::async_trait]
    impl SessionService for FakeApi {
        async fn create_session(
            &self,
            request: Request<CreateSessionRequest>,
        ) -> Result<Response<CreateSessionResponse>, Status> {
            self.created.lock().unwrap().push(request.into_inner());
            Ok(Response::new(CreateSessionResponse {
                session: Some(session("s1")),
            }))
        }
        async fn send_user_turn(
            &self,
            request: Request<SendUserTurnRequest>,
        ) -> Result<Response<SendUserTurnResponse>, Status> {
            if request.into_inner().session_id != "s1" {
                return Err(Status::not_found("no such session"));
            }
            Ok(Response::new(SendUserTurnResponse {
                turn_id: "turn-1".to_string(),
            }))
        }
        type StreamEventsStream =
            Pin<Box<dyn Stream<Item = Result<StreamEventsResponse, Status>> + Send>>;
        async fn stream_events(
            &self,
            request: Request<StreamEventsRequest>,
        ) -> Result<Response<Self::StreamEventsStream>, Status> {
            let request = request.into_inner();
            assert_eq!(request.after_offset, 1);
            assert!(request.follow);
            // An event of an earlier turn, then ours.
            let mut events = vec![ev(
                2,
                "turn-0",
                Msg::AgentMessage(AgentMessage {
                    message: "old turn".to_string(),
                    truncated: false,
                }),
            )];
            for (i, msg) in self.script.iter().enumerate() {
                events.push(ev(3 + i as u64, "turn-1", msg.clone()));
            }
            let items: Vec<Result<StreamEventsResponse, Status>> = events
                .into_iter()
                .map(|e| {
                    Ok(StreamEventsResponse {
                        kind: Some(Kind::Event(e)),
                    })
                })
                .collect();
            let stream = futures::stream::iter(items);
            if self.end_early {
                Ok(Response::new(Box::pin(stream)))
            } else {
                Ok(Response::new(Box::pin(
                    stream.chain(futures::stream::pending()),
                )))
            }
        }
        async fn get_session(
            &self,
            request: Request<GetSessionRequest>,
        ) -> Result<Response<GetSessionResponse>, Status> {
            match request.into_inner().session_id.as_str() {
                "s1" => Ok(Response::new(GetSessionResponse {
                    session: Some(session("s1")),
                })),
                _ => Err(Status::not_found("no such session")),
            }
        }
        async fn list_sessions(
            &self,
            _request: Request<ListSessionsRequest>,
        ) -> Result<Response<ListSessionsResponse>, Status> {
            Ok(Response::new(ListSessionsResponse::default()))
        }
        async fn interrupt(
            &self,
            _request: Request<InterruptRequest>,
        ) -> Result<Response<InterruptResponse>, Status> {
            Ok(Response::new(InterruptResponse {}))
        }
        async fn close_session(
            &self,
            _request: Request<CloseSessionRequest>,
        ) -> Result<Response<CloseSessionResponse>, Status> {
            Ok(Response::new(CloseSessionResponse {}))
        }
    }

    use futures::StreamExt;

    async fn serve(api: FakeApi) -> Target {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(SessionServiceServer::new(api))
                .serve_with_incoming(incoming),
        );
        let state = StateDir::resolve(Some(std::path::Path::new("/nonexistent"))).unwrap();
        resolve_target(Some(&addr.to_string()), &state).unwrap()
    }

    fn echo_script() -> Vec<Msg> {
        let command = vec!["echo".to_string(), "hello".to_string()];
        vec![
            Msg::TurnStarted(TurnStarted {}),
            Msg::ExecCommandBegin(ExecCommandBegin {
                call_id: "c1".to_string(),
                command: command.clone(),
                cwd: "/w".to_string(),
            }),
            Msg::ExecCommandEnd(ExecCommandEnd {
                call_id: "c1".to_string(),
                command,
                aggregated_output: "hello\n".to_string(),
                ..Default::default()
            }),
            Msg::AgentMessage(AgentMessage {
                message: "It printed hello.".to_string(),
                truncated: false,
            }),
            Msg::TurnComplete(TurnComplete {
                last_agent_message: "It printed hello.".to_string(),
            }),
        ]
    }

    async fn run_with(api: FakeApi, options: RunOptions) -> (Result<()>, String, String) {
        let target = serve(api).await;
        let client = SessionApi::connect(target).await.unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let result = {
            let renderer = if options.json {
                Renderer::Json(JsonRenderer::new(&mut out))
            } else {
                let style = Style { color: false };
                Renderer::Human(HumanRenderer::new(&mut out, style, &mut err, style))
            };
            run_turn(client, &options, "run echo hello".to_string(), renderer).await
        };
        (
            result,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    #[tokio::test]
    async fn a_turn_renders_until_it_completes() {
        let api = FakeApi {
            script: echo_script(),
            ..Default::default()
        };
        let created = api.created.clone();
        let options = RunOptions {
            model: Some("gpt-test".to_string()),
            cwd: Some(PathBuf::from("rel/dir")),
            ..Default::default()
        };
        let (result, out, _err) = run_with(api, options).await;
        result.unwrap();
        assert_eq!(out, "$ echo hello\nhello\nIt printed hello.\n");
        let created = created.lock().unwrap();
        assert_eq!(created[0].model, "gpt-test");
        assert!(created[0].cwd.starts_with('/'), "{}", created[0].cwd);
        assert!(created[0].cwd.ends_with("rel/dir"), "{}", created[0].cwd);
    }

    #[tokio::test]
    async fn json_output_is_one_object_per_line() {
        let api = FakeApi {
            script: echo_script(),
            ..Default::default()
        };
        let options = RunOptions {
            session: Some("s1".to_string()),
            json: true,
            ..Default::default()
        };
        let (result, out, _err) = run_with(api, options).await;
        result.unwrap();
        let types: Vec<String> = out
            .lines()
            .map(|line| {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                assert_eq!(v["turn_id"], "turn-1");
                v["type"].as_str().unwrap().to_string()
            })
            .collect();
        assert_eq!(
            types,
            [
                "turn_started",
                "exec_command_begin",
                "exec_command_end",
                "agent_message",
                "turn_complete"
            ]
        );
    }

    #[tokio::test]
    async fn an_error_event_fails_the_run() {
        let api = FakeApi {
            script: vec![
                Msg::TurnStarted(TurnStarted {}),
                Msg::Error(ErrorEvent {
                    message: "unauthorized".to_string(),
                    codex_error_info: "unauthorized".to_string(),
                }),
                Msg::TurnComplete(TurnComplete::default()),
            ],
            ..Default::default()
        };
        let (result, _out, err) = run_with(api, RunOptions::default()).await;
        assert_eq!(
            result.unwrap_err().to_string(),
            "the turn failed: unauthorized"
        );
        assert!(err.contains("error: unauthorized"), "{err}");
    }

    #[tokio::test]
    async fn an_aborted_turn_fails_the_run() {
        let api = FakeApi {
            script: vec![Msg::TurnAborted(TurnAborted { reason: 1 })],
            ..Default::default()
        };
        let (result, _, _) = run_with(api, RunOptions::default()).await;
        assert_eq!(
            result.unwrap_err().to_string(),
            "the turn was aborted (interrupted)"
        );
    }

    #[tokio::test]
    async fn a_stream_that_ends_early_fails_the_run() {
        let api = FakeApi {
            script: vec![Msg::TurnStarted(TurnStarted {})],
            end_early: true,
            ..Default::default()
        };
        let (result, _, _) = run_with(api, RunOptions::default()).await;
        let err = result.unwrap_err().to_string();
        assert!(
            err.starts_with("the event stream ended before turn turn-1 finished"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn an_unknown_session_is_a_clear_error() {
        let options = RunOptions {
            session: Some("nope".to_string()),
            ..Default::default()
        };
        let (result, _, _) = run_with(FakeApi::default(), options).await;
        let err = result.unwrap_err().to_string();
        assert!(
            err.starts_with("no session \"nope\" at session-api"),
            "{err}"
        );
    }
}
