//! Chat Completions (`wire_api = "chat"`, Codex's `codex-rs/core/src/chat_completions.rs`), kept by Keel for servers
//! that do not speak the Responses API (Ollama, vLLM, most proxies). The
//! conversation stays in Responses API items; this module translates both
//! ways at the edge.

mod request;
mod stream;

pub(crate) use request::ChatRequest;
pub(crate) use stream::ChatStream;
