//! `keel pending`, `keel override` and `keel interrupt`: looking at and
//! steering a session from outside the terminal that runs its turn.

use std::collections::HashMap;
use std::io::Write;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use keel_proto::v1::event::Msg;
use keel_proto::v1::stream_events_response::Kind;
use keel_proto::v1::{
    CloseSessionRequest, CompactRequest, Event, GetSessionRequest, InterruptRequest,
    OverrideTurnContextRequest, PendingRequest, Session, SteerTurnRequest, StreamEventsRequest,
};
use serde_json::{Value, json};

use crate::client::SessionApi;
use crate::render::requests::request_kind_name;
use crate::render::{event_json, note, shell_join};
use crate::respond::session_error;
use crate::settings::{TurnFlags, context_json, context_table};

#[derive(Debug, Args)]
pub(crate) struct PendingArgs {
    session: String,
    /// Print a JSON array (each entry with the request's event) instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct OverrideArgs {
    session: String,
    #[command(flatten)]
    flags: TurnFlags,
    /// Print the resulting settings as one JSON object.
    #[arg(long)]
    json: bool,
}

pub(crate) fn write_out(text: &str) -> Result<()> {
    std::io::stdout()
        .write_all(text.as_bytes())
        .context("cannot write the output")
}

/// The session `id` (GetSession); a failure says what to do.
pub(crate) async fn get_session(api: &mut SessionApi, id: &str) -> Result<Session> {
    api.client
        .get_session(GetSessionRequest {
            session_id: id.to_string(),
        })
        .await
        .map_err(|status| session_error(api, "GetSession", id, &status))?
        .into_inner()
        .session
        .ok_or_else(|| anyhow!("session-api at {} returned no session", api.target.display))
}

pub(crate) async fn pending(mut api: SessionApi, args: PendingArgs) -> Result<()> {
    let id = &args.session;
    let session = get_session(&mut api, id).await?;
    let requests = session.pending_requests;
    let events = if requests.is_empty() {
        HashMap::new()
    } else {
        request_events(&mut api, id, &requests).await?
    };
    let text = if args.json {
        format!("{}\n", pending_json(&requests, &events))
    } else {
        pending_table(&requests, &events)
    };
    write_out(&text)
}

/// The retained events that asked the pending requests, by request id: what
/// a person needs to decide (the command, the diff, the questions).
async fn request_events(
    api: &mut SessionApi,
    session_id: &str,
    requests: &[PendingRequest],
) -> Result<HashMap<String, Event>> {
    let mut stream = api
        .client
        .stream_events(StreamEventsRequest {
            session_id: session_id.to_string(),
            after_offset: 0,
            follow: false,
            live_deltas: false,
            // A sub-agent's request was asked in its own log.
            all_agents: requests.iter().any(|r| !r.agent_id.is_empty()),
            ..Default::default()
        })
        .await
        .map_err(|status| session_error(api, "StreamEvents", session_id, &status))?
        .into_inner();
    let mut found = HashMap::new();
    while let Some(response) = stream
        .message()
        .await
        .map_err(|status| api.error("StreamEvents", &status))?
    {
        let Some(Kind::Event(event)) = response.kind else {
            continue;
        };
        // The session's own events name no parent; a sub-agent's name it.
        let agent = if event.parent_agent_id.is_empty() {
            ""
        } else {
            event.agent_id.as_str()
        };
        if let Some(call_id) = event.msg.as_ref().and_then(request_id)
            && requests
                .iter()
                .any(|r| r.request_id == call_id && r.agent_id == agent)
        {
            found.insert(event_key(agent, call_id), event);
        }
    }
    Ok(found)
}

fn request_id(msg: &Msg) -> Option<&str> {
    match msg {
        Msg::ExecApprovalRequest(r) => Some(&r.call_id),
        Msg::ApplyPatchApprovalRequest(r) => Some(&r.call_id),
        Msg::RequestUserInput(r) => Some(&r.call_id),
        Msg::DynamicToolCallRequest(r) => Some(&r.call_id),
        _ => None,
    }
}

/// How [`request_events`] files a request's event: by agent and request id
/// (two agents' calls may share an id).
fn event_key(agent_id: &str, request_id: &str) -> String {
    format!("{agent_id}/{request_id}")
}

fn event_of<'a>(events: &'a HashMap<String, Event>, r: &PendingRequest) -> Option<&'a Event> {
    events.get(&event_key(&r.agent_id, &r.request_id))
}

