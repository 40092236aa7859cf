//! The session workflow's contract, shared by the worker (which implements it)
//! and session-api (which drives it) so session-api never links workflow code.
//!
//! Every type here is part of workflow history or of a running workflow's
//! interface: changing a name or removing a field breaks running sessions.
//! Add fields with `#[serde(default)]`; never rename.

#[cfg(feature = "client")]
pub mod client;

use std::collections::{BTreeMap, BTreeSet};

pub use keel_policy::{
    ApprovalKey, ApprovalPolicy, ExecPolicyAmendment, ReviewDecision, SandboxMode,
};
use serde::{Deserialize, Serialize};
use temporalio_common::{
    HasWorkflowDefinition, QueryDefinition, SignalDefinition, UpdateDefinition, WorkflowDefinition,
};

/// Workflow type name of a session.
pub const WORKFLOW_TYPE: &str = "AgentWorkflow";
/// Task queue of the session workflow and its activities, unless configured.
pub use keel_stack::DEFAULT_TASK_QUEUE;
/// Prefix of the workflow ids of the default tenant's sessions:
/// `keel-session-<id>` (the ids sessions had before tenants existed).
pub const WORKFLOW_ID_PREFIX: &str = "keel-session-";
/// Prefix of the workflow ids of other tenants' sessions:
/// `keel-session.<tenant>.<id>`.
pub const TENANT_WORKFLOW_ID_PREFIX: &str = "keel-session.";
/// Texts longer than this (bytes) are cut in events and summaries; the model
/// always gets the whole text from the blob store.
pub const INLINE_TEXT_LIMIT: usize = 16 * 1024;
/// Memo keys kept current by the workflow, for ListSessions.
pub const MEMO_STATUS: &str = "keel_status";
pub const MEMO_LAST_ACTIVITY_MS: &str = "keel_last_activity_ms";
/// Memo key: `true` while the session's queue of waiting turns is at its
/// limit (`SessionInput::max_queued_turns`), so session-api refuses new
/// turns without asking the workflow.
pub const MEMO_QUEUE_FULL: &str = "keel_queue_full";
/// Memo keys of the session registry (ListSessions' filters read them):
/// the name, the archived flag, the working directory and the start of the
/// newest message. session-api writes the first ones when it starts the
/// workflow; the workflow keeps them current.
pub const MEMO_NAME: &str = "keel_name";
pub const MEMO_ARCHIVED: &str = "keel_archived";
pub const MEMO_CWD: &str = "keel_cwd";
pub const MEMO_LAST_MESSAGE: &str = "keel_last_message";
/// `MEMO_STATUS` of a running turn that waits for an answer.
pub const MEMO_STATUS_WAITING: &str = "waiting";
/// The longest session name (characters).
pub const MAX_NAME_CHARS: usize = 120;
/// `MEMO_LAST_MESSAGE` holds at most this many characters.
pub const LAST_MESSAGE_CHARS: usize = 200;

/// The start of `text` on one line (whitespace runs made one space, control
/// characters such as terminal escapes left out), at most
/// [`LAST_MESSAGE_CHARS`] characters: what pickers show of a message.
pub fn message_preview(text: &str) -> String {
    let printable: String = text
        .chars()
        .map(|c| if c.is_whitespace() { ' ' } else { c })
        .filter(|c| !c.is_control())
        .collect();
    let mut out = String::new();
    for (n, word) in printable.split_whitespace().enumerate() {
        if n > 0 {
            out.push(' ');
        }
        out.push_str(word);
        if out.chars().count() >= LAST_MESSAGE_CHARS {
            break;
        }
    }
    if out.chars().count() > LAST_MESSAGE_CHARS {
        out = out.chars().take(LAST_MESSAGE_CHARS - 1).collect();
        out.push('…');
    }
    out
}

/// A session's key: its id qualified by its tenant (`<tenant>.<id>`), or
/// the bare id for the default tenant (`None`). Session ids cannot contain
/// `.`, so keys are unique across tenants; the workflow, the worker and the
/// services below session-api know sessions only by key.
pub fn session_key(tenant: Option<&str>, session_id: &str) -> String {
    match tenant {
        Some(tenant) => format!("{tenant}.{session_id}"),
        None => session_id.to_string(),
    }
}

/// The inverse of [`session_key`]: the tenant (`None`: the default one) and
/// the session id.
pub fn split_session_key(key: &str) -> (Option<&str>, &str) {
    match key.split_once('.') {
        Some((tenant, id)) => (Some(tenant), id),
        None => (None, key),
    }
}

/// The workflow id of the session with key `session_key`: stable, so the
/// key is all session-api needs.
pub fn workflow_id(session_key: &str) -> String {
    match split_session_key(session_key) {
        (Some(_), _) => format!("{TENANT_WORKFLOW_ID_PREFIX}{session_key}"),
        (None, _) => format!("{WORKFLOW_ID_PREFIX}{session_key}"),
    }
}

/// The inverse of [`workflow_id`]: the session key.
pub fn session_key_of(workflow_id: &str) -> Option<&str> {
    workflow_id
        .strip_prefix(WORKFLOW_ID_PREFIX)
        .or_else(|| workflow_id.strip_prefix(TENANT_WORKFLOW_ID_PREFIX))
}

/// The prefix shared by the workflow ids of one tenant's sessions, and of no
/// other tenant's (for listing a tenant's sessions).
pub fn tenant_workflow_id_prefix(tenant: Option<&str>) -> String {
    match tenant {
        Some(tenant) => format!("{TENANT_WORKFLOW_ID_PREFIX}{tenant}."),
        None => WORKFLOW_ID_PREFIX.to_string(),
    }
}

