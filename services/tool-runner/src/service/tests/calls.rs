//! RunTool happens once per (session id, call id): repeated, concurrent,
//! abandoned, cancelled and restarted calls.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::*;
use crate::calls::journal::{StartedRecord, unix_ms};
use crate::calls::{JournalEntry, aborted_text, restarted_text};

/// Waits (bounded) until `cond` holds.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |text| text.lines().count())
}

fn is_dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

/// A `shell` call running `script` with `sh` in `dir`.
fn script_req(call_id: &str, script: &str, dir: &Path) -> Request<RunToolRequest> {
    let args =
        serde_json::json!({"command": ["sh", "-c", script], "timeout_ms": 60_000}).to_string();
    tool_req(call_id, "shell", &args, dir.to_str().unwrap())
}

/// Runs a request on a task of its own, as a separate RPC would.
fn spawn_call(
    runner: &ToolRunner,
    req: Request<RunToolRequest>,
) -> tokio::task::JoinHandle<Result<RunToolResponse, Status>> {
    let runner = runner.clone();
    tokio::spawn(async move { runner.run_tool(req).await.map(Response::into_inner) })
}

async fn call(runner: &ToolRunner, req: Request<RunToolRequest>) -> RunToolResponse {
    runner.run_tool(req).await.unwrap().into_inner()
}

