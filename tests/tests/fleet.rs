//! Replicated services behind one worker. A fleet of three tool-runners:
//! sessions' workspaces are leased evenly across them, every call of a
//! session goes to its runner, and when a runner dies (kill -9) or drains
//! (SIGTERM) the session moves to another runner — a command that was
//! running on a dead runner is reported lost once and never run again, one a
//! draining runner refused runs on the new runner. Two model-proxies share
//! the model calls and either can die; two mcp-brokers each keep their own
//! sessions (one MCP server process per session, never one per broker). A
//! session cloned from a git repository works in its clone, and keeps it
//! when its runner dies and another takes it over on the same volume.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::path::Path;
use std::time::Duration;

use keel_proto::v1 as pb;
use keel_proto::v1::tool_service_client::ToolServiceClient;
use keel_test_support::fake_model::{FakeModel, Scripted};
use keel_test_support::mcp;
use keel_test_support::session;
use keel_test_support::stack::{Stack, StackOptions, wait_for};
use pb::event::Msg;

const WAIT: Duration = Duration::from_secs(90);

/// The process names of the stack's three runners.
const RUNNERS: [&str; 3] = [
    "keel-tool-runner",
    "keel-tool-runner-2",
    "keel-tool-runner-3",
];

async fn fleet(script: Vec<Scripted>) -> (FakeModel, Stack) {
    let fake = FakeModel::start(script).await.unwrap();
    let mut opts = StackOptions::new(fake.base_url());
    opts.tool_runner_replicas = 3;
    let stack = Stack::launch(opts).await.unwrap();
    (fake, stack)
}

/// Each runner's DescribeRunner answer, in [`RUNNERS`] order.
async fn describe(stack: &Stack) -> Vec<pb::DescribeRunnerResponse> {
    let mut out = Vec::new();
    for addr in &stack.tool_runners {
        let mut client = ToolServiceClient::new(stack.worker_channel(addr).unwrap());
        out.push(
            client
                .describe_runner(pb::DescribeRunnerRequest {})
                .await
                .unwrap()
                .into_inner(),
        );
    }
    out
}

/// The process name of the runner `session_id`'s workspace was last leased
/// to, from the runners' logs.
fn holder(stack: &Stack, session_id: &str) -> Option<&'static str> {
    holders(stack, session_id).first().copied()
}

/// Every runner whose log shows a lease of `session_id`, in [`RUNNERS`]
/// order.
fn holders(stack: &Stack, session_id: &str) -> Vec<&'static str> {
    RUNNERS
        .into_iter()
        .filter(|name| {
            stack.proc(name).is_ok_and(|p| {
                p.log_text()
                    .lines()
                    .any(|l| l.contains("workspace leased") && l.contains(session_id))
            })
        })
        .collect()
}

/// Runs one turn and returns its events.
async fn turn(c: &mut session::Client, sid: &str, turn_id: &str) -> Vec<pb::Event> {
    session::send(c, sid, turn_id, "go").await.unwrap();
    let mut stream = session::follow(c, sid, 0, false).await.unwrap();
    let (seen, _) = session::until(&mut stream, |e| {
        (e.turn_id == turn_id && matches!(e.msg, Some(Msg::TurnComplete(_)))).then_some(())
    })
    .await
    .unwrap();
    seen.into_iter().filter(|e| e.turn_id == turn_id).collect()
}

fn warnings(events: &[pb::Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.msg {
            Some(Msg::Warning(w)) => Some(w.message.clone()),
            _ => None,
        })
        .collect()
}

/// A shell call that appends a line to `file`, then sleeps.
fn effect(file: &Path, secs: u32) -> String {
    let script = format!(
        "echo ran >> {}; sleep {secs}; echo finished",
        file.display()
    );
    serde_json::json!({"command": ["sh", "-c", script], "timeout_ms": 60000}).to_string()
}

fn lines(file: &Path) -> usize {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .count()
}

