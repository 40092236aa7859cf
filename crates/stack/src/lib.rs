//! A Keel stack, described once for everything that starts one — `keel up`
//! (detached processes with pid files) and the end-to-end tests (child
//! processes of the test): the components, the order they start in, whose
//! address each is given, and the flags each gets. The launchers keep only
//! what differs between them: how a process is started, watched and
//! stopped.

use std::path::{Path, PathBuf};

pub mod pki;
pub use pki::LocalPki;

/// The Temporal namespace of sessions when nothing says otherwise.
pub const DEFAULT_NAMESPACE: &str = "default";
/// The task queue of the session workflows and their activities when
/// nothing says otherwise.
pub const DEFAULT_TASK_QUEUE: &str = "keel-agent";

/// The variables only the model-proxy may see: a launcher removes them from
/// every other process's environment.
pub const MODEL_ENV: [&str; 3] = ["OPENAI_API_KEY", "OPENAI_BASE_URL", "KEEL_MODEL"];

/// One process of a stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Component {
    Temporal,
    ModelProxy,
    ToolRunner,
    McpBroker,
    Worker,
    SessionApi,
}

impl Component {
    /// Dependencies first; stopping goes the other way.
    pub const START_ORDER: [Component; 6] = [
        Component::Temporal,
        Component::ModelProxy,
        Component::ToolRunner,
        Component::McpBroker,
        Component::SessionApi,
        Component::Worker,
    ];

    /// Its short name (file names, status tables).
    pub fn name(self) -> &'static str {
        match self {
            Component::Temporal => "temporal",
            Component::ModelProxy => "model-proxy",
            Component::ToolRunner => "tool-runner",
            Component::McpBroker => "mcp-broker",
            Component::Worker => "worker",
            Component::SessionApi => "session-api",
        }
    }

    /// The executable's file name.
    pub fn program(self) -> &'static str {
        match self {
            Component::Temporal => "temporal",
            Component::ModelProxy => "keel-model-proxy",
            Component::ToolRunner => "keel-tool-runner",
            Component::McpBroker => "keel-mcp-broker",
            Component::Worker => "keel-worker",
            Component::SessionApi => "keel-session-api",
        }
    }

    /// Components whose address this one is given at start-up: when one of
    /// them is (re)started, this one must be restarted too.
    pub fn dependencies(self) -> &'static [Component] {
        match self {
            Component::Temporal
            | Component::ModelProxy
            | Component::ToolRunner
            | Component::McpBroker => &[],
            Component::Worker => &[
                Component::Temporal,
                Component::ModelProxy,
                Component::ToolRunner,
                Component::McpBroker,
                Component::SessionApi,
            ],
            Component::SessionApi => &[Component::Temporal],
        }
    }
}

/// Which directories sessions may work in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Workspaces {
    /// These directories and below (`--workspace-root`).
    Roots(Vec<PathBuf>),
    /// Any directory (`--allow-any-workspace`): for tests whose sessions
    /// work in temporary directories anywhere.
    Any,
}

/// What a stack's services share and how they are set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The blob store session-api, model-proxy and tool-runner share.
    pub blob_url: String,
    pub namespace: String,
    pub task_queue: String,
    pub workspaces: Workspaces,
    /// Hidden from sandboxed commands besides the tool-runner's own state.
    pub hide_paths: Vec<PathBuf>,
    /// session-api `--retained-events`; `None`: its default.
    pub retained_events: Option<u32>,
    /// session-api `--history-event-budget`; `None`: its default.
    pub history_event_budget: Option<u32>,
    /// How session-api authenticates its clients.
    pub client_auth: ClientAuth,
    /// Mutual TLS between the services with these certificates; `None`:
    /// plaintext (`--insecure-plaintext`).
    pub tls: Option<LocalPki>,
}

