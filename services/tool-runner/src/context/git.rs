//! Git facts for the project context, read from the repository's files
//! (HEAD, refs, packed-refs, config) rather than by running git: no process
//! to time out, and no dependence on git being installed.

use std::path::{Path, PathBuf};

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
pub fn git_info(cwd: &Path) -> GitInfo {
    let Some(git_dir) = find_git_dir(cwd) else {
        return GitInfo::default();
    };
    // Worktrees keep refs and config in the common directory.
    let common_dir = std::fs::read_to_string(git_dir.join("commondir"))
        .map(|rel| git_dir.join(rel.trim()))
        .unwrap_or_else(|_| git_dir.clone());
    let head = std::fs::read_to_string(git_dir.join("HEAD")).unwrap_or_default();
    let head = head.trim();
    let (branch, commit) = match head.strip_prefix("ref:") {
        Some(reference) => {
            let reference = reference.trim();
            let branch = reference.strip_prefix("refs/heads/").unwrap_or(reference);
            let commit = resolve_ref(&git_dir, &common_dir, reference).unwrap_or_default();
            (branch.to_string(), commit)
        }
        None => (String::new(), head.to_string()),
    };
    let config = std::fs::read_to_string(common_dir.join("config")).unwrap_or_default();
    GitInfo {
        branch,
        commit,
        remote_url: remote_url(&config).unwrap_or_default(),
    }
}

/// The `.git` directory for `cwd`: the nearest `.git` directory, or the one
/// a `.git` file (`gitdir: …`) points to.
fn find_git_dir(cwd: &Path) -> Option<PathBuf> {
    cwd.ancestors().find_map(|dir| {
        let dot_git = dir.join(".git");
        let meta = std::fs::metadata(&dot_git).ok()?;
        if meta.is_dir() {
            return Some(dot_git);
        }
        let text = std::fs::read_to_string(&dot_git).ok()?;
        let target = text.trim().strip_prefix("gitdir:")?.trim();
        Some(dir.join(target))
    })
}

/// The commit a ref points at: the loose ref file, else packed-refs.
fn resolve_ref(git_dir: &Path, common_dir: &Path, reference: &str) -> Option<String> {
    for dir in [git_dir, common_dir] {
        if let Ok(text) = std::fs::read_to_string(dir.join(reference)) {
            return Some(text.trim().to_string());
        }
    }
    let packed = std::fs::read_to_string(common_dir.join("packed-refs")).ok()?;
    packed.lines().find_map(|line| {
        let (commit, name) = line.split_once(' ')?;
        (name.trim() == reference).then(|| commit.to_string())
    })
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
            git_info(&dir.path().join("sub")),
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
        let info = git_info(dir.path());
        assert_eq!((info.branch.as_str(), info.commit.as_str()), ("dev", SHA));
        assert_eq!(info.remote_url, "/srv/fork");

        fs::write(git.join("HEAD"), format!("{SHA}\n")).unwrap();
        let info = git_info(dir.path());
        assert_eq!((info.branch.as_str(), info.commit.as_str()), ("", SHA));

        fs::write(git.join("HEAD"), "ref: refs/heads/fresh\n").unwrap();
        let info = git_info(dir.path());
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
        let info = git_info(&wt);
        assert_eq!(
            (info.branch.as_str(), info.commit.as_str()),
            ("feature", SHA)
        );

        let plain = tempfile::tempdir().unwrap();
        assert_eq!(git_info(plain.path()), GitInfo::default());
    }
}
