//! The SessionService implementation. Each session is one `AgentWorkflow`
//! (workflow id `keel-session-<id>`); this crate only speaks to Temporal as a
//! client, through the contract in `keel-workflow-api`.

mod archive;
mod errors;
mod events;
mod hub;
mod limits;
mod live;
pub mod metrics;
mod options;
mod requests;
mod service;
mod settings;

pub use limits::TenantLimits;
pub use live::LiveApi;
pub use service::{MAX_REQUEST_BYTES, SessionApi, SessionLimits};
