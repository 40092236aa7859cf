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

#[tokio::test(flavor = "multi_thread")]
async fn a_client_behind_the_retained_window_gets_a_gap() {
    let turns = 4;
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
    // count, complete) after session_configured: 21 in all, 16 retained.
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
    let mut stream = client
        .stream_events(pb::StreamEventsRequest {
            session_id: sid.clone(),
            after_offset: 2,
            follow: false,
            live_deltas: false,
        })
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(m) = stream.message().await.unwrap() {
        got.push(m.kind.unwrap());
    }
    let first_retained = newest - 16 + 1;
    assert_eq!(
        got[0],
        pb::stream_events_response::Kind::Gap(pb::EventGap {
            after_offset: 2,
            first_retained_offset: first_retained
        })
    );
    let offsets: Vec<u64> = got[1..]
        .iter()
        .map(|k| match k {
            pb::stream_events_response::Kind::Event(e) => e.offset,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(offsets, (first_retained..=newest).collect::<Vec<_>>());
}
