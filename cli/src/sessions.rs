//! `keel sessions` and the registry commands: list (filtered, paged), name,
//! archive and unarchive sessions.

use anyhow::{Context, Result, bail};
use keel_proto::v1::{
    ArchiveSessionRequest, ArchivedFilter, DeleteSessionRequest, ForkSessionRequest,
    ListSessionsRequest, RenameSessionRequest, Session, SessionFilter, SessionStatus,
    UnarchiveSessionRequest,
};
use serde_json::{Value, json};

use crate::client::SessionApi;
use crate::render::{session_status_name, timestamp_local, timestamp_rfc3339};

const PAGE_SIZE: u32 = 200;
/// A server that keeps handing out pages is a bug; stop rather than loop.
const MAX_PAGES: usize = 10_000;
/// Characters of the last message a table row shows.
const MESSAGE_COLUMN: usize = 48;

#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct ListArgs {
    /// Only sessions in this status (idle, running, waiting, closed,
    /// failed); repeatable.
    #[arg(long = "status", value_name = "STATUS", value_parser = parse_status)]
    pub statuses: Vec<SessionStatus>,
    /// Only sessions working in this directory (default: any).
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<std::path::PathBuf>,
    /// Only sessions whose name or id contains this text (ignoring case).
    #[arg(long, value_name = "TEXT")]
    pub search: Option<String>,
    /// Archived sessions only.
    #[arg(long, conflicts_with = "all")]
    pub archived: bool,
    /// Archived sessions too.
    #[arg(long)]
    pub all: bool,
    /// One page of at most N sessions (the next page's token goes to
    /// stderr) instead of every session.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=500))]
    pub limit: Option<u32>,
    /// The page after the one that printed this token (with --limit).
    #[arg(long, value_name = "TOKEN", requires = "limit")]
    pub page_token: Option<String>,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn parse_status(s: &str) -> Result<SessionStatus, String> {
    match s {
        "idle" => Ok(SessionStatus::Idle),
        "running" => Ok(SessionStatus::Running),
        "waiting" => Ok(SessionStatus::Waiting),
        "closed" => Ok(SessionStatus::Closed),
        "failed" => Ok(SessionStatus::Failed),
        other => Err(format!(
            "unknown status {other:?}: use idle, running, waiting, closed or failed"
        )),
    }
}

impl ListArgs {
    fn filter(&self) -> Result<SessionFilter> {
        let cwd = match &self.cwd {
            Some(dir) => std::path::absolute(dir)
                .with_context(|| format!("cannot resolve {}", dir.display()))?
                .to_string_lossy()
                .into_owned(),
            None => String::new(),
        };
        Ok(SessionFilter {
            statuses: self.statuses.iter().map(|&s| s as i32).collect(),
            cwd,
            text: self.search.clone().unwrap_or_default(),
            archived: if self.archived {
                ArchivedFilter::Only
            } else if self.all {
                ArchivedFilter::Include
            } else {
                ArchivedFilter::Unspecified
            } as i32,
        })
    }
}

/// The newest session matching `filter` (`keel attach --last`, `keel
/// resume --last`).
pub(crate) async fn newest(mut api: SessionApi) -> Result<String> {
    let page = one_page(&mut api, SessionFilter::default(), 1, String::new()).await?;
    page.0
        .into_iter()
        .next()
        .map(|s| s.session_id)
        .ok_or_else(|| anyhow::anyhow!("there are no sessions yet (keel run starts one)"))
}

/// One page: the sessions and the next page's token (empty: the last page).
pub(crate) async fn one_page(
    api: &mut SessionApi,
    filter: SessionFilter,
    page_size: u32,
    page_token: String,
) -> Result<(Vec<Session>, String)> {
    let page = api
        .client
        .list_sessions(ListSessionsRequest {
            page_size,
            page_token,
            filter: Some(filter),
        })
        .await
        .map_err(|status| api.error("ListSessions", &status))?
        .into_inner();
    Ok((page.sessions, page.next_page_token))
}

/// Every session matching `filter`, newest first.
pub(crate) async fn list(api: &mut SessionApi, filter: SessionFilter) -> Result<Vec<Session>> {
    let mut sessions = Vec::new();
    let mut page_token = String::new();
    for _ in 0..MAX_PAGES {
        let (page, next) = one_page(api, filter.clone(), PAGE_SIZE, page_token.clone()).await?;
        sessions.extend(page);
        if next.is_empty() {
            return Ok(sessions);
        }
        if next == page_token {
            bail!("ListSessions returned the same page token twice");
        }
        page_token = next;
    }
    bail!("ListSessions returned more than {MAX_PAGES} pages")
}

