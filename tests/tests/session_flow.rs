//! The foundation's end-to-end scenario over real gRPC: a session runs a
//! shell tool call through the whole stack (Temporal, worker, model-proxy,
//! tool-runner) against the scripted fake model, then a second turn sees the
//! whole conversation; the event log replays from any offset; every server
//! answers health and reflection; the API key never reaches workflow history.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::time::Duration;

use keel_proto::v1 as pb;
use keel_test_support::fake_model::{FakeModel, Scripted};
use keel_test_support::history;
use keel_test_support::session;
use keel_test_support::stack::{Stack, StackOptions};
use pb::event::Msg;
use serde_json::Value;

const KEY: &str = "sk-keel-e2e-RECOGNISABLE-4f1d2c";
const WAIT: Duration = Duration::from_secs(60);

/// Follows the session's events after `after` until the turn `turn_id` ends.
async fn events_until_turn_end(
    client: &mut keel_test_support::session::Client,
    session_id: &str,
    after: u64,
    turn_id: &str,
) -> Vec<pb::Event> {
    let mut stream = client
        .stream_events(pb::StreamEventsRequest {
            session_id: session_id.into(),
            after_offset: after,
            follow: true,
            live_deltas: false,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    let read = async {
        while let Some(msg) = stream.message().await.unwrap() {
            let Some(pb::stream_events_response::Kind::Event(e)) = msg.kind else {
                panic!("unexpected gap: {msg:?}");
            };
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
        panic!("stream ended before the turn did");
    };
    tokio::time::timeout(WAIT, read)
        .await
        .unwrap_or_else(|_| panic!("turn {turn_id} did not end; events so far: {events:#?}"));
    events
}

async fn replay(
    client: &mut keel_test_support::session::Client,
    session_id: &str,
    after: u64,
) -> Vec<pb::StreamEventsResponse> {
    let mut stream = client
        .stream_events(pb::StreamEventsRequest {
            session_id: session_id.into(),
            after_offset: after,
            follow: false,
            live_deltas: false,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    while let Some(m) = stream.message().await.unwrap() {
        out.push(m);
    }
    out
}

fn types(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|i| {
            let t = i["type"].as_str().unwrap_or("?");
            match i["role"].as_str() {
                Some(role) => format!("{t}:{role}"),
                None => t.to_string(),
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn shell_turn_then_second_turn_sees_the_conversation() {
    let fake = FakeModel::start(vec![
        Scripted::tool_call("call_echo", "shell", r#"{"command":["echo","hello"]}"#),
        Scripted::assistant("The command printed hello."),
        Scripted::assistant("Second answer."),
    ])
    .await
    .unwrap();
    let mut opts = StackOptions::new(fake.base_url());
    opts.api_key = KEY.into();
    let stack = Stack::launch(opts).await.unwrap();
    let workspace = tempfile::tempdir().unwrap();
    let mut client = stack.connect().await.unwrap();

    let session = client
        .create_session(pb::CreateSessionRequest {
            cwd: workspace.path().display().to_string(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    let sid = session.session_id.clone();
    assert_eq!(session.workflow_id, stack.workflow_id(&sid));

    // Turn 1: the model calls shell, the tool-runner runs it, the model answers.
    let turn1 = client
        .send_user_turn(pb::SendUserTurnRequest {
            session_id: sid.clone(),
            text: "run echo hello".into(),
            turn_id: String::new(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .turn_id;
    let events = events_until_turn_end(&mut client, &sid, 0, &turn1).await;
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| match &e.msg {
            Some(Msg::SessionConfigured(_)) => "session_configured",
            Some(Msg::TurnStarted(_)) => "turn_started",
            Some(Msg::UserMessage(_)) => "user_message",
            Some(Msg::ExecCommandBegin(_)) => "exec_command_begin",
            Some(Msg::ExecCommandEnd(_)) => "exec_command_end",
            Some(Msg::AgentMessage(_)) => "agent_message",
            Some(Msg::TokenCount(_)) => "token_count",
            Some(Msg::TurnComplete(_)) => "turn_complete",
            Some(Msg::Error(_)) => "error",
            _ => "other",
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "session_configured",
            "turn_started",
            "user_message",
            "exec_command_begin",
            "exec_command_end",
            "agent_message",
            "token_count",
            "turn_complete"
        ],
        "{events:#?}"
    );
    let offsets: Vec<u64> = events.iter().map(|e| e.offset).collect();
    assert_eq!(offsets, (1..=events.len() as u64).collect::<Vec<_>>());
    let Some(Msg::ExecCommandEnd(end)) = &events[4].msg else {
        unreachable!()
    };
    assert_eq!(end.command, ["echo", "hello"]);
    assert_eq!(end.exit_code, 0);
    assert_eq!(end.aggregated_output, "hello\n");
    assert_eq!(end.cwd, workspace.path().display().to_string());
    let Some(Msg::TurnComplete(done)) = &events[7].msg else {
        unreachable!()
    };
    assert_eq!(done.last_agent_message, "The command printed hello.");

    let requests = fake.wait_for_requests(2, WAIT).await.unwrap();
    // Tools come from the tool-runner, plus the ones the workflow answers
    // itself, sorted by name.
    assert_eq!(
        requests[0].tool_names(),
        [
            "apply_patch",
            "grep_files",
            "list_dir",
            "read_file",
            "request_user_input",
            "shell",
            "update_plan"
        ]
    );
    let instructions = requests[0].body["instructions"]
        .as_str()
        .unwrap_or_default();
    assert!(
        instructions.contains("coding agent"),
        "base instructions missing: {instructions:?}"
    );
    assert_eq!(requests[0].body["store"], false);
    assert_eq!(requests[0].body["stream"], true);
    assert_eq!(
        requests[0].header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    let output = requests[1]
        .function_call_output("call_echo")
        .expect("second request carries the shell output");
    let output: Value = serde_json::from_str(&output).unwrap();
    assert_eq!(output["output"], "hello\n");
    assert_eq!(output["metadata"]["exit_code"], 0);

    // Turn 2: the request carries the whole earlier conversation.
    let turn2 = client
        .send_user_turn(pb::SendUserTurnRequest {
            session_id: sid.clone(),
            text: "and now?".into(),
            turn_id: String::new(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .turn_id;
    let last = events.last().unwrap().offset;
    let events2 = events_until_turn_end(&mut client, &sid, last, &turn2).await;
    assert_eq!(events2.first().unwrap().offset, last + 1);
    let requests = fake.wait_for_requests(3, WAIT).await.unwrap();
    let input = requests[2].conversation();
    assert_eq!(
        types(input),
        [
            "message:user",
            "function_call",
            "function_call_output",
            "message:assistant",
            "message:user"
        ]
    );
    assert_eq!(input[0]["content"][0]["text"], "run echo hello");
    assert_eq!(input[1]["call_id"], "call_echo");
    assert_eq!(input[4]["content"][0]["text"], "and now?");
    // Codex never re-sends item ids.
    assert!(input.iter().all(|i| i.get("id").is_none()), "{input:#?}");
    assert_eq!(
        requests[2].body["prompt_cache_key"],
        requests[0].body["prompt_cache_key"]
    );

    // Replay: from 0 every event in order; from N exactly the events after N.
    let all = replay(&mut client, &sid, 0).await;
    let all_offsets: Vec<u64> = all
        .iter()
        .map(|m| match &m.kind {
            Some(pb::stream_events_response::Kind::Event(e)) => e.offset,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    let newest = events2.last().unwrap().offset;
    assert_eq!(all_offsets, (1..=newest).collect::<Vec<_>>());
    // Every event names its agent: the session's own, by the id the client
    // knows (not the tenant's key), whether read back or followed live.
    for m in &all {
        let Some(pb::stream_events_response::Kind::Event(e)) = &m.kind else {
            unreachable!()
        };
        assert_eq!(
            (e.agent_id.as_str(), e.parent_agent_id.as_str()),
            (sid.as_str(), ""),
            "{e:?}"
        );
    }
    for e in &events2 {
        assert_eq!(e.agent_id, sid, "{e:?}");
    }
    let after3 = replay(&mut client, &sid, 3).await;
    assert_eq!(after3.len() as u64, newest - 3);
    assert_eq!(after3, all[3..].to_vec());
    let err = client
        .stream_events(pb::StreamEventsRequest {
            session_id: sid.clone(),
            after_offset: newest + 10,
            follow: false,
            live_deltas: false,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::OutOfRange);

    // GetSession and ListSessions.
    let got = session::get(&mut client, &sid).await.unwrap();
    assert_eq!(got.turns_completed, 2);
    assert_eq!(got.status, pb::SessionStatus::Idle as i32);
    assert_eq!(got.last_event_offset, newest);
    let listed = client
        .list_sessions(pb::ListSessionsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.sessions.iter().any(|s| s.session_id == sid));

    // The key never reaches workflow history (nor any log).
    let temporal = history::temporal_client(&stack.temporal_address)
        .await
        .unwrap();
    let history = history::history_json(&temporal, &sid).await.unwrap();
    let history = String::from_utf8_lossy(&history);
    assert!(
        history.contains("model_call"),
        "history looks wrong: {history:.300}"
    );
    assert!(
        !history.contains(KEY),
        "the API key leaked into workflow history"
    );
    assert!(
        !stack.all_logs().contains(KEY),
        "the API key leaked into a log"
    );

    // Closing ends the stream with shutdown_complete, and turns are refused.
    client
        .close_session(pb::CloseSessionRequest {
            session_id: sid.clone(),
        })
        .await
        .unwrap();
    let tail = tokio::time::timeout(WAIT, async {
        let mut s = client
            .stream_events(pb::StreamEventsRequest {
                session_id: sid.clone(),
                after_offset: newest,
                follow: true,
                live_deltas: false,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let mut v = Vec::new();
        while let Some(m) = s.message().await.unwrap() {
            v.push(m);
        }
        v
    })
    .await
    .expect("a follow stream ends when the session closes");
    assert!(matches!(
        tail.last().and_then(|m| m.kind.as_ref()),
        Some(pb::stream_events_response::Kind::Event(pb::Event {
            msg: Some(Msg::ShutdownComplete(_)),
            ..
        }))
    ));
    temporal
        .get_workflow_handle::<temporalio_client::UntypedWorkflow>(stack.workflow_id(&sid))
        .get_result(Default::default())
        .await
        .expect("the session workflow completes after close");
    history::record(&temporal, &sid, "shell_two_turns_closed")
        .await
        .unwrap();
    let refused = client
        .send_user_turn(pb::SendUserTurnRequest {
            session_id: sid.clone(),
            text: "hello?".into(),
            turn_id: String::new(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    let unknown = client
        .get_session(pb::GetSessionRequest {
            session_id: "no-such-session".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
}

/// `session_configured` tells what the session runs with: the model-proxy's
/// default model and provider filled in where the session names none, and
/// every setting. An override sends it again with the settings then in
/// force, and GetSession says the same.
#[tokio::test(flavor = "multi_thread")]
async fn session_configured_reports_the_settings_in_force() {
    let fake = FakeModel::start(vec![]).await.unwrap();
    let options = StackOptions::new(fake.base_url());
    let default_model = options.model.clone();
    let stack = Stack::launch(options).await.unwrap();
    let mut client = stack.connect().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sid = session::create(&mut client, Some(dir.path()))
        .await
        .unwrap();
    let mut events = session::follow(&mut client, &sid, 0, false).await.unwrap();
    let first = session::next_event(&mut events).await.unwrap();
    let Some(Msg::SessionConfigured(configured)) = first.msg else {
        panic!("the first event is {first:?}")
    };
    assert_eq!(first.offset, 1);
    assert_eq!(configured.session_id, sid);
    assert_eq!(configured.model, default_model);
    assert_eq!(configured.model_provider, "openai");
    assert_eq!(configured.cwd, dir.path().to_str().unwrap());
    let context = configured.context.unwrap();
    assert_eq!(context.model.as_deref(), Some(default_model.as_str()));
    assert_eq!(
        context.approval_policy,
        pb::ApprovalPolicy::OnRequest as i32
    );
    assert_eq!(
        context.sandbox.as_ref().unwrap().mode,
        pb::SandboxMode::WorkspaceWrite as i32
    );

    let answer = client
        .override_turn_context(pb::OverrideTurnContextRequest {
            session_id: sid.clone(),
            context: Some(pb::TurnContext {
                approval_policy: pb::ApprovalPolicy::Never as i32,
                model: Some("other-model".into()),
                reasoning_effort: Some("high".into()),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .context
        .unwrap();
    let (_, again) = session::until(&mut events, |e| match &e.msg {
        Some(Msg::SessionConfigured(c)) => Some(c.clone()),
        _ => None,
    })
    .await
    .unwrap();
    assert_eq!(again.model, "other-model");
    assert_eq!(again.model_provider, "openai");
    let context = again.context.unwrap();
    assert_eq!(context, answer);
    assert_eq!(context.approval_policy, pb::ApprovalPolicy::Never as i32);
    assert_eq!(context.reasoning_effort.as_deref(), Some("high"));
    let state = session::get(&mut client, &sid).await.unwrap();
    assert_eq!(
        (state.model.as_str(), state.model_provider.as_str()),
        ("other-model", "openai")
    );
    assert_eq!(state.context.unwrap(), context);

    // Back to the default: the model-proxy's model, named.
    client
        .override_turn_context(pb::OverrideTurnContextRequest {
            session_id: sid.clone(),
            context: Some(pb::TurnContext {
                model: Some(String::new()),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    assert_eq!(
        session::get(&mut client, &sid).await.unwrap().model,
        default_model
    );

    // A session that went through both markers, for replay tests.
    client
        .close_session(pb::CloseSessionRequest {
            session_id: sid.clone(),
        })
        .await
        .unwrap();
    history::record_closed(&stack.temporal_address, &sid, "session_configured_closed")
        .await
        .unwrap();
}
