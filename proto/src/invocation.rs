//! The tool model's [`Invocation`] on the wire
//! ([`v1::ToolInvocation`]), both ways, written once for the worker (which
//! sends it) and the tool-runner (which runs it).

use keel_tool_model::{
    CommandInvocation, Invocation, Layout, PatchInvocation, PatchOutput, RunMode,
    WriteStdinInvocation,
};

use crate::v1;

/// A `ToolInvocation` that names no invocation, or a layout it does not
/// know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid tool invocation: {0}")]
pub struct InvalidInvocation(&'static str);

impl From<&Invocation> for v1::ToolInvocation {
    fn from(invocation: &Invocation) -> Self {
        use v1::tool_invocation::Kind;
        let kind = match invocation {
            Invocation::Command(c) => Kind::Command(v1::CommandInvocation {
                argv: c.argv.clone(),
                cwd: c.cwd.clone(),
                env: c.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                run: Some(match c.run {
                    RunMode::Complete { timeout_ms, layout } => {
                        v1::command_invocation::Run::Complete(v1::CompleteRun {
                            timeout_ms,
                            layout: output_layout(layout) as i32,
                        })
                    }
                    RunMode::Session {
                        tty,
                        yield_time_ms,
                        max_output_tokens,
                    } => v1::command_invocation::Run::Session(v1::SessionRun {
                        tty,
                        yield_time_ms,
                        max_output_tokens,
                    }),
                }),
            }),
            Invocation::Patch(p) => Kind::Patch(v1::PatchInvocation {
                patch: p.patch.clone(),
                cwd: p.cwd.clone(),
                output: Some(match p.output {
                    PatchOutput::Structured => {
                        v1::patch_invocation::Output::Layout(v1::OutputLayout::Structured as i32)
                    }
                    PatchOutput::Freeform => {
                        v1::patch_invocation::Output::Layout(v1::OutputLayout::Freeform as i32)
                    }
                    PatchOutput::ExecCommand { max_output_tokens } => {
                        v1::patch_invocation::Output::ExecCommand(v1::ExecCommandOutput {
                            max_output_tokens,
                        })
                    }
                }),
            }),
            Invocation::WriteStdin(w) => Kind::WriteStdin(v1::WriteStdinInvocation {
                process_id: w.process_id,
                chars: w.chars.clone(),
                yield_time_ms: w.yield_time_ms,
                max_output_tokens: w.max_output_tokens,
            }),
        };
        Self { kind: Some(kind) }
    }
}

impl TryFrom<&v1::ToolInvocation> for Invocation {
    type Error = InvalidInvocation;

    fn try_from(invocation: &v1::ToolInvocation) -> Result<Self, Self::Error> {
        use v1::tool_invocation::Kind;
        Ok(match invocation.kind.as_ref() {
            None => return Err(InvalidInvocation("no kind is set")),
            Some(Kind::Command(c)) => Invocation::Command(CommandInvocation {
                argv: c.argv.clone(),
                cwd: c.cwd.clone(),
                env: c.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                run: match c.run.as_ref() {
                    None => return Err(InvalidInvocation("a command names no run mode")),
                    Some(v1::command_invocation::Run::Complete(r)) => RunMode::Complete {
                        timeout_ms: r.timeout_ms,
                        layout: layout(r.layout)?,
                    },
                    Some(v1::command_invocation::Run::Session(r)) => RunMode::Session {
                        tty: r.tty,
                        yield_time_ms: r.yield_time_ms,
                        max_output_tokens: r.max_output_tokens,
                    },
                },
            }),
            Some(Kind::Patch(p)) => Invocation::Patch(PatchInvocation {
                patch: p.patch.clone(),
                cwd: p.cwd.clone(),
                output: match p.output.as_ref() {
                    None => return Err(InvalidInvocation("a patch names no output")),
                    Some(v1::patch_invocation::Output::Layout(l)) => match layout(*l)? {
                        Layout::Structured => PatchOutput::Structured,
                        Layout::Freeform => PatchOutput::Freeform,
                    },
                    Some(v1::patch_invocation::Output::ExecCommand(e)) => {
                        PatchOutput::ExecCommand {
                            max_output_tokens: e.max_output_tokens,
                        }
                    }
                },
            }),
            Some(Kind::WriteStdin(w)) => Invocation::WriteStdin(WriteStdinInvocation {
                process_id: w.process_id,
                chars: w.chars.clone(),
                yield_time_ms: w.yield_time_ms,
                max_output_tokens: w.max_output_tokens,
            }),
        })
    }
}

fn output_layout(layout: Layout) -> v1::OutputLayout {
    match layout {
        Layout::Structured => v1::OutputLayout::Structured,
        Layout::Freeform => v1::OutputLayout::Freeform,
    }
}

fn layout(value: i32) -> Result<Layout, InvalidInvocation> {
    match v1::OutputLayout::try_from(value) {
        Ok(v1::OutputLayout::Structured) => Ok(Layout::Structured),
        Ok(v1::OutputLayout::Freeform) => Ok(Layout::Freeform),
        _ => Err(InvalidInvocation("unknown output layout")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invocations_survive_the_wire() {
        let patch = "*** Begin Patch\n*** Add File: a\n+x\n*** End Patch";
        let cases = [
            (
                "local_shell",
                r#"{"command":["ls"],"env":{"A":"1"},"timeout_ms":3}"#.to_string(),
            ),
            ("shell_command", r#"{"command":"ls"}"#.to_string()),
            (
                "exec_command",
                r#"{"cmd":"x","tty":true,"max_output_tokens":4}"#.to_string(),
            ),
            (
                "write_stdin",
                r#"{"session_id":3,"chars":"q","yield_time_ms":9}"#.to_string(),
            ),
            (
                "shell",
                format!(r#"{{"command":["apply_patch",{patch:?}]}}"#),
            ),
            (
                "exec_command",
                format!(
                    r#"{{"cmd":"apply_patch <<'E'\n{}\nE"}}"#,
                    patch.replace('\n', "\\n")
                ),
            ),
        ];
        for (name, args) in cases {
            let invocation = keel_tool_model::parse_call(name, &args, "/w", "bash")
                .unwrap()
                .unwrap()
                .invocation;
            let wire = v1::ToolInvocation::from(&invocation);
            assert_eq!(
                Invocation::try_from(&wire).unwrap(),
                invocation,
                "{name} {args}"
            );
        }
        assert!(Invocation::try_from(&v1::ToolInvocation::default()).is_err());
    }
}
