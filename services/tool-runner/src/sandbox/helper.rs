//! The child side of the sandbox: `keel-tool-runner sandbox-exec [--limits
//! JSON] [--policy JSON] -- PROGRAM ARGS...`. The tool-runner starts
//! sandboxed commands — and, when the operator configured resource limits,
//! unsandboxed ones too — through its own binary under this hidden
//! subcommand; the helper confines itself and then `execve`s the command,
//! which keeps the pid, the process group and the pipes, and inherits every
//! restriction. In order:
//!
//! 1. with a `--policy`: `no_new_privs`, and RLIMIT_CORE 0 (no core files
//!    of the workspace's secrets);
//! 2. read-only binds of the protected paths in a mount namespace
//!    ([`super::mounts`]);
//! 3. Landlock: the whole filesystem readable and executable, only the
//!    writable roots (and `/dev/null`) writable;
//! 4. seccomp ([`super::seccomp`]);
//! 5. the `--limits` ([`ResourceLimits`]), last, so that the confinement
//!    above never runs short of descriptors or memory. Without a policy
//!    this is all the helper does (danger-full-access: no `no_new_privs`).
//!
//! A restriction the host cannot apply is skipped unless the policy says
//! `require` (the tool-runner's `--require-sandbox`); the tool-runner knows
//! from [`probe`] at startup what is skipped and reports it. Errors are
//! printed with the word "sandbox", so Codex's denial rule recognises them
//! — except a resource limit that cannot be set, which is no sandbox
//! denial and is not worded as one.
//!
//! `keel-tool-runner sandbox-exec --probe` applies a read-only confinement
//! to itself, checks that a TCP socket is refused, and prints a
//! [`ProbeReport`] as JSON instead of executing anything.

use std::ffi::OsString;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use landlock::{
    ABI, Access, AccessFs, LandlockStatus, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus,
    path_beneath_rules,
};
use nix::sys::resource::{Resource, setrlimit};
use serde::{Deserialize, Serialize};

use super::{Confinement, mounts, seccomp};
use crate::exec::limits::{LimitError, ResourceLimits};

/// The hidden subcommand.
pub const SUBCOMMAND: &str = "sandbox-exec";
const POLICY_FLAG: &str = "--policy";
const LIMITS_FLAG: &str = "--limits";
const PROBE_FLAG: &str = "--probe";
/// The access rights handled: ABI 5 (Linux 6.10) covers writes, truncation,
/// renames across directories and device ioctls; older kernels get what
/// they know (best effort), newer ones add nothing to the filesystem.
const TARGET_ABI: ABI = ABI::V5;
/// ABI 3 is the first that can refuse `truncate`: below it, writes are not
/// fully confined.
const MIN_ENFORCING_ABI: ABI = ABI::V3;
/// Exit codes for a command that could not be executed, as a shell's.
const EXIT_CANNOT_EXECUTE: u8 = 126;
const EXIT_NOT_FOUND: u8 = 127;

