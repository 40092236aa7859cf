//! How long a turn may run: no hidden cap on model calls (Codex has none),
//! and a `max_iterations` setting, per session or per turn, that stops a
//! turn after N model calls with a message naming the setting.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use keel_proto::v1 as pb;
use keel_test_support::fake_model::{FakeModel, Scripted};
use keel_test_support::session;
use keel_test_support::stack::{Stack, StackOptions};
use pb::event::Msg;

fn tool_calls(n: usize) -> Vec<Scripted> {
    (0..n)
        .map(|i| {
            Scripted::tool_call(
                &format!("call_{i}"),
                "shell",
                &format!(r#"{{"command":["echo","{i}"]}}"#),
            )
        })
        .collect()
}

/// Events until the turn's `turn_complete`: the commands that ended and the
/// agent messages.
async fn finish_turn(
    stream: &mut tonic::Streaming<pb::StreamEventsResponse>,
    turn_id: &str,
) -> (usize, Vec<String>) {
    let (events, ()) = session::until(stream, |e| {
        (e.turn_id == turn_id && matches!(e.msg, Some(Msg::TurnComplete(_)))).then_some(())
    })
    .await
    .unwrap();
    let commands = events
        .iter()
        .filter(|e| matches!(e.msg, Some(Msg::ExecCommandEnd(_))))
        .count();
    let messages = events
        .iter()
        .filter_map(|e| match &e.msg {
            Some(Msg::AgentMessage(m)) => Some(m.message.clone()),
            _ => None,
        })
        .collect();
    (commands, messages)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_turn_of_120_tool_calls_completes_without_a_cap() {
    let mut script = tool_calls(120);
    script.push(Scripted::assistant("all 120 done"));
    let fake = FakeModel::start(script).await.unwrap();
    let stack = Stack::launch(StackOptions::new(fake.base_url()))
        .await
        .unwrap();
    let mut client = session::connect(&stack.session_api).await.unwrap();
    let (sid, mut stream) = session::open(&mut client, pb::CreateSessionRequest::default())
        .await
        .unwrap();
    session::send(&mut client, &sid, "long", "refactor everything")
        .await
        .unwrap();
    let (commands, messages) = finish_turn(&mut stream, "long").await;
    assert_eq!(commands, 120);
    assert_eq!(messages, ["all 120 done"]);
    assert_eq!(fake.requests().len(), 121);
}

#[tokio::test(flavor = "multi_thread")]
async fn max_iterations_per_session_and_per_turn() {
    let mut script = tool_calls(5);
    script.push(Scripted::assistant("finished"));
    let fake = FakeModel::start(script).await.unwrap();
    let stack = Stack::launch(StackOptions::new(fake.base_url()))
        .await
        .unwrap();
    let mut client = session::connect(&stack.session_api).await.unwrap();
    let (sid, mut stream) = session::open(
        &mut client,
        pb::CreateSessionRequest {
            context: Some(pb::TurnContext {
                max_iterations: Some(3),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let settings = session::get(&mut client, &sid).await.unwrap().context;
    assert_eq!(settings.and_then(|s| s.max_iterations), Some(3));

    // The session's cap stops the first turn after 3 model calls.
    session::send(&mut client, &sid, "capped", "go")
        .await
        .unwrap();
    let (commands, messages) = finish_turn(&mut stream, "capped").await;
    assert_eq!(commands, 3);
    assert_eq!(
        messages,
        [
            "Maximum iterations (3) reached (the max_iterations setting). Send another message to continue."
        ]
    );
    assert_eq!(fake.requests().len(), 3);

    // A turn that lifts the cap (0: no limit) runs to the model's answer.
    client
        .send_user_turn(pb::SendUserTurnRequest {
            session_id: sid.clone(),
            text: "continue".into(),
            turn_id: "uncapped".into(),
            context: Some(pb::TurnContext {
                max_iterations: Some(0),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let (commands, messages) = finish_turn(&mut stream, "uncapped").await;
    assert_eq!(commands, 2);
    assert_eq!(messages, ["finished"]);
    assert_eq!(fake.requests().len(), 6);

    // A session with a capped and an uncapped turn, for the replay tests.
    client
        .close_session(pb::CloseSessionRequest {
            session_id: sid.clone(),
        })
        .await
        .unwrap();
    keel_test_support::history::record_closed(
        &stack.temporal_address,
        &sid,
        "iteration_cap_closed",
    )
    .await
    .unwrap();
}
