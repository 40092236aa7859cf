//! Server-Sent Events from a vendor response, each read bounded by the
//! provider's idle timeout. Both wire APIs stream this way.

use std::pin::Pin;
use std::time::Duration;

use eventsource_stream::{Event, EventStreamError, Eventsource as _};
use futures::{Stream, StreamExt as _};

use crate::error::ProxyError;
use crate::http::error_chain;

pub(crate) use eventsource_stream::Event as SseEvent;

type Events = Pin<Box<dyn Stream<Item = Result<Event, EventStreamError<reqwest::Error>>> + Send>>;

/// The events of one response body. Dropping it closes the connection.
pub struct SseReader {
    events: Events,
    idle_timeout: Duration,
}

impl SseReader {
    pub fn new(resp: reqwest::Response, idle_timeout: Duration) -> Self {
        Self {
            events: Box::pin(resp.bytes_stream().eventsource()),
            idle_timeout,
        }
    }

    /// The next event; `Ok(None)` when the body ended cleanly. A silence
    /// longer than the idle timeout, a broken connection or undecodable bytes
    /// are errors (all retryable).
    pub async fn next(&mut self) -> Result<Option<SseEvent>, ProxyError> {
        match tokio::time::timeout(self.idle_timeout, self.events.next()).await {
            Err(_) => Err(ProxyError::IdleTimeout),
            Ok(None) => Ok(None),
            Ok(Some(Err(EventStreamError::Transport(e)))) => {
                Err(ProxyError::Stream(error_chain(&e.without_url())))
            }
            Ok(Some(Err(other))) => Err(ProxyError::Stream(other.to_string())),
            Ok(Some(Ok(event))) => Ok(Some(event)),
        }
    }
}
