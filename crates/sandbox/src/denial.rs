//! Codex's rule for a sandbox denial: the tool model's, shared with the
//! workflow's policy crate so that one list of markers decides.

pub use keel_tool_model::is_sandbox_denial;
