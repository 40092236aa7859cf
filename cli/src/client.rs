//! Finding and calling the session-api.

use std::error::Error as StdError;
use std::time::Duration;

use std::path::Path;

use anyhow::{Context as _, Result, anyhow, bail};
use keel_proto::v1::session_service_client::SessionServiceClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::state::StateDir;

/// Where the session-api is, as given and as a URL tonic can dial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// For messages: `host:port` (or the URL the user gave).
    pub display: String,
    pub url: String,
    /// True when the address came from the local stack's state directory.
    pub local: bool,
    /// The bearer token sent on every call.
    pub token: Option<String>,
}

/// The environment variable holding a bearer token (preferred to a flag,
/// which other local users could read in the process list).
pub(crate) const TOKEN_ENV: &str = "KEEL_TOKEN";

/// `--addr` / `KEEL_ADDR` when given, else the local stack's session-api;
/// with the token from `KEEL_TOKEN`, else `token_file`, else (for the local
/// stack) the token `keel up` made.
pub(crate) fn resolve_target(
    flag: Option<&str>,
    token_file: Option<&Path>,
    state: &StateDir,
) -> Result<Target> {
    let mut target = address(flag, state)?;
    target.token = match (
        std::env::var(TOKEN_ENV)
            .ok()
            .filter(|t| !t.trim().is_empty()),
        token_file,
    ) {
        (Some(token), _) => Some(token.trim().to_string()),
        (None, Some(file)) => Some(
            keel_auth::read_token(file)
                .with_context(|| format!("cannot read the token file {}", file.display()))?,
        ),
        (None, None) if target.local => keel_auth::read_token(&state.client_token_file()).ok(),
        (None, None) => None,
    };
    if let Some(token) = &target.token {
        keel_auth::Bearer::new(token).map_err(|e| anyhow!("{e}"))?;
    }
    Ok(target)
}

fn address(flag: Option<&str>, state: &StateDir) -> Result<Target> {
    if let Some(addr) = flag.map(str::trim).filter(|a| !a.is_empty()) {
        return parse_target(addr, false);
    }
    match state.read_addr("session-api") {
        Some(addr) => parse_target(&addr, true),
        None => bail!(
            "no local Keel stack is running: start one with `keel up`, or pass --addr \
             (no {} found)",
            state.addr_file("session-api").display()
        ),
    }
}

fn parse_target(addr: &str, local: bool) -> Result<Target> {
    let addr = addr.trim_end_matches('/');
    if addr.starts_with("https://") {
        bail!("{addr}: this keel build speaks plain gRPC only; use http://host:port or host:port");
    }
    let url = if addr.starts_with("http://") {
        addr.to_string()
    } else if addr.contains("://") {
        bail!("{addr}: expected host:port or http://host:port");
    } else {
        format!("http://{addr}")
    };
    let host_port = url.trim_start_matches("http://");
    let valid = host_port
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !valid {
        bail!("{addr}: expected host:port or http://host:port");
    }
    Endpoint::from_shared(url.clone()).map_err(|e| anyhow!("invalid address {addr}: {e}"))?;
    Ok(Target {
        display: host_port.to_string(),
        url,
        local,
        token: None,
    })
}

/// A connected session-api client.
pub(crate) struct SessionApi {
    pub client: SessionServiceClient<InterceptedService<Channel, keel_auth::Bearer>>,
    pub target: Target,
}

impl SessionApi {
    pub(crate) async fn connect(target: Target) -> Result<Self> {
        let endpoint = Endpoint::from_shared(target.url.clone())
            .map_err(|e| anyhow!("invalid address {}: {e}", target.display))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        let channel = endpoint.connect().await.map_err(|e| {
            let hint = if target.local {
                " (is the local stack running? see `keel status`, start it with `keel up`)"
            } else {
                ""
            };
            anyhow!(
                "cannot reach session-api at {}: {}{hint}",
                target.display,
                error_chain(&e)
            )
        })?;
        let bearer = match &target.token {
            Some(token) => keel_auth::Bearer::new(token).map_err(|e| anyhow!("{e}"))?,
            None => keel_auth::Bearer::none(),
        };
        Ok(Self {
            client: SessionServiceClient::with_interceptor(channel, bearer),
            target,
        })
    }

    /// A user-facing error for a failed call.
    pub(crate) fn error(&self, rpc: &str, status: &Status) -> anyhow::Error {
        rpc_error(&self.target.display, rpc, status)
    }
}

