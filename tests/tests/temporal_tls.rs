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
    let plain_dir = tempfile::tempdir().unwrap();
    let mut no_cert = session_api(
        &stack,
        plain_dir.path(),
        &front,
        &["--temporal-tls-ca".into(), path(&pki.ca)],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while refused.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the front never saw a handshake");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !plain_dir.path().join("addr").exists(),
        "served without Temporal"
    );
    no_cert.kill().unwrap();
    no_cert.wait().unwrap();

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
    let addr_file = dir.path().join("addr");
    let deadline = Instant::now() + Duration::from_secs(60);
    let addr = loop {
        if let Ok(addr) = std::fs::read_to_string(&addr_file) {
            break addr;
        }
        assert!(
            Instant::now() < deadline,
            "the TLS session-api did not start: {}",
            std::fs::read_to_string(dir.path().join("log.err")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The stack's worker does not notify this extra session-api of new
    // events, so the test reads the session's state and log rather than
    // following it.
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
