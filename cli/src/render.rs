//! How session events look on a terminal, and as JSON lines.
//!
//! Human output keeps stdout for what the agent says and runs (assistant
//! messages, commands and their output); everything else (reasoning, warnings,
//! errors, notes) goes to stderr, so `keel run ... > out.txt` captures the text.

use std::fmt::Display;
use std::io::{self, Write};

use keel_proto::v1::event::Msg;
use keel_proto::v1::{
    Event, EventGap, ExecCommandStatus, LiveDelta, LiveDeltaKind, SessionStatus, TokenUsage,
    TurnAbortReason,
};
use serde_json::{Value, json};

pub(crate) mod requests;

/// Prints a line on stdout; a closed stdout is not worth a panic.
pub(crate) fn say(line: impl Display) {
    let _ = writeln!(io::stdout().lock(), "{line}");
}

/// Prints a line on stderr.
pub(crate) fn note(line: impl Display) {
    let _ = writeln!(io::stderr().lock(), "{line}");
}

/// ANSI styling, used only when the stream is a terminal.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Style {
    pub color: bool,
}

impl Style {
    fn paint(self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
    fn dim(self, text: &str) -> String {
        self.paint("2", text)
    }
    fn bold(self, text: &str) -> String {
        self.paint("1", text)
    }
    fn red(self, text: &str) -> String {
        self.paint("31", text)
    }
    fn yellow(self, text: &str) -> String {
        self.paint("33", text)
    }
    fn green(self, text: &str) -> String {
        self.paint("32", text)
    }
}

/// Renders events for a person: `out` gets messages and commands, `err` the rest.
pub(crate) struct HumanRenderer<O, E> {
    out: O,
    err: E,
    out_style: Style,
    err_style: Style,
    /// Assistant text already printed from live deltas, not yet confirmed by
    /// the durable `agent_message`.
    streamed: String,
    /// The agent whose events were shown last (with `--all-agents`), so a
    /// switch between agents is marked.
    shown_agent: String,
}

impl<O: Write, E: Write> HumanRenderer<O, E> {
    pub(crate) fn new(out: O, out_style: Style, err: E, err_style: Style) -> Self {
        Self {
            out,
            err,
            out_style,
            err_style,
            streamed: String::new(),
            shown_agent: String::new(),
        }
    }

    /// Prints assistant text as the model writes it, and MCP tools'
    /// progress.
    pub(crate) fn delta(&mut self, delta: &LiveDelta) -> io::Result<()> {
        if delta.kind == LiveDeltaKind::McpProgress as i32 {
            let line = format!("mcp progress [{}]: {}", delta.item_id, delta.delta);
            writeln!(self.err, "{}", self.err_style.dim(&line))?;
            return Ok(());
        }
        if delta.kind != LiveDeltaKind::AgentMessage as i32 {
            return Ok(());
        }
        self.out.write_all(delta.delta.as_bytes())?;
        self.streamed.push_str(&delta.delta);
        self.out.flush()
    }

