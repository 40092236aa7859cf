//! Keel's model-proxy: the only process that talks to model vendors and holds
//! their API keys. It serves `keel.v1.ModelService`, reading and extending
//! conversations in the blob store so requests carry digests, not histories.
//!
//! A call goes: [`service`] (provider, capacity, conversation) → [`call`]
//! (attempts and retries) → [`http`] (the shared client, request retries)
//! → [`wire`] (Responses API or Chat Completions, both as Responses events).

mod call;
pub mod capacity;
pub mod catalog;
mod chat;
mod compact;
pub mod config;
pub mod controls;
pub mod error;
pub mod http;
mod items;
pub mod metrics;
pub mod prompt;
pub mod ratelimits;
pub mod responses;
pub mod retry;
pub mod service;
mod sse;
pub mod wire;

pub use config::{ApiKey, Config, Provider, WireApi};
pub use error::ProxyError;
pub use metrics::Metrics;
pub use service::{ModelProxy, SERVICE_NAME};
