//! Tool calls end to end (short of gRPC): arguments in, model text out, on
//! real temporary directories.

use std::fs;
use std::path::PathBuf;

use super::*;

/// A workspace root with a session cwd inside it.
pub(crate) struct Harness {
    _tmp: tempfile::TempDir,
    pub root: PathBuf,
    pub executor: Executor,
    pub workspace: Workspace,
    pub processes: ProcessRegistry,
    pub sandbox: CallSandbox,
}

impl Harness {
    pub(crate) fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(tmp.path()).unwrap();
        Self {
            workspace: Workspace::restricted(std::slice::from_ref(&root)).unwrap(),
            executor: Executor::with_inherited_env(std::env::vars_os()),
            processes: ProcessRegistry::default(),
            sandbox: CallSandbox::unrestricted(),
            root,
            _tmp: tmp,
        }
    }

    fn ctx(&self) -> ToolContext<'_> {
        ToolContext {
            executor: &self.executor,
            policy: TruncationPolicy::default(),
            workspace: &self.workspace,
            processes: &self.processes,
            process_scope: "s1",
            cwd: &self.root,
            user_shell: "sh",
            sandbox: &self.sandbox,
        }
    }

    async fn call(&self, name: &str, arguments: &str) -> ToolOutcome {
        run_tool(
            &self.ctx(),
            ToolCall {
                name,
                arguments,
                custom: false,
                invocation: None,
            },
        )
        .await
    }

    async fn custom(&self, name: &str, input: &str) -> ToolOutcome {
        run_tool(
            &self.ctx(),
            ToolCall {
                name,
                arguments: input,
                custom: true,
                invocation: None,
            },
        )
        .await
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.root.join(name);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, text).unwrap();
        path
    }
}

fn output_json(outcome: &ToolOutcome) -> serde_json::Value {
    serde_json::from_str(&outcome.text)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", outcome.text))
}