    pub(crate) fn event(&mut self, event: &Event) -> io::Result<()> {
        let (o, e) = (self.out_style, self.err_style);
        let Some(msg) = &event.msg else {
            return Ok(());
        };
        // A sub-agent's events (StreamEvents `all_agents`) under a line
        // naming it; the session's own again under the session's.
        if !event.agent_id.is_empty() && event.agent_id != self.shown_agent {
            let first = self.shown_agent.is_empty();
            self.shown_agent.clone_from(&event.agent_id);
            if !first || !event.parent_agent_id.is_empty() {
                let who = if event.parent_agent_id.is_empty() {
                    "session".to_string()
                } else {
                    format!("agent {}", event.agent_id)
                };
                writeln!(self.err, "{}", e.dim(&format!("── {who} ──")))?;
            }
        }
        // Only the durable message confirms what the deltas showed.
        let streamed = match msg {
            Msg::AgentMessage(_) => std::mem::take(&mut self.streamed),
            _ => String::new(),
        };
        match msg {
            // Print only what the deltas did not already show.
            Msg::AgentMessage(m) if !streamed.is_empty() && m.message.starts_with(&streamed) => {
                write_block(&mut self.out, &m.message[streamed.len()..])?;
                if m.message.len() == streamed.len() && !streamed.ends_with('\n') {
                    self.out.write_all(b"\n")?;
                }
            }
            Msg::AgentMessage(m) => {
                if !streamed.is_empty() {
                    self.out.write_all(b"\n")?;
                }
                write_block(&mut self.out, &m.message)?;
                if m.truncated {
                    writeln!(self.out, "{}", o.dim("… (message truncated)"))?;
                }
            }
            Msg::AgentReasoning(r) => {
                for line in r.text.lines() {
                    writeln!(self.err, "{}", e.dim(&format!("thinking: {line}")))?;
                }
            }
            Msg::ExecCommandBegin(b) => {
                writeln!(
                    self.out,
                    "{}",
                    o.bold(&format!("$ {}", shell_join(&b.command)))
                )?;
            }
            Msg::ExecCommandEnd(end) => {
                write_block(&mut self.out, &end.aggregated_output)?;
                if end.status == ExecCommandStatus::Declined as i32 {
                    writeln!(self.out, "{}", o.yellow("(declined)"))?;
                } else if end.exit_code != 0 {
                    writeln!(self.out, "{}", o.red(&format!("exit {}", end.exit_code)))?;
                }
            }
            Msg::Error(err) => {
                let class = if err.codex_error_info.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", err.codex_error_info)
                };
                writeln!(
                    self.err,
                    "{}",
                    e.red(&format!("error: {}{class}", err.message))
                )?;
            }
            Msg::Warning(w) => {
                writeln!(self.err, "{}", e.yellow(&format!("warning: {}", w.message)))?;
            }
            Msg::TurnAborted(a) => {
                writeln!(
                    self.err,
                    "{}",
                    e.yellow(&format!("turn aborted: {}", abort_reason_name(a.reason)))
                )?;
            }
            Msg::ShutdownComplete(_) => writeln!(self.err, "{}", e.dim("session closed"))?,
            Msg::ContextCompacted(_) => {
                writeln!(self.err, "{}", e.dim("context compacted into a summary"))?;
            }
            Msg::McpToolCallBegin(b) => {
                writeln!(self.out, "{}", o.bold(&mcp_call_line(b)))?;
            }
            Msg::McpToolCallEnd(end) if !end.error.is_empty() => {
                writeln!(
                    self.out,
                    "{}",
                    o.red(&format!("mcp call failed: {}", end.error))
                )?;
            }
            Msg::McpToolCallEnd(end) if !end.success => {
                writeln!(self.out, "{}", o.red("mcp tool reported an error"))?;
            }
            Msg::McpToolCallEnd(_) => {}
            Msg::WebSearchEnd(w) => {
                writeln!(self.out, "{}", o.bold(&format!("web search: {}", w.query)))?;
            }
            Msg::CollabAgentSpawnEnd(m) if m.new_thread_id.is_empty() => {
                writeln!(self.err, "{}", e.yellow("could not start a sub-agent"))?;
            }
            Msg::CollabAgentSpawnEnd(m) => {
                writeln!(
                    self.out,
                    "{}",
                    o.bold(&format!("started agent {}", m.new_thread_id))
                )?;
            }
            Msg::CollabWaitingBegin(m) => {
                writeln!(
                    self.err,
                    "{}",
                    e.dim(&format!("waiting for {}", m.receiver_thread_ids.join(", ")))
                )?;
            }
            Msg::CollabWaitingEnd(m) if m.statuses.is_empty() => {
                writeln!(self.err, "{}", e.dim("wait timed out"))?;
            }
            Msg::CollabWaitingEnd(m) => {
                for (id, status) in &m.statuses {
                    let kind = status.kind;
                    writeln!(
                        self.err,
                        "{}",
                        e.dim(&format!("agent {id}: {}", agent_status_name(kind)))
                    )?;
                }
            }
            Msg::ExecApprovalRequest(_)
            | Msg::ApplyPatchApprovalRequest(_)
            | Msg::PatchApplyBegin(_)
            | Msg::PatchApplyEnd(_)
            | Msg::RequestUserInput(_)
            | Msg::DynamicToolCallRequest(_)
            | Msg::DynamicToolCallResponse(_)
            | Msg::ElicitationRequest(_)
            | Msg::PlanUpdate(_)
            | Msg::RequestResolved(_) => {
                requests::human(msg, &mut self.out, o, &mut self.err, e)?;
            }
            Msg::SessionConfigured(_)
            | Msg::TurnStarted(_)
            | Msg::UserMessage(_)
            | Msg::TokenCount(_)
            | Msg::WebSearchBegin(_)
            | Msg::CollabAgentSpawnBegin(_)
            | Msg::TurnComplete(_) => {}
        }
        self.out.flush()?;
        self.err.flush()
    }

