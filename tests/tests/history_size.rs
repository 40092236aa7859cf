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
