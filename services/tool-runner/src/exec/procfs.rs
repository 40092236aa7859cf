//! What /proc says about a process: enough to tell, after a restart,
//! whether a pid still names the process we started or a newer one that
//! was given the same number.

use std::io;

/// The kernel's boot id; start times count from boot, so they only compare
/// within one boot.
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// The fields of `/proc/<pid>/stat` we use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcStat {
    /// Field 3: `R`, `S`, `Z` (zombie), …
    pub state: char,
    /// Field 22: when the process started, in clock ticks since boot. A pid
    /// reused by another process comes with another start time.
    pub start_ticks: u64,
}

/// `/proc/<pid>/stat`, or `None` when no such process exists.
pub(crate) fn stat(pid: i32) -> io::Result<Option<ProcStat>> {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(text) => parse_stat(&text).map(Some).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("/proc/{pid}/stat is not in the expected format"),
            )
        }),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err),
    }
}

/// Parses a stat line. The command name (field 2) is in parentheses and may
/// itself hold spaces and parentheses, so fields are counted from the last
/// `)`.
fn parse_stat(text: &str) -> Option<ProcStat> {
    let (_, rest) = text.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // `fields` now stands at field 4; field 22 is 18 further.
    let start_ticks = fields.nth(18)?.parse().ok()?;
    Some(ProcStat { state, start_ticks })
}

/// This boot's id, if the kernel says.
pub(crate) fn boot_id() -> Option<String> {
    std::fs::read_to_string(BOOT_ID)
        .ok()
        .map(|id| id.trim().to_string())
        .filter(|id| !id.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_field_22_after_an_odd_command_name() {
        let line = "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 200 18446744073709551615";
        assert_eq!(
            parse_stat(line),
            Some(ProcStat {
                state: 'S',
                start_ticks: 987_654
            })
        );
        assert_eq!(parse_stat("4242 (x) S 1 2"), None);
    }

    #[test]
    fn reads_this_process() {
        let me = i32::try_from(std::process::id()).unwrap();
        let first = stat(me).unwrap().unwrap();
        assert!(first.start_ticks > 0);
        assert_eq!(first.start_ticks, stat(me).unwrap().unwrap().start_ticks);
        assert_eq!(stat(i32::MAX).unwrap(), None);
        assert!(boot_id().is_some());
    }
}
