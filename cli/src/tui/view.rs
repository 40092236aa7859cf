//! Drawing the app on a frame: the transcript (scrolled to its end unless
//! the person scrolled up), the activity line with its spinner, the
//! request being asked, the composer and the status line; or the picker.

use std::time::SystemTime;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Row, Table, TableState};
use unicode_width::UnicodeWidthChar;

use super::app::{App, Link};
use super::model::Tone;

/// The spinner's frames (ASCII, so every terminal shows them).
const SPINNER: [char; 4] = ['|', '/', '-', '\\'];

fn style(tone: Tone) -> Style {
    let s = Style::default();
    match tone {
        Tone::Plain => s,
        Tone::Dim => s.add_modifier(Modifier::DIM),
        Tone::Bold => s.add_modifier(Modifier::BOLD),
        Tone::User => s.fg(Color::Cyan).add_modifier(Modifier::BOLD),
        Tone::Reasoning => s.add_modifier(Modifier::DIM | Modifier::ITALIC),
        Tone::Command => s.fg(Color::Magenta).add_modifier(Modifier::BOLD),
        Tone::Added => s.fg(Color::Green),
        Tone::Removed => s.fg(Color::Red),
        Tone::Warn => s.fg(Color::Yellow),
        Tone::Error => s.fg(Color::Red).add_modifier(Modifier::BOLD),
    }
}

/// Cuts `text` into pieces at most `width` columns wide (a tab as a
/// space); an empty text is one empty piece.
pub(crate) fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut pieces = Vec::new();
    let mut piece = String::new();
    let mut used = 0;
    for c in text.chars() {
        let (c, w) = match c {
            '\t' => (' ', 1),
            c if c.is_control() => continue,
            c => (c, c.width().unwrap_or(0)),
        };
        if used + w > width && used > 0 {
            pieces.push(std::mem::take(&mut piece));
            used = 0;
        }
        piece.push(c);
        used += w;
    }
    pieces.push(piece);
    pieces
}

/// `12.3k`, `1.2M`.
pub(crate) fn tokens(n: u64) -> String {
    match n {
        0..1000 => n.to_string(),
        1000..1_000_000 => format!("{}.{}k", n / 1000, n % 1000 / 100),
        _ => format!("{}.{}M", n / 1_000_000, n % 1_000_000 / 100_000),
    }
}

/// The status line: model, tokens, context left, session, sandbox and
/// approval policy.
pub(crate) fn status_line(app: &App) -> String {
    let s = &app.transcript.status;
    let mut parts = vec![if s.model.is_empty() {
        "model: default".to_string()
    } else {
        s.model.clone()
    }];
    parts.push(format!("{} tokens", tokens(s.total_tokens)));
    if let Some(left) = s.context_left() {
        parts.push(format!("{left}% context left"));
    }
    parts.push(match &app.session_id {
        None => "new session".to_string(),
        Some(id) => {
            let short: String = id.chars().take(8).collect();
            if s.name.is_empty() {
                format!("session {short}")
            } else {
                format!("session {short} \"{}\"", s.name)
            }
        }
    });
    if !s.sandbox.is_empty() {
        parts.push(s.sandbox.clone());
    }
    if !s.approvals.is_empty() {
        parts.push(s.approvals.clone());
    }
    match &app.link {
        Link::Reconnecting { attempt, .. } => parts.push(format!("reconnecting ({attempt})")),
        Link::Ended(why) => parts.push(why.clone()),
        Link::Idle | Link::Live => {}
    }
    parts.join(" | ")
}

