//! Model failures that retrying cannot fix reach the client as an `error`
//! event with Codex's error class, fast: the vendor is called once (no
//! Temporal retries), the turn completes, and the session keeps working.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use keel_proto::v1 as pb;
use keel_test_support::fake_model::{FakeModel, Scripted};
use keel_test_support::session;
use keel_test_support::stack::{Stack, StackOptions};
use pb::event::Msg;

#[tokio::test(flavor = "multi_thread")]
async fn fatal_model_errors_become_error_events_and_the_session_goes_on() {
    let fake = FakeModel::start(vec![
        Scripted::error(401, "invalid_api_key", "Incorrect API key provided."),
        Scripted::error(
            400,
            "context_length_exceeded",
            "maximum context length is 8192",
        ),
        Scripted::error(
            429,
            "insufficient_quota",
            "You exceeded your current quota.",
        ),
        Scripted::assistant("still here"),
    ])
    .await
    .unwrap();
    let stack = {
        let opts = StackOptions::new(fake.base_url());
        Stack::launch(opts).await.unwrap()
    };
    let mut client = stack.connect().await.unwrap();
    let sid = session::create(&mut client, None).await.unwrap();
    let mut events = session::follow(&mut client, &sid, 0, false).await.unwrap();
    let cases = [
        ("unauthorized", "check OPENAI_API_KEY"),
        ("context_window_exceeded", "context window exceeded"),
        ("usage_limit_exceeded", "quota exceeded"),
    ];
    for (i, (class, text)) in cases.iter().enumerate() {
        session::send(&mut client, &sid, &format!("t{i}"), "hello")
            .await
            .unwrap();
        let (seen, _) = session::until(&mut events, |e| {
            matches!(e.msg, Some(Msg::TurnComplete(_))).then_some(())
        })
        .await
        .unwrap();
        let error = seen
            .iter()
            .find_map(|e| match &e.msg {
                Some(Msg::Error(err)) => Some(err.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no error event for {class}: {seen:#?}"));
        assert_eq!(error.codex_error_info, *class, "{error:?}");
        assert!(error.message.contains(text), "{error:?}");
        // One vendor call per failing turn: nothing retried it.
        assert_eq!(fake.requests().len(), i + 1, "{class} was retried");
    }
    session::send(&mut client, &sid, "t-ok", "hello again")
        .await
        .unwrap();
    let (_, done) = session::until(&mut events, |e| match &e.msg {
        Some(Msg::TurnComplete(c)) => Some(c.clone()),
        _ => None,
    })
    .await
    .unwrap();
    assert_eq!(done.last_agent_message, "still here");
}

/// The provider's rate-limit headers reach clients in `token_count`
/// (Codex's `rate_limits`): the `x-codex-*` windows of Codex's backend.
#[tokio::test(flavor = "multi_thread")]
async fn rate_limit_headers_reach_token_count() {
    let fake = FakeModel::start(vec![Scripted::assistant_with_headers(
        "hi",
        &[
            ("x-codex-primary-used-percent", "42.5"),
            ("x-codex-primary-window-minutes", "300"),
            ("x-codex-primary-reset-at", "1704069000"),
            ("x-codex-secondary-used-percent", "13"),
            ("x-codex-secondary-window-minutes", "10080"),
            ("x-codex-secondary-reset-at", "1704600000"),
        ],
    )])
    .await
    .unwrap();
    let stack = Stack::launch(StackOptions::new(fake.base_url()))
        .await
        .unwrap();
    let mut client = stack.connect().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sid = session::create(&mut client, Some(dir.path()))
        .await
        .unwrap();
    let mut events = session::follow(&mut client, &sid, 0, false).await.unwrap();
    session::send(&mut client, &sid, "t1", "hello")
        .await
        .unwrap();
    let (_, limits) = session::until(&mut events, |e| match &e.msg {
        Some(Msg::TokenCount(t)) => Some(t.rate_limits),
        _ => None,
    })
    .await
    .unwrap();
    let limits = limits.expect("rate_limits in token_count");
    assert_eq!(
        limits.primary,
        Some(pb::RateLimitWindow {
            used_percent: 42.5,
            window_minutes: 300,
            resets_at: 1_704_069_000,
        })
    );
    assert_eq!(
        limits.secondary,
        Some(pb::RateLimitWindow {
            used_percent: 13.0,
            window_minutes: 10_080,
            resets_at: 1_704_600_000,
        })
    );
}
