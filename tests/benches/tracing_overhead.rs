//! What exporting traces costs per agent step: two stacks side by side,
//! one with tracing off (the default) and one exporting every span over
//! OTLP/gRPC to a receiver in this process, running the same multi-step
//! turns alternately, round after round.
//!
//! Printed: ms per step inside the workflow (from the `user_turn` signal to
//! the turn's last workflow task, by history), the client's wall time per
//! step, CPU per step of each Keel process and the dev server, the spans
//! the traced stack exported per step, and the traced ÷ untraced ratios.
//!
//! Run: `cargo build --release --workspace --bins && KEEL_BIN_DIR=$PWD/target/release cargo bench -p keel-e2e --bench tracing_overhead`

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use keel_proto::v1 as pb;
use keel_test_support::fake_model::{FakeModel, Scripted, sse};
use keel_test_support::history;
use keel_test_support::measure::{Samples, cpu_time as cpu};
use keel_test_support::otlp::OtlpReceiver;
use keel_test_support::session;
use keel_test_support::stack::{Stack, StackOptions};
use pb::event::Msg;

/// Rounds unless `KEEL_BENCH_ROUNDS` says otherwise.
const ROUNDS: usize = 10;
/// Tool steps in a turn.
const STEPS: usize = 10;
const WAIT: Duration = Duration::from_secs(120);
const PROCS: [&str; 5] = [
    "temporal",
    "keel-session-api",
    "keel-worker",
    "keel-model-proxy",
    "keel-tool-runner",
];

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One stack and a session on it with a following stream.
struct Side {
    name: &'static str,
    fake: FakeModel,
    stack: Stack,
    client: session::Client,
    sid: String,
    stream: tonic::Streaming<pb::StreamEventsResponse>,
    temporal: temporalio_client::Client,
    turns: u32,
}

impl Side {
    async fn start(name: &'static str, env: Vec<(String, String)>) -> anyhow::Result<Self> {
        let fake = FakeModel::start(Vec::new()).await?;
        let mut options = StackOptions::new(fake.base_url());
        options.env = env;
        let stack = Stack::launch(options).await?;
        let mut client = stack.connect().await?;
        let sid = session::create(&mut client, None).await?;
        let stream = session::follow(&mut client, &sid, 0, false).await?;
        let temporal = history::temporal_client(&stack.temporal_address).await?;
        Ok(Self {
            name,
            fake,
            stack,
            client,
            sid,
            stream,
            temporal,
            turns: 0,
        })
    }

    fn cpu(&self) -> BTreeMap<&'static str, Duration> {
        PROCS
            .iter()
            .map(|p| (*p, self.stack.pid(p).map(cpu).unwrap_or_default()))
            .collect()
    }

    /// One turn of `STEPS` tool steps; adds its numbers to `samples`.
    async fn turn(&mut self, samples: &mut Samples) -> anyhow::Result<()> {
        for i in 0..STEPS {
            self.fake.push(Scripted::Events(vec![
                sse::created(),
                sse::function_call(
                    &format!("call_{}_{i}", self.turns),
                    "shell",
                    r#"{"command":["bash","-c","true"]}"#,
                ),
                sse::completed(&format!("r{i}"), 10, 5),
            ]));
        }
        self.fake.push(Scripted::assistant("done"));
        self.turns += 1;
        let turn_id = format!("turn-{}", self.turns);
        let before = self.cpu();
        let start = Instant::now();
        session::send(&mut self.client, &self.sid, &turn_id, "go").await?;
        let stream = &mut self.stream;
        tokio::time::timeout(WAIT, async {
            while let Some(m) = stream.message().await? {
                if let Some(pb::stream_events_response::Kind::Event(e)) = m.kind
                    && e.turn_id == turn_id
                    && matches!(e.msg, Some(Msg::TurnComplete(_)))
                {
                    return Ok(());
                }
            }
            bail!("stream ended before the turn completed")
        })
        .await
        .context("turn did not complete")??;
        let wall = start.elapsed();
        let after = self.cpu();
        let json = history::history_json(&self.temporal, &self.sid).await?;
        let own = history::timeline(&json)?.last_turn()?;
        let side = self.name;
        samples.add(&format!("{side} step"), ms(own) / STEPS as f64);
        samples.add(&format!("{side} wall"), ms(wall) / STEPS as f64);
        let mut total = Duration::ZERO;
        for (name, a) in &after {
            let used = a.saturating_sub(before.get(name).copied().unwrap_or_default());
            total += used;
            samples.add(&format!("{side} cpu {name}"), ms(used) / STEPS as f64);
        }
        samples.add(&format!("{side} cpu all"), ms(total) / STEPS as f64);
        Ok(())
    }
}

/// The spans received once the last batches have arrived: the count stays
/// the same for longer than the batch processor's 5 s schedule delay.
async fn settled(receiver: &OtlpReceiver) -> usize {
    let mut last = (receiver.spans().len(), Instant::now());
    while last.1.elapsed() < Duration::from_secs(6) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = receiver.spans().len();
        if now != last.0 {
            last = (now, Instant::now());
        }
    }
    last.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let receiver = OtlpReceiver::start().await?;
    let mut off = Side::start("off", Vec::new()).await?;
    // The batch processor's defaults (a 5 s schedule delay), as deployed.
    let env = vec![
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT".to_string(),
            receiver.grpc_endpoint(),
        ),
        (
            "OTEL_EXPORTER_OTLP_PROTOCOL".to_string(),
            "grpc".to_string(),
        ),
    ];
    let mut on = Side::start("on", env).await?;
    let mut samples = Samples::default();
    // A warm-up turn each, not counted.
    off.turn(&mut Samples::default()).await?;
    on.turn(&mut Samples::default()).await?;
    let rounds: usize = std::env::var("KEEL_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(ROUNDS);
    let spans_before = settled(&receiver).await;
    for round in 0..rounds {
        // Alternate which goes first.
        if round % 2 == 0 {
            off.turn(&mut samples).await?;
            on.turn(&mut samples).await?;
        } else {
            on.turn(&mut samples).await?;
            off.turn(&mut samples).await?;
        }
    }
    let spans_after = settled(&receiver).await;
    let spans = spans_after.saturating_sub(spans_before);

    println!(
        "tracing overhead: {rounds} rounds x {STEPS} steps per side, alternated (medians per step)"
    );
    println!("{:<28} {:>10} {:>10} {:>8}", "", "off", "on", "on/off");
    let mut keys: Vec<&str> = vec!["step", "wall", "cpu all"];
    let cpu_keys: Vec<String> = PROCS.iter().map(|p| format!("cpu {p}")).collect();
    keys.extend(cpu_keys.iter().map(String::as_str));
    for key in keys {
        let a = samples.median(&format!("off {key}"));
        let b = samples.median(&format!("on {key}"));
        let label = match key {
            "step" => "ms/step inside the workflow".to_string(),
            "wall" => "ms/step as the client sees".to_string(),
            other => format!("{other} (ms/step)"),
        };
        println!("{label:<28} {a:>10.2} {b:>10.2} {:>8.3}", b / a);
    }
    println!(
        "spans exported by the traced stack: {spans} ({:.1} per step)",
        spans as f64 / (rounds * STEPS) as f64
    );
    Ok(())
}
