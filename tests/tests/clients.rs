//! The Python and TypeScript clients (`clients/`) against a real stack: their
//! runnable examples, their event streams across a session-api restart, and
//! the TypeScript client in headless Chromium over gRPC-Web.
//!
//! `scripts/test` installs what these need and names it:
//! `KEEL_CLIENTS_PYTHON` (a Python with `clients/python` installed),
//! `KEEL_CLIENTS_TS` (`clients/typescript`, installed and built) and
//! `KEEL_CHROMIUM` (a Chromium binary).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use keel_test_support::fake_model::{FakeModel, Scripted};
use keel_test_support::stack::{Stack, StackOptions, free_port};

/// How long a client program may take before the test gives up on it.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn required_env(name: &str, what: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: run the tests with scripts/test, which installs {what} and sets it"
        )
    })
}

fn python() -> String {
    required_env("KEEL_CLIENTS_PYTHON", "the Python client")
}

fn ts_dir() -> PathBuf {
    PathBuf::from(required_env("KEEL_CLIENTS_TS", "the TypeScript client"))
}

/// What the examples do, as the model: run a command (which needs approval
/// under `untrusted`), call the client's dynamic tool, then answer.
fn example_script() -> Vec<Scripted> {
    vec![
        Scripted::shell(
            "c1",
            &[
                "bash",
                "-lc",
                "echo hello from keel > greeting.txt && cat greeting.txt",
            ],
        ),
        Scripted::tool_call("d1", "crm__lookup", r#"{"q":"acme"}"#),
        Scripted::assistant("ACME Corp has 42 seats; greeting.txt says hello."),
    ]
}

/// A finished client program: what it printed.
struct Finished {
    stdout: String,
    stderr: String,
}

/// Runs a client program with the stack's address and token and a
/// workspace, and waits for it to succeed.
fn run_client(cmd: &mut Command, stack: &Stack, addr: &str, workspace: &Path) -> Finished {
    let (child, what) = spawn_client(cmd, stack, addr, workspace);
    let (_lines, done, what) = collect(child, what);
    finish(done, what, stack)
}

/// The client's process, and its stdout lines as they come.
fn spawn_client(cmd: &mut Command, stack: &Stack, addr: &str, workspace: &Path) -> (Child, String) {
    let what = format!("{cmd:?}");
    let child = cmd
        .env("KEEL_ADDR", addr)
        .env("KEEL_TOKEN", &stack.token)
        .env("KEEL_WORKSPACE", workspace)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    (child, what)
}

type Lines = mpsc::Receiver<String>;
type Done = mpsc::Receiver<(std::process::ExitStatus, String, String)>;

/// Streams the child's stdout lines, and reports its exit with everything
/// it printed (or kills it after [`CLIENT_TIMEOUT`]).
fn collect(mut child: Child, what: String) -> (Lines, Done, String) {
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let (line_tx, lines) = mpsc::channel();
    let out = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            all.push_str(&line);
            all.push('\n');
            let _ = line_tx.send(line);
        }
        all
    });
    let err = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let (done_tx, done) = mpsc::channel();
    std::thread::spawn(move || {
        let deadline = Instant::now() + CLIENT_TIMEOUT;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                _ => {
                    let _ = child.kill();
                    break child.wait().expect("the killed client is reaped");
                }
            }
        };
        let stdout = out.join().unwrap_or_default();
        let stderr = err.join().unwrap_or_default();
        let _ = done_tx.send((status, stdout, stderr));
    });
    (lines, done, what)
}

fn finish(done: Done, what: String, stack: &Stack) -> Finished {
    let (status, stdout, stderr) = done
        .recv_timeout(CLIENT_TIMEOUT + Duration::from_secs(10))
        .expect("the client's watcher reports");
    assert!(
        status.success(),
        "{what} failed ({status}).\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n--- session-api log\n{}",
        stack
            .proc("keel-session-api")
            .map(|p| p.log_text())
            .unwrap_or_default()
    );
    Finished { stdout, stderr }
}

