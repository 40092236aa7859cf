//! A long-running process for unified exec (`exec_command` / `write_stdin`,
//! Codex's `codex-rs/core/src/unified_exec/`): it keeps running between tool calls, a
//! background task collects its output, and each call takes what arrived
//! since the previous one.
//!
//! Pipes only: there is no PTY. With `tty` the process gets a stdin pipe
//! that `write_stdin` writes to; without, stdin is /dev/null as in Codex.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;
use tokio::process::{Child, ChildStdin};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::group::ProcessGroup;
use super::spawn::{Spawned, StdinMode};
use super::{ExecError, Executor, IO_DRAIN_TIMEOUT, READ_CHUNK_BYTES, exit_code, read_chunk};
use crate::sandbox::Confinement;

/// Output kept between two calls (Codex keeps 1 MiB). Beyond it the middle
/// is dropped: the start and the latest output matter most.
pub const OUTPUT_CAP_BYTES: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StdinError {
    #[error(
        "stdin is closed for this session; rerun exec_command with tty=true to keep stdin open"
    )]
    Closed,
    #[error("failed to write to stdin")]
    Write(#[source] std::io::Error),
}

/// What one call collected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collected {
    pub output: String,
    /// Set once the process has exited (and its output is drained).
    pub exit_code: Option<i32>,
}

#[derive(Debug)]
pub struct LongRunningProcess {
    shared: Arc<Shared>,
    stdin: tokio::sync::Mutex<Option<ChildStdin>>,
    pump: JoinHandle<()>,
    pub command: Vec<String>,
    pub cwd: PathBuf,
    /// It runs in the sandbox, so a failure may be a sandbox denial.
    pub sandboxed: bool,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Wakes collectors on new output and on exit.
    changed: Notify,
    group: Mutex<ProcessGroup>,
}

#[derive(Debug, Default)]
struct State {
    buffer: HeadTail,
    exit_code: Option<i32>,
    finished: bool,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn kill(&self) {
        self.group
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .kill();
    }
}

