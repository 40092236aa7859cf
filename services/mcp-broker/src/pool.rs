//! The broker's connections: one per (session, server), or one per server
//! for `shared` servers. A connection starts on first use, lists its tools
//! once, and is stopped when its session closes or after it has been idle.
//! A server that fails to start (or exits) is tried again on the next use,
//! after a back-off that doubles on every failure (1 s up to 60 s).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rmcp::model::{
    ClientCapabilities, ClientConfig, ElicitRequestParams, ElicitResult, ElicitationAction,
    ElicitationCapability, FormElicitationCapability, Implementation, Tool,
};
use rmcp::service::RequestContext;
use rmcp::service::RunningService;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use tokio::io::AsyncBufReadExt;

use crate::config::{Config, Server, Transport};
use crate::http::SessionAwareClient;

const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A server's question to the user (MCP `elicitation/create`, form mode),
/// and where the answer goes.
pub struct Asked {
    pub message: String,
    pub requested_schema: serde_json::Value,
    pub reply: tokio::sync::oneshot::Sender<ElicitResult>,
}

/// A server's progress notification for a call.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub progress: f64,
    pub total: Option<f64>,
    pub message: Option<String>,
}

/// Where each running call's progress notifications go, by progress token.
pub type ProgressRoutes = Arc<Mutex<HashMap<String, tokio::sync::mpsc::UnboundedSender<Progress>>>>;

/// The broker as an MCP client of one connection: its name and
/// capabilities (form elicitation), the queue its server's questions wait
/// in until a call of the connection takes them to the user, and the
/// routes of its calls' progress notifications.
#[derive(Clone)]
pub struct Handler {
    asks: tokio::sync::mpsc::UnboundedSender<Asked>,
    progress: ProgressRoutes,
}

impl ClientHandler for Handler {
    fn get_info(&self) -> ClientConfig {
        let mut capabilities = ClientCapabilities::default();
        capabilities.elicitation =
            Some(ElicitationCapability::new().with_form(FormElicitationCapability::new()));
        ClientConfig::new(
            capabilities,
            Implementation::new("keel-mcp-broker", env!("CARGO_PKG_VERSION")),
        )
    }

    fn on_progress(
        &self,
        params: rmcp::model::ProgressNotificationParam,
        _context: rmcp::service::NotificationContext<RoleClient>,
    ) -> impl std::future::Future<Output = ()> + Send + '_ {
        let token = match &params.progress_token.0 {
            rmcp::model::NumberOrString::String(s) => s.to_string(),
            rmcp::model::NumberOrString::Number(n) => n.to_string(),
        };
        let route = self
            .progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&token)
            .cloned();
        if let Some(route) = route {
            let _ = route.send(Progress {
                progress: params.progress,
                total: params.total,
                message: params.message,
            });
        }
        std::future::ready(())
    }

    fn create_elicitation(
        &self,
        request: ElicitRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> impl std::future::Future<Output = Result<ElicitResult, rmcp::ErrorData>> + Send + '_ {
        let handler = self.clone();
        async move { Ok(handler.ask_user(request).await) }
    }
}

impl Handler {
    /// Puts a server's question in the queue a waiting call takes it from,
    /// and waits for the user's answer (MCP `elicitation/create`, or an
    /// elicitation inside an `input_required` result).
    pub async fn ask_user(&self, request: ElicitRequestParams) -> ElicitResult {
        let (message, requested_schema) = match request {
            ElicitRequestParams::FormElicitationParams {
                message,
                requested_schema,
                ..
            } => (
                message,
                serde_json::to_value(&requested_schema).unwrap_or_default(),
            ),
            // URL mode is not offered (the capability names forms only).
            _ => return ElicitResult::new(ElicitationAction::Decline),
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        let asked = Asked {
            message,
            requested_schema,
            reply,
        };
        if self.asks.send(asked).is_err() {
            return ElicitResult::new(ElicitationAction::Cancel);
        }
        // Dropped unanswered (the call was abandoned): cancelled.
        answer
            .await
            .unwrap_or_else(|_| ElicitResult::new(ElicitationAction::Cancel))
    }
}

/// A started server and the tools it listed.
pub struct Conn {
    pub client: RunningService<RoleClient, Handler>,
    pub tools: Vec<Tool>,
    /// The server's questions, taken by the call that waits on them.
    pub asks: tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<Asked>>,
    /// Progress routes of the calls running on this connection.
    pub progress: ProgressRoutes,
    /// The connection's client side, for questions that come inside
    /// results (`input_required`).
    pub handler: Handler,
}

impl Conn {
    pub fn tool(&self, name: &str) -> Option<&Tool> {
        self.tools.iter().find(|t| t.name == name)
    }

