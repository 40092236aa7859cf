//! The reference MCP servers the tests run, installed from npm by
//! `scripts/test` (never vendored): `KEEL_MCP_SERVERS` names the
//! `node_modules` directory that holds them.

use std::path::PathBuf;

/// The pinned version of the npm packages `scripts/test` installs.
pub const VERSION: &str = "2026.8.31";

fn node_modules() -> PathBuf {
    match std::env::var_os("KEEL_MCP_SERVERS") {
        Some(dir) => PathBuf::from(dir),
        None => panic!(
            "KEEL_MCP_SERVERS is not set: run the tests with scripts/test, which installs \
             @modelcontextprotocol/server-everything and server-filesystem {VERSION} from npm \
             and sets it"
        ),
    }
}

fn script(package: &str) -> PathBuf {
    let path = node_modules()
        .join("@modelcontextprotocol")
        .join(package)
        .join("dist/index.js");
    assert!(
        path.is_file(),
        "{} is missing: run scripts/test to install the MCP servers",
        path.display()
    );
    path
}

/// `node <server-everything> <transport>` (`stdio` or `streamableHttp`).
pub fn everything() -> (String, Vec<String>) {
    (
        "node".into(),
        vec![
            script("server-everything").display().to_string(),
            "stdio".into(),
        ],
    )
}

/// `node <server-filesystem> <dir>`: read and write access under `dir`.
pub fn filesystem(dir: &std::path::Path) -> (String, Vec<String>) {
    (
        "node".into(),
        vec![
            script("server-filesystem").display().to_string(),
            dir.display().to_string(),
        ],
    )
}

/// The `@modelcontextprotocol/sdk` package beside the servers, for test
/// servers written as small Node scripts.
pub fn sdk_dir() -> PathBuf {
    node_modules().join("@modelcontextprotocol").join("sdk")
}

/// A `[mcp_servers.<name>]` table for a stdio server.
pub fn stdio_table(name: &str, command: &str, args: &[String], extra: &str) -> String {
    let args: Vec<String> = args.iter().map(|a| format!("{a:?}")).collect();
    format!(
        "[mcp_servers.{name}]\ncommand = {command:?}\nargs = [{}]\n{extra}\n",
        args.join(", ")
    )
}
