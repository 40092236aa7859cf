//! The server side: a tower wrapper that authenticates each call before the
//! service sees it.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::Status;
use tonic::body::Body;
use tonic::codegen::http::{HeaderMap, Request, Response};
use tonic::codegen::{BoxFuture, Service};
use tonic::server::NamedService;

use crate::{ANONYMOUS, Caller, DEFAULT_TENANT, JwtError, JwtVerifier, TokenStore};

/// Turns a request's `authorization` header into a [`Caller`].
pub struct Authenticator {
    mode: Mode,
}

enum Mode {
    Insecure,
    Verify {
        tokens: Option<Arc<TokenStore>>,
        jwt: Option<Arc<JwtVerifier>>,
    },
}

impl Authenticator {
    /// Checks bearer tokens against a token file, JWTs, or both.
    pub fn verify(tokens: Option<Arc<TokenStore>>, jwt: Option<Arc<JwtVerifier>>) -> Self {
        Self {
            mode: Mode::Verify { tokens, jwt },
        }
    }

    /// Lets everyone in as [`ANONYMOUS`] of [`DEFAULT_TENANT`]: for a
    /// single-user machine where every local user is trusted.
    pub fn insecure() -> Self {
        Self {
            mode: Mode::Insecure,
        }
    }

    pub fn is_insecure(&self) -> bool {
        matches!(self.mode, Mode::Insecure)
    }

    /// The caller the headers prove, or UNAUTHENTICATED saying why not.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, Status> {
        let (tokens, jwt) = match &self.mode {
            Mode::Insecure => {
                return Ok(Caller {
                    tenant: DEFAULT_TENANT.into(),
                    principal: ANONYMOUS.into(),
                });
            }
            Mode::Verify { tokens, jwt } => (tokens, jwt),
        };
        let token = bearer(headers)?;
        let looks_like_jwt = token.split('.').count() == 3;
        if let (true, Some(jwt)) = (looks_like_jwt, jwt) {
            return jwt.verify(token).await.map_err(|e| match e {
                JwtError::Rejected(why) => Status::unauthenticated(why),
                other => Status::unauthenticated(format!("cannot check the JWT: {other}")),
            });
        }
        if let Some(caller) = tokens.as_ref().and_then(|t| t.lookup(token)) {
            return Ok(caller);
        }
        Err(Status::unauthenticated(
            if looks_like_jwt && jwt.is_none() {
                "this server does not accept JWTs (no --jwt-issuer); use a token from its token file"
            } else {
                "the bearer token is not valid (unknown, revoked, or mistyped)"
            },
        ))
    }
}

fn bearer(headers: &HeaderMap) -> Result<&str, Status> {
    let value = headers.get("authorization").ok_or_else(|| {
        Status::unauthenticated(
            "no credentials: send `authorization: Bearer <token>` (the keel CLI reads --token-file or KEEL_TOKEN)",
        )
    })?;
    let value = value
        .to_str()
        .map_err(|_| Status::unauthenticated("the authorization header is not ASCII"))?;
    let (scheme, token) = value.split_once(' ').ok_or_else(|| {
        Status::unauthenticated("the authorization header must be `Bearer <token>`")
    })?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(Status::unauthenticated(
            "the authorization header must be `Bearer <token>`",
        ));
    }
    Ok(token)
}

/// The caller [`RequireAuth`] put in a request's extensions. A request
/// without one (a service mounted without the wrapper) is refused, so a
/// wiring mistake fails closed.
pub fn caller<T>(request: &tonic::Request<T>) -> Result<Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("the call was not authenticated"))
}

/// Wraps a tonic service: each call is authenticated first; a refused call
/// is answered UNAUTHENTICATED without reaching the service.
#[derive(Clone)]
pub struct RequireAuth<S> {
    inner: S,
    auth: Arc<Authenticator>,
}

impl<S> RequireAuth<S> {
    pub fn new(inner: S, auth: Arc<Authenticator>) -> Self {
        Self { inner, auth }
    }
}

impl<S: NamedService> NamedService for RequireAuth<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<Request<Body>> for RequireAuth<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        // The clone is not ready; keep the ready one for this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let auth = self.auth.clone();
        Box::pin(async move {
            match auth.authenticate(request.headers()).await {
                Ok(caller) => {
                    request.extensions_mut().insert(caller);
                    inner.call(request).await
                }
                Err(status) => {
                    tracing::info!(path = %request.uri().path(), reason = status.message(), "call refused: not authenticated");
                    Ok(status.into_http())
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use tonic::codegen::http::HeaderValue;

    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_str(value).unwrap());
        h
    }

    #[tokio::test]
    async fn tokens_from_the_file_and_every_malformed_header_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        let token = crate::append_token(&path, "alice", "acme").unwrap();
        let auth = Authenticator::verify(Some(TokenStore::open(&path).unwrap()), None);
        let caller = auth
            .authenticate(&headers(&format!("Bearer {token}")))
            .await
            .unwrap();
        assert_eq!(
            (caller.tenant.as_str(), caller.principal.as_str()),
            ("acme", "alice")
        );
        assert!(
            auth.authenticate(&headers(&format!("bearer  {token}")))
                .await
                .is_ok()
        );
        let refused = |h: HeaderMap| {
            let auth = &auth;
            async move { auth.authenticate(&h).await.unwrap_err() }
        };
        let none = refused(HeaderMap::new()).await;
        assert_eq!(none.code(), tonic::Code::Unauthenticated);
        assert!(
            none.message().contains("no credentials"),
            "{}",
            none.message()
        );
        for bad in [
            format!("Basic {token}"),
            token.clone(),
            "Bearer ".into(),
            format!("Bearer {token}x"),
            "Bearer a.b.c".into(),
        ] {
            let s = refused(headers(&bad)).await;
            assert_eq!(s.code(), tonic::Code::Unauthenticated, "{bad}");
        }
        assert!(
            refused(headers("Bearer a.b.c"))
                .await
                .message()
                .contains("does not accept JWTs")
        );
    }

    #[tokio::test]
    async fn insecure_lets_everyone_in_as_anonymous_of_the_default_tenant() {
        let auth = Authenticator::insecure();
        let caller = auth.authenticate(&HeaderMap::new()).await.unwrap();
        assert_eq!(caller.tenant, DEFAULT_TENANT);
        assert_eq!(caller.principal, ANONYMOUS);
    }

    #[test]
    fn a_request_that_skipped_the_wrapper_is_refused() {
        let request = tonic::Request::new(());
        assert_eq!(
            caller(&request).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
    }
}