/// Cuts `s` to at most `limit` bytes at a character boundary; true when cut.
pub fn cut_text(s: &str, limit: usize) -> (String, bool) {
    if s.len() <= limit {
        return (s.to_string(), false);
    }
    let mut end = limit;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    (s[..end].to_string(), true)
}

/// Input of a session workflow run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SessionInput {
    pub session_id: String,
    /// Empty: the model-proxy's default.
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub cwd: String,
    #[serde(default)]
    pub developer_instructions: String,
    /// Unix milliseconds at which session-api created the session.
    #[serde(default)]
    pub created_at_ms: u64,
    /// How many events the session keeps for replay; 0 for the default.
    #[serde(default)]
    pub retained_events: u32,
    /// Continue-as-new at the next turn boundary once a run's history has
    /// this many events; 0 for the default.
    #[serde(default)]
    pub history_event_budget: u32,
    /// State carried from the previous run; `None` for a new session.
    #[serde(default)]
    pub carried: Option<Carried>,
    /// The session's starting settings (`model` above wins when this has
    /// none). `None` for sessions created before settings existed.
    #[serde(default)]
    pub context: Option<ContextPatch>,
    /// Client-implemented tools offered to the model.
    #[serde(default)]
    pub dynamic_tools: Vec<DynamicToolDecl>,
    /// The shell tool offered (`keel.v1.ShellToolKind` as a number);
    /// 0 (unset): `shell`.
    #[serde(default)]
    pub shell_tool: i32,
    /// The principal who created the session; empty for sessions created
    /// before session-api authenticated its callers.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner: String,
    /// The developer instructions as a stored Responses API item (a
    /// developer message), by digest; empty for none. Sessions created
    /// before session-api stored them carry `developer_instructions` inline.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub developer_instructions_digest: String,
    /// User turns that may wait behind the running one; a turn past it is
    /// not queued (an `error` event says so). 0: no limit (sessions created
    /// before the limit existed).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub max_queued_turns: u32,
    /// The MCP servers (the broker's names) the session uses; empty: every
    /// server the broker has enabled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mcp_servers: Vec<String>,
    /// A repository the session's workspace is cloned from (instead of
    /// `cwd`); `None` for a directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<GitSource>,
    /// How the tools are chosen (Codex's features); `None`: the fixed set
    /// of sessions created before features existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<ToolFeatures>,
    /// Where AGENTS.md files are looked for; `None`: Codex's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_doc: Option<ProjectDoc>,
    /// Exec-policy rules files every command decision applies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RulesSource>,
    /// The configuration the client resolved the session from, for the
    /// record.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config: Vec<ConfigEntry>,
    /// The model provider (a model-proxy provider id); empty: the proxy's
    /// default.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub model_provider: String,
    /// The session's own base instructions, by blob digest; empty: the
    /// model-proxy's.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub base_instructions_digest: String,
    /// The session's name at its start (CreateSessionRequest.name).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The session this one was forked from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forked_from: Option<ForkOrigin>,
    /// Set when this workflow is a sub-agent of a session (a child workflow
    /// of the session's own workflow); `None` for the session's own agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentLink>,
    /// The roles sub-agents may be started with, besides `default`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agent_roles: Vec<AgentRole>,
    /// Limits on sub-agents (zeros: the defaults).
    #[serde(default, skip_serializing_if = "AgentLimits::is_default")]
    pub agent_limits: AgentLimits,
    /// Sub-agents to start at the session's first turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crew: Option<Crew>,
}

/// A kind of sub-agent (`keel.v1.AgentRole`): what it changes of its
/// parent's settings, never widening them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AgentRole {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub model: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reasoning_effort: String,
    /// Its developer instructions as a stored developer message, by digest
    /// (they replace the parent's); empty: the parent's.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub developer_instructions_digest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_policy: Option<ApprovalPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_mode: Option<SandboxMode>,
    /// Tools its agents are not offered (by name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disabled_tools: Vec<String>,
}

/// `keel.v1.AgentLimits`; a zero takes the default.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AgentLimits {
    #[serde(default)]
    pub max_threads: u32,
    #[serde(default)]
    pub max_depth: u32,
    /// Turns one sub-agent may be given; 0: no limit.
    #[serde(default)]
    pub max_turns: u32,
}

impl AgentLimits {
    /// Codex's `DEFAULT_AGENT_MAX_THREADS`.
    pub const DEFAULT_MAX_THREADS: u32 = 6;
    /// Codex's `DEFAULT_AGENT_MAX_DEPTH`, and the deepest Keel nests.
    pub const DEFAULT_MAX_DEPTH: u32 = 1;

    fn is_default(&self) -> bool {
        *self == Self::default()
    }

    pub fn max_threads(&self) -> u32 {
        match self.max_threads {
            0 => Self::DEFAULT_MAX_THREADS,
            n => n,
        }
    }

    pub fn max_depth(&self) -> u32 {
        match self.max_depth {
            0 => Self::DEFAULT_MAX_DEPTH,
            n => n,
        }
    }
}

/// `keel.v1.Crew`: sub-agents started together.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Crew {
    pub name: String,
    pub members: Vec<CrewMember>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CrewMember {
    /// A role's name, or `default`.
    pub role: String,
    /// Empty: the first turn's message.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub task: String,
}

