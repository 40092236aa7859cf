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

/// An event as clients get it: named by its agent. A session's log holds
/// its own agent's events, which the workflow does not stamp (every event
/// of a log has the same agent): they are named by the session id the
/// client knows (the key without its tenant).
fn event(mut e: pb::Event, session_key: &str) -> Response {
    if e.agent_id.is_empty() {
        e.agent_id = keel_workflow_api::split_session_key(session_key)
            .1
            .to_string();
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
    session_id: &str,
    after: &mut u64,
    retry: bool,
) -> Result<CaughtUp, Status> {
    let handle = api.handle(session_id);
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
                        &api.session_blobs(session_id)?,
                        session_id,
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
                    })),
                }),
            }
            *after = page.first_retained - 1;
        }
        let (last, closed) = (page.last_offset, page.closed);
        for e in decode_page(page)? {
            *after = e.offset;
            out.push(event(e, session_id));
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
    session_id: String,
    mut after: u64,
    follow: bool,
    live: bool,
) -> impl Stream<Item = Result<Response, Status>> + Send {
    async_stream::try_stream! {
        // Subscribe before catching up, so nothing broadcast meanwhile is lost.
        let feed = follow.then(|| api.hub().watch(&session_id, api.handle(&session_id), after));
        let mut events = feed.as_ref().map(|f| f.events.subscribe());
        let mut deltas = feed.as_ref().filter(|_| live).map(|f| f.live.subscribe());
        let mut progress = feed.as_ref().map(|f| f.progress.subscribe());

        let closed = loop {
            let caught = catch_up(&api, &session_id, &mut after, follow).await?;
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
                    yield event((*e).clone(), &session_id);
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
                    let mut caught = catch_up(&api, &session_id, &mut after, true).await?;
                    // A watcher far behind reads the archive a part at a time.
                    while caught.more {
                        for r in std::mem::take(&mut caught.responses) {
                            yield r;
                        }
                        caught = catch_up(&api, &session_id, &mut after, true).await?;
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
