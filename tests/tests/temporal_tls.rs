//! Keel talks to a Temporal frontend that requires TLS and a client
//! certificate (as Temporal Cloud and hardened self-hosted clusters do). The
//! dev server speaks plaintext, so a TLS-terminating proxy in front of it
//! plays the frontend: it presents a certificate of the test's CA and
//! accepts only clients with the worker's certificate.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use keel_proto::v1 as pb;
use keel_test_support::fake_model::{FakeModel, Scripted};
use keel_test_support::session;
use keel_test_support::stack::{Stack, StackOptions, bin};
use pb::event::Msg;

/// A mutual-TLS proxy to `upstream`; returns its address and a count of
/// refused handshakes.
async fn tls_front(pki: &keel_stack::LocalPki, upstream: String) -> (String, Arc<AtomicUsize>) {
    let tls = keel_server::PeerTlsArgs::with_files(&pki.server_cert, &pki.server_key, &pki.ca)
        .server("the test's Temporal front")
        .unwrap()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let refused = Arc::new(AtomicUsize::new(0));
    let counter = refused.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (tls, upstream, refused) = (tls.clone(), upstream.clone(), counter.clone());
            tokio::spawn(async move {
                let Ok(mut client) = tls.accept(tcp).await else {
                    refused.fetch_add(1, Ordering::SeqCst);
                    return;
                };
                let mut server = tokio::net::TcpStream::connect(&upstream).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    (addr, refused)
}

/// A second session-api on `stack`'s blob store and tokens, reaching
/// Temporal at `temporal` with `temporal_flags`.
fn session_api(
    stack: &Stack,
    dir: &Path,
    temporal: &str,
    temporal_flags: &[String],
) -> std::process::Child {
    let pki = stack.pki.as_ref().unwrap();
    std::process::Command::new(bin("keel-session-api").unwrap())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--internal-listen",
            "127.0.0.1:0",
        ])
        .arg("--addr-file")
        .arg(dir.join("addr"))
        .args(["--temporal-address", temporal])
        .arg("--blob-url")
        .arg(format!("file://{}", stack.dir().join("blobs").display()))
        .arg("--tokens-file")
        .arg(&stack.tokens_file)
        .args(pki.server_args())
        .args(temporal_flags)
        .env_remove("TEMPORAL_API_KEY")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join("log")).unwrap())
        .stderr(std::fs::File::create(dir.join("log.err")).unwrap())
        .spawn()
        .unwrap()
}

/// Starts a session-api with `temporal_flags` through `front`, waits until
/// the front refuses it, checks that it never served, and stops it.
async fn refused_and_never_serves(
    stack: &Stack,
    front: &str,
    temporal_flags: &[String],
    refused: &AtomicUsize,
) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = session_api(stack, dir.path(), front, temporal_flags);
    let deadline = Instant::now() + Duration::from_secs(30);
    while refused.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the front never refused it");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!dir.path().join("addr").exists(), "served without Temporal");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Waits until the extra session-api started in `dir` serves, then runs
