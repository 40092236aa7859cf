//! A Codex user's configuration, resolved for a session as Codex resolves
//! it (Codex: `codex-rs/core/src/config/mod.rs`): `$CODEX_HOME/config.toml`
//! (or `KEEL_CONFIG`), `-c key=value` overrides on top of the file, the
//! active profile (`--profile`, else the file's `profile`) over both, and
//! the command-line flags over everything. Each value keeps where it came
//! from, for `keel config show` and for the session's record.
//!
//! Keys Keel applies to a session are checked here: a wrong type or value is
//! an error naming the key and the file line. Keys other Keel services read
//! (providers for the model-proxy, MCP servers for the mcp-broker) and
//! Codex keys Keel does not support are listed as such; anything else is
//! warned about as unknown, since it is most likely a typo.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use clap::Args;
use keel_proto::v1 as pb;
use toml::Value;

use crate::settings::{self, TurnFlags};

/// Codex's `--oss` and `--local-provider`.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct OssFlags {
    /// Use a local open-source model server, as `codex --oss`: the
    /// `oss_provider` of config.toml (else `ollama`), and its default model
    /// unless --model names one. The provider is the model-proxy's.
    #[arg(long)]
    pub oss: bool,
    /// The local provider for --oss (implies it).
    #[arg(long, value_name = "PROVIDER", value_parser = ["ollama", "lmstudio"])]
    pub local_provider: Option<String>,
}

/// The model `--oss` uses when no `--model` is given (Codex:
/// `codex-rs/ollama/src/lib.rs` and `codex-rs/lmstudio/src/lib.rs`,
/// `DEFAULT_OSS_MODEL`).
fn default_oss_model(provider: &str) -> &'static str {
    match provider {
        "lmstudio" => "openai/gpt-oss-20b",
        _ => "gpt-oss:20b",
    }
}

/// `-c` and `--profile`.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct ConfigFlags {
    /// Override a config.toml key for this command: `-c key=value`, the
    /// value in TOML (a bare word is taken as a string); repeatable.
    #[arg(short = 'c', long = "config", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Use this `[profiles.<name>]` of config.toml.
    #[arg(short = 'p', long, value_name = "NAME")]
    pub profile: Option<String>,
}

/// The type a session key must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    /// A non-negative integer.
    Count,
    Text,
    /// One of these strings.
    OneOf(&'static [&'static str]),
    /// An array of strings.
    TextList,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bool => f.write_str("a boolean"),
            Self::Count => f.write_str("a non-negative integer"),
            Self::Text => f.write_str("a string"),
            Self::OneOf(values) => write!(f, "one of {}", values.join(", ")),
            Self::TextList => f.write_str("an array of strings"),
        }
    }
}

/// The keys Keel applies to a session, with their types. Every one may also
/// be set in a profile.
const SESSION_KEYS: &[(&str, Kind)] = &[
    ("model", Kind::Text),
    ("model_provider", Kind::Text),
    ("oss_provider", Kind::OneOf(&["ollama", "lmstudio"])),
    (
        "model_reasoning_effort",
        Kind::OneOf(&["none", "minimal", "low", "medium", "high", "xhigh"]),
    ),
    (
        "model_reasoning_summary",
        Kind::OneOf(&["auto", "concise", "detailed", "none"]),
    ),
    (
        "personality",
        Kind::OneOf(&["none", "friendly", "pragmatic"]),
    ),
    (
        "approval_policy",
        Kind::OneOf(&["untrusted", "on-failure", "on-request", "never"]),
    ),
    (
        "sandbox_mode",
        Kind::OneOf(&["read-only", "workspace-write", "danger-full-access"]),
    ),
    ("sandbox_workspace_write.writable_roots", Kind::TextList),
    ("sandbox_workspace_write.network_access", Kind::Bool),
    ("sandbox_workspace_write.exclude_tmpdir_env_var", Kind::Bool),
    ("sandbox_workspace_write.exclude_slash_tmp", Kind::Bool),
    ("developer_instructions", Kind::Text),
    ("model_instructions_file", Kind::Text),
    ("project_doc_max_bytes", Kind::Count),
    ("project_doc_fallback_filenames", Kind::TextList),
    ("project_root_markers", Kind::TextList),
    ("web_search", Kind::OneOf(&["disabled", "cached", "live"])),
    // Codex's older spelling: true is `live`, false `disabled`.
    ("tools.web_search", Kind::Bool),
    ("tools.view_image", Kind::Bool),
    ("features.shell_tool", Kind::Bool),
    ("features.unified_exec", Kind::Bool),
    ("features.apply_patch_freeform", Kind::Bool),
    ("features.multi_agent", Kind::Bool),
];

