//! Tool names the workflow knows, and the built-in spec older sessions use;
//! current sessions get their tool specs from the tool-runner (ListTools).

use serde_json::json;

use crate::activities::ToolSpec;

/// Names the dispatcher accepts as argv shell calls, so old transcripts replay.
pub const SHELL_TOOLS: &[&str] = &["shell", "container.exec"];

/// The argv `shell` tool (Codex `shell_type = default`).
pub fn shell() -> ToolSpec {
    let spec = json!({
        "type": "function",
        "name": "shell",
        "description": "Runs a shell command and returns its output.\n- The arguments to `shell` will be passed to execvp(). Most terminal commands should be prefixed with [\"bash\", \"-lc\"].\n- Always set the `workdir` param when using the shell function. Do not use `cd` unless absolutely necessary.",
        "strict": false,
        "parameters": {
            "type": "object",
            "properties": {
                "command": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "The command to execute"
                },
                "workdir": {
                    "type": "string",
                    "description": "The working directory to execute the command in"
                },
                "timeout_ms": {
                    "type": "number",
                    "description": "The timeout for the command in milliseconds"
                },
                "sandbox_permissions": {
                    "type": "string",
                    "description": "Sandbox permissions for the command. Set to \"require_escalated\" to request running without sandbox restrictions; defaults to \"use_default\"."
                },
                "justification": {
                    "type": "string",
                    "description": "Only set if sandbox_permissions is \"require_escalated\". 1-sentence explanation of why we want to run this command."
                },
                "prefix_rule": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "Only specify when sandbox_permissions is `require_escalated`. Suggest a prefix command pattern that will allow you to fulfill similar requests from the user in the future."
                }
            },
            "required": ["command"],
            "additionalProperties": false
        }
    });
    ToolSpec {
        name: "shell".into(),
        json: spec.to_string(),
    }
}

/// Tools of sessions that started before the tool-runner supplied them
/// (before the `session-setup-v1` patch): the argv `shell` tool only.
pub fn legacy_tools() -> Vec<ToolSpec> {
    vec![shell()]
}

/// The argv of a shell-like call, for events; `None` when the arguments do not
/// parse (the tool-runner reports that to the model).
pub fn shell_argv(arguments: &str) -> Option<Vec<String>> {
    #[derive(serde::Deserialize)]
    struct Args {
        command: Vec<String>,
    }
    serde_json::from_str::<Args>(arguments)
        .ok()
        .map(|a| a.command)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_spec_is_a_strict_false_function() {
        let v: serde_json::Value = serde_json::from_str(&shell().json).unwrap();
        assert_eq!(v["type"], "function");
        assert_eq!(v["strict"], false);
        assert_eq!(v["parameters"]["additionalProperties"], false);
        assert_eq!(v["parameters"]["required"][0], "command");
    }

    #[test]
    fn argv_parsing() {
        assert_eq!(
            shell_argv(r#"{"command":["echo","hi"]}"#),
            Some(vec!["echo".to_string(), "hi".to_string()])
        );
        assert_eq!(shell_argv(r#"{"command":"echo"}"#), None);
    }
}