/// `Wall time: <s> seconds` varies; replace the number.
fn without_wall_time(text: &str) -> String {
    let trailing = if text.ends_with('\n') { "\n" } else { "" };
    let body = text
        .lines()
        .map(|line| {
            if line.starts_with("Wall time: ") {
                "Wall time: X seconds"
            } else if line.starts_with("Chunk ID: ") {
                "Chunk ID: X"
            } else {
                line
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    body + trailing
}

fn session_id_of(text: &str) -> i32 {
    text.lines()
        .find_map(|l| l.strip_prefix("Process running with session ID "))
        .unwrap_or_else(|| panic!("no session id in {text}"))
        .parse()
        .unwrap()
}

// ---- shell (argv) ----

#[tokio::test]
async fn shell_success_has_the_structured_layout() {
    let h = Harness::new();
    let out = h
        .call("shell", r#"{"command":["sh","-c","echo hi"]}"#)
        .await;
    assert!(out.success);
    let json = output_json(&out);
    assert_eq!(json["output"], "hi\n");
    assert_eq!(json["metadata"]["exit_code"], 0);
    assert!(json["metadata"]["duration_seconds"].is_f64());
    let record = out.command.unwrap();
    assert_eq!(record.command, ["sh", "-c", "echo hi"]);
    assert_eq!(record.cwd, h.root);
    assert_eq!(record.aggregated_output, "hi\n");
}

#[tokio::test]
async fn aliases_run_the_same_tool() {
    let h = Harness::new();
    for tool in ["container.exec", "local_shell"] {
        let out = h.call(tool, r#"{"command":["sh","-c","exit 0"]}"#).await;
        assert!(out.success, "{tool}: {}", out.text);
    }
}

#[tokio::test]
async fn non_zero_exit_and_timeout_are_failures() {
    let h = Harness::new();
    let out = h
        .call("shell", r#"{"command":["sh","-c","echo no >&2; exit 2"]}"#)
        .await;
    assert!(!out.success);
    assert_eq!(output_json(&out)["metadata"]["exit_code"], 2);
    assert_eq!(output_json(&out)["output"], "no\n");

    let out = h
        .call("shell", r#"{"command":["sleep","30"],"timeout_ms":200}"#)
        .await;
    assert!(!out.success);
    let json = output_json(&out);
    assert_eq!(json["metadata"]["exit_code"], 124);
    let body = json["output"].as_str().unwrap();
    assert!(body.starts_with("command timed out after "), "{body}");
    assert!(body.ends_with(" milliseconds\n"), "{body}");
}

#[tokio::test]
async fn relative_workdir_resolves_against_the_session_cwd() {
    let h = Harness::new();
    fs::create_dir(h.root.join("sub")).unwrap();
    let out = h
        .call("shell", r#"{"command":["pwd"],"workdir":"sub"}"#)
        .await;
    assert!(out.success, "{}", out.text);
    assert_eq!(out.command.unwrap().cwd, h.root.join("sub"));
}

#[tokio::test]
async fn model_errors_are_outputs_not_rpc_errors() {
    let h = Harness::new();
    let out = h.call("frobnicate", "{}").await;
    assert_eq!(out.text, "unsupported call: frobnicate");
    assert!(!out.success && out.command.is_none());

    let out = h.custom("shell", "ls").await;
    assert_eq!(out.text, "unsupported custom tool call: shell");

    let out = h.call("shell", r#"{"cmd":"ls"}"#).await;
    assert!(
        out.text
            .starts_with("failed to parse function arguments: missing field `command`")
    );
    assert!(!out.success);

    let out = h
        .call("shell", r#"{"command":["true"],"workdir":"missing"}"#)
        .await;
    assert_eq!(
        out.text,
        r#"execution error: Io(Os { code: 2, kind: NotFound, message: "No such file or directory" })"#
    );
    assert!(!out.success && out.command.is_none());
}

// ---- shell_command ----

#[tokio::test]
async fn shell_command_uses_the_freeform_layout() {
    let h = Harness::new();
    let out = h
        .call(
            "shell_command",
            r#"{"command":"echo one; echo two >&2; exit 3"}"#,
        )
        .await;
    assert!(!out.success);
    let text = without_wall_time(&out.text);
    assert!(
        text == "Exit code: 3\nWall time: X seconds\nOutput:\none\ntwo\n"
            || text == "Exit code: 3\nWall time: X seconds\nOutput:\ntwo\none\n",
        "{text}"
    );
    assert_eq!(
        out.command.unwrap().command,
        ["sh", "-lc", "echo one; echo two >&2; exit 3"]
    );
    let out = h
        .call("shell_command", r#"{"command":"pwd","login":false}"#)
        .await;
    assert!(out.success);
    assert_eq!(
        without_wall_time(&out.text),
        format!(
            "Exit code: 0\nWall time: X seconds\nOutput:\n{}\n",
            h.root.display()
        )
    );
}

// ---- workspace checks ----

#[tokio::test]
async fn workdirs_outside_the_workspace_are_refused() {
    let h = Harness::new();
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), h.root.join("link")).unwrap();
    let abs = serde_json::to_string(&outside.path().display().to_string()).unwrap();
    for workdir in ["\"..\"".to_string(), abs, "\"link\"".to_string()] {
        for (tool, args) in [
            (
                "shell",
                format!(r#"{{"command":["pwd"],"workdir":{workdir}}}"#),
            ),
            (
                "shell_command",
                format!(r#"{{"command":"pwd","workdir":{workdir}}}"#),
            ),
            (
                "exec_command",
                format!(r#"{{"cmd":"pwd","workdir":{workdir}}}"#),
            ),
        ] {
            let out = h.call(tool, &args).await;
            assert!(!out.success, "{tool} {workdir}: {}", out.text);
            assert!(
                out.text.starts_with("access denied: "),
                "{tool} {workdir}: {}",
                out.text
            );
            assert!(out.command.is_none());
        }
    }
}

#[tokio::test]
async fn file_tools_refuse_paths_outside() {
    let h = Harness::new();
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("secret.txt"), "s").unwrap();
    std::os::unix::fs::symlink(outside.path(), h.root.join("link")).unwrap();
    let secret = outside.path().join("secret.txt");
    let through_link = h.root.join("link/secret.txt");
    let dotdot = h
        .root
        .join("../")
        .join(outside.path().file_name().unwrap())
        .join("secret.txt");
    for path in [&secret, &through_link, &dotdot] {
        let p = serde_json::to_string(&path.display().to_string()).unwrap();
        let dir = serde_json::to_string(&path.parent().unwrap().display().to_string()).unwrap();
        for (tool, args) in [
            ("read_file", format!(r#"{{"file_path":{p}}}"#)),
            ("list_dir", format!(r#"{{"dir_path":{dir}}}"#)),
            ("grep_files", format!(r#"{{"pattern":"s","path":{dir}}}"#)),
            ("view_image", format!(r#"{{"path":{p}}}"#)),
        ] {
            let out = h.call(tool, &args).await;
            assert!(!out.success, "{tool} {p}: {}", out.text);
            assert!(
                out.text.starts_with("access denied: "),
                "{tool} {p}: {}",
                out.text
            );
        }
    }
}

// ---- exec_command / write_stdin ----

#[tokio::test]
async fn exec_command_that_finishes_within_the_yield() {
    let h = Harness::new();
    let out = h
        .call("exec_command", r#"{"cmd":"echo hello; exit 4"}"#)
        .await;
    assert!(out.success, "the exit code is in the text, not the flag");
    assert_eq!(
        without_wall_time(&out.text),
        "Chunk ID: X\nWall time: X seconds\nProcess exited with code 4\nOutput:\nhello\n"
    );
    let chunk = out
        .text
        .lines()
        .next()
        .unwrap()
        .trim_start_matches("Chunk ID: ");
    assert_eq!(chunk.len(), 6);
    let wall = out.text.lines().nth(1).unwrap();
    let secs = wall
        .trim_start_matches("Wall time: ")
        .trim_end_matches(" seconds");
    assert_eq!(secs.split('.').nth(1).map(str::len), Some(4), "{wall}");
    let record = out.command.unwrap();
    assert_eq!((record.exit_code, record.process_id), (4, None));
    assert_eq!(record.command, ["sh", "-lc", "echo hello; exit 4"]);
    assert!(h.processes.is_empty());
}

/// The body after `Output:\n`.
fn body_of(text: &str) -> &str {
    text.split_once("Output:\n").map_or("", |(_, body)| body)
}

#[tokio::test]
async fn long_running_process_continues_with_write_stdin() {
    let h = Harness::new();
    // The process cannot exit before it has read two lines, so whatever the
    // timing, the first two calls find it running; only the concatenated
    // output is fixed.
    let out = h
        .call(
            "exec_command",
            r#"{"cmd":"echo ready; read a; echo got $a; read b; echo bye $b","tty":true,"yield_time_ms":250}"#,
        )
        .await;
    assert!(out.success);
    let id = session_id_of(&out.text);
    assert_eq!(out.command.as_ref().unwrap().process_id, Some(id));
    assert_eq!(h.processes.len(), 1);
    let mut output = body_of(&out.text).to_string();

    let out = h
        .call(
            "write_stdin",
            &format!(r#"{{"session_id":{id},"chars":"one\n"}}"#),
        )
        .await;
    assert_eq!(session_id_of(&out.text), id);
    output.push_str(body_of(&out.text));

    // A write waits at most 30 s, and returns as soon as the process exits.
    let out = h
        .call(
            "write_stdin",
            &format!(r#"{{"session_id":{id},"chars":"two\n","yield_time_ms":30000}}"#),
        )
        .await;
    assert!(
        out.text.contains("\nProcess exited with code 0\n"),
        "{}",
        out.text
    );
    assert!(!out.text.contains("Process running"), "{}", out.text);
    output.push_str(body_of(&out.text));
    assert_eq!(output, "ready\ngot one\nbye two\n");
    assert!(h.processes.is_empty(), "an exited process is forgotten");

    let out = h
        .call("write_stdin", &format!(r#"{{"session_id":{id}}}"#))
        .await;
    assert_eq!(
        out.text,
        format!("write_stdin failed: Unknown process id {id}")
    );
    assert!(!out.success);
}

#[tokio::test]
async fn write_stdin_without_tty_and_polling() {
    let h = Harness::new();
    // The process waits for a file the test creates: no race with the yield.
    let out = h
        .call(
            "exec_command",
            r#"{"cmd":"while [ ! -e go ]; do sleep 0.02; done; echo late","yield_time_ms":250}"#,
        )
        .await;
    let id = session_id_of(&out.text);
    let out = h
        .call(
            "write_stdin",
            &format!(r#"{{"session_id":{id},"chars":"x"}}"#),
        )
        .await;
    assert_eq!(
        out.text,
        "write_stdin failed: stdin is closed for this session; rerun exec_command with tty=true to keep stdin open"
    );
    fs::write(h.root.join("go"), "").unwrap();
    // An empty poll waits until the process ends (or the yield passes).
    let out = h
        .call(
            "write_stdin",
            &format!(r#"{{"session_id":{id},"yield_time_ms":60000}}"#),
        )
        .await;
    assert!(
        out.text.contains("Process exited with code 0"),
        "{}",
        out.text
    );
    assert!(out.text.ends_with("Output:\nlate\n"), "{}", out.text);
}

#[tokio::test]
async fn sessions_cannot_reach_each_others_processes() {
    let h = Harness::new();
    let out = h
        .call("exec_command", r#"{"cmd":"sleep 30","yield_time_ms":250}"#)
        .await;
    let id = session_id_of(&out.text);
    let other = ToolContext {
        process_scope: "s2",
        ..h.ctx()
    };
    let args = format!(r#"{{"session_id":{id}}}"#);
    let call = ToolCall {
        name: "write_stdin",
        arguments: &args,
        custom: false,
        invocation: None,
    };
    let out = run_tool(&other, call).await;
    assert_eq!(
        out.text,
        format!("write_stdin failed: Unknown process id {id}")
    );
    assert_eq!(h.processes.close_session("s1"), 1);
}

/// A sub-agent's processes are its own; closing the session closes them.
#[tokio::test]
async fn agents_cannot_reach_each_others_processes() {
    let h = Harness::new();
    let agent = ToolContext {
        process_scope: "s1/a1",
        ..h.ctx()
    };
    let start = ToolCall {
        name: "exec_command",
        arguments: r#"{"cmd":"sleep 30","yield_time_ms":250}"#,
        custom: false,
        invocation: None,
    };
    let id = session_id_of(&run_tool(&agent, start).await.text);
    let args = format!(r#"{{"session_id":{id}}}"#);
    let poll = ToolCall {
        name: "write_stdin",
        arguments: &args,
        custom: false,
        invocation: None,
    };
    let unknown = format!("write_stdin failed: Unknown process id {id}");
    // Neither the session's own agent nor another sub-agent reaches it.
    for scope in ["s1", "s1/a2"] {
        let other = ToolContext {
            process_scope: scope,
            ..h.ctx()
        };
        assert_eq!(run_tool(&other, poll).await.text, unknown, "{scope}");
    }
    assert_ne!(run_tool(&agent, poll).await.text, unknown);
    // Another session whose id starts the same is not closed with s1.
    assert_eq!(h.processes.close_session("s"), 0);
    assert_eq!(h.processes.close_session("s1"), 1);
}

#[tokio::test]
async fn exec_command_errors() {
    let h = Harness::new();
    let out = h
        .call(
            "exec_command",
            r#"{"cmd":"true","shell":"/nonexistent/shell"}"#,
        )
        .await;
    assert!(!out.success);
    assert_eq!(
        out.text,
        "exec_command failed for `/nonexistent/shell -lc true`: CreateProcess { message: \"No such file or directory (os error 2)\" }"
    );
    let out = h.call("exec_command", r#"{"cmd":1}"#).await;
    assert!(
        out.text
            .starts_with("failed to parse function arguments: invalid type: integer"),
        "{}",
        out.text
    );
}

#[tokio::test]
async fn exec_command_output_is_truncated_to_max_output_tokens() {
    let h = Harness::new();
    let out = h
        .call(
            "exec_command",
            r#"{"cmd":"i=0; while [ $i -lt 100 ]; do echo line$i; i=$((i+1)); done","max_output_tokens":10}"#,
        )
        .await;
    assert!(
        out.text.contains("\nOriginal token count: "),
        "{}",
        out.text
    );
    assert!(
        out.text
            .contains("Output:\nTotal output lines: 100\n\nline0\n"),
        "{}",
        out.text
    );
    assert!(out.text.contains("tokens truncated"), "{}", out.text);
}

// ---- apply_patch ----

const ADD_PATCH: &str = "*** Begin Patch\n*** Add File: hello.txt\n+hello\n*** End Patch";

#[tokio::test]
async fn freeform_apply_patch() {
    let h = Harness::new();
    let out = h.custom("apply_patch", ADD_PATCH).await;
    assert!(out.success, "{}", out.text);
    assert_eq!(
        without_wall_time(&out.text),
        "Exit code: 0\nWall time: X seconds\nOutput:\nSuccess. Updated the following files:\nA hello.txt\n"
    );
    assert_eq!(
        fs::read_to_string(h.root.join("hello.txt")).unwrap(),
        "hello\n"
    );
}

#[tokio::test]
async fn json_apply_patch_and_its_alias() {
    let h = Harness::new();
    h.write("a.txt", "one\n");
    let args = serde_json::json!({"input": "*** Begin Patch\n*** Update File: a.txt\n@@\n-one\n+two\n*** End Patch"});
    let out = h.call("apply_patch", &args.to_string()).await;
    assert!(out.success, "{}", out.text);
    let json = output_json(&out);
    assert_eq!(
        json["output"],
        "Success. Updated the following files:\nM a.txt\n"
    );
    assert_eq!(json["metadata"]["exit_code"], 0);
    let args =
        serde_json::json!({"patch": "*** Begin Patch\n*** Delete File: a.txt\n*** End Patch"});
    let out = h.call("apply_patch", &args.to_string()).await;
    assert_eq!(
        output_json(&out)["output"],
        "Success. Updated the following files:\nD a.txt\n"
    );
    let out = h.call("apply_patch", r#"{"diff":"x"}"#).await;
    assert_eq!(
        out.text,
        "failed to parse function arguments: missing field `input` at line 1 column 12"
    );
}

#[tokio::test]
async fn apply_patch_refusals_are_plain_text() {
    let h = Harness::new();
    let out = h
        .custom("apply_patch", "*** Begin Patch\n*** End Patch")
        .await;
    assert_eq!(
        (out.text.as_str(), out.success),
        ("patch rejected: empty patch", false)
    );
    let out = h.custom("apply_patch", "not a patch").await;
    assert_eq!(
        out.text,
        "apply_patch verification failed: Invalid patch: The first line of the patch must be '*** Begin Patch'"
    );
    let out = h
        .custom(
            "apply_patch",
            "*** Begin Patch\n*** Add File: ../x.txt\n+x\n*** End Patch",
        )
        .await;
    assert!(
        out.text.starts_with("patch rejected: access denied: "),
        "{}",
        out.text
    );
}

#[tokio::test]
async fn apply_patch_through_shell_tools() {
    let h = Harness::new();
    fs::create_dir(h.root.join("sub")).unwrap();
    let script = format!("cd sub && apply_patch <<'EOF'\n{ADD_PATCH}\nEOF\n");
    let args = serde_json::json!({"command": ["bash", "-lc", script]});
    let out = h.call("shell", &args.to_string()).await;
    assert!(out.success, "{}", out.text);
    assert_eq!(
        output_json(&out)["output"],
        "Success. Updated the following files:\nA hello.txt\n"
    );
    assert!(h.root.join("sub/hello.txt").exists());

    let args =
        serde_json::json!({"command": ["apply_patch", ADD_PATCH.replace("hello", "direct")]});
    let out = h.call("shell", &args.to_string()).await;
    assert!(out.success, "{}", out.text);
    assert!(h.root.join("direct.txt").exists());

    let args = serde_json::json!({"command": format!("apply_patch <<'EOF'\n{}\nEOF", ADD_PATCH.replace("hello", "viacmd"))});
    let out = h.call("shell_command", &args.to_string()).await;
    assert!(out.text.starts_with("Exit code: 0\n"), "{}", out.text);
    assert!(h.root.join("viacmd.txt").exists());

    let args = serde_json::json!({"cmd": format!("apply_patch <<'EOF'\n{}\nEOF", ADD_PATCH.replace("hello", "viaexec"))});
    let out = h.call("exec_command", &args.to_string()).await;
    assert!(
        out.text
            .starts_with("Wall time: 0.0000 seconds\nOutput:\nExit code: 0\n"),
        "{}",
        out.text
    );
    assert!(
        out.text
            .ends_with(unified_exec::APPLY_PATCH_VIA_EXEC_WARNING),
        "{}",
        out.text
    );
    assert!(h.root.join("viaexec.txt").exists());

    let args = serde_json::json!({"command": [ADD_PATCH]});
    let out = h.call("shell", &args.to_string()).await;
    assert_eq!(
        out.text,
        "apply_patch verification failed: patch detected without explicit call to apply_patch. Rerun as [\"apply_patch\", \"<patch>\"]"
    );
    let args = serde_json::json!({"command": ["apply_patch", "garbage"]});
    let out = h.call("shell", &args.to_string()).await;
    assert!(
        out.text
            .starts_with("apply_patch verification failed: Invalid patch:"),
        "{}",
        out.text
    );
}

// ---- read_file / list_dir / grep_files ----

#[tokio::test]
async fn read_file_outputs() {
    let h = Harness::new();
    let path = h.write("f.txt", "alpha\nbeta\ngamma\n");
    let args = serde_json::json!({"file_path": path, "offset": 2, "limit": 5});
    let out = h.call("read_file", &args.to_string()).await;
    assert_eq!(
        (out.text.as_str(), out.success),
        ("L2: beta\nL3: gamma", true)
    );
    for (args, text) in [
        (
            serde_json::json!({"file_path": "f.txt"}),
            "file_path must be an absolute path",
        ),
        (
            serde_json::json!({"file_path": path, "offset": 0}),
            "offset must be a 1-indexed line number",
        ),
        (
            serde_json::json!({"file_path": path, "limit": 0}),
            "limit must be greater than zero",
        ),
        (
            serde_json::json!({"file_path": path, "offset": 9}),
            "offset exceeds file length",
        ),
        (
            serde_json::json!({"file_path": h.root.join("none.txt")}),
            "failed to read file: No such file or directory (os error 2)",
        ),
    ] {
        let out = h.call("read_file", &args.to_string()).await;
        assert_eq!((out.text.as_str(), out.success), (text, false), "{args}");
    }
}

/// A FIFO would block the read waiting for a writer and a device would
/// never end: neither is read. A huge file is read up to the cap.
#[tokio::test]
async fn read_file_reads_regular_files_and_only_so_much_of_them() {
    let h = Harness::new();
    let fifo = h.root.join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    // (A device such as /dev/zero takes the same path: not a regular file.)
    for path in [fifo.clone()] {
        let args = serde_json::json!({"file_path": path});
        let out = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            h.call("read_file", &args.to_string()),
        )
        .await
        .expect("read_file returned");
        assert_eq!(
            (out.text.as_str(), out.success),
            ("failed to read file: not a regular file", false),
            "{}",
            path.display()
        );
    }
    let args = serde_json::json!({"file_path": h.root});
    let out = h.call("read_file", &args.to_string()).await;
    assert_eq!(
        out.text,
        "failed to read file: Is a directory (os error 21)"
    );
    // A sparse file past the cap: its first lines read, later ones out of reach.
    let big = h.write("big.log", "first\nsecond\n");
    let file = std::fs::OpenOptions::new().write(true).open(&big).unwrap();
    file.set_len(super::read_file::MAX_READ_BYTES * 2).unwrap();
    let args = serde_json::json!({"file_path": big, "limit": 2});
    let out = h.call("read_file", &args.to_string()).await;
    assert_eq!(
        (out.text.as_str(), out.success),
        ("L1: first\nL2: second", true)
    );
    let args = serde_json::json!({"file_path": big, "offset": 999_999_999});
    let out = h.call("read_file", &args.to_string()).await;
    assert!(!out.success);
    assert!(
        out.text
            .starts_with("offset exceeds file length: read_file reads the first 32 MiB"),
        "{}",
        out.text
    );
}

#[tokio::test]
async fn list_dir_outputs() {
    let h = Harness::new();
    h.write("b.txt", "");
    h.write("a/inner.txt", "");
    let args = serde_json::json!({"dir_path": h.root});
    let out = h.call("list_dir", &args.to_string()).await;
    assert_eq!(
        out.text,
        format!(
            "Absolute path: {}\na/\n  inner.txt\nb.txt",
            h.root.display()
        )
    );
    for (args, text) in [
        (
            serde_json::json!({"dir_path": "rel"}),
            "dir_path must be an absolute path",
        ),
        (
            serde_json::json!({"dir_path": h.root, "offset": 0}),
            "offset must be a 1-indexed entry number",
        ),
        (
            serde_json::json!({"dir_path": h.root, "limit": 0}),
            "limit must be greater than zero",
        ),
        (
            serde_json::json!({"dir_path": h.root, "depth": 0}),
            "depth must be greater than zero",
        ),
        (
            serde_json::json!({"dir_path": h.root, "offset": 10}),
            "offset exceeds directory entry count",
        ),
    ] {
        let out = h.call("list_dir", &args.to_string()).await;
        assert_eq!((out.text.as_str(), out.success), (text, false), "{args}");
    }
}

#[tokio::test]
async fn grep_files_outputs() {
    let h = Harness::new();
    let hit = h.write("src/hit.rs", "fn needle() {}\n");
    h.write("src/miss.rs", "fn other() {}\n");
    let out = h.call("grep_files", r#"{"pattern":"needle"}"#).await;
    assert_eq!(
        (out.text.clone(), out.success),
        (hit.display().to_string(), true)
    );
    let out = h
        .call(
            "grep_files",
            r#"{"pattern":"needle","path":"src","include":"*.rs","limit":1}"#,
        )
        .await;
    assert_eq!(out.text, hit.display().to_string());
    let out = h.call("grep_files", r#"{"pattern":"absent"}"#).await;
    assert_eq!(
        (out.text.as_str(), out.success),
        ("No matches found.", false)
    );
    let out = h.call("grep_files", r#"{"pattern":"  "}"#).await;
    assert_eq!(out.text, "pattern must not be empty");
    let out = h.call("grep_files", r#"{"pattern":"x","limit":0}"#).await;
    assert_eq!(out.text, "limit must be greater than zero");
    let out = h
        .call("grep_files", r#"{"pattern":"x","path":"nope"}"#)
        .await;
    assert_eq!(
        out.text,
        format!(
            "unable to access `{}`: No such file or directory (os error 2)",
            h.root.join("nope").display()
        )
    );
    let out = h.call("grep_files", r#"{"pattern":"("}"#).await;
    assert!(
        out.text.starts_with("rg failed: regex parse error"),
        "{}",
        out.text
    );
}

// ---- view_image ----

fn png(width: u32, height: u32) -> Vec<u8> {
    let img = image::RgbaImage::from_pixel(width, height, image::Rgba([1, 2, 3, 255]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

#[tokio::test]
async fn view_image_output_is_a_content_item_array() {
    let h = Harness::new();
    let bytes = png(8, 4);
    fs::write(h.root.join("pic.png"), &bytes).unwrap();
    let out = h.call("view_image", r#"{"path":"pic.png"}"#).await;
    assert!(out.success, "{}", out.text);
    let items = out.items.unwrap();
    assert_eq!(items.len(), 1);
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(&bytes);
    assert_eq!(
        items[0],
        serde_json::json!({
            "type": "input_image",
            "image_url": format!("data:image/png;base64,{encoded}"),
            "detail": "high",
        })
    );
    assert_eq!(
        out.text,
        format!("[image image/png 8x4, {} bytes, detail high]", bytes.len())
    );
    let out = h
        .call("view_image", r#"{"path":"pic.png","detail":"original"}"#)
        .await;
    assert_eq!(out.items.unwrap()[0]["detail"], "original");
}

#[tokio::test]
async fn view_image_errors() {
    let h = Harness::new();
    fs::create_dir(h.root.join("dir")).unwrap();
    fs::write(h.root.join("junk.png"), "junk").unwrap();
    let missing = h.root.join("none.png");
    for (args, text) in [
        (
            r#"{"path":"none.png"}"#.to_string(),
            format!("unable to locate image at `{}`: No such file or directory (os error 2)", missing.display()),
        ),
        (
            r#"{"path":"dir"}"#.to_string(),
            format!("image path `{}` is not a file", h.root.join("dir").display()),
        ),
        (
            r#"{"path":"junk.png","detail":"low"}"#.to_string(),
            "view_image.detail only supports `original`; omit `detail` for default resized behavior, got `low`".to_string(),
        ),
    ] {
        let out = h.call("view_image", &args).await;
        assert_eq!((out.text.as_str(), out.success), (text.as_str(), false), "{args}");
        assert!(out.items.is_none());
    }
    let out = h.call("view_image", r#"{"path":"junk.png"}"#).await;
    assert!(
        out.text.starts_with(&format!(
            "unable to process image at `{}`: ",
            h.root.join("junk.png").display()
        )),
        "{}",
        out.text
    );
}

#[test]
fn shlex_join_quotes_what_a_shell_would_split() {
    let argv: Vec<String> = ["bash", "-lc", "echo 'hi' there", "a=b"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(
        shlex_join(&argv),
        r#"bash -lc 'echo '"'"'hi'"'"' there' a=b"#
    );
    assert_eq!(shlex_join(&[String::new()]), "''");
}
