//! Where two tool specs (Responses API JSON) differ: for the tests that
//! hold Keel's tool definitions to Codex's (the fixtures in the
//! tool-runner's `tools/codex_specs/`). Behind the `spec-check` feature,
//! which only those tests enable.

use serde_json::Value;

/// The first place `keel` and `codex` differ, as a dotted path and what
/// each has there; `None` when they are the same, field for field (objects
/// by their keys, whatever the order).
pub fn first_difference(keel: &Value, codex: &Value) -> Option<String> {
    difference(keel, codex, "spec")
}

fn difference(keel: &Value, codex: &Value, path: &str) -> Option<String> {
    match (keel, codex) {
        (Value::Object(k), Value::Object(c)) => {
            let extra: Vec<&String> = k.keys().filter(|key| !c.contains_key(*key)).collect();
            let missing: Vec<&String> = c.keys().filter(|key| !k.contains_key(*key)).collect();
            if !extra.is_empty() || !missing.is_empty() {
                return Some(format!(
                    "{path}: Keel has {extra:?} that Codex has not, and lacks {missing:?}"
                ));
            }
            c.iter()
                .find_map(|(key, value)| difference(&k[key], value, &format!("{path}.{key}")))
        }
        _ if keel == codex => None,
        _ => Some(format!("{path}: Keel has {keel}, Codex {codex}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_the_first_difference() {
        let codex = json!({"name": "t", "parameters": {"properties": {"a": {"type": "string"}}}});
        assert_eq!(first_difference(&codex.clone(), &codex), None);
        let keel = json!({"parameters": {"properties": {"a": {"type": "number"}}}, "name": "t"});
        assert_eq!(
            first_difference(&keel, &codex).as_deref(),
            Some(r#"spec.parameters.properties.a.type: Keel has "number", Codex "string""#)
        );
        let extra = json!({"name": "t", "strict": false, "parameters": {"properties": {"a": {"type": "string"}}}});
        assert!(
            first_difference(&extra, &codex)
                .unwrap()
                .contains(r#"["strict"]"#)
        );
    }
}
