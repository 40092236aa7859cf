//! Tool calls in flight. A call runs as a task of its own, so it can
//! outlive the gRPC request that started it: when its server asks the user
//! something (MCP `elicitation/create`), the request answers with the
//! question and the call waits here, its server blocked on the answer,
//! until ResumeMcpCall brings one — however long the user thinks, and
//! whatever happens to the workers meanwhile.
//!
//! A server that exits mid-call is started again and the call run again
//! once, only when the tool is read-only or idempotent and nobody has
//! answered a question of the call yet (running it again would ask again).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rmcp::ServiceError;
use rmcp::model::{
    CallToolRequestParams, CallToolResult, CancelledNotificationParam, ClientRequest, ElicitResult,
    InputRequest, InputResponses, JsonObject, NumberOrString, ProgressToken, RequestId,
    ServerResult, Tool,
};
use rmcp::service::PeerRequestOptions;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::pool::{Asked, Conn, Pool, Progress, redact};

/// Whether a call cut short may run again: the server says the tool
/// changes nothing, or that running it twice is the same as once.
pub fn may_repeat(tool: Option<&Tool>) -> bool {
    tool.and_then(|t| t.annotations.as_ref())
        .is_some_and(|a| a.read_only_hint == Some(true) || a.idempotent_hint == Some(true))
}

/// One call in flight.
pub struct InFlight {
    session: String,
    server: String,
    tool: String,
    arguments: Option<JsonObject>,
    conn: Arc<Conn>,
    task: JoinHandle<Result<CallToolResult, ServiceError>>,
    /// The call's progress notifications, and the sender its routes hold.
    progress: tokio::sync::mpsc::UnboundedReceiver<Progress>,
    route: tokio::sync::mpsc::UnboundedSender<Progress>,
    /// Where the answer to the question the call waits on goes.
    reply: Option<oneshot::Sender<ElicitResult>>,
    /// Somebody answered a question of this call.
    answered: bool,
    attempts: u32,
    /// Time in the server, not counting waits for the user.
    wall: Duration,
    timeout: Duration,
}

/// How a wait for a call ended.
pub enum Outcome {
    /// The server's result, as JSON.
    Finished { result: Value, wall: Duration },
    /// The call failed before a result (the message says why).
    Failed { message: String, wall: Duration },
    /// The server asks the user; the call waits in [`Calls`].
    Asked {
        message: String,
        requested_schema: Value,
    },
}

/// Calls waiting for the user, by (session, call id).
#[derive(Default)]
pub struct Calls {
    waiting: Mutex<HashMap<(String, String), InFlight>>,
}

/// How long a finished call whose progress stopped short of its total
/// waits for the notifications still on their way.
const STRAGGLER_WAIT: Duration = Duration::from_millis(50);

/// Rounds of `input_required` answers one call may take.
const MAX_INPUT_ROUNDS: usize = 16;

fn token_key(token: &ProgressToken) -> String {
    match &token.0 {
        NumberOrString::String(s) => s.to_string(),
        NumberOrString::Number(n) => n.to_string(),
    }
}

/// A call abandoned before its answer (timed out, its caller gone) tells
/// the server so (MCP `notifications/cancelled`).
struct CallGuard {
    conn: Arc<Conn>,
    id: RequestId,
    done: bool,
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        if !self.done {
            let conn = self.conn.clone();
            let id = self.id.clone();
            tokio::spawn(async move {
                let reason = Some("abandoned by the Keel MCP broker".to_string());
                let _ = conn
                    .client
                    .notify_cancelled(CancelledNotificationParam::new(Some(id), reason))
                    .await;
            });
        }
    }
}