/// The activity line: a spinner and the seconds the turn (or command) has
/// run; or what waits for the person; or the link's trouble.
pub(crate) fn activity(app: &App, now: SystemTime, frame: usize) -> Option<(Tone, String)> {
    if let Link::Reconnecting { attempt, why } = &app.link {
        return Some((
            Tone::Warn,
            format!("connection to session-api lost ({why}); reconnecting, attempt {attempt}"),
        ));
    }
    let t = &app.transcript;
    let running = t.running.as_ref()?;
    if t.asker.asking() {
        return Some((Tone::Warn, "waiting for your answer".to_string()));
    }
    let spinner = SPINNER[frame % SPINNER.len()];
    let (what, since) = match &t.command {
        Some((command, since)) => (format!("running {command}"), *since),
        None => ("working".to_string(), running.since),
    };
    let secs = now.duration_since(since).map_or(0, |d| d.as_secs());
    Some((
        Tone::Dim,
        format!("{spinner} {what} ({secs}s) - Esc to interrupt"),
    ))
}

fn line(tone: Tone, text: String) -> Line<'static> {
    Line::from(Span::styled(text, style(tone)))
}

pub(crate) fn draw(frame: &mut Frame, app: &App, now: SystemTime, tick: usize) {
    let area = frame.area();
    if app.picker.is_some() {
        draw_picker(frame, app, area, now);
        return;
    }
    let width = usize::from(area.width.max(1));
    let prompt: Vec<String> = app.prompt().map(|p| wrap(&p, width)).unwrap_or_default();
    let composer_width = width.saturating_sub(2).max(1);
    // The composer's lines as wrapped, and where the cursor lands.
    let (row, col) = app.composer.cursor();
    let mut boxed = Vec::new();
    let mut cursor = (0usize, 0usize);
    for (i, text) in app.composer.lines().iter().enumerate() {
        let first = boxed.len();
        let pieces = wrap(text, composer_width);
        if i == row {
            let before: String = text.chars().take(col).collect();
            let cols: usize = before.chars().map(|c| c.width().unwrap_or(0)).sum();
            let (r, c) = (cols / composer_width, cols % composer_width);
            cursor = (first + r, c);
        }
        boxed.extend(pieces);
    }
    let inner = boxed.len().max(cursor.0 + 1);
    let composer_height = u16::try_from(inner.min(8) + 2).unwrap_or(10);
    let prompt_height = u16::try_from(prompt.len().min(4)).unwrap_or(4);
    let [body, busy, ask, input, status] = Layout::vertical([
        Constraint::Min(1),
        Constraint::Length(1),
        Constraint::Length(prompt_height),
        Constraint::Length(composer_height),
        Constraint::Length(1),
    ])
    .areas(area);

    // The transcript, wrapped, its end at the bottom.
    let mut lines: Vec<Line> = Vec::new();
    for (tone, text) in app.transcript.lines() {
        for piece in wrap(&text, width) {
            lines.push(line(tone, piece));
        }
    }
    for (_, text) in &app.pending {
        for piece in wrap(&format!("> {text} (queued)"), width) {
            lines.push(line(Tone::Dim, piece));
        }
    }
    let height = usize::from(body.height);
    let end = lines.len().saturating_sub(app.scroll.min(lines.len()));
    let start = end.saturating_sub(height);
    let shown: Vec<Line> = lines.drain(start..end).collect();
    frame.render_widget(Paragraph::new(shown), body);

    if let Some((tone, text)) = activity(app, now, tick) {
        frame.render_widget(Paragraph::new(line(tone, text)), busy);
    } else if app.scroll > 0 {
        let text = format!("(scrolled up {} lines; PgDn goes back)", app.scroll);
        frame.render_widget(Paragraph::new(line(Tone::Dim, text)), busy);
    }
    let ask_lines: Vec<Line> = prompt.into_iter().map(|p| line(Tone::Warn, p)).collect();
    frame.render_widget(Paragraph::new(ask_lines), ask);

    let title = if app.transcript.asker.wants_decision() {
        " answer above with one key "
    } else if app.transcript.asker.asking() {
        " your answer (Enter) "
    } else {
        " message (Enter sends, Alt+Enter new line, /help) "
    };
    let skip = (cursor.0 + 1).saturating_sub(8);
    let text: Vec<Line> = boxed
        .into_iter()
        .skip(skip)
        .map(|l| Line::from(l.to_string()))
        .collect();
    frame.render_widget(
        Paragraph::new(text).block(Block::bordered().title(title)),
        input,
    );
    if !app.transcript.asker.wants_decision() {
        let x = input.x + 1 + u16::try_from(cursor.1).unwrap_or(0);
        let y = input.y + 1 + u16::try_from(cursor.0 - skip).unwrap_or(0);
        frame.set_cursor_position((x.min(input.right().saturating_sub(2)), y));
    }
    frame.render_widget(Paragraph::new(line(Tone::Dim, status_line(app))), status);
}