fn kind(request: &PendingRequest) -> String {
    request_kind_name(request.kind).unwrap_or_else(|| "unknown".to_string())
}

pub(crate) fn pending_json(requests: &[PendingRequest], events: &HashMap<String, Event>) -> Value {
    Value::Array(
        requests
            .iter()
            .map(|r| {
                let mut entry = json!({
                    "request_id": r.request_id,
                    "turn_id": r.turn_id,
                    "kind": kind(r),
                    "event": event_of(events, r).map(event_json),
                });
                if !r.agent_id.is_empty() {
                    entry["agent_id"] = json!(r.agent_id);
                }
                entry
            })
            .collect(),
    )
}

/// One line on what a request asks.
fn summary(event: Option<&Event>) -> String {
    match event.and_then(|e| e.msg.as_ref()) {
        Some(Msg::ExecApprovalRequest(r)) => format!("$ {}", shell_join(&r.command)),
        Some(Msg::ApplyPatchApprovalRequest(r)) => {
            let paths: Vec<&str> = r.changes.iter().map(|c| c.path.as_str()).collect();
            format!("patch: {}", paths.join(", "))
        }
        Some(Msg::RequestUserInput(r)) => {
            let ids: Vec<&str> = r.questions.iter().map(|q| q.id.as_str()).collect();
            format!("questions: {}", ids.join(", "))
        }
        Some(Msg::DynamicToolCallRequest(r)) => format!("tool: {} {}", r.tool, r.arguments),
        _ => "-".to_string(),
    }
}

pub(crate) fn pending_table(
    requests: &[PendingRequest],
    events: &HashMap<String, Event>,
) -> String {
    if requests.is_empty() {
        return "no pending requests\n".to_string();
    }
    // The AGENT column only when a sub-agent asks something.
    let agents = requests.iter().any(|r| !r.agent_id.is_empty());
    let mut rows = vec![[
        "REQUEST".to_string(),
        "TURN".to_string(),
        "KIND".to_string(),
        "WHAT".to_string(),
        "AGENT".to_string(),
    ]];
    for r in requests {
        rows.push([
            r.request_id.clone(),
            r.turn_id.clone(),
            kind(r),
            summary(event_of(events, r)),
            r.agent_id.clone(),
        ]);
    }
    if !agents {
        let rows: Vec<[String; 4]> = rows
            .into_iter()
            .map(|[a, b, c, d, _]| [a, b, c, d])
            .collect();
        return crate::render::table(&rows);
    }
    crate::render::table(&rows)
}

/// Changes the session's settings for every later model and tool call, and
/// prints the settings in force after the change (with no flag: as they are).
pub(crate) async fn override_context(mut api: SessionApi, args: OverrideArgs) -> Result<()> {
    let id = &args.session;
    let context = api
        .client
        .override_turn_context(OverrideTurnContextRequest {
            session_id: id.clone(),
            context: args.flags.to_context(),
        })
        .await
        .map_err(|status| session_error(&api, "OverrideTurnContext", id, &status))?
        .into_inner()
        .context
        .unwrap_or_default();
    let text = if args.json {
        format!("{}\n", context_json(&context))
    } else {
        context_table(&context)
    };
    write_out(&text)
}

pub(crate) async fn interrupt(mut api: SessionApi, session: String) -> Result<()> {
    api.client
        .interrupt(InterruptRequest {
            session_id: session.clone(),
            ..Default::default()
        })
        .await
        .map_err(|status| session_error(&api, "Interrupt", &session, &status))?;
    note(format_args!(
        "interrupted the running turn of {session}, if any"
    ));
    Ok(())
}

pub(crate) async fn close(mut api: SessionApi, session: String) -> Result<()> {
    api.client
        .close_session(CloseSessionRequest {
            session_id: session.clone(),
        })
        .await
        .map_err(|status| session_error(&api, "CloseSession", &session, &status))?;
    note(format_args!("closed {session}"));
    Ok(())
}

#[derive(Debug, clap::Args)]
pub(crate) struct SteerArgs {
    /// The session.
    pub session: String,
    /// The message.
    #[arg(required = true, num_args = 1..)]
    pub text: Vec<String>,
    /// The turn to steer (default: the session's running turn).
    #[arg(long)]
    pub turn: Option<String>,
    /// When the turn is no longer running, queue the message as a new turn
    /// instead of failing.
    #[arg(long)]
    pub queue: bool,
}