#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    #[error(
        "usage: keel-tool-runner sandbox-exec (--probe | [--limits JSON] [--policy JSON] -- PROGRAM [ARGS...])"
    )]
    Usage,
    #[error("invalid sandbox policy: {0}")]
    Policy(serde_json::Error),
    #[error("invalid resource limits: {0}")]
    Limits(serde_json::Error),
    #[error(transparent)]
    SetLimit(#[from] LimitError),
    #[error("cannot set no_new_privs: {0}")]
    NoNewPrivs(nix::Error),
    #[error("landlock: {0}")]
    Landlock(#[from] landlock::RulesetError),
    #[error("landlock is not enforced on this kernel ({0})")]
    LandlockMissing(String),
    #[error(transparent)]
    Seccomp(#[from] seccomp::SeccompError),
}

/// What a confinement achieved, as far as the helper can tell.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeReport {
    /// The Landlock ABI in effect, 0 without Landlock.
    pub landlock_abi: u32,
    /// Landlock restricted writes (ABI >= 3, rules enforced).
    pub landlock_enforced: bool,
    pub landlock_detail: String,
    /// The read-only binds of protected paths work.
    pub mounts_enforced: bool,
    pub mounts_detail: String,
    /// The seccomp filter is installed.
    pub seccomp_enforced: bool,
    pub seccomp_detail: String,
    /// A TCP socket was refused after the filter was installed.
    pub network_refused: bool,
}

/// The argv that runs `argv` through `helper`: confined by `confinement`
/// when given, under `limits` when any is set.
pub fn wrap_argv(
    helper: &Path,
    confinement: Option<&Confinement>,
    limits: &ResourceLimits,
    argv: &[String],
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
    out.push("--".into());
    out.extend(argv.iter().map(OsString::from));
    out
}

/// Runs the helper when the process was started as one; `None` otherwise.
/// Called first thing in `main`, before any thread exists (namespaces and
/// seccomp need a single-threaded process).
pub fn dispatch() -> Option<ExitCode> {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    if args.first().is_none_or(|first| first != SUBCOMMAND) {
        return None;
    }
    Some(match run(&args[1..]) {
        Ok(code) => code,
        Err(err @ (HelperError::SetLimit(_) | HelperError::Limits(_))) => {
            // Not a sandbox failure: no "sandbox" in the text.
            eprintln!("keel-tool-runner: {err}");
            ExitCode::from(EXIT_CANNOT_EXECUTE)
        }
        Err(err) => {
            eprintln!("keel-tool-runner sandbox-exec: cannot set up the sandbox: {err}");
            ExitCode::from(EXIT_CANNOT_EXECUTE)
        }
    })
}

/// What the helper was asked to do.
#[derive(Debug, PartialEq, Eq)]
enum Invocation<'a> {
    Probe,
    Exec {
        confinement: Option<Confinement>,
        limits: ResourceLimits,
        program: &'a OsString,
        args: &'a [OsString],
    },
}

