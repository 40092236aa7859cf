//! The specs of the tools the workflow answers itself, and the built-in
//! spec older sessions use; current sessions get the other tools' specs from
//! the tool-runner (ListTools).

use serde_json::json;

use keel_proto::v1 as pb;
use keel_tool_model::toolset::{self, ApplyPatch, ModelTools, Provider, Shell, ToolSet};
use keel_workflow_api::{DynamicToolDecl, ToolFeatures};

use crate::activities::{SetupInput, ToolSpec};

/// The tools a session with features gets: Codex's choice for its model
/// (`info`, from the model-proxy's catalog) on a provider speaking
/// `wire_api`. A `shell_tool` the session named wins over the choice.
pub fn chosen_tools(
    input: &SetupInput,
    features: &ToolFeatures,
    wire_api: &str,
    info: &pb::ModelInfo,
) -> ToolSet {
    let model = ModelTools {
        shell_type: info.shell_type.clone(),
        apply_patch_tool_type: info.apply_patch_tool_type.clone(),
        image_input: info.image_input,
    };
    let provider = Provider {
        chat_wire: wire_api == "chat",
        full_access: input.full_access,
    };
    let mut set = toolset::choose(features, &model, provider);
    match pb::ShellToolKind::try_from(input.shell_tool) {
        Ok(pb::ShellToolKind::Shell) => set.shell = Shell::Shell,
        Ok(pb::ShellToolKind::ShellCommand) => set.shell = Shell::ShellCommand,
        Ok(pb::ShellToolKind::ExecCommand) => set.shell = Shell::UnifiedExec,
        Ok(pb::ShellToolKind::None) => set.shell = Shell::None,
        Ok(pb::ShellToolKind::Unspecified) | Err(_) => {}
    }
    set
}

/// The ListTools request for a chosen set (its hosted tools are not the
/// tool-runner's: see [`toolset::hosted_specs`]).
pub fn tools_request(set: &ToolSet) -> pb::ListToolsRequest {
    pb::ListToolsRequest {
        apply_patch_format: match set.apply_patch {
            ApplyPatch::Freeform => pb::ApplyPatchFormat::Freeform,
            ApplyPatch::Json => pb::ApplyPatchFormat::Json,
            ApplyPatch::None => pb::ApplyPatchFormat::None,
        } as i32,
        shell_tool: match set.shell {
            Shell::Shell => pb::ShellToolKind::Shell,
            Shell::ShellCommand => pb::ShellToolKind::ShellCommand,
            Shell::UnifiedExec => pb::ShellToolKind::ExecCommand,
            Shell::Local | Shell::None => pb::ShellToolKind::None,
        } as i32,
        include_view_image: set.view_image,
        include_approval_parameters: true,
        ..Default::default()
    }
}

/// The ListTools request of sessions without features: the shell tool they
/// named (unset: `shell`), freeform apply_patch (JSON on Chat Completions)
/// and the file tools.
pub fn legacy_tools_request(input: &SetupInput) -> pb::ListToolsRequest {
    pb::ListToolsRequest {
        apply_patch_format: if input.json_apply_patch {
            pb::ApplyPatchFormat::Json as i32
        } else {
            pb::ApplyPatchFormat::Freeform as i32
        },
        // Unset means `shell` for sessions (for ListTools it would mean
        // unified exec).
        shell_tool: match input.shell_tool {
            0 => pb::ShellToolKind::Shell as i32,
            kind => kind,
        },
        include_approval_parameters: true,
        ..Default::default()
    }
}

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

/// The tools the workflow answers itself: `update_plan`,
/// `request_user_input`, and the client's dynamic tools.
pub fn workflow_tools(dynamic: &[DynamicToolDecl]) -> Vec<ToolSpec> {
    let mut specs = vec![update_plan(), request_user_input()];
    specs.extend(dynamic.iter().map(|t| {
        let parameters: serde_json::Value = serde_json::from_str(&t.input_schema)
            .unwrap_or_else(|_| json!({"type": "object", "properties": {}}));
        ToolSpec {
            name: t.model_name(),
            json: json!({
                "type": "function",
                "name": t.model_name(),
                "description": t.description,
                "strict": false,
                "parameters": parameters,
            })
            .to_string(),
        }
    }));
    specs
}

fn update_plan() -> ToolSpec {
    let spec = json!({
        "type": "function",
        "name": "update_plan",
        "description": "Updates the task plan.\nProvide an optional explanation and a list of plan items, each with a step and status.\nAt most one step can be in_progress at a time.\n",
        "strict": false,
        "parameters": {
            "type": "object",
            "properties": {
                "explanation": {"type": "string"},
                "plan": {
                    "type": "array",
                    "description": "The list of steps",
                    "items": {
                        "type": "object",
                        "properties": {
                            "step": {"type": "string"},
                            "status": {
                                "type": "string",
                                "description": "One of: pending, in_progress, completed"
                            }
                        },
                        "required": ["step", "status"],
                        "additionalProperties": false
                    }
                }
            },
            "required": ["plan"],
            "additionalProperties": false
        }
    });
    ToolSpec {
        name: "update_plan".into(),
        json: spec.to_string(),
    }
}

fn request_user_input() -> ToolSpec {
    let spec = json!({
        "type": "function",
        "name": "request_user_input",
        "description": "Asks the user 1-3 short multiple-choice questions and waits for the answers. Offer 2-3 options per question, the recommended one first with \"(Recommended)\" at the end of its label; do not add an \"Other\" option, the client offers one.",
        "strict": false,
        "parameters": {
            "type": "object",
            "properties": {
                "questions": {
                    "type": "array",
                    "description": "1 to 3 questions",
                    "items": {
                        "type": "object",
                        "properties": {
                            "id": {"type": "string", "description": "A snake_case id for the answer"},
                            "header": {"type": "string", "description": "A label of at most 12 characters"},
                            "question": {"type": "string"},
                            "options": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "properties": {
                                        "label": {"type": "string", "description": "1-5 words"},
                                        "description": {"type": "string"}
                                    },
                                    "required": ["label", "description"],
                                    "additionalProperties": false
                                }
                            }
                        },
                        "required": ["id", "header", "question", "options"],
                        "additionalProperties": false
                    }
                }
            },
            "required": ["questions"],
            "additionalProperties": false
        }
    });
    ToolSpec {
        name: "request_user_input".into(),
        json: spec.to_string(),
    }
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
    fn dynamic_tools_become_function_tools() {
        let decl = DynamicToolDecl {
            namespace: "crm".into(),
            name: "lookup".into(),
            description: "Looks up a customer".into(),
            input_schema: r#"{"type":"object","properties":{"q":{"type":"string"}}}"#.into(),
        };
        let specs = workflow_tools(&[decl]);
        let names: Vec<_> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["update_plan", "request_user_input", "crm__lookup"]);
        let v: serde_json::Value = serde_json::from_str(&specs[2].json).unwrap();
        assert_eq!(v["parameters"]["properties"]["q"]["type"], "string");
    }
}
