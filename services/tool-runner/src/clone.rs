//! Workspaces cloned from a git repository: a session that names a
//! repository (`LeaseWorkspaceRequest.git`) works in a clone of its own,
//! `<clone root>/<hash of the session id>`, made once by the runner that
//! first holds the session and kept there — a runner that takes the session
//! over on the same volume finds it, one on another volume clones again.
//!
//! The URL and ref come from a client, so: only `https://` (and `file://`
//! where the operator allows local repositories), no credentials in the
//! URL, a ref of plain characters that cannot be read as an option, git's
//! other protocols (`ext::` and the like) disabled, no terminal prompts, no
//! system or user git configuration, the runner's environment not passed
//! on, and a time limit. The clone is made beside its final place and
//! renamed into it, so a half-made clone is never used.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use sha2::{Digest as _, Sha256};

/// How the runner clones, from its flags.
#[derive(Debug, Clone)]
pub struct CloneSettings {
    /// Where clones go; `None`: this runner clones nothing.
    pub root: Option<PathBuf>,
    /// Also `file://` repositories (tests, local mirrors).
    pub allow_local: bool,
    /// The longest a clone may take.
    pub timeout: Duration,
}

/// Why no clone was made.
#[derive(Debug, thiserror::Error)]
pub enum CloneError {
    #[error("this tool-runner clones no repositories (its operator set no --clone-root)")]
    NoRoot,
    #[error("git url {0:?} is refused: {1}")]
    Url(String, &'static str),
    #[error(
        "git ref {0:?} is refused: use a branch, tag or commit name (letters, digits, '.', '_', '/', '-'; not starting with '-')"
    )]
    Ref(String),
    #[error("git clone failed: {0}")]
    Failed(String),
    #[error("cannot prepare the clone directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The checked URL, as git gets it.
fn check_url(url: &str, allow_local: bool) -> Result<String, CloneError> {
    let refuse = |why| Err(CloneError::Url(url.to_string(), why));
    if url.len() > 2048 || url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return refuse("not a URL");
    }
    let Ok(parsed) = url::Url::parse(url) else {
        return refuse("not a URL");
    };
    match parsed.scheme() {
        "https" => {}
        "file" if allow_local => {}
        "file" => return refuse("local repositories are not allowed on this runner"),
        _ => return refuse("only https:// repositories are cloned"),
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return refuse("credentials do not belong in the URL");
    }
    Ok(parsed.to_string())
}

fn check_ref(git_ref: &str) -> Result<(), CloneError> {
    if keel_tool_model::git::is_plain_ref(git_ref) {
        Ok(())
    } else {
        Err(CloneError::Ref(git_ref.to_string()))
    }
}

/// A clone being made: removed unless it was renamed into place, also
/// when the lease is abandoned mid-clone (its future dropped).
struct Partial(PathBuf);

