//! Turn settings and client tools between the wire and the workflow
//! contract, validated here so a bad value is an INVALID_ARGUMENT naming the
//! field instead of a surprise later in the session.

use keel_proto::v1 as pb;
use keel_workflow_api::{
    ApprovalPolicy, ContextPatch, DynamicToolDecl, SandboxMode, SandboxSettings,
};
use tonic::Status;

pub(crate) const EFFORTS: &[&str] = &["", "none", "minimal", "low", "medium", "high", "xhigh"];
const SUMMARIES: &[&str] = &["", "auto", "concise", "detailed", "none"];
const PERSONALITIES: &[&str] = &["", "none", "friendly", "pragmatic"];
const MAX_MODEL_LEN: usize = 128;

/// Names the model already knows; a client tool may not take them.
const MAX_DYNAMIC_TOOLS: usize = 64;
/// Writable roots a sandbox policy may name, and the longest path anywhere
/// (Linux's PATH_MAX).
const MAX_WRITABLE_ROOTS: usize = 64;
pub(crate) const MAX_PATH_LEN: usize = 4096;
const MAX_TOOL_NAME_LEN: usize = 64;
const MAX_TOOL_DESCRIPTION_LEN: usize = 4 * 1024;
const MAX_TOOL_SCHEMA_LEN: usize = 16 * 1024;

/// A model slug: at most [`MAX_MODEL_LEN`] printable characters.
pub(crate) fn check_model(field: &str, model: &str) -> Result<(), Status> {
    if model.len() > MAX_MODEL_LEN || model.chars().any(char::is_control) {
        return Err(crate::errors::invalid(format!(
            "{field} {:?} is invalid: at most {MAX_MODEL_LEN} printable characters",
            api_cut(model)
        )));
    }
    Ok(())
}

/// A wire TurnContext as a patch; `None` when nothing is set.
pub(crate) fn patch(ctx: Option<pb::TurnContext>) -> Result<Option<ContextPatch>, Status> {
    let Some(ctx) = ctx else {
        return Ok(None);
    };
    let approval_policy = approval_policy(ctx.approval_policy)?;
    let sandbox = match ctx.sandbox {
        Some(s) => sandbox(s)?,
        None => None,
    };
    if let Some(model) = &ctx.model {
        check_model("context.model", model)?;
    }
    one_of("context.reasoning_effort", &ctx.reasoning_effort, EFFORTS)?;
    one_of(
        "context.reasoning_summary",
        &ctx.reasoning_summary,
        SUMMARIES,
    )?;
    one_of("context.personality", &ctx.personality, PERSONALITIES)?;
    let patch = ContextPatch {
        approval_policy,
        sandbox,
        model: ctx.model,
        reasoning_effort: ctx.reasoning_effort,
        reasoning_summary: ctx.reasoning_summary,
        personality: ctx.personality,
        max_iterations: ctx.max_iterations,
    };
    Ok((!patch.is_empty()).then_some(patch))
}

pub(crate) fn one_of(field: &str, value: &Option<String>, allowed: &[&str]) -> Result<(), Status> {
    match value {
        Some(v) if !allowed.contains(&v.as_str()) => Err(crate::errors::invalid(format!(
            "{field} {v:?} is not one of {}",
            allowed[1..].join(", ")
        ))),
        _ => Ok(()),
    }
}

pub(crate) fn approval_policy(raw: i32) -> Result<Option<ApprovalPolicy>, Status> {
    use pb::ApprovalPolicy as P;
    Ok(match P::try_from(raw) {
        Ok(P::Unspecified) => None,
        Ok(P::Untrusted) => Some(ApprovalPolicy::Untrusted),
        Ok(P::OnFailure) => Some(ApprovalPolicy::OnFailure),
        Ok(P::OnRequest) => Some(ApprovalPolicy::OnRequest),
        Ok(P::Never) => Some(ApprovalPolicy::Never),
        Err(_) => {
            return Err(crate::errors::invalid(format!(
                "context.approval_policy {raw} is not a known ApprovalPolicy"
            )));
        }
    })
}

fn sandbox(s: pb::SandboxPolicy) -> Result<Option<SandboxSettings>, Status> {
    use pb::SandboxMode as M;
    let mode = match M::try_from(s.mode) {
        Ok(M::Unspecified) => return Ok(None),
        Ok(M::ReadOnly) => SandboxMode::ReadOnly,
        Ok(M::WorkspaceWrite) => SandboxMode::WorkspaceWrite,
        Ok(M::DangerFullAccess) => SandboxMode::DangerFullAccess,
        Err(_) => {
            return Err(crate::errors::invalid(format!(
                "context.sandbox.mode {} is not a known SandboxMode",
                s.mode
            )));
        }
    };
    if s.writable_roots.len() > MAX_WRITABLE_ROOTS {
        return Err(crate::errors::invalid(format!(
            "context.sandbox.writable_roots: at most {MAX_WRITABLE_ROOTS} roots"
        )));
    }
    if let Some(bad) = s
        .writable_roots
        .iter()
        .find(|r| r.len() > MAX_PATH_LEN || r.contains('\0'))
    {
        return Err(crate::errors::invalid(format!(
            "context.sandbox.writable_roots: {:?}… is not a path (at most {MAX_PATH_LEN} bytes, no NUL)",
            api_cut(bad)
        )));
    }
    if let Some(bad) = s.writable_roots.iter().find(|r| !r.starts_with('/')) {
        return Err(crate::errors::invalid(format!(
            "context.sandbox.writable_roots: {bad:?} must be an absolute path"
        )));
    }
    Ok(Some(SandboxSettings {
        mode,
        writable_roots: s.writable_roots,
        network_access: s.network_access,
        exclude_tmpdir_env_var: s.exclude_tmpdir_env_var,
        exclude_slash_tmp: s.exclude_slash_tmp,
    }))
}

