//! session-api's authentication flags.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::{Authenticator, JwksSource, JwtConfig, JwtVerifier, TokenStore};

/// How session-api authenticates its callers. At least one of
/// `--tokens-file` and `--jwt-issuer` is needed, or `--insecure-no-auth`.
#[derive(Debug, Clone, clap::Args)]
pub struct AuthArgs {
    /// A TOML file of hashed bearer tokens (`keel token create` adds one);
    /// re-read when it changes.
    #[arg(long, env = "KEEL_TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,
    /// Accept JWTs from this issuer (their `iss`); needs --jwt-audience and
    /// --jwt-jwks-file or --jwt-jwks-url.
    #[arg(long, env = "KEEL_JWT_ISSUER", requires = "jwt_audience")]
    pub jwt_issuer: Option<String>,
    /// The audience JWTs must name (their `aud`).
    #[arg(long, env = "KEEL_JWT_AUDIENCE", requires = "jwt_issuer")]
    pub jwt_audience: Option<String>,
    /// The issuer's signing keys, a JWKS file (re-read periodically).
    #[arg(
        long,
        env = "KEEL_JWT_JWKS_FILE",
        conflicts_with = "jwt_jwks_url",
        requires = "jwt_issuer"
    )]
    pub jwt_jwks_file: Option<PathBuf>,
    /// The issuer's signing keys, fetched from this URL (cached; fetched
    /// again periodically and when a token names an unknown key).
    #[arg(long, env = "KEEL_JWT_JWKS_URL", requires = "jwt_issuer")]
    pub jwt_jwks_url: Option<String>,
    /// The JWT claim naming the caller's tenant.
    #[arg(long, env = "KEEL_JWT_TENANT_CLAIM", default_value = "tenant")]
    pub jwt_tenant_claim: String,
    /// The JWT claim naming the caller.
    #[arg(long, env = "KEEL_JWT_PRINCIPAL_CLAIM", default_value = "sub")]
    pub jwt_principal_claim: String,
    /// Seconds between reads of the JWKS and the token file's checks.
    #[arg(long, env = "KEEL_AUTH_REFRESH_SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub jwt_jwks_refresh_secs: u64,
    /// Serve everyone, unauthenticated, as one tenant ("default"): only for
    /// a machine whose every local user and process may drive every session.
    #[arg(long, env = "KEEL_INSECURE_NO_AUTH", conflicts_with_all = ["tokens_file", "jwt_issuer"])]
    pub insecure_no_auth: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    #[error(
        "no way to authenticate callers: pass --tokens-file and/or --jwt-issuer (with --jwt-audience and a JWKS), or --insecure-no-auth for a trusted single-user machine"
    )]
    Nothing,
    #[error("--jwt-issuer needs --jwt-jwks-file or --jwt-jwks-url")]
    NoJwks,
    #[error(transparent)]
    Tokens(#[from] crate::TokenFileError),
    #[error(transparent)]
    Jwt(#[from] crate::JwtError),
}

/// How often a token file is checked for changes.
const TOKEN_FILE_POLL: Duration = Duration::from_secs(1);

impl AuthArgs {
    /// Loads the token file and the JWKS and starts watching them. Call from
    /// within a Tokio runtime.
    pub async fn authenticator(&self) -> Result<Arc<Authenticator>, AuthSetupError> {
        if self.insecure_no_auth {
            tracing::warn!(
                "INSECURE: --insecure-no-auth: every caller that reaches this port can create, read, answer and close every session"
            );
            return Ok(Arc::new(Authenticator::insecure()));
        }
        let tokens = match &self.tokens_file {
            Some(path) => {
                let store = TokenStore::open(path)?;
                store.watch(TOKEN_FILE_POLL);
                Some(store)
            }
            None => None,
        };
        let jwt = match (&self.jwt_issuer, &self.jwt_audience) {
            (Some(issuer), Some(audience)) => {
                let jwks = match (&self.jwt_jwks_file, &self.jwt_jwks_url) {
                    (Some(path), _) => JwksSource::File(path.clone()),
                    (None, Some(url)) => JwksSource::Url(url.clone()),
                    (None, None) => return Err(AuthSetupError::NoJwks),
                };
                let verifier = JwtVerifier::new(JwtConfig {
                    issuer: issuer.clone(),
                    audience: audience.clone(),
                    jwks,
                    tenant_claim: self.jwt_tenant_claim.clone(),
                    principal_claim: self.jwt_principal_claim.clone(),
                    refresh: Duration::from_secs(self.jwt_jwks_refresh_secs),
                })
                .await?;
                verifier.watch();
                Some(verifier)
            }
            _ => None,
        };
        if tokens.is_none() && jwt.is_none() {
            return Err(AuthSetupError::Nothing);
        }
        Ok(Arc::new(Authenticator::verify(tokens, jwt)))
    }
}