/// How session-api authenticates its clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAuth {
    /// Bearer tokens from this token file (`--tokens-file`).
    TokensFile(PathBuf),
    /// Nobody is asked (`--insecure-no-auth`).
    InsecureNoAuth,
}

/// Where session-api writes the address of its internal listener
/// (LiveService, for workers) when its client address goes to `addr_file`.
pub fn internal_addr_file(addr_file: &Path) -> PathBuf {
    addr_file.with_extension("internal.addr")
}

/// A component started before its dependencies have addresses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("{component} needs the address of {missing}, which has none yet")]
    MissingAddress {
        component: &'static str,
        missing: &'static str,
    },
    #[error("temporal is not a Keel service (start it with temporal_dev_server_args)")]
    NotAService,
}

impl Layout {
    /// The flags of Keel service `component`, serving on a free loopback
    /// port and writing its address to `addr_file`; `address` gives the
    /// address of each component started before it (for session-api, the
    /// address of its internal listener, which is what the worker needs).
    pub fn service_args(
        &self,
        component: Component,
        addr_file: &Path,
        address: impl Fn(Component) -> Option<String>,
    ) -> Result<Vec<String>, LayoutError> {
        let addr_of = |dep: Component| {
            address(dep).ok_or(LayoutError::MissingAddress {
                component: component.name(),
                missing: dep.name(),
            })
        };
        let mut args = vec![
            "--listen".to_string(),
            "127.0.0.1:0".to_string(),
            "--addr-file".to_string(),
            addr_file.display().to_string(),
        ];
        let blob = ["--blob-url".to_string(), self.blob_url.clone()];
        // What a server presents to the worker, and what the worker presents.
        let tls = |args: &mut Vec<String>, worker: bool| match &self.tls {
            Some(pki) if worker => args.extend(pki.worker_args()),
            Some(pki) => args.extend(pki.server_args()),
            None => args.push("--insecure-plaintext".to_string()),
        };
        let temporal = |args: &mut Vec<String>| -> Result<(), LayoutError> {
            args.extend([
                "--temporal-address".to_string(),
                addr_of(Component::Temporal)?,
                "--namespace".to_string(),
                self.namespace.clone(),
                "--task-queue".to_string(),
                self.task_queue.clone(),
            ]);
            Ok(())
        };
        match component {
            Component::Temporal => return Err(LayoutError::NotAService),
            Component::ModelProxy => {
                args.extend(blob);
                tls(&mut args, false);
            }
            Component::ToolRunner => {
                args.extend(blob);
                tls(&mut args, false);
                match &self.workspaces {
                    Workspaces::Any => args.push("--allow-any-workspace".to_string()),
                    Workspaces::Roots(roots) => {
                        for root in roots {
                            args.extend([
                                "--workspace-root".to_string(),
                                root.display().to_string(),
                            ]);
                        }
                    }
                }
                for path in &self.hide_paths {
                    args.extend(["--hide-path".to_string(), path.display().to_string()]);
                }
            }
            Component::McpBroker => {
                args.extend(blob);
                tls(&mut args, false);
            }
            Component::SessionApi => {
                temporal(&mut args)?;
                args.extend(blob);
                args.extend([
                    "--internal-listen".to_string(),
                    "127.0.0.1:0".to_string(),
                    "--internal-addr-file".to_string(),
                    internal_addr_file(addr_file).display().to_string(),
                ]);
                match &self.client_auth {
                    ClientAuth::TokensFile(path) => {
                        args.extend(["--tokens-file".to_string(), path.display().to_string()]);
                    }
                    ClientAuth::InsecureNoAuth => args.push("--insecure-no-auth".to_string()),
                }
                // Its internal listener's.
                tls(&mut args, false);
                if let Some(n) = self.retained_events {
                    args.extend(["--retained-events".to_string(), n.to_string()]);
                }
                if let Some(n) = self.history_event_budget {
                    args.extend(["--history-event-budget".to_string(), n.to_string()]);
                }
            }
            Component::Worker => {
                temporal(&mut args)?;
                args.extend([
                    "--model-proxy".to_string(),
                    addr_of(Component::ModelProxy)?,
                    "--tool-runner".to_string(),
                    addr_of(Component::ToolRunner)?,
                    "--mcp-broker".to_string(),
                    addr_of(Component::McpBroker)?,
                    // session-api's internal listener (LiveService).
                    "--session-api".to_string(),
                    addr_of(Component::SessionApi)?,
                ]);
                tls(&mut args, true);
            }
        }
        Ok(args)
    }
}

