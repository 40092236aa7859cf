//! A session's configuration beyond its turn settings — how its tools are
//! chosen, where AGENTS.md files are looked for, its exec-policy rules, and
//! the record of the configuration it was resolved from — checked here so
//! that a bad value is an INVALID_ARGUMENT naming the field.

use keel_policy::Rules;
use keel_proto::v1 as pb;
use keel_workflow_api::{ConfigEntry, ProjectDoc, RulesSource, ToolFeatures, WebSearch, cut_text};
use tonic::Status;

use crate::errors::invalid;

const MAX_RULES_FILES: usize = 32;
const MAX_RULES_BYTES: usize = 64 * 1024;
const MAX_RULES_NAME: usize = 1024;
const MAX_CONFIG_ENTRIES: usize = 256;
const MAX_CONFIG_BYTES: usize = 32 * 1024;
const MAX_DOC_NAMES: usize = 32;
const MAX_DOC_NAME: usize = 255;
/// Codex reads at most this much AGENTS.md text by default; a session may
/// ask for more, up to this.
const MAX_PROJECT_DOC_BYTES: u64 = 1024 * 1024;

/// The session's tool switches.
pub(crate) fn features(features: Option<pb::ToolFeatures>) -> Result<Option<ToolFeatures>, Status> {
    let Some(f) = features else {
        return Ok(None);
    };
    let web_search = match pb::WebSearchMode::try_from(f.web_search) {
        Ok(pb::WebSearchMode::Unspecified) => WebSearch::Default,
        Ok(pb::WebSearchMode::Disabled) => WebSearch::Disabled,
        Ok(pb::WebSearchMode::Cached) => WebSearch::Cached,
        Ok(pb::WebSearchMode::Live) => WebSearch::Live,
        Err(_) => {
            return Err(invalid(format!(
                "features.web_search: unknown WebSearchMode {}",
                f.web_search
            )));
        }
    };
    Ok(Some(ToolFeatures {
        shell_tool: f.shell_tool,
        unified_exec: f.unified_exec,
        apply_patch_freeform: f.apply_patch_freeform,
        view_image: f.view_image,
        web_search,
        multi_agent: f.multi_agent,
    }))
}

/// Where AGENTS.md files are looked for: plain file names only, so the
/// search stays in the directories the tool-runner walks.
pub(crate) fn project_doc(
    doc: Option<pb::ProjectDocOptions>,
) -> Result<Option<ProjectDoc>, Status> {
    let Some(doc) = doc else {
        return Ok(None);
    };
    if doc.max_bytes > MAX_PROJECT_DOC_BYTES {
        return Err(invalid(format!(
            "project_doc.max_bytes is {}; at most {MAX_PROJECT_DOC_BYTES}",
            doc.max_bytes
        )));
    }
    for (field, names) in [
        ("project_doc.fallback_filenames", &doc.fallback_filenames),
        ("project_doc.root_markers", &doc.root_markers),
    ] {
        if names.len() > MAX_DOC_NAMES {
            return Err(invalid(format!("{field}: at most {MAX_DOC_NAMES} names")));
        }
        if let Some(bad) = names.iter().find(|n| !is_file_name(n)) {
            return Err(invalid(format!(
                "{field}: {bad:?} is not a file name (no '/', not '.' or '..', at most {MAX_DOC_NAME} bytes)"
            )));
        }
    }
    Ok(Some(ProjectDoc {
        max_bytes: doc.max_bytes,
        fallback_filenames: doc.fallback_filenames,
        root_markers: doc.root_markers,
        no_root_walk: doc.no_root_walk,
    }))
}

fn is_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_DOC_NAME
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.chars().any(char::is_control)
}

