//! Crash at any point: `kill -9` of the worker (during a model call and while
//! idle), of the model-proxy during a stream, of session-api while a client
//! streams, and a restart of a SQLite-backed Temporal. Each time the turn
//! completes with the right result and the client sees every event exactly
//! once, in order.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::time::Duration;

use keel_proto::v1 as pb;
use keel_proto::v1::session_service_client::SessionServiceClient;
use keel_test_support::fake_model::{FakeModel, Scripted, sse};
use keel_test_support::session;
use keel_test_support::session::Client;
use keel_test_support::stack::{Stack, StackOptions};
use pb::event::Msg;
use serde_json::Value;
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(90);

async fn start(script: Vec<Scripted>, temporal_db: bool) -> (FakeModel, Stack) {
    let fake = FakeModel::start(script).await.unwrap();
    let mut opts = StackOptions::new(fake.base_url());
    opts.temporal_db = temporal_db;
    let stack = Stack::launch(opts).await.unwrap();
    (fake, stack)
}

/// Where a client reaches session-api, and its token.
#[derive(Clone)]
struct Door {
    addr: String,
    token: String,
}

impl Door {
    fn of(stack: &Stack) -> Self {
        Self {
            addr: stack.session_api.clone(),
            token: stack.token.clone(),
        }
    }
}

/// A client that connects on first use (session-api may be down).
async fn client(door: &Door) -> Client {
    let channel = Channel::from_shared(format!("http://{}", door.addr))
        .unwrap()
        .connect_lazy();
    SessionServiceClient::with_interceptor(channel, keel_auth::Bearer::new(&door.token).unwrap())
}

async fn new_session(client: &mut Client) -> String {
    client
        .create_session(pb::CreateSessionRequest::default())
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap()
        .session_id
}

