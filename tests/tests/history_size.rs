//! Bounded history: the model call that carries a 1000-item conversation
//! records no more in workflow history than one carrying 10 items.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use keel_e2e::measure::model_call_payloads_at;

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
