//! Event latency as a client sees it: a live delta from the moment the fake
//! model API writes it to the moment a watching gRPC client receives it, a
//! durable `agent_message` from the model's `response.completed` to the
//! client, and every durable event from the commit of the workflow task that
//! emitted it (by Temporal's history timestamps) to the client. Also the
//! first output as `keel run` sees it: from `CreateSession` to the session's
//! first event, and from `SendUserTurn` to `turn_started`. Prints p50 and p99.
//!
//! Run: `cargo build --release --workspace --bins && KEEL_BIN_DIR=$PWD/target/release cargo bench -p keel-e2e --bench latency`

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use keel_proto::v1 as pb;
use keel_test_support::fake_model::{FakeModel, Scripted, sse};
use keel_test_support::stack::{Stack, StackOptions};
use keel_test_support::{history, session};
use pb::event::Msg;
use pb::stream_events_response::Kind;

const TURNS: usize = 10;
const DELTAS: usize = 40;
const PACE: Duration = Duration::from_millis(20);

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{name:<40} n={:<5} p50 {:>8.2} ms   p99 {:>8.2} ms",
        samples.len(),
        percentile(&samples, 0.50).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let script = (0..TURNS)
        .map(|t| {
            let item = format!("m{t}");
            let mut events = vec![sse::created()];
            let words: Vec<String> = (0..DELTAS).map(|i| format!("t{t}w{i} ")).collect();
            events.extend(words.iter().map(|w| sse::text_delta(&item, w)));
            events.push(sse::message(&item, &words.concat()));
            events.push(sse::completed(&format!("r{t}"), 10, 5));
            Scripted::paced(events, PACE)
        })
        .collect();
    let fake = FakeModel::start(script).await?;
    let opts = StackOptions::new(fake.base_url());
    let stack = Stack::launch(opts).await?;
    let mut client = stack.connect().await?;
    let created = Instant::now();
    let sid = session::create(&mut client, None).await?;
    let mut stream = session::follow(&mut client, &sid, 0, true).await?;
    let mut first_event = Vec::new();
    let mut turn_started = Vec::new();
    let mut received: Vec<(pb::Event, SystemTime)> = Vec::new();
    let mut delta_seen: HashMap<String, Instant> = HashMap::new();
    let mut message_seen: HashMap<String, Instant> = HashMap::new();
    for t in 0..TURNS {
        let sent_at = Instant::now();
        session::send(
            &mut client,
            &sid,
            &format!("turn-{t}"),
            &format!("turn {t}"),
        )
        .await?;
        while let Some(m) = stream.message().await? {
            let now = Instant::now();
            match m.kind {
                Some(Kind::Delta(d)) => {
                    delta_seen.insert(d.delta, now);
                }
                Some(Kind::Event(e)) => {
                    if first_event.is_empty() {
                        first_event.push(now.duration_since(created));
                    }
                    if matches!(e.msg, Some(Msg::TurnStarted(_))) {
                        turn_started.push(now.duration_since(sent_at));
                    }
                    received.push((e.clone(), SystemTime::now()));
                    match e.msg {
                        Some(Msg::AgentMessage(a)) => {
                            message_seen.insert(a.message, now);
                        }
                        Some(Msg::TurnComplete(_)) if e.turn_id == format!("turn-{t}") => break,
                        _ => {}
                    }
                }
                _ => {}
            }
        }
    }
    let sent = fake.sent_events();
    let mut deltas = Vec::new();
    let mut durable = Vec::new();
    let mut last_message = String::new();
    for (at, data) in &sent {
        match data["type"].as_str() {
            Some("response.output_text.delta") => {
                if let Some(seen) = delta_seen.get(data["delta"].as_str().unwrap_or("")) {
                    deltas.push(seen.saturating_duration_since(*at));
                }
            }
            Some("response.output_item.done") => {
                last_message = data["item"]["content"][0]["text"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
            }
            Some("response.completed") => {
                if let Some(seen) = message_seen.get(&last_message) {
                    durable.push(seen.saturating_duration_since(*at));
                }
            }
            _ => {}
        }
    }
    println!("{TURNS} turns × {DELTAS} deltas, {PACE:?} apart, one watching client");
    report("live delta (fake writes → client)", deltas);
    report("durable agent_message (completed → client)", durable);
    let temporal = history::temporal_client(&stack.temporal_address).await?;
    let timeline = history::timeline(&history::history_json(&temporal, &sid).await?)?;
    let after_commit: Vec<Duration> = received
        .iter()
        .filter_map(|(e, at)| {
            let emitted = history::keel_event_time(e)?;
            at.duration_since(timeline.committed_at(emitted)?).ok()
        })
        .collect();
    report("durable events (task committed → client)", after_commit);
    report("first output (CreateSession → 1st event)", first_event);
    report("turn_started (SendUserTurn → client)", turn_started);
    Ok(())
}
