//! The blob store against S3 over real HTTP: a local S3-compatible server
//! (moto's `moto_server`, installed by `.ci/run`; `KEEL_MOTO_SERVER` names
//! another binary) stands in for AWS.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keel_blobstore::{BlobError, BlobStore};

struct Server {
    child: Child,
    endpoint: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server() -> Server {
    let exe = std::env::var("KEEL_MOTO_SERVER").unwrap_or_else(|_| "moto_server".into());
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(&exe)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start {exe} (pip install 'moto[server]', or set KEEL_MOTO_SERVER): {e}")
        });
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{exe} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Server {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
    }
}

#[tokio::test]
async fn blobs_round_trip_through_s3() {
    let server = start_server();
    // object_store does not create buckets; S3's CreateBucket is a PUT.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let created = reqwest::Client::new()
        .put(format!("{}/keel-blobs", server.endpoint))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success(), "{created:?}");
    let options = [
        ("aws_endpoint", server.endpoint.as_str()),
        ("aws_allow_http", "true"),
        ("aws_access_key_id", "keel-test"),
        ("aws_secret_access_key", "keel-test-secret"),
        ("aws_region", "us-east-1"),
    ];
    let store = BlobStore::open_with_options("s3://keel-blobs", &options).unwrap();
    let digest = store.put(&b"hello"[..]).await.unwrap();
    assert_eq!(
        digest,
        "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    );
    assert_eq!(&store.get(&digest).await.unwrap()[..], b"hello");
    // A second handle (another process, in production) sees the same blob.
    let again = BlobStore::open_with_options("s3://keel-blobs", &options).unwrap();
    assert_eq!(&again.get(&digest).await.unwrap()[..], b"hello");
    let missing = "0".repeat(64);
    assert!(matches!(
        again.get(&missing).await,
        Err(BlobError::NotFound(_))
    ));
    // The conversation chain works on S3 too.
    let head = keel_blobstore::conversation::append(&store, None, vec![digest.clone()])
        .await
        .unwrap();
    let items = keel_blobstore::conversation::item_digests(&again, head.as_deref())
        .await
        .unwrap();
    assert_eq!(items, [digest]);
}

#[test]
fn bad_options_are_named() {
    let err = BlobStore::open_with_options("s3://b", &[("no_such_key", "x")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("no_such_key"), "{err}");
    assert!(BlobStore::open_with_options("memory://", &[("aws_region", "x")]).is_err());
}
