use std::collections::HashMap;

use tonic::Code;

use super::*;

fn runner(default_cwd: &Path) -> (ToolRunner, BlobStore) {
    let blobs = BlobStore::open("memory://").unwrap();
    let executor = Executor::with_inherited_env(std::env::vars_os());
    let runner = ToolRunner::with_executor(executor, blobs.clone(), default_cwd.to_path_buf());
    (runner, blobs)
}

fn exec_req(argv: &[&str], workdir: &str) -> Request<ExecRequest> {
    Request::new(ExecRequest {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        workdir: workdir.to_string(),
        timeout_ms: 0,
        env: HashMap::new(),
    })
}

fn tool_req(call_id: &str, tool: &str, args: &str, cwd: &str) -> Request<RunToolRequest> {
    Request::new(RunToolRequest {
        session_id: "s1".into(),
        call_id: call_id.into(),
        tool_name: tool.into(),
        arguments: args.into(),
        cwd: cwd.into(),
    })
}

#[tokio::test]
async fn exec_runs_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let (runner, _) = runner(dir.path());
    let mut req = exec_req(&["sh", "-c", "echo $GREETING; exit 5"], "/");
    req.get_mut().env.insert("GREETING".into(), "hello".into());
    let resp = runner.exec(req).await.unwrap().into_inner();
    assert_eq!(resp.exit_code, 5);
    assert_eq!(resp.stdout, "hello\n");
    assert_eq!(resp.aggregated_output, "hello\n");
    assert!(!resp.timed_out);
}

#[tokio::test]
async fn exec_rejects_bad_requests_with_the_right_codes() {
    let dir = tempfile::tempdir().unwrap();
    let (runner, _) = runner(dir.path());
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let file = file.to_str().unwrap();
    let cases = [
        (
            exec_req(&[], "/"),
            Code::InvalidArgument,
            "argv must not be empty",
        ),
        (
            exec_req(&["true"], "relative/dir"),
            Code::InvalidArgument,
            "absolute",
        ),
        (exec_req(&["true"], ""), Code::InvalidArgument, "absolute"),
        (
            exec_req(&["true"], "/nonexistent/keel"),
            Code::NotFound,
            "/nonexistent/keel",
        ),
        (
            exec_req(&["true"], file),
            Code::FailedPrecondition,
            "not a directory",
        ),
        (
            exec_req(&["no-such-program-xyz"], "/"),
            Code::NotFound,
            "no-such-program-xyz",
        ),
    ];
    for (req, code, needle) in cases {
        let err = runner.exec(req).await.unwrap_err();
        assert_eq!(err.code(), code, "{err:?}");
        assert!(err.message().contains(needle), "{err:?}");
    }
}

#[tokio::test]
async fn run_tool_stores_the_output_item() {
    let dir = tempfile::tempdir().unwrap();
    let (runner, blobs) = runner(Path::new("/"));
    let cwd = dir.path().to_str().unwrap();
    let resp = runner
        .run_tool(tool_req(
            "call_1",
            "shell",
            r#"{"command":["sh","-c","echo hi"]}"#,
            cwd,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(resp.success);
    let item: serde_json::Value = blobs.get_json(&resp.output_item_digest).await.unwrap();
    assert_eq!(item["type"], "function_call_output");
    assert_eq!(item["call_id"], "call_1");
    let output = item["output"].as_str().unwrap();
    assert_eq!(output, resp.output_preview);
    assert!(
        output.starts_with(r#"{"output":"hi\n","metadata":{"exit_code":0,"duration_seconds":"#)
    );
    let command = resp.command.unwrap();
    assert_eq!(command.command, ["sh", "-c", "echo hi"]);
    assert_eq!(command.cwd, cwd);
    assert_eq!(command.exit_code, 0);
    assert_eq!(command.aggregated_output, "hi\n");
}

#[tokio::test]
async fn run_tool_without_cwd_uses_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let (runner, _) = runner(dir.path());
    let resp = runner
        .run_tool(tool_req("c", "shell", r#"{"command":["pwd"]}"#, ""))
        .await
        .unwrap()
        .into_inner();
    let command = resp.command.unwrap();
    assert_eq!(command.cwd, dir.path().to_str().unwrap());
    assert!(resp.success);
}

#[tokio::test]
async fn model_mistakes_are_stored_outputs() {
    let (runner, blobs) = runner(Path::new("/"));
    let resp = runner
        .run_tool(tool_req("c2", "nope", "{}", "/"))
        .await
        .unwrap()
        .into_inner();
    assert!(!resp.success);
    assert!(resp.command.is_none());
    assert_eq!(resp.output_preview, "unsupported call: nope");
    let item: serde_json::Value = blobs.get_json(&resp.output_item_digest).await.unwrap();
    assert_eq!(item["output"], "unsupported call: nope");
}

#[tokio::test]
async fn run_tool_requires_call_id_and_tool_name() {
    let (runner, _) = runner(Path::new("/"));
    let err = runner
        .run_tool(tool_req("", "shell", "{}", "/"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("call_id"), "{err:?}");
    let err = runner
        .run_tool(tool_req("c", "", "{}", "/"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("tool_name"), "{err:?}");
}

#[tokio::test]
async fn previews_are_cut_for_display() {
    let (runner, _) = runner(Path::new("/"));
    // 20 000 two-byte chars: 40 000 bytes, within the model's budget but over
    // the display limit.
    let args =
        r#"{"command":["sh","-c","i=0; while [ $i -lt 20000 ]; do printf é; i=$((i+1)); done"]}"#;
    let resp = runner
        .run_tool(tool_req("c3", "shell", args, "/"))
        .await
        .unwrap()
        .into_inner();
    assert!(resp.success);
    assert!(resp.output_preview.len() <= DISPLAY_LIMIT_BYTES);
    let command = resp.command.unwrap();
    assert_eq!(command.aggregated_output.len(), DISPLAY_LIMIT_BYTES);
    assert!(command.aggregated_output.chars().all(|c| c == 'é'));
}
