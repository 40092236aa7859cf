//! JWT bearer tokens, checked against a JWKS.
//!
//! A token is accepted when it is signed by a key of the JWKS with an
//! asymmetric algorithm (RS*, PS*, ES*, EdDSA; never HS* or `none`), its
//! `iss` and `aud` are the configured ones, it has not expired (30 s of
//! clock skew allowed) and it carries a tenant and a principal claim.
//! The JWKS comes from a file (re-read when it changes) or a URL (fetched at
//! start, refreshed periodically, and fetched again, at most every
//! [`MIN_REFETCH`], when a token names a key it does not hold, which is how
//! a rotated key is picked up).

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use crate::{Caller, validate_principal, validate_tenant};

/// The least time between two fetches of a JWKS URL prompted by unknown
/// key ids, so that forged `kid`s cannot make Keel hammer the issuer.
pub(crate) const MIN_REFETCH: Duration = Duration::from_secs(30);
const LEEWAY_SECS: u64 = 30;
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_JWKS_BYTES: usize = 1 << 20;

#[derive(Clone, Debug)]
pub enum JwksSource {
    File(PathBuf),
    Url(String),
}

#[derive(Clone, Debug)]
pub struct JwtConfig {
    pub issuer: String,
    pub audience: String,
    pub jwks: JwksSource,
    /// The claim holding the tenant.
    pub tenant_claim: String,
    /// The claim holding the principal (`sub` by default).
    pub principal_claim: String,
    /// How often the JWKS is read again.
    pub refresh: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("cannot read the JWKS file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot fetch the JWKS from {url}: {reason}")]
    Fetch { url: String, reason: String },
    #[error("the JWKS from {from} is not valid: {reason}")]
    Invalid { from: String, reason: String },
    /// A token that is not accepted; the reason is safe to tell the caller.
    #[error("{0}")]
    Rejected(String),
}

struct Keys {
    set: Arc<JwkSet>,
    fetched: Option<Instant>,
}

pub struct JwtVerifier {
    config: JwtConfig,
    keys: RwLock<Keys>,
    http: Option<reqwest::Client>,
    /// One fetch at a time.
    fetching: tokio::sync::Mutex<()>,
}

impl JwtVerifier {
    /// Loads the JWKS. A file must load; a URL that cannot be fetched now is
    /// logged and fetched again when a token arrives.
    pub async fn new(config: JwtConfig) -> Result<Arc<Self>, JwtError> {
        let http = match &config.jwks {
            JwksSource::File(_) => None,
            JwksSource::Url(url) => {
                if !url.starts_with("https://") && !url.starts_with("http://") {
                    return Err(JwtError::Invalid {
                        from: url.clone(),
                        reason: "the JWKS URL must be http:// or https://".into(),
                    });
                }
                let _ = rustls::crypto::ring::default_provider().install_default();
                let client = reqwest::Client::builder()
                    .timeout(FETCH_TIMEOUT)
                    .build()
                    .map_err(|e| JwtError::Fetch {
                        url: url.clone(),
                        reason: e.to_string(),
                    })?;
                Some(client)
            }
        };
        let verifier = Arc::new(Self {
            config,
            keys: RwLock::new(Keys {
                set: Arc::new(JwkSet { keys: Vec::new() }),
                fetched: None,
            }),
            http,
            fetching: tokio::sync::Mutex::new(()),
        });
        match verifier.load().await {
            Ok(()) => {}
            Err(e @ JwtError::Fetch { .. }) => {
                tracing::warn!(error = %e, "JWTs are refused until the JWKS can be fetched");
            }
            Err(e) => return Err(e),
        }
        Ok(verifier)
    }

    fn set(&self) -> Arc<JwkSet> {
        match self.keys.read() {
            Ok(k) => k.set.clone(),
            Err(poisoned) => poisoned.into_inner().set.clone(),
        }
    }

    fn fetched(&self) -> Option<Instant> {
        match self.keys.read() {
            Ok(k) => k.fetched,
            Err(poisoned) => poisoned.into_inner().fetched,
        }
    }

    /// Reads the JWKS again (file or URL).
    pub async fn load(&self) -> Result<(), JwtError> {
        let _one = self.fetching.lock().await;
        let (from, bytes) = match (&self.config.jwks, &self.http) {
            (JwksSource::File(path), _) => {
                let bytes = tokio::fs::read(path)
                    .await
                    .map_err(|source| JwtError::Read {
                        path: path.clone(),
                        source,
                    })?;
                (path.display().to_string(), bytes)
            }
            (JwksSource::Url(url), Some(http)) => {
                // Counted as a fetch whether or not it works, so failures
                // are retried at the same bounded rate.
                self.mark_fetched();
                (url.clone(), fetch(http, url).await?)
            }
            (JwksSource::Url(url), None) => {
                return Err(JwtError::Fetch {
                    url: url.clone(),
                    reason: "no HTTP client".into(),
                });
            }
        };
        let set: JwkSet = serde_json::from_slice(&bytes).map_err(|e| JwtError::Invalid {
            from: from.clone(),
            reason: e.to_string(),
        })?;
        let count = set.keys.len();
        let changed = {
            let mut keys = match self.keys.write() {
                Ok(k) => k,
                Err(poisoned) => poisoned.into_inner(),
            };
            let changed = keys.set.keys != set.keys;
            keys.set = Arc::new(set);
            keys.fetched = Some(Instant::now());
            changed
        };
        if changed {
            tracing::info!(%from, keys = count, "JWKS loaded");
        }
        Ok(())
    }