    fn stop(&self) {
        // Ends the service task; dropping the transport kills a stdio
        // server's process.
        self.client.cancellation_token().cancel();
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("MCP server {0:?} is not configured")]
    UnknownServer(String),
    #[error("MCP server {0:?} is disabled")]
    Disabled(String),
    #[error("MCP server {server:?} failed to start: {message}")]
    StartFailed { server: String, message: String },
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Key {
    /// Empty for a shared server.
    session: String,
    server: String,
}

enum State {
    NotStarted,
    Running(Arc<Conn>),
    Failed {
        error: String,
        retry_at: Instant,
        backoff: Duration,
    },
}

struct Slot {
    state: tokio::sync::Mutex<State>,
    last_used: Mutex<Instant>,
}

/// What [`Pool::status`] reports of one connection.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    NotStarted,
    Running { tools: usize },
    Failed(String),
}

pub struct Pool {
    config: Arc<Config>,
    slots: Mutex<HashMap<Key, Arc<Slot>>>,
}

impl Pool {
    pub fn new(config: Arc<Config>) -> Self {
        // Streamable HTTP servers are reached through reqwest with rustls,
        // built with ring only: its provider must be the process default
        // before the first client is built (else reqwest panics). Already
        // installed (by the blob store, say) is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Self {
            config,
            slots: Mutex::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    fn key(session: &str, server: &Server) -> Key {
        Key {
            session: if server.shared {
                String::new()
            } else {
                session.to_string()
            },
            server: server.name.clone(),
        }
    }

    fn slot(&self, key: &Key) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(Slot {
                    state: tokio::sync::Mutex::new(State::NotStarted),
                    last_used: Mutex::new(Instant::now()),
                })
            })
            .clone()
    }

    pub fn server(&self, name: &str) -> Result<&Server, ConnectError> {
        let server = self
            .config
            .servers
            .get(name)
            .ok_or_else(|| ConnectError::UnknownServer(name.to_string()))?;
        if !server.enabled {
            return Err(ConnectError::Disabled(name.to_string()));
        }
        Ok(server)
    }

    /// The session's connection to `server`, started if needed.
    pub async fn connect(&self, session: &str, server: &str) -> Result<Arc<Conn>, ConnectError> {
        let server = self.server(server)?;
        let slot = self.slot(&Self::key(session, server));
        *slot.last_used.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        let mut state = slot.state.lock().await;
        let mut backoff = MIN_BACKOFF;
        match &*state {
            State::Running(conn) if !conn.client.is_closed() => return Ok(conn.clone()),
            State::Running(_) => {
                tracing::warn!(server = %server.name, session, "MCP server exited; starting it again");
            }
            State::Failed {
                error,
                retry_at,
                backoff: last,
            } => {
                let now = Instant::now();
                if now < *retry_at {
                    let wait = retry_at.duration_since(now).as_secs_f64().ceil();
                    return Err(ConnectError::StartFailed {
                        server: server.name.clone(),
                        message: format!("{error} (next attempt in {wait} s)"),
                    });
                }
                backoff = (*last * 2).min(MAX_BACKOFF);
            }
            State::NotStarted => {}
        }
        match tokio::time::timeout(server.startup_timeout, start(server)).await {
            Ok(Ok(conn)) => {
                let conn = Arc::new(conn);
                tracing::info!(server = %server.name, session, tools = conn.tools.len(), "MCP server started");
                *state = State::Running(conn.clone());
                Ok(conn)
            }
            Ok(Err(message)) => {
                let message = redact(server, &message);
                tracing::warn!(server = %server.name, session, error = %message, "MCP server failed to start");
                *state = State::Failed {
                    error: message.clone(),
                    retry_at: Instant::now() + backoff,
                    backoff,
                };
                Err(ConnectError::StartFailed {
                    server: server.name.clone(),
                    message,
                })
            }
            Err(_) => {
                let message = format!(
                    "did not start within {} s (startup_timeout_sec)",
                    server.startup_timeout.as_secs_f64()
                );
                *state = State::Failed {
                    error: message.clone(),
                    retry_at: Instant::now() + backoff,
                    backoff,
                };
                Err(ConnectError::StartFailed {
                    server: server.name.clone(),
                    message,
                })
            }
        }
    }

    /// Marks the session's connection to `server` as gone (its process
    /// exited mid-call), so the next use starts it again at once.
    pub async fn forget(&self, session: &str, server: &str) {
        let Ok(server) = self.server(server) else {
            return;
        };
        let slot = self.slot(&Self::key(session, server));
        let mut state = slot.state.lock().await;
        if let State::Running(conn) = &*state {
            conn.stop();
        }
        *state = State::NotStarted;
    }

    /// The state of the session's connection to every configured server.
    pub async fn status(&self, session: &str) -> BTreeMap<String, Status> {
        let mut out = BTreeMap::new();
        for server in self.config.servers.values() {
            let key = Self::key(session, server);
            let slot = {
                let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
                slots.get(&key).cloned()
            };
            let status = match slot {
                None => Status::NotStarted,
                Some(slot) => match &*slot.state.lock().await {
                    State::NotStarted => Status::NotStarted,
                    State::Running(c) if c.client.is_closed() => {
                        Status::Failed("the server exited".into())
                    }
                    State::Running(c) => Status::Running {
                        tools: c.tools.len(),
                    },
                    State::Failed { error, .. } => Status::Failed(error.clone()),
                },
            };
            out.insert(server.name.clone(), status);
        }
        out
    }

    /// Stops the session's own connections; returns how many were running.
    pub async fn close_session(&self, session: &str) -> u32 {
        if session.is_empty() {
            return 0;
        }
        let removed: Vec<Arc<Slot>> = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            let keys: Vec<Key> = slots
                .keys()
                .filter(|k| k.session == session)
                .cloned()
                .collect();
            keys.iter().filter_map(|k| slots.remove(k)).collect()
        };
        let mut stopped = 0;
        for slot in removed {
            if let State::Running(conn) = &*slot.state.lock().await {
                conn.stop();
                stopped += 1;
            }
        }
        stopped
    }

    /// Stops connections idle for longer than `idle`; returns how many.
    pub async fn reap_idle(&self, idle: Duration) -> usize {
        let now = Instant::now();
        let idle_slots: Vec<(Key, Arc<Slot>)> = {
            let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            slots
                .iter()
                .filter(|(_, s)| {
                    let last = *s.last_used.lock().unwrap_or_else(|e| e.into_inner());
                    now.duration_since(last) > idle
                })
                .map(|(k, s)| (k.clone(), s.clone()))
                .collect()
        };
        let mut reaped = 0;
        for (key, slot) in idle_slots {
            // A call in progress holds the connection: leave it.
            let Ok(mut state) = slot.state.try_lock() else {
                continue;
            };
            if let State::Running(conn) = &*state {
                if Arc::strong_count(conn) > 1 {
                    continue;
                }
                conn.stop();
                reaped += 1;
            }
            *state = State::NotStarted;
            drop(state);
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            slots.remove(&key);
        }
        reaped
    }

    /// Stops every connection (shutdown).
    pub async fn close_all(&self) {
        let all: Vec<Arc<Slot>> = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            slots.drain().map(|(_, s)| s).collect()
        };
        for slot in all {
            if let State::Running(conn) = &*slot.state.lock().await {
                conn.stop();
            }
        }
    }
}