/// Keys (or tables, ending in `.`) read by another Keel service from its
/// own copy of config.toml.
const SERVICE_KEYS: &[(&str, &str)] = &[
    ("model_providers.", "the model-proxy"),
    ("model_verbosity", "the model-proxy"),
    ("service_tier", "the model-proxy"),
    ("openai_base_url", "the model-proxy"),
    ("model_context_window", "the model-proxy"),
    ("model_auto_compact_token_limit", "the model-proxy"),
    ("mcp_servers.", "the mcp-broker"),
    ("projects.", "keel (trusted projects' .codex/rules)"),
    ("profile", "keel (the active profile)"),
    ("profiles.", "keel (profiles)"),
];

/// Codex keys Keel does not support yet: reported, never an error.
const UNSUPPORTED_KEYS: &[&str] = &[
    "review_model",
    "plan_mode_reasoning_effort",
    "model_supports_reasoning_summaries",
    "approvals_reviewer",
    "instructions",
    "experimental_instructions_file",
    "compact_prompt",
    "tool_output_token_limit",
    "background_terminal_max_timeout",
    "allow_login_shell",
    "shell_environment_policy.",
    "features.",
    "notify",
    "hooks.",
    "history.",
    "otel.",
    "chatgpt_base_url",
    "tui.",
    "file_opener",
    "hide_agent_reasoning",
    "show_raw_agent_reasoning",
    "disable_response_storage",
    "model_reasoning_summary_format",
    "windows_wsl_setup_acknowledged",
    "forced_login_method",
    "cli_auth_credentials_store",
    "mcp_oauth_credentials_store",
    "sandbox_workspace_write.",
    "check_for_update_on_startup",
    "notice.",
];

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    #[error("cannot read the config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// `file:line:column: message`.
    #[error("{location}: {message}")]
    Parse { location: String, message: String },
    #[error("{source_}: `{key}` must be {kind}, not {found}")]
    Type {
        key: String,
        source_: String,
        kind: String,
        found: String,
    },
    #[error("-c {0:?}: expected key=value")]
    Override(String),
    #[error("profile {0:?} is not defined in {1} (no [profiles.{0}])")]
    NoProfile(String, String),
    /// `[agents]` or `[crews]`: `file: message`.
    #[error("{0}")]
    Agents(String),
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// The config file, at this line.
    File { path: String, line: usize },
    /// `-c`.
    Override,
    /// The active profile, at this line of the file.
    Profile {
        name: String,
        path: String,
        line: usize,
    },
    /// A command-line flag.
    Flag(&'static str),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File { path, line } => write!(f, "{path}:{line}"),
            Self::Override => f.write_str("-c"),
            Self::Profile { name, path, line } => write!(f, "profile {name} ({path}:{line})"),
            Self::Flag(flag) => write!(f, "--{flag}"),
        }
    }
}

/// One resolved key.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub key: String,
    pub value: Value,
    pub source: Source,
}

/// The configuration a session starts from.
#[derive(Debug, Clone, Default)]
pub(crate) struct Resolved {
    /// The file read; `None`: none (defaults only).
    pub path: Option<PathBuf>,
    pub profile: Option<String>,
    /// The session keys that are set, sorted by key.
    pub entries: Vec<Entry>,
    /// Keys present but not applied to sessions: `(key, why)`.
    pub not_applied: Vec<(String, String)>,
    /// Problems that do not stop a session (unknown keys).
    pub warnings: Vec<String>,
    /// The directories `[projects."<path>"] trust_level = "trusted"`
    /// names: only their `.codex/rules` are read.
    pub trusted_projects: Vec<PathBuf>,
    /// Sub-agent roles, limits and crews (`[agents]`, `[crews]`).
    pub agents: crate::agents_config::AgentsConfig,
}

impl Resolved {
    fn get(&self, key: &str) -> Option<&Value> {
        self.entries.iter().find(|e| e.key == key).map(|e| &e.value)
    }

    pub(crate) fn text(&self, key: &str) -> Option<String> {
        self.get(key).and_then(Value::as_str).map(str::to_string)
    }

    pub(crate) fn flag(&self, key: &str) -> Option<bool> {
        self.get(key).and_then(Value::as_bool)
    }

    pub(crate) fn count(&self, key: &str) -> Option<u64> {
        self.get(key)
            .and_then(Value::as_integer)
            .and_then(|n| u64::try_from(n).ok())
    }

    pub(crate) fn list(&self, key: &str) -> Option<Vec<String>> {
        self.get(key).and_then(Value::as_array).map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
    }