    pub(crate) fn gap(&mut self, gap: &EventGap) -> io::Result<()> {
        writeln!(
            self.err,
            "{}",
            self.err_style.dim(&format!(
                "note: events {}..{} are no longer retained",
                gap.after_offset.saturating_add(1),
                gap.first_retained_offset.saturating_sub(1)
            ))
        )
    }
}

/// Renders one JSON object per line.
pub(crate) struct JsonRenderer<O> {
    out: O,
}

impl<O: Write> JsonRenderer<O> {
    pub(crate) fn new(out: O) -> Self {
        Self { out }
    }

    pub(crate) fn event(&mut self, event: &Event) -> io::Result<()> {
        writeln!(self.out, "{}", event_json(event))?;
        self.out.flush()
    }

    pub(crate) fn gap(&mut self, gap: &EventGap) -> io::Result<()> {
        writeln!(self.out, "{}", gap_json(gap))?;
        self.out.flush()
    }
}

/// Either renderer, chosen by `--json`.
pub(crate) enum Renderer<O, E> {
    Human(HumanRenderer<O, E>),
    Json(JsonRenderer<O>),
}

impl<O: Write, E: Write> Renderer<O, E> {
    pub(crate) fn event(&mut self, event: &Event) -> io::Result<()> {
        match self {
            Renderer::Human(r) => r.event(event),
            Renderer::Json(r) => r.event(event),
        }
    }

    pub(crate) fn gap(&mut self, gap: &EventGap) -> io::Result<()> {
        match self {
            Renderer::Human(r) => r.gap(gap),
            Renderer::Json(r) => r.gap(gap),
        }
    }

    /// Live deltas are shown by the human renderer only; JSON output stays
    /// the durable event log.
    pub(crate) fn delta(&mut self, delta: &LiveDelta) -> io::Result<()> {
        match self {
            Renderer::Human(r) => r.delta(delta),
            Renderer::Json(_) => Ok(()),
        }
    }

    pub(crate) fn wants_deltas(&self) -> bool {
        matches!(self, Renderer::Human(_))
    }
}