impl SessionInput {
    /// The id clients know this workflow's agent by: a sub-agent's own id,
    /// or the session id without its tenant for the session's own agent
    /// (as events name it).
    pub fn client_agent_id(&self) -> &str {
        match &self.agent {
            Some(link) => &link.agent_id,
            None => split_session_key(&self.session_id).1,
        }
    }

    /// The agent that started this one; empty for the session's own agent.
    pub fn parent_agent_id(&self) -> &str {
        self.agent
            .as_ref()
            .map(|link| link.parent_agent_id.as_str())
            .unwrap_or("")
    }

    /// The agent id a tool call names: empty for the session's own agent
    /// (whose calls keep the keys they had before sub-agents existed).
    pub fn tool_agent_id(&self) -> &str {
        self.agent
            .as_ref()
            .map(|link| link.agent_id.as_str())
            .unwrap_or("")
    }
}

/// Where a sub-agent sits in its session (see docs/design/sub-agents.md).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AgentLink {
    /// The sub-agent's id (a UUID the session's workflow made).
    pub agent_id: String,
    /// The agent that started it: the session id for the session's own
    /// agent.
    pub parent_agent_id: String,
    /// The session's own workflow, which every sub-agent reports to.
    pub root_workflow_id: String,
    /// 1 for an agent the session's own agent started, 2 for one that
    /// agent started, ….
    pub depth: u32,
    /// The role it was started with (`[agents.<role>]`); empty: `default`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub role: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub nickname: String,
    /// Its first task, as the parent's `spawn_agent` gave it: the agent's
    /// first turn.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub task: String,
    /// The call that started it (the first turn's id).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub spawn_call_id: String,
    /// Tools its role takes away (by name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disabled_tools: Vec<String>,
}

pub use keel_tool_model::{MAX_AGENT_ID_LEN, valid_agent_id};

pub use keel_tool_model::toolset::{ToolFeatures, WebSearch};

/// Where AGENTS.md files are looked for (`keel.v1.ProjectDocOptions`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProjectDoc {
    /// 0: Codex's default (32 KiB).
    #[serde(default)]
    pub max_bytes: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallback_filenames: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub root_markers: Vec<String>,
    #[serde(default)]
    pub no_root_walk: bool,
}

/// One exec-policy rules file (`keel.v1.RulesFile`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RulesSource {
    pub name: String,
    pub text: String,
}

/// One resolved configuration value (`keel.v1.ConfigEntry`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConfigEntry {
    pub key: String,
    pub value: String,
    pub source: String,
}

/// A git repository and the ref to check out (`keel.v1.GitSource`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct GitSource {
    pub url: String,
    /// Empty: the default branch.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub git_ref: String,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A sandbox policy (Codex `SandboxPolicy`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SandboxSettings {
    pub mode: SandboxMode,
    #[serde(default)]
    pub writable_roots: Vec<String>,
    #[serde(default)]
    pub network_access: bool,
    #[serde(default)]
    pub exclude_tmpdir_env_var: bool,
    #[serde(default)]
    pub exclude_slash_tmp: bool,
}

impl SandboxSettings {
    /// No sandbox: what an approved escalation runs under.
    pub fn full_access() -> Self {
        Self {
            mode: SandboxMode::DangerFullAccess,
            ..Self::default()
        }
    }
}

/// The settings in force for a model call and its tool calls. Empty
/// strings mean "the model-proxy's configured default".
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TurnSettings {
    pub approval_policy: ApprovalPolicy,
    pub sandbox: SandboxSettings,
    pub model: String,
    pub reasoning_effort: String,
    pub reasoning_summary: String,
    pub personality: String,
    /// Model calls per turn before the turn stops; 0: no limit (Codex has
    /// none).
    #[serde(default)]
    pub max_iterations: u32,
}

impl Default for TurnSettings {
    fn default() -> Self {
        Self {
            approval_policy: ApprovalPolicy::OnRequest,
            sandbox: SandboxSettings {
                mode: SandboxMode::WorkspaceWrite,
                ..SandboxSettings::default()
            },
            model: String::new(),
            reasoning_effort: String::new(),
            reasoning_summary: String::new(),
            personality: String::new(),
            max_iterations: 0,
        }
    }
}

impl TurnSettings {
    /// A new session's settings: the defaults, the session's `model`, then
    /// the settings it was created with.
    pub fn initial(model: &str, context: Option<&ContextPatch>) -> Self {
        let base = Self {
            model: model.to_string(),
            ..Self::default()
        };
        match context {
            Some(patch) => base.with(patch),
            None => base,
        }
    }

    /// These settings with `patch` applied on top.
    pub fn with(&self, patch: &ContextPatch) -> Self {
        let pick = |new: &Option<String>, old: &String| new.clone().unwrap_or_else(|| old.clone());
        Self {
            approval_policy: patch.approval_policy.unwrap_or(self.approval_policy),
            sandbox: patch
                .sandbox
                .clone()
                .unwrap_or_else(|| self.sandbox.clone()),
            model: pick(&patch.model, &self.model),
            reasoning_effort: pick(&patch.reasoning_effort, &self.reasoning_effort),
            reasoning_summary: pick(&patch.reasoning_summary, &self.reasoning_summary),
            personality: pick(&patch.personality, &self.personality),
            max_iterations: patch.max_iterations.unwrap_or(self.max_iterations),
        }
    }
}

/// A change of settings; `None` keeps the value in force.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ContextPatch {
    #[serde(default)]
    pub approval_policy: Option<ApprovalPolicy>,
    #[serde(default)]
    pub sandbox: Option<SandboxSettings>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub reasoning_effort: Option<String>,
    #[serde(default)]
    pub reasoning_summary: Option<String>,
    #[serde(default)]
    pub personality: Option<String>,
    #[serde(default)]
    pub max_iterations: Option<u32>,
}

