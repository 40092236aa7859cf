//! The environment commands start with: Codex's `shell_environment_policy`
//! (Codex: `codex-rs/core/src/config/`), configured by the operator on the tool-runner, never
//! by the caller. The steps run in Codex's order:
//!
//! 1. `inherit`: all of the tool-runner's variables, the core ones
//!    ([`CORE_VARS`]), or none;
//! 2. default excludes, unless `ignore_default_excludes`: anything named
//!    like a secret goes (Codex's `*KEY*`, `*SECRET*`, `*TOKEN*`, plus
//!    `*PASSWORD*`), because the tool-runner may run beside credentials and
//!    a command the model wrote must never see them;
//! 3. `exclude`: names matching any of these globs go;
//! 4. `set`: these variables are set (overriding inherited ones);
//! 5. `include_only`: when not empty, only names matching one of these
//!    globs stay — also the ones `set` added, as in Codex.
//!
//! Globs match whole names, case-insensitively (`*` any run, `?` one
//! character). Names that are not UTF-8 are judged on their lossy form, so
//! an odd byte cannot smuggle a secret through.

use std::ffi::OsString;
use std::fmt;
use std::str::FromStr;

use globset::{GlobBuilder, GlobMatcher};

/// Substrings that mark a variable name as a secret (compared upper-case).
const SECRET_NAME_PARTS: [&str; 4] = ["KEY", "SECRET", "TOKEN", "PASSWORD"];

/// What `inherit = "core"` keeps (Codex's list).
pub const CORE_VARS: [&str; 9] = [
    "HOME", "LOGNAME", "PATH", "SHELL", "USER", "USERNAME", "TMPDIR", "TEMP", "TMP",
];

#[derive(Debug, thiserror::Error)]
pub enum EnvPolicyError {
    #[error("invalid environment pattern {pattern:?}: {source}")]
    Pattern {
        pattern: String,
        source: globset::Error,
    },
    #[error("--env-set takes NAME=VALUE, got {0:?}")]
    SetSyntax(String),
    #[error("invalid environment variable name {0:?}")]
    Name(String),
    #[error("the value of {0} contains NUL")]
    Value(String),
    #[error("unknown inherit mode {0:?} (expected all, core or none)")]
    Inherit(String),
}

/// Which of the tool-runner's own variables commands start from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EnvInherit {
    #[default]
    All,
    Core,
    None,
}

impl FromStr for EnvInherit {
    type Err = EnvPolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "all" => Ok(Self::All),
            "core" => Ok(Self::Core),
            "none" => Ok(Self::None),
            other => Err(EnvPolicyError::Inherit(other.to_string())),
        }
    }
}

impl fmt::Display for EnvInherit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::All => "all",
            Self::Core => "core",
            Self::None => "none",
        })
    }
}

/// A case-insensitive glob over a whole variable name.
#[derive(Debug, Clone)]
pub struct EnvPattern {
    source: String,
    matcher: GlobMatcher,
}

impl EnvPattern {
    pub fn new(pattern: &str) -> Result<Self, EnvPolicyError> {
        let glob = GlobBuilder::new(pattern)
            .case_insensitive(true)
            // Names have no path separators; `*` spans everything.
            .literal_separator(false)
            .build()
            .map_err(|source| EnvPolicyError::Pattern {
                pattern: pattern.to_string(),
                source,
            })?;
        Ok(Self {
            source: pattern.to_string(),
            matcher: glob.compile_matcher(),
        })
    }

    pub fn matches(&self, name: &str) -> bool {
        self.matcher.is_match(name)
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }
}

/// Codex's `shell_environment_policy`. The default inherits everything but
/// secrets.
#[derive(Debug, Clone, Default)]
pub struct EnvPolicy {
    pub inherit: EnvInherit,
    pub ignore_default_excludes: bool,
    pub exclude: Vec<EnvPattern>,
    /// Set in this order; a later entry for the same name wins.
    pub set: Vec<(String, String)>,
    pub include_only: Vec<EnvPattern>,
}

impl EnvPolicy {
    /// Adds `NAME=VALUE` to `set`, checking both halves.
    pub fn push_set(&mut self, assignment: &str) -> Result<(), EnvPolicyError> {
        let (name, value) = assignment
            .split_once('=')
            .ok_or_else(|| EnvPolicyError::SetSyntax(assignment.to_string()))?;
        if name.is_empty() || name.contains('\0') {
            return Err(EnvPolicyError::Name(name.to_string()));
        }
        if value.contains('\0') {
            return Err(EnvPolicyError::Value(name.to_string()));
        }
        self.set.push((name.to_string(), value.to_string()));
        Ok(())
    }

