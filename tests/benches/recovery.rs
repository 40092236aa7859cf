//! Time to recover after `kill -9` of the worker during a model call: from
//! the kill, through restarting the worker, to the turn's `turn_complete`
//! reaching a watching client. The model call's heartbeat timeout (3 s) and
//! retry back-off (0.5 s) bound how soon Temporal retries the activity on the
//! new worker; the sticky-queue timeout (2 s) then delays the turn's next
//! workflow task once. Also prints, from the restart (the worker process
//! started again), when the model call is retried and when the turn
//! completes. Several rounds; p50 and max.
//!
//! Run: `cargo build --workspace --bins && KEEL_BIN_DIR=$PWD/target/debug cargo bench -p keel-e2e --bench recovery`

use std::time::{Duration, Instant};

use keel_proto::v1 as pb;
use keel_test_support::fake_model::{FakeModel, Scripted, sse};
use keel_test_support::session;
use keel_test_support::stack::{Stack, StackOptions};
use pb::event::Msg;

const ROUNDS: usize = 5;

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let p50 = samples[samples.len() / 2];
    let max = samples[samples.len() - 1];
    println!(
        "{name:<44} n={:<3} p50 {:>8.0} ms   max {:>8.0} ms",
        samples.len(),
        p50.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut script = Vec::new();
    for round in 0..ROUNDS {
        // The first attempt stalls mid-stream; the worker dies under it.
        script.push(Scripted::stalled(vec![
            sse::created(),
            sse::text_delta(&format!("m{round}"), "never finished"),
        ]));
        script.push(Scripted::assistant(&format!("answer {round}")));
    }
    let fake = FakeModel::start(script).await?;
    let opts = StackOptions::new(fake.base_url());
    let mut stack = Stack::launch(opts).await?;
    let mut client = stack.connect().await?;
    let sid = session::create(&mut client, None).await?;
    let mut events = session::follow(&mut client, &sid, 0, false).await?;
    let (mut from_kill, mut from_restart, mut moved) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        session::send(&mut client, &sid, &format!("t{round}"), "go").await?;
        fake.wait_for_requests(2 * round + 1, Duration::from_secs(60))
            .await?;
        let killed = Instant::now();
        stack = tokio::task::spawn_blocking(move || -> anyhow::Result<Stack> {
            stack.kill("keel-worker")?;
            Ok(stack)
        })
        .await??;
        let restarted = Instant::now();
        stack = tokio::task::spawn_blocking(move || -> anyhow::Result<Stack> {
            stack.restart("keel-worker")?;
            Ok(stack)
        })
        .await??;
        // The turn moves again: the model call is retried on the new worker.
        fake.wait_for_requests(2 * round + 2, Duration::from_secs(60))
            .await?;
        moved.push(restarted.elapsed());
        session::until(&mut events, |e| {
            matches!(e.msg, Some(Msg::TurnComplete(_))).then_some(())
        })
        .await?;
        from_kill.push(killed.elapsed());
        from_restart.push(restarted.elapsed());
    }
    report("kill -9 worker mid model call -> turn_complete", from_kill);
    report("worker restart -> model call retried", moved);
    report("worker restart -> turn_complete", from_restart);
    Ok(())
}
