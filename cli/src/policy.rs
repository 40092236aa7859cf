//! `keel policy check`: what Keel's approval rules decide for a command —
//! the same `keel-policy` code the workflow runs — offline, without a stack.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use keel_policy::{
    ApprovalPolicy, CommandDecision, CommandDecisionInput, Rules, SandboxMode, SandboxPermissions,
    classify, decide_command,
};

use crate::render;

/// Exit status for a rules file that cannot be read or parsed.
const BAD_RULES: u8 = 2;

#[derive(Debug, Subcommand)]
pub(crate) enum PolicyCommand {
    /// Print {"safety", "decision"[, "reason"]} for a command as one JSON object.
    Check(CheckArgs),
}

#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    /// untrusted, on-failure, on-request or never.
    #[arg(long, value_name = "POLICY", default_value = "on-request")]
    approval_policy: ApprovalPolicy,
    /// read-only, workspace-write or danger-full-access.
    #[arg(long, value_name = "MODE", default_value = "read-only")]
    sandbox: SandboxMode,
    /// An exec-policy .rules file; repeat to add more, later files after earlier ones.
    #[arg(long = "rules", value_name = "FILE")]
    rules: Vec<PathBuf>,
    /// The command to judge, after `--`, one argument per word (never split).
    #[arg(last = true, required = true, value_name = "ARGV")]
    argv: Vec<String>,
}

/// Runs a policy subcommand; synchronous and offline.
pub(crate) fn run(command: &PolicyCommand) -> ExitCode {
    match command {
        PolicyCommand::Check(args) => check(args),
    }
}

fn check(args: &CheckArgs) -> ExitCode {
    let rules = match load_rules(&args.rules) {
        Ok(rules) => rules,
        Err(message) => {
            render::note(format_args!("keel: {message}"));
            return ExitCode::from(BAD_RULES);
        }
    };
    let approved_for_session = Default::default();
    let decision = decide_command(&CommandDecisionInput {
        argv: &args.argv,
        cwd: "",
        approval_policy: args.approval_policy,
        sandbox_mode: args.sandbox,
        sandbox_permissions: SandboxPermissions::UseDefault,
        additional_permissions: None,
        justification: None,
        prefix_rule: None,
        rules: &rules,
        approved_for_session: &approved_for_session,
    });
    let line = report(classify(&args.argv).as_str(), &decision);
    match std::io::stdout().write_all(line.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            render::note(format_args!("keel: cannot write the output: {e}"));
            ExitCode::FAILURE
        }
    }
}

fn load_rules(paths: &[PathBuf]) -> Result<Rules, String> {
    let mut rules = Rules::default();
    for path in paths {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read rules file {}: {e}", path.display()))?;
        rules
            .add_source(&path.display().to_string(), &text)
            .map_err(|e| format!("invalid rules file {e}"))?;
    }
    Ok(rules)
}

/// One JSON object, keys in a fixed order: safety, decision, reason.
fn report(safety: &str, decision: &CommandDecision) -> String {
    let (name, reason) = match decision {
        CommandDecision::Allow { .. } => ("allow", None),
        CommandDecision::Prompt { reason, .. } => ("prompt", reason.as_deref()),
        CommandDecision::Forbid { reason } => ("forbid", Some(reason.as_str())),
        CommandDecision::Reject { text } => ("forbid", Some(text.as_str())),
    };
    let json = |s: &str| serde_json::Value::String(s.to_owned()).to_string();
    let mut line = format!("{{\"safety\":{},\"decision\":{}", json(safety), json(name));
    if let Some(reason) = reason {
        line.push_str(&format!(",\"reason\":{}", json(reason)));
    }
    line.push_str("}\n");
    line
}
