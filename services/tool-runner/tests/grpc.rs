//! The real binary over gRPC: flags, serving, and that a cancelled call kills
//! the command it started.

// Test helpers may panic: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use keel_proto::v1::tool_service_client::ToolServiceClient;
use keel_proto::v1::{ExecRequest, RunToolRequest};
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tonic::transport::Channel;

struct Server {
    child: Child,
    client: ToolServiceClient<Channel>,
}

async fn start(dir: &Path) -> Server {
    let addr_file = dir.join("addr");
    let child = Command::new(env!("CARGO_BIN_EXE_keel-tool-runner"))
        .arg("--addr-file")
        .arg(&addr_file)
        .arg("--blob-url")
        .arg(format!("file://{}", dir.join("blobs").display()))
        .arg("--default-cwd")
        .arg(dir)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr = wait_for_file(&addr_file, Duration::from_secs(30)).await;
    let client = ToolServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    Server { child, client }
}

/// Polls (bounded) for a file another process writes atomically.
async fn wait_for_file(path: &Path, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            return text.trim().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
        })
        .await
        .unwrap()
        .into_inner();
    assert!(resp.success, "{}", resp.output_preview);
    // The item landed in the on-disk blob store.
    let digest = &resp.output_item_digest;
    let blob = dir
        .path()
        .join("blobs/sha256")
        .join(&digest[..2])
        .join(digest);
    let item: serde_json::Value = serde_json::from_slice(&std::fs::read(&blob).unwrap()).unwrap();
    assert_eq!(item["call_id"], "call_1");

    server.child.kill().await.unwrap();
}

#[tokio::test]
async fn cancelling_run_tool_kills_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path()).await;
    let pid_file = dir.path().join("pid");
    let script = format!(
        "sleep 30 & echo $! > {0}.tmp && mv {0}.tmp {0}; sleep 30",
        pid_file.display()
    );
    let args = serde_json::json!({ "command": ["sh", "-c", script] }).to_string();
    let mut client = server.client.clone();
    let call = tokio::spawn(async move {
        client
            .run_tool(RunToolRequest {
                session_id: "s".into(),
                call_id: "call_2".into(),
                tool_name: "shell".into(),
                arguments: args,
                cwd: String::new(),
                custom: false,
            })
            .await
    });
    let pid: i32 = wait_for_file(&pid_file, Duration::from_secs(10))
        .await
        .parse()
        .unwrap();
    assert!(!is_dead(pid));
    // Aborting drops the client future: tonic resets the stream and the server
    // drops the handler.
    call.abort();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !is_dead(pid) {
        assert!(
            Instant::now() < deadline,
            "command {pid} outlived its cancelled call"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.child.kill().await.unwrap();
}
