//! The vendor side: one streamed `POST {base_url}/responses` call, its HTTP
//! errors, and its Server-Sent Events turned into typed events (§9.1–9.2).

use std::pin::Pin;
use std::time::Duration;

use eventsource_stream::{Event as SseEvent, EventStreamError, Eventsource as _};
use futures::{Stream, StreamExt as _};
use keel_proto::v1::TokenUsage;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::config::Config;
use crate::error::ProxyError;

/// The request body. `store` is false, so items are never referenced by id.
#[derive(Debug, Serialize)]
pub struct ResponsesRequest {
    pub model: String,
    pub instructions: String,
    pub input: Vec<Value>,
    pub tools: Vec<Value>,
    pub tool_choice: &'static str,
    pub parallel_tool_calls: bool,
    pub store: bool,
    pub stream: bool,
    /// The session id: stable for the whole conversation, so the vendor's
    /// prompt cache keeps hitting.
    pub prompt_cache_key: String,
}

impl ResponsesRequest {
    pub fn new(
        session_id: &str,
        model: String,
        instructions: String,
        input: Vec<Value>,
        tools: Vec<Value>,
        parallel_tool_calls: bool,
    ) -> Self {
        Self {
            model,
            instructions,
            input,
            tools,
            tool_choice: "auto",
            parallel_tool_calls,
            store: false,
            stream: true,
            prompt_cache_key: session_id.to_string(),
        }
    }
}

/// What the proxy acts on; every other event is ignored.
#[derive(Debug, Clone, PartialEq)]
pub enum ResponseEvent {
    OutputTextDelta {
        item_id: String,
        delta: String,
    },
    ReasoningSummaryDelta {
        item_id: String,
        summary_index: u32,
        delta: String,
    },
    /// The authoritative item, as the vendor sent it.
    OutputItemDone(Map<String, Value>),
    Completed {
        response_id: String,
        model: Option<String>,
        usage: TokenUsage,
    },
}

/// Calls the Responses API.
#[derive(Debug, Clone)]
pub struct ResponsesClient {
    http: reqwest::Client,
    url: String,
    config: Config,
}

impl ResponsesClient {
    pub fn new(config: Config) -> Result<Self, ProxyError> {
        // reqwest is built without a default TLS provider; make sure one is
        // installed (main does this too; a second install is a no-op error).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| ProxyError::Transport(error_chain(&e.without_url())))?;
        let url = format!("{}/responses", config.base_url.trim_end_matches('/'));
        Ok(Self { http, url, config })
    }

    /// Sends the request and returns its event stream once the vendor has
    /// answered 2xx; any other status becomes the matching error.
    pub async fn stream(&self, req: &ResponsesRequest) -> Result<ResponseStream, ProxyError> {
        let key = self.config.api_key.as_ref().ok_or(ProxyError::NoApiKey)?;
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", key.expose()))
            .map_err(|_| ProxyError::InvalidApiKey)?;
        auth.set_sensitive(true);
        let session = HeaderValue::from_str(&req.prompt_cache_key).map_err(|_| {
            ProxyError::InvalidRequest("session_id must be a valid HTTP header value".into())
        })?;
        let send = self
            .http
            .post(&self.url)
            .header(AUTHORIZATION, auth)
            .header("session_id", session)
            .header("originator", "keel")
            .header(ACCEPT, "text/event-stream")
            .json(req)
            .send();
        let timeout = self.config.stream_idle_timeout;
        let resp = tokio::time::timeout(timeout, send)
            .await
            .map_err(|_| {
                ProxyError::Transport(format!("no response within {} ms", timeout.as_millis()))
            })?
            .map_err(|e| ProxyError::Transport(error_chain(&e.without_url())))?;
        let status = resp.status();
        if !status.is_success() {
            let body = read_error_body(resp, timeout).await;
            return Err(status_error(status.as_u16(), &body));
        }
        Ok(ResponseStream {
            events: Box::pin(resp.bytes_stream().eventsource()),
            idle_timeout: timeout,
        })
    }
}

type SseStream =
    Pin<Box<dyn Stream<Item = Result<SseEvent, EventStreamError<reqwest::Error>>> + Send>>;

/// The vendor's events. Dropping it closes the connection.
pub struct ResponseStream {
    events: SseStream,
    idle_timeout: Duration,
}

