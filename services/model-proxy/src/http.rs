//! The one HTTP client every provider shares, one streamed POST with Codex's
//! request-level retries (HTTP 5xx and connection errors, silently, with
//! backoff), and vendor error answers turned into [`ProxyError`]s.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{Response, Url};
use serde_json::Value;

use crate::config::{Provider, RetryTiming};
use crate::error::{ProxyError, Retry};
use crate::retry;

/// Idle connections kept per vendor host: enough for bursts, bounded so a
/// spike does not leave hundreds of sockets open. In-flight connections are
/// bounded by the per-provider concurrency limit.
const POOL_MAX_IDLE_PER_HOST: usize = 32;

/// The shared client; cheap to clone.
#[derive(Debug, Clone)]
pub struct VendorClient {
    http: reqwest::Client,
}

/// One request to send, possibly several times.
pub struct Outgoing<'a> {
    pub provider: &'a Provider,
    pub url: &'a Url,
    pub body: Bytes,
    pub session_id: &'a str,
}

impl VendorClient {
    pub fn new() -> Result<Self, ProxyError> {
        // reqwest is built without a default TLS provider; make sure one is
        // installed (main does this too; a second install is a no-op error).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| ProxyError::Transport(error_chain(&e.without_url())))?;
        Ok(Self { http })
    }

    /// Sends `out` until the vendor answers 2xx, retrying HTTP 5xx and
    /// connection errors up to the provider's `request_max_retries`;
    /// `on_retry` hears about each retried failure. Other failures, and the
    /// last retryable one, are returned.
    pub async fn send(
        &self,
        out: &Outgoing<'_>,
        timing: &RetryTiming,
        on_retry: &mut (dyn FnMut(&ProxyError, u32) + Send),
    ) -> Result<Response, ProxyError> {
        let headers = headers(out)?;
        let mut retries = 0;
        loop {
            let err = match self.send_once(out, headers.clone()).await {
                Ok(resp) => return Ok(resp),
                Err(e) => e,
            };
            if err.retry() != Retry::Request || retries >= out.provider.request_max_retries {
                return Err(err);
            }
            retries += 1;
            on_retry(&err, retries);
            tokio::time::sleep(retry::backoff(timing, retries)).await;
        }
    }

    async fn send_once(
        &self,
        out: &Outgoing<'_>,
        headers: HeaderMap,
    ) -> Result<Response, ProxyError> {
        let timeout = out.provider.stream_idle_timeout;
        let send = self
            .http
            .post(out.url.clone())
            .headers(headers)
            .body(out.body.clone())
            .send();
        let resp = tokio::time::timeout(timeout, send)
            .await
            .map_err(|_| {
                ProxyError::Transport(format!("no response within {} ms", timeout.as_millis()))
            })?
            .map_err(|e| ProxyError::Transport(error_chain(&e.without_url())))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry::parse_retry_after(v, SystemTime::now()));
        let body = read_error_body(resp, timeout).await;
        Err(status_error(
            status.as_u16(),
            &body,
            retry_after,
            out.provider,
        ))
    }
}

/// The request URL: `{base_url}/{path}` plus the provider's query params.
pub fn endpoint(provider: &Provider) -> Result<Url, ProxyError> {
    let text = format!(
        "{}/{}",
        provider.base_url.trim_end_matches('/'),
        provider.wire_api.path()
    );
    let mut url = Url::parse(&text).map_err(|e| {
        ProxyError::InvalidRequest(format!("provider {}: bad base_url: {e}", provider.id))
    })?;
    if !provider.query_params.is_empty() {
        url.query_pairs_mut().extend_pairs(&provider.query_params);
    }
    Ok(url)
}

fn headers(out: &Outgoing<'_>) -> Result<HeaderMap, ProxyError> {
    let mut headers = out.provider.headers.clone();
    if let Some(key) = &out.provider.api_key {
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", key.expose()))
            .map_err(|_| ProxyError::InvalidApiKey)?;
        auth.set_sensitive(true);
        headers.insert(AUTHORIZATION, auth);
    }
    let session = HeaderValue::from_str(out.session_id).map_err(|_| {
        ProxyError::InvalidRequest("session_id must be a valid HTTP header value".into())
    })?;
    headers.insert("session_id", session);
    headers.insert("originator", HeaderValue::from_static("keel"));
    headers.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(headers)
}

