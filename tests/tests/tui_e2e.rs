//! The `keel` TUI driven as a person would, through tmux, against a real
//! stack whose model is the scripted fake: a streamed answer, an exec
//! approval answered with `y`, Esc interrupting a long command, `/resume`
//! switching to another session, and a session-api restart in the middle
//! of a turn survived without a line shown twice or missing.
//!
//! Each test runs `keel` in a tmux server of its own (`tmux -L <unique
//! socket> -f /dev/null`), in a 100x30 window with TERM=xterm-256color,
//! types with `send-keys` and reads the screen with `capture-pane -p`,
//! polling until what it waits for shows (with a deadline; no fixed
//! sleeps).
//!
//! Snapshots: the screens at the end of each step are compared with
//! tests/snapshots/tui/<name>.txt after normalising what changes from run
//! to run (session ids, temporary directories, durations, elapsed
//! seconds, spinner frames, ages). To write them anew after a deliberate
//! change of the TUI, run
//!
//! ```text
//! KEEL_UPDATE_SNAPSHOTS=1 cargo test -p keel-e2e --test tui_e2e
//! ```
//!
//! and review the diff. Needs the workspace binaries (`cargo build
//! --workspace --bins`), the Temporal CLI and tmux.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use keel_test_support::fake_model::{FakeModel, Scripted, sse};
use keel_test_support::stack::{Stack, StackOptions, bin};

const KEY: &str = "sk-keel-tui-e2e-key";
const WIDTH: u16 = 100;
const HEIGHT: u16 = 30;
/// How long anything may take to show on the screen.
const SCREEN_TIMEOUT: Duration = Duration::from_secs(90);
/// The argv `shell` tool, as cli_e2e.rs scripts it.
const ARGV_SHELL_CONFIG: &str = "[features]\nunified_exec = false\n";

/// A directory for `keel`'s state, workspace and CODEX_HOME.
struct Env {
    keel: PathBuf,
    state: tempfile::TempDir,
    workspace: tempfile::TempDir,
    codex_home: tempfile::TempDir,
    addr: String,
    token: String,
    temporal_address: String,
    model_url: String,
}

impl Env {
    fn on(stack: &Stack, fake: &FakeModel) -> anyhow::Result<Env> {
        let codex_home = tempfile::tempdir()?;
        std::fs::write(codex_home.path().join("config.toml"), ARGV_SHELL_CONFIG)?;
        Ok(Env {
            keel: bin("keel")?,
            state: tempfile::tempdir()?,
            workspace: tempfile::tempdir()?,
            codex_home,
            addr: stack.session_api.clone(),
            token: stack.token.clone(),
            temporal_address: stack.temporal_address.clone(),
            model_url: fake.base_url(),
        })
    }

    /// The environment `keel` runs with (hermetic: never the developer's
    /// ~/.codex or local stack).
    fn vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("KEEL_TOKEN", self.token.clone()),
            ("TEMPORAL_ADDRESS", self.temporal_address.clone()),
            ("OPENAI_BASE_URL", self.model_url.clone()),
            ("OPENAI_API_KEY", KEY.to_string()),
            ("KEEL_MODEL", "test-model".to_string()),
            ("CODEX_HOME", self.codex_home.path().display().to_string()),
            (
                "KEEL_WORKSPACE_ROOTS",
                self.workspace.path().display().to_string(),
            ),
            ("TERM", "xterm-256color".to_string()),
            ("LC_ALL", "C.UTF-8".to_string()),
        ]
    }

    fn args(&self) -> Vec<String> {
        vec![
            "--state-dir".to_string(),
            self.state.path().display().to_string(),
            "--addr".to_string(),
            self.addr.clone(),
        ]
    }

    /// `keel ARGS` to completion, outside tmux.
    fn run(&self, args: &[&str]) -> anyhow::Result<Output> {
        let mut cmd = Command::new(&self.keel);
        cmd.args(self.args())
            .args(args)
            .current_dir(self.workspace.path())
            .stdin(std::process::Stdio::null())
            .env("NO_COLOR", "1")
            .env_remove("KEEL_ADDR")
            .env_remove("KEEL_STATE_DIR")
            .env_remove("KEEL_TOKEN_FILE")
            .env_remove("KEEL_CONFIG");
        for (k, v) in self.vars() {
            cmd.env(k, v);
        }
        let out = cmd.output()?;
        ensure!(
            out.status.success(),
            "keel {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(out)
    }
}

