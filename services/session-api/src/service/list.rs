//! ListSessions: a tenant's sessions from Temporal's visibility store,
//! newest first, filtered by the registry fields each session's workflow
//! keeps in its memo (name, archived flag, cwd, status, newest message).
//!
//! Temporal filters what its query language can (the tenant's workflow id
//! prefix, open or ended); session-api filters the rest, reading a bounded
//! number of visibility pages per call. Its page token is Temporal's token
//! for the page it read last plus how many sessions of that page it already
//! returned and the last of them; a page read again resumes after that
//! session, so rows that moved within the page (a session started or ended
//! meanwhile) are neither skipped nor repeated. As with any listing of a
//! changing set, a session that changes its place in the order during a
//! pass (it rolled over into a new run, which sorts first) can be missed by
//! that pass.

use serde::{Deserialize, Serialize};

use super::*;

const DEFAULT_PAGE_SIZE: u32 = 50;
const MAX_PAGE_SIZE: u32 = 500;
/// Visibility pages read per call at most; a filter that matches little
/// answers a short (even empty) page with a token to go on.
const MAX_SCANNED_PAGES: usize = 8;
/// Visibility page size while filtering on memo fields.
const FILTERED_SCAN_SIZE: u32 = 200;

/// Where a listing stopped: Temporal's token for the visibility page to
/// read (empty: the first), the page size it was read with, how many of its
/// sessions were already looked at, and the workflow id of the last one
/// (so a page whose rows moved since — a session ended, one started —
/// resumes after that session, not after a count).
#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
struct Cursor {
    #[serde(rename = "t", default)]
    temporal: String,
    #[serde(rename = "n")]
    scan_size: u32,
    #[serde(rename = "s", default)]
    skip: u32,
    #[serde(rename = "a", default, skip_serializing_if = "String::is_empty")]
    anchor: String,
}

impl Cursor {
    fn decode(token: &str) -> Result<Option<Self>, Status> {
        if token.is_empty() {
            return Ok(None);
        }
        let invalid = || {
            crate::errors::invalid(
                "page_token is not one this server issued; list again without it",
            )
        };
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| invalid())?;
        let cursor: Cursor = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
        if cursor.scan_size == 0 || cursor.scan_size > MAX_PAGE_SIZE.max(FILTERED_SCAN_SIZE) {
            return Err(invalid());
        }
        Ok(Some(cursor))
    }

    fn encode(&self) -> String {
        // A struct of strings and numbers always serialises.
        let json = serde_json::to_vec(self).unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }
}

/// What a request asks for, checked.
pub(super) struct Filter {
    statuses: Vec<pb::SessionStatus>,
    cwd: String,
    text: String,
    archived: pb::ArchivedFilter,
}

