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
    ExecRequest, GetSandboxStatusRequest, GetSandboxStatusResponse, ReviewPatchRequest,
    RunToolRequest, RunToolResponse, SandboxMode, SandboxPolicy,
};
use tokio::process::{Child, Command};
use tonic::transport::Channel;

/// A channel to a tool-runner, presenting the worker's certificate.
fn worker_channel(pki: &keel_stack::LocalPki, addr: &str) -> tonic::transport::Channel {
    let tls = keel_server::PeerTlsArgs::with_files(&pki.worker_cert, &pki.worker_key, &pki.ca)
        .client()
        .unwrap();
    keel_server::ClientTls::lazy_channel(tls.as_ref(), addr, None).unwrap()
}

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
    /// The tool-runner's gRPC address (host:port).
    addr: String,
}

impl Env {
    async fn start(extra: &[&str]) -> Self {
        Self::start_with(extra, &[]).await
    }

    /// With `{base}` and `{cwd}` in `extra` (and in the values of `vars`)
    /// replaced by the paths, and `vars` set for the tool-runner.
    async fn start_with(extra: &[&str], vars: &[(&str, &str)]) -> Self {
        Self::launch(extra, vars, None, None).await
    }

    /// A tool-runner whose controlling terminal is `terminal` (a pty's
    /// subsidiary side), as one started by `keel up` from a shell has that
    /// shell's terminal.
    async fn start_on_terminal(terminal: std::os::fd::OwnedFd) -> Self {
        Self::launch(&[], &[], Some(terminal), None).await
    }

    /// A tool-runner that inherits `open` as descriptor [`INHERITED_FD`]
    /// (no close-on-exec), as one started by a parent that leaks a
    /// descriptor does; `extra` as for [`Env::start`].
    async fn start_inheriting(
        extra: &[&str],
        open: impl FnOnce(&std::path::Path) -> std::fs::File,
    ) -> Self {
        Self::launch(extra, &[], None, Some(Box::new(open))).await
    }