/// Single quotes for sh.
fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// `keel` running in a tmux server of its own; the server is killed when
/// dropped.
struct Tui {
    socket: String,
}

impl Tui {
    fn start(env: &Env, args: &[&str]) -> anyhow::Result<Tui> {
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let socket = format!(
            "keel-tui-e2e-{}-{}-{}",
            std::process::id(),
            uuid_like(env.state.path()),
            STARTED.fetch_add(1, Ordering::Relaxed)
        );
        let mut words = vec!["env".to_string()];
        for var in [
            "KEEL_ADDR",
            "KEEL_STATE_DIR",
            "KEEL_TOKEN_FILE",
            "KEEL_CONFIG",
            "NO_COLOR",
        ] {
            words.push("-u".to_string());
            words.push(var.to_string());
        }
        for (k, v) in env.vars() {
            words.push(quote(&format!("{k}={v}")));
        }
        words.push(quote(&env.keel.display().to_string()));
        words.extend(env.args().iter().map(|a| quote(a)));
        words.extend(args.iter().map(|a| quote(a)));
        // The shell stays after keel so its exit status can be read.
        let script = format!(
            "sh -c {}",
            quote(&format!(
                "{} 2>{}; echo \"KEEL EXITED $?\"; sleep 600",
                words.join(" "),
                quote(&env.state.path().join("tui-stderr").display().to_string())
            ))
        );
        let tui = Tui { socket };
        tui.tmux(&[
            "new-session",
            "-d",
            "-s",
            "keel",
            "-x",
            &WIDTH.to_string(),
            "-y",
            &HEIGHT.to_string(),
            "-c",
            &env.workspace.path().display().to_string(),
            &script,
        ])?;
        tui.tmux(&["set-option", "-g", "status", "off"])?;
        Ok(tui)
    }

    fn tmux(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new("tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .env("TERM", "xterm-256color")
            .env("LC_ALL", "C.UTF-8")
            .output()
            .context("cannot run tmux")?;
        ensure!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Types `text` literally.
    fn type_text(&self, text: &str) -> anyhow::Result<()> {
        self.tmux(&["send-keys", "-t", "keel", "-l", text])
            .map(|_| ())
    }

    /// Presses keys by tmux's names (`Enter`, `Escape`, `C-c`).
    fn press(&self, key: &str) -> anyhow::Result<()> {
        self.tmux(&["send-keys", "-t", "keel", key]).map(|_| ())
    }

    /// The screen as text, trailing blanks removed.
    fn screen(&self) -> anyhow::Result<String> {
        let text = self.tmux(&["capture-pane", "-p", "-t", "keel"])?;
        let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
        let end = lines
            .iter()
            .rposition(|l| !l.is_empty())
            .map_or(0, |i| i + 1);
        Ok(lines[..end].join("\n") + "\n")
    }

    /// Polls the screen until `ready` holds; returns that screen.
    fn wait(&self, what: &str, ready: impl Fn(&str) -> bool) -> anyhow::Result<String> {
        let deadline = Instant::now() + SCREEN_TIMEOUT;
        loop {
            let screen = self.screen()?;
            if ready(&screen) {
                return Ok(screen);
            }
            if Instant::now() > deadline {
                bail!("timed out waiting for {what}; the screen:\n{screen}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_for_text(&self, text: &str) -> anyhow::Result<String> {
        self.wait(&format!("{text:?}"), |s| s.contains(text))
    }

    /// Waits until the turn ends: no spinner, nothing asked.
    fn wait_idle(&self) -> anyhow::Result<String> {
        self.wait("the turn to end", |s| {
            !s.contains("Esc to interrupt") && !s.contains("waiting for your answer")
        })
    }

    /// Types a line and sends it.
    fn send(&self, text: &str) -> anyhow::Result<()> {
        self.type_text(text)?;
        self.press("Enter")
    }
}

impl Drop for Tui {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
    }
}

/// A short token unique to this directory.
fn uuid_like(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().trim_start_matches(".tmp").to_string())
        .unwrap_or_default()
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_hexdigit())
}

/// A UUID's shape: 8-4-4-4-12 hex digits.
fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && is_hex(p))
}