impl Filter {
    pub(super) fn new(filter: Option<pb::SessionFilter>) -> Result<Self, Status> {
        let f = filter.unwrap_or_default();
        let statuses = f
            .statuses
            .iter()
            .map(|&s| match pb::SessionStatus::try_from(s) {
                Ok(pb::SessionStatus::Unspecified) | Err(_) => Err(crate::errors::invalid(
                    format!("filter.statuses: {s} is not a SessionStatus"),
                )),
                Ok(status) => Ok(status),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let archived = pb::ArchivedFilter::try_from(f.archived).map_err(|_| {
            crate::errors::invalid(format!(
                "filter.archived: {} is not an ArchivedFilter",
                f.archived
            ))
        })?;
        if f.cwd.len() > settings::MAX_PATH_LEN || f.text.chars().count() > api::MAX_NAME_CHARS {
            return Err(crate::errors::invalid(format!(
                "filter.cwd is at most {} bytes and filter.text at most {} characters",
                settings::MAX_PATH_LEN,
                api::MAX_NAME_CHARS
            )));
        }
        Ok(Self {
            statuses,
            cwd: f.cwd,
            text: f.text.to_lowercase(),
            archived,
        })
    }

    /// Whether session-api has to look at memos (beyond what Temporal's
    /// query already selects).
    fn reads_memo(&self) -> bool {
        !self.statuses.is_empty() || !self.cwd.is_empty() || !self.text.is_empty()
    }

    /// The part of the visibility query for the statuses asked for.
    fn execution_status_clause(&self) -> &'static str {
        use pb::SessionStatus as S;
        if self.statuses.is_empty() {
            return "";
        }
        // A closing session's workflow still runs for a moment, so only
        // open and failed sessions map to one side of ExecutionStatus.
        if self
            .statuses
            .iter()
            .all(|s| matches!(s, S::Idle | S::Running | S::Waiting))
        {
            " AND ExecutionStatus = 'Running'"
        } else if self.statuses.iter().all(|s| *s == S::Failed) {
            " AND ExecutionStatus != 'Running'"
        } else {
            ""
        }
    }

    fn matches(&self, s: &pb::Session) -> bool {
        let archived_ok = match self.archived {
            pb::ArchivedFilter::Unspecified => !s.archived,
            pb::ArchivedFilter::Only => s.archived,
            pb::ArchivedFilter::Include => true,
        };
        archived_ok
            && (self.statuses.is_empty() || self.statuses.iter().any(|&x| x as i32 == s.status))
            && (self.cwd.is_empty() || s.cwd == self.cwd)
            && (self.text.is_empty()
                || s.name.to_lowercase().contains(&self.text)
                || s.session_id.to_lowercase().contains(&self.text))
    }
}

impl SessionApi {
    pub(super) async fn list(
        &self,
        tenant: Option<&str>,
        page_size: u32,
        page_token: &str,
        filter: Filter,
    ) -> Result<pb::ListSessionsResponse, Status> {
        let page_size = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let resumed = Cursor::decode(page_token)?;
        let paging = resumed.is_some();
        let mut cursor = resumed.unwrap_or(Cursor {
            scan_size: if filter.reads_memo() {
                page_size.max(FILTERED_SCAN_SIZE)
            } else {
                page_size
            },
            ..Cursor::default()
        });
        // Tenant names and the prefixes are [a-z0-9_.-]: nothing to escape.
        // One row per session: a rolled-over session's earlier runs ended
        // as ContinuedAsNew.
        let query = format!(
            "WorkflowType = '{}' AND WorkflowId STARTS_WITH '{}' AND ExecutionStatus != 'ContinuedAsNew'{}",
            api::WORKFLOW_TYPE,
            api::tenant_workflow_id_prefix(tenant),
            filter.execution_status_clause(),
        );
        let mut sessions = Vec::new();
        for _ in 0..MAX_SCANNED_PAGES {
            let token = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(&cursor.temporal)
                .map_err(|_| crate::errors::invalid("page_token is not one this server issued"))?;
            let page = self
                .visibility_page(&query, cursor.scan_size, token, paging)
                .await?;
            let read = page.executions.len() as u32;
            let start = resume_at(&page.executions, &cursor);
            for (i, info) in page.executions.into_iter().enumerate().skip(start) {
                let Some(session) = listed_session(info, tenant) else {
                    continue;
                };
                if !filter.matches(&session) {
                    continue;
                }
                sessions.push(session);
                if sessions.len() as u32 == page_size {
                    let next = if i as u32 + 1 < read {
                        Cursor {
                            skip: i as u32 + 1,
                            anchor: sessions
                                .last()
                                .map(|s| s.workflow_id.clone())
                                .unwrap_or_default(),
                            ..cursor
                        }
                    } else if page.next_page_token.is_empty() {
                        return Ok(pb::ListSessionsResponse {
                            sessions,
                            next_page_token: String::new(),
                        });
                    } else {
                        Cursor {
                            temporal: base64::engine::general_purpose::URL_SAFE_NO_PAD
                                .encode(&page.next_page_token),
                            skip: 0,
                            anchor: String::new(),
                            ..cursor
                        }
                    };
                    return Ok(pb::ListSessionsResponse {
                        sessions,
                        next_page_token: next.encode(),
                    });
                }
            }
            if page.next_page_token.is_empty() {
                return Ok(pb::ListSessionsResponse {
                    sessions,
                    next_page_token: String::new(),
                });
            }
            cursor = Cursor {
                temporal: base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(&page.next_page_token),
                skip: 0,
                anchor: String::new(),
                ..cursor
            };
        }
        Ok(pb::ListSessionsResponse {
            sessions,
            next_page_token: cursor.encode(),
        })
    }