impl ContextPatch {
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// A client-implemented tool, as declared at session start.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DynamicToolDecl {
    #[serde(default)]
    pub namespace: String,
    pub name: String,
    pub description: String,
    /// JSON Schema text.
    pub input_schema: String,
}

impl DynamicToolDecl {
    /// The function name the model sees.
    pub fn model_name(&self) -> String {
        if self.namespace.is_empty() {
            self.name.clone()
        } else {
            format!("{}__{}", self.namespace, self.name)
        }
    }
}

/// What a pending request waits for.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RequestKind {
    ExecApproval,
    PatchApproval,
    UserInput,
    DynamicTool,
    /// An MCP server's question in the middle of a tool call.
    Elicitation,
}

impl RequestKind {
    /// What the request is, for messages: "a command approval", ….
    pub fn describe(self) -> &'static str {
        match self {
            RequestKind::ExecApproval => "a command approval",
            RequestKind::PatchApproval => "a patch approval",
            RequestKind::UserInput => "a question to the user",
            RequestKind::DynamicTool => "a dynamic tool call",
            RequestKind::Elicitation => "an MCP server's question",
        }
    }
}

/// A request waiting for a person or a client.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PendingRequest {
    pub request_id: String,
    pub turn_id: String,
    pub kind: RequestKind,
    /// When it was asked (workflow time, Unix milliseconds; 0 for requests
    /// from before it was recorded).
    #[serde(default)]
    pub asked_ms: u64,
}

/// The answer to a pending request (update `respond`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Response {
    pub request_id: String,
    pub answer: Answer,
    /// The principal who answered; empty in answers sent before session-api
    /// authenticated its callers.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub answered_by: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// For approvals.
    Review(ReviewDecision),
    /// For `request_user_input`: answers per question id.
    UserInput(BTreeMap<String, Vec<String>>),
    /// For a dynamic tool: the output item, already stored.
    DynamicTool {
        output_digest: String,
        success: bool,
    },
    /// For an MCP server's question: `accept` (with the content, a JSON
    /// object), `decline` or `cancel`.
    Elicitation {
        action: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        content_json: String,
    },
}

impl Answer {
    /// Whether this answer fits a request of `kind`.
    pub fn fits(&self, kind: RequestKind) -> bool {
        matches!(
            (self, kind),
            (
                Answer::Review(_),
                RequestKind::ExecApproval | RequestKind::PatchApproval
            ) | (Answer::UserInput(_), RequestKind::UserInput)
                | (Answer::DynamicTool { .. }, RequestKind::DynamicTool)
                | (Answer::Elicitation { .. }, RequestKind::Elicitation)
        )
    }
}

/// A conversation item to append before the next model call: stored already,
/// or a small inline item the workflow synthesised (e.g. an "aborted by user"
/// tool output).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum AppendItem {
    Digest(String),
    Inline(String),
}

/// A tool offered to the model: its Responses API JSON.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ToolSpec {
    pub name: String,
    pub json: String,
}

/// What a session learns once, at its first model call, from the
/// tool-runner: the tools to offer and the project context (AGENTS.md,
/// environment, git) to send with every call without storing it in the
/// conversation. Fixed for the session's life, so the prompt prefix is stable.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SessionSetup {
    pub tools: Vec<ToolSpec>,
    /// Responses API items (JSON) sent before the conversation on every call.
    pub context_items: Vec<String>,
    /// The canonical working directory.
    pub cwd: String,
    /// The tool-runner's user shell, which `shell_command` and
    /// `exec_command` scripts run with; empty in setups recorded before it
    /// was reported.
    #[serde(default)]
    pub user_shell: String,
    /// The session's MCP tools (their specs are in `tools`), listed once
    /// so the list stays the same across rollovers and replays.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mcp_tools: Vec<McpToolEntry>,
    /// The MCP servers as the session's first turn found them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mcp_servers: Vec<McpServerSeen>,
    /// The model's context window in tokens, from the model-proxy's
    /// catalog; 0: unknown (or a setup from before it was read).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub context_window: u64,
    /// Tokens at which the session compacts; 0: 90 % of the window.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub auto_compact_token_limit: u64,
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

/// One MCP server of a session, as its first turn found it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct McpServerSeen {
    pub name: String,
    /// `stdio` or `streamable_http`.
    pub transport: String,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub shared: bool,
    /// Started and listed; otherwise `error` says why not.
    pub running: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
    #[serde(default)]
    pub tool_count: u32,
}

/// One MCP tool of a session: the name the model calls, the raw names the
/// broker calls, and what decides approvals and repeats.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct McpToolEntry {
    /// `mcp__<server>__<tool>`.
    pub name: String,
    pub server: String,
    pub tool: String,
    /// The server gave annotations at all (Codex asks nothing of a tool
    /// without them in `auto` mode).
    #[serde(default)]
    pub annotated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destructive: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotent: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_world: Option<bool>,
    /// `auto`, `prompt` or `approve` (the operator's setting).
    #[serde(default)]
    pub approval_mode: String,
}

impl McpToolEntry {
    /// A call cut short may run again: the server says the tool changes
    /// nothing, or that running it twice is the same as once.
    pub fn may_repeat(&self) -> bool {
        self.read_only == Some(true) || self.idempotent == Some(true)
    }

