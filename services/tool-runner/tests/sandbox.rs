//! The sandbox as the kernel enforces it: the real binary over gRPC runs
//! commands and patches under each mode, and the tests check that allowed
//! writes happen and forbidden ones (outside the roots, under `.git`,
//! through a symlink or `..`, anything under read-only, the network) are
//! refused and reported as sandbox denials.
//!
//! Every test first asks GetSandboxStatus. On a host that cannot enforce
//! something, the test asserts that the status says so (and that
//! `--require-sandbox` refuses the call) instead of passing silently.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::wait_for_file;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use keel_proto::v1::file_change::Kind;
use keel_proto::v1::tool_service_client::ToolServiceClient;
use keel_proto::v1::{
    GetSandboxStatusRequest, GetSandboxStatusResponse, ReviewPatchRequest, RunToolRequest,
    RunToolResponse, SandboxMode, SandboxPolicy,
};
use tokio::process::{Child, Command};
use tonic::transport::Channel;

/// A tool-runner on `base` (workspace root), with the session cwd
/// `base/cwd` (a git repository's working tree) and `base/outside`, which
/// the workspace allows but no sandbox root includes.
struct Env {
    _tmp: tempfile::TempDir,
    cwd: PathBuf,
    outside: PathBuf,
    child: Child,
    client: ToolServiceClient<Channel>,
    status: GetSandboxStatusResponse,
}

