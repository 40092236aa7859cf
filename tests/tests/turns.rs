//! Turns as Codex users know them: no hidden cap on model calls (a
//! `max_iterations` setting, per session or per turn, stops a turn after N
//! calls with a message naming it), steering — a message sent while a
//! turn runs joins it, and the model sees it at its next call — and images
//! sent with a turn's message.

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

/// A stack whose model follows `script`, and a session created with
/// `request`, followed from its start.
async fn started(
    script: Vec<Scripted>,
    request: pb::CreateSessionRequest,
) -> (
    FakeModel,
    Stack,
    session::Client,
    String,
    tonic::Streaming<pb::StreamEventsResponse>,
) {
    let fake = FakeModel::start(script).await.unwrap();
    let stack = Stack::launch(StackOptions::new(fake.base_url()))
        .await
        .unwrap();
    let mut client = stack.connect().await.unwrap();
    let (sid, stream) = session::open(&mut client, request).await.unwrap();
    (fake, stack, client, sid, stream)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_turn_of_120_tool_calls_completes_without_a_cap() {
    let mut script = tool_calls(120);
    script.push(Scripted::assistant("all 120 done"));
    let (fake, _stack, mut client, sid, mut stream) =
        started(script, pb::CreateSessionRequest::default()).await;
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
    let (fake, stack, mut client, sid, mut stream) = started(
        script,
        pb::CreateSessionRequest {
            context: Some(pb::TurnContext {
                max_iterations: Some(3),
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await;
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
            ..Default::default()
        })
        .await
        .unwrap();
    let (commands, messages) = finish_turn(&mut stream, "uncapped").await;
    assert_eq!(commands, 2);
    assert_eq!(messages, ["finished"]);
    assert_eq!(fake.requests().len(), 6);

    // A session with a capped and an uncapped turn, for the replay tests.
    keel_test_support::history::close_and_record(
        &mut client,
        &stack.temporal_address,
        &sid,
        "iteration_cap_closed",
    )
    .await
    .unwrap();
}

/// A command that runs until the test creates `go` in the session's
/// directory: a turn that is surely still running while the test steers.
fn waiting_command(call_id: &str) -> Scripted {
    Scripted::tool_call(
        call_id,
        "shell",
        r#"{"command":["bash","-c","while [ ! -e go ]; do sleep 0.02; done; echo released"]}"#,
    )
}

/// A session in a temporary directory whose turn `t1` runs
/// [`waiting_command`] (already started), then the model answers with
/// `then`.
struct Steering {
    dir: tempfile::TempDir,
    fake: FakeModel,
    stack: Stack,
    client: session::Client,
    sid: String,
    stream: tonic::Streaming<pb::StreamEventsResponse>,
}

async fn steering(then: Vec<Scripted>) -> Steering {
    let dir = tempfile::tempdir().unwrap();
    let mut script = vec![waiting_command("call_wait")];
    script.extend(then);
    let (fake, stack, mut client, sid, mut stream) = started(
        script,
        pb::CreateSessionRequest {
            cwd: dir.path().display().to_string(),
            ..Default::default()
        },
    )
    .await;
    session::send(&mut client, &sid, "t1", "run the slow thing")
        .await
        .unwrap();
    session::until(&mut stream, |e| {
        matches!(e.msg, Some(Msg::ExecCommandBegin(_))).then_some(())
    })
    .await
    .unwrap();
    Steering {
        dir,
        fake,
        stack,
        client,
        sid,
        stream,
    }
}

fn steer(sid: &str, turn_id: &str, text: &str, queue: bool) -> pb::SteerTurnRequest {
    pb::SteerTurnRequest {
        session_id: sid.into(),
        text: text.into(),
        expected_turn_id: turn_id.into(),
        queue_if_not_running: queue,
    }
}

/// The texts of the user messages in a model request's input, in order,
/// with the item types around them.
fn input_kinds(request: &keel_test_support::fake_model::RecordedRequest) -> Vec<String> {
    request
        .conversation()
        .iter()
        .map(|i| match i["type"].as_str().unwrap_or("") {
            "message" => format!(
                "{}: {}",
                i["role"].as_str().unwrap_or(""),
                i["content"][0]["text"].as_str().unwrap_or("")
            ),
            other => other.to_string(),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_steer_during_a_command_reaches_the_model_in_the_same_turn() {
    let Steering {
        dir,
        fake,
        stack,
        mut client,
        sid,
        mut stream,
    } = steering(vec![
        Scripted::assistant("steered answer"),
        Scripted::assistant("second turn answer"),
    ])
    .await;
    let answer = client
        .steer_turn(steer(&sid, "t1", "also say hello", false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((answer.turn_id.as_str(), answer.queued), ("t1", false));
    std::fs::write(dir.path().join("go"), "").unwrap();

    let (events, ()) = session::until(&mut stream, |e| {
        (e.turn_id == "t1" && matches!(e.msg, Some(Msg::TurnComplete(_)))).then_some(())
    })
    .await
    .unwrap();
    assert!(
        events.iter().any(|e| e.turn_id == "t1"
            && matches!(&e.msg, Some(Msg::UserMessage(m)) if m.message == "also say hello")),
        "{events:#?}"
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e.msg, Some(Msg::TurnStarted(_)))),
        "no new turn: {events:#?}"
    );
    let requests = fake.requests();
    assert_eq!(requests.len(), 2, "one turn, two model calls");
    let second = input_kinds(&requests[1]);
    assert_eq!(
        &second[second.len() - 3..],
        [
            "function_call",
            "function_call_output",
            "user: also say hello"
        ],
        "{second:?}"
    );

    // The turn has ended: a steer for it is refused, or queued when asked.
    let refused = client
        .steer_turn(steer(&sid, "t1", "too late", false))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(refused.message().contains("not running"), "{refused:?}");
    let queued = client
        .steer_turn(steer(&sid, "t1", "then this", true))
        .await
        .unwrap()
        .into_inner();
    assert!(queued.queued);
    assert_ne!(queued.turn_id, "t1");
    let (_, ()) = session::until(&mut stream, |e| {
        (e.turn_id == queued.turn_id && matches!(e.msg, Some(Msg::TurnComplete(_)))).then_some(())
    })
    .await
    .unwrap();
    let third = input_kinds(&fake.requests()[2]);
    assert_eq!(third.last().map(String::as_str), Some("user: then this"));

    // A session with a steered turn and a queued one, for the replay tests.
    keel_test_support::history::close_and_record(
        &mut client,
        &stack.temporal_address,
        &sid,
        "steer_closed",
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_right_after_a_steer_loses_nothing() {
    let Steering {
        dir,
        fake,
        mut stack,
        mut client,
        sid,
        mut stream,
    } = steering(vec![Scripted::assistant("done")]).await;
    client
        .steer_turn(steer(&sid, "t1", "remember this", false))
        .await
        .unwrap();
    stack.kill("keel-worker").unwrap();
    stack.restart("keel-worker").unwrap();
    std::fs::write(dir.path().join("go"), "").unwrap();
    let (_, ()) = session::until(&mut stream, |e| {
        (e.turn_id == "t1" && matches!(e.msg, Some(Msg::TurnComplete(_)))).then_some(())
    })
    .await
    .unwrap();
    let requests = fake.requests();
    assert_eq!(requests.len(), 2);
    let second = input_kinds(&requests[1]);
    assert_eq!(
        second.last().map(String::as_str),
        Some("user: remember this")
    );
    assert_eq!(
        second
            .iter()
            .filter(|k| *k == "function_call_output")
            .count(),
        1,
        "the command ran once: {second:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn images_sent_with_a_turn_reach_the_model_after_its_text() {
    let fake = FakeModel::start(vec![Scripted::assistant("a red dot")])
        .await
        .unwrap();
    let stack = Stack::launch(StackOptions::new(fake.base_url()))
        .await
        .unwrap();
    let mut client = stack.connect().await.unwrap();
    let sid = session::create(&mut client, None).await.unwrap();
    let png = b"\x89PNG\r\n\x1a\nnot really a png".to_vec();
    let image = |mime: &str, data: Vec<u8>| pb::InputImage {
        mime_type: mime.into(),
        data,
    };
    // What session-api refuses, it refuses before anything runs.
    for (images, why) in [
        (vec![image("image/svg+xml", png.clone())], "mime_type"),
        (vec![image("image/png", Vec::new())], "empty"),
        (vec![image("image/png", png.clone()); 9], "at most 8"),
        (
            vec![image("image/png", vec![0; 3 * 1024 * 1024 + 1])],
            "bytes together",
        ),
    ] {
        let err = client
            .send_user_turn(pb::SendUserTurnRequest {
                session_id: sid.clone(),
                text: "look".into(),
                images,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains(why), "{why}: {}", err.message());
    }
    client
        .send_user_turn(pb::SendUserTurnRequest {
            session_id: sid.clone(),
            text: "what is in this picture?".into(),
            turn_id: "t1".into(),
            images: vec![image("image/png", png.clone())],
            ..Default::default()
        })
        .await
        .unwrap();
    let mut events = session::follow(&mut client, &sid, 0, false).await.unwrap();
    let (_, done) = session::until(&mut events, |e| match &e.msg {
        Some(Msg::TurnComplete(c)) if e.turn_id == "t1" => Some(c.last_agent_message.clone()),
        _ => None,
    })
    .await
    .unwrap();
    assert_eq!(done, "a red dot");
    let requests = fake
        .wait_for_requests(1, std::time::Duration::from_secs(30))
        .await
        .unwrap();
    let user = requests[0]
        .conversation()
        .iter()
        .rev()
        .find(|i| i["role"] == "user")
        .unwrap()
        .clone();
    use base64::Engine as _;
    let url = format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(&png)
    );
    assert_eq!(
        user["content"],
        serde_json::json!([
            {"type": "input_text", "text": "what is in this picture?"},
            {"type": "input_image", "image_url": url},
        ])
    );
}
