//! The TUI's state and what keys do: keys in, [`Action`]s out. Pure (no
//! terminal, no network) so it is unit-tested; `mod.rs` carries the actions
//! out and feeds their results back.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use keel_proto::v1::TurnContext;
use keel_proto::v1::respond_request::Answer;

use super::composer::{self, Composer};
use super::model::{Tone, Transcript};
use super::picker::{self, Picker};
use crate::ask::Step;
use crate::settings::{PolicyArg, TurnFlags};

/// What the app asks the outside world to do.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    /// Send a user turn (creating the session first when there is none).
    Send {
        text: String,
        turn_id: String,
    },
    Interrupt,
    Respond {
        request_id: String,
        answer: Answer,
    },
    Compact,
    /// Change the open session's settings.
    Override(TurnContext),
    /// Fetch the sessions for the picker.
    ListSessions,
    /// Show this session (its history from the start, then live).
    Open(String),
    /// Name the open session.
    Rename(String),
    /// Fork the open session where its newest turn ended, and show the fork.
    Fork,
    Quit,
}

/// A `/` command.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Slash {
    New,
    Resume,
    Compact,
    Model(String),
    Approvals(PolicyArg),
    Status,
    Rename(String),
    Fork,
    Quit,
    Help,
}

pub(crate) const HELP: &str = "commands: /new (a new session, same settings), /resume (pick a session), \
/compact, /model NAME, /approvals untrusted|on-failure|on-request|never, /status, \
/rename NAME, /fork (a new session from this one's conversation), /quit\n\
keys: Enter sends, Alt+Enter or Ctrl+J a new line, Up/Down history, Esc interrupts the turn, \
PgUp/PgDn scroll, Ctrl+C twice or Ctrl+D quits";

/// Parses a composer text starting with `/`.
pub(crate) fn slash(text: &str) -> Result<Slash, String> {
    let mut words = text.split_whitespace();
    let command = words.next().unwrap_or_default();
    let rest: Vec<&str> = words.collect();
    let arg = rest.join(" ");
    let no_args = |slash: Slash| {
        if rest.is_empty() {
            Ok(slash)
        } else {
            Err(format!("{command} takes no arguments"))
        }
    };
    match command {
        "/new" => no_args(Slash::New),
        "/resume" => no_args(Slash::Resume),
        "/compact" => no_args(Slash::Compact),
        "/status" => no_args(Slash::Status),
        "/quit" | "/exit" => no_args(Slash::Quit),
        "/help" => no_args(Slash::Help),
        "/fork" => no_args(Slash::Fork),
        "/rename" if !rest.is_empty() => Ok(Slash::Rename(arg)),
        "/rename" => Err("usage: /rename NAME".to_string()),
        "/model" if rest.len() == 1 => Ok(Slash::Model(arg)),
        "/model" => Err("usage: /model NAME".to_string()),
        "/approvals" => {
            use clap::ValueEnum;
            PolicyArg::from_str(&arg, true)
                .map(Slash::Approvals)
                .map_err(|_| "usage: /approvals untrusted|on-failure|on-request|never".to_string())
        }
        other => Err(format!("unknown command {other} (/help lists them)")),
    }
}

/// The stream's state, for the status line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) enum Link {
    /// No session open yet.
    #[default]
    Idle,
    Live,
    /// The stream broke; trying again.
    Reconnecting {
        attempt: u32,
        why: String,
    },
    /// The stream ended for good.
    Ended(String),
}

#[derive(Debug, Default)]
pub(crate) struct App {
    pub transcript: Transcript,
    pub composer: Composer,
    pub picker: Option<Picker>,
    /// The open session; `None` until the first prompt creates one.
    pub session_id: Option<String>,
    /// The settings a new session starts with (`/model` and `/approvals`
    /// change them before the session exists).
    pub settings: TurnFlags,
    /// A re-ask of the request (after an answer it did not take).
    pub prompt_note: Option<String>,
    /// Turns sent from here that have not started yet: (turn id, text).
    pub pending: Vec<(String, String)>,
    /// Ctrl-C was pressed once; a second one quits.
    pub quit_armed: bool,
    /// Lines scrolled up from the bottom of the transcript.
    pub scroll: usize,
    pub link: Link,
    pub quit: bool,
}

fn ctrl(key: &KeyEvent, c: char) -> bool {
    key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char(c)
}

impl App {
    /// Forgets the session shown (before `/new` or opening another).
    pub(crate) fn reset(&mut self) {
        self.transcript = Transcript::default();
        self.session_id = None;
        self.prompt_note = None;
        self.pending.clear();
        self.scroll = 0;
        self.link = Link::Idle;
    }

    /// The question or approval prompt to show above the composer.
    pub(crate) fn prompt(&self) -> Option<String> {
        self.prompt_note
            .clone()
            .or_else(|| self.transcript.asker.prompt())
    }

    pub(crate) fn note(&mut self, tone: Tone, text: &str) {
        self.transcript.note(tone, text);
        self.scroll = 0;
    }