pub(crate) fn to_json(sessions: &[Session]) -> Value {
    Value::Array(
        sessions
            .iter()
            .map(|s| {
                json!({
                    "session_id": s.session_id,
                    "name": s.name,
                    "status": session_status_name(s.status),
                    "archived": s.archived,
                    "cwd": s.cwd,
                    "created_at": s.created_at.as_ref().and_then(timestamp_rfc3339),
                    "last_activity_at": s.last_activity_at.as_ref().and_then(timestamp_rfc3339),
                    "last_message": s.last_message,
                    "forked_from": s.forked_from.as_ref().map(|f| json!({
                        "session_id": f.session_id,
                        "turn_id": f.turn_id,
                        "event_offset": f.event_offset,
                    })),
                })
            })
            .collect(),
    )
}

/// `text` cut to `max` characters, with an ellipsis when cut.
pub(crate) fn ellipsize(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

pub(crate) fn to_table(sessions: &[Session]) -> String {
    if sessions.is_empty() {
        return "no sessions: start one with `keel run \"...\"`\n".to_string();
    }
    let when = |ts: Option<&prost_types::Timestamp>| {
        ts.and_then(timestamp_local)
            .unwrap_or_else(|| "-".to_string())
    };
    let dash = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            crate::render::printable(s)
        }
    };
    let mut rows = vec![[
        "SESSION".to_string(),
        "NAME".to_string(),
        "STATUS".to_string(),
        "CWD".to_string(),
        "LAST ACTIVITY".to_string(),
        "LAST MESSAGE".to_string(),
    ]];
    for s in sessions {
        let mut status = session_status_name(s.status);
        if s.archived {
            status.push_str(" (archived)");
        }
        rows.push([
            s.session_id.clone(),
            dash(&s.name),
            status,
            dash(&s.cwd),
            when(s.last_activity_at.as_ref()),
            dash(&ellipsize(&s.last_message, MESSAGE_COLUMN)),
        ]);
    }
    crate::render::table(&rows)
}

/// Prints the list as a table or a JSON array.
pub(crate) async fn show(mut api: SessionApi, args: ListArgs) -> Result<()> {
    let filter = args.filter()?;
    let (sessions, next) = match args.limit {
        Some(n) => {
            one_page(
                &mut api,
                filter,
                n,
                args.page_token.clone().unwrap_or_default(),
            )
            .await?
        }
        None => (list(&mut api, filter).await?, String::new()),
    };
    let text = if args.json {
        format!("{}\n", to_json(&sessions))
    } else {
        to_table(&sessions)
    };
    use std::io::Write;
    std::io::stdout()
        .write_all(text.as_bytes())
        .context("cannot write the output")?;
    if !next.is_empty() {
        crate::render::note(format_args!(
            "more sessions: keel sessions --limit {} --page-token {next}",
            args.limit.unwrap_or(PAGE_SIZE)
        ));
    }
    Ok(())
}

pub(crate) async fn rename(mut api: SessionApi, session_id: String, name: String) -> Result<()> {
    api.client
        .rename_session(RenameSessionRequest {
            session_id: session_id.clone(),
            name: name.clone(),
        })
        .await
        .map_err(|status| api.error("RenameSession", &status))?;
    if name.is_empty() {
        crate::render::say(format_args!("session {session_id}: name cleared"));
    } else {
        crate::render::say(format_args!("session {session_id} is now named {name:?}"));
    }
    Ok(())
}

pub(crate) async fn archive(mut api: SessionApi, session_id: String, archived: bool) -> Result<()> {
    if archived {
        api.client
            .archive_session(ArchiveSessionRequest {
                session_id: session_id.clone(),
            })
            .await
            .map_err(|status| api.error("ArchiveSession", &status))?;
        crate::render::say(format_args!(
            "session {session_id} archived (keel sessions --archived lists it)"
        ));
    } else {
        api.client
            .unarchive_session(UnarchiveSessionRequest {
                session_id: session_id.clone(),
            })
            .await
            .map_err(|status| api.error("UnarchiveSession", &status))?;
        crate::render::say(format_args!("session {session_id} unarchived"));
    }
    Ok(())
}