    /// Codex's `requires_mcp_tool_approval`
    /// (`codex-rs/core/src/mcp_tool_call.rs`): destructive tools ask,
    /// read-only ones do not, and otherwise a tool asks unless it says it is
    /// neither destructive nor open-world.
    pub fn requires_approval(&self) -> bool {
        if self.destructive == Some(true) {
            return true;
        }
        if self.read_only == Some(true) {
            return false;
        }
        self.destructive.unwrap_or(true) || self.open_world.unwrap_or(true)
    }
}

/// What a session carries into its next run. Everything here is bounded: the
/// conversation is one digest and the event window has a byte budget, so
/// continue-as-new costs the same at turn 10 and at turn 10 000.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Carried {
    pub head: Option<String>,
    pub pending: Vec<AppendItem>,
    /// Turns queued behind the boundary, in order.
    pub inbox: Vec<UserTurn>,
    pub recent_turn_ids: Vec<String>,
    /// Offset of `events[0]`.
    pub events_first: u64,
    /// Base64 of encoded `keel.v1.Event`s.
    pub events: Vec<String>,
    pub turns_completed: u64,
    pub usage: Usage,
    pub last_activity_ms: u64,
    /// How many runs came before this one.
    pub runs: u32,
    #[serde(default)]
    pub shutdown_requested: bool,
    #[serde(default)]
    pub setup: Option<SessionSetup>,
    /// The persistent settings (session defaults plus overrides).
    #[serde(default)]
    pub settings: Option<TurnSettings>,
    /// Keys approved "for the session".
    #[serde(default)]
    pub approved_for_session: BTreeSet<ApprovalKey>,
    /// Command prefixes allowed by exec-policy amendments.
    #[serde(default)]
    pub allowed_prefixes: Vec<Vec<String>>,
    /// Recently ended requests and why (bounded), so a late answer after a
    /// rollover still gets a precise rejection.
    #[serde(default)]
    pub ended_requests: Vec<(String, String)>,
    /// A Compact request not yet served.
    #[serde(default)]
    pub compact_requested: bool,
    /// The digest of the call prefix the model-proxy holds for this session
    /// (see the worker's `ModelCallInput::prefix_digest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_prefix: Option<String>,
    /// What the model-proxy fills in for empty settings, read at the
    /// session's start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_defaults: Option<ModelDefaults>,
    /// The tool-runner the session's workspace is leased to (its runner
    /// id); `None` before the first lease, and for sessions from before
    /// leases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<String>,
    /// Where the leasing runner put the session's clone (sessions with a
    /// `git` source).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    /// The registry fields (see [`Registry`]).
    #[serde(default)]
    pub registry: Registry,
    /// The event archive so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<EventArchive>,
    /// The newest ended turns' conversation heads (at most
    /// [`FORKABLE_TURNS`]), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub turn_heads: Vec<TurnHead>,
    /// The sub-agents the session started, in the order it started them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agents: Vec<AgentEntry>,
    /// A sub-agent's count of the updates it sent ([`AgentUpdate::seq`]).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub agent_seq: u64,
}

/// An agent's status as Codex reports it (`AgentStatus`,
/// `codex-rs/protocol/src/protocol.rs`): snake_case, externally tagged, so
/// `"running"` or `{"completed":"the final message"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentStatus {
    PendingInit,
    Running,
    Interrupted,
    Shutdown,
    NotFound,
    Completed(Option<String>),
    Errored(String),
}

impl AgentStatus {
    /// Final: anything but `pending_init` and `running` (Codex:
    /// `codex-rs/core/src/agent/status.rs`, `is_final`).
    pub fn is_final(&self) -> bool {
        !matches!(self, Self::PendingInit | Self::Running)
    }
}

impl From<&AgentStatus> for keel_proto::v1::AgentStatus {
    fn from(status: &AgentStatus) -> Self {
        use keel_proto::v1::AgentStatusKind as K;
        let (kind, message) = match status {
            AgentStatus::PendingInit => (K::PendingInit, String::new()),
            AgentStatus::Running => (K::Running, String::new()),
            AgentStatus::Interrupted => (K::Interrupted, String::new()),
            AgentStatus::Shutdown => (K::Shutdown, String::new()),
            AgentStatus::NotFound => (K::NotFound, String::new()),
            AgentStatus::Completed(message) => (K::Completed, message.clone().unwrap_or_default()),
            AgentStatus::Errored(message) => (K::Errored, message.clone()),
        };
        Self {
            kind: kind as i32,
            message,
        }
    }
}

/// The longest final message an agent's status keeps (a longer one is cut
/// at a character boundary).
pub const AGENT_MESSAGE_LIMIT: usize = 16 * 1024;

/// What the session's workflow knows of one of its sub-agents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentEntry {
    pub agent_id: String,
    /// The agent that started it (the session id for the session's own).
    pub parent_agent_id: String,
    pub depth: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub role: String,
    pub status: AgentStatus,
    /// The newest [`AgentUpdate::seq`] applied; older updates are ignored.
    #[serde(default)]
    pub last_seq: u64,
    /// Tokens the agent used, as of its newest update.
    #[serde(default)]
    pub usage: Usage,
    /// Turns it ended.
    #[serde(default)]
    pub turns: u64,
    /// Turns it was given: its task, then each `send_input`.
    #[serde(default)]
    pub inputs: u32,
    /// Its event log's newest offset, as of its newest update.
    #[serde(default)]
    pub last_offset: u64,
    /// Closed by `close_agent` (it shuts down; it takes no more input).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub closed: bool,
}

