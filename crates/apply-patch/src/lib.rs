//! apply_patch, Codex's file-editing format (Codex: `codex-rs/apply-patch`),
//! as pure functions shared by the workflow (which must recognise a patch
//! arriving through a shell tool to put it to the patch decision) and the
//! tool-runner (which applies it):
//!
//! * [`parser`] turns the text into hunks;
//! * [`seek`] finds a chunk's lines in a file's text (the four matching
//!   passes);
//! * [`invocation`] recognises `apply_patch` run through a shell.
//!
//! Nothing here touches the filesystem; the tool-runner's `patch` module
//! verifies and writes.

pub mod invocation;
pub mod parser;
pub mod seek;

pub use invocation::{IMPLICIT_INVOCATION, Invocation, classify};
pub use parser::{Chunk, Hunk, ParseError, parse_patch};
