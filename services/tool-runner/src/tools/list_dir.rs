//! `list_dir` (Codex: `codex-rs/core/src/tools/handlers/list_dir.rs`): a breadth-first listing, sorted by
//! relative path, indented by depth, with type suffixes. Symlinks are listed,
//! never followed, so the listing cannot wander out of the workspace.

use std::collections::VecDeque;
use std::fs::FileType;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{ToolContext, ToolOutcome, parse_arguments};
use crate::sandbox::job::{ConfinedJob, Job};

const MAX_NAME_BYTES: usize = 500;
const INDENT_SPACES: usize = 2;

#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct ListDirParams {
    pub dir_path: String,
    #[serde(default = "one")]
    pub offset: usize,
    #[serde(default = "default_limit")]
    pub limit: usize,
    #[serde(default = "default_depth")]
    pub depth: usize,
}

fn one() -> usize {
    1
}
fn default_limit() -> usize {
    25
}
fn default_depth() -> usize {
    2
}

pub async fn run(ctx: &ToolContext<'_>, arguments: &str) -> ToolOutcome {
    let params: ListDirParams = match parse_arguments(arguments) {
        Ok(params) => params,
        Err(text) => return ToolOutcome::failure(text),
    };
    if params.offset == 0 {
        return ToolOutcome::failure("offset must be a 1-indexed entry number".to_string());
    }
    if params.limit == 0 {
        return ToolOutcome::failure("limit must be greater than zero".to_string());
    }
    if params.depth == 0 {
        return ToolOutcome::failure("depth must be greater than zero".to_string());
    }
    let path = PathBuf::from(&params.dir_path);
    if !path.is_absolute() {
        return ToolOutcome::failure("dir_path must be an absolute path".to_string());
    }
    let resolved = match ctx.workspace.resolve_existing(ctx.cwd, &path) {
        Ok(resolved) => resolved,
        Err(err) if err.is_denied() => return ToolOutcome::failure(err.to_string()),
        // Let the listing report a missing directory the way Codex words it.
        Err(_) => path.clone(),
    };
    let job = ListDirJob {
        path: resolved,
        offset: params.offset,
        limit: params.limit,
        depth: params.depth,
    };
    // Under a sandbox the listing happens confined, seeing what a
    // sandboxed command would: no other process's /proc, no hidden path.
    let listed = match ctx.sandbox.confinement() {
        Some(confinement) => ctx
            .executor
            .run_job("list_dir", job, ctx.cwd, &confinement)
            .await
            .map_err(|err| format!("failed to read directory: {err}")),
        None => tokio::task::spawn_blocking(move || job.run())
            .await
            .map_err(|err| format!("failed to read directory: {err}")),
    };
    match listed {
        Ok(Ok(entries)) => {
            let mut lines = vec![format!("Absolute path: {}", path.display())];
            lines.extend(entries);
            ToolOutcome::success(lines.join("\n"))
        }
        Ok(Err(text)) | Err(text) => ToolOutcome::failure(text),
    }
}

/// Lists a directory breadth-first.
#[derive(Debug, Serialize, Deserialize)]
pub struct ListDirJob {
    path: PathBuf,
    offset: usize,
    limit: usize,
    depth: usize,
}

impl ConfinedJob for ListDirJob {
    type Output = Result<Vec<String>, String>;

    fn run(self) -> Self::Output {
        list(&self.path, self.offset, self.limit, self.depth)
    }

