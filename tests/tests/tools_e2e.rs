//! Codex tools through a whole session: the model edits a file with the
//! freeform apply_patch, reads it back with read_file and finds it with
//! grep_files; the session's git repository and AGENTS.md files reach the
//! model as per-call context.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::process::Command;
use std::time::Duration;

use keel_proto::v1 as pb;
use keel_test_support::fake_model::{FakeModel, Scripted, sse};
use keel_test_support::history;
use keel_test_support::session;
use keel_test_support::stack::{Stack, StackOptions};
use pb::event::Msg;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

fn git(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=Keel Test",
            "-c",
            "user.email=test@keel.invalid",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_patch_read_file_grep_files_and_project_context() {
    let repo = tempfile::tempdir().unwrap();
    let root = repo.path().canonicalize().unwrap();
    std::fs::write(root.join("AGENTS.md"), "Root rule: run the tests.\n").unwrap();
    let sub = root.join("app");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(sub.join("AGENTS.md"), "App rule: keep it small.\n").unwrap();
    git(&root, &["init", "-q", "-b", "trunk"]);
    git(
        &root,
        &[
            "remote",
            "add",
            "origin",
            "https://example.invalid/keel.git",
        ],
    );
    git(&root, &["add", "."]);
    git(&root, &["commit", "-q", "-m", "init"]);
    let head = String::from_utf8(
        Command::new("git")
            .args(["rev-parse", "HEAD"])
            .current_dir(&root)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_string();

    let patch = "*** Begin Patch\n*** Add File: notes.txt\n+hello keel\n*** End Patch";
    let notes = sub.join("notes.txt");
    let fake = FakeModel::start(vec![
        Scripted::Events(vec![
            sse::created(),
            sse::output_item_done(json!({
                "type": "custom_tool_call", "id": "ctc_1", "call_id": "call_patch",
                "name": "apply_patch", "input": patch,
            })),
            sse::completed("r1", 10, 5),
        ]),
        Scripted::tool_call(
            "call_read",
            "read_file",
            &json!({"file_path": notes.display().to_string()}).to_string(),
        ),
        Scripted::tool_call(
            "call_grep",
            "grep_files",
            &json!({"pattern": "hello keel", "path": sub.display().to_string()}).to_string(),
        ),
        Scripted::assistant("All done."),
    ])
    .await
    .unwrap();
    let opts = StackOptions::new(fake.base_url());
    let stack = Stack::launch(opts).await.unwrap();
    let mut client = stack.connect().await.unwrap();
    let sid = session::create(&mut client, Some(&sub)).await.unwrap();
    let mut stream = session::follow(&mut client, &sid, 0, false).await.unwrap();
    client
        .send_user_turn(pb::SendUserTurnRequest {
            session_id: sid.clone(),
            text: "add notes".into(),
            turn_id: "turn-1".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let done = tokio::time::timeout(WAIT, async {
        while let Some(m) = stream.message().await.unwrap() {
            if let Some(pb::stream_events_response::Kind::Event(pb::Event {
                msg: Some(Msg::TurnComplete(c)),
                ..
            })) = m.kind
            {
                return c;
            }
        }
        panic!("stream ended");
    })
    .await
    .expect("turn completes");
    assert_eq!(done.last_agent_message, "All done.");
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "hello keel\n");

    let requests = fake.wait_for_requests(4, WAIT).await.unwrap();
    // Tools come from the tool-runner; apply_patch is the freeform tool.
    let tools = requests[0].body["tools"].as_array().unwrap();
    let apply_patch = tools.iter().find(|t| t["name"] == "apply_patch").unwrap();
    assert_eq!(apply_patch["type"], "custom");

    let patch_out = requests[1].function_call_output("call_patch").unwrap();
    assert!(
        patch_out.contains("Success. Updated the following files:\nA notes.txt"),
        "{patch_out}"
    );
    let read_out = requests[2].function_call_output("call_read").unwrap();
    assert_eq!(read_out, "L1: hello keel");
    let grep_out = requests[3].function_call_output("call_grep").unwrap();
    assert!(
        grep_out.contains(&notes.display().to_string()),
        "{grep_out}"
    );

    // Project context: AGENTS.md from the root down to the cwd, the
    // environment and the git facts, before the conversation on every call.
    for r in &requests {
        let context = &r.input()[0];
        assert_eq!(context["role"], "user");
        let texts: Vec<&str> = context["content"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["text"].as_str().unwrap())
            .collect();
        let agents = texts[0];
        assert!(agents.starts_with(&format!("# AGENTS.md instructions for {}", sub.display())));
        let root_rule = agents.find("Root rule").expect("root AGENTS.md");
        let app_rule = agents.find("App rule").expect("cwd AGENTS.md");
        assert!(root_rule < app_rule, "root first");
        assert!(
            texts[1].contains(&format!("<cwd>{}</cwd>", sub.display())),
            "{}",
            texts[1]
        );
        assert!(texts[2].contains("<branch>trunk</branch>"), "{}", texts[2]);
        assert!(texts[2].contains(&format!("<commit>{head}</commit>")));
        assert!(texts[2].contains("https://example.invalid/keel.git"));
        assert_eq!(r.conversation()[0]["content"][0]["text"], "add notes");
    }

    // A session that went through the session-setup patch, for replay tests.
    client
        .close_session(pb::CloseSessionRequest {
            session_id: sid.clone(),
        })
        .await
        .unwrap();
    history::record_closed(&stack.temporal_address, &sid, "tools_and_context_closed")
        .await
        .unwrap();
}

/// A provider on the Chat Completions wire (Ollama, LM Studio, llama.cpp,
/// most gateways) cannot carry freeform tools: the session learns the wire
/// from the model-proxy, offers apply_patch as a JSON function, and a patch
/// the model sends that way is applied.
#[tokio::test(flavor = "multi_thread")]
async fn chat_providers_are_offered_apply_patch_as_a_function() {
    let patch = "*** Begin Patch\n*** Add File: hello.txt\n+hi\n*** End Patch\n";
    let args = json!({ "input": patch }).to_string();
    let fake = FakeModel::start(vec![
        Scripted::chat_tool_call("call_p", "apply_patch", &args),
        Scripted::chat_assistant("written"),
    ])
    .await
    .unwrap();
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "model_provider = \"local\"\n\n[model_providers.local]\nname = \"Local\"\nbase_url = \"{}\"\nwire_api = \"chat\"\n",
            fake.base_url()
        ),
    )
    .unwrap();
    let mut options = StackOptions::new(fake.base_url());
    options.model_proxy_args = vec!["--config".into(), config.display().to_string()];
    let stack = Stack::launch(options).await.unwrap();
    let mut client = stack.connect().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sid = session::create(&mut client, Some(dir.path()))
        .await
        .unwrap();
    let mut events = session::follow(&mut client, &sid, 0, false).await.unwrap();
    let first = session::next_event(&mut events).await.unwrap();
    let Some(Msg::SessionConfigured(configured)) = first.msg else {
        panic!("{first:?}")
    };
    assert_eq!(configured.model_provider, "local");
    session::send(&mut client, &sid, "t1", "write hello")
        .await
        .unwrap();
    let (seen, done) = session::until(&mut events, |e| match &e.msg {
        Some(Msg::TurnComplete(c)) => Some(c.last_agent_message.clone()),
        _ => None,
    })
    .await
    .unwrap();
    assert_eq!(done, "written", "{seen:?}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("hello.txt")).unwrap(),
        "hi\n"
    );
    let requests = fake.requests();
    assert_eq!(requests[0].path, "/v1/chat/completions");
    let tools = requests[0].body["tools"].as_array().unwrap();
    let apply_patch = tools
        .iter()
        .find(|t| t["function"]["name"] == "apply_patch")
        .expect("apply_patch offered as a function");
    assert_eq!(apply_patch["type"], "function");
    assert!(tools.iter().all(|t| t["type"] == "function"), "{tools:?}");
}

/// Codex's default tool set offers unified exec: `exec_command` starts an
/// interactive process that waits for input, and `write_stdin` (a turn
/// later, with the session id the output named) answers it.
#[tokio::test(flavor = "multi_thread")]
async fn exec_command_and_write_stdin_drive_an_interactive_process() {
    let start =
        json!({"cmd": "read name; echo \"hello-$name\"", "tty": true, "yield_time_ms": 500})
            .to_string();
    let fake = FakeModel::start(vec![
        Scripted::tool_call("c_start", "exec_command", &start),
        Scripted::assistant("It waits for a name."),
    ])
    .await
    .unwrap();
    let stack = Stack::launch(StackOptions::new(fake.base_url()))
        .await
        .unwrap();
    let mut client = stack.connect().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (sid, mut events) = session::open(
        &mut client,
        pb::CreateSessionRequest {
            cwd: dir.path().display().to_string(),
            // Codex's defaults: unified exec.
            features: Some(pb::ToolFeatures::default()),
            config: vec![pb::ConfigEntry {
                key: "features.unified_exec".into(),
                value: "true".into(),
                source: "/home/u/.codex/config.toml:3".into(),
            }],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // The session keeps the configuration it was created from.
    let created = session::get(&mut client, &sid).await.unwrap();
    assert_eq!(created.config.len(), 1, "{:?}", created.config);
    assert_eq!(created.config[0].source, "/home/u/.codex/config.toml:3");
    let turn_done = |e: &pb::Event| matches!(e.msg, Some(Msg::TurnComplete(_))).then_some(());
    session::send(&mut client, &sid, "t1", "start it")
        .await
        .unwrap();
    session::until(&mut events, turn_done).await.unwrap();
    let requests = fake.requests();
    let tools = requests[0].tool_names();
    assert!(
        tools.contains(&"exec_command".to_string()) && tools.contains(&"write_stdin".to_string()),
        "{tools:?}"
    );
    assert!(!tools.contains(&"shell".to_string()), "{tools:?}");
    let started = requests[1].function_call_output("c_start").unwrap();
    let id: i64 = started
        .lines()
        .find_map(|l| l.strip_prefix("Process running with session ID "))
        .unwrap_or_else(|| panic!("still running? {started}"))
        .trim()
        .parse()
        .unwrap();

    let answer = json!({"session_id": id, "chars": "keel\n", "yield_time_ms": 2000}).to_string();
    fake.push(Scripted::tool_call("c_answer", "write_stdin", &answer));
    fake.push(Scripted::assistant("It greeted keel."));
    session::send(&mut client, &sid, "t2", "answer it")
        .await
        .unwrap();
    session::until(&mut events, turn_done).await.unwrap();
    let output = fake
        .requests()
        .iter()
        .find_map(|r| r.function_call_output("c_answer"))
        .unwrap();
    assert!(output.contains("hello-keel"), "{output}");
    assert!(output.contains("Process exited with code 0"), "{output}");
}

/// The hosted `web_search` tool: offered as Codex offers it (`cached` by
/// default), run by the provider; its search reaches clients as
/// `web_search_begin` / `web_search_end` and stays in the conversation.
#[tokio::test(flavor = "multi_thread")]
async fn a_provider_web_search_is_reported_and_kept() {
    let fake = FakeModel::start(vec![
        Scripted::Events(vec![
            sse::created(),
            sse::web_search_call("ws_1", "keel temporal"),
            sse::text_delta("msg_ws", "Found it."),
            sse::message("msg_ws", "Found it."),
            sse::completed("resp_ws", 10, 5),
        ]),
        Scripted::assistant("again"),
    ])
    .await
    .unwrap();
    let stack = Stack::launch(StackOptions::new(fake.base_url()))
        .await
        .unwrap();
    let mut client = stack.connect().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (sid, mut events) = session::open(
        &mut client,
        pb::CreateSessionRequest {
            cwd: dir.path().display().to_string(),
            features: Some(pb::ToolFeatures::default()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    session::send(&mut client, &sid, "t1", "search")
        .await
        .unwrap();
    let (seen, ()) = session::until(&mut events, |e| {
        matches!(e.msg, Some(Msg::TurnComplete(_))).then_some(())
    })
    .await
    .unwrap();
    let begin = seen
        .iter()
        .find_map(|e| match &e.msg {
            Some(Msg::WebSearchBegin(b)) => Some(b.clone()),
            _ => None,
        })
        .expect("web_search_begin");
    assert_eq!(begin.call_id, "ws_1");
    let end = seen
        .iter()
        .find_map(|e| match &e.msg {
            Some(Msg::WebSearchEnd(b)) => Some(b.clone()),
            _ => None,
        })
        .expect("web_search_end");
    assert_eq!(
        (end.call_id.as_str(), end.query.as_str()),
        ("ws_1", "keel temporal")
    );
    let action: serde_json::Value = serde_json::from_str(&end.action_json).unwrap();
    assert_eq!(action, json!({"type": "search", "query": "keel temporal"}));
    let requests = fake.requests();
    let web = requests[0].body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["type"] == "web_search")
        .cloned()
        .expect("web_search offered");
    assert_eq!(
        web,
        json!({"type": "web_search", "external_web_access": false})
    );

    session::send(&mut client, &sid, "t2", "more")
        .await
        .unwrap();
    session::until(&mut events, |e| {
        matches!(e.msg, Some(Msg::TurnComplete(_))).then_some(())
    })
    .await
    .unwrap();
    let next = &fake.requests()[1];
    assert!(
        next.input()
            .iter()
            .any(|i| i["type"] == "web_search_call" && i["action"]["query"] == "keel temporal"),
        "{:#?}",
        next.input()
    );
}
