//! The pure part of the TUI's transcript: session events and live deltas in,
//! cells (and their text lines) out. No terminal, no network: unit-tested.
//!
//! Events have dense offsets and are applied once each: an event at or
//! before the last offset applied is dropped, so a stream resumed with an
//! overlapping `after_offset` adds nothing twice. Live deltas are shown
//! until the durable event they anticipate arrives, which replaces them; a
//! delta of a model call whose durable message was already applied is
//! dropped.

use std::time::SystemTime;

use keel_proto::v1::event::Msg;
use keel_proto::v1::{
    Event, EventGap, ExecCommandStatus, ForkOrigin, LiveDelta, LiveDeltaKind, Session,
    TurnAbortReason, TurnContext,
};

use crate::ask::{self, Asker};
use crate::render::requests::{change_diff, change_line, human};
use crate::render::{Style, abort_reason_name, shell_join};
use crate::settings::{policy_name, sandbox_name};

/// How a line is painted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tone {
    Plain,
    Dim,
    Bold,
    User,
    Reasoning,
    Command,
    Added,
    Removed,
    Warn,
    Error,
}

/// One line of a cell, before wrapping.
pub(crate) type Line = (Tone, String);

/// How many lines of a command's output an exec cell shows (the tail).
pub(crate) const OUTPUT_TAIL: usize = 5;

/// A command the agent runs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ExecCell {
    pub call_id: String,
    pub command: String,
    /// `None` while it runs.
    pub end: Option<ExecEnd>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ExecEnd {
    pub exit_code: i32,
    pub declined: bool,
    pub duration_ms: u64,
    pub output: String,
}

/// One block of the transcript.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell {
    User(String),
    Assistant(String),
    Reasoning(String),
    Exec(ExecCell),
    /// Anything else, already as lines: requests, patches, plans, notes.
    Lines(Vec<Line>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LiveKind {
    Message,
    Reasoning,
}

/// Text the model is writing, from live deltas, not yet made durable.
#[derive(Debug, Clone, PartialEq)]
struct Live {
    kind: LiveKind,
    item_id: String,
    summary_index: u32,
    text: String,
}

/// The session's settings and usage, for the status line.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Status {
    pub session_id: String,
    pub name: String,
    pub model: String,
    pub cwd: String,
    pub sandbox: String,
    pub approvals: String,
    pub total_tokens: u64,
    /// Tokens of the last model call (what the context holds).
    pub context_tokens: u64,
    pub context_window: u64,
}

impl Status {
    /// Percent of the model's context window still free; `None` when the
    /// window is unknown.
    pub(crate) fn context_left(&self) -> Option<u64> {
        if self.context_window == 0 {
            return None;
        }
        let used = self.context_tokens.min(self.context_window);
        Some(100 - used * 100 / self.context_window)
    }

    fn settings(&mut self, context: &TurnContext) {
        if let Some(model) = context.model.as_deref().filter(|m| !m.is_empty()) {
            self.model = model.to_string();
        }
        if let Some(sandbox) = &context.sandbox {
            self.sandbox = sandbox_name(sandbox.mode);
        }
        if context.approval_policy != 0 {
            self.approvals = policy_name(context.approval_policy);
        }
    }

    /// From GetSession (or ListSessions) before any event.
    pub(crate) fn from_session(session: &Session) -> Self {
        let mut status = Status {
            session_id: session.session_id.clone(),
            name: session.name.clone(),
            model: session.model.clone(),
            cwd: session.cwd.clone(),
            total_tokens: session
                .total_token_usage
                .as_ref()
                .map_or(0, |u| u.total_tokens),
            ..Default::default()
        };
        if let Some(context) = &session.context {
            status.settings(context);
        }
        status
    }
}

/// The running turn.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Running {
    pub turn_id: String,
    pub since: SystemTime,
}

/// A session as the TUI shows it.
#[derive(Debug, Default)]
pub(crate) struct Transcript {
    pub cells: Vec<Cell>,
    live: Vec<Live>,
    /// The offset of the last event applied.
    pub last_offset: u64,
    /// The offsets of the last durable agent message and reasoning.
    message_offset: u64,
    reasoning_offset: u64,
    pub running: Option<Running>,
    /// The command running now, and since when.
    pub command: Option<(String, SystemTime)>,
    pub status: Status,
    /// The requests waiting for the person, the first being asked.
    pub asker: Asker,
    /// The session closed (`shutdown_complete`).
    pub closed: bool,
    configured: bool,
}

