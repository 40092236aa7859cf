//! What the fake answers, one [`Scripted`] per request, and the JSON form of a
//! script used by the `keel-fake-model` binary.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use super::sse::{self, SseEvent};

/// One scripted answer to one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Scripted {
    /// Streams these events, then ends the body normally (without a
    /// `response.completed` among them this is a stream cut short).
    Events(Vec<SseEvent>),
    /// Answers with this HTTP status and JSON body instead of a stream.
    Status(u16, Value),
    /// Like `Status`, with extra response headers (e.g. `Retry-After`).
    StatusWithHeaders(u16, Vec<(String, String)>, Value),
    /// Streams with pacing and a chosen ending.
    Stream(ScriptedStream),
}

/// A stream with a delay before each event and a chosen ending.
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptedStream {
    pub events: Vec<SseEvent>,
    /// Waited before each event.
    pub delay: Duration,
    pub end: StreamEnd,
    /// Extra response headers (e.g. rate limits).
    pub headers: Vec<(String, String)>,
}

/// How a scripted stream ends after its last event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// The body ends normally.
    Close,
    /// The connection is dropped mid-body (a transport error for the client).
    Abort,
    /// Nothing more is sent and the connection stays open until the client
    /// goes away or the fake is dropped (for idle timeouts and cancellation).
    Stall,
}

/// An HTTP error answer: status, extra headers, JSON body.
pub(crate) type ErrorAnswer = (u16, Vec<(String, String)>, Value);

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// created, one text delta, the message, completed.
fn assistant_events(text: &str) -> Vec<SseEvent> {
    let n = next_id();
    let item = format!("msg_{n}");
    vec![
        sse::created(),
        sse::text_delta(&item, text),
        sse::message(&item, text),
        sse::completed(&format!("resp_{n}"), 10, 5),
    ]
}

impl Scripted {
    /// An assistant turn: created, one text delta, the message, completed.
    pub fn assistant(text: &str) -> Self {
        Self::Events(assistant_events(text))
    }

    /// A turn that calls one tool: created, the function call, completed.
    pub fn tool_call(call_id: &str, name: &str, arguments: &str) -> Self {
        Self::Events(vec![
            sse::created(),
            sse::function_call(call_id, name, arguments),
            sse::completed(&format!("resp_{}", next_id()), 10, 5),
        ])
    }

    /// A turn that calls the argv `shell` tool with `argv`.
    pub fn shell(call_id: &str, argv: &[&str]) -> Self {
        Self::tool_call(call_id, "shell", &json!({ "command": argv }).to_string())
    }

    /// An assistant turn answered with these extra response headers.
    pub fn assistant_with_headers(text: &str, headers: &[(&str, &str)]) -> Self {
        Self::Stream(ScriptedStream {
            events: assistant_events(text),
            delay: Duration::ZERO,
            end: StreamEnd::Close,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })
    }

    /// An HTTP error with an OpenAI-shaped body
    /// (`{"error":{"message","type","code"}}`).
    pub fn error(status: u16, code: &str, message: &str) -> Self {
        Self::Status(
            status,
            json!({"error": {"message": message, "type": code, "code": code, "param": null}}),
        )
    }

    /// HTTP 429 `rate_limit_exceeded` with this `Retry-After` header value
    /// (delay-seconds or an HTTP date).
    pub fn rate_limited(retry_after: &str, message: &str) -> Self {
        Self::error_with_headers(
            429,
            "rate_limit_exceeded",
            message,
            &[("retry-after", retry_after)],
        )
    }

    /// An HTTP error with an OpenAI-shaped body and these extra headers.
    pub fn error_with_headers(
        status: u16,
        code: &str,
        message: &str,
        headers: &[(&str, &str)],
    ) -> Self {
        let Self::Status(status, body) = Self::error(status, code, message) else {
            unreachable!("error() builds a Status")
        };
        let headers = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self::StatusWithHeaders(status, headers, body)
    }

    /// A Chat Completions assistant turn: one text chunk, `stop`, usage,
    /// `[DONE]`.
    pub fn chat_assistant(text: &str) -> Self {
        Self::Events(vec![
            sse::chat::text(text),
            sse::chat::finish("stop"),
            sse::chat::usage(10, 5),
            sse::chat::done(),
        ])
    }

    /// A Chat Completions turn that calls one tool.
    pub fn chat_tool_call(call_id: &str, name: &str, arguments: &str) -> Self {
        Self::Events(vec![
            sse::chat::tool_call(0, Some(call_id), Some(name), arguments),
            sse::chat::finish("tool_calls"),
            sse::chat::usage(10, 5),
            sse::chat::done(),
        ])
    }

