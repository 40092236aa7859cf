//! `keel.v1.McpBrokerService` over the [`Pool`].

use std::sync::Arc;
use std::time::Duration;

use keel_blobstore::BlobStore;
use keel_proto::v1 as pb;
use keel_proto::v1::ErrorInfo;
use keel_proto::v1::mcp_broker_service_server::McpBrokerService;
use rmcp::model::{ElicitResult, ElicitationAction, JsonObject, Tool};
use serde_json::Value;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status};

use crate::calls::{Calls, InFlight, Outcome};
use crate::names;
use crate::output;
use crate::pool::{ConnectError, Pool, Status as ConnStatus};

/// `result_json` in a CallMcpToolResponse is cut to this many bytes.
pub const MAX_RESULT_JSON: usize = 16 * 1024;

#[derive(Clone)]
pub struct Broker {
    pool: Arc<Pool>,
    blobs: BlobStore,
    calls: Arc<Calls>,
}

impl Broker {
    pub fn new(pool: Arc<Pool>, blobs: BlobStore) -> Self {
        Self {
            pool,
            blobs,
            calls: Arc::new(Calls::default()),
        }
    }

    /// Drives `call` in a task of its own (it outlives a caller that hangs
    /// up), sending its progress and then its outcome as `wrap` makes them.
    fn stream<T: Send + 'static>(
        &self,
        session_id: String,
        call_id: String,
        call: Result<InFlight, Outcome>,
        wrap: fn(Update) -> T,
    ) -> ReceiverStream<Result<T, Status>> {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let this = self.clone();
        tokio::spawn(async move {
            let progress_tx = tx.clone();
            let progress = move |p: crate::pool::Progress| {
                // A slow reader loses progress, never the outcome.
                let _ = progress_tx.try_send(Ok(wrap(Update::Progress(pb::McpProgress {
                    progress: p.progress,
                    total: p.total.unwrap_or_default(),
                    message: p.message.unwrap_or_default(),
                }))));
            };
            let outcome = match call {
                Ok(call) => {
                    this.calls
                        .drive(&this.pool, &call_id, call, &progress)
                        .await
                }
                Err(outcome) => outcome,
            };
            let answer = this
                .answer(&session_id, &call_id, outcome)
                .await
                .map(|o| wrap(Update::Outcome(o)));
            let _ = tx.send(answer).await;
        });
        ReceiverStream::new(rx)
    }
}

/// One message of a call's stream.
pub enum Update {
    Progress(pb::McpProgress),
    Outcome(pb::McpCallOutcome),
}

fn call_update(u: Update) -> pb::CallMcpToolResponse {
    use pb::call_mcp_tool_response::Kind;
    pb::CallMcpToolResponse {
        kind: Some(match u {
            Update::Progress(p) => Kind::Progress(p),
            Update::Outcome(o) => Kind::Outcome(o),
        }),
    }
}

fn resume_update(u: Update) -> pb::ResumeMcpCallResponse {
    use pb::resume_mcp_call_response::Kind;
    pb::ResumeMcpCallResponse {
        kind: Some(match u {
            Update::Progress(p) => Kind::Progress(p),
            Update::Outcome(o) => Kind::Outcome(o),
        }),
    }
}