/// The session's rules files, each parsed so that a mistake is reported
/// now (naming the file and line) rather than at the first command.
pub(crate) fn rules(files: Vec<pb::RulesFile>) -> Result<Vec<RulesSource>, Status> {
    if files.len() > MAX_RULES_FILES {
        return Err(invalid(format!("rules: at most {MAX_RULES_FILES} files")));
    }
    let total: usize = files.iter().map(|f| f.text.len()).sum();
    if total > MAX_RULES_BYTES {
        return Err(invalid(format!(
            "rules: {total} bytes in all; at most {MAX_RULES_BYTES}"
        )));
    }
    let mut all = Rules::default();
    for file in &files {
        if file.name.is_empty()
            || file.name.len() > MAX_RULES_NAME
            || file.name.chars().any(char::is_control)
        {
            return Err(invalid(format!(
                "rules: {:?} is not a file name (1 to {MAX_RULES_NAME} bytes, no control characters)",
                file.name
            )));
        }
        all.add_source(&file.name, &file.text)
            .map_err(|e| invalid(format!("rules: {e}")))?;
    }
    Ok(files
        .into_iter()
        .map(|f| RulesSource {
            name: f.name,
            text: f.text,
        })
        .collect())
}

/// The largest final-output schema a turn may carry.
const MAX_OUTPUT_SCHEMA_BYTES: usize = 64 * 1024;

/// A turn's final-output JSON Schema: empty (none), or a JSON object.
pub(crate) fn output_schema(text: &str) -> Result<Option<serde_json::Value>, Status> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    if text.len() > MAX_OUTPUT_SCHEMA_BYTES {
        return Err(invalid(format!(
            "final_output_json_schema is {} bytes; at most {MAX_OUTPUT_SCHEMA_BYTES}",
            text.len()
        )));
    }
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(schema @ serde_json::Value::Object(_)) => Ok(Some(schema)),
        Ok(_) => Err(invalid("final_output_json_schema must be a JSON object")),
        Err(e) => Err(invalid(format!(
            "final_output_json_schema is not valid JSON: {e}"
        ))),
    }
}

/// The most base instructions a session may bring.
const MAX_BASE_INSTRUCTIONS_BYTES: usize = 256 * 1024;

/// A session's own base instructions: at most 256 KiB.
pub(crate) fn base_instructions(text: &str) -> Result<(), Status> {
    if text.len() > MAX_BASE_INSTRUCTIONS_BYTES {
        return Err(invalid(format!(
            "base_instructions is {} bytes; at most {MAX_BASE_INSTRUCTIONS_BYTES}",
            text.len()
        )));
    }
    Ok(())
}

/// A model provider id: what config.toml may name a `[model_providers]`
/// table (letters, digits, `-`, `_`, `.`; at most 64).
pub(crate) fn model_provider(id: String) -> Result<String, Status> {
    let ok = id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        return Err(invalid(format!(
            "model_provider {id:?} is not a provider id (letters, digits, '-', '_', '.'; at most 64)"
        )));
    }
    Ok(id)
}

/// The record of the session's configuration, bounded.
pub(crate) fn config(entries: Vec<pb::ConfigEntry>) -> Result<Vec<ConfigEntry>, Status> {
    if entries.len() > MAX_CONFIG_ENTRIES {
        return Err(invalid(format!(
            "config: at most {MAX_CONFIG_ENTRIES} entries"
        )));
    }
    let total: usize = entries
        .iter()
        .map(|e| e.key.len() + e.value.len() + e.source.len())
        .sum();
    if total > MAX_CONFIG_BYTES {
        return Err(invalid(format!(
            "config: {total} bytes in all; at most {MAX_CONFIG_BYTES}"
        )));
    }
    if let Some(bad) = entries.iter().find(|e| e.key.is_empty()) {
        return Err(invalid(format!("config: an entry has no key ({bad:?})")));
    }
    Ok(entries
        .into_iter()
        .map(|e| ConfigEntry {
            key: e.key,
            value: e.value,
            source: e.source,
        })
        .collect())
}

/// The most roles a session takes, and the longest role description (both
/// travel in the session's workflow input).
const MAX_ROLES: usize = 16;
const MAX_ROLE_DESCRIPTION: usize = 1024;
/// The most sub-agents a session may run at once (as many as it may start
/// in all).
const MAX_THREADS: u32 = 32;
/// The longest crew task (it travels in the workflow input).
const MAX_CREW_TASK: usize = 16 * 1024;

/// A role as CreateSession takes it, its developer instructions not yet
/// stored.
pub(crate) struct RoleInput {
    pub role: keel_workflow_api::AgentRole,
    pub developer_instructions: String,
}