    /// The environment a command starts from, given the tool-runner's own.
    /// Inherited variables keep their order; `set` ones follow.
    pub fn apply(
        &self,
        vars: impl IntoIterator<Item = (OsString, OsString)>,
    ) -> Vec<(OsString, OsString)> {
        let mut env: Vec<(OsString, OsString)> = vars
            .into_iter()
            .filter(|(name, _)| self.inherits(&name.to_string_lossy()))
            .filter(|(name, _)| {
                self.ignore_default_excludes || !is_secret_name(&name.to_string_lossy())
            })
            .filter(|(name, _)| !matches_any(&self.exclude, &name.to_string_lossy()))
            .filter(|(name, _)| !is_runner_telemetry(&name.to_string_lossy()))
            .collect();
        for (name, value) in &self.set {
            match env.iter_mut().find(|(k, _)| k == name.as_str()) {
                Some(slot) => slot.1 = OsString::from(value),
                None => env.push((OsString::from(name), OsString::from(value))),
            }
        }
        if !self.include_only.is_empty() {
            env.retain(|(name, _)| matches_any(&self.include_only, &name.to_string_lossy()));
        }
        env
    }

    fn inherits(&self, name: &str) -> bool {
        match self.inherit {
            EnvInherit::All => true,
            EnvInherit::Core => CORE_VARS.contains(&name),
            EnvInherit::None => false,
        }
    }
}

fn matches_any(patterns: &[EnvPattern], name: &str) -> bool {
    patterns.iter().any(|p| p.matches(name))
}

/// Whether the default excludes drop a variable of this name.
pub fn is_secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    SECRET_NAME_PARTS.iter().any(|part| upper.contains(part))
}

/// The tool-runner's own OpenTelemetry settings (`OTEL_*`: the collector's
/// address, its credentials in `OTEL_EXPORTER_OTLP_HEADERS`): never
/// inherited, whatever the policy, so a command neither reads them nor
/// exports into the operator's collector. `set` can still give a command
/// variables of these names.
fn is_runner_telemetry(name: &str) -> bool {
    name.to_ascii_uppercase().starts_with("OTEL_")
}

/// Why a request may not set a variable (the loader's and glibc's
/// unsecure ones): the tool model's list, shared with the workflow.
pub use keel_tool_model::env::refused_env_var;

