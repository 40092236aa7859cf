//! Sub-agents (`features.multi_agent`): the model starts agents with
//! `spawn_agent`, each a child workflow running the agent loop on its task,
//! and waits for them with `wait_agent`; their final messages come back as
//! the wait's output. The scripted model answers each agent from a script of
//! its own (routed by the agent's task), so agents run at the same time.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::time::Duration;

use keel_proto::v1 as pb;
use keel_test_support::fake_model::{FakeModel, RecordedRequest, Scripted};
use keel_test_support::history;
use keel_test_support::session;
use keel_test_support::stack::{Stack, StackOptions, TENANT};
use pb::event::Msg;
use serde_json::{Value, json};
use temporalio_client::UntypedWorkflow;

fn features(multi_agent: bool) -> pb::ToolFeatures {
    pb::ToolFeatures {
        multi_agent: Some(multi_agent),
        // The argv `shell` tool, as the scripts call it.
        unified_exec: Some(false),
        ..Default::default()
    }
}

async fn start(script: Vec<Scripted>) -> (FakeModel, Stack, session::Client) {
    let fake = FakeModel::start(script).await.unwrap();
    let stack = Stack::launch(StackOptions::new(fake.base_url()))
        .await
        .unwrap();
    let client = stack.connect().await.unwrap();
    (fake, stack, client)
}

