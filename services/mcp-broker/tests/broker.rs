//! The broker against real MCP servers from npm (server-everything over
//! stdio, and a small Node server written with the MCP SDK for a tool that
//! is not safe to repeat): listing, calls, result mapping, crashes, and
//! concurrent calls across sessions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use keel_blobstore::BlobStore;
use keel_mcp_broker::{config, pool::Pool, service::Broker};
use keel_proto::v1 as pb;
use keel_proto::v1::mcp_broker_service_server::McpBrokerService;
use keel_test_support::mcp;
use serde_json::Value;
use tonic::Request;

struct Fixture {
    broker: Broker,
    blobs: BlobStore,
    _dir: tempfile::TempDir,
}

fn fixture(toml: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, toml).unwrap();
    let env = |name: &str| std::env::var(name).ok();
    let config = config::load(Some(&path), &env).unwrap();
    let blobs = BlobStore::open("memory://").unwrap();
    let pool = Arc::new(Pool::new(Arc::new(config)));
    Fixture {
        broker: Broker::new(pool, blobs.clone()),
        blobs,
        _dir: dir,
    }
}

/// server-everything, marked with `mark` in its environment so a test can
/// find its process.
fn everything(name: &str, mark: &str, extra: &str) -> String {
    let (command, args) = mcp::everything();
    let extra = format!("env = {{ KEEL_TEST_MARK = {mark:?} }}\n{extra}");
    mcp::stdio_table(name, &command, &args, &extra)
}

impl Fixture {
    async fn tools(&self, session: &str) -> pb::ListMcpToolsResponse {
        self.broker
            .list_mcp_tools(Request::new(pb::ListMcpToolsRequest {
                session_id: session.into(),
                servers: vec![],
            }))
            .await
            .unwrap()
            .into_inner()
    }

    async fn call(
        &self,
        session: &str,
        call_id: &str,
        server: &str,
        tool: &str,
        args: &str,
    ) -> (pb::McpCallOutcome, Value) {
        let r = self.start(session, call_id, server, tool, args).await;
        assert!(r.elicitation.is_none(), "{r:?}");
        let item = self.item(session, &r.output_item_digest).await;
        (r, item)
    }

    /// The output item a call of `session` stored.
    async fn item(&self, session: &str, digest: &str) -> Value {
        self.blobs
            .for_session(session)
            .unwrap()
            .get_json(digest)
            .await
            .unwrap()
    }

    async fn start(
        &self,
        session: &str,
        call_id: &str,
        server: &str,
        tool: &str,
        args: &str,
    ) -> pb::McpCallOutcome {
        self.start_with_progress(session, call_id, server, tool, args)
            .await
            .0
    }

    /// The call's outcome and the progress notifications before it.
    async fn start_with_progress(
        &self,
        session: &str,
        call_id: &str,
        server: &str,
        tool: &str,
        args: &str,
    ) -> (pb::McpCallOutcome, Vec<pb::McpProgress>) {
        use pb::call_mcp_tool_response::Kind;
        let mut stream = self
            .broker
            .call_mcp_tool(Request::new(pb::CallMcpToolRequest {
                session_id: session.into(),
                call_id: call_id.into(),
                server: server.into(),
                tool: tool.into(),
                arguments: args.into(),
            }))
            .await
            .unwrap()
            .into_inner();
        let mut progress = Vec::new();
        while let Some(msg) = futures::StreamExt::next(&mut stream).await {
            match msg.unwrap().kind.unwrap() {
                Kind::Progress(p) => progress.push(p),
                Kind::Outcome(o) => return (o, progress),
            }
        }
        panic!("the stream ended without an outcome");
    }

    async fn resume(
        &self,
        session: &str,
        call_id: &str,
        action: pb::ElicitationAction,
        content: &str,
    ) -> Result<pb::McpCallOutcome, tonic::Status> {
        use pb::resume_mcp_call_response::Kind;
        let mut stream = self
            .broker
            .resume_mcp_call(Request::new(pb::ResumeMcpCallRequest {
                session_id: session.into(),
                call_id: call_id.into(),
                action: action as i32,
                content_json: content.into(),
            }))
            .await?
            .into_inner();
        while let Some(msg) = futures::StreamExt::next(&mut stream).await {
            if let Kind::Outcome(o) = msg?.kind.unwrap() {
                return Ok(o);
            }
        }
        panic!("the stream ended without an outcome");
    }
}