    pub(super) async fn visibility_page(
        &self,
        query: &str,
        size: u32,
        next_page_token: Vec<u8>,
        paging: bool,
    ) -> Result<
        temporalio_common::protos::temporal::api::workflowservice::v1::ListWorkflowExecutionsResponse,
        Status,
    >{
        let list = ListWorkflowExecutionsRequest {
            namespace: self.namespace.clone(),
            page_size: size as i32,
            next_page_token,
            query: query.to_string(),
        };
        let mut request = tonic::IntoRequest::into_request(list);
        if paging {
            // A made-up token fails with UNKNOWN, which the Temporal client
            // would retry for seconds: answer at once instead.
            request.extensions_mut().insert(
                temporalio_client::request_extensions::NoRetryOnMatching {
                    predicate: |s| s.code() == tonic::Code::Unknown,
                },
            );
        }
        let mut client = self.client.clone();
        WorkflowService::list_workflow_executions(&mut client, request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| match s.code() {
                // Temporal refuses a page token it cannot read (one that was
                // never issued, or made up) with an unspecific error.
                tonic::Code::InvalidArgument | tonic::Code::Unknown | tonic::Code::Internal
                    if paging =>
                {
                    crate::errors::invalid(
                        "page_token is not one this server issued (or it expired); list again without it",
                    )
                }
                _ => errors::unavailable("cannot list sessions", s),
            })
    }
}

/// What a session's memo says it is doing, and whether it waits for an
/// answer.
fn memo_status(
    info: &temporalio_common::protos::temporal::api::workflow::v1::WorkflowExecutionInfo,
) -> (RunStatus, bool) {
    let status = info
        .memo
        .as_ref()
        .and_then(|m| m.fields.get(api::MEMO_STATUS))
        .and_then(|p| serde_json::from_slice::<serde_json::Value>(&p.data).ok());
    match status.as_ref().and_then(|v| v.as_str()) {
        Some("running") => (RunStatus::Running, false),
        Some(api::MEMO_STATUS_WAITING) => (RunStatus::Running, true),
        Some("closed") => (RunStatus::Closed, false),
        _ => (RunStatus::Idle, false),
    }
}

/// Visibility pages a count of open sessions reads at most (of
/// [`COUNT_PAGE_SIZE`]); more sessions than that are not counted.
const MAX_COUNTED_PAGES: usize = 100;
const COUNT_PAGE_SIZE: u32 = 1000;

impl SessionApi {
    /// Counts the open sessions of every tenant by status, from the memo
    /// each session's workflow keeps (see [`crate::metrics`]).
    pub async fn count_open_sessions(&self) -> Result<crate::metrics::SessionCounts, Status> {
        // Sessions only, not their sub-agents' workflows (same type).
        let query = format!(
            "WorkflowType = '{}' AND WorkflowId STARTS_WITH 'keel-session' AND ExecutionStatus = 'Running'",
            api::WORKFLOW_TYPE
        );
        let mut counts = crate::metrics::SessionCounts::default();
        let mut token = Vec::new();
        for _ in 0..MAX_COUNTED_PAGES {
            let page = self
                .visibility_page(&query, COUNT_PAGE_SIZE, token, false)
                .await?;
            for info in &page.executions {
                match memo_status(info) {
                    (_, true) => counts.waiting += 1,
                    (RunStatus::Running, false) => counts.running += 1,
                    _ => counts.idle += 1,
                }
            }
            if page.next_page_token.is_empty() {
                return Ok(counts);
            }
            token = page.next_page_token;
        }
        tracing::warn!(
            counted = MAX_COUNTED_PAGES as u32 * COUNT_PAGE_SIZE,
            "more open sessions than keel_sessions counts; the gauge shows the first ones"
        );
        Ok(counts)
    }