/// Sends a turn, retrying while session-api or Temporal is coming back.
async fn send(client: &mut Client, sid: &str, turn_id: &str, text: &str) {
    let req = pb::SendUserTurnRequest {
        session_id: sid.into(),
        text: text.into(),
        turn_id: turn_id.into(),
        ..Default::default()
    };
    tokio::time::timeout(WAIT, async {
        loop {
            match client.send_user_turn(req.clone()).await {
                Ok(_) => return,
                Err(e)
                    if matches!(
                        e.code(),
                        tonic::Code::Unavailable
                            | tonic::Code::DeadlineExceeded
                            | tonic::Code::Unknown
                    ) =>
                {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("send_user_turn: {e}"),
            }
        }
    })
    .await
    .expect("the turn is accepted eventually");
}

/// Follows events after `after` until `turn_id` ends, reconnecting (from the
/// last offset seen) whenever the stream breaks.
async fn follow_turn(addr: &Door, sid: &str, after: u64, turn_id: &str) -> Vec<pb::Event> {
    let mut events: Vec<pb::Event> = Vec::new();
    let mut last = after;
    tokio::time::timeout(WAIT, async {
        loop {
            let mut c = client(addr).await;
            let stream = c
                .stream_events(pb::StreamEventsRequest {
                    session_id: sid.into(),
                    after_offset: last,
                    follow: true,
                    live_deltas: false,
                    ..Default::default()
                })
                .await;
            let Ok(stream) = stream else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let mut stream = stream.into_inner();
            while let Ok(Some(m)) = stream.message().await {
                let Some(pb::stream_events_response::Kind::Event(e)) = m.kind else {
                    panic!("unexpected gap {m:?}");
                };
                last = e.offset;
                let end = e.turn_id == turn_id
                    && matches!(
                        e.msg,
                        Some(Msg::TurnComplete(_)) | Some(Msg::TurnAborted(_))
                    );
                events.push(e);
                if end {
                    return;
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("turn {turn_id} did not end; got {events:#?}"));
    events
}

/// Follows `turn_id` from the start until `commands_done` commands have
/// ended, kills session-api under the stream (keeping what was in flight),
/// restarts it, and follows the rest of the turn from the last offset seen.
async fn restart_session_api_mid_turn(
    stack: &mut Stack,
    sid: &str,
    turn_id: &str,
    commands_done: usize,
) -> Vec<pb::Event> {
    let addr = Door::of(stack);
    let mut c = client(&addr).await;
    let mut stream = session::follow(&mut c, sid, 0, false).await.unwrap();
    let mut seen = Vec::new();
    let mut ends = 0;
    while let Some(m) = stream.message().await.unwrap() {
        let Some(pb::stream_events_response::Kind::Event(e)) = m.kind else {
            panic!("gap")
        };
        ends += usize::from(matches!(e.msg, Some(Msg::ExecCommandEnd(_))));
        seen.push(e);
        if ends == commands_done {
            break;
        }
    }
    stack.kill("keel-session-api").unwrap();
    // The stream breaks with the server; events already in flight still count.
    while let Ok(Some(m)) = stream.message().await {
        if let Some(pb::stream_events_response::Kind::Event(e)) = m.kind {
            seen.push(e);
        }
    }
    stack.restart("keel-session-api").unwrap();
    let last = seen.last().unwrap().offset;
    seen.extend(follow_turn(&addr, sid, last, turn_id).await);
    seen
}

fn assert_dense(events: &[pb::Event], after: u64) {
    let offsets: Vec<u64> = events.iter().map(|e| e.offset).collect();
    let expected: Vec<u64> = (after + 1..=after + events.len() as u64).collect();
    assert_eq!(offsets, expected, "every event exactly once, in order");
}

fn agent_messages(events: &[pb::Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.msg {
            Some(Msg::AgentMessage(m)) => Some(m.message.clone()),
            _ => None,
        })
        .collect()
}

fn input_summary(input: &[Value]) -> Vec<String> {
    input
        .iter()
        .map(|i| match i["type"].as_str().unwrap() {
            "message" => format!(
                "{}: {}",
                i["role"].as_str().unwrap(),
                i["content"][0]["text"].as_str().unwrap()
            ),
            other => other.to_string(),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn worker_killed_during_a_model_call_and_while_idle() {
    let (fake, mut stack) = start(
        vec![
            // The first attempt hangs mid-stream; the worker dies under it.
            Scripted::stalled(vec![
                sse::created(),
                sse::text_delta("m0", "never finished"),
            ]),
            Scripted::assistant("answer 1"),
            Scripted::assistant("answer 2"),
        ],
        false,
    )
    .await;
    let mut c = client(&Door::of(&stack)).await;
    let sid = new_session(&mut c).await;
    send(&mut c, &sid, "turn-1", "question 1").await;
    fake.wait_for_requests(1, WAIT).await.unwrap();
    stack.kill("keel-worker").unwrap();
    stack.restart("keel-worker").unwrap();
    let events = follow_turn(&Door::of(&stack), &sid, 0, "turn-1").await;
    assert_dense(&events, 0);
    assert_eq!(agent_messages(&events), ["answer 1"]);
    // The restarted worker failed its dead predecessor's model call at once
    // instead of waiting for the heartbeat timeout.
    let log = stack.proc("keel-worker").unwrap().log_text();
    assert!(
        log.contains("a dead worker of this host left running") && log.contains("calls=1"),
        "{log}"
    );

    // Idle: the worker is down when the turn arrives.
    stack.kill("keel-worker").unwrap();
    let last = events.last().unwrap().offset;
    send(&mut c, &sid, "turn-2", "question 2").await;
    stack.restart("keel-worker").unwrap();
    let events2 = follow_turn(&Door::of(&stack), &sid, last, "turn-2").await;
    assert_dense(&events2, last);
    assert_eq!(agent_messages(&events2), ["answer 2"]);

    let requests = fake.wait_for_requests(3, WAIT).await.unwrap();
    // The retried call sent the same conversation; nothing was duplicated.
    assert_eq!(requests[0].conversation(), requests[1].conversation());
    assert_eq!(
        input_summary(requests[2].conversation()),
        [
            "user: question 1",
            "assistant: answer 1",
            "user: question 2"
        ]
    );

    // A session whose model call was retried after a worker crash, for the
    // replay tests.
    c.close_session(pb::CloseSessionRequest {
        session_id: sid.clone(),
    })
    .await
    .unwrap();
    keel_test_support::history::record_closed(&stack.temporal_address, &sid, "worker_crash_closed")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn model_proxy_killed_during_a_stream() {
    let (fake, mut stack) = start(
        vec![
            Scripted::stalled(vec![sse::created(), sse::text_delta("m0", "cut off")]),
            Scripted::assistant("answer after the crash"),
        ],
        false,
    )
    .await;
    let mut c = client(&Door::of(&stack)).await;
    let sid = new_session(&mut c).await;
    send(&mut c, &sid, "turn-1", "question").await;
    fake.wait_for_requests(1, WAIT).await.unwrap();
    stack.kill("keel-model-proxy").unwrap();
    stack.restart("keel-model-proxy").unwrap();
    let events = follow_turn(&Door::of(&stack), &sid, 0, "turn-1").await;
    assert_dense(&events, 0);
    assert_eq!(agent_messages(&events), ["answer after the crash"]);
    let requests = fake.wait_for_requests(2, WAIT).await.unwrap();
    assert_eq!(
        input_summary(requests[1].conversation()),
        ["user: question"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn session_api_killed_while_a_client_streams() {
    let delay = Duration::from_millis(150);
    let words: Vec<String> = (0..20).map(|i| format!("w{i} ")).collect();
    let mut events = vec![sse::created()];
    events.extend(words.iter().map(|w| sse::text_delta("m1", w)));
    events.push(sse::message("m1", &words.concat()));
    events.push(sse::completed("r1", 10, 5));
    let (_fake, mut stack) = start(
        vec![
            Scripted::tool_call("call_1", "shell", r#"{"command":["echo","hi"]}"#),
            Scripted::paced(events, delay),
        ],
        false,
    )
    .await;
    let addr = Door::of(&stack);
    let mut c = client(&addr).await;
    let sid = new_session(&mut c).await;
    send(&mut c, &sid, "turn-1", "go").await;
    // Kill session-api under the stream once the command has ended.
    let seen = restart_session_api_mid_turn(&mut stack, &sid, "turn-1", 1).await;
    assert_dense(&seen, 0);
    assert_eq!(agent_messages(&seen), [words.concat()]);
}

/// session-api is killed and restarted while a turn of many steps is still
/// appending events: the worker's notices reach the new process (nothing
/// polls), and the client, resuming from its last offset, gets every event
/// once, in order.
#[tokio::test(flavor = "multi_thread")]
async fn session_api_restarted_while_events_are_pushed() {
    const STEPS: usize = 8;
    let pace = Duration::from_millis(100);
    let mut script: Vec<Scripted> = (0..STEPS)
        .map(|i| {
            Scripted::paced(
                vec![
                    sse::created(),
                    sse::function_call(
                        &format!("call_{i}"),
                        "shell",
                        &format!(r#"{{"command":["echo","step-{i}"]}}"#),
                    ),
                    sse::completed(&format!("r{i}"), 10, 5),
                ],
                pace,
            )
        })
        .collect();
    script.push(Scripted::assistant("done"));
    let (_fake, mut stack) = start(script, false).await;
    let addr = Door::of(&stack);
    let mut c = client(&addr).await;
    let sid = new_session(&mut c).await;
    send(&mut c, &sid, "turn-1", "go").await;
    let seen = restart_session_api_mid_turn(&mut stack, &sid, "turn-1", 2).await;
    assert_dense(&seen, 0);
    let outputs: Vec<String> = seen
        .iter()
        .filter_map(|e| match &e.msg {
            Some(Msg::ExecCommandEnd(end)) => Some(end.aggregated_output.trim().to_string()),
            _ => None,
        })
        .collect();
    let expected: Vec<String> = (0..STEPS).map(|i| format!("step-{i}")).collect();
    assert_eq!(outputs, expected);
    assert_eq!(agent_messages(&seen), ["done"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn temporal_restart_keeps_the_session() {
    let (fake, mut stack) = start(
        vec![Scripted::assistant("before"), Scripted::assistant("after")],
        true,
    )
    .await;
    let addr = Door::of(&stack);
    let mut c = client(&addr).await;
    let sid = new_session(&mut c).await;
    send(&mut c, &sid, "turn-1", "one").await;
    let events = follow_turn(&addr, &sid, 0, "turn-1").await;
    assert_eq!(agent_messages(&events), ["before"]);

    stack.kill("temporal").unwrap();
    stack.restart("temporal").unwrap();
    let last = events.last().unwrap().offset;
    send(&mut c, &sid, "turn-2", "two").await;
    let events2 = follow_turn(&addr, &sid, last, "turn-2").await;
    assert_dense(&events2, last);
    assert_eq!(agent_messages(&events2), ["after"]);
    let requests = fake.wait_for_requests(2, WAIT).await.unwrap();
    assert_eq!(
        input_summary(requests[1].conversation()),
        ["user: one", "assistant: before", "user: two"]
    );
}

/// The command appends a line to a file, then takes a while.
fn side_effect_call(workspace: &std::path::Path, secs: u32) -> String {
    let file = workspace.join("effects.txt");
    let script = format!(
        "echo ran >> {}; sleep {secs}; echo finished",
        file.display()
    );
    serde_json::json!({"command": ["sh", "-c", script], "timeout_ms": 60000}).to_string()
}

fn effects(workspace: &std::path::Path) -> usize {
    std::fs::read_to_string(workspace.join("effects.txt"))
        .unwrap_or_default()
        .lines()
        .count()
}

/// Starts a side-effecting command, kills `component` while it runs,
/// restarts it, and returns what the model was told about the command once
/// the turn completed with `answer`. Asserts every event came exactly once and
/// the command ran exactly once.
async fn kill_during_command(component: &str, secs: u32, answer: &str) -> String {
    let workspace = tempfile::tempdir().unwrap();
    let (fake, mut stack) = start(
        vec![
            Scripted::tool_call(
                "call_fx",
                "shell",
                &side_effect_call(workspace.path(), secs),
            ),
            Scripted::assistant(answer),
        ],
        false,
    )
    .await;
    let mut c = client(&Door::of(&stack)).await;
    let sid = keel_test_support::session::create(&mut c, Some(workspace.path()))
        .await
        .unwrap();
    send(&mut c, &sid, "turn-1", "do it once").await;
    let path = workspace.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        keel_test_support::stack::wait_for("the command to start", WAIT, || {
            (effects(&path) == 1).then_some(())
        })
    })
    .await
    .unwrap()
    .unwrap();
    stack.kill(component).unwrap();
    stack.restart(component).unwrap();
    let events = follow_turn(&Door::of(&stack), &sid, 0, "turn-1").await;
    assert_dense(&events, 0);
    assert_eq!(agent_messages(&events), [answer]);
    assert_eq!(effects(workspace.path()), 1, "the command ran exactly once");
    let requests = fake.wait_for_requests(2, WAIT).await.unwrap();
    requests[1].function_call_output("call_fx").unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn worker_killed_during_a_command_runs_it_exactly_once() {
    // The retried activity attaches to the running command.
    let out = kill_during_command("keel-worker", 3, "the command finished").await;
    assert!(
        out.contains("finished"),
        "the real result reached the model: {out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tool_runner_killed_during_a_command_never_reruns_it() {
    let out = kill_during_command("keel-tool-runner", 30, "reported the loss").await;
    assert!(
        out.contains("the tool-runner restarted while this command was running"),
        "{out}"
    );
}