    /// Every session key in `SESSION_KEYS` order, with its value (as TOML)
    /// and source when it is set.
    fn session_rows(&self) -> Vec<(&'static str, Option<(String, String)>)> {
        SESSION_KEYS
            .iter()
            .map(|(key, _)| {
                let set = self
                    .entries
                    .iter()
                    .find(|e| e.key == *key)
                    .map(|e| (toml_text(&e.value), e.source.to_string()));
                (*key, set)
            })
            .collect()
    }

    /// Sets (or replaces) `key` from a command-line flag.
    pub(crate) fn set_flag(&mut self, key: &str, value: Value, flag: &'static str) {
        self.entries.retain(|e| e.key != key);
        self.entries.push(Entry {
            key: key.to_string(),
            value,
            source: Source::Flag(flag),
        });
        self.entries.sort_by(|a, b| a.key.cmp(&b.key));
    }
}

/// The process's environment, for [`keel_server::codex_config`].
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// `$CODEX_HOME`, else `~/.codex`.
pub(crate) fn codex_home() -> Option<PathBuf> {
    keel_server::codex_config::codex_home(&env)
}

/// Reads the configuration: `KEEL_CONFIG` if set (it must exist), else
/// `$CODEX_HOME/config.toml` (missing: defaults).
pub(crate) fn load(flags: &ConfigFlags) -> Result<Resolved, ConfigError> {
    let explicit = env("KEEL_CONFIG")
        .filter(|v| !v.trim().is_empty())
        .map(PathBuf::from);
    let file = keel_server::codex_config::read(explicit.as_deref(), &env).map_err(|e| {
        ConfigError::Read {
            path: e.path,
            source: e.source,
        }
    })?;
    match file {
        Some((path, text)) => resolve(Some(&path), &text, flags),
        None => resolve(None, "", flags),
    }
}