async fn wait_lines(file: &Path, n: usize) {
    let file = file.to_path_buf();
    tokio::task::spawn_blocking(move || {
        wait_for("the command to start", WAIT, || {
            (lines(&file) >= n).then_some(())
        })
    })
    .await
    .unwrap()
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn leases_spread_and_a_dead_runners_session_moves_with_its_command_lost_once() {
    let workspace = tempfile::tempdir().unwrap();
    let mut script = Vec::new();
    for i in 0..6 {
        let args = serde_json::json!({"command": ["sh", "-c", format!("echo {i} > s{i}.txt")]});
        script.push(Scripted::tool_call("c1", "shell", &args.to_string()));
        script.push(Scripted::assistant("written"));
    }
    let effects = workspace.path().join("effects.txt");
    script.push(Scripted::tool_call("c2", "shell", &effect(&effects, 60)));
    script.push(Scripted::assistant("told of the loss"));
    script.push(Scripted::tool_call(
        "c3",
        "shell",
        r#"{"command": ["sh", "-c", "cat s0.txt"]}"#,
    ));
    script.push(Scripted::assistant("read it"));
    let (fake, mut stack) = fleet(script).await;
    let mut c = stack.connect().await.unwrap();

    let mut sessions = Vec::new();
    for i in 0..6 {
        let sid = session::create(&mut c, Some(workspace.path()))
            .await
            .unwrap();
        turn(&mut c, &sid, &format!("t{i}")).await;
        assert_eq!(
            std::fs::read_to_string(workspace.path().join(format!("s{i}.txt"))).unwrap(),
            format!("{i}\n")
        );
        sessions.push(sid);
    }
    let leases: Vec<u32> = describe(&stack).await.iter().map(|d| d.leases).collect();
    println!("leases per runner: {leases:?}");
    assert_eq!(leases, [2, 2, 2], "six sessions over three runners");
    let ids: std::collections::BTreeSet<String> = describe(&stack)
        .await
        .into_iter()
        .map(|d| d.runner_id)
        .collect();
    assert_eq!(ids.len(), 3, "every runner has an id of its own: {ids:?}");

    // Session 0's runner dies while its command runs.
    let sid = sessions[0].clone();
    let dead = holder(&stack, &sid).expect("the session's runner logged its lease");
    session::send(&mut c, &sid, "t-kill", "go").await.unwrap();
    wait_lines(&effects, 1).await;
    stack.kill(dead).unwrap();
    let mut stream = session::follow(&mut c, &sid, 0, false).await.unwrap();
    let (seen, _) = session::until(&mut stream, |e| {
        (e.turn_id == "t-kill" && matches!(e.msg, Some(Msg::TurnComplete(_)))).then_some(())
    })
    .await
    .unwrap();
    let events: Vec<_> = seen.into_iter().filter(|e| e.turn_id == "t-kill").collect();
    let requests = fake.wait_for_requests(14, WAIT).await.unwrap();
    let told = requests[13].function_call_output("c2").unwrap();
    assert!(
        told.contains("the tool-runner went away while this command was running"),
        "{told}"
    );
    let moved = warnings(&events);
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert!(moved[0].contains("moved to tool-runner"), "{moved:?}");
    // Never run again, on any runner.
    assert_eq!(lines(&effects), 1);

    // The session goes on, on another runner, over the same workspace.
    let events = turn(&mut c, &sid, "t-after").await;
    let requests = fake.wait_for_requests(16, WAIT).await.unwrap();
    let c3 = requests[15].function_call_output("c3").unwrap();
    let c3: serde_json::Value = serde_json::from_str(&c3).unwrap();
    assert_eq!(
        (c3["output"].as_str(), c3["metadata"]["exit_code"].as_i64()),
        (Some("0\n"), Some(0)),
        "{c3} {events:#?}"
    );
    let now = holder_after(&stack, &sid, dead);
    assert_ne!(now, dead);
    assert_eq!(lines(&effects), 1);

    // Leased, lost and moved: recorded for the replay tests.
    c.close_session(pb::CloseSessionRequest {
        session_id: sid.clone(),
    })
    .await
    .unwrap();
    keel_test_support::history::record_closed(&stack.temporal_address, &sid, "runner_moved_closed")
        .await
        .unwrap();
}

/// The runner that took `session_id`'s lease other than `dead`.
fn holder_after(stack: &Stack, session_id: &str, dead: &str) -> &'static str {
    holders(stack, session_id)
        .into_iter()
        .find(|name| *name != dead)
        .expect("another runner took the session")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_draining_runner_finishes_its_command_and_the_next_call_runs_elsewhere() {
    let workspace = tempfile::tempdir().unwrap();
    let first = workspace.path().join("first.txt");
    let second = workspace.path().join("second.txt");
    let (fake, stack) = fleet(vec![
        Scripted::tool_call("c1", "shell", &effect(&first, 3)),
        Scripted::tool_call("c2", "shell", &effect(&second, 0)),
        Scripted::assistant("both ran"),
    ])
    .await;
    let mut c = stack.connect().await.unwrap();
    let sid = session::create(&mut c, Some(workspace.path()))
        .await
        .unwrap();
    session::send(&mut c, &sid, "t1", "go").await.unwrap();
    wait_lines(&first, 1).await;
    let draining = holder(&stack, &sid).expect("the session's runner logged its lease");
    let pid = stack.pid(draining).unwrap();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut stream = session::follow(&mut c, &sid, 0, false).await.unwrap();
    let (seen, _) = session::until(&mut stream, |e| {
        (e.turn_id == "t1" && matches!(e.msg, Some(Msg::TurnComplete(_)))).then_some(())
    })
    .await
    .unwrap();
    let requests = fake.wait_for_requests(3, WAIT).await.unwrap();
    // The running command finished where it was.
    let c1 = requests[1].function_call_output("c1").unwrap();
    assert!(c1.contains("finished"), "{c1}");
    // The next ran once, on another runner.
    let c2 = requests[2].function_call_output("c2").unwrap();
    assert!(c2.contains("finished"), "{c2}");
    assert_eq!((lines(&first), lines(&second)), (1, 1));
    let moved = warnings(&seen);
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert_ne!(holder_after(&stack, &sid, draining), draining);
    // The drained runner stopped by itself once its command was done.
    let log = |stack: &Stack| stack.proc(draining).unwrap().log_text();
    wait_for("the runner to stop", WAIT, || {
        log(&stack).contains("drained; stopping").then_some(())
    })
    .unwrap();
}

/// How many model calls a model-proxy's log shows.
fn model_calls(stack: &Stack, name: &str) -> usize {
    stack
        .proc(name)
        .unwrap()
        .log_text()
        .lines()
        .filter(|l| l.contains("calling the model"))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn model_proxies_share_calls_and_mcp_brokers_keep_their_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let mark = format!("fleet-{}", std::process::id());
    let (cmd, args) = mcp::everything();
    let extra =
        format!("env = {{ KEEL_TEST_MARK = {mark:?} }}\ndefault_tools_approval_mode = \"approve\"");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, mcp::stdio_table("everything", &cmd, &args, &extra)).unwrap();
    const SESSIONS: usize = 4;
    let mut script = Vec::new();
    for i in 0..SESSIONS {
        for call in ["c1", "c2"] {
            let args = serde_json::json!({"message": format!("{i}-{call}")}).to_string();
            script.push(Scripted::tool_call(call, "mcp__everything__echo", &args));
        }
        script.push(Scripted::assistant("echoed"));
    }
    script.push(Scripted::assistant("after the kill"));
    let fake = FakeModel::start(script).await.unwrap();
    let mut opts = StackOptions::new(fake.base_url());
    opts.model_proxy_replicas = 2;
    opts.mcp_broker_replicas = 2;
    opts.mcp_broker_args = vec!["--config".into(), config.display().to_string()];
    let mut stack = Stack::launch(opts).await.unwrap();
    let mut c = stack.connect().await.unwrap();
    let mut sessions = Vec::new();
    for i in 0..SESSIONS {
        let sid = session::create(&mut c, None).await.unwrap();
        let events = turn(&mut c, &sid, &format!("t{i}")).await;
        let ends = events
            .iter()
            .filter(|e| matches!(&e.msg, Some(Msg::McpToolCallEnd(end)) if end.success))
            .count();
        assert_eq!(ends, 2, "{events:#?}");
        sessions.push(sid);
    }
    // Each session's server started on one broker only: its listing and
    // both calls reached the same replica.
    let servers = mcp::marked_pids(&mark).len();
    assert_eq!(servers, SESSIONS, "one server process per session");
    let calls = [
        model_calls(&stack, "keel-model-proxy"),
        model_calls(&stack, "keel-model-proxy-2"),
    ];
    println!("model calls per model-proxy: {calls:?}");
    assert_eq!(calls.iter().sum::<usize>(), SESSIONS * 3);
    assert!(
        calls.iter().all(|n| *n > 0),
        "both replicas served calls: {calls:?}"
    );

    // One model-proxy dies: the next turn's model call goes to the other.
    stack.kill("keel-model-proxy").unwrap();
    let events = turn(&mut c, &sessions[0], "after").await;
    assert!(
        events
            .iter()
            .any(|e| matches!(&e.msg, Some(Msg::AgentMessage(m)) if m.message == "after the kill")),
        "{events:#?}"
    );
}

