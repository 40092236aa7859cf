//! The SessionService implementation. Each session is one `AgentWorkflow`
//! (workflow id `keel-session-<id>`); this crate only speaks to Temporal as a
//! client, through the contract in `keel-workflow-api`.

mod errors;
mod feed;
mod service;

pub use service::{SessionApi, SessionLimits};