pub(crate) fn rpc_error(addr: &str, rpc: &str, status: &Status) -> anyhow::Error {
    let message = if status.message().is_empty() {
        status.code().description().to_string()
    } else {
        status.message().to_string()
    };
    match status.code() {
        Code::Unavailable => anyhow!("cannot reach session-api at {addr}: {message}"),
        Code::DeadlineExceeded => {
            anyhow!("session-api at {addr} did not answer {rpc} in time: {message}")
        }
        Code::Unimplemented => anyhow!(
            "the server at {addr} does not implement {rpc}: is it a Keel session-api? ({message})"
        ),
        Code::Unauthenticated => anyhow!(
            "session-api at {addr} refused the credentials: {message} (set {TOKEN_ENV} or pass --token-file; `keel up` makes one for the local stack)"
        ),
        code => anyhow!("{rpc} failed ({}): {message}", code_name(code)),
    }
}

fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid argument",
        Code::DeadlineExceeded => "deadline exceeded",
        Code::NotFound => "not found",
        Code::AlreadyExists => "already exists",
        Code::PermissionDenied => "permission denied",
        Code::ResourceExhausted => "resource exhausted",
        Code::FailedPrecondition => "failed precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out of range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// "outer: inner: innermost", without repeating a cause that the outer
/// message already contains.
pub(crate) fn error_chain(error: &dyn StdError) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = parse_target("127.0.0.1:5000", false).unwrap();
        assert_eq!(t.url, "http://127.0.0.1:5000");
        assert_eq!(t.display, "127.0.0.1:5000");
        let t = parse_target("http://keel.internal:80/", false).unwrap();
        assert_eq!(t.url, "http://keel.internal:80");
        assert_eq!(t.display, "keel.internal:80");
        assert!(parse_target("https://x:1", false).is_err());
        assert!(parse_target("grpc://x:1", false).is_err());
        assert!(parse_target("justahost", false).is_err());
        assert!(parse_target("http://", false).is_err());
    }

    #[test]
    fn no_local_stack_is_a_clear_error() {
        let dir = std::env::temp_dir().join(format!("keel-client-{}", std::process::id()));
        let state = StateDir::resolve(Some(&dir)).unwrap();
        let err = resolve_target(None, None, &state).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "no local Keel stack is running: start one with `keel up`, or pass --addr"
            ),
            "{err}"
        );
        let t = resolve_target(Some("  127.0.0.1:9 "), None, &state).unwrap();
        assert!(!t.local);
        state.create_dirs().unwrap();
        std::fs::write(state.addr_file("session-api"), "127.0.0.1:4242\n").unwrap();
        let t = resolve_target(Some(""), None, &state).unwrap();
        assert_eq!(t.display, "127.0.0.1:4242");
        assert!(t.local);
        assert_eq!(t.token, None, "no token made yet");
        std::fs::write(state.client_token_file(), "keel_local\n").unwrap();
        let t = resolve_target(None, None, &state).unwrap();
        assert_eq!(t.token.as_deref(), Some("keel_local"));
        // A remote address never gets the local stack's token.
        let t = resolve_target(Some("10.0.0.1:9"), None, &state).unwrap();
        assert_eq!(t.token, None);
        let file = dir.join("remote.token");
        std::fs::write(&file, " keel_remote \n").unwrap();
        let t = resolve_target(Some("10.0.0.1:9"), Some(&file), &state).unwrap();
        assert_eq!(t.token.as_deref(), Some("keel_remote"));
        std::fs::write(&file, "two words").unwrap();
        assert!(resolve_target(Some("10.0.0.1:9"), Some(&file), &state).is_err());
        std::fs::remove_dir_all(Path::new(&dir)).unwrap();
    }

    #[test]
    fn rpc_errors_read_well() {
        let e = rpc_error(
            "h:1",
            "GetSession",
            &Status::unavailable("connection refused"),
        );
        assert_eq!(
            e.to_string(),
            "cannot reach session-api at h:1: connection refused"
        );
        let e = rpc_error(
            "h:1",
            "SendUserTurn",
            &Status::invalid_argument("text is empty"),
        );
        assert_eq!(
            e.to_string(),
            "SendUserTurn failed (invalid argument): text is empty"
        );
    }

    #[tokio::test]
    async fn connecting_to_nothing_names_the_address() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let target = parse_target(&format!("127.0.0.1:{port}"), false).unwrap();
        let err = SessionApi::connect(target).await.err().unwrap().to_string();
        assert!(
            err.starts_with(&format!("cannot reach session-api at 127.0.0.1:{port}: ")),
            "{err}"
        );
    }
}
