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
use rmcp::model::{CallToolRequestParams, CallToolResult, ElicitResult, JsonObject, Tool};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::pool::{Asked, Conn, Pool, redact};

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

fn spawn_call(
    conn: &Arc<Conn>,
    tool: &str,
    arguments: &Option<JsonObject>,
) -> JoinHandle<Result<CallToolResult, ServiceError>> {
    let mut params = CallToolRequestParams::new(tool.to_string());
    params.arguments = arguments.clone();
    let conn = conn.clone();
    tokio::spawn(async move { conn.client.call_tool(params).await })
}

enum Step {
    Done(Result<CallToolResult, ServiceError>),
    Asked(Asked),
    TimedOut,
    Lost,
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
        let task = spawn_call(&conn, tool, &arguments);
        Self {
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

    async fn step(&mut self) -> Step {
        let conn = self.conn.clone();
        let asked = async move { conn.asks.lock().await.recv().await };
        tokio::select! {
            done = &mut self.task => match done {
                Ok(result) => Step::Done(result),
                Err(_) => Step::Lost,
            },
            Some(asked) = asked => Step::Asked(asked),
            _ = tokio::time::sleep(self.timeout) => Step::TimedOut,
        }
    }
}

impl Calls {
    /// Waits for `call` to finish or to ask the user something; a call
    /// that asks is kept under (session, `call_id`) for [`Calls::resume`].
    pub async fn drive(&self, pool: &Pool, call_id: &str, mut call: InFlight) -> Outcome {
        loop {
            let started = Instant::now();
            let step = call.step().await;
            call.wall += started.elapsed();
            match step {
                Step::Done(Ok(result)) => {
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
                                call.task = spawn_call(&conn, &call.tool, &call.arguments);
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
                    call.task.abort();
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
                    if let Some(old) = waiting.insert(key, call) {
                        old.task.abort();
                    }
                    return Outcome::Asked {
                        message: asked.message,
                        requested_schema: asked.requested_schema,
                    };
                }
            }
        }
    }

    /// Answers the question `call_id` waits on and waits for it again.
    /// `None`: no such call waits.
    pub async fn resume(
        &self,
        pool: &Pool,
        session: &str,
        call_id: &str,
        answer: ElicitResult,
    ) -> Option<Outcome> {
        let key = (session.to_string(), call_id.to_string());
        let mut call = {
            let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
            waiting.remove(&key)?
        };
        if let Some(reply) = call.reply.take() {
            // The server may have given up meanwhile; the wait says how.
            let _ = reply.send(answer);
        }
        call.answered = true;
        Some(self.drive(pool, call_id, call).await)
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
            if let Some(call) = waiting.remove(key) {
                call.task.abort();
            }
        }
        keys.len()
    }
}
