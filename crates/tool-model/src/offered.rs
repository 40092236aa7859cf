//! The tools a session offers the model. A call of anything else runs
//! nothing: the model gets Codex's unsupported-call text (Codex:
//! `codex-rs/core/src/tools/router.rs`).

use std::collections::BTreeMap;

use crate::names::APPLY_PATCH;

/// How a tool is offered on the wire (Codex:
/// `codex-rs/tools/src/tool_spec.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolForm {
    /// `{"type":"function",…}`: called with a `function_call`.
    Function,
    /// `{"type":"custom",…}` (freeform): called with a `custom_tool_call`.
    Custom,
    /// A hosted tool such as `{"type":"local_shell"}`, whose calls arrive
    /// as function calls of its name.
    Hosted,
}

/// The offered tools by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Offered {
    tools: BTreeMap<String, ToolForm>,
}

impl Offered {
    /// From `(name, Responses API tool JSON)` pairs: the form is the JSON's
    /// `type` (`function`, `custom`, anything else hosted). A spec whose
    /// JSON does not parse counts as a function tool.
    pub fn from_specs<'a>(specs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let tools = specs
            .into_iter()
            .map(|(name, json)| {
                let kind = serde_json::from_str::<serde_json::Value>(json)
                    .ok()
                    .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_string));
                let form = match kind.as_deref() {
                    Some("custom") => ToolForm::Custom,
                    Some("function") | None => ToolForm::Function,
                    Some(_) => ToolForm::Hosted,
                };
                (name.to_string(), form)
            })
            .collect();
        Self { tools }
    }

    /// Whether `name` is offered.
    pub fn contains(&self, name: &str) -> bool {
        self.tools.contains_key(name)
    }

    /// `Err` with the model-visible text when a call of `name` (`custom`:
    /// a `custom_tool_call`) does not match an offered tool. `apply_patch`
    /// takes either form whichever is offered, as Codex's handler does.
    pub fn check(&self, name: &str, custom: bool) -> Result<(), String> {
        let unsupported = || {
            Err(if custom {
                format!("unsupported custom tool call: {name}")
            } else {
                format!("unsupported call: {name}")
            })
        };
        match self.tools.get(name) {
            None => unsupported(),
            Some(_) if name == APPLY_PATCH => Ok(()),
            Some(ToolForm::Custom) if custom => Ok(()),
            Some(ToolForm::Function | ToolForm::Hosted) if !custom => Ok(()),
            Some(_) => unsupported(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_offered_tools_in_their_form_are_accepted() {
        let offered = Offered::from_specs([
            ("shell", r#"{"type":"function","name":"shell"}"#),
            ("apply_patch", r#"{"type":"custom","name":"apply_patch"}"#),
            ("local_shell", r#"{"type":"local_shell"}"#),
            ("grammar", r#"{"type":"custom","name":"grammar"}"#),
        ]);
        assert_eq!(offered.check("shell", false), Ok(()));
        assert_eq!(offered.check("local_shell", false), Ok(()));
        assert_eq!(offered.check("apply_patch", true), Ok(()));
        assert_eq!(offered.check("apply_patch", false), Ok(()));
        assert_eq!(offered.check("grammar", true), Ok(()));
        assert_eq!(
            offered.check("exec_command", false),
            Err("unsupported call: exec_command".to_string())
        );
        assert_eq!(
            offered.check("shell", true),
            Err("unsupported custom tool call: shell".to_string())
        );
        assert_eq!(
            offered.check("grammar", false),
            Err("unsupported call: grammar".to_string())
        );
        assert_eq!(
            Offered::default().check("read_file", false),
            Err("unsupported call: read_file".to_string())
        );
    }
}
