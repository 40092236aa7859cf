//! MCP servers as tools of real sessions: the whole stack (Temporal,
//! session-api, worker, model-proxy, tool-runner, mcp-broker as processes)
//! with the npm reference servers — server-everything and
//! server-filesystem over stdio — configured as Codex users configure
//! them, in the broker's config.toml.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::path::Path;

use keel_proto::v1 as pb;
use keel_test_support::fake_model::{FakeModel, Scripted};
use keel_test_support::history;
use keel_test_support::mcp;
use keel_test_support::session::{self, until};
use keel_test_support::stack::{Stack, StackOptions};
use pb::event::Msg;
use serde_json::{Value, json};

/// A stack whose broker serves `everything` and `files` (read and write
/// under `files_dir`).
async fn stack_with_servers(fake: &FakeModel, config_dir: &Path, files_dir: &Path) -> Stack {
    let (cmd, args) = mcp::everything();
    let mut toml = mcp::stdio_table("everything", &cmd, &args, "");
    let (cmd, args) = mcp::filesystem(files_dir);
    toml.push_str(&mcp::stdio_table("files", &cmd, &args, ""));
    Stack::launch(broker_options(fake, config_dir, &toml))
        .await
        .unwrap()
}

/// Stack options whose broker serves the `[mcp_servers]` tables `toml`
/// (written to `dir/config.toml`).
fn broker_options(fake: &FakeModel, dir: &Path, toml: &str) -> StackOptions {
    let config = dir.join("config.toml");
    std::fs::write(&config, toml).unwrap();
    let mut options = StackOptions::new(fake.base_url());
    options.mcp_broker_args = vec!["--config".into(), config.display().to_string()];
    options
}

/// `[mcp_servers.everything]`: server-everything over stdio.
fn everything_only() -> String {
    let (cmd, a) = mcp::everything();
    mcp::stdio_table("everything", &cmd, &a, "")
}

fn args(v: Value) -> String {
    v.to_string()
}

/// The output items' texts after the wall-time header, or the output
/// text.
fn output_texts(output: &str) -> Vec<String> {
    match serde_json::from_str::<Value>(output) {
        Ok(Value::Array(items)) => {
            assert!(
                items[0]["text"]
                    .as_str()
                    .unwrap()
                    .starts_with("Wall time: "),
                "{output}"
            );
            items[1..]
                .iter()
                .map(|i| match i["type"].as_str() {
                    Some("input_text") => i["text"].as_str().unwrap().to_string(),
                    Some(other) => format!("<{other}>"),
                    None => i.to_string(),
                })
                .collect()
        }
        _ => vec![output.to_string()],
    }
}

