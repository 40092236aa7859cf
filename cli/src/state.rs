//! Where `keel up` keeps a local stack's files.
//!
//! ```text
//! <state>/temporal.db        the dev server's SQLite database (sessions live here)
//! <state>/blobs/             the blob store shared by the services (file://)
//! <state>/logs/<name>.log    each component's stdout and stderr, appended
//! <state>/run/<name>.pid     the pid of a component `keel up` started
//! <state>/run/<name>.addr    the host:port a component listens on
//! <state>/run/lock           held while `keel up` or `keel down` runs
//! ```

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

#[derive(Debug, Clone)]
pub(crate) struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// `--state-dir` / `KEEL_STATE_DIR` when given, else `~/.keel`. The result
    /// is absolute, because it ends up in `file://` URLs handed to the services.
    pub(crate) fn resolve(flag: Option<&Path>) -> Result<Self> {
        let root = match flag {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => match std::env::var_os("HOME") {
                Some(home) if !home.is_empty() => PathBuf::from(home).join(".keel"),
                _ => bail!(
                    "cannot find a state directory: HOME is not set; pass --state-dir or set KEEL_STATE_DIR"
                ),
            },
        };
        let root = std::path::absolute(&root).with_context(|| {
            format!(
                "cannot make the state directory {} absolute",
                root.display()
            )
        })?;
        Ok(Self { root })
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }

    pub(crate) fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    pub(crate) fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs")
    }

    pub(crate) fn temporal_db(&self) -> PathBuf {
        self.root.join("temporal.db")
    }

    pub(crate) fn pid_file(&self, component: &str) -> PathBuf {
        self.run_dir().join(format!("{component}.pid"))
    }

    pub(crate) fn addr_file(&self, component: &str) -> PathBuf {
        self.run_dir().join(format!("{component}.addr"))
    }

    /// The local CA and the services' certificates (mutual TLS).
    pub(crate) fn tls_dir(&self) -> PathBuf {
        self.root.join("tls")
    }

    /// session-api's token file (hashed tokens).
    pub(crate) fn tokens_file(&self) -> PathBuf {
        self.root.join("tokens.toml")
    }

    /// The local user's token for the local stack (readable by them only).
    pub(crate) fn client_token_file(&self) -> PathBuf {
        self.root.join("client.token")
    }

    pub(crate) fn log_file(&self, component: &str) -> PathBuf {
        self.logs_dir().join(format!("{component}.log"))
    }

    /// The blob store URL every service is given.
    pub(crate) fn blob_url(&self) -> String {
        format!("file://{}", self.blobs_dir().display())
    }

    /// Creates the directories `keel up` writes to.
    pub(crate) fn create_dirs(&self) -> Result<()> {
        for dir in [self.run_dir(), self.logs_dir(), self.blobs_dir()] {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        Ok(())
    }

    /// Takes the stack lock, so two `keel up`/`keel down` never interleave.
    /// Released when the returned file is dropped.
    pub(crate) fn lock(&self) -> Result<File> {
        let path = self.run_dir().join("lock");
        std::fs::create_dir_all(self.run_dir())
            .with_context(|| format!("cannot create {}", self.run_dir().display()))?;
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => {
                eprintln!(
                    "waiting for another keel up/down on {} ...",
                    self.root.display()
                );
                file.lock()
                    .with_context(|| format!("cannot lock {}", path.display()))?;
                Ok(file)
            }
            Err(std::fs::TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("cannot lock {}", path.display()))
            }
        }
    }

    /// The address a component wrote, if its file exists and is not empty.
    pub(crate) fn read_addr(&self, component: &str) -> Option<String> {
        read_trimmed(&self.addr_file(component))
    }

    /// The pid `keel up` recorded for a component, if any.
    pub(crate) fn read_pid(&self, component: &str) -> Option<i32> {
        read_trimmed(&self.pid_file(component))?
            .parse()
            .ok()
            .filter(|pid: &i32| *pid > 0)
    }
}

fn read_trimmed(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// Writes `contents` so that a reader never sees a partial file.
pub(crate) fn write_atomic(path: &Path, contents: &str) -> Result<()> {
    let tmp = path.with_extension("keel-tmp");
    std::fs::write(&tmp, contents).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// Writes a secret: readable and writable by the owner only, replaced
/// atomically.
pub(crate) fn write_private(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("keel-tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// Removes a file; a file that is already gone is fine.
pub(crate) fn remove_file(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_under_the_root() {
        let state = StateDir::resolve(Some(Path::new("/tmp/keel-state"))).unwrap();
        assert_eq!(state.root(), Path::new("/tmp/keel-state"));
        assert_eq!(
            state.pid_file("worker"),
            Path::new("/tmp/keel-state/run/worker.pid")
        );
        assert_eq!(
            state.addr_file("session-api"),
            Path::new("/tmp/keel-state/run/session-api.addr")
        );
        assert_eq!(
            state.log_file("model-proxy"),
            Path::new("/tmp/keel-state/logs/model-proxy.log")
        );
        assert_eq!(
            state.temporal_db(),
            Path::new("/tmp/keel-state/temporal.db")
        );
        assert_eq!(state.blob_url(), "file:///tmp/keel-state/blobs");
    }

    #[test]
    fn relative_state_dir_becomes_absolute() {
        let state = StateDir::resolve(Some(Path::new("some/dir"))).unwrap();
        assert!(state.root().is_absolute());
        assert!(state.root().ends_with("some/dir"));
    }

    #[test]
    fn pid_and_addr_files_are_read_leniently() {
        let dir = std::env::temp_dir().join(format!("keel-state-test-{}", std::process::id()));
        let state = StateDir::resolve(Some(&dir)).unwrap();
        state.create_dirs().unwrap();
        assert_eq!(state.read_pid("worker"), None);
        std::fs::write(state.pid_file("worker"), "1234\n").unwrap();
        assert_eq!(state.read_pid("worker"), Some(1234));
        std::fs::write(state.pid_file("worker"), "garbage").unwrap();
        assert_eq!(state.read_pid("worker"), None);
        std::fs::write(state.pid_file("worker"), "-5").unwrap();
        assert_eq!(state.read_pid("worker"), None);
        write_atomic(&state.addr_file("worker"), "127.0.0.1:5000").unwrap();
        assert_eq!(state.read_addr("worker").as_deref(), Some("127.0.0.1:5000"));
        remove_file(&state.addr_file("worker")).unwrap();
        remove_file(&state.addr_file("worker")).unwrap();
        assert_eq!(state.read_addr("worker"), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
