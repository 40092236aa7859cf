//! The per-provider concurrency limit and wait queue, and the Prometheus
//! endpoint.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use keel_model_proxy::Metrics;
use keel_model_proxy::config::Limits;
use keel_proto::v1::stream_response_response::Event;
use keel_test_support::fake_model::{Scripted, sse};
use tonic::Code;

/// Waits until the metrics text contains `line`.
async fn wait_for_metric(metrics: &Metrics, line: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !metrics.render().contains(line) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{line} never appeared in\n{}",
            metrics.render()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn over_the_queue_a_call_is_refused_at_once() {
    let mut h = harness_with(
        vec![
            Scripted::stalled(vec![sse::created(), sse::text_delta("msg_1", "first")]),
            Scripted::assistant("second"),
        ],
        Setup {
            limits: Limits {
                max_concurrent_per_provider: 1,
                max_queued_per_provider: 1,
            },
            idle_timeout: Duration::from_secs(600),
            ..Setup::default()
        },
    )
    .await;
    // A holds the only slot.
    let mut a = h
        .client
        .stream_response(request(vec![]))
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(WAIT, a.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(first.event, Some(Event::OutputTextDelta(_))));

    // B waits in the queue.
    let mut client_b = h.client.clone();
    let b = tokio::spawn(async move { call_on(&mut client_b, request(vec![])).await });
    wait_for_metric(&h.metrics, "keel_model_calls_queued{provider=\"openai\"} 1").await;

    // C finds the queue full.
    let (events, err) = h.call(request(vec![])).await;
    let err = err.unwrap();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert_eq!(
        err.message(),
        "model-proxy is at capacity for provider openai; retry later"
    );
    // The worker retries by the ErrorInfo, which must cross the wire.
    let info = keel_proto::v1::ErrorInfo::from_status(&err).expect("an ErrorInfo");
    assert_eq!((info.class.as_str(), info.retryable), ("capacity", true));
    assert!(events.is_empty());
    assert_eq!(
        h.fake.requests().len(),
        1,
        "neither B nor C reached the vendor"
    );

    // A goes away; B gets the slot and completes.
    drop(a);
    let (events, err) = b.await.unwrap();
    assert!(err.is_none(), "{err:?}");
    assert!(matches!(events.last(), Some(Event::Completed(_))));
    let text = h.metrics.render();
    for line in [
        "keel_model_errors_total{class=\"capacity\",provider=\"openai\"} 1",
        "keel_model_requests_total{model=\"gpt-test\",outcome=\"capacity\",provider=\"openai\"} 1",
        "keel_model_calls_queued{provider=\"openai\"} 0",
    ] {
        assert!(text.contains(line), "{line} missing in\n{text}");
    }
}

#[tokio::test]
async fn metrics_are_served_over_http() {
    let mut h = harness(vec![
        Scripted::error(500, "server_error", "boom"),
        Scripted::rate_limited("0", "slow down"),
        Scripted::assistant("ok"),
    ])
    .await;
    h.call_ok(request(vec![])).await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(keel_server::metrics::serve_metrics(
        listener,
        h.metrics.registry().clone(),
    ));
    let _ = rustls::crypto::ring::default_provider().install_default();
    let resp = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    for line in [
        "keel_model_requests_total{model=\"gpt-test\",outcome=\"ok\",provider=\"openai\"} 1",
        "keel_model_errors_total{class=\"server_error\",provider=\"openai\"} 1",
        "keel_model_errors_total{class=\"rate_limited\",provider=\"openai\"} 1",
        "keel_model_retries_total{kind=\"request\",provider=\"openai\"} 1",
        "keel_model_retries_total{kind=\"stream\",provider=\"openai\"} 1",
        "keel_model_tokens_total{kind=\"input\",model=\"gpt-test\",provider=\"openai\"} 10",
        "keel_model_tokens_total{kind=\"output\",model=\"gpt-test\",provider=\"openai\"} 5",
        "keel_model_time_to_first_byte_seconds_count{model=\"gpt-test\",provider=\"openai\"} 1",
        "keel_model_request_duration_seconds_count{model=\"gpt-test\",outcome=\"ok\",provider=\"openai\"} 1",
        "keel_model_calls_in_flight{provider=\"openai\"} 0",
    ] {
        assert!(text.contains(line), "{line} missing in\n{text}");
    }
    let resp = reqwest::get(format!("http://{addr}/other")).await.unwrap();
    assert_eq!(resp.status(), 404);
}
