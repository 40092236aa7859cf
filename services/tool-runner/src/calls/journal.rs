//! The tool-call journal on disk: `<state>/calls/<key digest>.<kind>`, where
//! the key digest is [`CallKey::digest`] and the kind is
//!
//! * `started`: written (atomically, synced) before the tool runs; a small
//!   JSON record of who ran what, for people reading the directory;
//! * `result`: the call's `RunToolResponse`, prost-encoded, written
//!   atomically once the output item is stored; `started` is then removed;
//! * `cancelled`: a tombstone left by CancelToolCall for a key the
//!   tool-runner had not seen, so that a RunTool arriving later runs nothing.
//!
//! The directory also holds `<pgid>-<start ticks>.process` records, one per
//! live process group, which [`crate::exec::orphans`] owns (they are not
//! pruned by age: they go with their process group, or at startup).
//!
//! Every write goes to a temporary file that is synced and renamed into
//! place, then the directory is synced: a reader sees a whole file or none,
//! also after a crash. Entries older than the retention are pruned by
//! [`Journal::prune`]. One tool-runner owns a state directory at a time
//! ([`lock_state_dir`]).

use std::fs::{self, File, TryLockError};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keel_proto::v1::RunToolResponse;
use prost::Message as _;

use super::CallKey;

/// The journal's subdirectory of the state directory.
pub const CALLS_DIR: &str = "calls";
/// The lock file in the state directory.
pub const LOCK_FILE: &str = "lock";
const STARTED: &str = "started";
const RESULT: &str = "result";
const CANCELLED: &str = "cancelled";
/// Marks a temporary file: `<name>.tmp-<uuid>`.
const TMP_MARK: &str = ".tmp-";
/// A temporary file this old was left by a crash mid-write.
const TMP_MAX_AGE: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot create the journal directory {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("{path} does not hold a tool response: {source}")]
    Decode {
        path: PathBuf,
        source: prost::DecodeError,
    },
    #[error("cannot lock the state directory {path}: {source}")]
    Lock { path: PathBuf, source: io::Error },
    #[error("the state directory {path} is in use by another tool-runner")]
    Locked { path: PathBuf },
    #[error("the journal task failed: {0}")]
    Task(String),
}

/// What the journal knows about a key.
#[derive(Debug, Clone, PartialEq)]
pub enum JournalEntry {
    /// Nothing: the call never started here (or its entry was pruned).
    Absent,
    /// It started and never finished: the tool-runner died while it ran.
    Started,
    /// CancelToolCall was asked for it before it ever started.
    Cancelled,
    /// It finished with this response.
    Finished(RunToolResponse),
}

/// Who started a call, written into its `started` entry.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StartedRecord<'a> {
    pub session_id: &'a str,
    pub call_id: &'a str,
    pub tool_name: &'a str,
    pub attempt: u32,
    pub started_at_unix_ms: u64,
    pub tool_runner_pid: u32,
}

/// The journal directory; cheap to clone.
#[derive(Debug, Clone)]
pub struct Journal {
    dir: Arc<PathBuf>,
}

/// Holds the state directory for this process; released when dropped (or
/// when the process dies, however it dies).
#[derive(Debug)]
pub struct StateDirLock {
    _file: File,
}

/// Takes the state directory's lock file, creating the directory if needed,
/// so that two tool-runners never share a journal (each would take the
/// other's running calls for calls cut by a restart).
pub fn lock_state_dir(state_dir: &Path) -> Result<StateDirLock, JournalError> {
    fs::create_dir_all(state_dir).map_err(|source| JournalError::Create {
        path: state_dir.to_path_buf(),
        source,
    })?;
    let path = state_dir.join(LOCK_FILE);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| JournalError::Lock {
            path: path.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(StateDirLock { _file: file }),
        Err(TryLockError::WouldBlock) => Err(JournalError::Locked {
            path: state_dir.to_path_buf(),
        }),
        Err(TryLockError::Error(source)) => Err(JournalError::Lock { path, source }),
    }
}

impl Journal {
    /// Opens (creating) `<state_dir>/calls`.
    pub fn open(state_dir: &Path) -> Result<Self, JournalError> {
        let dir = state_dir.join(CALLS_DIR);
        fs::create_dir_all(&dir).map_err(|source| JournalError::Create {
            path: dir.clone(),
            source,
        })?;
        Ok(Self { dir: Arc::new(dir) })
    }

    /// `<state>/calls`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of one of a key's entries; `kind` is `started`, `result` or
    /// `cancelled`.
    pub fn entry_path(&self, key: &CallKey, kind: &str) -> PathBuf {
        self.dir.join(format!("{}.{kind}", key.digest()))
    }

