//! Every way a model call can fail, whether the proxy retries it (Codex's
//! policy, Codex's `codex-rs/core/src/client.rs`), and the one place each becomes a gRPC status. The worker
//! retries UNAVAILABLE (and INTERNAL) and fails fast on every other code.

use std::time::Duration;

use keel_blobstore::BlobError;
use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    // The request itself.
    #[error("no API key configured: set {env_key} for the model-proxy{}", suffix(.instructions))]
    NoApiKey {
        env_key: String,
        instructions: Option<String>,
    },
    #[error("the configured API key contains characters not allowed in an HTTP header")]
    InvalidApiKey,
    #[error("unknown model provider {id:?}; configured providers: {known}")]
    UnknownProvider { id: String, known: String },
    #[error("model-proxy is at capacity for provider {provider}; retry later")]
    AtCapacity { provider: String },
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("blob {0} not found")]
    BlobNotFound(String),
    /// The call named a stored prefix the blob store does not hold.
    #[error("call prefix {0} is not stored; send the tools and items again with store_prefix")]
    PrefixMissing(String),
    #[error("invalid blob digest {0:?}: expected 64 lowercase hex characters")]
    InvalidDigest(String),
    #[error("blob {digest} is not a conversation segment: {reason}")]
    NotASegment { digest: String, reason: String },
    #[error("blob store error: {0}")]
    BlobStore(String),
    /// Retrying cannot help: the stored bytes were rewritten.
    #[error("{0}")]
    BlobCorrupt(String),
    #[error("the client went away")]
    ClientGone,
    #[error("cannot set up the model-proxy: {0}")]
    Setup(String),

    // HTTP status before streaming.
    #[error("the model API rejected the API key (HTTP {status}): {body}{}", suffix(.hint))]
    Unauthorized {
        status: u16,
        body: String,
        hint: Option<String>,
    },
    #[error("the model API rejected the request (HTTP {status}): {message}")]
    BadRequest { status: u16, message: String },
    #[error("the model API returned HTTP 404 (unknown model or endpoint?): {body}")]
    NotFound { body: String },
    /// A rate limit: retried after the server's delay, else with backoff.
    #[error("the model API's rate limit was hit: {message}")]
    RateLimited {
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("the model API failed (HTTP {status}): {body}")]
    ServerError { status: u16, body: String },
    #[error("cannot reach the model API: {0}")]
    Transport(String),

    // Codex's error classes, from HTTP bodies or `response.failed`.
    #[error("context window exceeded: {0}")]
    ContextWindowExceeded(String),
    #[error("quota exceeded: {0} (check the plan and billing details of the account)")]
    QuotaExceeded(String),
    #[error("usage limit reached: {0} (try again after the limit resets)")]
    UsageLimitReached(String),
    #[error("invalid prompt: {0}")]
    InvalidPrompt(String),
    #[error("the model server is overloaded: {0}")]
    Overloaded(String),
    #[error("usage is not included in the plan: {0}")]
    UsageNotIncluded(String),
    #[error("the model response failed ({code}): {message}")]
    ResponseFailed { code: String, message: String },

    // The stream.
    #[error("Incomplete response returned, reason: {0}")]
    Incomplete(String),
    #[error("stream closed before response.completed")]
    StreamClosed,
    #[error("idle timeout waiting for SSE")]
    IdleTimeout,
    #[error("error reading the SSE stream: {0}")]
    Stream(String),

    // Retries spent.
    #[error("{last} (gave up after {retries} retries)")]
    RetriesExhausted { retries: u32, last: Box<ProxyError> },
    #[error("{last} (the model API asked to wait {}s before retrying; not waiting that long)", .wait.as_secs())]
    RetryTooFarAway {
        wait: Duration,
        last: Box<ProxyError>,
    },
}

fn suffix(h: &Option<String>) -> String {
    h.as_deref().map(|h| format!(" ({h})")).unwrap_or_default()
}

/// Whether and how the proxy retries a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Fail the call now.
    Never,
    /// Re-send the same request silently (HTTP 5xx, connection errors), up
    /// to `request_max_retries`; then retry as [`Retry::Stream`].
    Request,
    /// Re-send the whole request with a `stream_error`, up to
    /// `stream_max_retries`, after `after` when the server asked for it.
    Stream { after: Option<Duration> },
}

impl ProxyError {
    pub fn retry(&self) -> Retry {
        match self {
            Self::ServerError { .. } | Self::Transport(_) => Retry::Request,
            Self::RateLimited { retry_after, .. } => Retry::Stream {
                after: *retry_after,
            },
            Self::ResponseFailed { .. }
            | Self::Incomplete(_)
            | Self::StreamClosed
            | Self::IdleTimeout
            | Self::Stream(_) => Retry::Stream { after: None },
            _ => Retry::Never,
        }
    }

