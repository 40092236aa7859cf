//! Keel's tool-runner: runs what the model asks for on the session's
//! workspace and answers with exactly the text Codex would have produced.
//!
//! * [`exec`] runs one process group to completion (timeout, output caps,
//!   secret-free environment, kill on cancel);
//! * [`format`] holds Codex's truncation and shell output layouts, as pure
//!   functions;
//! * [`tools`] parses a model tool call and turns it into one output text;
//! * [`service`] is the `keel.v1.ToolService` gRPC surface.

pub mod exec;
pub mod format;
pub mod service;
pub mod tools;

pub use service::{SERVICE_NAME, ToolRunner};