/// A sub-agent's report to its session's workflow (signal `agent_update`):
/// sent when its status changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentUpdate {
    pub agent_id: String,
    /// Increases with every update the agent sends (carried across its
    /// rollovers), so a late or repeated update changes nothing.
    pub seq: u64,
    pub status: AgentStatus,
    #[serde(default)]
    pub usage: Usage,
    #[serde(default)]
    pub turns: u64,
    /// The newest offset of the agent's event log when it sent this.
    #[serde(default)]
    pub last_offset: u64,
}

/// The workflow id of sub-agent `agent_id` of the session with key
/// `session_key`: outside the session prefixes, so listings of sessions
/// never show sub-agents. The key ends at '/', which neither a tenant nor a
/// session id contains, so `agent_workflow_id(key, "")` is a prefix of the
/// session's agents only (not of another tenant's, whose key starts the
/// same).
pub fn agent_workflow_id(session_key: &str, agent_id: &str) -> String {
    format!("keel-agent.{session_key}/{agent_id}")
}

/// How many ended turns a session remembers the conversation head of, for
/// forks.
pub const FORKABLE_TURNS: usize = 64;

/// The conversation as a turn left it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TurnHead {
    pub turn_id: String,
    /// The conversation's head after the turn's last model call (`None`:
    /// empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<String>,
    /// Items the next model call sends before anything new (the outputs of
    /// tool calls the turn ended after, unsent steered messages).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<AppendItem>,
    /// The offset of the turn's last event.
    pub last_offset: u64,
}

/// Where a fork starts: the parent's creation input (without carried
/// state), its settings now, and the turn's conversation.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ForkPoint {
    pub input: SessionInput,
    pub settings: TurnSettings,
    pub turn: TurnHead,
    #[serde(default)]
    pub name: String,
}

/// The session a fork came from.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ForkOrigin {
    /// The parent's key.
    pub session_id: String,
    pub turn_id: String,
    /// The parent's offset of that turn's last event.
    pub last_offset: u64,
}

/// What people find a session by (ListSessions): kept in the workflow's
/// state and mirrored into its memo.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Registry {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default)]
    pub archived: bool,
    /// [`message_preview`] of the newest user or assistant message.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_message: String,
}

/// Why a session workflow ended.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SessionOutcome {
    pub turns_completed: u64,
    pub total_usage: Usage,
}

/// A user turn, delivered by signal. The message itself is in the blob store.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct UserTurn {
    pub turn_id: String,
    /// Digest of the stored Responses API `message` item (empty with
    /// `inline_item`).
    pub item_digest: String,
    /// The message item itself, as JSON: a sub-agent's first task, which
    /// its parent's workflow cannot store.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub inline_item: String,
    /// The message text for the event log, cut to [`INLINE_TEXT_LIMIT`].
    pub text_preview: String,
    #[serde(default)]
    pub text_truncated: bool,
    /// Settings for this turn only.
    #[serde(default)]
    pub context: Option<ContextPatch>,
    /// The JSON Schema the turn's final answer must follow, by digest in
    /// the blob store; empty: free text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub output_schema_digest: String,
    /// The trace the turn belongs to, as W3C `traceparent` (and
    /// `tracestate`, `baggage`): set by the workflow from the signal that
    /// queued it; empty while tracing is off.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub trace: BTreeMap<String, String>,
}

/// A message that joins the running turn (update `steer`): the model sees it
/// at its next call, after the outputs of the calls before it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Steer {
    /// The turn the client means; a steer for a turn that is not running is
    /// rejected.
    pub expected_turn_id: String,
    /// Digest of the stored Responses API `message` item.
    pub item_digest: String,
    /// The message text for the event log, cut to [`INLINE_TEXT_LIMIT`].
    pub text_preview: String,
    #[serde(default)]
    pub text_truncated: bool,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: u64,
    pub cached_input_tokens: u64,
    pub output_tokens: u64,
    pub reasoning_output_tokens: u64,
    pub total_tokens: u64,
}

/// The one conversion each way between history's usage and the wire's.
impl From<&Usage> for keel_proto::v1::TokenUsage {
    fn from(u: &Usage) -> Self {
        Self {
            input_tokens: u.input_tokens,
            cached_input_tokens: u.cached_input_tokens,
            output_tokens: u.output_tokens,
            reasoning_output_tokens: u.reasoning_output_tokens,
            total_tokens: u.total_tokens,
        }
    }
}

impl From<keel_proto::v1::TokenUsage> for Usage {
    fn from(u: keel_proto::v1::TokenUsage) -> Self {
        Self {
            input_tokens: u.input_tokens,
            cached_input_tokens: u.cached_input_tokens,
            output_tokens: u.output_tokens,
            reasoning_output_tokens: u.reasoning_output_tokens,
            total_tokens: u.total_tokens,
        }
    }
}

impl Usage {
    pub fn add(&mut self, o: &Usage) {
        self.input_tokens += o.input_tokens;
        self.cached_input_tokens += o.cached_input_tokens;
        self.output_tokens += o.output_tokens;
        self.reasoning_output_tokens += o.reasoning_output_tokens;
        self.total_tokens += o.total_tokens;
    }
}

/// Query input: events after `after`, at most `max` of them.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct EventsQuery {
    pub after: u64,
    pub max: u32,
}

/// Query output: a page of the event log.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct EventsPage {
    /// Oldest offset still retained (offsets before it are gone).
    pub first_retained: u64,
    /// Newest offset recorded so far (0 when there are none).
    pub last_offset: u64,
    /// Base64 of encoded `keel.v1.Event` messages, in offset order.
    pub events: Vec<String>,
    /// The session is closed: no event after `last_offset` will come.
    pub closed: bool,
    /// Where the events before `first_retained` are (`None`: nowhere, or a
    /// session from before the archive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<EventArchive>,
}

