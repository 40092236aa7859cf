//! A session client for tests and benchmarks: the calls every scenario makes.

use std::path::Path;

use anyhow::Context;
use keel_proto::v1 as pb;
use keel_proto::v1::session_service_client::SessionServiceClient;
use tonic::Streaming;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub type Client = SessionServiceClient<InterceptedService<Channel, keel_auth::Bearer>>;

/// Connects to session-api at `host:port`, sending `token` on every call
/// (`None`: no credentials).
pub async fn connect(addr: &str, token: Option<&str>) -> anyhow::Result<Client> {
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await
        .with_context(|| format!("cannot connect to session-api at {addr}"))?;
    let bearer = match token {
        Some(token) => keel_auth::Bearer::new(token)?,
        None => keel_auth::Bearer::none(),
    };
    Ok(SessionServiceClient::with_interceptor(channel, bearer))
}

/// Creates a session working in `cwd` (the tool-runner's default if `None`).
pub async fn create(client: &mut Client, cwd: Option<&Path>) -> anyhow::Result<String> {
    let session = client
        .create_session(pb::CreateSessionRequest {
            cwd: cwd.map(|p| p.display().to_string()).unwrap_or_default(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .session
        .context("CreateSession returned no session")?;
    Ok(session.session_id)
}

/// Creates the session `request` describes and follows its events from
/// the start.
pub async fn open(
    client: &mut Client,
    request: pb::CreateSessionRequest,
) -> anyhow::Result<(String, Streaming<pb::StreamEventsResponse>)> {
    let sid = client
        .create_session(request)
        .await?
        .into_inner()
        .session
        .context("CreateSession returned no session")?
        .session_id;
    let events = follow(client, &sid, 0, false).await?;
    Ok((sid, events))
}

/// [`open`]s a session in `cwd` under `policy` (`session_id` empty:
/// session-api picks one).
pub async fn open_with_policy(
    client: &mut Client,
    session_id: &str,
    cwd: &Path,
    policy: pb::ApprovalPolicy,
) -> anyhow::Result<(String, Streaming<pb::StreamEventsResponse>)> {
    open(
        client,
        pb::CreateSessionRequest {
            session_id: session_id.into(),
            cwd: cwd.display().to_string(),
            context: Some(pb::TurnContext {
                approval_policy: policy as i32,
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await
}

/// Reads events until a command asks for approval; returns the request.
pub async fn until_exec_approval(
    stream: &mut Streaming<pb::StreamEventsResponse>,
) -> anyhow::Result<pb::ExecApprovalRequest> {
    let (_, request) = until(stream, |e| match &e.msg {
        Some(pb::event::Msg::ExecApprovalRequest(r)) => Some(r.clone()),
        _ => None,
    })
    .await?;
    Ok(request)
}

/// Queues a turn with a chosen turn id.
pub async fn send(
    client: &mut Client,
    session_id: &str,
    turn_id: &str,
    text: &str,
) -> anyhow::Result<()> {
    client
        .send_user_turn(pb::SendUserTurnRequest {
            session_id: session_id.into(),
            text: text.into(),
            turn_id: turn_id.into(),
            ..Default::default()
        })
        .await?;
    Ok(())
}

/// Follows the session's events after `after`.
pub async fn follow(
    client: &mut Client,
    session_id: &str,
    after: u64,
    live_deltas: bool,
) -> anyhow::Result<Streaming<pb::StreamEventsResponse>> {
    Ok(client
        .stream_events(pb::StreamEventsRequest {
            session_id: session_id.into(),
            after_offset: after,
            follow: true,
            live_deltas,
            ..Default::default()
        })
        .await?
        .into_inner())
}

/// How long a test waits for the next event before giving up.
pub const EVENT_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// The next durable event of a followed stream (deltas and gaps skipped).
pub async fn next_event(
    stream: &mut Streaming<pb::StreamEventsResponse>,
) -> anyhow::Result<pb::Event> {
    loop {
        let msg = tokio::time::timeout(EVENT_WAIT, stream.message())
            .await
            .context("no event within the timeout")??
            .context("the event stream ended")?;
        if let Some(pb::stream_events_response::Kind::Event(e)) = msg.kind {
            return Ok(e);
        }
    }
}

/// Reads events until one matches `pick`; returns the events before it and
/// what `pick` extracted.
pub async fn until<T>(
    stream: &mut Streaming<pb::StreamEventsResponse>,
    mut pick: impl FnMut(&pb::Event) -> Option<T>,
) -> anyhow::Result<(Vec<pb::Event>, T)> {
    let mut seen = Vec::new();
    loop {
        let event = next_event(stream).await?;
        if let Some(found) = pick(&event) {
            return Ok((seen, found));
        }
        seen.push(event);
    }
}

/// Reads events until the running turn completes; returns the events
/// before `turn_complete`.
pub async fn until_turn_complete(
    stream: &mut Streaming<pb::StreamEventsResponse>,
) -> anyhow::Result<Vec<pb::Event>> {
    let (seen, ()) = until(stream, |e| {
        matches!(e.msg, Some(pb::event::Msg::TurnComplete(_))).then_some(())
    })
    .await?;
    Ok(seen)
}

/// Approves the pending request `request_id` (Respond, decision approved).
pub async fn approve(
    client: &mut Client,
    session_id: &str,
    request_id: &str,
) -> anyhow::Result<()> {
    client
        .respond(pb::RespondRequest {
            session_id: session_id.into(),
            request_id: request_id.into(),
            answer: Some(pb::respond_request::Answer::Decision(pb::ReviewDecision {
                kind: pb::ReviewDecisionKind::Approved as i32,
                execpolicy_amendment: vec![],
            })),
            ..Default::default()
        })
        .await?;
    Ok(())
}

/// The session's current state (GetSession).
pub async fn get(client: &mut Client, session_id: &str) -> anyhow::Result<pb::Session> {
    client
        .get_session(pb::GetSessionRequest {
            session_id: session_id.into(),
        })
        .await?
        .into_inner()
        .session
        .context("GetSession returned no session")
}
