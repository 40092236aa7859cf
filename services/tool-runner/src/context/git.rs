//! Git facts for the project context, read from the repository's files
//! (HEAD, refs, packed-refs, config) rather than by running git: no process
//! to time out, and no dependence on git being installed.
//!
//! The repository is the model's to write (a sandboxed command can plant
//! a `.git` in any directory of the cwd that has none), these reads are the
//! tool-runner's own, unconfined, and what they find goes into the model's
//! context. So only what has the shape of git's data comes out: a ref is
//! followed only when its name is one (`refs/...`, git's
//! `check_refname_format` rules: no `..`, no absolute path), a commit is
//! only ever an object id (40 or 64 hex digits), every file is read through
//! [`read_visible`] (a regular file outside the hidden paths, checked on
//! the file opened, of bounded size) — never the text of whatever file a
//! planted `ref: /path/to/secret` or `gitdir:` names.

use std::path::{Path, PathBuf};

use super::read_visible;

/// Enough for HEAD, a loose ref, `commondir` or a `.git` file.
const SMALL_FILE_BYTES: u64 = 4 * 1024;
/// A repository's config.
const CONFIG_BYTES: u64 = 1024 * 1024;
/// packed-refs: large repositories have many refs; a longer file is cut.
const PACKED_REFS_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GitInfo {
    /// Empty when HEAD is detached or there is no repository.
    pub branch: String,
    /// Empty when there is no commit yet.
    pub commit: String,
    /// `origin`'s URL, else the first remote's.
    pub remote_url: String,
}

/// What git says about the repository `cwd` is in; all empty outside one.
/// Nothing inside `hidden` (canonical) is read.
pub fn git_info(cwd: &Path, hidden: &[PathBuf]) -> GitInfo {
    let Some(git_dir) = find_git_dir(cwd, hidden) else {
        return GitInfo::default();
    };
    // Worktrees keep refs and config in the common directory.
    let common_dir = read_visible(&git_dir.join("commondir"), hidden, SMALL_FILE_BYTES)
        .map(|rel| git_dir.join(rel.trim()))
        .unwrap_or_else(|| git_dir.clone());
    let head = read_visible(&git_dir.join("HEAD"), hidden, SMALL_FILE_BYTES).unwrap_or_default();
    let head = head.trim();
    let (branch, commit) = match head.strip_prefix("ref:") {
        Some(reference) if is_ref_name(reference.trim()) => {
            let reference = reference.trim();
            let branch = reference.strip_prefix("refs/heads/").unwrap_or(reference);
            let commit = resolve_ref(&git_dir, &common_dir, reference, hidden).unwrap_or_default();
            (branch.to_string(), commit)
        }
        // Not a ref git would follow.
        Some(_) => (String::new(), String::new()),
        None if is_object_id(head) => (String::new(), head.to_string()),
        None => (String::new(), String::new()),
    };
    let config = read_visible(&common_dir.join("config"), hidden, CONFIG_BYTES).unwrap_or_default();
    GitInfo {
        branch,
        commit,
        remote_url: remote_url(&config).unwrap_or_default(),
    }
}

/// The `.git` directory for `cwd`: the nearest `.git` directory, or the one
/// a `.git` file (`gitdir: …`) points to.
fn find_git_dir(cwd: &Path, hidden: &[PathBuf]) -> Option<PathBuf> {
    cwd.ancestors().find_map(|dir| {
        let dot_git = dir.join(".git");
        let meta = std::fs::metadata(&dot_git).ok()?;
        if meta.is_dir() {
            return Some(dot_git);
        }
        let text = read_visible(&dot_git, hidden, SMALL_FILE_BYTES)?;
        let target = text.trim().strip_prefix("gitdir:")?.trim();
        Some(dir.join(target))
    })
}

