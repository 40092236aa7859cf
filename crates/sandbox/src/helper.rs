//! The child side of the sandbox: `keel-tool-runner sandbox-exec [--limits
//! JSON] [--policy JSON] (--job | -- PROGRAM ARGS...)`. The tool-runner
//! starts sandboxed commands — and, when the operator configured resource
//! limits, unsandboxed ones too — through its own binary under this hidden
//! subcommand.
//!
//! The helper starts with a fixed, clean environment: nothing the model,
//! the request or the operator's command environment controls reaches it,
//! so no `LD_PRELOAD` or `LD_AUDIT` library runs in it before it has
//! confined itself. The command's environment travels as data, in
//! [`ENV_PREFIX`]`0`, `…1`, … (base64 of `NAME=VALUE\0…`, split to stay
//! under the kernel's 128 KiB per string), never in argv, which
//! `/proc/PID/cmdline` shows to every user; the helper applies it only
//! when it starts the command.
//!
//! With a `--policy`, in order:
//!
//! 0. every inherited descriptor but 0, 1 and 2 marked close-on-exec
//!    ([`init::close_inherited_descriptors`]): the command gets none;
//! 1. `no_new_privs`, and RLIMIT_CORE 0 (no core files of the workspace's
//!    secrets);
//! 2. new PID and IPC namespaces and a fork ([`super::init`]): the child is PID 1
//!    of the namespace, in a new session without a controlling terminal,
//!    and does the rest, the parent waits;
//! 3. the command's view of the filesystem ([`super::mounts`]): a mount
//!    namespace with the protected paths read-only, the hidden paths
//!    masked, a minimal `/dev` and a new `/proc`;
//! 4. Landlock: the whole filesystem readable and executable, only the
//!    writable roots (and `/dev/null`, `/dev/shm`, …) writable;
//! 5. capabilities cut down ([`super::caps`]);
//! 6. seccomp ([`super::seccomp`]);
//! 7. the `--limits` ([`ResourceLimits`]), last, so that the confinement
//!    above never runs short of descriptors or memory;
//! 8. the command, started by PID 1 with exactly its environment — or,
//!    with `--job`, a job read as JSON from stdin and run by PID 1 itself,
//!    its result written as JSON to stdout ([`Job`]).
//!
//! Without a policy (danger-full-access, here only for the limits) the
//! helper applies the limits and `execve`s the command, which keeps the
//! pid, the process group and the pipes.
//!
//! Every restriction is mandatory unless the policy says otherwise
//! (`require: false`, the tool-runner's `--insecure-partial-sandbox`); the
//! tool-runner knows from the probe at startup what this host enforces and
//! refuses calls it cannot confine before starting anything. Errors are
//! printed with the word "sandbox", so Codex's denial rule recognises them
//! — except a resource limit that cannot be set, which is no sandbox
//! denial and is not worded as one.
//!
//! `keel-tool-runner sandbox-exec --probe DIR` confines itself as a
//! read-only command would be, with a writable root, a protected path and
//! hidden paths laid out in the (empty) directory DIR, checks what each
//! restriction really does, and prints a [`ProbeReport`] as JSON.

use std::ffi::OsString;
use std::io::{Read as _, Write as _};
use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use base64::Engine as _;
use landlock::{
    ABI, Access, AccessFs, LandlockStatus, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus,
    Scope, path_beneath_rules,
};
use nix::sys::resource::{Resource, setrlimit};
use serde::{Deserialize, Serialize};

use super::init::{self, EXIT_CANNOT_EXECUTE, EXIT_NOT_FOUND, Namespaces};
use super::mounts::{self, Staging};
use crate::limits::{LimitError, ResourceLimits};
use crate::{Confinement, caps, probe, seccomp};