fn draw_picker(frame: &mut Frame, app: &App, area: Rect, now: SystemTime) {
    let Some(picker) = &app.picker else {
        return;
    };
    let [head, list, foot] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Min(1),
        Constraint::Length(1),
    ])
    .areas(area);
    let title = format!("Resume a session - filter: {}", picker.filter);
    frame.render_widget(Paragraph::new(line(Tone::Bold, title)), head);
    let foot_text = if let Some(error) = &picker.error {
        (Tone::Error, error.clone())
    } else if picker.loading() {
        (Tone::Dim, "loading sessions...".to_string())
    } else {
        (
            Tone::Dim,
            format!(
                "{} sessions - type to filter, Up/Down to choose, Enter opens, Esc goes back",
                picker.visible().len()
            ),
        )
    };
    frame.render_widget(Paragraph::new(line(foot_text.0, foot_text.1)), foot);
    let rows = picker.rows(now).into_iter().map(Row::new);
    let table = Table::new(
        rows,
        [
            Constraint::Length(20),
            Constraint::Length(24),
            Constraint::Length(8),
            Constraint::Min(10),
            Constraint::Length(4),
        ],
    )
    .header(
        Row::new(["NAME", "CWD", "STATUS", "LAST MESSAGE", "AGE"])
            .style(Style::default().add_modifier(Modifier::BOLD)),
    )
    .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED))
    .highlight_symbol("> ");
    let mut state = TableState::default().with_selected(Some(picker.selected()));
    frame.render_stateful_widget(table, list, &mut state);
}

/// The transcript's text as the TUI would wrap it (for tests).
#[cfg(test)]
pub(crate) fn text_lines(t: &super::model::Transcript, width: usize) -> Vec<String> {
    t.lines()
        .into_iter()
        .flat_map(|(_, text)| wrap(&text, width))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    #[test]
    fn wrapping() {
        assert_eq!(wrap("", 5), [""]);
        assert_eq!(wrap("abcdefgh", 3), ["abc", "def", "gh"]);
        assert_eq!(wrap("a\tb", 10), ["a b"]);
        assert_eq!(wrap("日本語", 4), ["日本", "語"]);
    }

    #[test]
    fn token_counts() {
        assert_eq!(tokens(999), "999");
        assert_eq!(tokens(12_345), "12.3k");
        assert_eq!(tokens(2_500_000), "2.5M");
    }

    #[test]
    fn draws_without_a_terminal() {
        let mut app = App::default();
        app.note(Tone::Plain, "hello there");
        app.composer.insert("typed");
        let mut terminal = Terminal::new(TestBackend::new(60, 12)).unwrap();
        terminal
            .draw(|f| draw(f, &app, SystemTime::now(), 0))
            .unwrap();
        let buffer = terminal.backend().buffer().clone();
        let text: String = buffer
            .content()
            .chunks(60)
            .map(|row| row.iter().map(|c| c.symbol()).collect::<String>() + "\n")
            .collect();
        assert!(text.contains("hello there"), "{text}");
        assert!(text.contains("typed"), "{text}");
        assert!(text.contains("new session"), "{text}");
        // Tiny terminals draw too.
        let mut terminal = Terminal::new(TestBackend::new(3, 2)).unwrap();
        terminal
            .draw(|f| draw(f, &app, SystemTime::now(), 0))
            .unwrap();
    }
}
