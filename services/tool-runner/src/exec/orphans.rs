//! No command outlives a tool-runner that was SIGKILLed. Commands run in
//! process groups of their own, so when the tool-runner dies without a
//! chance to kill them they are reparented and run on, while the journal
//! reports their calls as lost and never runs them again: work nobody will
//! see, racing whatever the session does next.
//!
//! So every process group the tool-runner starts has a record in the call
//! journal's directory, `<pgid>-<start ticks>.process`, written right after
//! the spawn and removed when the group is killed (which happens however a
//! command ends: see [`super::group`]). That covers the calls the journal
//! shows as started but not finished, and also unified-exec processes that
//! outlive their `exec_command` call. At startup, before serving, the
//! tool-runner kills the group of every record whose leader is still the
//! process it started ([`ProcessRecords::reap_orphans`]), and removes the
//! records.
//!
//! A pid can be reused once its process is gone, so a record holds the
//! leader's start time (and the boot id, since start times count from
//! boot): a group is killed only when its pid still names the process we
//! started. A group whose leader has exited while others of it run on is
//! not reached; neither is a command the tool-runner died in the instant
//! between starting it and writing its record.
//!
//! Records are renamed into place but not synced: they only matter when the
//! tool-runner dies and the machine does not, and then the page cache holds
//! them; a machine that goes down takes the commands with it.

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::procfs;

/// A record's file name ends so.
const SUFFIX: &str = ".process";

/// The call that started a process, for the logs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProcessOwner {
    pub session_id: String,
    pub call_id: String,
    pub attempt: u32,
    pub tool_name: String,
}

/// What a record holds. Fields added later must default, so that older
/// records still load.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Record {
    /// The group id, which is the leader's pid.
    pgid: i32,
    /// The leader's start time (field 22 of `/proc/<pid>/stat`).
    leader_start_ticks: u64,
    #[serde(default)]
    boot_id: Option<String>,
    #[serde(default)]
    program: String,
    #[serde(default)]
    owner: Option<ProcessOwner>,
    #[serde(default)]
    tool_runner_pid: u32,
    #[serde(default)]
    recorded_at_unix_ms: u64,
}

/// Where process records live; cheap to clone.
#[derive(Debug, Clone)]
pub struct ProcessRecords {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    boot_id: Option<String>,
}

/// Removes its record when dropped: the group it names is gone.
#[derive(Debug)]
pub(crate) struct RecordGuard {
    path: PathBuf,
}

impl Drop for RecordGuard {
    fn drop(&mut self) {
        remove(&self.path);
    }
}

/// What the startup sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReapReport {
    /// Groups killed: their leader was still the process we started.
    pub killed: usize,
    /// Records dropped without killing anything: the process was gone, its
    /// pid reused, or the record unreadable.
    pub stale: usize,
}

impl ProcessRecords {
    /// Records in `dir` (the call journal's directory), which must exist.
    pub fn new(dir: &Path) -> Self {
        Self {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                boot_id: procfs::boot_id(),
            }),
        }
    }

    /// Records the group `pid` leads. A failure is logged, not returned:
    /// the command is already running, and without a record it is only
    /// unprotected against a tool-runner crash, as before records existed.
    pub(crate) fn record(
        &self,
        pid: i32,
        program: &str,
        owner: Option<&ProcessOwner>,
    ) -> Option<RecordGuard> {
        let written = procfs::stat(pid).and_then(|stat| {
            let stat = stat.ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
            let record = Record {
                pgid: pid,
                leader_start_ticks: stat.start_ticks,
                boot_id: self.inner.boot_id.clone(),
                program: program.to_string(),
                owner: owner.cloned(),
                tool_runner_pid: std::process::id(),
                recorded_at_unix_ms: crate::calls::journal::unix_ms(SystemTime::now()),
            };
            let path = self
                .inner
                .dir
                .join(format!("{pid}-{}{SUFFIX}", stat.start_ticks));
            write_renamed(&path, &serde_json::to_vec(&record).unwrap_or_default())?;
            Ok(path)
        });
        match written {
            Ok(path) => Some(RecordGuard { path }),
            Err(err) => {
                tracing::warn!(pgid = pid, program, error = %err, "cannot record a command's process group; a tool-runner crash would leave it running");
                None
            }
        }
    }

    /// Kills the groups of commands a previous tool-runner on this state
    /// directory left running, and removes every record. Run it at startup,
    /// holding the state directory's lock (so no live tool-runner owns
    /// them), before any command starts.
    pub fn reap_orphans(&self) -> io::Result<ReapReport> {
        let mut report = ReapReport::default();
        for entry in fs::read_dir(&self.inner.dir)? {
            let path = entry?.path();
            let is_record = path
                .file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.ends_with(SUFFIX));
            if !is_record {
                continue;
            }
            if self.reap(&path) {
                report.killed += 1;
            } else {
                report.stale += 1;
            }
            remove(&path);
        }
        Ok(report)
    }

    /// Kills the record's group if its leader is the process we started.
    fn reap(&self, path: &Path) -> bool {
        let record: Record = match fs::read(path)
            .map_err(|err| err.to_string())
            .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|err| err.to_string()))
        {
            Ok(record) => record,
            Err(error) => {
                tracing::warn!(path = %path.display(), error, "dropping an unreadable process record");
                return false;
            }
        };
        if record.pgid <= 0 {
            return false;
        }
        if let (Some(then), Some(now)) = (&record.boot_id, &self.inner.boot_id)
            && then != now
        {
            return false;
        }
        match procfs::stat(record.pgid) {
            Ok(Some(stat)) if stat.start_ticks == record.leader_start_ticks => {}
            Ok(_) => return false,
            Err(err) => {
                tracing::warn!(pgid = record.pgid, error = %err, "cannot check an orphaned command; leaving it");
                return false;
            }
        }
        let owner = record.owner.as_ref();
        match killpg(Pid::from_raw(record.pgid), Signal::SIGKILL) {
            Ok(()) => {
                tracing::warn!(
                    pgid = record.pgid,
                    program = %record.program,
                    session_id = owner.map(|o| o.session_id.as_str()),
                    call_id = owner.map(|o| o.call_id.as_str()),
                    tool = owner.map(|o| o.tool_name.as_str()),
                    previous_tool_runner_pid = record.tool_runner_pid,
                    "killed a command left running by a tool-runner that died"
                );
                true
            }
            // Its last member went between the check and the signal.
            Err(nix::errno::Errno::ESRCH) => false,
            Err(err) => {
                tracing::warn!(pgid = record.pgid, error = %err, "cannot kill an orphaned command");
                false
            }
        }
    }
}

