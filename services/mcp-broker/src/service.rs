//! `keel.v1.McpBrokerService` over the [`Pool`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_blobstore::BlobStore;
use keel_proto::v1 as pb;
use keel_proto::v1::ErrorInfo;
use keel_proto::v1::mcp_broker_service_server::McpBrokerService;
use rmcp::ServiceError;
use rmcp::model::{CallToolRequestParams, JsonObject, Tool};
use serde_json::Value;
use tonic::{Code, Request, Response, Status};

use crate::names;
use crate::output::{self, Output};
use crate::pool::{ConnectError, Pool, Status as ConnStatus, redact};

/// `result_json` in a CallMcpToolResponse is cut to this many bytes.
pub const MAX_RESULT_JSON: usize = 16 * 1024;

pub struct Broker {
    pool: Arc<Pool>,
    blobs: BlobStore,
}

impl Broker {
    pub fn new(pool: Arc<Pool>, blobs: BlobStore) -> Self {
        Self { pool, blobs }
    }
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

/// Whether a call cut short may run again: the server says the tool
/// changes nothing, or that running it twice is the same as once.
fn may_repeat(tool: Option<&Tool>) -> bool {
    tool.and_then(|t| t.annotations.as_ref())
        .is_some_and(|a| a.read_only_hint == Some(true) || a.idempotent_hint == Some(true))
}

fn cut(text: String, max: usize) -> (String, bool) {
    if text.len() <= max {
        return (text, false);
    }
    let end = text.floor_char_boundary(max);
    (text[..end].to_string(), true)
}

/// How one call ended, before it is stored.
struct Ended {
    output: Output,
    result_json: String,
    error: String,
}

impl Ended {
    fn failed(call_id: &str, message: String, wall: Duration) -> Self {
        let text = format!("tool call error: {message}");
        Self {
            output: output::from_error(call_id, &text, wall),
            result_json: String::new(),
            error: message,
        }
    }
}

impl Broker {
    async fn run_call(&self, r: &pb::CallMcpToolRequest) -> Result<(Ended, Duration), Status> {
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
        let started = Instant::now();
        // The model wrote the arguments: bad JSON is its mistake to hear
        // about (Codex: "err: <parse error>"), not an error of the request.
        let arguments: Option<JsonObject> = if r.arguments.trim().is_empty() {
            None
        } else {
            match serde_json::from_str::<Value>(&r.arguments) {
                Ok(Value::Object(map)) => Some(map),
                Ok(_) => {
                    let text = "err: the arguments must be a JSON object";
                    let ended = Ended {
                        output: output::from_error(&r.call_id, text, started.elapsed()),
                        result_json: String::new(),
                        error: text.into(),
                    };
                    return Ok((ended, started.elapsed()));
                }
                Err(e) => {
                    let text = format!("err: {e}");
                    let ended = Ended {
                        output: output::from_error(&r.call_id, &text, started.elapsed()),
                        result_json: String::new(),
                        error: text,
                    };
                    return Ok((ended, started.elapsed()));
                }
            }
        };
        let mut attempts = 0;
        loop {
            attempts += 1;
            let conn = match self.pool.connect(&r.session_id, &r.server).await {
                Ok(conn) => conn,
                Err(e) => {
                    let ended = Ended::failed(&r.call_id, e.to_string(), started.elapsed());
                    return Ok((ended, started.elapsed()));
                }
            };
            let mut params = CallToolRequestParams::new(r.tool.clone());
            params.arguments = arguments.clone();
            let call_started = Instant::now();
            let result =
                tokio::time::timeout(server.tool_timeout, conn.client.call_tool(params)).await;
            let wall = call_started.elapsed();
            match result {
                Ok(Ok(result)) => {
                    let json = serde_json::to_value(&result).unwrap_or(Value::Null);
                    let ended = Ended {
                        output: output::from_result(&r.call_id, &json, wall),
                        result_json: json.to_string(),
                        error: String::new(),
                    };
                    return Ok((ended, wall));
                }
                Ok(Err(ServiceError::TransportClosed | ServiceError::TransportSend(_)))
                | Ok(Err(ServiceError::Cancelled { .. })) => {
                    // The server went away mid-call.
                    self.pool.forget(&r.session_id, &r.server).await;
                    let repeat = may_repeat(conn.tool(&r.tool));
                    if repeat && attempts < 2 {
                        tracing::warn!(server = %r.server, tool = %r.tool, call_id = %r.call_id, "MCP server exited mid-call; calling again (the tool is read-only or idempotent)");
                        continue;
                    }
                    let why = if repeat {
                        "the MCP server exited during the call, twice".to_string()
                    } else {
                        "the MCP server exited during the call; it was not run again because the tool is not marked read-only or idempotent".to_string()
                    };
                    return Ok((Ended::failed(&r.call_id, why, wall), wall));
                }
                Ok(Err(e)) => {
                    let message = redact(server, &e.to_string());
                    return Ok((Ended::failed(&r.call_id, message, wall), wall));
                }
                Err(_) => {
                    let message = format!(
                        "the call timed out after {} s (tool_timeout_sec)",
                        server.tool_timeout.as_secs_f64()
                    );
                    return Ok((Ended::failed(&r.call_id, message, wall), wall));
                }
            }
        }
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

    async fn call_mcp_tool(
        &self,
        request: Request<pb::CallMcpToolRequest>,
    ) -> Result<Response<pb::CallMcpToolResponse>, Status> {
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
        let (ended, wall) = self.run_call(&r).await?;
        let digest = self.blobs.put_json(&ended.output.item).await.map_err(|e| {
            status(
                Code::Unavailable,
                "blob_store",
                format!("cannot store the call's output: {e}"),
            )
        })?;
        let (result_json, result_truncated) = cut(ended.result_json, MAX_RESULT_JSON);
        tracing::info!(session = %r.session_id, call_id = %r.call_id, server = %r.server, tool = %r.tool, success = ended.output.success, ms = wall.as_millis() as u64, "MCP call");
        Ok(Response::new(pb::CallMcpToolResponse {
            output_item_digest: digest,
            success: ended.output.success,
            result_json,
            result_truncated,
            error: ended.error,
            duration_ms: wall.as_millis() as u64,
        }))
    }

    async fn close_mcp_session(
        &self,
        request: Request<pb::CloseMcpSessionRequest>,
    ) -> Result<Response<pb::CloseMcpSessionResponse>, Status> {
        let r = request.into_inner();
        if r.session_id.is_empty() {
            return Err(invalid("session_id: required"));
        }
        let stopped = self.pool.close_session(&r.session_id).await;
        Ok(Response::new(pb::CloseMcpSessionResponse { stopped }))
    }
}