/// MCP servers a session may name (far more than any broker configures).
const MAX_MCP_SERVERS: usize = 64;

/// Validates the MCP server names a session asks for: the broker checks
/// that they exist when the first turn starts.
pub(crate) fn mcp_servers(mut names: Vec<String>) -> Result<Vec<String>, Status> {
    if names.len() > MAX_MCP_SERVERS {
        return Err(crate::errors::invalid(format!(
            "mcp_servers: at most {MAX_MCP_SERVERS} servers"
        )));
    }
    for name in &names {
        if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
            return Err(crate::errors::invalid(format!(
                "mcp_servers: {name:?} is not a server name (1 to 64 characters, no control characters)"
            )));
        }
    }
    names.sort();
    names.dedup();
    Ok(names)
}

/// Checks a session's repository as far as session-api can: a URL of
/// `https://` or `file://` (the runner decides whether it clones local
/// ones), no credentials, no control characters, a ref of plain characters.
/// The runner checks again and clones.
pub(crate) fn git_source(
    git: Option<pb::GitSource>,
    cwd: &str,
) -> Result<Option<keel_workflow_api::GitSource>, Status> {
    let Some(git) = git else {
        return Ok(None);
    };
    let invalid = |why: String| Err(crate::errors::invalid(why));
    if !cwd.is_empty() {
        return invalid("git and cwd are exclusive: a session works in its clone".into());
    }
    let url = git.url.trim();
    let scheme_ok = url.starts_with("https://") || url.starts_with("file://");
    if url.len() > 2048 || !scheme_ok || url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return invalid(format!(
            "git.url {:?} must be an https:// (or file://) URL of at most 2048 characters",
            git.url
        ));
    }
    let authority = url
        .split_once("://")
        .map(|(_, rest)| rest.split('/').next().unwrap_or_default())
        .unwrap_or_default();
    if authority.contains('@') {
        return invalid("git.url: credentials do not belong in the URL".into());
    }
    if !keel_tool_model::git::is_plain_ref(&git.r#ref) {
        return invalid(format!(
            "git.ref {:?} must be a branch, tag or commit name",
            git.r#ref
        ));
    }
    Ok(Some(keel_workflow_api::GitSource {
        url: url.to_string(),
        git_ref: git.r#ref,
    }))
}

/// Validates the client's tools.
pub(crate) fn dynamic_tools(tools: Vec<pb::DynamicTool>) -> Result<Vec<DynamicToolDecl>, Status> {
    if tools.len() > MAX_DYNAMIC_TOOLS {
        return Err(crate::errors::invalid(format!(
            "dynamic_tools: at most {MAX_DYNAMIC_TOOLS} tools"
        )));
    }
    let mut out: Vec<DynamicToolDecl> = Vec::with_capacity(tools.len());
    for t in tools {
        let decl = DynamicToolDecl {
            namespace: t.namespace,
            name: t.name,
            description: t.description,
            input_schema: t.input_schema_json,
        };
        let name = decl.model_name();
        let valid_part = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        if !valid_part(&decl.name)
            || !(decl.namespace.is_empty() || valid_part(&decl.namespace))
            || name.len() > MAX_TOOL_NAME_LEN
        {
            return Err(crate::errors::invalid(format!(
                "dynamic_tools: {name:?} is not a valid tool name (letters, digits, '_' and '-', at most {MAX_TOOL_NAME_LEN} characters with the namespace)"
            )));
        }
        // Keel's own tool names stay Keel's: a client's tool must not
        // shadow (or be mistaken for) a command or file tool.
        let reserved = keel_tool_model::family(&name) != keel_tool_model::Family::Other;
        if reserved || out.iter().any(|o| o.model_name() == name) {
            return Err(crate::errors::invalid(format!(
                "dynamic_tools: {name:?} is already taken by another tool"
            )));
        }
        if decl.description.len() > MAX_TOOL_DESCRIPTION_LEN
            || decl.input_schema.len() > MAX_TOOL_SCHEMA_LEN
        {
            return Err(crate::errors::invalid(format!(
                "dynamic_tools: {name:?} is too large (description at most {MAX_TOOL_DESCRIPTION_LEN} bytes, schema at most {MAX_TOOL_SCHEMA_LEN})"
            )));
        }
        match serde_json::from_str::<serde_json::Value>(&decl.input_schema) {
            Ok(v) if v.is_object() => {}
            _ => {
                return Err(crate::errors::invalid(format!(
                    "dynamic_tools: {name:?} input_schema_json must be a JSON object (a JSON Schema)"
                )));
            }
        }
        out.push(decl);
    }
    Ok(out)
}

