//! Keel's model-proxy: the only process that talks to model vendors and holds
//! their API keys. It serves `keel.v1.ModelService`, reading and extending
//! conversations in the blob store so requests carry digests, not histories.

pub mod config;
pub mod error;
mod items;
pub mod prompt;
pub mod responses;
pub mod service;

pub use config::{ApiKey, Config};
pub use error::ProxyError;
pub use service::{ModelProxy, SERVICE_NAME};
