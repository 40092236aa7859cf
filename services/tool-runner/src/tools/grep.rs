//! `grep_files` (Codex: `codex-rs/core/src/tools/handlers/grep_files.rs`): the files whose contents match a
//! regex, newest first — what `rg --files-with-matches --sortr=modified
//! --regexp PATTERN --no-messages [--glob INCLUDE] -- PATH` prints, done
//! in-process with ripgrep's own crates (`ignore` for the walk: .gitignore,
//! .ignore, hidden files; `grep-searcher` for the search: binary files are
//! skipped), so no `rg` binary is needed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use grep_regex::RegexMatcherBuilder;
use grep_searcher::{BinaryDetection, Searcher, SearcherBuilder, Sink, SinkMatch};
use ignore::WalkBuilder;
use ignore::overrides::OverrideBuilder;
use serde::{Deserialize, Serialize};

use super::{ToolContext, ToolOutcome, parse_arguments};
use crate::sandbox::job::{ConfinedJob, Job};

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 2000;
/// Codex gives `rg` this long.
const SEARCH_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct GrepFilesParams {
    pub pattern: String,
    pub include: Option<String>,
    pub path: Option<String>,
    #[serde(default = "default_limit")]
    pub limit: usize,
}

fn default_limit() -> usize {
    DEFAULT_LIMIT
}

pub async fn run(ctx: &ToolContext<'_>, arguments: &str) -> ToolOutcome {
    let params: GrepFilesParams = match parse_arguments(arguments) {
        Ok(params) => params,
        Err(text) => return ToolOutcome::failure(text),
    };
    let pattern = params.pattern.trim().to_string();
    if pattern.is_empty() {
        return ToolOutcome::failure("pattern must not be empty".to_string());
    }
    if params.limit == 0 {
        return ToolOutcome::failure("limit must be greater than zero".to_string());
    }
    let limit = params.limit.min(MAX_LIMIT);
    let requested = match params.path.as_deref().filter(|p| !p.is_empty()) {
        Some(path) => ctx.cwd.join(path),
        None => ctx.cwd.to_path_buf(),
    };
    // Checked first, so the answer says nothing about paths outside.
    let root = match ctx.workspace.resolve_existing(ctx.cwd, &requested) {
        Ok(root) => root,
        Err(err) if err.is_denied() => return ToolOutcome::failure(err.to_string()),
        Err(_) => {
            let err = std::fs::metadata(&requested).err();
            let err = err.map_or_else(|| "cannot be resolved".to_string(), |e| e.to_string());
            return ToolOutcome::failure(format!(
                "unable to access `{}`: {err}",
                requested.display()
            ));
        }
    };
    let include = params
        .include
        .as_deref()
        .map(str::trim)
        .filter(|glob| !glob.is_empty())
        .map(str::to_string);
    let job = GrepJob {
        pattern,
        include,
        root,
    };
    // Under a sandbox the search happens confined, seeing what a sandboxed
    // command would: no other process's /proc, no hidden path.
    let searched = match ctx.sandbox.confinement() {
        Some(confinement) => ctx
            .executor
            .run_job("grep_files", job, ctx.cwd, &confinement)
            .await
            .map_err(|err| err.to_string()),
        None => tokio::task::spawn_blocking(move || job.run())
            .await
            .map_err(|err| err.to_string()),
    };
    match searched {
        Ok(Ok(mut found)) if !found.is_empty() => {
            found.truncate(limit);
            ToolOutcome::success(found.join("\n"))
        }
        Ok(Ok(_)) => ToolOutcome::failure("No matches found.".to_string()),
        Ok(Err(SearchError::TimedOut)) => {
            ToolOutcome::failure("rg timed out after 30 seconds".to_string())
        }
        Ok(Err(SearchError::Failed(message))) => {
            ToolOutcome::failure(format!("rg failed: {message}"))
        }
        Err(err) => ToolOutcome::failure(format!("rg failed: {err}")),
    }
}

/// Searches under a root, newest match first, for up to
/// [`SEARCH_TIMEOUT`] from when the job starts.
#[derive(Debug, Serialize, Deserialize)]
pub struct GrepJob {
    pattern: String,
    include: Option<String>,
    root: PathBuf,
}

impl ConfinedJob for GrepJob {
    type Output = Result<Vec<String>, SearchError>;

    fn run(self) -> Self::Output {
        let deadline = Instant::now() + SEARCH_TIMEOUT;
        search(&self.pattern, self.include.as_deref(), &self.root, deadline)
    }

