//! What a command-family call runs.

use std::collections::BTreeMap;

use keel_apply_patch::{IMPLICIT_INVOCATION, Invocation as PatchShape, classify};
use serde::{Deserialize, Serialize};

use crate::env::refused_env_var;
use crate::names::{CONTAINER_EXEC, EXEC_COMMAND, LOCAL_SHELL, SHELL, SHELL_COMMAND, WRITE_STDIN};
use crate::params::{
    ExecCommandParams, LocalShellAction, ShellCommandParams, ShellParams, WriteStdinParams,
};
use crate::{parse_error, resolve_dir};

/// The model's `sandbox_permissions` argument (Codex:
/// `codex-rs/protocol/src/models.rs`, `SandboxPermissions`). Part of the
/// approved-for-session key in workflow history: never rename a variant.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum SandboxPermissions {
    /// Run under the turn's sandbox.
    #[default]
    UseDefault,
    /// Run outside the sandbox (after approval).
    RequireEscalated,
    /// Run in the sandbox with `additional_permissions` (after approval).
    WithAdditionalPermissions,
}

impl SandboxPermissions {
    /// Whether the model asked for more than the sandbox gives.
    pub fn requests_escalation(self) -> bool {
        !matches!(self, Self::UseDefault)
    }
}

/// What a tool call runs. Carried from the workflow to the tool-runner,
/// which runs exactly this.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Invocation {
    /// A program with arguments.
    Command(CommandInvocation),
    /// A patch that arrived as a shell command (`apply_patch <<'EOF' …`).
    Patch(PatchInvocation),
    /// Input for a running `exec_command` process.
    WriteStdin(WriteStdinInvocation),
}

/// A command to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandInvocation {
    /// The program and its arguments, exactly as they are executed.
    pub argv: Vec<String>,
    /// The working directory: absolute, `.` and `..` resolved lexically
    /// ([`resolve_dir`]).
    pub cwd: String,
    /// Variables the call sets on top of the operator's environment
    /// (`local_shell`'s `env`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    pub run: RunMode,
}

impl CommandInvocation {
    /// The argv a decision judges and a person is shown: `argv`, preceded
    /// by `env NAME=VALUE…` when the call sets variables, so rules that
    /// allow a bare command do not allow it with an environment that
    /// changes what it does.
    pub fn judged_argv(&self) -> Vec<String> {
        if self.env.is_empty() {
            return self.argv.clone();
        }
        let mut argv = vec!["env".to_string()];
        argv.extend(self.env.iter().map(|(k, v)| format!("{k}={v}")));
        argv.extend(self.argv.iter().cloned());
        argv
    }
}

/// How a command runs and how its output is rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum RunMode {
    /// To completion, killed after the timeout (`shell`, `container.exec`,
    /// `local_shell`, `shell_command`).
    Complete {
        /// `None`: Codex's 10 s.
        timeout_ms: Option<u64>,
        layout: Layout,
    },
    /// Unified exec: started, waited for up to the yield time, and left
    /// running for `write_stdin` if it has not finished (`exec_command`).
    Session {
        /// A stdin pipe for `write_stdin` (there is no pseudo-terminal).
        tty: bool,
        yield_time_ms: Option<u64>,
        max_output_tokens: Option<u64>,
    },
}

/// The output text's layout (Codex: `codex-rs/core/src/tools/mod.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// `{"output": …, "metadata": {…}}` (`shell`, `container.exec`,
    /// `local_shell`).
    Structured,
    /// `Exit code: …\nWall time: …\nOutput:\n…` (`shell_command`).
    Freeform,
}

/// A patch that arrived through a shell tool (Codex:
/// `codex-rs/apply-patch/src/invocation.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatchInvocation {
    /// The patch text, envelope included.
    pub patch: String,
    /// Where the patch's relative paths are resolved: the call's workdir,
    /// then the script's `cd DIR`, resolved lexically.
    pub cwd: String,
    pub output: PatchOutput,
}

