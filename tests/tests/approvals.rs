//! Approvals end to end over gRPC: a real stack, a scripted model asking for
//! commands, and a client answering the requests with Respond. Each scenario
//! is its own session on one stack (the fake model's script is consumed in
//! order, so scenarios run one after another). The stack rolls every
//! session's history over at each turn boundary (a tiny history budget), so
//! what must survive continue-as-new is exercised too.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::path::Path;

use keel_proto::v1 as pb;
use keel_test_support::fake_model::{FakeModel, RecordedRequest, Scripted, sse};
use keel_test_support::history;
use keel_test_support::session::{self, Client, EVENT_WAIT, until};
use keel_test_support::stack::{Stack, StackOptions};
use pb::ReviewDecisionKind as K;
use pb::event::Msg;
use serde_json::json;
use tonic::Streaming;

type Events = Streaming<pb::StreamEventsResponse>;

fn shell(call_id: &str, argv: &[&str]) -> Scripted {
    Scripted::tool_call(call_id, "shell", &json!({ "command": argv }).to_string())
}

async fn start(script: Vec<Scripted>, history_event_budget: u32) -> (FakeModel, Stack, Client) {
    let fake = FakeModel::start(script).await.unwrap();
    let mut opts = StackOptions::new(fake.base_url());
    opts.history_event_budget = history_event_budget;
    let stack = Stack::launch(opts).await.unwrap();
    let client = stack.connect().await.unwrap();
    (fake, stack, client)
}

/// A session in `cwd` with `context`, followed from the start.
async fn open(client: &mut Client, cwd: &Path, context: pb::TurnContext) -> (String, Events) {
    open_with_tools(client, cwd, context, vec![]).await
}

async fn open_with_tools(
    client: &mut Client,
    cwd: &Path,
    context: pb::TurnContext,
    dynamic_tools: Vec<pb::DynamicTool>,
) -> (String, Events) {
    let request = pb::CreateSessionRequest {
        cwd: cwd.display().to_string(),
        context: Some(context),
        dynamic_tools,
        ..Default::default()
    };
    session::open(client, request).await.unwrap()
}

fn policy(p: pb::ApprovalPolicy) -> pb::TurnContext {
    pb::TurnContext {
        approval_policy: p as i32,
        ..Default::default()
    }
}

async fn exec_request(events: &mut Events) -> (Vec<pb::Event>, pb::ExecApprovalRequest) {
    until(events, |e| match &e.msg {
        Some(Msg::ExecApprovalRequest(r)) => Some(r.clone()),
        Some(Msg::TurnComplete(_) | Msg::TurnAborted(_)) => {
            panic!("the turn ended without asking: {e:?}")
        }
        _ => None,
    })
    .await
    .unwrap()
}

/// Events up to and including the end of the turn (complete or aborted).
async fn turn_end(events: &mut Events) -> (Vec<pb::Event>, pb::Event) {
    until(events, |e| {
        matches!(e.msg, Some(Msg::TurnComplete(_) | Msg::TurnAborted(_))).then(|| e.clone())
    })
    .await
    .unwrap()
}

async fn respond(
    client: &mut Client,
    sid: &str,
    id: &str,
    answer: pb::respond_request::Answer,
) -> Result<(), tonic::Status> {
    client
        .respond(pb::RespondRequest {
            session_id: sid.into(),
            request_id: id.into(),
            answer: Some(answer),
            ..Default::default()
        })
        .await
        .map(|_| ())
}

fn decision(kind: K) -> pb::respond_request::Answer {
    pb::respond_request::Answer::Decision(pb::ReviewDecision {
        kind: kind as i32,
        execpolicy_amendment: vec![],
    })
}

fn requests_in(events: &[pb::Event]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e.msg, Some(Msg::ExecApprovalRequest(_))))
        .count()
}

