//! Sub-agent roles, limits and crews from config.toml.
//!
//! Codex's `[agents]` table (`AgentsToml`, `codex-rs/config/src/config_toml.rs`):
//! `max_threads` and `max_depth`, and every other key a role,
//! `[agents.<role>]` with `description` and `config_file` (a config layer,
//! relative to the config.toml defining it) — of which Keel applies
//! `model`, `model_reasoning_effort`, `developer_instructions`,
//! `approval_policy` and `sandbox_mode`, and Keel's `disabled_tools` (tool
//! names the role's agents are not offered). Keel also takes those keys written
//! in `[agents.<role>]` itself (they win over the file's); Codex ignores them
//! there. Crews are Keel's own (`[crews.<name>]`, which Codex ignores):
//!
//! ```toml
//! [crews.review]
//! members = [
//!   { role = "explorer", task = "Map what the change touches." },
//!   { role = "worker" },            # no task: gets the run's prompt
//! ]
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use keel_proto::v1 as pb;
use toml::Value;

/// The role keys Keel applies, in a role table or its `config_file`.
const ROLE_KEYS: [&str; 6] = [
    "model",
    "model_reasoning_effort",
    "developer_instructions",
    "approval_policy",
    "sandbox_mode",
    // Keel's: tools the role's agents are not offered.
    "disabled_tools",
];

/// What config.toml says about sub-agents.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct AgentsConfig {
    pub roles: Vec<pb::AgentRole>,
    pub limits: Option<pb::AgentLimits>,
    pub crews: BTreeMap<String, pb::Crew>,
    /// Keys read but not applied: `(key, why)`.
    pub not_applied: Vec<(String, String)>,
}

fn text<'a>(table: &'a toml::Table, key: &str, at: &str) -> Result<Option<&'a str>, String> {
    match table.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(format!(
            "`{at}.{key}` must be a string, not {}",
            other.type_str()
        )),
    }
}

fn count(table: &toml::Table, key: &str, at: &str) -> Result<Option<u32>, String> {
    match table.get(key) {
        None => Ok(None),
        Some(Value::Integer(n)) => u32::try_from(*n)
            .map(Some)
            .map_err(|_| format!("`{at}.{key}` must be a non-negative integer, not {n}")),
        Some(other) => Err(format!(
            "`{at}.{key}` must be a non-negative integer, not {}",
            other.type_str()
        )),
    }
}

fn approval_policy(value: &str, at: &str) -> Result<pb::ApprovalPolicy, String> {
    Ok(match value {
        "untrusted" => pb::ApprovalPolicy::Untrusted,
        "on-failure" => pb::ApprovalPolicy::OnFailure,
        "on-request" => pb::ApprovalPolicy::OnRequest,
        "never" => pb::ApprovalPolicy::Never,
        other => {
            return Err(format!(
                "`{at}.approval_policy` must be one of untrusted, on-failure, on-request, never, not {other:?}"
            ));
        }
    })
}

fn sandbox_mode(value: &str, at: &str) -> Result<pb::SandboxMode, String> {
    Ok(match value {
        "read-only" => pb::SandboxMode::ReadOnly,
        "workspace-write" => pb::SandboxMode::WorkspaceWrite,
        "danger-full-access" => pb::SandboxMode::DangerFullAccess,
        other => {
            return Err(format!(
                "`{at}.sandbox_mode` must be one of read-only, workspace-write, danger-full-access, not {other:?}"
            ));
        }
    })
}