/// A session's event archive (session-api's `archive` module): the newest
/// chunk's digest, and the offset the archive reaches.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct EventArchive {
    pub head: String,
    pub upto: u64,
}

/// Input of the `archive_events` activity.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ArchiveEventsInput {
    pub session_id: String,
    pub after: u64,
    pub upto: u64,
    /// The previous chunk's digest, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    #[default]
    Idle,
    Running,
    Closed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Idle => "idle",
            RunStatus::Running => "running",
            RunStatus::Closed => "closed",
        }
    }
}

/// Query output: the session's state.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SessionState {
    pub session_id: String,
    pub status: RunStatus,
    pub model: String,
    pub cwd: String,
    pub created_at_ms: u64,
    pub last_activity_ms: u64,
    pub last_event_offset: u64,
    pub turns_completed: u64,
    pub queued_turns: u32,
    pub total_usage: Usage,
    /// History rollovers (continue-as-new) so far.
    #[serde(default)]
    pub runs: u32,
    /// The persistent settings.
    #[serde(default)]
    pub settings: TurnSettings,
    /// Requests waiting for an answer, oldest first.
    #[serde(default)]
    pub pending_requests: Vec<PendingRequest>,
    /// The principal who created the session (empty: created before
    /// authentication).
    #[serde(default)]
    pub owner: String,
    /// What the model-proxy fills in for empty settings, as read at the
    /// session's start; `None` before it was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_defaults: Option<ModelDefaults>,
    /// The session's MCP servers and tools (empty before the first turn).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mcp_servers: Vec<McpServerSeen>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mcp_tools: Vec<McpToolEntry>,
    /// The MCP tools' specs (`mcp_tools` order), for their descriptions and
    /// schemas.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mcp_tool_specs: Vec<ToolSpec>,
    /// The configuration the session was created from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config: Vec<ConfigEntry>,
    #[serde(default)]
    pub registry: Registry,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forked_from: Option<ForkOrigin>,
    /// The session's sub-agents, in the order they were started (empty in
    /// a sub-agent's own state).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agents: Vec<AgentEntry>,
}

/// What a model call that leaves its fields empty runs with
/// (`keel.v1.DescribeDefaultsResponse`), as a session read it at its start.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ModelDefaults {
    pub provider: String,
    pub model: String,
    #[serde(default)]
    pub reasoning_effort: String,
    #[serde(default)]
    pub reasoning_summary: String,
    #[serde(default)]
    pub personality: String,
    /// `responses` or `chat` (empty: read before it was reported).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub wire_api: String,
}

impl ModelDefaults {
    /// The provider cannot carry custom (freeform) tools: Chat Completions.
    pub fn no_custom_tools(&self) -> bool {
        self.wire_api == "chat"
    }
}

impl From<keel_proto::v1::DescribeDefaultsResponse> for ModelDefaults {
    fn from(d: keel_proto::v1::DescribeDefaultsResponse) -> Self {
        Self {
            provider: d.provider,
            model: d.model,
            reasoning_effort: d.reasoning_effort,
            reasoning_summary: d.reasoning_summary,
            personality: d.personality,
            wire_api: d.wire_api,
        }
    }
}

impl TurnSettings {
    /// These settings with `defaults` where they leave a field empty: what
    /// model calls really run with.
    pub fn resolved(&self, defaults: Option<&ModelDefaults>) -> TurnSettings {
        let mut out = self.clone();
        if let Some(d) = defaults {
            for (field, default) in [
                (&mut out.model, &d.model),
                (&mut out.reasoning_effort, &d.reasoning_effort),
                (&mut out.reasoning_summary, &d.reasoning_summary),
                (&mut out.personality, &d.personality),
            ] {
                if field.is_empty() {
                    field.clone_from(default);
                }
            }
        }
        out
    }
}

/// A sandbox policy as the wire carries it.
impl From<&SandboxSettings> for keel_proto::v1::SandboxPolicy {
    fn from(s: &SandboxSettings) -> Self {
        use keel_proto::v1 as pb;
        let mode = match s.mode {
            SandboxMode::ReadOnly => pb::SandboxMode::ReadOnly,
            SandboxMode::WorkspaceWrite => pb::SandboxMode::WorkspaceWrite,
            SandboxMode::DangerFullAccess => pb::SandboxMode::DangerFullAccess,
        };
        pb::SandboxPolicy {
            mode: mode as i32,
            writable_roots: s.writable_roots.clone(),
            network_access: s.network_access,
            exclude_tmpdir_env_var: s.exclude_tmpdir_env_var,
            exclude_slash_tmp: s.exclude_slash_tmp,
        }
    }
}

impl From<RequestKind> for keel_proto::v1::PendingRequestKind {
    fn from(kind: RequestKind) -> Self {
        match kind {
            RequestKind::ExecApproval => Self::ExecApproval,
            RequestKind::PatchApproval => Self::PatchApproval,
            RequestKind::UserInput => Self::UserInput,
            RequestKind::DynamicTool => Self::DynamicTool,
            RequestKind::Elicitation => Self::Elicitation,
        }
    }
}

