//! The session registry over real gRPC: names, archive and unarchive, true
//! statuses (a session waiting for an approval reads `waiting`), filtered
//! listing and cursor pagination that neither skips nor repeats a session.
//!
//! ListSessions reads Temporal's visibility store, which catches up with a
//! workflow's memo shortly after the workflow writes it: the assertions on
//! listings wait until the listing says what they expect (or time out).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::collections::BTreeSet;
use std::time::Duration;

use keel_proto::v1 as pb;
use keel_test_support::fake_model::{FakeModel, Scripted};
use keel_test_support::history;
use keel_test_support::session::{self, Client};
use keel_test_support::stack::{Stack, StackOptions};
use pb::event::Msg;
use tonic::Code;

const WAIT: Duration = Duration::from_secs(30);

async fn list(client: &mut Client, filter: pb::SessionFilter) -> Vec<pb::Session> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_sessions(pb::ListSessionsRequest {
                page_size: 50,
                page_token: token.clone(),
                filter: Some(filter.clone()),
            })
            .await
            .unwrap()
            .into_inner();
        out.extend(page.sessions);
        if page.next_page_token.is_empty() {
            return out;
        }
        token = page.next_page_token;
    }
}

/// The ids `filter` lists, once they equal `want` (visibility catches up
/// with memos a moment after the workflow writes them).
async fn wait_listed(client: &mut Client, filter: pb::SessionFilter, want: &[&str]) {
    let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got: BTreeSet<String> = list(client, filter.clone())
            .await
            .into_iter()
            .map(|s| s.session_id)
            .collect();
        if got == want {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("filter {filter:?} lists {got:?}, expected {want:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The listed session `id`, once `ok` holds for it.
async fn wait_row(client: &mut Client, id: &str, ok: impl Fn(&pb::Session) -> bool) -> pb::Session {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let all = list(
            client,
            pb::SessionFilter {
                archived: pb::ArchivedFilter::Include as i32,
                ..Default::default()
            },
        )
        .await;
        if let Some(row) = all.iter().find(|s| s.session_id == id)
            && ok(row)
        {
            return row.clone();
        }
        if tokio::time::Instant::now() > deadline {
            panic!("session {id} never listed as expected: {all:#?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn rename(client: &mut Client, id: &str, name: &str) -> Result<(), tonic::Status> {
    let request = pb::RenameSessionRequest {
        session_id: id.into(),
        name: name.into(),
    };
    client.rename_session(request).await.map(|_| ())
}

/// ArchiveSession, or UnarchiveSession when `archived` is false.
async fn archive(client: &mut Client, id: &str, archived: bool) -> Result<(), tonic::Status> {
    let session_id = id.to_string();
    if archived {
        let request = pb::ArchiveSessionRequest { session_id };
        client.archive_session(request).await.map(|_| ())
    } else {
        let request = pb::UnarchiveSessionRequest { session_id };
        client.unarchive_session(request).await.map(|_| ())
    }
}

async fn close(client: &mut Client, id: &str) -> Result<(), tonic::Status> {
    let request = pb::CloseSessionRequest {
        session_id: id.into(),
    };
    client.close_session(request).await.map(|_| ())
}

/// DeleteSession; how many blobs went.
async fn delete(client: &mut Client, id: &str) -> Result<u64, tonic::Status> {
    let request = pb::DeleteSessionRequest {
        session_id: id.into(),
    };
    Ok(client
        .delete_session(request)
        .await?
        .into_inner()
        .blobs_deleted)
}

async fn create(client: &mut Client, id: &str, name: &str, cwd: &str) {
    client
        .create_session(pb::CreateSessionRequest {
            session_id: id.into(),
            name: name.into(),
            cwd: cwd.into(),
            ..Default::default()
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn names_archive_filters_and_pages() {
    let fake = FakeModel::start(vec![Scripted::assistant("All done, tests pass.")])
        .await
        .unwrap();
    let stack = Stack::launch(StackOptions::new(fake.base_url()))
        .await
        .unwrap();
    let mut client = stack.connect().await.unwrap();
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (
        a.path().display().to_string(),
        b.path().display().to_string(),
    );

    create(&mut client, "reg-1", "Nightly build", &a_dir).await;
    create(&mut client, "reg-2", "", &a_dir).await;
    create(&mut client, "reg-3", "deploy docs", &b_dir).await;
    create(&mut client, "reg-4", "", &b_dir).await;
    create(&mut client, "reg-5", "", &b_dir).await;

    // Names are checked.
    for bad in ["x".repeat(121), "two\nlines".to_string()] {
        let e = rename(&mut client, "reg-2", &bad).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    }
    let e = client
        .create_session(pb::CreateSessionRequest {
            name: "tab\there".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    // A name set at creation, and by rename, shows in the list and in
    // GetSession.
    rename(&mut client, "reg-2", "Flaky BUILD fix")
        .await
        .unwrap();
    assert_eq!(
        session::get(&mut client, "reg-2").await.unwrap().name,
        "Flaky BUILD fix"
    );
    let row = wait_row(&mut client, "reg-1", |s| s.name == "Nightly build").await;
    assert_eq!(row.cwd, a_dir);
    assert_eq!(row.status, pb::SessionStatus::Idle as i32);
    assert!(!row.archived);

    // Filters: text over name and id (ignoring case), cwd, both.
    let text = |t: &str| pb::SessionFilter {
        text: t.into(),
        ..Default::default()
    };
    wait_listed(&mut client, text("build"), &["reg-1", "reg-2"]).await;
    wait_listed(&mut client, text("REG-3"), &["reg-3"]).await;
    let in_b = pb::SessionFilter {
        cwd: b_dir.clone(),
        ..Default::default()
    };
    wait_listed(&mut client, in_b.clone(), &["reg-3", "reg-4", "reg-5"]).await;
    wait_listed(
        &mut client,
        pb::SessionFilter {
            cwd: a_dir.clone(),
            text: "nightly".into(),
            ..Default::default()
        },
        &["reg-1"],
    )
    .await;

    // Archived sessions leave the default listing and come back.
    archive(&mut client, "reg-4", true).await.unwrap();
    // Twice is a no-op.
    archive(&mut client, "reg-4", true).await.unwrap();
    assert!(session::get(&mut client, "reg-4").await.unwrap().archived);
    wait_listed(&mut client, in_b.clone(), &["reg-3", "reg-5"]).await;
    let only = |archived: pb::ArchivedFilter| pb::SessionFilter {
        cwd: b_dir.clone(),
        archived: archived as i32,
        ..Default::default()
    };
    wait_listed(&mut client, only(pb::ArchivedFilter::Only), &["reg-4"]).await;
    wait_listed(
        &mut client,
        only(pb::ArchivedFilter::Include),
        &["reg-3", "reg-4", "reg-5"],
    )
    .await;
    archive(&mut client, "reg-4", false).await.unwrap();
    wait_listed(&mut client, in_b.clone(), &["reg-3", "reg-4", "reg-5"]).await;

    // A turn: the list shows the newest message.
    session::send(&mut client, "reg-5", "t1", "please run   the\ntests")
        .await
        .unwrap();
    let row = wait_row(&mut client, "reg-5", |s| {
        s.last_message == "All done, tests pass."
    })
    .await;
    assert_eq!(row.status, pb::SessionStatus::Idle as i32);

    // Pagination, unfiltered and filtered: every session exactly once,
    // newest first, pages never larger than asked.
    for filter in [pb::SessionFilter::default(), text("reg-")] {
        let mut seen = Vec::new();
        let mut token = String::new();
        for _ in 0..20 {
            let page = client
                .list_sessions(pb::ListSessionsRequest {
                    page_size: 2,
                    page_token: token.clone(),
                    filter: Some(filter.clone()),
                })
                .await
                .unwrap()
                .into_inner();
            assert!(page.sessions.len() <= 2, "{page:?}");
            seen.extend(page.sessions.into_iter().map(|s| s.session_id));
            token = page.next_page_token;
            if token.is_empty() {
                break;
            }
        }
        assert_eq!(
            seen,
            ["reg-5", "reg-4", "reg-3", "reg-2", "reg-1"],
            "filter {filter:?}"
        );
    }
    let e = client
        .list_sessions(pb::ListSessionsRequest {
            page_token: "bm90LWEtdG9rZW4".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    // A closed session keeps its registry fields and takes no changes.
    close(&mut client, "reg-3").await.unwrap();
    let row = wait_row(&mut client, "reg-3", |s| {
        s.status == pb::SessionStatus::Closed as i32
    })
    .await;
    assert_eq!(row.name, "deploy docs");
    wait_listed(
        &mut client,
        pb::SessionFilter {
            statuses: vec![pb::SessionStatus::Closed as i32],
            ..Default::default()
        },
        &["reg-3"],
    )
    .await;
    for e in [
        rename(&mut client, "reg-3", "late").await.unwrap_err(),
        archive(&mut client, "reg-3", true).await.unwrap_err(),
    ] {
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        assert!(e.message().contains("closed"), "{e:?}");
    }
    let e = rename(&mut client, "reg-404", "x").await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_waiting_for_an_approval_reads_waiting() {
    let fake = FakeModel::start(vec![
        Scripted::shell("c1", &["touch", "made-by-the-agent"]),
        Scripted::assistant("Created the file."),
    ])
    .await
    .unwrap();
    let stack = Stack::launch(StackOptions::new(fake.base_url()))
        .await
        .unwrap();
    let mut client = stack.connect().await.unwrap();
    let ws = tempfile::tempdir().unwrap();
    let (sid, mut events) =
        session::open_with_policy(&mut client, "", ws.path(), pb::ApprovalPolicy::Untrusted)
            .await
            .unwrap();
    session::send(&mut client, &sid, "t1", "make the file")
        .await
        .unwrap();
    let request = session::until_exec_approval(&mut events).await.unwrap();

    let got = session::get(&mut client, &sid).await.unwrap();
    assert_eq!(got.status, pb::SessionStatus::Waiting as i32);
    assert_eq!(got.last_message, "make the file");
    let waiting = pb::SessionFilter {
        statuses: vec![pb::SessionStatus::Waiting as i32],
        ..Default::default()
    };
    wait_listed(&mut client, waiting.clone(), &[&sid]).await;

    client
        .respond(pb::RespondRequest {
            session_id: sid.clone(),
            request_id: request.call_id.clone(),
            answer: Some(pb::respond_request::Answer::Decision(pb::ReviewDecision {
                kind: pb::ReviewDecisionKind::Approved as i32,
                execpolicy_amendment: vec![],
            })),
            ..Default::default()
        })
        .await
        .unwrap();
    session::until(&mut events, |e| {
        matches!(e.msg, Some(Msg::TurnComplete(_))).then_some(())
    })
    .await
    .unwrap();
    assert!(ws.path().join("made-by-the-agent").exists());
    wait_listed(&mut client, waiting, &[]).await;
    let row = wait_row(&mut client, &sid, |s| {
        s.status == pb::SessionStatus::Idle as i32
    })
    .await;
    assert_eq!(row.last_message, "Created the file.");

    // Registry updates are part of the recorded history replay tests read.
    rename(&mut client, &sid, "approved touch").await.unwrap();
    archive(&mut client, &sid, true).await.unwrap();
    close(&mut client, &sid).await.unwrap();
    history::record_closed(&stack.temporal_address, &sid, "registry_waiting_closed")
        .await
        .unwrap();
}

/// Waits for `sid`'s turn `turn_id` to end.
async fn turn_done(client: &mut Client, sid: &str, turn_id: &str) {
    let mut events = session::follow(client, sid, 0, false).await.unwrap();
    session::until(&mut events, |e| {
        (e.turn_id == turn_id && matches!(e.msg, Some(Msg::TurnComplete(_)))).then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fork_continues_from_a_turn_and_deleting_removes_workflow_and_blobs() {
    let fake = FakeModel::start(vec![
        Scripted::assistant("first answer"),
        Scripted::assistant("second answer"),
        Scripted::assistant("fork answer"),
        Scripted::assistant("fork again"),
    ])
    .await
    .unwrap();
    let stack = Stack::launch(StackOptions::new(fake.base_url()))
        .await
        .unwrap();
    let mut client = stack.connect().await.unwrap();
    let ws = tempfile::tempdir().unwrap();
    create(
        &mut client,
        "parent",
        "Nightly",
        &ws.path().display().to_string(),
    )
    .await;
    session::send(&mut client, "parent", "t1", "question one")
        .await
        .unwrap();
    turn_done(&mut client, "parent", "t1").await;
    session::send(&mut client, "parent", "t2", "question two")
        .await
        .unwrap();
    turn_done(&mut client, "parent", "t2").await;
    let parent = session::get(&mut client, "parent").await.unwrap();

    // Forks at a turn the session does not remember are refused.
    let e = client
        .fork_session(pb::ForkSessionRequest {
            session_id: "parent".into(),
            turn_id: "t9".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let e = client
        .fork_session(pb::ForkSessionRequest {
            session_id: "nobody".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");

    // A fork at t1: the parent's settings and cwd, its own id and name.
    let fork = client
        .fork_session(pb::ForkSessionRequest {
            session_id: "parent".into(),
            turn_id: "t1".into(),
            new_session_id: "child".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .session
        .unwrap();
    assert_eq!(fork.session_id, "child");
    assert_eq!(fork.name, "Nightly (fork)");
    assert_eq!(fork.cwd, parent.cwd);
    let origin = fork.forked_from.clone().unwrap();
    assert_eq!(
        (origin.session_id.as_str(), origin.turn_id.as_str()),
        ("parent", "t1")
    );
    assert!(origin.event_offset > 1 && origin.event_offset < parent.last_event_offset);
    let got = session::get(&mut client, "child").await.unwrap();
    assert_eq!(got.forked_from, fork.forked_from);

    // The fork's model call sees the conversation up to t1 only.
    session::send(&mut client, "child", "c1", "and now?")
        .await
        .unwrap();
    turn_done(&mut client, "child", "c1").await;
    let body = fake.requests().last().unwrap().body.to_string();
    assert!(
        body.contains("question one") && body.contains("first answer"),
        "{body}"
    );
    assert!(
        !body.contains("question two") && !body.contains("second answer"),
        "{body}"
    );
    // The parent is untouched.
    assert_eq!(
        session::get(&mut client, "parent")
            .await
            .unwrap()
            .last_event_offset,
        parent.last_event_offset
    );

    // Deleting the parent: its workflow, history and blobs go; the fork,
    // holding copies, goes on.
    let parent_blobs = stack.session_blobs_dir("parent");
    assert!(parent_blobs.exists());
    let deleted = delete(&mut client, "parent").await.unwrap();
    assert!(deleted > 0, "{deleted}");
    let leftover: Vec<_> = walk(&parent_blobs);
    assert!(leftover.is_empty(), "{leftover:?}");
    let e = session::get(&mut client, "parent").await.unwrap_err();
    assert_eq!(
        e.downcast_ref::<tonic::Status>().map(|s| s.code()),
        Some(Code::NotFound),
        "{e:?}"
    );
    wait_listed(&mut client, text_filter("parent"), &[]).await;
    let e = delete(&mut client, "parent").await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");

    session::send(&mut client, "child", "c2", "still there?")
        .await
        .unwrap();
    turn_done(&mut client, "child", "c2").await;
    let body = fake.requests().last().unwrap().body.to_string();
    assert!(
        body.contains("question one") && body.contains("fork answer"),
        "{body}"
    );

    // Deleting a session with a turn running stops it.
    fake.push(Scripted::shell("c_sleep", &["sleep", "30"]));
    session::send(&mut client, "child", "c3", "sleep")
        .await
        .unwrap();
    let mut events = session::follow(&mut client, "child", 0, false)
        .await
        .unwrap();
    session::until(&mut events, |e| {
        matches!(e.msg, Some(Msg::ExecCommandBegin(_))).then_some(())
    })
    .await
    .unwrap();
    delete(&mut client, "child").await.unwrap();
    assert!(walk(&stack.session_blobs_dir("child")).is_empty());
    wait_listed(
        &mut client,
        pb::SessionFilter {
            archived: pb::ArchivedFilter::Include as i32,
            ..Default::default()
        },
        &[],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_closed_session_deletes_its_blobs_at_once() {
    let fake = FakeModel::start(vec![]).await.unwrap();
    let stack = Stack::launch(StackOptions::new(fake.base_url()))
        .await
        .unwrap();
    let mut client = stack.connect().await.unwrap();
    client
        .create_session(pb::CreateSessionRequest {
            session_id: "done".into(),
            developer_instructions: "Be brief.".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(walk(&stack.session_blobs_dir("done")).len(), 1);
    close(&mut client, "done").await.unwrap();
    history::wait_closed(&stack.temporal_address, "done")
        .await
        .unwrap();
    let deleted = delete(&mut client, "done").await.unwrap();
    assert_eq!(deleted, 1);
    assert!(walk(&stack.session_blobs_dir("done")).is_empty());
}

fn text_filter(text: &str) -> pb::SessionFilter {
    pb::SessionFilter {
        text: text.into(),
        ..Default::default()
    }
}

/// Every file under `dir` (none when it does not exist).
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// A turn that stopped after tool calls (here at its iteration cap) leaves
/// their outputs for the next call: a fork at that turn sends them too, so
/// its conversation has an output for every call.
#[tokio::test(flavor = "multi_thread")]
async fn a_fork_carries_the_outputs_its_turn_had_not_sent() {
    let fake = FakeModel::start(vec![
        Scripted::shell("c_capped", &["echo", "left-for-later"]),
        Scripted::assistant("seen it"),
    ])
    .await
    .unwrap();
    let stack = Stack::launch(StackOptions::new(fake.base_url()))
        .await
        .unwrap();
    let mut client = stack.connect().await.unwrap();
    let ws = tempfile::tempdir().unwrap();
    client
        .create_session(pb::CreateSessionRequest {
            session_id: "capped".into(),
            cwd: ws.path().display().to_string(),
            context: Some(pb::TurnContext {
                approval_policy: pb::ApprovalPolicy::Never as i32,
                max_iterations: Some(1),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    session::send(&mut client, "capped", "t1", "run it")
        .await
        .unwrap();
    turn_done(&mut client, "capped", "t1").await;
    assert_eq!(
        fake.requests().len(),
        1,
        "the cap stopped the turn after one call"
    );

    client
        .fork_session(pb::ForkSessionRequest {
            session_id: "capped".into(),
            turn_id: "t1".into(),
            new_session_id: "capped-fork".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    session::send(&mut client, "capped-fork", "f1", "what did it print?")
        .await
        .unwrap();
    turn_done(&mut client, "capped-fork", "f1").await;
    let body = fake.requests().last().unwrap().body.to_string();
    assert!(
        body.contains("function_call_output") && body.contains("left-for-later"),
        "{body}"
    );
}
