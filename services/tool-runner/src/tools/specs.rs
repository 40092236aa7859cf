//! The Responses API definitions of the tools RunTool serves (Codex:
//! `codex-rs/tools/src/`): the one place their names, descriptions and
//! schemas live.
//! Function tools have `strict: false` and `additionalProperties: false` on
//! every object; the freeform apply_patch is a custom tool with a lark
//! grammar.

use std::collections::BTreeMap;

use serde::Serialize;

/// Which shell tool to offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ShellTool {
    Shell,
    ShellCommand,
    /// `exec_command` + `write_stdin`.
    #[default]
    UnifiedExec,
    None,
}

/// How to offer apply_patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ApplyPatchTool {
    #[default]
    Freeform,
    Json,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ToolOptions {
    pub shell: ShellTool,
    pub apply_patch: ApplyPatchTool,
    pub view_image: bool,
    pub view_image_original_detail: bool,
    pub file_tools: bool,
    pub approval_parameters: bool,
}

/// The tools, sorted by name, each as `(name, JSON text)`. The text is
/// serialised from structs so its field order is fixed (Codex's order), which
/// keeps the prompt prefix byte-for-byte stable.
pub fn tool_specs(options: &ToolOptions) -> Vec<(String, String)> {
    let mut tools: Vec<Tool> = Vec::new();
    match options.shell {
        ShellTool::Shell => tools.push(shell(options)),
        ShellTool::ShellCommand => tools.push(shell_command(options)),
        ShellTool::UnifiedExec => {
            tools.push(exec_command(options));
            tools.push(write_stdin());
        }
        ShellTool::None => {}
    }
    match options.apply_patch {
        ApplyPatchTool::Freeform => tools.push(apply_patch_freeform()),
        ApplyPatchTool::Json => tools.push(apply_patch_json()),
        ApplyPatchTool::None => {}
    }
    if options.file_tools {
        tools.extend([read_file(), list_dir(), grep_files()]);
    }
    if options.view_image {
        tools.push(view_image(options.view_image_original_detail));
    }
    tools.sort_by_key(Tool::name);
    tools
        .into_iter()
        .map(|tool| {
            let json = serde_json::to_string(&tool).unwrap_or_default();
            (tool.name().to_string(), json)
        })
        .collect()
}

#[derive(Serialize)]
#[serde(untagged)]
enum Tool {
    Function(FunctionTool),
    Custom(CustomTool),
}

impl Tool {
    fn name(&self) -> &'static str {
        match self {
            Self::Function(tool) => tool.name,
            Self::Custom(tool) => tool.name,
        }
    }
}

/// A function tool, fields in the order Codex sends them.
#[derive(Serialize)]
struct FunctionTool {
    r#type: &'static str,
    name: &'static str,
    description: &'static str,
    strict: bool,
    parameters: ObjectSchema,
}

/// A freeform (custom) tool whose input is constrained by a grammar.
#[derive(Serialize)]
struct CustomTool {
    r#type: &'static str,
    name: &'static str,
    description: &'static str,
    format: GrammarFormat,
}

#[derive(Serialize)]
struct GrammarFormat {
    r#type: &'static str,
    syntax: &'static str,
    definition: &'static str,
}

/// A JSON Schema, serialised with `type` first as Codex does.
#[derive(Serialize)]
#[serde(untagged)]
enum Schema {
    Scalar {
        r#type: &'static str,
        description: &'static str,
    },
    Array {
        r#type: &'static str,
        items: Box<Schema>,
        #[serde(skip_serializing_if = "Option::is_none")]
        description: Option<&'static str>,
    },
    Items {
        r#type: &'static str,
    },
    Object(ObjectSchema),
}

/// `{"type":"object","properties":…,"required":…,"additionalProperties":false}`.
#[derive(Serialize)]
struct ObjectSchema {
    r#type: &'static str,
    properties: BTreeMap<&'static str, Schema>,
    #[serde(skip_serializing_if = "Option::is_none")]
    required: Option<Vec<&'static str>>,
    #[serde(rename = "additionalProperties")]
    additional_properties: bool,
}