/// Applies the role keys of `table` (found at `at`) to `role`.
fn apply(role: &mut pb::AgentRole, table: &toml::Table, at: &str) -> Result<(), String> {
    if let Some(v) = text(table, "model", at)? {
        role.model = v.to_string();
    }
    if let Some(v) = text(table, "model_reasoning_effort", at)? {
        role.reasoning_effort = v.to_string();
    }
    if let Some(v) = text(table, "developer_instructions", at)? {
        role.developer_instructions = v.to_string();
    }
    if let Some(v) = text(table, "approval_policy", at)? {
        role.approval_policy = approval_policy(v, at)? as i32;
    }
    if let Some(v) = text(table, "sandbox_mode", at)? {
        role.sandbox_mode = sandbox_mode(v, at)? as i32;
    }
    match table.get("disabled_tools") {
        None => {}
        Some(Value::Array(names)) => {
            role.disabled_tools = names
                .iter()
                .map(|n| {
                    n.as_str().map(str::to_string).ok_or_else(|| {
                        format!("`{at}.disabled_tools` must be an array of tool names")
                    })
                })
                .collect::<Result<_, _>>()?;
        }
        Some(_) => {
            return Err(format!(
                "`{at}.disabled_tools` must be an array of tool names"
            ));
        }
    }
    Ok(())
}

