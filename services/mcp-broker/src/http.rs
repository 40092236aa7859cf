//! The HTTP client under streamable HTTP connections: rmcp's reqwest client,
//! except that a server which has forgotten the session is recognised even
//! when it does not answer 404.
//!
//! The MCP specification has a server answer 404 to a request whose
//! `Mcp-Session-Id` it does not know (basic/transports, "Session
//! Management"), and rmcp then opens a new session and sends the request
//! again (`StreamableHttpClientTransportConfig::reinit_on_expired_session`).
//! Servers built on the TypeScript SDK's example routing, server-everything
//! among them (`src/everything/transports/streamableHttp.ts` in
//! modelcontextprotocol/servers), answer 400 with a JSON-RPC error that has
//! no request id ("Bad Request: No valid session ID provided") instead.
//! rmcp cannot route an error without an id to a request, so it drops it and
//! the request would wait until its timeout. An error without an id, sent in
//! answer to a request made in a session, means the server did not read the
//! request; this client reports it as the session having expired, so rmcp
//! re-initialises and sends the request once more. No request runs twice:
//! the server rejected it before handling it.

use std::collections::HashMap;
use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use rmcp::model::{ClientJsonRpcMessage, JsonRpcError, ServerJsonRpcMessage};
use rmcp::transport::common::client_side_sse::BoxedSseResponse;
use rmcp::transport::streamable_http_client::{
    StreamableHttpClient, StreamableHttpError, StreamableHttpPostResponse,
    StreamableHttpResponseLimits,
};

/// Redirects followed per request, as rmcp's own client does.
const MAX_REDIRECTS: usize = 10;

type PostResult = Result<StreamableHttpPostResponse, StreamableHttpError<reqwest::Error>>;

/// See the module documentation.
#[derive(Clone)]
pub struct SessionAwareClient(reqwest::Client);

impl SessionAwareClient {
    /// The client rmcp builds for itself: no idle connection pool (a reused
    /// connection whose last body was not read stalls on delayed ACKs), and
    /// only same-origin 307/308 redirects, which keep the method and body and
    /// do not hand the session id or headers to another host.
    pub fn new() -> Result<Self, reqwest::Error> {
        let redirects = reqwest::redirect::Policy::custom(|attempt| {
            let same_origin = attempt
                .previous()
                .first()
                .is_some_and(|first| first.origin() == attempt.url().origin());
            let keeps_body = matches!(
                attempt.status(),
                reqwest::StatusCode::TEMPORARY_REDIRECT | reqwest::StatusCode::PERMANENT_REDIRECT
            );
            if same_origin && keeps_body && attempt.previous().len() <= MAX_REDIRECTS {
                attempt.follow()
            } else {
                attempt.stop()
            }
        });
        reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .redirect(redirects)
            .build()
            .map(Self)
    }
}

/// An answer without a request id to a request sent in a session becomes
/// [`StreamableHttpError::SessionExpired`].
fn forgotten_session(
    message: &ClientJsonRpcMessage,
    session: bool,
    result: PostResult,
) -> PostResult {
    match result {
        Ok(StreamableHttpPostResponse::Json(
            ServerJsonRpcMessage::Error(JsonRpcError {
                id: None, error, ..
            }),
            _,
        )) if session && matches!(message, ClientJsonRpcMessage::Request(_)) => {
            tracing::info!(error = %error.message, "the MCP server rejected a request in its session without naming it; taking the session as expired");
            Err(StreamableHttpError::SessionExpired)
        }
        other => other,
    }
}

impl StreamableHttpClient for SessionAwareClient {
    type Error = reqwest::Error;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> PostResult {
        let session = session_id.is_some();
        let result = self
            .0
            .post_message(
                uri,
                message.clone(),
                session_id,
                auth_header,
                custom_headers,
            )
            .await;
        forgotten_session(&message, session, result)
    }

    async fn post_message_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> PostResult {
        let session = session_id.is_some();
        let result = self
            .0
            .post_message_with_max_sse_event_size(
                uri,
                message.clone(),
                session_id,
                auth_header,
                custom_headers,
                max_sse_event_size,
            )
            .await;
        forgotten_session(&message, session, result)
    }

    async fn post_message_with_response_limits(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        limits: StreamableHttpResponseLimits,
    ) -> PostResult {
        let session = session_id.is_some();
        let result = self
            .0
            .post_message_with_response_limits(
                uri,
                message.clone(),
                session_id,
                auth_header,
                custom_headers,
                limits,
            )
            .await;
        forgotten_session(&message, session, result)
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<(), StreamableHttpError<Self::Error>> {
        self.0
            .delete_session(uri, session_id, auth_header, custom_headers)
            .await
    }

    async fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<BoxedSseResponse, StreamableHttpError<Self::Error>> {
        self.0
            .get_stream(uri, session_id, last_event_id, auth_header, custom_headers)
            .await
    }

    async fn get_stream_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<BoxedSseResponse, StreamableHttpError<Self::Error>> {
        self.0
            .get_stream_with_max_sse_event_size(
                uri,
                session_id,
                last_event_id,
                auth_header,
                custom_headers,
                max_sse_event_size,
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn client(message: serde_json::Value) -> ClientJsonRpcMessage {
        serde_json::from_value(message).unwrap()
    }

    fn answer(message: serde_json::Value) -> PostResult {
        Ok(StreamableHttpPostResponse::Json(
            serde_json::from_value(message).unwrap(),
            None,
        ))
    }

    fn call() -> ClientJsonRpcMessage {
        client(
            json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "echo"}}),
        )
    }

    fn expired(result: &PostResult) -> bool {
        matches!(result, Err(StreamableHttpError::SessionExpired))
    }

    #[test]
    fn an_error_without_an_id_to_a_request_in_a_session_is_an_expired_session() {
        let rejected = json!({"jsonrpc": "2.0", "error": {"code": -32000, "message": "Bad Request: No valid session ID provided"}});
        assert!(expired(&forgotten_session(
            &call(),
            true,
            answer(rejected.clone())
        )));
        // The TypeScript SDK's README example answers `"id": null`.
        let mut null_id = rejected.clone();
        null_id["id"] = serde_json::Value::Null;
        assert!(expired(&forgotten_session(&call(), true, answer(null_id))));
        // Without a session there is nothing to re-initialise.
        assert!(!expired(&forgotten_session(
            &call(),
            false,
            answer(rejected.clone())
        )));
        // A notification waits for no answer.
        let note = client(
            json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 7}}),
        );
        assert!(!expired(&forgotten_session(&note, true, answer(rejected))));
    }

    #[test]
    fn an_error_naming_the_request_is_the_requests_answer() {
        let failed = json!({"jsonrpc": "2.0", "id": 7, "error": {"code": -32602, "message": "unknown tool"}});
        let result = forgotten_session(&call(), true, answer(failed));
        assert!(matches!(
            result,
            Ok(StreamableHttpPostResponse::Json(
                ServerJsonRpcMessage::Error(JsonRpcError { id: Some(_), .. }),
                _
            ))
        ));
    }
}
