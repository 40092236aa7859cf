//! The live unified-exec processes, keyed by Keel session and process id
//! (the `session_id` the model passes to `write_stdin`). A session reaches
//! only its own processes; `CloseToolSession` kills them all.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::time::Instant;

use super::unified::LongRunningProcess;

/// At most this many processes live at once, across sessions (Codex's
/// limit per session; a shared tool-runner uses it as a global bound).
pub const MAX_PROCESSES: usize = 64;
/// At most this many of them belong to one session, so that one session
/// cannot take every slot: its least recently used process makes room.
pub const MAX_PROCESSES_PER_SESSION: usize = 16;

/// Process ids are drawn from this range, like Codex's, so a model cannot
/// guess another call's id from its own.
const ID_RANGE: std::ops::Range<i32> = 1_000..100_000;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(
        "the tool-runner already runs {MAX_PROCESSES} processes; wait for some of them to finish"
    )]
    Full,
}

#[derive(Debug, Default)]
pub struct ProcessRegistry {
    entries: Mutex<HashMap<(String, i32), Entry>>,
}

#[derive(Debug)]
struct Entry {
    process: Arc<LongRunningProcess>,
    last_used: Instant,
}

impl ProcessRegistry {
    fn entries(&self) -> MutexGuard<'_, HashMap<(String, i32), Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a process and returns its id. When the session has
    /// [`MAX_PROCESSES_PER_SESSION`] processes, or the registry is full, the
    /// session's least recently used process is killed to make room; a
    /// session cannot push out another session's processes.
    pub fn insert(
        &self,
        session: &str,
        process: Arc<LongRunningProcess>,
    ) -> Result<i32, RegistryError> {
        let mut entries = self.entries();
        let own = entries.keys().filter(|(s, _)| s == session).count();
        if own >= MAX_PROCESSES_PER_SESSION || entries.len() >= MAX_PROCESSES {
            let oldest = entries
                .iter()
                .filter(|((s, _), _)| s == session)
                .min_by_key(|(_, entry)| entry.last_used)
                .map(|(key, _)| key.clone())
                .ok_or(RegistryError::Full)?;
            if let Some(entry) = entries.remove(&oldest) {
                tracing::info!(
                    session,
                    process_id = oldest.1,
                    "pruned the least recently used process"
                );
                entry.process.kill();
            }
        }
        let id = loop {
            let candidate = random_id();
            if !entries.keys().any(|(_, id)| *id == candidate) {
                break candidate;
            }
        };
        entries.insert(
            (session.to_string(), id),
            Entry {
                process,
                last_used: Instant::now(),
            },
        );
        Ok(id)
    }

    /// The process, marked as just used.
    pub fn get(&self, session: &str, id: i32) -> Option<Arc<LongRunningProcess>> {
        let mut entries = self.entries();
        let entry = entries.get_mut(&(session.to_string(), id))?;
        entry.last_used = Instant::now();
        Some(Arc::clone(&entry.process))
    }

    /// Forgets a process (it has exited, or is being closed).
    pub fn remove(&self, session: &str, id: i32) {
        let removed = self.entries().remove(&(session.to_string(), id));
        if let Some(entry) = removed {
            entry.process.kill();
        }
    }

    /// Kills and forgets every process of `session`, its sub-agents' too
    /// (scopes `<session>/<agent>`); returns how many.
    pub fn close_session(&self, session: &str) -> usize {
        let removed: Vec<Entry> = {
            let mut entries = self.entries();
            let keys: Vec<(String, i32)> = entries
                .keys()
                .filter(|(s, _)| {
                    s == session
                        || s.strip_prefix(session)
                            .is_some_and(|rest| rest.starts_with('/'))
                })
                .cloned()
                .collect();
            keys.iter().filter_map(|key| entries.remove(key)).collect()
        };
        for entry in &removed {
            entry.process.kill();
        }
        removed.len()
    }

    /// Kills and forgets every process nobody has used for `idle`; returns
    /// how many.
    pub fn reap_idle(&self, idle: std::time::Duration) -> usize {
        let now = Instant::now();
        let removed: Vec<((String, i32), Entry)> = {
            let mut entries = self.entries();
            let keys: Vec<(String, i32)> = entries
                .iter()
                .filter(|(_, e)| now.saturating_duration_since(e.last_used) >= idle)
                .map(|(key, _)| key.clone())
                .collect();
            keys.into_iter()
                .filter_map(|key| entries.remove(&key).map(|e| (key, e)))
                .collect()
        };
        for ((session, id), entry) in &removed {
            tracing::info!(session, process_id = id, "reaped an idle process");
            entry.process.kill();
        }
        removed.len()
    }