pub(crate) async fn steer(mut api: SessionApi, args: SteerArgs) -> Result<()> {
    let session = args.session;
    let turn = match args.turn {
        Some(turn) => turn,
        None => running_turn(&mut api, &session).await?.unwrap_or_default(),
    };
    if turn.is_empty() && !args.queue {
        bail!(
            "session {session} has no running turn to steer (send a new turn with keel run --session, or pass --queue)"
        );
    }
    let answer = api
        .client
        .steer_turn(SteerTurnRequest {
            session_id: session.clone(),
            text: args.text.join(" "),
            // No running turn and --queue: a turn id no turn has, so the
            // message is queued.
            expected_turn_id: if turn.is_empty() { "none".into() } else { turn },
            queue_if_not_running: args.queue,
        })
        .await
        .map_err(|status| session_error(&api, "SteerTurn", &session, &status))?
        .into_inner();
    if answer.queued {
        note(format_args!(
            "the turn had ended; queued as turn {}",
            answer.turn_id
        ));
    } else {
        note(format_args!("steered turn {}", answer.turn_id));
    }
    Ok(())
}

/// The id of the session's running turn: the newest `turn_started` without
/// a `turn_complete` or `turn_aborted` after it, among the retained events.
async fn running_turn(api: &mut SessionApi, session: &str) -> Result<Option<String>> {
    let mut stream = api
        .client
        .stream_events(StreamEventsRequest {
            session_id: session.to_string(),
            after_offset: 0,
            follow: false,
            live_deltas: false,
            ..Default::default()
        })
        .await
        .map_err(|status| session_error(api, "StreamEvents", session, &status))?
        .into_inner();
    let mut running = None;
    while let Some(m) = stream
        .message()
        .await
        .map_err(|status| session_error(api, "StreamEvents", session, &status))?
    {
        if let Some(Kind::Event(e)) = m.kind {
            match e.msg {
                Some(Msg::TurnStarted(_)) => running = Some(e.turn_id),
                Some(Msg::TurnComplete(_) | Msg::TurnAborted(_)) => running = None,
                _ => {}
            }
        }
    }
    Ok(running)
}

pub(crate) async fn compact(mut api: SessionApi, session: String) -> Result<()> {
    api.client
        .compact(CompactRequest {
            session_id: session.clone(),
        })
        .await
        .map_err(|status| session_error(&api, "Compact", &session, &status))?;
    note(format_args!(
        "compaction of {session} queued; `context_compacted` reports it"
    ));
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use keel_proto::v1::{ExecApprovalRequest, PendingRequestKind};

    fn requests() -> (Vec<PendingRequest>, HashMap<String, Event>) {
        let requests = vec![
            PendingRequest {
                request_id: "call_rm".into(),
                turn_id: "t1".into(),
                kind: PendingRequestKind::ExecApproval as i32,
                ..Default::default()
            },
            PendingRequest {
                request_id: "q".into(),
                turn_id: "t1".into(),
                kind: PendingRequestKind::UserInput as i32,
                ..Default::default()
            },
        ];
        let event = Event {
            agent_id: String::new(),
            parent_agent_id: String::new(),
            offset: 5,
            turn_id: "t1".into(),
            time: None,
            msg: Some(Msg::ExecApprovalRequest(ExecApprovalRequest {
                call_id: "call_rm".into(),
                command: vec!["rm".into(), "-rf".into(), "x".into()],
                ..Default::default()
            })),
        };
        (requests, HashMap::from([(event_key("", "call_rm"), event)]))
    }

    #[test]
    fn pending_as_a_table() {
        let (requests, events) = requests();
        assert_eq!(
            pending_table(&requests, &events),
            "REQUEST  TURN  KIND           WHAT\n\
             call_rm  t1    exec_approval  $ rm -rf x\n\
             q        t1    user_input     -\n"
        );
        assert_eq!(pending_table(&[], &events), "no pending requests\n");
    }

    #[test]
    fn pending_as_json() {
        let (requests, events) = requests();
        let v = pending_json(&requests, &events);
        assert_eq!(v[0]["request_id"], "call_rm");
        assert_eq!(v[0]["kind"], "exec_approval");
        assert_eq!(v[0]["event"]["type"], "exec_approval_request");
        assert_eq!(v[0]["event"]["command"], json!(["rm", "-rf", "x"]));
        assert_eq!(v[1]["kind"], "user_input");
        assert_eq!(v[1]["event"], Value::Null);
        assert_eq!(pending_json(&[], &events), json!([]));
    }
}
