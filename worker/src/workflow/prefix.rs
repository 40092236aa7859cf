//! The fixed part of every model call — the tools on offer and the
//! ephemeral items (developer instructions, AGENTS.md, environment
//! context) — is the same at every call of a session, and tens of
//! kilobytes. Sent inline, it would be repeated in the workflow history at
//! every model call. Instead the first call sends it with `store_prefix`,
//! the model-proxy stores it in the blob store under its digest, and later
//! calls send only the digest (`keel.v1.StreamResponseRequest.prefix_digest`).

use keel_proto::v1 as pb;
use prost::Message as _;
use sha2::{Digest as _, Sha256};

use crate::activities::ModelCallInput;

/// The digest the model-proxy stores `input`'s prefix under: the SHA-256 of
/// its `keel.v1.CallPrefix` encoding, as the proxy encodes it from the
/// request (the activity copies these fields into the request unchanged).
pub(super) fn digest(input: &ModelCallInput) -> String {
    let prefix = pb::CallPrefix {
        tools: input
            .tools
            .iter()
            .map(|t| pb::ToolSpec {
                name: t.name.clone(),
                json: t.json.clone(),
            })
            .collect(),
        ephemeral_item_digests: input.ephemeral_item_digests.clone(),
        ephemeral_items_json: input.ephemeral_items.clone(),
    };
    hex::encode(Sha256::digest(prefix.encode_to_vec()))
}

/// Sends `input`'s prefix by reference when the proxy holds it (`stored`),
/// else inline with the order to store it.
pub(super) fn by_reference(input: &mut ModelCallInput, stored: Option<&str>) {
    let digest = digest(input);
    if stored == Some(digest.as_str()) {
        input.tools.clear();
        input.ephemeral_item_digests.clear();
        input.ephemeral_items.clear();
    } else {
        input.store_prefix = true;
    }
    input.prefix_digest = digest;
}

#[cfg(test)]
mod tests {
    use keel_workflow_api::ToolSpec;

    use super::*;

    fn input() -> ModelCallInput {
        ModelCallInput {
            session_id: "s".into(),
            turn_id: "t".into(),
            model: "m".into(),
            head: None,
            append: Vec::new(),
            tools: vec![ToolSpec {
                name: "shell".into(),
                json: r#"{"type":"function","name":"shell"}"#.into(),
            }],
            parallel_tool_calls: false,
            ephemeral_items: vec![r#"{"type":"message","role":"user"}"#.into()],
            reasoning_effort: String::new(),
            reasoning_summary: String::new(),
            personality: String::new(),
            compact: false,
            events_before: 0,
            ephemeral_item_digests: vec!["a".repeat(64)],
            prefix_digest: String::new(),
            store_prefix: false,
            provider: String::new(),
            output_schema_digest: String::new(),
            instructions_digest: String::new(),
            no_live_deltas: false,
        }
    }

    #[test]
    fn the_first_call_stores_the_prefix_and_later_calls_name_it() {
        let mut first = input();
        by_reference(&mut first, None);
        assert!(first.store_prefix);
        assert_eq!(first.tools.len(), 1);
        assert_eq!(first.prefix_digest.len(), 64);

        let mut later = input();
        by_reference(&mut later, Some(&first.prefix_digest));
        assert!(!later.store_prefix);
        assert_eq!(later.prefix_digest, first.prefix_digest);
        assert!(later.tools.is_empty());
        assert!(later.ephemeral_items.is_empty());
        assert!(later.ephemeral_item_digests.is_empty());
    }

    #[test]
    fn a_changed_prefix_is_stored_again() {
        let mut first = input();
        by_reference(&mut first, None);
        let mut changed = input();
        changed.tools[0].json = r#"{"type":"function","name":"shell","strict":true}"#.into();
        by_reference(&mut changed, Some(&first.prefix_digest));
        assert!(changed.store_prefix);
        assert_ne!(changed.prefix_digest, first.prefix_digest);
        assert_eq!(changed.tools.len(), 1);
    }
}