fn when(event: &Event, now: SystemTime) -> SystemTime {
    event
        .time
        .as_ref()
        .and_then(|t| {
            let secs = u64::try_from(t.seconds).ok()?;
            let nanos = u32::try_from(t.nanos).ok()?;
            SystemTime::UNIX_EPOCH.checked_add(std::time::Duration::new(secs, nanos))
        })
        .map_or(now, |t| t.min(now))
}

/// Text as lines of one tone, each prefixed (the first with `first`, the
/// rest with as many spaces).
fn prefixed(tone: Tone, first: &str, text: &str) -> Vec<Line> {
    let rest = " ".repeat(first.chars().count());
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            let prefix = if i == 0 { first } else { rest.as_str() };
            (tone, format!("{prefix}{line}"))
        })
        .collect()
}

/// What `keel run` prints for a request-like message, as lines: the
/// approval head in yellow, diff lines green and red.
fn request_lines(msg: &Msg) -> Vec<Line> {
    let plain = Style { color: false };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    if !matches!(human(msg, &mut out, plain, &mut err, plain), Ok(true)) {
        return Vec::new();
    }
    out.extend(err);
    let text = String::from_utf8_lossy(&out).into_owned();
    text.lines()
        .map(|line| {
            let tone = if line.starts_with("approval needed") || line.starts_with("the agent asks")
            {
                Tone::Warn
            } else if let Some(tone) = diff_tone(line) {
                tone
            } else if line.starts_with('[') || line.starts_with('…') {
                Tone::Dim
            } else if line == "plan:" || line.starts_with("patch: ") {
                Tone::Bold
            } else if line == "patch failed" {
                Tone::Error
            } else {
                Tone::Plain
            };
            (tone, line.to_string())
        })
        .collect()
}

impl Transcript {
    /// A transcript for `session` before its events.
    pub(crate) fn for_session(session: &Session) -> Self {
        Transcript {
            status: Status::from_session(session),
            ..Default::default()
        }
    }

    /// A fork's history before its own events: its parent's events up to
    /// the fork point (`None`: they could not be read, e.g. the parent was
    /// deleted), then a line saying where the fork starts.
    pub(crate) fn fork_prelude(&mut self, origin: &ForkOrigin, parent: Option<&[Event]>) {
        let mut prelude = Transcript::default();
        let now = SystemTime::now();
        for event in parent.unwrap_or_default() {
            prelude.event(event, now);
        }
        let at = if origin.turn_id.is_empty() {
            String::new()
        } else {
            format!(" at turn {}", origin.turn_id)
        };
        let line = match parent {
            Some(_) => format!("── forked from session {}{at} ──", origin.session_id),
            None => format!(
                "── forked from session {}{at} (its history is no longer available) ──",
                origin.session_id
            ),
        };
        prelude.note(Tone::Dim, &line);
        prelude.cells.append(&mut self.cells);
        self.cells = prelude.cells;
    }

    /// A line of the TUI's own (not an event).
    pub(crate) fn note(&mut self, tone: Tone, text: &str) {
        self.cells.push(Cell::Lines(prefixed(tone, "", text)));
    }

    pub(crate) fn gap(&mut self, gap: &EventGap) {
        let missing = gap
            .first_retained_offset
            .saturating_sub(gap.after_offset)
            .saturating_sub(1);
        if missing > 0 {
            self.note(
                Tone::Dim,
                &format!("{missing} earlier events are no longer retained"),
            );
        }
        self.last_offset = self
            .last_offset
            .max(gap.first_retained_offset.saturating_sub(1));
    }

    /// A live delta: shown until its durable event arrives.
    pub(crate) fn delta(&mut self, delta: &LiveDelta) {
        let kind = match LiveDeltaKind::try_from(delta.kind) {
            Ok(LiveDeltaKind::AgentMessage) => LiveKind::Message,
            Ok(LiveDeltaKind::ReasoningSummary) => LiveKind::Reasoning,
            _ => return,
        };
        // The durable event of this model call is already here.
        let durable = match kind {
            LiveKind::Message => self.message_offset,
            LiveKind::Reasoning => self.reasoning_offset,
        };
        if durable > delta.events_before || self.closed {
            return;
        }
        let found = self.live.iter_mut().find(|l| {
            l.kind == kind && l.item_id == delta.item_id && l.summary_index == delta.summary_index
        });
        match found {
            Some(live) => live.text.push_str(&delta.delta),
            None => self.live.push(Live {
                kind,
                item_id: delta.item_id.clone(),
                summary_index: delta.summary_index,
                text: delta.delta.clone(),
            }),
        }
    }

