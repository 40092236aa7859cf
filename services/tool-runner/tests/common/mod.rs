//! Helpers shared by the tool-runner's integration tests.

use std::path::Path;
use std::time::{Duration, Instant};

/// Polls (bounded) for a file another process writes atomically; returns
/// its trimmed text.
pub(crate) async fn wait_for_file(path: &Path, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            return text.trim().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