/// The hidden subcommand.
pub const SUBCOMMAND: &str = "sandbox-exec";
/// The command's environment, in numbered parts: `KEEL_SANDBOX_ENV_0`, …
pub const ENV_PREFIX: &str = "KEEL_SANDBOX_ENV_";
const POLICY_FLAG: &str = "--policy";
const LIMITS_FLAG: &str = "--limits";
pub(super) const PROBE_FLAG: &str = "--probe";
const JOB_FLAG: &str = "--job";
/// The largest part of the encoded environment: the kernel refuses any
/// single argument or variable over 128 KiB (MAX_ARG_STRLEN).
const ENV_PART_BYTES: usize = 96 * 1024;
/// The access rights handled: ABI 5 (Linux 6.10) covers writes, truncation,
/// renames across directories and device ioctls; older kernels get what
/// they know (best effort), newer ones add nothing to the filesystem.
const TARGET_ABI: ABI = ABI::V5;
/// ABI 3 is the first that can refuse `truncate`: below it, writes are not
/// fully confined.
const MIN_ENFORCING_ABI: ABI = ABI::V3;
/// What stays writable in the minimal `/dev`: the harmless devices, and
/// `/dev/shm`, a tmpfs private to the command.
const WRITABLE_DEVICES: [&str; 5] = [
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/tty",
    "/dev/shm",
];