/// The commit a ref points at: the loose ref file, else packed-refs.
/// `reference` is a valid ref name ([`is_ref_name`]).
fn resolve_ref(
    git_dir: &Path,
    common_dir: &Path,
    reference: &str,
    hidden: &[PathBuf],
) -> Option<String> {
    for dir in [git_dir, common_dir] {
        if let Some(text) = read_visible(&dir.join(reference), hidden, SMALL_FILE_BYTES) {
            let commit = text.trim();
            return is_object_id(commit).then(|| commit.to_string());
        }
    }
    let packed = read_visible(&common_dir.join("packed-refs"), hidden, PACKED_REFS_BYTES)?;
    packed.lines().find_map(|line| {
        let (commit, name) = line.split_once(' ')?;
        (name.trim() == reference && is_object_id(commit)).then(|| commit.to_string())
    })
}

/// Whether `name` is a ref name HEAD may point to: under `refs/`, and
/// valid by git's rules (`refs.c`, `check_refname_format`): no empty, `.`
/// or `..` component, no component starting with `.` or ending in
/// `.lock`, no `..`, `@{`, control character, space or any of `~^:?*[\`.
/// Anything else (an absolute path, `../../secret`) is no ref.
fn is_ref_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("refs/") else {
        return false;
    };
    !rest.is_empty()
        && !name.contains("..")
        && !name.contains("@{")
        && !name.ends_with('.')
        && !name
            .chars()
            .any(|c| c.is_control() || " ~^:?*[\\".contains(c))
        && rest
            .split('/')
            .all(|part| !part.is_empty() && !part.starts_with('.') && !part.ends_with(".lock"))
}