    pub fn len(&self) -> usize {
        self.entries().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn random_id() -> i32 {
    let span = u128::try_from(ID_RANGE.end - ID_RANGE.start).unwrap_or(1);
    let offset = uuid::Uuid::new_v4().as_u128() % span;
    ID_RANGE.start + i32::try_from(offset).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::Executor;

    fn sleeper() -> Arc<LongRunningProcess> {
        let executor = Executor::with_inherited_env(std::env::vars_os());
        let argv = vec!["sleep".to_string(), "30".to_string()];
        Arc::new(
            LongRunningProcess::start(&executor, argv, &std::env::temp_dir(), false, None).unwrap(),
        )
    }

    #[tokio::test]
    async fn sessions_are_separate_and_close_kills() {
        let registry = ProcessRegistry::default();
        let a = registry.insert("a", sleeper()).unwrap();
        let b = registry.insert("b", sleeper()).unwrap();
        assert!(ID_RANGE.contains(&a) && ID_RANGE.contains(&b));
        assert!(registry.get("a", a).is_some());
        assert!(
            registry.get("b", a).is_none(),
            "a session sees only its own processes"
        );
        let process = registry.get("a", a).unwrap();
        assert_eq!(registry.close_session("a"), 1);
        assert_eq!(registry.close_session("a"), 0);
        assert!(registry.get("a", a).is_none());
        let got = process
            .collect(Instant::now() + std::time::Duration::from_secs(10))
            .await;
        assert!(got.exit_code.is_some(), "the closed process is dead");
        assert_eq!(registry.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_processes_are_reaped() {
        let registry = ProcessRegistry::default();
        let idle = registry.insert("a", sleeper()).unwrap();
        let busy = registry.insert("a", sleeper()).unwrap();
        tokio::time::advance(std::time::Duration::from_secs(20 * 60)).await;
        assert!(
            registry.get("a", busy).is_some(),
            "used: its idle time restarts"
        );
        tokio::time::advance(std::time::Duration::from_secs(11 * 60)).await;
        assert_eq!(
            registry.reap_idle(std::time::Duration::from_secs(30 * 60)),
            1
        );
        assert!(registry.get("a", idle).is_none());
        assert!(registry.get("a", busy).is_some());
        registry.close_session("a");
    }

    #[tokio::test]
    async fn a_session_over_its_quota_prunes_its_own_oldest() {
        let registry = ProcessRegistry::default();
        let first = registry.insert("a", sleeper()).unwrap();
        for _ in 1..MAX_PROCESSES_PER_SESSION {
            registry.insert("a", sleeper()).unwrap();
        }
        let other = registry.insert("b", sleeper()).unwrap();
        registry.insert("a", sleeper()).unwrap();
        assert_eq!(registry.len(), MAX_PROCESSES_PER_SESSION + 1);
        assert!(registry.get("a", first).is_none(), "the oldest was pruned");
        assert!(registry.get("b", other).is_some(), "not another session's");
        registry.close_session("a");
        registry.close_session("b");
        assert!(registry.is_empty());
    }

    #[tokio::test]
    async fn a_full_registry_refuses_a_session_with_nothing_to_prune() {
        let registry = ProcessRegistry::default();
        let sessions = MAX_PROCESSES / MAX_PROCESSES_PER_SESSION;
        for s in 0..sessions {
            for _ in 0..MAX_PROCESSES_PER_SESSION {
                registry.insert(&format!("s{s}"), sleeper()).unwrap();
            }
        }
        assert_eq!(registry.len(), MAX_PROCESSES);
        assert!(matches!(
            registry.insert("late", sleeper()),
            Err(RegistryError::Full)
        ));
        // A session that has processes makes room from its own.
        registry.insert("s0", sleeper()).unwrap();
        assert_eq!(registry.len(), MAX_PROCESSES);
        for s in 0..sessions {
            registry.close_session(&format!("s{s}"));
        }
        assert!(registry.is_empty());
    }
}
