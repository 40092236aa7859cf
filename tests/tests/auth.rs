//! Who may call session-api: every SessionService call needs a valid
//! credential, and a caller reaches only its own tenant's sessions.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use keel_proto::v1 as pb;
use keel_proto::v1::live_service_client::LiveServiceClient;
use keel_test_support::fake_model::{FakeModel, Scripted};
use keel_test_support::session::{self, Client};
use keel_test_support::stack::{OTHER_PRINCIPAL, PRINCIPAL, Stack, StackOptions};
use pb::event::Msg;
use serde_json::json;
use tonic::{Code, Status};

async fn stack(script: Vec<Scripted>, opts: impl FnOnce(&mut StackOptions)) -> (FakeModel, Stack) {
    let fake = FakeModel::start(script).await.unwrap();
    let mut options = StackOptions::new(fake.base_url());
    opts(&mut options);
    let stack = Stack::launch(options).await.unwrap();
    (fake, stack)
}

/// Calls every SessionService RPC that names a session, on `sid`.
async fn every_session_rpc(client: &mut Client, sid: &str) -> Vec<(&'static str, Status)> {
    let s = || sid.to_string();
    let mut out = Vec::new();
    let mut record = |name: &'static str, result: Result<(), Status>| match result {
        Ok(()) => panic!("{name} on {sid:?} succeeded"),
        Err(status) => out.push((name, status)),
    };
    record(
        "GetSession",
        client
            .get_session(pb::GetSessionRequest { session_id: s() })
            .await
            .map(drop),
    );
    record(
        "SendUserTurn",
        client
            .send_user_turn(pb::SendUserTurnRequest {
                session_id: s(),
                text: "injected".into(),
                ..Default::default()
            })
            .await
            .map(drop),
    );
    record(
        "SteerTurn",
        client
            .steer_turn(pb::SteerTurnRequest {
                session_id: s(),
                text: "injected".into(),
                expected_turn_id: "t1".into(),
                queue_if_not_running: true,
            })
            .await
            .map(drop),
    );
    record(
        "StreamEvents",
        client
            .stream_events(pb::StreamEventsRequest {
                session_id: s(),
                follow: true,
                ..Default::default()
            })
            .await
            .map(drop),
    );
    record(
        "Interrupt",
        client
            .interrupt(pb::InterruptRequest {
                session_id: s(),
                ..Default::default()
            })
            .await
            .map(drop),
    );
    record(
        "OverrideTurnContext",
        client
            .override_turn_context(pb::OverrideTurnContextRequest {
                session_id: s(),
                context: Some(pb::TurnContext {
                    approval_policy: pb::ApprovalPolicy::Never as i32,
                    ..Default::default()
                }),
            })
            .await
            .map(drop),
    );
    record(
        "Respond",
        client
            .respond(pb::RespondRequest {
                session_id: s(),
                request_id: "c1".into(),
                answer: Some(pb::respond_request::Answer::Decision(pb::ReviewDecision {
                    kind: pb::ReviewDecisionKind::Approved as i32,
                    ..Default::default()
                })),
                ..Default::default()
            })
            .await
            .map(drop),
    );
    record(
        "Compact",
        client
            .compact(pb::CompactRequest { session_id: s() })
            .await
            .map(drop),
    );
    record(
        "CloseSession",
        client
            .close_session(pb::CloseSessionRequest { session_id: s() })
            .await
            .map(drop),
    );
    out
}

