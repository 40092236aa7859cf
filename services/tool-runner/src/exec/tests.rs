use std::path::{Path, PathBuf};

use super::*;

fn executor() -> Executor {
    Executor::with_inherited_env(std::env::vars_os())
}

fn spec(argv: &[&str], cwd: &Path) -> ExecSpec {
    ExecSpec {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        cwd: cwd.to_path_buf(),
        timeout: DEFAULT_TIMEOUT,
        env: HashMap::new(),
        sandbox: None,
    }
}

fn sh(script: &str) -> ExecSpec {
    spec(&["sh", "-c", script], &std::env::temp_dir())
}

/// Whether `pid` is gone or a zombie (dead, awaiting its reaper). A killed
/// orphan is reparented and reaped by someone else, possibly later.
fn is_dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

/// SIGKILL is delivered asynchronously: wait (bounded) for the kernel to act.
async fn wait_dead(pid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if is_dead(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    is_dead(pid)
}

fn parse_pid(line: &str) -> i32 {
    line.trim()
        .parse()
        .unwrap_or_else(|e| panic!("not a pid: {line:?}: {e}"))
}

#[tokio::test]
async fn captures_stdout_stderr_and_exit_code() {
    let out = executor()
        .run(&sh("echo out; echo err >&2; exit 3"))
        .await
        .unwrap();
    assert_eq!(out.exit_code, 3);
    assert_eq!(out.stdout, "out\n");
    assert_eq!(out.stderr, "err\n");
    assert!(!out.timed_out);
    // Both streams, each in its own order.
    assert_eq!(out.aggregated.len(), 8);
    assert!(out.aggregated.contains("out\n") && out.aggregated.contains("err\n"));
}

#[tokio::test]
async fn aggregated_output_follows_read_order() {
    // The command's own sleeps space the writes far apart, so each is read
    // before the next one is written.
    let out = executor()
        .run(&sh(
            "printf 1; sleep 0.3; printf 2 >&2; sleep 0.3; printf 3",
        ))
        .await
        .unwrap();
    assert_eq!(out.aggregated, "123");
    assert_eq!(out.stdout, "13");
    assert_eq!(out.stderr, "2");
}

#[tokio::test]
async fn signal_exit_codes_are_128_plus_n() {
    let out = executor().run(&sh("kill -TERM $$")).await.unwrap();
    assert_eq!(out.exit_code, 128 + 15);
    let out = executor().run(&sh("kill -KILL $$")).await.unwrap();
    assert_eq!(out.exit_code, 128 + 9);
    assert!(!out.timed_out);
}

#[tokio::test]
async fn runs_in_the_given_workdir_with_stdin_closed() {
    let dir = tempfile::tempdir().unwrap();
    let canonical = dir.path().canonicalize().unwrap();
    let out = executor()
        .run(&spec(&["sh", "-c", "pwd; cat; echo done"], &canonical))
        .await
        .unwrap();
    // `cat` reads /dev/null and ends at once rather than hanging.
    assert_eq!(out.stdout, format!("{}\ndone\n", canonical.display()));
}

#[tokio::test]
async fn timeout_kills_the_whole_group() {
    let mut spec = sh("sleep 30 & echo $!; sleep 30");
    spec.timeout = Duration::from_millis(1000);
    let out = executor().run(&spec).await.unwrap();
    assert!(out.timed_out);
    assert_eq!(out.exit_code, TIMEOUT_EXIT_CODE);
    assert!(out.duration < Duration::from_secs(10), "{:?}", out.duration);
    let (first, rest) = out.aggregated.split_once('\n').unwrap();
    let ms: u128 = first
        .strip_prefix("command timed out after ")
        .and_then(|s| s.strip_suffix(" milliseconds"))
        .unwrap_or_else(|| panic!("bad timeout line {first:?}"))
        .parse()
        .unwrap();
    assert!(ms >= 1000, "{ms}");
    // The stream itself does not carry the timeout line.
    assert_eq!(out.stdout, rest);
    // The pipes closed, so every writer, the background sleep included, has
    // exited already.
    let grandchild = parse_pid(rest);
    assert!(
        is_dead(grandchild),
        "background sleep {grandchild} survived"
    );
}

#[tokio::test]
async fn dropping_the_run_kills_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let script = format!(
        "sleep 30 & echo $! > {0}.tmp && mv {0}.tmp {0}; sleep 30",
        pid_file.display()
    );
    let executor = executor();
    let spec = sh(&script);
    // Boxed so that `drop` really drops the future (a `pin!`ned one would
    // live on until the end of the scope).
    let mut run = Box::pin(executor.run(&spec));
    let pid = tokio::select! {
        res = &mut run => panic!("finished before cancellation: {res:?}"),
        pid = wait_for_file(&pid_file) => parse_pid(&pid),
    };
    assert!(!is_dead(pid));
    // What tonic does when the client cancels the RPC.
    drop(run);
    assert!(
        wait_dead(pid).await,
        "background sleep {pid} survived the drop"
    );
}

