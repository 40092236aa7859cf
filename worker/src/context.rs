//! The per-call context Codex sends before the conversation (Codex: `codex-rs/core/src/codex.rs`, of the
//! compatibility notes): one user message with the AGENTS.md block and the
//! environment context. Keel adds the git facts the tool-runner found.

use keel_proto::v1 as pb;
use serde_json::json;

/// The context message as Responses API item JSON; empty when there is
/// nothing to say.
pub fn context_items(context: &pb::GetProjectContextResponse) -> Vec<String> {
    let mut parts = Vec::new();
    if !context.agents_md_message_text.is_empty() {
        parts.push(context.agents_md_message_text.clone());
    }
    if !context.environment_context.is_empty() {
        parts.push(context.environment_context.clone());
    }
    if let Some(git) = context
        .git
        .as_ref()
        .filter(|g| !g.commit.is_empty() || !g.branch.is_empty())
    {
        let mut block = String::from("<git_info>\n");
        for (tag, value) in [
            ("branch", &git.branch),
            ("commit", &git.commit),
            ("remote_url", &git.remote_url),
        ] {
            if !value.is_empty() {
                block.push_str(&format!("  <{tag}>{value}</{tag}>\n"));
            }
        }
        block.push_str("</git_info>");
        parts.push(block);
    }
    if parts.is_empty() {
        return Vec::new();
    }
    let content: Vec<_> = parts
        .into_iter()
        .map(|text| json!({"type": "input_text", "text": text}))
        .collect();
    vec![json!({"type": "message", "role": "user", "content": content}).to_string()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agents_md_environment_and_git_in_one_user_message() {
        let ctx = pb::GetProjectContextResponse {
            agents_md_message_text:
                "# AGENTS.md instructions for /r\n\n<INSTRUCTIONS>\nbe nice\n</INSTRUCTIONS>".into(),
            environment_context: "<environment_context>\n  <cwd>/r</cwd>\n</environment_context>"
                .into(),
            git: Some(pb::GitInfo {
                branch: "main".into(),
                commit: "abc".into(),
                remote_url: String::new(),
            }),
            ..Default::default()
        };
        let items = context_items(&ctx);
        assert_eq!(items.len(), 1);
        let v: serde_json::Value = serde_json::from_str(&items[0]).unwrap();
        assert_eq!(v["role"], "user");
        assert_eq!(
            v["content"][0]["text"].as_str().unwrap().lines().next(),
            Some("# AGENTS.md instructions for /r")
        );
        assert!(
            v["content"][1]["text"]
                .as_str()
                .unwrap()
                .starts_with("<environment_context>")
        );
        assert_eq!(
            v["content"][2]["text"],
            "<git_info>\n  <branch>main</branch>\n  <commit>abc</commit>\n</git_info>"
        );
    }

    #[test]
    fn nothing_to_say_sends_nothing() {
        assert!(context_items(&pb::GetProjectContextResponse::default()).is_empty());
    }
}
