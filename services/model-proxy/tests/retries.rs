//! Failures inside the proxy (Codex: `codex-rs/core/src/client.rs`): what is retried, how, what the client
//! sees while it is, and what fails fast.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::*;
use keel_blobstore::conversation;
use keel_proto::v1::MessageItem;
use keel_proto::v1::output_item_done::Item;
use keel_proto::v1::stream_response_response::Event;
use keel_test_support::fake_model::{Scripted, sse};
use serde_json::Value;
use tonic::Code;

fn assistant_text(items: &[&Item]) -> Vec<String> {
    items
        .iter()
        .map(|i| match i {
            Item::Message(MessageItem { text, .. }) => text.clone(),
            other => panic!("{other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn a_cut_stream_is_retried_and_leaves_no_partial_items() {
    let mut h = harness(vec![
        // Cut mid-body, after an item finished.
        Scripted::aborted(vec![
            sse::created(),
            sse::text_delta("msg_1", "Partial"),
            sse::message("msg_1", "Partial"),
        ]),
        // Closed cleanly without response.completed.
        Scripted::Events(vec![sse::created(), sse::message("msg_2", "Also partial")]),
        Scripted::assistant("Whole"),
    ])
    .await;
    let events = h.call_ok(request(vec![inline(&user_message("hi"))])).await;
    assert_eq!(
        stream_errors(&events),
        [
            ("Reconnecting... 1/5".to_string(), 1),
            ("Reconnecting... 2/5".to_string(), 2)
        ]
    );
    let Some(Event::StreamError(first)) =
        events.iter().find(|e| matches!(e, Event::StreamError(_)))
    else {
        panic!("a stream_error")
    };
    assert!(
        first.details.contains("error reading the SSE stream"),
        "{first:?}"
    );
    assert_eq!(assistant_text(&items(&events)), ["Whole"]);

    // The conversation holds the input and the completed attempt's output only.
    let head = &completed(&events).head;
    let digests = conversation::item_digests(&h.blobs, Some(head))
        .await
        .unwrap();
    assert_eq!(digests.len(), 2);
    let output: Value = h.blobs.get_json(&digests[1]).await.unwrap();
    assert_eq!(output["content"][0]["text"], "Whole");
    assert_eq!(h.segments().len(), 1, "one segment, written on completion");

    // Every attempt sent the same request.
    let reqs = h.fake.requests();
    assert_eq!(reqs.len(), 3);
    assert!(reqs.iter().all(|r| r.body == reqs[0].body));
}

#[tokio::test]
async fn http_429_honours_retry_after_seconds() {
    let mut h = harness(vec![
        Scripted::rate_limited("1", "Rate limit reached"),
        Scripted::assistant("ok"),
    ])
    .await;
    let started = Instant::now();
    let events = h.call_ok(request(vec![])).await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(1), "waited {waited:?}");
    assert_eq!(
        stream_errors(&events),
        [("Reconnecting... 1/5".to_string(), 1)]
    );
    assert_eq!(assistant_text(&items(&events)), ["ok"]);
    assert_eq!(h.fake.requests().len(), 2);
}

#[tokio::test]
async fn http_429_honours_retry_after_dates_and_body_hints() {
    let past = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(30));
    let mut h = harness(vec![
        Scripted::rate_limited(&past, "a date in the past: retry now"),
        Scripted::error(429, "rate_limit_exceeded", "Please try again in 300ms."),
        Scripted::assistant("ok"),
    ])
    .await;
    let started = Instant::now();
    let events = h.call_ok(request(vec![])).await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(300), "waited {waited:?}");
    assert!(waited < Duration::from_secs(5), "waited {waited:?}");
    assert_eq!(stream_errors(&events).len(), 2);
    assert_eq!(h.fake.requests().len(), 3);
}

#[tokio::test]
async fn rate_limits_past_the_retry_budget_are_resource_exhausted() {
    let mut h = harness_with(
        vec![
            Scripted::rate_limited("0", "Rate limit reached"),
            Scripted::rate_limited("0", "Rate limit reached"),
            Scripted::rate_limited("0", "Rate limit reached"),
        ],
        Setup {
            stream_max_retries: 2,
            ..Setup::default()
        },
    )
    .await;
    let (events, err) = h.call(request(vec![])).await;
    let err = err.unwrap();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("rate limit"), "{err:?}");
    assert!(
        err.message().ends_with("(gave up after 2 retries)"),
        "{err:?}"
    );
    assert_eq!(stream_errors(&events).len(), 2);
    assert_eq!(h.fake.requests().len(), 3);

    // A server asking for a longer wait than the proxy will give fails now.
    h.fake
        .push(Scripted::rate_limited("3600", "Rate limit reached"));
    let err = h.call_err(request(vec![])).await;
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("asked to wait 3600s"), "{err:?}");
    assert_eq!(h.fake.requests().len(), 4);
}

#[tokio::test]
async fn server_errors_are_retried_silently() {
    let mut h = harness(vec![
        Scripted::error(500, "server_error", "boom"),
        Scripted::error(502, "bad_gateway", "boom"),
        Scripted::assistant("ok"),
    ])
    .await;
    let events = h.call_ok(request(vec![])).await;
    assert!(stream_errors(&events).is_empty(), "{events:?}");
    assert_eq!(assistant_text(&items(&events)), ["ok"]);
    assert_eq!(h.fake.requests().len(), 3);
}