    /// Applies one durable event; false when it was seen already.
    pub(crate) fn event(&mut self, event: &Event, now: SystemTime) -> bool {
        if event.offset != 0 && event.offset <= self.last_offset {
            return false;
        }
        self.last_offset = self.last_offset.max(event.offset);
        let Some(msg) = &event.msg else {
            return true;
        };
        match msg {
            Msg::RequestResolved(r) => {
                self.asker.resolved(&r.call_id);
            }
            msg if ask::askable(msg) => {
                self.asker.offer(msg);
            }
            _ => {}
        }
        match msg {
            Msg::SessionConfigured(c) => {
                if !c.session_id.is_empty() {
                    self.status.session_id = c.session_id.clone();
                }
                if !c.model.is_empty() {
                    self.status.model = c.model.clone();
                }
                if !c.cwd.is_empty() {
                    self.status.cwd = c.cwd.clone();
                }
                if let Some(context) = &c.context {
                    self.status.settings(context);
                }
                if !self.configured {
                    self.configured = true;
                    let line = format!(
                        "session {} - model {}, in {}",
                        self.status.session_id,
                        if self.status.model.is_empty() {
                            "(default)"
                        } else {
                            &self.status.model
                        },
                        self.status.cwd
                    );
                    self.note(Tone::Dim, &line);
                }
            }
            Msg::TurnStarted(_) => {
                self.running = Some(Running {
                    turn_id: event.turn_id.clone(),
                    since: when(event, now),
                });
            }
            Msg::UserMessage(m) => self.cells.push(Cell::User(m.message.clone())),
            Msg::AgentMessage(m) => {
                self.message_offset = event.offset;
                self.drop_live(LiveKind::Message);
                let mut text = m.message.clone();
                if m.truncated {
                    text.push_str("\n… (message truncated)");
                }
                self.cells.push(Cell::Assistant(text));
            }
            Msg::AgentReasoning(r) => {
                self.reasoning_offset = event.offset;
                self.drop_live(LiveKind::Reasoning);
                self.cells.push(Cell::Reasoning(r.text.clone()));
            }
            Msg::ExecCommandBegin(b) => {
                let command = shell_join(&b.command);
                self.command = Some((command.clone(), when(event, now)));
                self.cells.push(Cell::Exec(ExecCell {
                    call_id: b.call_id.clone(),
                    command,
                    end: None,
                }));
            }
            Msg::ExecCommandEnd(e) => {
                self.command = None;
                let end = ExecEnd {
                    exit_code: e.exit_code,
                    declined: e.status == ExecCommandStatus::Declined as i32,
                    duration_ms: e.duration_ms,
                    output: e.aggregated_output.clone(),
                };
                let open = self.cells.iter_mut().rev().find_map(|c| match c {
                    Cell::Exec(x) if x.call_id == e.call_id && x.end.is_none() => Some(x),
                    _ => None,
                });
                match open {
                    Some(cell) => cell.end = Some(end),
                    None => self.cells.push(Cell::Exec(ExecCell {
                        call_id: e.call_id.clone(),
                        command: shell_join(&e.command),
                        end: Some(end),
                    })),
                }
            }
            Msg::TokenCount(t) => {
                if let Some(total) = &t.total_token_usage {
                    self.status.total_tokens = total.total_tokens;
                }
                if let Some(last) = &t.last_token_usage {
                    self.status.context_tokens = last.total_tokens;
                }
                if t.model_context_window > 0 {
                    self.status.context_window = t.model_context_window;
                }
            }
            Msg::TurnComplete(_) => self.turn_ended(),
            Msg::TurnAborted(a) => {
                self.turn_ended();
                let text = if a.reason == TurnAbortReason::Interrupted as i32 {
                    "turn interrupted".to_string()
                } else {
                    format!("turn aborted: {}", abort_reason_name(a.reason))
                };
                self.note(Tone::Warn, &text);
            }
            Msg::Error(e) => {
                let class = if e.codex_error_info.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", e.codex_error_info)
                };
                self.note(Tone::Error, &format!("error: {}{class}", e.message));
            }
            Msg::Warning(w) => self.note(Tone::Warn, &format!("warning: {}", w.message)),
            Msg::ShutdownComplete(_) => {
                self.turn_ended();
                self.closed = true;
                self.note(Tone::Dim, "session closed");
            }
            Msg::ContextCompacted(_) => self.note(Tone::Dim, "context compacted into a summary"),
            Msg::McpToolCallBegin(b) => {
                self.note(Tone::Command, &crate::render::mcp_call_line(b));
            }
            Msg::McpToolCallEnd(end) if !end.error.is_empty() => {
                self.note(Tone::Error, &format!("mcp call failed: {}", end.error));
            }
            Msg::McpToolCallEnd(end) if !end.success => {
                self.note(Tone::Error, "mcp tool reported an error");
            }
            Msg::WebSearchEnd(w) => self.note(Tone::Command, &format!("web search: {}", w.query)),
            Msg::PatchApplyBegin(p) => {
                // An approved patch showed its diff with the request.
                let mut lines = Vec::new();
                for change in &p.changes {
                    lines.push((Tone::Bold, format!("patch: {}", change_line(change))));
                    if p.auto_approved {
                        let (diff, truncated) = change_diff(change);
                        lines.extend(diff_lines(&diff));
                        if truncated {
                            lines.push((Tone::Dim, "… (cut for display)".to_string()));
                        }
                    }
                }
                self.cells.push(Cell::Lines(lines));
            }
            Msg::McpToolCallEnd(_) | Msg::WebSearchBegin(_) | Msg::DynamicToolCallResponse(_) => {}
            other => {
                let lines = request_lines(other);
                if !lines.is_empty() {
                    self.cells.push(Cell::Lines(lines));
                }
            }
        }
        true
    }

    fn turn_ended(&mut self) {
        self.running = None;
        self.command = None;
        self.live.clear();
    }

    fn drop_live(&mut self, kind: LiveKind) {
        self.live.retain(|l| l.kind != kind);
    }

    /// Every line of the transcript, cells separated by a blank line; the
    /// live text last.
    pub(crate) fn lines(&self) -> Vec<Line> {
        let mut lines = Vec::new();
        let live = self.live.iter().map(|l| match l.kind {
            LiveKind::Message => Cell::Assistant(l.text.clone()),
            LiveKind::Reasoning => Cell::Reasoning(l.text.clone()),
        });
        for cell in self.cells.iter().cloned().chain(live) {
            if !lines.is_empty() {
                lines.push((Tone::Plain, String::new()));
            }
            lines.extend(cell_lines(&cell));
        }
        lines
    }
}