#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    #[error(
        "usage: keel-tool-runner sandbox-exec (--probe DIR | [--limits JSON] [--policy JSON] (--job | -- PROGRAM [ARGS...]))"
    )]
    Usage,
    #[error("invalid sandbox policy: {0}")]
    Policy(serde_json::Error),
    #[error("invalid resource limits: {0}")]
    Limits(serde_json::Error),
    #[error("invalid command environment: {0}")]
    Env(String),
    #[error(transparent)]
    SetLimit(#[from] LimitError),
    #[error("cannot set no_new_privs: {0}")]
    NoNewPrivs(nix::Error),
    #[error("{0}")]
    PidNamespace(String),
    #[error("cannot fork: {0}")]
    Fork(nix::Error),
    #[error("{0}")]
    Session(String),
    #[error("cannot keep inherited descriptors from the command: {0}")]
    Descriptors(std::io::Error),
    #[error(transparent)]
    Mounts(#[from] mounts::MountError),
    #[error("the processes of the command are not isolated: {0}")]
    Processes(String),
    #[error("cannot enter the working directory through the sandbox's mounts: {0}")]
    WorkingDirectory(std::io::Error),
    #[error("landlock: {0}")]
    Landlock(#[from] landlock::RulesetError),
    #[error("landlock is not enforced on this kernel ({0})")]
    LandlockMissing(String),
    #[error(transparent)]
    Caps(#[from] caps::CapsError),
    #[error(transparent)]
    Seccomp(#[from] seccomp::SeccompError),
    #[error("confined job: {0}")]
    Job(String),
}

/// What a confinement achieved, as far as the helper can tell; the probe
/// checks each part for real before reporting it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProbeReport {
    /// The Landlock ABI in effect, 0 without Landlock.
    pub landlock_abi: u32,
    /// Landlock restricted writes (ABI >= 3, rules enforced).
    pub landlock_enforced: bool,
    pub landlock_detail: String,
    /// The read-only binds of protected paths work.
    pub mounts_enforced: bool,
    pub mounts_detail: String,
    /// Hidden paths are masked.
    pub hidden_enforced: bool,
    pub hidden_detail: String,
    /// A PID namespace of its own with its own `/proc`.
    pub processes_isolated: bool,
    pub processes_detail: String,
    /// The minimal `/dev` replaced the host's.
    pub devices_minimal: bool,
    pub devices_detail: String,
    /// The capability sets are reduced to the kept ones.
    pub capabilities_dropped: bool,
    pub capabilities_detail: String,
    /// The seccomp filter is installed.
    pub seccomp_enforced: bool,
    pub seccomp_detail: String,
    /// A TCP socket was refused after the filter was installed.
    pub network_refused: bool,
}

/// The argv that runs `argv` through `helper`: confined by `confinement`
/// when given, under `limits` when any is set. Start it with
/// [`helper_env`] as its whole environment.
pub fn wrap_argv(
    helper: &Path,
    confinement: Option<&Confinement>,
    limits: &ResourceLimits,
    argv: &[String],
) -> Vec<OsString> {
    let mut out = helper_prefix(helper, confinement, limits);
    out.push("--".into());
    out.extend(argv.iter().map(OsString::from));
    out
}

/// The argv of a confined job: the helper confines itself by
/// `confinement`, then reads the job from stdin.
pub fn job_argv(helper: &Path, confinement: &Confinement) -> Vec<OsString> {
    let mut out = helper_prefix(helper, Some(confinement), &ResourceLimits::default());
    out.push(JOB_FLAG.into());
    out
}

fn helper_prefix(
    helper: &Path,
    confinement: Option<&Confinement>,
    limits: &ResourceLimits,
) -> Vec<OsString> {
    let mut out: Vec<OsString> = vec![helper.as_os_str().to_os_string(), SUBCOMMAND.into()];
    if !limits.is_empty() {
        // Serialising plain data cannot fail; an empty text would be refused
        // by the helper rather than run without the limits.
        out.push(LIMITS_FLAG.into());
        out.push(serde_json::to_string(limits).unwrap_or_default().into());
    }
    if let Some(confinement) = confinement {
        // Likewise: never an unconfined run for a serialisation error.
        out.push(POLICY_FLAG.into());
        out.push(
            serde_json::to_string(confinement)
                .unwrap_or_default()
                .into(),
        );
    }
    out
}

/// The helper's whole environment when it is to start a command with
/// `env`: the command's variables encoded as data.
pub fn helper_env(env: &[(OsString, OsString)]) -> Vec<(String, String)> {
    let mut block = Vec::new();
    for (name, value) in env {
        block.extend_from_slice(name.as_bytes());
        block.push(b'=');
        block.extend_from_slice(value.as_bytes());
        block.push(0);
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(&block);
    // Base64 is ASCII: any byte offset is a character boundary.
    let parts: Vec<&str> = if encoded.is_empty() {
        vec![""]
    } else {
        encoded
            .as_bytes()
            .chunks(ENV_PART_BYTES)
            .map(|part| std::str::from_utf8(part).unwrap_or_default())
            .collect()
    };
    parts
        .into_iter()
        .enumerate()
        .map(|(i, part)| (format!("{ENV_PREFIX}{i}"), part.to_string()))
        .collect()
}

/// The command's environment, decoded from the helper's own; empty when
/// none was passed.
fn command_env() -> Result<Vec<(OsString, OsString)>, HelperError> {
    let mut encoded = String::new();
    for i in 0.. {
        match std::env::var(format!("{ENV_PREFIX}{i}")) {
            Ok(part) => encoded.push_str(&part),
            Err(std::env::VarError::NotPresent) => break,
            Err(err) => return Err(HelperError::Env(err.to_string())),
        }
    }
    decode_env(&encoded)
}

fn decode_env(encoded: &str) -> Result<Vec<(OsString, OsString)>, HelperError> {
    let block = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|err| HelperError::Env(err.to_string()))?;
    block
        .split(|b| *b == 0)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            let at = entry
                .iter()
                .position(|b| *b == b'=')
                .filter(|at| *at > 0)
                .ok_or_else(|| HelperError::Env("an entry without NAME=".to_string()))?;
            Ok((
                OsString::from_vec(entry[..at].to_vec()),
                OsString::from_vec(entry[at + 1..].to_vec()),
            ))
        })
        .collect()
}

/// Work a confined helper runs in-process (`--job`): read as JSON from
/// stdin by PID 1 once it is confined, its output written as JSON to
/// stdout. The binary that hosts the helper names its job type in
/// [`dispatch`].
pub trait Job: serde::de::DeserializeOwned {
    fn run(self) -> serde_json::Value;
}

/// Runs the helper when the process was started as one; `None` otherwise.
/// Called first thing in `main`, before any thread exists (namespaces,
/// the fork and seccomp need a single-threaded process). `J` is what
/// `--job` reads.
pub fn dispatch<J: Job>() -> Option<ExitCode> {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    if args.first().is_none_or(|first| first != SUBCOMMAND) {
        return None;
    }
    Some(match run::<J>(&args[1..]) {
        Ok(code) => code,
        Err(err @ (HelperError::SetLimit(_) | HelperError::Limits(_))) => {
            // Not a sandbox failure: no "sandbox" in the text.
            eprintln!("keel-tool-runner: {err}");
            exit_code(EXIT_CANNOT_EXECUTE)
        }
        Err(err) => {
            eprintln!("keel-tool-runner sandbox-exec: cannot set up the sandbox: {err}");
            exit_code(EXIT_CANNOT_EXECUTE)
        }
    })
}

fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// What the helper was asked to do.
#[derive(Debug, PartialEq, Eq)]
enum Invocation<'a> {
    Probe(PathBuf),
    Exec {
        confinement: Option<Confinement>,
        limits: ResourceLimits,
        target: Target<'a>,
    },
}

