//! The human-in-the-loop events: approval requests, questions to the user,
//! client (dynamic) tool calls, their resolution, patches and plans.
//!
//! JSON follows Codex's event fields:
//! * decisions and request kinds are snake_case strings (`approved_for_session`,
//!   `exec_approval`); an unspecified one is `null`;
//! * `changes` is an object keyed by path, each value tagged like Codex's
//!   `FileChange`: `{"type":"add","content":..}`, `{"type":"delete","content":..}`
//!   or `{"type":"update","unified_diff":..,"move_path":..}`, plus `truncated`;
//! * `parsed_cmd` entries are `{"type":"read"|"list_files"|"search"|"unknown", ..}`;
//! * optional texts that are empty (`reason`, `move_path`, the proposed
//!   amendment) are `null`, as Codex's `Option`s are;
//! * a dynamic tool call's `arguments` is the parsed JSON when it parses, else
//!   the raw text.
//!
//! On a terminal, requests go to stderr (they are an exchange with the
//! person, not the agent's output), as do resolutions; the patch being
//! applied and the plan go to stdout with the rest of what the agent does.

use std::io::{self, Write};

use keel_proto::v1::event::Msg;
use keel_proto::v1::file_change::Kind as ChangeKind;
use keel_proto::v1::{
    ApplyPatchApprovalRequest, ExecApprovalRequest, FileChange, PendingRequestKind, PlanUpdate,
    RequestUserInput, ReviewDecisionKind,
};
use serde_json::{Value, json};

use super::{Style, enum_name, shell_join, write_block};

/// `approved_for_session`; `None` for unspecified or unknown values.
pub(crate) fn decision_name(value: i32) -> Option<String> {
    match ReviewDecisionKind::try_from(value) {
        Ok(ReviewDecisionKind::Unspecified) | Err(_) => None,
        Ok(kind) => Some(enum_name(Some(kind.as_str_name()), "REVIEW_DECISION_KIND_")),
    }
}

/// `exec_approval`; `None` for unspecified or unknown values.
pub(crate) fn request_kind_name(value: i32) -> Option<String> {
    match PendingRequestKind::try_from(value) {
        Ok(PendingRequestKind::Unspecified) | Err(_) => None,
        Ok(kind) => Some(enum_name(Some(kind.as_str_name()), "PENDING_REQUEST_KIND_")),
    }
}

fn non_empty(text: &str) -> Value {
    if text.is_empty() {
        Value::Null
    } else {
        json!(text)
    }
}

pub(crate) fn changes_json(changes: &[FileChange]) -> Value {
    let map = changes
        .iter()
        .map(|c| {
            let change = match &c.kind {
                Some(ChangeKind::Add(a)) => {
                    json!({"type": "add", "content": a.content, "truncated": a.truncated})
                }
                Some(ChangeKind::Delete(d)) => {
                    json!({"type": "delete", "content": d.content, "truncated": d.truncated})
                }
                Some(ChangeKind::Update(u)) => json!({
                    "type": "update",
                    "unified_diff": u.unified_diff,
                    "move_path": non_empty(&u.move_path),
                    "truncated": u.truncated,
                }),
                None => json!({"type": "unknown"}),
            };
            (c.path.clone(), change)
        })
        .collect();
    Value::Object(map)
}

