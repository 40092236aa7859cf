//! Every Keel server answers grpc.health.v1 with SERVING and lists its
//! services through reflection v1 and v1alpha (grpcurl uses v1alpha); a client
//! behind the retained event window gets an explicit gap, never silent loss.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::time::Duration;

use futures::StreamExt;
use keel_proto::v1 as pb;
use keel_test_support::fake_model::{FakeModel, Scripted};
use keel_test_support::session;
use keel_test_support::stack::{Stack, StackOptions};
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

async fn channel(addr: &str) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

async fn serving(ch: &Channel, addr: &str, service: &str) -> ServingStatus {
    let mut health = HealthClient::new(ch.clone());
    let status = health
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("health check of {service:?} at {addr} failed: {e}"))
        .into_inner()
        .status;
    ServingStatus::try_from(status).unwrap()
}

async fn services_v1(ch: &Channel) -> Vec<String> {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut client = ServerReflectionClient::new(ch.clone());
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut resp = client
        .server_reflection_info(futures::stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    let msg = resp.next().await.unwrap().unwrap();
    match msg.message_response {
        Some(MessageResponse::ListServicesResponse(l)) => {
            l.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

async fn services_v1alpha(ch: &Channel) -> Vec<String> {
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
    let mut client = ServerReflectionClient::new(ch.clone());
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut resp = client
        .server_reflection_info(futures::stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    let msg = resp.next().await.unwrap().unwrap();
    match msg.message_response {
        Some(MessageResponse::ListServicesResponse(l)) => {
            l.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_server_serves_health_and_reflection() {
    let fake = FakeModel::start(vec![]).await.unwrap();
    let opts = StackOptions::new(fake.base_url());
    let stack = Stack::launch(opts).await.unwrap();
    // The third field: served over mutual TLS, for the worker only.
    let servers: [(&String, &[&str], bool); 6] = [
        // Clients' port, and the internal one workers publish to.
        (&stack.session_api, &["keel.v1.SessionService"], false),
        (
            &stack.session_apis_internal[0],
            &["keel.v1.LiveService"],
            true,
        ),
        (&stack.model_proxy, &["keel.v1.ModelService"], true),
        (&stack.tool_runner, &["keel.v1.ToolService"], true),
        (&stack.mcp_broker, &["keel.v1.McpBrokerService"], true),
        (&stack.worker, &[], false),
    ];
    for (addr, services, mutual_tls) in servers {
        let ch = if mutual_tls {
            // Without the worker's certificate: no answer at all.
            let plain = Channel::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect_lazy();
            let refused = HealthClient::new(plain)
                .check(HealthCheckRequest::default())
                .await;
            assert!(refused.is_err(), "{addr} answered a plaintext client");
            stack.worker_channel(addr).unwrap()
        } else {
            channel(addr).await
        };
        assert_eq!(
            serving(&ch, addr, "").await,
            ServingStatus::Serving,
            "{addr}"
        );
        let v1 = services_v1(&ch).await;
        let v1alpha = services_v1alpha(&ch).await;
        assert!(v1.contains(&"grpc.health.v1.Health".to_string()), "{v1:?}");
        assert!(
            v1.contains(&"grpc.reflection.v1.ServerReflection".to_string()),
            "{v1:?}"
        );
        assert!(
            v1alpha.contains(&"grpc.reflection.v1alpha.ServerReflection".to_string()),
            "{v1alpha:?}"
        );
        let keel = |v: &[String]| {
            let mut k: Vec<String> = v
                .iter()
                .filter(|s| s.starts_with("keel."))
                .cloned()
                .collect();
            k.sort();
            k
        };
        assert_eq!(keel(&v1), keel(&v1alpha));
        assert_eq!(keel(&v1), services.to_vec(), "{addr} lists {v1:?}");
        for service in services {
            assert_eq!(
                serving(&ch, addr, service).await,
                ServingStatus::Serving,
                "{service}"
            );
        }
    }
    // The broker answers over the worker's channel: a malformed request is
    // INVALID_ARGUMENT with an ErrorInfo; the stack's broker has no servers.
    let mut broker = pb::mcp_broker_service_client::McpBrokerServiceClient::new(
        stack.worker_channel(&stack.mcp_broker).unwrap(),
    );
    let err = broker
        .list_mcp_tools(pb::ListMcpToolsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        pb::ErrorInfo::from_status(&err).map(|i| i.class),
        Some("invalid_request".to_string())
    );
    let servers = broker
        .list_mcp_servers(pb::ListMcpServersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(servers.servers.is_empty(), "{servers:?}");
}

/// The chunks of `sid`'s event archive in the stack's blob store.
fn archive_chunks(stack: &Stack, sid: &str) -> Vec<serde_json::Value> {
    let mut chunks = Vec::new();
    let key = stack.session_key(sid);
    let root = stack.session_blobs_dir(sid).join("sha256");
    for dir in std::fs::read_dir(root).unwrap() {
        for file in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let bytes = std::fs::read(file.unwrap().path()).unwrap();
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes)
                && v["session"] == key.as_str()
                && v["events"].is_array()
            {
                chunks.push(v);
            }
        }
    }
    chunks
}

/// Every durable event of `sid` after `after`, as offsets, and the gaps.
async fn replay_offsets(
    client: &mut keel_test_support::session::Client,
    sid: &str,
    after: u64,
) -> (Vec<u64>, Vec<pb::EventGap>) {
    let mut stream = client
        .stream_events(pb::StreamEventsRequest {
            session_id: sid.into(),
            after_offset: after,
            follow: false,
            live_deltas: false,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let (mut offsets, mut gaps) = (Vec::new(), Vec::new());
    while let Some(m) = stream.message().await.unwrap() {
        match m.kind.unwrap() {
            pb::stream_events_response::Kind::Event(e) => offsets.push(e.offset),
            pb::stream_events_response::Kind::Gap(g) => gaps.push(g),
            other => panic!("unexpected {other:?}"),
        }
    }
    (offsets, gaps)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_behind_the_retained_window_replays_from_the_archive() {
    let turns = 10;
    let fake = FakeModel::start(
        (0..turns)
            .map(|i| Scripted::assistant(&format!("answer {i}")))
            .collect(),
    )
    .await
    .unwrap();
    let mut opts = StackOptions::new(fake.base_url());
    opts.retained_events = 16;
    let stack = Stack::launch(opts).await.unwrap();
    let mut client = stack.connect().await.unwrap();
    let sid = session::create(&mut client, None).await.unwrap();
    for i in 0..turns {
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
    // Each turn logs 5 events (started, user message, agent message, token
    // count, complete) after session_configured: 51 in all, 16 retained in
    // the workflow's window.
    let newest = 1 + 5 * turns as u64;
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let s = session::get(&mut client, &sid).await.unwrap();
            if s.turns_completed == turns as u64 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("all turns complete");

    // The window dropped most events; the archive holds them, in chunks
    // linked newest to oldest.
    let key = stack.session_key(&sid);
    let chunks = archive_chunks(&stack, &sid);
    assert!(chunks.len() >= 2, "{chunks:#?}");
    assert_eq!(chunks.iter().filter(|c| c["prev"].is_null()).count(), 1);
    // Every event from the start, once, in order, without a gap; and from
    // any offset inside the archive.
    for after in [0, 2, 20, newest - 1] {
        let (offsets, gaps) = replay_offsets(&mut client, &sid, after).await;
        assert!(gaps.is_empty(), "after {after}: {gaps:?}");
        assert_eq!(
            offsets,
            ((after + 1)..=newest).collect::<Vec<_>>(),
            "after {after}"
        );
    }
    // The replayed events are the ones first delivered: the first user
    // message is there.
    let mut stream = session::follow(&mut client, &sid, 0, false).await.unwrap();
    let (_, first_question) = session::until(&mut stream, |e| match &e.msg {
        Some(pb::event::Msg::UserMessage(m)) => Some(m.message.clone()),
        _ => None,
    })
    .await
    .unwrap();
    assert_eq!(first_question, "question 0");

    // Those came from the archive, not the window: with the chunks gone,
    // replaying from the start is an error that says so, never a silent
    // hole, while the window still serves its own events.
    let root = stack.session_blobs_dir(&sid).join("sha256");
    for dir in std::fs::read_dir(root).unwrap() {
        for file in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let path = file.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            if serde_json::from_slice::<serde_json::Value>(&bytes)
                .is_ok_and(|v| v["session"] == key.as_str() && v["events"].is_array())
            {
                std::fs::remove_file(path).unwrap();
            }
        }
    }
    let mut stream = client
        .stream_events(pb::StreamEventsRequest {
            session_id: sid.clone(),
            after_offset: 0,
            follow: false,
            live_deltas: false,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let e = loop {
        match stream.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the replay ended without reporting the missing archive"),
            Err(e) => break e,
        }
    };
    assert!(e.message().contains("missing from the blob store"), "{e:?}");
    let (offsets, gaps) = replay_offsets(&mut client, &sid, newest - 4).await;
    assert!(gaps.is_empty());
    assert_eq!(offsets, ((newest - 3)..=newest).collect::<Vec<_>>());

    client
        .close_session(pb::CloseSessionRequest {
            session_id: sid.clone(),
        })
        .await
        .unwrap();
    keel_test_support::history::record_closed(
        &stack.temporal_address,
        &sid,
        "event_archive_closed",
    )
    .await
    .unwrap();
}