    /// A key: what it changes here, and what to do outside.
    pub(crate) fn key(&mut self, key: KeyEvent) -> Vec<Action> {
        if let Some(picker) = &mut self.picker {
            return match picker.key(key) {
                picker::Outcome::Stay => Vec::new(),
                picker::Outcome::Close => {
                    self.picker = None;
                    Vec::new()
                }
                picker::Outcome::Open(id) => {
                    self.picker = None;
                    vec![Action::Open(id)]
                }
            };
        }
        if ctrl(&key, 'c') {
            if !self.composer.is_empty() {
                self.composer.clear();
                return Vec::new();
            }
            if self.quit_armed {
                self.quit = true;
                return vec![Action::Quit];
            }
            self.quit_armed = true;
            return if self.transcript.running.is_some() {
                vec![Action::Interrupt]
            } else {
                Vec::new()
            };
        }
        self.quit_armed = false;
        if ctrl(&key, 'd') && self.composer.is_empty() {
            self.quit = true;
            return vec![Action::Quit];
        }
        match key.code {
            KeyCode::Esc => {
                return if self.transcript.running.is_some() {
                    vec![Action::Interrupt]
                } else {
                    Vec::new()
                };
            }
            KeyCode::PageUp => {
                self.scroll = self.scroll.saturating_add(10);
                return Vec::new();
            }
            KeyCode::PageDown => {
                self.scroll = self.scroll.saturating_sub(10);
                return Vec::new();
            }
            _ => {}
        }
        // An approval takes one key; other typing waits until it is answered.
        if self.transcript.asker.wants_decision() {
            if let KeyCode::Char(c) = key.code
                && key.modifiers.difference(KeyModifiers::SHIFT).is_empty()
            {
                return self.answer(&c.to_string());
            }
            return Vec::new();
        }
        match self.composer.key(key) {
            composer::Outcome::Submit => self.submit(),
            composer::Outcome::Edited | composer::Outcome::Ignored => Vec::new(),
        }
    }

    /// A bracketed paste goes into the composer as it is.
    pub(crate) fn paste(&mut self, text: &str) {
        if self.picker.is_none() && !self.transcript.asker.wants_decision() {
            self.composer.insert(text);
        }
    }

    fn answer(&mut self, line: &str) -> Vec<Action> {
        match self.transcript.asker.input(line) {
            None => Vec::new(),
            Some(Step::Prompt(prompt)) => {
                self.prompt_note = Some(prompt);
                Vec::new()
            }
            Some(Step::Answer {
                request_id, answer, ..
            }) => {
                self.prompt_note = None;
                vec![Action::Respond { request_id, answer }]
            }
        }
    }

    /// Enter: answers a question, runs a `/` command or sends a turn.
    fn submit(&mut self) -> Vec<Action> {
        if self.composer.text().trim().is_empty() {
            return Vec::new();
        }
        let text = self.composer.take();
        self.scroll = 0;
        if self.transcript.asker.asking() {
            return self.answer(&text);
        }
        if text.starts_with('/') {
            return match slash(&text) {
                Ok(command) => self.command(command),
                Err(e) => {
                    self.note(Tone::Error, &e);
                    Vec::new()
                }
            };
        }
        let turn_id = uuid::Uuid::new_v4().to_string();
        self.pending.push((turn_id.clone(), text.clone()));
        vec![Action::Send { text, turn_id }]
    }

    fn command(&mut self, command: Slash) -> Vec<Action> {
        match command {
            Slash::New => {
                self.reset();
                self.note(Tone::Dim, "new session: it starts with your next message");
                Vec::new()
            }
            Slash::Resume => {
                self.picker = Some(Picker::default());
                vec![Action::ListSessions]
            }
            Slash::Compact if self.session_id.is_some() => vec![Action::Compact],
            Slash::Rename(name) if self.session_id.is_some() => vec![Action::Rename(name)],
            Slash::Fork if self.session_id.is_some() => vec![Action::Fork],
            Slash::Rename(_) | Slash::Fork => {
                self.note(
                    Tone::Dim,
                    "no session yet: it starts with your first message",
                );
                Vec::new()
            }
            Slash::Model(model) if self.session_id.is_none() => {
                self.note(Tone::Dim, &format!("model: {model} (for the new session)"));
                self.transcript.status.model = model.clone();
                self.settings.model = Some(model);
                Vec::new()
            }
            Slash::Approvals(policy) if self.session_id.is_none() => {
                let context = TurnFlags {
                    approval_policy: Some(policy),
                    ..Default::default()
                }
                .to_context()
                .unwrap_or_default();
                let name = crate::settings::policy_name(context.approval_policy);
                self.note(
                    Tone::Dim,
                    &format!("approvals: {name} (for the new session)"),
                );
                self.transcript.status.approvals = name;
                self.settings.approval_policy = Some(policy);
                Vec::new()
            }
            Slash::Model(model) => vec![Action::Override(TurnContext {
                model: Some(model),
                ..Default::default()
            })],
            Slash::Approvals(policy) => vec![Action::Override(
                TurnFlags {
                    approval_policy: Some(policy),
                    ..Default::default()
                }
                .to_context()
                .unwrap_or_default(),
            )],
            Slash::Compact => {
                self.note(Tone::Dim, "nothing to compact: no session yet");
                Vec::new()
            }
            Slash::Status => {
                let text = self.status_text();
                self.note(Tone::Plain, &text);
                Vec::new()
            }
            Slash::Help => {
                self.note(Tone::Dim, HELP);
                Vec::new()
            }
            Slash::Quit => {
                self.quit = true;
                vec![Action::Quit]
            }
        }
    }

    /// What `/status` prints.
    pub(crate) fn status_text(&self) -> String {
        let s = &self.transcript.status;
        let or_dash = |v: &str| {
            if v.is_empty() {
                "-".to_string()
            } else {
                v.to_string()
            }
        };
        let context = match s.context_left() {
            Some(left) => format!(" ({left}% of the context window left)"),
            None => String::new(),
        };
        format!(
            "session:   {}\nname:      {}\nmodel:     {}\ncwd:       {}\nsandbox:   {}\napprovals: {}\ntokens:    {}{context}",
            self.session_id.as_deref().map_or("(none yet)", |s| s),
            or_dash(&s.name),
            or_dash(&s.model),
            or_dash(&s.cwd),
            or_dash(&s.sandbox),
            or_dash(&s.approvals),
            s.total_tokens,
        )
    }
}

#[cfg(test)]
#[path = "app_tests.rs"]
mod tests;
