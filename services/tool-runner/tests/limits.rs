//! Resource limits (`--rlimit-*`) as the kernel enforces them: the real
//! binary over gRPC runs commands under danger-full-access (started through
//! the helper only because a limit is set) and workspace-write (confined
//! and limited), and a command that hits a limit ends the ordinary way — a
//! signal's exit code, no timeout, no sandbox denial.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::wait_for_file;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use keel_proto::v1::tool_service_client::ToolServiceClient;
use keel_proto::v1::{RunToolRequest, RunToolResponse, SandboxMode, SandboxPolicy};
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tonic::transport::Channel;

/// 128 + SIGXFSZ and 128 + SIGXCPU: what a shell reports for a process the
/// file-size and CPU limits killed.
const XFSZ_EXIT: i32 = 128 + libc::SIGXFSZ;
const XCPU_EXIT: i32 = 128 + libc::SIGXCPU;
/// Configuration that must not leak in from the environment running the
/// tests.
const CLEARED_VARS: [&str; 11] = [
    "KEEL_TOOL_RUNNER_STATE_DIR",
    "KEEL_DEFAULT_SANDBOX",
    "KEEL_REQUIRE_SANDBOX",
    "KEEL_INSECURE_PARTIAL_SANDBOX",
    "KEEL_HIDE_PATHS",
    "KEEL_WORKSPACE_ROOTS",
    "KEEL_RLIMIT_CPU_SECS",
    "KEEL_RLIMIT_AS_MB",
    "KEEL_RLIMIT_NOFILE",
    "KEEL_RLIMIT_NPROC",
    "KEEL_RLIMIT_FSIZE_MB",
];

/// A tool-runner whose session cwd is `base/cwd`.
struct Env {
    _tmp: tempfile::TempDir,
    cwd: PathBuf,
    _child: Child,
    client: ToolServiceClient<Channel>,
}

impl Env {
    async fn start(args: &[&str], vars: &[(&str, &str)]) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(tmp.path()).unwrap();
        let cwd = base.join("cwd");
        std::fs::create_dir_all(&cwd).unwrap();
        let addr_file = base.join("addr");
        let mut command = Command::new(env!("CARGO_BIN_EXE_keel-tool-runner"));
        command
            .arg("--addr-file")
            .arg(&addr_file)
            .arg("--blob-url")
            .arg(format!("file://{}", base.join("blobs").display()))
            .arg("--default-cwd")
            .arg(&cwd)
            .arg("--workspace-root")
            .arg(&base)
            // What is limited here does not depend on how calls arrive.
            .arg("--insecure-plaintext")
            .args(args);
        for var in CLEARED_VARS {
            command.env_remove(var);
        }
        let child = command
            .envs(vars.iter().copied())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let addr = wait_for_file(&addr_file, Duration::from_secs(30)).await;
        let client = ToolServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        Self {
            _tmp: tmp,
            cwd,
            _child: child,
            client,
        }
    }

    /// Runs `script` with `sh -c` through the `shell` tool under `sandbox`.
    async fn sh(&mut self, call_id: &str, script: &str, sandbox: SandboxPolicy) -> RunToolResponse {
        self.shell(call_id, "sh", script, sandbox).await
    }

    /// Runs `script` with `bash -c` (whose `ulimit` knows every limit).
    async fn bash(
        &mut self,
        call_id: &str,
        script: &str,
        sandbox: SandboxPolicy,
    ) -> RunToolResponse {
        self.shell(call_id, "bash", script, sandbox).await
    }

    async fn shell(
        &mut self,
        call_id: &str,
        shell: &str,
        script: &str,
        sandbox: SandboxPolicy,
    ) -> RunToolResponse {
        let arguments =
            serde_json::json!({ "command": [shell, "-c", script], "timeout_ms": 30_000 })
                .to_string();
        self.run(call_id, "shell", &arguments, sandbox).await
    }

    async fn run(
        &mut self,
        call_id: &str,
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
                custom: false,
                sandbox: Some(sandbox),
                attempt: 0,
                call_item_digest: String::new(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
    }
}