/// `keel delete`: asks first at a terminal; elsewhere needs `--yes`.
pub(crate) async fn delete(mut api: SessionApi, session_id: String, yes: bool) -> Result<()> {
    use std::io::{BufRead, IsTerminal, Write};
    if !yes {
        if !std::io::stdin().is_terminal() {
            bail!(
                "deleting session {session_id} cannot be undone: pass --yes to delete it without being asked"
            );
        }
        eprint!("Delete session {session_id}, its conversation and its blobs, for good? [y/N] ");
        std::io::stderr().flush().ok();
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .context("cannot read the answer")?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            crate::render::note("not deleted");
            return Ok(());
        }
    }
    let response = api
        .client
        .delete_session(DeleteSessionRequest {
            session_id: session_id.clone(),
        })
        .await
        .map_err(|status| api.error("DeleteSession", &status))?
        .into_inner();
    crate::render::say(format_args!(
        "session {session_id} deleted ({} blobs)",
        response.blobs_deleted
    ));
    Ok(())
}

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ForkArgs {
    /// The session to fork.
    #[arg(value_name = "ID")]
    pub session: String,
    /// Fork where this turn ended (default: the newest turn that ended).
    #[arg(long, value_name = "TURN_ID")]
    pub turn: Option<String>,
    /// The new session's name (default: the parent's, with " (fork)").
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// The new session's id (default: a new UUID).
    #[arg(long = "id", value_name = "ID")]
    pub new_id: Option<String>,
    /// Print the new session as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `keel fork`: prints the new session's id (or the session as JSON).
pub(crate) async fn fork(mut api: SessionApi, args: ForkArgs) -> Result<()> {
    let session = api
        .client
        .fork_session(ForkSessionRequest {
            session_id: args.session.clone(),
            turn_id: args.turn.unwrap_or_default(),
            new_session_id: args.new_id.unwrap_or_default(),
            name: args.name.unwrap_or_default(),
        })
        .await
        .map_err(|status| api.error("ForkSession", &status))?
        .into_inner()
        .session
        .context("ForkSession returned no session")?;
    if args.json {
        crate::render::say(to_json(std::slice::from_ref(&session))[0].clone());
    } else {
        crate::render::say(&session.session_id);
        let origin = session.forked_from.unwrap_or_default();
        crate::render::note(format_args!(
            "forked from {} at {} (its events up to {}); continue it with keel run --session {} or keel resume {}",
            origin.session_id,
            if origin.turn_id.is_empty() {
                "its current conversation".to_string()
            } else {
                format!("turn {}", origin.turn_id)
            },
            origin.event_offset,
            session.session_id,
            session.session_id
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sessions() -> Vec<Session> {
        vec![
            Session {
                session_id: "b2c3".to_string(),
                name: "nightly build".to_string(),
                cwd: "/work".to_string(),
                last_message: "fix the flaky test".to_string(),
                status: SessionStatus::Running as i32,
                created_at: Some(prost_types::Timestamp {
                    seconds: 1_767_225_600,
                    nanos: 0,
                }),
                last_activity_at: None,
                ..Default::default()
            },
            Session {
                session_id: "a-much-longer-session-id".to_string(),
                status: SessionStatus::Closed as i32,
                archived: true,
                ..Default::default()
            },
        ]
    }

    #[test]
    fn json_shape() {
        let v = to_json(&sessions());
        assert_eq!(
            v[0],
            json!({
                "session_id": "b2c3",
                "name": "nightly build",
                "status": "running",
                "archived": false,
                "cwd": "/work",
                "created_at": "2026-01-01T00:00:00.000Z",
                "last_activity_at": null,
                "last_message": "fix the flaky test",
                "forked_from": null,
            })
        );
        assert_eq!(v[1]["status"], "closed");
        assert_eq!(v[1]["archived"], true);
    }

    #[test]
    fn table() {
        let table = to_table(&sessions());
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(
            lines[0].starts_with("SESSION                   NAME           STATUS"),
            "{table}"
        );
        assert!(lines[1].starts_with("b2c3 "), "{table}");
        assert!(lines[1].contains("nightly build"), "{table}");
        assert!(lines[1].contains("running"), "{table}");
        assert!(lines[1].contains("fix the flaky test"), "{table}");
        assert!(lines[2].contains("closed (archived)"), "{table}");
        assert!(to_table(&[]).starts_with("no sessions"));
    }

    #[test]
    fn control_characters_never_reach_the_terminal() {
        let mut s = sessions();
        s[0].last_message = "ok\u{1b}]52;c;ZXZpbA==\u{7}".to_string();
        s[0].name = "n\u{1b}[2J".to_string();
        let table = to_table(&s);
        assert!(
            !table.contains('\u{1b}') && !table.contains('\u{7}'),
            "{table:?}"
        );
    }

    #[test]
    fn long_messages_are_cut() {
        assert_eq!(ellipsize("abcdef", 4), "abc…");
        assert_eq!(ellipsize("abc", 4), "abc");
        assert_eq!(ellipsize("ééééé", 3), "éé…");
    }

    #[test]
    fn status_names_parse() {
        assert_eq!(parse_status("waiting"), Ok(SessionStatus::Waiting));
        assert!(
            parse_status("asleep")
                .unwrap_err()
                .contains("idle, running")
        );
    }
}