    fn mark_fetched(&self) {
        match self.keys.write() {
            Ok(mut k) => k.fetched = Some(Instant::now()),
            Err(poisoned) => poisoned.into_inner().fetched = Some(Instant::now()),
        }
    }

    /// Reads the JWKS again every `config.refresh` while the runtime lives.
    pub fn watch(self: &Arc<Self>) {
        let verifier = Arc::downgrade(self);
        let every = self.config.refresh;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(verifier) = verifier.upgrade() else {
                    return;
                };
                if let Err(e) = verifier.load().await {
                    tracing::warn!(error = %e, "cannot refresh the JWKS; keeping the keys loaded before");
                }
            }
        });
    }

    /// The caller `token` proves, or why it is refused.
    pub async fn verify(&self, token: &str) -> Result<Caller, JwtError> {
        let reject = |why: String| JwtError::Rejected(why);
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| reject(format!("not a valid JWT: {e}")))?;
        if !asymmetric(header.alg) {
            return Err(reject(format!(
                "JWT algorithm {:?} is not accepted (use RS*, PS*, ES* or EdDSA)",
                header.alg
            )));
        }
        let mut set = self.set();
        if find(&set, header.kid.as_deref()).is_none() && self.may_refetch() {
            if let Err(e) = self.load().await {
                tracing::warn!(error = %e, "cannot fetch the JWKS for an unknown key id");
            }
            set = self.set();
        }
        let jwk = find(&set, header.kid.as_deref()).ok_or_else(|| {
            reject(match &header.kid {
                Some(kid) => format!("the JWT's key id {kid:?} is not in the JWKS"),
                None => "the JWT names no key id (kid) and the JWKS holds more than one key".into(),
            })
        })?;
        if let Some(alg) = jwk.common.key_algorithm
            && !same_algorithm(alg, header.alg)
        {
            return Err(reject(format!(
                "the JWT's algorithm {:?} is not its key's ({alg:?})",
                header.alg
            )));
        }
        let key = DecodingKey::from_jwk(jwk)
            .map_err(|e| reject(format!("the JWKS key cannot verify JWTs: {e}")))?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            &key,
            &validation,
        )
        .map_err(|e| reject(format!("JWT refused: {e}")))?;
        let claim = |name: &str| {
            data.claims
                .get(name)
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .ok_or_else(|| reject(format!("the JWT has no string claim {name:?}")))
        };
        let tenant = claim(&self.config.tenant_claim)?;
        let principal = claim(&self.config.principal_claim)?;
        validate_tenant(&tenant).map_err(reject)?;
        validate_principal(&principal).map_err(reject)?;
        Ok(Caller { tenant, principal })
    }

    fn may_refetch(&self) -> bool {
        matches!(self.config.jwks, JwksSource::Url(_))
            && self.fetched().is_none_or(|at| at.elapsed() >= MIN_REFETCH)
    }
}

fn asymmetric(alg: Algorithm) -> bool {
    !matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

/// Whether a JWK's `alg` is the JWT header's.
fn same_algorithm(key: KeyAlgorithm, alg: Algorithm) -> bool {
    use Algorithm as A;
    use KeyAlgorithm as K;
    matches!(
        (key, alg),
        (K::HS256, A::HS256)
            | (K::HS384, A::HS384)
            | (K::HS512, A::HS512)
            | (K::ES256, A::ES256)
            | (K::ES384, A::ES384)
            | (K::RS256, A::RS256)
            | (K::RS384, A::RS384)
            | (K::RS512, A::RS512)
            | (K::PS256, A::PS256)
            | (K::PS384, A::PS384)
            | (K::PS512, A::PS512)
            | (K::EdDSA, A::EdDSA)
    )
}

fn find<'a>(set: &'a JwkSet, kid: Option<&str>) -> Option<&'a jsonwebtoken::jwk::Jwk> {
    match kid {
        Some(kid) => set.find(kid),
        None if set.keys.len() == 1 => set.keys.first(),
        None => None,
    }
}

async fn fetch(http: &reqwest::Client, url: &str) -> Result<Vec<u8>, JwtError> {
    let err = |reason: String| JwtError::Fetch {
        url: url.to_string(),
        reason,
    };
    let mut resp = http
        .get(url)
        .send()
        .await
        .map_err(|e| err(e.without_url().to_string()))?;
    if !resp.status().is_success() {
        return Err(err(format!("HTTP {}", resp.status())));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| err(e.to_string()))? {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(err(format!("larger than {MAX_JWKS_BYTES} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests;
