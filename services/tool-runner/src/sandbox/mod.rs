//! The sandbox: policies, writable roots, the confinement and its helper
//! come from the keel-sandbox crate; the tool-runner adds the [`job`]s its
//! file tools and patches run inside the confinement.

pub use keel_sandbox::*;
pub mod job;
