//! StreamEvents: reads the session's event log through the workflow's
//! `events` query — which writes nothing to workflow history — and forwards
//! new events in offset order. A client asking for offsets the session no
//! longer retains gets an explicit gap, never silent loss.

use base64::Engine as _;
use futures::Stream;
use keel_proto::v1 as pb;
use keel_workflow_api::{EventsQuery, EventsQueryDef};
use prost::Message as _;
use temporalio_client::WorkflowQueryOptions;
use temporalio_client::errors::WorkflowQueryError;
use tonic::Status;

use crate::service::{POLL_MAX, POLL_MIN, SessionApi};

const PAGE: u32 = 256;

pub fn events(
    api: SessionApi,
    session_id: String,
    mut after: u64,
    follow: bool,
) -> impl Stream<Item = Result<pb::StreamEventsResponse, Status>> + Send {
    async_stream::try_stream! {
        let handle = api.events_handle(&session_id);
        let mut delay = POLL_MIN;
        let mut gap_checked = false;
        loop {
            let page = match handle
                .query(EventsQueryDef, EventsQuery { after, max: PAGE }, WorkflowQueryOptions::default())
                .await
            {
                Ok(page) => page,
                Err(WorkflowQueryError::NotFound(_)) => {
                    Err(Status::not_found(format!("session {session_id:?} not found")))?
                }
                Err(e) if follow => {
                    // A worker restart or a Temporal hiccup: keep the client's
                    // stream and try again.
                    tracing::warn!(%session_id, error = %e, "reading events failed; retrying");
                    tokio::time::sleep(POLL_MAX).await;
                    continue;
                }
                Err(e) => Err(Status::unavailable(format!("cannot read events: {e}")))?,
            };
            if !gap_checked {
                gap_checked = true;
                if page.first_retained > after + 1 {
                    yield pb::StreamEventsResponse {
                        kind: Some(pb::stream_events_response::Kind::Gap(pb::EventGap {
                            after_offset: after,
                            first_retained_offset: page.first_retained,
                        })),
                    };
                }
            }
            let got = page.events.len();
            for encoded in page.events {
                let event = decode(&encoded)?;
                after = event.offset;
                yield pb::StreamEventsResponse {
                    kind: Some(pb::stream_events_response::Kind::Event(event)),
                };
            }
            let caught_up = after >= page.last_offset;
            if caught_up && (page.closed || !follow) {
                break;
            }
            if got > 0 {
                delay = POLL_MIN;
                if !caught_up {
                    continue;
                }
            } else {
                delay = (delay * 2).min(POLL_MAX);
            }
            tokio::time::sleep(delay).await;
        }
    }
}

fn decode(encoded: &str) -> Result<pb::Event, Status> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| Status::internal(format!("corrupt event in the session log: {e}")))?;
    pb::Event::decode(bytes.as_slice())
        .map_err(|e| Status::internal(format!("corrupt event in the session log: {e}")))
}
