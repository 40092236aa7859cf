//! Bounded history: the model call that carries a 1000-item conversation
//! records no more in workflow history than one carrying 10 items.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use keel_test_support::measure::model_call_payloads_at;

/// Upper bound for a model call's history payloads (input plus result),
/// whatever the conversation's length: digests, the per-call context and
/// tool specs, and a short summary of the answer.
const MAX_MODEL_CALL_PAYLOAD_BYTES: usize = 16 * 1024;

#[tokio::test(flavor = "multi_thread")]
async fn model_call_payloads_do_not_grow_with_the_conversation() {
    let small = model_call_payloads_at(10).await.unwrap();
    let large = model_call_payloads_at(1000).await.unwrap();
    let total = large.input_bytes + large.result_bytes;
    assert!(
        total <= MAX_MODEL_CALL_PAYLOAD_BYTES,
        "a model call at 1000 items put {total} bytes in history: {large:?}"
    );
    // Flat: the same shape of call costs the same at 10 and 1000 items (ids
    // and digests differ a little in length, nothing more).
    assert!(
        large.input_bytes.abs_diff(small.input_bytes) <= 64,
        "input grew: {small:?} -> {large:?}"
    );
    assert!(
        large.result_bytes.abs_diff(small.result_bytes) <= 64,
        "result grew: {small:?} -> {large:?}"
    );
}

/// A big tool call — here a 256 KiB patch — reaches the tool-runner through
/// the blob store: the file is written whole, while no activity puts more
/// than a small, fixed amount in history.
#[tokio::test(flavor = "multi_thread")]
async fn a_large_patch_stays_out_of_history() {
    use keel_proto::v1 as pb;
    use keel_test_support::fake_model::{FakeModel, Scripted, sse};
    use keel_test_support::stack::{Stack, StackOptions};
    use keel_test_support::{history, session};
    use serde_json::json;

    let line = "0123456789abcdef".repeat(4);
    let lines = 256 * 1024 / (line.len() + 1);
    let body: String = (0..lines).map(|_| format!("+{line}\n")).collect();
    let patch = format!("*** Begin Patch\n*** Add File: big.txt\n{body}*** End Patch");
    let fake = FakeModel::start(vec![
        Scripted::Events(vec![
            sse::created(),
            sse::output_item_done(json!({
                "type": "custom_tool_call", "id": "ctc_big", "call_id": "call_big",
                "name": "apply_patch", "input": patch,
            })),
            sse::completed("r1", 10, 5),
        ]),
        Scripted::assistant("written"),
    ])
    .await
    .unwrap();
    let stack = {
        let opts = StackOptions::new(fake.base_url());
        Stack::launch(opts).await.unwrap()
    };
    let mut client = stack.connect().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sid = session::create(&mut client, Some(dir.path()))
        .await
        .unwrap();
    let mut events = session::follow(&mut client, &sid, 0, false).await.unwrap();
    session::send(&mut client, &sid, "t1", "write a big file")
        .await
        .unwrap();
    session::until(&mut events, |e| {
        matches!(e.msg, Some(pb::event::Msg::TurnComplete(_))).then_some(())
    })
    .await
    .unwrap();
    let written = std::fs::read_to_string(dir.path().join("big.txt")).unwrap();
    assert_eq!(written.len(), lines * (line.len() + 1));

    let temporal = history::temporal_client(&stack.temporal_address)
        .await
        .unwrap();
    let json = history::history_json(&temporal, &sid).await.unwrap();
    let payloads = history::activity_payloads(&json).unwrap();
    assert!(payloads.iter().any(|p| p.activity_type == "run_tool"));
    for p in &payloads {
        let total = p.input_bytes + p.result_bytes;
        assert!(
            total <= 2 * MAX_MODEL_CALL_PAYLOAD_BYTES,
            "{} put {total} bytes in history: {p:?}",
            p.activity_type
        );
    }
}

