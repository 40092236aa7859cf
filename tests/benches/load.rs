//! Load with the limits on: 100 sessions in 10 tenants, 10 turns each,
//! all at once, against one stack on this machine (mutual TLS between the
//! services, bearer tokens, session-api's default per-tenant limits). Every
//! turn must complete; a call refused by a limit is retried after the wait
//! its RetryInfo names (and counted). Prints throughput, turn latency
//! (SendUserTurn until `turn_complete` reaches the client) and the CPU of
//! each process.
//!
//! Run: `cargo build --release --workspace --bins && KEEL_BIN_DIR=$PWD/target/release cargo bench -p keel-e2e --bench load`

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use keel_proto::v1 as pb;
use keel_test_support::fake_model::{FakeModel, Scripted};
use keel_test_support::measure::cpu_time;
use keel_test_support::session::{self, Client};
use keel_test_support::stack::{PROCESSES, Stack, StackOptions};
use pb::event::Msg;

const TENANTS: usize = 10;
const SESSIONS_PER_TENANT: usize = 10;
const TURNS: usize = 10;

/// Calls `f` until it is not refused by a limit, waiting as told.
async fn patiently<T, F, Fut>(refusals: &AtomicUsize, mut f: F) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    loop {
        match f().await {
            Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                refusals.fetch_add(1, Ordering::Relaxed);
                let wait =
                    keel_proto::errors::retry_info(&status).unwrap_or(Duration::from_millis(500));
                tokio::time::sleep(wait).await;
            }
            other => return other,
        }
    }
}

/// One session: TURNS turns, one after another; the latency of each.
async fn run_session(
    mut client: Client,
    refusals: Arc<AtomicUsize>,
) -> anyhow::Result<Vec<Duration>> {
    let sid = patiently(&refusals, || {
        let mut c = client.clone();
        async move {
            c.create_session(pb::CreateSessionRequest::default())
                .await
                .map(|r| r.into_inner().session.map(|s| s.session_id))
        }
    })
    .await?
    .context("no session")?;
    let mut events = session::follow(&mut client, &sid, 0, false).await?;
    let mut latencies = Vec::with_capacity(TURNS);
    for turn in 0..TURNS {
        let turn_id = format!("t{turn}");
        let sent = Instant::now();
        patiently(&refusals, || {
            let mut c = client.clone();
            let (sid, turn_id) = (sid.clone(), turn_id.clone());
            async move {
                c.send_user_turn(pb::SendUserTurnRequest {
                    session_id: sid,
                    text: format!("turn {turn}"),
                    turn_id,
                    ..Default::default()
                })
                .await
                .map(drop)
            }
        })
        .await?;
        let (_, end) = session::until(&mut events, |e| match &e.msg {
            Some(Msg::TurnComplete(_)) if e.turn_id == turn_id => Some(Ok(())),
            Some(Msg::TurnAborted(_) | Msg::Error(_)) if e.turn_id == turn_id => {
                Some(Err(format!("{e:?}")))
            }
            _ => None,
        })
        .await?;
        if let Err(e) = end {
            bail!("session {sid} turn {turn_id} failed: {e}");
        }
        latencies.push(sent.elapsed());
    }
    Ok(latencies)
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let turns = TENANTS * SESSIONS_PER_TENANT * TURNS;
    let fake = FakeModel::start(
        (0..turns)
            .map(|i| Scripted::assistant(&format!("answer {i}")))
            .collect(),
    )
    .await?;
    let stack = Stack::launch(StackOptions::new(fake.base_url())).await?;

    // A token per tenant; session-api picks the file up within a second.
    let mut tenants = Vec::new();
    for t in 0..TENANTS {
        let token = keel_auth::append_token(
            &stack.tokens_file,
            &format!("load-{t}"),
            &format!("load-{t}"),
        )?;
        tenants.push(token);
    }
    let mut clients = Vec::new();
    for token in &tenants {
        let mut client = session::connect(&stack.session_api, Some(token)).await?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while client
            .list_sessions(pb::ListSessionsRequest::default())
            .await
            .is_err()
        {
            if Instant::now() > deadline {
                bail!("the load tenants' tokens were never accepted");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        clients.push(client);
    }

    let pids: Vec<(&str, u32)> = PROCESSES
        .iter()
        .filter_map(|p| stack.pid(p).ok().map(|pid| (*p, pid)))
        .collect();
    let cpu_before: Vec<Duration> = pids.iter().map(|(_, pid)| cpu_time(*pid)).collect();
    let refusals = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let runs = clients.iter().flat_map(|client| {
        (0..SESSIONS_PER_TENANT).map(|_| run_session(client.clone(), refusals.clone()))
    });
    let results = futures::future::join_all(runs).await;
    let elapsed = started.elapsed();

    let mut latencies = Vec::new();
    let mut failures = Vec::new();
    for result in results {
        match result {
            Ok(l) => latencies.extend(l),
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    latencies.sort();
    println!(
        "{} sessions x {TURNS} turns in {TENANTS} tenants: {} turns in {:.1} s = {:.1} turns/s; {} failures; {} refusals by a limit (retried)",
        TENANTS * SESSIONS_PER_TENANT,
        latencies.len(),
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        failures.len(),
        refusals.load(Ordering::Relaxed),
    );
    if !latencies.is_empty() {
        println!(
            "turn latency (send -> turn_complete at the client): p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            pct(&latencies, 0.5),
            pct(&latencies, 0.9),
            pct(&latencies, 0.99),
            pct(&latencies, 1.0),
        );
    }
    for ((name, pid), before) in pids.iter().zip(&cpu_before) {
        let used = cpu_time(*pid).saturating_sub(*before);
        println!(
            "  {name:<18} CPU {:>6.1} s ({:>5.1}% of one core)",
            used.as_secs_f64(),
            100.0 * used.as_secs_f64() / elapsed.as_secs_f64()
        );
    }
    if !failures.is_empty() {
        bail!("{} sessions failed; first: {}", failures.len(), failures[0]);
    }
    if latencies.len() != turns {
        bail!("{} of {turns} turns completed", latencies.len());
    }
    Ok(())
}