/// The settings as the wire shows them (every field set).
impl From<&TurnSettings> for keel_proto::v1::TurnContext {
    fn from(s: &TurnSettings) -> Self {
        use keel_proto::v1 as pb;
        let policy = match s.approval_policy {
            ApprovalPolicy::Untrusted => pb::ApprovalPolicy::Untrusted,
            ApprovalPolicy::OnFailure => pb::ApprovalPolicy::OnFailure,
            ApprovalPolicy::OnRequest => pb::ApprovalPolicy::OnRequest,
            ApprovalPolicy::Never => pb::ApprovalPolicy::Never,
        };
        pb::TurnContext {
            approval_policy: policy as i32,
            sandbox: Some((&s.sandbox).into()),
            model: Some(s.model.clone()),
            reasoning_effort: Some(s.reasoning_effort.clone()),
            reasoning_summary: Some(s.reasoning_summary.clone()),
            personality: Some(s.personality.clone()),
            max_iterations: Some(s.max_iterations),
        }
    }
}

macro_rules! definition {
    ($(#[$m:meta])* $name:ident, signal $wire:literal, $input:ty) => {
        $(#[$m])*
        pub struct $name;
        impl SignalDefinition for $name {
            type Workflow = SessionWorkflow;
            type Input = $input;
            fn name(&self) -> &str {
                $wire
            }
        }
    };
    ($(#[$m:meta])* $name:ident, update $wire:literal, $input:ty => $output:ty) => {
        $(#[$m])*
        pub struct $name;
        impl UpdateDefinition for $name {
            type Workflow = SessionWorkflow;
            type Input = $input;
            type Output = $output;
            fn name(&self) -> &str {
                $wire
            }
        }
    };
    ($(#[$m:meta])* $name:ident, query $wire:literal, $input:ty => $output:ty) => {
        $(#[$m])*
        pub struct $name;
        impl QueryDefinition for $name {
            type Workflow = SessionWorkflow;
            type Input = $input;
            type Output = $output;
            fn name(&self) -> &str {
                $wire
            }
        }
    };
}

/// The session workflow as seen by clients.
pub struct SessionWorkflow;

impl WorkflowDefinition for SessionWorkflow {
    type Input = SessionInput;
    type Output = SessionOutcome;
    fn name(&self) -> &str {
        WORKFLOW_TYPE
    }
}

impl HasWorkflowDefinition for SessionWorkflow {
    type Run = SessionWorkflow;
}

definition!(
    /// Queue a user turn.
    UserTurnSignal, signal "user_turn", UserTurn);
definition!(
    /// Abort the running turn.
    InterruptSignal, signal "interrupt", ());
definition!(
    /// Compact the conversation once the turns before are done.
    CompactSignal, signal "compact", ());
definition!(
    /// Close the session.
    ShutdownSignal, signal "shutdown", ());
definition!(
    /// Read the event log.
    EventsQueryDef, query "events", EventsQuery => EventsPage);
definition!(
    /// Answer a pending request. Rejected (nothing recorded) when the
    /// request is not pending or the answer does not fit it.
    RespondUpdate, update "respond", Response => ());
definition!(
    /// Change the persistent settings; returns them.
    OverrideContextUpdate, update "override_context", ContextPatch => TurnSettings);
definition!(
    /// Add a message to the running turn; rejected when that turn is not
    /// running.
    SteerUpdate, update "steer", Steer => ());
definition!(
    /// Name the session (empty: no name); rejected once it is closing.
    RenameUpdate, update "rename", String => ());
definition!(
    /// Set or clear the archived flag; rejected once the session is closing.
    ArchiveUpdate, update "archive", bool => ());
definition!(
    /// Read the session's state.
    StateQuery, query "state", () => SessionState);
definition!(
    /// What a fork at a turn (empty: the newest that ended) starts from;
    /// `None` when the session does not remember that turn.
    ForkQuery, query "fork_point", String => Option<ForkPoint>);

#[cfg(test)]
mod tests {
    #[test]
    fn previews_are_one_printable_line() {
        assert_eq!(
            super::message_preview("fix\n\tthe  \u{1b}]52;c;ZXZpbA==\u{7}build"),
            "fix the ]52;c;ZXZpbA==build"
        );
        let long = "word ".repeat(100);
        let preview = super::message_preview(&long);
        assert_eq!(preview.chars().count(), super::LAST_MESSAGE_CHARS);
        assert!(preview.ends_with('…'));
    }

    use super::*;

    #[test]
    fn ids_roundtrip() {
        assert_eq!(session_key_of(&workflow_id("abc")), Some("abc"));
        let key = session_key(Some("acme"), "abc");
        assert_eq!(key, "acme.abc");
        assert_eq!(workflow_id(&key), "keel-session.acme.abc");
        assert_eq!(session_key_of(&workflow_id(&key)), Some("acme.abc"));
        assert_eq!(split_session_key(&key), (Some("acme"), "abc"));
        assert_eq!(split_session_key("abc"), (None, "abc"));
        assert_eq!(session_key(None, "abc"), "abc");
        // Each tenant's prefix matches its own workflow ids only.
        let default = tenant_workflow_id_prefix(None);
        let acme = tenant_workflow_id_prefix(Some("acme"));
        assert!(
            workflow_id("abc").starts_with(&default) && !workflow_id(&key).starts_with(&default)
        );
        assert!(workflow_id(&key).starts_with(&acme));
        assert!(!workflow_id("acme-x.abc").starts_with(&acme));
        assert_eq!(session_key_of("other"), None);
    }

    #[test]
    fn cut_text_respects_char_boundaries() {
        assert_eq!(cut_text("héllo", 2), ("h".to_string(), true));
        assert_eq!(cut_text("hi", 2), ("hi".to_string(), false));
    }
}