    fn into_job(self) -> Job {
        Job::ListDir(self)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Directory,
    File,
    Symlink,
    Other,
}

impl From<FileType> for Kind {
    fn from(file_type: FileType) -> Self {
        if file_type.is_symlink() {
            Self::Symlink
        } else if file_type.is_dir() {
            Self::Directory
        } else if file_type.is_file() {
            Self::File
        } else {
            Self::Other
        }
    }
}

struct Entry {
    /// Relative path with `/`: the sort key.
    sort_key: String,
    name: String,
    depth: usize,
    kind: Kind,
}

impl Entry {
    fn render(&self) -> String {
        let suffix = match self.kind {
            Kind::Directory => "/",
            Kind::Symlink => "@",
            Kind::Other => "?",
            Kind::File => "",
        };
        format!(
            "{}{}{suffix}",
            " ".repeat(self.depth * INDENT_SPACES),
            self.name
        )
    }
}

fn list(dir: &Path, offset: usize, limit: usize, depth: usize) -> Result<Vec<String>, String> {
    let mut entries = Vec::new();
    let mut queue = VecDeque::from([(dir.to_path_buf(), PathBuf::new(), depth)]);
    while let Some((current, prefix, remaining)) = queue.pop_front() {
        let read = std::fs::read_dir(&current)
            .map_err(|err| format!("failed to read directory: {err}"))?;
        let mut here = Vec::new();
        for item in read {
            let item = item.map_err(|err| format!("failed to read directory: {err}"))?;
            let kind = Kind::from(
                item.file_type()
                    .map_err(|err| format!("failed to inspect entry: {err}"))?,
            );
            let file_name = item.file_name();
            let relative = prefix.join(&file_name);
            let entry = Entry {
                sort_key: cut(&relative.to_string_lossy().replace('\\', "/")),
                name: cut(&file_name.to_string_lossy()),
                depth: prefix.components().count(),
                kind,
            };
            here.push((item.path(), relative, entry));
        }
        here.sort_unstable_by(|a, b| a.2.sort_key.cmp(&b.2.sort_key));
        for (path, relative, entry) in here {
            if entry.kind == Kind::Directory && remaining > 1 {
                queue.push_back((path, relative, remaining - 1));
            }
            entries.push(entry);
        }
    }
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    entries.sort_unstable_by(|a, b| a.sort_key.cmp(&b.sort_key));
    let start = offset - 1;
    if start >= entries.len() {
        return Err("offset exceeds directory entry count".to_string());
    }
    let end = start + limit.min(entries.len() - start);
    let mut out: Vec<String> = entries[start..end].iter().map(Entry::render).collect();
    if end < entries.len() {
        out.push(format!("More than {} entries found", end - start));
    }
    Ok(out)
}

fn cut(text: &str) -> String {
    text[..text.floor_char_boundary(MAX_NAME_BYTES)].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::create_dir_all(p.join("src/deep/deeper")).unwrap();
        std::fs::write(p.join("b.txt"), "").unwrap();
        std::fs::write(p.join("src/main.rs"), "").unwrap();
        std::fs::write(p.join("src/deep/x.rs"), "").unwrap();
        std::os::unix::fs::symlink("b.txt", p.join("link")).unwrap();
        dir
    }

    #[test]
    fn parses_arguments_with_defaults() {
        let p: ListDirParams = parse_arguments(r#"{"dir_path":"/x"}"#).unwrap();
        assert_eq!(
            p,
            ListDirParams {
                dir_path: "/x".into(),
                offset: 1,
                limit: 25,
                depth: 2
            }
        );
        let err = parse_arguments::<ListDirParams>(r#"{"dir_path":"/x","depth":-1}"#).unwrap_err();
        assert!(
            err.starts_with("failed to parse function arguments: invalid value"),
            "{err}"
        );
    }

    #[test]
    fn lists_breadth_first_sorted_with_suffixes() {
        let dir = tree();
        let got = list(dir.path(), 1, 25, 2).unwrap();
        assert_eq!(got, vec!["b.txt", "link@", "src/", "  deep/", "  main.rs"]);
        let got = list(dir.path(), 1, 25, 3).unwrap();
        assert_eq!(
            got,
            vec![
                "b.txt",
                "link@",
                "src/",
                "  deep/",
                "    deeper/",
                "    x.rs",
                "  main.rs"
            ]
        );
    }

    #[test]
    fn offset_limit_and_more_marker() {
        let dir = tree();
        assert_eq!(
            list(dir.path(), 2, 2, 2).unwrap(),
            vec!["link@", "src/", "More than 2 entries found"]
        );
        assert_eq!(
            list(dir.path(), 9, 2, 2).unwrap_err(),
            "offset exceeds directory entry count"
        );
        let err = list(&dir.path().join("missing"), 1, 2, 2).unwrap_err();
        assert!(
            err.starts_with("failed to read directory: No such file"),
            "{err}"
        );
    }
}