impl Drop for Partial {
    fn drop(&mut self) {
        if self.0.exists() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl CloneSettings {
    /// The session's clone of `url` at `git_ref`, made if it is not there.
    pub async fn workspace(
        &self,
        session_id: &str,
        url: &str,
        git_ref: &str,
    ) -> Result<PathBuf, CloneError> {
        let root = self.root.as_ref().ok_or(CloneError::NoRoot)?;
        let url = check_url(url, self.allow_local)?;
        check_ref(git_ref)?;
        let name = hex::encode(&Sha256::digest(session_id.as_bytes())[..12]);
        let dir = root.join(&name);
        if dir.join(".git").is_dir() {
            return Ok(dir);
        }
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CloneError::Io { path, source }
        };
        tokio::fs::create_dir_all(root).await.map_err(io(root))?;
        let mut seed = [0u8; 6];
        std::io::Read::read_exact(
            &mut std::fs::File::open("/dev/urandom").map_err(io(Path::new("/dev/urandom")))?,
            &mut seed,
        )
        .map_err(io(Path::new("/dev/urandom")))?;
        let partial = Partial(root.join(format!(".{name}.{}", hex::encode(seed))));
        self.clone_into(&url, git_ref, &partial.0).await?;
        match tokio::fs::rename(&partial.0, &dir).await {
            Ok(()) => Ok(dir),
            // Another lease of the session made it meanwhile.
            Err(_) if dir.join(".git").is_dir() => Ok(dir),
            Err(e) => Err(CloneError::Io {
                path: dir,
                source: e,
            }),
        }
    }

    /// Removes what abandoned clones left under the root (a runner killed
    /// mid-clone), once they are older than any clone may take — other
    /// runners on the volume may be cloning now; at startup.
    pub fn remove_partial_clones(&self) -> usize {
        self.remove_partial_clones_older_than(self.timeout * 2)
    }

    fn remove_partial_clones_older_than(&self, age: Duration) -> usize {
        let Some(root) = &self.root else {
            return 0;
        };
        let Ok(entries) = std::fs::read_dir(root) else {
            return 0;
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|e| e >= age));
            if entry.file_name().to_string_lossy().starts_with('.')
                && old
                && std::fs::remove_dir_all(entry.path()).is_ok()
            {
                removed += 1;
            }
        }
        removed
    }

    async fn clone_into(&self, url: &str, git_ref: &str, dir: &Path) -> Result<(), CloneError> {
        let mut protocols = vec!["protocol.allow=never", "protocol.https.allow=always"];
        if self.allow_local {
            protocols.push("protocol.file.allow=always");
        }
        let mut clone: Vec<String> = Vec::new();
        for p in &protocols {
            clone.extend(["-c".to_string(), (*p).to_string()]);
        }
        clone.extend([
            "clone".to_string(),
            "--quiet".to_string(),
            "--".to_string(),
            url.to_string(),
            dir.display().to_string(),
        ]);
        self.git(&clone, None).await?;
        if !git_ref.is_empty() {
            let checkout = [
                "checkout".to_string(),
                "--quiet".to_string(),
                git_ref.to_string(),
                "--".to_string(),
            ];
            self.git(&checkout, Some(dir)).await?;
        }
        Ok(())
    }

    async fn git(&self, args: &[String], cwd: Option<&Path>) -> Result<(), CloneError> {
        let mut cmd = tokio::process::Command::new("git");
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", "/nonexistent")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(cwd) = cwd {
            cmd.current_dir(cwd);
        }
        let run = cmd.output();
        let out = match tokio::time::timeout(self.timeout, run).await {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => return Err(CloneError::Failed(format!("cannot run git: {e}"))),
            Err(_) => {
                return Err(CloneError::Failed(format!(
                    "git took longer than {} s",
                    self.timeout.as_secs()
                )));
            }
        };
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Err(CloneError::Failed(tail.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_from_clients_are_checked() {
        assert!(check_url("https://github.com/o/r.git", false).is_ok());
        for bad in [
            "http://github.com/o/r",
            "ssh://git@github.com/o/r",
            "ext::sh -c touch% /tmp/pwned",
            "https://user:secret@github.com/o/r",
            "https://token@github.com/o/r",
            "-uhttps://x",
            "file:///srv/repo",
            "https://x/ y",
        ] {
            assert!(check_url(bad, false).is_err(), "{bad}");
        }
        assert!(check_url("file:///srv/repo", true).is_ok());
    }

    #[test]
    fn refs_that_are_not_plain_are_refused() {
        assert!(check_ref("v1.2").is_ok());
        assert!(matches!(
            check_ref("--upload-pack=x"),
            Err(CloneError::Ref(_))
        ));
    }

    fn git(dir: &Path, args: &[&str]) {
        let ok = std::process::Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .status()
            .unwrap()
            .success();
        assert!(ok, "git {args:?}");
    }

    /// A local repository with a tag `v1` (a file saying "one") and a later
    /// commit on the default branch (saying "two").
    fn repo() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        git(dir.path(), &["init", "--quiet"]);
        std::fs::write(dir.path().join("f.txt"), "one").unwrap();
        git(dir.path(), &["add", "f.txt"]);
        git(dir.path(), &["commit", "--quiet", "-m", "one"]);
        git(dir.path(), &["tag", "v1"]);
        std::fs::write(dir.path().join("f.txt"), "two").unwrap();
        git(dir.path(), &["commit", "--quiet", "-am", "two"]);
        dir
    }

    #[tokio::test]
    async fn a_session_gets_its_clone_at_the_ref_once() {
        let origin = repo();
        let root = tempfile::tempdir().unwrap();
        let settings = CloneSettings {
            root: Some(root.path().to_path_buf()),
            allow_local: true,
            timeout: Duration::from_secs(60),
        };
        let url = format!("file://{}", origin.path().display());
        let a = settings.workspace("s1", &url, "v1").await.unwrap();
        assert_eq!(std::fs::read_to_string(a.join("f.txt")).unwrap(), "one");
        // The agent's changes stay: the clone is not made again.
        std::fs::write(a.join("f.txt"), "changed").unwrap();
        assert_eq!(settings.workspace("s1", &url, "v1").await.unwrap(), a);
        assert_eq!(std::fs::read_to_string(a.join("f.txt")).unwrap(), "changed");
        // Another session, the default branch.
        let b = settings.workspace("s2", &url, "").await.unwrap();
        assert_ne!(a, b);
        assert_eq!(std::fs::read_to_string(b.join("f.txt")).unwrap(), "two");
        // A ref that does not exist leaves nothing behind.
        let err = settings.workspace("s3", &url, "nope").await.unwrap_err();
        assert!(matches!(err, CloneError::Failed(_)), "{err}");
        let left: Vec<_> = std::fs::read_dir(root.path()).unwrap().collect();
        assert_eq!(left.len(), 2, "only the two clones: {left:?}");
        // What a runner killed mid-clone left goes at the next start.
        std::fs::create_dir(root.path().join(".abandoned.0123")).unwrap();
        assert_eq!(
            settings.remove_partial_clones(),
            0,
            "it may be in the making"
        );
        assert_eq!(settings.remove_partial_clones_older_than(Duration::ZERO), 1);
        assert!(a.join("f.txt").exists() && b.join("f.txt").exists());
    }

    #[tokio::test]
    async fn without_a_root_or_permission_nothing_is_cloned() {
        let origin = repo();
        let url = format!("file://{}", origin.path().display());
        let none = CloneSettings {
            root: None,
            allow_local: true,
            timeout: Duration::from_secs(60),
        };
        assert!(matches!(
            none.workspace("s", &url, "").await,
            Err(CloneError::NoRoot)
        ));
        let root = tempfile::tempdir().unwrap();
        let no_local = CloneSettings {
            root: Some(root.path().to_path_buf()),
            allow_local: false,
            timeout: Duration::from_secs(60),
        };
        assert!(matches!(
            no_local.workspace("s", &url, "").await,
            Err(CloneError::Url(..))
        ));
    }
}
