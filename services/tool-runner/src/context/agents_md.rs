//! AGENTS.md discovery (Codex: `codex-rs/core/src/project_doc.rs`): from
//! the project root down to the cwd, one instructions file per directory,
//! within a total byte budget. Global instructions (`$CODEX_HOME`) are the
//! workflow's business.
//!
//! The project is the model's to write, so what is read stays in it:
//! file and marker names are plain names (no `/`, no `..`), an
//! instructions file that is a symlink is followed only to a file inside
//! the directories the walk covers and outside every hidden path (a link
//! to the blob store or Codex's home inside the project would otherwise
//! put what the sandbox hides into the model's context), and only regular
//! files are read (a FIFO named AGENTS.md would otherwise hang the read).

use std::io::Read as _;
use std::path::{Path, PathBuf};

use super::open_visible;

/// Codex's default `project_doc_max_bytes`.
pub const DEFAULT_MAX_BYTES: u64 = 32 * 1024;
/// Names tried first in every directory, in this order.
const PRIMARY_NAMES: [&str; 2] = ["AGENTS.override.md", "AGENTS.md"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentsMdOptions {
    /// Total budget across all files.
    pub max_bytes: u64,
    /// Names marking the project root; empty disables the walk up.
    pub root_markers: Vec<String>,
    /// Names tried after the primary ones.
    pub fallback_filenames: Vec<String>,
}

impl Default for AgentsMdOptions {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_MAX_BYTES,
            root_markers: vec![".git".to_string()],
            fallback_filenames: Vec::new(),
        }
    }
}

/// The discovered instructions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectDoc {
    /// The files' texts joined with a blank line.
    pub text: String,
    /// The files used, root first.
    pub paths: Vec<PathBuf>,
}

/// Whether `name` is a plain file name: not empty, not `.` or `..`, no `/`
/// and no NUL. Names of instructions files and root markers must be.
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

/// The user message text Codex wraps the instructions in.
pub fn agents_md_message_text(cwd: &Path, text: &str) -> String {
    format!(
        "# AGENTS.md instructions for {}\n\n<INSTRUCTIONS>\n{text}\n</INSTRUCTIONS>",
        cwd.display()
    )
}

/// Finds and reads the instructions for `cwd` (canonical); `None` when there
/// are none (or all are blank). Nothing inside `hidden` (canonical) is read.
pub fn discover(cwd: &Path, options: &AgentsMdOptions, hidden: &[PathBuf]) -> Option<ProjectDoc> {
    let mut remaining = options.max_bytes;
    let mut texts = Vec::new();
    let mut paths = Vec::new();
    let (scope, candidates) = candidate_files(cwd, options);
    for path in candidates {
        if remaining == 0 {
            break;
        }
        let Some(file) = open_within(&path, scope, hidden) else {
            continue;
        };
        let mut data = Vec::new();
        // The file crossing the budget is cut there.
        if file.take(remaining).read_to_end(&mut data).is_err() {
            continue;
        }
        let text = String::from_utf8_lossy(&data).into_owned();
        if text.trim().is_empty() {
            continue;
        }
        remaining = remaining.saturating_sub(u64::try_from(data.len()).unwrap_or(u64::MAX));
        texts.push(text);
        paths.push(path);
    }
    (!texts.is_empty()).then(|| ProjectDoc {
        text: texts.join("\n\n"),
        paths,
    })
}

/// Opens the instructions file `path` for reading if it is a regular file
/// inside `scope` and outside `hidden`, following a symlink only to such a
/// file. The file opened is the resolved one, opened without following a
/// symlink at its end, and checked again once open, by where the opened
/// file really is (a directory swapped for a link in between cannot send
/// the read elsewhere).
fn open_within(path: &Path, scope: &Path, hidden: &[PathBuf]) -> Option<std::fs::File> {
    let resolved = std::fs::canonicalize(path).ok()?;
    let outside = |target: &Path| {
        tracing::warn!(
            path = %path.display(),
            target = %target.display(),
            "an instructions file links out of the project; not read"
        );
    };
    if !resolved.starts_with(scope) {
        outside(&resolved);
        return None;
    }
    let opened = open_visible(&resolved, hidden, true)?;
    if !opened.real_path.starts_with(scope) {
        outside(&opened.real_path);
        return None;
    }
    Some(opened.file)
}