impl Env {
    async fn start(extra: &[&str]) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(tmp.path()).unwrap();
        let cwd = base.join("cwd");
        let outside = base.join("outside");
        std::fs::create_dir_all(cwd.join(".git")).unwrap();
        std::fs::write(cwd.join(".git/config"), "[core]\n").unwrap();
        std::fs::create_dir(&outside).unwrap();
        let addr_file = base.join("addr");
        let child = Command::new(env!("CARGO_BIN_EXE_keel-tool-runner"))
            .arg("--addr-file")
            .arg(&addr_file)
            .arg("--blob-url")
            .arg(format!("file://{}", base.join("blobs").display()))
            .arg("--default-cwd")
            .arg(&cwd)
            .arg("--workspace-root")
            .arg(&base)
            .args(extra)
            .env_remove("KEEL_TOOL_RUNNER_STATE_DIR")
            .env_remove("KEEL_DEFAULT_SANDBOX")
            .env_remove("KEEL_REQUIRE_SANDBOX")
            .env_remove("KEEL_WORKSPACE_ROOTS")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let addr = wait_for_file(&addr_file, Duration::from_secs(30)).await;
        let mut client = ToolServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let status = client
            .get_sandbox_status(GetSandboxStatusRequest {})
            .await
            .unwrap()
            .into_inner();
        Self {
            _tmp: tmp,
            cwd,
            outside,
            child,
            client,
            status,
        }
    }

    /// Runs `script` with `sh -c` (no login shell: nothing but the script
    /// runs) under `sandbox`.
    async fn sh(&mut self, call_id: &str, script: &str, sandbox: SandboxPolicy) -> RunToolResponse {
        self.run(call_id, 0, "shell", &argv_args(script), sandbox)
            .await
    }

    async fn run(
        &mut self,
        call_id: &str,
        attempt: u32,
        tool: &str,
        arguments: &str,
        sandbox: SandboxPolicy,
    ) -> RunToolResponse {
        self.client
            .run_tool(RunToolRequest {
                session_id: "s".into(),
                call_id: call_id.into(),
                tool_name: tool.into(),
                arguments: arguments.into(),
                cwd: self.cwd.display().to_string(),
                custom: tool == "apply_patch",
                sandbox: Some(sandbox),
                attempt,
                call_item_digest: String::new(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
    }
}

fn argv_args(script: &str) -> String {
    serde_json::json!({ "command": ["sh", "-c", script], "timeout_ms": 30_000 }).to_string()
}

/// workspace-write with only the cwd writable: the tests' directories are
/// under /tmp, which is a root by default.
fn workspace_write() -> SandboxPolicy {
    SandboxPolicy {
        mode: SandboxMode::WorkspaceWrite.into(),
        exclude_slash_tmp: true,
        exclude_tmpdir_env_var: true,
        ..Default::default()
    }
}

fn mode(mode: SandboxMode) -> SandboxPolicy {
    SandboxPolicy {
        mode: mode.into(),
        ..Default::default()
    }
}

/// True when the host enforces the filesystem part; otherwise asserts that
/// the status explains why, so that the caller can skip the kernel checks
/// knowingly.
fn filesystem_enforced(status: &GetSandboxStatusResponse) -> bool {
    if !status.filesystem_enforced {
        assert!(
            !status.detail.is_empty(),
            "no enforcement and no reason: {status:?}"
        );
        eprintln!("filesystem sandbox not enforced here: {}", status.detail);
    }
    status.filesystem_enforced
}

fn assert_denied(resp: &RunToolResponse, what: &str) {
    assert!(!resp.success, "{what} succeeded: {}", resp.output_preview);
    assert!(
        resp.sandbox_denied,
        "{what} failed without a sandbox denial: {}",
        resp.output_preview
    );
}

#[tokio::test]
async fn this_host_reports_full_enforcement() {
    let env = Env::start(&[]).await;
    // The machines Keel is built on (and CI) have Landlock, seccomp and
    // mount namespaces (shared notes, environment.md); a laptop may not,
    // and then says why.
    if env.status.filesystem_enforced && env.status.network_enforced {
        assert!(
            env.status.mechanism.contains("landlock abi")
                && env.status.mechanism.contains("seccomp"),
            "{:?}",
            env.status
        );
    } else {
        assert!(!env.status.detail.is_empty(), "{:?}", env.status);
    }
}

#[tokio::test]
async fn workspace_write_allows_the_cwd_and_nothing_else() {
    let mut env = Env::start(&[]).await;
    if !filesystem_enforced(&env.status) {
        return;
    }
    let resp = env
        .sh(
            "in",
            "echo hi > inside.txt && mkdir -p sub && echo x > sub/y",
            workspace_write(),
        )
        .await;
    assert!(resp.success, "{}", resp.output_preview);
    assert!(!resp.sandbox_denied);
    assert_eq!(
        std::fs::read_to_string(env.cwd.join("inside.txt")).unwrap(),
        "hi\n"
    );

    let outside = env.outside.join("x");
    let resp = env
        .sh(
            "out",
            &format!("echo x > {}", outside.display()),
            workspace_write(),
        )
        .await;
    assert_denied(&resp, "a write outside the roots");
    assert!(
        resp.output_preview
            .to_lowercase()
            .contains("permission denied"),
        "{}",
        resp.output_preview
    );
    assert!(!outside.exists());

    // /tmp is writable unless excluded; here it is excluded.
    let tmp_file = std::env::temp_dir().join(format!("keel-sbx-{}", std::process::id()));
    let resp = env
        .sh(
            "tmp",
            &format!("touch {}", tmp_file.display()),
            workspace_write(),
        )
        .await;
    assert_denied(&resp, "a write to an excluded /tmp");
    assert!(!tmp_file.exists());
    let resp = env
        .sh(
            "tmp-ok",
            &format!("touch {0} && rm {0}", tmp_file.display()),
            mode(SandboxMode::WorkspaceWrite),
        )
        .await;
    assert!(resp.success, "{}", resp.output_preview);

    // Extra writable roots are writable.
    let extra = SandboxPolicy {
        writable_roots: vec![env.outside.display().to_string()],
        ..workspace_write()
    };
    let resp = env
        .sh("extra", &format!("echo x > {}", outside.display()), extra)
        .await;
    assert!(resp.success, "{}", resp.output_preview);
    assert!(outside.exists());
}

#[tokio::test]
async fn protected_paths_stay_read_only() {
    let mut env = Env::start(&[]).await;
    if !filesystem_enforced(&env.status) {
        return;
    }
    let resp = env
        .sh("git", "echo evil >> .git/config", workspace_write())
        .await;
    assert_denied(&resp, "a write under .git");
    assert_eq!(
        std::fs::read_to_string(env.cwd.join(".git/config")).unwrap(),
        "[core]\n"
    );
    let resp = env
        .sh(
            "git-new",
            "mkdir -p .git/hooks && echo x > .git/hooks/pre-commit",
            workspace_write(),
        )
        .await;
    assert_denied(&resp, "a new file under .git");
    assert!(!env.cwd.join(".git/hooks/pre-commit").exists());
    let resp = env
        .sh("git-mv", "mv .git .git-moved", workspace_write())
        .await;
    // A mount point cannot be renamed (EBUSY, which is not one of Codex's
    // denial words, so not necessarily reported as a denial).
    assert!(!resp.success, "{}", resp.output_preview);
    assert!(env.cwd.join(".git/config").exists());
    // The rest of the cwd stays writable.
    let resp = env.sh("ok", "echo x > a.txt", workspace_write()).await;
    assert!(resp.success, "{}", resp.output_preview);
}

#[tokio::test]
async fn symlinks_and_dot_dot_do_not_escape() {
    let mut env = Env::start(&[]).await;
    if !filesystem_enforced(&env.status) {
        return;
    }
    std::os::unix::fs::symlink(&env.outside, env.cwd.join("link")).unwrap();
    let resp = env.sh("link", "echo x > link/x", workspace_write()).await;
    assert_denied(&resp, "a write through a symlink");
    let resp = env
        .sh("dotdot", "echo x > ../outside/y", workspace_write())
        .await;
    assert_denied(&resp, "a write through ..");
    let resp = env
        .sh(
            "ln",
            "ln -s ../outside ln2 && echo x > ln2/z",
            workspace_write(),
        )
        .await;
    assert_denied(&resp, "a write through a new symlink");
    assert_eq!(std::fs::read_dir(&env.outside).unwrap().count(), 0);
}

#[tokio::test]
async fn read_only_writes_nothing_anywhere() {
    let mut env = Env::start(&[]).await;
    if !filesystem_enforced(&env.status) {
        return;
    }
    let tmp_file = std::env::temp_dir().join(format!("keel-ro-{}", std::process::id()));
    for (id, script) in [
        ("cwd", "echo x > a.txt".to_string()),
        ("tmp", format!("echo x > {}", tmp_file.display())),
    ] {
        let resp = env.sh(id, &script, mode(SandboxMode::ReadOnly)).await;
        assert_denied(&resp, &format!("read-only write ({id})"));
    }
    assert!(!env.cwd.join("a.txt").exists());
    assert!(!tmp_file.exists());
    // Reading works, and so does /dev/null.
    let resp = env
        .sh(
            "read",
            "cat .git/config > /dev/null && ls /",
            mode(SandboxMode::ReadOnly),
        )
        .await;
    assert!(resp.success, "{}", resp.output_preview);
}

#[tokio::test]
async fn the_network_is_off_unless_allowed() {
    let mut env = Env::start(&[]).await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let connect = format!("exec 3<>/dev/tcp/127.0.0.1/{port} && echo connected");
    let bash = |script: &str| {
        serde_json::json!({ "command": ["bash", "-c", script], "timeout_ms": 30_000 }).to_string()
    };
    if !env.status.network_enforced {
        assert!(!env.status.detail.is_empty(), "{:?}", env.status);
        return;
    }
    for (id, policy) in [
        ("ws", workspace_write()),
        ("ro", mode(SandboxMode::ReadOnly)),
    ] {
        let resp = env.run(id, 0, "shell", &bash(&connect), policy).await;
        assert_denied(&resp, &format!("a connect under {id}"));
        assert!(!resp.output_preview.contains("connected"));
    }
    let env_check = env
        .sh(
            "env",
            "echo net=$CODEX_SANDBOX_NETWORK_DISABLED",
            workspace_write(),
        )
        .await;
    assert!(
        env_check.output_preview.contains("net=1"),
        "{}",
        env_check.output_preview
    );

    let with_network = SandboxPolicy {
        network_access: true,
        ..workspace_write()
    };
    let resp = env
        .run("net", 0, "shell", &bash(&connect), with_network)
        .await;
    assert!(resp.success, "{}", resp.output_preview);
    let resp = env
        .run(
            "full",
            0,
            "shell",
            &bash(&connect),
            mode(SandboxMode::DangerFullAccess),
        )
        .await;
    assert!(resp.success, "{}", resp.output_preview);
    assert!(resp.output_preview.contains("connected"));
    let env_check = env
        .sh(
            "env2",
            "echo net=$CODEX_SANDBOX_NETWORK_DISABLED.",
            mode(SandboxMode::DangerFullAccess),
        )
        .await;
    assert!(
        env_check.output_preview.contains("net=."),
        "{}",
        env_check.output_preview
    );
}

#[tokio::test]
async fn exec_command_is_sandboxed_too() {
    let mut env = Env::start(&[]).await;
    if !filesystem_enforced(&env.status) {
        return;
    }
    let outside = env.outside.join("u");
    let args = serde_json::json!({
        "cmd": format!("echo x > {}", outside.display()),
        "login": false,
        "yield_time_ms": 10_000,
    })
    .to_string();
    let resp = env
        .run("u1", 0, "exec_command", &args, workspace_write())
        .await;
    assert!(resp.sandbox_denied, "{}", resp.output_preview);
    assert!(!outside.exists());
}

#[tokio::test]
async fn apply_patch_writes_only_inside_the_roots() {
    let mut env = Env::start(&[]).await;
    let patch = |path: &str| format!("*** Begin Patch\n*** Add File: {path}\n+x\n*** End Patch");
    let resp = env
        .run("p1", 0, "apply_patch", &patch("new.txt"), workspace_write())
        .await;
    assert!(resp.success, "{}", resp.output_preview);
    assert!(env.cwd.join("new.txt").exists());

    std::os::unix::fs::symlink(&env.outside, env.cwd.join("link")).unwrap();
    for (id, path) in [
        ("p2", "../outside/a.txt".to_string()),
        ("p3", "link/b.txt".to_string()),
        ("p4", env.outside.join("c.txt").display().to_string()),
        ("p5", ".git/hooks/pre-commit".to_string()),
    ] {
        let resp = env
            .run(id, 0, "apply_patch", &patch(&path), workspace_write())
            .await;
        assert_denied(&resp, &format!("apply_patch of {path}"));
        assert!(
            resp.output_preview.starts_with("patch rejected: ")
                && resp.output_preview.contains("sandbox"),
            "{}",
            resp.output_preview
        );
    }
    assert_eq!(std::fs::read_dir(&env.outside).unwrap().count(), 0);
    assert!(!env.cwd.join(".git/hooks").exists());

    let resp = env
        .run(
            "p6",
            0,
            "apply_patch",
            &patch("ro.txt"),
            mode(SandboxMode::ReadOnly),
        )
        .await;
    assert_denied(&resp, "apply_patch under read-only");
    assert!(!env.cwd.join("ro.txt").exists());

    // The user approved: the re-run (attempt 1) without sandbox writes.
    let resp = env
        .run(
            "p2",
            1,
            "apply_patch",
            &patch("../outside/a.txt"),
            mode(SandboxMode::DangerFullAccess),
        )
        .await;
    assert!(resp.success, "{}", resp.output_preview);
    assert!(env.outside.join("a.txt").exists());
}

#[tokio::test]
async fn an_approved_attempt_runs_again_and_the_first_keeps_its_result() {
    let mut env = Env::start(&[]).await;
    if !filesystem_enforced(&env.status) {
        return;
    }
    let marker = env.outside.join("ran");
    let script = format!("echo ran >> {}", marker.display());
    let first = env.sh("c", &script, workspace_write()).await;
    assert_denied(&first, "the first attempt");
    // A retry of attempt 0 gets the recorded denial; nothing runs.
    let again = env.sh("c", &script, workspace_write()).await;
    assert_eq!(again, first);
    let approved = env
        .run(
            "c",
            1,
            "shell",
            &argv_args(&script),
            mode(SandboxMode::DangerFullAccess),
        )
        .await;
    assert!(approved.success, "{}", approved.output_preview);
    assert!(!approved.sandbox_denied);
    let retried = env
        .run(
            "c",
            1,
            "shell",
            &argv_args(&script),
            mode(SandboxMode::DangerFullAccess),
        )
        .await;
    assert_eq!(retried, approved);
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "ran\n");
}

#[tokio::test]
async fn review_patch_describes_each_change() {
    let mut env = Env::start(&[]).await;
    std::fs::write(env.cwd.join("gone.txt"), "bye\n").unwrap();
    std::fs::write(env.cwd.join("src.txt"), "a\nb\nc\nd\ne\n").unwrap();
    let patch = "*** Begin Patch\n\
                 *** Add File: added.txt\n+hello\n+world\n\
                 *** Delete File: gone.txt\n\
                 *** Update File: src.txt\n*** Move to: moved/dst.txt\n@@\n b\n-c\n+C\n d\n\
                 *** End Patch";
    let resp = env
        .client
        .review_patch(ReviewPatchRequest {
            cwd: env.cwd.display().to_string(),
            arguments: patch.into(),
            custom: true,
            sandbox: Some(workspace_write()),
            call_item_digest: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.error, "");
    assert_eq!(resp.cwd, env.cwd.display().to_string());
    assert_eq!(resp.changes.len(), 3);
    let cwd = &env.cwd;
    assert_eq!(
        resp.changes[0].path,
        cwd.join("added.txt").display().to_string()
    );
    match resp.changes[0].kind.as_ref().unwrap() {
        Kind::Add(add) => {
            assert_eq!(add.content, "hello\nworld\n");
            assert!(!add.truncated);
        }
        other => panic!("{other:?}"),
    }
    match resp.changes[1].kind.as_ref().unwrap() {
        Kind::Delete(delete) => assert_eq!(delete.content, "bye\n"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        resp.changes[2].path,
        cwd.join("src.txt").display().to_string()
    );
    match resp.changes[2].kind.as_ref().unwrap() {
        Kind::Update(update) => {
            assert_eq!(update.unified_diff, "@@ -2,3 +2,3 @@\n b\n-c\n+C\n d\n");
            assert_eq!(
                update.move_path,
                cwd.join("moved/dst.txt").display().to_string()
            );
        }
        other => panic!("{other:?}"),
    }
    // Nothing was written.
    assert!(!cwd.join("added.txt").exists() && cwd.join("gone.txt").exists());
    // The roots of the policy, with the protected paths.
    assert_eq!(resp.writable_roots.len(), 1);
    assert_eq!(resp.writable_roots[0].root, cwd.display().to_string());
    assert_eq!(
        resp.writable_roots[0].read_only_subpaths,
        [cwd.join(".git"), cwd.join(".codex")].map(|p| p.display().to_string())
    );
    assert_eq!(
        resp.platform_sandbox_available,
        env.status.filesystem_enforced
    );
}

#[tokio::test]
async fn review_patch_reports_what_run_tool_would_say() {
    let mut env = Env::start(&[]).await;
    let cwd = env.cwd.display().to_string();
    let review = |arguments: &str, custom: bool| ReviewPatchRequest {
        cwd: cwd.clone(),
        arguments: arguments.into(),
        custom,
        sandbox: None,
        call_item_digest: String::new(),
    };
    let bad = "*** Begin Patch\n*** Frobnicate File: x\n*** End Patch";
    let resp = env
        .client
        .review_patch(review(bad, true))
        .await
        .unwrap()
        .into_inner();
    assert!(resp.changes.is_empty());
    assert_eq!(
        resp.error,
        "apply_patch verification failed: Invalid patch hunk on line 2: '*** Frobnicate File: x' is not a valid hunk header. Valid hunk headers: '*** Add File: {path}', '*** Delete File: {path}', '*** Update File: {path}'"
    );
    // The model's call gets the same text.
    let run = env
        .run("bad", 0, "apply_patch", bad, workspace_write())
        .await;
    assert_eq!(run.output_preview, resp.error);

    let missing = "*** Begin Patch\n*** Update File: nope.txt\n@@\n-a\n+b\n*** End Patch";
    let json = serde_json::json!({ "input": missing }).to_string();
    let resp = env
        .client
        .review_patch(review(&json, false))
        .await
        .unwrap()
        .into_inner();
    assert!(
        resp.error
            .starts_with("apply_patch verification failed: Failed to read file to update "),
        "{}",
        resp.error
    );
    let resp = env
        .client
        .review_patch(review("{}", false))
        .await
        .unwrap()
        .into_inner();
    assert!(
        resp.error
            .starts_with("failed to parse function arguments: "),
        "{}",
        resp.error
    );
    // The default policy (workspace-write) includes /tmp.
    let resp = env
        .client
        .review_patch(review(bad, true))
        .await
        .unwrap()
        .into_inner();
    assert!(
        resp.writable_roots.iter().any(|r| r.root == "/tmp"),
        "{:?}",
        resp.writable_roots
    );
    // A relative cwd is a bad request.
    let err = env
        .client
        .review_patch(ReviewPatchRequest {
            cwd: "cwd".into(),
            ..review(bad, true)
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn require_sandbox_refuses_only_what_cannot_be_enforced() {
    let mut env = Env::start(&["--require-sandbox", "--default-sandbox", "read-only"]).await;
    let resp = env
        .client
        .run_tool(RunToolRequest {
            session_id: "s".into(),
            call_id: "r".into(),
            tool_name: "shell".into(),
            arguments: argv_args("echo x > a.txt"),
            cwd: env.cwd.display().to_string(),
            ..Default::default()
        })
        .await;
    if env.status.filesystem_enforced && env.status.network_enforced {
        // Enforced: the default (read-only) applies and refuses the write.
        let resp = resp.unwrap().into_inner();
        assert_denied(&resp, "a write under the default read-only sandbox");
    } else {
        let err = resp.unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        assert!(
            err.message().contains("--require-sandbox"),
            "{}",
            err.message()
        );
    }
    // danger-full-access never needs the sandbox.
    let resp = env
        .sh(
            "full",
            "echo x > a.txt",
            mode(SandboxMode::DangerFullAccess),
        )
        .await;
    assert!(resp.success, "{}", resp.output_preview);
    env.child.kill().await.unwrap();
}