/// The inherited variables minus secrets: the default policy.
pub fn inheritable(
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> Vec<(OsString, OsString)> {
    EnvPolicy::default().apply(vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    fn render(env: &[(OsString, OsString)]) -> Vec<String> {
        env.iter()
            .map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy()))
            .collect()
    }

    fn patterns(list: &[&str]) -> Vec<EnvPattern> {
        list.iter().map(|p| EnvPattern::new(p).unwrap()).collect()
    }

    /// A host environment with core, ordinary and secret variables.
    fn host() -> Vec<(OsString, OsString)> {
        vars(&[
            ("PATH", "/usr/bin"),
            ("HOME", "/root"),
            ("LANG", "C.UTF-8"),
            ("OPENAI_API_KEY", "sk-1"),
            ("USER", "me"),
            ("github_token", "t"),
            ("CARGO_HOME", "/cargo"),
        ])
    }

    #[test]
    fn secret_names_are_recognised() {
        for name in [
            "OPENAI_API_KEY",
            "ANTHROPIC_API_KEY",
            "GITHUB_TOKEN",
            "AWS_SESSION_TOKEN",
            "AWS_SECRET_ACCESS_KEY",
            "CLIENT_SECRET",
            "github_token",
            "DB_PASSWORD",
        ] {
            assert!(is_secret_name(name), "{name} should be dropped");
        }
        for name in ["PATH", "HOME", "LANG", "TERM", "CARGO_HOME", "USER"] {
            assert!(!is_secret_name(name), "{name} should be kept");
        }
    }

    #[test]
    fn the_runners_telemetry_settings_never_reach_a_command() {
        let vars = vec![
            (OsString::from("PATH"), OsString::from("/bin")),
            (
                OsString::from("OTEL_EXPORTER_OTLP_HEADERS"),
                OsString::from("api-key=collector-secret"),
            ),
            (OsString::from("otel_service_name"), OsString::from("x")),
        ];
        let policy = EnvPolicy {
            ignore_default_excludes: true,
            ..EnvPolicy::default()
        };
        let kept: Vec<_> = policy.apply(vars).into_iter().map(|(k, _)| k).collect();
        assert_eq!(kept, vec![OsString::from("PATH")]);
    }

    #[test]
    fn the_default_drops_only_secrets() {
        let kept = inheritable(host());
        assert_eq!(
            render(&kept),
            [
                "PATH=/usr/bin",
                "HOME=/root",
                "LANG=C.UTF-8",
                "USER=me",
                "CARGO_HOME=/cargo"
            ]
        );
    }

    #[test]
    fn inherit_all_core_or_none() {
        let core = EnvPolicy {
            inherit: EnvInherit::Core,
            ..Default::default()
        };
        assert_eq!(
            render(&core.apply(host())),
            ["PATH=/usr/bin", "HOME=/root", "USER=me"]
        );
        let none = EnvPolicy {
            inherit: EnvInherit::None,
            ..Default::default()
        };
        assert!(none.apply(host()).is_empty());
        assert_eq!("core".parse::<EnvInherit>().unwrap(), EnvInherit::Core);
        assert!(matches!(
            "some".parse::<EnvInherit>(),
            Err(EnvPolicyError::Inherit(_))
        ));
    }

    #[test]
    fn ignoring_the_default_excludes_keeps_secrets() {
        let policy = EnvPolicy {
            ignore_default_excludes: true,
            ..Default::default()
        };
        let kept = render(&policy.apply(host()));
        assert!(
            kept.contains(&"OPENAI_API_KEY=sk-1".to_string()),
            "{kept:?}"
        );
        assert!(kept.contains(&"github_token=t".to_string()), "{kept:?}");
    }

    #[test]
    fn exclude_globs_are_case_insensitive_and_whole_name() {
        let policy = EnvPolicy {
            exclude: patterns(&["*home", "l?ng"]),
            ..Default::default()
        };
        assert_eq!(render(&policy.apply(host())), ["PATH=/usr/bin", "USER=me"]);
        // A pattern matches the whole name, not a part of it.
        let policy = EnvPolicy {
            exclude: patterns(&["PAT"]),
            ..Default::default()
        };
        assert!(render(&policy.apply(host())).contains(&"PATH=/usr/bin".to_string()));
        assert!(matches!(
            EnvPattern::new("[unclosed"),
            Err(EnvPolicyError::Pattern { .. })
        ));
    }

    #[test]
    fn set_overrides_and_adds() {
        let mut policy = EnvPolicy::default();
        policy.push_set("HOME=/elsewhere").unwrap();
        policy.push_set("GREETING=a=b").unwrap();
        policy.push_set("GREETING=hello").unwrap();
        assert_eq!(
            render(&policy.apply(vars(&[("HOME", "/root"), ("PATH", "/bin")]))),
            ["HOME=/elsewhere", "PATH=/bin", "GREETING=hello"]
        );
        assert!(matches!(
            policy.push_set("NOEQUALS"),
            Err(EnvPolicyError::SetSyntax(_))
        ));
        assert!(matches!(
            policy.push_set("=x"),
            Err(EnvPolicyError::Name(_))
        ));
        assert!(matches!(
            policy.push_set("A=\0"),
            Err(EnvPolicyError::Value(_))
        ));
    }

    #[test]
    fn include_only_keeps_just_the_matches() {
        let policy = EnvPolicy {
            include_only: patterns(&["path", "*_HOME"]),
            ..Default::default()
        };
        assert_eq!(
            render(&policy.apply(host())),
            ["PATH=/usr/bin", "CARGO_HOME=/cargo"]
        );
    }

    /// inherit → default excludes → exclude → set → include_only.
    #[test]
    fn the_steps_run_in_codex_order() {
        let mut policy = EnvPolicy {
            exclude: patterns(&["USER", "MY_*"]),
            include_only: patterns(&["PATH", "LANG", "USER", "MY_*", "*TOKEN"]),
            ..Default::default()
        };
        // `set` comes after `exclude` (MY_VAR survives it) and after the
        // default excludes (a secret the operator sets is their choice), but
        // before `include_only` (DROPPED does not survive it).
        policy.push_set("MY_VAR=1").unwrap();
        policy.push_set("SERVICE_TOKEN=chosen").unwrap();
        policy.push_set("DROPPED=x").unwrap();
        let host = vars(&[
            ("PATH", "/bin"),
            ("USER", "me"),
            ("LANG", "C"),
            ("MY_OTHER", "inherited"),
            ("GITHUB_TOKEN", "t"),
        ]);
        // USER and MY_OTHER are excluded and GITHUB_TOKEN is a secret, though
        // include_only would keep them: include_only only ever narrows.
        assert_eq!(
            render(&policy.apply(host.clone())),
            ["PATH=/bin", "LANG=C", "MY_VAR=1", "SERVICE_TOKEN=chosen"]
        );
        // Inheriting only the core comes first: LANG is never inherited.
        policy.inherit = EnvInherit::Core;
        assert_eq!(
            render(&policy.apply(host)),
            ["PATH=/bin", "MY_VAR=1", "SERVICE_TOKEN=chosen"]
        );
    }
}