/// The directory the instructions must stay in, and the first
/// instructions file of each directory from the project root down to
/// `cwd`.
fn candidate_files<'a>(cwd: &'a Path, options: &AgentsMdOptions) -> (&'a Path, Vec<PathBuf>) {
    let root = project_root(cwd, &options.root_markers);
    // `cwd` and its ancestors up to the root, then reversed: root first.
    let mut dirs: Vec<&Path> = cwd
        .ancestors()
        .take_while(|dir| root.is_none_or(|root| dir.starts_with(root)))
        .collect();
    if root.is_none() {
        dirs.truncate(1);
    }
    dirs.reverse();

    let names: Vec<&str> = PRIMARY_NAMES
        .iter()
        .copied()
        .chain(options.fallback_filenames.iter().map(String::as_str))
        .filter(|name| is_plain_name(name))
        .collect();
    let scope = root.unwrap_or(cwd);
    let files = dirs
        .iter()
        .filter_map(|dir| {
            names.iter().find_map(|name| {
                let candidate = dir.join(name);
                // A file, or a symlink (followed when read).
                let meta = std::fs::symlink_metadata(&candidate).ok()?;
                (meta.is_file() || meta.file_type().is_symlink()).then_some(candidate)
            })
        })
        .collect();
    (scope, files)
}

