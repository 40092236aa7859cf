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

    async fn notify(
        &self,
        request: Request<pb::NotifyRequest>,
    ) -> Result<Response<pb::NotifyResponse>, Status> {
        let watched = request
            .into_inner()
            .notices
            .iter()
            .filter(|n| self.api.hub().notice(&n.session_id, n.last_offset))
            .count();
        Ok(Response::new(pb::NotifyResponse {
            watched: u32::try_from(watched).unwrap_or(u32::MAX),
        }))
    }
}