fn shell(call_id: &str, argv: &[&str]) -> Scripted {
    Scripted::tool_call(call_id, "shell", &json!({ "command": argv }).to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_call_without_valid_credentials_is_unauthenticated() {
    let (_fake, stack) = stack(vec![], |_| {}).await;
    let mut owner = stack.connect().await.unwrap();
    let sid = session::create(&mut owner, None).await.unwrap();

    let revoked = keel_auth::generate_token().unwrap();
    let forged_jwt = "eyJhbGciOiJFZERTQSJ9.eyJ0ZW5hbnQiOiJ0ZXN0In0.c2ln";
    for token in [None, Some(revoked.as_str()), Some(forged_jwt)] {
        let mut client = session::connect(&stack.session_api, token).await.unwrap();
        let mut refused = every_session_rpc(&mut client, &sid).await;
        refused.push((
            "CreateSession",
            client
                .create_session(pb::CreateSessionRequest::default())
                .await
                .unwrap_err(),
        ));
        refused.push((
            "ListSessions",
            client
                .list_sessions(pb::ListSessionsRequest::default())
                .await
                .unwrap_err(),
        ));
        assert_eq!(refused.len(), 11, "every SessionService RPC");
        for (rpc, status) in refused {
            assert_eq!(
                status.code(),
                Code::Unauthenticated,
                "{rpc} with {token:?}: {status:?}"
            );
        }
    }
    let none = session::connect(&stack.session_api, None)
        .await
        .unwrap()
        .get_session(pb::GetSessionRequest {
            session_id: sid.clone(),
        })
        .await
        .unwrap_err();
    assert!(none.message().contains("no credentials"), "{none:?}");

    // Health stays open (load balancers and probes carry no token), and
    // the session is untouched: nothing above reached it.
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", stack.session_api))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let health = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: "keel.v1.SessionService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        health.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    let state = session::get(&mut owner, &sid).await.unwrap();
    assert_eq!(state.status, pb::SessionStatus::Idle as i32);
    assert_eq!(state.turns_completed, 0);
    assert_eq!(state.queued_turns, 0);
    assert!(stack.all_logs().contains("call refused: not authenticated"));
}

#[tokio::test(flavor = "multi_thread")]
async fn another_tenants_sessions_are_not_found_and_ids_are_per_tenant() {
    let (_fake, stack) = stack(vec![Scripted::assistant("done")], |_| {}).await;
    let mut owner = stack.connect().await.unwrap();
    let mut intruder = session::connect(&stack.session_api, Some(&stack.other_token))
        .await
        .unwrap();
    let created = owner
        .create_session(pb::CreateSessionRequest {
            session_id: "build-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(created.session_id, "build-1");
    assert_eq!(created.owner, PRINCIPAL);
    assert_eq!(created.workflow_id, stack.workflow_id("build-1"));

    // Every call on the other tenant's session answers exactly as for an id
    // that was never used.
    let on_theirs = every_session_rpc(&mut intruder, "build-1").await;
    let on_nothing = every_session_rpc(&mut intruder, "never-used").await;
    for ((rpc, theirs), (_, nothing)) in on_theirs.iter().zip(&on_nothing) {
        assert_eq!(theirs.code(), Code::NotFound, "{rpc}: {theirs:?}");
        assert_eq!(
            theirs.message().replace("build-1", "ID"),
            nothing.message().replace("never-used", "ID"),
            "{rpc}"
        );
        // The machine-readable details tell no more than the message.
        let info = pb::ErrorInfo::from_status(theirs).unwrap();
        assert_eq!(info.class, "session_not_found", "{rpc}");
        assert_eq!(Some(info), pb::ErrorInfo::from_status(nothing), "{rpc}");
    }
    let listed = intruder
        .list_sessions(pb::ListSessionsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .sessions;
    assert!(listed.is_empty(), "{listed:?}");

    // The same id in the other tenant is another session.
    let theirs = intruder
        .create_session(pb::CreateSessionRequest {
            session_id: "build-1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(theirs.owner, OTHER_PRINCIPAL);
    assert_ne!(theirs.workflow_id, created.workflow_id);
    let mine: Vec<String> = owner
        .list_sessions(pb::ListSessionsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .sessions
        .into_iter()
        .map(|s| s.session_id)
        .collect();
    assert_eq!(mine, ["build-1"]);

    // The owner's session saw none of the intruder's calls: its first turn
    // is the owner's, it is open, and its settings are the defaults.
    let mut events = session::follow(&mut owner, "build-1", 0, false)
        .await
        .unwrap();
    session::send(&mut owner, "build-1", "t1", "hello")
        .await
        .unwrap();
    let (seen, _) = session::until(&mut events, |e| {
        matches!(e.msg, Some(Msg::TurnComplete(_))).then_some(())
    })
    .await
    .unwrap();
    let users: Vec<&str> = seen
        .iter()
        .filter_map(|e| match &e.msg {
            Some(Msg::UserMessage(m)) => Some(m.message.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(users, ["hello"]);
    let configured = seen
        .iter()
        .find_map(|e| match &e.msg {
            Some(Msg::SessionConfigured(c)) => Some(c.session_id.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        configured, "build-1",
        "events name the client's id, not the tenant key"
    );
    let state = session::get(&mut owner, "build-1").await.unwrap();
    assert_eq!(state.turns_completed, 1);
    assert_ne!(
        state.context.unwrap().approval_policy,
        pb::ApprovalPolicy::Never as i32
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn request_resolved_names_who_answered() {
    let script = vec![
        shell("c1", &["rm", "-rf", "victim"]),
        Scripted::assistant("removed"),
    ];
    let (_fake, stack) = stack(script, |_| {}).await;
    let mut client = stack.connect().await.unwrap();
    let ws = tempfile::tempdir().unwrap();
    let cwd = ws.path().canonicalize().unwrap();
    std::fs::create_dir(cwd.join("victim")).unwrap();
    let (sid, mut events) = session::open(
        &mut client,
        pb::CreateSessionRequest {
            cwd: cwd.display().to_string(),
            context: Some(pb::TurnContext {
                approval_policy: pb::ApprovalPolicy::OnRequest as i32,
                ..Default::default()
            }),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    session::send(&mut client, &sid, "t1", "remove victim")
        .await
        .unwrap();
    session::until(&mut events, |e| {
        matches!(e.msg, Some(Msg::ExecApprovalRequest(_))).then_some(())
    })
    .await
    .unwrap();
    client
        .respond(pb::RespondRequest {
            session_id: sid.clone(),
            request_id: "c1".into(),
            answer: Some(pb::respond_request::Answer::Decision(pb::ReviewDecision {
                kind: pb::ReviewDecisionKind::Approved as i32,
                ..Default::default()
            })),
            ..Default::default()
        })
        .await
        .unwrap();
    let (_, resolved) = session::until(&mut events, |e| match &e.msg {
        Some(Msg::RequestResolved(r)) => Some(r.clone()),
        _ => None,
    })
    .await
    .unwrap();
    assert_eq!(resolved.call_id, "c1");
    assert_eq!(resolved.answered_by, PRINCIPAL);
    session::until(&mut events, |e| {
        matches!(e.msg, Some(Msg::TurnComplete(_))).then_some(())
    })
    .await
    .unwrap();
    assert!(!cwd.join("victim").exists(), "the approved command ran");
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_added_to_the_file_work_and_removed_ones_stop_working() {
    let (_fake, stack) = stack(vec![], |_| {}).await;
    let original = std::fs::read_to_string(&stack.tokens_file).unwrap();
    let token = keel_auth::append_token(&stack.tokens_file, "newcomer", "test").unwrap();
    let mut client = session::connect(&stack.session_api, Some(&token))
        .await
        .unwrap();
    let list = |client: &mut Client| {
        let mut client = client.clone();
        async move {
            client
                .list_sessions(pb::ListSessionsRequest::default())
                .await
                .map(drop)
        }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Err(status) = list(&mut client).await {
        assert_eq!(status.code(), Code::Unauthenticated);
        assert!(
            Instant::now() < deadline,
            "the new token was never accepted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The new token's principal is the one its entry names.
    let created = client
        .create_session(pb::CreateSessionRequest::default())
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(created.owner, "newcomer");

    // Revoked: the file goes back to what it was.
    std::fs::write(&stack.tokens_file, original).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while list(&mut client).await.is_ok() {
        assert!(Instant::now() < deadline, "the removed token still works");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        list(&mut client).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    // Tokens that stayed still work.
    let mut kept = stack.connect().await.unwrap();
    assert!(list(&mut kept).await.is_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn live_service_is_served_only_on_the_internal_listener() {
    let (_fake, stack) = stack(vec![], |_| {}).await;
    let notice = pb::NotifyRequest {
        notices: vec![pb::EventsNotice {
            session_id: "x".into(),
            last_offset: 1,
            ..Default::default()
        }],
    };
    let mut public = LiveServiceClient::connect(format!("http://{}", stack.session_api))
        .await
        .unwrap();
    let err = public.notify(notice.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented, "{err:?}");
    // The internal listener answers the worker's certificate only.
    let internal = &stack.session_apis_internal[0];
    let mut plain = LiveServiceClient::new(
        tonic::transport::Channel::from_shared(format!("http://{internal}"))
            .unwrap()
            .connect_lazy(),
    );
    assert!(
        plain.notify(notice.clone()).await.is_err(),
        "a plaintext client reached LiveService"
    );
    let mut worker = LiveServiceClient::new(stack.worker_channel(internal).unwrap());
    worker.notify(notice).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn without_authentication_only_when_asked_and_said_so() {
    let (_fake, stack) = stack(vec![], |o| o.insecure_no_auth = true).await;
    let mut anyone = session::connect(&stack.session_api, None).await.unwrap();
    let created = anyone
        .create_session(pb::CreateSessionRequest {
            session_id: "open".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(created.owner, keel_auth::ANONYMOUS);
    assert_eq!(created.workflow_id, "keel-session-open");
    let log = stack.proc("keel-session-api").unwrap().log_text();
    assert!(log.contains("INSECURE: --insecure-no-auth"), "{log}");
}

// --- JWT ------------------------------------------------------------------

struct Issuer {
    pkcs8: Vec<u8>,
    url: String,
}

/// An identity provider's JWKS endpoint with one Ed25519 key, "k1".
async fn issuer() -> Issuer {
    use ring::signature::{Ed25519KeyPair, KeyPair as _};
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
        .unwrap()
        .as_ref()
        .to_vec();
    let public = Ed25519KeyPair::from_pkcs8(&pkcs8)
        .unwrap()
        .public_key()
        .as_ref()
        .to_vec();
    let jwks = json!({"keys": [{
        "kty": "OKP", "crv": "Ed25519", "kid": "k1", "alg": "EdDSA", "use": "sig",
        "x": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(public),
    }]});
    let app = axum::Router::new().route(
        "/jwks",
        axum::routing::get(move || {
            let jwks = jwks.clone();
            async move { axum::Json(jwks) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Issuer { pkcs8, url }
}

impl Issuer {
    fn token(&self, tenant: &str, sub: &str, exp_from_now: i64) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let claims = json!({
            "iss": "https://idp.test", "aud": "keel", "sub": sub, "tenant": tenant,
            "exp": now + exp_from_now,
        });
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some("k1".into());
        jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_ed_der(&self.pkcs8),
        )
        .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn jwt_callers_act_in_the_tenant_their_token_names() {
    let idp = issuer().await;
    let url = idp.url.clone();
    let (_fake, stack) = stack(vec![], move |o| {
        o.session_api_args = [
            "--jwt-issuer",
            "https://idp.test",
            "--jwt-audience",
            "keel",
            "--jwt-jwks-url",
            &url,
        ]
        .map(String::from)
        .to_vec();
    })
    .await;
    let mut alice = session::connect(&stack.session_api, Some(&idp.token("test", "alice", 300)))
        .await
        .unwrap();
    let created = alice
        .create_session(pb::CreateSessionRequest {
            session_id: "via-jwt".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(created.owner, "alice");
    // The token file's caller of the same tenant sees it; the JWT caller of
    // another tenant does not.
    let mut same_tenant = stack.connect().await.unwrap();
    assert_eq!(
        session::get(&mut same_tenant, "via-jwt")
            .await
            .unwrap()
            .owner,
        "alice"
    );
    let mut mallory = session::connect(
        &stack.session_api,
        Some(&idp.token("other", "mallory", 300)),
    )
    .await
    .unwrap();
    let err = mallory
        .get_session(pb::GetSessionRequest {
            session_id: "via-jwt".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // Expired: refused, saying why.
    let mut late = session::connect(&stack.session_api, Some(&idp.token("test", "alice", -3600)))
        .await
        .unwrap();
    let err = late
        .list_sessions(pb::ListSessionsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("Expired"), "{err:?}");
}