/// A session's fixed call prefix — the tools, the developer instructions
/// and AGENTS.md — stays out of history: session-api stores the developer
/// instructions and the workflow carries their digest; the first model call
/// sends the tools and project context for the model-proxy to store, later
/// calls name them by digest. Every request to the model still gets all of
/// it.
#[tokio::test(flavor = "multi_thread")]
async fn the_call_prefix_is_in_history_once() {
    use keel_proto::v1 as pb;
    use keel_test_support::fake_model::{FakeModel, Scripted};
    use keel_test_support::stack::{Stack, StackOptions};
    use keel_test_support::{history, session};

    const DEV_MARKER: &str = "DEVELOPER-INSTRUCTIONS-MARKER";
    const AGENTS_MARKER: &str = "AGENTS-MD-MARKER";
    let developer_instructions = format!("{DEV_MARKER} {}", "Be careful. ".repeat(2000));
    let agents = format!("{AGENTS_MARKER} {}", "Use tabs. ".repeat(1500));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("AGENTS.md"), &agents).unwrap();
    let echo = serde_json::json!({"command": ["echo", "hi"]}).to_string();
    let fake = FakeModel::start(vec![
        Scripted::tool_call("c1", "shell", &echo),
        Scripted::assistant("one"),
        Scripted::assistant("two"),
    ])
    .await
    .unwrap();
    let stack = Stack::launch(StackOptions::new(fake.base_url()))
        .await
        .unwrap();
    let mut client = stack.connect().await.unwrap();
    let sid = client
        .create_session(pb::CreateSessionRequest {
            cwd: dir.path().to_str().unwrap().into(),
            developer_instructions: developer_instructions.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap()
        .session_id;
    let mut events = session::follow(&mut client, &sid, 0, false).await.unwrap();
    for turn in ["t1", "t2"] {
        session::send(&mut client, &sid, turn, "go").await.unwrap();
        session::until(&mut events, |e| {
            (e.turn_id == turn && matches!(e.msg, Some(pb::event::Msg::TurnComplete(_))))
                .then_some(())
        })
        .await
        .unwrap();
    }

    let requests = fake
        .wait_for_requests(3, std::time::Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(requests.len(), 3);
    for (i, r) in requests.iter().enumerate() {
        let body = r.body.to_string();
        assert!(
            body.contains(&developer_instructions),
            "request {i} lacks the developer instructions"
        );
        assert!(body.contains(AGENTS_MARKER), "request {i} lacks AGENTS.md");
        assert!(
            r.tool_names().contains(&"shell".to_string()),
            "request {i}: {:?}",
            r.tool_names()
        );
    }

    let temporal = history::temporal_client(&stack.temporal_address)
        .await
        .unwrap();
    let json = history::history_json(&temporal, &sid).await.unwrap();
    let text = history::decoded_text(&json).unwrap();
    assert!(
        !text.contains(DEV_MARKER),
        "the developer instructions are in history"
    );
    // Once in the setup's result, once in the first model call.
    assert_eq!(
        text.matches(AGENTS_MARKER).count(),
        2,
        "AGENTS.md in history"
    );
    let calls: Vec<_> = history::activity_payloads(&json)
        .unwrap()
        .into_iter()
        .filter(|a| a.activity_type == "model_call")
        .collect();
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert!(calls[0].input_bytes > agents.len(), "{calls:?}");
    for later in &calls[1..] {
        assert!(
            later.input_bytes < 4096,
            "a later call repeats the prefix: {calls:?}"
        );
    }

    // A session that went through patch call-prefix-v1, for replay tests.
    client
        .close_session(pb::CloseSessionRequest {
            session_id: sid.clone(),
        })
        .await
        .unwrap();
    history::record_closed(&stack.temporal_address, &sid, "call_prefix_closed")
        .await
        .unwrap();
}

/// A model-proxy whose blob store lost a session's call prefix (a wiped
/// store, a new bucket) answers `prefix_missing`; the workflow sends the
/// prefix again, once, and the turn goes on as if nothing happened.
#[tokio::test(flavor = "multi_thread")]
async fn a_lost_call_prefix_is_sent_again() {
    use keel_proto::v1 as pb;
    use keel_test_support::fake_model::{FakeModel, Scripted};
    use keel_test_support::stack::{Stack, StackOptions};
    use keel_test_support::{history, session};

    let fake = FakeModel::start(vec![Scripted::assistant("one"), Scripted::assistant("two")])
        .await
        .unwrap();
    let stack = Stack::launch(StackOptions::new(fake.base_url()))
        .await
        .unwrap();
    let mut client = stack.connect().await.unwrap();
    let sid = session::create(&mut client, None).await.unwrap();
    let mut events = session::follow(&mut client, &sid, 0, false).await.unwrap();
    let finish = async |events: &mut tonic::Streaming<pb::StreamEventsResponse>, turn: &str| {
        session::until(events, |e| match &e.msg {
            Some(pb::event::Msg::Error(err)) if e.turn_id == turn => {
                panic!("turn {turn} failed: {err:?}")
            }
            Some(pb::event::Msg::TurnComplete(c)) if e.turn_id == turn => {
                Some(c.last_agent_message.clone())
            }
            _ => None,
        })
        .await
        .unwrap()
        .1
    };
    session::send(&mut client, &sid, "t1", "first")
        .await
        .unwrap();
    assert_eq!(finish(&mut events, "t1").await, "one");

    // The prefix the first call stored, named in its input in history.
    let temporal = history::temporal_client(&stack.temporal_address)
        .await
        .unwrap();
    let text =
        history::decoded_text(&history::history_json(&temporal, &sid).await.unwrap()).unwrap();
    let at = text
        .find("\"prefix_digest\":\"")
        .expect("no prefix digest in history")
        + 17;
    let digest = &text[at..at + 64];
    let blob = stack
        .session_blobs_dir(&sid)
        .join("sha256")
        .join(&digest[..2])
        .join(digest);
    std::fs::remove_file(&blob).unwrap();

    session::send(&mut client, &sid, "t2", "second")
        .await
        .unwrap();
    assert_eq!(finish(&mut events, "t2").await, "two");
    assert!(blob.exists(), "the prefix was not stored again");
    let requests = fake.requests();
    assert_eq!(requests.len(), 2, "the lost prefix cost no model request");
    assert!(requests[1].tool_names().contains(&"shell".to_string()));
}
