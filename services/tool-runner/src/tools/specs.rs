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

/// `sandbox_permissions`, `justification` and `prefix_rule` as Codex words them
/// (`codex-rs/tools/src/local_tool.rs`, `create_approval_parameters` with
/// `exec_permission_approvals_enabled` off). Codex writes the last two as raw
/// strings, so what it sends keeps their backslashes, line breaks and
/// indentation; so does this.
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
        ("justification", string(JUSTIFICATION_DESCRIPTION)),
        ("prefix_rule", strings(PREFIX_RULE_DESCRIPTION)),
    ]
}

/// Codex: `codex-rs/tools/src/local_tool.rs`, `create_approval_parameters`.
const JUSTIFICATION_DESCRIPTION: &str = concat!(
    "Only set if sandbox_permissions is \\\"require_escalated\\\".\n",
    "                    Request approval from the user to run this command outside the sandbox.\n",
    "                    Phrased as a simple question that summarizes the purpose of the\n",
    "                    command as it relates to the task at hand - e.g. 'Do you want to\n",
    "                    fetch and pull the latest version of this git branch?'",
);

/// Codex: `codex-rs/tools/src/local_tool.rs`, `create_approval_parameters`.
const PREFIX_RULE_DESCRIPTION: &str = concat!(
    "Only specify when sandbox_permissions is `require_escalated`.\n",
    "                        Suggest a prefix command pattern that will allow you to fulfill similar requests from the user in the future.\n",
    "                        Should be a short but reasonable prefix, e.g. [\\\"git\\\", \\\"pull\\\"] or [\\\"uv\\\", \\\"run\\\"] or [\\\"pytest\\\"].",
);

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

/// The JSON form's description, Codex's `APPLY_PATCH_JSON_TOOL_DESCRIPTION`
/// (`codex-rs/tools/src/apply_patch_tool.rs`), character for character: its
/// non-breaking hyphens (U+2011), curly quotes and the tab in `@@ \t def`
/// are escaped here so they show.
pub const APPLY_PATCH_JSON_DESCRIPTION: &str = "Use the `apply_patch` tool to edit files.
Your patch language is a stripped\u{2011}down, file\u{2011}oriented diff format designed to be easy to parse and safe to apply. You can think of it as a high\u{2011}level envelope:

*** Begin Patch
[ one or more file sections ]
*** End Patch

Within that envelope, you get a sequence of file operations.
You MUST include a header to specify the action you are taking.
Each operation starts with one of three headers:

*** Add File: <path> - create a new file. Every following line is a + line (the initial contents).
*** Delete File: <path> - remove an existing file. Nothing follows.
*** Update File: <path> - patch an existing file in place (optionally with a rename).

May be immediately followed by *** Move to: <new path> if you want to rename the file.
Then one or more \u{201c}hunks\u{201d}, each introduced by @@ (optionally followed by a hunk header).
Within a hunk each line starts with:

For instructions on [context_before] and [context_after]:
- By default, show 3 lines of code immediately above and 3 lines immediately below each change. If a change is within 3 lines of a previous change, do NOT duplicate the first change\u{2019}s [context_after] lines in the second change\u{2019}s [context_before] lines.
- If 3 lines of context is insufficient to uniquely identify the snippet of code within the file, use the @@ operator to indicate the class or function to which the snippet belongs. For instance, we might have:
@@ class BaseClass
[3 lines of pre-context]
- [old_code]
+ [new_code]
[3 lines of post-context]

- If a code block is repeated so many times in a class or function such that even a single `@@` statement and 3 lines of context cannot uniquely identify the snippet of code, you can use multiple `@@` statements to jump to the right context. For instance:

@@ class BaseClass
@@ \t def method():
[3 lines of pre-context]
- [old_code]
+ [new_code]
[3 lines of post-context]

