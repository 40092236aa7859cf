//! What Keel's architecture costs per agent step, against a direct floor on
//! the same Temporal dev server in the same run.
//!
//! The floor is the smallest honest agent loop: a Rust SDK workflow whose two
//! activities call the fake model over HTTP (reading the whole SSE answer)
//! and spawn `bash -c true` directly, with no model-proxy, tool-runner,
//! sandbox, blob store or session-api. Keel runs the same script through
//! session-api: the model asks for `bash -c true` each step. (`-c`, not
//! `-lc`: a login shell runs the machine's profile, which costs more than
//! everything measured here on a machine with pyenv, and differs between a
//! sandbox and the host.)
//!
//! Floor and Keel alternate, round after round, each with a multi-step turn
//! (ms per step inside the workflow, from history timestamps) and one-step
//! turns (wall time as a client sees it, and the workflow's own turn time).
//! Also printed: durable events' delivery after the workflow task that
//! emitted them was committed (p50/p99), and CPU per step of the dev server
//! and each process (ticks of /proc/PID/stat, children included).
//!
//! Three Temporal settings: in memory, SQLite with `keel up`'s pragmas, and
//! SQLite with SQLite's defaults.
//!
//! Run: `cargo build --release --workspace --bins && KEEL_BIN_DIR=$PWD/target/release cargo bench -p keel-e2e --bench step_overhead`

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use keel_proto::v1 as pb;
use keel_test_support::fake_model::{FakeModel, Scripted, sse};
use keel_test_support::history;
use keel_test_support::measure::{Samples, cpu_time as cpu};
use keel_test_support::session;
use keel_test_support::stack::{Stack, StackOptions};
use pb::event::Msg;
use serde::{Deserialize, Serialize};
use temporalio_client::{Client, RetryPolicy, WorkflowGetResultOptions, WorkflowStartOptions};
use temporalio_macros::{activities, workflow, workflow_methods};
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use temporalio_sdk::{
    ActivityOptions, Runtime, Worker, WorkerOptions, WorkflowContext, WorkflowContextView,
    WorkflowResult,
};

const ROUNDS: usize = 3;
/// Tool steps in a multi-step turn.
const STEPS: usize = 10;
/// One-step turns per round and side.
const SHORT_TURNS: usize = 4;
const FLOOR_QUEUE: &str = "keel-bench-floor";
const WAIT: Duration = Duration::from_secs(120);

// ---- the floor -------------------------------------------------------------

struct FloorActivities {
    http: reqwest::Client,
    url: String,
}

