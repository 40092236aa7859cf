//! Owns a command's process group. Commands run in their own group so that
//! one signal reaches everything they started (`sh -c 'a & b'`); the guard
//! sends it when the run ends however it ends — completion, timeout, or the
//! future being dropped because the tool call was cancelled (CancelToolCall,
//! CloseToolSession; a RunTool caller going away does not cancel). Its
//! process record ([`super::orphans`]) goes with the kill.

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::orphans::RecordGuard;

#[derive(Debug)]
pub(crate) struct ProcessGroup {
    /// `None` once killed, or if the child had no pid to speak of.
    pgid: Option<Pid>,
    /// The group's record for the startup sweep, if it has one.
    record: Option<RecordGuard>,
}

impl ProcessGroup {
    /// `leader` is the pid of a child spawned with `process_group(0)`, which
    /// makes its pid the group id.
    pub(crate) fn new(leader: Option<u32>) -> Self {
        let pgid = leader
            .and_then(|pid| i32::try_from(pid).ok())
            .filter(|pid| *pid > 0)
            .map(Pid::from_raw);
        Self { pgid, record: None }
    }

    /// The group id, while the group has not been killed.
    pub(crate) fn id(&self) -> Option<i32> {
        self.pgid.map(Pid::as_raw)
    }

    /// Removes `record` once the group is killed.
    pub(crate) fn set_record(&mut self, record: Option<RecordGuard>) {
        self.record = record;
    }

    /// SIGKILLs every process still in the group, once. The group id stays
    /// reserved while any member lives, so this cannot hit an unrelated group.
    pub(crate) fn kill(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            // ESRCH (everyone already gone) is the normal case after a clean exit.
            if let Err(err) = killpg(pgid, Signal::SIGKILL)
                && err != nix::errno::Errno::ESRCH
            {
                tracing::warn!(pgid = pgid.as_raw(), error = %err, "cannot kill process group");
            }
        }
        // Dropping the guard removes the record: nothing of the group is
        // left for a restarted tool-runner to kill.
        self.record = None;
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}
