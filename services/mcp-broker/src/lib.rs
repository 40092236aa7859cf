//! keel-mcp-broker: the sessions' MCP client connections, as a gRPC service
//! the worker calls (`keel.v1.McpBrokerService`).
//!
//! * [`config`]: the operator's servers, Codex's `[mcp_servers.<name>]`;
//! * [`names`]: the `mcp__<server>__<tool>` names the model sees;
//! * [`output`]: a `CallToolResult` as the `function_call_output` the model
//!   gets;
//! * [`pool`]: connections per (session, server), started on first use,
//!   restarted with back-off, reaped when idle;
//! * [`calls`]: calls in flight, and those waiting for the user's answer
//!   to a server's question;
//! * [`http`]: the HTTP client under streamable HTTP connections;
//! * [`service`]: the gRPC service.

pub mod calls;
pub mod config;
pub mod http;
pub mod names;
pub mod output;
pub mod pool;
pub mod service;