/// Where a Temporal dev server listens and keeps its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemporalDev {
    pub ip: String,
    pub port: u16,
    /// Its HTTP API and metrics ports; `None`: free ports the Temporal CLI
    /// picks itself.
    pub http_port: Option<u16>,
    pub metrics_port: Option<u16>,
    /// A SQLite file that keeps sessions across restarts; `None`: memory.
    pub db: Option<PathBuf>,
    /// `PRAGMA=VALUE` settings for the SQLite file (see
    /// [`DURABLE_SQLITE_PRAGMAS`]); empty: SQLite's defaults.
    pub sqlite_pragmas: Vec<String>,
}

/// The local stack's SQLite settings: a write-ahead log synced at
/// checkpoints rather than at every commit. Every workflow task is a few
/// commits, and SQLite's default (a rollback journal synced on each) costs
/// about 25 ms per agent step. What this gives up: a process crash (even
/// `kill -9` of the dev server) loses nothing, since committed transactions
/// are in the WAL file; a power cut or kernel crash may roll back the last
/// commits before the most recent sync, so a session resumes from slightly
/// earlier (an activity may run again; tool calls are de-duplicated by the
/// tool-runner's journal). The database itself stays consistent. See
/// <https://www.sqlite.org/pragma.html#pragma_synchronous>.
pub const DURABLE_SQLITE_PRAGMAS: [&str; 2] = ["journal_mode=wal", "synchronous=normal"];

