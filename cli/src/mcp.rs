//! `keel mcp list`: a session's MCP servers (as its first turn found them:
//! running, or failed and why) and the tools it offers from them. The
//! servers themselves are the operator's, configured in the mcp-broker's
//! config.toml; a session names the ones it uses at creation
//! (`CreateSessionRequest.mcp_servers`; all enabled ones by default).

use anyhow::Result;
use clap::{Args, Subcommand};
use keel_proto::v1::{McpServerState, McpTool, Session};
use serde_json::{Value, json};

use crate::client::SessionApi;
use crate::control::{get_session, write_out};
use crate::render::table;

#[derive(Debug, Subcommand)]
pub(crate) enum McpCommand {
    /// List a session's MCP servers and tools.
    List(ListArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    session: String,
    /// Print one JSON object (`servers`, `tools`) instead of tables.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(mut api: SessionApi, command: McpCommand) -> Result<()> {
    let McpCommand::List(args) = command;
    let session = get_session(&mut api, &args.session).await?;
    let text = if args.json {
        format!("{}\n", list_json(&session))
    } else {
        list_text(&session)
    };
    write_out(&text)
}

fn state_name(state: i32) -> &'static str {
    match McpServerState::try_from(state) {
        Ok(McpServerState::Running) => "running",
        Ok(McpServerState::Failed) => "failed",
        Ok(McpServerState::Disabled) => "disabled",
        Ok(McpServerState::NotStarted) => "not started",
        _ => "unknown",
    }
}

/// What a tool's annotations say, in a few words.
fn hints(t: &McpTool) -> String {
    let Some(a) = &t.annotations else {
        return "no annotations".into();
    };
    let mut words = Vec::new();
    if a.read_only_hint == Some(true) {
        words.push("read-only");
    }
    if a.destructive_hint == Some(true) {
        words.push("destructive");
    }
    if a.idempotent_hint == Some(true) {
        words.push("idempotent");
    }
    if a.open_world_hint == Some(true) {
        words.push("open-world");
    }
    if words.is_empty() {
        "-".into()
    } else {
        words.join(", ")
    }
}

fn list_text(s: &Session) -> String {
    if s.mcp_servers.is_empty() {
        return format!(
            "session {} has no MCP servers (none configured, or its first turn has not run yet)\n",
            s.session_id
        );
    }
    let mut rows = vec![[
        "SERVER".to_string(),
        "STATE".into(),
        "TOOLS".into(),
        "TRANSPORT / ERROR".into(),
    ]];
    for m in &s.mcp_servers {
        let detail = if m.error.is_empty() {
            m.transport.clone()
        } else {
            format!("{}: {}", m.transport, m.error)
        };
        rows.push([
            m.name.clone(),
            state_name(m.state).into(),
            m.tool_count.to_string(),
            detail,
        ]);
    }
    let mut out = table(&rows);
    if !s.mcp_tools.is_empty() {
        out.push('\n');
        let mut rows = vec![[
            "TOOL".to_string(),
            "SERVER".into(),
            "APPROVAL".into(),
            "HINTS".into(),
        ]];
        for t in &s.mcp_tools {
            rows.push([
                t.qualified_name.clone(),
                t.server.clone(),
                t.approval_mode.clone(),
                hints(t),
            ]);
        }
        out.push_str(&table(&rows));
    }
    out
}

fn list_json(s: &Session) -> Value {
    json!({
        "session_id": s.session_id,
        "servers": s.mcp_servers.iter().map(|m| json!({
            "name": m.name,
            "transport": m.transport,
            "state": state_name(m.state),
            "error": (!m.error.is_empty()).then_some(&m.error),
            "required": m.required,
            "shared": m.shared,
            "tool_count": m.tool_count,
        })).collect::<Vec<_>>(),
        "tools": s.mcp_tools.iter().map(|t| json!({
            "name": t.qualified_name,
            "server": t.server,
            "tool": t.tool,
            "description": t.description,
            "approval_mode": t.approval_mode,
            "annotations": t.annotations.as_ref().map(|a| json!({
                "read_only_hint": a.read_only_hint,
                "destructive_hint": a.destructive_hint,
                "idempotent_hint": a.idempotent_hint,
                "open_world_hint": a.open_world_hint,
            })),
            "input_schema": serde_json::from_str::<Value>(&t.input_schema_json).ok(),
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_proto::v1::{McpServerStatus, McpToolAnnotations};

    fn session() -> Session {
        Session {
            session_id: "s1".into(),
            mcp_servers: vec![
                McpServerStatus {
                    name: "everything".into(),
                    transport: "stdio".into(),
                    state: McpServerState::Running as i32,
                    tool_count: 1,
                    ..Default::default()
                },
                McpServerStatus {
                    name: "broken".into(),
                    transport: "stdio".into(),
                    state: McpServerState::Failed as i32,
                    error: "cannot run \"x\"".into(),
                    ..Default::default()
                },
            ],
            mcp_tools: vec![McpTool {
                qualified_name: "mcp__everything__echo".into(),
                server: "everything".into(),
                tool: "echo".into(),
                approval_mode: "auto".into(),
                annotations: Some(McpToolAnnotations {
                    read_only_hint: Some(true),
                    idempotent_hint: Some(true),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn servers_and_tools_are_tables() {
        let text = list_text(&session());
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("SERVER"), "{text}");
        assert!(
            lines[1].starts_with("everything") && lines[1].contains("running"),
            "{text}"
        );
        assert!(
            lines[2].contains("failed") && lines[2].contains("cannot run"),
            "{text}"
        );
        assert!(
            text.contains("mcp__everything__echo") && text.contains("read-only, idempotent"),
            "{text}"
        );
        let empty = list_text(&Session {
            session_id: "s2".into(),
            ..Default::default()
        });
        assert!(empty.contains("no MCP servers"), "{empty}");
    }

    #[test]
    fn json_names_states() {
        let v = list_json(&session());
        assert_eq!(v["servers"][1]["state"], "failed");
        assert_eq!(v["tools"][0]["name"], "mcp__everything__echo");
        assert_eq!(v["tools"][0]["annotations"]["read_only_hint"], true);
    }
}
