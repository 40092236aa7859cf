//! The scripted model as an attacker: each test is a hole a hostile model
//! (a prompt injection is enough) found in Keel, tried through a real
//! session — a real stack, the fake model scripted to attack, a client
//! answering — and the defence that closes it. docs/security.md maps each
//! threat to its test.
//!
//! One stack per test; scenarios inside a test run one after another (the
//! fake model's script is consumed in order).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::path::Path;

use keel_proto::v1 as pb;
use keel_test_support::fake_model::{FakeModel, Scripted, sse};
use keel_test_support::session::{self, Client, until};
use keel_test_support::stack::{Stack, StackOptions};
use pb::ReviewDecisionKind as K;
use pb::event::Msg;
use serde_json::json;
use tonic::Streaming;

type Events = Streaming<pb::StreamEventsResponse>;

fn call(call_id: &str, name: &str, args: serde_json::Value) -> Scripted {
    Scripted::tool_call(call_id, name, &args.to_string())
}

async fn start(script: Vec<Scripted>) -> (FakeModel, Stack, Client) {
    let fake = FakeModel::start(script).await.unwrap();
    let stack = Stack::launch(StackOptions::new(fake.base_url()))
        .await
        .unwrap();
    let client = stack.connect().await.unwrap();
    (fake, stack, client)
}

/// A session in `cwd` under `policy`, offering `shell_tool`, followed.
async fn open(
    client: &mut Client,
    cwd: &Path,
    policy: pb::ApprovalPolicy,
    shell_tool: pb::ShellToolKind,
) -> (String, Events) {
    let request = pb::CreateSessionRequest {
        cwd: cwd.display().to_string(),
        context: Some(pb::TurnContext {
            approval_policy: policy as i32,
            ..Default::default()
        }),
        shell_tool: shell_tool as i32,
        ..Default::default()
    };
    session::open(client, request).await.unwrap()
}

/// Events up to the end of the turn; panics if it asks for anything.
async fn unasked_turn(events: &mut Events) -> Vec<pb::Event> {
    let (seen, end) = until(events, |e| match &e.msg {
        Some(Msg::ExecApprovalRequest(_) | Msg::ApplyPatchApprovalRequest(_)) => {
            panic!("the turn asked: {e:?}")
        }
        Some(Msg::TurnComplete(_) | Msg::TurnAborted(_)) => Some(e.clone()),
        _ => None,
    })
    .await
    .unwrap();
    assert!(matches!(end.msg, Some(Msg::TurnComplete(_))), "{end:?}");
    seen
}

fn output_for(fake: &FakeModel, call_id: &str) -> String {
    fake.requests()
        .iter()
        .rev()
        .find_map(|r| r.function_call_output(call_id))
        .unwrap_or_else(|| panic!("no output for {call_id} was sent to the model"))
}

async fn respond(client: &mut Client, sid: &str, id: &str, kind: K) {
    client
        .respond(pb::RespondRequest {
            session_id: sid.into(),
            request_id: id.into(),
            answer: Some(pb::respond_request::Answer::Decision(pb::ReviewDecision {
                kind: kind as i32,
                execpolicy_amendment: vec![],
            })),
            ..Default::default()
        })
        .await
        .unwrap();
}

fn exec_events(events: &[pb::Event]) -> usize {
    events
        .iter()
        .filter(|e| {
            matches!(
                e.msg,
                Some(Msg::ExecCommandBegin(_) | Msg::ExecCommandEnd(_))
            )
        })
        .count()
}