/// How a shell-borne patch's result is rendered: as the shell tool it came
/// through would render it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "as", rename_all = "snake_case")]
pub enum PatchOutput {
    Structured,
    Freeform,
    /// `exec_command`'s layout, with the warning that apply_patch has its
    /// own tool.
    ExecCommand {
        max_output_tokens: Option<u64>,
    },
}

/// Input for a running `exec_command` process of the same session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteStdinInvocation {
    /// The id `exec_command` reported (`session_id` to the model).
    pub process_id: i32,
    /// Written before waiting; empty polls.
    pub chars: String,
    pub yield_time_ms: Option<u64>,
    pub max_output_tokens: Option<u64>,
}

/// The approval parameters of a command call (Codex's, `codex-rs/core/src/tools/handlers/shell.rs`:
/// `sandbox_permissions`, `justification`, `prefix_rule`). The workflow's
/// decision reads them; nothing of them reaches the tool-runner.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Escalation {
    pub sandbox_permissions: SandboxPermissions,
    pub justification: Option<String>,
    pub prefix_rule: Option<Vec<String>>,
}

/// A command-family call, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedCall {
    pub invocation: Invocation,
    pub escalation: Escalation,
}

/// Reads a call of the command family (`shell`, `container.exec`,
/// `local_shell`, `shell_command`, `exec_command`, `write_stdin`) made in
/// the session directory `cwd` (absolute), whose user runs `user_shell`.
/// `Err` is the text the model gets instead of an output; nothing runs.
/// `None` for a tool outside the family.
pub fn parse_call(
    name: &str,
    arguments: &str,
    cwd: &str,
    user_shell: &str,
) -> Option<Result<ParsedCall, String>> {
    Some(match name {
        SHELL | CONTAINER_EXEC => shell(arguments, cwd),
        LOCAL_SHELL => local_shell(arguments, cwd),
        SHELL_COMMAND => shell_command(arguments, cwd, user_shell),
        EXEC_COMMAND => exec_command(arguments, cwd, user_shell),
        WRITE_STDIN => write_stdin(arguments),
        _ => return None,
    })
}

fn parse<T: serde::de::DeserializeOwned>(arguments: &str) -> Result<T, String> {
    serde_json::from_str(arguments).map_err(parse_error)
}

fn shell(arguments: &str, cwd: &str) -> Result<ParsedCall, String> {
    let p: ShellParams = parse(arguments)?;
    let escalation = Escalation {
        sandbox_permissions: p.sandbox_permissions.unwrap_or_default(),
        justification: p.justification,
        prefix_rule: p.prefix_rule,
    };
    let cwd = resolve_dir(cwd, p.workdir.as_deref());
    command(
        p.command,
        cwd,
        BTreeMap::new(),
        p.timeout_ms,
        Layout::Structured,
        escalation,
    )
}

fn local_shell(arguments: &str, cwd: &str) -> Result<ParsedCall, String> {
    let a: LocalShellAction = parse(arguments)?;
    let env = a.env.unwrap_or_default();
    if let Some((name, why)) = env
        .keys()
        .find_map(|name| refused_env_var(name).map(|why| (name, why)))
    {
        return Err(format!(
            "execution error: the environment variable {name:?} cannot be set by a tool call: {why}"
        ));
    }
    let cwd = resolve_dir(cwd, a.working_directory.as_deref());
    command(
        a.command,
        cwd,
        env,
        a.timeout_ms,
        Layout::Structured,
        Escalation::default(),
    )
}

fn shell_command(arguments: &str, cwd: &str, user_shell: &str) -> Result<ParsedCall, String> {
    let p: ShellCommandParams = parse(arguments)?;
    let escalation = Escalation {
        sandbox_permissions: p.sandbox_permissions.unwrap_or_default(),
        justification: p.justification,
        prefix_rule: p.prefix_rule,
    };
    let argv = shell_argv(user_shell, p.login.unwrap_or(true), &p.command);
    let cwd = resolve_dir(cwd, p.workdir.as_deref());
    command(
        argv,
        cwd,
        BTreeMap::new(),
        p.timeout_ms,
        Layout::Freeform,
        escalation,
    )
}

