//! One model call against one provider: attempts with Codex's stream-level
//! retries (Codex: `codex-rs/core/src/client.rs`), deltas forwarded as they arrive, output items stored in
//! the blob store as they finish. What a call returns is only ever the items
//! of one attempt that completed; a failed attempt's stored items are
//! orphans nothing refers to.

use std::time::{Instant, SystemTime};

use bytes::Bytes;
use keel_blobstore::BlobStore;
use keel_proto::v1::output_item_done::Item;
use keel_proto::v1::stream_response_response::Event;
use keel_proto::v1::{
    OutputTextDelta, RateLimitSnapshot, ReasoningSummaryDelta, ReasoningTextDelta, StreamError,
    StreamResponseResponse, TokenUsage,
};
use reqwest::Url;
use tokio::sync::mpsc;
use tonic::Status;

use crate::config::{Config, Provider};
use crate::error::{ProxyError, Retry};
use crate::http::{Outgoing, VendorClient};
use crate::items;
use crate::metrics::Metrics;
use crate::retry::backoff;
use crate::sse::SseReader;
use crate::wire::{EventStream, ResponseEvent};

pub(crate) type Sender = mpsc::Sender<Result<StreamResponseResponse, Status>>;

/// Everything one call needs, borrowed from the service.
pub(crate) struct Call<'a> {
    pub config: &'a Config,
    pub provider: &'a Provider,
    pub url: &'a Url,
    pub client: &'a VendorClient,
    pub blobs: &'a BlobStore,
    pub metrics: &'a Metrics,
    pub session_id: &'a str,
    pub model: &'a str,
    pub started: Instant,
}

/// A completed response: its stored output items, in order.
#[derive(Debug)]
pub(crate) struct Sampled {
    pub response_id: String,
    pub model: Option<String>,
    pub usage: TokenUsage,
    pub outputs: Vec<(String, Item)>,
    /// What the response's headers said of the provider's rate limits.
    pub rate_limits: Option<RateLimitSnapshot>,
}

impl Call<'_> {
    /// Samples until an attempt completes, retrying what is worth retrying up
    /// to the provider's `stream_max_retries` with a `stream_error` each time.
    pub(crate) async fn run(&self, body: Bytes, tx: &Sender) -> Result<Sampled, ProxyError> {
        let max = self.provider.stream_max_retries;
        let mut retries = 0;
        let mut first_byte_seen = false;
        loop {
            let err = match self.attempt(body.clone(), tx, &mut first_byte_seen).await {
                Ok(sampled) => return Ok(sampled),
                Err(e) => e,
            };
            if matches!(err, ProxyError::ClientGone) {
                return Err(err);
            }
            let after = match err.retry() {
                Retry::Never => return Err(err),
                Retry::Request => None,
                Retry::Stream { after } => after,
            };
            if retries >= max {
                return Err(if retries == 0 {
                    err
                } else {
                    ProxyError::RetriesExhausted {
                        retries,
                        last: Box::new(err),
                    }
                });
            }
            retries += 1;
            let timing = &self.config.retry;
            let delay = after.unwrap_or_else(|| backoff(timing, retries));
            if delay > timing.max_delay {
                return Err(ProxyError::RetryTooFarAway {
                    wait: delay,
                    last: Box::new(err),
                });
            }
            // Counted here as it is retried; the service counts the error
            // that ends a call.
            self.metrics.error(&self.provider.id, err.class());
            let details = self.config.redact(&err.to_string());
            tracing::warn!(
                provider = %self.provider.id,
                retry = retries,
                max,
                delay_ms = delay.as_millis() as u64,
                error = %details,
                "retrying the model request"
            );
            self.metrics.retry(&self.provider.id, "stream");
            tracing::Span::current().record("keel.model.retries", retries);
            let notice = Event::StreamError(StreamError {
                message: format!("Reconnecting... {retries}/{max}"),
                attempt: retries,
                details,
            });
            send(tx, notice).await?;
            tokio::time::sleep(delay).await;
        }
    }

    async fn attempt(
        &self,
        body: Bytes,
        tx: &Sender,
        first_byte_seen: &mut bool,
    ) -> Result<Sampled, ProxyError> {
        let out = Outgoing {
            provider: self.provider,
            url: self.url,
            body,
            session_id: self.session_id,
        };
        let mut on_retry = |e: &ProxyError, n: u32| {
            self.metrics.error(&self.provider.id, e.class());
            self.metrics.retry(&self.provider.id, "request");
            tracing::Span::current().record("keel.model.retries", n);
            tracing::warn!(
                provider = %self.provider.id,
                retry = n,
                error = %self.config.redact(&e.to_string()),
                "retrying the HTTP request"
            );
        };
        let resp = self
            .client
            .send(&out, &self.config.retry, &mut on_retry)
            .await?;
        let rate_limits = crate::ratelimits::from_headers(resp.headers(), SystemTime::now());
        let sse = SseReader::new(resp, self.provider.stream_idle_timeout);
        let mut stream = EventStream::new(self.provider.wire_api, sse);
        let mut outputs = Vec::new();
        loop {
            let event = stream.next().await?;
            if !*first_byte_seen {
                *first_byte_seen = true;
                self.metrics
                    .first_byte(&self.provider.id, self.model, self.started.elapsed());
                tracing::Span::current().record(
                    "keel.model.time_to_first_byte_ms",
                    self.started.elapsed().as_secs_f64() * 1000.0,
                );
            }
            let forward = match event {
                ResponseEvent::OutputTextDelta { item_id, delta } => {
                    Event::OutputTextDelta(OutputTextDelta { item_id, delta })
                }
                ResponseEvent::ReasoningSummaryDelta {
                    item_id,
                    summary_index,
                    delta,
                } => Event::ReasoningSummaryDelta(ReasoningSummaryDelta {
                    item_id,
                    summary_index,
                    delta,
                }),
                ResponseEvent::ReasoningTextDelta {
                    item_id,
                    content_index,
                    delta,
                } => Event::ReasoningTextDelta(ReasoningTextDelta {
                    item_id,
                    content_index,
                    delta,
                }),
                ResponseEvent::OutputItemDone(item) => {
                    // Stored now, so blob writes overlap the stream; announced
                    // only once the response completed.
                    // Summarised before the id goes: a web search's id is
                    // its call id.
                    let summary = items::summarize(&item);
                    let item = items::strip_id(item);
                    let digest = self.blobs.put_json(&item).await?;
                    outputs.push((digest, summary));
                    continue;
                }
                ResponseEvent::Completed {
                    response_id,
                    model,
                    usage,
                } => {
                    return Ok(Sampled {
                        response_id,
                        model,
                        usage,
                        outputs,
                        rate_limits,
                    });
                }
            };
            send(tx, forward).await?;
        }
    }
}

/// Sends one event; `ClientGone` when nobody listens any more.
pub(crate) async fn send(tx: &Sender, event: Event) -> Result<(), ProxyError> {
    tx.send(Ok(StreamResponseResponse { event: Some(event) }))
        .await
        .map_err(|_| ProxyError::ClientGone)
}