impl LongRunningProcess {
    /// Starts `argv` in `cwd`. With `tty`, stdin is a pipe for `write_stdin`.
    pub fn start(
        executor: &Executor,
        argv: Vec<String>,
        cwd: &Path,
        tty: bool,
        sandbox: Option<&Confinement>,
    ) -> Result<Self, ExecError> {
        let stdin_mode = if tty {
            StdinMode::Piped
        } else {
            StdinMode::Null
        };
        let Spawned { mut child, group } =
            executor.spawn(&argv, cwd, &HashMap::new(), stdin_mode, sandbox)?;
        let stdin = child.stdin.take();
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Notify::new(),
            group: Mutex::new(group),
        });
        let pump = tokio::spawn(pump(child, Arc::clone(&shared)));
        Ok(Self {
            shared,
            stdin: tokio::sync::Mutex::new(stdin),
            pump,
            command: argv,
            cwd: cwd.to_path_buf(),
            sandboxed: sandbox.is_some(),
        })
    }

    /// Waits until the process has finished or `deadline` passes, then takes
    /// the output collected so far.
    pub async fn collect(&self, deadline: Instant) -> Collected {
        loop {
            // Registered before the state is read, so a change between the
            // read and the wait still wakes us.
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut state = self.shared.state();
                if state.finished {
                    return Collected {
                        output: state.buffer.take(true),
                        exit_code: state.exit_code,
                    };
                }
                if Instant::now() >= deadline {
                    return Collected {
                        output: state.buffer.take(false),
                        exit_code: None,
                    };
                }
            }
            tokio::select! {
                () = &mut changed => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// Writes `chars` to the process's stdin.
    pub async fn write_stdin(&self, chars: &str) -> Result<(), StdinError> {
        let mut stdin = self.stdin.lock().await;
        let pipe = stdin.as_mut().ok_or(StdinError::Closed)?;
        pipe.write_all(chars.as_bytes())
            .await
            .map_err(StdinError::Write)?;
        pipe.flush().await.map_err(StdinError::Write)
    }

    pub fn has_finished(&self) -> bool {
        self.shared.state().finished
    }

    /// Kills the whole process group. The pump then sees the exit, so a
    /// caller still holding the process can collect the final output.
    pub fn kill(&self) {
        self.shared.kill();
    }
}

impl Drop for LongRunningProcess {
    fn drop(&mut self) {
        self.shared.kill();
        // Dropping the pump's child kills and reaps the leader even if the
        // group signal failed.
        self.pump.abort();
    }
}

/// Reads both streams into the shared buffer until the process has exited
/// and its pipes are drained, then records the exit code and kills what it
/// left behind.
async fn pump(mut child: Child, shared: Arc<Shared>) {
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let mut out_buf = vec![0u8; READ_CHUNK_BYTES];
    let mut err_buf = vec![0u8; READ_CHUNK_BYTES];
    let mut status = None;
    let drain = tokio::time::sleep(Duration::MAX);
    tokio::pin!(drain);
    loop {
        if status.is_some() && stdout.is_none() && stderr.is_none() {
            break;
        }
        tokio::select! {
            n = read_chunk(&mut stdout, &mut out_buf), if stdout.is_some() => match n {
                Some(n) => push(&shared, &out_buf[..n]),
                None => stdout = None,
            },
            n = read_chunk(&mut stderr, &mut err_buf), if stderr.is_some() => match n {
                Some(n) => push(&shared, &err_buf[..n]),
                None => stderr = None,
            },
            res = child.wait(), if status.is_none() => {
                status = Some(res.map_or(-1, exit_code));
                drain.as_mut().reset(Instant::now() + IO_DRAIN_TIMEOUT);
            }
            () = &mut drain, if status.is_some() => break,
        }
    }
    shared.kill();
    {
        let mut state = shared.state();
        state.exit_code = status;
        state.finished = true;
    }
    shared.changed.notify_waiters();
}

fn push(shared: &Shared, bytes: &[u8]) {
    shared.state().buffer.push(bytes);
    shared.changed.notify_waiters();
}

/// Keeps the first and the last half of [`OUTPUT_CAP_BYTES`].
#[derive(Debug, Default)]
struct HeadTail {
    head: Vec<u8>,
    tail: VecDeque<u8>,
}

impl HeadTail {
    const HALF: usize = OUTPUT_CAP_BYTES / 2;

    fn push(&mut self, mut bytes: &[u8]) {
        if self.tail.is_empty() {
            let room = Self::HALF.saturating_sub(self.head.len());
            let (to_head, rest) = bytes.split_at(bytes.len().min(room));
            self.head.extend_from_slice(to_head);
            bytes = rest;
        }
        self.tail.extend(bytes);
        let excess = self.tail.len().saturating_sub(Self::HALF);
        self.tail.drain(..excess);
    }

    /// Takes the text. Unless `all`, an incomplete UTF-8 sequence at the end
    /// stays for the next call instead of turning into U+FFFD.
    fn take(&mut self, all: bool) -> String {
        let mut bytes = std::mem::take(&mut self.head);
        bytes.extend(self.tail.drain(..));
        if !all
            && let Err(err) = std::str::from_utf8(&bytes)
            && err.error_len().is_none()
        {
            let rest = bytes.split_off(err.valid_up_to());
            self.head = rest;
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn executor() -> Executor {
        Executor::with_inherited_env(std::env::vars_os())
    }

    fn sh(script: &str, tty: bool) -> LongRunningProcess {
        let argv = vec!["sh".to_string(), "-c".to_string(), script.to_string()];
        LongRunningProcess::start(&executor(), argv, &std::env::temp_dir(), tty, None).unwrap()
    }

    fn soon(ms: u64) -> Instant {
        Instant::now() + Duration::from_millis(ms)
    }

    #[tokio::test]
    async fn collects_until_exit() {
        let p = sh("echo hi; exit 3", false);
        let got = p.collect(soon(10_000)).await;
        assert_eq!(
            got,
            Collected {
                output: "hi\n".into(),
                exit_code: Some(3)
            }
        );
        assert!(p.has_finished());
    }

    #[tokio::test]
    async fn yields_at_the_deadline_and_resumes() {
        let p = sh("read line; echo got $line", true);
        let first = p.collect(soon(100)).await;
        assert_eq!(first.exit_code, None);
        p.write_stdin("abc\n").await.unwrap();
        let second = p.collect(soon(10_000)).await;
        assert_eq!(second.output, "got abc\n");
        assert_eq!(second.exit_code, Some(0));
    }

    #[tokio::test]
    async fn stdin_is_closed_without_tty() {
        let p = sh("sleep 30", false);
        let err = p.write_stdin("x").await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "stdin is closed for this session; rerun exec_command with tty=true to keep stdin open"
        );
    }

    #[tokio::test]
    async fn kill_ends_the_process() {
        let p = sh("sleep 30", false);
        p.shared.kill();
        let got = p.collect(soon(10_000)).await;
        assert_eq!(got.exit_code, Some(128 + 9));
    }

    #[test]
    fn head_tail_keeps_both_ends_and_split_chars() {
        let mut buf = HeadTail::default();
        buf.push(&vec![b'a'; HeadTail::HALF]);
        buf.push(&vec![b'b'; HeadTail::HALF]);
        buf.push(b"cc");
        let text = buf.take(true);
        assert_eq!(text.len(), OUTPUT_CAP_BYTES);
        assert!(text.starts_with('a') && text.ends_with("bcc"));

        let mut buf = HeadTail::default();
        let e = "é".as_bytes();
        buf.push(&[b'x', e[0]]);
        assert_eq!(buf.take(false), "x");
        buf.push(&e[1..]);
        assert_eq!(buf.take(false), "é");
    }
}