#[derive(Debug, PartialEq, Eq)]
enum Target<'a> {
    Command {
        program: &'a OsString,
        args: &'a [OsString],
    },
    /// A confined job from stdin (needs a policy).
    Job,
}

fn parse(args: &[OsString]) -> Result<Invocation<'_>, HelperError> {
    if let [flag, dir] = args
        && flag == PROBE_FLAG
    {
        return Ok(Invocation::Probe(PathBuf::from(dir)));
    }
    let mut confinement = None;
    let mut limits = None;
    let mut rest = args;
    loop {
        match rest {
            [dash, argv @ ..] if dash == "--" => {
                let (program, args) = argv.split_first().ok_or(HelperError::Usage)?;
                return Ok(Invocation::Exec {
                    confinement,
                    limits: limits.unwrap_or_default(),
                    target: Target::Command { program, args },
                });
            }
            [flag] if flag == JOB_FLAG && confinement.is_some() => {
                return Ok(Invocation::Exec {
                    confinement,
                    limits: limits.unwrap_or_default(),
                    target: Target::Job,
                });
            }
            [flag, value, tail @ ..] if flag == POLICY_FLAG && confinement.is_none() => {
                let value = value.to_str().ok_or(HelperError::Usage)?;
                confinement = Some(serde_json::from_str(value).map_err(HelperError::Policy)?);
                rest = tail;
            }
            [flag, value, tail @ ..] if flag == LIMITS_FLAG && limits.is_none() => {
                let value = value.to_str().ok_or(HelperError::Usage)?;
                limits = Some(serde_json::from_str(value).map_err(HelperError::Limits)?);
                rest = tail;
            }
            _ => return Err(HelperError::Usage),
        }
    }
}

fn run<J: Job>(args: &[OsString]) -> Result<ExitCode, HelperError> {
    match parse(args)? {
        Invocation::Probe(dir) => {
            set_no_new_privs()?;
            let namespaces = init::enter(false)?;
            // PID 1 from here on.
            let report = probe::run(&dir, &namespaces);
            println!("{}", serde_json::to_string(&report).unwrap_or_default());
            Ok(ExitCode::SUCCESS)
        }
        Invocation::Exec {
            confinement: None,
            limits,
            target: Target::Command { program, args },
        } => {
            // Unsandboxed, here only for the limits: the tool-runner's
            // RLIMIT_CORE 0 is inherited already; set it again anyway.
            let _ = setrlimit(Resource::RLIMIT_CORE, 0, 0);
            let env = command_env()?;
            limits.apply()?;
            let err = std::process::Command::new(program)
                .args(args)
                .env_clear()
                .envs(env.iter().map(|(k, v)| (k, v)))
                .exec();
            // No "sandbox" in the text: there is none to blame.
            eprintln!(
                "keel-tool-runner: cannot execute {}: {err}",
                Path::new(program).display()
            );
            Ok(exit_code(if err.kind() == std::io::ErrorKind::NotFound {
                EXIT_NOT_FOUND
            } else {
                EXIT_CANNOT_EXECUTE
            }))
        }
        Invocation::Exec {
            confinement: None,
            target: Target::Job,
            ..
        } => Err(HelperError::Usage),
        Invocation::Exec {
            confinement: Some(confinement),
            limits,
            target,
        } => {
            let env = match target {
                Target::Command { .. } => command_env()?,
                Target::Job => Vec::new(),
            };
            match init::close_inherited_descriptors() {
                Ok(()) => {}
                Err(err) if confinement.require => return Err(err),
                Err(err) => eprintln!("keel-tool-runner sandbox-exec: {err}"),
            }
            set_no_new_privs()?;
            let namespaces = init::enter(confinement.require)?;
            // PID 1 from here on.
            confine(&confinement, &namespaces)?;
            // PID 1 stays visible to the command: its memory is not to be
            // read or written through /proc/1/mem (the command's own
            // `execve` makes the command dumpable again).
            let _ = nix::sys::prctl::set_dumpable(false);
            limits.apply()?;
            match target {
                Target::Command { program, args } => {
                    Ok(exit_code(init::run_command(program, args, &env)))
                }
                Target::Job => serve_job::<J>().map(|()| ExitCode::SUCCESS),
            }
        }
    }
}

