//! What the proxy knows of each model: Codex's bundled catalog (Codex:
//! `codex-rs/core/models.json`, as of commit 21dac7d) and Codex's fallback
//! for a slug it does not list (`codex-rs/models-manager/src/model_info.rs`,
//! `model_info_from_slug`). A slug takes the entry with the longest slug it
//! starts with (`gpt-5.2-codex-2026-01` is `gpt-5.2-codex`), as Codex's
//! models manager matches.
//!
//! The configuration's `model_context_window` and
//! `model_auto_compact_token_limit` replace the catalog's values, as in
//! Codex (`with_config_overrides`).

use keel_proto::v1::ModelInfo;

/// The context window Codex assumes for a model it does not know.
const FALLBACK_CONTEXT_WINDOW: u64 = 272_000;

struct Entry {
    slug: &'static str,
    shell_type: &'static str,
    apply_patch_tool_type: &'static str,
    parallel_tool_calls: bool,
}

/// Codex's catalog. Every entry has a 272,000-token window, takes text and
/// images and names no auto-compaction limit.
const CATALOG: &[Entry] = &[
    entry("gpt-5.2-codex", "shell_command", "freeform", true),
    entry("gpt-5.1-codex-max", "shell_command", "freeform", false),
    entry("gpt-5.1-codex", "shell_command", "freeform", false),
    entry("gpt-5.2", "shell_command", "freeform", true),
    entry("gpt-5.1", "shell_command", "freeform", true),
    entry("gpt-5-codex", "shell_command", "freeform", false),
    entry("gpt-5", "default", "", false),
    entry("gpt-5.1-codex-mini", "shell_command", "freeform", false),
    entry("gpt-5-codex-mini", "shell_command", "freeform", false),
];

const fn entry(
    slug: &'static str,
    shell_type: &'static str,
    apply_patch_tool_type: &'static str,
    parallel_tool_calls: bool,
) -> Entry {
    Entry {
        slug,
        shell_type,
        apply_patch_tool_type,
        parallel_tool_calls,
    }
}

/// The configuration's replacements for every model's values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CatalogOverrides {
    /// `model_context_window`.
    pub context_window: Option<u64>,
    /// `model_auto_compact_token_limit`.
    pub auto_compact_token_limit: Option<u64>,
}

/// What the catalog (or Codex's fallback) says of `slug`.
pub fn describe(slug: &str, overrides: CatalogOverrides) -> ModelInfo {
    let found = CATALOG
        .iter()
        .filter(|e| slug.starts_with(e.slug))
        .max_by_key(|e| e.slug.len());
    let mut info = match found {
        Some(e) => ModelInfo {
            slug: slug.to_string(),
            known: true,
            context_window: FALLBACK_CONTEXT_WINDOW,
            auto_compact_token_limit: 0,
            shell_type: e.shell_type.to_string(),
            apply_patch_tool_type: e.apply_patch_tool_type.to_string(),
            image_input: true,
            supports_parallel_tool_calls: e.parallel_tool_calls,
        },
        None => ModelInfo {
            slug: slug.to_string(),
            known: false,
            context_window: FALLBACK_CONTEXT_WINDOW,
            auto_compact_token_limit: 0,
            shell_type: "default".into(),
            apply_patch_tool_type: String::new(),
            image_input: true,
            supports_parallel_tool_calls: false,
        },
    };
    if let Some(window) = overrides.context_window {
        info.context_window = window;
    }
    if let Some(limit) = overrides.auto_compact_token_limit {
        info.auto_compact_token_limit = limit;
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_catalog_slug_a_model_starts_with_describes_it() {
        let info = describe("gpt-5.1-codex-max-2026", CatalogOverrides::default());
        assert!(info.known);
        assert_eq!(info.shell_type, "shell_command");
        assert!(!info.supports_parallel_tool_calls);
        let info = describe("gpt-5.2-codex", CatalogOverrides::default());
        assert!(info.supports_parallel_tool_calls);
        assert_eq!(info.apply_patch_tool_type, "freeform");
        // gpt-5 has no apply_patch tool of its own.
        let info = describe("gpt-5", CatalogOverrides::default());
        assert_eq!(
            (
                info.shell_type.as_str(),
                info.apply_patch_tool_type.as_str()
            ),
            ("default", "")
        );
    }

    #[test]
    fn an_unknown_slug_gets_codex_fallback_and_the_overrides_apply() {
        let info = describe("smollm2", CatalogOverrides::default());
        assert!(!info.known);
        assert_eq!(info.context_window, 272_000);
        assert_eq!(info.shell_type, "default");
        assert_eq!(info.apply_patch_tool_type, "");
        let info = describe(
            "smollm2",
            CatalogOverrides {
                context_window: Some(8192),
                auto_compact_token_limit: Some(6000),
            },
        );
        assert_eq!(
            (info.context_window, info.auto_compact_token_limit),
            (8192, 6000)
        );
    }
}
