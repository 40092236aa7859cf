//! Turn settings on the command line: the flags `keel run` and
//! `keel override` share, mapped to a wire `TurnContext`, and a context
//! printed back for a person or a script.
//!
//! Values are Codex's spellings. `default` (for effort, summary and
//! personality) sends the empty string, which the API reads as "back to the
//! model-proxy's configured value".

use clap::{Args, ValueEnum};
use keel_proto::v1::{ApprovalPolicy, SandboxMode, SandboxPolicy, TurnContext};
use serde_json::{Value, json};

use crate::render::enum_name;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum PolicyArg {
    Untrusted,
    OnFailure,
    OnRequest,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum SandboxArg {
    ReadOnly,
    WorkspaceWrite,
    DangerFullAccess,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum EffortArg {
    None,
    Minimal,
    Low,
    Medium,
    High,
    Xhigh,
    Default,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum SummaryArg {
    Auto,
    Concise,
    Detailed,
    None,
    Default,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum PersonalityArg {
    None,
    Friendly,
    Pragmatic,
    Default,
}

/// The settings flags; each one left out keeps the setting in force.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct TurnFlags {
    /// When to ask before acting.
    #[arg(long, value_name = "POLICY")]
    pub approval_policy: Option<PolicyArg>,
    /// What commands and file tools may touch.
    #[arg(long, value_name = "MODE")]
    pub sandbox: Option<SandboxArg>,
    /// Model slug (default: the model-proxy's).
    #[arg(long, value_name = "MODEL")]
    pub model: Option<String>,
    /// Reasoning effort; `default` goes back to the configured one.
    #[arg(long, value_name = "EFFORT")]
    pub effort: Option<EffortArg>,
    /// Reasoning summary; `default` goes back to the configured one.
    #[arg(long, value_name = "SUMMARY")]
    pub summary: Option<SummaryArg>,
    /// Personality; `default` goes back to the configured one.
    #[arg(long, value_name = "PERSONALITY")]
    pub personality: Option<PersonalityArg>,
    /// Model calls per turn before the turn stops; 0: no limit (the
    /// default).
    #[arg(long, value_name = "N")]
    pub max_iterations: Option<u32>,
}

impl TurnFlags {
    /// The wire context; `None` when no flag was given, so a request without
    /// settings stays exactly what it was before settings existed.
    pub(crate) fn to_context(&self) -> Option<TurnContext> {
        let context = TurnContext {
            approval_policy: self.approval_policy.map_or(0, |p| policy(p) as i32),
            sandbox: self.sandbox.map(|mode| SandboxPolicy {
                mode: sandbox_mode(mode) as i32,
                ..Default::default()
            }),
            model: self.model.clone(),
            reasoning_effort: self.effort.map(wire_name),
            reasoning_summary: self.summary.map(wire_name),
            personality: self.personality.map(wire_name),
            max_iterations: self.max_iterations,
        };
        (context != TurnContext::default()).then_some(context)
    }
}

fn policy(p: PolicyArg) -> ApprovalPolicy {
    match p {
        PolicyArg::Untrusted => ApprovalPolicy::Untrusted,
        PolicyArg::OnFailure => ApprovalPolicy::OnFailure,
        PolicyArg::OnRequest => ApprovalPolicy::OnRequest,
        PolicyArg::Never => ApprovalPolicy::Never,
    }
}

fn sandbox_mode(mode: SandboxArg) -> SandboxMode {
    match mode {
        SandboxArg::ReadOnly => SandboxMode::ReadOnly,
        SandboxArg::WorkspaceWrite => SandboxMode::WorkspaceWrite,
        SandboxArg::DangerFullAccess => SandboxMode::DangerFullAccess,
    }
}

/// The flag's spelling on the wire; `default` is the empty string.
fn wire_name(value: impl ValueEnum) -> String {
    let name = value
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default();
    if name == "default" {
        String::new()
    } else {
        name
    }
}

/// `on-request`, as the flag spells it.
pub(crate) fn policy_name(value: i32) -> String {
    let name = ApprovalPolicy::try_from(value)
        .ok()
        .map(|p| p.as_str_name());
    enum_name(name, "APPROVAL_POLICY_").replace('_', "-")
}

/// `workspace-write`, as the flag spells it.
pub(crate) fn sandbox_name(value: i32) -> String {
    let name = SandboxMode::try_from(value).ok().map(|m| m.as_str_name());
    enum_name(name, "SANDBOX_MODE_").replace('_', "-")
}

/// The context as one JSON object, with the flags' spellings; unset fields
/// are null, and an empty string (the configured default) stays "".
pub(crate) fn context_json(context: &TurnContext) -> Value {
    let sandbox = context.sandbox.as_ref().map(|s| {
        json!({
            "mode": sandbox_name(s.mode),
            "writable_roots": s.writable_roots,
            "network_access": s.network_access,
            "exclude_tmpdir_env_var": s.exclude_tmpdir_env_var,
            "exclude_slash_tmp": s.exclude_slash_tmp,
        })
    });
    json!({
        "approval_policy": policy_name(context.approval_policy),
        "sandbox": sandbox,
        "model": context.model,
        "reasoning_effort": context.reasoning_effort,
        "reasoning_summary": context.reasoning_summary,
        "personality": context.personality,
        "max_iterations": context.max_iterations,
    })
}

/// The context as an aligned two-column table.
pub(crate) fn context_table(context: &TurnContext) -> String {
    let text = |v: &Option<String>| match v.as_deref() {
        None => "-".to_string(),
        Some("") => "(default)".to_string(),
        Some(v) => v.to_string(),
    };
    let mut sandbox = context
        .sandbox
        .as_ref()
        .map_or_else(|| "-".to_string(), |s| sandbox_name(s.mode));
    if let Some(s) = &context.sandbox {
        if s.network_access {
            sandbox.push_str(", network on");
        }
        for root in &s.writable_roots {
            sandbox.push_str(&format!(", writable {root}"));
        }
    }
    let rows = [
        ("approval policy", policy_name(context.approval_policy)),
        ("sandbox", sandbox),
        ("model", text(&context.model)),
        ("reasoning effort", text(&context.reasoning_effort)),
        ("reasoning summary", text(&context.reasoning_summary)),
        ("personality", text(&context.personality)),
        (
            "max iterations",
            match context.max_iterations {
                None => "-".to_string(),
                Some(0) => "no limit".to_string(),
                Some(n) => n.to_string(),
            },
        ),
    ];
    rows.iter()
        .map(|(name, value)| format!("{name:<18} {value}\n"))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cmd {
        #[command(flatten)]
        flags: TurnFlags,
    }

    fn parse(args: &[&str]) -> Result<TurnFlags, clap::Error> {
        Cmd::try_parse_from(std::iter::once("x").chain(args.iter().copied())).map(|c| c.flags)
    }

    #[test]
    fn no_flags_no_context() {
        assert_eq!(parse(&[]).unwrap().to_context(), None);
    }

    #[test]
    fn every_flag_maps_to_the_context() {
        let flags = parse(&[
            "--approval-policy",
            "on-failure",
            "--sandbox",
            "danger-full-access",
            "--model",
            "gpt-x",
            "--effort",
            "xhigh",
            "--summary",
            "detailed",
            "--personality",
            "pragmatic",
            "--max-iterations",
            "200",
        ])
        .unwrap();
        assert_eq!(
            flags.to_context().unwrap(),
            TurnContext {
                approval_policy: ApprovalPolicy::OnFailure as i32,
                sandbox: Some(SandboxPolicy {
                    mode: SandboxMode::DangerFullAccess as i32,
                    ..Default::default()
                }),
                model: Some("gpt-x".into()),
                reasoning_effort: Some("xhigh".into()),
                reasoning_summary: Some("detailed".into()),
                personality: Some("pragmatic".into()),
                max_iterations: Some(200),
            }
        );
    }

    #[test]
    fn each_value_spelling() {
        let policy = |v: &str| {
            parse(&["--approval-policy", v])
                .unwrap()
                .to_context()
                .unwrap()
                .approval_policy
        };
        assert_eq!(policy("untrusted"), ApprovalPolicy::Untrusted as i32);
        assert_eq!(policy("on-request"), ApprovalPolicy::OnRequest as i32);
        assert_eq!(policy("never"), ApprovalPolicy::Never as i32);
        let mode = |v: &str| {
            parse(&["--sandbox", v])
                .unwrap()
                .to_context()
                .unwrap()
                .sandbox
                .unwrap()
                .mode
        };
        assert_eq!(mode("read-only"), SandboxMode::ReadOnly as i32);
        assert_eq!(mode("workspace-write"), SandboxMode::WorkspaceWrite as i32);
        let ctx = parse(&["--effort", "minimal", "--summary", "none"])
            .unwrap()
            .to_context()
            .unwrap();
        assert_eq!(ctx.reasoning_effort.as_deref(), Some("minimal"));
        assert_eq!(ctx.reasoning_summary.as_deref(), Some("none"));
        assert_eq!(ctx.approval_policy, 0, "unset stays unspecified");
        assert_eq!(ctx.sandbox, None);
    }

    #[test]
    fn default_is_the_empty_string() {
        let ctx = parse(&["--effort", "default", "--personality", "default"])
            .unwrap()
            .to_context()
            .unwrap();
        assert_eq!(ctx.reasoning_effort.as_deref(), Some(""));
        assert_eq!(ctx.personality.as_deref(), Some(""));
        assert_eq!(ctx.reasoning_summary, None);
    }

    #[test]
    fn bad_values_are_rejected() {
        assert!(parse(&["--approval-policy", "sometimes"]).is_err());
        assert!(parse(&["--sandbox", "full"]).is_err());
        assert!(parse(&["--effort", "extreme"]).is_err());
        assert!(parse(&["--summary", "short"]).is_err());
        assert!(parse(&["--personality", "grumpy"]).is_err());
    }

    #[test]
    fn context_printing() {
        let ctx = TurnContext {
            approval_policy: ApprovalPolicy::OnRequest as i32,
            sandbox: Some(SandboxPolicy {
                mode: SandboxMode::WorkspaceWrite as i32,
                network_access: true,
                ..Default::default()
            }),
            model: Some("m".into()),
            reasoning_effort: Some(String::new()),
            reasoning_summary: Some("auto".into()),
            personality: None,
            max_iterations: Some(0),
        };
        assert_eq!(
            context_table(&ctx),
            "approval policy    on-request\n\
             sandbox            workspace-write, network on\n\
             model              m\n\
             reasoning effort   (default)\n\
             reasoning summary  auto\n\
             personality        -\n\
             max iterations     no limit\n"
        );
        let v = context_json(&ctx);
        assert_eq!(v["approval_policy"], "on-request");
        assert_eq!(v["sandbox"]["mode"], "workspace-write");
        assert_eq!(v["sandbox"]["network_access"], true);
        assert_eq!(v["reasoning_effort"], "");
        assert_eq!(v["personality"], Value::Null);
        assert_eq!(policy_name(0), "unspecified");
        assert_eq!(sandbox_name(42), "unknown");
    }
}
