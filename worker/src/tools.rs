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

/// `justification` and `prefix_rule` as Codex words them
/// (`codex-rs/tools/src/local_tool.rs`, `create_approval_parameters`): raw
/// strings there, so what Codex sends keeps their backslashes, line breaks
/// and indentation.
const JUSTIFICATION_DESCRIPTION: &str = concat!(
    "Only set if sandbox_permissions is \\\"require_escalated\\\".\n",
    "                    Request approval from the user to run this command outside the sandbox.\n",
    "                    Phrased as a simple question that summarizes the purpose of the\n",
    "                    command as it relates to the task at hand - e.g. 'Do you want to\n",
    "                    fetch and pull the latest version of this git branch?'",
);
const PREFIX_RULE_DESCRIPTION: &str = concat!(
    "Only specify when sandbox_permissions is `require_escalated`.\n",
    "                        Suggest a prefix command pattern that will allow you to fulfill similar requests from the user in the future.\n",
    "                        Should be a short but reasonable prefix, e.g. [\\\"git\\\", \\\"pull\\\"] or [\\\"uv\\\", \\\"run\\\"] or [\\\"pytest\\\"].",
);

/// The argv `shell` tool (Codex `shell_type = default`, with the approval
/// parameters: `create_shell_tool` in `codex-rs/tools/src/local_tool.rs`).
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
                    "description": JUSTIFICATION_DESCRIPTION
                },
                "prefix_rule": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": PREFIX_RULE_DESCRIPTION
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
/// `request_user_input` (unless `user_input` is false: a sub-agent asks
/// no one yet), and the client's dynamic tools.
pub fn workflow_tools(dynamic: &[DynamicToolDecl], user_input: bool) -> Vec<ToolSpec> {
    let mut specs = vec![update_plan()];
    if user_input {
        specs.push(request_user_input());
    }
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

/// Codex's collaboration tools as this version offers them
/// (`features.multi_agent`): `spawn_agent` and `wait_agent`, with Codex's
/// schemas and texts (`codex-rs/tools/src/agent_tool.rs` at 4275ad2b),
/// less what Keel does not do yet: `spawn_agent`'s description has no model
/// guidance (Keel's catalog does not list picker models), its roles are
/// `default` only, and `wait_agent`'s description does not promise a
/// notification message (see docs/design/sub-agents.md).
/// `spawn_agent`'s `agent_type` description: the session's roles, then
/// Codex's built-in `default` (`spawn_tool_spec::build`,
/// `codex-rs/core/src/agent/role.rs`).
fn agent_type_description(roles: &[keel_workflow_api::AgentRole]) -> String {
    let mut text =
        "Optional type name for the new agent. If omitted, `default` is used.\nAvailable roles:\n"
            .to_string();
    let mut entries: Vec<String> = roles
        .iter()
        .map(|r| {
            let locked = match (r.model.is_empty(), r.reasoning_effort.is_empty()) {
                (false, false) => format!(
                    "\n- This role's model is set to `{}` and its reasoning effort is set to `{}`. These settings cannot be changed.",
                    r.model, r.reasoning_effort
                ),
                (false, true) => format!(
                    "\n- This role's model is set to `{}`. This setting cannot be changed.",
                    r.model
                ),
                (true, false) => format!(
                    "\n- This role's reasoning effort is set to `{}`. This setting cannot be changed.",
                    r.reasoning_effort
                ),
                (true, true) => String::new(),
            };
            format!("{}: {{\n{}{locked}\n}}", r.name, r.description)
        })
        .collect();
    entries.push("default: {\nDefault agent.\n}".to_string());
    text.push_str(&entries.join("\n"));
    text
}

pub fn collab_tools(roles: &[keel_workflow_api::AgentRole]) -> Vec<ToolSpec> {
    let items = json!({
        "type": "array",
        "description": "Structured input items. Use this to pass explicit mentions (for example app:// connector paths).",
        "items": {
            "type": "object",
            "properties": {
                "type": {"type": "string", "description": "Input item type: text, image, local_image, skill, or mention."},
                "text": {"type": "string", "description": "Text content when type is text."},
                "image_url": {"type": "string", "description": "Image URL when type is image."},
                "path": {"type": "string", "description": "Path when type is local_image/skill, or structured mention target such as app://<connector-id> or plugin://<plugin-name>@<marketplace-name> when type is mention."},
                "name": {"type": "string", "description": "Display name when type is skill or mention."}
            },
            "additionalProperties": false
        }
    });
    let spawn = json!({
        "type": "function",
        "name": "spawn_agent",
        "description": "Spawn a sub-agent for a well-scoped task. Returns the spawned agent id plus the user-facing nickname when available.",
        "strict": false,
        "parameters": {
            "type": "object",
            "properties": {
                "message": {"type": "string", "description": "Initial plain-text task for the new agent. Use either message or items."},
                "items": items.clone(),
                "agent_type": {"type": "string", "description": agent_type_description(roles)},
                "fork_context": {"type": "boolean", "description": "When true, fork the current thread history into the new agent before sending the initial prompt. This must be used when you want the new agent to have exactly the same context as you."},
                "model": {"type": "string", "description": "Optional model override for the new agent. Replaces the inherited model."},
                "reasoning_effort": {"type": "string", "description": "Optional reasoning effort override for the new agent. Replaces the inherited reasoning effort."}
            },
            "additionalProperties": false
        }
    });
    let wait = json!({
        "type": "function",
        "name": "wait_agent",
        "description": "Wait for agents to reach a final status. Completed statuses may include the agent's final message. Returns empty status when timed out.",
        "strict": false,
        "parameters": {
            "type": "object",
            "properties": {
                "targets": {"type": "array", "items": {"type": "string"}, "description": "Agent ids to wait on. Pass multiple ids to wait for whichever finishes first."},
                "timeout_ms": {"type": "number", "description": "Optional timeout in milliseconds. Defaults to 30000, min 10000, max 3600000. Prefer longer waits (minutes) to avoid busy polling."}
            },
            "required": ["targets"],
            "additionalProperties": false
        }
    });
    let send = json!({
        "type": "function",
        "name": "send_input",
        "description": "Send a message to an existing agent. Use interrupt=true to redirect work immediately. You should reuse the agent by send_input if you believe your assigned task is highly dependent on the context of a previous task.",
        "strict": false,
        "parameters": {
            "type": "object",
            "properties": {
                "target": {"type": "string", "description": "Agent id to message (from spawn_agent)."},
                "message": {"type": "string", "description": "Legacy plain-text message to send to the agent. Use either message or items."},
                "items": items,
                "interrupt": {"type": "boolean", "description": "When true, stop the agent's current task and handle this immediately. When false (default), queue this message."}
            },
            "required": ["target"],
            "additionalProperties": false
        }
    });
    let close = json!({
        "type": "function",
        "name": "close_agent",
        "description": "Close an agent and any open descendants when they are no longer needed, and return the target agent's previous status before shutdown was requested. Don't keep agents open for too long if they are not needed anymore.",
        "strict": false,
        "parameters": {
            "type": "object",
            "properties": {
                "target": {"type": "string", "description": "Agent id to close (from spawn_agent)."}
            },
            "required": ["target"],
            "additionalProperties": false
        }
    });
    vec![
        ToolSpec {
            name: "spawn_agent".into(),
            json: spawn.to_string(),
        },
        ToolSpec {
            name: "send_input".into(),
            json: send.to_string(),
        },
        ToolSpec {
            name: "wait_agent".into(),
            json: wait.to_string(),
        },
        ToolSpec {
            name: "close_agent".into(),
            json: close.to_string(),
        },
    ]
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

/// Codex's `create_request_user_input_tool`
/// (`codex-rs/tools/src/request_user_input_tool.rs`). Its description names
/// the collaboration modes the tool answers in; Keel has no modes and answers
/// it in every turn, as Codex does in Default mode with
/// `default_mode_request_user_input` on, so it is that variant's text.
fn request_user_input() -> ToolSpec {
    let spec = json!({
        "type": "function",
        "name": "request_user_input",
        "description": "Request user input for one to three short questions and wait for the response. This tool is only available in Default or Plan mode.",
        "strict": false,
        "parameters": {
            "type": "object",
            "properties": {
                "questions": {
                    "type": "array",
                    "description": "Questions to show the user. Prefer 1 and do not exceed 3",
                    "items": {
                        "type": "object",
                        "properties": {
                            "id": {
                                "type": "string",
                                "description": "Stable identifier for mapping answers (snake_case)."
                            },
                            "header": {
                                "type": "string",
                                "description": "Short header label shown in the UI (12 or fewer chars)."
                            },
                            "question": {
                                "type": "string",
                                "description": "Single-sentence prompt shown to the user."
                            },
                            "options": {
                                "type": "array",
                                "description": "Provide 2-3 mutually exclusive choices. Put the recommended option first and suffix its label with \"(Recommended)\". Do not include an \"Other\" option in this list; the client will add a free-form \"Other\" option automatically.",
                                "items": {
                                    "type": "object",
                                    "properties": {
                                        "label": {
                                            "type": "string",
                                            "description": "User-facing label (1-5 words)."
                                        },
                                        "description": {
                                            "type": "string",
                                            "description": "One short sentence explaining impact/tradeoff if selected."
                                        }
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
        let specs = workflow_tools(&[decl], true);
        let names: Vec<_> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["update_plan", "request_user_input", "crm__lookup"]);
        let v: serde_json::Value = serde_json::from_str(&specs[2].json).unwrap();
        assert_eq!(v["parameters"]["properties"]["q"]["type"], "string");
    }
    /// Codex's own definitions (the tool-runner's fixtures, each naming the
    /// Codex file and commit it was read from), compared with the specs the
    /// workflow offers: same name, type, description and parameters, nothing
    /// more and nothing less.
    mod codex_parity {
        use serde_json::Value;

        use super::*;

        fn fixture(text: &str) -> Value {
            let fixture: Value = serde_json::from_str(text).unwrap();
            let source = fixture["source"].as_str().unwrap();
            assert!(
                source.starts_with("codex-rs/") && source.contains(" @ "),
                "{source}"
            );
            fixture
        }

        /// Fails at the first place where `keel` and `codex` differ.
        fn assert_same(keel: &Value, codex: &Value, what: &str) {
            if let Some(difference) = keel_tool_model::spec_check::first_difference(keel, codex) {
                panic!("{what}: {difference}");
            }
        }

        fn offered(name: &str) -> Value {
            let spec = workflow_tools(&[], true)
                .into_iter()
                .chain(legacy_tools())
                .find(|spec| spec.name == name)
                .unwrap_or_else(|| panic!("{name} is not offered"));
            serde_json::from_str(&spec.json).unwrap()
        }

        #[test]
        fn update_plan_is_codexs() {
            let codex = fixture(include_str!(
                "../../services/tool-runner/src/tools/codex_specs/update_plan.json"
            ));
            assert_same(&offered("update_plan"), &codex["spec"], "update_plan");
        }

        /// Codex words the description by the collaboration modes the tool
        /// answers in (`request_user_input_tool_description` in
        /// `codex-rs/tools/src/request_user_input_tool.rs`): "Plan mode" by
        /// default, where a call in Default mode is refused, "Default or Plan
        /// mode" with `default_mode_request_user_input`. Keel answers the
        /// tool in every turn, so it offers the second text.
        #[test]
        fn request_user_input_is_codexs() {
            let codex = fixture(include_str!(
                "../../services/tool-runner/src/tools/codex_specs/request_user_input.json"
            ));
            let variants = &codex["conditional_descriptions"]["default_mode_request_user_input"];
            let keel = offered("request_user_input");
            assert_eq!(keel["description"], variants["true"]);
            assert_ne!(keel["description"], variants["false"]);
            assert_same(&keel, &codex["spec"], "request_user_input");
        }

        /// Sessions from before the tool-runner supplied specs get the argv
        /// `shell` with the approval parameters, which Codex's
        /// `create_shell_tool` always adds (`create_approval_parameters` in
        /// `codex-rs/tools/src/local_tool.rs`).
        #[test]
        fn legacy_shell_is_codexs() {
            let codex = fixture(include_str!(
                "../../services/tool-runner/src/tools/codex_specs/shell.json"
            ));
            let legacy = legacy_tools();
            assert_eq!(legacy.len(), 1);
            assert_same(&offered("shell"), &codex["spec"], "shell");
        }
    }
}
