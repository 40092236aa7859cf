//! Thin activities: each turns its input into one gRPC call to a Keel service
//! and its answer into a small, serialisable result for workflow history.
//! Inputs and outputs carry digests and short summaries, never conversations.

use std::sync::Arc;
use std::time::Duration;

use keel_proto::v1 as pb;
use keel_proto::v1::mcp_broker_service_client::McpBrokerServiceClient;
use keel_proto::v1::model_service_client::ModelServiceClient;
use keel_proto::v1::tool_service_client::ToolServiceClient;
use keel_server::Traced;
use keel_workflow_api::{ArchiveEventsInput, SandboxSettings, Usage};
use serde::{Deserialize, Serialize};
use temporalio_macros::activities;
use temporalio_sdk::ApplicationFailure;
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use tonic::transport::Channel;

use crate::affinity::Affine;
use crate::balanced::BalancedChannel;
use crate::runners::{LeaseError, Runners};
use crate::session_apis::SessionApis;
use crate::tools::{chosen_tools, legacy_tools_request, tools_request};
use keel_tool_model::toolset;

/// How often a running activity tells Temporal it is alive. Cancellation
/// (an interrupt) reaches the activity in a heartbeat's answer, so this and the
/// workflow's heartbeat timeout bound how fast an interrupted command dies.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);

/// Activity failure type names; the workflow maps them to Codex error classes.
pub mod failure_type {
    pub const UNAUTHORIZED: &str = "unauthorized";
    pub const BAD_REQUEST: &str = "bad_request";
    pub const CONTEXT_WINDOW_EXCEEDED: &str = "context_window_exceeded";
    pub const USAGE_LIMIT_EXCEEDED: &str = "usage_limit_exceeded";
    pub const SERVER_OVERLOADED: &str = "server_overloaded";
    pub const CONNECTION_FAILED: &str = "http_connection_failed";
    pub const INTERNAL: &str = "internal_server_error";
    pub const OTHER: &str = "other";
    /// Keel's own: the model-proxy does not hold the call prefix the call
    /// named (see `ModelCallInput::prefix_digest`); the workflow sends it
    /// again. Never shown to a client unless that fails too.
    pub const PREFIX_MISSING: &str = "prefix_missing";
    /// Keel's own: the runner holding the session's workspace is gone or
    /// draining, and the call did not run; the workflow moves the lease and
    /// runs the call on the new runner.
    pub const RUNNER_UNAVAILABLE: &str = "runner_unavailable";
    /// Keel's own: the runner holding the session's workspace went away
    /// while the call may have been running; the workflow moves the lease
    /// and reports the call as lost (never runs it twice).
    pub const RUNNER_LOST: &str = "runner_lost";
}

pub use keel_workflow_api::{ModelDefaults, SessionSetup, ToolSpec};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SetupInput {
    pub session_id: String,
    pub cwd: String,
    /// `keel.v1.ShellToolKind`; 0: `shell`.
    #[serde(default)]
    pub shell_tool: i32,
    /// Offer apply_patch as a JSON function, not a freeform tool (the
    /// provider speaks Chat Completions, which has no custom tools).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub json_apply_patch: bool,
    /// The MCP servers the session asked for (empty: the broker's enabled
    /// ones).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mcp_servers: Vec<String>,
    /// The runner the session's workspace is leased to; `None`: sessions
    /// from before leases, served by any runner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner: Option<String>,
    /// Choose the tools as Codex does from these features and the model
    /// catalog; `None`: the fixed set above (`shell_tool`,
    /// `json_apply_patch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<keel_workflow_api::ToolFeatures>,
    /// The model the session starts with (empty: the model-proxy's
    /// default), whose catalog entry the tools follow.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub model: String,
    /// The session's sandbox is `danger-full-access`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub full_access: bool,
    /// Where AGENTS.md files are looked for; `None`: Codex's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_doc: Option<keel_workflow_api::ProjectDoc>,
    /// The session's model provider; empty: the model-proxy's default.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub provider: String,
}

/// A session's workspace to lease.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LeaseInput {
    pub session_id: String,
    pub cwd: String,
    /// The runner that held it, kept if it is still there and not
    /// draining.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    /// Clone this repository for the session (instead of `cwd`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<keel_workflow_api::GitSource>,
}

/// Where the session's workspace is now.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Lease {
    pub runner_id: String,
    pub cwd: String,
}

/// Closing a session's state on the runner its workspace is leased to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CloseInput {
    pub session_id: String,
    pub runner: String,
}

/// One MCP tool call, by the raw names the broker calls.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct McpCallInput {
    pub session_id: String,
    pub call_id: String,
    pub server: String,
    pub tool: String,
    pub arguments: String,
    /// For the call's progress deltas (`LiveDelta`).
    #[serde(default)]
    pub turn_id: String,
    #[serde(default)]
    pub events_before: u64,
}

/// How an MCP call ended (the output item is stored by the broker).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct McpCallOutput {
    pub output_digest: String,
    pub success: bool,
    /// For the `mcp_tool_call_end` event: cut to 16 KiB by the broker.
    pub result_json: String,
    #[serde(default)]
    pub result_truncated: bool,
    #[serde(default)]
    pub error: String,
    pub duration_ms: u64,
    /// The server asks the user something; the call waits in the broker
    /// (nothing else is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elicitation: Option<McpQuestion>,
}

/// An MCP server's question to the user.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct McpQuestion {
    pub message: String,
    pub requested_schema_json: String,
}

/// The user's answer to a waiting call's question.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct McpResumeInput {
    pub session_id: String,
    pub call_id: String,
    /// `accept`, `decline` or `cancel`.
    pub action: String,
    #[serde(default)]
    pub content_json: String,
    /// For the call's progress deltas (`LiveDelta`).
    #[serde(default)]
    pub turn_id: String,
    #[serde(default)]
    pub events_before: u64,
}

impl From<pb::McpCallOutcome> for McpCallOutput {
    fn from(r: pb::McpCallOutcome) -> Self {
        Self {
            output_digest: r.output_item_digest,
            success: r.success,
            result_json: r.result_json,
            result_truncated: r.result_truncated,
            error: r.error,
            duration_ms: r.duration_ms,
            elicitation: r.elicitation.map(|e| McpQuestion {
                message: e.message,
                requested_schema_json: e.requested_schema_json,
            }),
        }
    }
}

