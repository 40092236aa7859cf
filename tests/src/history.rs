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
        .get_workflow_handle::<UntypedWorkflow>(format!("keel-session-{session_id}"))
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

/// With `KEEL_RECORD_HISTORIES=DIR`, saves the session's latest run history
/// as `DIR/<name>.json` for the worker's replay tests
/// (`worker/tests/histories`). Call it once the run has closed.
pub async fn record(client: &Client, session_id: &str, name: &str) -> anyhow::Result<()> {
    let Ok(dir) = std::env::var("KEEL_RECORD_HISTORIES") else {
        return Ok(());
    };
    let path = std::path::Path::new(&dir).join(format!("{name}.json"));
    if path.exists() {
        // Recordings are a compatibility contract: never overwrite one.
        eprintln!("kept the existing recording {}", path.display());
        return Ok(());
    }
    let json = history_json(client, session_id).await?;
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
    let client = temporal_client(temporal_address).await?;
    client
        .get_workflow_handle::<UntypedWorkflow>(format!("keel-session-{session_id}"))
        .get_result(Default::default())
        .await
        .context("the session workflow did not complete")?;
    record(&client, session_id, name).await
}