fn parse(args: &[OsString]) -> Result<Invocation<'_>, HelperError> {
    if let [flag] = args
        && flag == PROBE_FLAG
    {
        return Ok(Invocation::Probe);
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
                    program,
                    args,
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

fn run(args: &[OsString]) -> Result<ExitCode, HelperError> {
    match parse(args)? {
        Invocation::Probe => {
            let report = probe();
            println!("{}", serde_json::to_string(&report).unwrap_or_default());
            Ok(ExitCode::SUCCESS)
        }
        Invocation::Exec {
            confinement,
            limits,
            program,
            args,
        } => {
            match &confinement {
                Some(confinement) => {
                    confine(confinement)?;
                }
                // Unsandboxed, here only for the limits: the tool-runner's
                // RLIMIT_CORE 0 is inherited already; set it again anyway.
                None => {
                    let _ = setrlimit(Resource::RLIMIT_CORE, 0, 0);
                }
            }
            limits.apply()?;
            let err = std::process::Command::new(program).args(args).exec();
            // "sandbox" only when there is one to blame.
            let who = if confinement.is_some() {
                "keel-tool-runner sandbox-exec"
            } else {
                "keel-tool-runner"
            };
            eprintln!(
                "{who}: cannot execute {}: {err}",
                Path::new(program).display()
            );
            Ok(ExitCode::from(
                if err.kind() == std::io::ErrorKind::NotFound {
                    EXIT_NOT_FOUND
                } else {
                    EXIT_CANNOT_EXECUTE
                },
            ))
        }
    }
}

/// Applies `confinement` to this process; returns what it achieved. Fails
/// only on what `require` makes mandatory.
fn confine(confinement: &Confinement) -> Result<ProbeReport, HelperError> {
    let mut report = ProbeReport::default();
    nix::sys::prctl::set_no_new_privs().map_err(HelperError::NoNewPrivs)?;
    // Best effort: a core file is a convenience nobody asked for.
    let _ = setrlimit(Resource::RLIMIT_CORE, 0, 0);

    let protected: Vec<&Path> = confinement
        .writable
        .iter()
        .flat_map(|root| root.read_only_subpaths.iter().map(PathBuf::as_path))
        .collect();
    // Never mandatory: not every host has namespaces, and the startup probe
    // has already reported whether protected paths are enforced.
    match mounts::protect(&protected) {
        Ok(()) => report.mounts_enforced = true,
        Err(err) => report.mounts_detail = err.to_string(),
    }

    let roots: Vec<&Path> = confinement
        .writable
        .iter()
        .map(|root| root.root.as_path())
        .collect();
    match restrict_filesystem(&roots) {
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
    if confinement.require && !report.landlock_enforced {
        return Err(HelperError::LandlockMissing(report.landlock_detail));
    }

    match seccomp::install(confinement.restrict_network) {
        Ok(()) => report.seccomp_enforced = true,
        Err(err) if confinement.require => return Err(err.into()),
        Err(err) => report.seccomp_detail = err.to_string(),
    }
    Ok(report)
}

/// Landlock: read and execute everywhere, write only under `writable`.
/// Returns the ABI in effect and the ruleset's status.
fn restrict_filesystem(writable: &[&Path]) -> Result<(u32, RulesetStatus), HelperError> {
    let status = Ruleset::default()
        .handle_access(AccessFs::from_all(TARGET_ABI))?
        .create()?
        .add_rules(path_beneath_rules(["/"], AccessFs::from_read(TARGET_ABI)))?
        // Writing to /dev/null discards; commands do it all the time.
        .add_rules(path_beneath_rules(
            ["/dev/null"],
            AccessFs::from_all(TARGET_ABI),
        ))?
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

/// Confines this process as read-only without network, with the temporary
/// directory as a protected path, and reports what took.
fn probe() -> ProbeReport {
    let probe_policy = Confinement {
        writable: vec![super::WritableRoot {
            root: PathBuf::from("/dev/null"),
            read_only_subpaths: vec![std::env::temp_dir()],
        }],
        restrict_network: true,
        require: false,
    };
    let mut report = match confine(&probe_policy) {
        Ok(report) => report,
        Err(err) => ProbeReport {
            seccomp_detail: err.to_string(),
            ..ProbeReport::default()
        },
    };
    report.network_refused = std::net::TcpListener::bind("127.0.0.1:0").is_err()
        && std::net::UdpSocket::bind("127.0.0.1:0").is_err();
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::limits::MIB;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    fn confinement() -> Confinement {
        Confinement {
            writable: Vec::new(),
            restrict_network: true,
            require: false,
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
                program,
                args,
            } = parse(&wrapped[2..]).unwrap()
            else {
                panic!("not an exec: {wrapped:?}");
            };
            assert_eq!(parsed, confinement);
            assert_eq!(parsed_limits, limits);
            assert_eq!(program, "sh");
            assert_eq!(args, os(&["-c", "true"]));
        }
    }

    #[test]
    fn bad_invocations_are_refused() {
        assert_eq!(parse(&os(&["--probe"])).unwrap(), Invocation::Probe);
        for bad in [
            &[][..],
            &["--"][..],
            &["--policy"][..],
            &["--policy", "{}", "--", "sh"][..],
            &["--limits", "nope", "--", "sh"][..],
            &["--limits", "{}", "--limits", "{}", "--", "sh"][..],
            &["--frobnicate", "--", "sh"][..],
            &["--limits", "{}", "sh"][..],
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
    fn a_limit_error_is_not_worded_as_a_sandbox_denial() {
        let err = HelperError::SetLimit(LimitError::Set {
            resource: "RLIMIT_FSIZE",
            value: 1,
            source: nix::Error::EINVAL,
        });
        assert!(!err.to_string().to_lowercase().contains("sandbox"));
    }
}
