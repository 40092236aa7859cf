//! StreamEvents: replays the retained events after the client's offset by
//! query, then follows the session's shared feed. A client asking for offsets
//! the session no longer retains gets an explicit gap, never silent loss; a
//! client that falls behind the feed's buffer catches up by query.

use std::sync::Arc;

use base64::Engine as _;
use futures::Stream;
use keel_proto::v1 as pb;
use keel_workflow_api::EventsPage;
use prost::Message as _;
use temporalio_client::errors::WorkflowQueryError;
use tokio::sync::broadcast::error::RecvError;
use tonic::Status;

use crate::hub::{self, POLL_MAX};
use crate::service::SessionApi;

type Response = pb::StreamEventsResponse;

pub(crate) fn decode_page(page: EventsPage) -> Result<Vec<pb::Event>, Status> {
    page.events.iter().map(|e| decode(e)).collect()
}

fn decode(encoded: &str) -> Result<pb::Event, Status> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| Status::internal(format!("corrupt event in the session log: {e}")))?;
    pb::Event::decode(bytes.as_slice())
        .map_err(|e| Status::internal(format!("corrupt event in the session log: {e}")))
}

fn event(e: pb::Event) -> Response {
    Response {
        kind: Some(pb::stream_events_response::Kind::Event(e)),
    }
}

/// Reads every retained event after `*after` by query, advancing `*after`.
/// Returns the responses (with a gap first when events were lost) and
/// whether the session is closed with nothing more to come.
async fn catch_up(
    api: &SessionApi,
    session_id: &str,
    after: &mut u64,
    retry: bool,
) -> Result<(Vec<Response>, bool), Status> {
    let handle = api.events_handle(session_id);
    let mut out = Vec::new();
    loop {
        let page = match hub::query(&handle, *after).await {
            Ok(page) => page,
            Err(WorkflowQueryError::NotFound(_)) => {
                return Err(Status::not_found(format!(
                    "session {session_id:?} not found"
                )));
            }
            Err(e) if retry => {
                // A worker restart or a Temporal hiccup: keep the stream.
                tracing::warn!(%session_id, error = %e, "reading events failed; retrying");
                tokio::time::sleep(POLL_MAX).await;
                continue;
            }
            Err(e) => return Err(Status::unavailable(format!("cannot read events: {e}"))),
        };
        if page.first_retained > *after + 1 {
            out.push(Response {
                kind: Some(pb::stream_events_response::Kind::Gap(pb::EventGap {
                    after_offset: *after,
                    first_retained_offset: page.first_retained,
                })),
            });
        }
        let (last, closed) = (page.last_offset, page.closed);
        for e in decode_page(page)? {
            *after = e.offset;
            out.push(event(e));
        }
        if *after >= last {
            return Ok((out, closed));
        }
    }
}

enum Next {
    Event(Arc<pb::Event>),
    Delta(pb::LiveDelta),
    CatchUp,
    Progress,
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
        let feed = follow.then(|| api.hub().watch(&session_id, api.events_handle(&session_id), after));
        let mut events = feed.as_ref().map(|f| f.events.subscribe());
        let mut deltas = feed.as_ref().filter(|_| live).map(|f| f.live.subscribe());
        let mut progress = feed.as_ref().map(|f| f.progress.subscribe());

        let (caught, closed) = catch_up(&api, &session_id, &mut after, follow).await?;
        for r in caught {
            yield r;
        }
        let (Some(events), Some(progress)) = (events.as_mut(), progress.as_mut()) else {
            return;
        };
        if closed {
            return;
        }
        // The item the last delta belonged to: the first delta of a new item
        // waits until the durable events before it are out, so a client never
        // sees the model's next answer before the command output it answers.
        let mut delta_item = String::new();
        loop {
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
            };
            match next {
                Next::Event(e) if e.offset <= after => {}
                Next::Event(e) if e.offset == after + 1 => {
                    after = e.offset;
                    yield event((*e).clone());
                }
                Next::Delta(d) => {
                    if d.item_id != delta_item {
                        delta_item = d.item_id.clone();
                        let (caught, closed) = catch_up(&api, &session_id, &mut after, true).await?;
                        for r in caught {
                            yield r;
                        }
                        if closed {
                            return;
                        }
                    }
                    yield Response { kind: Some(pb::stream_events_response::Kind::Delta(d)) };
                }
                Next::Progress if !progress.borrow_and_update().1 => {}
                // A hole in the broadcast, or the session closed: read the log.
                Next::Event(_) | Next::CatchUp | Next::Progress => {
                    let (caught, closed) = catch_up(&api, &session_id, &mut after, true).await?;
                    for r in caught {
                        yield r;
                    }
                    if closed {
                        return;
                    }
                }
            }
        }
    }
}
