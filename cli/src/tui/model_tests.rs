//! Tests of the transcript model: cells from events, deltas replaced by
//! durable events, resumed streams that overlap.

#![allow(clippy::unwrap_used)]

use keel_proto::v1::{
    AgentMessage, AgentReasoning, ApplyPatchApprovalRequest, EventGap, ExecApprovalRequest,
    ExecCommandBegin, ExecCommandEnd, FileChange, LiveDelta, LiveDeltaKind, PlanItem, PlanUpdate,
    RequestResolved, SessionConfigured, TokenCount, TokenUsage, TurnAborted, TurnComplete,
    TurnStarted, UserMessage, file_change,
};

use super::*;

fn ev(offset: u64, msg: Msg) -> Event {
    Event {
        agent_id: String::new(),
        parent_agent_id: String::new(),
        offset,
        turn_id: "t1".to_string(),
        time: None,
        msg: Some(msg),
    }
}

fn strings(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

/// A turn that runs `echo hello` and answers.
fn turn() -> Vec<Event> {
    vec![
        ev(
            1,
            Msg::SessionConfigured(SessionConfigured {
                session_id: "s1".to_string(),
                model: "test-model".to_string(),
                cwd: "/work".to_string(),
                context: Some(TurnContext {
                    approval_policy: keel_proto::v1::ApprovalPolicy::OnRequest as i32,
                    sandbox: Some(keel_proto::v1::SandboxPolicy {
                        mode: keel_proto::v1::SandboxMode::WorkspaceWrite as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        ),
        ev(2, Msg::TurnStarted(TurnStarted {})),
        ev(
            3,
            Msg::UserMessage(UserMessage {
                message: "run echo hello".to_string(),
                truncated: false,
            }),
        ),
        ev(
            4,
            Msg::AgentReasoning(AgentReasoning {
                text: "I should run echo".to_string(),
            }),
        ),
        ev(
            5,
            Msg::ExecCommandBegin(ExecCommandBegin {
                call_id: "c1".to_string(),
                command: strings(&["echo", "hello"]),
                cwd: "/work".to_string(),
            }),
        ),
        ev(
            6,
            Msg::ExecCommandEnd(ExecCommandEnd {
                call_id: "c1".to_string(),
                command: strings(&["echo", "hello"]),
                exit_code: 0,
                duration_ms: 1500,
                aggregated_output: "hello\n".to_string(),
                status: ExecCommandStatus::Completed as i32,
                ..Default::default()
            }),
        ),
        ev(
            7,
            Msg::AgentMessage(AgentMessage {
                message: "It printed hello.".to_string(),
                truncated: false,
            }),
        ),
        ev(
            8,
            Msg::TokenCount(TokenCount {
                total_token_usage: Some(TokenUsage {
                    total_tokens: 15_000,
                    ..Default::default()
                }),
                last_token_usage: Some(TokenUsage {
                    total_tokens: 25_000,
                    ..Default::default()
                }),
                model_context_window: 100_000,
                rate_limits: None,
            }),
        ),
        ev(
            9,
            Msg::TurnComplete(TurnComplete {
                last_agent_message: "It printed hello.".to_string(),
            }),
        ),
    ]
}

fn text(t: &Transcript) -> Vec<String> {
    t.lines().into_iter().map(|(_, text)| text).collect()
}

fn now() -> SystemTime {
    SystemTime::now()
}

#[test]
fn cells_from_events() {
    let mut t = Transcript::default();
    for e in turn() {
        assert!(t.event(&e, now()));
    }
    assert_eq!(
        text(&t),
        [
            "session s1 - model test-model, in /work",
            "",
            "> run echo hello",
            "",
            "thinking: I should run echo",
            "",
            "$ echo hello",
            "  hello",
            "  exit 0 in 1.5s",
            "",
            "* It printed hello.",
        ]
    );
    assert_eq!(t.status.model, "test-model");
    assert_eq!(t.status.sandbox, "workspace-write");
    assert_eq!(t.status.approvals, "on-request");
    assert_eq!(t.status.total_tokens, 15_000);
    assert_eq!(t.status.context_left(), Some(75));
    assert!(t.running.is_none(), "the turn ended");
    assert_eq!(t.last_offset, 9);
}

#[test]
fn a_running_command_and_its_output_tail() {
    let mut t = Transcript::default();
    let events = turn();
    for e in &events[..5] {
        t.event(e, now());
    }
    assert!(t.running.is_some());
    assert_eq!(t.command.as_ref().unwrap().0, "echo hello");
    assert_eq!(text(&t).last().unwrap(), "$ echo hello");
    let output: String = (1..=9).map(|i| format!("line {i}\n")).collect();
    t.event(
        &ev(
            6,
            Msg::ExecCommandEnd(ExecCommandEnd {
                call_id: "c1".to_string(),
                exit_code: 2,
                duration_ms: 20,
                aggregated_output: output,
                ..Default::default()
            }),
        ),
        now(),
    );
    assert!(t.command.is_none());
    let lines = text(&t);
    assert_eq!(
        lines[lines.len() - 8..lines.len() - 1],
        [
            "$ echo hello",
            "  … 4 earlier lines",
            "  line 5",
            "  line 6",
            "  line 7",
            "  line 8",
            "  line 9",
        ][..]
    );
    let tones = t.lines();
    assert_eq!(
        tones.last().unwrap(),
        &(Tone::Error, "  exit 2 in 20ms".to_string())
    );
}

fn delta(kind: LiveDeltaKind, item: &str, text: &str, events_before: u64) -> LiveDelta {
    LiveDelta {
        turn_id: "t1".to_string(),
        item_id: item.to_string(),
        kind: kind as i32,
        delta: text.to_string(),
        summary_index: 0,
        events_before,
    }
}

#[test]
fn deltas_are_replaced_by_the_durable_event() {
    let mut t = Transcript::default();
    let events = turn();
    for e in &events[..3] {
        t.event(e, now());
    }
    t.delta(&delta(LiveDeltaKind::ReasoningSummary, "r1", "I should", 3));
    t.delta(&delta(LiveDeltaKind::ReasoningSummary, "r1", " run", 3));
    assert_eq!(text(&t).last().unwrap(), "thinking: I should run");
    t.event(&events[3], now());
    // The durable reasoning replaced the live text, once.
    assert_eq!(
        text(&t)
            .iter()
            .filter(|l| l.starts_with("thinking:"))
            .collect::<Vec<_>>(),
        ["thinking: I should run echo"]
    );
    for e in &events[4..6] {
        t.event(e, now());
    }
    t.delta(&delta(LiveDeltaKind::AgentMessage, "m1", "It printed", 6));
    assert_eq!(text(&t).last().unwrap(), "* It printed");
    t.event(&events[6], now());
    // A delta of the same model call arriving late (a resumed stream) is
    // not shown again.
    t.delta(&delta(LiveDeltaKind::AgentMessage, "m1", " hello.", 6));
    t.delta(&delta(LiveDeltaKind::ReasoningSummary, "r1", "again", 3));
    let lines = text(&t);
    assert_eq!(lines.last().unwrap(), "* It printed hello.");
    assert_eq!(lines.iter().filter(|l| l.starts_with("* ")).count(), 1);
    // MCP progress is not transcript text.
    t.delta(&delta(LiveDeltaKind::McpProgress, "c9", "1/2", 7));
    assert_eq!(text(&t), lines);
    // A turn that ends drops what its deltas showed without a message.
    t.delta(&delta(LiveDeltaKind::AgentMessage, "m2", "half a thou", 8));
    assert_eq!(text(&t).last().unwrap(), "* half a thou");
    t.event(&events[8], now());
    assert_eq!(text(&t).last().unwrap(), "* It printed hello.");
}

#[test]
fn a_resumed_stream_that_overlaps_adds_nothing_twice() {
    let events = turn();
    let mut once = Transcript::default();
    for e in &events {
        once.event(e, now());
    }
    let mut resumed = Transcript::default();
    for e in &events[..6] {
        resumed.event(e, now());
    }
    // The stream broke after offset 6 and was opened again after an
    // earlier offset: the overlap is dropped.
    for e in &events[3..] {
        let fresh = e.offset > 6;
        assert_eq!(resumed.event(e, now()), fresh, "offset {}", e.offset);
    }
    assert_eq!(text(&resumed), text(&once));
    assert_eq!(resumed.last_offset, 9);
}

#[test]
fn gaps_say_how_many_events_are_gone() {
    let mut t = Transcript::default();
    t.gap(&EventGap {
        after_offset: 0,
        first_retained_offset: 41,
        ..Default::default()
    });
    assert_eq!(text(&t), ["40 earlier events are no longer retained"]);
    assert_eq!(t.last_offset, 40);
    assert!(!t.event(&ev(40, Msg::TurnStarted(TurnStarted {})), now()));
    assert!(t.event(&ev(41, Msg::TurnStarted(TurnStarted {})), now()));
}

#[test]
fn requests_plans_patches_and_aborts() {
    let mut t = Transcript::default();
    t.event(&ev(1, Msg::TurnStarted(TurnStarted {})), now());
    t.event(
        &ev(
            2,
            Msg::ExecApprovalRequest(ExecApprovalRequest {
                call_id: "call_rm".to_string(),
                command: strings(&["rm", "-rf", "victim"]),
                cwd: "/work".to_string(),
                ..Default::default()
            }),
        ),
        now(),
    );
    assert!(t.asker.asking() && t.asker.wants_decision());
    let lines = t.lines();
    assert_eq!(
        lines[lines.len() - 2..],
        [
            (
                Tone::Warn,
                "approval needed [call_rm]: $ rm -rf victim".to_string()
            ),
            (Tone::Plain, "  in /work".to_string()),
        ]
    );
    t.event(
        &ev(
            3,
            Msg::RequestResolved(RequestResolved {
                call_id: "call_rm".to_string(),
                kind: 1,
                decision: 1,
                answered_by: "tester".to_string(),
            }),
        ),
        now(),
    );
    assert!(!t.asker.asking(), "answered elsewhere");
    assert_eq!(text(&t).last().unwrap(), "[call_rm] approved by tester");
    t.event(
        &ev(
            4,
            Msg::PlanUpdate(PlanUpdate {
                explanation: String::new(),
                plan: vec![
                    PlanItem {
                        step: "read".to_string(),
                        status: "completed".to_string(),
                    },
                    PlanItem {
                        step: "fix".to_string(),
                        status: "in_progress".to_string(),
                    },
                ],
            }),
        ),
        now(),
    );
    assert_eq!(
        text(&t)[text(&t).len() - 3..],
        ["plan:", "  [x] read", "  [~] fix"][..]
    );
    let change = FileChange {
        path: "a.txt".to_string(),
        kind: Some(file_change::Kind::Update(keel_proto::v1::UpdateFile {
            unified_diff: "@@ -1 +1 @@\n-old\n+new\n".to_string(),
            move_path: String::new(),
            truncated: false,
        })),
    };
    t.event(
        &ev(
            5,
            Msg::ApplyPatchApprovalRequest(ApplyPatchApprovalRequest {
                call_id: "p1".to_string(),
                changes: vec![change.clone()],
                reason: String::new(),
            }),
        ),
        now(),
    );
    let lines = t.lines();
    assert_eq!(
        lines[lines.len() - 3..],
        [
            (Tone::Plain, "@@ -1 +1 @@".to_string()),
            (Tone::Removed, "-old".to_string()),
            (Tone::Added, "+new".to_string()),
        ]
    );
    t.event(
        &ev(
            6,
            Msg::PatchApplyBegin(keel_proto::v1::PatchApplyBegin {
                call_id: "p2".to_string(),
                auto_approved: true,
                changes: vec![change],
            }),
        ),
        now(),
    );
    assert_eq!(
        text(&t)[text(&t).len() - 4..],
        ["patch: M a.txt", "@@ -1 +1 @@", "-old", "+new"][..]
    );
    t.event(
        &ev(
            7,
            Msg::TurnAborted(TurnAborted {
                reason: TurnAbortReason::Interrupted as i32,
            }),
        ),
        now(),
    );
    assert_eq!(text(&t).last().unwrap(), "turn interrupted");
    assert!(t.running.is_none());
}

#[test]
fn wrapped_text_lines() {
    let mut t = Transcript::default();
    t.note(Tone::Plain, "abcdef");
    assert_eq!(crate::tui::view::text_lines(&t, 4), ["abcd", "ef"]);
}

#[test]
fn a_fork_shows_its_parents_history_first() {
    let origin = keel_proto::v1::ForkOrigin {
        session_id: "parent".to_string(),
        turn_id: "t1".to_string(),
        event_offset: 9,
    };
    let mut t = Transcript::default();
    // The fork's own first event, then the parent's history put before it.
    assert!(t.event(
        &ev(
            1,
            Msg::UserMessage(UserMessage {
                message: "and then?".to_string(),
                truncated: false,
            }),
        ),
        now(),
    ));
    t.fork_prelude(&origin, Some(&turn()));
    let lines = text(&t);
    let divider = lines
        .iter()
        .position(|l| l == "── forked from session parent at turn t1 ──")
        .unwrap();
    let parent = lines.iter().position(|l| l == "> run echo hello").unwrap();
    let own = lines.iter().position(|l| l == "> and then?").unwrap();
    assert!(parent < divider && divider < own, "{lines:#?}");
    // The fork's own offsets are untouched by the parent's.
    assert_eq!(t.last_offset, 1);

    let mut gone = Transcript::default();
    gone.fork_prelude(&origin, None);
    assert_eq!(
        text(&gone),
        ["── forked from session parent at turn t1 (its history is no longer available) ──"]
    );
}
