//! What each command-family call runs, including the arguments a hostile
//! model writes to make the decided command differ from the executed one.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::collections::BTreeMap;

use keel_tool_model::{
    CommandInvocation, Escalation, Invocation, Layout, PatchInvocation, PatchOutput, RunMode,
    SandboxPermissions, WriteStdinInvocation, parse_call,
};

const CWD: &str = "/work/repo";
const PATCH: &str = "*** Begin Patch\n*** Add File: a.txt\n+hi\n*** End Patch";

fn call(name: &str, arguments: &str) -> Result<keel_tool_model::ParsedCall, String> {
    parse_call(name, arguments, CWD, "/bin/bash").expect("a command-family tool")
}

fn command(name: &str, arguments: &str) -> CommandInvocation {
    match call(name, arguments).unwrap().invocation {
        Invocation::Command(c) => c,
        other => panic!("not a command: {other:?}"),
    }
}

fn strings(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

#[test]
fn shell_runs_its_argv_in_the_resolved_workdir() {
    let parsed = call(
        "shell",
        r#"{"command":["bash","-lc","ls"],"workdir":"sub/../other","timeout_ms":500,
            "sandbox_permissions":"require_escalated","justification":"why",
            "prefix_rule":["ls"],"additional_permissions":{"network":{"enabled":true}},
            "unknown_field":1}"#,
    )
    .unwrap();
    assert_eq!(
        parsed.invocation,
        Invocation::Command(CommandInvocation {
            argv: strings(&["bash", "-lc", "ls"]),
            cwd: "/work/repo/other".into(),
            env: BTreeMap::new(),
            run: RunMode::Complete {
                timeout_ms: Some(500),
                layout: Layout::Structured
            },
        })
    );
    assert_eq!(
        parsed.escalation,
        Escalation {
            sandbox_permissions: SandboxPermissions::RequireEscalated,
            justification: Some("why".into()),
            prefix_rule: Some(strings(&["ls"])),
        }
    );
    // The old name, and `timeout` as an alias.
    let c = command("container.exec", r#"{"command":["true"],"timeout":42}"#);
    assert_eq!(c.cwd, CWD);
    assert_eq!(
        c.run,
        RunMode::Complete {
            timeout_ms: Some(42),
            layout: Layout::Structured
        }
    );
}

#[test]
fn bad_arguments_give_codex_parse_errors() {
    assert_eq!(
        call("shell", r#"{"workdir":"/tmp"}"#).unwrap_err(),
        "failed to parse function arguments: missing field `command` at line 1 column 18"
    );
    assert_eq!(
        call("shell", r#"{"command":"ls -la"}"#).unwrap_err(),
        "failed to parse function arguments: invalid type: string \"ls -la\", expected a sequence at line 1 column 19"
    );
    assert_eq!(
        call("shell", r#"{"command":[]}"#).unwrap_err(),
        "failed to parse function arguments: command must not be empty"
    );
    assert!(call("local_shell", r#"{"command":[]}"#).is_err());
    let err = call(
        "shell",
        r#"{"command":["ls"],"sandbox_permissions":"root"}"#,
    )
    .unwrap_err();
    assert!(err.contains("unknown variant `root`"), "{err}");
    assert_eq!(
        call("shell_command", r#"{"command":["ls"]}"#).unwrap_err(),
        "failed to parse function arguments: invalid type: sequence, expected a string at line 1 column 11"
    );
    assert_eq!(
        call("exec_command", r#"{"command":"ls"}"#).unwrap_err(),
        "failed to parse function arguments: missing field `cmd` at line 1 column 16"
    );
    let err = call("write_stdin", r#"{"session_id":"x"}"#).unwrap_err();
    assert!(
        err.starts_with("failed to parse function arguments: invalid type: string"),
        "{err}"
    );
    assert!(parse_call("read_file", "{}", CWD, "bash").is_none());
}

#[test]
fn exec_commands_shell_is_the_program_that_runs() {
    // Judged as `bash -lc true` before; the argv says what really runs.
    let c = command("exec_command", r#"{"cmd":"true","shell":"./evil.sh"}"#);
    assert_eq!(c.argv, strings(&["./evil.sh", "-lc", "true"]));
    let c = command("exec_command", r#"{"cmd":"true","shell":""}"#);
    assert_eq!(c.argv, strings(&["/bin/bash", "-lc", "true"]));
    let c = command(
        "exec_command",
        r#"{"cmd":"cargo test","workdir":"/elsewhere","tty":true,"yield_time_ms":5,"max_output_tokens":7,"login":false}"#,
    );
    assert_eq!(c.argv, strings(&["/bin/bash", "-c", "cargo test"]));
    assert_eq!(c.cwd, "/elsewhere");
    assert_eq!(
        c.run,
        RunMode::Session {
            tty: true,
            yield_time_ms: Some(5),
            max_output_tokens: Some(7)
        }
    );
}

#[test]
fn shell_command_login_and_workdir_are_part_of_the_invocation() {
    let c = command(
        "shell_command",
        r#"{"command":"ls -la","workdir":"w","timeout_ms":5,"login":false}"#,
    );
    assert_eq!(c.argv, strings(&["/bin/bash", "-c", "ls -la"]));
    assert_eq!(c.cwd, "/work/repo/w");
    assert_eq!(
        c.run,
        RunMode::Complete {
            timeout_ms: Some(5),
            layout: Layout::Freeform
        }
    );
    let c = command("shell_command", r#"{"command":"pwd","workdir":"../../.."}"#);
    assert_eq!(c.argv, strings(&["/bin/bash", "-lc", "pwd"]));
    assert_eq!(c.cwd, "/");
}

#[test]
fn local_shell_environment_is_judged_and_loader_variables_are_refused() {
    let c = command(
        "local_shell",
        r#"{"type":"exec","command":["ls"],"timeout_ms":7,"working_directory":"/w","env":{"B":"2","A":"1"},"user":"u"}"#,
    );
    assert_eq!(c.cwd, "/w");
    assert_eq!(c.argv, strings(&["ls"]));
    assert_eq!(c.judged_argv(), strings(&["env", "A=1", "B=2", "ls"]));
    for name in ["LD_PRELOAD", "LD_AUDIT", "GCONV_PATH"] {
        let args = format!(r#"{{"command":["true"],"env":{{"{name}":"./evil.so"}}}}"#);
        let err = call("local_shell", &args).unwrap_err();
        assert!(err.contains(name) && err.contains("cannot be set"), "{err}");
    }
    // Without variables, the judged argv is the argv.
    let c = command("local_shell", r#"{"command":["ls"],"workdir":"x"}"#);
    assert_eq!(c.judged_argv(), strings(&["ls"]));
    assert_eq!(c.cwd, "/work/repo/x");
}

#[test]
fn patches_through_shell_tools_become_patch_invocations() {
    let heredoc = format!("cd sub && apply_patch <<'EOF'\n{PATCH}\nEOF");
    let args = serde_json::json!({"command": ["bash", "-lc", heredoc], "workdir": "w"}).to_string();
    assert_eq!(
        call("shell", &args).unwrap().invocation,
        Invocation::Patch(PatchInvocation {
            patch: PATCH.into(),
            cwd: "/work/repo/w/sub".into(),
            output: PatchOutput::Structured,
        })
    );
    let args =
        serde_json::json!({"command": format!("apply_patch <<'EOF'\n{PATCH}\nEOF")}).to_string();
    let parsed = call("shell_command", &args).unwrap();
    assert!(matches!(
        parsed.invocation,
        Invocation::Patch(PatchInvocation {
            output: PatchOutput::Freeform,
            ..
        })
    ));
    let args = serde_json::json!({"cmd": format!("apply_patch <<'EOF'\n{PATCH}\nEOF"), "max_output_tokens": 9}).to_string();
    assert!(matches!(
        call("exec_command", &args).unwrap().invocation,
        Invocation::Patch(PatchInvocation {
            output: PatchOutput::ExecCommand {
                max_output_tokens: Some(9)
            },
            ..
        })
    ));
    let args = serde_json::json!({"command": ["apply_patch", "nonsense"]}).to_string();
    let err = call("shell", &args).unwrap_err();
    assert!(
        err.starts_with("apply_patch verification failed: "),
        "{err}"
    );
    let args = serde_json::json!({"command": [PATCH]}).to_string();
    assert_eq!(
        call("shell", &args).unwrap_err(),
        "apply_patch verification failed: patch detected without explicit call to apply_patch. Rerun as [\"apply_patch\", \"<patch>\"]"
    );
}

#[test]
fn write_stdin_names_a_process() {
    assert_eq!(
        call("write_stdin", r#"{"session_id":1234}"#)
            .unwrap()
            .invocation,
        Invocation::WriteStdin(WriteStdinInvocation {
            process_id: 1234,
            chars: String::new(),
            yield_time_ms: None,
            max_output_tokens: None
        })
    );
}

#[test]
fn invocations_round_trip_through_json() {
    for args in [
        (
            "local_shell",
            r#"{"command":["ls"],"env":{"A":"1"},"timeout_ms":3}"#.to_string(),
        ),
        ("exec_command", r#"{"cmd":"x","tty":true}"#.to_string()),
        ("write_stdin", r#"{"session_id":3,"chars":"q"}"#.to_string()),
        (
            "shell",
            serde_json::json!({"command": ["apply_patch", PATCH]}).to_string(),
        ),
    ] {
        let invocation = call(args.0, &args.1).unwrap().invocation;
        let json = serde_json::to_string(&invocation).unwrap();
        assert_eq!(
            serde_json::from_str::<Invocation>(&json).unwrap(),
            invocation,
            "{json}"
        );
    }
}
