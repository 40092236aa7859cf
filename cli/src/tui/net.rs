//! The session's event stream, kept open: StreamEvents with `follow` and
//! live deltas, opened again after the last offset seen whenever it breaks
//! (session-api restarting, the network), with a growing pause between
//! tries. It ends when the session closes, or on an error trying again
//! cannot fix (an unknown session, refused credentials).

use std::time::Duration;

use keel_proto::v1::event::Msg;
use keel_proto::v1::session_service_client::SessionServiceClient;
use keel_proto::v1::stream_events_response::Kind;
use keel_proto::v1::{StreamEventsRequest, StreamEventsResponse};
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::client::error_chain;

pub(crate) type Client = SessionServiceClient<
    tonic::service::interceptor::InterceptedService<Channel, keel_auth::Bearer>,
>;

/// What the stream task reports.
#[derive(Debug)]
pub(crate) enum NetEvent {
    /// Boxed: a response is far bigger than the other variants.
    Response(Box<StreamEventsResponse>),
    /// The stream is open (again).
    Connected,
    /// The stream broke; the next try is `attempt`.
    Lost { attempt: u32, why: String },
    /// The stream ended after the session closed.
    Ended,
    /// An error trying again would not fix.
    Failed(String),
}

/// The first pause after a break, and the longest.
const FIRST_PAUSE: Duration = Duration::from_millis(250);
const MAX_PAUSE: Duration = Duration::from_secs(5);

/// Whether a failed StreamEvents is worth opening again.
pub(crate) fn retryable(status: &Status) -> bool {
    !matches!(
        status.code(),
        Code::NotFound
            | Code::InvalidArgument
            | Code::Unauthenticated
            | Code::PermissionDenied
            | Code::Unimplemented
            | Code::OutOfRange
            | Code::FailedPrecondition
    )
}

fn describe(status: &Status) -> String {
    if status.message().is_empty() {
        status.code().description().to_string()
    } else {
        error_chain(status)
    }
}

/// Follows `session_id` after `after_offset`, sending what happens to `tx`
/// tagged with `generation` (so a stream replaced by another is told
/// apart). Abort the handle to stop it.
pub(crate) fn follow(
    client: Client,
    session_id: String,
    after_offset: u64,
    generation: u64,
    tx: UnboundedSender<(u64, NetEvent)>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let send = |event: NetEvent| tx.send((generation, event)).is_ok();
        let mut last = after_offset;
        let mut attempt = 0u32;
        let mut pause = FIRST_PAUSE;
        let mut closed = false;
        loop {
            let request = StreamEventsRequest {
                session_id: session_id.clone(),
                after_offset: last,
                follow: true,
                live_deltas: true,
                ..Default::default()
            };
            let opened = client.clone().stream_events(request).await;
            let failure = match opened {
                Ok(response) => {
                    if !send(NetEvent::Connected) {
                        return;
                    }
                    attempt = 0;
                    pause = FIRST_PAUSE;
                    let mut stream = response.into_inner();
                    loop {
                        match stream.message().await {
                            Ok(Some(message)) => {
                                match &message.kind {
                                    Some(Kind::Event(e)) => {
                                        last = last.max(e.offset);
                                        closed |= matches!(e.msg, Some(Msg::ShutdownComplete(_)));
                                    }
                                    Some(Kind::Gap(g)) => {
                                        last = last.max(g.first_retained_offset.saturating_sub(1));
                                    }
                                    _ => {}
                                }
                                if !send(NetEvent::Response(Box::new(message))) {
                                    return;
                                }
                            }
                            // The session closed.
                            Ok(None) if closed => {
                                send(NetEvent::Ended);
                                return;
                            }
                            // A server going away may end the stream cleanly.
                            Ok(None) => break Status::unavailable("the event stream ended"),
                            Err(status) => break status,
                        }
                    }
                }
                Err(status) => status,
            };
            if !retryable(&failure) {
                send(NetEvent::Failed(describe(&failure)));
                return;
            }
            attempt += 1;
            if !send(NetEvent::Lost {
                attempt,
                why: describe(&failure),
            }) {
                return;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_PAUSE);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_errors_are_retried() {
        assert!(retryable(&Status::unavailable("connection refused")));
        assert!(retryable(&Status::unknown("transport error")));
        assert!(retryable(&Status::internal("h2 protocol error")));
        assert!(retryable(&Status::cancelled("")));
        assert!(!retryable(&Status::not_found("no session")));
        assert!(!retryable(&Status::unauthenticated("bad token")));
    }
}