pub use keel_workflow_api::AppendItem;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelCallInput {
    pub session_id: String,
    /// For live deltas only.
    #[serde(default)]
    pub turn_id: String,
    pub model: String,
    pub head: Option<String>,
    pub append: Vec<AppendItem>,
    pub tools: Vec<ToolSpec>,
    pub parallel_tool_calls: bool,
    pub ephemeral_items: Vec<String>,
    /// Empty: the model-proxy's configured value.
    #[serde(default)]
    pub reasoning_effort: String,
    #[serde(default)]
    pub reasoning_summary: String,
    #[serde(default)]
    pub personality: String,
    /// Summarise the conversation into a new one instead of continuing it.
    #[serde(default)]
    pub compact: bool,
    /// The session log's newest offset when the call was scheduled; sent
    /// with each live delta (`LiveDelta.events_before`).
    #[serde(default)]
    pub events_before: u64,
    /// Stored items sent before `ephemeral_items` (the session's developer
    /// instructions, stored by session-api).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ephemeral_item_digests: Vec<String>,
    /// The digest of the call's prefix (`keel.v1.CallPrefix`: tools and
    /// ephemeral items). Without `store_prefix` the prefix is not sent
    /// again: `tools` and both ephemeral lists are empty and the model-proxy
    /// reads them from its blob store, so history does not repeat them at
    /// every call. Empty: everything inline (compactions, and turns
    /// recorded before patch `call-prefix-v1`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix_digest: String,
    /// Store the prefix sent inline under `prefix_digest`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub store_prefix: bool,
    /// The model provider; empty: the model-proxy's default.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub provider: String,
    /// The turn's final-output JSON Schema, by blob digest; empty: free
    /// text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub output_schema_digest: String,
    /// The session's own base instructions, by blob digest; empty: the
    /// model-proxy's.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub instructions_digest: String,
    /// Publish no live deltas: a sub-agent's text is not its session's
    /// (clients cannot follow a sub-agent yet).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_live_deltas: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputItem {
    Message {
        digest: String,
        role: String,
        text: String,
        truncated: bool,
    },
    FunctionCall {
        digest: String,
        call_id: String,
        name: String,
        /// Cut at 16 KiB; the whole call is the stored item.
        arguments: String,
        #[serde(default)]
        arguments_truncated: bool,
    },
    /// A freeform (custom tool) call; `input` is the raw text.
    CustomToolCall {
        digest: String,
        call_id: String,
        name: String,
        /// Cut at 16 KiB; the whole call is the stored item.
        input: String,
        #[serde(default)]
        input_truncated: bool,
    },
    Reasoning {
        digest: String,
        summary: String,
    },
    Other {
        digest: String,
        item_type: String,
        /// A `web_search_call` the provider ran.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        web_search: Option<WebSearchCall>,
    },
}

/// A web search the provider ran (the hosted `web_search` tool).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WebSearchCall {
    pub call_id: String,
    pub query: String,
    pub action_json: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelCallOutput {
    pub head: String,
    pub items: Vec<OutputItem>,
    pub usage: Usage,
    pub model: String,
    /// The provider's rate limits, as its response headers reported them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limits: Option<RateLimits>,
}

/// `keel.v1.RateLimitSnapshot`, for workflow history.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RateLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<RateLimitWindow>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secondary: Option<RateLimitWindow>,
}

/// `keel.v1.RateLimitWindow`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RateLimitWindow {
    pub used_percent: f64,
    #[serde(default)]
    pub window_minutes: u64,
    #[serde(default)]
    pub resets_at: i64,
}

impl From<pb::RateLimitSnapshot> for RateLimits {
    fn from(s: pb::RateLimitSnapshot) -> Self {
        let window = |w: pb::RateLimitWindow| RateLimitWindow {
            used_percent: w.used_percent,
            window_minutes: w.window_minutes,
            resets_at: w.resets_at,
        };
        Self {
            primary: s.primary.map(window),
            secondary: s.secondary.map(window),
        }
    }
}