/// The nearest ancestor of `cwd` (itself included) holding a marker.
fn project_root<'a>(cwd: &'a Path, markers: &[String]) -> Option<&'a Path> {
    if markers.is_empty() {
        return None;
    }
    cwd.ancestors().find(|dir| {
        markers
            .iter()
            .filter(|marker| is_plain_name(marker))
            .any(|marker| std::fs::symlink_metadata(dir.join(marker)).is_ok())
    })
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    struct Tree {
        _tmp: tempfile::TempDir,
        root: PathBuf,
    }

    fn tree() -> Tree {
        let tmp = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(tmp.path()).unwrap().join("repo");
        fs::create_dir_all(root.join("a/b")).unwrap();
        Tree { _tmp: tmp, root }
    }

    fn text(cwd: &Path, options: &AgentsMdOptions) -> Option<String> {
        discover(cwd, options, &[]).map(|doc| doc.text)
    }

    #[test]
    fn root_down_to_cwd_with_a_marker() {
        let t = tree();
        fs::create_dir(t.root.join(".git")).unwrap();
        fs::write(t.root.join("AGENTS.md"), "root").unwrap();
        fs::write(t.root.join("a/AGENTS.md"), "a").unwrap();
        fs::write(t.root.join("a/b/AGENTS.md"), "b").unwrap();
        // Above the root: never read.
        fs::write(t.root.parent().unwrap().join("AGENTS.md"), "outside").unwrap();
        let doc = discover(&t.root.join("a/b"), &AgentsMdOptions::default(), &[]).unwrap();
        assert_eq!(doc.text, "root\n\na\n\nb");
        assert_eq!(doc.paths[0], t.root.join("AGENTS.md"));
        // A .git file (worktree) marks the root too.
        fs::remove_dir(t.root.join(".git")).unwrap();
        fs::write(t.root.join(".git"), "gitdir: elsewhere").unwrap();
        assert_eq!(
            text(&t.root.join("a"), &AgentsMdOptions::default()).unwrap(),
            "root\n\na"
        );
    }

    #[test]
    fn without_a_marker_only_the_cwd_counts() {
        let t = tree();
        fs::write(t.root.join("AGENTS.md"), "root").unwrap();
        fs::write(t.root.join("a/AGENTS.md"), "a").unwrap();
        assert_eq!(
            text(&t.root.join("a"), &AgentsMdOptions::default()).unwrap(),
            "a"
        );
        assert_eq!(text(&t.root.join("a/b"), &AgentsMdOptions::default()), None);
        // Custom markers, and an empty list disabling the walk.
        fs::write(t.root.join(".root"), "").unwrap();
        let custom = AgentsMdOptions {
            root_markers: vec![".root".into()],
            ..Default::default()
        };
        assert_eq!(text(&t.root.join("a"), &custom).unwrap(), "root\n\na");
        let none = AgentsMdOptions {
            root_markers: vec![],
            ..Default::default()
        };
        assert_eq!(text(&t.root.join("a"), &none).unwrap(), "a");
    }

    #[test]
    fn override_wins_then_fallbacks() {
        let t = tree();
        fs::write(t.root.join("AGENTS.md"), "plain").unwrap();
        fs::write(t.root.join("AGENTS.override.md"), "override").unwrap();
        fs::write(t.root.join("a/CLAUDE.md"), "fallback").unwrap();
        let options = AgentsMdOptions {
            root_markers: vec!["AGENTS.md".into()],
            fallback_filenames: vec!["CLAUDE.md".into()],
            ..Default::default()
        };
        assert_eq!(
            text(&t.root.join("a"), &options).unwrap(),
            "override\n\nfallback"
        );
        // Without the fallback name, `a` contributes nothing.
        let options = AgentsMdOptions {
            fallback_filenames: vec![],
            ..options
        };
        assert_eq!(text(&t.root.join("a"), &options).unwrap(), "override");
    }

    #[test]
    fn budget_cuts_the_crossing_file_and_drops_later_ones() {
        let t = tree();
        fs::create_dir(t.root.join(".git")).unwrap();
        fs::write(t.root.join("AGENTS.md"), "0123456789").unwrap();
        fs::write(t.root.join("a/AGENTS.md"), "abcdefghij").unwrap();
        fs::write(t.root.join("a/b/AGENTS.md"), "never").unwrap();
        let options = AgentsMdOptions {
            max_bytes: 15,
            ..Default::default()
        };
        assert_eq!(
            text(&t.root.join("a/b"), &options).unwrap(),
            "0123456789\n\nabcde"
        );
    }

    #[test]
    fn blank_files_are_skipped_and_symlinks_followed() {
        let t = tree();
        fs::create_dir(t.root.join(".git")).unwrap();
        fs::write(t.root.join("AGENTS.md"), "  \n\t\n").unwrap();
        fs::write(t.root.join("shared.md"), "linked").unwrap();
        std::os::unix::fs::symlink(t.root.join("shared.md"), t.root.join("a/AGENTS.md")).unwrap();
        let doc = discover(&t.root.join("a"), &AgentsMdOptions::default(), &[]).unwrap();
        assert_eq!(doc.text, "linked");
        assert_eq!(doc.paths, vec![t.root.join("a/AGENTS.md")]);
        fs::remove_file(t.root.join("a/AGENTS.md")).unwrap();
        assert_eq!(text(&t.root.join("a"), &AgentsMdOptions::default()), None);
    }

    #[test]
    fn nothing_is_read_from_outside_the_project() {
        let t = tree();
        fs::create_dir(t.root.join(".git")).unwrap();
        let outside = t.root.parent().unwrap().join("secret.txt");
        fs::write(&outside, "OPENAI_API_KEY=sk-secret").unwrap();
        // A symlink out of the project is not followed.
        std::os::unix::fs::symlink(&outside, t.root.join("AGENTS.md")).unwrap();
        std::os::unix::fs::symlink("/proc/self/environ", t.root.join("a/AGENTS.md")).unwrap();
        assert_eq!(text(&t.root.join("a"), &AgentsMdOptions::default()), None);
        // Names with a path in them are not names.
        let sneaky = AgentsMdOptions {
            fallback_filenames: vec![
                "../secret.txt".into(),
                outside.display().to_string(),
                "..".into(),
            ],
            ..Default::default()
        };
        fs::remove_file(t.root.join("AGENTS.md")).unwrap();
        assert_eq!(text(&t.root, &sneaky), None);
        let markers = AgentsMdOptions {
            root_markers: vec!["../secret.txt".into()],
            ..Default::default()
        };
        assert_eq!(project_root(&t.root.join("a"), &markers.root_markers), None);
        for bad in ["", ".", "..", "a/b", "/abs", "x\0y"] {
            assert!(!is_plain_name(bad), "{bad:?}");
        }
        assert!(is_plain_name("CLAUDE.md"));
    }

    #[test]
    fn nothing_is_read_from_a_hidden_path_inside_the_project() {
        let t = tree();
        fs::create_dir(t.root.join(".git")).unwrap();
        let hidden = t.root.join("blobs");
        fs::create_dir(&hidden).unwrap();
        fs::write(hidden.join("item"), "sk-hidden").unwrap();
        std::os::unix::fs::symlink("blobs/item", t.root.join("AGENTS.md")).unwrap();
        std::os::unix::fs::symlink("../../blobs/item", t.root.join("a/b/AGENTS.md")).unwrap();
        let cwd = t.root.join("a/b");
        assert_eq!(
            text(&cwd, &AgentsMdOptions::default()).unwrap(),
            "sk-hidden\n\nsk-hidden"
        );
        assert_eq!(discover(&cwd, &AgentsMdOptions::default(), &[hidden]), None);
    }

    #[test]
    fn a_fifo_named_agents_md_is_skipped_not_waited_for() {
        let t = tree();
        let fifo = t.root.join("a/AGENTS.md");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if !made.is_ok_and(|status| status.success()) {
            eprintln!("skipped: mkfifo is not available");
            return;
        }
        assert_eq!(text(&t.root.join("a"), &AgentsMdOptions::default()), None);
    }

    #[test]
    fn message_wrapper() {
        assert_eq!(
            agents_md_message_text(Path::new("/w"), "do this"),
            "# AGENTS.md instructions for /w\n\n<INSTRUCTIONS>\ndo this\n</INSTRUCTIONS>"
        );
    }
}
