//! StreamEvents: replays the retained events after the client's offset by
//! query, then follows the session's shared feed. Live deltas wait until the
//! durable events their model call follows are out. A client asking for offsets
//! the session no longer retains gets an explicit gap, never silent loss; a
//! client that falls behind the feed's buffer catches up by query.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use futures::Stream;
use keel_proto::v1 as pb;
use keel_workflow_api::EventsPage;
use prost::Message as _;
use temporalio_client::errors::WorkflowQueryError;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;
use tonic::Status;

use crate::hub::{self, RETRY};
use crate::service::SessionApi;

type Response = pb::StreamEventsResponse;

pub(crate) fn decode_page(page: EventsPage) -> Result<Vec<pb::Event>, Status> {
    page.events.iter().map(|e| decode(e)).collect()
}

pub(crate) fn decode(encoded: &str) -> Result<pb::Event, Status> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(crate::errors::corrupt_event)?;
    pb::Event::decode(bytes.as_slice()).map_err(crate::errors::corrupt_event)
}

/// One event log: the session's own, or one of its sub-agents'.
#[derive(Clone, Debug)]
pub(crate) struct Log {
    /// The session's key.
    pub key: String,
    /// The sub-agent (`None`: the session's own log).
    pub agent: Option<AgentLog>,
}

#[derive(Clone, Debug)]
pub(crate) struct AgentLog {
    pub agent_id: String,
    pub parent_agent_id: String,
}

impl Log {
    pub(crate) fn session(key: &str) -> Self {
        Self {
            key: key.to_string(),
            agent: None,
        }
    }

    pub(crate) fn agent(key: &str, agent_id: &str, parent_agent_id: &str) -> Self {
        Self {
            key: key.to_string(),
            agent: Some(AgentLog {
                agent_id: agent_id.to_string(),
                parent_agent_id: parent_agent_id.to_string(),
            }),
        }
    }

    /// What worker notices and the hub name this log by: the session key,
    /// or `<session key>/<agent id>` (a session key holds no '/').
    pub(crate) fn feed_key(&self) -> String {
        feed_key(&self.key, self.agent.as_ref().map_or("", |a| &a.agent_id))
    }

    pub(crate) fn workflow_id(&self) -> String {
        match &self.agent {
            None => keel_workflow_api::workflow_id(&self.key),
            Some(a) => keel_workflow_api::agent_workflow_id(&self.key, &a.agent_id),
        }
    }

    fn agent_id(&self) -> &str {
        self.agent.as_ref().map_or("", |a| &a.agent_id)
    }
}

/// See [`Log::feed_key`].
pub(crate) fn feed_key(session_key: &str, agent_id: &str) -> String {
    if agent_id.is_empty() {
        session_key.to_string()
    } else {
        format!("{session_key}/{agent_id}")
    }
}

/// An event as clients get it: named by its agent. A log holds one agent's
/// events, which the workflow does not stamp: the session's own are named
/// by the session id the client knows (the key without its tenant), a
/// sub-agent's by its id and its parent's.
fn event(mut e: pb::Event, log: &Log) -> Response {
    match &log.agent {
        None if e.agent_id.is_empty() => {
            e.agent_id = keel_workflow_api::split_session_key(&log.key).1.to_string();
        }
        None => {}
        Some(agent) => {
            e.agent_id.clone_from(&agent.agent_id);
            e.parent_agent_id.clone_from(&agent.parent_agent_id);
        }
    }
    Response {
        kind: Some(pb::stream_events_response::Kind::Event(e)),
    }
}

/// What one [`catch_up`] read.
struct CaughtUp {
    responses: Vec<Response>,
    /// The session is closed with nothing more to come.
    closed: bool,
    /// It stopped early (a long archive): call again.
    more: bool,
}

