//! The `<environment_context>` block (Codex: `codex-rs/core/src/context/environment_context.rs`).

use std::path::Path;

/// The facts the block reports besides the cwd, read once from the
/// tool-runner's environment (the commands it runs share it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvironmentFacts {
    /// The shell's name: `bash`, `zsh`, …
    pub shell: String,
    /// IANA time zone name.
    pub timezone: String,
}

impl EnvironmentFacts {
    /// From `SHELL` and `TZ` (as given), `/etc/timezone` and the
    /// `/etc/localtime` link.
    pub fn detect(shell_var: Option<&str>, tz_var: Option<&str>) -> Self {
        Self {
            shell: shell_name(shell_var),
            timezone: timezone(
                tz_var,
                std::fs::read_to_string("/etc/timezone").ok().as_deref(),
                std::fs::read_link("/etc/localtime").ok().as_deref(),
            ),
        }
    }
}

/// The basename of `$SHELL`, or `bash`.
pub fn shell_name(shell_var: Option<&str>) -> String {
    shell_var
        .and_then(|shell| Path::new(shell).file_name())
        .and_then(|name| name.to_str())
        .filter(|name| !name.is_empty())
        .unwrap_or("bash")
        .to_string()
}

/// The IANA zone: `TZ` (without a leading `:`, or the part after
/// `zoneinfo/` of a path), else `/etc/timezone`, else the `/etc/localtime`
/// link target after `zoneinfo/`, else `UTC`.
pub fn timezone(
    tz_var: Option<&str>,
    etc_timezone: Option<&str>,
    localtime_link: Option<&Path>,
) -> String {
    let from_tz = tz_var
        .map(|tz| tz.trim().trim_start_matches(':'))
        .and_then(|tz| match tz.split_once("zoneinfo/") {
            Some((_, zone)) => Some(zone),
            None if tz.starts_with('/') => None,
            None => Some(tz),
        });
    let from_file = etc_timezone.map(str::trim);
    let from_link = localtime_link
        .and_then(|link| link.to_str())
        .and_then(|link| link.split_once("zoneinfo/"))
        .map(|(_, zone)| zone);
    [from_tz, from_file, from_link]
        .into_iter()
        .flatten()
        .find(|zone| !zone.is_empty())
        .unwrap_or("UTC")
        .to_string()
}

/// The block, two-space indented, with today's local date.
pub fn environment_context(cwd: &Path, facts: &EnvironmentFacts) -> String {
    let date = chrono::Local::now().format("%Y-%m-%d");
    render(cwd, facts, &date.to_string())
}

fn render(cwd: &Path, facts: &EnvironmentFacts, date: &str) -> String {
    format!(
        "<environment_context>\n  <cwd>{}</cwd>\n  <shell>{}</shell>\n  <current_date>{date}</current_date>\n  <timezone>{}</timezone>\n</environment_context>",
        cwd.display(),
        facts.shell,
        facts.timezone
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_block() {
        let facts = EnvironmentFacts {
            shell: "zsh".into(),
            timezone: "Europe/Berlin".into(),
        };
        assert_eq!(
            render(Path::new("/repo"), &facts, "2026-04-25"),
            "<environment_context>\n  <cwd>/repo</cwd>\n  <shell>zsh</shell>\n  <current_date>2026-04-25</current_date>\n  <timezone>Europe/Berlin</timezone>\n</environment_context>"
        );
        let live = environment_context(Path::new("/repo"), &facts);
        let date = live
            .split("<current_date>")
            .nth(1)
            .unwrap()
            .split('<')
            .next()
            .unwrap();
        assert!(
            chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").is_ok(),
            "{date}"
        );
    }

    #[test]
    fn shell_from_the_environment() {
        assert_eq!(shell_name(Some("/usr/bin/zsh")), "zsh");
        assert_eq!(shell_name(Some("")), "bash");
        assert_eq!(shell_name(None), "bash");
    }

    #[test]
    fn timezone_sources_in_order() {
        let link = Path::new("/usr/share/zoneinfo/America/New_York");
        assert_eq!(
            timezone(Some("Asia/Tokyo"), Some("Europe/Paris\n"), Some(link)),
            "Asia/Tokyo"
        );
        assert_eq!(timezone(Some(":Asia/Tokyo"), None, None), "Asia/Tokyo");
        assert_eq!(
            timezone(Some("/usr/share/zoneinfo/Asia/Tokyo"), None, None),
            "Asia/Tokyo"
        );
        assert_eq!(
            timezone(None, Some("Europe/Paris\n"), Some(link)),
            "Europe/Paris"
        );
        assert_eq!(timezone(Some(""), None, Some(link)), "America/New_York");
        assert_eq!(timezone(None, None, Some(Path::new("/etc/other"))), "UTC");
        assert_eq!(timezone(None, None, None), "UTC");
    }
}
