//! The real binary over gRPC: flags, serving, cancelling a call, and a
//! restart in the middle of a command.

// Test helpers may panic: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::wait_for_file;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use keel_proto::v1::tool_service_client::ToolServiceClient;
use keel_proto::v1::{
    CancelToolCallRequest, ExecRequest, RunToolRequest, SandboxMode, SandboxPolicy,
};
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tonic::transport::Channel;

struct Server {
    child: Child,
    client: ToolServiceClient<Channel>,
}

async fn start(dir: &Path) -> Server {
    start_with(dir, "addr", &[]).await
}

/// Starts the binary on `dir` (blobs in `dir/blobs`, default cwd `dir`),
/// reporting its address in `dir/<addr_name>`.
async fn start_with(dir: &Path, addr_name: &str, extra: &[&str]) -> Server {
    start_configured(dir, addr_name, extra, |command| {
        command.env_remove("KEEL_TOOL_RUNNER_STATE_DIR");
    })
    .await
}

/// [`start_with`], with the command adjusted (e.g. its environment) first.
async fn start_configured(
    dir: &Path,
    addr_name: &str,
    extra: &[&str],
    configure: impl FnOnce(&mut Command),
) -> Server {
    let addr_file = dir.join(addr_name);
    let pki = keel_stack::LocalPki::ensure(&dir.join("tls")).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_keel-tool-runner"));
    configure(&mut command);
    let child = command
        .args(pki.server_args())
        .arg("--addr-file")
        .arg(&addr_file)
        .arg("--blob-url")
        .arg(format!("file://{}", dir.join("blobs").display()))
        .arg("--default-cwd")
        .arg(dir)
        .args(extra)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr = wait_for_file(&addr_file, Duration::from_secs(30)).await;
    let tls = keel_server::PeerTlsArgs::with_files(&pki.worker_cert, &pki.worker_key, &pki.ca)
        .client()
        .unwrap();
    let channel = keel_server::ClientTls::lazy_channel(tls.as_ref(), &addr, None).unwrap();
    let client = ToolServiceClient::new(channel);
    Server { child, client }
}

fn is_dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