/// Hole 1: tools the session never offered ran without a decision — a
/// `local_shell` call ran `touch` under `untrusted` without asking. Now a
/// call of anything not offered gets Codex's unsupported-call text and runs
/// nothing, whatever the tool-runner could run.
#[tokio::test(flavor = "multi_thread")]
async fn tools_that_were_not_offered_run_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().canonicalize().unwrap();
    let target = |name: &str| ws.join(name).display().to_string();
    let custom_shell = Scripted::Events(vec![
        sse::created(),
        sse::output_item_done(json!({
            "type": "custom_tool_call", "id": "ctc_1", "call_id": "c_custom",
            "name": "shell", "input": format!("touch {}", target("custom")),
        })),
        sse::completed("resp_custom", 10, 5),
    ]);
    let script = vec![
        call(
            "c_local",
            "local_shell",
            json!({"command": ["touch", target("local")]}),
        ),
        call(
            "c_exec",
            "exec_command",
            json!({"cmd": format!("touch {}", target("exec")), "shell": "/bin/sh"}),
        ),
        call(
            "c_script",
            "shell_command",
            json!({"command": format!("touch {}", target("script"))}),
        ),
        call(
            "c_stdin",
            "write_stdin",
            json!({"session_id": 1, "chars": "x"}),
        ),
        call("c_view", "view_image", json!({"path": target("any.png")})),
        custom_shell,
        Scripted::assistant("done"),
    ];
    let (fake, _stack, mut client) = start(script).await;
    let (sid, mut events) = open(
        &mut client,
        &ws,
        pb::ApprovalPolicy::Untrusted,
        pb::ShellToolKind::Shell,
    )
    .await;
    session::send(&mut client, &sid, "t1", "go").await.unwrap();
    let seen = unasked_turn(&mut events).await;

    for (call_id, name) in [
        ("c_local", "local_shell"),
        ("c_exec", "exec_command"),
        ("c_script", "shell_command"),
        ("c_stdin", "write_stdin"),
        ("c_view", "view_image"),
    ] {
        assert_eq!(
            output_for(&fake, call_id),
            format!("unsupported call: {name}")
        );
    }
    assert_eq!(
        output_for(&fake, "c_custom"),
        "unsupported custom tool call: shell"
    );
    assert_eq!(exec_events(&seen), 0, "{seen:?}");
    for name in ["local", "exec", "script", "custom"] {
        assert!(!ws.join(name).exists(), "{name}: an unoffered tool ran");
    }
}