/// Reads `[agents]` and `[crews]` of `root`, the config.toml at `path`
/// (`config_file`s are relative to its directory).
pub(crate) fn parse(root: &toml::Table, path: Option<&Path>) -> Result<AgentsConfig, String> {
    let mut out = AgentsConfig::default();
    // Keel's, top level (Codex reads every other key of [agents] as a role).
    let max_turns =
        match root.get("agent_max_turns") {
            None => None,
            Some(Value::Integer(n)) => Some(u32::try_from(*n).map_err(|_| {
                format!("`agent_max_turns` must be a non-negative integer, not {n}")
            })?),
            Some(other) => {
                return Err(format!(
                    "`agent_max_turns` must be a non-negative integer, not {}",
                    other.type_str()
                ));
            }
        };
    if let Some(max_turns) = max_turns {
        out.limits = Some(pb::AgentLimits {
            max_turns,
            ..Default::default()
        });
    }
    if let Some(agents) = root.get("agents") {
        let Some(agents) = agents.as_table() else {
            return Err(format!(
                "`agents` must be a table, not {}",
                agents.type_str()
            ));
        };
        let max_threads = count(agents, "max_threads", "agents")?;
        let max_depth = count(agents, "max_depth", "agents")?;
        if max_threads.is_some() || max_depth.is_some() {
            out.limits = Some(pb::AgentLimits {
                max_threads: max_threads.unwrap_or(0),
                max_depth: max_depth.unwrap_or(0),
                max_turns: max_turns.unwrap_or(0),
            });
        }
        for (name, value) in agents {
            if matches!(name.as_str(), "max_threads" | "max_depth") {
                continue;
            }
            if name == "job_max_runtime_seconds" {
                out.not_applied.push((
                    "agents.job_max_runtime_seconds".into(),
                    "not supported by Keel yet (ignored)".into(),
                ));
                continue;
            }
            let at = format!("agents.{name}");
            let Some(table) = value.as_table() else {
                return Err(format!(
                    "`{at}` must be a table (a role), not {}",
                    value.type_str()
                ));
            };
            let mut role = pb::AgentRole {
                name: name.clone(),
                description: text(table, "description", &at)?
                    .unwrap_or_default()
                    .to_string(),
                ..Default::default()
            };
            if let Some(file) = text(table, "config_file", &at)? {
                let base = path.and_then(Path::parent).unwrap_or(Path::new("."));
                let file = base.join(file);
                let layer = std::fs::read_to_string(&file).map_err(|e| {
                    format!("`{at}.config_file`: cannot read {}: {e}", file.display())
                })?;
                let layer: toml::Table = toml::from_str(&layer).map_err(|e| {
                    format!("`{at}.config_file` {}: {}", file.display(), e.message())
                })?;
                apply(&mut role, &layer, &format!("{}", file.display()))?;
            }
            apply(&mut role, table, &at)?;
            for key in table.keys() {
                let known = ROLE_KEYS.contains(&key.as_str())
                    || matches!(key.as_str(), "description" | "config_file");
                if !known {
                    out.not_applied.push((
                        format!("{at}.{key}"),
                        "not supported by Keel yet (ignored)".into(),
                    ));
                }
            }
            out.roles.push(role);
        }
    }
    if let Some(crews) = root.get("crews") {
        let Some(crews) = crews.as_table() else {
            return Err(format!("`crews` must be a table, not {}", crews.type_str()));
        };
        for (name, value) in crews {
            let at = format!("crews.{name}");
            let members = value
                .as_table()
                .and_then(|t| t.get("members"))
                .and_then(Value::as_array)
                .ok_or_else(|| format!("`{at}` must be a table with a `members` array"))?;
            let mut crew = pb::Crew {
                name: name.clone(),
                members: Vec::new(),
            };
            for (n, member) in members.iter().enumerate() {
                let at = format!("{at}.members[{n}]");
                let Some(member) = member.as_table() else {
                    return Err(format!(
                        "`{at}` must be a table like {{ role = \"worker\", task = \"…\" }}"
                    ));
                };
                let role =
                    text(member, "role", &at)?.ok_or_else(|| format!("`{at}` has no `role`"))?;
                if role != "default" && !out.roles.iter().any(|r| r.name == role) {
                    return Err(format!(
                        "`{at}.role` {role:?} is not a role (define [agents.{role}], or use `default`)"
                    ));
                }
                crew.members.push(pb::CrewMember {
                    role: role.to_string(),
                    task: text(member, "task", &at)?.unwrap_or_default().to_string(),
                });
            }
            out.crews.insert(name.clone(), crew);
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parsed(text: &str, path: Option<&Path>) -> Result<AgentsConfig, String> {
        parse(&toml::from_str(text).unwrap(), path)
    }

    #[test]
    fn roles_limits_and_crews() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("explorer.toml"),
            "model = \"small\"\nmodel_reasoning_effort = \"low\"\nsandbox_mode = \"read-only\"\n",
        )
        .unwrap();
        let config = parsed(
            r#"
agent_max_turns = 4
[agents]
max_threads = 3
[agents.explorer]
description = "Reads code."
config_file = "explorer.toml"
model_reasoning_effort = "medium"
nickname_candidates = ["Ada"]
[agents.worker]
developer_instructions = "Write code."
approval_policy = "untrusted"
[crews.review]
members = [{ role = "explorer", task = "Map it." }, { role = "worker" }]
"#,
            Some(&dir.path().join("config.toml")),
        )
        .unwrap();
        assert_eq!(
            config.limits,
            Some(pb::AgentLimits {
                max_threads: 3,
                max_depth: 0,
                max_turns: 4,
            })
        );
        let explorer = &config.roles[0];
        assert_eq!(explorer.name, "explorer");
        assert_eq!(explorer.model, "small");
        // The role table wins over its file.
        assert_eq!(explorer.reasoning_effort, "medium");
        assert_eq!(explorer.sandbox_mode, pb::SandboxMode::ReadOnly as i32);
        assert_eq!(
            config.roles[1].approval_policy,
            pb::ApprovalPolicy::Untrusted as i32
        );
        assert_eq!(
            config.not_applied,
            [(
                "agents.explorer.nickname_candidates".to_string(),
                "not supported by Keel yet (ignored)".to_string()
            )]
        );
        let review = &config.crews["review"];
        assert_eq!(review.members.len(), 2);
        assert_eq!(review.members[0].task, "Map it.");
        assert_eq!(review.members[1].role, "worker");
    }

    #[test]
    fn mistakes_name_the_key() {
        let err = parsed("[agents.x]\nsandbox_mode = \"wide\"\n", None).unwrap_err();
        assert!(err.contains("`agents.x.sandbox_mode`"), "{err}");
        let err = parsed("[agents]\nmax_threads = -1\n", None).unwrap_err();
        assert!(err.contains("`agents.max_threads`"), "{err}");
        let err = parsed("[crews.c]\nmembers = [{ role = \"ghost\" }]\n", None).unwrap_err();
        assert!(err.contains("\"ghost\" is not a role"), "{err}");
        let err = parsed("[agents.x]\nconfig_file = \"missing.toml\"\n", None).unwrap_err();
        assert!(err.contains("cannot read"), "{err}");
    }
}