/// Replaces what changes from run to run in a screen.
fn normalise(screen: &str, env: &Env) -> String {
    let workspace = env.workspace.path().display().to_string();
    let mut out = String::new();
    for line in screen.replace(&workspace, "<WORKSPACE>").lines() {
        let mut words: Vec<String> = Vec::new();
        let mut previous = String::new();
        for word in line.split(' ') {
            let bare = word.trim_matches(|c: char| "()[],.:\"".contains(c));
            let short_id = previous == "session" && bare.len() == 8 && is_hex(bare);
            let replaced = if is_uuid(bare) || short_id {
                word.replace(bare, "<ID>")
            } else if previous == "in" && duration(bare) {
                word.replace(bare, "<T>")
            } else if let Some(secs) = word.strip_prefix('(').and_then(|w| w.strip_suffix("s)"))
                && secs.chars().all(|c| c.is_ascii_digit())
                && !secs.is_empty()
            {
                "(<N>s)".to_string()
            } else if ["|", "/", "-", "\\"].contains(&word)
                && words.is_empty()
                && line.contains("Esc to interrupt")
            {
                "*".to_string()
            } else {
                word.to_string()
            };
            previous = bare.to_string();
            words.push(replaced);
        }
        out.push_str(&words.join(" "));
        out.push('\n');
    }
    out
}

/// `12ms`, `1.5s`.
fn duration(word: &str) -> bool {
    let number = word
        .strip_suffix("ms")
        .or_else(|| word.strip_suffix('s'))
        .unwrap_or("");
    !number.is_empty() && number.chars().all(|c| c.is_ascii_digit() || c == '.')
}

fn snapshot_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("snapshots/tui")
        .join(format!("{name}.txt"))
}

/// Compares a normalised screen with its snapshot (or writes it, with
/// KEEL_UPDATE_SNAPSHOTS=1).
fn snapshot(name: &str, screen: &str, env: &Env) -> anyhow::Result<()> {
    let got = normalise(screen, env);
    let path = snapshot_path(name);
    if std::env::var_os("KEEL_UPDATE_SNAPSHOTS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().context("no parent")?)?;
        std::fs::write(&path, &got)?;
        return Ok(());
    }
    let want = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "no snapshot {} (KEEL_UPDATE_SNAPSHOTS=1 writes it); the screen:\n{got}",
            path.display()
        )
    })?;
    ensure!(
        got == want,
        "the screen differs from {} (KEEL_UPDATE_SNAPSHOTS=1 rewrites it)\n--- want\n{want}--- got\n{got}",
        path.display()
    );
    Ok(())
}

/// How many lines of the screen are exactly `line` (trailing blanks
/// aside).
fn count(screen: &str, line: &str) -> usize {
    screen.lines().filter(|l| l.trim_end() == line).count()
}

/// An answer streamed in pieces, slowly enough to be seen growing.
fn streamed(pieces: &[&str], delay: Duration) -> Scripted {
    let item = "msg_streamed";
    let mut events = vec![sse::created()];
    events.extend(pieces.iter().map(|p| sse::text_delta(item, p)));
    events.push(sse::message(item, &pieces.concat()));
    events.push(sse::completed("resp_streamed", 10, 5));
    Scripted::paced(events, delay)
}

/// A stack, a fake model answering `script`, and `keel`'s environment.
async fn launch(script: Vec<Scripted>) -> anyhow::Result<(Stack, FakeModel, Env)> {
    let fake = FakeModel::start(script).await?;
    let stack = Stack::launch(StackOptions::new(fake.base_url())).await?;
    let env = Env::on(&stack, &fake)?;
    Ok((stack, fake, env))
}

/// (a) streaming, (b) an approval, (c) an interrupt and (d) `/resume`, in
/// one `keel` session of the TUI.
#[tokio::test(flavor = "multi_thread")]
async fn tui_streams_asks_interrupts_and_resumes() -> anyhow::Result<()> {
    let script = vec![
        // The other session, made with `keel run`, for /resume.
        Scripted::assistant("History of the other session."),
        // (a)
        streamed(
            &["Streaming ", "answer: ", "one, ", "two, ", "three."],
            Duration::from_millis(400),
        ),
        // (b)
        Scripted::shell("call_print", &["printf", "approved-run-output\\n"]),
        Scripted::assistant("The approved command ran."),
        // (c)
        Scripted::shell("call_sleep", &["sleep", "30"]),
    ];
    let (stack, fake, env) = launch(script).await?;
    tokio::task::spawn_blocking(move || {
        let result = scenarios(&env);
        drop(fake);
        result.map_err(|e| stack.explain(e, "keel-session-api"))
    })
    .await?
}

