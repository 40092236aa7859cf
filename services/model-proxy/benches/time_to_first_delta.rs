//! Time to the first text delta: through the model-proxy (real gRPC on
//! loopback, blob store in a temporary directory) versus calling the
//! scripted fake model API directly, sequentially, N calls each (default
//! 200; `KEEL_BENCH_CALLS` to change). Run with `cargo bench -p
//! keel-model-proxy`; prints p50/p99/mean and the proxy's added latency.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use keel_blobstore::{BlobStore, conversation};
use keel_model_proxy::{ApiKey, Config, ModelProxy};
use keel_proto::v1::model_service_client::ModelServiceClient;
use keel_proto::v1::stream_response_response::Event;
use keel_proto::v1::{ConversationInput, ItemInput, StreamResponseRequest, item_input};
use keel_test_support::fake_model::{FakeModel, Scripted};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tonic::transport::Channel;
use tonic::transport::server::TcpIncoming;

const WARMUP: usize = 20;
const HISTORY_ITEMS: usize = 100;

fn main() {
    let calls: usize = std::env::var("KEEL_BENCH_CALLS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(calls));
}

async fn run(calls: usize) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let fake = FakeModel::start(vec![]).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let blobs = BlobStore::open(&format!("file://{}", tmp.path().join("blobs").display())).unwrap();
    let config = Config::single(&fake.base_url(), ApiKey::new("sk-bench"), "gpt-bench");
    let proxy = ModelProxy::new(config, blobs.clone()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(proxy.into_server())
            .serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true))),
    );
    let mut client = ModelServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let history = history(&blobs).await;

    let push = |n: usize| {
        for i in 0..n {
            fake.push(Scripted::assistant(&format!("answer {i}")));
        }
    };
    push(3 * (calls + WARMUP));
    for _ in 0..WARMUP {
        direct(&http, &fake.base_url()).await;
        via_proxy(&mut client, "").await;
        via_proxy(&mut client, &history).await;
    }
    let mut direct_times = Vec::with_capacity(calls);
    let mut proxy_times = Vec::with_capacity(calls);
    let mut history_times = Vec::with_capacity(calls);
    // Interleaved, so drift on the machine affects all three alike.
    for _ in 0..calls {
        direct_times.push(direct(&http, &fake.base_url()).await);
        proxy_times.push(via_proxy(&mut client, "").await);
        history_times.push(via_proxy(&mut client, &history).await);
    }

    println!(
        "time to first text delta, {calls} sequential calls each (after {WARMUP} warm-up calls)"
    );
    let d = Stats::of(direct_times);
    let p = Stats::of(proxy_times);
    let hh = Stats::of(history_times);
    d.print("direct to the fake model API");
    p.print("through the model-proxy, new conversation");
    hh.print(&format!(
        "through the model-proxy, {HISTORY_ITEMS}-item conversation"
    ));
    println!(
        "added by the proxy (new conversation):      p50 {:>8.3} ms   p99 {:>8.3} ms",
        ms(p.p50.saturating_sub(d.p50)),
        ms(p.p99.saturating_sub(d.p99))
    );
    println!(
        "added by the proxy ({HISTORY_ITEMS}-item conversation): p50 {:>8.3} ms   p99 {:>8.3} ms",
        ms(hh.p50.saturating_sub(d.p50)),
        ms(hh.p99.saturating_sub(d.p99))
    );
}

/// A stored conversation of `HISTORY_ITEMS` small messages; its head.
async fn history(blobs: &BlobStore) -> String {
    let mut digests = Vec::new();
    for i in 0..HISTORY_ITEMS {
        let role = if i % 2 == 0 { "user" } else { "assistant" };
        let kind = if i % 2 == 0 {
            "input_text"
        } else {
            "output_text"
        };
        let item = json!({"type": "message", "role": role,
            "content": [{"type": kind, "text": format!("message {i}: {}", "lorem ipsum ".repeat(20))}]});
        digests.push(blobs.put_json(&item).await.unwrap());
    }
    conversation::append(blobs, None, digests)
        .await
        .unwrap()
        .unwrap()
}

fn user_message() -> Value {
    json!({"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello"}]})
}

async fn via_proxy(client: &mut ModelServiceClient<Channel>, head: &str) -> Duration {
    let req = StreamResponseRequest {
        session_id: "bench".into(),
        instructions: "You are a coding agent.".into(),
        conversation: Some(ConversationInput {
            head: head.to_string(),
            append: vec![ItemInput {
                kind: Some(item_input::Kind::InlineJson(user_message().to_string())),
            }],
        }),
        ..StreamResponseRequest::default()
    };
    let started = Instant::now();
    let mut stream = client.stream_response(req).await.unwrap().into_inner();
    let mut first = None;
    while let Some(msg) = stream.message().await.unwrap() {
        if first.is_none() && matches!(msg.event, Some(Event::OutputTextDelta(_))) {
            first = Some(started.elapsed());
        }
    }
    first.expect("a text delta")
}

async fn direct(http: &reqwest::Client, base_url: &str) -> Duration {
    let body = json!({"model": "gpt-bench", "instructions": "You are a coding agent.",
        "input": [user_message()], "tools": [], "stream": true, "store": false});
    let started = Instant::now();
    let resp = http
        .post(format!("{base_url}/responses"))
        .bearer_auth("sk-bench")
        .json(&body)
        .send()
        .await
        .unwrap();
    let mut bytes = resp.bytes_stream();
    let mut seen = Vec::new();
    let mut first = None;
    while let Some(chunk) = bytes.next().await {
        seen.extend_from_slice(&chunk.unwrap());
        if first.is_none() && contains(&seen, b"response.output_text.delta") {
            first = Some(started.elapsed());
        }
    }
    first.expect("a text delta")
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

struct Stats {
    p50: Duration,
    p99: Duration,
    mean: Duration,
}

impl Stats {
    fn of(mut times: Vec<Duration>) -> Self {
        times.sort();
        let at =
            |q: f64| times[((times.len() as f64 * q).ceil() as usize).clamp(1, times.len()) - 1];
        let total: Duration = times.iter().sum();
        Self {
            p50: at(0.50),
            p99: at(0.99),
            mean: total / times.len() as u32,
        }
    }

    fn print(&self, what: &str) {
        println!(
            "{what:<48} p50 {:>8.3} ms   p99 {:>8.3} ms   mean {:>8.3} ms",
            ms(self.p50),
            ms(self.p99),
            ms(self.mean)
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