/// `message` with the server's secrets replaced (a server's error could
/// echo a header or an environment value).
pub fn redact(server: &Server, message: &str) -> String {
    let mut text = message.to_string();
    for secret in server.transport.secrets() {
        if secret.len() >= 4 {
            text = text.replace(secret, "<redacted>");
        }
    }
    text
}

async fn start(server: &Server) -> Result<Conn, String> {
    let (asks, asked) = tokio::sync::mpsc::unbounded_channel();
    let progress = ProgressRoutes::default();
    let handler = Handler {
        asks,
        progress: progress.clone(),
    };
    let kept = handler.clone();
    let client = match &server.transport {
        Transport::Stdio {
            command,
            args,
            env,
            cwd,
        } => {
            let mut cmd = tokio::process::Command::new(command);
            cmd.args(args).env_clear().envs(env);
            if let Some(cwd) = cwd {
                cmd.current_dir(cwd);
            }
            let (transport, stderr) = TokioChildProcess::builder(cmd)
                .stderr(std::process::Stdio::piped())
                .spawn()
                .map_err(|e| format!("cannot run {command:?}: {e}"))?;
            if let Some(stderr) = stderr {
                let name = server.name.clone();
                tokio::spawn(async move {
                    let mut lines = tokio::io::BufReader::new(stderr).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        tracing::debug!(server = %name, "{line}");
                    }
                });
            }
            handler
                .serve(transport)
                .await
                .map_err(|e| format!("initialisation failed: {e}"))?
        }
        Transport::StreamableHttp {
            url,
            bearer_token,
            headers,
        } => {
            let mut config = StreamableHttpClientTransportConfig::with_uri(url.as_str());
            if let Some(token) = bearer_token {
                config = config.auth_header(token.clone());
            }
            let mut custom = HashMap::new();
            for (name, value) in headers {
                let name = http::HeaderName::from_bytes(name.as_bytes())
                    .map_err(|e| format!("http_headers: {name:?} is not a header name: {e}"))?;
                let value = http::HeaderValue::from_str(value)
                    .map_err(|e| format!("http_headers: the value of {name} is not valid: {e}"))?;
                custom.insert(name, value);
            }
            let client = SessionAwareClient::new()
                .map_err(|e| format!("cannot make an HTTP client: {e}"))?;
            let transport =
                StreamableHttpClientTransport::with_client(client, config.custom_headers(custom));
            handler
                .serve(transport)
                .await
                .map_err(|e| format!("initialisation failed: {e}"))?
        }
    };
    let tools = client
        .list_all_tools()
        .await
        .map_err(|e| format!("tools/list failed: {e}"))?;
    Ok(Conn {
        client,
        tools,
        asks: tokio::sync::Mutex::new(asked),
        progress,
        handler: kept,
    })
}