async fn wait_for_file(path: &PathBuf) -> String {
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn leftover_background_processes_are_killed_after_exit() {
    // Detached from the pipes: the run ends with the shell, then its
    // background job is killed with the group.
    let out = executor()
        .run(&sh("sleep 30 >/dev/null 2>&1 & echo $!"))
        .await
        .unwrap();
    assert_eq!(out.exit_code, 0);
    let pid = parse_pid(&out.stdout);
    assert!(wait_dead(pid).await, "background sleep {pid} survived");
}

#[tokio::test]
async fn a_background_job_holding_the_pipe_does_not_hang_the_call() {
    let out = executor()
        .run(&sh("sleep 30 & echo started"))
        .await
        .unwrap();
    assert_eq!(out.exit_code, 0);
    assert_eq!(out.stdout, "started\n");
    assert!(out.duration < Duration::from_secs(10), "{:?}", out.duration);
}

#[tokio::test]
async fn secrets_are_not_inherited_but_overrides_apply() {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let executor = Executor::with_inherited_env([
        (OsString::from("PATH"), path),
        (
            OsString::from("OPENAI_API_KEY"),
            OsString::from("sk-secret"),
        ),
        (OsString::from("GITHUB_TOKEN"), OsString::from("ghp-secret")),
        (OsString::from("KEEP_ME"), OsString::from("visible")),
    ]);
    let mut spec = spec(&["env"], &std::env::temp_dir());
    spec.env.insert("EXTRA".into(), "added".into());
    spec.env.insert("KEEP_ME".into(), "overridden".into());
    let out = executor.run(&spec).await.unwrap();
    assert!(!out.stdout.contains("secret"), "{}", out.stdout);
    assert!(out.stdout.contains("EXTRA=added\n"), "{}", out.stdout);
    assert!(
        out.stdout.contains("KEEP_ME=overridden\n"),
        "{}",
        out.stdout
    );
}

#[tokio::test]
async fn each_stream_is_capped_and_fully_drained() {
    // 3 MiB to stdout, 10 bytes to stderr afterwards: the writer must not block
    // on a full pipe once the cap is reached.
    let out = executor()
        .run(&sh("head -c 3145728 /dev/zero; printf 0123456789 >&2"))
        .await
        .unwrap();
    assert_eq!(out.exit_code, 0);
    assert_eq!(out.stdout.len(), STREAM_CAP_BYTES);
    assert_eq!(out.stderr, "0123456789");
    assert_eq!(out.aggregated.len(), STREAM_CAP_BYTES + 10);
}

#[tokio::test]
async fn invalid_utf8_is_decoded_lossily() {
    let out = executor().run(&sh(r"printf '\377ok'")).await.unwrap();
    assert_eq!(out.stdout, "\u{FFFD}ok");
}

#[tokio::test]
async fn spawn_failures_are_typed() {
    let err = executor()
        .run(&spec(
            &["definitely-not-a-program-xyz"],
            &std::env::temp_dir(),
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ExecError::Spawn { program, source }
            if program == "definitely-not-a-program-xyz"
                && source.kind() == std::io::ErrorKind::NotFound),
        "{err:?}"
    );
    let err = executor()
        .run(&spec(&["true"], Path::new("/nonexistent/dir")))
        .await
        .unwrap_err();
    assert!(matches!(err, ExecError::Spawn { .. }), "{err:?}");
    let err = executor()
        .run(&spec(&[], Path::new("/")))
        .await
        .unwrap_err();
    assert!(matches!(err, ExecError::EmptyArgv), "{err:?}");
    let mut bad_env = spec(&["true"], Path::new("/"));
    bad_env.env.insert("A=B".into(), "x".into());
    let err = executor().run(&bad_env).await.unwrap_err();
    assert!(matches!(err, ExecError::InvalidEnvName(_)), "{err:?}");
}

/// Every group has a process record while it runs, and none after.
#[tokio::test]
async fn groups_are_recorded_while_they_run() {
    let dir = tempfile::tempdir().unwrap();
    let records = orphans::ProcessRecords::new(dir.path());
    let executor = executor().with_process_records(records);
    // The record is written just after the spawn, so the command may run
    // before it exists: it waits (bounded) for it.
    let script = format!(
        "i=0; while [ -z \"$(ls {dir})\" ] && [ $i -lt 500 ]; do sleep 0.01; i=$((i+1)); done; echo $$; ls {dir}",
        dir = dir.path().display()
    );
    let out = executor.run(&sh(&script)).await.unwrap();
    let (pid, listed) = out.stdout.split_once('\n').unwrap();
    assert!(
        listed.starts_with(&format!("{pid}-")) && listed.trim_end().ends_with(".process"),
        "{}",
        out.stdout
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    let argv = vec!["sleep".to_string(), "30".to_string()];
    let process =
        unified::LongRunningProcess::start(&executor, argv, &std::env::temp_dir(), false, None)
            .unwrap();
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    drop(process);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn a_requested_timeout_is_capped() {
    assert_eq!(super::timeout_for(None), DEFAULT_TIMEOUT);
    assert_eq!(super::timeout_for(Some(1500)), Duration::from_millis(1500));
    assert_eq!(super::timeout_for(Some(u64::MAX)), super::MAX_TIMEOUT);
}