#[activities]
impl FloorActivities {
    /// One model call: POST the request, read the whole SSE answer; true
    /// when the model asked for a tool.
    #[activity]
    async fn model(
        self: Arc<Self>,
        _ctx: ActivityContext,
        step: u32,
    ) -> Result<bool, ActivityError> {
        let body = serde_json::json!({
            "model": "test-model",
            "stream": true,
            "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": format!("step {step}")}]}],
        });
        let text = self
            .http
            .post(&self.url)
            .json(&body)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        if !text.contains("response.completed") {
            return Err(anyhow::anyhow!("the model's answer did not complete").into());
        }
        Ok(text.contains("\"function_call\""))
    }

    /// One tool call: spawn `bash -c true` and wait for it.
    #[activity]
    async fn tool(_ctx: ActivityContext, _step: u32) -> Result<i32, ActivityError> {
        let status = tokio::process::Command::new("bash")
            .args(["-c", "true"])
            .status()
            .await?;
        Ok(status.code().unwrap_or(-1))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct FloorInput {
    max_steps: u32,
}

#[workflow]
struct FloorWorkflow {
    input: FloorInput,
}

#[workflow_methods]
impl FloorWorkflow {
    #[init]
    fn new(_ctx: &WorkflowContextView, input: FloorInput) -> Self {
        Self { input }
    }

    #[run]
    async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<u32> {
        let max = ctx.state(|s| s.input.max_steps);
        // One attempt: a failure ends the benchmark instead of retrying.
        let options = || {
            ActivityOptions::with_start_to_close_timeout(Duration::from_secs(60))
                .retry_policy(RetryPolicy::builder().maximum_attempts(1).build())
                .build()
        };
        let mut steps = 0;
        while steps <= max {
            let wants_tool = ctx
                .execute_activity(FloorActivities::model, steps, options())
                .await?;
            if !wants_tool {
                break;
            }
            ctx.execute_activity(FloorActivities::tool, steps, options())
                .await?;
            steps += 1;
        }
        Ok(steps)
    }
}

// ---- measurement ----------------------------------------------------------

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn since(later: SystemTime, earlier: SystemTime) -> f64 {
    match later.duration_since(earlier) {
        Ok(d) => ms(d),
        Err(e) => -ms(e.duration()),
    }
}

fn script(fake: &FakeModel, steps: usize) {
    for i in 0..steps {
        fake.push(Scripted::Events(vec![
            sse::created(),
            sse::function_call(
                &format!("call_{i}"),
                "shell",
                r#"{"command":["bash","-c","true"]}"#,
            ),
            sse::completed(&format!("r{i}"), 10, 5),
        ]));
    }
    fake.push(Scripted::assistant("done"));
}

struct Keel {
    turns: u32,
    stack: Stack,
    client: session::Client,
    temporal: Client,
}

impl Keel {
    /// A session with a following stream (opened and drained of the
    /// session's first events before anything is timed).
    async fn session(
        &mut self,
    ) -> anyhow::Result<(String, tonic::Streaming<pb::StreamEventsResponse>)> {
        let sid = session::create(&mut self.client, None).await?;
        let stream = session::follow(&mut self.client, &sid, 0, false).await?;
        Ok((sid, stream))
    }

    /// Runs one turn; returns the client's wall time from sending to
    /// `turn_complete`, and each durable event with when it arrived.
    async fn turn(
        &mut self,
        sid: &str,
        stream: &mut tonic::Streaming<pb::StreamEventsResponse>,
    ) -> anyhow::Result<(Duration, Vec<(pb::Event, SystemTime)>)> {
        self.turns += 1;
        let turn_id = format!("turn-{}", self.turns);
        let start = Instant::now();
        session::send(&mut self.client, sid, &turn_id, "go").await?;
        let mut got = Vec::new();
        tokio::time::timeout(WAIT, async {
            while let Some(m) = stream.message().await? {
                if let Some(pb::stream_events_response::Kind::Event(e)) = m.kind {
                    let done = e.turn_id == turn_id && matches!(e.msg, Some(Msg::TurnComplete(_)));
                    got.push((e, SystemTime::now()));
                    if done {
                        return Ok(());
                    }
                }
            }
            bail!("stream ended before the turn completed")
        })
        .await
        .context("turn did not complete")??;
        Ok((start.elapsed(), got))
    }

    /// The workflow's own time for the session's latest turn: from the
    /// `user_turn` signal to the commit of its last workflow task.
    async fn workflow_turn(&self, sid: &str) -> anyhow::Result<(history::Timeline, f64)> {
        let json = history::history_json(&self.temporal, sid).await?;
        let t = history::timeline(&json)?;
        let own = ms(t.last_turn()?);
        Ok((t, own))
    }
}

struct Floor {
    client: Client,
    runs: u32,
}

impl Floor {
    /// Runs the floor workflow; returns the client's wall time and the
    /// workflow's own time (start to close, by history).
    async fn run(&mut self, steps: usize) -> anyhow::Result<(Duration, f64, history::Timeline)> {
        self.runs += 1;
        let id = format!("floor-{}-{}", std::process::id(), self.runs);
        let start = Instant::now();
        let handle = self
            .client
            .start_workflow(
                FloorWorkflow::run,
                FloorInput {
                    max_steps: steps as u32,
                },
                WorkflowStartOptions::new(FLOOR_QUEUE, id.clone()).build(),
            )
            .await?;
        let done = handle
            .get_result(WorkflowGetResultOptions::default())
            .await?;
        let wall = start.elapsed();
        if done as usize != steps {
            bail!("the floor ran {done} steps, expected {steps}");
        }
        let json = self
            .client
            .get_workflow_handle::<temporalio_client::UntypedWorkflow>(id)
            .fetch_history(Default::default())
            .to_json()
            .await?;
        let t = history::timeline(&json)?;
        let own = since(
            t.closed.context("floor not closed")?,
            t.started.context("floor not started")?,
        );
        Ok((wall, own, t))
    }
}

const PROCS: [&str; 5] = [
    "temporal",
    "keel-session-api",
    "keel-worker",
    "keel-model-proxy",
    "keel-tool-runner",
];

fn cpu_all(stack: &Stack) -> BTreeMap<&'static str, Duration> {
    let mut m: BTreeMap<&'static str, Duration> = PROCS
        .iter()
        .map(|p| (*p, stack.pid(p).map(cpu).unwrap_or_default()))
        .collect();
    m.insert("bench (floor worker)", cpu(std::process::id()));
    m
}

