//! Throughput of sleep-bound commands over one tool-runner and over three,
//! each limited to `LIMIT` concurrent commands (`--max-concurrent-commands`):
//! `SESSIONS` sessions start together and each runs one `sleep` command.
//! Measured: the command phase (from the first `exec_command_begin` to the
//! last `exec_command_end`, by the events' workflow times) and the whole run
//! (until every turn completed, which adds each turn's setup and model calls,
//! the same with any number of runners). Three runners hold three times the
//! command slots, so the same-run ratio of the command-phase throughputs
//! should approach 3 (the goal is at least 2.5). Also prints how many
//! sessions each runner took (leases are spread evenly).
//!
//! Run: `cargo build --workspace --bins && KEEL_BIN_DIR=$PWD/target/debug cargo bench -p keel-e2e --bench fleet`

use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;

use keel_proto::v1 as pb;
use keel_proto::v1::tool_service_client::ToolServiceClient;
use keel_test_support::fake_model::{FakeModel, Scripted};
use keel_test_support::session;
use keel_test_support::stack::{Stack, StackOptions};
use pb::event::Msg;

const SESSIONS: usize = 24;
const LIMIT: u32 = 2;
/// Long against a turn's own overhead (session setup and two model calls,
/// about a second on debug builds), which does not scale with runners.
const COMMAND_SECS: f64 = 2.0;

struct Measured {
    /// Until every turn completed.
    wall: Duration,
    /// First command begun to last command ended.
    commands: Duration,
    leases: Vec<u32>,
}

fn time(e: &pb::Event) -> SystemTime {
    let t = e.time.unwrap_or_default();
    SystemTime::UNIX_EPOCH + Duration::new(t.seconds as u64, t.nanos as u32)
}

/// Runs the sessions over `runners` tool-runners.
async fn run(runners: usize) -> anyhow::Result<Measured> {
    let command = serde_json::json!({"command": ["sleep", COMMAND_SECS.to_string()]}).to_string();
    // Every session's first request gets a command and its second the
    // answer; whichever session asks first, each runs exactly one command.
    let mut script: Vec<Scripted> = (0..SESSIONS)
        .map(|_| Scripted::tool_call("c1", "shell", &command))
        .collect();
    script.extend((0..SESSIONS).map(|_| Scripted::assistant("slept")));
    let fake = FakeModel::start(script).await?;
    let mut opts = StackOptions::new(fake.base_url());
    opts.tool_runner_replicas = runners;
    opts.tool_runner_env = vec![(
        "KEEL_MAX_CONCURRENT_COMMANDS".to_string(),
        LIMIT.to_string(),
    )];
    let stack = Stack::launch(opts).await?;
    let mut client = stack.connect().await?;
    let mut sessions = Vec::new();
    for _ in 0..SESSIONS {
        sessions.push(session::create(&mut client, None).await?);
    }
    let started = Instant::now();
    let mut waits = Vec::new();
    for sid in sessions {
        let mut client = stack.connect().await?;
        waits.push(tokio::spawn(async move {
            let mut events = session::follow(&mut client, &sid, 0, false).await?;
            session::send(&mut client, &sid, "t1", "sleep").await?;
            let (seen, _) = session::until(&mut events, |e| {
                matches!(e.msg, Some(Msg::TurnComplete(_))).then_some(())
            })
            .await?;
            let begun = seen
                .iter()
                .find(|e| matches!(e.msg, Some(Msg::ExecCommandBegin(_))))
                .map(time);
            let ended = seen
                .iter()
                .find(|e| matches!(e.msg, Some(Msg::ExecCommandEnd(_))))
                .map(time);
            anyhow::Ok(begun.zip(ended))
        }));
    }
    let mut first = None::<SystemTime>;
    let mut last = None::<SystemTime>;
    for wait in waits {
        let (begun, ended) = wait.await??.context("a session ran no command")?;
        first = Some(first.map_or(begun, |f| f.min(begun)));
        last = Some(last.map_or(ended, |l| l.max(ended)));
    }
    let wall = started.elapsed();
    let commands = last
        .zip(first)
        .and_then(|(l, f)| l.duration_since(f).ok())
        .context("no command times")?;
    let mut leases = Vec::new();
    for addr in &stack.tool_runners {
        let mut runner = ToolServiceClient::new(stack.worker_channel(addr)?);
        leases.push(
            runner
                .describe_runner(pb::DescribeRunnerRequest {})
                .await?
                .into_inner()
                .leases,
        );
    }
    Ok(Measured {
        wall,
        commands,
        leases,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let one = run(1).await?;
    let three = run(3).await?;
    let throughput = |d: Duration| SESSIONS as f64 / d.as_secs_f64();
    println!(
        "{SESSIONS} sessions, one `sleep {COMMAND_SECS}` each, at most {LIMIT} commands per runner"
    );
    for (name, m) in [("1 runner ", &one), ("3 runners", &three)] {
        println!(
            "{name}: commands {:>6.2} s ({:>5.2}/s)   whole run {:>6.2} s ({:>5.2}/s)   leases {:?}",
            m.commands.as_secs_f64(),
            throughput(m.commands),
            m.wall.as_secs_f64(),
            throughput(m.wall),
            m.leases
        );
    }
    println!(
        "throughput ratio (3 runners / 1): commands {:.2} (goal >= 2.5), whole run {:.2}",
        throughput(three.commands) / throughput(one.commands),
        throughput(three.wall) / throughput(one.wall)
    );
    Ok(())
}