    /// These events with `delay` before each one.
    pub fn paced(events: Vec<SseEvent>, delay: Duration) -> Self {
        Self::Stream(ScriptedStream {
            events,
            delay,
            end: StreamEnd::Close,
            headers: Vec::new(),
        })
    }

    /// These events, then the connection is dropped mid-body.
    pub fn aborted(events: Vec<SseEvent>) -> Self {
        Self::Stream(ScriptedStream {
            events,
            delay: Duration::ZERO,
            end: StreamEnd::Abort,
            headers: Vec::new(),
        })
    }

    /// These events, then silence with the connection held open.
    pub fn stalled(events: Vec<SseEvent>) -> Self {
        Self::Stream(ScriptedStream {
            events,
            delay: Duration::ZERO,
            end: StreamEnd::Stall,
            headers: Vec::new(),
        })
    }

    /// Parses one entry of a JSON script: an array of events, or
    /// `{"status": N, "body": {...}, "headers": {"name": "value"}}`, or
    /// `{"events": [...], "delay_ms": N, "end": "close" | "abort" | "stall"}`.
    /// An event is a Responses API event object (with `type`), a Chat
    /// Completions chunk object (with `choices`), or a string sent verbatim
    /// as data (`"[DONE]"`).
    pub fn from_json(entry: &Value) -> anyhow::Result<Self> {
        if let Some(events) = entry.as_array() {
            return Ok(Self::Events(parse_events(events)?));
        }
        let Some(obj) = entry.as_object() else {
            bail!("a script entry must be an array of events or an object, got {entry}");
        };
        if let Some(status) = obj.get("status") {
            let status = status
                .as_u64()
                .and_then(|s| u16::try_from(s).ok())
                .filter(|s| (100..=999).contains(s))
                .with_context(|| format!("invalid HTTP status {status}"))?;
            let body = obj.get("body").cloned().unwrap_or(Value::Null);
            let Some(headers) = obj.get("headers") else {
                return Ok(Self::Status(status, body));
            };
            let headers = headers
                .as_object()
                .context("\"headers\" must be an object of strings")?
                .iter()
                .map(|(k, v)| match v.as_str() {
                    Some(v) => Ok((k.clone(), v.to_string())),
                    None => bail!("header {k:?} must be a string"),
                })
                .collect::<anyhow::Result<_>>()?;
            return Ok(Self::StatusWithHeaders(status, headers, body));
        }
        let events = obj
            .get("events")
            .and_then(Value::as_array)
            .context("a script object needs \"status\" or \"events\"")?;
        let delay = Duration::from_millis(obj.get("delay_ms").and_then(Value::as_u64).unwrap_or(0));
        let end = match obj.get("end").and_then(Value::as_str).unwrap_or("close") {
            "close" => StreamEnd::Close,
            "abort" => StreamEnd::Abort,
            "stall" => StreamEnd::Stall,
            other => bail!("unknown stream end {other:?} (use close, abort or stall)"),
        };
        Ok(Self::Stream(ScriptedStream {
            events: parse_events(events)?,
            delay,
            end,
            headers: Vec::new(),
        }))
    }

    /// The stream to serve, or the status, headers and body of an HTTP error
    /// answer.
    pub(crate) fn into_stream(self) -> Result<ScriptedStream, ErrorAnswer> {
        match self {
            Self::Events(events) => Ok(ScriptedStream {
                events,
                delay: Duration::ZERO,
                end: StreamEnd::Close,
                headers: Vec::new(),
            }),
            Self::Stream(s) => Ok(s),
            Self::Status(status, body) => Err((status, Vec::new(), body)),
            Self::StatusWithHeaders(status, headers, body) => Err((status, headers, body)),
        }
    }
}

fn parse_events(events: &[Value]) -> anyhow::Result<Vec<SseEvent>> {
    events
        .iter()
        .map(|e| {
            if let Some(text) = e.as_str() {
                return Ok(sse::raw(text));
            }
            if e.get("choices").is_some() {
                return Ok(SseEvent::data_only(e.clone()));
            }
            if e.get("type").and_then(Value::as_str).is_none() {
                bail!(
                    "an event must be a JSON object with a string \"type\", a chat chunk \
                     with \"choices\", or a string, got {e}"
                );
            }
            Ok(SseEvent::new(e.clone()))
        })
        .collect()
}

/// Parses a whole JSON script: an array of entries (see [`Scripted::from_json`]).
pub fn parse_script(text: &str) -> anyhow::Result<Vec<Scripted>> {
    let value: Value = serde_json::from_str(text).context("the script is not valid JSON")?;
    let Some(entries) = value.as_array() else {
        bail!("the script must be a JSON array of responses");
    };
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| Scripted::from_json(e).with_context(|| format!("script entry {i}")))
        .collect()
}