/// The error for a non-2xx answer (Codex: `codex-rs/core/src/client.rs`), with the vendor's message when
/// its body is the usual `{"error":{"message","code"}}`, else an excerpt.
pub(crate) fn status_error(
    status: u16,
    body: &str,
    retry_after: Option<Duration>,
    provider: &Provider,
) -> ProxyError {
    let json = serde_json::from_str::<Value>(body).ok();
    let error = json.as_ref().and_then(|v| v.get("error"));
    let message = error
        .and_then(|e| e.get("message").or(Some(e)))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| excerpt(body, 1024));
    let body = if message.is_empty() {
        "(empty body)".to_string()
    } else {
        message
    };
    let code = |key: &str| error.and_then(|e| e.get(key)).and_then(Value::as_str);
    let class = code("code").or(code("type")).unwrap_or_default();
    match (status, class) {
        (401 | 403, _) => ProxyError::Unauthorized {
            status,
            body,
            hint: provider.env_key.as_ref().map(|k| format!("check {k}")),
        },
        (_, "context_length_exceeded" | "insufficient_quota" | "usage_limit_reached")
        | (_, "usage_not_included" | "invalid_prompt" | "server_is_overloaded" | "slow_down") => {
            ProxyError::from_code(class, body)
        }
        (429, _) => ProxyError::RateLimited {
            retry_after: retry_after.or_else(|| retry::try_again_hint(&body)),
            message: format!("HTTP 429: {body}"),
        },
        (400 | 413 | 415 | 422, _) => ProxyError::BadRequest {
            status,
            message: body,
        },
        (404, _) => ProxyError::NotFound { body },
        _ => ProxyError::ServerError { status, body },
    }
}

/// Reads at most 64 KiB of an error body; a body that fails to arrive is
/// reported as what arrived so far.
async fn read_error_body(mut resp: Response, timeout: Duration) -> String {
    const LIMIT: usize = 64 * 1024;
    let mut body = Vec::new();
    while body.len() < LIMIT {
        match tokio::time::timeout(timeout, resp.chunk()).await {
            Ok(Ok(Some(chunk))) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

/// `text` cut to at most `max` bytes at a char boundary, trimmed.
pub(crate) fn excerpt(text: &str, max: usize) -> String {
    let text = text.trim();
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// An error and its causes, `outer: inner: innermost`.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use tonic::Code;

    use super::*;
    use crate::config::WireApi;

    fn openai() -> Provider {
        let mut p = Provider::new("openai", "OpenAI", "http://x/v1", WireApi::Responses);
        p.env_key = Some("OPENAI_API_KEY".into());
        p
    }

    fn err(status: u16, body: &str) -> ProxyError {
        status_error(status, body, None, &openai())
    }

    fn body(code: &str, message: &str) -> String {
        serde_json::json!({"error": {"message": message, "type": code, "code": code}}).to_string()
    }

    #[test]
    fn http_statuses_map_to_errors() {
        let e = err(
            404,
            &body("model_not_found", "The model `nope` does not exist"),
        );
        assert_eq!(e.into_status().code(), Code::NotFound);
        let s = err(400, r#"{"error":{"message":"bad tools"}}"#).into_status();
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(s.message().contains("bad tools"));
        let s = err(403, "").into_status();
        assert_eq!(s.code(), Code::Unauthenticated);
        assert!(s.message().ends_with("(check OPENAI_API_KEY)"), "{s:?}");
        assert_eq!(err(503, "<html>").into_status().code(), Code::Unavailable);
        assert_eq!(err(503, "<html>").retry(), Retry::Request);
        assert!(err(500, "").to_string().contains("(empty body)"));
        assert_eq!(
            err(400, &body("context_length_exceeded", "too long"))
                .into_status()
                .code(),
            Code::OutOfRange
        );
        let overloaded = err(503, &body("server_is_overloaded", "busy"));
        assert_eq!(overloaded.retry(), Retry::Never);
        assert_eq!(
            err(404, r#"{"error":"model 'llama9' not found"}"#).to_string(),
            "the model API returned HTTP 404 (unknown model or endpoint?): model 'llama9' not found",
            "ollama's string errors"
        );
    }

    #[test]
    fn http_429_classes() {
        let rate = status_error(
            429,
            &body("rate_limit_exceeded", "Please try again in 120ms."),
            None,
            &openai(),
        );
        assert_eq!(
            rate.retry(),
            Retry::Stream {
                after: Some(Duration::from_millis(120))
            }
        );
        let header_wins = status_error(
            429,
            &body("rate_limit_exceeded", "try again in 1s"),
            Some(Duration::from_secs(7)),
            &openai(),
        );
        assert_eq!(
            header_wins.retry(),
            Retry::Stream {
                after: Some(Duration::from_secs(7))
            }
        );
        for (code, class) in [
            ("insufficient_quota", "quota_exceeded"),
            ("usage_limit_reached", "usage_limit_reached"),
            ("usage_not_included", "usage_not_included"),
        ] {
            let e = err(429, &body(code, "no"));
            assert_eq!(e.retry(), Retry::Never, "{code}");
            assert_eq!(e.class(), class);
        }
    }

    #[test]
    fn endpoint_appends_path_and_query() {
        let mut p = openai();
        p.base_url = "https://h.example/openai/".into();
        p.query_params = vec![("api-version".into(), "2025-04-01".into())];
        assert_eq!(
            endpoint(&p).unwrap().as_str(),
            "https://h.example/openai/responses?api-version=2025-04-01"
        );
        p.wire_api = WireApi::Chat;
        p.query_params.clear();
        assert_eq!(
            endpoint(&p).unwrap().as_str(),
            "https://h.example/openai/chat/completions"
        );
    }

    #[test]
    fn excerpt_cuts_at_char_boundaries() {
        assert_eq!(excerpt("  short ", 10), "short");
        assert_eq!(excerpt("ééé", 3), "é…");
    }
}