fn object(
    properties: Vec<(&'static str, Schema)>,
    required: Option<Vec<&'static str>>,
) -> ObjectSchema {
    ObjectSchema {
        r#type: "object",
        properties: properties.into_iter().collect(),
        required,
        additional_properties: false,
    }
}

fn function(name: &'static str, description: &'static str, parameters: ObjectSchema) -> Tool {
    Tool::Function(FunctionTool {
        r#type: "function",
        name,
        description,
        strict: false,
        parameters,
    })
}

fn string(description: &'static str) -> Schema {
    Schema::Scalar {
        r#type: "string",
        description,
    }
}
fn number(description: &'static str) -> Schema {
    Schema::Scalar {
        r#type: "number",
        description,
    }
}
fn boolean(description: &'static str) -> Schema {
    Schema::Scalar {
        r#type: "boolean",
        description,
    }
}
fn strings(description: &'static str) -> Schema {
    Schema::Array {
        r#type: "array",
        items: Box::new(Schema::Items { r#type: "string" }),
        description: Some(description),
    }
}

fn approval_parameters(options: &ToolOptions) -> Vec<(&'static str, Schema)> {
    if !options.approval_parameters {
        return Vec::new();
    }
    vec![
        (
            "sandbox_permissions",
            string(
                "Sandbox permissions for the command. Set to \"require_escalated\" to request running without sandbox restrictions; defaults to \"use_default\".",
            ),
        ),
        (
            "justification",
            string(
                "Only set if sandbox_permissions is \"require_escalated\". Request approval from the user to run this command outside the sandbox. Phrased as a simple question that summarizes the purpose of the command as it relates to the task at hand - e.g. 'Do you want to fetch and pull the latest version of this git branch?'",
            ),
        ),
        (
            "prefix_rule",
            strings(
                "Only specify when sandbox_permissions is `require_escalated`. Suggest a prefix command pattern that will allow you to fulfill similar requests from the user in the future. Should be a short but reasonable prefix, e.g. [\"git\", \"pull\"] or [\"uv\", \"run\"] or [\"pytest\"].",
            ),
        ),
    ]
}

fn exec_command(options: &ToolOptions) -> Tool {
    let mut properties = vec![
        ("cmd", string("Shell command to execute.")),
        (
            "workdir",
            string("Optional working directory to run the command in; defaults to the turn cwd."),
        ),
        (
            "shell",
            string("Shell binary to launch. Defaults to the user's default shell."),
        ),
        (
            "tty",
            boolean(
                "Whether to allocate a TTY for the command. Defaults to false (plain pipes); set to true to open a PTY and access TTY process.",
            ),
        ),
        (
            "yield_time_ms",
            number("How long to wait (in milliseconds) for output before yielding."),
        ),
        (
            "max_output_tokens",
            number("Maximum number of tokens to return. Excess output will be truncated."),
        ),
        (
            "login",
            boolean("Whether to run the shell with -l/-i semantics. Defaults to true."),
        ),
    ];
    properties.extend(approval_parameters(options));
    function(
        "exec_command",
        "Runs a command in a PTY, returning output or a session ID for ongoing interaction.",
        object(properties, Some(vec!["cmd"])),
    )
}

fn write_stdin() -> Tool {
    function(
        "write_stdin",
        "Writes characters to an existing unified exec session and returns recent output.",
        object(
            vec![
                (
                    "session_id",
                    number("Identifier of the running unified exec session."),
                ),
                (
                    "chars",
                    string("Bytes to write to stdin (may be empty to poll)."),
                ),
                (
                    "yield_time_ms",
                    number("How long to wait (in milliseconds) for output before yielding."),
                ),
                (
                    "max_output_tokens",
                    number("Maximum number of tokens to return. Excess output will be truncated."),
                ),
            ],
            Some(vec!["session_id"]),
        ),
    )
}

fn shell(options: &ToolOptions) -> Tool {
    let mut properties = vec![
        ("command", strings("The command to execute")),
        (
            "workdir",
            string("The working directory to execute the command in"),
        ),
        (
            "timeout_ms",
            number("The timeout for the command in milliseconds"),
        ),
    ];
    properties.extend(approval_parameters(options));
    function(
        "shell",
        "Runs a shell command and returns its output.\n- The arguments to `shell` will be passed to execvp(). Most terminal commands should be prefixed with [\"bash\", \"-lc\"].\n- Always set the `workdir` param when using the shell function. Do not use `cd` unless absolutely necessary.",
        object(properties, Some(vec!["command"])),
    )
}

fn shell_command(options: &ToolOptions) -> Tool {
    let mut properties = vec![
        (
            "command",
            string("The shell script to execute in the user's default shell"),
        ),
        (
            "workdir",
            string("The working directory to execute the command in"),
        ),
        (
            "timeout_ms",
            number("The timeout for the command in milliseconds"),
        ),
        (
            "login",
            boolean("Whether to run the shell with login shell semantics. Defaults to true."),
        ),
    ];
    properties.extend(approval_parameters(options));
    function(
        "shell_command",
        "Runs a shell command and returns its output.\n- Always set the `workdir` param when using the shell_command function. Do not use `cd` unless absolutely necessary.",
        object(properties, Some(vec!["command"])),
    )
}

/// The freeform apply_patch grammar (Codex: `codex-rs/apply-patch/src/`), in the lark dialect
/// the Responses API constrains custom tool input with.
pub const APPLY_PATCH_LARK_GRAMMAR: &str = r#"start: begin_patch hunk+ end_patch
begin_patch: "*** Begin Patch" LF
end_patch: "*** End Patch" LF?

hunk: add_hunk | delete_hunk | update_hunk
add_hunk: "*** Add File: " filename LF add_line+
delete_hunk: "*** Delete File: " filename LF
update_hunk: "*** Update File: " filename LF change_move? change?

filename: /(.+)/
add_line: "+" /(.*)/ LF -> line

change_move: "*** Move to: " filename LF
change: (change_context | change_line)+ eof_line?
change_context: ("@@" | "@@ " /(.+)/) LF
change_line: ("+" | "-" | " ") /(.*)/ LF
eof_line: "*** End of File" LF

%import common.LF
"#;

fn apply_patch_freeform() -> Tool {
    Tool::Custom(CustomTool {
        r#type: "custom",
        name: "apply_patch",
        description: "Use the `apply_patch` tool to edit files. This is a FREEFORM tool, so do not wrap the patch in JSON.",
        format: GrammarFormat {
            r#type: "grammar",
            syntax: "lark",
            definition: APPLY_PATCH_LARK_GRAMMAR,
        },
    })
}

/// The JSON form's tutorial: the envelope, the three hunk kinds, context
/// lines, `@@` anchors and relative paths.
pub const APPLY_PATCH_JSON_DESCRIPTION: &str = r#"Use the `apply_patch` tool to edit files.
The patch format is a small, file-oriented diff language that is easy to write and safe to apply. Every patch is wrapped in an envelope:

*** Begin Patch
[ one or more file operations ]
*** End Patch

Each file operation starts with a header that says what to do:

*** Add File: <path> - create a new file. Every line after the header is a + line holding the new contents.
*** Delete File: <path> - remove an existing file. Nothing follows the header.
*** Update File: <path> - change an existing file in place. The header may be followed by *** Move to: <new path> to rename the file.

An update holds one or more hunks. Each hunk starts with @@, optionally followed by a line from the file (such as a class or function signature) that comes before the change. Inside a hunk every line starts with one character:
- ' ' (a space) for a context line that stays as it is,
- '-' for a line to remove,
- '+' for a line to add.

Context:
- Show 3 lines of unchanged context above and 3 lines below each change. When two changes are within 3 lines of each other, do not repeat the shared context lines.
- When 3 lines of context do not identify the place uniquely, name the enclosing class or function after @@:
@@ class BaseClass
[3 lines of context]
-[old line]
+[new line]
[3 lines of context]
- When even that is ambiguous, use several @@ lines, from the outermost scope inward:
@@ class BaseClass
@@ 	def method():
[3 lines of context]
-[old line]
+[new line]
[3 lines of context]
- End a hunk with *** End of File when the change is at the very end of the file.

The grammar:
Patch := Begin { FileOp } End
Begin := "*** Begin Patch" NEWLINE
End := "*** End Patch" NEWLINE
FileOp := AddFile | DeleteFile | UpdateFile
AddFile := "*** Add File: " path NEWLINE { "+" line NEWLINE }
DeleteFile := "*** Delete File: " path NEWLINE
UpdateFile := "*** Update File: " path NEWLINE [ MoveTo ] { Hunk }
MoveTo := "*** Move to: " newPath NEWLINE
Hunk := "@@" [ header ] NEWLINE { HunkLine } [ "*** End of File" NEWLINE ]
HunkLine := (" " | "-" | "+") text NEWLINE

An example combining several operations:

*** Begin Patch
*** Add File: hello.txt
+Hello world
*** Update File: src/app.py
*** Move to: src/main.py
@@ def greet():
-print("Hi")
+print("Hello, world!")
*** Delete File: obsolete.txt
*** End Patch

Remember:
- Every operation needs its header (Add, Delete or Update).
- Prefix every new line with +, also when creating a file.
- Use relative paths only, NEVER absolute ones.
"#;

fn apply_patch_json() -> Tool {
    function(
        "apply_patch",
        APPLY_PATCH_JSON_DESCRIPTION,
        object(
            vec![(
                "input",
                string("The entire contents of the apply_patch command"),
            )],
            Some(vec!["input"]),
        ),
    )
}

fn read_file() -> Tool {
    let indentation = object(
        vec![
            (
                "anchor_line",
                number("Anchor line to center the indentation lookup on (defaults to offset)."),
            ),
            (
                "max_levels",
                number("How many parent indentation levels (smaller indents) to include."),
            ),
            (
                "include_siblings",
                boolean("When true, include additional blocks that share the anchor indentation."),
            ),
            (
                "include_header",
                boolean("Include doc comments or attributes directly above the selected block."),
            ),
            (
                "max_lines",
                number("Hard cap on the number of lines returned when using indentation mode."),
            ),
        ],
        None,
    );
    function(
        "read_file",
        "Reads a local file with 1-indexed line numbers, supporting slice and indentation-aware block modes.",
        object(
            vec![
                ("file_path", string("Absolute path to the file")),
                (
                    "offset",
                    number("The line number to start reading from. Must be 1 or greater."),
                ),
                ("limit", number("The maximum number of lines to return.")),
                (
                    "mode",
                    string(
                        "Optional mode selector: \"slice\" for simple ranges (default) or \"indentation\" to expand around an anchor line.",
                    ),
                ),
                ("indentation", Schema::Object(indentation)),
            ],
            Some(vec!["file_path"]),
        ),
    )
}

fn list_dir() -> Tool {
    function(
        "list_dir",
        "Lists entries in a local directory with 1-indexed entry numbers and simple type labels.",
        object(
            vec![
                (
                    "dir_path",
                    string("Absolute path to the directory to list."),
                ),
                (
                    "offset",
                    number("The entry number to start listing from. Must be 1 or greater."),
                ),
                ("limit", number("The maximum number of entries to return.")),
                (
                    "depth",
                    number("The maximum directory depth to traverse. Must be 1 or greater."),
                ),
            ],
            Some(vec!["dir_path"]),
        ),
    )
}

fn grep_files() -> Tool {
    function(
        "grep_files",
        "Finds files whose contents match the pattern and lists them by modification time.",
        object(
            vec![
                (
                    "pattern",
                    string("Regular expression pattern to search for."),
                ),
                (
                    "include",
                    string(
                        "Optional glob that limits which files are searched (e.g. \"*.rs\" or \"*.{ts,tsx}\").",
                    ),
                ),
                (
                    "path",
                    string(
                        "Directory or file path to search. Defaults to the session's working directory.",
                    ),
                ),
                (
                    "limit",
                    number("Maximum number of file paths to return (defaults to 100)."),
                ),
            ],
            Some(vec!["pattern"]),
        ),
    )
}

fn view_image(original_detail: bool) -> Tool {
    let mut properties = vec![("path", string("Local filesystem path to an image file"))];
    if original_detail {
        properties.push((
            "detail",
            string(
                "Optional detail override. The only supported value is `original`; omit this field for default resized behavior. Use `original` to preserve the file's original resolution instead of resizing to fit. This is important when high-fidelity image perception or precise localization is needed, especially for CUA agents.",
            ),
        ));
    }
    function(
        "view_image",
        "View a local image from the filesystem (only use if given a full filepath by the user, and the image isn't already attached to the thread context within <image ...> tags).",
        object(properties, Some(vec!["path"])),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    use serde_json::{Value, json};

    fn names(options: &ToolOptions) -> Vec<String> {
        tool_specs(options)
            .into_iter()
            .map(|(name, _)| name)
            .collect()
    }

    fn parsed(options: &ToolOptions) -> Vec<(String, Value)> {
        tool_specs(options)
            .into_iter()
            .map(|(name, json)| (name, serde_json::from_str(&json).unwrap()))
            .collect()
    }

    /// Every object schema in `value` sets `additionalProperties: false`.
    fn objects_are_closed(value: &Value) -> bool {
        match value {
            Value::Object(map) => {
                let closed = map.get("type") != Some(&json!("object"))
                    || map.get("additionalProperties") == Some(&json!(false));
                closed && map.values().all(objects_are_closed)
            }
            Value::Array(items) => items.iter().all(objects_are_closed),
            _ => true,
        }
    }

    #[test]
    fn default_selection_is_sorted() {
        let options = ToolOptions {
            file_tools: true,
            ..Default::default()
        };
        assert_eq!(
            names(&options),
            [
                "apply_patch",
                "exec_command",
                "grep_files",
                "list_dir",
                "read_file",
                "write_stdin"
            ]
        );
        let options = ToolOptions {
            shell: ShellTool::ShellCommand,
            apply_patch: ApplyPatchTool::None,
            view_image: true,
            ..Default::default()
        };
        assert_eq!(names(&options), ["shell_command", "view_image"]);
        let options = ToolOptions {
            shell: ShellTool::Shell,
            apply_patch: ApplyPatchTool::Json,
            ..Default::default()
        };
        assert_eq!(names(&options), ["apply_patch", "shell"]);
    }

    #[test]
    fn function_tools_follow_the_wire_rules() {
        let options = ToolOptions {
            shell: ShellTool::UnifiedExec,
            apply_patch: ApplyPatchTool::Json,
            view_image: true,
            view_image_original_detail: true,
            file_tools: true,
            approval_parameters: true,
        };
        for shell in [
            ShellTool::Shell,
            ShellTool::ShellCommand,
            ShellTool::UnifiedExec,
        ] {
            for (name, tool) in parsed(&ToolOptions { shell, ..options }) {
                assert_eq!(tool["type"], "function", "{name}");
                assert_eq!(tool["strict"], false, "{name}");
                assert!(objects_are_closed(&tool), "{name}: {tool}");
                assert!(tool["description"].as_str().is_some_and(|d| !d.is_empty()));
                let required = tool["parameters"]["required"].as_array().unwrap();
                for field in required {
                    let field = field.as_str().unwrap();
                    assert!(
                        tool["parameters"]["properties"].get(field).is_some(),
                        "{name}.{field}"
                    );
                }
            }
        }
    }

    #[test]
    fn exact_shapes() {
        let specs = parsed(&ToolOptions {
            apply_patch: ApplyPatchTool::Freeform,
            shell: ShellTool::None,
            ..Default::default()
        });
        let (_, freeform) = &specs[0];
        assert_eq!(freeform["type"], "custom");
        assert_eq!(freeform["format"]["type"], "grammar");
        assert_eq!(freeform["format"]["syntax"], "lark");
        assert!(
            freeform["format"]["definition"]
                .as_str()
                .unwrap()
                .starts_with("start: begin_patch hunk+ end_patch")
        );

        let specs = tool_specs(&ToolOptions {
            shell: ShellTool::UnifiedExec,
            apply_patch: ApplyPatchTool::None,
            ..Default::default()
        });
        let write = &specs[1].1;
        assert_eq!(
            write,
            r#"{"type":"function","name":"write_stdin","description":"Writes characters to an existing unified exec session and returns recent output.","strict":false,"parameters":{"type":"object","properties":{"chars":{"type":"string","description":"Bytes to write to stdin (may be empty to poll)."},"max_output_tokens":{"type":"number","description":"Maximum number of tokens to return. Excess output will be truncated."},"session_id":{"type":"number","description":"Identifier of the running unified exec session."},"yield_time_ms":{"type":"number","description":"How long to wait (in milliseconds) for output before yielding."}},"required":["session_id"],"additionalProperties":false}}"#
        );
        let exec: Value = serde_json::from_str(&specs[0].1).unwrap();
        assert!(
            exec["parameters"]["properties"]
                .get("sandbox_permissions")
                .is_none()
        );
        let with_approvals = parsed(&ToolOptions {
            approval_parameters: true,
            apply_patch: ApplyPatchTool::None,
            ..Default::default()
        });
        assert!(
            with_approvals[0].1["parameters"]["properties"]
                .get("sandbox_permissions")
                .is_some()
        );
    }

    #[test]
    fn view_image_detail_is_optional() {
        let json = |tool: Tool| -> Value { serde_json::to_value(tool).unwrap() };
        let plain = json(view_image(false));
        assert!(plain["parameters"]["properties"].get("detail").is_none());
        let detailed = json(view_image(true));
        assert!(detailed["parameters"]["properties"].get("detail").is_some());
    }
}