/// The texts of an output's `input_text` items after the wall-time header.
fn texts(item: &Value) -> Vec<String> {
    match &item["output"] {
        Value::Array(items) => items[1..]
            .iter()
            .filter(|i| i["type"] == "input_text")
            .map(|i| i["text"].as_str().unwrap().to_string())
            .collect(),
        Value::String(s) => vec![s.split_once("Output:\n").unwrap().1.to_string()],
        other => panic!("unexpected output {other}"),
    }
}

fn marked(mark: &str) -> Vec<i32> {
    mcp::marked_pids(mark)
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn tools_are_listed_with_codex_names_schemas_and_annotations() {
    let mark = uuid();
    let f = fixture(&everything(
        "every-thing",
        &mark,
        "disabled_tools = [\"get-env\"]",
    ));
    let listed = f.tools("s1").await;
    let names: Vec<&str> = listed
        .tools
        .iter()
        .map(|t| t.qualified_name.as_str())
        .collect();
    assert!(names.contains(&"mcp__every_thing__echo"), "{names:?}");
    assert!(names.contains(&"mcp__every_thing__get_sum"), "{names:?}");
    assert!(
        !names.iter().any(|n| n.ends_with("get_env")),
        "disabled: {names:?}"
    );
    let sum = listed.tools.iter().find(|t| t.tool == "get-sum").unwrap();
    assert_eq!(sum.server, "every-thing");
    let schema: Value = serde_json::from_str(&sum.input_schema_json).unwrap();
    assert!(schema["properties"]["a"].is_object(), "{schema}");
    let a = sum.annotations.unwrap();
    assert_eq!(a.read_only_hint, Some(true));
    assert_eq!(sum.approval_mode, "auto");
    assert_eq!(listed.servers.len(), 1);
    assert_eq!(listed.servers[0].state, pb::McpServerState::Running as i32);
    assert_eq!(listed.servers[0].tool_count as usize, listed.tools.len());
}

#[tokio::test]
async fn calls_map_text_structured_and_image_results_as_codex_does() {
    let mark = uuid();
    let f = fixture(&everything("everything", &mark, ""));
    let (r, item) = f
        .call(
            "s1",
            "c1",
            "everything",
            "echo",
            r#"{"message":"hi there"}"#,
        )
        .await;
    assert!(r.success, "{r:?}");
    assert_eq!(item["type"], "function_call_output");
    assert_eq!(item["call_id"], "c1");
    assert_eq!(texts(&item), ["Echo: hi there"]);
    let header = item["output"][0]["text"].as_str().unwrap();
    assert!(
        header.starts_with("Wall time: ") && header.ends_with(" seconds\nOutput:\n"),
        "{header}"
    );

    let (_, item) = f
        .call("s1", "c2", "everything", "get-sum", r#"{"a":2,"b":40}"#)
        .await;
    assert!(texts(&item)[0].contains("42"), "{item}");

    let (r, item) = f
        .call(
            "s1",
            "c3",
            "everything",
            "get-structured-content",
            r#"{"location":"New York"}"#,
        )
        .await;
    assert!(r.success);
    let body = texts(&item).remove(0);
    let structured: Value = serde_json::from_str(&body).unwrap();
    assert!(structured.get("temperature").is_some(), "{structured}");

    let (r, item) = f.call("s1", "c4", "everything", "get-tiny-image", "").await;
    assert!(r.success);
    let images: Vec<&Value> = item["output"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["type"] == "input_image")
        .collect();
    assert_eq!(images.len(), 1, "{item}");
    assert!(
        images[0]["image_url"]
            .as_str()
            .unwrap()
            .starts_with("data:image/png;base64,")
    );
    assert!(r.result_json.contains("\"image\""), "{}", r.result_json);
}

#[tokio::test]
async fn what_the_model_gets_wrong_is_a_failed_result_and_what_the_caller_gets_wrong_a_status() {
    let mark = uuid();
    let f = fixture(&everything(
        "everything",
        &mark,
        "disabled_tools = [\"get-env\"]",
    ));
    let (r, item) = f.call("s1", "c1", "everything", "echo", "{not json").await;
    assert!(!r.success);
    assert!(texts(&item)[0].starts_with("err: "), "{item}");
    let (r, _) = f.call("s1", "c2", "everything", "echo", "[1]").await;
    assert!(!r.success);
    // A tool the server does not have: the server's error reaches the model.
    let (r, item) = f.call("s1", "c3", "everything", "no-such-tool", "{}").await;
    assert!(!r.success, "{item}");

    let status = |server: &str, tool: &str| pb::CallMcpToolRequest {
        session_id: "s1".into(),
        call_id: "c".into(),
        server: server.into(),
        tool: tool.into(),
        arguments: "{}".into(),
    };
    let e = f
        .broker
        .call_mcp_tool(Request::new(status("nope", "echo")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    let e = f
        .broker
        .call_mcp_tool(Request::new(status("everything", "get-env")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(e.message().contains("get-env"), "{}", e.message());
    let e = f
        .broker
        .call_mcp_tool(Request::new(status("", "echo")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn a_required_server_that_cannot_start_fails_listing_and_an_optional_one_is_reported() {
    let mark = uuid();
    let broken = "[mcp_servers.broken]\ncommand = \"/nonexistent/keel-mcp-server\"\n";
    let f = fixture(&format!("{}{broken}", everything("everything", &mark, "")));
    let listed = f.tools("s1").await;
    let broken_status = listed.servers.iter().find(|s| s.name == "broken").unwrap();
    assert_eq!(broken_status.state, pb::McpServerState::Failed as i32);
    assert!(
        broken_status.error.contains("nonexistent"),
        "{broken_status:?}"
    );
    assert!(listed.tools.iter().any(|t| t.server == "everything"));

    let f = fixture(&format!("{broken}required = true\n"));
    let e = f
        .broker
        .list_mcp_tools(Request::new(pb::ListMcpToolsRequest {
            session_id: "s1".into(),
            servers: vec![],
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable);
    assert!(e.message().contains("required"), "{}", e.message());
}

#[tokio::test]
async fn sessions_get_their_own_processes_and_closing_one_stops_only_its_own() {
    let mark = uuid();
    let f = fixture(&everything("everything", &mark, ""));
    f.call("a", "c1", "everything", "echo", r#"{"message":"a"}"#)
        .await;
    f.call("b", "c1", "everything", "echo", r#"{"message":"b"}"#)
        .await;
    assert_eq!(marked(&mark).len(), 2);
    let closed = f
        .broker
        .close_mcp_session(Request::new(pb::CloseMcpSessionRequest {
            session_id: "a".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(closed.stopped, 1);
    wait_for("session a's server to stop", || marked(&mark).len() == 1).await;
    let (r, _) = f
        .call("b", "c2", "everything", "echo", r#"{"message":"b"}"#)
        .await;
    assert!(r.success);
}

#[tokio::test]
async fn a_shared_server_is_one_process_for_every_session() {
    let mark = uuid();
    let f = fixture(&everything("everything", &mark, "shared = true"));
    for s in ["a", "b", "c"] {
        let (r, _) = f
            .call(s, "c1", "everything", "echo", r#"{"message":"x"}"#)
            .await;
        assert!(r.success);
    }
    assert_eq!(marked(&mark).len(), 1);
}

#[tokio::test]
async fn fifty_concurrent_calls_across_ten_sessions_get_their_own_answers() {
    let mark = uuid();
    let f = Arc::new(fixture(&everything("everything", &mark, "")));
    let mut calls = Vec::new();
    for s in 0..10 {
        for c in 0..5 {
            let f = f.clone();
            calls.push(tokio::spawn(async move {
                let message = format!("session {s} call {c}");
                let args = serde_json::json!({ "message": message }).to_string();
                let call_id = format!("call-{s}-{c}");
                let (r, item) = f
                    .call(&format!("s{s}"), &call_id, "everything", "echo", &args)
                    .await;
                assert!(r.success);
                assert_eq!(item["call_id"], call_id.as_str());
                assert_eq!(texts(&item), [format!("Echo: {message}")]);
            }));
        }
    }
    for c in calls {
        c.await.unwrap();
    }
    assert_eq!(marked(&mark).len(), 10);
}

#[tokio::test]
async fn a_server_killed_mid_call_is_restarted_and_a_read_only_call_runs_again() {
    let mark = uuid();
    let f = Arc::new(fixture(&everything("everything", &mark, "")));
    f.call("s1", "warm", "everything", "echo", r#"{"message":"x"}"#)
        .await;
    let first = marked(&mark);
    assert_eq!(first.len(), 1);
    // Read-only and idempotent by its annotations.
    let call = {
        let f = f.clone();
        tokio::spawn(async move {
            f.call(
                "s1",
                "long",
                "everything",
                "trigger-long-running-operation",
                r#"{"duration":3,"steps":3}"#,
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    for pid in &first {
        let _ = std::process::Command::new("kill")
            .arg("-9")
            .arg(pid.to_string())
            .status();
    }
    let (r, item) = call.await.unwrap();
    assert!(r.success, "{r:?} {item}");
    let now = marked(&mark);
    assert_eq!(now.len(), 1);
    assert_ne!(now, first, "a new server process");
}

#[tokio::test]
async fn a_server_killed_mid_call_of_an_unsafe_tool_is_reported_not_repeated() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let script = mcp::slow_server(dir.path(), &runs, 5000).unwrap();
    let mark = uuid();
    let f = Arc::new(fixture(&mcp::stdio_table(
        "slow",
        "node",
        &[script.display().to_string()],
        &format!("env = {{ KEEL_TEST_MARK = {mark:?} }}"),
    )));
    let call = {
        let f = f.clone();
        tokio::spawn(async move { f.call("s1", "w", "slow", "slow_write", "{}").await })
    };
    let runs_file = runs.clone();
    wait_for("the tool to start", || runs_file.exists()).await;
    for pid in marked(&mark) {
        let _ = std::process::Command::new("kill")
            .arg("-9")
            .arg(pid.to_string())
            .status();
    }
    let (r, item) = call.await.unwrap();
    assert!(!r.success);
    assert!(texts(&item)[0].contains("not run again"), "{item}");
    assert_eq!(std::fs::read_to_string(&runs).unwrap(), "run\n", "ran once");
    // The server starts again for the next call.
    let f2 = f.clone();
    let again = tokio::spawn(async move { f2.call("s1", "w2", "slow", "slow_write", "{}").await });
    let (r, _) = again.await.unwrap();
    assert!(r.success);
}

fn uuid() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

/// server-everything over streamable HTTP on a free loopback port; killed
/// when dropped.
struct HttpServer {
    child: std::process::Child,
    port: u16,
    url: String,
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn http_everything() -> HttpServer {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    http_everything_on(port).await
}

async fn http_everything_on(port: u16) -> HttpServer {
    let (command, mut args) = mcp::everything();
    args[1] = "streamableHttp".into();
    let child = std::process::Command::new(command)
        .args(&args)
        .env("PORT", port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let server = HttpServer {
        child,
        port,
        url: format!("http://127.0.0.1:{port}/mcp"),
    };
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return server;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server-everything did not listen on {port}");
}

#[tokio::test]
async fn streamable_http_servers_are_listed_and_called() {
    let server = http_everything().await;
    let f = fixture(&format!(
        "[mcp_servers.remote]\nurl = {:?}\nhttp_headers = {{ \"X-Keel-Test\" = \"1\" }}\n",
        server.url
    ));
    let listed = f.tools("s1").await;
    assert_eq!(listed.servers[0].transport, "streamable_http");
    assert!(
        listed
            .tools
            .iter()
            .any(|t| t.qualified_name == "mcp__remote__echo"),
        "{:?}",
        listed.tools
    );
    let (r, item) = f
        .call("s1", "c1", "remote", "echo", r#"{"message":"over http"}"#)
        .await;
    assert!(r.success, "{r:?}");
    assert_eq!(texts(&item), ["Echo: over http"]);
    // Another session has its own MCP session on the same server.
    let (r, item) = f
        .call("s2", "c1", "remote", "get-sum", r#"{"a":1,"b":2}"#)
        .await;
    assert!(r.success);
    assert!(texts(&item)[0].contains('3'), "{item}");
}

#[tokio::test]
async fn a_restarted_http_server_gets_a_new_session() {
    let server = http_everything().await;
    let port = server.port;
    let f = fixture(&format!(
        "[mcp_servers.remote]\nurl = {:?}\ntool_timeout_sec = 20\n",
        server.url
    ));
    let (r, item) = f
        .call("s1", "c1", "remote", "echo", r#"{"message":"before"}"#)
        .await;
    assert!(r.success, "{r:?}");
    assert_eq!(texts(&item), ["Echo: before"]);
    // The server restarts and forgets every session it had.
    drop(server);
    let _server = http_everything_on(port).await;
    let (r, item) = f
        .call("s1", "c2", "remote", "echo", r#"{"message":"after"}"#)
        .await;
    assert!(r.success, "{r:?} {item}");
    assert_eq!(texts(&item), ["Echo: after"]);
}

#[tokio::test]
async fn a_server_question_mid_call_waits_for_the_answer_and_the_call_finishes_with_it() {
    let mark = uuid();
    let f = fixture(&everything("everything", &mark, ""));
    let asked = f
        .start(
            "s1",
            "e1",
            "everything",
            "trigger-elicitation-request",
            "{}",
        )
        .await;
    let question = asked.elicitation.expect("the server asks");
    assert_eq!(
        question.message,
        "Please provide inputs for the following fields:"
    );
    let schema: Value = serde_json::from_str(&question.requested_schema_json).unwrap();
    assert_eq!(schema["required"], serde_json::json!(["name"]));
    assert!(asked.output_item_digest.is_empty());

    // Bad answers are refused and the call keeps waiting.
    let e = f
        .resume("s1", "e1", pb::ElicitationAction::Accept, "[1]")
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let e = f
        .resume("s1", "nope", pb::ElicitationAction::Cancel, "")
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);

    let done = f
        .resume(
            "s1",
            "e1",
            pb::ElicitationAction::Accept,
            r#"{"name":"Ada Lovelace"}"#,
        )
        .await
        .unwrap();
    assert!(done.success, "{done:?}");
    let item = f.item("s1", &done.output_item_digest).await;
    let text = texts(&item).join("\n");
    assert!(
        text.contains("User provided the requested information"),
        "{text}"
    );
    assert!(text.contains("Ada Lovelace"), "{text}");
    // Answered: nothing waits any more.
    let e = f
        .resume("s1", "e1", pb::ElicitationAction::Cancel, "")
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);

    // Declined: the call goes on and says so.
    let asked = f
        .start(
            "s1",
            "e2",
            "everything",
            "trigger-elicitation-request",
            "{}",
        )
        .await;
    assert!(asked.elicitation.is_some());
    let done = f
        .resume("s1", "e2", pb::ElicitationAction::Decline, "")
        .await
        .unwrap();
    let item = f.item("s1", &done.output_item_digest).await;
    assert!(texts(&item).join("\n").contains("declined"), "{item}");
}

/// A stdio server sees only the default variables and those its config
/// names: none of the broker's own environment (keys, tokens) — even when
/// the model asks the server to print its environment.
#[tokio::test]
async fn servers_never_see_the_brokers_environment() {
    let mark = uuid();
    let f = fixture(&everything("everything", &mark, ""));
    let (r, item) = f.call("s1", "c1", "everything", "get-env", "{}").await;
    assert!(r.success, "{item}");
    let env = texts(&item).join("\n");
    assert!(env.contains("\"PATH\""), "{env}");
    assert!(env.contains(&mark), "configured env is passed: {env}");
    // The test process's own variables (the broker's, here) stay out.
    for leaked in [
        "KEEL_MCP_SERVERS",
        "CARGO_MANIFEST_DIR",
        "RUST_TEST_THREADS",
        "CARGO_PKG_NAME",
    ] {
        if std::env::var_os(leaked).is_some() {
            assert!(!env.contains(leaked), "{leaked} leaked: {env}");
        }
    }
}

#[tokio::test]
async fn resources_and_prompts_are_listed_and_read() {
    let mark = uuid();
    let f = fixture(&everything("everything", &mark, ""));
    let listed = f
        .broker
        .list_mcp_resources(Request::new(pb::ListMcpResourcesRequest {
            session_id: "s1".into(),
            server: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(!listed.resources.is_empty(), "{listed:?}");
    let first = &listed.resources[0];
    assert_eq!(first.server, "everything");
    assert!(!first.uri.is_empty() && !first.name.is_empty(), "{first:?}");
    assert!(!listed.templates.is_empty(), "{listed:?}");

    let read = f
        .broker
        .read_mcp_resource(Request::new(pb::ReadMcpResourceRequest {
            session_id: "s1".into(),
            server: "everything".into(),
            uri: first.uri.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    let contents: Value = serde_json::from_str(&read.contents_json).unwrap();
    assert_eq!(contents[0]["uri"], first.uri.as_str(), "{contents}");

    let prompts = f
        .broker
        .list_mcp_prompts(Request::new(pb::ListMcpPromptsRequest {
            session_id: "s1".into(),
            server: "everything".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(!prompts.prompts.is_empty());
    assert!(prompts.prompts.iter().all(|p| p.server == "everything"));
    let args: Value = serde_json::from_str(&prompts.prompts[0].arguments_json).unwrap();
    assert!(args.is_array(), "{args}");

    let e = f
        .broker
        .read_mcp_resource(Request::new(pb::ReadMcpResourceRequest {
            session_id: "s1".into(),
            server: "nope".into(),
            uri: "x".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn progress_notifications_stream_before_the_outcome() {
    let mark = uuid();
    let f = fixture(&everything("everything", &mark, ""));
    let (outcome, progress) = f
        .start_with_progress(
            "s1",
            "p1",
            "everything",
            "trigger-long-running-operation",
            r#"{"duration":1,"steps":4}"#,
        )
        .await;
    assert!(outcome.success, "{outcome:?}");
    assert_eq!(progress.len(), 4, "{progress:?}");
    assert_eq!(progress[3].progress, 4.0);
    assert_eq!(progress[3].total, 4.0);
}