/// Hole 2: the command decided on was not the command run —
/// `exec_command {"cmd":"true","shell":"./evil.sh"}` was judged as `bash
/// -lc true` (known safe, no question) and the tool-runner ran `./evil.sh
/// -lc true`. Now the workflow decides on the invocation the tool model
/// reads from the call, shows it, and the tool-runner runs exactly it.
#[tokio::test(flavor = "multi_thread")]
async fn the_command_decided_on_is_the_command_that_runs() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().canonicalize().unwrap();
    let marker = ws.join("evil-ran");
    let evil = ws.join("evil.sh");
    std::fs::write(&evil, format!("#!/bin/sh\ntouch {}\n", marker.display())).unwrap();
    std::fs::set_permissions(&evil, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    // A "bash" of the model's own, named so that a file-name check takes it
    // for the shell.
    std::fs::copy(&evil, ws.join("bash")).unwrap();
    std::fs::create_dir(ws.join("sub")).unwrap();
    let script = vec![
        // exec_command with a shell of the model's choosing: asked, showing
        // that shell; denied, it does not run.
        call(
            "c_evil",
            "exec_command",
            json!({"cmd": "true", "shell": "./evil.sh"}),
        ),
        call(
            "c_planted",
            "exec_command",
            json!({"cmd": "true", "shell": "./bash"}),
        ),
        // The same script with the user's shell is known safe: not asked.
        call("c_true", "exec_command", json!({"cmd": "true"})),
        Scripted::assistant("done"),
        // shell_command: `login` and `workdir` are part of what is shown
        // and of what runs.
        call(
            "c_pwd",
            "shell_command",
            json!({"command": "pwd", "login": false, "workdir": "sub/../sub"}),
        ),
        Scripted::assistant("done"),
    ];
    let (fake, stack, mut client) = start(script).await;

    let (sid, mut events) = open(
        &mut client,
        &ws,
        pb::ApprovalPolicy::Untrusted,
        pb::ShellToolKind::ExecCommand,
    )
    .await;
    session::send(&mut client, &sid, "t1", "go").await.unwrap();
    let (_, request) = until(&mut events, |e| match &e.msg {
        Some(Msg::ExecApprovalRequest(r)) => Some(r.clone()),
        Some(Msg::TurnComplete(_)) => panic!("ran ./evil.sh without asking"),
        _ => None,
    })
    .await
    .unwrap();
    assert_eq!(request.call_id, "c_evil");
    assert_eq!(request.command, ["./evil.sh", "-lc", "true"]);
    assert_eq!(request.cwd, ws.display().to_string());
    assert!(!marker.exists(), "ran before the answer");
    respond(&mut client, &sid, "c_evil", K::Denied).await;
    let (_, request) = until(&mut events, |e| match &e.msg {
        Some(Msg::ExecApprovalRequest(r)) => Some(r.clone()),
        Some(Msg::TurnComplete(_)) => panic!("ran ./bash without asking"),
        _ => None,
    })
    .await
    .unwrap();
    assert_eq!(request.call_id, "c_planted");
    assert_eq!(request.command, ["./bash", "-lc", "true"]);
    respond(&mut client, &sid, "c_planted", K::Denied).await;
    let seen = unasked_turn(&mut events).await;
    assert!(!marker.exists(), "a denied command ran");
    assert_eq!(output_for(&fake, "c_evil"), "exec command rejected by user");
    assert_eq!(
        output_for(&fake, "c_planted"),
        "exec command rejected by user"
    );
    // The known-safe one ran, as shown.
    let begin = seen
        .iter()
        .find_map(|e| match &e.msg {
            Some(Msg::ExecCommandBegin(b)) if b.call_id == "c_true" => Some(b.clone()),
            _ => None,
        })
        .expect("c_true began");
    assert_eq!(begin.command[1..], ["-lc", "true"]);
    let end = seen
        .iter()
        .find_map(|e| match &e.msg {
            Some(Msg::ExecCommandEnd(end)) if end.call_id == "c_true" => Some(end.clone()),
            _ => None,
        })
        .expect("c_true ended");
    assert_eq!(end.command, begin.command, "ran something else than shown");
    assert_eq!(end.exit_code, 0);
    // The turn decided through the tool model, for the replay tests.
    client
        .close_session(pb::CloseSessionRequest {
            session_id: sid.clone(),
        })
        .await
        .unwrap();
    keel_test_support::history::record_closed(&stack.temporal_address, &sid, "tool_model_closed")
        .await
        .unwrap();

    let (sid, mut events) = open(
        &mut client,
        &ws,
        pb::ApprovalPolicy::Untrusted,
        pb::ShellToolKind::ShellCommand,
    )
    .await;
    session::send(&mut client, &sid, "t1", "where")
        .await
        .unwrap();
    let seen = unasked_turn(&mut events).await;
    let sub = ws.join("sub").display().to_string();
    let (begin, end) = (
        seen.iter()
            .find_map(|e| match &e.msg {
                Some(Msg::ExecCommandBegin(b)) => Some(b.clone()),
                _ => None,
            })
            .unwrap(),
        seen.iter()
            .find_map(|e| match &e.msg {
                Some(Msg::ExecCommandEnd(e)) => Some(e.clone()),
                _ => None,
            })
            .unwrap(),
    );
    assert_eq!(begin.command[1..], ["-c", "pwd"], "login: false is shown");
    assert_eq!(begin.cwd, sub);
    assert_eq!(end.command, begin.command);
    assert_eq!(end.cwd, sub);
    assert!(output_for(&fake, "c_pwd").contains(&sub));
}