impl ResponseStream {
    /// The next event worth acting on. `response.failed`, `response.incomplete`,
    /// a stream that ends before `response.completed`, and a silence longer
    /// than the idle timeout are errors. Call no more after `Completed`.
    pub async fn next(&mut self) -> Result<ResponseEvent, ProxyError> {
        loop {
            let sse = match tokio::time::timeout(self.idle_timeout, self.events.next()).await {
                Err(_) => return Err(ProxyError::IdleTimeout),
                Ok(None) => return Err(ProxyError::StreamClosed),
                Ok(Some(Err(e))) => return Err(stream_error(e)),
                Ok(Some(Ok(sse))) => sse,
            };
            if let Some(event) = parse_event(&sse)? {
                return Ok(event);
            }
        }
    }
}

/// One SSE event; `Ok(None)` for events the proxy does not need, and for data
/// that is not JSON (skipped, as Codex does).
fn parse_event(sse: &SseEvent) -> Result<Option<ResponseEvent>, ProxyError> {
    let Ok(data) = serde_json::from_str::<Value>(&sse.data) else {
        tracing::debug!(event = %sse.event, "skipping an SSE event whose data is not JSON");
        return Ok(None);
    };
    let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_string);
    let kind = data
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or(&sse.event);
    let response = data.get("response").unwrap_or(&Value::Null);
    Ok(match kind {
        "response.output_text.delta" => {
            text(&data, "delta").map(|delta| ResponseEvent::OutputTextDelta {
                item_id: text(&data, "item_id").unwrap_or_default(),
                delta,
            })
        }
        "response.reasoning_summary_text.delta" => {
            text(&data, "delta").map(|delta| ResponseEvent::ReasoningSummaryDelta {
                item_id: text(&data, "item_id").unwrap_or_default(),
                summary_index: data
                    .get("summary_index")
                    .and_then(Value::as_u64)
                    .and_then(|i| u32::try_from(i).ok())
                    .unwrap_or(0),
                delta,
            })
        }
        "response.output_item.done" => match data.get("item") {
            Some(Value::Object(item)) => Some(ResponseEvent::OutputItemDone(item.clone())),
            _ => {
                tracing::warn!("skipping response.output_item.done without an item object");
                None
            }
        },
        "response.completed" => Some(ResponseEvent::Completed {
            response_id: text(response, "id").unwrap_or_default(),
            model: text(response, "model"),
            usage: usage(response.get("usage").unwrap_or(&Value::Null)),
        }),
        "response.failed" => {
            let error = response.get("error").unwrap_or(&Value::Null);
            let code = text(error, "code").unwrap_or_default();
            let message = text(error, "message")
                .unwrap_or_else(|| "the model API reported response.failed".into());
            return Err(ProxyError::from_failed(&code, message));
        }
        "response.incomplete" => {
            let reason = response
                .get("incomplete_details")
                .and_then(|d| text(d, "reason"))
                .unwrap_or_else(|| "unknown".into());
            return Err(ProxyError::Incomplete(reason));
        }
        _ => None,
    })
}

/// The Responses API `usage` object; absent or null parts count as 0.
fn usage(u: &Value) -> TokenUsage {
    let n = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
    let input_tokens = n(u.get("input_tokens"));
    let output_tokens = n(u.get("output_tokens"));
    let total = n(u.get("total_tokens"));
    TokenUsage {
        input_tokens,
        cached_input_tokens: n(u.pointer("/input_tokens_details/cached_tokens")),
        output_tokens,
        reasoning_output_tokens: n(u.pointer("/output_tokens_details/reasoning_tokens")),
        total_tokens: if total > 0 {
            total
        } else {
            input_tokens + output_tokens
        },
    }
}

/// The error for a non-2xx answer, with the vendor's message when its body
/// is the usual `{"error":{"message":...}}`, else an excerpt of the body.
fn status_error(status: u16, body: &str) -> ProxyError {
    let message = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| {
            v.pointer("/error/message")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| excerpt(body, 1024));
    let body = if message.is_empty() {
        "(empty body)".to_string()
    } else {
        message
    };
    match status {
        401 | 403 => ProxyError::Unauthorized { status, body },
        400 => ProxyError::BadRequest { message: body },
        404 => ProxyError::NotFound { body },
        429 => ProxyError::RateLimited { body },
        _ => ProxyError::ServerError { status, body },
    }
}