fn git(dir: &Path, args: &[&str]) {
    let ok = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .status()
        .unwrap()
        .success();
    assert!(ok, "git {args:?}");
}

/// The `output` of a `shell` call's JSON output.
fn shell_output(fake: &FakeModel, request: usize, call_id: &str) -> String {
    let requests = fake.requests();
    let out = requests[request].function_call_output(call_id).unwrap();
    let out: serde_json::Value = serde_json::from_str(&out).unwrap();
    out["output"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cloned_workspace_is_checked_out_at_its_ref_and_moves_with_the_session() {
    let origin = tempfile::tempdir().unwrap();
    git(origin.path(), &["init", "--quiet"]);
    std::fs::write(origin.path().join("f.txt"), "one\n").unwrap();
    git(origin.path(), &["add", "f.txt"]);
    git(origin.path(), &["commit", "--quiet", "-m", "one"]);
    git(origin.path(), &["tag", "v1"]);
    std::fs::write(origin.path().join("f.txt"), "two\n").unwrap();
    git(origin.path(), &["commit", "--quiet", "-am", "two"]);
    let clones = tempfile::tempdir().unwrap();
    let shell = |script: &str| serde_json::json!({"command": ["sh", "-c", script]}).to_string();
    let fake = FakeModel::start(vec![
        Scripted::tool_call(
            "c1",
            "shell",
            &shell("cat f.txt; pwd; echo changed > f.txt"),
        ),
        Scripted::assistant("read and changed"),
        Scripted::tool_call("c2", "shell", &shell("cat f.txt")),
        Scripted::assistant("still there"),
    ])
    .await
    .unwrap();
    let mut opts = StackOptions::new(fake.base_url());
    opts.tool_runner_replicas = 2;
    opts.tool_runner_env = vec![
        (
            "KEEL_CLONE_ROOT".into(),
            clones.path().display().to_string(),
        ),
        ("KEEL_ALLOW_LOCAL_GIT".into(), "1".into()),
    ];
    let mut stack = Stack::launch(opts).await.unwrap();
    let mut c = stack.connect().await.unwrap();
    let sid = c
        .create_session(pb::CreateSessionRequest {
            git: Some(pb::GitSource {
                url: format!("file://{}", origin.path().display()),
                r#ref: "v1".into(),
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap()
        .session_id;
    turn(&mut c, &sid, "t1").await;
    let out = shell_output(&fake, 1, "c1");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("one"), "the tag's file: {out}");
    let cwd = lines.next().unwrap();
    assert!(
        Path::new(cwd).starts_with(std::fs::canonicalize(clones.path()).unwrap()),
        "the session works in its clone: {cwd}"
    );
    // The origin is untouched; the clone has the agent's change.
    assert_eq!(
        std::fs::read_to_string(origin.path().join("f.txt")).unwrap(),
        "two\n"
    );

    // Its runner dies between turns; the next turn runs on the other
    // runner, in the same clone (not cloned again).
    let dead = holder(&stack, &sid).expect("the session's runner logged its lease");
    stack.kill(dead).unwrap();
    let events = turn(&mut c, &sid, "t2").await;
    assert_eq!(shell_output(&fake, 3, "c2"), "changed\n");
    assert_eq!(warnings(&events).len(), 1, "{events:#?}");
    let clones_made = std::fs::read_dir(clones.path()).unwrap().count();
    assert_eq!(clones_made, 1, "one clone, kept");
}
