#![allow(clippy::unwrap_used)]

use keel_proto::v1::{
    AddFile, DeleteFile, DynamicToolCallRequest, DynamicToolCallResponse, Event, ParsedCommand,
    PatchApplyBegin, PatchApplyEnd, PlanItem, RequestResolved, UpdateFile, UserInputOption,
    UserInputQuestion,
};

use super::*;
use crate::render::{HumanRenderer, event_json};

fn event(msg: Msg) -> Event {
    Event {
        agent_id: String::new(),
        parent_agent_id: String::new(),
        offset: 9,
        turn_id: "t1".to_string(),
        time: None,
        msg: Some(msg),
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// (stdout, stderr) of the human renderer for one message.
fn render(msg: Msg) -> (String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    {
        let style = Style { color: false };
        let mut r = HumanRenderer::new(&mut out, style, &mut err, style);
        r.event(&event(msg)).unwrap();
    }
    (
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

fn exec_request() -> Msg {
    Msg::ExecApprovalRequest(ExecApprovalRequest {
        call_id: "c1".into(),
        command: strings(&["rm", "-rf", "build dir"]),
        cwd: "/w".into(),
        reason: "dangerous command".into(),
        proposed_execpolicy_amendment: strings(&["rm", "-rf"]),
        parsed_cmd: vec![ParsedCommand {
            r#type: "unknown".into(),
            cmd: "rm -rf 'build dir'".into(),
            ..Default::default()
        }],
        available_decisions: vec![
            ReviewDecisionKind::Approved as i32,
            ReviewDecisionKind::ApprovedExecpolicyAmendment as i32,
            ReviewDecisionKind::Abort as i32,
        ],
    })
}

fn changes() -> Vec<FileChange> {
    vec![
        FileChange {
            path: "/w/new.txt".into(),
            kind: Some(ChangeKind::Add(AddFile {
                content: "one\ntwo\n".into(),
                truncated: false,
            })),
        },
        FileChange {
            path: "/w/old.txt".into(),
            kind: Some(ChangeKind::Delete(DeleteFile {
                content: "gone\n".into(),
                truncated: true,
            })),
        },
        FileChange {
            path: "/w/a.rs".into(),
            kind: Some(ChangeKind::Update(UpdateFile {
                unified_diff: "@@ -1 +1 @@\n-fn a() {}\n+fn b() {}\n".into(),
                move_path: "/w/b.rs".into(),
                truncated: false,
            })),
        },
    ]
}

fn patch_request() -> Msg {
    Msg::ApplyPatchApprovalRequest(ApplyPatchApprovalRequest {
        call_id: "p1".into(),
        changes: changes(),
        reason: String::new(),
    })
}

fn questions_request() -> Msg {
    Msg::RequestUserInput(RequestUserInput {
        call_id: "q1".into(),
        questions: vec![UserInputQuestion {
            id: "lang".into(),
            header: "Language".into(),
            question: "Which language?".into(),
            options: vec![
                UserInputOption {
                    label: "Rust (Recommended)".into(),
                    description: "fast".into(),
                },
                UserInputOption {
                    label: "Go".into(),
                    description: String::new(),
                },
            ],
            is_other: true,
        }],
    })
}

#[test]
fn exec_approval_request_json() {
    assert_eq!(
        event_json(&event(exec_request())),
        json!({
            "offset": 9, "turn_id": "t1", "time": null,
            "type": "exec_approval_request",
            "call_id": "c1",
            "command": ["rm", "-rf", "build dir"],
            "cwd": "/w",
            "reason": "dangerous command",
            "proposed_execpolicy_amendment": ["rm", "-rf"],
            "parsed_cmd": [{"type": "unknown", "cmd": "rm -rf 'build dir'",
                            "name": null, "path": null, "query": null}],
            "available_decisions": ["approved", "approved_execpolicy_amendment", "abort"],
        })
    );
    let bare = Msg::ExecApprovalRequest(ExecApprovalRequest::default());
    let v = event_json(&event(bare));
    assert_eq!(v["reason"], Value::Null);
    assert_eq!(v["proposed_execpolicy_amendment"], Value::Null);
}

#[test]
fn patch_events_json() {
    let v = event_json(&event(patch_request()));
    assert_eq!(v["type"], "apply_patch_approval_request");
    assert_eq!(v["reason"], Value::Null);
    assert_eq!(
        v["changes"],
        json!({
            "/w/new.txt": {"type": "add", "content": "one\ntwo\n", "truncated": false},
            "/w/old.txt": {"type": "delete", "content": "gone\n", "truncated": true},
            "/w/a.rs": {"type": "update", "unified_diff": "@@ -1 +1 @@\n-fn a() {}\n+fn b() {}\n",
                        "move_path": "/w/b.rs", "truncated": false},
        })
    );
    let begin = Msg::PatchApplyBegin(PatchApplyBegin {
        call_id: "p1".into(),
        auto_approved: true,
        changes: changes(),
    });
    let v = event_json(&event(begin));
    assert_eq!(v["type"], "patch_apply_begin");
    assert_eq!(v["auto_approved"], true);
    assert_eq!(v["changes"]["/w/new.txt"]["type"], "add");
    let end = Msg::PatchApplyEnd(PatchApplyEnd {
        call_id: "p1".into(),
        output: "Success.".into(),
        success: true,
    });
    assert_eq!(
        event_json(&event(end)),
        json!({"offset": 9, "turn_id": "t1", "time": null, "type": "patch_apply_end",
               "call_id": "p1", "output": "Success.", "success": true})
    );
}

#[test]
fn user_input_and_dynamic_tool_json() {
    let v = event_json(&event(questions_request()));
    assert_eq!(v["type"], "request_user_input");
    assert_eq!(
        v["questions"],
        json!([{
            "id": "lang", "header": "Language", "question": "Which language?", "is_other": true,
            "options": [{"label": "Rust (Recommended)", "description": "fast"},
                        {"label": "Go", "description": ""}],
        }])
    );
    let call = |arguments: &str| {
        Msg::DynamicToolCallRequest(DynamicToolCallRequest {
            call_id: "d1".into(),
            namespace: String::new(),
            tool: "lookup".into(),
            arguments: arguments.into(),
        })
    };
    let v = event_json(&event(call(r#"{"id":7}"#)));
    assert_eq!(v["type"], "dynamic_tool_call_request");
    assert_eq!(v["arguments"], json!({"id": 7}));
    assert_eq!(v["namespace"], Value::Null);
    assert_eq!(v["tool"], "lookup");
    assert_eq!(
        event_json(&event(call("not json")))["arguments"],
        "not json"
    );
    let response = Msg::DynamicToolCallResponse(DynamicToolCallResponse {
        call_id: "d1".into(),
        success: false,
    });
    let v = event_json(&event(response));
    assert_eq!(v["type"], "dynamic_tool_call_response");
    assert_eq!(v["success"], false);
}

#[test]
fn plan_and_resolution_json() {
    let plan = Msg::PlanUpdate(PlanUpdate {
        explanation: String::new(),
        plan: vec![PlanItem {
            step: "write tests".into(),
            status: "in_progress".into(),
        }],
    });
    assert_eq!(
        event_json(&event(plan)),
        json!({"offset": 9, "turn_id": "t1", "time": null, "type": "plan_update",
               "explanation": null,
               "plan": [{"step": "write tests", "status": "in_progress"}]})
    );
    let resolved = Msg::RequestResolved(RequestResolved {
        call_id: "c1".into(),
        kind: PendingRequestKind::ExecApproval as i32,
        decision: ReviewDecisionKind::ApprovedForSession as i32,
        answered_by: "alice".into(),
    });
    assert_eq!(
        event_json(&event(resolved)),
        json!({"offset": 9, "turn_id": "t1", "time": null, "type": "request_resolved",
               "call_id": "c1", "kind": "exec_approval", "decision": "approved_for_session",
               "answered_by": "alice"})
    );
    let answered = Msg::RequestResolved(RequestResolved {
        call_id: "q1".into(),
        kind: PendingRequestKind::UserInput as i32,
        decision: 0,
        answered_by: String::new(),
    });
    let v = event_json(&event(answered));
    assert_eq!(v["kind"], "user_input");
    assert_eq!(v["decision"], Value::Null);
}

#[test]
fn names() {
    assert_eq!(
        decision_name(ReviewDecisionKind::Denied as i32).as_deref(),
        Some("denied")
    );
    assert_eq!(decision_name(0), None);
    assert_eq!(decision_name(99), None);
    assert_eq!(
        request_kind_name(PendingRequestKind::DynamicTool as i32).as_deref(),
        Some("dynamic_tool")
    );
    assert_eq!(request_kind_name(0), None);
}

#[test]
fn exec_approval_request_for_a_person() {
    let (out, err) = render(exec_request());
    assert_eq!(out, "");
    assert_eq!(
        err,
        "approval needed [c1]: $ rm -rf 'build dir'\n  \
         in /w\n  \
         reason: dangerous command\n  \
         proposed amendment: allow `rm -rf` from now on\n"
    );
}

#[test]
fn patch_approval_request_shows_each_diff() {
    let (out, err) = render(patch_request());
    assert_eq!(out, "");
    assert_eq!(
        err,
        "approval needed [p1]: a patch to 3 files\n\
         A /w/new.txt\n+one\n+two\n\
         D /w/old.txt\n-gone\n… (cut for display)\n\
         M /w/a.rs -> /w/b.rs\n@@ -1 +1 @@\n-fn a() {}\n+fn b() {}\n"
    );
}

#[test]
fn diff_lines_are_colored_on_a_terminal() {
    let mut err = Vec::new();
    let style = Style { color: true };
    human(&patch_request(), &mut Vec::new(), style, &mut err, style).unwrap();
    let err = String::from_utf8(err).unwrap();
    assert!(err.contains("\x1b[32m+one\x1b[0m"), "{err:?}");
    assert!(err.contains("\x1b[31m-fn a() {}\x1b[0m"), "{err:?}");
}

#[test]
fn questions_for_a_person() {
    let (out, err) = render(questions_request());
    assert_eq!(out, "");
    assert_eq!(
        err,
        "the agent asks [q1]:\n  \
         [lang] Language: Which language?\n    \
         1. Rust (Recommended) — fast\n    \
         2. Go\n    \
         (or an answer of your own)\n"
    );
}

#[test]
fn patches_plans_and_resolutions_for_a_person() {
    let begin = Msg::PatchApplyBegin(PatchApplyBegin {
        call_id: "p1".into(),
        auto_approved: false,
        changes: changes(),
    });
    let (out, _) = render(begin);
    assert_eq!(
        out,
        "patch: A /w/new.txt\npatch: D /w/old.txt\npatch: M /w/a.rs -> /w/b.rs\n"
    );
    let ok = Msg::PatchApplyEnd(PatchApplyEnd {
        call_id: "p1".into(),
        output: "Success.".into(),
        success: true,
    });
    assert_eq!(render(ok), (String::new(), String::new()));
    let failed = Msg::PatchApplyEnd(PatchApplyEnd {
        call_id: "p1".into(),
        output: "no such file".into(),
        success: false,
    });
    assert_eq!(render(failed).0, "no such file\npatch failed\n");
    let plan = Msg::PlanUpdate(PlanUpdate {
        explanation: "Step by step.".into(),
        plan: vec![
            PlanItem {
                step: "read".into(),
                status: "completed".into(),
            },
            PlanItem {
                step: "write".into(),
                status: "in_progress".into(),
            },
            PlanItem {
                step: "test".into(),
                status: "pending".into(),
            },
        ],
    });
    assert_eq!(
        render(plan).0,
        "plan:\n  Step by step.\n  [x] read\n  [~] write\n  [ ] test\n"
    );
    let resolved = Msg::RequestResolved(RequestResolved {
        call_id: "c1".into(),
        kind: PendingRequestKind::ExecApproval as i32,
        decision: ReviewDecisionKind::ApprovedForSession as i32,
        answered_by: "alice".into(),
    });
    assert_eq!(render(resolved).1, "[c1] approved for session by alice\n");
    let call = Msg::DynamicToolCallRequest(DynamicToolCallRequest {
        call_id: "d1".into(),
        namespace: "crm".into(),
        tool: "lookup".into(),
        arguments: "{}".into(),
    });
    assert_eq!(render(call).1, "client tool call [d1]: crm__lookup {}\n");
}