fn ends_in(events: &[pb::Event]) -> Vec<pb::ExecCommandEnd> {
    events
        .iter()
        .filter_map(|e| match &e.msg {
            Some(Msg::ExecCommandEnd(end)) => Some(end.clone()),
            _ => None,
        })
        .collect()
}

/// The last request the model received that carries `call_id`'s output.
fn output_for(fake: &FakeModel, call_id: &str) -> String {
    fake.requests()
        .iter()
        .rev()
        .find_map(|r: &RecordedRequest| r.function_call_output(call_id))
        .unwrap_or_else(|| panic!("no output for {call_id} was sent to the model"))
}

async fn pending(client: &mut Client, sid: &str) -> Vec<pb::PendingRequest> {
    session::get(client, sid).await.unwrap().pending_requests
}

#[tokio::test(flavor = "multi_thread")]
async fn command_approvals_over_grpc() {
    let script = vec![
        // approve
        shell("c_approve", &["rm", "-rf", "victim"]),
        Scripted::assistant("removed"),
        // deny
        shell("c_deny", &["rm", "-rf", "victim"]),
        Scripted::assistant("not removed"),
        // approved for the session: asked once, then not again (also after
        // the history rolled over)
        shell("c_s1", &["rm", "-f", "a.txt"]),
        shell("c_s2", &["rm", "-f", "a.txt"]),
        Scripted::assistant("twice"),
        shell("c_s3", &["rm", "-f", "a.txt"]),
        Scripted::assistant("thrice"),
        // exec-policy amendment under untrusted
        shell("c_a1", &["touch", "one.txt"]),
        shell("c_a2", &["touch", "two.txt"]),
        Scripted::assistant("touched"),
        // abort, then the next turn works
        shell("c_abort", &["rm", "-rf", "victim"]),
        Scripted::assistant("after abort"),
        // interrupt while the approval is pending
        shell("c_int", &["rm", "-rf", "victim"]),
        // never: refused without asking
        shell("c_never", &["rm", "-rf", "victim"]),
        Scripted::assistant("refused"),
    ];
    let (fake, _stack, mut client) = start(script, 20).await;
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().canonicalize().unwrap();
    let victim = ws.join("victim");
    std::fs::create_dir(&victim).unwrap();
    let on_request = policy(pb::ApprovalPolicy::OnRequest);

    // Approve: the request carries what a person needs; nothing runs before
    // the answer; the answer is accepted once.
    let (sid, mut events) = open(&mut client, &ws, on_request.clone()).await;
    session::send(&mut client, &sid, "t1", "remove victim")
        .await
        .unwrap();
    let (_, req) = exec_request(&mut events).await;
    assert_eq!(req.call_id, "c_approve");
    assert_eq!(req.command, ["rm", "-rf", "victim"]);
    assert_eq!(req.cwd, ws.display().to_string());
    assert!(!req.parsed_cmd.is_empty());
    assert!(
        req.available_decisions
            .contains(&(K::ApprovedForSession as i32))
    );
    let listed = pending(&mut client, &sid).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].request_id, "c_approve");
    assert_eq!(listed[0].kind, pb::PendingRequestKind::ExecApproval as i32);
    assert!(victim.exists(), "ran before it was approved");
    let wrong = respond(
        &mut client,
        &sid,
        "c_approve",
        pb::respond_request::Answer::UserInput(pb::UserInputAnswer::default()),
    )
    .await
    .unwrap_err();
    assert_eq!(wrong.code(), tonic::Code::InvalidArgument, "{wrong}");
    respond(&mut client, &sid, "c_approve", decision(K::Approved))
        .await
        .unwrap();
    let (seen, end) = turn_end(&mut events).await;
    assert!(matches!(end.msg, Some(Msg::TurnComplete(_))), "{end:?}");
    assert!(!victim.exists(), "the approved command did not run");
    let resolved = seen
        .iter()
        .find_map(|e| match &e.msg {
            Some(Msg::RequestResolved(r)) => Some(r.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(resolved.decision, K::Approved as i32);
    assert_eq!(
        ends_in(&seen)[0].status,
        pb::ExecCommandStatus::Completed as i32
    );
    let stale = respond(&mut client, &sid, "c_approve", decision(K::Approved))
        .await
        .unwrap_err();
    assert_eq!(stale.code(), tonic::Code::FailedPrecondition, "{stale}");
    assert!(stale.message().contains("c_approve"), "{stale}");
    let unknown = respond(&mut client, &sid, "no_such_call", decision(K::Approved))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::FailedPrecondition, "{unknown}");
    assert!(pending(&mut client, &sid).await.is_empty());

    // Deny: the command does not run; the model is told; the end is declined.
    std::fs::create_dir(&victim).unwrap();
    let (sid, mut events) = open(&mut client, &ws, on_request.clone()).await;
    session::send(&mut client, &sid, "t1", "remove victim")
        .await
        .unwrap();
    let (_, req) = exec_request(&mut events).await;
    respond(&mut client, &sid, &req.call_id, decision(K::Denied))
        .await
        .unwrap();
    let (seen, end) = turn_end(&mut events).await;
    assert!(matches!(end.msg, Some(Msg::TurnComplete(_))));
    assert!(victim.exists(), "a denied command ran");
    assert_eq!(
        ends_in(&seen)[0].status,
        pb::ExecCommandStatus::Declined as i32
    );
    assert_eq!(output_for(&fake, "c_deny"), "exec command rejected by user");

    // Approved for the session: the same command is not asked again, in the
    // same turn or after the history rolled over.
    let (sid, mut events) = open(&mut client, &ws, on_request.clone()).await;
    std::fs::write(ws.join("a.txt"), "x").unwrap();
    session::send(&mut client, &sid, "t1", "delete a.txt twice")
        .await
        .unwrap();
    let (_, req) = exec_request(&mut events).await;
    assert_eq!(req.call_id, "c_s1");
    respond(&mut client, &sid, "c_s1", decision(K::ApprovedForSession))
        .await
        .unwrap();
    let (seen, _) = turn_end(&mut events).await;
    assert_eq!(requests_in(&seen), 0, "asked again in the same turn");
    let statuses: Vec<_> = ends_in(&seen).iter().map(|e| e.status).collect();
    assert_eq!(statuses, [pb::ExecCommandStatus::Completed as i32; 2]);
    std::fs::write(ws.join("a.txt"), "x").unwrap();
    session::send(&mut client, &sid, "t2", "and again")
        .await
        .unwrap();
    let (seen, _) = turn_end(&mut events).await;
    assert_eq!(requests_in(&seen), 0, "asked again after the rollover");
    assert!(!ws.join("a.txt").exists());
    let rollovers = session::get(&mut client, &sid)
        .await
        .unwrap()
        .history_rollovers;
    assert!(rollovers >= 1, "the history never rolled over");

    // An exec-policy amendment allows the prefix from then on.
    let (sid, mut events) = open(&mut client, &ws, policy(pb::ApprovalPolicy::Untrusted)).await;
    session::send(&mut client, &sid, "t1", "touch two files")
        .await
        .unwrap();
    let (_, req) = exec_request(&mut events).await;
    assert_eq!(req.call_id, "c_a1");
    let amend = pb::respond_request::Answer::Decision(pb::ReviewDecision {
        kind: K::ApprovedExecpolicyAmendment as i32,
        execpolicy_amendment: vec!["touch".into()],
    });
    respond(&mut client, &sid, "c_a1", amend).await.unwrap();
    let (seen, _) = turn_end(&mut events).await;
    assert_eq!(requests_in(&seen), 0, "the amended prefix was asked again");
    assert!(ws.join("one.txt").exists() && ws.join("two.txt").exists());

    // Abort ends the turn; the next turn works.
    let (sid, mut events) = open(&mut client, &ws, on_request.clone()).await;
    session::send(&mut client, &sid, "t1", "remove victim")
        .await
        .unwrap();
    let (_, req) = exec_request(&mut events).await;
    respond(&mut client, &sid, &req.call_id, decision(K::Abort))
        .await
        .unwrap();
    let (_, end) = turn_end(&mut events).await;
    assert!(matches!(end.msg, Some(Msg::TurnAborted(_))), "{end:?}");
    assert!(victim.exists());
    session::send(&mut client, &sid, "t2", "go on")
        .await
        .unwrap();
    let (_, end) = turn_end(&mut events).await;
    assert!(
        matches!(end.msg, Some(Msg::TurnComplete(ref c)) if c.last_agent_message == "after abort")
    );
    assert_eq!(
        output_for(&fake, "c_abort"),
        "exec command rejected by user"
    );

    // Interrupt while the approval is pending: the request ends as aborted,
    // the turn is aborted, and a late answer is rejected with the reason.
    let (sid, mut events) = open(&mut client, &ws, on_request.clone()).await;
    session::send(&mut client, &sid, "t1", "remove victim")
        .await
        .unwrap();
    let (_, req) = exec_request(&mut events).await;
    client
        .interrupt(pb::InterruptRequest {
            session_id: sid.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let (seen, end) = turn_end(&mut events).await;
    assert!(matches!(end.msg, Some(Msg::TurnAborted(_))), "{end:?}");
    let resolved = seen.iter().find_map(|e| match &e.msg {
        Some(Msg::RequestResolved(r)) => Some(r.decision),
        _ => None,
    });
    assert_eq!(resolved, Some(K::Abort as i32));
    let late = respond(&mut client, &sid, &req.call_id, decision(K::Approved))
        .await
        .unwrap_err();
    assert_eq!(late.code(), tonic::Code::FailedPrecondition, "{late}");
    assert!(late.message().contains("interrupted"), "{late}");
    assert!(victim.exists());

    // Never: what would ask is refused, and the model is told why.
    let (sid, mut events) = open(&mut client, &ws, policy(pb::ApprovalPolicy::Never)).await;
    session::send(&mut client, &sid, "t1", "remove victim")
        .await
        .unwrap();
    let (seen, _) = turn_end(&mut events).await;
    assert_eq!(requests_in(&seen), 0);
    assert_eq!(
        ends_in(&seen)[0].status,
        pb::ExecCommandStatus::Declined as i32
    );
    assert!(victim.exists());
    let told = output_for(&fake, "c_never");
    assert!(told.contains("rejected: blocked by policy"), "{told}");
}

#[tokio::test(flavor = "multi_thread")]
async fn user_input_plan_and_dynamic_tools() {
    let questions = json!({"questions": [{
        "id": "db", "header": "Database", "question": "Which database?",
        "options": [
            {"label": "Postgres (Recommended)", "description": "relational"},
            {"label": "SQLite", "description": "embedded"}
        ]
    }]});
    let plan = json!({"explanation": "steps", "plan": [
        {"step": "look", "status": "completed"},
        {"step": "build", "status": "in_progress"}
    ]});
    let script = vec![
        Scripted::tool_call("u1", "request_user_input", &questions.to_string()),
        Scripted::tool_call("p1", "update_plan", &plan.to_string()),
        Scripted::tool_call("d1", "crm__lookup", r#"{"q":"acme"}"#),
        Scripted::assistant("all answered"),
    ];
    let (fake, stack, mut client) = start(script, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let tool = pb::DynamicTool {
        namespace: "crm".into(),
        name: "lookup".into(),
        description: "Looks up a customer".into(),
        input_schema_json: r#"{"type":"object","properties":{"q":{"type":"string"}}}"#.into(),
    };
    let (sid, mut events) = open_with_tools(
        &mut client,
        dir.path(),
        pb::TurnContext::default(),
        vec![tool],
    )
    .await;
    session::send(&mut client, &sid, "t1", "ask me")
        .await
        .unwrap();

    let (_, asked) = until(&mut events, |e| match &e.msg {
        Some(Msg::RequestUserInput(r)) => Some(r.clone()),
        _ => None,
    })
    .await
    .unwrap();
    assert_eq!(asked.call_id, "u1");
    assert_eq!(asked.questions[0].id, "db");
    assert_eq!(asked.questions[0].options.len(), 2);
    assert!(asked.questions[0].is_other);
    let offered = fake.requests()[0].tool_names();
    for name in ["request_user_input", "update_plan", "crm__lookup"] {
        assert!(
            offered.iter().any(|n| n == name),
            "{name} not offered: {offered:?}"
        );
    }
    let answers = pb::UserInputAnswer {
        answers: [(
            "db".to_string(),
            pb::QuestionAnswer {
                answers: vec!["SQLite".into()],
            },
        )]
        .into(),
    };
    respond(
        &mut client,
        &sid,
        "u1",
        pb::respond_request::Answer::UserInput(answers),
    )
    .await
    .unwrap();

    let (_, plan) = until(&mut events, |e| match &e.msg {
        Some(Msg::PlanUpdate(p)) => Some(p.clone()),
        _ => None,
    })
    .await
    .unwrap();
    assert_eq!(plan.explanation, "steps");
    assert_eq!(plan.plan[1].status, "in_progress");

    let (_, call) = until(&mut events, |e| match &e.msg {
        Some(Msg::DynamicToolCallRequest(r)) => Some(r.clone()),
        _ => None,
    })
    .await
    .unwrap();
    assert_eq!(
        (call.namespace.as_str(), call.tool.as_str()),
        ("crm", "lookup")
    );
    assert_eq!(call.arguments, r#"{"q":"acme"}"#);
    let result = pb::DynamicToolResult {
        content: vec![pb::DynamicToolContent {
            kind: Some(pb::dynamic_tool_content::Kind::Text(
                "ACME Corp, 42 seats".into(),
            )),
        }],
        success: true,
    };
    respond(
        &mut client,
        &sid,
        "d1",
        pb::respond_request::Answer::DynamicTool(result),
    )
    .await
    .unwrap();
    let (_, end) = turn_end(&mut events).await;
    assert!(
        matches!(end.msg, Some(Msg::TurnComplete(ref c)) if c.last_agent_message == "all answered")
    );

    let answered: serde_json::Value = serde_json::from_str(&output_for(&fake, "u1")).unwrap();
    assert_eq!(
        answered,
        json!({"answers": {"db": {"answers": ["SQLite"]}}})
    );
    assert_eq!(output_for(&fake, "p1"), "Plan updated");
    assert_eq!(output_for(&fake, "d1"), "ACME Corp, 42 seats");

    // A session that waited for a person three ways, for the replay tests.
    client
        .close_session(pb::CloseSessionRequest {
            session_id: sid.clone(),
        })
        .await
        .unwrap();
    history::record_closed(
        &stack.temporal_address,
        &sid,
        "user_input_and_dynamic_closed",
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn turn_settings_reach_the_model() {
    let script = vec![
        Scripted::assistant("one"),
        Scripted::assistant("two"),
        Scripted::assistant("three"),
        // a turn that waits for an approval while the settings change
        shell("c_mid", &["rm", "-rf", "nothing-here"]),
        Scripted::assistant("four"),
    ];
    let (fake, stack, mut client) = start(script, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let (sid, mut events) = open(&mut client, dir.path(), pb::TurnContext::default()).await;

    // Per-turn settings apply to that turn only.
    client
        .send_user_turn(pb::SendUserTurnRequest {
            session_id: sid.clone(),
            text: "first".into(),
            turn_id: "t1".into(),
            context: Some(pb::TurnContext {
                model: Some("model-for-one-turn".into()),
                reasoning_effort: Some("high".into()),
                reasoning_summary: Some("detailed".into()),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    turn_end(&mut events).await;
    session::send(&mut client, &sid, "t2", "second")
        .await
        .unwrap();
    turn_end(&mut events).await;
    let requests = fake.wait_for_requests(2, EVENT_WAIT).await.unwrap();
    assert_eq!(requests[0].body["model"], "model-for-one-turn");
    assert_eq!(requests[0].body["reasoning"]["effort"], "high");
    assert_eq!(requests[0].body["reasoning"]["summary"], "detailed");
    assert_eq!(requests[1].body["model"], "test-model");
    assert!(
        requests[1].body.get("reasoning").is_none(),
        "{}",
        requests[1].body
    );
    let key = requests[0].body["prompt_cache_key"].clone();
    assert!(key.is_string());

    // A persistent override applies from the next call on.
    let overridden = client
        .override_turn_context(pb::OverrideTurnContextRequest {
            session_id: sid.clone(),
            context: Some(pb::TurnContext {
                model: Some("model-from-now-on".into()),
                personality: Some("pragmatic".into()),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .context
        .unwrap();
    assert_eq!(overridden.model.as_deref(), Some("model-from-now-on"));
    assert_eq!(
        overridden.approval_policy,
        pb::ApprovalPolicy::OnRequest as i32
    );
    session::send(&mut client, &sid, "t3", "third")
        .await
        .unwrap();
    turn_end(&mut events).await;
    let third = &fake.wait_for_requests(3, EVENT_WAIT).await.unwrap()[2];
    assert_eq!(third.body["model"], "model-from-now-on");
    let instructions = third.body["instructions"].as_str().unwrap();
    assert!(instructions.contains("# Personality"), "{instructions}");
    assert_eq!(third.body["prompt_cache_key"], key, "the cache key changed");

    // Changed while a turn waits: the turn's next model call uses it.
    session::send(&mut client, &sid, "t4", "fourth")
        .await
        .unwrap();
    let (_, req) = exec_request(&mut events).await;
    client
        .override_turn_context(pb::OverrideTurnContextRequest {
            session_id: sid.clone(),
            context: Some(pb::TurnContext {
                model: Some("model-mid-turn".into()),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    respond(&mut client, &sid, &req.call_id, decision(K::Denied))
        .await
        .unwrap();
    turn_end(&mut events).await;
    let requests = fake.wait_for_requests(5, EVENT_WAIT).await.unwrap();
    assert_eq!(requests[3].body["model"], "model-from-now-on");
    assert_eq!(requests[4].body["model"], "model-mid-turn");
    let session = session::get(&mut client, &sid).await.unwrap();
    assert_eq!(session.model, "model-mid-turn");
    assert_eq!(
        session.context.unwrap().personality.as_deref(),
        Some("pragmatic")
    );

    // Per-turn settings, overrides and an approval, for the replay tests.
    client
        .close_session(pb::CloseSessionRequest {
            session_id: sid.clone(),
        })
        .await
        .unwrap();
    history::record_closed(
        &stack.temporal_address,
        &sid,
        "settings_and_approval_closed",
    )
    .await
    .unwrap();
}

/// `p` with a workspace-write sandbox whose only writable root is the cwd.
fn no_tmp(p: pb::ApprovalPolicy) -> pb::TurnContext {
    pb::TurnContext {
        sandbox: Some(pb::SandboxPolicy {
            mode: pb::SandboxMode::WorkspaceWrite as i32,
            exclude_slash_tmp: true,
            exclude_tmpdir_env_var: true,
            ..Default::default()
        }),
        ..policy(p)
    }
}

fn patch_call(call_id: &str, patch: &str) -> Scripted {
    Scripted::Events(vec![
        sse::created(),
        sse::output_item_done(json!({
            "type": "custom_tool_call", "id": format!("ctc_{call_id}"), "call_id": call_id,
            "name": "apply_patch", "input": patch,
        })),
        sse::completed(&format!("r_{call_id}"), 10, 5),
    ])
}

/// Patches: inside the workspace they apply without asking; a patch that
/// writes outside it asks with the per-file changes and applies once
/// approved. On-failure: a command the sandbox denies asks to re-run
/// without the sandbox, and the approved re-run does the work.
#[tokio::test(flavor = "multi_thread")]
async fn patch_approval_and_sandbox_denial_rerun() {
    // Outside every writable root: the sessions below do not get /tmp or
    // $TMPDIR, so another temporary directory is out of bounds.
    let outside = tempfile::tempdir().unwrap();
    let outside = outside.path().canonicalize().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().canonicalize().unwrap();
    std::fs::write(ws.join("inside.txt"), "alpha\nbeta\n").unwrap();
    let outside_file = outside.join("new.txt");
    let inside_patch = "*** Begin Patch\n*** Add File: notes.txt\n+in the workspace\n*** End Patch";
    let mixed_patch = format!(
        "*** Begin Patch\n*** Update File: inside.txt\n@@\n alpha\n-beta\n+gamma\n*** Add File: {}\n+outside\n*** End Patch",
        outside_file.display()
    );
    let denied_target = outside.join("rerun.txt");
    let write_outside = format!("echo rerun > {}", denied_target.display());
    let script = vec![
        patch_call("p_inside", inside_patch),
        patch_call("p_mixed", &mixed_patch),
        Scripted::assistant("patched"),
        shell("c_fail", &["bash", "-c", &write_outside]),
        Scripted::assistant("written"),
    ];
    let (fake, _stack, mut client) = start(script, 0).await;

    let (sid, mut events) = open(&mut client, &ws, no_tmp(pb::ApprovalPolicy::OnRequest)).await;
    session::send(&mut client, &sid, "t1", "patch things")
        .await
        .unwrap();
    let (seen, req) = until(&mut events, |e| match &e.msg {
        Some(Msg::ApplyPatchApprovalRequest(r)) => Some(r.clone()),
        Some(Msg::TurnComplete(_)) => panic!("the patch outside was not asked: {e:?}"),
        _ => None,
    })
    .await
    .unwrap();
    // The patch inside the workspace applied without a question.
    let begin = seen
        .iter()
        .find_map(|e| match &e.msg {
            Some(Msg::PatchApplyBegin(b)) => Some(b.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(begin.call_id, "p_inside");
    assert!(begin.auto_approved);
    assert_eq!(
        std::fs::read_to_string(ws.join("notes.txt")).unwrap(),
        "in the workspace\n"
    );
    // The question shows every file with its change.
    assert_eq!(req.call_id, "p_mixed");
    assert_eq!(req.changes.len(), 2, "{req:?}");
    let update = req
        .changes
        .iter()
        .find(|c| c.path == ws.join("inside.txt").display().to_string())
        .unwrap();
    let Some(pb::file_change::Kind::Update(u)) = &update.kind else {
        panic!("not an update: {update:?}")
    };
    assert!(
        u.unified_diff.contains("-beta") && u.unified_diff.contains("+gamma"),
        "{u:?}"
    );
    let add = req
        .changes
        .iter()
        .find(|c| c.path == outside_file.display().to_string())
        .unwrap();
    assert!(matches!(&add.kind, Some(pb::file_change::Kind::Add(a)) if a.content == "outside\n"));
    assert!(!outside_file.exists(), "applied before approval");
    respond(&mut client, &sid, "p_mixed", decision(K::Approved))
        .await
        .unwrap();
    let (seen, _) = turn_end(&mut events).await;
    let end = seen
        .iter()
        .find_map(|e| match &e.msg {
            Some(Msg::PatchApplyEnd(p)) if p.call_id == "p_mixed" => Some(p.clone()),
            _ => None,
        })
        .unwrap();
    assert!(end.success, "{end:?}");
    assert_eq!(std::fs::read_to_string(&outside_file).unwrap(), "outside\n");
    assert_eq!(
        std::fs::read_to_string(ws.join("inside.txt")).unwrap(),
        "alpha\ngamma\n"
    );

    // On-failure: denied by the sandbox, asked, re-run without it.
    let (sid, mut events) = open(&mut client, &ws, no_tmp(pb::ApprovalPolicy::OnFailure)).await;
    session::send(&mut client, &sid, "t1", "write outside")
        .await
        .unwrap();
    let (seen, req) = exec_request(&mut events).await;
    let first = ends_in(&seen);
    assert_eq!(first.len(), 1, "the sandboxed attempt ran once: {seen:#?}");
    assert_ne!(first[0].exit_code, 0);
    assert!(!denied_target.exists(), "the sandbox let the write through");
    assert_eq!(req.call_id, "c_fail");
    assert_eq!(req.reason, "command failed; retry without sandbox?");
    respond(&mut client, &sid, "c_fail", decision(K::Approved))
        .await
        .unwrap();
    let (seen, _) = turn_end(&mut events).await;
    let rerun = ends_in(&seen);
    assert_eq!(rerun.len(), 1);
    assert_eq!(rerun[0].exit_code, 0, "{:?}", rerun[0]);
    assert_eq!(std::fs::read_to_string(&denied_target).unwrap(), "rerun\n");
    let told = output_for(&fake, "c_fail");
    assert!(told.contains("\"exit_code\":0"), "{told}");
}

/// Escalation: the model asks to run outside the sandbox with a
/// justification; the person sees it as the reason, and the approved command
/// runs unsandboxed. A policy override to `never` then refuses, without
/// asking, both a dangerous command and another escalation.
#[tokio::test(flavor = "multi_thread")]
async fn escalation_request_and_policy_override() {
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().canonicalize().unwrap().join("esc.txt");
    let escalate = |call_id: &str| {
        let args = json!({
            "command": ["bash", "-c", format!("echo esc > {}", target.display())],
            "sandbox_permissions": "require_escalated",
            "justification": "needs to write the shared cache",
        });
        Scripted::tool_call(call_id, "shell", &args.to_string())
    };
    let script = vec![
        escalate("c_esc"),
        Scripted::assistant("escalated"),
        shell("c_rm", &["rm", "-rf", "victim"]),
        escalate("c_esc2"),
        Scripted::assistant("refused twice"),
    ];
    let (fake, _stack, mut client) = start(script, 0).await;
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().canonicalize().unwrap();
    std::fs::create_dir(ws.join("victim")).unwrap();

    let (sid, mut events) = open(&mut client, &ws, pb::TurnContext::default()).await;
    session::send(&mut client, &sid, "t1", "write the cache")
        .await
        .unwrap();
    let (_, req) = exec_request(&mut events).await;
    assert_eq!(req.reason, "needs to write the shared cache");
    respond(&mut client, &sid, "c_esc", decision(K::Approved))
        .await
        .unwrap();
    turn_end(&mut events).await;
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "esc\n");

    client
        .override_turn_context(pb::OverrideTurnContextRequest {
            session_id: sid.clone(),
            context: Some(policy(pb::ApprovalPolicy::Never)),
        })
        .await
        .unwrap();
    std::fs::remove_file(&target).unwrap();
    session::send(&mut client, &sid, "t2", "try again")
        .await
        .unwrap();
    let (seen, _) = turn_end(&mut events).await;
    assert_eq!(requests_in(&seen), 0, "asked under never");
    assert!(ws.join("victim").exists());
    assert!(!target.exists());
    assert!(output_for(&fake, "c_rm").contains("rejected: blocked by policy"));
    assert_eq!(
        output_for(&fake, "c_esc2"),
        "approval policy is Never; reject command — you should not ask for escalated permissions if the approval policy is Never"
    );
}
