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

/// Writes a stdio MCP server (Node, on the SDK beside the servers) with one
/// tool, `slow_write`, that is neither read-only nor idempotent: each call
/// appends a line to `runs` at once, then answers "written" after
/// `millis`. Returns the script's path, for `node <script>`.
pub fn slow_server(
    dir: &std::path::Path,
    runs: &std::path::Path,
    millis: u64,
) -> std::io::Result<PathBuf> {
    let sdk = sdk_dir();
    let script = dir.join("slow-server.mjs");
    let text = format!(
        r#"
import {{ McpServer }} from "{sdk}/dist/esm/server/mcp.js";
import {{ StdioServerTransport }} from "{sdk}/dist/esm/server/stdio.js";
import {{ appendFileSync }} from "node:fs";
const server = new McpServer({{ name: "slow", version: "1.0.0" }});
server.registerTool("slow_write", {{ description: "writes slowly",
  annotations: {{ readOnlyHint: false, idempotentHint: false }} }}, async () => {{
  appendFileSync({runs:?}, "run\n");
  await new Promise((r) => setTimeout(r, {millis}));
  return {{ content: [{{ type: "text", text: "written" }}] }};
}});
await server.connect(new StdioServerTransport());
"#,
        sdk = sdk.display(),
        runs = runs.display().to_string(),
    );
    std::fs::write(&script, text)?;
    Ok(script)
}

/// Pids of processes whose environment holds `KEEL_TEST_MARK=<mark>` (a
/// server configured with `env = { KEEL_TEST_MARK = "<mark>" }`).
pub fn marked_pids(mark: &str) -> Vec<i32> {
    let needle = format!("KEEL_TEST_MARK={mark}");
    let mut pids = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(env) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if env.split(|b| *b == 0).any(|v| v == needle.as_bytes()) {
            pids.push(pid);
        }
    }
    pids
}
