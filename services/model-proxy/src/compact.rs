//! Compaction (Codex `compact`): the model summarises the conversation, and
//! the session continues from a new conversation holding the recent user
//! messages and that summary. The summary is written for the model itself —
//! a hand-off note to the assistant that carries on.

use keel_blobstore::BlobStore;
use serde_json::{Value, json};

use crate::call::Sampled;
use crate::error::ProxyError;

/// What the model is asked to do.
const PROMPT: &str = "You are about to run out of room in this conversation. Write a hand-off note \
for the assistant who will continue this work with no other memory of it. Include: the user's goals \
and constraints, what has been done so far (files changed, commands run and their important \
results), decisions made and why, open problems, and the concrete next steps. Be complete but \
concise; use short bullet points. Do not call tools.";

/// Put before the summary in the new conversation.
pub(crate) const SUMMARY_PREFIX: &str = "Another assistant worked on this session before you; the \
conversation was compacted. Their hand-off note follows; continue from it.";

/// User-message text kept verbatim, newest first, until this budget
/// (about 20 000 tokens, Codex's budget).
const KEPT_USER_TEXT_BYTES: usize = 80_000;

pub(crate) fn prompt_item() -> Value {
    user_message(PROMPT)
}

pub(crate) fn summary_item(summary: &str) -> Value {
    user_message(&format!("{SUMMARY_PREFIX}\n\n{summary}"))
}

fn user_message(text: &str) -> Value {
    json!({
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": text}],
    })
}

fn text_of(item: &Value) -> String {
    item["content"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("text").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The digests of the user messages to keep: the newest ones within the
/// budget, oldest first. Earlier summaries are not kept (the new summary
/// covers them).
pub(crate) fn kept_user_messages(digests: &[String], items: &[Value]) -> Vec<String> {
    let mut budget = KEPT_USER_TEXT_BYTES;
    let mut kept = Vec::new();
    for (digest, item) in digests.iter().zip(items).rev() {
        if item.get("type").and_then(Value::as_str) != Some("message")
            || item.get("role").and_then(Value::as_str) != Some("user")
        {
            continue;
        }
        let text = text_of(item);
        if text.starts_with(SUMMARY_PREFIX) {
            continue;
        }
        if text.len() > budget {
            break;
        }
        budget -= text.len();
        kept.push(digest.clone());
    }
    kept.reverse();
    kept
}

/// The assistant text of the sampled response, read back in full from the
/// blob store (the announced items carry only a display cut).
pub(crate) async fn summary_text(
    blobs: &BlobStore,
    sampled: &Sampled,
) -> Result<String, ProxyError> {
    let mut parts = Vec::new();
    for (digest, _) in &sampled.outputs {
        let item: Value = blobs.get_json(digest).await?;
        if item.get("type").and_then(Value::as_str) == Some("message") {
            parts.push(text_of(&item));
        }
    }
    let summary = parts.join("\n\n");
    if summary.trim().is_empty() {
        return Err(ProxyError::InvalidRequest(
            "the model returned no summary; the conversation was not compacted".into(),
        ));
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_recent_user_messages_only() {
        let items = vec![
            user_message("first"),
            json!({"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "hi"}]}),
            summary_item("old summary"),
            json!({"type": "function_call_output", "call_id": "c", "output": "x"}),
            user_message("second"),
        ];
        let digests: Vec<String> = (0..items.len()).map(|i| format!("d{i}")).collect();
        assert_eq!(kept_user_messages(&digests, &items), ["d0", "d4"]);
    }

    #[test]
    fn the_budget_keeps_the_newest() {
        let big = "x".repeat(KEPT_USER_TEXT_BYTES - 5);
        let items = vec![
            user_message("old one"),
            user_message(&big),
            user_message("new"),
        ];
        let digests: Vec<String> = (0..3).map(|i| format!("d{i}")).collect();
        assert_eq!(kept_user_messages(&digests, &items), ["d1", "d2"]);
    }
}