async fn cancel(runner: &ToolRunner, session_id: &str, call_id: &str) -> bool {
    runner
        .cancel_tool_call(Request::new(CancelToolCallRequest {
            session_id: session_id.into(),
            call_id: call_id.into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .was_running
}

/// The output item of a call of session `s1` (what [`super::tool_req`]
/// sends).
async fn stored_output(blobs: &BlobStore, resp: &RunToolResponse) -> serde_json::Value {
    super::stored_item(blobs, "s1", resp).await
}

#[tokio::test]
async fn the_same_key_twice_runs_once() {
    let dir = tempfile::tempdir().unwrap();
    let fx = runner(dir.path());
    let count = dir.path().join("count");
    let script = "echo run >> count; echo hello";
    let first = call(&fx.runner, script_req("k", script, dir.path())).await;
    assert!(first.success, "{}", first.output_preview);
    let second = call(&fx.runner, script_req("k", script, dir.path())).await;
    assert_eq!(first, second, "the recorded response, digest and all");
    assert_eq!(lines(&count), 1);
    // Another call id, or the same call id in another session, is another call.
    call(&fx.runner, script_req("k2", script, dir.path())).await;
    let mut other_session = script_req("k", script, dir.path());
    other_session.get_mut().session_id = "s2".into();
    call(&fx.runner, other_session).await;
    assert_eq!(lines(&count), 3);
    assert_eq!(fx.runner.running_calls(), 0);
}

#[tokio::test]
async fn every_tool_is_keyed_by_call_id() {
    let dir = tempfile::tempdir().unwrap();
    let fx = runner(dir.path());
    let patch = "*** Begin Patch\n*** Add File: new.txt\n+x\n*** End Patch";
    let mut req = tool_req("p", "apply_patch", "", "");
    req.get_mut().arguments = patch.into();
    req.get_mut().custom = true;
    let first = call(&fx.runner, req).await;
    assert!(first.success, "{}", first.output_preview);
    // Applied again, the patch would fail: the file exists.
    let mut req = tool_req("p", "apply_patch", "", "");
    req.get_mut().arguments = patch.into();
    req.get_mut().custom = true;
    assert_eq!(call(&fx.runner, req).await, first);
}

#[tokio::test]
async fn concurrent_duplicates_run_once_and_share_the_response() {
    let dir = tempfile::tempdir().unwrap();
    let fx = runner(dir.path());
    let script = "echo run >> count; while [ ! -e go ]; do sleep 0.02; done; echo done";
    let a = spawn_call(&fx.runner, script_req("k", script, dir.path()));
    let b = spawn_call(&fx.runner, script_req("k", script, dir.path()));
    until("both callers on one execution", || {
        fx.runner.callers_waiting("s1", "k") == 2
    })
    .await;
    assert_eq!(fx.runner.running_calls(), 1);
    std::fs::write(dir.path().join("go"), "").unwrap();
    let a = a.await.unwrap().unwrap();
    let b = b.await.unwrap().unwrap();
    assert_eq!(a, b);
    assert!(a.success, "{}", a.output_preview);
    assert_eq!(a.command.unwrap().aggregated_output, "done\n");
    assert_eq!(lines(&dir.path().join("count")), 1);
}

#[tokio::test]
async fn a_dropped_caller_leaves_the_call_running_for_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let fx = runner(dir.path());
    let script =
        "echo run >> count; touch started; while [ ! -e go ]; do sleep 0.02; done; echo finished";
    let first = spawn_call(&fx.runner, script_req("k", script, dir.path()));
    until("the command to start", || {
        dir.path().join("started").exists()
    })
    .await;
    until("the first caller to wait", || {
        fx.runner.callers_waiting("s1", "k") == 1
    })
    .await;
    // The worker died: its RPC is dropped.
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    assert_eq!(fx.runner.callers_waiting("s1", "k"), 0);
    assert_eq!(fx.runner.running_calls(), 1, "the command still runs");

    let retry = spawn_call(&fx.runner, script_req("k", script, dir.path()));
    until("the retry to attach", || {
        fx.runner.callers_waiting("s1", "k") == 1
    })
    .await;
    std::fs::write(dir.path().join("go"), "").unwrap();
    let resp = retry.await.unwrap().unwrap();
    assert!(resp.success, "{}", resp.output_preview);
    let command = resp.command.unwrap();
    assert_eq!(
        (command.exit_code, command.aggregated_output.as_str()),
        (0, "finished\n")
    );
    assert_eq!(lines(&dir.path().join("count")), 1);
}

#[tokio::test]
async fn a_call_nobody_waits_for_still_records_its_result() {
    let dir = tempfile::tempdir().unwrap();
    let fx = runner(dir.path());
    let script = "touch started; while [ ! -e go ]; do sleep 0.02; done; echo late";
    let first = spawn_call(&fx.runner, script_req("k", script, dir.path()));
    until("the command to start", || {
        dir.path().join("started").exists()
    })
    .await;
    first.abort();
    std::fs::write(dir.path().join("go"), "").unwrap();
    until("the call to finish", || fx.runner.running_calls() == 0).await;
    let resp = call(&fx.runner, script_req("k", script, dir.path())).await;
    assert_eq!(resp.command.unwrap().aggregated_output, "late\n");
}

#[tokio::test]
async fn cancel_kills_the_process_group_and_records_the_aborted_output() {
    let dir = tempfile::tempdir().unwrap();
    let fx = runner(dir.path());
    let script = "echo run >> count; sleep 30 & echo $! > bg.tmp && mv bg.tmp bg; sleep 30";
    let first = spawn_call(&fx.runner, script_req("k", script, dir.path()));
    until("the background process", || dir.path().join("bg").exists()).await;
    let pid: i32 = std::fs::read_to_string(dir.path().join("bg"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    until("the caller to wait", || {
        fx.runner.callers_waiting("s1", "k") == 1
    })
    .await;

    assert!(cancel(&fx.runner, "s1", "k").await);
    until("the whole group to die", || is_dead(pid)).await;
    let aborted = first.await.unwrap().unwrap();
    assert!(!aborted.success);
    assert!(aborted.command.is_none());
    let text = &aborted.output_preview;
    let secs = text
        .strip_prefix("Wall time: ")
        .and_then(|t| t.strip_suffix(" seconds\naborted by user"))
        .unwrap_or_else(|| panic!("not Codex's aborted output: {text:?}"));
    let secs: f32 = secs.parse().unwrap();
    assert_eq!(text, &aborted_text("shell", Duration::from_secs_f32(secs)));
    let item = stored_output(&fx.blobs, &aborted).await;
    assert_eq!(item["type"], "function_call_output");
    assert_eq!(item["call_id"], "k");
    assert_eq!(item["output"], *text);

    // Later calls for the key get the aborted output; nothing runs again.
    assert_eq!(
        call(&fx.runner, script_req("k", script, dir.path())).await,
        aborted
    );
    assert!(!cancel(&fx.runner, "s1", "k").await, "already finished");
    assert_eq!(lines(&dir.path().join("count")), 1);
}

#[tokio::test]
async fn a_call_cancelled_before_it_arrives_never_runs() {
    let dir = tempfile::tempdir().unwrap();
    let fx = runner(dir.path());
    assert!(!cancel(&fx.runner, "s1", "early").await);
    let resp = call(
        &fx.runner,
        script_req("early", "echo run >> count", dir.path()),
    )
    .await;
    assert_eq!(
        resp.output_preview,
        "Wall time: 0.0 seconds\naborted by user"
    );
    assert!(!resp.success);
    assert!(!dir.path().join("count").exists());
    // A non-shell tool gets the other layout.
    cancel(&fx.runner, "s1", "read").await;
    let args = serde_json::json!({"file_path": dir.path().join("x")}).to_string();
    let resp = call(&fx.runner, tool_req("read", "read_file", &args, "")).await;
    assert_eq!(resp.output_preview, "aborted by user after 0.0s");
}

#[tokio::test]
async fn cancelling_exec_command_kills_the_process_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let fx = runner(dir.path());
    let args = r#"{"cmd":"touch started; exec sleep 30","shell":"sh","login":false,"yield_time_ms":30000}"#;
    let first = spawn_call(&fx.runner, tool_req("e", "exec_command", args, ""));
    until("the process to start", || {
        dir.path().join("started").exists()
    })
    .await;
    assert_eq!(fx.runner.live_processes(), 1);
    assert!(cancel(&fx.runner, "s1", "e").await);
    assert_eq!(fx.runner.live_processes(), 0);
    let resp = first.await.unwrap().unwrap();
    assert!(
        resp.output_preview.ends_with(" seconds\naborted by user"),
        "{}",
        resp.output_preview
    );
}

/// The process records in the journal directory.
fn process_records(fx: &Fixture) -> Vec<serde_json::Value> {
    std::fs::read_dir(fx.state.path().join(crate::calls::journal::CALLS_DIR))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|ext| ext == "process"))
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
        .collect()
}

/// An exec_command process outlives its call (whose journal entry is then
/// finished); its process record stays until it goes, so a restart after a
/// crash would kill it like any command cut mid-call.
#[tokio::test]
async fn a_process_outliving_its_call_stays_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let fx = runner(dir.path());
    let args =
        r#"{"cmd":"echo $$ > pid; exec sleep 30","shell":"sh","login":false,"yield_time_ms":300}"#;
    let resp = call(&fx.runner, tool_req("e", "exec_command", args, "")).await;
    assert!(resp.command.as_ref().is_some_and(|c| c.running), "{resp:?}");
    let pid: i64 = std::fs::read_to_string(dir.path().join("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let records = process_records(&fx);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["pgid"], pid);
    assert_eq!(records[0]["owner"]["call_id"], "e");
    assert_eq!(records[0]["owner"]["tool_name"], "exec_command");

    // What a restart does with the record: the group is killed.
    let report = crate::exec::orphans::ProcessRecords::new(
        &fx.state.path().join(crate::calls::journal::CALLS_DIR),
    )
    .reap_orphans()
    .unwrap();
    assert_eq!(report.killed, 1);
    let pid = i32::try_from(pid).unwrap();
    until("the process to die", || is_dead(pid)).await;
    assert!(process_records(&fx).is_empty());

    // Without a crash, the record goes with the process.
    call(&fx.runner, tool_req("f", "exec_command", args, "")).await;
    assert_eq!(process_records(&fx).len(), 1);
    fx.runner
        .close_tool_session(Request::new(CloseToolSessionRequest {
            session_id: "s1".into(),
        }))
        .await
        .unwrap();
    assert!(process_records(&fx).is_empty());
    // A command run to completion leaves none either.
    let resp = call(&fx.runner, script_req("k", "echo done", dir.path())).await;
    assert!(resp.success, "{}", resp.output_preview);
    assert!(process_records(&fx).is_empty());
}

#[tokio::test]
async fn close_session_cancels_the_sessions_calls() {
    let dir = tempfile::tempdir().unwrap();
    let fx = runner(dir.path());
    let first = spawn_call(
        &fx.runner,
        script_req("k", "touch started; sleep 30", dir.path()),
    );
    until("the command to start", || {
        dir.path().join("started").exists()
    })
    .await;
    fx.runner
        .close_tool_session(Request::new(CloseToolSessionRequest {
            session_id: "s1".into(),
        }))
        .await
        .unwrap();
    assert_eq!(fx.runner.running_calls(), 0);
    let resp = first.await.unwrap().unwrap();
    assert!(resp.output_preview.ends_with("aborted by user"));
}

#[tokio::test]
async fn a_retried_write_stdin_writes_once() {
    let dir = tempfile::tempdir().unwrap();
    let fx = runner(dir.path());
    let started = call(
        &fx.runner,
        tool_req(
            "e",
            "exec_command",
            r#"{"cmd":"exec cat","shell":"sh","login":false,"tty":true,"yield_time_ms":250}"#,
            "",
        ),
    )
    .await;
    let process_id = started.command.unwrap().process_id;
    assert!(process_id > 0);
    let write = |call_id: &str, chars: &str| {
        let args =
            serde_json::json!({"session_id": process_id, "chars": chars, "yield_time_ms": 500})
                .to_string();
        tool_req(call_id, "write_stdin", &args, "")
    };
    let first = call(&fx.runner, write("w1", "hello\n")).await;
    assert_eq!(first.command.as_ref().unwrap().aggregated_output, "hello\n");
    assert_eq!(call(&fx.runner, write("w1", "hello\n")).await, first);
    // Had the retry written again, its echo would show up now.
    let next = call(&fx.runner, write("w2", "bye\n")).await;
    assert_eq!(next.command.unwrap().aggregated_output, "bye\n");
}

#[tokio::test]
async fn a_call_cut_by_a_restart_is_not_run_again() {
    let dir = tempfile::tempdir().unwrap();
    let fx = runner(dir.path());
    // The previous tool-runner journaled the start and died.
    let key = CallKey::new("s1", "k");
    let journal = Journal::open(fx.state.path()).unwrap();
    journal
        .record_started(
            &key,
            &StartedRecord {
                session_id: "s1",
                call_id: "k",
                tool_name: "shell",
                attempt: 0,
                started_at_unix_ms: unix_ms(SystemTime::now()),
                tool_runner_pid: 1,
            },
        )
        .await
        .unwrap();
    let restarted = runner_on(&fx.blobs, fx.state.path(), dir.path(), Workspace::any());
    let script = "echo run >> side-effect";
    let resp = call(&restarted, script_req("k", script, dir.path())).await;
    assert_eq!(
        resp.output_preview,
        "execution error: the tool-runner restarted while this command was running; it was not run again to avoid running it twice, and its output is lost"
    );
    assert_eq!(resp.output_preview, restarted_text("shell"));
    assert!(!resp.success);
    assert!(resp.command.is_none());
    assert!(!dir.path().join("side-effect").exists());
    let item = stored_output(&fx.blobs, &resp).await;
    assert_eq!(
        (item["type"].as_str(), item["call_id"].as_str()),
        (Some("function_call_output"), Some("k"))
    );
    assert_eq!(item["output"], resp.output_preview);
    // It is now the call's recorded result.
    assert_eq!(
        journal.lookup(&key).await.unwrap(),
        JournalEntry::Finished(resp.clone())
    );
    assert_eq!(
        call(&restarted, script_req("k", script, dir.path())).await,
        resp
    );
    assert!(!dir.path().join("side-effect").exists());
}

#[tokio::test]
async fn a_recorded_result_survives_a_new_instance() {
    let dir = tempfile::tempdir().unwrap();
    let fx = runner(dir.path());
    let script = "echo run >> count; echo once";
    let first = call(&fx.runner, script_req("k", script, dir.path())).await;
    let second_instance = runner_on(&fx.blobs, fx.state.path(), dir.path(), Workspace::any());
    let again = call(&second_instance, script_req("k", script, dir.path())).await;
    assert_eq!(again, first);
    assert_eq!(lines(&dir.path().join("count")), 1);
    let item = stored_output(&fx.blobs, &again).await;
    assert_eq!(item["call_id"], "k");
}

#[tokio::test]
async fn an_unusable_journal_refuses_to_run() {
    let dir = tempfile::tempdir().unwrap();
    let fx = runner(dir.path());
    // The journal directory becomes a file: nothing can be journaled.
    let calls = fx.state.path().join(crate::calls::journal::CALLS_DIR);
    std::fs::remove_dir_all(&calls).unwrap();
    std::fs::write(&calls, "").unwrap();
    let err = fx
        .runner
        .run_tool(script_req("k", "echo run >> count", dir.path()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(!dir.path().join("count").exists());
    assert_eq!(fx.runner.running_calls(), 0);
}

#[tokio::test]
async fn keys_are_checked() {
    let fx = runner(Path::new("/"));
    let mut req = tool_req("a\0b", "shell", "{}", "/");
    let err = fx.runner.run_tool(req).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    req = tool_req("c", "shell", "{}", "/");
    req.get_mut().session_id = "s\0".into();
    let err = fx.runner.run_tool(req).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = fx
        .runner
        .cancel_tool_call(Request::new(CancelToolCallRequest {
            session_id: "s".into(),
            call_id: String::new(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn pruning_forgets_old_results() {
    let dir = tempfile::tempdir().unwrap();
    let fx = runner(dir.path());
    call(&fx.runner, script_req("k", "true", dir.path())).await;
    // Nothing is older than the retention yet.
    assert_eq!(fx.runner.prune_journal().await.unwrap(), 0);
    let journal = Journal::open(fx.state.path()).unwrap();
    let key = CallKey::new("s1", "k");
    assert!(matches!(
        journal.lookup(&key).await.unwrap(),
        JournalEntry::Finished(_)
    ));
    assert_eq!(journal.prune(Duration::ZERO).await.unwrap(), 1);
    assert_eq!(journal.lookup(&key).await.unwrap(), JournalEntry::Absent);
}
