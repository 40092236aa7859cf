use std::collections::HashMap;

use tonic::Code;

use super::*;
use keel_paths::Workspace;

mod calls;

/// A runner, its blob store and its state directory (removed on drop).
struct Fixture {
    runner: ToolRunner,
    blobs: BlobStore,
    state: tempfile::TempDir,
}

/// A runner that may touch anything: these tests are about the RPCs, the
/// workspace tests below use a restricted one.
fn runner(default_cwd: &Path) -> Fixture {
    runner_with(default_cwd, Workspace::any())
}

fn runner_with(default_cwd: &Path, workspace: Workspace) -> Fixture {
    let state = tempfile::tempdir().unwrap();
    let blobs = BlobStore::open("memory://").unwrap();
    let runner = runner_on(&blobs, state.path(), default_cwd, workspace);
    Fixture {
        runner,
        blobs,
        state,
    }
}

/// A runner on an existing blob store and state directory: a restarted
/// tool-runner.
fn runner_on(
    blobs: &BlobStore,
    state_dir: &Path,
    default_cwd: &Path,
    workspace: Workspace,
) -> ToolRunner {
    let journal = Journal::open(state_dir).unwrap();
    let records = crate::exec::orphans::ProcessRecords::new(journal.dir());
    ToolRunner::new(ToolRunnerConfig {
        executor: Executor::with_inherited_env(std::env::vars_os()).with_process_records(records),
        blobs: blobs.clone(),
        default_cwd: std::fs::canonicalize(default_cwd).unwrap(),
        workspace,
        journal,
        journal_retention: DEFAULT_JOURNAL_RETENTION,
        sandbox: SandboxSettings::disabled(),
        fleet: Arc::new(crate::fleet::Fleet::new("test-runner", 0)),
        clones: crate::clone::CloneSettings {
            root: None,
            allow_local: false,
            timeout: Duration::from_secs(60),
        },
        metrics: crate::metrics::ToolMetrics::in_registry(&prometheus::Registry::new()).unwrap(),
    })
}

fn exec_req(argv: &[&str], workdir: &str) -> Request<ExecRequest> {
    Request::new(ExecRequest {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        workdir: workdir.to_string(),
        timeout_ms: 0,
        env: HashMap::new(),
    })
}

/// The output item a call of `session` stored.
async fn stored_item(
    blobs: &BlobStore,
    session: &str,
    resp: &RunToolResponse,
) -> serde_json::Value {
    blobs
        .for_session(session)
        .unwrap()
        .get_json(&resp.output_item_digest)
        .await
        .unwrap()
}

fn tool_req(call_id: &str, tool: &str, args: &str, cwd: &str) -> Request<RunToolRequest> {
    Request::new(RunToolRequest {
        session_id: "s1".into(),
        call_id: call_id.into(),
        tool_name: tool.into(),
        arguments: args.into(),
        cwd: cwd.into(),
        custom: false,
        ..Default::default()
    })
}

#[tokio::test]
async fn exec_runs_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let fx = runner(dir.path());
    let runner = &fx.runner;
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
    let fx = runner(dir.path());
    let runner = &fx.runner;
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
    let fx = runner(Path::new("/"));
    let (runner, blobs) = (&fx.runner, &fx.blobs);
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
    let item = stored_item(blobs, "s1", &resp).await;
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
    let fx = runner(dir.path());
    let runner = &fx.runner;
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
    let fx = runner(Path::new("/"));
    let (runner, blobs) = (&fx.runner, &fx.blobs);
    let resp = runner
        .run_tool(tool_req("c2", "nope", "{}", "/"))
        .await
        .unwrap()
        .into_inner();
    assert!(!resp.success);
    assert!(resp.command.is_none());
    assert_eq!(resp.output_preview, "unsupported call: nope");
    let item = stored_item(blobs, "s1", &resp).await;
    assert_eq!(item["output"], "unsupported call: nope");
}

