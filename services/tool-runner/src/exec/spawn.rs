//! The one place the tool-runner starts a process. Everything that runs a
//! command — `shell`, `shell_command`, `exec_command`, Exec — comes through
//! [`Executor::spawn`], so confinement and resource limits wrap here: a
//! sandboxed command, or any command when the operator set rlimits, is
//! started as `<helper> sandbox-exec [--limits …] [--policy …] -- argv`
//! (see [`crate::sandbox::helper`]), which confines itself, applies the
//! limits and then becomes the command, keeping its pid, process group and
//! pipes. Without either, the command is spawned directly.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::{Child, Command};

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
    /// filter them (as in Codex, where the policy builds the base).
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
        let spawn_error = |source| ExecError::Spawn {
            program: program.clone(),
            source,
        };
        // The helper confines sandboxed commands and applies the limits;
        // a command that needs neither is started directly (the fast path).
        let mut command = if sandbox.is_none() && self.limits.is_empty() {
            let mut command = Command::new(program);
            command.args(args);
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
            // The helper executes the command only after confining itself,
            // when it can no longer report a spawn error the way a direct
            // spawn does: look the program up here.
            self.find_program(program, cwd, env).map_err(spawn_error)?;
            let wrapped = helper::wrap_argv(helper, sandbox, &self.limits, argv);
            let mut command = Command::new(&wrapped[0]);
            command.args(&wrapped[1..]);
            command
        };
        command
            .current_dir(cwd)
            .env_clear()
            .envs(self.base_env.iter().map(|(k, v)| (k, v)))
            .envs(env);
        if sandbox.is_some_and(|c| c.restrict_network) {
            command.env(NETWORK_DISABLED_ENV, "1");
        }
        let child = command
            .stdin(match stdin {
                StdinMode::Null => Stdio::null(),
                StdinMode::Piped => Stdio::piped(),
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            // The group kill reaches the leader too; this also makes tokio
            // reap it if the owner is dropped mid-run.
            .kill_on_drop(true)
            .spawn()
            .map_err(spawn_error)?;
        let mut group = ProcessGroup::new(child.id());
        // Right after the spawn, before anything awaits: the window in which
        // a tool-runner crash leaves the command unrecorded stays tiny. A
        // small write to a local directory, so done in place.
        if let (Some(records), Some(pgid)) = (&self.records, group.id()) {
            group.set_record(records.record(pgid, program, self.owner.as_deref()));
        }
        Ok(Spawned { child, group })
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
