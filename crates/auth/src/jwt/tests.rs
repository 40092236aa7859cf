use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::{EncodingKey, Header};
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use serde_json::json;

use super::*;

/// An Ed25519 signing key and its JWK.
struct Key {
    pkcs8: Vec<u8>,
    jwk: serde_json::Value,
}

fn key(kid: &str) -> Key {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
        .unwrap()
        .as_ref()
        .to_vec();
    let pair = Ed25519KeyPair::from_pkcs8(&pkcs8).unwrap();
    let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
    Key {
        pkcs8,
        jwk: json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig"}),
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims() -> serde_json::Value {
    json!({
        "iss": "https://idp.example",
        "aud": "keel",
        "sub": "alice@example.com",
        "tenant": "acme",
        "exp": now() + 300,
    })
}

fn sign(key: &Key, kid: Option<&str>, claims: &serde_json::Value) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(&key.pkcs8)).unwrap()
}

fn config(jwks: JwksSource) -> JwtConfig {
    JwtConfig {
        issuer: "https://idp.example".into(),
        audience: "keel".into(),
        jwks,
        tenant_claim: "tenant".into(),
        principal_claim: "sub".into(),
        refresh: Duration::from_secs(300),
    }
}

fn write_jwks(path: &std::path::Path, keys: &[&Key]) {
    let set = json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()});
    std::fs::write(path, set.to_string()).unwrap();
}

fn rejected(result: Result<Caller, JwtError>) -> String {
    match result {
        Err(JwtError::Rejected(why)) => why,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[tokio::test]
async fn a_valid_token_names_its_tenant_and_principal_and_tampering_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    let k1 = key("k1");
    write_jwks(&jwks, &[&k1]);
    let v = JwtVerifier::new(config(JwksSource::File(jwks.clone())))
        .await
        .unwrap();
    let token = sign(&k1, Some("k1"), &claims());
    assert_eq!(
        v.verify(&token).await.unwrap(),
        Caller {
            tenant: "acme".into(),
            principal: "alice@example.com".into()
        }
    );
    // One key and no kid: that key.
    assert_eq!(
        v.verify(&sign(&k1, None, &claims())).await.unwrap().tenant,
        "acme"
    );

    // Another tenant in the payload, the signature of the original.
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    let mut forged = claims();
    forged["tenant"] = json!("globex");
    parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(forged.to_string());
    assert!(rejected(v.verify(&parts.join(".")).await).contains("JWT refused"));

    // Signed by a key that is not in the JWKS, under a known kid.
    let stranger = key("k1");
    assert!(
        rejected(v.verify(&sign(&stranger, Some("k1"), &claims())).await).contains("JWT refused")
    );

    for (field, value, why) in [
        ("iss", json!("https://evil.example"), "JWT refused"),
        ("aud", json!("other"), "JWT refused"),
        ("exp", json!(now() - 3600), "JWT refused"),
        ("tenant", json!("Not A Tenant"), "tenant"),
        ("tenant", json!(7), "no string claim \"tenant\""),
        ("sub", json!(""), "principal"),
    ] {
        let mut c = claims();
        c[field] = value;
        let why_got = rejected(v.verify(&sign(&k1, Some("k1"), &c)).await);
        assert!(why_got.contains(why), "{field}: {why_got}");
    }
    let mut no_exp = claims();
    no_exp.as_object_mut().unwrap().remove("exp");
    assert!(rejected(v.verify(&sign(&k1, Some("k1"), &no_exp)).await).contains("JWT refused"));
}

#[tokio::test]
async fn symmetric_and_unsigned_tokens_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    let k1 = key("k1");
    write_jwks(&jwks, &[&k1]);
    let v = JwtVerifier::new(config(JwksSource::File(jwks)))
        .await
        .unwrap();
    // HS256 keyed with the public key's bytes: the classic confusion attack.
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("k1".into());
    let x = k1.jwk["x"].as_str().unwrap();
    let hs =
        jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(x.as_bytes())).unwrap();
    assert!(rejected(v.verify(&hs).await).contains("not accepted"));
    // alg "none".
    let b64 = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let none = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "kid": "k1"})),
        b64(claims())
    );
    assert!(rejected(v.verify(&none).await).contains("not a valid JWT"));
    assert!(rejected(v.verify("not.a.jwt").await).contains("not a valid JWT"));
}

#[tokio::test]
async fn a_rotated_key_in_the_file_is_picked_up_on_reload() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    let (k1, k2) = (key("k1"), key("k2"));
    write_jwks(&jwks, &[&k1]);
    let v = JwtVerifier::new(config(JwksSource::File(jwks.clone())))
        .await
        .unwrap();
    let new_token = sign(&k2, Some("k2"), &claims());
    assert!(rejected(v.verify(&new_token).await).contains("\"k2\" is not in the JWKS"));
    write_jwks(&jwks, &[&k1, &k2]);
    v.load().await.unwrap();
    assert!(v.verify(&new_token).await.is_ok());
    // Two keys: a token without kid is ambiguous.
    assert!(rejected(v.verify(&sign(&k1, None, &claims())).await).contains("no key id"));
}

#[tokio::test]
async fn a_jwks_url_is_fetched_again_for_an_unknown_key_at_a_bounded_rate() {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (k1, k2) = (key("k1"), key("k2"));
    let served = Arc::new(Mutex::new(json!({"keys": [k1.jwk.clone()]})));
    let fetches = Arc::new(AtomicUsize::new(0));
    let app = {
        let (served, fetches) = (served.clone(), fetches.clone());
        axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                let (served, fetches) = (served.clone(), fetches.clone());
                async move {
                    fetches.fetch_add(1, Ordering::SeqCst);
                    axum::Json(served.lock().unwrap().clone())
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let v = JwtVerifier::new(config(JwksSource::Url(url)))
        .await
        .unwrap();
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    assert!(v.verify(&sign(&k1, Some("k1"), &claims())).await.is_ok());
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "known keys are cached");

    // The issuer rotates to k2; the first k2 token arrives within
    // MIN_REFETCH of the last fetch, so it is refused without a fetch.
    *served.lock().unwrap() = json!({"keys": [k1.jwk.clone(), k2.jwk.clone()]});
    let k2_token = sign(&k2, Some("k2"), &claims());
    assert!(rejected(v.verify(&k2_token).await).contains("not in the JWKS"));
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    // Once MIN_REFETCH has passed, an unknown kid fetches again.
    {
        let mut keys = v.keys.write().unwrap();
        keys.fetched = Some(Instant::now() - MIN_REFETCH);
    }
    assert_eq!(
        v.verify(&k2_token).await.unwrap().principal,
        "alice@example.com"
    );
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
    // Forged kids do not each cause a fetch.
    for n in 0..20 {
        let forged = sign(&k2, Some(&format!("forged-{n}")), &claims());
        assert!(v.verify(&forged).await.is_err());
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
}