    /// Counts the open sessions every `every` into the `keel_sessions`
    /// gauge, until the process ends.
    pub async fn report_session_counts(self, every: std::time::Duration) {
        loop {
            match self.count_open_sessions().await {
                Ok(counts) => self.metrics.sessions_counted(&counts),
                Err(e) => tracing::warn!(error = %e.message(), "cannot count the open sessions"),
            }
            tokio::time::sleep(every).await;
        }
    }
}

/// Where to go on in a visibility page read again: after the cursor's
/// anchor where it still is, else after the count the cursor recorded.
fn resume_at(
    executions: &[temporalio_common::protos::temporal::api::workflow::v1::WorkflowExecutionInfo],
    cursor: &Cursor,
) -> usize {
    if !cursor.anchor.is_empty()
        && let Some(i) = executions.iter().position(|info| {
            info.execution
                .as_ref()
                .is_some_and(|e| e.workflow_id == cursor.anchor)
        })
    {
        return i + 1;
    }
    cursor.skip as usize
}

/// A visibility record as a listed session (`None`: not one of the
/// tenant's sessions).
fn listed_session(
    info: temporalio_common::protos::temporal::api::workflow::v1::WorkflowExecutionInfo,
    tenant: Option<&str>,
) -> Option<pb::Session> {
    let workflow_id = info.execution.as_ref()?.workflow_id.clone();
    let (owner, session_id) = api::split_session_key(api::session_key_of(&workflow_id)?);
    if owner != tenant {
        return None;
    }
    let session_id = session_id.to_string();
    let memo = |key: &str| {
        info.memo
            .as_ref()
            .and_then(|m| m.fields.get(key))
            .and_then(|p| serde_json::from_slice::<serde_json::Value>(&p.data).ok())
    };
    let text = |key: &str| {
        memo(key)
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    };
    let (run, waiting) = memo_status(&info);
    let created_at = info.start_time.map(|t| prost_types::Timestamp {
        seconds: t.seconds,
        nanos: t.nanos,
    });
    let last_activity_at = memo(api::MEMO_LAST_ACTIVITY_MS)
        .and_then(|v| v.as_u64())
        .and_then(timestamp_ms)
        .or(created_at);
    Some(pb::Session {
        session_id,
        status: status_of(run, wf_status(info.status), waiting) as i32,
        created_at,
        last_activity_at,
        workflow_id,
        name: text(api::MEMO_NAME),
        archived: memo(api::MEMO_ARCHIVED)
            .and_then(|v| v.as_bool())
            .unwrap_or(false),
        cwd: text(api::MEMO_CWD),
        last_message: text(api::MEMO_LAST_MESSAGE),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(name: &str, status: pb::SessionStatus, archived: bool, cwd: &str) -> pb::Session {
        pb::Session {
            session_id: "s-1".into(),
            name: name.into(),
            status: status as i32,
            archived,
            cwd: cwd.into(),
            ..Default::default()
        }
    }

    #[test]
    fn cursor_round_trips_and_rejects_made_up_tokens() {
        let c = Cursor {
            temporal: "abc".into(),
            scan_size: 200,
            skip: 3,
            anchor: "keel-session.t.x".into(),
        };
        assert_eq!(Cursor::decode(&c.encode()).unwrap(), Some(c));
        assert_eq!(Cursor::decode("").unwrap(), None);
        for bad in ["!!", "bm90IGpzb24", &Cursor::default().encode()] {
            let e = Cursor::decode(bad).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad}");
        }
    }

    #[test]
    fn a_page_read_again_resumes_after_its_anchor() {
        use temporalio_common::protos::temporal::api::common::v1::WorkflowExecution;
        use temporalio_common::protos::temporal::api::workflow::v1::WorkflowExecutionInfo;
        let page = |ids: &[&str]| -> Vec<WorkflowExecutionInfo> {
            ids.iter()
                .map(|id| WorkflowExecutionInfo {
                    execution: Some(WorkflowExecution {
                        workflow_id: id.to_string(),
                        run_id: String::new(),
                    }),
                    ..Default::default()
                })
                .collect()
        };
        let cursor = Cursor {
            scan_size: 4,
            skip: 2,
            anchor: "b".into(),
            ..Cursor::default()
        };
        // As it was: after b.
        assert_eq!(resume_at(&page(&["a", "b", "c", "d"]), &cursor), 2);
        // A session started since (it sorts first): still after b.
        assert_eq!(resume_at(&page(&["new", "a", "b", "c"]), &cursor), 3);
        // b moved off the page: the count.
        assert_eq!(resume_at(&page(&["a", "c", "d", "e"]), &cursor), 2);
    }

    #[test]
    fn filter_defaults_to_sessions_not_archived() {
        let f = Filter::new(None).unwrap();
        assert!(!f.reads_memo());
        assert!(f.matches(&session("", pb::SessionStatus::Idle, false, "/w")));
        assert!(!f.matches(&session("", pb::SessionStatus::Idle, true, "/w")));
    }

    #[test]
    fn filter_matches_every_field_it_sets() {
        let f = Filter::new(Some(pb::SessionFilter {
            statuses: vec![
                pb::SessionStatus::Waiting as i32,
                pb::SessionStatus::Idle as i32,
            ],
            cwd: "/w".into(),
            text: "Build".into(),
            archived: pb::ArchivedFilter::Include as i32,
        }))
        .unwrap();
        assert!(f.reads_memo());
        assert_eq!(
            f.execution_status_clause(),
            " AND ExecutionStatus = 'Running'"
        );
        assert!(f.matches(&session(
            "nightly build",
            pb::SessionStatus::Waiting,
            true,
            "/w"
        )));
        assert!(!f.matches(&session(
            "nightly build",
            pb::SessionStatus::Closed,
            false,
            "/w"
        )));
        assert!(!f.matches(&session(
            "nightly build",
            pb::SessionStatus::Idle,
            false,
            "/x"
        )));
        assert!(!f.matches(&session("deploy", pb::SessionStatus::Idle, false, "/w")));
        // The id matches too.
        let mut by_id = session("", pb::SessionStatus::Idle, false, "/w");
        by_id.session_id = "build-7".into();
        assert!(f.matches(&by_id));
    }

    #[test]
    fn status_clause_pushes_down_only_what_temporal_can_tell() {
        let with = |statuses: &[pb::SessionStatus]| {
            Filter::new(Some(pb::SessionFilter {
                statuses: statuses.iter().map(|&s| s as i32).collect(),
                ..Default::default()
            }))
            .unwrap()
            .execution_status_clause()
        };
        assert_eq!(with(&[]), "");
        assert_eq!(
            with(&[pb::SessionStatus::Failed]),
            " AND ExecutionStatus != 'Running'"
        );
        // A closing session's workflow still runs for a moment.
        assert_eq!(
            with(&[pb::SessionStatus::Closed, pb::SessionStatus::Failed]),
            ""
        );
        assert_eq!(
            with(&[pb::SessionStatus::Idle, pb::SessionStatus::Closed]),
            ""
        );
    }

    #[test]
    fn filter_rejects_unknown_enums() {
        for f in [
            pb::SessionFilter {
                statuses: vec![0],
                ..Default::default()
            },
            pb::SessionFilter {
                statuses: vec![99],
                ..Default::default()
            },
            pb::SessionFilter {
                archived: 7,
                ..Default::default()
            },
        ] {
            let e = Filter::new(Some(f)).err().unwrap();
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
        }
    }
}