fn set_no_new_privs() -> Result<(), HelperError> {
    nix::sys::prctl::set_no_new_privs().map_err(HelperError::NoNewPrivs)?;
    // Best effort: a core file is a convenience nobody asked for.
    let _ = setrlimit(Resource::RLIMIT_CORE, 0, 0);
    Ok(())
}

/// Reads one job from stdin, runs it, writes its result to stdout.
fn serve_job<J: Job>() -> Result<(), HelperError> {
    let mut input = Vec::new();
    std::io::stdin()
        .read_to_end(&mut input)
        .map_err(|err| HelperError::Job(format!("cannot read the job: {err}")))?;
    let job: J = serde_json::from_slice(&input)
        .map_err(|err| HelperError::Job(format!("invalid job: {err}")))?;
    let output = job.run();
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer(&mut stdout, &output)
        .map_err(|err| HelperError::Job(format!("cannot write the result: {err}")))?;
    stdout
        .flush()
        .map_err(|err| HelperError::Job(format!("cannot write the result: {err}")))
}

/// One restriction's outcome: recorded in the report, and an error when
/// the confinement requires it.
fn step<E: Into<HelperError> + std::fmt::Display>(
    require: bool,
    result: Result<(), E>,
    ok: &mut bool,
    detail: &mut String,
) -> Result<(), HelperError> {
    match result {
        Ok(()) => {
            *ok = true;
            Ok(())
        }
        Err(err) if require => Err(err.into()),
        Err(err) => {
            *detail = err.to_string();
            Ok(())
        }
    }
}

/// Applies `confinement` to this process, PID 1 of its namespace; returns
/// what it achieved. Fails on anything missing when `require`.
pub(super) fn confine(
    confinement: &Confinement,
    namespaces: &Namespaces,
) -> Result<ProbeReport, HelperError> {
    let require = confinement.require;
    let mut report = ProbeReport::default();

    match mounts::enter_namespace(namespaces.in_user_namespace) {
        Ok(()) => {
            let protected: Vec<&Path> = confinement
                .writable
                .iter()
                .flat_map(|root| root.read_only_subpaths.iter().map(PathBuf::as_path))
                .collect();
            let roots: Vec<&Path> = confinement
                .writable
                .iter()
                .map(|root| root.root.as_path())
                .collect();
            let held: Vec<&Path> = protected
                .iter()
                .copied()
                .chain(confinement.hidden.iter().map(PathBuf::as_path))
                .collect();
            step(
                require,
                mounts::pin(&mounts::pinned_ancestors(&held, &roots))
                    .and_then(|()| mounts::protect(&protected)),
                &mut report.mounts_enforced,
                &mut report.mounts_detail,
            )?;
            match Staging::mount() {
                Ok(staging) => {
                    step(
                        require,
                        staging.hide(&confinement.hidden),
                        &mut report.hidden_enforced,
                        &mut report.hidden_detail,
                    )?;
                    step(
                        require,
                        staging.build_dev(),
                        &mut report.devices_minimal,
                        &mut report.devices_detail,
                    )?;
                    if namespaces.pid_isolated {
                        step(
                            require,
                            staging.finish_with_proc(),
                            &mut report.processes_isolated,
                            &mut report.processes_detail,
                        )?;
                    } else {
                        staging.abandon();
                        report.processes_detail.clone_from(&namespaces.pid_detail);
                    }
                }
                Err(err) if require => return Err(err.into()),
                Err(err) => {
                    let detail = err.to_string();
                    report.hidden_detail.clone_from(&detail);
                    report.devices_detail.clone_from(&detail);
                    report.processes_detail = detail;
                }
            }
        }
        Err(err) if require => return Err(err.into()),
        Err(err) => {
            let detail = err.to_string();
            report.mounts_detail.clone_from(&detail);
            report.hidden_detail.clone_from(&detail);
            report.devices_detail.clone_from(&detail);
            report.processes_detail = detail;
        }
    }
    if require && !report.processes_isolated {
        return Err(HelperError::Processes(report.processes_detail));
    }
    // The working directory was entered before the mounts above, so it
    // still names the directory underneath them: relative paths would
    // reach what the pins, masks and read-only binds cover (a hidden blob
    // store inside the cwd). Enter it again by path, through them.
    if let Ok(cwd) = std::env::current_dir() {
        std::env::set_current_dir(&cwd).map_err(HelperError::WorkingDirectory)?;
    }

    let roots: Vec<&Path> = confinement
        .writable
        .iter()
        .map(|root| root.root.as_path())
        .collect();
    match restrict_filesystem(&roots, confinement.restrict_network) {
        Ok((abi, status)) => {
            report.landlock_abi = abi;
            report.landlock_enforced =
                status != RulesetStatus::NotEnforced && abi >= abi_number(MIN_ENFORCING_ABI);
            if !report.landlock_enforced {
                report.landlock_detail = format!("landlock abi {abi}: writes are not confined");
            }
        }
        Err(err) => report.landlock_detail = err.to_string(),
    }
    if require && !report.landlock_enforced {
        return Err(HelperError::LandlockMissing(report.landlock_detail));
    }

    step(
        require,
        caps::drop_capabilities(),
        &mut report.capabilities_dropped,
        &mut report.capabilities_detail,
    )?;
    step(
        require,
        seccomp::install(confinement.restrict_network),
        &mut report.seccomp_enforced,
        &mut report.seccomp_detail,
    )?;
    Ok(report)
}