/// Writes text and ends it with a newline if it has none.
fn write_block(out: &mut impl Write, text: &str) -> io::Result<()> {
    if text.is_empty() {
        return Ok(());
    }
    out.write_all(text.as_bytes())?;
    if !text.ends_with('\n') {
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// The Codex `type` of an event: the name of its `msg` oneof field.
pub(crate) fn event_type(msg: &Msg) -> &'static str {
    match msg {
        Msg::SessionConfigured(_) => "session_configured",
        Msg::TurnStarted(_) => "turn_started",
        Msg::UserMessage(_) => "user_message",
        Msg::AgentMessage(_) => "agent_message",
        Msg::AgentReasoning(_) => "agent_reasoning",
        Msg::ExecCommandBegin(_) => "exec_command_begin",
        Msg::ExecCommandEnd(_) => "exec_command_end",
        Msg::TokenCount(_) => "token_count",
        Msg::TurnComplete(_) => "turn_complete",
        Msg::TurnAborted(_) => "turn_aborted",
        Msg::Error(_) => "error",
        Msg::ShutdownComplete(_) => "shutdown_complete",
        Msg::Warning(_) => "warning",
        Msg::ExecApprovalRequest(_) => "exec_approval_request",
        Msg::ApplyPatchApprovalRequest(_) => "apply_patch_approval_request",
        Msg::PatchApplyBegin(_) => "patch_apply_begin",
        Msg::PatchApplyEnd(_) => "patch_apply_end",
        Msg::RequestUserInput(_) => "request_user_input",
        Msg::DynamicToolCallRequest(_) => "dynamic_tool_call_request",
        Msg::DynamicToolCallResponse(_) => "dynamic_tool_call_response",
        Msg::PlanUpdate(_) => "plan_update",
        Msg::RequestResolved(_) => "request_resolved",
        Msg::ContextCompacted(_) => "context_compacted",
        Msg::McpToolCallBegin(_) => "mcp_tool_call_begin",
        Msg::McpToolCallEnd(_) => "mcp_tool_call_end",
        Msg::ElicitationRequest(_) => "elicitation_request",
        Msg::WebSearchBegin(_) => "web_search_begin",
        Msg::WebSearchEnd(_) => "web_search_end",
        Msg::CollabAgentSpawnBegin(_) => "collab_agent_spawn_begin",
        Msg::CollabAgentSpawnEnd(_) => "collab_agent_spawn_end",
        Msg::CollabWaitingBegin(_) => "collab_waiting_begin",
        Msg::CollabWaitingEnd(_) => "collab_waiting_end",
    }
}

/// `{"offset":..,"turn_id":..,"time":..,"type":..,<the message's fields>}`.
/// An event whose message this build does not know has type "unknown".
pub(crate) fn event_json(event: &Event) -> Value {
    let mut object = serde_json::Map::new();
    object.insert("offset".into(), json!(event.offset));
    object.insert("turn_id".into(), json!(event.turn_id));
    object.insert(
        "time".into(),
        json!(event.time.as_ref().and_then(timestamp_rfc3339)),
    );
    let (kind, fields) = match &event.msg {
        None => ("unknown", json!({})),
        Some(msg) => (event_type(msg), msg_fields(msg)),
    };
    object.insert("type".into(), json!(kind));
    // A sub-agent's event (StreamEvents `all_agents`) names its agent.
    if !event.parent_agent_id.is_empty() {
        object.insert("agent_id".into(), json!(event.agent_id));
        object.insert("parent_agent_id".into(), json!(event.parent_agent_id));
    }
    if let Value::Object(fields) = fields {
        object.extend(fields);
    }
    Value::Object(object)
}

fn msg_fields(msg: &Msg) -> Value {
    match msg {
        Msg::SessionConfigured(m) => json!({
            "session_id": m.session_id,
            "model": m.model,
            "model_provider": m.model_provider,
            "cwd": m.cwd,
            "settings": m.context.as_ref().map(crate::settings::context_json),
            "history_rollovers": m.history_rollovers,
        }),
        Msg::TurnStarted(_) | Msg::ShutdownComplete(_) => json!({}),
        Msg::UserMessage(m) => json!({"message": m.message, "truncated": m.truncated}),
        Msg::AgentMessage(m) => json!({"message": m.message, "truncated": m.truncated}),
        Msg::AgentReasoning(m) => json!({"text": m.text}),
        Msg::ExecCommandBegin(m) => {
            json!({"call_id": m.call_id, "command": m.command, "cwd": m.cwd})
        }
        Msg::ExecCommandEnd(m) => json!({
            "call_id": m.call_id,
            "command": m.command,
            "cwd": m.cwd,
            "exit_code": m.exit_code,
            "duration_ms": m.duration_ms,
            "aggregated_output": m.aggregated_output,
            "formatted_output": m.formatted_output,
            "status": exec_status_name(m.status),
        }),
        Msg::TokenCount(m) => json!({
            "total_token_usage": m.total_token_usage.as_ref().map(usage_json),
            "last_token_usage": m.last_token_usage.as_ref().map(usage_json),
            "model_context_window": m.model_context_window,
            "rate_limits": m.rate_limits.as_ref().map(|r| {
                let window = |w: &keel_proto::v1::RateLimitWindow| json!({
                    "used_percent": w.used_percent,
                    "window_minutes": w.window_minutes,
                    "resets_at": w.resets_at,
                });
                json!({
                    "primary": r.primary.as_ref().map(window),
                    "secondary": r.secondary.as_ref().map(window),
                })
            }),
        }),
        Msg::TurnComplete(m) => json!({"last_agent_message": m.last_agent_message}),
        Msg::TurnAborted(m) => json!({"reason": abort_reason_name(m.reason)}),
        Msg::Error(m) => json!({"message": m.message, "codex_error_info": m.codex_error_info}),
        Msg::Warning(m) => json!({"message": m.message}),
        Msg::ContextCompacted(m) => json!({"summary": m.summary}),
        Msg::McpToolCallBegin(m) => json!({
            "call_id": m.call_id,
            "invocation": m.invocation.as_ref().map(invocation_json),
        }),
        Msg::McpToolCallEnd(m) => json!({
            "call_id": m.call_id,
            "invocation": m.invocation.as_ref().map(invocation_json),
            "duration_ms": m.duration_ms,
            "success": m.success,
            "result": serde_json::from_str::<Value>(&m.result_json).ok(),
            "result_truncated": m.result_truncated,
            "error": m.error,
        }),
        Msg::WebSearchBegin(m) => json!({"call_id": m.call_id}),
        Msg::CollabAgentSpawnBegin(m) => json!({
            "call_id": m.call_id,
            "sender_thread_id": m.sender_thread_id,
            "prompt": m.prompt,
            "model": m.model,
            "reasoning_effort": m.reasoning_effort,
        }),
        Msg::CollabAgentSpawnEnd(m) => json!({
            "call_id": m.call_id,
            "sender_thread_id": m.sender_thread_id,
            "new_thread_id": (!m.new_thread_id.is_empty()).then_some(&m.new_thread_id),
            "new_agent_nickname": (!m.new_agent_nickname.is_empty()).then_some(&m.new_agent_nickname),
            "new_agent_role": (!m.new_agent_role.is_empty()).then_some(&m.new_agent_role),
            "prompt": m.prompt,
            "model": m.model,
            "reasoning_effort": m.reasoning_effort,
            "status": m.status.as_ref().map(agent_status_json),
        }),
        Msg::CollabWaitingBegin(m) => json!({
            "sender_thread_id": m.sender_thread_id,
            "receiver_thread_ids": m.receiver_thread_ids,
            "call_id": m.call_id,
        }),
        Msg::CollabWaitingEnd(m) => json!({
            "sender_thread_id": m.sender_thread_id,
            "call_id": m.call_id,
            "statuses": m
                .statuses
                .iter()
                .map(|(id, status)| (id.clone(), agent_status_json(status)))
                .collect::<serde_json::Map<_, _>>(),
        }),
        Msg::WebSearchEnd(m) => json!({
            "call_id": m.call_id,
            "query": m.query,
            "action": serde_json::from_str::<Value>(&m.action_json).ok(),
        }),
        Msg::ExecApprovalRequest(_)
        | Msg::ApplyPatchApprovalRequest(_)
        | Msg::PatchApplyBegin(_)
        | Msg::PatchApplyEnd(_)
        | Msg::RequestUserInput(_)
        | Msg::DynamicToolCallRequest(_)
        | Msg::DynamicToolCallResponse(_)
        | Msg::ElicitationRequest(_)
        | Msg::PlanUpdate(_)
        | Msg::RequestResolved(_) => requests::fields(msg).unwrap_or_else(|| json!({})),
    }
}

/// Codex's `McpInvocation`: the arguments as JSON when they parse.
fn invocation_json(i: &keel_proto::v1::McpInvocation) -> Value {
    json!({
        "server": i.server,
        "tool": i.tool,
        "arguments": serde_json::from_str::<Value>(&i.arguments)
            .unwrap_or_else(|_| Value::String(i.arguments.clone())),
    })
}

pub(crate) fn gap_json(gap: &EventGap) -> Value {
    let mut gap_object = json!({
        "type": "gap",
        "after_offset": gap.after_offset,
        "first_retained_offset": gap.first_retained_offset,
    });
    if !gap.agent_id.is_empty() {
        gap_object["agent_id"] = json!(gap.agent_id);
    }
    gap_object
}

/// An agent's status as Codex serializes `AgentStatus`: `"running"`, or
/// `{"completed": "the final message"}` / `{"errored": "why"}`.
fn agent_status_json(status: &keel_proto::v1::AgentStatus) -> Value {
    let name = agent_status_name(status.kind);
    match name.as_str() {
        "completed" => {
            json!({ "completed": (!status.message.is_empty()).then_some(&status.message) })
        }
        "errored" => json!({ "errored": status.message }),
        _ => json!(name),
    }
}

pub(crate) fn agent_status_name(value: i32) -> String {
    enum_name(
        keel_proto::v1::AgentStatusKind::try_from(value)
            .ok()
            .map(|s| s.as_str_name()),
        "AGENT_STATUS_KIND_",
    )
}

fn usage_json(usage: &TokenUsage) -> Value {
    json!({
        "input_tokens": usage.input_tokens,
        "cached_input_tokens": usage.cached_input_tokens,
        "output_tokens": usage.output_tokens,
        "reasoning_output_tokens": usage.reasoning_output_tokens,
        "total_tokens": usage.total_tokens,
    })
}

/// A proto enum's value name without its prefix, in snake_case.
pub(crate) fn enum_name(name: Option<&'static str>, prefix: &str) -> String {
    name.map(|n| n.strip_prefix(prefix).unwrap_or(n).to_ascii_lowercase())
        .unwrap_or_else(|| "unknown".to_string())
}

pub(crate) fn exec_status_name(value: i32) -> String {
    enum_name(
        ExecCommandStatus::try_from(value)
            .ok()
            .map(|s| s.as_str_name()),
        "EXEC_COMMAND_STATUS_",
    )
}

pub(crate) fn abort_reason_name(value: i32) -> String {
    enum_name(
        TurnAbortReason::try_from(value)
            .ok()
            .map(|s| s.as_str_name()),
        "TURN_ABORT_REASON_",
    )
}

pub(crate) fn session_status_name(value: i32) -> String {
    enum_name(
        SessionStatus::try_from(value).ok().map(|s| s.as_str_name()),
        "SESSION_STATUS_",
    )
}

/// RFC 3339 in UTC with milliseconds; None for an out-of-range timestamp.
pub(crate) fn timestamp_rfc3339(ts: &prost_types::Timestamp) -> Option<String> {
    to_datetime(ts).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// Local time, to the second, for tables.
pub(crate) fn timestamp_local(ts: &prost_types::Timestamp) -> Option<String> {
    to_datetime(ts).map(|t| {
        t.with_timezone(&chrono::Local)
            .format("%Y-%m-%d %H:%M:%S")
            .to_string()
    })
}

fn to_datetime(ts: &prost_types::Timestamp) -> Option<chrono::DateTime<chrono::Utc>> {
    let nanos = u32::try_from(ts.nanos).ok()?;
    chrono::DateTime::from_timestamp(ts.seconds, nanos)
}

/// Joins argv so that a POSIX shell would split it back the same way.
/// Rows of cells (the first the header) as aligned columns two spaces
/// apart; the last column is not padded, and no line ends in spaces.
pub(crate) fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == N {
                line.push_str(cell);
            } else {
                let pad = widths[i].saturating_sub(cell.chars().count());
                line.push_str(cell);
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `text` without control characters (terminal escapes a model or another
/// client could have put in a session's name, cwd or messages).
pub(crate) fn printable(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).collect()
}

/// `mcp <server>.<tool>`: how an MCP call's start is shown.
pub(crate) fn mcp_call_line(begin: &keel_proto::v1::McpToolCallBegin) -> String {
    let (server, tool) = begin
        .invocation
        .as_ref()
        .map(|i| (i.server.as_str(), i.tool.as_str()))
        .unwrap_or_default();
    format!("mcp {server}.{tool}")
}

pub(crate) fn shell_join(args: &[String]) -> String {
    args.iter()
        .map(|arg| shell_quote(arg))
        .collect::<Vec<_>>()
        .join(" ")
}

fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:=@%+,".contains(c));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use keel_proto::v1::{
        AgentMessage, AgentReasoning, ErrorEvent, ExecCommandBegin, ExecCommandEnd, TokenCount,
        TurnAborted, TurnComplete, TurnStarted, Warning,
    };

    fn event(offset: u64, msg: Msg) -> Event {
        Event {
            agent_id: String::new(),
            parent_agent_id: String::new(),
            offset,
            turn_id: "t1".to_string(),
            time: Some(prost_types::Timestamp {
                seconds: 1_767_225_600,
                nanos: 250_000_000,
            }),
            msg: Some(msg),
        }
    }

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    fn render(events: &[Event]) -> (String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        {
            let style = Style { color: false };
            let mut r = HumanRenderer::new(&mut out, style, &mut err, style);
            for e in events {
                r.event(e).unwrap();
            }
            r.gap(&EventGap {
                after_offset: 0,
                first_retained_offset: 5,
                ..Default::default()
            })
            .unwrap();
        }
        (
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    #[test]
    fn deltas_then_the_durable_message_print_the_text_once() {
        let delta = |text: &str| LiveDelta {
            turn_id: "t".into(),
            item_id: "m1".into(),
            kind: LiveDeltaKind::AgentMessage as i32,
            delta: text.into(),
            summary_index: 0,
            events_before: 2,
        };
        let message = |text: &str| {
            event(
                3,
                Msg::AgentMessage(AgentMessage {
                    message: text.into(),
                    truncated: false,
                }),
            )
        };
        let mut out = Vec::new();
        {
            let style = Style { color: false };
            let mut r = HumanRenderer::new(&mut out, style, Vec::new(), style);
            r.delta(&delta("Hel")).unwrap();
            r.delta(&delta("lo")).unwrap();
            r.event(&event(2, Msg::TokenCount(Default::default())))
                .unwrap();
            r.event(&message("Hello")).unwrap();
            // A message whose deltas were missed prints whole.
            r.event(&message("Bye")).unwrap();
            // Deltas that do not match the message: new line, then the message.
            r.delta(&delta("Hx")).unwrap();
            r.event(&message("Hi")).unwrap();
        }
        assert_eq!(String::from_utf8(out).unwrap(), "Hello\nBye\nHx\nHi\n");
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_join(&strings(&["echo", "hello"])), "echo hello");
        assert_eq!(
            shell_join(&strings(&["bash", "-lc", "ls -la | wc -l"])),
            "bash -lc 'ls -la | wc -l'"
        );
        assert_eq!(shell_join(&strings(&["echo", "it's"])), r"echo 'it'\''s'");
        assert_eq!(shell_join(&strings(&["printf", ""])), "printf ''");
        assert_eq!(
            shell_join(&strings(&["a=b", "/x/y.z", "$HOME"])),
            "a=b /x/y.z '$HOME'"
        );
        assert_eq!(shell_join(&[]), "");
    }

    #[test]
    fn human_rendering_splits_stdout_and_stderr() {
        let events = [
            event(1, Msg::TurnStarted(TurnStarted {})),
            event(
                2,
                Msg::AgentReasoning(AgentReasoning {
                    text: "I should run echo".to_string(),
                }),
            ),
            event(
                3,
                Msg::ExecCommandBegin(ExecCommandBegin {
                    call_id: "c1".to_string(),
                    command: strings(&["echo", "hello world"]),
                    cwd: "/tmp".to_string(),
                }),
            ),
            event(
                4,
                Msg::ExecCommandEnd(ExecCommandEnd {
                    call_id: "c1".to_string(),
                    command: strings(&["echo", "hello world"]),
                    exit_code: 0,
                    aggregated_output: "hello world\n".to_string(),
                    status: ExecCommandStatus::Completed as i32,
                    ..Default::default()
                }),
            ),
            event(
                5,
                Msg::ExecCommandBegin(ExecCommandBegin {
                    call_id: "c2".to_string(),
                    command: strings(&["false"]),
                    cwd: "/tmp".to_string(),
                }),
            ),
            event(
                6,
                Msg::ExecCommandEnd(ExecCommandEnd {
                    call_id: "c2".to_string(),
                    command: strings(&["false"]),
                    exit_code: 1,
                    status: ExecCommandStatus::Failed as i32,
                    ..Default::default()
                }),
            ),
            event(
                7,
                Msg::AgentMessage(AgentMessage {
                    message: "Done: it printed hello world.".to_string(),
                    truncated: false,
                }),
            ),
            event(
                8,
                Msg::Warning(Warning {
                    message: "slow model".to_string(),
                }),
            ),
            event(
                9,
                Msg::Error(ErrorEvent {
                    message: "stream disconnected".to_string(),
                    codex_error_info: "http_connection_failed".to_string(),
                }),
            ),
            event(
                10,
                Msg::TurnAborted(TurnAborted {
                    reason: TurnAbortReason::Interrupted as i32,
                }),
            ),
            event(
                11,
                Msg::TurnComplete(TurnComplete {
                    last_agent_message: "x".to_string(),
                }),
            ),
        ];
        let (out, err) = render(&events);
        assert_eq!(
            out,
            "$ echo 'hello world'\nhello world\n$ false\nexit 1\nDone: it printed hello world.\n"
        );
        assert_eq!(
            err,
            "thinking: I should run echo\n\
             warning: slow model\n\
             error: stream disconnected (http_connection_failed)\n\
             turn aborted: interrupted\n\
             note: events 1..4 are no longer retained\n"
        );
    }

    #[test]
    fn colors_only_when_asked() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        {
            let mut r = HumanRenderer::new(
                &mut out,
                Style { color: true },
                &mut err,
                Style { color: false },
            );
            r.event(&event(
                1,
                Msg::ExecCommandBegin(ExecCommandBegin {
                    command: strings(&["ls"]),
                    ..Default::default()
                }),
            ))
            .unwrap();
        }
        assert_eq!(String::from_utf8(out).unwrap(), "\x1b[1m$ ls\x1b[0m\n");
    }

    #[test]
    fn json_lines() {
        let e = event(
            4,
            Msg::ExecCommandEnd(ExecCommandEnd {
                call_id: "c1".to_string(),
                command: strings(&["echo", "hello"]),
                cwd: "/w".to_string(),
                exit_code: 0,
                duration_ms: 12,
                aggregated_output: "hello\n".to_string(),
                formatted_output: "Exit code: 0".to_string(),
                status: ExecCommandStatus::Completed as i32,
            }),
        );
        assert_eq!(
            event_json(&e),
            json!({
                "offset": 4,
                "turn_id": "t1",
                "time": "2026-01-01T00:00:00.250Z",
                "type": "exec_command_end",
                "call_id": "c1",
                "command": ["echo", "hello"],
                "cwd": "/w",
                "exit_code": 0,
                "duration_ms": 12,
                "aggregated_output": "hello\n",
                "formatted_output": "Exit code: 0",
                "status": "completed",
            })
        );
        let started = Event {
            agent_id: String::new(),
            parent_agent_id: String::new(),
            offset: 1,
            turn_id: "t1".to_string(),
            time: None,
            msg: Some(Msg::TurnStarted(TurnStarted {})),
        };
        assert_eq!(
            event_json(&started),
            json!({"offset": 1, "turn_id": "t1", "time": null, "type": "turn_started"})
        );
        let tokens = event(
            5,
            Msg::TokenCount(TokenCount {
                total_token_usage: Some(TokenUsage {
                    input_tokens: 10,
                    total_tokens: 12,
                    output_tokens: 2,
                    ..Default::default()
                }),
                last_token_usage: None,
                model_context_window: 272_000,
                rate_limits: Some(keel_proto::v1::RateLimitSnapshot {
                    primary: Some(keel_proto::v1::RateLimitWindow {
                        used_percent: 42.5,
                        window_minutes: 300,
                        resets_at: 1_704_069_000,
                    }),
                    secondary: None,
                }),
            }),
        );
        let v = event_json(&tokens);
        assert_eq!(v["type"], "token_count");
        assert_eq!(v["total_token_usage"]["total_tokens"], 12);
        assert_eq!(v["last_token_usage"], Value::Null);
        assert_eq!(v["model_context_window"], 272_000);
        assert_eq!(
            v["rate_limits"],
            json!({"primary": {"used_percent": 42.5, "window_minutes": 300, "resets_at": 1_704_069_000u64},
                   "secondary": null})
        );
        let aborted = event(
            6,
            Msg::TurnAborted(TurnAborted {
                reason: TurnAbortReason::BudgetLimited as i32,
            }),
        );
        assert_eq!(event_json(&aborted)["reason"], "budget_limited");
        let compacted = event(
            7,
            Msg::ContextCompacted(keel_proto::v1::ContextCompacted {
                summary: "So far: tests pass.".to_string(),
            }),
        );
        let v = event_json(&compacted);
        assert_eq!(v["type"], "context_compacted");
        assert_eq!(v["summary"], "So far: tests pass.");
        assert_eq!(
            render(&[compacted]).1,
            "context compacted into a summary\nnote: events 1..4 are no longer retained\n"
        );
        let unknown = Event {
            offset: 7,
            ..Default::default()
        };
        assert_eq!(event_json(&unknown)["type"], "unknown");
        // Every line is a single line.
        let mut out = Vec::new();
        JsonRenderer::new(&mut out).event(&e).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches('\n').count(), 1);
        assert_eq!(
            gap_json(&EventGap {
                after_offset: 0,
                first_retained_offset: 3,
                ..Default::default()
            }),
            json!({"type": "gap", "after_offset": 0, "first_retained_offset": 3})
        );
    }

    #[test]
    fn enum_names() {
        assert_eq!(session_status_name(SessionStatus::Idle as i32), "idle");
        assert_eq!(session_status_name(99), "unknown");
        assert_eq!(
            exec_status_name(ExecCommandStatus::Declined as i32),
            "declined"
        );
        assert_eq!(
            abort_reason_name(TurnAbortReason::ReviewEnded as i32),
            "review_ended"
        );
    }

    #[test]
    fn timestamps() {
        let ts = prost_types::Timestamp {
            seconds: 0,
            nanos: 0,
        };
        assert_eq!(
            timestamp_rfc3339(&ts).as_deref(),
            Some("1970-01-01T00:00:00.000Z")
        );
        let bad = prost_types::Timestamp {
            seconds: 0,
            nanos: -1,
        };
        assert_eq!(timestamp_rfc3339(&bad), None);
        assert!(timestamp_local(&ts).is_some());
    }
}
