use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use super::*;
use crate::ServeArgs;

/// A CA that issues certificates into `dir`.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params
            .distinguished_name
            .push(DnType::CommonName, "test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let pem = params.self_signed(&key).unwrap().pem();
        Self {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// Writes `<name>.pem`, `<name>.key` and the CA as `<name>.ca` into `dir`.
    fn issue(
        &self,
        dir: &Path,
        name: &str,
        sans: &[&str],
        usage: ExtendedKeyUsagePurpose,
    ) -> Files {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let files = Files {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
            ca: dir.join(format!("{name}.ca")),
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        std::fs::write(&files.ca, &self.pem).unwrap();
        files
    }
}

fn args(files: &Files) -> PeerTlsArgs {
    PeerTlsArgs {
        tls_cert: Some(files.cert.clone()),
        tls_key: Some(files.key.clone()),
        tls_ca: Some(files.ca.clone()),
        ..Default::default()
    }
}

/// A health server over mutual TLS; returns its address.
async fn server(dir: &Path, files: &Files) -> String {
    let tls = args(files).server("test").unwrap();
    let addr_file = dir.join("addr");
    let serve = ServeArgs {
        listen: "127.0.0.1:0".parse().unwrap(),
        addr_file: Some(addr_file.clone()),
        log_format: crate::LogFormat::Text,
        request_timeout_secs: None,
        metrics: None,
        web: None,
    };
    tokio::spawn(async move {
        let routes = tonic::service::Routes::default();
        serve_with_for_tests(&serve, routes, tls).await;
    });
    for _ in 0..500 {
        if let Ok(addr) = std::fs::read_to_string(&addr_file) {
            return addr;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the server did not start");
}

async fn serve_with_for_tests(
    serve: &ServeArgs,
    routes: tonic::service::Routes,
    tls: Option<Arc<ServerTls>>,
) {
    crate::serve_with(serve, routes, &[], tls).await.unwrap();
}

/// A health check over TLS as the holder of `files` (or plaintext).
async fn check(addr: &str, files: Option<&Files>) -> Result<(), String> {
    let tls = match files {
        Some(f) => args(f).client().unwrap(),
        None => None,
    };
    let channel = ClientTls::lazy_channel(tls.as_ref(), addr, None).unwrap();
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map(drop)
        .map_err(|e| format!("{e:?}"))
}

#[tokio::test]
async fn only_the_worker_named_by_the_ca_gets_in() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let server_files = ca.issue(
        dir.path(),
        "server",
        &["127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let addr = server(dir.path(), &server_files).await;

    let worker = ca.issue(
        dir.path(),
        "worker",
        &[WORKER_NAME],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    check(&addr, Some(&worker)).await.unwrap();

    // No TLS at all; a certificate of the right CA without the worker's
    // name; the worker's name from another CA.
    assert!(check(&addr, None).await.is_err());
    let other = ca.issue(
        dir.path(),
        "other",
        &["keel-session-api"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let err = check(&addr, Some(&other)).await.unwrap_err();
    assert!(!err.is_empty());
    let foreign = Ca::new().issue(
        dir.path(),
        "foreign",
        &[WORKER_NAME],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    // The foreign worker trusts our CA for the server's certificate.
    std::fs::write(&foreign.ca, &ca.pem).unwrap();
    assert!(check(&addr, Some(&foreign)).await.is_err());
    // The real worker still gets in.
    check(&addr, Some(&worker)).await.unwrap();
}

#[tokio::test]
async fn the_server_checks_its_name_for_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let server_files = ca.issue(
        dir.path(),
        "server",
        &["tool-runner.keel"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let addr = server(dir.path(), &server_files).await;
    let worker = ca.issue(
        dir.path(),
        "worker",
        &[WORKER_NAME],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    // Reached by IP, the certificate names another host: refused.
    assert!(check(&addr, Some(&worker)).await.is_err());
    // Asked for by the name it carries: accepted.
    let tls = args(&worker).client().unwrap();
    let channel =
        ClientTls::lazy_channel(tls.as_ref(), &addr, Some("tool-runner.keel".into())).unwrap();
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn rotated_certificates_are_picked_up_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let old = Ca::new();
    let server_files = old.issue(
        dir.path(),
        "server",
        &["127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let addr = server(dir.path(), &server_files).await;
    let old_worker = old.issue(
        dir.path(),
        "old-worker",
        &[WORKER_NAME],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    check(&addr, Some(&old_worker)).await.unwrap();

    // The operator rotates to a new CA: the server's files are replaced.
    let new = Ca::new();
    let rotated = new.issue(
        dir.path(),
        "rotated",
        &["127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    for (from, to) in [
        (&rotated.cert, &server_files.cert),
        (&rotated.key, &server_files.key),
        (&rotated.ca, &server_files.ca),
    ] {
        std::fs::copy(from, to).unwrap();
    }
    let new_worker = new.issue(
        dir.path(),
        "new-worker",
        &[WORKER_NAME],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while check(&addr, Some(&new_worker)).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the new certificates were never used"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(check(&addr, Some(&old_worker)).await.is_err());
}

#[test]
fn a_broken_rotation_keeps_the_previous_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    let files = ca.issue(
        dir.path(),
        "server",
        &["127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let reloading = Reloading::new(files.clone(), vec![WORKER_NAME.into()], server_config).unwrap();
    let recheck_now = || reloading.state.lock().unwrap().1 = Instant::now() - RECHECK;
    let before = reloading.current();
    std::fs::write(&files.cert, "not a certificate").unwrap();
    recheck_now();
    assert!(Arc::ptr_eq(&before, &reloading.current()), "kept");
    // A good rotation replaces it.
    let next = ca.issue(
        dir.path(),
        "next",
        &["127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    std::fs::copy(&next.cert, &files.cert).unwrap();
    std::fs::copy(&next.key, &files.key).unwrap();
    recheck_now();
    assert!(!Arc::ptr_eq(&before, &reloading.current()), "replaced");
}

#[test]
fn missing_files_need_an_explicit_plaintext() {
    let err = PeerTlsArgs::default()
        .server("x")
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("--insecure-plaintext"), "{err}");
    assert!(PeerTlsArgs::default().client().is_err());
    let plain = PeerTlsArgs {
        insecure_plaintext: true,
        ..Default::default()
    };
    assert!(plain.server("x").unwrap().is_none());
    assert!(plain.client().unwrap().is_none());
}
