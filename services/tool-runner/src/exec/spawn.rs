//! The one place the tool-runner starts a process. Everything that runs a
//! command — `shell`, `shell_command`, `exec_command`, Exec — comes through
//! [`Executor::spawn`], so confinement (the sandbox, to come) wraps here:
//! it can rewrite the argv or add restrictions before the process exists.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;

use tokio::process::{Child, Command};

use super::group::ProcessGroup;
use super::{ExecError, Executor};

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
    /// Starts `argv` in `cwd` with the inherited (secret-free) environment
    /// plus `env`.
    pub(crate) fn spawn(
        &self,
        argv: &[String],
        cwd: &Path,
        env: &HashMap<String, String>,
        stdin: StdinMode,
    ) -> Result<Spawned, ExecError> {
        let (program, args) = argv.split_first().ok_or(ExecError::EmptyArgv)?;
        if let Some(bad) = env.keys().find(|k| k.is_empty() || k.contains(['=', '\0'])) {
            return Err(ExecError::InvalidEnvName(bad.clone()));
        }
        let child = Command::new(program)
            .args(args)
            .current_dir(cwd)
            .env_clear()
            .envs(self.base_env.iter().map(|(k, v)| (k, v)))
            .envs(env)
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
            .map_err(|source| ExecError::Spawn {
                program: program.clone(),
                source,
            })?;
        let group = ProcessGroup::new(child.id());
        Ok(Spawned { child, group })
    }

    /// The value of an inherited variable, e.g. the user's `SHELL`.
    pub fn inherited_var(&self, name: &str) -> Option<String> {
        self.base_env
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.to_str().map(str::to_string))
    }
}