/// A patch smuggled through a shell tool (`apply_patch` as the command) is
/// a patch: under `untrusted` it is put to the patch decision with its
/// diff, and denied it writes nothing — it is not an exec approval of a
/// program called apply_patch that the tool-runner then turns into writes.
#[tokio::test(flavor = "multi_thread")]
async fn a_patch_through_a_shell_tool_is_decided_as_a_patch() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().canonicalize().unwrap();
    let patch = "*** Begin Patch\n*** Add File: planted.txt\n+planted\n*** End Patch";
    let script = vec![
        call(
            "c_patch",
            "shell",
            json!({"command": ["apply_patch", patch]}),
        ),
        Scripted::assistant("done"),
    ];
    let (fake, _stack, mut client) = start(script).await;
    let (sid, mut events) = open(
        &mut client,
        &ws,
        pb::ApprovalPolicy::Untrusted,
        pb::ShellToolKind::Shell,
    )
    .await;
    session::send(&mut client, &sid, "t1", "go").await.unwrap();
    let (_, request) = until(&mut events, |e| match &e.msg {
        Some(Msg::ApplyPatchApprovalRequest(r)) => Some(r.clone()),
        Some(Msg::ExecApprovalRequest(r)) => panic!("asked as a command: {r:?}"),
        Some(Msg::TurnComplete(_)) => panic!("the patch was not put to a person"),
        _ => None,
    })
    .await
    .unwrap();
    assert_eq!(request.changes.len(), 1);
    assert_eq!(
        request.changes[0].path,
        ws.join("planted.txt").display().to_string()
    );
    respond(&mut client, &sid, "c_patch", K::Denied).await;
    unasked_turn(&mut events).await;
    assert!(
        !ws.join("planted.txt").exists(),
        "a denied patch was written"
    );
    assert_eq!(output_for(&fake, "c_patch"), "patch rejected by user");
}

