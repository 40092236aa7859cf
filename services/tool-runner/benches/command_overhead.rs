//! Per-command overhead of RunTool: `true` run through the real binary over
//! gRPC, sandboxed (workspace-write: the helper re-exec, mount namespace,
//! Landlock, seccomp) and unsandboxed (danger-full-access), against a bare
//! `std::process::Command` spawn of the same argv. RunTool's numbers
//! include the journal (two synced writes) and the blob store, which are
//! the same in both modes; the difference between them is the sandbox.
//!
//! `cargo bench -p keel-tool-runner --bench command_overhead` (ITERATIONS
//! overrides the sample count).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use keel_proto::v1::tool_service_client::ToolServiceClient;
use keel_proto::v1::{RunToolRequest, SandboxMode, SandboxPolicy};
use tonic::transport::Channel;

const DEFAULT_ITERATIONS: usize = 200;
const WARMUP: usize = 10;

fn main() {
    let iterations = std::env::var("ITERATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_ITERATIONS);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(run(iterations));
}

async fn run(iterations: usize) {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, mut client) = start(dir.path()).await;

    let bare = median(iterations, || async {
        let status = std::process::Command::new("true")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .status()
            .unwrap();
        assert!(status.success());
    })
    .await;

    let mut calls = 0u64;
    let mut run_tool = |mode: SandboxMode| {
        calls += 1;
        let mut client = client.clone();
        let cwd = dir.path().display().to_string();
        async move {
            let resp = client
                .run_tool(RunToolRequest {
                    session_id: "bench".into(),
                    call_id: format!("call-{calls}"),
                    tool_name: "shell".into(),
                    arguments: r#"{"command":["true"]}"#.into(),
                    cwd,
                    sandbox: Some(SandboxPolicy {
                        mode: mode.into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            assert!(resp.success, "{}", resp.output_preview);
        }
    };
    let unsandboxed = median(iterations, || run_tool(SandboxMode::DangerFullAccess)).await;
    let sandboxed = median(iterations, || run_tool(SandboxMode::WorkspaceWrite)).await;
    let read_only = median(iterations, || run_tool(SandboxMode::ReadOnly)).await;
    let status = client
        .get_sandbox_status(keel_proto::v1::GetSandboxStatusRequest {})
        .await
        .unwrap()
        .into_inner();

    println!("command overhead of `true` ({iterations} runs each, medians)");
    println!("  sandbox: {} {}", status.mechanism, status.detail);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "  bare std::process::Command spawn     {:>8.3} ms",
        ms(bare)
    );
    println!(
        "  RunTool danger-full-access (direct)  {:>8.3} ms  {:>6.1}x bare",
        ms(unsandboxed),
        ratio(unsandboxed, bare)
    );
    println!(
        "  RunTool workspace-write (sandboxed)  {:>8.3} ms  {:>6.1}x bare  {:>5.2}x unsandboxed  (+{:.3} ms)",
        ms(sandboxed),
        ratio(sandboxed, bare),
        ratio(sandboxed, unsandboxed),
        ms(sandboxed.saturating_sub(unsandboxed))
    );
    println!(
        "  RunTool read-only (sandboxed)        {:>8.3} ms  {:>6.1}x bare  {:>5.2}x unsandboxed  (+{:.3} ms)",
        ms(read_only),
        ratio(read_only, bare),
        ratio(read_only, unsandboxed),
        ms(read_only.saturating_sub(unsandboxed))
    );
    drop(client);
    server.kill().await.unwrap();
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

/// The median duration of `iterations` runs of `f`, after a warm-up.
async fn median<F, Fut>(iterations: usize, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for _ in 0..WARMUP {
        f().await;
    }
    let mut samples = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let start = Instant::now();
        f().await;
        samples.push(start.elapsed());
    }
    samples.sort();
    samples[samples.len() / 2]
}

async fn start(dir: &Path) -> (tokio::process::Child, ToolServiceClient<Channel>) {
    let addr_file = dir.join("addr");
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_keel-tool-runner"))
        .arg("--addr-file")
        .arg(&addr_file)
        .arg("--blob-url")
        .arg(format!("file://{}", dir.join("blobs").display()))
        .arg("--default-cwd")
        .arg(dir)
        // Measures a call's cost once connected; TLS costs at connect only.
        .arg("--insecure-plaintext")
        .env("RUST_LOG", "warn")
        .env_remove("KEEL_TOOL_RUNNER_STATE_DIR")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        if let Ok(text) = std::fs::read_to_string(&addr_file) {
            break text.trim().to_string();
        }
        assert!(Instant::now() < deadline, "the tool-runner did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let client = ToolServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    (child, client)
}
