//! Workflow histories of test sessions: fetched from the stack's Temporal to
//! assert on, and recorded for the worker's replay tests.

use std::str::FromStr;

use anyhow::Context;
use temporalio_client::{
    Client, ClientOptions, Connection, ConnectionOptions, UntypedWorkflow, Url,
};

/// A Temporal client for the stack's dev server.
pub async fn temporal_client(address: &str) -> anyhow::Result<Client> {
    let url = Url::from_str(&format!("http://{address}"))?;
    let connection = Connection::connect(ConnectionOptions::new(url).build()).await?;
    Ok(Client::new(
        connection,
        ClientOptions::new("default").build(),
    )?)
}

/// The JSON history of the session's latest workflow run.
pub async fn history_json(client: &Client, session_id: &str) -> anyhow::Result<Vec<u8>> {
    Ok(client
        .get_workflow_handle::<UntypedWorkflow>(crate::stack::tenant_workflow_id(session_id))
        .fetch_history(Default::default())
        .to_json()
        .await?)
}

/// The history JSON plus the decoded text of every payload in it (payload
/// data is base64 in the JSON), so assertions can search what was stored.
pub fn decoded_text(history_json: &[u8]) -> anyhow::Result<String> {
    use base64::Engine as _;
    fn walk(v: &serde_json::Value, out: &mut String) {
        match v {
            serde_json::Value::Object(m) => {
                if let (Some(serde_json::Value::String(data)), true) =
                    (m.get("data"), m.contains_key("metadata"))
                    && let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(data)
                {
                    out.push_str(&String::from_utf8_lossy(&bytes));
                    out.push('\n');
                }
                m.values().for_each(|v| walk(v, out));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let value: serde_json::Value = serde_json::from_slice(history_json)?;
    let mut out = String::from_utf8_lossy(history_json).into_owned();
    out.push('\n');
    walk(&value, &mut out);
    Ok(out)
}

/// Payload bytes of one activity in a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivityPayloads {
    pub activity_type: String,
    /// Decoded bytes of the scheduled event's input payloads.
    pub input_bytes: usize,
    /// Decoded bytes of the completed event's result payloads (0 if none).
    pub result_bytes: usize,
}

/// Every activity of a history, in schedule order, with its payload sizes.
pub fn activity_payloads(history_json: &[u8]) -> anyhow::Result<Vec<ActivityPayloads>> {
    use base64::Engine as _;
    let decoded_len = |payloads: &serde_json::Value| -> usize {
        payloads["payloads"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["data"].as_str())
            .filter_map(|d| base64::engine::general_purpose::STANDARD.decode(d).ok())
            .map(|b| b.len())
            .sum()
    };
    let value: serde_json::Value = serde_json::from_slice(history_json)?;
    let mut out: Vec<(u64, ActivityPayloads)> = Vec::new();
    for event in value["events"].as_array().into_iter().flatten() {
        let attrs = &event["attributes"];
        if let Some(s) = attrs.get("ActivityTaskScheduledEventAttributes") {
            let id = event["event_id"].as_u64().unwrap_or_default();
            out.push((
                id,
                ActivityPayloads {
                    activity_type: s["activity_type"]["name"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                    input_bytes: decoded_len(&s["input"]),
                    result_bytes: 0,
                },
            ));
        } else if let Some(c) = attrs.get("ActivityTaskCompletedEventAttributes") {
            let scheduled = c["scheduled_event_id"].as_u64().unwrap_or_default();
            if let Some((_, a)) = out.iter_mut().find(|(id, _)| *id == scheduled) {
                a.result_bytes = decoded_len(&c["result"]);
            }
        }
    }
    Ok(out.into_iter().map(|(_, a)| a).collect())
}

/// `DIR/<name>.json` with `KEEL_RECORD_HISTORIES=DIR`, unless it exists:
/// recordings are a compatibility contract, never overwritten.
fn recording_path(name: &str) -> Option<std::path::PathBuf> {
    let dir = std::env::var("KEEL_RECORD_HISTORIES").ok()?;
    let path = std::path::Path::new(&dir).join(format!("{name}.json"));
    if path.exists() {
        eprintln!("kept the existing recording {}", path.display());
        return None;
    }
    Some(path)
}

/// With `KEEL_RECORD_HISTORIES=DIR`, saves the session's latest run history
/// as `DIR/<name>.json` for the worker's replay tests
/// (`worker/tests/histories`). Call it once the run has closed.
pub async fn record(client: &Client, session_id: &str, name: &str) -> anyhow::Result<()> {
    let Some(path) = recording_path(name) else {
        return Ok(());
    };
    let json = history_json(client, session_id).await?;
    std::fs::write(&path, json).with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("recorded {}", path.display());
    Ok(())
}

/// [`record`] for any workflow of the stack, by its workflow id (a
/// sub-agent's, say).
pub async fn record_workflow(client: &Client, workflow_id: &str, name: &str) -> anyhow::Result<()> {
    let Some(path) = recording_path(name) else {
        return Ok(());
    };
    let json = client
        .get_workflow_handle::<UntypedWorkflow>(workflow_id.to_string())
        .fetch_history(Default::default())
        .to_json()
        .await?;
    std::fs::write(&path, json).with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("recorded {}", path.display());
    Ok(())
}

/// With `KEEL_RECORD_HISTORIES=DIR`, saves the run before the session's
/// latest one (the run that continued as new into it) as `DIR/<name>.json`:
/// for behaviour that ends a run, such as a compaction.
pub async fn record_previous_run(
    client: &Client,
    session_id: &str,
    name: &str,
) -> anyhow::Result<()> {
    let Some(path) = recording_path(name) else {
        return Ok(());
    };
    let latest: serde_json::Value =
        serde_json::from_slice(&history_json(client, session_id).await?)?;
    let previous = latest["events"][0]["attributes"]["WorkflowExecutionStartedEventAttributes"]
        ["continued_execution_run_id"]
        .as_str()
        .filter(|id| !id.is_empty())
        .context("the latest run did not continue an earlier one")?
        .to_string();
    let info = temporalio_client::WorkflowExecutionInfo::builder()
        .namespace("default")
        .workflow_id(crate::stack::tenant_workflow_id(session_id))
        .run_id(previous)
        .build();
    let json = info
        .bind_untyped(client.clone())
        .fetch_history(Default::default())
        .to_json()
        .await?;
    std::fs::write(&path, json).with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("recorded {}", path.display());
    Ok(())
}

/// Waits until the closed session's workflow completes, then [`record`]s its
/// latest run.
pub async fn record_closed(
    temporal_address: &str,
    session_id: &str,
    name: &str,
) -> anyhow::Result<()> {
    let client = wait_closed(temporal_address, session_id).await?;
    record(&client, session_id, name).await
}

/// Waits until the closed session's workflow has completed.
pub async fn wait_closed(temporal_address: &str, session_id: &str) -> anyhow::Result<Client> {
    let client = temporal_client(temporal_address).await?;
    client
        .get_workflow_handle::<UntypedWorkflow>(crate::stack::tenant_workflow_id(session_id))
        .get_result(Default::default())
        .await
        .context("the session workflow did not complete")?;
    Ok(client)
}

/// When things happened in a workflow history, by the server's clock: for
/// timing benchmarks.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    pub started: Option<std::time::SystemTime>,
    pub closed: Option<std::time::SystemTime>,
    /// `(signal name, time)` in order.
    pub signals: Vec<(String, std::time::SystemTime)>,
    /// Every `WorkflowTaskStarted`, in order.
    pub task_started: Vec<std::time::SystemTime>,
    /// Every `WorkflowTaskCompleted` (the commit of a workflow task), in order.
    pub task_completed: Vec<std::time::SystemTime>,
    /// Every activity, in schedule order.
    pub activities: Vec<ActivityTimes>,
}

/// One activity's schedule, start (of the last attempt) and close.
#[derive(Debug, Clone)]
pub struct ActivityTimes {
    pub activity_type: String,
    pub scheduled: std::time::SystemTime,
    pub started: Option<std::time::SystemTime>,
    pub closed: Option<std::time::SystemTime>,
}

impl Timeline {
    /// When the workflow task that ran at workflow time `t` (an event's
    /// `time`: its task's start) was committed.
    pub fn committed_at(&self, t: std::time::SystemTime) -> Option<std::time::SystemTime> {
        self.task_completed.iter().copied().find(|c| *c >= t)
    }

    /// The workflow's own time for its latest turn: from the last
    /// `user_turn` signal to the commit of the last workflow task.
    pub fn last_turn(&self) -> anyhow::Result<std::time::Duration> {
        let signal = self
            .signals
            .iter()
            .rev()
            .find(|(name, _)| name == "user_turn")
            .map(|(_, at)| *at)
            .context("no user_turn signal")?;
        let last = *self.task_completed.last().context("no workflow task")?;
        Ok(last.duration_since(signal)?)
    }
}

/// A Keel event's `time` (its workflow task's start), as a `SystemTime`.
pub fn keel_event_time(e: &keel_proto::v1::Event) -> Option<std::time::SystemTime> {
    let t = e.time.as_ref()?;
    std::time::UNIX_EPOCH.checked_add(std::time::Duration::new(
        u64::try_from(t.seconds).ok()?,
        u32::try_from(t.nanos).ok()?,
    ))
}

fn event_time(v: &serde_json::Value) -> Option<std::time::SystemTime> {
    use std::time::{Duration, UNIX_EPOCH};
    let (secs, nanos) = match v {
        serde_json::Value::String(s) => {
            let ts = prost_types::Timestamp::from_str(s).ok()?;
            (ts.seconds, ts.nanos)
        }
        serde_json::Value::Object(m) => (
            m.get("seconds")
                .and_then(|s| s.as_i64().or_else(|| s.as_str()?.parse().ok()))?,
            m.get("nanos").and_then(|n| n.as_i64()).unwrap_or(0) as i32,
        ),
        _ => return None,
    };
    Some(
        UNIX_EPOCH
            + Duration::from_secs(u64::try_from(secs).ok()?)
            + Duration::from_nanos(u64::try_from(nanos).ok()?),
    )
}

/// The timeline of a history fetched with [`history_json`].
pub fn timeline(history_json: &[u8]) -> anyhow::Result<Timeline> {
    let value: serde_json::Value = serde_json::from_slice(history_json)?;
    let mut t = Timeline::default();
    let mut scheduled_ids: Vec<u64> = Vec::new();
    for event in value["events"].as_array().into_iter().flatten() {
        let time = event_time(&event["event_time"]).context("event without a time")?;
        let attrs = event["attributes"]
            .as_object()
            .context("event without attributes")?;
        let Some((kind, a)) = attrs.iter().next() else {
            continue;
        };
        match kind.as_str() {
            "WorkflowExecutionStartedEventAttributes" => t.started = Some(time),
            "WorkflowExecutionCompletedEventAttributes"
            | "WorkflowExecutionFailedEventAttributes"
            | "WorkflowExecutionContinuedAsNewEventAttributes" => t.closed = Some(time),
            "WorkflowExecutionSignaledEventAttributes" => t.signals.push((
                a["signal_name"].as_str().unwrap_or_default().to_string(),
                time,
            )),
            "WorkflowTaskStartedEventAttributes" => t.task_started.push(time),
            "ActivityTaskScheduledEventAttributes" => {
                scheduled_ids.push(event["event_id"].as_u64().unwrap_or_default());
                t.activities.push(ActivityTimes {
                    activity_type: a["activity_type"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    scheduled: time,
                    started: None,
                    closed: None,
                });
            }
            "ActivityTaskStartedEventAttributes" => {
                let id = a["scheduled_event_id"].as_u64().unwrap_or_default();
                if let Some(i) = scheduled_ids.iter().position(|s| *s == id) {
                    t.activities[i].started = Some(time);
                }
            }
            "ActivityTaskCompletedEventAttributes"
            | "ActivityTaskFailedEventAttributes"
            | "ActivityTaskTimedOutEventAttributes"
            | "ActivityTaskCanceledEventAttributes" => {
                let id = a["scheduled_event_id"].as_u64().unwrap_or_default();
                if let Some(i) = scheduled_ids.iter().position(|s| *s == id) {
                    t.activities[i].closed = Some(time);
                }
            }
            "WorkflowTaskCompletedEventAttributes" => t.task_completed.push(time),
            _ => {}
        }
    }
    Ok(t)
}

/// Closes the session, then (with `KEEL_RECORD_HISTORIES`) records its
/// history as `name` for the replay tests (see [`record_closed`]).
pub async fn close_and_record(
    client: &mut crate::session::Client,
    temporal_address: &str,
    session_id: &str,
    name: &str,
) -> anyhow::Result<()> {
    client
        .close_session(keel_proto::v1::CloseSessionRequest {
            session_id: session_id.to_string(),
        })
        .await?;
    record_closed(temporal_address, session_id, name).await
}