#[tokio::test]
async fn serves_exec_and_run_tool() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path()).await;

    let resp = server
        .client
        .exec(ExecRequest {
            argv: vec!["sh".into(), "-c".into(), "echo hi".into()],
            workdir: dir.path().display().to_string(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((resp.exit_code, resp.stdout.as_str()), (0, "hi\n"));

    let resp = server
        .client
        .run_tool(RunToolRequest {
            session_id: "s".into(),
            call_id: "call_1".into(),
            tool_name: "shell".into(),
            arguments: r#"{"command":["pwd"]}"#.into(),
            cwd: String::new(),
            custom: false,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(resp.success, "{}", resp.output_preview);
    // The item landed in the on-disk blob store, under the session.
    let digest = &resp.output_item_digest;
    let blob = dir
        .path()
        .join("blobs/sessions/s/sha256")
        .join(&digest[..2])
        .join(digest);
    let item: serde_json::Value = serde_json::from_slice(&std::fs::read(&blob).unwrap()).unwrap();
    assert_eq!(item["call_id"], "call_1");

    server.child.kill().await.unwrap();
}

/// Two agents of one session may use the same call id: each is a call of
/// its own, run once and answered again with its own output; a call naming
/// no valid agent runs nothing.
#[tokio::test]
async fn each_agent_has_calls_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path()).await;
    let counter = dir.path().join("runs");
    let script = format!("echo run >> {0}; wc -l < {0}", counter.display());
    let call = |agent: &str| RunToolRequest {
        agent_id: agent.into(),
        ..shell_call("call_same", &script)
    };
    let mut outputs = Vec::new();
    for agent in ["", "a1", "a2", "a1", ""] {
        let resp = server
            .client
            .run_tool(call(agent))
            .await
            .unwrap()
            .into_inner();
        assert!(resp.success, "{}", resp.output_preview);
        outputs.push(resp.output_preview);
    }
    // Three calls ran (the root's, a1's, a2's); the repeats were answered
    // with their first outputs.
    let runs = std::fs::read_to_string(&counter).unwrap();
    assert_eq!(runs.lines().count(), 3, "{runs}");
    assert_ne!(outputs[0], outputs[1]);
    assert_ne!(outputs[1], outputs[2]);
    assert_eq!(outputs[3], outputs[1]);
    assert_eq!(outputs[4], outputs[0]);

    for bad in ["../x", "a/b", "a.b", &"a".repeat(65)] {
        let err = server.client.run_tool(call(bad)).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{bad}");
        assert!(
            err.message().contains("is not an agent id"),
            "{}",
            err.message()
        );
        let err = server
            .client
            .cancel_tool_call(CancelToolCallRequest {
                session_id: "s".into(),
                call_id: "call_same".into(),
                agent_id: bad.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{bad}");
    }
    assert_eq!(
        std::fs::read_to_string(&counter).unwrap().lines().count(),
        3
    );
    server.child.kill().await.unwrap();
}

/// A `shell` call under danger-full-access: these tests follow the
/// command's processes by the pids it prints (`$$`, `$!`), and a sandboxed
/// command only knows its pids inside a PID namespace of its own (its
/// cancellation and background processes are tested in tests/sandbox.rs).
fn shell_call(call_id: &str, script: &str) -> RunToolRequest {
    RunToolRequest {
        sandbox: Some(SandboxPolicy {
            mode: SandboxMode::DangerFullAccess.into(),
            ..Default::default()
        }),
        session_id: "s".into(),
        call_id: call_id.into(),
        tool_name: "shell".into(),
        arguments: serde_json::json!({ "command": ["sh", "-c", script], "timeout_ms": 60_000 })
            .to_string(),
        cwd: String::new(),
        custom: false,
        ..Default::default()
    }
}

async fn wait_dead(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !is_dead(pid) {
        assert!(Instant::now() < deadline, "process {pid} is still alive");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn cancel_tool_call_kills_the_command_and_records_the_abort() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path()).await;
    let pid_file = dir.path().join("pid");
    let script = format!(
        "sleep 30 & echo $! > {0}.tmp && mv {0}.tmp {0}; sleep 30",
        pid_file.display()
    );
    let mut client = server.client.clone();
    let request = shell_call("call_2", &script);
    let call = tokio::spawn(async move { client.run_tool(request).await });
    let pid: i32 = wait_for_file(&pid_file, Duration::from_secs(10))
        .await
        .parse()
        .unwrap();
    // The caller going away (tonic resets the stream) no longer stops the
    // command: a retry could want its result.
    call.abort();
    assert!(!is_dead(pid));
    let cancelled = server
        .client
        .cancel_tool_call(CancelToolCallRequest {
            session_id: "s".into(),
            call_id: "call_2".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(cancelled.was_running);
    wait_dead(pid).await;
    let resp = server
        .client
        .run_tool(shell_call("call_2", &script))
        .await
        .unwrap()
        .into_inner();
    assert!(
        resp.output_preview.starts_with("Wall time: ")
            && resp.output_preview.ends_with(" seconds\naborted by user"),
        "{}",
        resp.output_preview
    );
    assert!(!resp.success);
    server.child.kill().await.unwrap();
}

fn journal_names(state: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(state.join("calls"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_command_cut_by_a_restart_is_killed_and_not_run_again() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let state_arg = ["--state-dir", state.to_str().unwrap()];
    let mut first = start_with(dir.path(), "addr-1", &state_arg).await;
    let marker = dir.path().join("marker");
    let pid_file = dir.path().join("pid");
    // The shell leads the command's process group; `sleep` is in it too.
    let script = format!(
        "sleep 60 & echo $$ $! > {pid}.tmp && mv {pid}.tmp {pid}; echo ran >> {marker}; wait",
        pid = pid_file.display(),
        marker = marker.display()
    );
    let mut client = first.client.clone();
    let request = shell_call("call_r", &script);
    let call = tokio::spawn(async move { client.run_tool(request).await });
    let pids: Vec<i32> = wait_for_file(&pid_file, Duration::from_secs(10))
        .await
        .split_whitespace()
        .map(|pid| pid.parse().unwrap())
        .collect();
    let [leader, sleeper] = pids[..] else {
        panic!("{pids:?}")
    };
    wait_for_file(&marker, Duration::from_secs(10)).await;
    // The group's record is written just after the spawn; a crash before
    // it is outside the guarantee, so wait for it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !journal_names(&state)
        .iter()
        .any(|n| n.ends_with(".process"))
    {
        assert!(Instant::now() < deadline, "the command was never recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // SIGKILL mid-command: no chance to record or kill anything.
    first.child.kill().await.unwrap();
    assert!(
        call.await.unwrap().is_err(),
        "the call died with the server"
    );
    let journal = journal_names(&state);
    assert_eq!(journal.len(), 2, "{journal:?}");
    assert!(
        journal.iter().any(|n| n.ends_with(".started")),
        "{journal:?}"
    );
    assert!(
        journal
            .iter()
            .any(|n| n.starts_with(&format!("{leader}-")) && n.ends_with(".process")),
        "the command's process group is recorded: {journal:?}"
    );
    assert!(
        !is_dead(leader) && !is_dead(sleeper),
        "the command outlived its tool-runner"
    );

    // The restarted tool-runner kills the orphaned group before it serves.
    let mut second = start_with(dir.path(), "addr-2", &state_arg).await;
    wait_dead(leader).await;
    wait_dead(sleeper).await;
    let journal = journal_names(&state);
    assert!(
        journal.iter().all(|n| !n.ends_with(".process")),
        "{journal:?}"
    );
    let resp = second
        .client
        .run_tool(shell_call("call_r", &script))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        resp.output_preview,
        "execution error: the tool-runner restarted while this command was running; it was not run again to avoid running it twice, and its output is lost"
    );
    assert!(!resp.success);
    // The output item is stored like any other.
    let digest = &resp.output_item_digest;
    let blob = dir
        .path()
        .join("blobs/sessions/s/sha256")
        .join(&digest[..2])
        .join(digest);
    let item: serde_json::Value = serde_json::from_slice(&std::fs::read(&blob).unwrap()).unwrap();
    assert_eq!(
        (item["type"].as_str(), item["call_id"].as_str()),
        (Some("function_call_output"), Some("call_r"))
    );
    assert_eq!(item["output"], resp.output_preview);
    // Asked again, the same answer; the command ran exactly once.
    let again = second
        .client
        .run_tool(shell_call("call_r", &script))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, resp);
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "ran\n");
    second.child.kill().await.unwrap();
}

#[tokio::test]
async fn commands_see_the_configured_environment() {
    let dir = tempfile::tempdir().unwrap();
    let path = std::env::var("PATH").unwrap();
    let mut server = start_configured(
        dir.path(),
        "addr",
        &[
            "--default-sandbox",
            "danger-full-access",
            "--env-inherit",
            "core",
            "--env-set",
            "HOME=/elsewhere",
            "--env-set",
            "GREETING=hello",
            "--env-set",
            "DROPPED=x",
            "--env-include-only",
            "PATH,home",
            "--env-include-only",
            "USER",
            "--env-include-only",
            "GREET*",
        ],
        |command| {
            command
                .env_clear()
                .env("PATH", &path)
                .env("HOME", "/home/tester")
                .env("USER", "tester")
                .env("LOGNAME", "tester")
                .env("SHELL", "/bin/sh")
                .env("LANG", "C.UTF-8")
                .env("MY_API_KEY", "sk-secret")
                // The environment form: comma-separated.
                .env("KEEL_ENV_EXCLUDE", "logname,sh*");
        },
    )
    .await;
    let resp = server
        .client
        .run_tool(RunToolRequest {
            session_id: "s".into(),
            call_id: "call_env".into(),
            tool_name: "shell".into(),
            arguments: r#"{"command":["env"]}"#.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(resp.success, "{}", resp.output_preview);
    let mut seen: Vec<String> = resp
        .command
        .unwrap()
        .aggregated_output
        .lines()
        .map(str::to_string)
        .collect();
    seen.sort();
    // core: PATH HOME USER LOGNAME SHELL; exclude: LOGNAME SHELL; set: HOME
    // GREETING DROPPED; include only: PATH HOME USER GREETING.
    let mut expected = vec![
        "GREETING=hello".to_string(),
        "HOME=/elsewhere".to_string(),
        format!("PATH={path}"),
        "USER=tester".to_string(),
    ];
    expected.sort();
    assert_eq!(seen, expected);
    server.child.kill().await.unwrap();
}

#[tokio::test]
async fn a_second_tool_runner_cannot_share_the_state_dir() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut first = start_with(
        dir.path(),
        "addr-1",
        &["--state-dir", state.to_str().unwrap()],
    )
    .await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keel-tool-runner"))
        .arg("--blob-url")
        .arg(format!("file://{}", dir.path().join("blobs").display()))
        .arg("--default-cwd")
        .arg(dir.path())
        .arg("--state-dir")
        .arg(&state)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--insecure-plaintext")
        .env_remove("KEEL_TOOL_RUNNER_STATE_DIR")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("in use by another tool-runner"), "{stderr}");
    first.child.kill().await.unwrap();
}
