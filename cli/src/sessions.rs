//! `keel sessions`: every session the session-api knows, newest first.

use anyhow::{Context, Result, bail};
use keel_proto::v1::{ListSessionsRequest, Session};
use serde_json::{Value, json};

use crate::client::SessionApi;
use crate::render::{session_status_name, timestamp_local, timestamp_rfc3339};

const PAGE_SIZE: u32 = 200;

/// The id of the newest session (`keel attach --last`).
pub(crate) async fn newest(mut api: SessionApi) -> anyhow::Result<String> {
    let page = api
        .client
        .list_sessions(ListSessionsRequest {
            page_size: 1,
            page_token: String::new(),
        })
        .await
        .map_err(|status| api.error("ListSessions", &status))?
        .into_inner();
    page.sessions
        .into_iter()
        .next()
        .map(|s| s.session_id)
        .ok_or_else(|| anyhow::anyhow!("there are no sessions yet (keel run starts one)"))
}
/// A server that keeps handing out pages is a bug; stop rather than loop.
const MAX_PAGES: usize = 10_000;

pub(crate) async fn list(mut api: SessionApi) -> Result<Vec<Session>> {
    let mut sessions = Vec::new();
    let mut page_token = String::new();
    for _ in 0..MAX_PAGES {
        let page = api
            .client
            .list_sessions(ListSessionsRequest {
                page_size: PAGE_SIZE,
                page_token: page_token.clone(),
            })
            .await
            .map_err(|status| api.error("ListSessions", &status))?
            .into_inner();
        sessions.extend(page.sessions);
        if page.next_page_token.is_empty() {
            return Ok(sessions);
        }
        if page.next_page_token == page_token {
            bail!("ListSessions returned the same page token twice");
        }
        page_token = page.next_page_token;
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
                    "status": session_status_name(s.status),
                    "created_at": s.created_at.as_ref().and_then(timestamp_rfc3339),
                    "last_activity_at": s.last_activity_at.as_ref().and_then(timestamp_rfc3339),
                })
            })
            .collect(),
    )
}

pub(crate) fn to_table(sessions: &[Session]) -> String {
    if sessions.is_empty() {
        return "no sessions yet: start one with `keel run \"...\"`\n".to_string();
    }
    let when = |ts: Option<&prost_types::Timestamp>| {
        ts.and_then(timestamp_local)
            .unwrap_or_else(|| "-".to_string())
    };
    let mut rows = vec![[
        "SESSION".to_string(),
        "CREATED".to_string(),
        "STATUS".to_string(),
        "LAST ACTIVITY".to_string(),
    ]];
    for s in sessions {
        rows.push([
            s.session_id.clone(),
            when(s.created_at.as_ref()),
            session_status_name(s.status),
            when(s.last_activity_at.as_ref()),
        ]);
    }
    crate::render::table(&rows)
}

/// Prints the list as a table or a JSON array.
pub(crate) async fn show(api: SessionApi, as_json: bool) -> Result<()> {
    let sessions = list(api).await?;
    let text = if as_json {
        format!("{}\n", to_json(&sessions))
    } else {
        to_table(&sessions)
    };
    use std::io::Write;
    std::io::stdout()
        .write_all(text.as_bytes())
        .context("cannot write the output")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use keel_proto::v1::SessionStatus;

    fn sessions() -> Vec<Session> {
        vec![
            Session {
                session_id: "b2c3".to_string(),
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
                "status": "running",
                "created_at": "2026-01-01T00:00:00.000Z",
                "last_activity_at": null,
            })
        );
        assert_eq!(v[1]["status"], "closed");
    }

    #[test]
    fn table() {
        let table = to_table(&sessions());
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(
            lines[0].starts_with("SESSION                   CREATED"),
            "{table}"
        );
        assert!(lines[1].starts_with("b2c3 "), "{table}");
        assert!(lines[1].contains("running"), "{table}");
        assert!(lines[2].contains("closed"), "{table}");
        assert!(to_table(&[]).starts_with("no sessions yet"));
    }
}