/// The two ways commands start: directly (here, through the helper for
/// the limits alone) and confined.
fn policies() -> [(&'static str, SandboxPolicy); 2] {
    [
        (
            "danger",
            SandboxPolicy {
                mode: SandboxMode::DangerFullAccess.into(),
                ..Default::default()
            },
        ),
        (
            "ws",
            SandboxPolicy {
                mode: SandboxMode::WorkspaceWrite.into(),
                exclude_slash_tmp: true,
                exclude_tmpdir_env_var: true,
                ..Default::default()
            },
        ),
    ]
}

fn exit_code(resp: &RunToolResponse) -> i32 {
    resp.command.as_ref().expect("a command record").exit_code
}

/// The command ran and failed on its own: not a timeout, not a denial.
fn assert_plain_failure(resp: &RunToolResponse, code: i32, what: &str) {
    assert!(!resp.success, "{what} succeeded: {}", resp.output_preview);
    assert_eq!(exit_code(resp), code, "{what}: {}", resp.output_preview);
    assert!(
        !resp.sandbox_denied,
        "{what} reported as a sandbox denial: {}",
        resp.output_preview
    );
    assert!(
        !resp.output_preview.contains("timed out"),
        "{what} timed out: {}",
        resp.output_preview
    );
}

#[tokio::test]
async fn the_file_size_limit_stops_a_large_write_but_not_a_small_one() {
    let mut env = Env::start(&["--rlimit-fsize-mb", "1"], &[]).await;
    for (name, policy) in policies() {
        let resp = env
            .sh(
                &format!("{name}-small"),
                "head -c 1000 /dev/zero > small",
                policy.clone(),
            )
            .await;
        assert!(resp.success, "{name}: {}", resp.output_preview);
        assert_eq!(
            std::fs::metadata(env.cwd.join("small")).unwrap().len(),
            1000
        );
        std::fs::remove_file(env.cwd.join("small")).unwrap();

        // The write is cut at the limit and the writer killed by SIGXFSZ.
        let resp = env
            .sh(
                &format!("{name}-big"),
                "head -c 2000000 /dev/zero > big",
                policy.clone(),
            )
            .await;
        assert_plain_failure(&resp, XFSZ_EXIT, name);
        assert_eq!(
            std::fs::metadata(env.cwd.join("big")).unwrap().len(),
            1024 * 1024,
            "{name}"
        );
        std::fs::remove_file(env.cwd.join("big")).unwrap();

        // A shell that outlives the writer says what happened.
        let resp = env
            .sh(
                &format!("{name}-told"),
                "head -c 2000000 /dev/zero > big; exit $?",
                policy,
            )
            .await;
        assert_plain_failure(&resp, XFSZ_EXIT, name);
        assert!(
            resp.output_preview.contains("File size limit exceeded"),
            "{name}: {}",
            resp.output_preview
        );
        std::fs::remove_file(env.cwd.join("big")).unwrap();
    }
}

#[tokio::test]
async fn the_cpu_limit_kills_a_busy_loop() {
    let mut env = Env::start(&["--rlimit-cpu-secs", "1"], &[]).await;
    for (name, policy) in policies() {
        let resp = env
            .sh(&format!("{name}-ok"), "echo fine", policy.clone())
            .await;
        assert!(resp.success, "{name}: {}", resp.output_preview);

        let started = Instant::now();
        let resp = env
            .sh(&format!("{name}-busy"), "while :; do :; done", policy)
            .await;
        // SIGXCPU after one CPU second, far from the 30 s timeout.
        assert_plain_failure(&resp, XCPU_EXIT, name);
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{name}: took {:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn limits_from_the_environment_reach_every_command() {
    let mut env = Env::start(
        &[],
        &[
            ("KEEL_RLIMIT_NOFILE", "64"),
            ("KEEL_RLIMIT_AS_MB", "4096"),
            ("KEEL_RLIMIT_NPROC", "100000"),
            ("KEEL_RLIMIT_CPU_SECS", "600"),
        ],
    )
    .await;
    for (name, policy) in policies() {
        // Soft and hard limits both, so the command cannot raise them; the
        // CPU hard limit is a second above (SIGXCPU, then SIGKILL); core
        // dumps stay off.
        let resp = env
            .bash(
                name,
                "echo $(ulimit -Sn) $(ulimit -Hn) $(ulimit -v) $(ulimit -u) $(ulimit -St) $(ulimit -Ht) $(ulimit -c) $(ulimit -f)",
                policy.clone(),
            )
            .await;
        assert!(resp.success, "{name}: {}", resp.output_preview);
        let line = format!(
            "64 64 {} {} 600 601 0 unlimited",
            4096 * 1024,
            nproc_expected()
        );
        assert!(
            resp.output_preview.contains(&line),
            "{name}: {}",
            resp.output_preview
        );
        // Raising a limit again fails.
        let resp = env
            .bash(&format!("{name}-raise"), "ulimit -n 65", policy.clone())
            .await;
        assert!(!resp.success, "{name}: {}", resp.output_preview);

        // exec_command starts through the same place.
        let arguments = serde_json::json!({
            "cmd": "echo nofile=$(ulimit -n)",
            "shell": "/bin/sh",
            "login": false,
            "yield_time_ms": 5_000,
        })
        .to_string();
        let resp = env
            .run(&format!("{name}-exec"), "exec_command", &arguments, policy)
            .await;
        assert!(
            resp.output_preview.contains("nofile=64"),
            "{name}: {}",
            resp.output_preview
        );
    }
}

/// What `KEEL_RLIMIT_NPROC=100000` gives: that, or the tool-runner's own
/// hard limit where it is lower (a limit above it cannot be set).
fn nproc_expected() -> String {
    let out = std::process::Command::new("bash")
        .args(["-c", "ulimit -Hu"])
        .output()
        .unwrap();
    match String::from_utf8_lossy(&out.stdout).trim().parse::<u64>() {
        Ok(hard) => hard.min(100_000).to_string(),
        Err(_) => "100000".to_string(),
    }
}

#[tokio::test]
async fn without_limit_flags_commands_keep_the_inherited_limits() {
    let mut env = Env::start(&[], &[]).await;
    let unlimited = |resource: &str| {
        let status = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!("ulimit {resource}"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&status.stdout).trim().to_string()
    };
    let expected = format!("{} {} 0", unlimited("-f"), unlimited("-n"));
    for (name, policy) in policies() {
        let resp = env
            .bash(name, "echo $(ulimit -f) $(ulimit -n) $(ulimit -c)", policy)
            .await;
        assert!(resp.success, "{name}: {}", resp.output_preview);
        assert!(
            resp.output_preview.contains(&expected),
            "{name}: expected {expected}: {}",
            resp.output_preview
        );
    }
}
