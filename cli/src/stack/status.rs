//! `keel status`: each component's address, pid and health, as a table or JSON.

use super::*;

/// The order `keel status` lists them in: what a user talks to first.
pub(crate) const STATUS_ORDER: [Component; 6] = [
    Component::Temporal,
    Component::SessionApi,
    Component::ModelProxy,
    Component::ToolRunner,
    Component::McpBroker,
    Component::Worker,
];

/// One component as `keel status` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ComponentStatus {
    pub component: Component,
    pub address: Option<String>,
    pub pid: Option<i32>,
    pub healthy: bool,
}

/// The whole stack's status, in [`STATUS_ORDER`].
pub(crate) fn status_json(statuses: &[ComponentStatus]) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for s in statuses {
        map.insert(
            s.component.name().to_string(),
            json!({"address": s.address, "pid": s.pid, "healthy": s.healthy}),
        );
    }
    serde_json::Value::Object(map)
}

/// A readable table of [`Stack::status`].
pub(crate) fn status_table(statuses: &[ComponentStatus]) -> String {
    let mut rows = vec![[
        "COMPONENT".to_string(),
        "STATE".to_string(),
        "PID".to_string(),
        "ADDRESS".to_string(),
    ]];
    for s in statuses {
        let state = match (s.healthy, s.pid) {
            (true, _) => "healthy",
            (false, Some(_)) => "unhealthy",
            (false, None) => "stopped",
        };
        rows.push([
            s.component.name().to_string(),
            state.to_string(),
            s.pid.map_or_else(|| "-".to_string(), |p| p.to_string()),
            s.address.clone().unwrap_or_else(|| "-".to_string()),
        ]);
    }
    crate::render::table(&rows)
}
