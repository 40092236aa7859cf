//! Which tools a session offers, chosen as Codex chooses them (Codex:
//! `codex-rs/core/src/tools/spec.rs`, now `codex-rs/tools/src/tool_config.rs`;
//! the web search mode: `codex-rs/core/src/config/mod.rs`): the shell
//! flavour from the features and the model family, apply_patch's form from
//! the model (a JSON function where the provider speaks Chat Completions,
//! which has no custom tools), `view_image` for models that take images
//! (every catalog model, and Codex's fallback for others), and the hosted
//! `web_search` on Responses providers. Pure: the worker calls it
//! with what the session asked for and what the model-proxy's catalog says
//! of the model.

use serde::{Deserialize, Serialize};

/// Codex's tool switches, as a session sent them (`keel.v1.ToolFeatures`).
/// `None`: Codex's default. Part of workflow history: never rename a field.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolFeatures {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell_tool: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unified_exec: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apply_patch_freeform: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub view_image: Option<bool>,
    #[serde(default)]
    pub web_search: WebSearch,
    /// Codex's `features.multi_agent`: the collaboration tools
    /// (`spawn_agent`, `wait_agent`). Off unless set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multi_agent: Option<bool>,
}

/// Codex's `web_search` setting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebSearch {
    /// `cached`, or `live` under `danger-full-access`.
    #[default]
    Default,
    Disabled,
    Cached,
    Live,
}

/// What the model-proxy's catalog says of the session's model
/// (`keel.v1.ModelInfo`), as far as the tools go.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelTools {
    /// `default`, `shell_command`, `local`, `unified_exec`; empty:
    /// `default`.
    #[serde(default)]
    pub shell_type: String,
    /// `freeform`, `function`, or empty for none.
    #[serde(default)]
    pub apply_patch_tool_type: String,
    #[serde(default)]
    pub image_input: bool,
}

/// The shell tool offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shell {
    /// The argv `shell`.
    Shell,
    ShellCommand,
    /// `exec_command` + `write_stdin`.
    UnifiedExec,
    /// The hosted `local_shell`.
    Local,
    None,
}

/// How apply_patch is offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyPatch {
    Freeform,
    Json,
    None,
}

/// The chosen set; the tool-runner serves the specs of everything but the
/// hosted tools, whose specs [`hosted_specs`] gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolSet {
    pub shell: Shell,
    pub apply_patch: ApplyPatch,
    pub view_image: bool,
    /// `Some(external_web_access)`: offer hosted `web_search`.
    pub web_search: Option<bool>,
}

/// Where the session's model calls go, as far as the tools go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Provider {
    /// Chat Completions: no custom (freeform) or hosted tools.
    pub chat_wire: bool,
    /// The session's sandbox is `danger-full-access` (web search defaults
    /// to live there, as in Codex).
    pub full_access: bool,
}

/// Codex's choice for `features` and `model` on `provider`.
pub fn choose(features: &ToolFeatures, model: &ModelTools, provider: Provider) -> ToolSet {
    let shell = if !features.shell_tool.unwrap_or(true) {
        Shell::None
    } else if features.unified_exec.unwrap_or(true) {
        Shell::UnifiedExec
    } else {
        match model.shell_type.as_str() {
            "shell_command" => Shell::ShellCommand,
            "local" if !provider.chat_wire => Shell::Local,
            "unified_exec" => Shell::UnifiedExec,
            _ => Shell::Shell,
        }
    };
    // The model's own type; a model without one gets the freeform tool
    // only with the `apply_patch_freeform` feature (off by default).
    let apply_patch = match model.apply_patch_tool_type.as_str() {
        "freeform" => ApplyPatch::Freeform,
        "function" => ApplyPatch::Json,
        _ if features.apply_patch_freeform.unwrap_or(false) => ApplyPatch::Freeform,
        _ => ApplyPatch::None,
    };
    // Chat Completions cannot carry a custom tool: the same patch tool as a
    // JSON function.
    let apply_patch = match apply_patch {
        ApplyPatch::Freeform if provider.chat_wire => ApplyPatch::Json,
        other => other,
    };
    let web_search = match features.web_search {
        _ if provider.chat_wire => None,
        WebSearch::Disabled => None,
        WebSearch::Cached => Some(false),
        WebSearch::Live => Some(true),
        WebSearch::Default => Some(provider.full_access),
    };
    ToolSet {
        shell,
        apply_patch,
        view_image: model.image_input && features.view_image.unwrap_or(true),
        web_search,
    }
}

