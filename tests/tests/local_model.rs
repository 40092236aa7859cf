//! A session against a real OpenAI-compatible server on the Chat
//! Completions wire: llama.cpp's `llama-server` with SmolLM2-135M (both
//! installed by `scripts/fetch-llama`, cached), configured as a Codex
//! user configures a local provider. The session offers Codex's tool set
//! for a model the catalog does not know — exec_command / write_stdin,
//! view_image, update_plan, request_user_input, the file tools, and
//! apply_patch (the freeform feature on) as a JSON function — plus a live
//! web_search setting that Chat Completions must drop. The server refuses
//! a request with a custom or hosted tool, so a completed turn shows that
//! the whole set went over the wire as function tools; the answer streams
//! as live deltas and its usage is counted. The model's words are not
//! judged.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use keel_proto::v1 as pb;
use keel_test_support::session;
use keel_test_support::stack::{Stack, StackOptions, free_port, wait_for};
use pb::event::Msg;
use pb::stream_events_response::Kind;

/// `scripts/fetch-llama`'s two paths (it downloads once, then answers from
/// its cache).
fn fetch_llama() -> anyhow::Result<(PathBuf, PathBuf)> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/fetch-llama");
    let out = Command::new(&script)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {}", script.display()))?;
    ensure!(out.status.success(), "{} failed", script.display());
    let text = String::from_utf8(out.stdout)?;
    let get = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(PathBuf::from)
            .with_context(|| format!("fetch-llama printed no {key}: {text}"))
    };
    Ok((get("LLAMA_SERVER")?, get("LLAMA_MODEL")?))
}

/// The server, killed when the test ends.
struct LlamaServer(Child);

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_llama(port: u16, log: &std::path::Path) -> anyhow::Result<LlamaServer> {
    let (server, model) = fetch_llama()?;
    let log = std::fs::File::create(log)?;
    let child = Command::new(server)
        .args(["-m"])
        .arg(model)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["-c", "4096", "-t", "2", "-np", "1", "--no-webui"])
        // Greedy decoding: the same short answer every run (sampled, the
        // small model now and then rambles until the context is full).
        .args(["--temp", "0", "--seed", "7"])
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot start llama-server")?;
    let mut server = LlamaServer(child);
    wait_for("llama-server's /health", Duration::from_secs(60), || {
        if let Ok(Some(status)) = server.0.try_wait() {
            return Some(Err(anyhow::anyhow!("llama-server exited: {status}")));
        }
        health_ok(port).then_some(Ok(()))
    })??;
    Ok(server)
}

/// `GET /health` answers 200 (the model is loaded).
fn health_ok(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request =
        format!("GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    reply.starts_with("HTTP/1.1 200")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_runs_on_llama_server_over_the_chat_wire() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let llama_log = dir.path().join("llama-server.log");
    let _llama = tokio::task::spawn_blocking({
        let log = llama_log.clone();
        move || start_llama(port, &log)
    })
    .await??;
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "model_provider = \"llama\"\nmodel = \"smollm2\"\n\n[model_providers.llama]\nname = \"llama.cpp\"\nbase_url = \"http://127.0.0.1:{port}/v1\"\nwire_api = \"chat\"\n"
        ),
    )?;
    let mut options = StackOptions::new(format!("http://127.0.0.1:{port}/v1"));
    options.model_proxy_args = vec!["--config".into(), config.display().to_string()];
    let stack = Stack::launch(options).await?;
    let result = run_session(&stack, dir.path()).await;
    result.map_err(|e| {
        let log = std::fs::read_to_string(&llama_log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        let e = stack.explain(e, "model-proxy");
        e.context(format!(
            "llama-server log (last lines, newest first):\n{}",
            tail.join("\n")
        ))
    })
}

async fn run_session(stack: &Stack, dir: &std::path::Path) -> anyhow::Result<()> {
    let mut client = stack.connect().await?;
    let workspace = dir.join("ws");
    std::fs::create_dir_all(&workspace)?;
    let sid = client
        .create_session(pb::CreateSessionRequest {
            cwd: workspace.display().to_string(),
            features: Some(pb::ToolFeatures {
                apply_patch_freeform: Some(true),
                web_search: pb::WebSearchMode::Live as i32,
                ..Default::default()
            }),
            context: Some(pb::TurnContext {
                // A 135M model answers briefly or rambles; one call is the
                // wire check.
                max_iterations: Some(1),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await?
        .into_inner()
        .session
        .context("no session")?
        .session_id;
    let mut events = session::follow(&mut client, &sid, 0, true).await?;
    // The first event (session_configured) means this watcher is on the
    // session's live feed: deltas from now on reach it.
    let first = session::next_event(&mut events).await?;
    ensure!(
        matches!(first.msg, Some(Msg::SessionConfigured(_))),
        "{first:?}"
    );
    session::send(&mut client, &sid, "t1", "Say hello in five words.").await?;
    let mut deltas = 0usize;
    let mut streamed = String::new();
    let mut usage = None;
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(120), events.message())
            .await
            .context("no event within 120 s")??
            .context("the event stream ended")?;
        match msg.kind {
            Some(Kind::Delta(d)) if d.kind == pb::LiveDeltaKind::AgentMessage as i32 => {
                deltas += 1;
                streamed.push_str(&d.delta);
            }
            Some(Kind::Event(e)) => match e.msg {
                Some(Msg::TokenCount(t)) => usage = t.last_token_usage,
                Some(Msg::Error(err)) => bail!("the turn failed: {}", err.message),
                Some(Msg::TurnComplete(done)) => {
                    ensure!(deltas >= 2, "{deltas} live deltas: {streamed:?}");
                    ensure!(
                        done.last_agent_message.contains(streamed.trim()),
                        "streamed {streamed:?}, completed with {:?}",
                        done.last_agent_message
                    );
                    break;
                }
                _ => {}
            },
            _ => {}
        }
    }
    let usage = usage.context("no token_count event")?;
    ensure!(
        usage.input_tokens > 0 && usage.output_tokens > 0,
        "{usage:?}"
    );
    let session = session::get(&mut client, &sid).await?;
    ensure!(session.model_provider == "llama", "{session:?}");
    Ok(())
}