#[tokio::test]
async fn run_tool_requires_call_id_and_tool_name() {
    let fx = runner(Path::new("/"));
    let runner = &fx.runner;
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
    let fx = runner(Path::new("/"));
    let runner = &fx.runner;
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

// ---- workspaces ----

/// A root with a `ws` subtree (the only allowed root) and an `outside`
/// sibling, linked from inside.
struct Roots {
    _tmp: tempfile::TempDir,
    ws: PathBuf,
    outside: PathBuf,
}

fn roots() -> Roots {
    let tmp = tempfile::tempdir().unwrap();
    let base = std::fs::canonicalize(tmp.path()).unwrap();
    let ws = base.join("ws");
    let outside = base.join("outside");
    std::fs::create_dir_all(ws.join("sub")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, ws.join("link")).unwrap();
    Roots {
        _tmp: tmp,
        ws,
        outside,
    }
}

fn restricted(r: &Roots) -> Fixture {
    runner_with(
        &r.ws,
        Workspace::restricted(std::slice::from_ref(&r.ws)).unwrap(),
    )
}

#[tokio::test]
async fn exec_outside_the_workspace_is_permission_denied() {
    let r = roots();
    let fx = restricted(&r);
    let runner = &fx.runner;
    let ok = runner
        .exec(exec_req(&["pwd"], r.ws.join("sub").to_str().unwrap()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.stdout.trim(), r.ws.join("sub").to_str().unwrap());
    for workdir in [
        r.outside.clone(),
        r.ws.join("sub/../.."),
        r.ws.join("link"),
        PathBuf::from("/"),
    ] {
        let err = runner
            .exec(exec_req(&["pwd"], workdir.to_str().unwrap()))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{workdir:?}: {err:?}");
        assert!(err.message().starts_with("access denied: "), "{err:?}");
    }
}

#[tokio::test]
async fn run_tool_outside_the_workspace_is_an_output() {
    let r = roots();
    let fx = restricted(&r);
    let (runner, blobs) = (&fx.runner, &fx.blobs);
    // The session cwd itself outside.
    let resp = runner
        .run_tool(tool_req(
            "c1",
            "shell",
            r#"{"command":["pwd"]}"#,
            r.outside.to_str().unwrap(),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!resp.success);
    assert!(
        resp.output_preview.starts_with("access denied: "),
        "{}",
        resp.output_preview
    );
    let item = stored_item(blobs, "s1", &resp).await;
    assert_eq!(item["output"], resp.output_preview);
    // A workdir leading out through `..`, an absolute path or a symlink.
    for (i, workdir) in ["../outside", r.outside.to_str().unwrap(), "link"]
        .into_iter()
        .enumerate()
    {
        let args = serde_json::json!({"command": ["pwd"], "workdir": workdir}).to_string();
        let resp = runner
            .run_tool(tool_req(&format!("c2-{i}"), "shell", &args, ""))
            .await
            .unwrap()
            .into_inner();
        assert!(!resp.success, "{workdir}");
        assert!(
            resp.output_preview.starts_with("access denied: "),
            "{workdir}: {}",
            resp.output_preview
        );
        assert!(resp.command.is_none());
    }
    // A patch writing through the symlink.
    let resp = runner
        .run_tool(Request::new(RunToolRequest {
            session_id: "s".into(),
            call_id: "c3".into(),
            tool_name: "apply_patch".into(),
            arguments: "*** Begin Patch\n*** Add File: link/x.txt\n+x\n*** End Patch".into(),
            cwd: String::new(),
            custom: true,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(
        resp.output_preview
            .starts_with("patch rejected: access denied: "),
        "{}",
        resp.output_preview
    );
    assert!(!r.outside.join("x.txt").exists());
}

// ---- custom tool calls, images, processes ----

#[tokio::test]
async fn custom_calls_store_a_custom_tool_call_output() {
    let r = roots();
    let fx = restricted(&r);
    let (runner, blobs) = (&fx.runner, &fx.blobs);
    let resp = runner
        .run_tool(Request::new(RunToolRequest {
            session_id: "s".into(),
            call_id: "call_p".into(),
            tool_name: "apply_patch".into(),
            arguments: "*** Begin Patch\n*** Add File: a.txt\n+a\n*** End Patch".into(),
            cwd: String::new(),
            custom: true,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(resp.success, "{}", resp.output_preview);
    let item = stored_item(blobs, "s", &resp).await;
    assert_eq!(item["type"], "custom_tool_call_output");
    assert_eq!(item["call_id"], "call_p");
    assert!(
        item["output"]
            .as_str()
            .unwrap()
            .ends_with("Success. Updated the following files:\nA a.txt\n")
    );
}

#[tokio::test]
async fn view_image_stores_a_content_item_array() {
    let r = roots();
    let fx = restricted(&r);
    let (runner, blobs) = (&fx.runner, &fx.blobs);
    let img = image::RgbaImage::from_pixel(3, 2, image::Rgba([0, 0, 0, 255]));
    img.save(r.ws.join("p.png")).unwrap();
    let resp = runner
        .run_tool(tool_req("call_i", "view_image", r#"{"path":"p.png"}"#, ""))
        .await
        .unwrap()
        .into_inner();
    assert!(resp.success, "{}", resp.output_preview);
    let item = stored_item(blobs, "s1", &resp).await;
    assert_eq!(item["type"], "function_call_output");
    let output = item["output"].as_array().unwrap();
    assert_eq!(output.len(), 1);
    assert_eq!(output[0]["type"], "input_image");
    assert_eq!(output[0]["detail"], "high");
    assert!(
        output[0]["image_url"]
            .as_str()
            .unwrap()
            .starts_with("data:image/png;base64,")
    );
    assert!(
        resp.output_preview.starts_with("[image image/png 3x2"),
        "{}",
        resp.output_preview
    );
}

#[tokio::test]
async fn close_session_kills_its_processes() {
    let r = roots();
    let fx = restricted(&r);
    let runner = &fx.runner;
    let resp = runner
        .run_tool(tool_req(
            "c",
            "exec_command",
            r#"{"cmd":"sleep 30","yield_time_ms":250}"#,
            "",
        ))
        .await
        .unwrap()
        .into_inner();
    let command = resp.command.unwrap();
    assert!(command.running && command.process_id > 0, "{command:?}");
    assert_eq!(runner.live_processes(), 1);
    let err = runner
        .close_tool_session(Request::new(CloseToolSessionRequest {
            session_id: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    runner
        .close_tool_session(Request::new(CloseToolSessionRequest {
            session_id: "s1".into(),
        }))
        .await
        .unwrap();
    assert_eq!(runner.live_processes(), 0);
    let args = format!(r#"{{"session_id":{}}}"#, command.process_id);
    let resp = runner
        .run_tool(tool_req("c2", "write_stdin", &args, ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        resp.output_preview,
        format!(
            "write_stdin failed: Unknown process id {}",
            command.process_id
        )
    );
}

// ---- ListTools ----

#[tokio::test]
async fn list_tools_is_sorted_and_selectable() {
    let fx = runner(Path::new("/"));
    let runner = &fx.runner;
    let names =
        |resp: ListToolsResponse| resp.tools.into_iter().map(|t| t.name).collect::<Vec<_>>();
    let resp = runner
        .list_tools(Request::new(ListToolsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let freeform: serde_json::Value = serde_json::from_str(&resp.tools[0].json).unwrap();
    assert_eq!(freeform["type"], "custom");
    assert_eq!(
        names(resp),
        [
            "apply_patch",
            "exec_command",
            "grep_files",
            "list_dir",
            "read_file",
            "write_stdin"
        ]
    );
    let resp = runner
        .list_tools(Request::new(ListToolsRequest {
            apply_patch_format: ApplyPatchFormat::Json as i32,
            shell_tool: ShellToolKind::ShellCommand as i32,
            include_view_image: true,
            exclude_file_tools: true,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let json: serde_json::Value = serde_json::from_str(&resp.tools[0].json).unwrap();
    assert_eq!(
        (json["type"].as_str(), json["strict"].as_bool()),
        (Some("function"), Some(false))
    );
    assert_eq!(names(resp), ["apply_patch", "shell_command", "view_image"]);
    let err = runner
        .list_tools(Request::new(ListToolsRequest {
            shell_tool: 99,
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

// ---- GetProjectContext ----

#[tokio::test]
async fn project_context() {
    let r = roots();
    let fx = restricted(&r);
    let runner = &fx.runner;
    std::fs::create_dir(r.ws.join(".git")).unwrap();
    std::fs::write(r.ws.join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
    std::fs::write(r.ws.join("AGENTS.md"), "top rules").unwrap();
    std::fs::write(r.ws.join("sub/AGENTS.md"), "sub rules").unwrap();
    let resp = runner
        .get_project_context(Request::new(GetProjectContextRequest {
            cwd: "sub".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let sub = r.ws.join("sub");
    assert_eq!(resp.cwd, sub.to_str().unwrap());
    assert_eq!(resp.agents_md, "top rules\n\nsub rules");
    assert_eq!(
        resp.agents_md_message_text,
        format!(
            "# AGENTS.md instructions for {}\n\n<INSTRUCTIONS>\ntop rules\n\nsub rules\n</INSTRUCTIONS>",
            sub.display()
        )
    );
    assert_eq!(resp.agents_md_paths.len(), 2);
    let git = resp.git.unwrap();
    assert_eq!((git.branch.as_str(), git.commit.as_str()), ("main", ""));
    assert!(resp.environment_context.starts_with(&format!(
        "<environment_context>\n  <cwd>{}</cwd>\n  <shell>",
        sub.display()
    )));
    assert!(
        resp.environment_context
            .ends_with("</timezone>\n</environment_context>")
    );

    let resp = runner
        .get_project_context(Request::new(GetProjectContextRequest {
            cwd: "sub".into(),
            disable_project_root_walk: true,
            project_doc_max_bytes: 3,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.agents_md, "sub");

    for (cwd, code) in [
        (r.outside.to_str().unwrap(), Code::PermissionDenied),
        ("link", Code::PermissionDenied),
        ("missing", Code::NotFound),
        ("AGENTS.md", Code::FailedPrecondition),
    ] {
        let err = runner
            .get_project_context(Request::new(GetProjectContextRequest {
                cwd: cwd.into(),
                ..Default::default()
            }))
            .await
            .unwrap_err();
        assert_eq!(err.code(), code, "{cwd}: {err:?}");
    }

    // Names are names, not paths out of the project.
    for (fallback, marker) in [("../secret", ".git"), ("AGENTS.md", "/etc"), ("..", ".git")] {
        let err = runner
            .get_project_context(Request::new(GetProjectContextRequest {
                cwd: "sub".into(),
                fallback_filenames: vec![fallback.into()],
                project_root_markers: vec![marker.into()],
                ..Default::default()
            }))
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "{fallback} {marker}: {err:?}"
        );
        assert!(err.message().contains("plain file name"), "{err:?}");
    }
}

/// What the caller decided on must be what the arguments say: a request
/// whose invocation differs runs nothing; the matching one runs exactly it.
#[tokio::test]
async fn a_carried_invocation_must_match_the_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = std::fs::canonicalize(dir.path()).unwrap();
    let cwd = cwd.to_str().unwrap();
    let fx = runner(dir.path());
    let args = r#"{"cmd":"touch made","shell":"/bin/sh","yield_time_ms":5000}"#;
    let real = keel_tool_model::parse_call("exec_command", args, cwd, "/bin/bash")
        .unwrap()
        .unwrap()
        .invocation;
    let keel_tool_model::Invocation::Command(command) = &real else {
        panic!("not a command: {real:?}");
    };
    assert_eq!(command.argv, ["/bin/sh", "-lc", "touch made"]);
    let mut forged = command.clone();
    forged.argv = vec!["bash".into(), "-lc".into(), "true".into()];
    let request = |call_id: &str, invocation: &keel_tool_model::Invocation| {
        let mut req = tool_req(call_id, "exec_command", args, cwd);
        req.get_mut().invocation = Some(invocation.into());
        req.get_mut().user_shell = "/bin/bash".into();
        req
    };

    let err = fx
        .runner
        .run_tool(request(
            "forged",
            &keel_tool_model::Invocation::Command(forged),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("nothing ran"), "{}", err.message());
    let info = keel_proto::v1::ErrorInfo::from_status(&err).unwrap();
    assert_eq!(
        (info.class.as_str(), info.retryable),
        ("invocation_mismatch", false)
    );
    assert!(!dir.path().join("made").exists());

    // Decided with bash as the user's shell, sent saying zsh: another
    // command, refused.
    let plain = r#"{"cmd":"touch made"}"#;
    let with_bash = keel_tool_model::parse_call("exec_command", plain, cwd, "/bin/bash")
        .unwrap()
        .unwrap()
        .invocation;
    let mut other_shell = request("shell", &with_bash);
    other_shell.get_mut().arguments = plain.into();
    other_shell.get_mut().user_shell = "/bin/zsh".into();
    let err = fx.runner.run_tool(other_shell).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(!dir.path().join("made").exists());

    let resp = fx
        .runner
        .run_tool(request("real", &real))
        .await
        .unwrap()
        .into_inner();
    assert!(resp.success, "{}", resp.output_preview);
    assert_eq!(
        resp.command.unwrap().command,
        ["/bin/sh", "-lc", "touch made"]
    );
    assert!(dir.path().join("made").exists());
}
