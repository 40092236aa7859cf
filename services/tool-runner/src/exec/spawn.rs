//! The one place the tool-runner starts a process. Everything that runs a
//! command — `shell`, `shell_command`, `exec_command`, Exec — comes through
//! [`Executor::spawn`], and every confined file-tool job through
//! [`Executor::spawn_job`], so confinement and resource limits wrap here: a
//! sandboxed command, or any command when the operator set rlimits, is
//! started as `<helper> sandbox-exec [--limits …] [--policy …] -- argv`
//! (see [`crate::sandbox::helper`]). The helper itself starts with a clean,
//! fixed environment; the command's environment reaches it as data
//! ([`helper::helper_env`]) and is applied only to the command. Without a
//! helper to go through, the command is spawned directly.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::{Child, Command};

use super::env::refused_env_var;
use super::group::ProcessGroup;
use super::{ExecError, Executor};
use crate::sandbox::{Confinement, NETWORK_DISABLED_ENV, helper};

/// What the process gets as stdin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StdinMode {
    /// `/dev/null`: the command cannot wait for input that never comes.
    Null,
    /// A pipe the caller writes to (unified exec's `write_stdin`).
    Piped,
}

/// A started process in its own process group. stdout and stderr are pipes.
#[derive(Debug)]
pub(crate) struct Spawned {
    pub(crate) child: Child,
    /// Killing the group reaches everything the command started; dropping
    /// the guard kills it.
    pub(crate) group: ProcessGroup,
}

impl Executor {
    /// Starts `argv` in `cwd` with the policy's environment plus `env`,
    /// confined by `sandbox` when given. The caller's `env` and the
    /// sandbox's variable come after the policy, so `include_only` does not
    /// filter them (as in Codex, where the policy builds the base). `env`
    /// comes from the request: a loader variable in it is refused
    /// ([`refused_env_var`]); the operator's base environment is not
    /// checked.
    pub(crate) fn spawn(
        &self,
        argv: &[String],
        cwd: &Path,
        env: &HashMap<String, String>,
        stdin: StdinMode,
        sandbox: Option<&Confinement>,
    ) -> Result<Spawned, ExecError> {
        let (program, args) = argv.split_first().ok_or(ExecError::EmptyArgv)?;
        if let Some(bad) = env.keys().find(|k| k.is_empty() || k.contains(['=', '\0'])) {
            return Err(ExecError::InvalidEnvName(bad.clone()));
        }
        if let Some((name, reason)) = env
            .keys()
            .find_map(|name| refused_env_var(name).map(|reason| (name, reason)))
        {
            return Err(ExecError::RefusedEnvVar {
                name: name.clone(),
                reason,
            });
        }
        let command_env = self.command_env(env, sandbox.is_some_and(|c| c.restrict_network));
        // The helper confines sandboxed commands and applies the limits;
        // a command that needs neither is started directly (the fast path).
        let command = if sandbox.is_none() && self.limits.is_empty() {
            let mut command = Command::new(program);
            command
                .args(args)
                .env_clear()
                .envs(command_env.iter().map(|(k, v)| (k, v)));
            command
        } else {
            let helper = self.sandbox_helper.as_deref().ok_or_else(|| {
                if sandbox.is_some() {
                    ExecError::NoSandboxHelper {
                        program: program.clone(),
                    }
                } else {
                    ExecError::NoLimitsHelper {
                        program: program.clone(),
                    }
                }
            })?;
            // The helper starts the command only after confining itself,
            // when it can no longer report a spawn error the way a direct
            // spawn does: look the program up here.
            self.find_program(program, cwd, env)
                .map_err(|source| ExecError::Spawn {
                    program: program.clone(),
                    source,
                })?;
            let wrapped = helper::wrap_argv(helper, sandbox, &self.limits, argv);
            let mut command = Command::new(&wrapped[0]);
            command
                .args(&wrapped[1..])
                .env_clear()
                .envs(helper::helper_env(&command_env));
            command
        };
        let stdin = match stdin {
            StdinMode::Null => Stdio::null(),
            StdinMode::Piped => Stdio::piped(),
        };
        self.start(command, cwd, stdin, program)
    }