/// Writes `bytes` to a temporary file and renames it to `path`: a reader
/// sees the whole record or none.
fn write_renamed(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_os_string();
    tmp.push(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
    let tmp = PathBuf::from(tmp);
    let written = fs::File::create(&tmp)
        .and_then(|mut file| file.write_all(bytes))
        .and_then(|()| fs::rename(&tmp, path));
    if written.is_err() {
        remove(&tmp);
    }
    written
}

fn remove(path: &Path) {
    if let Err(err) = fs::remove_file(path)
        && err.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %err, "cannot remove a process record");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Child, Command};
    use std::time::Duration;

    /// A `sleep` leading its own group, outside any executor: the sweep
    /// must find it by its record alone.
    fn orphan() -> Child {
        use std::os::unix::process::CommandExt as _;
        Command::new("sleep")
            .arg("60")
            .process_group(0)
            .spawn()
            .unwrap()
    }

    fn pid(child: &Child) -> i32 {
        i32::try_from(child.id()).unwrap()
    }

    fn records(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    /// Waits (bounded) for the child to die; the test reaps it itself.
    fn exited(child: &mut Child) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if child.try_wait().unwrap().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    fn owner() -> ProcessOwner {
        ProcessOwner {
            session_id: "s".into(),
            call_id: "c".into(),
            attempt: 0,
            tool_name: "shell".into(),
        }
    }

    #[test]
    fn a_record_lives_as_long_as_its_guard() {
        let dir = tempfile::tempdir().unwrap();
        let records_dir = ProcessRecords::new(dir.path());
        let mut child = orphan();
        let guard = records_dir.record(pid(&child), "sleep", Some(&owner()));
        assert!(guard.is_some());
        let names = records(dir.path());
        assert_eq!(names.len(), 1, "{names:?}");
        let record: Record =
            serde_json::from_slice(&fs::read(dir.path().join(&names[0])).unwrap()).unwrap();
        assert_eq!(
            (record.pgid, record.owner, record.program.as_str()),
            (pid(&child), Some(owner()), "sleep")
        );
        assert!(names[0].starts_with(&format!("{}-", pid(&child))));
        drop(guard);
        assert!(records(dir.path()).is_empty());
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn the_sweep_kills_live_groups_and_drops_stale_records() {
        let dir = tempfile::tempdir().unwrap();
        let records_dir = ProcessRecords::new(dir.path());
        let mut live = orphan();
        // Forgotten guards: the tool-runner died with them.
        std::mem::forget(records_dir.record(pid(&live), "sleep", Some(&owner())));

        // A pid reused by another process: same pid, other start time.
        let mut bystander = orphan();
        let reused = Record {
            pgid: pid(&bystander),
            leader_start_ticks: 1,
            boot_id: procfs::boot_id(),
            program: "old".into(),
            owner: None,
            tool_runner_pid: 1,
            recorded_at_unix_ms: 0,
        };
        let reused_path = dir.path().join(format!("{}-1{SUFFIX}", reused.pgid));
        fs::write(&reused_path, serde_json::to_vec(&reused).unwrap()).unwrap();
        // From another boot; an old record without the newer fields; junk.
        let other_boot = Record {
            boot_id: Some("another-boot".into()),
            leader_start_ticks: procfs::stat(pid(&bystander)).unwrap().unwrap().start_ticks,
            ..reused.clone()
        };
        fs::write(
            dir.path().join(format!("x{SUFFIX}")),
            serde_json::to_vec(&other_boot).unwrap(),
        )
        .unwrap();
        fs::write(
            dir.path().join(format!("y{SUFFIX}")),
            br#"{"pgid": 2147483647, "leader_start_ticks": 5}"#,
        )
        .unwrap();
        fs::write(dir.path().join(format!("z{SUFFIX}")), b"{").unwrap();
        fs::write(dir.path().join("abc.started"), b"{}").unwrap();

        let report = records_dir.reap_orphans().unwrap();
        assert_eq!(
            report,
            ReapReport {
                killed: 1,
                stale: 4
            }
        );
        assert!(exited(&mut live), "the recorded group was killed");
        assert!(
            bystander.try_wait().unwrap().is_none(),
            "a reused pid is left alone"
        );
        assert_eq!(records(dir.path()), ["abc.started"]);
        bystander.kill().unwrap();
        bystander.wait().unwrap();
    }
}