async fn open(
    client: &mut session::Client,
    cwd: &std::path::Path,
    policy: pb::ApprovalPolicy,
    multi_agent: bool,
) -> (String, tonic::Streaming<pb::StreamEventsResponse>) {
    session::open(
        client,
        pb::CreateSessionRequest {
            cwd: cwd.display().to_string(),
            context: Some(pb::TurnContext {
                approval_policy: policy as i32,
                ..Default::default()
            }),
            features: Some(features(multi_agent)),
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

/// `spawn_agent` with a text task.
fn spawn(call_id: &str, message: &str) -> Scripted {
    Scripted::tool_call(
        call_id,
        "spawn_agent",
        &json!({ "message": message }).to_string(),
    )
}

/// `wait_agent` on the agent `spawn_call` started, for up to 2 minutes.
fn wait(call_id: &str, spawn_call: &str) -> Scripted {
    Scripted::tool_call(
        call_id,
        "wait_agent",
        &format!(r#"{{"targets":["{{{{output:{spawn_call}:agent_id}}}}"],"timeout_ms":120000}}"#),
    )
}

/// The id of the agent `spawn_call` started.
fn agent_of(fake: &FakeModel, spawn_call: &str) -> String {
    output_json(fake, spawn_call)["agent_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{spawn_call} started no agent"))
        .to_string()
}

/// The output the model was sent for `call_id`, as JSON.
fn output_json(fake: &FakeModel, call_id: &str) -> Value {
    let text = output_text(fake, call_id);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{call_id}: {e}: {text}"))
}

fn output_text(fake: &FakeModel, call_id: &str) -> String {
    fake.requests()
        .iter()
        .rev()
        .find_map(|r: &RecordedRequest| r.function_call_output(call_id))
        .unwrap_or_else(|| panic!("no output for {call_id} reached the model"))
}

fn requests_of(fake: &FakeModel, key: &str) -> Vec<RecordedRequest> {
    fake.requests()
        .into_iter()
        .filter(|r| {
            r.input()
                .iter()
                .any(|item| item["role"] == "user" && item["content"].to_string().contains(key))
        })
        .collect()
}

/// Waits until the sub-agent's workflow has completed; returns its id.
async fn agent_closed(stack: &Stack, sid: &str, agent_id: &str) -> String {
    let client = history::temporal_client(&stack.temporal_address)
        .await
        .unwrap();
    let id = format!("keel-agent.{TENANT}.{sid}/{agent_id}");
    tokio::time::timeout(
        Duration::from_secs(60),
        client
            .get_workflow_handle::<UntypedWorkflow>(id.clone())
            .get_result(Default::default()),
    )
    .await
    .unwrap_or_else(|_| panic!("{id} did not complete"))
    .unwrap_or_else(|e| panic!("{id} failed: {e}"));
    id
}

/// Two sub-agents run commands at the same time (with the same call id:
/// each agent's calls are its own); the session's agent waits for each and
/// answers with what they found; closing the session ends them.
#[tokio::test(flavor = "multi_thread")]
async fn two_sub_agents_work_in_parallel_and_their_results_come_back() {
    let root = vec![
        spawn("sp1", "CHILD-A: count to three into a.txt"),
        Scripted::tool_call(
            "sp2",
            "spawn_agent",
            &json!({"items": [{"type": "text", "text": "CHILD-B: write b.txt"}]}).to_string(),
        ),
        wait("w1", "sp1"),
        wait("w2", "sp2"),
        Scripted::assistant("both agents are done"),
    ];
    let (fake, stack, mut client) = start(root).await;
    let shell = |argv: &[&str]| json!({ "command": argv }).to_string();
    fake.route(
        "CHILD-A",
        vec![
            Scripted::tool_call(
                "c1",
                "shell",
                &shell(&["bash", "-c", "echo one two three > a.txt; cat a.txt"]),
            ),
            Scripted::assistant("A counted: one two three"),
        ],
    );
    fake.route(
        "CHILD-B",
        vec![
            Scripted::tool_call("c1", "shell", &shell(&["bash", "-c", "echo bee > b.txt"])),
            Scripted::assistant("B wrote b.txt"),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let (sid, mut events) =
        open(&mut client, dir.path(), pb::ApprovalPolicy::OnRequest, true).await;
    session::send(&mut client, &sid, "t1", "split the work")
        .await
        .unwrap();
    let seen = session::until_turn_complete(&mut events).await.unwrap();

    let a = output_json(&fake, "sp1");
    let b = output_json(&fake, "sp2");
    let (a_id, b_id) = (
        a["agent_id"].as_str().unwrap(),
        b["agent_id"].as_str().unwrap(),
    );
    assert_ne!(a_id, b_id);
    assert!(uuid::Uuid::parse_str(a_id).is_ok(), "{a}");
    assert_eq!(a["nickname"], Value::Null);
    assert_eq!(
        output_json(&fake, "w1"),
        json!({"status": {a_id: {"completed": "A counted: one two three"}}, "timed_out": false})
    );
    assert_eq!(
        output_json(&fake, "w2"),
        json!({"status": {b_id: {"completed": "B wrote b.txt"}}, "timed_out": false})
    );
    // Both commands ran, once each, though both agents named their call c1.
    let child_a = requests_of(&fake, "CHILD-A");
    assert_eq!(child_a.len(), 2);
    assert!(
        child_a[1]
            .function_call_output("c1")
            .unwrap()
            .contains("one two three"),
        "{:?}",
        child_a[1].function_call_output("c1")
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("a.txt")).unwrap(),
        "one two three\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("b.txt")).unwrap(),
        "bee\n"
    );
    // Sub-agents are not offered the collaboration tools (depth 1 is the
    // deepest), the session's agent is.
    let offered = child_a[0].tool_names();
    assert!(!offered.iter().any(|n| n == "spawn_agent"), "{offered:?}");
    assert!(offered.iter().any(|n| n == "shell"), "{offered:?}");
    let root_offered = fake.requests()[0].tool_names();
    for name in ["spawn_agent", "wait_agent"] {
        assert!(root_offered.iter().any(|n| n == name), "{root_offered:?}");
    }
    // The session's stream shows its own agent's turn.
    assert!(seen.iter().all(|e| e.agent_id == sid), "{seen:?}");
    assert!(
        !seen
            .iter()
            .any(|e| matches!(&e.msg, Some(Msg::ExecCommandBegin(_)))),
        "the sub-agents' commands are theirs: {seen:?}"
    );

    client
        .close_session(pb::CloseSessionRequest {
            session_id: sid.clone(),
        })
        .await
        .unwrap();
    let a_workflow = agent_closed(&stack, &sid, a_id).await;
    agent_closed(&stack, &sid, b_id).await;
    // For the replay tests: the session's run and one sub-agent's.
    history::record_closed(&stack.temporal_address, &sid, "sub_agents_closed")
        .await
        .unwrap();
    let temporal = history::temporal_client(&stack.temporal_address)
        .await
        .unwrap();
    history::record_workflow(&temporal, &a_workflow, "sub_agent_closed")
        .await
        .unwrap();
}

/// `wait_agent` times out on a workflow timer (the shortest Codex allows
/// is 10 s) with an empty status; the agent goes on, and a later wait gets
/// its result.
#[tokio::test(flavor = "multi_thread")]
async fn a_wait_times_out_on_a_timer() {
    let root = vec![
        spawn("sp1", "CHILD-SLOW: take your time"),
        // Below the minimum: waits 10 s.
        Scripted::tool_call(
            "w1",
            "wait_agent",
            r#"{"targets":["{{output:sp1:agent_id}}"],"timeout_ms":1}"#,
        ),
        wait("w2", "sp1"),
        Scripted::assistant("waited"),
    ];
    let (fake, _stack, mut client) = start(root).await;
    let dir = tempfile::tempdir().unwrap();
    let (sid, mut events) = open(&mut client, dir.path(), pb::ApprovalPolicy::Never, true).await;
    // The agent's answer takes 16 s: after the first wait's 10 s.
    let Scripted::Events(slow) = Scripted::assistant("slow but done") else {
        unreachable!()
    };
    fake.route(
        "CHILD-SLOW",
        vec![Scripted::paced(slow, Duration::from_secs(4))],
    );
    session::send(&mut client, &sid, "t1", "delegate")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let deadline = started + Duration::from_secs(60);
    while fake
        .requests()
        .iter()
        .all(|r| r.function_call_output("w1").is_none())
    {
        assert!(std::time::Instant::now() < deadline, "the wait never ended");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        output_json(&fake, "w1"),
        json!({"status": {}, "timed_out": true})
    );
    session::until_turn_complete(&mut events).await.unwrap();
    let id = agent_of(&fake, "sp1");
    assert_eq!(
        output_json(&fake, "w2"),
        json!({"status": {id: {"completed": "slow but done"}}, "timed_out": false})
    );
}

/// What a model cannot do with the collaboration tools: use them when the
/// session does not offer them, start an agent with a model or effort that
/// is not one, or wait on ids that are not agents'.
#[tokio::test(flavor = "multi_thread")]
async fn collaboration_refusals() {
    let root = vec![
        // Session 1: multi_agent off.
        Scripted::tool_call("x1", "spawn_agent", r#"{"message":"CHILD-X: hi"}"#),
        Scripted::assistant("ok"),
        // Session 2: on.
        Scripted::tool_call(
            "x2",
            "spawn_agent",
            &json!({"message": "CHILD-Y: hi", "model": "gpt\u{1b}[2J"}).to_string(),
        ),
        Scripted::tool_call(
            "x7",
            "spawn_agent",
            r#"{"message":"CHILD-Z: hi","reasoning_effort":"turbo"}"#,
        ),
        Scripted::tool_call("x3", "wait_agent", r#"{"targets":["../../etc"]}"#),
        Scripted::tool_call(
            "x4",
            "wait_agent",
            r#"{"targets":["0b7c3f4e-9a52-4c1e-8a6f-2d1f5e9b7a10"],"timeout_ms":0}"#,
        ),
        Scripted::tool_call(
            "x5",
            "wait_agent",
            r#"{"targets":["0b7c3f4e-9a52-4c1e-8a6f-2d1f5e9b7a10"]}"#,
        ),
        Scripted::tool_call(
            "x6",
            "spawn_agent",
            r#"{"message":"a","agent_type":"boss"}"#,
        ),
        Scripted::assistant("ok"),
    ];
    let (fake, _stack, mut client) = start(root).await;
    let dir = tempfile::tempdir().unwrap();

    let (sid, mut events) = open(
        &mut client,
        dir.path(),
        pb::ApprovalPolicy::OnRequest,
        false,
    )
    .await;
    session::send(&mut client, &sid, "t1", "try").await.unwrap();
    session::until_turn_complete(&mut events).await.unwrap();
    assert_eq!(output_text(&fake, "x1"), "unsupported call: spawn_agent");
    assert!(
        !fake.requests()[0]
            .tool_names()
            .iter()
            .any(|n| n == "spawn_agent")
    );

    let (sid, mut events) =
        open(&mut client, dir.path(), pb::ApprovalPolicy::OnRequest, true).await;
    session::send(&mut client, &sid, "t1", "try").await.unwrap();
    session::until_turn_complete(&mut events).await.unwrap();
    assert!(
        output_text(&fake, "x2").starts_with("Unknown model `gpt"),
        "{}",
        output_text(&fake, "x2")
    );
    assert!(
        output_text(&fake, "x2").ends_with("for spawn_agent: at most 128 printable characters"),
        "{}",
        output_text(&fake, "x2")
    );
    assert_eq!(
        output_text(&fake, "x7"),
        "Reasoning effort `turbo` is not supported. Supported reasoning efforts: none, minimal, low, medium, high, xhigh"
    );
    assert!(
        output_text(&fake, "x3").starts_with("invalid agent id ../../etc: "),
        "{}",
        output_text(&fake, "x3")
    );
    assert_eq!(
        output_text(&fake, "x4"),
        "timeout_ms must be greater than zero"
    );
    assert_eq!(
        output_json(&fake, "x5"),
        json!({"status": {"0b7c3f4e-9a52-4c1e-8a6f-2d1f5e9b7a10": "not_found"}, "timed_out": false})
    );
    assert_eq!(output_text(&fake, "x6"), "unknown agent_type 'boss'");
    // No sub-agent ever called the model.
    assert!(requests_of(&fake, "CHILD-").is_empty());
}

/// A sub-agent runs under its session's approval policy and asks its
/// session's owner: under `untrusted` its command waits for an answer,
/// GetSession lists the request under the agent, and Respond answers it
/// (routed to the agent with or without its id). Denied, the command never
/// runs and the agent's model is told; the agent's question
/// (`request_user_input`) is answered the same way, and the agent reports
/// back.
#[tokio::test(flavor = "multi_thread")]
async fn a_sub_agents_request_is_answered_through_its_session() {
    let root = vec![
        spawn("sp1", "CHILD-U: make the marker"),
        wait("w1", "sp1"),
        Scripted::assistant("the agent could not"),
    ];
    let (fake, _stack, mut client) = start(root).await;
    fake.route(
        "CHILD-U",
        vec![
            Scripted::tool_call(
                "c1",
                "shell",
                &json!({"command": ["bash", "-c", "touch marker"]}).to_string(),
            ),
            Scripted::tool_call(
                "q1",
                "request_user_input",
                &json!({"questions": [{
                    "id": "why",
                    "header": "Why",
                    "question": "Why not?",
                    "options": [
                        {"label": "Policy", "description": "rules"},
                        {"label": "Taste", "description": "style"}
                    ]
                }]})
                .to_string(),
            ),
            Scripted::assistant("not allowed to touch the marker"),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let (sid, mut events) =
        open(&mut client, dir.path(), pb::ApprovalPolicy::Untrusted, true).await;
    session::send(&mut client, &sid, "t1", "delegate")
        .await
        .unwrap();
    // The request, listed under the agent.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let (agent, request) = loop {
        let session = session::get(&mut client, &sid).await.unwrap();
        if let Some(r) = session.pending_requests.first() {
            assert_eq!(session.status, pb::SessionStatus::Waiting as i32);
            break (r.agent_id.clone(), r.clone());
        }
        assert!(std::time::Instant::now() < deadline, "nothing was asked");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let id = agent_of(&fake, "sp1");
    assert_eq!(agent, id);
    assert_eq!(request.request_id, "c1");
    assert_eq!(request.kind, pb::PendingRequestKind::ExecApproval as i32);
    let deny = |agent_id: &str| pb::RespondRequest {
        session_id: sid.clone(),
        request_id: "c1".into(),
        answer: Some(pb::respond_request::Answer::Decision(pb::ReviewDecision {
            kind: pb::ReviewDecisionKind::Denied as i32,
            ..Default::default()
        })),
        agent_id: agent_id.into(),
    };
    // Named as the session's own agent: not pending there.
    let wrong = client.respond(deny(&sid)).await.unwrap_err();
    assert_eq!(wrong.code(), tonic::Code::FailedPrecondition, "{wrong}");
    // Without the agent's id: routed to the one agent asking it.
    client.respond(deny("")).await.unwrap();
    // Then its question, listed and answered the same way.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let session = session::get(&mut client, &sid).await.unwrap();
        if let Some(r) = session.pending_requests.first() {
            assert_eq!(r.request_id, "q1");
            assert_eq!(r.agent_id, id);
            assert_eq!(r.kind, pb::PendingRequestKind::UserInput as i32);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no question came");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answers = pb::UserInputAnswer {
        answers: [(
            "why".to_string(),
            pb::QuestionAnswer {
                answers: vec!["Policy".into()],
            },
        )]
        .into(),
    };
    client
        .respond(pb::RespondRequest {
            session_id: sid.clone(),
            request_id: "q1".into(),
            answer: Some(pb::respond_request::Answer::UserInput(answers)),
            agent_id: id.clone(),
        })
        .await
        .unwrap();
    let seen = session::until_turn_complete(&mut events).await.unwrap();

    let child = requests_of(&fake, "CHILD-U");
    assert_eq!(child.len(), 3);
    let denied = child[1].function_call_output("c1").unwrap();
    assert!(denied.contains("rejected by user"), "{denied}");
    assert!(!dir.path().join("marker").exists());
    let answered = child[2].function_call_output("q1").unwrap();
    assert!(answered.contains("Policy"), "{answered}");
    // The session's own log has no request: it was the agent's.
    assert!(
        !seen
            .iter()
            .any(|e| matches!(&e.msg, Some(Msg::ExecApprovalRequest(_)))),
        "{seen:?}"
    );
    assert_eq!(
        output_json(&fake, "w1"),
        json!({"status": {id.clone(): {"completed": "not allowed to touch the marker"}}, "timed_out": false})
    );
    // Answered again: not pending any more.
    let again = client.respond(deny(&id)).await.unwrap_err();
    assert_eq!(again.code(), tonic::Code::FailedPrecondition, "{again}");
}

/// Deleting a session deletes its sub-agents' workflows too, a running one
/// included.
#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_session_deletes_its_agents() {
    let root = vec![
        spawn("sp1", "CHILD-STUCK: think forever"),
        Scripted::assistant("started one"),
    ];
    let (fake, stack, mut client) = start(root).await;
    let Scripted::Events(events) = Scripted::assistant("never") else {
        unreachable!()
    };
    // Created, then nothing: the agent's model call hangs.
    fake.route(
        "CHILD-STUCK",
        vec![Scripted::stalled(events.into_iter().take(1).collect())],
    );
    let dir = tempfile::tempdir().unwrap();
    let (sid, mut stream) = open(&mut client, dir.path(), pb::ApprovalPolicy::Never, true).await;
    session::send(&mut client, &sid, "t1", "go").await.unwrap();
    session::until_turn_complete(&mut stream).await.unwrap();
    // The agent is calling the model.
    fake.wait_for_requests(3, Duration::from_secs(30))
        .await
        .unwrap();
    let agent_id = agent_of(&fake, "sp1");
    let temporal = history::temporal_client(&stack.temporal_address)
        .await
        .unwrap();
    let id = format!("keel-agent.{TENANT}.{sid}/{agent_id}");
    let handle = temporal.get_workflow_handle::<UntypedWorkflow>(id.clone());
    let described = handle.describe(Default::default()).await.unwrap();
    assert_eq!(
        described.status(),
        temporalio_client::WorkflowExecutionStatus::Running
    );

    client
        .delete_session(pb::DeleteSessionRequest {
            session_id: sid.clone(),
        })
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while handle.describe(Default::default()).await.is_ok() {
        assert!(std::time::Instant::now() < deadline, "{id} is still there");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// kill -9 of `component` (then a restart) while three sub-agents each run
/// a command: every agent finishes, every command ran exactly once, and
/// the session's agent gets every result (a tool-runner's death is reported
/// as the loss of the running command, never run again).
async fn three_agents_survive_a_kill(component: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut root = Vec::new();
    for i in 1..=3 {
        root.push(Scripted::tool_call(
            &format!("sp{i}"),
            "spawn_agent",
            &json!({"message": format!("CHILD-{i}: run your command")}).to_string(),
        ));
    }
    for i in 1..=3 {
        root.push(Scripted::tool_call(
            &format!("w{i}"),
            "wait_agent",
            &format!(r#"{{"targets":["{{{{output:sp{i}:agent_id}}}}"],"timeout_ms":300000}}"#),
        ));
    }
    root.push(Scripted::assistant("all three are done"));
    let (fake, mut stack, mut client) = start(root).await;
    for i in 1..=3 {
        let script = format!("echo ran >> fx-{i}.txt; sleep 3; echo finished {i}");
        fake.route(
            &format!("CHILD-{i}"),
            vec![
                Scripted::tool_call(
                    "c1",
                    "shell",
                    &json!({"command": ["sh", "-c", script], "timeout_ms": 60000}).to_string(),
                ),
                Scripted::assistant(&format!("agent {i} finished")),
            ],
        );
    }
    let (sid, _events) = open(&mut client, dir.path(), pb::ApprovalPolicy::OnRequest, true).await;
    session::send(&mut client, &sid, "t1", "fan out")
        .await
        .unwrap();
    let ran = |i: u32| {
        std::fs::read_to_string(dir.path().join(format!("fx-{i}.txt")))
            .unwrap_or_default()
            .lines()
            .count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while (1..=3).any(|i| ran(i) == 0) {
        assert!(
            std::time::Instant::now() < deadline,
            "the commands never all started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stack.kill(component).unwrap();
    stack.restart(component).unwrap();

    let mut client = stack.connect().await.unwrap();
    let mut events = session::follow(&mut client, &sid, 0, false).await.unwrap();
    let seen = session::until_turn_complete(&mut events).await.unwrap();
    for i in 1..=3 {
        assert_eq!(ran(i), 1, "agent {i}'s command ran exactly once");
        let id = output_json(&fake, &format!("sp{i}"))["agent_id"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            output_json(&fake, &format!("w{i}")),
            json!({"status": {id: {"completed": format!("agent {i} finished")}}, "timed_out": false})
        );
        let child = requests_of(&fake, &format!("CHILD-{i}"));
        let out = child.last().unwrap().function_call_output("c1").unwrap();
        if component == "keel-tool-runner" {
            // Its processes died with it: the loss is reported, never a rerun.
            assert!(
                out.contains("the tool-runner restarted while this command was running"),
                "{out}"
            );
        } else {
            assert!(out.contains(&format!("finished {i}")), "{out}");
        }
    }
    let offsets: Vec<u64> = seen.iter().map(|e| e.offset).collect();
    assert_eq!(offsets, (1..=offsets.len() as u64).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread")]
async fn three_agents_survive_a_worker_kill() {
    three_agents_survive_a_kill("keel-worker").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn three_agents_survive_a_tool_runner_kill() {
    three_agents_survive_a_kill("keel-tool-runner").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn three_agents_survive_a_model_proxy_kill() {
    three_agents_survive_a_kill("keel-model-proxy").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn three_agents_survive_a_session_api_kill() {
    three_agents_survive_a_kill("keel-session-api").await;
}

/// Every event of a StreamEvents `all_agents` response, by agent, in the
/// order received; fails on anything else (a gap, an error).
async fn merged(
    client: &mut session::Client,
    request: pb::StreamEventsRequest,
) -> std::collections::BTreeMap<String, Vec<pb::Event>> {
    let mut stream = client.stream_events(request).await.unwrap().into_inner();
    let mut by_agent: std::collections::BTreeMap<String, Vec<pb::Event>> = Default::default();
    while let Some(response) = tokio::time::timeout(Duration::from_secs(120), stream.message())
        .await
        .expect("the merged stream stalled")
        .unwrap()
    {
        match response.kind {
            Some(pb::stream_events_response::Kind::Event(e)) => {
                by_agent.entry(e.agent_id.clone()).or_default().push(e)
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    by_agent
}

fn offsets(events: &[pb::Event]) -> Vec<u64> {
    events.iter().map(|e| e.offset).collect()
}

/// One stream carries the session's events and both sub-agents' (each
/// agent's dense, in order, once, naming its agent and parent), and ends
/// when the session and its agents have closed; a read of it afterwards
/// gives the same, and one resumed from per-agent offsets gives exactly the
/// rest. GetSession lists the agents with their tokens and the sum.
#[tokio::test(flavor = "multi_thread")]
async fn one_stream_carries_every_agents_events() {
    let root = vec![
        spawn("sp1", "CHILD-M1: one"),
        spawn("sp2", "CHILD-M2: two"),
        wait("w1", "sp1"),
        wait("w2", "sp2"),
        Scripted::assistant("merged"),
    ];
    let (fake, _stack, mut client) = start(root).await;
    let shell =
        |text: &str| json!({ "command": ["bash", "-c", format!("echo {text}")] }).to_string();
    fake.route(
        "CHILD-M1",
        vec![
            Scripted::tool_call("c1", "shell", &shell("m1")),
            Scripted::assistant("M1 done"),
        ],
    );
    fake.route(
        "CHILD-M2",
        vec![
            Scripted::tool_call("c1", "shell", &shell("m2")),
            Scripted::tool_call("c2", "shell", &shell("m2 again")),
            Scripted::assistant("M2 done"),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let (sid, mut own) = open(&mut client, dir.path(), pb::ApprovalPolicy::OnRequest, true).await;
    let all = |after_offset: u64, agent_offsets: Vec<pb::AgentOffset>, follow: bool| {
        pb::StreamEventsRequest {
            session_id: sid.clone(),
            after_offset,
            follow,
            all_agents: true,
            agent_offsets,
            ..Default::default()
        }
    };
    // Watching from before the turn.
    let live = tokio::spawn({
        let mut client = client.clone();
        let request = all(0, Vec::new(), true);
        async move { merged(&mut client, request).await }
    });
    session::send(&mut client, &sid, "t1", "fan out")
        .await
        .unwrap();
    session::until_turn_complete(&mut own).await.unwrap();
    let (a, b) = (agent_of(&fake, "sp1"), agent_of(&fake, "sp2"));

    // GetSession: both agents, their tokens, and the sum.
    let session = session::get(&mut client, &sid).await.unwrap();
    let ids: Vec<&str> = session.agents.iter().map(|x| x.agent_id.as_str()).collect();
    assert_eq!(ids, [a.as_str(), b.as_str()]);
    let mut sum = session.total_token_usage.unwrap().total_tokens;
    for agent in &session.agents {
        let tokens = agent.token_usage.unwrap().total_tokens;
        assert!(tokens > 0, "{agent:?}");
        sum += tokens;
        assert_eq!(agent.parent_agent_id, sid);
        assert_eq!(
            agent.status.as_ref().unwrap().kind,
            pb::AgentStatusKind::Completed as i32
        );
    }
    assert_eq!(session.all_agents_token_usage.unwrap().total_tokens, sum);

    client
        .close_session(pb::CloseSessionRequest {
            session_id: sid.clone(),
        })
        .await
        .unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(120), live)
        .await
        .expect("the merged stream did not end with the session")
        .unwrap();
    assert_eq!(
        seen.keys().collect::<Vec<_>>().len(),
        3,
        "{:?}",
        seen.keys()
    );
    for (agent, events) in &seen {
        let expected: Vec<u64> = (1..=events.len() as u64).collect();
        assert_eq!(offsets(events), expected, "{agent}: not dense and in order");
        let parent = if agent == &sid { "" } else { sid.as_str() };
        assert!(
            events.iter().all(|e| e.parent_agent_id == parent),
            "{agent}"
        );
        assert!(
            matches!(
                events.last().and_then(|e| e.msg.as_ref()),
                Some(Msg::ShutdownComplete(_))
            ),
            "{agent} did not end with its shutdown: {:?}",
            events.last()
        );
    }
    // Each agent's work is in its own part.
    let commands = |agent: &str| -> Vec<String> {
        seen[agent]
            .iter()
            .filter_map(|e| match &e.msg {
                Some(Msg::ExecCommandEnd(end)) => Some(end.aggregated_output.trim().to_string()),
                _ => None,
            })
            .collect()
    };
    assert_eq!(commands(&a), ["m1"]);
    assert_eq!(commands(&b), ["m2", "m2 again"]);
    assert!(commands(&sid).is_empty());
    let spawned: Vec<String> = seen[&sid]
        .iter()
        .filter_map(|e| match &e.msg {
            Some(Msg::CollabAgentSpawnEnd(end)) => Some(end.new_thread_id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(spawned, [a.clone(), b.clone()]);

    // Read again afterwards: the same events.
    let again = merged(&mut client, all(0, Vec::new(), false)).await;
    assert_eq!(again, seen);
    // Resumed from per-agent offsets: exactly the rest (b from its start).
    let root_after = seen[&sid].len() as u64 / 2;
    let resumed = merged(
        &mut client,
        all(
            root_after,
            vec![pb::AgentOffset {
                agent_id: a.clone(),
                after_offset: 2,
            }],
            false,
        ),
    )
    .await;
    assert_eq!(resumed[&sid], seen[&sid][root_after as usize..]);
    assert_eq!(resumed[&a], seen[&a][2..]);
    assert_eq!(resumed[&b], seen[&b]);
    // Without all_agents: the session's own log only.
    let only = merged(
        &mut client,
        pb::StreamEventsRequest {
            session_id: sid.clone(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(only.keys().collect::<Vec<_>>(), [&sid]);
    assert_eq!(only[&sid], seen[&sid]);
    // Offsets of an agent that is not the session's: refused.
    let refused = client
        .stream_events(all(
            0,
            vec![pb::AgentOffset {
                agent_id: "0b7c3f4e-9a52-4c1e-8a6f-2d1f5e9b7a10".into(),
                after_offset: 1,
            }],
            false,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused}");
    assert!(
        refused.message().contains("is not an agent of session"),
        "{refused}"
    );
}

/// Interrupt reaches every running agent: two sub-agents in long commands
/// and the session's agent waiting on them all end their turns.
#[tokio::test(flavor = "multi_thread")]
async fn an_interrupt_reaches_every_agent() {
    let root = vec![
        spawn("sp1", "CHILD-I1: wait"),
        spawn("sp2", "CHILD-I2: wait"),
        Scripted::tool_call(
            "w1",
            "wait_agent",
            r#"{"targets":["{{output:sp1:agent_id}}","{{output:sp2:agent_id}}"],"timeout_ms":3600000}"#,
        ),
    ];
    let (fake, _stack, mut client) = start(root).await;
    for (n, key) in ["CHILD-I1", "CHILD-I2"].iter().enumerate() {
        // A sleep no other test runs (its pid is the sandbox's own).
        let long = json!({"command": ["bash", "-c", format!("exec sleep 97{n}1")]}).to_string();
        fake.route(key, vec![Scripted::tool_call("c1", "shell", &long)]);
    }
    let dir = tempfile::tempdir().unwrap();
    let (sid, _own) = open(&mut client, dir.path(), pb::ApprovalPolicy::OnRequest, true).await;
    let mut stream = client
        .stream_events(pb::StreamEventsRequest {
            session_id: sid.clone(),
            follow: true,
            all_agents: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    session::send(&mut client, &sid, "t1", "wait for them")
        .await
        .unwrap();
    // Whether agent n's command runs.
    let sleeping = |n: usize| {
        let wanted = format!("sleep\097{n}1\0");
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(Result::ok)
            .any(|p| {
                std::fs::read(p.path().join("cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c) == wanted)
            })
    };
    let mut running = std::collections::BTreeSet::new();
    let mut aborted = std::collections::BTreeSet::new();
    let mut interrupted = false;
    while aborted.len() < 3 {
        let response = tokio::time::timeout(Duration::from_secs(60), stream.message())
            .await
            .expect("the agents did not all stop")
            .unwrap()
            .expect("the stream ended");
        let Some(pb::stream_events_response::Kind::Event(e)) = response.kind else {
            continue;
        };
        match &e.msg {
            Some(Msg::ExecCommandBegin(_)) => {
                running.insert(e.agent_id.clone());
            }
            Some(Msg::TurnAborted(_)) => {
                aborted.insert(e.agent_id.clone());
            }
            _ => {}
        }
        if running.len() == 2 && !interrupted {
            interrupted = true;
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while !(sleeping(0) && sleeping(1)) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the commands never ran"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            client
                .interrupt(pb::InterruptRequest {
                    session_id: sid.clone(),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
    }
    assert!(aborted.contains(&sid));
    assert_eq!(running.len(), 2);
    assert!(running.iter().all(|agent| aborted.contains(agent)));
    // And their commands are killed.
    for n in 0..2 {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while sleeping(n) {
            assert!(
                std::time::Instant::now() < deadline,
                "agent {n}'s command still runs 30 s after the interrupt"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let session = session::get(&mut client, &sid).await.unwrap();
    for agent in &session.agents {
        assert_eq!(
            agent.status.as_ref().unwrap().kind,
            pb::AgentStatusKind::Interrupted as i32,
            "{agent:?}"
        );
    }
    // A wrong agent id is refused.
    let wrong = client
        .interrupt(pb::InterruptRequest {
            session_id: sid.clone(),
            agent_id: "nobody".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), tonic::Code::InvalidArgument, "{wrong}");
}

/// How many runs of `workflow_id` ended in continue-as-new (Temporal's
/// visibility, which lags: polled until at least `min`).
async fn rollovers(stack: &Stack, workflow_id: &str, min: i64) -> i64 {
    use temporalio_client::grpc::WorkflowService;
    use temporalio_common::protos::temporal::api::workflowservice::v1::CountWorkflowExecutionsRequest;
    let mut client = history::temporal_client(&stack.temporal_address)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let request = CountWorkflowExecutionsRequest {
            namespace: "default".into(),
            query: format!("WorkflowId = '{workflow_id}' AND ExecutionStatus = 'ContinuedAsNew'"),
        };
        let count = WorkflowService::count_workflow_executions(
            &mut client,
            tonic::IntoRequest::into_request(request),
        )
        .await
        .unwrap()
        .into_inner()
        .count;
        if count >= min || std::time::Instant::now() > deadline {
            return count;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Both the session and its sub-agents roll over (continue-as-new) while
/// the agents work: a result an agent reports after the session's rollover
/// reaches the session's new run, a wait in a later turn gets both results,
/// and every agent's log stays whole and dense across its runs.
#[tokio::test(flavor = "multi_thread")]
async fn session_and_agents_roll_over_while_they_work() {
    let root = vec![
        spawn("sp1", "CHILD-R1: quick"),
        spawn("sp2", "CHILD-R2: slow"),
        Scripted::assistant("started both"),
        // Turn 2, in the session's next run.
        wait("w1", "sp1"),
        wait("w2", "sp2"),
        Scripted::assistant("both reported"),
    ];
    let fake = FakeModel::start(root).await.unwrap();
    let mut options = StackOptions::new(fake.base_url());
    // Every run rolls over at its first turn boundary.
    options.history_event_budget = 10;
    let stack = Stack::launch(options).await.unwrap();
    let mut client = stack.connect().await.unwrap();
    let shell =
        |text: &str| json!({ "command": ["bash", "-c", format!("echo {text}")] }).to_string();
    fake.route(
        "CHILD-R1",
        vec![
            Scripted::tool_call("c1", "shell", &shell("r1")),
            Scripted::assistant("R1 done"),
        ],
    );
    // R2 answers after the session's first turn has ended and rolled over.
    let Scripted::Events(slow) = Scripted::assistant("R2 done") else {
        unreachable!()
    };
    fake.route(
        "CHILD-R2",
        vec![
            Scripted::tool_call("c1", "shell", &shell("r2")),
            Scripted::paced(slow, Duration::from_secs(1)),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let (sid, mut events) =
        open(&mut client, dir.path(), pb::ApprovalPolicy::OnRequest, true).await;
    session::send(&mut client, &sid, "t1", "start them")
        .await
        .unwrap();
    session::until_turn_complete(&mut events).await.unwrap();
    let root_workflow = session::get(&mut client, &sid).await.unwrap().workflow_id;
    assert!(rollovers(&stack, &root_workflow, 1).await >= 1);
    session::send(&mut client, &sid, "t2", "collect")
        .await
        .unwrap();
    session::until_turn_complete(&mut events).await.unwrap();

    let (a, b) = (agent_of(&fake, "sp1"), agent_of(&fake, "sp2"));
    assert_eq!(
        output_json(&fake, "w1"),
        json!({"status": {a.clone(): {"completed": "R1 done"}}, "timed_out": false})
    );
    assert_eq!(
        output_json(&fake, "w2"),
        json!({"status": {b.clone(): {"completed": "R2 done"}}, "timed_out": false})
    );
    let session = session::get(&mut client, &sid).await.unwrap();
    assert!(session.history_rollovers >= 1, "{session:?}");
    for agent in &session.agents {
        assert!(
            rollovers(&stack, &agent.workflow_id, 1).await >= 1,
            "{} never rolled over",
            agent.workflow_id
        );
        assert_eq!(agent.turns_completed, 1, "{agent:?}");
    }
    // Each log whole and dense across its runs.
    let logs = merged(
        &mut client,
        pb::StreamEventsRequest {
            session_id: sid.clone(),
            all_agents: true,
            ..Default::default()
        },
    )
    .await;
    for (agent, events) in &logs {
        let expected: Vec<u64> = (1..=events.len() as u64).collect();
        assert_eq!(offsets(events), expected, "{agent}");
    }
    for agent in [&a, &b] {
        assert!(
            logs[agent]
                .iter()
                .any(|e| matches!(&e.msg, Some(Msg::TurnComplete(_)))),
            "{agent}: {:?}",
            logs[agent]
        );
    }
    client
        .close_session(pb::CloseSessionRequest {
            session_id: sid.clone(),
        })
        .await
        .unwrap();
    agent_closed(&stack, &sid, &a).await;
    agent_closed(&stack, &sid, &b).await;
}

/// Limits on sub-agents are refused with messages that say what to change:
/// at CreateSession (the configuration) and at `spawn_agent` (the model).
#[tokio::test(flavor = "multi_thread")]
async fn limits_are_refused_with_clear_messages() {
    let root = vec![
        spawn("sp1", "CHILD-L1: take a while"),
        spawn("sp2", "CHILD-L2: never starts"),
        Scripted::tool_call(
            "sp3",
            "spawn_agent",
            &json!({"message": "CHILD-L3: x", "agent_type": "ghost"}).to_string(),
        ),
        wait("w1", "sp1"),
        // Finished but not closed: it still holds its place.
        spawn("sp4", "CHILD-L4: never starts"),
        Scripted::tool_call(
            "c1",
            "close_agent",
            r#"{"target":"{{output:sp1:agent_id}}"}"#,
        ),
        spawn("sp5", "CHILD-L5: after the close"),
        wait("w5", "sp5"),
        Scripted::assistant("one at a time"),
    ];
    let (fake, _stack, mut client) = start(root).await;
    let Scripted::Events(slow) = Scripted::assistant("L1 done") else {
        unreachable!()
    };
    fake.route(
        "CHILD-L1",
        vec![Scripted::paced(slow, Duration::from_millis(500))],
    );
    fake.route("CHILD-L5", vec![Scripted::assistant("L5 done")]);
    let dir = tempfile::tempdir().unwrap();
    let request = |limits: pb::AgentLimits, crew: Option<pb::Crew>, multi_agent: bool| {
        pb::CreateSessionRequest {
            cwd: dir.path().display().to_string(),
            features: Some(features(multi_agent)),
            agent_limits: Some(limits),
            agent_roles: vec![pb::AgentRole {
                name: "explorer".into(),
                ..Default::default()
            }],
            crew,
            ..Default::default()
        }
    };
    let refused = |limits, crew, multi_agent| {
        let mut client = client.clone();
        let request = request(limits, crew, multi_agent);
        async move {
            let status = client.create_session(request).await.unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");
            status.message().to_string()
        }
    };
    let limits = |max_threads, max_depth| pb::AgentLimits {
        max_threads,
        max_depth,
        max_turns: 0,
    };
    let crew = |members: &[&str]| {
        Some(pb::Crew {
            name: "big".into(),
            members: members
                .iter()
                .map(|role| pb::CrewMember {
                    role: role.to_string(),
                    task: String::new(),
                })
                .collect(),
        })
    };
    let text = refused(limits(33, 0), None, true).await;
    assert!(
        text.contains("agents.max_threads") && text.contains("at most 32"),
        "{text}"
    );
    let text = refused(limits(0, 2), None, true).await;
    assert!(
        text.contains("agents.max_depth") && text.contains("one level deep"),
        "{text}"
    );
    let text = refused(
        limits(2, 0),
        crew(&["explorer", "default", "explorer"]),
        true,
    )
    .await;
    assert!(
        text.contains("has 3 members; agents.max_threads allows 2"),
        "{text}"
    );
    let text = refused(limits(0, 0), crew(&["default"]), false).await;
    assert!(text.contains("needs features.multi_agent"), "{text}");
    let text = refused(limits(0, 0), crew(&["boss"]), true).await;
    assert!(text.contains("unknown role \"boss\""), "{text}");

    // One agent at a time: the second spawn is refused while the first runs.
    let (sid, mut events) = session::open(&mut client, request(limits(1, 0), None, true))
        .await
        .unwrap();
    session::send(&mut client, &sid, "t1", "spawn two")
        .await
        .unwrap();
    session::until_turn_complete(&mut events).await.unwrap();
    assert_eq!(
        output_text(&fake, "sp2"),
        "collab spawn failed: agent thread limit reached"
    );
    assert_eq!(output_text(&fake, "sp3"), "unknown agent_type 'ghost'");
    let id = agent_of(&fake, "sp1");
    assert_eq!(
        output_json(&fake, "w1"),
        json!({"status": {id: {"completed": "L1 done"}}, "timed_out": false})
    );
    assert!(requests_of(&fake, "CHILD-L2").is_empty());
    assert_eq!(
        output_text(&fake, "sp4"),
        "collab spawn failed: agent thread limit reached"
    );
    assert!(requests_of(&fake, "CHILD-L4").is_empty());
    let l5 = agent_of(&fake, "sp5");
    assert_eq!(
        output_json(&fake, "w5"),
        json!({"status": {l5: {"completed": "L5 done"}}, "timed_out": false})
    );
    // The roles are offered in spawn_agent's description.
    let spawn = fake.requests()[0]
        .tool_spec("spawn_agent")
        .expect("spawn_agent offered");
    let described = spawn["parameters"]["properties"]["agent_type"]["description"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        described.ends_with("Available roles:\nexplorer: {\n\n}\ndefault: {\nDefault agent.\n}"),
        "{described}"
    );
}

/// `send_input` gives an agent its next turn (the agent keeps its
/// conversation), up to the session's `max_turns` per agent; `close_agent`
/// ends it and answers its status before, and a closed agent takes no more
/// input.
#[tokio::test(flavor = "multi_thread")]
async fn send_input_and_close_agent() {
    let target = r#""target":"{{output:sp1:agent_id}}""#;
    let root = vec![
        spawn("sp1", "CHILD-S: first task"),
        wait("w1", "sp1"),
        Scripted::tool_call(
            "si1",
            "send_input",
            &format!(r#"{{{target},"message":"second task"}}"#),
        ),
        wait("w2", "sp1"),
        Scripted::tool_call(
            "si2",
            "send_input",
            &format!(r#"{{{target},"message":"third task"}}"#),
        ),
        Scripted::tool_call("c1", "close_agent", &format!("{{{target}}}")),
        Scripted::tool_call(
            "si3",
            "send_input",
            &format!(r#"{{{target},"message":"after close"}}"#),
        ),
        Scripted::tool_call(
            "c2",
            "close_agent",
            r#"{"target":"0b7c3f4e-9a52-4c1e-8a6f-2d1f5e9b7a10"}"#,
        ),
        Scripted::tool_call("si4", "send_input", &format!("{{{target}}}")),
        Scripted::assistant("done with it"),
    ];
    let (fake, stack, mut client) = start(root).await;
    fake.route(
        "CHILD-S",
        vec![
            Scripted::assistant("first done"),
            Scripted::assistant("second done"),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let (sid, mut events) = session::open(
        &mut client,
        pb::CreateSessionRequest {
            cwd: dir.path().display().to_string(),
            features: Some(features(true)),
            agent_limits: Some(pb::AgentLimits {
                max_turns: 2,
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    session::send(&mut client, &sid, "t1", "use one agent twice")
        .await
        .unwrap();
    session::until_turn_complete(&mut events).await.unwrap();
    let id = agent_of(&fake, "sp1");
    assert_eq!(
        output_json(&fake, "w1"),
        json!({"status": {id.clone(): {"completed": "first done"}}, "timed_out": false})
    );
    let submission = output_json(&fake, "si1");
    assert!(
        uuid::Uuid::parse_str(submission["submission_id"].as_str().unwrap()).is_ok(),
        "{submission}"
    );
    assert_eq!(
        output_json(&fake, "w2"),
        json!({"status": {id.clone(): {"completed": "second done"}}, "timed_out": false})
    );
    // The agent's second turn went on from its first.
    let child = requests_of(&fake, "CHILD-S");
    assert_eq!(child.len(), 2);
    let texts = Value::from(child[1].input().to_vec()).to_string();
    assert!(
        texts.contains("first done") && texts.contains("second task"),
        "{texts}"
    );
    assert_eq!(
        output_text(&fake, "si2"),
        format!("collab tool failed: agent {id} has used its 2 turns (agent_max_turns)")
    );
    assert_eq!(
        output_json(&fake, "c1"),
        json!({"previous_status": {"completed": "second done"}})
    );
    assert_eq!(
        output_text(&fake, "si3"),
        format!("agent with id {id} is closed")
    );
    assert_eq!(
        output_text(&fake, "c2"),
        "agent with id 0b7c3f4e-9a52-4c1e-8a6f-2d1f5e9b7a10 not found"
    );
    assert_eq!(
        output_text(&fake, "si4"),
        "Provide one of: message or items"
    );
    // Closed: its workflow has ended, before the session's.
    let agent_workflow = agent_closed(&stack, &sid, &id).await;
    let session = session::get(&mut client, &sid).await.unwrap();
    assert_eq!(
        session.agents[0].status.as_ref().unwrap().kind,
        pb::AgentStatusKind::Shutdown as i32
    );
    // A client may follow one agent: its two turns, then its shutdown.
    let one = merged(
        &mut client,
        pb::StreamEventsRequest {
            session_id: sid.clone(),
            agent_id: id.clone(),
            follow: true,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(one.keys().collect::<Vec<_>>(), [&id]);
    let turns: Vec<&str> = one[&id]
        .iter()
        .filter_map(|e| match &e.msg {
            Some(Msg::TurnComplete(t)) => Some(t.last_agent_message.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(turns, ["first done", "second done"]);
    assert!(matches!(
        one[&id].last().and_then(|e| e.msg.as_ref()),
        Some(Msg::ShutdownComplete(_))
    ));
    let wrong = client
        .stream_events(pb::StreamEventsRequest {
            session_id: sid.clone(),
            agent_id: id.clone(),
            all_agents: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), tonic::Code::InvalidArgument, "{wrong}");
    // For the replay tests: a session that gave an agent a second turn and
    // closed it, and that agent.
    client
        .close_session(pb::CloseSessionRequest {
            session_id: sid.clone(),
        })
        .await
        .unwrap();
    history::record_closed(&stack.temporal_address, &sid, "sub_agent_inputs_closed")
        .await
        .unwrap();
    let temporal = history::temporal_client(&stack.temporal_address)
        .await
        .unwrap();
    history::record_workflow(&temporal, &agent_workflow, "sub_agent_two_turns_closed")
        .await
        .unwrap();
}