    /// What the journal knows about `key`. A finished entry wins over a
    /// started one (a crash between writing the result and removing the
    /// start leaves both).
    pub async fn lookup(&self, key: &CallKey) -> Result<JournalEntry, JournalError> {
        let result = self.entry_path(key, RESULT);
        let started = self.entry_path(key, STARTED);
        let cancelled = self.entry_path(key, CANCELLED);
        blocking(move || {
            match fs::read(&result) {
                Ok(bytes) => {
                    let response = RunToolResponse::decode(bytes.as_slice()).map_err(|source| {
                        JournalError::Decode {
                            path: result.clone(),
                            source,
                        }
                    })?;
                    remove_if_present(&started);
                    return Ok(JournalEntry::Finished(response));
                }
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(JournalError::Read {
                        path: result,
                        source,
                    });
                }
            }
            if exists(&started)? {
                return Ok(JournalEntry::Started);
            }
            if exists(&cancelled)? {
                return Ok(JournalEntry::Cancelled);
            }
            Ok(JournalEntry::Absent)
        })
        .await
    }

    /// Records that `key` is about to run. Returns once the entry is on disk.
    pub async fn record_started(
        &self,
        key: &CallKey,
        record: &StartedRecord<'_>,
    ) -> Result<(), JournalError> {
        let path = self.entry_path(key, STARTED);
        // Serialising plain data cannot fail; an empty record would do anyway.
        let bytes = serde_json::to_vec(record).unwrap_or_default();
        blocking(move || write_atomically(&path, &bytes)).await
    }

    /// Leaves a tombstone: `key` was cancelled before it started.
    pub async fn record_cancelled(&self, key: &CallKey) -> Result<(), JournalError> {
        let path = self.entry_path(key, CANCELLED);
        blocking(move || write_atomically(&path, b"")).await
    }

    /// Records `key`'s response, then removes its started entry and
    /// tombstone.
    pub async fn record_result(
        &self,
        key: &CallKey,
        response: &RunToolResponse,
    ) -> Result<(), JournalError> {
        let path = self.entry_path(key, RESULT);
        let started = self.entry_path(key, STARTED);
        let cancelled = self.entry_path(key, CANCELLED);
        let bytes = response.encode_to_vec();
        blocking(move || {
            write_atomically(&path, &bytes)?;
            remove_if_present(&started);
            remove_if_present(&cancelled);
            Ok(())
        })
        .await
    }

    /// Removes entries last written more than `retention` ago and temporary
    /// files left by a crash; returns how many files went. A file that
    /// cannot be removed is logged and skipped.
    pub async fn prune(&self, retention: Duration) -> Result<usize, JournalError> {
        let dir = Arc::clone(&self.dir);
        blocking(move || prune_dir(&dir, retention, SystemTime::now())).await
    }
}

fn prune_dir(dir: &Path, retention: Duration, now: SystemTime) -> Result<usize, JournalError> {
    let entries = fs::read_dir(dir).map_err(|source| JournalError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let max_age = if name.contains(TMP_MARK) {
            TMP_MAX_AGE.min(retention)
        } else if [STARTED, RESULT, CANCELLED]
            .iter()
            .any(|kind| name.strip_suffix(kind).is_some_and(|s| s.ends_with('.')))
        {
            retention
        } else {
            continue;
        };
        let modified = match entry.metadata().and_then(|m| m.modified()) {
            Ok(modified) => modified,
            Err(_) => continue,
        };
        // A clock that went backwards makes everything young: keep it.
        let age = now.duration_since(modified).unwrap_or_default();
        if age <= max_age {
            continue;
        }
        match fs::remove_file(entry.path()) {
            Ok(()) => removed += 1,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => {
                tracing::warn!(path = %entry.path().display(), error = %err, "cannot prune a journal entry");
            }
        }
    }
    Ok(removed)
}

/// Writes `bytes` to a synced temporary file, renames it to `path` and
/// syncs the directory.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), JournalError> {
    let err = |source| JournalError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!("{TMP_MARK}{}", uuid::Uuid::new_v4().simple()));
    let tmp = dir.join(tmp_name);
    let written = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(source) = written {
        remove_if_present(&tmp);
        return Err(err(source));
    }
    // The rename is durable once the directory is.
    File::open(dir).and_then(|d| d.sync_all()).map_err(err)
}