fn scenarios(env: &Env) -> anyhow::Result<()> {
    // The other session, for /resume later.
    let other = env.run(&["run", "tell me about the other session"])?;
    let other_id = String::from_utf8_lossy(&other.stderr)
        .lines()
        .find_map(|l| l.strip_prefix("session: "))
        .map(|id| id.trim().to_string())
        .context("no session id from keel run")?;

    let tui = Tui::start(env, &[])?;
    tui.wait_for_text("type a message and press Enter")?;

    // (a) A turn streams: the answer grows, then the durable message
    // replaces the streamed text, once.
    tui.send("say something slowly")?;
    let partial = tui.wait("part of the streamed answer", |s| {
        s.contains("* Streaming answer:") && !s.contains("three.")
    })?;
    ensure!(partial.contains("> say something slowly"), "{partial}");
    let screen = tui.wait_for_text("* Streaming answer: one, two, three.")?;
    let screen = if screen.contains("Esc to interrupt") {
        tui.wait_idle()?
    } else {
        screen
    };
    ensure!(
        count(&screen, "* Streaming answer: one, two, three.") == 1,
        "{screen}"
    );
    ensure!(count(&screen, "> say something slowly") == 1, "{screen}");
    snapshot("a_streamed_answer", &screen, env)?;

    // (b) In a new session asking before untrusted commands: the approval
    // is shown, `y` answers it, the command runs and its output shows.
    tui.send("/new")?;
    tui.wait_for_text("new session: it starts with your next message")?;
    tui.send("/approvals untrusted")?;
    tui.wait_for_text("approvals: untrusted (for the new session)")?;
    tui.send("print something")?;
    let asked = tui.wait_for_text("run it? y = yes")?;
    ensure!(
        asked.contains("approval needed [call_print]: $ printf 'approved-run-output\\n'"),
        "{asked}"
    );
    ensure!(asked.contains("waiting for your answer"), "{asked}");
    snapshot("b_approval_asked", &asked, env)?;
    tui.type_text("y")?;
    tui.wait_for_text("* The approved command ran.")?;
    let screen = tui.wait_idle()?;
    ensure!(count(&screen, "  approved-run-output") == 1, "{screen}");
    ensure!(screen.contains("[call_print] approved by"), "{screen}");
    snapshot("b_approval_answered", &screen, env)?;

    // (c) Esc interrupts a long command; the turn shows as interrupted.
    tui.send("/new")?;
    tui.wait_for_text("new session: it starts with your next message")?;
    tui.send("/approvals on-request")?;
    tui.wait_for_text("approvals: on-request (for the new session)")?;
    tui.send("wait half a minute")?;
    let running = tui.wait_for_text("running sleep 30")?;
    ensure!(running.contains("$ sleep 30"), "{running}");
    snapshot("c_running", &running, env)?;
    let started = Instant::now();
    tui.press("Escape")?;
    let screen = tui.wait_for_text("turn interrupted")?;
    ensure!(
        started.elapsed() < Duration::from_secs(25),
        "the interrupt took {:?}",
        started.elapsed()
    );
    let screen = if screen.contains("Esc to interrupt") {
        tui.wait_idle()?
    } else {
        screen
    };
    snapshot("c_interrupted", &screen, env)?;

    // (d) /resume lists the sessions; typing filters; Enter opens one and
    // replays its history.
    tui.send("/resume")?;
    let picker = tui.wait("the session list", |s| {
        s.contains("Resume a session") && s.contains("4 sessions")
    })?;
    ensure!(
        picker.contains("NAME") && picker.contains("CWD") && picker.contains("STATUS"),
        "{picker}"
    );
    tui.type_text(&other_id[..8])?;
    tui.wait_for_text("1 sessions")?;
    tui.press("Enter")?;
    let screen = tui.wait_for_text("* History of the other session.")?;
    ensure!(
        count(&screen, "> tell me about the other session") == 1,
        "{screen}"
    );
    ensure!(screen.contains(&format!("session {other_id}")), "{screen}");
    snapshot("d_resumed", &screen, env)?;

    // /status, then /quit ends keel with status 0.
    tui.send("/status")?;
    tui.wait_for_text(&format!("session:   {other_id}"))?;
    tui.send("/quit")?;
    tui.wait_for_text("KEEL EXITED 0")?;
    drop(tui);

    // keel resume --last: the newest session, (c)'s, replayed.
    let tui = Tui::start(env, &["resume", "--last"])?;
    let screen = tui.wait_for_text("turn interrupted")?;
    ensure!(count(&screen, "> wait half a minute") == 1, "{screen}");
    tui.press("C-d")?;
    tui.wait_for_text("KEEL EXITED 0")?;
    drop(tui);

    // keel resume: the picker first, newest on top; Esc leaves it for a
    // new session, Enter opens the one chosen.
    let tui = Tui::start(env, &["resume"])?;
    tui.wait("the session list", |s| s.contains("4 sessions"))?;
    tui.press("Escape")?;
    tui.wait_for_text("type a message and press Enter")?;
    tui.send("/resume")?;
    tui.wait("the session list", |s| s.contains("4 sessions"))?;
    tui.press("Down")?;
    tui.wait("the second session chosen", |s| {
        let rows: Vec<&str> = s.lines().skip_while(|l| !l.contains("NAME")).collect();
        rows.get(2).is_some_and(|row| row.starts_with("> "))
    })?;
    tui.press("Enter")?;
    let screen = tui.wait_for_text("* The approved command ran.")?;
    ensure!(count(&screen, "> print something") == 1, "{screen}");
    tui.press("C-c")?;
    tui.press("C-c")?;
    tui.wait_for_text("KEEL EXITED 0")?;
    Ok(())
}