/// Where a multi-step turn's time went, per activity kind (median over
/// activities): the activity's own run, and its dispatch (schedule to start).
fn breakdown(t: &history::Timeline, s: &mut Samples, side: &str) {
    for a in &t.activities {
        let kind = if a.activity_type.contains("model") {
            "model"
        } else if a.activity_type.contains("tool") {
            "tool"
        } else {
            continue;
        };
        let (Some(started), Some(closed)) = (a.started, a.closed) else {
            continue;
        };
        s.add(&format!("{side} {kind} run"), since(closed, started));
        s.add(&format!("{side} queue"), since(started, a.scheduled));
    }
}

fn add_cpu(
    samples: &mut Samples,
    side: &str,
    before: &BTreeMap<&'static str, Duration>,
    after: &BTreeMap<&'static str, Duration>,
    steps: usize,
) {
    for (name, a) in after {
        let b = before.get(name).copied().unwrap_or_default();
        samples.add(
            &format!("cpu {side} {name}"),
            ms(a.saturating_sub(b)) / steps as f64,
        );
    }
}

async fn measure(label: &str, db: bool, pragmas: Vec<String>) -> anyhow::Result<()> {
    let fake = FakeModel::start(Vec::new()).await?;
    let mut opts = StackOptions::new(fake.base_url());
    opts.temporal_db = db;
    opts.sqlite_pragmas = pragmas;
    let stack = Stack::launch(opts).await?;
    let temporal = history::temporal_client(&stack.temporal_address).await?;

    // The floor's worker, in this process, on its own thread.
    let runtime = Runtime::from_current_tokio(Default::default())?;
    let worker_options = WorkerOptions::new(FLOOR_QUEUE)
        .register_workflow::<FloorWorkflow>()?
        .register_activities(FloorActivities {
            http: reqwest::Client::new(),
            url: format!("{}/responses", fake.base_url()),
        })
        .build();
    let mut worker = Worker::new(&runtime, temporal.clone(), worker_options)?;
    let stop_floor = worker.shutdown_handle();
    let tokio_handle = tokio::runtime::Handle::current();
    let floor_thread = std::thread::spawn(move || tokio_handle.block_on(worker.run()));

    let mut keel = Keel {
        turns: 0,
        client: stack.connect().await?,
        temporal: temporal.clone(),
        stack,
    };
    let mut floor = Floor {
        client: temporal,
        runs: 0,
    };
    let mut s = Samples::default();

    // Warm-up: one of each, not counted.
    script(&fake, 1);
    floor.run(1).await?;
    let (sid, mut stream) = keel.session().await?;
    script(&fake, 1);
    keel.turn(&sid, &mut stream).await?;

    for _ in 0..ROUNDS {
        // Multi-step turns: ms per step inside the workflow.
        script(&fake, STEPS);
        let before = cpu_all(&keel.stack);
        let (_, own, timeline) = floor.run(STEPS).await?;
        add_cpu(&mut s, "floor", &before, &cpu_all(&keel.stack), STEPS);
        s.add("floor step", own / STEPS as f64);
        breakdown(&timeline, &mut s, "floor");

        let (sid, mut stream) = keel.session().await?;
        script(&fake, STEPS);
        let before = cpu_all(&keel.stack);
        let (_, events) = keel.turn(&sid, &mut stream).await?;
        add_cpu(&mut s, "keel", &before, &cpu_all(&keel.stack), STEPS);
        let (timeline, own) = keel.workflow_turn(&sid).await?;
        s.add("keel step", own / STEPS as f64);
        breakdown(&timeline, &mut s, "keel");
        for (e, at) in &events {
            let Some(emitted) = history::keel_event_time(e) else {
                continue;
            };
            if let Some(committed) = timeline.committed_at(emitted) {
                s.add("delivery", since(*at, committed));
            }
        }

        // One-step turns as a client sees them.
        for _ in 0..SHORT_TURNS {
            script(&fake, 1);
            let (wall, own, _) = floor.run(1).await?;
            s.add("floor turn wall", ms(wall));
            s.add("floor turn own", own);

            let (sid, mut stream) = keel.session().await?;
            script(&fake, 1);
            let (wall, _) = keel.turn(&sid, &mut stream).await?;
            let (_, own) = keel.workflow_turn(&sid).await?;
            s.add("keel turn wall", ms(wall));
            s.add("keel turn own", own);
            s.add("keel turn wall/(own+20)", ms(wall) / (own + 20.0));
        }
    }
    stop_floor();
    match floor_thread.join() {
        Ok(r) => r?,
        Err(_) => bail!("the floor worker panicked"),
    }

    println!("\n== {label} ==");
    let (fs, ks) = (s.median("floor step"), s.median("keel step"));
    println!(
        "per step inside the workflow (median of {ROUNDS} x {STEPS}-step turns): floor {fs:.1} ms, keel {ks:.1} ms, keel/floor {:.2}",
        ks / fs
    );
    for side in ["floor", "keel"] {
        let step = s.median(&format!("{side} step"));
        let model = s.median(&format!("{side} model run"));
        let tool = s.median(&format!("{side} tool run"));
        let queue = s.median(&format!("{side} queue"));
        println!(
            "  {side} step: model activity {model:.1} ms, tool activity {tool:.1} ms, activity dispatch {:.1} ms, workflow tasks and the rest {:.1} ms",
            2.0 * queue,
            step - model - tool - 2.0 * queue
        );
    }
    let (fw, fo) = (s.median("floor turn wall"), s.median("floor turn own"));
    let (kw, ko) = (s.median("keel turn wall"), s.median("keel turn own"));
    println!(
        "one-step turn (median of {}): floor client {fw:.1} ms (workflow {fo:.1}); keel client {kw:.1} ms (workflow {ko:.1}); keel client/(workflow+20 ms) median {:.2}, p99 {:.2}; keel/floor client {:.2}",
        ROUNDS * SHORT_TURNS,
        s.median("keel turn wall/(own+20)"),
        s.pct("keel turn wall/(own+20)", 0.99),
        kw / fw
    );
    println!(
        "durable events after commit: n={} p50 {:.1} ms p99 {:.1} ms",
        s.count("delivery"),
        s.pct("delivery", 0.5),
        s.pct("delivery", 0.99)
    );
    println!("CPU per step (ms, median; bench = floor worker + this client):");
    for side in ["floor", "keel"] {
        let line: Vec<String> = s
            .keys()
            .filter_map(|k| k.strip_prefix(&format!("cpu {side} ")))
            .map(|name| format!("{name} {:.1}", s.median(&format!("cpu {side} {name}"))))
            .collect();
        println!("  during {side} turns: {}", line.join(", "));
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // reqwest is built without a default TLS provider (the floor's calls are
    // plain HTTP, but the client wants one).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let keel_pragmas: Vec<String> = keel_stack_pragmas();
    measure("Temporal in memory", false, Vec::new()).await?;
    measure(
        &format!(
            "Temporal on SQLite, keel up's settings ({})",
            keel_pragmas.join(", ")
        ),
        true,
        keel_pragmas,
    )
    .await?;
    measure("Temporal on SQLite, SQLite's defaults", true, Vec::new()).await?;
    Ok(())
}

fn keel_stack_pragmas() -> Vec<String> {
    StackOptions::new("").sqlite_pragmas
}
