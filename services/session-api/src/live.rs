//! LiveService: workers publish the model's deltas here while it streams
//! (they go straight to the session's watchers, never through history) and
//! notices that sessions' event logs grew (the session's feed reads them).

use futures::StreamExt;
use keel_proto::v1 as pb;
use keel_proto::v1::live_service_server::LiveService;
use tonic::{Request, Response, Status, Streaming};

use crate::service::SessionApi;

#[derive(Clone)]
pub struct LiveApi {
    api: SessionApi,
}

impl LiveApi {
    pub fn new(api: SessionApi) -> Self {
        Self { api }
    }
}

#[tonic::async_trait]
impl LiveService for LiveApi {
    async fn publish(
        &self,
        request: Request<Streaming<pb::PublishRequest>>,
    ) -> Result<Response<pb::PublishResponse>, Status> {
        let mut stream = request.into_inner();
        let mut delivered = 0;
        while let Some(msg) = stream.next().await {
            let msg = msg?;
            let Some(delta) = msg.delta else { continue };
            if self.api.hub().publish(&msg.session_id, delta) {
                delivered += 1;
            }
        }
        Ok(Response::new(pb::PublishResponse { delivered }))
    }

    async fn archive_events(
        &self,
        request: Request<pb::ArchiveEventsRequest>,
    ) -> Result<Response<pb::ArchiveEventsResponse>, Status> {
        let req = request.into_inner();
        if req.session_key.is_empty() || req.upto_offset < req.after_offset {
            return Err(crate::errors::invalid(
                "session_key is required and upto_offset must not be below after_offset",
            ));
        }
        let handle = self.api.handle(&req.session_key);
        let mut events = Vec::new();
        let mut first = None;
        let mut after = req.after_offset;
        while after < req.upto_offset {
            let page = crate::hub::query(&handle, after)
                .await
                .map_err(|e| crate::errors::unavailable("cannot read the session's events", e))?;
            // Events the window dropped before they were archived are gone;
            // the chunk starts after them. Dropped in the middle of this read
            // (the window moved meanwhile), they would leave a hole in the
            // chunk: fail, and the workflow's retry starts at the window.
            if page.first_retained > after + 1 && first.is_some() {
                return Err(crate::errors::status(
                    tonic::Code::Aborted,
                    "window_moved",
                    "the session's event window moved while it was archived; try again",
                ));
            }
            after = after.max(page.first_retained.saturating_sub(1));
            if page.events.is_empty() {
                break;
            }
            for encoded in page.events {
                if after >= req.upto_offset {
                    break;
                }
                after += 1;
                first.get_or_insert(after);
                events.push(encoded);
            }
        }
        let count = u32::try_from(events.len()).unwrap_or(u32::MAX);
        let chunk = crate::archive::Chunk {
            session: req.session_key.clone(),
            prev: (!req.previous_chunk.is_empty()).then_some(req.previous_chunk),
            first: first.unwrap_or(req.upto_offset + 1),
            events,
        };
        let blobs = self.api.session_blobs(&req.session_key)?;
        let digest = crate::archive::store(&blobs, &chunk).await?;
        tracing::debug!(session = %req.session_key, upto = req.upto_offset, events = count, "events archived");
        Ok(Response::new(pb::ArchiveEventsResponse {
            chunk: digest,
            events: count,
        }))
    }

    async fn notify(
        &self,
        request: Request<pb::NotifyRequest>,
    ) -> Result<Response<pb::NotifyResponse>, Status> {
        let watched = request
            .into_inner()
            .notices
            .iter()
            .filter(|n| {
                let log = crate::events::feed_key(&n.session_id, &n.agent_id);
                self.api.hub().notice(&log, n.last_offset)
            })
            .count();
        Ok(Response::new(pb::NotifyResponse {
            watched: u32::try_from(watched).unwrap_or(u32::MAX),
        }))
    }
}