/// Without a terminal, `keel` alone does not draw: it says why and exits 2.
#[test]
fn keel_without_a_terminal_exits_2() -> anyhow::Result<()> {
    let out = Command::new(bin("keel")?)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .env("KEEL_ADDR", "127.0.0.1:9")
        .output()?;
    ensure!(out.status.code() == Some(2), "{:?}", out.status);
    ensure!(out.stdout.is_empty(), "it drew: {:?}", out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        stderr.trim() == "keel: the TUI needs a terminal; use `keel run PROMPT`",
        "{stderr}"
    );
    Ok(())
}

/// (e) session-api restarts while a turn runs: the TUI reconnects by
/// itself and resumes after the last offset it saw, so every line shows
/// exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn tui_survives_a_session_api_restart() -> anyhow::Result<()> {
    let script = vec![
        Scripted::shell("call_before", &["echo", "before-the-restart"]),
        Scripted::shell("call_sleep", &["sleep", "4"]),
        Scripted::shell("call_after", &["echo", "after-the-restart"]),
        Scripted::assistant("Survived the restart."),
    ];
    let (stack, fake, env) = launch(script).await?;
    tokio::task::spawn_blocking(move || {
        let mut stack = stack;
        let result = restart(&mut stack, &env);
        drop(fake);
        result.map_err(|e| stack.explain(e, "keel-session-api"))
    })
    .await?
}

fn restart(stack: &mut Stack, env: &Env) -> anyhow::Result<()> {
    let tui = Tui::start(env, &["tui", "--approval-policy", "on-request"])?;
    tui.wait_for_text("type a message and press Enter")?;
    tui.send("run the restart scenario")?;
    tui.wait_for_text("running sleep 4")?;
    stack.kill("keel-session-api")?;
    tui.wait_for_text("reconnecting")?;
    stack.restart("keel-session-api")?;
    tui.wait_for_text("* Survived the restart.")?;
    let screen = tui.wait_idle()?;
    for line in [
        "> run the restart scenario",
        "$ echo before-the-restart",
        "  before-the-restart",
        "$ sleep 4",
        "$ echo after-the-restart",
        "  after-the-restart",
        "* Survived the restart.",
    ] {
        ensure!(
            count(&screen, line) == 1,
            "{line:?} is not on the screen exactly once:\n{screen}"
        );
    }
    ensure!(!screen.contains("reconnecting"), "{screen}");
    snapshot("e_after_restart", &screen, env)?;
    tui.press("C-c")?;
    tui.press("C-c")?;
    tui.wait_for_text("KEEL EXITED 0")?;
    Ok(())
}
