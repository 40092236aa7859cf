//! Keel's Temporal worker: the session workflow ([`workflow::AgentWorkflow`])
//! and thin activities that call Keel's services over gRPC. No HTTP clients,
//! no process spawning, no secrets live here.

pub mod activities;
pub mod affinity;
pub mod balanced;
pub mod context;
pub mod events;
pub mod notices;
pub mod orphans;
pub mod runners;
pub mod session_apis;
pub(crate) mod targets;
pub mod tools;
pub mod workflow;
