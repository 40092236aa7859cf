//! Live deltas: while the model streams, watching clients receive its text as
//! it is written — before the durable `agent_message` event, without the text
//! passing through workflow history — and every watcher gets the same deltas.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::time::Duration;

use keel_proto::v1 as pb;
use keel_proto::v1::session_service_client::SessionServiceClient;
use keel_test_support::fake_model::{FakeModel, Scripted, sse};
use keel_test_support::history;
use keel_test_support::session;
use keel_test_support::stack::{Stack, StackOptions};
use pb::event::Msg;
use pb::stream_events_response::Kind;
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(60);

/// What one watcher saw: deltas (with whether the model was still streaming
/// when each arrived) and durable events, in arrival order.
#[derive(Debug, Default)]
struct Seen {
    deltas: Vec<(String, bool)>,
    agent_message_after_deltas: bool,
    final_text: String,
}

async fn watch(
    addr: String,
    token: String,
    sid: String,
    live: bool,
    fake_streams_closed: impl Fn() -> usize + Send + 'static,
    subscribed: tokio::sync::oneshot::Sender<()>,
) -> Seen {
    let mut subscribed = Some(subscribed);
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client =
        SessionServiceClient::with_interceptor(channel, keel_auth::Bearer::new(&token).unwrap());
    let mut stream = client
        .stream_events(pb::StreamEventsRequest {
            session_id: sid,
            after_offset: 0,
            follow: true,
            live_deltas: live,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = Seen::default();
    tokio::time::timeout(WAIT, async {
        while let Some(m) = stream.message().await.unwrap() {
            // The first event (session_configured) means the watcher is on
            // the session's feed: deltas from now on reach it.
            if let Some(tx) = subscribed.take() {
                let _ = tx.send(());
            }
            match m.kind.unwrap() {
                Kind::Delta(d) => {
                    assert_eq!(d.kind, pb::LiveDeltaKind::AgentMessage as i32);
                    seen.deltas.push((d.delta, fake_streams_closed() == 0));
                }
                Kind::Event(e) => match e.msg {
                    Some(Msg::AgentMessage(a)) => {
                        seen.agent_message_after_deltas = !seen.deltas.is_empty();
                        seen.final_text = a.message;
                    }
                    Some(Msg::TurnComplete(_)) => return,
                    _ => {}
                },
                Kind::Gap(g) => panic!("unexpected gap {g:?}"),
            }
        }
    })
    .await
    .expect("turn completes");
    seen
}

#[tokio::test(flavor = "multi_thread")]
async fn watchers_see_text_while_the_model_writes() {
    let words: Vec<String> = (0..8).map(|i| format!("word{i} ")).collect();
    let text = words.concat();
    let mut events = vec![sse::created()];
    events.extend(words.iter().map(|w| sse::text_delta("msg_live", w)));
    events.push(sse::message("msg_live", &text));
    events.push(sse::completed("resp_live", 10, 8));
    let fake = std::sync::Arc::new(
        FakeModel::start(vec![Scripted::paced(events, Duration::from_millis(150))])
            .await
            .unwrap(),
    );
    let opts = StackOptions::new(fake.base_url());
    let stack = Stack::launch(opts).await.unwrap();
    let mut client = stack.connect().await.unwrap();
    let sid = session::create(&mut client, None).await.unwrap();
    let mut ready = Vec::new();
    let watchers: Vec<_> = [true, true, false]
        .into_iter()
        .map(|live| {
            let fake = fake.clone();
            let (tx, rx) = tokio::sync::oneshot::channel();
            ready.push(rx);
            tokio::spawn(watch(
                stack.session_api.clone(),
                stack.token.clone(),
                sid.clone(),
                live,
                move || fake.closed_streams(),
                tx,
            ))
        })
        .collect();
    for rx in ready {
        rx.await.unwrap();
    }
    client
        .send_user_turn(pb::SendUserTurnRequest {
            session_id: sid.clone(),
            text: "talk".into(),
            turn_id: "turn-1".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut seen = Vec::new();
    for w in watchers {
        seen.push(w.await.unwrap());
    }
    for s in &seen[..2] {
        let streamed: String = s.deltas.iter().map(|(d, _)| d.as_str()).collect();
        assert_eq!(streamed, text, "deltas add up to the message");
        assert!(
            s.deltas[0].1,
            "the first delta arrived while the model was still writing"
        );
        assert!(s.agent_message_after_deltas);
        assert_eq!(s.final_text, text);
    }
    assert!(seen[2].deltas.is_empty(), "deltas are opt-in");
    assert_eq!(seen[2].final_text, text);

    // Deltas never enter workflow history: only they carry the item id.
    let temporal = history::temporal_client(&stack.temporal_address)
        .await
        .unwrap();
    let json = history::history_json(&temporal, &sid).await.unwrap();
    let text = history::decoded_text(&json).unwrap();
    assert!(text.contains("word7"), "the final message summary is there");
    assert!(!text.contains("msg_live"), "no delta in history");
}

/// Two session-api replicas. A client on the second one follows a session
/// that is driven through the first: nothing polls, so every event reaches it
/// only because the worker notifies every replica. The model's text arrives
/// live, and never before the output of the command it follows.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_on_another_replica_sees_every_event_pushed() {
    let words: Vec<String> = (0..10).map(|i| format!("w{i} ")).collect();
    let mut answer = vec![sse::created()];
    answer.extend(words.iter().map(|w| sse::text_delta("m1", w)));
    answer.push(sse::message("m1", &words.concat()));
    answer.push(sse::completed("r2", 10, 5));
    let fake = FakeModel::start(vec![
        Scripted::tool_call("call_1", "shell", r#"{"command":["echo","out"]}"#),
        Scripted::paced(answer, Duration::from_millis(20)),
    ])
    .await
    .unwrap();
    let mut opts = StackOptions::new(fake.base_url());
    opts.session_api_replicas = 2;
    let stack = Stack::launch(opts).await.unwrap();
    assert_eq!(stack.session_apis.len(), 2);
    let mut first = stack.connect_to(&stack.session_apis[0]).await.unwrap();
    let mut second = stack.connect_to(&stack.session_apis[1]).await.unwrap();
    let sid = session::create(&mut first, None).await.unwrap();
    // Follow on the second replica before the turn exists, and wait until
    // the stream is under way (its first event, `session_configured`, is
    // read): a stream still catching up when the whole turn is over would
    // rightly get the turn's events and no deltas.
    let mut stream = session::follow(&mut second, &sid, 0, true).await.unwrap();
    let first_event = session::next_event(&mut stream).await.unwrap();
    assert_eq!(first_event.offset, 1);
    session::send(&mut first, &sid, "turn-1", "go")
        .await
        .unwrap();

    let mut offsets = vec![first_event.offset];
    let mut command_done = false;
    let mut deltas = String::new();
    tokio::time::timeout(WAIT, async {
        while let Some(m) = stream.message().await.unwrap() {
            match m.kind {
                Some(Kind::Event(e)) => {
                    offsets.push(e.offset);
                    match e.msg {
                        Some(Msg::ExecCommandEnd(end)) => {
                            assert_eq!(end.aggregated_output.trim(), "out");
                            command_done = true;
                        }
                        Some(Msg::TurnComplete(_)) => return,
                        _ => {}
                    }
                }
                Some(Kind::Delta(d)) => {
                    assert!(command_done, "a delta before the command's output: {d:?}");
                    deltas.push_str(&d.delta);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        panic!("stream ended before the turn completed");
    })
    .await
    .expect("the second replica saw the turn complete");
    let expected: Vec<u64> = (1..=offsets.len() as u64).collect();
    assert_eq!(offsets, expected, "every event once, in order");
    assert_eq!(deltas, words.concat(), "the model's text arrived live");
}
