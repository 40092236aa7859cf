//! History bytes per model call at conversation lengths 10, 100 and 1000
//! items: the curve must be flat, because workflow history carries the
//! conversation's head digest, never the conversation.
//!
//! Run: `cargo build --workspace --bins && KEEL_BIN_DIR=$PWD/target/debug cargo bench -p keel-e2e --bench history_size`

use keel_test_support::measure::model_call_payloads_at;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    println!(
        "{:>6}  {:>12}  {:>13}  {:>11}",
        "items", "input bytes", "result bytes", "total"
    );
    let mut base = None;
    for items in [10, 100, 1000] {
        let p = model_call_payloads_at(items).await?;
        let total = p.input_bytes + p.result_bytes;
        let base = *base.get_or_insert(total);
        println!(
            "{items:>6}  {:>12}  {:>13}  {total:>11}   ({:.2}× the 10-item call)",
            p.input_bytes,
            p.result_bytes,
            total as f64 / base as f64
        );
    }
    Ok(())
}