/// Reads at most 64 KiB of an error body; a body that fails to arrive is
/// reported as what arrived so far.
async fn read_error_body(mut resp: reqwest::Response, timeout: Duration) -> String {
    const LIMIT: usize = 64 * 1024;
    let mut body = Vec::new();
    while body.len() < LIMIT {
        match tokio::time::timeout(timeout, resp.chunk()).await {
            Ok(Ok(Some(chunk))) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

/// `text` cut to at most `max` bytes at a char boundary, trimmed.
pub(crate) fn excerpt(text: &str, max: usize) -> String {
    let text = text.trim();
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

fn stream_error(e: EventStreamError<reqwest::Error>) -> ProxyError {
    match e {
        EventStreamError::Transport(e) => ProxyError::Stream(error_chain(&e.without_url())),
        other => ProxyError::Stream(other.to_string()),
    }
}

/// An error and its causes, `outer: inner: innermost`.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn parse(data: &str) -> Result<Option<ResponseEvent>, ProxyError> {
        parse_event(&SseEvent {
            event: "x".into(),
            data: data.into(),
            ..SseEvent::default()
        })
    }

    #[test]
    fn usage_maps_and_null_details_count_zero() {
        let u = usage(&serde_json::json!({
            "input_tokens": 100,
            "input_tokens_details": {"cached_tokens": 40},
            "output_tokens": 20,
            "output_tokens_details": {"reasoning_tokens": 7},
            "total_tokens": 120,
        }));
        assert_eq!(
            u,
            TokenUsage {
                input_tokens: 100,
                cached_input_tokens: 40,
                output_tokens: 20,
                reasoning_output_tokens: 7,
                total_tokens: 120,
            }
        );
        let u = usage(&serde_json::json!({
            "input_tokens": 3,
            "input_tokens_details": null,
            "output_tokens": 2,
            "output_tokens_details": null,
        }));
        assert_eq!(
            (
                u.cached_input_tokens,
                u.reasoning_output_tokens,
                u.total_tokens
            ),
            (0, 0, 5)
        );
        assert_eq!(usage(&Value::Null), TokenUsage::default());
    }

    #[test]
    fn events_parse_and_unknown_or_broken_ones_are_skipped() {
        assert_eq!(
            parse(r#"{"type":"response.output_text.delta","item_id":"m","delta":"hi"}"#).unwrap(),
            Some(ResponseEvent::OutputTextDelta {
                item_id: "m".into(),
                delta: "hi".into()
            })
        );
        assert_eq!(
            parse(r#"{"type":"response.reasoning_summary_text.delta","item_id":"r","summary_index":2,"delta":"d"}"#)
                .unwrap(),
            Some(ResponseEvent::ReasoningSummaryDelta {
                item_id: "r".into(),
                summary_index: 2,
                delta: "d".into()
            })
        );
        assert_eq!(
            parse(r#"{"type":"response.created","response":{}}"#).unwrap(),
            None
        );
        assert_eq!(parse("not json").unwrap(), None);
        assert_eq!(
            parse(r#"{"type":"response.output_item.done"}"#).unwrap(),
            None
        );
        let Err(ProxyError::Incomplete(reason)) = parse(
            r#"{"type":"response.incomplete","response":{"incomplete_details":{"reason":"max_output_tokens"}}}"#,
        ) else {
            panic!("incomplete must fail")
        };
        assert_eq!(reason, "max_output_tokens");
        let Err(ProxyError::ContextWindowExceeded(msg)) = parse(
            r#"{"type":"response.failed","response":{"error":{"code":"context_length_exceeded","message":"too long"}}}"#,
        ) else {
            panic!("failed must fail")
        };
        assert_eq!(msg, "too long");
    }

    #[test]
    fn http_statuses_map_to_errors() {
        let body =
            r#"{"error":{"message":"The model `nope` does not exist","code":"model_not_found"}}"#;
        let e = status_error(404, body);
        assert_eq!(e.into_status().code(), tonic::Code::NotFound);
        let e = status_error(400, r#"{"error":{"message":"bad tools"}}"#);
        let s = e.into_status();
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        assert!(s.message().contains("bad tools"));
        assert_eq!(
            status_error(403, "").into_status().code(),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            status_error(429, "slow").into_status().code(),
            tonic::Code::ResourceExhausted
        );
        assert_eq!(
            status_error(503, "<html>").into_status().code(),
            tonic::Code::Unavailable
        );
        assert!(status_error(500, "").to_string().contains("(empty body)"));
    }

    #[test]
    fn excerpt_cuts_at_char_boundaries() {
        assert_eq!(excerpt("  short ", 10), "short");
        assert_eq!(excerpt("ééé", 3), "é…");
    }
}