    /// Starts the helper for a confined job (`sandbox-exec --policy …
    /// --job`) in `cwd`, stdin piped for the job. It needs no environment:
    /// the job runs inside the helper, not as a program.
    pub(crate) fn spawn_job(
        &self,
        label: &str,
        cwd: &Path,
        sandbox: &Confinement,
    ) -> Result<Spawned, ExecError> {
        let helper = self
            .sandbox_helper
            .as_deref()
            .ok_or_else(|| ExecError::NoSandboxHelper {
                program: label.to_string(),
            })?;
        let wrapped = helper::job_argv(helper, sandbox);
        let mut command = Command::new(&wrapped[0]);
        command.args(&wrapped[1..]).env_clear();
        self.start(command, cwd, Stdio::piped(), label)
    }

    /// Spawns `command` in `cwd` in a process group of its own, stdout and
    /// stderr piped, and records the group.
    fn start(
        &self,
        mut command: Command,
        cwd: &Path,
        stdin: Stdio,
        program: &str,
    ) -> Result<Spawned, ExecError> {
        let child = command
            .current_dir(cwd)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            // The group kill reaches the leader too; this also makes tokio
            // reap it if the owner is dropped mid-run.
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| ExecError::Spawn {
                program: program.to_string(),
                source,
            })?;
        let mut group = ProcessGroup::new(child.id());
        // Right after the spawn, before anything awaits: the window in which
        // a tool-runner crash leaves the command unrecorded stays tiny. A
        // small write to a local directory, so done in place.
        if let (Some(records), Some(pgid)) = (&self.records, group.id()) {
            group.set_record(records.record(pgid, program, self.owner.as_deref()));
        }
        Ok(Spawned { child, group })
    }

    /// The command's environment: the policy's, then `env` over it, then
    /// Codex's network variable when the sandbox turns the network off.
    fn command_env(
        &self,
        env: &HashMap<String, String>,
        network_disabled: bool,
    ) -> Vec<(OsString, OsString)> {
        let mut out: Vec<(OsString, OsString)> = self.base_env.to_vec();
        let mut set = |name: &OsStr, value: &OsStr| match out.iter_mut().find(|(k, _)| k == name) {
            Some(slot) => slot.1 = value.to_os_string(),
            None => out.push((name.to_os_string(), value.to_os_string())),
        };
        for (name, value) in env {
            set(OsStr::new(name), OsStr::new(value));
        }
        if network_disabled {
            set(OsStr::new(NETWORK_DISABLED_ENV), OsStr::new("1"));
        }
        out
    }

    /// The value of an inherited variable, e.g. the user's `SHELL`.
    pub fn inherited_var(&self, name: &str) -> Option<String> {
        self.base_env
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.to_str().map(str::to_string))
    }

    /// Where `program` would be executed from, as `execvp` looks it up:
    /// a name with a slash is taken from `cwd`, anything else searched on
    /// the command's PATH. NotFound as a direct spawn would report it.
    fn find_program(
        &self,
        program: &str,
        cwd: &Path,
        env: &HashMap<String, String>,
    ) -> io::Result<PathBuf> {
        let is_executable = |path: &Path| {
            path.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        };
        if program.contains('/') {
            let path = cwd.join(program);
            return if path.exists() {
                Ok(path)
            } else {
                Err(not_found())
            };
        }
        let path: Option<OsString> = env.get("PATH").map(OsString::from).or_else(|| {
            self.base_env
                .iter()
                .find(|(k, _)| k == "PATH")
                .map(|(_, v)| v.clone())
        });
        let path = path.unwrap_or_else(|| OsString::from("/usr/local/bin:/usr/bin:/bin"));
        std::env::split_paths(&path)
            .map(|dir| cwd.join(dir).join(program))
            .find(|candidate| is_executable(candidate))
            .ok_or_else(not_found)
    }
}

/// ENOENT as the OS reports it, so the text matches a direct spawn's.
fn not_found() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOENT)
}