impl From<&RateLimits> for pb::RateLimitSnapshot {
    fn from(s: &RateLimits) -> Self {
        let window = |w: &RateLimitWindow| pb::RateLimitWindow {
            used_percent: w.used_percent,
            window_minutes: w.window_minutes,
            resets_at: w.resets_at,
        };
        Self {
            primary: s.primary.as_ref().map(window),
            secondary: s.secondary.as_ref().map(window),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ToolCallInput {
    pub session_id: String,
    pub call_id: String,
    pub name: String,
    pub arguments: String,
    pub cwd: String,
    /// The model sent a freeform `custom_tool_call` (e.g. apply_patch).
    #[serde(default)]
    pub custom: bool,
    /// The sandbox to run under; `None`: the tool-runner's default.
    #[serde(default)]
    pub sandbox: Option<SandboxSettings>,
    /// 0, or 1 for the re-run after an approved sandbox denial.
    #[serde(default)]
    pub attempt: u32,
    /// The stored call item, for a call too big to pass as `arguments`.
    #[serde(default)]
    pub call_item_digest: Option<String>,
    /// What a command-family call runs, as the workflow decided on it; the
    /// tool-runner refuses the call if its arguments say otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invocation: Option<keel_tool_model::Invocation>,
    /// The user's shell the invocation was read with.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user_shell: String,
    /// The runner the session's workspace is leased to (see
    /// [`SetupInput::runner`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner: Option<String>,
    /// The sub-agent making the call; empty for the session's own agent
    /// (`RunToolRequest.agent_id`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub agent_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CommandSummary {
    pub command: Vec<String>,
    pub cwd: String,
    pub exit_code: i32,
    pub duration_ms: u64,
    pub aggregated_output: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ToolCallOutput {
    pub output_digest: String,
    pub success: bool,
    pub output_preview: String,
    pub command: Option<CommandSummary>,
    /// The sandbox refused what the call tried to do.
    #[serde(default)]
    pub sandbox_denied: bool,
    /// Nothing ran: the host cannot enforce the call's sandbox.
    #[serde(default)]
    pub sandbox_unavailable: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PatchReviewInput {
    pub cwd: String,
    pub arguments: String,
    pub custom: bool,
    pub sandbox: SandboxSettings,
    /// The stored call item, for a patch too big to pass as `arguments`.
    #[serde(default)]
    pub call_item_digest: Option<String>,
    /// The runner the session's workspace is leased to (see
    /// [`SetupInput::runner`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner: Option<String>,
    /// The session (its key), whose blobs hold the call item.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub session_id: String,
}

/// One file of a patch, for approval requests and patch events.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PatchFileChange {
    pub path: String,
    pub kind: PatchChangeKind,
    /// Added or deleted content, or the unified diff of an update.
    pub text: String,
    pub truncated: bool,
    #[serde(default)]
    pub move_path: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PatchChangeKind {
    Add,
    Delete,
    Update,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PatchReview {
    pub cwd: String,
    pub changes: Vec<PatchFileChange>,
    /// The patch cannot be applied; RunTool reports why to the model.
    pub error: String,
    pub writable_roots: Vec<keel_policy::WritableRoot>,
    pub platform_sandbox_available: bool,
}

/// Budget for the diff text of one patch review in workflow history; files
/// past it are listed without text (marked truncated).
const PATCH_REVIEW_TEXT_BUDGET: usize = 64 * 1024;

/// gRPC clients of the services the activities call. Channels connect lazily,
/// so the worker starts (and polls) while a service is still coming up.
pub struct KeelActivities {
    /// Balanced over the model-proxy replicas.
    model: ModelServiceClient<Traced<BalancedChannel>>,
    /// The tool-runner fleet.
    runners: Runners,
    /// The mcp-broker replicas, a session always at the same one; None:
    /// this worker runs no MCP tools.
    mcp: Option<Affine>,
    /// session-api replicas to publish live deltas to (best effort).
    live: SessionApis,
}

impl KeelActivities {
    /// Clients of the model-proxy replicas, the tool-runner fleet, the
    /// mcp-broker replicas and the session-api replicas.
    pub fn new(
        model_proxy: BalancedChannel,
        runners: Runners,
        mcp_brokers: Option<Affine>,
        session_apis: SessionApis,
    ) -> Self {
        Self {
            model: ModelServiceClient::new(Traced::new(model_proxy)),
            runners,
            mcp: mcp_brokers,
            live: session_apis,
        }
    }
}

impl KeelActivities {
    /// The session's mcp-broker; `Ok(None)`: this worker has none.
    async fn mcp_for(
        &self,
        session_id: &str,
    ) -> Result<Option<McpBrokerServiceClient<Traced<Channel>>>, ActivityError> {
        let Some(brokers) = &self.mcp else {
            return Ok(None);
        };
        match brokers.for_session(session_id).await {
            Some(channel) => Ok(Some(McpBrokerServiceClient::new(Traced::new(channel)))),
            None => Err(ActivityError::application(
                ApplicationFailure::builder("no mcp-broker replica is available")
                    .type_name(failure_type::CONNECTION_FAILED.to_string())
                    .build(),
            )),
        }
    }

    /// The client of the runner `runner` names; `None`: any runner (sessions
    /// from before leases).
    async fn runner_client(
        &self,
        ctx: &ActivityContext,
        runner: Option<&str>,
    ) -> Result<ToolServiceClient<Traced<Channel>>, ActivityError> {
        match runner {
            Some(id) => match self.runners.client(id).await {
                Some(client) => Ok(client),
                // Nothing was sent: the lease moves now.
                None if ctx.info().attempt <= 1 => Err(runner_gone(id, false)),
                // An earlier attempt may have started the call there; the
                // runner may be restarting on its volume (same id, same
                // journal), so the last attempt decides.
                None if ctx.info().attempt < TOOL_ATTEMPTS => Err(runner_retry(id)),
                None => Err(runner_gone(id, true)),
            },
            None => self.runners.any().await.ok_or_else(|| {
                ActivityError::application(
                    ApplicationFailure::builder("no tool-runner is available")
                        .type_name(failure_type::CONNECTION_FAILED.to_string())
                        .build(),
                )
            }),
        }
    }

    /// A failed call to runner `runner`: when it failed in transport and
    /// the runner no longer answers, the lease must move (the call may have
    /// run unless it was never sent); anything else as the status says.
    async fn runner_failure(
        &self,
        ctx: &ActivityContext,
        runner: Option<&str>,
        status: tonic::Status,
    ) -> ActivityError {
        let transport = status.code() == tonic::Code::Unavailable
            && pb::ErrorInfo::from_status(&status).is_none();
        if let (true, Some(id)) = (transport, runner) {
            self.runners.refresh().await;
            if !self.runners.ids().iter().any(|known| known == id) {
                let attempt = ctx.info().attempt;
                if attempt <= 1 && never_sent(&status) {
                    return runner_gone(id, false);
                }
                if attempt < TOOL_ATTEMPTS {
                    return runner_retry(id);
                }
                return runner_gone(id, true);
            }
        }
        status_failure(status)
    }
    async fn close_session(
        &self,
        ctx: &ActivityContext,
        session_id: String,
        runner: Option<&str>,
    ) -> Result<(), ActivityError> {
        let client = match runner {
            Some(id) => self.runners.client(id).await,
            None => Some(self.runner_client(ctx, None).await?),
        };
        // Best effort: idle servers are reaped anyway.
        let mcp = self.mcp_for(&session_id).await.ok().flatten();
        let call = async move {
            if let Some(mut mcp) = mcp {
                // Best effort: idle servers are reaped anyway.
                if let Err(e) = mcp
                    .close_mcp_session(pb::CloseMcpSessionRequest {
                        session_id: session_id.clone(),
                    })
                    .await
                {
                    tracing::warn!(error = %e, "cannot stop the session's MCP servers");
                }
            }
            match client {
                Some(mut client) => {
                    client
                        .close_tool_session(pb::CloseToolSessionRequest { session_id })
                        .await
                        .map_err(status_failure)?;
                }
                None => {
                    tracing::info!(%session_id, runner = ?runner, "the session's tool-runner is gone; nothing to close there");
                }
            }
            Ok(())
        };
        with_heartbeats(ctx, call).await
    }
}

/// Attempts of a tool-runner activity (the workflow's retry policy for
/// them).
pub const TOOL_ATTEMPTS: u32 = 3;

/// The runner holding the workspace does not answer now; the next attempt
/// looks again.
fn runner_retry(id: &str) -> ActivityError {
    ActivityError::application(
        ApplicationFailure::builder(format!("tool-runner {id} does not answer"))
            .type_name(failure_type::CONNECTION_FAILED.to_string())
            .build(),
    )
}

/// The runner holding the workspace is gone: not to be retried here.
fn runner_gone(id: &str, maybe_ran: bool) -> ActivityError {
    let (kind, message) = if maybe_ran {
        (
            failure_type::RUNNER_LOST,
            format!("tool-runner {id} went away during the call"),
        )
    } else {
        (
            failure_type::RUNNER_UNAVAILABLE,
            format!("tool-runner {id} is gone; the call did not run"),
        )
    };
    ActivityError::application(
        ApplicationFailure::builder(message)
            .type_name(kind.to_string())
            .non_retryable(true)
            .build(),
    )
}

/// Whether the status comes from a connection that was refused: the
/// request never left.
fn never_sent(status: &tonic::Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        source = e.source();
    }
    false
}

#[activities]
impl KeelActivities {
    /// Samples one model response through the model-proxy.
    #[activity(name = "model_call")]
    pub async fn model_call(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: ModelCallInput,
    ) -> Result<ModelCallOutput, ActivityError> {
        let request = pb::StreamResponseRequest {
            session_id: input.session_id,
            model: input.model,
            instructions: String::new(),
            conversation: Some(pb::ConversationInput {
                head: input.head.unwrap_or_default(),
                append: input
                    .append
                    .into_iter()
                    .map(|a| pb::ItemInput {
                        kind: Some(match a {
                            AppendItem::Digest(d) => pb::item_input::Kind::Digest(d),
                            AppendItem::Inline(j) => pb::item_input::Kind::InlineJson(j),
                        }),
                    })
                    .collect(),
            }),
            tools: input
                .tools
                .into_iter()
                .map(|t| pb::ToolSpec {
                    name: t.name,
                    json: t.json,
                })
                .collect(),
            parallel_tool_calls: input.parallel_tool_calls,
            ephemeral_items_json: input.ephemeral_items,
            ephemeral_item_digests: input.ephemeral_item_digests,
            prefix_digest: input.prefix_digest,
            store_prefix: input.store_prefix,
            reasoning_effort: input.reasoning_effort,
            reasoning_summary: input.reasoning_summary,
            personality: input.personality,
            compact: input.compact,
            provider: input.provider,
            final_output_json_schema_digest: input.output_schema_digest,
            instructions_digest: input.instructions_digest,
            ..Default::default()
        };
        let mut client = self.model.clone();
        let live = if input.no_live_deltas {
            Vec::new()
        } else {
            self.live.live_publishers()
        };
        let (session_id, turn_id) = (request.session_id.clone(), input.turn_id);
        let events_before = input.events_before;
        let publish = move |delta: pb::LiveDelta| {
            for tx in &live {
                let _ = tx.try_send(pb::PublishRequest {
                    session_id: session_id.clone(),
                    delta: Some(delta.clone()),
                });
            }
        };
        let call = async move {
            let mut stream = client
                .stream_response(request)
                .await
                .map_err(status_failure)?
                .into_inner();
            let mut items = Vec::new();
            while let Some(msg) = stream.message().await.map_err(status_failure)? {
                use pb::stream_response_response::Event;
                match msg.event {
                    Some(Event::OutputItemDone(done)) => {
                        if let Some(item) = output_item(done) {
                            items.push(item);
                        }
                    }
                    Some(Event::Completed(c)) => {
                        return Ok(ModelCallOutput {
                            head: c.head,
                            items,
                            usage: c.usage.unwrap_or_default().into(),
                            model: c.model,
                            rate_limits: c.rate_limits.map(Into::into),
                        });
                    }
                    // Live deltas go to watching clients, never to history.
                    Some(Event::OutputTextDelta(d)) => publish(pb::LiveDelta {
                        turn_id: turn_id.clone(),
                        item_id: d.item_id,
                        kind: pb::LiveDeltaKind::AgentMessage as i32,
                        delta: d.delta,
                        summary_index: 0,
                        events_before,
                    }),
                    Some(Event::ReasoningSummaryDelta(d)) => publish(pb::LiveDelta {
                        turn_id: turn_id.clone(),
                        item_id: d.item_id,
                        kind: pb::LiveDeltaKind::ReasoningSummary as i32,
                        delta: d.delta,
                        summary_index: d.summary_index,
                        events_before,
                    }),
                    Some(_) | None => {}
                }
            }
            Err(ActivityError::application(ApplicationFailure::new(
                "model-proxy stream ended before the response completed",
            )))
        };
        with_heartbeats(&ctx, call).await
    }

    /// Asks the tool-runner, once per session, for the tools to offer and
    /// the project context of the session's working directory.
    #[activity(name = "prepare_session")]
    pub async fn prepare_session(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: SetupInput,
    ) -> Result<SessionSetup, ActivityError> {
        let runner = input.runner.clone();
        let mut client = self.runner_client(&ctx, runner.as_deref()).await?;
        let mcp = self.mcp_for(&input.session_id).await?;
        let call = async {
            let (mcp_specs, mcp_tools, mcp_servers) =
                list_mcp_tools(mcp, &input.session_id, &input.mcp_servers).await?;
            let (request, hosted, model_info) = match &input.features {
                None => (legacy_tools_request(&input), Vec::new(), None),
                Some(features) => {
                    let described = self
                        .describe(pb::DescribeDefaultsRequest {
                            model: input.model.clone(),
                            provider: input.provider.clone(),
                        })
                        .await?;
                    let info = described.model_info.unwrap_or_default();
                    let set = chosen_tools(&input, features, &described.wire_api, &info);
                    (tools_request(&set), toolset::hosted_specs(&set), Some(info))
                }
            };
            let tools = client.list_tools(request).await;
            let tools = match tools {
                Ok(r) => r.into_inner().tools,
                Err(e) => return Err(self.runner_failure(&ctx, runner.as_deref(), e).await),
            };
            let doc = input.project_doc.clone().unwrap_or_default();
            let context = client
                .get_project_context(pb::GetProjectContextRequest {
                    cwd: input.cwd.clone(),
                    project_doc_max_bytes: doc.max_bytes,
                    project_root_markers: doc.root_markers,
                    fallback_filenames: doc.fallback_filenames,
                    disable_project_root_walk: doc.no_root_walk,
                })
                .await;
            let context = match context {
                Ok(r) => r.into_inner(),
                Err(e) => return Err(self.runner_failure(&ctx, runner.as_deref(), e).await),
            };
            let mut tools: Vec<ToolSpec> = tools
                .into_iter()
                .map(|t| ToolSpec {
                    name: t.name,
                    json: t.json,
                })
                .chain(
                    hosted
                        .into_iter()
                        .map(|(name, json)| ToolSpec { name, json }),
                )
                .collect();
            // One order whatever served them, so the prompt prefix is stable.
            tools.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(SessionSetup {
                tools: tools.into_iter().chain(mcp_specs).collect(),
                context_window: model_info.as_ref().map_or(0, |i| i.context_window),
                auto_compact_token_limit: model_info
                    .as_ref()
                    .map_or(0, |i| i.auto_compact_token_limit),
                context_items: crate::context::context_items(&context),
                cwd: context.cwd,
                user_shell: context.user_shell,
                mcp_tools,
                mcp_servers,
            })
        };
        with_heartbeats(&ctx, call).await
    }

    /// What the model-proxy fills in for settings a session leaves empty,
    /// read once at the session's start for `session_configured`.
    #[activity(name = "describe_defaults")]
    pub async fn describe_defaults(
        self: Arc<Self>,
        _ctx: ActivityContext,
        _input: (),
    ) -> Result<ModelDefaults, ActivityError> {
        Ok(self
            .describe(pb::DescribeDefaultsRequest::default())
            .await?
            .into())
    }

    /// [`Self::describe_defaults`] for a session that names its provider.
    #[activity(name = "describe_provider")]
    pub async fn describe_provider(
        self: Arc<Self>,
        _ctx: ActivityContext,
        provider: String,
    ) -> Result<ModelDefaults, ActivityError> {
        let request = pb::DescribeDefaultsRequest {
            provider,
            ..Default::default()
        };
        Ok(self.describe(request).await?.into())
    }

    /// Has a session-api replica copy the session's events `(after, upto]`
    /// into the event archive; returns the new chunk's digest. Any replica
    /// will do: the first that answers.
    #[activity(name = "archive_events")]
    pub async fn archive_events(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: ArchiveEventsInput,
    ) -> Result<String, ActivityError> {
        let request = pb::ArchiveEventsRequest {
            session_key: input.session_id,
            after_offset: input.after,
            upto_offset: input.upto,
            previous_chunk: input.prev.unwrap_or_default(),
        };
        let mut last = None;
        for mut client in self.live.clients() {
            match client.archive_events(request.clone()).await {
                Ok(response) => return Ok(response.into_inner().chunk),
                Err(status) => last = Some(status),
            }
        }
        Err(ActivityError::application(
            ApplicationFailure::builder(match last {
                Some(status) => format!("no session-api replica archived the events: {status}"),
                None => "no session-api replica is known to archive events to".to_string(),
            })
            .type_name(failure_type::CONNECTION_FAILED.to_string())
            .build(),
        ))
    }

    /// Ends the session's tool-runner state when the session closes: its
    /// `exec_command` processes are killed.
    #[activity(name = "close_tool_session")]
    pub async fn close_tool_session(
        self: Arc<Self>,
        ctx: ActivityContext,
        session_id: String,
    ) -> Result<(), ActivityError> {
        self.close_session(&ctx, session_id, None).await
    }

    /// [`KeelActivities::close_tool_session`] for a session whose workspace
    /// is leased: on its runner (nothing to do when that runner is gone).
    #[activity(name = "close_runner_session")]
    pub async fn close_runner_session(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: CloseInput,
    ) -> Result<(), ActivityError> {
        self.close_session(&ctx, input.session_id, Some(&input.runner))
            .await
    }

    /// Chooses the runner for the session's workspace (see
    /// [`crate::runners`]).
    #[activity(name = "lease_workspace")]
    pub async fn lease_workspace(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: LeaseInput,
    ) -> Result<Lease, ActivityError> {
        let call = async {
            match self
                .runners
                .lease(
                    &input.session_id,
                    &input.cwd,
                    input.git.as_ref(),
                    input.previous.as_deref(),
                )
                .await
            {
                Ok(leased) => {
                    tracing::info!(session_id = %input.session_id, runner_id = %leased.runner_id, previous = ?input.previous, "workspace leased");
                    Ok(Lease {
                        runner_id: leased.runner_id,
                        cwd: leased.cwd,
                    })
                }
                // Retried: runners may be starting.
                Err(e @ LeaseError::NoRunner { .. }) => Err(ActivityError::application(
                    ApplicationFailure::builder(e.to_string())
                        .type_name(failure_type::CONNECTION_FAILED.to_string())
                        .build(),
                )),
                // The workspace may be on a volume only the previous
                // runner mounts: wait for it to come back (retried).
                Err(LeaseError::Refused(status))
                    if input.previous.is_some() && status.code() == tonic::Code::NotFound =>
                {
                    Err(ActivityError::application(
                        ApplicationFailure::builder(format!(
                            "no tool-runner has the workspace {:?}: {}",
                            input.cwd,
                            status.message()
                        ))
                        .type_name(failure_type::CONNECTION_FAILED.to_string())
                        .build(),
                    ))
                }
                Err(LeaseError::Refused(status)) => Err(status_failure(status)),
            }
        };
        with_heartbeats(&ctx, call).await
    }

    /// One MCP tool call through the broker, which stores the output item.
    #[activity(name = "call_mcp_tool")]
    pub async fn call_mcp_tool(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: McpCallInput,
    ) -> Result<McpCallOutput, ActivityError> {
        let Some(mut client) = self.mcp_for(&input.session_id).await? else {
            return Err(no_broker());
        };
        let progress = self.mcp_progress(
            &input.session_id,
            &input.call_id,
            &input.turn_id,
            input.events_before,
        );
        let call = async move {
            let stream = client
                .call_mcp_tool(pb::CallMcpToolRequest {
                    session_id: input.session_id,
                    call_id: input.call_id,
                    server: input.server,
                    tool: input.tool,
                    arguments: input.arguments,
                })
                .await
                .map_err(status_failure)?
                .into_inner();
            mcp_outcome(stream, progress, |m| match m.kind? {
                pb::call_mcp_tool_response::Kind::Outcome(o) => Some(Ok(o)),
                pb::call_mcp_tool_response::Kind::Progress(p) => Some(Err(p)),
            })
            .await
        };
        with_heartbeats(&ctx, call).await
    }

    /// Answers the question a waiting MCP call asked, and waits for the
    /// call again.
    #[activity(name = "resume_mcp_call")]
    pub async fn resume_mcp_call(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: McpResumeInput,
    ) -> Result<McpCallOutput, ActivityError> {
        let Some(mut client) = self.mcp_for(&input.session_id).await? else {
            return Err(no_broker());
        };
        let action = match input.action.as_str() {
            "accept" => pb::ElicitationAction::Accept,
            "decline" => pb::ElicitationAction::Decline,
            _ => pb::ElicitationAction::Cancel,
        };
        let progress = self.mcp_progress(
            &input.session_id,
            &input.call_id,
            &input.turn_id,
            input.events_before,
        );
        let call = async move {
            let stream = client
                .resume_mcp_call(pb::ResumeMcpCallRequest {
                    session_id: input.session_id,
                    call_id: input.call_id,
                    action: action as i32,
                    content_json: input.content_json,
                })
                .await
                .map_err(status_failure)?
                .into_inner();
            mcp_outcome(stream, progress, |m| match m.kind? {
                pb::resume_mcp_call_response::Kind::Outcome(o) => Some(Ok(o)),
                pb::resume_mcp_call_response::Kind::Progress(p) => Some(Err(p)),
            })
            .await
        };
        with_heartbeats(&ctx, call).await
    }

    /// What an apply_patch call would change, for the patch-safety decision
    /// and the approval request.
    #[activity(name = "review_patch")]
    pub async fn review_patch(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: PatchReviewInput,
    ) -> Result<PatchReview, ActivityError> {
        let runner = input.runner.clone();
        let mut client = self.runner_client(&ctx, runner.as_deref()).await?;
        let call = async {
            let r = client
                .review_patch(pb::ReviewPatchRequest {
                    cwd: input.cwd,
                    arguments: input.arguments,
                    custom: input.custom,
                    sandbox: Some((&input.sandbox).into()),
                    call_item_digest: input.call_item_digest.unwrap_or_default(),
                    session_id: input.session_id,
                })
                .await;
            let r = match r {
                Ok(r) => r.into_inner(),
                Err(e) => return Err(self.runner_failure(&ctx, runner.as_deref(), e).await),
            };
            Ok(PatchReview {
                cwd: r.cwd,
                changes: patch_changes(r.changes),
                error: r.error,
                writable_roots: r
                    .writable_roots
                    .into_iter()
                    .map(|w| keel_policy::WritableRoot {
                        root: w.root,
                        read_only_subpaths: w.read_only_subpaths,
                    })
                    .collect(),
                platform_sandbox_available: r.platform_sandbox_available,
            })
        };
        with_heartbeats(&ctx, call).await
    }

    /// Runs one tool call on the tool-runner.
    #[activity(name = "run_tool")]
    pub async fn run_tool(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: ToolCallInput,
    ) -> Result<ToolCallOutput, ActivityError> {
        let runner = input.runner.clone();
        let mut client = self.runner_client(&ctx, runner.as_deref()).await?;
        let mut canceller = client.clone();
        let cancel_request = pb::CancelToolCallRequest {
            session_id: input.session_id.clone(),
            call_id: input.call_id.clone(),
            agent_id: input.agent_id.clone(),
        };
        let call = async {
            let r = client
                .run_tool(pb::RunToolRequest {
                    session_id: input.session_id,
                    call_id: input.call_id,
                    tool_name: input.name,
                    arguments: input.arguments,
                    cwd: input.cwd,
                    custom: input.custom,
                    sandbox: input.sandbox.as_ref().map(Into::into),
                    attempt: input.attempt,
                    call_item_digest: input.call_item_digest.unwrap_or_default(),
                    invocation: input.invocation.as_ref().map(Into::into),
                    user_shell: input.user_shell,
                    agent_id: input.agent_id,
                })
                .await;
            let r = match r {
                Ok(r) => r.into_inner(),
                Err(e) => return Err(self.runner_failure(&ctx, runner.as_deref(), e).await),
            };
            Ok(ToolCallOutput {
                output_digest: r.output_item_digest,
                success: r.success,
                output_preview: r.output_preview,
                command: r.command.map(|c| CommandSummary {
                    command: c.command,
                    cwd: c.cwd,
                    exit_code: c.exit_code,
                    duration_ms: c.duration_ms,
                    aggregated_output: c.aggregated_output,
                }),
                sandbox_denied: r.sandbox_denied,
                sandbox_unavailable: r.sandbox_unavailable,
            })
        };
        // An interrupt must kill the command, not just stop waiting for it:
        // the tool-runner keeps executions alive for retries otherwise.
        let on_cancel = async move {
            let cancel = canceller.cancel_tool_call(cancel_request);
            match tokio::time::timeout(Duration::from_secs(10), cancel).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot cancel the tool call"),
                Err(_) => tracing::warn!("cancelling the tool call timed out"),
            }
        };
        with_heartbeats_and_cancel(&ctx, call, on_cancel).await
    }
}

/// The changes of a reviewed patch, their texts within the history budget.
fn patch_changes(changes: Vec<pb::FileChange>) -> Vec<PatchFileChange> {
    use pb::file_change::Kind;
    let mut budget = PATCH_REVIEW_TEXT_BUDGET;
    changes
        .into_iter()
        .filter_map(|c| {
            let (kind, text, truncated, move_path) = match c.kind? {
                Kind::Add(a) => (PatchChangeKind::Add, a.content, a.truncated, None),
                Kind::Delete(d) => (PatchChangeKind::Delete, d.content, d.truncated, None),
                Kind::Update(u) => (
                    PatchChangeKind::Update,
                    u.unified_diff,
                    u.truncated,
                    Some(u.move_path).filter(|m| !m.is_empty()),
                ),
            };
            let (text, cut) = keel_workflow_api::cut_text(&text, budget);
            budget -= text.len();
            Some(PatchFileChange {
                path: c.path,
                kind,
                text,
                truncated: truncated || cut,
                move_path,
            })
        })
        .collect()
}

/// Drives `call` while heartbeating on a timer (not on stream traffic, so a
/// silent model or a quiet command is not mistaken for a dead worker) and
/// abandons it when Temporal cancels the activity.
async fn with_heartbeats<T>(
    ctx: &ActivityContext,
    call: impl std::future::Future<Output = Result<T, ActivityError>>,
) -> Result<T, ActivityError> {
    with_heartbeats_and_cancel(ctx, call, async {}).await
}

/// [`with_heartbeats`], running `on_cancel` before reporting cancellation.
async fn with_heartbeats_and_cancel<T>(
    ctx: &ActivityContext,
    call: impl std::future::Future<Output = Result<T, ActivityError>>,
    on_cancel: impl std::future::Future<Output = ()>,
) -> Result<T, ActivityError> {
    tokio::pin!(call);
    let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
    loop {
        tokio::select! {
            r = &mut call => return r,
            _ = ctx.cancelled() => {
                on_cancel.await;
                return Err(ActivityError::cancelled());
            }
            _ = tick.tick() => {
                if let Err(e) = ctx.record_heartbeat(()).await {
                    tracing::warn!(error = %e, "heartbeat failed");
                }
            }
        }
    }
}

/// The Codex error class (`codex_error_info`) of a service's failure
/// class (`keel.v1.ErrorInfo.class`; the model-proxy's are listed in its
/// `ProxyError::class`).
fn codex_class(class: &str) -> &'static str {
    match class {
        "unauthenticated" => failure_type::UNAUTHORIZED,
        "invalid_request" | "not_found" => failure_type::BAD_REQUEST,
        "context_window_exceeded" => failure_type::CONTEXT_WINDOW_EXCEEDED,
        "rate_limited" | "quota_exceeded" | "usage_limit_reached" | "usage_not_included" => {
            failure_type::USAGE_LIMIT_EXCEEDED
        }
        "capacity" | "overloaded" => failure_type::SERVER_OVERLOADED,
        "transport" | "server_error" | "stream" | "stream_closed" | "idle_timeout"
        | "incomplete" | "response_failed" => failure_type::CONNECTION_FAILED,
        // The tool-runner's (its `service/errors.rs`).
        "outside_workspace"
        | "invocation_mismatch"
        | "unusable_directory"
        | "spawn_failed"
        | "sandbox_unavailable" => failure_type::BAD_REQUEST,
        "internal" | "blob_store" | "blob_corrupt" | "journal" | "shutting_down" => {
            failure_type::INTERNAL
        }
        "draining" => failure_type::RUNNER_UNAVAILABLE,
        "prefix_missing" => failure_type::PREFIX_MISSING,
        _ => failure_type::OTHER,
    }
}

fn output_item(done: pb::OutputItemDone) -> Option<OutputItem> {
    use pb::output_item_done::Item;
    let digest = done.digest;
    Some(match done.item? {
        Item::Message(m) => OutputItem::Message {
            digest,
            role: m.role,
            text: m.text,
            truncated: m.truncated,
        },
        Item::FunctionCall(f) => OutputItem::FunctionCall {
            digest,
            call_id: f.call_id,
            name: f.name,
            arguments: f.arguments,
            arguments_truncated: f.arguments_truncated,
        },
        Item::CustomToolCall(c) => OutputItem::CustomToolCall {
            digest,
            call_id: c.call_id,
            name: c.name,
            input: c.input,
            input_truncated: c.input_truncated,
        },
        Item::Reasoning(r) => OutputItem::Reasoning {
            digest,
            summary: r.summary_text,
        },
        Item::Other(o) => OutputItem::Other {
            digest,
            web_search: (o.r#type == "web_search_call").then_some(WebSearchCall {
                call_id: o.id,
                query: o.web_search_query,
                action_json: o.web_search_action_json,
            }),
            item_type: o.r#type,
        },
    })
}

impl KeelActivities {
    /// The model-proxy's defaults and catalog entry (`DescribeDefaults`).
    async fn describe(
        &self,
        request: pb::DescribeDefaultsRequest,
    ) -> Result<pb::DescribeDefaultsResponse, ActivityError> {
        let mut client = self.model.clone();
        Ok(client
            .describe_defaults(request)
            .await
            .map_err(status_failure)?
            .into_inner())
    }
}

/// Maps a service's gRPC status to an activity failure: what may succeed
/// later is retried by Temporal (after the wait the service asked for),
/// everything else fails fast with the service's message and a Codex error
/// class as the failure type. A status carrying a `keel.v1.ErrorInfo` is
/// read from it; one without (from outside Keel, or a transport failure)
/// is judged by its code.
/// Reads an MCP call's stream to its outcome, passing its progress on;
/// `split` tells a message's outcome (`Ok`) from its progress (`Err`).
async fn mcp_outcome<M>(
    mut stream: tonic::Streaming<M>,
    progress: impl Fn(pb::McpProgress),
    split: fn(M) -> Option<Result<pb::McpCallOutcome, pb::McpProgress>>,
) -> Result<McpCallOutput, ActivityError> {
    while let Some(msg) = stream.message().await.map_err(status_failure)? {
        match split(msg) {
            Some(Ok(outcome)) => return Ok(outcome.into()),
            Some(Err(p)) => progress(p),
            None => {}
        }
    }
    Err(ActivityError::application(ApplicationFailure::new(
        "the mcp-broker ended the call's stream without its outcome",
    )))
}

/// `<progress>[/<total>][: <message>]`, the text of an MCP progress delta.
pub fn progress_text(p: &pb::McpProgress) -> String {
    let mut text = format!("{}", p.progress);
    if p.total > 0.0 {
        text.push_str(&format!("/{}", p.total));
    }
    if !p.message.is_empty() {
        text.push_str(": ");
        text.push_str(&p.message);
    }
    text
}

impl KeelActivities {
    /// Publishes an MCP call's progress to the watching clients (best
    /// effort, never history).
    fn mcp_progress(
        &self,
        session_id: &str,
        call_id: &str,
        turn_id: &str,
        events_before: u64,
    ) -> impl Fn(pb::McpProgress) + Send + use<> {
        let live = self.live.live_publishers();
        let (session_id, call_id, turn_id) = (
            session_id.to_string(),
            call_id.to_string(),
            turn_id.to_string(),
        );
        move |p: pb::McpProgress| {
            let delta = pb::LiveDelta {
                turn_id: turn_id.clone(),
                item_id: call_id.clone(),
                kind: pb::LiveDeltaKind::McpProgress as i32,
                delta: progress_text(&p),
                summary_index: 0,
                events_before,
            };
            for tx in &live {
                let _ = tx.try_send(pb::PublishRequest {
                    session_id: session_id.clone(),
                    delta: Some(delta.clone()),
                });
            }
        }
    }
}

fn no_broker() -> ActivityError {
    ActivityError::application(
        ApplicationFailure::builder(
            "the session uses MCP servers, but this worker was started without --mcp-broker",
        )
        .type_name(failure_type::BAD_REQUEST.to_string())
        .non_retryable(true)
        .build(),
    )
}

/// The session's MCP tools from the broker: their specs for the model and
/// their entries for dispatch. No broker: none, unless the session named
/// servers.
async fn list_mcp_tools(
    client: Option<McpBrokerServiceClient<Traced<Channel>>>,
    session_id: &str,
    servers: &[String],
) -> Result<McpListing, ActivityError> {
    let Some(mut client) = client else {
        return if servers.is_empty() {
            Ok((Vec::new(), Vec::new(), Vec::new()))
        } else {
            Err(no_broker())
        };
    };
    let listed = client
        .list_mcp_tools(pb::ListMcpToolsRequest {
            session_id: session_id.to_string(),
            servers: servers.to_vec(),
        })
        .await
        .map_err(status_failure)?
        .into_inner();
    let mut seen = Vec::with_capacity(listed.servers.len());
    for s in listed.servers {
        let running = s.state == pb::McpServerState::Running as i32;
        if !running {
            tracing::warn!(server = %s.name, error = %s.error, "MCP server unavailable; the session goes on without its tools");
        }
        seen.push(keel_workflow_api::McpServerSeen {
            name: s.name,
            transport: s.transport,
            required: s.required,
            shared: s.shared,
            running,
            error: s.error,
            tool_count: s.tool_count,
        });
    }
    let mut specs = Vec::with_capacity(listed.tools.len());
    let mut entries = Vec::with_capacity(listed.tools.len());
    for t in listed.tools {
        let parameters: serde_json::Value = serde_json::from_str(&t.input_schema_json)
            .unwrap_or_else(|_| serde_json::json!({"type": "object", "properties": {}}));
        specs.push(ToolSpec {
            name: t.qualified_name.clone(),
            json: serde_json::json!({
                "type": "function",
                "name": t.qualified_name,
                "description": t.description,
                "strict": false,
                "parameters": parameters,
            })
            .to_string(),
        });
        let annotated = t.annotations.is_some();
        let a = t.annotations.unwrap_or_default();
        entries.push(keel_workflow_api::McpToolEntry {
            name: t.qualified_name,
            server: t.server,
            tool: t.tool,
            annotated,
            read_only: a.read_only_hint,
            destructive: a.destructive_hint,
            idempotent: a.idempotent_hint,
            open_world: a.open_world_hint,
            approval_mode: t.approval_mode,
        });
    }
    Ok((specs, entries, seen))
}

/// A session's MCP tool specs, their entries, and its servers.
type McpListing = (
    Vec<ToolSpec>,
    Vec<keel_workflow_api::McpToolEntry>,
    Vec<keel_workflow_api::McpServerSeen>,
);

pub fn status_failure(s: tonic::Status) -> ActivityError {
    use tonic::Code;
    let message = if s.message().is_empty() {
        format!("{:?}", s.code())
    } else {
        s.message().to_string()
    };
    if let Some(info) = pb::ErrorInfo::from_status(&s) {
        let failure = ApplicationFailure::builder(message)
            .type_name(codex_class(&info.class).to_string())
            .non_retryable(!info.retryable);
        let failure = match info.retry_after().filter(|_| info.retryable) {
            Some(wait) => failure.next_retry_delay(wait).build(),
            None => failure.build(),
        };
        return ActivityError::application(failure);
    }
    let (kind, retryable) = match s.code() {
        Code::Unavailable | Code::Unknown | Code::Aborted | Code::DeadlineExceeded => {
            (failure_type::CONNECTION_FAILED, true)
        }
        Code::Internal => (failure_type::INTERNAL, true),
        Code::Unauthenticated | Code::PermissionDenied => (failure_type::UNAUTHORIZED, false),
        Code::InvalidArgument | Code::NotFound | Code::FailedPrecondition => {
            (failure_type::BAD_REQUEST, false)
        }
        Code::OutOfRange => (failure_type::CONTEXT_WINDOW_EXCEEDED, false),
        Code::ResourceExhausted => (failure_type::USAGE_LIMIT_EXCEEDED, false),
        _ => (failure_type::OTHER, false),
    };
    ActivityError::application(
        ApplicationFailure::builder(message)
            .type_name(kind.to_string())
            .non_retryable(!retryable)
            .build(),
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn failure(s: tonic::Status) -> (String, bool, Option<Duration>) {
        let ActivityError::Application(f) = status_failure(s) else {
            panic!("not an application failure");
        };
        (
            f.type_name().unwrap_or_default().to_string(),
            f.is_non_retryable(),
            f.next_retry_delay(),
        )
    }

    /// The service's class and retryability decide, not the code:
    /// RESOURCE_EXHAUSTED is a retry later when the model-proxy is at
    /// capacity, and the end of the turn when a rate limit outlasted its
    /// retries.
    #[test]
    fn error_info_decides_over_the_code() {
        use tonic::Code;
        let capacity = pb::ErrorInfo::new("capacity", true)
            .with_retry_after(Some(Duration::from_secs(2)))
            .into_status(Code::ResourceExhausted, "busy");
        assert_eq!(
            failure(capacity),
            (
                failure_type::SERVER_OVERLOADED.to_string(),
                false,
                Some(Duration::from_secs(2))
            )
        );
        let limited = pb::ErrorInfo::new("rate_limited", false)
            .with_retry_after(Some(Duration::from_secs(60)))
            .into_status(Code::ResourceExhausted, "rate limited");
        assert_eq!(
            failure(limited),
            (failure_type::USAGE_LIMIT_EXCEEDED.to_string(), true, None)
        );
        // Without an ErrorInfo, the code decides.
        assert_eq!(
            failure(tonic::Status::unavailable("down")),
            (failure_type::CONNECTION_FAILED.to_string(), false, None)
        );
        assert_eq!(
            failure(tonic::Status::resource_exhausted("quota")),
            (failure_type::USAGE_LIMIT_EXCEEDED.to_string(), true, None)
        );
    }
}