/// The hosted tools' specs, `(name, Responses API JSON)`, in Codex's form
/// (`codex-rs/tools/src/tool_spec.rs`).
pub fn hosted_specs(set: &ToolSet) -> Vec<(String, String)> {
    let mut specs = Vec::new();
    if set.shell == Shell::Local {
        specs.push((
            crate::names::LOCAL_SHELL.to_string(),
            r#"{"type":"local_shell"}"#.to_string(),
        ));
    }
    if let Some(live) = set.web_search {
        specs.push((
            WEB_SEARCH.to_string(),
            format!(r#"{{"type":"web_search","external_web_access":{live}}}"#),
        ));
    }
    specs
}

/// The hosted search tool's name. The provider runs it; its calls never
/// reach Keel's tools.
pub const WEB_SEARCH: &str = "web_search";

#[cfg(test)]
mod tests {
    use super::*;

    const RESPONSES: Provider = Provider {
        chat_wire: false,
        full_access: false,
    };
    const CHAT: Provider = Provider {
        chat_wire: true,
        full_access: false,
    };

    fn catalog_model() -> ModelTools {
        ModelTools {
            shell_type: "shell_command".into(),
            apply_patch_tool_type: "freeform".into(),
            image_input: true,
        }
    }

    #[test]
    fn codex_defaults_offer_unified_exec_freeform_patch_view_image_and_cached_search() {
        let set = choose(&ToolFeatures::default(), &catalog_model(), RESPONSES);
        assert_eq!(
            set,
            ToolSet {
                shell: Shell::UnifiedExec,
                apply_patch: ApplyPatch::Freeform,
                view_image: true,
                web_search: Some(false),
            }
        );
        assert_eq!(
            hosted_specs(&set),
            vec![(
                "web_search".to_string(),
                r#"{"type":"web_search","external_web_access":false}"#.to_string()
            )]
        );
    }

    #[test]
    fn without_unified_exec_the_model_family_picks_the_shell() {
        let features = ToolFeatures {
            unified_exec: Some(false),
            ..Default::default()
        };
        assert_eq!(
            choose(&features, &catalog_model(), RESPONSES).shell,
            Shell::ShellCommand
        );
        let unknown = ModelTools::default();
        assert_eq!(choose(&features, &unknown, RESPONSES).shell, Shell::Shell);
        let local = ModelTools {
            shell_type: "local".into(),
            ..Default::default()
        };
        let set = choose(&features, &local, RESPONSES);
        assert_eq!(set.shell, Shell::Local);
        assert_eq!(hosted_specs(&set)[0].1, r#"{"type":"local_shell"}"#);
        // Chat Completions has no hosted tools.
        assert_eq!(choose(&features, &local, CHAT).shell, Shell::Shell);
        let off = ToolFeatures {
            shell_tool: Some(false),
            ..Default::default()
        };
        assert_eq!(choose(&off, &catalog_model(), RESPONSES).shell, Shell::None);
    }

    #[test]
    fn apply_patch_follows_the_model_the_feature_and_the_wire() {
        let none = ModelTools::default();
        assert_eq!(
            choose(&ToolFeatures::default(), &none, RESPONSES).apply_patch,
            ApplyPatch::None
        );
        let forced = ToolFeatures {
            apply_patch_freeform: Some(true),
            ..Default::default()
        };
        assert_eq!(
            choose(&forced, &none, RESPONSES).apply_patch,
            ApplyPatch::Freeform
        );
        assert_eq!(choose(&forced, &none, CHAT).apply_patch, ApplyPatch::Json);
        assert_eq!(
            choose(&ToolFeatures::default(), &catalog_model(), CHAT).apply_patch,
            ApplyPatch::Json
        );
        let function = ModelTools {
            apply_patch_tool_type: "function".into(),
            ..Default::default()
        };
        assert_eq!(
            choose(&ToolFeatures::default(), &function, RESPONSES).apply_patch,
            ApplyPatch::Json
        );
        // The feature only fills in for a model without a type.
        let off = ToolFeatures {
            apply_patch_freeform: Some(false),
            ..Default::default()
        };
        assert_eq!(
            choose(&off, &catalog_model(), RESPONSES).apply_patch,
            ApplyPatch::Freeform
        );
        assert_eq!(
            choose(&forced, &function, RESPONSES).apply_patch,
            ApplyPatch::Json
        );
    }

    #[test]
    fn web_search_and_view_image_follow_their_settings() {
        let model = catalog_model();
        let with = |web_search| ToolFeatures {
            web_search,
            ..Default::default()
        };
        assert_eq!(
            choose(&with(WebSearch::Disabled), &model, RESPONSES).web_search,
            None
        );
        assert_eq!(
            choose(&with(WebSearch::Live), &model, RESPONSES).web_search,
            Some(true)
        );
        assert_eq!(
            choose(&with(WebSearch::Live), &model, CHAT).web_search,
            None
        );
        let full = Provider {
            chat_wire: false,
            full_access: true,
        };
        assert_eq!(
            choose(&with(WebSearch::Default), &model, full).web_search,
            Some(true)
        );
        assert_eq!(
            choose(&with(WebSearch::Cached), &model, full).web_search,
            Some(false)
        );
        let no_images = ModelTools {
            image_input: false,
            ..catalog_model()
        };
        assert!(!choose(&ToolFeatures::default(), &no_images, RESPONSES).view_image);
        let off = ToolFeatures {
            view_image: Some(false),
            ..Default::default()
        };
        assert!(!choose(&off, &model, RESPONSES).view_image);
    }
}
