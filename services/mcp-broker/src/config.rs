//! The broker's MCP servers: Codex's `[mcp_servers.<name>]` tables of
//! config.toml (Codex: `codex-rs/core/src/config/types.rs`,
//! `McpServerConfig`), read once at start. Every other table of the file is
//! the model-proxy's and is ignored here.
//!
//! Keel adds `shared = true`: one connection for every session, for servers
//! that keep no per-session state.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// How long a server may take to start and list its tools (Codex's default).
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one tool call may take (Codex's default).
pub const DEFAULT_TOOL_TIMEOUT: Duration = Duration::from_secs(120);

/// The environment variables a stdio server inherits from the broker when
/// its config names no others (Codex: `codex-rs/rmcp-client/src/utils.rs`,
/// `DEFAULT_ENV_VARS`). Everything else — the broker's own secrets among it —
/// stays out unless `env_vars` names it.
pub const DEFAULT_ENV_VARS: &[&str] = &[
    "HOME", "LOGNAME", "PATH", "SHELL", "USER", "LANG", "LC_ALL", "TERM", "TMPDIR", "TZ",
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{location}: {message}")]
    Parse { location: String, message: String },
    #[error("mcp_servers.{server}: {message}")]
    Invalid { server: String, message: String },
}

/// Every configured server, by name.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub servers: BTreeMap<String, Server>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    pub name: String,
    pub transport: Transport,
    pub enabled: bool,
    /// A session cannot start when this server cannot.
    pub required: bool,
    /// One connection for every session.
    pub shared: bool,
    pub startup_timeout: Duration,
    pub tool_timeout: Duration,
    /// Only these tools, when set.
    pub enabled_tools: Option<Vec<String>>,
    /// Never these tools.
    pub disabled_tools: Vec<String>,
    /// Per tool: `auto` (the default: the tool's annotations decide),
    /// `prompt` (always ask) or `approve` (never ask).
    pub approval_modes: BTreeMap<String, ApprovalMode>,
    pub default_approval_mode: ApprovalMode,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Transport {
    Stdio {
        command: String,
        args: Vec<String>,
        /// The whole environment of the process: the defaults and
        /// `env_vars` taken from the broker's, then `env`.
        env: BTreeMap<String, String>,
        cwd: Option<PathBuf>,
    },
    StreamableHttp {
        url: String,
        /// `Authorization: Bearer <token>`, read from the environment at
        /// start.
        bearer_token: Option<String>,
        headers: BTreeMap<String, String>,
    },
}

impl Transport {
    pub fn name(&self) -> &'static str {
        match self {
            Transport::Stdio { .. } => "stdio",
            Transport::StreamableHttp { .. } => "streamable_http",
        }
    }

    /// Secrets the transport holds (header values, the bearer token,
    /// environment values): replaced in anything the broker shows.
    pub fn secrets(&self) -> Vec<&str> {
        match self {
            Transport::Stdio { env, .. } => env.values().map(String::as_str).collect(),
            Transport::StreamableHttp {
                bearer_token,
                headers,
                ..
            } => bearer_token
                .iter()
                .map(String::as_str)
                .chain(headers.values().map(String::as_str))
                .collect(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalMode {
    #[default]
    Auto,
    Prompt,
    Approve,
}

impl ApprovalMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalMode::Auto => "auto",
            ApprovalMode::Prompt => "prompt",
            ApprovalMode::Approve => "approve",
        }
    }
}

impl Server {
    /// Whether the session is offered `tool` of this server.
    pub fn offers(&self, tool: &str) -> bool {
        let enabled = self
            .enabled_tools
            .as_ref()
            .is_none_or(|only| only.iter().any(|t| t == tool));
        enabled && !self.disabled_tools.iter().any(|t| t == tool)
    }

    pub fn approval_mode(&self, tool: &str) -> ApprovalMode {
        self.approval_modes
            .get(tool)
            .copied()
            .unwrap_or(self.default_approval_mode)
    }
}

#[derive(Debug, Default, Deserialize)]
struct FileToml {
    #[serde(default)]
    mcp_servers: BTreeMap<String, ServerToml>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerToml {
    command: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    env_vars: Vec<String>,
    cwd: Option<PathBuf>,
    url: Option<String>,
    bearer_token_env_var: Option<String>,
    #[serde(default)]
    http_headers: BTreeMap<String, String>,
    #[serde(default)]
    env_http_headers: BTreeMap<String, String>,
    enabled: Option<bool>,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    shared: bool,
    startup_timeout_sec: Option<f64>,
    /// Older Codex spelling, in milliseconds.
    startup_timeout_ms: Option<u64>,
    tool_timeout_sec: Option<f64>,
    enabled_tools: Option<Vec<String>>,
    #[serde(default)]
    disabled_tools: Vec<String>,
    #[serde(default)]
    supports_parallel_tool_calls: bool,
    default_tools_approval_mode: Option<ApprovalMode>,
    #[serde(default)]
    tools: BTreeMap<String, ToolToml>,
    // OAuth is not supported by the broker; accepted so a Codex file
    // loads, and warned about.
    scopes: Option<Vec<String>>,
    oauth_resource: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ToolToml {
    approval_mode: Option<ApprovalMode>,
}

/// Reads `path`, else `$CODEX_HOME/config.toml`, else
/// `~/.codex/config.toml`. A missing default file means no servers; a file
/// named explicitly must exist.
pub fn load(
    path: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    match keel_server::codex_config::read(path, env) {
        Ok(Some((path, text))) => parse(&path, &text, env),
        Ok(None) => Ok(Config::default()),
        Err(e) => Err(ConfigError::Read {
            path: e.path,
            source: e.source,
        }),
    }
}

/// Parses config.toml text; errors name the file, line and column.
pub fn parse(
    path: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let file: FileToml = toml::from_str(text).map_err(|e| {
        let location = match e.span() {
            Some(span) => {
                let before = text.get(..span.start).unwrap_or(text);
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                format!("{}:{line}:{column}", path.display())
            }
            None => path.display().to_string(),
        };
        // Only the message: toml's rendering quotes the line, which could
        // hold a secret.
        ConfigError::Parse {
            location,
            message: e.message().trim().to_string(),
        }
    })?;
    let mut servers = BTreeMap::new();
    for (name, raw) in file.mcp_servers {
        let server = resolve(&name, raw, env)?;
        servers.insert(name, server);
    }
    Ok(Config { servers })
}

fn resolve(
    name: &str,
    raw: ServerToml,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Server, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        server: name.to_string(),
        message,
    };
    if name.is_empty() {
        return Err(invalid("a server needs a name".into()));
    }
    if raw.scopes.is_some() || raw.oauth_resource.is_some() {
        tracing::warn!(
            server = name,
            "OAuth settings (scopes, oauth_resource) are ignored: the broker does not log in to servers"
        );
    }
    if raw.supports_parallel_tool_calls {
        tracing::debug!(
            server = name,
            "supports_parallel_tool_calls: calls run one at a time per session"
        );
    }
    let transport = match (raw.command, raw.url) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "set either `command` (stdio) or `url` (streamable HTTP), not both".into(),
            ));
        }
        (None, None) => {
            return Err(invalid(
                "set `command` (a stdio server) or `url` (a streamable HTTP server)".into(),
            ));
        }
        (Some(command), None) => {
            if command.trim().is_empty() {
                return Err(invalid("`command` is empty".into()));
            }
            let mut vars = BTreeMap::new();
            for var in DEFAULT_ENV_VARS
                .iter()
                .copied()
                .chain(raw.env_vars.iter().map(String::as_str))
            {
                if let Some(value) = env(var) {
                    vars.insert(var.to_string(), value);
                }
            }
            vars.extend(raw.env);
            Transport::Stdio {
                command,
                args: raw.args,
                env: vars,
                cwd: raw.cwd,
            }
        }
        (None, Some(url)) => {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(invalid(format!(
                    "`url` must be http:// or https://, not {url:?}"
                )));
            }
            let bearer_token = match raw.bearer_token_env_var {
                None => None,
                Some(var) => match env(&var).filter(|v| !v.is_empty()) {
                    Some(token) => Some(token),
                    None => {
                        return Err(invalid(format!(
                            "bearer_token_env_var: the environment variable {var} is not set"
                        )));
                    }
                },
            };
            let mut headers = raw.http_headers;
            for (header, var) in raw.env_http_headers {
                // Codex skips headers whose variable is unset.
                if let Some(value) = env(&var).filter(|v| !v.is_empty()) {
                    headers.insert(header, value);
                }
            }
            Transport::StreamableHttp {
                url,
                bearer_token,
                headers,
            }
        }
    };
    let seconds = |field: &str, value: Option<f64>, default: Duration| match value {
        None => Ok(default),
        Some(s) if s.is_finite() && s > 0.0 && s <= 86_400.0 => Ok(Duration::from_secs_f64(s)),
        Some(s) => Err(invalid(format!(
            "`{field}` must be between 0 and 86400 seconds, not {s}"
        ))),
    };
    let startup_default = raw
        .startup_timeout_ms
        .map_or(DEFAULT_STARTUP_TIMEOUT, Duration::from_millis);
    Ok(Server {
        name: name.to_string(),
        transport,
        enabled: raw.enabled.unwrap_or(true),
        required: raw.required,
        shared: raw.shared,
        startup_timeout: seconds(
            "startup_timeout_sec",
            raw.startup_timeout_sec,
            startup_default,
        )?,
        tool_timeout: seconds(
            "tool_timeout_sec",
            raw.tool_timeout_sec,
            DEFAULT_TOOL_TIMEOUT,
        )?,
        enabled_tools: raw.enabled_tools,
        disabled_tools: raw.disabled_tools,
        approval_modes: raw
            .tools
            .into_iter()
            .filter_map(|(tool, t)| t.approval_mode.map(|m| (tool, m)))
            .collect(),
        default_approval_mode: raw.default_tools_approval_mode.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "PATH" => Some("/usr/bin".into()),
            "HOME" => Some("/home/k".into()),
            "DOCS_TOKEN" => Some("s3cret".into()),
            "BROKER_SECRET" => Some("never".into()),
            "TEAM" => Some("core".into()),
            _ => None,
        }
    }

    fn parse_str(text: &str) -> Result<Config, ConfigError> {
        parse(Path::new("config.toml"), text, &env)
    }

    #[test]
    fn stdio_servers_get_only_the_default_and_named_environment() {
        let config = parse_str(
            r#"
            model = "ignored-by-the-broker"
            [mcp_servers.everything]
            command = "node"
            args = ["server.js", "stdio"]
            env_vars = ["TEAM"]
            env = { LEVEL = "debug" }
            tool_timeout_sec = 2.5
            disabled_tools = ["get-env"]
            [mcp_servers.everything.tools.echo]
            approval_mode = "prompt"
            "#,
        )
        .unwrap();
        let s = &config.servers["everything"];
        let Transport::Stdio {
            command, args, env, ..
        } = &s.transport
        else {
            panic!("stdio expected");
        };
        assert_eq!(command, "node");
        assert_eq!(args, &["server.js", "stdio"]);
        assert_eq!(env.get("PATH").map(String::as_str), Some("/usr/bin"));
        assert_eq!(env.get("TEAM").map(String::as_str), Some("core"));
        assert_eq!(env.get("LEVEL").map(String::as_str), Some("debug"));
        assert!(!env.contains_key("BROKER_SECRET"));
        assert_eq!(s.tool_timeout, Duration::from_millis(2500));
        assert_eq!(s.startup_timeout, DEFAULT_STARTUP_TIMEOUT);
        assert!(s.enabled && !s.required && !s.shared);
        assert!(s.offers("echo") && !s.offers("get-env"));
        assert_eq!(s.approval_mode("echo"), ApprovalMode::Prompt);
        assert_eq!(s.approval_mode("get-sum"), ApprovalMode::Auto);
    }

    #[test]
    fn http_servers_read_their_secrets_from_the_environment() {
        let config = parse_str(
            r#"
            [mcp_servers.docs]
            url = "https://mcp.example.com/mcp"
            bearer_token_env_var = "DOCS_TOKEN"
            http_headers = { "X-Team" = "core" }
            env_http_headers = { "X-Missing" = "UNSET_VAR" }
            enabled_tools = ["search"]
            "#,
        )
        .unwrap();
        let s = &config.servers["docs"];
        assert_eq!(
            s.transport,
            Transport::StreamableHttp {
                url: "https://mcp.example.com/mcp".into(),
                bearer_token: Some("s3cret".into()),
                headers: BTreeMap::from([("X-Team".into(), "core".into())]),
            }
        );
        assert!(s.offers("search") && !s.offers("delete"));
        assert_eq!(s.transport.secrets(), vec!["s3cret", "core"]);
    }

    #[test]
    fn mistakes_are_named() {
        let cases = [
            ("[mcp_servers.a]\nargs = []", "mcp_servers.a: set `command`"),
            (
                "[mcp_servers.a]\ncommand = \"x\"\nurl = \"http://h\"",
                "not both",
            ),
            ("[mcp_servers.a]\nurl = \"ftp://h\"", "must be http"),
            (
                "[mcp_servers.a]\nurl = \"http://h\"\nbearer_token_env_var = \"NOPE\"",
                "NOPE is not set",
            ),
            (
                "[mcp_servers.a]\ncommand = \"x\"\ntool_timeout_sec = -1",
                "tool_timeout_sec",
            ),
            (
                "[mcp_servers.a]\ncommand = \"x\"\ncommnd = \"y\"",
                "config.toml:3:1",
            ),
        ];
        for (text, want) in cases {
            let err = parse_str(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn an_explicit_file_must_exist_and_a_default_one_need_not() {
        let missing = Path::new("/nonexistent/keel/config.toml");
        assert!(load(Some(missing), &env).is_err());
        let none = |name: &str| (name == "CODEX_HOME").then(|| "/nonexistent/keel".to_string());
        assert!(load(None, &none).unwrap().servers.is_empty());
    }
}