    async fn launch(
        extra: &[&str],
        vars: &[(&str, &str)],
        terminal: Option<std::os::fd::OwnedFd>,
        inherit: Option<OpenInherited<'_>>,
    ) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(tmp.path()).unwrap();
        let cwd = base.join("cwd");
        let outside = base.join("outside");
        std::fs::create_dir_all(cwd.join(".git")).unwrap();
        std::fs::write(cwd.join(".git/config"), "[core]\n").unwrap();
        std::fs::create_dir(&outside).unwrap();
        let addr_file = base.join("addr");
        let extra: Vec<String> = extra
            .iter()
            .map(|arg| {
                arg.replace("{cwd}", &cwd.display().to_string())
                    .replace("{base}", &base.display().to_string())
            })
            .collect();
        // Mutual TLS as in a real stack; the certificates hidden from
        // commands, as `keel up` hides its state directory.
        let pki = keel_stack::LocalPki::ensure(&base.join("tls")).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_keel-tool-runner"));
        command
            .arg("--addr-file")
            .arg(&addr_file)
            .arg("--default-cwd")
            .arg(&cwd)
            .args(pki.server_args())
            .arg("--hide-path")
            .arg(base.join("tls"));
        if !extra.iter().any(|arg| arg == "--blob-url") {
            command
                .arg("--blob-url")
                .arg(format!("file://{}", base.join("blobs").display()));
        }
        if !extra.iter().any(|arg| arg == "--allow-any-workspace") {
            command.arg("--workspace-root").arg(&base);
        }
        for var in [
            "KEEL_TOOL_RUNNER_STATE_DIR",
            "KEEL_DEFAULT_SANDBOX",
            "KEEL_REQUIRE_SANDBOX",
            "KEEL_INSECURE_PARTIAL_SANDBOX",
            "KEEL_HIDE_PATHS",
            "KEEL_WORKSPACE_ROOTS",
            "KEEL_ALLOW_ANY_WORKSPACE",
        ] {
            command.env_remove(var);
        }
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(name, value)| {
                let value = value
                    .replace("{cwd}", &cwd.display().to_string())
                    .replace("{base}", &base.display().to_string());
                (name.to_string(), value)
            })
            .collect();
        command
            .args(&extra)
            .envs(vars.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if let Some(terminal) = terminal {
            command.stdin(Stdio::from(terminal));
            with_controlling_terminal(&mut command);
        }
        // Kept open until the child has started.
        let inherited = inherit.map(|open| open(&base));
        if let Some(file) = &inherited {
            with_inherited_fd(&mut command, std::os::fd::AsRawFd::as_raw_fd(file));
        }
        let child = command.spawn().unwrap();
        drop(inherited);
        let addr = wait_for_file(&addr_file, Duration::from_secs(30)).await;
        let mut client = ToolServiceClient::new(worker_channel(&pki, &addr));
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
            addr,
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

/// The command's output inside a `shell` response (structured: JSON with
/// an `output` field), or the preview itself when it is plain text.
fn output(resp: &RunToolResponse) -> String {
    serde_json::from_str::<serde_json::Value>(&resp.output_preview)
        .ok()
        .and_then(|v| v["output"].as_str().map(str::to_string))
        .unwrap_or_else(|| resp.output_preview.clone())
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
    let status = &env.status;
    if status.filesystem_enforced && status.network_enforced {
        assert!(
            status.mechanism.contains("landlock abi") && status.mechanism.contains("seccomp"),
            "{status:?}"
        );
        // Every part is probed for real, and on these machines all hold.
        assert!(
            status.protected_paths_enforced
                && status.processes_isolated
                && status.hidden_paths_enforced
                && status.privileges_dropped,
            "{status:?}"
        );
        assert_eq!(status.detail, "", "{status:?}");
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
            session_id: String::new(),
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
        session_id: String::new(),
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

/// Enforcement is required by default: with the probe unable to run (a
/// real condition: no writable temporary directory for it), every
/// restricted call is answered `sandbox_unavailable` instead of running
/// unconfined; danger-full-access still runs, and so does everything with
/// `--insecure-partial-sandbox`.
#[tokio::test]
async fn a_sandbox_the_host_cannot_enforce_is_refused_by_default() {
    let no_tmp = [("TMPDIR", "/nonexistent/keel-no-tmp")];
    let mut env = Env::start_with(&["--default-sandbox", "read-only"], &no_tmp).await;
    assert!(!env.status.filesystem_enforced, "{:?}", env.status);
    assert!(!env.status.processes_isolated && !env.status.hidden_paths_enforced);
    assert!(
        env.status.detail.contains("probe directory"),
        "{:?}",
        env.status
    );
    let marker = env.cwd.join("ran");
    let script = format!("touch {}", marker.display());
    for (id, policy) in [
        ("ws", workspace_write()),
        ("ro", mode(SandboxMode::ReadOnly)),
    ] {
        let resp = env.sh(id, &script, policy).await;
        assert!(!resp.success && resp.sandbox_unavailable, "{resp:?}");
        assert!(!resp.sandbox_denied);
        assert!(
            resp.output_preview.starts_with(&format!(
                "the {} sandbox cannot be enforced on this host (",
                if id == "ws" {
                    "workspace-write"
                } else {
                    "read-only"
                }
            )),
            "{}",
            resp.output_preview
        );
        // The model's item says the same.
        assert!(!resp.output_item_digest.is_empty());
    }
    // The default policy (read-only here) is refused too, file tools as
    // well as commands.
    let read = serde_json::json!({ "file_path": env.cwd.join(".git/config") }).to_string();
    let resp = env
        .client
        .run_tool(RunToolRequest {
            session_id: "s".into(),
            call_id: "default".into(),
            tool_name: "read_file".into(),
            arguments: read,
            cwd: env.cwd.display().to_string(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(resp.sandbox_unavailable, "{resp:?}");
    assert!(!marker.exists(), "a refused command ran");
    // danger-full-access never needs the sandbox.
    let resp = env
        .sh("full", &script, mode(SandboxMode::DangerFullAccess))
        .await;
    assert!(resp.success && !resp.sandbox_unavailable, "{resp:?}");
    assert!(marker.exists());
    env.child.kill().await.unwrap();

    // The operator can accept a partial sandbox, loudly.
    let mut env = Env::start_with(&["--insecure-partial-sandbox"], &no_tmp).await;
    let resp = env.sh("ws", "echo ran", workspace_write()).await;
    assert!(resp.success && !resp.sandbox_unavailable, "{resp:?}");
    env.child.kill().await.unwrap();
}

/// Hole 1: a sandboxed command sees no other process — not the
/// tool-runner, not its environment — and cannot signal it.
#[tokio::test]
async fn commands_cannot_see_or_signal_other_processes() {
    let secret = "sk-keel-test-secret-0123456789";
    let mut env = Env::start_with(&[], &[("OPENAI_API_KEY", secret)]).await;
    if !isolated(&env.status) {
        return;
    }
    let pid = env.child.id().unwrap();
    for (id, policy) in [
        ("ws", workspace_write()),
        ("ro", mode(SandboxMode::ReadOnly)),
    ] {
        let script = format!(
            "echo pids: $(ls /proc | grep -x '[0-9]*' | tr '\\n' ' '); \
             {{ xargs -0 -n1 < /proc/{pid}/environ; }} 2>&1; \
             {{ kill -9 {pid}; }} 2>&1; echo kill=$?; test -e /proc/{pid} && echo visible; echo pid=$$"
        );
        let resp = env.sh(&format!("see-{id}"), &script, policy).await;
        let out = &output(&resp);
        assert!(!out.contains(secret), "{id}: the secret leaked: {out}");
        assert!(out.contains("kill=1"), "{id}: {out}");
        assert!(!out.contains("visible"), "{id}: {out}");
        // PID 1 (the helper) and the shell, and whatever the pipeline
        // started; never the tool-runner.
        let pids = out
            .lines()
            .find_map(|line| line.strip_prefix("pids:"))
            .unwrap_or_else(|| panic!("{id}: {out}"));
        assert!(
            !pids.split_whitespace().any(|p| p == pid.to_string()),
            "{id}: {out}"
        );
        assert!(
            pids.split_whitespace()
                .all(|p| p.parse::<u32>().is_ok_and(|p| p < 100)),
            "{id}: {out}"
        );
    }
    // Unsandboxed, the same command does see it: the sandbox made the
    // difference.
    let resp = env
        .sh(
            "full",
            &format!("xargs -0 -n1 < /proc/{pid}/environ"),
            mode(SandboxMode::DangerFullAccess),
        )
        .await;
    assert!(output(&resp).contains(secret), "{}", resp.output_preview);
    // Alive and serving.
    assert!(env.child.try_wait().unwrap().is_none());
    let resp = env.sh("alive", "echo alive", workspace_write()).await;
    assert!(resp.success, "{}", resp.output_preview);
}

/// Hole 1 for the file tools: under a sandbox they run confined, so
/// `read_file` cannot read another process's environment either (with a
/// workspace that allows any path, so that only the sandbox stands in the
/// way), nor a hidden path; ordinary files read as before.
#[tokio::test]
async fn file_tools_run_confined() {
    let secret = "sk-keel-test-secret-file-tools";
    let mut env = Env::start_with(
        &["--allow-any-workspace", "--hide-path", "{cwd}/private"],
        &[("OPENAI_API_KEY", secret)],
    )
    .await;
    if !isolated(&env.status) {
        return;
    }
    std::fs::create_dir(env.cwd.join("private")).unwrap();
    std::fs::write(env.cwd.join("private/key.txt"), format!("{secret}\n")).unwrap();
    std::fs::write(env.cwd.join("notes.txt"), "hello\nworld\n").unwrap();
    let pid = env.child.id().unwrap();
    let read = |path: String| serde_json::json!({ "file_path": path }).to_string();
    let environ = format!("/proc/{pid}/environ");
    for (id, policy) in [
        ("ws", workspace_write()),
        ("ro", mode(SandboxMode::ReadOnly)),
    ] {
        let resp = env
            .run(
                &format!("env-{id}"),
                0,
                "read_file",
                &read(environ.clone()),
                policy.clone(),
            )
            .await;
        assert!(!resp.success, "{id}: {}", resp.output_preview);
        assert!(!resp.output_preview.contains(secret), "{id}");
        let hidden = env.cwd.join("private/key.txt").display().to_string();
        let resp = env
            .run(
                &format!("hidden-{id}"),
                0,
                "read_file",
                &read(hidden),
                policy.clone(),
            )
            .await;
        assert!(
            !resp.success && !resp.output_preview.contains(secret),
            "{id}: {}",
            resp.output_preview
        );
        let list = serde_json::json!({ "dir_path": env.cwd.join("private") }).to_string();
        let resp = env
            .run(&format!("list-{id}"), 0, "list_dir", &list, policy.clone())
            .await;
        assert!(
            !resp.output_preview.contains("key.txt"),
            "{id}: {}",
            resp.output_preview
        );
        let grep = serde_json::json!({ "pattern": "sk-keel" }).to_string();
        let resp = env
            .run(
                &format!("grep-{id}"),
                0,
                "grep_files",
                &grep,
                policy.clone(),
            )
            .await;
        assert_eq!(resp.output_preview, "No matches found.", "{id}");
        let notes = env.cwd.join("notes.txt").display().to_string();
        let resp = env
            .run(&format!("notes-{id}"), 0, "read_file", &read(notes), policy)
            .await;
        assert!(resp.success, "{id}: {}", resp.output_preview);
        assert_eq!(resp.output_preview, "L1: hello\nL2: world");
    }
    // Unsandboxed the file tools run in the tool-runner, as before, and
    // the same read works: the sandbox made the difference.
    let resp = env
        .run(
            "env-full",
            0,
            "read_file",
            &read(environ),
            mode(SandboxMode::DangerFullAccess),
        )
        .await;
    assert!(
        resp.success && resp.output_preview.starts_with("L1: "),
        "{}",
        resp.output_preview
    );
}

/// Hole 3: the tool-runner's state directory, a `file://` blob store and
/// `--hide-path`s cannot be read or written by a sandboxed command even
/// inside its writable cwd, so it cannot forge results or plant a
/// `.process` record for the next start to kill.
#[tokio::test]
async fn hidden_paths_cannot_be_read_or_written() {
    let mut env = Env::start(&[
        "--state-dir",
        "{cwd}/state",
        "--blob-url",
        "file://{cwd}/blobs",
        "--hide-path",
        "{cwd}/private:{cwd}/token.txt:{cwd}/deep/er/hidden",
    ])
    .await;
    let cwd = env.cwd.clone();
    std::fs::create_dir_all(cwd.join("deep/er/hidden")).unwrap();
    std::fs::write(cwd.join("deep/er/hidden/secret"), "d33p\n").unwrap();
    std::fs::create_dir(cwd.join("private")).unwrap();
    std::fs::write(cwd.join("private/secret"), "s3cr3t\n").unwrap();
    std::fs::write(cwd.join("token.txt"), "t0k3n\n").unwrap();
    for path in ["state", "blobs", "private", "token.txt"] {
        let path = cwd.join(path).display().to_string();
        assert!(env.status.hidden_paths.contains(&path), "{:?}", env.status);
    }
    if !env.status.hidden_paths_enforced {
        assert!(!env.status.detail.is_empty());
        return;
    }
    // A first call puts something in the blob store and the journal.
    let resp = env.sh("first", "echo first", workspace_write()).await;
    assert!(resp.success, "{}", resp.output_preview);
    let before = |dir: &str| {
        let mut names: Vec<String> = walk(&cwd.join(dir));
        names.sort();
        names
    };
    let (state, blobs) = (before("state"), before("blobs"));
    assert!(!state.is_empty() && !blobs.is_empty());
    let script = "ls -A state blobs private; cat private/secret token.txt; \
                  echo '{\"pgid\":1,\"leader_start_ticks\":1}' > state/calls/1-1.process; \
                  echo x > state/x; echo x > blobs/x; echo x > private/x; echo x > token.txt; \
                  rm -rf state blobs private; mv state moved; \
                  mv deep moved-deep; mv deep/er moved-er; echo end";
    for (id, policy) in [
        ("ws", workspace_write()),
        ("ro", mode(SandboxMode::ReadOnly)),
        // With /tmp writable, the cwd (a temporary directory) is a
        // directory strictly inside a writable root, so it is pinned: the
        // command must see it through the pin and the masks, not the
        // directory underneath that it entered before they were mounted.
        ("ws-tmp", mode(SandboxMode::WorkspaceWrite)),
    ] {
        let resp = env.sh(id, script, policy).await;
        let out = &output(&resp);
        assert!(out.contains("end"), "{id}: {out}");
        assert!(
            !out.contains("s3cr3t") && !out.contains("t0k3n"),
            "{id}: {out}"
        );
        // All three list as empty directories.
        assert!(
            out.starts_with("blobs:\n\nprivate:\n\nstate:\n"),
            "{id}: {out}"
        );
    }
    // Nothing the commands tried is there (the journal and the blob store
    // only grew by the calls' own records and items).
    for (dir, earlier) in [("state", &state), ("blobs", &blobs)] {
        let now = before(dir);
        assert!(earlier.iter().all(|p| now.contains(p)), "{dir}: {now:?}");
        assert!(
            now.iter()
                .all(|p| !p.ends_with(".process") && !p.ends_with("/x")),
            "{dir}: {now:?}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(cwd.join("private/secret")).unwrap(),
        "s3cr3t\n"
    );
    assert_eq!(
        std::fs::read_to_string(cwd.join("token.txt")).unwrap(),
        "t0k3n\n"
    );
    assert!(!cwd.join("private/x").exists() && !cwd.join("moved").exists());
    // A directory holding a hidden path cannot be moved away either (a
    // command could put a look-alike in its place for later calls): the
    // rename fails (EBUSY, or EXDEV where `mv` then copies what it can see
    // — the empty mask — and cannot remove the original).
    assert!(cwd.join("deep/er/hidden/secret").exists());
    assert!(!cwd.join("moved-deep").exists(), "{:?}", walk(&cwd));
    assert!(
        !cwd.join("moved-er/hidden/secret").exists(),
        "{:?}",
        walk(&cwd)
    );
    // apply_patch (which the tool-runner applies itself) refuses them too.
    let patch = "*** Begin Patch\n*** Add File: state/calls/2-2.process\n+{}\n*** End Patch";
    let resp = env
        .run("p", 0, "apply_patch", patch, workspace_write())
        .await;
    assert!(
        !resp.success && resp.sandbox_denied,
        "{}",
        resp.output_preview
    );
    assert!(!cwd.join("state/calls/2-2.process").exists());
    let patch = "*** Begin Patch\n*** Delete File: private/secret\n*** End Patch";
    let review = env
        .client
        .review_patch(ReviewPatchRequest {
            cwd: cwd.display().to_string(),
            arguments: patch.into(),
            custom: true,
            sandbox: Some(workspace_write()),
            call_item_digest: String::new(),
            session_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(review.changes.is_empty(), "{review:?}");
    assert!(review.error.contains("cannot see"), "{}", review.error);
    // A session cwd inside a hidden path is refused, clearly.
    let resp = env
        .client
        .run_tool(RunToolRequest {
            session_id: "s".into(),
            call_id: "inside".into(),
            tool_name: "shell".into(),
            arguments: argv_args("ls"),
            cwd: cwd.join("private").display().to_string(),
            sandbox: Some(workspace_write()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!resp.success);
    assert!(
        resp.output_preview.contains("hides"),
        "{}",
        resp.output_preview
    );
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        out.push(path.display().to_string());
        if path.is_dir() {
            out.extend(walk(&path));
        }
    }
    out
}

/// Hole 2: a loader variable in the request's environment is refused, and
/// nothing starts — the helper least of all.
#[tokio::test]
async fn loader_variables_from_a_request_are_refused() {
    let mut env = Env::start(&[]).await;
    let Some(library) = preload_library(&env.cwd, &env.outside) else {
        return;
    };
    for (id, var) in [("pre", "LD_PRELOAD"), ("audit", "LD_AUDIT")] {
        let args = serde_json::json!({
            "type": "exec",
            "command": ["sh", "-c", "echo ran"],
            "env": { var: library.display().to_string() },
        })
        .to_string();
        let resp = env
            .run(id, 0, "local_shell", &args, workspace_write())
            .await;
        assert!(!resp.success, "{}", resp.output_preview);
        assert!(
            resp.output_preview.contains(var) && resp.output_preview.contains("cannot be set"),
            "{}",
            resp.output_preview
        );
        assert!(!resp.output_preview.contains("ran"));
    }
    let err = env
        .client
        .exec(ExecRequest {
            argv: vec!["true".into()],
            workdir: env.cwd.display().to_string(),
            timeout_ms: 0,
            env: [("LD_PRELOAD".to_string(), library.display().to_string())].into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("LD_PRELOAD"), "{}", err.message());
    assert_eq!(std::fs::read_dir(&env.outside).unwrap().count(), 0);
}

/// Hole 2: an `LD_PRELOAD` the operator's environment names (here a
/// library planted in the workspace) reaches only the command, after
/// confinement: the helper starts with a clean environment, so the
/// library's constructor never runs unconfined.
#[tokio::test]
async fn an_operator_preload_runs_only_inside_the_sandbox() {
    let tmp = tempfile::tempdir().unwrap();
    let staging = std::fs::canonicalize(tmp.path()).unwrap();
    // Built before the tool-runner starts, in a directory of its own, then
    // named by the operator's --env-set.
    let outside = staging.join("outside");
    std::fs::create_dir(&outside).unwrap();
    let Some(library) = preload_library(&staging, &outside) else {
        return;
    };
    let set = format!("LD_PRELOAD={}", library.display());
    let mut env = Env::start(&["--env-set", &set]).await;
    if !filesystem_enforced(&env.status) {
        return;
    }
    let resp = env.sh("pre", "echo command ran", workspace_write()).await;
    assert!(resp.success, "{}", resp.output_preview);
    // The constructor ran in the command (so the library did load) and
    // was refused the write there.
    assert!(
        resp.output_preview.contains("keel-preload: denied"),
        "{}",
        resp.output_preview
    );
    assert!(
        !resp.output_preview.contains("keel-preload: wrote"),
        "{}",
        resp.output_preview
    );
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "the library ran unconfined"
    );
}

/// A shared library whose constructor tries to create a file in `outside`
/// and says on stderr whether it could; `None` (with the reason printed)
/// when there is no C compiler.
fn preload_library(dir: &std::path::Path, outside: &std::path::Path) -> Option<PathBuf> {
    let source = dir.join("preload.c");
    let library = dir.join("libpreload.so");
    std::fs::write(
        &source,
        format!(
            r#"#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>
__attribute__((constructor)) static void keel_preload(void) {{
    char path[4096];
    snprintf(path, sizeof path, "{}/marker-%d", (int)getpid());
    int fd = open(path, O_CREAT | O_WRONLY, 0644);
    if (fd >= 0) {{ close(fd); fprintf(stderr, "keel-preload: wrote %s\n", path); }}
    else {{ fprintf(stderr, "keel-preload: denied\n"); }}
}}
"#,
            outside.display()
        ),
    )
    .unwrap();
    let built = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&library)
        .arg(&source)
        .status();
    match built {
        Ok(status) if status.success() => Some(library),
        other => {
            eprintln!("SKIPPED: cannot build a preload library with cc: {other:?}");
            None
        }
    }
}

/// Hole 4: no disks in `/dev`, capabilities cut down to the kept set, and
/// the kernel-module calls refused, for a command running as root.
#[tokio::test]
async fn devices_capabilities_and_kernel_calls_are_restricted() {
    let mut env = Env::start(&[]).await;
    if !env.status.privileges_dropped {
        assert!(env.status.detail.contains("devices"), "{:?}", env.status);
        return;
    }
    let block = std::fs::read_dir("/dev")
        .unwrap()
        .filter_map(Result::ok)
        .find(|e| {
            use std::os::unix::fs::FileTypeExt as _;
            e.file_type().is_ok_and(|t| t.is_block_device())
        })
        .map(|e| e.path().display().to_string());
    let script = format!(
        "echo dev: $(ls /dev | tr '\\n' ' '); grep Cap /proc/self/status; {} echo end",
        block
            .as_deref()
            .map(|dev| format!(
                "test -e {dev} && echo BLOCK; head -c1 {dev} >/dev/null && echo READ;"
            ))
            .unwrap_or_default()
    );
    let resp = env.sh("dev", &script, workspace_write()).await;
    let out = &output(&resp);
    assert!(
        out.contains("end") && !out.contains("BLOCK") && !out.contains("READ"),
        "{out}"
    );
    let devices: Vec<&str> = out
        .lines()
        .find_map(|line| line.strip_prefix("dev:"))
        .unwrap_or_else(|| panic!("{out}"))
        .split_whitespace()
        .collect();
    for name in &devices {
        assert!(
            [
                "fd", "full", "null", "random", "shm", "stderr", "stdin", "stdout", "tty",
                "urandom", "zero"
            ]
            .contains(name),
            "{name} in /dev: {out}"
        );
    }
    // CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID.
    let kept: u64 = 0xfb;
    for field in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        let value = out
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{field}:")))
            .map(|hex| u64::from_str_radix(hex.trim(), 16).unwrap())
            .unwrap_or_else(|| panic!("no {field}: {out}"));
        let allowed = if matches!(field, "CapInh" | "CapAmb") {
            0
        } else {
            kept
        };
        assert_eq!(value & !allowed, 0, "{field} {value:x}: {out}");
    }
    // init_module and finit_module, through a tiny C program.
    let source = env.cwd.join("modprobe.c");
    std::fs::write(
        &source,
        "#include <errno.h>\n#include <stdio.h>\n#include <sys/syscall.h>\n#include <unistd.h>\n\
         int main(void) {\n\
           long a = syscall(SYS_init_module, 0, 0, \"\"); int ea = errno;\n\
           long b = syscall(SYS_finit_module, -1, \"\", 0); int eb = errno;\n\
           printf(\"init=%ld/%d finit=%ld/%d\\n\", a, ea, b, eb);\n\
           return 0;\n}\n",
    )
    .unwrap();
    let probe = env.cwd.join("modprobe");
    let built = std::process::Command::new("cc")
        .arg("-o")
        .arg(&probe)
        .arg(&source)
        .status();
    if !built.is_ok_and(|s| s.success()) {
        eprintln!("SKIPPED: the init_module check needs cc");
        return;
    }
    let resp = env.sh("mod", "./modprobe", workspace_write()).await;
    assert!(
        resp.output_preview
            .contains(&format!("init=-1/{0} finit=-1/{0}", libc::EPERM)),
        "{}",
        resp.output_preview
    );
}

/// A command's background processes die with it, even one that left the
/// process group (`setsid`): PID 1 of its namespace exits with the command
/// and the kernel kills the rest.
#[tokio::test]
async fn background_processes_do_not_survive_their_call() {
    let mut env = Env::start(&[]).await;
    if !isolated(&env.status) {
        return;
    }
    let seconds = 900_000 + std::process::id() % 10_000;
    let script = format!(
        "sleep {seconds} & setsid sleep {} & echo started",
        seconds + 1
    );
    let resp = env.sh("bg", &script, workspace_write()).await;
    assert!(resp.success, "{}", resp.output_preview);
    for n in [seconds, seconds + 1] {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while sleeping(n) {
            assert!(
                std::time::Instant::now() < deadline,
                "sleep {n} survived its call"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Whether a `sleep <seconds>` runs anywhere on the host.
fn sleeping(seconds: u32) -> bool {
    let wanted = format!("sleep\0{seconds}\0");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .any(|entry| {
            std::fs::read(entry.path().join("cmdline"))
                .is_ok_and(|cmdline| cmdline == wanted.as_bytes())
        })
}

/// True when commands run in a PID namespace of their own; otherwise
/// asserts that the status explains why, so that the caller can skip the
/// kernel checks knowingly (such a host refuses sandboxed calls).
fn isolated(status: &GetSandboxStatusResponse) -> bool {
    if !status.processes_isolated {
        assert!(
            status.detail.contains("other processes"),
            "no isolation and no reason: {status:?}"
        );
        eprintln!("processes not isolated here: {}", status.detail);
    }
    status.processes_isolated
}

/// Sandboxed patches are written by the confined helper, the patch's
/// changes going through its stdin: a 256 KiB file (twice the kernel's
/// limit for one argument) is written whole, and an approved unsandboxed
/// patch writes its own directories.
#[tokio::test]
async fn patches_are_written_confined_whatever_their_size() {
    let mut env = Env::start(&[]).await;
    if !filesystem_enforced(&env.status) {
        return;
    }
    let line = "x".repeat(1023);
    let body: String = (0..256).map(|_| format!("+{line}\n")).collect();
    let patch = format!("*** Begin Patch\n*** Add File: big.txt\n{body}*** End Patch");
    assert!(patch.len() > 256 * 1024);
    let resp = env
        .run("big", 0, "apply_patch", &patch, workspace_write())
        .await;
    assert!(resp.success, "{}", resp.output_preview);
    let written = std::fs::read_to_string(env.cwd.join("big.txt")).unwrap();
    assert_eq!(written.len(), 256 * 1024);
    let outside = env.outside.join("approved.txt");
    let patch = format!(
        "*** Begin Patch\n*** Add File: {}\n+ok\n*** End Patch",
        outside.display()
    );
    let resp = env
        .run(
            "approved",
            1,
            "apply_patch",
            &patch,
            mode(SandboxMode::DangerFullAccess),
        )
        .await;
    assert!(resp.success, "{}", resp.output_preview);
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "ok\n");
}

/// GetProjectContext reads the project unconfined, and what it finds goes
/// into the model's context (`<git_info>`, the AGENTS.md text). A
/// sandboxed command must not be able to point those reads at a hidden
/// file: a `.git/HEAD` it plants (`ref: /path/to/secret`, whose "commit"
/// was the file's whole text; a `gitdir:` into a hidden directory), or an
/// AGENTS.md symlink to a hidden file inside the project.
#[tokio::test]
async fn the_project_context_reads_nothing_hidden() {
    let mut env = Env::start(&["--hide-path", "{cwd}/private:{base}/outside/token.txt"]).await;
    if !env.status.hidden_paths_enforced {
        assert!(!env.status.detail.is_empty());
        return;
    }
    let cwd = env.cwd.clone();
    std::fs::create_dir(cwd.join("private")).unwrap();
    std::fs::write(cwd.join("private/secret"), "s3cr3t-agents\n").unwrap();
    std::fs::write(cwd.join("private/HEAD"), "s3cr3t-head\n").unwrap();
    let token = env.outside.join("token.txt");
    std::fs::write(&token, "t0k3n-ref\n").unwrap();
    // Plain sandboxed commands: no approval is needed for any of this.
    let script = format!(
        "mkdir -p sub/.git wt && printf 'ref: {}\\n' > sub/.git/HEAD && \
         printf 'gitdir: {}\\n' > wt/.git && \
         ln -s private/secret AGENTS.md && ln -s ../private/secret sub/AGENTS.md && echo planted",
        token.display(),
        cwd.join("private").display()
    );
    let resp = env.sh("plant", &script, workspace_write()).await;
    assert!(output(&resp).contains("planted"), "{}", resp.output_preview);
    let mut leaks = Vec::new();
    for dir in [cwd.clone(), cwd.join("sub"), cwd.join("wt")] {
        let context = env
            .client
            .get_project_context(keel_proto::v1::GetProjectContextRequest {
                cwd: dir.display().to_string(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let shown = format!("{context:?}");
        if shown.contains("s3cr3t") || shown.contains("t0k3n") {
            leaks.push(shown);
        }
    }
    assert!(leaks.is_empty(), "{leaks:#?}");
}

/// Makes the child a session leader with its stdin (a terminal) as its
/// controlling terminal.
#[allow(unsafe_code)]
fn with_controlling_terminal(command: &mut Command) {
    // SAFETY: between fork and exec the child calls only setsid(2) and
    // ioctl(2), both async-signal-safe, and touches no memory of the
    // parent's threads.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Opens, in the test's base directory, what the tool-runner inherits.
type OpenInherited<'a> = Box<dyn FnOnce(&std::path::Path) -> std::fs::File + 'a>;

/// The descriptor number [`Env::start_inheriting`] passes on.
const INHERITED_FD: i32 = 7;

/// Makes the child inherit `fd` as [`INHERITED_FD`], without close-on-exec.
#[allow(unsafe_code)]
fn with_inherited_fd(command: &mut Command, fd: i32) {
    // SAFETY: between fork and exec the child calls only dup2(2), which is
    // async-signal-safe (dup2 leaves the new descriptor without
    // FD_CLOEXEC).
    unsafe {
        command.pre_exec(move || {
            if libc::dup2(fd, INHERITED_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A new pseudo-terminal: (main side, subsidiary side).
#[allow(unsafe_code)]
fn open_pty() -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
    use std::os::fd::FromRawFd as _;
    let (mut main, mut sub) = (-1, -1);
    // SAFETY: openpty writes two descriptors into the integers given and
    // reads nothing else (null name, termios and winsize).
    let rc = unsafe {
        libc::openpty(
            &mut main,
            &mut sub,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened and are owned by nobody else.
    unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(main),
            std::os::fd::OwnedFd::from_raw_fd(sub),
        )
    }
}

/// The terminal the tool-runner was started from is no way out: a
/// sandboxed command that could open it (`/dev/tty`, its controlling
/// terminal inherited through the tool-runner) could push input into the
/// user's shell with TIOCSTI, read what the user types, or change the
/// terminal's settings. Sandboxed commands run in a session of their own,
/// without a controlling terminal (bubblewrap's `--new-session`, which
/// Codex's Linux sandbox passes).
#[tokio::test]
async fn sandboxed_commands_have_no_controlling_terminal() {
    let (_main, sub) = open_pty();
    let mut env = Env::start_on_terminal(sub).await;
    if !isolated(&env.status) {
        return;
    }
    let script = "if (exec 3<>/dev/tty) 2>/dev/null; then echo tty=open; else echo tty=none; fi; \
                  echo sid=$(cut -d' ' -f6 /proc/self/stat) tty_nr=$(cut -d' ' -f7 /proc/self/stat)";
    for (id, policy) in [
        ("ws", workspace_write()),
        ("ro", mode(SandboxMode::ReadOnly)),
    ] {
        let resp = env.sh(id, script, policy).await;
        let out = output(&resp);
        assert!(out.contains("tty=none"), "{id}: {out}");
        assert!(out.contains("tty_nr=0"), "{id}: {out}");
    }
    let args =
        serde_json::json!({ "cmd": script, "yield_time_ms": 5_000, "tty": true }).to_string();
    let resp = env
        .run("u", 0, "exec_command", &args, workspace_write())
        .await;
    assert!(
        resp.output_preview.contains("tty=none"),
        "{}",
        resp.output_preview
    );
}

/// apply_patch verifies a patch by reading the files it updates — in the
/// tool-runner, unconfined — after checking that none lies in a hidden
/// path. A background command that swaps a file for a symlink to a hidden
/// file between the check and the read had the hidden file's text read,
/// and an update with a move wrote it to a file of the workspace (a pure
/// addition needs no knowledge of the text). The read itself must refuse
/// what the sandbox hides.
#[tokio::test]
async fn a_symlink_swapped_in_during_a_patch_reveals_nothing_hidden() {
    let mut env = Env::start(&["--hide-path", "{base}/outside/token.txt"]).await;
    if !env.status.hidden_paths_enforced {
        assert!(!env.status.detail.is_empty());
        return;
    }
    let token = env.outside.join("token.txt");
    std::fs::write(&token, "t0k3n\n").unwrap();
    // Left running by exec_command: x is a plain file, then a symlink to
    // the hidden token, over and over — for two minutes at most, should
    // the test stop before it closes the session (the tool-runner killed
    // under it does not take its commands along).
    let swapper = format!(
        "exec perl -e 'my $end = time + 120; while (time < $end) {{ \
         open(my $f, \">\", \"x.f\"); print $f \"decoy\\n\"; close($f); \
         rename(\"x.f\", \"x\"); symlink(\"{}\", \"x.l\"); rename(\"x.l\", \"x\"); }}'",
        token.display()
    );
    let args = serde_json::json!({ "cmd": swapper, "yield_time_ms": 250 }).to_string();
    let resp = env
        .run("swapper", 0, "exec_command", &args, workspace_write())
        .await;
    assert!(
        resp.output_preview.contains("Process running"),
        "{}",
        resp.output_preview
    );
    // Hunks after the update widen the windows between the check before
    // the read, the read and the checks of the written paths after it.
    let mut patch =
        String::from("*** Begin Patch\n*** Update File: x\n*** Move to: leak.txt\n@@\n+added\n");
    for i in 0..200 {
        patch.push_str(&format!("*** Add File: pad/{i}.txt\n+pad\n"));
    }
    patch.push_str("*** End Patch");
    let leak = env.cwd.join("leak.txt");
    // Before the fix the text leaked within 20 to 60 attempts here. Each
    // attempt either meets the link at the path check (refused), reads the
    // decoy (applied), or — the race won — meets the link only at the read,
    // which must refuse it.
    let (mut applied, mut refused_at_read) = (0, 0);
    for attempt in 0..300 {
        let resp = env
            .run(
                &format!("p{attempt}"),
                0,
                "apply_patch",
                &patch,
                workspace_write(),
            )
            .await;
        applied += usize::from(resp.success);
        refused_at_read += usize::from(resp.output_preview.contains("sandbox hides"));
        let leaked = std::fs::read_to_string(&leak).unwrap_or_default();
        if leaked.contains("t0k3n") {
            close_session(&mut env).await;
            panic!("attempt {attempt}: {leaked:?}");
        }
    }
    close_session(&mut env).await;
    eprintln!(
        "300 attempts: {applied} applied to the decoy, {refused_at_read} refused at the read"
    );
}

/// Ends the tests' session "s": its exec_command processes are killed.
async fn close_session(env: &mut Env) {
    env.client
        .close_tool_session(keel_proto::v1::CloseToolSessionRequest {
            session_id: "s".into(),
        })
        .await
        .unwrap();
}

/// With the network on (workspace-write with `network_access`), a
/// sandboxed command shares the host's network namespace, loopback
/// included, and reaches the tool-runner's port. It must not get it to run
/// anything (here: under danger-full-access, no sandbox, no approval): the
/// port speaks only mutual TLS and wants the worker's certificate, which is
/// hidden from commands. Tried in plaintext, over TLS without a
/// certificate, and with the worker's certificate files by path.
#[tokio::test]
async fn a_networked_command_cannot_ask_the_tool_runner_for_an_unsandboxed_run() {
    use prost::Message as _;
    let mut env = Env::start(&[]).await;
    if !filesystem_enforced(&env.status) {
        return;
    }
    let escaped = env.outside.join("escaped");
    let request = RunToolRequest {
        session_id: "escape".into(),
        call_id: "escape".into(),
        tool_name: "shell".into(),
        arguments: argv_args(&format!("echo pwned > {}", escaped.display())),
        cwd: env.cwd.display().to_string(),
        sandbox: Some(mode(SandboxMode::DangerFullAccess)),
        ..Default::default()
    };
    // A gRPC message: uncompressed flag, big-endian length, the protobuf.
    let body = request.encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(&body);
    std::fs::write(env.cwd.join("req.bin"), frame).unwrap();
    let tls = env.cwd.parent().unwrap().join("tls");
    let grpc = "-s -o /dev/null -H 'content-type: application/grpc' -H 'te: trailers' --data-binary @req.bin";
    let path = "keel.v1.ToolService/RunTool";
    let addr = &env.addr;
    let script = format!(
        "curl {grpc} --http2-prior-knowledge http://{addr}/{path}; echo plain=$?; \
         curl {grpc} --http2 -k https://{addr}/{path}; echo nocert=$?; \
         curl {grpc} --http2 -k --cert {cert} --key {key} https://{addr}/{path}; echo cert=$?; \
         cat {key} >/dev/null 2>&1; echo read=$?",
        cert = tls.join("worker.pem").display(),
        key = tls.join("worker.key").display(),
    );
    let with_network = SandboxPolicy {
        network_access: true,
        ..workspace_write()
    };
    let resp = env.sh("net", &script, with_network).await;
    let out = output(&resp);
    eprintln!("{out}");
    assert!(
        !escaped.exists(),
        "a sandboxed command ran an unsandboxed one through the tool-runner's own API: {out}"
    );
    // Each attempt failed (a curl error, not an HTTP answer), and the key
    // was not readable.
    for attempt in ["plain", "nocert", "cert", "read"] {
        assert!(
            out.contains(&format!("{attempt}=")) && !out.contains(&format!("{attempt}=0")),
            "{attempt}: {out}"
        );
    }
}

/// Descriptors the tool-runner inherited (from whatever started it) do not
/// reach sandboxed commands: one open on a hidden directory would walk
/// past its mask (`/proc/self/fd/N/…` leads to the directory itself, and
/// Landlock lets everything be read).
#[tokio::test]
async fn inherited_descriptors_do_not_reach_sandboxed_commands() {
    let mut env = Env::start_inheriting(&["--hide-path", "{base}/private"], |base| {
        let private = base.join("private");
        std::fs::create_dir(&private).unwrap();
        std::fs::write(private.join("secret"), "s3cr3t\n").unwrap();
        std::fs::File::open(&private).unwrap()
    })
    .await;
    if !env.status.hidden_paths_enforced {
        assert!(!env.status.detail.is_empty());
        return;
    }
    let script =
        format!("ls /proc/self/fd; cat /proc/self/fd/{INHERITED_FD}/secret 2>/dev/null; echo end");
    for (id, policy) in [
        ("ws", workspace_write()),
        ("ro", mode(SandboxMode::ReadOnly)),
    ] {
        let resp = env.sh(id, &script, policy).await;
        let out = output(&resp);
        assert!(out.contains("end"), "{id}: {out}");
        assert!(!out.contains("s3cr3t"), "{id}: {out}");
        // stdin, stdout, stderr and the `ls`'s own directory: nothing else.
        let fds: Vec<&str> = out.lines().take_while(|line| *line != "end").collect();
        assert_eq!(fds, ["0", "1", "2", "3"], "{id}: {out}");
    }
}

/// The cwd's `.codex` is protected "even when missing, so the agent cannot
/// create its own config" (WritableRoot::new): apply_patch refuses to
/// create it, but the read-only binds cover only paths that exist, so a
/// sandboxed command creates it (Codex's project config: approval policy,
/// sandbox mode, MCP servers that run commands, for the next Codex or Keel
/// session that honours project config).
#[tokio::test]
async fn a_missing_protected_path_cannot_be_created_by_a_command() {
    let mut env = Env::start(&[]).await;
    if !filesystem_enforced(&env.status) {
        return;
    }
    assert!(!env.cwd.join(".codex").exists());
    let resp = env
        .sh(
            "codex",
            "mkdir .codex && echo 'approval_policy = \"never\"' > .codex/config.toml",
            workspace_write(),
        )
        .await;
    assert!(
        !env.cwd.join(".codex/config.toml").exists(),
        "created: {}",
        output(&resp)
    );
    // It is there, empty, so that it could be bound read-only.
    assert!(env.cwd.join(".codex").is_dir());
    assert_eq!(
        std::fs::read_dir(env.cwd.join(".codex")).unwrap().count(),
        0
    );
}

/// Codex's home is hidden — but only something that exists can be masked.
/// Were it missing inside a writable root, a command could create it and
/// plant `config.toml` (a base URL of its choosing, for the model-proxy and
/// its key). The tool-runner creates it, empty and private, at startup.
#[tokio::test]
async fn a_missing_codex_home_cannot_be_planted() {
    let mut env = Env::start_with(&[], &[("CODEX_HOME", "{cwd}/codex-home")]).await;
    if !env.status.hidden_paths_enforced {
        return;
    }
    let home = env.cwd.join("codex-home");
    assert!(home.is_dir(), "not created at startup");
    let resp = env
        .sh(
            "plant",
            "mkdir -p codex-home; echo 'openai_base_url = \"http://evil\"' > codex-home/config.toml; echo end",
            workspace_write(),
        )
        .await;
    assert!(output(&resp).contains("end"), "{}", output(&resp));
    assert!(
        !home.join("config.toml").exists(),
        "planted: {}",
        output(&resp)
    );
}

/// With the network off, every socket call but `socket(AF_UNIX)` is
/// refused — except `sendmsg`, which programs need on their socketpairs
/// and which seccomp cannot tell apart from a datagram sent to any named
/// socket of the host. Abstract sockets (no file, no permission check:
/// containerd's shims, D-Bus, X11 listen there) are out of a sandboxed
/// command's reach all the same (Landlock's abstract-socket scope).
#[tokio::test]
async fn the_network_off_reaches_no_abstract_socket() {
    use std::os::linux::net::SocketAddrExt as _;
    let mut env = Env::start(&[]).await;
    if !env.status.network_enforced || !filesystem_enforced(&env.status) {
        return;
    }
    let Some(python) = ["/usr/bin/python3", "/usr/local/bin/python3", "/bin/python3"]
        .into_iter()
        .find(|path| std::path::Path::new(path).exists())
    else {
        eprintln!("skipped: no python3 to send a datagram with");
        return;
    };
    let name = format!("keel-sandbox-test-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let listener = std::os::unix::net::UnixDatagram::bind_addr(&addr).unwrap();
    listener.set_nonblocking(true).unwrap();
    let script = format!(
        "{python} -c 'import socket\n\
         c = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
         try:\n    c.sendmsg([b\"escaped\"], [], 0, \"\\0{name}\"); print(\"sent\")\n\
         except OSError as e:\n    print(\"refused\", e)'"
    );
    let resp = env.sh("abstract", &script, workspace_write()).await;
    let out = output(&resp);
    assert!(out.contains("refused"), "{out}");
    let mut buf = [0u8; 64];
    assert!(
        listener.recv(&mut buf).is_err(),
        "a datagram arrived: {out}"
    );
}

/// System V IPC objects (message queues, semaphores, shared memory) belong
/// to an IPC namespace, not to the filesystem: in the host's, a sandboxed
/// command could read and write those of every process of its user
/// (messages consumed, shared memory attached). Sandboxed commands get an
/// IPC namespace of their own (bubblewrap's `--unshare-ipc`).
#[tokio::test]
async fn host_ipc_objects_are_out_of_reach() {
    let mut env = Env::start(&[]).await;
    if !isolated(&env.status) {
        return;
    }
    let Ok(made) = std::process::Command::new("ipcmk")
        .args(["-M", "4096", "-p", "0600"])
        .output()
    else {
        eprintln!("skipped: ipcmk is not available");
        return;
    };
    let text = String::from_utf8_lossy(&made.stdout).to_string();
    let id: String = text.chars().filter(char::is_ascii_digit).collect();
    assert!(made.status.success() && !id.is_empty(), "{text}");
    struct Remove(String);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ipcrm")
                .args(["-m", &self.0])
                .status();
        }
    }
    let _remove = Remove(id.clone());
    // The host sees it.
    let host = std::process::Command::new("ipcs")
        .args(["-m", "-i", &id])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&host.stdout).contains(&format!("shmid={id}")),
        "{host:?}"
    );
    let script = format!("ipcs -m -i {id} 2>&1; echo end");
    for (id_, policy) in [
        ("ws", workspace_write()),
        ("ro", mode(SandboxMode::ReadOnly)),
    ] {
        let resp = env.sh(id_, &script, policy).await;
        let out = output(&resp);
        assert!(out.contains("end"), "{id_}: {out}");
        assert!(!out.contains(&format!("shmid={id}")), "{id_}: {out}");
    }
}

/// Files a sandboxed command writes stay on the host after it: a
/// set-user-ID (or set-group-ID) executable it made there would run with
/// the ids of the command's user — root, or the user Keel runs as — for
/// any local user who starts it. Ownership alone lets a process set those
/// bits on its own files (no capability is involved), so the sandbox
/// refuses every call that would set them.
#[tokio::test]
async fn sandboxed_commands_make_no_set_id_files() {
    use std::os::unix::fs::PermissionsExt as _;
    let mut env = Env::start(&[]).await;
    if !filesystem_enforced(&env.status) {
        return;
    }
    let python = ["/usr/bin/python3", "/usr/local/bin/python3", "/bin/python3"]
        .into_iter()
        .find(|path| std::path::Path::new(path).exists());
    let mut script = String::from(
        "cp /bin/sh suid; chmod u+s suid; chmod 4755 suid; \
         cp /bin/sh sgid; chmod g+s sgid; \
         cp /bin/sh mode; chmod 6755 mode; ",
    );
    if let Some(python) = python {
        script.push_str(&format!(
            "{python} -c 'import os\nfor name, flags in ((\"created\", os.O_CREAT | os.O_WRONLY), (\"node\", None)):\n    try:\n        if flags is None:\n            os.mknod(name, 0o104755)\n        else:\n            os.close(os.open(name, flags, 0o4755))\n    except OSError as e:\n        print(name, e)'; "
        ));
    }
    script.push_str("ls -l; echo end");
    let resp = env.sh("setid", &script, workspace_write()).await;
    let out = output(&resp);
    assert!(out.contains("end"), "{out}");
    for name in ["suid", "sgid", "mode", "created", "node"] {
        let path = env.cwd.join(name);
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        assert_eq!(
            meta.permissions().mode() & 0o6000,
            0,
            "{name} has a set-id bit: {out}"
        );
    }
    // Ordinary modes still work.
    let resp = env
        .sh(
            "modes",
            "touch f && chmod 755 f && chmod +x f && echo ok",
            workspace_write(),
        )
        .await;
    assert!(output(&resp).contains("ok"), "{}", resp.output_preview);
}
