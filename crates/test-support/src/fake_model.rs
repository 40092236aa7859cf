//! A scripted fake of the OpenAI Responses API and Chat Completions: a real
//! HTTP server on loopback that answers each `POST /v1/responses` or
//! `POST /v1/chat/completions` (with or without `/v1`) with the next
//! [`Scripted`] response, streaming Server-Sent Events exactly as the vendor
//! does, and records every request it receives. Both paths share one script;
//! script chat turns with [`sse::chat`] events.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use std::time::Duration;
//! use keel_test_support::fake_model::{FakeModel, Scripted, sse};
//! let model = FakeModel::start(vec![
//!     Scripted::Events(vec![
//!         sse::created(),
//!         sse::function_call("call_1", "shell", r#"{"command":["echo","hello"]}"#),
//!         sse::completed("resp_1", 10, 5),
//!     ]),
//!     Scripted::assistant("done"),
//! ])
//! .await?;
//! // ... point the model-proxy at model.base_url() and run a turn ...
//! let requests = model.wait_for_requests(2, Duration::from_secs(10)).await?;
//! assert!(requests[1].function_call_output("call_1").is_some());
//! # Ok(())
//! # }
//! ```
//!
//! When the script is exhausted, a request gets HTTP 500 with an error saying
//! so, which the caller sees as a failed model call.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

mod script;
pub mod sse;

pub use script::{Scripted, ScriptedStream, StreamEnd, parse_script};
pub use sse::SseEvent;

/// A request the fake received.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// The raw query string (empty when there is none).
    pub query: String,
    /// Header names are lowercase; values that are not UTF-8 are converted lossily.
    pub headers: Vec<(String, String)>,
    /// The parsed JSON body (`null` when the body was not JSON).
    pub body: Value,
}

