//! The environment commands inherit. The tool-runner may run beside
//! credentials (its own, or the deployment's), and a command the model wrote
//! must never see them: anything named like a secret is dropped, using
//! Codex's default `shell_environment_policy` excludes (`*KEY*`, `*SECRET*`,
//! `*TOKEN*`, case-insensitive) plus `*PASSWORD*`.

use std::ffi::OsString;

/// Substrings that mark a variable name as a secret (compared upper-case).
const SECRET_NAME_PARTS: [&str; 4] = ["KEY", "SECRET", "TOKEN", "PASSWORD"];

/// Whether a variable of this name is kept from commands.
pub fn is_secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    SECRET_NAME_PARTS.iter().any(|part| upper.contains(part))
}

/// The inherited variables minus secrets. Names that are not UTF-8 are judged
/// on their lossy form, so an odd byte cannot smuggle a secret through.
pub fn inheritable(
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> Vec<(OsString, OsString)> {
    vars.into_iter()
        .filter(|(name, _)| !is_secret_name(&name.to_string_lossy()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn inheritable_drops_only_secrets() {
        let vars = [
            ("PATH", "/usr/bin"),
            ("OPENAI_API_KEY", "sk-1"),
            ("HOME", "/root"),
            ("MY_TOKEN", "t"),
        ]
        .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let kept = inheritable(vars);
        let names: Vec<_> = kept.iter().map(|(k, _)| k.to_string_lossy()).collect();
        assert_eq!(names, ["PATH", "HOME"]);
    }
}