fn exec_command(arguments: &str, cwd: &str, user_shell: &str) -> Result<ParsedCall, String> {
    let p: ExecCommandParams = parse(arguments)?;
    let escalation = Escalation {
        sandbox_permissions: p.sandbox_permissions.unwrap_or_default(),
        justification: p.justification,
        prefix_rule: p.prefix_rule,
    };
    let shell = p
        .shell
        .as_deref()
        .filter(|s| !s.is_empty())
        .unwrap_or(user_shell);
    let argv = shell_argv(shell, p.login.unwrap_or(true), &p.cmd);
    let cwd = resolve_dir(cwd, p.workdir.as_deref());
    let invocation = match patch_in(&argv, &cwd) {
        Some(patch) => Invocation::Patch(PatchInvocation {
            output: PatchOutput::ExecCommand {
                max_output_tokens: p.max_output_tokens,
            },
            ..patch?
        }),
        None => Invocation::Command(CommandInvocation {
            argv,
            cwd,
            env: BTreeMap::new(),
            run: RunMode::Session {
                tty: p.tty,
                yield_time_ms: p.yield_time_ms,
                max_output_tokens: p.max_output_tokens,
            },
        }),
    };
    Ok(ParsedCall {
        invocation,
        escalation,
    })
}

fn write_stdin(arguments: &str) -> Result<ParsedCall, String> {
    let p: WriteStdinParams = parse(arguments)?;
    Ok(ParsedCall {
        invocation: Invocation::WriteStdin(WriteStdinInvocation {
            process_id: p.session_id,
            chars: p.chars,
            yield_time_ms: p.yield_time_ms,
            max_output_tokens: p.max_output_tokens,
        }),
        escalation: Escalation::default(),
    })
}

/// A run-to-completion command, or the patch it really is.
fn command(
    argv: Vec<String>,
    cwd: String,
    env: BTreeMap<String, String>,
    timeout_ms: Option<u64>,
    layout: Layout,
    escalation: Escalation,
) -> Result<ParsedCall, String> {
    if argv.is_empty() {
        return Err(parse_error("command must not be empty"));
    }
    let invocation = match patch_in(&argv, &cwd) {
        Some(patch) => Invocation::Patch(PatchInvocation {
            output: match layout {
                Layout::Structured => PatchOutput::Structured,
                Layout::Freeform => PatchOutput::Freeform,
            },
            ..patch?
        }),
        None => Invocation::Command(CommandInvocation {
            argv,
            cwd,
            env,
            run: RunMode::Complete { timeout_ms, layout },
        }),
    };
    Ok(ParsedCall {
        invocation,
        escalation,
    })
}

/// The patch `argv` carries, if it is an apply_patch invocation (Codex
/// routes those to apply_patch, with its decision); `Err` is the text for
/// a patch that does not parse or lacks the `apply_patch` command.
fn patch_in(argv: &[String], cwd: &str) -> Option<Result<PatchInvocation, String>> {
    let failed = |err: &dyn std::fmt::Display| format!("apply_patch verification failed: {err}");
    match classify(argv) {
        PatchShape::NotPatch => None,
        PatchShape::Implicit => Some(Err(failed(&IMPLICIT_INVOCATION))),
        PatchShape::Invalid(err) => Some(Err(failed(&err))),
        PatchShape::Patch { body, workdir, .. } => Some(Ok(PatchInvocation {
            patch: body,
            cwd: resolve_dir(cwd, workdir.as_deref()),
            // Set by the caller.
            output: PatchOutput::Freeform,
        })),
    }
}

/// `[shell, "-lc" | "-c", script]`: how a shell runs a script (Codex:
/// `codex-rs/core/src/shell.rs`, bash/zsh/sh).
pub(crate) fn shell_argv(shell: &str, login: bool, script: &str) -> Vec<String> {
    let flag = if login { "-lc" } else { "-c" };
    vec![shell.to_string(), flag.to_string(), script.to_string()]
}