/// Landlock: read and execute everywhere, write only under `writable` and
/// the writable devices. With the network off, also no abstract unix
/// socket of the host (ABI 6, Linux 6.12; best effort below): the seccomp
/// filter cannot refuse `sendmsg`, which socketpairs need, so a datagram
/// to any named socket would otherwise get out, and abstract ones have no
/// file whose permissions or mounts could stop it. Returns the ABI in
/// effect and the ruleset's status.
fn restrict_filesystem(
    writable: &[&Path],
    restrict_network: bool,
) -> Result<(u32, RulesetStatus), HelperError> {
    let devices: Vec<&str> = WRITABLE_DEVICES
        .into_iter()
        .filter(|path| Path::new(path).exists())
        .collect();
    let mut ruleset = Ruleset::default().handle_access(AccessFs::from_all(TARGET_ABI))?;
    if restrict_network {
        ruleset = ruleset.scope(Scope::AbstractUnixSocket)?;
    }
    let status = ruleset
        .create()?
        .add_rules(path_beneath_rules(["/"], AccessFs::from_read(TARGET_ABI)))?
        // Writing to /dev/null discards; commands do it all the time.
        .add_rules(path_beneath_rules(devices, AccessFs::from_all(TARGET_ABI)))?
        .add_rules(path_beneath_rules(writable, AccessFs::from_all(TARGET_ABI)))?
        .restrict_self()?;
    let abi = match status.landlock {
        LandlockStatus::Available { effective_abi, .. } => abi_number(effective_abi),
        LandlockStatus::NotEnabled | LandlockStatus::NotImplemented => 0,
    };
    Ok((abi, status.ruleset))
}