The full grammar definition is below:
Patch := Begin { FileOp } End
Begin := \"*** Begin Patch\" NEWLINE
End := \"*** End Patch\" NEWLINE
FileOp := AddFile | DeleteFile | UpdateFile
AddFile := \"*** Add File: \" path NEWLINE { \"+\" line NEWLINE }
DeleteFile := \"*** Delete File: \" path NEWLINE
UpdateFile := \"*** Update File: \" path NEWLINE [ MoveTo ] { Hunk }
MoveTo := \"*** Move to: \" newPath NEWLINE
Hunk := \"@@\" [ header ] NEWLINE { HunkLine } [ \"*** End of File\" NEWLINE ]
HunkLine := (\" \" | \"-\" | \"+\") text NEWLINE

A full patch can combine several operations:

*** Begin Patch
*** Add File: hello.txt
+Hello world
*** Update File: src/app.py
*** Move to: src/main.py
@@ def greet():
-print(\"Hi\")
+print(\"Hello, world!\")
*** Delete File: obsolete.txt
*** End Patch

It is important to remember:

- You must include a header with your intended action (Add/Delete/Update)
- You must prefix new lines with `+` even when creating a new file
- File references can only be relative, NEVER ABSOLUTE.
";

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
    /// Codex's own definitions of the tools (`codex_specs/<tool>.json`, each
    /// naming the Codex file and commit it was read from), compared with what
    /// `tool_specs` offers for each choice: same name, type, description and
    /// parameters (names, types, descriptions, `required`,
    /// `additionalProperties`), nothing more and nothing less.
    mod codex_parity {
        use super::*;

        fn fixture(tool: &str) -> Value {
            let text = match tool {
                "exec_command" => include_str!("codex_specs/exec_command.json"),
                "write_stdin" => include_str!("codex_specs/write_stdin.json"),
                "shell" => include_str!("codex_specs/shell.json"),
                "shell_command" => include_str!("codex_specs/shell_command.json"),
                "apply_patch_freeform" => include_str!("codex_specs/apply_patch_freeform.json"),
                "apply_patch_json" => include_str!("codex_specs/apply_patch_json.json"),
                "view_image" => include_str!("codex_specs/view_image.json"),
                "read_file" => include_str!("codex_specs/read_file.json"),
                "list_dir" => include_str!("codex_specs/list_dir.json"),
                "grep_files" => include_str!("codex_specs/grep_files.json"),
                other => panic!("no Codex fixture for {other}"),
            };
            serde_json::from_str(text).unwrap()
        }

        /// Codex's spec from `fixture`, with the properties Codex adds only
        /// under a condition added when that condition is in `conditions`.
        fn codex_spec(fixture_name: &str, conditions: &[&str]) -> Value {
            let fixture = fixture(fixture_name);
            let mut spec = fixture["spec"].clone();
            let conditional = fixture
                .get("conditional_properties")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            for (name, property) in conditional {
                let when = property["when"].as_str().unwrap();
                if conditions.contains(&when) {
                    spec["parameters"]["properties"][name.as_str()] = property["schema"].clone();
                }
            }
            spec
        }

        /// Keel never offers `login` conditionally: it has no
        /// `allow_login_shell` setting (docs/codex.md lists it as ignored)
        /// and always runs as Codex does by default, where
        /// `Config.allow_login_shell` is true and
        /// `create_exec_command_tool` / `create_shell_command_tool`
        /// (`codex-rs/tools/src/local_tool.rs`) add `login` under
        /// `if options.allow_login_shell`.
        const KEEL_CONDITIONS: &[&str] = &["allow_login_shell"];

        /// The approval parameters. Codex's current source adds them to
        /// every shell tool unconditionally (`create_approval_parameters` in
        /// `codex-rs/tools/src/local_tool.rs`, called by
        /// `create_shell_tool`, `create_shell_command_tool` and
        /// `create_exec_command_tool`); older Codex added them only when
        /// the session could ask for approval. Keel's worker always asks for
        /// them (`include_approval_parameters: true`); a ListTools caller
        /// that answers no approvals may leave them out, and then the spec
        /// is Codex's without exactly these three.
        const APPROVAL_PARAMETERS: [&str; 3] =
            ["sandbox_permissions", "justification", "prefix_rule"];

        fn without_approval_parameters(mut spec: Value) -> Value {
            let properties = spec["parameters"]["properties"].as_object_mut().unwrap();
            for name in APPROVAL_PARAMETERS {
                assert!(properties.remove(name).is_some(), "Codex's spec has {name}");
            }
            spec
        }

        /// Fails at the first place where `keel` and `codex` differ.
        fn assert_same(keel: &Value, codex: &Value, what: &str) {
            if let Some(difference) = keel_tool_model::spec_check::first_difference(keel, codex) {
                panic!("{what}: {difference}");
            }
        }

        fn keel_spec(options: &ToolOptions, tool: &str) -> Value {
            parsed(options)
                .into_iter()
                .find(|(name, _)| name == tool)
                .map(|(_, spec)| spec)
                .unwrap_or_else(|| panic!("{tool} is not offered with {options:?}"))
        }

        #[test]
        fn fixtures_name_their_codex_source() {
            for tool in [
                "exec_command",
                "write_stdin",
                "shell",
                "shell_command",
                "apply_patch_freeform",
                "apply_patch_json",
                "view_image",
                "read_file",
                "list_dir",
                "grep_files",
            ] {
                let fixture = fixture(tool);
                let source = fixture["source"].as_str().unwrap();
                assert!(
                    source.starts_with("codex-rs/") && source.contains(" @ "),
                    "{tool}: {source}"
                );
                assert!(fixture["spec"]["name"].is_string(), "{tool}");
            }
        }

        /// Codex offers `shell` for shell type `default`, `shell_command`
        /// for `shell_command`, and `exec_command` with `write_stdin` for
        /// unified exec (`codex-rs/tools/src/tool_registry_plan.rs`).
        #[test]
        fn each_shell_tool_choice_offers_codexs_specs() {
            for (shell, tools) in [
                (ShellTool::Shell, &["shell"][..]),
                (ShellTool::ShellCommand, &["shell_command"][..]),
                (ShellTool::UnifiedExec, &["exec_command", "write_stdin"][..]),
            ] {
                for approval_parameters in [true, false] {
                    let options = ToolOptions {
                        shell,
                        apply_patch: ApplyPatchTool::None,
                        approval_parameters,
                        ..Default::default()
                    };
                    assert_eq!(names(&options), tools, "{options:?}");
                    for &tool in tools {
                        let mut codex = codex_spec(tool, KEEL_CONDITIONS);
                        // write_stdin has no approval parameters in Codex.
                        if !approval_parameters && tool != "write_stdin" {
                            codex = without_approval_parameters(codex);
                        }
                        let keel = keel_spec(&options, tool);
                        assert_same(
                            &keel,
                            &codex,
                            &format!("{tool} (approvals {approval_parameters})"),
                        );
                    }
                }
            }
        }

        #[test]
        fn each_apply_patch_choice_offers_codexs_spec() {
            for (apply_patch, fixture_name) in [
                (ApplyPatchTool::Freeform, "apply_patch_freeform"),
                (ApplyPatchTool::Json, "apply_patch_json"),
            ] {
                let options = ToolOptions {
                    shell: ShellTool::None,
                    apply_patch,
                    ..Default::default()
                };
                assert_eq!(names(&options), ["apply_patch"]);
                let keel = keel_spec(&options, "apply_patch");
                assert_same(&keel, &codex_spec(fixture_name, &[]), fixture_name);
            }
        }

        /// `detail` only where the session may ask for original detail, as
        /// Codex's `create_view_image_tool` adds it only with
        /// `can_request_original_image_detail`
        /// (`codex-rs/tools/src/view_image.rs`).
        #[test]
        fn view_image_with_and_without_detail_offers_codexs_spec() {
            for (original_detail, conditions) in [
                (false, &[][..]),
                (true, &["can_request_original_image_detail"][..]),
            ] {
                let options = ToolOptions {
                    shell: ShellTool::None,
                    apply_patch: ApplyPatchTool::None,
                    view_image: true,
                    view_image_original_detail: original_detail,
                    ..Default::default()
                };
                assert_eq!(names(&options), ["view_image"]);
                let keel = keel_spec(&options, "view_image");
                assert_same(
                    &keel,
                    &codex_spec("view_image", conditions),
                    &format!("view_image (detail {original_detail})"),
                );
            }
        }

        #[test]
        fn file_tools_offer_codexs_specs() {
            let options = ToolOptions {
                shell: ShellTool::None,
                apply_patch: ApplyPatchTool::None,
                file_tools: true,
                ..Default::default()
            };
            assert_eq!(names(&options), ["grep_files", "list_dir", "read_file"]);
            for tool in ["grep_files", "list_dir", "read_file"] {
                assert_same(&keel_spec(&options, tool), &codex_spec(tool, &[]), tool);
            }
        }

        /// The whole default selection at once, approvals on, as a session
        /// with Codex's default tools gets it.
        #[test]
        fn full_selection_matches_codex_tool_by_tool() {
            let options = ToolOptions {
                shell: ShellTool::UnifiedExec,
                apply_patch: ApplyPatchTool::Freeform,
                view_image: true,
                view_image_original_detail: false,
                file_tools: true,
                approval_parameters: true,
            };
            for (name, keel) in parsed(&options) {
                let fixture_name = if name == "apply_patch" {
                    "apply_patch_freeform"
                } else {
                    name.as_str()
                };
                assert_same(&keel, &codex_spec(fixture_name, KEEL_CONDITIONS), &name);
            }
        }
    }
}
