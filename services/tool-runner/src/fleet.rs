//! This runner's place in a fleet: its id, the workspaces leased to it,
//! its limit on concurrent commands, and whether it drains.
//!
//! The worker chooses a runner for each session's workspace from what
//! `DescribeRunner` reports (see `proto/keel/v1/tool.proto`), then sends the
//! session's calls there. Commands beyond the limit wait for a slot, so a
//! runner never runs more than it was sized for; a draining runner refuses
//! new leases and calls and lets the running ones finish.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use tokio::sync::{Semaphore, SemaphorePermit};

/// The file in the state directory that keeps a runner's id.
const RUNNER_ID_FILE: &str = "runner-id";

/// The runner's id: `configured` when set, else the one kept in
/// `state_dir`, else a new one (the host name and a random suffix) kept
/// there — so a runner restarted on the same state directory (a
/// StatefulSet pod on its volume) is the same runner, and two runners on
/// one host are not.
pub fn runner_id(state_dir: &Path, configured: Option<&str>) -> std::io::Result<String> {
    if let Some(id) = configured.map(str::trim).filter(|id| !id.is_empty()) {
        return Ok(id.to_string());
    }
    let path = state_dir.join(RUNNER_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let host = if host.is_empty() {
        "tool-runner".to_string()
    } else {
        host
    };
    let mut seed = [0u8; 4];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut seed)?;
    let id = format!("{host}-{}", hex::encode(seed));
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, &id)?;
    std::fs::rename(&tmp, &path)?;
    Ok(id)
}

/// See the module documentation.
#[derive(Debug)]
pub struct Fleet {
    runner_id: String,
    max_concurrent_commands: u32,
    /// `None`: no limit.
    slots: Option<Semaphore>,
    running: AtomicU32,
    waiting: AtomicU32,
    leases: Mutex<BTreeSet<String>>,
    draining: AtomicBool,
}

/// A command's slot: held while the command runs.
#[derive(Debug)]
pub struct Slot<'a> {
    fleet: &'a Fleet,
    _permit: Option<SemaphorePermit<'a>>,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.fleet.running.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Counts one waiting command while it waits (also when the wait is
/// abandoned).
struct Waiting<'a>(&'a AtomicU32);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What `DescribeRunner` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Load {
    pub max_concurrent_commands: u32,
    pub running_commands: u32,
    pub waiting_commands: u32,
    pub leases: u32,
    pub draining: bool,
}

impl Fleet {
    /// `max_concurrent_commands` 0: no limit.
    pub fn new(runner_id: impl Into<String>, max_concurrent_commands: u32) -> Self {
        Self {
            runner_id: runner_id.into(),
            max_concurrent_commands,
            slots: (max_concurrent_commands > 0)
                .then(|| Semaphore::new(max_concurrent_commands as usize)),
            running: AtomicU32::new(0),
            waiting: AtomicU32::new(0),
            leases: Mutex::new(BTreeSet::new()),
            draining: AtomicBool::new(false),
        }
    }

    pub fn runner_id(&self) -> &str {
        &self.runner_id
    }

    /// Waits for a free slot, if the runner has a limit.
    pub async fn command_slot(&self) -> Slot<'_> {
        let permit = match &self.slots {
            None => None,
            Some(slots) => {
                self.waiting.fetch_add(1, Ordering::SeqCst);
                let waiting = Waiting(&self.waiting);
                // The semaphore is never closed.
                let permit = slots.acquire().await.ok();
                drop(waiting);
                permit
            }
        };
        self.running.fetch_add(1, Ordering::SeqCst);
        Slot {
            fleet: self,
            _permit: permit,
        }
    }

    /// Counts the session's lease; returns how many are held.
    pub fn lease(&self, session_id: &str) -> u32 {
        let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        leases.insert(session_id.to_string());
        u32::try_from(leases.len()).unwrap_or(u32::MAX)
    }

    /// Ends the session's lease, if it had one here.
    pub fn release(&self, session_id: &str) {
        self.leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(session_id);
    }

    /// From now on: no new leases, no new calls.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    pub fn load(&self) -> Load {
        Load {
            max_concurrent_commands: self.max_concurrent_commands,
            running_commands: self.running.load(Ordering::SeqCst),
            waiting_commands: self.waiting.load(Ordering::SeqCst),
            leases: u32::try_from(self.leases.lock().unwrap_or_else(|e| e.into_inner()).len())
                .unwrap_or(u32::MAX),
            draining: self.draining(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn commands_beyond_the_limit_wait_for_a_slot() {
        let fleet = Fleet::new("r", 2);
        let a = fleet.command_slot().await;
        let _b = fleet.command_slot().await;
        let third = fleet.command_slot();
        tokio::pin!(third);
        assert!(
            futures::poll!(third.as_mut()).is_pending(),
            "a third command waits"
        );
        assert_eq!(fleet.load().running_commands, 2);
        assert_eq!(fleet.load().waiting_commands, 1);
        drop(a);
        let _c = third.await;
        assert_eq!(fleet.load().running_commands, 2);
        assert_eq!(fleet.load().waiting_commands, 0);
    }

    #[tokio::test]
    async fn an_abandoned_wait_is_not_counted() {
        let fleet = Fleet::new("r", 1);
        let _a = fleet.command_slot().await;
        {
            let waiting = fleet.command_slot();
            tokio::pin!(waiting);
            assert!(futures::poll!(waiting.as_mut()).is_pending());
            assert_eq!(fleet.load().waiting_commands, 1);
        }
        assert_eq!(fleet.load().waiting_commands, 0);
    }

    #[tokio::test]
    async fn no_limit_never_waits() {
        let fleet = Fleet::new("r", 0);
        let slots: Vec<_> = futures::future::join_all((0..100).map(|_| fleet.command_slot())).await;
        assert_eq!(fleet.load().running_commands, 100);
        drop(slots);
        assert_eq!(fleet.load().running_commands, 0);
    }

    #[test]
    fn the_id_is_kept_in_the_state_directory() {
        let dir = tempfile::tempdir().unwrap();
        let first = runner_id(dir.path(), None).unwrap();
        assert_eq!(runner_id(dir.path(), None).unwrap(), first);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(runner_id(other.path(), None).unwrap(), first);
        assert_eq!(runner_id(dir.path(), Some("pod-0")).unwrap(), "pod-0");
        assert_eq!(runner_id(dir.path(), Some(" ")).unwrap(), first);
    }

    #[test]
    fn leases_count_sessions_once() {
        let fleet = Fleet::new("r", 0);
        assert_eq!(fleet.lease("s1"), 1);
        assert_eq!(fleet.lease("s1"), 1);
        assert_eq!(fleet.lease("s2"), 2);
        fleet.release("s1");
        fleet.release("nobody");
        assert_eq!(fleet.load().leases, 1);
        assert!(!fleet.load().draining);
        fleet.start_draining();
        assert!(fleet.load().draining);
    }
}
