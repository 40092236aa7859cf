//! Interrupt during a long command: the turn is aborted at once, the command's
//! process really dies, the call still gets exactly one output ("aborted by
//! user"), and the next turn works.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::time::Duration;

use keel_proto::v1 as pb;
use keel_test_support::fake_model::{FakeModel, Scripted};
use keel_test_support::session;
use keel_test_support::stack::{Stack, StackOptions, wait_for};
use pb::event::Msg;

const WAIT: Duration = Duration::from_secs(60);

/// The host pid of the process whose argv is exactly `argv`. (A sandboxed
/// command runs in a PID namespace of its own: the pid it sees as `$$` is
/// not the host's.)
fn find_process(argv: &[&str]) -> Option<u32> {
    let wanted: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc").ok()?.find_map(|entry| {
        let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        (cmdline == wanted).then_some(pid)
    })
}

/// True while `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn interrupt_kills_the_running_command_and_the_next_turn_works() {
    let workspace = tempfile::tempdir().unwrap();
    // A duration no other process on the machine sleeps for, to find it by.
    let duration = format!("60.{}", std::process::id());
    let script = format!("exec sleep {duration}");
    let args =
        serde_json::json!({"command": ["sh", "-c", script], "timeout_ms": 120000}).to_string();
    let fake = FakeModel::start(vec![
        Scripted::tool_call("call_sleep", "shell", &args),
        Scripted::assistant("Back after the interrupt."),
    ])
    .await
    .unwrap();
    let opts = StackOptions::new(fake.base_url());
    let stack = Stack::launch(opts).await.unwrap();
    let mut client = stack.connect().await.unwrap();
    let sid = session::create(&mut client, Some(workspace.path()))
        .await
        .unwrap();
    let mut events = session::follow(&mut client, &sid, 0, false).await.unwrap();
    client
        .send_user_turn(pb::SendUserTurnRequest {
            session_id: sid.clone(),
            text: "sleep for a while".into(),
            turn_id: "turn-1".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    loop {
        if matches!(
            session::next_event(&mut events).await.unwrap().msg,
            Some(Msg::ExecCommandBegin(_))
        ) {
            break;
        }
    }
    let pid: u32 = wait_for("the command to start", WAIT, || {
        find_process(&["sleep", &duration])
    })
    .unwrap();
    assert!(alive(pid));

    client
        .interrupt(pb::InterruptRequest {
            session_id: sid.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let aborted = loop {
        let e = session::next_event(&mut events).await.unwrap();
        match &e.msg {
            Some(Msg::TurnAborted(a)) => break *a,
            Some(Msg::TurnComplete(_)) => panic!("turn completed instead of aborting: {e:?}"),
            _ => {}
        }
    };
    assert_eq!(aborted.reason, pb::TurnAbortReason::Interrupted as i32);
    tokio::task::spawn_blocking(move || {
        wait_for("the interrupted command to die", WAIT, || {
            (!alive(pid)).then_some(())
        })
    })
    .await
    .unwrap()
    .unwrap();

    // The next turn works, and the model sees exactly one output for the call.
    client
        .send_user_turn(pb::SendUserTurnRequest {
            session_id: sid.clone(),
            text: "are you there?".into(),
            turn_id: "turn-2".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let done = loop {
        let e = session::next_event(&mut events).await.unwrap();
        if let Some(Msg::TurnComplete(c)) = e.msg {
            assert_eq!(e.turn_id, "turn-2");
            break c;
        }
    };
    assert_eq!(done.last_agent_message, "Back after the interrupt.");
    let requests = fake.wait_for_requests(2, WAIT).await.unwrap();
    let outputs: Vec<_> = requests[1]
        .conversation()
        .iter()
        .filter(|i| i["type"] == "function_call_output")
        .collect();
    assert_eq!(outputs.len(), 1, "{:#?}", requests[1].input());
    assert_eq!(outputs[0]["call_id"], "call_sleep");
    assert_eq!(outputs[0]["output"], "aborted by user");
}

/// A session's `exec_command` processes outlive their turn (the model
/// talks to them with `write_stdin`), but not the session: closing it kills
/// them.
#[tokio::test(flavor = "multi_thread")]
async fn closing_a_session_kills_its_background_processes() {
    let workspace = tempfile::tempdir().unwrap();
    let duration = format!("61.{}", std::process::id());
    let args = serde_json::json!({"cmd": format!("exec sleep {duration}"), "yield_time_ms": 250})
        .to_string();
    let fake = FakeModel::start(vec![
        Scripted::tool_call("call_bg", "exec_command", &args),
        Scripted::assistant("It runs in the background."),
    ])
    .await
    .unwrap();
    let stack = Stack::launch(StackOptions::new(fake.base_url()))
        .await
        .unwrap();
    let mut client = stack.connect().await.unwrap();
    let (sid, mut events) = session::open(
        &mut client,
        pb::CreateSessionRequest {
            cwd: workspace.path().display().to_string(),
            shell_tool: pb::ShellToolKind::ExecCommand as i32,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    session::send(&mut client, &sid, "turn-1", "start it")
        .await
        .unwrap();
    session::until(&mut events, |e| {
        matches!(e.msg, Some(Msg::TurnComplete(_))).then_some(())
    })
    .await
    .unwrap();
    let pid: u32 = tokio::task::spawn_blocking({
        let duration = duration.clone();
        move || {
            wait_for("the background process", WAIT, || {
                find_process(&["sleep", &duration])
            })
        }
    })
    .await
    .unwrap()
    .unwrap();
    assert!(alive(pid), "it outlives its turn");

    client
        .close_session(pb::CloseSessionRequest {
            session_id: sid.clone(),
        })
        .await
        .unwrap();
    session::until(&mut events, |e| {
        matches!(e.msg, Some(Msg::ShutdownComplete(_))).then_some(())
    })
    .await
    .unwrap();
    tokio::task::spawn_blocking(move || {
        wait_for("the closed session's process to die", WAIT, || {
            (!alive(pid)).then_some(())
        })
    })
    .await
    .unwrap()
    .unwrap();
    keel_test_support::history::record_closed(
        &stack.temporal_address,
        &sid,
        "close_tool_session_closed",
    )
    .await
    .unwrap();
}