/// Green for an added line of a diff, red for a removed one.
fn diff_tone(line: &str) -> Option<Tone> {
    if line.starts_with('+') && !line.starts_with("+++") {
        Some(Tone::Added)
    } else if line.starts_with('-') && !line.starts_with("---") {
        Some(Tone::Removed)
    } else {
        None
    }
}

fn diff_lines(diff: &str) -> Vec<Line> {
    diff.lines()
        .map(|line| (diff_tone(line).unwrap_or(Tone::Plain), line.to_string()))
        .collect()
}

/// `1.2s`, `340ms`.
pub(crate) fn duration(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else {
        format!("{}.{}s", ms / 1000, ms % 1000 / 100)
    }
}

/// A cell's lines, before wrapping.
pub(crate) fn cell_lines(cell: &Cell) -> Vec<Line> {
    match cell {
        Cell::User(text) => prefixed(Tone::User, "> ", text),
        Cell::Assistant(text) => prefixed(Tone::Plain, "* ", text),
        Cell::Reasoning(text) => prefixed(Tone::Reasoning, "thinking: ", text),
        Cell::Exec(exec) => {
            let mut lines = vec![(Tone::Command, format!("$ {}", exec.command))];
            let Some(end) = &exec.end else {
                return lines;
            };
            let output: Vec<&str> = end.output.lines().collect();
            let skip = output.len().saturating_sub(OUTPUT_TAIL);
            if skip > 0 {
                lines.push((Tone::Dim, format!("  … {skip} earlier lines")));
            }
            lines.extend(output[skip..].iter().map(|l| (Tone::Dim, format!("  {l}"))));
            lines.push(if end.declined {
                (Tone::Warn, "  (declined)".to_string())
            } else if end.exit_code == 0 {
                (
                    Tone::Dim,
                    format!("  exit 0 in {}", duration(end.duration_ms)),
                )
            } else {
                (
                    Tone::Error,
                    format!("  exit {} in {}", end.exit_code, duration(end.duration_ms)),
                )
            });
            lines
        }
        Cell::Lines(lines) => lines.clone(),
    }
}

#[cfg(test)]
#[path = "model_tests.rs"]
mod tests;
