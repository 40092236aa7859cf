//! What the broker adds to an MCP call: `echo` of the npm server-everything
//! over stdio, called through the real keel-mcp-broker binary over gRPC
//! (which also stores the output item in a `file://` blob store), against
//! the same call made directly with an rmcp client to a server process of
//! its own. Both are measured in the same run, interleaved in rounds so
//! drift hits both alike; the goal is under 2 ms added at the median.
//!
//! `KEEL_MCP_SERVERS=… cargo bench -p keel-mcp-broker --bench overhead`
//! (scripts/test installs the servers; ITERATIONS overrides the count).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use keel_proto::v1::mcp_broker_service_client::McpBrokerServiceClient;
use keel_proto::v1::{CallMcpToolRequest, call_mcp_tool_response};
use keel_test_support::mcp;
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::TokioChildProcess;
use tonic::transport::Channel;

const DEFAULT_ITERATIONS: usize = 1000;
const WARMUP: usize = 50;
const ROUNDS: usize = 10;

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
    let (command, args) = mcp::everything();
    let (mut broker, client) = start(dir.path(), &command, &args).await;

    let mut cmd = tokio::process::Command::new(&command);
    cmd.args(&args);
    let (transport, _) = TokioChildProcess::builder(cmd)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let direct = ().serve(transport).await.unwrap();

    let mut n = 0u64;
    let mut via_broker = || {
        n += 1;
        let mut client = client.clone();
        async move {
            let mut stream = client
                .call_mcp_tool(CallMcpToolRequest {
                    session_id: "bench".into(),
                    call_id: format!("call-{n}"),
                    server: "everything".into(),
                    tool: "echo".into(),
                    arguments: r#"{"message":"hello"}"#.into(),
                })
                .await
                .unwrap()
                .into_inner();
            let msg = stream.message().await.unwrap().unwrap();
            let Some(call_mcp_tool_response::Kind::Outcome(r)) = msg.kind else {
                panic!("{msg:?}")
            };
            assert!(r.success, "{r:?}");
        }
    };
    let call_direct = || async {
        let mut params = CallToolRequestParams::new("echo");
        params.arguments = serde_json::json!({"message": "hello"}).as_object().cloned();
        let r = direct.call_tool(params).await.unwrap();
        assert_ne!(r.is_error, Some(true));
    };
    for _ in 0..WARMUP {
        via_broker().await;
        call_direct().await;
    }
    let per_round = iterations.div_ceil(ROUNDS);
    let mut broker_samples = Vec::with_capacity(iterations);
    let mut direct_samples = Vec::with_capacity(iterations);
    for _ in 0..ROUNDS {
        for _ in 0..per_round {
            let t = Instant::now();
            via_broker().await;
            broker_samples.push(t.elapsed());
        }
        for _ in 0..per_round {
            let t = Instant::now();
            call_direct().await;
            direct_samples.push(t.elapsed());
        }
    }
    let (b50, b99) = percentiles(&mut broker_samples);
    let (d50, d99) = percentiles(&mut direct_samples);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "MCP call overhead: echo on server-everything over stdio ({} calls each, {ROUNDS} interleaved rounds)",
        broker_samples.len()
    );
    println!(
        "  direct rmcp client            p50 {:>7.3} ms  p99 {:>7.3} ms",
        ms(d50),
        ms(d99)
    );
    println!(
        "  through keel-mcp-broker gRPC  p50 {:>7.3} ms  p99 {:>7.3} ms  ({:.2}x direct at p50)",
        ms(b50),
        ms(b99),
        b50.as_secs_f64() / d50.as_secs_f64()
    );
    println!(
        "  added by the broker           p50 {:>+7.3} ms  p99 {:>+7.3} ms  (goal: < 2 ms at p50)",
        ms(b50) - ms(d50),
        ms(b99) - ms(d99)
    );
    drop(client);
    let _ = direct.cancel().await;
    broker.kill().await.unwrap();
}

fn percentiles(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.99))
}

async fn start(
    dir: &Path,
    command: &str,
    args: &[String],
) -> (tokio::process::Child, McpBrokerServiceClient<Channel>) {
    let config = dir.join("config.toml");
    std::fs::write(&config, mcp::stdio_table("everything", command, args, "")).unwrap();
    let addr_file = dir.join("addr");
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_keel-mcp-broker"))
        .arg("--addr-file")
        .arg(&addr_file)
        .arg("--blob-url")
        .arg(format!("file://{}", dir.join("blobs").display()))
        .arg("--config")
        .arg(&config)
        // Measures a call's cost once connected; TLS costs at connect only.
        .arg("--insecure-plaintext")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        if let Ok(text) = std::fs::read_to_string(&addr_file) {
            break text.trim().to_string();
        }
        assert!(Instant::now() < deadline, "the broker did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let client = McpBrokerServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    (child, client)
}