/// Starts the call on `conn`; its progress notifications go to `progress`.
fn spawn_call(
    conn: &Arc<Conn>,
    tool: &str,
    arguments: &Option<JsonObject>,
    progress: tokio::sync::mpsc::UnboundedSender<Progress>,
) -> JoinHandle<Result<CallToolResult, ServiceError>> {
    let mut params = CallToolRequestParams::new(tool.to_string());
    params.arguments = arguments.clone();
    let conn = conn.clone();
    tokio::spawn(async move {
        // Servers on MCP 2026-07-28 ask mid-call by answering
        // `input_required`; the call is sent again with the answers.
        for round in 0..MAX_INPUT_ROUNDS {
            let request = ClientRequest::CallToolRequest(rmcp::model::Request::new(params.clone()));
            let handle = conn
                .client
                .send_cancellable_request(request, PeerRequestOptions::no_options())
                .await?;
            // rmcp gives every request a progress token of its own.
            let key = token_key(&handle.progress_token);
            // The route stays until the call is done with (see InFlight's
            // drop): a notification sent just before the answer may be
            // handled just after it.
            conn.progress
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key, progress.clone());
            let mut guard = CallGuard {
                conn: conn.clone(),
                id: handle.id.clone(),
                done: false,
            };
            let response = handle.await_response().await;
            guard.done = true;
            match response? {
                ServerResult::CallToolResult(result) => return Ok(result),
                ServerResult::InputRequiredResult(needed) => {
                    let mut answers = InputResponses::new();
                    for (key, request) in needed.input_requests.unwrap_or_default() {
                        let InputRequest::Elicitation(request) = request else {
                            // Sampling and roots are not offered.
                            return Err(ServiceError::UnexpectedResponse);
                        };
                        let answer = conn.handler.ask_user(request.params).await;
                        answers.insert(key, serde_json::to_value(answer).unwrap_or_default());
                    }
                    if answers.is_empty() {
                        // A state-only round: the server is not done yet.
                        tokio::time::sleep(Duration::from_millis(100 << round.min(5))).await;
                    }
                    params.input_responses = (!answers.is_empty()).then_some(answers);
                    params.request_state = needed.request_state;
                }
                _ => return Err(ServiceError::UnexpectedResponse),
            }
        }
        Err(ServiceError::InputRequiredRoundsExceeded {
            max_rounds: MAX_INPUT_ROUNDS,
        })
    })
}

enum Step {
    Done(Result<CallToolResult, ServiceError>),
    Asked(Asked),
    Progress(Progress),
    TimedOut,
    Lost,
}

fn forget_routes(conn: &Conn, route: &tokio::sync::mpsc::UnboundedSender<Progress>) {
    conn.progress
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|_, tx| !tx.same_channel(route));
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // A call nobody waits for any more (dropped unanswered, timed out)
        // does not run on.
        self.task.abort();
        forget_routes(&self.conn, &self.route);
    }
}

impl InFlight {
    /// Starts `tool` on the session's connection to `server`.
    pub fn start(
        session: &str,
        server: &str,
        tool: &str,
        arguments: Option<JsonObject>,
        conn: Arc<Conn>,
        timeout: Duration,
    ) -> Self {
        let (route, progress) = tokio::sync::mpsc::unbounded_channel();
        let task = spawn_call(&conn, tool, &arguments, route.clone());
        Self {
            progress,
            route,
            session: session.to_string(),
            server: server.to_string(),
            tool: tool.to_string(),
            arguments,
            conn,
            task,
            reply: None,
            answered: false,
            attempts: 1,
            wall: Duration::ZERO,
            timeout,
        }
    }

    async fn step(&mut self, deadline: tokio::time::Instant) -> Step {
        let conn = self.conn.clone();
        let asked = async move { conn.asks.lock().await.recv().await };
        tokio::select! {
            done = &mut self.task => match done {
                Ok(result) => Step::Done(result),
                Err(_) => Step::Lost,
            },
            Some(asked) = asked => Step::Asked(asked),
            Some(p) = self.progress.recv() => Step::Progress(p),
            _ = tokio::time::sleep_until(deadline) => Step::TimedOut,
        }
    }
}