/// What every example must have done, checked on the model's side and in
/// the workspace, not on what the example says of itself.
fn check_example(fake: &FakeModel, workspace: &Path, out: &Finished) {
    let output = |call_id: &str| {
        fake.requests()
            .iter()
            .rev()
            .find_map(|r| r.function_call_output(call_id))
            .unwrap_or_else(|| {
                panic!(
                    "no output for {call_id} reached the model.\n--- stdout\n{}\n--- stderr\n{}",
                    out.stdout, out.stderr
                )
            })
    };
    assert!(
        output("c1").contains("hello from keel"),
        "the approved command's output: {}",
        output("c1")
    );
    assert_eq!(output("d1"), "ACME Corp, 42 seats");
    assert_eq!(
        std::fs::read_to_string(workspace.join("greeting.txt")).expect("the command ran"),
        "hello from keel\n"
    );
    let offered = fake.requests()[0].tool_names();
    assert!(
        offered.iter().any(|n| n == "crm__lookup"),
        "the dynamic tool was offered: {offered:?}"
    );
    assert!(
        out.stdout
            .lines()
            .any(|l| l == "final: ACME Corp has 42 seats; greeting.txt says hello."),
        "the example prints the final answer:\n{}",
        out.stdout
    );
    assert!(
        out.stdout.lines().any(|l| l.starts_with("approved: ")),
        "the example approved the command:\n{}",
        out.stdout
    );
}

async fn stack_for(script: Vec<Scripted>, session_api_args: Vec<String>) -> (FakeModel, Stack) {
    let fake = FakeModel::start(script).await.expect("fake model");
    let mut opts = StackOptions::new(fake.base_url());
    opts.session_api_args = session_api_args;
    let stack = Stack::launch(opts).await.expect("stack");
    (fake, stack)
}

#[tokio::test(flavor = "multi_thread")]
async fn python_example_runs_a_turn_with_approval_and_a_dynamic_tool() {
    let python = python();
    let (fake, stack) = stack_for(example_script(), vec![]).await;
    let workspace = tempfile::tempdir().unwrap();
    let example = repo_root().join("clients/python/examples/quickstart.py");
    let out = tokio::task::block_in_place(|| {
        run_client(
            Command::new(&python).arg(&example),
            &stack,
            &format!("http://{}", stack.session_api),
            workspace.path(),
        )
    });
    check_example(&fake, workspace.path(), &out);
}

#[tokio::test(flavor = "multi_thread")]
async fn typescript_example_runs_a_turn_with_approval_and_a_dynamic_tool() {
    let dir = ts_dir();
    let (fake, stack) = stack_for(example_script(), vec![]).await;
    let workspace = tempfile::tempdir().unwrap();
    let out = tokio::task::block_in_place(|| {
        run_client(
            Command::new("node").arg(dir.join("dist/examples/quickstart.js")),
            &stack,
            &format!("http://{}", stack.session_api),
            workspace.path(),
        )
    });
    check_example(&fake, workspace.path(), &out);
}

/// The model's side of the resume tests: four steps, each a command that
/// takes a moment, so a session-api restart lands mid-turn.
fn steps_script() -> Vec<Scripted> {
    let mut script: Vec<Scripted> = (1..=4)
        .map(|i| {
            Scripted::shell(
                &format!("s{i}"),
                &["bash", "-lc", &format!("sleep 0.3; echo step {i}")],
            )
        })
        .collect();
    script.push(Scripted::assistant("four steps done"));
    script
}