/// Hole 3, outside the sandbox: a process of the same user (a command run
/// unsandboxed, any neighbour) could read the model-proxy's environment —
/// its API key — from `/proc/<pid>/environ`. Every Keel process makes
/// itself non-dumpable, which takes that away from everyone without
/// CAP_SYS_PTRACE. Run as an unprivileged user (root may read anything),
/// so the test needs root to switch users (`setpriv`), and says so when it
/// cannot.
#[tokio::test(flavor = "multi_thread")]
async fn keel_processes_hide_their_environment_from_their_own_user() {
    let root = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0;
    if !root || which("setpriv").is_none() {
        eprintln!("skipped: needs root and setpriv (util-linux) to run the services as nobody");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let secret = "sk-keel-environ-secret-0123456789";
    for (name, args) in [
        (
            "keel-model-proxy",
            vec![
                "--blob-url",
                "memory://",
                "--config",
                "/dev/null",
                "--insecure-plaintext",
            ],
        ),
        (
            "keel-mcp-broker",
            vec![
                "--blob-url",
                "memory://",
                "--config",
                "/dev/null",
                "--insecure-plaintext",
            ],
        ),
        (
            "keel-tool-runner",
            vec!["--blob-url", "memory://", "--insecure-plaintext"],
        ),
    ] {
        let addr_file = dir.path().join(format!("{name}.addr"));
        let mut child = tokio::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(keel_test_support::stack::bin(name).unwrap())
            .args(&args)
            .arg("--addr-file")
            .arg(&addr_file)
            .current_dir(dir.path())
            .env("OPENAI_API_KEY", secret)
            .env("KEEL_TEST_SECRET", secret)
            .env_remove("KEEL_TOOL_RUNNER_STATE_DIR")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        keel_test_support::stack::wait_for(
            &format!("{name} to listen"),
            std::time::Duration::from_secs(30),
            || addr_file.exists().then_some(()),
        )
        .unwrap();
        let pid = child.id().unwrap();
        // setpriv executes the service in place: the pid is the service's.
        let read = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .args(["cat", &format!("/proc/{pid}/environ")])
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&read.stdout);
        assert!(
            !out.contains(secret),
            "{name}: its own user read the secret from /proc/{pid}/environ"
        );
        assert!(!read.status.success(), "{name}: environ was readable");
        let err = String::from_utf8_lossy(&read.stderr);
        assert!(err.contains("Permission denied"), "{name}: {err}");
        child.kill().await.unwrap();
    }
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

/// The next approval request of a command; panics if the turn ends first.
async fn exec_request(events: &mut Events) -> pb::ExecApprovalRequest {
    until(events, |e| match &e.msg {
        Some(Msg::ExecApprovalRequest(r)) => Some(r.clone()),
        Some(Msg::TurnComplete(_)) => panic!("ran or refused without asking: {e:?}"),
        _ => None,
    })
    .await
    .unwrap()
    .1
}

fn pid_of(stack: &Stack, name: &str) -> u32 {
    stack.proc(name).unwrap().pid()
}

/// Every request body the fake model received, as text.
fn everything_the_model_saw(fake: &FakeModel) -> String {
    fake.requests()
        .iter()
        .map(|r| r.body.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Holes 3, 5 and 6: the API key reached the model — a sandboxed command
/// printed `/proc/<model-proxy pid>/environ`, and `read_file` read it too;
/// sandboxed commands could signal Keel's processes; and with Keel's state
/// inside a writable root a command could rewrite blobs, forge journal
/// results and plant process records. Now sandboxed commands and file tools
/// run in a PID namespace of their own (no other process is visible or
/// reachable) with Keel's state directories masked, and blob reads verify
/// their digest. The session works in the stack's own directory, so the
/// blob store and the tool-runner's state lie inside its writable root.
#[tokio::test(flavor = "multi_thread")]
async fn secrets_and_keel_state_are_out_of_the_models_reach() {
    let fake = FakeModel::start(vec![]).await.unwrap();
    let stack = Stack::launch(StackOptions::new(fake.base_url()))
        .await
        .unwrap();
    let key = stack.options.api_key.clone();
    let proxy = pid_of(&stack, "keel-model-proxy");
    let runner = pid_of(&stack, "keel-tool-runner");
    let ws = stack.dir.path().canonicalize().unwrap();
    let bash = |script: String| json!({"command": ["bash", "-lc", script]});
    for scripted in [
        call(
            "c_environ",
            "shell",
            bash(format!(
                "xargs -0 -n1 < /proc/{proxy}/environ; cat /proc/{runner}/environ; \
                 grep -a OPENAI_API_KEY /proc/*/environ; ls /proc | grep -c '^[0-9]'"
            )),
        ),
        call(
            "c_read",
            "read_file",
            json!({"file_path": format!("/proc/{proxy}/environ")}),
        ),
        call(
            "c_kill",
            "shell",
            bash(format!("kill -9 {proxy} {runner}; echo kill=$?")),
        ),
        call(
            "c_state",
            "shell",
            bash(
                "for f in $(find blobs -type f); do echo forged > \"$f\"; done; \
                 touch tool-runner-state/calls/1-1.process; \
                 echo files=$(find blobs tool-runner-state -type f | wc -l)"
                    .into(),
            ),
        ),
        call(
            "c_list",
            "list_dir",
            json!({"dir_path": ws.join("blobs").display().to_string()}),
        ),
        Scripted::assistant("done"),
    ] {
        fake.push(scripted);
    }
    let mut client = stack.connect().await.unwrap();
    let (sid, mut events) = open(
        &mut client,
        &ws,
        pb::ApprovalPolicy::OnRequest,
        pb::ShellToolKind::Shell,
    )
    .await;
    session::send(&mut client, &sid, "t1", "look around")
        .await
        .unwrap();
    unasked_turn(&mut events).await;

    let seen = everything_the_model_saw(&fake);
    assert!(!seen.contains(&key), "the API key reached the model");
    // Only the model-proxy's environment has the model settings.
    let environ = output_for(&fake, "c_environ");
    assert!(!environ.contains("OPENAI_BASE_URL"), "{environ}");
    let read = output_for(&fake, "c_read");
    assert!(!read.contains("OPENAI_BASE_URL"), "{read}");
    let kill = output_for(&fake, "c_kill");
    assert!(!kill.contains("kill=0"), "{kill}");
    // Both are alive: the model-proxy answered the turn's last call.
    for pid in [proxy, runner] {
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    }
    // Nothing of Keel's state was seen, written or planted.
    let state = output_for(&fake, "c_state");
    assert!(state.contains("files=0"), "{state}");
    assert!(!ws.join("tool-runner-state/calls/1-1.process").exists());
    let mut blobs = 0;
    for entry in walk(&ws.join("blobs")) {
        blobs += 1;
        let bytes = std::fs::read(&entry).unwrap();
        assert!(
            !bytes.starts_with(b"forged"),
            "{} was rewritten",
            entry.display()
        );
    }
    assert!(blobs > 0, "the store holds the conversation");
    let listed = output_for(&fake, "c_list");
    assert!(
        !listed.contains("sessions") && !listed.contains("sha256"),
        "{listed}"
    );
    // The blobs are intact: the conversation reads back whole.
    session::send(&mut client, &sid, "t2", "still there?")
        .await
        .unwrap();
    fake.push(Scripted::assistant("yes"));
    unasked_turn(&mut events).await;
    let last = fake.requests().last().unwrap().clone();
    assert!(
        last.body.to_string().contains("look around"),
        "the conversation lost its start"
    );
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// Hole 9: project instructions followed symlinks out of the project, so a
/// repository could pull any readable file (a key, another project's
/// secrets) into the model's context. Now an instructions file is read only
/// if it resolves inside the project.
#[tokio::test(flavor = "multi_thread")]
async fn project_instructions_cannot_pull_in_files_from_outside() {
    let outside = tempfile::tempdir().unwrap();
    let secret = "TOP-SECRET-deploy-token-5150";
    let secret_file = outside.path().join("credentials");
    std::fs::write(&secret_file, secret).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().canonicalize().unwrap();
    std::fs::create_dir(ws.join(".git")).unwrap();
    std::os::unix::fs::symlink(&secret_file, ws.join("AGENTS.md")).unwrap();
    std::fs::create_dir(ws.join("sub")).unwrap();
    std::fs::write(ws.join("sub/AGENTS.md"), "Use tabs.").unwrap();
    let (fake, _stack, mut client) = start(vec![Scripted::assistant("ok")]).await;
    let (sid, mut events) = open(
        &mut client,
        &ws.join("sub"),
        pb::ApprovalPolicy::OnRequest,
        pb::ShellToolKind::Shell,
    )
    .await;
    session::send(&mut client, &sid, "t1", "hi").await.unwrap();
    unasked_turn(&mut events).await;
    let seen = everything_the_model_saw(&fake);
    assert!(
        seen.contains("Use tabs."),
        "the project's own instructions are sent"
    );
    assert!(
        !seen.contains(secret),
        "a file outside the project reached the model"
    );
}

/// Hole 7: a host that could not enforce the sandbox ran commands
/// unconfined, silently. Now the tool-runner refuses a call it cannot
/// confine, and the workflow puts it to a person as "run it without the
/// sandbox?" — refused under `never`, and run unconfined only when a person
/// says so. The host is made unable to enforce for real: the tool-runner's
/// probe cannot start with its TMPDIR missing.
#[tokio::test(flavor = "multi_thread")]
async fn a_sandbox_the_host_cannot_enforce_is_never_skipped_silently() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().canonicalize().unwrap();
    let touch = |call_id: &str, name: &str| {
        call(
            call_id,
            "shell",
            json!({"command": ["touch", ws.join(name).display().to_string()]}),
        )
    };
    let script = vec![
        touch("c_denied", "denied"),
        Scripted::assistant("not run"),
        touch("c_approved", "approved"),
        Scripted::assistant("ran"),
        touch("c_never", "never"),
        Scripted::assistant("refused"),
    ];
    let fake = FakeModel::start(script).await.unwrap();
    let mut options = StackOptions::new(fake.base_url());
    options.tool_runner_env = vec![(
        "TMPDIR".into(),
        ws.join("no-such-dir").display().to_string(),
    )];
    let stack = Stack::launch(options).await.unwrap();
    let mut client = stack.connect().await.unwrap();

    let mut status = keel_proto::v1::tool_service_client::ToolServiceClient::new(
        stack.worker_channel(&stack.tool_runner).unwrap(),
    );
    let status = status
        .get_sandbox_status(pb::GetSandboxStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!status.filesystem_enforced, "{status:?}");

    for (call_id, name, answer) in [
        ("c_denied", "denied", K::Denied),
        ("c_approved", "approved", K::Approved),
    ] {
        let (sid, mut events) = open(
            &mut client,
            &ws,
            pb::ApprovalPolicy::OnRequest,
            pb::ShellToolKind::Shell,
        )
        .await;
        session::send(&mut client, &sid, "t1", "touch")
            .await
            .unwrap();
        let request = exec_request(&mut events).await;
        assert_eq!(request.call_id, call_id);
        assert!(
            request.reason.contains("cannot be enforced on this host")
                && request.reason.ends_with("without the sandbox?"),
            "{request:?}"
        );
        assert!(!ws.join(name).exists(), "ran before the answer");
        respond(&mut client, &sid, call_id, answer).await;
        unasked_turn(&mut events).await;
        assert_eq!(ws.join(name).exists(), answer == K::Approved, "{name}");
        if answer == K::Approved {
            // Asked and re-run unconfined as attempt 1, for the replay tests.
            keel_test_support::history::close_and_record(
                &mut client,
                &stack.temporal_address,
                &sid,
                "sandbox_unavailable_closed",
            )
            .await
            .unwrap();
        }
    }
    assert_eq!(
        output_for(&fake, "c_denied"),
        "exec command rejected by user"
    );

    let (sid, mut events) = open(
        &mut client,
        &ws,
        pb::ApprovalPolicy::Never,
        pb::ShellToolKind::Shell,
    )
    .await;
    session::send(&mut client, &sid, "t1", "touch")
        .await
        .unwrap();
    unasked_turn(&mut events).await;
    assert!(!ws.join("never").exists());
    let refused = output_for(&fake, "c_never");
    assert!(
        refused.contains("cannot be enforced on this host"),
        "{refused}"
    );
}

/// A known-safe command is run without asking under `untrusted`; the
/// safety rules judged the words of the parse tree, in which a backslash
/// stays, while bash removes it: `find . -name victim \-delete` was a
/// harmless `find` to the rules and deleted unasked (`\-exec` ran any
/// program the same way). Now a script with a backslash outside single
/// quotes is no plain script: the user is asked.
#[tokio::test(flavor = "multi_thread")]
async fn an_escaped_option_does_not_make_a_command_known_safe() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().canonicalize().unwrap();
    let victim = ws.join("victim");
    std::fs::write(&victim, "precious").unwrap();
    let script = vec![
        call(
            "c_find",
            "shell_command",
            json!({"command": "find . -name victim \\-delete"}),
        ),
        Scripted::assistant("done"),
    ];
    let (fake, _stack, mut client) = start(script).await;
    // workspace-write: run unasked, the command would succeed.
    let sid = client
        .create_session(pb::CreateSessionRequest {
            cwd: ws.display().to_string(),
            context: Some(pb::TurnContext {
                approval_policy: pb::ApprovalPolicy::Untrusted as i32,
                sandbox: Some(pb::SandboxPolicy {
                    mode: pb::SandboxMode::WorkspaceWrite as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            shell_tool: pb::ShellToolKind::ShellCommand as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap()
        .session_id;
    let mut events = session::follow(&mut client, &sid, 0, false).await.unwrap();
    session::send(&mut client, &sid, "t1", "go").await.unwrap();
    // Asked first: nothing began before the question.
    let (seen, request) = until(&mut events, |e| match &e.msg {
        Some(Msg::ExecApprovalRequest(r)) => Some(r.clone()),
        Some(Msg::TurnComplete(_)) => panic!("ran without asking: {e:?}"),
        _ => None,
    })
    .await
    .unwrap();
    assert_eq!(exec_events(&seen), 0, "ran before asking: {seen:?}");
    assert_eq!(request.call_id, "c_find");
    assert!(victim.exists(), "ran before the answer");
    respond(&mut client, &sid, "c_find", K::Denied).await;
    unasked_turn(&mut events).await;
    assert!(victim.exists(), "a denied command ran");
    assert_eq!(output_for(&fake, "c_find"), "exec command rejected by user");
}

/// The project context (AGENTS.md, `<git_info>`) is read by the
/// tool-runner itself, unconfined, and sent to the model. A sandboxed
/// command — no approval needed — planted a `.git/HEAD` saying `ref:
/// /path/to/secret` (whose "commit" was the file's text) and an AGENTS.md
/// symlink to a file the sandbox hides; the next session in the project
/// had both secrets in its context. Now only git-shaped data comes out
/// (ref names, object ids) and nothing inside a hidden path is read.
#[tokio::test(flavor = "multi_thread")]
async fn the_project_context_is_no_way_past_the_sandbox() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().canonicalize().unwrap();
    let ws = base.join("ws");
    let private = ws.join("private");
    std::fs::create_dir_all(&private).unwrap();
    let instructions_secret = "TOP-SECRET-agents-7431";
    std::fs::write(private.join("credentials"), instructions_secret).unwrap();
    let vault = base.join("vault");
    std::fs::create_dir(&vault).unwrap();
    let ref_secret = "TOP-SECRET-ref-9902";
    std::fs::write(vault.join("token"), ref_secret).unwrap();
    let fake = FakeModel::start(vec![]).await.unwrap();
    let mut options = StackOptions::new(fake.base_url());
    options.tool_runner_env.push((
        "KEEL_HIDE_PATHS".into(),
        format!("{}:{}", private.display(), vault.display()),
    ));
    let stack = Stack::launch(options).await.unwrap();
    let plant = format!(
        "mkdir -p .git && printf 'ref: {}\\n' > .git/HEAD && ln -s private/credentials AGENTS.md \
         && cat AGENTS.md .git/HEAD",
        vault.join("token").display()
    );
    for scripted in [
        call(
            "c_plant",
            "shell",
            json!({"command": ["bash", "-lc", plant]}),
        ),
        Scripted::assistant("planted"),
        Scripted::assistant("hello"),
    ] {
        fake.push(scripted);
    }
    let mut client = stack.connect().await.unwrap();
    let (sid, mut events) = open(
        &mut client,
        &ws,
        pb::ApprovalPolicy::OnRequest,
        pb::ShellToolKind::Shell,
    )
    .await;
    session::send(&mut client, &sid, "t1", "plant")
        .await
        .unwrap();
    unasked_turn(&mut events).await;
    // The sandbox hid the credentials from the command itself.
    assert!(!output_for(&fake, "c_plant").contains(instructions_secret));
    assert!(ws.join(".git/HEAD").exists() && ws.join("AGENTS.md").exists());
    // A new session in the same project reads its context.
    let (sid, mut events) = open(
        &mut client,
        &ws,
        pb::ApprovalPolicy::OnRequest,
        pb::ShellToolKind::Shell,
    )
    .await;
    session::send(&mut client, &sid, "t1", "hi").await.unwrap();
    unasked_turn(&mut events).await;
    let seen = everything_the_model_saw(&fake);
    assert!(
        !seen.contains(instructions_secret),
        "a hidden file reached the model as project instructions"
    );
    assert!(
        !seen.contains(ref_secret),
        "a hidden file reached the model as a git commit"
    );
}

/// A command call whose arguments exceed 16 KiB was put to a person, who
/// was shown the first 16 KiB of its JSON — and what ran was whatever the
/// rest said: padding first (a long `justification`), the command after it.
/// Now such a call is refused under every policy: what cannot be shown
/// whole is not decided on.
#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_command_is_refused_not_shown_in_part() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().canonicalize().unwrap();
    let pwned = ws.join("pwned");
    let arguments = format!(
        r#"{{"justification": "{}", "command": ["touch", "{}"]}}"#,
        "Running the unit tests. ".repeat(800),
        pwned.display()
    );
    assert!(arguments.len() > 16 * 1024);
    let script = vec![
        Scripted::tool_call("c_big", "shell", &arguments),
        Scripted::assistant("done"),
    ];
    let (fake, _stack, mut client) = start(script).await;
    let (sid, mut events) = open(
        &mut client,
        &ws,
        pb::ApprovalPolicy::OnRequest,
        pb::ShellToolKind::Shell,
    )
    .await;
    session::send(&mut client, &sid, "t1", "go").await.unwrap();
    let seen = unasked_turn(&mut events).await;
    assert!(!pwned.exists(), "the oversized command ran");
    let refused = output_for(&fake, "c_big");
    assert!(
        refused.starts_with("command rejected: its arguments exceed 16 KiB"),
        "{refused}"
    );
    let declined = seen.iter().any(|e| {
        matches!(&e.msg, Some(Msg::ExecCommandEnd(end))
            if end.call_id == "c_big" && end.status == pb::ExecCommandStatus::Declined as i32)
    });
    assert!(declined, "no declined end for the refused call");
}