impl Calls {
    /// Waits for `call` to finish or to ask the user something, passing
    /// its progress notifications to `progress`; a call that asks is kept
    /// under (session, `call_id`) for [`Calls::resume`]. The call's time
    /// limit counts from its start or its last answer.
    pub async fn drive(
        &self,
        pool: &Pool,
        call_id: &str,
        mut call: InFlight,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Outcome {
        let deadline = tokio::time::Instant::now() + call.timeout;
        // The last progress seen, for stragglers at the end.
        let mut last: Option<(f64, Option<f64>)> = None;
        loop {
            let started = Instant::now();
            let step = call.step(deadline).await;
            call.wall += started.elapsed();
            match step {
                Step::Progress(p) => {
                    last = Some((p.progress, p.total));
                    progress(p);
                }
                Step::Done(Ok(result)) => {
                    // Progress sent just before the result still counts; the
                    // notification may be handled just after the answer, so a
                    // call whose progress has not reached its total waits
                    // for the rest a moment (calls without progress never do).
                    let wait_until = tokio::time::Instant::now() + STRAGGLER_WAIT;
                    loop {
                        if let Ok(p) = call.progress.try_recv() {
                            last = Some((p.progress, p.total));
                            progress(p);
                            continue;
                        }
                        let unfinished =
                            last.is_some_and(|(n, total)| total.is_some_and(|t| n < t));
                        if !unfinished {
                            break;
                        }
                        match tokio::time::timeout_at(wait_until, call.progress.recv()).await {
                            Ok(Some(p)) => {
                                last = Some((p.progress, p.total));
                                progress(p);
                            }
                            _ => break,
                        }
                    }
                    let result = serde_json::to_value(&result).unwrap_or(Value::Null);
                    return Outcome::Finished {
                        result,
                        wall: call.wall,
                    };
                }
                Step::Done(Err(
                    ServiceError::TransportClosed
                    | ServiceError::TransportSend(_)
                    | ServiceError::Cancelled { .. },
                ))
                | Step::Lost => {
                    // The server went away mid-call.
                    pool.forget(&call.session, &call.server).await;
                    let repeat = may_repeat(call.conn.tool(&call.tool));
                    if repeat && !call.answered && call.attempts < 2 {
                        tracing::warn!(server = %call.server, tool = %call.tool, call_id, "MCP server exited mid-call; calling again (the tool is read-only or idempotent)");
                        match pool.connect(&call.session, &call.server).await {
                            Ok(conn) => {
                                let (route, rx) = tokio::sync::mpsc::unbounded_channel();
                                call.task = spawn_call(&conn, &call.tool, &call.arguments, route);
                                call.progress = rx;
                                call.conn = conn;
                                call.attempts += 1;
                                continue;
                            }
                            Err(e) => {
                                return Outcome::Failed {
                                    message: e.to_string(),
                                    wall: call.wall,
                                };
                            }
                        }
                    }
                    let message = if !repeat {
                        "the MCP server exited during the call; it was not run again because the tool is not marked read-only or idempotent"
                    } else if call.answered {
                        "the MCP server exited during the call; it was not run again because the user had answered its question"
                    } else {
                        "the MCP server exited during the call, twice"
                    };
                    return Outcome::Failed {
                        message: message.into(),
                        wall: call.wall,
                    };
                }
                Step::Done(Err(e)) => {
                    let message = match pool.server(&call.server) {
                        Ok(server) => redact(server, &e.to_string()),
                        Err(_) => e.to_string(),
                    };
                    return Outcome::Failed {
                        message,
                        wall: call.wall,
                    };
                }
                Step::TimedOut => {
                    return Outcome::Failed {
                        message: format!(
                            "the call timed out after {} s (tool_timeout_sec)",
                            call.timeout.as_secs_f64()
                        ),
                        wall: call.wall,
                    };
                }
                Step::Asked(asked) => {
                    call.reply = Some(asked.reply);
                    let key = (call.session.clone(), call_id.to_string());
                    let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
                    // A call replaced under the same id ends (Drop).
                    waiting.insert(key, call);
                    return Outcome::Asked {
                        message: asked.message,
                        requested_schema: asked.requested_schema,
                    };
                }
            }
        }
    }

    /// Answers the question `call_id` waits on; the call is the caller's
    /// to [`Calls::drive`] again. `None`: no such call waits.
    pub fn answer(&self, session: &str, call_id: &str, answer: ElicitResult) -> Option<InFlight> {
        let key = (session.to_string(), call_id.to_string());
        let mut call = {
            let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
            waiting.remove(&key)?
        };
        if let Some(reply) = call.reply.take() {
            // The server may have given up meanwhile; the next wait says how.
            let _ = reply.send(answer);
        }
        call.answered = true;
        Some(call)
    }

    /// Abandons the session's waiting calls (the session closed); returns
    /// how many.
    pub fn close_session(&self, session: &str) -> usize {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        let keys: Vec<_> = waiting
            .keys()
            .filter(|(s, _)| s == session)
            .cloned()
            .collect();
        for key in &keys {
            // Ends the call (Drop).
            waiting.remove(key);
        }
        keys.len()
    }
}
