//! The composer: a multi-line text box with a history of what was sent.
//!
//! Enter sends; Alt+Enter, Shift+Enter (where the terminal tells it apart)
//! or Ctrl+J start a new line. Up and Down walk the history when the cursor
//! is on the first or last line; elsewhere they move the cursor.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// What a key did to the composer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The text changed or the cursor moved.
    Edited,
    /// Enter: the text to send (the composer is left as it was; the caller
    /// takes it with [`Composer::take`]).
    Submit,
    /// Not a composer key.
    Ignored,
}

#[derive(Debug, Clone)]
pub(crate) struct Composer {
    lines: Vec<String>,
    /// The cursor: line, and char index in that line.
    row: usize,
    col: usize,
    history: Vec<String>,
    /// Where Up/Down are in the history; `None` when editing a new text.
    browsing: Option<usize>,
    /// The new text put aside while browsing.
    draft: String,
}

impl Default for Composer {
    fn default() -> Self {
        Composer {
            lines: vec![String::new()],
            row: 0,
            col: 0,
            history: Vec::new(),
            browsing: None,
            draft: String::new(),
        }
    }
}

/// The byte index of char `col` in `line` (its end when past it).
fn byte_at(line: &str, col: usize) -> usize {
    line.char_indices().nth(col).map_or(line.len(), |(i, _)| i)
}

impl Composer {
    pub(crate) fn text(&self) -> String {
        self.lines.join("\n")
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.lines.len() == 1 && self.lines[0].is_empty()
    }

    pub(crate) fn lines(&self) -> &[String] {
        &self.lines
    }

    /// The cursor as (line, char column).
    pub(crate) fn cursor(&self) -> (usize, usize) {
        (self.row, self.col)
    }

    /// Empties the composer and returns its text, remembering it in the
    /// history when it is not blank.
    pub(crate) fn take(&mut self) -> String {
        let text = self.text();
        if !text.trim().is_empty() && self.history.last() != Some(&text) {
            self.history.push(text.clone());
        }
        self.clear();
        text
    }

    pub(crate) fn clear(&mut self) {
        self.lines = vec![String::new()];
        self.row = 0;
        self.col = 0;
        self.browsing = None;
        self.draft.clear();
    }

    fn set_text(&mut self, text: &str) {
        self.lines = text.split('\n').map(str::to_string).collect();
        if self.lines.is_empty() {
            self.lines.push(String::new());
        }
        self.row = self.lines.len() - 1;
        self.col = self.lines[self.row].chars().count();
    }

    /// Inserts text at the cursor (a paste may hold newlines).
    pub(crate) fn insert(&mut self, text: &str) {
        let text = text.replace("\r\n", "\n").replace('\r', "\n");
        for (i, part) in text.split('\n').enumerate() {
            if i > 0 {
                self.newline();
            }
            for c in part.chars().filter(|c| !c.is_control() || *c == '\t') {
                let line = &mut self.lines[self.row];
                let at = byte_at(line, self.col);
                line.insert(at, c);
                self.col += 1;
            }
        }
    }

    fn newline(&mut self) {
        let line = &mut self.lines[self.row];
        let at = byte_at(line, self.col);
        let rest = line.split_off(at);
        self.row += 1;
        self.lines.insert(self.row, rest);
        self.col = 0;
    }

    fn backspace(&mut self) {
        if self.col > 0 {
            let line = &mut self.lines[self.row];
            let at = byte_at(line, self.col - 1);
            line.remove(at);
            self.col -= 1;
        } else if self.row > 0 {
            let line = self.lines.remove(self.row);
            self.row -= 1;
            self.col = self.lines[self.row].chars().count();
            self.lines[self.row].push_str(&line);
        }
    }

    fn delete(&mut self) {
        let len = self.lines[self.row].chars().count();
        if self.col < len {
            let line = &mut self.lines[self.row];
            let at = byte_at(line, self.col);
            line.remove(at);
        } else if self.row + 1 < self.lines.len() {
            let next = self.lines.remove(self.row + 1);
            self.lines[self.row].push_str(&next);
        }
    }

    fn history_up(&mut self) {
        let next = match self.browsing {
            None if self.history.is_empty() => return,
            None => {
                self.draft = self.text();
                self.history.len() - 1
            }
            Some(0) => return,
            Some(i) => i - 1,
        };
        self.browsing = Some(next);
        let text = self.history[next].clone();
        self.set_text(&text);
    }

    fn history_down(&mut self) {
        let Some(i) = self.browsing else {
            return;
        };
        if i + 1 < self.history.len() {
            self.browsing = Some(i + 1);
            let text = self.history[i + 1].clone();
            self.set_text(&text);
        } else {
            self.browsing = None;
            let draft = std::mem::take(&mut self.draft);
            self.set_text(&draft);
        }
    }

    fn line_len(&self) -> usize {
        self.lines[self.row].chars().count()
    }