impl TemporalDev {
    /// `temporal server start-dev` and its flags. Transfer tasks are polled
    /// at up to 1000/s (the default of 1 s under light load delays every
    /// workflow task of a session by up to that much).
    pub fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = [
            "server",
            "start-dev",
            "--headless",
            "--log-level",
            "error",
            "--dynamic-config-value",
            "history.transferProcessorMaxPollRPS=1000",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(["--ip".to_string(), self.ip.clone()]);
        args.extend(["--port".to_string(), self.port.to_string()]);
        if let Some(port) = self.http_port {
            args.extend(["--http-port".to_string(), port.to_string()]);
        }
        if let Some(port) = self.metrics_port {
            args.extend(["--metrics-port".to_string(), port.to_string()]);
        }
        if let Some(db) = &self.db {
            args.extend(["--db-filename".to_string(), db.display().to_string()]);
            for pragma in &self.sqlite_pragmas {
                args.extend(["--sqlite-pragma".to_string(), pragma.clone()]);
            }
        }
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(workspaces: Workspaces) -> Layout {
        Layout {
            blob_url: "file:///s/blobs".into(),
            namespace: "default".into(),
            task_queue: "keel-agent".into(),
            workspaces,
            hide_paths: vec![PathBuf::from("/s")],
            retained_events: Some(64),
            history_event_budget: None,
            client_auth: ClientAuth::TokensFile(PathBuf::from("/s/tokens.toml")),
            tls: Some(LocalPki::in_dir(Path::new("/s/tls"))),
        }
    }

    #[test]
    fn every_service_gets_its_flags_and_its_dependencies_addresses() {
        let addrs = |c: Component| Some(format!("{}:1", c.name()));
        let l = layout(Workspaces::Roots(vec![PathBuf::from("/home/u")]));
        let runner = l
            .service_args(Component::ToolRunner, Path::new("/s/tr.addr"), addrs)
            .unwrap();
        assert_eq!(
            runner,
            [
                "--listen",
                "127.0.0.1:0",
                "--addr-file",
                "/s/tr.addr",
                "--blob-url",
                "file:///s/blobs",
                "--tls-cert",
                "/s/tls/server.pem",
                "--tls-key",
                "/s/tls/server.key",
                "--tls-ca",
                "/s/tls/ca.pem",
                "--workspace-root",
                "/home/u",
                "--hide-path",
                "/s"
            ]
        );
        let worker = l
            .service_args(Component::Worker, Path::new("/w"), addrs)
            .unwrap()
            .join(" ");
        for part in [
            "--temporal-address temporal:1",
            "--task-queue keel-agent",
            "--model-proxy model-proxy:1",
            "--session-api session-api:1",
            "--tls-cert /s/tls/worker.pem --tls-key /s/tls/worker.key --tls-ca /s/tls/ca.pem",
        ] {
            assert!(worker.contains(part), "{worker}");
        }
        let api = l
            .service_args(Component::SessionApi, Path::new("/a"), addrs)
            .unwrap()
            .join(" ");
        assert!(api.contains("--retained-events 64") && !api.contains("--history-event-budget"));
        assert!(
            api.contains("--internal-listen 127.0.0.1:0 --internal-addr-file /a.internal.addr")
                && api.contains("--tokens-file /s/tokens.toml")
                && !api.contains("insecure"),
            "{api}"
        );
        assert!(api.contains("--tls-cert /s/tls/server.pem"), "{api}");
        let mut open = l.clone();
        open.client_auth = ClientAuth::InsecureNoAuth;
        open.tls = None;
        let api = open
            .service_args(Component::SessionApi, Path::new("/a"), addrs)
            .unwrap();
        assert!(api.contains(&"--insecure-no-auth".to_string()));
        for component in [
            Component::Worker,
            Component::ToolRunner,
            Component::ModelProxy,
            Component::McpBroker,
            Component::SessionApi,
        ] {
            let args = open
                .service_args(component, Path::new("/a"), addrs)
                .unwrap();
            assert!(
                args.contains(&"--insecure-plaintext".to_string()),
                "{}",
                component.name()
            );
            assert!(!args.iter().any(|a| a.starts_with("--tls")));
        }
        let any = layout(Workspaces::Any)
            .service_args(Component::ToolRunner, Path::new("/t"), addrs)
            .unwrap();
        assert!(any.contains(&"--allow-any-workspace".to_string()));
    }

    #[test]
    fn a_missing_dependency_is_named() {
        let l = layout(Workspaces::Any);
        let err = l
            .service_args(Component::Worker, Path::new("/w"), |c| {
                (c == Component::Temporal).then(|| "t:1".to_string())
            })
            .unwrap_err();
        assert_eq!(
            err,
            LayoutError::MissingAddress {
                component: "worker",
                missing: "model-proxy"
            }
        );
        assert_eq!(
            l.service_args(Component::Temporal, Path::new("/t"), |_| None),
            Err(LayoutError::NotAService)
        );
    }

    #[test]
    fn temporal_dev_server_flags() {
        let args = TemporalDev {
            ip: "127.0.0.1".into(),
            port: 7233,
            http_port: None,
            metrics_port: Some(9),
            db: Some(PathBuf::from("/s/t.db")),
            sqlite_pragmas: DURABLE_SQLITE_PRAGMAS.map(String::from).to_vec(),
        }
        .args()
        .join(" ");
        assert!(args.starts_with("server start-dev --headless"), "{args}");
        assert!(args.contains("--port 7233") && args.contains("--metrics-port 9"));
        assert!(args.contains("--db-filename /s/t.db") && !args.contains("--http-port"));
        assert!(
            args.contains("--sqlite-pragma journal_mode=wal --sqlite-pragma synchronous=normal"),
            "{args}"
        );
    }
}