/// Checks `agent_roles`, `agent_limits` and `crew`.
pub(crate) fn agents(
    roles: Vec<pb::AgentRole>,
    limits: Option<pb::AgentLimits>,
    crew: Option<pb::Crew>,
    multi_agent: bool,
    max_instructions: usize,
) -> Result<
    (
        Vec<RoleInput>,
        keel_workflow_api::AgentLimits,
        Option<keel_workflow_api::Crew>,
    ),
    Status,
> {
    use keel_workflow_api::{AgentLimits, AgentRole, Crew, CrewMember};
    if roles.len() > MAX_ROLES {
        return Err(invalid(format!(
            "agent_roles: {} roles; at most {MAX_ROLES}",
            roles.len()
        )));
    }
    let mut checked: Vec<RoleInput> = Vec::new();
    for r in roles {
        let name = &r.name;
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(invalid(format!(
                "agent_roles: role name {:?} must be 1 to 64 letters, digits, '-' or '_'",
                cut_text(name, 64).0
            )));
        }
        if name == "default" {
            return Err(invalid(
                "agent_roles: `default` is built in (the parent's settings); name the role otherwise",
            ));
        }
        if checked.iter().any(|c| &c.role.name == name) {
            return Err(invalid(format!(
                "agent_roles: role {name} is defined twice"
            )));
        }
        if r.description.len() > MAX_ROLE_DESCRIPTION {
            return Err(invalid(format!(
                "agent_roles.{name}.description is {} bytes; at most {MAX_ROLE_DESCRIPTION}",
                r.description.len()
            )));
        }
        if r.developer_instructions.len() > max_instructions {
            return Err(invalid(format!(
                "agent_roles.{name}.developer_instructions is {} bytes; at most {max_instructions}",
                r.developer_instructions.len()
            )));
        }
        crate::settings::check_model(&format!("agent_roles.{name}.model"), &r.model)?;
        crate::settings::one_of(
            &format!("agent_roles.{name}.reasoning_effort"),
            &Some(r.reasoning_effort.clone()),
            crate::settings::EFFORTS,
        )?;
        let approval_policy =
            crate::settings::approval_policy(r.approval_policy).map_err(|_| {
                invalid(format!(
                    "agent_roles.{name}.approval_policy {} is not a known ApprovalPolicy",
                    r.approval_policy
                ))
            })?;
        let sandbox_mode = match pb::SandboxMode::try_from(r.sandbox_mode) {
            Ok(pb::SandboxMode::Unspecified) => None,
            Ok(pb::SandboxMode::ReadOnly) => Some(keel_tool_model::SandboxMode::ReadOnly),
            Ok(pb::SandboxMode::WorkspaceWrite) => {
                Some(keel_tool_model::SandboxMode::WorkspaceWrite)
            }
            Ok(pb::SandboxMode::DangerFullAccess) => {
                Some(keel_tool_model::SandboxMode::DangerFullAccess)
            }
            Err(_) => {
                return Err(invalid(format!(
                    "agent_roles.{name}.sandbox_mode {} is not a known SandboxMode",
                    r.sandbox_mode
                )));
            }
        };
        if r.disabled_tools.len() > 64
            || r.disabled_tools.iter().any(|t| {
                t.is_empty()
                    || t.len() > 128
                    || !t
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            })
        {
            return Err(invalid(format!(
                "agent_roles.{name}.disabled_tools: at most 64 tool names of letters, digits, '-', '_' or '.'"
            )));
        }
        checked.push(RoleInput {
            role: AgentRole {
                name: r.name.clone(),
                description: r.description,
                model: r.model,
                reasoning_effort: r.reasoning_effort,
                developer_instructions_digest: String::new(),
                approval_policy,
                sandbox_mode,
                disabled_tools: r.disabled_tools,
            },
            developer_instructions: r.developer_instructions,
        });
    }
    let limits = limits.unwrap_or_default();
    let limits = AgentLimits {
        max_threads: limits.max_threads,
        max_depth: limits.max_depth,
        max_turns: limits.max_turns,
    };
    if limits.max_threads > MAX_THREADS {
        return Err(invalid(format!(
            "agent_limits.max_threads (agents.max_threads) is {}; at most {MAX_THREADS}",
            limits.max_threads
        )));
    }
    if limits.max_depth > AgentLimits::DEFAULT_MAX_DEPTH {
        return Err(invalid(format!(
            "agent_limits.max_depth (agents.max_depth) is {}; Keel runs sub-agents one level deep (at most {})",
            limits.max_depth,
            AgentLimits::DEFAULT_MAX_DEPTH
        )));
    }
    let crew = match crew {
        None => None,
        Some(crew) => {
            if !multi_agent {
                return Err(invalid(format!(
                    "crew {:?} needs features.multi_agent = true",
                    cut_text(&crew.name, 64).0
                )));
            }
            if crew.members.is_empty() {
                return Err(invalid(format!(
                    "crew {:?} has no members",
                    cut_text(&crew.name, 64).0
                )));
            }
            let max = limits.max_threads();
            if crew.members.len() > max as usize {
                return Err(invalid(format!(
                    "crew {:?} has {} members; agents.max_threads allows {max}",
                    cut_text(&crew.name, 64).0,
                    crew.members.len()
                )));
            }
            let mut members = Vec::new();
            for m in crew.members {
                if m.role != "default"
                    && !m.role.is_empty()
                    && !checked.iter().any(|c| c.role.name == m.role)
                {
                    return Err(invalid(format!(
                        "crew {:?}: unknown role {:?} (roles: default{})",
                        cut_text(&crew.name, 64).0,
                        cut_text(&m.role, 64).0,
                        checked
                            .iter()
                            .map(|c| format!(", {}", c.role.name))
                            .collect::<String>()
                    )));
                }
                if m.task.len() > MAX_CREW_TASK {
                    return Err(invalid(format!(
                        "crew {:?}: a task is {} bytes; at most {MAX_CREW_TASK}",
                        cut_text(&crew.name, 64).0,
                        m.task.len()
                    )));
                }
                members.push(CrewMember {
                    role: if m.role.is_empty() {
                        "default".into()
                    } else {
                        m.role
                    },
                    task: m.task,
                });
            }
            Some(Crew {
                name: cut_text(&crew.name, 64).0,
                members,
            })
        }
    };
    Ok((checked, limits, crew))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rules_file_that_does_not_parse_is_refused_with_its_name_and_line() {
        let err = rules(vec![
            pb::RulesFile {
                name: "/home/u/.codex/rules/default.rules".into(),
                text: "prefix_rule(pattern=[\"ls\"], decision=\"allow\")\n".into(),
            },
            pb::RulesFile {
                name: "/repo/.codex/rules/project.rules".into(),
                text: "\nprefix_rule(pattern=[\"rm\"], decision=\"maybe\")\n".into(),
            },
        ])
        .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(
            err.message()
                .starts_with("rules: /repo/.codex/rules/project.rules:2:"),
            "{}",
            err.message()
        );
    }

    #[test]
    fn project_doc_names_must_be_plain_file_names() {
        for bad in ["../AGENTS.md", "a/b", "..", ""] {
            let err = project_doc(Some(pb::ProjectDocOptions {
                fallback_filenames: vec![bad.into()],
                ..Default::default()
            }))
            .unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{bad:?}");
        }
        let ok = project_doc(Some(pb::ProjectDocOptions {
            max_bytes: 100,
            fallback_filenames: vec!["CLAUDE.md".into()],
            ..Default::default()
        }))
        .unwrap()
        .unwrap();
        assert_eq!(ok.max_bytes, 100);
        assert!(
            project_doc(Some(pb::ProjectDocOptions {
                max_bytes: MAX_PROJECT_DOC_BYTES + 1,
                ..Default::default()
            }))
            .is_err()
        );
    }

    #[test]
    fn an_unknown_web_search_mode_is_refused() {
        let err = features(Some(pb::ToolFeatures {
            web_search: 9,
            ..Default::default()
        }))
        .unwrap_err();
        assert!(
            err.message().contains("features.web_search"),
            "{}",
            err.message()
        );
    }
}
