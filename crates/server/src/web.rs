//! Browsers: gRPC-Web (tonic-web) on a client-facing listener, and CORS so
//! that pages served from other origins may call it.
//!
//! gRPC-Web is HTTP/1.1 (or HTTP/2) with the gRPC frames in the body and the
//! trailers at its end; [`tonic_web::GrpcWebLayer`] translates each such call
//! into an ordinary gRPC call before anything else sees it, so
//! authentication, deadlines and metrics treat both the same. Plain gRPC
//! passes through untouched.
//!
//! CORS is what a browser enforces: by default no other origin is allowed, so
//! only same-origin pages (and programs, which ignore CORS) can call. Keel's
//! credentials are bearer tokens in a header, never cookies, so the answer
//! never allows credentials.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Response};
use tonic::body::Body;
use tower::ServiceBuilder;
use tower::util::BoxCloneService;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_layer::Layer;
use tower_service::Service;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Flags of a listener that browsers may call.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct WebArgs {
    /// An origin (`scheme://host[:port]`) whose pages may call this server
    /// from a browser (CORS). Repeat, or separate with commas. `*` allows
    /// every origin. Default: none (same-origin pages and non-browser
    /// clients only).
    #[arg(
        long = "cors-allowed-origin",
        env = "KEEL_CORS_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub cors_allowed_origins: Vec<String>,
    /// Serve plain gRPC over HTTP/2 only: refuse gRPC-Web and HTTP/1.1.
    #[arg(long, env = "KEEL_NO_GRPC_WEB")]
    pub no_grpc_web: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error(
        "--cors-allowed-origin {0:?} is not an origin as browsers send it: give scheme://host[:port] in lower case, without a path, a trailing slash or the scheme's default port; or *"
    )]
    BadOrigin(String),
    #[error("--cors-allowed-origin lists origins but --no-grpc-web refuses browsers")]
    OriginsWithoutWeb,
}

/// What a listener serves to browsers (see [`WebArgs::web`]).
#[derive(Debug, Clone)]
pub struct Web {
    cors: Option<CorsLayer>,
}

/// Request headers a gRPC-Web client sends: its protocol's own, Keel's
/// credentials, and the W3C trace context.
const ALLOWED_HEADERS: [&str; 7] = [
    "authorization",
    "content-type",
    "x-grpc-web",
    "x-user-agent",
    "grpc-timeout",
    "traceparent",
    "tracestate",
];

/// Response headers a browser may show the page: a call's status (in the
/// headers when the answer has no body).
const EXPOSED_HEADERS: [&str; 3] = ["grpc-status", "grpc-message", "grpc-status-details-bin"];

/// How long a browser may cache a preflight answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

impl WebArgs {
    /// What to serve to browsers: `None` with `--no-grpc-web`.
    pub fn web(&self) -> Result<Option<Web>, WebError> {
        let origins: Vec<&str> = self
            .cors_allowed_origins
            .iter()
            .map(|o| o.trim())
            .filter(|o| !o.is_empty())
            .collect();
        if self.no_grpc_web {
            if !origins.is_empty() {
                return Err(WebError::OriginsWithoutWeb);
            }
            return Ok(None);
        }
        if origins.is_empty() {
            return Ok(Some(Web { cors: None }));
        }
        let allow = if origins.contains(&"*") {
            tracing::warn!(
                "CORS allows every origin (--cors-allowed-origin '*'): any web page a user opens may call this server with a token it holds"
            );
            AllowOrigin::any()
        } else {
            let values = origins
                .iter()
                .map(|o| origin_value(o))
                .collect::<Result<Vec<_>, _>>()?;
            AllowOrigin::list(values)
        };
        let cors = CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::POST])
            .allow_headers(ALLOWED_HEADERS.map(HeaderName::from_static))
            .expose_headers(EXPOSED_HEADERS.map(HeaderName::from_static))
            .max_age(PREFLIGHT_MAX_AGE);
        tracing::info!(origins = ?origins, "CORS allows these origins");
        Ok(Some(Web { cors: Some(cors) }))
    }
}

/// `scheme://host[:port]`, exactly as a browser sends it in `Origin`:
/// lower case, and without the scheme's default port (an origin written
/// otherwise would never match, so it is refused rather than ignored).
fn origin_value(origin: &str) -> Result<HeaderValue, WebError> {
    let bad = || WebError::BadOrigin(origin.to_string());
    let (scheme, rest) = origin.split_once("://").ok_or_else(bad)?;
    let authority = rest.parse::<http::uri::Authority>().map_err(|_| bad())?;
    let default_port = match scheme {
        "http" => 80,
        "https" => 443,
        _ => return Err(bad()),
    };
    if rest.is_empty()
        || rest.contains(['/', '?', '#', '@', ' '])
        || rest.bytes().any(|b| b.is_ascii_uppercase())
        || authority.port_u16() == Some(default_port)
    {
        return Err(bad());
    }
    HeaderValue::from_str(origin).map_err(|_| bad())
}

/// Wraps a server's services: with [`Web`], CORS and the gRPC-Web
/// translation in front; without, nothing. Either way one service type, so
/// the server is built the same.
#[derive(Debug, Clone)]
pub(crate) struct WebLayer(pub(crate) Option<Web>);

impl<S, B> Layer<S> for WebLayer
where
    S: Service<Request<Body>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError> + std::fmt::Display,
{
    type Service = BoxCloneService<Request<Body>, Response<Body>, BoxError>;

    fn layer(&self, inner: S) -> Self::Service {
        match &self.0 {
            None => BoxCloneService::new(
                ServiceBuilder::new()
                    .map_err(Into::<BoxError>::into)
                    .map_response(|r: Response<B>| r.map(Body::new))
                    .service(inner),
            ),
            Some(web) => BoxCloneService::new(
                ServiceBuilder::new()
                    .map_err(Into::<BoxError>::into)
                    .option_layer(web.cors.clone())
                    .layer(tonic_web::GrpcWebLayer::new())
                    .service(inner),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(origins: &[&str], no_grpc_web: bool) -> WebArgs {
        WebArgs {
            cors_allowed_origins: origins.iter().map(|s| s.to_string()).collect(),
            no_grpc_web,
        }
    }

    #[test]
    fn origins_are_checked() {
        for good in [
            "http://127.0.0.1:8080",
            "https://app.example.com",
            "http://localhost",
        ] {
            assert!(args(&[good], false).web().is_ok(), "{good}");
        }
        for bad in [
            "app.example.com",
            "https://app.example.com/",
            "https://app.example.com/path",
            "ftp://app.example.com",
            "https://",
            "https://user@host",
            "https://a b",
            "https://App.example.com",
            "https://app.example.com:443",
            "http://app.example.com:80",
        ] {
            let err = args(&[bad], false).web().unwrap_err();
            assert!(err.to_string().contains("is not an origin"), "{bad}: {err}");
        }
    }

    #[test]
    fn no_grpc_web_refuses_origins() {
        assert!(args(&[], true).web().unwrap().is_none());
        assert!(matches!(
            args(&["https://a.example"], true).web(),
            Err(WebError::OriginsWithoutWeb)
        ));
        let web = args(&[], false).web().unwrap().unwrap();
        assert!(web.cors.is_none());
    }
}