    /// The failure class, for metrics and logs.
    pub fn class(&self) -> &'static str {
        match self {
            Self::NoApiKey { .. } | Self::InvalidApiKey | Self::Unauthorized { .. } => {
                "unauthenticated"
            }
            Self::UnknownProvider { .. }
            | Self::InvalidRequest(_)
            | Self::InvalidDigest(_)
            | Self::NotASegment { .. }
            | Self::BadRequest { .. }
            | Self::InvalidPrompt(_) => "invalid_request",
            Self::AtCapacity { .. } => "capacity",
            Self::BlobNotFound(_) | Self::NotFound { .. } => "not_found",
            Self::PrefixMissing(_) => "prefix_missing",
            Self::BlobStore(_) => "blob_store",
            Self::BlobCorrupt(_) => "blob_corrupt",
            Self::ClientGone => "cancelled",
            Self::Setup(_) => "internal",
            Self::RateLimited { .. } | Self::RetryTooFarAway { .. } => "rate_limited",
            Self::ServerError { .. } => "server_error",
            Self::Transport(_) => "transport",
            Self::ContextWindowExceeded(_) => "context_window_exceeded",
            Self::QuotaExceeded(_) => "quota_exceeded",
            Self::UsageLimitReached(_) => "usage_limit_reached",
            Self::UsageNotIncluded(_) => "usage_not_included",
            Self::Overloaded(_) => "overloaded",
            Self::ResponseFailed { .. } => "response_failed",
            Self::Incomplete(_) => "incomplete",
            Self::StreamClosed => "stream_closed",
            Self::IdleTimeout => "idle_timeout",
            Self::Stream(_) => "stream",
            Self::RetriesExhausted { last, .. } => last.class(),
        }
    }

    fn code(&self) -> Code {
        match self {
            Self::NoApiKey { .. } | Self::InvalidApiKey | Self::Unauthorized { .. } => {
                Code::Unauthenticated
            }
            Self::UnknownProvider { .. }
            | Self::InvalidRequest(_)
            | Self::InvalidDigest(_)
            | Self::NotASegment { .. }
            | Self::BadRequest { .. }
            | Self::InvalidPrompt(_) => Code::InvalidArgument,
            Self::BlobNotFound(_) | Self::NotFound { .. } => Code::NotFound,
            Self::PrefixMissing(_) => Code::FailedPrecondition,
            Self::AtCapacity { .. }
            | Self::RateLimited { .. }
            | Self::RetryTooFarAway { .. }
            | Self::QuotaExceeded(_)
            | Self::UsageLimitReached(_) => Code::ResourceExhausted,
            Self::ContextWindowExceeded(_) => Code::OutOfRange,
            Self::UsageNotIncluded(_) => Code::PermissionDenied,
            Self::ClientGone => Code::Cancelled,
            Self::Setup(_) => Code::Internal,
            Self::BlobCorrupt(_) => Code::DataLoss,
            Self::BlobStore(_)
            | Self::ServerError { .. }
            | Self::Transport(_)
            | Self::Overloaded(_)
            | Self::ResponseFailed { .. }
            | Self::Incomplete(_)
            | Self::StreamClosed
            | Self::IdleTimeout
            | Self::Stream(_) => Code::Unavailable,
            Self::RetriesExhausted { last, .. } => last.code(),
        }
    }

    /// The gRPC status the worker sees. UNAVAILABLE marks what is worth
    /// retrying later; a rate limit that outlasted the proxy's retries is
    /// RESOURCE_EXHAUSTED, so the workflow stops instead of hammering.
    ///
    /// The status carries a [`keel_proto::v1::ErrorInfo`]: the class of
    /// [`Self::class`], whether the same call may succeed later (the proxy
    /// could not reach or use the model API, or was at capacity — not a
    /// rate limit it already waited out), and the wait the model API asked
    /// for, when it named one.
    pub fn into_status(self) -> Status {
        let retryable =
            matches!(self.code(), Code::Unavailable) || matches!(self, Self::AtCapacity { .. });
        let info = keel_proto::v1::ErrorInfo::new(self.class(), retryable)
            .with_retry_after(self.retry_after());
        info.into_status(self.code(), self.to_string())
    }

    /// The wait the model API asked for before a retry.
    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } => *retry_after,
            Self::RetryTooFarAway { wait, .. } => Some(*wait),
            Self::RetriesExhausted { last, .. } => last.retry_after(),
            _ => None,
        }
    }

    /// Maps an error code from `response.failed`, a stream error chunk or an
    /// HTTP error body (Codex: `codex-rs/codex-api/src/sse/responses.rs`, `codex-rs/core/src/client.rs`).
    pub fn from_code(code: &str, message: String) -> Self {
        match code {
            "context_length_exceeded" => Self::ContextWindowExceeded(message),
            "insufficient_quota" => Self::QuotaExceeded(message),
            "usage_limit_reached" => Self::UsageLimitReached(message),
            "invalid_prompt" => Self::InvalidPrompt(message),
            "server_is_overloaded" | "slow_down" => Self::Overloaded(message),
            "usage_not_included" => Self::UsageNotIncluded(message),
            "rate_limit_exceeded" => Self::RateLimited {
                retry_after: crate::retry::try_again_hint(&message),
                message,
            },
            _ => Self::ResponseFailed {
                code: code.to_string(),
                message,
            },
        }
    }
}

