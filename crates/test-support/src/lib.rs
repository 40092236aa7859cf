//! Test support for Keel's end-to-end tests: a scripted fake of the OpenAI
//! Responses API ([`fake_model`]) that the model-proxy can be pointed at, and a
//! whole Keel stack as real processes ([`stack`]).

pub mod fake_model;
pub mod history;
pub mod mcp;
pub mod measure;
pub mod otlp;
pub mod session;
pub mod stack;