/// Whether `text` is an object id: 40 (SHA-1) or 64 (SHA-256) hex digits.
fn is_object_id(text: &str) -> bool {
    matches!(text.len(), 40 | 64) && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `[remote "origin"] url`, else the first remote's url.
fn remote_url(config: &str) -> Option<String> {
    let mut section: Option<String> = None;
    let mut first: Option<String> = None;
    for line in config.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            section = line
                .strip_prefix("[remote \"")
                .and_then(|rest| rest.strip_suffix("\"]"))
                .map(str::to_string);
            continue;
        }
        let Some(remote) = &section else { continue };
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if key.trim() != "url" {
            continue;
        }
        let url = value.trim().to_string();
        if remote == "origin" {
            return Some(url);
        }
        first.get_or_insert(url);
    }
    first
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    fn repo() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let git = dir.path().join(".git");
        fs::create_dir_all(git.join("refs/heads")).unwrap();
        fs::create_dir_all(dir.path().join("sub")).unwrap();
        dir
    }

    #[test]
    fn branch_commit_and_remote() {
        let dir = repo();
        let git = dir.path().join(".git");
        fs::write(git.join("HEAD"), "ref: refs/heads/main\n").unwrap();
        fs::write(git.join("refs/heads/main"), format!("{SHA}\n")).unwrap();
        fs::write(
            git.join("config"),
            "[core]\n\tbare = false\n[remote \"upstream\"]\n\turl = https://example.invalid/up.git\n[remote \"origin\"]\n\turl = git@example.invalid:me/repo.git\n",
        )
        .unwrap();
        assert_eq!(
            git_info(&dir.path().join("sub"), &[]),
            GitInfo {
                branch: "main".into(),
                commit: SHA.into(),
                remote_url: "git@example.invalid:me/repo.git".into(),
            }
        );
    }

    #[test]
    fn packed_refs_detached_head_and_no_commits() {
        let dir = repo();
        let git = dir.path().join(".git");
        fs::write(git.join("HEAD"), "ref: refs/heads/dev\n").unwrap();
        fs::write(
            git.join("packed-refs"),
            format!("# pack-refs with: peeled\n{SHA} refs/heads/dev\n"),
        )
        .unwrap();
        fs::write(git.join("config"), "[remote \"fork\"]\n\turl = /srv/fork\n").unwrap();
        let info = git_info(dir.path(), &[]);
        assert_eq!((info.branch.as_str(), info.commit.as_str()), ("dev", SHA));
        assert_eq!(info.remote_url, "/srv/fork");

        fs::write(git.join("HEAD"), format!("{SHA}\n")).unwrap();
        let info = git_info(dir.path(), &[]);
        assert_eq!((info.branch.as_str(), info.commit.as_str()), ("", SHA));

        fs::write(git.join("HEAD"), "ref: refs/heads/fresh\n").unwrap();
        let info = git_info(dir.path(), &[]);
        assert_eq!((info.branch.as_str(), info.commit.as_str()), ("fresh", ""));
    }

    #[test]
    fn worktree_git_file_and_no_repository() {
        let dir = repo();
        let main_git = dir.path().join(".git");
        fs::write(main_git.join("refs/heads/feature"), format!("{SHA}\n")).unwrap();
        let wt_git = main_git.join("worktrees/wt");
        fs::create_dir_all(&wt_git).unwrap();
        fs::write(wt_git.join("HEAD"), "ref: refs/heads/feature\n").unwrap();
        fs::write(wt_git.join("commondir"), "../..\n").unwrap();
        let wt = dir.path().join("wt");
        fs::create_dir(&wt).unwrap();
        fs::write(wt.join(".git"), format!("gitdir: {}\n", wt_git.display())).unwrap();
        let info = git_info(&wt, &[]);
        assert_eq!(
            (info.branch.as_str(), info.commit.as_str()),
            ("feature", SHA)
        );

        let plain = tempfile::tempdir().unwrap();
        assert_eq!(git_info(plain.path(), &[]), GitInfo::default());
    }

    #[test]
    fn only_git_shaped_data_comes_out_of_a_planted_repository() {
        let dir = repo();
        let git = dir.path().join(".git");
        let secret = dir.path().join("secret.txt");
        fs::write(&secret, "sk-secret\n").unwrap();
        // A "ref" that is a path: its file's text was the "commit".
        for planted in [
            format!("ref: {}\n", secret.display()),
            "ref: ../secret.txt\n".to_string(),
            "ref: refs/../../secret.txt\n".to_string(),
        ] {
            fs::write(git.join("HEAD"), planted).unwrap();
            assert_eq!(git_info(dir.path(), &[]), GitInfo::default());
        }
        // A detached HEAD or a loose ref that holds anything but an id.
        fs::write(git.join("HEAD"), "sk-secret\n").unwrap();
        assert_eq!(git_info(dir.path(), &[]).commit, "");
        fs::write(git.join("HEAD"), "ref: refs/heads/main\n").unwrap();
        std::os::unix::fs::symlink(&secret, git.join("refs/heads/main")).unwrap();
        assert_eq!(git_info(dir.path(), &[]).commit, "");
        // A gitdir in a hidden directory is not read at all.
        let hidden = dir.path().join("hidden");
        fs::create_dir(&hidden).unwrap();
        fs::write(hidden.join("HEAD"), format!("{SHA}\n")).unwrap();
        let wt = dir.path().join("wt");
        fs::create_dir(&wt).unwrap();
        fs::write(wt.join(".git"), format!("gitdir: {}\n", hidden.display())).unwrap();
        assert_eq!(git_info(&wt, &[]).commit, SHA);
        assert_eq!(git_info(&wt, &[hidden]), GitInfo::default());
    }

    #[test]
    fn ref_names_and_object_ids() {
        for good in [
            "refs/heads/main",
            "refs/heads/feature/x-1",
            "refs/tags/v1.0",
        ] {
            assert!(is_ref_name(good), "{good}");
        }
        for bad in [
            "/etc/passwd",
            "refs/",
            "refs/../x",
            "refs/heads/../../x",
            "refs/heads/.hidden",
            "refs/heads/a.lock",
            "refs/heads//a",
            "refs/heads/a b",
            "refs/heads/a\nb",
            "heads/main",
            "HEAD",
        ] {
            assert!(!is_ref_name(bad), "{bad:?}");
        }
        assert!(is_object_id(SHA));
        assert!(is_object_id(&"ab".repeat(32)));
        assert!(!is_object_id("0123"));
        assert!(!is_object_id(&"g".repeat(40)));
    }
}