/// Runs a client's `watch` program (it opens a session, sends a turn and
/// prints each durable event as a JSON line `{"offset": N, "type": "..."}`
/// until `turn_complete`), restarts session-api once the first command has
/// begun, and checks that the client saw every event exactly once.
fn watch_across_restart(cmd: &mut Command, stack: &mut Stack) {
    let workspace = tempfile::tempdir().unwrap();
    let addr = format!("http://{}", stack.session_api);
    let (child, what) = spawn_client(cmd, stack, &addr, workspace.path());
    let (lines, done, what) = collect(child, what);
    let mut seen = Vec::new();
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    loop {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("{what} printed no exec_command_begin: {seen:?}"));
        let begun = line.contains("\"exec_command_begin\"");
        seen.push(line);
        if begun {
            break;
        }
    }
    stack.kill("keel-session-api").unwrap();
    stack.restart("keel-session-api").unwrap();
    let out = finish(done, what, stack);

    let mut offsets = Vec::new();
    let mut types = Vec::new();
    for line in out.stdout.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let (Some(offset), Some(kind)) = (v["offset"].as_u64(), v["type"].as_str()) else {
            continue;
        };
        offsets.push(offset);
        types.push(kind.to_string());
    }
    let expected: Vec<u64> = (1..=offsets.len() as u64).collect();
    assert_eq!(
        offsets, expected,
        "every event once, in order, none missing:\n{}\n--- stderr\n{}",
        out.stdout, out.stderr
    );
    assert_eq!(
        types.iter().filter(|t| *t == "exec_command_end").count(),
        4,
        "{types:?}"
    );
    assert_eq!(types.last().map(String::as_str), Some("turn_complete"));
    // The stream really broke and was resumed (not served whole by luck).
    assert!(
        out.stderr.contains("reconnecting"),
        "the client never reconnected:\n{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn python_events_resume_across_a_session_api_restart() {
    let python = python();
    let (_fake, mut stack) = stack_for(steps_script(), vec![]).await;
    let watch = repo_root().join("clients/python/examples/watch.py");
    tokio::task::block_in_place(|| {
        watch_across_restart(Command::new(&python).arg(&watch), &mut stack)
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn typescript_events_resume_across_a_session_api_restart() {
    let dir = ts_dir();
    let (_fake, mut stack) = stack_for(steps_script(), vec![]).await;
    tokio::task::block_in_place(|| {
        watch_across_restart(
            Command::new("node").arg(dir.join("dist/examples/watch.js")),
            &mut stack,
        )
    });
}

/// A web page using the TypeScript client streams a turn from session-api
/// over gRPC-Web, in headless Chromium; the page is served from another
/// origin, which session-api allows by CORS.
#[tokio::test(flavor = "multi_thread")]
async fn browser_streams_a_turn_over_grpc_web() {
    let dir = ts_dir();
    let chromium = required_env("KEEL_CHROMIUM", "Chromium");
    let page_port = free_port().unwrap();
    let origin = format!("http://127.0.0.1:{page_port}");
    let (fake, stack) = stack_for(
        vec![
            Scripted::shell("c1", &["bash", "-lc", "echo from the browser"]),
            Scripted::assistant("the browser saw it all"),
        ],
        vec!["--cors-allowed-origin".into(), origin],
    )
    .await;
    let workspace = tempfile::tempdir().unwrap();
    let shot = workspace.path().join("page.png");
    let out = tokio::task::block_in_place(|| {
        run_client(
            Command::new("node")
                .arg(dir.join("dist/tests/browser.js"))
                .env("KEEL_CHROMIUM", &chromium)
                .env("KEEL_PAGE_PORT", page_port.to_string())
                .env("KEEL_SCREENSHOT", &shot),
            &stack,
            &format!("http://{}", stack.session_api),
            workspace.path(),
        )
    });
    let output = fake
        .requests()
        .iter()
        .rev()
        .find_map(|r| r.function_call_output("c1"))
        .unwrap_or_else(|| {
            panic!(
                "the command's output never reached the model:\n{}",
                out.stdout
            )
        });
    assert!(output.contains("from the browser"), "{output}");
    assert!(
        out.stdout
            .lines()
            .any(|l| l == "page: the browser saw it all"),
        "the page showed the final answer:\n{}\n--- stderr\n{}",
        out.stdout,
        out.stderr
    );
    let png = std::fs::read(&shot).expect("the page's screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
}

/// One gRPC-Web call over HTTP/1.1, as a browser makes it: the framed
/// request, and the answer's trailer frame (`grpc-status: ...`).
async fn grpc_web_call(
    http: &reqwest::Client,
    addr: &str,
    method: &str,
    token: Option<&str>,
    origin: &str,
) -> (reqwest::header::HeaderMap, String) {
    // An empty message: flag 0, length 0.
    let mut req = http
        .post(format!("http://{addr}/keel.v1.SessionService/{method}"))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .header("origin", origin)
        .body(vec![0u8, 0, 0, 0, 0]);
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200, "gRPC-Web answers HTTP 200");
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    let headers = resp.headers().clone();
    let body = resp.bytes().await.unwrap();
    // Frames: a flag byte (0x80: trailers), a 4-byte length, the payload.
    let mut rest = &body[..];
    let mut trailers = String::new();
    while rest.len() >= 5 {
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        if rest[0] & 0x80 != 0 {
            trailers = String::from_utf8_lossy(&rest[5..5 + len]).into_owned();
        }
        rest = &rest[5 + len..];
    }
    // A trailers-only answer (an error before any message) has its status
    // in the headers.
    if trailers.is_empty()
        && let Some(status) = headers.get("grpc-status")
    {
        trailers = format!("grpc-status:{}", status.to_str().unwrap());
    }
    (headers, trailers)
}

/// session-api speaks gRPC-Web over HTTP/1.1 with the same authentication,
/// and CORS allows exactly the configured origins.
#[tokio::test(flavor = "multi_thread")]
async fn grpc_web_and_cors_on_session_api() {
    let allowed = "http://app.example.test:8080";
    let (_fake, stack) =
        stack_for(vec![], vec!["--cors-allowed-origin".into(), allowed.into()]).await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder().http1_only().build().unwrap();
    let addr = &stack.session_api;

    let (headers, trailers) =
        grpc_web_call(&http, addr, "ListSessions", Some(&stack.token), allowed).await;
    assert!(trailers.contains("grpc-status:0"), "{trailers:?}");
    assert_eq!(
        headers.get("access-control-allow-origin").unwrap(),
        allowed,
        "{headers:?}"
    );
    assert!(
        headers
            .get("access-control-expose-headers")
            .is_some_and(|v| v.to_str().unwrap().contains("grpc-status")),
        "{headers:?}"
    );
    // No token: refused as over gRPC.
    let (_, trailers) = grpc_web_call(&http, addr, "ListSessions", None, allowed).await;
    assert!(trailers.contains("grpc-status:16"), "{trailers:?}");
    // Another origin: served (CORS is the browser's check), but nothing
    // allows a browser to read the answer.
    let (headers, _) = grpc_web_call(
        &http,
        addr,
        "ListSessions",
        Some(&stack.token),
        "http://evil.example.test",
    )
    .await;
    assert!(
        headers.get("access-control-allow-origin").is_none(),
        "{headers:?}"
    );

    // Preflight: the allowed origin may send the headers gRPC-Web needs.
    let preflight = |origin: &'static str| {
        http.request(
            reqwest::Method::OPTIONS,
            format!("http://{addr}/keel.v1.SessionService/ListSessions"),
        )
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type,x-grpc-web,x-user-agent",
        )
        .send()
    };
    let ok = preflight("http://app.example.test:8080").await.unwrap();
    assert!(ok.status().is_success(), "{ok:?}");
    let h = ok.headers();
    assert_eq!(h.get("access-control-allow-origin").unwrap(), allowed);
    let allow_headers = h
        .get("access-control-allow-headers")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    for needed in ["authorization", "content-type", "x-grpc-web"] {
        assert!(allow_headers.contains(needed), "{allow_headers}");
    }
    assert!(h.get("access-control-allow-credentials").is_none());
    let other = preflight("http://evil.example.test").await.unwrap();
    assert!(
        other.headers().get("access-control-allow-origin").is_none(),
        "{other:?}"
    );

    // Plain gRPC still works on the same port.
    let mut client = stack.connect().await.unwrap();
    client
        .list_sessions(keel_proto::v1::ListSessionsRequest::default())
        .await
        .unwrap();
}