/// Reads the events after `*after` — archived ones first, then the
/// retained ones by query — advancing `*after`.
async fn catch_up(
    api: &SessionApi,
    log: &Log,
    after: &mut u64,
    retry: bool,
) -> Result<CaughtUp, Status> {
    let session_id = log.feed_key();
    let session_id = session_id.as_str();
    let handle = api.log_handle(log);
    let mut out = Vec::new();
    loop {
        let page = match hub::query(&handle, *after).await {
            Ok(page) => page,
            Err(WorkflowQueryError::NotFound(_)) => {
                return Err(crate::errors::not_found(session_id));
            }
            Err(e) if retry => {
                // A worker restart or a Temporal hiccup: keep the stream.
                tracing::warn!(%session_id, error = %e, "reading events failed; retrying");
                tokio::time::sleep(RETRY).await;
                continue;
            }
            Err(e) => return Err(crate::errors::unavailable("cannot read events", e)),
        };
        if page.first_retained > *after + 1 {
            match &page.archive {
                // Older events from the archive (and a gap for any it
                // lacks), a bounded part at a time.
                Some(archive) => {
                    let (read, more) = crate::archive::read(
                        &api.session_blobs(&log.key)?,
                        &log.key,
                        archive,
                        after,
                        page.first_retained,
                    )
                    .await?;
                    out.extend(read);
                    if more {
                        return Ok(CaughtUp {
                            responses: out,
                            closed: false,
                            more: true,
                        });
                    }
                }
                None => out.push(Response {
                    kind: Some(pb::stream_events_response::Kind::Gap(pb::EventGap {
                        after_offset: *after,
                        first_retained_offset: page.first_retained,
                        agent_id: log.agent_id().to_string(),
                    })),
                }),
            }
            *after = page.first_retained - 1;
        }
        let (last, closed) = (page.last_offset, page.closed);
        for e in decode_page(page)? {
            *after = e.offset;
            out.push(event(e, log));
        }
        if *after >= last {
            return Ok(CaughtUp {
                responses: out,
                closed,
                more: false,
            });
        }
    }
}

/// How long a delta may wait for the durable events before it (see
/// `LiveDelta.events_before`) to arrive by notice before the stream reads
/// them itself.
const DELTA_HOLD: Duration = Duration::from_millis(500);
/// Deltas held back per stream; past it the oldest are dropped (deltas are
/// best effort, the durable item carries the whole text).
const MAX_HELD_DELTAS: usize = 4096;

enum Next {
    Event(Arc<pb::Event>),
    Delta(pb::LiveDelta),
    CatchUp,
    Progress,
}

fn delta(d: pb::LiveDelta) -> Response {
    Response {
        kind: Some(pb::stream_events_response::Kind::Delta(d)),
    }
}

pub(crate) fn stream(
    api: SessionApi,
    log: Log,
    mut after: u64,
    follow: bool,
    live: bool,
) -> impl Stream<Item = Result<Response, Status>> + Send {
    async_stream::try_stream! {
        // Subscribe before catching up, so nothing broadcast meanwhile is lost.
        let feed = follow.then(|| api.hub().watch(&log.feed_key(), api.log_handle(&log), after));
        let mut events = feed.as_ref().map(|f| f.events.subscribe());
        let mut deltas = feed.as_ref().filter(|_| live).map(|f| f.live.subscribe());
        let mut progress = feed.as_ref().map(|f| f.progress.subscribe());

        let closed = loop {
            let caught = catch_up(&api, &log, &mut after, follow).await?;
            for r in caught.responses {
                yield r;
            }
            if !caught.more {
                break caught.closed;
            }
        };
        let (Some(events), Some(progress)) = (events.as_mut(), progress.as_mut()) else {
            return;
        };
        if closed {
            return;
        }
        // Deltas whose durable events have not gone out yet, oldest first,
        // and when the oldest stops waiting for the feed.
        let mut held: VecDeque<pb::LiveDelta> = VecDeque::new();
        let mut hold_until = Instant::now();
        loop {
            while held.front().is_some_and(|d| d.events_before <= after) {
                if let Some(d) = held.pop_front() {
                    yield delta(d);
                }
                hold_until = Instant::now() + DELTA_HOLD;
            }
            let holding = !held.is_empty();
            let next = tokio::select! {
                r = events.recv() => match r {
                    Ok(e) => Next::Event(e),
                    Err(RecvError::Lagged(_)) | Err(RecvError::Closed) => Next::CatchUp,
                },
                d = async { match deltas.as_mut() { Some(d) => d.recv().await, None => std::future::pending().await } } => match d {
                    Ok(d) => Next::Delta(d),
                    // Deltas are best effort: skip what this watcher missed.
                    Err(_) => continue,
                },
                r = progress.changed() => match r {
                    Ok(()) => Next::Progress,
                    Err(_) => Next::CatchUp,
                },
                _ = tokio::time::sleep_until(hold_until), if holding => Next::CatchUp,
            };
            match next {
                Next::Event(e) if e.offset <= after => {}
                Next::Event(e) if e.offset == after + 1 => {
                    after = e.offset;
                    api.metrics().delivered(e.time.as_ref());
                    yield event((*e).clone(), &log);
                }
                Next::Delta(d) => {
                    if held.is_empty() {
                        hold_until = Instant::now() + DELTA_HOLD;
                    }
                    if held.len() >= MAX_HELD_DELTAS {
                        held.pop_front();
                    }
                    held.push_back(d);
                }
                Next::Progress if !progress.borrow_and_update().1 => {}
                // A hole in the broadcast, the session closed, or deltas
                // waited too long: read the log.
                Next::Event(_) | Next::CatchUp | Next::Progress => {
                    let mut caught = catch_up(&api, &log, &mut after, true).await?;
                    // A watcher far behind reads the archive a part at a time.
                    while caught.more {
                        for r in std::mem::take(&mut caught.responses) {
                            yield r;
                        }
                        caught = catch_up(&api, &log, &mut after, true).await?;
                    }
                    let closed = caught.closed;
                    for r in caught.responses {
                        let offset = match &r.kind {
                            Some(pb::stream_events_response::Kind::Event(e)) => Some(e.offset),
                            _ => None,
                        };
                        yield r;
                        // Each held delta right after the events it waited
                        // for, before the later ones (the model's finished
                        // message, the turn's end).
                        while let Some(offset) = offset
                            && held.front().is_some_and(|d| d.events_before <= offset)
                        {
                            if let Some(d) = held.pop_front() {
                                yield delta(d);
                            }
                        }
                    }
                    if closed {
                        return;
                    }
                    // Whatever the deltas waited for is out (or gone).
                    while let Some(d) = held.pop_front() {
                        yield delta(d);
                    }
                }
            }
        }
    }
}

