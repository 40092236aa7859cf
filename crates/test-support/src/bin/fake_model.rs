//! `keel-fake-model`: the scripted fake Responses API as a process, for manual
//! demos. Serves the script, writes its base URL to `--addr-file` and prints
//! it, then prints every request it receives as one JSON line.
//!
//! The script is a JSON array with one entry per model call: an array of SSE
//! event objects, `{"status": N, "body": {...}}`, or
//! `{"events": [...], "delay_ms": N, "end": "close" | "abort" | "stall"}`.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use keel_test_support::fake_model::{FakeModel, RecordedRequest, parse_script};

#[derive(Debug, Parser)]
#[command(
    name = "keel-fake-model",
    about = "A scripted fake of the OpenAI Responses API"
)]
struct Args {
    /// The JSON script: one entry per request.
    #[arg(long)]
    script: PathBuf,
    /// Once listening, write the base URL (http://127.0.0.1:PORT/v1) here.
    #[arg(long)]
    addr_file: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.script)
        .with_context(|| format!("cannot read {}", args.script.display()))?;
    let script = parse_script(&text).with_context(|| format!("in {}", args.script.display()))?;
    let model = FakeModel::start(script).await?;
    let url = model.base_url();
    if let Some(path) = &args.addr_file {
        // Written then renamed, so a reader never sees half a URL.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &url).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!("{url}");

    tokio::select! {
        r = print_requests(&model) => r,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

async fn print_requests(model: &FakeModel) -> anyhow::Result<()> {
    let mut printed = 0;
    loop {
        let Ok(requests) = model
            .wait_for_requests(printed + 1, Duration::from_secs(3600))
            .await
        else {
            continue;
        };
        let mut out = std::io::stdout().lock();
        for req in &requests[printed..] {
            writeln!(out, "{}", serde_json::to_string(&redacted(req))?)?;
        }
        out.flush()?;
        printed = requests.len();
    }
}

/// The request with its API key hidden: demos end up in terminals and logs.
fn redacted(req: &RecordedRequest) -> RecordedRequest {
    let mut req = req.clone();
    for (name, value) in &mut req.headers {
        if name == "authorization" {
            let scheme = value.split_whitespace().next().unwrap_or("").to_string();
            *value = format!("{scheme} <redacted>");
        }
    }
    req
}