/// Resolves `text` (read from `path`) with the `-c` overrides and profile of
/// `flags`.
pub(crate) fn resolve(
    path: Option<&Path>,
    text: &str,
    flags: &ConfigFlags,
) -> Result<Resolved, ConfigError> {
    let label = path.map_or_else(|| "config.toml".to_string(), |p| p.display().to_string());
    let mut root: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Parse {
        location: match e.span() {
            Some(span) => format!("{label}:{}", line_of(text, span.start)),
            None => label.clone(),
        },
        message: e.message().trim().to_string(),
    })?;
    let lines = key_lines(text);
    let mut overridden = Vec::new();
    for item in &flags.overrides {
        let (key, raw) = item
            .split_once('=')
            .filter(|(k, _)| !k.trim().is_empty())
            .ok_or_else(|| ConfigError::Override(item.clone()))?;
        let key = key.trim().to_string();
        set_path(&mut root, &key, override_value(raw.trim()));
        overridden.push(key);
    }
    let profile = flags.profile.clone().or_else(|| {
        root.get("profile")
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    let profile_table = match &profile {
        None => None,
        Some(name) => Some(
            root.get("profiles")
                .and_then(|p| p.get(name.as_str()))
                .and_then(Value::as_table)
                .cloned()
                .ok_or_else(|| ConfigError::NoProfile(name.clone(), label.clone()))?,
        ),
    };

    let mut out = Resolved {
        path: path.map(Path::to_path_buf),
        profile: profile.clone(),
        trusted_projects: trusted_projects(&root),
        ..Default::default()
    };
    out.agents = crate::agents_config::parse(&root, path)
        .map_err(|e| ConfigError::Agents(format!("{label}: {e}")))?;
    out.not_applied.extend(out.agents.not_applied.clone());
    let mut flat = BTreeMap::new();
    flatten("", &root, &mut flat);
    for (key, value) in &flat {
        // Read above, as tables.
        if key.starts_with("agents.") || key.starts_with("crews.") || key == "agent_max_turns" {
            continue;
        }
        let source = if overridden
            .iter()
            .any(|o| key == o || key.starts_with(&format!("{o}.")))
        {
            Source::Override
        } else {
            Source::File {
                path: label.clone(),
                line: lines.get(key).copied().unwrap_or(0),
            }
        };
        classify(key, value, source, &mut out)?;
    }
    if let (Some(name), Some(table)) = (&profile, &profile_table) {
        let mut flat = BTreeMap::new();
        flatten("", table, &mut flat);
        for (key, value) in &flat {
            let line = lines
                .get(&format!("profiles.{name}.{key}"))
                .copied()
                .unwrap_or(0);
            let source = Source::Profile {
                name: name.clone(),
                path: label.clone(),
                line,
            };
            if SESSION_KEYS.iter().any(|(k, _)| k == key) {
                classify(key, value, source, &mut out)?;
            }
        }
    }
    out.entries.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

/// `[projects."<path>"]` tables with `trust_level = "trusted"`.
fn trusted_projects(root: &toml::Table) -> Vec<PathBuf> {
    root.get("projects")
        .and_then(Value::as_table)
        .map(|projects| {
            projects
                .iter()
                .filter(|(_, t)| t.get("trust_level").and_then(Value::as_str) == Some("trusted"))
                .map(|(path, _)| PathBuf::from(path))
                .collect()
        })
        .unwrap_or_default()
}

/// Files a key under the session keys (checked), the other services' or
/// Codex's unsupported keys, or the unknown ones.
fn classify(
    key: &str,
    value: &Value,
    source: Source,
    out: &mut Resolved,
) -> Result<(), ConfigError> {
    if let Some((_, kind)) = SESSION_KEYS.iter().find(|(k, _)| *k == key) {
        check(key, value, *kind, &source)?;
        out.entries.retain(|e| e.key != key);
        out.entries.push(Entry {
            key: key.to_string(),
            value: value.clone(),
            source,
        });
        return Ok(());
    }
    let matches = |pattern: &str| {
        pattern.strip_suffix('.').map_or(key == pattern, |table| {
            key.starts_with(&format!("{table}."))
        })
    };
    if let Some((_, who)) = SERVICE_KEYS.iter().find(|(k, _)| matches(k)) {
        out.not_applied
            .push((key.to_string(), format!("read by {who}")));
    } else if UNSUPPORTED_KEYS.iter().any(|k| matches(k)) {
        out.not_applied.push((
            key.to_string(),
            "not supported by Keel yet (ignored)".into(),
        ));
    } else {
        out.warnings
            .push(format!("{source}: unknown key `{key}` (ignored)"));
    }
    Ok(())
}

fn check(key: &str, value: &Value, kind: Kind, source: &Source) -> Result<(), ConfigError> {
    let ok = match kind {
        Kind::Bool => value.is_bool(),
        Kind::Count => value.as_integer().is_some_and(|n| n >= 0),
        Kind::Text => value.is_str(),
        Kind::OneOf(values) => value.as_str().is_some_and(|s| values.contains(&s)),
        Kind::TextList => value
            .as_array()
            .is_some_and(|a| a.iter().all(Value::is_str)),
    };
    if ok {
        return Ok(());
    }
    Err(ConfigError::Type {
        key: key.to_string(),
        source_: source.to_string(),
        kind: kind.to_string(),
        found: toml_text(value),
    })
}

/// A value as TOML text (strings in basic-string quoting, which JSON's
/// escapes are a subset of).
pub(crate) fn toml_text(value: &Value) -> String {
    match value {
        Value::String(s) => serde_json::Value::String(s.clone()).to_string(),
        Value::Integer(n) => n.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Boolean(b) => b.to_string(),
        Value::Datetime(d) => d.to_string(),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(toml_text).collect::<Vec<_>>().join(", ")
        ),
        Value::Table(t) => format!(
            "{{ {} }}",
            t.iter()
                .map(|(k, v)| format!("{k} = {}", toml_text(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Tables are walked into dotted keys; arrays and scalars are leaves.
fn flatten(prefix: &str, table: &toml::Table, out: &mut BTreeMap<String, Value>) {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            Value::Table(t) if !t.is_empty() => flatten(&path, t, out),
            other => {
                out.insert(path, other.clone());
            }
        }
    }
}

/// The line of each dotted key in `text` (the line its key is written on).
fn key_lines(text: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    if let Ok(table) = toml::de::DeTable::parse(text) {
        walk_spans(text, "", table.get_ref(), &mut out);
    }
    out
}

fn walk_spans(
    text: &str,
    prefix: &str,
    table: &toml::de::DeTable<'_>,
    out: &mut BTreeMap<String, usize>,
) {
    for (key, value) in table {
        let path = if prefix.is_empty() {
            key.get_ref().to_string()
        } else {
            format!("{prefix}.{}", key.get_ref())
        };
        out.insert(path.clone(), line_of(text, key.span().start));
        if let toml::de::DeValue::Table(t) = value.get_ref() {
            walk_spans(text, &path, t, out);
        }
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset).unwrap_or(text).matches('\n').count() + 1
}

/// A `-c` value: TOML if it parses as one, else the text as a string (as
/// Codex reads `-c model=o3`).
fn override_value(raw: &str) -> Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| Value::String(raw.to_string()))
}

fn set_path(root: &mut toml::Table, key: &str, value: Value) {
    let mut parts: Vec<&str> = key.split('.').collect();
    let Some(last) = parts.pop() else {
        return;
    };
    let mut table = root;
    for part in parts {
        let entry = table
            .entry(part.to_string())
            .or_insert_with(|| Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = Value::Table(toml::Table::new());
        }
        let Value::Table(next) = entry else {
            return;
        };
        table = next;
    }
    table.insert(last.to_string(), value);
}

/// The command-line flags, over the configuration (`--model` wins over
/// every `model`).
pub(crate) fn apply_flags(resolved: &mut Resolved, flags: &TurnFlags, oss: &OssFlags) {
    let context = flags.to_context().unwrap_or_default();
    let text = |s: &str| Value::String(s.to_string());
    if oss.oss || oss.local_provider.is_some() {
        let provider = oss
            .local_provider
            .clone()
            .or_else(|| resolved.text("oss_provider"))
            .unwrap_or_else(|| "ollama".to_string());
        if flags.model.is_none() {
            resolved.set_flag("model", text(default_oss_model(&provider)), "oss");
        }
        resolved.set_flag("model_provider", text(&provider), "oss");
    }
    if let Some(model) = &flags.model {
        resolved.set_flag("model", text(model), "model");
    }
    if flags.approval_policy.is_some() {
        let name = settings::policy_name(context.approval_policy);
        resolved.set_flag("approval_policy", text(&name), "approval-policy");
    }
    if let Some(sandbox) = &context.sandbox {
        let name = settings::sandbox_name(sandbox.mode);
        resolved.set_flag("sandbox_mode", text(&name), "sandbox");
    }
    for (key, value, flag) in [
        (
            "model_reasoning_effort",
            &context.reasoning_effort,
            "effort",
        ),
        (
            "model_reasoning_summary",
            &context.reasoning_summary,
            "summary",
        ),
        ("personality", &context.personality, "personality"),
    ] {
        if let Some(value) = value {
            resolved.set_flag(key, text(value), flag);
        }
    }
}

/// What a new session is created with.
#[derive(Debug, Clone, Default)]
pub(crate) struct SessionParts {
    pub model_provider: String,
    /// The text of `model_instructions_file`; empty: the proxy's.
    pub base_instructions: String,
    pub context: Option<pb::TurnContext>,
    pub developer_instructions: String,
    pub features: pb::ToolFeatures,
    pub project_doc: Option<pb::ProjectDocOptions>,
    pub rules: Vec<pb::RulesFile>,
    pub config: Vec<pb::ConfigEntry>,
    pub agent_roles: Vec<pb::AgentRole>,
    pub agent_limits: Option<pb::AgentLimits>,
    /// The crews defined (`[crews.<name>]`).
    pub crews: BTreeMap<String, pb::Crew>,
    /// The crew the session starts with (`keel run --crew`).
    pub crew: Option<pb::Crew>,
}

impl SessionParts {
    /// Starts the session with crew `name` (and so with
    /// `features.multi_agent`).
    pub(crate) fn select_crew(&mut self, name: &str) -> anyhow::Result<()> {
        let Some(crew) = self.crews.get(name) else {
            let known: Vec<&str> = self.crews.keys().map(String::as_str).collect();
            anyhow::bail!(
                "no crew {name:?} in config.toml ({})",
                if known.is_empty() {
                    "it defines none: add [crews.NAME] with members".to_string()
                } else {
                    format!("crews: {}", known.join(", "))
                }
            );
        };
        self.crew = Some(crew.clone());
        self.features.multi_agent = Some(true);
        Ok(())
    }
}

/// The session's settings from the resolved configuration (flags already
/// applied), plus `max_iterations`, which is a flag only.
pub(crate) fn session_parts(
    resolved: &Resolved,
    max_iterations: Option<u32>,
    rules: Vec<pb::RulesFile>,
) -> SessionParts {
    let sandbox_mode = resolved.text("sandbox_mode");
    let workspace = |key: &str| resolved.flag(&format!("sandbox_workspace_write.{key}"));
    let roots = resolved.list("sandbox_workspace_write.writable_roots");
    let sandbox = match sandbox_mode.as_deref() {
        None if roots.is_none() && workspace("network_access").is_none() => None,
        mode => Some(pb::SandboxPolicy {
            // Codex's default mode (what session-api assumes too).
            mode: match mode.unwrap_or("workspace-write") {
                "read-only" => pb::SandboxMode::ReadOnly,
                "danger-full-access" => pb::SandboxMode::DangerFullAccess,
                _ => pb::SandboxMode::WorkspaceWrite,
            } as i32,
            writable_roots: roots.unwrap_or_default(),
            network_access: workspace("network_access").unwrap_or(false),
            exclude_tmpdir_env_var: workspace("exclude_tmpdir_env_var").unwrap_or(false),
            exclude_slash_tmp: workspace("exclude_slash_tmp").unwrap_or(false),
        }),
    };
    let context = pb::TurnContext {
        approval_policy: match resolved.text("approval_policy").as_deref() {
            Some("untrusted") => pb::ApprovalPolicy::Untrusted,
            Some("on-failure") => pb::ApprovalPolicy::OnFailure,
            Some("on-request") => pb::ApprovalPolicy::OnRequest,
            Some("never") => pb::ApprovalPolicy::Never,
            _ => pb::ApprovalPolicy::Unspecified,
        } as i32,
        sandbox,
        model: resolved.text("model"),
        reasoning_effort: resolved.text("model_reasoning_effort"),
        reasoning_summary: resolved.text("model_reasoning_summary"),
        personality: resolved.text("personality"),
        max_iterations,
    };
    let web_search = match resolved.text("web_search").as_deref() {
        Some("disabled") => pb::WebSearchMode::Disabled,
        Some("cached") => pb::WebSearchMode::Cached,
        Some("live") => pb::WebSearchMode::Live,
        _ => match resolved.flag("tools.web_search") {
            Some(true) => pb::WebSearchMode::Live,
            Some(false) => pb::WebSearchMode::Disabled,
            None => pb::WebSearchMode::Unspecified,
        },
    };
    let features = pb::ToolFeatures {
        shell_tool: resolved.flag("features.shell_tool"),
        unified_exec: resolved.flag("features.unified_exec"),
        apply_patch_freeform: resolved.flag("features.apply_patch_freeform"),
        view_image: resolved.flag("tools.view_image"),
        web_search: web_search as i32,
        multi_agent: resolved.flag("features.multi_agent"),
    };
    let max_bytes = resolved.count("project_doc_max_bytes");
    let fallback = resolved.list("project_doc_fallback_filenames");
    let markers = resolved.list("project_root_markers");
    let project_doc = (max_bytes.is_some() || fallback.is_some() || markers.is_some()).then(|| {
        pb::ProjectDocOptions {
            max_bytes: max_bytes.unwrap_or(0),
            fallback_filenames: fallback.unwrap_or_default(),
            no_root_walk: markers.as_ref().is_some_and(Vec::is_empty),
            root_markers: markers.unwrap_or_default(),
        }
    });
    SessionParts {
        model_provider: resolved.text("model_provider").unwrap_or_default(),
        base_instructions: String::new(),
        context: (context != pb::TurnContext::default()).then_some(context),
        developer_instructions: resolved.text("developer_instructions").unwrap_or_default(),
        features,
        project_doc,
        rules,
        agent_roles: resolved.agents.roles.clone(),
        agent_limits: resolved.agents.limits,
        crews: resolved.agents.crews.clone(),
        crew: None,
        config: resolved
            .entries
            .iter()
            .map(|e| pb::ConfigEntry {
                key: e.key.clone(),
                value: toml_text(&e.value),
                source: e.source.to_string(),
            })
            .collect(),
    }
}

/// Everything a new session gets from the configuration, the flags and
/// the rules files (the project's under `project`); warnings go to stderr.
pub(crate) fn for_new_session(
    flags: &ConfigFlags,
    settings: &TurnFlags,
    oss: &OssFlags,
    project: Option<&Path>,
) -> anyhow::Result<SessionParts> {
    let mut resolved = load(flags)?;
    for warning in &resolved.warnings {
        crate::render::note(format_args!("keel: warning: {warning}"));
    }
    apply_flags(&mut resolved, settings, oss);
    let rules = load_rules(project, &resolved.trusted_projects)?;
    let mut parts = session_parts(&resolved, settings.max_iterations, rules);
    if let Some(file) = resolved.text("model_instructions_file") {
        // Relative to the config file's directory, as Codex resolves it.
        let base = resolved
            .path
            .as_deref()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .or_else(codex_home)
            .unwrap_or_default();
        let path = base.join(&file);
        parts.base_instructions = std::fs::read_to_string(&path)
            .map_err(|e| anyhow::anyhow!("model_instructions_file {}: {e}", path.display()))?;
    }
    Ok(parts)
}

/// `keel config show`.
pub(crate) fn show(
    flags: &ConfigFlags,
    settings: &TurnFlags,
    oss: &OssFlags,
    json: bool,
) -> std::process::ExitCode {
    let mut resolved = match load(flags) {
        Ok(r) => r,
        Err(e) => {
            crate::render::note(format_args!("keel: {e}"));
            return std::process::ExitCode::FAILURE;
        }
    };
    apply_flags(&mut resolved, settings, oss);
    let text = if json {
        let entries: Vec<_> = resolved
            .session_rows()
            .into_iter()
            .map(|(key, set)| match set {
                Some((value, source)) => {
                    serde_json::json!({"key": key, "value": value, "source": source})
                }
                None => serde_json::json!({"key": key, "value": null, "source": "default"}),
            })
            .collect();
        let not_applied: Vec<_> = resolved
            .not_applied
            .iter()
            .map(|(key, why)| serde_json::json!({"key": key, "why": why}))
            .collect();
        format!(
            "{}\n",
            serde_json::json!({
                "path": resolved.path.as_ref().map(|p| p.display().to_string()),
                "profile": resolved.profile,
                "entries": entries,
                "not_applied": not_applied,
                "warnings": resolved.warnings,
            })
        )
    } else {
        let mut out = format!(
            "config: {}{}\n\n",
            resolved.path.as_ref().map_or_else(
                || "none (defaults)".to_string(),
                |p| p.display().to_string()
            ),
            resolved
                .profile
                .as_ref()
                .map(|p| format!(" (profile {p})"))
                .unwrap_or_default()
        );
        let header = ["KEY".to_string(), "VALUE".into(), "SOURCE".into()];
        let rows: Vec<[String; 3]> = std::iter::once(header)
            .chain(resolved.session_rows().into_iter().map(|(key, set)| {
                let (value, source) = set.unwrap_or_else(|| ("-".into(), "default".into()));
                [key.to_string(), value, source]
            }))
            .collect();
        out.push_str(&crate::render::table(&rows));
        if !resolved.not_applied.is_empty() {
            out.push_str("\nnot applied to sessions:\n");
            for (key, why) in &resolved.not_applied {
                out.push_str(&format!("  {key}: {why}\n"));
            }
        }
        if !resolved.warnings.is_empty() {
            out.push_str("\nwarnings:\n");
            for w in &resolved.warnings {
                out.push_str(&format!("  {w}\n"));
            }
        }
        out
    };
    use std::io::Write;
    match std::io::stdout().write_all(text.as_bytes()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(_) => std::process::ExitCode::FAILURE,
    }
}

/// The rules files a session applies, as Codex loads them: every
/// `$CODEX_HOME/rules/*.rules`, then the project's `<cwd>/.codex/rules/*.rules`
/// when the project is trusted, each directory in name order. Missing
/// directories are fine. A repository's own rules could allow anything
/// (an explicit `allow` runs a command outside the sandbox), so an
/// untrusted project's are left out, with a warning, as Codex reads
/// project configuration only for trusted projects.
pub(crate) fn load_rules(
    project: Option<&Path>,
    trusted: &[PathBuf],
) -> Result<Vec<pb::RulesFile>, ConfigError> {
    let mut dirs: Vec<PathBuf> = codex_home().map(|h| h.join("rules")).into_iter().collect();
    if let Some(cwd) = project {
        let dir = cwd.join(".codex").join("rules");
        let cwd = std::fs::canonicalize(cwd).unwrap_or_else(|_| cwd.to_path_buf());
        let is_trusted = trusted.iter().any(|t| {
            let t = std::fs::canonicalize(t).unwrap_or_else(|_| t.clone());
            cwd.starts_with(t)
        });
        if is_trusted {
            dirs.push(dir);
        } else if dir.is_dir() {
            crate::render::note(format_args!(
                "keel: warning: ignored {}: the project is not trusted (add [projects.\"{}\"] trust_level = \"trusted\" to config.toml)",
                dir.display(),
                cwd.display()
            ));
        }
    }
    let mut out = Vec::new();
    for dir in dirs {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(ConfigError::Read {
                    path: dir.display().to_string(),
                    source,
                });
            }
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "rules") && p.is_file())
            .collect();
        files.sort();
        for path in files {
            let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                path: path.display().to_string(),
                source,
            })?;
            out.push(pb::RulesFile {
                name: path.display().to_string(),
                text,
            });
        }
    }
    Ok(out)
}

