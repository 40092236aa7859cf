//! Measurements over a real stack, shared by benchmarks and tests.

use std::time::Duration;

use anyhow::{Context, bail};
use keel_proto::v1 as pb;
use pb::event::Msg;
use serde_json::json;

use crate::fake_model::{FakeModel, Scripted, sse};
use crate::history::{self, ActivityPayloads};
use crate::session;
use crate::stack::{Stack, StackOptions};

const WAIT: Duration = Duration::from_secs(120);

/// Named series of numbers a benchmark collects, and their percentiles.
#[derive(Debug, Default)]
pub struct Samples(std::collections::BTreeMap<String, Vec<f64>>);

impl Samples {
    pub fn add(&mut self, key: &str, v: f64) {
        self.0.entry(key.to_string()).or_default().push(v);
    }

    pub fn median(&self, key: &str) -> f64 {
        self.pct(key, 0.5)
    }

    /// How many numbers `key` has.
    pub fn count(&self, key: &str) -> usize {
        self.0.get(key).map_or(0, Vec::len)
    }

    /// Every series' name, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// The `p` percentile (0.0–1.0, nearest rank) of `key`'s numbers; NaN
    /// when there are none.
    pub fn pct(&self, key: &str, p: f64) -> f64 {
        let mut v = self.0.get(key).cloned().unwrap_or_default();
        if v.is_empty() {
            return f64::NAN;
        }
        v.sort_by(f64::total_cmp);
        v[((v.len() - 1) as f64 * p).round() as usize]
    }
}

/// Runs a session whose first turn leaves a conversation of `items` items
/// (the model answers with `items - 2` messages at once), then a second turn,
/// and returns the payload sizes of the second turn's model call — the call
/// that carries a conversation of `items` items.
pub async fn model_call_payloads_at(items: usize) -> anyhow::Result<ActivityPayloads> {
    if items < 3 {
        bail!("need at least 3 items");
    }
    let mut events = vec![sse::created()];
    for i in 0..items - 2 {
        events.push(sse::message(
            &format!("m{i}"),
            &format!("part {i} of a long answer"),
        ));
    }
    events.push(sse::completed("r1", 10, 5));
    let fake =
        FakeModel::start(vec![Scripted::Events(events), Scripted::assistant("done")]).await?;
    let opts = StackOptions::new(fake.base_url());
    let stack = tokio::task::spawn_blocking(move || Stack::start(opts)).await??;
    let mut client = stack.connect().await?;
    let sid = session::create(&mut client, None).await?;
    for (turn, text) in [("turn-1", "write a lot"), ("turn-2", "thanks")] {
        session::send(&mut client, &sid, turn, text).await?;
    }
    let mut stream = session::follow(&mut client, &sid, 0, false).await?;
    tokio::time::timeout(WAIT, async {
        while let Some(m) = stream.message().await? {
            if let Some(pb::stream_events_response::Kind::Event(e)) = m.kind
                && e.turn_id == "turn-2"
                && matches!(e.msg, Some(Msg::TurnComplete(_)))
            {
                return Ok(());
            }
        }
        bail!("stream ended early")
    })
    .await
    .context("turns did not finish")??;
    let requests = fake.wait_for_requests(2, WAIT).await?;
    let sent = requests[1].conversation().len();
    if sent != items {
        bail!(
            "expected the model to get {items} items, it got {sent}: {:?}",
            json!(requests[1].conversation().len())
        );
    }
    let temporal = history::temporal_client(&stack.temporal_address).await?;
    let json = history::history_json(&temporal, &sid).await?;
    history::activity_payloads(&json)?
        .into_iter()
        .filter(|a| a.activity_type == "model_call")
        .nth(1)
        .context("no second model call in history")
}

/// CPU time a process and its reaped children have used (/proc/PID/stat
/// fields 14–17, in clock ticks of 10 ms); zero when the process is gone.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let ticks: u64 = after_name
        .split_whitespace()
        .skip(11)
        .take(4)
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 10)
}

/// A process's resident memory in MiB (VmRSS); NaN when unknown.
pub fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}
