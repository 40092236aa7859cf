//! Keel's tool-runner: runs what the model asks for on the session's
//! workspace and answers with exactly the text Codex would have produced.
//!
//! * [`exec`] starts commands (in one place, [`exec::Executor::spawn`]):
//!   run-to-completion with timeout and output caps, or long-running for
//!   unified exec, in their own process groups (recorded, so that a
//!   restart kills what a crash left running) with the operator's
//!   environment policy (secrets dropped by default) and resource limits;
//! * `keel_paths::Workspace` decides which paths may be touched;
//! * [`format`] holds Codex's truncation and output layouts, as pure
//!   functions;
//! * [`patch`] is the apply_patch format: parsing, matching, applying;
//! * [`tools`] parses a model tool call and turns it into one output, and
//!   defines the tools' Responses API specs;
//! * [`context`] gathers AGENTS.md, the environment context and git facts;
//! * [`calls`] makes every tool call happen once per (session id, call id,
//!   attempt): the execution registry and the on-disk journal;
//! * [`sandbox`] confines commands (Landlock, seccomp, read-only binds) and
//!   the tool-runner's own writes to a call's sandbox policy;
//! * [`clone`] makes a session's workspace from a git repository;
//! * [`fleet`] is this runner's place among many: its id, leases, limit
//!   on concurrent commands, and draining;
//! * [`service`] is the `keel.v1.ToolService` gRPC surface.

pub mod calls;
pub mod clone;
pub mod context;
pub mod exec;
pub mod fleet;
pub mod format;
pub mod metrics;
pub mod patch;
pub mod sandbox;
pub mod service;
pub mod tools;

pub use service::{DEFAULT_JOURNAL_RETENTION, SERVICE_NAME, ToolRunner, ToolRunnerConfig};