fn abi_number(abi: ABI) -> u32 {
    let known = [
        ABI::V1,
        ABI::V2,
        ABI::V3,
        ABI::V4,
        ABI::V5,
        ABI::V6,
        ABI::V7,
        ABI::V8,
        ABI::V9,
        ABI::V10,
    ];
    // The crate caps the effective ABI at the newest it knows, listed here.
    known
        .iter()
        .position(|k| *k == abi)
        .and_then(|i| u32::try_from(i + 1).ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::MIB;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    fn confinement() -> Confinement {
        Confinement {
            writable: Vec::new(),
            hidden: vec![PathBuf::from("/srv/state")],
            restrict_network: true,
            require: true,
        }
    }

    fn limits() -> ResourceLimits {
        ResourceLimits {
            file_size_bytes: Some(MIB),
            ..ResourceLimits::default()
        }
    }

    fn argv() -> Vec<String> {
        vec!["sh".to_string(), "-c".to_string(), "true".to_string()]
    }

    #[test]
    fn wrapped_argv_parses_back() {
        let helper = Path::new("/bin/keel-tool-runner");
        for (confinement, limits) in [
            (Some(confinement()), ResourceLimits::default()),
            (None, limits()),
            (Some(confinement()), limits()),
            (None, ResourceLimits::default()),
        ] {
            let wrapped = wrap_argv(helper, confinement.as_ref(), &limits, &argv());
            assert_eq!(wrapped[0], "/bin/keel-tool-runner");
            assert_eq!(wrapped[1], SUBCOMMAND);
            assert_eq!(
                wrapped.iter().any(|arg| arg == LIMITS_FLAG),
                !limits.is_empty()
            );
            assert_eq!(
                wrapped.iter().any(|arg| arg == POLICY_FLAG),
                confinement.is_some()
            );
            let Invocation::Exec {
                confinement: parsed,
                limits: parsed_limits,
                target: Target::Command { program, args },
            } = parse(&wrapped[2..]).unwrap()
            else {
                panic!("not an exec: {wrapped:?}");
            };
            assert_eq!(parsed, confinement);
            assert_eq!(parsed_limits, limits);
            assert_eq!(program, "sh");
            assert_eq!(args, os(&["-c", "true"]));
        }
        let job = job_argv(helper, &confinement());
        assert_eq!(
            parse(&job[2..]).unwrap(),
            Invocation::Exec {
                confinement: Some(confinement()),
                limits: ResourceLimits::default(),
                target: Target::Job,
            }
        );
    }

    #[test]
    fn bad_invocations_are_refused() {
        assert_eq!(
            parse(&os(&["--probe", "/tmp/x"])).unwrap(),
            Invocation::Probe(PathBuf::from("/tmp/x"))
        );
        for bad in [
            &[][..],
            &["--probe"][..],
            &["--"][..],
            &["--policy"][..],
            &["--policy", "{}", "--", "sh"][..],
            &["--limits", "nope", "--", "sh"][..],
            &["--limits", "{}", "--limits", "{}", "--", "sh"][..],
            &["--frobnicate", "--", "sh"][..],
            &["--limits", "{}", "sh"][..],
            // A job is always confined.
            &["--job"][..],
            &["--limits", "{}", "--job"][..],
        ] {
            assert!(parse(&os(bad)).is_err(), "{bad:?} parsed");
        }
        // An unknown limit name is an error, not silently unlimited.
        assert!(matches!(
            parse(&os(&["--limits", r#"{"cpu_sec":1}"#, "--", "sh"])),
            Err(HelperError::Limits(_))
        ));
    }

    #[test]
    fn the_command_environment_round_trips_as_data() {
        let env: Vec<(OsString, OsString)> = vec![
            ("PATH".into(), "/usr/bin:/bin".into()),
            ("EMPTY".into(), "".into()),
            ("EQ".into(), "a=b=c".into()),
            ("LD_PRELOAD".into(), "/w/evil.so".into()),
            (
                OsString::from_vec(b"ODD\xff".to_vec()),
                OsString::from_vec(b"v\xfe".to_vec()),
            ),
        ];
        let vars = helper_env(&env);
        assert_eq!(vars.len(), 1);
        assert_eq!(vars[0].0, format!("{ENV_PREFIX}0"));
        // The helper's own environment names no loader variable.
        assert!(vars.iter().all(|(name, _)| !name.starts_with("LD_")));
        assert_eq!(decode_env(&vars[0].1).unwrap(), env);
        assert!(decode_env(&helper_env(&[])[0].1).unwrap().is_empty());

        // Larger than one part: split, and joined again in order.
        let big: Vec<(OsString, OsString)> = (0..40)
            .map(|i| (format!("V{i}").into(), "x".repeat(8 * 1024).into()))
            .collect();
        let vars = helper_env(&big);
        assert!(vars.len() > 1);
        assert!(vars.iter().all(|(_, v)| v.len() <= ENV_PART_BYTES));
        let joined: String = vars.iter().map(|(_, v)| v.as_str()).collect();
        assert_eq!(decode_env(&joined).unwrap(), big);
        assert!(decode_env("!!").is_err());
    }

    #[test]
    fn a_limit_error_is_not_worded_as_a_sandbox_denial() {
        let err = HelperError::SetLimit(LimitError::Set {
            resource: "RLIMIT_FSIZE",
            value: 1,
            source: nix::Error::EINVAL,
        });
        assert!(!err.to_string().to_lowercase().contains("sandbox"));
    }
}
