//! What both wire APIs have in common: the request a call sends (built once,
//! re-sent on every retry) and the events the proxy acts on. Chat
//! Completions streams are turned into the same events, with Responses API
//! items, so nothing past this module knows which API a provider speaks.

use bytes::Bytes;
use keel_proto::v1::TokenUsage;
use serde_json::{Map, Value};

use crate::chat::{ChatRequest, ChatStream};
use crate::config::WireApi;
use crate::controls::CallControls;
use crate::error::ProxyError;
use crate::responses::{ResponsesRequest, ResponsesStream};
use crate::sse::SseReader;

/// The inputs of one model call, before they take a wire API's shape.
#[derive(Debug)]
pub struct Prompt {
    pub session_id: String,
    pub model: String,
    pub instructions: String,
    /// Responses API items: ephemeral ones, then the stored conversation.
    pub input: Vec<Value>,
    /// Responses API tool JSON.
    pub tools: Vec<Value>,
    pub parallel_tool_calls: bool,
    pub controls: CallControls,
}

/// The JSON body for `wire`.
pub fn body(wire: WireApi, prompt: Prompt) -> Result<Bytes, ProxyError> {
    let bytes = match wire {
        WireApi::Responses => serde_json::to_vec(&ResponsesRequest::new(prompt)),
        WireApi::Chat => serde_json::to_vec(&ChatRequest::new(prompt)?),
    };
    bytes
        .map(Bytes::from)
        .map_err(|e| ProxyError::InvalidRequest(format!("cannot encode the request: {e}")))
}

/// What the proxy acts on; every other vendor event is ignored.
#[derive(Debug, Clone, PartialEq)]
pub enum ResponseEvent {
    OutputTextDelta {
        item_id: String,
        delta: String,
    },
    ReasoningSummaryDelta {
        item_id: String,
        summary_index: u32,
        delta: String,
    },
    ReasoningTextDelta {
        item_id: String,
        content_index: u32,
        delta: String,
    },
    /// The authoritative item, as a Responses API item.
    OutputItemDone(Map<String, Value>),
    Completed {
        response_id: String,
        model: Option<String>,
        usage: TokenUsage,
    },
}

/// A streaming response of either wire API.
pub enum EventStream {
    Responses(ResponsesStream),
    Chat(Box<ChatStream>),
}

impl EventStream {
    pub fn new(wire: WireApi, sse: SseReader) -> Self {
        match wire {
            WireApi::Responses => Self::Responses(ResponsesStream::new(sse)),
            WireApi::Chat => Self::Chat(Box::new(ChatStream::new(sse))),
        }
    }

    /// The next event. Call no more after `Completed` or an error.
    pub async fn next(&mut self) -> Result<ResponseEvent, ProxyError> {
        match self {
            Self::Responses(s) => s.next().await,
            Self::Chat(s) => s.next().await,
        }
    }
}

/// An unsigned count from JSON; absent, null or negative counts as 0.
pub(crate) fn count(v: Option<&Value>) -> u64 {
    v.and_then(Value::as_u64).unwrap_or(0)
}

/// A string field of a JSON object.
pub(crate) fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_string)
}