/// Appends an approved amendment to `$CODEX_HOME/rules/default.rules`, as
/// Codex persists `approved_execpolicy_amendment`, so later sessions allow
/// the prefix too. Returns the file written.
pub(crate) fn persist_amendment(prefix: &[String]) -> anyhow::Result<PathBuf> {
    use std::io::Write;
    let home = codex_home().ok_or_else(|| anyhow::anyhow!("neither CODEX_HOME nor HOME is set"))?;
    let dir = home.join("rules");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("default.rules");
    let rule = keel_policy::amendment_rule_text(prefix)?;
    // On a line of its own, whatever the file ended with.
    let existing = std::fs::read(&path).unwrap_or_default();
    let separator = if existing.is_empty() || existing.ends_with(b"\n") {
        ""
    } else {
        "\n"
    };
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?
        .write_all(format!("{separator}{rule}\n").as_bytes())?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
model = "gpt-5.2-codex"
approval_policy = "on-request"
profile = "careful"
aproval_policy = "never"
model_provider = "ollama"
notify = ["say"]
model_providers.x.base_url = "http://x"

[sandbox_workspace_write]
network_access = true
writable_roots = ["/tmp/out"]

[features]
unified_exec = false

[profiles.careful]
approval_policy = "untrusted"
model = "gpt-5.1-codex"

[profiles.fast]
model_reasoning_effort = "low"
"#;

    fn flags(overrides: &[&str], profile: Option<&str>) -> ConfigFlags {
        ConfigFlags {
            overrides: overrides.iter().map(|s| s.to_string()).collect(),
            profile: profile.map(str::to_string),
        }
    }

    fn source_of(r: &Resolved, key: &str) -> String {
        r.entries
            .iter()
            .find(|e| e.key == key)
            .map(|e| e.source.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn the_profile_wins_over_the_file_and_each_value_says_where_it_came_from() {
        let r = resolve(Some(Path::new("/h/config.toml")), FILE, &flags(&[], None)).unwrap();
        assert_eq!(r.profile.as_deref(), Some("careful"));
        assert_eq!(r.text("approval_policy").as_deref(), Some("untrusted"));
        assert_eq!(
            source_of(&r, "approval_policy"),
            "profile careful (/h/config.toml:18)"
        );
        assert_eq!(r.text("model").as_deref(), Some("gpt-5.1-codex"));
        assert_eq!(r.flag("sandbox_workspace_write.network_access"), Some(true));
        assert_eq!(
            source_of(&r, "sandbox_workspace_write.network_access"),
            "/h/config.toml:11"
        );
        assert_eq!(
            r.list("sandbox_workspace_write.writable_roots"),
            Some(vec!["/tmp/out".to_string()])
        );
        assert_eq!(r.flag("features.unified_exec"), Some(false));
        assert_eq!(
            r.warnings,
            vec!["/h/config.toml:5: unknown key `aproval_policy` (ignored)".to_string()]
        );
        assert_eq!(r.text("model_provider").as_deref(), Some("ollama"));
        assert!(r.not_applied.contains(&(
            "model_providers.x.base_url".into(),
            "read by the model-proxy".into()
        )));
        assert!(
            r.not_applied
                .iter()
                .any(|(k, why)| k == "notify" && why.contains("not supported"))
        );
    }

    #[test]
    fn overrides_go_on_the_file_and_the_chosen_profile_over_them() {
        let r = resolve(
            Some(Path::new("/h/config.toml")),
            FILE,
            &flags(
                &[
                    "model=o3",
                    "sandbox_mode=read-only",
                    "features.shell_tool=false",
                ],
                Some("fast"),
            ),
        )
        .unwrap();
        assert_eq!(r.text("model").as_deref(), Some("o3"));
        assert_eq!(source_of(&r, "model"), "-c");
        assert_eq!(r.text("sandbox_mode").as_deref(), Some("read-only"));
        assert_eq!(r.flag("features.shell_tool"), Some(false));
        assert_eq!(r.text("model_reasoning_effort").as_deref(), Some("low"));
        assert_eq!(
            source_of(&r, "model_reasoning_effort"),
            "profile fast (/h/config.toml:22)"
        );
        // The file's profile is not the active one here.
        assert_eq!(r.text("approval_policy").as_deref(), Some("on-request"));
        // A profile override reaches the profile.
        let r = resolve(
            Some(Path::new("/h/config.toml")),
            FILE,
            &flags(&["profiles.careful.approval_policy=\"never\""], None),
        )
        .unwrap();
        assert_eq!(r.text("approval_policy").as_deref(), Some("never"));
    }

    #[test]
    fn a_wrong_type_names_the_key_and_line() {
        let text = "model = \"m\"\n\n[sandbox_workspace_write]\nnetwork_access = \"yes\"\n";
        let err = resolve(Some(Path::new("/h/c.toml")), text, &flags(&[], None)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "/h/c.toml:4: `sandbox_workspace_write.network_access` must be a boolean, not \"yes\""
        );
        let err = resolve(None, "", &flags(&["approval_policy=sometimes"], None)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "-c: `approval_policy` must be one of untrusted, on-failure, on-request, never, not \"sometimes\""
        );
        let err = resolve(
            Some(Path::new("/h/c.toml")),
            "model = \n",
            &flags(&[], None),
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("/h/c.toml:1: "), "{err}");
        let err = resolve(None, "", &flags(&[], Some("nope"))).unwrap_err();
        assert!(
            err.to_string().contains("profile \"nope\" is not defined"),
            "{err}"
        );
        let err = resolve(None, "", &flags(&["no-equals"], None)).unwrap_err();
        assert!(matches!(err, ConfigError::Override(_)));
    }
}