#[tokio::test]
async fn server_errors_past_request_retries_become_stream_retries() {
    let mut h = harness_with(
        vec![
            Scripted::error(500, "server_error", "boom"),
            Scripted::error(500, "server_error", "boom"),
            Scripted::error(503, "unavailable", "boom"),
            Scripted::assistant("ok"),
        ],
        Setup {
            request_max_retries: 1,
            stream_max_retries: 2,
            ..Setup::default()
        },
    )
    .await;
    let events = h.call_ok(request(vec![])).await;
    assert_eq!(
        stream_errors(&events),
        [("Reconnecting... 1/2".to_string(), 1)]
    );
    assert_eq!(h.fake.requests().len(), 4);

    // With every budget spent the call is UNAVAILABLE, for the worker to retry.
    for _ in 0..6 {
        h.fake.push(Scripted::error(500, "server_error", "boom"));
    }
    let (events, err) = h.call(request(vec![])).await;
    let err = err.unwrap();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert_eq!(
        err.message(),
        "the model API failed (HTTP 500): boom (gave up after 2 retries)"
    );
    assert_eq!(stream_errors(&events).len(), 2);
    assert_eq!(h.fake.requests().len(), 10);
}

#[tokio::test]
async fn an_idle_stream_is_retried() {
    let mut h = harness_with(
        vec![
            Scripted::stalled(vec![sse::created(), sse::text_delta("msg_1", "Hel")]),
            Scripted::assistant("Hello"),
        ],
        Setup {
            idle_timeout: Duration::from_millis(200),
            ..Setup::default()
        },
    )
    .await;
    let events = h.call_ok(request(vec![])).await;
    let Some(Event::StreamError(e)) = events.iter().find(|e| matches!(e, Event::StreamError(_)))
    else {
        panic!("a stream_error: {events:?}")
    };
    assert_eq!((e.message.as_str(), e.attempt), ("Reconnecting... 1/5", 1));
    assert_eq!(e.details, "idle timeout waiting for SSE");
    assert_eq!(assistant_text(&items(&events)), ["Hello"]);
    h.fake.wait_for_closed_streams(2, WAIT).await.unwrap();
}

#[tokio::test]
async fn malformed_events_are_skipped() {
    let mut h = harness(vec![Scripted::Events(vec![
        sse::created(),
        sse::raw("{not json"),
        sse::event(serde_json::json!({"type": "response.output_item.done", "item": 7})),
        sse::event(serde_json::json!({"type": "response.output_text.delta"})),
        sse::message("msg_1", "fine"),
        sse::completed("resp_1", 1, 1),
    ])])
    .await;
    let events = h.call_ok(request(vec![])).await;
    assert_eq!(assistant_text(&items(&events)), ["fine"]);
    assert!(stream_errors(&events).is_empty());
}

#[tokio::test]
async fn fatal_failures_fail_fast_with_actionable_messages() {
    let cases = [
        (
            Scripted::error(
                401,
                "invalid_api_key",
                &format!("Incorrect API key provided: {KEY}."),
            ),
            Code::Unauthenticated,
            "(check OPENAI_API_KEY)",
        ),
        (
            Scripted::error(
                429,
                "insufficient_quota",
                "You exceeded your current quota.",
            ),
            Code::ResourceExhausted,
            "quota exceeded: You exceeded your current quota. (check the plan and billing details",
        ),
        (
            Scripted::error(
                429,
                "usage_limit_reached",
                "The usage limit has been reached",
            ),
            Code::ResourceExhausted,
            "usage limit reached: The usage limit has been reached (try again after the limit resets)",
        ),
        (
            Scripted::error(
                400,
                "context_length_exceeded",
                "maximum context length is 8192",
            ),
            Code::OutOfRange,
            "context window exceeded: maximum context length is 8192",
        ),
        (
            Scripted::Events(vec![sse::failed("context_length_exceeded", "too long")]),
            Code::OutOfRange,
            "context window exceeded: too long",
        ),
        (
            Scripted::error(400, "invalid_request_error", "Unknown parameter: 'x'"),
            Code::InvalidArgument,
            "the model API rejected the request (HTTP 400): Unknown parameter: 'x'",
        ),
        (
            Scripted::error(429, "usage_not_included", "Upgrade your plan"),
            Code::PermissionDenied,
            "usage is not included in the plan: Upgrade your plan",
        ),
    ];
    let n = cases.len();
    let (script, expected): (Vec<_>, Vec<_>) = cases
        .into_iter()
        .map(|(s, code, text)| (s, (code, text)))
        .unzip();
    let mut h = harness(script).await;
    for (code, text) in expected {
        let (events, err) = h.call(request(vec![])).await;
        let err = err.unwrap();
        assert_eq!(err.code(), code, "{err:?}");
        assert!(err.message().contains(text), "{text:?} not in {err:?}");
        assert!(!err.message().contains(KEY), "the key leaked: {err:?}");
        assert!(stream_errors(&events).is_empty());
    }
    assert_eq!(h.fake.requests().len(), n, "nothing was retried");
}