/// one turn through it; returns its client and the session. The stack's
/// worker does not notify this session-api of new events, so the turn is
/// watched through the session's state rather than followed.
async fn one_turn_through(stack: &Stack, dir: &Path) -> (session::Client, String) {
    let addr_file = dir.join("addr");
    let deadline = Instant::now() + Duration::from_secs(60);
    let addr = loop {
        if let Ok(addr) = std::fs::read_to_string(&addr_file) {
            break addr;
        }
        assert!(
            Instant::now() < deadline,
            "the session-api did not start: {}",
            std::fs::read_to_string(dir.join("log.err")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut client = stack.connect_to(&addr).await.unwrap();
    let sid = session::create(&mut client, None).await.unwrap();
    session::send(&mut client, &sid, "t1", "hello")
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while session::get(&mut client, &sid)
        .await
        .unwrap()
        .turns_completed
        == 0
    {
        assert!(Instant::now() < deadline, "the turn did not complete");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (client, sid)
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_run_through_a_temporal_that_requires_mutual_tls() {
    let fake = FakeModel::start(vec![Scripted::assistant("over TLS")])
        .await
        .unwrap();
    let stack = Stack::launch(StackOptions::new(fake.base_url()))
        .await
        .unwrap();
    let pki = stack.pki.clone().unwrap();
    let (front, refused) = tls_front(&pki, stack.temporal_address.clone()).await;
    let path = |p: &Path| p.display().to_string();

    // Without a client certificate: refused at the handshake, so this
    // session-api never gets to serve.
    refused_and_never_serves(
        &stack,
        &front,
        &["--temporal-tls-ca".into(), path(&pki.ca)],
        &refused,
    )
    .await;

    // With the worker's certificate: it connects, and a session made
    // through it runs (on the stack's worker).
    let dir = tempfile::tempdir().unwrap();
    let mut with_cert = session_api(
        &stack,
        dir.path(),
        &front,
        &[
            "--temporal-tls-ca".into(),
            path(&pki.ca),
            "--temporal-tls-cert".into(),
            path(&pki.worker_cert),
            "--temporal-tls-key".into(),
            path(&pki.worker_key),
        ],
    );
    let (mut client, sid) = one_turn_through(&stack, dir.path()).await;
    let mut log = client
        .stream_events(pb::StreamEventsRequest {
            session_id: sid.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut said = Vec::new();
    while let Some(item) = log.message().await.unwrap() {
        if let Some(pb::stream_events_response::Kind::Event(pb::Event {
            msg: Some(Msg::AgentMessage(m)),
            ..
        })) = item.kind
        {
            said.push(m.message);
        }
    }
    assert_eq!(said, ["over TLS"]);
    with_cert.kill().unwrap();
    with_cert.wait().unwrap();
}

/// A TLS front to `upstream` that lets a gRPC call through only with
/// `authorization: Bearer <key>`, as Temporal Cloud checks API keys. It
/// speaks HTTP/2 on both sides, so it sees each call's headers. Returns its
/// address and a count of refused calls.
async fn api_key_front(
    pki: &keel_stack::LocalPki,
    upstream: String,
    key: &'static str,
) -> (String, Arc<AtomicUsize>) {
    use http_body_util::{Either, Empty};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&pki.server_cert)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let private = PrivateKeyDer::from_pem_file(&pki.server_key).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, private)
    .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let refused = Arc::new(AtomicUsize::new(0));
    let counter = refused.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (acceptor, upstream, refused) =
                (acceptor.clone(), upstream.clone(), counter.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let server = tokio::net::TcpStream::connect(&upstream).await.unwrap();
                let (sender, connection) = hyper::client::conn::http2::handshake(
                    TokioExecutor::new(),
                    TokioIo::new(server),
                )
                .await
                .unwrap();
                tokio::spawn(connection);
                let service = hyper::service::service_fn(
                    move |request: hyper::Request<hyper::body::Incoming>| {
                        let (mut sender, refused) = (sender.clone(), refused.clone());
                        async move {
                            let presented = request
                                .headers()
                                .get("authorization")
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_string);
                            if presented.as_deref() != Some(&format!("Bearer {key}")) {
                                refused.fetch_add(1, Ordering::SeqCst);
                                let denied = hyper::Response::builder()
                                    .header("content-type", "application/grpc")
                                    .header("grpc-status", "16")
                                    .header("grpc-message", "missing or wrong API key")
                                    .body(Either::Right(Empty::<bytes::Bytes>::new()))
                                    .unwrap();
                                return Ok::<_, hyper::Error>(denied);
                            }
                            Ok(sender.send_request(request).await?.map(Either::Left))
                        }
                    },
                );
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, refused)
}

/// Keel reaches a Temporal that checks API keys (Temporal Cloud's way):
/// with the key in a file it serves and runs sessions; with a wrong key it
/// never starts serving.
#[tokio::test(flavor = "multi_thread")]
async fn sessions_run_through_a_temporal_that_requires_an_api_key() {
    const KEY: &str = "temporal-api-key-for-the-test";
    let fake = FakeModel::start(vec![Scripted::assistant("with a key")])
        .await
        .unwrap();
    let stack = Stack::launch(StackOptions::new(fake.base_url()))
        .await
        .unwrap();
    let pki = stack.pki.clone().unwrap();
    let (front, refused) = api_key_front(&pki, stack.temporal_address.clone(), KEY).await;
    let path = |p: &Path| p.display().to_string();
    let keys = tempfile::tempdir().unwrap();

    // A wrong key: refused, and this session-api never serves.
    std::fs::write(keys.path().join("wrong"), "not-the-key\n").unwrap();
    refused_and_never_serves(
        &stack,
        &front,
        &[
            "--temporal-tls-ca".into(),
            path(&pki.ca),
            "--temporal-api-key-file".into(),
            path(&keys.path().join("wrong")),
        ],
        &refused,
    )
    .await;
    let refused_before = refused.load(Ordering::SeqCst);

    // The right key (with a trailing newline, as files have): it serves, and
    // a session made through it runs.
    std::fs::write(keys.path().join("right"), format!("{KEY}\n")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut right = session_api(
        &stack,
        dir.path(),
        &front,
        &[
            "--temporal-tls-ca".into(),
            path(&pki.ca),
            "--temporal-api-key-file".into(),
            path(&keys.path().join("right")),
        ],
    );
    one_turn_through(&stack, dir.path()).await;
    assert_eq!(
        refused.load(Ordering::SeqCst),
        refused_before,
        "a call with the key was refused"
    );
    right.kill().unwrap();
    right.wait().unwrap();
}