impl RecordedRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The request's `input` items (empty when absent).
    pub fn input(&self) -> &[Value] {
        self.body
            .get("input")
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice)
    }

    /// The Chat Completions `messages` (empty when absent).
    pub fn messages(&self) -> &[Value] {
        self.body
            .get("messages")
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice)
    }

    /// The input without the per-call context Keel puts first (developer
    /// messages and the user message carrying AGENTS.md and the
    /// `<environment_context>`): the stored conversation itself.
    pub fn conversation(&self) -> &[Value] {
        let input = self.input();
        let context = input
            .iter()
            .take_while(|item| {
                item.get("role").and_then(Value::as_str) == Some("developer")
                    || (item.get("role").and_then(Value::as_str) == Some("user")
                        && item["content"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|c| c.get("text").and_then(Value::as_str))
                            .any(|t| {
                                t.starts_with("<environment_context>")
                                    || t.starts_with("# AGENTS.md instructions for ")
                            }))
            })
            .count();
        &input[context..]
    }

    /// The names of the offered `tools`.
    pub fn tool_names(&self) -> Vec<String> {
        self.body
            .get("tools")
            .and_then(Value::as_array)
            .map(|tools| {
                tools
                    .iter()
                    .filter_map(|t| t.get("name").and_then(Value::as_str))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The offered tool named `name`, as sent.
    pub fn tool_spec(&self, name: &str) -> Option<Value> {
        self.body
            .get("tools")
            .and_then(Value::as_array)?
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some(name))
            .cloned()
    }

    /// The output sent back for tool call `call_id`: the `function_call_output`
    /// (or `custom_tool_call_output`) item's `output`, as text when it is a
    /// string and as JSON otherwise.
    pub fn function_call_output(&self, call_id: &str) -> Option<String> {
        self.input()
            .iter()
            .filter(|item| {
                matches!(
                    item.get("type").and_then(Value::as_str),
                    Some("function_call_output" | "custom_tool_call_output")
                )
            })
            .find(|item| item.get("call_id").and_then(Value::as_str) == Some(call_id))
            .and_then(|item| item.get("output"))
            .map(|out| match out {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
    }
}

/// The running fake. Dropping it stops the server and ends stalled streams.
pub struct FakeModel {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

struct Shared {
    inner: Mutex<Inner>,
    /// Signalled whenever a request is recorded or a stream closes.
    changed: Notify,
    shutdown: watch::Sender<bool>,
}

#[derive(Default)]
struct Inner {
    script: VecDeque<Scripted>,
    /// Scripts for requests whose user messages contain a key (see
    /// [`FakeModel::route`]), checked in order before `script`.
    routes: Vec<(String, VecDeque<Scripted>)>,
    requests: Vec<RecordedRequest>,
    closed_streams: usize,
    /// When each streamed SSE event was handed to the connection.
    sent: Vec<(std::time::Instant, Value)>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panicking test thread cannot leave Inner half-updated; keep going.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl FakeModel {
    /// Starts serving `script` on a free loopback port.
    pub async fn start(script: Vec<Scripted>) -> anyhow::Result<FakeModel> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot bind the fake model's port")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                script: script.into(),
                ..Inner::default()
            }),
            changed: Notify::new(),
            shutdown: watch::Sender::new(false),
        });
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("keel fake model: server stopped: {e}");
            }
        });
        Ok(FakeModel {
            addr,
            shared,
            server,
        })
    }

    /// `http://127.0.0.1:PORT/v1`, the value for `OPENAI_BASE_URL`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// Scripted responses not yet served.
    pub fn remaining(&self) -> usize {
        self.shared.lock().script.len()
    }

    /// Answers the requests whose user messages contain `key` with
    /// `script`, in order, instead of the main script: how a test scripts
    /// several agents that call the model at the same time (a sub-agent's
    /// requests carry its task as a user message; its parent's do not).
    pub fn route(&self, key: &str, script: Vec<Scripted>) {
        self.shared
            .lock()
            .routes
            .push((key.to_string(), script.into()));
    }

    /// Appends a response to the script.
    pub fn push(&self, s: Scripted) {
        self.shared.lock().script.push_back(s);
    }

    /// Waits until at least `n` requests have arrived, then returns them all.
    pub async fn wait_for_requests(
        &self,
        n: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<RecordedRequest>> {
        if self.wait_until(timeout, |i| i.requests.len() >= n).await {
            return Ok(self.requests());
        }
        let got: Vec<String> = self
            .requests()
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect();
        Err(anyhow!(
            "timed out after {timeout:?} waiting for {n} request(s) to the fake model; got {}: {got:?}",
            got.len()
        ))
    }

    /// Every streamed SSE event's data with the instant it was handed to the
    /// connection, in order: for latency measurements.
    pub fn sent_events(&self) -> Vec<(std::time::Instant, Value)> {
        self.shared.lock().sent.clone()
    }

    /// How many response streams have ended (normally, aborted, or because
    /// the client went away).
    pub fn closed_streams(&self) -> usize {
        self.shared.lock().closed_streams
    }

    /// Waits until at least `n` response streams have ended.
    pub async fn wait_for_closed_streams(&self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        if self.wait_until(timeout, |i| i.closed_streams >= n).await {
            return Ok(());
        }
        Err(anyhow!(
            "timed out after {timeout:?} waiting for {n} stream(s) to close; {} closed",
            self.closed_streams()
        ))
    }

    async fn wait_until(&self, timeout: Duration, done: impl Fn(&Inner) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Created before the check, so a change in between still wakes it.
            let changed = self.shared.changed.notified();
            if done(&self.shared.lock()) {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return done(&self.shared.lock());
            }
        }
    }
}

impl Drop for FakeModel {
    fn drop(&mut self) {
        self.shared.shutdown.send_replace(true);
        self.server.abort();
    }
}

/// The texts of a request's user messages (Responses `input` items and
/// Chat `messages`).
fn user_texts(body: &Value) -> Vec<String> {
    let items = body
        .get("input")
        .or_else(|| body.get("messages"))
        .and_then(Value::as_array);
    let mut texts = Vec::new();
    for item in items.into_iter().flatten() {
        if item.get("role").and_then(Value::as_str) != Some("user") {
            continue;
        }
        match item.get("content") {
            Some(Value::String(text)) => texts.push(text.clone()),
            Some(Value::Array(parts)) => texts.extend(
                parts
                    .iter()
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .map(String::from),
            ),
            _ => {}
        }
    }
    texts
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let is_model_call = method == Method::POST
        && matches!(
            path.as_str(),
            "/v1/responses" | "/responses" | "/v1/chat/completions" | "/chat/completions"
        );
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let recorded = RecordedRequest {
        method: method.to_string(),
        path: path.clone(),
        query: uri.query().unwrap_or_default().to_string(),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: parsed.clone().unwrap_or(Value::Null),
    };
    let (next, request_no) = {
        let mut inner = shared.lock();
        inner.requests.push(recorded);
        let next = match &parsed {
            Some(body) if is_model_call => {
                let texts = user_texts(body);
                match inner
                    .routes
                    .iter_mut()
                    .find(|(key, _)| texts.iter().any(|t| t.contains(key.as_str())))
                {
                    Some((_, script)) => script.pop_front(),
                    None => inner.script.pop_front(),
                }
            }
            _ => None,
        };
        (next, inner.requests.len())
    };
    shared.changed.notify_waiters();

    if !is_model_call {
        return error_response(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!(
                "keel fake model: no route for {method} {path} \
                 (it serves POST /v1/responses and /v1/chat/completions)"
            ),
        );
    }
    let Some(body) = parsed else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "keel fake model: the request body is not JSON",
        );
    };
    let Some(next) = next else {
        return error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "fake_script_exhausted",
            &format!(
                "keel fake model: script exhausted (request #{request_no} has no scripted response)"
            ),
        );
    };
    match next.into_stream() {
        Err((status, headers, body)) => {
            let resp = (
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                axum::Json(body),
            )
                .into_response();
            with_headers(resp, headers)
        }
        Ok(mut stream) => {
            for event in &mut stream.events {
                fill_in_outputs(&mut event.data, &body);
            }
            let model = body.get("model").and_then(Value::as_str).unwrap_or("");
            sse_response(stream, model, shared)
        }
    }
}