fn text(v: &Value, field: &str) -> String {
    v.get(field)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn server_failed(server: &str, method: &str, e: &rmcp::ServiceError) -> Status {
    status(
        Code::FailedPrecondition,
        "server_error",
        format!("MCP server {server:?} failed {method}: {e}"),
    )
}

impl Broker {
    /// The session's connections to `server`, or to every enabled server
    /// when it is empty (those that cannot start are left out).
    async fn connections(
        &self,
        session_id: &str,
        server: &str,
    ) -> Result<Vec<(String, Arc<crate::pool::Conn>)>, Status> {
        if session_id.is_empty() {
            return Err(invalid("session_id: required"));
        }
        if !server.is_empty() {
            let conn = self
                .pool
                .connect(session_id, server)
                .await
                .map_err(|e| match e {
                    ConnectError::StartFailed { .. } => {
                        status(Code::Unavailable, "server_unavailable", e.to_string())
                    }
                    other => connect_status(&other),
                })?;
            return Ok(vec![(server.to_string(), conn)]);
        }
        let mut out = Vec::new();
        let names: Vec<String> = self
            .pool
            .config()
            .servers
            .values()
            .filter(|s| s.enabled)
            .map(|s| s.name.clone())
            .collect();
        for name in names {
            if let Ok(conn) = self.pool.connect(session_id, &name).await {
                out.push((name, conn));
            }
        }
        Ok(out)
    }
}

/// The user's answer as MCP's `ElicitResult`.
fn elicit_result(action: i32, content_json: &str) -> Result<ElicitResult, Status> {
    let action = match pb::ElicitationAction::try_from(action) {
        Ok(pb::ElicitationAction::Accept) => ElicitationAction::Accept,
        Ok(pb::ElicitationAction::Decline) => ElicitationAction::Decline,
        Ok(pb::ElicitationAction::Cancel) => ElicitationAction::Cancel,
        _ => return Err(invalid("action: ACCEPT, DECLINE or CANCEL")),
    };
    let mut result = ElicitResult::new(action);
    if matches!(result.action, ElicitationAction::Accept) {
        match serde_json::from_str::<Value>(content_json) {
            Ok(content @ Value::Object(_)) => result.content = Some(content),
            _ => return Err(invalid("content_json: an accepted answer is a JSON object")),
        }
    }
    Ok(result)
}

fn status(code: Code, class: &str, message: impl Into<String>) -> Status {
    let retryable = matches!(code, Code::Unavailable | Code::Internal);
    ErrorInfo::new(class, retryable).into_status(code, message)
}

fn invalid(message: impl Into<String>) -> Status {
    status(Code::InvalidArgument, "invalid_request", message)
}

fn connect_status(e: &ConnectError) -> Status {
    match e {
        ConnectError::UnknownServer(_) => status(Code::NotFound, "unknown_server", e.to_string()),
        ConnectError::Disabled(_) => {
            status(Code::FailedPrecondition, "server_disabled", e.to_string())
        }
        ConnectError::StartFailed { .. } => {
            status(Code::Unavailable, "required_server_failed", e.to_string())
        }
    }
}

fn transport(server: &crate::config::Server) -> String {
    server.transport.name().to_string()
}

fn server_status(
    server: &crate::config::Server,
    state: pb::McpServerState,
    error: String,
    tool_count: u32,
) -> pb::McpServerStatus {
    pb::McpServerStatus {
        name: server.name.clone(),
        transport: transport(server),
        enabled: server.enabled,
        required: server.required,
        shared: server.shared,
        state: state as i32,
        error,
        tool_count,
    }
}

/// The tool's input schema as the model gets it: an object schema with
/// `properties` (Codex inserts `properties: {}` when missing or null).
fn input_schema(tool: &Tool) -> String {
    let mut schema = Value::Object((*tool.input_schema).clone());
    if let Some(obj) = schema.as_object_mut() {
        if obj.get("properties").is_none_or(Value::is_null) {
            obj.insert("properties".into(), Value::Object(Default::default()));
        }
        obj.entry("type")
            .or_insert_with(|| Value::String("object".into()));
    }
    schema.to_string()
}

fn annotations(tool: &Tool) -> Option<pb::McpToolAnnotations> {
    tool.annotations.as_ref().map(|a| pb::McpToolAnnotations {
        read_only_hint: a.read_only_hint,
        destructive_hint: a.destructive_hint,
        idempotent_hint: a.idempotent_hint,
        open_world_hint: a.open_world_hint,
    })
}

fn cut(text: String, max: usize) -> (String, bool) {
    if text.len() <= max {
        return (text, false);
    }
    let end = text.floor_char_boundary(max);
    (text[..end].to_string(), true)
}

impl Broker {
    /// Validates a call and starts it; `Err(Outcome)` for arguments the
    /// model got wrong or a server that cannot start (results the model
    /// must hear about), `Err(Status)` for requests that cannot be served.
    async fn start_call(
        &self,
        r: &pb::CallMcpToolRequest,
    ) -> Result<Result<InFlight, Outcome>, Status> {
        let server = self
            .pool
            .server(&r.server)
            .map_err(|e| connect_status(&e))?;
        if !server.offers(&r.tool) {
            return Err(status(
                Code::FailedPrecondition,
                "unknown_tool",
                format!(
                    "MCP server {:?} does not offer the tool {:?} (enabled_tools / disabled_tools)",
                    r.server, r.tool
                ),
            ));
        }
        // The model wrote the arguments: bad JSON is its mistake to hear
        // about (Codex: "err: <parse error>"), not an error of the request.
        let arguments: Option<JsonObject> = if r.arguments.trim().is_empty() {
            None
        } else {
            match serde_json::from_str::<Value>(&r.arguments) {
                Ok(Value::Object(map)) => Some(map),
                Ok(_) => {
                    return Ok(Err(Outcome::Failed {
                        message: "err: the arguments must be a JSON object".into(),
                        wall: Duration::ZERO,
                    }));
                }
                Err(e) => {
                    return Ok(Err(Outcome::Failed {
                        message: format!("err: {e}"),
                        wall: Duration::ZERO,
                    }));
                }
            }
        };
        let conn = match self.pool.connect(&r.session_id, &r.server).await {
            Ok(conn) => conn,
            Err(e) => {
                return Ok(Err(Outcome::Failed {
                    message: e.to_string(),
                    wall: Duration::ZERO,
                }));
            }
        };
        Ok(Ok(InFlight::start(
            &r.session_id,
            &r.server,
            &r.tool,
            arguments,
            conn,
            server.tool_timeout,
        )))
    }

    /// The answer for an outcome: a finished or failed call's output is
    /// stored; a question is passed on.
    async fn answer(
        &self,
        session_id: &str,
        call_id: &str,
        outcome: Outcome,
    ) -> Result<pb::McpCallOutcome, Status> {
        let (output, result_json, error, wall) = match outcome {
            Outcome::Asked {
                message,
                requested_schema,
            } => {
                tracing::info!(session = %session_id, call_id, "MCP server asks the user");
                return Ok(pb::McpCallOutcome {
                    elicitation: Some(pb::McpElicitation {
                        message,
                        requested_schema_json: requested_schema.to_string(),
                    }),
                    ..Default::default()
                });
            }
            Outcome::Finished { result, wall } => (
                output::from_result(call_id, &result, wall),
                result.to_string(),
                String::new(),
                wall,
            ),
            Outcome::Failed { message, wall } => {
                // Failures the model caused (bad arguments) read as Codex
                // has them; the others as "tool call error: …".
                let text = if message.starts_with("err: ") {
                    message.clone()
                } else {
                    format!("tool call error: {message}")
                };
                (
                    output::from_error(call_id, &text, wall),
                    String::new(),
                    message,
                    wall,
                )
            }
        };
        let blobs = self
            .blobs
            .for_session(session_id)
            .map_err(|e| invalid(e.to_string()))?;
        let digest = blobs.put_json(&output.item).await.map_err(|e| {
            status(
                Code::Unavailable,
                "blob_store",
                format!("cannot store the call's output: {e}"),
            )
        })?;
        let (result_json, result_truncated) = cut(result_json, MAX_RESULT_JSON);
        tracing::info!(session = %session_id, call_id, success = output.success, ms = wall.as_millis() as u64, "MCP call ended");
        Ok(pb::McpCallOutcome {
            output_item_digest: digest,
            success: output.success,
            result_json,
            result_truncated,
            error,
            duration_ms: wall.as_millis() as u64,
            elicitation: None,
        })
    }
}

#[tonic::async_trait]
impl McpBrokerService for Broker {
    async fn list_mcp_servers(
        &self,
        request: Request<pb::ListMcpServersRequest>,
    ) -> Result<Response<pb::ListMcpServersResponse>, Status> {
        let session = request.into_inner().session_id;
        let states = self.pool.status(&session).await;
        let servers = self
            .pool
            .config()
            .servers
            .values()
            .map(|s| {
                let (state, error, tools) = if !s.enabled {
                    (pb::McpServerState::Disabled, String::new(), 0)
                } else {
                    match states.get(&s.name) {
                        Some(ConnStatus::Running { tools }) => {
                            (pb::McpServerState::Running, String::new(), *tools as u32)
                        }
                        Some(ConnStatus::Failed(e)) => (pb::McpServerState::Failed, e.clone(), 0),
                        _ => (pb::McpServerState::NotStarted, String::new(), 0),
                    }
                };
                server_status(s, state, error, tools)
            })
            .collect();
        Ok(Response::new(pb::ListMcpServersResponse { servers }))
    }

    async fn list_mcp_tools(
        &self,
        request: Request<pb::ListMcpToolsRequest>,
    ) -> Result<Response<pb::ListMcpToolsResponse>, Status> {
        let r = request.into_inner();
        if r.session_id.is_empty() {
            return Err(invalid("session_id: required"));
        }
        let names: Vec<String> = if r.servers.is_empty() {
            self.pool
                .config()
                .servers
                .values()
                .filter(|s| s.enabled)
                .map(|s| s.name.clone())
                .collect()
        } else {
            let mut names = r.servers.clone();
            names.sort();
            names.dedup();
            for name in &names {
                self.pool.server(name).map_err(|e| connect_status(&e))?;
            }
            names
        };
        let started = futures::future::join_all(
            names
                .iter()
                .map(|name| self.pool.connect(&r.session_id, name)),
        )
        .await;
        let mut statuses = Vec::new();
        let mut listed: Vec<(String, Tool)> = Vec::new();
        for (name, conn) in names.iter().zip(started) {
            let server = self.pool.server(name).map_err(|e| connect_status(&e))?;
            match conn {
                Ok(conn) => {
                    let offered: Vec<&Tool> = conn
                        .tools
                        .iter()
                        .filter(|t| server.offers(&t.name))
                        .collect();
                    statuses.push(server_status(
                        server,
                        pb::McpServerState::Running,
                        String::new(),
                        offered.len() as u32,
                    ));
                    listed.extend(offered.into_iter().map(|t| (name.clone(), t.clone())));
                }
                Err(e) if server.required => {
                    return Err(status(
                        Code::Unavailable,
                        "required_server_failed",
                        format!(
                            "{e}; the server is required (required = true), so the session cannot start"
                        ),
                    ));
                }
                Err(e) => {
                    statuses.push(server_status(
                        server,
                        pb::McpServerState::Failed,
                        e.to_string(),
                        0,
                    ));
                }
            }
        }
        let qualified = names::qualify(listed.iter().map(|(s, t)| (s.as_str(), t.name.as_ref())));
        let tools = qualified
            .into_iter()
            .filter_map(|q| {
                let (_, tool) = listed
                    .iter()
                    .find(|(s, t)| *s == q.server && t.name == q.tool)?;
                let server = self.pool.server(&q.server).ok()?;
                Some(pb::McpTool {
                    description: tool.description.as_deref().unwrap_or_default().to_string(),
                    input_schema_json: input_schema(tool),
                    annotations: annotations(tool),
                    title: tool.title.clone().unwrap_or_default(),
                    approval_mode: server.approval_mode(&q.tool).as_str().to_string(),
                    qualified_name: q.name,
                    server: q.server,
                    tool: q.tool,
                })
            })
            .collect();
        Ok(Response::new(pb::ListMcpToolsResponse {
            tools,
            servers: statuses,
        }))
    }

    type CallMcpToolStream = ReceiverStream<Result<pb::CallMcpToolResponse, Status>>;
    type ResumeMcpCallStream = ReceiverStream<Result<pb::ResumeMcpCallResponse, Status>>;

    async fn call_mcp_tool(
        &self,
        request: Request<pb::CallMcpToolRequest>,
    ) -> Result<Response<Self::CallMcpToolStream>, Status> {
        let r = request.into_inner();
        for (field, value) in [
            ("session_id", &r.session_id),
            ("call_id", &r.call_id),
            ("server", &r.server),
            ("tool", &r.tool),
        ] {
            if value.is_empty() {
                return Err(invalid(format!("{field}: required")));
            }
        }
        check_session(&r.session_id)?;
        let call = self.start_call(&r).await?;
        Ok(Response::new(self.stream(
            r.session_id,
            r.call_id,
            call,
            call_update,
        )))
    }

    async fn resume_mcp_call(
        &self,
        request: Request<pb::ResumeMcpCallRequest>,
    ) -> Result<Response<Self::ResumeMcpCallStream>, Status> {
        let r = request.into_inner();
        for (field, value) in [("session_id", &r.session_id), ("call_id", &r.call_id)] {
            if value.is_empty() {
                return Err(invalid(format!("{field}: required")));
            }
        }
        check_session(&r.session_id)?;
        let answer = elicit_result(r.action, &r.content_json)?;
        let call = self
            .calls
            .answer(&r.session_id, &r.call_id, answer)
            .ok_or_else(|| {
                status(
                    Code::FailedPrecondition,
                    "call_not_waiting",
                    format!(
                        "call {:?} is not waiting for an answer: answered already, or lost when the broker restarted",
                        r.call_id
                    ),
                )
            })?;
        Ok(Response::new(self.stream(
            r.session_id,
            r.call_id,
            Ok(call),
            resume_update,
        )))
    }

    async fn list_mcp_resources(
        &self,
        request: Request<pb::ListMcpResourcesRequest>,
    ) -> Result<Response<pb::ListMcpResourcesResponse>, Status> {
        let r = request.into_inner();
        let mut out = pb::ListMcpResourcesResponse::default();
        for (name, conn) in self.connections(&r.session_id, &r.server).await? {
            let explicit = !r.server.is_empty();
            match conn.client.list_all_resources().await {
                Ok(resources) => out.resources.extend(resources.iter().map(|x| {
                    let v = serde_json::to_value(x).unwrap_or_default();
                    pb::McpResource {
                        server: name.clone(),
                        uri: text(&v, "uri"),
                        name: text(&v, "name"),
                        description: text(&v, "description"),
                        mime_type: text(&v, "mimeType"),
                    }
                })),
                Err(e) if explicit => return Err(server_failed(&name, "resources/list", &e)),
                Err(_) => continue,
            }
            if let Ok(templates) = conn.client.list_all_resource_templates().await {
                out.templates.extend(templates.iter().map(|x| {
                    let v = serde_json::to_value(x).unwrap_or_default();
                    pb::McpResourceTemplate {
                        server: name.clone(),
                        uri_template: text(&v, "uriTemplate"),
                        name: text(&v, "name"),
                        description: text(&v, "description"),
                        mime_type: text(&v, "mimeType"),
                    }
                }));
            }
        }
        Ok(Response::new(out))
    }

    async fn read_mcp_resource(
        &self,
        request: Request<pb::ReadMcpResourceRequest>,
    ) -> Result<Response<pb::ReadMcpResourceResponse>, Status> {
        let r = request.into_inner();
        if r.server.is_empty() || r.uri.is_empty() {
            return Err(invalid("server and uri: required"));
        }
        let Some((name, conn)) = self.connections(&r.session_id, &r.server).await?.pop() else {
            return Err(invalid("server: required"));
        };
        let result = conn
            .client
            .read_resource(rmcp::model::ReadResourceRequestParams::new(r.uri.clone()))
            .await
            .map_err(|e| server_failed(&name, "resources/read", &e))?;
        let v = serde_json::to_value(&result).unwrap_or_default();
        Ok(Response::new(pb::ReadMcpResourceResponse {
            contents_json: v.get("contents").cloned().unwrap_or_default().to_string(),
        }))
    }

    async fn list_mcp_prompts(
        &self,
        request: Request<pb::ListMcpPromptsRequest>,
    ) -> Result<Response<pb::ListMcpPromptsResponse>, Status> {
        let r = request.into_inner();
        let mut out = pb::ListMcpPromptsResponse::default();
        for (name, conn) in self.connections(&r.session_id, &r.server).await? {
            match conn.client.list_all_prompts().await {
                Ok(prompts) => out.prompts.extend(prompts.iter().map(|x| {
                    let v = serde_json::to_value(x).unwrap_or_default();
                    pb::McpPrompt {
                        server: name.clone(),
                        name: text(&v, "name"),
                        description: text(&v, "description"),
                        arguments_json: v
                            .get("arguments")
                            .cloned()
                            .unwrap_or_else(|| Value::Array(Vec::new()))
                            .to_string(),
                    }
                })),
                Err(e) if !r.server.is_empty() => {
                    return Err(server_failed(&name, "prompts/list", &e));
                }
                Err(_) => {}
            }
        }
        Ok(Response::new(out))
    }

    async fn close_mcp_session(
        &self,
        request: Request<pb::CloseMcpSessionRequest>,
    ) -> Result<Response<pb::CloseMcpSessionResponse>, Status> {
        let r = request.into_inner();
        if r.session_id.is_empty() {
            return Err(invalid("session_id: required"));
        }
        let abandoned = self.calls.close_session(&r.session_id);
        if abandoned > 0 {
            tracing::info!(session = %r.session_id, calls = abandoned, "abandoned calls waiting for the user");
        }
        let stopped = self.pool.close_session(&r.session_id).await;
        Ok(Response::new(pb::CloseMcpSessionResponse { stopped }))
    }
}
/// A call's session id must be a session key: its outputs are stored
/// under it. Checked before anything runs.
fn check_session(session_id: &str) -> Result<(), Status> {
    keel_blobstore::validate_session_key(session_id).map_err(|_| {
        invalid(format!(
            "session_id {session_id:?} is not a session key: 1 to 200 letters, digits, '.', '_' or '-'"
        ))
    })
}
