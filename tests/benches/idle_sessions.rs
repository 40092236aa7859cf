//! What idle sessions cost: 1000 sessions, each followed by a watching
//! client (`StreamEvents` with follow), nothing happening. Prints the CPU of
//! every Keel process and the Temporal dev server over a quiet window (as a
//! share of one core) and the resident memory of the worker and session-api.
//! Nothing should poll: CPU near zero, memory flat in the number of watchers.
//!
//! Run: `cargo build --release --workspace --bins && KEEL_BIN_DIR=$PWD/target/release cargo bench -p keel-e2e --bench idle_sessions`

use std::time::{Duration, Instant};

use futures::StreamExt;
use keel_test_support::fake_model::FakeModel;
use keel_test_support::measure::{cpu_time as cpu, rss_mib};
use keel_test_support::session;
use keel_test_support::stack::{PROCESSES, Stack, StackOptions};

const SESSIONS: usize = 1000;
/// Streams per HTTP/2 connection (servers cap concurrent streams).
const STREAMS_PER_CONNECTION: usize = 100;
const CREATE_CONCURRENCY: usize = 16;
const SETTLE: Duration = Duration::from_secs(5);
const WINDOW: Duration = Duration::from_secs(20);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let fake = FakeModel::start(Vec::new()).await?;
    let stack = Stack::launch(StackOptions::new(fake.base_url())).await?;

    let created = Instant::now();
    let client = stack.connect().await?;
    let ids: Vec<String> = futures::stream::iter(0..SESSIONS)
        .map(|_| {
            let mut c = client.clone();
            async move { session::create(&mut c, None).await }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    println!(
        "{SESSIONS} sessions created in {:.1} s",
        created.elapsed().as_secs_f64()
    );

    // One watching stream per session, drained in the background.
    let mut watchers = Vec::new();
    for chunk in ids.chunks(STREAMS_PER_CONNECTION) {
        let mut c = stack.connect().await?;
        for sid in chunk {
            let mut stream = session::follow(&mut c, sid, 0, true).await?;
            watchers.push(tokio::spawn(async move {
                while let Ok(Some(_)) = stream.message().await {}
            }));
        }
    }
    tokio::time::sleep(SETTLE).await;
    let rss_before: Vec<(&str, f64)> = ["keel-worker", "keel-session-api"]
        .iter()
        .map(|p| (*p, stack.pid(p).map(rss_mib).unwrap_or(f64::NAN)))
        .collect();

    let pids: Vec<(&str, u32)> = PROCESSES
        .iter()
        .filter_map(|p| stack.pid(p).ok().map(|pid| (*p, pid)))
        .collect();
    let before: Vec<Duration> = pids.iter().map(|(_, pid)| cpu(*pid)).collect();
    let start = Instant::now();
    tokio::time::sleep(WINDOW).await;
    let elapsed = start.elapsed();
    let mut total = 0.0;
    println!(
        "{SESSIONS} idle watched sessions, {:.0} s window, CPU as % of one core:",
        elapsed.as_secs_f64()
    );
    for ((name, pid), b) in pids.iter().zip(before) {
        let pct = cpu(*pid).saturating_sub(b).as_secs_f64() / elapsed.as_secs_f64() * 100.0;
        total += pct;
        println!("  {name:<18} {pct:>6.2} %");
    }
    println!("  {:<18} {total:>6.2} %", "all");
    let mut rss_total = 0.0;
    for (name, rss) in rss_before {
        rss_total += rss;
        println!("RSS {name:<18} {rss:>8.1} MiB");
    }
    println!("RSS {:<18} {rss_total:>8.1} MiB", "worker+session-api");
    let alive = watchers.iter().filter(|w| !w.is_finished()).count();
    println!("watching streams still open: {alive}/{SESSIONS}");
    for w in watchers {
        w.abort();
    }
    Ok(())
}
