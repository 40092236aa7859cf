//! The session picker of `/resume` and `keel resume`: the newest sessions
//! (one ListSessions page), filtered as the person types — client-side,
//! over the page fetched, by name, id, cwd and last message, ignoring case.

use std::time::SystemTime;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use keel_proto::v1::Session;

use crate::render::session_status_name;

/// Sessions fetched for the picker.
pub(crate) const PAGE_SIZE: u32 = 200;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Still picking.
    Stay,
    /// Open this session.
    Open(String),
    /// Esc: no session chosen.
    Close,
}

#[derive(Debug, Default)]
pub(crate) struct Picker {
    /// `None` while loading.
    sessions: Option<Vec<Session>>,
    pub filter: String,
    selected: usize,
    pub error: Option<String>,
}

/// `5s`, `3m`, `2h`, `4d`.
pub(crate) fn age(then: Option<&prost_types::Timestamp>, now: SystemTime) -> String {
    let Some(then) = then else {
        return "-".to_string();
    };
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let secs = now.saturating_sub(u64::try_from(then.seconds).unwrap_or(0));
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86_400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

impl Picker {
    pub(crate) fn loading(&self) -> bool {
        self.sessions.is_none() && self.error.is_none()
    }

    pub(crate) fn loaded(&mut self, sessions: Vec<Session>) {
        self.sessions = Some(sessions);
        self.selected = 0;
    }

    /// The sessions the filter keeps, newest first.
    pub(crate) fn visible(&self) -> Vec<&Session> {
        let needle = self.filter.to_lowercase();
        self.sessions
            .iter()
            .flatten()
            .filter(|s| {
                needle.is_empty()
                    || [&s.name, &s.session_id, &s.cwd, &s.last_message]
                        .iter()
                        .any(|field| field.to_lowercase().contains(&needle))
            })
            .collect()
    }

    pub(crate) fn selected(&self) -> usize {
        self.selected
    }

    /// name, cwd, status, last message, age — a row per visible session.
    pub(crate) fn rows(&self, now: SystemTime) -> Vec<[String; 5]> {
        self.visible()
            .into_iter()
            .map(|s| {
                let name = if s.name.is_empty() {
                    s.session_id.chars().take(8).collect()
                } else {
                    crate::render::printable(&s.name)
                };
                let when = s.last_activity_at.as_ref().or(s.created_at.as_ref());
                [
                    name,
                    crate::render::printable(&s.cwd),
                    session_status_name(s.status),
                    crate::render::printable(&s.last_message),
                    age(when, now),
                ]
            })
            .collect()
    }

    pub(crate) fn key(&mut self, key: KeyEvent) -> Outcome {
        let count = self.visible().len();
        match key.code {
            KeyCode::Esc => return Outcome::Close,
            KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                return Outcome::Close;
            }
            KeyCode::Enter => {
                return match self.visible().get(self.selected) {
                    Some(s) => Outcome::Open(s.session_id.clone()),
                    None => Outcome::Stay,
                };
            }
            KeyCode::Up => self.selected = self.selected.saturating_sub(1),
            KeyCode::Down => self.selected = (self.selected + 1).min(count.saturating_sub(1)),
            KeyCode::PageUp => self.selected = self.selected.saturating_sub(10),
            KeyCode::PageDown => self.selected = (self.selected + 10).min(count.saturating_sub(1)),
            KeyCode::Backspace => {
                self.filter.pop();
                self.selected = 0;
            }
            KeyCode::Char(c) if !key.modifiers.contains(KeyModifiers::CONTROL) => {
                self.filter.push(c);
                self.selected = 0;
            }
            _ => {}
        }
        Outcome::Stay
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use keel_proto::v1::SessionStatus;

    fn session(id: &str, name: &str, last: &str, secs: i64) -> Session {
        Session {
            session_id: id.to_string(),
            name: name.to_string(),
            cwd: "/work".to_string(),
            status: SessionStatus::Idle as i32,
            last_message: last.to_string(),
            last_activity_at: Some(prost_types::Timestamp {
                seconds: secs,
                nanos: 0,
            }),
            ..Default::default()
        }
    }

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    #[test]
    fn filters_and_opens() {
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(10_000);
        let mut p = Picker::default();
        assert!(p.loading());
        assert_eq!(p.key(key(KeyCode::Enter)), Outcome::Stay, "nothing yet");
        p.loaded(vec![
            session("aaaa1111-x", "fix the parser", "done", 9_990),
            session("bbbb2222-y", "", "Rust it is.", 10_000 - 7200),
        ]);
        let rows = p.rows(now);
        assert_eq!(
            rows[0],
            [
                "fix the parser".to_string(),
                "/work".to_string(),
                "idle".to_string(),
                "done".to_string(),
                "10s".to_string()
            ]
        );
        assert_eq!(rows[1][0], "bbbb2222");
        assert_eq!(rows[1][4], "2h");
        p.key(key(KeyCode::Down));
        p.key(key(KeyCode::Down));
        assert_eq!(p.selected(), 1);
        for c in "RUST".chars() {
            p.key(key(KeyCode::Char(c)));
        }
        assert_eq!(p.visible().len(), 1);
        assert_eq!(
            p.key(key(KeyCode::Enter)),
            Outcome::Open("bbbb2222-y".to_string())
        );
        for _ in 0..4 {
            p.key(key(KeyCode::Backspace));
        }
        p.key(key(KeyCode::Char('z')));
        assert!(p.visible().is_empty());
        assert_eq!(p.key(key(KeyCode::Enter)), Outcome::Stay);
        assert_eq!(p.key(key(KeyCode::Esc)), Outcome::Close);
    }

    #[test]
    fn ages() {
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(200_000);
        let at = |s| prost_types::Timestamp {
            seconds: s,
            nanos: 0,
        };
        assert_eq!(age(None, now), "-");
        assert_eq!(age(Some(&at(199_999)), now), "1s");
        assert_eq!(age(Some(&at(199_000)), now), "16m");
        assert_eq!(age(Some(&at(0)), now), "2d");
        assert_eq!(age(Some(&at(300_000)), now), "0s", "a clock ahead of ours");
    }
}