async fn answer(client: &mut session::Client, sid: &str, call_id: &str, label: &str) {
    let answers = pb::UserInputAnswer {
        answers: [(
            format!("mcp_tool_call_approval_{call_id}"),
            pb::QuestionAnswer {
                answers: vec![label.into()],
            },
        )]
        .into(),
    };
    client
        .respond(pb::RespondRequest {
            session_id: sid.into(),
            request_id: call_id.into(),
            answer: Some(pb::respond_request::Answer::UserInput(answers)),
            ..Default::default()
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn mcp_tools_run_in_a_session_with_codex_results_events_and_approvals() {
    let files = tempfile::tempdir().unwrap();
    let files_dir = files.path().canonicalize().unwrap();
    std::fs::write(files_dir.join("notes.txt"), "remember the milk\n").unwrap();
    let target = files_dir.join("out.txt");
    let target_s = target.display().to_string();
    let fake = FakeModel::start(vec![
        Scripted::tool_call(
            "c_echo",
            "mcp__everything__echo",
            &args(json!({"message": "hello mcp"})),
        ),
        Scripted::tool_call(
            "c_sum",
            "mcp__everything__get_sum",
            &args(json!({"a": 2, "b": 40})),
        ),
        Scripted::tool_call(
            "c_struct",
            "mcp__everything__get_structured_content",
            &args(json!({"location": "New York"})),
        ),
        Scripted::tool_call("c_image", "mcp__everything__get_tiny_image", "{}"),
        Scripted::tool_call(
            "c_read",
            "mcp__files__read_text_file",
            &args(json!({"path": files_dir.join("notes.txt")})),
        ),
        // Destructive: asks. Cancelled first, then allowed for the session,
        // then not asked again.
        Scripted::tool_call(
            "c_w1",
            "mcp__files__write_file",
            &args(json!({"path": target_s, "content": "one"})),
        ),
        Scripted::tool_call(
            "c_w2",
            "mcp__files__write_file",
            &args(json!({"path": target_s, "content": "two"})),
        ),
        Scripted::tool_call(
            "c_w3",
            "mcp__files__write_file",
            &args(json!({"path": target_s, "content": "three"})),
        ),
        // Not offered: runs nothing.
        Scripted::tool_call("c_bad", "mcp__nope__steal", "{}"),
        Scripted::tool_call("c_json", "mcp__everything__echo", "{not json"),
        Scripted::assistant("done"),
    ])
    .await
    .unwrap();
    let config_dir = tempfile::tempdir().unwrap();
    let stack = stack_with_servers(&fake, config_dir.path(), &files_dir).await;
    let mut client = stack.connect().await.unwrap();
    let work = tempfile::tempdir().unwrap();
    let sid = session::create(&mut client, Some(work.path()))
        .await
        .unwrap();
    let mut events = session::follow(&mut client, &sid, 0, false).await.unwrap();
    session::send(&mut client, &sid, "t1", "use the MCP tools")
        .await
        .unwrap();

    let (seen, asked) = until(&mut events, |e| match &e.msg {
        Some(Msg::RequestUserInput(r)) => Some(r.clone()),
        _ => None,
    })
    .await
    .unwrap();
    assert_eq!(asked.call_id, "c_w1");
    let q = &asked.questions[0];
    assert_eq!(q.id, "mcp_tool_call_approval_c_w1");
    assert_eq!(
        q.question,
        "Allow the files MCP server to run tool \"write_file\"?"
    );
    let labels: Vec<&str> = q.options.iter().map(|o| o.label.as_str()).collect();
    assert_eq!(labels, ["Allow", "Allow for this session", "Cancel"]);
    // Every call before it ran without asking and has begin and end events.
    let begins: Vec<&pb::McpToolCallBegin> = seen
        .iter()
        .filter_map(|e| match &e.msg {
            Some(Msg::McpToolCallBegin(b)) => Some(b),
            _ => None,
        })
        .collect();
    let ids: Vec<&str> = begins.iter().map(|b| b.call_id.as_str()).collect();
    assert_eq!(
        ids,
        ["c_echo", "c_sum", "c_struct", "c_image", "c_read", "c_w1"]
    );
    let echo = begins[0].invocation.as_ref().unwrap();
    assert_eq!(
        (echo.server.as_str(), echo.tool.as_str()),
        ("everything", "echo")
    );
    let ends: Vec<&pb::McpToolCallEnd> = seen
        .iter()
        .filter_map(|e| match &e.msg {
            Some(Msg::McpToolCallEnd(x)) => Some(x),
            _ => None,
        })
        .collect();
    assert_eq!(ends.len(), 5);
    assert!(
        ends.iter().all(|e| e.success && e.error.is_empty()),
        "{ends:?}"
    );
    assert!(
        ends[0].result_json.contains("Echo: hello mcp"),
        "{:?}",
        ends[0]
    );
    assert_eq!(ends[1].invocation.as_ref().unwrap().tool, "get-sum");

    answer(&mut client, &sid, "c_w1", "Cancel").await;
    let (_, asked) = until(&mut events, |e| match &e.msg {
        Some(Msg::RequestUserInput(r)) => Some(r.clone()),
        _ => None,
    })
    .await
    .unwrap();
    assert_eq!(asked.call_id, "c_w2");
    assert!(!target.exists(), "a cancelled call wrote");
    answer(&mut client, &sid, "c_w2", "Allow for this session").await;

    let (rest, done) = until(&mut events, |e| match &e.msg {
        Some(Msg::TurnComplete(c)) => Some(c.last_agent_message.clone()),
        _ => None,
    })
    .await
    .unwrap();
    assert_eq!(done, "done");
    assert!(
        !rest
            .iter()
            .any(|e| matches!(&e.msg, Some(Msg::RequestUserInput(_)))),
        "c_w3 was asked about again"
    );
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "three");

    let last = fake.requests().last().cloned().unwrap();
    let out = |id: &str| {
        last.function_call_output(id)
            .unwrap_or_else(|| panic!("no output for {id}"))
    };
    assert_eq!(output_texts(&out("c_echo")), ["Echo: hello mcp"]);
    assert!(
        output_texts(&out("c_sum"))[0].contains("42"),
        "{}",
        out("c_sum")
    );
    let structured = out("c_struct");
    assert!(structured.starts_with("Wall time: "), "{structured}");
    let body: Value = serde_json::from_str(structured.split_once("Output:\n").unwrap().1).unwrap();
    assert!(body.get("temperature").is_some(), "{body}");
    assert!(
        output_texts(&out("c_image")).contains(&"<input_image>".to_string()),
        "{}",
        out("c_image")
    );
    // server-filesystem answers with structured content, which Codex sends
    // as its JSON.
    let read = out("c_read");
    let read: Value = serde_json::from_str(read.split_once("Output:\n").unwrap().1).unwrap();
    assert_eq!(read, json!({"content": "remember the milk\n"}));
    assert_eq!(out("c_w1"), "user cancelled MCP tool call");
    assert!(
        out("c_w3").contains("Successfully wrote"),
        "{}",
        out("c_w3")
    );
    assert_eq!(out("c_bad"), "unsupported call: mcp__nope__steal");
    assert!(out("c_json").starts_with("err: "), "{}", out("c_json"));

    let tools = fake.requests()[0].tool_names();
    for name in [
        "mcp__everything__echo",
        "mcp__files__write_file",
        "mcp__files__read_text_file",
    ] {
        assert!(
            tools.iter().any(|t| t == name),
            "{name} not offered: {tools:?}"
        );
    }
    // An MCP session (approvals, remembered approval, declined call), for
    // the replay tests.
    client
        .close_session(pb::CloseSessionRequest {
            session_id: sid.clone(),
        })
        .await
        .unwrap();
    history::record_closed(&stack.temporal_address, &sid, "mcp_tools_closed")
        .await
        .unwrap();
}

/// A session that names a server the broker does not have cannot start its
/// first turn, and says why.
#[tokio::test(flavor = "multi_thread")]
async fn a_session_naming_an_unknown_server_is_told_so() {
    let fake = FakeModel::start(vec![Scripted::assistant("never")])
        .await
        .unwrap();
    let config_dir = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let stack = stack_with_servers(&fake, config_dir.path(), files.path()).await;
    let mut client = stack.connect().await.unwrap();
    let (sid, mut events) = session::open(
        &mut client,
        pb::CreateSessionRequest {
            mcp_servers: vec!["everything".into(), "ghost".into()],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    session::send(&mut client, &sid, "t1", "hi").await.unwrap();
    let (_, error) = until(&mut events, |e| match &e.msg {
        Some(Msg::Error(err)) => Some(err.message.clone()),
        _ => None,
    })
    .await
    .unwrap();
    assert!(error.contains("\"ghost\" is not configured"), "{error}");
    assert!(fake.requests().is_empty(), "the model was called");
}

/// A session that rolls over (continue-as-new) after every turn keeps its
/// MCP tools: they were listed once, into state every run carries.
#[tokio::test(flavor = "multi_thread")]
async fn a_rolled_over_session_keeps_its_mcp_tools() {
    let fake = FakeModel::start(vec![
        Scripted::tool_call(
            "c1",
            "mcp__everything__echo",
            &args(json!({"message": "run one"})),
        ),
        Scripted::assistant("one"),
        Scripted::tool_call(
            "c2",
            "mcp__everything__echo",
            &args(json!({"message": "run two"})),
        ),
        Scripted::assistant("two"),
    ])
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut options = broker_options(&fake, dir.path(), &everything_only());
    options.history_event_budget = 1;
    let stack = Stack::launch(options).await.unwrap();
    let mut client = stack.connect().await.unwrap();
    let sid = session::create(&mut client, Some(dir.path()))
        .await
        .unwrap();
    let mut events = session::follow(&mut client, &sid, 0, false).await.unwrap();
    for (turn, want) in [("t1", "one"), ("t2", "two")] {
        session::send(&mut client, &sid, turn, "echo")
            .await
            .unwrap();
        let (_, done) = until(&mut events, |e| match &e.msg {
            Some(Msg::TurnComplete(c)) => Some(c.last_agent_message.clone()),
            _ => None,
        })
        .await
        .unwrap();
        assert_eq!(done, want);
    }
    let session = session::get(&mut client, &sid).await.unwrap();
    assert!(session.history_rollovers >= 1, "{session:?}");
    let requests = fake.requests();
    let last = requests.last().unwrap();
    assert_eq!(
        output_texts(&last.function_call_output("c2").unwrap()),
        ["Echo: run two"]
    );
    assert!(
        last.tool_names()
            .iter()
            .any(|t| t == "mcp__everything__echo"),
        "{:?}",
        last.tool_names()
    );
}

/// A server's question mid-call (MCP elicitation) reaches the user as an
/// `elicitation_request`; the worker restarts while the user thinks; the
/// answer, given with `keel answer --accept`, reaches the server, and the
/// call finishes with it.
#[tokio::test(flavor = "multi_thread")]
async fn an_elicitation_waits_through_a_worker_restart_and_is_answered_with_keel_answer() {
    let fake = FakeModel::start(vec![
        Scripted::tool_call(
            "c_ask",
            "mcp__everything__trigger_elicitation_request",
            "{}",
        ),
        Scripted::assistant("thanks"),
    ])
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let options = broker_options(&fake, dir.path(), &everything_only());
    let mut stack = Stack::launch(options).await.unwrap();
    let mut client = stack.connect().await.unwrap();
    let sid = session::create(&mut client, Some(dir.path()))
        .await
        .unwrap();
    let mut events = session::follow(&mut client, &sid, 0, false).await.unwrap();
    session::send(&mut client, &sid, "t1", "ask me")
        .await
        .unwrap();
    let (_, asked) = until(&mut events, |e| match &e.msg {
        Some(Msg::ElicitationRequest(r)) => Some(r.clone()),
        _ => None,
    })
    .await
    .unwrap();
    assert_eq!(asked.server_name, "everything");
    assert_eq!(asked.call_id, "c_ask");
    assert_eq!(asked.request_id, "c_ask-elicitation-1");
    assert_eq!(
        asked.message,
        "Please provide inputs for the following fields:"
    );
    let schema: Value = serde_json::from_str(&asked.requested_schema_json).unwrap();
    assert!(schema["properties"]["name"].is_object(), "{schema}");

    // The worker dies while the user thinks.
    stack.kill("keel-worker").unwrap();
    stack.restart("keel-worker").unwrap();

    let keel = keel_test_support::stack::bin("keel").unwrap();
    let out = std::process::Command::new(keel)
        .args([
            "--addr",
            &stack.session_api,
            "answer",
            &sid,
            &asked.request_id,
        ])
        .args(["--accept", r#"{"name": "Ada Lovelace", "check": true}"#])
        .env("KEEL_TOKEN", &stack.token)
        .env_remove("KEEL_ADDR")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "keel answer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (seen, done) = until(&mut events, |e| match &e.msg {
        Some(Msg::TurnComplete(c)) => Some(c.last_agent_message.clone()),
        _ => None,
    })
    .await
    .unwrap();
    assert_eq!(done, "thanks");
    let end = seen
        .iter()
        .find_map(|e| match &e.msg {
            Some(Msg::McpToolCallEnd(x)) => Some(x.clone()),
            _ => None,
        })
        .expect("mcp_tool_call_end");
    assert!(end.success, "{end:?}");
    let output = fake
        .requests()
        .last()
        .unwrap()
        .function_call_output("c_ask")
        .unwrap();
    assert!(
        output.contains("User provided the requested information"),
        "{output}"
    );
    assert!(output.contains("Ada Lovelace"), "{output}");

    // A session that waited for an MCP server's question, for the replay
    // tests.
    client
        .close_session(pb::CloseSessionRequest {
            session_id: sid.clone(),
        })
        .await
        .unwrap();
    history::record_closed(&stack.temporal_address, &sid, "mcp_elicitation_closed")
        .await
        .unwrap();
}

/// A long MCP call's progress notifications reach a client that watches
/// live deltas while the call runs, before its end event.
#[tokio::test(flavor = "multi_thread")]
async fn mcp_progress_reaches_watching_clients_as_live_deltas() {
    use pb::stream_events_response::Kind;
    let fake = FakeModel::start(vec![
        Scripted::tool_call(
            "c_long",
            "mcp__everything__trigger_long_running_operation",
            &args(json!({"duration": 2, "steps": 4})),
        ),
        Scripted::assistant("done"),
    ])
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let options = broker_options(&fake, dir.path(), &everything_only());
    let stack = Stack::launch(options).await.unwrap();
    let mut client = stack.connect().await.unwrap();
    let sid = session::create(&mut client, Some(dir.path()))
        .await
        .unwrap();
    let mut stream = session::follow(&mut client, &sid, 0, true).await.unwrap();
    session::send(&mut client, &sid, "t1", "go").await.unwrap();
    let mut progress = Vec::new();
    let mut ended_after = None;
    loop {
        let msg = tokio::time::timeout(session::EVENT_WAIT, stream.message())
            .await
            .expect("an event in time")
            .unwrap()
            .expect("the stream goes on");
        match msg.kind {
            Some(Kind::Delta(d)) if d.kind == pb::LiveDeltaKind::McpProgress as i32 => {
                assert_eq!(d.item_id, "c_long");
                progress.push(d.delta);
            }
            Some(Kind::Event(e)) => match e.msg {
                Some(Msg::McpToolCallEnd(_)) => ended_after = Some(progress.len()),
                Some(Msg::TurnComplete(_)) => break,
                _ => {}
            },
            _ => {}
        }
    }
    assert_eq!(progress, ["1/4", "2/4", "3/4", "4/4"]);
    assert_eq!(
        ended_after,
        Some(4),
        "every progress delta before the end event"
    );
}

/// A turn whose model calls `c_long` (server-everything's read-only, 3 s
/// `trigger-long-running-operation`) and then `c_slow` (a 4 s tool that is
/// neither read-only nor idempotent, approved by the operator), each server
/// marked in its environment.
struct CrashTurn {
    stack: Stack,
    fake: FakeModel,
    events: tonic::Streaming<pb::StreamEventsResponse>,
    runs: std::path::PathBuf,
    mark: String,
    slow_mark: String,
    _dir: tempfile::TempDir,
}

async fn crash_turn(name: &str) -> CrashTurn {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let script = mcp::slow_server(dir.path(), &runs, 4000).unwrap();
    let mark = format!("{name}-{}", std::process::id());
    let slow_mark = format!("{mark}-slow");
    let (cmd, a) = mcp::everything();
    let mut toml = mcp::stdio_table(
        "everything",
        &cmd,
        &a,
        &format!("env = {{ KEEL_TEST_MARK = {mark:?} }}"),
    );
    toml.push_str(&mcp::stdio_table(
        "slow",
        "node",
        &[script.display().to_string()],
        &format!(
            "env = {{ KEEL_TEST_MARK = {slow_mark:?} }}\n# The operator trusts it: no approval asked.\ndefault_tools_approval_mode = \"approve\""
        ),
    ));
    let fake = FakeModel::start(vec![
        Scripted::tool_call(
            "c_long",
            "mcp__everything__trigger_long_running_operation",
            &args(json!({"duration": 3, "steps": 3})),
        ),
        Scripted::tool_call("c_slow", "mcp__slow__slow_write", "{}"),
        Scripted::assistant("survived"),
    ])
    .await
    .unwrap();
    let stack = Stack::launch(broker_options(&fake, dir.path(), &toml))
        .await
        .unwrap();
    let mut client = stack.connect().await.unwrap();
    let sid = session::create(&mut client, Some(dir.path()))
        .await
        .unwrap();
    let events = session::follow(&mut client, &sid, 0, false).await.unwrap();
    session::send(&mut client, &sid, "t1", "go").await.unwrap();
    CrashTurn {
        stack,
        fake,
        events,
        runs,
        mark,
        slow_mark,
        _dir: dir,
    }
}

async fn wait_until(mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("timed out");
}

impl CrashTurn {
    /// Waits until `call_id` runs on its server, then runs `crash`.
    async fn crash_during(
        &mut self,
        call_id: &str,
        crash: impl FnOnce(&mut Self),
    ) -> Vec<pb::Event> {
        let (seen, _) = until(&mut self.events, |e| match &e.msg {
            Some(Msg::McpToolCallBegin(b)) if b.call_id == call_id => Some(()),
            _ => None,
        })
        .await
        .unwrap();
        if call_id == "c_slow" {
            // The tool has started on the server.
            let runs = self.runs.clone();
            wait_until(|| runs.exists()).await;
        } else {
            // The broker has started the server; the call then runs 3 s.
            let mark = self.mark.clone();
            wait_until(|| !mcp::marked_pids(&mark).is_empty()).await;
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        crash(self);
        seen
    }

    /// The turn completes: the read-only call succeeded on its second run,
    /// the unsafe one was reported once and ran once.
    async fn check_outcome(mut self, mut all: Vec<pb::Event>) {
        let (seen, done) = until(&mut self.events, |e| match &e.msg {
            Some(Msg::TurnComplete(c)) => Some(c.last_agent_message.clone()),
            _ => None,
        })
        .await
        .unwrap();
        assert_eq!(done, "survived");
        all.extend(seen);
        let ends: Vec<&pb::McpToolCallEnd> = all
            .iter()
            .filter_map(|e| match &e.msg {
                Some(Msg::McpToolCallEnd(x)) => Some(x),
                _ => None,
            })
            .collect();
        assert_eq!(ends.len(), 2, "{ends:?}");
        assert!(ends[0].success, "{:?}", ends[0]);
        assert!(!ends[1].success);
        assert!(ends[1].error.contains("not run again"), "{:?}", ends[1]);
        let last = self.fake.requests().last().cloned().unwrap();
        let long = last.function_call_output("c_long").unwrap();
        assert!(long.contains("Long running operation completed"), "{long}");
        let slow = last.function_call_output("c_slow").unwrap();
        assert!(slow.contains("tool call error: "), "{slow}");
        assert!(slow.contains("not run again"), "{slow}");
        assert_eq!(
            std::fs::read_to_string(&self.runs).unwrap(),
            "run\n",
            "ran once"
        );
    }
}

/// The broker killed (SIGKILL) mid-call and started again: a read-only
/// tool's call runs again and the turn completes with its answer; a tool
/// not marked read-only or idempotent is reported to the model once as
/// interrupted, never run twice, and the turn completes too.
#[tokio::test(flavor = "multi_thread")]
async fn a_broker_killed_mid_call_repeats_only_what_is_safe_to_repeat() {
    let mut turn = crash_turn("broker-kill").await;
    let mut all = Vec::new();
    for call_id in ["c_long", "c_slow"] {
        let seen = turn
            .crash_during(call_id, |t| {
                t.stack.kill("keel-mcp-broker").unwrap();
                t.stack.restart("keel-mcp-broker").unwrap();
            })
            .await;
        all.extend(seen);
    }
    turn.check_outcome(all).await;
}

/// An MCP server process killed mid-call (not the broker): the broker
/// starts it again; a read-only call runs again and succeeds, an unsafe one
/// is reported once; the turn completes either way.
#[tokio::test(flavor = "multi_thread")]
async fn a_server_killed_mid_call_is_restarted_and_the_turn_completes() {
    let mut turn = crash_turn("server-kill").await;
    let mut all = Vec::new();
    for call_id in ["c_long", "c_slow"] {
        let seen = turn
            .crash_during(call_id, |t| {
                let mark = if call_id == "c_long" {
                    &t.mark
                } else {
                    &t.slow_mark
                };
                for pid in mcp::marked_pids(mark) {
                    let _ = std::process::Command::new("kill")
                        .args(["-9", &pid.to_string()])
                        .status();
                }
            })
            .await;
        all.extend(seen);
    }
    turn.check_outcome(all).await;
}