impl From<BlobError> for ProxyError {
    fn from(e: BlobError) -> Self {
        match e {
            BlobError::NotFound(d) => Self::BlobNotFound(d),
            BlobError::InvalidDigest(d) => Self::InvalidDigest(d),
            BlobError::Decode { digest, source } => Self::NotASegment {
                digest,
                reason: source.to_string(),
            },
            corrupt @ BlobError::Corrupt { .. } => Self::BlobCorrupt(corrupt.to_string()),
            BlobError::InvalidSessionKey(key) => Self::InvalidRequest(format!(
                "session_id {key:?} is not a session key (letters, digits, '.', '_', '-')"
            )),
            other => Self::BlobStore(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_codes_map_to_grpc_codes() {
        let cases = [
            ("context_length_exceeded", Code::OutOfRange),
            ("insufficient_quota", Code::ResourceExhausted),
            ("usage_limit_reached", Code::ResourceExhausted),
            ("invalid_prompt", Code::InvalidArgument),
            ("server_is_overloaded", Code::Unavailable),
            ("slow_down", Code::Unavailable),
            ("usage_not_included", Code::PermissionDenied),
            ("rate_limit_exceeded", Code::ResourceExhausted),
            ("", Code::Unavailable),
        ];
        for (code, want) in cases {
            let status = ProxyError::from_code(code, "vendor says".into()).into_status();
            assert_eq!(status.code(), want, "{code}");
            assert!(status.message().contains("vendor says"), "{code}");
        }
        let status = ProxyError::from_code("context_length_exceeded", "x".into()).into_status();
        assert!(status.message().starts_with("context window exceeded"));
    }

    #[test]
    fn retry_classes() {
        let rate = ProxyError::from_code("rate_limit_exceeded", "try again in 250ms".into());
        assert_eq!(
            rate.retry(),
            Retry::Stream {
                after: Some(Duration::from_millis(250))
            }
        );
        let server = ProxyError::ServerError {
            status: 502,
            body: String::new(),
        };
        assert_eq!(server.retry(), Retry::Request);
        assert_eq!(
            ProxyError::IdleTimeout.retry(),
            Retry::Stream { after: None }
        );
        for fatal in [
            ProxyError::from_code("insufficient_quota", String::new()),
            ProxyError::from_code("context_length_exceeded", String::new()),
            ProxyError::from_code("server_is_overloaded", String::new()),
            ProxyError::BadRequest {
                status: 400,
                message: String::new(),
            },
        ] {
            assert_eq!(fatal.retry(), Retry::Never, "{fatal}");
        }
        let spent = ProxyError::RetriesExhausted {
            retries: 5,
            last: Box::new(ProxyError::StreamClosed),
        };
        assert_eq!(spent.retry(), Retry::Never);
        let status = spent.into_status();
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(
            status.message(),
            "stream closed before response.completed (gave up after 5 retries)"
        );
        let quota = ProxyError::from_code("insufficient_quota", "q".into()).into_status();
        let rate = ProxyError::from_code("rate_limit_exceeded", "r".into()).into_status();
        assert_eq!(quota.code(), rate.code());
        assert_ne!(quota.message(), rate.message());
    }

    /// The class and retryability travel in the status: capacity is worth
    /// retrying later, a rate limit the proxy already waited out is not,
    /// though both are RESOURCE_EXHAUSTED.
    #[test]
    fn statuses_carry_their_class_and_retryability() {
        use keel_proto::v1::ErrorInfo;
        let info = |e: ProxyError| {
            let status = e.into_status();
            (status.code(), ErrorInfo::from_status(&status).unwrap())
        };
        let (code, capacity) = info(ProxyError::AtCapacity {
            provider: "openai".into(),
        });
        assert_eq!(code, Code::ResourceExhausted);
        assert_eq!(
            (capacity.class.as_str(), capacity.retryable),
            ("capacity", true)
        );
        let (code, spent) = info(ProxyError::RetriesExhausted {
            retries: 5,
            last: Box::new(ProxyError::from_code(
                "rate_limit_exceeded",
                "try again in 2s".into(),
            )),
        });
        assert_eq!(code, Code::ResourceExhausted);
        assert_eq!(
            (spent.class.as_str(), spent.retryable),
            ("rate_limited", false)
        );
        assert_eq!(spent.retry_after(), Some(Duration::from_secs(2)));
        let (_, cut) = info(ProxyError::StreamClosed);
        assert_eq!((cut.class.as_str(), cut.retryable), ("stream_closed", true));
        let (_, key) = info(ProxyError::InvalidApiKey);
        assert_eq!(
            (key.class.as_str(), key.retryable),
            ("unauthenticated", false)
        );
    }

    #[test]
    fn blob_errors_map_to_grpc_codes() {
        let d = "0".repeat(64);
        let s = ProxyError::from(BlobError::NotFound(d.clone())).into_status();
        assert_eq!(s.code(), Code::NotFound);
        assert!(s.message().contains(&d));
        let s = ProxyError::from(BlobError::InvalidDigest("x".into())).into_status();
        assert_eq!(s.code(), Code::InvalidArgument);
    }
}