/// Replaces `{{output:CALL_ID:FIELD}}` in the event's strings with field
/// FIELD of the JSON output the request carries for call CALL_ID: how a
/// script uses what only the server knows, such as the id `spawn_agent`
/// gave a sub-agent. Left as is when the request has no such output.
fn fill_in_outputs(data: &mut Value, request: &Value) {
    match data {
        Value::String(text) => {
            while let Some(start) = text.find("{{output:") {
                let Some(len) = text[start..].find("}}") else {
                    return;
                };
                let spec = &text[start + "{{output:".len()..start + len];
                let Some((call_id, field)) = spec.split_once(':') else {
                    return;
                };
                let recorded = RecordedRequest {
                    body: request.clone(),
                    ..RecordedRequest::default()
                };
                let Some(value) = recorded
                    .function_call_output(call_id)
                    .and_then(|out| serde_json::from_str::<Value>(&out).ok())
                    .and_then(|out| out.get(field).and_then(Value::as_str).map(String::from))
                else {
                    return;
                };
                text.replace_range(start..start + len + 2, &value);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| fill_in_outputs(v, request)),
        Value::Object(map) => map.values_mut().for_each(|v| fill_in_outputs(v, request)),
        _ => {}
    }
}

fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({"error": {"message": message, "type": code, "code": code, "param": null}});
    (status, axum::Json(body)).into_response()
}

/// Counts the stream as closed when hyper drops the body, however it ended.
struct CloseGuard(Arc<Shared>);

impl Drop for CloseGuard {
    fn drop(&mut self) {
        self.0.lock().closed_streams += 1;
        self.0.changed.notify_waiters();
    }
}

fn sse_response(stream: ScriptedStream, model: &str, shared: Arc<Shared>) -> Response {
    let ScriptedStream {
        events,
        delay,
        end,
        headers,
    } = stream;
    let events: VecDeque<SseEvent> = events
        .into_iter()
        .map(|mut e| {
            e.fill_model(model);
            e
        })
        .collect();
    let shutdown = shared.shutdown.subscribe();
    let sent = Arc::clone(&shared);
    let guard = CloseGuard(shared);
    let body = futures::stream::unfold(
        (events, Some(end), shutdown, guard),
        move |(mut events, end, mut shutdown, guard)| {
            let sent = Arc::clone(&sent);
            async move {
                if let Some(event) = events.pop_front() {
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    sent.lock()
                        .sent
                        .push((std::time::Instant::now(), event.data.clone()));
                    let chunk = Ok(Bytes::from(event.to_wire()));
                    return Some((chunk, (events, end, shutdown, guard)));
                }
                match end? {
                    StreamEnd::Close => None,
                    StreamEnd::Abort => {
                        // Pending once, so hyper flushes the events before it
                        // drops the connection on the error.
                        tokio::task::yield_now().await;
                        let err =
                            std::io::Error::other("keel fake model: stream aborted by the script");
                        Some((Err(err), (events, None, shutdown, guard)))
                    }
                    StreamEnd::Stall => {
                        let _ = shutdown.wait_for(|stop| *stop).await;
                        let err = std::io::Error::other("keel fake model: shut down");
                        Some((Err(err), (events, None, shutdown, guard)))
                    }
                }
            }
        },
    );
    let resp = (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response();
    with_headers(resp, headers)
}

/// `resp` with the script's extra headers (ones that are not valid HTTP
/// are left out).
fn with_headers(mut resp: Response, headers: Vec<(String, String)>) -> Response {
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            header::HeaderName::from_bytes(name.as_bytes()),
            header::HeaderValue::from_str(&value),
        ) {
            resp.headers_mut().append(name, value);
        }
    }
    resp
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests;