/// The start of a long value, for an error message.
fn api_cut(s: &str) -> String {
    keel_workflow_api::cut_text(s, 64).0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_context_is_no_patch() {
        assert_eq!(patch(Some(pb::TurnContext::default())).unwrap(), None);
        assert_eq!(patch(None).unwrap(), None);
    }

    #[test]
    fn values_are_checked() {
        let bad = pb::TurnContext {
            reasoning_effort: Some("extreme".into()),
            ..Default::default()
        };
        let err = patch(Some(bad)).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("context.reasoning_effort"));
        let relative = pb::TurnContext {
            sandbox: Some(pb::SandboxPolicy {
                mode: pb::SandboxMode::WorkspaceWrite as i32,
                writable_roots: vec!["rel".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(patch(Some(relative)).is_err());
        let policy = pb::TurnContext {
            approval_policy: 99,
            ..Default::default()
        };
        assert!(patch(Some(policy)).is_err());
        let roots = |roots: Vec<String>| pb::TurnContext {
            sandbox: Some(pb::SandboxPolicy {
                mode: pb::SandboxMode::WorkspaceWrite as i32,
                writable_roots: roots,
                ..Default::default()
            }),
            ..Default::default()
        };
        let many: Vec<String> = (0..=MAX_WRITABLE_ROOTS).map(|i| format!("/r{i}")).collect();
        let err = patch(Some(roots(many))).unwrap_err();
        assert!(err.message().contains("at most 64 roots"), "{err:?}");
        let long = format!("/{}", "a".repeat(MAX_PATH_LEN));
        let err = patch(Some(roots(vec![long]))).unwrap_err();
        assert!(err.message().contains("is not a path"), "{err:?}");
        assert!(
            err.message().len() < 300,
            "the message quotes only the start"
        );
        assert!(patch(Some(roots(vec!["/a\0b".into()]))).is_err());
        let model = pb::TurnContext {
            model: Some("m".repeat(MAX_MODEL_LEN + 1)),
            ..Default::default()
        };
        assert!(patch(Some(model)).is_err());
        assert!(check_model("model", "gpt-5.1-codex").is_ok());
    }

    #[test]
    fn patch_and_wire_roundtrip() {
        let ctx = pb::TurnContext {
            approval_policy: pb::ApprovalPolicy::Never as i32,
            model: Some("m2".into()),
            reasoning_effort: Some("high".into()),
            ..Default::default()
        };
        let p = patch(Some(ctx)).unwrap().unwrap();
        let s = keel_workflow_api::TurnSettings::default().with(&p);
        let wire = pb::TurnContext::from(&s);
        assert_eq!(wire.approval_policy, pb::ApprovalPolicy::Never as i32);
        assert_eq!(wire.model.as_deref(), Some("m2"));
        assert_eq!(wire.reasoning_effort.as_deref(), Some("high"));
        assert_eq!(
            wire.sandbox.unwrap().mode,
            pb::SandboxMode::WorkspaceWrite as i32
        );
    }

    #[test]
    fn git_sources_are_checked() {
        let git = |url: &str, r: &str| {
            Some(pb::GitSource {
                url: url.into(),
                r#ref: r.into(),
            })
        };
        assert_eq!(git_source(None, "/w").unwrap(), None);
        let ok = git_source(git("https://example.com/o/r.git", "main"), "").unwrap();
        assert_eq!(ok.unwrap().git_ref, "main");
        for (url, r, cwd) in [
            ("https://example.com/o/r", "main", "/w"),
            ("ssh://example.com/o/r", "", ""),
            ("ext::sh -c x", "", ""),
            ("https://user:pw@example.com/r", "", ""),
            ("https://example.com/r", "--upload-pack=x", ""),
            ("https://example.com/r", "a..b", ""),
        ] {
            assert!(git_source(git(url, r), cwd).is_err(), "{url} {r} {cwd}");
        }
    }

    #[test]
    fn dynamic_tools_are_checked() {
        let tool = |name: &str, schema: &str| pb::DynamicTool {
            namespace: String::new(),
            name: name.into(),
            description: "d".into(),
            input_schema_json: schema.into(),
        };
        assert!(dynamic_tools(vec![tool("lookup", "{}")]).is_ok());
        for keels in [
            "shell",
            "local_shell",
            "exec_command",
            "read_file",
            "update_plan",
        ] {
            assert!(dynamic_tools(vec![tool(keels, "{}")]).is_err(), "{keels}");
        }
        assert!(dynamic_tools(vec![tool("a b", "{}")]).is_err());
        assert!(dynamic_tools(vec![tool("x", "[]")]).is_err());
        assert!(dynamic_tools(vec![tool("x", "{}"), tool("x", "{}")]).is_err());
    }
}