    fn into_job(self) -> Job {
        Job::GrepFiles(self)
    }
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SearchError {
    TimedOut,
    /// A bad pattern or glob: what rg would print on stderr.
    Failed(String),
}

/// Matching files under `root` (a file or directory), newest first.
pub fn search(
    pattern: &str,
    include: Option<&str>,
    root: &Path,
    deadline: Instant,
) -> Result<Vec<String>, SearchError> {
    let matcher = RegexMatcherBuilder::new()
        .line_terminator(Some(b'\n'))
        .build(pattern)
        .map_err(|err| SearchError::Failed(err.to_string()))?;
    let mut walk = WalkBuilder::new(root);
    if let Some(glob) = include {
        let base = if root.is_dir() {
            root
        } else {
            root.parent().unwrap_or(root)
        };
        let mut overrides = OverrideBuilder::new(base);
        overrides
            .add(glob)
            .map_err(|err| SearchError::Failed(err.to_string()))?;
        let overrides = overrides
            .build()
            .map_err(|err| SearchError::Failed(err.to_string()))?;
        walk.overrides(overrides);
    }
    let mut searcher = SearcherBuilder::new()
        // rg's default for search: stop reading a file at its first NUL.
        .binary_detection(BinaryDetection::quit(b'\x00'))
        .line_number(false)
        .build();

    let mut found: Vec<(SystemTime, PathBuf)> = Vec::new();
    for entry in walk.build() {
        if Instant::now() >= deadline {
            return Err(SearchError::TimedOut);
        }
        // Unreadable entries are skipped silently (`--no-messages`).
        let Ok(entry) = entry else { continue };
        if !entry.file_type().is_some_and(|t| t.is_file()) {
            continue;
        }
        let mut sink = FirstMatch::default();
        if searcher
            .search_path(&matcher, entry.path(), &mut sink)
            .is_err()
            || !sink.found
        {
            continue;
        }
        let modified = entry
            .metadata()
            .ok()
            .and_then(|meta| meta.modified().ok())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        found.push((modified, entry.into_path()));
    }
    // Newest first; ties in path order, so the output is stable.
    found.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    Ok(found
        .into_iter()
        .map(|(_, path)| path.to_string_lossy().into_owned())
        .collect())
}

/// Stops a file's search at its first match: one is enough to list it.
#[derive(Default)]
struct FirstMatch {
    found: bool,
}

impl Sink for FirstMatch {
    type Error = std::io::Error;

    fn matched(&mut self, _: &Searcher, _: &SinkMatch<'_>) -> Result<bool, Self::Error> {
        self.found = true;
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn later() -> Instant {
        Instant::now() + SEARCH_TIMEOUT
    }

    fn set_mtime(path: &Path, secs: u64) {
        let file = fs::File::options().write(true).open(path).unwrap();
        file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
            .unwrap();
    }

    #[test]
    fn parses_arguments_with_defaults() {
        let p: GrepFilesParams = parse_arguments(r#"{"pattern":"x"}"#).unwrap();
        assert_eq!(
            p,
            GrepFilesParams {
                pattern: "x".into(),
                include: None,
                path: None,
                limit: 100
            }
        );
        let err = parse_arguments::<GrepFilesParams>(r#"{"include":"*.rs"}"#).unwrap_err();
        assert!(
            err.starts_with("failed to parse function arguments: missing field `pattern`"),
            "{err}"
        );
    }

    #[test]
    fn finds_files_newest_first_respecting_ignores() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // .gitignore applies inside a git repository, as with rg.
        fs::create_dir(root.join(".git")).unwrap();
        fs::write(root.join(".gitignore"), "ignored.txt\n").unwrap();
        fs::write(root.join("old.txt"), "needle\n").unwrap();
        fs::write(root.join("new.rs"), "a needle here\n").unwrap();
        fs::write(root.join("ignored.txt"), "needle\n").unwrap();
        fs::write(root.join(".hidden"), "needle\n").unwrap();
        fs::write(root.join("binary.bin"), b"needle\x00\x01").unwrap();
        fs::write(root.join("other.txt"), "haystack\n").unwrap();
        set_mtime(&root.join("old.txt"), 1_000);
        set_mtime(&root.join("new.rs"), 2_000);

        let got = search("needle", None, root, later()).unwrap();
        let want = |names: &[&str]| -> Vec<String> {
            names
                .iter()
                .map(|n| root.join(n).to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(got, want(&["new.rs", "old.txt"]));
        // As with rg, an include glob overrides the ignore files (but not
        // binary detection).
        assert_eq!(
            search("needle", Some("*.txt"), root, later()).unwrap(),
            want(&["ignored.txt", "old.txt"])
        );
        assert_eq!(
            search("needle", Some("*.rs"), root, later()).unwrap(),
            want(&["new.rs"])
        );
        assert_eq!(search("ne+dle\\b", None, root, later()).unwrap().len(), 2);
        assert!(search("absent", None, root, later()).unwrap().is_empty());
        // A file as the path searches just that file.
        assert_eq!(
            search("needle", None, &root.join("old.txt"), later()).unwrap(),
            want(&["old.txt"])
        );
    }

    #[test]
    fn bad_patterns_and_timeouts() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a"), "x").unwrap();
        let err = search("(", None, dir.path(), later()).unwrap_err();
        assert!(
            matches!(&err, SearchError::Failed(m) if m.contains("regex parse error")),
            "{err:?}"
        );
        assert_eq!(
            search("x", None, dir.path(), Instant::now()).unwrap_err(),
            SearchError::TimedOut
        );
    }
}