/// StreamEvents with `all_agents`: the session's own log and each
/// sub-agent's, each in its own offset order, merged as they are read.
/// `known` are the agents the session had when the stream opened (an agent
/// started at or before `after` is among them); one started later is
/// followed from its `collab_agent_spawn_end` in the session's log. A
/// sub-agent whose workflow is gone (deleted) ends its part quietly.
pub(crate) fn merged(
    api: SessionApi,
    key: String,
    after: u64,
    mut offsets: std::collections::BTreeMap<String, u64>,
    known: Vec<(String, String)>,
    follow: bool,
    live: bool,
) -> impl Stream<Item = Result<Response, Status>> + Send {
    use futures::StreamExt as _;
    // Each part names its agent (`None`: the session's own log).
    type Part = futures::stream::BoxStream<'static, (Option<String>, Result<Response, Status>)>;
    async_stream::try_stream! {
        let mut parts: futures::stream::SelectAll<Part> = futures::stream::SelectAll::new();
        let mut followed = std::collections::BTreeSet::new();
        let agent_part = |agent_id: &str, parent: &str, after: u64| -> Part {
            let agent = Some(agent_id.to_string());
            stream(api.clone(), Log::agent(&key, agent_id, parent), after, follow, false)
                .map(move |r| (agent.clone(), r))
                .boxed()
        };
        parts.push(
            stream(api.clone(), Log::session(&key), after, follow, live)
                .map(|r| (None, r))
                .boxed(),
        );
        for (agent_id, parent) in &known {
            if followed.insert(agent_id.clone()) {
                let after = offsets.remove(agent_id).unwrap_or(0);
                parts.push(agent_part(agent_id, parent, after));
            }
        }
        while let Some((agent, item)) = parts.next().await {
            let response = match (item, &agent) {
                (Ok(response), _) => response,
                // Gone (deleted), or not started yet (the session lists an
                // agent just before its workflow starts): its spawn event
                // may follow it again.
                (Err(status), Some(agent)) if status.code() == tonic::Code::NotFound => {
                    followed.remove(agent);
                    continue;
                }
                (Err(status), _) => Err(status)?,
            };
            if agent.is_none()
                && let Some(pb::stream_events_response::Kind::Event(e)) = &response.kind
                && let Some(pb::event::Msg::CollabAgentSpawnEnd(end)) = &e.msg
                && !end.new_thread_id.is_empty()
                && keel_tool_model::valid_agent_id(&end.new_thread_id)
                && followed.insert(end.new_thread_id.clone())
            {
                let after = offsets.remove(&end.new_thread_id).unwrap_or(0);
                parts.push(agent_part(&end.new_thread_id, &end.sender_thread_id, after));
            }
            yield response;
        }
    }
}