fn exists(path: &Path) -> Result<bool, JournalError> {
    path.try_exists().map_err(|source| JournalError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn remove_if_present(path: &Path) {
    if let Err(err) = fs::remove_file(path)
        && err.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %err, "cannot remove a journal entry");
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, JournalError> + Send + 'static,
) -> Result<T, JournalError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|err| JournalError::Task(err.to_string()))?
}

/// Milliseconds since the Unix epoch, for records.
pub fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(call: &str) -> CallKey {
        CallKey::new("s", call)
    }

    fn response(preview: &str) -> RunToolResponse {
        RunToolResponse {
            output_item_digest: "d".repeat(64),
            success: true,
            output_preview: preview.into(),
            command: None,
            sandbox_denied: false,
            ..Default::default()
        }
    }

    fn record<'a>() -> StartedRecord<'a> {
        StartedRecord {
            session_id: "s",
            call_id: "c",
            tool_name: "shell",
            attempt: 0,
            started_at_unix_ms: 1,
            tool_runner_pid: 1,
        }
    }

    #[tokio::test]
    async fn entries_move_from_started_to_finished() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        let k = key("c1");
        assert_eq!(journal.lookup(&k).await.unwrap(), JournalEntry::Absent);
        journal.record_started(&k, &record()).await.unwrap();
        assert_eq!(journal.lookup(&k).await.unwrap(), JournalEntry::Started);
        let started: serde_json::Value =
            serde_json::from_slice(&fs::read(journal.entry_path(&k, STARTED)).unwrap()).unwrap();
        assert_eq!(started["tool_name"], "shell");
        journal.record_result(&k, &response("out")).await.unwrap();
        assert_eq!(
            journal.lookup(&k).await.unwrap(),
            JournalEntry::Finished(response("out"))
        );
        assert!(!journal.entry_path(&k, STARTED).exists());
        // Nothing but the result is left: no temporary files.
        let names: Vec<_> = fs::read_dir(journal.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, [format!("{}.result", k.digest())]);
        // Another key is separate; a tombstone is seen.
        let other = key("c2");
        journal.record_cancelled(&other).await.unwrap();
        assert_eq!(
            journal.lookup(&other).await.unwrap(),
            JournalEntry::Cancelled
        );
        journal.record_result(&other, &response("x")).await.unwrap();
        assert!(!journal.entry_path(&other, CANCELLED).exists());
    }

    #[tokio::test]
    async fn a_result_wins_over_a_leftover_start() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        let k = key("c");
        write_atomically(
            &journal.entry_path(&k, RESULT),
            &response("r").encode_to_vec(),
        )
        .unwrap();
        write_atomically(&journal.entry_path(&k, STARTED), b"{}").unwrap();
        assert_eq!(
            journal.lookup(&k).await.unwrap(),
            JournalEntry::Finished(response("r"))
        );
        assert!(!journal.entry_path(&k, STARTED).exists());
    }

    #[tokio::test]
    async fn a_corrupt_result_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        let k = key("c");
        fs::write(journal.entry_path(&k, RESULT), [0xff, 0xff, 0xff]).unwrap();
        let err = journal.lookup(&k).await.unwrap_err();
        assert!(matches!(err, JournalError::Decode { .. }), "{err}");
    }

    #[test]
    fn prune_removes_only_old_entries() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path()).unwrap();
        let old = key("old");
        let young = key("young");
        write_atomically(&journal.entry_path(&old, RESULT), b"").unwrap();
        write_atomically(&journal.entry_path(&old, STARTED), b"").unwrap();
        write_atomically(&journal.entry_path(&young, RESULT), b"").unwrap();
        let tmp = journal.dir().join(format!("x.result{TMP_MARK}abc"));
        fs::write(&tmp, b"").unwrap();
        let stranger = journal.dir().join("README");
        fs::write(&stranger, b"").unwrap();
        let hour = Duration::from_secs(3600);
        // Seen from two hours later with a one-hour retention, everything
        // ours is old; from now, nothing is.
        assert_eq!(
            prune_dir(journal.dir(), hour, SystemTime::now()).unwrap(),
            0
        );
        let later = SystemTime::now() + 2 * hour;
        assert_eq!(prune_dir(journal.dir(), hour, later).unwrap(), 4);
        assert!(stranger.exists());
        assert!(!tmp.exists());
        assert!(!journal.entry_path(&young, RESULT).exists());
    }

    #[test]
    fn the_state_dir_has_one_owner() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let lock = lock_state_dir(&state).unwrap();
        let err = lock_state_dir(&state).unwrap_err();
        assert!(matches!(err, JournalError::Locked { .. }), "{err}");
        drop(lock);
        lock_state_dir(&state).unwrap();
    }
}