    pub(crate) fn key(&mut self, key: KeyEvent) -> Outcome {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let alt = key.modifiers.contains(KeyModifiers::ALT);
        let shift = key.modifiers.contains(KeyModifiers::SHIFT);
        match key.code {
            KeyCode::Enter if alt || shift || ctrl => self.newline(),
            KeyCode::Char('j') if ctrl => self.newline(),
            KeyCode::Enter => return Outcome::Submit,
            KeyCode::Char('a') if ctrl => self.col = 0,
            KeyCode::Char('e') if ctrl => self.col = self.line_len(),
            KeyCode::Char('u') if ctrl => {
                let line = &mut self.lines[self.row];
                let at = byte_at(line, self.col);
                line.replace_range(..at, "");
                self.col = 0;
            }
            KeyCode::Char('k') if ctrl => {
                let line = &mut self.lines[self.row];
                let at = byte_at(line, self.col);
                line.truncate(at);
            }
            KeyCode::Char(_) if ctrl || alt => return Outcome::Ignored,
            KeyCode::Char(c) => self.insert(&c.to_string()),
            KeyCode::Tab => self.insert("\t"),
            KeyCode::Backspace => self.backspace(),
            KeyCode::Delete => self.delete(),
            KeyCode::Left if self.col > 0 => self.col -= 1,
            KeyCode::Left if self.row > 0 => {
                self.row -= 1;
                self.col = self.line_len();
            }
            KeyCode::Right if self.col < self.line_len() => self.col += 1,
            KeyCode::Right if self.row + 1 < self.lines.len() => {
                self.row += 1;
                self.col = 0;
            }
            KeyCode::Left | KeyCode::Right => {}
            KeyCode::Home => self.col = 0,
            KeyCode::End => self.col = self.line_len(),
            KeyCode::Up if self.row > 0 => {
                self.row -= 1;
                self.col = self.col.min(self.line_len());
            }
            KeyCode::Up => self.history_up(),
            KeyCode::Down if self.row + 1 < self.lines.len() => {
                self.row += 1;
                self.col = self.col.min(self.line_len());
            }
            KeyCode::Down => self.history_down(),
            _ => return Outcome::Ignored,
        }
        Outcome::Edited
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn typed(c: &mut Composer, text: &str) {
        for ch in text.chars() {
            c.key(key(KeyCode::Char(ch)));
        }
    }

    #[test]
    fn multi_line_input_and_enter() {
        let mut c = Composer::default();
        typed(&mut c, "first");
        assert_eq!(
            c.key(KeyEvent::new(KeyCode::Enter, KeyModifiers::ALT)),
            Outcome::Edited
        );
        typed(&mut c, "second");
        c.key(KeyEvent::new(KeyCode::Enter, KeyModifiers::SHIFT));
        c.key(KeyEvent::new(KeyCode::Char('j'), KeyModifiers::CONTROL));
        assert_eq!(c.lines().len(), 4);
        assert_eq!(c.key(key(KeyCode::Enter)), Outcome::Submit);
        assert_eq!(c.take(), "first\nsecond\n\n");
        assert!(c.is_empty());
    }

    #[test]
    fn editing_keys() {
        let mut c = Composer::default();
        typed(&mut c, "héllo");
        c.key(key(KeyCode::Left));
        c.key(key(KeyCode::Left));
        c.key(key(KeyCode::Backspace));
        assert_eq!(c.text(), "hélo");
        c.key(key(KeyCode::Home));
        c.key(key(KeyCode::Delete));
        assert_eq!(c.text(), "élo");
        c.key(key(KeyCode::End));
        typed(&mut c, "!");
        assert_eq!(c.text(), "élo!");
        // Backspace at the start of a line joins it to the one before.
        c.key(KeyEvent::new(KeyCode::Enter, KeyModifiers::ALT));
        typed(&mut c, "x");
        c.key(key(KeyCode::Home));
        c.key(key(KeyCode::Backspace));
        assert_eq!(c.text(), "élo!x");
        assert_eq!(c.cursor(), (0, 4));
        c.insert("a\r\nb");
        assert_eq!(c.text(), "élo!a\nbx");
        assert_eq!(
            c.key(KeyEvent::new(KeyCode::Char('x'), KeyModifiers::CONTROL)),
            Outcome::Ignored
        );
    }

    #[test]
    fn history_walks_up_and_down() {
        let mut c = Composer::default();
        typed(&mut c, "one");
        c.take();
        typed(&mut c, "two");
        c.take();
        typed(&mut c, "draft");
        c.key(key(KeyCode::Up));
        assert_eq!(c.text(), "two");
        c.key(key(KeyCode::Up));
        assert_eq!(c.text(), "one");
        c.key(key(KeyCode::Up));
        assert_eq!(c.text(), "one", "stays at the oldest");
        c.key(key(KeyCode::Down));
        assert_eq!(c.text(), "two");
        c.key(key(KeyCode::Down));
        assert_eq!(c.text(), "draft", "back to what was being written");
        // Blank texts are not remembered, nor repeats.
        typed(&mut c, "");
        c.clear();
        c.take();
        typed(&mut c, "two");
        c.take();
        c.key(key(KeyCode::Up));
        c.key(key(KeyCode::Up));
        assert_eq!(c.text(), "one");
    }
}