/// The JSON fields of a request-related message; `None` for other messages.
pub(crate) fn fields(msg: &Msg) -> Option<Value> {
    Some(match msg {
        Msg::ExecApprovalRequest(m) => json!({
            "call_id": m.call_id,
            "command": m.command,
            "cwd": m.cwd,
            "reason": non_empty(&m.reason),
            "proposed_execpolicy_amendment": if m.proposed_execpolicy_amendment.is_empty() {
                Value::Null
            } else {
                json!(m.proposed_execpolicy_amendment)
            },
            "parsed_cmd": m.parsed_cmd.iter().map(|p| json!({
                "type": p.r#type,
                "cmd": p.cmd,
                "name": non_empty(&p.name),
                "path": non_empty(&p.path),
                "query": non_empty(&p.query),
            })).collect::<Vec<_>>(),
            "available_decisions": m.available_decisions.iter()
                .filter_map(|d| decision_name(*d)).collect::<Vec<_>>(),
        }),
        Msg::ApplyPatchApprovalRequest(m) => json!({
            "call_id": m.call_id,
            "changes": changes_json(&m.changes),
            "reason": non_empty(&m.reason),
        }),
        Msg::PatchApplyBegin(m) => json!({
            "call_id": m.call_id,
            "auto_approved": m.auto_approved,
            "changes": changes_json(&m.changes),
        }),
        Msg::PatchApplyEnd(m) => json!({
            "call_id": m.call_id,
            "output": m.output,
            "success": m.success,
        }),
        Msg::RequestUserInput(m) => json!({
            "call_id": m.call_id,
            "questions": m.questions.iter().map(|q| json!({
                "id": q.id,
                "header": q.header,
                "question": q.question,
                "is_other": q.is_other,
                "options": q.options.iter()
                    .map(|o| json!({"label": o.label, "description": o.description}))
                    .collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        }),
        Msg::DynamicToolCallRequest(m) => json!({
            "call_id": m.call_id,
            "namespace": non_empty(&m.namespace),
            "tool": m.tool,
            "arguments": serde_json::from_str::<Value>(&m.arguments)
                .unwrap_or_else(|_| json!(m.arguments)),
        }),
        Msg::DynamicToolCallResponse(m) => json!({"call_id": m.call_id, "success": m.success}),
        Msg::ElicitationRequest(m) => json!({
            "id": m.request_id,
            "server_name": m.server_name,
            "message": m.message,
            "requested_schema": serde_json::from_str::<Value>(&m.requested_schema_json)
                .unwrap_or_else(|_| json!(m.requested_schema_json)),
            "call_id": m.call_id,
        }),
        Msg::PlanUpdate(m) => json!({
            "explanation": non_empty(&m.explanation),
            "plan": m.plan.iter()
                .map(|p| json!({"step": p.step, "status": p.status}))
                .collect::<Vec<_>>(),
        }),
        Msg::RequestResolved(m) => json!({
            "call_id": m.call_id,
            "kind": request_kind_name(m.kind),
            "decision": decision_name(m.decision),
            "answered_by": non_empty(&m.answered_by),
        }),
        _ => return None,
    })
}

/// Writes a request-related message for a person; false for other messages.
pub(crate) fn human<O: Write, E: Write>(
    msg: &Msg,
    out: &mut O,
    o: Style,
    err: &mut E,
    e: Style,
) -> io::Result<bool> {
    match msg {
        Msg::ExecApprovalRequest(m) => exec_request(err, e, m)?,
        Msg::ApplyPatchApprovalRequest(m) => patch_request(err, e, m)?,
        Msg::RequestUserInput(m) => questions(err, e, m)?,
        Msg::DynamicToolCallRequest(m) => {
            let name = if m.namespace.is_empty() {
                m.tool.clone()
            } else {
                format!("{}__{}", m.namespace, m.tool)
            };
            let line = format!("client tool call [{}]: {name} {}", m.call_id, m.arguments);
            writeln!(err, "{}", e.bold(&line))?;
        }
        Msg::ElicitationRequest(m) => {
            let line = format!("{} asks [{}]: {}", m.server_name, m.request_id, m.message);
            writeln!(err, "{}", e.bold(&line))?;
            writeln!(
                err,
                "{}",
                e.dim(&format!("answer schema: {}", m.requested_schema_json))
            )?;
            writeln!(
                err,
                "{}",
                e.dim("answer with: keel answer <session> <id> --accept '<json>' | --decline | --cancel")
            )?;
        }
        Msg::DynamicToolCallResponse(m) => {
            let how = if m.success { "succeeded" } else { "failed" };
            writeln!(
                err,
                "{}",
                e.dim(&format!("client tool [{}] {how}", m.call_id))
            )?;
        }
        Msg::RequestResolved(m) => {
            let what = match decision_name(m.decision) {
                Some(decision) => decision.replace('_', " "),
                None => "answered".to_string(),
            };
            let by = if m.answered_by.is_empty() {
                String::new()
            } else {
                format!(" by {}", m.answered_by)
            };
            writeln!(err, "{}", e.dim(&format!("[{}] {what}{by}", m.call_id)))?;
        }
        Msg::PatchApplyBegin(m) => {
            for change in &m.changes {
                writeln!(
                    out,
                    "{}",
                    o.bold(&format!("patch: {}", change_line(change)))
                )?;
            }
        }
        Msg::PatchApplyEnd(m) => {
            if !m.success {
                write_block(out, &m.output)?;
                writeln!(out, "{}", o.red("patch failed"))?;
            }
        }
        Msg::PlanUpdate(m) => plan(out, o, m)?,
        _ => return Ok(false),
    }
    Ok(true)
}

/// `A path`, `D path`, `M path` or `M from -> to`, as `git status` spells them.
pub(crate) fn change_line(change: &FileChange) -> String {
    match &change.kind {
        Some(ChangeKind::Add(_)) => format!("A {}", change.path),
        Some(ChangeKind::Delete(_)) => format!("D {}", change.path),
        Some(ChangeKind::Update(u)) if !u.move_path.is_empty() => {
            format!("M {} -> {}", change.path, u.move_path)
        }
        Some(ChangeKind::Update(_)) | None => format!("M {}", change.path),
    }
}

fn exec_request(err: &mut impl Write, e: Style, m: &ExecApprovalRequest) -> io::Result<()> {
    let head = format!(
        "approval needed [{}]: $ {}",
        m.call_id,
        shell_join(&m.command)
    );
    writeln!(err, "{}", e.yellow(&head))?;
    writeln!(err, "  in {}", m.cwd)?;
    if !m.reason.is_empty() {
        writeln!(err, "  reason: {}", m.reason)?;
    }
    if !m.proposed_execpolicy_amendment.is_empty() {
        writeln!(
            err,
            "  proposed amendment: allow `{}` from now on",
            shell_join(&m.proposed_execpolicy_amendment)
        )?;
    }
    Ok(())
}

fn patch_request(err: &mut impl Write, e: Style, m: &ApplyPatchApprovalRequest) -> io::Result<()> {
    let files = match m.changes.len() {
        1 => "1 file".to_string(),
        n => format!("{n} files"),
    };
    let head = format!("approval needed [{}]: a patch to {files}", m.call_id);
    writeln!(err, "{}", e.yellow(&head))?;
    if !m.reason.is_empty() {
        writeln!(err, "  reason: {}", m.reason)?;
    }
    for change in &m.changes {
        writeln!(err, "{}", e.bold(&change_line(change)))?;
        let (diff, truncated) = change_diff(change);
        for line in diff.lines() {
            let painted = if line.starts_with('+') && !line.starts_with("+++") {
                e.green(line)
            } else if line.starts_with('-') && !line.starts_with("---") {
                e.red(line)
            } else {
                line.to_string()
            };
            writeln!(err, "{painted}")?;
        }
        if truncated {
            writeln!(err, "{}", e.dim("… (cut for display)"))?;
        }
    }
    Ok(())
}

/// A change as diff lines (added or deleted content prefixed with `+` or
/// `-`, an update's unified diff), and whether it was cut for display.
pub(crate) fn change_diff(change: &FileChange) -> (String, bool) {
    match &change.kind {
        Some(ChangeKind::Add(a)) => (prefixed('+', &a.content), a.truncated),
        Some(ChangeKind::Delete(d)) => (prefixed('-', &d.content), d.truncated),
        Some(ChangeKind::Update(u)) => (u.unified_diff.clone(), u.truncated),
        None => (String::new(), false),
    }
}

/// Every line of `text` with `sign` in front, as a diff shows added or
/// deleted content.
fn prefixed(sign: char, text: &str) -> String {
    text.lines().map(|l| format!("{sign}{l}\n")).collect()
}

fn questions(err: &mut impl Write, e: Style, m: &RequestUserInput) -> io::Result<()> {
    let head = format!("the agent asks [{}]:", m.call_id);
    writeln!(err, "{}", e.yellow(&head))?;
    for q in &m.questions {
        writeln!(err, "  [{}] {}: {}", q.id, q.header, q.question)?;
        for (i, option) in q.options.iter().enumerate() {
            if option.description.is_empty() {
                writeln!(err, "    {}. {}", i + 1, option.label)?;
            } else {
                writeln!(
                    err,
                    "    {}. {} {}",
                    i + 1,
                    option.label,
                    e.dim(&format!("— {}", option.description))
                )?;
            }
        }
        if q.is_other {
            writeln!(err, "    {}", e.dim("(or an answer of your own)"))?;
        }
    }
    Ok(())
}

fn plan(out: &mut impl Write, o: Style, m: &PlanUpdate) -> io::Result<()> {
    writeln!(out, "{}", o.bold("plan:"))?;
    if !m.explanation.is_empty() {
        writeln!(out, "  {}", m.explanation)?;
    }
    for item in &m.plan {
        let mark = match item.status.as_str() {
            "completed" => "[x]",
            "in_progress" => "[~]",
            _ => "[ ]",
        };
        writeln!(out, "  {mark} {}", item.step)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
