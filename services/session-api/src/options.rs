//! A session's configuration beyond its turn settings — how its tools are
//! chosen, where AGENTS.md files are looked for, its exec-policy rules, and
//! the record of the configuration it was resolved from — checked here so
//! that a bad value is an INVALID_ARGUMENT naming the field.

use keel_policy::Rules;
use keel_proto::v1 as pb;
use keel_workflow_api::{ConfigEntry, ProjectDoc, RulesSource, ToolFeatures, WebSearch};
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
