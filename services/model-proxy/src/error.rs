//! Every way a model call can fail, and the one place each becomes a gRPC
//! status (the classes in `model.proto` and Codex's error handling, §9.2–9.3).

use keel_blobstore::BlobError;
use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    // The request itself.
    #[error("no API key configured: set OPENAI_API_KEY for the model-proxy")]
    NoApiKey,
    #[error("the configured API key contains characters not allowed in an HTTP header")]
    InvalidApiKey,
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("blob {0} not found")]
    BlobNotFound(String),
    #[error("invalid blob digest {0:?}: expected 64 lowercase hex characters")]
    InvalidDigest(String),
    #[error("blob {digest} is not a conversation segment: {reason}")]
    NotASegment { digest: String, reason: String },
    #[error("blob store error: {0}")]
    BlobStore(String),

    // HTTP status before streaming.
    #[error("the model API rejected the API key (HTTP {status}): {body}")]
    Unauthorized { status: u16, body: String },
    #[error("the model API rejected the request (HTTP 400): {message}")]
    BadRequest { message: String },
    #[error("the model API returned HTTP 404 (unknown model or endpoint?): {body}")]
    NotFound { body: String },
    #[error("the model API's rate limit or quota was hit (HTTP 429): {body}")]
    RateLimited { body: String },
    #[error("the model API failed (HTTP {status}): {body}")]
    ServerError { status: u16, body: String },
    #[error("cannot reach the model API: {0}")]
    Transport(String),

    // `response.failed`, by `error.code`.
    #[error("context window exceeded: {0}")]
    ContextWindowExceeded(String),
    #[error("quota exceeded: {0}")]
    QuotaExceeded(String),
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
}

impl ProxyError {
    /// The gRPC status the worker sees. UNAVAILABLE marks what is worth retrying.
    pub fn into_status(self) -> Status {
        let code = match &self {
            Self::NoApiKey | Self::InvalidApiKey | Self::Unauthorized { .. } => {
                Code::Unauthenticated
            }
            Self::InvalidRequest(_)
            | Self::InvalidDigest(_)
            | Self::NotASegment { .. }
            | Self::BadRequest { .. }
            | Self::InvalidPrompt(_) => Code::InvalidArgument,
            Self::BlobNotFound(_) | Self::NotFound { .. } => Code::NotFound,
            Self::RateLimited { .. } | Self::QuotaExceeded(_) => Code::ResourceExhausted,
            Self::ContextWindowExceeded(_) => Code::OutOfRange,
            Self::UsageNotIncluded(_) => Code::PermissionDenied,
            Self::BlobStore(_)
            | Self::ServerError { .. }
            | Self::Transport(_)
            | Self::Overloaded(_)
            | Self::ResponseFailed { .. }
            | Self::Incomplete(_)
            | Self::StreamClosed
            | Self::IdleTimeout
            | Self::Stream(_) => Code::Unavailable,
        };
        Status::new(code, self.to_string())
    }

    /// Maps a `response.failed` error code (§9.2).
    pub fn from_failed(code: &str, message: String) -> Self {
        match code {
            "context_length_exceeded" => Self::ContextWindowExceeded(message),
            "insufficient_quota" => Self::QuotaExceeded(message),
            "invalid_prompt" => Self::InvalidPrompt(message),
            "server_is_overloaded" | "slow_down" => Self::Overloaded(message),
            "usage_not_included" => Self::UsageNotIncluded(message),
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
            ("invalid_prompt", Code::InvalidArgument),
            ("server_is_overloaded", Code::Unavailable),
            ("slow_down", Code::Unavailable),
            ("usage_not_included", Code::PermissionDenied),
            ("rate_limit_exceeded", Code::Unavailable),
            ("", Code::Unavailable),
        ];
        for (code, want) in cases {
            let status = ProxyError::from_failed(code, "vendor says".into()).into_status();
            assert_eq!(status.code(), want, "{code}");
            assert!(status.message().contains("vendor says"), "{code}");
        }
        let status = ProxyError::from_failed("context_length_exceeded", "x".into()).into_status();
        assert!(status.message().starts_with("context window exceeded"));
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
