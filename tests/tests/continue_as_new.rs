//! History rollover: with a tiny history budget the session continues-as-new
//! after every turn. Queued turns, the conversation, counters, token totals
//! and event offsets all carry over: one client stream sees every event once,
//! in order, and the model receives the whole conversation afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::time::Duration;

use keel_proto::v1 as pb;
use keel_test_support::fake_model::{FakeModel, Scripted, sse};
use keel_test_support::history;
use keel_test_support::session;
use keel_test_support::stack::{Stack, StackOptions};
use pb::event::Msg;

const WAIT: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread")]
async fn session_rolls_over_and_carries_everything() {
    let fake = FakeModel::start(vec![
        Scripted::tool_call("call_1", "shell", r#"{"command":["echo","one"]}"#),
        Scripted::assistant("answer 1"),
        Scripted::assistant("answer 2"),
        Scripted::assistant("answer 3"),
        Scripted::assistant("answer 4"),
    ])
    .await
    .unwrap();
    let mut opts = StackOptions::new(fake.base_url());
    opts.history_event_budget = 1;
    let stack = Stack::launch(opts).await.unwrap();
    let mut client = stack.connect().await.unwrap();
    let workspace = tempfile::tempdir().unwrap();
    let sid = session::create(&mut client, Some(workspace.path()))
        .await
        .unwrap();
    let mut stream = session::follow(&mut client, &sid, 0, false).await.unwrap();
    // All four turns at once: three of them wait in the queue across rollovers.
    for i in 1..=4 {
        client
            .send_user_turn(pb::SendUserTurnRequest {
                session_id: sid.clone(),
                text: format!("question {i}"),
                turn_id: format!("turn-{i}"),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let mut events = Vec::new();
    tokio::time::timeout(WAIT, async {
        while let Some(m) = stream.message().await.unwrap() {
            let Some(pb::stream_events_response::Kind::Event(e)) = m.kind else {
                panic!("unexpected gap {m:?}");
            };
            let last = e.turn_id == "turn-4" && matches!(e.msg, Some(Msg::TurnComplete(_)));
            events.push(e);
            if last {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("turns did not finish; got {events:#?}"));

    let offsets: Vec<u64> = events.iter().map(|e| e.offset).collect();
    assert_eq!(
        offsets,
        (1..=events.len() as u64).collect::<Vec<_>>(),
        "no gap, no repeat"
    );
    let completions: Vec<(String, String)> = events
        .iter()
        .filter_map(|e| match &e.msg {
            Some(Msg::TurnComplete(c)) => Some((e.turn_id.clone(), c.last_agent_message.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        completions,
        (1..=4)
            .map(|i| (format!("turn-{i}"), format!("answer {i}")))
            .collect::<Vec<_>>()
    );
    let configured = events
        .iter()
        .filter(|e| matches!(e.msg, Some(Msg::SessionConfigured(_))))
        .count();
    assert_eq!(configured, 1, "a rollover is invisible to clients");

    let session = session::get(&mut client, &sid).await.unwrap();
    assert!(session.history_rollovers >= 3, "{session:?}");
    assert_eq!(session.turns_completed, 4);
    let usage = session.total_token_usage.unwrap();
    // Five model calls of the fake's (10 in, 5 out) each.
    assert_eq!((usage.input_tokens, usage.output_tokens), (50, 25));

    let requests = fake.wait_for_requests(5, WAIT).await.unwrap();
    let texts: Vec<String> = requests[4]
        .conversation()
        .iter()
        .map(|i| match i["type"].as_str().unwrap() {
            "message" => format!(
                "{}: {}",
                i["role"].as_str().unwrap(),
                i["content"][0]["text"].as_str().unwrap()
            ),
            other => other.to_string(),
        })
        .collect();
    assert_eq!(
        texts,
        [
            "user: question 1",
            "function_call",
            "function_call_output",
            "assistant: answer 1",
            "user: question 2",
            "assistant: answer 2",
            "user: question 3",
            "assistant: answer 3",
            "user: question 4",
        ]
    );
    let keys: Vec<&serde_json::Value> = requests
        .iter()
        .map(|r| &r.body["prompt_cache_key"])
        .collect();
    assert!(
        keys.iter().all(|k| *k == keys[0]),
        "prompt_cache_key changed: {keys:?}"
    );

    // The run after several rollovers starts from carried state: record it
    // (closed) for the replay tests.
    client
        .close_session(pb::CloseSessionRequest {
            session_id: sid.clone(),
        })
        .await
        .unwrap();
    history::record_closed(&stack.temporal_address, &sid, "rolled_over_closed")
        .await
        .unwrap();
}

/// Compact: the model gets a summarisation request without tools, the session
/// continues from the recent user messages plus the summary, and its history
/// rolls over.
#[tokio::test(flavor = "multi_thread")]
async fn compact_replaces_the_conversation_with_a_summary() {
    let fake = FakeModel::start(vec![
        Scripted::assistant("noted"),
        Scripted::assistant("sure"),
        Scripted::assistant("The user's code word is PELICAN; nothing else is pending."),
        Scripted::assistant("PELICAN"),
    ])
    .await
    .unwrap();
    let stack = {
        let opts = StackOptions::new(fake.base_url());
        Stack::launch(opts).await.unwrap()
    };
    let mut client = stack.connect().await.unwrap();
    let workspace = tempfile::tempdir().unwrap();
    let sid = session::create(&mut client, Some(workspace.path()))
        .await
        .unwrap();
    let mut events = session::follow(&mut client, &sid, 0, false).await.unwrap();
    let turn_done = |e: &pb::Event| matches!(e.msg, Some(Msg::TurnComplete(_))).then_some(());
    session::send(&mut client, &sid, "t1", "remember the code word PELICAN")
        .await
        .unwrap();
    session::until(&mut events, turn_done).await.unwrap();
    session::send(&mut client, &sid, "t2", "and be brief")
        .await
        .unwrap();
    session::until(&mut events, turn_done).await.unwrap();

    client
        .compact(pb::CompactRequest {
            session_id: sid.clone(),
        })
        .await
        .unwrap();
    let (_, compacted) = session::until(&mut events, |e| match &e.msg {
        Some(Msg::ContextCompacted(c)) => Some(c.clone()),
        Some(Msg::Error(err)) => panic!("compaction failed: {err:?}"),
        _ => None,
    })
    .await
    .unwrap();
    assert!(compacted.summary.contains("PELICAN"), "{compacted:?}");
    let requests = fake.wait_for_requests(3, WAIT).await.unwrap();
    let summarise = &requests[2];
    assert!(
        summarise.tool_names().is_empty(),
        "tools offered to the summariser"
    );
    let last = summarise.input().last().unwrap();
    assert!(
        last["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("hand-off note"),
        "{last}"
    );

    session::send(&mut client, &sid, "t3", "what was the code word?")
        .await
        .unwrap();
    session::until(&mut events, turn_done).await.unwrap();
    let after = &fake.wait_for_requests(4, WAIT).await.unwrap()[3];
    let texts: Vec<(String, String)> = after
        .conversation()
        .iter()
        .map(|i| {
            (
                i["role"].as_str().unwrap_or_default().to_string(),
                i["content"][0]["text"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(texts.len(), 4, "{texts:#?}");
    assert!(texts.iter().all(|(role, _)| role == "user"), "{texts:#?}");
    assert_eq!(texts[0].1, "remember the code word PELICAN");
    assert_eq!(texts[1].1, "and be brief");
    assert!(texts[2].1.contains("hand-off note follows"), "{texts:#?}");
    assert!(texts[2].1.contains("code word is PELICAN"), "{texts:#?}");
    assert_eq!(texts[3].1, "what was the code word?");
    let session = session::get(&mut client, &sid).await.unwrap();
    assert!(
        session.history_rollovers >= 1,
        "no rollover after compaction"
    );
}

/// Automatic compaction, as Codex triggers it: when a turn's last model call
/// used the model's limit — 90 % of its context window, or the configured
/// `model_auto_compact_token_limit` when lower — the session compacts after
/// that turn; below it, never. `token_count` reports the window.
#[tokio::test(flavor = "multi_thread")]
async fn a_session_compacts_itself_when_the_context_reaches_the_limit() {
    let heavy = |text: &str, input_tokens: u64| {
        Scripted::Events(vec![
            sse::created(),
            sse::text_delta("msg_heavy", text),
            sse::message("msg_heavy", text),
            sse::completed("resp_heavy", input_tokens, 5),
        ])
    };
    let fake = FakeModel::start(vec![
        // 10 + 5 tokens: below the limit.
        Scripted::assistant("noted"),
        // 30 + 5: at or over it.
        heavy("long answer", 30),
        Scripted::assistant("The code word is HERON."),
        Scripted::assistant("HERON"),
    ])
    .await
    .unwrap();
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("config.toml");
    // min(20, 90 % of 1000) = 20.
    std::fs::write(
        &config,
        "model_context_window = 1000\nmodel_auto_compact_token_limit = 20\n",
    )
    .unwrap();
    let mut opts = StackOptions::new(fake.base_url());
    opts.model_proxy_args = vec!["--config".into(), config.display().to_string()];
    let stack = Stack::launch(opts).await.unwrap();
    let mut client = stack.connect().await.unwrap();
    let workspace = tempfile::tempdir().unwrap();
    let (sid, mut events) = session::open(
        &mut client,
        pb::CreateSessionRequest {
            cwd: workspace.path().display().to_string(),
            features: Some(pb::ToolFeatures::default()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let turn_done = |e: &pb::Event| match &e.msg {
        Some(Msg::TurnComplete(_)) => Some(()),
        Some(Msg::ContextCompacted(c)) => panic!("compacted below the limit: {c:?}"),
        _ => None,
    };
    session::send(&mut client, &sid, "t1", "the code word is HERON")
        .await
        .unwrap();
    let (seen, ()) = session::until(&mut events, turn_done).await.unwrap();
    let window = seen
        .iter()
        .find_map(|e| match &e.msg {
            Some(Msg::TokenCount(t)) => Some(t.model_context_window),
            _ => None,
        })
        .unwrap();
    assert_eq!(window, 1000);

    session::send(&mut client, &sid, "t2", "say more")
        .await
        .unwrap();
    let (_, compacted) = session::until(&mut events, |e| match &e.msg {
        Some(Msg::ContextCompacted(c)) => Some(c.clone()),
        Some(Msg::Error(err)) => panic!("{err:?}"),
        _ => None,
    })
    .await
    .unwrap();
    assert!(compacted.summary.contains("HERON"), "{compacted:?}");
    let requests = fake.wait_for_requests(3, WAIT).await.unwrap();
    assert!(
        requests[2].tool_names().is_empty(),
        "the third call is the summariser's"
    );

    session::send(&mut client, &sid, "t3", "the code word?")
        .await
        .unwrap();
    session::until(&mut events, |e| {
        matches!(e.msg, Some(Msg::TurnComplete(_))).then_some(())
    })
    .await
    .unwrap();
    let after = &fake.wait_for_requests(4, WAIT).await.unwrap()[3];
    let input = serde_json::to_string(after.input()).unwrap();
    assert!(
        input.contains("The code word is HERON.") && !input.contains("long answer"),
        "the next turn starts from the summary: {input}"
    );
    // The run that compacted (and then rolled over), for the replay tests.
    let temporal = history::temporal_client(&stack.temporal_address)
        .await
        .unwrap();
    history::record_previous_run(&temporal, &sid, "auto_compacted_rolled_over")
        .await
        .unwrap();
}
