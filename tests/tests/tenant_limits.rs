//! Per-tenant limits on session-api: over a limit, a call gets
//! RESOURCE_EXHAUSTED naming the limit, with RetryInfo when waiting helps;
//! other tenants are not affected.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::time::{Duration, Instant};

use keel_proto::v1 as pb;
use keel_test_support::fake_model::{FakeModel, Scripted};
use keel_test_support::session::{self, Client};
use keel_test_support::stack::{Stack, StackOptions};
use tonic::Code;

async fn open_sessions(client: &mut Client) -> usize {
    client
        .list_sessions(pb::ListSessionsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .sessions
        .iter()
        .filter(|s| s.status != pb::SessionStatus::Closed as i32)
        .count()
}

/// Waits until `f` holds (Temporal's visibility store lags a little).
async fn until(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_over_its_limits_is_told_so_and_others_go_on() {
    let fake = FakeModel::start(
        (0..3)
            .map(|i| Scripted::assistant(&format!("a{i}")))
            .collect(),
    )
    .await
    .unwrap();
    let mut options = StackOptions::new(fake.base_url());
    options.session_api_args = [
        "--tenant-turns-per-minute",
        "2",
        "--tenant-max-streams",
        "2",
        "--tenant-max-open-sessions",
        "2",
    ]
    .map(String::from)
    .to_vec();
    let stack = Stack::launch(options).await.unwrap();
    let mut mine = stack.connect().await.unwrap();
    let mut theirs = session::connect(&stack.session_api, Some(&stack.other_token))
        .await
        .unwrap();

    // Open sessions.
    let first = session::create(&mut mine, None).await.unwrap();
    let second = session::create(&mut mine, None).await.unwrap();
    until("both sessions to be visible", async || {
        open_sessions(&mut mine).await == 2
    })
    .await;
    let refused = mine
        .create_session(pb::CreateSessionRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("--tenant-max-open-sessions"),
        "{refused:?}"
    );
    let info = pb::ErrorInfo::from_status(&refused).unwrap();
    assert_eq!(info.class, "tenant_limit");
    assert_eq!(info.details["limit"], "tenant-max-open-sessions");
    let other_session = session::create(&mut theirs, None).await.unwrap();

    // Turns per minute: two, then a wait of about 30 s.
    session::send(&mut mine, &first, "t1", "one").await.unwrap();
    session::send(&mut mine, &second, "t2", "two")
        .await
        .unwrap();
    let refused = mine
        .send_user_turn(pb::SendUserTurnRequest {
            session_id: first.clone(),
            text: "three".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("--tenant-turns-per-minute"));
    let wait = keel_proto::errors::retry_info(&refused).expect("RetryInfo");
    assert!(
        wait > Duration::from_secs(20) && wait <= Duration::from_secs(30),
        "{wait:?}"
    );
    session::send(&mut theirs, &other_session, "t1", "theirs")
        .await
        .unwrap();

    // Open streams: two, then refused until one closes.
    let one = session::follow(&mut mine, &first, 0, false).await.unwrap();
    let _two = session::follow(&mut mine, &second, 0, false).await.unwrap();
    let refused = session::follow(&mut mine, &first, 0, false)
        .await
        .err()
        .unwrap();
    let refused = refused.downcast::<tonic::Status>().unwrap();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(refused.message().contains("--tenant-max-streams"));
    assert!(
        session::follow(&mut theirs, &other_session, 0, false)
            .await
            .is_ok()
    );
    drop(one);
    until("a stream slot to free up", async || {
        session::follow(&mut mine, &first, 0, false).await.is_ok()
    })
    .await;

    // Closing a session makes room for a new one.
    mine.close_session(pb::CloseSessionRequest {
        session_id: second.clone(),
    })
    .await
    .unwrap();
    until("room for a new session", async || {
        mine.create_session(pb::CreateSessionRequest::default())
            .await
            .is_ok()
    })
    .await;
}

/// Inputs past their limits are refused before anything is stored or
/// started, with a message naming the limit.
#[tokio::test(flavor = "multi_thread")]
async fn oversized_inputs_are_refused_naming_the_limit() {
    let fake = FakeModel::start(vec![]).await.unwrap();
    let stack = Stack::launch(StackOptions::new(fake.base_url()))
        .await
        .unwrap();
    let mut client = stack.connect().await.unwrap();
    let refused = |r: Result<tonic::Response<pb::CreateSessionResponse>, tonic::Status>| {
        let status = r.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        let info = pb::ErrorInfo::from_status(&status).unwrap();
        assert_eq!(
            (info.class.as_str(), info.retryable),
            ("invalid_request", false)
        );
        status.message().to_string()
    };
    let too_many_instructions = client
        .create_session(pb::CreateSessionRequest {
            developer_instructions: "x".repeat(32 * 1024 + 1),
            ..Default::default()
        })
        .await;
    assert!(refused(too_many_instructions).contains("at most 32768"));
    let long_cwd = client
        .create_session(pb::CreateSessionRequest {
            cwd: format!("/{}", "d".repeat(5000)),
            ..Default::default()
        })
        .await;
    assert!(refused(long_cwd).contains("at most 4096 bytes"));
    let model = client
        .create_session(pb::CreateSessionRequest {
            model: "m".repeat(200),
            ..Default::default()
        })
        .await;
    assert!(refused(model).contains("at most 128"));

    let sid = session::create(&mut client, None).await.unwrap();
    let text = client
        .send_user_turn(pb::SendUserTurnRequest {
            session_id: sid.clone(),
            text: "t".repeat(1024 * 1024 + 1),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(text.code(), Code::InvalidArgument);
    assert!(text.message().contains("at most 1048576"), "{text:?}");
    // Past the request size limit, tonic refuses the message itself.
    let huge = client
        .send_user_turn(pb::SendUserTurnRequest {
            session_id: sid.clone(),
            text: "t".repeat(5 * 1024 * 1024),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(huge.code(), Code::OutOfRange, "{huge:?}");
    assert!(
        huge.message().contains("the limit is: 4194304 bytes"),
        "{huge:?}"
    );
    // None of it reached the session.
    let state = session::get(&mut client, &sid).await.unwrap();
    assert_eq!(state.queued_turns + state.turns_completed as u32, 0);
}

/// A session whose running turn is busy, with `--max-queued-turns 2`.
async fn busy_session(
    fake: &FakeModel,
    workspace: &std::path::Path,
) -> (
    Stack,
    Client,
    String,
    tonic::Streaming<pb::StreamEventsResponse>,
) {
    let mut options = StackOptions::new(fake.base_url());
    options.session_api_args = ["--max-queued-turns", "2"].map(String::from).to_vec();
    let stack = Stack::launch(options).await.unwrap();
    let mut client = stack.connect().await.unwrap();
    let sid = session::create(&mut client, Some(workspace)).await.unwrap();
    let mut events = session::follow(&mut client, &sid, 0, false).await.unwrap();
    session::send(&mut client, &sid, "t1", "sleep")
        .await
        .unwrap();
    session::until(&mut events, |e| {
        matches!(e.msg, Some(pb::event::Msg::ExecCommandBegin(_))).then_some(())
    })
    .await
    .unwrap();
    (stack, client, sid, events)
}

fn sleeper() -> Scripted {
    let sleep = serde_json::json!({"command": ["sleep", "600"], "timeout_ms": 600000}).to_string();
    Scripted::tool_call("c_sleep", "shell", &sleep)
}

/// A session's queue of waiting turns is bounded: once it is full,
/// SendUserTurn is refused with RESOURCE_EXHAUSTED naming the limit
/// (nothing queued), and once the queue drains turns are taken again.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_turn_queue_refuses_more_turns() {
    let workspace = tempfile::tempdir().unwrap();
    let fake = FakeModel::start(vec![
        sleeper(),
        Scripted::assistant("second"),
        Scripted::assistant("third"),
        Scripted::assistant("fourth"),
    ])
    .await
    .unwrap();
    let (stack, mut client, sid, mut events) = busy_session(&fake, workspace.path()).await;
    session::send(&mut client, &sid, "t2", "two").await.unwrap();
    session::send(&mut client, &sid, "t3", "three")
        .await
        .unwrap();
    // The workflow has taken both (and marked its queue full).
    until("two queued turns", async || {
        session::get(&mut client, &sid).await.unwrap().queued_turns == 2
    })
    .await;
    let refused = client
        .send_user_turn(pb::SendUserTurnRequest {
            session_id: sid.clone(),
            text: "four".into(),
            turn_id: "t4".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("--max-queued-turns"),
        "{refused:?}"
    );
    let info = pb::ErrorInfo::from_status(&refused).unwrap();
    assert_eq!(info.class, "queue_full");
    // A queuing SteerTurn is refused the same way.
    let refused = client
        .steer_turn(pb::SteerTurnRequest {
            session_id: sid.clone(),
            text: "five".into(),
            expected_turn_id: "not-running".into(),
            queue_if_not_running: true,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(
        session::get(&mut client, &sid).await.unwrap().queued_turns,
        2
    );

    // The running turn ends; the queue drains; a new turn is taken.
    client
        .interrupt(pb::InterruptRequest {
            session_id: sid.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    session::until(&mut events, |e| {
        (e.turn_id == "t3" && matches!(e.msg, Some(pb::event::Msg::TurnComplete(_)))).then_some(())
    })
    .await
    .unwrap();
    session::send(&mut client, &sid, "t4", "four")
        .await
        .unwrap();
    let (_, done) = session::until(&mut events, |e| match &e.msg {
        Some(pb::event::Msg::TurnComplete(c)) if e.turn_id == "t4" => {
            Some(c.last_agent_message.clone())
        }
        _ => None,
    })
    .await
    .unwrap();
    assert_eq!(done, "fourth");
    drop(stack);
}

/// Turns sent while no worker runs cannot be checked against the queue by
/// session-api; the workflow enforces the limit when the worker is back:
/// the turn past it is not queued, and an `error` event under its id says
/// why.
#[tokio::test(flavor = "multi_thread")]
async fn the_workflow_refuses_turns_past_the_limit_that_got_through() {
    let workspace = tempfile::tempdir().unwrap();
    let fake = FakeModel::start(vec![sleeper()]).await.unwrap();
    let (mut stack, mut client, sid, mut events) = busy_session(&fake, workspace.path()).await;
    stack.kill("keel-worker").unwrap();
    for (turn, text) in [("t2", "two"), ("t3", "three"), ("t4", "four")] {
        session::send(&mut client, &sid, turn, text).await.unwrap();
    }
    stack.restart("keel-worker").unwrap();
    let (_, error) = session::until(&mut events, |e| match &e.msg {
        Some(pb::event::Msg::Error(err)) if e.turn_id == "t4" => Some(err.clone()),
        _ => None,
    })
    .await
    .unwrap();
    assert_eq!(error.codex_error_info, "queue_full");
    assert!(error.message.contains("--max-queued-turns"), "{error:?}");
    assert_eq!(
        session::get(&mut client, &sid).await.unwrap().queued_turns,
        2
    );
    client
        .close_session(pb::CloseSessionRequest {
            session_id: sid.clone(),
        })
        .await
        .unwrap();
    keel_test_support::history::record_closed(&stack.temporal_address, &sid, "queue_full_closed")
        .await
        .unwrap();
}

/// A call that cannot be answered in time — GetSession, whose state query
/// needs a worker, while none runs — is answered DEADLINE_EXCEEDED at the
/// server's deadline (`--request-timeout-secs`) instead of hanging.
#[tokio::test(flavor = "multi_thread")]
async fn a_call_past_its_deadline_is_answered_deadline_exceeded() {
    let fake = FakeModel::start(vec![]).await.unwrap();
    let mut options = StackOptions::new(fake.base_url());
    options.session_api_args = ["--request-timeout-secs", "2"].map(String::from).to_vec();
    let mut stack = Stack::launch(options).await.unwrap();
    let mut client = stack.connect().await.unwrap();
    let sid = session::create(&mut client, None).await.unwrap();
    session::get(&mut client, &sid).await.unwrap();
    stack.kill("keel-worker").unwrap();
    let err = client
        .get_session(pb::GetSessionRequest {
            session_id: sid.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(err.message().contains("--request-timeout-secs"), "{err:?}");
    // Calls that need no worker are answered as before.
    client
        .list_sessions(pb::ListSessionsRequest::default())
        .await
        .unwrap();
}
